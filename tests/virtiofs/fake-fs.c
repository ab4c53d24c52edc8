/* The fake filesystem behind device tests: copies headers out of any iovec layout, as the real one must. */
#include "fake-fs.h"

#include <linux/fuse.h>
#include <string.h>
#include <sys/prctl.h>

#define FAKE_MAX_REQUEST (64 * 1024)

static gsize gather(const struct iovec *iov, unsigned n, guint8 *buf, gsize max)
{
    gsize done = 0;
    for (unsigned i = 0; i < n && done < max; i++) {
        gsize l = MIN(iov[i].iov_len, max - done);
        memcpy(buf + done, iov[i].iov_base, l);
        done += l;
    }
    return done;
}

static gsize scatter(const struct iovec *iov, unsigned n, const guint8 *buf, gsize len)
{
    gsize done = 0;
    for (unsigned i = 0; i < n && done < len; i++) {
        gsize l = MIN(iov[i].iov_len, len - done);
        memcpy(iov[i].iov_base, buf + done, l);
        done += l;
    }
    return done;
}

static gsize iov_total(const struct iovec *iov, unsigned n)
{
    gsize t = 0;
    for (unsigned i = 0; i < n; i++) {
        t += iov[i].iov_len;
    }
    return t;
}

size_t fake_fs_handle(gpointer data, const struct iovec *out, unsigned out_n,
                      const struct iovec *in, unsigned in_n)
{
    FakeFs *fs = data;
    g_autofree guint8 *req = g_malloc(FAKE_MAX_REQUEST);
    g_autofree guint8 *reply = g_malloc0(FAKE_MAX_REQUEST + sizeof(struct fuse_out_header));
    struct fuse_in_header ih;
    struct fuse_out_header *oh = (struct fuse_out_header *)reply;
    gsize len = gather(out, out_n, req, FAKE_MAX_REQUEST);
    gsize rlen = sizeof(*oh);

    char thread_name[16] = "";

    g_atomic_int_inc(&fs->calls);
    /* The device names its threads: which one handles a request is part of its contract. */
    if (prctl(PR_GET_NAME, thread_name) == 0 && g_str_has_prefix(thread_name, "vfs-queue-")) {
        g_atomic_int_inc(&fs->queue_thread_calls);
    }
    if (fs->delay_us) {
        g_usleep(fs->delay_us);
    }
    if (len < sizeof(ih) || iov_total(in, in_n) < sizeof(*oh)) {
        return 0;
    }
    memcpy(&ih, req, sizeof(ih));
    oh->unique = ih.unique;
    switch (ih.opcode) {
    case FUSE_INIT: {
        struct fuse_init_out init = { .major = FUSE_KERNEL_VERSION, .minor = 31,
                                      .max_write = 1 << 20 };
        memcpy(reply + rlen, &init, sizeof(init));
        rlen += sizeof(init);
        break;
    }
    case FUSE_GETATTR: {
        struct fuse_attr_out a = { .attr = { .ino = ih.nodeid, .mode = 040755, .nlink = 2 } };
        memcpy(reply + rlen, &a, sizeof(a));
        rlen += sizeof(a);
        break;
    }
    case FUSE_FORGET:
        return 0;
    case FAKE_FS_OP_ECHO:
        memcpy(reply + rlen, req, len);
        rlen += len;
        break;
    default:
        oh->error = -38; /* ENOSYS */
        break;
    }
    oh->len = rlen;
    return scatter(in, in_n, reply, rlen);
}
