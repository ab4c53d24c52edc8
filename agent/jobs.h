/* The job scheduler: every action is a job with an id, serialized per object, on a thread pool. */
#pragma once

#include <berth/host.h>

#include "event-bus.h"

typedef struct BerthScheduler BerthScheduler;

typedef enum {
    BERTH_JOB_QUEUED = 0,
    BERTH_JOB_RUNNING,
    BERTH_JOB_COMPLETED,
    BERTH_JOB_FAILED,    /* the job's function returned FALSE */
    BERTH_JOB_CANCELLED, /* cancelled (job.cancel, or interrupted by a destroy) */
    BERTH_JOB_TIMED_OUT,
    BERTH_JOB_STATE_LAST
} BerthJobState;

/* Called on @done_ctx (the main context) once the job has finished, whatever its state. */
typedef void (*BerthJobDoneFunc)(BerthJob *job, gpointer data);

/* A scheduler with at most @max_workers threads for MODIFY and DESTROY jobs and as many again
 * for QUERY jobs (so that queries never wait behind modify jobs blocked on guests, as libvirt's
 * priority workers do); it keeps the last @history finished jobs for job.list/job.get. @bus
 * (may be NULL, else it outlives the scheduler) gets a "job-finished" event per finished job. */
BerthScheduler *berth_scheduler_new(guint max_workers, guint history, BerthBus *bus);
/* Cancels queued and running jobs, waits for the running ones to return, frees. Accepts
 * NULL. */
void berth_scheduler_free(BerthScheduler *sched);

/*
 * Queues a job. Rules per object (kind + name): QUERY jobs run at once, beside anything;
 * MODIFY jobs run one at a time in submission order; a DESTROY job cancels the cancellable of
 * the MODIFY job that runs (if any), then runs next, before other queued modify jobs; jobs on
 * different objects run in parallel (up to max_workers). @owner names who submitted it ("api",
 * or a plugin's name). Returns the id (> 0, increasing), or 0 with @error (then @spec->data
 * is not taken over). A timeout counts from the start of the function. @done is called on an
 * idle source of @done_ctx, or, when @done_ctx is NULL, in the thread that finished the job.
 * A job that was cancelled (job.cancel, a DESTROY, its timeout) ends cancelled (timed-out)
 * whatever its function returns.
 */
guint64 berth_scheduler_submit(BerthScheduler *sched, const BerthJobSpec *spec,
                               const char *owner, GMainContext *done_ctx,
                               BerthJobDoneFunc done, gpointer done_data, GError **error);
/* Cancels a queued or running job: a queued one ends at once (state cancelled); a running one
 * gets its cancellable cancelled and ends when its function returns. */
gboolean berth_scheduler_cancel(BerthScheduler *sched, guint64 id, GError **error);
/* A new reference to a known job (running, queued or in the history), or NULL. */
BerthJob *berth_scheduler_lookup(BerthScheduler *sched, guint64 id);
/* References to every queued, running and remembered job, by id. */
GPtrArray *berth_scheduler_list(BerthScheduler *sched);
/* Blocks until the job has finished, its job-finished event is published and its done
 * callback has run or been queued (for tests and for code outside the main context). Returns
 * at once for an unknown id. Never call it from a job on the same object. */
void berth_scheduler_wait(BerthScheduler *sched, guint64 id);

BerthJob *berth_job_ref(BerthJob *job);
void berth_job_unref(BerthJob *job);
guint64 berth_job_get_id(BerthJob *job);
BerthJobState berth_job_get_state(BerthJob *job);
const char *berth_job_state_name(BerthJobState state); /* "queued", "running", ... */
/* The error of a failed, cancelled or timed-out job, or NULL. */
const GError *berth_job_get_error(BerthJob *job);
GCancellable *berth_job_get_cancellable(BerthJob *job);
void berth_job_set_progress(BerthJob *job, guint percent, const char *message);
/* A result a method returns (JSON text, taken over), read with berth_job_get_result. */
void berth_job_set_result(BerthJob *job, char *result_json);
const char *berth_job_get_result(BerthJob *job);
/* {"id":N,"object":{"kind":..,"name":..},"kind":"modify","description":..,"owner":..,
 *  "state":..,"progress":N,"message":..,"created":..,"started":..,"finished":..,
 *  "error":{"name":..,"message":..}} as text (g_free it). */
char *berth_job_to_json(BerthJob *job);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthJob, berth_job_unref)
