/* Copying FUSE requests out of, and replies into, guest iovecs split in any way. */
#include "fuse-buf.h"

#include <errno.h>
#include <string.h>

size_t vfs_iov_size(const struct iovec *iov, unsigned n)
{
    size_t total = 0;

    for (unsigned i = 0; i < n; i++) {
        if (iov[i].iov_len > G_MAXSIZE - total) {
            return G_MAXSIZE;
        }
        total += iov[i].iov_len;
    }
    return total;
}

/* Finds the iovec holding byte @off; returns n when @off is at or past the end. */
static unsigned iov_seek(const struct iovec *iov, unsigned n, size_t *off)
{
    unsigned i = 0;

    while (i < n && *off >= iov[i].iov_len) {
        *off -= iov[i].iov_len;
        i++;
    }
    return i;
}

gboolean vfs_iov_read(const struct iovec *iov, unsigned n, size_t off, void *dst, size_t len)
{
    guint8 *d = dst;
    unsigned i = iov_seek(iov, n, &off);

    while (len > 0) {
        if (i >= n) {
            return FALSE;
        }
        size_t chunk = MIN(len, iov[i].iov_len - off);
        memcpy(d, (const guint8 *)iov[i].iov_base + off, chunk);
        d += chunk;
        len -= chunk;
        off = 0;
        i++;
    }
    return TRUE;
}

gboolean vfs_iov_write(const struct iovec *iov, unsigned n, size_t off, const void *src,
                       size_t len)
{
    const guint8 *s = src;
    unsigned i = iov_seek(iov, n, &off);

    /* Check the room first so that a short buffer gets no partial reply. */
    size_t room = 0;
    for (unsigned j = i; j < n && room < len; j++) {
        room += iov[j].iov_len - (j == i ? off : 0);
    }
    if (room < len) {
        return FALSE;
    }
    while (len > 0) {
        size_t chunk = MIN(len, iov[i].iov_len - off);
        memcpy((guint8 *)iov[i].iov_base + off, s, chunk);
        s += chunk;
        len -= chunk;
        off = 0;
        i++;
    }
    return TRUE;
}

unsigned vfs_iov_slice(const struct iovec *iov, unsigned n, size_t off, size_t len,
                       struct iovec *dst, unsigned max, size_t *got)
{
    unsigned i = iov_seek(iov, n, &off);
    unsigned count = 0;
    size_t total = 0;

    while (len > 0 && i < n && count < max) {
        size_t chunk = MIN(len, iov[i].iov_len - off);
        if (chunk > 0) {
            dst[count].iov_base = (guint8 *)iov[i].iov_base + off;
            dst[count].iov_len = chunk;
            count++;
            total += chunk;
            len -= chunk;
        }
        off = 0;
        i++;
    }
    *got = total;
    return count;
}

void vfs_in_init(VfsIn *in, const struct iovec *iov, unsigned n, size_t limit)
{
    in->iov = iov;
    in->n = n;
    in->pos = 0;
    in->limit = MIN(limit, vfs_iov_size(iov, n));
}

size_t vfs_in_left(const VfsIn *in)
{
    return in->limit - in->pos;
}

gboolean vfs_in_read(VfsIn *in, void *dst, size_t len)
{
    if (len > vfs_in_left(in) || !vfs_iov_read(in->iov, in->n, in->pos, dst, len)) {
        return FALSE;
    }
    in->pos += len;
    return TRUE;
}

int vfs_in_read_str(VfsIn *in, char *dst, size_t cap)
{
    size_t avail = MIN(vfs_in_left(in), cap);

    /* One copy, then the search runs on our copy, never on guest memory. */
    if (avail == 0 || !vfs_iov_read(in->iov, in->n, in->pos, dst, avail)) {
        return -EINVAL;
    }
    char *nul = memchr(dst, '\0', avail);
    if (nul == NULL) {
        return avail == cap ? -ENAMETOOLONG : -EINVAL;
    }
    in->pos += (size_t)(nul - dst) + 1;
    return 0;
}
