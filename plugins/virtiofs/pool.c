/* The request pool: a FIFO of items, idle threads on a LIFO stack, one idle thread spinning. */
#include "pool.h"

#include <gio/gio.h>
#include <sched.h>

typedef struct VfsWorker VfsWorker;

struct VfsWorker {
    VfsPool *pool;
    GThread *thread;
    GCond cond;           /* signalled when @woken is set */
    gboolean woken;       /* under pool->lock: taken off the idle stack by a hand-off or quit */
    VfsWorker *next_idle; /* under pool->lock */
};

struct VfsPool {
    VfsPoolFunc func;
    gpointer user_data;
    guint max_threads;
    guint spin_max;
    /* Protects everything below but the atomics, which are also read without it. */
    GMutex lock;
    GQueue items;
    gint nqueued;       /* atomic, written under @lock: the length of @items, for the spinner */
    GPtrArray *workers; /* every thread started */
    VfsWorker *idle;    /* sleeping threads, the last one to go idle first (the warmest) */
    guint waking;       /* threads woken or started for an item that have not looked yet */
    gboolean spinning;  /* a thread spins outside the lock and will look at @items */
    gint *spin_token;   /* atomic: held by whoever spins (see vfs_pool_new) */
    gint own_token;
    guint spin_us;      /* the present spinning window */
    gint quit;          /* atomic, written under @lock */
    guint64 wakeups;
};

/* With pool->lock held; it is released while spinning. The caller looks at the items again:
 * one may have come after the spinner's last look, while hand-offs still counted on it. */
static void pool_spin(VfsPool *pool)
{
    gint64 end = g_get_monotonic_time() + pool->spin_us;

    if (!g_atomic_int_compare_and_exchange(pool->spin_token, 0, 1)) {
        return; /* another thread spins (ours or the owner's): this one sleeps */
    }
    pool->spinning = TRUE;
    g_mutex_unlock(&pool->lock);
    while (!g_atomic_int_get(&pool->quit) && g_atomic_int_get(&pool->nqueued) == 0 &&
           g_get_monotonic_time() < end) {
        /* Not a pause: the threads that hand off and run requests must get the CPU. */
        sched_yield();
    }
    g_atomic_int_set(pool->spin_token, 0);
    g_mutex_lock(&pool->lock);
    pool->spinning = FALSE;
}

static gpointer worker_main(gpointer data)
{
    VfsWorker *w = data;
    VfsPool *pool = w->pool;
    gboolean spun = FALSE; /* this idle period had its chance to spin */
    gboolean owner = FALSE; /* and this thread was the one that could: it adapts the window */

    g_mutex_lock(&pool->lock);
    pool->waking--;
    for (;;) {
        gpointer item = g_queue_pop_head(&pool->items);
        if (item) {
            g_atomic_int_add(&pool->nqueued, -1);
            g_mutex_unlock(&pool->lock);
            pool->func(item, pool->user_data);
            g_mutex_lock(&pool->lock);
            spun = owner = FALSE;
            continue;
        }
        if (g_atomic_int_get(&pool->quit)) {
            break;
        }
        /* One spinner at a time, once per idle period; the others sleep at once. */
        if (!spun && !pool->spinning) {
            spun = owner = TRUE;
            if (pool->spin_us) {
                pool_spin(pool);
            }
            continue;
        }
        w->woken = FALSE;
        w->next_idle = pool->idle;
        pool->idle = w;
        gint64 slept = g_get_monotonic_time();
        while (!w->woken) {
            g_cond_wait(&w->cond, &pool->lock);
        }
        slept = g_get_monotonic_time() - slept;
        pool->waking--;
        /* Applied by the thread that could spin. */
        if (owner && pool->spin_max) {
            pool->spin_us = vfs_poll_window_next(pool->spin_us, pool->spin_max, slept);
        }
        spun = owner = FALSE;
    }
    g_mutex_unlock(&pool->lock);
    return NULL;
}

/* With pool->lock held. */
static gboolean pool_start_worker(VfsPool *pool, GError **error)
{
    VfsWorker *w = g_new0(VfsWorker, 1);

    w->pool = pool;
    g_cond_init(&w->cond);
    pool->waking++;
    w->thread = g_thread_try_new("vfs-pool", worker_main, w, error);
    if (!w->thread) {
        pool->waking--;
        g_cond_clear(&w->cond);
        g_free(w);
        return FALSE;
    }
    g_ptr_array_add(pool->workers, w);
    return TRUE;
}

VfsPool *vfs_pool_new(guint max_threads, guint spin_us, gint *spin_token, VfsPoolFunc func,
                      gpointer user_data, GError **error)
{
    VfsPool *pool = g_new0(VfsPool, 1);

    g_return_val_if_fail(max_threads > 0, NULL);
    pool->func = func;
    pool->user_data = user_data;
    pool->max_threads = max_threads;
    pool->spin_max = pool->spin_us = spin_us;
    pool->spin_token = spin_token ? spin_token : &pool->own_token;
    g_mutex_init(&pool->lock);
    g_queue_init(&pool->items);
    pool->workers = g_ptr_array_new();
    /* One thread from the start: a queued item always has a thread that will run it. */
    g_mutex_lock(&pool->lock);
    gboolean ok = pool_start_worker(pool, error);
    g_mutex_unlock(&pool->lock);
    if (!ok) {
        vfs_pool_free(pool);
        return NULL;
    }
    return pool;
}

void vfs_pool_push(VfsPool *pool, gpointer item)
{
    g_mutex_lock(&pool->lock);
    g_queue_push_tail(&pool->items, item);
    g_atomic_int_inc(&pool->nqueued);
    /* Wake a thread only for an item that no spinning or waking thread will take. A thread
     * that cannot be started is no error: the item waits for the next thread to finish. */
    if (pool->items.length > pool->waking + (pool->spinning ? 1 : 0)) {
        if (pool->idle) {
            VfsWorker *w = pool->idle;
            pool->idle = w->next_idle;
            w->woken = TRUE;
            pool->waking++;
            pool->wakeups++;
            g_cond_signal(&w->cond);
        } else if (pool->workers->len < pool->max_threads) {
            pool_start_worker(pool, NULL);
        }
    }
    g_mutex_unlock(&pool->lock);
}

void vfs_pool_free(VfsPool *pool)
{
    if (!pool) {
        return;
    }
    g_mutex_lock(&pool->lock);
    g_atomic_int_set(&pool->quit, 1);
    while (pool->idle) {
        VfsWorker *w = pool->idle;
        pool->idle = w->next_idle;
        w->woken = TRUE;
        pool->waking++;
        g_cond_signal(&w->cond);
    }
    g_mutex_unlock(&pool->lock);
    /* Not under the lock: the threads need it to finish. */
    for (guint i = 0; i < pool->workers->len; i++) {
        VfsWorker *w = g_ptr_array_index(pool->workers, i);
        g_thread_join(w->thread);
        g_cond_clear(&w->cond);
        g_free(w);
    }
    g_ptr_array_free(pool->workers, TRUE);
    g_mutex_clear(&pool->lock);
    g_free(pool);
}

guint vfs_poll_window_next(guint window, guint max, gint64 slept)
{
    if (slept <= 4 * (gint64)max) {
        return MIN(max, MAX(window * 2, 1));
    }
    return window / 2;
}

guint64 vfs_pool_wakeups(VfsPool *pool)
{
    g_mutex_lock(&pool->lock);
    guint64 n = pool->wakeups;
    g_mutex_unlock(&pool->lock);
    return n;
}
