/* Fuzz target: a saved QEMU PCI layout (first byte 0), or a domain XML through the layout, the
 * command line and the hotplug commands of each of its devices (first byte 1). */
#include <stdint.h>
#include <string.h>

#include "../../plugins/qemu/command.h"
#include "domain-xml.h"

static void
fuzz_layout_json(const uint8_t *data, size_t size)
{
    char *json = g_strndup((const char *) data, size);
    BerthQemuLayout *l = berth_qemu_layout_from_json(json, NULL);

    if (l) {
        /* What loads must save to the same text and load again. */
        char *out = berth_qemu_layout_to_json(l);
        BerthQemuLayout *again = berth_qemu_layout_from_json(out, NULL);
        char *out2 = NULL;

        if (!again) {
            __builtin_trap();
        }
        out2 = berth_qemu_layout_to_json(again);
        if (strcmp(out, out2) != 0) {
            __builtin_trap();
        }
        berth_qemu_layout_detach(again, "net0");
        g_free(out2);
        g_free(out);
        berth_qemu_layout_free(again);
        berth_qemu_layout_free(l);
    }
    g_free(json);
}

static void
name_devices(BerthDomainDef *def)
{
    for (guint i = 0; i < def->n_disks; i++) {
        if (!def->disks[i]->alias) {
            def->disks[i]->alias = g_strdup_printf("disk%u", i);
        }
    }
    for (guint i = 0; i < def->n_nets; i++) {
        if (!def->nets[i]->alias) {
            def->nets[i]->alias = g_strdup_printf("net%u", i);
        }
    }
    for (guint i = 0; i < def->n_serials; i++) {
        if (!def->serials[i]->alias) {
            def->serials[i]->alias = g_strdup_printf("serial%u", i);
        }
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        if (!def->filesystems[i]->alias) {
            def->filesystems[i]->alias = g_strdup_printf("fs%u", i);
        }
    }
    for (guint i = 0; i < def->n_hostdevs; i++) {
        if (!def->hostdevs[i]->alias) {
            def->hostdevs[i]->alias = g_strdup_printf("hostdev%u", i);
        }
    }
}

static void
fuzz_hotplug(BerthDomainDef *def, BerthQemuLayout *layout, const BerthQemuCmdOpts *opts,
             BerthDeviceDef *dev)
{
    GPtrArray *calls = NULL;
    GPtrArray *rollback = NULL;

    if (berth_qemu_hotplug_calls(def, layout, dev, opts, "/run/fs.sock", &calls, &rollback,
                                 NULL)) {
        g_ptr_array_free(calls, TRUE);
        g_ptr_array_free(rollback, TRUE);
    }
}

static void
fuzz_domain(const uint8_t *data, size_t size)
{
    BerthDomainDef *def = berth_domain_def_parse((const char *) data, size, 0, NULL);
    const char *const sockets[] = {"/run/fs0.sock", NULL};
    BerthQemuCmdOpts opts = {
        .binary = "/usr/bin/qemu-system-x86_64",
        .accel = "kvm",
        .qmp_socket = "/run/qmp.sock",
        .run_dir = "/run",
        .fs_sockets = sockets,
    };

    if (!def) {
        return;
    }
    name_devices(def);
    BerthQemuLayout *layout = berth_qemu_layout_new(def, 2, NULL);
    if (layout) {
        char **argv = berth_qemu_build_argv(def, layout, &opts, NULL);
        char *json = berth_qemu_layout_to_json(layout);
        BerthQemuLayout *back = berth_qemu_layout_from_json(json, NULL);

        if (!back) {
            __builtin_trap();
        }
        /* Every device again as a hot-plug: the layout refuses or places it. */
        for (guint i = 0; i < def->n_disks; i++) {
            BerthDeviceDef dev = {sizeof(dev), BERTH_DEVICE_DISK, {.disk = def->disks[i]}};
            fuzz_hotplug(def, layout, &opts, &dev);
        }
        for (guint i = 0; i < def->n_nets; i++) {
            BerthDeviceDef dev = {sizeof(dev), BERTH_DEVICE_NET, {.net = def->nets[i]}};
            fuzz_hotplug(def, layout, &opts, &dev);
        }
        for (guint i = 0; i < def->n_filesystems; i++) {
            BerthDeviceDef dev = {sizeof(dev), BERTH_DEVICE_FS, {.fs = def->filesystems[i]}};
            fuzz_hotplug(def, layout, &opts, &dev);
        }
        for (guint i = 0; i < def->n_hostdevs; i++) {
            BerthDeviceDef dev = {sizeof(dev), BERTH_DEVICE_HOSTDEV, {.hostdev = def->hostdevs[i]}};
            fuzz_hotplug(def, layout, &opts, &dev);
        }
        for (guint i = 0; i < def->n_nets; i++) {
            GPtrArray *unplug = berth_qemu_unplug_calls(def, def->nets[i]->alias);
            g_ptr_array_free(unplug, TRUE);
        }
        g_strfreev(argv);
        g_free(json);
        berth_qemu_layout_free(back);
        berth_qemu_layout_free(layout);
    }
    berth_domain_def_free(def);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    if (data[0] == 0) {
        fuzz_layout_json(data + 1, size - 1);
    } else {
        fuzz_domain(data + 1, size - 1);
    }
    return 0;
}
