/* The plugin ABI: the one entry symbol and the versioned BerthPlugin descriptor. */
#pragma once

#include <berth/host.h>

G_BEGIN_DECLS

/* The ABI this header describes. The loader refuses another major, or a minor newer than its
 * own: a plugin built for 1.3 needs the members added in 1.3. */
#define BERTH_ABI_MAJOR 1
#define BERTH_ABI_MINOR 1

/* The symbol every plugin exports. */
#define BERTH_PLUGIN_ENTRY_SYMBOL "berth_plugin_entry"

/* The kinds of plugin, each with its ops table (hypervisor.h, hostdev.h, fs.h, sink.h). */
typedef enum {
    BERTH_PLUGIN_HYPERVISOR = 1,
    BERTH_PLUGIN_HOSTDEV = 2,
    BERTH_PLUGIN_FS = 3,
    BERTH_PLUGIN_EVENT_SINK = 4,
    BERTH_PLUGIN_KIND_LAST
} BerthPluginKind;

/**
 * BerthPlugin:
 * What berth_plugin_entry() returns: a const, static descriptor. Fields only ever grow at the
 * end; set @struct_size to sizeof(BerthPlugin) so that the core knows which fields exist.
 *
 * @init runs once on the main thread after the config was validated; it sets *@priv to the
 * plugin's own state (handed back to every op) and returns FALSE with @error when the plugin
 * cannot work. @shutdown runs on the main thread at berthd exit (never while berthd serves:
 * plugins are never unloaded). @reload runs on SIGHUP after the section was re-validated;
 * NULL means the plugin's keys need a restart. @ops points to the kind's ops table.
 */
typedef struct {
    guint32 abi_major;
    guint32 abi_minor;
    gsize struct_size;
    const char *name;        /* [a-z0-9_-]+, unique; names the [plugin.NAME] section */
    const char *version;     /* the plugin's own version */
    const char *description; /* one line for --list-plugins */
    BerthPluginKind kind;
    const BerthConfigKey *config_keys; /* may be NULL: no keys */
    gboolean (*init)(BerthPluginHandle *self, const BerthHost *host, gpointer *priv,
                     GError **error);
    void (*shutdown)(gpointer priv);
    gboolean (*reload)(gpointer priv, GError **error);
    const void *ops;
} BerthPlugin;

/* The entry point a plugin defines (with BERTH_PLUGIN_EXPORT). */
typedef const BerthPlugin *(*BerthPluginEntryFunc)(void);

#define BERTH_PLUGIN_EXPORT __attribute__((visibility("default")))

G_END_DECLS
