/* The ops table of a hypervisor plugin (kind BERTH_PLUGIN_HYPERVISOR). */
#pragma once

#include <berth/plugin.h>

G_BEGIN_DECLS

/* Flags of domain_shutdown. */
typedef enum {
    BERTH_SHUTDOWN_FORCE = 1 << 0, /* fall back to destroy when the guest does not stop */
} BerthShutdownFlags;

/* Flags of domain_start. */
typedef enum {
    BERTH_START_PAUSED = 1 << 0, /* leave the vCPUs stopped (state paused, reason user) */
} BerthStartFlags;

/**
 * BerthHypervisorOps:
 * Lifecycle operations. Each runs inside a job on the domain (a worker thread) and reports
 * state changes through host->domain_set_state(). A NULL op is "unsupported". Ops waiting on
 * the guest watch host->job_get_cancellable(job): a destroy cancels it.
 */
typedef struct {
    gsize struct_size;
    /* Checks that the definition can run here (emulator, machine, devices); at define time. */
    gboolean (*domain_validate)(gpointer priv, const BerthDomainDef *def, GError **error);
    gboolean (*domain_start)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                             guint flags, GError **error);
    gboolean (*domain_shutdown)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                                guint flags, GError **error);
    gboolean (*domain_destroy)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                               guint flags, GError **error);
    gboolean (*domain_suspend)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                               GError **error);
    gboolean (*domain_resume)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                              GError **error);
    gboolean (*domain_reboot)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                              GError **error);
    /* After a berthd restart: called for every domain whose live status this plugin saved.
     * Reattach to the running process (pidfd, monitor) and set the state; when it is gone,
     * clean up and set shutoff. */
    gboolean (*domain_reconnect)(gpointer priv, const BerthDomainDef *def, GError **error);
    /* Unplugs the device with this alias (an alias of the live definition). When the whole
     * teardown is done (the guest let go of it, backends stopped, host devices released),
     * the plugin calls host->domain_device_removed(); the core then drops the device from the
     * live definition and publishes device-removed. Return TRUE once the unplug is under way:
     * when the device is still there after the op returns, the job reports "removal in
     * progress" and the plugin calls domain_device_removed whenever the guest lets go. */
    gboolean (*device_detach)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                              const char *alias, GError **error);

    /* ABI 1.1 */
    /* Hot-plugs @dev into the running domain @def (the live definition without @dev). The
     * core has given @dev a unique alias; the plugin may fill in its guest address. On
     * success the core adds @dev to the live definition and publishes device-added. */
    gboolean (*device_attach)(gpointer priv, BerthJob *job, const BerthDomainDef *def,
                              BerthDeviceDef *dev, GError **error);
} BerthHypervisorOps;

G_END_DECLS
