/* The vfio plugin as berthd loads it (vfio.so through its entry symbol) with a fake BerthHost:
 * its config keys, its nodedev.* methods (params, errors, events) and their documentation,
 * and its hostdev ops. Simulated: sysfs (tests/vfio-sim) and the core (this file's host). */
#include <gmodule.h>
#include <string.h>

#include <berth/hostdev.h>

#include "build-config.h"
#include "vsim.h"

#define NIC "0000:06:00.0"

typedef struct {
    char *dir;
    char *state;
    VSim *sim;
    GPtrArray *methods; /* BerthMethodSpec copies */
    GPtrArray *events;  /* "type name detail" */
    GMutex lock;
} Host;

static Host H;

static void
h_log(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void
h_log(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_test_message("plugin log: %s", msg);
}

static guint64
h_publish(BerthPluginHandle *self, const BerthEvent *ev)
{
    g_mutex_lock(&H.lock);
    g_ptr_array_add(H.events, g_strdup_printf("%s %s %s %s", ev->object_kind, ev->type,
                                              ev->object_name, ev->detail_json));
    g_mutex_unlock(&H.lock);
    return H.events->len;
}

static GCancellable *
h_cancellable(BerthJob *job)
{
    return NULL;
}

static const char *
h_state_dir(BerthPluginHandle *self)
{
    return H.state;
}

static const char *
h_config_string(BerthPluginHandle *self, const char *key)
{
    if (strcmp(key, "sysfs_root") == 0) {
        return vsim_sysfs_root(H.sim);
    }
    if (strcmp(key, "dev_vfio_dir") == 0) {
        return vsim_dev_vfio(H.sim);
    }
    g_assert_not_reached();
}

static gint64
h_config_int(BerthPluginHandle *self, const char *key)
{
    g_assert_cmpstr(key, ==, "wait_ms");
    return 2000;
}

static gboolean
h_method_register(BerthPluginHandle *self, const BerthMethodSpec *spec, GError **error)
{
    g_ptr_array_add(H.methods, g_memdup2(spec, sizeof(*spec)));
    return TRUE;
}

static const BerthHost host = {
    .struct_size = sizeof(BerthHost),
    .abi_minor = BERTH_ABI_MINOR,
    .log = h_log,
    .event_publish = h_publish,
    .job_get_cancellable = h_cancellable,
    .state_dir = h_state_dir,
    .config_get_string = h_config_string,
    .config_get_int = h_config_int,
    .method_register = h_method_register,
};

static const BerthMethodSpec *
method(const char *name)
{
    for (guint i = 0; i < H.methods->len; i++) {
        const BerthMethodSpec *m = H.methods->pdata[i];
        if (strcmp(m->name, name) == 0) {
            return m;
        }
    }
    g_assert_not_reached();
}

/* Calls a method as the core's job would (no job: the fake cancellable is NULL). */
static char *
call(const char *name, const char *params, GError **error)
{
    const BerthMethodSpec *m = method(name);
    char *result = NULL;

    if (!m->func(NULL, params, &result, m->data, error)) {
        g_assert_null(result);
        return NULL;
    }
    return result ? result : g_strdup("null");
}

static const BerthPlugin *plugin;
static gpointer priv;

static void
test_descriptor(void)
{
    static const char *const keys[] = { "sysfs_root", "dev_vfio_dir", "wait_ms", NULL };
    guint n = 0;

    g_assert_cmpuint(plugin->abi_major, ==, BERTH_ABI_MAJOR);
    g_assert_cmpstr(plugin->name, ==, "vfio");
    g_assert_cmpint(plugin->kind, ==, BERTH_PLUGIN_HOSTDEV);
    for (const BerthConfigKey *k = plugin->config_keys; k->key; k++, n++) {
        g_assert_cmpstr(k->key, ==, keys[n]);
    }
    g_assert_cmpuint(n, ==, 3);
    g_assert_cmpuint(H.methods->len, ==, 5);
}

/* Every method the plugin registers has a "### `NAME`" section under "## Plugin methods". */
static void
test_documented(void)
{
    g_autofree char *path = g_build_filename(BERTH_SOURCE_ROOT, "docs", "api.md", NULL);
    g_autofree char *doc = NULL;
    const char *plugin_part;

    g_assert_true(g_file_get_contents(path, &doc, NULL, NULL));
    plugin_part = strstr(doc, "\n## Plugin methods");
    g_assert_nonnull(plugin_part);
    for (guint i = 0; i < H.methods->len; i++) {
        const BerthMethodSpec *m = H.methods->pdata[i];
        g_autofree char *heading = g_strdup_printf("\n### `%s`\n", m->name);

        if (!strstr(plugin_part, heading)) {
            g_printerr("docs/api.md has no '### `%s`' under '## Plugin methods'\n", m->name);
        }
        g_assert_nonnull(strstr(plugin_part, heading));
        g_assert_true(g_str_has_prefix(m->name, "nodedev."));
        g_assert_cmpstr(m->object_kind, ==, "nodedev");
        /* The changing ones are modify jobs on the device, refused on the read-only socket. */
        if (strcmp(m->name, "nodedev.list") == 0) {
            g_assert_null(m->object_param);
        } else {
            g_assert_cmpstr(m->object_param, ==, "address");
        }
        g_assert_cmpint(m->modifies, ==, m->job_kind == BERTH_JOB_MODIFY);
    }
}

static void
test_bad_params(void)
{
    static const struct {
        const char *method;
        const char *params;
        int code;
        const char *text;
    } cases[] = {
        { "nodedev.get", "{}", BERTH_ERROR_INVALID_ARGUMENT, "missing" },
        { "nodedev.get", "{\"address\":\"06:00.0\"}", BERTH_ERROR_INVALID_ARGUMENT,
          "0000:06:12.5" },
        { "nodedev.get", "{\"address\":\"0000:06:00.0\",\"x\":1}", BERTH_ERROR_INVALID_ARGUMENT,
          "unknown param 'x'" },
        { "nodedev.get", "{\"address\":6}", BERTH_ERROR_INVALID_ARGUMENT, "must be a string" },
        { "nodedev.detach", "{\"address\":\"0000:06:00.0/../x\"}", BERTH_ERROR_INVALID_ARGUMENT,
          "too long" },
        { "nodedev.detach", "{\"address\":\"0000:66:00.0\"}", BERTH_ERROR_NO_SUCH_DEVICE,
          "does not exist" },
        { "nodedev.reattach", "{\"address\":\"" NIC "\"}", BERTH_ERROR_INVALID_STATE,
          "is not detached" },
        { "nodedev.reset", "{\"address\":\"0000:08:00.0\"}", BERTH_ERROR_UNSUPPORTED,
          "no function-level reset" },
        { "nodedev.list", "{\"class\":\"02\"}", BERTH_ERROR_INVALID_ARGUMENT, "class filter" },
        { "nodedev.list", "{\"class\":\"0x0G\"}", BERTH_ERROR_INVALID_ARGUMENT, "class filter" },
        { "nodedev.list", "[1]", BERTH_ERROR_INVALID_ARGUMENT, "JSON object" },
    };

    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *r = call(cases[i].method, cases[i].params, &error);

        g_test_message("%s %s", cases[i].method, cases[i].params);
        g_assert_null(r);
        g_assert_error(error, BERTH_ERROR, cases[i].code);
        if (!strstr(error->message, cases[i].text)) {
            g_printerr("%s\n", error->message);
        }
        g_assert_nonnull(strstr(error->message, cases[i].text));
    }
}

static void
test_methods(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *got = NULL;
    g_autofree char *det = NULL;
    g_autofree char *list = NULL;
    g_autofree char *re = NULL;
    g_autofree char *reset = NULL;

    g_ptr_array_set_size(H.events, 0);
    got = call("nodedev.get", "{\"address\":\"" NIC "\"}", &error);
    g_assert_no_error(error);
    g_assert_nonnull(strstr(got, "\"driver\":\"e1000e\""));
    g_assert_nonnull(strstr(got, "\"state\":\"host\""));
    det = call("nodedev.detach", "{\"address\":\"" NIC "\"}", &error);
    g_assert_no_error(error);
    g_assert_nonnull(strstr(det, "\"driver\":\"vfio-pci\""));
    g_assert_nonnull(strstr(det, "\"state\":\"detached\""));
    list = call("nodedev.list", "{\"driver\":\"vfio-pci\",\"class\":\"0x02\"}", &error);
    g_assert_no_error(error);
    g_assert_true(g_str_has_prefix(list, "[{\"address\":\"" NIC "\""));
    reset = call("nodedev.reset", "{\"address\":\"" NIC "\"}", &error);
    g_assert_no_error(error);
    g_assert_cmpstr(reset, ==, "null");
    re = call("nodedev.reattach", "{\"address\":\"" NIC "\"}", &error);
    g_assert_no_error(error);
    g_assert_nonnull(strstr(re, "\"state\":\"host\""));
    g_assert_cmpuint(H.events->len, ==, 2);
    g_assert_cmpstr(H.events->pdata[0], ==,
                    "nodedev nodedev-detached " NIC " {\"driver\":\"e1000e\",\"domain\":null}");
    g_assert_cmpstr(H.events->pdata[1], ==,
                    "nodedev nodedev-reattached " NIC " {\"driver\":\"e1000e\",\"domain\":null}");
}

static void
test_hostdev_ops(void)
{
    const BerthHostdevOps *ops = plugin->ops;
    g_autoptr(GError) error = NULL;
    BerthHostdevDef hd = { .managed = TRUE,
                           .source = { TRUE, 0, 6, 0, 0 } };
    BerthHostdevDef *hds[] = { &hd };
    BerthDomainDef def = { .struct_size = sizeof(def), .name = (char *) "web1",
                           .hostdevs = hds, .n_hostdevs = 1 };
    BerthDomainDef other = { .struct_size = sizeof(def), .name = (char *) "web2" };
    BerthHostdevDef bad = { .managed = TRUE, .source = { FALSE } };
    g_autofree char *got = NULL;

    g_assert_cmpuint(ops->struct_size, ==, sizeof(BerthHostdevOps));
    g_assert_true(ops->prepare(priv, NULL, &def, &hd, &error));
    g_assert_no_error(error);
    g_assert_false(ops->prepare(priv, NULL, &other, &hd, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    got = call("nodedev.reattach", "{\"address\":\"" NIC "\"}", &error);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);
    g_assert_false(ops->prepare(priv, NULL, &def, &bad, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_true(ops->release(priv, &def, &hd, &error));
    g_assert_no_error(error);
    {
        g_autofree char *drv = vsim_driver(H.sim, NIC);
        g_assert_cmpstr(drv, ==, "e1000e");
    }
}

int
main(int argc, char **argv)
{
    g_autofree char *root = NULL;
    g_autofree char *cmd = NULL;
    g_autoptr(GError) error = NULL;
    GModule *mod;
    gpointer entry = NULL;
    int rc;

    g_test_init(&argc, &argv, NULL);
    H.dir = g_dir_make_tmp("test-vfio-plugin-XXXXXX", NULL);
    H.state = g_build_filename(H.dir, "state", NULL);
    g_mkdir_with_parents(H.state, 0700);
    H.methods = g_ptr_array_new_with_free_func(g_free);
    H.events = g_ptr_array_new_with_free_func(g_free);
    g_mutex_init(&H.lock);
    root = g_build_filename(H.dir, "root", NULL);
    H.sim = vsim_new(root);
    vsim_add_driver(H.sim, "e1000e");
    vsim_add_driver(H.sim, "xhci_hcd");
    vsim_add_driver(H.sim, "vfio-pci");
    vsim_add_device(H.sim, NIC, 0x8086, 0x10d3, 0x020000, 7, "e1000e", TRUE, TRUE);
    vsim_add_device(H.sim, "0000:08:00.0", 0x1b21, 0x1242, 0x0c0330, 9, "xhci_hcd", TRUE,
                    FALSE);
    g_assert_true(vsim_start(H.sim, NULL));

    mod = g_module_open(VFIO_PLUGIN_PATH, G_MODULE_BIND_LOCAL);
    g_assert_nonnull(mod);
    g_assert_true(g_module_symbol(mod, "berth_plugin_entry", &entry));
    plugin = ((BerthPluginEntryFunc) entry)();
    g_assert_true(plugin->init((BerthPluginHandle *) &H, &host, &priv, &error));
    g_assert_no_error(error);

    g_test_add_func("/vfio/plugin/descriptor", test_descriptor);
    g_test_add_func("/vfio/plugin/methods-documented", test_documented);
    g_test_add_func("/vfio/plugin/bad-params", test_bad_params);
    g_test_add_func("/vfio/plugin/methods", test_methods);
    g_test_add_func("/vfio/plugin/hostdev-ops", test_hostdev_ops);
    rc = g_test_run();

    plugin->shutdown(priv);
    vsim_free(H.sim);
    g_ptr_array_unref(H.methods);
    g_ptr_array_unref(H.events);
    g_mutex_clear(&H.lock);
    cmd = g_strdup_printf("rm -rf '%s'", H.dir);
    if (system(cmd) != 0) {
        g_printerr("cannot remove %s\n", H.dir);
    }
    g_free(H.dir);
    g_free(H.state);
    return rc;
}
