/* libFuzzer target: vhost-user messages (with fds) into the device, then kicks on what it set up. */
#include "../../plugins/virtiofs/device.h"
#include "../../plugins/virtiofs/vhost-user.h"

#include <glib.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define GUEST_MEM (256 * 1024)

/*
 * Input: records of [fd byte][12-byte header][payload of up to header.size bytes]. The fd byte's
 * low 3 bits are how many fds go with the message (a shared memfd, or eventfds when bit 3 is
 * set). Guest memory is the input itself repeated, so that rings and descriptors the messages
 * point at hold fuzzer-chosen bytes.
 */

static GLogWriterOutput quiet(GLogLevelFlags level, const GLogField *f, gsize n, gpointer u)
{
    return G_LOG_WRITER_HANDLED;
}

static size_t echo(gpointer data, const struct iovec *out, unsigned out_n,
                   const struct iovec *in, unsigned in_n)
{
    guint8 hdr[40] = { 0 };
    size_t got = 0;
    for (unsigned i = 0; i < out_n && got < sizeof(hdr); i++) {
        size_t l = MIN(out[i].iov_len, sizeof(hdr) - got);
        memcpy(hdr + got, out[i].iov_base, l);
        got += l;
    }
    size_t put = 0;
    for (unsigned i = 0; i < in_n && put < 16; i++) {
        size_t l = MIN(in[i].iov_len, 16 - put);
        memcpy(in[i].iov_base, hdr + put, l);
        put += l;
    }
    return put;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Made once and reused: each input is a new connection, as a restarted QEMU would make. */
static VfsDevice *devices[2];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    g_log_set_writer_func(quiet, NULL, NULL);
    for (guint i = 0; i < G_N_ELEMENTS(devices); i++) {
        /* Inline handling, and a pool of two threads. */
        VfsDeviceOptions opts = { .handle = echo, .queues = 4, .thread_pool_size = i * 2 };
        devices[i] = vfs_device_new(&opts, NULL);
        if (!devices[i]) {
            abort();
        }
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2], memfd, kicks[64];
    guint nkicks = 0;
    guint8 *mem;

    if (size == 0) {
        return 0;
    }
    /* The first byte's low bit picks the device. */
    VfsDevice *dev = devices[data[0] & 1];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        return 0;
    }
    memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
    if (memfd < 0 || ftruncate(memfd, GUEST_MEM) < 0) {
        abort();
    }
    mem = mmap(NULL, GUEST_MEM, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
    for (size_t off = 0; off < GUEST_MEM; off += size) {
        memcpy(mem + off, data, MIN(size, GUEST_MEM - off));
    }
    if (!vfs_device_start(dev, sv[0], NULL)) {
        abort();
    }
    /* Replies are not read: at most a few per record, far below the socket buffer. */
    size_t pos = 0;
    while (pos + 1 + sizeof(VhostUserHeader) <= size) {
        guint8 fdspec = data[pos++];
        VhostUserHeader h;
        memcpy(&h, data + pos, sizeof(h));
        pos += sizeof(h);
        size_t plen = MIN((size_t)h.size, size - pos);
        int fds[8];
        guint nfds = fdspec & 7;
        for (guint i = 0; i < nfds; i++) {
            if (fdspec & 8) {
                fds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (nkicks < G_N_ELEMENTS(kicks)) {
                    kicks[nkicks++] = dup(fds[i]);
                }
            } else {
                fds[i] = memfd;
            }
        }
        union {
            struct cmsghdr align;
            char buf[CMSG_SPACE(sizeof(int) * 8)];
        } control;
        struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)(data + pos), plen } };
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
        if (nfds) {
            memset(&control, 0, sizeof(control));
            mh.msg_control = control.buf;
            mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        ssize_t sent = sendmsg(sv[1], &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        for (guint i = 0; i < nfds; i++) {
            if (fds[i] != memfd) {
                close(fds[i]);
            }
        }
        pos += plen;
        if (sent < 0) {
            break;
        }
    }
    /* Kick every eventfd the device may use as a kick fd, let the queues run a moment. */
    for (guint i = 0; i < nkicks; i++) {
        eventfd_write(kicks[i], 1);
    }
    if (nkicks) {
        g_usleep(200);
    }
    close(sv[1]);
    vfs_device_wait(dev, NULL);
    for (guint i = 0; i < nkicks; i++) {
        close(kicks[i]);
    }
    munmap(mem, GUEST_MEM);
    close(memfd);
    return 0;
}
