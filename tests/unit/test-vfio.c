/* The vfio plugin's pieces (PCI addresses, sysfs steps and rollbacks, lists, the manager's
 * ownership rules) against the simulated sysfs of tests/vfio-sim. Simulated: the kernel's
 * sysfs and /dev/vfio (a thread moves the driver links); real: everything the plugin runs. */
#include <string.h>
#include <unistd.h>

#include <berth/error.h>

#include "lists.h"
#include "manager.h"
#include "pci-address.h"
#include "sysfs.h"
#include "vsim.h"

#define NIC "0000:06:00.0"     /* e1000e, group 7 alone, has reset */
#define DUAL0 "0000:07:00.0"   /* e1000e, group 8 with DUAL1 */
#define DUAL1 "0000:07:00.1"
#define BRIDGE "0000:00:1c.0"  /* pcieport, a bridge in group 9 */
#define USB "0000:08:00.0"     /* xhci_hcd, group 9 beside the bridge, no reset */
#define NOGROUP "0000:09:00.0" /* e1000e, no IOMMU group */
#define WAIT_MS 1000

typedef struct {
    char *dir;
    VSim *sim;
    VfioSysfs *sysfs; /* for the sysfs tests; the manager has its own */
    GPtrArray *events; /* "type address driver domain" lines */
    GMutex events_lock;
} Fixture;

static void
setup_tree(Fixture *f, gboolean with_vfio)
{
    g_autofree char *root = g_build_filename(f->dir, "root", NULL);

    f->sim = vsim_new(root);
    vsim_add_driver(f->sim, "e1000e");
    vsim_add_driver(f->sim, "xhci_hcd");
    vsim_add_driver(f->sim, "pcieport");
    if (with_vfio) {
        vsim_add_driver(f->sim, "vfio-pci");
    }
    vsim_add_device(f->sim, NIC, 0x8086, 0x10d3, 0x020000, 7, "e1000e", TRUE, TRUE);
    vsim_add_device(f->sim, DUAL0, 0x8086, 0x10c9, 0x020000, 8, "e1000e", TRUE, TRUE);
    vsim_add_device(f->sim, DUAL1, 0x8086, 0x10c9, 0x020000, 8, "e1000e", TRUE, TRUE);
    vsim_add_device(f->sim, BRIDGE, 0x8086, 0xa110, 0x060400, 9, "pcieport", TRUE, FALSE);
    vsim_add_device(f->sim, USB, 0x1b21, 0x1242, 0x0c0330, 9, "xhci_hcd", TRUE, FALSE);
    vsim_add_device(f->sim, NOGROUP, 0x8086, 0x10d3, 0x020000, -1, "e1000e", TRUE, FALSE);
    g_assert_true(vsim_start(f->sim, NULL));
    f->sysfs = vfio_sysfs_new(vsim_sysfs_root(f->sim), vsim_dev_vfio(f->sim), WAIT_MS);
}

static void
fixture_setup(Fixture *f, gconstpointer data)
{
    f->dir = g_dir_make_tmp("test-vfio-XXXXXX", NULL);
    g_assert_nonnull(f->dir);
    f->events = g_ptr_array_new_with_free_func(g_free);
    g_mutex_init(&f->events_lock);
    setup_tree(f, data == NULL);
}

static void
fixture_teardown(Fixture *f, gconstpointer data)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);

    vsim_free(f->sim);
    vfio_sysfs_free(f->sysfs);
    g_ptr_array_unref(f->events);
    g_mutex_clear(&f->events_lock);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(f->dir);
}

static char *
file_text(Fixture *f, const char *rel)
{
    g_autofree char *p = g_build_filename(f->dir, "root", rel, NULL);
    char *text = NULL;

    if (!g_file_get_contents(p, &text, NULL, NULL)) {
        return NULL;
    }
    return g_strchomp(text);
}

static gboolean
exists(Fixture *f, const char *rel)
{
    g_autofree char *p = g_build_filename(f->dir, "root", rel, NULL);

    return g_file_test(p, G_FILE_TEST_EXISTS);
}

static void
assert_driver(Fixture *f, const char *addr, const char *driver)
{
    g_autofree char *d = vsim_driver(f->sim, addr);
    g_autofree char *ov_rel = g_strdup_printf("sys/bus/pci/devices/%s/driver_override", addr);
    const char *want = g_strcmp0(driver, "vfio-pci") == 0 ? "vfio-pci" : "(null)";
    gint64 end = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;
    g_autofree char *ov = file_text(f, ov_rel);

    g_assert_cmpstr(d, ==, driver);
    /* On the host driver the override is clear again; on vfio-pci it says vfio-pci. The
     * simulation shows "(null)" a moment after the plugin's write (the kernel at once). */
    while (g_strcmp0(ov, want) != 0 && g_get_monotonic_time() < end) {
        g_usleep(1000);
        g_free(ov);
        ov = file_text(f, ov_rel);
    }
    g_assert_cmpstr(ov, ==, want);
}

/* -- PCI addresses -- */

static void
test_addr_valid(void)
{
    static const struct {
        const char *in;
        const char *canonical;
    } cases[] = {
        { "0000:06:12.5", "0000:06:12.5" }, { "06:12.5", "0000:06:12.5" },
        { "ffff:ff:1f.7", "ffff:ff:1f.7" }, { "ABCD:EF:1F.0", "abcd:ef:1f.0" },
        { "0001:00:00.0", "0001:00:00.0" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *out = NULL;
        VfioPciAddr a, b;

        g_assert_true(vfio_pci_addr_parse(cases[i].in, &a, &error));
        g_assert_no_error(error);
        out = vfio_pci_addr_format(&a);
        g_assert_cmpstr(out, ==, cases[i].canonical);
        g_assert_true(vfio_pci_addr_parse_canonical(out, &b, NULL));
        g_assert_true(vfio_pci_addr_equal(&a, &b));
    }
    /* Only lowercase, domain-qualified text names a node device object. */
    g_assert_false(vfio_pci_addr_parse_canonical("06:12.5", NULL, NULL));
    g_assert_false(vfio_pci_addr_parse_canonical("0000:06:1A.0", NULL, NULL));
}

static void
test_addr_invalid(void)
{
    static const char *const bad[] = {
        "",          "0",           "0000:06:12",   "0000:06:12.",   "0000:06:12.8",
        "0000:06:20.0", "0000:6:12.5", "000:06:12.5", "00000:06:12.5", "0000-06-12.5",
        "0000:06:12.5 ", " 0000:06:12.5", "0000:06:12.5\n", "0000:0g:12.5", "g000:06:12.5",
        "0000:06:12:5", "0000:06.12.5", "06:12.5.1", "0x00:06:12.5", "0000:06:12.5x",
        "+000:06:12.5", "0000:06:1f.f", "xx:yy.z",
    };

    for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autoptr(GError) error = NULL;
        VfioPciAddr a;

        g_assert_false(vfio_pci_addr_parse(bad[i], &a, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        g_assert_nonnull(strstr(error->message, "is not a valid PCI address"));
    }
    {
        g_autoptr(GError) error = NULL;
        VfioPciAddr a;
        g_autofree char *longtext = g_strnfill(10000, '0');

        g_assert_false(vfio_pci_addr_parse(longtext, &a, &error));
        g_assert_nonnull(strstr(error->message, "too long"));
        g_assert_cmpuint(strlen(error->message), <, 200);
    }
}

/* -- sysfs -- */

static void
test_sysfs_read(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VfioPciDev) d = vfio_sysfs_read_device(f->sysfs, NIC, &error);
    g_autoptr(VfioPciDev) usb = NULL;
    g_autoptr(GPtrArray) all = NULL;

    g_assert_no_error(error);
    g_assert_cmpstr(d->address, ==, NIC);
    g_assert_cmphex(d->vendor, ==, 0x8086);
    g_assert_cmphex(d->device, ==, 0x10d3);
    g_assert_cmphex(d->class_code, ==, 0x020000);
    g_assert_cmpstr(d->driver, ==, "e1000e");
    g_assert_cmpint(d->iommu_group, ==, 7);
    g_assert_cmpint(d->numa_node, ==, 0);
    g_assert_null(d->driver_override);
    g_assert_true(d->has_reset);
    usb = vfio_sysfs_read_device(f->sysfs, "08:00.0", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(usb->address, ==, USB);
    g_assert_false(usb->has_reset);

    all = vfio_sysfs_list(f->sysfs, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(all->len, ==, 6);
    g_assert_cmpstr(((VfioPciDev *) all->pdata[0])->address, ==, BRIDGE);
    g_assert_cmpstr(((VfioPciDev *) all->pdata[5])->address, ==, NOGROUP);
    g_assert_cmpint(((VfioPciDev *) all->pdata[5])->iommu_group, ==, -1);

    g_assert_null(vfio_sysfs_read_device(f->sysfs, "0000:66:00.0", &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE);
    g_clear_error(&error);
    g_assert_null(vfio_sysfs_read_device(f->sysfs, "../../../etc", &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
}

static void
test_sysfs_detach_reattach(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;
    g_autofree char *orig2 = NULL;

    g_assert_false(exists(f, "dev/vfio/7"));
    g_assert_true(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    g_assert_no_error(error);
    g_assert_cmpstr(orig, ==, "e1000e");
    assert_driver(f, NIC, "vfio-pci");
    g_assert_true(exists(f, "dev/vfio/7"));
    g_assert_true(exists(f, "sys/bus/pci/drivers/vfio-pci/" NIC));
    g_assert_false(exists(f, "sys/bus/pci/drivers/e1000e/" NIC));

    /* Detaching again is a no-op that reports no original driver. */
    g_assert_true(vfio_sysfs_detach(f->sysfs, NIC, &orig2, NULL, &error));
    g_assert_null(orig2);

    g_assert_true(vfio_sysfs_reattach(f->sysfs, NIC, orig, NULL, &error));
    g_assert_no_error(error);
    assert_driver(f, NIC, "e1000e");
    g_assert_false(exists(f, "dev/vfio/7"));

    /* Not on vfio-pci: nothing to reattach. */
    g_assert_false(vfio_sysfs_reattach(f->sysfs, NIC, "e1000e", NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
}

static void
test_sysfs_no_vfio_driver(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    g_assert_false(vfio_sysfs_have_vfio_driver(f->sysfs, NULL));
    g_assert_false(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_assert_nonnull(strstr(error->message, "modprobe vfio-pci"));
    assert_driver(f, NIC, "e1000e");
}

static void
test_sysfs_no_group(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    g_assert_false(vfio_sysfs_detach(f->sysfs, NOGROUP, &orig, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_assert_nonnull(strstr(error->message, "no IOMMU group"));
    assert_driver(f, NOGROUP, "e1000e");
}

/* A detach step fails: the error names it and the device is back where it was. */
static void
check_detach_rollback(Fixture *f, const char *fail, const char *step, int code)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;
    g_autofree char *want = g_strdup_printf("at step '%s'", step);

    vsim_set_fail(f->sim, NIC, fail);
    g_assert_false(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    g_assert_error(error, BERTH_ERROR, code);
    if (!strstr(error->message, want)) {
        g_printerr("%s\n", error->message);
    }
    g_assert_nonnull(strstr(error->message, want));
    g_assert_nonnull(strstr(error->message, "rolled back"));
    g_assert_null(orig);
    assert_driver(f, NIC, "e1000e");
    g_assert_false(exists(f, "dev/vfio/7"));
}

static void
test_sysfs_unbind_fails(Fixture *f, gconstpointer data)
{
    check_detach_rollback(f, "unbind-fail", "unbind from e1000e", BERTH_ERROR_TIMEOUT);
}

static void
test_sysfs_bind_fails(Fixture *f, gconstpointer data)
{
    check_detach_rollback(f, "bind-fail", "bind to vfio-pci", BERTH_ERROR_TIMEOUT);
}

static void
test_sysfs_no_devnode(Fixture *f, gconstpointer data)
{
    check_detach_rollback(f, "no-devnode", "wait for /dev/vfio/GROUP", BERTH_ERROR_TIMEOUT);
}

/* When the rollback fails too, the error says so. */
static void
test_sysfs_rollback_fails(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    vsim_set_fail(f->sim, NIC, "bind-fail reprobe-fail");
    g_assert_false(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    g_assert_nonnull(strstr(error->message, "at step 'bind to vfio-pci'"));
    g_assert_nonnull(strstr(error->message, "rolling back failed too"));
    assert_driver(f, NIC, NULL);
}

static void
test_sysfs_slow_unbind(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;
    gint64 t0 = g_get_monotonic_time();

    vsim_set_fail(f->sim, NIC, "unbind-delay-ms=300");
    g_assert_true(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    g_assert_no_error(error);
    g_assert_cmpint(g_get_monotonic_time() - t0, >=, 300 * 1000);
    assert_driver(f, NIC, "vfio-pci");
}

static void
test_sysfs_vanish(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    vsim_set_fail(f->sim, NIC, "vanish-on-unbind");
    g_assert_false(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE);
    g_assert_nonnull(strstr(error->message, "vanished"));
    g_assert_false(exists(f, "sys/bus/pci/devices/" NIC));
}

static void
test_sysfs_reattach_reprobe_fails(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    g_assert_true(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    vsim_set_fail(f->sim, NIC, "reprobe-fail");
    g_assert_false(vfio_sysfs_reattach(f->sysfs, NIC, orig, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT);
    g_assert_nonnull(strstr(error->message, "at step 'reprobe: e1000e takes it back'"));
    g_assert_nonnull(strstr(error->message, "rolled back"));
    /* Rolled back: on vfio-pci again, usable by a domain. */
    assert_driver(f, NIC, "vfio-pci");
    g_assert_true(exists(f, "dev/vfio/7"));
}

static void
test_sysfs_reattach_unbind_fails(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    g_assert_true(vfio_sysfs_detach(f->sysfs, NIC, &orig, NULL, &error));
    vsim_set_fail(f->sim, NIC, "vfio-unbind-fail");
    g_assert_false(vfio_sysfs_reattach(f->sysfs, NIC, orig, NULL, &error));
    g_assert_nonnull(strstr(error->message, "at step 'unbind from vfio-pci'"));
    assert_driver(f, NIC, "vfio-pci");
}

static void
test_sysfs_reset(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    guint64 before = vsim_handled(f->sim);
    gint64 end = g_get_monotonic_time() + 2 * G_USEC_PER_SEC;

    g_assert_true(vfio_sysfs_reset(f->sysfs, NIC, &error));
    g_assert_no_error(error);
    while (vsim_handled(f->sim) == before && g_get_monotonic_time() < end) {
        g_usleep(1000);
    }
    g_assert_cmpuint(vsim_resets(f->sim, NIC), ==, 1);

    g_assert_false(vfio_sysfs_reset(f->sysfs, USB, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_clear_error(&error);

    vsim_set_fail(f->sim, DUAL0, "reset-fail");
    g_assert_false(vfio_sysfs_reset(f->sysfs, DUAL0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(error->message, "resetting PCI device '" DUAL0 "' failed"));
}

static void
test_sysfs_group(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;

    g_assert_true(vfio_sysfs_group_viable(f->sysfs, NIC, &error));
    /* A bridge may share the group. */
    g_assert_true(vfio_sysfs_group_viable(f->sysfs, USB, &error));
    g_assert_no_error(error);

    g_assert_false(vfio_sysfs_group_viable(f->sysfs, DUAL0, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_assert_nonnull(strstr(error->message, "IOMMU group 8"));
    g_assert_nonnull(strstr(error->message, DUAL1 " (bound to e1000e)"));
    g_clear_error(&error);

    g_assert_true(vfio_sysfs_detach(f->sysfs, DUAL1, &orig, NULL, &error));
    g_assert_true(vfio_sysfs_group_viable(f->sysfs, DUAL0, &error));
    g_assert_no_error(error);

    g_assert_false(vfio_sysfs_group_viable(f->sysfs, NOGROUP, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
}

/* -- lists -- */

static void
test_lists_persist(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(f->dir, "lists.json", NULL);
    g_autoptr(VfioLists) a = vfio_lists_new(path);
    g_autoptr(VfioLists) b = vfio_lists_new(path);
    g_autofree char *ja = NULL;
    g_autofree char *jb = NULL;

    g_assert_true(vfio_lists_load(a, &error)); /* no file: empty */
    vfio_lists_set_active(a, NIC, "web1", TRUE, "e1000e");
    vfio_lists_set_active(a, DUAL0, "web2", FALSE, NULL);
    vfio_lists_set_inactive(a, DUAL1, "e1000e");
    vfio_lists_set_inactive(a, DUAL0, "x");
    vfio_lists_set_active(a, DUAL0, "web2", FALSE, vfio_lists_inactive(a, DUAL0)->orig_driver);
    g_assert_null(vfio_lists_inactive(a, DUAL0));
    g_assert_true(vfio_lists_save(a, &error));
    g_assert_no_error(error);
    g_assert_true(vfio_lists_load(b, &error));
    ja = vfio_lists_to_json(a);
    jb = vfio_lists_to_json(b);
    g_assert_cmpstr(ja, ==, jb);
    g_assert_cmpstr(ja, ==,
                    "{\"version\":1,\"active\":[{\"address\":\"" NIC "\",\"domain\":\"web1\","
                    "\"managed\":true,\"driver\":\"e1000e\"},{\"address\":\"" DUAL0 "\","
                    "\"domain\":\"web2\",\"managed\":false,\"driver\":\"x\"}],\"inactive\":[{"
                    "\"address\":\"" DUAL1 "\",\"driver\":\"e1000e\"}]}");

    g_assert_true(g_file_set_contents(path, "{\"active\":[{\"address\":\"../x\"}],"
                                            "\"inactive\":[]}", -1, NULL));
    g_assert_false(vfio_lists_load(b, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL);
    g_clear_error(&error);
    g_assert_true(g_file_set_contents(path, "not json", -1, NULL));
    g_assert_false(vfio_lists_load(b, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL);
}

/* -- the manager -- */

static void
record_event(const char *address, const char *type, const char *detail, gpointer data)
{
    Fixture *f = data;

    g_mutex_lock(&f->events_lock);
    g_ptr_array_add(f->events, g_strdup_printf("%s %s %s", type, address, detail));
    g_mutex_unlock(&f->events_lock);
}

static VfioManager *
manager(Fixture *f)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(f->dir, "lists.json", NULL);
    VfioManager *m = vfio_manager_new(
        vfio_sysfs_new(vsim_sysfs_root(f->sim), vsim_dev_vfio(f->sim), WAIT_MS), path,
        record_event, f, &error);

    g_assert_no_error(error);
    return m;
}

static void
assert_events(Fixture *f, const char *const *want)
{
    guint n = g_strv_length((char **) want);

    g_mutex_lock(&f->events_lock);
    for (guint i = 0; i < f->events->len; i++) {
        g_test_message("event: %s", (char *) f->events->pdata[i]);
    }
    g_assert_cmpuint(f->events->len, ==, n);
    for (guint i = 0; i < n; i++) {
        g_assert_cmpstr(f->events->pdata[i], ==, want[i]);
    }
    g_ptr_array_set_size(f->events, 0);
    g_mutex_unlock(&f->events_lock);
}

static void
test_manager_managed(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    g_autoptr(GError) error = NULL;
    g_autofree char *dev = NULL;
    g_autofree char *lists = NULL;
    const char *const ev1[] = {
        "nodedev-detached " NIC " {\"driver\":\"e1000e\",\"domain\":\"web1\"}", NULL };
    const char *const ev2[] = {
        "nodedev-reattached " NIC " {\"driver\":\"e1000e\",\"domain\":\"web1\"}", NULL };

    g_assert_true(vfio_manager_prepare(m, "web1", NIC, TRUE, NULL, &error));
    g_assert_no_error(error);
    assert_driver(f, NIC, "vfio-pci");
    assert_events(f, ev1);
    dev = vfio_manager_device_json(m, NIC, &error);
    g_assert_nonnull(strstr(dev, "\"state\":\"assigned\",\"domain\":\"web1\",\"managed\":true,"
                                 "\"original_driver\":\"e1000e\""));

    /* Never two domains; never back to the host while in use. */
    g_assert_false(vfio_manager_prepare(m, "web2", NIC, TRUE, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_assert_nonnull(strstr(error->message, "in use by domain 'web1'"));
    g_clear_error(&error);
    g_assert_false(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_false(vfio_manager_detach(m, NIC, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_false(vfio_manager_reset(m, NIC, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    assert_driver(f, NIC, "vfio-pci");

    /* Another domain's release does not touch it. */
    g_assert_true(vfio_manager_release(m, "web2", NIC, &error));
    assert_driver(f, NIC, "vfio-pci");
    g_assert_true(vfio_manager_release(m, "web1", NIC, &error));
    g_assert_no_error(error);
    assert_driver(f, NIC, "e1000e");
    assert_events(f, ev2);
    lists = vfio_manager_lists_json(m);
    g_assert_cmpstr(lists, ==, "{\"version\":1,\"active\":[],\"inactive\":[]}");
}

static void
test_manager_unmanaged(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    g_autoptr(GError) error = NULL;
    g_autofree char *l1 = NULL;
    g_autofree char *l2 = NULL;
    const char *const ev_det[] = {
        "nodedev-detached " NIC " {\"driver\":\"e1000e\",\"domain\":null}", NULL };
    const char *const ev_re[] = {
        "nodedev-reattached " NIC " {\"driver\":\"e1000e\",\"domain\":null}", NULL };
    const char *const none[] = { NULL };

    g_assert_false(vfio_manager_prepare(m, "web1", NIC, FALSE, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_assert_nonnull(strstr(error->message, "not to vfio-pci"));
    g_clear_error(&error);
    assert_driver(f, NIC, "e1000e");

    g_assert_true(vfio_manager_detach(m, NIC, NULL, &error));
    g_assert_no_error(error);
    assert_events(f, ev_det);
    l1 = vfio_manager_lists_json(m);
    g_assert_cmpstr(l1, ==, "{\"version\":1,\"active\":[],\"inactive\":[{\"address\":\"" NIC
                            "\",\"driver\":\"e1000e\"}]}");
    g_assert_true(vfio_manager_prepare(m, "web1", NIC, FALSE, NULL, &error));
    g_assert_no_error(error);
    g_assert_false(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_true(vfio_manager_release(m, "web1", NIC, &error));
    /* Unmanaged: still detached, back on the inactive list, no event. */
    assert_driver(f, NIC, "vfio-pci");
    assert_events(f, none);
    l2 = vfio_manager_lists_json(m);
    g_assert_cmpstr(l1, ==, l2);
    g_assert_true(vfio_manager_reset(m, NIC, &error));
    g_assert_no_error(error);
    g_assert_true(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_no_error(error);
    assert_driver(f, NIC, "e1000e");
    assert_events(f, ev_re);
    g_assert_false(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
}

static void
test_manager_bad_input(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    g_autoptr(GError) error = NULL;

    g_assert_false(vfio_manager_detach(m, "0000:06:00", NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(vfio_manager_detach(m, "0000:66:00.0", NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE);
    g_clear_error(&error);
    g_assert_false(vfio_manager_prepare(m, "web1", "0000:66:00.0", TRUE, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE);
    g_clear_error(&error);
    /* A group that is not viable: the device is not even detached. */
    g_assert_false(vfio_manager_prepare(m, "web1", DUAL0, TRUE, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_assert_nonnull(strstr(error->message, DUAL1));
    g_clear_error(&error);
    assert_driver(f, DUAL0, "e1000e");
    /* Once the sibling is detached the group is viable. */
    g_assert_true(vfio_manager_detach(m, DUAL1, NULL, &error));
    g_assert_true(vfio_manager_prepare(m, "web1", DUAL0, TRUE, NULL, &error));
    g_assert_no_error(error);
    g_assert_true(vfio_manager_release(m, "web1", DUAL0, &error));
    g_assert_true(vfio_manager_reattach(m, DUAL1, NULL, &error));
    g_assert_no_error(error);
}

typedef struct {
    VfioManager *m;
    GError *error;
    gboolean ok;
} DetachThread;

static gpointer
detach_thread(gpointer p)
{
    DetachThread *t = p;

    t->ok = vfio_manager_detach(t->m, NIC, NULL, &t->error);
    return NULL;
}

static void
test_manager_concurrent_detach(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    DetachThread t[2] = { { m, NULL, FALSE }, { m, NULL, FALSE } };
    GThread *th[2];

    vsim_set_fail(f->sim, NIC, "unbind-delay-ms=100");
    th[0] = g_thread_new("a", detach_thread, &t[0]);
    th[1] = g_thread_new("b", detach_thread, &t[1]);
    g_thread_join(th[0]);
    g_thread_join(th[1]);
    g_assert_true(t[0].ok != t[1].ok);
    {
        GError *loser = t[0].ok ? t[1].error : t[0].error;
        g_assert_error(loser, BERTH_ERROR, BERTH_ERROR_BUSY);
    }
    g_clear_error(&t[0].error);
    g_clear_error(&t[1].error);
    assert_driver(f, NIC, "vfio-pci");
}

static void
test_manager_restart(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    VfioManager *m = manager(f);
    g_auto(GStrv) stale = NULL;

    g_assert_true(vfio_manager_prepare(m, "web1", NIC, TRUE, NULL, &error));
    g_assert_true(vfio_manager_detach(m, USB, NULL, &error));
    g_assert_no_error(error);
    before = vfio_manager_lists_json(m);
    vfio_manager_free(m);

    m = manager(f);
    after = vfio_manager_lists_json(m);
    g_assert_cmpstr(before, ==, after);
    stale = vfio_manager_check_lists(m);
    g_assert_cmpuint(g_strv_length(stale), ==, 0);
    g_assert_false(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_true(vfio_manager_release(m, "web1", NIC, &error));
    assert_driver(f, NIC, "e1000e");
    vfio_manager_free(m);
}

static void
test_manager_release_reattach_fails(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    g_autoptr(GError) error = NULL;
    g_autofree char *lists = NULL;

    g_assert_true(vfio_manager_prepare(m, "web1", NIC, TRUE, NULL, &error));
    vsim_set_fail(f->sim, NIC, "reprobe-fail");
    g_assert_false(vfio_manager_release(m, "web1", NIC, &error));
    g_assert_nonnull(strstr(error->message, "stays detached"));
    g_clear_error(&error);
    /* Off the active list, parked on the inactive one: the user can retry the reattach. */
    lists = vfio_manager_lists_json(m);
    g_assert_cmpstr(lists, ==, "{\"version\":1,\"active\":[],\"inactive\":[{\"address\":\"" NIC
                               "\",\"driver\":\"e1000e\"}]}");
    assert_driver(f, NIC, "vfio-pci");
    vsim_set_fail(f->sim, NIC, "");
    g_assert_true(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_no_error(error);
    assert_driver(f, NIC, "e1000e");
}

/* Bound back to a host driver behind the plugin's back: the inactive entry is dropped. */
static void
test_manager_stale_inactive(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    g_autoptr(GError) error = NULL;
    g_autofree char *lists = NULL;

    g_assert_true(vfio_manager_detach(m, NIC, NULL, &error));
    g_assert_true(vfio_sysfs_reattach(f->sysfs, NIC, "e1000e", NULL, &error));
    g_assert_no_error(error);
    g_assert_false(vfio_manager_reattach(m, NIC, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_assert_nonnull(strstr(error->message, "bound to e1000e"));
    lists = vfio_manager_lists_json(m);
    g_assert_cmpstr(lists, ==, "{\"version\":1,\"active\":[],\"inactive\":[]}");
}

static gboolean
cancel_later(gpointer c)
{
    g_cancellable_cancel(c);
    return G_SOURCE_REMOVE;
}

static gpointer
cancel_thread(gpointer c)
{
    g_usleep(100 * 1000);
    cancel_later(c);
    return NULL;
}

/* A cancelled job stops waiting and still rolls back. */
static void
test_sysfs_cancelled(Fixture *f, gconstpointer data)
{
    g_autoptr(GCancellable) c = g_cancellable_new();
    g_autoptr(GError) error = NULL;
    g_autofree char *orig = NULL;
    GThread *th;
    gint64 t0 = g_get_monotonic_time();

    vsim_set_fail(f->sim, NIC, "bind-fail");
    th = g_thread_new("cancel", cancel_thread, c);
    g_assert_false(vfio_sysfs_detach(f->sysfs, NIC, &orig, c, &error));
    g_thread_join(th);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED);
    g_assert_nonnull(strstr(error->message, "at step 'bind to vfio-pci'"));
    g_assert_cmpint(g_get_monotonic_time() - t0, <, WAIT_MS * 1000);
    assert_driver(f, NIC, "e1000e");
}

static void
test_manager_list(Fixture *f, gconstpointer data)
{
    g_autoptr(VfioManager) m = manager(f);
    g_autoptr(GError) error = NULL;
    g_autofree char *net = vfio_manager_list_json(m, "0x02", NULL, &error);
    g_autofree char *vfio = NULL;
    g_autofree char *none = vfio_manager_list_json(m, NULL, "none", &error);

    g_assert_no_error(error);
    g_assert_nonnull(strstr(net, NIC));
    g_assert_nonnull(strstr(net, DUAL1));
    g_assert_null(strstr(net, USB));
    g_assert_cmpstr(none, ==, "[]");
    g_assert_true(vfio_manager_detach(m, NIC, NULL, &error));
    vfio = vfio_manager_list_json(m, NULL, "vfio-pci", &error);
    g_assert_nonnull(strstr(vfio, "\"address\":\"" NIC "\",\"vendor\":\"0x8086\","
                                  "\"device\":\"0x10d3\",\"class\":\"0x020000\","
                                  "\"driver\":\"vfio-pci\",\"driver_override\":\"vfio-pci\","
                                  "\"iommu_group\":7,\"numa_node\":0,\"reset\":true,"
                                  "\"state\":\"detached\",\"domain\":null,\"managed\":null,"
                                  "\"original_driver\":\"e1000e\""));
    g_assert_null(strstr(vfio, DUAL0));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vfio/pci-address/valid", test_addr_valid);
    g_test_add_func("/vfio/pci-address/invalid", test_addr_invalid);
#define T(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    T("/vfio/sysfs/read-and-list", test_sysfs_read);
    T("/vfio/sysfs/detach-reattach", test_sysfs_detach_reattach);
    g_test_add("/vfio/sysfs/no-vfio-driver", Fixture, "no-vfio", fixture_setup,
               test_sysfs_no_vfio_driver, fixture_teardown);
    T("/vfio/sysfs/no-iommu-group", test_sysfs_no_group);
    T("/vfio/sysfs/rollback/unbind-fails", test_sysfs_unbind_fails);
    T("/vfio/sysfs/rollback/bind-fails", test_sysfs_bind_fails);
    T("/vfio/sysfs/rollback/no-devnode", test_sysfs_no_devnode);
    T("/vfio/sysfs/rollback/rollback-fails-too", test_sysfs_rollback_fails);
    T("/vfio/sysfs/slow-unbind", test_sysfs_slow_unbind);
    T("/vfio/sysfs/device-vanishes", test_sysfs_vanish);
    T("/vfio/sysfs/rollback/reattach-reprobe-fails", test_sysfs_reattach_reprobe_fails);
    T("/vfio/sysfs/rollback/reattach-unbind-fails", test_sysfs_reattach_unbind_fails);
    T("/vfio/sysfs/reset", test_sysfs_reset);
    T("/vfio/sysfs/iommu-group", test_sysfs_group);
    T("/vfio/lists/persist", test_lists_persist);
    T("/vfio/manager/managed", test_manager_managed);
    T("/vfio/manager/unmanaged", test_manager_unmanaged);
    T("/vfio/manager/bad-input", test_manager_bad_input);
    T("/vfio/manager/concurrent-detach", test_manager_concurrent_detach);
    T("/vfio/manager/restart", test_manager_restart);
    T("/vfio/manager/release-reattach-fails", test_manager_release_reattach_fails);
    T("/vfio/manager/list", test_manager_list);
    T("/vfio/manager/stale-inactive-entry", test_manager_stale_inactive);
    T("/vfio/sysfs/rollback/cancelled", test_sysfs_cancelled);
#undef T
    return g_test_run();
}
