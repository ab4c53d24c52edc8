/* The QMP client: one QEMU monitor connection, driven by a GMainContext (see docs/architecture.md). */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/*
 * A BerthQmp speaks the QEMU Machine Protocol over a unix stream socket. All socket I/O runs
 * on the GMainContext given to berth_qmp_new() (berthd's main loop): reads and writes are
 * non-blocking, nothing in a callback waits. Commands are issued from other threads (job
 * workers) and wait for their reply with berth_qmp_command(); each gets an id, and replies are
 * matched to their waiter by id. Asynchronous events are delivered on the context, in the
 * order QEMU sent them.
 *
 * A malformed message, a message over the size limit, an error on the socket or EOF closes
 * the connection: every waiting command fails at once with a message that says why, later
 * commands fail without waiting, and @closed runs once on the context. A command whose reply
 * does not come within its timeout fails with BERTH_ERROR_TIMEOUT; the connection stays open
 * (a late reply for it is dropped).
 *
 * Errors are in the BERTH_ERROR domain (<berth/error.h>): QEMU answering a command with
 * {"error":...} is BERTH_ERROR_PLUGIN_FAILED with the message "QEMU refused COMMAND: DESC"
 * (the class is returned separately), a timeout BERTH_ERROR_TIMEOUT, a cancelled wait
 * BERTH_ERROR_CANCELLED, a closed or broken monitor BERTH_ERROR_PLUGIN_FAILED.
 *
 * Details the code guarantees (qmp.c):
 * - A BerthQmp connects once; after a failed connect or a close, use a new one.
 * - @closed runs only for a connection that was up (a failed connect reports through its
 *   GError), and never for a close by the last unref.
 * - The last unref from a thread other than the context's waits for a callback that is running
 *   on the context to return (so user_data may be freed right after); do not hold a lock your
 *   callbacks take while dropping the last reference there. From inside a callback it is fine.
 * - Callbacks may call berth_qmp_close() or berth_qmp_unref(); events after that are dropped.
 * - A reply without an id goes to the only waiting command; with no command waiting it is
 *   dropped, with several it is a protocol error (the connection closes).
 * - @args_json must be a JSON object (else BERTH_ERROR_INVALID_ARGUMENT, nothing is sent).
 */
typedef struct BerthQmp BerthQmp;

/* An asynchronous event ("SHUTDOWN", "DEVICE_DELETED", ...). @data_json is the event's "data"
 * member as JSON text ("{}" when absent); @timestamp_us is QEMU's timestamp in microseconds
 * since the epoch (0 when absent). Runs on the context. */
typedef void (*BerthQmpEventFunc)(BerthQmp *qmp, const char *event, const char *data_json,
                                  gint64 timestamp_us, gpointer user_data);

/* The connection ended; @reason says why (EOF is "monitor connection closed by QEMU"). Runs
 * once on the context. */
typedef void (*BerthQmpClosedFunc)(BerthQmp *qmp, const GError *reason, gpointer user_data);

/* Largest message accepted from QEMU by default (bytes, one JSON document). */
#define BERTH_QMP_DEFAULT_MAX_MESSAGE (8 * 1024 * 1024)

/* A client that is not connected yet. @ctx must be running (or be run) by some thread; the
 * callbacks may be NULL. */
BerthQmp *berth_qmp_new(GMainContext *ctx, BerthQmpEventFunc on_event,
                        BerthQmpClosedFunc on_closed, gpointer user_data);
BerthQmp *berth_qmp_ref(BerthQmp *qmp);
/* Drops a reference; the last one closes the connection (no callback runs after). */
void berth_qmp_unref(BerthQmp *qmp);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthQmp, berth_qmp_unref)

/* The size limit for one incoming message (default BERTH_QMP_DEFAULT_MAX_MESSAGE). */
void berth_qmp_set_max_message(BerthQmp *qmp, gsize max_bytes);

/*
 * Connects to the monitor socket at @path, reads the greeting and negotiates capabilities
 * (qmp_capabilities), then returns TRUE. Retries while the socket does not exist yet or
 * refuses connections (QEMU is still starting) until @timeout_ms runs out. Must not be called
 * on the thread that runs the context. On failure nothing stays open.
 */
gboolean berth_qmp_connect(BerthQmp *qmp, const char *path, guint timeout_ms,
                           GCancellable *cancellable, GError **error);

/* The same over an already connected socket @fd (taken over, also on failure). */
gboolean berth_qmp_connect_fd(BerthQmp *qmp, int fd, guint timeout_ms,
                              GCancellable *cancellable, GError **error);

/*
 * Sends @command with @args_json (a JSON object as text, or NULL for none) and waits up to
 * @timeout_ms (0: no limit) for its reply. On success sets *@return_json (may be NULL) to the
 * reply's "return" member as JSON text (g_free it). When QEMU answers with an error, sets
 * *@error_class (may be NULL) to its class ("GenericError", "DeviceNotFound", ...) and fails.
 * Must not be called on the thread that runs the context.
 */
gboolean berth_qmp_command(BerthQmp *qmp, const char *command, const char *args_json,
                           guint timeout_ms, GCancellable *cancellable, char **return_json,
                           char **error_class, GError **error);

/* TRUE from a successful connect until the connection ends. Any thread. */
gboolean berth_qmp_is_connected(BerthQmp *qmp);

/* Reads and dispatches, without blocking, whatever QEMU has already written to the socket
 * (events sent just before it exited are in it). Call on the context's thread. The event
 * callback, and @closed if it finds the end of the stream, run before it returns; called from
 * inside a callback it does nothing (the running read goes on by itself). */
void berth_qmp_flush_input(BerthQmp *qmp);

/* Closes the connection now (waiting commands fail, @closed runs). Any thread. */
void berth_qmp_close(BerthQmp *qmp);

/* The greeting's QEMU version as "MAJOR.MINOR.MICRO", or NULL before a connect. */
const char *berth_qmp_qemu_version(BerthQmp *qmp);

G_END_DECLS
