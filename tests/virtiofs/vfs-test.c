/* Fixtures and log capture for the virtiofs device tests. */
#include "vfs-test.h"

#include <string.h>
#include <sys/socket.h>

static GMutex log_lock;
static GString *log_text;

static GLogWriterOutput capture(GLogLevelFlags level, const GLogField *fields, gsize n,
                                gpointer user_data)
{
    for (gsize i = 0; i < n; i++) {
        if (g_str_equal(fields[i].key, "MESSAGE")) {
            g_mutex_lock(&log_lock);
            g_string_append_printf(log_text, "%s\n", (const char *)fields[i].value);
            g_mutex_unlock(&log_lock);
        }
    }
    if (g_getenv("VFS_TEST_VERBOSE")) {
        return g_log_writer_standard_streams(level, fields, n, user_data);
    }
    return G_LOG_WRITER_HANDLED;
}

void vfs_test_init(int *argc, char ***argv)
{
    g_test_init(argc, argv, NULL);
    /* Hostile input makes the device warn; that is the behaviour under test, not a failure. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
    log_text = g_string_new(NULL);
    g_log_set_writer_func(capture, NULL, NULL);
}

gboolean vfs_test_log_contains(const char *needle)
{
    g_mutex_lock(&log_lock);
    gboolean found = strstr(log_text->str, needle) != NULL;
    g_mutex_unlock(&log_lock);
    return found;
}

void vfs_test_log_clear(void)
{
    g_mutex_lock(&log_lock);
    g_string_truncate(log_text, 0);
    g_mutex_unlock(&log_lock);
}

guint vfs_test_poll_us;
gboolean vfs_test_pool_inline;
guint vfs_test_pool_spin_us;
guint vfs_test_coalesce_us;

void vfs_test_up(VfsTest *t, guint pool, const VfsFeSetup *setup)
{
    g_autoptr(GError) error = NULL;
    int sv[2];

    memset(t, 0, sizeof(*t));
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    VfsDeviceOptions opts = {
        .handle = fake_fs_handle,
        .user_data = &t->fs,
        .thread_pool_size = pool,
        .poll_us = vfs_test_poll_us,
        .pool_inline = vfs_test_pool_inline,
        .pool_spin_us = vfs_test_pool_spin_us,
        .coalesce_us = vfs_test_coalesce_us,
    };
    t->dev = vfs_device_new(&opts, &error);
    g_assert_no_error(error);
    g_assert_true(vfs_device_start(t->dev, sv[0], &error));
    t->fe = vfs_fe_new(sv[1], VFS_TEST_MEM, &error);
    g_assert_no_error(error);
    if (setup) {
        g_assert_true(vfs_fe_setup(t->fe, setup, &error));
        g_assert_no_error(error);
    }
}

void vfs_test_down(VfsTest *t)
{
    g_autoptr(GError) error = NULL;
    g_clear_pointer(&t->fe, vfs_fe_free);
    vfs_device_wait(t->dev, &error);
    g_clear_pointer(&t->dev, vfs_device_free);
}

guint32 vfs_test_fuse(VfsTest *t, guint q, guint32 opcode, guint64 nodeid, const void *arg,
                      guint32 arg_len, void *reply, guint32 reply_len, guint32 split,
                      gboolean indirect)
{
    static guint64 unique = 1;
    g_autofree guint8 *req = g_malloc(sizeof(struct fuse_in_header) + arg_len);
    gsize len = vfs_fe_fuse_build(req, opcode, nodeid, unique++, arg, arg_len, NULL, 0);
    guint64 req_gpa = vfs_fe_alloc(t->fe, len, 8);
    guint64 reply_gpa = vfs_fe_alloc(t->fe, reply_len, 8);
    VfsFeUsed used;

    memset(vfs_fe_host(t->fe, reply_gpa), 0xee, reply_len);
    int head = vfs_fe_submit_split(t->fe, q, req_gpa, req, len, reply_gpa, reply_len, split,
                                   indirect);
    g_assert_cmpint(head, >=, 0);
    vfs_fe_kick(t->fe, q);
    g_assert_true(vfs_fe_wait_used(t->fe, q, &used, VFS_TEST_TIMEOUT_MS));
    g_assert_cmpuint(used.id, ==, head);
    g_assert_cmpuint(used.len, <=, reply_len);
    memcpy(reply, vfs_fe_host(t->fe, reply_gpa), reply_len);
    vfs_fe_alloc_reset(t->fe);
    return used.len;
}
