/* The QEMU plugin's PCI layout, command line (golden files) and hotplug commands. */
#include <string.h>

#include <berth/error.h>

#include "command.h"
#include "domain-xml.h"

#define GOLDEN_DIR TEST_DATA_DIR "/qemu"

/* Options per golden case; every tests/data/qemu/NAME.xml must be listed here. */
typedef struct {
    const char *name;
    guint spare_ports;
    gboolean acpi_pci_hotplug;
    int error_code; /* -1: builds; otherwise the expected BerthError (NAME.err holds the text) */
} GoldenCase;

static const GoldenCase golden_cases[] = {
    {"minimal-q35", 4, FALSE, -1},
    {"minimal-no-os", 0, FALSE, -1},
    {"pc", 4, FALSE, -1},
    {"tcg", 2, FALSE, -1},
    {"machine-versioned", 1, FALSE, -1},
    {"cpu-host-passthrough", 0, FALSE, -1},
    {"cpu-host-model", 0, FALSE, -1},
    {"cpu-custom", 0, FALSE, -1},
    {"memory-shared", 0, FALSE, -1},
    {"memory-anonymous", 0, FALSE, -1},
    {"memory-rounding", 0, FALSE, -1},
    {"kernel-boot", 1, FALSE, -1},
    {"disk-raw", 2, FALSE, -1},
    {"disk-qcow2", 2, FALSE, -1},
    {"disk-readonly", 1, FALSE, -1},
    {"cdrom", 1, FALSE, -1},
    {"disk-sata", 1, FALSE, -1},
    {"disk-sata-pc", 0, FALSE, -1},
    {"disk-scsi", 1, FALSE, -1},
    {"boot-order", 0, FALSE, -1},
    {"net-user", 2, FALSE, -1},
    {"net-models", 0, FALSE, -1},
    {"net-tap", 1, FALSE, -1},
    {"serial-file", 0, FALSE, -1},
    {"serial-unix", 0, FALSE, -1},
    {"serial-pty-console", 0, FALSE, -1},
    {"serial-null-console", 0, FALSE, -1},
    {"virtiofs", 2, FALSE, -1},
    {"virtiofs-socket", 0, FALSE, -1},
    {"hostdev", 2, FALSE, -1},
    {"addresses-q35", 3, FALSE, -1},
    {"addresses-pc", 0, FALSE, -1},
    {"spare-ports", 12, FALSE, -1},
    {"acpi-hotplug", 2, TRUE, -1},
    {"lifecycle", 0, FALSE, -1},
    {"err-bridge-net", 1, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-network-net", 1, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-host-passthrough-tcg", 1, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-memory-file", 1, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-fs-anonymous", 1, FALSE, BERTH_ERROR_INVALID_ARGUMENT},
    {"err-pc-bus", 0, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-reserved-slot", 1, FALSE, BERTH_ERROR_INVALID_ARGUMENT},
    {"err-port-slot", 1, FALSE, BERTH_ERROR_INVALID_ARGUMENT},
    {"err-machine", 1, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-arch", 1, FALSE, BERTH_ERROR_UNSUPPORTED},
    {"err-too-many-devices", 4, FALSE, BERTH_ERROR_INVALID_ARGUMENT},
};

static gboolean regen;

static BerthDomainDef *
load_def(const char *name)
{
    g_autofree char *path = g_strdup_printf("%s/%s.xml", GOLDEN_DIR, name);
    g_autofree char *xml = NULL;
    gsize len = 0;
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_get_contents(path, &xml, &len, &error));
    BerthDomainDef *def = berth_domain_def_parse(xml, len, 0, &error);
    g_assert_no_error(error);
    berth_domain_def_assign_aliases(def);
    return def;
}

typedef struct {
    BerthQemuCmdOpts opts;
    char *qmp;
    char *run_dir;
    GPtrArray *fs_sockets;
} TestOpts;

static void
test_opts_init(TestOpts *t, const BerthDomainDef *def, gboolean acpi_pci_hotplug)
{
    memset(t, 0, sizeof(*t));
    t->run_dir = g_strdup_printf("/run/berth/qemu/%s", def->name);
    t->qmp = g_strdup_printf("%s/qmp.sock", t->run_dir);
    t->fs_sockets = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < def->n_filesystems; i++) {
        g_ptr_array_add(t->fs_sockets, g_strdup_printf("%s/fs%u.sock", t->run_dir, i));
    }
    g_ptr_array_add(t->fs_sockets, NULL);
    t->opts.binary = "/usr/bin/qemu-system-x86_64";
    t->opts.accel = strcmp(def->type, "qemu") == 0 ? "tcg" : "kvm";
    t->opts.qmp_socket = t->qmp;
    t->opts.run_dir = t->run_dir;
    t->opts.fs_sockets = (const char *const *) t->fs_sockets->pdata;
    t->opts.acpi_pci_hotplug = acpi_pci_hotplug;
}

static void
test_opts_clear(TestOpts *t)
{
    g_free(t->qmp);
    g_free(t->run_dir);
    g_ptr_array_free(t->fs_sockets, TRUE);
}

static void
compare_golden(const char *file, const char *actual)
{
    g_autofree char *expected = NULL;
    g_autoptr(GError) error = NULL;

    if (regen) {
        g_assert_true(g_file_set_contents(file, actual, -1, &error));
        return;
    }
    if (!g_file_get_contents(file, &expected, NULL, &error)) {
        g_test_message("%s: %s (regenerate with BERTH_REGEN_GOLDEN=1)", file, error->message);
        g_test_fail();
        return;
    }
    g_assert_cmpstr(actual, ==, expected);
}

static void
test_golden(gconstpointer data)
{
    const GoldenCase *c = data;
    g_autoptr(BerthDomainDef) def = load_def(c->name);
    g_autoptr(GError) error = NULL;
    TestOpts t;
    g_auto(GStrv) argv = NULL;

    test_opts_init(&t, def, c->acpi_pci_hotplug);
    g_autoptr(BerthQemuLayout) layout = berth_qemu_layout_new(def, c->spare_ports, &error);
    if (layout) {
        argv = berth_qemu_build_argv(def, layout, &t.opts, &error);
    }
    if (c->error_code < 0) {
        g_assert_no_error(error);
        g_assert_nonnull(argv);
        g_autofree char *joined = g_strjoinv("\n", argv);
        g_autofree char *text = g_strconcat(joined, "\n", NULL);
        g_autofree char *file = g_strdup_printf("%s/%s.argv", GOLDEN_DIR, c->name);
        compare_golden(file, text);
        /* Same definition, same command line. */
        g_autoptr(BerthQemuLayout) again = berth_qemu_layout_new(def, c->spare_ports, NULL);
        g_auto(GStrv) argv2 = berth_qemu_build_argv(def, again, &t.opts, NULL);
        g_assert_true(g_strv_equal((const char *const *) argv, (const char *const *) argv2));
    } else {
        g_assert_error(error, BERTH_ERROR, c->error_code);
        g_assert_null(argv);
        g_autofree char *text = g_strdup_printf("%s\n", error->message);
        g_autofree char *file = g_strdup_printf("%s/%s.err", GOLDEN_DIR, c->name);
        compare_golden(file, text);
    }
    test_opts_clear(&t);
}

/* Every XML in the golden dir is a listed case, so none is silently skipped. */
static void
test_golden_all_listed(void)
{
    g_autoptr(GDir) dir = g_dir_open(GOLDEN_DIR, 0, NULL);
    const char *name;
    guint n = 0;

    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir))) {
        gboolean found = FALSE;

        if (!g_str_has_suffix(name, ".xml")) {
            continue;
        }
        n++;
        for (guint i = 0; i < G_N_ELEMENTS(golden_cases) && !found; i++) {
            g_autofree char *file = g_strdup_printf("%s.xml", golden_cases[i].name);
            found = strcmp(file, name) == 0;
        }
        if (!found) {
            g_test_message("%s has no entry in golden_cases", name);
        }
        g_assert_true(found);
    }
    g_assert_cmpuint(n, ==, G_N_ELEMENTS(golden_cases));
}

/* ---- layout ---- */

static BerthQemuLayout *
layout_of(const char *name, guint spare, BerthDomainDef **def_out)
{
    g_autoptr(GError) error = NULL;
    BerthDomainDef *def = load_def(name);
    BerthQemuLayout *l = berth_qemu_layout_new(def, spare, &error);

    g_assert_no_error(error);
    if (def_out) {
        *def_out = def;
    } else {
        berth_domain_def_free(def);
    }
    return l;
}

static void
assert_address(const BerthQemuLayout *l, const char *alias, const char *expected)
{
    g_autofree char *addr = berth_qemu_layout_address(l, alias);

    g_assert_cmpstr(addr, ==, expected);
}

static void
test_layout_deterministic(void)
{
    g_autoptr(BerthQemuLayout) a = layout_of("boot-order", 3, NULL);
    g_autoptr(BerthQemuLayout) b = layout_of("boot-order", 3, NULL);
    g_autofree char *ja = berth_qemu_layout_to_json(a);
    g_autofree char *jb = berth_qemu_layout_to_json(b);

    g_assert_cmpstr(ja, ==, jb);
    /* Devices in definition order, one root port each: vda, vdb, then the interface. */
    assert_address(a, "virtio-disk0", "0000:01:00.0");
    assert_address(a, "virtio-disk1", "0000:02:00.0");
    assert_address(a, "net0", "0000:03:00.0");
    /* The sata cdrom sits on the chipset's AHCI: no PCI place of its own. */
    assert_address(a, "sata0-0-0", NULL);
    assert_address(a, "nothing", NULL);
}

static BerthDeviceDef *
disk_device(const char *alias, const char *target)
{
    BerthDeviceDef *dev = g_new0(BerthDeviceDef, 1);
    BerthDiskDef *d = g_new0(BerthDiskDef, 1);

    d->alias = g_strdup(alias);
    d->device = g_strdup("disk");
    d->driver_type = g_strdup("qcow2");
    d->source_file = g_strdup("/var/lib/berth/test/hot.qcow2");
    d->target_dev = g_strdup(target);
    d->target_bus = g_strdup("virtio");
    dev->struct_size = sizeof(*dev);
    dev->type = BERTH_DEVICE_DISK;
    dev->u.disk = d;
    return dev;
}

static BerthDeviceDef *
net_device(const char *alias)
{
    BerthDeviceDef *dev = g_new0(BerthDeviceDef, 1);
    BerthNetDef *n = g_new0(BerthNetDef, 1);

    n->alias = g_strdup(alias);
    n->type = g_strdup("user");
    n->model = g_strdup("virtio");
    dev->struct_size = sizeof(*dev);
    dev->type = BERTH_DEVICE_NET;
    dev->u.net = n;
    return dev;
}

static BerthDeviceDef *
fs_device(const char *alias)
{
    BerthDeviceDef *dev = g_new0(BerthDeviceDef, 1);
    BerthFsDef *f = g_new0(BerthFsDef, 1);

    f->alias = g_strdup(alias);
    f->driver_type = g_strdup("virtiofs");
    f->source_dir = g_strdup("/srv/hot");
    f->target_dir = g_strdup("hot");
    dev->struct_size = sizeof(*dev);
    dev->type = BERTH_DEVICE_FS;
    dev->u.fs = f;
    return dev;
}

static BerthDeviceDef *
hostdev_device(const char *alias)
{
    BerthDeviceDef *dev = g_new0(BerthDeviceDef, 1);
    BerthHostdevDef *h = g_new0(BerthHostdevDef, 1);

    h->alias = g_strdup(alias);
    h->managed = TRUE;
    h->source = (BerthPciAddress){TRUE, 0, 0x3b, 0x10, 2};
    h->rom_bar_off = TRUE;
    dev->struct_size = sizeof(*dev);
    dev->type = BERTH_DEVICE_HOSTDEV;
    dev->u.hostdev = h;
    return dev;
}

static void
device_free(BerthDeviceDef *dev)
{
    switch (dev->type) {
    case BERTH_DEVICE_DISK:
        g_free(dev->u.disk->alias);
        g_free(dev->u.disk->device);
        g_free(dev->u.disk->driver_type);
        g_free(dev->u.disk->source_file);
        g_free(dev->u.disk->target_dev);
        g_free(dev->u.disk->target_bus);
        g_free(dev->u.disk);
        break;
    case BERTH_DEVICE_NET:
        g_free(dev->u.net->alias);
        g_free(dev->u.net->type);
        g_free(dev->u.net->model);
        g_free(dev->u.net);
        break;
    case BERTH_DEVICE_FS:
        g_free(dev->u.fs->alias);
        g_free(dev->u.fs->driver_type);
        g_free(dev->u.fs->source_dir);
        g_free(dev->u.fs->target_dir);
        g_free(dev->u.fs);
        break;
    default:
        g_free(dev->u.hostdev->alias);
        g_free(dev->u.hostdev);
        break;
    }
    g_free(dev);
}

/* A name of our own: the core's header may define a cleanup for BerthDeviceDef. */
typedef BerthDeviceDef TestDevice;
G_DEFINE_AUTOPTR_CLEANUP_FUNC(TestDevice, device_free)

static void
test_layout_attach_detach(void)
{
    /* spare-ports with 2 spares: vda on 1, net0 on 2, spares 3 and 4. */
    g_autoptr(BerthQemuLayout) l = layout_of("spare-ports", 2, NULL);
    g_autoptr(TestDevice) d1 = disk_device("virtio-disk1", "vdb");
    g_autoptr(TestDevice) n1 = net_device("net1");
    g_autoptr(TestDevice) n2 = net_device("net2");
    g_autoptr(GError) error = NULL;

    g_assert_true(berth_qemu_layout_attach(l, d1, &error));
    g_assert_no_error(error);
    assert_address(l, "virtio-disk1", "0000:03:00.0");
    g_assert_true(berth_qemu_layout_attach(l, n1, &error));
    assert_address(l, "net1", "0000:04:00.0");

    /* All ports taken. */
    g_assert_false(berth_qemu_layout_attach(l, n2, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_assert_true(g_str_has_prefix(error->message, "no free hotplug slot: "));
    g_clear_error(&error);

    /* The same alias twice. */
    g_assert_false(berth_qemu_layout_attach(l, n1, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS);
    g_clear_error(&error);

    /* Detach frees the port; the next attach takes it. Unknown aliases are a no-op. */
    berth_qemu_layout_detach(l, "virtio-disk1");
    berth_qemu_layout_detach(l, "no-such-device");
    assert_address(l, "virtio-disk1", NULL);
    g_assert_true(berth_qemu_layout_attach(l, n2, &error));
    assert_address(l, "net2", "0000:03:00.0");

    /* A cold-plugged device's port is free for hot-plug once it is gone. */
    berth_qemu_layout_detach(l, "virtio-disk0");
    g_assert_true(berth_qemu_layout_attach(l, d1, &error));
    assert_address(l, "virtio-disk1", "0000:01:00.0");
}

static void
test_layout_attach_pc(void)
{
    /* addresses-pc: vda takes slot 3 (2 and 0x1f are explicit). */
    g_autoptr(BerthQemuLayout) l = layout_of("addresses-pc", 0, NULL);
    g_autoptr(TestDevice) n = net_device("net9");
    g_autoptr(TestDevice) n2 = net_device("net10");
    g_autoptr(GError) error = NULL;

    assert_address(l, "net0", "0000:00:02.0");
    assert_address(l, "virtio-disk0", "0000:00:03.0");
    assert_address(l, "net1", "0000:00:1f.0");
    g_assert_true(berth_qemu_layout_attach(l, n, &error));
    assert_address(l, "net9", "0000:00:04.0");
    /* An address asked for that is taken. */
    n2->u.net->address = (BerthPciAddress){TRUE, 0, 0, 4, 0};
    g_assert_false(berth_qemu_layout_attach(l, n2, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_clear_error(&error);
    n2->u.net->address.slot = 9;
    g_assert_true(berth_qemu_layout_attach(l, n2, &error));
    assert_address(l, "net10", "0000:00:09.0");
}

static void
test_layout_explicit(void)
{
    g_autoptr(BerthDomainDef) def = NULL;
    g_autoptr(BerthQemuLayout) l = layout_of("addresses-q35", 3, &def);
    g_autoptr(TestDevice) n = net_device("net5");
    g_autoptr(GError) error = NULL;

    /* vda on pcie.0 slot 2 as asked; net0 behind root port 3 as asked; the others take the
     * free bus numbers 1, 2 and the spares 4, 5, 6. */
    assert_address(l, "virtio-disk0", "0000:00:02.0");
    assert_address(l, "virtio-disk1", "0000:01:00.0");
    assert_address(l, "net0", "0000:03:00.0");
    assert_address(l, "net1", "0000:02:00.0");
    /* Root ports skip slot 2 taken by vda: they start at slot 3. */
    g_autofree char *json = berth_qemu_layout_to_json(l);
    g_assert_nonnull(strstr(json, "{\"index\":1,\"slot\":3,\"function\":0,"));
    g_assert_null(strstr(json, "\"slot\":2,\"function\":0,\"spare\""));

    /* Hot-plug to a bus asked for: a taken one is refused, a spare is granted. */
    n->u.net->address = (BerthPciAddress){TRUE, 0, 3, 0, 0};
    g_assert_false(berth_qemu_layout_attach(l, n, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_clear_error(&error);
    n->u.net->address.bus = 0;
    n->u.net->address.slot = 9;
    g_assert_false(berth_qemu_layout_attach(l, n, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_clear_error(&error);
    n->u.net->address = (BerthPciAddress){TRUE, 0, 5, 0, 0};
    g_assert_true(berth_qemu_layout_attach(l, n, &error));
    assert_address(l, "net5", "0000:05:00.0");

    /* Conflicts with the chipset are refused at start. */
    def->nets[1]->address = (BerthPciAddress){TRUE, 0, 0, 0, 0};
    g_autoptr(BerthQemuLayout) bad = berth_qemu_layout_new(def, 0, &error);
    g_assert_null(bad);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    def->nets[1]->address = (BerthPciAddress){TRUE, 0, 0, 2, 1};
    bad = berth_qemu_layout_new(def, 0, &error);
    g_assert_null(bad);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
}

static void
test_layout_json(void)
{
    const char *names[] = {"addresses-q35", "addresses-pc", "hostdev", "disk-scsi", "minimal-q35"};

    for (guint i = 0; i < G_N_ELEMENTS(names); i++) {
        g_autoptr(BerthQemuLayout) l = layout_of(names[i], 3, NULL);
        g_autoptr(TestDevice) n = net_device("net7");
        g_autoptr(GError) error = NULL;

        g_assert_true(berth_qemu_layout_attach(l, n, &error));
        g_autofree char *json = berth_qemu_layout_to_json(l);
        g_autoptr(BerthQemuLayout) back = berth_qemu_layout_from_json(json, &error);
        g_assert_no_error(error);
        g_autofree char *json2 = berth_qemu_layout_to_json(back);
        g_assert_cmpstr(json, ==, json2);
        g_autofree char *a1 = berth_qemu_layout_address(l, "net7");
        g_autofree char *a2 = berth_qemu_layout_address(back, "net7");
        g_assert_cmpstr(a1, ==, a2);
        /* The restored layout goes on where the saved one was. */
        berth_qemu_layout_detach(back, "net7");
        g_assert_true(berth_qemu_layout_attach(back, n, &error));
        g_autofree char *a3 = berth_qemu_layout_address(back, "net7");
        g_assert_cmpstr(a1, ==, a3);
    }
}

static void
test_layout_json_bad(void)
{
    const char *bad[] = {
        "",
        "[]",
        "{\"machine\":\"virt\",\"ports\":[],\"devices\":[]}",
        "{\"machine\":\"q35\",\"ports\":[]}",
        "{\"machine\":\"q35\",\"ports\":[{\"index\":0,\"slot\":2,\"function\":0,\"spare\":true,"
        "\"alias\":null}],\"devices\":[]}",
        "{\"machine\":\"q35\",\"ports\":[{\"index\":1,\"slot\":2,\"function\":8,\"spare\":true,"
        "\"alias\":null}],\"devices\":[]}",
        "{\"machine\":\"q35\",\"ports\":[],\"devices\":[{\"alias\":\"x\",\"bus\":4,\"slot\":0,"
        "\"function\":0}]}",
        "{\"machine\":\"pc\",\"ports\":[],\"devices\":[{\"alias\":\"x\",\"bus\":0,\"slot\":2,"
        "\"function\":0},{\"alias\":\"x\",\"bus\":0,\"slot\":3,\"function\":0}]}",
        "{\"machine\":\"pc\",\"ports\":[],\"devices\":[{\"alias\":\"x\",\"bus\":0,\"slot\":-1,"
        "\"function\":0}]}",
    };

    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        g_autoptr(BerthQemuLayout) l = berth_qemu_layout_from_json(bad[i], &error);

        g_assert_null(l);
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    }
}

static void
test_layout_no_alias(void)
{
    g_autoptr(BerthDomainDef) def = load_def("net-user");
    g_autoptr(GError) error = NULL;

    g_clear_pointer(&def->nets[1]->alias, g_free);
    g_autoptr(BerthQemuLayout) l = berth_qemu_layout_new(def, 0, &error);
    g_assert_null(l);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL);
}

/* With capabilities, what the binary lacks is refused by name. */
static void
test_argv_caps(void)
{
    g_autoptr(BerthDomainDef) def = load_def("disk-raw");
    g_autoptr(BerthQemuLayout) layout = layout_of("disk-raw", 1, NULL);
    g_autoptr(GError) error = NULL;
    char *machines[] = {(char *) "pc", (char *) "q35", NULL};
    BerthQemuCaps caps = {
        .ref = 1,
        .binary = (char *) "/usr/bin/qemu-system-x86_64",
        .kvm = TRUE,
        .machines = machines,
        .devices = g_hash_table_new(g_str_hash, g_str_equal),
    };
    TestOpts t;

    test_opts_init(&t, def, FALSE);
    t.opts.caps = &caps;
    g_hash_table_add(caps.devices, (char *) "pcie-root-port");
    g_hash_table_add(caps.devices, (char *) "virtio-blk-pci");
    g_auto(GStrv) ok = berth_qemu_build_argv(def, layout, &t.opts, &error);
    g_assert_no_error(error);
    g_assert_nonnull(ok);

    g_hash_table_remove(caps.devices, "virtio-blk-pci");
    g_auto(GStrv) no_dev = berth_qemu_build_argv(def, layout, &t.opts, &error);
    g_assert_null(no_dev);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(error->message, "'virtio-blk-pci'"));
    g_clear_error(&error);

    g_hash_table_add(caps.devices, (char *) "virtio-blk-pci");
    caps.kvm = FALSE;
    g_auto(GStrv) no_kvm = berth_qemu_build_argv(def, layout, &t.opts, &error);
    g_assert_null(no_kvm);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(error->message, "KVM"));
    g_clear_error(&error);

    caps.kvm = TRUE;
    machines[1] = NULL;
    g_auto(GStrv) no_machine = berth_qemu_build_argv(def, layout, &t.opts, &error);
    g_assert_null(no_machine);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(error->message, "'q35'"));

    g_hash_table_unref(caps.devices);
    test_opts_clear(&t);
}

/* ---- hotplug commands ---- */

static void
assert_calls(GPtrArray *calls, const char *const *expected)
{
    guint n = 0;

    while (expected[n * 2]) {
        n++;
    }
    for (guint i = 0; i < calls->len; i++) {
        const BerthQmpCall *c = g_ptr_array_index(calls, i);

        g_test_message("call %u: %s %s", i, c->command, c->args_json);
    }
    g_assert_cmpuint(calls->len, ==, n);
    for (guint i = 0; i < n; i++) {
        const BerthQmpCall *c = g_ptr_array_index(calls, i);

        g_assert_cmpstr(c->command, ==, expected[i * 2]);
        g_assert_cmpstr(c->args_json, ==, expected[i * 2 + 1]);
    }
}

typedef struct {
    BerthDomainDef *def;
    BerthQemuLayout *layout;
    TestOpts t;
} HotplugFixture;

static void
hotplug_setup(HotplugFixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    f->def = load_def("virtiofs");
    f->layout = berth_qemu_layout_new(f->def, 4, &error);
    g_assert_no_error(error);
    test_opts_init(&f->t, f->def, FALSE);
}

static void
hotplug_teardown(HotplugFixture *f, gconstpointer data)
{
    berth_qemu_layout_free(f->layout);
    berth_domain_def_free(f->def);
    test_opts_clear(&f->t);
}

static void
plug(HotplugFixture *f, BerthDeviceDef *dev, const char *fs_socket, GPtrArray **calls,
     GPtrArray **rollback)
{
    g_autoptr(GError) error = NULL;

    g_assert_true(berth_qemu_layout_attach(f->layout, dev, &error));
    g_assert_no_error(error);
    g_assert_true(berth_qemu_hotplug_calls(f->def, f->layout, dev, &f->t.opts, fs_socket, calls,
                                           rollback, &error));
    g_assert_no_error(error);
}

static void
test_hotplug_disk(HotplugFixture *f, gconstpointer data)
{
    g_autoptr(TestDevice) dev = disk_device("virtio-disk3", "vdd");
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;
    const char *want[] = {
        "blockdev-add",
        "{\"driver\":\"file\",\"filename\":\"/var/lib/berth/test/hot.qcow2\",\"node-name\":"
        "\"drive-virtio-disk3-file\",\"read-only\":false}",
        "blockdev-add",
        "{\"driver\":\"qcow2\",\"node-name\":\"drive-virtio-disk3-format\",\"file\":"
        "\"drive-virtio-disk3-file\",\"read-only\":false}",
        "device_add",
        "{\"driver\":\"virtio-blk-pci\",\"id\":\"virtio-disk3\",\"bus\":\"pci.3\",\"addr\":"
        "\"0x0\",\"drive\":\"drive-virtio-disk3-format\"}",
        NULL,
    };
    const char *undo[] = {
        "blockdev-del", "{\"node-name\":\"drive-virtio-disk3-format\"}",
        "blockdev-del", "{\"node-name\":\"drive-virtio-disk3-file\"}",
        NULL,
    };

    plug(f, dev, NULL, &calls, &rollback);
    assert_calls(calls, want);
    assert_calls(rollback, undo);

    /* After DEVICE_DELETED, with the disk in the definition: the same backends go. */
    BerthDiskDef *disks[] = {dev->u.disk};
    f->def->disks = disks;
    f->def->n_disks = 1;
    g_autoptr(GPtrArray) unplug = berth_qemu_unplug_calls(f->def, "virtio-disk3");
    f->def->disks = NULL;
    f->def->n_disks = 0;
    assert_calls(unplug, undo);
}

static void
test_hotplug_net(HotplugFixture *f, gconstpointer data)
{
    g_autoptr(TestDevice) dev = net_device("net4");
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;
    const char *want[] = {
        "netdev_add", "{\"type\":\"user\",\"id\":\"hostnet4\"}",
        "device_add",
        "{\"driver\":\"virtio-net-pci\",\"id\":\"net4\",\"bus\":\"pci.3\",\"addr\":\"0x0\","
        "\"netdev\":\"hostnet4\",\"mac\":\"52:54:00:58:9a:70\"}",
        NULL,
    };
    const char *undo[] = {"netdev_del", "{\"id\":\"hostnet4\"}", NULL};

    plug(f, dev, NULL, &calls, &rollback);
    assert_calls(calls, want);
    assert_calls(rollback, undo);
    BerthNetDef *nets[] = {dev->u.net};
    f->def->nets = nets;
    f->def->n_nets = 1;
    g_autoptr(GPtrArray) unplug = berth_qemu_unplug_calls(f->def, "net4");
    f->def->nets = NULL;
    f->def->n_nets = 0;
    assert_calls(unplug, undo);
}

static void
test_hotplug_fs(HotplugFixture *f, gconstpointer data)
{
    g_autoptr(TestDevice) dev = fs_device("fs2");
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;
    const char *want[] = {
        "chardev-add",
        "{\"id\":\"chr-fs2\",\"backend\":{\"type\":\"socket\",\"data\":{\"addr\":{\"type\":"
        "\"unix\",\"data\":{\"path\":\"/run/berth/qemu/virtiofs/fs2.sock\"}},\"server\":false}}}",
        "device_add",
        "{\"driver\":\"vhost-user-fs-pci\",\"id\":\"fs2\",\"bus\":\"pci.3\",\"addr\":\"0x0\","
        "\"chardev\":\"chr-fs2\",\"tag\":\"hot\",\"queue-size\":1024}",
        NULL,
    };
    const char *undo[] = {"chardev-remove", "{\"id\":\"chr-fs2\"}", NULL};

    plug(f, dev, "/run/berth/qemu/virtiofs/fs2.sock", &calls, &rollback);
    assert_calls(calls, want);
    assert_calls(rollback, undo);
    /* The domain's own shares come out the same way. */
    g_autoptr(GPtrArray) unplug = berth_qemu_unplug_calls(f->def, "fs0");
    const char *undo0[] = {"chardev-remove", "{\"id\":\"chr-fs0\"}", NULL};
    assert_calls(unplug, undo0);
}

static void
test_hotplug_hostdev(HotplugFixture *f, gconstpointer data)
{
    g_autoptr(TestDevice) dev = hostdev_device("hostdev0");
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;
    const char *want[] = {
        "device_add",
        "{\"driver\":\"vfio-pci\",\"id\":\"hostdev0\",\"bus\":\"pci.3\",\"addr\":\"0x0\","
        "\"host\":\"0000:3b:10.2\",\"rombar\":0}",
        NULL,
    };
    const char *none[] = {NULL};

    plug(f, dev, NULL, &calls, &rollback);
    assert_calls(calls, want);
    assert_calls(rollback, none);
    g_autoptr(GPtrArray) unplug = berth_qemu_unplug_calls(f->def, "hostdev0");
    assert_calls(unplug, none);
}

static void
test_hotplug_refused(HotplugFixture *f, gconstpointer data)
{
    g_autoptr(TestDevice) dev = disk_device("sata0-0-1", "sdb");
    g_autoptr(TestDevice) fs = fs_device("fs3");
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;
    g_autoptr(GError) error = NULL;

    g_free(dev->u.disk->target_bus);
    dev->u.disk->target_bus = g_strdup("sata");
    g_assert_false(berth_qemu_layout_attach(f->layout, dev, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_clear_error(&error);
    g_assert_false(berth_qemu_hotplug_calls(f->def, f->layout, dev, &f->t.opts, NULL, &calls,
                                            &rollback, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_clear_error(&error);
    /* A share without a socket. */
    g_assert_true(berth_qemu_layout_attach(f->layout, fs, &error));
    g_assert_false(berth_qemu_hotplug_calls(f->def, f->layout, fs, &f->t.opts, NULL, &calls,
                                            &rollback, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_null(calls);
    g_assert_null(rollback);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    regen = g_strcmp0(g_getenv("BERTH_REGEN_GOLDEN"), "1") == 0;

    for (guint i = 0; i < G_N_ELEMENTS(golden_cases); i++) {
        g_autofree char *path = g_strdup_printf("/qemu/argv/%s", golden_cases[i].name);
        g_test_add_data_func(path, &golden_cases[i], test_golden);
    }
    g_test_add_func("/qemu/argv/all-listed", test_golden_all_listed);
    g_test_add_func("/qemu/argv/capabilities", test_argv_caps);
    g_test_add_func("/qemu/layout/deterministic", test_layout_deterministic);
    g_test_add_func("/qemu/layout/attach-detach", test_layout_attach_detach);
    g_test_add_func("/qemu/layout/attach-pc", test_layout_attach_pc);
    g_test_add_func("/qemu/layout/explicit-addresses", test_layout_explicit);
    g_test_add_func("/qemu/layout/json-round-trip", test_layout_json);
    g_test_add_func("/qemu/layout/json-bad", test_layout_json_bad);
    g_test_add_func("/qemu/layout/no-alias", test_layout_no_alias);
    g_test_add("/qemu/hotplug/disk", HotplugFixture, NULL, hotplug_setup, test_hotplug_disk,
               hotplug_teardown);
    g_test_add("/qemu/hotplug/net", HotplugFixture, NULL, hotplug_setup, test_hotplug_net,
               hotplug_teardown);
    g_test_add("/qemu/hotplug/fs", HotplugFixture, NULL, hotplug_setup, test_hotplug_fs,
               hotplug_teardown);
    g_test_add("/qemu/hotplug/hostdev", HotplugFixture, NULL, hotplug_setup,
               test_hotplug_hostdev, hotplug_teardown);
    g_test_add("/qemu/hotplug/refused", HotplugFixture, NULL, hotplug_setup,
               test_hotplug_refused, hotplug_teardown);
    return g_test_run();
}
