/* A real berthd in a temporary directory, for tests that drive it over its sockets. */
#include "daemon-harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/types.h>
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

Daemon *
daemon_new_full(const char *testhv_keys, const char *rpc_keys)
{
    g_autoptr(GError) error = NULL;
    Daemon *d = g_new0(Daemon, 1);
    g_autofree char *text = NULL;
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
    text = g_strdup_printf("[agent]\n"
                           "config_dir=%s\n"
                           "state_dir=%s/state\n"
                           "run_dir=%s/run\n"
                           "plugin_dir=%s/tests/plugins\n"
                           "domains_dir=%s\n"
                           "plugins=testhv;\n"
                           "required_plugins=testhv;\n"
                           "log_level=debug\n"
                           "[rpc]\n"
                           "unix_socket=%s\n"
                           "unix_socket_ro=%s\n"
                           "%s"
                           "[plugin.testhv]\n"
                           "record=%s\n"
                           "%s",
                           etc, d->dir, d->dir, BERTH_BUILD_ROOT, d->domains, d->sock,
                           d->sock_ro, rpc_keys ? rpc_keys : "", d->record,
                           testhv_keys ? testhv_keys : "");
    g_assert_true(g_file_set_contents(d->conf, text, -1, &error));
    current = d;
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
        g_autoptr(GError) cerr = NULL;

        if (!g_subprocess_get_identifier(d->proc)) {
            break; /* berthd has exited */
        }
        /* Both sockets: the read-only one is created right after the read-write one. */
        c = berth_client_connect(d->sock, &cerr);
        if (c && g_file_test(d->sock_ro, G_FILE_TEST_EXISTS)) {
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

/* Kills what testhv left running (sleep processes) so that nothing outlives the test. */
static void
kill_leftovers(Daemon *d)
{
    g_autofree char *run = g_build_filename(d->dir, "run", "domains", NULL);
    g_autoptr(GDir) dir = g_dir_open(run, 0, NULL);
    const char *e;

    while (dir && (e = g_dir_read_name(dir))) {
        if (g_str_has_suffix(e, ".json") && e[0] != '.') {
            g_autofree char *name = g_strndup(e, strlen(e) - 5);
            int pid = domain_pid(d, name);
            if (pid > 0) {
                kill(pid, SIGKILL);
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
domain_pid(Daemon *d, const char *name)
{
    g_autofree char *path = g_strdup_printf("%s/run/domains/%s.json", d->dir, name);
    g_autofree char *text = NULL;
    g_autofree char *status = NULL;
    const char *p[] = { "plugins", "testhv", NULL };
    int pid = 0;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    status = json_get_string(text, p);
    if (!status || sscanf(status, "{\"pid\":%d}", &pid) != 1) {
        return 0;
    }
    return pid;
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
