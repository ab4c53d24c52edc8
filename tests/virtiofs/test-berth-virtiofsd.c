/* The standalone berth-virtiofsd: options, the socket lock, --fd, and real FUSE through the device. */
#include <fcntl.h>
#include <gio/gio.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "vfs-test.h"

static const char *binary;

typedef struct {
    char *dir;
    char *share;
    char *sock;
    GPid pid;
} Daemon;

static void daemon_spawn(Daemon *d, const char *const *extra, int keep_fd)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *sockarg = g_strdup_printf("--socket-path=%s", d->sock);
    g_autofree char *sharearg = g_strdup_printf("--shared-dir=%s", d->share);
    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, (char *)binary);
    if (keep_fd < 0) {
        g_ptr_array_add(argv, sockarg);
    }
    g_ptr_array_add(argv, sharearg);
    for (guint i = 0; extra && extra[i]; i++) {
        g_ptr_array_add(argv, (char *)extra[i]);
    }
    g_ptr_array_add(argv, NULL);
    GSpawnFlags flags = G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDERR_TO_DEV_NULL;
    if (keep_fd >= 0) {
        flags |= G_SPAWN_LEAVE_DESCRIPTORS_OPEN;
    }
    g_assert_true(g_spawn_async(NULL, (char **)argv->pdata, NULL, flags, NULL, NULL, &d->pid,
                                &error));
    g_assert_no_error(error);
    g_ptr_array_free(argv, TRUE);
}

static void daemon_up(Daemon *d, const char *const *extra)
{
    d->dir = g_dir_make_tmp("vfsd-XXXXXX", NULL);
    d->share = g_build_filename(d->dir, "share", NULL);
    d->sock = g_build_filename(d->dir, "sock", NULL);
    g_assert_cmpint(mkdir(d->share, 0755), ==, 0);
    g_autofree char *file = g_build_filename(d->share, "hello", NULL);
    g_assert_true(g_file_set_contents(file, "hello from the host\n", -1, NULL));
    if (extra != (const char *const *)-1) {
        daemon_spawn(d, extra, -1);
        for (guint i = 0; i < 500 && !g_file_test(d->sock, G_FILE_TEST_EXISTS); i++) {
            g_usleep(10000);
        }
        g_assert_true(g_file_test(d->sock, G_FILE_TEST_EXISTS));
    }
}

static int daemon_wait(Daemon *d)
{
    int status = -1;
    for (guint i = 0; i < 1000; i++) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            return status;
        }
        g_usleep(10000);
    }
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &status, 0);
    g_assert_not_reached();
}

static void daemon_down(Daemon *d)
{
    g_autofree char *file = g_build_filename(d->share, "hello", NULL);
    unlink(file);
    rmdir(d->share);
    rmdir(d->dir);
    g_free(d->share);
    g_free(d->sock);
    g_free(d->dir);
}

static guint32 fuse(VfsFe *fe, guint32 op, guint64 node, const void *arg, guint32 alen,
                    const char *name, void *reply, guint32 rlen)
{
    static guint64 unique = 1;
    guint8 req[512];
    guint8 argbuf[256];
    gsize nlen = name ? strlen(name) + 1 : 0;
    if (alen) {
        memcpy(argbuf, arg, alen);
    }
    if (name) {
        memcpy(argbuf + alen, name, nlen);
    }
    gsize len = vfs_fe_fuse_build(req, op, node, unique++, argbuf, alen + nlen, NULL, 0);
    guint64 rq = vfs_fe_alloc(fe, len, 8), rp = vfs_fe_alloc(fe, rlen, 8);
    VfsFeUsed used;
    int head = vfs_fe_submit_split(fe, 1, rq, req, len, rp, rlen, 7, TRUE);
    g_assert_cmpint(head, >=, 0);
    vfs_fe_kick(fe, 1);
    g_assert_true(vfs_fe_wait_used(fe, 1, &used, VFS_TEST_TIMEOUT_MS));
    memcpy(reply, vfs_fe_host(fe, rp), rlen);
    vfs_fe_alloc_reset(fe);
    return used.len;
}

/* INIT, LOOKUP, OPEN, READ of the share's file through the device and the real filesystem. */
static void read_hello(VfsFe *fe)
{
    guint8 reply[4096];
    struct fuse_out_header oh;
    struct fuse_init_in init = { .major = 7, .minor = 31 };
    g_assert_cmpuint(fuse(fe, FUSE_INIT, 0, &init, sizeof(init), NULL, reply, 256), >, 16);
    memcpy(&oh, reply, sizeof(oh));
    g_assert_cmpint(oh.error, ==, 0);

    struct fuse_entry_out e;
    g_assert_cmpuint(fuse(fe, FUSE_LOOKUP, 1, NULL, 0, "hello", reply, 256), ==,
                     16 + sizeof(e));
    memcpy(&e, reply + 16, sizeof(e));
    g_assert_cmpuint(e.attr.size, ==, 20);

    struct fuse_open_in oi = { .flags = O_RDONLY };
    struct fuse_open_out oo;
    g_assert_cmpuint(fuse(fe, FUSE_OPEN, e.nodeid, &oi, sizeof(oi), NULL, reply, 256), ==,
                     16 + sizeof(oo));
    memcpy(&oo, reply + 16, sizeof(oo));

    struct fuse_read_in ri = { .fh = oo.fh, .size = 4000 };
    g_assert_cmpuint(fuse(fe, FUSE_READ, e.nodeid, &ri, sizeof(ri), NULL, reply, 4096), ==,
                     16 + 20);
    g_assert_cmpmem(reply + 16, 20, "hello from the host\n", 20);

    /* A path that climbs out of the share is refused. */
    memcpy(&oh, reply, sizeof(oh));
    fuse(fe, FUSE_LOOKUP, 1, NULL, 0, "..", reply, 256);
    memcpy(&oh, reply, sizeof(oh));
    if (oh.error == 0) {
        memcpy(&e, reply + 16, sizeof(e));
        g_assert_cmpuint(e.nodeid, ==, 1);
    }
}

static void test_serve(gconstpointer data)
{
    const char *pool = data;
    const char *extra[] = { pool, NULL };
    Daemon d = { 0 };
    g_autoptr(GError) error = NULL;
    VfsFeSetup setup = { .nqueues = 2 };

    daemon_up(&d, extra);
    VfsFe *fe = vfs_fe_connect(d.sock, 4 << 20, &error);
    g_assert_no_error(error);
    g_assert_true(vfs_fe_setup(fe, &setup, &error));
    g_assert_no_error(error);
    read_hello(fe);
    /* The front-end goes away: the daemon exits cleanly and removes its socket and lock. */
    vfs_fe_free(fe);
    int status = daemon_wait(&d);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    g_assert_false(g_file_test(d.sock, G_FILE_TEST_EXISTS));
    daemon_down(&d);
}

static void test_second_instance_refused(void)
{
    Daemon d = { 0 }, d2 = { 0 };

    daemon_up(&d, NULL);
    d2 = d;
    daemon_spawn(&d2, NULL, -1);
    int status = daemon_wait(&d2);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 1);
    /* SIGTERM while waiting for a front-end: a clean exit. */
    kill(d.pid, SIGTERM);
    status = daemon_wait(&d);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    g_assert_false(g_file_test(d.sock, G_FILE_TEST_EXISTS));
    daemon_down(&d);
}

static void test_listen_fd(void)
{
    Daemon d = { 0 };
    g_autoptr(GError) error = NULL;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    VfsFeSetup setup = { .nqueues = 2 };

    daemon_up(&d, (const char *const *)-1);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    g_strlcpy(sun.sun_path, d.sock, sizeof(sun.sun_path));
    g_assert_cmpint(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), ==, 0);
    g_assert_cmpint(listen(fd, 1), ==, 0);
    g_autofree char *fdarg = g_strdup_printf("--fd=%d", fd);
    const char *extra[] = { fdarg, NULL };
    daemon_spawn(&d, extra, fd);
    close(fd);
    VfsFe *fe = vfs_fe_connect(d.sock, 4 << 20, &error);
    g_assert_no_error(error);
    g_assert_true(vfs_fe_setup(fe, &setup, &error));
    g_assert_no_error(error);
    read_hello(fe);
    vfs_fe_free(fe);
    int status = daemon_wait(&d);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    unlink(d.sock);
    daemon_down(&d);
}

static void test_bad_options(void)
{
    static const char *const cases[][4] = {
        { "--thread-pool-size=-1", NULL },
        { "--cache=sometimes", NULL },
        { "--log-level=loud", NULL },
        { "--fd=0", "--socket-path=/nonexistent/x", NULL },
        { "--socket-path=/tmp/x", "stray", NULL },
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        int status;
        GPtrArray *argv = g_ptr_array_new();
        g_ptr_array_add(argv, (char *)binary);
        g_ptr_array_add(argv, "--shared-dir=/tmp");
        for (guint j = 0; cases[i][j]; j++) {
            g_ptr_array_add(argv, (char *)cases[i][j]);
        }
        g_ptr_array_add(argv, NULL);
        g_assert_true(g_spawn_sync(NULL, (char **)argv->pdata, NULL,
                                   G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                                   NULL, NULL, NULL, NULL, &status, &error));
        g_ptr_array_free(argv, TRUE);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 2);
    }
}

int main(int argc, char **argv)
{
    vfs_test_init(&argc, &argv);
    binary = g_getenv("BERTH_VIRTIOFSD");
    if (!binary && argc > 1) {
        binary = argv[1];
    }
    if (!binary) {
        g_printerr("usage: %s PATH-TO-berth-virtiofsd\n", argv[0]);
        return 77;
    }
    signal(SIGPIPE, SIG_IGN);
    g_test_add_data_func("/virtiofs/berth-virtiofsd/serve/pool-0", "--thread-pool-size=0",
                         test_serve);
    g_test_add_data_func("/virtiofs/berth-virtiofsd/serve/pool-64", "--thread-pool-size=64",
                         test_serve);
    g_test_add_func("/virtiofs/berth-virtiofsd/second-instance-refused",
                    test_second_instance_refused);
    g_test_add_func("/virtiofs/berth-virtiofsd/listen-fd", test_listen_fd);
    g_test_add_func("/virtiofs/berth-virtiofsd/bad-options", test_bad_options);
    return g_test_run();
}
