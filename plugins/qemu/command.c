/* The QEMU command line, the guest PCI layout and the hotplug QMP commands of a domain. */
#include "command.h"

#include <berth/error.h>
#include <berth/json.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* q35: pcie.0 slots that may hold root ports or devices (0 is the host bridge, 0x1f the LPC,
 * SATA and SMBus functions). pc: slots of pci.0 for devices (0 host bridge, 1 PIIX3). */
#define Q35_FIRST_SLOT 1
#define Q35_PORT_FIRST_SLOT 2 /* slot 1 stays free for a display device, as in libvirt */
#define Q35_LAST_SLOT 0x1e
#define PC_FIRST_SLOT 2
#define PC_LAST_SLOT 0x1f
#define MAX_BUS 0xff
/* QEMU's limit for block node names. */
#define NODE_NAME_MAX 31
/* from_json refuses bigger documents. */
#define LAYOUT_JSON_MAX (1024 * 1024)
/* ich9-ahci ports. */
#define SATA_UNITS 6
#define SCSI_UNITS 256

/* ---- ordered JSON property objects (one per device: -device and device_add) ---- */

typedef struct QemuProps QemuProps;

typedef enum { PROP_STR, PROP_INT, PROP_BOOL, PROP_OBJ } PropKind;

typedef struct {
    char *key;
    PropKind kind;
    char *s;
    gint64 i;
    QemuProps *obj;
} Prop;

struct QemuProps {
    GPtrArray *items; /* Prop, in insertion order */
};

static void props_free(QemuProps *p);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(QemuProps, props_free)

static void
prop_free(gpointer data)
{
    Prop *p = data;

    g_free(p->key);
    g_free(p->s);
    props_free(p->obj);
    g_free(p);
}

static QemuProps *
props_new(void)
{
    QemuProps *p = g_new0(QemuProps, 1);

    p->items = g_ptr_array_new_with_free_func(prop_free);
    return p;
}

static void
props_free(QemuProps *p)
{
    if (!p) {
        return;
    }
    g_ptr_array_free(p->items, TRUE);
    g_free(p);
}

static Prop *
props_add(QemuProps *p, const char *key, PropKind kind)
{
    Prop *item = g_new0(Prop, 1);

    item->key = g_strdup(key);
    item->kind = kind;
    g_ptr_array_add(p->items, item);
    return item;
}

static void
props_str(QemuProps *p, const char *key, const char *value)
{
    props_add(p, key, PROP_STR)->s = g_strdup(value);
}

static void
props_int(QemuProps *p, const char *key, gint64 value)
{
    props_add(p, key, PROP_INT)->i = value;
}

static void
props_bool(QemuProps *p, const char *key, gboolean value)
{
    props_add(p, key, PROP_BOOL)->i = value ? 1 : 0;
}

/* Takes @obj. */
static void
props_obj(QemuProps *p, const char *key, QemuProps *obj)
{
    props_add(p, key, PROP_OBJ)->obj = obj;
}

static const char *
props_get_str(const QemuProps *p, const char *key)
{
    for (guint i = 0; i < p->items->len; i++) {
        const Prop *item = g_ptr_array_index(p->items, i);

        if (item->kind == PROP_STR && strcmp(item->key, key) == 0) {
            return item->s;
        }
    }
    return NULL;
}

static void
props_gen(yajl_gen g, const QemuProps *p)
{
    yajl_gen_map_open(g);
    for (guint i = 0; i < p->items->len; i++) {
        const Prop *item = g_ptr_array_index(p->items, i);

        berth_json_str(g, item->key);
        switch (item->kind) {
        case PROP_STR:
            berth_json_str(g, item->s);
            break;
        case PROP_INT:
            yajl_gen_integer(g, item->i);
            break;
        case PROP_BOOL:
            yajl_gen_bool(g, item->i != 0);
            break;
        case PROP_OBJ:
            props_gen(g, item->obj);
            break;
        }
    }
    yajl_gen_map_close(g);
}

static char *
props_json(const QemuProps *p)
{
    yajl_gen g = yajl_gen_alloc(NULL);

    props_gen(g, p);
    return berth_json_finish(g);
}

/* ---- naming ---- */

typedef enum { MACHINE_Q35, MACHINE_PC } MachineKind;

static gboolean
machine_kind(const char *machine, MachineKind *kind, GError **error)
{
    if (!machine || strcmp(machine, "q35") == 0 || g_str_has_prefix(machine, "pc-q35-")) {
        *kind = MACHINE_Q35;
        return TRUE;
    }
    if (strcmp(machine, "pc") == 0 || g_str_has_prefix(machine, "pc-i440fx-")) {
        *kind = MACHINE_PC;
        return TRUE;
    }
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                "machine type '%s' is not supported by the qemu plugin (use q35 or pc, or a "
                "versioned pc-q35-* or pc-i440fx-* name)",
                machine);
    return FALSE;
}

/* A short stem for node and backend names: the alias when short enough, else a hash of it
 * (deterministic), so that "drive-STEM-format" stays within QEMU's 31 characters. */
static char *
name_stem(const char *alias)
{
    const gsize max = NODE_NAME_MAX - strlen("drive--format");

    if (strlen(alias) <= max) {
        return g_strdup(alias);
    }
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, alias, -1);
    return g_strdup_printf("dev-%.*s", (int) (max - 4), sum);
}

static char *
node_name(const char *alias, const char *what)
{
    g_autofree char *stem = name_stem(alias);

    return g_strdup_printf("drive-%s-%s", stem, what);
}

static char *
netdev_id(const char *alias)
{
    return g_strdup_printf("host%s", alias);
}

static char *
chardev_id(const char *alias)
{
    return g_strdup_printf("chr-%s", alias);
}

static const char *
disk_bus(const BerthDiskDef *d)
{
    return d->target_bus ? d->target_bus : "virtio";
}

static gboolean
disk_is_cdrom(const BerthDiskDef *d)
{
    return d->device && strcmp(d->device, "cdrom") == 0;
}

/* The unit of a sata or scsi disk: its target name's letters as a number (sda 0, sdz 25,
 * sdaa 26), as the core names them. */
static guint
disk_unit(const BerthDiskDef *d)
{
    guint idx = 0;

    for (const char *p = d->target_dev + 2; *p; p++) {
        idx = idx * 26 + (guint) (*p - 'a') + 1;
    }
    return idx ? idx - 1 : 0;
}

static gboolean
has_scsi_disks(const BerthDomainDef *def)
{
    for (guint i = 0; i < def->n_disks; i++) {
        if (strcmp(disk_bus(def->disks[i]), "scsi") == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean
has_sata_disks(const BerthDomainDef *def)
{
    for (guint i = 0; i < def->n_disks; i++) {
        if (strcmp(disk_bus(def->disks[i]), "sata") == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

#define SCSI_CONTROLLER "scsi0"
#define SATA_CONTROLLER "sata0" /* pc only: q35 has its own AHCI */

/* ---- layout ---- */

typedef struct {
    guint index;    /* the bus number behind it (pci.INDEX) */
    guint slot;     /* its own place on pcie.0 */
    guint function;
    gboolean spare; /* created empty for hot-plug */
    char *alias;    /* the device behind it, or NULL when free */
} QemuPort;

typedef struct {
    char *alias;
    guint bus;
    guint slot;
    guint function;
} QemuPlace;

struct BerthQemuLayout {
    MachineKind kind;
    GPtrArray *ports;  /* QemuPort by index (q35 only) */
    GPtrArray *places; /* QemuPlace, cold-plugged devices in definition order, then hot-plugged */
};

static void
port_free(gpointer data)
{
    QemuPort *p = data;

    g_free(p->alias);
    g_free(p);
}

static void
place_free(gpointer data)
{
    QemuPlace *p = data;

    g_free(p->alias);
    g_free(p);
}

static BerthQemuLayout *
layout_alloc(MachineKind kind)
{
    BerthQemuLayout *l = g_new0(BerthQemuLayout, 1);

    l->kind = kind;
    l->ports = g_ptr_array_new_with_free_func(port_free);
    l->places = g_ptr_array_new_with_free_func(place_free);
    return l;
}

void
berth_qemu_layout_free(BerthQemuLayout *layout)
{
    if (!layout) {
        return;
    }
    g_ptr_array_free(layout->ports, TRUE);
    g_ptr_array_free(layout->places, TRUE);
    g_free(layout);
}

static QemuPlace *
layout_place(const BerthQemuLayout *l, const char *alias)
{
    for (guint i = 0; i < l->places->len; i++) {
        QemuPlace *p = g_ptr_array_index(l->places, i);

        if (strcmp(p->alias, alias) == 0) {
            return p;
        }
    }
    return NULL;
}

static QemuPort *
layout_port(const BerthQemuLayout *l, guint index)
{
    for (guint i = 0; i < l->ports->len; i++) {
        QemuPort *p = g_ptr_array_index(l->ports, i);

        if (p->index == index) {
            return p;
        }
    }
    return NULL;
}

static void
layout_add_place(BerthQemuLayout *l, const char *alias, guint bus, guint slot, guint function)
{
    QemuPlace *p = g_new0(QemuPlace, 1);

    p->alias = g_strdup(alias);
    p->bus = bus;
    p->slot = slot;
    p->function = function;
    g_ptr_array_add(l->places, p);
}

static QemuPort *
layout_add_port(BerthQemuLayout *l, guint index, const char *alias)
{
    QemuPort *p = g_new0(QemuPort, 1);

    p->index = index;
    p->spare = alias == NULL;
    p->alias = g_strdup(alias);
    g_ptr_array_add(l->ports, p);
    return p;
}

/* One device of the definition that needs a PCI address. */
typedef struct {
    const char *alias;
    const BerthPciAddress *address; /* NULL for controllers berth adds */
} PciDev;

static void
collect_pci_devices(const BerthDomainDef *def, MachineKind kind, GArray *out)
{
    static const BerthPciAddress none = {0};
    PciDev d;

    if (kind == MACHINE_PC && has_sata_disks(def)) {
        d = (PciDev){SATA_CONTROLLER, &none};
        g_array_append_val(out, d);
    }
    if (has_scsi_disks(def)) {
        d = (PciDev){SCSI_CONTROLLER, &none};
        g_array_append_val(out, d);
    }
    for (guint i = 0; i < def->n_disks; i++) {
        if (strcmp(disk_bus(def->disks[i]), "virtio") == 0) {
            d = (PciDev){def->disks[i]->alias, &def->disks[i]->address};
            g_array_append_val(out, d);
        }
    }
    for (guint i = 0; i < def->n_nets; i++) {
        d = (PciDev){def->nets[i]->alias, &def->nets[i]->address};
        g_array_append_val(out, d);
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        d = (PciDev){def->filesystems[i]->alias, &def->filesystems[i]->address};
        g_array_append_val(out, d);
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        d = (PciDev){def->hostdevs[i]->alias, &def->hostdevs[i]->address};
        g_array_append_val(out, d);
    }
}

static gboolean
check_aliases(const BerthDomainDef *def, GError **error)
{
    const char *missing = NULL;

    for (guint i = 0; i < def->n_disks && !missing; i++) {
        missing = def->disks[i]->alias ? NULL : "disk";
    }
    for (guint i = 0; i < def->n_nets && !missing; i++) {
        missing = def->nets[i]->alias ? NULL : "interface";
    }
    for (guint i = 0; i < def->n_serials && !missing; i++) {
        missing = def->serials[i]->alias ? NULL : "serial";
    }
    for (guint i = 0; i < def->n_filesystems && !missing; i++) {
        missing = def->filesystems[i]->alias ? NULL : "filesystem";
    }
    for (guint i = 0; i < def->n_hostdevs && !missing; i++) {
        missing = def->hostdevs[i]->alias ? NULL : "hostdev";
    }
    if (missing) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "a %s of domain '%s' has no alias (aliases are assigned before the layout)",
                    missing, def->name);
        return FALSE;
    }
    return TRUE;
}

/* Checks a guest address the XML gave; on q35 a bus other than 0 is a root port's. */
static gboolean
check_explicit(MachineKind kind, const char *alias, const BerthPciAddress *a, GError **error)
{
    g_autofree char *text = g_strdup_printf("%04x:%02x:%02x.%x", a->domain, a->bus, a->slot,
                                            a->function);

    if (a->domain != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "device '%s': PCI address %s: only PCI domain 0 exists", alias, text);
        return FALSE;
    }
    if (a->function != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "device '%s': PCI address %s: multifunction placement is not supported "
                    "(use function 0)",
                    alias, text);
        return FALSE;
    }
    if (kind == MACHINE_PC) {
        if (a->bus != 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                        "device '%s': PCI address %s: a pc machine has only bus 0", alias, text);
            return FALSE;
        }
        if (a->slot < PC_FIRST_SLOT) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "device '%s': PCI address %s is reserved for the i440FX chipset "
                        "(slots 0 and 1)",
                        alias, text);
            return FALSE;
        }
        return TRUE;
    }
    if (a->bus == 0 && (a->slot < Q35_FIRST_SLOT || a->slot > Q35_LAST_SLOT)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "device '%s': PCI address %s is reserved for the q35 chipset "
                    "(slots 0 and 0x1f)",
                    alias, text);
        return FALSE;
    }
    if (a->bus != 0 && a->slot != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "device '%s': PCI address %s: bus %u is a pcie-root-port, which has only "
                    "slot 0",
                    alias, text, a->bus);
        return FALSE;
    }
    return TRUE;
}

static gint
port_cmp(gconstpointer a, gconstpointer b)
{
    const QemuPort *pa = *(QemuPort *const *) a;
    const QemuPort *pb = *(QemuPort *const *) b;

    return pa->index < pb->index ? -1 : pa->index > pb->index;
}

static gboolean
layout_q35(BerthQemuLayout *l, GArray *devs, guint spare_ports, GError **error)
{
    gboolean bus_used[MAX_BUS + 1] = {FALSE};
    gboolean slot_used[Q35_LAST_SLOT + 1] = {FALSE};
    guint next = 1;

    bus_used[0] = TRUE;
    for (guint i = 0; i < devs->len; i++) {
        const PciDev *d = &g_array_index(devs, PciDev, i);

        if (!d->address->set) {
            continue;
        }
        if (d->address->bus == 0) {
            slot_used[d->address->slot] = TRUE;
        } else {
            bus_used[d->address->bus] = TRUE;
        }
    }
    /* Devices in definition order; those with an address keep it. */
    for (guint i = 0; i < devs->len; i++) {
        const PciDev *d = &g_array_index(devs, PciDev, i);
        guint bus;

        if (d->address->set && d->address->bus == 0) {
            layout_add_place(l, d->alias, 0, d->address->slot, 0);
            continue;
        }
        if (d->address->set) {
            bus = d->address->bus;
        } else {
            while (next <= MAX_BUS && bus_used[next]) {
                next++;
            }
            if (next > MAX_BUS) {
                g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                            "too many PCI devices: device '%s' finds no free bus number for "
                            "its pcie-root-port (at most %u)",
                            d->alias, MAX_BUS);
                return FALSE;
            }
            bus = next;
            bus_used[next] = TRUE;
        }
        layout_add_port(l, bus, d->alias);
        layout_add_place(l, d->alias, bus, 0, 0);
    }
    for (guint i = 0; i < spare_ports; i++) {
        while (next <= MAX_BUS && bus_used[next]) {
            next++;
        }
        if (next > MAX_BUS) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "too many PCI devices: no bus number left for spare pcie-root-port "
                        "%u of %u (at most %u)",
                        i + 1, spare_ports, MAX_BUS);
            return FALSE;
        }
        bus_used[next] = TRUE;
        layout_add_port(l, next, NULL);
    }
    /* Root ports fill the free pcie.0 slots in bus order, eight functions a slot. */
    g_ptr_array_sort(l->ports, port_cmp);
    guint slot = Q35_PORT_FIRST_SLOT, function = 0;
    for (guint i = 0; i < l->ports->len; i++) {
        QemuPort *p = g_ptr_array_index(l->ports, i);

        while (slot <= Q35_LAST_SLOT && slot_used[slot]) {
            slot++;
        }
        if (slot > Q35_LAST_SLOT) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "too many PCI devices: %u pcie-root-ports needed (devices and %u "
                        "spare), only %u fit on pcie.0",
                        l->ports->len, spare_ports, i);
            return FALSE;
        }
        p->slot = slot;
        p->function = function;
        if (++function == 8) {
            function = 0;
            slot++;
        }
    }
    return TRUE;
}

static gboolean
layout_pc(BerthQemuLayout *l, GArray *devs, GError **error)
{
    gboolean slot_used[PC_LAST_SLOT + 1] = {FALSE};
    guint next = PC_FIRST_SLOT;

    for (guint i = 0; i < devs->len; i++) {
        const PciDev *d = &g_array_index(devs, PciDev, i);

        if (d->address->set) {
            slot_used[d->address->slot] = TRUE;
        }
    }
    for (guint i = 0; i < devs->len; i++) {
        const PciDev *d = &g_array_index(devs, PciDev, i);

        if (d->address->set) {
            layout_add_place(l, d->alias, 0, d->address->slot, 0);
            continue;
        }
        while (next <= PC_LAST_SLOT && slot_used[next]) {
            next++;
        }
        if (next > PC_LAST_SLOT) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "too many PCI devices: device '%s' finds no free slot on pci.0 "
                        "(slots 0x%x to 0x%x)",
                        d->alias, PC_FIRST_SLOT, PC_LAST_SLOT);
            return FALSE;
        }
        slot_used[next] = TRUE;
        layout_add_place(l, d->alias, 0, next, 0);
    }
    return TRUE;
}

BerthQemuLayout *
berth_qemu_layout_new(const BerthDomainDef *def, guint spare_ports, GError **error)
{
    MachineKind kind;

    g_return_val_if_fail(def != NULL, NULL);
    if (!machine_kind(def->machine, &kind, error) || !check_aliases(def, error)) {
        return NULL;
    }
    g_autoptr(GArray) devs = g_array_new(FALSE, FALSE, sizeof(PciDev));
    collect_pci_devices(def, kind, devs);
    for (guint i = 0; i < devs->len; i++) {
        const PciDev *d = &g_array_index(devs, PciDev, i);

        if (d->address->set && !check_explicit(kind, d->alias, d->address, error)) {
            return NULL;
        }
    }
    g_autoptr(BerthQemuLayout) l = layout_alloc(kind);
    if (kind == MACHINE_Q35 ? !layout_q35(l, devs, spare_ports, error)
                            : !layout_pc(l, devs, error)) {
        return NULL;
    }
    return g_steal_pointer(&l);
}

const char *
berth_qemu_device_alias(const BerthDeviceDef *dev)
{
    switch (dev->type) {
    case BERTH_DEVICE_DISK:
        return dev->u.disk->alias;
    case BERTH_DEVICE_NET:
        return dev->u.net->alias;
    case BERTH_DEVICE_FS:
        return dev->u.fs->alias;
    case BERTH_DEVICE_HOSTDEV:
        return dev->u.hostdev->alias;
    default:
        return NULL;
    }
}

static const BerthPciAddress *
dev_address(const BerthDeviceDef *dev)
{
    switch (dev->type) {
    case BERTH_DEVICE_DISK:
        return &dev->u.disk->address;
    case BERTH_DEVICE_NET:
        return &dev->u.net->address;
    case BERTH_DEVICE_FS:
        return &dev->u.fs->address;
    case BERTH_DEVICE_HOSTDEV:
        return &dev->u.hostdev->address;
    default:
        return NULL;
    }
}

/* Hot-plug: a free root port on q35 (spare ones and those freed by an unplug), the lowest free
 * slot of pci.0 on pc. A device that asks for an address gets that one or nothing. */
gboolean
berth_qemu_layout_attach(BerthQemuLayout *layout, const BerthDeviceDef *dev, GError **error)
{
    const char *alias = berth_qemu_device_alias(dev);
    const BerthPciAddress *want = dev_address(dev);

    if (!alias) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "the device to attach has no alias or an unknown type");
        return FALSE;
    }
    if (dev->type == BERTH_DEVICE_DISK && strcmp(disk_bus(dev->u.disk), "virtio") != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "disk '%s': only virtio disks can be hot-plugged (bus '%s' cannot)", alias,
                    disk_bus(dev->u.disk));
        return FALSE;
    }
    if (layout_place(layout, alias)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS,
                    "device '%s' already has a place in the domain's PCI layout", alias);
        return FALSE;
    }
    if (want->set && !check_explicit(layout->kind, alias, want, error)) {
        return FALSE;
    }
    if (layout->kind == MACHINE_Q35) {
        QemuPort *port = NULL;

        if (want->set && want->bus == 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                        "device '%s': devices on pcie.0 (bus 0) cannot be hot-plugged; give no "
                        "address or the bus of a free pcie-root-port",
                        alias);
            return FALSE;
        }
        for (guint i = 0; i < layout->ports->len && !port; i++) {
            QemuPort *p = g_ptr_array_index(layout->ports, i);

            if (!p->alias && (!want->set || want->bus == p->index)) {
                port = p;
            }
        }
        if (!port) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                        want->set ? "no free hotplug slot: bus %u of device '%s' is not a free "
                                    "pcie-root-port"
                                  : "no free hotplug slot: all %u pcie-root-ports are in use "
                                    "(device '%s'; start the domain with more spare ports)",
                        want->set ? want->bus : layout->ports->len, alias);
            return FALSE;
        }
        port->alias = g_strdup(alias);
        layout_add_place(layout, alias, port->index, 0, 0);
        return TRUE;
    }
    gboolean used[PC_LAST_SLOT + 1] = {FALSE};
    for (guint i = 0; i < layout->places->len; i++) {
        used[((QemuPlace *) g_ptr_array_index(layout->places, i))->slot] = TRUE;
    }
    guint slot = PC_FIRST_SLOT;
    if (want->set) {
        slot = used[want->slot] ? PC_LAST_SLOT + 1 : want->slot;
    } else {
        while (slot <= PC_LAST_SLOT && used[slot]) {
            slot++;
        }
    }
    if (slot > PC_LAST_SLOT) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "no free hotplug slot: %s on pci.0 for device '%s'",
                    want->set ? "the slot asked for is in use" : "all slots are in use", alias);
        return FALSE;
    }
    layout_add_place(layout, alias, 0, slot, 0);
    return TRUE;
}

void
berth_qemu_layout_detach(BerthQemuLayout *layout, const char *alias)
{
    QemuPlace *place = layout_place(layout, alias);

    if (!place) {
        return;
    }
    if (layout->kind == MACHINE_Q35 && place->bus != 0) {
        QemuPort *port = layout_port(layout, place->bus);

        if (port) {
            g_clear_pointer(&port->alias, g_free);
        }
    }
    g_ptr_array_remove(layout->places, place);
}

char *
berth_qemu_layout_address(const BerthQemuLayout *layout, const char *alias)
{
    const QemuPlace *p = layout_place(layout, alias);

    if (!p) {
        return NULL;
    }
    return g_strdup_printf("0000:%02x:%02x.%x", p->bus, p->slot, p->function);
}

char *
berth_qemu_layout_to_json(const BerthQemuLayout *layout)
{
    yajl_gen g = yajl_gen_alloc(NULL);

    yajl_gen_map_open(g);
    berth_json_kv_str(g, "machine", layout->kind == MACHINE_Q35 ? "q35" : "pc");
    berth_json_str(g, "ports");
    yajl_gen_array_open(g);
    for (guint i = 0; i < layout->ports->len; i++) {
        const QemuPort *p = g_ptr_array_index(layout->ports, i);

        yajl_gen_map_open(g);
        berth_json_kv_int(g, "index", p->index);
        berth_json_kv_int(g, "slot", p->slot);
        berth_json_kv_int(g, "function", p->function);
        berth_json_kv_bool(g, "spare", p->spare);
        berth_json_kv_str(g, "alias", p->alias);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    berth_json_str(g, "devices");
    yajl_gen_array_open(g);
    for (guint i = 0; i < layout->places->len; i++) {
        const QemuPlace *p = g_ptr_array_index(layout->places, i);

        yajl_gen_map_open(g);
        berth_json_kv_str(g, "alias", p->alias);
        berth_json_kv_int(g, "bus", p->bus);
        berth_json_kv_int(g, "slot", p->slot);
        berth_json_kv_int(g, "function", p->function);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    return berth_json_finish(g);
}

static gboolean
json_uint(yajl_val obj, const char *key, guint max, guint *out)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_number);

    if (!v || !YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0 || YAJL_GET_INTEGER(v) > max) {
        return FALSE;
    }
    *out = (guint) YAJL_GET_INTEGER(v);
    return TRUE;
}

static gboolean
layout_bad_json(GError **error, const char *what)
{
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                "saved QEMU PCI layout: %s", what);
    return FALSE;
}

static gboolean
layout_parse(BerthQemuLayout *l, yajl_val root, GError **error)
{
    const char *ports_path[] = {"ports", NULL};
    const char *devs_path[] = {"devices", NULL};
    const char *alias_path[] = {"alias", NULL};
    yajl_val ports = yajl_tree_get(root, ports_path, yajl_t_array);
    yajl_val devs = yajl_tree_get(root, devs_path, yajl_t_array);

    if (!ports || !devs) {
        return layout_bad_json(error, "'ports' or 'devices' is missing");
    }
    if (l->kind == MACHINE_PC && ports->u.array.len > 0) {
        return layout_bad_json(error, "a pc machine has no root ports");
    }
    for (size_t i = 0; i < ports->u.array.len; i++) {
        yajl_val o = ports->u.array.values[i];
        const char *spare_path[] = {"spare", NULL};
        yajl_val spare = yajl_tree_get(o, spare_path, yajl_t_any);
        yajl_val alias = yajl_tree_get(o, alias_path, yajl_t_any);
        guint index, slot, function;

        if (!YAJL_IS_OBJECT(o) || !json_uint(o, "index", MAX_BUS, &index) || index == 0 ||
            !json_uint(o, "slot", Q35_LAST_SLOT, &slot) || slot < Q35_FIRST_SLOT ||
            !json_uint(o, "function", 7, &function) || !spare ||
            !(YAJL_IS_TRUE(spare) || YAJL_IS_FALSE(spare)) || !alias ||
            !(YAJL_IS_NULL(alias) || YAJL_IS_STRING(alias)) || layout_port(l, index)) {
            return layout_bad_json(error, "a port is malformed or repeated");
        }
        QemuPort *p = layout_add_port(l, index, YAJL_IS_STRING(alias) ? alias->u.string
                                                                       : NULL);
        p->spare = YAJL_IS_TRUE(spare);
        p->slot = slot;
        p->function = function;
    }
    for (size_t i = 0; i < devs->u.array.len; i++) {
        yajl_val o = devs->u.array.values[i];
        yajl_val alias = yajl_tree_get(o, alias_path, yajl_t_string);
        guint bus, slot, function;

        if (!YAJL_IS_OBJECT(o) || !alias || !json_uint(o, "bus", MAX_BUS, &bus) ||
            !json_uint(o, "slot", 0x1f, &slot) || !json_uint(o, "function", 7, &function) ||
            layout_place(l, alias->u.string) ||
            (l->kind == MACHINE_PC && bus != 0) ||
            (bus != 0 && !layout_port(l, bus))) {
            return layout_bad_json(error, "a device is malformed, repeated or on no bus");
        }
        layout_add_place(l, alias->u.string, bus, slot, function);
    }
    return TRUE;
}

BerthQemuLayout *
berth_qemu_layout_from_json(const char *json, GError **error)
{
    char errbuf[256] = "";
    const char *machine_path[] = {"machine", NULL};
    MachineKind kind;

    if (strlen(json) > LAYOUT_JSON_MAX) {
        layout_bad_json(error, "larger than 1 MiB");
        return NULL;
    }
    yajl_val root = yajl_tree_parse(json, errbuf, sizeof(errbuf));
    if (!root || !YAJL_IS_OBJECT(root)) {
        yajl_tree_free(root);
        layout_bad_json(error, "not a JSON object");
        return NULL;
    }
    yajl_val machine = yajl_tree_get(root, machine_path, yajl_t_string);
    if (!machine || (strcmp(machine->u.string, "q35") != 0 &&
                     strcmp(machine->u.string, "pc") != 0)) {
        yajl_tree_free(root);
        layout_bad_json(error, "'machine' is not q35 or pc");
        return NULL;
    }
    kind = strcmp(machine->u.string, "q35") == 0 ? MACHINE_Q35 : MACHINE_PC;
    g_autoptr(BerthQemuLayout) l = layout_alloc(kind);
    gboolean ok = layout_parse(l, root, error);
    yajl_tree_free(root);
    return ok ? g_steal_pointer(&l) : NULL;
}

/* ---- device properties ---- */

/* Adds "bus" and "addr" of @alias's place. */
static gboolean
props_pci(QemuProps *p, const BerthQemuLayout *layout, const char *alias, GError **error)
{
    const QemuPlace *place = layout_place(layout, alias);

    if (!place) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "device '%s' has no place in the domain's PCI layout", alias);
        return FALSE;
    }
    g_autofree char *bus = NULL;
    if (layout->kind == MACHINE_PC) {
        bus = g_strdup("pci.0");
    } else if (place->bus == 0) {
        bus = g_strdup("pcie.0");
    } else {
        bus = g_strdup_printf("pci.%u", place->bus);
    }
    g_autofree char *addr = place->function ? g_strdup_printf("0x%x.0x%x", place->slot,
                                                              place->function)
                                            : g_strdup_printf("0x%x", place->slot);
    props_str(p, "bus", bus);
    props_str(p, "addr", addr);
    return TRUE;
}

static QemuProps *
device_props_new(const char *driver, const char *id)
{
    QemuProps *p = props_new();

    props_str(p, "driver", driver);
    props_str(p, "id", id);
    return p;
}

/* The "cache" member of a block node for <driver cache=>. */
static QemuProps *
block_cache(const char *mode)
{
    QemuProps *c = props_new();

    props_bool(c, "direct", g_strcmp0(mode, "none") == 0 || g_strcmp0(mode, "directsync") == 0);
    props_bool(c, "no-flush", g_strcmp0(mode, "unsafe") == 0);
    return c;
}

/* The file and format nodes of @d (both NULL for an empty cdrom). */
static void
disk_blockdev_props(const BerthDiskDef *d, QemuProps **file, QemuProps **format)
{
    *file = *format = NULL;
    if (!d->source_file) {
        return;
    }
    g_autofree char *file_node = node_name(d->alias, "file");
    g_autofree char *format_node = node_name(d->alias, "format");
    gboolean ro = d->readonly || disk_is_cdrom(d);

    *file = props_new();
    props_str(*file, "driver", "file");
    props_str(*file, "filename", d->source_file);
    props_str(*file, "node-name", file_node);
    props_bool(*file, "read-only", ro);
    if (d->cache) {
        props_obj(*file, "cache", block_cache(d->cache));
    }
    *format = props_new();
    props_str(*format, "driver", d->driver_type ? d->driver_type : "raw");
    props_str(*format, "node-name", format_node);
    props_str(*format, "file", file_node);
    props_bool(*format, "read-only", ro);
    if (d->cache) {
        props_obj(*format, "cache", block_cache(d->cache));
    }
}

static QemuProps *
disk_device_props(const BerthDomainDef *def, const BerthDiskDef *d,
                  const BerthQemuLayout *layout, guint bootindex, GError **error)
{
    const char *bus = disk_bus(d);
    gboolean cdrom = disk_is_cdrom(d);
    g_autoptr(QemuProps) p = NULL;
    guint unit = disk_unit(d);

    if (strcmp(bus, "virtio") == 0) {
        if (cdrom) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "disk '%s': a cdrom cannot be on bus 'virtio'", d->alias);
            return NULL;
        }
        p = device_props_new("virtio-blk-pci", d->alias);
        if (!props_pci(p, layout, d->alias, error)) {
            return NULL;
        }
    } else if (strcmp(bus, "sata") == 0) {
        if (unit >= SATA_UNITS) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "disk '%s': target '%s' is sata unit %u, the AHCI controller has "
                        "units 0 to %u",
                        d->alias, d->target_dev, unit, SATA_UNITS - 1);
            return NULL;
        }
        g_autofree char *ide_bus = layout->kind == MACHINE_Q35
                                       ? g_strdup_printf("ide.%u", unit)
                                       : g_strdup_printf("%s.%u", SATA_CONTROLLER, unit);
        p = device_props_new(cdrom ? "ide-cd" : "ide-hd", d->alias);
        props_str(p, "bus", ide_bus);
    } else if (strcmp(bus, "scsi") == 0) {
        if (unit >= SCSI_UNITS) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "disk '%s': target '%s' is scsi unit %u, at most %u", d->alias,
                        d->target_dev, unit, SCSI_UNITS - 1);
            return NULL;
        }
        p = device_props_new(cdrom ? "scsi-cd" : "scsi-hd", d->alias);
        props_str(p, "bus", SCSI_CONTROLLER ".0");
        props_int(p, "channel", 0);
        props_int(p, "scsi-id", unit);
        props_int(p, "lun", 0);
    } else {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "disk '%s': bus '%s' is not supported (virtio, sata or scsi)", d->alias,
                    bus);
        return NULL;
    }
    if (d->source_file) {
        g_autofree char *format_node = node_name(d->alias, "format");
        props_str(p, "drive", format_node);
    }
    if (d->serial) {
        props_str(p, "serial", d->serial);
    }
    if (d->cache && (strcmp(d->cache, "writethrough") == 0 ||
                     strcmp(d->cache, "directsync") == 0)) {
        props_str(p, "write-cache", "off");
    }
    if (bootindex) {
        props_int(p, "bootindex", bootindex);
    }
    (void) def;
    return g_steal_pointer(&p);
}

/* A MAC from the domain's uuid and the device's alias: the same on every start. */
static char *
net_mac(const BerthDomainDef *def, const BerthNetDef *n)
{
    if (n->mac) {
        return g_ascii_strdown(n->mac, -1);
    }
    g_autofree char *seed = g_strdup_printf("%s/%s", def->uuid ? def->uuid : def->name, n->alias);
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, seed, -1);
    return g_strdup_printf("52:54:00:%.2s:%.2s:%.2s", sum, sum + 2, sum + 4);
}

static QemuProps *
net_netdev_props(const BerthNetDef *n, GError **error)
{
    g_autofree char *id = netdev_id(n->alias);
    g_autoptr(QemuProps) p = props_new();

    if (strcmp(n->type, "user") == 0) {
        props_str(p, "type", "user");
        props_str(p, "id", id);
    } else if (strcmp(n->type, "ethernet") == 0) {
        props_str(p, "type", "tap");
        props_str(p, "id", id);
        if (n->target_dev) {
            props_str(p, "ifname", n->target_dev);
        }
        props_str(p, "script", "no");
        props_str(p, "downscript", "no");
    } else {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "interface '%s': type '%s' is not supported by the qemu plugin (it creates "
                    "no taps and knows no networks); create a tap device%s and use <interface "
                    "type='ethernet'> with <target dev='TAP'/>, or use type 'user'",
                    n->alias, n->type,
                    strcmp(n->type, "bridge") == 0 ? ", add it to the bridge" : "");
        return NULL;
    }
    return g_steal_pointer(&p);
}

static const char *
net_driver(const BerthNetDef *n)
{
    const char *model = n->model ? n->model : "virtio";

    return strcmp(model, "virtio") == 0 ? "virtio-net-pci" : model;
}

static QemuProps *
net_device_props(const BerthDomainDef *def, const BerthNetDef *n,
                 const BerthQemuLayout *layout, guint bootindex, GError **error)
{
    const char *model = n->model ? n->model : "virtio";
    g_autofree char *id = netdev_id(n->alias);
    g_autofree char *mac = net_mac(def, n);

    if (strcmp(model, "virtio") != 0 && strcmp(model, "e1000") != 0 &&
        strcmp(model, "e1000e") != 0 && strcmp(model, "rtl8139") != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "interface '%s': model '%s' is not supported", n->alias, model);
        return NULL;
    }
    g_autoptr(QemuProps) p = device_props_new(net_driver(n), n->alias);
    if (!props_pci(p, layout, n->alias, error)) {
        return NULL;
    }
    props_str(p, "netdev", id);
    props_str(p, "mac", mac);
    if (bootindex) {
        props_int(p, "bootindex", bootindex);
    }
    return g_steal_pointer(&p);
}

static QemuProps *
fs_device_props(const BerthFsDef *f, const BerthQemuLayout *layout, GError **error)
{
    g_autofree char *chr = chardev_id(f->alias);

    if (f->driver_type && strcmp(f->driver_type, "virtiofs") != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "filesystem '%s': driver '%s' is not supported (virtiofs)", f->alias,
                    f->driver_type);
        return NULL;
    }
    g_autoptr(QemuProps) p = device_props_new("vhost-user-fs-pci", f->alias);
    if (!props_pci(p, layout, f->alias, error)) {
        return NULL;
    }
    props_str(p, "chardev", chr);
    props_str(p, "tag", f->target_dir);
    props_int(p, "queue-size", f->queue_size ? f->queue_size : 1024);
    return g_steal_pointer(&p);
}

static QemuProps *
hostdev_device_props(const BerthHostdevDef *h, const BerthQemuLayout *layout, GError **error)
{
    g_autofree char *host = g_strdup_printf("%04x:%02x:%02x.%x", h->source.domain,
                                            h->source.bus, h->source.slot, h->source.function);
    g_autoptr(QemuProps) p = device_props_new("vfio-pci", h->alias);

    if (!props_pci(p, layout, h->alias, error)) {
        return NULL;
    }
    props_str(p, "host", host);
    if (h->rom_bar_off) {
        props_int(p, "rombar", 0);
    }
    return g_steal_pointer(&p);
}

/* The vhost-user socket of filesystem @i: the XML's own backend, else the fs plugin's. */
static const char *
fs_socket_path(const BerthFsDef *f, const BerthQemuCmdOpts *opts, guint i)
{
    if (f->source_socket) {
        return f->source_socket;
    }
    if (!opts->fs_sockets) {
        return NULL;
    }
    for (guint k = 0; k <= i; k++) {
        if (!opts->fs_sockets[k]) {
            return NULL;
        }
    }
    return opts->fs_sockets[i];
}

/* ---- argv ---- */

/* A value inside a QemuOpts string (-chardev): commas are doubled. */
static char *
opts_escape(const char *s)
{
    GString *out = g_string_new(NULL);

    for (const char *p = s; *p; p++) {
        g_string_append_c(out, *p);
        if (*p == ',') {
            g_string_append_c(out, ',');
        }
    }
    return g_string_free(out, FALSE);
}

static void
argv_add(GPtrArray *argv, const char *opt, const char *value)
{
    g_ptr_array_add(argv, g_strdup(opt));
    if (value) {
        g_ptr_array_add(argv, g_strdup(value));
    }
}

static void
argv_addf(GPtrArray *argv, const char *opt, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void
argv_addf(GPtrArray *argv, const char *opt, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_ptr_array_add(argv, g_strdup(opt));
    g_ptr_array_add(argv, g_strdup_vprintf(fmt, ap));
    va_end(ap);
}

static void
argv_props(GPtrArray *argv, const char *opt, const QemuProps *p)
{
    g_ptr_array_add(argv, g_strdup(opt));
    g_ptr_array_add(argv, props_json(p));
}

static gboolean
check_device_type(const BerthQemuCmdOpts *opts, const char *type, const char *alias,
                  GError **error)
{
    if (!opts->caps || berth_qemu_caps_has_device(opts->caps, type)) {
        return TRUE;
    }
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                "device '%s' needs the QEMU device type '%s', which '%s' does not have", alias,
                type, opts->caps->binary);
    return FALSE;
}

static gboolean
check_device(const BerthQemuCmdOpts *opts, const QemuProps *p, GError **error)
{
    return check_device_type(opts, props_get_str(p, "driver"), props_get_str(p, "id"), error);
}

/* The -cpu model; see docs/qemu.md for the choices. */
static const char *
cpu_model(const BerthDomainDef *def, gboolean kvm, GError **error)
{
    const char *mode = def->cpu_mode;

    if (!mode && def->cpu_model) {
        mode = "custom";
    }
    if (!mode) {
        return kvm ? "qemu64" : "max";
    }
    if (strcmp(mode, "host-passthrough") == 0) {
        if (!kvm) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                        "domain '%s': <cpu mode='host-passthrough'> needs KVM; with TCG "
                        "(<domain type='qemu'>) use mode='custom' with a model, or no <cpu>",
                        def->name);
            return NULL;
        }
        return "host";
    }
    if (strcmp(mode, "host-model") == 0) {
        return kvm ? "host" : "max";
    }
    if (strcmp(mode, "custom") == 0 && def->cpu_model) {
        return def->cpu_model;
    }
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                "domain '%s': <cpu mode='%s'> is not supported or has no model", def->name,
                mode);
    return NULL;
}

static gboolean
needs_shared_memory(const BerthDomainDef *def)
{
    return def->mem_shared || def->n_filesystems > 0;
}

static gboolean
argv_memory(GPtrArray *argv, const BerthDomainDef *def, GError **error)
{
    const char *source = def->mem_source ? def->mem_source : "memfd";
    gboolean shared = needs_shared_memory(def);
    g_autoptr(QemuProps) obj = props_new();

    if (def->memory_kib == 0 || def->memory_kib > G_MAXUINT64 / 1024) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain '%s': memory size %" G_GUINT64_FORMAT " KiB is out of range",
                    def->name, def->memory_kib);
        return FALSE;
    }
    if (strcmp(source, "memfd") == 0) {
        props_str(obj, "qom-type", "memory-backend-memfd");
    } else if (strcmp(source, "anonymous") == 0) {
        if (shared) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "domain '%s': shared memory (virtiofs or <access mode='shared'/>) needs "
                        "<memoryBacking><source type='memfd'/>, not 'anonymous'",
                        def->name);
            return FALSE;
        }
        props_str(obj, "qom-type", "memory-backend-ram");
    } else {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "domain '%s': <memoryBacking><source type='%s'> is not supported (memfd or "
                    "anonymous)",
                    def->name, source);
        return FALSE;
    }
    /* Whole MiB, as libvirt rounds x86 guests: QEMU aligns -m itself and then wants the
     * backend to have exactly that size. */
    guint64 kib = (def->memory_kib + 1023) / 1024 * 1024;
    props_str(obj, "id", "pc.ram");
    props_int(obj, "size", (gint64) (kib * 1024));
    if (shared) {
        props_bool(obj, "share", TRUE);
    }
    argv_addf(argv, "-m", "size=%" G_GUINT64_FORMAT "k", kib);
    argv_props(argv, "-object", obj);
    return TRUE;
}

static void
argv_root_ports(GPtrArray *argv, const BerthQemuLayout *layout)
{
    for (guint i = 0; i < layout->ports->len; i++) {
        const QemuPort *p = g_ptr_array_index(layout->ports, i);
        gboolean multi = FALSE;
        g_autofree char *id = g_strdup_printf("pci.%u", p->index);
        g_autofree char *addr = p->function ? g_strdup_printf("0x%x.0x%x", p->slot, p->function)
                                            : g_strdup_printf("0x%x", p->slot);

        for (guint k = 0; k < layout->ports->len && p->function == 0; k++) {
            const QemuPort *o = g_ptr_array_index(layout->ports, k);

            multi = multi || (o->slot == p->slot && o->function != 0);
        }
        g_autoptr(QemuProps) dev = device_props_new("pcie-root-port", id);
        props_str(dev, "bus", "pcie.0");
        props_str(dev, "addr", addr);
        if (multi) {
            props_bool(dev, "multifunction", TRUE);
        }
        props_int(dev, "port", p->index);
        props_int(dev, "chassis", p->index);
        argv_props(argv, "-device", dev);
    }
}

/* Boot order: each <boot dev=> in turn gives the next bootindex to the first device of its
 * kind (hd: the first disk, cdrom: the first cdrom, network: the first interface). */
static void
boot_indexes(const BerthDomainDef *def, guint *disk_index, guint *net_index)
{
    guint next = 1;

    for (guint i = 0; def->boot_devs && def->boot_devs[i]; i++) {
        const char *dev = def->boot_devs[i];

        if (strcmp(dev, "hd") == 0 || strcmp(dev, "cdrom") == 0) {
            gboolean want_cdrom = strcmp(dev, "cdrom") == 0;

            for (guint k = 0; k < def->n_disks; k++) {
                if (disk_is_cdrom(def->disks[k]) == want_cdrom) {
                    if (!disk_index[k]) {
                        disk_index[k] = next++;
                    }
                    break;
                }
            }
        } else if (strcmp(dev, "network") == 0 && def->n_nets > 0 && !net_index[0]) {
            net_index[0] = next++;
        }
    }
}

static gboolean
argv_disks(GPtrArray *argv, const BerthDomainDef *def, const BerthQemuLayout *layout,
           const BerthQemuCmdOpts *opts, const guint *bootindex, GError **error)
{
    if (has_scsi_disks(def)) {
        g_autoptr(QemuProps) ctl = device_props_new("virtio-scsi-pci", SCSI_CONTROLLER);

        if (!props_pci(ctl, layout, SCSI_CONTROLLER, error) || !check_device(opts, ctl, error)) {
            return FALSE;
        }
        argv_props(argv, "-device", ctl);
    }
    if (layout->kind == MACHINE_PC && has_sata_disks(def)) {
        g_autoptr(QemuProps) ctl = device_props_new("ich9-ahci", SATA_CONTROLLER);

        if (!props_pci(ctl, layout, SATA_CONTROLLER, error) || !check_device(opts, ctl, error)) {
            return FALSE;
        }
        argv_props(argv, "-device", ctl);
    }
    for (guint i = 0; i < def->n_disks; i++) {
        const BerthDiskDef *d = def->disks[i];
        g_autoptr(QemuProps) file = NULL;
        g_autoptr(QemuProps) format = NULL;
        g_autoptr(QemuProps) dev = disk_device_props(def, d, layout, bootindex[i], error);

        if (!dev || !check_device(opts, dev, error)) {
            return FALSE;
        }
        disk_blockdev_props(d, &file, &format);
        if (file) {
            argv_props(argv, "-blockdev", file);
            argv_props(argv, "-blockdev", format);
        }
        argv_props(argv, "-device", dev);
    }
    return TRUE;
}

static gboolean
argv_nets(GPtrArray *argv, const BerthDomainDef *def, const BerthQemuLayout *layout,
          const BerthQemuCmdOpts *opts, const guint *bootindex, GError **error)
{
    for (guint i = 0; i < def->n_nets; i++) {
        g_autoptr(QemuProps) netdev = net_netdev_props(def->nets[i], error);
        g_autoptr(QemuProps) dev = NULL;

        if (!netdev) {
            return FALSE;
        }
        dev = net_device_props(def, def->nets[i], layout, bootindex[i], error);
        if (!dev || !check_device(opts, dev, error)) {
            return FALSE;
        }
        argv_props(argv, "-netdev", netdev);
        argv_props(argv, "-device", dev);
    }
    return TRUE;
}

static gboolean
argv_filesystems(GPtrArray *argv, const BerthDomainDef *def, const BerthQemuLayout *layout,
                 const BerthQemuCmdOpts *opts, GError **error)
{
    for (guint i = 0; i < def->n_filesystems; i++) {
        const BerthFsDef *f = def->filesystems[i];
        const char *sock = fs_socket_path(f, opts, i);
        g_autofree char *chr = chardev_id(f->alias);
        g_autoptr(QemuProps) dev = fs_device_props(f, layout, error);

        if (!dev || !check_device(opts, dev, error)) {
            return FALSE;
        }
        if (!sock) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "filesystem '%s': no vhost-user socket (neither <source socket=> nor "
                        "one from the fs plugin)",
                        f->alias);
            return FALSE;
        }
        g_autofree char *path = opts_escape(sock);
        argv_addf(argv, "-chardev", "socket,id=%s,path=%s", chr, path);
        argv_props(argv, "-device", dev);
    }
    return TRUE;
}

static gboolean
argv_hostdevs(GPtrArray *argv, const BerthDomainDef *def, const BerthQemuLayout *layout,
              const BerthQemuCmdOpts *opts, GError **error)
{
    for (guint i = 0; i < def->n_hostdevs; i++) {
        g_autoptr(QemuProps) dev = hostdev_device_props(def->hostdevs[i], layout, error);

        if (!dev || !check_device(opts, dev, error)) {
            return FALSE;
        }
        argv_props(argv, "-device", dev);
    }
    return TRUE;
}

static char *
serial_chardev(const BerthSerialDef *s, const char *id, GError **error)
{
    if (strcmp(s->type, "pty") == 0 || strcmp(s->type, "null") == 0) {
        return g_strdup_printf("%s,id=%s", s->type, id);
    }
    if (!s->path) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "serial '%s': type '%s' needs <source path=>", s->alias, s->type);
        return NULL;
    }
    g_autofree char *path = opts_escape(s->path);
    if (strcmp(s->type, "file") == 0) {
        return g_strdup_printf("file,id=%s,path=%s,append=%s", id, path,
                               s->append ? "on" : "off");
    }
    if (strcmp(s->type, "unix") == 0) {
        if (s->mode && strcmp(s->mode, "connect") == 0) {
            return g_strdup_printf("socket,id=%s,path=%s", id, path);
        }
        return g_strdup_printf("socket,id=%s,path=%s,server=on,wait=off", id, path);
    }
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                "serial '%s': type '%s' is not supported (file, unix, pty, null)", s->alias,
                s->type);
    return NULL;
}

/* A <console> on the port of a <serial> is that serial port: only the <serial> makes one. */
static gboolean
serial_is_duplicate(const BerthDomainDef *def, const BerthSerialDef *s)
{
    if (!s->console) {
        return FALSE;
    }
    for (guint i = 0; i < def->n_serials; i++) {
        if (!def->serials[i]->console && def->serials[i]->port == s->port) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean
argv_serials(GPtrArray *argv, const BerthDomainDef *def, const BerthQemuCmdOpts *opts,
             GError **error)
{
    for (guint i = 0; i < def->n_serials; i++) {
        const BerthSerialDef *s = def->serials[i];

        if (serial_is_duplicate(def, s)) {
            continue;
        }
        if (s->port > 3) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "serial '%s': port %u is out of range (0 to 3)", s->alias, s->port);
            return FALSE;
        }
        g_autofree char *id = chardev_id(s->alias);
        g_autofree char *chr = serial_chardev(s, id, error);
        if (!chr) {
            return FALSE;
        }
        g_autoptr(QemuProps) dev = device_props_new("isa-serial", s->alias);
        props_str(dev, "chardev", id);
        props_int(dev, "index", s->port);
        if (!check_device(opts, dev, error)) {
            return FALSE;
        }
        argv_add(argv, "-chardev", chr);
        argv_props(argv, "-device", dev);
    }
    return TRUE;
}

static gboolean
check_caps(const BerthDomainDef *def, const BerthQemuCaps *caps, const char *machine,
           gboolean kvm, GError **error)
{
    if (!caps) {
        return TRUE;
    }
    if (!berth_qemu_caps_has_machine(caps, machine)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "domain '%s': machine type '%s' is not known to '%s'", def->name, machine,
                    caps->binary);
        return FALSE;
    }
    if (kvm && !caps->kvm) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "domain '%s' asks for KVM, which '%s' cannot use on this host (no usable "
                    "/dev/kvm); use <domain type='qemu'> for TCG",
                    def->name, caps->binary);
        return FALSE;
    }
    return TRUE;
}

const char *
berth_qemu_domain_accel(const BerthDomainDef *def)
{
    return def->type && strcmp(def->type, "qemu") == 0 ? "tcg" : "kvm";
}

gboolean
berth_qemu_check_domain_caps(const BerthDomainDef *def, const BerthQemuCaps *caps,
                             GError **error)
{
    return check_caps(def, caps, def->machine ? def->machine : "q35",
                      strcmp(berth_qemu_domain_accel(def), "kvm") == 0, error);
}

static gboolean
argv_build(GPtrArray *argv, const BerthDomainDef *def, const BerthQemuLayout *layout,
           const BerthQemuCmdOpts *opts, GError **error)
{
    const char *accel = opts->accel;
    const char *machine = def->machine ? def->machine : "q35";
    MachineKind kind;

    if (!accel) {
        accel = berth_qemu_domain_accel(def);
    }
    if (strcmp(accel, "kvm") != 0 && strcmp(accel, "tcg") != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "accelerator '%s' is not kvm or tcg", accel);
        return FALSE;
    }
    gboolean kvm = strcmp(accel, "kvm") == 0;
    if (def->arch && strcmp(def->arch, "x86_64") != 0 && strcmp(def->arch, "i686") != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                    "domain '%s': architecture '%s' is not supported by the qemu plugin "
                    "(x86_64 or i686)",
                    def->name, def->arch);
        return FALSE;
    }
    if (!machine_kind(machine, &kind, error)) {
        return FALSE;
    }
    if (kind != layout->kind) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "domain '%s': the PCI layout was made for another machine type", def->name);
        return FALSE;
    }
    if (!opts->qmp_socket) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "no QMP socket path");
        return FALSE;
    }
    const char *cpu = cpu_model(def, kvm, error);
    if (!cpu || !check_caps(def, opts->caps, machine, kvm, error)) {
        return FALSE;
    }
    if (def->vcpus == 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain '%s' has no vcpus", def->name);
        return FALSE;
    }

    g_ptr_array_add(argv, g_strdup(opts->binary ? opts->binary : "qemu-system-x86_64"));
    argv_addf(argv, "-name", "guest=%s,debug-threads=on", def->name);
    if (def->uuid) {
        argv_add(argv, "-uuid", def->uuid);
    }
    argv_addf(argv, "-machine", "%s,usb=off,dump-guest-core=off,memory-backend=pc.ram%s",
              machine, def->acpi ? "" : ",acpi=off");
    argv_add(argv, "-accel", accel);
    argv_add(argv, "-cpu", cpu);
    if (!argv_memory(argv, def, error)) {
        return FALSE;
    }
    argv_addf(argv, "-smp", "%u", def->vcpus);
    argv_add(argv, "-no-user-config", NULL);
    argv_add(argv, "-nodefaults", NULL);
    argv_add(argv, "-display", "none");
    argv_add(argv, "-sandbox",
             "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny");
    argv_add(argv, "-msg", "timestamp=on");
    g_autofree char *qmp = opts_escape(opts->qmp_socket);
    argv_addf(argv, "-chardev", "socket,id=charmonitor,path=%s,server=on,wait=off", qmp);
    argv_add(argv, "-mon", "chardev=charmonitor,id=monitor,mode=control");
    if (kind == MACHINE_Q35 && !opts->acpi_pci_hotplug) {
        argv_add(argv, "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off");
    }
    if (g_strcmp0(def->on_reboot, "destroy") == 0) {
        argv_add(argv, "-no-reboot", NULL);
    }
    if (g_strcmp0(def->on_poweroff, "preserve") == 0) {
        argv_add(argv, "-no-shutdown", NULL);
    }
    if (def->kernel) {
        argv_add(argv, "-kernel", def->kernel);
        if (def->initrd) {
            argv_add(argv, "-initrd", def->initrd);
        }
        if (def->cmdline) {
            argv_add(argv, "-append", def->cmdline);
        }
    } else if (def->initrd || def->cmdline) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "domain '%s': <initrd> and <cmdline> need <kernel>", def->name);
        return FALSE;
    }
    if (kind == MACHINE_Q35) {
        if (layout->ports->len > 0 && !check_device_type(opts, "pcie-root-port", "pci.1", error)) {
            return FALSE;
        }
        argv_root_ports(argv, layout);
    }

    g_autofree guint *disk_boot = g_new0(guint, def->n_disks + 1);
    g_autofree guint *net_boot = g_new0(guint, def->n_nets + 1);
    boot_indexes(def, disk_boot, net_boot);
    if (!argv_disks(argv, def, layout, opts, disk_boot, error) ||
        !argv_nets(argv, def, layout, opts, net_boot, error) ||
        !argv_filesystems(argv, def, layout, opts, error) ||
        !argv_hostdevs(argv, def, layout, opts, error) || !argv_serials(argv, def, opts, error)) {
        return FALSE;
    }
    argv_add(argv, "-S", NULL);
    return TRUE;
}

GStrv
berth_qemu_build_argv(const BerthDomainDef *def, const BerthQemuLayout *layout,
                      const BerthQemuCmdOpts *opts, GError **error)
{
    g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);

    g_return_val_if_fail(def && layout && opts, NULL);
    if (!check_aliases(def, error) || !argv_build(argv, def, layout, opts, error)) {
        return NULL;
    }
    g_ptr_array_add(argv, NULL);
    g_ptr_array_set_free_func(argv, NULL);
    return (GStrv) g_ptr_array_free(g_steal_pointer(&argv), FALSE);
}

/* ---- hotplug ---- */

void
berth_qmp_call_free(BerthQmpCall *call)
{
    if (!call) {
        return;
    }
    g_free(call->command);
    g_free(call->args_json);
    g_free(call);
}

static void
calls_add(GPtrArray *calls, const char *command, char *args_json)
{
    BerthQmpCall *c = g_new0(BerthQmpCall, 1);

    c->command = g_strdup(command);
    c->args_json = args_json;
    g_ptr_array_add(calls, c);
}

static char *
args_one(const char *key, const char *value)
{
    g_autoptr(QemuProps) p = props_new();

    props_str(p, key, value);
    return props_json(p);
}

/* chardev-add arguments for a vhost-user client socket. */
static char *
chardev_socket_args(const char *id, const char *path)
{
    g_autoptr(QemuProps) addr_data = props_new();
    g_autoptr(QemuProps) addr = props_new();
    g_autoptr(QemuProps) data = props_new();
    g_autoptr(QemuProps) backend = props_new();
    g_autoptr(QemuProps) args = props_new();

    props_str(addr_data, "path", path);
    props_str(addr, "type", "unix");
    props_obj(addr, "data", g_steal_pointer(&addr_data));
    props_obj(data, "addr", g_steal_pointer(&addr));
    props_bool(data, "server", FALSE);
    props_str(backend, "type", "socket");
    props_obj(backend, "data", g_steal_pointer(&data));
    props_str(args, "id", id);
    props_obj(args, "backend", g_steal_pointer(&backend));
    return props_json(args);
}

/* The backend removal commands of one device, in order (also the rollback of its plugging). */
static void
backend_del_calls(GPtrArray *calls, BerthDeviceType type, const char *alias, gboolean has_file)
{
    switch (type) {
    case BERTH_DEVICE_DISK:
        if (has_file) {
            g_autofree char *format = node_name(alias, "format");
            g_autofree char *file = node_name(alias, "file");

            calls_add(calls, "blockdev-del", args_one("node-name", format));
            calls_add(calls, "blockdev-del", args_one("node-name", file));
        }
        break;
    case BERTH_DEVICE_NET: {
        g_autofree char *id = netdev_id(alias);
        calls_add(calls, "netdev_del", args_one("id", id));
        break;
    }
    case BERTH_DEVICE_FS: {
        g_autofree char *id = chardev_id(alias);
        calls_add(calls, "chardev-remove", args_one("id", id));
        break;
    }
    default:
        break;
    }
}

gboolean
berth_qemu_hotplug_calls(const BerthDomainDef *def, const BerthQemuLayout *layout,
                         const BerthDeviceDef *dev, const BerthQemuCmdOpts *opts,
                         const char *fs_socket, GPtrArray **calls, GPtrArray **rollback,
                         GError **error)
{
    g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func((GDestroyNotify) berth_qmp_call_free);
    g_autoptr(GPtrArray) undo = g_ptr_array_new_with_free_func((GDestroyNotify) berth_qmp_call_free);
    g_autoptr(QemuProps) device = NULL;
    const char *alias = berth_qemu_device_alias(dev);
    gboolean has_file = FALSE;

    if (!alias) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "the device to plug has no alias or an unknown type");
        return FALSE;
    }
    switch (dev->type) {
    case BERTH_DEVICE_DISK: {
        g_autoptr(QemuProps) file = NULL;
        g_autoptr(QemuProps) format = NULL;

        if (strcmp(disk_bus(dev->u.disk), "virtio") != 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED,
                        "disk '%s': only virtio disks can be hot-plugged", alias);
            return FALSE;
        }
        device = disk_device_props(def, dev->u.disk, layout, 0, error);
        if (!device) {
            return FALSE;
        }
        disk_blockdev_props(dev->u.disk, &file, &format);
        if (file) {
            has_file = TRUE;
            calls_add(out, "blockdev-add", props_json(file));
            calls_add(out, "blockdev-add", props_json(format));
        }
        break;
    }
    case BERTH_DEVICE_NET: {
        g_autoptr(QemuProps) netdev = net_netdev_props(dev->u.net, error);

        if (!netdev) {
            return FALSE;
        }
        device = net_device_props(def, dev->u.net, layout, 0, error);
        if (!device) {
            return FALSE;
        }
        calls_add(out, "netdev_add", props_json(netdev));
        break;
    }
    case BERTH_DEVICE_FS: {
        const char *sock = dev->u.fs->source_socket ? dev->u.fs->source_socket : fs_socket;
        g_autofree char *id = chardev_id(alias);

        if (!sock) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "filesystem '%s': no vhost-user socket to plug", alias);
            return FALSE;
        }
        if (!needs_shared_memory(def)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                        "filesystem '%s': the domain was started without shared memory, which "
                        "vhost-user-fs needs (add <memoryBacking><access mode='shared'/>)",
                        alias);
            return FALSE;
        }
        device = fs_device_props(dev->u.fs, layout, error);
        if (!device) {
            return FALSE;
        }
        calls_add(out, "chardev-add", chardev_socket_args(id, sock));
        break;
    }
    case BERTH_DEVICE_HOSTDEV:
        device = hostdev_device_props(dev->u.hostdev, layout, error);
        if (!device) {
            return FALSE;
        }
        break;
    default:
        return FALSE;
    }
    if (opts && !check_device(opts, device, error)) {
        return FALSE;
    }
    calls_add(out, "device_add", props_json(device));
    backend_del_calls(undo, dev->type, alias, has_file);
    *calls = g_steal_pointer(&out);
    *rollback = g_steal_pointer(&undo);
    return TRUE;
}

GPtrArray *
berth_qemu_unplug_calls(const BerthDomainDef *def, const char *alias)
{
    GPtrArray *calls = g_ptr_array_new_with_free_func((GDestroyNotify) berth_qmp_call_free);

    for (guint i = 0; i < def->n_disks; i++) {
        if (g_strcmp0(def->disks[i]->alias, alias) == 0) {
            backend_del_calls(calls, BERTH_DEVICE_DISK, alias, def->disks[i]->source_file != NULL);
            return calls;
        }
    }
    for (guint i = 0; i < def->n_nets; i++) {
        if (g_strcmp0(def->nets[i]->alias, alias) == 0) {
            backend_del_calls(calls, BERTH_DEVICE_NET, alias, FALSE);
            return calls;
        }
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        if (g_strcmp0(def->filesystems[i]->alias, alias) == 0) {
            backend_del_calls(calls, BERTH_DEVICE_FS, alias, FALSE);
            return calls;
        }
    }
    return calls;
}
