/* PCI devices through sysfs (Documentation/ABI/testing/sysfs-bus-pci): read, detach, reattach,
 * reset, IOMMU groups. Every path is built from a validated address, never from free text. */
#include "sysfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <berth/error.h>

#include "pci-address.h"

#define VFIO_DRIVER "vfio-pci"
/* sysfs attributes are at most a page; we read less. */
#define ATTR_MAX 4096
#define LIST_MAX 4096
#define POLL_US 2000

VfioSysfs *
vfio_sysfs_new(const char *sysfs_root, const char *dev_vfio, guint wait_ms)
{
    VfioSysfs *s = g_new0(VfioSysfs, 1);

    s->sysfs_root = g_strdup(sysfs_root);
    s->dev_vfio = g_strdup(dev_vfio);
    s->wait_ms = wait_ms;
    return s;
}

void
vfio_sysfs_free(VfioSysfs *s)
{
    if (!s) {
        return;
    }
    g_free(s->sysfs_root);
    g_free(s->dev_vfio);
    g_free(s);
}

void
vfio_pci_dev_free(VfioPciDev *d)
{
    if (!d) {
        return;
    }
    g_free(d->address);
    g_free(d->driver);
    g_free(d->driver_override);
    g_free(d);
}

static char *
dev_path(VfioSysfs *s, const char *addr, const char *attr)
{
    return g_build_filename(s->sysfs_root, "bus", "pci", "devices", addr, attr, NULL);
}

static char *
driver_path(VfioSysfs *s, const char *driver, const char *attr)
{
    return g_build_filename(s->sysfs_root, "bus", "pci", "drivers", driver, attr, NULL);
}

/* Reads the first line of a small attribute file; NULL and errno on failure. */
static char *
read_attr(const char *path)
{
    char buf[ATTR_MAX + 1];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int err;

    if (fd < 0) {
        return NULL;
    }
    do {
        n = read(fd, buf, ATTR_MAX);
    } while (n < 0 && errno == EINTR);
    err = errno;
    close(fd);
    if (n < 0) {
        errno = err;
        return NULL;
    }
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return g_strdup(buf);
}

static gboolean
read_hex_attr(const char *path, guint max, guint *out)
{
    g_autofree char *text = read_attr(path);
    char *end = NULL;
    guint64 v;

    if (!text || !g_str_has_prefix(text, "0x")) {
        return FALSE;
    }
    errno = 0;
    v = g_ascii_strtoull(text + 2, &end, 16);
    if (errno || end == text + 2 || *end || v > max) {
        return FALSE;
    }
    *out = (guint) v;
    return TRUE;
}

/* The last component of a symlink's target (a driver or group name), or NULL. */
static char *
link_name(const char *path)
{
    char buf[PATH_MAX];
    ssize_t n = readlink(path, buf, sizeof(buf) - 1);

    if (n <= 0) {
        return NULL;
    }
    buf[n] = '\0';
    return g_path_get_basename(buf);
}

/* Writes @value to a control file the way `echo value > file` does. */
static gboolean
write_attr(const char *path, const char *value, GError **error)
{
    gsize len = strlen(value);
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
    ssize_t n;
    int err;

    if (fd < 0) {
        err = errno;
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, "cannot open '%s': %s", path,
                    g_strerror(err));
        return FALSE;
    }
    do {
        n = write(fd, value, len);
    } while (n < 0 && errno == EINTR);
    err = errno;
    if (close(fd) < 0 && n >= 0) {
        err = errno;
        n = -1;
    }
    if (n < 0 || (gsize) n != len) {
        g_autofree char *shown = g_strchomp(g_strdup(value));
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "cannot write '%s' to '%s': %s", shown, path,
                    n < 0 ? g_strerror(err) : "short write");
        return FALSE;
    }
    return TRUE;
}

static gboolean
dev_exists(VfioSysfs *s, const char *addr)
{
    g_autofree char *p = dev_path(s, addr, NULL);

    return g_file_test(p, G_FILE_TEST_IS_DIR);
}

static char *
dev_driver(VfioSysfs *s, const char *addr)
{
    g_autofree char *p = dev_path(s, addr, "driver");

    return link_name(p);
}

static int
dev_group(VfioSysfs *s, const char *addr)
{
    g_autofree char *p = dev_path(s, addr, "iommu_group");
    g_autofree char *name = link_name(p);
    char *end = NULL;
    gint64 v;

    if (!name) {
        return -1;
    }
    v = g_ascii_strtoll(name, &end, 10);
    if (end == name || *end || v < 0 || v > G_MAXINT) {
        return -1;
    }
    return (int) v;
}

VfioPciDev *
vfio_sysfs_read_device(VfioSysfs *s, const char *address, GError **error)
{
    g_autoptr(VfioPciDev) d = g_new0(VfioPciDev, 1);
    g_autofree char *p_vendor = NULL;
    g_autofree char *p_device = NULL;
    g_autofree char *p_class = NULL;
    g_autofree char *p_numa = NULL;
    g_autofree char *p_override = NULL;
    g_autofree char *p_reset = NULL;
    g_autofree char *numa = NULL;
    VfioPciAddr a;

    if (!vfio_pci_addr_parse(address, &a, error)) {
        return NULL;
    }
    d->address = vfio_pci_addr_format(&a);
    if (!dev_exists(s, d->address)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE,
                    "PCI device '%s' does not exist", d->address);
        return NULL;
    }
    p_vendor = dev_path(s, d->address, "vendor");
    p_device = dev_path(s, d->address, "device");
    p_class = dev_path(s, d->address, "class");
    if (!read_hex_attr(p_vendor, 0xffff, &d->vendor) ||
        !read_hex_attr(p_device, 0xffff, &d->device) ||
        !read_hex_attr(p_class, 0xffffff, &d->class_code)) {
        /* Gone between the two looks, or a file sysfs would never write. */
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE,
                    "PCI device '%s' has no readable vendor, device and class", d->address);
        return NULL;
    }
    d->driver = dev_driver(s, d->address);
    d->iommu_group = dev_group(s, d->address);
    p_numa = dev_path(s, d->address, "numa_node");
    numa = read_attr(p_numa);
    d->numa_node = -1;
    if (numa) {
        char *end = NULL;
        gint64 v = g_ascii_strtoll(numa, &end, 10);
        if (end != numa && !*end && v >= 0 && v < 65536) {
            d->numa_node = (int) v;
        }
    }
    p_override = dev_path(s, d->address, "driver_override");
    d->driver_override = read_attr(p_override);
    if (d->driver_override &&
        (!*d->driver_override || strcmp(d->driver_override, "(null)") == 0)) {
        g_clear_pointer(&d->driver_override, g_free);
    }
    p_reset = dev_path(s, d->address, "reset");
    d->has_reset = g_file_test(p_reset, G_FILE_TEST_EXISTS);
    return g_steal_pointer(&d);
}

static gint
dev_compare(gconstpointer a, gconstpointer b)
{
    const VfioPciDev *da = *(VfioPciDev *const *) a;
    const VfioPciDev *db = *(VfioPciDev *const *) b;

    return strcmp(da->address, db->address);
}

GPtrArray *
vfio_sysfs_list(VfioSysfs *s, GError **error)
{
    g_autofree char *dir_path = g_build_filename(s->sysfs_root, "bus", "pci", "devices", NULL);
    g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func((GDestroyNotify) vfio_pci_dev_free);
    g_autoptr(GError) local = NULL;
    g_autoptr(GDir) dir = g_dir_open(dir_path, 0, &local);
    const char *name;

    if (!dir) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "cannot list PCI devices: %s", local->message);
        return NULL;
    }
    while ((name = g_dir_read_name(dir)) && out->len < LIST_MAX) {
        VfioPciAddr a;
        VfioPciDev *d;

        if (!vfio_pci_addr_parse_canonical(name, &a, NULL)) {
            continue;
        }
        /* A device that vanished while we read is simply not listed. */
        d = vfio_sysfs_read_device(s, name, NULL);
        if (d) {
            g_ptr_array_add(out, d);
        }
    }
    g_ptr_array_sort(out, dev_compare);
    return g_steal_pointer(&out);
}

gboolean
vfio_sysfs_have_vfio_driver(VfioSysfs *s, GError **error)
{
    g_autofree char *p = driver_path(s, VFIO_DRIVER, NULL);

    if (!g_file_test(p, G_FILE_TEST_IS_DIR)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "the vfio-pci driver is not loaded ('%s' does not exist): run 'modprobe "
                    "vfio-pci'",
                    p);
        return FALSE;
    }
    return TRUE;
}

gboolean
vfio_sysfs_group_viable(VfioSysfs *s, const char *address, GError **error)
{
    int group = dev_group(s, address);
    g_autofree char *gdir_path = NULL;
    g_autoptr(GDir) gdir = NULL;
    g_autoptr(GString) blocking = g_string_new(NULL);
    const char *name;
    guint n = 0;

    if (group < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "PCI device '%s' has no IOMMU group: is the IOMMU enabled (intel_iommu=on "
                    "or amd_iommu=on on the kernel command line)?",
                    address);
        return FALSE;
    }
    gdir_path = g_strdup_printf("%s/kernel/iommu_groups/%d/devices", s->sysfs_root, group);
    gdir = g_dir_open(gdir_path, 0, NULL);
    if (!gdir) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "IOMMU group %d of PCI device '%s' cannot be read ('%s')", group, address,
                    gdir_path);
        return FALSE;
    }
    while ((name = g_dir_read_name(gdir)) && n < LIST_MAX) {
        g_autoptr(VfioPciDev) d = NULL;
        VfioPciAddr a;

        n++;
        if (strcmp(name, address) == 0 || !vfio_pci_addr_parse_canonical(name, &a, NULL)) {
            continue;
        }
        d = vfio_sysfs_read_device(s, name, NULL);
        if (!d || !d->driver || strcmp(d->driver, VFIO_DRIVER) == 0 ||
            strcmp(d->driver, "pci-stub") == 0 || (d->class_code >> 8) == VFIO_PCI_CLASS_BRIDGE) {
            continue;
        }
        g_string_append_printf(blocking, "%s%s (bound to %s)", blocking->len ? ", " : "",
                               d->address, d->driver);
    }
    if (blocking->len) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "IOMMU group %d of PCI device '%s' is not viable: %s must be unbound or "
                    "bound to vfio-pci or pci-stub",
                    group, address, blocking->str);
        return FALSE;
    }
    return TRUE;
}

typedef gboolean (*CondFunc)(VfioSysfs *s, const char *addr, const char *arg);

/* Polls @cond until TRUE, @s->wait_ms, the device vanishing or cancellation. */
static gboolean
wait_for(VfioSysfs *s, const char *addr, CondFunc cond, const char *arg, const char *what,
         GCancellable *cancel, GError **error)
{
    gint64 end = g_get_monotonic_time() + (gint64) s->wait_ms * 1000;

    for (;;) {
        if (cond(s, addr, arg)) {
            return TRUE;
        }
        if (!dev_exists(s, addr)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE,
                        "PCI device '%s' vanished while waiting for %s", addr, what);
            return FALSE;
        }
        if (g_cancellable_is_cancelled(cancel)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED,
                        "the job was cancelled while waiting for %s", what);
            return FALSE;
        }
        if (g_get_monotonic_time() >= end) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT, "%s did not happen within %u ms",
                        what, s->wait_ms);
            return FALSE;
        }
        g_usleep(POLL_US);
    }
}

/* @arg NULL: unbound; otherwise bound to driver @arg. */
static gboolean
cond_driver(VfioSysfs *s, const char *addr, const char *arg)
{
    g_autofree char *d = dev_driver(s, addr);

    return g_strcmp0(d, arg) == 0;
}

static gboolean
cond_any_driver(VfioSysfs *s, const char *addr, const char *arg)
{
    g_autofree char *d = dev_driver(s, addr);

    return d != NULL;
}

static gboolean
cond_devnode(VfioSysfs *s, const char *addr, const char *arg)
{
    int group = dev_group(s, addr);
    g_autofree char *node = NULL;

    if (group < 0) {
        return FALSE;
    }
    node = g_strdup_printf("%s/%d", s->dev_vfio, group);
    return g_file_test(node, G_FILE_TEST_EXISTS);
}

static gboolean
set_override(VfioSysfs *s, const char *addr, const char *driver, GError **error)
{
    g_autofree char *p = dev_path(s, addr, "driver_override");
    g_autofree char *value = g_strdup_printf("%s\n", driver ? driver : "");

    return write_attr(p, value, error);
}

static gboolean
unbind(VfioSysfs *s, const char *addr, const char *driver, GCancellable *cancel,
       GError **error)
{
    g_autofree char *p = driver_path(s, driver, "unbind");
    g_autofree char *what = g_strdup_printf("the unbind from %s", driver);

    return write_attr(p, addr, error) && wait_for(s, addr, cond_driver, NULL, what, cancel, error);
}

/* drivers_probe, then wait for @driver (NULL: any driver) to take the device. */
static gboolean
probe(VfioSysfs *s, const char *addr, const char *driver, GCancellable *cancel, GError **error)
{
    g_autofree char *p = g_build_filename(s->sysfs_root, "bus", "pci", "drivers_probe", NULL);
    g_autofree char *what = driver ? g_strdup_printf("the bind to %s", driver)
                                   : g_strdup("a bind to a host driver");

    if (!write_attr(p, addr, error)) {
        return FALSE;
    }
    if (driver) {
        return wait_for(s, addr, cond_driver, driver, what, cancel, error);
    }
    return wait_for(s, addr, cond_any_driver, NULL, what, cancel, error);
}

/* Fails @error with the step that failed and how the rollback went; takes both errors. */
static gboolean
step_failed(GError **error, GError *step_error, const char *op, const char *addr,
            const char *step, GError *rollback_error)
{
    int code = step_error->code;

    if (step_error->domain != BERTH_ERROR) {
        code = BERTH_ERROR_PLUGIN_FAILED;
    }
    g_set_error(error, BERTH_ERROR, code, "%s PCI device '%s' failed at step '%s': %s; %s%s",
                op, addr, step, step_error->message,
                rollback_error ? "rolling back failed too: "
                               : "the steps before it were rolled back",
                rollback_error ? rollback_error->message : "");
    g_error_free(step_error);
    if (rollback_error) {
        g_error_free(rollback_error);
    }
    return FALSE;
}

/* Back to the host after a failed detach: off vfio-pci, no override, @driver takes it again.
 * Not cancellable: a cancelled job still leaves the device where it found it. */
static gboolean
back_to_host(VfioSysfs *s, const char *addr, const char *driver, GError **error)
{
    g_autofree char *now = dev_driver(s, addr);

    if (now && strcmp(now, VFIO_DRIVER) == 0 && !unbind(s, addr, VFIO_DRIVER, NULL, error)) {
        return FALSE;
    }
    if (!set_override(s, addr, NULL, error)) {
        return FALSE;
    }
    if (driver && !cond_driver(s, addr, driver)) {
        return probe(s, addr, driver, NULL, error);
    }
    return TRUE;
}

/* Back to vfio-pci after a failed reattach. */
static gboolean
back_to_vfio(VfioSysfs *s, const char *addr, GError **error)
{
    g_autofree char *now = dev_driver(s, addr);

    if (now && strcmp(now, VFIO_DRIVER) != 0 && !unbind(s, addr, now, NULL, error)) {
        return FALSE;
    }
    if (!set_override(s, addr, VFIO_DRIVER, error)) {
        return FALSE;
    }
    if (!cond_driver(s, addr, VFIO_DRIVER)) {
        return probe(s, addr, VFIO_DRIVER, NULL, error);
    }
    return TRUE;
}

gboolean
vfio_sysfs_detach(VfioSysfs *s, const char *address, char **orig_driver, GCancellable *cancel,
                  GError **error)
{
    g_autoptr(VfioPciDev) d = vfio_sysfs_read_device(s, address, error);
    GError *step_error = NULL;
    GError *rb_error = NULL;
    g_autofree char *step = NULL;
    const char *addr;

    if (!d) {
        return FALSE;
    }
    addr = d->address;
    *orig_driver = NULL;
    if (d->driver && strcmp(d->driver, VFIO_DRIVER) == 0) {
        /* Already there (by hand, or before a restart): only the node must exist. */
        if (!wait_for(s, addr, cond_devnode, NULL, "the vfio group device node", cancel,
                      &step_error)) {
            return step_failed(error, step_error, "detaching", addr, "wait for /dev/vfio/GROUP",
                               NULL);
        }
        return TRUE;
    }
    if (!vfio_sysfs_have_vfio_driver(s, error)) {
        return FALSE;
    }
    if (dev_group(s, addr) < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "PCI device '%s' has no IOMMU group: is the IOMMU enabled (intel_iommu=on "
                    "or amd_iommu=on on the kernel command line)?",
                    addr);
        return FALSE;
    }
    if (!set_override(s, addr, VFIO_DRIVER, &step_error)) {
        return step_failed(error, step_error, "detaching", addr, "write driver_override", NULL);
    }
    if (d->driver && !unbind(s, addr, d->driver, cancel, &step_error)) {
        step = g_strdup_printf("unbind from %s", d->driver);
        set_override(s, addr, NULL, &rb_error);
        return step_failed(error, step_error, "detaching", addr, step, rb_error);
    }
    if (!probe(s, addr, VFIO_DRIVER, cancel, &step_error)) {
        back_to_host(s, addr, d->driver, &rb_error);
        return step_failed(error, step_error, "detaching", addr, "bind to vfio-pci", rb_error);
    }
    if (!wait_for(s, addr, cond_devnode, NULL, "the vfio group device node", cancel,
                  &step_error)) {
        back_to_host(s, addr, d->driver, &rb_error);
        return step_failed(error, step_error, "detaching", addr, "wait for /dev/vfio/GROUP",
                           rb_error);
    }
    *orig_driver = g_steal_pointer(&d->driver);
    return TRUE;
}

gboolean
vfio_sysfs_reattach(VfioSysfs *s, const char *address, const char *orig_driver,
                    GCancellable *cancel, GError **error)
{
    g_autoptr(VfioPciDev) d = vfio_sysfs_read_device(s, address, error);
    GError *step_error = NULL;
    GError *rb_error = NULL;
    const char *addr;

    if (!d) {
        return FALSE;
    }
    addr = d->address;
    if (d->driver && strcmp(d->driver, VFIO_DRIVER) != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "PCI device '%s' is bound to '%s', not to vfio-pci", addr, d->driver);
        return FALSE;
    }
    if (d->driver && !unbind(s, addr, VFIO_DRIVER, cancel, &step_error)) {
        return step_failed(error, step_error, "reattaching", addr, "unbind from vfio-pci", NULL);
    }
    if (!set_override(s, addr, NULL, &step_error)) {
        back_to_vfio(s, addr, &rb_error);
        return step_failed(error, step_error, "reattaching", addr, "clear driver_override",
                           rb_error);
    }
    if (!orig_driver) {
        /* Nobody had it before: probe, and accept whatever takes it (or nothing). */
        g_autoptr(GError) ignored = NULL;
        probe(s, addr, NULL, cancel, &ignored);
        if (ignored && ignored->code == BERTH_ERROR_NO_SUCH_DEVICE) {
            g_propagate_error(error, g_steal_pointer(&ignored));
            return FALSE;
        }
        return TRUE;
    }
    if (!probe(s, addr, orig_driver, cancel, &step_error)) {
        g_autofree char *step = g_strdup_printf("reprobe: %s takes it back", orig_driver);
        back_to_vfio(s, addr, &rb_error);
        return step_failed(error, step_error, "reattaching", addr, step, rb_error);
    }
    return TRUE;
}

gboolean
vfio_sysfs_reset(VfioSysfs *s, const char *address, GError **error)
{
    g_autoptr(VfioPciDev) d = vfio_sysfs_read_device(s, address, error);
    g_autofree char *p = NULL;

    if (!d) {
        return FALSE;
    }
    if (!d->has_reset) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "PCI device '%s' has no function-level reset (no sysfs 'reset' file)",
                    d->address);
        return FALSE;
    }
    p = dev_path(s, d->address, "reset");
    if (!write_attr(p, "1\n", error)) {
        g_prefix_error(error, "resetting PCI device '%s' failed: ", d->address);
        return FALSE;
    }
    return TRUE;
}
