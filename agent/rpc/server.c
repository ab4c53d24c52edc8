/* The JSON-RPC server: listeners, the method table, dispatch, calls and their replies. */
#include "server-private.h"

#include <errno.h>
#include <glib-unix.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../errors.h"

/* Calls carry a tag so that a second reply (a bug in a handler) is caught, not sent twice. */
#define CALL_MAGIC 0x5250434bu
#define CALL_REPLIED 0x52504344u
/* Connections accepted per listener wake-up: one busy listener cannot starve the loop. */
#define ACCEPT_BURST 32
/* After EMFILE the listener rests this long instead of spinning on a pending connection. */
#define ACCEPT_BACKOFF_MS 200

typedef struct {
    char *name;
    gboolean modifies;
    BerthRpcHandler handler;
    gpointer data;
    GDestroyNotify data_free;
} RpcMethod;

typedef struct {
    BerthRpcServer *server;
    int fd;
    gboolean readonly;
    char *path; /* the socket file we created (unlinked on free), or NULL */
    GSource *source;
} RpcListener;

struct BerthRpcCall {
    guint32 magic;
    BerthRpcConn *conn;   /* a reference: the call may outlive the connection */
    BerthRpcRequest *req; /* owns the id, the method name and the params */
    gboolean readonly;
    const char *peer;     /* the transport's, which lives as long as the connection */
    char *text;           /* the response line, between a reply and its delivery */
};

static void
method_free(gpointer p)
{
    RpcMethod *m = p;

    if (m->data_free) {
        m->data_free(m->data);
    }
    g_free(m->name);
    g_free(m);
}

static void
listener_free(gpointer p)
{
    RpcListener *l = p;

    if (l->source) {
        g_source_destroy(l->source);
        g_source_unref(l->source);
    }
    if (l->fd >= 0) {
        close(l->fd);
    }
    if (l->path) {
        unlink(l->path);
    }
    g_free(l->path);
    g_free(l);
}

static void
ping_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    berth_rpc_call_reply(call, g_strdup("\"pong\""));
}

BerthRpcServer *
berth_rpc_server_new(GMainContext *ctx, BerthBus *bus, const BerthRpcLimits *limits)
{
    BerthRpcServer *server = g_new0(BerthRpcServer, 1);

    server->ctx = g_main_context_ref(ctx ? ctx : g_main_context_default());
    server->bus = bus;
    server->limits.max_request = 1024 * 1024;
    server->limits.max_clients = 128;
    server->limits.max_pending = 32;
    server->limits.event_queue_len = 1024;
    server->limits.max_output = 8 * 1024 * 1024;
    if (limits) {
        berth_rpc_server_set_limits(server, limits);
    }
    server->methods = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, method_free);
    server->listeners = g_ptr_array_new_with_free_func(listener_free);
    server->conns = g_hash_table_new(NULL, NULL);

    berth_rpc_server_add_method(server, "agent.ping", FALSE, ping_handler, NULL);
    berth_rpc_subscriptions_register(server);
    return server;
}

void
berth_rpc_server_free(BerthRpcServer *server)
{
    GHashTableIter iter;
    gpointer key;

    if (!server) {
        return;
    }
    g_ptr_array_unref(server->listeners);
    /* Closing removes each connection from the table. */
    while (g_hash_table_size(server->conns) > 0) {
        g_hash_table_iter_init(&iter, server->conns);
        g_hash_table_iter_next(&iter, &key, NULL);
        berth_rpc_conn_close(key);
    }
    g_hash_table_unref(server->conns);
    g_hash_table_unref(server->methods);
    g_main_context_unref(server->ctx);
    g_free(server);
}

void
berth_rpc_server_set_limits(BerthRpcServer *server, const BerthRpcLimits *limits)
{
    /* Zero keeps the current value, as in berth_rpc_server_new(). */
    if (limits->max_request) {
        server->limits.max_request = limits->max_request;
    }
    if (limits->max_clients) {
        server->limits.max_clients = limits->max_clients;
    }
    if (limits->max_pending) {
        server->limits.max_pending = limits->max_pending;
    }
    if (limits->event_queue_len) {
        server->limits.event_queue_len = limits->event_queue_len;
    }
    if (limits->max_output) {
        server->limits.max_output = limits->max_output;
    }
}

const BerthRpcLimits *
berth_rpc_server_get_limits(BerthRpcServer *server)
{
    return &server->limits;
}

guint
berth_rpc_server_n_clients(BerthRpcServer *server)
{
    return g_hash_table_size(server->conns);
}

gboolean
berth_rpc_server_add_method_full(BerthRpcServer *server, const char *name, gboolean modifies,
                                 BerthRpcHandler handler, gpointer data,
                                 GDestroyNotify data_free)
{
    RpcMethod *m;

    g_return_val_if_fail(server && name && handler, FALSE);
    if (g_hash_table_contains(server->methods, name)) {
        return FALSE;
    }
    m = g_new0(RpcMethod, 1);
    m->name = g_strdup(name);
    m->modifies = modifies;
    m->handler = handler;
    m->data = data;
    m->data_free = data_free;
    g_hash_table_insert(server->methods, m->name, m);
    return TRUE;
}

void
berth_rpc_server_add_method(BerthRpcServer *server, const char *name, gboolean modifies,
                            BerthRpcHandler handler, gpointer data)
{
    gboolean added = berth_rpc_server_add_method_full(server, name, modifies, handler, data,
                                                      NULL);

    g_return_if_fail(added);
}

static gint
compare_strings(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

char **
berth_rpc_server_list_methods(BerthRpcServer *server)
{
    GHashTableIter iter;
    gpointer key;
    GPtrArray *names = g_ptr_array_new();

    g_hash_table_iter_init(&iter, server->methods);
    while (g_hash_table_iter_next(&iter, &key, NULL)) {
        g_ptr_array_add(names, g_strdup(key));
    }
    g_ptr_array_sort(names, compare_strings);
    g_ptr_array_add(names, NULL);
    return (char **) g_ptr_array_free(names, FALSE);
}

gboolean
berth_rpc_server_method_modifies(BerthRpcServer *server, const char *name)
{
    RpcMethod *m = g_hash_table_lookup(server->methods, name);

    return m && m->modifies;
}

/* --- connections --- */

gboolean
berth_rpc_server_add_transport(BerthRpcServer *server, BerthRpcTransport *transport,
                               gboolean readonly)
{
    BerthRpcConn *conn;

    if (g_hash_table_size(server->conns) >= server->limits.max_clients) {
        g_log_structured("berth-rpc", G_LOG_LEVEL_INFO, "BERTH_PEER", transport->peer,
                         "MESSAGE", "refusing JSON-RPC connection from %s: %u clients, the limit",
                         transport->peer, server->limits.max_clients);
        transport->ops->close(transport);
        transport->ops->free(transport);
        return FALSE;
    }
    conn = berth_rpc_conn_new(server, transport, readonly);
    g_hash_table_add(server->conns, conn);
    return TRUE;
}

void
berth_rpc_server_conn_closed(BerthRpcServer *server, BerthRpcConn *conn)
{
    if (g_hash_table_remove(server->conns, conn)) {
        berth_rpc_conn_unref(conn);
    }
}

/* --- listeners --- */

static gboolean listener_ready(gint fd, GIOCondition condition, gpointer data);

static void
listener_watch(RpcListener *l)
{
    l->source = g_unix_fd_source_new(l->fd, G_IO_IN);
    g_source_set_callback(l->source, G_SOURCE_FUNC(listener_ready), l, NULL);
    g_source_set_static_name(l->source, "berth-rpc-listener");
    g_source_attach(l->source, l->server->ctx);
}

static gboolean
listener_resume(gpointer data)
{
    RpcListener *l = data;

    listener_watch(l);
    return G_SOURCE_REMOVE;
}

static gboolean
listener_ready(gint fd, GIOCondition condition, gpointer data)
{
    RpcListener *l = data;

    for (int i = 0; i < ACCEPT_BURST; i++) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                GSource *timer = g_timeout_source_new(ACCEPT_BACKOFF_MS);

                g_warning("cannot accept JSON-RPC connections: %s", g_strerror(errno));
                g_source_set_callback(timer, listener_resume, l, NULL);
                g_source_attach(timer, l->server->ctx);
                g_source_unref(timer);
                g_clear_pointer(&l->source, g_source_unref);
                return G_SOURCE_REMOVE;
            }
            break;
        }
        berth_rpc_server_add_transport(l->server, berth_rpc_transport_fd_new(cfd), l->readonly);
    }
    return G_SOURCE_CONTINUE;
}

static void
listener_add(BerthRpcServer *server, int fd, gboolean readonly, const char *path)
{
    RpcListener *l = g_new0(RpcListener, 1);

    l->server = server;
    l->fd = fd;
    l->readonly = readonly;
    l->path = g_strdup(path);
    listener_watch(l);
    g_ptr_array_add(server->listeners, l);
}

gboolean
berth_rpc_server_listen_unix(BerthRpcServer *server, const char *path, gboolean readonly,
                             guint mode, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "socket path '%s' is longer than %zu bytes", path,
                    sizeof(addr.sun_path) - 1);
        return FALSE;
    }
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS,
                        "'%s' exists and is not a socket", path);
            return FALSE;
        }
        /* A socket left by an earlier berthd that did not exit cleanly. */
        if (unlink(path) < 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                        "cannot remove the old socket '%s': %s", path, g_strerror(errno));
            return FALSE;
        }
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "socket() failed: %s",
                    g_strerror(errno));
        return FALSE;
    }
    if (bind(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 || chmod(path, mode) < 0 ||
        listen(fd, SOMAXCONN) < 0) {
        int saved = errno;

        close(fd);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "cannot listen on '%s': %s", path, g_strerror(saved));
        return FALSE;
    }
    listener_add(server, fd, readonly, path);
    return TRUE;
}

gboolean
berth_rpc_server_listen_fd(BerthRpcServer *server, int fd, gboolean readonly, GError **error)
{
    int listening = 0;
    socklen_t len = sizeof(listening);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "file descriptor %d is not a listening socket", fd);
        close(fd);
        return FALSE;
    }
    if (!g_unix_set_fd_nonblocking(fd, TRUE, error)) {
        close(fd);
        return FALSE;
    }
    listener_add(server, fd, readonly, NULL);
    return TRUE;
}

/* --- dispatch --- */

static void
send_error(BerthRpcConn *conn, const char *id_json, int code, const char *name,
           const char *message)
{
    g_autofree char *text = berth_rpc_response_error(id_json, code, name, message);

    berth_rpc_conn_send(conn, text, strlen(text));
}

void
berth_rpc_server_dispatch_line(BerthRpcServer *server, BerthRpcConn *conn, const char *line,
                               gsize len)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *id_json = NULL;
    int code = 0;
    BerthRpcRequest *req = berth_rpc_request_parse(line, len, &code, &id_json, &error);
    BerthRpcCall *call;
    RpcMethod *m;
    gboolean readonly;

    if (!req) {
        send_error(conn, id_json, code, berth_rpc_code_name(code), error->message);
        return;
    }
    m = g_hash_table_lookup(server->methods, req->method);
    if (!m) {
        if (req->id_json) {
            g_autofree char *msg = g_strdup_printf("unknown method '%s'", req->method);

            send_error(conn, req->id_json, BERTH_RPC_METHOD_NOT_FOUND, "method-not-found",
                       msg);
        }
        berth_rpc_request_free(req);
        return;
    }
    readonly = conn->readonly || conn->transport->readonly;
    if (m->modifies && readonly) {
        g_autoptr(GError) denied = g_error_new(BERTH_ERROR, BERTH_ERROR_ACCESS_DENIED,
                                               "method '%s' changes state and is not allowed "
                                               "on a read-only connection", m->name);

        if (req->id_json) {
            send_error(conn, req->id_json, berth_error_rpc_code(denied),
                       berth_error_name_for(denied), denied->message);
        }
        berth_rpc_request_free(req);
        return;
    }
    if (m->modifies) {
        /* An audit record: at message level, so that the default log level keeps it. */
        g_log_structured("berth-rpc", G_LOG_LEVEL_MESSAGE, "BERTH_METHOD", m->name, "BERTH_PEER",
                         conn->transport->peer, "MESSAGE", "%s called by %s", m->name,
                         conn->transport->peer);
    }

    call = g_new0(BerthRpcCall, 1);
    call->magic = CALL_MAGIC;
    call->conn = berth_rpc_conn_ref(conn);
    call->req = req;
    call->readonly = readonly;
    call->peer = conn->transport->peer;
    conn->pending++;
    m->handler(call, req->params, m->data);
}

/* --- calls --- */

const char *
berth_rpc_call_method(BerthRpcCall *call)
{
    return call->req->method;
}

gboolean
berth_rpc_call_readonly(BerthRpcCall *call)
{
    return call->readonly;
}

const char *
berth_rpc_call_peer(BerthRpcCall *call)
{
    return call->peer;
}

BerthRpcConn *
berth_rpc_call_conn(BerthRpcCall *call)
{
    return call->conn;
}

BerthRpcServer *
berth_rpc_call_server(BerthRpcCall *call)
{
    return call->conn->server;
}

static gboolean
call_deliver(gpointer data)
{
    BerthRpcCall *call = data;
    BerthRpcConn *conn = call->conn;

    /* A reply for a connection that went away is dropped quietly. */
    if (!conn->closed && call->text) {
        berth_rpc_conn_send(conn, call->text, strlen(call->text));
    }
    berth_rpc_conn_call_done(conn);
    call->magic = 0;
    berth_rpc_request_free(call->req);
    g_free(call->text);
    g_free(call);
    berth_rpc_conn_unref(conn);
    return G_SOURCE_REMOVE;
}

static void
call_finish(BerthRpcCall *call, char *text)
{
    g_assert(call->magic == CALL_MAGIC);
    call->magic = CALL_REPLIED;
    call->text = text;
    if (g_main_context_is_owner(call->conn->ctx)) {
        call_deliver(call);
    } else {
        g_main_context_invoke_full(call->conn->ctx, G_PRIORITY_DEFAULT, call_deliver, call,
                                   NULL);
    }
}

void
berth_rpc_call_reply(BerthRpcCall *call, char *result_json)
{
    char *text = NULL;

    g_return_if_fail(call);
    /* A notification (no id) runs but gets no response. */
    if (call->req->id_json) {
        text = berth_rpc_response_result(call->req->id_json, result_json);
    }
    g_free(result_json);
    call_finish(call, text);
}

void
berth_rpc_call_reply_error(BerthRpcCall *call, const GError *error)
{
    char *text = NULL;

    g_return_if_fail(call && error);
    if (call->req->id_json) {
        text = berth_rpc_response_error(call->req->id_json, berth_error_rpc_code(error),
                                        berth_error_name_for(error), error->message);
    }
    call_finish(call, text);
}

void
berth_rpc_call_reply_new_error(BerthRpcCall *call, int code, const char *format, ...)
{
    g_autoptr(GError) error = NULL;
    va_list args;

    va_start(args, format);
    error = g_error_new_valist(BERTH_ERROR, code, format, args);
    va_end(args);
    berth_rpc_call_reply_error(call, error);
}
