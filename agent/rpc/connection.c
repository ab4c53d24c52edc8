/* One JSON-RPC connection: non-blocking reads into a bounded buffer, line framing, output queue. */
#include <string.h>

#include "server-private.h"

/* Bytes asked of the transport per read: small enough for fairness between connections. */
#define READ_CHUNK 65536
/* Written output is compacted away once this much of the buffer is dead. */
#define OUT_COMPACT 65536

typedef struct {
    GSource source;
    BerthRpcConn *conn; /* the connection owns the source and destroys it before going away */
} ConnSource;

static void conn_handle(BerthRpcConn *conn, GIOCondition revents);

/* TRUE while the connection may take another request: under max_pending calls in flight, and
 * under max_output bytes of replies its peer has not read yet (a peer that sends without
 * reading is stopped here instead of growing our buffer). */
static gboolean
conn_may_take(BerthRpcConn *conn)
{
    return conn->pending < conn->server->limits.max_pending &&
           conn->out->len - conn->out_off < conn->server->limits.max_output;
}

/* Makes the connection's source dispatch on the next loop iteration. */
static void
conn_wake(BerthRpcConn *conn)
{
    if (!conn->ready_armed) {
        conn->ready_armed = TRUE;
        g_source_set_ready_time(conn->source, 0);
    }
}
static void conn_update(BerthRpcConn *conn);

static gboolean
conn_source_dispatch(GSource *source, GSourceFunc callback, gpointer user_data)
{
    ConnSource *cs = (ConnSource *) source;
    BerthRpcConn *conn = berth_rpc_conn_ref(cs->conn);

    /* GLib signals the context's wake-up fd on every ready-time change, even to the same
     * value: touch it only when it was armed, or every request costs an extra loop pass. */
    if (conn->ready_armed) {
        conn->ready_armed = FALSE;
        g_source_set_ready_time(source, -1);
    }
    conn_handle(conn, g_source_query_unix_fd(source, conn->fd_tag));
    berth_rpc_conn_unref(conn);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs conn_source_funcs = {
    .dispatch = conn_source_dispatch,
};

BerthRpcConn *
berth_rpc_conn_new(BerthRpcServer *server, BerthRpcTransport *transport, gboolean readonly)
{
    BerthRpcConn *conn = g_new0(BerthRpcConn, 1);
    ConnSource *cs;

    conn->refcount = 1;
    conn->server = server;
    conn->ctx = g_main_context_ref(server->ctx);
    conn->transport = transport;
    conn->readonly = readonly;
    conn->in = g_byte_array_sized_new(4096);
    conn->out = g_string_sized_new(4096);
    conn->subs = g_ptr_array_new();
    conn->next_sub_id = 1;

    conn->source = g_source_new(&conn_source_funcs, sizeof(ConnSource));
    cs = (ConnSource *) conn->source;
    cs->conn = conn;
    g_source_set_static_name(conn->source, "berth-rpc-conn");
    /* GLib blocks a non-recursive source during its dispatch by taking its fd out of the poll
     * set and putting it back afterwards, which signals the context's wake-up fd: an extra
     * syscall and loop pass per request. Nothing here iterates the context recursively. */
    g_source_set_can_recurse(conn->source, TRUE);
    conn->polled = G_IO_IN;
    conn->fd_tag = g_source_add_unix_fd(conn->source, transport->fd, conn->polled);
    g_source_attach(conn->source, conn->ctx);
    conn_update(conn);
    return conn;
}

BerthRpcConn *
berth_rpc_conn_ref(BerthRpcConn *conn)
{
    g_atomic_int_inc(&conn->refcount);
    return conn;
}

void
berth_rpc_conn_unref(BerthRpcConn *conn)
{
    if (!conn || !g_atomic_int_dec_and_test(&conn->refcount)) {
        return;
    }
    /* The last reference may be dropped by a reply posted after the connection closed. */
    g_assert(conn->closed);
    conn->transport->ops->free(conn->transport);
    g_byte_array_unref(conn->in);
    g_string_free(conn->out, TRUE);
    g_ptr_array_unref(conn->subs);
    g_main_context_unref(conn->ctx);
    g_free(conn);
}

void
berth_rpc_conn_close(BerthRpcConn *conn)
{
    BerthRpcServer *server = conn->server;

    if (conn->closed) {
        return;
    }
    conn->closed = TRUE;
    conn->server = NULL;
    berth_rpc_subscriptions_free_all(conn);
    g_source_destroy(conn->source);
    g_clear_pointer(&conn->source, g_source_unref);
    conn->transport->ops->close(conn->transport);
    /* Buffers can be large; the struct may live on until the last pending reply. */
    g_byte_array_set_size(conn->in, 0);
    g_string_truncate(conn->out, 0);
    conn->out_off = 0;
    if (server) {
        berth_rpc_server_conn_closed(server, conn);
    }
}

gsize
berth_rpc_conn_queued(BerthRpcConn *conn)
{
    return conn->out->len - conn->out_off;
}

/* Closes a connection whose peer is done sending once every request has its reply out. */
static void
conn_maybe_finish(BerthRpcConn *conn)
{
    if (!conn->closed && conn->read_eof && conn->pending == 0 &&
        conn->in_start == conn->in->len && berth_rpc_conn_queued(conn) == 0) {
        berth_rpc_conn_close(conn);
    }
}

static void
conn_flush(BerthRpcConn *conn)
{
    BerthRpcTransport *t = conn->transport;

    while (conn->out_off < conn->out->len) {
        g_autoptr(GError) error = NULL;
        gssize n = t->ops->write(t, conn->out->str + conn->out_off,
                                 conn->out->len - conn->out_off, &error);

        if (n < 0) {
            if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
                break;
            }
            g_debug("closing JSON-RPC connection from %s: %s", t->peer, error->message);
            berth_rpc_conn_close(conn);
            return;
        }
        conn->out_off += (gsize) n;
    }
    if (conn->out_off == conn->out->len) {
        g_string_truncate(conn->out, 0);
        conn->out_off = 0;
    } else if (conn->out_off >= OUT_COMPACT) {
        g_string_erase(conn->out, 0, (gssize) conn->out_off);
        conn->out_off = 0;
    }
    if (conn->subs_paused && conn->server &&
        berth_rpc_conn_queued(conn) <= conn->server->limits.max_output / 2) {
        berth_rpc_subscriptions_resume(conn);
    }
}

void
berth_rpc_conn_send(BerthRpcConn *conn, const char *text, gsize len)
{
    if (conn->closed) {
        return;
    }
    g_string_append_len(conn->out, text, (gssize) len);
    /* Write at once unless the socket is known to be full: most replies never wait. */
    if (!(conn->polled & G_IO_OUT)) {
        conn_flush(conn);
        if (!conn->closed) {
            conn_update(conn);
        }
    }
}

void
berth_rpc_conn_call_done(BerthRpcConn *conn)
{
    g_assert(conn->pending > 0);
    conn->pending--;
    if (conn->closed) {
        return;
    }
    /* Framing resumes from the source, never from inside a handler's reply. */
    /* Not polling for input means it was throttled (limits may also change on SIGHUP). */
    if (!(conn->polled & G_IO_IN) || conn->read_eof) {
        conn_wake(conn);
    }
}

/* Refuses a line over max_request: one error reply, then this connection (only) closes. */
static void
conn_oversized(BerthRpcConn *conn)
{
    g_autofree char *msg = g_strdup_printf("request exceeds the limit of %" G_GSIZE_FORMAT
                                           " bytes", conn->server->limits.max_request);
    g_autofree char *reply = berth_rpc_response_error(NULL, BERTH_RPC_INVALID_REQUEST,
                                                      "invalid-request", msg);

    g_log_structured("berth-rpc", G_LOG_LEVEL_INFO, "BERTH_PEER", conn->transport->peer,
                     "MESSAGE", "closing JSON-RPC connection from %s: %s",
                     conn->transport->peer, msg);
    /* Best effort: the error goes out if the socket takes it now; no waiting on this peer. */
    g_string_append(conn->out, reply);
    conn_flush(conn);
    berth_rpc_conn_close(conn);
}

static void
conn_read(BerthRpcConn *conn)
{
    BerthRpcTransport *t = conn->transport;
    g_autoptr(GError) error = NULL;
    gsize max_line = conn->server->limits.max_request + 1; /* with its newline */
    gsize buffered, want, old;
    gssize n;

    if (conn->in_start > 0) {
        g_byte_array_remove_range(conn->in, 0, (guint) conn->in_start);
        conn->in_scan -= conn->in_start;
        conn->in_start = 0;
    }
    buffered = conn->in->len;
    if (buffered >= max_line) {
        return; /* conn_process refuses it */
    }
    want = MIN(READ_CHUNK, max_line - buffered);
    old = conn->in->len;
    g_byte_array_set_size(conn->in, (guint) (old + want));
    n = t->ops->read(t, conn->in->data + old, want, &error);
    g_byte_array_set_size(conn->in, (guint) (old + MAX(n, 0)));
    if (n == 0) {
        conn->read_eof = TRUE;
    } else if (n < 0 && !g_error_matches(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK)) {
        g_debug("closing JSON-RPC connection from %s: %s", t->peer, error->message);
        berth_rpc_conn_close(conn);
    }
}

static gboolean
line_is_blank(const char *line, gsize len)
{
    for (gsize i = 0; i < len; i++) {
        if (!g_ascii_isspace(line[i])) {
            return FALSE;
        }
    }
    return TRUE;
}

/* Frames and dispatches complete lines while the connection may have more calls in flight. */
static void
conn_process(BerthRpcConn *conn)
{
    gsize max_request = conn->server->limits.max_request;

    while (!conn->closed && conn_may_take(conn)) {
        const char *start = (const char *) conn->in->data + conn->in_start;
        const char *nl = memchr(conn->in->data + conn->in_scan, '\n',
                                conn->in->len - conn->in_scan);
        gsize len;

        if (!nl) {
            conn->in_scan = conn->in->len;
            len = conn->in->len - conn->in_start;
            if (len > max_request) {
                conn_oversized(conn);
                return;
            }
            if (!conn->read_eof || len == 0) {
                break;
            }
            /* The peer closed its side after a last line without a newline: still a line. */
            conn->in_start = conn->in_scan = conn->in->len;
        } else {
            len = (gsize) (nl - start);
            if (len > max_request) {
                conn_oversized(conn);
                return;
            }
            conn->in_start = conn->in_scan = (gsize) (nl - (const char *) conn->in->data) + 1;
        }
        if (len > 0 && start[len - 1] == '\r') {
            len--;
        }
        if (!line_is_blank(start, len)) {
            /* @start stays valid: nothing reads into the buffer during a dispatch. */
            berth_rpc_server_dispatch_line(conn->server, conn, start, len);
        }
    }
}

/* Polls for what the connection can use now: requests while it may take them, writability
 * while output waits. */
static void
conn_update(BerthRpcConn *conn)
{
    BerthRpcTransport *t = conn->transport;
    GIOCondition want = 0;
    gboolean may_read;

    if (conn->closed) {
        return;
    }
    may_read = !conn->read_eof && conn_may_take(conn);
    if (may_read) {
        want |= G_IO_IN;
    }
    if (berth_rpc_conn_queued(conn) > 0) {
        want |= G_IO_OUT;
    }
    if (t->ops->extra_events) {
        want |= t->ops->extra_events(t);
    }
    if (want != conn->polled) {
        g_source_modify_unix_fd(conn->source, conn->fd_tag, want);
        conn->polled = want;
    }
    if (may_read && t->ops->pending && t->ops->pending(t)) {
        conn_wake(conn);
    }
    conn_maybe_finish(conn);
}

static void
conn_handle(BerthRpcConn *conn, GIOCondition revents)
{
    BerthRpcTransport *t = conn->transport;
    gboolean throttled = !conn_may_take(conn);

    if (revents & G_IO_OUT) {
        conn_flush(conn);
        if (conn->closed) {
            return;
        }
    }
    /* POLLHUP: the peer is gone both ways; nothing we write can reach it any more. */
    if ((revents & G_IO_ERR) || ((revents & G_IO_HUP) && (throttled || conn->read_eof))) {
        berth_rpc_conn_close(conn);
        return;
    }
    /* Read on input, on bytes the transport holds above the fd, and, for a transport with
     * its own needs (a TLS handshake that must write before it reads), on any wake-up. */
    if (!throttled && !conn->read_eof &&
        ((revents & (G_IO_IN | G_IO_HUP)) ||
         (t->ops->pending && t->ops->pending(t)) || (t->ops->extra_events && revents))) {
        conn_read(conn);
        if (conn->closed) {
            return;
        }
    }
    conn_process(conn);
    if (!conn->closed) {
        conn_update(conn);
    }
}
