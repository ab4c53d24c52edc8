/* The event bus: sequence numbers, a ring of recent events, bounded per-subscriber queues. */
#pragma once

#include <berth/event.h>
#include <gio/gio.h>

typedef struct BerthBus BerthBus;
typedef struct BerthBusSub BerthBusSub;

/* A new bus keeping the last @ring_size events for subscribers that resume (0 = no ring). */
BerthBus *berth_bus_new(guint ring_size);
/* Frees the bus; every subscription must have been removed. Accepts NULL. */
void berth_bus_free(BerthBus *bus);

/*
 * Publishes a copy of @event (the bus assigns seq and timestamp_us, ignoring the caller's) and
 * returns its seq. Thread safe; never blocks on a subscriber: a full subscriber queue drops the
 * event for that subscriber and counts it; the subscriber later pops one "events-lost" event
 * (object kind "agent", detail {"count": N, "first": seq, "last": seq}) before the next one.
 */
guint64 berth_bus_publish(BerthBus *bus, const BerthEvent *event);
/* The seq of the newest event (0 when none). */
guint64 berth_bus_last_seq(BerthBus *bus);

/*
 * Subscribes with a queue of @queue_len events (clamped to 1 .. 16777216). @since: 0 = only
 * events published from now on; N > 0 = first replay, from the ring, every event with
 * seq > N. When the ring no longer holds all of them, *@missed (may be NULL) is set to how many
 * are gone and the first event the subscriber pops is an "events-lost" marker with that count.
 */
BerthBusSub *berth_bus_subscribe(BerthBus *bus, guint queue_len, guint64 since, guint64 *missed);
/* For berth_bus_subscribe's @since: everything the ring holds, from the first event on (a
 * client that has seen nothing yet); *missed counts what the ring no longer holds. */
#define BERTH_BUS_SINCE_START G_MAXUINT64

/* Removes the subscription and frees it (queued events are dropped). Accepts NULL. */
void berth_bus_unsubscribe(BerthBusSub *sub);

/* Takes the next event (caller unrefs), waiting up to @timeout_us (0 = do not wait, -1 = for
 * ever). NULL when none arrived, or when the subscription was woken by berth_bus_sub_wake(). */
const BerthEvent *berth_bus_sub_pop(BerthBusSub *sub, gint64 timeout_us);
/* Takes up to @max events at once into @out (the caller unrefs each), waiting as
 * berth_bus_sub_pop does; returns how many (0 as berth_bus_sub_pop's NULL). Cheaper per event
 * for busy consumers. A subscription has one consumer at a time: pop, pop_many and the
 * dispatch of its source must not run concurrently. Markers ("events-lost", seq 0, not in the
 * ring) appear where the loss happened: after the events queued before it, before any later. */
guint berth_bus_sub_pop_many(BerthBusSub *sub, const BerthEvent **out, guint max,
                             gint64 timeout_us);
/* Wakes a thread blocked in berth_bus_sub_pop (used to stop sink threads). */
void berth_bus_sub_wake(BerthBusSub *sub);
/* A GSource that dispatches (GSourceFunc, the usual user_data) whenever @sub has events to pop;
 * for main-loop consumers such as RPC connections. Destroy the source before unsubscribing. */
GSource *berth_bus_sub_source_new(BerthBusSub *sub);
/* Events this subscriber lost so far (for statistics). */
guint64 berth_bus_sub_lost(BerthBusSub *sub);

/* Events are immutable and refcounted once published (only events the bus handed out). */
const BerthEvent *berth_event_ref(const BerthEvent *event);
void berth_event_unref(const BerthEvent *event);
/* The event as the API sends it (a JSON object as text; g_free it):
 * {"seq":N,"timestamp":"2026-11-22T03:10:00.123456Z","object":{"kind":..,"name":..,"uuid":..},
 *  "type":..,"detail":{...}} */
char *berth_event_to_json(const BerthEvent *event);
