/* A vhost-user front-end for tests and benchmarks: it plays QEMU over a real unix socket. */
#pragma once

#include <glib.h>
#include <linux/fuse.h>
#include <linux/virtio_ring.h>
#include <stdint.h>

#include "vhost-user.h"

#define VFS_FE_MAX_QUEUES 16
#define VFS_FE_GPA_BASE G_GUINT64_CONSTANT(0x40000000)     /* guest addresses start here */
#define VFS_FE_UVA_BASE G_GUINT64_CONSTANT(0x7e0000000000) /* and "our" virtual addresses */
#define VFS_FE_RING_AREA (64 * 1024)                     /* guest memory per queue's rings */

/*
 * Guest memory is one memfd, mapped here and shared with the backend by SET_MEM_TABLE (or
 * ADD_MEM_REG) as one region or as two adjacent ones. The rings of queue i sit at
 * i * VFS_FE_RING_AREA from the start; buffers come from a bump allocator after them.
 */
typedef struct VfsFe VfsFe;

typedef struct {
    guint32 id;
    guint32 len;
} VfsFeUsed;

typedef struct {
    guint64 gpa;
    guint32 len;
    gboolean write;
} VfsFeBuf;

/* Notifications on one queue since it was set up, for benchmarks. */
typedef struct {
    guint64 kicks;       /* kick eventfd writes (those vfs_fe_kick decided on) */
    guint64 kick_checks; /* vfs_fe_kick calls */
    guint64 calls;       /* call eventfd signals the backend made (sum of the counter reads) */
    guint64 sleeps;      /* polls on the call eventfd that found nothing used yet */
} VfsFeCounters;

typedef struct {
    guint nqueues;          /* queues to start (hiprio included); default 2 */
    guint qsize;            /* default 128 */
    guint64 features;       /* features to negotiate; 0: all the backend offers */
    gboolean two_regions;   /* share memory as two adjacent regions */
    gboolean add_mem_reg;   /* use ADD_MEM_REG instead of SET_MEM_TABLE */
} VfsFeSetup;

/* Takes @sock (connected to the backend). */
VfsFe *vfs_fe_new(int sock, gsize mem_size, GError **error);
VfsFe *vfs_fe_connect(const char *path, gsize mem_size, GError **error);
void vfs_fe_free(VfsFe *fe);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfsFe, vfs_fe_free)

int vfs_fe_socket(VfsFe *fe);
guint64 vfs_fe_features(VfsFe *fe); /* negotiated */

/* Messages. Raw sending of any bytes, with fds; a reply with a timeout. */
gboolean vfs_fe_send_bytes(VfsFe *fe, const void *bytes, gsize len, const int *fds, guint nfds,
                           GError **error);
gboolean vfs_fe_send(VfsFe *fe, guint32 request, guint32 flags, const void *payload,
                     guint32 size, const int *fds, guint nfds, GError **error);
gboolean vfs_fe_recv(VfsFe *fe, guint32 request, void *payload, guint32 size, GError **error);
/* Sends with NEED_REPLY and returns the backend's REPLY_ACK status in *@status. */
gboolean vfs_fe_call(VfsFe *fe, guint32 request, const void *payload, guint32 size,
                     const int *fds, guint nfds, guint64 *status, GError **error);
gboolean vfs_fe_get_u64(VfsFe *fe, guint32 request, guint64 *value, GError **error);
/* TRUE when the backend has closed the connection (waits up to @timeout_ms). */
gboolean vfs_fe_wait_closed(VfsFe *fe, guint timeout_ms);

/* The QEMU-like handshake and queue start/stop. */
gboolean vfs_fe_setup(VfsFe *fe, const VfsFeSetup *setup, GError **error);
gboolean vfs_fe_queue_start(VfsFe *fe, guint q, GError **error);
gboolean vfs_fe_queue_stop(VfsFe *fe, guint q, guint *base, GError **error);

/* Guest memory. */
guint64 vfs_fe_alloc(VfsFe *fe, gsize size, gsize align);
void vfs_fe_alloc_reset(VfsFe *fe);
void *vfs_fe_host(VfsFe *fe, guint64 gpa);
int vfs_fe_memfd(VfsFe *fe);
gsize vfs_fe_mem_size(VfsFe *fe);

/* Chains. The indirect table of vfs_fe_submit comes from vfs_fe_alloc(). */
int vfs_fe_submit(VfsFe *fe, guint q, const VfsFeBuf *bufs, guint n, gboolean indirect);
/* Direct when @table is 0, else through an indirect table written at guest address @table. */
int vfs_fe_submit_at(VfsFe *fe, guint q, const VfsFeBuf *bufs, guint n, guint64 table);
/* Submits @req_len bytes at @req_gpa (written from @req unless NULL) and a reply buffer, each
 * cut into descriptors of at most @split bytes (0: whole). */
int vfs_fe_submit_split(VfsFe *fe, guint q, guint64 req_gpa, const void *req, guint32 req_len,
                        guint64 reply_gpa, guint32 reply_len, guint32 split, gboolean indirect);
void vfs_fe_kick(VfsFe *fe, guint q);
/* Waits for the next used entry of @q; FALSE on timeout. Frees the chain's descriptors. */
gboolean vfs_fe_wait_used(VfsFe *fe, guint q, VfsFeUsed *used, guint timeout_ms);
/* Waits for a used entry on any of queues @first..@first+@n-1; *@qi says which. */
gboolean vfs_fe_wait_any(VfsFe *fe, guint first, guint n, guint *qi, VfsFeUsed *used,
                         guint timeout_ms);
void vfs_fe_counters(VfsFe *fe, guint q, VfsFeCounters *c);
/* Takes the next used entry if there is one. */
gboolean vfs_fe_poll_used(VfsFe *fe, guint q, VfsFeUsed *used);
/* Entries in the used ring that vfs_fe_*_used has not taken yet. */
guint vfs_fe_used_pending(VfsFe *fe, guint q);

/* Raw ring access for hostile tests. */
struct vring_desc *vfs_fe_desc(VfsFe *fe, guint q);
void vfs_fe_publish(VfsFe *fe, guint q, guint16 head);
void vfs_fe_set_avail_idx(VfsFe *fe, guint q, guint16 idx);
guint16 vfs_fe_used_idx(VfsFe *fe, guint q);

/* FUSE requests: builds fuse_in_header + @arg + @data into @buf, returns the length. */
gsize vfs_fe_fuse_build(guint8 *buf, guint32 opcode, guint64 nodeid, guint64 unique,
                        const void *arg, guint32 arg_len, const void *data, guint32 data_len);
