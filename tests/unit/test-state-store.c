/* Tests of atomic writes: a writer killed at any step leaves the old or the new file intact. */
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <berth/error.h>

#include "state-store.h"

static BerthStateStep crash_at;

static void
crash_hook(BerthStateStep step)
{
    if (step == crash_at) {
        _exit(42);
    }
}

static char *
make_dir(void)
{
    g_autoptr(GError) error = NULL;
    char *dir = g_dir_make_tmp("berth-state-XXXXXX", &error);

    g_assert_no_error(error);
    return dir;
}

/* Big enough that a torn write would be visible: 256 KiB of a repeated letter. */
static char *
payload(char c)
{
    gsize n = 256 * 1024;
    char *s = g_malloc(n + 1);

    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static void
assert_old_or_new(const char *path, const char *old, const char *new_text)
{
    g_autofree char *got = NULL;
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_get_contents(path, &got, NULL, &error));
    g_assert_no_error(error);
    g_assert_true(g_str_equal(got, old) || g_str_equal(got, new_text));
}

static guint
count_temp_files(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *e;
    guint n = 0;

    while (d && (e = g_dir_read_name(d))) {
        if (e[0] == '.') {
            n++;
        }
    }
    return n;
}

static void
test_crash_at_each_step(void)
{
    g_autofree char *dir = make_dir();
    g_autofree char *path = g_build_filename(dir, "web1.xml", NULL);
    g_autofree char *old = payload('o');
    g_autofree char *new_text = payload('n');
    g_autoptr(GError) error = NULL;

    g_assert_true(berth_state_write(path, old, strlen(old), 0600, &error));
    g_assert_no_error(error);

    for (int s = 0; s < BERTH_STATE_STEP_LAST; s++) {
        pid_t pid;
        int status = 0;

        /* Back to the old content before each crash. */
        g_assert_true(berth_state_write(path, old, strlen(old), 0600, &error));
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            crash_at = (BerthStateStep) s;
            berth_state_set_step_hook(crash_hook);
            berth_state_write(path, new_text, strlen(new_text), 0600, NULL);
            _exit(0);
        }
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 42);
        assert_old_or_new(path, old, new_text);
        if (s >= BERTH_STATE_STEP_RENAMED) {
            g_autofree char *got = NULL;
            g_file_get_contents(path, &got, NULL, NULL);
            g_assert_cmpstr(got, ==, new_text);
        }
    }
    /* Crashed writers leave temp files behind (dot files that loaders skip), never a torn
     * target. */
    g_assert_cmpuint(count_temp_files(dir), >, 0);
}

/* A writer loop SIGKILLed at arbitrary moments: the file always holds one whole version. */
static void
test_kill_anytime(void)
{
    g_autofree char *dir = make_dir();
    g_autofree char *path = g_build_filename(dir, "web2.xml", NULL);
    g_autofree char *a = payload('a');
    g_autofree char *b = payload('b');
    g_autoptr(GError) error = NULL;

    g_assert_true(berth_state_write(path, a, strlen(a), 0600, &error));
    for (int round = 0; round < 20; round++) {
        pid_t pid = fork();
        int status;

        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            for (int i = 0;; i++) {
                const char *t = i % 2 ? a : b;
                berth_state_write(path, t, strlen(t), 0600, NULL);
            }
        }
        g_usleep(1000 + g_random_int_range(0, 20000));
        kill(pid, SIGKILL);
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        assert_old_or_new(path, a, b);
    }
}

static void
test_mode_and_remove(void)
{
    g_autofree char *dir = make_dir();
    g_autofree char *path = g_build_filename(dir, "x.json", NULL);
    g_autoptr(GError) error = NULL;
    GStatBuf st;

    g_assert_true(berth_state_write(path, "{}", 2, 0640, &error));
    g_assert_cmpint(g_stat(path, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, ==, 0640);
    g_assert_cmpuint(count_temp_files(dir), ==, 0);
    g_assert_true(berth_state_remove(path, &error));
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    /* Removing what is not there is fine. */
    g_assert_true(berth_state_remove(path, &error));
    g_assert_no_error(error);
}

static void
test_write_fails_cleanly(void)
{
    g_autoptr(GError) error = NULL;

    g_assert_false(berth_state_write("/nonexistent-dir/berth/x.xml", "x", 1, 0600, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL);
    g_assert_nonnull(strstr(error->message, "/nonexistent-dir/berth"));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/state/crash-at-each-step", test_crash_at_each_step);
    g_test_add_func("/core/state/kill-anytime", test_kill_anytime);
    g_test_add_func("/core/state/mode-and-remove", test_mode_and_remove);
    g_test_add_func("/core/state/write-fails-cleanly", test_write_fails_cleanly);
    return g_test_run();
}
