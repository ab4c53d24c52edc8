/* The QMP client against a real QEMU (qemu-system-x86_64 -machine none), started and stopped
 * by the test itself. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <yajl/yajl_tree.h>

#include <berth/error.h>

#include "qmp.h"

#define TIMEOUT_MS 20000

typedef struct {
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *loop_thread;
    char *dir;
    char *sock;
    GPid pid;
    BerthQmp *qmp;

    GMutex lock; /* protects the records below */
    GCond cond;
    GPtrArray *events;
    guint closed;
    char *closed_reason;
} Fixture;

static void
on_event(BerthQmp *qmp, const char *event, const char *data_json, gint64 timestamp_us,
         gpointer user_data)
{
    Fixture *f = user_data;

    g_assert_cmpint(timestamp_us, >, 0);
    g_mutex_lock(&f->lock);
    g_ptr_array_add(f->events, g_strdup(event));
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
}

static void
on_closed(BerthQmp *qmp, const GError *reason, gpointer user_data)
{
    Fixture *f = user_data;

    g_mutex_lock(&f->lock);
    f->closed++;
    f->closed_reason = g_strdup(reason->message);
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
}

static gpointer
loop_thread(gpointer data)
{
    Fixture *f = data;

    g_main_loop_run(f->loop);
    return NULL;
}

static gboolean
quit_cb(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

/* Waits until @event was delivered (after the first @from events). */
static gboolean
wait_event(Fixture *f, guint from, const char *event)
{
    gint64 deadline = g_get_monotonic_time() + TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;
    gboolean found = FALSE;

    g_mutex_lock(&f->lock);
    while (!found) {
        for (guint i = from; i < f->events->len && !found; i++) {
            found = strcmp(g_ptr_array_index(f->events, i), event) == 0;
        }
        if (!found && !g_cond_wait_until(&f->cond, &f->lock, deadline)) {
            break;
        }
    }
    g_mutex_unlock(&f->lock);
    return found;
}

static guint
n_events(Fixture *f)
{
    guint n;

    g_mutex_lock(&f->lock);
    n = f->events->len;
    g_mutex_unlock(&f->lock);
    return n;
}

static char *
command(Fixture *f, const char *name, const char *args)
{
    g_autoptr(GError) error = NULL;
    char *ret = NULL;

    if (!berth_qmp_command(f->qmp, name, args, TIMEOUT_MS, NULL, &ret, NULL, &error)) {
        g_error("%s failed: %s", name, error->message);
    }
    return ret;
}

static gint64
tree_int(yajl_val tree, const char *a, const char *b)
{
    const char *path[] = {a, b, NULL};
    yajl_val v = yajl_tree_get(tree, path, yajl_t_number);

    g_assert_true(YAJL_IS_INTEGER(v));
    return YAJL_GET_INTEGER(v);
}

/* QEMU dies with the test even when an assertion aborts it halfway. */
static void
child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void
test_qemu(void)
{
    g_autofree char *qemu = g_find_program_in_path("qemu-system-x86_64");
    g_autoptr(GError) error = NULL;
    g_autofree char *qmp_arg = NULL;
    g_autofree char *ret = NULL;
    g_autofree char *version = NULL;
    g_autofree char *cls = NULL;
    Fixture fx = {0}, *f = &fx;
    const char *status_path[] = {"status", NULL};
    yajl_val tree;
    guint mark;
    int wstatus = 0;
    gboolean exited = FALSE;

    if (!qemu) {
        g_test_skip("qemu-system-x86_64 is not installed");
        return;
    }
    g_mutex_init(&f->lock);
    g_cond_init(&f->cond);
    f->events = g_ptr_array_new_with_free_func(g_free);
    f->ctx = g_main_context_new();
    f->loop = g_main_loop_new(f->ctx, FALSE);
    f->loop_thread = g_thread_new("qmp-loop", loop_thread, f);
    f->dir = g_dir_make_tmp("test-qmp-qemu-XXXXXX", NULL);
    f->sock = g_build_filename(f->dir, "qmp.sock", NULL);
    qmp_arg = g_strdup_printf("unix:%s,server=on,wait=off", f->sock);
    {
        const char *argv[] = {qemu, "-machine", "none", "-nodefaults", "-display", "none",
                              "-S", "-accel", "kvm", "-accel", "tcg", "-qmp", qmp_arg, NULL};

        g_assert_true(g_spawn_async(NULL, (char **) argv, NULL,
                                    G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL,
                                    child_setup, NULL, &f->pid, &error));
    }
    f->qmp = berth_qmp_new(f->ctx, on_event, on_closed, f);

    /* QEMU creates the socket a little after it starts: the connect retries. */
    g_assert_true(berth_qmp_connect(f->qmp, f->sock, TIMEOUT_MS, NULL, &error));
    g_assert_no_error(error);
    g_assert_true(berth_qmp_is_connected(f->qmp));

    ret = command(f, "query-version", NULL);
    tree = yajl_tree_parse(ret, NULL, 0);
    g_assert_nonnull(tree);
    version = g_strdup_printf("%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT ".%" G_GINT64_FORMAT,
                              tree_int(tree, "qemu", "major"), tree_int(tree, "qemu", "minor"),
                              tree_int(tree, "qemu", "micro"));
    g_assert_cmpstr(version, ==, berth_qmp_qemu_version(f->qmp));
    yajl_tree_free(tree);
    g_clear_pointer(&ret, g_free);

    ret = command(f, "query-status", NULL);
    tree = yajl_tree_parse(ret, NULL, 0);
    g_assert_cmpstr(YAJL_GET_STRING(yajl_tree_get(tree, status_path, yajl_t_string)), ==,
                    "prelaunch");
    yajl_tree_free(tree);
    g_clear_pointer(&ret, g_free);

    g_assert_false(berth_qmp_command(f->qmp, "no-such-command", NULL, TIMEOUT_MS, NULL, &ret,
                                     &cls, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_true(g_str_has_prefix(error->message, "QEMU refused no-such-command: "));
    g_assert_cmpstr(cls, ==, "CommandNotFound");
    g_clear_error(&error);
    g_clear_pointer(&cls, g_free);
    g_assert_false(berth_qmp_command(f->qmp, "device_del", "{\"id\": \"nope\"}", TIMEOUT_MS, NULL,
                                     NULL, &cls, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_cmpstr(cls, ==, "DeviceNotFound");
    g_clear_error(&error);

    mark = n_events(f);
    g_free(command(f, "cont", NULL));
    g_assert_true(wait_event(f, mark, "RESUME"));
    mark = n_events(f);
    g_free(command(f, "stop", NULL));
    g_assert_true(wait_event(f, mark, "STOP"));
    ret = command(f, "query-status", NULL);
    g_assert_nonnull(strstr(ret, "\"paused\""));
    g_clear_pointer(&ret, g_free);

    /* quit: the reply (or the close, if it wins), SHUTDOWN, then closed. */
    mark = n_events(f);
    if (!berth_qmp_command(f->qmp, "quit", NULL, TIMEOUT_MS, NULL, NULL, NULL, &error)) {
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
        g_clear_error(&error);
    }
    g_assert_true(wait_event(f, mark, "SHUTDOWN"));
    g_mutex_lock(&f->lock);
    while (f->closed == 0) {
        g_assert_true(g_cond_wait_until(&f->cond, &f->lock,
                                        g_get_monotonic_time() + TIMEOUT_MS * 1000) ||
                      f->closed);
    }
    g_assert_cmpstr(f->closed_reason, ==, "monitor connection closed by QEMU");
    g_mutex_unlock(&f->lock);
    g_assert_false(berth_qmp_is_connected(f->qmp));

    for (int i = 0; i < 2000 && !exited; i++) {
        pid_t r = waitpid(f->pid, &wstatus, WNOHANG);

        exited = r == f->pid;
        if (!exited) {
            g_usleep(10 * 1000);
        }
    }
    if (!exited) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &wstatus, 0);
    }
    g_assert_true(exited);
    g_assert_true(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);

    berth_qmp_unref(f->qmp);
    {
        GSource *idle = g_idle_source_new();

        g_source_set_callback(idle, quit_cb, f->loop, NULL);
        g_source_attach(idle, f->ctx);
        g_source_unref(idle);
    }
    g_thread_join(f->loop_thread);
    g_main_loop_unref(f->loop);
    g_main_context_unref(f->ctx);
    g_unlink(f->sock);
    g_rmdir(f->dir);
    g_free(f->sock);
    g_free(f->dir);
    g_free(f->closed_reason);
    g_ptr_array_unref(f->events);
    g_mutex_clear(&f->lock);
    g_cond_clear(&f->cond);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qemu/qmp/real-qemu", test_qemu);
    return g_test_run();
}
