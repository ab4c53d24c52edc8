/* Benchmark of the event bus: events/s from 4 publisher threads to 1, 10 and 100 subscribers. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "event-bus.h"

#define PUBLISHERS 4
#define RUNS 5
#define BATCH 256
#define QUEUE_LEN 65536
#define RING_SIZE 4096

typedef struct {
    BerthBus *bus;
    guint per_publisher;
    gint ready;         /* atomic: threads at the start line */
    gint go;            /* atomic: start */
    gint stop;          /* atomic: publishers are done */
    gint64 delivered;   /* atomic sum over subscribers */
    guint64 lost;       /* sum over subscribers, after the run */
    gint64 pub_cpu_ns;  /* atomic: CPU time of the publisher threads */
    gint64 sub_cpu_ns;  /* atomic: CPU time of the subscriber threads */
} Run;

typedef struct {
    Run *run;
    BerthBusSub *sub;
} SubThread;

static void
start_line(Run *run)
{
    g_atomic_int_inc(&run->ready);
    while (!g_atomic_int_get(&run->go)) {
        g_thread_yield();
    }
}

/* CPU time of the calling thread: a figure that does not depend on what else the (shared)
 * machine runs. */
static gint64
thread_cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (gint64) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static gpointer
publisher(gpointer data)
{
    Run *run = data;
    char name[32];
    BerthEvent ev = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "domain",
        .object_name = name,
        .type = "domain-started",
        .detail_json = "{\"reason\":\"booted\"}",
    };

    g_snprintf(name, sizeof(name), "bench-%p", (void *) g_thread_self());
    gint64 cpu0;

    start_line(run);
    cpu0 = thread_cpu_ns();
    for (guint i = 0; i < run->per_publisher; i++) {
        berth_bus_publish(run->bus, &ev);
    }
    g_atomic_pointer_add(&run->pub_cpu_ns, thread_cpu_ns() - cpu0);
    return NULL;
}

static gpointer
subscriber(gpointer data)
{
    SubThread *st = data;
    const BerthEvent *batch[BATCH];
    gint64 got = 0;
    gint64 cpu0;

    start_line(st->run);
    cpu0 = thread_cpu_ns();
    for (;;) {
        guint n = berth_bus_sub_pop_many(st->sub, batch, BATCH, -1);

        if (n == 0) {
            if (g_atomic_int_get(&st->run->stop)) {
                break;
            }
            continue;
        }
        for (guint i = 0; i < n; i++) {
            got += batch[i]->seq ? 1 : 0; /* markers are not deliveries */
            berth_event_unref(batch[i]);
        }
    }
    g_atomic_pointer_add(&st->run->delivered, got);
    g_atomic_pointer_add(&st->run->sub_cpu_ns, thread_cpu_ns() - cpu0);
    return NULL;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

/* One run: returns published and delivered events per second. */
static void
run_once(guint n_subs, guint queue_len, guint per_publisher, double *pub_rate, double *del_rate,
         double *lost,
         double *pub_ns, double *sub_ns)
{
    Run run = { .bus = berth_bus_new(RING_SIZE), .per_publisher = per_publisher };
    GThread *pubs[PUBLISHERS];
    g_autofree GThread **subs = g_new0(GThread *, n_subs);
    g_autofree SubThread *sts = g_new0(SubThread, n_subs);
    gint64 t0, t_pub, t_del;

    for (guint i = 0; i < n_subs; i++) {
        sts[i].run = &run;
        sts[i].sub = berth_bus_subscribe(run.bus, queue_len, 0, NULL);
        subs[i] = g_thread_new("bench-sub", subscriber, &sts[i]);
    }
    for (guint i = 0; i < PUBLISHERS; i++) {
        pubs[i] = g_thread_new("bench-pub", publisher, &run);
    }
    while ((guint) g_atomic_int_get(&run.ready) < PUBLISHERS + n_subs) {
        g_thread_yield();
    }
    t0 = g_get_monotonic_time();
    g_atomic_int_set(&run.go, 1);
    for (guint i = 0; i < PUBLISHERS; i++) {
        g_thread_join(pubs[i]);
    }
    t_pub = g_get_monotonic_time();
    g_atomic_int_set(&run.stop, 1);
    for (guint i = 0; i < n_subs; i++) {
        berth_bus_sub_wake(sts[i].sub);
    }
    for (guint i = 0; i < n_subs; i++) {
        g_thread_join(subs[i]);
        run.lost += berth_bus_sub_lost(sts[i].sub);
        berth_bus_unsubscribe(sts[i].sub);
    }
    t_del = g_get_monotonic_time();
    berth_bus_free(run.bus);

    *pub_rate = (double) PUBLISHERS * per_publisher * G_USEC_PER_SEC / (double) (t_pub - t0);
    *del_rate = (double) run.delivered * G_USEC_PER_SEC / (double) (t_del - t0);
    *lost = (double) run.lost / ((double) PUBLISHERS * per_publisher * n_subs);
    *pub_ns = (double) run.pub_cpu_ns / ((double) PUBLISHERS * per_publisher);
    *sub_ns = run.delivered ? (double) run.sub_cpu_ns / (double) run.delivered : 0;
}

static gboolean
strv_has_number(char **args, guint n)
{
    for (; *args; args++) {
        if (strtoul(*args, NULL, 10) == n) {
            return TRUE;
        }
    }
    return FALSE;
}

int
main(int argc, char **argv)
{
    /* The last case gives the one subscriber a queue that holds the whole run: nothing can be
     * lost, so it measures the bus end to end (publish, queue, pop, free) rather than how
     * much CPU the scheduler grants a subscriber racing 4 publishers. */
    static const guint cases[] = { 1, 10, 100, 1 };
    static const guint per_publisher[] = { 1000000, 250000, 50000, 250000 };
    static const guint queue_len[] = { QUEUE_LEN, QUEUE_LEN, QUEUE_LEN, 4 * 250000 };

    printf("# event bus: %d publisher threads, queue %d, ring %d, batches of %d, median of %d\n",
           PUBLISHERS, QUEUE_LEN, RING_SIZE, BATCH, RUNS);
    printf("# CPU ns/event: publisher thread time per published event, subscriber thread time\n"
           "# per delivered event (load-independent on a shared machine)\n");
    printf("%-12s %14s %14s %16s %8s %12s %12s\n", "subscribers", "published/s", "delivered/s",
           "delivered/s/sub", "lost", "pub CPU ns", "sub CPU ns");
    for (guint c = 0; c < G_N_ELEMENTS(cases); c++) {
        double pub[RUNS], del[RUNS], lost[RUNS], pub_ns[RUNS], sub_ns[RUNS];
        g_autofree char *label = queue_len[c] == QUEUE_LEN
                                     ? g_strdup_printf("%u", cases[c])
                                     : g_strdup_printf("%u (q=run)", cases[c]);

        /* "bench-bus 1 10" runs only those cases. */
        if (argc > 1 && !strv_has_number(argv + 1, cases[c])) {
            continue;
        }
        for (guint r = 0; r < RUNS; r++) {
            run_once(cases[c], queue_len[c], per_publisher[c], &pub[r], &del[r], &lost[r],
                     &pub_ns[r], &sub_ns[r]);
        }
        qsort(pub, RUNS, sizeof(double), cmp_double);
        qsort(del, RUNS, sizeof(double), cmp_double);
        qsort(lost, RUNS, sizeof(double), cmp_double);
        qsort(pub_ns, RUNS, sizeof(double), cmp_double);
        qsort(sub_ns, RUNS, sizeof(double), cmp_double);
        printf("%-12s %14.0f %14.0f %16.0f %7.1f%% %12.0f %12.0f\n", label, pub[RUNS / 2],
               del[RUNS / 2], del[RUNS / 2] / cases[c], 100.0 * lost[RUNS / 2],
               pub_ns[RUNS / 2], sub_ns[RUNS / 2]);
        fflush(stdout);
    }
    return EXIT_SUCCESS;
}
