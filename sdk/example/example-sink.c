/* An example third-party plugin: an event sink that appends one line per event to a file. */
#include <errno.h>
#include <stdio.h>

#include <berth/sink.h>

/* Declared as data: berthd validates [plugin.example] against this and documents it. */
static const BerthConfigKey example_keys[] = {
    {"path", BERTH_CONFIG_PATH, NULL, 0, 0,
     "The file that gets one line per event (appended to; required)."},
    {NULL, 0, NULL, 0, 0, NULL},
};

typedef struct {
    FILE *out; /* only the sink's delivery thread writes after init */
} ExampleSink;

static gboolean
example_init(BerthPluginHandle *self, const BerthHost *host, gpointer *priv, GError **error)
{
    const char *path = host->config_get_string(self, "path");
    ExampleSink *sink;
    FILE *out;

    if (!path) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "[plugin.example] path is not set");
        return FALSE;
    }
    out = fopen(path, "ae");
    if (!out) {
        int err = errno;
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "cannot open '%s': %s", path, g_strerror(err));
        return FALSE;
    }
    /* One write per line, so a reader never sees half an event. */
    setvbuf(out, NULL, _IOLBF, 0);
    sink = g_new0(ExampleSink, 1);
    sink->out = out;
    *priv = sink;
    host->log(self, G_LOG_LEVEL_INFO, "writing events to '%s'", path);
    return TRUE;
}

static void
example_shutdown(gpointer priv)
{
    ExampleSink *sink = priv;

    fclose(sink->out);
    g_free(sink);
}

/* Runs on this sink's delivery thread; blocking here delays only this sink. */
static void
example_deliver(gpointer priv, const BerthEvent *event)
{
    ExampleSink *sink = priv;

    fprintf(sink->out, "%" G_GUINT64_FORMAT " %" G_GINT64_FORMAT " %s %s %s %s\n", event->seq,
            event->timestamp_us, event->object_kind, event->object_name, event->type,
            event->detail_json ? event->detail_json : "{}");
}

static const BerthSinkOps example_ops = {
    .struct_size = sizeof(BerthSinkOps),
    .deliver = example_deliver,
};

static const BerthPlugin example_plugin = {
    .abi_major = BERTH_ABI_MAJOR,
    .abi_minor = BERTH_ABI_MINOR,
    .struct_size = sizeof(BerthPlugin),
    .name = "example",
    .version = "1.0",
    .description = "writes one line per event to a file",
    .kind = BERTH_PLUGIN_EVENT_SINK,
    .config_keys = example_keys,
    .init = example_init,
    .shutdown = example_shutdown,
    .reload = NULL, /* a changed path needs a berthd restart */
    .ops = &example_ops,
};

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return &example_plugin;
}
