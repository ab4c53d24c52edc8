/* A simulated sysfs for the vfio plugin's tests: a tree of PCI devices, drivers and IOMMU
 * groups under a temporary root, and a thread that reacts to writes of the control files the
 * way the kernel does, with injectable failures. See docs/hostdev.md for what it covers. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct VSim VSim;

/* Creates ROOT/sys/bus/pci/{devices,drivers,drivers_probe}, ROOT/sys/kernel/iommu_groups,
 * ROOT/dev/vfio and ROOT/sim (the failure controls). */
VSim *vsim_new(const char *root);
/* Stops the thread (if started). Leaves the tree on disk. */
void vsim_free(VSim *sim);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VSim, vsim_free)

/* ROOT/sys and ROOT/dev/vfio, the plugin's sysfs_root and dev_vfio_dir. */
const char *vsim_sysfs_root(VSim *sim);
const char *vsim_dev_vfio(VSim *sim);

/* A registered driver (a loaded module): drivers/NAME/{bind,unbind}. Before vsim_start. */
void vsim_add_driver(VSim *sim, const char *name);

/*
 * A device: @native is the driver whose id table matches it (NULL: none); @bound binds it to
 * @native now. @group < 0: no IOMMU group. @has_reset: a reset file (FLR). Before vsim_start.
 */
void vsim_add_device(VSim *sim, const char *addr, guint vendor, guint device, guint class_code,
                     int group, const char *native, gboolean bound, gboolean has_reset);

/*
 * Failures of one device, words separated by spaces (replaces the previous set):
 *   bind-fail            binds to vfio-pci do not happen
 *   reprobe-fail         the native driver does not take the device back
 *   unbind-fail          unbinds from the native driver do not happen
 *   vfio-unbind-fail     unbinds from vfio-pci do not happen
 *   unbind-delay-ms=N    every unbind takes N ms
 *   vanish-on-unbind     the device disappears (hot-unplug) when it is unbound
 *   no-devnode           binding to vfio-pci creates no /dev/vfio/GROUP
 *   reset-fail           writing reset fails (EISDIR: the file becomes a directory)
 * The same words written to ROOT/sim/ADDR.fail take effect as well (for the standalone
 * daemon).
 */
void vsim_set_fail(VSim *sim, const char *addr, const char *spec);

/* Starts the thread that watches the control files (inotify). */
gboolean vsim_start(VSim *sim, GError **error);

/* The driver @addr is bound to, or NULL (g_free). */
char *vsim_driver(VSim *sim, const char *addr);
/* How many times @addr was reset. */
guint vsim_resets(VSim *sim, const char *addr);
/* Writes that the thread handled so far (to wait until it has caught up). */
guint64 vsim_handled(VSim *sim);

G_END_DECLS
