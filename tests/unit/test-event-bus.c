/* Tests of the event bus: ordering, slow subscribers and lost markers, resume, wake-ups, JSON. */
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_tree.h>

#include "event-bus.h"

#define N_PUBLISHERS 4
#define PER_PUBLISHER 100000
/* Only a failure guard: no test waits this long when it passes. */
#define GUARD_US (30 * G_USEC_PER_SEC)

static guint64
publish_simple(BerthBus *bus, const char *name, const char *detail)
{
    BerthEvent ev = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "domain",
        .object_name = name,
        .type = "domain-started",
        .detail_json = detail,
    };

    return berth_bus_publish(bus, &ev);
}

/* Reads an integer member of a flat detail object such as {"count":3,"first":5,"last":7}. */
static guint64
detail_int(const BerthEvent *ev, const char *key)
{
    char err[128];
    yajl_val root = yajl_tree_parse(ev->detail_json, err, sizeof(err));
    const char *path[] = { key, NULL };
    yajl_val v;
    guint64 out;

    g_assert_nonnull(root);
    v = yajl_tree_get(root, path, yajl_t_number);
    g_assert_nonnull(v);
    out = (guint64) YAJL_GET_INTEGER(v);
    yajl_tree_free(root);
    return out;
}

static void
assert_marker(const BerthEvent *ev, guint64 count, guint64 first, guint64 last)
{
    g_assert_nonnull(ev);
    g_assert_cmpstr(ev->type, ==, "events-lost");
    g_assert_cmpstr(ev->object_kind, ==, "agent");
    g_assert_cmpstr(ev->object_name, ==, "bus");
    g_assert_cmpuint(ev->seq, ==, 0);
    g_assert_cmpuint(detail_int(ev, "count"), ==, count);
    g_assert_cmpuint(detail_int(ev, "first"), ==, first);
    g_assert_cmpuint(detail_int(ev, "last"), ==, last);
}

static void
assert_pop_seq(BerthBusSub *sub, guint64 seq)
{
    const BerthEvent *ev = berth_bus_sub_pop(sub, 0);

    g_assert_nonnull(ev);
    g_assert_cmpuint(ev->seq, ==, seq);
    berth_event_unref(ev);
}

static void
assert_pop_marker(BerthBusSub *sub, guint64 count, guint64 first, guint64 last)
{
    const BerthEvent *ev = berth_bus_sub_pop(sub, 0);

    assert_marker(ev, count, first, last);
    berth_event_unref(ev);
}

typedef struct {
    BerthBus *bus;
    guint index;
} Publisher;

static gpointer
publisher_thread(gpointer data)
{
    Publisher *p = data;
    char name[16];

    g_snprintf(name, sizeof(name), "p%u", p->index);
    for (guint i = 0; i < PER_PUBLISHER; i++) {
        char detail[32];

        g_snprintf(detail, sizeof(detail), "{\"i\":%u}", i);
        publish_simple(p->bus, name, detail);
    }
    return NULL;
}

typedef struct {
    BerthBusSub *sub;
    gboolean batches;
    guint64 received;
    gboolean ok;
} Consumer;

/* Checks the stream: seq 1, 2, 3, ... with no gap, non-decreasing timestamps, and each
 * publisher's events in the order it published them. */
static gpointer
consumer_thread(gpointer data)
{
    Consumer *c = data;
    guint64 expect = 1;
    gint64 last_time = 0;
    guint next_i[N_PUBLISHERS] = { 0 };
    const guint64 total = (guint64) N_PUBLISHERS * PER_PUBLISHER;

    c->ok = TRUE;
    while (expect <= total && c->ok) {
        const BerthEvent *batch[64];
        guint n = c->batches ? berth_bus_sub_pop_many(c->sub, batch, 64, 30 * G_USEC_PER_SEC)
                             : berth_bus_sub_pop_many(c->sub, batch, 1, 30 * G_USEC_PER_SEC);

        if (n == 0) {
            c->ok = FALSE; /* the failure guard: 30 s without an event */
        }
        for (guint k = 0; k < n; k++) {
            const BerthEvent *ev = batch[k];
            guint pub = (guint) (ev->object_name[1] - '0');
            guint i = (guint) strtoul(ev->detail_json + 5, NULL, 10);

            if (ev->seq != expect || ev->timestamp_us < last_time || pub >= N_PUBLISHERS ||
                i != next_i[pub]) {
                c->ok = FALSE;
            }
            if (pub < N_PUBLISHERS) {
                next_i[pub] = i + 1;
            }
            expect++;
            last_time = ev->timestamp_us;
            berth_event_unref(ev);
        }
    }
    c->received = expect - 1;
    return NULL;
}

static void
test_order_with_4_publishers(void)
{
    BerthBus *bus = berth_bus_new(1024);
    const guint64 total = (guint64) N_PUBLISHERS * PER_PUBLISHER;
    Consumer cons[2] = {
        { .sub = berth_bus_subscribe(bus, (guint) total, 0, NULL), .batches = TRUE },
        { .sub = berth_bus_subscribe(bus, (guint) total, 0, NULL), .batches = FALSE },
    };
    Publisher pubs[N_PUBLISHERS];
    GThread *threads[N_PUBLISHERS];
    GThread *cthreads[2];

    for (guint i = 0; i < 2; i++) {
        cthreads[i] = g_thread_new("consumer", consumer_thread, &cons[i]);
    }
    for (guint i = 0; i < N_PUBLISHERS; i++) {
        pubs[i] = (Publisher){ .bus = bus, .index = i };
        threads[i] = g_thread_new("publisher", publisher_thread, &pubs[i]);
    }
    for (guint i = 0; i < N_PUBLISHERS; i++) {
        g_thread_join(threads[i]);
    }
    for (guint i = 0; i < 2; i++) {
        g_thread_join(cthreads[i]);
        g_assert_true(cons[i].ok);
        g_assert_cmpuint(cons[i].received, ==, total);
        g_assert_cmpuint(berth_bus_sub_lost(cons[i].sub), ==, 0);
        g_assert_null(berth_bus_sub_pop(cons[i].sub, 0));
        berth_bus_unsubscribe(cons[i].sub);
    }
    g_assert_cmpuint(berth_bus_last_seq(bus), ==, total);
    berth_bus_free(bus);
}

/* The documented order: the 16 queued events come first, then one marker for the 984 lost. */
static void
test_slow_subscriber(void)
{
    BerthBus *bus = berth_bus_new(0);
    BerthBusSub *sub = berth_bus_subscribe(bus, 16, 0, NULL);
    BerthBusSub *fast = berth_bus_subscribe(bus, 2048, 0, NULL);

    /* Would hang here if a publisher waited for room. */
    for (guint i = 0; i < 1000; i++) {
        publish_simple(bus, "web1", NULL);
    }
    g_assert_cmpuint(berth_bus_sub_lost(sub), ==, 984);
    g_assert_cmpuint(berth_bus_sub_lost(fast), ==, 0);
    for (guint64 seq = 1; seq <= 16; seq++) {
        assert_pop_seq(sub, seq);
    }
    assert_pop_marker(sub, 984, 17, 1000);
    g_assert_null(berth_bus_sub_pop(sub, 0));

    /* The fast subscriber saw everything, with no marker. */
    for (guint64 seq = 1; seq <= 1000; seq++) {
        assert_pop_seq(fast, seq);
    }
    g_assert_null(berth_bus_sub_pop(fast, 0));

    /* Delivery goes on normally after the marker. */
    publish_simple(bus, "web1", NULL);
    assert_pop_seq(sub, 1001);
    berth_bus_unsubscribe(sub);
    berth_bus_unsubscribe(fast);
    berth_bus_free(bus);
}

/* A marker sits where its loss happened: before the next event that fitted, and each loss
 * gets its own marker with its own count. */
static void
test_lost_marker_counts(void)
{
    BerthBus *bus = berth_bus_new(0);
    BerthBusSub *sub = berth_bus_subscribe(bus, 4, 0, NULL);
    const BerthEvent *batch[8];
    guint n;

    for (guint i = 0; i < 10; i++) { /* 1..4 queued, 5..10 lost */
        publish_simple(bus, "web1", NULL);
    }
    assert_pop_seq(sub, 1);
    assert_pop_seq(sub, 2);
    for (guint i = 0; i < 3; i++) { /* 11 fits (after the marker), 12 and 13 are lost */
        publish_simple(bus, "web1", NULL);
    }
    g_assert_cmpuint(berth_bus_sub_lost(sub), ==, 8);

    n = berth_bus_sub_pop_many(sub, batch, G_N_ELEMENTS(batch), 0);
    g_assert_cmpuint(n, ==, 4);
    g_assert_cmpuint(batch[0]->seq, ==, 3);
    g_assert_cmpuint(batch[1]->seq, ==, 4);
    assert_marker(batch[2], 6, 5, 10);
    g_assert_cmpuint(batch[3]->seq, ==, 11);
    for (guint i = 0; i < n; i++) {
        berth_event_unref(batch[i]);
    }
    assert_pop_marker(sub, 2, 12, 13);
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);
}

static void
test_resume_since(void)
{
    BerthBus *bus = berth_bus_new(8);
    BerthBusSub *sub;
    guint64 missed = 99;

    for (guint i = 0; i < 5; i++) {
        publish_simple(bus, "web1", NULL);
    }
    /* Everything after 2 is still in the ring. */
    sub = berth_bus_subscribe(bus, 64, 2, &missed);
    g_assert_cmpuint(missed, ==, 0);
    assert_pop_seq(sub, 3);
    assert_pop_seq(sub, 4);
    assert_pop_seq(sub, 5);
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);

    /* Up to the newest: nothing to replay. */
    sub = berth_bus_subscribe(bus, 64, 5, &missed);
    g_assert_cmpuint(missed, ==, 0);
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);

    for (guint i = 0; i < 15; i++) { /* seq 6..20; the ring keeps 13..20 */
        publish_simple(bus, "web1", NULL);
    }
    sub = berth_bus_subscribe(bus, 64, 5, &missed);
    g_assert_cmpuint(missed, ==, 7);
    assert_pop_marker(sub, 7, 6, 12);
    for (guint64 seq = 13; seq <= 20; seq++) {
        assert_pop_seq(sub, seq);
    }
    g_assert_null(berth_bus_sub_pop(sub, 0));
    /* New events follow the replay. */
    publish_simple(bus, "web1", NULL);
    assert_pop_seq(sub, 21);
    berth_bus_unsubscribe(sub);

    /* since 0: only new events. */
    sub = berth_bus_subscribe(bus, 64, 0, &missed);
    g_assert_cmpuint(missed, ==, 0);
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);

    /* From the start: the ring (14..21), after a marker for 1..13 that it no longer holds. */
    sub = berth_bus_subscribe(bus, 64, BERTH_BUS_SINCE_START, &missed);
    g_assert_cmpuint(missed, ==, 13);
    assert_pop_marker(sub, 13, 1, 13);
    for (guint64 seq = 14; seq <= 21; seq++) {
        assert_pop_seq(sub, seq);
    }
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);

    /* From the start on a bus whose ring still holds seq 1: no marker, everything. */
    bus = berth_bus_new(8);
    publish_simple(bus, "web1", NULL);
    publish_simple(bus, "web1", NULL);
    sub = berth_bus_subscribe(bus, 64, BERTH_BUS_SINCE_START, &missed);
    g_assert_cmpuint(missed, ==, 0);
    assert_pop_seq(sub, 1);
    assert_pop_seq(sub, 2);
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);

    /* Without a ring everything since N is missed. */
    bus = berth_bus_new(0);
    for (guint i = 0; i < 3; i++) {
        publish_simple(bus, "web1", NULL);
    }
    sub = berth_bus_subscribe(bus, 64, 1, &missed);
    g_assert_cmpuint(missed, ==, 2);
    assert_pop_marker(sub, 2, 2, 3);
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);
}

typedef struct {
    BerthBusSub *sub;
    GMainLoop *loop;
    guint64 next;
    guint64 want;
    gboolean timed_out;
} SourceState;

static gboolean
on_events(gpointer data)
{
    SourceState *s = data;
    const BerthEvent *ev;

    while ((ev = berth_bus_sub_pop(s->sub, 0))) {
        g_assert_cmpuint(ev->seq, ==, s->next);
        s->next++;
        berth_event_unref(ev);
    }
    if (s->next > s->want) {
        g_main_loop_quit(s->loop);
    }
    return G_SOURCE_CONTINUE;
}

static gboolean
on_guard(gpointer data)
{
    SourceState *s = data;

    s->timed_out = TRUE;
    g_main_loop_quit(s->loop);
    return G_SOURCE_REMOVE;
}

static gpointer
publish_200(gpointer data)
{
    for (guint i = 0; i < 200; i++) {
        publish_simple(data, "web1", NULL);
        if (i % 50 == 0) {
            g_thread_yield();
        }
    }
    return NULL;
}

static void
test_source_wakeup(void)
{
    BerthBus *bus = berth_bus_new(0);
    GMainContext *ctx = g_main_context_new();
    SourceState s = {
        .sub = berth_bus_subscribe(bus, 1024, 0, NULL),
        .loop = g_main_loop_new(ctx, FALSE),
        .next = 1,
        .want = 200,
    };
    GSource *source = berth_bus_sub_source_new(s.sub);
    GSource *guard = g_timeout_source_new_seconds(30);
    GThread *thread;

    g_source_set_callback(source, on_events, &s, NULL);
    g_source_attach(source, ctx);
    g_source_set_callback(guard, on_guard, &s, NULL);
    g_source_attach(guard, ctx);

    /* Nothing to dispatch while the queue is empty. */
    g_assert_false(g_main_context_iteration(ctx, FALSE));

    /* The loop sleeps in poll(); events from another thread wake it. */
    thread = g_thread_new("publisher", publish_200, bus);
    g_main_loop_run(s.loop);
    g_thread_join(thread);
    g_assert_false(s.timed_out);
    g_assert_cmpuint(s.next, ==, 201);

    g_source_destroy(source);
    g_source_unref(source);
    g_source_destroy(guard);
    g_source_unref(guard);
    g_main_loop_unref(s.loop);
    g_main_context_unref(ctx);
    berth_bus_unsubscribe(s.sub);
    berth_bus_free(bus);
}

static gpointer
blocked_pop(gpointer data)
{
    return (gpointer) berth_bus_sub_pop(data, -1);
}

static void
test_wake_and_timeout(void)
{
    BerthBus *bus = berth_bus_new(4);
    BerthBusSub *sub = berth_bus_subscribe(bus, 4, 0, NULL);
    GThread *thread;
    const BerthEvent *ev;

    /* A wait with a timeout ends empty-handed. */
    g_assert_null(berth_bus_sub_pop(sub, 1000));

    /* A blocked pop returns NULL on wake (the wake is not lost if it comes first). */
    thread = g_thread_new("pop", blocked_pop, sub);
    berth_bus_sub_wake(sub);
    g_assert_null(g_thread_join(thread));

    /* A blocked pop returns the event published later. */
    thread = g_thread_new("pop", blocked_pop, sub);
    publish_simple(bus, "web1", NULL);
    ev = g_thread_join(thread);
    g_assert_nonnull(ev);
    g_assert_cmpuint(ev->seq, ==, 1);
    berth_event_unref(ev);

    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);
}

typedef struct {
    BerthBus *bus;
    gint stop;
} Stress;

static gpointer
stress_publisher(gpointer data)
{
    Stress *s = data;

    while (!g_atomic_int_get(&s->stop)) {
        publish_simple(s->bus, "web1", "{\"reason\":\"booted\"}");
    }
    return NULL;
}

typedef struct {
    BerthBusSub *sub;
    gint stop;
} StressConsumer;

static gpointer
stress_consumer(gpointer data)
{
    StressConsumer *c = data;
    const BerthEvent *batch[16];

    while (!g_atomic_int_get(&c->stop)) {
        guint n = berth_bus_sub_pop_many(c->sub, batch, G_N_ELEMENTS(batch), -1);

        for (guint i = 0; i < n; i++) {
            berth_event_unref(batch[i]);
        }
    }
    return NULL;
}

/* Subscriptions come and go (with events queued, and with a consumer thread blocked in a pop
 * until woken) while two threads publish; ASan builds check that nothing is used after free. */
static void
test_unsubscribe_while_publishing(void)
{
    Stress s = { .bus = berth_bus_new(64) };
    GThread *pubs[2];

    for (guint i = 0; i < G_N_ELEMENTS(pubs); i++) {
        pubs[i] = g_thread_new("publisher", stress_publisher, &s);
    }
    for (guint round = 0; round < 200; round++) {
        BerthBusSub *a = berth_bus_subscribe(s.bus, 8, berth_bus_last_seq(s.bus) / 2, NULL);
        StressConsumer b = { .sub = berth_bus_subscribe(s.bus, 256, 0, NULL) };
        GThread *consumer = g_thread_new("consumer", stress_consumer, &b);

        berth_event_unref(berth_bus_sub_pop(a, 0));
        berth_bus_unsubscribe(a);
        g_atomic_int_set(&b.stop, 1);
        berth_bus_sub_wake(b.sub);
        g_thread_join(consumer);
        berth_bus_unsubscribe(b.sub);
    }
    g_atomic_int_set(&s.stop, 1);
    for (guint i = 0; i < G_N_ELEMENTS(pubs); i++) {
        g_thread_join(pubs[i]);
    }
    g_assert_cmpuint(berth_bus_last_seq(s.bus), >, 0);
    berth_bus_free(s.bus);
}

#define LOSSY_PER_PUBLISHER 20000

static gpointer
lossy_publisher(gpointer data)
{
    for (guint i = 0; i < LOSSY_PER_PUBLISHER; i++) {
        publish_simple(data, "web1", NULL);
    }
    return NULL;
}

/* With a small queue under concurrent publishers, the stream of events and markers still
 * accounts for every seq exactly once and in order: each event is the next seq, each marker
 * covers the range right after what came before it. */
static void
test_lossy_stream_accounts_for_every_seq(void)
{
    BerthBus *bus = berth_bus_new(0);
    BerthBusSub *sub = berth_bus_subscribe(bus, 64, 0, NULL);
    const guint64 total = 2 * LOSSY_PER_PUBLISHER;
    GThread *pubs[2];
    guint64 expect = 1, lost = 0, markers = 0;

    for (guint i = 0; i < G_N_ELEMENTS(pubs); i++) {
        pubs[i] = g_thread_new("publisher", lossy_publisher, bus);
    }
    while (expect <= total) {
        /* Room for 16, asked for 8: the rest must stay untouched however fast events come. */
        const BerthEvent *batch[16];
        guint n;

        for (guint i = 0; i < G_N_ELEMENTS(batch); i++) {
            batch[i] = (const BerthEvent *) &expect;
        }
        n = berth_bus_sub_pop_many(sub, batch, 8, GUARD_US);
        g_assert_cmpuint(n, >, 0);
        g_assert_cmpuint(n, <=, 8);
        for (guint i = 8; i < G_N_ELEMENTS(batch); i++) {
            g_assert_true(batch[i] == (const BerthEvent *) &expect);
        }
        for (guint i = 0; i < n; i++) {
            if (batch[i]->seq == 0) {
                g_assert_cmpuint(detail_int(batch[i], "first"), ==, expect);
                expect = detail_int(batch[i], "last") + 1;
                lost += detail_int(batch[i], "count");
                markers++;
            } else {
                g_assert_cmpuint(batch[i]->seq, ==, expect);
                expect++;
            }
            berth_event_unref(batch[i]);
        }
        g_thread_yield(); /* a slow consumer */
    }
    for (guint i = 0; i < G_N_ELEMENTS(pubs); i++) {
        g_thread_join(pubs[i]);
    }
    g_assert_cmpuint(expect, ==, total + 1);
    g_assert_cmpuint(lost, ==, berth_bus_sub_lost(sub));
    g_assert_null(berth_bus_sub_pop(sub, 0));
    g_test_message("%" G_GUINT64_FORMAT " lost in %" G_GUINT64_FORMAT " markers", lost, markers);
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);
}

static void
test_event_to_json(void)
{
    BerthBus *bus = berth_bus_new(4);
    BerthBusSub *sub = berth_bus_subscribe(bus, 4, 0, NULL);
    BerthEvent in = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "domain",
        .object_name = "web\"1",
        .object_uuid = "c7a5fdbd-cdaf-9455-926a-d65c16db1809",
        .type = "domain-started",
        .detail_json = " {\"reason\":\"booted\",\"n\":[1,2]}",
    };
    const BerthEvent *ev;
    g_autofree char *json = NULL;
    char err[256];
    yajl_val root, v;
    const char *p_seq[] = { "seq", NULL };
    const char *p_ts[] = { "timestamp", NULL };
    const char *p_kind[] = { "object", "kind", NULL };
    const char *p_name[] = { "object", "name", NULL };
    const char *p_uuid[] = { "object", "uuid", NULL };
    const char *p_type[] = { "type", NULL };
    const char *p_reason[] = { "detail", "reason", NULL };
    const char *p_detail[] = { "detail", NULL };

    berth_bus_publish(bus, &in);
    ev = berth_bus_sub_pop(sub, 0);
    g_assert_nonnull(ev);
    json = berth_event_to_json(ev);
    root = yajl_tree_parse(json, err, sizeof(err));
    g_assert_nonnull(root);
    g_assert_cmpint(YAJL_GET_INTEGER(yajl_tree_get(root, p_seq, yajl_t_number)), ==, 1);
    v = yajl_tree_get(root, p_ts, yajl_t_string);
    g_assert_nonnull(v);
    g_assert_true(g_regex_match_simple("^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{6}Z$",
                                       YAJL_GET_STRING(v), 0, 0));
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_kind, yajl_t_string)), ==, "domain");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_name, yajl_t_string)), ==, "web\"1");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_uuid, yajl_t_string)), ==,
                    in.object_uuid);
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_type, yajl_t_string)), ==,
                    "domain-started");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_reason, yajl_t_string)), ==, "booted");
    yajl_tree_free(root);
    berth_event_unref(ev);
    g_clear_pointer(&json, g_free);

    /* No uuid: null; no detail: {}; a detail that does not parse: {} as well. */
    in.object_uuid = NULL;
    in.detail_json = NULL;
    berth_bus_publish(bus, &in);
    in.detail_json = "{\"broken\":";
    berth_bus_publish(bus, &in);
    in.detail_json = "[1]";
    berth_bus_publish(bus, &in);
    for (guint i = 0; i < 3; i++) {
        ev = berth_bus_sub_pop(sub, 0);
        g_assert_nonnull(ev);
        json = berth_event_to_json(ev);
        root = yajl_tree_parse(json, err, sizeof(err));
        g_assert_nonnull(root);
        g_assert_true(YAJL_IS_NULL(yajl_tree_get(root, p_uuid, yajl_t_any)));
        v = yajl_tree_get(root, p_detail, yajl_t_object);
        g_assert_nonnull(v);
        g_assert_cmpuint(v->u.object.len, ==, 0);
        yajl_tree_free(root);
        berth_event_unref(ev);
        g_clear_pointer(&json, g_free);
    }
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/bus/order-with-4-publishers", test_order_with_4_publishers);
    g_test_add_func("/core/bus/slow-subscriber", test_slow_subscriber);
    g_test_add_func("/core/bus/lost-marker-counts", test_lost_marker_counts);
    g_test_add_func("/core/bus/resume-since", test_resume_since);
    g_test_add_func("/core/bus/source-wakeup", test_source_wakeup);
    g_test_add_func("/core/bus/wake-and-timeout", test_wake_and_timeout);
    g_test_add_func("/core/bus/unsubscribe-while-publishing", test_unsubscribe_while_publishing);
    g_test_add_func("/core/bus/lossy-stream-accounts-for-every-seq",
                    test_lossy_stream_accounts_for_every_seq);
    g_test_add_func("/core/bus/event-to-json", test_event_to_json);
    return g_test_run();
}
