/* libFuzzer target: PCI address parsing (API params, domain XML, sysfs names, the lists file).
 * Whatever parses must format to the canonical form, which must parse back to the same. */
#include <stdint.h>
#include <string.h>

#include <glib.h>

#include "../../plugins/vfio/pci-address.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *text = g_strndup((const char *) data, size);
    g_autoptr(GError) error = NULL;
    VfioPciAddr a, b;

    if (vfio_pci_addr_parse(text, &a, &error)) {
        g_autofree char *canon = vfio_pci_addr_format(&a);

        g_assert(strlen(canon) == 12);
        g_assert(vfio_pci_addr_parse_canonical(canon, &b, NULL));
        g_assert(vfio_pci_addr_equal(&a, &b));
        g_assert(a.slot <= 0x1f && a.function <= 7);
    } else {
        g_assert(error && error->message && strlen(error->message) < 256);
        g_assert(!vfio_pci_addr_parse_canonical(text, &b, NULL));
    }
    return 0;
}
