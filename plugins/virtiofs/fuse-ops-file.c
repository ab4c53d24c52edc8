/* FUSE ops on open files: open, create, zero-copy read and write, flush, fsync, release. */
#include "fs-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Open flags the guest may pass through; the rest (O_CREAT, O_NOFOLLOW, O_PATH...) are ours. */
#define VFS_OPEN_FLAGS (O_ACCMODE | O_APPEND | O_TRUNC | O_SYNC | O_DSYNC | O_NOATIME)

/* Iovecs on the stack for the common case; bigger chains take the heap. */
#define VFS_STACK_IOVS 64

static guint32 open_reply_flags(VfsFs *fs)
{
    switch (fs->cache) {
    case VFS_CACHE_NEVER:
        return FOPEN_DIRECT_IO;
    case VFS_CACHE_ALWAYS:
        return FOPEN_KEEP_CACHE;
    default:
        return 0;
    }
}

static gboolean flags_write(guint32 flags)
{
    return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
}

size_t vfs_op_open(VfsReq *r)
{
    struct fuse_open_in in;
    struct fuse_open_out out;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    if (r->fs->readonly && flags_write(in.flags)) {
        return vfs_reply_err(r, EROFS);
    }
    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (inode == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    int fd = -ENFILE;
    if (S_ISDIR(inode->type)) {
        fd = -EISDIR;
    } else if (vfs_fd_reserve(r->fs)) {
        fd = vfs_reopen(r->fs, inode, (int)(in.flags & VFS_OPEN_FLAGS));
        if (fd < 0) {
            vfs_fd_release(r->fs);
        }
    }
    vfs_inode_put(r->fs->inodes, inode);
    if (fd < 0) {
        return vfs_reply_err(r, -fd);
    }
    memset(&out, 0, sizeof(out));
    out.fh = vfs_handle_add(r->fs, fd, FALSE);
    out.open_flags = open_reply_flags(r->fs);
    return vfs_reply(r, &out, sizeof(out));
}

/* The error for opening a non-regular file through CREATE (kernel-style errnos). */
static int not_regular_error(mode_t mode)
{
    return S_ISDIR(mode) ? -EISDIR : S_ISLNK(mode) ? -ELOOP : -EACCES;
}

/*
 * Creates (or, without O_EXCL, opens) @name in @dir. Sets *@fd to the open file and *@path to
 * an O_PATH fd of the same file; both fds were reserved by the caller. -errno on failure.
 */
static int create_open(VfsReq *r, VfsInode *dir, const char *name,
                       const struct fuse_create_in *in, int *fd, int *path)
{
    VfsFs *fs = r->fs;
    int flags = (int)(in->flags & VFS_OPEN_FLAGS);
    mode_t mode = in->mode & 07777;
    char proc_name[24];
    VfsCred cred;

    /* Always O_EXCL first, so that we know whether the file is ours to chmod. */
    vfs_cred_enter(r, &cred);
    *fd = openat(dir->fd, name, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    int err = *fd < 0 ? -errno : 0;
    if (err == 0 && (mode & fs->umask) != 0) {
        fchmod(*fd, mode);
    }
    vfs_cred_leave(&cred);

    if (err == 0) {
        snprintf(proc_name, sizeof(proc_name), "%d", *fd);
        *path = openat(fs->proc_self_fd, proc_name, O_PATH | O_CLOEXEC);
        if (*path < 0) {
            err = -errno;
            close(*fd);
        }
        return err;
    }
    if (err != -EEXIST || (in->flags & O_EXCL)) {
        return err;
    }
    /* An existing file: pin it with O_PATH, check its type, then open it for real. */
    *path = openat(dir->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (*path < 0) {
        return -errno;
    }
    struct stat st;
    if (fstatat(*path, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        err = -errno;
    } else if (!S_ISREG(st.st_mode)) {
        err = not_regular_error(st.st_mode);
    } else {
        snprintf(proc_name, sizeof(proc_name), "%d", *path);
        *fd = openat(fs->proc_self_fd, proc_name, flags | O_CLOEXEC);
        err = *fd < 0 ? -errno : 0;
    }
    if (err < 0) {
        close(*path);
    }
    return err;
}

size_t vfs_op_create(VfsReq *r)
{
    struct fuse_create_in in;
    char name[NAME_MAX + 1];
    struct {
        struct fuse_entry_out e;
        struct fuse_open_out o;
    } out;
    struct stat st;
    int fd = -1;
    int path = -1;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    int err = vfs_in_read_str(&r->args, name, sizeof(name));
    if (err == 0) {
        err = vfs_name_check(name);
    }
    if (err < 0) {
        return vfs_reply_err(r, -err);
    }
    VfsInode *dir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (dir == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    if (!S_ISDIR(dir->type)) {
        vfs_inode_put(r->fs->inodes, dir);
        return vfs_reply_err(r, ENOTDIR);
    }
    if (!vfs_fd_reserve(r->fs)) {
        vfs_inode_put(r->fs->inodes, dir);
        return vfs_reply_err(r, ENFILE);
    }
    if (!vfs_fd_reserve(r->fs)) {
        vfs_fd_release(r->fs);
        vfs_inode_put(r->fs->inodes, dir);
        return vfs_reply_err(r, ENFILE);
    }
    err = create_open(r, dir, name, &in, &fd, &path);
    vfs_inode_put(r->fs->inodes, dir);
    if (err == 0 && fstatat(path, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        err = -errno;
        close(fd);
        close(path);
    }
    if (err < 0) {
        vfs_fd_release(r->fs);
        vfs_fd_release(r->fs);
        return vfs_reply_err(r, -err);
    }
    VfsInode *inode = vfs_inode_lookup(r->fs->inodes, path, &st);
    vfs_fill_entry(r->fs, inode, &st, &out.e);
    vfs_inode_put(r->fs->inodes, inode);
    memset(&out.o, 0, sizeof(out.o));
    out.o.fh = vfs_handle_add(r->fs, fd, FALSE);
    out.o.open_flags = open_reply_flags(r->fs);
    return vfs_reply(r, &out, sizeof(out));
}

/* The open file for @fh, or NULL when unknown or a directory. */
static VfsHandle *file_handle(VfsFs *fs, guint64 fh)
{
    VfsHandle *h = vfs_handle_get(fs, fh);

    if (h != NULL && h->is_dir) {
        vfs_handle_put(fs, h);
        return NULL;
    }
    return h;
}

size_t vfs_op_read(VfsReq *r)
{
    struct fuse_read_in in;
    struct iovec stack_iov[VFS_STACK_IOVS];
    g_autofree struct iovec *heap_iov = NULL;
    struct iovec *iov = stack_iov;
    const size_t hlen = sizeof(struct fuse_out_header);

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    if (in.offset > (guint64)G_MAXINT64) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = file_handle(r->fs, in.fh);
    if (h == NULL) {
        return vfs_reply_err(r, EBADF);
    }
    size_t want = MIN(MIN((size_t)in.size, (size_t)VFS_MAX_WRITE), r->in_size - hlen);
    unsigned max = MIN(r->in_n, (unsigned)IOV_MAX);
    if (max > VFS_STACK_IOVS) {
        heap_iov = g_new(struct iovec, max);
        iov = heap_iov;
    }
    size_t got = 0;
    unsigned cnt = vfs_iov_slice(r->in, r->in_n, hlen, want, iov, max, &got);
    /* Zero copy: the file's bytes land straight in the guest's buffers. */
    ssize_t n = cnt > 0 ? preadv(h->fd, iov, (int)cnt, (off_t)in.offset) : 0;
    int err = n < 0 ? errno : 0;
    vfs_handle_put(r->fs, h);
    if (err != 0) {
        return vfs_reply_err(r, err);
    }
    struct fuse_out_header oh = {
        .len = (guint32)(hlen + (size_t)n),
        .error = 0,
        .unique = r->hdr.unique,
    };
    return vfs_iov_write(r->in, r->in_n, 0, &oh, hlen) ? oh.len : 0;
}

size_t vfs_op_write(VfsReq *r)
{
    struct fuse_write_in in;
    struct fuse_write_out out;
    struct iovec stack_iov[VFS_STACK_IOVS];
    g_autofree struct iovec *heap_iov = NULL;
    struct iovec *iov = stack_iov;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    if (in.size > VFS_MAX_WRITE || in.size > vfs_in_left(&r->args) ||
        in.offset > (guint64)G_MAXINT64) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = file_handle(r->fs, in.fh);
    if (h == NULL) {
        return vfs_reply_err(r, EBADF);
    }
    unsigned max = MIN(r->args.n, (unsigned)IOV_MAX);
    if (max > VFS_STACK_IOVS) {
        heap_iov = g_new(struct iovec, max);
        iov = heap_iov;
    }
    size_t got = 0;
    unsigned cnt = vfs_iov_slice(r->args.iov, r->args.n, r->args.pos, in.size, iov, max, &got);
    ssize_t n = 0;
    if (got < in.size) {
        n = -1;
        errno = EINVAL;
    } else if (cnt > 0) {
        /* Zero copy: straight from guest memory into the file. */
        n = pwritev(h->fd, iov, (int)cnt, (off_t)in.offset);
    }
    int err = n < 0 ? errno : 0;
    vfs_handle_put(r->fs, h);
    if (err != 0) {
        return vfs_reply_err(r, err);
    }
    memset(&out, 0, sizeof(out));
    out.size = (guint32)n;
    return vfs_reply(r, &out, sizeof(out));
}

size_t vfs_op_flush(VfsReq *r)
{
    struct fuse_flush_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = file_handle(r->fs, in.fh);
    if (h == NULL) {
        return vfs_reply_err(r, EBADF);
    }
    /* close() of a duplicate gives the host filesystem its flush-on-close (NFS, for one). */
    int err = 0;
    int dup_fd = fcntl(h->fd, F_DUPFD_CLOEXEC, 0);
    if (dup_fd < 0) {
        err = errno;
    } else if (close(dup_fd) < 0 && errno != EINTR) {
        err = errno;
    }
    vfs_handle_put(r->fs, h);
    return err != 0 ? vfs_reply_err(r, err) : vfs_reply(r, NULL, 0);
}

size_t vfs_op_release(VfsReq *r)
{
    struct fuse_release_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = file_handle(r->fs, in.fh);
    if (h == NULL) {
        return vfs_reply_err(r, EBADF);
    }
    vfs_handle_put(r->fs, h);
    return vfs_handle_remove(r->fs, in.fh) ? vfs_reply(r, NULL, 0) : vfs_reply_err(r, EBADF);
}

size_t vfs_op_fsync(VfsReq *r)
{
    struct fuse_fsync_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = vfs_handle_get(r->fs, in.fh);
    if (h == NULL) {
        return vfs_reply_err(r, EBADF);
    }
    int rc = (in.fsync_flags & FUSE_FSYNC_FDATASYNC) ? fdatasync(h->fd) : fsync(h->fd);
    int err = rc < 0 ? errno : 0;
    vfs_handle_put(r->fs, h);
    return err != 0 ? vfs_reply_err(r, err) : vfs_reply(r, NULL, 0);
}
