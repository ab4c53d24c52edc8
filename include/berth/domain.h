/* Domain definitions as the core's XML parser fills them, and libvirt's state model. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/**
 * BerthDomainState:
 * libvirt's domain states, with libvirt's numeric values. Never renumbered.
 */
typedef enum {
    BERTH_DOMAIN_NOSTATE = 0,
    BERTH_DOMAIN_RUNNING = 1,
    BERTH_DOMAIN_BLOCKED = 2,
    BERTH_DOMAIN_PAUSED = 3,
    BERTH_DOMAIN_SHUTDOWN = 4, /* being shut down, or a destroy still waits for the process */
    BERTH_DOMAIN_SHUTOFF = 5,
    BERTH_DOMAIN_CRASHED = 6,
    BERTH_DOMAIN_PMSUSPENDED = 7,
    BERTH_DOMAIN_STATE_LAST
} BerthDomainState;

/* Reasons for RUNNING (libvirt's virDomainRunningReason values). */
typedef enum {
    BERTH_RUNNING_UNKNOWN = 0,
    BERTH_RUNNING_BOOTED = 1,
    BERTH_RUNNING_MIGRATED = 2,
    BERTH_RUNNING_RESTORED = 3,
    BERTH_RUNNING_FROM_SNAPSHOT = 4,
    BERTH_RUNNING_UNPAUSED = 5,
    BERTH_RUNNING_MIGRATION_CANCELED = 6,
    BERTH_RUNNING_SAVE_CANCELED = 7,
    BERTH_RUNNING_WAKEUP = 8,
    BERTH_RUNNING_CRASHED = 9,
    BERTH_RUNNING_POSTCOPY = 10,
    BERTH_RUNNING_REASON_LAST
} BerthRunningReason;

/* Reasons for PAUSED (a subset of libvirt's values, same numbers). */
typedef enum {
    BERTH_PAUSED_UNKNOWN = 0,
    BERTH_PAUSED_USER = 1,
    BERTH_PAUSED_MIGRATION = 2,
    BERTH_PAUSED_SAVE = 3,
    BERTH_PAUSED_DUMP = 4,
    BERTH_PAUSED_IOERROR = 5,
    BERTH_PAUSED_WATCHDOG = 6,
    BERTH_PAUSED_FROM_SNAPSHOT = 7,
    BERTH_PAUSED_SHUTTING_DOWN = 8,
    BERTH_PAUSED_SNAPSHOT = 9,
    BERTH_PAUSED_CRASHED = 10,
    BERTH_PAUSED_STARTING_UP = 11,
    BERTH_PAUSED_REASON_LAST
} BerthPausedReason;

/* Reasons for SHUTDOWN. */
typedef enum {
    BERTH_SHUTDOWN_UNKNOWN = 0,
    BERTH_SHUTDOWN_USER = 1,
    BERTH_SHUTDOWN_DESTROYED = 2, /* a destroy waits for a process that outlived SIGKILL */
    BERTH_SHUTDOWN_REASON_LAST
} BerthShutdownReason;

/* Reasons for SHUTOFF (libvirt's virDomainShutoffReason values). */
typedef enum {
    BERTH_SHUTOFF_UNKNOWN = 0,
    BERTH_SHUTOFF_SHUTDOWN = 1,
    BERTH_SHUTOFF_DESTROYED = 2,
    BERTH_SHUTOFF_CRASHED = 3,
    BERTH_SHUTOFF_MIGRATED = 4,
    BERTH_SHUTOFF_SAVED = 5,
    BERTH_SHUTOFF_FAILED = 6,
    BERTH_SHUTOFF_FROM_SNAPSHOT = 7,
    BERTH_SHUTOFF_DAEMON = 8,
    BERTH_SHUTOFF_REASON_LAST
} BerthShutoffReason;

/* Reasons for CRASHED. */
typedef enum {
    BERTH_CRASHED_UNKNOWN = 0,
    BERTH_CRASHED_PANICKED = 1,
    BERTH_CRASHED_REASON_LAST
} BerthCrashedReason;

/**
 * BerthPciAddress:
 * A PCI address, domain:bus:slot.function. @set is FALSE when the XML gave none (the
 * hypervisor plugin then assigns one).
 */
typedef struct {
    gboolean set;
    guint domain;   /* 0..0xffff */
    guint bus;      /* 0..0xff */
    guint slot;     /* 0..0x1f */
    guint function; /* 0..7 */
} BerthPciAddress;

/* <disk type='file' device='disk'>: a file-backed disk. */
typedef struct {
    char *alias;       /* <alias name='ua-...'/> or NULL: the hypervisor assigns virtio-disk0.. */
    char *device;      /* "disk" (default) or "cdrom" */
    char *driver_type; /* <driver type=>: "raw" (default) or "qcow2" */
    char *cache;       /* <driver cache=>: NULL, "none", "writeback", "writethrough", ... */
    char *source_file; /* <source file=> */
    char *target_dev;  /* <target dev='vda'> */
    char *target_bus;  /* <target bus=>: "virtio" (default), "sata", "scsi" */
    char *serial;      /* <serial> or NULL */
    gboolean readonly; /* <readonly/> */
    BerthPciAddress address;
} BerthDiskDef;

/* <interface type='user|network|bridge|ethernet'>. */
typedef struct {
    char *alias;
    char *type;       /* "user", "network", "bridge", "ethernet" */
    char *mac;        /* "52:54:00:xx:xx:xx" or NULL (the hypervisor generates one) */
    char *model;      /* <model type=>: "virtio" (default), "e1000", ... */
    char *source;     /* <source bridge=|network=>, or NULL */
    char *target_dev; /* <target dev=>: the tap device for bridge/ethernet, or NULL */
    BerthPciAddress address;
} BerthNetDef;

/* <serial>/<console>: the guest's serial port. */
typedef struct {
    char *alias;
    char *type;      /* "file", "unix", "pty", "null" */
    char *path;      /* <source path=> for file and unix */
    char *mode;      /* <source mode=> for unix: "bind" (default) or "connect" */
    gboolean append; /* <source append='on'> for file */
    guint port;      /* <target port=>: 0..3, the lowest free one when absent */
    gboolean console; /* TRUE when written as <console> (target type 'serial'), FALSE for
                       * <serial>. As in libvirt, a console whose port is also a <serial>'s
                       * port is that same serial port, not a second one. */
} BerthSerialDef;

/* <filesystem type='mount'><driver type='virtiofs'/>: a virtiofs share. */
typedef struct {
    char *alias;
    char *driver_type;      /* "virtiofs" */
    char *source_dir;       /* <source dir=>: the host directory (NULL with source_socket) */
    char *source_socket;    /* <source socket=>: an externally started backend, or NULL */
    char *target_dir;       /* <target dir=>: the mount tag the guest uses */
    gboolean readonly;      /* <readonly/> */
    char *cache;            /* <binary><cache mode=>: "auto" (default), "always", "none" */
    guint thread_pool_size; /* <binary><thread_pool size=>: 0 = handle in queue threads */
    guint queue_size;       /* <driver queue=>: 0 = default (1024) */
    BerthPciAddress address;
} BerthFsDef;

/* <hostdev mode='subsystem' type='pci' managed=>: PCI passthrough. */
typedef struct {
    char *alias;
    gboolean managed;       /* managed='yes': detached at start, reattached at stop */
    BerthPciAddress source; /* the host device */
    BerthPciAddress address; /* the guest address, or unset */
    gboolean rom_bar_off;   /* <rom bar='off'/> */
} BerthHostdevDef;

/* The kind of device a BerthDeviceDef holds (device hotplug). */
typedef enum {
    BERTH_DEVICE_DISK = 0,
    BERTH_DEVICE_NET = 1,
    BERTH_DEVICE_FS = 2,
    BERTH_DEVICE_HOSTDEV = 3,
    BERTH_DEVICE_TYPE_LAST
} BerthDeviceType;

/**
 * BerthDeviceDef:
 * One device of a domain, as domain.attach_device parses it: @type says which member of @u is
 * set. The core gives the device its alias before it reaches a plugin.
 */
typedef struct {
    gsize struct_size;
    BerthDeviceType type;
    union {
        BerthDiskDef *disk;
        BerthNetDef *net;
        BerthFsDef *fs;
        BerthHostdevDef *hostdev;
    } u;
} BerthDeviceDef;

/**
 * BerthDomainDef:
 * A parsed domain definition. The core allocates and frees it (berth_domain_def_free in the
 * core); plugins only read it. The struct grows at the end; device lists are arrays of
 * pointers so that device structs can grow as well.
 */
typedef struct {
    gsize struct_size;
    char *type;        /* <domain type=>: "kvm" or "qemu" (TCG) */
    char *name;        /* <name>: [A-Za-z0-9_.+-], 1..64 characters, no leading '.' */
    char *uuid;        /* <uuid> in canonical 36-character form (generated when absent) */
    char *title;       /* <title> or NULL */
    char *description; /* <description> or NULL */

    guint64 memory_kib;     /* <memory unit=> converted to KiB */
    guint64 cur_memory_kib; /* <currentMemory>, = memory_kib when absent */
    guint vcpus;            /* <vcpu> */
    gboolean mem_shared;    /* <memoryBacking><access mode='shared'/> */
    char *mem_source;       /* <memoryBacking><source type=>: "memfd", "file", "anonymous" */

    char *cpu_mode;  /* <cpu mode=>: "host-passthrough", "host-model", "custom", or NULL */
    char *cpu_model; /* <cpu><model> for custom, or NULL */

    char *os_type;      /* <os><type>: "hvm" */
    char *arch;         /* <type arch=>: "x86_64" */
    char *machine;      /* <type machine=>: "q35" (default), "pc", or a versioned name */
    char *kernel;       /* <os><kernel> */
    char *initrd;       /* <os><initrd> */
    char *cmdline;      /* <os><cmdline> */
    char **boot_devs;   /* <os><boot dev=> in order, NULL-terminated, may be NULL */

    gboolean acpi; /* <features><acpi/> */
    gboolean apic; /* <features><apic/> */

    char *on_poweroff; /* "destroy" (default), "restart", "preserve" */
    char *on_reboot;   /* "restart" (default), "destroy", "preserve" */
    char *on_crash;    /* "destroy" (default), "restart", "preserve" */

    char *emulator; /* <devices><emulator>, or NULL: the hypervisor plugin's default */

    BerthDiskDef **disks;
    guint n_disks;
    BerthNetDef **nets;
    guint n_nets;
    BerthSerialDef **serials;
    guint n_serials;
    BerthFsDef **filesystems;
    guint n_filesystems;
    BerthHostdevDef **hostdevs;
    guint n_hostdevs;
} BerthDomainDef;

G_END_DECLS
