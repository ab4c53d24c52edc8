/* The request pool: threads that run handed-off requests, one of them spinning when idle. */
#pragma once

#include <glib.h>

typedef void (*VfsPoolFunc)(gpointer item, gpointer user_data);

typedef struct VfsPool VfsPool;

/*
 * Up to @max_threads threads, started as requests need them and kept until vfs_pool_free().
 * A thread that finds no work keeps looking for up to @spin_us microseconds (adapted as Linux's
 * halt polling is; 0: never) before it sleeps, so that a request handed off meanwhile costs no
 * wake-up. It spins only while it holds @spin_token (an atomic int, 0 when free, shared with
 * whatever else may spin; NULL: a token of the pool's own), so at most one thread spins. Items
 * run in hand-off order, by any thread.
 */
VfsPool *vfs_pool_new(guint max_threads, guint spin_us, gint *spin_token, VfsPoolFunc func,
                      gpointer user_data, GError **error);
/* Hands @item to a thread: the spinning one, else the one that went idle last, else a new one
 * (or, when none can be started, the next thread that finishes its item). */
void vfs_pool_push(VfsPool *pool, gpointer item);
/* Runs every item still queued, then ends and joins every thread. Accepts NULL. */
void vfs_pool_free(VfsPool *pool);

/* Linux's halt-polling rule for a polling or spinning window of at most @max µs, after the
 * poll found nothing and the thread then slept @slept µs: a sleep that ended soon (what came
 * just missed the window; "soon" allows for the wake-up itself, tens of µs in a VM) doubles
 * the window, a long one halves it. Returns the next window. */
guint vfs_poll_window_next(guint window, guint max, gint64 slept);

/* Hand-offs since the pool was made that woke a sleeping thread (for tests). */
guint64 vfs_pool_wakeups(VfsPool *pool);
