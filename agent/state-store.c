/* Atomic files: temp file, fsync, rename, fsync of the directory. */
#include "state-store.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <berth/error.h>

static void (*step_hook)(BerthStateStep step);

void
berth_state_set_step_hook(void (*hook)(BerthStateStep step))
{
    step_hook = hook;
}

static void
step(BerthStateStep s)
{
    if (step_hook) {
        step_hook(s);
    }
}

static gboolean
fsync_dir_of(const char *path, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

    if (fd < 0 || fsync(fd) < 0) {
        int err = errno;
        if (fd >= 0) {
            close(fd);
        }
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "cannot sync directory '%s': %s", dir, g_strerror(err));
        return FALSE;
    }
    close(fd);
    return TRUE;
}

static gboolean
write_all(int fd, const char *data, gsize len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return FALSE;
        }
        data += n;
        len -= (gsize) n;
    }
    return TRUE;
}

gboolean
berth_state_write(const char *path, const char *data, gsize len, guint mode, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    g_autofree char *tmp = g_strdup_printf("%s/.%s.tmp-XXXXXX", dir, base);
    gsize half = len / 2;
    int fd;
    int err;

    fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, (int) mode);
    if (fd < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "cannot create a temporary file in '%s': %s", dir, g_strerror(errno));
        return FALSE;
    }
    step(BERTH_STATE_STEP_TEMP_CREATED);
    /* fchmod: mkstemp's mode is filtered by the umask, the caller's mode is what we want. */
    if (fchmod(fd, mode) < 0 || !write_all(fd, data, half)) {
        goto fail;
    }
    step(BERTH_STATE_STEP_HALF_WRITTEN);
    if (!write_all(fd, data + half, len - half)) {
        goto fail;
    }
    step(BERTH_STATE_STEP_WRITTEN);
    if (fsync(fd) < 0) {
        goto fail;
    }
    step(BERTH_STATE_STEP_SYNCED);
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        goto fail;
    }
    step(BERTH_STATE_STEP_RENAMED);
    return fsync_dir_of(path, error);

fail:
    err = errno;
    if (fd >= 0) {
        close(fd);
    }
    unlink(tmp);
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot write '%s': %s", path,
                g_strerror(err));
    return FALSE;
}

gboolean
berth_state_remove(const char *path, GError **error)
{
    if (unlink(path) < 0) {
        if (errno == ENOENT) {
            return TRUE;
        }
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot remove '%s': %s", path,
                    g_strerror(errno));
        return FALSE;
    }
    return fsync_dir_of(path, error);
}

gboolean
berth_state_mkdir(const char *path, guint mode, GError **error)
{
    if (g_mkdir_with_parents(path, (int) mode) < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot create directory '%s': %s",
                    path, g_strerror(errno));
        return FALSE;
    }
    return TRUE;
}
