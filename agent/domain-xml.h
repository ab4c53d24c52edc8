/* The core's domain XML parser and formatter: a libvirt-compatible subset (docs/xml.md). */
#pragma once

#include <glib.h>

#include <berth/domain.h>
#include <berth/error.h>

G_BEGIN_DECLS

/* Flags of berth_domain_def_parse(). */
typedef enum {
    /* Skip elements and attributes the parser does not know instead of refusing them. */
    BERTH_XML_PARSE_IGNORE_UNSUPPORTED = 1 << 0,
    /* A live definition (berthd's own, from the run dir): keeps runtime aliases (virtio-disk0)
     * and skips the unsupported check. */
    BERTH_XML_PARSE_LIVE = 1 << 1,
} BerthXmlParseFlags;

/* Bytes; a bigger document is refused before libxml2 sees it. */
#define BERTH_DOMAIN_XML_MAX (1024 * 1024)
/* Devices of one kind (disks, interfaces, serials + consoles, filesystems, hostdevs). */
#define BERTH_DOMAIN_MAX_DEVICES 256
/* <vcpu> upper bound. */
#define BERTH_DOMAIN_MAX_VCPUS 4096
/* <memory> upper bound in KiB (1 EiB): keeps every unit conversion exact and in range. */
#define BERTH_DOMAIN_MAX_MEMORY_KIB (G_GUINT64_CONSTANT(1) << 50)

/*
 * Parses a domain definition from @len bytes at @xml (not necessarily NUL-terminated).
 * Safe to call from several threads at once; libxml2 never prints and never loads anything
 * (no DTD, no entities, no network). Every value is validated and the defaults that
 * include/berth/domain.h documents are filled in. On failure returns NULL and sets @error
 * (BERTH_ERROR_INVALID_ARGUMENT) to one message naming the element or attribute.
 */
BerthDomainDef *berth_domain_def_parse(const char *xml, gsize len, guint flags, GError **error);

/* The canonical XML of @def (2-space indent, fixed order, all defaults spelled out), which
 * parses back to an equal definition. Free with g_free(). */
char *berth_domain_def_format(const BerthDomainDef *def);

/* A deep copy of @def. */
BerthDomainDef *berth_domain_def_copy(const BerthDomainDef *def);

/* Frees @def and everything it owns; accepts NULL. */
void berth_domain_def_free(BerthDomainDef *def);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthDomainDef, berth_domain_def_free)

/* Gives every device without an alias its runtime alias, libvirt's scheme: virtio-disk<N>
 * (N from the target: vda = 0), sata0-0-<N>, scsi0-0-0-<N>, net<N>, serial<N>, console<N>,
 * fs<N>, hostdev<N>, each the first free number. User aliases (ua-*) stay. */
void berth_domain_def_assign_aliases(BerthDomainDef *def);

/* Parses one device for hotplug: a document whose root is <disk>, <interface>, <filesystem>
 * or <hostdev>, with the same rules as inside <devices>: a runtime alias (virtio-disk0, as a
 * live dumpxml shows it) is unsupported, dropped with BERTH_XML_PARSE_IGNORE_UNSUPPORTED. */
BerthDeviceDef *berth_device_def_parse(const char *xml, gsize len, guint flags, GError **error);
void berth_device_def_free(BerthDeviceDef *dev);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthDeviceDef, berth_device_def_free)
/* The device's alias (NULL before one is assigned). */
const char *berth_device_def_alias(const BerthDeviceDef *dev);

/* Gives @dev (when it has none) the runtime alias it would get in @def. */
void berth_domain_def_assign_device_alias(const BerthDomainDef *def, BerthDeviceDef *dev);
/* Adds @dev to @def: gives it a runtime alias when it has none, checks it against the other
 * devices (aliases, targets, MACs, tags, addresses) and on success moves the device struct
 * into @def (dev->u is then NULL; still free @dev). */
gboolean berth_domain_def_add_device(BerthDomainDef *def, BerthDeviceDef *dev, GError **error);
/* Where the device with @alias is: its type and index in that type's array. */
gboolean berth_domain_def_find_device(const BerthDomainDef *def, const char *alias,
                                      BerthDeviceType *type, guint *index);
/* Removes and frees the device with @alias; FALSE when there is none. */
gboolean berth_domain_def_remove_device(BerthDomainDef *def, const char *alias);

/* [A-Za-z0-9_.+-], 1..64 characters, no leading '.'. */
gboolean berth_domain_name_valid(const char *name, GError **error);

/* Parses "0000:06:12.5" (or "06:12.5", domain 0) into @addr (which gets set = TRUE). */
gboolean berth_pci_address_parse(const char *text, BerthPciAddress *addr, GError **error);

/* "0000:06:12.5"; free with g_free(). */
char *berth_pci_address_format(const BerthPciAddress *addr);

G_END_DECLS
