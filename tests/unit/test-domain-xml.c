/* Tests of the domain XML parser and formatter: golden round trips, the schema, refusals. */
#include <fcntl.h>
#include <glib/gstdio.h>
#include <libxml/parser.h>
#include <libxml/relaxng.h>
#include <libxml/xmlIO.h>
#include <string.h>
#include <unistd.h>

#include "domain-def-equal.h"
#include "domain-xml.h"

#define XML_DIR TEST_DATA_DIR "/xml"
#define SCHEMA_PATH TEST_DATA_DIR "/../../docs/schemas/domain.rng"

/* Set by the input-callback spy when libxml2 tries to open anything at all. */
static volatile gint io_attempts;

static char *
read_sample(const char *file)
{
    g_autofree char *path = g_build_filename(XML_DIR, file, NULL);
    g_autoptr(GError) error = NULL;
    char *text = NULL;

    g_file_get_contents(path, &text, NULL, &error);
    g_assert_no_error(error);
    return text;
}

static BerthDomainDef *
parse_str(const char *xml, guint flags, GError **error)
{
    return berth_domain_def_parse(xml, strlen(xml), flags, error);
}

static void
assert_equal_defs(const BerthDomainDef *a, const BerthDomainDef *b)
{
    g_autoptr(GString) why = g_string_new(NULL);

    if (!domain_def_equal(a, b, why)) {
        g_error("definitions differ: %s", why->str);
    }
}

/* Golden names: every NAME.xml in tests/data/xml that is neither bad-* nor *.out.xml. */
static int
compare_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static GPtrArray *
golden_names(void)
{
    g_autoptr(GDir) dir = g_dir_open(XML_DIR, 0, NULL);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *file;

    g_assert_nonnull(dir);
    while ((file = g_dir_read_name(dir))) {
        if (g_str_has_suffix(file, ".xml") && !g_str_has_suffix(file, ".out.xml") &&
            !g_str_has_prefix(file, "bad-")) {
            g_ptr_array_add(names, g_strndup(file, strlen(file) - 4));
        }
    }
    g_ptr_array_sort(names, compare_names);
    return names;
}

/* ---------------------------------------------------------------------------------------- */
/* Round trips */

static void
test_round_trip(gconstpointer data)
{
    const char *name = data;
    g_autofree char *in_file = g_strdup_printf("%s.xml", name);
    g_autofree char *out_file = g_strdup_printf("%s.out.xml", name);
    g_autofree char *out_path = g_build_filename(XML_DIR, out_file, NULL);
    g_autofree char *input = read_sample(in_file);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    g_autoptr(BerthDomainDef) again = NULL;
    g_autoptr(BerthDomainDef) copy = NULL;
    g_autofree char *formatted = NULL;
    g_autofree char *formatted2 = NULL;
    g_autofree char *copy_formatted = NULL;

    if (g_str_has_prefix(name, "ignore-")) {
        /* Cases named ignore-* hold unsupported parts: refused, unless the flag skips them. */
        g_assert_null(parse_str(input, 0, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "unsupported elements or attributes: "));
        g_clear_error(&error);
        def = parse_str(input, BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error);
    } else {
        def = parse_str(input, 0, &error);
    }
    g_assert_no_error(error);
    formatted = berth_domain_def_format(def);

    if (g_strcmp0(g_getenv("REGENERATE"), "1") == 0) {
        g_file_set_contents(out_path, formatted, -1, &error);
        g_assert_no_error(error);
    } else {
        g_autofree char *expected = read_sample(out_file);

        g_assert_cmpstr(formatted, ==, expected);
    }

    /* The canonical form parses back to the same definition and is a fixed point. */
    again = parse_str(formatted, 0, &error);
    g_assert_no_error(error);
    assert_equal_defs(def, again);
    formatted2 = berth_domain_def_format(again);
    g_assert_cmpstr(formatted2, ==, formatted);

    copy = berth_domain_def_copy(def);
    assert_equal_defs(def, copy);
    copy_formatted = berth_domain_def_format(copy);
    g_assert_cmpstr(copy_formatted, ==, formatted);
}

static void
test_defaults(void)
{
    g_autofree char *minimal = read_sample("minimal.xml");
    g_autofree char *disks = read_sample("disk.xml");
    g_autofree char *serials = read_sample("serial.xml");
    g_autofree char *shares = read_sample("filesystem.xml");
    g_autofree char *nets = read_sample("interface.xml");
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = parse_str(minimal, 0, &error);
    g_autoptr(BerthDomainDef) d = NULL;
    g_autoptr(BerthDomainDef) s = NULL;
    g_autoptr(BerthDomainDef) f = NULL;
    g_autoptr(BerthDomainDef) n = NULL;

    g_assert_no_error(error);
    g_assert_cmpuint(def->struct_size, ==, sizeof(BerthDomainDef));
    g_assert_cmpstr(def->type, ==, "kvm");
    g_assert_cmpuint(def->memory_kib, ==, 1048576);
    g_assert_cmpuint(def->cur_memory_kib, ==, 1048576);
    g_assert_cmpstr(def->os_type, ==, "hvm");
    g_assert_cmpstr(def->arch, ==, "x86_64");
    g_assert_cmpstr(def->machine, ==, "q35");
    g_assert_cmpstr(def->on_poweroff, ==, "destroy");
    g_assert_cmpstr(def->on_reboot, ==, "restart");
    g_assert_cmpstr(def->on_crash, ==, "destroy");
    g_assert_null(def->boot_devs);
    g_assert_null(def->cpu_mode);
    g_assert_null(def->mem_source);
    g_assert_false(def->mem_shared);

    d = parse_str(disks, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(d->n_disks, ==, 4);
    g_assert_cmpstr(d->disks[0]->device, ==, "disk");
    g_assert_cmpstr(d->disks[0]->driver_type, ==, "raw");
    g_assert_cmpstr(d->disks[0]->target_bus, ==, "virtio");
    g_assert_null(d->disks[0]->cache);
    g_assert_false(d->disks[0]->address.set);
    g_assert_cmpstr(d->disks[2]->device, ==, "cdrom");
    g_assert_cmpstr(d->disks[2]->target_bus, ==, "sata");
    g_assert_true(d->disks[2]->readonly); /* a CD-ROM is always read-only */
    g_assert_null(d->disks[2]->source_file);
    g_assert_cmpstr(d->disks[3]->source_file, ==, "/tmp/scratch & more.img");
    g_assert_true(d->disks[3]->address.set);
    g_assert_cmpuint(d->disks[3]->address.slot, ==, 10);

    s = parse_str(serials, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(s->n_serials, ==, 6);
    /* Explicit ports first (1 and 3), then the lowest free ones in document order. */
    g_assert_cmpuint(s->serials[0]->port, ==, 1);
    g_assert_true(s->serials[0]->append);
    g_assert_cmpuint(s->serials[1]->port, ==, 0);
    g_assert_cmpstr(s->serials[1]->mode, ==, "connect");
    g_assert_cmpuint(s->serials[2]->port, ==, 2);
    g_assert_cmpuint(s->serials[3]->port, ==, 3);
    g_assert_true(s->serials[4]->console);
    g_assert_cmpuint(s->serials[4]->port, ==, 0);
    g_assert_cmpstr(s->serials[5]->mode, ==, "bind");
    g_assert_cmpuint(s->serials[5]->port, ==, 2);

    f = parse_str(shares, 0, &error);
    g_assert_no_error(error);
    g_assert_true(f->mem_shared);
    g_assert_cmpstr(f->mem_source, ==, "file");
    g_assert_cmpstr(f->filesystems[0]->cache, ==, "auto");
    g_assert_cmpuint(f->filesystems[0]->queue_size, ==, 0);
    g_assert_cmpuint(f->filesystems[0]->thread_pool_size, ==, 0);
    g_assert_cmpstr(f->filesystems[1]->source_socket, ==, "/run/berth/virtiofsd-ext.sock");
    g_assert_null(f->filesystems[1]->source_dir);
    g_assert_cmpuint(f->filesystems[1]->queue_size, ==, 256);
    g_assert_true(f->filesystems[2]->readonly);

    n = parse_str(nets, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(n->uuid, ==, "5f2ad7a1-0d9c-4e43-9d3b-1a6cb7f0b002");
    g_assert_cmpstr(n->nets[0]->model, ==, "virtio");
    g_assert_null(n->nets[0]->mac);
    g_assert_cmpstr(n->nets[1]->source, ==, "default");
    g_assert_cmpstr(n->nets[3]->target_dev, ==, "tap-berth4");
}

static void
test_uuid_generated(void)
{
    const char *xml = "<domain type='qemu'><name>gen</name><memory>1024</memory>"
                      "<vcpu>1</vcpu></domain>";
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) a = parse_str(xml, 0, &error);
    g_autoptr(BerthDomainDef) b = parse_str(xml, 0, &error);

    g_assert_no_error(error);
    g_assert_true(g_uuid_string_is_valid(a->uuid));
    g_assert_cmpstr(a->uuid, !=, b->uuid);
}

/* ---------------------------------------------------------------------------------------- */
/* Values */

static void
test_memory_units(void)
{
    static const struct {
        const char *text;
        const char *unit;
        guint64 kib;
    } good[] = {
        {"5", NULL, 5},
        {"1", "b", 1},
        {"1024", "bytes", 1},
        {"1025", "b", 2},
        {"1", "KB", 1},
        {"2048", "KB", 2000},
        {"1", "k", 1},
        {"7", "KiB", 7},
        {"1", "MB", 977},
        {"1", "M", 1024},
        {"3", "MiB", 3072},
        {"1", "GB", 976563},
        {"1", "G", 1048576},
        {"2", "GiB", 2097152},
        {"1", "TB", 976562500},
        {"1", "T", G_GUINT64_CONSTANT(1073741824)},
        {"1048576", "TiB", G_GUINT64_CONSTANT(1) << 50},
        {" 12\n", "MiB", 12288},
    };
    static const struct {
        const char *text;
        const char *unit;
        const char *message;
    } bad[] = {
        {"0", "KiB", "greater than 0"},
        {"-1", NULL, "is not a whole number"},
        {"1.5", "GiB", "is not a whole number"},
        {"0x10", NULL, "is not a whole number"},
        {"", NULL, "is not a whole number"},
        {"18446744073709551616", "b", "is not a whole number"},
        {"17179869184", "GiB", "overflows"},
        {"18446744073709551615", "b", "more than the limit"},
        {"1048577", "TiB", "more than the limit"},
        {"1", "kib", "unknown unit 'kib'"},
        {"1", "PiB", "unknown unit 'PiB'"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
        g_autofree char *xml = g_strdup_printf(
            "<domain type='kvm'><name>u</name><memory%s%s%s>%s</memory><vcpu>1</vcpu></domain>",
            good[i].unit ? " unit='" : "", good[i].unit ? good[i].unit : "",
            good[i].unit ? "'" : "", good[i].text);
        g_autoptr(GError) error = NULL;
        g_autoptr(BerthDomainDef) def = parse_str(xml, 0, &error);

        g_assert_no_error(error);
        g_assert_cmpuint(def->memory_kib, ==, good[i].kib);
    }
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *xml = g_strdup_printf(
            "<domain type='kvm'><name>u</name><memory%s%s%s>%s</memory><vcpu>1</vcpu></domain>",
            bad[i].unit ? " unit='" : "", bad[i].unit ? bad[i].unit : "",
            bad[i].unit ? "'" : "", bad[i].text);
        g_autoptr(GError) error = NULL;
        g_autoptr(BerthDomainDef) def = parse_str(xml, 0, &error);

        g_assert_null(def);
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        if (!strstr(error->message, bad[i].message)) {
            g_error("memory '%s' unit '%s': message '%s' lacks '%s'", bad[i].text,
                    bad[i].unit ? bad[i].unit : "", error->message, bad[i].message);
        }
        g_assert_true(g_str_has_prefix(error->message, "domain XML: <memory"));
    }
}

static void
test_names(void)
{
    static const char *const good[] = {"a", "web-1_x.y+z", "A.", "0"};
    static const char *const bad[] = {"", ".hidden", "a b", "a/b", "caf\xc3\xa9", "x\n",
                                      "../x"};
    g_autofree char *longest = g_strnfill(64, 'n');
    g_autofree char *too_long = g_strnfill(65, 'n');

    for (guint i = 0; i < G_N_ELEMENTS(good); i++) {
        g_assert_true(berth_domain_name_valid(good[i], NULL));
    }
    g_assert_true(berth_domain_name_valid(longest, NULL));
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;

        g_assert_false(berth_domain_name_valid(bad[i], &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    }
    g_assert_false(berth_domain_name_valid(too_long, NULL));
    g_assert_false(berth_domain_name_valid(NULL, NULL));
}

static void
test_pci_address(void)
{
    static const char *const bad[] = {"0000:06:20.0", "0000:06:12.8", "0000:6:12.5",
                                      "zzzz:06:12.5", "", "0000:06:12:5", "0000:06:12.5 ",
                                      "00000:06:12.5", "06:12"};
    BerthPciAddress addr = {0};
    BerthPciAddress max = {TRUE, 0xffff, 0xff, 0x1f, 7};
    g_autofree char *text = NULL;
    g_autofree char *max_text = berth_pci_address_format(&max);

    g_assert_true(berth_pci_address_parse("0000:06:12.5", &addr, NULL));
    g_assert_true(addr.set);
    g_assert_cmpuint(addr.domain, ==, 0);
    g_assert_cmpuint(addr.bus, ==, 6);
    g_assert_cmpuint(addr.slot, ==, 0x12);
    g_assert_cmpuint(addr.function, ==, 5);
    text = berth_pci_address_format(&addr);
    g_assert_cmpstr(text, ==, "0000:06:12.5");
    g_assert_true(berth_pci_address_parse("3b:00.1", &addr, NULL));
    g_assert_cmpuint(addr.bus, ==, 0x3b);
    g_assert_cmpuint(addr.function, ==, 1);
    g_assert_cmpstr(max_text, ==, "ffff:ff:1f.7");
    g_assert_true(berth_pci_address_parse("FFFF:FF:1F.7", &addr, NULL));
    g_assert_cmpuint(addr.domain, ==, 0xffff);
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;

        g_assert_false(berth_pci_address_parse(bad[i], &addr, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    }
    g_assert_false(berth_pci_address_parse(NULL, &addr, NULL));
}

/* ---------------------------------------------------------------------------------------- */
/* Refusals */

static const struct {
    const char *file;
    const char *message; /* a substring of the error, or the whole message when it starts
                          * with "domain XML: " */
} bad_samples[] = {
    {"bad-not-xml.xml", "not well-formed XML (line 1: "},
    {"bad-root.xml", "domain XML: the root element is <network>, not <domain>"},
    {"bad-no-name.xml", "domain XML: <domain>: the element <name> is required"},
    {"bad-name.xml", "domain XML: <name>: domain name '../etc/passwd' must not start with '.'"},
    {"bad-uuid.xml", "domain XML: <uuid>: '4dea22b3-1d52-d8f3-2516-782e98ab3fa' is not a UUID"},
    {"bad-unit.xml", "domain XML: <memory unit='XB'>: unknown unit 'XB'"},
    {"bad-overflow.xml",
     "domain XML: <memory unit='TiB'>: '99999999999' TiB overflows a 64-bit byte count"},
    {"bad-unsupported.xml",
     "domain XML: unsupported elements or attributes: /domain/@id, /domain/clock, "
     "/domain/devices/disk[2]/@snapshot, /domain/devices/disk[2]/driver/@io, "
     "/domain/devices/disk[2]/boot, /domain/devices/video, /domain/devices/graphics"},
    {"bad-entity-bomb.xml", "document type declarations (<!DOCTYPE>) and entities are not"},
    {"bad-external-entity.xml", "document type declarations (<!DOCTYPE>) and entities"},
    {"bad-duplicate-alias.xml", "domain XML: alias 'ua-same' is used by more than one device"},
    {"bad-duplicate-target.xml",
     "domain XML: disk target 'vda' is used by more than one device"},
    {"bad-relative-path.xml",
     "domain XML: <source file='images/b.raw'> at /domain/devices/disk[2]/source: path "
     "'images/b.raw' is not absolute or longer than 4096 bytes"},
    {"bad-mac.xml", "'01:00:5e:00:00:01' is not a unicast MAC address"},
    {"bad-pci-slot.xml",
     "domain XML: <address slot='0x20'> at /domain/devices/hostdev/source/address: '0x20' is "
     "not a number from 0 to 0x1f"},
    {"bad-vcpu.xml", "domain XML: <vcpu>: '0' is not a number from 1 to 4096"},
    {"bad-current-memory.xml", "1048576 KiB is more than <memory> (524288 KiB)"},
    {"bad-type.xml", "domain XML: <domain type='xen'>: unsupported value 'xen'"},
};

static void
assert_refused(const char *what, BerthDomainDef *def, GError *error, const char *message)
{
    g_assert_null(def);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    if (g_str_has_prefix(message, "domain XML: ") &&
        !g_str_has_prefix(message, "domain XML: <")) {
        if (strcmp(error->message, message) != 0 && !g_str_has_prefix(error->message, message)) {
            g_error("%s: got '%s', expected '%s'", what, error->message, message);
        }
    } else if (!strstr(error->message, message)) {
        g_error("%s: got '%s', expected it to contain '%s'", what, error->message, message);
    }
}

static void
test_refuse_sample(gconstpointer data)
{
    guint i = GPOINTER_TO_UINT(data);
    g_autofree char *xml = read_sample(bad_samples[i].file);
    g_autoptr(GError) error = NULL;
    BerthDomainDef *def = parse_str(xml, 0, &error);

    assert_refused(bad_samples[i].file, def, error, bad_samples[i].message);
}

/* Every bad-*.xml has an expectation, so a new sample cannot go untested. */
static void
test_refuse_all_listed(void)
{
    g_autoptr(GDir) dir = g_dir_open(XML_DIR, 0, NULL);
    const char *file;

    while ((file = g_dir_read_name(dir))) {
        gboolean listed = FALSE;

        if (!g_str_has_prefix(file, "bad-")) {
            continue;
        }
        for (guint i = 0; i < G_N_ELEMENTS(bad_samples); i++) {
            listed |= strcmp(bad_samples[i].file, file) == 0;
        }
        if (!listed) {
            g_error("%s has no expected error in test-domain-xml.c", file);
        }
    }
}

static void
test_refuse_inline(void)
{
    static const struct {
        const char *xml;
        const char *message;
    } cases[] = {
        {"<domain type='kvm'><name>a</name><name>b</name><memory>1</memory><vcpu>1</vcpu>"
         "</domain>",
         "domain XML: <name>: the element may appear only once"},
        {"<domain><name>a</name><memory>1</memory><vcpu>1</vcpu></domain>",
         "the attribute type= ('kvm' or 'qemu') is required"},
        {"<domain type='kvm'><name>a</name><vcpu>1</vcpu></domain>", "<memory> is required"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>4097</vcpu></domain>",
         "from 1 to 4096"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<on_crash>coredump-destroy</on_crash></domain>",
         "domain XML: <on_crash>: unsupported value 'coredump-destroy'"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<os><type>xen</type></os></domain>", "unsupported OS type 'xen'"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<os><type>hvm</type><initrd>/boot/initrd</initrd></os></domain>",
         "need a <kernel>"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<os><type>hvm</type><kernel>vmlinuz</kernel></os></domain>",
         "path 'vmlinuz' is not absolute"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<cpu mode='host-model'><model>Haswell</model></cpu></domain>",
         "a CPU model goes only with mode='custom'"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<disk type='block'><source dev='/dev/sda'/><target dev='vda'/></disk></devices>"
         "</domain>",
         "domain XML: <disk type='block'> at /domain/devices/disk: unsupported value 'block'"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<disk type='file' device='cdrom'><target dev='vdc' bus='virtio'/></disk></devices>"
         "</domain>", "a cdrom cannot be on the virtio bus"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<disk type='file'><source file='/a'/><target dev='xvda'/></disk></devices>"
         "</domain>", "'xvda' is not a disk name"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='bridge'/></devices></domain>",
         "type 'bridge' needs <source bridge='...'/>"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>"
         "<interface type='user'><mac address='52:54:00:00:00:01'/></interface>"
         "</devices></domain>", "MAC address '52:54:00:00:00:01' is used by more than one"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='user'><address type='pci' slot='3'/></interface>"
         "<interface type='user'><address type='pci' bus='0' slot='0x03'/></interface>"
         "</devices></domain>", "guest PCI address '0000:00:03.0' is used by more than one"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='user'><address type='drive'/></interface></devices></domain>",
         "domain XML: unsupported element or attribute: /domain/devices/interface/address"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='user'><address bus='1'/></interface></devices></domain>",
         "the attribute type='pci' is required"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='user'><alias name='ua-a b'/></interface></devices></domain>",
         "alias 'ua-a b' must have at most 64 characters"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<interface type='vhostuser'/></devices></domain>", "unsupported value 'vhostuser'"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<serial type='pty'><target port='1'/></serial><serial type='pty'>"
         "<target port='1'/></serial></devices></domain>",
         "serial port 1 is used by more than one device"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<serial type='null'/><serial type='null'/><serial type='null'/>"
         "<serial type='null'/><serial type='null'/></devices></domain>",
         "more than 4 serial ports"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<serial type='unix'><source path='/run/berth/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'/>"
         "</serial></devices></domain>", "longer than 107 bytes"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<filesystem><driver type='virtiofs'/><source dir='/a' socket='/b.sock'/>"
         "<target dir='t'/></filesystem></devices></domain>",
         "exactly one of dir= and socket= is required"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<filesystem><driver type='path'/><source dir='/a'/><target dir='t'/></filesystem>"
         "</devices></domain>", "unsupported value 'path' (only 'virtiofs')"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<filesystem><driver type='virtiofs' queue='1000'/><source dir='/a'/>"
         "<target dir='t'/></filesystem></devices></domain>", "is not a power of two"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<filesystem><driver type='virtiofs'/><source dir='/a'/><target dir='t'/>"
         "</filesystem><filesystem><driver type='virtiofs'/><source dir='/b'/>"
         "<target dir='t'/></filesystem></devices></domain>",
         "filesystem target 't' is used by more than one device"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<hostdev mode='subsystem' type='usb'/></devices></domain>",
         "unsupported value 'usb' (only 'pci')"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<hostdev mode='subsystem' type='pci' managed='maybe'/></devices></domain>",
         "'maybe' is neither 'yes' nor 'no'"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<hostdev mode='subsystem' type='pci'><source><address bus='6' slot='1'/></source>"
         "</hostdev><hostdev mode='subsystem' type='pci'><source><address bus='0x06' "
         "slot='0x01'/></source></hostdev></devices></domain>",
         "host PCI device '0000:06:01.0' is used by more than one device"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu><devices>"
         "<disk type='file'><source file='/a'/><target dev='vda'/><alias name='net0'/></disk>"
         "</devices></domain>",
         "domain XML: unsupported element or attribute: /domain/devices/disk/alias"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<devices>text</devices></domain>",
         "domain XML: unsupported element or attribute: /domain/devices/text()"},
        {"<domain type='kvm' xmlns:q='urn:q'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
         "<q:commandline/><name xml:lang='en'/></domain>", "may appear only once"},
        {"<domain type='kvm' xmlns:q='urn:q'><name xml:lang='en'>a</name><memory>1</memory>"
         "<vcpu>1</vcpu><q:commandline/></domain>",
         "domain XML: unsupported elements or attributes: /domain/name/@xml:lang, "
         "/domain/q:commandline"},
        {"<?xml version='1.0'?>\n<!DOCTYPE domain>\n<domain type='kvm'/>", "<!DOCTYPE>"},
        {"<!DOCTYPE domain SYSTEM 'http://example.org/domain.dtd'><domain type='kvm'/>",
         "<!DOCTYPE>"},
        {"<domain xmlns='http://libvirt.org/schemas/domain' type='kvm'/>",
         "domain XML: <domain> is in the namespace 'http://libvirt.org/schemas/domain'; it "
         "must have none"},
        {"<domain type='kvm'><name>&undefined;</name></domain>", "not well-formed"},
        {"<domain type='kvm'><name>a</name>", "not well-formed"},
        {"<!-- only a comment -->", "not well-formed"},
        {"<domain type='kvm'><name>a\x01</name></domain>", "not well-formed"},
        {"<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu></domain><x/>",
         "not well-formed"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        BerthDomainDef *def = parse_str(cases[i].xml, 0, &error);
        g_autofree char *what = g_strdup_printf("inline case %u", i);

        assert_refused(what, def, error, cases[i].message);
    }
}

static void
test_refuse_empty(void)
{
    g_autoptr(GError) error = NULL;

    g_assert_null(berth_domain_def_parse("", 0, 0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, "domain XML: the document is empty");
}

static void
test_ignore_flag(void)
{
    g_autofree char *xml = read_sample("bad-unsupported.xml");
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    g_autofree char *out = NULL;

    def = parse_str(xml, BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(def->n_disks, ==, 2);
    g_assert_cmpstr(def->disks[1]->target_dev, ==, "vdb");
    out = berth_domain_def_format(def);
    g_assert_null(strstr(out, "video"));
    g_assert_null(strstr(out, "snapshot"));
    g_assert_null(strstr(out, "clock"));

    /* The flag skips unknown elements only: bad values are still refused. */
    g_clear_error(&error);
    g_assert_null(parse_str("<domain type='kvm'><name>a</name><memory>1</memory>"
                            "<vcpu>1</vcpu><devices><disk type='block'/></devices></domain>",
                            BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
}

static void
test_refuse_entity_bomb(void)
{
    g_autofree char *xml = read_sample("bad-entity-bomb.xml");
    g_autoptr(GError) error = NULL;
    gint64 start = g_get_monotonic_time();
    BerthDomainDef *def = parse_str(xml, 0, &error);
    gint64 elapsed = g_get_monotonic_time() - start;

    assert_refused("entity bomb", def, error, "entities are not allowed");
    g_test_message("entity bomb refused in %" G_GINT64_FORMAT " us", elapsed);
    g_assert_cmpint(elapsed, <, 100 * 1000);
    g_clear_error(&error);
    /* With the flag too: the refusal happens before any element is looked at. */
    g_assert_null(parse_str(xml, BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
}

/* libxml2 asks every registered input handler whether it matches a URI before it opens it:
 * counting the questions catches any attempt to read a file or fetch a URL. */
static int
spy_match(const char *uri)
{
    g_atomic_int_inc(&io_attempts);
    return 0;
}

static void
test_refuse_external_entity(void)
{
    g_autofree char *dir = g_dir_make_tmp("berth-xxe-XXXXXX", NULL);
    g_autofree char *secret = g_build_filename(dir, "secret.txt", NULL);
    g_autoptr(GError) error = NULL;
    const char *templates[] = {
        "<!DOCTYPE domain [<!ENTITY s SYSTEM 'file://@PATH@'>]>\n"
        "<domain type='kvm'><name>x</name><description>&s;</description>"
        "<memory>1</memory><vcpu>1</vcpu></domain>",
        "<!DOCTYPE domain SYSTEM 'file://@PATH@'>\n"
        "<domain type='kvm'><name>x</name><memory>1</memory><vcpu>1</vcpu></domain>",
        "<!DOCTYPE domain [<!ENTITY % p SYSTEM 'file://@PATH@'> %p;]>\n"
        "<domain type='kvm'><name>x</name><memory>1</memory><vcpu>1</vcpu></domain>",
        "<domain type='kvm' xmlns:xi='http://www.w3.org/2001/XInclude'><name>x</name>"
        "<description><xi:include href='file://@PATH@' parse='text'/></description>"
        "<memory>1</memory><vcpu>1</vcpu></domain>",
    };

    g_assert_nonnull(dir);
    g_file_set_contents(secret, "TOP-SECRET-CONTENT\n", -1, &error);
    g_assert_no_error(error);
    g_assert_cmpint(xmlRegisterInputCallbacks(spy_match, NULL, NULL, NULL), >=, 0);
    g_atomic_int_set(&io_attempts, 0);

    for (guint i = 0; i < G_N_ELEMENTS(templates); i++) {
        g_autoptr(GString) text = g_string_new(templates[i]);
        const char *xml = (g_string_replace(text, "@PATH@", secret, 0), text->str);
        g_autoptr(GError) err = NULL;
        BerthDomainDef *def = parse_str(xml, 0, &err);
        g_autoptr(BerthDomainDef) ignored = NULL;
        g_autoptr(GError) err2 = NULL;

        g_assert_null(def);
        g_assert_error(err, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        g_assert_null(strstr(err->message, "TOP-SECRET"));
        /* Even when unsupported elements are skipped, nothing is loaded. */
        ignored = parse_str(xml, BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &err2);
        if (ignored) {
            g_assert_null(ignored->description);
        }
    }
    g_assert_cmpint(g_atomic_int_get(&io_attempts), ==, 0);

    /* The spy works: a plain libxml2 read of the same file is seen. */
    {
        xmlDoc *doc = xmlReadFile(secret, NULL, XML_PARSE_NONET | XML_PARSE_NOERROR |
                                                    XML_PARSE_NOWARNING);

        xmlFreeDoc(doc);
        g_assert_cmpint(g_atomic_int_get(&io_attempts), >, 0);
    }
    xmlPopInputCallbacks();
    g_unlink(secret);
    g_rmdir(dir);
}

static void
test_refuse_oversized(void)
{
    const char *head = "<domain type='kvm'><name>big</name><memory>1</memory><vcpu>1</vcpu>"
                       "<description>";
    const char *tail = "</description></domain>";
    gsize fill = BERTH_DOMAIN_XML_MAX - strlen(head) - strlen(tail);
    g_autoptr(GString) xml = g_string_new(head);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = NULL;

    for (gsize i = 0; i < fill; i++) {
        g_string_append_c(xml, 'd');
    }
    g_string_append(xml, tail);
    g_assert_cmpuint(xml->len, ==, BERTH_DOMAIN_XML_MAX);
    def = berth_domain_def_parse(xml->str, xml->len, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(strlen(def->description), ==, fill);

    g_string_append_c(xml, '\n');
    g_assert_null(berth_domain_def_parse(xml->str, xml->len, 0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==,
                    "domain XML: the document has 1048577 bytes, more than the limit of "
                    "1048576");
}

static char *
many_devices(const char *device, guint n)
{
    GString *xml = g_string_new("<domain type='kvm'><name>many</name><memory>1</memory>"
                                "<vcpu>1</vcpu><devices>");

    for (guint i = 0; i < n; i++) {
        g_string_append(xml, device);
    }
    g_string_append(xml, "</devices></domain>");
    return g_string_free(xml, FALSE);
}

static void
test_refuse_too_many_devices(void)
{
    g_autofree char *ok = many_devices("<interface type='user'/>", BERTH_DOMAIN_MAX_DEVICES);
    g_autofree char *bad = many_devices("<interface type='user'/>",
                                        BERTH_DOMAIN_MAX_DEVICES + 1);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = parse_str(ok, 0, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(def->n_nets, ==, BERTH_DOMAIN_MAX_DEVICES);
    g_assert_null(parse_str(bad, 0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==,
                    "domain XML: <interface> at /domain/devices/interface[257]: more than 256 "
                    "devices of this kind");
}

static void
test_refuse_many_unsupported(void)
{
    g_autofree char *xml = many_devices("<video/>", 100);
    g_autoptr(GError) error = NULL;

    g_assert_null(parse_str(xml, 0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    /* The message stays bounded: the first 32 paths, then a count. */
    g_assert_true(g_str_has_suffix(error->message, "/domain/devices/video[31], "
                                                   "/domain/devices/video[32] and 68 more"));
}

static char *
tag_with_attributes(guint n, const char *value)
{
    GString *xml = g_string_new("<domain type='kvm'><name>a</name><memory>1</memory>"
                                "<vcpu>1</vcpu><devices");

    for (guint i = 0; i < n; i++) {
        g_string_append_printf(xml, " a%u='%s'", i, value);
    }
    g_string_append(xml, "/></domain>");
    return g_string_free(xml, FALSE);
}

/* libxml2 2.9 is quadratic in the attributes of one tag: they are bounded before it runs. */
static void
test_refuse_many_attributes(void)
{
    g_autofree char *at_limit = tag_with_attributes(64, "x");
    g_autofree char *over = tag_with_attributes(65, "x");
    g_autofree char *huge = tag_with_attributes(100000, "");
    g_autofree char *equals = g_strnfill(200, '=');
    g_autofree char *quoted = tag_with_attributes(1, equals);
    g_autofree char *elsewhere = g_strdup_printf(
        "<domain type='kvm'><!-- %s --><name>a</name><memory>1</memory><vcpu>1</vcpu>"
        "<description>%s<![CDATA[%s]]></description><?pi %s?></domain>",
        equals, equals, equals, equals);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    gint64 start;

    g_assert_null(parse_str(at_limit, 0, &error));
    g_assert_nonnull(strstr(error->message, "unsupported elements or attributes: "
                                            "/domain/devices/@a0, "));
    g_clear_error(&error);
    g_assert_null(parse_str(over, 0, &error));
    g_assert_cmpstr(error->message, ==, "domain XML: an element has more than 64 attributes");
    g_clear_error(&error);

    start = g_get_monotonic_time();
    g_assert_null(berth_domain_def_parse(huge, MIN(strlen(huge), BERTH_DOMAIN_XML_MAX), 0,
                                         &error));
    g_assert_cmpint(g_get_monotonic_time() - start, <, G_USEC_PER_SEC);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    /* '=' inside a value, a comment, text, CDATA or a PI is not an attribute. */
    g_assert_null(parse_str(quoted, 0, &error));
    g_assert_nonnull(strstr(error->message, "/domain/devices/@a0"));
    g_clear_error(&error);
    def = parse_str(elsewhere, 0, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(strlen(def->description), ==, 400);
}

/* Naming an unsupported node walks its siblings; only the first 32 are named, so a
 * document full of them is refused in linear time. */
static void
test_refuse_many_siblings(void)
{
    g_autofree char *xml = many_devices("<v/>", (BERTH_DOMAIN_XML_MAX - 100) / 4);
    g_autoptr(GError) error = NULL;
    gint64 start = g_get_monotonic_time();
    gint64 elapsed;

    g_assert_null(parse_str(xml, 0, &error));
    elapsed = g_get_monotonic_time() - start;
    g_test_message("%zu bytes of unsupported siblings refused in %" G_GINT64_FORMAT " us",
                   strlen(xml), elapsed);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_true(g_str_has_suffix(error->message, "/domain/devices/v[32] and 262087 more"));
    g_assert_cmpint(elapsed, <, 10 * G_USEC_PER_SEC);
}

/* ---------------------------------------------------------------------------------------- */
/* Threads and quietness */

typedef struct {
    char *good;
    char *broken;
    char *bomb;
    gint failures;
} ThreadData;

static gpointer
parse_thread(gpointer user_data)
{
    ThreadData *td = user_data;

    for (guint i = 0; i < 200; i++) {
        g_autoptr(GError) e1 = NULL;
        g_autoptr(GError) e2 = NULL;
        g_autoptr(GError) e3 = NULL;
        g_autoptr(BerthDomainDef) def = parse_str(td->good, 0, &e1);
        BerthDomainDef *bad = parse_str(td->broken, 0, &e2);
        BerthDomainDef *bomb = parse_str(td->bomb, 0, &e3);

        if (!def || bad || bomb || !strstr(e2->message, "line 1: ") ||
            !strstr(e3->message, "<!DOCTYPE>")) {
            g_atomic_int_inc(&td->failures);
        }
    }
    return NULL;
}

static void
test_threads_quiet(void)
{
    ThreadData td = {read_sample("full.xml"), read_sample("bad-not-xml.xml"),
                     read_sample("bad-entity-bomb.xml"), 0};
    g_autofree char *log_path = NULL;
    g_autofree char *logged = NULL;
    GThread *threads[4];
    int saved, fd;

    /* Everything libxml2 might print goes to fd 2: catch it in a file. */
    fd = g_file_open_tmp("berth-xml-stderr-XXXXXX", &log_path, NULL);
    g_assert_cmpint(fd, >=, 0);
    fflush(stderr);
    saved = dup(2);
    g_assert_cmpint(dup2(fd, 2), ==, 2);
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
        threads[i] = g_thread_new("parse", parse_thread, &td);
    }
    for (guint i = 0; i < G_N_ELEMENTS(threads); i++) {
        g_thread_join(threads[i]);
    }
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);

    g_assert_cmpint(td.failures, ==, 0);
    g_assert_true(g_file_get_contents(log_path, &logged, NULL, NULL));
    g_assert_cmpstr(logged, ==, "");
    g_unlink(log_path);
    g_free(td.good);
    g_free(td.broken);
    g_free(td.bomb);
}

/* ---------------------------------------------------------------------------------------- */
/* The RelaxNG schema agrees with the parser */

static void
collect_schema_error(void *user_data, xmlErrorPtr err)
{
    GString *s = user_data;

    if (s->len < 2000 && err && err->message) {
        g_string_append_printf(s, "line %d: %s", err->line, err->message);
    }
}

static gboolean
schema_valid(xmlRelaxNG *schema, const char *xml, GString *why)
{
    xmlDoc *doc = xmlReadMemory(xml, (int) strlen(xml), NULL, NULL,
                                XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
    xmlRelaxNGValidCtxt *vctxt;
    int rc;

    if (!doc) {
        g_string_append(why, "not well-formed");
        return FALSE;
    }
    vctxt = xmlRelaxNGNewValidCtxt(schema);
    xmlRelaxNGSetValidStructuredErrors(vctxt, collect_schema_error, why);
    rc = xmlRelaxNGValidateDoc(vctxt, doc);
    xmlRelaxNGFreeValidCtxt(vctxt);
    xmlFreeDoc(doc);
    return rc == 0;
}

static xmlRelaxNG *
load_schema(void)
{
    g_autoptr(GString) why = g_string_new(NULL);
    xmlRelaxNGParserCtxt *pctxt = xmlRelaxNGNewParserCtxt(SCHEMA_PATH);
    xmlRelaxNG *schema;

    xmlRelaxNGSetParserStructuredErrors(pctxt, collect_schema_error, why);
    schema = xmlRelaxNGParse(pctxt);
    xmlRelaxNGFreeParserCtxt(pctxt);
    if (!schema) {
        g_error("cannot load %s: %s", SCHEMA_PATH, why->str);
    }
    return schema;
}

static void
test_schema_good(void)
{
    g_autoptr(GPtrArray) names = golden_names();
    xmlRelaxNG *schema = load_schema();

    g_assert_cmpuint(names->len, >=, 8);
    for (guint i = 0; i < names->len; i++) {
        const char *name = names->pdata[i];
        g_autofree char *in_file = g_strdup_printf("%s.xml", name);
        g_autofree char *out_file = g_strdup_printf("%s.out.xml", name);
        g_autofree char *input = read_sample(in_file);
        g_autofree char *output = read_sample(out_file);
        gboolean ignore = g_str_has_prefix(name, "ignore-");
        g_autoptr(BerthDomainDef) def = parse_str(
            input, ignore ? BERTH_XML_PARSE_IGNORE_UNSUPPORTED : 0, NULL);
        g_autofree char *formatted = NULL;
        g_autoptr(GString) why = g_string_new(NULL);

        g_assert_nonnull(def);
        formatted = berth_domain_def_format(def);
        /* The schema refuses what the parser refuses: an ignore-* input itself is invalid. */
        if (schema_valid(schema, input, why) == ignore || !schema_valid(schema, output, why) ||
            !schema_valid(schema, formatted, why)) {
            g_error("%s does not match the schema: %s", name, why->str);
        }
    }
    xmlRelaxNGFree(schema);
}

static void
test_schema_conf_samples(void)
{
    g_autofree char *dir_path = g_build_filename(TEST_DATA_DIR, "..", "..", "conf", "domains",
                                                 NULL);
    g_autoptr(GDir) dir = g_dir_open(dir_path, 0, NULL);
    xmlRelaxNG *schema = load_schema();
    const char *file;
    guint count = 0;

    g_assert_nonnull(dir);
    while ((file = g_dir_read_name(dir))) {
        g_autofree char *path = g_build_filename(dir_path, file, NULL);
        g_autofree char *xml = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(BerthDomainDef) def = NULL;
        g_autoptr(GString) why = g_string_new(NULL);

        if (!g_str_has_suffix(file, ".xml")) {
            continue;
        }
        g_assert_true(g_file_get_contents(path, &xml, NULL, NULL));
        def = parse_str(xml, 0, &error);
        g_assert_no_error(error);
        if (!schema_valid(schema, xml, why)) {
            g_error("%s does not match the schema: %s", file, why->str);
        }
        count++;
    }
    g_assert_cmpuint(count, >=, 1);
    xmlRelaxNGFree(schema);
}

/* The schema is not a rubber stamp: it refuses what the parser refuses for structure. */
static void
test_schema_bad(void)
{
    static const char *const files[] = {"bad-root.xml", "bad-no-name.xml", "bad-unit.xml",
                                        "bad-unsupported.xml", "bad-vcpu.xml", "bad-type.xml",
                                        "bad-name.xml", "bad-uuid.xml"};
    xmlRelaxNG *schema = load_schema();

    for (guint i = 0; i < G_N_ELEMENTS(files); i++) {
        g_autofree char *xml = read_sample(files[i]);
        g_autoptr(GString) why = g_string_new(NULL);

        if (schema_valid(schema, xml, why)) {
            g_error("the schema accepts %s", files[i]);
        }
    }
    xmlRelaxNGFree(schema);
}

/* ---- one device, as domain.attach_device parses it ---- */

static BerthDeviceDef *
parse_dev(const char *xml, guint flags, GError **error)
{
    return berth_device_def_parse(xml, strlen(xml), flags, error);
}

static void
test_device_parse(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDeviceDef) disk = NULL;
    g_autoptr(BerthDeviceDef) net = NULL;
    g_autoptr(BerthDeviceDef) fs = NULL;
    g_autoptr(BerthDeviceDef) hostdev = NULL;

    /* A runtime alias (as a live dumpxml shows it) is the hypervisor's to give: refused as
     * unsupported, and dropped with the flag, as in a domain definition. */
    g_assert_null(parse_dev("<disk type='file' device='disk'><source file='/var/tmp/a.img'/>"
                            "<target dev='vdb'/><alias name='virtio-disk7'/></disk>",
                            0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "/disk/alias"));
    g_clear_error(&error);
    disk = parse_dev("<disk type='file' device='disk'><source file='/var/tmp/a.img'/>"
                     "<target dev='vdb' bus='virtio'/><alias name='virtio-disk7'/></disk>",
                     BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error);
    g_assert_no_error(error);
    g_assert_cmpint(disk->type, ==, BERTH_DEVICE_DISK);
    g_assert_cmpstr(disk->u.disk->target_dev, ==, "vdb");
    g_assert_cmpstr(disk->u.disk->source_file, ==, "/var/tmp/a.img");
    g_assert_null(berth_device_def_alias(disk));

    net = parse_dev("<interface type='user'><alias name='ua-nic'/></interface>", 0, &error);
    g_assert_no_error(error);
    g_assert_cmpint(net->type, ==, BERTH_DEVICE_NET);
    g_assert_cmpstr(berth_device_def_alias(net), ==, "ua-nic");

    fs = parse_dev("<filesystem type='mount'><driver type='virtiofs'/>"
                   "<source socket='/run/vfs.sock'/><target dir='tag1'/></filesystem>",
                   0, &error);
    g_assert_no_error(error);
    g_assert_cmpint(fs->type, ==, BERTH_DEVICE_FS);
    g_assert_cmpstr(fs->u.fs->source_socket, ==, "/run/vfs.sock");
    g_assert_cmpstr(fs->u.fs->target_dir, ==, "tag1");

    hostdev = parse_dev("<hostdev mode='subsystem' type='pci' managed='yes'><source>"
                        "<address domain='0x0000' bus='0x06' slot='0x12' function='0x5'/>"
                        "</source></hostdev>",
                        0, &error);
    g_assert_no_error(error);
    g_assert_cmpint(hostdev->type, ==, BERTH_DEVICE_HOSTDEV);
    g_assert_true(hostdev->u.hostdev->managed);
    g_assert_cmpuint(hostdev->u.hostdev->source.bus, ==, 6);
    g_assert_cmpuint(hostdev->u.hostdev->source.slot, ==, 0x12);
    g_assert_cmpuint(hostdev->u.hostdev->source.function, ==, 5);
}

static void
test_device_bad(void)
{
    static const struct {
        const char *xml;
        const char *message; /* a part of the error */
    } bad[] = {
        {"<disk", "not well-formed"},
        {"<serial type='pty'/>", "a device is one of <disk>, <interface>, <filesystem>"},
        {"<domain/>", "the root element is <domain>"},
        {"<disk type='block'><source dev='/dev/sda'/><target dev='vdb'/></disk>", "block"},
        {"<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x06' "
         "slot='0x20' function='0x0'/></source></hostdev>",
         "'0x20'"},
        {"<disk type='file' snapshot='no'><source file='/var/tmp/a.img'/>"
         "<target dev='vdb'/></disk>",
         "@snapshot"},
    };
    g_autofree char *big = NULL;

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        BerthDeviceDef *dev = parse_dev(bad[i].xml, 0, &error);

        g_assert_null(dev);
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        if (!strstr(error->message, bad[i].message)) {
            g_error("%s: '%s' does not say '%s'", bad[i].xml, error->message, bad[i].message);
        }
    }
    {
        g_autoptr(GError) error = NULL;

        g_assert_null(berth_device_def_parse("", 0, 0, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    }
    {
        g_autoptr(GError) error = NULL;
        gsize len = BERTH_DOMAIN_XML_MAX + 1;

        big = g_malloc(len + 1);
        memset(big, ' ', len);
        big[len] = '\0';
        memcpy(big, "<disk>", 6);
        g_assert_null(berth_device_def_parse(big, len, 0, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "limit"));
    }
    {
        /* The flag skips what berth does not support, never bad values. */
        g_autoptr(GError) error = NULL;
        g_autoptr(BerthDeviceDef) dev = parse_dev(bad[5].xml,
                                                  BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error);

        g_assert_no_error(error);
        g_assert_nonnull(dev);
        g_assert_null(parse_dev(bad[3].xml, BERTH_XML_PARSE_IGNORE_UNSUPPORTED, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    }
}

/* Runtime aliases, then a hot-plugged device added and removed, as the registry does it. */
static void
test_device_add_remove(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomainDef) def = NULL;
    g_autoptr(BerthDeviceDef) disk = NULL;
    g_autoptr(BerthDeviceDef) same = NULL;
    g_autoptr(BerthDeviceDef) net = NULL;
    BerthDeviceType type;
    guint index;

    def = parse_str("<domain type='kvm'><name>a</name><memory>1</memory><vcpu>1</vcpu>"
                    "<devices><disk type='file'><source file='/var/tmp/a.img'/>"
                    "<target dev='vda'/></disk><interface type='user'/>"
                    "<serial type='pty'/></devices></domain>",
                    0, &error);
    g_assert_no_error(error);
    berth_domain_def_assign_aliases(def);
    g_assert_cmpstr(def->disks[0]->alias, ==, "virtio-disk0");
    g_assert_cmpstr(def->nets[0]->alias, ==, "net0");
    g_assert_cmpstr(def->serials[0]->alias, ==, "serial0");

    disk = parse_dev("<disk type='file'><source file='/var/tmp/b.img'/>"
                     "<target dev='vdc'/></disk>", 0, &error);
    g_assert_no_error(error);
    g_assert_true(berth_domain_def_add_device(def, disk, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(def->n_disks, ==, 2);
    g_assert_cmpstr(def->disks[1]->alias, ==, "virtio-disk2"); /* from the target, vdc */
    g_assert_true(berth_domain_def_find_device(def, "virtio-disk2", &type, &index));
    g_assert_cmpint(type, ==, BERTH_DEVICE_DISK);
    g_assert_cmpuint(index, ==, 1);
    /* Serial ports are not hot-pluggable devices. */
    g_assert_false(berth_domain_def_find_device(def, "serial0", &type, &index));

    same = parse_dev("<disk type='file'><source file='/var/tmp/c.img'/>"
                     "<target dev='vdc'/></disk>", 0, &error);
    g_assert_no_error(error);
    g_assert_false(berth_domain_def_add_device(def, same, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_cmpuint(def->n_disks, ==, 2);

    net = parse_dev("<interface type='user'/>", 0, &error);
    g_assert_true(berth_domain_def_add_device(def, net, &error));
    g_assert_cmpstr(def->nets[1]->alias, ==, "net1");

    g_assert_true(berth_domain_def_remove_device(def, "virtio-disk2"));
    g_assert_cmpuint(def->n_disks, ==, 1);
    g_assert_false(berth_domain_def_remove_device(def, "virtio-disk2"));
    g_assert_true(berth_domain_def_remove_device(def, "net1"));
    g_assert_cmpuint(def->n_nets, ==, 1);
}

int
main(int argc, char **argv)
{
    g_autoptr(GPtrArray) names = NULL;

    g_test_init(&argc, &argv, NULL);
    xmlInitParser();

    names = golden_names();
    for (guint i = 0; i < names->len; i++) {
        g_autofree char *path = g_strdup_printf("/core/xml/round-trip/%s",
                                                (const char *) names->pdata[i]);

        g_test_add_data_func(path, names->pdata[i], test_round_trip);
    }
    g_test_add_func("/core/xml/defaults", test_defaults);
    g_test_add_func("/core/xml/uuid-generated", test_uuid_generated);
    g_test_add_func("/core/xml/memory-units", test_memory_units);
    g_test_add_func("/core/xml/name-valid", test_names);
    g_test_add_func("/core/xml/pci-address", test_pci_address);
    for (guint i = 0; i < G_N_ELEMENTS(bad_samples); i++) {
        g_autofree char *base = g_strndup(bad_samples[i].file + 4,
                                          strlen(bad_samples[i].file) - 8);
        g_autofree char *path = g_strdup_printf("/core/xml/refuse/sample/%s", base);

        g_test_add_data_func(path, GUINT_TO_POINTER(i), test_refuse_sample);
    }
    g_test_add_func("/core/xml/refuse/every-sample-listed", test_refuse_all_listed);
    g_test_add_func("/core/xml/refuse/inline", test_refuse_inline);
    g_test_add_func("/core/xml/refuse/empty", test_refuse_empty);
    g_test_add_func("/core/xml/refuse/entity-bomb", test_refuse_entity_bomb);
    g_test_add_func("/core/xml/refuse/external-entity", test_refuse_external_entity);
    g_test_add_func("/core/xml/refuse/oversized", test_refuse_oversized);
    g_test_add_func("/core/xml/refuse/too-many-devices", test_refuse_too_many_devices);
    g_test_add_func("/core/xml/refuse/many-unsupported", test_refuse_many_unsupported);
    g_test_add_func("/core/xml/refuse/many-attributes", test_refuse_many_attributes);
    g_test_add_func("/core/xml/refuse/many-siblings", test_refuse_many_siblings);
    g_test_add_func("/core/xml/ignore-unsupported", test_ignore_flag);
    g_test_add_func("/core/xml/device/parse", test_device_parse);
    g_test_add_func("/core/xml/device/bad", test_device_bad);
    g_test_add_func("/core/xml/device/add-remove", test_device_add_remove);
    g_test_add_func("/core/xml/threads-quiet", test_threads_quiet);
    g_test_add_func("/core/xml/schema/good", test_schema_good);
    g_test_add_func("/core/xml/schema/conf-samples", test_schema_conf_samples);
    g_test_add_func("/core/xml/schema/bad", test_schema_bad);
    return g_test_run();
}
