/* The test front-end: memfd guest memory, vrings laid out here, kick/call eventfds, raw messages. */
#include "frontend.h"

#include <errno.h>
#include <gio/gio.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FE_TIMEOUT_MS 10000
#define FE_FEATURES \
    ((G_GUINT64_CONSTANT(1) << VFS_VIRTIO_F_VERSION_1) | \
     (G_GUINT64_CONSTANT(1) << VHOST_USER_F_PROTOCOL_FEATURES) | \
     (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_INDIRECT_DESC) | \
     (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_EVENT_IDX))
#define FE_PROTOCOL_FEATURES \
    ((G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_MQ) | \
     (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_REPLY_ACK) | \
     (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

typedef struct {
    guint64 ring_gpa;
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    int kick;
    int call;
    gboolean started;
    guint16 base;
    guint16 avail_idx;  /* the next avail entry we publish */
    guint16 kicked_idx; /* avail_idx when we last decided about a kick */
    guint16 last_used;  /* the next used entry we take */
    guint16 *free;      /* stack of free descriptor indices */
    guint nfree;
    GArray **chains;    /* per head: the descriptors that vfs_fe_submit gave it */
    VfsFeCounters count;
} FeQueue;

struct VfsFe {
    int sock;
    int memfd;
    guint8 *mem;
    gsize mem_size;
    gsize alloc_start;
    gsize alloc_next;
    guint64 features;
    guint64 protocol_features;
    guint qsize;
    guint nqueues;
    FeQueue q[VFS_FE_MAX_QUEUES];
};

static guint64 gpa_of(VfsFe *fe, gsize off)
{
    return VFS_FE_GPA_BASE + off;
}

void *vfs_fe_host(VfsFe *fe, guint64 gpa)
{
    g_assert(gpa >= VFS_FE_GPA_BASE && gpa - VFS_FE_GPA_BASE < fe->mem_size);
    return fe->mem + (gpa - VFS_FE_GPA_BASE);
}

/* With two regions, the second half's user addresses are not contiguous with the first. */
static guint64 uva_of(VfsFe *fe, guint64 gpa)
{
    guint64 off = gpa - VFS_FE_GPA_BASE;
    return VFS_FE_UVA_BASE + off + (off >= fe->mem_size / 2 ? 0x100000000ull : 0);
}

VfsFe *vfs_fe_new(int sock, gsize mem_size, GError **error)
{
    g_autoptr(VfsFe) fe = g_new0(VfsFe, 1);

    fe->sock = sock;
    fe->mem_size = mem_size;
    for (guint i = 0; i < VFS_FE_MAX_QUEUES; i++) {
        fe->q[i].kick = fe->q[i].call = -1;
    }
    fe->memfd = memfd_create("vfs-fe-guest-ram", MFD_CLOEXEC);
    if (fe->memfd < 0 || ftruncate(fe->memfd, mem_size) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot create guest memory: %s", g_strerror(errno));
        return NULL;
    }
    fe->mem = mmap(NULL, mem_size, PROT_READ | PROT_WRITE, MAP_SHARED, fe->memfd, 0);
    if (fe->mem == MAP_FAILED) {
        fe->mem = NULL;
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot map guest memory: %s", g_strerror(errno));
        return NULL;
    }
    fe->alloc_start = fe->alloc_next = VFS_FE_MAX_QUEUES * VFS_FE_RING_AREA;
    return g_steal_pointer(&fe);
}

VfsFe *vfs_fe_connect(const char *path, gsize mem_size, GError **error)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(sun.sun_path, path, sizeof(sun.sun_path));
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot connect to '%s': %s", path, g_strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return NULL;
    }
    VfsFe *fe = vfs_fe_new(fd, mem_size, error);
    if (!fe) {
        close(fd);
    }
    return fe;
}

void vfs_fe_free(VfsFe *fe)
{
    if (!fe) {
        return;
    }
    for (guint i = 0; i < VFS_FE_MAX_QUEUES; i++) {
        FeQueue *q = &fe->q[i];
        if (q->kick >= 0) {
            close(q->kick);
        }
        if (q->call >= 0) {
            close(q->call);
        }
        for (guint h = 0; q->chains && h < fe->qsize; h++) {
            if (q->chains[h]) {
                g_array_free(q->chains[h], TRUE);
            }
        }
        g_free(q->chains);
        g_free(q->free);
    }
    if (fe->mem) {
        munmap(fe->mem, fe->mem_size);
    }
    if (fe->memfd >= 0) {
        close(fe->memfd);
    }
    if (fe->sock >= 0) {
        close(fe->sock);
    }
    g_free(fe);
}

int vfs_fe_socket(VfsFe *fe)
{
    return fe->sock;
}

guint64 vfs_fe_features(VfsFe *fe)
{
    return fe->features;
}

int vfs_fe_memfd(VfsFe *fe)
{
    return fe->memfd;
}

gsize vfs_fe_mem_size(VfsFe *fe)
{
    return fe->mem_size;
}

/* ---- messages ---- */

gboolean vfs_fe_send_bytes(VfsFe *fe, const void *bytes, gsize len, const int *fds, guint nfds,
                           GError **error)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct iovec iov = { .iov_base = (void *)bytes, .iov_len = len };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t n;

    g_assert(nfds <= 16);
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    do {
        n = sendmsg(fe->sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 || (gsize)n != len) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot send a message: %s",
                    n < 0 ? g_strerror(errno) : "short write");
        return FALSE;
    }
    return TRUE;
}

gboolean vfs_fe_send(VfsFe *fe, guint32 request, guint32 flags, const void *payload,
                     guint32 size, const int *fds, guint nfds, GError **error)
{
    g_autofree guint8 *buf = g_malloc(sizeof(VhostUserHeader) + size);
    VhostUserHeader hdr = { request, flags | VHOST_USER_VERSION, size };
    memcpy(buf, &hdr, sizeof(hdr));
    if (size) {
        memcpy(buf + sizeof(hdr), payload, size);
    }
    return vfs_fe_send_bytes(fe, buf, sizeof(hdr) + size, fds, nfds, error);
}

static gboolean read_timeout(int fd, void *buf, gsize len, GError **error)
{
    guint8 *p = buf;
    while (len > 0) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int rc = poll(&pfd, 1, FE_TIMEOUT_MS);
        if (rc == 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "no reply within %d ms",
                        FE_TIMEOUT_MS);
            return FALSE;
        }
        ssize_t n = rc < 0 ? -1 : read(fd, p, len);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                        "the backend closed the connection");
            return FALSE;
        }
        p += n;
        len -= n;
    }
    return TRUE;
}

gboolean vfs_fe_recv(VfsFe *fe, guint32 request, void *payload, guint32 size, GError **error)
{
    VhostUserHeader hdr;
    guint8 junk[VHOST_USER_MAX_PAYLOAD];

    if (!read_timeout(fe->sock, &hdr, sizeof(hdr), error)) {
        return FALSE;
    }
    if (hdr.size > sizeof(junk) || !read_timeout(fe->sock, junk, hdr.size, error)) {
        if (error && !*error) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "reply of %u bytes",
                        hdr.size);
        }
        return FALSE;
    }
    if (hdr.request != request || hdr.size != size ||
        hdr.flags != (VHOST_USER_VERSION | VHOST_USER_REPLY_MASK)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "unexpected reply: request %u flags 0x%x size %u (wanted %u size %u)",
                    hdr.request, hdr.flags, hdr.size, request, size);
        return FALSE;
    }
    memcpy(payload, junk, size);
    return TRUE;
}

gboolean vfs_fe_call(VfsFe *fe, guint32 request, const void *payload, guint32 size,
                     const int *fds, guint nfds, guint64 *status, GError **error)
{
    return vfs_fe_send(fe, request, VHOST_USER_NEED_REPLY_MASK, payload, size, fds, nfds,
                       error) &&
           vfs_fe_recv(fe, request, status, sizeof(*status), error);
}

gboolean vfs_fe_get_u64(VfsFe *fe, guint32 request, guint64 *value, GError **error)
{
    return vfs_fe_send(fe, request, 0, NULL, 0, NULL, 0, error) &&
           vfs_fe_recv(fe, request, value, sizeof(*value), error);
}

gboolean vfs_fe_wait_closed(VfsFe *fe, guint timeout_ms)
{
    gint64 end = g_get_monotonic_time() + timeout_ms * 1000ll;
    for (;;) {
        struct pollfd pfd = { .fd = fe->sock, .events = POLLIN };
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        if (left <= 0 || poll(&pfd, 1, left) <= 0) {
            return FALSE;
        }
        char c[256];
        ssize_t n = read(fe->sock, c, sizeof(c));
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
            return TRUE;
        }
    }
}

/* A message the backend must accept: acknowledged when REPLY_ACK is negotiated. */
static gboolean fe_msg(VfsFe *fe, guint32 request, const void *payload, guint32 size,
                       const int *fds, guint nfds, GError **error)
{
    guint64 status = 0;
    if (!(fe->protocol_features & (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_REPLY_ACK))) {
        return vfs_fe_send(fe, request, 0, payload, size, fds, nfds, error);
    }
    if (!vfs_fe_call(fe, request, payload, size, fds, nfds, &status, error)) {
        return FALSE;
    }
    if (status != 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "the backend refused %s",
                    vhost_user_request_name(request));
        return FALSE;
    }
    return TRUE;
}

/* ---- setup ---- */

static gboolean fe_share_memory(VfsFe *fe, gboolean two, gboolean add, GError **error)
{
    guint n = two ? 2 : 1;
    gsize part = fe->mem_size / n;
    VhostUserMemTable t = { .nregions = n };
    int fds[2] = { fe->memfd, fe->memfd };

    for (guint i = 0; i < n; i++) {
        guint64 gpa = gpa_of(fe, i * part);
        t.regions[i] = (VhostUserMemRegion){ gpa, part, uva_of(fe, gpa), i * part };
    }
    if (!add) {
        return fe_msg(fe, VHOST_USER_SET_MEM_TABLE, &t, 8 + n * sizeof(VhostUserMemRegion),
                      fds, n, error);
    }
    for (guint i = 0; i < n; i++) {
        VhostUserMemRegionMsg r = { .region = t.regions[i] };
        if (!fe_msg(fe, VHOST_USER_ADD_MEM_REG, &r, sizeof(r), fds, 1, error)) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean vfs_fe_setup(VfsFe *fe, const VfsFeSetup *s, GError **error)
{
    guint64 offered, v;

    fe->nqueues = s && s->nqueues ? s->nqueues : 2;
    fe->qsize = s && s->qsize ? s->qsize : 128;
    g_assert(fe->nqueues <= VFS_FE_MAX_QUEUES);
    g_assert(fe->qsize * 16 + 6 + 2 * fe->qsize + 6 + 8 * fe->qsize + 64 <= VFS_FE_RING_AREA);
    if (!vfs_fe_get_u64(fe, VHOST_USER_GET_FEATURES, &offered, error)) {
        return FALSE;
    }
    fe->features = (s && s->features ? s->features : FE_FEATURES) & offered;
    if (fe->features & (G_GUINT64_CONSTANT(1) << VHOST_USER_F_PROTOCOL_FEATURES)) {
        if (!vfs_fe_get_u64(fe, VHOST_USER_GET_PROTOCOL_FEATURES, &v, error)) {
            return FALSE;
        }
        guint64 pf = v & FE_PROTOCOL_FEATURES;
        if (s && s->add_mem_reg &&
            !(pf & (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED, "no CONFIGURE_MEM_SLOTS");
            return FALSE;
        }
        if (!vfs_fe_send(fe, VHOST_USER_SET_PROTOCOL_FEATURES, 0, &pf, 8, NULL, 0, error)) {
            return FALSE;
        }
        fe->protocol_features = pf;
        if (pf & (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_MQ)) {
            if (!vfs_fe_get_u64(fe, VHOST_USER_GET_QUEUE_NUM, &v, error)) {
                return FALSE;
            }
            if (v < fe->nqueues) {
                g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_SUPPORTED,
                            "the backend has %" G_GUINT64_FORMAT " queues, %u wanted", v,
                            fe->nqueues);
                return FALSE;
            }
        }
    }
    if (!fe_msg(fe, VHOST_USER_SET_OWNER, NULL, 0, NULL, 0, error) ||
        !fe_msg(fe, VHOST_USER_SET_FEATURES, &fe->features, 8, NULL, 0, error) ||
        !fe_share_memory(fe, s && s->two_regions, s && s->add_mem_reg, error)) {
        return FALSE;
    }
    for (guint i = 0; i < fe->nqueues; i++) {
        FeQueue *q = &fe->q[i];
        q->ring_gpa = gpa_of(fe, i * VFS_FE_RING_AREA);
        memset(vfs_fe_host(fe, q->ring_gpa), 0, VFS_FE_RING_AREA);
        q->desc = vfs_fe_host(fe, q->ring_gpa);
        q->avail = (void *)((guint8 *)q->desc + 16 * fe->qsize);
        q->used = (void *)((guint8 *)q->desc + ((16 * fe->qsize + 6 + 2 * fe->qsize + 63) & ~63));
        for (guint h = 0; q->chains && h < fe->qsize; h++) {
            if (q->chains[h]) {
                g_array_free(q->chains[h], TRUE);
            }
        }
        g_free(q->chains);
        g_free(q->free);
        q->free = g_new(guint16, fe->qsize);
        q->chains = g_new0(GArray *, fe->qsize);
        q->avail_idx = q->kicked_idx = q->last_used = q->base = 0;
        for (guint d = 0; d < fe->qsize; d++) {
            q->free[d] = fe->qsize - 1 - d;
        }
        q->nfree = fe->qsize;
        if (!vfs_fe_queue_start(fe, i, error)) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean vfs_fe_queue_start(VfsFe *fe, guint qi, GError **error)
{
    FeQueue *q = &fe->q[qi];
    VhostUserVringState num = { qi, fe->qsize }, base = { qi, q->base };
    guint64 desc = q->ring_gpa;
    guint64 avail = desc + ((guint8 *)q->avail - (guint8 *)q->desc);
    guint64 used = desc + ((guint8 *)q->used - (guint8 *)q->desc);
    VhostUserVringAddr addr = { qi, 0, uva_of(fe, desc), uva_of(fe, used), uva_of(fe, avail), 0 };
    guint64 idx = qi;

    if (q->kick >= 0) {
        close(q->kick);
    }
    if (q->call >= 0) {
        close(q->call);
    }
    q->kick = eventfd(0, EFD_CLOEXEC);
    q->call = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!fe_msg(fe, VHOST_USER_SET_VRING_NUM, &num, sizeof(num), NULL, 0, error) ||
        !fe_msg(fe, VHOST_USER_SET_VRING_BASE, &base, sizeof(base), NULL, 0, error) ||
        !fe_msg(fe, VHOST_USER_SET_VRING_ADDR, &addr, sizeof(addr), NULL, 0, error) ||
        !fe_msg(fe, VHOST_USER_SET_VRING_CALL, &idx, 8, &q->call, 1, error) ||
        !fe_msg(fe, VHOST_USER_SET_VRING_KICK, &idx, 8, &q->kick, 1, error)) {
        return FALSE;
    }
    if (fe->features & (G_GUINT64_CONSTANT(1) << VHOST_USER_F_PROTOCOL_FEATURES)) {
        VhostUserVringState en = { qi, 1 };
        if (!fe_msg(fe, VHOST_USER_SET_VRING_ENABLE, &en, sizeof(en), NULL, 0, error)) {
            return FALSE;
        }
    }
    q->started = TRUE;
    return TRUE;
}

gboolean vfs_fe_queue_stop(VfsFe *fe, guint qi, guint *base, GError **error)
{
    FeQueue *q = &fe->q[qi];
    VhostUserVringState s = { qi, 0 };

    if (!vfs_fe_send(fe, VHOST_USER_GET_VRING_BASE, 0, &s, sizeof(s), NULL, 0, error) ||
        !vfs_fe_recv(fe, VHOST_USER_GET_VRING_BASE, &s, sizeof(s), error)) {
        return FALSE;
    }
    if (s.index != qi) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "GET_VRING_BASE for %u", s.index);
        return FALSE;
    }
    q->base = s.num;
    q->started = FALSE;
    if (base) {
        *base = s.num;
    }
    return TRUE;
}

/* ---- guest memory ---- */

guint64 vfs_fe_alloc(VfsFe *fe, gsize size, gsize align)
{
    gsize off = (fe->alloc_next + (align ? align - 1 : 0)) & ~(align ? align - 1 : 0);
    g_assert(off + size <= fe->mem_size);
    fe->alloc_next = off + size;
    return gpa_of(fe, off);
}

void vfs_fe_alloc_reset(VfsFe *fe)
{
    fe->alloc_next = fe->alloc_start;
}

/* ---- chains ---- */

static guint16 load16(const guint16 *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

struct vring_desc *vfs_fe_desc(VfsFe *fe, guint qi)
{
    return fe->q[qi].desc;
}

void vfs_fe_set_avail_idx(VfsFe *fe, guint qi, guint16 idx)
{
    FeQueue *q = &fe->q[qi];
    q->avail_idx = idx;
    __atomic_store_n(&q->avail->idx, idx, __ATOMIC_RELEASE);
}

void vfs_fe_publish(VfsFe *fe, guint qi, guint16 head)
{
    FeQueue *q = &fe->q[qi];
    q->avail->ring[q->avail_idx & (fe->qsize - 1)] = head;
    vfs_fe_set_avail_idx(fe, qi, q->avail_idx + 1);
}

guint16 vfs_fe_used_idx(VfsFe *fe, guint qi)
{
    return load16(&fe->q[qi].used->idx);
}

static int desc_get(FeQueue *q)
{
    return q->nfree ? q->free[--q->nfree] : -1;
}

int vfs_fe_submit_at(VfsFe *fe, guint qi, const VfsFeBuf *bufs, guint n, guint64 table)
{
    FeQueue *q = &fe->q[qi];
    GArray *chain;
    int head;

    if (table) {
        struct vring_desc *t = vfs_fe_host(fe, table);
        for (guint i = 0; i < n; i++) {
            t[i] = (struct vring_desc){ bufs[i].gpa, bufs[i].len,
                                        (bufs[i].write ? VRING_DESC_F_WRITE : 0) |
                                            (i + 1 < n ? VRING_DESC_F_NEXT : 0),
                                        i + 1 };
        }
        head = desc_get(q);
        if (head < 0) {
            return -1;
        }
        q->desc[head] = (struct vring_desc){ table, 16 * n, VRING_DESC_F_INDIRECT, 0 };
        chain = g_array_new(FALSE, FALSE, sizeof(guint16));
        guint16 h = head;
        g_array_append_val(chain, h);
    } else {
        if (q->nfree < n || n == 0) {
            return -1;
        }
        chain = g_array_sized_new(FALSE, FALSE, sizeof(guint16), n);
        for (guint i = 0; i < n; i++) {
            guint16 d = desc_get(q);
            g_array_append_val(chain, d);
        }
        for (guint i = 0; i < n; i++) {
            guint16 d = g_array_index(chain, guint16, i);
            q->desc[d] = (struct vring_desc){
                bufs[i].gpa, bufs[i].len,
                (bufs[i].write ? VRING_DESC_F_WRITE : 0) | (i + 1 < n ? VRING_DESC_F_NEXT : 0),
                i + 1 < n ? g_array_index(chain, guint16, i + 1) : 0 };
        }
        head = g_array_index(chain, guint16, 0);
    }
    g_assert(q->chains[head] == NULL);
    q->chains[head] = chain;
    vfs_fe_publish(fe, qi, head);
    return head;
}

int vfs_fe_submit(VfsFe *fe, guint qi, const VfsFeBuf *bufs, guint n, gboolean indirect)
{
    return vfs_fe_submit_at(fe, qi, bufs, n, indirect ? vfs_fe_alloc(fe, 16 * n, 16) : 0);
}

static guint cut(VfsFeBuf *bufs, guint n, guint64 gpa, guint32 len, guint32 split, gboolean w)
{
    do {
        guint32 l = split && len > split ? split : len;
        bufs[n++] = (VfsFeBuf){ gpa, l, w };
        gpa += l;
        len -= l;
    } while (len > 0);
    return n;
}

int vfs_fe_submit_split(VfsFe *fe, guint qi, guint64 req_gpa, const void *req, guint32 req_len,
                        guint64 reply_gpa, guint32 reply_len, guint32 split, gboolean indirect)
{
    guint max = (split ? req_len / split + reply_len / split : 0) + 2;
    g_autofree VfsFeBuf *bufs = g_new(VfsFeBuf, max);
    guint n;

    if (req) {
        memcpy(vfs_fe_host(fe, req_gpa), req, req_len);
    }
    n = cut(bufs, 0, req_gpa, req_len, split, FALSE);
    if (reply_len) {
        n = cut(bufs, n, reply_gpa, reply_len, split, TRUE);
    }
    return vfs_fe_submit(fe, qi, bufs, n, indirect);
}

void vfs_fe_kick(VfsFe *fe, guint qi)
{
    FeQueue *q = &fe->q[qi];
    gboolean kick;

    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (fe->features & (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_EVENT_IDX)) {
        guint16 event = load16((guint16 *)&q->used->ring[fe->qsize]);
        kick = (guint16)(q->avail_idx - event - 1) < (guint16)(q->avail_idx - q->kicked_idx);
    } else {
        kick = !(load16(&q->used->flags) & VRING_USED_F_NO_NOTIFY);
    }
    q->kicked_idx = q->avail_idx;
    q->count.kick_checks++;
    if (kick) {
        q->count.kicks++;
        eventfd_write(q->kick, 1);
    }
}

void vfs_fe_counters(VfsFe *fe, guint qi, VfsFeCounters *c)
{
    *c = fe->q[qi].count;
}

guint vfs_fe_used_pending(VfsFe *fe, guint qi)
{
    FeQueue *q = &fe->q[qi];
    return (guint16)(load16(&q->used->idx) - q->last_used);
}

gboolean vfs_fe_poll_used(VfsFe *fe, guint qi, VfsFeUsed *used)
{
    FeQueue *q = &fe->q[qi];

    if (load16(&q->used->idx) == q->last_used) {
        return FALSE;
    }
    struct vring_used_elem e = q->used->ring[q->last_used & (fe->qsize - 1)];
    q->last_used++;
    used->id = e.id;
    used->len = e.len;
    if (e.id < fe->qsize && q->chains[e.id]) {
        GArray *chain = q->chains[e.id];
        for (guint i = 0; i < chain->len; i++) {
            q->free[q->nfree++] = g_array_index(chain, guint16, i);
        }
        g_array_free(chain, TRUE);
        q->chains[e.id] = NULL;
    }
    return TRUE;
}

gboolean vfs_fe_wait_used(VfsFe *fe, guint qi, VfsFeUsed *used, guint timeout_ms)
{
    FeQueue *q = &fe->q[qi];
    gint64 end = g_get_monotonic_time() + timeout_ms * 1000ll;

    for (;;) {
        if (vfs_fe_poll_used(fe, qi, used)) {
            return TRUE;
        }
        /* Ask for an interrupt at the next used entry, then check again before sleeping. */
        if (fe->features & (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_EVENT_IDX)) {
            __atomic_store_n(&q->avail->ring[fe->qsize], q->last_used, __ATOMIC_RELAXED);
        }
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (vfs_fe_poll_used(fe, qi, used)) {
            return TRUE;
        }
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        struct pollfd pfd = { .fd = q->call, .events = POLLIN };
        q->count.sleeps++;
        if (left <= 0 || (poll(&pfd, 1, left) == 0 && !vfs_fe_used_pending(fe, qi))) {
            return vfs_fe_poll_used(fe, qi, used);
        }
        eventfd_t v;
        if (eventfd_read(q->call, &v) == 0) {
            q->count.calls += v;
        }
    }
}

gboolean vfs_fe_wait_any(VfsFe *fe, guint first, guint n, guint *qi, VfsFeUsed *used,
                         guint timeout_ms)
{
    struct pollfd pfd[VFS_FE_MAX_QUEUES];
    gint64 end = g_get_monotonic_time() + timeout_ms * 1000ll;

    g_assert(first + n <= VFS_FE_MAX_QUEUES);
    for (;;) {
        for (guint pass = 0; pass < 2; pass++) {
            for (guint i = first; i < first + n; i++) {
                if (vfs_fe_poll_used(fe, i, used)) {
                    *qi = i;
                    return TRUE;
                }
                if (pass == 0 &&
                    (fe->features & (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_EVENT_IDX))) {
                    __atomic_store_n(&fe->q[i].avail->ring[fe->qsize], fe->q[i].last_used,
                                     __ATOMIC_RELAXED);
                }
            }
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
        }
        gint64 left = (end - g_get_monotonic_time()) / 1000;
        if (left <= 0) {
            return FALSE;
        }
        for (guint i = 0; i < n; i++) {
            pfd[i] = (struct pollfd){ .fd = fe->q[first + i].call, .events = POLLIN };
        }
        fe->q[first].count.sleeps++;
        poll(pfd, n, left);
        for (guint i = 0; i < n; i++) {
            eventfd_t v;
            if (pfd[i].revents && eventfd_read(pfd[i].fd, &v) == 0) {
                fe->q[first + i].count.calls += v;
            }
        }
    }
}

gsize vfs_fe_fuse_build(guint8 *buf, guint32 opcode, guint64 nodeid, guint64 unique,
                        const void *arg, guint32 arg_len, const void *data, guint32 data_len)
{
    struct fuse_in_header h = {
        .len = sizeof(h) + arg_len + data_len,
        .opcode = opcode,
        .unique = unique,
        .nodeid = nodeid,
    };
    memcpy(buf, &h, sizeof(h));
    if (arg_len) {
        memcpy(buf + sizeof(h), arg, arg_len);
    }
    if (data_len) {
        memcpy(buf + sizeof(h) + arg_len, data, data_len);
    }
    return h.len;
}
