/* The JSON-RPC server: listeners, connections, limits, method dispatch and event subscriptions. */
#pragma once

#include <gio/gio.h>
#include <sys/types.h>
#include <yajl/yajl_tree.h>

#include "../event-bus.h"
#include "transport.h"

typedef struct BerthRpcServer BerthRpcServer;
typedef struct BerthRpcCall BerthRpcCall;

/* A zero field in the limits passed to berth_rpc_server_new() keeps its default. */
typedef struct {
    gsize max_request;     /* bytes per request line; default 1 MiB; over it: close that conn */
    guint max_clients;     /* per server; default 128; over it: accept and close at once */
    guint max_pending;     /* requests in flight per connection; default 32; then stop reading */
    guint event_queue_len; /* per subscribed connection; default 1024 */
    gsize max_output;      /* bytes queued for a slow reader before events are dropped, 8 MiB */
} BerthRpcLimits;

/* A method handler: runs on the main context. It must not block: it answers at once with
 * berth_rpc_call_reply*(), or submits a job and answers from the job's done callback (or
 * from any thread: replies are posted to the main context). Every call gets exactly one
 * reply; the call is freed by the reply. @params (NULL when the request had none) stays valid
 * until that reply. */
typedef void (*BerthRpcHandler)(BerthRpcCall *call, yajl_val params, gpointer data);

/* The server registers agent.ping, events.subscribe and events.unsubscribe itself (events.*
 * answer unsupported when @bus is NULL). @ctx NULL = the global default context. */
BerthRpcServer *berth_rpc_server_new(GMainContext *ctx, BerthBus *bus,
                                     const BerthRpcLimits *limits);
/* Closes every listener and connection. Accepts NULL. */
void berth_rpc_server_free(BerthRpcServer *server);

/* Adds a method. @modifies: refused with access-denied on read-only listeners. */
void berth_rpc_server_add_method(BerthRpcServer *server, const char *name, gboolean modifies,
                                 BerthRpcHandler handler, gpointer data);
/* The same, with a destroy notify for @data (called when the server is freed); FALSE when a
 * method of that name exists (nothing is added then). */
gboolean berth_rpc_server_add_method_full(BerthRpcServer *server, const char *name,
                                          gboolean modifies, BerthRpcHandler handler,
                                          gpointer data, GDestroyNotify data_free);
/* Sorted names of every method (g_strfreev). */
char **berth_rpc_server_list_methods(BerthRpcServer *server);

/* Listens on a unix socket path (an old socket file is replaced; created with @mode). */
gboolean berth_rpc_server_listen_unix(BerthRpcServer *server, const char *path,
                                      gboolean readonly, guint mode, GError **error);
/* Listens on an already-bound listening socket (systemd socket activation); takes @fd. */
gboolean berth_rpc_server_listen_fd(BerthRpcServer *server, int fd, gboolean readonly,
                                    GError **error);

const char *berth_rpc_call_method(BerthRpcCall *call);
/* TRUE when the connection may only query (read-only socket, or a readonly identity). */
gboolean berth_rpc_call_readonly(BerthRpcCall *call);
/* Who called, for logs: "uid=1000 gid=1000 pid=4242" (unix) or the certificate subject. */
const char *berth_rpc_call_peer(BerthRpcCall *call);

/* Replies with @result_json (taken; NULL = null) and frees the call. Any thread. */
void berth_rpc_call_reply(BerthRpcCall *call, char *result_json);
/* Replies with an error (named error from BERTH_ERROR codes) and frees the call. Any thread. */
void berth_rpc_call_reply_error(BerthRpcCall *call, const GError *error);

/* Added by the RPC module (the TLS listener and tests use them). */

/* Event subscriptions one connection may hold at a time. */
#define BERTH_RPC_MAX_SUBSCRIPTIONS 16

/* Serves one connected transport (a TLS listener's accepted peer); takes @transport. Over
 * max_clients it is closed and freed at once and FALSE is returned. Main context only. */
gboolean berth_rpc_server_add_transport(BerthRpcServer *server, BerthRpcTransport *transport,
                                        gboolean readonly);
/* Connections open now. */
guint berth_rpc_server_n_clients(BerthRpcServer *server);
/* New limits for what comes next (SIGHUP); zero fields keep their value; main context only.
 * Open connections follow at their next request; event_queue_len applies to new
 * subscriptions. */
void berth_rpc_server_set_limits(BerthRpcServer *server, const BerthRpcLimits *limits);
/* The limits in force (defaults filled in). */
const BerthRpcLimits *berth_rpc_server_get_limits(BerthRpcServer *server);
/* TRUE when @name is registered with modifies=TRUE (for role checks and the docs test). */
gboolean berth_rpc_server_method_modifies(BerthRpcServer *server, const char *name);
/* The server a call came to; NULL once its connection closed. Main context only. */
BerthRpcServer *berth_rpc_call_server(BerthRpcCall *call);
/* Replies with a new BERTH_ERROR @code error (printf-style message) and frees the call. */
void berth_rpc_call_reply_new_error(BerthRpcCall *call, int code, const char *format, ...)
    G_GNUC_PRINTF(3, 4);
