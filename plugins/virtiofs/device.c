/* The vhost-user-fs device: protocol handlers, queue threads, request pool and their locking. */
#include "device.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "guest-mem.h"
#include "pool.h"
#include "vhost-user.h"
#include "virtqueue.h"

#define OFFERED_FEATURES \
    ((G_GUINT64_CONSTANT(1) << VFS_VIRTIO_F_VERSION_1) | (G_GUINT64_CONSTANT(1) << VHOST_USER_F_PROTOCOL_FEATURES) | \
     (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_INDIRECT_DESC) | (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_EVENT_IDX))
#define OFFERED_PROTOCOL_FEATURES \
    ((G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_MQ) | (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_REPLY_ACK) | \
     (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS))

typedef struct {
    VfsDevice *dev;
    guint index;
    /* Under dev->lock: the ring configuration, fds and flags below. The pop side of @vq is
     * used by the queue thread only; its push side under @push_lock. */
    VfsVq vq;
    int kick_fd;
    int call_fd;
    int err_fd;
    gboolean enabled;
    gboolean addr_set;
    guint64 desc_uva;
    guint64 avail_uva;
    guint64 used_uva;
    /* Serializes used ring updates from the queue thread and pool threads. */
    GMutex push_lock;
    /* Owned by the message thread. */
    GThread *thread;
    int wake_fd; /* eventfd: the message thread wakes the queue thread (stop, enable) */
    gint stop;   /* atomic */
    gint inflight; /* atomic: requests of this queue in the pool (see queue_stop) */
    gint waiting;  /* atomic: queue_stop waits for @inflight to drop to 0 */
    guint poll_us; /* queue thread only: the present polling window (see queue_poll) */
    gint64 inline_off_until; /* queue thread only: no inline requests before (queue_inline) */
    gboolean call_pending;   /* queue thread only: a call held back (queue_complete) */
    guint calls_held;        /* queue thread only: completions since it was held back */
    gint64 call_held_since;  /* queue thread only */
} VfsQueue;

typedef struct {
    VfsQueue *q;
    VfsGuestMem *mem;
    VfsVqElem *elem;
} VfsRequest;

struct VfsDevice {
    VfsDeviceOptions opts;
    /* Device state: features, memory table and every queue's configuration. Queue and pool
     * threads hold it for reading while they touch rings; only the message thread writes, and
     * it never holds it while it joins a queue thread or waits for pooled requests. */
    GRWLock lock;
    guint64 features;
    guint64 protocol_features;
    VfsGuestMem *mem;
    VfsQueue *queues;
    guint nqueues;
    VfsPool *pool;
    gint awake; /* atomic: queue threads not sleeping on their kick fd (see queue_poll) */
    gint pooled; /* atomic: requests handed to the pool and not finished yet */
    gint spinning; /* atomic: 1 while a queue thread polls or a pool thread spins (one may) */
    /* With inflight_cond: waiting for VfsQueue.inflight to drop to 0. */
    GMutex inflight_lock;
    GCond inflight_cond;
    /* The connection: @sock is closed by the message loop and shut down by vfs_device_stop. */
    GMutex conn_lock;
    int sock;
    GError *send_error; /* a reply could not be sent (message thread) */
    GThread *msg_thread;
};

static void fd_close(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void fd_signal(int fd)
{
    if (fd >= 0) {
        eventfd_write(fd, 1);
    }
}

/* Called with dev->lock held for reading. */
static void request_complete(VfsQueue *q, guint16 head, guint32 len)
{
    g_mutex_lock(&q->push_lock);
    gboolean notify = vfs_vq_push(&q->vq, head, len);
    g_mutex_unlock(&q->push_lock);
    if (notify) {
        fd_signal(q->call_fd);
    }
}

static guint32 request_handle(VfsDevice *dev, VfsVqElem *elem)
{
    size_t len = dev->opts.handle(dev->opts.user_data, elem->iov, elem->out_n,
                                  elem->iov + elem->out_n, elem->in_n);
    /* The reply cannot be longer than the buffers the guest gave. */
    return (guint32)MIN((guint64)len, MIN(elem->in_len, G_MAXUINT32));
}

static void pool_run(gpointer data, gpointer user_data G_GNUC_UNUSED)
{
    VfsRequest *r = data;
    VfsQueue *q = r->q;
    VfsDevice *dev = q->dev;
    guint32 len = request_handle(dev, r->elem);

    g_rw_lock_reader_lock(&dev->lock);
    request_complete(q, r->elem->head, len);
    g_rw_lock_reader_unlock(&dev->lock);
    vfs_guest_mem_unref(r->mem);
    g_free(r->elem);
    g_free(r);

    g_atomic_int_add(&dev->pooled, -1);
    /* Wake queue_stop() only when it waits: g_cond_broadcast() is a futex system call even
     * without waiters. Seen with the decrement (both sequentially consistent), @waiting is set
     * or the waiter sees 0; the lock orders the wake-up after the waiter's check. */
    if (g_atomic_int_dec_and_test(&q->inflight) && g_atomic_int_get(&q->waiting)) {
        g_mutex_lock(&dev->inflight_lock);
        g_cond_broadcast(&dev->inflight_cond);
        g_mutex_unlock(&dev->inflight_lock);
    }
}

static void queue_mark_broken(VfsQueue *q, const GError *err, int bad_head)
{
    g_warning("virtqueue %u is broken and no longer processed: %s", q->index, err->message);
    fd_signal(q->err_fd);
    /* Even a malformed chain is given back, so that the guest does not wait for it forever. */
    if (bad_head >= 0) {
        request_complete(q, bad_head, 0);
    }
}

/* Keeps looking at an empty ring for up to q->poll_us: a driver that answers a reply with its
 * next request within that time costs neither a kick nor a wake-up. The window adapts as
 * Linux's halt polling does (queue_thread): after a poll that found nothing, a sleep that
 * ended soon (the request just missed the window) doubles it up to opts.poll_us, a long one
 * halves it, so a queue whose driver is slow or idle soon stops spending CPU here. TRUE when
 * something came. */
static gboolean queue_poll(VfsQueue *q)
{
    VfsDevice *dev = q->dev;
    gint64 end;

    if (!q->poll_us) {
        return FALSE;
    }
    if (!g_atomic_int_compare_and_exchange(&dev->spinning, 0, 1)) {
        return FALSE; /* a pool thread spins */
    }
    end = g_get_monotonic_time() + q->poll_us;
    /* Only while no other queue thread is awake (so at most one polls) and no request is in
     * the pool: their work needs the CPU more (4 queues on 2 CPUs lost 17 % to one poller). */
    gboolean found = FALSE;
    while (g_atomic_int_get(&dev->awake) <= 1 && g_atomic_int_get(&dev->pooled) == 0 &&
           !g_atomic_int_get(&q->stop) && g_get_monotonic_time() < end) {
        if (vfs_vq_avail_pending(&q->vq)) {
            found = TRUE;
            break;
        }
        /* Not a pause: the threads that produce the requests must get the CPU. */
        sched_yield();
    }
    g_atomic_int_set(&dev->spinning, 0);
    return found;
}

/* A request that took this long in the queue thread stops inline handling on its queue for
 * VFS_INLINE_BACKOFF_US: next to it, the two wake-ups saved are noise, and the requests that
 * came meanwhile waited for it. */
#define VFS_INLINE_MAX_US 1000
#define VFS_INLINE_BACKOFF_US 100000

/* With a pool: whether the queue thread handles the request it just popped itself. It does
 * when the request is alone (nothing more in the ring, nothing in the pool), where a hand-off
 * costs a pool thread's wake-up before the work and the queue thread's sleep and kick
 * wake-up for the next request, and saves nothing: no other request could run meanwhile.
 * Requests that arrive while it runs wait for it, as they always do with pool 0. */
static gboolean queue_inline(VfsQueue *q)
{
    VfsDevice *dev = q->dev;

    return dev->opts.pool_inline && g_atomic_int_get(&dev->pooled) == 0 &&
           !vfs_vq_avail_pending(&q->vq) &&
           (!q->inline_off_until || g_get_monotonic_time() >= q->inline_off_until);
}

/* The most completions handled after the one whose call is held back (see queue_complete):
 * fewer than a driver keeps in flight, so that it refills the ring while the queue works. */
#define VFS_COALESCE_MAX 4

/* With dev->lock held for reading: the call held back, if any. */
static void queue_flush_call(VfsQueue *q)
{
    if (q->call_pending) {
        q->call_pending = FALSE;
        q->calls_held = 0;
        fd_signal(q->call_fd);
    }
}

/* With dev->lock held for reading, in the queue thread: completes a request it handled in
 * @took µs. The call the driver asked for is held back while more requests wait in the ring,
 * up to opts.coalesce_us and VFS_COALESCE_MAX completions, so that one interrupt covers
 * several (as QEMU's virtio-blk defers notifications to the end of a batch): a driver that
 * has requests queued is not idle, and each call is a cross-CPU wake-up that both sides pay
 * for. Only after a request faster than opts.coalesce_us, as the next is likely to be: the
 * held-back completion waits for the request handled next. */
static void queue_complete(VfsQueue *q, guint16 head, guint32 len, gint64 took)
{
    VfsDevice *dev = q->dev;

    g_mutex_lock(&q->push_lock);
    gboolean notify = vfs_vq_push(&q->vq, head, len);
    g_mutex_unlock(&q->push_lock);
    if (notify) {
        if (!q->call_pending && took < dev->opts.coalesce_us &&
            vfs_vq_avail_pending(&q->vq)) {
            q->call_pending = TRUE;
            q->calls_held = 0;
            q->call_held_since = g_get_monotonic_time();
            return;
        }
        q->call_pending = TRUE;
    }
    if (q->call_pending) {
        if (++q->calls_held >= VFS_COALESCE_MAX || !vfs_vq_avail_pending(&q->vq) ||
            g_get_monotonic_time() - q->call_held_since >= dev->opts.coalesce_us) {
            queue_flush_call(q);
        }
    }
}

static void queue_process(VfsQueue *q)
{
    VfsDevice *dev = q->dev;

    g_rw_lock_reader_lock(&dev->lock);
    while (!g_atomic_int_get(&q->stop) && q->enabled && !q->vq.broken) {
        g_autoptr(GError) err = NULL;
        int bad_head;
        VfsVqElem *elem = vfs_vq_pop(&q->vq, dev->mem, &bad_head, &err);

        if (!elem) {
            if (err) {
                queue_mark_broken(q, err, bad_head);
                break;
            }
            queue_flush_call(q);
            if (queue_poll(q) || vfs_vq_enable_notify(&q->vq)) {
                continue;
            }
            break;
        }
        gboolean inline_req = dev->pool && queue_inline(q);
        if (dev->pool && !inline_req) {
            VfsRequest *r = g_new(VfsRequest, 1);
            r->q = q;
            r->mem = vfs_guest_mem_ref(dev->mem);
            r->elem = elem;
            g_atomic_int_inc(&q->inflight);
            g_atomic_int_inc(&dev->pooled);
            vfs_pool_push(dev->pool, r);
            continue;
        }
        /* Handle without the lock so that the message thread is never held up by a slow
         * request; the reference keeps the request's buffers mapped meanwhile. */
        VfsGuestMem *mem = vfs_guest_mem_ref(dev->mem);
        gboolean timed = inline_req || dev->opts.coalesce_us;
        gint64 t0 = timed ? g_get_monotonic_time() : 0;
        g_rw_lock_reader_unlock(&dev->lock);
        guint32 len = request_handle(dev, elem);
        gint64 took = timed ? g_get_monotonic_time() - t0 : 0;
        if (inline_req) {
            q->inline_off_until = took > VFS_INLINE_MAX_US ? t0 + took + VFS_INLINE_BACKOFF_US
                                                           : 0;
        }
        g_rw_lock_reader_lock(&dev->lock);
        queue_complete(q, elem->head, len, took);
        vfs_guest_mem_unref(mem);
        g_free(elem);
    }
    queue_flush_call(q);
    g_rw_lock_reader_unlock(&dev->lock);
}

static gpointer queue_thread(gpointer data)
{
    VfsQueue *q = data;
    /* kick_fd changes only while this thread is stopped. */
    struct pollfd pfd[2] = {
        { .fd = q->wake_fd, .events = POLLIN },
        { .fd = q->kick_fd, .events = POLLIN },
    };

    q->poll_us = q->dev->opts.poll_us;
    g_atomic_int_inc(&q->dev->awake);
    queue_process(q);
    while (!g_atomic_int_get(&q->stop)) {
        eventfd_t v;
        gint64 slept = g_get_monotonic_time();
        int r;

        g_atomic_int_add(&q->dev->awake, -1);
        r = poll(pfd, 2, -1);
        g_atomic_int_inc(&q->dev->awake);
        slept = g_get_monotonic_time() - slept;
        if (q->dev->opts.poll_us) {
            q->poll_us = vfs_poll_window_next(q->poll_us, q->dev->opts.poll_us, slept);
        }
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            g_warning("virtqueue %u: poll failed: %s", q->index, g_strerror(errno));
            break;
        }
        if (pfd[0].revents) {
            eventfd_read(q->wake_fd, &v);
        }
        if (pfd[1].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            g_warning("virtqueue %u: the kick fd failed; waiting for the front-end", q->index);
            pfd[1].fd = -1;
        } else if (pfd[1].revents & POLLIN) {
            ssize_t n = read(q->kick_fd, &v, sizeof(v));
            if (n != sizeof(v) && !(n < 0 && errno == EAGAIN)) {
                g_warning("virtqueue %u: the kick fd is not an eventfd", q->index);
                pfd[1].fd = -1;
            }
        }
        if (!g_atomic_int_get(&q->stop)) {
            queue_process(q);
        }
    }
    g_atomic_int_add(&q->dev->awake, -1);
    return NULL;
}

/* Message thread only, without dev->lock: stops the queue thread and waits for its requests. */
static void queue_stop(VfsQueue *q)
{
    VfsDevice *dev = q->dev;

    if (q->thread) {
        g_atomic_int_set(&q->stop, 1);
        fd_signal(q->wake_fd);
        g_thread_join(q->thread);
        q->thread = NULL;
    }
    g_mutex_lock(&dev->inflight_lock);
    g_atomic_int_set(&q->waiting, 1);
    while (g_atomic_int_get(&q->inflight) > 0) {
        g_cond_wait(&dev->inflight_cond, &dev->inflight_lock);
    }
    g_atomic_int_set(&q->waiting, 0);
    g_mutex_unlock(&dev->inflight_lock);
}

/* Message thread only: a queue starts once it has a kick fd and mapped rings. */
static gboolean queue_maybe_start(VfsQueue *q, GError **error)
{
    if (q->thread || q->kick_fd < 0 || !q->vq.desc) {
        return TRUE;
    }
    g_atomic_int_set(&q->stop, 0);
    g_autofree char *name = g_strdup_printf("vfs-queue-%u", q->index);
    q->thread = g_thread_try_new(name, queue_thread, q, error);
    return q->thread != NULL;
}

/* With dev->lock held for writing, the queue thread stopped. */
static void queue_reset(VfsQueue *q)
{
    fd_close(&q->kick_fd);
    fd_close(&q->call_fd);
    fd_close(&q->err_fd);
    q->enabled = FALSE;
    q->addr_set = FALSE;
    q->vq.num = 0;
    q->vq.desc = NULL;
    q->vq.avail = NULL;
    q->vq.used = NULL;
    q->vq.last_avail_idx = 0;
    q->vq.used_idx = 0;
    q->vq.signalled_used_valid = FALSE;
    q->vq.broken = FALSE;
}

/* Stops every queue and frees the connection's state (message thread, no lock held). */
static void device_reset(VfsDevice *dev)
{
    for (guint i = 0; i < dev->nqueues; i++) {
        queue_stop(&dev->queues[i]);
    }
    g_rw_lock_writer_lock(&dev->lock);
    for (guint i = 0; i < dev->nqueues; i++) {
        queue_reset(&dev->queues[i]);
    }
    g_clear_pointer(&dev->mem, vfs_guest_mem_unref);
    dev->features = 0;
    dev->protocol_features = 0;
    g_rw_lock_writer_unlock(&dev->lock);
}

VfsDevice *vfs_device_new(const VfsDeviceOptions *opts, GError **error)
{
    g_autoptr(VfsDevice) dev = g_new0(VfsDevice, 1);

    g_return_val_if_fail(opts->handle != NULL, NULL);
    dev->opts = *opts;
    dev->nqueues = opts->queues ? opts->queues : VFS_DEVICE_DEFAULT_QUEUES;
    dev->sock = -1;
    g_rw_lock_init(&dev->lock);
    g_mutex_init(&dev->inflight_lock);
    g_cond_init(&dev->inflight_cond);
    g_mutex_init(&dev->conn_lock);
    if (dev->nqueues < 2 || dev->nqueues > VFS_DEVICE_MAX_QUEUES) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "a virtiofs device has 2 to %d queues, not %u", VFS_DEVICE_MAX_QUEUES,
                    dev->nqueues);
        dev->nqueues = 0;
        return NULL;
    }
    dev->queues = g_new0(VfsQueue, dev->nqueues);
    for (guint i = 0; i < dev->nqueues; i++) {
        VfsQueue *q = &dev->queues[i];
        q->dev = dev;
        q->index = i;
        q->kick_fd = q->call_fd = q->err_fd = -1;
        g_mutex_init(&q->push_lock);
        q->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (q->wake_fd < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                        "cannot create an eventfd: %s", g_strerror(errno));
            return NULL;
        }
    }
    if (opts->thread_pool_size > 0) {
        /* Not GThreadPool: its hand-off wakes a sleeping thread (a futex call and a context
         * switch, about 10 µs of CPU on a VM) for every request; this one lets an idle thread
         * spin for the next. */
        dev->pool = vfs_pool_new(opts->thread_pool_size, opts->pool_spin_us, &dev->spinning,
                                 pool_run, dev, error);
        if (!dev->pool) {
            return NULL;
        }
    }
    return g_steal_pointer(&dev);
}

void vfs_device_free(VfsDevice *dev)
{
    if (!dev) {
        return;
    }
    vfs_device_stop(dev);
    device_reset(dev);
    vfs_pool_free(dev->pool);
    for (guint i = 0; i < dev->nqueues; i++) {
        fd_close(&dev->queues[i].wake_fd);
        g_mutex_clear(&dev->queues[i].push_lock);
    }
    g_free(dev->queues);
    g_rw_lock_clear(&dev->lock);
    g_mutex_clear(&dev->inflight_lock);
    g_cond_clear(&dev->inflight_cond);
    g_mutex_clear(&dev->conn_lock);
    g_free(dev);
}

gboolean vfs_device_queue_broken(VfsDevice *dev, guint index)
{
    gboolean broken = FALSE;
    g_rw_lock_reader_lock(&dev->lock);
    if (index < dev->nqueues) {
        broken = dev->queues[index].vq.broken;
    }
    g_rw_lock_reader_unlock(&dev->lock);
    return broken;
}

/* ---- message handlers (message thread) ---- */

static gboolean msg_fail(GError **error, const VhostUserMsg *msg, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static gboolean msg_fail(GError **error, const VhostUserMsg *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *s = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT, "%s refused: %s",
                vhost_user_request_name(msg->hdr.request), s);
    return FALSE;
}

/* Checks the payload size and fd count each request must have, before anything reads them. */
static gboolean msg_check(const VhostUserMsg *msg, GError **error)
{
    guint32 size = msg->hdr.size;
    guint want_size, want_fds = 0;

    if ((msg->hdr.flags & VHOST_USER_VERSION_MASK) != VHOST_USER_VERSION) {
        return msg_fail(error, msg, "protocol version %u",
                        msg->hdr.flags & VHOST_USER_VERSION_MASK);
    }
    switch (msg->hdr.request) {
    case VHOST_USER_GET_FEATURES:
    case VHOST_USER_SET_OWNER:
    case VHOST_USER_RESET_OWNER:
    case VHOST_USER_GET_PROTOCOL_FEATURES:
    case VHOST_USER_GET_QUEUE_NUM:
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        want_size = 0;
        break;
    case VHOST_USER_SET_FEATURES:
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        want_size = sizeof(guint64);
        break;
    case VHOST_USER_SET_VRING_NUM:
    case VHOST_USER_SET_VRING_BASE:
    case VHOST_USER_GET_VRING_BASE:
    case VHOST_USER_SET_VRING_ENABLE:
        want_size = sizeof(VhostUserVringState);
        break;
    case VHOST_USER_SET_VRING_ADDR:
        want_size = sizeof(VhostUserVringAddr);
        break;
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        want_size = sizeof(guint64);
        if (size == want_size) {
            want_fds = (msg->payload.u64 & VHOST_USER_VRING_NOFD_MASK) ? 0 : 1;
        }
        break;
    case VHOST_USER_SET_MEM_TABLE:
        if (size < 8) {
            return msg_fail(error, msg, "payload of %u bytes", size);
        }
        if (msg->payload.mem.nregions > VHOST_USER_MEM_TABLE_MAX) {
            return msg_fail(error, msg, "%u regions, more than %d", msg->payload.mem.nregions,
                            VHOST_USER_MEM_TABLE_MAX);
        }
        want_size = 8 + msg->payload.mem.nregions * sizeof(VhostUserMemRegion);
        want_fds = msg->payload.mem.nregions;
        break;
    case VHOST_USER_ADD_MEM_REG:
        want_size = sizeof(VhostUserMemRegionMsg);
        want_fds = 1;
        break;
    case VHOST_USER_REM_MEM_REG:
        /* The spec lets old front-ends send an fd here; it is closed unused. */
        want_size = sizeof(VhostUserMemRegionMsg);
        want_fds = msg->nfds == 1 ? 1 : 0;
        break;
    default:
        return msg_fail(error, msg, "request %u is not supported", msg->hdr.request);
    }
    if (size != want_size) {
        return msg_fail(error, msg, "payload of %u bytes, expected %u", size, want_size);
    }
    if (msg->nfds != want_fds) {
        return msg_fail(error, msg, "%u fds, expected %u", msg->nfds, want_fds);
    }
    return TRUE;
}

/* A reply that cannot be sent ends the connection (dev->send_error). */
static gboolean reply(VfsDevice *dev, const VhostUserMsg *msg, const void *p, guint32 size)
{
    if (!dev->send_error) {
        vhost_user_reply(dev->sock, msg->hdr.request, p, size, &dev->send_error);
    }
    return dev->send_error == NULL;
}

static gboolean reply_u64(VfsDevice *dev, const VhostUserMsg *msg, guint64 v)
{
    return reply(dev, msg, &v, sizeof(v));
}

/* Requests that have a reply of their own (no REPLY_ACK for them). */
static gboolean request_has_reply(guint32 request)
{
    return request == VHOST_USER_GET_FEATURES || request == VHOST_USER_GET_PROTOCOL_FEATURES ||
           request == VHOST_USER_GET_QUEUE_NUM || request == VHOST_USER_GET_MAX_MEM_SLOTS ||
           request == VHOST_USER_GET_VRING_BASE;
}

static VfsQueue *msg_queue(VfsDevice *dev, const VhostUserMsg *msg, guint index, GError **error)
{
    if (index >= dev->nqueues) {
        msg_fail(error, msg, "queue %u does not exist (the device has %u)", index,
                 dev->nqueues);
        return NULL;
    }
    return &dev->queues[index];
}

/* With dev->lock held for writing: re-translates the rings after a memory table change. */
static void queues_remap(VfsDevice *dev)
{
    for (guint i = 0; i < dev->nqueues; i++) {
        VfsQueue *q = &dev->queues[i];
        g_autoptr(GError) err = NULL;
        if (q->addr_set &&
            !vfs_vq_map(&q->vq, dev->mem, q->desc_uva, q->avail_uva, q->used_uva, &err)) {
            q->vq.desc = NULL;
            q->vq.avail = NULL;
            q->vq.used = NULL;
            q->vq.broken = TRUE;
            g_warning("virtqueue %u is broken after a memory table change: %s", i,
                      err->message);
        }
    }
}

static void mem_replace(VfsDevice *dev, VfsGuestMem *mem)
{
    g_rw_lock_writer_lock(&dev->lock);
    VfsGuestMem *old = dev->mem;
    dev->mem = mem;
    queues_remap(dev);
    g_rw_lock_writer_unlock(&dev->lock);
    vfs_guest_mem_unref(old);
}

static gboolean handle_set_mem_table(VfsDevice *dev, VhostUserMsg *msg, GError **error)
{
    g_autoptr(VfsGuestMem) mem = vfs_guest_mem_new();

    for (guint i = 0; i < msg->payload.mem.nregions; i++) {
        const VhostUserMemRegion *r = &msg->payload.mem.regions[i];
        VfsMemRegionDesc d = { r->gpa, r->size, r->uva, r->mmap_offset };
        VfsGuestMem *next = vfs_guest_mem_add(mem, &d, msg->fds[i], error);
        if (!next) {
            return FALSE;
        }
        vfs_guest_mem_unref(mem);
        mem = next;
    }
    mem_replace(dev, g_steal_pointer(&mem));
    return TRUE;
}

static gboolean handle_mem_reg(VfsDevice *dev, VhostUserMsg *msg, GError **error)
{
    const VhostUserMemRegion *r = &msg->payload.reg.region;
    VfsMemRegionDesc d = { r->gpa, r->size, r->uva, r->mmap_offset };
    VfsGuestMem *mem;

    /* Only the message thread changes dev->mem: reading it here needs no lock. */
    if (msg->hdr.request == VHOST_USER_ADD_MEM_REG) {
        mem = vfs_guest_mem_add(dev->mem, &d, msg->fds[0], error);
    } else {
        mem = vfs_guest_mem_remove(dev->mem, &d, error);
    }
    if (!mem) {
        return FALSE;
    }
    mem_replace(dev, mem);
    return TRUE;
}

static gboolean handle_vring_fd(VfsDevice *dev, VhostUserMsg *msg, GError **error)
{
    guint64 v = msg->payload.u64;
    VfsQueue *q = msg_queue(dev, msg, v & VHOST_USER_VRING_IDX_MASK, error);
    int fd = -1, old;

    if (!q) {
        return FALSE;
    }
    if (v & ~(guint64)(VHOST_USER_VRING_IDX_MASK | VHOST_USER_VRING_NOFD_MASK)) {
        return msg_fail(error, msg, "unknown flags in 0x%" G_GINT64_MODIFIER "x", v);
    }
    if (!(v & VHOST_USER_VRING_NOFD_MASK)) {
        fd = vhost_user_msg_steal_fd(msg, 0);
        /* A queue thread must never block on a notifier that is not an eventfd. */
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
            close(fd);
            return msg_fail(error, msg, "the fd cannot be made non-blocking");
        }
    }
    switch (msg->hdr.request) {
    case VHOST_USER_SET_VRING_KICK:
        if (fd < 0) {
            return msg_fail(error, msg, "polling a queue without a kick fd is not supported");
        }
        /* A new kick fd restarts the queue thread with it. */
        queue_stop(q);
        g_rw_lock_writer_lock(&dev->lock);
        old = q->kick_fd;
        q->kick_fd = fd;
        g_rw_lock_writer_unlock(&dev->lock);
        fd_close(&old);
        return queue_maybe_start(q, error);
    case VHOST_USER_SET_VRING_CALL:
        g_rw_lock_writer_lock(&dev->lock);
        old = q->call_fd;
        q->call_fd = fd;
        g_rw_lock_writer_unlock(&dev->lock);
        break;
    default:
        g_rw_lock_writer_lock(&dev->lock);
        old = q->err_fd;
        q->err_fd = fd;
        g_rw_lock_writer_unlock(&dev->lock);
        break;
    }
    fd_close(&old);
    return TRUE;
}

static gboolean handle_vring_addr(VfsDevice *dev, const VhostUserMsg *msg, GError **error)
{
    const VhostUserVringAddr *a = &msg->payload.addr;
    VfsQueue *q = msg_queue(dev, msg, a->index, error);
    gboolean ok;

    if (!q) {
        return FALSE;
    }
    if (q->thread) {
        if (q->addr_set && a->desc == q->desc_uva && a->avail == q->avail_uva &&
            a->used == q->used_uva) {
            return TRUE; /* only the log flag changed: nothing to do */
        }
        return msg_fail(error, msg, "queue %u is running", a->index);
    }
    g_rw_lock_writer_lock(&dev->lock);
    ok = vfs_vq_map(&q->vq, dev->mem, a->desc, a->avail, a->used, error);
    if (ok) {
        q->addr_set = TRUE;
        q->desc_uva = a->desc;
        q->avail_uva = a->avail;
        q->used_uva = a->used;
        q->vq.used_idx = vfs_vq_read_used_idx(&q->vq);
        q->vq.signalled_used_valid = FALSE;
        q->vq.broken = FALSE;
    }
    g_rw_lock_writer_unlock(&dev->lock);
    return ok && queue_maybe_start(q, error);
}

static gboolean handle_vring_state(VfsDevice *dev, const VhostUserMsg *msg, GError **error)
{
    VhostUserVringState s = msg->payload.state;
    VfsQueue *q = msg_queue(dev, msg, s.index, error);

    if (!q) {
        return FALSE;
    }
    switch (msg->hdr.request) {
    case VHOST_USER_SET_VRING_NUM:
        if (q->thread) {
            return msg_fail(error, msg, "queue %u is running", s.index);
        }
        if (s.num == 0 || s.num > VFS_VQ_MAX_SIZE || (s.num & (s.num - 1))) {
            return msg_fail(error, msg, "queue size %u is not a power of 2 up to %d", s.num,
                            VFS_VQ_MAX_SIZE);
        }
        g_rw_lock_writer_lock(&dev->lock);
        q->vq.num = s.num;
        /* The rings must be translated again for the new size. */
        q->addr_set = FALSE;
        q->vq.desc = NULL;
        q->vq.avail = NULL;
        q->vq.used = NULL;
        g_rw_lock_writer_unlock(&dev->lock);
        return TRUE;
    case VHOST_USER_SET_VRING_BASE:
        if (q->thread) {
            return msg_fail(error, msg, "queue %u is running", s.index);
        }
        if (s.num > G_MAXUINT16) {
            return msg_fail(error, msg, "base %u does not fit a split queue", s.num);
        }
        g_rw_lock_writer_lock(&dev->lock);
        q->vq.last_avail_idx = s.num;
        q->vq.broken = FALSE;
        g_rw_lock_writer_unlock(&dev->lock);
        return TRUE;
    case VHOST_USER_GET_VRING_BASE: {
        /* Stop first, without the lock: the queue and pool threads need it to finish. */
        queue_stop(q);
        g_rw_lock_writer_lock(&dev->lock);
        VhostUserVringState r = { s.index, q->vq.last_avail_idx };
        fd_close(&q->kick_fd);
        fd_close(&q->call_fd);
        g_rw_lock_writer_unlock(&dev->lock);
        return reply(dev, msg, &r, sizeof(r));
    }
    default: /* SET_VRING_ENABLE */
        if (!(dev->features & (G_GUINT64_CONSTANT(1) << VHOST_USER_F_PROTOCOL_FEATURES))) {
            return msg_fail(error, msg, "VHOST_USER_F_PROTOCOL_FEATURES is not negotiated");
        }
        if (s.num > 1) {
            return msg_fail(error, msg, "state %u is neither 0 nor 1", s.num);
        }
        g_rw_lock_writer_lock(&dev->lock);
        q->enabled = s.num;
        g_rw_lock_writer_unlock(&dev->lock);
        if (s.num) {
            fd_signal(q->wake_fd);
        }
        return TRUE;
    }
}

static gboolean handle_set_features(VfsDevice *dev, const VhostUserMsg *msg, GError **error)
{
    guint64 v = msg->payload.u64;

    if (v & ~OFFERED_FEATURES) {
        return msg_fail(error, msg, "features 0x%" G_GINT64_MODIFIER "x were not offered",
                        v & ~OFFERED_FEATURES);
    }
    g_rw_lock_writer_lock(&dev->lock);
    dev->features = v;
    for (guint i = 0; i < dev->nqueues; i++) {
        VfsQueue *q = &dev->queues[i];
        q->vq.event_idx = !!(v & (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_EVENT_IDX));
        q->vq.indirect = !!(v & (G_GUINT64_CONSTANT(1) << VIRTIO_RING_F_INDIRECT_DESC));
        /* Without protocol features, rings are enabled as soon as they start. */
        if (!(v & (G_GUINT64_CONSTANT(1) << VHOST_USER_F_PROTOCOL_FEATURES))) {
            q->enabled = TRUE;
        }
    }
    g_rw_lock_writer_unlock(&dev->lock);
    return TRUE;
}

/* Returns FALSE with @error when the request is refused. */
static gboolean msg_dispatch(VfsDevice *dev, VhostUserMsg *msg, GError **error)
{
    if (!msg_check(msg, error)) {
        return FALSE;
    }
    switch (msg->hdr.request) {
    case VHOST_USER_GET_FEATURES:
        return reply_u64(dev, msg, OFFERED_FEATURES);
    case VHOST_USER_SET_FEATURES:
        return handle_set_features(dev, msg, error);
    case VHOST_USER_GET_PROTOCOL_FEATURES:
        return reply_u64(dev, msg, OFFERED_PROTOCOL_FEATURES);
    case VHOST_USER_SET_PROTOCOL_FEATURES:
        if (msg->payload.u64 & ~OFFERED_PROTOCOL_FEATURES) {
            return msg_fail(error, msg, "protocol features 0x%" G_GINT64_MODIFIER
                            "x were not offered", msg->payload.u64 & ~OFFERED_PROTOCOL_FEATURES);
        }
        dev->protocol_features = msg->payload.u64;
        return TRUE;
    case VHOST_USER_SET_OWNER:
        return TRUE;
    case VHOST_USER_RESET_OWNER: {
        guint64 pf = dev->protocol_features;
        device_reset(dev);
        dev->protocol_features = pf; /* so that this very request still gets its ack */
        return TRUE;
    }
    case VHOST_USER_GET_QUEUE_NUM:
        return reply_u64(dev, msg, dev->nqueues);
    case VHOST_USER_GET_MAX_MEM_SLOTS:
        return reply_u64(dev, msg, VFS_MEM_MAX_SLOTS);
    case VHOST_USER_SET_MEM_TABLE:
        return handle_set_mem_table(dev, msg, error);
    case VHOST_USER_ADD_MEM_REG:
    case VHOST_USER_REM_MEM_REG:
        return handle_mem_reg(dev, msg, error);
    case VHOST_USER_SET_VRING_ADDR:
        return handle_vring_addr(dev, msg, error);
    case VHOST_USER_SET_VRING_KICK:
    case VHOST_USER_SET_VRING_CALL:
    case VHOST_USER_SET_VRING_ERR:
        return handle_vring_fd(dev, msg, error);
    default:
        return handle_vring_state(dev, msg, error);
    }
}

static gboolean message_loop(VfsDevice *dev, GError **error)
{
    VhostUserMsg *msg = g_new0(VhostUserMsg, 1);
    gboolean ok = TRUE;

    for (;;) {
        g_autoptr(GError) err = NULL;
        int rc = vhost_user_msg_read(dev->sock, msg, error);
        if (rc <= 0) {
            ok = rc == 0;
            break;
        }
        g_debug("vhost-user %s (%u bytes, %u fds)", vhost_user_request_name(msg->hdr.request),
                msg->hdr.size, msg->nfds);
        gboolean done = msg_dispatch(dev, msg, &err);
        vhost_user_msg_close_fds(msg);
        if (!done && !dev->send_error) {
            /* Refused, not fatal: the front-end hears of it through REPLY_ACK if it asked. */
            g_message("%s", err->message);
        }
        if (!request_has_reply(msg->hdr.request) &&
            (msg->hdr.flags & VHOST_USER_NEED_REPLY_MASK) &&
            (dev->protocol_features & (G_GUINT64_CONSTANT(1) << VHOST_USER_PROTOCOL_F_REPLY_ACK))) {
            reply_u64(dev, msg, done ? 0 : 1);
        }
        if (dev->send_error) {
            g_propagate_error(error, g_steal_pointer(&dev->send_error));
            ok = FALSE;
            break;
        }
    }
    g_free(msg);
    return ok;
}

gboolean vfs_device_serve(VfsDevice *dev, int sock, GError **error)
{
    g_mutex_lock(&dev->conn_lock);
    dev->sock = sock;
    g_mutex_unlock(&dev->conn_lock);

    gboolean ok = message_loop(dev, error);
    /* Every queue thread is joined and every pooled request finished before state is freed. */
    device_reset(dev);

    g_mutex_lock(&dev->conn_lock);
    close(dev->sock);
    dev->sock = -1;
    g_mutex_unlock(&dev->conn_lock);
    return ok;
}

typedef struct {
    VfsDevice *dev;
    int sock;
    GError *error;
} ServeArgs;

static gpointer serve_thread(gpointer data)
{
    ServeArgs *a = data;
    vfs_device_serve(a->dev, a->sock, &a->error);
    return a;
}

gboolean vfs_device_start(VfsDevice *dev, int sock, GError **error)
{
    ServeArgs *a = g_new0(ServeArgs, 1);

    g_return_val_if_fail(dev->msg_thread == NULL, FALSE);
    a->dev = dev;
    a->sock = sock;
    /* Publish the socket now so that an early vfs_device_stop() finds it. */
    g_mutex_lock(&dev->conn_lock);
    dev->sock = sock;
    g_mutex_unlock(&dev->conn_lock);
    dev->msg_thread = g_thread_try_new("vfs-vhost-user", serve_thread, a, error);
    if (!dev->msg_thread) {
        g_mutex_lock(&dev->conn_lock);
        dev->sock = -1;
        g_mutex_unlock(&dev->conn_lock);
        close(sock);
        g_free(a);
        return FALSE;
    }
    return TRUE;
}

gboolean vfs_device_wait(VfsDevice *dev, GError **error)
{
    if (!dev->msg_thread) {
        return TRUE;
    }
    ServeArgs *a = g_thread_join(dev->msg_thread);
    dev->msg_thread = NULL;
    gboolean ok = a->error == NULL;
    if (a->error) {
        g_propagate_error(error, a->error);
    }
    g_free(a);
    return ok;
}

void vfs_device_stop(VfsDevice *dev)
{
    g_mutex_lock(&dev->conn_lock);
    if (dev->sock >= 0) {
        shutdown(dev->sock, SHUT_RDWR);
    }
    g_mutex_unlock(&dev->conn_lock);
    vfs_device_wait(dev, NULL);
}
