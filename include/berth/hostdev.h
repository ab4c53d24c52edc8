/* The ops table of a hostdev plugin (kind BERTH_PLUGIN_HOSTDEV). */
#pragma once

#include <berth/plugin.h>

G_BEGIN_DECLS

/**
 * BerthHostdevOps:
 * @prepare makes a host device ready for @def (for managed='yes': detach it to vfio-pci) and
 * puts it on the active list; @release takes it off the active list (and for managed='yes'
 * reattaches it to its host driver). Both are called from the hypervisor plugin's jobs through
 * host->hostdev_prepare/hostdev_release. Node device methods are registered by the plugin with
 * host->method_register.
 */
typedef struct {
    gsize struct_size;
    gboolean (*prepare)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                        const BerthHostdevDef *hostdev, GError **error);
    gboolean (*release)(gpointer priv, const BerthDomainDef *def,
                        const BerthHostdevDef *hostdev, GError **error);
} BerthHostdevOps;

G_END_DECLS
