/* The BerthHost services table: how plugins reach the core. */
#include "core.h"

#include <berth/fs.h>
#include <berth/hostdev.h>

#include <stdarg.h>
#include <string.h>
#include <yajl/yajl_gen.h>

#include "errors.h"
#include "process.h"
#include "rpc/jsonrpc.h"
#include "state-store.h"

static BerthCore *
core_of(BerthPluginHandle *self)
{
    return self->core;
}

static void host_log(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void
host_log(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_log_structured("berth", level, "BERTH_PLUGIN", self->name, "MESSAGE", "%s: %s",
                     self->name, msg);
}

static guint64
host_event_publish(BerthPluginHandle *self, const BerthEvent *event)
{
    return berth_bus_publish(core_of(self)->bus, event);
}

static guint64
host_job_submit(BerthPluginHandle *self, const BerthJobSpec *spec, GError **error)
{
    return berth_scheduler_submit(core_of(self)->sched, spec, self->name, NULL, NULL, NULL,
                                  error);
}

static gboolean
host_process_spawn(BerthPluginHandle *self, const BerthSpawnSpec *spec, pid_t *pid,
                   int *pidfd, GError **error)
{
    return berth_process_spawn(spec, pid, pidfd, error);
}

static guint
host_process_watch(BerthPluginHandle *self, pid_t pid, int pidfd, BerthProcessExitFunc func,
                   gpointer data, GError **error)
{
    return berth_process_watch(core_of(self)->ctx, pid, pidfd, func, data, error);
}

static void
host_process_unwatch(BerthPluginHandle *self, guint watch_id)
{
    berth_process_unwatch(watch_id);
}

static const char *
host_state_dir(BerthPluginHandle *self)
{
    berth_state_mkdir(self->state_dir, 0700, NULL);
    return self->state_dir;
}

static const char *
host_run_dir(BerthPluginHandle *self)
{
    berth_state_mkdir(self->run_dir, 0700, NULL);
    return self->run_dir;
}

static const char *
host_config_get_string(BerthPluginHandle *self, const char *key)
{
    return self->config ? g_hash_table_lookup(self->config, key) : NULL;
}

static gint64
host_config_get_int(BerthPluginHandle *self, const char *key)
{
    const char *v = host_config_get_string(self, key);

    return v ? g_ascii_strtoll(v, NULL, 10) : 0;
}

static gboolean
host_config_get_bool(BerthPluginHandle *self, const char *key)
{
    const char *v = host_config_get_string(self, key);

    return v && (g_str_equal(v, "true") || g_str_equal(v, "1") || g_str_equal(v, "yes"));
}

/* The loader splits every BERTH_CONFIG_STRV value at load (and on reconfigure). */
static const char *const *
host_config_get_strv(BerthPluginHandle *self, const char *key)
{
    return self->config_strv ? g_hash_table_lookup(self->config_strv, key) : NULL;
}

static GMainContext *
host_main_context(BerthPluginHandle *self)
{
    return core_of(self)->ctx;
}

static void
host_domain_set_state(BerthPluginHandle *self, const char *name, BerthDomainState state,
                      int reason)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = berth_registry_lookup(core_of(self)->registry, name, &error);

    if (!dom) {
        g_warning("plugin '%s' set the state of an unknown domain: %s", self->name,
                  error->message);
        return;
    }
    berth_registry_set_state(core_of(self)->registry, dom, state, reason);
}

static gboolean
host_domain_save_status(BerthPluginHandle *self, const char *name, const char *status_json,
                        GError **error)
{
    g_autoptr(BerthDomain) dom = berth_registry_lookup(core_of(self)->registry, name, error);

    if (!dom) {
        return FALSE;
    }
    return berth_registry_set_plugin_status(core_of(self)->registry, dom, self->name,
                                            status_json, error);
}

static char *
host_domain_load_status(BerthPluginHandle *self, const char *name)
{
    g_autoptr(BerthDomain) dom = berth_registry_lookup(core_of(self)->registry, name, NULL);

    if (!dom) {
        return NULL;
    }
    return berth_registry_get_plugin_status(core_of(self)->registry, dom, self->name);
}

static BerthPluginHandle *
plugin_of_kind(BerthPluginHandle *self, BerthPluginKind kind, const char *what, GError **error)
{
    BerthPluginHandle *h = berth_plugins_find_kind(core_of(self)->plugins, kind);

    if (!h) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "no %s plugin is loaded: add one to 'plugins' in berthd.conf", what);
    }
    return h;
}

static gboolean
host_hostdev_prepare(BerthPluginHandle *self, BerthJob *job, const BerthDomainDef *def,
                     const BerthHostdevDef *hostdev, GError **error)
{
    BerthPluginHandle *h = plugin_of_kind(self, BERTH_PLUGIN_HOSTDEV, "hostdev", error);
    const BerthHostdevOps *ops = h ? h->plugin->ops : NULL;

    if (!h) {
        return FALSE;
    }
    if (!ops->prepare) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "plugin '%s' cannot prepare host devices", h->name);
        return FALSE;
    }
    return ops->prepare(h->priv, job, def, hostdev, error);
}

static gboolean
host_hostdev_release(BerthPluginHandle *self, const BerthDomainDef *def,
                     const BerthHostdevDef *hostdev, GError **error)
{
    BerthPluginHandle *h = plugin_of_kind(self, BERTH_PLUGIN_HOSTDEV, "hostdev", error);
    const BerthHostdevOps *ops = h ? h->plugin->ops : NULL;

    if (!h) {
        return FALSE;
    }
    if (!ops->release) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "plugin '%s' cannot release host devices", h->name);
        return FALSE;
    }
    return ops->release(h->priv, def, hostdev, error);
}

static gboolean
host_fs_share_start(BerthPluginHandle *self, BerthJob *job, const BerthDomainDef *def,
                    const BerthFsDef *fs, char **socket_path, GError **error)
{
    BerthPluginHandle *h = plugin_of_kind(self, BERTH_PLUGIN_FS, "filesystem", error);
    const BerthFsOps *ops = h ? h->plugin->ops : NULL;

    if (!h) {
        return FALSE;
    }
    if (!ops->share_start) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "plugin '%s' cannot start shares", h->name);
        return FALSE;
    }
    return ops->share_start(h->priv, job, def, fs, socket_path, error);
}

static gboolean
host_fs_share_stop(BerthPluginHandle *self, const BerthDomainDef *def, const BerthFsDef *fs,
                   GError **error)
{
    BerthPluginHandle *h = plugin_of_kind(self, BERTH_PLUGIN_FS, "filesystem", error);
    const BerthFsOps *ops = h ? h->plugin->ops : NULL;

    if (!h) {
        return FALSE;
    }
    if (!ops->share_stop) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "plugin '%s' cannot stop shares", h->name);
        return FALSE;
    }
    return ops->share_stop(h->priv, def, fs, error);
}

/* A plugin method: the RPC handler turns it into a job, the job's end into the reply. */
typedef struct {
    BerthPluginHandle *plugin;
    BerthMethodSpec spec; /* copied; strings are the plugin's static data */
} PluginMethod;

typedef struct {
    PluginMethod *method;
    char *params_json;
    BerthRpcCall *call;
} PluginCall;

static gboolean
plugin_method_job(BerthJob *job, gpointer data, GError **error)
{
    PluginCall *pc = data;
    char *result = NULL;

    if (!pc->method->spec.func(job, pc->params_json, &result, pc->method->spec.data, error)) {
        return FALSE;
    }
    berth_job_set_result(job, result);
    return TRUE;
}

static void
plugin_call_free(gpointer p)
{
    PluginCall *pc = p;

    g_free(pc->params_json);
    g_free(pc);
}

static void
plugin_method_done(BerthJob *job, gpointer data)
{
    BerthRpcCall *call = data;
    const GError *err = berth_job_get_error(job);

    if (berth_job_get_state(job) == BERTH_JOB_COMPLETED) {
        berth_rpc_call_reply(call, g_strdup(berth_job_get_result(job)));
    } else {
        berth_rpc_call_reply_error(call, err);
    }
}

/* Plugins get their params as JSON text. */
char *
berth_json_from_tree(yajl_val v)
{
    GString *out;

    if (!v) {
        return g_strdup("{}");
    }
    out = g_string_new(NULL);
    berth_rpc_json_append_value(out, v);
    return g_string_free(out, FALSE);
}

static void
plugin_method_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    PluginMethod *m = data;
    BerthCore *core = m->plugin->core;
    g_autoptr(GError) error = NULL;
    const char *object = "agent";
    PluginCall *pc;
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = m->spec.object_kind ? m->spec.object_kind : "agent",
        .kind = m->spec.job_kind,
        .description = m->spec.name,
        .func = plugin_method_job,
        .data_free = plugin_call_free,
    };

    if (m->spec.object_param &&
        !berth_rpc_param_string(params, m->spec.object_param, TRUE, &object, &error)) {
        berth_rpc_call_reply_error(call, error);
        return;
    }
    pc = g_new0(PluginCall, 1);
    pc->method = m;
    pc->params_json = berth_json_from_tree(params);
    pc->call = call;
    spec.object_name = object;
    spec.data = pc;
    if (!berth_scheduler_submit(core->sched, &spec, "api", core->ctx, plugin_method_done, call,
                                &error)) {
        berth_rpc_call_reply_error(call, error);
    }
}

static gboolean
host_method_register(BerthPluginHandle *self, const BerthMethodSpec *spec, GError **error)
{
    PluginMethod *m;
    BerthCore *core = core_of(self);

    if (!spec || !spec->name || !spec->func || !strchr(spec->name, '.')) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "plugin '%s' registered a method without a 'noun.verb' name or a function",
                    self->name);
        return FALSE;
    }
    if (!core->server) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "plugin '%s' can only register methods from init()", self->name);
        return FALSE;
    }
    m = g_new0(PluginMethod, 1);
    m->plugin = self;
    memcpy(&m->spec, spec, MIN(spec->struct_size, sizeof(m->spec)));
    if (!berth_rpc_server_add_method_full(core->server, spec->name, spec->modifies,
                                          plugin_method_handler, m, g_free)) {
        g_free(m);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS,
                    "plugin '%s' registered method '%s', which exists already", self->name,
                    spec->name);
        return FALSE;
    }
    return TRUE;
}

static void
host_domain_device_removed(BerthPluginHandle *self, const char *name, const char *alias)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = berth_registry_lookup(core_of(self)->registry, name, &error);

    if (!dom) {
        g_warning("plugin '%s' removed a device of an unknown domain: %s", self->name,
                  error->message);
        return;
    }
    if (!berth_registry_remove_device(core_of(self)->registry, dom, alias)) {
        g_warning("plugin '%s' removed device '%s' that domain '%s' does not have", self->name,
                  alias, name);
    }
}

static void
host_job_set_progress(BerthJob *job, guint percent, const char *message)
{
    berth_job_set_progress(job, percent, message);
}

static GCancellable *
host_job_get_cancellable(BerthJob *job)
{
    return berth_job_get_cancellable(job);
}

static guint64
host_job_get_id(BerthJob *job)
{
    return berth_job_get_id(job);
}

const BerthHost berth_host_table = {
    .struct_size = sizeof(BerthHost),
    .abi_minor = BERTH_ABI_MINOR,
    .log = host_log,
    .event_publish = host_event_publish,
    .job_submit = host_job_submit,
    .job_set_progress = host_job_set_progress,
    .job_get_cancellable = host_job_get_cancellable,
    .job_get_id = host_job_get_id,
    .process_spawn = host_process_spawn,
    .process_watch = host_process_watch,
    .process_unwatch = host_process_unwatch,
    .state_dir = host_state_dir,
    .run_dir = host_run_dir,
    .config_get_string = host_config_get_string,
    .config_get_int = host_config_get_int,
    .config_get_bool = host_config_get_bool,
    .config_get_strv = host_config_get_strv,
    .main_context = host_main_context,
    .domain_set_state = host_domain_set_state,
    .domain_save_status = host_domain_save_status,
    .domain_load_status = host_domain_load_status,
    .hostdev_prepare = host_hostdev_prepare,
    .hostdev_release = host_hostdev_release,
    .fs_share_start = host_fs_share_start,
    .fs_share_stop = host_fs_share_stop,
    .method_register = host_method_register,
    .domain_device_removed = host_domain_device_removed,
};

BerthPluginHandle *
berth_core_hypervisor(BerthCore *core, GError **error)
{
    BerthPluginHandle *h = berth_plugins_find_kind(core->plugins, BERTH_PLUGIN_HYPERVISOR);

    if (!h) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "no hypervisor plugin is loaded: add one to 'plugins' in berthd.conf");
    }
    return h;
}
