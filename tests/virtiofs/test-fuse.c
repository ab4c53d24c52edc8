/* Unit tests of the FUSE passthrough filesystem, driven through vfs_fs_handle() with iovecs. */
#include "fs-handler.h"

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <limits.h>
#include <linux/fuse.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REPLY_CAP (256 * 1024)

typedef struct {
    char *dir;     /* the shared directory */
    char *outside; /* a directory beside it that the guest must never reach */
    VfsFs *fs;
    guint8 *reply;
    guint64 unique;
} Fixture;

/* A request being built: fuse_in_header, then arguments. */
static GByteArray *req_new(Fixture *f, guint32 opcode, guint64 nodeid)
{
    struct fuse_in_header h = {
        .opcode = opcode,
        .unique = ++f->unique,
        .nodeid = nodeid,
    };
    GByteArray *b = g_byte_array_new();

    g_byte_array_append(b, (const guint8 *)&h, sizeof(h));
    return b;
}

static void req_add(GByteArray *b, const void *p, size_t len)
{
    g_byte_array_append(b, p, (guint)len);
}

static void req_str(GByteArray *b, const char *s)
{
    req_add(b, s, strlen(s) + 1);
}

static void req_finish(GByteArray *b)
{
    ((struct fuse_in_header *)b->data)->len = b->len;
}

/* Sends @b in one out iovec, the reply lands in f->reply (REPLY_CAP bytes) in one in iovec. */
static size_t req_send_cap(Fixture *f, GByteArray *b, size_t cap)
{
    req_finish(b);
    struct iovec out = { b->data, b->len };
    struct iovec in = { f->reply, cap };

    memset(f->reply, 0xa5, REPLY_CAP);
    size_t n = vfs_fs_handle(f->fs, &out, 1, &in, 1);
    g_byte_array_unref(b);
    return n;
}

static size_t req_send(Fixture *f, GByteArray *b)
{
    return req_send_cap(f, b, REPLY_CAP);
}

static const struct fuse_out_header *reply_hdr(Fixture *f)
{
    return (const struct fuse_out_header *)f->reply;
}

static const void *reply_body(Fixture *f)
{
    return f->reply + sizeof(struct fuse_out_header);
}

/* The error of the reply after checking its framing (0 on success). */
static int reply_check(Fixture *f, size_t n)
{
    const struct fuse_out_header *oh = reply_hdr(f);

    g_assert_cmpuint(n, >=, sizeof(*oh));
    g_assert_cmpuint(oh->len, ==, n);
    g_assert_cmpuint(oh->unique, ==, f->unique);
    if (oh->error != 0) {
        g_assert_cmpuint(n, ==, sizeof(*oh));
    }
    return oh->error;
}

static int do_init(Fixture *f, guint32 major)
{
    struct fuse_init_in in = {
        .major = major,
        .minor = FUSE_KERNEL_MINOR_VERSION,
        .max_readahead = 65536,
        .flags = FUSE_ASYNC_READ | FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES | FUSE_POSIX_LOCKS,
    };
    GByteArray *b = req_new(f, FUSE_INIT, 0);

    req_add(b, &in, sizeof(in));
    return reply_check(f, req_send(f, b));
}

/* LOOKUP: the node id, or -errno. */
static gint64 do_lookup(Fixture *f, guint64 dir, const char *name, struct fuse_entry_out *e)
{
    GByteArray *b = req_new(f, FUSE_LOOKUP, dir);

    req_str(b, name);
    int err = reply_check(f, req_send(f, b));
    if (err != 0) {
        return err;
    }
    if (e != NULL) {
        memcpy(e, reply_body(f), sizeof(*e));
    }
    return (gint64)((const struct fuse_entry_out *)reply_body(f))->nodeid;
}

static int do_getattr(Fixture *f, guint64 node, struct fuse_attr *attr)
{
    struct fuse_getattr_in in = { 0 };
    GByteArray *b = req_new(f, FUSE_GETATTR, node);

    req_add(b, &in, sizeof(in));
    int err = reply_check(f, req_send(f, b));
    if (err == 0 && attr != NULL) {
        memcpy(attr, &((const struct fuse_attr_out *)reply_body(f))->attr, sizeof(*attr));
    }
    return err;
}

/* CREATE: fills *@node and *@fh; -errno on failure. */
static int do_create(Fixture *f, guint64 dir, const char *name, guint32 flags, guint64 *node,
                     guint64 *fh)
{
    struct fuse_create_in in = { .flags = flags, .mode = S_IFREG | 0644 };
    GByteArray *b = req_new(f, FUSE_CREATE, dir);

    req_add(b, &in, sizeof(in));
    req_str(b, name);
    int err = reply_check(f, req_send(f, b));
    if (err == 0) {
        const struct fuse_entry_out *e = reply_body(f);
        const struct fuse_open_out *o = (const void *)(e + 1);
        *node = e->nodeid;
        *fh = o->fh;
    }
    return err;
}

static int do_open(Fixture *f, guint32 opcode, guint64 node, guint32 flags, guint64 *fh)
{
    struct fuse_open_in in = { .flags = flags };
    GByteArray *b = req_new(f, opcode, node);

    req_add(b, &in, sizeof(in));
    int err = reply_check(f, req_send(f, b));
    if (err == 0) {
        *fh = ((const struct fuse_open_out *)reply_body(f))->fh;
    }
    return err;
}

static int do_write(Fixture *f, guint64 node, guint64 fh, guint64 off, const void *data,
                    size_t len)
{
    struct fuse_write_in in = { .fh = fh, .offset = off, .size = (guint32)len };
    GByteArray *b = req_new(f, FUSE_WRITE, node);

    req_add(b, &in, sizeof(in));
    req_add(b, data, len);
    int err = reply_check(f, req_send(f, b));
    if (err == 0) {
        g_assert_cmpuint(((const struct fuse_write_out *)reply_body(f))->size, ==, len);
    }
    return err;
}

/* READ: the byte count (data at reply_body) or -errno. */
static gssize do_read(Fixture *f, guint64 node, guint64 fh, guint64 off, guint32 size)
{
    struct fuse_read_in in = { .fh = fh, .offset = off, .size = size };
    GByteArray *b = req_new(f, FUSE_READ, node);

    req_add(b, &in, sizeof(in));
    size_t n = req_send(f, b);
    int err = reply_check(f, n);
    return err != 0 ? err : (gssize)(n - sizeof(struct fuse_out_header));
}

static int do_release(Fixture *f, guint32 opcode, guint64 node, guint64 fh)
{
    struct fuse_release_in in = { .fh = fh };
    GByteArray *b = req_new(f, opcode, node);

    req_add(b, &in, sizeof(in));
    return reply_check(f, req_send(f, b));
}

static int do_name_op(Fixture *f, guint32 opcode, guint64 dir, const char *name)
{
    GByteArray *b = req_new(f, opcode, dir);

    req_str(b, name);
    return reply_check(f, req_send(f, b));
}

static gint64 do_mkdir(Fixture *f, guint64 dir, const char *name)
{
    struct fuse_mkdir_in in = { .mode = 0755 };
    GByteArray *b = req_new(f, FUSE_MKDIR, dir);

    req_add(b, &in, sizeof(in));
    req_str(b, name);
    int err = reply_check(f, req_send(f, b));
    return err != 0 ? err : (gint64)((const struct fuse_entry_out *)reply_body(f))->nodeid;
}

static int do_rename2(Fixture *f, guint64 olddir, const char *oldname, guint64 newdir,
                      const char *newname, guint32 flags)
{
    struct fuse_rename2_in in = { .newdir = newdir, .flags = flags };
    GByteArray *b = req_new(f, FUSE_RENAME2, olddir);

    req_add(b, &in, sizeof(in));
    req_str(b, oldname);
    req_str(b, newname);
    return reply_check(f, req_send(f, b));
}

static void do_forget(Fixture *f, guint64 node, guint64 n)
{
    struct fuse_forget_in in = { .nlookup = n };
    GByteArray *b = req_new(f, FUSE_FORGET, node);

    req_add(b, &in, sizeof(in));
    g_assert_cmpuint(req_send(f, b), ==, 0);
}

static char *host_path(Fixture *f, const char *rel)
{
    return g_build_filename(f->dir, rel, NULL);
}

static void host_write(Fixture *f, const char *rel, const char *data)
{
    g_autofree char *p = host_path(f, rel);

    g_assert_true(g_file_set_contents(p, data, -1, NULL));
}

static void fixture_setup_opts(Fixture *f, gboolean readonly, guint max_fds)
{
    g_autoptr(GError) error = NULL;

    f->dir = g_dir_make_tmp("berth-fuse-XXXXXX", &error);
    g_assert_no_error(error);
    f->outside = g_dir_make_tmp("berth-fuse-outside-XXXXXX", &error);
    g_assert_no_error(error);
    VfsFsOptions opts = {
        .shared_dir = f->dir,
        .cache = VFS_CACHE_AUTO,
        .readonly = readonly,
        .max_open_fds = max_fds,
    };
    f->fs = vfs_fs_new(&opts, &error);
    g_assert_no_error(error);
    g_assert_nonnull(f->fs);
    f->reply = g_malloc(REPLY_CAP);
    g_assert_cmpint(do_init(f, 7), ==, 0);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    fixture_setup_opts(f, FALSE, 0);
}

static void fixture_setup_ro(Fixture *f, gconstpointer data)
{
    fixture_setup_opts(f, TRUE, 0);
}

static void fixture_setup_fds(Fixture *f, gconstpointer data)
{
    fixture_setup_opts(f, FALSE, 8);
}

static void rm_rf(const char *path)
{
    g_autofree char *argv0 = g_find_program_in_path("rm");
    const char *argv[] = { argv0, "-rf", path, NULL };

    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    vfs_fs_free(f->fs);
    rm_rf(f->dir);
    rm_rf(f->outside);
    g_free(f->dir);
    g_free(f->outside);
    g_free(f->reply);
}

static void test_new_errors(void)
{
    g_autoptr(GError) error = NULL;
    VfsFsOptions opts = { .shared_dir = "/nonexistent/berth-share" };

    g_assert_null(vfs_fs_new(&opts, &error));
    g_assert_error(error, G_FILE_ERROR, G_FILE_ERROR_NOENT);
    g_assert_nonnull(strstr(error->message, "/nonexistent/berth-share"));
    vfs_fs_free(NULL);
}

static void test_init(Fixture *f, gconstpointer data)
{
    struct fuse_init_in in = {
        .major = 7,
        .minor = FUSE_KERNEL_MINOR_VERSION,
        .flags = FUSE_ASYNC_READ | FUSE_MAX_PAGES | FUSE_WRITEBACK_CACHE,
    };
    GByteArray *b = req_new(f, FUSE_INIT, 0);

    req_add(b, &in, sizeof(in));
    size_t n = req_send(f, b);
    g_assert_cmpint(reply_check(f, n), ==, 0);
    g_assert_cmpuint(n, ==, sizeof(struct fuse_out_header) + sizeof(struct fuse_init_out));
    const struct fuse_init_out *out = reply_body(f);
    g_assert_cmpuint(out->major, ==, 7);
    g_assert_cmpuint(out->max_write, ==, 1024 * 1024);
    g_assert_cmpuint(out->max_pages, ==, 256);
    /* Only flags the guest asked for, and never one we do not implement. */
    g_assert_cmpuint(out->flags, ==, FUSE_ASYNC_READ | FUSE_MAX_PAGES);

    g_assert_cmpint(do_init(f, 8), ==, -EPROTO);
    g_assert_cmpint(do_init(f, 6), ==, -EPROTO);

    /* Too short to hold major and minor. */
    b = req_new(f, FUSE_INIT, 0);
    req_add(b, &in, 4);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
}

static void test_not_initialized(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("berth-fuse-XXXXXX", &error);
    VfsFsOptions opts = { .shared_dir = dir };
    Fixture f = { .dir = dir, .reply = g_malloc(REPLY_CAP) };

    f.fs = vfs_fs_new(&opts, &error);
    g_assert_no_error(error);
    g_assert_cmpint(do_lookup(&f, FUSE_ROOT_ID, "x", NULL), ==, -EIO);
    g_assert_cmpint(do_getattr(&f, FUSE_ROOT_ID, NULL), ==, -EIO);
    vfs_fs_free(f.fs);
    g_free(f.reply);
    g_assert_cmpint(g_rmdir(dir), ==, 0);
}

static void test_lookup_getattr(Fixture *f, gconstpointer data)
{
    struct fuse_entry_out e;
    struct fuse_attr attr;

    host_write(f, "hello", "hello world");
    gint64 node = do_lookup(f, FUSE_ROOT_ID, "hello", &e);
    g_assert_cmpint(node, >, FUSE_ROOT_ID);
    g_assert_cmpuint(e.attr.size, ==, 11);
    g_assert_true(S_ISREG(e.attr.mode));
    g_assert_cmpuint(e.entry_valid, ==, 1); /* cache=auto */
    /* The same file gets the same node id. */
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "hello", NULL), ==, node);
    g_assert_cmpint(do_getattr(f, (guint64)node, &attr), ==, 0);
    g_assert_cmpuint(attr.size, ==, 11);
    g_assert_cmpint(do_getattr(f, FUSE_ROOT_ID, &attr), ==, 0);
    g_assert_true(S_ISDIR(attr.mode));

    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "missing", NULL), ==, -ENOENT);
    g_assert_cmpint(do_lookup(f, (guint64)node, "x", NULL), ==, -ENOTDIR);
    g_assert_cmpint(do_lookup(f, 999999, "hello", NULL), ==, -ESTALE);
    g_assert_cmpint(do_getattr(f, 999999, NULL), ==, -ESTALE);
}

static void test_names_refused(Fixture *f, gconstpointer data)
{
    char longname[NAME_MAX + 2];

    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "..", NULL), ==, -EINVAL);
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, ".", NULL), ==, -EINVAL);
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "", NULL), ==, -EINVAL);
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "../etc", NULL), ==, -EINVAL);
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "/etc", NULL), ==, -EINVAL);
    g_assert_cmpint(do_mkdir(f, FUSE_ROOT_ID, ".."), ==, -EINVAL);
    g_assert_cmpint(do_name_op(f, FUSE_UNLINK, FUSE_ROOT_ID, "../x"), ==, -EINVAL);
    g_assert_cmpint(do_name_op(f, FUSE_RMDIR, FUSE_ROOT_ID, ".."), ==, -EINVAL);
    g_assert_cmpint(do_rename2(f, FUSE_ROOT_ID, "a", FUSE_ROOT_ID, "../b", 0), ==, -EINVAL);

    memset(longname, 'a', sizeof(longname) - 1);
    longname[NAME_MAX + 1] = '\0';
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, longname, NULL), ==, -ENAMETOOLONG);
    longname[NAME_MAX] = '\0';
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, longname, NULL), ==, -ENOENT);

    /* A name without its NUL. */
    GByteArray *b = req_new(f, FUSE_LOOKUP, FUSE_ROOT_ID);
    req_add(b, "abc", 3);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
}

static void test_create_write_read(Fixture *f, gconstpointer data)
{
    guint64 node = 0, fh = 0, fh2 = 0;
    const char *text = "The quick brown fox jumps over the lazy dog";

    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "new", O_RDWR, &node, &fh), ==, 0);
    g_assert_cmpint(do_write(f, node, fh, 0, text, strlen(text)), ==, 0);
    g_assert_cmpint(do_write(f, node, fh, 100, "tail", 4), ==, 0);
    g_assert_cmpint(do_read(f, node, fh, 4, 5), ==, 5);
    g_assert_cmpmem(reply_body(f), 5, "quick", 5);
    g_assert_cmpint(do_read(f, node, fh, 0, 4096), ==, 104);
    g_assert_cmpint(do_read(f, node, fh, 1000, 4096), ==, 0);

    /* FLUSH, FSYNC (both kinds), then RELEASE; the handle is gone after. */
    struct fuse_flush_in fl = { .fh = fh };
    GByteArray *b = req_new(f, FUSE_FLUSH, node);
    req_add(b, &fl, sizeof(fl));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    for (guint32 flags = 0; flags <= FUSE_FSYNC_FDATASYNC; flags++) {
        struct fuse_fsync_in fs = { .fh = fh, .fsync_flags = flags };
        b = req_new(f, FUSE_FSYNC, node);
        req_add(b, &fs, sizeof(fs));
        g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    }
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, 0);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, -EBADF);
    g_assert_cmpint(do_read(f, node, fh, 0, 10), ==, -EBADF);
    g_assert_cmpint(do_write(f, node, fh, 0, "x", 1), ==, -EBADF);

    g_autofree char *p = host_path(f, "new");
    g_autofree char *contents = NULL;
    gsize len = 0;
    g_assert_true(g_file_get_contents(p, &contents, &len, NULL));
    g_assert_cmpuint(len, ==, 104);
    g_assert_cmpmem(contents, strlen(text), text, strlen(text));
    g_assert_cmpmem(contents + 100, 4, "tail", 4);

    /* O_EXCL on an existing name fails; without it CREATE opens the file. */
    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "new", O_RDWR | O_EXCL, &node, &fh2), ==, -EEXIST);
    guint64 node2 = 0;
    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "new", O_RDWR, &node2, &fh2), ==, 0);
    g_assert_cmpuint(node2, ==, node);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh2), ==, 0);

    /* OPEN with O_TRUNC truncates; a directory cannot be opened as a file. */
    g_assert_cmpint(do_open(f, FUSE_OPEN, node, O_WRONLY | O_TRUNC, &fh2), ==, 0);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh2), ==, 0);
    struct stat st;
    g_assert_cmpint(stat(p, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 0);
    g_assert_cmpint(do_open(f, FUSE_OPEN, FUSE_ROOT_ID, O_RDONLY, &fh2), ==, -EISDIR);
    g_assert_cmpint(do_open(f, FUSE_OPEN, 4242, O_RDONLY, &fh2), ==, -ESTALE);

    /* The created file has the mode asked for, whatever the process umask. */
    g_assert_cmpint(st.st_mode & 07777, ==, 0644);
}

/* As root, files are created with the caller's uid and gid, and its permissions apply. */
static void test_create_as_caller(Fixture *f, gconstpointer data)
{
    if (geteuid() != 0) {
        g_test_skip("creating files as the caller's uid needs root");
        return;
    }
    struct stat st;
    g_autofree char *sub = host_path(f, "open");
    g_assert_cmpint(g_mkdir(sub, 0777), ==, 0);
    g_assert_cmpint(chmod(sub, 0777), ==, 0);
    g_assert_cmpint(chmod(f->dir, 0755), ==, 0);
    gint64 open_dir = do_lookup(f, FUSE_ROOT_ID, "open", NULL);
    g_assert_cmpint(open_dir, >, 0);

    struct fuse_create_in in = { .flags = O_WRONLY, .mode = S_IFREG | 0640 };
    GByteArray *b = req_new(f, FUSE_CREATE, (guint64)open_dir);
    ((struct fuse_in_header *)b->data)->uid = 4321;
    ((struct fuse_in_header *)b->data)->gid = 8765;
    req_add(b, &in, sizeof(in));
    req_str(b, "mine");
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    const struct fuse_entry_out *e = reply_body(f);
    g_assert_cmpuint(e->attr.uid, ==, 4321);
    g_assert_cmpuint(e->attr.gid, ==, 8765);
    guint64 fh = ((const struct fuse_open_out *)(e + 1))->fh;
    g_assert_cmpint(do_release(f, FUSE_RELEASE, e->nodeid, fh), ==, 0);
    g_autofree char *mine = host_path(f, "open/mine");
    g_assert_cmpint(stat(mine, &st), ==, 0);
    g_assert_cmpuint(st.st_uid, ==, 4321);
    g_assert_cmpuint(st.st_gid, ==, 8765);
    g_assert_cmpint(st.st_mode & 07777, ==, 0640);

    /* The same caller may not create in the root-owned 0755 share root. */
    struct fuse_mkdir_in min = { .mode = 0755 };
    b = req_new(f, FUSE_MKDIR, FUSE_ROOT_ID);
    ((struct fuse_in_header *)b->data)->uid = 4321;
    ((struct fuse_in_header *)b->data)->gid = 8765;
    req_add(b, &min, sizeof(min));
    req_str(b, "nope");
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EACCES);
    /* And this thread is root again afterwards. */
    g_assert_cmpint(do_mkdir(f, FUSE_ROOT_ID, "yes"), >, 0);
    g_autofree char *yes = host_path(f, "yes");
    g_assert_cmpint(stat(yes, &st), ==, 0);
    g_assert_cmpuint(st.st_uid, ==, 0);
}

static void test_write_size_checks(Fixture *f, gconstpointer data)
{
    guint64 node = 0, fh = 0;

    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "w", O_RDWR, &node, &fh), ==, 0);
    /* size says more than the request carries. */
    struct fuse_write_in in = { .fh = fh, .size = 100 };
    GByteArray *b = req_new(f, FUSE_WRITE, node);
    req_add(b, &in, sizeof(in));
    req_add(b, "short", 5);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
    /* More than max_write. */
    in.size = 2 * 1024 * 1024;
    b = req_new(f, FUSE_WRITE, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
    /* A directory handle is not a file handle. */
    guint64 dfh = 0;
    g_assert_cmpint(do_open(f, FUSE_OPENDIR, FUSE_ROOT_ID, O_RDONLY, &dfh), ==, 0);
    g_assert_cmpint(do_write(f, node, dfh, 0, "x", 1), ==, -EBADF);
    g_assert_cmpint(do_read(f, node, dfh, 0, 1), ==, -EBADF);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, dfh), ==, -EBADF);
    g_assert_cmpint(do_release(f, FUSE_RELEASEDIR, FUSE_ROOT_ID, fh), ==, -EBADF);
    g_assert_cmpint(do_release(f, FUSE_RELEASEDIR, FUSE_ROOT_ID, dfh), ==, 0);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, 0);
}

/* Splits @buf into iovecs at the offsets in @cuts (ascending), including empty pieces. */
static unsigned split_iov(guint8 *buf, size_t len, const size_t *cuts, unsigned ncuts,
                          struct iovec *iov)
{
    size_t prev = 0;
    unsigned n = 0;

    for (unsigned i = 0; i < ncuts; i++) {
        iov[n].iov_base = buf + prev;
        iov[n].iov_len = cuts[i] - prev;
        prev = cuts[i];
        n++;
    }
    iov[n].iov_base = buf + prev;
    iov[n].iov_len = len - prev;
    return n + 1;
}

static void test_split_lookup(Fixture *f, gconstpointer data)
{
    struct fuse_entry_out want;
    host_write(f, "splitme", "data");
    gint64 node = do_lookup(f, FUSE_ROOT_ID, "splitme", &want);
    g_assert_cmpint(node, >, 0);

    GByteArray *b = req_new(f, FUSE_LOOKUP, FUSE_ROOT_ID);
    req_str(b, "splitme");
    req_finish(b);
    const size_t reply_len = sizeof(struct fuse_out_header) + sizeof(struct fuse_entry_out);
    guint8 *req = g_memdup2(b->data, b->len);
    size_t req_len = b->len;
    g_byte_array_unref(b);

    /* Every pair of cut points in the request, and every cut point in the reply. */
    for (size_t a = 0; a <= req_len; a++) {
        for (size_t c = a; c <= req_len; c++) {
            struct iovec out[3];
            size_t cuts[2] = { a, c };
            unsigned out_n = split_iov(req, req_len, cuts, 2, out);
            size_t rcut = (a * 7 + c) % (reply_len + 1);
            struct iovec in[2];
            unsigned in_n = split_iov(f->reply, reply_len, &rcut, 1, in);
            memset(f->reply, 0, reply_len);
            size_t n = vfs_fs_handle(f->fs, out, out_n, in, in_n);
            g_assert_cmpuint(n, ==, reply_len);
            const struct fuse_out_header *oh = reply_hdr(f);
            g_assert_cmpint(oh->error, ==, 0);
            g_assert_cmpuint(((const struct fuse_entry_out *)reply_body(f))->nodeid, ==, node);
        }
    }
    /* One byte per iovec. */
    g_autofree struct iovec *bytes = g_new(struct iovec, req_len);
    for (size_t i = 0; i < req_len; i++) {
        bytes[i].iov_base = req + i;
        bytes[i].iov_len = 1;
    }
    struct iovec in = { f->reply, reply_len };
    g_assert_cmpuint(vfs_fs_handle(f->fs, bytes, (unsigned)req_len, &in, 1), ==, reply_len);
    g_assert_cmpint(reply_hdr(f)->error, ==, 0);
    g_free(req);
}

static void test_split_write_read(Fixture *f, gconstpointer data)
{
    guint64 node = 0, fh = 0;
    guint8 payload[97];

    for (size_t i = 0; i < sizeof(payload); i++) {
        payload[i] = (guint8)(i * 13 + 1);
    }
    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "split", O_RDWR, &node, &fh), ==, 0);

    GByteArray *b = req_new(f, FUSE_WRITE, node);
    struct fuse_write_in win = { .fh = fh, .offset = 0, .size = sizeof(payload) };
    req_add(b, &win, sizeof(win));
    req_add(b, payload, sizeof(payload));
    req_finish(b);
    size_t hdrs = sizeof(struct fuse_in_header) + sizeof(win);

    /* A cut at every byte of the headers, and a second one inside the data. */
    for (size_t a = 0; a <= hdrs + 1; a++) {
        struct iovec out[3];
        size_t cuts[2] = { a, hdrs + 1 + (a % sizeof(payload)) };
        unsigned out_n = split_iov(b->data, b->len, cuts, 2, out);
        ((struct fuse_write_in *)(b->data + sizeof(struct fuse_in_header)))->offset = a * 100;
        struct iovec in = { f->reply, 64 };
        size_t n = vfs_fs_handle(f->fs, out, out_n, &in, 1);
        g_assert_cmpuint(n, ==, sizeof(struct fuse_out_header) + sizeof(struct fuse_write_out));
        g_assert_cmpint(reply_hdr(f)->error, ==, 0);
        g_assert_cmpuint(((const struct fuse_write_out *)reply_body(f))->size, ==, 97);
    }
    g_byte_array_unref(b);

    /* Read back with the reply split at every byte of the header and inside the data. */
    struct fuse_read_in rin = { .fh = fh, .offset = 500, .size = sizeof(payload) };
    b = req_new(f, FUSE_READ, node);
    req_add(b, &rin, sizeof(rin));
    req_finish(b);
    size_t reply_len = sizeof(struct fuse_out_header) + sizeof(payload);
    for (size_t a = 0; a <= sizeof(struct fuse_out_header) + 1; a++) {
        struct iovec out = { b->data, b->len };
        struct iovec in[4];
        size_t cuts[3] = { a, a + 1, MAX(a + 1, (size_t)50) };
        unsigned in_n = split_iov(f->reply, reply_len, cuts, 3, in);
        memset(f->reply, 0, reply_len);
        size_t n = vfs_fs_handle(f->fs, &out, 1, in, in_n);
        g_assert_cmpuint(n, ==, reply_len);
        g_assert_cmpint(reply_hdr(f)->error, ==, 0);
        g_assert_cmpmem(reply_body(f), sizeof(payload), payload, sizeof(payload));
    }
    g_byte_array_unref(b);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, 0);
}

static void test_short_buffers(Fixture *f, gconstpointer data)
{
    host_write(f, "file", "0123456789");
    gint64 node = do_lookup(f, FUSE_ROOT_ID, "file", NULL);
    g_assert_cmpint(node, >, 0);

    /* No room for even a reply header: nothing is written. */
    GByteArray *b = req_new(f, FUSE_GETATTR, FUSE_ROOT_ID);
    struct fuse_getattr_in gin = { 0 };
    req_add(b, &gin, sizeof(gin));
    g_assert_cmpuint(req_send_cap(f, b, sizeof(struct fuse_out_header) - 1), ==, 0);
    g_assert_cmpuint(f->reply[0], ==, 0xa5);

    /* Room for a header but not the attributes: EIO, and the op did not run. */
    b = req_new(f, FUSE_LOOKUP, FUSE_ROOT_ID);
    req_str(b, "file");
    g_assert_cmpint(reply_check(f, req_send_cap(f, b, 40)), ==, -EIO);

    /* A request shorter than its header; a header.len beyond the buffers; too short a len. */
    guint8 tiny[10] = { 0 };
    struct iovec out = { tiny, sizeof(tiny) };
    struct iovec in = { f->reply, REPLY_CAP };
    g_assert_cmpuint(vfs_fs_handle(f->fs, &out, 1, &in, 1), ==, sizeof(struct fuse_out_header));
    g_assert_cmpint(reply_hdr(f)->error, ==, -EINVAL);
    g_assert_cmpuint(vfs_fs_handle(f->fs, NULL, 0, &in, 1), ==, sizeof(struct fuse_out_header));
    g_assert_cmpuint(vfs_fs_handle(f->fs, &out, 1, NULL, 0), ==, 0);

    b = req_new(f, FUSE_GETATTR, FUSE_ROOT_ID);
    req_add(b, &gin, sizeof(gin));
    req_finish(b);
    ((struct fuse_in_header *)b->data)->len = b->len + 1;
    out.iov_base = b->data;
    out.iov_len = b->len;
    g_assert_cmpuint(vfs_fs_handle(f->fs, &out, 1, &in, 1), ==, sizeof(struct fuse_out_header));
    g_assert_cmpint(reply_hdr(f)->error, ==, -EINVAL);
    ((struct fuse_in_header *)b->data)->len = 8;
    g_assert_cmpuint(vfs_fs_handle(f->fs, &out, 1, &in, 1), ==, sizeof(struct fuse_out_header));
    g_assert_cmpint(reply_hdr(f)->error, ==, -EINVAL);
    /* header.len shorter than the buffers: the arguments past it are not read. */
    ((struct fuse_in_header *)b->data)->len = sizeof(struct fuse_in_header) + 4;
    g_assert_cmpuint(vfs_fs_handle(f->fs, &out, 1, &in, 1), ==, sizeof(struct fuse_out_header));
    g_assert_cmpint(reply_hdr(f)->error, ==, -EINVAL);
    g_byte_array_unref(b);

    /* Truncated arguments for every op that has fixed ones. */
    const guint32 ops[] = { FUSE_GETATTR, FUSE_SETATTR, FUSE_MKDIR, FUSE_RENAME, FUSE_OPEN,
                            FUSE_READ, FUSE_WRITE, FUSE_RELEASE, FUSE_FSYNC, FUSE_FLUSH,
                            FUSE_OPENDIR, FUSE_READDIR, FUSE_RELEASEDIR, FUSE_ACCESS,
                            FUSE_CREATE, FUSE_READDIRPLUS, FUSE_RENAME2 };
    for (guint i = 0; i < G_N_ELEMENTS(ops); i++) {
        b = req_new(f, ops[i], (guint64)node);
        req_add(b, "\0\0\0", 3);
        g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
    }

    /* A READ bigger than the reply buffers is cut to them. */
    guint64 fh = 0;
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)node, O_RDONLY, &fh), ==, 0);
    struct fuse_read_in rin = { .fh = fh, .size = 4096 };
    b = req_new(f, FUSE_READ, (guint64)node);
    req_add(b, &rin, sizeof(rin));
    size_t n = req_send_cap(f, b, sizeof(struct fuse_out_header) + 3);
    g_assert_cmpint(reply_check(f, n), ==, 0);
    g_assert_cmpuint(n, ==, sizeof(struct fuse_out_header) + 3);
    g_assert_cmpmem(reply_body(f), 3, "012", 3);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, (guint64)node, fh), ==, 0);
}

static void test_unknown_opcode(Fixture *f, gconstpointer data)
{
    const guint32 ops[] = { FUSE_MKNOD, FUSE_LINK, FUSE_SETXATTR, FUSE_GETLK, FUSE_IOCTL,
                            FUSE_TMPFILE, 0, 7, 52, 4096, 0xffffffffu };

    for (guint i = 0; i < G_N_ELEMENTS(ops); i++) {
        GByteArray *b = req_new(f, ops[i], FUSE_ROOT_ID);
        req_add(b, "argument bytes", 14);
        g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -ENOSYS);
    }
}

static gint cmp_names(gconstpointer a, gconstpointer b)
{
    return g_strcmp0(*(char *const *)a, *(char *const *)b);
}

/* Reads a whole directory with READDIR(PLUS) calls of @size bytes; names in a sorted list. */
static GPtrArray *list_dir(Fixture *f, guint64 node, guint32 opcode, guint32 size,
                           GArray *nodeids)
{
    guint64 fh = 0;
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    guint64 off = 0;
    guint calls = 0;

    g_assert_cmpint(do_open(f, FUSE_OPENDIR, node, O_RDONLY, &fh), ==, 0);
    for (;;) {
        struct fuse_read_in in = { .fh = fh, .offset = off, .size = size };
        GByteArray *b = req_new(f, opcode, node);
        req_add(b, &in, sizeof(in));
        size_t n = req_send(f, b);
        g_assert_cmpint(reply_check(f, n), ==, 0);
        n -= sizeof(struct fuse_out_header);
        g_assert_cmpuint(n, <=, size);
        if (n == 0) {
            break;
        }
        g_assert_cmpuint(++calls, <, 1000);
        const guint8 *p = reply_body(f);
        for (size_t pos = 0; pos < n;) {
            const struct fuse_dirent *d;
            size_t rec;
            if (opcode == FUSE_READDIRPLUS) {
                const struct fuse_direntplus *dp = (const void *)(p + pos);
                d = &dp->dirent;
                rec = FUSE_DIRENTPLUS_SIZE(dp);
                if (nodeids != NULL && dp->entry_out.nodeid != 0) {
                    g_array_append_val(nodeids, dp->entry_out.nodeid);
                }
            } else {
                d = (const void *)(p + pos);
                rec = FUSE_DIRENT_SIZE(d);
            }
            g_assert_cmpuint(pos + rec, <=, n);
            g_ptr_array_add(names, g_strndup(d->name, d->namelen));
            off = d->off;
            pos += rec;
        }
    }
    g_assert_cmpint(do_release(f, FUSE_RELEASEDIR, node, fh), ==, 0);
    g_ptr_array_sort(names, cmp_names);
    return names;
}

static gchar *join_names(GPtrArray *names)
{
    g_ptr_array_add(names, NULL);
    return g_strjoinv(",", (char **)names->pdata);
}

static void test_mkdir_readdir(Fixture *f, gconstpointer data)
{
    gint64 dir = do_mkdir(f, FUSE_ROOT_ID, "d");
    g_assert_cmpint(dir, >, 0);
    g_assert_cmpint(do_mkdir(f, FUSE_ROOT_ID, "d"), ==, -EEXIST);
    for (int i = 0; i < 40; i++) {
        g_autofree char *name = g_strdup_printf("file-%02d-with-a-longer-name", i);
        guint64 node = 0, fh = 0;
        g_assert_cmpint(do_create(f, (guint64)dir, name, O_WRONLY, &node, &fh), ==, 0);
        g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, 0);
    }
    g_autofree char *expect = NULL;
    {
        g_autoptr(GPtrArray) want = g_ptr_array_new_with_free_func(g_free);
        g_ptr_array_add(want, g_strdup("."));
        g_ptr_array_add(want, g_strdup(".."));
        for (int i = 0; i < 40; i++) {
            g_ptr_array_add(want, g_strdup_printf("file-%02d-with-a-longer-name", i));
        }
        g_ptr_array_sort(want, cmp_names);
        expect = join_names(want);
    }
    /* Whole-buffer and tiny-buffer listings agree: nothing lost or repeated at the seams. */
    const guint32 sizes[] = { 65536, 200, 56 };
    for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
        g_autoptr(GPtrArray) names = list_dir(f, (guint64)dir, FUSE_READDIR, sizes[i], NULL);
        g_autofree char *got = join_names(names);
        g_assert_cmpstr(got, ==, expect);
    }
    const guint32 plus_sizes[] = { 65536, 400 };
    for (guint i = 0; i < G_N_ELEMENTS(plus_sizes); i++) {
        g_autoptr(GArray) ids = g_array_new(FALSE, FALSE, sizeof(guint64));
        g_autoptr(GPtrArray) names =
            list_dir(f, (guint64)dir, FUSE_READDIRPLUS, plus_sizes[i], ids);
        g_autofree char *got = join_names(names);
        g_assert_cmpstr(got, ==, expect);
        g_assert_cmpuint(ids->len, ==, 40);
        /* Each returned entry counts as one lookup: forget them all again. */
        for (guint j = 0; j < ids->len; j++) {
            do_forget(f, g_array_index(ids, guint64, j), 1);
        }
    }
    /* OPENDIR of a file, READDIR with a bad handle. */
    guint64 fh = 0;
    host_write(f, "plain", "");
    gint64 plain = do_lookup(f, FUSE_ROOT_ID, "plain", NULL);
    g_assert_cmpint(do_open(f, FUSE_OPENDIR, (guint64)plain, O_RDONLY, &fh), ==, -ENOTDIR);
    struct fuse_read_in in = { .fh = 777, .size = 4096 };
    GByteArray *b = req_new(f, FUSE_READDIR, (guint64)dir);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EBADF);
}

static void test_rename_unlink_rmdir(Fixture *f, gconstpointer data)
{
    gint64 a = do_mkdir(f, FUSE_ROOT_ID, "a");
    gint64 bdir = do_mkdir(f, FUSE_ROOT_ID, "b");
    guint64 node = 0, fh = 0;

    g_assert_cmpint(do_create(f, (guint64)a, "f", O_WRONLY, &node, &fh), ==, 0);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, 0);
    host_write(f, "b/g", "g");

    /* RENAME (the old opcode) across directories. */
    struct fuse_rename_in rin = { .newdir = (guint64)bdir };
    GByteArray *b = req_new(f, FUSE_RENAME, (guint64)a);
    req_add(b, &rin, sizeof(rin));
    req_str(b, "f");
    req_str(b, "f2");
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    g_autofree char *moved = host_path(f, "b/f2");
    g_assert_true(g_file_test(moved, G_FILE_TEST_IS_REGULAR));

    g_assert_cmpint(do_rename2(f, (guint64)bdir, "f2", (guint64)bdir, "g", RENAME_NOREPLACE), ==,
                    -EEXIST);
    g_assert_cmpint(do_rename2(f, (guint64)bdir, "f2", (guint64)bdir, "g", RENAME_EXCHANGE), ==,
                    0);
    g_assert_cmpint(do_rename2(f, (guint64)bdir, "f2", (guint64)bdir, "h", 0x80), ==, -EINVAL);
    g_assert_cmpint(do_rename2(f, (guint64)bdir, "nope", (guint64)bdir, "h", 0), ==, -ENOENT);
    g_assert_cmpint(do_rename2(f, (guint64)bdir, "g", 99999, "h", 0), ==, -ESTALE);

    g_assert_cmpint(do_name_op(f, FUSE_RMDIR, FUSE_ROOT_ID, "b"), ==, -ENOTEMPTY);
    g_assert_cmpint(do_name_op(f, FUSE_UNLINK, FUSE_ROOT_ID, "b"), ==, -EISDIR);
    g_assert_cmpint(do_name_op(f, FUSE_RMDIR, (guint64)bdir, "g"), ==, -ENOTDIR);
    g_assert_cmpint(do_name_op(f, FUSE_UNLINK, (guint64)bdir, "g"), ==, 0);
    g_assert_cmpint(do_name_op(f, FUSE_UNLINK, (guint64)bdir, "f2"), ==, 0);
    g_assert_cmpint(do_name_op(f, FUSE_UNLINK, (guint64)bdir, "f2"), ==, -ENOENT);
    g_assert_cmpint(do_name_op(f, FUSE_RMDIR, FUSE_ROOT_ID, "b"), ==, 0);
    g_assert_cmpint(do_name_op(f, FUSE_RMDIR, FUSE_ROOT_ID, "a"), ==, 0);
    g_autofree char *adir = host_path(f, "a");
    g_assert_false(g_file_test(adir, G_FILE_TEST_EXISTS));
    /* The removed directory's node still stats (it is held), but nothing can be made in it. */
    g_assert_cmpint(do_mkdir(f, (guint64)a, "x"), ==, -ENOENT);
}

static void test_symlink_readlink(Fixture *f, gconstpointer data)
{
    GByteArray *b = req_new(f, FUSE_SYMLINK, FUSE_ROOT_ID);
    req_str(b, "link");
    req_str(b, "target/with/slashes");
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    const struct fuse_entry_out *e = reply_body(f);
    guint64 node = e->nodeid;
    g_assert_true(S_ISLNK(e->attr.mode));

    b = req_new(f, FUSE_READLINK, node);
    size_t n = req_send(f, b);
    g_assert_cmpint(reply_check(f, n), ==, 0);
    g_assert_cmpmem(reply_body(f), n - sizeof(struct fuse_out_header), "target/with/slashes",
                    strlen("target/with/slashes"));

    b = req_new(f, FUSE_READLINK, FUSE_ROOT_ID);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);

    /* A name that is not a component, and a target without a NUL. */
    b = req_new(f, FUSE_SYMLINK, FUSE_ROOT_ID);
    req_str(b, "a/b");
    req_str(b, "t");
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
    b = req_new(f, FUSE_SYMLINK, FUSE_ROOT_ID);
    req_str(b, "ok");
    req_add(b, "t", 1);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
}

/* Symlinks that point out of the share are never followed by the host. */
static void test_escape_refused(Fixture *f, gconstpointer data)
{
    g_autofree char *secret = g_build_filename(f->outside, "secret", NULL);
    g_assert_true(g_file_set_contents(secret, "top secret", -1, NULL));
    g_autofree char *l1 = host_path(f, "abs-dir");
    g_autofree char *l2 = host_path(f, "abs-file");
    g_autofree char *l3 = host_path(f, "rel-up");
    g_assert_cmpint(symlink(f->outside, l1), ==, 0);
    g_assert_cmpint(symlink(secret, l2), ==, 0);
    g_assert_cmpint(symlink("../..", l3), ==, 0);

    const char *links[] = { "abs-dir", "abs-file", "rel-up" };
    for (guint i = 0; i < G_N_ELEMENTS(links); i++) {
        struct fuse_entry_out e;
        gint64 node = do_lookup(f, FUSE_ROOT_ID, links[i], &e);
        g_assert_cmpint(node, >, 0);
        /* The node is the link itself, not what it points to. */
        g_assert_true(S_ISLNK(e.attr.mode));
        g_assert_cmpint(do_lookup(f, (guint64)node, "secret", NULL), ==, -ENOTDIR);
        guint64 fh = 0, n2 = 0;
        g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)node, O_RDONLY, &fh), ==, -ELOOP);
        g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)node, O_RDWR | O_TRUNC, &fh), ==, -ELOOP);
        g_assert_cmpint(do_open(f, FUSE_OPENDIR, (guint64)node, O_RDONLY, &fh), ==, -ENOTDIR);
        g_assert_cmpint(do_create(f, (guint64)node, "new", O_RDWR, &n2, &fh), ==, -ENOTDIR);
        g_assert_cmpint(do_mkdir(f, (guint64)node, "new"), ==, -ENOTDIR);
        g_assert_cmpint(do_name_op(f, FUSE_UNLINK, (guint64)node, "secret"), ==, -ENOTDIR);
        /* CREATE on the link's name neither follows it nor truncates the target. */
        g_assert_cmpint(do_create(f, FUSE_ROOT_ID, links[i], O_RDWR | O_TRUNC, &n2, &fh), ==,
                        -ELOOP);
        /* SETATTR size/mode on the link does not reach the target. */
        struct fuse_setattr_in sin = { .valid = FATTR_SIZE, .size = 0 };
        GByteArray *b = req_new(f, FUSE_SETATTR, (guint64)node);
        req_add(b, &sin, sizeof(sin));
        g_assert_cmpint(reply_check(f, req_send(f, b)), <, 0);
        sin.valid = FATTR_MODE;
        sin.mode = 0777;
        b = req_new(f, FUSE_SETATTR, (guint64)node);
        req_add(b, &sin, sizeof(sin));
        g_assert_cmpint(reply_check(f, req_send(f, b)), <, 0);
    }
    g_autofree char *contents = NULL;
    g_assert_true(g_file_get_contents(secret, &contents, NULL, NULL));
    g_assert_cmpstr(contents, ==, "top secret");
    struct stat st;
    g_assert_cmpint(stat(secret, &st), ==, 0);
    g_assert_cmpint(st.st_mode & 0777, !=, 0777);
    g_autofree char *made = g_build_filename(f->outside, "new", NULL);
    g_assert_false(g_file_test(made, G_FILE_TEST_EXISTS));

    /* The share root's parent is unreachable by name. */
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "..", NULL), ==, -EINVAL);

    /* A FIFO in the share is neither opened (that would block) nor treated as a file. */
    g_autofree char *fifo = host_path(f, "fifo");
    g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
    gint64 fnode = do_lookup(f, FUSE_ROOT_ID, "fifo", NULL);
    guint64 fh = 0, n2 = 0;
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)fnode, O_RDONLY, &fh), ==, -EACCES);
    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "fifo", O_RDONLY, &n2, &fh), ==, -EACCES);
}

static void test_setattr(Fixture *f, gconstpointer data)
{
    guint64 node = 0, fh = 0;
    g_autofree char *p = host_path(f, "attr");
    struct stat st;

    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "attr", O_RDWR, &node, &fh), ==, 0);
    g_assert_cmpint(do_write(f, node, fh, 0, "0123456789", 10), ==, 0);

    struct fuse_setattr_in in = { .valid = FATTR_MODE, .mode = S_IFREG | 0600 };
    GByteArray *b = req_new(f, FUSE_SETATTR, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    g_assert_cmpuint(((const struct fuse_attr_out *)reply_body(f))->attr.mode & 07777, ==, 0600);

    /* Truncate through the path, then through the open handle. */
    in = (struct fuse_setattr_in){ .valid = FATTR_SIZE, .size = 4 };
    b = req_new(f, FUSE_SETATTR, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    g_assert_cmpuint(((const struct fuse_attr_out *)reply_body(f))->attr.size, ==, 4);
    in = (struct fuse_setattr_in){ .valid = FATTR_SIZE | FATTR_FH, .size = 2, .fh = fh };
    b = req_new(f, FUSE_SETATTR, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    in.fh = 12345;
    b = req_new(f, FUSE_SETATTR, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EBADF);

    in = (struct fuse_setattr_in){
        .valid = FATTR_ATIME | FATTR_MTIME, .atime = 1000000, .mtime = 2000000, .mtimensec = 5
    };
    b = req_new(f, FUSE_SETATTR, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);

    in = (struct fuse_setattr_in){ .valid = FATTR_UID | FATTR_GID, .uid = getuid(),
                                   .gid = getgid() };
    b = req_new(f, FUSE_SETATTR, node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);

    g_assert_cmpint(stat(p, &st), ==, 0);
    g_assert_cmpint(st.st_size, ==, 2);
    g_assert_cmpint(st.st_mode & 07777, ==, 0600);
    g_assert_cmpint(st.st_mtim.tv_sec, ==, 2000000);
    g_assert_cmpint(st.st_atim.tv_sec, ==, 1000000);

    /* Truncating a directory by path. */
    in = (struct fuse_setattr_in){ .valid = FATTR_SIZE, .size = 0 };
    b = req_new(f, FUSE_SETATTR, FUSE_ROOT_ID);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EISDIR);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, node, fh), ==, 0);
}

static void test_statfs_access(Fixture *f, gconstpointer data)
{
    GByteArray *b = req_new(f, FUSE_STATFS, FUSE_ROOT_ID);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    const struct fuse_statfs_out *s = reply_body(f);
    g_assert_cmpuint(s->st.bsize, >, 0);
    g_assert_cmpuint(s->st.namelen, >, 0);

    host_write(f, "a", "");
    gint64 node = do_lookup(f, FUSE_ROOT_ID, "a", NULL);
    struct fuse_access_in in = { .mask = R_OK };
    b = req_new(f, FUSE_ACCESS, (guint64)node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    in.mask = 0x40;
    b = req_new(f, FUSE_ACCESS, (guint64)node);
    req_add(b, &in, sizeof(in));
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, -EINVAL);
}

static void test_forget(Fixture *f, gconstpointer data)
{
    host_write(f, "x", "x");
    host_write(f, "y", "y");
    gint64 x = do_lookup(f, FUSE_ROOT_ID, "x", NULL);
    g_assert_cmpint(do_lookup(f, FUSE_ROOT_ID, "x", NULL), ==, x);
    gint64 y = do_lookup(f, FUSE_ROOT_ID, "y", NULL);

    do_forget(f, (guint64)x, 1);
    g_assert_cmpint(do_getattr(f, (guint64)x, NULL), ==, 0);
    do_forget(f, (guint64)x, 1);
    g_assert_cmpint(do_getattr(f, (guint64)x, NULL), ==, -ESTALE);
    /* Forgetting the root or an unknown node changes nothing. */
    do_forget(f, FUSE_ROOT_ID, 100);
    do_forget(f, 424242, 1);
    g_assert_cmpint(do_getattr(f, FUSE_ROOT_ID, NULL), ==, 0);
    /* A new lookup of a forgotten file gets a new node id. */
    gint64 x2 = do_lookup(f, FUSE_ROOT_ID, "x", NULL);
    g_assert_cmpint(x2, !=, x);

    /* BATCH_FORGET, with a count larger than the entries carried. */
    struct fuse_batch_forget_in bin = { .count = 1000 };
    struct fuse_forget_one ones[2] = { { (guint64)x2, 1 }, { (guint64)y, 5 } };
    GByteArray *b = req_new(f, FUSE_BATCH_FORGET, 0);
    req_add(b, &bin, sizeof(bin));
    req_add(b, ones, sizeof(ones));
    g_assert_cmpuint(req_send(f, b), ==, 0);
    g_assert_cmpint(do_getattr(f, (guint64)x2, NULL), ==, -ESTALE);
    g_assert_cmpint(do_getattr(f, (guint64)y, NULL), ==, -ESTALE);
}

static void test_readonly(Fixture *f, gconstpointer data)
{
    guint64 node = 0, fh = 0;

    host_write(f, "ro", "read only");
    gint64 n = do_lookup(f, FUSE_ROOT_ID, "ro", NULL);
    g_assert_cmpint(do_create(f, FUSE_ROOT_ID, "new", O_RDWR, &node, &fh), ==, -EROFS);
    g_assert_cmpint(do_mkdir(f, FUSE_ROOT_ID, "d"), ==, -EROFS);
    g_assert_cmpint(do_name_op(f, FUSE_UNLINK, FUSE_ROOT_ID, "ro"), ==, -EROFS);
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)n, O_RDWR, &fh), ==, -EROFS);
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)n, O_RDONLY | O_TRUNC, &fh), ==, -EROFS);
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)n, O_RDONLY, &fh), ==, 0);
    g_assert_cmpint(do_read(f, (guint64)n, fh, 0, 100), ==, 9);
    g_assert_cmpint(do_write(f, (guint64)n, fh, 0, "x", 1), ==, -EROFS);
    g_autofree char *p = host_path(f, "ro");
    g_autofree char *contents = NULL;
    g_assert_true(g_file_get_contents(p, &contents, NULL, NULL));
    g_assert_cmpstr(contents, ==, "read only");
}

static void test_max_open_fds(Fixture *f, gconstpointer data)
{
    /* max 8: the root and 7 more. */
    GArray *nodes = g_array_new(FALSE, FALSE, sizeof(gint64));
    int enfile = 0;

    for (int i = 0; i < 12; i++) {
        g_autofree char *name = g_strdup_printf("f%d", i);
        host_write(f, name, "");
        gint64 n = do_lookup(f, FUSE_ROOT_ID, name, NULL);
        if (n == -ENFILE) {
            enfile++;
        } else {
            g_assert_cmpint(n, >, 0);
            g_array_append_val(nodes, n);
        }
    }
    g_assert_cmpuint(nodes->len, ==, 7);
    g_assert_cmpint(enfile, ==, 5);
    guint64 fh = 0;
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)g_array_index(nodes, gint64, 0), O_RDONLY,
                            &fh), ==, -ENFILE);
    /* Forgetting gives the fds back. */
    do_forget(f, (guint64)g_array_index(nodes, gint64, 0), 1);
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)g_array_index(nodes, gint64, 1), O_RDONLY,
                            &fh), ==, 0);
    g_assert_cmpint(do_release(f, FUSE_RELEASE, 0, fh), ==, 0);
    g_array_unref(nodes);
}

static void test_destroy(Fixture *f, gconstpointer data)
{
    host_write(f, "x", "x");
    gint64 x = do_lookup(f, FUSE_ROOT_ID, "x", NULL);
    guint64 fh = 0;
    g_assert_cmpint(do_open(f, FUSE_OPEN, (guint64)x, O_RDONLY, &fh), ==, 0);

    GByteArray *b = req_new(f, FUSE_DESTROY, 0);
    g_assert_cmpint(reply_check(f, req_send(f, b)), ==, 0);
    g_assert_cmpint(do_getattr(f, FUSE_ROOT_ID, NULL), ==, -EIO);
    g_assert_cmpint(do_init(f, 7), ==, 0);
    g_assert_cmpint(do_getattr(f, FUSE_ROOT_ID, NULL), ==, 0);
    g_assert_cmpint(do_getattr(f, (guint64)x, NULL), ==, -ESTALE);
    g_assert_cmpint(do_read(f, (guint64)x, fh, 0, 1), ==, -EBADF);

    /* A second INIT without DESTROY (a rebooted guest) also starts afresh. */
    x = do_lookup(f, FUSE_ROOT_ID, "x", NULL);
    g_assert_cmpint(do_init(f, 7), ==, 0);
    g_assert_cmpint(do_getattr(f, (guint64)x, NULL), ==, -ESTALE);
}

typedef struct {
    Fixture *f;
    guint seed;
} Worker;

/* Each thread runs its own lookups, reads and forgets on shared files. */
static gpointer worker_run(gpointer data)
{
    Worker *w = data;
    guint8 reply[8192];
    guint64 unique = 0;

    for (int i = 0; i < 2000; i++) {
        char name[8];
        snprintf(name, sizeof(name), "t%u", (w->seed + (guint)i) % 4);
        GByteArray *b = g_byte_array_new();
        struct fuse_in_header h = { .opcode = FUSE_LOOKUP, .unique = ++unique,
                                    .nodeid = FUSE_ROOT_ID };
        g_byte_array_append(b, (guint8 *)&h, sizeof(h));
        g_byte_array_append(b, (guint8 *)name, (guint)strlen(name) + 1);
        ((struct fuse_in_header *)b->data)->len = b->len;
        struct iovec out = { b->data, b->len };
        struct iovec in = { reply, sizeof(reply) };
        g_assert_cmpuint(vfs_fs_handle(w->f->fs, &out, 1, &in, 1), >, 0);
        g_byte_array_unref(b);
        const struct fuse_out_header *oh = (const void *)reply;
        g_assert_cmpint(oh->error, ==, 0);
        guint64 node = ((const struct fuse_entry_out *)(oh + 1))->nodeid;

        struct {
            struct fuse_in_header h;
            struct fuse_getattr_in g;
        } ga = { { sizeof(ga), FUSE_GETATTR, ++unique, node }, { 0 } };
        out = (struct iovec){ &ga, sizeof(ga) };
        g_assert_cmpuint(vfs_fs_handle(w->f->fs, &out, 1, &in, 1), >, 0);
        g_assert_cmpint(oh->error, ==, 0);

        struct {
            struct fuse_in_header h;
            struct fuse_forget_in fg;
        } fg = { { sizeof(fg), FUSE_FORGET, ++unique, node }, { 1 } };
        out = (struct iovec){ &fg, sizeof(fg) };
        g_assert_cmpuint(vfs_fs_handle(w->f->fs, &out, 1, &in, 1), ==, 0);
    }
    return NULL;
}

static void test_threads(Fixture *f, gconstpointer data)
{
    Worker w[4];
    GThread *t[4];

    for (int i = 0; i < 4; i++) {
        g_autofree char *name = g_strdup_printf("t%d", i);
        host_write(f, name, "x");
    }
    for (guint i = 0; i < 4; i++) {
        w[i] = (Worker){ f, i };
        t[i] = g_thread_new("fuse-worker", worker_run, &w[i]);
    }
    for (guint i = 0; i < 4; i++) {
        g_thread_join(t[i]);
    }
    /* Every lookup was forgotten: only the root is left. */
    for (int i = 0; i < 4; i++) {
        g_autofree char *name = g_strdup_printf("t%d", i);
        gint64 n = do_lookup(f, FUSE_ROOT_ID, name, NULL);
        g_assert_cmpint(n, >, 0);
        do_forget(f, (guint64)n, 1);
    }
}

#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* Files the guest creates get the mode it asked for, whatever our umask takes away. */
    umask(027);

    g_test_add_func("/virtiofs/fuse/new-errors", test_new_errors);
    g_test_add_func("/virtiofs/fuse/requests-before-init", test_not_initialized);
    ADD("/virtiofs/fuse/init", test_init);
    ADD("/virtiofs/fuse/lookup-getattr", test_lookup_getattr);
    ADD("/virtiofs/fuse/names-refused", test_names_refused);
    ADD("/virtiofs/fuse/create-write-read", test_create_write_read);
    ADD("/virtiofs/fuse/create-as-caller", test_create_as_caller);
    ADD("/virtiofs/fuse/write-size-checks", test_write_size_checks);
    ADD("/virtiofs/fuse/split-lookup-every-offset", test_split_lookup);
    ADD("/virtiofs/fuse/split-write-read-every-offset", test_split_write_read);
    ADD("/virtiofs/fuse/short-buffers", test_short_buffers);
    ADD("/virtiofs/fuse/unknown-opcode", test_unknown_opcode);
    ADD("/virtiofs/fuse/mkdir-readdir", test_mkdir_readdir);
    ADD("/virtiofs/fuse/rename-unlink-rmdir", test_rename_unlink_rmdir);
    ADD("/virtiofs/fuse/symlink-readlink", test_symlink_readlink);
    ADD("/virtiofs/fuse/escape-refused", test_escape_refused);
    ADD("/virtiofs/fuse/setattr", test_setattr);
    ADD("/virtiofs/fuse/statfs-access", test_statfs_access);
    ADD("/virtiofs/fuse/forget", test_forget);
    ADD("/virtiofs/fuse/destroy", test_destroy);
    ADD("/virtiofs/fuse/threads", test_threads);
    g_test_add("/virtiofs/fuse/readonly", Fixture, NULL, fixture_setup_ro, test_readonly,
               fixture_teardown);
    g_test_add("/virtiofs/fuse/max-open-fds", Fixture, NULL, fixture_setup_fds,
               test_max_open_fds, fixture_teardown);
    return g_test_run();
}
