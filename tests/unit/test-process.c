/* Tests of process spawning and pidfd watches. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "process.h"

typedef struct {
    GMainLoop *loop;
    pid_t pid;
    int status;
    gboolean fired;
} ExitData;

static void
on_exit_cb(pid_t pid, int status, gpointer data)
{
    ExitData *e = data;

    e->pid = pid;
    e->status = status;
    e->fired = TRUE;
    g_main_loop_quit(e->loop);
}

static gboolean
on_timeout(gpointer data)
{
    g_assert_not_reached();
    return G_SOURCE_REMOVE;
}

static char *
prog(const char *name)
{
    char *p = g_find_program_in_path(name);

    g_assert_nonnull(p);
    return p;
}

/* Our child exits with a code: the watch fires with the reaped status. */
static void
test_spawn_exit_status(void)
{
    g_autofree char *sh = prog("sh");
    const char *argv[] = { sh, "-c", "exit 7", NULL };
    BerthSpawnSpec spec = { .struct_size = sizeof(spec), .argv = argv };
    g_autoptr(GError) error = NULL;
    ExitData e = { .loop = g_main_loop_new(NULL, FALSE) };
    guint timeout;
    pid_t pid;
    int pidfd;

    g_assert_true(berth_process_spawn(&spec, &pid, &pidfd, &error));
    g_assert_no_error(error);
    g_assert_cmpint(pidfd, >=, 0);
    g_assert_cmpuint(berth_process_watch(NULL, pid, pidfd, on_exit_cb, &e, &error), >, 0);
    timeout = g_timeout_add_seconds(10, on_timeout, NULL);
    g_main_loop_run(e.loop);
    g_source_remove(timeout);
    g_assert_true(e.fired);
    g_assert_cmpint(e.pid, ==, pid);
    g_assert_true(WIFEXITED(e.status));
    g_assert_cmpint(WEXITSTATUS(e.status), ==, 7);
    /* Reaped: no zombie is left. */
    g_assert_cmpint(waitpid(pid, NULL, WNOHANG), ==, -1);
    g_assert_cmpint(errno, ==, ECHILD);
    g_main_loop_unref(e.loop);
}

/* Output goes to the log file; only the kept fd is inherited; the child has its own session. */
static void
test_spawn_log_and_fds(void)
{
    g_autofree char *sh = prog("sh");
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("berth-proc-XXXXXX", &error);
    g_autofree char *log = g_build_filename(dir, "out.log", NULL);
    g_autofree char *text = NULL;
    g_autofree char *script = NULL;
    g_autofree char *ps = NULL;
    int keep = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int leak = open("/dev/null", O_RDONLY); /* not close-on-exec: must still not leak */
    int keep_fds[1] = { keep };
    ExitData e = { .loop = g_main_loop_new(NULL, FALSE) };
    pid_t pid;
    int pidfd;

    script = g_strdup_printf("echo hello; [ -e /proc/self/fd/%d ] && echo kept; "
                             "[ -e /proc/self/fd/%d ] && echo leaked; "
                             "[ \"$(ps -o sid= -p $$ | tr -d ' ')\" = \"$$\" ] && echo own-session;"
                             " exit 0",
                             keep, leak);
    {
        const char *argv[] = { sh, "-c", script, NULL };
        BerthSpawnSpec spec = { .struct_size = sizeof(spec), .argv = argv, .log_path = log,
                                .keep_fds = keep_fds, .n_keep_fds = 1 };
        g_assert_true(berth_process_spawn(&spec, &pid, &pidfd, &error));
    }
    berth_process_watch(NULL, pid, pidfd, on_exit_cb, &e, &error);
    g_main_loop_run(e.loop);
    g_assert_true(g_file_get_contents(log, &text, NULL, NULL));
    g_assert_nonnull(strstr(text, "hello\n"));
    g_assert_nonnull(strstr(text, "kept\n"));
    g_assert_null(strstr(text, "leaked"));
    ps = g_find_program_in_path("ps");
    if (ps) {
        g_assert_nonnull(strstr(text, "own-session"));
    }
    close(keep);
    close(leak);
    g_main_loop_unref(e.loop);
    unlink(log);
    rmdir(dir);
}

/* A process that is not our child (as QEMU after a berthd restart): the pidfd still fires,
 * with status -1 because someone else reaps it. */
static void
test_watch_not_our_child(void)
{
    g_autofree char *sleep_bin = prog("sleep");
    ExitData e = { .loop = g_main_loop_new(NULL, FALSE) };
    g_autoptr(GError) error = NULL;
    int pipefd[2];
    pid_t middle;
    pid_t grandchild = 0;

    g_assert_cmpint(pipe(pipefd), ==, 0);
    middle = fork();
    if (middle == 0) {
        /* The middle process starts the sleeper, reports its pid, and exits: the sleeper is
         * re-parented (to init, or to a subreaper), never ours. */
        pid_t gc = fork();
        if (gc == 0) {
            execl(sleep_bin, "sleep", "0.3", (char *) NULL);
            _exit(127);
        }
        if (write(pipefd[1], &gc, sizeof(gc)) != sizeof(gc)) {
            _exit(1);
        }
        _exit(0);
    }
    g_assert_cmpint(read(pipefd[0], &grandchild, sizeof(grandchild)), ==, sizeof(grandchild));
    waitpid(middle, NULL, 0);
    close(pipefd[0]);
    close(pipefd[1]);
    g_assert_cmpuint(berth_process_watch(NULL, grandchild, -1, on_exit_cb, &e, &error), >, 0);
    g_assert_no_error(error);
    g_main_loop_run(e.loop);
    g_assert_true(e.fired);
    g_assert_cmpint(e.pid, ==, grandchild);
    g_assert_cmpint(e.status, ==, -1);
    g_main_loop_unref(e.loop);
}

static void
test_unwatch(void)
{
    g_autofree char *sleep_bin = prog("sleep");
    const char *argv[] = { sleep_bin, "0.1", NULL };
    BerthSpawnSpec spec = { .struct_size = sizeof(spec), .argv = argv };
    ExitData e = { .loop = g_main_loop_new(NULL, FALSE) };
    g_autoptr(GError) error = NULL;
    pid_t pid;
    int pidfd;
    guint id;
    int status;

    g_assert_true(berth_process_spawn(&spec, &pid, &pidfd, &error));
    id = berth_process_watch(NULL, pid, pidfd, on_exit_cb, &e, &error);
    berth_process_unwatch(id);
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    /* Let the main context run: the removed watch never fires. */
    for (int i = 0; i < 20; i++) {
        g_main_context_iteration(NULL, FALSE);
        g_usleep(5000);
    }
    g_assert_false(e.fired);
    g_main_loop_unref(e.loop);
}

static void
test_watch_gone_process(void)
{
    g_autoptr(GError) error = NULL;

    /* pid_max is below 2^22 on Linux: this pid cannot exist. */
    g_assert_cmpuint(berth_process_watch(NULL, 0x7ffffff0, -1, on_exit_cb, NULL, &error), ==, 0);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
}

static void
test_spawn_errors(void)
{
    const char *rel[] = { "sleep", "1", NULL };
    const char *missing[] = { "/nonexistent/qemu", NULL };
    BerthSpawnSpec spec = { .struct_size = sizeof(spec), .argv = rel };
    g_autoptr(GError) error = NULL;
    pid_t pid;
    int pidfd;

    g_assert_false(berth_process_spawn(&spec, &pid, &pidfd, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    spec.argv = missing;
    g_assert_false(berth_process_spawn(&spec, &pid, &pidfd, &error));
    g_assert_nonnull(strstr(error->message, "/nonexistent/qemu"));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/process/spawn-exit-status", test_spawn_exit_status);
    g_test_add_func("/core/process/spawn-log-and-fds", test_spawn_log_and_fds);
    g_test_add_func("/core/process/watch-not-our-child", test_watch_not_our_child);
    g_test_add_func("/core/process/unwatch", test_unwatch);
    g_test_add_func("/core/process/watch-gone-process", test_watch_gone_process);
    g_test_add_func("/core/process/spawn-errors", test_spawn_errors);
    return g_test_run();
}
