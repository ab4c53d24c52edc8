/* berthd.conf: the [agent] and [rpc] key tables, one table-driven validator, modes and reload. */
#include "config.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"

/* Bounds a config file before GKeyFile reads it: berthd.conf is small, a huge one is a mistake. */
#define CONFIG_MAX_BYTES (1024 * 1024)
/* sun_path of struct sockaddr_un holds 108 bytes with the terminating NUL. */
#define SOCKET_PATH_MAX 107
/* Longest value quoted back in an error message. */
#define CONFIG_QUOTE_MAX 80
#define PLUGIN_NAME_MAX 64
#define PLUGIN_GROUP_PREFIX "plugin."

/* Dirs default per mode (see config.h), so they carry no default here: NULL = computed. Help
 * texts name no build-time paths: berthd.conf(5) is generated from them and checked in. */
static const BerthConfigKey agent_keys[] = {
    {"config_dir", BERTH_CONFIG_PATH, NULL, 0, 0,
     "Directory of berthd's configuration. Default: /etc/berth (SYSCONFDIR/berth) as root, "
     "$XDG_CONFIG_HOME/berth (~/.config/berth) as a normal user."},
    {"state_dir", BERTH_CONFIG_PATH, NULL, 0, 0,
     "Directory of persistent state (the plugins' state under plugins/NAME). Default: "
     "/var/lib/berth (LOCALSTATEDIR/lib/berth) as root, $XDG_DATA_HOME/berth "
     "(~/.local/share/berth) as a normal user."},
    {"run_dir", BERTH_CONFIG_PATH, NULL, 0, 0,
     "Directory of runtime state: live domain status, sockets, pid files. Default: "
     "/run/berth as root, $XDG_RUNTIME_DIR/berth as a normal user."},
    {"plugin_dir", BERTH_CONFIG_PATH, NULL, 0, 0,
     "The only directory plugins are loaded from. Default: the directory berthd was built "
     "for, LIBDIR/berth/plugins."},
    {"domains_dir", BERTH_CONFIG_PATH, NULL, 0, 0,
     "Directory of persistent domain definitions (NAME.xml); every file in it is defined at "
     "startup. Default: CONFIG_DIR/domains."},
    {"plugins", BERTH_CONFIG_STRV, "qemu;vfio;virtiofs", 0, 0,
     "Plugins to load, in order, by name (NAME.so in plugin_dir). A plugin that fails to "
     "load is logged and skipped unless it is required."},
    {"required_plugins", BERTH_CONFIG_STRV, "", 0, 0,
     "Plugins, out of plugins, whose failure to load stops berthd at startup."},
    {"log_level", BERTH_CONFIG_STRING, "message", 0, 0,
     "Least severe level logged: error, warning, message, info or debug."},
    {"job_workers", BERTH_CONFIG_INT, "16", 1, 256,
     "Worker threads that run jobs; jobs on different objects run in parallel up to this."},
    {"job_history", BERTH_CONFIG_INT, "256", 0, 65536,
     "Finished jobs remembered for job.list and job.get."},
    {"event_ring", BERTH_CONFIG_INT, "4096", 16, 1048576,
     "Recent events kept so that a client can resume from a sequence number."},
    {"sink_queue", BERTH_CONFIG_INT, "4096", 16, 1048576,
     "Events queued per event-sink plugin before it receives an events-lost marker."},
    {NULL, 0, NULL, 0, 0, NULL},
};

static const BerthConfigKey rpc_keys[] = {
    {"unix_socket", BERTH_CONFIG_PATH, NULL, 0, 0,
     "The read-write JSON-RPC unix socket. Default: RUN_DIR/berthd.sock."},
    {"unix_socket_ro", BERTH_CONFIG_PATH, NULL, 0, 0,
     "The read-only JSON-RPC unix socket: methods that change state are refused on it. "
     "Default: RUN_DIR/berthd-ro.sock."},
    {"unix_socket_mode", BERTH_CONFIG_STRING, "0600", 0, 0,
     "File mode of the read-write socket, in octal."},
    {"unix_socket_ro_mode", BERTH_CONFIG_STRING, "0666", 0, 0,
     "File mode of the read-only socket, in octal."},
    {"max_request_bytes", BERTH_CONFIG_INT, "1048576", 1024, 67108864,
     "Longest JSON-RPC request line accepted; a longer one closes that connection."},
    {"max_clients", BERTH_CONFIG_INT, "128", 1, 65536,
     "Connected clients at most, over all sockets; more are refused."},
    {"max_pending_requests", BERTH_CONFIG_INT, "32", 1, 4096,
     "Requests in flight per client; the connection is not read while the limit is reached."},
    {"client_event_queue", BERTH_CONFIG_INT, "1024", 16, 1048576,
     "Events queued per subscribed client before it receives an events-lost marker."},
    {"tls_listen", BERTH_CONFIG_STRING, "", 0, 0,
     "Address of the JSON-RPC TLS listener (mutual TLS): HOST:PORT, [IPV6]:PORT, or HOST for "
     "port 16515. Empty: no TLS listener. Example: 0.0.0.0:16515."},
    {"tls_cert", BERTH_CONFIG_PATH, NULL, 0, 0,
     "The server certificate (PEM; may hold the chain). Default: CONFIG_DIR/pki/server-cert.pem "
     "(/etc/berth/pki/server-cert.pem as root)."},
    {"tls_key", BERTH_CONFIG_PATH, NULL, 0, 0,
     "The server's private key (PEM). Default: CONFIG_DIR/pki/server-key.pem."},
    {"tls_ca", BERTH_CONFIG_PATH, NULL, 0, 0,
     "CA bundle (PEM) that client certificates must chain to. Default: "
     "CONFIG_DIR/pki/ca-cert.pem."},
    {"tls_crl", BERTH_CONFIG_PATH, NULL, 0, 0,
     "Certificate revocation list (PEM) of that CA. Default: CONFIG_DIR/pki/ca-crl.pem when "
     "that file exists; a file named here must exist."},
    {"tls_priority", BERTH_CONFIG_STRING, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2", 0, 0,
     "gnutls priority string. TLS versions below 1.2 are removed from any string given."},
    {"tls_admin", BERTH_CONFIG_STRV, "", 0, 0,
     "Client identities with every method: glob patterns on the certificate subject DN "
     "(as berthctl pki prints it, e.g. CN=fleet-*,O=Example) or, prefixed with DNS:, email:, "
     "URI: or IP:, on a subjectAltName."},
    {"tls_readonly", BERTH_CONFIG_STRV, "", 0, 0,
     "Client identities with queries and event subscriptions only (same patterns). A client "
     "that matches neither list is refused in the handshake (access_denied)."},
    {"tls_handshake_timeout", BERTH_CONFIG_INT, "10", 1, 300,
     "Seconds a client has to finish its TLS handshake."},
    {"tls_max_unauthenticated", BERTH_CONFIG_INT, "32", 1, 65536,
     "Clients in their TLS handshake at most; more are closed at once."},
    {"tls_idle_timeout", BERTH_CONFIG_INT, "600", 0, 604800,
     "Seconds without a byte either way after which a TLS connection is closed (0: never). "
     "Clients that only wait for events call agent.ping now and then."},
    {"tls_keepalive", BERTH_CONFIG_INT, "30", 0, 3600,
     "TCP keepalive idle time, seconds: a dead TLS peer is dropped after about twice this "
     "(0: no keepalive probes)."},
    {NULL, 0, NULL, 0, 0, NULL},
};

/* The core's groups; a new core group is one line here. */
static const struct {
    const char *name;
    const BerthConfigKey *keys;
} core_groups[] = {
    {"agent", agent_keys},
    {"rpc", rpc_keys},
};

/* Keys that take effect only at a restart (everything else in the core groups applies live). */
static const char *const restart_keys[] = {
    "agent.config_dir", "agent.state_dir", "agent.run_dir", "agent.plugin_dir",
    "agent.domains_dir", "agent.plugins", "agent.required_plugins", "agent.job_workers",
    "agent.job_history", "agent.event_ring", "agent.sink_queue",
    "rpc.unix_socket", "rpc.unix_socket_ro", "rpc.unix_socket_mode", "rpc.unix_socket_ro_mode",
    "rpc.tls_listen",
    NULL,
};

static const char *const log_levels[] = {"error", "warning", "message", "info", "debug", NULL};

const BerthConfigKey *
berth_config_agent_keys(void)
{
    return agent_keys;
}

const BerthConfigKey *
berth_config_rpc_keys(void)
{
    return rpc_keys;
}

const char *
berth_config_type_name(BerthConfigType type)
{
    switch (type) {
    case BERTH_CONFIG_STRING:
        return "string";
    case BERTH_CONFIG_INT:
        return "integer";
    case BERTH_CONFIG_BOOL:
        return "boolean";
    case BERTH_CONFIG_PATH:
        return "path";
    case BERTH_CONFIG_STRV:
        return "list";
    default:
        return "unknown";
    }
}

gboolean
berth_config_plugin_name_valid(const char *name)
{
    size_t len = name ? strlen(name) : 0;

    if (len == 0 || len > PLUGIN_NAME_MAX) {
        return FALSE;
    }
    for (const char *p = name; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
            return FALSE;
        }
    }
    return TRUE;
}

static gboolean
key_name_valid(const char *key)
{
    if (!key || !*key || strlen(key) > PLUGIN_NAME_MAX) {
        return FALSE;
    }
    for (const char *p = key; *p; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_')) {
            return FALSE;
        }
    }
    return TRUE;
}

/* A user string for a message: bounded, valid UTF-8, control characters escaped. */
static char *
quote_value(const char *value)
{
    g_autofree char *valid = g_utf8_make_valid(value ? value : "", -1);
    GString *out = g_string_new(NULL);
    glong n = 0;

    for (const char *p = valid; *p; p = g_utf8_next_char(p), n++) {
        if (n == CONFIG_QUOTE_MAX) {
            g_string_append(out, "...");
            break;
        }
        if ((guchar)*p < 0x20 || *p == 0x7f) {
            g_string_append_printf(out, "\\x%02x", (guchar)*p);
        } else {
            g_string_append_len(out, p, g_utf8_next_char(p) - p);
        }
    }
    return g_string_free(out, FALSE);
}

static gboolean
config_fail(GError **error, const char *label, const char *group, const char *key,
            const char *fmt, ...) G_GNUC_PRINTF(5, 6);

/* Sets @error to "LABEL: [GROUP] KEY: MESSAGE" and returns FALSE. */
static gboolean
config_fail(GError **error, const char *label, const char *group, const char *key,
            const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "%s: [%s] %s: %s", label, group,
                key, msg);
    return FALSE;
}

static gboolean value_fail(GError **error, const char *where, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

/* Sets @error to "WHERE: MESSAGE" and returns FALSE. */
static gboolean
value_fail(GError **error, const char *where, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "%s: %s", where, msg);
    return FALSE;
}

/*
 * Parses the value of @k in @group of @kf (present there) as its type and returns its canonical
 * text: strings and paths unescaped, integers in decimal, booleans "true"/"false", lists as
 * written. Every core and plugin key goes through here, defaults too.
 */
static char *
value_parse(GKeyFile *kf, const char *group, const BerthConfigKey *k, const char *where,
            GError **error)
{
    g_autofree char *raw = g_key_file_get_value(kf, group, k->key, NULL);
    g_autofree char *shown = quote_value(raw ? raw : "");
    g_autoptr(GError) local = NULL;

    switch (k->type) {
    case BERTH_CONFIG_STRING:
    case BERTH_CONFIG_PATH: {
        g_autofree char *s = g_key_file_get_string(kf, group, k->key, &local);
        if (!s) {
            value_fail(error, where, "'%s' has an invalid escape sequence", shown);
            return NULL;
        }
        if (k->type == BERTH_CONFIG_PATH && !g_path_is_absolute(s)) {
            value_fail(error, where, "'%s' is not an absolute path", shown);
            return NULL;
        }
        return g_steal_pointer(&s);
    }
    case BERTH_CONFIG_INT: {
        g_autofree char *s = g_strstrip(g_strdup(raw ? raw : ""));
        gint64 v = 0;
        if (!g_ascii_string_to_signed(s, 10, G_MININT64, G_MAXINT64, &v, NULL)) {
            value_fail(error, where, "'%s' is not an integer", shown);
            return NULL;
        }
        if (v < k->min || v > k->max) {
            value_fail(error, where,
                       "'%s' is out of range %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT, shown,
                       k->min, k->max);
            return NULL;
        }
        return g_strdup_printf("%" G_GINT64_FORMAT, v);
    }
    case BERTH_CONFIG_BOOL: {
        gboolean b = g_key_file_get_boolean(kf, group, k->key, &local);
        if (local) {
            value_fail(error, where, "'%s' is not a boolean (true or false)", shown);
            return NULL;
        }
        return g_strdup(b ? "true" : "false");
    }
    case BERTH_CONFIG_STRV: {
        g_auto(GStrv) list = g_key_file_get_string_list(kf, group, k->key, NULL, &local);
        if (!list) {
            value_fail(error, where, "'%s' has an invalid escape sequence", shown);
            return NULL;
        }
        return g_strdup(raw);
    }
    default:
        value_fail(error, where, "the key has an unknown type %d", (int)k->type);
        return NULL;
    }
}

/* Parses a default (as it would be written in the file) through value_parse(). */
static char *
default_parse(const char *group, const BerthConfigKey *k, const char *where, GError **error)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();

    g_key_file_set_value(kf, group, k->key, k->default_value);
    return value_parse(kf, group, k, where, error);
}

/*
 * The one validator of a group against a key table (NULL table = no keys): unknown keys, wrong
 * types and out-of-range values are errors. Fills @values with key -> canonical text for keys
 * that are set or have a default. The group may be absent from @kf: then all defaults.
 */
static gboolean
group_validate(GKeyFile *kf, const char *label, const char *group, const BerthConfigKey *keys,
               GHashTable *values, GError **error)
{
    g_auto(GStrv) present = NULL;

    if (kf && g_key_file_has_group(kf, group)) {
        present = g_key_file_get_keys(kf, group, NULL, NULL);
    }
    for (guint i = 0; present && present[i]; i++) {
        gboolean known = FALSE;
        for (const BerthConfigKey *k = keys; k && k->key; k++) {
            if (strcmp(k->key, present[i]) == 0) {
                known = TRUE;
                break;
            }
        }
        if (!known) {
            g_autofree char *shown = quote_value(present[i]);
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "%s: [%s] %s: unknown key", label, group, shown);
            return FALSE;
        }
    }
    for (const BerthConfigKey *k = keys; k && k->key; k++) {
        char *value = NULL;
        g_autofree char *where = g_strdup_printf("%s: [%s] %s", label, group, k->key);
        if (present && g_strv_contains((const char *const *)present, k->key)) {
            value = value_parse(kf, group, k, where, error);
        } else if (k->default_value) {
            g_autofree char *dwhere = g_strconcat(where, " (default)", NULL);
            value = default_parse(group, k, dwhere, error);
        } else {
            continue;
        }
        if (!value) {
            return FALSE;
        }
        g_hash_table_replace(values, g_strdup(k->key), value);
    }
    return TRUE;
}

gboolean
berth_config_keys_check(const BerthConfigKey *keys, GError **error)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

    for (const BerthConfigKey *k = keys; k && k->key; k++) {
        if (!key_name_valid(k->key)) {
            g_autofree char *shown = quote_value(k->key);
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "config key '%s' is not a valid key name ([a-z0-9_]+)", shown);
            return FALSE;
        }
        if (!g_hash_table_add(seen, (gpointer)k->key)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "config key '%s' is declared twice", k->key);
            return FALSE;
        }
        if ((guint)k->type >= BERTH_CONFIG_TYPE_LAST) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "config key '%s' has an unknown type %d", k->key, (int)k->type);
            return FALSE;
        }
        if (k->type == BERTH_CONFIG_INT && k->min > k->max) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "config key '%s' has min %" G_GINT64_FORMAT " above max %"
                        G_GINT64_FORMAT, k->key, k->min, k->max);
            return FALSE;
        }
        if (k->default_value) {
            g_autofree char *where = g_strdup_printf("config key '%s' (default)", k->key);
            g_autofree char *v = default_parse("plugin", k, where, error);
            if (!v) {
                return FALSE;
            }
        }
    }
    return TRUE;
}

char **
berth_config_split_strv(const char *value)
{
    g_autoptr(GKeyFile) kf = g_key_file_new();
    char **list;

    if (!value) {
        return g_new0(char *, 1);
    }
    g_key_file_set_value(kf, "x", "x", value);
    list = g_key_file_get_string_list(kf, "x", "x", NULL, NULL);
    return list ? list : g_new0(char *, 1);
}

static gboolean
parse_mode(const char *text, guint *mode)
{
    guint64 v = 0;

    if (!text || strlen(text) < 3 || strlen(text) > 5) {
        return FALSE;
    }
    if (!g_ascii_string_to_unsigned(text, 8, 0, 07777, &v, NULL)) {
        return FALSE;
    }
    *mode = (guint)v;
    return TRUE;
}

static guint
value_uint(GHashTable *values, const char *key)
{
    /* Validated against the table already: in range for a guint. */
    return (guint)g_ascii_strtoull(g_hash_table_lookup(values, key), NULL, 10);
}

static char *
value_dup(GHashTable *values, const char *key, const char *dir, const char *file)
{
    const char *v = g_hash_table_lookup(values, key);

    if (v) {
        return g_strdup(v);
    }
    return g_build_filename(dir, file, NULL);
}

/* The [rpc] tls_* keys; file defaults live in CONFIG_DIR/pki. */
static void
tls_fill(BerthConfig *config, GHashTable *rpc)
{
    g_autofree char *pki = g_build_filename(config->config_dir, "pki", NULL);
    const char *listen = g_hash_table_lookup(rpc, "tls_listen");
    const char *crl = g_hash_table_lookup(rpc, "tls_crl");

    config->tls_listen = listen && *listen ? g_strdup(listen) : NULL;
    config->tls.cert = value_dup(rpc, "tls_cert", pki, "server-cert.pem");
    config->tls.key = value_dup(rpc, "tls_key", pki, "server-key.pem");
    config->tls.ca = value_dup(rpc, "tls_ca", pki, "ca-cert.pem");
    if (crl) {
        config->tls.crl = g_strdup(crl);
    } else {
        g_autofree char *def = g_build_filename(pki, "ca-crl.pem", NULL);

        config->tls.crl = g_file_test(def, G_FILE_TEST_EXISTS) ? g_steal_pointer(&def) : NULL;
    }
    config->tls.priority = g_strdup(g_hash_table_lookup(rpc, "tls_priority"));
    config->tls.admin = berth_config_split_strv(g_hash_table_lookup(rpc, "tls_admin"));
    config->tls.readonly = berth_config_split_strv(g_hash_table_lookup(rpc, "tls_readonly"));
    config->tls.handshake_timeout_s = value_uint(rpc, "tls_handshake_timeout");
    config->tls.max_unauthenticated = value_uint(rpc, "tls_max_unauthenticated");
    config->tls.idle_timeout_s = value_uint(rpc, "tls_idle_timeout");
    config->tls.keepalive_s = value_uint(rpc, "tls_keepalive");
}

/* A TLS identity pattern: a SAN pattern (DNS:, email:, URI:, IP:) or a DN pattern, which has
 * at least one ATTRIBUTE=value (or is "*"). */
static gboolean
tls_pattern_valid(const char *pattern)
{
    static const char *const prefixes[] = {"DNS:", "email:", "URI:", "IP:"};

    for (guint i = 0; i < G_N_ELEMENTS(prefixes); i++) {
        if (g_ascii_strncasecmp(pattern, prefixes[i], strlen(prefixes[i])) == 0) {
            return pattern[strlen(prefixes[i])] != '\0';
        }
    }
    return strcmp(pattern, "*") == 0 || strchr(pattern, '=') != NULL;
}

static gboolean
tls_check(BerthConfig *config, const char *label, GError **error)
{
    char **lists[] = {config->tls.admin, config->tls.readonly};
    const char *keys[] = {"tls_admin", "tls_readonly"};
    gnutls_priority_t prio = NULL;
    const char *err_pos = NULL;

    for (guint i = 0; i < G_N_ELEMENTS(lists); i++) {
        for (guint j = 0; lists[i][j]; j++) {
            if (!tls_pattern_valid(lists[i][j])) {
                g_autofree char *shown = quote_value(lists[i][j]);
                return config_fail(error, label, "rpc", keys[i],
                                   "'%s' is neither a subject DN pattern (CN=...) nor a DNS:, "
                                   "email:, URI: or IP: pattern", shown);
            }
        }
    }
    if (gnutls_priority_init(&prio, config->tls.priority, &err_pos) < 0) {
        g_autofree char *shown = quote_value(config->tls.priority);
        return config_fail(error, label, "rpc", "tls_priority",
                           "'%s' is not a valid gnutls priority string (at '%s')", shown,
                           err_pos ? err_pos : "");
    }
    gnutls_priority_deinit(prio);
    return TRUE;
}

/* The [agent] checks a type alone cannot express. */
static gboolean
agent_check(BerthConfig *config, const char *label, GHashTable *values, GError **error)
{
    const char *level = g_hash_table_lookup(values, "log_level");
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);

    if (!g_strv_contains(log_levels, level)) {
        g_autofree char *shown = quote_value(level);
        return config_fail(error, label, "agent", "log_level",
                           "'%s' is not one of error, warning, message, info, debug", shown);
    }
    for (guint i = 0; config->plugins[i]; i++) {
        g_autofree char *shown = quote_value(config->plugins[i]);
        if (!berth_config_plugin_name_valid(config->plugins[i])) {
            return config_fail(error, label, "agent", "plugins",
                               "'%s' is not a plugin name ([a-z0-9_-]+, at most 64 characters)",
                               shown);
        }
        if (!g_hash_table_add(seen, config->plugins[i])) {
            return config_fail(error, label, "agent", "plugins", "'%s' is listed twice", shown);
        }
    }
    for (guint i = 0; config->required[i]; i++) {
        if (!g_strv_contains((const char *const *)config->plugins, config->required[i])) {
            g_autofree char *shown = quote_value(config->required[i]);
            return config_fail(error, label, "agent", "required_plugins",
                               "'%s' is not listed in [agent] plugins", shown);
        }
    }
    return TRUE;
}

static gboolean
rpc_check(BerthConfig *config, const char *label, GHashTable *values, GError **error)
{
    static const char *const mode_keys[] = {"unix_socket_mode", "unix_socket_ro_mode"};
    guint *modes[] = {&config->socket_mode, &config->socket_ro_mode};

    for (guint i = 0; i < G_N_ELEMENTS(mode_keys); i++) {
        const char *text = g_hash_table_lookup(values, mode_keys[i]);
        if (!parse_mode(text, modes[i])) {
            g_autofree char *shown = quote_value(text);
            return config_fail(error, label, "rpc", mode_keys[i],
                               "'%s' is not an octal file mode such as 0600", shown);
        }
    }
    if (strlen(config->socket) > SOCKET_PATH_MAX) {
        return config_fail(error, label, "rpc", "unix_socket",
                           "'%s' is longer than %d bytes, the limit of a unix socket path",
                           config->socket, SOCKET_PATH_MAX);
    }
    if (strlen(config->socket_ro) > SOCKET_PATH_MAX) {
        return config_fail(error, label, "rpc", "unix_socket_ro",
                           "'%s' is longer than %d bytes, the limit of a unix socket path",
                           config->socket_ro, SOCKET_PATH_MAX);
    }
    if (g_strcmp0(config->socket, config->socket_ro) == 0) {
        return config_fail(error, label, "rpc", "unix_socket_ro",
                           "'%s' is the read-write socket too", config->socket);
    }
    if (!tls_check(config, label, error)) {
        return FALSE;
    }
    if (config->tls_listen) {
        g_autofree char *host = NULL;
        g_autoptr(GError) local = NULL;
        guint16 port;

        if (!berth_tls_parse_address(config->tls_listen, &host, &port, &local)) {
            return config_fail(error, label, "rpc", "tls_listen", "%s", local->message);
        }
        if (!config->tls.admin[0] && !config->tls.readonly[0]) {
            return config_fail(error, label, "rpc", "tls_admin",
                               "tls_admin and tls_readonly are both empty: the TLS listener "
                               "would refuse every client");
        }
    }
    return TRUE;
}

/* Checks that every group is a core group or a [plugin.NAME] of a listed plugin. */
static gboolean
groups_check(BerthConfig *config, const char *label, GError **error)
{
    g_auto(GStrv) groups = g_key_file_get_groups(config->keyfile, NULL);

    for (guint i = 0; groups[i]; i++) {
        const char *g = groups[i];
        gboolean core = FALSE;
        g_autofree char *shown = quote_value(g);

        for (guint j = 0; j < G_N_ELEMENTS(core_groups); j++) {
            core = core || strcmp(core_groups[j].name, g) == 0;
        }
        if (core) {
            continue;
        }
        if (!g_str_has_prefix(g, PLUGIN_GROUP_PREFIX)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "%s: unknown group [%s]; the groups are [agent], [rpc] and "
                        "[plugin.NAME]", label, shown);
            return FALSE;
        }
        const char *name = g + strlen(PLUGIN_GROUP_PREFIX);
        if (!berth_config_plugin_name_valid(name)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "%s: group [%s] does not name a plugin ([a-z0-9_-]+)", label, shown);
            return FALSE;
        }
        if (!g_strv_contains((const char *const *)config->plugins, name)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "%s: group [%s] configures plugin '%s', which [agent] plugins does not "
                        "list", label, shown, name);
            return FALSE;
        }
    }
    return TRUE;
}

/* Validates @config->keyfile and fills @config; @label names the file in messages. */
static gboolean
config_fill(BerthConfig *config, const char *label, GError **error)
{
    g_autoptr(GHashTable) agent = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autoptr(GHashTable) rpc = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    const char *plugins;
    g_autofree char *user_cfg = g_build_filename(g_get_user_config_dir(), "berth", NULL);
    g_autofree char *user_data = g_build_filename(g_get_user_data_dir(), "berth", NULL);
    g_autofree char *user_run = g_build_filename(g_get_user_runtime_dir(), "berth", NULL);
    gboolean p = config->privileged;

    if (!group_validate(config->keyfile, label, "agent", agent_keys, agent, error) ||
        !group_validate(config->keyfile, label, "rpc", rpc_keys, rpc, error)) {
        return FALSE;
    }

    config->config_dir = value_dup(agent, "config_dir", p ? BERTH_SYSCONF_DIR : user_cfg, NULL);
    config->state_dir = value_dup(agent, "state_dir", p ? BERTH_LOCALSTATE_DIR : user_data, NULL);
    config->run_dir = value_dup(agent, "run_dir", p ? BERTH_RUN_DIR : user_run, NULL);
    config->plugin_dir = value_dup(agent, "plugin_dir", BERTH_PLUGIN_DIR, NULL);
    config->domains_dir = value_dup(agent, "domains_dir", config->config_dir, "domains");
    plugins = g_hash_table_lookup(agent, "plugins");
    config->plugins = berth_config_split_strv(plugins);
    config->required = berth_config_split_strv(g_hash_table_lookup(agent, "required_plugins"));
    config->log_level = g_strdup(g_hash_table_lookup(agent, "log_level"));
    config->workers = value_uint(agent, "job_workers");
    config->job_history = value_uint(agent, "job_history");
    config->event_ring = value_uint(agent, "event_ring");
    config->sink_queue = value_uint(agent, "sink_queue");

    config->socket = value_dup(rpc, "unix_socket", config->run_dir, "berthd.sock");
    config->socket_ro = value_dup(rpc, "unix_socket_ro", config->run_dir, "berthd-ro.sock");
    config->max_request = g_ascii_strtoull(g_hash_table_lookup(rpc, "max_request_bytes"), NULL, 10);
    config->max_clients = value_uint(rpc, "max_clients");
    config->max_pending = value_uint(rpc, "max_pending_requests");
    config->event_queue = value_uint(rpc, "client_event_queue");
    tls_fill(config, rpc);

    if (!agent_check(config, label, agent, error) || !rpc_check(config, label, rpc, error) ||
        !groups_check(config, label, error)) {
        return FALSE;
    }

    /* The effective value of every core key, computed defaults included, for diffs. */
    g_hash_table_replace(agent, g_strdup("config_dir"), g_strdup(config->config_dir));
    g_hash_table_replace(agent, g_strdup("state_dir"), g_strdup(config->state_dir));
    g_hash_table_replace(agent, g_strdup("run_dir"), g_strdup(config->run_dir));
    g_hash_table_replace(agent, g_strdup("plugin_dir"), g_strdup(config->plugin_dir));
    g_hash_table_replace(agent, g_strdup("domains_dir"), g_strdup(config->domains_dir));
    g_hash_table_replace(rpc, g_strdup("unix_socket"), g_strdup(config->socket));
    g_hash_table_replace(rpc, g_strdup("unix_socket_ro"), g_strdup(config->socket_ro));
    config->values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    GHashTable *groups[] = {agent, rpc};
    const char *names[] = {"agent", "rpc"};
    for (guint i = 0; i < G_N_ELEMENTS(groups); i++) {
        GHashTableIter it;
        gpointer k, v;
        g_hash_table_iter_init(&it, groups[i]);
        while (g_hash_table_iter_next(&it, &k, &v)) {
            g_hash_table_replace(config->values, g_strdup_printf("%s.%s", names[i], (char *)k),
                                 g_strdup(v));
        }
    }
    return TRUE;
}

static BerthConfig *
config_from_data(const char *data, gsize len, const char *label, gboolean privileged,
                 GError **error)
{
    g_autoptr(BerthConfig) config = g_new0(BerthConfig, 1);
    g_autoptr(GError) local = NULL;

    config->privileged = privileged;
    config->keyfile = g_key_file_new();
    if (len > CONFIG_MAX_BYTES) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "%s: the file is larger than %d bytes", label, CONFIG_MAX_BYTES);
        return NULL;
    }
    /* Keep "key[locale]" entries, which GKeyFile would otherwise drop silently: they are
     * unknown keys to us. */
    if (data && !g_key_file_load_from_data(config->keyfile, data, len,
                                           G_KEY_FILE_KEEP_TRANSLATIONS, &local)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "%s: %s", label,
                    local->message);
        return NULL;
    }
    if (!config_fill(config, label, error)) {
        return NULL;
    }
    return g_steal_pointer(&config);
}

BerthConfig *
berth_config_load_data(const char *data, const char *label, gboolean privileged, GError **error)
{
    return config_from_data(data, data ? strlen(data) : 0, label ? label : "berthd.conf",
                            privileged, error);
}

/* Reads a regular file of at most CONFIG_MAX_BYTES, checked before reading (not /dev/zero). */
static gboolean
read_bounded(const char *path, char **data, gsize *len, GError **error)
{
    struct stat st;

    if (stat(path, &st) < 0) {
        int err = errno;
        g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(err), "%s", g_strerror(err));
        return FALSE;
    }
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_INVAL, "it is not a regular file");
        return FALSE;
    }
    if (st.st_size > CONFIG_MAX_BYTES) {
        g_set_error(error, G_FILE_ERROR, G_FILE_ERROR_FAILED, "it is larger than %d bytes",
                    CONFIG_MAX_BYTES);
        return FALSE;
    }
    return g_file_get_contents(path, data, len, error);
}

BerthConfig *
berth_config_load_as(const char *path, gboolean privileged, GError **error)
{
    g_autofree char *default_path = NULL;
    g_autofree char *data = NULL;
    g_autofree char *label = NULL;
    gsize len = 0;
    g_autoptr(GError) local = NULL;
    BerthConfig *config;

    if (!path) {
        g_autofree char *dir = privileged
            ? g_strdup(BERTH_SYSCONF_DIR)
            : g_build_filename(g_get_user_config_dir(), "berth", NULL);
        default_path = g_build_filename(dir, "berthd.conf", NULL);
    }
    label = g_path_get_basename(path ? path : default_path);
    if (!read_bounded(path ? path : default_path, &data, &len, &local)) {
        /* Only the default file may be missing: a file the user named must exist. */
        if (!path && g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            return config_from_data(NULL, 0, label, privileged, error);
        }
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "cannot read config file '%s': %s", path ? path : default_path,
                    local->message);
        return NULL;
    }
    config = config_from_data(data, len, label, privileged, error);
    if (config) {
        config->path = g_strdup(path ? path : default_path);
    }
    return config;
}

BerthConfig *
berth_config_load(const char *path, GError **error)
{
    return berth_config_load_as(path, geteuid() == 0, error);
}

void
berth_config_free(BerthConfig *config)
{
    if (!config) {
        return;
    }
    g_free(config->path);
    g_free(config->config_dir);
    g_free(config->state_dir);
    g_free(config->run_dir);
    g_free(config->plugin_dir);
    g_free(config->domains_dir);
    g_strfreev(config->plugins);
    g_strfreev(config->required);
    g_free(config->log_level);
    g_free(config->socket);
    g_free(config->socket_ro);
    g_free(config->tls_listen);
    berth_tls_config_clear(&config->tls);
    if (config->keyfile) {
        g_key_file_unref(config->keyfile);
    }
    if (config->values) {
        g_hash_table_unref(config->values);
    }
    g_free(config);
}

GHashTable *
berth_config_plugin_section(const BerthConfig *config, const char *plugin_name,
                            const BerthConfigKey *keys, GError **error)
{
    g_autoptr(GHashTable) values =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    g_autofree char *group = g_strconcat(PLUGIN_GROUP_PREFIX, plugin_name, NULL);
    g_autofree char *label = g_path_get_basename(config->path ? config->path : "berthd.conf");

    if (!group_validate(config->keyfile, label, group, keys, values, error)) {
        return NULL;
    }
    return g_steal_pointer(&values);
}

gboolean
berth_config_key_needs_restart(const char *group, const char *key)
{
    g_autofree char *id = g_strdup_printf("%s.%s", group, key);

    return g_strv_contains(restart_keys, id);
}

gboolean
berth_config_diff(const BerthConfig *old, const BerthConfig *new_config,
                  GPtrArray *needs_restart)
{
    gboolean differs = FALSE;

    for (guint i = 0; i < G_N_ELEMENTS(core_groups); i++) {
        for (const BerthConfigKey *k = core_groups[i].keys; k->key; k++) {
            g_autofree char *id = g_strdup_printf("%s.%s", core_groups[i].name, k->key);
            if (g_strcmp0(g_hash_table_lookup(old->values, id),
                          g_hash_table_lookup(new_config->values, id)) == 0) {
                continue;
            }
            differs = TRUE;
            if (needs_restart && berth_config_key_needs_restart(core_groups[i].name, k->key)) {
                g_ptr_array_add(needs_restart,
                                g_strdup_printf("[%s] %s", core_groups[i].name, k->key));
            }
        }
    }
    for (guint i = 0; new_config->plugins[i]; i++) {
        differs = berth_config_plugin_changed(old, new_config, new_config->plugins[i], NULL) ||
                  differs;
    }
    return differs;
}

/* Adds to @out the keys of @group in @a whose value in @b differs or is missing. */
static gboolean
group_compare(GKeyFile *a, GKeyFile *b, const char *group, GHashTable *out)
{
    g_auto(GStrv) keys = g_key_file_get_keys(a, group, NULL, NULL);
    gboolean differs = FALSE;

    for (guint i = 0; keys && keys[i]; i++) {
        g_autofree char *va = g_key_file_get_value(a, group, keys[i], NULL);
        g_autofree char *vb = g_key_file_get_value(b, group, keys[i], NULL);
        if (g_strcmp0(va, vb) != 0) {
            differs = TRUE;
            g_hash_table_add(out, g_strdup(keys[i]));
        }
    }
    return differs;
}

static gint
strp_compare(gconstpointer a, gconstpointer b, gpointer data)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

gboolean
berth_config_plugin_changed(const BerthConfig *old, const BerthConfig *new_config,
                            const char *plugin_name, GPtrArray *changed)
{
    g_autofree char *group = g_strconcat(PLUGIN_GROUP_PREFIX, plugin_name, NULL);
    g_autoptr(GHashTable) keys = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autofree const char **sorted = NULL;
    gboolean differs;

    differs = group_compare(old->keyfile, new_config->keyfile, group, keys);
    differs = group_compare(new_config->keyfile, old->keyfile, group, keys) || differs;
    if (changed) {
        sorted = (const char **)g_hash_table_get_keys_as_array(keys, NULL);
        g_qsort_with_data(sorted, g_hash_table_size(keys), sizeof(char *), strp_compare, NULL);
        for (guint i = 0; sorted[i]; i++) {
            g_ptr_array_add(changed, g_strdup_printf("[%s] %s", group, sorted[i]));
        }
    }
    return differs;
}
