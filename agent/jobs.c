/* The job scheduler: per-object queues on a GThreadPool, timeouts by a watchdog thread. */
#include "jobs.h"

#include <berth/json.h>

#include "errors.h"

/* The jobs that serialize on one object (kind + name): QUERY jobs never enter it. */
typedef struct {
    char *key;
    BerthJob *current; /* the MODIFY or DESTROY job pushed to the pool, or NULL */
    GQueue waiting;    /* MODIFY and DESTROY jobs not yet pushed, DESTROY ones first */
} ObjectQueue;

struct BerthJob {
    gint ref;
    guint64 id;
    BerthJobKind kind;
    char *object_kind;
    char *object_name;
    char *description;
    char *owner;
    guint timeout_ms;
    BerthJobFunc func;
    gpointer data;
    GDestroyNotify data_free;
    GMainContext *done_ctx;
    BerthJobDoneFunc done;
    gpointer done_data;
    GCancellable *cancellable;

    /* Scheduling fields, under the scheduler's lock. */
    ObjectQueue *obj;      /* MODIFY/DESTROY: its object while queued or current */
    gboolean cancel_asked; /* job.cancel or a DESTROY asked it to stop */
    char *cancel_reason;   /* a sentence for the error, e.g. "interrupted by destroy job 7" */
    gboolean timed_out;    /* the watchdog cancelled it */
    gint64 deadline;       /* monotonic; 0 = no timeout or not running */
    gboolean notified;     /* the event was published and the done callback handed off */

    GMutex lock; /* protects state, progress, message, result, error and the times below */
    BerthJobState state;
    guint progress;
    char *message;
    char *result;
    GError *error;
    gint64 created_real, started_real, finished_real; /* for display */
    gint64 started_mono, finished_mono;               /* for durations */
};

struct BerthScheduler {
    GMutex lock; /* protects objects, active, history, timed, next_id, the stop flags, every job's
                  * scheduling fields (never held while a job function or callback runs) */
    GCond done_cond;  /* a job was notified (berth_scheduler_wait) */
    GCond timer_cond; /* the earliest deadline changed, or the watchdog must stop */
    GThreadPool *pool;       /* MODIFY and DESTROY jobs */
    GThreadPool *query_pool; /* QUERY jobs: never stuck behind modify jobs that wait on guests */
    BerthBus *bus;
    guint history_max;
    guint64 next_id;
    gboolean stopping;   /* no more submissions */
    gboolean timer_stop; /* the watchdog ends (after the last job: timeouts fire until then) */
    GHashTable *objects; /* "kind\x1fname" -> ObjectQueue */
    GHashTable *active;  /* id -> BerthJob, queued or running (a reference) */
    GQueue history;      /* finished jobs, oldest first (references) */
    GPtrArray *timed;    /* running jobs with a deadline (no reference: active holds one) */
    GThread *watchdog;
};

static const char *const state_names[BERTH_JOB_STATE_LAST] = {
    [BERTH_JOB_QUEUED] = "queued",       [BERTH_JOB_RUNNING] = "running",
    [BERTH_JOB_COMPLETED] = "completed", [BERTH_JOB_FAILED] = "failed",
    [BERTH_JOB_CANCELLED] = "cancelled", [BERTH_JOB_TIMED_OUT] = "timed-out",
};

static const char *const kind_names[BERTH_JOB_KIND_LAST] = {
    [BERTH_JOB_QUERY] = "query",
    [BERTH_JOB_MODIFY] = "modify",
    [BERTH_JOB_DESTROY] = "destroy",
};

const char *
berth_job_state_name(BerthJobState state)
{
    return (guint) state < BERTH_JOB_STATE_LAST ? state_names[state] : "unknown";
}

static gboolean
state_is_final(BerthJobState state)
{
    return state >= BERTH_JOB_COMPLETED;
}

BerthJob *
berth_job_ref(BerthJob *job)
{
    g_atomic_int_inc(&job->ref);
    return job;
}

void
berth_job_unref(BerthJob *job)
{
    if (!job || !g_atomic_int_dec_and_test(&job->ref)) {
        return;
    }
    /* data_free ran when the job finished; a job that never ran is finished too. */
    g_free(job->object_kind);
    g_free(job->object_name);
    g_free(job->description);
    g_free(job->owner);
    g_free(job->cancel_reason);
    g_free(job->message);
    g_free(job->result);
    g_clear_error(&job->error);
    g_clear_object(&job->cancellable);
    if (job->done_ctx) {
        g_main_context_unref(job->done_ctx);
    }
    g_mutex_clear(&job->lock);
    g_free(job);
}

guint64
berth_job_get_id(BerthJob *job)
{
    return job->id;
}

BerthJobState
berth_job_get_state(BerthJob *job)
{
    BerthJobState state;

    g_mutex_lock(&job->lock);
    state = job->state;
    g_mutex_unlock(&job->lock);
    return state;
}

/* Set once when the job finishes and never changed after, so the pointer stays valid. */
const GError *
berth_job_get_error(BerthJob *job)
{
    const GError *error;

    g_mutex_lock(&job->lock);
    error = job->error;
    g_mutex_unlock(&job->lock);
    return error;
}

GCancellable *
berth_job_get_cancellable(BerthJob *job)
{
    return job->cancellable;
}

void
berth_job_set_progress(BerthJob *job, guint percent, const char *message)
{
    g_mutex_lock(&job->lock);
    job->progress = MIN(percent, 100);
    g_free(job->message);
    job->message = g_strdup(message);
    g_mutex_unlock(&job->lock);
}

void
berth_job_set_result(BerthJob *job, char *result_json)
{
    g_mutex_lock(&job->lock);
    g_free(job->result);
    job->result = result_json;
    g_mutex_unlock(&job->lock);
}

/* Valid until the next berth_job_set_result (in practice: read it once the job finished). */
const char *
berth_job_get_result(BerthJob *job)
{
    const char *result;

    g_mutex_lock(&job->lock);
    result = job->result;
    g_mutex_unlock(&job->lock);
    return result;
}

/* "2026-11-22T03:10:00.123456Z", as events show times (g_free it). */
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

static void
json_kv_time(yajl_gen g, const char *key, gint64 us)
{
    g_autofree char *text = us ? format_time_us(us) : NULL;

    berth_json_kv_str(g, key, text);
}

static void
json_object(yajl_gen g, BerthJob *job)
{
    berth_json_str(g, "object");
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "kind", job->object_kind);
    berth_json_kv_str(g, "name", job->object_name);
    yajl_gen_map_close(g);
}

/* Under job->lock. */
static void
json_error(yajl_gen g, BerthJob *job)
{
    berth_json_str(g, "error");
    if (!job->error) {
        yajl_gen_null(g);
        return;
    }
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "name", berth_error_name_for(job->error));
    berth_json_kv_str(g, "message", job->error->message);
    yajl_gen_map_close(g);
}

char *
berth_job_to_json(BerthJob *job)
{
    yajl_gen g = yajl_gen_alloc(NULL);

    g_mutex_lock(&job->lock);
    yajl_gen_map_open(g);
    berth_json_kv_int(g, "id", (long long) job->id);
    json_object(g, job);
    berth_json_kv_str(g, "kind", kind_names[job->kind]);
    berth_json_kv_str(g, "description", job->description);
    berth_json_kv_str(g, "owner", job->owner);
    berth_json_kv_str(g, "state", berth_job_state_name(job->state));
    berth_json_kv_int(g, "progress", job->progress);
    berth_json_kv_str(g, "message", job->message);
    json_kv_time(g, "created", job->created_real);
    json_kv_time(g, "started", job->started_real);
    json_kv_time(g, "finished", job->finished_real);
    berth_json_str(g, "duration_ms"); /* from the monotonic clock: immune to clock steps */
    if (job->finished_mono && job->started_mono) {
        yajl_gen_integer(g, (job->finished_mono - job->started_mono) / 1000);
    } else {
        yajl_gen_null(g);
    }
    json_error(g, job);
    yajl_gen_map_close(g);
    g_mutex_unlock(&job->lock);
    return berth_json_finish(g);
}

static void
object_queue_free(gpointer data)
{
    ObjectQueue *obj = data;

    g_free(obj->key);
    g_free(obj);
}

/* Under sched->lock: hands @job to the pool (it stays queued until a worker takes it). */
static void
push_to_pool(BerthScheduler *sched, BerthJob *job)
{
    g_autoptr(GError) error = NULL;
    GThreadPool *pool = job->kind == BERTH_JOB_QUERY ? sched->query_pool : sched->pool;

    /* Pushing to a pool of unlimited queue length fails only when a thread cannot be made;
     * the job then waits for a worker that exists. */
    if (!g_thread_pool_push(pool, berth_job_ref(job), &error)) {
        g_warning("job %" G_GUINT64_FORMAT ": %s", job->id, error->message);
    }
}

/* Under sched->lock: starts the next waiting job of @obj when none is current, and forgets
 * @obj when nothing is left. */
static void
object_advance(BerthScheduler *sched, ObjectQueue *obj)
{
    if (obj->current) {
        return;
    }
    obj->current = g_queue_pop_head(&obj->waiting);
    if (obj->current) {
        push_to_pool(sched, obj->current);
    } else {
        g_hash_table_remove(sched->objects, obj->key);
    }
}

/*
 * First step of finishing, under sched->lock: the final state and error, and the job's place
 * on its object given to the next one. The caller then calls finish_notify() without the lock.
 */
static void
finish_locked(BerthScheduler *sched, BerthJob *job, BerthJobState state, GError *error)
{
    ObjectQueue *obj = job->obj;

    g_mutex_lock(&job->lock);
    job->state = state;
    g_clear_error(&job->error);
    job->error = error;
    job->finished_real = g_get_real_time();
    job->finished_mono = g_get_monotonic_time();
    g_mutex_unlock(&job->lock);

    job->deadline = 0;
    g_ptr_array_remove_fast(sched->timed, job);
    if (obj) {
        job->obj = NULL;
        if (obj->current == job) {
            obj->current = NULL;
        } else {
            g_queue_remove(&obj->waiting, job);
        }
        object_advance(sched, obj);
    }
}

static gboolean
done_idle(gpointer data)
{
    BerthJob *job = data;

    job->done(job, job->done_data);
    return G_SOURCE_REMOVE;
}

static void
publish_finished(BerthScheduler *sched, BerthJob *job)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    g_autofree char *name = g_strdup_printf("%" G_GUINT64_FORMAT, job->id);
    g_autofree char *detail = NULL;
    BerthEvent ev = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "job",
        .object_name = name,
        .type = "job-finished",
    };

    g_mutex_lock(&job->lock);
    yajl_gen_map_open(g);
    berth_json_kv_int(g, "id", (long long) job->id);
    json_object(g, job);
    berth_json_kv_str(g, "description", job->description);
    berth_json_kv_str(g, "state", berth_job_state_name(job->state));
    json_error(g, job);
    yajl_gen_map_close(g);
    g_mutex_unlock(&job->lock);
    detail = berth_json_finish(g);
    ev.detail_json = detail;
    berth_bus_publish(sched->bus, &ev);
}

/* Second step of finishing, without any scheduler lock (it runs others' code): data_free, the
 * job-finished event, the done callback; then waiters are released. */
static void
finish_notify(BerthScheduler *sched, BerthJob *job)
{
    if (job->data_free) {
        job->data_free(job->data);
    }
    job->data = NULL;
    if (sched->bus) {
        publish_finished(sched, job);
    }
    if (job->done && job->done_ctx) {
        GSource *source = g_idle_source_new();

        g_source_set_callback(source, done_idle, berth_job_ref(job),
                              (GDestroyNotify) berth_job_unref);
        g_source_set_static_name(source, "berth-job-done");
        g_source_attach(source, job->done_ctx);
        g_source_unref(source);
    } else if (job->done) {
        job->done(job, job->done_data);
    }
    g_mutex_lock(&sched->lock);
    /* Only now does it leave the active table (where berth_scheduler_wait finds it): its
     * reference moves to the history. */
    g_hash_table_steal(sched->active, &job->id);
    g_queue_push_tail(&sched->history, job);
    while (g_queue_get_length(&sched->history) > sched->history_max) {
        berth_job_unref(g_queue_pop_head(&sched->history));
    }
    job->notified = TRUE;
    g_cond_broadcast(&sched->done_cond);
    g_mutex_unlock(&sched->lock);
}

static GError *
job_error_new(BerthJob *job, int code, const char *what)
{
    return g_error_new(BERTH_ERROR, code, "job %" G_GUINT64_FORMAT " (%s on %s '%s') %s",
                       job->id, job->description, job->object_kind, job->object_name, what);
}

/* The final state once the function returned @ok with @error (taken over). Under sched->lock. */
static BerthJobState
final_state(BerthJob *job, gboolean ok, GError **error)
{
    /* A function that still did its work after the deadline (shutdown with force destroys the
     * domain when the guest did not stop in time) completed. */
    if (job->timed_out && !ok) {
        g_autofree char *what = g_strdup_printf("timed out after %u ms", job->timeout_ms);

        g_clear_error(error);
        *error = job_error_new(job, BERTH_ERROR_TIMEOUT, what);
        return BERTH_JOB_TIMED_OUT;
    }
    if (job->cancel_asked) {
        g_clear_error(error);
        *error = job_error_new(job, BERTH_ERROR_CANCELLED, job->cancel_reason);
        return BERTH_JOB_CANCELLED;
    }
    if (ok) {
        g_clear_error(error);
        return BERTH_JOB_COMPLETED;
    }
    if (!*error) {
        *error = job_error_new(job, BERTH_ERROR_INTERNAL, "failed without saying why");
        return BERTH_JOB_FAILED;
    }
    if (g_error_matches(*error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        GError *cancelled = g_error_new_literal(BERTH_ERROR, BERTH_ERROR_CANCELLED,
                                                (*error)->message);

        g_clear_error(error);
        *error = cancelled;
        return BERTH_JOB_CANCELLED;
    }
    return BERTH_JOB_FAILED;
}

static void
worker(gpointer data, gpointer user_data)
{
    BerthJob *job = data;
    BerthScheduler *sched = user_data;
    GError *error = NULL;
    BerthJobState state;
    gboolean ok;

    g_mutex_lock(&sched->lock);
    if (state_is_final(berth_job_get_state(job))) {
        /* Cancelled while it waited in the pool's queue: it has already finished. */
        g_mutex_unlock(&sched->lock);
        berth_job_unref(job);
        return;
    }
    if (job->cancel_asked) {
        finish_locked(sched, job, BERTH_JOB_CANCELLED,
                      job_error_new(job, BERTH_ERROR_CANCELLED, job->cancel_reason));
        g_mutex_unlock(&sched->lock);
        finish_notify(sched, job);
        berth_job_unref(job);
        return;
    }
    g_mutex_lock(&job->lock);
    job->state = BERTH_JOB_RUNNING;
    job->started_real = g_get_real_time();
    job->started_mono = g_get_monotonic_time();
    g_mutex_unlock(&job->lock);
    if (job->timeout_ms) {
        job->deadline = job->started_mono + (gint64) job->timeout_ms * 1000;
        g_ptr_array_add(sched->timed, job);
        g_cond_signal(&sched->timer_cond);
    }
    g_mutex_unlock(&sched->lock);

    ok = job->func(job, job->data, &error);

    g_mutex_lock(&sched->lock);
    state = final_state(job, ok, &error); /* before reading @error: it may replace it */
    finish_locked(sched, job, state, error);
    g_mutex_unlock(&sched->lock);
    finish_notify(sched, job);
    berth_job_unref(job);
}

/* Cancels the cancellables of @jobs (references, dropped) without holding any lock: cancelled
 * handlers run synchronously and may call back into the scheduler. */
static void
cancel_all(GPtrArray *jobs)
{
    for (guint i = 0; i < jobs->len; i++) {
        g_cancellable_cancel(berth_job_get_cancellable(jobs->pdata[i]));
    }
    g_ptr_array_unref(jobs);
}

static gpointer
watchdog(gpointer data)
{
    BerthScheduler *sched = data;

    g_mutex_lock(&sched->lock);
    while (!sched->timer_stop) {
        GPtrArray *expired = g_ptr_array_new_with_free_func((GDestroyNotify) berth_job_unref);
        gint64 now = g_get_monotonic_time();
        gint64 earliest = G_MAXINT64;

        for (guint i = 0; i < sched->timed->len;) {
            BerthJob *job = sched->timed->pdata[i];

            if (job->deadline <= now) {
                job->timed_out = TRUE;
                g_ptr_array_add(expired, berth_job_ref(job));
                g_ptr_array_remove_index_fast(sched->timed, i);
                continue;
            }
            earliest = MIN(earliest, job->deadline);
            i++;
        }
        if (expired->len > 0) {
            g_mutex_unlock(&sched->lock);
            cancel_all(expired);
            g_mutex_lock(&sched->lock);
            continue;
        }
        g_ptr_array_unref(expired);
        if (earliest == G_MAXINT64) {
            g_cond_wait(&sched->timer_cond, &sched->lock);
        } else {
            g_cond_wait_until(&sched->timer_cond, &sched->lock, earliest);
        }
    }
    g_mutex_unlock(&sched->lock);
    return NULL;
}

BerthScheduler *
berth_scheduler_new(guint max_workers, guint history, BerthBus *bus)
{
    BerthScheduler *sched = g_new0(BerthScheduler, 1);

    g_mutex_init(&sched->lock);
    g_cond_init(&sched->done_cond);
    g_cond_init(&sched->timer_cond);
    sched->bus = bus;
    sched->history_max = history;
    sched->objects = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, object_queue_free);
    sched->active = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL,
                                          (GDestroyNotify) berth_job_unref);
    g_queue_init(&sched->history);
    sched->timed = g_ptr_array_new();
    /* Non-exclusive: idle threads are shared process-wide, none is made up front. */
    sched->pool = g_thread_pool_new(worker, sched, (gint) MAX(max_workers, 1), FALSE, NULL);
    sched->query_pool = g_thread_pool_new(worker, sched, (gint) MAX(max_workers, 1), FALSE,
                                          NULL);
    sched->watchdog = g_thread_new("berth-job-timer", watchdog, sched);
    return sched;
}

void
berth_scheduler_free(BerthScheduler *sched)
{
    g_autoptr(GArray) queued = g_array_new(FALSE, FALSE, sizeof(guint64));
    GHashTableIter iter;
    BerthJob *job;

    if (!sched) {
        return;
    }
    g_mutex_lock(&sched->lock);
    sched->stopping = TRUE;
    g_hash_table_iter_init(&iter, sched->active);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *) &job)) {
        /* Running jobs too: a shutdown waiting on a guest that ignores it must not keep
         * berthd from stopping (the domain itself keeps running). */
        BerthJobState st = berth_job_get_state(job);
        if (st == BERTH_JOB_QUEUED || st == BERTH_JOB_RUNNING) {
            g_array_append_val(queued, job->id);
        }
    }
    g_mutex_unlock(&sched->lock);

    for (guint i = 0; i < queued->len; i++) {
        berth_scheduler_cancel(sched, g_array_index(queued, guint64, i), NULL);
    }
    /* Waits for running jobs; their finish takes sched->lock, so it is not held here. */
    g_thread_pool_free(sched->pool, FALSE, TRUE);
    g_thread_pool_free(sched->query_pool, FALSE, TRUE);
    g_mutex_lock(&sched->lock);
    sched->timer_stop = TRUE;
    g_cond_signal(&sched->timer_cond);
    g_mutex_unlock(&sched->lock);
    g_thread_join(sched->watchdog);

    g_queue_clear_full(&sched->history, (GDestroyNotify) berth_job_unref);
    g_hash_table_unref(sched->active);
    g_hash_table_unref(sched->objects);
    g_ptr_array_unref(sched->timed);
    g_cond_clear(&sched->done_cond);
    g_cond_clear(&sched->timer_cond);
    g_mutex_clear(&sched->lock);
    g_free(sched);
}

guint64
berth_scheduler_submit(BerthScheduler *sched, const BerthJobSpec *spec, const char *owner,
                       GMainContext *done_ctx, BerthJobDoneFunc done, gpointer done_data,
                       GError **error)
{
    g_autoptr(GPtrArray) to_cancel = g_ptr_array_new_with_free_func(
        (GDestroyNotify) berth_job_unref);
    BerthJob *job;
    guint64 id;

    g_return_val_if_fail(sched && spec, 0);
    if (!spec->func || !spec->object_kind || !spec->object_name ||
        (guint) spec->kind >= BERTH_JOB_KIND_LAST) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "job '%s' lacks a function or an object, or has an unknown kind",
                    spec->description ? spec->description : "(unnamed)");
        return 0;
    }

    job = g_new0(BerthJob, 1);
    job->ref = 1;
    job->kind = spec->kind;
    job->object_kind = g_strdup(spec->object_kind);
    job->object_name = g_strdup(spec->object_name);
    job->description = g_strdup(spec->description ? spec->description : "job");
    job->owner = g_strdup(owner ? owner : "agent");
    job->timeout_ms = spec->timeout_ms;
    job->func = spec->func;
    job->data = spec->data;
    job->data_free = spec->data_free;
    job->done_ctx = done_ctx ? g_main_context_ref(done_ctx) : NULL;
    job->done = done;
    job->done_data = done_data;
    job->cancellable = g_cancellable_new();
    g_mutex_init(&job->lock);
    job->state = BERTH_JOB_QUEUED;
    job->created_real = g_get_real_time();

    g_mutex_lock(&sched->lock);
    if (sched->stopping) {
        g_mutex_unlock(&sched->lock);
        berth_job_unref(job); /* @spec->data is not taken over on failure */
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "the job scheduler is shutting down");
        return 0;
    }
    id = job->id = ++sched->next_id;
    g_hash_table_insert(sched->active, &job->id, job);
    if (job->kind == BERTH_JOB_QUERY) {
        push_to_pool(sched, job);
    } else {
        g_autofree char *key = g_strdup_printf("%s\x1f%s", job->object_kind, job->object_name);
        ObjectQueue *obj = g_hash_table_lookup(sched->objects, key);

        if (!obj) {
            obj = g_new0(ObjectQueue, 1);
            obj->key = g_steal_pointer(&key);
            g_queue_init(&obj->waiting);
            g_hash_table_insert(sched->objects, obj->key, obj);
        }
        job->obj = obj;
        if (job->kind == BERTH_JOB_DESTROY) {
            GList *l = obj->waiting.head;

            if (obj->current && obj->current->kind == BERTH_JOB_MODIFY &&
                !obj->current->cancel_asked) {
                obj->current->cancel_asked = TRUE;
                obj->current->cancel_reason = g_strdup_printf(
                    "was interrupted by destroy job %" G_GUINT64_FORMAT, id);
                g_ptr_array_add(to_cancel, berth_job_ref(obj->current));
            }
            /* Before every queued modify, after the destroy jobs queued earlier. */
            while (l && ((BerthJob *) l->data)->kind == BERTH_JOB_DESTROY) {
                l = l->next;
            }
            g_queue_insert_before(&obj->waiting, l, job);
        } else {
            g_queue_push_tail(&obj->waiting, job);
        }
        object_advance(sched, obj);
    }
    g_mutex_unlock(&sched->lock);

    cancel_all(g_steal_pointer(&to_cancel));
    return id;
}

gboolean
berth_scheduler_cancel(BerthScheduler *sched, guint64 id, GError **error)
{
    BerthJob *job;
    BerthJobState state;

    g_mutex_lock(&sched->lock);
    job = g_hash_table_lookup(sched->active, &id);
    if (!job || state_is_final(berth_job_get_state(job))) {
        gboolean known = job != NULL;

        for (GList *l = sched->history.head; l && !known; l = l->next) {
            known = ((BerthJob *) l->data)->id == id;
        }
        g_mutex_unlock(&sched->lock);
        if (known) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                        "job %" G_GUINT64_FORMAT " has already finished", id);
        } else {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_JOB,
                        "no job with id %" G_GUINT64_FORMAT, id);
        }
        return FALSE;
    }
    berth_job_ref(job);
    if (!job->cancel_asked) {
        job->cancel_asked = TRUE;
        job->cancel_reason = g_strdup("was cancelled");
    }
    state = berth_job_get_state(job);
    if (state == BERTH_JOB_QUEUED) {
        /* Not started: it ends now; a worker that takes it from the pool later skips it. */
        finish_locked(sched, job, BERTH_JOB_CANCELLED,
                      job_error_new(job, BERTH_ERROR_CANCELLED, job->cancel_reason));
        g_mutex_unlock(&sched->lock);
        finish_notify(sched, job);
    } else {
        g_mutex_unlock(&sched->lock);
        g_cancellable_cancel(job->cancellable);
    }
    berth_job_unref(job);
    return TRUE;
}

static BerthJob *
lookup_locked(BerthScheduler *sched, guint64 id)
{
    BerthJob *job = g_hash_table_lookup(sched->active, &id);

    for (GList *l = sched->history.tail; l && !job; l = l->prev) {
        if (((BerthJob *) l->data)->id == id) {
            job = l->data;
        }
    }
    return job;
}

BerthJob *
berth_scheduler_lookup(BerthScheduler *sched, guint64 id)
{
    BerthJob *job;

    g_mutex_lock(&sched->lock);
    job = lookup_locked(sched, id);
    if (job) {
        berth_job_ref(job);
    }
    g_mutex_unlock(&sched->lock);
    return job;
}

static gint
compare_ids(gconstpointer a, gconstpointer b)
{
    guint64 x = (*(BerthJob *const *) a)->id, y = (*(BerthJob *const *) b)->id;

    return x < y ? -1 : x > y;
}

GPtrArray *
berth_scheduler_list(BerthScheduler *sched)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify) berth_job_unref);
    GHashTableIter iter;
    BerthJob *job;

    g_mutex_lock(&sched->lock);
    for (GList *l = sched->history.head; l; l = l->next) {
        g_ptr_array_add(out, berth_job_ref(l->data));
    }
    g_hash_table_iter_init(&iter, sched->active);
    while (g_hash_table_iter_next(&iter, NULL, (gpointer *) &job)) {
        g_ptr_array_add(out, berth_job_ref(job));
    }
    g_mutex_unlock(&sched->lock);
    g_ptr_array_sort(out, compare_ids);
    return out;
}

void
berth_scheduler_wait(BerthScheduler *sched, guint64 id)
{
    BerthJob *job;

    g_mutex_lock(&sched->lock);
    job = lookup_locked(sched, id);
    if (job) {
        berth_job_ref(job);
        while (!job->notified) {
            g_cond_wait(&sched->done_cond, &sched->lock);
        }
    }
    g_mutex_unlock(&sched->lock);
    berth_job_unref(job);
}
