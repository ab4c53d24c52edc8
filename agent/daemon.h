/* The daemon: start-up, the main loop, signals, reload and a clean stop. */
#pragma once

#include <glib.h>

typedef struct {
    const char *config_path; /* NULL = the default for this mode */
    gboolean list_plugins;   /* print what would load and exit */
} BerthDaemonOptions;

/* Runs berthd; returns the process exit code (0 clean stop, 1 start-up failure). */
int berth_daemon_run(const BerthDaemonOptions *opts);

/* Installs berthd's log writer: journald when stderr is the journal, else stderr, filtered by
 * @level ("error", "warning", "message", "info", "debug"). */
void berth_daemon_set_log_level(const char *level);
