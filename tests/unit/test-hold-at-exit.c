/* hold-at-exit (tests/helpers) keeps a SIGKILLed process from ending for its hold time: its
 * pidfd stays unreadable, then becomes readable. The helper's path is in $HOLD_AT_EXIT. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

#define HOLD_MS 1500

typedef struct {
    GPid helper;
    pid_t tracee;
    int pidfd;
} Held;

static gboolean
start(Held *h, const char *hold_ms, const char *program, const char *arg)
{
    const char *exe = g_getenv("HOLD_AT_EXIT");
    const char *argv[] = {exe, "--hold-ms", hold_ms, "--", program, arg, NULL};
    g_autoptr(GError) error = NULL;
    char line[32] = "";
    gsize len = 0;
    int out = -1;

    if (!exe) {
        g_test_skip("HOLD_AT_EXIT is not set (run through meson test)");
        return FALSE;
    }
    g_assert_true(g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                           G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, &h->helper,
                                           NULL, &out, NULL, &error));
    g_assert_no_error(error);
    /* One line: the tracee's pid, written after its exec. */
    while (len < sizeof line - 1 && !strchr(line, '\n')) {
        ssize_t n = read(out, line + len, sizeof line - 1 - len);

        g_assert_cmpint(n, >, 0);
        len += (gsize) n;
    }
    close(out);
    h->tracee = (pid_t) g_ascii_strtoll(line, NULL, 10);
    g_assert_cmpint(h->tracee, >, 0);
    h->pidfd = (int) syscall(SYS_pidfd_open, h->tracee, 0);
    g_assert_cmpint(h->pidfd, >=, 0);
    return TRUE;
}

static gboolean
readable(int fd, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int r;

    do {
        r = poll(&pfd, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    g_assert_cmpint(r, >=, 0);
    return r == 1;
}

static int
helper_status(Held *h)
{
    int status = 0;

    g_assert_cmpint(waitpid(h->helper, &status, 0), ==, h->helper);
    g_assert_true(WIFEXITED(status));
    close(h->pidfd);
    return WEXITSTATUS(status);
}

/* SIGKILL: not gone for about the hold time, then gone. */
static void
test_sigkill_held(void)
{
    Held h = {0};
    gint64 killed, gone;
    g_autofree char *hold = g_strdup_printf("%d", HOLD_MS);
    g_autofree char *status_path = NULL;
    g_autofree char *status = NULL;

    if (!start(&h, hold, "sleep", "100")) {
        return;
    }
    g_assert_false(readable(h.pidfd, 100)); /* running */
    g_assert_cmpint(kill(h.tracee, SIGKILL), ==, 0);
    killed = g_get_monotonic_time();
    g_assert_false(readable(h.pidfd, HOLD_MS - 500));
    /* Held in the exit stop: the kernel shows a tracing stop. */
    status_path = g_strdup_printf("/proc/%d/status", (int) h.tracee);
    g_assert_true(g_file_get_contents(status_path, &status, NULL, NULL));
    g_assert_nonnull(strstr(status, "State:\tt (tracing stop)"));
    g_assert_true(readable(h.pidfd, 10000));
    gone = g_get_monotonic_time();
    g_assert_cmpint(gone - killed, >=, (HOLD_MS - 100) * G_TIME_SPAN_MILLISECOND);
    g_assert_cmpint(helper_status(&h), ==, 128 + SIGKILL);
}

/* Other signals reach the tracee (SIGTERM ends sleep), and its exit is held as well. */
static void
test_signal_forwarded(void)
{
    Held h = {0};
    gint64 sent;

    if (!start(&h, "300", "sleep", "100")) {
        return;
    }
    g_assert_cmpint(kill(h.tracee, SIGTERM), ==, 0);
    sent = g_get_monotonic_time();
    g_assert_true(readable(h.pidfd, 10000));
    g_assert_cmpint(g_get_monotonic_time() - sent, >=, 250 * G_TIME_SPAN_MILLISECOND);
    g_assert_cmpint(helper_status(&h), ==, 128 + SIGTERM);
}

/* A program that exits by itself: its exit code comes back. */
static void
test_exit_code(void)
{
    Held h = {0};

    if (!start(&h, "0", "sh", "-c")) {
        return;
    }
    g_assert_true(readable(h.pidfd, 10000));
    /* "sh -c" without a command string fails with 2. */
    g_assert_cmpint(helper_status(&h), ==, 2);
}

/* --attach: a process someone else started (here this test, which stays its parent) is held
 * as well, even through SIGTERM and then SIGKILL, as berthd's destroy sends them. */
static void
test_attach(void)
{
    const char *exe = g_getenv("HOLD_AT_EXIT");
    const char *sleep_argv[] = {"sleep", "100", NULL};
    g_autoptr(GError) error = NULL;
    g_autofree char *pidarg = NULL;
    GPid child;
    Held h = {0};
    gint64 sent;
    int status = 0;

    if (!exe) {
        g_test_skip("HOLD_AT_EXIT is not set (run through meson test)");
        return;
    }
    g_assert_true(g_spawn_async(NULL, (char **) sleep_argv, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH, NULL, NULL,
                                &child, &error));
    g_assert_no_error(error);
    pidarg = g_strdup_printf("%d", (int) child);
    {
        const char *argv[] = {exe, "--hold-ms", "1000", "--attach", pidarg, NULL};
        int out = -1;
        char buf[32] = "";
        gsize len = 0;

        g_assert_true(g_spawn_async_with_pipes(NULL, (char **) argv, NULL,
                                               G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                                               &h.helper, NULL, &out, NULL, &error));
        g_assert_no_error(error);
        while (len < sizeof buf - 1 && !strchr(buf, '\n')) {
            ssize_t n = read(out, buf + len, sizeof buf - 1 - len);

            g_assert_cmpint(n, >, 0);
            len += (gsize) n;
        }
        close(out);
        g_assert_cmpint(g_ascii_strtoll(buf, NULL, 10), ==, child);
    }
    h.tracee = child;
    h.pidfd = (int) syscall(SYS_pidfd_open, h.tracee, 0);
    g_assert_cmpint(h.pidfd, >=, 0);
    g_assert_cmpint(kill(child, SIGTERM), ==, 0);
    sent = g_get_monotonic_time();
    g_assert_false(readable(h.pidfd, 200));
    g_assert_cmpint(kill(child, SIGKILL), ==, 0);
    g_assert_false(readable(h.pidfd, 300));
    g_assert_true(readable(h.pidfd, 10000));
    g_assert_cmpint(g_get_monotonic_time() - sent, >=, 900 * G_TIME_SPAN_MILLISECOND);
    /* The tracer saw the SIGTERM death; this test, the parent, reaps the tracee. */
    g_assert_cmpint(helper_status(&h), ==, 128 + SIGTERM);
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFSIGNALED(status));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/helpers/hold-at-exit/sigkill-held", test_sigkill_held);
    g_test_add_func("/helpers/hold-at-exit/signal-forwarded", test_signal_forwarded);
    g_test_add_func("/helpers/hold-at-exit/exit-code", test_exit_code);
    g_test_add_func("/helpers/hold-at-exit/attach", test_attach);
    return g_test_run();
}
