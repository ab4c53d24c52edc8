/* The buffered gnutls pull functions: gnutls asks for 5 bytes of record header and then for
 * the body, two recv calls per record on a plain fd; here one recv serves both. */
#include "tls-io.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

static ssize_t
io_pull(gnutls_transport_ptr_t ptr, void *data, size_t size)
{
    BerthTlsIo *io = ptr;
    ssize_t n;

    if (io->len == 0 && size >= sizeof(io->buf)) {
        return recv(io->fd, data, size, 0); /* a large record: no copy */
    }
    if (io->len == 0) {
        n = recv(io->fd, io->buf, sizeof(io->buf), 0);
        if (n <= 0) {
            return n; /* errno is gnutls's to read */
        }
        io->off = 0;
        io->len = (gsize) n;
    }
    n = (ssize_t) MIN(size, io->len);
    memcpy(data, io->buf + io->off, (size_t) n);
    io->off += (gsize) n;
    io->len -= (gsize) n;
    return n;
}

/* gnutls waits here (blocking sessions with a timeout, and its checks for more data). */
static int
io_pull_timeout(gnutls_transport_ptr_t ptr, unsigned int ms)
{
    BerthTlsIo *io = ptr;
    struct pollfd pfd = {.fd = io->fd, .events = POLLIN};
    int n;

    if (io->len > 0) {
        return 1;
    }
    do {
        n = poll(&pfd, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int) MIN(ms, G_MAXINT));
    } while (n < 0 && errno == EINTR);
    return n;
}

void
berth_tls_io_attach(BerthTlsIo *io, gnutls_session_t session, int fd)
{
    io->fd = fd;
    io->off = io->len = 0;
    /* Sets gnutls's own writev push on @fd; then reads are taken over. */
    gnutls_transport_set_int(session, fd);
    gnutls_transport_set_ptr2(session, io, GINT_TO_POINTER(fd));
    gnutls_transport_set_pull_function(session, io_pull);
    gnutls_transport_set_pull_timeout_function(session, io_pull_timeout);
}

gboolean
berth_tls_io_pending(const BerthTlsIo *io, gnutls_session_t session)
{
    return io->len > 0 || gnutls_record_check_pending(session) > 0;
}
