/* PCI addresses of host devices as the vfio plugin reads them from the API, XML and sysfs. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* The longest text vfio_pci_addr_parse looks at: "dddd:bb:ss.f" is 12 characters. */
#define VFIO_PCI_ADDR_MAX_LEN 12

typedef struct {
    guint domain;   /* 0..0xffff */
    guint bus;      /* 0..0xff */
    guint slot;     /* 0..0x1f */
    guint function; /* 0..7 */
} VfioPciAddr;

/*
 * Parses "DDDD:BB:SS.F" (hex, either case) or "BB:SS.F" (domain 0). Every field must have
 * exactly its width and be in range; nothing may follow. BERTH_ERROR_INVALID_ARGUMENT names
 * the text and what is wrong.
 */
gboolean vfio_pci_addr_parse(const char *text, VfioPciAddr *out, GError **error);

/* Parses only the canonical form ("0000:06:12.5": four, two, two and one lowercase hex
 * digits), the form the API and the node device objects use. */
gboolean vfio_pci_addr_parse_canonical(const char *text, VfioPciAddr *out, GError **error);

/* The canonical form, g_free'd by the caller. */
char *vfio_pci_addr_format(const VfioPciAddr *addr);

gboolean vfio_pci_addr_equal(const VfioPciAddr *a, const VfioPciAddr *b);

G_END_DECLS
