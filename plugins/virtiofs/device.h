/* The vhost-user-fs device: message loop, one thread per started queue, the request pool. */
#pragma once

#include <glib.h>
#include <sys/uio.h>

/* Virtqueues offered by default: the hiprio queue and 15 request queues. */
#define VFS_DEVICE_DEFAULT_QUEUES 16
#define VFS_DEVICE_MAX_QUEUES 256 /* a queue index is 8 bits in KICK/CALL/ERR */

/*
 * Handles one request (a FUSE request for virtiofs; see fs-handler.h for the contract) and
 * returns the number of bytes written into @in. Called from queue threads and pool threads at
 * once. The iovecs point into guest memory and stay valid until the function returns.
 */
typedef size_t (*VfsRequestFunc)(gpointer user_data, const struct iovec *out, unsigned out_n,
                                 const struct iovec *in, unsigned in_n);

typedef struct {
    VfsRequestFunc handle;
    gpointer user_data;
    guint thread_pool_size; /* 0: each queue thread handles its own requests */
    guint queues;           /* virtqueues offered (GET_QUEUE_NUM); 0: the default */
    guint poll_us;          /* how long a queue thread that found its ring empty keeps
                             * looking before it sleeps on the kick fd; 0: never */
    gboolean pool_inline;   /* with a pool: a queue thread handles a request itself when it
                             * is alone (nothing else in the ring or the pool) */
    guint pool_spin_us;     /* with a pool: how long an idle pool thread looks for the next
                             * request before it sleeps (one thread at a time); 0: never */
    guint coalesce_us;      /* how long a queue thread may hold back the call for a request
                             * it completed while more wait in its ring; 0: never */
} VfsDeviceOptions;

typedef struct VfsDevice VfsDevice;

VfsDevice *vfs_device_new(const VfsDeviceOptions *opts, GError **error);
/* Stops a running connection first. Accepts NULL. */
void vfs_device_free(VfsDevice *dev);

/*
 * Serves one front-end on the connected socket @sock (taken) in the calling thread until the
 * front-end disconnects or vfs_device_stop() is called. Before it returns, every queue thread
 * is joined, every pooled request is finished and all connection state is freed: the device
 * can serve the next connection. FALSE with @error when the connection ended on an error.
 */
gboolean vfs_device_serve(VfsDevice *dev, int sock, GError **error);
/* Serves @sock (taken) in a new message-loop thread. */
gboolean vfs_device_start(VfsDevice *dev, int sock, GError **error);
/* Waits for the message-loop thread started by vfs_device_start() to end. */
gboolean vfs_device_wait(VfsDevice *dev, GError **error);
/* Disconnects the front-end and waits for the message-loop thread; a no-op when not serving. */
void vfs_device_stop(VfsDevice *dev);

/* Whether queue @index was stopped because of a malformed ring or chain (for tests). */
gboolean vfs_device_queue_broken(VfsDevice *dev, guint index);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfsDevice, vfs_device_free)
