/* The plugin loader: checks files, opens them with libltdl, checks descriptors, runs init. */
#ifndef G_LOG_DOMAIN
#define G_LOG_DOMAIN "berth"
#endif

#include "plugin-loader.h"

#include <errno.h>
#include <ltdl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <berth/fs.h>
#include <berth/hostdev.h>
#include <berth/hypervisor.h>
#include <berth/sink.h>

/* Every member of BerthPlugin existed in ABI 1.0: a smaller descriptor is not a 1.0 one. */
#define PLUGIN_SIZE_1_0 sizeof(BerthPlugin)

static const char *const kind_names[BERTH_PLUGIN_KIND_LAST] = {
    [BERTH_PLUGIN_HYPERVISOR] = "hypervisor",
    [BERTH_PLUGIN_HOSTDEV] = "hostdev",
    [BERTH_PLUGIN_FS] = "fs",
    [BERTH_PLUGIN_EVENT_SINK] = "event-sink",
};

/* Ops tables as they were in ABI 1.0; they only grow, so these sizes never change. */
static const gsize ops_sizes_1_0[BERTH_PLUGIN_KIND_LAST] = {
    [BERTH_PLUGIN_HYPERVISOR] = sizeof(BerthHypervisorOps),
    [BERTH_PLUGIN_HOSTDEV] = sizeof(BerthHostdevOps),
    [BERTH_PLUGIN_FS] = sizeof(BerthFsOps),
    [BERTH_PLUGIN_EVENT_SINK] = sizeof(BerthSinkOps),
};

const char *
berth_plugin_kind_name(BerthPluginKind kind)
{
    if ((int)kind <= 0 || kind >= BERTH_PLUGIN_KIND_LAST) {
        return "unknown";
    }
    return kind_names[kind];
}

gsize
berth_plugin_ops_size_1_0(BerthPluginKind kind)
{
    if ((int)kind <= 0 || kind >= BERTH_PLUGIN_KIND_LAST) {
        return 0;
    }
    return ops_sizes_1_0[kind];
}

static gboolean
plugin_fail(GError **error, const char *fmt, ...) G_GNUC_PRINTF(2, 3);

static gboolean
plugin_fail(GError **error, const char *fmt, ...)
{
    va_list ap;
    g_autofree char *msg = NULL;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error_literal(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, msg);
    return FALSE;
}

gboolean
berth_plugin_check_owner(const char *file, const char *path, GError **error)
{
    struct stat st;
    g_autofree char *what = NULL;

    /* Name the file first: the file is what the admin listed, the directory is why. */
    if (strcmp(file, path) == 0) {
        what = g_strdup_printf("plugin file '%s'", file);
    } else {
        what = g_strdup_printf("plugin file '%s' is in directory '%s', which", file, path);
    }
    if (stat(path, &st) < 0) {
        int err = errno;
        if (err == ENOENT) {
            return plugin_fail(error, "%s does not exist", what);
        }
        return plugin_fail(error, "%s cannot be checked: %s", what, g_strerror(err));
    }
    if (st.st_uid != 0 && st.st_uid != geteuid()) {
        return plugin_fail(error,
                           "%s is owned by uid %u, neither root nor the running user: that user "
                           "could replace the code berthd runs",
                           what, (unsigned)st.st_uid);
    }
    if (st.st_mode & (S_IWGRP | S_IWOTH)) {
        return plugin_fail(error,
                           "%s is writable by group or others (mode %04o): they could replace "
                           "the code berthd runs",
                           what, (unsigned)(st.st_mode & 07777));
    }
    return TRUE;
}

/* The file and every directory that decides what it contains must be ours or root's alone. */
static gboolean
check_files(const char *dir, const char *path, GError **error)
{
    struct stat st;
    g_autofree char *la = NULL;
    g_autofree char *real = NULL;

    if (!berth_plugin_check_owner(path, dir, error)) {
        return FALSE;
    }
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        return plugin_fail(error, "plugin file '%s' is in '%s', which is not a directory", path,
                           dir);
    }
    if (!berth_plugin_check_owner(path, path, error)) {
        return FALSE;
    }
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        return plugin_fail(error, "plugin file '%s' is not a regular file", path);
    }
    /* A symlink's target decides the code: check the directory it lives in too. */
    real = realpath(path, NULL);
    if (real && strcmp(real, path) != 0) {
        g_autofree char *real_dir = g_path_get_dirname(real);
        if (!berth_plugin_check_owner(path, real, error) ||
            !berth_plugin_check_owner(path, real_dir, error)) {
            return FALSE;
        }
    }
    /* lt_dlopenext prefers NAME.la, which can name a library anywhere: refuse the ambiguity. */
    la = g_strconcat(dir, G_DIR_SEPARATOR_S, strrchr(path, '/') + 1, NULL);
    strcpy(la + strlen(la) - strlen(".so"), ".la");
    if (g_file_test(la, G_FILE_TEST_EXISTS)) {
        return plugin_fail(error,
                           "plugin file '%s' has a libtool archive '%s' beside it, which libltdl "
                           "would load instead; remove it",
                           path, la);
    }
    return TRUE;
}

static void
ltdl_init_once(void)
{
    static gsize done = 0;

    if (g_once_init_enter(&done)) {
        /* Never lt_dlexit: plugins are never unloaded while berthd runs. */
        lt_dlinit();
        g_once_init_leave(&done, 1);
    }
}

/* Checks the descriptor of @path against this berthd; the order matters: the ABI first, then
 * the size, and only then members that a smaller struct would not have. */
static gboolean
check_descriptor(const BerthPlugin *p, const char *path, const char *name, GPtrArray *loaded,
                 GError **error)
{
    g_autoptr(GError) local = NULL;
    const gsize *ops_size;

    if (p->abi_major != BERTH_ABI_MAJOR || p->abi_minor > BERTH_ABI_MINOR) {
        return plugin_fail(error, "plugin file '%s' has ABI %u.%u, berthd supports %d.%d", path,
                           p->abi_major, p->abi_minor, BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
    }
    if (p->struct_size < PLUGIN_SIZE_1_0) {
        return plugin_fail(error,
                           "plugin file '%s' has a descriptor of %zu bytes, smaller than the %zu "
                           "bytes of ABI %d.0",
                           path, (size_t)p->struct_size, (size_t)PLUGIN_SIZE_1_0,
                           BERTH_ABI_MAJOR);
    }
    if (!berth_config_plugin_name_valid(p->name)) {
        return plugin_fail(error, "plugin file '%s' has no valid name ([a-z0-9_-]+)", path);
    }
    for (guint i = 0; loaded && i < loaded->len; i++) {
        BerthPluginHandle *other = g_ptr_array_index(loaded, i);
        if (strcmp(other->plugin->name, p->name) == 0) {
            return plugin_fail(error, "plugin file '%s' is named '%s', which plugin file '%s' "
                               "already uses", path, p->name, other->path);
        }
    }
    if (strcmp(p->name, name) != 0) {
        return plugin_fail(error, "plugin file '%s' is named '%s'; it must be in '%s.so'", path,
                           p->name, p->name);
    }
    if ((int)p->kind <= 0 || p->kind >= BERTH_PLUGIN_KIND_LAST) {
        return plugin_fail(error, "plugin file '%s' has an unknown kind %d", path, (int)p->kind);
    }
    if (!p->ops) {
        return plugin_fail(error, "plugin file '%s' has no %s ops table", path,
                           kind_names[p->kind]);
    }
    /* Every ops table starts with its struct_size. */
    ops_size = p->ops;
    if (*ops_size < ops_sizes_1_0[p->kind]) {
        return plugin_fail(error,
                           "plugin file '%s' has a %s ops table of %zu bytes, smaller than the "
                           "%zu bytes of ABI %d.0",
                           path, kind_names[p->kind], (size_t)*ops_size,
                           (size_t)ops_sizes_1_0[p->kind], BERTH_ABI_MAJOR);
    }
    if (!berth_config_keys_check(p->config_keys, &local)) {
        return plugin_fail(error, "plugin file '%s' declares an invalid config key table: %s",
                           path, local->message);
    }
    return TRUE;
}

static const BerthPlugin *
plugin_open(const char *dir, const char *name, GPtrArray *loaded, char **path_out,
            GError **error)
{
    g_autofree char *base = NULL;
    g_autofree char *path = NULL;
    lt_dlhandle module;
    lt_ptr sym;
    const BerthPlugin *plugin;

    if (!berth_config_plugin_name_valid(name)) {
        plugin_fail(error, "plugin name '%s' is not valid: a plugin is named by [a-z0-9_-]+, "
                    "never by a path", name);
        return NULL;
    }
    if (!g_path_is_absolute(dir)) {
        plugin_fail(error, "plugin directory '%s' is not an absolute path", dir);
        return NULL;
    }
    base = g_build_filename(dir, name, NULL);
    path = g_strconcat(base, ".so", NULL);
    if (path_out) {
        *path_out = g_strdup(path);
    }
    if (!check_files(dir, path, error)) {
        return NULL;
    }

    ltdl_init_once();
    module = lt_dlopenext(base);
    if (!module) {
        const char *why = lt_dlerror();
        plugin_fail(error, "plugin file '%s' cannot be opened: %s", path,
                    why ? why : "unknown error");
        return NULL;
    }
    sym = lt_dlsym(module, BERTH_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        plugin_fail(error, "plugin file '%s' does not export the symbol %s", path,
                    BERTH_PLUGIN_ENTRY_SYMBOL);
        lt_dlclose(module);
        return NULL;
    }
    plugin = ((BerthPluginEntryFunc)sym)();
    if (!plugin) {
        plugin_fail(error, "plugin file '%s' returned no descriptor from %s", path,
                    BERTH_PLUGIN_ENTRY_SYMBOL);
        lt_dlclose(module);
        return NULL;
    }
    if (!check_descriptor(plugin, path, name, loaded, error)) {
        lt_dlclose(module);
        return NULL;
    }
    /* The module stays open for good: plugins are never unloaded. */
    return plugin;
}

const BerthPlugin *
berth_plugin_open(const char *dir, const char *name, char **path, GError **error)
{
    return plugin_open(dir, name, NULL, path, error);
}

static void
handle_free(gpointer data)
{
    BerthPluginHandle *h = data;

    if (!h) {
        return;
    }
    g_free(h->name);
    g_free(h->path);
    g_clear_pointer(&h->config, g_hash_table_unref);
    g_clear_pointer(&h->config_strv, g_hash_table_unref);
    g_clear_pointer(&h->retired, g_ptr_array_unref);
    g_free(h->state_dir);
    g_free(h->run_dir);
    g_free(h);
}

/* The split lists of the BERTH_CONFIG_STRV keys of @keys in @values. */
static GHashTable *
strv_table_new(const BerthConfigKey *keys, GHashTable *values)
{
    GHashTable *table = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                              (GDestroyNotify)g_strfreev);

    for (const BerthConfigKey *k = keys; k && k->key; k++) {
        if (k->type == BERTH_CONFIG_STRV) {
            g_hash_table_insert(table, g_strdup(k->key),
                                berth_config_split_strv(g_hash_table_lookup(values, k->key)));
        }
    }
    return table;
}

static gboolean
sections_equal(GHashTable *a, GHashTable *b)
{
    GHashTableIter it;
    gpointer key, value;

    if (g_hash_table_size(a) != g_hash_table_size(b)) {
        return FALSE;
    }
    g_hash_table_iter_init(&it, a);
    while (g_hash_table_iter_next(&it, &key, &value)) {
        if (g_strcmp0(value, g_hash_table_lookup(b, key)) != 0) {
            return FALSE;
        }
    }
    return TRUE;
}

gboolean
berth_plugin_reconfigure(BerthPluginHandle *h, const BerthConfig *config, gboolean *changed,
                         GError **error)
{
    g_autoptr(GHashTable) section =
        berth_config_plugin_section(config, h->name, h->plugin->config_keys, error);

    if (changed) {
        *changed = FALSE;
    }
    if (!section) {
        return FALSE;
    }
    if (h->config && sections_equal(h->config, section)) {
        return TRUE;
    }
    if (!h->retired) {
        h->retired = g_ptr_array_new_with_free_func((GDestroyNotify)g_hash_table_unref);
    }
    if (h->config) {
        g_ptr_array_add(h->retired, h->config);
    }
    if (h->config_strv) {
        g_ptr_array_add(h->retired, h->config_strv);
    }
    h->config_strv = strv_table_new(h->plugin->config_keys, section);
    h->config = g_steal_pointer(&section);
    if (changed) {
        *changed = TRUE;
    }
    return TRUE;
}

/* Opens and checks one plugin and validates its config section; no code of it runs but the
 * entry function. */
static BerthPluginHandle *
handle_new(const BerthConfig *config, const char *name, GPtrArray *loaded, gpointer core,
           char **path, GError **error)
{
    const BerthPlugin *plugin = plugin_open(config->plugin_dir, name, loaded, path, error);
    g_autoptr(GHashTable) section = NULL;
    BerthPluginHandle *h;

    if (!plugin) {
        return NULL;
    }
    section = berth_config_plugin_section(config, name, plugin->config_keys, error);
    if (!section) {
        return NULL;
    }
    h = g_new0(BerthPluginHandle, 1);
    h->name = g_strdup(name);
    h->path = g_strdup(*path);
    h->plugin = plugin;
    h->required = g_strv_contains((const char *const *)config->required, name);
    h->config = g_steal_pointer(&section);
    h->config_strv = strv_table_new(plugin->config_keys, h->config);
    h->state_dir = g_build_filename(config->state_dir, "plugins", name, NULL);
    h->run_dir = g_build_filename(config->run_dir, "plugins", name, NULL);
    h->core = core;
    return h;
}

/* Decides what a failure means: an optional plugin is logged once and skipped (TRUE), a required
 * one fails the load (FALSE with @error). */
static gboolean
plugin_failed(const char *name, const char *path, gboolean required, GError *failure,
              GError **error)
{
    if (required) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "required plugin '%s' failed: %s", name, failure->message);
        return FALSE;
    }
    g_log_structured(G_LOG_DOMAIN, G_LOG_LEVEL_WARNING,
                     "BERTH_PLUGIN", name,
                     "BERTH_PLUGIN_FILE", path ? path : "",
                     "MESSAGE", "optional plugin '%s' skipped: %s", name, failure->message);
    return TRUE;
}

static gboolean
handle_init(BerthPluginHandle *h, const BerthHost *host, GError **error)
{
    g_autoptr(GError) local = NULL;

    if (g_mkdir_with_parents(h->state_dir, 0700) < 0) {
        int err = errno;
        return plugin_fail(error, "plugin file '%s' cannot have its state directory '%s': %s",
                           h->path, h->state_dir, g_strerror(err));
    }
    if (!h->plugin->init) {
        h->initialized = TRUE;
        return TRUE;
    }
    if (!h->plugin->init(h, host, &h->priv, &local)) {
        return plugin_fail(error, "plugin file '%s' failed to initialize: %s", h->path,
                           local ? local->message : "no reason given");
    }
    h->initialized = TRUE;
    return TRUE;
}

GPtrArray *
berth_plugins_load(const BerthConfig *config, const BerthHost *host, gpointer core,
                   gboolean init, GError **error)
{
    g_autoptr(GPtrArray) opened = NULL;
    g_autoptr(GPtrArray) ready = NULL;

    g_return_val_if_fail(config != NULL, NULL);
    g_return_val_if_fail(host != NULL || !init, NULL);
    opened = g_ptr_array_new_with_free_func(handle_free);
    ready = g_ptr_array_new_with_free_func(handle_free);

    /* Open and check everything first, so that a refused required plugin stops startup
     * before any plugin's init() has run. */
    for (guint i = 0; config->plugins[i]; i++) {
        const char *name = config->plugins[i];
        g_autofree char *path = NULL;
        g_autoptr(GError) local = NULL;
        BerthPluginHandle *h = handle_new(config, name, opened, core, &path, &local);

        if (h) {
            g_ptr_array_add(opened, h);
        } else if (!plugin_failed(name, path, g_strv_contains((const char *const *)
                                                               config->required, name),
                                  local, error)) {
            return NULL;
        }
    }
    if (!init) {
        return g_steal_pointer(&opened);
    }

    /* Init on the calling (main) thread, in config order. */
    for (guint i = 0; i < opened->len; i++) {
        BerthPluginHandle *h = g_ptr_array_index(opened, i);
        g_autoptr(GError) local = NULL;

        g_ptr_array_index(opened, i) = NULL;
        if (handle_init(h, host, &local)) {
            g_ptr_array_add(ready, h);
            continue;
        }
        /* Its code stays loaded: a failed init() may have left threads or callbacks behind. */
        if (!plugin_failed(h->name, h->path, h->required, local, error)) {
            handle_free(h);
            berth_plugins_shutdown(ready);
            return NULL;
        }
        handle_free(h);
    }
    return g_steal_pointer(&ready);
}

void
berth_plugins_shutdown(GPtrArray *plugins)
{
    if (!plugins) {
        return;
    }
    for (guint i = plugins->len; i > 0; i--) {
        BerthPluginHandle *h = g_ptr_array_index(plugins, i - 1);
        if (h && h->initialized) {
            h->initialized = FALSE;
            if (h->plugin->shutdown) {
                h->plugin->shutdown(h->priv);
            }
            h->priv = NULL;
        }
    }
}

void
berth_plugins_free(GPtrArray *plugins)
{
    if (plugins) {
        g_ptr_array_unref(plugins);
    }
}

BerthPluginHandle *
berth_plugins_find_kind(GPtrArray *plugins, BerthPluginKind kind)
{
    for (guint i = 0; plugins && i < plugins->len; i++) {
        BerthPluginHandle *h = g_ptr_array_index(plugins, i);
        if (h->initialized && h->plugin->kind == kind) {
            return h;
        }
    }
    return NULL;
}
