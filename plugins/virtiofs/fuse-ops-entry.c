/* FUSE ops on names and inodes: lookup, forget, attributes, links, directories, rename. */
#include "fs-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* Reads one path component from the request into @name (NAME_MAX + 1 bytes) and checks it. */
static int read_name(VfsReq *r, char *name)
{
    int err = vfs_in_read_str(&r->args, name, NAME_MAX + 1);

    return err < 0 ? err : vfs_name_check(name);
}

static size_t reply_put(VfsReq *r, VfsInode *inode, size_t len)
{
    vfs_inode_put(r->fs->inodes, inode);
    return len;
}

static size_t reply_errno_put(VfsReq *r, VfsInode *inode, int neg_err)
{
    vfs_inode_put(r->fs->inodes, inode);
    return neg_err < 0 ? vfs_reply_err(r, -neg_err) : vfs_reply(r, NULL, 0);
}

size_t vfs_op_lookup(VfsReq *r)
{
    char name[NAME_MAX + 1];
    struct fuse_entry_out e;
    int err = read_name(r, name);

    if (err < 0) {
        return vfs_reply_err(r, -err);
    }
    VfsInode *dir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (dir == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    err = vfs_do_lookup(r->fs, dir, name, &e);
    if (err < 0) {
        return reply_errno_put(r, dir, err);
    }
    return reply_put(r, dir, vfs_reply(r, &e, sizeof(e)));
}

size_t vfs_op_forget(VfsReq *r)
{
    struct fuse_forget_in in;

    if (vfs_in_read(&r->args, &in, sizeof(in))) {
        vfs_inode_forget(r->fs->inodes, r->hdr.nodeid, in.nlookup);
    }
    return 0;
}

size_t vfs_op_batch_forget(VfsReq *r)
{
    struct fuse_batch_forget_in in;
    struct fuse_forget_one one;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return 0;
    }
    /* The request length bounds the loop, whatever count says. */
    for (guint32 i = 0; i < in.count && vfs_in_read(&r->args, &one, sizeof(one)); i++) {
        vfs_inode_forget(r->fs->inodes, one.nodeid, one.nlookup);
    }
    return 0;
}

static size_t reply_attr(VfsReq *r, VfsInode *inode)
{
    struct fuse_attr_out out;
    struct stat st;
    int err = vfs_stat_inode(inode, &st);

    if (err < 0) {
        return reply_errno_put(r, inode, err);
    }
    memset(&out, 0, sizeof(out));
    out.attr_valid = r->fs->timeout_ns / 1000000000;
    out.attr_valid_nsec = (guint32)(r->fs->timeout_ns % 1000000000);
    vfs_fill_attr(&st, &out.attr);
    return reply_put(r, inode, vfs_reply(r, &out, sizeof(out)));
}

size_t vfs_op_getattr(VfsReq *r)
{
    struct fuse_getattr_in in;

    /* The O_PATH fd stats the same inode as any open fh, unlinked files included. */
    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    return inode == NULL ? vfs_reply_err(r, ESTALE) : reply_attr(r, inode);
}

/* Applies one SETATTR; -errno on the first failure. */
static int setattr_apply(VfsReq *r, VfsInode *inode, const struct fuse_setattr_in *in,
                         VfsHandle *h)
{
    VfsFs *fs = r->fs;
    char proc_name[24];

    snprintf(proc_name, sizeof(proc_name), "%d", inode->fd);
    if (in->valid & FATTR_MODE) {
        int rc;
        if (h != NULL) {
            rc = fchmod(h->fd, in->mode & 07777);
        } else if (S_ISLNK(inode->type)) {
            return -EOPNOTSUPP;
        } else {
            rc = fchmodat(fs->proc_self_fd, proc_name, in->mode & 07777, 0);
        }
        if (rc < 0) {
            return -errno;
        }
    }
    if (in->valid & (FATTR_UID | FATTR_GID)) {
        uid_t uid = (in->valid & FATTR_UID) ? in->uid : (uid_t)-1;
        gid_t gid = (in->valid & FATTR_GID) ? in->gid : (gid_t)-1;
        if (fchownat(inode->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
            return -errno;
        }
    }
    if (in->valid & FATTR_SIZE) {
        if (in->size > (guint64)G_MAXINT64) {
            return -EINVAL;
        }
        if (h != NULL) {
            if (ftruncate(h->fd, (off_t)in->size) < 0) {
                return -errno;
            }
        } else {
            if (!S_ISREG(inode->type)) {
                return S_ISDIR(inode->type) ? -EISDIR : -EINVAL;
            }
            if (!vfs_fd_reserve(fs)) {
                return -ENFILE;
            }
            int fd = vfs_reopen(fs, inode, O_WRONLY);
            if (fd < 0) {
                vfs_fd_release(fs);
                return fd;
            }
            int rc = ftruncate(fd, (off_t)in->size) < 0 ? -errno : 0;
            close(fd);
            vfs_fd_release(fs);
            if (rc < 0) {
                return rc;
            }
        }
    }
    if (in->valid & (FATTR_ATIME | FATTR_MTIME)) {
        struct timespec ts[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };
        if (in->valid & FATTR_ATIME) {
            ts[0].tv_sec = (time_t)in->atime;
            ts[0].tv_nsec = (in->valid & FATTR_ATIME_NOW) ? UTIME_NOW : in->atimensec;
        }
        if (in->valid & FATTR_MTIME) {
            ts[1].tv_sec = (time_t)in->mtime;
            ts[1].tv_nsec = (in->valid & FATTR_MTIME_NOW) ? UTIME_NOW : in->mtimensec;
        }
        int rc;
        if (h != NULL) {
            rc = futimens(h->fd, ts);
        } else if (S_ISLNK(inode->type)) {
            return -EOPNOTSUPP;
        } else {
            rc = utimensat(fs->proc_self_fd, proc_name, ts, 0);
        }
        if (rc < 0) {
            return -errno;
        }
    }
    return 0;
}

size_t vfs_op_setattr(VfsReq *r)
{
    struct fuse_setattr_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (inode == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    VfsHandle *h = NULL;
    if (in.valid & FATTR_FH) {
        h = vfs_handle_get(r->fs, in.fh);
        if (h == NULL || h->is_dir) {
            vfs_handle_put(r->fs, h);
            return reply_errno_put(r, inode, -EBADF);
        }
    }
    int err = setattr_apply(r, inode, &in, h);
    vfs_handle_put(r->fs, h);
    if (err < 0) {
        return reply_errno_put(r, inode, err);
    }
    return reply_attr(r, inode);
}

size_t vfs_op_readlink(VfsReq *r)
{
    char target[PATH_MAX];

    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (inode == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    if (!S_ISLNK(inode->type)) {
        return reply_errno_put(r, inode, -EINVAL);
    }
    ssize_t n = readlinkat(inode->fd, "", target, sizeof(target));
    if (n < 0) {
        return reply_errno_put(r, inode, -errno);
    }
    return reply_put(r, inode, vfs_reply(r, target, (size_t)n));
}

/* After a create: the reply entry of @name in @dir; a failed lookup answers with its error. */
static size_t reply_new_entry(VfsReq *r, VfsInode *dir, const char *name)
{
    struct fuse_entry_out e;
    int err = vfs_do_lookup(r->fs, dir, name, &e);

    if (err < 0) {
        return reply_errno_put(r, dir, err);
    }
    return reply_put(r, dir, vfs_reply(r, &e, sizeof(e)));
}

size_t vfs_op_symlink(VfsReq *r)
{
    char name[NAME_MAX + 1];
    g_autofree char *target = g_malloc(PATH_MAX);
    VfsCred cred;

    int err = read_name(r, name);
    if (err == 0) {
        /* The target is stored verbatim: the host never follows it (O_NOFOLLOW everywhere). */
        err = vfs_in_read_str(&r->args, target, PATH_MAX);
    }
    if (err < 0) {
        return vfs_reply_err(r, -err);
    }
    VfsInode *dir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (dir == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    vfs_cred_enter(r, &cred);
    int rc = symlinkat(target, dir->fd, name) < 0 ? -errno : 0;
    vfs_cred_leave(&cred);
    if (rc < 0) {
        return reply_errno_put(r, dir, rc);
    }
    return reply_new_entry(r, dir, name);
}

size_t vfs_op_mkdir(VfsReq *r)
{
    struct fuse_mkdir_in in;
    char name[NAME_MAX + 1];
    VfsCred cred;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    int err = read_name(r, name);
    if (err < 0) {
        return vfs_reply_err(r, -err);
    }
    VfsInode *dir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (dir == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    mode_t mode = in.mode & 07777;
    vfs_cred_enter(r, &cred);
    int rc = mkdirat(dir->fd, name, mode) < 0 ? -errno : 0;
    /* The guest applied its umask already; undo ours where it took bits away. */
    if (rc == 0 && (mode & r->fs->umask) != 0) {
        fchmodat(dir->fd, name, mode, AT_SYMLINK_NOFOLLOW);
    }
    vfs_cred_leave(&cred);
    if (rc < 0) {
        return reply_errno_put(r, dir, rc);
    }
    return reply_new_entry(r, dir, name);
}

static size_t remove_entry(VfsReq *r, int flags)
{
    char name[NAME_MAX + 1];
    int err = read_name(r, name);

    if (err < 0) {
        return vfs_reply_err(r, -err);
    }
    VfsInode *dir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (dir == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    return reply_errno_put(r, dir, unlinkat(dir->fd, name, flags) < 0 ? -errno : 0);
}

size_t vfs_op_unlink(VfsReq *r)
{
    return remove_entry(r, 0);
}

size_t vfs_op_rmdir(VfsReq *r)
{
    return remove_entry(r, AT_REMOVEDIR);
}

static size_t do_rename(VfsReq *r, guint64 newdir_id, guint32 flags)
{
    char oldname[NAME_MAX + 1];
    char newname[NAME_MAX + 1];

    int err = read_name(r, oldname);
    if (err == 0) {
        err = read_name(r, newname);
    }
    if (err < 0) {
        return vfs_reply_err(r, -err);
    }
    if (flags & ~(guint32)(RENAME_NOREPLACE | RENAME_EXCHANGE | RENAME_WHITEOUT)) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsInode *olddir = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (olddir == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    VfsInode *newdir = vfs_inode_get(r->fs->inodes, newdir_id);
    if (newdir == NULL) {
        return reply_errno_put(r, olddir, -ESTALE);
    }
    int rc = renameat2(olddir->fd, oldname, newdir->fd, newname, flags) < 0 ? -errno : 0;
    vfs_inode_put(r->fs->inodes, newdir);
    return reply_errno_put(r, olddir, rc);
}

size_t vfs_op_rename(VfsReq *r)
{
    struct fuse_rename_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    return do_rename(r, in.newdir, 0);
}

size_t vfs_op_rename2(VfsReq *r)
{
    struct fuse_rename2_in in;

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    return do_rename(r, in.newdir, in.flags);
}

size_t vfs_op_statfs(VfsReq *r)
{
    struct fuse_statfs_out out;
    struct statvfs sv;

    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (inode == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    if (fstatvfs(inode->fd, &sv) < 0) {
        return reply_errno_put(r, inode, -errno);
    }
    memset(&out, 0, sizeof(out));
    out.st.blocks = sv.f_blocks;
    out.st.bfree = sv.f_bfree;
    out.st.bavail = sv.f_bavail;
    out.st.files = sv.f_files;
    out.st.ffree = sv.f_ffree;
    out.st.bsize = (guint32)sv.f_bsize;
    out.st.namelen = (guint32)sv.f_namemax;
    out.st.frsize = (guint32)sv.f_frsize;
    return reply_put(r, inode, vfs_reply(r, &out, sizeof(out)));
}

size_t vfs_op_access(VfsReq *r)
{
    struct fuse_access_in in;
    char proc_name[24];

    if (!vfs_in_read(&r->args, &in, sizeof(in))) {
        return vfs_reply_err(r, EINVAL);
    }
    if (in.mask & ~(guint32)(R_OK | W_OK | X_OK)) {
        return vfs_reply_err(r, EINVAL);
    }
    VfsInode *inode = vfs_inode_get(r->fs->inodes, r->hdr.nodeid);
    if (inode == NULL) {
        return vfs_reply_err(r, ESTALE);
    }
    if (r->fs->readonly && (in.mask & W_OK)) {
        return reply_errno_put(r, inode, -EROFS);
    }
    snprintf(proc_name, sizeof(proc_name), "%d", inode->fd);
    int rc = faccessat(r->fs->proc_self_fd, proc_name, (int)in.mask, 0) < 0 ? -errno : 0;
    return reply_errno_put(r, inode, rc);
}
