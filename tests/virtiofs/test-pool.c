/* The request pool alone: every item runs once, whatever the producers; free runs the rest. */
#include <glib.h>
#include <string.h>

#include "pool.h"

#define NITEMS 20000
#define NPRODUCERS 4

typedef struct {
    guint threads;
    guint spin_us;
    gboolean token_taken; /* someone else holds the spin token throughout */
} PoolCase;

typedef struct {
    gint runs[NPRODUCERS * NITEMS]; /* atomic: how often each item ran */
    gint done;                      /* atomic */
    guint sleep_us;
} Counter;

typedef struct {
    VfsPool *pool;
    Counter *c;
    guint first;
} Producer;

static void item_run(gpointer item, gpointer user_data)
{
    Counter *c = user_data;
    if (c->sleep_us) {
        g_usleep(c->sleep_us);
    }
    g_atomic_int_inc(&c->runs[GPOINTER_TO_UINT(item) - 1]);
    g_atomic_int_inc(&c->done);
}

static gpointer produce(gpointer data)
{
    Producer *p = data;
    for (guint i = 0; i < NITEMS; i++) {
        vfs_pool_push(p->pool, GUINT_TO_POINTER(p->first + i + 1));
        if (i % 64 == 0) {
            g_thread_yield(); /* let the pool go idle now and then: spin and sleep paths */
        }
    }
    return NULL;
}

static void wait_done(Counter *c, gint n)
{
    gint64 end = g_get_monotonic_time() + 60 * G_USEC_PER_SEC;
    while (g_atomic_int_get(&c->done) < n) {
        g_assert_cmpint(g_get_monotonic_time(), <, end);
        g_usleep(100);
    }
}

static void test_every_item_once(gconstpointer data)
{
    const PoolCase *pc = data;
    g_autofree Counter *c = g_new0(Counter, 1);
    g_autoptr(GError) error = NULL;
    VfsPool *pool = vfs_pool_new(pc->threads, pc->spin_us, NULL, item_run, c, &error);
    GThread *threads[NPRODUCERS];
    Producer prods[NPRODUCERS];

    g_assert_no_error(error);
    for (guint round = 0; round < 3; round++) {
        memset(c, 0, sizeof(*c));
        for (guint i = 0; i < NPRODUCERS; i++) {
            prods[i] = (Producer){ pool, c, i * NITEMS };
            threads[i] = g_thread_new("producer", produce, &prods[i]);
        }
        for (guint i = 0; i < NPRODUCERS; i++) {
            g_thread_join(threads[i]);
        }
        wait_done(c, NPRODUCERS * NITEMS);
        for (guint i = 0; i < NPRODUCERS * NITEMS; i++) {
            g_assert_cmpint(c->runs[i], ==, 1);
        }
        /* Idle between rounds: the spinner's window adapts, threads sleep. */
        g_usleep(2000);
    }
    vfs_pool_free(pool);
}

static void test_free_runs_queued(void)
{
    g_autofree Counter *c = g_new0(Counter, 1);
    VfsPool *pool = vfs_pool_new(2, 50, NULL, item_run, c, NULL);

    c->sleep_us = 500;
    for (guint i = 0; i < 40; i++) {
        vfs_pool_push(pool, GUINT_TO_POINTER(i + 1));
    }
    vfs_pool_free(pool);
    g_assert_cmpint(c->done, ==, 40);
    for (guint i = 0; i < 40; i++) {
        g_assert_cmpint(c->runs[i], ==, 1);
    }
}

/* One item at a time, the next pushed as soon as the last ran: the spinning thread takes
 * nearly all without a wake-up; without spinning (or the spin token), nearly each one wakes
 * a thread. */
static void test_spin_saves_wakeups(gconstpointer data)
{
    const PoolCase *pc = data;
    g_autofree Counter *c = g_new0(Counter, 1);
    gint token = pc->token_taken ? 1 : 0;
    VfsPool *pool = vfs_pool_new(pc->threads, pc->spin_us, &token, item_run, c, NULL);
    const guint n = 400;

    g_usleep(20000); /* the first thread is asleep now */
    for (guint i = 0; i < n; i++) {
        vfs_pool_push(pool, GUINT_TO_POINTER(i + 1));
        while (g_atomic_int_get(&c->done) <= (gint)i) {
            g_thread_yield();
        }
    }
    guint64 wakeups = vfs_pool_wakeups(pool);
    vfs_pool_free(pool);
    g_test_message("%u items, %" G_GUINT64_FORMAT " wake-ups", n, wakeups);
    g_assert_cmpint(token, ==, pc->token_taken ? 1 : 0);
    if (pc->spin_us && !pc->token_taken) {
        g_assert_cmpuint(wakeups, <, n / 2);
    } else {
        g_assert_cmpuint(wakeups, >, n / 2);
    }
}

int main(int argc, char **argv)
{
    static const PoolCase cases[] = { { 1, 0 }, { 1, 50 }, { 4, 0 }, { 4, 50 }, { 64, 0 },
                                      { 64, 50 } };
    static const PoolCase spin_cases[] = { { 4, 0, FALSE }, { 4, 1000, FALSE },
                                           { 4, 1000, TRUE } };

    g_test_init(&argc, &argv, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *path = g_strdup_printf(
            "/virtiofs/pool/every-item-once/threads-%u-spin-%u", cases[i].threads,
            cases[i].spin_us);
        g_test_add_data_func(path, &cases[i], test_every_item_once);
    }
    g_test_add_func("/virtiofs/pool/free-runs-queued", test_free_runs_queued);
    for (guint i = 0; i < G_N_ELEMENTS(spin_cases); i++) {
        g_autofree char *path = g_strdup_printf(
            "/virtiofs/pool/spin-saves-wakeups/spin-%u%s", spin_cases[i].spin_us,
            spin_cases[i].token_taken ? "-token-taken" : "");
        g_test_add_data_func(path, &spin_cases[i], test_spin_saves_wakeups);
    }
    return g_test_run();
}
