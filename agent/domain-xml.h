/* The domain XML parser and formatter (a libvirt-compatible subset, docs/xml.md). */
#pragma once

#include <berth/domain.h>

typedef enum {
    BERTH_XML_PARSE_IGNORE_UNSUPPORTED = 1 << 0,
} BerthXmlParseFlags;

/* Bytes; bigger input is refused. */
#define BERTH_DOMAIN_XML_MAX (1024 * 1024)

BerthDomainDef *berth_domain_def_parse(const char *xml, gsize len, guint flags, GError **error);
/* Canonical XML (g_free it). */
char *berth_domain_def_format(const BerthDomainDef *def);
BerthDomainDef *berth_domain_def_copy(const BerthDomainDef *def);
/* Accepts NULL. */
void berth_domain_def_free(BerthDomainDef *def);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthDomainDef, berth_domain_def_free)
gboolean berth_domain_name_valid(const char *name, GError **error);
/* "0000:06:12.5" */
gboolean berth_pci_address_parse(const char *text, BerthPciAddress *addr, GError **error);
char *berth_pci_address_format(const BerthPciAddress *addr);
