/* The qemu plugin inside a real berthd, with real QEMU: lifecycle, the destroy ladder, crash
 * detection and its latency, hotplug, a berthd crash with domains running, parallel starts.
 *
 * The guests have no OS: QEMU sits in its firmware, which is all the lifecycle needs; native
 * PCIe hotplug on q35 completes an unplug without a guest. Every QEMU a test learns about is
 * tracked by pidfd and SIGKILLed at the end of the test, also when it fails (an abort handler
 * does it then). This process is a child subreaper, so that QEMUs orphaned by a killed berthd
 * come back to it rather than to a pid 1 that may not reap them. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "build-config.h"
#include "daemon-harness.h"

#define MAX_TRACKED 256

/* Processes to SIGKILL when a test ends or aborts: pidfds, written before the count grows so
 * that the signal handler only sees complete entries. */
static int tracked_fd[MAX_TRACKED];
static pid_t tracked_pid[MAX_TRACKED];
static volatile sig_atomic_t n_tracked;

/* The running test's temp dir: every QEMU whose command line names it is the test's, also
 * one that berthd spawned but the test did not learn about yet (a start in flight). */
static char test_dir[512];
static char cmdline_buf[65536];

static const char *accel = "qemu"; /* the domain type: kvm when /dev/kvm is usable */

static void
kill_tracked_now(void)
{
    for (int i = 0; i < n_tracked; i++) {
        if (tracked_fd[i] >= 0) {
            syscall(SYS_pidfd_send_signal, tracked_fd[i], SIGKILL, NULL, 0);
        }
    }
}

/* SIGKILLs every qemu-system process whose command line names test_dir. Async-signal-safe
 * (raw syscalls, static buffers): it runs in the abort handler. */
static void
kill_test_qemus(void)
{
    struct dirent64_raw {
        guint64 ino;
        gint64 off;
        unsigned short reclen;
        unsigned char type;
        char name[];
    };
    char dents[4096] __attribute__((aligned(8)));
    size_t dir_len = strlen(test_dir);
    long n;
    int dfd;

    if (dir_len == 0) {
        return;
    }
    dfd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        return;
    }
    while ((n = syscall(SYS_getdents64, dfd, dents, sizeof dents)) > 0) {
        for (long off = 0; off < n;) {
            struct dirent64_raw *de = (struct dirent64_raw *) (dents + off);
            char path[64] = "/proc/";
            size_t len = strlen(path);
            pid_t pid = 0;
            ssize_t got;
            int fd;

            off += de->reclen;
            for (const char *c = de->name; *c && len < sizeof path - 16; c++) {
                if (*c < '0' || *c > '9') {
                    pid = 0;
                    break;
                }
                pid = pid * 10 + (*c - '0');
                path[len++] = *c;
            }
            if (pid <= 0) {
                continue;
            }
            memcpy(path + len, "/cmdline", sizeof "/cmdline");
            fd = open(path, O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                continue;
            }
            got = read(fd, cmdline_buf, sizeof cmdline_buf);
            close(fd);
            if (got > 0 && memmem(cmdline_buf, (size_t) got, "qemu-system", 11) &&
                memmem(cmdline_buf, (size_t) got, test_dir, dir_len)) {
                kill(pid, SIGKILL);
            }
        }
    }
    close(dfd);
}

/* A failing assertion aborts: no QEMU outlives the test. berthd itself dies with this
 * process (PR_SET_PDEATHSIG in the harness). */
static void
on_fatal_signal(int sig)
{
    kill_tracked_now();
    kill_test_qemus();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void
track(pid_t pid)
{
    int fd;

    g_assert_cmpint(pid, >, 0);
    g_assert_cmpint(n_tracked, <, MAX_TRACKED);
    fd = (int) syscall(SYS_pidfd_open, pid, 0);
    g_assert_cmpint(fd, >=, 0);
    tracked_fd[n_tracked] = fd;
    tracked_pid[n_tracked] = pid;
    n_tracked++;
}

/* Kills everything tracked, waits until each is gone and reaps those that are ours. */
static void
kill_tracked(void)
{
    kill_tracked_now();
    for (int i = 0; i < n_tracked; i++) {
        struct pollfd pfd = { .fd = tracked_fd[i], .events = POLLIN };

        if (tracked_fd[i] < 0) {
            continue;
        }
        if (poll(&pfd, 1, 10000) != 1) {
            g_test_message("pid %d is still there 10 s after SIGKILL", (int) tracked_pid[i]);
        }
        waitpid(tracked_pid[i], NULL, WNOHANG);
        close(tracked_fd[i]);
        tracked_fd[i] = -1;
    }
    n_tracked = 0;
}

/* Gone, or a zombie that nobody reaped yet. */
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

/* The live QEMU processes whose command line names a path under @d's dir. */
static int
count_qemus(Daemon *d)
{
    g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
    const char *e;
    int n = 0;

    g_assert_nonnull(proc);
    while ((e = g_dir_read_name(proc))) {
        g_autofree char *path = NULL;
        g_autofree char *cmdline = NULL;
        gsize len = 0;
        gboolean ours = FALSE;

        if (!g_ascii_isdigit(e[0])) {
            continue;
        }
        path = g_strdup_printf("/proc/%s/cmdline", e);
        if (!g_file_get_contents(path, &cmdline, &len, NULL) || len == 0) {
            continue;
        }
        if (!strstr(cmdline, "qemu-system")) {
            continue;
        }
        for (gsize off = 0; off < len; off += strlen(cmdline + off) + 1) {
            ours = ours || strstr(cmdline + off, d->dir) != NULL;
        }
        if (ours && !process_dead(atoi(e))) {
            n++;
        }
    }
    return n;
}

/* One test's berthd; the teardown kills what the test started. */
typedef struct {
    Daemon *d;
} Fixture;

static gboolean have_qemu;

static void
fx_setup(Fixture *fx, gconstpointer data)
{
    const char *sections = data;

    if (!have_qemu) {
        return;
    }
    fx->d = daemon_new_plugins("qemu;", sections ? sections : "");
    g_assert_cmpuint(strlen(fx->d->dir), <, sizeof test_dir);
    g_strlcpy(test_dir, fx->d->dir, sizeof test_dir);
    daemon_start(fx->d);
}

static void
fx_teardown(Fixture *fx, gconstpointer data)
{
    kill_tracked();
    kill_test_qemus();
    g_clear_pointer(&fx->d, daemon_free);
    test_dir[0] = '\0';
}

static gboolean
fx_ready(Fixture *fx)
{
    if (!fx->d) {
        g_test_skip("qemu-system-x86_64 is not installed");
        return FALSE;
    }
    return TRUE;
}

static char *
json_str(const char *json, const char *k1, const char *k2)
{
    const char *path[] = { k1, k2, NULL };
    yajl_val root = yajl_tree_parse(json, NULL, 0);
    yajl_val v = root ? yajl_tree_get(root, path, yajl_t_string) : NULL;
    char *out = v ? g_strdup(YAJL_GET_STRING(v)) : NULL;

    yajl_tree_free(root);
    return out;
}

static int
json_bool(const char *json, const char *key)
{
    const char *path[] = { key, NULL };
    yajl_val root = yajl_tree_parse(json, NULL, 0);
    yajl_val v = root ? yajl_tree_get(root, path, yajl_t_any) : NULL;
    int out = v && YAJL_IS_TRUE(v) ? 1 : v && YAJL_IS_FALSE(v) ? 0 : -1;

    yajl_tree_free(root);
    return out;
}

/* Asserts that a lifecycle result (or an event's detail) has @state and @reason. */
static void
assert_result(const char *json, const char *k1, const char *state, const char *reason)
{
    g_autofree char *s = k1 ? json_str(json, k1, "state") : json_str(json, "state", NULL);
    g_autofree char *r = k1 ? json_str(json, k1, "reason") : json_str(json, "reason", NULL);

    if (g_strcmp0(s, state) != 0 || g_strcmp0(r, reason) != 0) {
        g_test_message("expected %s/%s in %s", state, reason, json);
    }
    g_assert_cmpstr(s, ==, state);
    g_assert_cmpstr(r, ==, reason);
}

static char *
name_param(const char *name)
{
    return g_strdup_printf("{\"name\":\"%s\"}", name);
}

/* Defines @name: q35, 64 MiB, one vcpu, no OS; @features and @devices may be NULL. */
static void
define(BerthClient *c, const char *name, const char *features, const char *devices)
{
    g_autofree char *xml = g_strdup_printf("<domain type='%s'>\n"
                                           "  <name>%s</name>\n"
                                           "  <memory unit='MiB'>64</memory>\n"
                                           "  <vcpu>1</vcpu>\n"
                                           "  <os><type arch='x86_64' machine='q35'>hvm</type>"
                                           "</os>\n"
                                           "  %s\n"
                                           "  <devices>%s</devices>\n"
                                           "</domain>\n",
                                           accel, name, features ? features : "",
                                           devices ? devices : "");
    g_autofree char *esc = g_strescape(xml, NULL);
    g_autofree char *params = g_strdup_printf("{\"xml\":\"%s\"}", esc);

    g_free(call_ok(c, "domain.define", params));
}

/* Starts @name, checks it runs, tracks its QEMU and returns its pid. */
static int
start(Fixture *fx, BerthClient *c, const char *name)
{
    g_autofree char *p = name_param(name);
    g_autofree char *res = call_ok(c, "domain.start", p);
    int pid;

    assert_result(res, NULL, "running", "booted");
    pid = domain_plugin_pid(fx->d, "qemu", name);
    g_assert_cmpint(pid, >, 0);
    track(pid);
    g_assert_false(process_dead(pid));
    return pid;
}

static char *
live_xml(BerthClient *c, const char *name)
{
    g_autofree char *p = name_param(name);
    g_autofree char *res = call_ok(c, "domain.get", p);
    char *xml = json_str(res, "xml", NULL);

    g_assert_nonnull(xml);
    return xml;
}

static int
cmp_double(gconstpointer a, gconstpointer b)
{
    double x = *(const double *) a;
    double y = *(const double *) b;

    return x < y ? -1 : x > y;
}

static double
median(double *v, guint n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double
ms_since(gint64 t0)
{
    return (double) (g_get_monotonic_time() - t0) / 1000.0;
}

/* Ten starts and destroys of one domain: states, events, and no QEMU left after each. */
static void
test_start_destroy_cycles(Fixture *fx, gconstpointer data)
{
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *p = name_param("cyc");
    double start_ms[10];
    double destroy_ms[10];

    if (!fx_ready(fx)) {
        return;
    }
    c = daemon_connect(fx->d, FALSE);
    ev = daemon_connect(fx->d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"object_name\":\"cyc\"}}"));
    define(c, "cyc", NULL, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(start_ms); i++) {
        g_autofree char *res = NULL;
        g_autofree char *e = NULL;
        g_autofree char *state = NULL;
        g_autofree char *reason = NULL;
        gint64 t0 = g_get_monotonic_time();
        int pid = start(fx, c, "cyc");

        start_ms[i] = ms_since(t0);
        e = wait_event_of(ev, "domain-started", "cyc", 10000);
        assert_result(e, "detail", "running", "booted");
        g_clear_pointer(&e, g_free);
        state = domain_state(c, "cyc", &reason);
        g_assert_cmpstr(state, ==, "running");
        g_assert_cmpstr(reason, ==, "booted");
        g_assert_cmpint(count_qemus(fx->d), ==, 1);

        t0 = g_get_monotonic_time();
        res = call_ok(c, "domain.destroy", p);
        destroy_ms[i] = ms_since(t0);
        assert_result(res, NULL, "shutoff", "destroyed");
        e = wait_event_of(ev, "domain-stopped", "cyc", 10000);
        assert_result(e, "detail", "shutoff", "destroyed");
        g_assert_true(process_dead(pid));
        g_assert_cmpint(count_qemus(fx->d), ==, 0);
        g_assert_cmpint(domain_plugin_pid(fx->d, "qemu", "cyc"), ==, 0);
    }
    g_test_message("accel %s: start median %.1f ms, destroy median %.1f ms (10 cycles)", accel,
                   median(start_ms, 10), median(destroy_ms, 10));
    g_free(call_ok(c, "domain.undefine", p));
    daemon_stop(fx->d);
}

/* suspend/resume/reboot through QMP, and a paused start. */
static void
test_suspend_resume_reboot(Fixture *fx, gconstpointer data)
{
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *p = name_param("srr");
    g_autofree char *e = NULL;
    g_autofree char *res = NULL;
    g_autofree char *state = NULL;
    int pid;

    if (!fx_ready(fx)) {
        return;
    }
    c = daemon_connect(fx->d, FALSE);
    ev = daemon_connect(fx->d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"object_name\":\"srr\"}}"));
    define(c, "srr", NULL, NULL);
    pid = start(fx, c, "srr");

    res = call_ok(c, "domain.suspend", p);
    assert_result(res, NULL, "paused", "user");
    e = wait_event_of(ev, "domain-suspended", "srr", 10000);
    assert_result(e, "detail", "paused", "user");
    g_clear_pointer(&e, g_free);
    state = domain_state(c, "srr", NULL);
    g_assert_cmpstr(state, ==, "paused");
    g_clear_pointer(&state, g_free);
    call_fails(c, "domain.suspend", p, BERTH_ERROR_INVALID_STATE);
    g_clear_pointer(&res, g_free);

    res = call_ok(c, "domain.resume", p);
    assert_result(res, NULL, "running", "unpaused");
    e = wait_event_of(ev, "domain-resumed", "srr", 10000);
    assert_result(e, "detail", "running", "unpaused");
    g_clear_pointer(&e, g_free);
    call_fails(c, "domain.resume", p, BERTH_ERROR_INVALID_STATE);
    g_clear_pointer(&res, g_free);

    /* system_reset: QEMU's RESET is published; the same process goes on running. */
    res = call_ok(c, "domain.reboot", p);
    g_assert_nonnull(strstr(res, "\"state\":\"running\""));
    e = wait_event_of(ev, "domain-rebooted", "srr", 10000);
    g_clear_pointer(&e, g_free);
    state = domain_state(c, "srr", NULL);
    g_assert_cmpstr(state, ==, "running");
    g_clear_pointer(&state, g_free);
    g_assert_cmpint(domain_plugin_pid(fx->d, "qemu", "srr"), ==, pid);
    g_assert_false(process_dead(pid));
    g_clear_pointer(&res, g_free);

    res = call_ok(c, "domain.destroy", p);
    assert_result(res, NULL, "shutoff", "destroyed");
    g_clear_pointer(&res, g_free);
    g_assert_true(process_dead(pid));

    /* Started paused: CPUs stopped until resume. */
    res = call_ok(c, "domain.start", "{\"name\":\"srr\",\"paused\":true}");
    assert_result(res, NULL, "paused", "user");
    g_clear_pointer(&res, g_free);
    pid = domain_plugin_pid(fx->d, "qemu", "srr");
    track(pid);
    e = wait_event_of(ev, "domain-started", "srr", 10000);
    assert_result(e, "detail", "paused", "user");
    g_clear_pointer(&e, g_free);
    res = call_ok(c, "domain.resume", p);
    assert_result(res, NULL, "running", "unpaused");
    g_clear_pointer(&res, g_free);
    res = call_ok(c, "domain.destroy", p);
    assert_result(res, NULL, "shutoff", "destroyed");
    g_assert_true(process_dead(pid));
    daemon_stop(fx->d);
}

/* A guest that ignores the power button (no OS; with and without ACPI): the shutdown times
 * out and the domain keeps running; with force it is destroyed. */
static void
test_shutdown_ignored(Fixture *fx, gconstpointer data)
{
    static const char *const features[] = { NULL, "<features><acpi/></features>" };
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;

    if (!fx_ready(fx)) {
        return;
    }
    c = daemon_connect(fx->d, FALSE);
    ev = daemon_connect(fx->d, TRUE);
    for (gsize i = 0; i < G_N_ELEMENTS(features); i++) {
        g_autofree char *name = g_strdup_printf("sd%zu", i);
        g_autofree char *tp = g_strdup_printf("{\"name\":\"%s\",\"timeout_ms\":500}", name);
        g_autofree char *fp = g_strdup_printf("{\"name\":\"%s\",\"timeout_ms\":500,"
                                              "\"force\":true}", name);
        g_autofree char *sub = g_strdup_printf("{\"filter\":{\"object_name\":\"%s\"}}", name);
        g_autofree char *res = NULL;
        g_autofree char *e = NULL;
        g_autofree char *state = NULL;
        gint64 t0;
        double took;
        int pid;

        g_free(call_ok(ev, "events.subscribe", sub));
        define(c, name, features[i], NULL);
        pid = start(fx, c, name);
        t0 = g_get_monotonic_time();
        call_fails(c, "domain.shutdown", tp, BERTH_ERROR_TIMEOUT);
        took = ms_since(t0);
        g_test_message("%s: shutdown timed out after %.0f ms", features[i] ? "acpi" : "no acpi",
                       took);
        g_assert_cmpfloat(took, >=, 450);
        g_assert_cmpfloat(took, <, 5000);
        state = domain_state(c, name, NULL);
        g_assert_cmpstr(state, ==, "running");
        g_assert_false(process_dead(pid));

        /* With force: destroyed once timeout_ms has passed, and the call succeeds. */
        t0 = g_get_monotonic_time();
        res = call_ok(c, "domain.shutdown", fp);
        g_assert_cmpfloat(ms_since(t0), >=, 450);
        assert_result(res, NULL, "shutoff", "destroyed");
        e = wait_event_of(ev, "domain-stopped", name, 10000);
        assert_result(e, "detail", "shutoff", "destroyed");
        g_assert_true(process_dead(pid));
    }
    daemon_stop(fx->d);
}

/* kill -9 of QEMU from outside: domain-stopped/crashed, within 100 ms (median of 5). */
static void
test_crash_latency(Fixture *fx, gconstpointer data)
{
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    double lat[5];

    if (!fx_ready(fx)) {
        return;
    }
    c = daemon_connect(fx->d, FALSE);
    ev = daemon_connect(fx->d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"type\":\"domain-stopped\"}}"));
    define(c, "crash", NULL, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(lat); i++) {
        g_autofree char *e = NULL;
        g_autofree char *state = NULL;
        g_autofree char *reason = NULL;
        int pid = start(fx, c, "crash");
        gint64 t0 = g_get_monotonic_time();

        g_assert_cmpint(kill(pid, SIGKILL), ==, 0);
        e = wait_event_of(ev, "domain-stopped", "crash", 10000);
        lat[i] = ms_since(t0);
        assert_result(e, "detail", "shutoff", "crashed");
        state = domain_state(c, "crash", &reason);
        g_assert_cmpstr(state, ==, "shutoff");
        g_assert_cmpstr(reason, ==, "crashed");
    }
    g_test_message("kill -9 to domain-stopped event: %.1f %.1f %.1f %.1f %.1f ms", lat[0],
                   lat[1], lat[2], lat[3], lat[4]);
    g_test_message("kill -9 to domain-stopped event: median %.1f ms", median(lat, 5));
    g_assert_cmpfloat(median(lat, 5), <, 100);
    daemon_stop(fx->d);
}

/* Attaches hold-at-exit to @pid: it survives SIGTERM and SIGKILL for @hold_ms. Returns the
 * tracer's pid (tracked). */
static int
hold_process(int pid, int hold_ms)
{
    const char *exe = g_getenv("HOLD_AT_EXIT");
    g_autofree char *pidarg = g_strdup_printf("%d", pid);
    g_autofree char *holdarg = g_strdup_printf("%d", hold_ms);
    const char *argv[] = { exe, "--hold-ms", holdarg, "--attach", pidarg, NULL };
    g_autoptr(GError) error = NULL;
    char line[32] = "";
    gsize len = 0;
    GPid tracer;
    int out = -1;

    g_assert_true(g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &tracer, NULL,
                                           &out, NULL, &error));
    g_assert_no_error(error);
    track(tracer);
    /* Its line comes once the process is seized. */
    while (len < sizeof line - 1 && !strchr(line, '\n')) {
        ssize_t n = read(out, line + len, sizeof line - 1 - len);

        g_assert_cmpint(n, >, 0);
        len += (gsize) n;
    }
    close(out);
    g_assert_cmpint(g_ascii_strtoll(line, NULL, 10), ==, pid);
    return tracer;
}

/* A QEMU that outlives SIGTERM and SIGKILL (held at its exit by a tracer): destroy succeeds
 * with shutdown/destroyed, a second destroy too, and the one domain-stopped event comes when
 * the process finally ends. */
static void
test_destroy_outlives_kill(Fixture *fx, gconstpointer data)
{
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *p = name_param("held");
    g_autofree char *res = NULL;
    g_autofree char *res2 = NULL;
    g_autofree char *e = NULL;
    g_autofree char *state = NULL;
    g_autofree char *reason = NULL;
    gint64 t0;
    double returned, stopped;
    int pid;

    if (!fx_ready(fx)) {
        return;
    }
    if (!g_getenv("HOLD_AT_EXIT")) {
        g_test_skip("HOLD_AT_EXIT is not set (run through meson test)");
        return;
    }
    c = daemon_connect(fx->d, FALSE);
    ev = daemon_connect(fx->d, TRUE);
    g_free(call_ok(ev, "events.subscribe", NULL));
    define(c, "held", NULL, NULL);
    pid = start(fx, c, "held");
    hold_process(pid, 4000);

    t0 = g_get_monotonic_time();
    res = call_ok(c, "domain.destroy", p);
    returned = ms_since(t0);
    assert_result(res, NULL, "shutdown", "destroyed");
    state = domain_state(c, "held", &reason);
    g_assert_cmpstr(state, ==, "shutdown");
    g_assert_cmpstr(reason, ==, "destroyed");
    g_assert_false(process_dead(pid));
    res2 = call_ok(c, "domain.destroy", p);
    g_test_message("destroy returned after %.0f ms: %s; again: %s", returned, res, res2);
    /* term_wait_ms + kill_wait_ms, well before the hold ends. */
    g_assert_cmpfloat(returned, >=, 550);
    g_assert_cmpfloat(returned, <, 3000);

    e = wait_event_of(ev, "domain-stopped", "held", 10000);
    stopped = ms_since(t0);
    g_test_message("domain-stopped %.0f ms after the destroy began", stopped);
    assert_result(e, "detail", "shutoff", "destroyed");
    g_assert_cmpfloat(stopped, >=, 3500);
    g_assert_true(process_dead(pid));
    g_clear_pointer(&state, g_free);
    g_clear_pointer(&reason, g_free);
    state = domain_state(c, "held", &reason);
    g_assert_cmpstr(state, ==, "shutoff");
    g_assert_cmpstr(reason, ==, "destroyed");

    /* Exactly one domain-stopped: nothing of the kind before a later marker event. */
    define(c, "marker", NULL, NULL);
    for (;;) {
        g_autoptr(GError) error = NULL;
        g_autofree char *method = NULL;
        g_autofree char *params = NULL;

        g_assert_true(berth_client_next_notification(ev, 10000, &method, &params, &error));
        g_assert_no_error(error);
        g_assert_null(strstr(params, "\"type\":\"domain-stopped\""));
        if (strstr(params, "\"type\":\"domain-defined\"") && strstr(params, "marker")) {
            break;
        }
    }
    /* And the domain starts again. */
    pid = start(fx, c, "held");
    g_free(call_ok(c, "domain.destroy", p));
    g_assert_true(process_dead(pid));
    daemon_stop(fx->d);
}

/* Attaches @xml to @name: returns the alias, after its device-added event. */
static char *
attach(BerthClient *c, BerthClient *ev, const char *name, const char *xml)
{
    g_autofree char *esc = g_strescape(xml, NULL);
    g_autofree char *params = g_strdup_printf("{\"name\":\"%s\",\"xml\":\"%s\"}", name, esc);
    g_autofree char *res = call_ok(c, "domain.attach_device", params);
    g_autofree char *e = NULL;
    g_autofree char *ealias = NULL;
    char *alias = json_str(res, "alias", NULL);

    g_assert_nonnull(alias);
    e = wait_event_of(ev, "device-added", name, 10000);
    ealias = json_str(e, "detail", "alias");
    g_assert_cmpstr(ealias, ==, alias);
    return alias;
}

/* Detaches @alias: removed for real (no guest needed), the event after the teardown. */
static void
detach(BerthClient *c, BerthClient *ev, const char *name, const char *alias)
{
    g_autofree char *params = g_strdup_printf("{\"name\":\"%s\",\"alias\":\"%s\"}", name, alias);
    g_autofree char *res = call_ok(c, "domain.detach_device", params);
    g_autofree char *status = json_str(res, "status", NULL);
    g_autofree char *e = NULL;
    g_autofree char *ealias = NULL;

    if (json_bool(res, "removed") != 1) {
        g_test_message("detach %s: %s", alias, res);
    }
    g_assert_cmpint(json_bool(res, "removed"), ==, 1);
    g_assert_cmpstr(status, ==, "removed");
    e = wait_event_of(ev, "device-removed", name, 10000);
    ealias = json_str(e, "detail", "alias");
    g_assert_cmpstr(ealias, ==, alias);
}

/* A virtio disk and a user-mode NIC, attached and detached 20 times each. */
static void
test_hotplug(Fixture *fx, gconstpointer data)
{
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *img = NULL;
    g_autofree char *disk = NULL;
    const char *nic = "<interface type='user'><mac address='52:54:00:12:34:56'/>"
                      "<model type='virtio'/></interface>";
    double att_ms[20], det_ms[20];
    int fd;
    int pid;

    if (!fx_ready(fx)) {
        return;
    }
    img = g_build_filename(fx->d->dir, "data.img", NULL);
    fd = open(img, O_CREAT | O_WRONLY, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, 16 << 20), ==, 0);
    close(fd);
    disk = g_strdup_printf("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                           "<source file='%s'/><target dev='vdb' bus='virtio'/></disk>",
                           img);
    c = daemon_connect(fx->d, FALSE);
    ev = daemon_connect(fx->d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"object_name\":\"hp\"}}"));
    define(c, "hp", NULL, NULL);
    pid = start(fx, c, "hp");

    for (guint i = 0; i < 20; i++) {
        g_autofree char *alias = NULL;
        g_autofree char *xml = NULL;
        gint64 t0 = g_get_monotonic_time();

        alias = attach(c, ev, "hp", disk);
        att_ms[i] = ms_since(t0);
        xml = live_xml(c, "hp");
        g_assert_nonnull(strstr(xml, img));
        g_clear_pointer(&xml, g_free);
        t0 = g_get_monotonic_time();
        detach(c, ev, "hp", alias);
        det_ms[i] = ms_since(t0);
        /* The event came after the teardown: the live definition no longer has the disk. */
        xml = live_xml(c, "hp");
        g_assert_null(strstr(xml, img));
    }
    g_test_message("virtio disk: attach median %.1f ms, detach (to device-removed) median "
                   "%.1f ms (20 rounds)", median(att_ms, 20), median(det_ms, 20));

    for (guint i = 0; i < 20; i++) {
        g_autofree char *alias = NULL;
        g_autofree char *xml = NULL;

        alias = attach(c, ev, "hp", nic);
        xml = live_xml(c, "hp");
        g_assert_nonnull(strstr(xml, "52:54:00:12:34:56"));
        g_clear_pointer(&xml, g_free);
        detach(c, ev, "hp", alias);
        xml = live_xml(c, "hp");
        g_assert_null(strstr(xml, "52:54:00:12:34:56"));
    }
    /* Still the same QEMU, still running. */
    g_assert_cmpint(domain_plugin_pid(fx->d, "qemu", "hp"), ==, pid);
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"hp\"}"));
    g_assert_true(process_dead(pid));
    daemon_stop(fx->d);
}

/* berthd SIGKILLed with 5 domains running, one QEMU killed meanwhile: the new berthd
 * controls the 4 others and reports the dead one crashed. */
static void
test_berthd_killed(Fixture *fx, gconstpointer data)
{
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *e = NULL;
    int pids[5];

    if (!fx_ready(fx)) {
        return;
    }
    {
        g_autoptr(BerthClient) c = daemon_connect(fx->d, FALSE);

        for (guint i = 0; i < 5; i++) {
            g_autofree char *name = g_strdup_printf("r%u", i);

            define(c, name, NULL, NULL);
            pids[i] = start(fx, c, name);
        }
    }
    daemon_kill(fx->d);
    for (guint i = 0; i < 5; i++) {
        g_assert_false(process_dead(pids[i]));
    }
    /* This process is their subreaper now: reap the killed one, as init would. */
    g_assert_cmpint(kill(pids[2], SIGKILL), ==, 0);
    g_assert_cmpint(waitpid(pids[2], NULL, 0), ==, pids[2]);

    daemon_start(fx->d);
    ev = daemon_connect(fx->d, TRUE);
    g_free(call_ok(ev, "events.subscribe", "{\"since\":0}"));
    e = wait_event_of(ev, "domain-stopped", "r2", 10000);
    assert_result(e, "detail", "shutoff", "crashed");
    {
        g_autoptr(BerthClient) c = daemon_connect(fx->d, FALSE);
        g_autofree char *state = domain_state(c, "r2", NULL);

        g_assert_cmpstr(state, ==, "shutoff");
        for (guint i = 0; i < 5; i++) {
            g_autofree char *name = g_strdup_printf("r%u", i);
            g_autofree char *p = name_param(name);
            g_autofree char *res = NULL;

            if (i == 2) {
                continue;
            }
            wait_state(c, name, "running");
            g_assert_cmpint(domain_plugin_pid(fx->d, "qemu", name), ==, pids[i]);
            res = call_ok(c, "domain.suspend", p);
            assert_result(res, NULL, "paused", "user");
            g_clear_pointer(&res, g_free);
            res = call_ok(c, "domain.resume", p);
            assert_result(res, NULL, "running", "unpaused");
            g_clear_pointer(&res, g_free);
            res = call_ok(c, "domain.destroy", p);
            assert_result(res, NULL, "shutoff", "destroyed");
            g_assert_true(process_dead(pids[i]));
        }
    }
    g_assert_cmpint(count_qemus(fx->d), ==, 0);
    daemon_stop(fx->d);
}

/* One call on its own connection, from a thread. */
typedef struct {
    Daemon *d;
    char *method;
    char *params;
    char *result;
    GError *error;
} Call;

static gpointer
call_thread(gpointer data)
{
    Call *call = data;
    g_autoptr(BerthClient) c = daemon_connect(call->d, FALSE);

    berth_client_call(c, call->method, call->params, &call->result, &call->error);
    return NULL;
}

/* Runs @method on the 20 domains p00..p19 at once; returns the wall time in ms. */
static double
call_all(Daemon *d, const char *method, guint n)
{
    g_autofree Call *calls = g_new0(Call, n);
    g_autofree GThread **threads = g_new0(GThread *, n);
    gint64 t0 = g_get_monotonic_time();
    double took;

    for (guint i = 0; i < n; i++) {
        calls[i].d = d;
        calls[i].method = g_strdup(method);
        calls[i].params = g_strdup_printf("{\"name\":\"p%02u\"}", i);
        threads[i] = g_thread_new("call", call_thread, &calls[i]);
    }
    for (guint i = 0; i < n; i++) {
        g_thread_join(threads[i]);
    }
    took = ms_since(t0);
    for (guint i = 0; i < n; i++) {
        if (calls[i].error) {
            g_test_message("%s %s: %s", method, calls[i].params, calls[i].error->message);
        }
        g_assert_no_error(calls[i].error);
        g_free(calls[i].method);
        g_free(calls[i].params);
        g_free(calls[i].result);
    }
    return took;
}

static void
test_parallel_starts(Fixture *fx, gconstpointer data)
{
    const guint n = 20;
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    g_autofree char *list = NULL;
    double started, destroyed;

    if (!fx_ready(fx)) {
        return;
    }
    c = daemon_connect(fx->d, FALSE);
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("p%02u", i);

        define(c, name, NULL, NULL);
    }
    started = call_all(fx->d, "domain.start", n);
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("p%02u", i);
        g_autofree char *state = domain_state(c, name, NULL);
        int pid = domain_plugin_pid(fx->d, "qemu", name);

        g_assert_cmpstr(state, ==, "running");
        track(pid);
        g_assert_false(process_dead(pid));
        g_assert_false(g_hash_table_contains(seen, GINT_TO_POINTER(pid)));
        g_hash_table_add(seen, GINT_TO_POINTER(pid));
    }
    g_assert_cmpint(count_qemus(fx->d), ==, (int) n);
    list = call_ok(c, "domain.list", "{\"state\":\"running\"}");
    {
        g_auto(GStrv) parts = g_strsplit(list, "\"state\":\"running\"", -1);

        g_assert_cmpuint(g_strv_length(parts), ==, n + 1);
    }
    destroyed = call_all(fx->d, "domain.destroy", n);
    g_test_message("accel %s: %u parallel starts %.0f ms, %u parallel destroys %.0f ms", accel,
                   n, started, n, destroyed);
    for (guint i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("p%02u", i);
        g_autofree char *state = domain_state(c, name, NULL);

        g_assert_cmpstr(state, ==, "shutoff");
    }
    g_assert_cmpint(count_qemus(fx->d), ==, 0);
    daemon_stop(fx->d);
}

int
main(int argc, char **argv)
{
    g_autofree char *qemu = g_find_program_in_path("qemu-system-x86_64");
    struct sigaction sa = { .sa_handler = on_fatal_signal };
    int kvm;

    g_test_init(&argc, &argv, NULL);
    have_qemu = qemu != NULL;
    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm >= 0) {
        accel = "kvm";
        close(kvm);
    }
    g_test_message("domains use type='%s' (%s)", accel,
                   kvm >= 0 ? "/dev/kvm is usable" : "TCG: /dev/kvm is not usable");
    sigemptyset(&sa.sa_mask);
    sigaction(SIGABRT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1);

    g_test_add("/qemu-daemon/start-destroy-cycles", Fixture, NULL, fx_setup,
               test_start_destroy_cycles, fx_teardown);
    g_test_add("/qemu-daemon/suspend-resume-reboot", Fixture, NULL, fx_setup,
               test_suspend_resume_reboot, fx_teardown);
    g_test_add("/qemu-daemon/shutdown-ignored", Fixture, NULL, fx_setup, test_shutdown_ignored,
               fx_teardown);
    g_test_add("/qemu-daemon/crash-latency", Fixture, NULL, fx_setup, test_crash_latency,
               fx_teardown);
    g_test_add("/qemu-daemon/destroy-outlives-kill", Fixture,
               "[plugin.qemu]\nterm_wait_ms=300\nkill_wait_ms=300\n", fx_setup,
               test_destroy_outlives_kill, fx_teardown);
    g_test_add("/qemu-daemon/hotplug", Fixture, NULL, fx_setup, test_hotplug, fx_teardown);
    g_test_add("/qemu-daemon/berthd-killed", Fixture, NULL, fx_setup, test_berthd_killed,
               fx_teardown);
    g_test_add("/qemu-daemon/parallel-starts", Fixture, NULL, fx_setup, test_parallel_starts,
               fx_teardown);
    return g_test_run();
}
