/* Internals of the QMP client that only its fuzz target uses: input without a socket. */
#pragma once

#include "qmp.h"

G_BEGIN_DECLS

typedef struct QmpPending QmpPending;

/* A client without a socket, waiting for a greeting; input comes from qmp_feed(). */
BerthQmp *qmp_new_detached(GMainContext *ctx, BerthQmpEventFunc on_event, gpointer user_data);
/* Handles @data as if read from the socket (events run now). FALSE once the client closed. */
gboolean qmp_feed(BerthQmp *qmp, const guint8 *data, gsize len);
/* Registers a waiter for the reply with @id, as a command in flight would. */
QmpPending *qmp_expect_reply(BerthQmp *qmp, const char *id, const char *command);
/* Unregisters and frees @p; TRUE if it was answered (then sets the result or @error). */
gboolean qmp_pending_finish(BerthQmp *qmp, QmpPending *p, char **return_json,
                            char **error_class, GError **error);

G_END_DECLS
