/* Test plugin "good": a minimal, conformant event sink that counts the events it gets. */
#include <berth/sink.h>

typedef struct {
    BerthPluginHandle *self;
    const BerthHost *host;
    guint64 count;
} GoodSink;

static gboolean
good_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    GoodSink *sink = g_new0(GoodSink, 1);

    sink->self = self;
    sink->host = host;
    *priv = sink;
    host->log(self, G_LOG_LEVEL_INFO, "good: initialized");
    return TRUE;
}

static void
good_shutdown(gpointer priv)
{
    GoodSink *sink = priv;

    /* The tests read the count from this line. */
    sink->host->log(sink->self, G_LOG_LEVEL_INFO, "good: %" G_GUINT64_FORMAT " events",
                    sink->count);
    g_free(sink);
}

static void
good_deliver(gpointer priv, const BerthEvent *event)
{
    GoodSink *sink = priv;

    sink->count++;
}

static const BerthSinkOps good_ops = {
    .struct_size = sizeof(BerthSinkOps),
    .deliver = good_deliver,
};

static const BerthPlugin good_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "good",
    .version = "1.0",
    .description = "counts events (a test plugin)",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .init = good_init,
    .shutdown = good_shutdown,
    .ops = &good_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &good_plugin;
}
