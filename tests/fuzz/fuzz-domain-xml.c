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

/* A live definition (runtime aliases) formats and parses back, with them, as the registry's
 * status file does after a berthd restart. */
static void
check_round_trip_live(const BerthDomainDef *def)
{
    g_autofree char *xml = berth_domain_def_format(def);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) again = berth_domain_def_parse(
        xml, strlen(xml), BERTH_XML_PARSE_IGNORE_UNSUPPORTED | BERTH_XML_PARSE_LIVE, &error);
    g_autoptr(GString) why = g_string_new(NULL);

    if (!again) {
        fprintf(stderr, "live XML does not parse back: %s\n%s\n", error->message, xml);
        abort();
    }
    if (!domain_def_equal(def, again, why)) {
        fprintf(stderr, "live round trip changed the definition: %s\n%s\n", why->str, xml);
        abort();
    }
}

/* The same input as one hot-plugged device (domain.attach_device): parsed, added to a small
 * running domain with runtime aliases, and the result must format and parse back. */
static void
check_device(const uint8_t *data, size_t size, guint flags)
{
    static const char base[] = "<domain type='kvm'><name>f</name><memory>1</memory>"
                               "<vcpu>1</vcpu><devices><disk type='file'>"
                               "<source file='/var/tmp/f.img'/><target dev='vda'/></disk>"
                               "<interface type='user'/></devices></domain>";
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDeviceDef) dev = berth_device_def_parse((const char *) data, size, flags,
                                                           &error);
    g_autoptr(BerthDomainDef) def = NULL;

    if (!dev) {
        if (size > 0 && (!error || error->domain != BERTH_ERROR || !error->message[0])) {
            abort();
        }
        return;
    }
    def = berth_domain_def_parse(base, strlen(base), 0, &error);
    if (!def) {
        abort();
    }
    berth_domain_def_assign_aliases(def);
    if (!berth_domain_def_add_device(def, dev, &error)) {
        if (!error || error->domain != BERTH_ERROR || !error->message[0]) {
            abort();
        }
        return;
    }
    /* The added device has an alias by which it can be found and removed again. */
    {
        BerthDeviceType type;
        guint index;
        const char *alias = def->n_disks > 1   ? def->disks[1]->alias
                            : def->n_nets > 1  ? def->nets[1]->alias
                            : def->n_filesystems ? def->filesystems[0]->alias
                            : def->n_hostdevs  ? def->hostdevs[0]->alias
                                               : NULL;
        g_autofree char *copy = g_strdup(alias);

        if (!copy || !berth_domain_def_find_device(def, copy, &type, &index)) {
            abort();
        }
        check_round_trip_live(def);
        if (!berth_domain_def_remove_device(def, copy)) {
            abort();
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const guint flags[] = {0, BERTH_XML_PARSE_IGNORE_UNSUPPORTED};

    for (guint i = 0; i < G_N_ELEMENTS(flags); i++) {
        check_device(data, size, flags[i]);
    }

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
