/* The QEMU hypervisor plugin: each running domain is one qemu-system process. */
#include <berth/hypervisor.h>
#include <berth/json.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "caps.h"
#include "command.h"
#include "qmp.h"

/*
 * How it fits together (docs/qemu.md):
 * - Ops run in jobs on worker threads; QMP events and process exits arrive on berthd's main
 *   context. One lock (Qemu.lock) protects the table of VMs and every QemuVm field; Qemu.cond
 *   is broadcast whenever a VM's exit, stop or an unplug changes something a job waits for.
 * - A QEMU process is watched through its pidfd (host->process_watch). When it fires, the
 *   monitor's pending input is read first (the SHUTDOWN event QEMU sent before exiting says
 *   why it stopped), then the stop path runs on its own thread: close the monitor, release
 *   host devices and shares, remove the runtime dir, set the state shutoff. Jobs that stop a
 *   VM wait for that stop path, so that they return with the domain already shutoff.
 * - Nothing here judges death by kill(pid, 0) or /proc: a zombie still exists there.
 * - The lock is never held while calling into QMP or the core, and never while dropping the
 *   last reference of a BerthQmp (its callbacks take the lock).
 */

typedef struct Qemu Qemu;
typedef struct QemuVm QemuVm;

/* A host device a VM holds: a copy of its definition (the core's copy dies with the job). */
typedef struct {
    char *alias;
    BerthHostdevDef def;
} QemuHostdev;

/* A virtiofs share a VM uses, with the socket QEMU connects to. */
typedef struct {
    BerthFsDef def;  /* deep copy */
    char *socket;    /* the vhost-user socket */
    gboolean ours;   /* started through the fs plugin: stopped when the VM lets go */
} QemuFs;

/* A device_del under way. */
typedef struct {
    QemuVm *vm;
    char *alias;
    GPtrArray *calls;     /* BerthQmpCall: backends to remove after DEVICE_DELETED */
    QemuHostdev *hostdev; /* owned until released */
    QemuFs *fs;           /* owned until stopped */
    gboolean deleted;     /* DEVICE_DELETED came */
    gboolean abandoned;   /* the job stopped waiting: the event's handler does the teardown */
} QemuUnplug;

struct QemuVm {
    gint ref;
    Qemu *q;
    char *name;
    char *uuid;
    char *dir;            /* the runtime dir (qmp.sock) */
    char *qmp_path;
    char *log_path;
    char *binary;
    char *accel;
    BerthQemuCaps *caps;  /* for hotplug; may be NULL after a reconnect without cache */
    gboolean acpi_pci_hotplug;
    pid_t pid;
    guint watch;          /* the process watch (holds a reference), 0 once it fired */
    guint64 start_time;   /* /proc/PID/stat starttime: a recycled pid is never adopted */
    BerthQmp *qmp;
    BerthQemuLayout *layout;
    GPtrArray *hostdevs;  /* QemuHostdev */
    GPtrArray *fss;       /* QemuFs */
    GPtrArray *unplugs;   /* QemuUnplug */
    GCancellable *exit_cancel; /* cancelled when the process exits */
    BerthDomainState state;    /* as this plugin last set it */
    int reason;
    guint own_stop;       /* STOP events we caused and do not report */
    guint own_cont;       /* RESUME events likewise */
    gboolean starting;    /* the start job still runs: an exit now is a failed start */
    gboolean exited;      /* the pidfd fired */
    gboolean gone;        /* the stop path finished */
    gboolean destroying;  /* a destroy signalled it: reason destroyed */
    gboolean kill_pending; /* it outlived the kill ladder; finishes when it exits */
    gboolean shutdown_seen; /* QEMU reported SHUTDOWN (guest or powerdown) */
    gboolean panicked;    /* GUEST_PANICKED */
};

struct Qemu {
    BerthPluginHandle *self;
    const BerthHost *host;
    GMutex lock;
    GCond cond;
    GHashTable *vms; /* name -> QemuVm (a reference) */
    char *cache_dir; /* capabilities cache */
    char *log_dir;
};

#define QEMU_LOG(q, level, ...) (q)->host->log((q)->self, (level), __VA_ARGS__)

static gint64
cfg_int(Qemu *q, const char *key)
{
    return q->host->config_get_int(q->self, key);
}

/* ---- small copies of device definitions ---- */

static void
qemu_hostdev_free(gpointer p)
{
    QemuHostdev *h = p;

    if (h) {
        g_free(h->alias);
        g_free(h);
    }
}

static QemuHostdev *
qemu_hostdev_new(const BerthHostdevDef *src)
{
    QemuHostdev *h = g_new0(QemuHostdev, 1);

    h->def = *src;
    h->alias = g_strdup(src->alias);
    h->def.alias = h->alias;
    return h;
}

static void
qemu_fs_free(gpointer p)
{
    QemuFs *f = p;

    if (!f) {
        return;
    }
    g_free(f->def.alias);
    g_free(f->def.driver_type);
    g_free(f->def.source_dir);
    g_free(f->def.source_socket);
    g_free(f->def.target_dir);
    g_free(f->def.cache);
    g_free(f->socket);
    g_free(f);
}

static QemuFs *
qemu_fs_new(const BerthFsDef *src, const char *socket, gboolean ours)
{
    QemuFs *f = g_new0(QemuFs, 1);

    f->def = *src;
    f->def.alias = g_strdup(src->alias);
    f->def.driver_type = g_strdup(src->driver_type);
    f->def.source_dir = g_strdup(src->source_dir);
    f->def.source_socket = g_strdup(src->source_socket);
    f->def.target_dir = g_strdup(src->target_dir);
    f->def.cache = g_strdup(src->cache);
    f->socket = g_strdup(socket);
    f->ours = ours;
    return f;
}

static void
unplug_free(gpointer p)
{
    QemuUnplug *u = p;

    g_free(u->alias);
    if (u->calls) {
        g_ptr_array_unref(u->calls);
    }
    qemu_hostdev_free(u->hostdev);
    qemu_fs_free(u->fs);
    g_free(u);
}

/* ---- VMs ---- */

static QemuVm *
vm_new(Qemu *q, const BerthDomainDef *def)
{
    QemuVm *vm = g_new0(QemuVm, 1);

    vm->ref = 1;
    vm->q = q;
    vm->name = g_strdup(def->name);
    vm->uuid = g_strdup(def->uuid);
    vm->hostdevs = g_ptr_array_new_with_free_func(qemu_hostdev_free);
    vm->fss = g_ptr_array_new_with_free_func(qemu_fs_free);
    vm->unplugs = g_ptr_array_new_with_free_func(unplug_free);
    vm->exit_cancel = g_cancellable_new();
    return vm;
}

static QemuVm *
vm_ref(QemuVm *vm)
{
    g_atomic_int_inc(&vm->ref);
    return vm;
}

static void
vm_unref(QemuVm *vm)
{
    if (!vm || !g_atomic_int_dec_and_test(&vm->ref)) {
        return;
    }
    if (vm->qmp) {
        berth_qmp_unref(vm->qmp);
    }
    if (vm->caps) {
        berth_qemu_caps_unref(vm->caps);
    }
    if (vm->layout) {
        berth_qemu_layout_free(vm->layout);
    }
    g_ptr_array_unref(vm->hostdevs);
    g_ptr_array_unref(vm->fss);
    g_ptr_array_unref(vm->unplugs);
    g_object_unref(vm->exit_cancel);
    g_free(vm->name);
    g_free(vm->uuid);
    g_free(vm->dir);
    g_free(vm->qmp_path);
    g_free(vm->log_path);
    g_free(vm->binary);
    g_free(vm->accel);
    g_free(vm);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QemuVm, vm_unref)

/* The VM of @name (a new reference), or NULL. */
static QemuVm *
vm_lookup(Qemu *q, const char *name)
{
    QemuVm *vm;

    g_mutex_lock(&q->lock);
    vm = g_hash_table_lookup(q->vms, name);
    if (vm) {
        vm_ref(vm);
    }
    g_mutex_unlock(&q->lock);
    return vm;
}

static gboolean
no_process(const char *name, GError **error)
{
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                "domain '%s' has no QEMU process", name);
    return FALSE;
}

/* A definition that names only the domain, for the release calls after the job's copy died. */
static BerthDomainDef
shell_def(QemuVm *vm)
{
    BerthDomainDef d = { .struct_size = sizeof(d) };

    d.name = vm->name;
    d.uuid = vm->uuid;
    return d;
}

static void
release_hostdev(QemuVm *vm, QemuHostdev *h)
{
    Qemu *q = vm->q;
    BerthDomainDef shell = shell_def(vm);
    g_autoptr(GError) error = NULL;

    if (!q->host->hostdev_release(q->self, &shell, &h->def, &error)) {
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': releasing host device %s: %s", vm->name,
                 h->alias, error->message);
    }
}

static void
stop_fs(QemuVm *vm, QemuFs *f)
{
    Qemu *q = vm->q;
    BerthDomainDef shell = shell_def(vm);
    g_autoptr(GError) error = NULL;

    if (f->ours && !q->host->fs_share_stop(q->self, &shell, &f->def, &error)) {
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': stopping the share %s: %s", vm->name,
                 f->def.alias, error->message);
    }
}

/* Releases everything the VM holds (host devices, shares, also those of pending unplugs).
 * Only once the process is gone (or never ran). */
static void
vm_release_resources(QemuVm *vm)
{
    Qemu *q = vm->q;
    g_autoptr(GPtrArray) hostdevs = g_ptr_array_new_with_free_func(qemu_hostdev_free);
    g_autoptr(GPtrArray) fss = g_ptr_array_new_with_free_func(qemu_fs_free);

    g_mutex_lock(&q->lock);
    while (vm->hostdevs->len) {
        g_ptr_array_add(hostdevs, g_ptr_array_steal_index(vm->hostdevs, 0));
    }
    while (vm->fss->len) {
        g_ptr_array_add(fss, g_ptr_array_steal_index(vm->fss, 0));
    }
    for (guint i = 0; i < vm->unplugs->len; i++) {
        QemuUnplug *u = vm->unplugs->pdata[i];

        if (u->hostdev) {
            g_ptr_array_add(hostdevs, g_steal_pointer(&u->hostdev));
        }
        if (u->fs) {
            g_ptr_array_add(fss, g_steal_pointer(&u->fs));
        }
    }
    g_mutex_unlock(&q->lock);
    for (guint i = 0; i < hostdevs->len; i++) {
        release_hostdev(vm, hostdevs->pdata[i]);
    }
    for (guint i = 0; i < fss->len; i++) {
        stop_fs(vm, fss->pdata[i]);
    }
}

static void
remove_run_dir(QemuVm *vm)
{
    if (!vm->dir) {
        return;
    }
    if (vm->qmp_path) {
        unlink(vm->qmp_path);
    }
    if (rmdir(vm->dir) < 0 && errno != ENOENT) {
        QEMU_LOG(vm->q, G_LOG_LEVEL_INFO, "domain '%s': cannot remove %s: %s", vm->name,
                 vm->dir, g_strerror(errno));
    }
}

/* The live status (JSON text) of @vm. Under the lock. */
static char *
vm_status_json_locked(QemuVm *vm)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    g_autofree char *layout = vm->layout ? berth_qemu_layout_to_json(vm->layout) : NULL;

    yajl_gen_map_open(g);
    berth_json_kv_int(g, "pid", vm->pid);
    berth_json_kv_int(g, "start_time", (long long) vm->start_time);
    berth_json_kv_str(g, "qmp", vm->qmp_path);
    berth_json_kv_str(g, "dir", vm->dir);
    berth_json_kv_str(g, "log", vm->log_path);
    berth_json_kv_str(g, "binary", vm->binary);
    berth_json_kv_str(g, "accel", vm->accel);
    berth_json_kv_bool(g, "acpi_pci_hotplug", vm->acpi_pci_hotplug);
    berth_json_kv_int(g, "state", vm->state);
    berth_json_kv_int(g, "reason", vm->reason);
    berth_json_kv_bool(g, "kill_pending", vm->kill_pending);
    berth_json_kv_str(g, "layout", layout);
    berth_json_str(g, "fs");
    yajl_gen_array_open(g);
    for (guint i = 0; i < vm->fss->len; i++) {
        QemuFs *f = vm->fss->pdata[i];

        yajl_gen_map_open(g);
        berth_json_kv_str(g, "alias", f->def.alias);
        berth_json_kv_str(g, "socket", f->socket);
        berth_json_kv_bool(g, "ours", f->ours);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    return berth_json_finish(g);
}

static void
vm_save_status(QemuVm *vm)
{
    Qemu *q = vm->q;
    g_autofree char *json = NULL;
    g_autoptr(GError) error = NULL;

    g_mutex_lock(&q->lock);
    if (vm->exited) {
        g_mutex_unlock(&q->lock);
        return;
    }
    json = vm_status_json_locked(vm);
    g_mutex_unlock(&q->lock);
    if (!q->host->domain_save_status(q->self, vm->name, json, &error)) {
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': saving its status: %s", vm->name,
                 error->message);
    }
}

/* Sets the domain's state through the core and remembers it (saved with the status). */
static void
vm_set_state(QemuVm *vm, BerthDomainState state, int reason)
{
    Qemu *q = vm->q;

    g_mutex_lock(&q->lock);
    vm->state = state;
    vm->reason = reason;
    g_mutex_unlock(&q->lock);
    q->host->domain_set_state(q->self, vm->name, state, reason);
    if (state != BERTH_DOMAIN_SHUTOFF) {
        vm_save_status(vm);
    }
}

/* Waits until @field of @vm is TRUE or @ms passed (< 0: no limit) or @cancel fires. Under the
 * lock; returns the field. */
static gboolean
vm_wait_locked(QemuVm *vm, const gboolean *field, gint64 ms, GCancellable *cancel)
{
    Qemu *q = vm->q;
    gint64 end = ms < 0 ? G_MAXINT64 : g_get_monotonic_time() + ms * 1000;

    while (!*field && g_get_monotonic_time() < end) {
        if (cancel && g_cancellable_is_cancelled(cancel)) {
            break;
        }
        /* Wake now and then for the cancellable (it does not signal the cond). */
        g_cond_wait_until(&q->cond, &q->lock, MIN(end, g_get_monotonic_time() + 50000));
    }
    return *field;
}

static gboolean
vm_wait(QemuVm *vm, const gboolean *field, gint64 ms, GCancellable *cancel)
{
    gboolean r;

    g_mutex_lock(&vm->q->lock);
    r = vm_wait_locked(vm, field, ms, cancel);
    g_mutex_unlock(&vm->q->lock);
    return r;
}

/* Runs one QMP command on @vm's monitor. */
static gboolean
vm_qmp(QemuVm *vm, BerthJob *job, const char *command, const char *args, char **ret,
       char **error_class, GError **error)
{
    Qemu *q = vm->q;
    BerthQmp *qmp = NULL;
    gboolean ok;

    g_mutex_lock(&q->lock);
    if (vm->qmp) {
        qmp = berth_qmp_ref(vm->qmp);
    }
    g_mutex_unlock(&q->lock);
    if (!qmp) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "domain '%s': its QEMU monitor is not connected", vm->name);
        return FALSE;
    }
    ok = berth_qmp_command(qmp, command, args, (guint) cfg_int(q, "command_timeout_ms"),
                           job ? q->host->job_get_cancellable(job) : NULL, ret, error_class,
                           error);
    berth_qmp_unref(qmp);
    return ok;
}

/* ---- the stop path ---- */

static int
exit_reason_locked(QemuVm *vm)
{
    if (vm->destroying) {
        return vm->panicked ? BERTH_SHUTOFF_CRASHED : BERTH_SHUTOFF_DESTROYED;
    }
    if (vm->panicked) {
        return BERTH_SHUTOFF_CRASHED;
    }
    return vm->shutdown_seen ? BERTH_SHUTOFF_SHUTDOWN : BERTH_SHUTOFF_CRASHED;
}

static gpointer
vm_stop_thread(gpointer data)
{
    QemuVm *vm = data;
    Qemu *q = vm->q;
    BerthQmp *qmp;
    gboolean starting;
    int reason;

    g_mutex_lock(&q->lock);
    qmp = g_steal_pointer(&vm->qmp);
    starting = vm->starting;
    reason = exit_reason_locked(vm);
    g_mutex_unlock(&q->lock);
    if (qmp) {
        berth_qmp_close(qmp);
        berth_qmp_unref(qmp);
    }
    /* Only now, with QEMU gone, are its host devices and shares free for others. */
    vm_release_resources(vm);
    remove_run_dir(vm);
    if (!starting) {
        QEMU_LOG(q, G_LOG_LEVEL_MESSAGE, "domain '%s': QEMU (pid %d) has exited (%s)",
                 vm->name, (int) vm->pid,
                 reason == BERTH_SHUTOFF_SHUTDOWN    ? "shutdown"
                 : reason == BERTH_SHUTOFF_DESTROYED ? "destroyed"
                                                     : "crashed");
        vm_set_state(vm, BERTH_DOMAIN_SHUTOFF, reason);
    }
    g_mutex_lock(&q->lock);
    vm->gone = TRUE;
    if (g_hash_table_lookup(q->vms, vm->name) == vm) {
        g_hash_table_remove(q->vms, vm->name);
    }
    g_cond_broadcast(&q->cond);
    g_mutex_unlock(&q->lock);
    vm_unref(vm);
    return NULL;
}

/* The pidfd fired: QEMU has exited (main context). Holds the watch's reference. */
static void
vm_exited(pid_t pid, int wait_status, gpointer data)
{
    QemuVm *vm = data;
    Qemu *q = vm->q;
    BerthQmp *qmp = NULL;

    g_mutex_lock(&q->lock);
    if (vm->qmp) {
        qmp = berth_qmp_ref(vm->qmp);
    }
    g_mutex_unlock(&q->lock);
    if (qmp) {
        /* What QEMU wrote before it went (SHUTDOWN says why). */
        berth_qmp_flush_input(qmp);
        berth_qmp_unref(qmp);
    }
    g_mutex_lock(&q->lock);
    vm->exited = TRUE;
    vm->watch = 0;
    g_cond_broadcast(&q->cond);
    g_mutex_unlock(&q->lock);
    g_cancellable_cancel(vm->exit_cancel);
    if (wait_status != -1 && !vm->destroying) {
        QEMU_LOG(q, G_LOG_LEVEL_INFO, "domain '%s': QEMU pid %d wait status 0x%x", vm->name,
                 (int) pid, wait_status);
    }
    /* Releasing host devices may block (sysfs): never on the main context. */
    g_thread_unref(g_thread_new("qemu-stop", vm_stop_thread, data));
}

/* ---- QMP events (main context) ---- */

static gpointer unplug_teardown_thread(gpointer data);

/* Members of a parsed JSON object (QMP data, the saved status); NULL/@def when absent. */
static const char *
obj_string(yajl_val root, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(root, path, yajl_t_string);

    return v ? YAJL_GET_STRING(v) : NULL;
}

static gint64
obj_int(yajl_val root, const char *key, gint64 def)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(root, path, yajl_t_number);

    return v && YAJL_IS_INTEGER(v) ? YAJL_GET_INTEGER(v) : def;
}

static gboolean
obj_bool(yajl_val root, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(root, path, yajl_t_any);

    return v && YAJL_IS_TRUE(v);
}

/* The string member @key of the JSON object text @json (g_free), or NULL. */
static char *
json_get_string(const char *json, const char *key)
{
    yajl_val root = yajl_tree_parse(json, NULL, 0);
    char *s = root ? g_strdup(obj_string(root, key)) : NULL;

    yajl_tree_free(root);
    return s;
}

static void
on_device_deleted(QemuVm *vm, const char *data_json)
{
    Qemu *q = vm->q;
    g_autofree char *alias = json_get_string(data_json, "device");
    QemuUnplug *found = NULL;

    if (!alias) {
        return; /* a backend-only node (path without device id) */
    }
    g_mutex_lock(&q->lock);
    for (guint i = 0; i < vm->unplugs->len; i++) {
        QemuUnplug *u = vm->unplugs->pdata[i];

        if (!u->deleted && strcmp(u->alias, alias) == 0) {
            found = u;
            break;
        }
    }
    if (found) {
        found->deleted = TRUE;
        g_cond_broadcast(&q->cond);
        if (found->abandoned) {
            vm_ref(vm);
            g_thread_unref(g_thread_new("qemu-unplug", unplug_teardown_thread, found));
        }
    }
    g_mutex_unlock(&q->lock);
    if (!found) {
        QEMU_LOG(q, G_LOG_LEVEL_INFO, "domain '%s': DEVICE_DELETED for %s, which no detach "
                 "asked for", vm->name, alias);
    }
}

static void
on_qmp_event(BerthQmp *qmp, const char *event, const char *data_json, gint64 timestamp_us,
             gpointer user_data)
{
    QemuVm *vm = user_data;
    Qemu *q = vm->q;
    gboolean report = FALSE;

    QEMU_LOG(q, G_LOG_LEVEL_DEBUG, "domain '%s': event %s %s", vm->name, event, data_json);
    if (strcmp(event, "SHUTDOWN") == 0) {
        g_mutex_lock(&q->lock);
        vm->shutdown_seen = TRUE;
        report = !vm->destroying && !vm->starting;
        g_mutex_unlock(&q->lock);
        if (report) {
            vm_set_state(vm, BERTH_DOMAIN_SHUTDOWN, BERTH_SHUTDOWN_USER);
        }
    } else if (strcmp(event, "STOP") == 0) {
        g_mutex_lock(&q->lock);
        if (vm->own_stop) {
            vm->own_stop--;
        } else {
            report = !vm->destroying && !vm->shutdown_seen && !vm->starting;
        }
        g_mutex_unlock(&q->lock);
        if (report) {
            vm_set_state(vm, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_UNKNOWN);
        }
    } else if (strcmp(event, "RESUME") == 0) {
        g_mutex_lock(&q->lock);
        if (vm->own_cont) {
            vm->own_cont--;
        } else {
            report = !vm->destroying && !vm->shutdown_seen && !vm->starting;
        }
        g_mutex_unlock(&q->lock);
        if (report) {
            vm_set_state(vm, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_UNPAUSED);
        }
    } else if (strcmp(event, "RESET") == 0) {
        BerthEvent ev = {
            .struct_size = sizeof(ev),
            .object_kind = "domain",
            .object_name = vm->name,
            .type = "domain-rebooted",
            .detail_json = data_json,
        };

        q->host->event_publish(q->self, &ev);
    } else if (strcmp(event, "DEVICE_DELETED") == 0) {
        on_device_deleted(vm, data_json);
    } else if (strcmp(event, "GUEST_PANICKED") == 0) {
        pid_t pid;

        g_mutex_lock(&q->lock);
        vm->panicked = TRUE;
        vm->destroying = TRUE;
        pid = vm->exited ? 0 : vm->pid;
        g_mutex_unlock(&q->lock);
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': the guest panicked: %s", vm->name,
                 data_json);
        vm_set_state(vm, BERTH_DOMAIN_CRASHED, BERTH_CRASHED_PANICKED);
        if (pid > 0) {
            kill(pid, SIGKILL);
        }
    }
}

static void
on_qmp_closed(BerthQmp *qmp, const GError *reason, gpointer user_data)
{
    QemuVm *vm = user_data;

    QEMU_LOG(vm->q, G_LOG_LEVEL_INFO, "domain '%s': monitor closed: %s", vm->name,
             reason ? reason->message : "closed");
}

/* ---- helpers for start ---- */

/* Field 22 of /proc/PID/stat (clock ticks after boot), or 0. */
static guint64
process_start_time(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
    g_autofree char *text = NULL;
    const char *p;
    guint64 value = 0;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    p = strrchr(text, ')');
    if (!p) {
        return 0;
    }
    p++;
    /* After the comm: field 3 (state) is the first; starttime is field 22. */
    for (int field = 3; field < 22 && p; field++) {
        p = strchr(p + 1, ' ');
    }
    if (p) {
        value = g_ascii_strtoull(p + 1, NULL, 10);
    }
    return value;
}

static int
pidfd_open_compat(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int) syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

static const char *
emulator_of(Qemu *q, const BerthDomainDef *def)
{
    return def->emulator ? def->emulator : q->host->config_get_string(q->self, "emulator");
}

/* The last lines QEMU wrote to its log from @offset on (for start errors). */
static char *
log_tail(const char *path, goffset offset)
{
    g_autofree char *text = NULL;
    gsize len = 0;
    const char *start;
    g_autoptr(GString) out = g_string_new(NULL);
    g_auto(GStrv) lines = NULL;
    guint n;

    if (!g_file_get_contents(path, &text, &len, NULL) || (gsize) offset >= len) {
        return g_strdup("");
    }
    start = text + offset;
    lines = g_strsplit(g_strstrip((char *) start), "\n", -1);
    n = g_strv_length(lines);
    for (guint i = n > 5 ? n - 5 : 0; i < n; i++) {
        if (out->len) {
            g_string_append(out, " | ");
        }
        g_string_append(out, lines[i]);
    }
    return g_string_free(g_steal_pointer(&out), FALSE);
}

/* Appends a header to the domain's log; returns the offset QEMU's own output starts at. */
static goffset
log_header(const char *path, const char *name, const char *const *argv)
{
    g_autoptr(GDateTime) now = g_date_time_new_now_local();
    g_autofree char *stamp = g_date_time_format(now, "%Y-%m-%d %H:%M:%S");
    g_autofree char *cmd = g_strjoinv(" ", (char **) argv);
    FILE *f = fopen(path, "ae");
    goffset off = 0;

    if (!f) {
        return 0;
    }
    fprintf(f, "%s: starting domain %s\n%s\n", stamp, name, cmd);
    fflush(f);
    off = ftello(f);
    fclose(f);
    return off;
}

/* Kills a VM whose start failed and waits for its stop path. */
static void
abort_started_vm(QemuVm *vm)
{
    g_mutex_lock(&vm->q->lock);
    vm->destroying = TRUE;
    if (!vm->exited) {
        kill(vm->pid, SIGKILL);
    }
    if (!vm_wait_locked(vm, &vm->gone, 30000, NULL)) {
        QEMU_LOG(vm->q, G_LOG_LEVEL_WARNING,
                 "domain '%s': QEMU pid %d did not exit after a failed start", vm->name,
                 (int) vm->pid);
    }
    g_mutex_unlock(&vm->q->lock);
}

/* ---- ops ---- */

static gboolean
qemu_validate(gpointer priv, const BerthDomainDef *def, GError **error)
{
    Qemu *q = priv;
    g_autoptr(BerthQemuCaps) caps = NULL;

    caps = berth_qemu_caps_get(emulator_of(q, def), q->cache_dir,
                               q->host->main_context(q->self), error);
    return caps && berth_qemu_check_domain_caps(def, caps, error);
}

/* Prepares host devices and shares for @def into @vm's lists; on failure releases them. */
static gboolean
prepare_devices(Qemu *q, QemuVm *vm, BerthJob *job, const BerthDomainDef *def,
                char ***fs_sockets, GError **error)
{
    g_autoptr(GPtrArray) socks = g_ptr_array_new_with_free_func(g_free);

    for (guint i = 0; i < def->n_hostdevs; i++) {
        if (!q->host->hostdev_prepare(q->self, job, def, def->hostdevs[i], error)) {
            vm_release_resources(vm);
            return FALSE;
        }
        g_mutex_lock(&q->lock);
        g_ptr_array_add(vm->hostdevs, qemu_hostdev_new(def->hostdevs[i]));
        g_mutex_unlock(&q->lock);
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        const BerthFsDef *f = def->filesystems[i];
        g_autofree char *sock = NULL;
        gboolean ours = FALSE;

        if (f->source_socket) {
            sock = g_strdup(f->source_socket);
        } else if (q->host->fs_share_start(q->self, job, def, f, &sock, error)) {
            ours = TRUE;
        } else {
            vm_release_resources(vm);
            return FALSE;
        }
        g_mutex_lock(&q->lock);
        g_ptr_array_add(vm->fss, qemu_fs_new(f, sock, ours));
        g_mutex_unlock(&q->lock);
        g_ptr_array_add(socks, g_steal_pointer(&sock));
    }
    g_ptr_array_add(socks, NULL);
    *fs_sockets = (char **) g_ptr_array_free(g_steal_pointer(&socks), FALSE);
    return TRUE;
}

static gboolean
qemu_start(gpointer priv, BerthJob *job, const BerthDomainDef *def, guint flags,
           GError **error)
{
    Qemu *q = priv;
    GCancellable *job_cancel = q->host->job_get_cancellable(job);
    g_autoptr(QemuVm) vm = NULL;
    g_autoptr(QemuVm) old = NULL;
    g_autoptr(BerthQemuCaps) caps = NULL;
    g_autoptr(BerthQemuLayout) layout = NULL;
    g_autoptr(GError) local = NULL;
    g_auto(GStrv) argv = NULL;
    char **fs_sockets = NULL;
    BerthQemuCmdOpts opts = { 0 };
    BerthSpawnSpec spec = { .struct_size = sizeof(spec) };
    g_autoptr(BerthQmp) qmp = NULL;
    gulong cancel_link = 0;
    goffset log_off;
    pid_t pid;
    int pidfd = -1;
    gboolean paused = (flags & BERTH_START_PAUSED) != 0;

    /* A VM of the same name whose stop path is still finishing: let it finish. */
    old = vm_lookup(q, def->name);
    if (old) {
        if (!vm_wait(old, &old->gone, 5000, job_cancel)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                        "domain '%s' still has a QEMU process (pid %d)", def->name,
                        (int) old->pid);
            return FALSE;
        }
    }
    caps = berth_qemu_caps_get(emulator_of(q, def), q->cache_dir,
                               q->host->main_context(q->self), error);
    if (!caps) {
        return FALSE;
    }
    vm = vm_new(q, def);
    vm->binary = g_strdup(caps->binary);
    vm->accel = g_strdup(berth_qemu_domain_accel(def));
    vm->caps = berth_qemu_caps_ref(caps);
    vm->acpi_pci_hotplug = q->host->config_get_bool(q->self, "acpi_pci_hotplug");
    vm->dir = g_build_filename(q->host->run_dir(q->self), def->name, NULL);
    vm->qmp_path = g_build_filename(vm->dir, "qmp.sock", NULL);
    vm->log_path = g_strdup_printf("%s/%s.log", q->log_dir, def->name);
    vm->starting = TRUE;

    layout = berth_qemu_layout_new(def, (guint) cfg_int(q, "hotplug_ports"), error);
    if (!layout) {
        return FALSE;
    }
    if (g_mkdir_with_parents(vm->dir, 0700) < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "cannot create %s: %s", vm->dir, g_strerror(errno));
        return FALSE;
    }
    unlink(vm->qmp_path);
    if (!prepare_devices(q, vm, job, def, &fs_sockets, error)) {
        remove_run_dir(vm);
        return FALSE;
    }
    opts.binary = vm->binary;
    opts.accel = vm->accel;
    opts.qmp_socket = vm->qmp_path;
    opts.run_dir = vm->dir;
    opts.fs_sockets = (const char *const *) fs_sockets;
    opts.acpi_pci_hotplug = vm->acpi_pci_hotplug;
    opts.caps = caps;
    argv = berth_qemu_build_argv(def, layout, &opts, error);
    g_strfreev(fs_sockets);
    if (!argv) {
        vm_release_resources(vm);
        remove_run_dir(vm);
        return FALSE;
    }
    log_off = log_header(vm->log_path, def->name, (const char *const *) argv);
    spec.argv = (const char *const *) argv;
    spec.log_path = vm->log_path;
    spec.cwd = vm->dir;
    if (!q->host->process_spawn(q->self, &spec, &pid, &pidfd, error)) {
        vm_release_resources(vm);
        remove_run_dir(vm);
        return FALSE;
    }
    vm->pid = pid;
    vm->start_time = process_start_time(pid);
    vm->layout = g_steal_pointer(&layout);
    g_mutex_lock(&q->lock);
    g_hash_table_replace(q->vms, vm->name, vm_ref(vm));
    g_mutex_unlock(&q->lock);
    vm->watch = q->host->process_watch(q->self, pid, pidfd, vm_exited, vm_ref(vm), &local);
    if (!vm->watch) {
        /* Cannot happen with a pidfd from the spawn; if it does, do not leave QEMU behind. */
        vm_unref(vm);
        kill(pid, SIGKILL);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "domain '%s': cannot watch QEMU pid %d: %s", def->name, (int) pid,
                    local->message);
        g_mutex_lock(&q->lock);
        g_hash_table_remove(q->vms, vm->name);
        g_mutex_unlock(&q->lock);
        vm_release_resources(vm);
        return FALSE;
    }

    /* The monitor: a death of QEMU, or a cancelled job, ends the wait at once. */
    if (job_cancel) {
        cancel_link = g_cancellable_connect(job_cancel, G_CALLBACK(g_cancellable_cancel),
                                            g_object_ref(vm->exit_cancel), g_object_unref);
    }
    qmp = berth_qmp_new(q->host->main_context(q->self), on_qmp_event, on_qmp_closed, vm);
    if (!berth_qmp_connect(qmp, vm->qmp_path, (guint) cfg_int(q, "connect_timeout_ms"),
                           vm->exit_cancel, &local)) {
        g_autofree char *tail = NULL;

        if (job_cancel) {
            g_cancellable_disconnect(job_cancel, cancel_link);
        }
        g_clear_pointer(&qmp, berth_qmp_unref);
        abort_started_vm(vm);
        tail = log_tail(vm->log_path, log_off);
        if (g_cancellable_is_cancelled(job_cancel)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED,
                        "the start of domain '%s' was cancelled", def->name);
        } else {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "QEMU of domain '%s' failed to start: %s", def->name,
                        *tail ? tail : local->message);
        }
        return FALSE;
    }
    if (job_cancel) {
        g_cancellable_disconnect(job_cancel, cancel_link);
    }
    g_mutex_lock(&q->lock);
    vm->qmp = berth_qmp_ref(qmp);
    g_mutex_unlock(&q->lock);
    vm_save_status(vm);

    if (!paused) {
        g_mutex_lock(&q->lock);
        vm->own_cont++;
        g_mutex_unlock(&q->lock);
        if (!vm_qmp(vm, job, "cont", NULL, NULL, NULL, &local)) {
            g_autofree char *tail = NULL;

            abort_started_vm(vm);
            tail = log_tail(vm->log_path, log_off);
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "QEMU of domain '%s' did not start its CPUs: %s%s%s", def->name,
                        local->message, *tail ? ": " : "", tail);
            return FALSE;
        }
    }
    g_mutex_lock(&q->lock);
    vm->starting = FALSE;
    if (vm->exited) {
        /* It died right after cont: the stop path treats it as a failed start. */
        g_mutex_unlock(&q->lock);
        abort_started_vm(vm);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU of domain '%s' exited while starting", def->name);
        return FALSE;
    }
    g_mutex_unlock(&q->lock);
    QEMU_LOG(q, G_LOG_LEVEL_MESSAGE, "domain '%s': QEMU pid %d running (%s)%s", def->name,
             (int) pid, vm->accel, paused ? ", paused" : "");
    if (paused) {
        vm_set_state(vm, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_USER);
    } else {
        vm_set_state(vm, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_BOOTED);
    }
    return TRUE;
}

/* SIGTERM, wait, SIGKILL, wait (plus time per host device). TRUE when the process exited
 * and its stop path finished; FALSE when it outlived the ladder (state shutdown/destroyed,
 * finished later by the pidfd). */
static gboolean
destroy_vm(Qemu *q, QemuVm *vm)
{
    guint n_hostdevs;
    gint64 kill_wait;

    g_mutex_lock(&q->lock);
    if (vm->kill_pending && !vm->exited) {
        g_mutex_unlock(&q->lock);
        return FALSE;
    }
    vm->destroying = TRUE;
    n_hostdevs = vm->hostdevs->len;
    if (!vm->exited) {
        kill(vm->pid, SIGTERM);
        if (!vm_wait_locked(vm, &vm->exited, cfg_int(q, "term_wait_ms"), NULL)) {
            QEMU_LOG(q, G_LOG_LEVEL_INFO, "domain '%s': QEMU pid %d ignored SIGTERM; SIGKILL",
                     vm->name, (int) vm->pid);
            kill(vm->pid, SIGKILL);
            kill_wait = cfg_int(q, "kill_wait_ms") +
                        (gint64) n_hostdevs * cfg_int(q, "hostdev_kill_extra_ms");
            if (!vm_wait_locked(vm, &vm->exited, kill_wait, NULL)) {
                vm->kill_pending = TRUE;
                g_mutex_unlock(&q->lock);
                QEMU_LOG(q, G_LOG_LEVEL_WARNING,
                         "domain '%s': QEMU pid %d is still there %" G_GINT64_FORMAT
                         " ms after SIGKILL; the domain stays in state shutdown until it exits",
                         vm->name, (int) vm->pid, kill_wait);
                return FALSE;
            }
        }
    }
    vm_wait_locked(vm, &vm->gone, -1, NULL);
    g_mutex_unlock(&q->lock);
    return TRUE;
}

static gboolean
qemu_destroy(gpointer priv, BerthJob *job, const BerthDomainDef *def, guint flags,
             GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);

    if (!vm) {
        /* Nothing runs (a failed reconnect, say): the domain is simply off. */
        q->host->domain_set_state(q->self, def->name, BERTH_DOMAIN_SHUTOFF,
                                  BERTH_SHUTOFF_DESTROYED);
        return TRUE;
    }
    if (!destroy_vm(q, vm)) {
        vm_set_state(vm, BERTH_DOMAIN_SHUTDOWN, BERTH_SHUTDOWN_DESTROYED);
    }
    return TRUE;
}

static gboolean
qemu_shutdown(gpointer priv, BerthJob *job, const BerthDomainDef *def, guint flags,
              GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);
    GCancellable *cancel = q->host->job_get_cancellable(job);
    gint64 wait_ms = cfg_int(q, "shutdown_timeout_ms");
    g_autoptr(GError) local = NULL;

    if (!vm) {
        return no_process(def->name, error);
    }
    if (!vm_qmp(vm, job, "system_powerdown", NULL, NULL, NULL, &local) &&
        !vm_wait(vm, &vm->exited, 0, NULL)) {
        if (!(flags & BERTH_SHUTDOWN_FORCE)) {
            g_propagate_error(error, g_steal_pointer(&local));
            return FALSE;
        }
    } else if (vm_wait(vm, &vm->exited, wait_ms ? wait_ms : -1, cancel)) {
        vm_wait(vm, &vm->gone, -1, NULL);
        return TRUE;
    }
    if (flags & BERTH_SHUTDOWN_FORCE) {
        QEMU_LOG(q, G_LOG_LEVEL_MESSAGE, "domain '%s' did not shut down: destroying it",
                 def->name);
        if (!destroy_vm(q, vm)) {
            vm_set_state(vm, BERTH_DOMAIN_SHUTDOWN, BERTH_SHUTDOWN_DESTROYED);
        }
        return TRUE;
    }
    if (g_cancellable_is_cancelled(cancel)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED,
                    "the shutdown of domain '%s' was interrupted", def->name);
    } else {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                    "domain '%s' did not shut down within %" G_GINT64_FORMAT " ms", def->name,
                    wait_ms);
    }
    return FALSE;
}

static gboolean
qemu_suspend(gpointer priv, BerthJob *job, const BerthDomainDef *def, GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);

    if (!vm) {
        return no_process(def->name, error);
    }
    g_mutex_lock(&q->lock);
    vm->own_stop++;
    g_mutex_unlock(&q->lock);
    if (!vm_qmp(vm, job, "stop", NULL, NULL, NULL, error)) {
        g_mutex_lock(&q->lock);
        vm->own_stop--;
        g_mutex_unlock(&q->lock);
        return FALSE;
    }
    vm_set_state(vm, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_USER);
    return TRUE;
}

static gboolean
qemu_resume(gpointer priv, BerthJob *job, const BerthDomainDef *def, GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);

    if (!vm) {
        return no_process(def->name, error);
    }
    g_mutex_lock(&q->lock);
    vm->own_cont++;
    g_mutex_unlock(&q->lock);
    if (!vm_qmp(vm, job, "cont", NULL, NULL, NULL, error)) {
        g_mutex_lock(&q->lock);
        vm->own_cont--;
        g_mutex_unlock(&q->lock);
        return FALSE;
    }
    vm_set_state(vm, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_UNPAUSED);
    return TRUE;
}

static gboolean
qemu_reboot(gpointer priv, BerthJob *job, const BerthDomainDef *def, GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);

    if (!vm) {
        return no_process(def->name, error);
    }
    return vm_qmp(vm, job, "system_reset", NULL, NULL, NULL, error);
}

/* ---- reconnect ---- */

/* Rebuilds the VM's lists from the live definition and the saved status. */
static void
reconnect_lists(QemuVm *vm, const BerthDomainDef *def, yajl_val status)
{
    const char *path[] = {"fs", NULL};
    yajl_val fs = yajl_tree_get(status, path, yajl_t_array);

    for (guint i = 0; i < def->n_hostdevs; i++) {
        g_ptr_array_add(vm->hostdevs, qemu_hostdev_new(def->hostdevs[i]));
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        const BerthFsDef *f = def->filesystems[i];
        const char *sock = f->source_socket;
        gboolean ours = FALSE;

        for (size_t k = 0; fs && YAJL_IS_ARRAY(fs) && k < fs->u.array.len; k++) {
            yajl_val e = fs->u.array.values[k];

            if (g_strcmp0(obj_string(e, "alias"), f->alias) == 0) {
                sock = obj_string(e, "socket");
                ours = obj_bool(e, "ours");
            }
        }
        g_ptr_array_add(vm->fss, qemu_fs_new(f, sock, ours));
    }
}

/* QEMU died while berthd was away: release what it held and report it. */
static gboolean
reconnect_dead(Qemu *q, QemuVm *vm, const char *why)
{
    /* A destroy that was waiting for it has its answer; anything else died on its own. */
    int reason = vm->kill_pending ? BERTH_SHUTOFF_DESTROYED : BERTH_SHUTOFF_CRASHED;

    QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': %s; it is shut off (%s)", vm->name, why,
             vm->kill_pending ? "destroyed" : "crashed");
    vm_release_resources(vm);
    remove_run_dir(vm);
    vm_set_state(vm, BERTH_DOMAIN_SHUTOFF, reason);
    return TRUE;
}

static gboolean
qemu_reconnect(gpointer priv, const BerthDomainDef *def, GError **error)
{
    Qemu *q = priv;
    g_autofree char *status = q->host->domain_load_status(q->self, def->name);
    g_autoptr(QemuVm) vm = vm_new(q, def);
    g_autoptr(GError) local = NULL;
    g_autofree char *reply = NULL;
    g_autofree char *qstatus = NULL;
    g_autoptr(BerthQmp) qmp = NULL;
    yajl_val qreply;
    yajl_val root;
    const char *layout_json;
    int pidfd;
    BerthDomainState saved_state;
    gboolean running;

    if (!status) {
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': no saved QEMU status; shut off",
                 def->name);
        q->host->domain_set_state(q->self, def->name, BERTH_DOMAIN_SHUTOFF,
                                  BERTH_SHUTOFF_UNKNOWN);
        return TRUE;
    }
    root = yajl_tree_parse(status, NULL, 0);
    if (!root || !YAJL_IS_OBJECT(root) || obj_int(root, "pid", 0) <= 0 ||
        !obj_string(root, "qmp")) {
        yajl_tree_free(root);
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': its saved QEMU status is unreadable; "
                 "shut off", def->name);
        q->host->domain_set_state(q->self, def->name, BERTH_DOMAIN_SHUTOFF,
                                  BERTH_SHUTOFF_UNKNOWN);
        return TRUE;
    }
    vm->pid = (pid_t) obj_int(root, "pid", 0);
    vm->start_time = (guint64) obj_int(root, "start_time", 0);
    vm->qmp_path = g_strdup(obj_string(root, "qmp"));
    vm->dir = g_strdup(obj_string(root, "dir"));
    vm->log_path = g_strdup(obj_string(root, "log"));
    vm->binary = g_strdup(obj_string(root, "binary"));
    vm->accel = g_strdup(obj_string(root, "accel"));
    vm->acpi_pci_hotplug = obj_bool(root, "acpi_pci_hotplug");
    saved_state = (BerthDomainState) obj_int(root, "state", BERTH_DOMAIN_RUNNING);
    vm->state = saved_state;
    vm->reason = (int) obj_int(root, "reason", 0);
    vm->kill_pending = obj_bool(root, "kill_pending");
    vm->destroying = vm->kill_pending;
    layout_json = obj_string(root, "layout");
    if (layout_json) {
        vm->layout = berth_qemu_layout_from_json(layout_json, &local);
        if (!vm->layout) {
            QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': saved layout: %s", def->name,
                     local->message);
            g_clear_error(&local);
        }
    }
    reconnect_lists(vm, def, root);
    yajl_tree_free(root);
    if (!vm->layout) {
        vm->layout = berth_qemu_layout_new(def, (guint) cfg_int(q, "hotplug_ports"), NULL);
    }
    if (vm->binary) {
        vm->caps = berth_qemu_caps_get(vm->binary, q->cache_dir, NULL, NULL);
    }

    pidfd = pidfd_open_compat(vm->pid);
    if (pidfd < 0 && errno != ENOSYS) {
        return reconnect_dead(q, vm, "its QEMU process is gone");
    }
    if (process_start_time(vm->pid) != vm->start_time) {
        if (pidfd >= 0) {
            close(pidfd);
        }
        return reconnect_dead(q, vm, "its QEMU process is gone (the pid belongs to another "
                                     "process now)");
    }
    g_mutex_lock(&q->lock);
    g_hash_table_replace(q->vms, vm->name, vm_ref(vm));
    g_mutex_unlock(&q->lock);
    vm->watch = q->host->process_watch(q->self, vm->pid, pidfd, vm_exited, vm_ref(vm), &local);
    if (!vm->watch) {
        vm_unref(vm);
        g_mutex_lock(&q->lock);
        g_hash_table_remove(q->vms, vm->name);
        g_mutex_unlock(&q->lock);
        return reconnect_dead(q, vm, local->message);
    }
    if (vm->kill_pending) {
        /* A destroy is still waiting for this one: the pidfd finishes it. */
        QEMU_LOG(q, G_LOG_LEVEL_MESSAGE, "domain '%s': waiting for QEMU pid %d to exit",
                 def->name, (int) vm->pid);
        return TRUE;
    }
    qmp = berth_qmp_new(q->host->main_context(q->self), on_qmp_event, on_qmp_closed, vm);
    if (!berth_qmp_connect(qmp, vm->qmp_path, (guint) cfg_int(q, "connect_timeout_ms"),
                           vm->exit_cancel, &local)) {
        if (vm_wait(vm, &vm->exited, 0, NULL)) {
            return TRUE; /* the stop path reports it */
        }
        /* A QEMU we cannot control is worse than none. */
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': cannot reconnect to the monitor of "
                 "QEMU pid %d (%s); destroying it", def->name, (int) vm->pid, local->message);
        if (!destroy_vm(q, vm)) {
            vm_set_state(vm, BERTH_DOMAIN_SHUTDOWN, BERTH_SHUTDOWN_DESTROYED);
        }
        return TRUE;
    }
    g_mutex_lock(&q->lock);
    vm->qmp = berth_qmp_ref(qmp);
    g_mutex_unlock(&q->lock);
    if (!vm_qmp(vm, NULL, "query-status", NULL, &reply, NULL, &local)) {
        QEMU_LOG(q, G_LOG_LEVEL_WARNING, "domain '%s': query-status: %s", def->name,
                 local->message);
        return TRUE;
    }
    qreply = yajl_tree_parse(reply ? reply : "{}", NULL, 0);
    running = qreply && obj_bool(qreply, "running");
    qstatus = qreply ? g_strdup(obj_string(qreply, "status")) : NULL;
    yajl_tree_free(qreply);
    if (g_strcmp0(qstatus, "shutdown") == 0) {
        g_mutex_lock(&q->lock);
        vm->shutdown_seen = TRUE;
        g_mutex_unlock(&q->lock);
        vm_set_state(vm, BERTH_DOMAIN_SHUTDOWN, BERTH_SHUTDOWN_USER);
    } else if (running && saved_state != BERTH_DOMAIN_RUNNING) {
        vm_set_state(vm, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_UNPAUSED);
    } else if (!running && saved_state != BERTH_DOMAIN_PAUSED) {
        vm_set_state(vm, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_UNKNOWN);
    } else {
        q->host->domain_set_state(q->self, def->name, saved_state, vm->reason);
    }
    QEMU_LOG(q, G_LOG_LEVEL_MESSAGE, "domain '%s': reconnected to QEMU pid %d (%s)", def->name,
             (int) vm->pid, qstatus ? qstatus : "?");
    return TRUE;
}

/* ---- hotplug ---- */

static void
run_calls(QemuVm *vm, BerthJob *job, GPtrArray *calls, const char *why)
{
    for (guint i = 0; calls && i < calls->len; i++) {
        BerthQmpCall *c = calls->pdata[i];
        g_autoptr(GError) error = NULL;

        if (!vm_qmp(vm, job, c->command, c->args_json, NULL, NULL, &error)) {
            QEMU_LOG(vm->q, G_LOG_LEVEL_WARNING, "domain '%s': %s: %s: %s", vm->name, why,
                     c->command, error->message);
        }
    }
}

static gboolean
qemu_device_attach(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                   BerthDeviceDef *dev, GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);
    const char *alias = berth_qemu_device_alias(dev);
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;
    g_autofree char *fs_socket = NULL;
    QemuHostdev *hostdev = NULL;
    QemuFs *fs = NULL;
    BerthQemuCmdOpts opts = { 0 };
    gboolean ok;

    if (!vm) {
        return no_process(def->name, error);
    }
    if (!alias) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "domain '%s': this kind of device cannot be hot-plugged", def->name);
        return FALSE;
    }
    if (dev->type == BERTH_DEVICE_HOSTDEV) {
        if (!q->host->hostdev_prepare(q->self, job, def, dev->u.hostdev, error)) {
            return FALSE;
        }
        hostdev = qemu_hostdev_new(dev->u.hostdev);
    } else if (dev->type == BERTH_DEVICE_FS) {
        if (dev->u.fs->source_socket) {
            fs = qemu_fs_new(dev->u.fs, dev->u.fs->source_socket, FALSE);
        } else if (q->host->fs_share_start(q->self, job, def, dev->u.fs, &fs_socket, error)) {
            fs = qemu_fs_new(dev->u.fs, fs_socket, TRUE);
        } else {
            return FALSE;
        }
    }
    opts.binary = vm->binary;
    opts.accel = vm->accel;
    opts.qmp_socket = vm->qmp_path;
    opts.run_dir = vm->dir;
    opts.acpi_pci_hotplug = vm->acpi_pci_hotplug;
    opts.caps = vm->caps;
    g_mutex_lock(&q->lock);
    ok = vm->layout && !vm->exited && berth_qemu_layout_attach(vm->layout, dev, error);
    if (ok) {
        ok = berth_qemu_hotplug_calls(def, vm->layout, dev, &opts, fs ? fs->socket : NULL,
                                      &calls, &rollback, error);
        if (!ok) {
            berth_qemu_layout_detach(vm->layout, alias);
        }
    } else if (!vm->layout || vm->exited) {
        no_process(def->name, error);
    }
    g_mutex_unlock(&q->lock);
    for (guint i = 0; ok && i < calls->len; i++) {
        BerthQmpCall *c = calls->pdata[i];

        if (!vm_qmp(vm, job, c->command, c->args_json, NULL, NULL, error)) {
            g_prefix_error(error, "hot-plugging %s: ", alias);
            run_calls(vm, NULL, rollback, "rolling back a hot-plug");
            g_mutex_lock(&q->lock);
            berth_qemu_layout_detach(vm->layout, alias);
            g_mutex_unlock(&q->lock);
            ok = FALSE;
        }
    }
    if (!ok) {
        if (hostdev) {
            release_hostdev(vm, hostdev);
        }
        if (fs) {
            stop_fs(vm, fs);
        }
        qemu_hostdev_free(hostdev);
        qemu_fs_free(fs);
        return FALSE;
    }
    g_mutex_lock(&q->lock);
    if (hostdev) {
        g_ptr_array_add(vm->hostdevs, hostdev);
    }
    if (fs) {
        g_ptr_array_add(vm->fss, fs);
    }
    g_mutex_unlock(&q->lock);
    vm_save_status(vm);
    QEMU_LOG(q, G_LOG_LEVEL_INFO, "domain '%s': %s hot-plugged", def->name, alias);
    return TRUE;
}

/* After DEVICE_DELETED: remove the backends, release, then tell the core. Any thread but the
 * main context. Frees @u. */
static void
unplug_teardown(QemuVm *vm, QemuUnplug *u)
{
    Qemu *q = vm->q;
    QemuHostdev *hostdev;
    QemuFs *fs;
    g_autofree char *alias = g_strdup(u->alias);

    run_calls(vm, NULL, u->calls, "removing the backends of an unplugged device");
    g_mutex_lock(&q->lock);
    hostdev = g_steal_pointer(&u->hostdev);
    fs = g_steal_pointer(&u->fs);
    g_mutex_unlock(&q->lock);
    if (hostdev) {
        release_hostdev(vm, hostdev);
        qemu_hostdev_free(hostdev);
    }
    if (fs) {
        stop_fs(vm, fs);
        qemu_fs_free(fs);
    }
    g_mutex_lock(&q->lock);
    if (vm->layout) {
        berth_qemu_layout_detach(vm->layout, alias);
    }
    g_ptr_array_remove(vm->unplugs, u);
    g_mutex_unlock(&q->lock);
    vm_save_status(vm);
    QEMU_LOG(q, G_LOG_LEVEL_INFO, "domain '%s': %s removed", vm->name, alias);
    q->host->domain_device_removed(q->self, vm->name, alias);
}

static gpointer
unplug_teardown_thread(gpointer data)
{
    QemuUnplug *u = data;
    QemuVm *vm = u->vm;

    unplug_teardown(vm, u);
    vm_unref(vm);
    return NULL;
}

static gboolean
qemu_device_detach(gpointer priv, BerthJob *job, const BerthDomainDef *def, const char *alias,
                   GError **error)
{
    Qemu *q = priv;
    g_autoptr(QemuVm) vm = vm_lookup(q, def->name);
    GCancellable *cancel = q->host->job_get_cancellable(job);
    g_autofree char *args = NULL;
    g_autofree char *eclass = NULL;
    g_autoptr(GError) local = NULL;
    QemuUnplug *u;
    yajl_gen g;

    /* The core has checked that @alias is a disk, interface, share or hostdev of @def. */
    if (!vm) {
        return no_process(def->name, error);
    }
    u = g_new0(QemuUnplug, 1);
    u->vm = vm;
    u->alias = g_strdup(alias);
    u->calls = berth_qemu_unplug_calls(def, alias);
    g_mutex_lock(&q->lock);
    for (guint i = 0; i < vm->unplugs->len; i++) {
        if (strcmp(((QemuUnplug *) vm->unplugs->pdata[i])->alias, alias) == 0) {
            g_mutex_unlock(&q->lock);
            unplug_free(u);
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_BUSY,
                        "domain '%s': device '%s' is already being removed", def->name, alias);
            return FALSE;
        }
    }
    for (guint i = 0; i < vm->hostdevs->len; i++) {
        if (strcmp(((QemuHostdev *) vm->hostdevs->pdata[i])->alias, alias) == 0) {
            u->hostdev = g_ptr_array_steal_index(vm->hostdevs, i);
            break;
        }
    }
    for (guint i = 0; i < vm->fss->len; i++) {
        if (g_strcmp0(((QemuFs *) vm->fss->pdata[i])->def.alias, alias) == 0) {
            u->fs = g_ptr_array_steal_index(vm->fss, i);
            break;
        }
    }
    g_ptr_array_add(vm->unplugs, u);
    g_mutex_unlock(&q->lock);

    g = yajl_gen_alloc(NULL);
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "id", alias);
    yajl_gen_map_close(g);
    args = berth_json_finish(g);
    if (!vm_qmp(vm, job, "device_del", args, NULL, &eclass, &local)) {
        /* Nothing is under way: the device stays, with what it holds. */
        g_mutex_lock(&q->lock);
        if (u->hostdev) {
            g_ptr_array_add(vm->hostdevs, g_steal_pointer(&u->hostdev));
        }
        if (u->fs) {
            g_ptr_array_add(vm->fss, g_steal_pointer(&u->fs));
        }
        g_ptr_array_remove(vm->unplugs, u);
        g_mutex_unlock(&q->lock);
        if (strstr(local->message, "in the process of unplug") ||
            strstr(local->message, "busy")) {
            /* QEMU >= 6.2: the guest has not answered an earlier request yet. Retryable. */
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_BUSY,
                        "domain '%s': device '%s' is busy being unplugged; try again: %s",
                        def->name, alias, local->message);
        } else {
            g_propagate_error(error, g_steal_pointer(&local));
        }
        return FALSE;
    }
    g_mutex_lock(&q->lock);
    vm_wait_locked(vm, &u->deleted, cfg_int(q, "detach_timeout_ms"), cancel);
    if (u->deleted) {
        g_mutex_unlock(&q->lock);
        unplug_teardown(vm, u);
        return TRUE;
    }
    if (vm->exited) {
        /* The domain stopped meanwhile; its stop path releases what the device held. */
        g_mutex_unlock(&q->lock);
        return TRUE;
    }
    u->abandoned = TRUE;
    g_mutex_unlock(&q->lock);
    QEMU_LOG(q, G_LOG_LEVEL_MESSAGE, "domain '%s': %s: removal in progress (no DEVICE_DELETED "
             "within %" G_GINT64_FORMAT " ms)", def->name, alias,
             cfg_int(q, "detach_timeout_ms"));
    return TRUE;
}

/* ---- plugin ---- */

static gboolean
qemu_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    Qemu *q = g_new0(Qemu, 1);
    const char *log_dir;

    q->self = self;
    q->host = host;
    g_mutex_init(&q->lock);
    g_cond_init(&q->cond);
    q->vms = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify) vm_unref);
    q->cache_dir = g_build_filename(host->state_dir(self), "caps", NULL);
    log_dir = host->config_get_string(self, "log_dir");
    q->log_dir = log_dir && *log_dir ? g_strdup(log_dir)
                                     : g_build_filename(host->state_dir(self), "log", NULL);
    if (g_mkdir_with_parents(q->cache_dir, 0700) < 0 ||
        g_mkdir_with_parents(q->log_dir, 0700) < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "qemu: cannot create %s or %s: %s", q->cache_dir, q->log_dir,
                    g_strerror(errno));
        g_hash_table_unref(q->vms);
        g_free(q->cache_dir);
        g_free(q->log_dir);
        g_free(q);
        return FALSE;
    }
    *priv = q;
    return TRUE;
}

static void
qemu_shutdown_plugin(gpointer priv)
{
    Qemu *q = priv;
    g_autoptr(GPtrArray) qmps = g_ptr_array_new_with_free_func((GDestroyNotify) berth_qmp_unref);
    GHashTableIter it;
    gpointer v;

    /* QEMU keeps running when berthd stops; a new berthd reconnects. */
    g_mutex_lock(&q->lock);
    g_hash_table_iter_init(&it, q->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        QemuVm *vm = v;

        if (vm->qmp) {
            g_ptr_array_add(qmps, g_steal_pointer(&vm->qmp));
        }
    }
    g_mutex_unlock(&q->lock);
    g_clear_pointer(&qmps, g_ptr_array_unref);
    /* On the main thread, as the watches: none can fire meanwhile. */
    g_hash_table_iter_init(&it, q->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        QemuVm *vm = v;

        if (vm->watch) {
            q->host->process_unwatch(q->self, vm->watch);
            vm->watch = 0;
            vm_unref(vm);
        }
    }
    g_hash_table_unref(q->vms);
    g_free(q->cache_dir);
    g_free(q->log_dir);
    g_cond_clear(&q->cond);
    g_mutex_clear(&q->lock);
    g_free(q);
}

static const BerthConfigKey qemu_keys[] = {
    {"emulator", BERTH_CONFIG_STRING, "qemu-system-x86_64", 0, 0,
     "The QEMU binary for domains without <emulator>: a path, or a name looked up in PATH."},
    {"hotplug_ports", BERTH_CONFIG_INT, "4", 0, 32,
     "Empty pcie-root-ports a q35 domain gets for hot-plugging devices."},
    {"acpi_pci_hotplug", BERTH_CONFIG_BOOL, "false", 0, 0,
     "Keep q35's ACPI PCI hotplug. false: native PCIe hotplug on the root ports, which unplugs "
     "without the guest's ACPI support (and without a guest OS)."},
    {"connect_timeout_ms", BERTH_CONFIG_INT, "30000", 100, 600000,
     "How long a start waits for QEMU's monitor socket."},
    {"command_timeout_ms", BERTH_CONFIG_INT, "10000", 100, 600000,
     "How long one QMP command waits for its reply."},
    {"shutdown_timeout_ms", BERTH_CONFIG_INT, "60000", 0, 86400000,
     "How long domain.shutdown waits for the guest when the call gives no timeout "
     "(0: until the call's timeout or a destroy)."},
    {"term_wait_ms", BERTH_CONFIG_INT, "10000", 0, 600000,
     "How long a destroy waits after SIGTERM before it sends SIGKILL."},
    {"kill_wait_ms", BERTH_CONFIG_INT, "5000", 0, 600000,
     "How long a destroy waits after SIGKILL; a process still there then keeps the domain in "
     "state shutdown (destroyed) until it exits."},
    {"hostdev_kill_extra_ms", BERTH_CONFIG_INT, "2000", 0, 600000,
     "Extra wait after SIGKILL per assigned host device (device reset takes time)."},
    {"detach_timeout_ms", BERTH_CONFIG_INT, "5000", 0, 600000,
     "How long domain.detach_device waits for QEMU's DEVICE_DELETED before it reports "
     "'removal in progress'."},
    {"log_dir", BERTH_CONFIG_PATH, NULL, 0, 0,
     "Where each domain's QEMU output goes (NAME.log). Default: STATE_DIR/plugins/qemu/log."},
    {NULL},
};

static const BerthHypervisorOps qemu_ops = {
    .struct_size = sizeof(BerthHypervisorOps),
    .domain_validate = qemu_validate,
    .domain_start = qemu_start,
    .domain_shutdown = qemu_shutdown,
    .domain_destroy = qemu_destroy,
    .domain_suspend = qemu_suspend,
    .domain_resume = qemu_resume,
    .domain_reboot = qemu_reboot,
    .domain_reconnect = qemu_reconnect,
    .device_detach = qemu_device_detach,
    .device_attach = qemu_device_attach,
};

static const BerthPlugin qemu_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "qemu",
    .version = "1.0",
    .description = "QEMU/KVM virtual machines (qemu-system-x86_64, QMP, pidfd)",
    .kind = BERTH_PLUGIN_HYPERVISOR,
    .config_keys = qemu_keys,
    .init = qemu_init,
    .shutdown = qemu_shutdown_plugin,
    .ops = &qemu_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &qemu_plugin;
}
