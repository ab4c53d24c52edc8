/* Test plugin "init-fails": conformant, but its init() fails with an error. */
#include <berth/sink.h>

static gboolean
fails_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, "the test device is missing");
    return FALSE;
}

static void
fails_deliver(gpointer priv, const BerthEvent *event)
{
}

static const BerthSinkOps fails_ops = {
    .struct_size = sizeof(BerthSinkOps),
    .deliver = fails_deliver,
};

static const BerthPlugin fails_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "init-fails",
    .version = "1.0",
    .description = "fails in init (a test plugin)",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .init = fails_init,
    .ops = &fails_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &fails_plugin;
}
