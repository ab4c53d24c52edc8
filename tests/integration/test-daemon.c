/* berthd end to end with the test hypervisor: every core method over real sockets. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <yajl/yajl_tree.h>

#include "build-config.h"
#include "daemon-harness.h"

/* Gone or a zombie: after a restart the VM is no longer berthd's child, and whoever inherited
 * it (init) may reap it seconds later. */
static gboolean
process_dead(int pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", pid);
    g_autofree char *stat = NULL;
    const char *close_paren;

    if (kill(pid, 0) < 0 || !g_file_get_contents(path, &stat, NULL, NULL)) {
        return TRUE;
    }
    close_paren = strrchr(stat, ')');
    return close_paren && close_paren[1] == ' ' && close_paren[2] == 'Z';
}

static char *
define(BerthClient *c, const char *name)
{
    g_autofree char *xml = domain_xml(name);
    g_autofree char *esc = g_strescape(xml, NULL);
    g_autofree char *params = g_strdup_printf("{\"xml\":\"%s\"}", esc);

    return call_ok(c, "domain.define", params);
}

static char *
name_param(const char *name)
{
    return g_strdup_printf("{\"name\":\"%s\"}", name);
}

static void
test_info_and_plugins(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *info = NULL;
    g_autofree char *plugins = NULL;
    g_autofree char *pong = NULL;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    info = call_ok(c, "agent.info", NULL);
    g_assert_nonnull(strstr(info, "\"version\":\"" BERTH_VERSION "\""));
    g_assert_nonnull(strstr(info, d->domains));
    plugins = call_ok(c, "agent.plugins", NULL);
    g_assert_nonnull(strstr(plugins, "\"name\":\"testhv\""));
    g_assert_nonnull(strstr(plugins, "\"kind\":\"hypervisor\""));
    pong = call_ok(c, "agent.ping", NULL);
    g_assert_cmpstr(pong, ==, "\"pong\"");
    daemon_stop(d);
}

static void
test_lifecycle(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *defined = NULL;
    g_autofree char *list = NULL;
    g_autofree char *p = name_param("web1");
    g_autofree char *file = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *state = NULL;
    const char *order[] = { "domain-defined", "domain-started", "domain-suspended",
                            "domain-resumed", "domain-stopped", "domain-undefined" };
    int pid;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    ev = daemon_connect(d, TRUE);
    g_free(call_ok(ev, "events.subscribe", NULL));

    defined = define(c, "web1");
    g_assert_nonnull(strstr(defined, "\"name\":\"web1\""));
    file = g_build_filename(d->domains, "web1.xml", NULL);
    g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
    list = call_ok(c, "domain.list", NULL);
    g_assert_nonnull(strstr(list, "\"state\":\"shutoff\""));

    g_free(call_ok(c, "domain.start", p));
    state = domain_state(c, "web1", &reason);
    g_assert_cmpstr(state, ==, "running");
    g_assert_cmpstr(reason, ==, "booted");
    pid = domain_pid(d, "web1");
    g_assert_cmpint(pid, >, 0);
    g_assert_cmpint(kill(pid, 0), ==, 0);

    g_free(call_ok(c, "domain.suspend", p));
    g_free(call_ok(c, "domain.resume", p));
    g_free(call_ok(c, "domain.destroy", p));
    g_free(state);
    g_free(reason);
    state = domain_state(c, "web1", &reason);
    g_assert_cmpstr(state, ==, "shutoff");
    g_assert_cmpstr(reason, ==, "destroyed");
    g_free(call_ok(c, "domain.undefine", p));
    g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));

    /* Every subscriber sees the lifecycle in order. */
    for (gsize i = 0; i < G_N_ELEMENTS(order); i++) {
        g_autofree char *e = wait_event(ev, order[i]);
        g_assert_nonnull(strstr(e, "\"name\":\"web1\""));
    }
    daemon_stop(d);
}

static void
test_errors(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *p = name_param("web1");

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    call_fails(c, "domain.get", "{\"name\":\"nope\"}", BERTH_ERROR_NO_SUCH_DOMAIN);
    call_fails(c, "domain.start", "{\"name\":\"nope\"}", BERTH_ERROR_NO_SUCH_DOMAIN);
    call_fails(c, "domain.start", "{}", BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "domain.start", "{\"name\":7}", BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "domain.define", "{\"xml\":\"<domain><name>x</nam>\"}",
               BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "domain.define", "{\"xml\":\"<domain type='kvm'><name>x</name>"
                                   "<memory>1</memory><vcpu>1</vcpu><devices><video/>"
                                   "</devices></domain>\"}",
               BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "no.such.method", NULL, BERTH_ERROR_UNSUPPORTED);
    g_free(define(c, "web1"));
    call_fails(c, "domain.suspend", p, BERTH_ERROR_INVALID_STATE);
    call_fails(c, "domain.destroy", p, BERTH_ERROR_INVALID_STATE);
    g_free(call_ok(c, "domain.start", p));
    call_fails(c, "domain.start", p, BERTH_ERROR_INVALID_STATE);
    call_fails(c, "domain.resume", p, BERTH_ERROR_INVALID_STATE);
    call_fails(c, "domain.undefine", p, BERTH_ERROR_INVALID_STATE);
    call_fails(c, "job.get", "{\"id\":999999}", BERTH_ERROR_NO_SUCH_JOB);
    call_fails(c, "job.cancel", "{\"id\":0}", BERTH_ERROR_INVALID_ARGUMENT);
    g_free(call_ok(c, "domain.destroy", p));
    /* After all that, the daemon still serves. */
    g_free(call_ok(c, "agent.info", NULL));
    daemon_stop(d);
}

/* Every modifying method is refused on the read-only socket; queries work there. */
static void
test_readonly_socket(void)
{
    static const char *const modifying[] = {
        "domain.define", "domain.undefine", "domain.start", "domain.shutdown",
        "domain.destroy", "domain.suspend", "domain.resume", "domain.reboot", "job.cancel",
        "testhv.emit",
    };
    static const char *const queries[] = {
        "agent.info", "agent.plugins", "domain.list", "job.list", "agent.ping",
    };
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) rw = NULL;
    g_autoptr(BerthClient) ro = NULL;
    g_autofree char *state = NULL;

    daemon_start(d);
    rw = daemon_connect(d, FALSE);
    ro = daemon_connect(d, TRUE);
    g_free(define(rw, "web1"));
    for (gsize i = 0; i < G_N_ELEMENTS(modifying); i++) {
        call_fails(ro, modifying[i], "{\"name\":\"web1\",\"id\":1,\"xml\":\"x\"}",
                   BERTH_ERROR_ACCESS_DENIED);
    }
    for (gsize i = 0; i < G_N_ELEMENTS(queries); i++) {
        g_free(call_ok(ro, queries[i], NULL));
    }
    g_free(call_ok(ro, "domain.get", "{\"name\":\"web1\"}"));
    /* Nothing changed. */
    state = domain_state(ro, "web1", NULL);
    g_assert_cmpstr(state, ==, "shutoff");
    daemon_stop(d);
}

/* QEMU dying under us: the pidfd tells at once, the domain is shutoff/crashed. */
static void
test_crash_detected(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *p = name_param("web1");
    g_autofree char *e = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *state = NULL;
    int pid;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    ev = daemon_connect(d, FALSE);
    g_free(define(c, "web1"));
    g_free(call_ok(c, "domain.start", p));
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"type\":\"domain-stopped\"}}"));
    pid = domain_pid(d, "web1");
    g_assert_cmpint(pid, >, 0);
    g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
    e = wait_event(ev, "domain-stopped");
    g_assert_nonnull(strstr(e, "\"reason\":\"crashed\""));
    state = domain_state(c, "web1", &reason);
    g_assert_cmpstr(state, ==, "shutoff");
    g_assert_cmpstr(reason, ==, "crashed");
    daemon_stop(d);
}

/* SIGTERM leaves domains running; a new berthd reconnects to them and can destroy them. */
static void
test_restart_reconnects(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autofree char *p = name_param("web1");
    g_autofree char *reason = NULL;
    g_autofree char *state = NULL;
    g_autofree char *record = NULL;
    int pid;

    daemon_start(d);
    {
        g_autoptr(BerthClient) c = daemon_connect(d, FALSE);
        g_free(define(c, "web1"));
        g_free(call_ok(c, "domain.start", p));
    }
    pid = domain_pid(d, "web1");
    g_assert_cmpint(pid, >, 0);
    daemon_stop(d);
    g_assert_cmpint(kill(pid, 0), ==, 0);

    daemon_start(d);
    {
        g_autoptr(BerthClient) c = daemon_connect(d, FALSE);
        wait_state(c, "web1", "running");
        g_assert_cmpint(domain_pid(d, "web1"), ==, pid);
        g_free(call_ok(c, "domain.destroy", p));
        state = domain_state(c, "web1", &reason);
        g_assert_cmpstr(state, ==, "shutoff");
        g_assert_cmpstr(reason, ==, "destroyed");
    }
    g_assert_true(g_file_get_contents(d->record, &record, NULL, NULL));
    g_assert_nonnull(strstr(record, "reconnect web1"));
    g_assert_true(process_dead(pid));
    daemon_stop(d);
}

/* The domains dir is the store: SIGHUP defines new files, undefines removed ones, and a file
 * changed while the domain runs waits for the next start. */
/* Calls @method until its result does (@present) or does not contain @needle, for up to 10 s;
 * fails the test otherwise. For what berthd does after a signal, without a reply to wait on. */
static void
poll_until(BerthClient *c, const char *method, const char *params, const char *needle,
           gboolean present)
{
    gint64 end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    gboolean found;

    do {
        g_autofree char *res = call_ok(c, method, params);
        found = strstr(res, needle) != NULL;
        if (found == present) {
            return;
        }
        g_usleep(20000);
    } while (g_get_monotonic_time() < end);
    g_test_message("%s: '%s' %s after 10 s", method, needle, present ? "never came" : "stayed");
    g_assert_true(found == present);
}

static void
test_sighup_rereads_domains(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *xml = domain_xml("db1");
    g_autofree char *path = g_build_filename(d->domains, "db1.xml", NULL);

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    g_assert_true(g_file_set_contents(path, xml, -1, NULL));
    daemon_signal(d, SIGHUP);
    poll_until(c, "domain.list", NULL, "\"name\":\"db1\"", TRUE);

    g_free(call_ok(c, "domain.start", "{\"name\":\"db1\"}"));
    {
        /* Change the file while db1 runs. */
        g_autofree char *changed = g_strdup(xml);
        char *m = strstr(changed, "64</memory>");
        m[0] = '9';
        g_assert_true(g_file_set_contents(path, changed, -1, NULL));
    }
    daemon_signal(d, SIGHUP);
    poll_until(c, "domain.get", "{\"name\":\"db1\"}", "\"pending_definition\":true", TRUE);
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"db1\"}"));

    g_assert_cmpint(unlink(path), ==, 0);
    daemon_signal(d, SIGHUP);
    poll_until(c, "domain.list", NULL, "\"name\":\"db1\"", FALSE);
    daemon_stop(d);
}

static void
test_autostart(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *xml = domain_xml("auto1");
    g_autofree char *path = g_build_filename(d->domains, "auto1.xml", NULL);
    g_autofree char *adir = g_build_filename(d->domains, "autostart", NULL);
    g_autofree char *mark = g_build_filename(adir, "auto1", NULL);

    g_assert_true(g_file_set_contents(path, xml, -1, NULL));
    g_mkdir_with_parents(adir, 0700);
    g_assert_true(g_file_set_contents(mark, "", 0, NULL));
    daemon_start(d);
    c = daemon_connect(d, FALSE);
    wait_state(c, "auto1", "running");
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"auto1\"}"));
    daemon_stop(d);
}

/* A call made on its own connection from a thread, for calls that block while a test acts. */
typedef struct {
    Daemon *d;
    const char *method;
    const char *params;
    GError *error;
} AsyncCall;

static gpointer
async_call_thread(gpointer data)
{
    AsyncCall *ac = data;
    g_autoptr(BerthClient) c = daemon_connect(ac->d, FALSE);
    g_autofree char *res = NULL;

    berth_client_call(c, ac->method, ac->params, &res, &ac->error);
    return NULL;
}

/* A guest that ignores shutdown: destroy interrupts the waiting shutdown job. */
static void
test_destroy_interrupts_shutdown(void)
{
    g_autoptr(Daemon) d = daemon_new("hang_shutdown=true\n");
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *state = NULL;
    g_autofree char *record = NULL;
    AsyncCall sc = { .method = "domain.shutdown", .params = "{\"name\":\"web1\"}" };
    GThread *t;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    g_free(define(c, "web1"));
    g_free(call_ok(c, "domain.start", "{\"name\":\"web1\"}"));
    sc.d = d;
    t = g_thread_new("shutdown", async_call_thread, &sc);
    wait_state(c, "web1", "shutdown");
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"web1\"}"));
    g_thread_join(t);
    g_assert_error(sc.error, BERTH_ERROR, BERTH_ERROR_CANCELLED);
    g_clear_error(&sc.error);
    state = domain_state(c, "web1", &reason);
    g_assert_cmpstr(state, ==, "shutoff");
    g_assert_cmpstr(reason, ==, "destroyed");
    g_assert_true(g_file_get_contents(d->record, &record, NULL, NULL));
    g_assert_nonnull(strstr(record, "shutdown-interrupted web1"));
    daemon_stop(d);
}

/* SIGTERM while a shutdown waits on a guest that ignores it: berthd still stops at once, and
 * the domain keeps running. */
static void
test_sigterm_during_hung_shutdown(void)
{
    g_autoptr(Daemon) d = daemon_new("hang_shutdown=true\n");
    g_autoptr(BerthClient) c = NULL;
    AsyncCall sc = { .method = "domain.shutdown", .params = "{\"name\":\"web1\"}" };
    GThread *t;
    int pid;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    g_free(define(c, "web1"));
    g_free(call_ok(c, "domain.start", "{\"name\":\"web1\"}"));
    pid = domain_pid(d, "web1");
    sc.d = d;
    t = g_thread_new("shutdown", async_call_thread, &sc);
    wait_state(c, "web1", "shutdown");
    daemon_stop(d);
    g_thread_join(t);
    /* The waiting call ended (cancelled, or its connection closed), never hung. */
    g_assert_nonnull(sc.error);
    g_clear_error(&sc.error);
    g_assert_cmpint(pid, >, 0);
    g_assert_cmpint(kill(pid, 0), ==, 0);
}


/* Jobs are listed while they run and can be cancelled through the API. */
static void
test_jobs_list_and_cancel(void)
{
    g_autoptr(Daemon) d = daemon_new("start_delay_ms=60000\n");
    g_autoptr(BerthClient) c = NULL;
    AsyncCall sc = { .method = "domain.start", .params = "{\"name\":\"slow\"}" };
    g_autofree char *jobs = NULL;
    g_autofree char *job = NULL;
    g_autofree char *state = NULL;
    guint64 id = 0;
    gint64 end;
    GThread *t;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    g_free(define(c, "slow"));
    sc.d = d;
    t = g_thread_new("start", async_call_thread, &sc);
    end = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
    while (g_get_monotonic_time() < end) {
        char *at;
        g_free(jobs);
        jobs = call_ok(c, "job.list", NULL);
        at = strstr(jobs, "\"description\":\"domain.start\"");
        if (at && strstr(jobs, "\"state\":\"running\"")) {
            /* The id of the running start job: the last "id" before its description. */
            char *idp = g_strrstr_len(jobs, at - jobs, "{\"id\":");
            id = g_ascii_strtoull(idp + 6, NULL, 10);
            break;
        }
        g_usleep(20000);
    }
    g_assert_cmpuint(id, >, 0);
    {
        g_autofree char *p = g_strdup_printf("{\"id\":%" G_GUINT64_FORMAT "}", id);
        g_free(call_ok(c, "job.cancel", p));
        g_thread_join(t);
        g_assert_error(sc.error, BERTH_ERROR, BERTH_ERROR_CANCELLED);
        g_clear_error(&sc.error);
        job = call_ok(c, "job.get", p);
        g_assert_nonnull(strstr(job, "\"state\":\"cancelled\""));
    }
    state = domain_state(c, "slow", NULL);
    g_assert_cmpstr(state, ==, "shutoff");
    daemon_stop(d);
}

/* A plugin-registered method runs as a job and its event reaches subscribers. */
static void
test_plugin_method_event(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *res = NULL;
    g_autofree char *e = NULL;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    g_free(call_ok(c, "events.subscribe", NULL));
    res = call_ok(c, "testhv.emit", "{\"alias\":\"hostdev0\"}");
    g_assert_nonnull(strstr(res, "\"seq\":"));
    e = wait_event(c, "device-removed");
    g_assert_nonnull(strstr(e, "hostdev0"));
    daemon_stop(d);
}

/* Resume after a reconnect: since=N gives exactly what was missed. */
static void
test_events_since(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) late = NULL;
    g_autofree char *info = NULL;
    g_autofree char *sub = NULL;
    g_autofree char *e1 = NULL;
    g_autofree char *e2 = NULL;
    g_autofree char *params = NULL;
    const char *seqp;
    guint64 seq;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    /* since=0 means "from now on": make the sequence start first. */
    g_free(define(c, "a0"));
    info = call_ok(c, "agent.info", NULL);
    seqp = strstr(info, "\"last_event_seq\":");
    g_assert_nonnull(seqp);
    seq = g_ascii_strtoull(seqp + strlen("\"last_event_seq\":"), NULL, 10);
    g_free(define(c, "a1"));
    g_free(define(c, "a2"));
    late = daemon_connect(d, TRUE);
    params = g_strdup_printf("{\"since\":%" G_GUINT64_FORMAT "}", seq);
    sub = call_ok(late, "events.subscribe", params);
    g_assert_nonnull(strstr(sub, "\"missed\":0"));
    e1 = wait_event(late, "domain-defined");
    g_assert_nonnull(strstr(e1, "\"name\":\"a1\""));
    e2 = wait_event(late, "domain-defined");
    g_assert_nonnull(strstr(e2, "\"name\":\"a2\""));
    {
        /* since 0: a client that saw nothing gets the whole ring, from seq 1 on. */
        g_autoptr(BerthClient) fresh = daemon_connect(d, TRUE);
        g_autofree char *sub0 = call_ok(fresh, "events.subscribe", "{\"since\":0}");
        g_autofree char *first = wait_event(fresh, "domain-defined");
        g_assert_nonnull(strstr(sub0, "\"missed\":0"));
        g_assert_nonnull(strstr(first, "\"name\":\"a0\""));
        g_assert_nonnull(strstr(first, "\"seq\":1,"));
    }
    daemon_stop(d);
}

static int
berthctl(Daemon *d, char **out, const char *a1, const char *a2, const char *a3)
{
    g_autofree char *bin = g_build_filename(BERTH_BUILD_ROOT, "agent", "ctl", "berthctl", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s", d->sock);
    const char *argv[] = { bin, "--connect", uri, a1, a2, a3, NULL };

    return run_cmd(argv, out);
}

static void
test_berthctl(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autofree char *xmlpath = g_build_filename(d->dir, "web9.xml", NULL);
    g_autofree char *xml = domain_xml("web9");
    g_autofree char *out = NULL;
    g_autofree char *bin = g_build_filename(BERTH_BUILD_ROOT, "agent", "ctl", "berthctl", NULL);
    const char *noconn[] = { bin, "--connect", "unix:/nonexistent/berthd.sock", "info", NULL };

    g_assert_true(g_file_set_contents(xmlpath, xml, -1, NULL));
    daemon_start(d);
    g_assert_cmpint(berthctl(d, NULL, "define", xmlpath, NULL), ==, 0);
    g_assert_cmpint(berthctl(d, NULL, "start", "web9", NULL), ==, 0);
    g_assert_cmpint(berthctl(d, &out, "--json", "list", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"name\":\"web9\""));
    g_assert_nonnull(strstr(out, "\"state\":\"running\""));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(berthctl(d, &out, "list", NULL, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "web9"));
    g_assert_nonnull(strstr(out, "running"));
    g_assert_cmpint(berthctl(d, NULL, "destroy", "web9", NULL), ==, 0);
    /* Exit codes scripts rely on: 1 API error, 2 usage, 3 cannot connect. */
    g_assert_cmpint(berthctl(d, NULL, "start", "nope", NULL), ==, 1);
    g_assert_cmpint(berthctl(d, NULL, "no-such-command", NULL, NULL), ==, 2);
    g_assert_cmpint(run_cmd(noconn, NULL), ==, 3);
    daemon_stop(d);
}

/* A required plugin that fails stops start-up with exit code 1; a bad key names itself. */
static void
test_startup_failures(void)
{
    g_autoptr(Daemon) d = daemon_new("no_such_key=1\n");
    g_autofree char *berthd = g_build_filename(BERTH_BUILD_ROOT, "agent", "berthd", NULL);
    const char *argv[] = { berthd, "--config", d->conf, NULL };
    g_autoptr(GError) error = NULL;
    g_autoptr(GSubprocess) p = g_subprocess_newv(argv, G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
    g_autofree char *err = NULL;

    g_assert_no_error(error);
    g_assert_true(g_subprocess_communicate_utf8(p, NULL, NULL, NULL, &err, &error));
    g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 1);
    g_assert_nonnull(strstr(err, "no_such_key"));
    g_assert_nonnull(strstr(err, "plugin.testhv"));
}

static void
test_list_plugins(void)
{
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autofree char *berthd = g_build_filename(BERTH_BUILD_ROOT, "agent", "berthd", NULL);
    g_autofree char *out = NULL;
    const char *argv[] = { berthd, "--config", d->conf, "--list-plugins", NULL };

    g_assert_cmpint(run_cmd(argv, &out), ==, 0);
    g_assert_nonnull(strstr(out, "testhv"));
    g_assert_nonnull(strstr(out, "hypervisor"));
}

/* Defines @name with one disk (vda), a user net and a serial port. */
static void
define_with_devices(BerthClient *c, const char *name)
{
    g_autofree char *xml = g_strdup_printf(
        "<domain type='kvm'><name>%s</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
        "<disk type='file' device='disk'><source file='/var/tmp/x.img'/>"
        "<target dev='vda' bus='virtio'/></disk>"
        "<interface type='user'><model type='virtio'/></interface>"
        "<serial type='null'/>"
        "</devices></domain>",
        name);
    g_autofree char *esc = g_strescape(xml, NULL);
    g_autofree char *params = g_strdup_printf("{\"xml\":\"%s\"}", esc);

    g_free(call_ok(c, "domain.define", params));
}

static char *
dumpxml(BerthClient *c, const char *name)
{
    g_autofree char *p = name_param(name);
    g_autofree char *res = call_ok(c, "domain.get", p);
    char err[128];
    const char *path[] = { "xml", NULL };
    yajl_val root = yajl_tree_parse(res, err, sizeof(err));
    yajl_val v = root ? yajl_tree_get(root, path, yajl_t_string) : NULL;
    char *out = v ? g_strdup(YAJL_GET_STRING(v)) : NULL;

    yajl_tree_free(root);
    g_assert_nonnull(out);
    return out;
}

static void
test_hotplug(void)
{
    g_autoptr(Daemon) d = daemon_new("detach_delay_ms=30\n");
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *p = name_param("hp1");
    g_autofree char *xml = NULL;
    g_autofree char *res = NULL;
    g_autofree char *event = NULL;
    g_autofree char *record = NULL;
    const char *disk = "<disk type='file' device='disk'><source file='/var/tmp/y.img'/>"
                       "<target dev='vdb' bus='virtio'/></disk>";
    g_autofree char *esc = g_strescape(disk, NULL);
    g_autofree char *attach = g_strdup_printf("{\"name\":\"hp1\",\"xml\":\"%s\"}", esc);

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    ev = daemon_connect(d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"object_name\":\"hp1\"}}"));
    define_with_devices(c, "hp1");

    /* Not running: refused. */
    call_fails(c, "domain.attach_device", attach, BERTH_ERROR_INVALID_STATE);
    g_free(call_ok(c, "domain.start", p));

    /* The live definition carries runtime aliases; the persistent one does not. */
    xml = dumpxml(c, "hp1");
    g_assert_nonnull(strstr(xml, "<alias name='virtio-disk0'/>"));
    g_assert_nonnull(strstr(xml, "<alias name='net0'/>"));
    g_assert_nonnull(strstr(xml, "<alias name='serial0'/>"));
    g_clear_pointer(&xml, g_free);

    res = call_ok(c, "domain.attach_device", attach);
    g_assert_nonnull(strstr(res, "\"alias\":\"virtio-disk1\""));
    g_clear_pointer(&res, g_free);
    event = wait_event(ev, "device-added");
    g_assert_nonnull(strstr(event, "virtio-disk1"));
    g_clear_pointer(&event, g_free);
    xml = dumpxml(c, "hp1");
    g_assert_nonnull(strstr(xml, "y.img"));
    g_clear_pointer(&xml, g_free);

    /* The same target twice, and garbage, are refused before the plugin sees them. */
    call_fails(c, "domain.attach_device", attach, BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "domain.attach_device", "{\"name\":\"hp1\",\"xml\":\"<video/>\"}",
               BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "domain.detach_device", "{\"name\":\"hp1\",\"alias\":\"nope0\"}",
               BERTH_ERROR_NO_SUCH_DEVICE);

    /* Detach: the job returns after the teardown; the event follows the teardown. */
    res = call_ok(c, "domain.detach_device", "{\"name\":\"hp1\",\"alias\":\"virtio-disk1\"}");
    g_assert_nonnull(strstr(res, "\"removed\":true"));
    g_clear_pointer(&res, g_free);
    event = wait_event(ev, "device-removed");
    g_assert_nonnull(strstr(event, "virtio-disk1"));
    g_clear_pointer(&event, g_free);
    xml = dumpxml(c, "hp1");
    g_assert_null(strstr(xml, "y.img"));
    g_clear_pointer(&xml, g_free);
    g_assert_true(g_file_get_contents(d->record, &record, NULL, NULL));
    g_assert_nonnull(strstr(record, "device_del hp1 virtio-disk1\nremoved hp1 virtio-disk1"));
    g_clear_pointer(&record, g_free);

    /* The live definition (aliases, hot-plugged devices) survives a berthd restart. */
    g_free(call_ok(c, "domain.attach_device", attach));
    g_clear_pointer(&c, berth_client_free);
    g_clear_pointer(&ev, berth_client_free);
    daemon_stop(d);
    daemon_start(d);
    c = daemon_connect(d, FALSE);
    wait_state(c, "hp1", "running");
    xml = dumpxml(c, "hp1");
    g_assert_nonnull(strstr(xml, "y.img"));
    g_assert_nonnull(strstr(xml, "<alias name='virtio-disk1'/>"));
    g_clear_pointer(&xml, g_free);

    /* Stopped: back to the persistent definition, without runtime aliases or the new disk. */
    g_free(call_ok(c, "domain.destroy", p));
    xml = dumpxml(c, "hp1");
    g_assert_null(strstr(xml, "y.img"));
    g_assert_null(strstr(xml, "<alias"));
    g_clear_pointer(&xml, g_free);
    daemon_stop(d);
}

/* A guest that holds on to the device longer than the detach waits: "removal in progress",
 * then the event when it lets go. */
static void
test_hotplug_removal_in_progress(void)
{
    g_autoptr(Daemon) d = daemon_new("detach_delay_ms=600\ndetach_timeout_ms=50\n");
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *p = name_param("hp2");
    g_autofree char *res = NULL;
    g_autofree char *event = NULL;
    g_autofree char *xml = NULL;

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    ev = daemon_connect(d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"type\":\"device-removed\"}}"));
    define_with_devices(c, "hp2");
    g_free(call_ok(c, "domain.start", p));
    res = call_ok(c, "domain.detach_device", "{\"name\":\"hp2\",\"alias\":\"net0\"}");
    g_assert_nonnull(strstr(res, "\"removed\":false"));
    g_assert_nonnull(strstr(res, "removal in progress"));
    xml = dumpxml(c, "hp2");
    g_assert_nonnull(strstr(xml, "<alias name='net0'/>"));
    g_clear_pointer(&xml, g_free);
    event = wait_event(ev, "device-removed");
    g_assert_nonnull(strstr(event, "net0"));
    xml = dumpxml(c, "hp2");
    g_assert_null(strstr(xml, "<alias name='net0'/>"));
    g_free(call_ok(c, "domain.destroy", p));
    daemon_stop(d);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/daemon/agent/info-and-plugins", test_info_and_plugins);
    g_test_add_func("/daemon/domain/lifecycle", test_lifecycle);
    g_test_add_func("/daemon/domain/errors", test_errors);
    g_test_add_func("/daemon/rpc/readonly-socket", test_readonly_socket);
    g_test_add_func("/daemon/domain/crash-detected", test_crash_detected);
    g_test_add_func("/daemon/restart-reconnects", test_restart_reconnects);
    g_test_add_func("/daemon/sighup-rereads-domains", test_sighup_rereads_domains);
    g_test_add_func("/daemon/autostart", test_autostart);
    g_test_add_func("/daemon/destroy-interrupts-shutdown", test_destroy_interrupts_shutdown);
    g_test_add_func("/daemon/sigterm-during-hung-shutdown", test_sigterm_during_hung_shutdown);
    g_test_add_func("/daemon/jobs/list-and-cancel", test_jobs_list_and_cancel);
    g_test_add_func("/daemon/plugin-method-event", test_plugin_method_event);
    g_test_add_func("/daemon/events/since", test_events_since);
    g_test_add_func("/daemon/berthctl", test_berthctl);
    g_test_add_func("/daemon/startup-failures", test_startup_failures);
    g_test_add_func("/daemon/list-plugins", test_list_plugins);
    g_test_add_func("/daemon/hotplug", test_hotplug);
    g_test_add_func("/daemon/hotplug/removal-in-progress", test_hotplug_removal_in_progress);
    return g_test_run();
}
