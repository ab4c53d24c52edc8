/* What fs.c and the FUSE op handlers (fuse-ops-*.c) share: the filesystem, requests, replies. */
#pragma once

#include "fs-handler.h"
#include "fuse-buf.h"
#include "inode.h"

#include <linux/fuse.h>
#include <sys/stat.h>

/* Largest WRITE payload and READ reply we negotiate (FUSE_MAX_PAGES pages of 4 KiB). */
#define VFS_MAX_WRITE (1024 * 1024)
#define VFS_MAX_PAGES (VFS_MAX_WRITE / 4096)

/* An open file or directory (the FUSE fh). */
typedef struct {
    gint refs; /* atomic: the table's reference plus requests in flight */
    int fd;
    gboolean is_dir;
    GMutex dir_lock; /* protects the directory fd's offset between lseek and getdents */
} VfsHandle;

struct VfsFs {
    char *shared_dir;
    VfsCacheMode cache;
    gboolean readonly;
    guint max_open_fds;
    gint open_fds;     /* atomic: inode fds plus file handle fds */
    int proc_self_fd;  /* /proc/self/fd, to reopen O_PATH fds without building paths */
    mode_t umask;      /* the process umask, undone on files the guest creates */
    gboolean as_root;  /* whether creating files as the guest's uid/gid is possible */
    gint initialized;  /* atomic: INIT done and no DESTROY since */
    guint64 timeout_ns; /* entry and attribute cache timeout the cache mode asks for */
    VfsInodeTable *inodes;

    GRWLock handles_lock; /* protects handles and next_fh */
    GHashTable *handles;  /* guint64 fh -> VfsHandle */
    guint64 next_fh;
};

typedef struct {
    VfsFs *fs;
    struct fuse_in_header hdr; /* our copy */
    VfsIn args;                /* the request after the header */
    const struct iovec *in;    /* the reply buffers */
    unsigned in_n;
    size_t in_size;
} VfsReq;

/* Reply helpers: each returns the byte count written (0 when not even a header fits). */
size_t vfs_reply_err(VfsReq *r, int err);
size_t vfs_reply(VfsReq *r, const void *payload, size_t len);

/* fd accounting against max_open_fds: reserve before an open, release on close or failure. */
gboolean vfs_fd_reserve(VfsFs *fs);
void vfs_fd_release(VfsFs *fs);

/* Validates one path component from the guest: -EINVAL or -ENAMETOOLONG, 0 when fine. */
int vfs_name_check(const char *name);

/* Opens @name in @dir as a new inode (O_PATH | O_NOFOLLOW) and fills @e; -errno on failure. */
int vfs_do_lookup(VfsFs *fs, VfsInode *dir, const char *name, struct fuse_entry_out *e);
/* Fills a fuse_entry_out for an inode already looked up. */
void vfs_fill_entry(VfsFs *fs, VfsInode *inode, const struct stat *st, struct fuse_entry_out *e);
void vfs_fill_attr(const struct stat *st, struct fuse_attr *a);
int vfs_stat_inode(VfsInode *inode, struct stat *st);
/* Reopens an inode's O_PATH fd with real open flags through /proc/self/fd. */
int vfs_reopen(VfsFs *fs, VfsInode *inode, int flags);

/* File handles. */
guint64 vfs_handle_add(VfsFs *fs, int fd, gboolean is_dir);
VfsHandle *vfs_handle_get(VfsFs *fs, guint64 fh);
void vfs_handle_put(VfsFs *fs, VfsHandle *h);
/* RELEASE/RELEASEDIR: drops the table's reference; FALSE when @fh is unknown. */
gboolean vfs_handle_remove(VfsFs *fs, guint64 fh);
void vfs_handles_clear(VfsFs *fs);

/* Switches this thread's fs uid/gid to the caller's for creating files (when root). */
typedef struct {
    gboolean switched;
} VfsCred;
void vfs_cred_enter(VfsReq *r, VfsCred *c);
void vfs_cred_leave(VfsCred *c);

/* Op handlers: each returns the reply length (see vfs_fs_handle). */
typedef size_t (*VfsOpFunc)(VfsReq *r);

size_t vfs_op_lookup(VfsReq *r);
size_t vfs_op_forget(VfsReq *r);
size_t vfs_op_batch_forget(VfsReq *r);
size_t vfs_op_getattr(VfsReq *r);
size_t vfs_op_setattr(VfsReq *r);
size_t vfs_op_readlink(VfsReq *r);
size_t vfs_op_symlink(VfsReq *r);
size_t vfs_op_mkdir(VfsReq *r);
size_t vfs_op_unlink(VfsReq *r);
size_t vfs_op_rmdir(VfsReq *r);
size_t vfs_op_rename(VfsReq *r);
size_t vfs_op_rename2(VfsReq *r);
size_t vfs_op_statfs(VfsReq *r);
size_t vfs_op_access(VfsReq *r);

size_t vfs_op_open(VfsReq *r);
size_t vfs_op_create(VfsReq *r);
size_t vfs_op_read(VfsReq *r);
size_t vfs_op_write(VfsReq *r);
size_t vfs_op_flush(VfsReq *r);
size_t vfs_op_release(VfsReq *r);
size_t vfs_op_fsync(VfsReq *r);

size_t vfs_op_opendir(VfsReq *r);
size_t vfs_op_readdir(VfsReq *r);
size_t vfs_op_readdirplus(VfsReq *r);
size_t vfs_op_releasedir(VfsReq *r);
