/* Test plugin "abi-minor-newer": built for ABI 1.99, a minor newer than berthd's: refused. */
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
    .abi_minor = 99,
    .struct_size = sizeof(BerthPlugin),
    .name = "abi-minor-newer",
    .version = "1.0",
    .description = "built for ABI 1.99, a minor newer than berthd's: refused.",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .ops = &sink_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &plugin;
}
