/* What the JSON-RPC server's own files share: the server, connection and call structs. */
#pragma once

#include "jsonrpc.h"
#include "server.h"
#include "transport.h"

typedef struct BerthRpcConn BerthRpcConn;

struct BerthRpcServer {
    GMainContext *ctx;
    BerthBus *bus;         /* may be NULL: events.* then answer unsupported */
    BerthRpcLimits limits;
    GHashTable *methods;   /* name -> RpcMethod */
    GPtrArray *listeners;  /* RpcListener */
    GHashTable *conns;     /* BerthRpcConn set, one reference each */
};

/* Every field is touched on the server's main context only, except refcount (atomic) and the
 * fields set once at creation (ctx, transport, readonly), which calls read from any thread. */
struct BerthRpcConn {
    gint refcount;
    BerthRpcServer *server; /* NULL once closed */
    GMainContext *ctx;
    BerthRpcTransport *transport;
    gboolean readonly;      /* a read-only listener */

    GSource *source;        /* polls the transport's fd */
    gpointer fd_tag;
    GIOCondition polled;
    gboolean ready_armed;   /* the source's ready time is set (conn_wake) */

    GByteArray *in;         /* bytes read; [in_start, len) not yet framed */
    gsize in_start;
    gsize in_scan;          /* no newline in [in_start, in_scan) */
    GString *out;           /* bytes to write; [out_off, len) not yet written */
    gsize out_off;

    guint pending;          /* calls dispatched and not yet answered */
    gboolean read_eof;      /* the peer finished sending: close once everything is answered */
    gboolean closed;

    GPtrArray *subs;        /* RpcSub (subscriptions.c) */
    guint64 next_sub_id;
    gboolean subs_paused;   /* output over max_output: stop taking events off the bus */
};

BerthRpcConn *berth_rpc_conn_new(BerthRpcServer *server, BerthRpcTransport *transport,
                                 gboolean readonly);
BerthRpcConn *berth_rpc_conn_ref(BerthRpcConn *conn);
void berth_rpc_conn_unref(BerthRpcConn *conn);
/* Stops everything at once: subscriptions, polling, the transport. */
void berth_rpc_conn_close(BerthRpcConn *conn);
/* Queues @len bytes (one whole line) and writes what the socket takes now. */
void berth_rpc_conn_send(BerthRpcConn *conn, const char *text, gsize len);
/* Bytes queued and not yet written. */
gsize berth_rpc_conn_queued(BerthRpcConn *conn);
/* One call of this connection got its reply: reading may resume. */
void berth_rpc_conn_call_done(BerthRpcConn *conn);

/* server.c: one framed line from @conn. */
void berth_rpc_server_dispatch_line(BerthRpcServer *server, BerthRpcConn *conn,
                                    const char *line, gsize len);
/* server.c: @conn closed; the server drops its reference. */
void berth_rpc_server_conn_closed(BerthRpcServer *server, BerthRpcConn *conn);
/* server.c: the connection a call came from (main context only). */
BerthRpcConn *berth_rpc_call_conn(BerthRpcCall *call);

/* subscriptions.c: registers events.subscribe and events.unsubscribe. */
void berth_rpc_subscriptions_register(BerthRpcServer *server);
/* subscriptions.c: pause taking events while the output is over max_output, resume after. */
void berth_rpc_subscriptions_pause(BerthRpcConn *conn);
void berth_rpc_subscriptions_resume(BerthRpcConn *conn);
/* subscriptions.c: frees every subscription of @conn. */
void berth_rpc_subscriptions_free_all(BerthRpcConn *conn);
