/* Field-by-field equality of two BerthDomainDefs, for the XML round-trip test and fuzzer. */
#pragma once

#include <string.h>

#include "domain-xml.h"

#define DEF_EQ_STR(a, b, field, why)                                                        \
    do {                                                                                    \
        if (g_strcmp0((a)->field, (b)->field) != 0) {                                       \
            g_string_append_printf(why, "%s: '%s' != '%s'", #field,                         \
                                   (a)->field ? (a)->field : "(null)",                      \
                                   (b)->field ? (b)->field : "(null)");                     \
            return FALSE;                                                                   \
        }                                                                                   \
    } while (0)

#define DEF_EQ_NUM(a, b, field, why)                                                        \
    do {                                                                                    \
        if ((a)->field != (b)->field) {                                                     \
            g_string_append_printf(why, "%s: %" G_GUINT64_FORMAT " != %" G_GUINT64_FORMAT,  \
                                   #field, (guint64) (a)->field, (guint64) (b)->field);     \
            return FALSE;                                                                   \
        }                                                                                   \
    } while (0)

#define DEF_EQ_PCI(a, b, field, why)                                                        \
    do {                                                                                    \
        DEF_EQ_NUM(a, b, field.set, why);                                                   \
        DEF_EQ_NUM(a, b, field.domain, why);                                                \
        DEF_EQ_NUM(a, b, field.bus, why);                                                   \
        DEF_EQ_NUM(a, b, field.slot, why);                                                  \
        DEF_EQ_NUM(a, b, field.function, why);                                              \
    } while (0)

static inline gboolean
disk_def_equal(const BerthDiskDef *a, const BerthDiskDef *b, GString *why)
{
    DEF_EQ_STR(a, b, alias, why);
    DEF_EQ_STR(a, b, device, why);
    DEF_EQ_STR(a, b, driver_type, why);
    DEF_EQ_STR(a, b, cache, why);
    DEF_EQ_STR(a, b, source_file, why);
    DEF_EQ_STR(a, b, target_dev, why);
    DEF_EQ_STR(a, b, target_bus, why);
    DEF_EQ_STR(a, b, serial, why);
    DEF_EQ_NUM(a, b, readonly, why);
    DEF_EQ_PCI(a, b, address, why);
    return TRUE;
}

static inline gboolean
net_def_equal(const BerthNetDef *a, const BerthNetDef *b, GString *why)
{
    DEF_EQ_STR(a, b, alias, why);
    DEF_EQ_STR(a, b, type, why);
    DEF_EQ_STR(a, b, mac, why);
    DEF_EQ_STR(a, b, model, why);
    DEF_EQ_STR(a, b, source, why);
    DEF_EQ_STR(a, b, target_dev, why);
    DEF_EQ_PCI(a, b, address, why);
    return TRUE;
}

static inline gboolean
serial_def_equal(const BerthSerialDef *a, const BerthSerialDef *b, GString *why)
{
    DEF_EQ_STR(a, b, alias, why);
    DEF_EQ_STR(a, b, type, why);
    DEF_EQ_STR(a, b, path, why);
    DEF_EQ_STR(a, b, mode, why);
    DEF_EQ_NUM(a, b, append, why);
    DEF_EQ_NUM(a, b, port, why);
    DEF_EQ_NUM(a, b, console, why);
    return TRUE;
}

static inline gboolean
fs_def_equal(const BerthFsDef *a, const BerthFsDef *b, GString *why)
{
    DEF_EQ_STR(a, b, alias, why);
    DEF_EQ_STR(a, b, driver_type, why);
    DEF_EQ_STR(a, b, source_dir, why);
    DEF_EQ_STR(a, b, source_socket, why);
    DEF_EQ_STR(a, b, target_dir, why);
    DEF_EQ_NUM(a, b, readonly, why);
    DEF_EQ_STR(a, b, cache, why);
    DEF_EQ_NUM(a, b, thread_pool_size, why);
    DEF_EQ_NUM(a, b, queue_size, why);
    DEF_EQ_PCI(a, b, address, why);
    return TRUE;
}

static inline gboolean
hostdev_def_equal(const BerthHostdevDef *a, const BerthHostdevDef *b, GString *why)
{
    DEF_EQ_STR(a, b, alias, why);
    DEF_EQ_NUM(a, b, managed, why);
    DEF_EQ_PCI(a, b, source, why);
    DEF_EQ_PCI(a, b, address, why);
    DEF_EQ_NUM(a, b, rom_bar_off, why);
    return TRUE;
}

#define DEF_EQ_DEVICES(a, b, array, count, fn, why)                                         \
    do {                                                                                    \
        DEF_EQ_NUM(a, b, count, why);                                                       \
        for (guint i_ = 0; i_ < (a)->count; i_++) {                                         \
            if (!fn((a)->array[i_], (b)->array[i_], why)) {                                 \
                g_string_append_printf(why, " (%s[%u])", #array, i_);                       \
                return FALSE;                                                               \
            }                                                                               \
        }                                                                                   \
    } while (0)

/* TRUE when @a and @b hold the same definition; otherwise @why says where they differ. */
static inline gboolean
domain_def_equal(const BerthDomainDef *a, const BerthDomainDef *b, GString *why)
{
    DEF_EQ_NUM(a, b, struct_size, why);
    DEF_EQ_STR(a, b, type, why);
    DEF_EQ_STR(a, b, name, why);
    DEF_EQ_STR(a, b, uuid, why);
    DEF_EQ_STR(a, b, title, why);
    DEF_EQ_STR(a, b, description, why);
    DEF_EQ_NUM(a, b, memory_kib, why);
    DEF_EQ_NUM(a, b, cur_memory_kib, why);
    DEF_EQ_NUM(a, b, vcpus, why);
    DEF_EQ_NUM(a, b, mem_shared, why);
    DEF_EQ_STR(a, b, mem_source, why);
    DEF_EQ_STR(a, b, cpu_mode, why);
    DEF_EQ_STR(a, b, cpu_model, why);
    DEF_EQ_STR(a, b, os_type, why);
    DEF_EQ_STR(a, b, arch, why);
    DEF_EQ_STR(a, b, machine, why);
    DEF_EQ_STR(a, b, kernel, why);
    DEF_EQ_STR(a, b, initrd, why);
    DEF_EQ_STR(a, b, cmdline, why);
    if (!(a->boot_devs == NULL && b->boot_devs == NULL) &&
        !(a->boot_devs && b->boot_devs &&
          g_strv_equal((const char *const *) a->boot_devs,
                       (const char *const *) b->boot_devs))) {
        g_string_append(why, "boot_devs differ");
        return FALSE;
    }
    DEF_EQ_NUM(a, b, acpi, why);
    DEF_EQ_NUM(a, b, apic, why);
    DEF_EQ_STR(a, b, on_poweroff, why);
    DEF_EQ_STR(a, b, on_reboot, why);
    DEF_EQ_STR(a, b, on_crash, why);
    DEF_EQ_STR(a, b, emulator, why);
    DEF_EQ_DEVICES(a, b, disks, n_disks, disk_def_equal, why);
    DEF_EQ_DEVICES(a, b, nets, n_nets, net_def_equal, why);
    DEF_EQ_DEVICES(a, b, serials, n_serials, serial_def_equal, why);
    DEF_EQ_DEVICES(a, b, filesystems, n_filesystems, fs_def_equal, why);
    DEF_EQ_DEVICES(a, b, hostdevs, n_hostdevs, hostdev_def_equal, why);
    return TRUE;
}
