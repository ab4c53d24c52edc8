/* PCI devices through sysfs under a configurable root: read, detach to vfio-pci, reattach,
 * reset, IOMMU group checks. Library code: returns errors, never logs. */
#pragma once

#include <gio/gio.h>

G_BEGIN_DECLS

/* Where the tree lives and how long to wait for an effect of a write. */
typedef struct {
    char *sysfs_root; /* "/sys" */
    char *dev_vfio;   /* "/dev/vfio" */
    guint wait_ms;    /* bound of every wait for an effect (driver link, /dev/vfio/N) */
} VfioSysfs;

VfioSysfs *vfio_sysfs_new(const char *sysfs_root, const char *dev_vfio, guint wait_ms);
void vfio_sysfs_free(VfioSysfs *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfioSysfs, vfio_sysfs_free)

/* One device as sysfs shows it. */
typedef struct {
    char *address;         /* canonical "0000:06:12.5" */
    guint vendor;          /* 0x8086 */
    guint device;          /* 0x10d3 */
    guint class_code;      /* 0x020000 */
    char *driver;          /* bound driver, or NULL */
    int iommu_group;       /* -1: none (IOMMU off) */
    int numa_node;         /* -1: none */
    char *driver_override; /* NULL when "(null)" */
    gboolean has_reset;    /* a sysfs reset file: function-level reset works */
} VfioPciDev;

void vfio_pci_dev_free(VfioPciDev *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfioPciDev, vfio_pci_dev_free)

/* A PCI-to-PCI bridge (class 0x0604xx): may share a group with an assigned device. */
#define VFIO_PCI_CLASS_BRIDGE 0x0604

/* Reads one device; BERTH_ERROR_NO_SUCH_DEVICE when sysfs has no such address,
 * BERTH_ERROR_INVALID_ARGUMENT when @address is malformed. */
VfioPciDev *vfio_sysfs_read_device(VfioSysfs *s, const char *address, GError **error);

/* Every PCI device, sorted by address (VfioPciDev). At most 4096 are read. */
GPtrArray *vfio_sysfs_list(VfioSysfs *s, GError **error);

/* TRUE when the vfio-pci driver is registered (the module is loaded). */
gboolean vfio_sysfs_have_vfio_driver(VfioSysfs *s, GError **error);

/*
 * Checks that every other device of @address's IOMMU group is unbound, bound to vfio-pci or
 * pci-stub, or a PCI bridge. BERTH_ERROR_INVALID_STATE lists the blocking devices; also when
 * the device has no group (the IOMMU is off).
 */
gboolean vfio_sysfs_group_viable(VfioSysfs *s, const char *address, GError **error);

/*
 * Binds @address to vfio-pci: driver_override, unbind from its driver, drivers_probe, wait for
 * the group's /dev/vfio node. *@orig_driver gets the driver it had (NULL: none). A device
 * already on vfio-pci is left as it is (*@orig_driver NULL). A failing step rolls back the
 * steps before it; the error names the step.
 */
gboolean vfio_sysfs_detach(VfioSysfs *s, const char *address, char **orig_driver,
                           GCancellable *cancel, GError **error);

/*
 * Gives @address back to the host: unbind from vfio-pci, clear driver_override, reprobe, and
 * check that @orig_driver (when not NULL) took it. A failing step rolls back (the device ends
 * on vfio-pci again); the error names the step.
 */
gboolean vfio_sysfs_reattach(VfioSysfs *s, const char *address, const char *orig_driver,
                             GCancellable *cancel, GError **error);

/* Function-level reset through the sysfs reset file; BERTH_ERROR_UNSUPPORTED without one. */
gboolean vfio_sysfs_reset(VfioSysfs *s, const char *address, GError **error);

G_END_DECLS
