/* The QEMU command line and hotplug commands built from a domain definition. */
#pragma once

#include <berth/domain.h>
#include <glib.h>

#include "caps.h"

G_BEGIN_DECLS

/*
 * BerthQemuLayout: where every device of a running domain sits on the guest's PCI topology.
 * Built once at start, deterministically from the definition (same XML in, same addresses
 * out); a device the XML gives an address keeps it. On q35 every PCI device gets its own
 * pcie-root-port (as libvirt does), plus @spare_ports empty root ports for hot-plugging; on pc
 * devices take slots on pci.0. Hot-plug takes a free spare port (or slot), unplug frees it.
 * Saved in the plugin's live status (to_json/from_json) so that a reconnected berthd keeps
 * the same layout. All functions are pure (no I/O) and not thread-safe on one layout.
 */
typedef struct BerthQemuLayout BerthQemuLayout;

/* Every device of @def must have an alias (the core assigns them at start). */
BerthQemuLayout *berth_qemu_layout_new(const BerthDomainDef *def, guint spare_ports,
                                       GError **error);
void berth_qemu_layout_free(BerthQemuLayout *layout);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthQemuLayout, berth_qemu_layout_free)
char *berth_qemu_layout_to_json(const BerthQemuLayout *layout);
BerthQemuLayout *berth_qemu_layout_from_json(const char *json, GError **error);
/* The accelerator a domain asks for: "tcg" for <domain type='qemu'>, else "kvm". */
const char *berth_qemu_domain_accel(const BerthDomainDef *def);
/* At define time: @caps knows the domain's machine type, and has KVM when the domain asks for
 * it (<domain type='kvm'>). The same check berth_qemu_build_argv() makes. */
gboolean berth_qemu_check_domain_caps(const BerthDomainDef *def, const BerthQemuCaps *caps,
                                      GError **error);
/* The alias of @dev, whatever its type (NULL for an unknown type). */
const char *berth_qemu_device_alias(const BerthDeviceDef *dev);
/* Reserves a free hotplug position for @dev (alias set); fails with BERTH_ERROR_INVALID_STATE
 * ("no free hotplug slot: ...") when there is none. */
gboolean berth_qemu_layout_attach(BerthQemuLayout *layout, const BerthDeviceDef *dev,
                                  GError **error);
/* Frees the position of @alias (no-op when unknown). */
void berth_qemu_layout_detach(BerthQemuLayout *layout, const char *alias);
/* The guest PCI address of @alias ("0000:01:00.0"), or NULL. g_free it. */
char *berth_qemu_layout_address(const BerthQemuLayout *layout, const char *alias);

/* What the command line needs besides the definition. */
typedef struct {
    const char *binary;       /* the emulator path, argv[0] */
    const char *accel;        /* "kvm" or "tcg" */
    const char *qmp_socket;   /* the monitor socket path (QEMU listens) */
    const char *run_dir;      /* the domain's runtime dir (0700), for sockets QEMU creates */
    const char *const *fs_sockets; /* vhost-user socket of def->filesystems[i], NULL-terminated
                                    * list in the same order (from the fs plugin) */
    gboolean acpi_pci_hotplug; /* q35: keep ACPI PCI hotplug (needs a guest OS to unplug);
                                * FALSE: native PCIe hotplug on the root ports */
    const BerthQemuCaps *caps; /* may be NULL (golden tests): then no capability checks */
} BerthQemuCmdOpts;

/*
 * The full argv (argv[0] = opts->binary) for @def laid out by @layout: -name, -uuid, -machine
 * (q35 default, pc), accel, -cpu, -m, -smp, the memory backend (memfd; share=on when the
 * domain has a virtiofs share or asks for shared memory), direct kernel boot, -blockdev disks
 * on virtio-blk (and sata/scsi), user and tap networking, serial ports (file, unix, null, pty),
 * vhost-user-fs devices, vfio-pci hostdevs, the pcie-root-ports, -nodefaults
 * -no-user-config -display none -sandbox on, the QMP monitor, -S. Fails with
 * BERTH_ERROR_UNSUPPORTED / INVALID_ARGUMENT for what cannot be expressed (naming it).
 */
GStrv berth_qemu_build_argv(const BerthDomainDef *def, const BerthQemuLayout *layout,
                            const BerthQemuCmdOpts *opts, GError **error);

/* One QMP command: @command with @args_json (a JSON object as text, or NULL). */
typedef struct {
    char *command;
    char *args_json;
} BerthQmpCall;

void berth_qmp_call_free(BerthQmpCall *call);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthQmpCall, berth_qmp_call_free)

/*
 * The QMP commands that hot-plug @dev (placed by berth_qemu_layout_attach) into a running
 * QEMU, in order: the backends (blockdev-add for the file and format nodes, netdev_add,
 * chardev-add for a vhost-user-fs socket given as @fs_socket) then device_add with the same
 * properties the command line would give it. @rollback gets, in the order to run them, the
 * commands that undo the backends if a later step fails. Arrays of BerthQmpCall.
 */
gboolean berth_qemu_hotplug_calls(const BerthDomainDef *def, const BerthQemuLayout *layout,
                                  const BerthDeviceDef *dev, const BerthQemuCmdOpts *opts,
                                  const char *fs_socket, GPtrArray **calls,
                                  GPtrArray **rollback, GError **error);

/* The commands that remove the backends of the device @alias of @def after QEMU reported
 * DEVICE_DELETED for it (blockdev-del, netdev_del, chardev-remove), in order; may be empty. */
GPtrArray *berth_qemu_unplug_calls(const BerthDomainDef *def, const char *alias);

G_END_DECLS
