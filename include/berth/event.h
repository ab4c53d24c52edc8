/* Events as the bus carries them to subscribers and sink plugins. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/**
 * BerthEvent:
 * One event. Publishers fill @object_kind, @object_name, @object_uuid (may be NULL), @type and
 * @detail_json (a JSON object as text, or NULL for "{}"); the bus assigns @seq and
 * @timestamp_us. Subscribers get a read-only event that lives until their callback returns
 * (a sink that needs it longer copies the fields it needs).
 *
 * Object kinds: "agent", "domain", "nodedev", "job". Event types use libvirt's vocabulary as
 * kebab-case names, e.g. "domain-defined", "domain-undefined", "domain-started",
 * "domain-suspended", "domain-resumed", "domain-shutdown", "domain-stopped", "domain-crashed",
 * "device-removed", "nodedev-detached", "nodedev-reattached", "job-finished", and the marker
 * "events-lost" (detail {"count": N}) that a subscriber receives after its queue overflowed.
 * docs/api.md lists every type with its detail.
 */
typedef struct {
    gsize struct_size;       /* sizeof(BerthEvent) of the code that made it: the struct grows */
    guint64 seq;             /* agent-wide sequence number, 1, 2, 3, ... in publish order */
    gint64 timestamp_us;     /* wall clock, microseconds since the epoch (g_get_real_time) */
    const char *object_kind; /* "domain", "nodedev", "agent", "job" */
    const char *object_name; /* the object's name, e.g. the domain name */
    const char *object_uuid; /* the object's uuid, or NULL when it has none */
    const char *type;        /* the event type, e.g. "domain-started" */
    const char *detail_json; /* a JSON object as text, e.g. {"reason":"booted"}; NULL = {} */
} BerthEvent;

G_END_DECLS
