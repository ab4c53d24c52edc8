/* The vfio device manager: who owns which PCI device, and the sysfs steps that go with it. */
#include "manager.h"

#include <string.h>
#include <yajl/yajl_gen.h>

#include <berth/error.h>
#include <berth/json.h>

#include "lists.h"
#include "pci-address.h"

struct VfioManager {
    VfioSysfs *sysfs;
    VfioEventFunc event_func;
    gpointer event_data;
    /* Serializes every operation that changes a device: the bus-wide control files
     * (drivers_probe, bind, unbind) take one write at a time, and a check of the lists must
     * still hold when the sysfs steps behind it finish. */
    GMutex op_lock;
    /* Protects @lists (held briefly; queries take only this one). */
    GMutex lists_lock;
    VfioLists *lists;
};

VfioManager *
vfio_manager_new(VfioSysfs *sysfs, const char *lists_path, VfioEventFunc func, gpointer data,
                 GError **error)
{
    g_autoptr(VfioLists) lists = vfio_lists_new(lists_path);
    VfioManager *m;

    if (!vfio_lists_load(lists, error)) {
        vfio_sysfs_free(sysfs);
        return NULL;
    }
    m = g_new0(VfioManager, 1);
    m->sysfs = sysfs;
    m->event_func = func;
    m->event_data = data;
    m->lists = g_steal_pointer(&lists);
    g_mutex_init(&m->op_lock);
    g_mutex_init(&m->lists_lock);
    return m;
}

static gboolean
is_vfio(const VfioPciDev *d)
{
    return g_strcmp0(d->driver, "vfio-pci") == 0;
}

void
vfio_manager_free(VfioManager *m)
{
    if (!m) {
        return;
    }
    vfio_lists_free(m->lists);
    vfio_sysfs_free(m->sysfs);
    g_mutex_clear(&m->op_lock);
    g_mutex_clear(&m->lists_lock);
    g_free(m);
}

typedef struct {
    VfioManager *m;
    GPtrArray *lines;
} CheckCtx;

static void
check_entry(const VfioEntry *e, gpointer data)
{
    CheckCtx *c = data;
    g_autoptr(GError) error = NULL;
    g_autoptr(VfioPciDev) d = vfio_sysfs_read_device(c->m->sysfs, e->address, &error);

    if (!d) {
        g_ptr_array_add(c->lines, g_strdup_printf("PCI device '%s' (%s) is gone: %s",
                                                  e->address,
                                                  e->domain ? e->domain : "detached",
                                                  error->message));
    } else if (!is_vfio(d)) {
        g_ptr_array_add(c->lines, g_strdup_printf("PCI device '%s' (%s) is no longer on "
                                                  "vfio-pci but on '%s'",
                                                  e->address, e->domain ? e->domain : "detached",
                                                  d->driver ? d->driver : "no driver"));
    }
}

char **
vfio_manager_check_lists(VfioManager *m)
{
    CheckCtx c = { m, g_ptr_array_new() };

    g_mutex_lock(&m->lists_lock);
    vfio_lists_foreach(m->lists, check_entry, &c);
    g_mutex_unlock(&m->lists_lock);
    g_ptr_array_add(c.lines, NULL);
    return (char **) g_ptr_array_free(c.lines, FALSE);
}

/* The canonical form of @address, or NULL and an error. */
static char *
canonical(const char *address, GError **error)
{
    VfioPciAddr a;

    if (!vfio_pci_addr_parse(address, &a, error)) {
        return NULL;
    }
    return vfio_pci_addr_format(&a);
}

static void
emit(VfioManager *m, const char *address, const char *type, const char *driver,
     const char *domain)
{
    yajl_gen g;
    g_autofree char *detail = NULL;

    if (!m->event_func) {
        return;
    }
    g = yajl_gen_alloc(NULL);
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "driver", driver);
    berth_json_kv_str(g, "domain", domain);
    yajl_gen_map_close(g);
    detail = berth_json_finish(g);
    m->event_func(address, type, detail, m->event_data);
}

/* Under lists_lock: the list change is in memory; make it durable. */
static gboolean
save_locked(VfioManager *m, GError **error)
{
    if (!vfio_lists_save(m->lists, error)) {
        g_prefix_error(error, "the vfio device lists could not be saved: ");
        return FALSE;
    }
    return TRUE;
}

/* BUSY when a domain holds @addr; copies what the lists say about it. */
static gboolean
check_not_active(VfioManager *m, const char *addr, const char *what, char **inactive_driver,
                 gboolean *on_inactive, GError **error)
{
    const VfioEntry *e;
    gboolean ok = TRUE;

    g_mutex_lock(&m->lists_lock);
    e = vfio_lists_active(m->lists, addr);
    if (e) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_BUSY,
                    "PCI device '%s' is in use by domain '%s': it cannot be %s", addr, e->domain,
                    what);
        ok = FALSE;
    } else {
        e = vfio_lists_inactive(m->lists, addr);
        if (on_inactive) {
            *on_inactive = e != NULL;
        }
        if (inactive_driver) {
            *inactive_driver = e ? g_strdup(e->orig_driver) : NULL;
        }
    }
    g_mutex_unlock(&m->lists_lock);
    return ok;
}

gboolean
vfio_manager_prepare(VfioManager *m, const char *domain, const char *address, gboolean managed,
                     GCancellable *cancel, GError **error)
{
    g_autofree char *addr = canonical(address, error);
    g_autofree char *orig = NULL;
    g_autoptr(VfioPciDev) d = NULL;
    gboolean on_inactive = FALSE;
    gboolean detached_now = FALSE;
    gboolean ok;

    if (!addr) {
        return FALSE;
    }
    g_mutex_lock(&m->op_lock);
    ok = check_not_active(m, addr, "given to another domain", &orig, &on_inactive, error) &&
         (d = vfio_sysfs_read_device(m->sysfs, addr, error)) != NULL;
    if (ok && !managed && !is_vfio(d)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "PCI device '%s' of a managed='no' hostdev is %s%s, not to vfio-pci: detach "
                    "it first (nodedev.detach)",
                    addr, d->driver ? "bound to " : "unbound", d->driver ? d->driver : "");
        ok = FALSE;
    }
    /* The group first: a managed device is not detached for a domain that cannot have it. */
    ok = ok && vfio_sysfs_group_viable(m->sysfs, addr, error);
    if (ok && managed && !is_vfio(d)) {
        g_free(orig);
        orig = NULL;
        ok = vfio_sysfs_detach(m->sysfs, addr, &orig, cancel, error);
        detached_now = ok;
    }
    if (ok) {
        g_mutex_lock(&m->lists_lock);
        vfio_lists_set_active(m->lists, addr, domain, managed, orig);
        ok = save_locked(m, error);
        if (!ok) {
            /* Not durable: do not hand it out. */
            if (on_inactive) {
                vfio_lists_set_inactive(m->lists, addr, orig);
            } else {
                vfio_lists_remove(m->lists, addr);
            }
        }
        g_mutex_unlock(&m->lists_lock);
        if (!ok && detached_now) {
            vfio_sysfs_reattach(m->sysfs, addr, orig, NULL, NULL);
            detached_now = FALSE;
        }
    }
    g_mutex_unlock(&m->op_lock);
    if (detached_now) {
        emit(m, addr, "nodedev-detached", orig, domain);
    }
    if (!ok) {
        g_prefix_error(error, "hostdev '%s' of domain '%s': ", addr, domain);
    }
    return ok;
}

gboolean
vfio_manager_release(VfioManager *m, const char *domain, const char *address, GError **error)
{
    g_autofree char *addr = canonical(address, error);
    g_autofree char *orig = NULL;
    g_autoptr(GError) sys_error = NULL;
    const VfioEntry *e;
    gboolean managed;
    gboolean reattached = FALSE;
    gboolean ok = TRUE;

    if (!addr) {
        return FALSE;
    }
    g_mutex_lock(&m->op_lock);
    g_mutex_lock(&m->lists_lock);
    e = vfio_lists_active(m->lists, addr);
    if (!e || g_strcmp0(e->domain, domain) != 0) {
        /* Never prepared for this domain (a start that failed before it): nothing to do. */
        g_mutex_unlock(&m->lists_lock);
        g_mutex_unlock(&m->op_lock);
        return TRUE;
    }
    managed = e->managed;
    orig = g_strdup(e->orig_driver);
    g_mutex_unlock(&m->lists_lock);

    if (managed) {
        reattached = vfio_sysfs_reattach(m->sysfs, addr, orig, NULL, &sys_error);
    }
    g_mutex_lock(&m->lists_lock);
    if (reattached ||
        (sys_error && g_error_matches(sys_error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DEVICE))) {
        vfio_lists_remove(m->lists, addr);
    } else {
        /* Unmanaged, or a reattach that rolled back: detached and free for the user. */
        vfio_lists_set_inactive(m->lists, addr, orig);
    }
    if (!save_locked(m, error)) {
        ok = FALSE;
    }
    g_mutex_unlock(&m->lists_lock);
    g_mutex_unlock(&m->op_lock);
    if (reattached) {
        emit(m, addr, "nodedev-reattached", orig, domain);
    }
    if (sys_error) {
        if (ok) {
            g_propagate_prefixed_error(error, g_steal_pointer(&sys_error),
                                       "hostdev '%s' of domain '%s' was released but stays "
                                       "detached: ",
                                       addr, domain);
        }
        return FALSE;
    }
    return ok;
}

gboolean
vfio_manager_detach(VfioManager *m, const char *address, GCancellable *cancel, GError **error)
{
    g_autofree char *addr = canonical(address, error);
    g_autofree char *orig = NULL;
    g_autoptr(VfioPciDev) d = NULL;
    gboolean on_inactive = FALSE;
    gboolean ok;

    if (!addr) {
        return FALSE;
    }
    g_mutex_lock(&m->op_lock);
    ok = check_not_active(m, addr, "detached", NULL, &on_inactive, error);
    if (ok && on_inactive) {
        /* Two clients detached it at once: this one came second. */
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_BUSY,
                    "PCI device '%s' is already detached to vfio-pci", addr);
        ok = FALSE;
    }
    ok = ok && (d = vfio_sysfs_read_device(m->sysfs, addr, error)) != NULL &&
         vfio_sysfs_detach(m->sysfs, addr, &orig, cancel, error);
    if (ok) {
        g_mutex_lock(&m->lists_lock);
        vfio_lists_set_inactive(m->lists, addr, orig);
        ok = save_locked(m, error);
        if (!ok) {
            vfio_lists_remove(m->lists, addr);
        }
        g_mutex_unlock(&m->lists_lock);
        if (!ok) {
            vfio_sysfs_reattach(m->sysfs, addr, orig, NULL, NULL);
        }
    }
    g_mutex_unlock(&m->op_lock);
    if (ok) {
        emit(m, addr, "nodedev-detached", orig, NULL);
    }
    return ok;
}

gboolean
vfio_manager_reattach(VfioManager *m, const char *address, GCancellable *cancel,
                      GError **error)
{
    g_autofree char *addr = canonical(address, error);
    g_autofree char *orig = NULL;
    g_autofree char *now = NULL;
    g_autoptr(VfioPciDev) d = NULL;
    g_autoptr(VfioPciDev) after = NULL;
    gboolean on_inactive = FALSE;
    gboolean ok;

    if (!addr) {
        return FALSE;
    }
    g_mutex_lock(&m->op_lock);
    ok = check_not_active(m, addr, "reattached to the host", &orig, &on_inactive, error) &&
         (d = vfio_sysfs_read_device(m->sysfs, addr, error)) != NULL;
    if (ok && !is_vfio(d) && (!on_inactive || d->driver)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "PCI device '%s' is not detached: it is %s%s", addr,
                    d->driver ? "bound to " : "unbound", d->driver ? d->driver : "");
        ok = FALSE;
        if (on_inactive) {
            /* Someone bound it to a host driver behind our back: the entry is stale. */
            g_mutex_lock(&m->lists_lock);
            vfio_lists_remove(m->lists, addr);
            save_locked(m, NULL);
            g_mutex_unlock(&m->lists_lock);
        }
    }
    if (ok && !vfio_sysfs_reattach(m->sysfs, addr, orig, cancel, error)) {
        /* Rolled back onto vfio-pci: keep it on the inactive list. */
        ok = FALSE;
        if (!on_inactive) {
            g_mutex_lock(&m->lists_lock);
            vfio_lists_set_inactive(m->lists, addr, orig);
            save_locked(m, NULL);
            g_mutex_unlock(&m->lists_lock);
        }
    } else if (ok) {
        after = vfio_sysfs_read_device(m->sysfs, addr, NULL);
        now = after ? g_strdup(after->driver) : NULL;
        g_mutex_lock(&m->lists_lock);
        vfio_lists_remove(m->lists, addr);
        ok = save_locked(m, error);
        g_mutex_unlock(&m->lists_lock);
    }
    g_mutex_unlock(&m->op_lock);
    if (ok) {
        emit(m, addr, "nodedev-reattached", now, NULL);
    }
    return ok;
}

gboolean
vfio_manager_reset(VfioManager *m, const char *address, GError **error)
{
    g_autofree char *addr = canonical(address, error);
    gboolean ok;

    if (!addr) {
        return FALSE;
    }
    g_mutex_lock(&m->op_lock);
    ok = check_not_active(m, addr, "reset", NULL, NULL, error) &&
         vfio_sysfs_reset(m->sysfs, addr, error);
    g_mutex_unlock(&m->op_lock);
    return ok;
}

static void
gen_hex(yajl_gen g, const char *key, int width, guint v)
{
    g_autofree char *s = g_strdup_printf("0x%0*x", width, v);

    berth_json_kv_str(g, key, s);
}

/* Under lists_lock. */
static void
gen_device(VfioManager *m, yajl_gen g, const VfioPciDev *d)
{
    const VfioEntry *active = vfio_lists_active(m->lists, d->address);
    const VfioEntry *inactive = vfio_lists_inactive(m->lists, d->address);
    const char *state = active ? "assigned" : (inactive || is_vfio(d)) ? "detached" : "host";

    yajl_gen_map_open(g);
    berth_json_kv_str(g, "address", d->address);
    gen_hex(g, "vendor", 4, d->vendor);
    gen_hex(g, "device", 4, d->device);
    gen_hex(g, "class", 6, d->class_code);
    berth_json_kv_str(g, "driver", d->driver);
    berth_json_kv_str(g, "driver_override", d->driver_override);
    berth_json_str(g, "iommu_group");
    if (d->iommu_group >= 0) {
        yajl_gen_integer(g, d->iommu_group);
    } else {
        yajl_gen_null(g);
    }
    berth_json_str(g, "numa_node");
    if (d->numa_node >= 0) {
        yajl_gen_integer(g, d->numa_node);
    } else {
        yajl_gen_null(g);
    }
    berth_json_kv_bool(g, "reset", d->has_reset);
    berth_json_kv_str(g, "state", state);
    berth_json_kv_str(g, "domain", active ? active->domain : NULL);
    berth_json_str(g, "managed");
    if (active) {
        yajl_gen_bool(g, active->managed);
    } else {
        yajl_gen_null(g);
    }
    berth_json_kv_str(g, "original_driver",
                      active ? active->orig_driver : inactive ? inactive->orig_driver : NULL);
    yajl_gen_map_close(g);
}

char *
vfio_manager_device_json(VfioManager *m, const char *address, GError **error)
{
    g_autoptr(VfioPciDev) d = vfio_sysfs_read_device(m->sysfs, address, error);
    yajl_gen g;

    if (!d) {
        return NULL;
    }
    g = yajl_gen_alloc(NULL);
    g_mutex_lock(&m->lists_lock);
    gen_device(m, g, d);
    g_mutex_unlock(&m->lists_lock);
    return berth_json_finish(g);
}

char *
vfio_manager_list_json(VfioManager *m, const char *class_prefix, const char *driver,
                       GError **error)
{
    g_autoptr(GPtrArray) devs = vfio_sysfs_list(m->sysfs, error);
    yajl_gen g;

    if (!devs) {
        return NULL;
    }
    g = yajl_gen_alloc(NULL);
    yajl_gen_array_open(g);
    g_mutex_lock(&m->lists_lock);
    for (guint i = 0; i < devs->len; i++) {
        const VfioPciDev *d = devs->pdata[i];
        g_autofree char *cls = g_strdup_printf("0x%06x", d->class_code);

        if (class_prefix && !g_str_has_prefix(cls, class_prefix)) {
            continue;
        }
        if (driver && (strcmp(driver, "none") == 0 ? d->driver != NULL
                                                   : g_strcmp0(d->driver, driver) != 0)) {
            continue;
        }
        gen_device(m, g, d);
    }
    g_mutex_unlock(&m->lists_lock);
    yajl_gen_array_close(g);
    return berth_json_finish(g);
}

char *
vfio_manager_lists_json(VfioManager *m)
{
    char *out;

    g_mutex_lock(&m->lists_lock);
    out = vfio_lists_to_json(m->lists);
    g_mutex_unlock(&m->lists_lock);
    return out;
}
