/* libFuzzer target for the domain XML parser: parse, then format, reparse and compare. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "../unit/domain-def-equal.h"
#include "domain-xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check_round_trip(const BerthDomainDef *def)
{
    g_autofree char *xml = berth_domain_def_format(def);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) again = berth_domain_def_parse(xml, strlen(xml), 0, &error);
    g_autoptr(GString) why = g_string_new(NULL);
    g_autofree char *xml2 = NULL;

    if (!again) {
        fprintf(stderr, "canonical XML does not parse back: %s\n%s\n", error->message, xml);
        abort();
    }
    if (!domain_def_equal(def, again, why)) {
        fprintf(stderr, "round trip changed the definition: %s\n%s\n", why->str, xml);
        abort();
    }
    xml2 = berth_domain_def_format(again);
    if (strcmp(xml, xml2) != 0) {
        fprintf(stderr, "canonical XML is not a fixed point:\n%s\n---\n%s\n", xml, xml2);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const guint flags[] = {0, BERTH_XML_PARSE_IGNORE_UNSUPPORTED};

    for (guint i = 0; i < G_N_ELEMENTS(flags); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(BerthDomainDef) def = berth_domain_def_parse((const char *) data, size,
                                                               flags[i], &error);

        if (!def) {
            /* Every refusal is a BERTH_ERROR with a message. */
            if (size > 0 && (!error || error->domain != BERTH_ERROR || !error->message[0])) {
                abort();
            }
            continue;
        }
        if (error) {
            abort();
        }
        check_round_trip(def);
        {
            g_autoptr(BerthDomainDef) copy = berth_domain_def_copy(def);
            g_autoptr(GString) why = g_string_new(NULL);

            if (!domain_def_equal(def, copy, why)) {
                fprintf(stderr, "copy differs: %s\n", why->str);
                abort();
            }
        }
    }
    return 0;
}
