/* Spawning processes and watching them by pidfd on the main context. */
#pragma once

#include <berth/host.h>

/* Spawns per BerthSpawnSpec (see include/berth/host.h). */
gboolean berth_process_spawn(const BerthSpawnSpec *spec, pid_t *pid, int *pidfd, GError **error);

/* Opens a pidfd for @pid; -1 with errno ENOSYS where the kernel has none. */
int berth_process_pidfd_open(pid_t pid);

/* Watches @pid on @ctx (see BerthHost.process_watch). Takes @pidfd (-1: opens one; falls back
 * to polling every 50 ms when the kernel has no pidfds, logged once). */
guint berth_process_watch(GMainContext *ctx, pid_t pid, int pidfd, BerthProcessExitFunc func,
                          gpointer data, GError **error);
/* Stops a watch before it fired (any thread). */
void berth_process_unwatch(guint id);

/* Sends @sig through the pidfd when there is one (no pid reuse race). */
gboolean berth_process_signal(pid_t pid, int pidfd, int sig, GError **error);
