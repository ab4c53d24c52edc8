/* vfio-sim ROOT: the simulated sysfs as a standalone daemon, with a small sample host, for
 * trying the vfio plugin by hand (berthd with [plugin.vfio] sysfs_root=ROOT/sys). */
#include <glib-unix.h>
#include <stdio.h>

#include "vsim.h"

static gboolean
quit(gpointer loop)
{
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(VSim) sim = NULL;
    g_autoptr(GMainLoop) loop = NULL;

    if (argc != 2) {
        fprintf(stderr, "usage: vfio-sim ROOT\n");
        return 2;
    }
    sim = vsim_new(argv[1]);
    vsim_add_driver(sim, "e1000e");
    vsim_add_driver(sim, "xhci_hcd");
    vsim_add_driver(sim, "pcieport");
    vsim_add_driver(sim, "vfio-pci");
    /* A NIC alone in its group, a two-function card sharing one, a bridge beside a USB
     * controller, and a device without an IOMMU group. */
    vsim_add_device(sim, "0000:06:00.0", 0x8086, 0x10d3, 0x020000, 7, "e1000e", TRUE, TRUE);
    vsim_add_device(sim, "0000:07:00.0", 0x8086, 0x10d3, 0x020000, 8, "e1000e", TRUE, TRUE);
    vsim_add_device(sim, "0000:07:00.1", 0x8086, 0x10d3, 0x020000, 8, "e1000e", TRUE, TRUE);
    vsim_add_device(sim, "0000:00:1c.0", 0x8086, 0xa110, 0x060400, 9, "pcieport", TRUE, FALSE);
    vsim_add_device(sim, "0000:08:00.0", 0x1b21, 0x1242, 0x0c0330, 9, "xhci_hcd", TRUE, FALSE);
    vsim_add_device(sim, "0000:09:00.0", 0x8086, 0x10d3, 0x020000, -1, "e1000e", TRUE, FALSE);
    if (!vsim_start(sim, &error)) {
        fprintf(stderr, "vfio-sim: %s\n", error->message);
        return 1;
    }
    printf("sysfs_root=%s\ndev_vfio_dir=%s\n", vsim_sysfs_root(sim), vsim_dev_vfio(sim));
    fflush(stdout);
    loop = g_main_loop_new(NULL, FALSE);
    g_unix_signal_add(SIGTERM, quit, loop);
    g_unix_signal_add(SIGINT, quit, loop);
    g_main_loop_run(loop);
    return 0;
}
