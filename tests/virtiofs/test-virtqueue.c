/* Descriptor walking through the device: any split of headers, indirect tables, and hostile chains. */
#include <gio/gio.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "guest-mem.h"
#include "vfs-test.h"
#include "virtqueue.h"

#define BIT(n) (G_GUINT64_CONSTANT(1) << (n))
#define Q 1 /* the request queue the tests use; queue 2 must keep working */

/* ---- well-formed chains ---- */

static void check_echo(VfsTest *t, guint32 arg_len, guint32 split, gboolean indirect)
{
    g_autofree guint8 *arg = g_malloc(arg_len);
    guint32 reply_len = sizeof(struct fuse_out_header) + sizeof(struct fuse_in_header) + arg_len;
    g_autofree guint8 *reply = g_malloc(reply_len);

    for (guint i = 0; i < arg_len; i++) {
        arg[i] = i * 7 + split;
    }
    guint32 len = vfs_test_fuse(t, Q, FAKE_FS_OP_ECHO, 1, arg, arg_len, reply, reply_len, split,
                                indirect);
    g_assert_cmpuint(len, ==, reply_len);
    struct fuse_out_header oh;
    struct fuse_in_header ih;
    memcpy(&oh, reply, sizeof(oh));
    memcpy(&ih, reply + sizeof(oh), sizeof(ih));
    g_assert_cmpint(oh.error, ==, 0);
    g_assert_cmpuint(ih.opcode, ==, FAKE_FS_OP_ECHO);
    g_assert_cmpuint(ih.len, ==, sizeof(ih) + arg_len);
    g_assert_cmpmem(reply + sizeof(oh) + sizeof(ih), arg_len, arg, arg_len);
}

static void test_split_every_byte(gconstpointer data)
{
    gboolean indirect = GPOINTER_TO_INT(data);
    VfsFeSetup setup = { .nqueues = 3, .qsize = 1024 };
    VfsTest t;

    vfs_test_up(&t, 0, &setup);
    /* Every cut from 1 byte per descriptor up to past the whole header. */
    for (guint32 split = 1; split <= 48; split++) {
        check_echo(&t, 60, split, indirect);
    }
    g_assert_false(vfs_device_queue_broken(t.dev, Q));
    vfs_test_down(&t);
}

static void test_direct_then_indirect(void)
{
    VfsFeSetup setup = { .nqueues = 3 };
    VfsTest t;
    guint8 req[64];
    VfsFeUsed used;

    vfs_test_up(&t, 0, &setup);
    gsize len = vfs_fe_fuse_build(req, FAKE_FS_OP_ECHO, 1, 7, "abcdefgh", 8, NULL, 0);
    guint64 req_gpa = vfs_fe_alloc(t.fe, len, 8);
    guint64 reply_gpa = vfs_fe_alloc(t.fe, 128, 8);
    guint64 table = vfs_fe_alloc(t.fe, 32, 16);
    memcpy(vfs_fe_host(t.fe, req_gpa), req, len);
    struct vring_desc *d = vfs_fe_desc(t.fe, Q);
    struct vring_desc *it = vfs_fe_host(t.fe, table);
    /* Two direct descriptors with the first 10 request bytes, then a table with the rest. */
    d[0] = (struct vring_desc){ req_gpa, 3, VRING_DESC_F_NEXT, 1 };
    d[1] = (struct vring_desc){ req_gpa + 3, 7, VRING_DESC_F_NEXT, 2 };
    d[2] = (struct vring_desc){ table, 32, VRING_DESC_F_INDIRECT, 0 };
    it[0] = (struct vring_desc){ req_gpa + 10, len - 10, VRING_DESC_F_NEXT, 1 };
    it[1] = (struct vring_desc){ reply_gpa, 128, VRING_DESC_F_WRITE, 0 };
    vfs_fe_publish(t.fe, Q, 0);
    vfs_fe_kick(t.fe, Q);
    g_assert_true(vfs_fe_wait_used(t.fe, Q, &used, VFS_TEST_TIMEOUT_MS));
    g_assert_cmpuint(used.id, ==, 0);
    g_assert_cmpuint(used.len, ==, sizeof(struct fuse_out_header) + len);
    g_assert_cmpmem((guint8 *)vfs_fe_host(t.fe, reply_gpa) + 16, len, req, len);
    vfs_test_down(&t);
}

static void test_span_regions(void)
{
    VfsFeSetup setup = { .nqueues = 3, .two_regions = TRUE };
    VfsTest t;
    guint8 req[256], reply[512];
    VfsFeUsed used;

    vfs_test_up(&t, 0, &setup);
    gsize len = vfs_fe_fuse_build(req, FAKE_FS_OP_ECHO, 1, 9, NULL, 0,
                                  "0123456789abcdefghijklmnopqrstuvwxyz", 36);
    /* The request and the reply buffer both straddle the boundary between the two regions. */
    guint64 mid = VFS_FE_GPA_BASE + vfs_fe_mem_size(t.fe) / 2;
    guint64 req_gpa = mid - 20;
    guint64 reply_gpa = mid + 4096 - 30;
    memcpy(vfs_fe_host(t.fe, req_gpa), req, len);
    VfsFeBuf bufs[] = { { req_gpa, len, FALSE }, { reply_gpa, sizeof(reply), TRUE } };
    int head = vfs_fe_submit(t.fe, Q, bufs, 2, FALSE);
    vfs_fe_kick(t.fe, Q);
    g_assert_true(vfs_fe_wait_used(t.fe, Q, &used, VFS_TEST_TIMEOUT_MS));
    g_assert_cmpuint(used.id, ==, head);
    g_assert_cmpuint(used.len, ==, 16 + len);
    memcpy(reply, vfs_fe_host(t.fe, reply_gpa), sizeof(reply));
    g_assert_cmpmem(reply + 16, len, req, len);
    vfs_test_down(&t);
}

static void test_zero_length_descriptors(void)
{
    VfsFeSetup setup = { .nqueues = 3 };
    VfsTest t;
    guint8 req[64];
    VfsFeUsed used;

    vfs_test_up(&t, 0, &setup);
    gsize len = vfs_fe_fuse_build(req, FAKE_FS_OP_ECHO, 1, 7, "xyz", 3, NULL, 0);
    guint64 req_gpa = vfs_fe_alloc(t.fe, len, 8);
    guint64 reply_gpa = vfs_fe_alloc(t.fe, 128, 8);
    memcpy(vfs_fe_host(t.fe, req_gpa), req, len);
    VfsFeBuf bufs[] = { { req_gpa, 0, FALSE }, { req_gpa, 5, FALSE }, { req_gpa + 5, 0, FALSE },
                        { req_gpa + 5, len - 5, FALSE }, { reply_gpa, 0, TRUE },
                        { reply_gpa, 128, TRUE } };
    int head = vfs_fe_submit(t.fe, Q, bufs, G_N_ELEMENTS(bufs), FALSE);
    vfs_fe_kick(t.fe, Q);
    g_assert_true(vfs_fe_wait_used(t.fe, Q, &used, VFS_TEST_TIMEOUT_MS));
    g_assert_cmpuint(used.id, ==, head);
    g_assert_cmpuint(used.len, ==, 16 + len);
    vfs_test_down(&t);
}

/* EVENT_IDX: the device interrupts when the used index passes used_event, not for each entry. */
static void test_event_idx(void)
{
    VfsFeSetup setup = { .nqueues = 3 };
    VfsTest t;
    guint8 reply[256];
    struct fuse_init_in in = { 7, 31 };

    vfs_test_up(&t, 0, &setup);
    g_assert_cmphex(vfs_fe_features(t.fe) & BIT(VIRTIO_RING_F_EVENT_IDX), !=, 0);
    for (guint i = 0; i < 20; i++) {
        g_assert_cmpuint(vfs_test_fuse(&t, Q, FUSE_INIT, 0, &in, sizeof(in), reply,
                                       sizeof(reply), 0, FALSE), >, 0);
    }
    vfs_test_down(&t);
}

/* Direct checks of guest address translation at the edges of a region and of the address space. */
static void test_guest_mem_bounds(void)
{
    g_autoptr(GError) error = NULL;
    int fd = memfd_create("vfs-test-mem", MFD_CLOEXEC);
    g_assert_cmpint(ftruncate(fd, 1 << 20), ==, 0);
    /* A region that ends 64 KiB below 2^64. */
    guint64 top = G_MAXUINT64 - 0xffff;
    VfsMemRegionDesc d = { top - 0x80000 + 1, 0x80000, 0x10000000, 0x1000 };
    g_autoptr(VfsGuestMem) mem = vfs_guest_mem_add(NULL, &d, fd, &error);
    g_assert_no_error(error);
    guint64 contig;
    guint8 *base = vfs_guest_mem_gpa(mem, d.gpa, 16, &contig);
    g_assert_nonnull(base);
    g_assert_cmpuint(contig, ==, 16);
    /* The last byte, with a length that would wrap around the address space. */
    guint8 *last = vfs_guest_mem_gpa(mem, d.gpa + d.size - 1, G_MAXUINT64, &contig);
    g_assert_true(last == base + d.size - 1);
    g_assert_cmpuint(contig, ==, 1);
    g_assert_null(vfs_guest_mem_gpa(mem, d.gpa + d.size, 1, &contig));
    g_assert_cmpuint(contig, ==, 0);
    g_assert_null(vfs_guest_mem_gpa(mem, d.gpa - 1, 1, &contig));
    g_assert_null(vfs_guest_mem_gpa(mem, G_MAXUINT64, 1, &contig));
    /* User addresses: whole ranges only, no wrap. */
    g_assert_nonnull(vfs_guest_mem_uva(mem, d.uva, d.size));
    g_assert_null(vfs_guest_mem_uva(mem, d.uva, d.size + 1));
    g_assert_null(vfs_guest_mem_uva(mem, d.uva + 8, G_MAXUINT64 - 4));
    g_assert_null(vfs_guest_mem_uva(mem, d.uva - 1, 2));
    /* A region reaching 2^64 exactly, or past the file, is refused. */
    VfsMemRegionDesc wrap = { G_MAXUINT64 - 0xfff, 0x1000, 0x20000000, 0 };
    g_assert_null(vfs_guest_mem_add(mem, &wrap, fd, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    VfsMemRegionDesc big = { 0, 2 << 20, 0x30000000, 0 };
    g_assert_null(vfs_guest_mem_add(mem, &big, fd, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    /* Removing needs the exact region. */
    VfsMemRegionDesc other = d;
    other.size /= 2;
    g_assert_null(vfs_guest_mem_remove(mem, &other, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
    g_clear_error(&error);
    g_autoptr(VfsGuestMem) empty = vfs_guest_mem_remove(mem, &d, &error);
    g_assert_no_error(error);
    g_assert_null(vfs_guest_mem_gpa(empty, d.gpa, 1, &contig));
    /* The first table still maps the region: requests in flight keep their buffers. */
    g_assert_nonnull(vfs_guest_mem_gpa(mem, d.gpa, 1, &contig));
    close(fd);
}

/* ---- hostile chains ---- */

typedef struct {
    const char *path;
    /* Writes a chain into queue Q's table (or the avail ring) and returns the head published,
     * -1 when it published something that is not a valid head. */
    int (*build)(VfsFe *fe);
    const char *log;
    guint qsize;
    guint64 features;
    gboolean two_regions;
} Hostile;

static guint64 buf(VfsFe *fe)
{
    return vfs_fe_alloc(fe, 4096, 64);
}

static int publish(VfsFe *fe, guint16 head)
{
    vfs_fe_publish(fe, Q, head);
    return head;
}

static int build_loop(VfsFe *fe)
{
    struct vring_desc *d = vfs_fe_desc(fe, Q);
    guint64 b = buf(fe);
    d[0] = (struct vring_desc){ b, 16, VRING_DESC_F_NEXT, 1 };
    d[1] = (struct vring_desc){ b, 16, VRING_DESC_F_NEXT, 2 };
    d[2] = (struct vring_desc){ b, 16, VRING_DESC_F_NEXT, 0 };
    return publish(fe, 0);
}

static int build_self_loop(VfsFe *fe)
{
    struct vring_desc *d = vfs_fe_desc(fe, Q);
    d[5] = (struct vring_desc){ buf(fe), 16, VRING_DESC_F_NEXT, 5 };
    return publish(fe, 5);
}

static guint64 table(VfsFe *fe, guint n)
{
    return vfs_fe_alloc(fe, 16 * n, 16);
}

static int build_indirect_loop(VfsFe *fe)
{
    guint64 tg = table(fe, 4);
    struct vring_desc *tb = vfs_fe_host(fe, tg);
    guint64 b = buf(fe);
    tb[0] = (struct vring_desc){ b, 16, VRING_DESC_F_NEXT, 1 };
    tb[1] = (struct vring_desc){ b, 16, VRING_DESC_F_NEXT, 0 };
    vfs_fe_desc(fe, Q)[0] = (struct vring_desc){ tg, 64, VRING_DESC_F_INDIRECT, 0 };
    return publish(fe, 0);
}

static int one(VfsFe *fe, guint64 addr, guint32 len)
{
    vfs_fe_desc(fe, Q)[3] = (struct vring_desc){ addr, len, 0, 0 };
    return publish(fe, 3);
}

static int build_outside(VfsFe *fe)
{
    return one(fe, VFS_FE_GPA_BASE + vfs_fe_mem_size(fe), 16);
}

static int build_below(VfsFe *fe)
{
    return one(fe, 0x1000, 16);
}

static int build_overflow(VfsFe *fe)
{
    return one(fe, G_MAXUINT64 - 8, 64);
}

static int build_past_end(VfsFe *fe)
{
    return one(fe, VFS_FE_GPA_BASE + vfs_fe_mem_size(fe) - 8, 64);
}

static int build_too_long(VfsFe *fe)
{
    struct vring_desc *d = vfs_fe_desc(fe, Q);
    guint64 b = buf(fe);
    for (guint i = 0; i < 1100; i++) {
        d[i] = (struct vring_desc){ b + i % 64, 1, VRING_DESC_F_NEXT, i + 1 };
    }
    d[1099].flags = 0;
    return publish(fe, 0);
}

static int build_too_many_buffers(VfsFe *fe)
{
    /* Every descriptor straddles the two regions: 600 descriptors, 1200 buffers. */
    guint64 mid = VFS_FE_GPA_BASE + vfs_fe_mem_size(fe) / 2;
    guint64 tg = table(fe, 600);
    struct vring_desc *tb = vfs_fe_host(fe, tg);
    for (guint i = 0; i < 600; i++) {
        tb[i] = (struct vring_desc){ mid - 8, 16, i < 599 ? VRING_DESC_F_NEXT : 0, i + 1 };
    }
    vfs_fe_desc(fe, Q)[0] = (struct vring_desc){ tg, 600 * 16, VRING_DESC_F_INDIRECT, 0 };
    return publish(fe, 0);
}

static int indirect_desc(VfsFe *fe, guint64 addr, guint32 len, guint16 flags)
{
    vfs_fe_desc(fe, Q)[0] = (struct vring_desc){ addr, len, flags, 1 };
    vfs_fe_desc(fe, Q)[1] = (struct vring_desc){ buf(fe), 16, 0, 0 };
    return publish(fe, 0);
}

static int build_indirect_too_big(VfsFe *fe)
{
    return indirect_desc(fe, table(fe, 1025), 1025 * 16, VRING_DESC_F_INDIRECT);
}

static int build_indirect_bad_len(VfsFe *fe)
{
    return indirect_desc(fe, table(fe, 2), 24, VRING_DESC_F_INDIRECT);
}

static int build_indirect_empty(VfsFe *fe)
{
    return indirect_desc(fe, table(fe, 1), 0, VRING_DESC_F_INDIRECT);
}

static int build_indirect_with_next(VfsFe *fe)
{
    return indirect_desc(fe, table(fe, 2), 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT);
}

static int build_indirect_outside(VfsFe *fe)
{
    return indirect_desc(fe, VFS_FE_GPA_BASE + vfs_fe_mem_size(fe) - 16, 32,
                         VRING_DESC_F_INDIRECT);
}

static int build_nested_indirect(VfsFe *fe)
{
    guint64 tg = table(fe, 2);
    struct vring_desc *tb = vfs_fe_host(fe, tg);
    tb[0] = (struct vring_desc){ buf(fe), 16, VRING_DESC_F_NEXT, 1 };
    tb[1] = (struct vring_desc){ tg, 32, VRING_DESC_F_INDIRECT, 0 };
    return indirect_desc(fe, tg, 32, VRING_DESC_F_INDIRECT);
}

static int build_next_out_of_range(VfsFe *fe)
{
    vfs_fe_desc(fe, Q)[0] = (struct vring_desc){ buf(fe), 16, VRING_DESC_F_NEXT, 5000 };
    return publish(fe, 0);
}

static int build_head_out_of_range(VfsFe *fe)
{
    publish(fe, 500);
    return -1;
}

static int build_avail_jump(VfsFe *fe)
{
    vfs_fe_set_avail_idx(fe, Q, 200);
    return -1;
}

static int build_readable_after_writable(VfsFe *fe)
{
    struct vring_desc *d = vfs_fe_desc(fe, Q);
    guint64 b = buf(fe);
    d[0] = (struct vring_desc){ b, 40, 0, 0 };
    d[0].flags = VRING_DESC_F_NEXT;
    d[0].next = 1;
    d[1] = (struct vring_desc){ b + 64, 64, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2 };
    d[2] = (struct vring_desc){ b + 128, 16, 0, 0 };
    return publish(fe, 0);
}

static int build_indirect_unnegotiated(VfsFe *fe)
{
    guint64 tg = table(fe, 1);
    struct vring_desc *tb = vfs_fe_host(fe, tg);
    tb[0] = (struct vring_desc){ buf(fe), 16, 0, 0 };
    return indirect_desc(fe, tg, 16, VRING_DESC_F_INDIRECT);
}

static void test_hostile(gconstpointer data)
{
    const Hostile *h = data;
    VfsFeSetup setup = { .nqueues = 3, .qsize = h->qsize, .features = h->features,
                         .two_regions = h->two_regions };
    VfsTest t;
    VfsFeUsed used;
    guint8 reply[256];
    struct fuse_init_in in = { 7, 31 };

    vfs_test_log_clear();
    vfs_test_up(&t, 0, &setup);
    /* The queue's error fd hears of it too. */
    int err_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    guint64 idx = Q, status = 1;
    g_autoptr(GError) error = NULL;
    g_assert_true(vfs_fe_call(t.fe, VHOST_USER_SET_VRING_ERR, &idx, 8, &err_fd, 1, &status,
                              &error));
    g_assert_cmpuint(status, ==, 0);
    int head = h->build(t.fe);
    vfs_fe_kick(t.fe, Q);
    if (head >= 0) {
        /* The malformed chain still comes back, once, with nothing written. */
        g_assert_true(vfs_fe_wait_used(t.fe, Q, &used, VFS_TEST_TIMEOUT_MS));
        g_assert_cmpuint(used.id, ==, head);
        g_assert_cmpuint(used.len, ==, 0);
    } else {
        for (guint i = 0; i < 500 && !vfs_device_queue_broken(t.dev, Q); i++) {
            g_usleep(2000);
        }
    }
    g_assert_true(vfs_device_queue_broken(t.dev, Q));
    /* Signalled after the log line: once it fires, the report is complete. */
    struct pollfd pfd = { .fd = err_fd, .events = POLLIN };
    g_assert_cmpint(poll(&pfd, 1, VFS_TEST_TIMEOUT_MS), ==, 1);
    eventfd_t v = 0;
    g_assert_cmpint(eventfd_read(err_fd, &v), ==, 0);
    g_assert_cmpuint(v, ==, 1);
    close(err_fd);
    g_assert_true(vfs_test_log_contains(h->log));
    g_assert_true(vfs_test_log_contains("virtqueue 1 is broken"));
    g_assert_cmpuint(vfs_fe_used_pending(t.fe, Q), ==, 0);
    /* The other queue and the control socket carry on. */
    g_assert_cmpuint(vfs_test_fuse(&t, 2, FUSE_INIT, 0, &in, sizeof(in), reply, sizeof(reply),
                                   0, FALSE), >, 0);
    g_assert_false(vfs_device_queue_broken(t.dev, 2));
    /* A broken queue still stops cleanly. */
    guint base;
    g_assert_true(vfs_fe_queue_stop(t.fe, Q, &base, &error));
    g_assert_no_error(error);
    vfs_test_down(&t);
}

int main(int argc, char **argv)
{
    static const Hostile cases[] = {
        { "/virtiofs/vq/descriptor-loop", build_loop, "descriptor loop" },
        { "/virtiofs/vq/descriptor-self-loop", build_self_loop, "descriptor loop" },
        { "/virtiofs/vq/indirect-loop", build_indirect_loop, "descriptor loop" },
        { "/virtiofs/vq/address-outside-memory", build_outside, "outside guest memory" },
        { "/virtiofs/vq/address-below-memory", build_below, "outside guest memory" },
        { "/virtiofs/vq/address-overflow", build_overflow, "outside guest memory" },
        { "/virtiofs/vq/length-past-end-of-memory", build_past_end, "outside guest memory" },
        { "/virtiofs/vq/too-long-chain", build_too_long, "longer than 1024", 2048 },
        { "/virtiofs/vq/too-many-buffers", build_too_many_buffers, "more than 1024 buffers", 0,
          0, TRUE },
        { "/virtiofs/vq/indirect-too-big", build_indirect_too_big, "indirect table of" },
        { "/virtiofs/vq/indirect-bad-length", build_indirect_bad_len, "indirect table of 24" },
        { "/virtiofs/vq/indirect-empty", build_indirect_empty, "indirect table of 0" },
        { "/virtiofs/vq/indirect-with-next", build_indirect_with_next, "also has NEXT" },
        { "/virtiofs/vq/indirect-outside-memory", build_indirect_outside,
          "not inside one guest memory region" },
        { "/virtiofs/vq/nested-indirect", build_nested_indirect, "nested indirect" },
        { "/virtiofs/vq/next-out-of-range", build_next_out_of_range, "out of range" },
        { "/virtiofs/vq/head-out-of-range", build_head_out_of_range, "past the queue size" },
        { "/virtiofs/vq/avail-index-jump", build_avail_jump, "more than the queue size" },
        { "/virtiofs/vq/readable-after-writable", build_readable_after_writable,
          "readable descriptor follows a writable" },
        { "/virtiofs/vq/indirect-not-negotiated", build_indirect_unnegotiated,
          "without INDIRECT_DESC", 0,
          BIT(VFS_VIRTIO_F_VERSION_1) | BIT(VHOST_USER_F_PROTOCOL_FEATURES) },
    };

    vfs_test_init(&argc, &argv);
    g_test_add_data_func("/virtiofs/vq/split-at-every-byte", GINT_TO_POINTER(FALSE),
                         test_split_every_byte);
    g_test_add_data_func("/virtiofs/vq/split-at-every-byte-indirect", GINT_TO_POINTER(TRUE),
                         test_split_every_byte);
    g_test_add_func("/virtiofs/guest-mem/bounds", test_guest_mem_bounds);
    g_test_add_func("/virtiofs/vq/direct-then-indirect", test_direct_then_indirect);
    g_test_add_func("/virtiofs/vq/buffers-span-two-regions", test_span_regions);
    g_test_add_func("/virtiofs/vq/zero-length-descriptors", test_zero_length_descriptors);
    g_test_add_func("/virtiofs/vq/event-idx", test_event_idx);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_test_add_data_func(cases[i].path, &cases[i], test_hostile);
    }
    return g_test_run();
}
