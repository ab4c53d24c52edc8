/* Tests of the plugin loader against the deliberately broken plugins in tests/plugins. */
#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <berth/sink.h>

#include "build-config.h"
#include "plugin-loader.h"

/* What the loader warned about (structured log) and what plugins logged through the host. */
static GPtrArray *warnings;
static GPtrArray *plugin_logs;
static GMutex logs_lock; /* protects plugin_logs: plugins may log from any thread */

static GLogWriterOutput
test_writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
    if (level & G_LOG_LEVEL_WARNING) {
        const char *message = NULL;
        const char *file = NULL;
        for (gsize i = 0; i < n_fields; i++) {
            if (strcmp(fields[i].key, "MESSAGE") == 0) {
                message = fields[i].value;
            } else if (strcmp(fields[i].key, "BERTH_PLUGIN_FILE") == 0) {
                file = fields[i].value;
            }
        }
        /* Every loader warning names the file in a field of its own too. */
        g_assert_nonnull(file);
        g_ptr_array_add(warnings, g_strdup(message));
        return G_LOG_WRITER_HANDLED;
    }
    return g_log_writer_default(level, fields, n_fields, data);
}

static void fake_log(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...)
    G_GNUC_PRINTF(3, 4);

static void
fake_log(BerthPluginHandle *self, GLogLevelFlags level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_mutex_lock(&logs_lock);
    g_ptr_array_add(plugin_logs, g_strdup_vprintf(fmt, ap));
    g_mutex_unlock(&logs_lock);
    va_end(ap);
}

static const char *
fake_get_string(BerthPluginHandle *self, const char *key)
{
    return g_hash_table_lookup(self->config, key);
}

static gint64
fake_get_int(BerthPluginHandle *self, const char *key)
{
    return g_ascii_strtoll(g_hash_table_lookup(self->config, key), NULL, 10);
}

static gboolean
fake_get_bool(BerthPluginHandle *self, const char *key)
{
    return g_strcmp0(g_hash_table_lookup(self->config, key), "true") == 0;
}

static const char *const *
fake_get_strv(BerthPluginHandle *self, const char *key)
{
    return g_hash_table_lookup(self->config_strv, key);
}

/* A host with only what the test plugins use; the rest stays NULL. */
static const BerthHost fake_host = {
    .struct_size = sizeof(BerthHost),
    .abi_minor = BERTH_ABI_MINOR,
    .log = fake_log,
    .config_get_string = fake_get_string,
    .config_get_int = fake_get_int,
    .config_get_bool = fake_get_bool,
    .config_get_strv = fake_get_strv,
};

typedef struct {
    char *tmp;        /* a private dir, 0700: state and run dirs, copies of plugins */
    char *plugin_dir; /* BERTH_TEST_PLUGIN_DIR */
} Fixture;

static void
fixture_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    const char *dir = g_getenv("BERTH_TEST_PLUGIN_DIR");

    f->plugin_dir = g_strdup(dir ? dir : BERTH_BUILD_ROOT "/tests/plugins");
    f->tmp = g_dir_make_tmp("berth-loader-XXXXXX", &error);
    g_assert_no_error(error);
    g_ptr_array_set_size(warnings, 0);
    g_ptr_array_set_size(plugin_logs, 0);
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

static void
fixture_teardown(Fixture *f, gconstpointer data)
{
    g_chmod(f->tmp, 0700);
    remove_tree(f->tmp);
    g_free(f->tmp);
    g_free(f->plugin_dir);
}

/* A config for @plugin_dir that loads @plugins, requires @required, plus @extra groups. */
static BerthConfig *
make_config(Fixture *f, const char *plugin_dir, const char *plugins, const char *required,
            const char *extra)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *data = g_strdup_printf("[agent]\n"
                                            "plugin_dir=%s\n"
                                            "state_dir=%s/state\n"
                                            "run_dir=%s/run\n"
                                            "plugins=%s\n"
                                            "required_plugins=%s\n"
                                            "%s",
                                            plugin_dir ? plugin_dir : f->plugin_dir, f->tmp,
                                            f->tmp, plugins, required ? required : "",
                                            extra ? extra : "");
    BerthConfig *config = berth_config_load_data(data, NULL, TRUE, &error);

    g_assert_no_error(error);
    return config;
}

static gboolean
logged(GPtrArray *lines, const char *needle)
{
    for (guint i = 0; i < lines->len; i++) {
        if (strstr(g_ptr_array_index(lines, i), needle)) {
            return TRUE;
        }
    }
    return FALSE;
}

/* Loads one optional plugin that must be refused with a warning containing @reason. */
static void
assert_refused(Fixture *f, const char *plugin_dir, const char *name, const char *reason)
{
    g_autoptr(BerthConfig) config = make_config(f, plugin_dir, name, NULL, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);
    g_autofree char *file = g_strdup_printf("'%s/%s.so'", plugin_dir ? plugin_dir : f->plugin_dir,
                                            name);
    const char *message;

    g_assert_no_error(error);
    g_assert_nonnull(plugins);
    g_assert_cmpuint(plugins->len, ==, 0);
    g_assert_cmpuint(warnings->len, ==, 1);
    message = g_ptr_array_index(warnings, 0);
    g_test_message("%s", message);
    g_assert_nonnull(strstr(message, file));
    g_assert_nonnull(strstr(message, reason));
    g_assert_true(g_str_has_prefix(message, "optional plugin '"));
}

/* Copies a built test plugin into @dir as NAME.so, mode 0644. */
static char *
copy_plugin(Fixture *f, const char *from, const char *dir, const char *name)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *src = g_strdup_printf("%s/%s.so", f->plugin_dir, from);
    char *dst = g_strdup_printf("%s/%s.so", dir, name);
    g_autofree char *data = NULL;
    gsize len = 0;

    g_file_get_contents(src, &data, &len, &error);
    g_assert_no_error(error);
    g_file_set_contents(dst, data, (gssize)len, &error);
    g_assert_no_error(error);
    g_assert_cmpint(g_chmod(dst, 0644), ==, 0);
    return dst;
}

static void
test_good(Fixture *f, gconstpointer data)
{
    g_autoptr(BerthConfig) config = make_config(f, NULL, "good", "good", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, f, TRUE, &error);
    g_autofree char *path = g_strdup_printf("%s/good.so", f->plugin_dir);
    g_autofree char *state = g_strdup_printf("%s/state/plugins/good", f->tmp);
    BerthPluginHandle *h;
    const BerthSinkOps *ops;
    BerthEvent event = {.struct_size = sizeof(BerthEvent), .object_kind = "agent",
                        .object_name = "test", .type = "test-event"};

    g_assert_no_error(error);
    g_assert_cmpuint(plugins->len, ==, 1);
    h = g_ptr_array_index(plugins, 0);
    g_assert_cmpstr(h->name, ==, "good");
    g_assert_cmpstr(h->path, ==, path);
    g_assert_cmpstr(h->plugin->name, ==, "good");
    g_assert_true(h->initialized);
    g_assert_true(h->required);
    g_assert_true(h->core == f);
    g_assert_cmpstr(h->state_dir, ==, state);
    g_assert_true(g_file_test(state, G_FILE_TEST_IS_DIR));
    g_assert_true(berth_plugins_find_kind(plugins, BERTH_PLUGIN_EVENT_SINK) == h);
    g_assert_null(berth_plugins_find_kind(plugins, BERTH_PLUGIN_HYPERVISOR));
    g_assert_true(logged(plugin_logs, "good: initialized"));
    g_assert_cmpuint(warnings->len, ==, 0);

    ops = h->plugin->ops;
    for (guint i = 0; i < 3; i++) {
        event.seq = i + 1;
        ops->deliver(h->priv, &event);
    }
    berth_plugins_shutdown(plugins);
    g_assert_false(h->initialized);
    g_assert_true(logged(plugin_logs, "good: 3 events"));
    /* A second shutdown is a no-op. */
    g_ptr_array_set_size(plugin_logs, 0);
    berth_plugins_shutdown(plugins);
    g_assert_cmpuint(plugin_logs->len, ==, 0);
}

static void
test_wrong_abi_major(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "abi-major", "has ABI 2.0, berthd supports 1.1");
}

static void
test_wrong_abi_minor(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "abi-minor-newer", "has ABI 1.99, berthd supports 1.1");
}

static void
test_missing_symbol(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "no-symbol", "does not export the symbol berth_plugin_entry");
}

static void
test_null_descriptor(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "null-desc", "returned no descriptor");
}

static void
test_bad_kind(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "bad-kind", "has an unknown kind 42");
}

static void
test_small_struct(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "small-struct", "smaller than the");
}

static void
test_missing_file(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "not-there", "does not exist");
}

static void
test_name_mismatch(Fixture *f, gconstpointer data)
{
    assert_refused(f, NULL, "dup-a", "is named 'dup'; it must be in 'dup.so'");
}

static void
test_duplicate(Fixture *f, gconstpointer data)
{
    g_autofree char *first = copy_plugin(f, "dup-a", f->tmp, "dup");
    g_autofree char *second = copy_plugin(f, "dup-b", f->tmp, "dup-b");
    g_autoptr(BerthConfig) config = make_config(f, f->tmp, "dup;dup-b", NULL, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);
    g_autofree char *expect = g_strdup_printf("plugin file '%s' is named 'dup', which plugin "
                                              "file '%s' already uses", second, first);

    g_assert_no_error(error);
    g_assert_cmpuint(plugins->len, ==, 1);
    g_assert_cmpstr(((BerthPluginHandle *)g_ptr_array_index(plugins, 0))->path, ==, first);
    g_assert_cmpuint(warnings->len, ==, 1);
    g_assert_nonnull(strstr(g_ptr_array_index(warnings, 0), expect));
}

static void
test_init_fails_optional(Fixture *f, gconstpointer data)
{
    g_autoptr(BerthConfig) config = make_config(f, NULL, "init-fails;good", NULL, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(plugins->len, ==, 1);
    g_assert_cmpstr(((BerthPluginHandle *)g_ptr_array_index(plugins, 0))->name, ==, "good");
    g_assert_cmpuint(warnings->len, ==, 1);
    g_assert_nonnull(strstr(g_ptr_array_index(warnings, 0),
                            "init-fails.so' failed to initialize: the test device is missing"));
    berth_plugins_shutdown(plugins);
}

static void
test_init_fails_required(Fixture *f, gconstpointer data)
{
    g_autoptr(BerthConfig) config = make_config(f, NULL, "good;init-fails", "init-fails", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);

    g_assert_null(plugins);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_true(g_str_has_prefix(error->message, "required plugin 'init-fails' failed: "));
    g_assert_nonnull(strstr(error->message, "the test device is missing"));
    g_assert_cmpuint(warnings->len, ==, 0);
    /* The plugin initialized before it was shut down again. */
    g_assert_true(logged(plugin_logs, "good: initialized"));
    g_assert_true(logged(plugin_logs, "good: 0 events"));
}

static void
test_refused_required(Fixture *f, gconstpointer data)
{
    g_autoptr(BerthConfig) config = make_config(f, NULL, "good;abi-major", "abi-major", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);

    g_assert_null(plugins);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(error->message, "abi-major.so' has ABI 2.0, berthd supports 1.1"));
    /* Refused before any init() ran. */
    g_assert_cmpuint(plugin_logs->len, ==, 0);
}

static void
test_optional_among_others(Fixture *f, gconstpointer data)
{
    g_autoptr(BerthConfig) config =
        make_config(f, NULL, "abi-major;good;null-desc;no-symbol;bad-kind", "good", NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);

    g_assert_no_error(error);
    g_assert_cmpuint(plugins->len, ==, 1);
    g_assert_cmpuint(warnings->len, ==, 4);
    berth_plugins_shutdown(plugins);
}

static void
test_world_writable_file(Fixture *f, gconstpointer data)
{
    g_autofree char *path = copy_plugin(f, "good", f->tmp, "good");

    g_assert_cmpint(g_chmod(path, 0646), ==, 0);
    assert_refused(f, f->tmp, "good", "is writable by group or others (mode 0646)");
    g_ptr_array_set_size(warnings, 0);
    g_assert_cmpint(g_chmod(path, 0664), ==, 0);
    assert_refused(f, f->tmp, "good", "is writable by group or others (mode 0664)");
}

static void
test_world_writable_dir(Fixture *f, gconstpointer data)
{
    g_autofree char *expect = NULL;

    g_free(copy_plugin(f, "good", f->tmp, "good"));
    expect = g_strdup_printf("is in directory '%s', which is writable by group or others "
                             "(mode 0757)", f->tmp);

    g_assert_cmpint(g_chmod(f->tmp, 0757), ==, 0);
    assert_refused(f, f->tmp, "good", expect);
}

static void
test_foreign_owner(Fixture *f, gconstpointer data)
{
    g_autofree char *path = NULL;

    if (geteuid() != 0) {
        g_test_skip("needs root to give a file to another user");
        return;
    }
    path = copy_plugin(f, "good", f->tmp, "good");
    g_assert_cmpint(chown(path, 4242, 4242), ==, 0);
    assert_refused(f, f->tmp, "good", "is owned by uid 4242, neither root nor the running user");
}

static void
test_symlink_target_checked(Fixture *f, gconstpointer data)
{
    g_autofree char *open_dir = g_build_filename(f->tmp, "open", NULL);
    g_autofree char *safe_dir = g_build_filename(f->tmp, "safe", NULL);
    g_autofree char *target = NULL;
    g_autofree char *link = g_build_filename(safe_dir, "good.so", NULL);

    g_assert_cmpint(g_mkdir(open_dir, 0700), ==, 0);
    g_assert_cmpint(g_mkdir(safe_dir, 0700), ==, 0);
    target = copy_plugin(f, "good", open_dir, "good");
    g_assert_cmpint(symlink(target, link), ==, 0);
    g_assert_cmpint(g_chmod(open_dir, 0777), ==, 0);
    assert_refused(f, safe_dir, "good", "is writable by group or others (mode 0777)");
}

static void
test_libtool_archive_refused(Fixture *f, gconstpointer data)
{
    g_autofree char *la = g_build_filename(f->tmp, "good.la", NULL);

    g_free(copy_plugin(f, "good", f->tmp, "good"));
    g_assert_true(g_file_set_contents(la, "# not a real libtool archive\n", -1, NULL));
    assert_refused(f, f->tmp, "good", "has a libtool archive");
}

static void
test_list_without_init(Fixture *f, gconstpointer data)
{
    g_autoptr(BerthConfig) config = make_config(f, NULL, "good;init-fails;abi-major", NULL,
                                                NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, FALSE, &error);
    g_autofree char *state = g_strdup_printf("%s/state", f->tmp);

    g_assert_no_error(error);
    /* init-fails conforms: only running it would fail. */
    g_assert_cmpuint(plugins->len, ==, 2);
    for (guint i = 0; i < plugins->len; i++) {
        BerthPluginHandle *h = g_ptr_array_index(plugins, i);
        g_assert_false(h->initialized);
        g_assert_cmpint(h->plugin->kind, ==, BERTH_PLUGIN_EVENT_SINK);
    }
    g_assert_cmpuint(warnings->len, ==, 1);
    g_assert_cmpuint(plugin_logs->len, ==, 0);
    g_assert_null(berth_plugins_find_kind(plugins, BERTH_PLUGIN_EVENT_SINK));
    g_assert_false(g_file_test(state, G_FILE_TEST_EXISTS));
    berth_plugins_shutdown(plugins);
    g_assert_cmpuint(plugin_logs->len, ==, 0);
}

static void
test_config_keys(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthConfig) config = make_config(f, NULL, "config-keys", NULL,
                                                "[plugin.config-keys]\n"
                                                "count=7\nverbose=true\nnames=x;y\\;z;w\n");
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);
    g_autoptr(BerthConfig) defaults = make_config(f, NULL, "config-keys", NULL, NULL);
    g_autoptr(GPtrArray) plugins2 = NULL;

    g_assert_no_error(error);
    g_assert_cmpuint(plugins->len, ==, 1);
    g_assert_true(logged(plugin_logs, "config-keys: count=7 verbose=true names=x,y;z,w "
                                      "label=(unset)"));

    plugins2 = berth_plugins_load(defaults, &fake_host, NULL, TRUE, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(plugins2->len, ==, 1);
    g_assert_true(logged(plugin_logs, "config-keys: count=3 verbose=false names=a,b "
                                      "label=(unset)"));
}

static void
test_reconfigure(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthConfig) config = make_config(f, NULL, "config-keys", NULL,
                                                "[plugin.config-keys]\ncount=7\n");
    g_autoptr(BerthConfig) same = make_config(f, NULL, "config-keys", NULL,
                                              "[plugin.config-keys]\ncount=7\nnames=a;b\n");
    g_autoptr(BerthConfig) newer = make_config(f, NULL, "config-keys", NULL,
                                               "[plugin.config-keys]\ncount=9\nnames=c\n");
    g_autoptr(BerthConfig) broken = make_config(f, NULL, "config-keys", NULL,
                                                "[plugin.config-keys]\ncount=90\n");
    g_autoptr(GPtrArray) plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);
    BerthPluginHandle *h;
    const char *old_count;
    gboolean changed = TRUE;

    g_assert_no_error(error);
    h = g_ptr_array_index(plugins, 0);
    old_count = fake_get_string(h, "count");

    g_assert_true(berth_plugin_reconfigure(h, same, &changed, &error));
    g_assert_false(changed);

    g_assert_false(berth_plugin_reconfigure(h, broken, &changed, &error));
    g_assert_cmpstr(error->message, ==,
                    "berthd.conf: [plugin.config-keys] count: '90' is out of range 1..10");
    g_assert_false(changed);
    g_assert_cmpint(fake_get_int(h, "count"), ==, 7);
    g_clear_error(&error);

    g_assert_true(berth_plugin_reconfigure(h, newer, &changed, &error));
    g_assert_true(changed);
    g_assert_cmpint(fake_get_int(h, "count"), ==, 9);
    g_assert_cmpstr(fake_get_strv(h, "names")[0], ==, "c");
    g_assert_null(fake_get_strv(h, "names")[1]);
    /* A string handed out before the change stays valid. */
    g_assert_cmpstr(old_count, ==, "7");
}

static void
test_config_keys_invalid(Fixture *f, gconstpointer data)
{
    static const struct {
        const char *section;
        const char *reason;
    } cases[] = {
        {"count=11\n", "berthd.conf: [plugin.config-keys] count: '11' is out of range 1..10"},
        {"count=0\n", "berthd.conf: [plugin.config-keys] count: '0' is out of range 1..10"},
        {"count=many\n", "berthd.conf: [plugin.config-keys] count: 'many' is not an integer"},
        {"verbose=maybe\n", "[plugin.config-keys] verbose: 'maybe' is not a boolean"},
        {"colour=red\n", "berthd.conf: [plugin.config-keys] colour: unknown key"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *extra = g_strconcat("[plugin.config-keys]\n", cases[i].section, NULL);
        g_autoptr(BerthConfig) config = make_config(f, NULL, "config-keys", NULL, extra);
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) plugins =
            berth_plugins_load(config, &fake_host, NULL, TRUE, &error);

        g_assert_no_error(error);
        g_assert_cmpuint(plugins->len, ==, 0);
        g_assert_cmpuint(warnings->len, ==, 1);
        g_assert_nonnull(strstr(g_ptr_array_index(warnings, 0), cases[i].reason));
        g_assert_cmpuint(plugin_logs->len, ==, 0);
        g_ptr_array_set_size(warnings, 0);
    }
}

static void
test_open_direct(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = NULL;
    const BerthPlugin *p = berth_plugin_open(f->plugin_dir, "good", &path, &error);

    g_assert_no_error(error);
    g_assert_nonnull(p);
    g_assert_cmpstr(p->name, ==, "good");
    g_assert_true(g_str_has_suffix(path, "/good.so"));

    g_clear_pointer(&path, g_free);
    p = berth_plugin_open(f->plugin_dir, "../plugins/good", &path, &error);
    g_assert_null(p);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_cmpstr(error->message, ==, "plugin name '../plugins/good' is not valid: a plugin "
                                        "is named by [a-z0-9_-]+, never by a path");
    g_clear_error(&error);

    p = berth_plugin_open("relative/dir", "good", NULL, &error);
    g_assert_null(p);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
}

static void
test_example_plugin(Fixture *f, gconstpointer data)
{
    g_autofree char *out = g_build_filename(f->tmp, "events.log", NULL);
    g_autofree char *extra = g_strdup_printf("[plugin.example]\npath=%s\n", out);
    g_autoptr(BerthConfig) config = make_config(f, BERTH_BUILD_ROOT "/sdk", "example", NULL,
                                                extra);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) plugins = NULL;
    g_autofree char *text = NULL;
    BerthPluginHandle *h;
    BerthEvent event = {.struct_size = sizeof(BerthEvent), .seq = 7, .timestamp_us = 1000,
                        .object_kind = "domain", .object_name = "web1",
                        .type = "domain-started", .detail_json = "{\"reason\":\"booted\"}"};

    if (!g_file_test(BERTH_BUILD_ROOT "/sdk/example.so", G_FILE_TEST_EXISTS)) {
        g_test_skip("the SDK example plugin is not built");
        return;
    }
    plugins = berth_plugins_load(config, &fake_host, NULL, TRUE, &error);
    g_assert_no_error(error);
    g_assert_cmpuint(plugins->len, ==, 1);
    h = g_ptr_array_index(plugins, 0);
    ((const BerthSinkOps *)h->plugin->ops)->deliver(h->priv, &event);
    berth_plugins_shutdown(plugins);
    g_assert_true(g_file_get_contents(out, &text, NULL, NULL));
    g_assert_cmpstr(text, ==, "7 1000 domain web1 domain-started {\"reason\":\"booted\"}\n");
}

static void
test_kind_names(void)
{
    g_assert_cmpstr(berth_plugin_kind_name(BERTH_PLUGIN_HYPERVISOR), ==, "hypervisor");
    g_assert_cmpstr(berth_plugin_kind_name(BERTH_PLUGIN_HOSTDEV), ==, "hostdev");
    g_assert_cmpstr(berth_plugin_kind_name(BERTH_PLUGIN_FS), ==, "fs");
    g_assert_cmpstr(berth_plugin_kind_name(BERTH_PLUGIN_EVENT_SINK), ==, "event-sink");
    g_assert_cmpstr(berth_plugin_kind_name(0), ==, "unknown");
    g_assert_cmpstr(berth_plugin_kind_name(BERTH_PLUGIN_KIND_LAST), ==, "unknown");
    g_assert_null(berth_plugins_find_kind(NULL, BERTH_PLUGIN_FS));
    berth_plugins_free(NULL);
    berth_plugins_shutdown(NULL);
}

#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int
main(int argc, char **argv)
{
    int rc;

    g_test_init(&argc, &argv, NULL);
    g_log_set_writer_func(test_writer, NULL, NULL);
    warnings = g_ptr_array_new_with_free_func(g_free);
    plugin_logs = g_ptr_array_new_with_free_func(g_free);

    ADD("/core/loader/good", test_good);
    ADD("/core/loader/wrong-abi-major", test_wrong_abi_major);
    ADD("/core/loader/wrong-abi-minor-newer", test_wrong_abi_minor);
    ADD("/core/loader/missing-symbol", test_missing_symbol);
    ADD("/core/loader/null-descriptor", test_null_descriptor);
    ADD("/core/loader/bad-kind", test_bad_kind);
    ADD("/core/loader/small-struct", test_small_struct);
    ADD("/core/loader/missing-file", test_missing_file);
    ADD("/core/loader/name-differs-from-file", test_name_mismatch);
    ADD("/core/loader/duplicate-name", test_duplicate);
    ADD("/core/loader/init-fails-optional", test_init_fails_optional);
    ADD("/core/loader/init-fails-required", test_init_fails_required);
    ADD("/core/loader/refused-required", test_refused_required);
    ADD("/core/loader/optional-failures-skipped", test_optional_among_others);
    ADD("/core/loader/world-writable-file", test_world_writable_file);
    ADD("/core/loader/world-writable-dir", test_world_writable_dir);
    ADD("/core/loader/foreign-owner", test_foreign_owner);
    ADD("/core/loader/symlink-target-checked", test_symlink_target_checked);
    ADD("/core/loader/libtool-archive-refused", test_libtool_archive_refused);
    ADD("/core/loader/list-without-init", test_list_without_init);
    ADD("/core/loader/config-keys", test_config_keys);
    ADD("/core/loader/config-keys-invalid", test_config_keys_invalid);
    ADD("/core/loader/reconfigure", test_reconfigure);
    ADD("/core/loader/open-direct", test_open_direct);
    ADD("/core/loader/sdk-example", test_example_plugin);
    g_test_add_func("/core/loader/kind-names", test_kind_names);

    rc = g_test_run();
    g_ptr_array_unref(warnings);
    g_ptr_array_unref(plugin_logs);
    return rc;
}
