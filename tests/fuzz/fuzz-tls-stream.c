/* libFuzzer target: the byte stream an authenticated TLS peer sends after its handshake, through
 * a transport that behaves like the TLS one (records split anywhere, decrypted bytes buffered
 * above the fd, would-block on either side) into the connection's framing, the JSON-RPC parser,
 * role checks and dispatch. Every line berthd writes back must be one JSON object. */
#include <glib-unix.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "event-bus.h"
#include "rpc/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    BerthRpcTransport base;
    int peer;             /* the other end of the socketpair: holds a byte so fd stays ready */
    const guint8 *data;
    gsize len, off;
    guint8 chunk;         /* record size pattern, from the input's first byte */
    guint calls;
    GString *written;
    gboolean *freed;
} FuzzTransport;

static gssize
ft_read(BerthRpcTransport *base, void *buf, gsize len, GError **error)
{
    FuzzTransport *t = (FuzzTransport *) base;
    gsize n;

    t->calls++;
    /* Now and then nothing has arrived yet, as with a TLS record still in flight. */
    if ((t->calls + t->chunk) % 5 == 0) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "would block");
        return -1;
    }
    if (t->off >= t->len) {
        return 0;
    }
    n = MIN(len, MIN(t->len - t->off, (gsize) (t->chunk % 61) + 1 + (t->calls % 3) * 16384));
    memcpy(buf, t->data + t->off, n);
    t->off += n;
    return (gssize) n;
}

static gssize
ft_write(BerthRpcTransport *base, const void *buf, gsize len, GError **error)
{
    FuzzTransport *t = (FuzzTransport *) base;
    gsize n = MIN(len, 4096);

    if ((t->calls + t->chunk) % 7 == 0) {
        t->calls++;
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "would block");
        return -1;
    }
    g_string_append_len(t->written, buf, (gssize) n);
    return (gssize) n;
}

static gboolean
ft_pending(BerthRpcTransport *base)
{
    FuzzTransport *t = (FuzzTransport *) base;

    return t->off < t->len && (t->chunk & 1);
}

static GIOCondition
ft_extra_events(BerthRpcTransport *base)
{
    FuzzTransport *t = (FuzzTransport *) base;

    return (t->chunk & 2) ? G_IO_OUT : 0;
}

static void
ft_close(BerthRpcTransport *base)
{
    FuzzTransport *t = (FuzzTransport *) base;

    if (base->fd >= 0) {
        close(base->fd);
        close(t->peer);
        base->fd = -1;
    }
}

/* Every complete line written must be a JSON object. */
static void
check_output(const GString *out)
{
    const char *p = out->str;
    const char *nl;

    while ((nl = memchr(p, '\n', out->len - (gsize) (p - out->str)))) {
        g_autofree char *line = g_strndup(p, (gsize) (nl - p));
        yajl_val tree = yajl_tree_parse(line, NULL, 0);

        g_assert(YAJL_IS_OBJECT(tree));
        yajl_tree_free(tree);
        p = nl + 1;
    }
}

static void
ft_free(BerthRpcTransport *base)
{
    FuzzTransport *t = (FuzzTransport *) base;

    ft_close(base);
    check_output(t->written);
    g_string_free(t->written, TRUE);
    *t->freed = TRUE;
    g_free(base->peer);
    g_free(t);
}

static const BerthRpcTransportOps ft_ops = {
    .read = ft_read,
    .write = ft_write,
    .pending = ft_pending,
    .extra_events = ft_extra_events,
    .close = ft_close,
    .free = ft_free,
};

static void
modify_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    berth_rpc_call_reply(call, g_strdup("{\"defined\":true}"));
}

static void
error_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    berth_rpc_call_reply_new_error(call, 2, "domain '%s' does not exist", "x\"\n\x01");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static GMainContext *ctx;
    static BerthBus *bus;
    static BerthRpcServer *server;
    FuzzTransport *t;
    gboolean freed = FALSE;
    int sv[2];

    if (size < 1) {
        return 0;
    }
    if (!ctx) {
        BerthRpcLimits limits = {.max_request = 4096, .max_pending = 4, .max_output = 65536};

        ctx = g_main_context_new();
        bus = berth_bus_new(64);
        server = berth_rpc_server_new(ctx, bus, &limits);
        berth_rpc_server_add_method(server, "domain.define", TRUE, modify_handler, NULL);
        berth_rpc_server_add_method(server, "domain.get", FALSE, error_handler, NULL);
    }
    g_assert(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    g_assert(write(sv[1], "x", 1) == 1);
    t = g_new0(FuzzTransport, 1);
    t->base.ops = &ft_ops;
    t->base.fd = sv[0];
    t->base.peer = g_strdup("CN=fuzz,O=berth (127.0.0.1:1, admin)");
    t->base.readonly = (data[0] & 4) != 0; /* a readonly identity */
    t->peer = sv[1];
    t->chunk = data[0];
    t->data = data + 1;
    t->len = size - 1;
    t->written = g_string_new(NULL);
    t->freed = &freed;
    g_assert(berth_rpc_server_add_transport(server, &t->base, FALSE));
    for (int i = 0; i < 100000 && berth_rpc_server_n_clients(server) > 0; i++) {
        g_main_context_iteration(ctx, FALSE);
    }
    g_assert(berth_rpc_server_n_clients(server) == 0);
    while (g_main_context_iteration(ctx, FALSE)) {
    }
    g_assert(freed);
    return 0;
}
