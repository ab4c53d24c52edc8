/* Test plugin "small-struct": a descriptor smaller than ABI 1.0's: refused. */
#include <stddef.h>

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
    .struct_size = offsetof(BerthPlugin, ops),
    .name = "small-struct",
    .version = "1.0",
    .description = "a descriptor smaller than ABI 1.0's: refused.",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .ops = &sink_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &plugin;
}
