/* The FUSE passthrough filesystem: setup, request dispatch, INIT/DESTROY and shared helpers. */
#include "fs-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define OP_MODIFIES (1u << 0) /* refused on a read-only share */

typedef struct {
    VfsOpFunc fn;
    size_t reply_min; /* payload bytes the reply buffers must hold before the op runs */
    guint flags;
} VfsOpDesc;

static size_t op_init(VfsReq *r);
static size_t op_destroy(VfsReq *r);

/* Indexed by opcode; a NULL fn answers ENOSYS. */
static const VfsOpDesc ops[] = {
    [FUSE_LOOKUP] = { vfs_op_lookup, sizeof(struct fuse_entry_out), 0 },
    [FUSE_FORGET] = { vfs_op_forget, 0, 0 },
    [FUSE_GETATTR] = { vfs_op_getattr, sizeof(struct fuse_attr_out), 0 },
    [FUSE_SETATTR] = { vfs_op_setattr, sizeof(struct fuse_attr_out), OP_MODIFIES },
    [FUSE_READLINK] = { vfs_op_readlink, 0, 0 },
    [FUSE_SYMLINK] = { vfs_op_symlink, sizeof(struct fuse_entry_out), OP_MODIFIES },
    [FUSE_MKDIR] = { vfs_op_mkdir, sizeof(struct fuse_entry_out), OP_MODIFIES },
    [FUSE_UNLINK] = { vfs_op_unlink, 0, OP_MODIFIES },
    [FUSE_RMDIR] = { vfs_op_rmdir, 0, OP_MODIFIES },
    [FUSE_RENAME] = { vfs_op_rename, 0, OP_MODIFIES },
    [FUSE_OPEN] = { vfs_op_open, sizeof(struct fuse_open_out), 0 },
    [FUSE_READ] = { vfs_op_read, 0, 0 },
    [FUSE_WRITE] = { vfs_op_write, sizeof(struct fuse_write_out), OP_MODIFIES },
    [FUSE_STATFS] = { vfs_op_statfs, sizeof(struct fuse_statfs_out), 0 },
    [FUSE_RELEASE] = { vfs_op_release, 0, 0 },
    [FUSE_FSYNC] = { vfs_op_fsync, 0, 0 },
    [FUSE_FLUSH] = { vfs_op_flush, 0, 0 },
    [FUSE_INIT] = { op_init, 8, 0 },
    [FUSE_OPENDIR] = { vfs_op_opendir, sizeof(struct fuse_open_out), 0 },
    [FUSE_READDIR] = { vfs_op_readdir, 0, 0 },
    [FUSE_RELEASEDIR] = { vfs_op_releasedir, 0, 0 },
    [FUSE_FSYNCDIR] = { vfs_op_fsync, 0, 0 },
    [FUSE_ACCESS] = { vfs_op_access, 0, 0 },
    [FUSE_CREATE] = { vfs_op_create,
                      sizeof(struct fuse_entry_out) + sizeof(struct fuse_open_out),
                      OP_MODIFIES },
    [FUSE_DESTROY] = { op_destroy, 0, 0 },
    [FUSE_BATCH_FORGET] = { vfs_op_batch_forget, 0, 0 },
    [FUSE_READDIRPLUS] = { vfs_op_readdirplus, 0, 0 },
    [FUSE_RENAME2] = { vfs_op_rename2, 0, OP_MODIFIES },
};

/*
 * Flags we offer in INIT; the reply carries those the guest asked for too. ASYNC_DIO lets the
 * guest send the pieces of one large O_DIRECT request at once (virtio-fs caps a request at its
 * queue size in pages), which a thread pool then serves in parallel; AUTO_INVAL_DATA drops
 * cached pages of files whose mtime changed on the host.
 */
#define VFS_INIT_FLAGS                                                                         \
    (FUSE_ASYNC_READ | FUSE_ATOMIC_O_TRUNC | FUSE_BIG_WRITES | FUSE_DO_READDIRPLUS |           \
     FUSE_READDIRPLUS_AUTO | FUSE_PARALLEL_DIROPS | FUSE_MAX_PAGES | FUSE_ASYNC_DIO |          \
     FUSE_AUTO_INVAL_DATA)

static void handle_free(VfsFs *fs, VfsHandle *h)
{
    close(h->fd);
    vfs_fd_release(fs);
    g_mutex_clear(&h->dir_lock);
    g_free(h);
}

static guint id_hash(gconstpointer p)
{
    guint64 v = *(const guint64 *)p;

    return (guint)(v ^ (v >> 32));
}

static gboolean id_equal(gconstpointer a, gconstpointer b)
{
    return *(const guint64 *)a == *(const guint64 *)b;
}

/*
 * The built-in fd bound. A guest keeps one inode fd per file it has cached, so, as virtiofsd
 * does, the soft RLIMIT_NOFILE is first raised to the hard one; a quarter stays for the device
 * (eventfds, memory regions) and the host process.
 */
static guint default_max_open_fds(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 1024;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = { rl.rlim_max, rl.rlim_max };
        if (setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            rl = raised;
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (rlim_t)G_MAXINT) {
        return 1u << 20;
    }
    return (guint)MAX(64, rl.rlim_cur / 4 * 3);
}

VfsFs *vfs_fs_new(const VfsFsOptions *opts, GError **error)
{
    g_return_val_if_fail(opts != NULL && opts->shared_dir != NULL, NULL);

    if (opts->cache >= VFS_CACHE_LAST) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "cache mode %d is not one of never, auto, always", (int)opts->cache);
        return NULL;
    }
    int root = open(opts->shared_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
        int e = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                    "cannot open shared directory '%s': %s", opts->shared_dir, g_strerror(e));
        return NULL;
    }
    struct stat st;
    if (fstatat(root, "", &st, AT_EMPTY_PATH) < 0) {
        int e = errno;
        close(root);
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                    "cannot stat shared directory '%s': %s", opts->shared_dir, g_strerror(e));
        return NULL;
    }
    int proc = open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (proc < 0) {
        int e = errno;
        close(root);
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e),
                    "cannot open '/proc/self/fd' (is /proc mounted?): %s", g_strerror(e));
        return NULL;
    }

    VfsFs *fs = g_new0(VfsFs, 1);
    fs->shared_dir = g_strdup(opts->shared_dir);
    fs->cache = opts->cache;
    fs->readonly = opts->readonly;
    fs->max_open_fds = opts->max_open_fds ? opts->max_open_fds : default_max_open_fds();
    fs->proc_self_fd = proc;
    /* Read once at start: umask() can only be read by setting it. */
    fs->umask = umask(0);
    umask(fs->umask);
    fs->as_root = geteuid() == 0;
    fs->timeout_ns = fs->cache == VFS_CACHE_NEVER  ? 0
                     : fs->cache == VFS_CACHE_AUTO ? G_GUINT64_CONSTANT(1000000000)
                                                   : G_GUINT64_CONSTANT(86400000000000);
    fs->open_fds = 1;
    fs->inodes = vfs_inode_table_new(root, &st, &fs->open_fds);
    g_rw_lock_init(&fs->handles_lock);
    fs->handles = g_hash_table_new_full(id_hash, id_equal, g_free, NULL);
    fs->next_fh = 1;
    return fs;
}

void vfs_fs_free(VfsFs *fs)
{
    if (fs == NULL) {
        return;
    }
    vfs_handles_clear(fs);
    g_hash_table_unref(fs->handles);
    g_rw_lock_clear(&fs->handles_lock);
    vfs_inode_table_free(fs->inodes);
    close(fs->proc_self_fd);
    g_free(fs->shared_dir);
    g_free(fs);
}

size_t vfs_reply_err(VfsReq *r, int err)
{
    struct fuse_out_header h = {
        .len = sizeof(h),
        .error = -err,
        .unique = r->hdr.unique,
    };

    return vfs_iov_write(r->in, r->in_n, 0, &h, sizeof(h)) ? sizeof(h) : 0;
}

size_t vfs_reply(VfsReq *r, const void *payload, size_t len)
{
    struct fuse_out_header h = {
        .len = (guint32)(sizeof(h) + len),
        .error = 0,
        .unique = r->hdr.unique,
    };

    if (len > VFS_MAX_WRITE + 4096 || sizeof(h) + len > r->in_size) {
        return vfs_reply_err(r, EIO);
    }
    if (len > 0 && !vfs_iov_write(r->in, r->in_n, sizeof(h), payload, len)) {
        return vfs_reply_err(r, EIO);
    }
    return vfs_iov_write(r->in, r->in_n, 0, &h, sizeof(h)) ? h.len : 0;
}

gboolean vfs_fd_reserve(VfsFs *fs)
{
    if ((guint)g_atomic_int_add(&fs->open_fds, 1) >= fs->max_open_fds) {
        g_atomic_int_add(&fs->open_fds, -1);
        return FALSE;
    }
    return TRUE;
}

void vfs_fd_release(VfsFs *fs)
{
    g_atomic_int_add(&fs->open_fds, -1);
}

int vfs_name_check(const char *name)
{
    size_t len = strlen(name);

    if (len == 0 || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
        strcmp(name, "..") == 0) {
        return -EINVAL;
    }
    if (len > NAME_MAX) {
        return -ENAMETOOLONG;
    }
    return 0;
}

void vfs_fill_attr(const struct stat *st, struct fuse_attr *a)
{
    memset(a, 0, sizeof(*a));
    a->ino = st->st_ino;
    a->size = (guint64)st->st_size;
    a->blocks = (guint64)st->st_blocks;
    a->atime = (guint64)st->st_atim.tv_sec;
    a->mtime = (guint64)st->st_mtim.tv_sec;
    a->ctime = (guint64)st->st_ctim.tv_sec;
    a->atimensec = (guint32)st->st_atim.tv_nsec;
    a->mtimensec = (guint32)st->st_mtim.tv_nsec;
    a->ctimensec = (guint32)st->st_ctim.tv_nsec;
    a->mode = st->st_mode;
    a->nlink = (guint32)st->st_nlink;
    a->uid = st->st_uid;
    a->gid = st->st_gid;
    a->rdev = (guint32)st->st_rdev;
    a->blksize = (guint32)st->st_blksize;
}

void vfs_fill_entry(VfsFs *fs, VfsInode *inode, const struct stat *st, struct fuse_entry_out *e)
{
    memset(e, 0, sizeof(*e));
    e->nodeid = inode->nodeid;
    e->entry_valid = fs->timeout_ns / 1000000000;
    e->entry_valid_nsec = (guint32)(fs->timeout_ns % 1000000000);
    e->attr_valid = e->entry_valid;
    e->attr_valid_nsec = e->entry_valid_nsec;
    vfs_fill_attr(st, &e->attr);
}

int vfs_stat_inode(VfsInode *inode, struct stat *st)
{
    if (fstatat(inode->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        return -errno;
    }
    return 0;
}

int vfs_do_lookup(VfsFs *fs, VfsInode *dir, const char *name, struct fuse_entry_out *e)
{
    struct stat st;

    if (!S_ISDIR(dir->type)) {
        return -ENOTDIR;
    }
    if (!vfs_fd_reserve(fs)) {
        return -ENFILE;
    }
    /* O_NOFOLLOW: a symlink becomes a node of its own and is never followed on the host. */
    int fd = openat(dir->fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        vfs_fd_release(fs);
        return err;
    }
    if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
        int err = -errno;
        close(fd);
        vfs_fd_release(fs);
        return err;
    }
    VfsInode *inode = vfs_inode_lookup(fs->inodes, fd, &st);
    vfs_fill_entry(fs, inode, &st, e);
    vfs_inode_put(fs->inodes, inode);
    return 0;
}

int vfs_reopen(VfsFs *fs, VfsInode *inode, int flags)
{
    char name[24];

    /* Only regular files and directories: opening a device or FIFO would act on the host. */
    if (!S_ISREG(inode->type) && !S_ISDIR(inode->type)) {
        return S_ISLNK(inode->type) ? -ELOOP : -EACCES;
    }
    snprintf(name, sizeof(name), "%d", inode->fd);
    int fd = openat(fs->proc_self_fd, name, flags | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

guint64 vfs_handle_add(VfsFs *fs, int fd, gboolean is_dir)
{
    VfsHandle *h = g_new0(VfsHandle, 1);
    guint64 *key = g_new(guint64, 1);

    h->refs = 1;
    h->fd = fd;
    h->is_dir = is_dir;
    g_mutex_init(&h->dir_lock);
    g_rw_lock_writer_lock(&fs->handles_lock);
    *key = fs->next_fh++;
    g_hash_table_insert(fs->handles, key, h);
    g_rw_lock_writer_unlock(&fs->handles_lock);
    return *key;
}

VfsHandle *vfs_handle_get(VfsFs *fs, guint64 fh)
{
    g_rw_lock_reader_lock(&fs->handles_lock);
    VfsHandle *h = g_hash_table_lookup(fs->handles, &fh);
    if (h != NULL) {
        g_atomic_int_inc(&h->refs);
    }
    g_rw_lock_reader_unlock(&fs->handles_lock);
    return h;
}

void vfs_handle_put(VfsFs *fs, VfsHandle *h)
{
    if (h != NULL && g_atomic_int_dec_and_test(&h->refs)) {
        handle_free(fs, h);
    }
}

gboolean vfs_handle_remove(VfsFs *fs, guint64 fh)
{
    gpointer key = NULL;
    gpointer h = NULL;

    g_rw_lock_writer_lock(&fs->handles_lock);
    gboolean found = g_hash_table_steal_extended(fs->handles, &fh, &key, &h);
    g_rw_lock_writer_unlock(&fs->handles_lock);
    g_free(key);
    vfs_handle_put(fs, h);
    return found;
}

void vfs_handles_clear(VfsFs *fs)
{
    g_autoptr(GPtrArray) all = g_ptr_array_new();
    GHashTableIter it;
    gpointer v;

    g_rw_lock_writer_lock(&fs->handles_lock);
    g_hash_table_iter_init(&it, fs->handles);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        g_ptr_array_add(all, v);
    }
    g_hash_table_remove_all(fs->handles);
    g_rw_lock_writer_unlock(&fs->handles_lock);
    for (guint i = 0; i < all->len; i++) {
        vfs_handle_put(fs, all->pdata[i]);
    }
}

void vfs_cred_enter(VfsReq *r, VfsCred *c)
{
    c->switched = FALSE;
    if (!r->fs->as_root || (r->hdr.uid == 0 && r->hdr.gid == 0)) {
        return;
    }
    /* fsuid/fsgid are per thread on Linux (the raw syscalls, unlike glibc's setuid family). */
    syscall(SYS_setfsgid, r->hdr.gid);
    syscall(SYS_setfsuid, r->hdr.uid);
    c->switched = TRUE;
}

void vfs_cred_leave(VfsCred *c)
{
    if (c->switched) {
        syscall(SYS_setfsuid, 0);
        syscall(SYS_setfsgid, 0);
    }
}

static size_t op_init(VfsReq *r)
{
    struct fuse_init_in in;
    struct fuse_init_out out;

    memset(&in, 0, sizeof(in));
    /* Old guests send a shorter fuse_init_in; major and minor are always there. */
    if (vfs_in_left(&r->args) < 8 ||
        !vfs_in_read(&r->args, &in, MIN(sizeof(in), vfs_in_left(&r->args)))) {
        return vfs_reply_err(r, EINVAL);
    }
    if (in.major != FUSE_KERNEL_VERSION) {
        return vfs_reply_err(r, EPROTO);
    }
    /* A second INIT is a new session (a rebooted guest): the old one's nodes are gone. */
    if (g_atomic_int_get(&r->fs->initialized)) {
        vfs_inode_table_reset(r->fs->inodes);
        vfs_handles_clear(r->fs);
    }
    memset(&out, 0, sizeof(out));
    out.major = FUSE_KERNEL_VERSION;
    out.minor = FUSE_KERNEL_MINOR_VERSION;
    out.max_readahead = in.max_readahead;
    out.flags = in.flags & VFS_INIT_FLAGS;
    out.max_background = 64;
    out.congestion_threshold = 48;
    out.max_write = VFS_MAX_WRITE;
    out.time_gran = 1;
    out.max_pages = VFS_MAX_PAGES;
    g_atomic_int_set(&r->fs->initialized, 1);

    size_t len = in.minor < 5    ? FUSE_COMPAT_INIT_OUT_SIZE
                 : in.minor < 23 ? FUSE_COMPAT_22_INIT_OUT_SIZE
                                 : sizeof(out);
    return vfs_reply(r, &out, len);
}

static size_t op_destroy(VfsReq *r)
{
    g_atomic_int_set(&r->fs->initialized, 0);
    vfs_inode_table_reset(r->fs->inodes);
    vfs_handles_clear(r->fs);
    return vfs_reply(r, NULL, 0);
}

size_t vfs_fs_handle(VfsFs *fs, const struct iovec *out, unsigned out_n, const struct iovec *in,
                     unsigned in_n)
{
    VfsReq r = {
        .fs = fs,
        .in = in,
        .in_n = in_n,
        .in_size = vfs_iov_size(in, in_n),
    };
    size_t out_size = vfs_iov_size(out, out_n);

    if (!vfs_iov_read(out, out_n, 0, &r.hdr, sizeof(r.hdr))) {
        memset(&r.hdr, 0, sizeof(r.hdr));
        return vfs_reply_err(&r, EINVAL);
    }
    if (r.hdr.len < sizeof(r.hdr) || r.hdr.len > out_size) {
        return r.hdr.opcode == FUSE_FORGET || r.hdr.opcode == FUSE_BATCH_FORGET
                   ? 0
                   : vfs_reply_err(&r, EINVAL);
    }
    vfs_in_init(&r.args, out, out_n, r.hdr.len);
    r.args.pos = sizeof(r.hdr);

    guint32 op = r.hdr.opcode;
    if (op == FUSE_FORGET || op == FUSE_BATCH_FORGET) {
        return g_atomic_int_get(&fs->initialized) ? ops[op].fn(&r) : 0;
    }
    if (op >= G_N_ELEMENTS(ops) || ops[op].fn == NULL) {
        return vfs_reply_err(&r, ENOSYS);
    }
    if (op != FUSE_INIT && !g_atomic_int_get(&fs->initialized)) {
        return vfs_reply_err(&r, EIO);
    }
    if (fs->readonly && (ops[op].flags & OP_MODIFIES)) {
        return vfs_reply_err(&r, EROFS);
    }
    if (r.in_size < sizeof(struct fuse_out_header) + ops[op].reply_min) {
        return vfs_reply_err(&r, EIO);
    }
    return ops[op].fn(&r);
}
