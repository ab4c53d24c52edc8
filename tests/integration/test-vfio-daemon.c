/* The vfio plugin inside a real berthd, with the test hypervisor (testhv) playing QEMU.
 *
 * Real: berthd and its core (jobs, events, the JSON-RPC sockets), the vfio plugin, the
 * removal flow device_detach -> DEVICE_DELETED -> hostdev release -> device-removed.
 * Simulated: sysfs and /dev/vfio (tests/vfio-sim, a thread of this test process that reacts
 * to berthd's writes) and QEMU (testhv: a `sleep` process; its device_del answers with a
 * DEVICE_DELETED after detach_delay_ms). QEMU itself cannot open a vfio device here (no
 * IOMMU); its vfio-pci argv is covered by the golden files in tests/data/qemu. */
#include <glib/gstdio.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "build-config.h"
#include "daemon-harness.h"
#include "vsim.h"

#define NIC "0000:06:00.0"    /* e1000e, group 7 alone */
#define NIC2 "0000:06:00.1"   /* e1000e, group 10 alone */
#define DUAL0 "0000:07:00.0"  /* e1000e, group 8 with DUAL1 */
#define DUAL1 "0000:07:00.1"
#define ROUNDS 100

typedef struct {
    Daemon *d;
    VSim *sim;
} Env;

static void
replace_line(GString *text, const char *prefix, const char *line)
{
    char *p = strstr(text->str, prefix);
    char *nl;

    g_assert_nonnull(p);
    nl = strchr(p, '\n');
    g_assert_nonnull(nl);
    g_string_erase(text, p - text->str, nl - p);
    g_string_insert(text, p - text->str, line);
}

/* A berthd loading testhv and vfio (from a plugin dir of links to the build tree), with the
 * simulated sysfs under its dir. */
static Env *
env_new(void)
{
    Env *e = g_new0(Env, 1);
    g_autofree char *plugdir = NULL;
    g_autofree char *root = NULL;
    g_autofree char *conf = NULL;
    g_autofree char *dir_line = NULL;
    g_autofree char *vfio_keys = NULL;
    g_autoptr(GString) text = NULL;
    const char *links[][2] = {
        { "testhv.so", BERTH_BUILD_ROOT "/tests/plugins/testhv.so" },
        { "vfio.so", BERTH_BUILD_ROOT "/plugins/vfio/vfio.so" },
    };

    e->d = daemon_new("detach_delay_ms=30\n");
    plugdir = g_build_filename(e->d->dir, "plugins", NULL);
    g_assert_cmpint(g_mkdir(plugdir, 0755), ==, 0);
    for (gsize i = 0; i < G_N_ELEMENTS(links); i++) {
        g_autofree char *l = g_build_filename(plugdir, links[i][0], NULL);
        g_assert_cmpint(symlink(links[i][1], l), ==, 0);
    }
    root = g_build_filename(e->d->dir, "hw", NULL);
    e->sim = vsim_new(root);
    vsim_add_driver(e->sim, "e1000e");
    vsim_add_driver(e->sim, "vfio-pci");
    vsim_add_device(e->sim, NIC, 0x8086, 0x10d3, 0x020000, 7, "e1000e", TRUE, TRUE);
    vsim_add_device(e->sim, NIC2, 0x8086, 0x10d3, 0x020000, 10, "e1000e", TRUE, TRUE);
    vsim_add_device(e->sim, DUAL0, 0x8086, 0x10c9, 0x020000, 8, "e1000e", TRUE, TRUE);
    vsim_add_device(e->sim, DUAL1, 0x8086, 0x10c9, 0x020000, 8, "e1000e", TRUE, TRUE);
    g_assert_true(vsim_start(e->sim, NULL));

    g_assert_true(g_file_get_contents(e->d->conf, &conf, NULL, NULL));
    text = g_string_new(conf);
    replace_line(text, "plugins=testhv;", "plugins=testhv;vfio;");
    dir_line = g_strdup_printf("plugin_dir=%s", plugdir);
    replace_line(text, "plugin_dir=", dir_line);
    vfio_keys = g_strdup_printf("\n[plugin.vfio]\nsysfs_root=%s\ndev_vfio_dir=%s\nwait_ms=5000\n",
                                vsim_sysfs_root(e->sim), vsim_dev_vfio(e->sim));
    g_string_append(text, vfio_keys);
    g_assert_true(g_file_set_contents(e->d->conf, text->str, -1, NULL));
    return e;
}

static void
env_free(Env *e)
{
    daemon_free(e->d);
    vsim_free(e->sim);
    g_free(e);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Env, env_free)

static char *
hostdev_xml(const char *addr, gboolean managed)
{
    unsigned dom, bus, slot, fn;

    g_assert_cmpint(sscanf(addr, "%x:%x:%x.%x", &dom, &bus, &slot, &fn), ==, 4);
    return g_strdup_printf("<hostdev mode='subsystem' type='pci' managed='%s'><source>"
                           "<address domain='0x%04x' bus='0x%02x' slot='0x%02x' "
                           "function='0x%x'/></source></hostdev>",
                           managed ? "yes" : "no", dom, bus, slot, fn);
}

/* Defines @name with the hostdevs @xml (may be NULL). */
static void
define_with(BerthClient *c, const char *name, const char *devices)
{
    g_autofree char *base = domain_xml(name);
    g_autoptr(GString) xml = g_string_new(base);
    g_autofree char *esc = NULL;
    g_autofree char *params = NULL;

    if (devices) {
        char *end = strstr(xml->str, "</domain>");
        g_autofree char *devs = g_strdup_printf("  <devices>%s</devices>\n", devices);
        g_string_insert(xml, end - xml->str, devs);
    }
    esc = g_strescape(xml->str, NULL);
    params = g_strdup_printf("{\"xml\":\"%s\"}", esc);
    g_free(call_ok(c, "domain.define", params));
}

static char *
json_str(const char *json, const char *key)
{
    const char *path[] = { key, NULL };
    yajl_val root = yajl_tree_parse(json, NULL, 0);
    yajl_val v = root ? yajl_tree_get(root, path, yajl_t_any) : NULL;
    char *out = v && YAJL_IS_STRING(v) ? g_strdup(YAJL_GET_STRING(v)) : NULL;

    yajl_tree_free(root);
    return out;
}

static char *
addr_params(const char *addr)
{
    return g_strdup_printf("{\"address\":\"%s\"}", addr);
}

/* nodedev.get's "state" of @addr. */
static char *
nodedev_state(BerthClient *c, const char *addr)
{
    g_autofree char *p = addr_params(addr);
    g_autofree char *r = call_ok(c, "nodedev.get", p);

    return json_str(r, "state");
}

static char *
lists_file(Env *e)
{
    g_autofree char *path = g_build_filename(e->d->dir, "state", "plugins", "vfio",
                                             "lists.json", NULL);
    char *text = NULL;

    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    return text;
}

typedef struct {
    BerthClient *c;
    char *method;
    char *params;
    GError *error;
    char *result;
    gboolean ok;
} AsyncCall;

static gpointer
async_call_thread(gpointer data)
{
    AsyncCall *a = data;

    a->ok = berth_client_call(a->c, a->method, a->params, &a->result, &a->error);
    return NULL;
}

static void
async_call_clear(AsyncCall *a)
{
    g_free(a->method);
    g_free(a->params);
    g_free(a->result);
    g_clear_error(&a->error);
}

/* The libvirt scenario (bug 1658198), ROUNDS times: a client subscribed to events reattaches
 * a managed='no' hostdev's device the moment device-removed arrives; it must always work. */
static void
test_reattach_on_removed_unmanaged(void)
{
    g_autoptr(Env) e = env_new();
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *hd = hostdev_xml(NIC, FALSE);
    g_autofree char *nic = addr_params(NIC);
    g_autofree char *esc = g_strescape(hd, NULL);
    g_autofree char *attach = g_strdup_printf("{\"name\":\"vm1\",\"xml\":\"%s\"}", esc);
    gint64 t0;

    daemon_start(e->d);
    c = daemon_connect(e->d, FALSE);
    ev = daemon_connect(e->d, FALSE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"type\":\"device-removed\"}}"));
    define_with(c, "vm1", NULL);
    g_free(call_ok(c, "domain.start", "{\"name\":\"vm1\"}"));
    t0 = g_get_monotonic_time();
    for (int round = 0; round < ROUNDS; round++) {
        g_autofree char *det = call_ok(c, "nodedev.detach", nic);
        g_autofree char *det_state = json_str(det, "state");
        g_autofree char *res = call_ok(c, "domain.attach_device", attach);
        g_autofree char *alias = json_str(res, "alias");
        g_autofree char *st = nodedev_state(c, NIC);
        g_autofree char *removed = NULL;
        g_autofree char *re = NULL;
        g_autoptr(GError) error = NULL;
        AsyncCall a = { c, g_strdup("domain.detach_device"), NULL, NULL, NULL, FALSE };
        GThread *th;

        g_assert_cmpstr(det_state, ==, "detached");
        g_assert_cmpstr(st, ==, "assigned");
        a.params = g_strdup_printf("{\"name\":\"vm1\",\"alias\":\"%s\"}", alias);
        th = g_thread_new("detach", async_call_thread, &a);
        removed = wait_event(ev, "device-removed");
        /* At once, on the event, while the detach call may still be returning. */
        if (!berth_client_call(ev, "nodedev.reattach", nic, &re, &error)) {
            g_test_message("round %d: reattach on device-removed failed: %s", round,
                           error->message);
        }
        g_assert_no_error(error);
        g_assert_nonnull(strstr(removed, alias));
        g_thread_join(th);
        g_assert_no_error(a.error);
        g_assert_true(a.ok);
        async_call_clear(&a);
        {
            g_autofree char *drv = vsim_driver(e->sim, NIC);
            g_assert_cmpstr(drv, ==, "e1000e");
        }
    }
    g_test_message("%d rounds of detach, attach, unplug, reattach-on-event in %.1f s", ROUNDS,
                   (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC);
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"vm1\"}"));
    daemon_stop(e->d);
}

/* managed='yes': when device-removed arrives, the device is already on its host driver. */
static void
test_managed_back_on_removed(void)
{
    g_autoptr(Env) e = env_new();
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ev = NULL;
    g_autofree char *hd = hostdev_xml(NIC, TRUE);
    g_autofree char *esc = g_strescape(hd, NULL);
    g_autofree char *attach = g_strdup_printf("{\"name\":\"vm1\",\"xml\":\"%s\"}", esc);

    daemon_start(e->d);
    c = daemon_connect(e->d, FALSE);
    ev = daemon_connect(e->d, FALSE);
    g_free(call_ok(ev, "events.subscribe", "{\"filter\":{\"type\":\"device-removed\"}}"));
    define_with(c, "vm1", NULL);
    g_free(call_ok(c, "domain.start", "{\"name\":\"vm1\"}"));
    for (int round = 0; round < ROUNDS; round++) {
        g_autofree char *res = call_ok(c, "domain.attach_device", attach);
        g_autofree char *alias = json_str(res, "alias");
        g_autofree char *removed = NULL;
        g_autofree char *st = NULL;
        g_autofree char *drv = vsim_driver(e->sim, NIC);
        AsyncCall a = { c, g_strdup("domain.detach_device"), NULL, NULL, NULL, FALSE };
        GThread *th;

        g_assert_cmpstr(drv, ==, "vfio-pci");
        a.params = g_strdup_printf("{\"name\":\"vm1\",\"alias\":\"%s\"}", alias);
        th = g_thread_new("detach", async_call_thread, &a);
        removed = wait_event(ev, "device-removed");
        g_free(drv);
        drv = vsim_driver(e->sim, NIC);
        g_assert_cmpstr(drv, ==, "e1000e");
        st = nodedev_state(ev, NIC);
        g_assert_cmpstr(st, ==, "host");
        g_thread_join(th);
        g_assert_no_error(a.error);
        async_call_clear(&a);
    }
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"vm1\"}"));
    daemon_stop(e->d);
}

/* Start prepares every hostdev and releases them when the start fails; stop releases. */
static void
test_start_and_stop(void)
{
    g_autoptr(Env) e = env_new();
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) ro = NULL;
    g_autofree char *good = hostdev_xml(NIC, TRUE);
    g_autofree char *unmanaged = hostdev_xml(NIC2, FALSE);
    g_autofree char *blocked = hostdev_xml(DUAL0, TRUE);
    g_autofree char *missing = hostdev_xml("0000:66:00.0", TRUE);
    g_autofree char *devs_ok = g_strconcat(good, unmanaged, NULL);
    g_autofree char *devs_blocked = g_strconcat(good, blocked, NULL);
    g_autofree char *devs_missing = g_strconcat(good, missing, NULL);
    g_autofree char *nic = addr_params(NIC);
    g_autofree char *nic2 = addr_params(NIC2);
    g_autofree char *st = NULL;
    g_autofree char *drv = NULL;
    g_autofree char *state = NULL;

    daemon_start(e->d);
    c = daemon_connect(e->d, FALSE);
    ro = daemon_connect(e->d, TRUE);
    define_with(c, "ok", devs_ok);
    define_with(c, "blocked", devs_blocked);
    define_with(c, "missing", devs_missing);

    /* Unmanaged and not detached: the start fails and the managed one is given back. */
    call_fails(c, "domain.start", "{\"name\":\"ok\"}", BERTH_ERROR_INVALID_STATE);
    drv = vsim_driver(e->sim, NIC);
    g_assert_cmpstr(drv, ==, "e1000e");
    g_free(call_ok(c, "nodedev.detach", nic2));
    g_free(call_ok(c, "domain.start", "{\"name\":\"ok\"}"));
    st = nodedev_state(ro, NIC);
    g_assert_cmpstr(st, ==, "assigned");
    g_free(st);
    st = nodedev_state(ro, NIC2);
    g_assert_cmpstr(st, ==, "assigned");
    call_fails(c, "nodedev.reattach", nic, BERTH_ERROR_BUSY);
    call_fails(c, "nodedev.reattach", nic2, BERTH_ERROR_BUSY);
    call_fails(c, "nodedev.reset", nic, BERTH_ERROR_BUSY);
    call_fails(ro, "nodedev.detach", nic, BERTH_ERROR_ACCESS_DENIED);
    /* Another domain wants the same device. */
    call_fails(c, "domain.start", "{\"name\":\"blocked\"}", BERTH_ERROR_BUSY);
    state = domain_state(c, "blocked", NULL);
    g_assert_cmpstr(state, ==, "shutoff");

    g_free(call_ok(c, "domain.destroy", "{\"name\":\"ok\"}"));
    g_free(drv);
    drv = vsim_driver(e->sim, NIC);
    g_assert_cmpstr(drv, ==, "e1000e");
    g_free(st);
    st = nodedev_state(ro, NIC2);
    g_assert_cmpstr(st, ==, "detached");
    g_free(call_ok(c, "nodedev.reattach", nic2));

    /* A group that is not viable, a device that does not exist: refused, NIC given back. */
    call_fails(c, "domain.start", "{\"name\":\"blocked\"}", BERTH_ERROR_INVALID_STATE);
    call_fails(c, "domain.start", "{\"name\":\"missing\"}", BERTH_ERROR_NO_SUCH_DEVICE);
    g_free(drv);
    drv = vsim_driver(e->sim, NIC);
    g_assert_cmpstr(drv, ==, "e1000e");
    g_free(drv);
    drv = vsim_driver(e->sim, DUAL0);
    g_assert_cmpstr(drv, ==, "e1000e");
    daemon_stop(e->d);
}

/* After a berthd restart the lists are the same and an in-use device stays in use. */
static void
test_restart(void)
{
    g_autoptr(Env) e = env_new();
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *hd = hostdev_xml(NIC, TRUE);
    g_autofree char *nic = addr_params(NIC);
    g_autofree char *nic2 = addr_params(NIC2);
    g_autofree char *before = NULL;
    g_autofree char *after = NULL;
    g_autofree char *st = NULL;
    g_autofree char *drv = NULL;

    daemon_start(e->d);
    c = daemon_connect(e->d, FALSE);
    define_with(c, "vm1", hd);
    g_free(call_ok(c, "domain.start", "{\"name\":\"vm1\"}"));
    g_free(call_ok(c, "nodedev.detach", nic2));
    before = lists_file(e);
    g_assert_nonnull(strstr(before, "\"domain\":\"vm1\""));
    g_assert_nonnull(strstr(before, NIC2));
    g_clear_pointer(&c, berth_client_free);
    daemon_stop(e->d);

    daemon_start(e->d);
    c = daemon_connect(e->d, FALSE);
    wait_state(c, "vm1", "running");
    after = lists_file(e);
    g_assert_cmpstr(before, ==, after);
    st = nodedev_state(c, NIC);
    g_assert_cmpstr(st, ==, "assigned");
    call_fails(c, "nodedev.reattach", nic, BERTH_ERROR_BUSY);
    drv = vsim_driver(e->sim, NIC);
    g_assert_cmpstr(drv, ==, "vfio-pci");
    /* The reconnected domain still releases its device when it stops. */
    g_free(call_ok(c, "domain.destroy", "{\"name\":\"vm1\"}"));
    g_free(drv);
    drv = vsim_driver(e->sim, NIC);
    g_assert_cmpstr(drv, ==, "e1000e");
    g_free(call_ok(c, "nodedev.reattach", nic2));
    daemon_stop(e->d);
}

/* Bad input, and two clients detaching one device at the same time. */
static void
test_bad_input_and_concurrency(void)
{
    g_autoptr(Env) e = env_new();
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) c2 = NULL;
    g_autofree char *nic = addr_params(NIC);
    g_autofree char *list = NULL;
    AsyncCall a[2];
    GThread *th[2];

    daemon_start(e->d);
    c = daemon_connect(e->d, FALSE);
    c2 = daemon_connect(e->d, FALSE);
    call_fails(c, "nodedev.get", "{\"address\":\"0000:06:00\"}", BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "nodedev.get", "{\"address\":\"0000:6:0.0\"}", BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "nodedev.detach", "{\"address\":\"../../../../etc\"}",
               BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "nodedev.detach", "{}", BERTH_ERROR_INVALID_ARGUMENT);
    call_fails(c, "nodedev.detach", "{\"address\":\"0000:66:00.0\"}",
               BERTH_ERROR_NO_SUCH_DEVICE);
    call_fails(c, "nodedev.list", "{\"bogus\":\"x\"}", BERTH_ERROR_INVALID_ARGUMENT);
    list = call_ok(c, "nodedev.list", "{\"class\":\"0x02\"}");
    g_assert_nonnull(strstr(list, DUAL1));

    /* A slow unbind keeps the first detach busy while the second arrives. */
    vsim_set_fail(e->sim, NIC, "unbind-delay-ms=300");
    for (int i = 0; i < 2; i++) {
        a[i] = (AsyncCall){ i ? c2 : c, g_strdup("nodedev.detach"), g_strdup(nic), NULL, NULL,
                            FALSE };
        th[i] = g_thread_new("detach", async_call_thread, &a[i]);
    }
    for (int i = 0; i < 2; i++) {
        g_thread_join(th[i]);
    }
    g_assert_true(a[0].ok != a[1].ok);
    {
        GError *loser = a[0].ok ? a[1].error : a[0].error;
        g_assert_error(loser, BERTH_ERROR, BERTH_ERROR_BUSY);
    }
    async_call_clear(&a[0]);
    async_call_clear(&a[1]);
    g_free(call_ok(c, "nodedev.reattach", nic));
    daemon_stop(e->d);
}

static int
berthctl(Env *e, char **out, const char *a1, const char *a2, const char *a3, const char *a4)
{
    g_autofree char *bin = g_build_filename(BERTH_BUILD_ROOT, "agent", "ctl", "berthctl", NULL);
    g_autofree char *uri = g_strdup_printf("unix:%s", e->d->sock);
    const char *argv[] = { bin, "--connect", uri, a1, a2, a3, a4, NULL };

    return run_cmd(argv, out);
}

/* The berthctl nodedev commands against the daemon. */
static void
test_berthctl(void)
{
    g_autoptr(Env) e = env_new();
    g_autofree char *out = NULL;

    daemon_start(e->d);
    g_assert_cmpint(berthctl(e, &out, "nodedev-list", "--class", "0x02", NULL), ==, 0);
    g_assert_nonnull(strstr(out, "ADDRESS"));
    g_assert_nonnull(strstr(out, DUAL1));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(berthctl(e, &out, "nodedev-detach", NIC, NULL, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "Device '" NIC "' detached to vfio-pci (driver vfio-pci)."));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(berthctl(e, &out, "nodedev-list", "--driver", "vfio-pci", NULL), ==, 0);
    g_assert_nonnull(strstr(out, NIC));
    g_assert_null(strstr(out, DUAL1));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(berthctl(e, &out, "--json", "nodedev-get", NIC, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "\"state\":\"detached\""));
    g_clear_pointer(&out, g_free);
    g_assert_cmpint(berthctl(e, &out, "nodedev-reset", NIC, NULL, NULL), ==, 0);
    g_clear_pointer(&out, g_free);
    /* Exit 1 for an API error (busy: already detached), 2 for a usage error. */
    g_assert_cmpint(berthctl(e, NULL, "nodedev-detach", NIC, NULL, NULL), ==, 1);
    g_assert_cmpint(berthctl(e, NULL, "nodedev-detach", NULL, NULL, NULL), ==, 2);
    g_assert_cmpint(berthctl(e, &out, "nodedev-reattach", NIC, NULL, NULL), ==, 0);
    g_assert_nonnull(strstr(out, "reattached to its host driver (driver e1000e)"));
    daemon_stop(e->d);
}

/* The simulation as a standalone daemon (vfio-sim ROOT), started and stopped by pid, driven
 * by berthd with its sample host: detach and reattach through the API. */
static void
test_standalone_sim(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(Daemon) d = daemon_new(NULL);
    g_autofree char *bin = g_build_filename(BERTH_BUILD_ROOT, "tests", "vfio-sim", "vfio-sim",
                                            NULL);
    g_autofree char *root = g_build_filename(d->dir, "hw", NULL);
    g_autofree char *sysfs = g_build_filename(root, "sys", NULL);
    g_autofree char *devvfio = g_build_filename(root, "dev", "vfio", NULL);
    g_autofree char *link = g_build_filename(sysfs, "bus", "pci", "devices", "0000:06:00.0",
                                             "driver", NULL);
    g_autofree char *plugdir = g_build_filename(d->dir, "plugins", NULL);
    g_autofree char *conf = NULL;
    g_autofree char *keys = NULL;
    g_autofree char *dir_line = NULL;
    g_autofree char *line = NULL;
    g_autofree char *target = NULL;
    g_autofree char *out = NULL;
    g_autoptr(GString) text = NULL;
    g_autoptr(GSubprocess) sim = NULL;
    g_autoptr(GDataInputStream) in = NULL;
    g_autoptr(BerthClient) c = NULL;
    const char *p = "{\"address\":\"0000:06:00.0\"}";

    sim = g_subprocess_new(G_SUBPROCESS_FLAGS_STDOUT_PIPE, &error, bin, root, NULL);
    g_assert_no_error(error);
    in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(sim));
    line = g_data_input_stream_read_line(in, NULL, NULL, &error);
    g_assert_no_error(error);
    {
        g_autofree char *want = g_strdup_printf("sysfs_root=%s", sysfs);
        g_assert_cmpstr(line, ==, want);
    }

    g_assert_cmpint(g_mkdir(plugdir, 0755), ==, 0);
    {
        g_autofree char *l1 = g_build_filename(plugdir, "testhv.so", NULL);
        g_autofree char *l2 = g_build_filename(plugdir, "vfio.so", NULL);
        g_assert_cmpint(symlink(BERTH_BUILD_ROOT "/tests/plugins/testhv.so", l1), ==, 0);
        g_assert_cmpint(symlink(BERTH_BUILD_ROOT "/plugins/vfio/vfio.so", l2), ==, 0);
    }
    g_assert_true(g_file_get_contents(d->conf, &conf, NULL, NULL));
    text = g_string_new(conf);
    replace_line(text, "plugins=testhv;", "plugins=testhv;vfio;");
    dir_line = g_strdup_printf("plugin_dir=%s", plugdir);
    replace_line(text, "plugin_dir=", dir_line);
    keys = g_strdup_printf("\n[plugin.vfio]\nsysfs_root=%s\ndev_vfio_dir=%s\n", sysfs, devvfio);
    g_string_append(text, keys);
    g_assert_true(g_file_set_contents(d->conf, text->str, -1, NULL));

    daemon_start(d);
    c = daemon_connect(d, FALSE);
    out = call_ok(c, "nodedev.detach", p);
    g_assert_nonnull(strstr(out, "\"state\":\"detached\""));
    target = g_file_read_link(link, NULL);
    g_assert_cmpstr(target, ==, "../../drivers/vfio-pci");
    g_free(call_ok(c, "nodedev.reattach", p));
    g_free(target);
    target = g_file_read_link(link, NULL);
    g_assert_cmpstr(target, ==, "../../drivers/e1000e");
    daemon_stop(d);

    g_subprocess_send_signal(sim, SIGTERM);
    g_assert_true(g_subprocess_wait(sim, NULL, &error));
    g_assert_true(g_subprocess_get_if_exited(sim));
    g_assert_cmpint(g_subprocess_get_exit_status(sim), ==, 0);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/vfio/daemon/reattach-on-device-removed-unmanaged",
                    test_reattach_on_removed_unmanaged);
    g_test_add_func("/vfio/daemon/managed-back-on-device-removed", test_managed_back_on_removed);
    g_test_add_func("/vfio/daemon/start-and-stop", test_start_and_stop);
    g_test_add_func("/vfio/daemon/restart", test_restart);
    g_test_add_func("/vfio/daemon/bad-input-and-concurrent-detach",
                    test_bad_input_and_concurrency);
    g_test_add_func("/vfio/daemon/berthctl", test_berthctl);
    g_test_add_func("/vfio/daemon/standalone-sim", test_standalone_sim);
    return g_test_run();
}
