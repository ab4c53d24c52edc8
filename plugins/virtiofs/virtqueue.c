/* Split virtqueues: chain walking with loop, length and bounds limits; used ring with barriers. */
#include "virtqueue.h"

#include <gio/gio.h>
#include <string.h>

/* A compiler barrier after a copy out of guest memory: the copy is never re-read from there. */
#define GUEST_COPY(dst, src) \
    do { \
        memcpy(&(dst), (src), sizeof(dst)); \
        __atomic_signal_fence(__ATOMIC_SEQ_CST); \
    } while (0)

static guint16 load16(const guint16 *p)
{
    return GUINT16_FROM_LE(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static void store16(guint16 *p, guint16 v)
{
    __atomic_store_n(p, GUINT16_TO_LE(v), __ATOMIC_RELAXED);
}

gboolean vfs_vq_map(VfsVq *vq, const VfsGuestMem *mem, guint64 desc_uva, guint64 avail_uva,
                    guint64 used_uva, GError **error)
{
    guint64 n = vq->num;
    void *desc = vfs_guest_mem_uva(mem, desc_uva, n * sizeof(struct vring_desc));
    void *avail = vfs_guest_mem_uva(mem, avail_uva, 6 + 2 * n);
    void *used = vfs_guest_mem_uva(mem, used_uva, 6 + 8 * n);

    if (n == 0 || !desc || !avail || !used) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "vring of %u entries at desc 0x%" G_GINT64_MODIFIER "x avail 0x%"
                    G_GINT64_MODIFIER "x used 0x%" G_GINT64_MODIFIER
                    "x is not inside guest memory", vq->num, desc_uva, avail_uva, used_uva);
        return FALSE;
    }
    if ((guintptr)desc % 16 || (guintptr)avail % 2 || (guintptr)used % 4) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "vring addresses are not aligned as the virtio spec requires");
        return FALSE;
    }
    vq->desc = desc;
    vq->avail = avail;
    vq->used = used;
    return TRUE;
}

guint16 vfs_vq_read_used_idx(const VfsVq *vq)
{
    return vq->used ? load16(&vq->used->idx) : 0;
}

static gboolean chain_error(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static gboolean chain_error(GError **error, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "malformed descriptor chain: %s",
                msg);
    return FALSE;
}

typedef struct {
    guint n;
    guint out_n;
    guint64 out_len;
    guint64 in_len;
} ChainWalk;

static gboolean chain_add(VfsVq *vq, ChainWalk *w, const VfsGuestMem *mem, guint64 gpa,
                          guint32 len, gboolean write, GError **error)
{
    if (!write && w->n > w->out_n) {
        return chain_error(error, "a device-readable descriptor follows a writable one");
    }
    while (len > 0) {
        guint64 contig;
        void *p = vfs_guest_mem_gpa(mem, gpa, len, &contig);
        if (!p) {
            return chain_error(error, "buffer at 0x%" G_GINT64_MODIFIER
                               "x is outside guest memory", gpa);
        }
        if (w->n >= VFS_VQ_MAX_IOV) {
            return chain_error(error, "more than %u buffers", VFS_VQ_MAX_IOV);
        }
        vq->scratch[w->n].iov_base = p;
        vq->scratch[w->n].iov_len = contig;
        w->n++;
        if (!write) {
            w->out_n = w->n;
            w->out_len += contig;
        } else {
            w->in_len += contig;
        }
        gpa += contig;
        len -= contig;
    }
    return TRUE;
}

static gboolean chain_walk(VfsVq *vq, const VfsGuestMem *mem, guint head, ChainWalk *w,
                           GError **error)
{
    const struct vring_desc *table = vq->desc;
    guint max = vq->num;
    guint idx = head;
    guint in_table = 0;
    guint total = 0;
    gboolean indirect = FALSE;

    for (;;) {
        struct vring_desc d;

        if (idx >= max) {
            return chain_error(error, "descriptor index %u is out of range (%u)", idx, max);
        }
        if (++total > VFS_VQ_MAX_CHAIN) {
            return chain_error(error, "chain is longer than %u descriptors", VFS_VQ_MAX_CHAIN);
        }
        /* More links than entries in the table can only be a loop. */
        if (++in_table > max) {
            return chain_error(error, "descriptor loop at index %u", idx);
        }
        GUEST_COPY(d, &table[idx]);
        guint64 addr = GUINT64_FROM_LE(d.addr);
        guint32 len = GUINT32_FROM_LE(d.len);
        guint16 flags = GUINT16_FROM_LE(d.flags);

        if (flags & VRING_DESC_F_INDIRECT) {
            guint64 contig;
            if (!vq->indirect) {
                return chain_error(error, "indirect descriptor without INDIRECT_DESC");
            }
            if (indirect) {
                return chain_error(error, "nested indirect descriptor table");
            }
            if (flags & VRING_DESC_F_NEXT) {
                return chain_error(error, "indirect descriptor also has NEXT");
            }
            if (len == 0 || len % sizeof(struct vring_desc) ||
                len / sizeof(struct vring_desc) > VFS_VQ_MAX_CHAIN) {
                return chain_error(error, "indirect table of %u bytes", len);
            }
            table = vfs_guest_mem_gpa(mem, addr, len, &contig);
            if (!table || contig < len) {
                return chain_error(error, "indirect table at 0x%" G_GINT64_MODIFIER
                                   "x is not inside one guest memory region", addr);
            }
            indirect = TRUE;
            max = len / sizeof(struct vring_desc);
            idx = 0;
            in_table = 0;
            continue;
        }
        if (!chain_add(vq, w, mem, addr, len, flags & VRING_DESC_F_WRITE, error)) {
            return FALSE;
        }
        if (!(flags & VRING_DESC_F_NEXT)) {
            return TRUE;
        }
        idx = GUINT16_FROM_LE(d.next);
    }
}

VfsVqElem *vfs_vq_pop(VfsVq *vq, const VfsGuestMem *mem, int *bad_head, GError **error)
{
    ChainWalk w = { 0 };
    *bad_head = -1;

    if (vq->broken || !vq->avail) {
        return NULL;
    }
    guint16 avail_idx = load16(&vq->avail->idx);
    guint16 pending = avail_idx - vq->last_avail_idx;
    if (pending == 0) {
        return NULL;
    }
    if (pending > vq->num) {
        vq->broken = TRUE;
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "avail index %u is %u entries ahead of %u, more than the queue size %u",
                    avail_idx, pending, vq->last_avail_idx, vq->num);
        return NULL;
    }
    /* Read the ring entry and the descriptors only after the index that published them. */
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    guint head = load16(&vq->avail->ring[vq->last_avail_idx & (vq->num - 1)]);
    if (head >= vq->num) {
        vq->broken = TRUE;
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "avail ring entry %u names descriptor %u, past the queue size %u",
                    vq->last_avail_idx, head, vq->num);
        return NULL;
    }
    vq->last_avail_idx++;
    if (!chain_walk(vq, mem, head, &w, error)) {
        vq->broken = TRUE;
        *bad_head = head;
        return NULL;
    }
    VfsVqElem *elem = g_malloc(sizeof(VfsVqElem) + sizeof(struct iovec) * w.n);
    elem->head = head;
    elem->out_n = w.out_n;
    elem->in_n = w.n - w.out_n;
    elem->out_len = w.out_len;
    elem->in_len = w.in_len;
    memcpy(elem->iov, vq->scratch, sizeof(struct iovec) * w.n);
    return elem;
}

gboolean vfs_vq_avail_pending(VfsVq *vq)
{
    return !vq->broken && vq->avail && load16(&vq->avail->idx) != vq->last_avail_idx;
}

gboolean vfs_vq_enable_notify(VfsVq *vq)
{
    if (vq->broken || !vq->avail) {
        return FALSE;
    }
    if (vq->event_idx) {
        /* avail_event lives right after the used ring's entries. */
        store16((guint16 *)&vq->used->ring[vq->num], vq->last_avail_idx);
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    return load16(&vq->avail->idx) != vq->last_avail_idx;
}

gboolean vfs_vq_push(VfsVq *vq, guint16 head, guint32 len)
{
    struct vring_used_elem e = {
        .id = GUINT32_TO_LE(head),
        .len = GUINT32_TO_LE(len),
    };
    guint16 old = vq->used_idx;
    guint16 new = old + 1;

    if (!vq->used) {
        return FALSE;
    }
    memcpy(&vq->used->ring[old & (vq->num - 1)], &e, sizeof(e));
    /* The entry must be visible before the index that publishes it. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    store16(&vq->used->idx, new);
    vq->used_idx = new;
    /* And the index before we read whether the guest wants an interrupt. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);

    if (!vq->event_idx) {
        return !(load16(&vq->avail->flags) & VRING_AVAIL_F_NO_INTERRUPT);
    }
    guint16 used_event = load16(&vq->avail->ring[vq->num]);
    guint16 signalled = vq->signalled_used;
    gboolean valid = vq->signalled_used_valid;
    vq->signalled_used = new;
    vq->signalled_used_valid = TRUE;
    if (!valid) {
        return TRUE;
    }
    /* vring_need_event(): did the index pass the guest's used_event since the last signal? */
    return (guint16)(new - used_event - 1) < (guint16)(new - signalled);
}
