/* The plugin loader: opens plugins with libltdl, checks the ABI, validates config, runs init. */
#pragma once

#include <berth/plugin.h>

#include "config.h"

/* The core's record of one plugin (the BerthPluginHandle plugins pass back to host services). */
struct BerthPluginHandle {
    char *name;                 /* the name berthd.conf used (= plugin->name once loaded) */
    char *path;                 /* the file it came from */
    const BerthPlugin *plugin;  /* its descriptor */
    gpointer priv;              /* what its init() returned */
    gboolean required;          /* listed in required_plugins */
    gboolean initialized;       /* init() succeeded */
    GHashTable *config;         /* key -> value of its [plugin.NAME] section, defaults applied */
    GHashTable *config_strv;    /* key (g_free) -> char ** (g_strfreev) of BERTH_CONFIG_STRV keys,
                                 * split with berth_config_split_strv() at load */
    char *state_dir;            /* STATE_DIR/plugins/NAME */
    char *run_dir;              /* RUN_DIR/plugins/NAME */
    gpointer core;              /* the daemon's context, opaque to the loader */
    GPtrArray *retired;         /* config tables replaced by berth_plugin_reconfigure(), kept
                                 * until the handle is freed: other threads may hold strings */
};

/*
 * Opens every plugin that @config names, from config->plugin_dir only ("NAME" -> NAME.so via
 * lt_dlopenext), refusing with an error that names the file and the reason: a file or
 * directory that someone other than root or the running user can write, a missing
 * berth_plugin_entry symbol, a NULL descriptor, another ABI major or a newer minor, a struct
 * smaller than the 1.0 descriptor, an unknown kind or a NULL ops table, a name that differs from
 * the file's or that is loaded already, a config section that does not validate, and (when
 * @init) a failing init(). A failed optional plugin is logged (warning) and skipped; a failed
 * required plugin makes the call fail with @error. With @init FALSE nothing runs (for
 * --list-plugins). Returns the handles in load order (free with berth_plugins_free).
 */
GPtrArray *berth_plugins_load(const BerthConfig *config, const BerthHost *host, gpointer core,
                              gboolean init, GError **error);
/* Calls every initialized plugin's shutdown() in reverse order; never unloads code. */
void berth_plugins_shutdown(GPtrArray *plugins);
void berth_plugins_free(GPtrArray *plugins);
/* The first initialized plugin of @kind, or NULL. */
BerthPluginHandle *berth_plugins_find_kind(GPtrArray *plugins, BerthPluginKind kind);
const char *berth_plugin_kind_name(BerthPluginKind kind); /* "hypervisor", ... */

/*
 * For SIGHUP: validates @config's [plugin.NAME] section against the plugin's keys and, when its
 * values differ from the current ones, makes them current (config and config_strv; the old
 * tables stay allocated until the handle is freed, as host services may have handed out their
 * strings) and sets *@changed. Does not call the plugin's reload(): the caller does that when
 * the plugin has one (and otherwise logs that a restart is needed). On error nothing changes.
 * Main thread only.
 */
gboolean berth_plugin_reconfigure(BerthPluginHandle *h, const BerthConfig *config,
                                  gboolean *changed, GError **error);

/*
 * Opens plugin @name from @dir exactly as berth_plugins_load() does and applies every check that
 * needs no config and no other plugin: the name, the file's and directory's owner and mode,
 * lt_dlopenext, the entry symbol, the ABI version, the descriptor and ops table sizes, the kind,
 * the name inside (= @name) and the config key table. Returns the descriptor (the code stays
 * loaded) or NULL and @error naming the file. *@path (may be NULL) gets the file's path, also on
 * failure when it is known. Shared with sdk/berth-plugin-check.
 */
const BerthPlugin *berth_plugin_open(const char *dir, const char *name, char **path,
                                     GError **error);

/* Refuses (with an error naming @file) the plugin @file when @path (the file itself, its
 * directory, or a symlink's target) can be written by someone other than root or the running
 * user: group/other write bits, or another owner. */
gboolean berth_plugin_check_owner(const char *file, const char *path, GError **error);

/* The size of @kind's ops table in ABI 1.0 (a smaller table is refused), or 0 for an unknown
 * kind. */
gsize berth_plugin_ops_size_1_0(BerthPluginKind kind);
