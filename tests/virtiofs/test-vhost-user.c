/* The vhost-user protocol handlers: features, acks, refusals, fds, memory tables, the socket lock. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "guest-mem.h"
#include "vfs-test.h"

#define BIT(n) (G_GUINT64_CONSTANT(1) << (n))

static void assert_alive(VfsTest *t)
{
    g_autoptr(GError) error = NULL;
    guint64 v = 0;
    g_assert_true(vfs_fe_get_u64(t->fe, VHOST_USER_GET_FEATURES, &v, &error));
    g_assert_no_error(error);
    g_assert_cmphex(v & BIT(VFS_VIRTIO_F_VERSION_1), !=, 0);
}

/* Sends @request with NEED_REPLY; returns the ack status. */
static guint64 call(VfsTest *t, guint32 request, const void *p, guint32 size, const int *fds,
                    guint nfds)
{
    g_autoptr(GError) error = NULL;
    guint64 status = 42;
    g_assert_true(vfs_fe_call(t->fe, request, p, size, fds, nfds, &status, &error));
    g_assert_no_error(error);
    return status;
}

/* Negotiates protocol features (REPLY_ACK) without starting anything. */
static void negotiate(VfsTest *t)
{
    g_autoptr(GError) error = NULL;
    guint64 pf = BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) | BIT(VHOST_USER_PROTOCOL_F_MQ) |
                 BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS);
    guint64 f = BIT(VFS_VIRTIO_F_VERSION_1) | BIT(VHOST_USER_F_PROTOCOL_FEATURES);
    g_assert_true(vfs_fe_send(t->fe, VHOST_USER_SET_PROTOCOL_FEATURES, 0, &pf, 8, NULL, 0,
                              &error));
    g_assert_cmpuint(call(t, VHOST_USER_SET_FEATURES, &f, 8, NULL, 0), ==, 0);
}

/* TRUE when the backend closed its copy of the pipe's write end (we closed ours). */
static gboolean pipe_closed_by_peer(int rfd)
{
    char c;
    for (int i = 0; i < 200; i++) {
        ssize_t n = read(rfd, &c, 1);
        if (n == 0) {
            return TRUE;
        }
        g_usleep(10000);
    }
    return FALSE;
}

static void test_features(void)
{
    VfsTest t;
    g_autoptr(GError) error = NULL;
    guint64 v;

    vfs_test_up(&t, 0, NULL);
    g_assert_true(vfs_fe_get_u64(t.fe, VHOST_USER_GET_FEATURES, &v, &error));
    g_assert_cmphex(v, ==, BIT(VFS_VIRTIO_F_VERSION_1) | BIT(VHOST_USER_F_PROTOCOL_FEATURES) |
                               BIT(VIRTIO_RING_F_INDIRECT_DESC) | BIT(VIRTIO_RING_F_EVENT_IDX));
    g_assert_true(vfs_fe_get_u64(t.fe, VHOST_USER_GET_PROTOCOL_FEATURES, &v, &error));
    g_assert_cmphex(v, ==, BIT(VHOST_USER_PROTOCOL_F_MQ) | BIT(VHOST_USER_PROTOCOL_F_REPLY_ACK) |
                               BIT(VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS));
    g_assert_true(vfs_fe_get_u64(t.fe, VHOST_USER_GET_QUEUE_NUM, &v, &error));
    g_assert_cmpuint(v, ==, VFS_DEVICE_DEFAULT_QUEUES);
    g_assert_true(vfs_fe_get_u64(t.fe, VHOST_USER_GET_MAX_MEM_SLOTS, &v, &error));
    g_assert_cmpuint(v, ==, VFS_MEM_MAX_SLOTS);
    g_assert_no_error(error);
    vfs_test_down(&t);
}

static void test_reply_ack(void)
{
    VfsTest t;
    guint64 bad = BIT(5);

    vfs_test_up(&t, 0, NULL);
    negotiate(&t);
    g_assert_cmpuint(call(&t, VHOST_USER_SET_FEATURES, &bad, 8, NULL, 0), !=, 0);
    g_assert_cmpuint(call(&t, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0), ==, 0);
    g_assert_true(vfs_test_log_contains("were not offered"));
    assert_alive(&t);
    vfs_test_down(&t);
}

static void test_unknown_request(void)
{
    VfsTest t;
    g_autoptr(GError) error = NULL;
    guint64 v = 0;

    vfs_test_up(&t, 0, NULL);
    /* Without REPLY_ACK negotiated: logged and ignored. */
    g_assert_true(vfs_fe_send(t.fe, 99, 0, &v, 8, NULL, 0, &error));
    assert_alive(&t);
    negotiate(&t);
    /* With it: refused with a non-zero status, and the connection stays. */
    g_assert_cmpuint(call(&t, 99, &v, 8, NULL, 0), !=, 0);
    g_assert_cmpuint(call(&t, VHOST_USER_SET_LOG_BASE, &v, 8, NULL, 0), !=, 0);
    g_assert_true(vfs_test_log_contains("request 99 is not supported"));
    assert_alive(&t);
    vfs_test_down(&t);
}

static void test_bad_sizes(void)
{
    VfsTest t;
    guint8 payload[64] = { 0 };
    static const struct {
        guint32 request;
        guint32 size;
    } cases[] = {
        { VHOST_USER_SET_FEATURES, 4 },        { VHOST_USER_SET_FEATURES, 16 },
        { VHOST_USER_SET_OWNER, 8 },           { VHOST_USER_SET_VRING_NUM, 4 },
        { VHOST_USER_SET_VRING_ADDR, 32 },     { VHOST_USER_SET_VRING_ADDR, 48 },
        { VHOST_USER_SET_VRING_BASE, 0 },      { VHOST_USER_SET_MEM_TABLE, 4 },
        { VHOST_USER_SET_MEM_TABLE, 8 + 31 },  { VHOST_USER_ADD_MEM_REG, 32 },
        { VHOST_USER_SET_VRING_ENABLE, 12 },   { VHOST_USER_SET_PROTOCOL_FEATURES, 0 },
    };

    vfs_test_up(&t, 0, NULL);
    negotiate(&t);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        vfs_test_log_clear();
        g_assert_cmpuint(call(&t, cases[i].request, payload, cases[i].size, NULL, 0), !=, 0);
        g_assert_true(vfs_test_log_contains("payload of"));
    }
    /* SET_MEM_TABLE that claims more regions than its payload holds. */
    VhostUserMemTable mt = { .nregions = 2 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 8 + 32, NULL, 0), !=, 0);
    mt.nregions = 9;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 8 + 32, NULL, 0), !=, 0);
    assert_alive(&t);
    vfs_test_down(&t);
}

static void test_bad_version(void)
{
    VfsTest t;
    g_autoptr(GError) error = NULL;
    VhostUserHeader h = { VHOST_USER_SET_OWNER, 0x2, 0 };

    vfs_test_up(&t, 0, NULL);
    g_assert_true(vfs_fe_send_bytes(t.fe, &h, sizeof(h), NULL, 0, &error));
    assert_alive(&t);
    g_assert_true(vfs_test_log_contains("protocol version 2"));
    vfs_test_down(&t);
}

static void test_oversized_payload(void)
{
    VfsTest t;
    g_autoptr(GError) error = NULL;
    VhostUserHeader h = { VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 1u << 30 };

    vfs_test_up(&t, 0, NULL);
    g_assert_true(vfs_fe_send_bytes(t.fe, &h, sizeof(h), NULL, 0, &error));
    /* The stream cannot be trusted after that: the device disconnects, cleanly. */
    g_assert_true(vfs_fe_wait_closed(t.fe, VFS_TEST_TIMEOUT_MS));
    vfs_test_down(&t);
}

static void test_truncated_message(void)
{
    VfsTest t;
    g_autoptr(GError) error = NULL;
    VhostUserHeader h = { VHOST_USER_SET_FEATURES, VHOST_USER_VERSION, 8 };
    int p[2];

    vfs_test_up(&t, 0, NULL);
    g_assert_cmpint(pipe2(p, O_CLOEXEC | O_NONBLOCK), ==, 0);
    g_assert_true(vfs_fe_send_bytes(t.fe, &h, sizeof(h) - 2, &p[1], 1, &error));
    close(p[1]);
    shutdown(vfs_fe_socket(t.fe), SHUT_WR);
    g_assert_true(vfs_fe_wait_closed(t.fe, VFS_TEST_TIMEOUT_MS));
    g_assert_true(pipe_closed_by_peer(p[0]));
    close(p[0]);
    vfs_test_down(&t);
}

static void test_extra_fds_closed(void)
{
    VfsTest t;
    int p[2], q[2];
    guint64 idx = 0;

    vfs_test_up(&t, 0, NULL);
    negotiate(&t);
    g_assert_cmpint(pipe2(p, O_CLOEXEC | O_NONBLOCK), ==, 0);
    g_assert_cmpint(pipe2(q, O_CLOEXEC | O_NONBLOCK), ==, 0);
    /* Two fds where the spec says one: refused, both closed. */
    int fds[2] = { p[1], q[1] };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_CALL, &idx, 8, fds, 2), !=, 0);
    /* An fd on a message that takes none. */
    g_assert_cmpuint(call(&t, VHOST_USER_SET_OWNER, NULL, 0, fds, 1), !=, 0);
    /* An fd with the NOFD flag. */
    idx = VHOST_USER_VRING_NOFD_MASK;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_ERR, &idx, 8, &fds[1], 1), !=, 0);
    /* An fd with a refused queue index. */
    idx = 200;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_CALL, &idx, 8, fds, 1), !=, 0);
    close(p[1]);
    close(q[1]);
    g_assert_true(pipe_closed_by_peer(p[0]));
    g_assert_true(pipe_closed_by_peer(q[0]));
    close(p[0]);
    close(q[0]);
    assert_alive(&t);
    vfs_test_down(&t);
}

static void test_too_many_fds(void)
{
    VfsTest t;
    g_autoptr(GError) error = NULL;
    int fds[12];
    int p[2];

    vfs_test_up(&t, 0, NULL);
    g_assert_cmpint(pipe2(p, O_CLOEXEC | O_NONBLOCK), ==, 0);
    for (guint i = 0; i < G_N_ELEMENTS(fds); i++) {
        fds[i] = p[1];
    }
    VhostUserHeader h = { VHOST_USER_SET_OWNER, VHOST_USER_VERSION, 0 };
    g_assert_true(vfs_fe_send_bytes(t.fe, &h, sizeof(h), fds, G_N_ELEMENTS(fds), &error));
    close(p[1]);
    /* The kernel drops what did not fit; what the device got it closes, and it disconnects. */
    g_assert_true(vfs_fe_wait_closed(t.fe, VFS_TEST_TIMEOUT_MS));
    g_assert_true(pipe_closed_by_peer(p[0]));
    close(p[0]);
    vfs_test_down(&t);
}

static void test_mem_table(void)
{
    VfsTest t;
    int memfd;
    gsize size;

    vfs_test_up(&t, 0, NULL);
    negotiate(&t);
    memfd = vfs_fe_memfd(t.fe);
    size = vfs_fe_mem_size(t.fe);

    VhostUserMemTable mt = { .nregions = 1 };
    mt.regions[0] = (VhostUserMemRegion){ 0x1000000, size, 0x7f0000000000, 0 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 40, &memfd, 1), ==, 0);
    /* Past the end of the file. */
    mt.regions[0].mmap_offset = 4096;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 40, &memfd, 1), !=, 0);
    /* Overflowing guest and user addresses. */
    mt.regions[0] = (VhostUserMemRegion){ G_MAXUINT64 - 4095, 8192, 0x7f0000000000, 0 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 40, &memfd, 1), !=, 0);
    mt.regions[0] = (VhostUserMemRegion){ 0, 8192, G_MAXUINT64 - 100, 0 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 40, &memfd, 1), !=, 0);
    mt.regions[0] = (VhostUserMemRegion){ 0, 0, 0x1000, 0 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 40, &memfd, 1), !=, 0);
    /* Overlapping regions in one table. */
    mt.nregions = 2;
    mt.regions[0] = (VhostUserMemRegion){ 0x1000000, 0x100000, 0x7f0000000000, 0 };
    mt.regions[1] = (VhostUserMemRegion){ 0x10ff000, 0x100000, 0x7f1000000000, 0 };
    int fds[2] = { memfd, memfd };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 72, fds, 2), !=, 0);
    g_assert_true(vfs_test_log_contains("overlaps"));

    /* ADD_MEM_REG / REM_MEM_REG. */
    VhostUserMemRegionMsg r = { .region = { 0x90000000, 0x100000, 0x7f2000000000, 0 } };
    g_assert_cmpuint(call(&t, VHOST_USER_ADD_MEM_REG, &r, sizeof(r), &memfd, 1), ==, 0);
    g_assert_cmpuint(call(&t, VHOST_USER_ADD_MEM_REG, &r, sizeof(r), &memfd, 1), !=, 0);
    g_assert_cmpuint(call(&t, VHOST_USER_ADD_MEM_REG, &r, sizeof(r), NULL, 0), !=, 0);
    int p[2];
    g_assert_cmpint(pipe2(p, O_CLOEXEC | O_NONBLOCK), ==, 0);
    /* An fd on REM_MEM_REG is tolerated and closed unused, as the spec allows. */
    g_assert_cmpuint(call(&t, VHOST_USER_REM_MEM_REG, &r, sizeof(r), &p[1], 1), ==, 0);
    close(p[1]);
    g_assert_true(pipe_closed_by_peer(p[0]));
    close(p[0]);
    g_assert_cmpuint(call(&t, VHOST_USER_REM_MEM_REG, &r, sizeof(r), NULL, 0), !=, 0);
    assert_alive(&t);
    vfs_test_down(&t);
}

static void test_vring_config(void)
{
    VfsTest t;
    VhostUserVringState s;
    VhostUserVringAddr a = { 0 };

    vfs_test_up(&t, 0, NULL);
    negotiate(&t);
    s = (VhostUserVringState){ 0, 100 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_NUM, &s, 8, NULL, 0), !=, 0);
    s = (VhostUserVringState){ 0, 65536 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_NUM, &s, 8, NULL, 0), !=, 0);
    s = (VhostUserVringState){ 999, 128 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_NUM, &s, 8, NULL, 0), !=, 0);
    s = (VhostUserVringState){ 0, 128 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_NUM, &s, 8, NULL, 0), ==, 0);
    s = (VhostUserVringState){ 0, 70000 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_BASE, &s, 8, NULL, 0), !=, 0);
    s = (VhostUserVringState){ 0, 2 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_ENABLE, &s, 8, NULL, 0), !=, 0);
    /* Rings with no memory table, outside it, and misaligned. */
    a.desc = VFS_FE_UVA_BASE;
    a.avail = VFS_FE_UVA_BASE + 4096;
    a.used = VFS_FE_UVA_BASE + 8192;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), !=, 0);
    int memfd = vfs_fe_memfd(t.fe);
    VhostUserMemTable mt = { .nregions = 1 };
    mt.regions[0] = (VhostUserMemRegion){ VFS_FE_GPA_BASE, 65536, VFS_FE_UVA_BASE, 0 };
    g_assert_cmpuint(call(&t, VHOST_USER_SET_MEM_TABLE, &mt, 40, &memfd, 1), ==, 0);
    a.used = VFS_FE_UVA_BASE + 65536 - 8; /* the used ring would run past the region */
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), !=, 0);
    a.used = VFS_FE_UVA_BASE + 8192 + 2;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), !=, 0);
    a.used = VFS_FE_UVA_BASE + 8192;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_ADDR, &a, sizeof(a), NULL, 0), ==, 0);
    /* Polling instead of a kick fd is not supported. */
    guint64 nofd = VHOST_USER_VRING_NOFD_MASK;
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_KICK, &nofd, 8, NULL, 0), !=, 0);
    /* A call fd may be taken away (NOFD). */
    g_assert_cmpuint(call(&t, VHOST_USER_SET_VRING_CALL, &nofd, 8, NULL, 0), ==, 0);
    assert_alive(&t);
    vfs_test_down(&t);
}

static void test_fuse_init(gconstpointer data)
{
    const VfsFeSetup *setup = data;
    VfsTest t;
    struct fuse_init_in in = { .major = 7, .minor = 31 };
    guint8 reply[256];

    vfs_test_up(&t, 0, setup);
    guint32 len = vfs_test_fuse(&t, 1, FUSE_INIT, 0, &in, sizeof(in), reply, sizeof(reply), 0,
                                FALSE);
    struct fuse_out_header *oh = (void *)reply;
    struct fuse_init_out *io = (void *)(reply + sizeof(*oh));
    g_assert_cmpuint(len, ==, sizeof(*oh) + sizeof(*io));
    g_assert_cmpint(oh->error, ==, 0);
    g_assert_cmpuint(io->major, ==, 7);
    vfs_test_down(&t);
}

static void test_reset_owner(void)
{
    VfsFeSetup setup = { .nqueues = 3 };
    VfsTest t;
    struct fuse_init_in in = { .major = 7, .minor = 31 };
    guint8 reply[256];
    guint64 status = 1;
    g_autoptr(GError) error = NULL;

    vfs_test_up(&t, 0, &setup);
    g_assert_cmpuint(vfs_test_fuse(&t, 1, FUSE_INIT, 0, &in, sizeof(in), reply, sizeof(reply),
                                   0, FALSE), >, 0);
    /* Every queue is stopped and the state dropped; the front-end can start over. */
    g_assert_true(vfs_fe_call(t.fe, VHOST_USER_RESET_OWNER, NULL, 0, NULL, 0, &status, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(status, ==, 0);
    g_assert_true(vfs_fe_setup(t.fe, &setup, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(vfs_test_fuse(&t, 2, FUSE_INIT, 0, &in, sizeof(in), reply, sizeof(reply),
                                   0, TRUE), >, 0);
    vfs_test_down(&t);
}

static void test_socket_lock(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("vfs-lock-XXXXXX", NULL);
    g_autofree char *path = g_build_filename(dir, "s", NULL);
    g_autofree char *lock = g_strdup_printf("%s.lock", path);
    int lock1, lock2;

    int fd1 = vhost_user_listen(path, NULL, &lock1, &error);
    g_assert_no_error(error);
    int fd2 = vhost_user_listen(path, NULL, &lock2, &error);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_BUSY);
    g_assert_cmpint(fd2, ==, -1);
    g_clear_error(&error);
    /* Through the socket a front-end reaches a device. */
    VfsFe *fe = vfs_fe_connect(path, 1 << 20, &error);
    g_assert_no_error(error);
    vfs_fe_free(fe);
    vhost_user_unlisten(path, fd1, lock1);
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    g_assert_false(g_file_test(lock, G_FILE_TEST_EXISTS));
    /* A stale socket file without a lock holder is replaced. */
    g_file_set_contents(path, "", 0, NULL);
    fd1 = vhost_user_listen(path, NULL, &lock1, &error);
    g_assert_no_error(error);
    vhost_user_unlisten(path, fd1, lock1);
    /* --socket-group: the group gets the socket, mode 0660. */
    struct group *gr = getgrgid(getegid());
    g_assert_nonnull(gr);
    fd1 = vhost_user_listen(path, gr->gr_name, &lock1, &error);
    g_assert_no_error(error);
    struct stat st;
    g_assert_cmpint(stat(path, &st), ==, 0);
    g_assert_cmpuint(st.st_gid, ==, getegid());
    g_assert_cmpuint(st.st_mode & 0777, ==, 0660);
    vhost_user_unlisten(path, fd1, lock1);
    g_assert_cmpint(vhost_user_listen(path, "no-such-group-here", &lock1, &error), ==, -1);
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    static const VfsFeSetup plain = { 0 };
    static const VfsFeSetup two = { .two_regions = TRUE };
    static const VfsFeSetup add = { .add_mem_reg = TRUE, .two_regions = TRUE };
    static const VfsFeSetup legacy = { .features = BIT(VFS_VIRTIO_F_VERSION_1) };

    vfs_test_init(&argc, &argv);
    g_test_add_func("/virtiofs/vhost-user/features", test_features);
    g_test_add_func("/virtiofs/vhost-user/reply-ack", test_reply_ack);
    g_test_add_func("/virtiofs/vhost-user/unknown-request", test_unknown_request);
    g_test_add_func("/virtiofs/vhost-user/bad-sizes", test_bad_sizes);
    g_test_add_func("/virtiofs/vhost-user/bad-version", test_bad_version);
    g_test_add_func("/virtiofs/vhost-user/oversized-payload", test_oversized_payload);
    g_test_add_func("/virtiofs/vhost-user/truncated-message", test_truncated_message);
    g_test_add_func("/virtiofs/vhost-user/extra-fds-closed", test_extra_fds_closed);
    g_test_add_func("/virtiofs/vhost-user/too-many-fds", test_too_many_fds);
    g_test_add_func("/virtiofs/vhost-user/mem-table", test_mem_table);
    g_test_add_func("/virtiofs/vhost-user/vring-config", test_vring_config);
    g_test_add_data_func("/virtiofs/vhost-user/fuse-init", &plain, test_fuse_init);
    g_test_add_data_func("/virtiofs/vhost-user/fuse-init-two-regions", &two, test_fuse_init);
    g_test_add_data_func("/virtiofs/vhost-user/fuse-init-add-mem-reg", &add, test_fuse_init);
    g_test_add_data_func("/virtiofs/vhost-user/fuse-init-no-protocol-features", &legacy,
                         test_fuse_init);
    g_test_add_func("/virtiofs/vhost-user/reset-owner", test_reset_owner);
    g_test_add_func("/virtiofs/vhost-user/socket-lock", test_socket_lock);
    return g_test_run();
}
