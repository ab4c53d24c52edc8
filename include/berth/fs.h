/* The ops table of a filesystem-share plugin (kind BERTH_PLUGIN_FS). */
#pragma once

#include <berth/plugin.h>

G_BEGIN_DECLS

/**
 * BerthFsOps:
 * @share_start starts a vhost-user-fs backend for one <filesystem> of @def before QEMU starts
 * and returns the unix socket QEMU connects to (g_free it). @share_stop stops it after QEMU has
 * gone (or the device was unplugged).
 */
typedef struct {
    gsize struct_size;
    gboolean (*share_start)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                            const BerthFsDef *fs, char **socket_path, GError **error);
    gboolean (*share_stop)(gpointer priv, const BerthDomainDef *def, const BerthFsDef *fs,
                           GError **error);
} BerthFsOps;

G_END_DECLS
