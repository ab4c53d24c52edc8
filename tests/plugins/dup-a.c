/* Test plugin "dup-a": named "dup", like dup-b: the second one loaded is refused. */
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
    .name = "dup",
    .version = "1.0",
    .description = "named dup, like dup-b (a test plugin)",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .ops = &sink_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &plugin;
}
