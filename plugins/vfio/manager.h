/* The vfio plugin's device manager: ownership lists plus sysfs operations, one operation at a
 * time, with the rules of managed and unmanaged hostdevs. No BerthHost here, so unit tests
 * drive it directly; vfio.c is the plugin glue. */
#pragma once

#include <gio/gio.h>

#include "sysfs.h"

G_BEGIN_DECLS

typedef struct VfioManager VfioManager;

/* Called (on the calling thread, no lock held) after a device was detached or reattached:
 * @type is "nodedev-detached" or "nodedev-reattached", @detail_json a JSON object. */
typedef void (*VfioEventFunc)(const char *address, const char *type, const char *detail_json,
                              gpointer data);

/* Takes @sysfs. Loads the lists from @lists_path (missing = empty); fails on a corrupt file. */
VfioManager *vfio_manager_new(VfioSysfs *sysfs, const char *lists_path, VfioEventFunc func,
                              gpointer data, GError **error);
void vfio_manager_free(VfioManager *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfioManager, vfio_manager_free)

/* Lines about entries whose device is no longer on vfio-pci (after a restart); g_strfreev. */
char **vfio_manager_check_lists(VfioManager *m);

/*
 * Gives @address to @domain: BERTH_ERROR_BUSY when another (or the same) domain holds it.
 * managed: detached to vfio-pci unless it is there already. Unmanaged: it must be on vfio-pci
 * (BERTH_ERROR_INVALID_STATE otherwise). Either way its IOMMU group must be viable.
 */
gboolean vfio_manager_prepare(VfioManager *m, const char *domain, const char *address,
                              gboolean managed, GCancellable *cancel, GError **error);
/*
 * Takes @address off the active list of @domain (no-op when @domain does not hold it).
 * managed: reattached to its host driver; if that fails the device stays detached, on the
 * inactive list, and the error says why. Unmanaged: onto the inactive list.
 */
gboolean vfio_manager_release(VfioManager *m, const char *domain, const char *address,
                              GError **error);

/* nodedev.detach / reattach / reset. BERTH_ERROR_BUSY: in use by a domain, or (detach) already
 * detached. */
gboolean vfio_manager_detach(VfioManager *m, const char *address, GCancellable *cancel,
                             GError **error);
gboolean vfio_manager_reattach(VfioManager *m, const char *address, GCancellable *cancel,
                               GError **error);
gboolean vfio_manager_reset(VfioManager *m, const char *address, GError **error);

/* nodedev.get: one device as a JSON object. */
char *vfio_manager_device_json(VfioManager *m, const char *address, GError **error);
/* nodedev.list: a JSON array; @class_prefix ("0x02") and @driver ("vfio-pci", "none") filter
 * when not NULL. */
char *vfio_manager_list_json(VfioManager *m, const char *class_prefix, const char *driver,
                             GError **error);
/* The lists as stored (vfio_lists_to_json). */
char *vfio_manager_lists_json(VfioManager *m);

G_END_DECLS
