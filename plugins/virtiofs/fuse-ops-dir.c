/* FUSE ops on open directories: opendir, readdir, readdirplus, releasedir. */
#include "fs-internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

size_t vfs_op_opendir(VfsReq *r)
{
    struct fuse_open_in in;
    struct fuse_open_out out;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (inode == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    int fd = -ENFILE;
    if (!S_ISDIR(inode->type)) {
        fd = -ENOTDIR;
    } else if (vfs_fd_reserve(r->fs)) {
        fd = vfs_reopen(r->fs, inode, O_RDONLY | O_DIRECTORY);
        if (fd < 0) {
            vfs_fd_release(r->fs);
        }
    }
    vfs_inode_put(r->fs->inodes, inode);
    if (fd < 0) {
        return vfs_reply_err(r, -fd);
    }
    memset(&out, 0, sizeof(out));
    out.fh = vfs_handle_add(r->fs, fd, TRUE);
    if (r->fs->cache == VFS_CACHE_ALWAYS) {
        out.open_flags = FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR;
    }
    return vfs_reply(r, &out, sizeof(out));
}

static gboolean is_dot_or_dotdot(const char *name)
{
    return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

/*
 * Fills @buf (@size bytes) with entries from the directory's cookie @offset on. Entries that do
 * not fit wait for the next call, which seeks back to them; for READDIRPLUS an entry is looked up
 * (one lookup count for the guest) only once it is sure to fit.
 */
static ssize_t fill_dir(VfsReq *r, VfsHandle *h, VfsInode *dir, guint64 offset, guint8 *buf,
                        size_t size, gboolean plus)
{
    guint8 dents[16384];
    size_t used = 0;

    if (lseek(h->fd, (off_t)offset, SEEK_SET) < 0) {
        return -errno;
    }
    for (;;) {
        ssize_t n = getdents64(h->fd, dents, sizeof(dents));
        if (n < 0) {
            return used > 0 ? (ssize_t)used : -errno;
        }
        if (n == 0) {
            return (ssize_t)used;
        }
        for (ssize_t pos = 0; pos < n;) {
            struct dirent64 *d = (struct dirent64 *)(dents + pos);
            pos += d->d_reclen;
            size_t namelen = strlen(d->d_name);
            size_t head = plus ? FUSE_NAME_OFFSET_DIRENTPLUS : FUSE_NAME_OFFSET;
            size_t rec = FUSE_DIRENT_ALIGN(head + namelen);
            if (used + rec > size) {
                return (ssize_t)used;
            }
            struct fuse_dirent *fd;
            if (plus) {
                struct fuse_direntplus *dp = (struct fuse_direntplus *)(buf + used);
                memset(&dp->entry_out, 0, sizeof(dp->entry_out));
                /* "." and ".." get node id 0: the guest neither caches nor counts them. */
                int err = 0;
                if (!is_dot_or_dotdot(d->d_name)) {
                    err = vfs_do_lookup(r->fs, dir, d->d_name, &dp->entry_out);
                }
                if (err == -ENOENT) {
                    continue; /* gone since getdents: leave it out */
                }
                if (err < 0) {
                    /* Stop before this entry; the next call starts again from it. */
                    return used > 0 ? (ssize_t)used : err;
                }
                fd = &dp->dirent;
            } else {
                fd = (struct fuse_dirent *)(buf + used);
            }
            fd->ino = d->d_ino;
            fd->off = (guint64)d->d_off;
            fd->namelen = (guint32)namelen;
            fd->type = d->d_type;
            memcpy(fd->name, d->d_name, namelen);
            memset(fd->name + namelen, 0, rec - head - namelen);
            used += rec;
        }
    }
}

static size_t do_readdir(VfsReq *r, gboolean plus)
{
    struct fuse_read_in in;
    const size_t hlen = sizeof(struct fuse_out_header);

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    if (in.offset > (guint64)G_MAXINT64) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = vfs_handle_get(r->fs, in.fh);
    if (h == NULL || !h->is_dir) {
        vfs_handle_put(r->fs, h);
        return vfs_reply_err(r, EBADF);
    }
    VfsInode *dir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (dir == NULL) {
        vfs_handle_put(r->fs, h);
        return vfs_reply_err(r, ESTALE);
    }
    size_t size = MIN(MIN((size_t)in.size, (size_t)VFS_MAX_WRITE), r->in_size - hlen);
    g_autofree guint8 *buf = g_malloc(MAX(size, 1));

    g_mutex_lock(&h->dir_lock);
    ssize_t n = fill_dir(r, h, dir, in.offset, buf, size, plus);
    g_mutex_unlock(&h->dir_lock);
    vfs_inode_put(r->fs->inodes, dir);
    vfs_handle_put(r->fs, h);
    if (n < 0) {
        return vfs_reply_err(r, (int)-n);
    }
    return vfs_reply(r, buf, (size_t)n);
}

size_t vfs_op_readdir(VfsReq *r)
{
    return do_readdir(r, FALSE);
}

size_t vfs_op_readdirplus(VfsReq *r)
{
    return do_readdir(r, TRUE);
}

size_t vfs_op_releasedir(VfsReq *r)
{
    struct fuse_release_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsHandle *h = vfs_handle_get(r->fs, in.fh);
    gboolean ok = h != NULL && h->is_dir;
    vfs_handle_put(r->fs, h);
    if (!ok || !vfs_handle_remove(r->fs, in.fh)) {
        return vfs_reply_err(r, EBADF);
    }
    return vfs_reply(r, NULL, 0);
}
