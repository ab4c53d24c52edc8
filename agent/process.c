/* Spawning processes and watching them by pidfd: a pidfd turns readable when the process
 * exits, before it is reaped, and works for processes that are not our children. */
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib-unix.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef P_PIDFD
#define P_PIDFD 3
#endif

int
berth_process_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int) syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

gboolean
berth_process_signal(pid_t pid, int pidfd, int sig, GError **error)
{
    int r = -1;

#ifdef SYS_pidfd_send_signal
    if (pidfd >= 0) {
        r = (int) syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    }
#endif
    if (pidfd < 0 || (r < 0 && errno == ENOSYS)) {
        r = kill(pid, sig);
    }
    if (r < 0 && errno != ESRCH) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "cannot send signal %d to process %d: %s", sig, (int) pid, g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}

/* Runs in the child between fork and exec: async-signal-safe calls only. */
static void G_GNUC_NORETURN
child_exec(const BerthSpawnSpec *spec, char *const *envp, int null_fd, int log_fd)
{
    sigset_t none;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++) {
        signal(sig, SIG_DFL);
    }
    if (setsid() < 0) {
        _exit(126);
    }
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(log_fd, STDOUT_FILENO) < 0 ||
        dup2(log_fd, STDERR_FILENO) < 0) {
        _exit(126);
    }
    /* Every fd but 0-2 and the kept ones is closed at exec. */
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        for (int fd = 3; fd < 65536; fd++) {
            fcntl(fd, F_SETFD, FD_CLOEXEC);
        }
    }
    for (guint i = 0; i < spec->n_keep_fds; i++) {
        int fl = fcntl(spec->keep_fds[i], F_GETFD);
        if (fl < 0 || fcntl(spec->keep_fds[i], F_SETFD, fl & ~FD_CLOEXEC) < 0) {
            _exit(126);
        }
    }
    if (chdir(spec->cwd ? spec->cwd : "/") < 0) {
        _exit(126);
    }
    execve(spec->argv[0], (char *const *) spec->argv, envp);
    _exit(127);
}

gboolean
berth_process_spawn(const BerthSpawnSpec *spec, pid_t *pid_out, int *pidfd_out,
                    GError **error)
{
    g_auto(GStrv) default_env = NULL;
    char *const *envp;
    int null_fd;
    int log_fd;
    pid_t pid;

    if (!spec->argv || !spec->argv[0] || !g_path_is_absolute(spec->argv[0])) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "cannot spawn '%s': the program must be an absolute path",
                    spec->argv && spec->argv[0] ? spec->argv[0] : "");
        return FALSE;
    }
    if (access(spec->argv[0], X_OK) < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "cannot run '%s': %s",
                    spec->argv[0], g_strerror(errno));
        return FALSE;
    }
    if (spec->envp) {
        envp = (char *const *) spec->envp;
    } else {
        default_env = g_new0(char *, 4);
        default_env[0] = g_strdup("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
        default_env[1] = g_strdup_printf("HOME=%s", g_get_home_dir());
        default_env[2] = g_strdup("LC_ALL=C");
        envp = default_env;
    }
    null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null_fd < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot open /dev/null: %s",
                    g_strerror(errno));
        return FALSE;
    }
    if (spec->log_path) {
        log_fd = open(spec->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY,
                      0600);
        if (log_fd < 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                        "cannot open log file '%s': %s", spec->log_path, g_strerror(errno));
            close(null_fd);
            return FALSE;
        }
    } else {
        log_fd = null_fd;
    }

    pid = fork();
    if (pid < 0) {
        int err = errno;
        close(null_fd);
        if (log_fd != null_fd) {
            close(log_fd);
        }
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot fork for '%s': %s",
                    spec->argv[0], g_strerror(err));
        return FALSE;
    }
    if (pid == 0) {
        child_exec(spec, envp, null_fd, log_fd);
    }
    close(null_fd);
    if (log_fd != null_fd) {
        close(log_fd);
    }
    *pid_out = pid;
    /* The child cannot be reaped before we open the pidfd: only we reap our children. */
    *pidfd_out = berth_process_pidfd_open(pid);
    if (*pidfd_out >= 0) {
        fcntl(*pidfd_out, F_SETFD, FD_CLOEXEC);
    }
    return TRUE;
}

typedef struct {
    guint id;
    pid_t pid;
    int pidfd;
    BerthProcessExitFunc func;
    gpointer data;
    GSource *source;
} ProcessWatch;

/* Protects @watches: watches are added and removed from any thread (plugins spawn from jobs),
 * and fire on the main context. Each watch is refcounted: one ref for the table, one for its
 * source, so that an unwatch racing with the exit callback frees nothing in use. */
static GMutex watches_lock;
static GHashTable *watches; /* id -> ProcessWatch (the table's ref) */
static guint next_watch_id = 1;

static void
watch_clear(gpointer p)
{
    ProcessWatch *w = p;

    if (w->source) {
        g_source_unref(w->source);
    }
    if (w->pidfd >= 0) {
        close(w->pidfd);
    }
}

static void
watch_unref(gpointer p)
{
    g_atomic_rc_box_release_full(p, watch_clear);
}

/* Takes the table's reference of watch @id; NULL when it was unwatched meanwhile. */
static ProcessWatch *
watch_steal(guint id)
{
    ProcessWatch *w = NULL;

    g_mutex_lock(&watches_lock);
    if (watches) {
        /* When found, the table's reference becomes the caller's. */
        g_hash_table_steal_extended(watches, GUINT_TO_POINTER(id), NULL, (gpointer *) &w);
    }
    g_mutex_unlock(&watches_lock);
    return w;
}

/* Reaps @pid when it is our child; -1 when it is not (or was reaped by someone else). */
static int
reap(pid_t pid, int pidfd)
{
    siginfo_t info;

    memset(&info, 0, sizeof(info));
    if (pidfd >= 0 && syscall(SYS_waitid, P_PIDFD, pidfd, &info, WEXITED | WNOHANG, NULL) == 0 &&
        info.si_pid == pid) {
        if (info.si_code == CLD_EXITED) {
            return W_EXITCODE(info.si_status, 0);
        }
        return info.si_status & 0x7f;
    }
    return -1;
}

static void
watch_fire(ProcessWatch *src_ref, int status)
{
    ProcessWatch *w = watch_steal(src_ref->id);

    if (!w) {
        return;
    }
    w->func(w->pid, status, w->data);
    watch_unref(w);
}

static gboolean
pidfd_ready(int fd, GIOCondition cond, gpointer user_data)
{
    ProcessWatch *w = user_data;

    watch_fire(w, reap(w->pid, w->pidfd));
    return G_SOURCE_REMOVE;
}

/* Without pidfds: our child is polled with waitpid; another process with kill(0), which
 * cannot tell a zombie from a live process, hence pidfds wherever the kernel has them. */
static gboolean
poll_tick(gpointer user_data)
{
    ProcessWatch *w = user_data;
    int status = -1;
    pid_t r = waitpid(w->pid, &status, WNOHANG);

    if (r == w->pid) {
        watch_fire(w, status);
        return G_SOURCE_REMOVE;
    }
    if (r < 0 && errno == ECHILD && kill(w->pid, 0) < 0 && errno == ESRCH) {
        watch_fire(w, -1);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

guint
berth_process_watch(GMainContext *ctx, pid_t pid, int pidfd, BerthProcessExitFunc func,
                    gpointer data, GError **error)
{
    static gsize logged_fallback;
    ProcessWatch *w;
    GSource *src;
    guint id;

    if (pidfd < 0) {
        pidfd = berth_process_pidfd_open(pid);
        if (pidfd < 0 && errno != ENOSYS) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                        "cannot watch process %d: %s", (int) pid, g_strerror(errno));
            return 0;
        }
        if (pidfd >= 0) {
            fcntl(pidfd, F_SETFD, FD_CLOEXEC);
        }
    }
    w = g_atomic_rc_box_new0(ProcessWatch);
    w->pid = pid;
    w->pidfd = pidfd;
    w->func = func;
    w->data = data;
    if (pidfd >= 0) {
        src = g_unix_fd_source_new(pidfd, G_IO_IN);
        g_source_set_callback(src, (GSourceFunc) (void (*)(void)) pidfd_ready,
                              g_atomic_rc_box_acquire(w), watch_unref);
    } else {
        if (g_once_init_enter(&logged_fallback)) {
            g_warning("pidfd_open is not available: polling watched processes every 50 ms");
            g_once_init_leave(&logged_fallback, 1);
        }
        src = g_timeout_source_new(50);
        g_source_set_callback(src, poll_tick, g_atomic_rc_box_acquire(w), watch_unref);
    }
    w->source = src;
    g_mutex_lock(&watches_lock);
    if (!watches) {
        watches = g_hash_table_new_full(NULL, NULL, NULL, watch_unref);
    }
    id = w->id = next_watch_id++;
    g_hash_table_insert(watches, GUINT_TO_POINTER(id), w);
    g_mutex_unlock(&watches_lock);
    g_source_attach(src, ctx);
    return id;
}

void
berth_process_unwatch(guint id)
{
    ProcessWatch *w = id ? watch_steal(id) : NULL;

    if (w) {
        g_source_destroy(w->source);
        watch_unref(w);
    }
}
