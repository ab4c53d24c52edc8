/* A real berthd in a temporary directory, for tests that drive it over its sockets. */
#include "daemon-harness.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "build-config.h"

/* The daemon of the running test, whose log a failing call prints. */
static Daemon *current;

static void
print_log(void)
{
    g_autofree char *log = NULL;

    if (current && g_file_get_contents(current->log, &log, NULL, NULL)) {
        g_test_message("berthd log:\n%s", log);
    }
}

Daemon *
daemon_new(const char *testhv_keys)
{
    return daemon_new_full(testhv_keys, NULL);
}

/* The paths of a new Daemon in a new temp dir, without a config yet. */
static Daemon *
daemon_alloc(void)
{
    g_autoptr(GError) error = NULL;
    Daemon *d = g_new0(Daemon, 1);
    g_autofree char *etc = NULL;

    d->dir = g_dir_make_tmp("berthd-test-XXXXXX", &error);
    g_assert_no_error(error);
    etc = g_build_filename(d->dir, "etc", NULL);
    d->domains = g_build_filename(etc, "domains", NULL);
    g_mkdir_with_parents(d->domains, 0700);
    d->conf = g_build_filename(etc, "berthd.conf", NULL);
    d->sock = g_build_filename(d->dir, "run", "berthd.sock", NULL);
    d->sock_ro = g_build_filename(d->dir, "run", "berthd-ro.sock", NULL);
    d->record = g_build_filename(d->dir, "record", NULL);
    d->log = g_build_filename(d->dir, "berthd.log", NULL);
    return d;
}

/* Writes the config: [agent] loading @plugins (all required) from @plugin_dir, [rpc] with
 * @rpc_keys, then @sections. */
static void
daemon_write_conf(Daemon *d, const char *plugin_dir, const char *plugins, const char *rpc_keys,
                  const char *sections)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *etc = g_path_get_dirname(d->conf);
    g_autofree char *text = g_strdup_printf("[agent]\n"
                                            "config_dir=%s\n"
                                            "state_dir=%s/state\n"
                                            "run_dir=%s/run\n"
                                            "plugin_dir=%s\n"
                                            "domains_dir=%s\n"
                                            "plugins=%s\n"
                                            "required_plugins=%s\n"
                                            "log_level=debug\n"
                                            "[rpc]\n"
                                            "unix_socket=%s\n"
                                            "unix_socket_ro=%s\n"
                                            "%s"
                                            "%s",
                                            etc, d->dir, d->dir, plugin_dir, d->domains, plugins,
                                            plugins, d->sock, d->sock_ro,
                                            rpc_keys ? rpc_keys : "", sections ? sections : "");

    g_assert_true(g_file_set_contents(d->conf, text, -1, &error));
    current = d;
}

Daemon *
daemon_new_full(const char *testhv_keys, const char *rpc_keys)
{
    Daemon *d = daemon_alloc();
    g_autofree char *plugin_dir = g_build_filename(BERTH_BUILD_ROOT, "tests", "plugins", NULL);
    g_autofree char *sections = g_strdup_printf("[plugin.testhv]\n"
                                                "record=%s\n"
                                                "%s",
                                                d->record, testhv_keys ? testhv_keys : "");

    daemon_write_conf(d, plugin_dir, "testhv;", rpc_keys, sections);
    return d;
}

/* Where the build tree has plugin @name: plugins/NAME/NAME.so, else tests/plugins/NAME.so. */
static char *
plugin_path(const char *name)
{
    g_autofree char *file = g_strdup_printf("%s.so", name);
    char *path = g_build_filename(BERTH_BUILD_ROOT, "plugins", name, file, NULL);

    if (!g_file_test(path, G_FILE_TEST_EXISTS)) {
        g_free(path);
        path = g_build_filename(BERTH_BUILD_ROOT, "tests", "plugins", file, NULL);
    }
    return path;
}

Daemon *
daemon_new_plugins(const char *plugins, const char *plugin_sections)
{
    Daemon *d = daemon_alloc();
    g_autofree char *plugin_dir = g_build_filename(d->dir, "plugins", NULL);
    g_auto(GStrv) names = g_strsplit(plugins, ";", -1);

    g_assert_cmpint(g_mkdir(plugin_dir, 0755), ==, 0);
    for (char **n = names; *n; n++) {
        g_autofree char *target = NULL;
        g_autofree char *file = NULL;
        g_autofree char *link = NULL;

        if (!**n) {
            continue;
        }
        target = plugin_path(*n);
        g_assert_true(g_file_test(target, G_FILE_TEST_EXISTS));
        file = g_strdup_printf("%s.so", *n);
        link = g_build_filename(plugin_dir, file, NULL);
        g_assert_cmpint(symlink(target, link), ==, 0);
    }
    daemon_write_conf(d, plugin_dir, plugins, NULL, plugin_sections);
    return d;
}

/* berthd goes with the test: a test that aborts leaves no daemon holding its output open. */
static void
die_with_parent(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

void
daemon_start(Daemon *d)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_NONE);
    g_autofree char *berthd = g_build_filename(BERTH_BUILD_ROOT, "agent", "berthd", NULL);
    gint64 end = g_get_monotonic_time() + 15 * G_USEC_PER_SEC;

    g_subprocess_launcher_set_stderr_file_path(l, d->log);
    g_subprocess_launcher_set_child_setup(l, die_with_parent, NULL, NULL);
    g_subprocess_launcher_setenv(l, "G_MESSAGES_DEBUG", "", TRUE);
    g_subprocess_launcher_setenv(l, "LSAN_OPTIONS",
                                 "suppressions=" BERTH_SOURCE_ROOT "/tests/lsan.supp", TRUE);
    d->proc = g_subprocess_launcher_spawn(l, &error, berthd, "--config", d->conf,
                                          "--foreground", NULL);
    g_assert_no_error(error);
    while (g_get_monotonic_time() < end) {
        g_autoptr(BerthClient) c = NULL;
        g_autoptr(BerthClient) ro = NULL;

        if (!g_subprocess_get_identifier(d->proc)) {
            break; /* berthd has exited */
        }
        /* Both sockets answer (files left by a killed berthd do not count). */
        c = berth_client_connect(d->sock, NULL);
        ro = c ? berth_client_connect(d->sock_ro, NULL) : NULL;
        if (ro) {
            return;
        }
        g_usleep(20 * 1000);
    }
    print_log();
    g_assert_not_reached();
}

void
daemon_signal(Daemon *d, int sig)
{
    g_subprocess_send_signal(d->proc, sig);
}

void
daemon_kill(Daemon *d)
{
    if (!d->proc) {
        return;
    }
    g_subprocess_force_exit(d->proc);
    g_assert_true(g_subprocess_wait(d->proc, NULL, NULL));
    g_clear_object(&d->proc);
}

void
daemon_stop(Daemon *d)
{
    g_autoptr(GError) error = NULL;

    if (!d->proc) {
        return;
    }
    g_subprocess_send_signal(d->proc, SIGTERM);
    g_assert_true(g_subprocess_wait(d->proc, NULL, &error));
    if (!g_subprocess_get_if_exited(d->proc) || g_subprocess_get_exit_status(d->proc) != 0) {
        print_log();
    }
    g_assert_true(g_subprocess_get_if_exited(d->proc));
    g_assert_cmpint(g_subprocess_get_exit_status(d->proc), ==, 0);
    g_clear_object(&d->proc);
}

/* The "pid" in the live status that @plugin saved in @path (RUN_DIR/domains/NAME.json), or
 * 0; the status is a JSON object kept as a string under "plugins"->PLUGIN. */
static int
status_pid(const char *path, const char *plugin)
{
    g_autofree char *text = NULL;
    const char *p_status[] = { "plugins", plugin, NULL };
    const char *p_pid[] = { "pid", NULL };
    yajl_val root = NULL;
    yajl_val status = NULL;
    yajl_val v;
    int pid = 0;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    root = yajl_tree_parse(text, NULL, 0);
    v = root ? yajl_tree_get(root, p_status, yajl_t_string) : NULL;
    status = v ? yajl_tree_parse(YAJL_GET_STRING(v), NULL, 0) : NULL;
    v = status ? yajl_tree_get(status, p_pid, yajl_t_number) : NULL;
    if (v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) > 0 && YAJL_GET_INTEGER(v) <= G_MAXINT) {
        pid = (int) YAJL_GET_INTEGER(v);
    }
    yajl_tree_free(status);
    yajl_tree_free(root);
    return pid;
}

/* Kills what the hypervisor plugins left running (testhv's sleep processes, QEMU) so that
 * nothing outlives the test. */
static void
kill_leftovers(Daemon *d)
{
    static const char *const plugins[] = { "testhv", "qemu" };
    g_autofree char *run = g_build_filename(d->dir, "run", "domains", NULL);
    g_autoptr(GDir) dir = g_dir_open(run, 0, NULL);
    const char *e;

    while (dir && (e = g_dir_read_name(dir))) {
        if (g_str_has_suffix(e, ".json") && e[0] != '.') {
            g_autofree char *path = g_build_filename(run, e, NULL);

            for (gsize i = 0; i < G_N_ELEMENTS(plugins); i++) {
                int pid = status_pid(path, plugins[i]);
                if (pid > 0) {
                    kill(pid, SIGKILL);
                }
            }
        }
    }
}

void
daemon_free(Daemon *d)
{
    g_autofree char *cmd = NULL;

    if (!d) {
        return;
    }
    if (current == d) {
        current = NULL;
    }
    if (d->proc) {
        g_subprocess_force_exit(d->proc);
        g_subprocess_wait(d->proc, NULL, NULL);
        g_clear_object(&d->proc);
    }
    kill_leftovers(d);
    cmd = g_strdup_printf("rm -rf '%s'", d->dir);
    if (system(cmd) != 0) {
        g_test_message("cannot remove %s", d->dir);
    }
    g_free(d->dir);
    g_free(d->conf);
    g_free(d->sock);
    g_free(d->sock_ro);
    g_free(d->domains);
    g_free(d->record);
    g_free(d->log);
    g_free(d);
}

BerthClient *
daemon_connect(Daemon *d, gboolean readonly)
{
    g_autoptr(GError) error = NULL;
    BerthClient *c = berth_client_connect(readonly ? d->sock_ro : d->sock, &error);

    g_assert_no_error(error);
    berth_client_set_call_timeout(c, 30000);
    return c;
}

char *
call_ok(BerthClient *c, const char *method, const char *params)
{
    g_autoptr(GError) error = NULL;
    char *result = NULL;

    if (!berth_client_call(c, method, params, &result, &error)) {
        g_test_message("%s %s: %s", method, params ? params : "", error->message);
        print_log();
    }
    g_assert_no_error(error);
    return result;
}

void
call_fails(BerthClient *c, const char *method, const char *params, int code)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *result = NULL;

    g_assert_false(berth_client_call(c, method, params, &result, &error));
    if (!g_error_matches(error, BERTH_ERROR, code)) {
        g_test_message("%s %s: expected code %d, got %s %d: %s", method, params, code,
                       g_quark_to_string(error->domain), error->code, error->message);
    }
    g_assert_error(error, BERTH_ERROR, code);
}

char *
domain_xml(const char *name)
{
    return g_strdup_printf("<domain type='kvm'>\n"
                           "  <name>%s</name>\n"
                           "  <memory unit='MiB'>64</memory>\n"
                           "  <vcpu>1</vcpu>\n"
                           "  <os>\n"
                           "    <type arch='x86_64' machine='q35'>hvm</type>\n"
                           "  </os>\n"
                           "</domain>\n",
                           name);
}

static char *
json_get_string(const char *json, const char *const *path)
{
    char err[128];
    yajl_val root = yajl_tree_parse(json, err, sizeof(err));
    yajl_val v = root ? yajl_tree_get(root, (const char **) path, yajl_t_string) : NULL;
    char *out = v ? g_strdup(YAJL_GET_STRING(v)) : NULL;

    yajl_tree_free(root);
    return out;
}

char *
wait_event(BerthClient *c, const char *type)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    while (g_get_monotonic_time() < end) {
        g_autoptr(GError) error = NULL;
        g_autofree char *method = NULL;
        char *params = NULL;
        g_autofree char *t = NULL;
        const char *path[] = { "type", NULL };

        if (!berth_client_next_notification(c, 1000, &method, &params, &error)) {
            g_assert_no_error(error);
            continue;
        }
        t = json_get_string(params, path);
        if (g_strcmp0(method, "event") == 0 && g_strcmp0(t, type) == 0) {
            return params;
        }
        g_free(params);
    }
    g_test_message("no '%s' event within 10 s", type);
    g_assert_not_reached();
}

char *
wait_event_of(BerthClient *c, const char *type, const char *name, gint64 timeout_ms)
{
    gint64 end = g_get_monotonic_time() + timeout_ms * G_TIME_SPAN_MILLISECOND;
    const char *p_type[] = { "type", NULL };
    const char *p_name[] = { "object", "name", NULL };

    while (g_get_monotonic_time() < end) {
        g_autoptr(GError) error = NULL;
        g_autofree char *method = NULL;
        g_autofree char *t = NULL;
        g_autofree char *n = NULL;
        char *params = NULL;
        gint64 left = (end - g_get_monotonic_time()) / G_TIME_SPAN_MILLISECOND;

        if (!berth_client_next_notification(c, MAX(left, 1), &method, &params, &error)) {
            g_assert_no_error(error);
            continue;
        }
        t = json_get_string(params, p_type);
        n = json_get_string(params, p_name);
        if (g_strcmp0(method, "event") == 0 && g_strcmp0(t, type) == 0 &&
            g_strcmp0(n, name) == 0) {
            return params;
        }
        g_free(params);
    }
    g_test_message("no '%s' event of domain '%s' within %" G_GINT64_FORMAT " ms", type, name,
                   timeout_ms);
    print_log();
    g_assert_not_reached();
}

char *
domain_state(BerthClient *c, const char *name, char **reason)
{
    g_autofree char *params = g_strdup_printf("{\"name\":\"%s\"}", name);
    g_autofree char *res = call_ok(c, "domain.get", params);
    const char *p_state[] = { "state", NULL };
    const char *p_reason[] = { "reason", NULL };

    if (reason) {
        *reason = json_get_string(res, p_reason);
    }
    return json_get_string(res, p_state);
}

void
wait_state(BerthClient *c, const char *name, const char *state)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;

    while (g_get_monotonic_time() < end) {
        g_autofree char *s = domain_state(c, name, NULL);
        if (g_strcmp0(s, state) == 0) {
            return;
        }
        g_usleep(10 * 1000);
    }
    g_test_message("domain '%s' did not reach state '%s'", name, state);
    g_assert_not_reached();
}

int
domain_plugin_pid(Daemon *d, const char *plugin, const char *name)
{
    g_autofree char *path = g_strdup_printf("%s/run/domains/%s.json", d->dir, name);

    return status_pid(path, plugin);
}

int
domain_pid(Daemon *d, const char *name)
{
    return domain_plugin_pid(d, "testhv", name);
}

int
run_cmd(const char *const *argv, char **out)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GSubprocess) p = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                                                           G_SUBPROCESS_FLAGS_STDERR_SILENCE,
                                                 &error);
    g_autofree char *stdout_buf = NULL;

    g_assert_no_error(error);
    g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, &stdout_buf, NULL, &error));
    if (out) {
        *out = g_steal_pointer(&stdout_buf);
    }
    return g_subprocess_get_exit_status(p);
}
