/* The event bus: sequence numbers, a ring of recent events and lock-free subscriber queues. */
#include "event-bus.h"

#include <berth/json.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <yajl/yajl_parse.h>

/* A published event: the public struct, its refcount and its strings in one allocation. */
typedef struct {
    BerthEvent pub; /* first, so that a BerthEvent pointer is a BusEvent pointer */
    gint ref;
    char strings[];
} BusEvent;

/* Who sleeps until a subscriber queue becomes non-empty (bits of BerthBusSub.wake_flags). */
enum {
    WAKE_COND = 1 << 0, /* a thread in berth_bus_sub_pop_many, on wait_cond */
    WAKE_FD = 1 << 1,   /* a main loop polling event_fd through berth_bus_sub_source_new */
};

/* Spins (with yields) of a consumer that found its queue empty before it sleeps: on a busy bus
 * new events usually arrive within a few yields, and a sleeping consumer costs the publisher a
 * futex wake-up. */
#define SUB_SPINS 64

/* See berth_bus_publish: how far back a publisher's clock read may be and still count as late
 * rather than as a clock step. */
#define CLOCK_STEP_US G_USEC_PER_SEC

/* The longest subscriber queue (its ring of pointers is allocated up front). */
#define SUB_MAX_QUEUE (1u << 24)

struct BerthBusSub {
    gint ref; /* atomic: the subscription, and publishers about to wake its consumer */
    BerthBus *bus;
    guint queue_len;
    guint mask;                /* slots - 1; slots is a power of two > queue_len */
    const BerthEvent **slots;
    /*
     * A single-producer single-consumer ring: producers write only under bus->lock (so there
     * is one at a time, in seq order) and the one consumer pops without any lock. head and
     * tail sit on their own cache lines so that the two sides do not share one.
     */
    char pad0[64];
    guint tail; /* next slot to fill; written under bus->lock */
    char pad1[64];
    guint head; /* next slot to pop; written by the consumer */
    char pad2[64];
    /* Dropped events not yet reported by a marker; under bus->lock. */
    guint64 pending_count;
    guint64 pending_first;
    guint64 pending_last;
    guint64 lost_total; /* under bus->lock */
    gint pending;       /* atomic hint: pending_count > 0, readable without the lock */
    gint wake_flags;    /* atomic WAKE_* bits: a consumer is about to sleep */
    gint woken;         /* atomic: berth_bus_sub_wake() was called, not yet consumed */
    GMutex wait_lock;   /* protects nothing but the sleep on wait_cond (no lost wake-ups) */
    GCond wait_cond;
    int event_fd; /* for berth_bus_sub_source_new; set under bus->lock, -1 when none */
};

struct BerthBus {
    GMutex lock; /* protects seq, the ring, subs and each subscriber's producer side */
    guint64 seq;
    gint64 last_time; /* timestamp of the newest event */
    guint ring_size;
    guint ring_count;
    guint ring_next; /* the slot the next event goes into (the oldest one when full) */
    const BerthEvent **ring;
    GPtrArray *subs;
};

static gint bad_detail_logged; /* atomic: an unparsable detail was logged once */

/* Copies @len bytes of @s (its NUL included) to *@dst and advances it; NULL stays NULL. */
static const char *
str_put(char **dst, const char *s, gsize len)
{
    char *out = *dst;

    if (!s) {
        return NULL;
    }
    memcpy(out, s, len);
    *dst += len;
    return out;
}

/* One allocation holding a copy of @src and its strings; seq and timestamp are left to set. */
static BusEvent *
bus_event_new(const BerthEvent *src)
{
    const char *strs[] = { src->object_kind, src->object_name, src->object_uuid, src->type,
                           src->detail_json };
    gsize lens[G_N_ELEMENTS(strs)];
    gsize total = 0;
    BusEvent *ev;
    char *p;

    for (guint i = 0; i < G_N_ELEMENTS(strs); i++) {
        lens[i] = strs[i] ? strlen(strs[i]) + 1 : 0;
        total += lens[i];
    }
    ev = g_malloc(sizeof(BusEvent) + total);
    p = ev->strings;
    ev->pub.struct_size = sizeof(BerthEvent);
    ev->pub.seq = 0;
    ev->pub.timestamp_us = 0;
    ev->pub.object_kind = str_put(&p, strs[0], lens[0]);
    ev->pub.object_name = str_put(&p, strs[1], lens[1]);
    ev->pub.object_uuid = str_put(&p, strs[2], lens[2]);
    ev->pub.type = str_put(&p, strs[3], lens[3]);
    ev->pub.detail_json = str_put(&p, strs[4], lens[4]);
    ev->ref = 1;
    return ev;
}

/* The synthetic "events-lost" marker; seq 0 because it is not a bus event (never in the ring). */
static const BerthEvent *
marker_new(guint64 count, guint64 first, guint64 last)
{
    g_autofree char *detail = g_strdup_printf("{\"count\":%" G_GUINT64_FORMAT ",\"first\":%"
                                              G_GUINT64_FORMAT ",\"last\":%" G_GUINT64_FORMAT "}",
                                              count, first, last);
    BerthEvent tmpl = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "agent",
        .object_name = "bus",
        .type = "events-lost",
        .detail_json = detail,
    };
    BusEvent *ev = bus_event_new(&tmpl);

    ev->pub.timestamp_us = g_get_real_time();
    return &ev->pub;
}

const BerthEvent *
berth_event_ref(const BerthEvent *event)
{
    g_atomic_int_inc(&((BusEvent *) event)->ref);
    return event;
}

/* Drops @n references at once (the publisher gives back all unused ones in one atomic op). */
static void
event_unref_n(const BerthEvent *event, gint n)
{
    BusEvent *ev = (BusEvent *) event;

    if (n > 0 && g_atomic_int_add(&ev->ref, -n) == n) {
        g_free(ev);
    }
}

void
berth_event_unref(const BerthEvent *event)
{
    if (event) {
        event_unref_n(event, 1);
    }
}

BerthBus *
berth_bus_new(guint ring_size)
{
    BerthBus *bus = g_new0(BerthBus, 1);

    g_mutex_init(&bus->lock);
    bus->ring_size = ring_size;
    bus->ring = ring_size ? g_new0(const BerthEvent *, ring_size) : NULL;
    bus->subs = g_ptr_array_new();
    return bus;
}

void
berth_bus_free(BerthBus *bus)
{
    if (!bus) {
        return;
    }
    g_warn_if_fail(bus->subs->len == 0);
    for (guint i = 0; i < bus->ring_size; i++) {
        berth_event_unref(bus->ring[i]);
    }
    g_free(bus->ring);
    g_ptr_array_free(bus->subs, TRUE);
    g_mutex_clear(&bus->lock);
    g_free(bus);
}

/* The publishers' lock: the section it guards lasts tens of nanoseconds, so a contended
 * publisher first spins a little on trylock rather than sleeping in the kernel at once. */
static void
bus_lock(BerthBus *bus)
{
    for (guint i = 0; i < 100; i++) {
        if (g_mutex_trylock(&bus->lock)) {
            return;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
    g_mutex_lock(&bus->lock);
}

/* The index of the oldest event in the ring (valid when ring_count > 0). */
static guint
ring_oldest(BerthBus *bus)
{
    return bus->ring_count < bus->ring_size ? 0 : bus->ring_next;
}

/* Under bus->lock. Returns the evicted event, whose reference the caller drops after unlock. */
static const BerthEvent *
ring_put(BerthBus *bus, const BerthEvent *event)
{
    const BerthEvent *old = bus->ring[bus->ring_next];

    bus->ring[bus->ring_next] = event;
    bus->ring_next = bus->ring_next + 1 == bus->ring_size ? 0 : bus->ring_next + 1;
    if (bus->ring_count < bus->ring_size) {
        bus->ring_count++;
    }
    return old;
}

static gboolean
sub_has_data(BerthBusSub *sub)
{
    return __atomic_load_n(&sub->tail, __ATOMIC_SEQ_CST) !=
               __atomic_load_n(&sub->head, __ATOMIC_SEQ_CST) ||
           g_atomic_int_get(&sub->pending);
}

/* Under bus->lock: claims the wake-up of a consumer that announced that it sleeps (0: none
 * does). The check is one load on the common path. */
static gint
sub_claim_wake(BerthBusSub *sub)
{
    if (!g_atomic_int_get(&sub->wake_flags)) {
        return 0;
    }
    return g_atomic_int_exchange(&sub->wake_flags, 0);
}

/* Wakes the consumer(s) of a claim; needs a reference on @sub or bus->lock. */
static void
sub_do_wake(BerthBusSub *sub, gint flags)
{
    if (flags & WAKE_COND) {
        g_mutex_lock(&sub->wait_lock);
        g_cond_signal(&sub->wait_cond);
        g_mutex_unlock(&sub->wait_lock);
    }
    if ((flags & WAKE_FD) && sub->event_fd >= 0) {
        guint64 one = 1;

        /* A full eventfd counter (EAGAIN) already means "readable": nothing is lost. */
        if (write(sub->event_fd, &one, sizeof(one)) < 0) {
            /* nothing to do */
        }
    }
}

static void
sub_unref(BerthBusSub *sub)
{
    if (!g_atomic_int_dec_and_test(&sub->ref)) {
        return;
    }
    if (sub->event_fd >= 0) {
        close(sub->event_fd);
    }
    g_mutex_clear(&sub->wait_lock);
    g_cond_clear(&sub->wait_cond);
    g_free(sub->slots);
    g_free(sub);
}

/* Consumers a publisher wakes after it dropped bus->lock: a futex or eventfd syscall does not
 * belong in the critical section. Each entry holds a reference. */
typedef struct {
    BerthBusSub *subs[32];
    gint flags[32];
    guint n;
} WakeList;

/* Under bus->lock: wakes @sub's consumer now, or after unlock through @wl (may be NULL). */
static void
sub_wake_consumer(BerthBusSub *sub, WakeList *wl)
{
    gint flags = sub_claim_wake(sub);

    if (!flags) {
        return;
    }
    if (wl && wl->n < G_N_ELEMENTS(wl->subs)) {
        g_atomic_int_inc(&sub->ref);
        wl->subs[wl->n] = sub;
        wl->flags[wl->n++] = flags;
    } else {
        sub_do_wake(sub, flags);
    }
}

static void
wake_list_run(WakeList *wl)
{
    for (guint i = 0; i < wl->n; i++) {
        sub_do_wake(wl->subs[i], wl->flags[i]);
        sub_unref(wl->subs[i]);
    }
}

/* Under bus->lock: counts @seq as dropped for @sub. */
static void
sub_drop(BerthBusSub *sub, guint64 seq)
{
    sub->lost_total++;
    sub->pending_last = seq;
    if (sub->pending_count++ == 0) {
        sub->pending_first = seq;
        g_atomic_int_set(&sub->pending, 1);
        /* A consumer that drained the queue may be going to sleep without seeing the hint. */
        sub_wake_consumer(sub, NULL);
    }
}

/*
 * Under bus->lock: queues @event (whose reference the caller already took for @sub) or drops
 * it. Dropped events are reported by one marker placed where they were lost: before the next
 * event that fits, or, when none comes, popped once the queue has been drained. The marker may
 * take one slot beyond queue_len, so that it never needs room of its own.
 */
static gboolean
sub_push(BerthBusSub *sub, const BerthEvent *event, WakeList *wl)
{
    guint tail = __atomic_load_n(&sub->tail, __ATOMIC_RELAXED);
    guint used = tail - __atomic_load_n(&sub->head, __ATOMIC_ACQUIRE);

    if (used >= sub->queue_len) {
        sub_drop(sub, event->seq);
        return FALSE;
    }
    if (sub->pending_count > 0) {
        sub->slots[tail++ & sub->mask] =
            marker_new(sub->pending_count, sub->pending_first, sub->pending_last);
        sub->pending_count = 0;
        g_atomic_int_set(&sub->pending, 0);
    }
    sub->slots[tail++ & sub->mask] = event;
    __atomic_store_n(&sub->tail, tail, __ATOMIC_SEQ_CST);
    sub_wake_consumer(sub, wl);
    return TRUE;
}

guint64
berth_bus_publish(BerthBus *bus, const BerthEvent *event)
{
    const BerthEvent *evicted = NULL;
    WakeList wl;
    BusEvent *ev;
    guint nsubs, pushed = 0;
    guint64 seq;
    gint64 now;

    g_return_val_if_fail(bus && event, 0);
    g_return_val_if_fail(event->object_kind && event->object_name && event->type, 0);

    /* Copy and read the clock outside the lock: the critical section only orders and hands
     * out pointers. Under the lock, a time slightly older than the last event's (a publisher
     * preempted between its clock read and the lock) is raised to it, so that timestamps do not
     * go back in seq order; a step back of the clock itself (NTP) beyond CLOCK_STEP_US is
     * shown as it is rather than freezing timestamps until the clock catches up. */
    ev = bus_event_new(event);
    now = g_get_real_time();
    wl.n = 0;
    bus_lock(bus);
    seq = ++bus->seq;
    if (now >= bus->last_time || bus->last_time - now > CLOCK_STEP_US) {
        bus->last_time = now;
    }
    ev->pub.seq = seq;
    ev->pub.timestamp_us = bus->last_time;
    nsubs = bus->subs->len;
    /* Every reference the ring and the subscribers may need, taken before anyone sees the
     * event (a plain store); the unused ones go back in one atomic op after unlock. */
    ev->ref = 1 + (bus->ring_size > 0 ? 1 : 0) + (gint) nsubs;
    if (bus->ring_size > 0) {
        evicted = ring_put(bus, &ev->pub);
    }
    for (guint i = 0; i < nsubs; i++) {
        pushed += sub_push(bus->subs->pdata[i], &ev->pub, &wl) ? 1 : 0;
    }
    g_mutex_unlock(&bus->lock);

    wake_list_run(&wl);
    event_unref_n(&ev->pub, 1 + (gint) (nsubs - pushed));
    berth_event_unref(evicted);
    return seq;
}

guint64
berth_bus_last_seq(BerthBus *bus)
{
    guint64 seq;

    g_mutex_lock(&bus->lock);
    seq = bus->seq;
    g_mutex_unlock(&bus->lock);
    return seq;
}

/* Queues for @sub every ring event with seq > @since, after a lost marker for what the ring no
 * longer holds; caller holds bus->lock. */
static void
sub_replay(BerthBus *bus, BerthBusSub *sub, guint64 since, guint64 *missed)
{
    guint64 oldest = bus->ring_count ? bus->ring[ring_oldest(bus)]->seq : bus->seq + 1;

    if (oldest > since + 1) {
        /* The marker for the gap comes first, before the replayed events. */
        sub->pending_count = oldest - since - 1;
        sub->pending_first = since + 1;
        sub->pending_last = oldest - 1;
        sub->lost_total = sub->pending_count;
        g_atomic_int_set(&sub->pending, 1);
        if (missed) {
            *missed = sub->pending_count;
        }
    }
    for (guint i = 0, idx = ring_oldest(bus); i < bus->ring_count; i++) {
        const BerthEvent *ev = bus->ring[idx];

        idx = idx + 1 == bus->ring_size ? 0 : idx + 1;
        if (ev->seq <= since) {
            continue;
        }
        /* The ring holds a reference, so this unref never frees under the lock. */
        if (!sub_push(sub, berth_event_ref(ev), NULL)) {
            berth_event_unref(ev);
        }
    }
}

BerthBusSub *
berth_bus_subscribe(BerthBus *bus, guint queue_len, guint64 since, guint64 *missed)
{
    BerthBusSub *sub;
    guint slots;

    g_return_val_if_fail(bus, NULL);
    queue_len = CLAMP(queue_len, 1, SUB_MAX_QUEUE);
    slots = 1u << g_bit_storage(queue_len); /* > queue_len: room for a marker */

    sub = g_new0(BerthBusSub, 1);
    sub->ref = 1;
    sub->bus = bus;
    sub->queue_len = queue_len;
    sub->mask = slots - 1;
    sub->slots = g_new0(const BerthEvent *, slots);
    sub->event_fd = -1;
    g_mutex_init(&sub->wait_lock);
    g_cond_init(&sub->wait_cond);
    if (missed) {
        *missed = 0;
    }

    g_mutex_lock(&bus->lock);
    if (since == BERTH_BUS_SINCE_START && bus->seq > 0) {
        /* Everything after seq 0: a client that has seen nothing yet. */
        sub_replay(bus, sub, 0, missed);
    } else if (since > 0 && since < bus->seq) {
        sub_replay(bus, sub, since, missed);
    }
    g_ptr_array_add(bus->subs, sub);
    g_mutex_unlock(&bus->lock);
    return sub;
}

void
berth_bus_unsubscribe(BerthBusSub *sub)
{
    BerthBus *bus;

    if (!sub) {
        return;
    }
    bus = sub->bus;
    g_mutex_lock(&bus->lock);
    g_ptr_array_remove_fast(bus->subs, sub);
    g_mutex_unlock(&bus->lock);

    /* No producer can reach @sub any more. */
    for (guint i = sub->head; i != sub->tail; i++) {
        berth_event_unref(sub->slots[i & sub->mask]);
    }
    /* A publisher may still hold a reference for a wake-up. */
    sub_unref(sub);
}

/* Takes the pending loss as a marker; NULL when there is none or events were queued meanwhile
 * (they come first). */
static const BerthEvent *
sub_take_marker(BerthBusSub *sub)
{
    guint64 count = 0, first = 0, last = 0;

    g_mutex_lock(&sub->bus->lock);
    /* Producers only queue under this lock: an empty queue now means the loss is next. */
    if (__atomic_load_n(&sub->tail, __ATOMIC_RELAXED) == sub->head) {
        count = sub->pending_count;
        first = sub->pending_first;
        last = sub->pending_last;
        sub->pending_count = 0;
        g_atomic_int_set(&sub->pending, 0);
    }
    g_mutex_unlock(&sub->bus->lock);
    return count ? marker_new(count, first, last) : NULL;
}

/* Pops up to @max events without waiting. */
static guint
sub_take(BerthBusSub *sub, const BerthEvent **out, guint max)
{
    /* A second look when the marker had to wait for events queued meanwhile. */
    for (guint attempt = 0; attempt < 2; attempt++) {
        guint head = sub->head;
        guint tail = __atomic_load_n(&sub->tail, __ATOMIC_ACQUIRE); /* once: MIN() reads twice */
        guint n = MIN(tail - head, max);
        const BerthEvent *marker;

        if (n > 0) {
            for (guint i = 0; i < n; i++) {
                out[i] = sub->slots[(head + i) & sub->mask];
            }
            __atomic_store_n(&sub->head, head + n, __ATOMIC_SEQ_CST);
            return n;
        }
        if (max == 0 || !g_atomic_int_get(&sub->pending)) {
            return 0;
        }
        marker = sub_take_marker(sub);
        if (marker) {
            out[0] = marker;
            return 1;
        }
    }
    return 0;
}

guint
berth_bus_sub_pop_many(BerthBusSub *sub, const BerthEvent **out, guint max, gint64 timeout_us)
{
    gint64 deadline = timeout_us > 0 ? g_get_monotonic_time() + timeout_us : 0;

    g_return_val_if_fail(sub && out, 0);
    for (;;) {
        guint n = sub_take(sub, out, max);

        if (n > 0 || timeout_us == 0 || max == 0) {
            return n;
        }
        if (g_atomic_int_compare_and_exchange(&sub->woken, 1, 0)) {
            return 0;
        }
        if (timeout_us > 0 && g_get_monotonic_time() >= deadline) {
            return 0;
        }
        for (guint i = 0; i < SUB_SPINS && !sub_has_data(sub); i++) {
            g_thread_yield();
        }
        if (sub_has_data(sub)) {
            continue;
        }
        /* Announce the sleep, then look again: a producer either sees the flag or we see its
         * event (both sides use sequentially consistent atomics). */
        g_mutex_lock(&sub->wait_lock);
        g_atomic_int_or(&sub->wake_flags, WAKE_COND);
        while (!sub_has_data(sub) && !g_atomic_int_get(&sub->woken)) {
            if (timeout_us < 0) {
                g_cond_wait(&sub->wait_cond, &sub->wait_lock);
            } else if (!g_cond_wait_until(&sub->wait_cond, &sub->wait_lock, deadline)) {
                break;
            }
            g_atomic_int_or(&sub->wake_flags, WAKE_COND);
        }
        g_atomic_int_and(&sub->wake_flags, ~WAKE_COND);
        g_mutex_unlock(&sub->wait_lock);
    }
}

const BerthEvent *
berth_bus_sub_pop(BerthBusSub *sub, gint64 timeout_us)
{
    const BerthEvent *event = NULL;

    return berth_bus_sub_pop_many(sub, &event, 1, timeout_us) ? event : NULL;
}

void
berth_bus_sub_wake(BerthBusSub *sub)
{
    g_return_if_fail(sub);
    g_atomic_int_set(&sub->woken, 1);
    g_mutex_lock(&sub->wait_lock);
    g_cond_broadcast(&sub->wait_cond);
    g_mutex_unlock(&sub->wait_lock);
}

guint64
berth_bus_sub_lost(BerthBusSub *sub)
{
    guint64 lost;

    g_mutex_lock(&sub->bus->lock);
    lost = sub->lost_total;
    g_mutex_unlock(&sub->bus->lock);
    return lost;
}

typedef struct {
    GSource source;
    BerthBusSub *sub;
    gpointer fd_tag;
} SubSource;

static gboolean
sub_source_prepare(GSource *source, gint *timeout)
{
    BerthBusSub *sub = ((SubSource *) source)->sub;

    *timeout = -1;
    if (sub_has_data(sub)) {
        return TRUE;
    }
    g_atomic_int_or(&sub->wake_flags, WAKE_FD);
    return sub_has_data(sub);
}

static gboolean
sub_source_check(GSource *source)
{
    SubSource *s = (SubSource *) source;

    if (g_source_query_unix_fd(source, s->fd_tag) & G_IO_IN) {
        guint64 count;

        /* Non-blocking; only resets the counter. */
        if (read(s->sub->event_fd, &count, sizeof(count)) < 0) {
            /* nothing to do */
        }
    }
    return sub_has_data(s->sub);
}

static gboolean
sub_source_dispatch(GSource *source, GSourceFunc callback, gpointer user_data)
{
    if (!callback) {
        return G_SOURCE_REMOVE;
    }
    return callback(user_data);
}

static GSourceFuncs sub_source_funcs = {
    .prepare = sub_source_prepare,
    .check = sub_source_check,
    .dispatch = sub_source_dispatch,
};

GSource *
berth_bus_sub_source_new(BerthBusSub *sub)
{
    GSource *source;
    SubSource *s;

    g_return_val_if_fail(sub, NULL);
    if (sub->event_fd < 0) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

        if (fd < 0) {
            g_critical("eventfd failed: %s", g_strerror(errno));
            return NULL;
        }
        g_mutex_lock(&sub->bus->lock);
        sub->event_fd = fd;
        g_mutex_unlock(&sub->bus->lock);
    }
    source = g_source_new(&sub_source_funcs, sizeof(SubSource));
    s = (SubSource *) source;
    s->sub = sub;
    s->fd_tag = g_source_add_unix_fd(source, sub->event_fd, G_IO_IN);
    g_source_set_static_name(source, "berth-bus-sub");
    return source;
}

/* TRUE when @json is one JSON object and nothing else. */
static gboolean
detail_is_object(const char *json)
{
    const char *p = json;
    yajl_handle h;
    yajl_status st;

    while (g_ascii_isspace(*p)) {
        p++;
    }
    if (*p != '{') {
        return FALSE;
    }
    h = yajl_alloc(NULL, NULL, NULL);
    st = yajl_parse(h, (const unsigned char *) json, strlen(json));
    if (st == yajl_status_ok) {
        st = yajl_complete_parse(h);
    }
    yajl_free(h);
    return st == yajl_status_ok;
}

/* The timestamp as the API shows it: "2026-11-22T03:10:00.123456Z" (g_free it). */
static char *
format_time_us(gint64 us)
{
    g_autoptr(GDateTime) dt = NULL;
    g_autofree char *secs = NULL;

    us = MAX(us, 0);
    dt = g_date_time_new_from_unix_utc(us / G_USEC_PER_SEC);
    secs = dt ? g_date_time_format(dt, "%Y-%m-%dT%H:%M:%S") : NULL;
    return g_strdup_printf("%s.%06" G_GINT64_FORMAT "Z", secs ? secs : "1970-01-01T00:00:00",
                           us % G_USEC_PER_SEC);
}

char *
berth_event_to_json(const BerthEvent *event)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    g_autofree char *stamp = NULL;
    const char *detail = event->detail_json;

    if (detail && !detail_is_object(detail)) {
        if (g_atomic_int_compare_and_exchange(&bad_detail_logged, 0, 1)) {
            g_message("event %" G_GUINT64_FORMAT " (%s) has a detail that is not a JSON object; "
                      "sending {} (logged once)", event->seq, event->type);
        }
        detail = NULL;
    }
    stamp = format_time_us(event->timestamp_us);
    yajl_gen_map_open(g);
    berth_json_kv_int(g, "seq", (long long) event->seq);
    berth_json_kv_str(g, "timestamp", stamp);
    berth_json_str(g, "object");
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "kind", event->object_kind);
    berth_json_kv_str(g, "name", event->object_name);
    berth_json_kv_str(g, "uuid", event->object_uuid);
    yajl_gen_map_close(g);
    berth_json_kv_str(g, "type", event->type);
    berth_json_str(g, "detail");
    if (detail) {
        /* yajl has no raw-value call; yajl_gen_number writes its text verbatim, with the
         * separators, and the text was checked to be one object above. */
        yajl_gen_number(g, detail, strlen(detail));
    } else {
        yajl_gen_map_open(g);
        yajl_gen_map_close(g);
    }
    yajl_gen_map_close(g);
    return berth_json_finish(g);
}
