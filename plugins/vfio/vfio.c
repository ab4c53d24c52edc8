/* The vfio hostdev plugin: PCI passthrough for hypervisor plugins and the nodedev.* API. */
#include <berth/hostdev.h>
#include <berth/json.h>

#include <string.h>
#include <yajl/yajl_tree.h>

#include "manager.h"
#include "pci-address.h"

typedef struct {
    BerthPluginHandle *self;
    const BerthHost *host;
    VfioManager *manager;
} Vfio;

/* Requests are small; a params object bigger than this is refused before parsing. */
#define PARAMS_MAX 4096

static void
vfio_event(const char *address, const char *type, const char *detail_json, gpointer data)
{
    Vfio *v = data;
    BerthEvent ev = {
        .struct_size = sizeof(ev),
        .object_kind = "nodedev",
        .object_name = address,
        .type = type,
        .detail_json = detail_json,
    };

    v->host->event_publish(v->self, &ev);
}

static char *
hostdev_address(const BerthHostdevDef *hostdev, GError **error)
{
    VfioPciAddr a;

    if (!hostdev->source.set) {
        g_set_error_literal(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                            "a PCI hostdev has no source address");
        return NULL;
    }
    a.domain = hostdev->source.domain;
    a.bus = hostdev->source.bus;
    a.slot = hostdev->source.slot;
    a.function = hostdev->source.function;
    if (a.domain > 0xffff || a.bus > 0xff || a.slot > 0x1f || a.function > 7) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "PCI hostdev source %x:%x:%x.%x is out of range", a.domain, a.bus, a.slot,
                    a.function);
        return NULL;
    }
    return vfio_pci_addr_format(&a);
}

static gboolean
vfio_prepare(gpointer priv, BerthJob *job, const BerthDomainDef *def,
             const BerthHostdevDef *hostdev, GError **error)
{
    Vfio *v = priv;
    g_autofree char *addr = hostdev_address(hostdev, error);

    if (!addr) {
        return FALSE;
    }
    return vfio_manager_prepare(v->manager, def->name, addr, hostdev->managed,
                                job ? v->host->job_get_cancellable(job) : NULL, error);
}

static gboolean
vfio_release(gpointer priv, const BerthDomainDef *def, const BerthHostdevDef *hostdev,
             GError **error)
{
    Vfio *v = priv;
    g_autofree char *addr = hostdev_address(hostdev, error);

    if (!addr) {
        return FALSE;
    }
    return vfio_manager_release(v->manager, def->name, addr, error);
}

/* Parses @params_json; refuses other keys than @allowed; *@values[i] gets the string of
 * @allowed[i] or NULL (g_free each). */
static gboolean
parse_params(const char *params_json, const char *const *allowed, char **values,
             GError **error)
{
    char err[128];
    yajl_val root;

    if (strlen(params_json) > PARAMS_MAX) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "params are longer than %d bytes", PARAMS_MAX);
        return FALSE;
    }
    root = yajl_tree_parse(params_json, err, sizeof(err));
    if (!root || !YAJL_IS_OBJECT(root)) {
        yajl_tree_free(root);
        g_set_error_literal(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                            "params must be a JSON object");
        return FALSE;
    }
    for (gsize i = 0; i < root->u.object.len; i++) {
        const char *key = root->u.object.keys[i];
        yajl_val val = root->u.object.values[i];
        gsize k;

        for (k = 0; allowed[k]; k++) {
            if (strcmp(allowed[k], key) == 0) {
                break;
            }
        }
        if (!allowed[k]) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "unknown param '%s'", key);
            break;
        }
        if (!YAJL_IS_STRING(val)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "param '%s' must be a string", key);
            break;
        }
        g_free(values[k]);
        values[k] = g_strdup(YAJL_GET_STRING(val));
    }
    yajl_tree_free(root);
    return !(error && *error);
}

/* The "address" param, checked to be canonical (it names the job's object). */
static char *
address_param(const char *params_json, GError **error)
{
    static const char *const allowed[] = { "address", NULL };
    char *values[1] = { NULL };
    GError *local = NULL;
    VfioPciAddr a;

    if (!parse_params(params_json, allowed, values, &local)) {
        g_free(values[0]);
        g_propagate_error(error, local);
        return NULL;
    }
    if (!vfio_pci_addr_parse_canonical(values[0], &a, error)) {
        g_free(values[0]);
        return NULL;
    }
    return values[0];
}

static gboolean
m_list(BerthJob *job, const char *params_json, char **result_json, gpointer data,
       GError **error)
{
    static const char *const allowed[] = { "class", "driver", NULL };
    Vfio *v = data;
    char *values[2] = { NULL, NULL };
    GError *local = NULL;
    gboolean ok = parse_params(params_json, allowed, values, &local);

    if (ok && values[0] && (!g_str_has_prefix(values[0], "0x") || strlen(values[0]) > 8 ||
                            strspn(values[0] + 2, "0123456789abcdef") != strlen(values[0]) - 2)) {
        g_set_error(&local, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "class filter '%s' is not 0x followed by up to 6 lowercase hex digits",
                    values[0]);
        ok = FALSE;
    }
    if (ok) {
        *result_json = vfio_manager_list_json(v->manager, values[0], values[1], &local);
        ok = *result_json != NULL;
    }
    g_free(values[0]);
    g_free(values[1]);
    if (!ok) {
        g_propagate_error(error, local);
    }
    return ok;
}

static gboolean
m_get(BerthJob *job, const char *params_json, char **result_json, gpointer data,
      GError **error)
{
    Vfio *v = data;
    g_autofree char *addr = address_param(params_json, error);

    if (!addr) {
        return FALSE;
    }
    *result_json = vfio_manager_device_json(v->manager, addr, error);
    return *result_json != NULL;
}

static gboolean
m_detach(BerthJob *job, const char *params_json, char **result_json, gpointer data,
         GError **error)
{
    Vfio *v = data;
    g_autofree char *addr = address_param(params_json, error);

    if (!addr ||
        !vfio_manager_detach(v->manager, addr, v->host->job_get_cancellable(job), error)) {
        return FALSE;
    }
    *result_json = vfio_manager_device_json(v->manager, addr, error);
    return *result_json != NULL;
}

static gboolean
m_reattach(BerthJob *job, const char *params_json, char **result_json, gpointer data,
           GError **error)
{
    Vfio *v = data;
    g_autofree char *addr = address_param(params_json, error);

    if (!addr ||
        !vfio_manager_reattach(v->manager, addr, v->host->job_get_cancellable(job), error)) {
        return FALSE;
    }
    *result_json = vfio_manager_device_json(v->manager, addr, error);
    return *result_json != NULL;
}

static gboolean
m_reset(BerthJob *job, const char *params_json, char **result_json, gpointer data,
        GError **error)
{
    Vfio *v = data;
    g_autofree char *addr = address_param(params_json, error);

    return addr && vfio_manager_reset(v->manager, addr, error);
}

static gboolean
vfio_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    Vfio *v = g_new0(Vfio, 1);
    g_autofree char *lists = g_build_filename(host->state_dir(self), "lists.json", NULL);
    g_auto(GStrv) stale = NULL;
    const BerthMethodSpec methods[] = {
        { sizeof(BerthMethodSpec), "nodedev.list", FALSE, "nodedev", NULL, BERTH_JOB_QUERY,
          m_list, v },
        { sizeof(BerthMethodSpec), "nodedev.get", FALSE, "nodedev", "address", BERTH_JOB_QUERY,
          m_get, v },
        { sizeof(BerthMethodSpec), "nodedev.detach", TRUE, "nodedev", "address",
          BERTH_JOB_MODIFY, m_detach, v },
        { sizeof(BerthMethodSpec), "nodedev.reattach", TRUE, "nodedev", "address",
          BERTH_JOB_MODIFY, m_reattach, v },
        { sizeof(BerthMethodSpec), "nodedev.reset", TRUE, "nodedev", "address",
          BERTH_JOB_MODIFY, m_reset, v },
    };

    v->self = self;
    v->host = host;
    v->manager = vfio_manager_new(
        vfio_sysfs_new(host->config_get_string(self, "sysfs_root"),
                       host->config_get_string(self, "dev_vfio_dir"),
                       (guint) host->config_get_int(self, "wait_ms")),
        lists, vfio_event, v, error);
    if (!v->manager) {
        g_free(v);
        return FALSE;
    }
    /* After a restart the lists are what we promised; say where sysfs disagrees. */
    stale = vfio_manager_check_lists(v->manager);
    for (guint i = 0; stale[i]; i++) {
        host->log(self, G_LOG_LEVEL_WARNING, "%s", stale[i]);
    }
    *priv = v;
    for (gsize i = 0; i < G_N_ELEMENTS(methods); i++) {
        if (!host->method_register(self, &methods[i], error)) {
            return FALSE;
        }
    }
    return TRUE;
}

static void
vfio_shutdown(gpointer priv)
{
    Vfio *v = priv;

    if (!v) {
        return;
    }
    vfio_manager_free(v->manager);
    g_free(v);
}

static const BerthConfigKey vfio_keys[] = {
    { "sysfs_root", BERTH_CONFIG_PATH, "/sys", 0, 0,
      "Where sysfs is mounted; tests point it at a simulated tree." },
    { "dev_vfio_dir", BERTH_CONFIG_PATH, "/dev/vfio", 0, 0,
      "Where the kernel creates the vfio group device nodes." },
    { "wait_ms", BERTH_CONFIG_INT, "5000", 1, 600000,
      "How long one detach, reattach or bind step waits for its effect (the driver link, the "
      "/dev/vfio node) before it fails and rolls back." },
    { NULL },
};

static const BerthHostdevOps vfio_ops = {
    .struct_size = sizeof(BerthHostdevOps),
    .prepare = vfio_prepare,
    .release = vfio_release,
};

static const BerthPlugin vfio_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = 0,
    .struct_size = sizeof(BerthPlugin),
    .name = "vfio",
    .version = "0.1.0",
    .description = "PCI passthrough through vfio-pci (hostdevs, nodedev.* methods)",
    .kind = BERTH_PLUGIN_HOSTDEV,
    .config_keys = vfio_keys,
    .init = vfio_init,
    .shutdown = vfio_shutdown,
    .ops = &vfio_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &vfio_plugin;
}
