/* events.subscribe / events.unsubscribe: bus subscriptions delivered as notifications. */
#include <string.h>

#include "../errors.h"
#include "server-private.h"

/* Events written per wake-up of one subscription, so that a busy one cannot starve others. */
#define EVENTS_PER_DISPATCH 64

typedef struct {
    guint64 id;
    BerthRpcConn *conn; /* the connection frees its subscriptions before it goes */
    BerthBusSub *sub;
    GSource *source;    /* NULL while paused */
    char *kind;         /* filters; NULL = any */
    char *name;
    char *type;
} RpcSub;

static void
rpc_sub_stop_source(RpcSub *s)
{
    if (s->source) {
        g_source_destroy(s->source);
        g_clear_pointer(&s->source, g_source_unref);
    }
}

static void
rpc_sub_free(RpcSub *s)
{
    rpc_sub_stop_source(s);
    berth_bus_unsubscribe(s->sub);
    g_free(s->kind);
    g_free(s->name);
    g_free(s->type);
    g_free(s);
}

static gboolean
rpc_sub_matches(RpcSub *s, const BerthEvent *ev)
{
    /* The lost marker concerns the subscription itself: it passes every filter. */
    if (g_strcmp0(ev->type, "events-lost") == 0) {
        return TRUE;
    }
    return (!s->kind || g_strcmp0(s->kind, ev->object_kind) == 0) &&
           (!s->name || g_strcmp0(s->name, ev->object_name) == 0) &&
           (!s->type || g_strcmp0(s->type, ev->type) == 0);
}

static gboolean
rpc_sub_deliver(RpcSub *s, BerthRpcConn *conn)
{
    gsize max_output = conn->server->limits.max_output;

    for (guint i = 0; i < EVENTS_PER_DISPATCH; i++) {
        const BerthEvent *ev;

        /* A reader that does not keep up: leave events on the bus queue, which drops them and
         * hands out one events-lost marker; the server never grows or blocks for it. */
        if (berth_rpc_conn_queued(conn) >= max_output) {
            berth_rpc_subscriptions_pause(conn);
            return G_SOURCE_REMOVE;
        }
        ev = berth_bus_sub_pop(s->sub, 0);
        if (!ev) {
            break;
        }
        if (rpc_sub_matches(s, ev)) {
            g_autofree char *json = berth_event_to_json(ev);
            g_autofree char *note = berth_rpc_notification("event", json);

            berth_rpc_conn_send(conn, note, strlen(note));
        }
        berth_event_unref(ev);
        if (conn->closed) {
            /* The write failed and the close freed @s with its source. */
            return G_SOURCE_REMOVE;
        }
    }
    return G_SOURCE_CONTINUE;
}

static gboolean
rpc_sub_ready(gpointer data)
{
    RpcSub *s = data;
    /* A failed write closes the connection, which may drop its last reference. */
    BerthRpcConn *conn = berth_rpc_conn_ref(s->conn);
    gboolean again = rpc_sub_deliver(s, conn);

    berth_rpc_conn_unref(conn);
    return again;
}

static void
rpc_sub_start_source(RpcSub *s)
{
    s->source = berth_bus_sub_source_new(s->sub);
    if (!s->source) {
        return;
    }
    g_source_set_callback(s->source, rpc_sub_ready, s, NULL);
    g_source_attach(s->source, s->conn->ctx);
}

void
berth_rpc_subscriptions_pause(BerthRpcConn *conn)
{
    conn->subs_paused = TRUE;
    for (guint i = 0; i < conn->subs->len; i++) {
        rpc_sub_stop_source(g_ptr_array_index(conn->subs, i));
    }
}

void
berth_rpc_subscriptions_resume(BerthRpcConn *conn)
{
    conn->subs_paused = FALSE;
    for (guint i = 0; i < conn->subs->len; i++) {
        RpcSub *s = g_ptr_array_index(conn->subs, i);

        if (!s->source) {
            rpc_sub_start_source(s);
        }
    }
}

void
berth_rpc_subscriptions_free_all(BerthRpcConn *conn)
{
    for (guint i = 0; i < conn->subs->len; i++) {
        rpc_sub_free(g_ptr_array_index(conn->subs, i));
    }
    g_ptr_array_set_size(conn->subs, 0);
}

static void
subscribe_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    static const char *const allowed[] = {"since", "filter", NULL};
    static const char *const filter_allowed[] = {"object_kind", "object_name", "type", NULL};
    BerthRpcConn *conn = berth_rpc_call_conn(call);
    BerthRpcServer *server = conn->server;
    g_autoptr(GError) error = NULL;
    gint64 since = 0;
    guint64 since_bus;
    const char *since_path[] = {"since", NULL};
    yajl_val filter = NULL;
    const char *kind = NULL, *name = NULL, *type = NULL;
    guint64 missed = 0;
    RpcSub *s;

    if (!server->bus) {
        berth_rpc_call_reply_new_error(call, BERTH_ERROR_UNSUPPORTED,
                                       "this server has no event bus");
        return;
    }
    if (!berth_rpc_params_check(params, allowed, &error) ||
        !berth_rpc_param_int(params, "since", FALSE, &since, &error) ||
        !berth_rpc_param_object(params, "filter", FALSE, &filter, &error) ||
        !berth_rpc_params_check(filter, filter_allowed, &error) ||
        !berth_rpc_param_string(filter, "object_kind", FALSE, &kind, &error) ||
        !berth_rpc_param_string(filter, "object_name", FALSE, &name, &error) ||
        !berth_rpc_param_string(filter, "type", FALSE, &type, &error)) {
        berth_rpc_call_reply_error(call, error);
        return;
    }
    if (since < 0) {
        berth_rpc_call_reply_new_error(call, BERTH_ERROR_INVALID_ARGUMENT,
                                       "parameter 'since' must not be negative");
        return;
    }
    if (conn->subs->len >= BERTH_RPC_MAX_SUBSCRIPTIONS) {
        berth_rpc_call_reply_new_error(call, BERTH_ERROR_BUSY,
                                       "this connection already has %u event subscriptions, "
                                       "the limit", BERTH_RPC_MAX_SUBSCRIPTIONS);
        return;
    }

    s = g_new0(RpcSub, 1);
    s->id = conn->next_sub_id++;
    s->conn = conn;
    s->kind = g_strdup(kind);
    s->name = g_strdup(name);
    s->type = g_strdup(type);
    /* A present since 0: the client has seen nothing and wants what the ring holds. */
    if (since == 0 && params && yajl_tree_get(params, since_path, yajl_t_any)) {
        since_bus = BERTH_BUS_SINCE_START;
    } else {
        since_bus = (guint64) since;
    }
    s->sub = berth_bus_subscribe(server->bus, server->limits.event_queue_len, since_bus,
                                 &missed);
    g_ptr_array_add(conn->subs, s);
    /* The reply goes out now, the first notification from a later loop iteration: the client
     * always learns its subscription id first. */
    berth_rpc_call_reply(call, g_strdup_printf("{\"subscription\":%" G_GUINT64_FORMAT
                                               ",\"last_seq\":%" G_GUINT64_FORMAT
                                               ",\"missed\":%" G_GUINT64_FORMAT "}",
                                               s->id, berth_bus_last_seq(server->bus),
                                               missed));
    if (!conn->subs_paused && !conn->closed) {
        rpc_sub_start_source(s);
    }
}

static void
unsubscribe_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    static const char *const allowed[] = {"subscription", NULL};
    BerthRpcConn *conn = berth_rpc_call_conn(call);
    g_autoptr(GError) error = NULL;
    gint64 id = 0;

    if (!berth_rpc_params_check(params, allowed, &error) ||
        !berth_rpc_param_int(params, "subscription", TRUE, &id, &error)) {
        berth_rpc_call_reply_error(call, error);
        return;
    }
    for (guint i = 0; i < conn->subs->len; i++) {
        RpcSub *s = g_ptr_array_index(conn->subs, i);

        if (id > 0 && s->id == (guint64) id) {
            g_ptr_array_remove_index(conn->subs, i);
            rpc_sub_free(s);
            berth_rpc_call_reply(call, g_strdup("true"));
            return;
        }
    }
    berth_rpc_call_reply_new_error(call, BERTH_ERROR_INVALID_ARGUMENT,
                                   "no subscription %" G_GINT64_FORMAT " on this connection",
                                   id);
}

void
berth_rpc_subscriptions_register(BerthRpcServer *server)
{
    berth_rpc_server_add_method(server, "events.subscribe", FALSE, subscribe_handler, NULL);
    berth_rpc_server_add_method(server, "events.unsubscribe", FALSE, unsubscribe_handler, NULL);
}
