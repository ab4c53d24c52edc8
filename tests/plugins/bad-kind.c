/* Test plugin "bad-kind": a kind berthd does not know: refused. */
#include <berth/sink.h>

static void
sink_deliver(gpointer priv, const BerthEvent *event)
{
}

static const BerthSinkOps sink_ops = {
    .struct_size = sizeof(BerthSinkOps),
    .deliver = sink_deliver,
};

static const BerthPlugin plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "bad-kind",
    .version = "1.0",
    .description = "a kind berthd does not know: refused.",
    .kind = (BerthPluginKind)42,
    .ops = &sink_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &plugin;
}
