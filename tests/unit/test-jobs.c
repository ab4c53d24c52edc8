/* Tests of the job scheduler: per-object serialization, parallelism, destroy, timeouts, cancel. */
#include <yajl/yajl_tree.h>

#include "errors.h"
#include "jobs.h"

/* Only a failure guard: no test waits this long when it passes. */
#define GUARD_US (30 * G_USEC_PER_SEC)

/* A count that threads raise and others wait for (a latch without sleeps). */
typedef struct {
    GMutex lock; /* protects count */
    GCond cond;
    guint count;
} Latch;

static void
latch_init(Latch *l)
{
    g_mutex_init(&l->lock);
    g_cond_init(&l->cond);
    l->count = 0;
}

static void
latch_clear(Latch *l)
{
    g_mutex_clear(&l->lock);
    g_cond_clear(&l->cond);
}

static void
latch_arrive(Latch *l)
{
    g_mutex_lock(&l->lock);
    l->count++;
    g_cond_broadcast(&l->cond);
    g_mutex_unlock(&l->lock);
}

/* TRUE once the count reached @n; FALSE when the guard ran out. */
static gboolean
latch_wait(Latch *l, guint n)
{
    gint64 deadline = g_get_monotonic_time() + GUARD_US;
    gboolean ok = TRUE;

    g_mutex_lock(&l->lock);
    while (l->count < n && ok) {
        ok = g_cond_wait_until(&l->cond, &l->lock, deadline) || l->count >= n;
    }
    g_mutex_unlock(&l->lock);
    return ok;
}

/* Waits until @job's cancellable is cancelled; FALSE when the guard ran out. */
static gboolean
wait_cancelled(BerthJob *job)
{
    GCancellable *c = berth_job_get_cancellable(job);
    GPollFD pfd;
    gint64 deadline = g_get_monotonic_time() + GUARD_US;

    if (!g_cancellable_make_pollfd(c, &pfd)) {
        return FALSE;
    }
    while (!g_cancellable_is_cancelled(c) && g_get_monotonic_time() < deadline) {
        g_poll(&pfd, 1, 1000);
    }
    g_cancellable_release_fd(c);
    return g_cancellable_is_cancelled(c);
}

static guint64
submit(BerthScheduler *sched, BerthJobKind kind, const char *name, BerthJobFunc func,
       gpointer data)
{
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = "domain",
        .object_name = name,
        .kind = kind,
        .description = "test.job",
        .func = func,
        .data = data,
    };
    g_autoptr(GError) error = NULL;
    guint64 id = berth_scheduler_submit(sched, &spec, "test", NULL, NULL, NULL, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(id, >, 0);
    return id;
}

static BerthJobState
state_of(BerthScheduler *sched, guint64 id)
{
    g_autoptr(BerthJob) job = berth_scheduler_lookup(sched, id);

    g_assert_nonnull(job);
    return berth_job_get_state(job);
}

static const char *
error_name_of(BerthScheduler *sched, guint64 id)
{
    g_autoptr(BerthJob) job = berth_scheduler_lookup(sched, id);

    g_assert_nonnull(job);
    return berth_error_name_for(berth_job_get_error(job));
}

/* --- serialization ------------------------------------------------------------------------ */

#define N_SERIAL 24

typedef struct {
    gint inside;  /* atomic: modify jobs in their function now */
    gint overlaps; /* atomic: times one found another inside */
    gint next;     /* atomic: the order slot of the next job to run */
    guint order[N_SERIAL];
} Serial;

typedef struct {
    Serial *serial;
    guint index;
} SerialJob;

static gboolean
serial_job(BerthJob *job, gpointer data, GError **error)
{
    SerialJob *sj = data;

    if (g_atomic_int_add(&sj->serial->inside, 1) != 0) {
        g_atomic_int_inc(&sj->serial->overlaps);
    }
    sj->serial->order[g_atomic_int_add(&sj->serial->next, 1)] = sj->index;
    for (guint i = 0; i < 50; i++) { /* widen the window in which an overlap would show */
        g_thread_yield();
    }
    g_atomic_int_add(&sj->serial->inside, -1);
    return TRUE;
}

static void
test_serialize_per_object(void)
{
    BerthScheduler *sched = berth_scheduler_new(4, 64, NULL);
    Serial serial = { 0 };
    SerialJob jobs[N_SERIAL];
    guint64 ids[N_SERIAL];

    for (guint i = 0; i < N_SERIAL; i++) {
        jobs[i] = (SerialJob){ .serial = &serial, .index = i };
        ids[i] = submit(sched, BERTH_JOB_MODIFY, "web1", serial_job, &jobs[i]);
    }
    for (guint i = 0; i < N_SERIAL; i++) {
        berth_scheduler_wait(sched, ids[i]);
        g_assert_cmpint(state_of(sched, ids[i]), ==, BERTH_JOB_COMPLETED);
    }
    g_assert_cmpint(serial.overlaps, ==, 0);
    for (guint i = 0; i < N_SERIAL; i++) {
        g_assert_cmpuint(serial.order[i], ==, i); /* submission order */
    }
    berth_scheduler_free(sched);
}

/* --- parallelism -------------------------------------------------------------------------- */

/* Each job arrives and waits for the other: both complete only if they ran at once. */
static gboolean
meet_job(BerthJob *job, gpointer data, GError **error)
{
    Latch *l = data;

    latch_arrive(l);
    if (!latch_wait(l, 2)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "the other job never came");
        return FALSE;
    }
    return TRUE;
}

static void
test_parallel_across_objects(void)
{
    BerthScheduler *sched = berth_scheduler_new(2, 64, NULL);
    Latch l;
    guint64 a, b;

    latch_init(&l);
    a = submit(sched, BERTH_JOB_MODIFY, "web1", meet_job, &l);
    b = submit(sched, BERTH_JOB_MODIFY, "web2", meet_job, &l);
    berth_scheduler_wait(sched, a);
    berth_scheduler_wait(sched, b);
    g_assert_cmpint(state_of(sched, a), ==, BERTH_JOB_COMPLETED);
    g_assert_cmpint(state_of(sched, b), ==, BERTH_JOB_COMPLETED);
    berth_scheduler_free(sched);
    latch_clear(&l);
}

/* A query on the same object meets a running modify. */
static void
test_query_beside_modify(void)
{
    BerthScheduler *sched = berth_scheduler_new(2, 64, NULL);
    Latch l;
    guint64 m, q;

    latch_init(&l);
    m = submit(sched, BERTH_JOB_MODIFY, "web1", meet_job, &l);
    q = submit(sched, BERTH_JOB_QUERY, "web1", meet_job, &l);
    berth_scheduler_wait(sched, m);
    berth_scheduler_wait(sched, q);
    g_assert_cmpint(state_of(sched, m), ==, BERTH_JOB_COMPLETED);
    g_assert_cmpint(state_of(sched, q), ==, BERTH_JOB_COMPLETED);
    berth_scheduler_free(sched);
    latch_clear(&l);
}

/* With every worker held by a modify, a query still runs: it has workers of its own. */
static void
test_query_when_workers_busy(void)
{
    BerthScheduler *sched = berth_scheduler_new(1, 64, NULL);
    Latch l;
    guint64 m, q;

    latch_init(&l);
    m = submit(sched, BERTH_JOB_MODIFY, "web1", meet_job, &l);
    q = submit(sched, BERTH_JOB_QUERY, "web2", meet_job, &l);
    berth_scheduler_wait(sched, m);
    berth_scheduler_wait(sched, q);
    g_assert_cmpint(state_of(sched, m), ==, BERTH_JOB_COMPLETED);
    g_assert_cmpint(state_of(sched, q), ==, BERTH_JOB_COMPLETED);
    berth_scheduler_free(sched);
    latch_clear(&l);
}

/* --- destroy, timeout, cancel ------------------------------------------------------------- */

typedef struct {
    Latch entered;
    GMutex lock; /* protects log */
    GString *log;
    gint ran_queued; /* atomic: a job that should never run did */
    gint freed;      /* atomic: data_free calls */
} Scene;

static void
scene_init(Scene *s)
{
    latch_init(&s->entered);
    g_mutex_init(&s->lock);
    s->log = g_string_new(NULL);
    s->ran_queued = 0;
    s->freed = 0;
}

static void
scene_clear(Scene *s)
{
    latch_clear(&s->entered);
    g_mutex_clear(&s->lock);
    g_string_free(s->log, TRUE);
}

static void
scene_log(Scene *s, const char *what)
{
    g_mutex_lock(&s->lock);
    g_string_append(s->log, what);
    g_mutex_unlock(&s->lock);
}

/* A modify that waits on the guest: it returns only when cancelled. */
static gboolean
waiting_job(BerthJob *job, gpointer data, GError **error)
{
    Scene *s = data;

    scene_log(s, "wait-enter;");
    latch_arrive(&s->entered);
    if (!wait_cancelled(job)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "never cancelled");
        return FALSE;
    }
    scene_log(s, "wait-cancelled;");
    return !g_cancellable_set_error_if_cancelled(berth_job_get_cancellable(job), error);
}

static gboolean
destroy_job(BerthJob *job, gpointer data, GError **error)
{
    scene_log(data, "destroy;");
    return TRUE;
}

static gboolean
later_job(BerthJob *job, gpointer data, GError **error)
{
    scene_log(data, "later;");
    return TRUE;
}

static void
test_destroy_interrupts_modify(void)
{
    BerthScheduler *sched = berth_scheduler_new(4, 64, NULL);
    Scene s;
    guint64 m, later, d;
    g_autoptr(BerthJob) mjob = NULL;

    scene_init(&s);
    m = submit(sched, BERTH_JOB_MODIFY, "web1", waiting_job, &s);
    later = submit(sched, BERTH_JOB_MODIFY, "web1", later_job, &s);
    g_assert_true(latch_wait(&s.entered, 1));
    d = submit(sched, BERTH_JOB_DESTROY, "web1", destroy_job, &s);
    berth_scheduler_wait(sched, m);
    berth_scheduler_wait(sched, d);
    berth_scheduler_wait(sched, later);

    g_assert_cmpint(state_of(sched, m), ==, BERTH_JOB_CANCELLED);
    g_assert_cmpstr(error_name_of(sched, m), ==, "cancelled");
    mjob = berth_scheduler_lookup(sched, m);
    g_assert_nonnull(strstr(berth_job_get_error(mjob)->message, "interrupted by destroy"));
    g_assert_cmpint(state_of(sched, d), ==, BERTH_JOB_COMPLETED);
    g_assert_cmpint(state_of(sched, later), ==, BERTH_JOB_COMPLETED);
    /* The destroy ran after the modify returned and before the modify queued earlier. */
    g_assert_cmpstr(s.log->str, ==, "wait-enter;wait-cancelled;destroy;later;");
    berth_scheduler_free(sched);
    scene_clear(&s);
}

static gboolean
quick_job(BerthJob *job, gpointer data, GError **error)
{
    return TRUE;
}

static gboolean
never_job(BerthJob *job, gpointer data, GError **error)
{
    g_atomic_int_inc(&((Scene *) data)->ran_queued);
    return TRUE;
}

static gboolean
gate_job(BerthJob *job, gpointer data, GError **error)
{
    return latch_wait(data, 1);
}

/* A modify that a destroy finds still waiting for a worker never runs. */
static void
test_destroy_cancels_modify_not_started(void)
{
    BerthScheduler *sched = berth_scheduler_new(1, 64, NULL);
    Scene s;
    Latch gate;
    guint64 busy, m, d;

    scene_init(&s);
    latch_init(&gate);
    busy = submit(sched, BERTH_JOB_MODIFY, "web1", gate_job, &gate); /* holds the one worker */
    m = submit(sched, BERTH_JOB_MODIFY, "web2", never_job, &s);
    d = submit(sched, BERTH_JOB_DESTROY, "web2", destroy_job, &s);
    g_assert_cmpint(state_of(sched, m), ==, BERTH_JOB_QUEUED);
    latch_arrive(&gate);
    berth_scheduler_wait(sched, busy);
    berth_scheduler_wait(sched, m);
    berth_scheduler_wait(sched, d);
    g_assert_cmpint(state_of(sched, busy), ==, BERTH_JOB_COMPLETED);
    g_assert_cmpint(state_of(sched, m), ==, BERTH_JOB_CANCELLED);
    g_assert_cmpint(state_of(sched, d), ==, BERTH_JOB_COMPLETED);
    g_assert_cmpint(g_atomic_int_get(&s.ran_queued), ==, 0);
    g_assert_cmpstr(s.log->str, ==, "destroy;");
    berth_scheduler_free(sched);
    latch_clear(&gate);
    scene_clear(&s);
}

static void
record_state(BerthJob *job, gpointer data)
{
    *(BerthJobState *) data = berth_job_get_state(job);
}

static void
test_timeout(void)
{
    BerthJobState final = BERTH_JOB_QUEUED;
    BerthScheduler *sched = berth_scheduler_new(2, 64, NULL);
    Scene s;
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = "domain",
        .object_name = "web1",
        .kind = BERTH_JOB_MODIFY,
        .description = "domain.shutdown",
        .timeout_ms = 50,
        .func = waiting_job,
    };
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthJob) job = NULL;
    guint64 id, quick;

    scene_init(&s);
    spec.data = &s;
    id = berth_scheduler_submit(sched, &spec, "test", NULL, NULL, NULL, &error);
    g_assert_no_error(error);
    berth_scheduler_wait(sched, id);
    job = berth_scheduler_lookup(sched, id);
    g_assert_cmpint(berth_job_get_state(job), ==, BERTH_JOB_TIMED_OUT);
    g_assert_error(berth_job_get_error(job), BERTH_ERROR, BERTH_ERROR_TIMEOUT);
    g_assert_cmpstr(berth_error_name_for(berth_job_get_error(job)), ==, "timeout");

    /* Freeing the scheduler cancels a running job, even one without a timeout: berthd's stop
     * must never wait on a guest. */
    spec.timeout_ms = 0;
    id = berth_scheduler_submit(sched, &spec, "test", NULL, record_state, &final, &error);
    g_assert_no_error(error);
    g_assert_true(latch_wait(&s.entered, 2));
    berth_scheduler_free(sched);
    g_assert_cmpint(final, ==, BERTH_JOB_CANCELLED);
    sched = berth_scheduler_new(2, 64, NULL);

    /* A job that ends in time is not touched by its timeout. */
    spec.func = quick_job;
    spec.timeout_ms = 60000;
    quick = berth_scheduler_submit(sched, &spec, "test", NULL, NULL, NULL, &error);
    g_assert_no_error(error);
    berth_scheduler_wait(sched, quick);
    g_assert_cmpint(state_of(sched, quick), ==, BERTH_JOB_COMPLETED);
    berth_scheduler_free(sched);
    scene_clear(&s);
}

static void
count_free(gpointer data)
{
    g_atomic_int_inc(&((Scene *) data)->freed);
}

static void
open_gate(BerthJob *job, gpointer data)
{
    g_assert_cmpint(berth_job_get_state(job), ==, BERTH_JOB_CANCELLED);
    latch_arrive(data);
}

static void
test_cancel_queued_and_running(void)
{
    Latch gate;
    BerthScheduler *sched = berth_scheduler_new(2, 64, NULL);
    Scene s;
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = "domain",
        .object_name = "web1",
        .kind = BERTH_JOB_MODIFY,
        .description = "domain.start",
        .func = never_job,
        .data_free = count_free,
    };
    g_autoptr(GError) error = NULL;
    guint64 running, queued;

    scene_init(&s);
    spec.data = &s;
    running = submit(sched, BERTH_JOB_MODIFY, "web1", waiting_job, &s);
    queued = berth_scheduler_submit(sched, &spec, "test", NULL, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_true(latch_wait(&s.entered, 1));
    g_assert_cmpint(state_of(sched, running), ==, BERTH_JOB_RUNNING);
    g_assert_cmpint(state_of(sched, queued), ==, BERTH_JOB_QUEUED);

    /* A queued job ends at once, without running; its data is freed. */
    g_assert_true(berth_scheduler_cancel(sched, queued, &error));
    g_assert_no_error(error);
    g_assert_cmpint(state_of(sched, queued), ==, BERTH_JOB_CANCELLED);
    g_assert_cmpstr(error_name_of(sched, queued), ==, "cancelled");
    g_assert_cmpint(g_atomic_int_get(&s.freed), ==, 1);

    /* A running one is asked to stop and ends when its function returns. */
    g_assert_true(berth_scheduler_cancel(sched, running, &error));
    g_assert_no_error(error);
    berth_scheduler_wait(sched, running);
    g_assert_cmpint(state_of(sched, running), ==, BERTH_JOB_CANCELLED);
    g_assert_cmpint(g_atomic_int_get(&s.ran_queued), ==, 0);

    /* Finished and unknown jobs cannot be cancelled. */
    g_assert_false(berth_scheduler_cancel(sched, running, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_clear_error(&error);
    g_assert_false(berth_scheduler_cancel(sched, 9999, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_JOB);
    g_clear_error(&error);

    /* Freeing the scheduler cancels what is still queued: the running job waits for the
     * queued one's done callback, which only a cancel can bring before it runs. */
    latch_init(&gate);
    running = submit(sched, BERTH_JOB_MODIFY, "web2", gate_job, &gate);
    spec.object_name = "web2";
    queued = berth_scheduler_submit(sched, &spec, "test", NULL, open_gate, &gate, &error);
    g_assert_no_error(error);
    berth_scheduler_free(sched);
    g_assert_cmpint(g_atomic_int_get(&s.ran_queued), ==, 0);
    g_assert_cmpint(g_atomic_int_get(&s.freed), ==, 2);
    g_assert_cmpuint(gate.count, ==, 1);
    latch_clear(&gate);
    scene_clear(&s);
}

/* --- list, lookup, history, JSON ---------------------------------------------------------- */

static gboolean
result_job(BerthJob *job, gpointer data, GError **error)
{
    berth_job_set_progress(job, 150, "almost");
    berth_job_set_result(job, g_strdup("{\"ok\":true}"));
    return TRUE;
}

static gboolean
failing_job(BerthJob *job, gpointer data, GError **error)
{
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DOMAIN, "domain 'web1' does not exist");
    return FALSE;
}

static void
test_list_lookup_history(void)
{
    BerthScheduler *sched = berth_scheduler_new(2, 3, NULL);
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(BerthJob) last = NULL;
    g_autofree char *json = NULL;
    char err[256];
    yajl_val root;
    const char *p_id[] = { "id", NULL };
    const char *p_okind[] = { "object", "kind", NULL };
    const char *p_oname[] = { "object", "name", NULL };
    const char *p_kind[] = { "kind", NULL };
    const char *p_state[] = { "state", NULL };
    const char *p_progress[] = { "progress", NULL };
    const char *p_message[] = { "message", NULL };
    const char *p_owner[] = { "owner", NULL };
    const char *p_created[] = { "created", NULL };
    const char *p_finished[] = { "finished", NULL };
    const char *p_error[] = { "error", NULL };
    const char *p_ename[] = { "error", "name", NULL };
    guint64 ids[5];

    for (guint i = 0; i < 4; i++) {
        ids[i] = submit(sched, BERTH_JOB_QUERY, "web1", result_job, NULL);
        berth_scheduler_wait(sched, ids[i]);
    }
    ids[4] = submit(sched, BERTH_JOB_MODIFY, "web1", failing_job, NULL);
    berth_scheduler_wait(sched, ids[4]);

    list = berth_scheduler_list(sched);
    g_assert_cmpuint(list->len, ==, 3);
    for (guint i = 0; i < 3; i++) {
        g_assert_cmpuint(berth_job_get_id(list->pdata[i]), ==, ids[2 + i]);
    }
    g_assert_null(berth_scheduler_lookup(sched, ids[0]));
    g_assert_null(berth_scheduler_lookup(sched, ids[1]));

    last = berth_scheduler_lookup(sched, ids[3]);
    g_assert_nonnull(last);
    g_assert_cmpstr(berth_job_get_result(last), ==, "{\"ok\":true}");
    g_assert_cmpstr(berth_job_state_name(berth_job_get_state(last)), ==, "completed");
    json = berth_job_to_json(last);
    root = yajl_tree_parse(json, err, sizeof(err));
    g_assert_nonnull(root);
    g_assert_cmpint(YAJL_GET_INTEGER(yajl_tree_get(root, p_id, yajl_t_number)), ==, ids[3]);
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_okind, yajl_t_string)), ==, "domain");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_oname, yajl_t_string)), ==, "web1");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_kind, yajl_t_string)), ==, "query");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_state, yajl_t_string)), ==,
                    "completed");
    g_assert_cmpint(YAJL_GET_INTEGER(yajl_tree_get(root, p_progress, yajl_t_number)), ==, 100);
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_message, yajl_t_string)), ==,
                    "almost");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_owner, yajl_t_string)), ==, "test");
    g_assert_nonnull(yajl_tree_get(root, p_created, yajl_t_string));
    g_assert_nonnull(yajl_tree_get(root, p_finished, yajl_t_string));
    g_assert_true(YAJL_IS_NULL(yajl_tree_get(root, p_error, yajl_t_any)));
    yajl_tree_free(root);
    g_clear_pointer(&json, g_free);

    g_clear_pointer(&last, berth_job_unref);
    last = berth_scheduler_lookup(sched, ids[4]);
    g_assert_cmpint(berth_job_get_state(last), ==, BERTH_JOB_FAILED);
    json = berth_job_to_json(last);
    root = yajl_tree_parse(json, err, sizeof(err));
    g_assert_nonnull(root);
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_kind, yajl_t_string)), ==, "modify");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_state, yajl_t_string)), ==, "failed");
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_ename, yajl_t_string)), ==,
                    "no-such-domain");
    yajl_tree_free(root);
    berth_scheduler_free(sched);
}

/* --- done callbacks and events ------------------------------------------------------------ */

typedef struct {
    GThread *thread;
    guint64 id;
    guint calls;
} DoneRecord;

static void
on_done(BerthJob *job, gpointer data)
{
    DoneRecord *r = data;

    r->thread = g_thread_self();
    r->id = berth_job_get_id(job);
    r->calls++;
}

static void
test_done_on_main_context(void)
{
    BerthScheduler *sched = berth_scheduler_new(2, 8, NULL);
    GMainContext *ctx = g_main_context_new();
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = "domain",
        .object_name = "web1",
        .kind = BERTH_JOB_MODIFY,
        .description = "domain.start",
        .func = quick_job,
    };
    DoneRecord on_ctx = { 0 }, direct = { 0 };
    g_autoptr(GError) error = NULL;
    guint64 id;
    gint64 deadline = g_get_monotonic_time() + GUARD_US;

    id = berth_scheduler_submit(sched, &spec, "test", ctx, on_done, &on_ctx, &error);
    g_assert_no_error(error);
    berth_scheduler_wait(sched, id);
    /* Handed to the context, not called yet: nobody iterated it. */
    g_assert_cmpuint(on_ctx.calls, ==, 0);
    while (on_ctx.calls == 0 && g_get_monotonic_time() < deadline) {
        g_main_context_iteration(ctx, TRUE);
    }
    g_assert_cmpuint(on_ctx.calls, ==, 1);
    g_assert_cmpuint(on_ctx.id, ==, id);
    g_assert_true(on_ctx.thread == g_thread_self());

    /* Without a context the worker thread calls it, before the job counts as done. */
    id = berth_scheduler_submit(sched, &spec, "test", NULL, on_done, &direct, &error);
    g_assert_no_error(error);
    berth_scheduler_wait(sched, id);
    g_assert_cmpuint(direct.calls, ==, 1);
    g_assert_true(direct.thread != g_thread_self());

    berth_scheduler_free(sched);
    g_main_context_unref(ctx);
}

static void
test_finished_events(void)
{
    BerthBus *bus = berth_bus_new(16);
    BerthBusSub *sub = berth_bus_subscribe(bus, 16, 0, NULL);
    BerthScheduler *sched = berth_scheduler_new(2, 8, bus);
    const char *p_id[] = { "id", NULL };
    const char *p_oname[] = { "object", "name", NULL };
    const char *p_desc[] = { "description", NULL };
    const char *p_state[] = { "state", NULL };
    const char *p_error[] = { "error", NULL };
    const char *p_ename[] = { "error", "name", NULL };
    guint64 ok, bad;

    ok = submit(sched, BERTH_JOB_MODIFY, "web1", quick_job, NULL);
    berth_scheduler_wait(sched, ok);
    bad = submit(sched, BERTH_JOB_MODIFY, "web1", failing_job, NULL);
    berth_scheduler_wait(sched, bad);

    for (guint i = 0; i < 2; i++) {
        const BerthEvent *ev = berth_bus_sub_pop(sub, 0);
        guint64 id = i == 0 ? ok : bad;
        g_autofree char *name = g_strdup_printf("%" G_GUINT64_FORMAT, id);
        char err[256];
        yajl_val root;

        g_assert_nonnull(ev);
        g_assert_cmpstr(ev->type, ==, "job-finished");
        g_assert_cmpstr(ev->object_kind, ==, "job");
        g_assert_cmpstr(ev->object_name, ==, name);
        root = yajl_tree_parse(ev->detail_json, err, sizeof(err));
        g_assert_nonnull(root);
        g_assert_cmpint(YAJL_GET_INTEGER(yajl_tree_get(root, p_id, yajl_t_number)), ==, id);
        g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_oname, yajl_t_string)), ==,
                        "web1");
        g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_desc, yajl_t_string)), ==,
                        "test.job");
        if (i == 0) {
            g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_state, yajl_t_string)), ==,
                            "completed");
            g_assert_true(YAJL_IS_NULL(yajl_tree_get(root, p_error, yajl_t_any)));
        } else {
            g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_state, yajl_t_string)), ==,
                            "failed");
            g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(root, p_ename, yajl_t_string)), ==,
                            "no-such-domain");
        }
        yajl_tree_free(root);
        berth_event_unref(ev);
    }
    g_assert_null(berth_bus_sub_pop(sub, 0));
    berth_scheduler_free(sched);
    berth_bus_unsubscribe(sub);
    berth_bus_free(bus);
}

static void
test_bad_spec(void)
{
    BerthScheduler *sched = berth_scheduler_new(1, 8, NULL);
    BerthJobSpec spec = { .struct_size = sizeof(BerthJobSpec), .object_kind = "domain" };
    g_autoptr(GError) error = NULL;

    g_assert_cmpuint(berth_scheduler_submit(sched, &spec, "test", NULL, NULL, NULL, &error), ==,
                     0);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    berth_scheduler_free(sched);
}

/* With no history a finished job is forgotten, and waiting for it still works. */
static void
test_no_history(void)
{
    BerthScheduler *sched = berth_scheduler_new(1, 0, NULL);
    g_autoptr(GPtrArray) list = NULL;
    guint64 id = submit(sched, BERTH_JOB_MODIFY, "web1", quick_job, NULL);

    berth_scheduler_wait(sched, id);
    g_assert_null(berth_scheduler_lookup(sched, id));
    list = berth_scheduler_list(sched);
    g_assert_cmpuint(list->len, ==, 0);
    berth_scheduler_free(sched);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/jobs/serialize-per-object", test_serialize_per_object);
    g_test_add_func("/core/jobs/parallel-across-objects", test_parallel_across_objects);
    g_test_add_func("/core/jobs/query-beside-modify", test_query_beside_modify);
    g_test_add_func("/core/jobs/query-when-workers-busy", test_query_when_workers_busy);
    g_test_add_func("/core/jobs/destroy-interrupts-modify", test_destroy_interrupts_modify);
    g_test_add_func("/core/jobs/destroy-cancels-modify-not-started",
                    test_destroy_cancels_modify_not_started);
    g_test_add_func("/core/jobs/timeout", test_timeout);
    g_test_add_func("/core/jobs/cancel-queued-and-running", test_cancel_queued_and_running);
    g_test_add_func("/core/jobs/list-lookup-history", test_list_lookup_history);
    g_test_add_func("/core/jobs/done-on-main-context", test_done_on_main_context);
    g_test_add_func("/core/jobs/finished-events", test_finished_events);
    g_test_add_func("/core/jobs/bad-spec", test_bad_spec);
    g_test_add_func("/core/jobs/no-history", test_no_history);
    return g_test_run();
}
