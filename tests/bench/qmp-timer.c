/* One timed QEMU run for bench-qemu-raw.sh: launch to "running" (greeting, qmp_capabilities and
 * `cont` answered) and stop (`quit` or SIGKILL) to process gone, through our QMP client.
 *
 *   qmp-timer --socket PATH --stop quit|kill [--wait-stdin] -- QEMU [ARGS...]
 *
 * QEMU's args must make it listen on PATH (-qmp unix:PATH,server=on,wait=off). Prints one line:
 * START_MS STOP_MS. With --wait-stdin, START_MS and a space are printed (and flushed) as soon as
 * QEMU runs, and QEMU keeps running until stdin reaches end of file: a caller starting many at
 * once keeps them all running (their firmware competing for the CPUs, as under berthd) until
 * the last one runs. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "qmp.h"

static gpointer
loop_thread(gpointer data)
{
    g_main_loop_run(data);
    return NULL;
}

static gboolean
quit_cb(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

static void
child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(GMainContext) ctx = g_main_context_new();
    g_autoptr(GMainLoop) loop = g_main_loop_new(ctx, FALSE);
    g_autoptr(BerthQmp) qmp = NULL;
    const char *sock = NULL, *stop = NULL;
    gboolean wait_stdin = FALSE;
    gint64 t0, t_running, t_stop, t_gone;
    GThread *thread;
    GPid pid;
    int argi = 1, status;

    for (; argi + 1 < argc && strcmp(argv[argi], "--") != 0; argi += 2) {
        if (strcmp(argv[argi], "--wait-stdin") == 0) {
            wait_stdin = TRUE;
            argi--;
        } else if (strcmp(argv[argi], "--socket") == 0) {
            sock = argv[argi + 1];
        } else if (strcmp(argv[argi], "--stop") == 0) {
            stop = argv[argi + 1];
        }
    }
    if (!sock || !stop || (strcmp(stop, "quit") != 0 && strcmp(stop, "kill") != 0) ||
        argi >= argc || strcmp(argv[argi], "--") != 0 || argi + 1 >= argc) {
        fprintf(stderr, "usage: qmp-timer --socket PATH --stop quit|kill [--wait-stdin] -- QEMU "
                        "[ARGS...]\n");
        return 2;
    }
    thread = g_thread_new("qmp-loop", loop_thread, loop);
    qmp = berth_qmp_new(ctx, NULL, NULL, NULL);

    t0 = g_get_monotonic_time();
    if (!g_spawn_async(NULL, argv + argi + 1, NULL,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL, child_setup, NULL,
                       &pid, &error) ||
        !berth_qmp_connect(qmp, sock, 30000, NULL, &error) ||
        !berth_qmp_command(qmp, "cont", NULL, 30000, NULL, NULL, NULL, &error)) {
        fprintf(stderr, "qmp-timer: %s\n", error->message);
        return 1;
    }
    t_running = g_get_monotonic_time();
    if (wait_stdin) {
        char buf[256];

        printf("%.3f ", (t_running - t0) / 1000.0);
        fflush(stdout);
        while (read(STDIN_FILENO, buf, sizeof buf) > 0) {
        }
    }

    t_stop = g_get_monotonic_time();
    if (strcmp(stop, "kill") == 0) {
        kill(pid, SIGKILL);
    } else {
        g_clear_error(&error);
        /* The reply may lose the race with the socket closing; the exit is what counts. */
        berth_qmp_command(qmp, "quit", NULL, 30000, NULL, NULL, NULL, &error);
    }
    waitpid(pid, &status, 0);
    t_gone = g_get_monotonic_time();

    if (!wait_stdin) {
        printf("%.3f ", (t_running - t0) / 1000.0);
    }
    printf("%.3f\n", (t_gone - t_stop) / 1000.0);
    g_clear_pointer(&qmp, berth_qmp_unref);
    g_main_context_invoke(ctx, quit_cb, loop);
    g_thread_join(thread);
    return 0;
}
