/* Test plugin "testhv": a hypervisor whose "VMs" are real sleep processes, for core tests. */
#include <berth/hypervisor.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * Every VM is a `sleep` process spawned and watched through the host services (so the core's
 * pidfd path is what the tests exercise). Config keys make it misbehave on purpose: slow
 * starts, failing starts, a guest that ignores shutdown. Every call is appended to the
 * `record` file, one line each ("start web1"), so tests can check what the core asked for.
 */

/* A host device the VM holds: a copy of its definition (the core's copy dies with the job). */
typedef struct {
    char *alias;
    BerthHostdevDef def;
} TestHostdev;

typedef struct {
    char *name;
    char *uuid;
    GPtrArray *hostdevs; /* TestHostdev, prepared through the hostdev plugin */
    pid_t pid;
    int pidfd;
    guint watch;
    gboolean exited;
    int stop_reason;   /* shutoff reason to report when the process exits; 0 = crashed */
} TestVm;

typedef struct {
    BerthPluginHandle *self;
    const BerthHost *host;
    GMutex lock;       /* protects @vms and every TestVm in it */
    GCond exited;      /* signalled when a VM's process exit was handled */
    GHashTable *vms;   /* name -> TestVm */
} TestHv;

static void
record(TestHv *hv, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static void
record(TestHv *hv, const char *fmt, ...)
{
    const char *path = hv->host->config_get_string(hv->self, "record");
    g_autofree char *line = NULL;
    va_list ap;
    FILE *f;

    if (!path || !*path) {
        return;
    }
    va_start(ap, fmt);
    line = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    f = fopen(path, "a");
    if (f) {
        fprintf(f, "%s\n", line);
        fclose(f);
    }
}

static void
test_hostdev_free(gpointer p)
{
    TestHostdev *h = p;

    g_free(h->alias);
    g_free(h);
}

static TestHostdev *
test_hostdev_new(const BerthHostdevDef *src)
{
    TestHostdev *h = g_new0(TestHostdev, 1);

    h->def = *src;
    h->alias = g_strdup(src->alias);
    h->def.alias = h->alias;
    return h;
}

/* Copies of the first @n host devices of @def. */
static GPtrArray *
hostdev_copies(const BerthDomainDef *def, guint n)
{
    GPtrArray *a = g_ptr_array_new_with_free_func(test_hostdev_free);

    for (guint i = 0; i < n && i < def->n_hostdevs; i++) {
        g_ptr_array_add(a, test_hostdev_new(def->hostdevs[i]));
    }
    return a;
}

static TestVm *
vm_new(const BerthDomainDef *def, pid_t pid)
{
    TestVm *vm = g_new0(TestVm, 1);

    vm->name = g_strdup(def->name);
    vm->uuid = g_strdup(def->uuid);
    vm->pid = pid;
    vm->hostdevs = hostdev_copies(def, def->n_hostdevs);
    return vm;
}

/* Releases host devices through the hostdev plugin; @name/@uuid make the definition it sees. */
static void
release_hostdevs(TestHv *hv, const char *name, const char *uuid, GPtrArray *hostdevs)
{
    BerthDomainDef shell = { .struct_size = sizeof(shell) };

    shell.name = (char *) name;
    shell.uuid = (char *) uuid;
    for (guint i = 0; hostdevs && i < hostdevs->len; i++) {
        TestHostdev *h = hostdevs->pdata[i];
        g_autoptr(GError) error = NULL;

        record(hv, "release %s %s", name, h->alias);
        if (!hv->host->hostdev_release(hv->self, &shell, &h->def, &error)) {
            hv->host->log(hv->self, G_LOG_LEVEL_WARNING, "releasing %s of %s: %s", h->alias,
                          name, error->message);
        }
    }
}

static void
vm_free(gpointer p)
{
    TestVm *vm = p;

    g_free(vm->name);
    g_free(vm->uuid);
    g_ptr_array_unref(vm->hostdevs);
    g_free(vm);
}

/* Waits @ms or until the job is cancelled; FALSE with a cancelled error then. */
static gboolean
wait_cancellable(BerthJob *job, const BerthHost *host, gint64 ms, GError **error)
{
    GCancellable *c = host->job_get_cancellable(job);
    gint64 end = g_get_monotonic_time() + ms * 1000;

    while (ms < 0 || g_get_monotonic_time() < end) {
        if (g_cancellable_set_error_if_cancelled(c, error)) {
            return FALSE;
        }
        g_usleep(2000);
    }
    return TRUE;
}

static void
vm_exited(pid_t pid, int status, gpointer data)
{
    TestHv *hv = data;
    TestVm *vm = NULL;
    GHashTableIter it;
    gpointer v;
    int reason = BERTH_SHUTOFF_CRASHED;
    g_autofree char *name = NULL;
    g_autofree char *uuid = NULL;
    g_autoptr(GPtrArray) hostdevs = NULL;

    g_mutex_lock(&hv->lock);
    g_hash_table_iter_init(&it, hv->vms);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (((TestVm *) v)->pid == pid) {
            vm = v;
            break;
        }
    }
    if (vm) {
        reason = vm->stop_reason ? vm->stop_reason : BERTH_SHUTOFF_CRASHED;
        name = g_strdup(vm->name);
        uuid = g_strdup(vm->uuid);
        hostdevs = g_steal_pointer(&vm->hostdevs);
        vm->hostdevs = g_ptr_array_new_with_free_func(test_hostdev_free);
    }
    g_mutex_unlock(&hv->lock);
    if (!name) {
        return;
    }
    /* The process is gone: only now are its host devices free for others. */
    release_hostdevs(hv, name, uuid, hostdevs);
    /* The state first: a destroy or shutdown job waiting in stop_vm() returns only after the
     * domain is shutoff, as the QEMU plugin's do. */
    record(hv, "exited %s status=%d", name, status);
    hv->host->domain_set_state(hv->self, name, BERTH_DOMAIN_SHUTOFF, reason);
    g_mutex_lock(&hv->lock);
    if (g_hash_table_lookup(hv->vms, name) == vm) {
        g_hash_table_remove(hv->vms, name);
    }
    g_cond_broadcast(&hv->exited);
    g_mutex_unlock(&hv->lock);
}

static gboolean
testhv_start(gpointer priv, BerthJob *job, const BerthDomainDef *def, guint flags,
             GError **error)
{
    TestHv *hv = priv;
    g_autofree char *sleep_bin = g_find_program_in_path("sleep");
    g_autofree char *log = NULL;
    g_autofree char *status = NULL;
    const char *argv[] = { sleep_bin, "100000", NULL };
    BerthSpawnSpec spec = { .struct_size = sizeof(spec), .argv = argv };
    TestVm *vm;
    pid_t pid;
    int pidfd;

    record(hv, "start %s", def->name);
    if (!wait_cancellable(job, hv->host, hv->host->config_get_int(hv->self, "start_delay_ms"),
                          error)) {
        return FALSE;
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        record(hv, "prepare %s %s", def->name, def->hostdevs[i]->alias);
        if (!hv->host->hostdev_prepare(hv->self, job, def, def->hostdevs[i], error)) {
            g_autoptr(GPtrArray) done = hostdev_copies(def, i);

            release_hostdevs(hv, def->name, def->uuid, done);
            return FALSE;
        }
    }
    if (hv->host->config_get_bool(hv->self, "fail_start")) {
        g_autoptr(GPtrArray) all = hostdev_copies(def, def->n_hostdevs);

        release_hostdevs(hv, def->name, def->uuid, all);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "testhv: starting domain '%s' failed on purpose", def->name);
        return FALSE;
    }
    log = g_strdup_printf("%s/%s.log", hv->host->run_dir(hv->self), def->name);
    spec.log_path = log;
    if (!sleep_bin || !hv->host->process_spawn(hv->self, &spec, &pid, &pidfd, error)) {
        g_autoptr(GPtrArray) all = hostdev_copies(def, def->n_hostdevs);

        release_hostdevs(hv, def->name, def->uuid, all);
        if (!sleep_bin) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, "testhv: no sleep");
        }
        return FALSE;
    }
    vm = vm_new(def, pid);
    /* Under the lock: vm_exited (main context) cannot look for the VM before it is complete. */
    g_mutex_lock(&hv->lock);
    g_hash_table_replace(hv->vms, vm->name, vm);
    vm->watch = hv->host->process_watch(hv->self, pid, pidfd, vm_exited, hv, error);
    g_mutex_unlock(&hv->lock);
    status = g_strdup_printf("{\"pid\":%d}", (int) pid);
    hv->host->domain_save_status(hv->self, def->name, status, NULL);
    if (flags & BERTH_START_PAUSED) {
        kill(pid, SIGSTOP);
        hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_PAUSED,
                                   BERTH_PAUSED_USER);
    } else {
        hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_RUNNING,
                                   BERTH_RUNNING_BOOTED);
    }
    return TRUE;
}

/* Sends @sig and waits until vm_exited() ran for the VM, up to @ms. */
static gboolean
stop_vm(TestHv *hv, const char *name, int sig, int reason, gint64 ms, GError **error)
{
    gint64 end = g_get_monotonic_time() + ms * 1000;
    TestVm *vm;
    pid_t pid;

    g_mutex_lock(&hv->lock);
    vm = g_hash_table_lookup(hv->vms, name);
    if (!vm) {
        g_mutex_unlock(&hv->lock);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "testhv: domain '%s' has no process", name);
        return FALSE;
    }
    vm->stop_reason = reason;
    pid = vm->pid;
    kill(pid, SIGCONT);
    kill(pid, sig);
    while (g_hash_table_lookup(hv->vms, name) == vm) {
        if (!g_cond_wait_until(&hv->exited, &hv->lock, end)) {
            g_mutex_unlock(&hv->lock);
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                        "testhv: process %d of domain '%s' did not exit", (int) pid, name);
            return FALSE;
        }
    }
    g_mutex_unlock(&hv->lock);
    return TRUE;
}

static gboolean
testhv_shutdown(gpointer priv, BerthJob *job, const BerthDomainDef *def, guint flags,
                GError **error)
{
    TestHv *hv = priv;

    record(hv, "shutdown %s", def->name);
    if (hv->host->config_get_bool(hv->self, "hang_shutdown")) {
        /* A guest that ignores the power button: only a destroy or a timeout ends this. */
        hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_SHUTDOWN,
                                   BERTH_SHUTDOWN_USER);
        if (!wait_cancellable(job, hv->host, -1, error)) {
            record(hv, "shutdown-interrupted %s", def->name);
            return FALSE;
        }
    }
    return stop_vm(hv, def->name, SIGTERM, BERTH_SHUTOFF_SHUTDOWN, 5000, error);
}

static gboolean
testhv_destroy(gpointer priv, BerthJob *job, const BerthDomainDef *def, guint flags,
               GError **error)
{
    TestHv *hv = priv;

    record(hv, "destroy %s", def->name);
    return stop_vm(hv, def->name, SIGKILL, BERTH_SHUTOFF_DESTROYED, 5000, error);
}

static gboolean
signal_vm(TestHv *hv, const char *name, int sig, GError **error)
{
    TestVm *vm;
    pid_t pid = 0;

    g_mutex_lock(&hv->lock);
    vm = g_hash_table_lookup(hv->vms, name);
    if (vm) {
        pid = vm->pid;
    }
    g_mutex_unlock(&hv->lock);
    if (!pid || kill(pid, sig) < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "testhv: domain '%s' has no process", name);
        return FALSE;
    }
    return TRUE;
}

static gboolean
testhv_suspend(gpointer priv, BerthJob *job, const BerthDomainDef *def, GError **error)
{
    TestHv *hv = priv;

    record(hv, "suspend %s", def->name);
    if (!signal_vm(hv, def->name, SIGSTOP, error)) {
        return FALSE;
    }
    hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_USER);
    return TRUE;
}

static gboolean
testhv_resume(gpointer priv, BerthJob *job, const BerthDomainDef *def, GError **error)
{
    TestHv *hv = priv;

    record(hv, "resume %s", def->name);
    if (!signal_vm(hv, def->name, SIGCONT, error)) {
        return FALSE;
    }
    hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_RUNNING,
                               BERTH_RUNNING_UNPAUSED);
    return TRUE;
}

static gboolean
testhv_reconnect(gpointer priv, const BerthDomainDef *def, GError **error)
{
    TestHv *hv = priv;
    g_autofree char *status = hv->host->domain_load_status(hv->self, def->name);
    TestVm *vm;
    int pid = 0;

    record(hv, "reconnect %s", def->name);
    if (!status || sscanf(status, "{\"pid\":%d}", &pid) != 1 || pid <= 0) {
        hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_SHUTOFF,
                                   BERTH_SHUTOFF_UNKNOWN);
        return TRUE;
    }
    vm = vm_new(def, pid);
    g_mutex_lock(&hv->lock);
    g_hash_table_replace(hv->vms, vm->name, vm);
    vm->watch = hv->host->process_watch(hv->self, pid, -1, vm_exited, hv, NULL);
    if (!vm->watch) {
        /* Gone while berthd was away. */
        g_autoptr(GPtrArray) hostdevs = g_steal_pointer(&vm->hostdevs);

        vm->hostdevs = g_ptr_array_new_with_free_func(test_hostdev_free);
        g_hash_table_remove(hv->vms, def->name);
        g_mutex_unlock(&hv->lock);
        release_hostdevs(hv, def->name, def->uuid, hostdevs);
        hv->host->domain_set_state(hv->self, def->name, BERTH_DOMAIN_SHUTOFF,
                                   BERTH_SHUTOFF_CRASHED);
        return TRUE;
    }
    g_mutex_unlock(&hv->lock);
    return TRUE;
}

/*
 * Hotplug, simulated as QEMU behaves: attach is immediate (a hostdev is prepared first);
 * detach is device_del, then "DEVICE_DELETED" after detach_delay_ms (a timer on the main
 * context), then the teardown (hostdev release) and only then domain_device_removed. When the
 * event takes longer than detach_timeout_ms, the job returns with the removal in progress
 * and the teardown runs when the event comes.
 */
typedef struct {
    TestHv *hv;
    char *domain;
    char *uuid;
    char *alias;
    TestHostdev *hostdev; /* the device's hostdev, or NULL */
    gboolean deleted;     /* DEVICE_DELETED came */
    gboolean abandoned;   /* the job gave up waiting: the event's handler does the teardown */
} Unplug;

static void
unplug_free(Unplug *u)
{
    g_free(u->domain);
    g_free(u->uuid);
    g_free(u->alias);
    if (u->hostdev) {
        test_hostdev_free(u->hostdev);
    }
    g_free(u);
}

static void
unplug_teardown(Unplug *u)
{
    TestHv *hv = u->hv;

    if (u->hostdev) {
        g_autoptr(GPtrArray) one = g_ptr_array_new();

        g_ptr_array_add(one, u->hostdev);
        release_hostdevs(hv, u->domain, u->uuid, one);
    }
    record(hv, "removed %s %s", u->domain, u->alias);
    hv->host->domain_device_removed(hv->self, u->domain, u->alias);
}

static gpointer
unplug_thread(gpointer data)
{
    unplug_teardown(data);
    unplug_free(data);
    return NULL;
}

/* The simulated DEVICE_DELETED, on the main context. */
static gboolean
device_deleted(gpointer data)
{
    Unplug *u = data;
    gboolean abandoned;

    g_mutex_lock(&u->hv->lock);
    u->deleted = TRUE;
    abandoned = u->abandoned;
    g_cond_broadcast(&u->hv->exited);
    g_mutex_unlock(&u->hv->lock);
    if (abandoned) {
        /* The teardown may block (sysfs writes): never on the main context. */
        g_thread_unref(g_thread_new("testhv-unplug", unplug_thread, u));
    }
    return G_SOURCE_REMOVE;
}

static gboolean
testhv_device_attach(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                     BerthDeviceDef *dev, GError **error)
{
    TestHv *hv = priv;
    TestVm *vm;

    if (dev->type == BERTH_DEVICE_HOSTDEV) {
        record(hv, "prepare %s %s", def->name, dev->u.hostdev->alias);
        if (!hv->host->hostdev_prepare(hv->self, job, def, dev->u.hostdev, error)) {
            return FALSE;
        }
    }
    g_mutex_lock(&hv->lock);
    vm = g_hash_table_lookup(hv->vms, def->name);
    if (vm && dev->type == BERTH_DEVICE_HOSTDEV) {
        g_ptr_array_add(vm->hostdevs, test_hostdev_new(dev->u.hostdev));
    }
    g_mutex_unlock(&hv->lock);
    if (!vm) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "testhv: domain '%s' has no process", def->name);
        return FALSE;
    }
    record(hv, "attach %s %s", def->name,
           dev->type == BERTH_DEVICE_HOSTDEV ? dev->u.hostdev->alias : "device");
    return TRUE;
}

static gboolean
testhv_device_detach(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                     const char *alias, GError **error)
{
    TestHv *hv = priv;
    gint64 delay = hv->host->config_get_int(hv->self, "detach_delay_ms");
    gint64 end = g_get_monotonic_time() +
                 hv->host->config_get_int(hv->self, "detach_timeout_ms") * 1000;
    GCancellable *cancel = hv->host->job_get_cancellable(job);
    Unplug *u = g_new0(Unplug, 1);
    TestVm *vm;
    GSource *src;

    u->hv = hv;
    u->domain = g_strdup(def->name);
    u->uuid = g_strdup(def->uuid);
    u->alias = g_strdup(alias);
    record(hv, "device_del %s %s", def->name, alias);
    g_mutex_lock(&hv->lock);
    vm = g_hash_table_lookup(hv->vms, def->name);
    for (guint i = 0; vm && i < vm->hostdevs->len; i++) {
        TestHostdev *h = vm->hostdevs->pdata[i];
        if (g_strcmp0(h->alias, alias) == 0) {
            u->hostdev = g_ptr_array_steal_index(vm->hostdevs, i);
            break;
        }
    }
    g_mutex_unlock(&hv->lock);
    if (!vm) {
        unplug_free(u);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "testhv: domain '%s' has no process", def->name);
        return FALSE;
    }
    src = g_timeout_source_new((guint) delay);
    g_source_set_callback(src, device_deleted, u, NULL);
    g_source_attach(src, hv->host->main_context(hv->self));
    g_source_unref(src);

    g_mutex_lock(&hv->lock);
    while (!u->deleted && !g_cancellable_is_cancelled(cancel) &&
           g_get_monotonic_time() < end) {
        g_cond_wait_until(&hv->exited, &hv->lock, MIN(end, g_get_monotonic_time() + 10000));
    }
    if (!u->deleted) {
        u->abandoned = TRUE;
        g_mutex_unlock(&hv->lock);
        record(hv, "in-progress %s %s", def->name, alias);
        return TRUE;
    }
    g_mutex_unlock(&hv->lock);
    unplug_teardown(u);
    unplug_free(u);
    return TRUE;
}

/* "testhv.emit" {"type": T, "name": N}: publishes an event, as a device removal would. */
static gboolean
testhv_emit(BerthJob *job, const char *params_json, char **result_json, gpointer data,
            GError **error)
{
    TestHv *hv = data;
    BerthEvent ev = {
        .struct_size = sizeof(ev),
        .object_kind = "domain",
        .object_name = "testhv",
        .type = "device-removed",
        .detail_json = params_json,
    };
    guint64 seq = hv->host->event_publish(hv->self, &ev);

    *result_json = g_strdup_printf("{\"seq\":%" G_GUINT64_FORMAT "}", seq);
    return TRUE;
}

static gboolean
testhv_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    TestHv *hv = g_new0(TestHv, 1);
    BerthMethodSpec emit = {
        .struct_size = sizeof(emit),
        .name = "testhv.emit",
        .modifies = TRUE,
        .object_kind = "agent",
        .job_kind = BERTH_JOB_QUERY,
        .func = testhv_emit,
        .data = hv,
    };

    hv->self = self;
    hv->host = host;
    g_mutex_init(&hv->lock);
    g_cond_init(&hv->exited);
    hv->vms = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, vm_free);
    *priv = hv;
    return host->method_register(self, &emit, error);
}

static void
testhv_shutdown_plugin(gpointer priv)
{
    TestHv *hv = priv;

    /* The "VMs" keep running, as QEMU does when berthd stops. */
    record(hv, "plugin-shutdown");
    g_hash_table_unref(hv->vms);
    g_cond_clear(&hv->exited);
    g_mutex_clear(&hv->lock);
    g_free(hv);
}

static const BerthConfigKey testhv_keys[] = {
    { "record", BERTH_CONFIG_PATH, NULL, 0, 0, "File that gets one line per call." },
    { "start_delay_ms", BERTH_CONFIG_INT, "0", 0, 600000, "How long a start takes." },
    { "fail_start", BERTH_CONFIG_BOOL, "false", 0, 0, "Make every start fail." },
    { "hang_shutdown", BERTH_CONFIG_BOOL, "false", 0, 0,
      "Make shutdown wait until the job is cancelled (a guest that ignores ACPI)." },
    { "detach_delay_ms", BERTH_CONFIG_INT, "20", 0, 600000,
      "How long after device_del the simulated DEVICE_DELETED comes." },
    { "detach_timeout_ms", BERTH_CONFIG_INT, "5000", 0, 600000,
      "How long a detach waits for DEVICE_DELETED before it reports removal in progress." },
    { NULL },
};

static const BerthHypervisorOps testhv_ops = {
    .struct_size = sizeof(BerthHypervisorOps),
    .domain_start = testhv_start,
    .domain_shutdown = testhv_shutdown,
    .domain_destroy = testhv_destroy,
    .domain_suspend = testhv_suspend,
    .domain_resume = testhv_resume,
    .domain_reconnect = testhv_reconnect,
    .device_detach = testhv_device_detach,
    .device_attach = testhv_device_attach,
};

static const BerthPlugin testhv_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "testhv",
    .version = "1.0",
    .description = "a test hypervisor whose VMs are sleep processes",
    .kind = BERTH_PLUGIN_HYPERVISOR,
    .config_keys = testhv_keys,
    .init = testhv_init,
    .shutdown = testhv_shutdown_plugin,
    .ops = &testhv_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &testhv_plugin;
}
