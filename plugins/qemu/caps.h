/* QEMU capabilities: what one qemu-system binary can do, probed once and cached. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/*
 * The probe starts the binary once with `-machine none -nodefaults -display none -S` and a QMP
 * socket (accelerator kvm when /dev/kvm opens, tcg otherwise), asks query-version, query-kvm,
 * query-machines and qom-list-types (implements "device"), and quits it. Results are cached in
 * memory and as JSON in the cache dir, keyed by the binary's path and mtime (and whether
 * /dev/kvm opens): a new binary (package upgrade) is probed again, an unchanged one never twice.
 */
typedef struct {
    int ref;            /* private */
    char *binary;       /* absolute path */
    gint64 mtime_us;    /* of @binary when probed */
    guint version;      /* major * 1000000 + minor * 1000 + micro (7.2.0 -> 7002000) */
    char *version_str;  /* "7.2.0" (plus the package string, if any, in parentheses) */
    gboolean kvm;       /* KVM usable: query-kvm said present and enabled */
    char **machines;    /* machine type names, NULL-terminated, aliases included ("q35") */
    GHashTable *machine_alias; /* "q35" -> "pc-q35-7.2", "pc" -> "pc-i440fx-7.2" */
    char *default_machine;
    GHashTable *devices; /* set of device type names ("virtio-blk-pci", "vfio-pci", ...) */
    gboolean kvm_device; /* /dev/kvm opened when probed; when that changes, probed again */
} BerthQemuCaps;

/* The probe's default limit for the whole probe. */
#define BERTH_QEMU_CAPS_TIMEOUT_MS 15000

/*
 * The capabilities of @binary (absolute path, or a name looked up in PATH), probing it when
 * neither the memory cache nor @cache_dir (may be NULL: memory only) holds a result for its
 * current mtime. The probe's QMP I/O runs on @ctx, which another thread must be running:
 * do not call this on the thread that runs @ctx. With @ctx NULL the probe runs its own
 * context on a short-lived thread. Thread-safe; concurrent calls for the same
 * binary probe once. Returns a new reference.
 */
BerthQemuCaps *berth_qemu_caps_get(const char *binary, const char *cache_dir, GMainContext *ctx,
                                   GError **error);
BerthQemuCaps *berth_qemu_caps_ref(BerthQemuCaps *caps);
void berth_qemu_caps_unref(BerthQemuCaps *caps);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthQemuCaps, berth_qemu_caps_unref)

gboolean berth_qemu_caps_has_device(const BerthQemuCaps *caps, const char *type);
/* TRUE for a machine name or alias the binary knows. */
gboolean berth_qemu_caps_has_machine(const BerthQemuCaps *caps, const char *machine);

/* For tests: forget the in-memory cache. */
void berth_qemu_caps_cache_clear(void);

/* For tests: how many probe processes this process has started so far. */
guint berth_qemu_caps_probe_count(void);

G_END_DECLS
