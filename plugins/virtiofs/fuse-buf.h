/* Copying FUSE requests out of, and replies into, guest iovecs split in any way. */
#pragma once

#include <glib.h>
#include <stddef.h>
#include <sys/uio.h>

/*
 * All helpers are position based and never keep pointers into guest memory beyond a call:
 * the guest may rewrite its buffers at any time, so every header is copied out and checked
 * in the copy.
 */

/* Sum of the iovec lengths, saturated at G_MAXSIZE. */
size_t vfs_iov_size(const struct iovec *iov, unsigned n);

/* Copies @len bytes starting at byte @off of the iovecs to @dst; FALSE when they are short. */
gboolean vfs_iov_read(const struct iovec *iov, unsigned n, size_t off, void *dst, size_t len);

/* Copies @len bytes from @src to byte @off of the iovecs; FALSE when they are short. */
gboolean vfs_iov_write(const struct iovec *iov, unsigned n, size_t off, const void *src,
                       size_t len);

/*
 * Describes at most @len bytes starting at byte @off of the iovecs as at most @max iovecs in
 * @dst (no copy: for preadv/pwritev). Returns the number of iovecs; *@got is the byte count,
 * which is less than @len when the iovecs (or @max) run out.
 */
unsigned vfs_iov_slice(const struct iovec *iov, unsigned n, size_t off, size_t len,
                       struct iovec *dst, unsigned max, size_t *got);

/* A cursor over the device-readable part of a request, bounded by fuse_in_header.len. */
typedef struct {
    const struct iovec *iov;
    unsigned n;
    size_t pos;   /* the next byte to read */
    size_t limit; /* bytes of the request (<= the iovecs' size) */
} VfsIn;

void vfs_in_init(VfsIn *in, const struct iovec *iov, unsigned n, size_t limit);
/* Bytes left in the request after the cursor. */
size_t vfs_in_left(const VfsIn *in);
/* Copies the next @len bytes and advances; FALSE (cursor unchanged) when the request is short. */
gboolean vfs_in_read(VfsIn *in, void *dst, size_t len);
/*
 * Copies a NUL-terminated string of at most @cap - 1 characters and advances past its NUL.
 * Returns 0, -EINVAL when the request ends before a NUL, -ENAMETOOLONG when no NUL comes
 * within @cap bytes.
 */
int vfs_in_read_str(VfsIn *in, char *dst, size_t cap);
