/* berthd.conf: loading, validation against the key tables, and the directories berthd uses. */
#pragma once

#include <berth/host.h>

#include "rpc/tls.h"

/*
 * The validated [agent] and [rpc] sections, with defaults applied. Directories follow the mode
 * berthd runs in: as root /etc/berth, /var/lib/berth, /run/berth; as a normal user the XDG
 * config, data and runtime dirs + "/berth" (like libvirt's session mode).
 */
typedef struct {
    char *path;          /* the file loaded, or NULL when none exists (all defaults) */
    gboolean privileged; /* running as root */

    /* [agent] */
    char *config_dir;    /* config_dir: /etc/berth | $XDG_CONFIG_HOME/berth */
    char *state_dir;     /* state_dir: /var/lib/berth | $XDG_DATA_HOME/berth */
    char *run_dir;       /* run_dir: /run/berth | $XDG_RUNTIME_DIR/berth */
    char *plugin_dir;    /* plugin_dir: BERTH_PLUGIN_DIR */
    char *domains_dir;   /* domains_dir: CONFIG_DIR/domains (persistent definitions) */
    char **plugins;      /* plugins: names to load, in order (NULL-terminated) */
    char **required;     /* required_plugins: subset whose failure stops startup */
    char *log_level;     /* log_level: error|warning|message|info|debug */
    guint workers;       /* job_workers: 1..256, default 16 */
    guint job_history;   /* job_history: finished jobs remembered, default 256 */
    guint event_ring;    /* event_ring: events kept for resume, default 4096 */
    guint sink_queue;    /* sink_queue: per sink plugin queue length, default 4096 */

    /* [rpc] */
    char *socket;        /* unix_socket: RUN_DIR/berthd.sock */
    char *socket_ro;     /* unix_socket_ro: RUN_DIR/berthd-ro.sock */
    guint socket_mode;   /* unix_socket_mode: octal string, default "0600" (ro: 0666) */
    guint socket_ro_mode;
    guint64 max_request; /* max_request_bytes: 1 KiB..64 MiB, default 1 MiB */
    guint max_clients;   /* max_clients: default 128 */
    guint max_pending;   /* max_pending_requests: per client, default 32 */
    guint event_queue;   /* client_event_queue: per subscribed client, default 1024 */
    char *tls_listen;    /* tls_listen: HOST:PORT, NULL = no TLS listener */
    BerthTlsConfig tls;  /* tls_*: files (CONFIG_DIR/pki), priority, identities, limits */

    GKeyFile *keyfile;   /* the parsed file, for [plugin.NAME] sections */
    GHashTable *values;  /* "agent.KEY"/"rpc.KEY" -> effective value as text (diffs, dumps) */
} BerthConfig;

/* Loads and validates @path (NULL: CONFIG_DIR/berthd.conf of the current mode, which may be
 * missing: then all defaults). Unknown groups or keys, wrong types and out-of-range values are
 * errors naming the group and key: "berthd.conf: [rpc] max_clients: '0' is out of range
 * 1..65536".
 * A [plugin.NAME] group for a plugin not in `plugins` is an error too. */
BerthConfig *berth_config_load(const char *path, GError **error);
void berth_config_free(BerthConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthConfig, berth_config_free)

/* Validates the [plugin.NAME] section against @keys (NULL-terminated table; NULL = no keys) and
 * returns key -> value (strings as written, defaults applied; BERTH_CONFIG_STRV values joined
 * by ';'). Errors name the group and key. */
GHashTable *berth_config_plugin_section(const BerthConfig *config, const char *plugin_name,
                                        const BerthConfigKey *keys, GError **error);

/* The reference of every [agent] and [rpc] key (for berthd.conf(5) and --dump-config-keys). */
const BerthConfigKey *berth_config_agent_keys(void);
const BerthConfigKey *berth_config_rpc_keys(void);

/* Like berth_config_load() but for the given mode instead of the effective uid's (root:
 * @privileged TRUE); the default file is the mode's. For tests and --config checks. */
BerthConfig *berth_config_load_as(const char *path, gboolean privileged, GError **error);

/* Parses @data as the contents of a file named @label (for messages; NULL: "berthd.conf"),
 * with @privileged's defaults. config->path stays NULL. For tests. */
BerthConfig *berth_config_load_data(const char *data, const char *label, gboolean privileged,
                                    GError **error);

/* Checks a key table itself (a plugin's, at load time, and berth-plugin-check): key names
 * [a-z0-9_]+ and unique, a known type, min <= max, and a default that parses as its type and
 * lies within range. Errors name the key. */
gboolean berth_config_keys_check(const BerthConfigKey *keys, GError **error);

/* The name of a key type: "string", "integer", "boolean", "path", "list". */
const char *berth_config_type_name(BerthConfigType type);

/* Splits a BERTH_CONFIG_STRV value as berth_config_plugin_section() returns it (GKeyFile list
 * syntax, "a;b;c", with "\;" for a literal ';') into a NULL-terminated array (g_strfreev). */
char **berth_config_split_strv(const char *value);

/*
 * For SIGHUP: compares the [agent] and [rpc] keys and the [plugin.NAME] sections of @old and
 * @new_config. Appends to @needs_restart (char *, g_free) a "[group] key" string for each changed
 * key that only takes effect at a restart (dirs, sockets, plugins, workers); log_level and the
 * limits apply live and are not listed. Changed plugin sections are not listed either: whether
 * they apply live depends on the plugin's reload op (see berth_config_plugin_changed()).
 * Returns TRUE when anything at all differs.
 */
gboolean berth_config_diff(const BerthConfig *old, const BerthConfig *new_config,
                           GPtrArray *needs_restart);

/* Appends "[plugin.NAME] key" (char *, g_free) to @changed (may be NULL) for every key of
 * the section that differs between @old and @new_config, as written (defaults are not
 * applied); returns TRUE when any does. */
gboolean berth_config_plugin_changed(const BerthConfig *old, const BerthConfig *new_config,
                                     const char *plugin_name, GPtrArray *changed);

/* TRUE when a change of core key @key of [@group] takes effect only at a restart (used by
 * berth_config_diff and the berthd.conf(5) generator). */
gboolean berth_config_key_needs_restart(const char *group, const char *key);

/* TRUE when @name is a valid plugin name: [a-z0-9_-]+, at most 64 characters. */
gboolean berth_config_plugin_name_valid(const char *name);
