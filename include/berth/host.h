/* BerthHost: the services the core offers to plugins (the only way a plugin reaches the core). */
#pragma once

#include <gio/gio.h>
#include <sys/types.h>

#include <berth/domain.h>
#include <berth/error.h>
#include <berth/event.h>

G_BEGIN_DECLS

/* The core's handle for one loaded plugin; the first argument of most host services. */
typedef struct BerthPluginHandle BerthPluginHandle;

/* A running job (see docs/architecture.md): an action with an id, on one object. */
typedef struct BerthJob BerthJob;

/**
 * BerthJobKind:
 * How a job relates to the other jobs on the same object: QUERY jobs run beside anything;
 * MODIFY jobs run one at a time, in submission order; a DESTROY job does not wait for a
 * running MODIFY job: it cancels that job's GCancellable (so a modify waiting on the guest
 * returns) and runs as soon as the modify has returned.
 */
typedef enum {
    BERTH_JOB_QUERY = 0,
    BERTH_JOB_MODIFY = 1,
    BERTH_JOB_DESTROY = 2,
    BERTH_JOB_KIND_LAST
} BerthJobKind;

/* The body of a job; runs on a worker thread. Return FALSE and set @error on failure. */
typedef gboolean (*BerthJobFunc)(BerthJob *job, gpointer data, GError **error);

/**
 * BerthJobSpec:
 * What berth_host->job_submit() needs. @object_kind/@object_name name the object the job
 * serializes on ("domain"/"web1", "nodedev"/"0000:06:12.5"); @description is shown in job lists
 * (e.g. "vfio.reset"). @timeout_ms 0 means no timeout; when it expires the job's cancellable
 * is cancelled and the job ends with BERTH_ERROR_TIMEOUT.
 */
typedef struct {
    gsize struct_size;
    const char *object_kind;
    const char *object_name;
    BerthJobKind kind;
    const char *description;
    guint timeout_ms;
    BerthJobFunc func;
    gpointer data;
    GDestroyNotify data_free;
} BerthJobSpec;

/* Called on the main context when a watched process has exited. @wait_status is the status
 * from waitid/waitpid when the process was berthd's child and has been reaped, or -1 when it was
 * not (after a berthd restart QEMU is no longer our child). */
typedef void (*BerthProcessExitFunc)(pid_t pid, int wait_status, gpointer data);

/**
 * BerthSpawnSpec:
 * A process to start. The child gets its own session, no inherited fds but @keep_fds (kept at
 * the same numbers, close-on-exec cleared), stdin from /dev/null, stdout and stderr appended
 * to @log_path (or /dev/null when NULL), the environment @envp (NULL: a minimal one with PATH,
 * HOME and LC_ALL=C), the working directory @cwd (NULL: "/").
 */
typedef struct {
    gsize struct_size;
    const char *const *argv;
    const char *const *envp;
    const char *cwd;
    const char *log_path;
    const int *keep_fds;
    guint n_keep_fds;
} BerthSpawnSpec;

/* A config key type, for BerthConfigKey. */
typedef enum {
    BERTH_CONFIG_STRING = 0,
    BERTH_CONFIG_INT = 1,     /* a 64-bit integer within [min, max] */
    BERTH_CONFIG_BOOL = 2,    /* true/false */
    BERTH_CONFIG_PATH = 3,    /* an absolute path */
    BERTH_CONFIG_STRV = 4,    /* a list, "a;b;c" in GKeyFile syntax */
    BERTH_CONFIG_TYPE_LAST
} BerthConfigType;

/**
 * BerthConfigKey:
 * One key of a plugin's [plugin.NAME] section, declared as data: the core validates the section
 * against the table (unknown keys, wrong types and out-of-range values are errors naming the
 * group and key), applies defaults and generates the berthd.conf(5) reference from @help.
 * A table ends with an entry whose @key is NULL.
 */
typedef struct {
    const char *key;
    BerthConfigType type;
    const char *default_value; /* as it would be written in the file; NULL = unset */
    gint64 min;                /* BERTH_CONFIG_INT only */
    gint64 max;                /* BERTH_CONFIG_INT only */
    const char *help;          /* one or two sentences */
} BerthConfigKey;

/**
 * BerthMethodFunc:
 * A JSON-RPC method a plugin adds (e.g. "nodedev.detach"). Runs as a job. @params_json is the
 * request's params (a JSON object as text, "{}" when absent). On success set *@result_json to a
 * JSON value as text (g_malloc'd; NULL means null).
 */
typedef gboolean (*BerthMethodFunc)(BerthJob *job, const char *params_json, char **result_json,
                                    gpointer data, GError **error);

/**
 * BerthMethodSpec:
 * A method registration. @modifies: refused on the read-only socket and for readonly TLS
 * identities. @object_kind and @object_param: the job serializes on the object named by the
 * string param @object_param (e.g. "address") of kind @object_kind; NULL @object_param means
 * the job runs on the agent object.
 */
typedef struct {
    gsize struct_size;
    const char *name;
    gboolean modifies;
    const char *object_kind;
    const char *object_param;
    BerthJobKind job_kind;
    BerthMethodFunc func;
    gpointer data;
} BerthMethodSpec;

/**
 * BerthHost:
 * The services table handed to a plugin's init(). Check @struct_size (or @abi_minor) before
 * using a member added after the minor version you were built for. Every function is safe to
 * call from any thread unless it says otherwise.
 */
typedef struct {
    gsize struct_size;
    guint32 abi_minor;

    /* Logs through berthd's structured log, tagged with the plugin's name. */
    void (*log)(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...)
        G_GNUC_PRINTF(3, 4);

    /* Publishes an event; returns its sequence number. Never blocks on subscribers. */
    guint64 (*event_publish)(BerthPluginHandle *self, const BerthEvent *event);

    /* Submits a job; returns its id (> 0), or 0 and @error. */
    guint64 (*job_submit)(BerthPluginHandle *self, const BerthJobSpec *spec, GError **error);
    /* Reports progress (0..100) and an optional short message for job listings. */
    void (*job_set_progress)(BerthJob *job, guint percent, const char *message);
    /* The job's cancellable: cancelled on job.cancel, on timeout, and by a DESTROY job. */
    GCancellable *(*job_get_cancellable)(BerthJob *job);
    /* The job's id. */
    guint64 (*job_get_id)(BerthJob *job);

    /* Starts a process (see BerthSpawnSpec). On success sets *@pid and *@pidfd (a pidfd, or -1
     * where the kernel has none) and returns TRUE. */
    gboolean (*process_spawn)(BerthPluginHandle *self, const BerthSpawnSpec *spec, pid_t *pid,
                              int *pidfd, GError **error);
    /* Watches a process on the main context and calls @func once when it exits. @pidfd may be
     * -1: the core opens one with pidfd_open, or polls when the kernel has none. The core takes
     * ownership of @pidfd. Returns a watch id (> 0), or 0 and @error (no such process). */
    guint (*process_watch)(BerthPluginHandle *self, pid_t pid, int pidfd,
                           BerthProcessExitFunc func, gpointer data, GError **error);
    /* Stops a watch before it fired. */
    void (*process_unwatch)(BerthPluginHandle *self, guint watch_id);

    /* The plugin's persistent state dir (created, 0700) and runtime dir. */
    const char *(*state_dir)(BerthPluginHandle *self);
    const char *(*run_dir)(BerthPluginHandle *self);

    /* The plugin's validated config section; defaults applied. Unknown keys cannot occur. */
    const char *(*config_get_string)(BerthPluginHandle *self, const char *key);
    gint64 (*config_get_int)(BerthPluginHandle *self, const char *key);
    gboolean (*config_get_bool)(BerthPluginHandle *self, const char *key);
    const char *const *(*config_get_strv)(BerthPluginHandle *self, const char *key);

    /* The main context: sockets and timers a plugin watches are attached here. Callbacks on it
     * must never block. */
    GMainContext *(*main_context)(BerthPluginHandle *self);

    /* Sets a domain's runtime state and reason (see domain.h); the core persists it and
     * publishes the matching lifecycle event. */
    void (*domain_set_state)(BerthPluginHandle *self, const char *domain_name,
                             BerthDomainState state, int reason);
    /* Writes this plugin's live status of a running domain (JSON object text) atomically to
     * the run dir; NULL removes it. Reloaded after a berthd restart with domain_load_status. */
    gboolean (*domain_save_status)(BerthPluginHandle *self, const char *domain_name,
                                   const char *status_json, GError **error);
    /* The saved status (g_free it), or NULL when none. */
    char *(*domain_load_status)(BerthPluginHandle *self, const char *domain_name);

    /* Cross-plugin calls that the hypervisor plugin makes: route to the loaded hostdev/fs
     * plugin. BERTH_ERROR_UNSUPPORTED when none is loaded. */
    gboolean (*hostdev_prepare)(BerthPluginHandle *self, BerthJob *job,
                                const BerthDomainDef *def, const BerthHostdevDef *hostdev,
                                GError **error);
    gboolean (*hostdev_release)(BerthPluginHandle *self, const BerthDomainDef *def,
                                const BerthHostdevDef *hostdev, GError **error);
    gboolean (*fs_share_start)(BerthPluginHandle *self, BerthJob *job, const BerthDomainDef *def,
                               const BerthFsDef *fs, char **socket_path, GError **error);
    gboolean (*fs_share_stop)(BerthPluginHandle *self, const BerthDomainDef *def,
                              const BerthFsDef *fs, GError **error);

    /* Adds a JSON-RPC method served by this plugin; call from init(). */
    gboolean (*method_register)(BerthPluginHandle *self, const BerthMethodSpec *spec,
                                GError **error);

    /* ABI 1.1 */
    /* A detached device's teardown is complete (see BerthHypervisorOps.device_detach): drops
     * the device with @alias from the live definition, then publishes device-removed
     * {"alias": ALIAS}. Any thread. Unknown aliases are ignored (and logged). */
    void (*domain_device_removed)(BerthPluginHandle *self, const char *domain_name,
                                  const char *alias);
} BerthHost;

G_END_DECLS
