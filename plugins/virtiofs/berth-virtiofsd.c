/* berth-virtiofsd: the standalone vhost-user-fs backend, started by QEMU, libvirt or by hand. */
#include <errno.h>
#include <gio/gio.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "device.h"
#include "fs-handler.h"
#include "vhost-user.h"

static volatile sig_atomic_t quitting;
static volatile int conn_fd = -1;

static void on_signal(int sig)
{
    quitting = 1;
    if (conn_fd >= 0) {
        shutdown(conn_fd, SHUT_RDWR);
    }
}

static GLogLevelFlags log_max = G_LOG_LEVEL_MESSAGE;

static GLogWriterOutput log_writer(GLogLevelFlags level, const GLogField *fields, gsize n,
                                   gpointer user_data)
{
    /* Lower flag values are more severe. */
    if ((level & G_LOG_LEVEL_MASK) > log_max) {
        return G_LOG_WRITER_HANDLED;
    }
    return g_log_writer_standard_streams(level, fields, n, user_data);
}

static gboolean parse_log_level(const char *s, GError **error)
{
    static const struct {
        const char *name;
        GLogLevelFlags level;
    } levels[] = {
        { "debug", G_LOG_LEVEL_DEBUG }, { "info", G_LOG_LEVEL_INFO },
        { "warn", G_LOG_LEVEL_WARNING }, { "error", G_LOG_LEVEL_CRITICAL },
        { "off", 0 },
    };
    for (guint i = 0; i < G_N_ELEMENTS(levels); i++) {
        if (g_str_equal(s, levels[i].name)) {
            log_max = levels[i].level;
            if (log_max == G_LOG_LEVEL_DEBUG) {
                g_setenv("G_MESSAGES_DEBUG", "all", TRUE);
            }
            return TRUE;
        }
    }
    g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                "--log-level must be debug, info, warn, error or off, not '%s'", s);
    return FALSE;
}

static gboolean parse_cache(const char *s, VfsCacheMode *mode, GError **error)
{
    if (!s || g_str_equal(s, "auto")) {
        *mode = VFS_CACHE_AUTO;
    } else if (g_str_equal(s, "always")) {
        *mode = VFS_CACHE_ALWAYS;
    } else if (g_str_equal(s, "never") || g_str_equal(s, "none")) {
        *mode = VFS_CACHE_NEVER;
    } else {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--cache must be auto, always or never, not '%s'", s);
        return FALSE;
    }
    return TRUE;
}

static gboolean parse_yes_no(const char *name, const char *s, gboolean *v, GError **error)
{
    if (!s) {
        return TRUE;
    }
    if (g_str_equal(s, "yes")) {
        *v = TRUE;
    } else if (g_str_equal(s, "no")) {
        *v = FALSE;
    } else {
        g_set_error(error, G_OPTION_ERROR, G_OPTION_ERROR_BAD_VALUE,
                    "--%s must be yes or no, not '%s'", name, s);
        return FALSE;
    }
    return TRUE;
}

/* A polling or spinning window from the command line: at most 1 ms, negative is 0. */
static guint dev_opts_poll(gint us)
{
    return us > 0 ? (guint) MIN(us, 1000) : 0;
}

static size_t fs_request(gpointer fs, const struct iovec *out, unsigned out_n,
                         const struct iovec *in, unsigned in_n)
{
    return vfs_fs_handle(fs, out, out_n, in, in_n);
}

/* A --fd must be a listening stream socket. */
static gboolean check_listen_fd(int fd, GError **error)
{
    int v = 0;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) < 0 || !v) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "--fd=%d is not a listening socket", fd);
        return FALSE;
    }
    return TRUE;
}

int main(int argc, char **argv)
{
    g_autofree char *socket_path = NULL;
    g_autofree char *shared_dir = NULL;
    g_autofree char *cache = NULL;
    g_autofree char *group = NULL;
    g_autofree char *log_level = NULL;
    g_autofree char *pool_inline_s = NULL;
    gboolean pool_inline = TRUE;
    gint fd = -1;
    gint pool_size = 0;
    gint poll_us = 50;
    gint spin_us = -1;
    gint coalesce_us = 50;
    gboolean readonly = FALSE;
    gboolean print_caps = FALSE;
    GOptionEntry entries[] = {
        { "socket-path", 0, 0, G_OPTION_ARG_FILENAME, &socket_path,
          "Listen for the front-end (QEMU) on this unix socket", "PATH" },
        { "fd", 0, 0, G_OPTION_ARG_INT, &fd,
          "Use this already listening socket instead of --socket-path", "N" },
        { "shared-dir", 0, 0, G_OPTION_ARG_FILENAME, &shared_dir,
          "The directory the guest sees as the root of the share", "DIR" },
        { "thread-pool-size", 0, 0, G_OPTION_ARG_INT, &pool_size,
          "Threads handling requests; 0 (the default) handles them in the queue threads", "N" },
        { "poll-us", 0, 0, G_OPTION_ARG_INT, &poll_us,
          "The most microseconds a queue thread keeps polling an empty ring before it sleeps, "
          "adapted to how fast the guest answers; only while no other queue thread and no "
          "pooled request is running (default 50, at most 1000; 0: never polls)", "N" },
        { "pool-spin-us", 0, 0, G_OPTION_ARG_INT, &spin_us,
          "With --thread-pool-size > 0: the most microseconds an idle pool thread keeps "
          "looking for the next request before it sleeps, adapted as --poll-us is; one thread "
          "polls or spins at a time (default: --poll-us's value; 0: never spins)", "N" },
        { "coalesce-us", 0, 0, G_OPTION_ARG_INT, &coalesce_us,
          "The most microseconds a queue thread holds back the interrupt for a request it "
          "completed while more requests wait in its ring, so that one interrupt covers "
          "several (default 50, at most 1000; 0: interrupt at once)", "N" },
        { "pool-inline", 0, 0, G_OPTION_ARG_STRING, &pool_inline_s,
          "With --thread-pool-size > 0: a queue thread handles a request itself when it is "
          "alone (nothing else in its ring, nothing in the pool), saving two wake-ups "
          "(default yes)", "yes|no" },
        { "cache", 0, 0, G_OPTION_ARG_STRING, &cache,
          "Guest caching of data and metadata: auto (default), always or never", "MODE" },
        { "socket-group", 0, 0, G_OPTION_ARG_STRING, &group,
          "Give the socket to this group (mode 0660)", "GROUP" },
        { "readonly", 0, 0, G_OPTION_ARG_NONE, &readonly,
          "Refuse every request that would change the shared directory", NULL },
        { "log-level", 0, 0, G_OPTION_ARG_STRING, &log_level,
          "debug, info, warn, error or off (default: warnings and refused requests)",
          "LEVEL" },
        { "print-capabilities", 0, 0, G_OPTION_ARG_NONE, &print_caps,
          "Print the vhost-user backend capabilities as JSON and exit", NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- vhost-user-fs backend");
    g_autoptr(GError) error = NULL;
    VfsFsOptions fs_opts = { 0 };
    int listen_fd = -1, lock_fd = -1;
    int rc = 1;

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_summary(ctx,
        "Shares DIR with a guest over virtio-fs: QEMU connects with\n"
        "-chardev socket,id=c,path=PATH -device vhost-user-fs-pci,chardev=c,tag=TAG.\n"
        "Serves one front-end connection and exits when it disconnects.");
    g_option_context_set_description(ctx,
        "Not yet done: sandboxing (namespaces, seccomp, capability dropping) comes in a\n"
        "later version; until then run it with the least privilege the share allows.");
    g_log_set_writer_func(log_writer, NULL, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error) ||
        (log_level && !parse_log_level(log_level, &error)) ||
        !parse_cache(cache, &fs_opts.cache, &error) ||
        !parse_yes_no("pool-inline", pool_inline_s, &pool_inline, &error)) {
        g_printerr("berth-virtiofsd: %s\n", error->message);
        return 2;
    }
    if (print_caps) {
        printf("{\n  \"type\": \"fs\"\n}\n");
        return 0;
    }
    if (argc > 1 || !shared_dir || (!socket_path) == (fd < 0) || pool_size < 0) {
        g_printerr("berth-virtiofsd: needs --shared-dir and exactly one of --socket-path "
                   "or --fd (see --help)\n");
        return 2;
    }
    fs_opts.shared_dir = shared_dir;
    fs_opts.readonly = readonly;

    g_autoptr(VfsFs) fs = vfs_fs_new(&fs_opts, &error);
    if (!fs) {
        g_printerr("berth-virtiofsd: %s\n", error->message);
        return 1;
    }
    VfsDeviceOptions dev_opts = {
        .handle = fs_request,
        .user_data = fs,
        .thread_pool_size = pool_size,
        .poll_us = dev_opts_poll(poll_us),
        .pool_inline = pool_inline,
        .coalesce_us = dev_opts_poll(coalesce_us),
        .pool_spin_us = dev_opts_poll(spin_us >= 0 ? spin_us : poll_us),
    };
    g_autoptr(VfsDevice) dev = vfs_device_new(&dev_opts, &error);
    if (!dev) {
        g_printerr("berth-virtiofsd: %s\n", error->message);
        return 1;
    }

    if (socket_path) {
        listen_fd = vhost_user_listen(socket_path, group, &lock_fd, &error);
    } else if (check_listen_fd(fd, &error)) {
        listen_fd = fd;
    }
    if (listen_fd < 0) {
        g_printerr("berth-virtiofsd: %s\n", error->message);
        return 1;
    }

    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    g_info("waiting for the front-end on %s", socket_path ? socket_path : "the given fd");
    int sock = -1;
    if (!quitting) {
        /* Our signal handlers all set quitting: any other failure is a real one. */
        sock = vhost_user_accept(listen_fd, &error);
    }
    if (sock < 0) {
        if (!quitting) {
            g_printerr("berth-virtiofsd: %s\n", error->message);
        }
        rc = quitting ? 0 : 1;
        goto out;
    }
    conn_fd = sock;
    g_info("front-end connected");
    if (quitting) {
        shutdown(sock, SHUT_RDWR);
    }
    if (!vfs_device_serve(dev, sock, &error)) {
        g_printerr("berth-virtiofsd: the connection ended on an error: %s\n", error->message);
        conn_fd = -1;
        goto out;
    }
    conn_fd = -1;
    g_info("front-end disconnected");
    rc = 0;

out:
    vhost_user_unlisten(socket_path, listen_fd, lock_fd);
    return rc;
}
