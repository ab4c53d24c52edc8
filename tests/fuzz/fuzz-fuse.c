/* libFuzzer target: FUSE requests split into random iovec layouts, fed to vfs_fs_handle(). */
#include "../../plugins/virtiofs/fs-handler.h"

#include <fcntl.h>
#include <ftw.h>
#include <glib.h>
#include <linux/fuse.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/*
 * An input is a sequence of requests, each:
 *   u8  flags      bit 0: fix up fuse_in_header.len to the request's length
 *   u8  out_cuts   number of cut points in the request (mod 8)
 *   u8  in_cuts    number of cut points in the reply buffer (mod 8)
 *   u16 in_size    reply buffer size (little endian, mod 64 KiB)
 *   u16 req_len    request length, then out_cuts + in_cuts u16 cut points, then the request.
 * Every input starts with a fresh INIT, so node ids (2, 3...) are the same from run to run.
 */

#define MAX_CUTS 8

static char *scratch;
static VfsFs *fs;
static guint runs;

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    if (ftw->level > 0) {
        remove(path);
    }
    return 0;
}

static void populate(void)
{
    g_autofree char *d = g_build_filename(scratch, "dir", NULL);
    g_autofree char *f = g_build_filename(scratch, "file", NULL);
    g_autofree char *f2 = g_build_filename(scratch, "dir", "inner", NULL);
    g_autofree char *l1 = g_build_filename(scratch, "out", NULL);
    g_autofree char *l2 = g_build_filename(scratch, "up", NULL);

    nftw(scratch, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    mkdir(d, 0755);
    g_file_set_contents(f, "0123456789abcdef", -1, NULL);
    g_file_set_contents(f2, "inner", -1, NULL);
    symlink("/etc", l1);
    symlink("../..", l2);
}

static void fs_restart(void)
{
    VfsFsOptions opts = { .shared_dir = scratch, .cache = VFS_CACHE_AUTO, .max_open_fds = 64 };

    vfs_fs_free(fs);
    populate();
    fs = vfs_fs_new(&opts, NULL);
    g_assert_nonnull(fs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    scratch = g_dir_make_tmp("berth-fuzz-fuse-XXXXXX", NULL);
    g_assert_nonnull(scratch);
    fs_restart();
    return 0;
}

static void send_init(guint8 *reply)
{
    struct {
        struct fuse_in_header h;
        struct fuse_init_in i;
    } req = { { sizeof(req), FUSE_INIT, 1, 0, 0, 0, 0, 0, 0 },
              { 7, FUSE_KERNEL_MINOR_VERSION, 65536, FUSE_DO_READDIRPLUS | FUSE_MAX_PAGES, 0,
                { 0 } } };
    struct iovec out = { &req, sizeof(req) };
    struct iovec in = { reply, 4096 };

    vfs_fs_handle(fs, &out, 1, &in, 1);
}

static size_t take16(const uint8_t **p, size_t *left)
{
    if (*left < 2) {
        *left = 0;
        return 0;
    }
    size_t v = (size_t)(*p)[0] | ((size_t)(*p)[1] << 8);
    *p += 2;
    *left -= 2;
    return v;
}

/* Splits @buf at the sorted cut points into @iov (empty pieces included). */
static unsigned split(guint8 *buf, size_t len, size_t *cuts, unsigned ncuts, struct iovec *iov)
{
    size_t prev = 0;
    unsigned n = 0;

    for (unsigned i = 0; i < ncuts; i++) {
        for (unsigned j = i + 1; j < ncuts; j++) {
            if (cuts[j] < cuts[i]) {
                size_t t = cuts[i];
                cuts[i] = cuts[j];
                cuts[j] = t;
            }
        }
    }
    for (unsigned i = 0; i < ncuts; i++) {
        size_t c = MIN(cuts[i], len);
        iov[n].iov_base = buf + prev;
        iov[n].iov_len = c - prev;
        prev = c;
        n++;
    }
    iov[n].iov_base = buf + prev;
    iov[n].iov_len = len - prev;
    return n + 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static guint8 reply[65536];
    const uint8_t *p = data;
    size_t left = size;

    /* Files the inputs create pile up: start from a clean share now and then. */
    if (++runs % 512 == 0) {
        fs_restart();
    }
    send_init(reply);
    for (int count = 0; left >= 7 && count < 16; count++) {
        guint8 flags = p[0];
        unsigned out_cuts = p[1] % MAX_CUTS;
        unsigned in_cuts = p[2] % MAX_CUTS;
        p += 3;
        left -= 3;
        size_t in_size = take16(&p, &left);
        size_t req_len = take16(&p, &left);
        size_t ocuts[MAX_CUTS];
        size_t icuts[MAX_CUTS];
        for (unsigned i = 0; i < out_cuts; i++) {
            ocuts[i] = take16(&p, &left);
        }
        for (unsigned i = 0; i < in_cuts; i++) {
            icuts[i] = take16(&p, &left);
        }
        req_len = MIN(req_len, left);
        /* A private copy: vfs_fs_handle reads the request, never writes it. */
        g_autofree guint8 *req = g_malloc0(req_len + 1);
        memcpy(req, p, req_len);
        p += req_len;
        left -= req_len;
        if ((flags & 1) && req_len >= sizeof(struct fuse_in_header)) {
            guint32 len = (guint32)req_len;
            memcpy(req, &len, sizeof(len));
        }
        struct iovec out[MAX_CUTS + 1];
        struct iovec in[MAX_CUTS + 1];
        unsigned out_n = split(req, req_len, ocuts, out_cuts, out);
        unsigned in_n = split(reply, in_size, icuts, in_cuts, in);
        size_t n = vfs_fs_handle(fs, out, out_n, in, in_n);
        g_assert_cmpuint(n, <=, in_size);
        if (n > 0) {
            const struct fuse_out_header *oh = (const void *)reply;
            g_assert_cmpuint(n, >=, sizeof(*oh));
            /* The pieces are consecutive in reply[], so the header reads back whole. */
            g_assert_cmpuint(oh->len, ==, n);
        }
    }
    return 0;
}
