/* The plain file-descriptor transport under unix-socket JSON-RPC connections. */
#include "transport.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static gboolean
fd_io_error(GError **error, const char *what)
{
    int saved = errno;

    g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved), "%s failed: %s", what,
                g_strerror(saved));
    return FALSE;
}

static gssize
fd_read(BerthRpcTransport *t, void *buf, gsize len, GError **error)
{
    for (;;) {
        gssize n = recv(t->fd, buf, len, 0);

        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            fd_io_error(error, "recv");
            return -1;
        }
    }
}

static gssize
fd_write(BerthRpcTransport *t, const void *buf, gsize len, GError **error)
{
    for (;;) {
        /* MSG_NOSIGNAL: a peer that went away is an error for this connection, not SIGPIPE for
         * the daemon. */
        gssize n = send(t->fd, buf, len, MSG_NOSIGNAL);

        if (n >= 0) {
            return n;
        }
        if (errno != EINTR) {
            fd_io_error(error, "send");
            return -1;
        }
    }
}

static void
fd_close(BerthRpcTransport *t)
{
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}

static void
fd_free(BerthRpcTransport *t)
{
    fd_close(t);
    g_free(t->peer);
    g_free(t);
}

static const BerthRpcTransportOps fd_ops = {
    .read = fd_read,
    .write = fd_write,
    .close = fd_close,
    .free = fd_free,
};

BerthRpcTransport *
berth_rpc_transport_fd_new(int fd)
{
    BerthRpcTransport *t = g_new0(BerthRpcTransport, 1);
    struct ucred cred;
    socklen_t len = sizeof(cred);

    t->ops = &fd_ops;
    t->fd = fd;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && len == sizeof(cred)) {
        t->peer = g_strdup_printf("uid=%u gid=%u pid=%d", (unsigned) cred.uid,
                                  (unsigned) cred.gid, (int) cred.pid);
    } else {
        t->peer = g_strdup("unknown");
    }
    return t;
}
