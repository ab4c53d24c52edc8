/* Tests of berthd.conf: defaults per mode, every key's errors, plugin sections, reload diffs. */
#include <glib/gstdio.h>
#include <string.h>

#include "build-config.h"
#include "config.h"

static BerthConfig *
load_ok(const char *data, gboolean privileged)
{
    g_autoptr(GError) error = NULL;
    BerthConfig *config = berth_config_load_data(data, NULL, privileged, &error);

    g_assert_no_error(error);
    g_assert_nonnull(config);
    return config;
}

/* Loads @data and expects an invalid-argument error with exactly @message. */
static void
assert_load_error(const char *data, const char *message)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthConfig) config = berth_config_load_data(data, NULL, TRUE, &error);

    g_assert_null(config);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_cmpstr(error->message, ==, message);
}

static void
test_defaults_root(void)
{
    g_autoptr(BerthConfig) c = load_ok(NULL, TRUE);

    g_assert_null(c->path);
    g_assert_true(c->privileged);
    g_assert_cmpstr(c->config_dir, ==, BERTH_SYSCONF_DIR);
    g_assert_cmpstr(c->state_dir, ==, BERTH_LOCALSTATE_DIR);
    g_assert_cmpstr(c->run_dir, ==, BERTH_RUN_DIR);
    g_assert_cmpstr(c->plugin_dir, ==, BERTH_PLUGIN_DIR);
    g_assert_cmpstr(c->domains_dir, ==, BERTH_SYSCONF_DIR "/domains");
    g_assert_cmpuint(g_strv_length(c->plugins), ==, 3);
    g_assert_cmpstr(c->plugins[0], ==, "qemu");
    g_assert_cmpstr(c->plugins[1], ==, "vfio");
    g_assert_cmpstr(c->plugins[2], ==, "virtiofs");
    g_assert_cmpuint(g_strv_length(c->required), ==, 0);
    g_assert_cmpstr(c->log_level, ==, "message");
    g_assert_cmpuint(c->workers, ==, 16);
    g_assert_cmpuint(c->job_history, ==, 256);
    g_assert_cmpuint(c->event_ring, ==, 4096);
    g_assert_cmpuint(c->sink_queue, ==, 4096);
    g_assert_cmpstr(c->socket, ==, BERTH_RUN_DIR "/berthd.sock");
    g_assert_cmpstr(c->socket_ro, ==, BERTH_RUN_DIR "/berthd-ro.sock");
    g_assert_cmpuint(c->socket_mode, ==, 0600);
    g_assert_cmpuint(c->socket_ro_mode, ==, 0666);
    g_assert_cmpuint(c->max_request, ==, 1024 * 1024);
    g_assert_cmpuint(c->max_clients, ==, 128);
    g_assert_cmpuint(c->max_pending, ==, 32);
    g_assert_cmpuint(c->event_queue, ==, 1024);
    g_assert_nonnull(c->keyfile);
}

static void
test_defaults_user(void)
{
    g_autoptr(BerthConfig) c = load_ok("", FALSE);
    g_autofree char *cfg = g_build_filename(g_get_user_config_dir(), "berth", NULL);
    g_autofree char *data = g_build_filename(g_get_user_data_dir(), "berth", NULL);
    g_autofree char *run = g_build_filename(g_get_user_runtime_dir(), "berth", NULL);
    g_autofree char *domains = g_build_filename(cfg, "domains", NULL);
    g_autofree char *sock = g_build_filename(run, "berthd.sock", NULL);

    g_assert_false(c->privileged);
    g_assert_cmpstr(c->config_dir, ==, cfg);
    g_assert_cmpstr(c->state_dir, ==, data);
    g_assert_cmpstr(c->run_dir, ==, run);
    g_assert_cmpstr(c->domains_dir, ==, domains);
    g_assert_cmpstr(c->socket, ==, sock);
    g_assert_cmpstr(c->plugin_dir, ==, BERTH_PLUGIN_DIR);
}

static void
test_derived_defaults(void)
{
    g_autoptr(BerthConfig) c = load_ok("[agent]\nconfig_dir=/c\nrun_dir=/r\n"
                                       "[rpc]\nunix_socket_mode=0660\n",
                                       TRUE);

    g_assert_cmpstr(c->domains_dir, ==, "/c/domains");
    g_assert_cmpstr(c->socket, ==, "/r/berthd.sock");
    g_assert_cmpstr(c->socket_ro, ==, "/r/berthd-ro.sock");
    g_assert_cmpuint(c->socket_mode, ==, 0660);
}

static void
test_all_keys_set(void)
{
    g_autoptr(BerthConfig) c = load_ok("[agent]\n"
                                       "config_dir=/c\nstate_dir=/s\nrun_dir=/r\n"
                                       "plugin_dir=/p\ndomains_dir=/d\n"
                                       "plugins=qemu;jsonl\nrequired_plugins=qemu\n"
                                       "log_level=debug\njob_workers=256\njob_history=0\n"
                                       "event_ring=16\nsink_queue=1048576\n"
                                       "[rpc]\nunix_socket=/x.sock\nunix_socket_ro=/y.sock\n"
                                       "unix_socket_mode=600\nunix_socket_ro_mode=0644\n"
                                       "max_request_bytes=1024\nmax_clients=65536\n"
                                       "max_pending_requests=1\nclient_event_queue=16\n",
                                       FALSE);

    g_assert_cmpstr(c->config_dir, ==, "/c");
    g_assert_cmpstr(c->state_dir, ==, "/s");
    g_assert_cmpstr(c->run_dir, ==, "/r");
    g_assert_cmpstr(c->plugin_dir, ==, "/p");
    g_assert_cmpstr(c->domains_dir, ==, "/d");
    g_assert_cmpstr(c->plugins[1], ==, "jsonl");
    g_assert_cmpstr(c->required[0], ==, "qemu");
    g_assert_cmpstr(c->log_level, ==, "debug");
    g_assert_cmpuint(c->workers, ==, 256);
    g_assert_cmpuint(c->job_history, ==, 0);
    g_assert_cmpuint(c->event_ring, ==, 16);
    g_assert_cmpuint(c->sink_queue, ==, 1048576);
    g_assert_cmpstr(c->socket, ==, "/x.sock");
    g_assert_cmpstr(c->socket_ro, ==, "/y.sock");
    g_assert_cmpuint(c->socket_mode, ==, 0600);
    g_assert_cmpuint(c->socket_ro_mode, ==, 0644);
    g_assert_cmpuint(c->max_request, ==, 1024);
    g_assert_cmpuint(c->max_clients, ==, 65536);
    g_assert_cmpuint(c->max_pending, ==, 1);
    g_assert_cmpuint(c->event_queue, ==, 16);
}

/* Every key of both tables, driven by its type and range: no key escapes validation. */
static void
test_every_key_errors(void)
{
    const char *groups[] = {"agent", "rpc"};
    const BerthConfigKey *tables[] = {berth_config_agent_keys(), berth_config_rpc_keys()};
    guint checked = 0;

    for (guint g = 0; g < G_N_ELEMENTS(groups); g++) {
        for (const BerthConfigKey *k = tables[g]; k->key; k++) {
            g_autofree char *prefix = g_strdup_printf("berthd.conf: [%s] %s: ", groups[g],
                                                      k->key);
            const char *bad[3] = {NULL, NULL, NULL};
            const char *why[3] = {NULL, NULL, NULL};
            g_autofree char *below = NULL;
            g_autofree char *above = NULL;
            g_autofree char *range = NULL;

            g_assert_nonnull(k->help);
            switch (k->type) {
            case BERTH_CONFIG_INT:
                below = g_strdup_printf("%" G_GINT64_FORMAT, k->min - 1);
                above = g_strdup_printf("%" G_GINT64_FORMAT, k->max + 1);
                range = g_strdup_printf("is out of range %" G_GINT64_FORMAT "..%"
                                        G_GINT64_FORMAT, k->min, k->max);
                bad[0] = "twelve", why[0] = "is not an integer";
                bad[1] = below, why[1] = range;
                bad[2] = above, why[2] = range;
                break;
            case BERTH_CONFIG_PATH:
                bad[0] = "relative/dir", why[0] = "is not an absolute path";
                bad[1] = "", why[1] = "is not an absolute path";
                break;
            case BERTH_CONFIG_STRV:
                bad[0] = "Not/A/Name";
                why[0] = strcmp(k->key, "plugins") == 0 ? "is not a plugin name"
                         : g_str_has_prefix(k->key, "tls_") ? "is neither a subject DN pattern"
                                                        : "is not listed in [agent] plugins";
                break;
            case BERTH_CONFIG_STRING:
                if (strcmp(k->key, "tls_listen") == 0) {
                    bad[0] = "[::1", why[0] = "is not a TLS listen address";
                    bad[1] = "host:99999", why[1] = "is not a TLS listen address";
                } else if (strcmp(k->key, "tls_priority") == 0) {
                    bad[0] = "loud", why[0] = "is not a valid gnutls priority string";
                } else if (g_str_has_suffix(k->key, "_mode")) {
                    bad[0] = "0999", why[0] = "is not an octal file mode such as 0600";
                    bad[1] = "rw-r--r--", why[1] = "is not an octal file mode such as 0600";
                } else {
                    bad[0] = "loud", why[0] = "is not one of error, warning, message";
                }
                break;
            default:
                g_assert_not_reached();
            }
            for (guint i = 0; i < G_N_ELEMENTS(bad) && bad[i]; i++) {
                g_autofree char *data = g_strdup_printf("[%s]\n%s=%s\n", groups[g], k->key,
                                                        bad[i]);
                g_autofree char *expect = g_strdup_printf("%s'%s' %s", prefix, bad[i], why[i]);
                g_autoptr(GError) error = NULL;
                g_autoptr(BerthConfig) c = berth_config_load_data(data, NULL, TRUE, &error);

                g_assert_null(c);
                g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
                g_test_message("%s", error->message);
                g_assert_true(g_str_has_prefix(error->message, expect));
                checked++;
            }
        }
    }
    g_assert_cmpuint(checked, >=, 20);
}

/* 100 characters: a run dir whose default socket paths are too long for sun_path. */
#define LONG_DIR "0123456789012345678901234567890123456789012345678901234567890123456789" \
                 "012345678901234567890123456789"

static void
test_exact_messages(void)
{
    assert_load_error("[rpc]\nmax_clients=0\n",
                      "berthd.conf: [rpc] max_clients: '0' is out of range 1..65536");
    assert_load_error("[agent]\njob_workers= 17x\n",
                      "berthd.conf: [agent] job_workers: '17x' is not an integer");
    assert_load_error("[agent]\nstate_dir=var/lib\n",
                      "berthd.conf: [agent] state_dir: 'var/lib' is not an absolute path");
    assert_load_error("[agent]\nplugins=qemu;qemu\n",
                      "berthd.conf: [agent] plugins: 'qemu' is listed twice");
    assert_load_error("[agent]\nplugins=qemu\nrequired_plugins=vfio\n",
                      "berthd.conf: [agent] required_plugins: 'vfio' is not listed in "
                      "[agent] plugins");
    assert_load_error("[rpc]\nunix_socket=/a.sock\nunix_socket_ro=/a.sock\n",
                      "berthd.conf: [rpc] unix_socket_ro: '/a.sock' is the read-write socket "
                      "too");
    assert_load_error("[agent]\nrun_dir=/" LONG_DIR "\n",
                      "berthd.conf: [rpc] unix_socket: '/" LONG_DIR "/berthd.sock' is longer "
                      "than 107 bytes, the limit of a unix socket path");
    assert_load_error("[agent]\nlog_level=trace\n",
                      "berthd.conf: [agent] log_level: 'trace' is not one of error, warning, "
                      "message, info, debug");
    assert_load_error("[agent]\nplugins=a\\qb\n",
                      "berthd.conf: [agent] plugins: 'a\\qb' has an invalid escape sequence");
}

static void
test_unknown_group_and_key(void)
{
    assert_load_error("[agnet]\nplugins=qemu\n",
                      "berthd.conf: unknown group [agnet]; the groups are [agent], [rpc] and "
                      "[plugin.NAME]");
    assert_load_error("[agent]\nplugin=qemu\n", "berthd.conf: [agent] plugin: unknown key");
    assert_load_error("[rpc]\nmax_client=1\n", "berthd.conf: [rpc] max_client: unknown key");
    assert_load_error("[agent]\nlog_level[de]=debug\n",
                      "berthd.conf: [agent] log_level[de]: unknown key");
    assert_load_error("[plugin.jsonl]\npath=/x\n",
                      "berthd.conf: group [plugin.jsonl] configures plugin 'jsonl', which "
                      "[agent] plugins does not list");
    assert_load_error("[plugin.Bad/Name]\n",
                      "berthd.conf: group [plugin.Bad/Name] does not name a plugin "
                      "([a-z0-9_-]+)");
    assert_load_error("[plugin.]\n",
                      "berthd.conf: group [plugin.] does not name a plugin ([a-z0-9_-]+)");
}

static void
test_syntax_error(void)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthConfig) c = berth_config_load_data("[agent]\nthis is not a key file\n", NULL,
                                                      TRUE, &error);

    g_assert_null(c);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_true(g_str_has_prefix(error->message, "berthd.conf: "));
}

static void
test_files(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("berth-config-XXXXXX", &error);
    g_autofree char *path = g_build_filename(dir, "site.conf", NULL);
    g_autofree char *missing = g_build_filename(dir, "missing.conf", NULL);
    g_autofree char *user_dir = NULL;
    g_autofree char *user_conf = NULL;
    g_autoptr(BerthConfig) c = NULL;

    g_assert_no_error(error);
    /* The default file of user mode is absent (isolated XDG dirs): all defaults. */
    c = berth_config_load_as(NULL, FALSE, &error);
    g_assert_no_error(error);
    g_assert_null(c->path);
    g_assert_cmpuint(c->workers, ==, 16);
    g_clear_pointer(&c, berth_config_free);

    /* The default file of user mode, present. */
    user_dir = g_build_filename(g_get_user_config_dir(), "berth", NULL);
    user_conf = g_build_filename(user_dir, "berthd.conf", NULL);
    g_assert_cmpint(g_mkdir_with_parents(user_dir, 0700), ==, 0);
    g_assert_true(g_file_set_contents(user_conf, "[agent]\njob_workers=3\n", -1, NULL));
    c = berth_config_load_as(NULL, FALSE, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(c->path, ==, user_conf);
    g_assert_cmpuint(c->workers, ==, 3);
    g_clear_pointer(&c, berth_config_free);
    g_remove(user_conf);

    /* A file the user names must exist. */
    c = berth_config_load(missing, &error);
    g_assert_null(c);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_true(g_str_has_prefix(error->message, "cannot read config file '"));
    g_assert_nonnull(strstr(error->message, missing));
    g_clear_error(&error);

    /* Not a regular file, or too large: refused before reading. */
    c = berth_config_load("/dev/zero", &error);
    g_assert_null(c);
    g_assert_cmpstr(error->message, ==,
                    "cannot read config file '/dev/zero': it is not a regular file");
    g_clear_error(&error);
    {
        g_autofree char *big = g_strnfill(1024 * 1024 + 1, '#');
        g_assert_true(g_file_set_contents(path, big, -1, NULL));
        c = berth_config_load(path, &error);
        g_assert_null(c);
        g_assert_true(g_str_has_suffix(error->message, "it is larger than 1048576 bytes"));
        g_clear_error(&error);
    }

    /* Messages name the file that was loaded. */
    g_assert_true(g_file_set_contents(path, "[rpc]\nmax_pending_requests=5000\n", -1, NULL));
    c = berth_config_load(path, &error);
    g_assert_null(c);
    g_assert_cmpstr(error->message, ==,
                    "site.conf: [rpc] max_pending_requests: '5000' is out of range 1..4096");
    g_clear_error(&error);

    g_assert_true(g_file_set_contents(path, "# comment\n[rpc]\nmax_clients = 9\n", -1, NULL));
    c = berth_config_load(path, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(c->path, ==, path);
    g_assert_cmpuint(c->max_clients, ==, 9);
    g_clear_pointer(&c, berth_config_free);

    g_remove(path);
    g_rmdir(dir);
}

static const BerthConfigKey test_keys[] = {
    {"count", BERTH_CONFIG_INT, "3", -5, 10, "A number."},
    {"verbose", BERTH_CONFIG_BOOL, "false", 0, 0, "A switch."},
    {"names", BERTH_CONFIG_STRV, "a;b", 0, 0, "A list."},
    {"root", BERTH_CONFIG_PATH, "/srv", 0, 0, "A path."},
    {"label", BERTH_CONFIG_STRING, NULL, 0, 0, "Unset by default."},
    {NULL, 0, NULL, 0, 0, NULL},
};

static void
test_plugin_section(void)
{
    g_autoptr(BerthConfig) c = load_ok("[agent]\nplugins=x;y;z\n"
                                       "[plugin.x]\ncount=-5\nverbose=true\nnames=p;q\\;r\n"
                                       "label=hello\\tworld\n"
                                       "[plugin.z]\ncolour=red\n",
                                       TRUE);
    g_autoptr(GError) error = NULL;
    g_autoptr(GHashTable) x = berth_config_plugin_section(c, "x", test_keys, &error);
    g_autoptr(GHashTable) y = NULL;
    g_autoptr(GHashTable) z = NULL;
    g_auto(GStrv) names = NULL;

    g_assert_no_error(error);
    g_assert_cmpstr(g_hash_table_lookup(x, "count"), ==, "-5");
    g_assert_cmpstr(g_hash_table_lookup(x, "verbose"), ==, "true");
    g_assert_cmpstr(g_hash_table_lookup(x, "names"), ==, "p;q\\;r");
    g_assert_cmpstr(g_hash_table_lookup(x, "root"), ==, "/srv");
    g_assert_cmpstr(g_hash_table_lookup(x, "label"), ==, "hello\tworld");
    names = berth_config_split_strv(g_hash_table_lookup(x, "names"));
    g_assert_cmpuint(g_strv_length(names), ==, 2);
    g_assert_cmpstr(names[1], ==, "q;r");

    /* No section: the defaults, and no entry for a key without one. */
    y = berth_config_plugin_section(c, "y", test_keys, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(g_hash_table_size(y), ==, 4);
    g_assert_cmpstr(g_hash_table_lookup(y, "count"), ==, "3");
    g_assert_cmpstr(g_hash_table_lookup(y, "verbose"), ==, "false");
    g_assert_cmpstr(g_hash_table_lookup(y, "names"), ==, "a;b");
    g_assert_false(g_hash_table_contains(y, "label"));
    g_clear_pointer(&y, g_hash_table_unref);
    y = berth_config_plugin_section(c, "y", NULL, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(g_hash_table_size(y), ==, 0);

    z = berth_config_plugin_section(c, "z", test_keys, &error);
    g_assert_null(z);
    g_assert_cmpstr(error->message, ==, "berthd.conf: [plugin.z] colour: unknown key");
    g_clear_error(&error);
    /* A plugin without keys refuses any key. */
    z = berth_config_plugin_section(c, "z", NULL, &error);
    g_assert_null(z);
    g_assert_cmpstr(error->message, ==, "berthd.conf: [plugin.z] colour: unknown key");
}

static void
test_plugin_section_errors(void)
{
    static const struct {
        const char *line;
        const char *message;
    } cases[] = {
        {"count=11", "berthd.conf: [plugin.x] count: '11' is out of range -5..10"},
        {"count=-6", "berthd.conf: [plugin.x] count: '-6' is out of range -5..10"},
        {"count=", "berthd.conf: [plugin.x] count: '' is not an integer"},
        {"count=0x10", "berthd.conf: [plugin.x] count: '0x10' is not an integer"},
        {"count=99999999999999999999",
         "berthd.conf: [plugin.x] count: '99999999999999999999' is not an integer"},
        {"verbose=yes", "berthd.conf: [plugin.x] verbose: 'yes' is not a boolean (true or false)"},
        {"root=srv", "berthd.conf: [plugin.x] root: 'srv' is not an absolute path"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *data = g_strdup_printf("[agent]\nplugins=x\n[plugin.x]\n%s\n",
                                                cases[i].line);
        g_autoptr(BerthConfig) c = load_ok(data, TRUE);
        g_autoptr(GError) error = NULL;
        g_autoptr(GHashTable) x = berth_config_plugin_section(c, "x", test_keys, &error);

        g_assert_null(x);
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        g_assert_cmpstr(error->message, ==, cases[i].message);
    }
}

static void
test_keys_check(void)
{
    static const BerthConfigKey dup[] = {
        {"a", BERTH_CONFIG_BOOL, NULL, 0, 0, "x"},
        {"a", BERTH_CONFIG_BOOL, NULL, 0, 0, "x"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    static const BerthConfigKey bad_name[] = {
        {"Bad-Key", BERTH_CONFIG_BOOL, NULL, 0, 0, "x"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    static const BerthConfigKey bad_range[] = {
        {"n", BERTH_CONFIG_INT, NULL, 5, 1, "x"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    static const BerthConfigKey bad_default[] = {
        {"n", BERTH_CONFIG_INT, "50", 1, 10, "x"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    static const BerthConfigKey bad_bool[] = {
        {"b", BERTH_CONFIG_BOOL, "on", 0, 0, "x"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    static const BerthConfigKey bad_type[] = {
        {"t", (BerthConfigType)77, NULL, 0, 0, "x"},
        {NULL, 0, NULL, 0, 0, NULL},
    };
    const struct {
        const BerthConfigKey *keys;
        const char *message;
    } cases[] = {
        {dup, "config key 'a' is declared twice"},
        {bad_name, "config key 'Bad-Key' is not a valid key name ([a-z0-9_]+)"},
        {bad_range, "config key 'n' has min 5 above max 1"},
        {bad_default, "config key 'n' (default): '50' is out of range 1..10"},
        {bad_bool, "config key 'b' (default): 'on' is not a boolean (true or false)"},
        {bad_type, "config key 't' has an unknown type 77"},
    };
    g_autoptr(GError) error = NULL;

    g_assert_true(berth_config_keys_check(NULL, &error));
    g_assert_true(berth_config_keys_check(test_keys, &error));
    g_assert_true(berth_config_keys_check(berth_config_agent_keys(), &error));
    g_assert_true(berth_config_keys_check(berth_config_rpc_keys(), &error));
    g_assert_no_error(error);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_assert_false(berth_config_keys_check(cases[i].keys, &error));
        g_assert_cmpstr(error->message, ==, cases[i].message);
        g_clear_error(&error);
    }
}

static void
test_split_strv(void)
{
    g_auto(GStrv) empty = berth_config_split_strv("");
    g_auto(GStrv) none = berth_config_split_strv(NULL);
    g_auto(GStrv) two = berth_config_split_strv("a;b;");

    g_assert_cmpuint(g_strv_length(empty), ==, 0);
    g_assert_cmpuint(g_strv_length(none), ==, 0);
    g_assert_cmpuint(g_strv_length(two), ==, 2);
    g_assert_cmpstr(berth_config_type_name(BERTH_CONFIG_STRV), ==, "list");
    g_assert_cmpstr(berth_config_type_name(BERTH_CONFIG_INT), ==, "integer");
    g_assert_true(berth_config_plugin_name_valid("qemu"));
    g_assert_true(berth_config_plugin_name_valid("my_sink-2"));
    g_assert_false(berth_config_plugin_name_valid(""));
    g_assert_false(berth_config_plugin_name_valid("../x"));
    g_assert_false(berth_config_plugin_name_valid("Qemu"));
    g_assert_false(berth_config_plugin_name_valid(NULL));
}

static gboolean
list_has(GPtrArray *list, const char *s)
{
    for (guint i = 0; i < list->len; i++) {
        if (strcmp(g_ptr_array_index(list, i), s) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static void
test_diff(void)
{
    const char *base = "[agent]\nplugins=qemu;jsonl\n[plugin.jsonl]\npath=/a\n";
    g_autoptr(BerthConfig) old = load_ok(base, TRUE);
    g_autoptr(BerthConfig) same = load_ok(base, TRUE);
    g_autoptr(BerthConfig) live = load_ok("[agent]\nplugins=qemu;jsonl\nlog_level=debug\n"
                                          "[rpc]\nmax_clients=5\n"
                                          "[plugin.jsonl]\npath=/a\n",
                                          TRUE);
    g_autoptr(BerthConfig) restart = load_ok("[agent]\nplugins=qemu;jsonl\njob_workers=4\nevent_ring=100\n"
                                             "run_dir=/elsewhere\n[plugin.jsonl]\npath=/a\n",
                                             TRUE);
    g_autoptr(BerthConfig) plugin = load_ok("[agent]\nplugins=qemu;jsonl\n"
                                            "[plugin.jsonl]\npath=/b\nrotate=true\n",
                                            TRUE);
    g_autoptr(BerthConfig) fewer = load_ok("[agent]\nplugins=qemu\n", TRUE);
    g_autoptr(GPtrArray) list = g_ptr_array_new_with_free_func(g_free);

    g_assert_false(berth_config_diff(old, same, list));
    g_assert_cmpuint(list->len, ==, 0);

    g_assert_true(berth_config_diff(old, live, list));
    g_assert_cmpuint(list->len, ==, 0);

    g_assert_true(berth_config_diff(old, restart, list));
    g_assert_true(list_has(list, "[agent] job_workers"));
    /* The ring and queues are sized when berthd starts. */
    g_assert_true(list_has(list, "[agent] event_ring"));
    g_assert_true(list_has(list, "[agent] run_dir"));
    /* The sockets live in the run dir by default: they move with it. */
    g_assert_true(list_has(list, "[rpc] unix_socket"));
    g_assert_true(list_has(list, "[rpc] unix_socket_ro"));
    g_assert_cmpuint(list->len, ==, 5);
    g_ptr_array_set_size(list, 0);

    g_assert_true(berth_config_diff(old, plugin, list));
    g_assert_cmpuint(list->len, ==, 0);
    g_assert_true(berth_config_plugin_changed(old, plugin, "jsonl", list));
    g_assert_cmpuint(list->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(list, 0), ==, "[plugin.jsonl] path");
    g_assert_cmpstr(g_ptr_array_index(list, 1), ==, "[plugin.jsonl] rotate");
    g_assert_false(berth_config_plugin_changed(old, plugin, "qemu", NULL));
    g_ptr_array_set_size(list, 0);

    g_assert_true(berth_config_diff(old, fewer, list));
    g_assert_true(list_has(list, "[agent] plugins"));
}

/* conf/berthd.conf as shipped (every key commented out) loads and means the defaults. */
static void
test_shipped_conf(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *text = NULL;
    g_autoptr(BerthConfig) shipped =
        berth_config_load_as(BERTH_SOURCE_ROOT "/conf/berthd.conf", TRUE, &error);
    g_autoptr(BerthConfig) defaults = load_ok(NULL, TRUE);
    const BerthConfigKey *tables[] = {berth_config_agent_keys(), berth_config_rpc_keys()};

    g_assert_no_error(error);
    g_assert_false(berth_config_diff(defaults, shipped, NULL));

    /* And it documents every key, each as a commented-out "#key = ..." line. */
    g_assert_true(g_file_get_contents(BERTH_SOURCE_ROOT "/conf/berthd.conf", &text, NULL, NULL));
    for (guint t = 0; t < G_N_ELEMENTS(tables); t++) {
        for (const BerthConfigKey *k = tables[t]; k->key; k++) {
            g_autofree char *line = g_strdup_printf("\n#%s =", k->key);
            if (!strstr(text, line)) {
                g_error("conf/berthd.conf does not document key '%s'", k->key);
            }
        }
    }
}

static void
remove_tree(const char *path)
{
    GDir *dir = g_dir_open(path, 0, NULL);
    const char *name;

    if (dir) {
        while ((name = g_dir_read_name(dir))) {
            g_autofree char *child = g_build_filename(path, name, NULL);
            remove_tree(child);
        }
        g_dir_close(dir);
    }
    g_remove(path);
}

/* Private XDG dirs, set before GLib reads (and caches) them. G_TEST_OPTION_ISOLATE_DIRS would do
 * it too, but leaks in GLib 2.74 and so fails the sanitizer build. */
static char *
isolate_dirs(void)
{
    g_autoptr(GError) error = NULL;
    char *root = g_dir_make_tmp("berth-config-xdg-XXXXXX", &error);
    const char *vars[] = {"HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_RUNTIME_DIR"};

    g_assert_no_error(error);
    for (guint i = 0; i < G_N_ELEMENTS(vars); i++) {
        g_autofree char *dir = g_build_filename(root, vars[i], NULL);
        g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
        g_setenv(vars[i], dir, TRUE);
    }
    return root;
}

int
main(int argc, char **argv)
{
    g_autofree char *root = isolate_dirs();
    int rc;

    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/core/config/defaults-root", test_defaults_root);
    g_test_add_func("/core/config/defaults-user", test_defaults_user);
    g_test_add_func("/core/config/derived-defaults", test_derived_defaults);
    g_test_add_func("/core/config/all-keys-set", test_all_keys_set);
    g_test_add_func("/core/config/every-key-errors", test_every_key_errors);
    g_test_add_func("/core/config/exact-messages", test_exact_messages);
    g_test_add_func("/core/config/unknown-group-and-key", test_unknown_group_and_key);
    g_test_add_func("/core/config/syntax-error", test_syntax_error);
    g_test_add_func("/core/config/files", test_files);
    g_test_add_func("/core/config/plugin-section", test_plugin_section);
    g_test_add_func("/core/config/plugin-section-errors", test_plugin_section_errors);
    g_test_add_func("/core/config/keys-check", test_keys_check);
    g_test_add_func("/core/config/split-strv", test_split_strv);
    g_test_add_func("/core/config/diff", test_diff);
    g_test_add_func("/core/config/shipped-conf", test_shipped_conf);
    rc = g_test_run();
    remove_tree(root);
    return rc;
}
