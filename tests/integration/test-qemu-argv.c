/* Real QEMU: the capabilities probe, every golden command line started, hotplug for real. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <berth/error.h>
#include <yajl/yajl_tree.h>

#include "caps.h"
#include "command.h"
#include "domain-xml.h"
#include "qmp.h"

#define GOLDEN_DIR TEST_DATA_DIR "/qemu"
/* The path prefix the golden XMLs use for files; replaced by a temporary directory here. */
#define GOLDEN_PREFIX "/var/lib/berth/test"
#define QMP_TIMEOUT_MS 10000

static char *qemu_binary;
static BerthQemuCaps *caps;
static const char *accel;
static GMainContext *loop_ctx;
static GMainLoop *loop;
static GThread *loop_thread;

/* The golden cases that are expected to start, with their options (see test-qemu-command.c). */
typedef struct {
    const char *name;
    guint spare_ports;
    gboolean acpi_pci_hotplug;
} RunCase;

static const RunCase run_cases[] = {
    {"minimal-q35", 4, FALSE},       {"minimal-no-os", 0, FALSE},
    {"pc", 4, FALSE},                {"tcg", 2, FALSE},
    {"machine-versioned", 1, FALSE}, {"cpu-host-passthrough", 0, FALSE},
    {"cpu-host-model", 0, FALSE},    {"cpu-custom", 0, FALSE},
    {"memory-shared", 0, FALSE},     {"memory-anonymous", 0, FALSE},
    {"memory-rounding", 0, FALSE},
    {"kernel-boot", 1, FALSE},       {"disk-raw", 2, FALSE},
    {"disk-qcow2", 2, FALSE},        {"disk-readonly", 1, FALSE},
    {"cdrom", 1, FALSE},             {"disk-sata", 1, FALSE},
    {"disk-sata-pc", 0, FALSE},      {"disk-scsi", 1, FALSE},
    {"boot-order", 0, FALSE},        {"net-user", 2, FALSE},
    {"net-models", 0, FALSE},        {"net-tap", 1, FALSE},
    {"serial-file", 0, FALSE},       {"serial-unix", 0, FALSE},
    {"serial-pty-console", 0, FALSE}, {"serial-null-console", 0, FALSE},
    {"virtiofs", 2, FALSE},          {"virtiofs-socket", 0, FALSE},
    {"hostdev", 2, FALSE},           {"addresses-q35", 3, FALSE},
    {"addresses-pc", 0, FALSE},      {"spare-ports", 12, FALSE},
    {"acpi-hotplug", 2, TRUE},       {"lifecycle", 0, FALSE},
};

/* ---- helpers ---- */

static gboolean
run_cmd(const char *const *argv)
{
    int status = -1;
    g_autoptr(GError) error = NULL;

    if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                      &status, &error)) {
        g_test_message("%s: %s", argv[0], error->message);
        return FALSE;
    }
    return g_spawn_check_wait_status(status, NULL);
}

static void
make_file(const char *path, gsize size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, (off_t) size), ==, 0);
    close(fd);
}

/* A listening unix socket (for a serial port in connect mode). */
static int
listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpuint(strlen(path), <, sizeof(sa.sun_path));
    strcpy(sa.sun_path, path);
    g_assert_cmpint(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), ==, 0);
    g_assert_cmpint(listen(fd, 4), ==, 0);
    return fd;
}

static void
reap(GPid pid, guint wait_ms)
{
    int status;

    for (guint i = 0; i < wait_ms / 10; i++) {
        if (waitpid(pid, &status, WNOHANG) == pid) {
            return;
        }
        g_usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
}

static char *
first_kernel(void)
{
    g_autoptr(GDir) dir = g_dir_open("/boot", 0, NULL);
    const char *name;

    while (dir && (name = g_dir_read_name(dir))) {
        g_autofree char *path = g_build_filename("/boot", name, NULL);

        if (g_str_has_prefix(name, "vmlinuz-") && access(path, R_OK) == 0) {
            return g_steal_pointer(&path);
        }
    }
    return NULL;
}

/* Children die with the test, also when an assertion aborts it. */
static void
child_setup(gpointer data)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* ---- one QEMU under test ---- */

typedef struct {
    char *dir;
    GPid pid;
    BerthQmp *qmp;
    GAsyncQueue *deleted; /* ids from DEVICE_DELETED events (char *) */
    GPtrArray *helpers;   /* GPid of backends started for it */
    GPtrArray *fds;       /* listening sockets kept open */
} Vm;

static void
on_event(BerthQmp *qmp, const char *event, const char *data_json, gint64 ts, gpointer data)
{
    Vm *vm = data;

    if (strcmp(event, "DEVICE_DELETED") == 0) {
        char errbuf[64];
        yajl_val v = yajl_tree_parse(data_json, errbuf, sizeof(errbuf));
        const char *path[] = {"device", NULL};
        yajl_val dev = v ? yajl_tree_get(v, path, yajl_t_string) : NULL;

        if (dev) {
            g_async_queue_push(vm->deleted, g_strdup(dev->u.string));
        }
        yajl_tree_free(v);
    }
}

static void
vm_init(Vm *vm)
{
    memset(vm, 0, sizeof(*vm));
    vm->dir = g_dir_make_tmp("berth-qemu-XXXXXX", NULL);
    g_assert_nonnull(vm->dir);
    vm->deleted = g_async_queue_new_full(g_free);
    vm->helpers = g_ptr_array_new();
    vm->fds = g_ptr_array_new();
}

static void
vm_stop(Vm *vm)
{
    if (vm->qmp) {
        berth_qmp_close(vm->qmp);
        g_clear_pointer(&vm->qmp, berth_qmp_unref);
    }
    if (vm->pid) {
        reap(vm->pid, 5000);
        vm->pid = 0;
    }
    for (guint i = 0; i < vm->helpers->len; i++) {
        GPid pid = GPOINTER_TO_INT(g_ptr_array_index(vm->helpers, i));

        kill(pid, SIGTERM);
        reap(pid, 3000);
    }
    for (guint i = 0; i < vm->fds->len; i++) {
        close(GPOINTER_TO_INT(g_ptr_array_index(vm->fds, i)));
    }
    g_ptr_array_free(vm->helpers, TRUE);
    g_ptr_array_free(vm->fds, TRUE);
    g_async_queue_unref(vm->deleted);
    const char *rm[] = {"rm", "-rf", vm->dir, NULL};
    run_cmd(rm);
    g_free(vm->dir);
}

/* Starts berth-virtiofsd on @sock for @share_dir. */
static gboolean
vm_start_virtiofsd(Vm *vm, const char *sock, const char *share_dir)
{
    const char *bin = g_getenv("BERTH_VIRTIOFSD");
    g_autofree char *sockarg = g_strdup_printf("--socket-path=%s", sock);
    g_autofree char *sharearg = g_strdup_printf("--shared-dir=%s", share_dir);
    const char *argv[] = {bin, sockarg, sharearg, NULL};
    g_autoptr(GError) error = NULL;
    GPid pid;

    g_assert_true(g_mkdir_with_parents(share_dir, 0700) == 0);
    if (!g_spawn_async(NULL, (char **) argv, NULL,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL, child_setup, NULL,
                       &pid, &error)) {
        g_test_message("berth-virtiofsd: %s", error->message);
        return FALSE;
    }
    g_ptr_array_add(vm->helpers, GINT_TO_POINTER(pid));
    for (guint i = 0; i < 500 && !g_file_test(sock, G_FILE_TEST_EXISTS); i++) {
        g_usleep(10000);
    }
    return g_file_test(sock, G_FILE_TEST_EXISTS);
}

/* Spawns @argv and connects to its monitor. FALSE (with QEMU's stderr in *@why) when QEMU
 * exits before its monitor answers. */
static gboolean
vm_spawn(Vm *vm, char **argv, const char *qmp_path, char **why)
{
    g_autofree char *errfile = g_build_filename(vm->dir, "qemu.stderr", NULL);
    int errfd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    g_autoptr(GError) error = NULL;

    int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

    g_assert_cmpint(errfd, >=, 0);
    g_assert_cmpint(nullfd, >=, 0);
    g_assert_true(g_spawn_async_with_fds(vm->dir, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD,
                                         child_setup, NULL, &vm->pid, nullfd, nullfd, errfd,
                                         &error));
    g_assert_no_error(error);
    close(errfd);
    close(nullfd);
    while (!g_file_test(qmp_path, G_FILE_TEST_EXISTS)) {
        int status;

        if (waitpid(vm->pid, &status, WNOHANG) == vm->pid) {
            vm->pid = 0;
            g_file_get_contents(errfile, why, NULL, NULL);
            return FALSE;
        }
        g_usleep(5000);
    }
    vm->qmp = berth_qmp_new(loop_ctx, on_event, NULL, vm);
    if (!berth_qmp_connect(vm->qmp, qmp_path, QMP_TIMEOUT_MS, NULL, &error)) {
        g_autofree char *err = NULL;
        g_file_get_contents(errfile, &err, NULL, NULL);
        *why = g_strdup_printf("%s; stderr: %s", error->message, err ? err : "");
        return FALSE;
    }
    return TRUE;
}

static char *
vm_command(Vm *vm, const char *command, const char *args)
{
    g_autoptr(GError) error = NULL;
    char *reply = NULL;

    if (!berth_qmp_command(vm->qmp, command, args, QMP_TIMEOUT_MS, NULL, &reply, NULL, &error)) {
        g_test_message("%s %s: %s", command, args ? args : "", error->message);
    }
    g_assert_no_error(error);
    return reply;
}

/* The ids of /machine/peripheral (user-created devices). */
static GHashTable *
vm_peripherals(Vm *vm)
{
    g_autofree char *reply = vm_command(vm, "qom-list", "{\"path\":\"/machine/peripheral\"}");
    char errbuf[64];
    yajl_val v = yajl_tree_parse(reply, errbuf, sizeof(errbuf));
    GHashTable *ids = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    const char *name_path[] = {"name", NULL};
    const char *type_path[] = {"type", NULL};

    g_assert_true(v && YAJL_IS_ARRAY(v));
    for (size_t i = 0; i < v->u.array.len; i++) {
        yajl_val name = yajl_tree_get(v->u.array.values[i], name_path, yajl_t_string);
        yajl_val type = yajl_tree_get(v->u.array.values[i], type_path, yajl_t_string);

        if (name && type && g_str_has_prefix(type->u.string, "child<")) {
            g_hash_table_add(ids, g_strdup(name->u.string));
        }
    }
    yajl_tree_free(v);
    return ids;
}

static void
vm_check_status(Vm *vm)
{
    g_autofree char *status = vm_command(vm, "query-status", NULL);

    g_assert_true(strstr(status, "\"prelaunch\"") || strstr(status, "\"paused\""));
}

static void
vm_quit(Vm *vm)
{
    g_autoptr(GError) error = NULL;

    /* QEMU may close the socket before the reply is read; the exit is what counts. */
    berth_qmp_command(vm->qmp, "quit", NULL, QMP_TIMEOUT_MS, NULL, NULL, NULL, &error);
    int status = 0;
    for (guint i = 0; i < 500; i++) {
        if (waitpid(vm->pid, &status, WNOHANG) == vm->pid) {
            vm->pid = 0;
            break;
        }
        g_usleep(10000);
    }
    g_assert_cmpint(vm->pid, ==, 0);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static BerthDomainDef *
load_def_in(const char *name, const char *dir)
{
    g_autofree char *path = g_strdup_printf("%s/%s.xml", GOLDEN_DIR, name);
    g_autofree char *xml = NULL;
    g_autoptr(GError) error = NULL;

    g_assert_true(g_file_get_contents(path, &xml, NULL, &error));
    g_auto(GStrv) parts = g_strsplit(xml, GOLDEN_PREFIX, -1);
    g_autofree char *text = g_strjoinv(dir, parts);
    BerthDomainDef *def = berth_domain_def_parse(text, strlen(text), 0, &error);
    g_assert_no_error(error);
    berth_domain_def_assign_aliases(def);
    return def;
}

/* Prepares what @def needs on the host; FALSE with a reason when this host cannot run it. */
static gboolean
vm_prepare(Vm *vm, BerthDomainDef *def, GPtrArray *fs_sockets, char **skip)
{
    if (def->n_hostdevs > 0) {
        *skip = g_strdup("vfio-pci needs an IOMMU and a device to pass through");
        return FALSE;
    }
    for (guint i = 0; i < def->n_nets; i++) {
        if (def->nets[i]->target_dev) {
            g_autofree char *sys = g_strdup_printf("/sys/class/net/%s", def->nets[i]->target_dev);

            if (!g_file_test(sys, G_FILE_TEST_EXISTS)) {
                *skip = g_strdup_printf("no tap device '%s' (create it: ip tuntap add dev %s "
                                        "mode tap)",
                                        def->nets[i]->target_dev, def->nets[i]->target_dev);
                return FALSE;
            }
        }
    }
    if (def->n_filesystems > 0 && !g_getenv("BERTH_VIRTIOFSD")) {
        *skip = g_strdup("BERTH_VIRTIOFSD is not set (berth-virtiofsd is not built)");
        return FALSE;
    }
    if (strcmp(accel, "tcg") == 0 && g_strcmp0(def->cpu_mode, "host-passthrough") == 0) {
        *skip = g_strdup("host-passthrough needs KVM");
        return FALSE;
    }
    if (def->kernel) {
        g_autofree char *kernel = first_kernel();

        if (!kernel) {
            *skip = g_strdup("no readable /boot/vmlinuz-*");
            return FALSE;
        }
        g_assert_cmpint(symlink(kernel, def->kernel), ==, 0);
        if (def->initrd) {
            g_assert_true(g_file_set_contents(def->initrd, "initrd", -1, NULL));
        }
    }
    for (guint i = 0; i < def->n_disks; i++) {
        const char *src = def->disks[i]->source_file;

        if (!src) {
            continue;
        }
        if (g_strcmp0(def->disks[i]->driver_type, "qcow2") == 0) {
            const char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", src, "16M", NULL};

            g_assert_true(run_cmd(argv));
        } else {
            make_file(src, 1024 * 1024);
        }
    }
    for (guint i = 0; i < def->n_serials; i++) {
        const BerthSerialDef *s = def->serials[i];

        if (g_strcmp0(s->type, "unix") == 0 && g_strcmp0(s->mode, "connect") == 0) {
            g_ptr_array_add(vm->fds, GINT_TO_POINTER(listen_unix(s->path)));
        }
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        const BerthFsDef *f = def->filesystems[i];
        g_autofree char *share = f->source_dir ? g_strdup(f->source_dir)
                                               : g_build_filename(vm->dir, "ext-share", NULL);
        char *sock = f->source_socket ? g_strdup(f->source_socket)
                                      : g_strdup_printf("%s/fs%u.sock", vm->dir, i);

        g_ptr_array_add(fs_sockets, sock);
        if (!vm_start_virtiofsd(vm, sock, share)) {
            *skip = g_strdup("berth-virtiofsd did not come up");
            return FALSE;
        }
    }
    g_ptr_array_add(fs_sockets, NULL);
    return TRUE;
}

/* The ids QEMU must have for @def: every device's alias, root ports, controllers. */
static void
check_devices(Vm *vm, const BerthDomainDef *def, const BerthQemuLayout *layout)
{
    g_autoptr(GHashTable) ids = vm_peripherals(vm);
    g_autoptr(GPtrArray) want = g_ptr_array_new();

    for (guint i = 0; i < def->n_disks; i++) {
        g_ptr_array_add(want, def->disks[i]->alias);
    }
    for (guint i = 0; i < def->n_nets; i++) {
        g_ptr_array_add(want, def->nets[i]->alias);
    }
    for (guint i = 0; i < def->n_filesystems; i++) {
        g_ptr_array_add(want, def->filesystems[i]->alias);
    }
    for (guint i = 0; i < def->n_serials; i++) {
        const BerthSerialDef *s = def->serials[i];
        gboolean same_as_serial = FALSE;

        for (guint k = 0; k < def->n_serials && s->console; k++) {
            same_as_serial |= !def->serials[k]->console && def->serials[k]->port == s->port;
        }
        if (!same_as_serial) {
            g_ptr_array_add(want, s->alias);
        }
    }
    for (guint i = 0; i < want->len; i++) {
        const char *id = g_ptr_array_index(want, i);

        if (!g_hash_table_contains(ids, id)) {
            g_test_message("device '%s' is missing in QEMU", id);
        }
        g_assert_true(g_hash_table_contains(ids, id));
        /* Devices with a place in the layout sit on the bus it names. */
        g_autofree char *addr = berth_qemu_layout_address(layout, id);
        if (addr) {
            g_autofree char *args =
                g_strdup_printf("{\"path\":\"/machine/peripheral/%s\",\"property\":\"addr\"}", id);
            g_autofree char *got = vm_command(vm, "qom-get", args);
            guint slot = 0, fn = 0;
            g_assert_cmpint(sscanf(addr + 8, "%x.%x", &slot, &fn), ==, 2);
            /* QEMU reports devfn: slot * 8 + function. */
            g_autofree char *expect = g_strdup_printf("%u", slot * 8 + fn);
            g_assert_cmpstr(got, ==, expect);
        }
    }
    /* Plus the root ports: the same number as the layout made. */
    g_autofree char *json = berth_qemu_layout_to_json(layout);
    guint ports = 0;
    for (const char *p = strstr(json, "\"index\":"); p; p = strstr(p + 1, "\"index\":")) {
        ports++;
    }
    guint have = 0;
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, ids);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        have += g_str_has_prefix(key, "pci.") ? 1 : 0;
    }
    g_assert_cmpuint(have, ==, ports);
}

static void
test_run(gconstpointer data)
{
    const RunCase *c = data;
    Vm vm;
    g_autoptr(GError) error = NULL;
    g_autofree char *skip = NULL;
    g_autofree char *why = NULL;
    g_autoptr(GPtrArray) fs_sockets = g_ptr_array_new_with_free_func(g_free);

    vm_init(&vm);
    g_autoptr(BerthDomainDef) def = load_def_in(c->name, vm.dir);
    if (!vm_prepare(&vm, def, fs_sockets, &skip)) {
        vm_stop(&vm);
        g_test_skip(skip);
        return;
    }
    g_autofree char *qmp_path = g_build_filename(vm.dir, "qmp.sock", NULL);
    BerthQemuCmdOpts opts = {
        .binary = qemu_binary,
        .accel = accel,
        .qmp_socket = qmp_path,
        .run_dir = vm.dir,
        .fs_sockets = (const char *const *) fs_sockets->pdata,
        .acpi_pci_hotplug = c->acpi_pci_hotplug,
        .caps = caps,
    };
    g_autoptr(BerthQemuLayout) layout = berth_qemu_layout_new(def, c->spare_ports, &error);
    g_assert_no_error(error);
    g_auto(GStrv) argv = berth_qemu_build_argv(def, layout, &opts, &error);
    g_assert_no_error(error);

    if (!vm_spawn(&vm, argv, qmp_path, &why)) {
        gboolean host_cpu = g_strv_contains((const char *const *) argv, "host");

        vm_stop(&vm);
        if (host_cpu && why && strstr(why, "failed to set MSR")) {
            /* A nested hypervisor that cannot give the guest the host's MSRs. */
            g_autofree char *msg = g_strdup_printf("-cpu host does not work on this host: %s",
                                                   g_strstrip(why));
            /* One TAP line. */
            g_strdelimit(msg, "\r\n", ' ');
            g_test_skip(msg);
            return;
        }
        g_test_message("QEMU did not start: %s", why ? why : "?");
        g_test_fail();
        return;
    }
    vm_check_status(&vm);
    check_devices(&vm, def, layout);
    /* Log files appear under their own names (a comma in one must survive the escaping). */
    for (guint i = 0; i < def->n_serials; i++) {
        if (strcmp(def->serials[i]->type, "file") == 0) {
            g_assert_true(g_file_test(def->serials[i]->path, G_FILE_TEST_IS_REGULAR));
        }
    }
    vm_quit(&vm);
    vm_stop(&vm);
}

/* ---- hotplug for real ---- */

static gboolean
wait_deleted(Vm *vm, const char *id, guint timeout_ms)
{
    gint64 until = g_get_monotonic_time() + (gint64) timeout_ms * 1000;

    for (;;) {
        gint64 left = until - g_get_monotonic_time();
        if (left <= 0) {
            return FALSE;
        }
        g_autofree char *got = g_async_queue_timeout_pop(vm->deleted, (guint64) left);
        if (!got) {
            return FALSE;
        }
        if (strcmp(got, id) == 0) {
            return TRUE;
        }
    }
}

static void
run_calls(Vm *vm, GPtrArray *calls)
{
    for (guint i = 0; i < calls->len; i++) {
        const BerthQmpCall *c = g_ptr_array_index(calls, i);
        g_free(vm_command(vm, c->command, c->args_json));
    }
}

static void
test_hotplug(void)
{
    Vm vm;
    g_autoptr(GError) error = NULL;
    g_autofree char *why = NULL;
    g_autofree char *skip = NULL;
    g_autoptr(GPtrArray) fs_sockets = g_ptr_array_new_with_free_func(g_free);

    vm_init(&vm);
    g_autoptr(BerthDomainDef) def = load_def_in("minimal-q35", vm.dir);
    g_assert_true(vm_prepare(&vm, def, fs_sockets, &skip));
    g_autofree char *qmp_path = g_build_filename(vm.dir, "qmp.sock", NULL);
    BerthQemuCmdOpts opts = {
        .binary = qemu_binary,
        .accel = accel,
        .qmp_socket = qmp_path,
        .run_dir = vm.dir,
        .acpi_pci_hotplug = FALSE,
        .caps = caps,
    };
    g_autoptr(BerthQemuLayout) layout = berth_qemu_layout_new(def, 4, &error);
    g_assert_no_error(error);
    g_auto(GStrv) argv = berth_qemu_build_argv(def, layout, &opts, &error);
    g_assert_no_error(error);
    if (!vm_spawn(&vm, argv, qmp_path, &why)) {
        g_test_message("QEMU did not start: %s", why ? why : "?");
        g_assert_not_reached();
    }

    /* A qcow2 disk and a user-mode interface. */
    BerthDiskDef disk = {
        .alias = (char *) "virtio-disk1",
        .device = (char *) "disk",
        .driver_type = (char *) "qcow2",
        .target_dev = (char *) "vdb",
        .target_bus = (char *) "virtio",
    };
    g_autofree char *disk_path = g_build_filename(vm.dir, "hot.qcow2", NULL);
    const char *img[] = {"qemu-img", "create", "-q", "-f", "qcow2", disk_path, "16M", NULL};
    g_assert_true(run_cmd(img));
    disk.source_file = disk_path;
    BerthNetDef net = {.alias = (char *) "net0", .type = (char *) "user"};
    BerthDeviceDef devs[2] = {
        {.struct_size = sizeof(BerthDeviceDef), .type = BERTH_DEVICE_DISK, .u.disk = &disk},
        {.struct_size = sizeof(BerthDeviceDef), .type = BERTH_DEVICE_NET, .u.net = &net},
    };
    const char *ids[2] = {"virtio-disk1", "net0"};

    for (guint i = 0; i < 2; i++) {
        g_autoptr(GPtrArray) calls = NULL;
        g_autoptr(GPtrArray) rollback = NULL;

        g_assert_true(berth_qemu_layout_attach(layout, &devs[i], &error));
        g_assert_true(berth_qemu_hotplug_calls(def, layout, &devs[i], &opts, NULL, &calls,
                                               &rollback, &error));
        g_assert_no_error(error);
        run_calls(&vm, calls);
    }
    {
        g_autoptr(GHashTable) present = vm_peripherals(&vm);
        g_assert_true(g_hash_table_contains(present, "virtio-disk1"));
        g_assert_true(g_hash_table_contains(present, "net0"));
    }

    /* The domain as the plugin would see it with both devices in it. */
    BerthDiskDef *disks[] = {&disk};
    BerthNetDef *nets[] = {&net};
    BerthDomainDef live = *def;
    live.disks = disks;
    live.n_disks = 1;
    live.nets = nets;
    live.n_nets = 1;
    for (guint i = 0; i < 2; i++) {
        g_autofree char *args = g_strdup_printf("{\"id\":\"%s\"}", ids[i]);
        g_free(vm_command(&vm, "device_del", args));
        gint64 t0 = g_get_monotonic_time();

        g_assert_true(wait_deleted(&vm, ids[i], 5000));
        g_test_message("DEVICE_DELETED for %s after %" G_GINT64_FORMAT " ms", ids[i],
                       (g_get_monotonic_time() - t0) / 1000);
        g_autoptr(GPtrArray) unplug = berth_qemu_unplug_calls(&live, ids[i]);
        g_assert_cmpuint(unplug->len, >, 0);
        run_calls(&vm, unplug);
        berth_qemu_layout_detach(layout, ids[i]);
    }
    {
        g_autoptr(GHashTable) present = vm_peripherals(&vm);
        g_assert_false(g_hash_table_contains(present, "virtio-disk1"));
        g_assert_false(g_hash_table_contains(present, "net0"));
    }
    /* The backends are gone too: plugging the disk again reuses the node names. */
    {
        g_autoptr(GPtrArray) calls = NULL;
        g_autoptr(GPtrArray) rollback = NULL;

        g_assert_true(berth_qemu_layout_attach(layout, &devs[0], &error));
        g_assert_true(berth_qemu_hotplug_calls(def, layout, &devs[0], &opts, NULL, &calls,
                                               &rollback, &error));
        /* Only the backends: then roll them back, as after a failed device_add. */
        g_ptr_array_remove_index(calls, calls->len - 1);
        run_calls(&vm, calls);
        run_calls(&vm, rollback);
    }
    vm_quit(&vm);
    vm_stop(&vm);
}

/* A virtiofs share plugged into a domain started with shared memory, and unplugged. */
static void
test_hotplug_virtiofs(void)
{
    Vm vm;
    g_autoptr(GError) error = NULL;
    g_autofree char *why = NULL;
    g_autofree char *skip = NULL;
    g_autoptr(GPtrArray) fs_sockets = g_ptr_array_new_with_free_func(g_free);

    if (!g_getenv("BERTH_VIRTIOFSD")) {
        g_test_skip("BERTH_VIRTIOFSD is not set (berth-virtiofsd is not built)");
        return;
    }
    vm_init(&vm);
    g_autoptr(BerthDomainDef) def = load_def_in("memory-shared", vm.dir);
    g_assert_true(vm_prepare(&vm, def, fs_sockets, &skip));
    g_autofree char *qmp_path = g_build_filename(vm.dir, "qmp.sock", NULL);
    BerthQemuCmdOpts opts = {
        .binary = qemu_binary,
        .accel = accel,
        .qmp_socket = qmp_path,
        .run_dir = vm.dir,
        .caps = caps,
    };
    g_autoptr(BerthQemuLayout) layout = berth_qemu_layout_new(def, 1, &error);
    g_assert_no_error(error);
    g_auto(GStrv) argv = berth_qemu_build_argv(def, layout, &opts, &error);
    g_assert_no_error(error);
    if (!vm_spawn(&vm, argv, qmp_path, &why)) {
        g_test_message("QEMU did not start: %s", why ? why : "?");
        g_assert_not_reached();
    }

    g_autofree char *sock = g_build_filename(vm.dir, "hot-fs.sock", NULL);
    g_autofree char *share = g_build_filename(vm.dir, "hot-share", NULL);
    g_assert_true(vm_start_virtiofsd(&vm, sock, share));
    BerthFsDef fs = {
        .alias = (char *) "fs0",
        .driver_type = (char *) "virtiofs",
        .source_dir = share,
        .target_dir = (char *) "hot",
    };
    BerthDeviceDef dev = {.struct_size = sizeof(dev), .type = BERTH_DEVICE_FS, .u.fs = &fs};
    g_autoptr(GPtrArray) calls = NULL;
    g_autoptr(GPtrArray) rollback = NULL;

    g_assert_true(berth_qemu_layout_attach(layout, &dev, &error));
    g_assert_true(berth_qemu_hotplug_calls(def, layout, &dev, &opts, sock, &calls, &rollback,
                                           &error));
    g_assert_no_error(error);
    run_calls(&vm, calls);
    {
        g_autoptr(GHashTable) present = vm_peripherals(&vm);
        g_assert_true(g_hash_table_contains(present, "fs0"));
    }
    g_free(vm_command(&vm, "device_del", "{\"id\":\"fs0\"}"));
    g_assert_true(wait_deleted(&vm, "fs0", 5000));
    BerthFsDef *fss[] = {&fs};
    BerthDomainDef live = *def;
    live.filesystems = fss;
    live.n_filesystems = 1;
    g_autoptr(GPtrArray) unplug = berth_qemu_unplug_calls(&live, "fs0");
    g_assert_cmpuint(unplug->len, ==, 1);
    run_calls(&vm, unplug);
    berth_qemu_layout_detach(layout, "fs0");
    vm_quit(&vm);
    vm_stop(&vm);
}

/* ---- capabilities ---- */

static void
check_caps_content(const BerthQemuCaps *c)
{
    g_assert_cmpuint(c->version, >=, 6000000);
    g_assert_nonnull(c->version_str);
    g_assert_true(berth_qemu_caps_has_machine(c, "q35"));
    g_assert_true(berth_qemu_caps_has_machine(c, "pc"));
    g_assert_false(berth_qemu_caps_has_machine(c, "no-such-machine"));
    const char *q35 = g_hash_table_lookup(c->machine_alias, "q35");
    g_assert_nonnull(q35);
    g_assert_true(g_str_has_prefix(q35, "pc-q35-"));
    g_assert_true(berth_qemu_caps_has_machine(c, q35));
    const char *devices[] = {"virtio-blk-pci", "virtio-net-pci", "pcie-root-port",
                             "vhost-user-fs-pci", "isa-serial", "virtio-scsi-pci", "ide-hd"};
    for (guint i = 0; i < G_N_ELEMENTS(devices); i++) {
        g_assert_true(berth_qemu_caps_has_device(c, devices[i]));
    }
    g_assert_false(berth_qemu_caps_has_device(c, "no-such-device"));
    g_assert_false(berth_qemu_caps_has_device(c, "virtio-device")); /* abstract */
}

static void
test_caps_probe(void)
{
    g_autofree char *dir = g_dir_make_tmp("berth-caps-test-XXXXXX", NULL);
    g_autofree char *cache = g_build_filename(dir, "cache", NULL);
    g_autofree char *bindir = g_build_filename(dir, "bin", NULL);
    g_autofree char *libdir = g_build_filename(dir, "lib", NULL);
    g_autofree char *copy = g_build_filename(bindir, "qemu-system-x86_64", NULL);
    g_autoptr(GError) error = NULL;
    const char *cp[] = {"cp", qemu_binary, copy, NULL};

    /* QEMU finds its modules (Debian builds TCG as one) in ../lib next to the binary. */
    g_assert_cmpint(mkdir(bindir, 0700), ==, 0);
    g_assert_cmpint(symlink("/usr/lib", libdir), ==, 0);
    g_assert_true(run_cmd(cp));
    berth_qemu_caps_cache_clear();
    guint n0 = berth_qemu_caps_probe_count();

    /* First: probed, with the caller's context. */
    g_autoptr(BerthQemuCaps) c1 = berth_qemu_caps_get(copy, cache, loop_ctx, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 1);
    check_caps_content(c1);
    g_assert_cmpstr(c1->binary, ==, copy);
    g_assert_cmpuint(c1->version, ==, caps->version);
    g_assert_cmpint(c1->kvm, ==, caps->kvm);
    int kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    g_assert_cmpint(c1->kvm_device, ==, kvm_fd >= 0);
    if (kvm_fd >= 0) {
        close(kvm_fd);
    }
    g_test_message("QEMU %s, kvm %s, %u device types, default machine %s", c1->version_str,
                   c1->kvm ? "yes" : "no", g_hash_table_size(c1->devices),
                   c1->default_machine ? c1->default_machine : "none");

    /* Again: the memory cache. */
    g_autoptr(BerthQemuCaps) c2 = berth_qemu_caps_get(copy, cache, loop_ctx, &error);
    g_assert_true(c2 == c1);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 1);

    /* A new process (memory cache gone): the cache file, no probe. */
    berth_qemu_caps_cache_clear();
    g_autoptr(BerthQemuCaps) c3 = berth_qemu_caps_get(copy, cache, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 1);
    g_assert_true(c3 != c1);
    check_caps_content(c3);
    g_assert_cmpint(c3->mtime_us, ==, c1->mtime_us);
    g_assert_cmpstr(c3->version_str, ==, c1->version_str);
    g_assert_cmpstr(c3->default_machine, ==, c1->default_machine);
    g_assert_cmpuint(g_hash_table_size(c3->devices), ==, g_hash_table_size(c1->devices));
    g_assert_cmpstr(g_hash_table_lookup(c3->machine_alias, "pc"), ==,
                    g_hash_table_lookup(c1->machine_alias, "pc"));

    /* The binary changes (package upgrade): probed again, with a private context. */
    struct timespec times[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    g_assert_cmpint(utimensat(AT_FDCWD, copy, times, 0), ==, 0);
    g_autoptr(BerthQemuCaps) c4 = berth_qemu_caps_get(copy, cache, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 2);
    g_assert_cmpint(c4->mtime_us, ==, (gint64) 1000000000 * G_USEC_PER_SEC);
    check_caps_content(c4);
    /* ... and the file now holds the new result. */
    berth_qemu_caps_cache_clear();
    g_autoptr(BerthQemuCaps) c5 = berth_qemu_caps_get(copy, cache, NULL, &error);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 2);
    g_assert_cmpint(c5->mtime_us, ==, c4->mtime_us);

    /* A corrupt cache file is ignored: probed again. */
    berth_qemu_caps_cache_clear();
    g_autoptr(GDir) d = g_dir_open(cache, 0, NULL);
    const char *name = g_dir_read_name(d);
    g_assert_nonnull(name);
    g_assert_true(g_str_has_prefix(name, "caps-") && g_str_has_suffix(name, ".json"));
    g_autofree char *file = g_build_filename(cache, name, NULL);
    g_assert_true(g_file_set_contents(file, "{\"path\":", -1, NULL));
    g_autoptr(BerthQemuCaps) c6 = berth_qemu_caps_get(copy, cache, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 3);
    check_caps_content(c6);

    /* No cache dir: memory only. */
    berth_qemu_caps_cache_clear();
    g_autoptr(BerthQemuCaps) c7 = berth_qemu_caps_get(copy, NULL, NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 4);
    check_caps_content(c7);

    const char *rm[] = {"rm", "-rf", dir, NULL};
    run_cmd(rm);
}

typedef struct {
    const char *binary;
    BerthQemuCaps *result;
} ProbeThread;

static gpointer
probe_thread(gpointer data)
{
    ProbeThread *t = data;

    t->result = berth_qemu_caps_get(t->binary, NULL, loop_ctx, NULL);
    return NULL;
}

static void
test_caps_concurrent(void)
{
    ProbeThread t[3];
    GThread *threads[3];

    berth_qemu_caps_cache_clear();
    guint n0 = berth_qemu_caps_probe_count();
    for (guint i = 0; i < 3; i++) {
        t[i] = (ProbeThread){qemu_binary, NULL};
        threads[i] = g_thread_new("probe", probe_thread, &t[i]);
    }
    for (guint i = 0; i < 3; i++) {
        g_thread_join(threads[i]);
        g_assert_nonnull(t[i].result);
        g_assert_true(t[i].result == t[0].result);
    }
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 1);
    for (guint i = 0; i < 3; i++) {
        berth_qemu_caps_unref(t[i].result);
    }
}

static void
test_caps_errors(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthQemuCaps) none = berth_qemu_caps_get("/nonexistent/qemu", NULL, NULL, &error);

    g_assert_null(none);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    none = berth_qemu_caps_get("no-such-qemu-binary-here", NULL, NULL, &error);
    g_assert_null(none);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    /* A program that is no QEMU: it exits at once and the probe says so. */
    g_autofree char *false_bin = g_find_program_in_path("false");
    g_assert_nonnull(false_bin);
    guint n0 = berth_qemu_caps_probe_count();
    none = berth_qemu_caps_get(false_bin, NULL, NULL, &error);
    g_assert_null(none);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(error->message, "exited"));
    g_assert_cmpuint(berth_qemu_caps_probe_count(), ==, n0 + 1);
}

static gboolean
loop_quit(gpointer data)
{
    g_main_loop_quit(loop);
    return G_SOURCE_REMOVE;
}

static gpointer
loop_run(gpointer data)
{
    g_main_context_push_thread_default(loop_ctx);
    g_main_loop_run(loop);
    g_main_context_pop_thread_default(loop_ctx);
    return NULL;
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;

    g_test_init(&argc, &argv, NULL);
    signal(SIGPIPE, SIG_IGN);
    const char *env = g_getenv("BERTH_QEMU");
    qemu_binary = g_find_program_in_path(env ? env : "qemu-system-x86_64");
    if (!qemu_binary) {
        g_test_skip("no qemu-system-x86_64 (Debian package: qemu-system-x86)");
        return g_test_run();
    }
    loop_ctx = g_main_context_new();
    loop = g_main_loop_new(loop_ctx, FALSE);
    loop_thread = g_thread_new("qmp-loop", loop_run, NULL);

    caps = berth_qemu_caps_get(qemu_binary, NULL, loop_ctx, &error);
    g_assert_no_error(error);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    accel = kvm >= 0 && caps->kvm ? "kvm" : "tcg";
    if (kvm >= 0) {
        close(kvm);
    }
    g_test_message("QEMU %s at %s, accelerator %s", caps->version_str, qemu_binary, accel);
    printf("# using %s (%s)\n", accel, strcmp(accel, "kvm") == 0 ? "/dev/kvm opens"
                                                               : "no usable /dev/kvm");

    g_test_add_func("/qemu/caps/probe-and-cache", test_caps_probe);
    g_test_add_func("/qemu/caps/concurrent", test_caps_concurrent);
    g_test_add_func("/qemu/caps/errors", test_caps_errors);
    for (guint i = 0; i < G_N_ELEMENTS(run_cases); i++) {
        g_autofree char *path = g_strdup_printf("/qemu/start/%s", run_cases[i].name);
        g_test_add_data_func(path, &run_cases[i], test_run);
    }
    g_test_add_func("/qemu/hotplug/disk-and-net", test_hotplug);
    g_test_add_func("/qemu/hotplug/virtiofs", test_hotplug_virtiofs);
    int rc = g_test_run();

    berth_qemu_caps_unref(caps);
    g_main_context_invoke(loop_ctx, loop_quit, NULL);
    g_thread_join(loop_thread);
    g_main_loop_unref(loop);
    g_main_context_unref(loop_ctx);
    g_free(qemu_binary);
    return rc;
}
