/* End-to-end: berthd with the qemu plugin boots a real Linux guest (the guest kit of
 * build-guest: a Debian kernel and a busybox initramfs in demo mode) and follows it through
 * its lifecycle.
 *
 * 1. poweroff: the guest prints its banner on the serial console file and powers itself off
 *    (poweroff -f): the domain goes shutoff/shutdown with a domain-stopped event.
 * 2. acpi-shutdown: booted again (berth.demo=wait), domain.shutdown presses the ACPI power
 *    button; the guest's /init watches the button's input device and powers off.
 * 3. destroy: booted again, domain.destroy while the guest runs.
 *
 * A guest kernel runs under TCG (<domain type='qemu'>) when /sys/module/kvm_pvm exists (nested
 * PVM hangs a stock kernel) or /dev/kvm does not open read-write; under KVM otherwise. Every
 * test is skipped when the guest kit cannot be built (build-guest exits 77: a package is
 * missing) or QEMU is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "build-config.h"
#include "daemon-harness.h"

/* Set by meson: the guest kit's build script and its cache dir. */
#define ENV_BUILD_GUEST "BERTH_BUILD_GUEST"
#define ENV_GUEST_DIR "BERTH_GUEST_DIR"

#define NAME "boot"
#define UUID "6a1f7a52-3c1e-4b8e-9d2a-0c5b7e4f1a90"
#define BOOT_TIMEOUT_S 150  /* kernel + initramfs to the banner, TCG on a slow host */
#define STOP_TIMEOUT_S 30   /* the banner to the domain-stopped event */

typedef struct {
    Daemon *d;
    BerthClient *c;      /* read-write */
    BerthClient *ev;     /* read-only, subscribed to the domain's events */
    char *console;       /* the serial port's file */
    const char *type;    /* "kvm" or "qemu" */
    const char *accel;   /* the plugin's name for it: "kvm" or "tcg" */
} Env;

static char *kernel;
static char *initrd;
static char *skip_reason;
static Env *env;

/* QEMUs started by this test: killed by the abort handler when an assertion fails, since
 * berthd leaves its QEMUs running when it dies. */
static volatile pid_t qemu_pids[8];

static void
kill_qemus(void)
{
    for (gsize i = 0; i < G_N_ELEMENTS(qemu_pids); i++) {
        if (qemu_pids[i] > 0) {
            kill(qemu_pids[i], SIGKILL);
        }
    }
}

static void
on_fatal_signal(int sig)
{
    kill_qemus();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void
remember_qemu(pid_t pid)
{
    for (gsize i = 0; i < G_N_ELEMENTS(qemu_pids); i++) {
        if (qemu_pids[i] == 0 || qemu_pids[i] == pid) {
            qemu_pids[i] = pid;
            return;
        }
    }
    g_assert_not_reached();
}

/* True when @pid is still a process (not reaped); a zombie counts as gone. */
static gboolean
process_alive(pid_t pid)
{
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
    g_autofree char *stat = NULL;
    const char *p;

    if (!g_file_get_contents(path, &stat, NULL, NULL)) {
        return FALSE;
    }
    p = strrchr(stat, ')');
    return p && p[1] == ' ' && p[2] != 'Z';
}

static char *
json_string(yajl_val root, const char *const *path)
{
    yajl_val v = root ? yajl_tree_get(root, (const char **) path, yajl_t_string) : NULL;

    return v ? g_strdup(YAJL_GET_STRING(v)) : NULL;
}

static char *
json_get(const char *json, const char *const *path)
{
    char err[128];
    yajl_val root = yajl_tree_parse(json, err, sizeof(err));
    char *out = json_string(root, path);

    yajl_tree_free(root);
    return out;
}

/* The qemu plugin's live status of the domain (RUN_DIR/domains/NAME.json, "plugins"->"qemu",
 * a JSON string): the QEMU pid and, in *accel, the accelerator it runs. 0 when absent. */
static pid_t
qemu_status(Daemon *d, char **accel)
{
    g_autofree char *path = g_strdup_printf("%s/run/domains/%s.json", d->dir, NAME);
    g_autofree char *text = NULL;
    g_autofree char *status = NULL;
    const char *p_status[] = { "plugins", "qemu", NULL };
    const char *p_pid[] = { "pid", NULL };
    const char *p_accel[] = { "accel", NULL };
    char err[128];
    yajl_val root;
    yajl_val pid;
    pid_t out = 0;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return 0;
    }
    status = json_get(text, p_status);
    root = status ? yajl_tree_parse(status, err, sizeof(err)) : NULL;
    pid = root ? yajl_tree_get(root, p_pid, yajl_t_number) : NULL;
    if (pid && YAJL_IS_INTEGER(pid)) {
        out = (pid_t) YAJL_GET_INTEGER(pid);
    }
    if (accel) {
        *accel = json_string(root, p_accel);
    }
    yajl_tree_free(root);
    return out;
}

/* Runs build-guest; sets kernel/initrd, or skip_reason when it exits 77. */
static void
build_guest_kit(void)
{
    const char *script = g_getenv(ENV_BUILD_GUEST);
    const char *dir = g_getenv(ENV_GUEST_DIR);
    g_autoptr(GError) error = NULL;
    g_autofree char *out = NULL;
    g_autofree char *err = NULL;
    g_auto(GStrv) lines = NULL;
    int status = 0;

    if (!script || !dir) {
        skip_reason = g_strdup(ENV_BUILD_GUEST " and " ENV_GUEST_DIR
                               " are not set (run through meson)");
        return;
    }
    g_autofree char *qemu = g_find_program_in_path("qemu-system-x86_64");

    if (!qemu) {
        skip_reason = g_strdup("qemu-system-x86_64 is missing (Debian package: "
                               "qemu-system-x86)");
        return;
    }
    const char *argv[] = { script, dir, NULL };
    g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL, &out,
                               &err, &status, &error));
    g_assert_no_error(error);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        skip_reason = g_strstrip(g_steal_pointer(&err));
        return;
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        g_test_message("build-guest failed:\n%s", err);
    }
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    lines = g_strsplit(g_strstrip(out), "\n", -1);
    g_assert_cmpuint(g_strv_length(lines), ==, 2);
    kernel = g_strdup(lines[0]);
    initrd = g_strdup(lines[1]);
}

static gboolean
kvm_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        return FALSE;
    }
    close(fd);
    return TRUE;
}

/* berthd loading only the qemu plugin (from a plugin dir holding a link to the build's
 * qemu.so), started, with a subscriber on the read-only socket. */
static Env *
env_new(void)
{
    Env *e = g_new0(Env, 1);
    g_autofree char *res = NULL;

    if (kvm_usable() && !g_file_test("/sys/module/kvm_pvm", G_FILE_TEST_EXISTS)) {
        e->type = "kvm";
        e->accel = "kvm";
        g_test_message("accelerator: KVM (<domain type='kvm'>)");
    } else {
        e->type = "qemu";
        e->accel = "tcg";
        g_test_message("accelerator: TCG (<domain type='qemu'>): %s",
                       kvm_usable() ? "nested PVM (/sys/module/kvm_pvm) hangs a guest kernel"
                                    : "/dev/kvm is not usable");
    }

    /* QEMU's log goes to the plugin's default, STATE_DIR/plugins/qemu/log, inside the dir. */
    e->d = daemon_new_plugins("qemu;", NULL);
    e->console = g_build_filename(e->d->dir, "console.log", NULL);

    daemon_start(e->d);
    e->c = daemon_connect(e->d, FALSE);
    /* domain.shutdown waits for the guest. */
    berth_client_set_call_timeout(e->c, (STOP_TIMEOUT_S + 30) * 1000);
    e->ev = daemon_connect(e->d, TRUE);
    res = call_ok(e->ev, "events.subscribe", "{\"filter\":{\"object_name\":\"" NAME "\"}}");
    return e;
}

static void
env_free(Env *e)
{
    pid_t pid;

    if (!e) {
        return;
    }
    g_clear_pointer(&e->c, berth_client_free);
    g_clear_pointer(&e->ev, berth_client_free);
    daemon_stop(e->d);
    /* berthd leaves a running QEMU behind; none should be running at this point. */
    pid = qemu_status(e->d, NULL);
    if (pid > 0 && process_alive(pid)) {
        kill(pid, SIGKILL);
    }
    kill_qemus();
    daemon_free(e->d);
    g_free(e->console);
    g_free(e);
}

/* Defines the domain: the guest kit with @cmdline_extra, the console on a file, ACPI, one
 * virtio NIC (the guest lists it as virtio0, device id 1). */
static void
define_domain(Env *e, const char *cmdline_extra)
{
    g_autofree char *xml = g_strdup_printf(
        "<domain type='%s'>\n"
        "  <name>" NAME "</name>\n"
        "  <uuid>" UUID "</uuid>\n"
        "  <memory unit='MiB'>256</memory>\n"
        "  <vcpu>1</vcpu>\n"
        "  <os>\n"
        "    <type arch='x86_64' machine='q35'>hvm</type>\n"
        "    <kernel>%s</kernel>\n"
        "    <initrd>%s</initrd>\n"
        "    <cmdline>console=ttyS0 quiet panic=-1 %s</cmdline>\n"
        "  </os>\n"
        "  <features><acpi/></features>\n"
        "  <on_poweroff>destroy</on_poweroff>\n"
        "  <on_reboot>destroy</on_reboot>\n"
        "  <devices>\n"
        "    <interface type='user'><model type='virtio'/></interface>\n"
        "    <serial type='file'><source path='%s'/><target port='0'/></serial>\n"
        "  </devices>\n"
        "</domain>\n",
        e->type, kernel, initrd, cmdline_extra, e->console);
    g_autoptr(GString) params = g_string_new("{\"xml\":\"");
    g_autofree char *res = NULL;

    for (const char *p = xml; *p; p++) {
        if (*p == '\n') {
            g_string_append(params, "\\n");
        } else {
            if (*p == '"' || *p == '\\') {
                g_string_append_c(params, '\\');
            }
            g_string_append_c(params, *p);
        }
    }
    g_string_append(params, "\"}");
    res = call_ok(e->c, "domain.define", params->str);
}

/* Waits for the next event of the domain of type @type within @timeout_s, skipping others
 * (appended to @seen as "type" or "type:reason"); returns its "detail"."reason". */
static char *
wait_domain_event(Env *e, const char *type, int timeout_s, GString *seen)
{
    gint64 end = g_get_monotonic_time() + (gint64) timeout_s * G_USEC_PER_SEC;
    const char *p_type[] = { "type", NULL };
    const char *p_reason[] = { "detail", "reason", NULL };

    while (g_get_monotonic_time() < end) {
        g_autoptr(GError) error = NULL;
        g_autofree char *method = NULL;
        g_autofree char *params = NULL;
        g_autofree char *t = NULL;
        g_autofree char *reason = NULL;

        if (!berth_client_next_notification(e->ev, 1000, &method, &params, &error)) {
            g_assert_no_error(error);
            continue;
        }
        if (g_strcmp0(method, "event") != 0) {
            continue;
        }
        t = json_get(params, p_type);
        reason = json_get(params, p_reason);
        g_string_append_printf(seen, "%s%s%s%s", seen->len ? " " : "", t, reason ? ":" : "",
                               reason ? reason : "");
        if (g_strcmp0(t, type) == 0) {
            return g_steal_pointer(&reason);
        }
    }
    g_test_message("no '%s' event within %d s (seen: %s)", type, timeout_s, seen->str);
    g_assert_not_reached();
}

/* Starts the domain, checks the plugin's status, waits for the banner; returns QEMU's pid. */
static pid_t
boot(Env *e)
{
    const char *p_state[] = { "state", NULL };
    const char *p_reason[] = { "reason", NULL };
    g_autoptr(GString) seen = g_string_new(NULL);
    g_autofree char *res = NULL;
    g_autofree char *state = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *accel = NULL;
    g_autofree char *started = NULL;
    gint64 t0 = g_get_monotonic_time();
    gint64 end = t0 + (gint64) BOOT_TIMEOUT_S * G_USEC_PER_SEC;
    pid_t pid;

    g_unlink(e->console);
    res = call_ok(e->c, "domain.start", "{\"name\":\"" NAME "\"}");
    state = json_get(res, p_state);
    reason = json_get(res, p_reason);
    g_assert_cmpstr(state, ==, "running");
    g_assert_cmpstr(reason, ==, "booted");
    started = wait_domain_event(e, "domain-started", 10, seen);
    g_assert_cmpstr(started, ==, "booted");

    pid = qemu_status(e->d, &accel);
    g_assert_cmpint(pid, >, 0);
    remember_qemu(pid);
    g_assert_true(process_alive(pid));
    g_assert_cmpstr(accel, ==, e->accel);

    /* The console is a file: nothing to wait on but its contents. */
    for (;;) {
        g_autofree char *console = NULL;

        if (g_file_get_contents(e->console, &console, NULL, NULL) &&
            strstr(console, "BERTH-DEMO: READY")) {
            g_test_message("banner after %.1f s:\n%s",
                           (g_get_monotonic_time() - t0) / (double) G_USEC_PER_SEC, console);
            break;
        }
        if (g_get_monotonic_time() > end || !process_alive(pid)) {
            g_test_message("no banner within %d s (QEMU %s); console:\n%s", BOOT_TIMEOUT_S,
                           process_alive(pid) ? "running" : "gone",
                           console ? console : "(none)");
            g_assert_not_reached();
        }
        g_usleep(100 * 1000);
    }
    return pid;
}

static char *
read_console(Env *e)
{
    char *console = NULL;

    g_assert_true(g_file_get_contents(e->console, &console, NULL, NULL));
    return console;
}

static void
assert_state(Env *e, const char *want_state, const char *want_reason)
{
    g_autofree char *reason = NULL;
    g_autofree char *state = domain_state(e->c, NAME, &reason);

    g_assert_cmpstr(state, ==, want_state);
    g_assert_cmpstr(reason, ==, want_reason);
}

/* The banner: kernel release, uptime, the virtio NIC, the power button. */
static void
assert_banner(const char *console)
{
    g_autofree char *padded = g_strconcat("\n", console, NULL);
    const char *k = strstr(padded, "\nBERTH-DEMO: kernel ");

    g_assert_nonnull(k);
    g_assert_true(g_ascii_isdigit(k[strlen("\nBERTH-DEMO: kernel ")]));
    g_assert_nonnull(strstr(padded, "\nBERTH-DEMO: uptime "));
    g_assert_nonnull(strstr(padded, "\nBERTH-DEMO: virtio virtio0 device 0x0001"));
    g_assert_nonnull(strstr(padded, "\nBERTH-DEMO: power-button yes"));
}

/* The guest powers itself off after the banner: shutoff/shutdown, QEMU gone. */
static void
test_poweroff(void)
{
    g_autoptr(GString) seen = g_string_new(NULL);
    g_autofree char *console = NULL;
    g_autofree char *reason = NULL;
    pid_t pid;

    if (skip_reason) {
        g_test_skip(skip_reason);
        return;
    }
    define_domain(env, "berth.demo=1");
    pid = boot(env);
    reason = wait_domain_event(env, "domain-stopped", STOP_TIMEOUT_S, seen);
    g_test_message("events after the banner: %s", seen->str);
    g_assert_cmpstr(reason, ==, "shutdown");
    assert_state(env, "shutoff", "shutdown");
    g_assert_false(process_alive(pid));
    console = read_console(env);
    assert_banner(console);
    g_assert_nonnull(strstr(console, "BERTH-DEMO: POWEROFF"));
    g_assert_null(strstr(console, "BERTH-DEMO: POWER-BUTTON"));
}

/* domain.shutdown: ACPI power button, the guest powers off, the call returns shutoff/shutdown
 * with domain-shutdown then domain-stopped. */
static void
test_acpi_shutdown(void)
{
    g_autoptr(GString) seen = g_string_new(NULL);
    g_autofree char *console = NULL;
    g_autofree char *res = NULL;
    g_autofree char *state = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *stopped = NULL;
    const char *p_state[] = { "state", NULL };
    const char *p_reason[] = { "reason", NULL };
    gint64 t0;
    pid_t pid;

    if (skip_reason) {
        g_test_skip(skip_reason);
        return;
    }
    define_domain(env, "berth.demo=wait");
    pid = boot(env);
    t0 = g_get_monotonic_time();
    res = call_ok(env->c, "domain.shutdown", "{\"name\":\"" NAME "\",\"timeout_ms\":30000}");
    g_test_message("domain.shutdown took %.2f s: %s",
                   (g_get_monotonic_time() - t0) / (double) G_USEC_PER_SEC, res);
    state = json_get(res, p_state);
    reason = json_get(res, p_reason);
    g_assert_cmpstr(state, ==, "shutoff");
    g_assert_cmpstr(reason, ==, "shutdown");
    stopped = wait_domain_event(env, "domain-stopped", STOP_TIMEOUT_S, seen);
    g_test_message("events: %s", seen->str);
    g_assert_cmpstr(stopped, ==, "shutdown");
    g_assert_nonnull(strstr(seen->str, "domain-shutdown:user domain-stopped:shutdown"));
    assert_state(env, "shutoff", "shutdown");
    g_assert_false(process_alive(pid));
    console = read_console(env);
    assert_banner(console);
    g_assert_nonnull(strstr(console, "BERTH-DEMO: POWER-BUTTON"));
    g_assert_nonnull(strstr(console, "BERTH-DEMO: POWEROFF"));
}

/* domain.destroy while the guest runs: shutoff/destroyed at once, QEMU gone. */
static void
test_destroy(void)
{
    g_autoptr(GString) seen = g_string_new(NULL);
    g_autofree char *res = NULL;
    g_autofree char *state = NULL;
    g_autofree char *reason = NULL;
    g_autofree char *stopped = NULL;
    g_autofree char *console = NULL;
    const char *p_state[] = { "state", NULL };
    const char *p_reason[] = { "reason", NULL };
    pid_t pid;

    if (skip_reason) {
        g_test_skip(skip_reason);
        return;
    }
    define_domain(env, "berth.demo=wait");
    pid = boot(env);
    res = call_ok(env->c, "domain.destroy", "{\"name\":\"" NAME "\"}");
    state = json_get(res, p_state);
    reason = json_get(res, p_reason);
    g_assert_cmpstr(state, ==, "shutoff");
    g_assert_cmpstr(reason, ==, "destroyed");
    stopped = wait_domain_event(env, "domain-stopped", STOP_TIMEOUT_S, seen);
    g_assert_cmpstr(stopped, ==, "destroyed");
    assert_state(env, "shutoff", "destroyed");
    g_assert_false(process_alive(pid));
    /* Killed, not powered off: the guest never got to its poweroff. */
    console = read_console(env);
    g_assert_null(strstr(console, "BERTH-DEMO: POWEROFF"));
}

int
main(int argc, char **argv)
{
    gboolean tap = FALSE;
    int rc;

    for (int i = 1; i < argc; i++) {
        tap = tap || g_str_equal(argv[i], "--tap");
    }
    g_test_init(&argc, &argv, NULL);
    signal(SIGABRT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGINT, on_fatal_signal);
    build_guest_kit();
    if (!skip_reason && !g_file_test(BERTH_BUILD_ROOT "/plugins/qemu/qemu.so",
                                     G_FILE_TEST_EXISTS)) {
        skip_reason = g_strdup("the qemu plugin is not built");
    }
    if (!skip_reason) {
        env = env_new();
    }
    g_test_add_func("/e2e/guest-boot/poweroff", test_poweroff);
    g_test_add_func("/e2e/guest-boot/acpi-shutdown", test_acpi_shutdown);
    g_test_add_func("/e2e/guest-boot/destroy", test_destroy);
    rc = g_test_run();
    /* Without TAP, exit 77 tells meson (and automake) that the whole test was skipped. */
    if (rc == 0 && skip_reason && !tap) {
        rc = 77;
    }
    env_free(env);
    g_free(kernel);
    g_free(initrd);
    g_free(skip_reason);
    return rc;
}
