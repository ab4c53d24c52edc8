/* Atomic files: every definition and status berthd writes goes through here. */
#pragma once

#include <glib.h>

/*
 * Replaces @path with @data atomically: a temp file in the same directory, write, fsync, rename
 * over @path, fsync of the directory. A crash at any point leaves either the old file or the
 * new one, never a torn one. The temp file is removed on failure.
 */
gboolean berth_state_write(const char *path, const char *data, gsize len, guint mode,
                           GError **error);
/* Removes @path (missing is fine) and fsyncs its directory. */
gboolean berth_state_remove(const char *path, GError **error);
/* Creates @path and its parents with @mode; errors name the path. */
gboolean berth_state_mkdir(const char *path, guint mode, GError **error);

/* Steps of berth_state_write, for the crash test. */
typedef enum {
    BERTH_STATE_STEP_TEMP_CREATED = 0,
    BERTH_STATE_STEP_HALF_WRITTEN,
    BERTH_STATE_STEP_WRITTEN,
    BERTH_STATE_STEP_SYNCED,
    BERTH_STATE_STEP_RENAMED,
    BERTH_STATE_STEP_LAST
} BerthStateStep;

/* Test hook called at each step (NULL = none); a test _exit()s in it to simulate a crash. */
void berth_state_set_step_hook(void (*hook)(BerthStateStep step));
