/* The daemon's JSON-RPC methods: agent.*, domain.* and job.* (events.* live in the server). */
#include "core.h"

#include <string.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include <berth/hypervisor.h>
#include <berth/json.h>

#include "build-config.h"
#include "domain-xml.h"
#include "errors.h"
#include "rpc/jsonrpc.h"

static void
reply_gerror(BerthRpcCall *call, GError *error)
{
    berth_rpc_call_reply_error(call, error);
}

/* ---- agent.* ---- */

static void
agent_info(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    BerthConfig *cfg = core->config;
    g_autoptr(GPtrArray) doms = berth_registry_list(core->registry);
    yajl_gen g = yajl_gen_alloc(NULL);

    yajl_gen_map_open(g);
    berth_json_kv_str(g, "version", BERTH_VERSION);
    berth_json_kv_str(g, "hostname", g_get_host_name());
    berth_json_kv_int(g, "pid", getpid());
    berth_json_kv_int(g, "uptime_s", (g_get_monotonic_time() - core->started_us) / G_USEC_PER_SEC);
    berth_json_kv_bool(g, "privileged", cfg->privileged);
    berth_json_kv_str(g, "config_file", cfg->path);
    berth_json_str(g, "dirs");
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "config", cfg->config_dir);
    berth_json_kv_str(g, "state", cfg->state_dir);
    berth_json_kv_str(g, "run", cfg->run_dir);
    berth_json_kv_str(g, "plugins", cfg->plugin_dir);
    berth_json_kv_str(g, "domains", cfg->domains_dir);
    yajl_gen_map_close(g);
    berth_json_kv_int(g, "domains", doms->len);
    berth_json_kv_int(g, "plugins", core->plugins ? core->plugins->len : 0);
    berth_json_kv_int(g, "last_event_seq", (long long) berth_bus_last_seq(core->bus));
    yajl_gen_map_close(g);
    berth_rpc_call_reply(call, berth_json_finish(g));
}

static void
agent_plugins(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    yajl_gen g = yajl_gen_alloc(NULL);

    yajl_gen_array_open(g);
    for (guint i = 0; core->plugins && i < core->plugins->len; i++) {
        BerthPluginHandle *h = core->plugins->pdata[i];
        if (!h->initialized) {
            continue;
        }
        yajl_gen_map_open(g);
        berth_json_kv_str(g, "name", h->plugin->name);
        berth_json_kv_str(g, "version", h->plugin->version);
        berth_json_kv_str(g, "kind", berth_plugin_kind_name(h->plugin->kind));
        berth_json_kv_str(g, "description", h->plugin->description);
        berth_json_kv_str(g, "path", h->path);
        berth_json_kv_bool(g, "required", h->required);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    berth_rpc_call_reply(call, berth_json_finish(g));
}

/* ---- domain.* ---- */

static void
gen_domain_summary(yajl_gen g, BerthDomain *dom, gboolean with_xml)
{
    BerthDomainInfo info = berth_domain_get_info(dom);

    yajl_gen_map_open(g);
    berth_json_kv_str(g, "name", berth_domain_get_name(dom));
    berth_json_kv_str(g, "uuid", berth_domain_get_uuid(dom));
    berth_json_kv_str(g, "state", berth_domain_state_name(info.state));
    berth_json_kv_str(g, "reason", berth_domain_reason_name(info.state, info.reason));
    berth_json_kv_bool(g, "persistent", info.persistent);
    berth_json_kv_bool(g, "autostart", info.autostart);
    if (with_xml) {
        g_autofree char *xml = berth_domain_get_xml(dom);
        berth_json_kv_bool(g, "pending_definition", info.has_next);
        berth_json_kv_str(g, "xml", xml);
    }
    yajl_gen_map_close(g);
}

static void
domain_list(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) doms = NULL;
    const char *state_name = NULL;
    BerthDomainState filter = BERTH_DOMAIN_NOSTATE;
    yajl_gen g;

    if (!berth_rpc_param_string(params, "state", FALSE, &state_name, &error)) {
        reply_gerror(call, error);
        return;
    }
    if (state_name && !berth_domain_state_from_name(state_name, &filter)) {
        g_set_error(&error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "unknown domain state '%s'", state_name);
        reply_gerror(call, error);
        return;
    }
    doms = berth_registry_list(core->registry);
    g = yajl_gen_alloc(NULL);
    yajl_gen_array_open(g);
    for (guint i = 0; i < doms->len; i++) {
        if (state_name && berth_domain_get_info(doms->pdata[i]).state != filter) {
            continue;
        }
        gen_domain_summary(g, doms->pdata[i], FALSE);
    }
    yajl_gen_array_close(g);
    berth_rpc_call_reply(call, berth_json_finish(g));
}

static void
domain_get(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = NULL;
    const char *name = NULL;
    yajl_gen g;

    if (!berth_rpc_param_string(params, "name", TRUE, &name, &error) ||
        !(dom = berth_registry_lookup(core->registry, name, &error))) {
        reply_gerror(call, error);
        return;
    }
    g = yajl_gen_alloc(NULL);
    gen_domain_summary(g, dom, TRUE);
    berth_rpc_call_reply(call, berth_json_finish(g));
}

/* What a domain job needs; freed with the job. */
typedef struct {
    BerthCore *core;
    char *name;
    char *xml;       /* domain.define, domain.attach_device */
    char *alias;     /* domain.detach_device */
    guint flags;     /* start/shutdown/destroy flags, or parse flags for define */
    int op;          /* LifecycleOp, for job_lifecycle */
} DomainJob;

static void
domain_job_free(gpointer p)
{
    DomainJob *dj = p;

    g_free(dj->name);
    g_free(dj->xml);
    g_free(dj->alias);
    g_free(dj);
}

static DomainJob *
domain_job_new(BerthCore *core, const char *name)
{
    DomainJob *dj = g_new0(DomainJob, 1);

    dj->core = core;
    dj->name = g_strdup(name);
    return dj;
}

/* The reply of a lifecycle job: {"job":ID,"state":..,"reason":..}. */
static char *
lifecycle_result(BerthCore *core, BerthJob *job, const char *name)
{
    g_autoptr(BerthDomain) dom = berth_registry_lookup(core->registry, name, NULL);
    yajl_gen g = yajl_gen_alloc(NULL);

    yajl_gen_map_open(g);
    berth_json_kv_int(g, "job", (long long) berth_job_get_id(job));
    if (dom) {
        BerthDomainInfo info = berth_domain_get_info(dom);
        berth_json_kv_str(g, "state", berth_domain_state_name(info.state));
        berth_json_kv_str(g, "reason", berth_domain_reason_name(info.state, info.reason));
    } else {
        berth_json_kv_str(g, "state", "undefined");
        berth_json_kv_str(g, "reason", "unknown");
    }
    yajl_gen_map_close(g);
    return berth_json_finish(g);
}

static void
job_done_reply(BerthJob *job, gpointer data)
{
    BerthRpcCall *call = data;

    if (berth_job_get_state(job) == BERTH_JOB_COMPLETED) {
        berth_rpc_call_reply(call, g_strdup(berth_job_get_result(job)));
    } else {
        berth_rpc_call_reply_error(call, berth_job_get_error(job));
    }
}

static void
submit_domain_job(BerthRpcCall *call, BerthCore *core, DomainJob *dj, BerthJobKind kind,
                  const char *description, guint timeout_ms, BerthJobFunc func)
{
    g_autoptr(GError) error = NULL;
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = "domain",
        .object_name = dj->name,
        .kind = kind,
        .description = description,
        .timeout_ms = timeout_ms,
        .func = func,
        .data = dj,
        .data_free = domain_job_free,
    };

    if (!berth_scheduler_submit(core->sched, &spec, "api", core->ctx, job_done_reply, call,
                                &error)) {
        reply_gerror(call, error);
    }
}

static gboolean
job_define(BerthJob *job, gpointer data, GError **error)
{
    DomainJob *dj = data;
    BerthPluginHandle *hv = berth_plugins_find_kind(dj->core->plugins, BERTH_PLUGIN_HYPERVISOR);
    const BerthHypervisorOps *ops = hv ? hv->plugin->ops : NULL;
    BerthDomainDef *def;
    g_autoptr(BerthDomain) dom = NULL;
    yajl_gen g;

    def = berth_domain_def_parse(dj->xml, strlen(dj->xml), dj->flags, error);
    if (!def) {
        return FALSE;
    }
    if (ops && ops->domain_validate && !ops->domain_validate(hv->priv, def, error)) {
        berth_domain_def_free(def);
        return FALSE;
    }
    dom = berth_registry_define_parsed(dj->core->registry, def, dj->xml, strlen(dj->xml), error);
    if (!dom) {
        return FALSE;
    }
    g = yajl_gen_alloc(NULL);
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "name", berth_domain_get_name(dom));
    berth_json_kv_str(g, "uuid", berth_domain_get_uuid(dom));
    yajl_gen_map_close(g);
    berth_job_set_result(job, berth_json_finish(g));
    return TRUE;
}

static void
domain_define(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    const char *xml = NULL;
    gboolean ignore = FALSE;
    DomainJob *dj;

    if (!berth_rpc_param_string(params, "xml", TRUE, &xml, &error) ||
        !berth_rpc_param_bool(params, "ignore_unsupported", FALSE, &ignore, &error)) {
        reply_gerror(call, error);
        return;
    }
    /* Parsed here for the name the job serializes on; the job parses again to define. */
    def = berth_domain_def_parse(xml, strlen(xml), ignore ? BERTH_XML_PARSE_IGNORE_UNSUPPORTED : 0,
                                 &error);
    if (!def) {
        reply_gerror(call, error);
        return;
    }
    dj = domain_job_new(core, def->name);
    dj->xml = g_strdup(xml);
    dj->flags = ignore ? BERTH_XML_PARSE_IGNORE_UNSUPPORTED : 0;
    submit_domain_job(call, core, dj, BERTH_JOB_MODIFY, "domain.define", 0, job_define);
}

static gboolean
job_undefine(BerthJob *job, gpointer data, GError **error)
{
    DomainJob *dj = data;

    if (!berth_registry_undefine(dj->core->registry, dj->name, error)) {
        return FALSE;
    }
    berth_job_set_result(job, g_strdup("true"));
    return TRUE;
}

/* The lifecycle operations share one shape: check the state, call the hypervisor op. */
typedef enum {
    OP_START,
    OP_SHUTDOWN,
    OP_DESTROY,
    OP_SUSPEND,
    OP_RESUME,
    OP_REBOOT,
    OP_LAST
} LifecycleOp;

/* The state an operation needs the domain in. */
typedef enum {
    NEED_INACTIVE,
    NEED_ACTIVE,
    NEED_RUNNING,
    NEED_PAUSED,
} StateNeed;

static const struct {
    const char *method;
    StateNeed need;
} op_info[OP_LAST] = {
    [OP_START] = { "domain.start", NEED_INACTIVE },
    [OP_SHUTDOWN] = { "domain.shutdown", NEED_ACTIVE },
    [OP_DESTROY] = { "domain.destroy", NEED_ACTIVE },
    [OP_SUSPEND] = { "domain.suspend", NEED_RUNNING },
    [OP_RESUME] = { "domain.resume", NEED_PAUSED },
    [OP_REBOOT] = { "domain.reboot", NEED_ACTIVE },
};

static gboolean
state_check(BerthDomain *dom, StateNeed need, GError **error)
{
    BerthDomainState state = berth_domain_get_info(dom).state;
    const char *name = berth_domain_get_name(dom);
    const char *problem = NULL;

    switch (need) {
    case NEED_INACTIVE:
        problem = berth_domain_is_active(dom) ? "is already active" : NULL;
        break;
    case NEED_ACTIVE:
        problem = berth_domain_is_active(dom) ? NULL : "is not running";
        break;
    case NEED_RUNNING:
        problem = state == BERTH_DOMAIN_RUNNING ? NULL : "is not running";
        break;
    case NEED_PAUSED:
        problem = state == BERTH_DOMAIN_PAUSED ? NULL : "is not paused";
        break;
    }
    if (problem) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE, "domain '%s' %s", name,
                    problem);
        return FALSE;
    }
    return TRUE;
}

/* Calls the plugin's op for @op; sets *@supported FALSE (and returns FALSE) when it has none. */
static gboolean
call_op(const BerthHypervisorOps *ops, gpointer priv, LifecycleOp op, BerthJob *job,
        const BerthDomainDef *def, guint flags, gboolean *supported, GError **error)
{
    *supported = TRUE;
    switch (op) {
    case OP_START:
        if (ops->domain_start) {
            return ops->domain_start(priv, job, def, flags, error);
        }
        break;
    case OP_SHUTDOWN:
        if (ops->domain_shutdown) {
            return ops->domain_shutdown(priv, job, def, flags, error);
        }
        break;
    case OP_DESTROY:
        if (ops->domain_destroy) {
            return ops->domain_destroy(priv, job, def, flags, error);
        }
        break;
    case OP_SUSPEND:
        if (ops->domain_suspend) {
            return ops->domain_suspend(priv, job, def, error);
        }
        break;
    case OP_RESUME:
        if (ops->domain_resume) {
            return ops->domain_resume(priv, job, def, error);
        }
        break;
    case OP_REBOOT:
        if (ops->domain_reboot) {
            return ops->domain_reboot(priv, job, def, error);
        }
        break;
    default:
        break;
    }
    *supported = FALSE;
    return FALSE;
}

/* The job of every lifecycle method; DomainJob.op says which. */
static gboolean
job_lifecycle(BerthJob *job, gpointer data, GError **error)
{
    DomainJob *dj = data;
    const char *method = op_info[dj->op].method;
    BerthPluginHandle *hv = berth_core_hypervisor(dj->core, error);
    g_autoptr(BerthDomain) dom = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    gboolean supported;

    if (!hv || !(dom = berth_registry_lookup(dj->core->registry, dj->name, error))) {
        return FALSE;
    }
    /* The state is checked inside the job: the job before this one may have changed it. */
    if (!state_check(dom, op_info[dj->op].need, error)) {
        return FALSE;
    }
    /* A start runs on the live definition: runtime aliases given, pending definition in. */
    def = dj->op == OP_START ? berth_registry_prepare_start(dj->core->registry, dom)
                             : berth_domain_get_def(dom);
    if (!call_op(hv->plugin->ops, hv->priv, dj->op, job, def, dj->flags, &supported, error)) {
        if (dj->op == OP_START) {
            berth_registry_abort_start(dj->core->registry, dom);
        }
        if (!supported) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                        "hypervisor plugin '%s' does not support %s", hv->name, method);
        } else if (error && !*error) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "hypervisor plugin '%s' failed %s of domain '%s' without saying why",
                        hv->name, method, dj->name);
        }
        return FALSE;
    }
    berth_job_set_result(job, lifecycle_result(dj->core, job, dj->name));
    return TRUE;
}

guint64
berth_daemon_start_domain(BerthCore *core, const char *name, GError **error)
{
    DomainJob *dj = domain_job_new(core, name);
    BerthJobSpec spec = {
        .struct_size = sizeof(BerthJobSpec),
        .object_kind = "domain",
        .object_name = name,
        .kind = BERTH_JOB_MODIFY,
        .description = "domain.start (autostart)",
        .func = job_lifecycle,
        .data = dj,
        .data_free = domain_job_free,
    };

    dj->op = OP_START;
    return berth_scheduler_submit(core->sched, &spec, "autostart", NULL, NULL, NULL, error);
}

static void
domain_lifecycle(BerthRpcCall *call, yajl_val params, BerthCore *core, LifecycleOp op)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = NULL;
    const char *name = NULL;
    gboolean flag = FALSE;
    gint64 timeout_ms = 0;
    DomainJob *dj;
    BerthJobKind kind = op == OP_DESTROY ? BERTH_JOB_DESTROY : BERTH_JOB_MODIFY;

    if (!berth_rpc_param_string(params, "name", TRUE, &name, &error) ||
        (op == OP_START && !berth_rpc_param_bool(params, "paused", FALSE, &flag, &error)) ||
        (op == OP_SHUTDOWN && !berth_rpc_param_bool(params, "force", FALSE, &flag, &error)) ||
        (op == OP_SHUTDOWN &&
         !berth_rpc_param_int(params, "timeout_ms", FALSE, &timeout_ms, &error))) {
        reply_gerror(call, error);
        return;
    }
    if (timeout_ms < 0 || timeout_ms > 24 * 3600 * 1000) {
        g_set_error(&error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "timeout_ms %" G_GINT64_FORMAT " is out of range 0..86400000", timeout_ms);
        reply_gerror(call, error);
        return;
    }
    /* Unknown names fail at once, without a job. */
    dom = berth_registry_lookup(core->registry, name, &error);
    if (!dom) {
        reply_gerror(call, error);
        return;
    }
    dj = domain_job_new(core, name);
    if (op == OP_START && flag) {
        dj->flags |= BERTH_START_PAUSED;
    }
    if (op == OP_SHUTDOWN && flag) {
        dj->flags |= BERTH_SHUTDOWN_FORCE;
    }
    dj->op = op;
    submit_domain_job(call, core, dj, kind, op_info[op].method, (guint) timeout_ms,
                      job_lifecycle);
}

#define LIFECYCLE_METHOD(fn, op)                                                 \
    static void fn(BerthRpcCall *call, yajl_val params, gpointer data)          \
    {                                                                            \
        domain_lifecycle(call, params, data, op);                                \
    }
LIFECYCLE_METHOD(domain_start, OP_START)
LIFECYCLE_METHOD(domain_shutdown, OP_SHUTDOWN)
LIFECYCLE_METHOD(domain_destroy, OP_DESTROY)
LIFECYCLE_METHOD(domain_suspend, OP_SUSPEND)
LIFECYCLE_METHOD(domain_resume, OP_RESUME)
LIFECYCLE_METHOD(domain_reboot, OP_REBOOT)
#undef LIFECYCLE_METHOD

static void
domain_undefine(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = NULL;
    const char *name = NULL;
    DomainJob *dj;

    if (!berth_rpc_param_string(params, "name", TRUE, &name, &error) ||
        !(dom = berth_registry_lookup(core->registry, name, &error))) {
        reply_gerror(call, error);
        return;
    }
    dj = domain_job_new(core, name);
    submit_domain_job(call, core, dj, BERTH_JOB_MODIFY, "domain.undefine", 0, job_undefine);
}

/* ---- device hotplug ---- */

static gboolean
job_attach_device(BerthJob *job, gpointer data, GError **error)
{
    DomainJob *dj = data;
    BerthPluginHandle *hv = berth_core_hypervisor(dj->core, error);
    const BerthHypervisorOps *ops;
    g_autoptr(BerthDomain) dom = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    g_autoptr(BerthDeviceDef) dev = NULL;
    g_autoptr(BerthDeviceDef) probe = NULL;
    g_autofree char *alias = NULL;
    yajl_gen g;

    if (!hv || !(dom = berth_registry_lookup(dj->core->registry, dj->name, error)) ||
        !state_check(dom, NEED_ACTIVE, error)) {
        return FALSE;
    }
    ops = hv->plugin->ops;
    if (ops->struct_size < G_STRUCT_OFFSET(BerthHypervisorOps, device_attach) + sizeof(gpointer) ||
        !ops->device_attach) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "hypervisor plugin '%s' does not support domain.attach_device", hv->name);
        return FALSE;
    }
    dev = berth_device_def_parse(dj->xml, strlen(dj->xml), dj->flags, error);
    probe = dev ? berth_device_def_parse(dj->xml, strlen(dj->xml), dj->flags, error) : NULL;
    if (!probe || !berth_registry_check_device(dj->core->registry, dom, dev, probe, error)) {
        return FALSE;
    }
    alias = g_strdup(berth_device_def_alias(dev));
    def = berth_domain_get_def(dom);
    if (!ops->device_attach(hv->priv, job, def, dev, error)) {
        if (error && !*error) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "hypervisor plugin '%s' failed to attach device '%s' without saying "
                        "why", hv->name, alias);
        }
        return FALSE;
    }
    if (!berth_registry_add_device(dj->core->registry, dom, dev, error)) {
        return FALSE;
    }
    g = yajl_gen_alloc(NULL);
    yajl_gen_map_open(g);
    berth_json_kv_int(g, "job", (long long) berth_job_get_id(job));
    berth_json_kv_str(g, "alias", alias);
    yajl_gen_map_close(g);
    berth_job_set_result(job, berth_json_finish(g));
    return TRUE;
}

static gboolean
job_detach_device(BerthJob *job, gpointer data, GError **error)
{
    DomainJob *dj = data;
    BerthPluginHandle *hv = berth_core_hypervisor(dj->core, error);
    const BerthHypervisorOps *ops;
    g_autoptr(BerthDomain) dom = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    gboolean removed;
    yajl_gen g;

    if (!hv || !(dom = berth_registry_lookup(dj->core->registry, dj->name, error)) ||
        !state_check(dom, NEED_ACTIVE, error)) {
        return FALSE;
    }
    if (!berth_domain_has_device(dom, dj->alias)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE,
                    "domain '%s' has no device with alias '%s'", dj->name, dj->alias);
        return FALSE;
    }
    ops = hv->plugin->ops;
    if (!ops->device_detach) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "hypervisor plugin '%s' does not support domain.detach_device", hv->name);
        return FALSE;
    }
    def = berth_domain_get_def(dom);
    if (!ops->device_detach(hv->priv, job, def, dj->alias, error)) {
        if (error && !*error) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "hypervisor plugin '%s' failed to detach device '%s' without saying "
                        "why", hv->name, dj->alias);
        }
        return FALSE;
    }
    /* The plugin reports the end of the teardown with domain_device_removed: until then the
     * device is still in the live definition and its removal is in progress. */
    removed = !berth_domain_has_device(dom, dj->alias);
    g = yajl_gen_alloc(NULL);
    yajl_gen_map_open(g);
    berth_json_kv_int(g, "job", (long long) berth_job_get_id(job));
    berth_json_kv_str(g, "alias", dj->alias);
    berth_json_kv_bool(g, "removed", removed);
    berth_json_kv_str(g, "status", removed ? "removed" : "removal in progress");
    yajl_gen_map_close(g);
    berth_job_set_result(job, berth_json_finish(g));
    return TRUE;
}

static void
domain_attach_device(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = NULL;
    g_autoptr(BerthDeviceDef) dev = NULL;
    const char *name = NULL;
    const char *xml = NULL;
    gboolean ignore = FALSE;
    DomainJob *dj;

    if (!berth_rpc_param_string(params, "name", TRUE, &name, &error) ||
        !berth_rpc_param_string(params, "xml", TRUE, &xml, &error) ||
        !berth_rpc_param_bool(params, "ignore_unsupported", FALSE, &ignore, &error) ||
        !(dom = berth_registry_lookup(core->registry, name, &error))) {
        reply_gerror(call, error);
        return;
    }
    /* Bad XML fails at once, without a job; the job parses again. */
    dev = berth_device_def_parse(xml, strlen(xml), ignore ? BERTH_XML_PARSE_IGNORE_UNSUPPORTED : 0,
                                 &error);
    if (!dev) {
        reply_gerror(call, error);
        return;
    }
    dj = domain_job_new(core, name);
    dj->xml = g_strdup(xml);
    dj->flags = ignore ? BERTH_XML_PARSE_IGNORE_UNSUPPORTED : 0;
    submit_domain_job(call, core, dj, BERTH_JOB_MODIFY, "domain.attach_device", 0,
                      job_attach_device);
}

static void
domain_detach_device(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = NULL;
    const char *name = NULL;
    const char *alias = NULL;
    DomainJob *dj;

    if (!berth_rpc_param_string(params, "name", TRUE, &name, &error) ||
        !berth_rpc_param_string(params, "alias", TRUE, &alias, &error) ||
        !(dom = berth_registry_lookup(core->registry, name, &error))) {
        reply_gerror(call, error);
        return;
    }
    dj = domain_job_new(core, name);
    dj->alias = g_strdup(alias);
    submit_domain_job(call, core, dj, BERTH_JOB_MODIFY, "domain.detach_device", 0,
                      job_detach_device);
}

/* ---- job.* ---- */

static gboolean
param_job_id(yajl_val params, guint64 *id, GError **error)
{
    gint64 v = 0;

    if (!berth_rpc_param_int(params, "id", TRUE, &v, error)) {
        return FALSE;
    }
    if (v <= 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "job id %" G_GINT64_FORMAT " is not valid: ids start at 1", v);
        return FALSE;
    }
    *id = (guint64) v;
    return TRUE;
}

static void
job_list(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GPtrArray) jobs = berth_scheduler_list(core->sched);
    GString *out = g_string_new("[");

    for (guint i = 0; i < jobs->len; i++) {
        g_autofree char *j = berth_job_to_json(jobs->pdata[i]);
        if (i > 0) {
            g_string_append_c(out, ',');
        }
        g_string_append(out, j);
    }
    g_string_append_c(out, ']');
    berth_rpc_call_reply(call, g_string_free(out, FALSE));
}

static void
job_get(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthJob) job = NULL;
    guint64 id = 0;

    if (!param_job_id(params, &id, &error)) {
        reply_gerror(call, error);
        return;
    }
    job = berth_scheduler_lookup(core->sched, id);
    if (!job) {
        g_set_error(&error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_JOB, "job %" G_GUINT64_FORMAT
                    " does not exist (or is no longer remembered)", id);
        reply_gerror(call, error);
        return;
    }
    berth_rpc_call_reply(call, berth_job_to_json(job));
}

static void
job_cancel(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    guint64 id = 0;

    if (!param_job_id(params, &id, &error) ||
        !berth_scheduler_cancel(core->sched, id, &error)) {
        reply_gerror(call, error);
        return;
    }
    g_info("job %" G_GUINT64_FORMAT " cancelled by %s", id, berth_rpc_call_peer(call));
    berth_rpc_call_reply(call, g_strdup("true"));
}

void
berth_daemon_register_methods(BerthRpcServer *server, BerthCore *core)
{
    static const struct {
        const char *name;
        gboolean modifies;
        BerthRpcHandler handler;
    } methods[] = {
        { "agent.info", FALSE, agent_info },
        { "agent.plugins", FALSE, agent_plugins },
        { "domain.define", TRUE, domain_define },
        { "domain.undefine", TRUE, domain_undefine },
        { "domain.list", FALSE, domain_list },
        { "domain.get", FALSE, domain_get },
        { "domain.start", TRUE, domain_start },
        { "domain.shutdown", TRUE, domain_shutdown },
        { "domain.destroy", TRUE, domain_destroy },
        { "domain.suspend", TRUE, domain_suspend },
        { "domain.resume", TRUE, domain_resume },
        { "domain.reboot", TRUE, domain_reboot },
        { "domain.attach_device", TRUE, domain_attach_device },
        { "domain.detach_device", TRUE, domain_detach_device },
        { "job.list", FALSE, job_list },
        { "job.get", FALSE, job_get },
        { "job.cancel", TRUE, job_cancel },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(methods); i++) {
        berth_rpc_server_add_method(server, methods[i].name, methods[i].modifies,
                                    methods[i].handler, core);
    }
}
