/* Shared by the virtiofs device tests: a device on one end of a socketpair, the front-end on the other. */
#pragma once

#include "device.h"
#include "fake-fs.h"
#include "frontend.h"

#define VFS_TEST_MEM (16 * 1024 * 1024)
#define VFS_TEST_TIMEOUT_MS 10000

typedef struct {
    FakeFs fs;
    VfsDevice *dev;
    VfsFe *fe;
} VfsTest;

/* Captures the device's log so that tests can check what it reported (and keep quiet). */
void vfs_test_init(int *argc, char ***argv);
gboolean vfs_test_log_contains(const char *needle);
void vfs_test_log_clear(void);

/* The polling window (VfsDeviceOptions.poll_us) of the next vfs_test_up(); 0 by default. */
extern guint vfs_test_poll_us;
/* With a pool, for the next vfs_test_up(): VfsDeviceOptions.pool_inline and pool_spin_us
 * (FALSE and 0 by default). */
extern gboolean vfs_test_pool_inline;
extern guint vfs_test_pool_spin_us;
/* VfsDeviceOptions.coalesce_us of the next vfs_test_up(); 0 by default. */
extern guint vfs_test_coalesce_us;
/* Starts a device (pool size @pool) and a front-end; runs the handshake when @setup. */
void vfs_test_up(VfsTest *t, guint pool, const VfsFeSetup *setup);
/* Disconnects and frees both; the device must have finished everything. */
void vfs_test_down(VfsTest *t);

/* One FUSE request on queue @q; the request and the reply buffer cut at @split bytes. Returns
 * the used length and copies the reply into @reply. Asserts that the request completes. */
guint32 vfs_test_fuse(VfsTest *t, guint q, guint32 opcode, guint64 nodeid, const void *arg,
                      guint32 arg_len, void *reply, guint32 reply_len, guint32 split,
                      gboolean indirect);
