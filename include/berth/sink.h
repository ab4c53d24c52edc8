/* The ops table of an event-sink plugin (kind BERTH_PLUGIN_EVENT_SINK). */
#pragma once

#include <berth/plugin.h>

G_BEGIN_DECLS

/**
 * BerthSinkOps:
 * @deliver gets every event in sequence order, on the sink's own delivery thread (one per
 * sink plugin), never on the main context; it may block without holding up anyone but this
 * sink: when the sink falls behind, its bounded queue overflows and it receives an
 * "events-lost" event with the count. The event is valid until @deliver returns.
 */
typedef struct {
    gsize struct_size;
    void (*deliver)(gpointer priv, const BerthEvent *event);
} BerthSinkOps;

G_END_DECLS
