/* The boundary between the vhost-user-fs device and the FUSE passthrough filesystem. */
#pragma once

#include <glib.h>
#include <sys/uio.h>

/*
 * The device (vhost-user.c, virtqueue.c, device.c) pops a descriptor chain, translates every
 * descriptor into host memory with bounds checks, and hands the filesystem two iovec arrays:
 *   out: the device-readable part of the chain (the FUSE request: fuse_in_header + args + data)
 *   in:  the device-writable part (where the reply goes: fuse_out_header + payload)
 * Buffers are guest memory: the guest can change them at any time, so the filesystem copies
 * every header out before it checks it, and never assumes how the bytes are split between
 * iovecs. The device owns the iovec arrays; they stay valid until vfs_fs_handle() returns.
 */

typedef struct VfsFs VfsFs;

typedef enum {
    VFS_CACHE_NEVER = 0,
    VFS_CACHE_AUTO,
    VFS_CACHE_ALWAYS,
    VFS_CACHE_LAST
} VfsCacheMode;

typedef struct {
    const char *shared_dir; /* the directory the guest sees as its root */
    VfsCacheMode cache;     /* default VFS_CACHE_AUTO */
    gboolean readonly;      /* refuse every request that modifies the tree */
    gboolean xattr;         /* pass extended attributes through (later issue) */
    guint max_open_fds;     /* bound on open file and inode fds; 0 = a built-in default */
} VfsFsOptions;

/* Opens the shared directory; NULL and @error when it cannot be opened. */
VfsFs *vfs_fs_new(const VfsFsOptions *opts, GError **error);
/* Closes every fd the filesystem holds. Accepts NULL. Callers stop all queues first. */
void vfs_fs_free(VfsFs *fs);

/*
 * Handles one FUSE request. Thread safe: queue threads and pool threads call it at once.
 * Returns the number of bytes written into @in (the reply length the device puts into the used
 * ring), or 0 when the request has no reply (FORGET, BATCH_FORGET) or no reply could be written
 * (the in buffers are too small for even a fuse_out_header). Errors become FUSE replies with a
 * negative errno in fuse_out_header.error; this function never fails otherwise.
 */
size_t vfs_fs_handle(VfsFs *fs, const struct iovec *out, unsigned out_n,
                     const struct iovec *in, unsigned in_n);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfsFs, vfs_fs_free)
