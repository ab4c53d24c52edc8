/* PCI address parsing and formatting: strict, bounded, the same answer for API, XML and sysfs. */
#include "pci-address.h"

#include <string.h>

#include <berth/error.h>

/* Reads exactly @width hex digits at *@p; advances *@p. */
static gboolean
hex_field(const char **p, guint width, gboolean lower_only, guint *out)
{
    guint v = 0;

    for (guint i = 0; i < width; i++) {
        char c = (*p)[i];
        guint d;

        if (c >= '0' && c <= '9') {
            d = (guint) (c - '0');
        } else if (c >= 'a' && c <= 'f') {
            d = (guint) (c - 'a' + 10);
        } else if (!lower_only && c >= 'A' && c <= 'F') {
            d = (guint) (c - 'A' + 10);
        } else {
            return FALSE;
        }
        v = v * 16 + d;
    }
    *p += width;
    *out = v;
    return TRUE;
}

static gboolean
parse(const char *text, gboolean canonical, VfioPciAddr *out, GError **error)
{
    VfioPciAddr a = { 0 };
    const char *p = text;
    const char *why = NULL;
    gsize len;

    if (!text) {
        g_set_error_literal(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                            "a PCI address is missing");
        return FALSE;
    }
    len = strnlen(text, VFIO_PCI_ADDR_MAX_LEN + 1);
    if (len > VFIO_PCI_ADDR_MAX_LEN) {
        why = "it is too long";
    } else if (len == 12 || canonical) {
        if (!hex_field(&p, 4, canonical, &a.domain) || *p++ != ':') {
            why = "the domain is not 4 hex digits followed by ':'";
        }
    } else if (len != 7) {
        why = "it is not DDDD:BB:SS.F or BB:SS.F";
    }
    if (!why && (!hex_field(&p, 2, canonical, &a.bus) || *p++ != ':')) {
        why = "the bus is not 2 hex digits followed by ':'";
    }
    if (!why && (!hex_field(&p, 2, canonical, &a.slot) || *p++ != '.')) {
        why = "the slot is not 2 hex digits followed by '.'";
    }
    if (!why && !hex_field(&p, 1, canonical, &a.function)) {
        why = "the function is not a hex digit";
    }
    if (!why && *p != '\0') {
        why = "text follows the function";
    }
    if (!why && a.slot > 0x1f) {
        why = "the slot is above 0x1f";
    }
    if (!why && a.function > 7) {
        why = "the function is above 7";
    }
    if (why) {
        g_autofree char *shown = g_strndup(text, MIN(len, (gsize) VFIO_PCI_ADDR_MAX_LEN));
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "'%s%s' is not a valid PCI address%s: %s", shown,
                    len > VFIO_PCI_ADDR_MAX_LEN ? "..." : "",
                    canonical ? " (expected the form 0000:06:12.5, lowercase hex)" : "", why);
        return FALSE;
    }
    *out = a;
    return TRUE;
}

gboolean
vfio_pci_addr_parse(const char *text, VfioPciAddr *out, GError **error)
{
    return parse(text, FALSE, out, error);
}

gboolean
vfio_pci_addr_parse_canonical(const char *text, VfioPciAddr *out, GError **error)
{
    return parse(text, TRUE, out, error);
}

char *
vfio_pci_addr_format(const VfioPciAddr *addr)
{
    return g_strdup_printf("%04x:%02x:%02x.%x", addr->domain & 0xffff, addr->bus & 0xff,
                           addr->slot & 0x1f, addr->function & 7);
}

gboolean
vfio_pci_addr_equal(const VfioPciAddr *a, const VfioPciAddr *b)
{
    return a->domain == b->domain && a->bus == b->bus && a->slot == b->slot &&
           a->function == b->function;
}
