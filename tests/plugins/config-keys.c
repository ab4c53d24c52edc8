/* Test plugin "config-keys": declares an int, a bool and a list key and reads them in init. */
#include <berth/sink.h>

static const BerthConfigKey keys[] = {
    {"count", BERTH_CONFIG_INT, "3", 1, 10, "How many of something, 1..10."},
    {"verbose", BERTH_CONFIG_BOOL, "false", 0, 0, "Whether to say more."},
    {"names", BERTH_CONFIG_STRV, "a;b", 0, 0, "Some names."},
    {"label", BERTH_CONFIG_STRING, NULL, 0, 0, "An optional label, unset by default."},
    {NULL, 0, NULL, 0, 0, NULL},
};

static gboolean
keys_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    gint64 count = host->config_get_int(self, "count");
    gboolean verbose = host->config_get_bool(self, "verbose");
    const char *const *names = host->config_get_strv(self, "names");
    const char *label = host->config_get_string(self, "label");
    g_autofree char *joined = NULL;

    /* The core validated the section: a value out of the declared range is a core bug. */
    if (count < 1 || count > 10 || !names) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "config-keys: the host handed out count %" G_GINT64_FORMAT
                    " or no names", count);
        return FALSE;
    }
    joined = g_strjoinv(",", (char **)names);
    /* The tests read the values the plugin saw from this line. */
    host->log(self, G_LOG_LEVEL_INFO, "config-keys: count=%" G_GINT64_FORMAT
              " verbose=%s names=%s label=%s", count, verbose ? "true" : "false", joined,
              label ? label : "(unset)");
    return TRUE;
}

static void
keys_deliver(gpointer priv, const BerthEvent *event)
{
}

static const BerthSinkOps keys_ops = {
    .struct_size = sizeof(BerthSinkOps),
    .deliver = keys_deliver,
};

static const BerthPlugin keys_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "config-keys",
    .version = "1.0",
    .description = "reads its config keys (a test plugin)",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .config_keys = keys,
    .init = keys_init,
    .ops = &keys_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &keys_plugin;
}
