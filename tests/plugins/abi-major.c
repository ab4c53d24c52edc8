/* Test plugin "abi-major": built for ABI 2.0, another major: refused. */
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
    .abi_major = 2,
    .abi_minor = 0,
    .struct_size = sizeof(BerthPlugin),
    .name = "abi-major",
    .version = "1.0",
    .description = "built for ABI 2.0, another major: refused.",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .ops = &sink_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &plugin;
}
