/* The daemon: start-up, the main loop, signals, reload and a clean stop. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <glib-unix.h>

#include <berth/hypervisor.h>
#include <berth/sink.h>

#include "build-config.h"
#include "core.h"
#include "domain-xml.h"
#include "rpc/jsonrpc.h"
#include "state-store.h"

#if HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

/* ---- logging ---- */

static GLogLevelFlags log_threshold = G_LOG_LEVEL_MESSAGE;

static GLogLevelFlags
level_from_name(const char *name)
{
    if (!name || g_str_equal(name, "message")) {
        return G_LOG_LEVEL_MESSAGE;
    }
    if (g_str_equal(name, "error")) {
        return G_LOG_LEVEL_CRITICAL;
    }
    if (g_str_equal(name, "warning")) {
        return G_LOG_LEVEL_WARNING;
    }
    if (g_str_equal(name, "info")) {
        return G_LOG_LEVEL_INFO;
    }
    return G_LOG_LEVEL_DEBUG;
}

/* Lower GLogLevelFlags bits are more severe; a message passes when its level bit is at or
 * below the threshold's. */
static GLogWriterOutput
log_writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
    GLogLevelFlags lvl = level & G_LOG_LEVEL_MASK;

    if (lvl > log_threshold) {
        return G_LOG_WRITER_HANDLED;
    }
    if (g_log_writer_is_journald(fileno(stderr)) &&
        g_log_writer_journald(level, fields, n_fields, data) == G_LOG_WRITER_HANDLED) {
        return G_LOG_WRITER_HANDLED;
    }
    /* A daemon's stdout is nobody's console: every level goes to stderr. */
    {
        g_autofree char *line = g_log_writer_format_fields(level, fields, n_fields,
                                                           g_log_writer_supports_color(
                                                               fileno(stderr)));
        fprintf(stderr, "%s\n", line);
        fflush(stderr);
    }
    return G_LOG_WRITER_HANDLED;
}

void
berth_daemon_set_log_level(const char *level)
{
    static gsize installed;

    log_threshold = level_from_name(level);
    if (g_once_init_enter(&installed)) {
        g_log_set_writer_func(log_writer, NULL, NULL);
        g_once_init_leave(&installed, 1);
    }
}

/* ---- sinks ---- */

/* One delivery thread per event-sink plugin: a slow sink only ever delays itself. */
typedef struct {
    BerthPluginHandle *plugin;
    BerthBusSub *sub;
    GThread *thread;
    gint stop;
} SinkThread;

static gpointer
sink_main(gpointer data)
{
    SinkThread *st = data;
    const BerthSinkOps *ops = st->plugin->plugin->ops;

    while (!g_atomic_int_get(&st->stop)) {
        const BerthEvent *ev = berth_bus_sub_pop(st->sub, -1);
        if (!ev) {
            continue;
        }
        ops->deliver(st->plugin->priv, ev);
        berth_event_unref(ev);
    }
    return NULL;
}

static void
sinks_start(BerthCore *core)
{
    core->sinks = g_ptr_array_new();
    for (guint i = 0; i < core->plugins->len; i++) {
        BerthPluginHandle *h = core->plugins->pdata[i];
        const BerthSinkOps *ops;
        SinkThread *st;
        g_autofree char *name = NULL;

        if (!h->initialized || h->plugin->kind != BERTH_PLUGIN_EVENT_SINK) {
            continue;
        }
        ops = h->plugin->ops;
        if (!ops->deliver) {
            continue;
        }
        st = g_new0(SinkThread, 1);
        st->plugin = h;
        st->sub = berth_bus_subscribe(core->bus, core->config->sink_queue, 0, NULL);
        name = g_strdup_printf("sink-%s", h->name);
        st->thread = g_thread_new(name, sink_main, st);
        g_ptr_array_add(core->sinks, st);
    }
}

static void
sinks_stop(BerthCore *core)
{
    for (guint i = 0; core->sinks && i < core->sinks->len; i++) {
        SinkThread *st = core->sinks->pdata[i];
        g_atomic_int_set(&st->stop, 1);
        berth_bus_sub_wake(st->sub);
        g_thread_join(st->thread);
        berth_bus_unsubscribe(st->sub);
        g_free(st);
    }
    g_clear_pointer(&core->sinks, g_ptr_array_unref);
}

/* ---- start-up pieces ---- */

static gboolean
listen_sockets(BerthCore *core, GError **error)
{
    BerthConfig *cfg = core->config;
    gboolean rw_done = FALSE;
    gboolean ro_done = FALSE;

#if HAVE_LIBSYSTEMD
    char **names = NULL;
    int n = sd_listen_fds_with_names(1, &names);

    for (int i = 0; i < n; i++) {
        int fd = SD_LISTEN_FDS_START + i;
        gboolean ro = names && names[i] && g_str_equal(names[i], "ro");
        if (!berth_rpc_server_listen_fd(core->server, fd, ro, error)) {
            g_strfreev(names);
            return FALSE;
        }
        if (ro) {
            ro_done = TRUE;
        } else {
            rw_done = TRUE;
        }
        g_info("listening on socket-activated fd %d (%s)", fd, ro ? "read-only" : "read-write");
    }
    g_strfreev(names);
#endif
    if (!rw_done) {
        g_autofree char *dir = g_path_get_dirname(cfg->socket);
        if (!berth_state_mkdir(dir, 0755, error) ||
            !berth_rpc_server_listen_unix(core->server, cfg->socket, FALSE, cfg->socket_mode,
                                          error)) {
            return FALSE;
        }
    }
    if (!ro_done) {
        g_autofree char *dir = g_path_get_dirname(cfg->socket_ro);
        if (!berth_state_mkdir(dir, 0755, error) ||
            !berth_rpc_server_listen_unix(core->server, cfg->socket_ro, TRUE,
                                          cfg->socket_ro_mode, error)) {
            return FALSE;
        }
    }
    if (cfg->tls_listen) {
        core->tls = berth_tls_listener_new(core->server, cfg->tls_listen, &cfg->tls, error);
        if (!core->tls) {
            return FALSE;
        }
        g_message("listening for TLS clients on %s (port %u), certificate '%s'",
                  cfg->tls_listen, berth_tls_listener_port(core->tls),
                  berth_tls_creds_subject(berth_tls_listener_creds(core->tls)));
    }
    return TRUE;
}

/* Re-reads the TLS certificate, key, CA and CRL (@cfg NULL: the same files): new
 * connections use them; open ones keep theirs; on failure the old ones stay. */
static gboolean
reload_tls(BerthCore *core, const BerthTlsConfig *cfg, GError **error)
{
    if (!core->tls) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "no TLS listener is configured ([rpc] tls_listen)");
        return FALSE;
    }
    if (!berth_tls_listener_reload(core->tls, cfg, error)) {
        g_warning("reload: the TLS credentials were not changed: %s", (*error)->message);
        return FALSE;
    }
    g_message("reload: TLS certificate '%s' in use for new connections",
              berth_tls_creds_subject(berth_tls_listener_creds(core->tls)));
    return TRUE;
}

static void
reload_tls_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    BerthCore *core = data;
    g_autoptr(GError) error = NULL;
    BerthTlsCreds *creds;
    g_autofree char *subject = NULL;
    g_autoptr(GDateTime) expires = NULL;
    g_autofree char *when = NULL;

    if (!reload_tls(core, NULL, &error)) {
        berth_rpc_call_reply_error(call, error);
        return;
    }
    creds = berth_tls_listener_creds(core->tls);
    subject = berth_rpc_json_string(berth_tls_creds_subject(creds));
    expires = g_date_time_new_from_unix_utc(berth_tls_creds_expires(creds));
    when = expires ? g_date_time_format_iso8601(expires) : g_strdup("");
    berth_rpc_call_reply(call, g_strdup_printf("{\"certificate\":%s,\"expires\":\"%s\"}",
                                               subject, when));
}

static BerthRpcLimits
limits_of(const BerthConfig *cfg)
{
    BerthRpcLimits l = {
        .max_request = cfg->max_request,
        .max_clients = cfg->max_clients,
        .max_pending = cfg->max_pending,
        .event_queue_len = cfg->event_queue,
        .max_output = 8 * 1024 * 1024,
    };
    return l;
}

void
berth_daemon_register_tls_methods(BerthRpcServer *server, BerthCore *core)
{
    berth_rpc_server_add_method(server, "agent.reload_tls", TRUE, reload_tls_handler, core);
}

/* After a restart: each domain that was active gets its hypervisor plugin's reconnect. */
typedef struct {
    BerthCore *core;
    char *name;
} ReconnectJob;

static void
reconnect_free(gpointer p)
{
    ReconnectJob *rj = p;

    g_free(rj->name);
    g_free(rj);
}

static gboolean
reconnect_job(BerthJob *job, gpointer data, GError **error)
{
    ReconnectJob *rj = data;
    BerthPluginHandle *hv = berth_core_hypervisor(rj->core, error);
    const BerthHypervisorOps *ops;
    g_autoptr(BerthDomain) dom = NULL;
    g_autoptr(BerthDomainDef) def = NULL;

    if (!hv) {
        return FALSE;
    }
    ops = hv->plugin->ops;
    dom = berth_registry_lookup(rj->core->registry, rj->name, error);
    if (!dom) {
        return FALSE;
    }
    if (!ops->domain_reconnect) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "hypervisor plugin '%s' cannot reconnect to running domains", hv->name);
        return FALSE;
    }
    def = berth_domain_get_def(dom);
    return ops->domain_reconnect(hv->priv, def, error);
}

static void
reconnect_done(BerthJob *job, gpointer data)
{
    const GError *err = berth_job_get_error(job);

    if (err) {
        g_warning("reconnect: %s", err->message);
    }
}

static void
reconnect_and_autostart(BerthCore *core, GPtrArray *reconnect)
{
    g_autoptr(GPtrArray) doms = NULL;

    for (guint i = 0; i < reconnect->len; i++) {
        g_autoptr(GError) error = NULL;
        ReconnectJob *rj = g_new0(ReconnectJob, 1);
        BerthJobSpec spec = {
            .struct_size = sizeof(BerthJobSpec),
            .object_kind = "domain",
            .object_name = reconnect->pdata[i],
            .kind = BERTH_JOB_MODIFY,
            .description = "domain.reconnect",
            .func = reconnect_job,
            .data = rj,
            .data_free = reconnect_free,
        };
        rj->core = core;
        rj->name = g_strdup(reconnect->pdata[i]);
        if (!berth_scheduler_submit(core->sched, &spec, "berthd", core->ctx, reconnect_done,
                                    NULL, &error)) {
            g_warning("cannot reconnect to domain '%s': %s", rj->name, error->message);
        }
    }
    doms = berth_registry_list(core->registry);
    for (guint i = 0; i < doms->len; i++) {
        BerthDomainInfo info = berth_domain_get_info(doms->pdata[i]);
        g_autoptr(GError) error = NULL;
        const char *name = berth_domain_get_name(doms->pdata[i]);

        if (!info.autostart || berth_domain_is_active(doms->pdata[i])) {
            continue;
        }
        g_message("autostarting domain '%s'", name);
        if (!berth_daemon_start_domain(core, name, &error)) {
            g_warning("cannot autostart domain '%s': %s", name, error->message);
        }
    }
}

/* ---- signals ---- */

static gboolean
on_sigterm(gpointer data)
{
    BerthCore *core = data;

    g_message("stopping: running domains keep running");
    g_main_loop_quit(core->loop);
    return G_SOURCE_CONTINUE;
}

static void
reload(BerthCore *core)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthConfig) fresh = berth_config_load(core->config_path, &error);
    g_autoptr(GPtrArray) restart = g_ptr_array_new_with_free_func(g_free);
    BerthRpcLimits limits;

    if (!fresh) {
        g_warning("reload: the configuration was not changed: %s", error->message);
    } else {
        berth_config_diff(core->config, fresh, restart);
        for (guint i = 0; i < restart->len; i++) {
            g_warning("reload: %s changed: it takes effect after a restart",
                      (const char *) restart->pdata[i]);
        }
        berth_daemon_set_log_level(fresh->log_level);
        limits = limits_of(fresh);
        berth_rpc_server_set_limits(core->server, &limits);
        if (core->tls) {
            g_autoptr(GError) tls_error = NULL;

            reload_tls(core, &fresh->tls, &tls_error);
        }
        for (guint i = 0; i < core->plugins->len; i++) {
            BerthPluginHandle *h = core->plugins->pdata[i];
            g_autoptr(GError) perr = NULL;
            gboolean changed = FALSE;

            if (!h->initialized) {
                continue;
            }
            if (!h->plugin->reload) {
                if (berth_config_plugin_changed(core->config, fresh, h->name, NULL)) {
                    g_warning("reload: [plugin.%s] changed: plugin '%s' cannot reload, the "
                              "change takes effect after a restart", h->name, h->name);
                }
                continue;
            }
            if (!berth_plugin_reconfigure(h, fresh, &changed, &perr)) {
                g_warning("reload: plugin '%s' keeps its settings: %s", h->name, perr->message);
                continue;
            }
            if (changed && !h->plugin->reload(h->priv, &perr)) {
                g_warning("reload: plugin '%s': %s", h->name, perr->message);
            }
        }
    }
    berth_registry_load(core->registry, NULL);
    g_message("reloaded the configuration and the domains directory");
}

static gboolean
on_sighup(gpointer data)
{
    reload(data);
    return G_SOURCE_CONTINUE;
}

/* ---- run ---- */

static int
list_plugins(BerthConfig *cfg)
{
    g_autoptr(GError) error = NULL;
    GPtrArray *plugins = berth_plugins_load(cfg, &berth_host_table, NULL, FALSE, &error);

    if (!plugins) {
        fprintf(stderr, "berthd: %s\n", error->message);
        return 1;
    }
    printf("%-14s %-12s %-10s %-9s %s\n", "NAME", "KIND", "VERSION", "REQUIRED", "FILE");
    for (guint i = 0; i < plugins->len; i++) {
        BerthPluginHandle *h = plugins->pdata[i];
        printf("%-14s %-12s %-10s %-9s %s\n", h->name,
               h->plugin ? berth_plugin_kind_name(h->plugin->kind) : "-",
               h->plugin ? h->plugin->version : "-", h->required ? "yes" : "no", h->path);
    }
    berth_plugins_free(plugins);
    return 0;
}

int
berth_daemon_run(const BerthDaemonOptions *opts)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) reconnect = g_ptr_array_new_with_free_func(g_free);
    BerthCore core = { 0 };
    BerthRpcLimits limits;
    g_autofree char *status_dir = NULL;
    guint sig_term = 0;
    guint sig_int = 0;
    guint sig_hup = 0;
    int rc = 1;

    berth_daemon_set_log_level(NULL);
    core.config = berth_config_load(opts->config_path, &error);
    if (!core.config) {
        fprintf(stderr, "berthd: %s\n", error->message);
        return 1;
    }
    if (opts->list_plugins) {
        rc = list_plugins(core.config);
        berth_config_free(core.config);
        return rc;
    }
    berth_daemon_set_log_level(core.config->log_level);
    core.config_path = g_strdup(opts->config_path);
    core.started_us = g_get_monotonic_time();
    /* QEMU processes stay ours to reap even when they are started through a helper. */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
        g_warning("cannot become a child subreaper: %s", g_strerror(errno));
    }
    /* A client that goes away mid-write must not kill the daemon. */
    signal(SIGPIPE, SIG_IGN);

    if (!berth_state_mkdir(core.config->state_dir, 0700, &error) ||
        !berth_state_mkdir(core.config->run_dir, 0755, &error)) {
        g_critical("%s", error->message);
        goto out;
    }
    core.ctx = g_main_context_ref(g_main_context_default());
    core.loop = g_main_loop_new(core.ctx, FALSE);
    core.bus = berth_bus_new(core.config->event_ring);
    core.sched = berth_scheduler_new(core.config->workers, core.config->job_history, core.bus);
    status_dir = g_build_filename(core.config->run_dir, "domains", NULL);
    core.registry = berth_registry_new(core.config->domains_dir, status_dir, core.bus, &error);
    if (!core.registry) {
        g_critical("%s", error->message);
        goto out;
    }
    limits = limits_of(core.config);
    core.server = berth_rpc_server_new(core.ctx, core.bus, &limits);
    berth_daemon_register_methods(core.server, &core);
    berth_daemon_register_tls_methods(core.server, &core);

    core.plugins = berth_plugins_load(core.config, &berth_host_table, &core, TRUE, &error);
    if (!core.plugins) {
        g_critical("%s", error->message);
        goto out;
    }
    sinks_start(&core);
    berth_registry_load(core.registry, reconnect);

    /* Before the sockets appear: a SIGHUP sent as soon as berthd answers must not find the
     * default action (which ends the process). The handlers run from the main loop. */
    sig_term = g_unix_signal_add(SIGTERM, on_sigterm, &core);
    sig_int = g_unix_signal_add(SIGINT, on_sigterm, &core);
    sig_hup = g_unix_signal_add(SIGHUP, on_sighup, &core);

    if (!listen_sockets(&core, &error)) {
        g_critical("%s", error->message);
        goto out;
    }
    reconnect_and_autostart(&core, reconnect);

#if HAVE_LIBSYSTEMD
    sd_notify(0, "READY=1\nSTATUS=serving");
#endif
    g_message("berthd %s ready: %s (read-only: %s), %u plugins", BERTH_VERSION,
              core.config->socket, core.config->socket_ro, core.plugins->len);
    g_main_loop_run(core.loop);
#if HAVE_LIBSYSTEMD
    sd_notify(0, "STOPPING=1");
#endif
    rc = 0;

out:
    g_clear_handle_id(&sig_term, g_source_remove);
    g_clear_handle_id(&sig_int, g_source_remove);
    g_clear_handle_id(&sig_hup, g_source_remove);
    /* Order: jobs finish (queued ones are cancelled; the main loop no longer runs, so no new
     * request arrives), then the server and the plugin methods it holds go, sinks drain,
     * plugins stop; QEMU keeps running. */
    g_clear_pointer(&core.sched, berth_scheduler_free);
    /* Parked pool threads would keep their thread-local state (libxml2's) past exit. */
    g_thread_pool_set_max_unused_threads(0);
    g_thread_pool_stop_unused_threads();
    g_clear_pointer(&core.tls, berth_tls_listener_free);
    g_clear_pointer(&core.server, berth_rpc_server_free);
    sinks_stop(&core);
    if (core.plugins) {
        berth_plugins_shutdown(core.plugins);
        berth_plugins_free(core.plugins);
    }
    g_clear_pointer(&core.registry, berth_registry_free);
    g_clear_pointer(&core.bus, berth_bus_free);
    g_clear_pointer(&core.loop, g_main_loop_unref);
    g_clear_pointer(&core.ctx, g_main_context_unref);
    g_free(core.config_path);
    berth_config_free(core.config);
    return rc;
}
