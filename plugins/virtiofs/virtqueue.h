/* Split virtqueues in guest memory: popping descriptor chains into iovecs, filling the used ring. */
#pragma once

#include <glib.h>
#include <linux/virtio_ring.h>
#include <sys/uio.h>

#include "guest-mem.h"

#define VFS_VQ_MAX_SIZE 32768 /* the largest split queue the virtio spec allows */
#define VFS_VQ_MAX_CHAIN 1024 /* descriptors in one chain, indirect tables included */
#define VFS_VQ_MAX_IOV 1024   /* host buffers one chain may translate into */

/*
 * One split virtqueue. The rings live in guest memory, which a hostile guest may change at any
 * moment: every index and descriptor is read once into a local copy, checked, then used.
 * Popping is done by one thread (the queue's); pushing may come from several, serialized by
 * the caller (see device.c).
 */
typedef struct {
    guint num;            /* queue size, a power of 2; 0 until set */
    gboolean event_idx;   /* VIRTIO_RING_F_EVENT_IDX negotiated */
    gboolean indirect;    /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    guint16 last_avail_idx; /* the next avail ring entry to pop */
    guint16 used_idx;       /* the next used ring entry to fill; ours, never read back */
    guint16 signalled_used;
    gboolean signalled_used_valid;
    gboolean broken; /* a malformed chain or ring was seen: the queue is no longer processed */
    struct iovec scratch[VFS_VQ_MAX_IOV]; /* the chain being walked (pop side only) */
} VfsVq;

/* A popped chain: @out_n device-readable buffers, then @in_n device-writable ones. */
typedef struct {
    guint16 head;
    guint out_n;
    guint in_n;
    guint64 out_len;
    guint64 in_len;
    struct iovec iov[];
} VfsVqElem;

/* Translates the three ring addresses (front-end virtual addresses) for a queue of vq->num. */
gboolean vfs_vq_map(VfsVq *vq, const VfsGuestMem *mem, guint64 desc_uva, guint64 avail_uva,
                    guint64 used_uva, GError **error);
/* The used ring index as the guest last saw it; read once when a queue is set up. */
guint16 vfs_vq_read_used_idx(const VfsVq *vq);

/*
 * Pops the next chain. Returns NULL without @error when the queue is empty. On a malformed
 * chain or ring, marks the queue broken, sets @error and, when the chain's head is a valid
 * index, sets *@bad_head to it (else -1) so that the caller still returns it to the guest.
 */
VfsVqElem *vfs_vq_pop(VfsVq *vq, const VfsGuestMem *mem, int *bad_head, GError **error);

/*
 * EVENT_IDX: asks the guest to kick at the next new entry, then says whether entries arrived
 * meanwhile (the caller pops again before it sleeps). Without EVENT_IDX, only the latter.
 */
gboolean vfs_vq_enable_notify(VfsVq *vq);
/* TRUE when the driver has made entries available that were not popped yet (no barrier: a
 * hint for polling; vfs_vq_pop() reads the ring properly). */
gboolean vfs_vq_avail_pending(VfsVq *vq);

/*
 * Puts one used entry and publishes it. Returns whether the guest wants an interrupt now
 * (EVENT_IDX or VRING_AVAIL_F_NO_INTERRUPT). Callers serialize pushes on one queue.
 */
gboolean vfs_vq_push(VfsVq *vq, guint16 head, guint32 len);
