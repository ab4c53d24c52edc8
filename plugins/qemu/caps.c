/* QEMU capabilities: probe a qemu-system binary over QMP once, cache by path and mtime. */
#include "caps.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <berth/error.h>
#include <berth/json.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "qmp.h"

/* A cache file or a probe reply bigger than this is refused. */
#define CAPS_JSON_MAX (8 * 1024 * 1024)
/* How long quit may take before the probe process is killed. */
#define CAPS_QUIT_WAIT_MS 3000

/* Protects caps_cache (path -> BerthQemuCaps) and caps_probe_count. */
static GMutex caps_lock;
static GHashTable *caps_cache;
static guint caps_probe_count;
/* Serializes probes, so that concurrent calls for one binary probe it once. */
static GMutex caps_probe_lock;

BerthQemuCaps *
berth_qemu_caps_ref(BerthQemuCaps *caps)
{
    g_atomic_int_inc(&caps->ref);
    return caps;
}

void
berth_qemu_caps_unref(BerthQemuCaps *caps)
{
    if (!caps || !g_atomic_int_dec_and_test(&caps->ref)) {
        return;
    }
    g_free(caps->binary);
    g_free(caps->version_str);
    g_strfreev(caps->machines);
    g_clear_pointer(&caps->machine_alias, g_hash_table_unref);
    g_free(caps->default_machine);
    g_clear_pointer(&caps->devices, g_hash_table_unref);
    g_free(caps);
}

gboolean
berth_qemu_caps_has_device(const BerthQemuCaps *caps, const char *type)
{
    return caps && type && g_hash_table_contains(caps->devices, type);
}

gboolean
berth_qemu_caps_has_machine(const BerthQemuCaps *caps, const char *machine)
{
    if (!caps || !machine) {
        return FALSE;
    }
    for (guint i = 0; caps->machines && caps->machines[i]; i++) {
        if (strcmp(caps->machines[i], machine) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

void
berth_qemu_caps_cache_clear(void)
{
    g_mutex_lock(&caps_lock);
    g_clear_pointer(&caps_cache, g_hash_table_unref);
    g_mutex_unlock(&caps_lock);
}

guint
berth_qemu_caps_probe_count(void)
{
    g_mutex_lock(&caps_lock);
    guint n = caps_probe_count;
    g_mutex_unlock(&caps_lock);
    return n;
}

/* Whether this process can open /dev/kvm now. */
static gboolean
kvm_device_usable(void)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

    if (fd < 0) {
        return FALSE;
    }
    close(fd);
    return TRUE;
}

static BerthQemuCaps *
caps_alloc(const char *binary, gint64 mtime_us)
{
    BerthQemuCaps *c = g_new0(BerthQemuCaps, 1);

    c->ref = 1;
    c->binary = g_strdup(binary);
    c->mtime_us = mtime_us;
    c->machine_alias = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    c->devices = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    return c;
}

/* ---- the results as JSON (the cache file) and back ---- */

static char *
caps_to_json(const BerthQemuCaps *c)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    g_autoptr(GList) devices = g_hash_table_get_keys(c->devices);

    devices = g_list_sort(devices, (GCompareFunc) strcmp);
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "path", c->binary);
    berth_json_kv_int(g, "mtime_us", c->mtime_us);
    berth_json_kv_int(g, "version", c->version);
    berth_json_kv_str(g, "version_str", c->version_str);
    berth_json_kv_bool(g, "kvm", c->kvm);
    berth_json_kv_bool(g, "kvm_device", c->kvm_device);
    berth_json_kv_str(g, "default_machine", c->default_machine);
    berth_json_str(g, "machines");
    yajl_gen_array_open(g);
    for (guint i = 0; c->machines[i]; i++) {
        berth_json_str(g, c->machines[i]);
    }
    yajl_gen_array_close(g);
    berth_json_str(g, "machine_alias");
    yajl_gen_map_open(g);
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, c->machine_alias);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        berth_json_kv_str(g, k, v);
    }
    yajl_gen_map_close(g);
    berth_json_str(g, "devices");
    yajl_gen_array_open(g);
    for (GList *l = devices; l; l = l->next) {
        berth_json_str(g, l->data);
    }
    yajl_gen_array_close(g);
    yajl_gen_map_close(g);
    return berth_json_finish(g);
}

static yajl_val
json_get(yajl_val obj, const char *key, yajl_type type)
{
    const char *path[] = {key, NULL};

    return yajl_tree_get(obj, path, type);
}

static BerthQemuCaps *
caps_from_json(const char *json)
{
    char errbuf[128];
    yajl_val root = yajl_tree_parse(json, errbuf, sizeof(errbuf));
    BerthQemuCaps *c = NULL;

    if (!root || !YAJL_IS_OBJECT(root)) {
        goto cleanup;
    }
    yajl_val path = json_get(root, "path", yajl_t_string);
    yajl_val mtime = json_get(root, "mtime_us", yajl_t_number);
    yajl_val version = json_get(root, "version", yajl_t_number);
    yajl_val version_str = json_get(root, "version_str", yajl_t_string);
    yajl_val kvm = json_get(root, "kvm", yajl_t_any);
    yajl_val kvm_device = json_get(root, "kvm_device", yajl_t_any);
    yajl_val def = json_get(root, "default_machine", yajl_t_any);
    yajl_val machines = json_get(root, "machines", yajl_t_array);
    yajl_val alias = json_get(root, "machine_alias", yajl_t_object);
    yajl_val devices = json_get(root, "devices", yajl_t_array);
    if (!path || !mtime || !YAJL_IS_INTEGER(mtime) || !version || !YAJL_IS_INTEGER(version) ||
        !version_str || !kvm || !(YAJL_IS_TRUE(kvm) || YAJL_IS_FALSE(kvm)) || !kvm_device ||
        !(YAJL_IS_TRUE(kvm_device) || YAJL_IS_FALSE(kvm_device)) || !def ||
        !(YAJL_IS_STRING(def) || YAJL_IS_NULL(def)) || !machines || !alias || !devices) {
        goto cleanup;
    }
    c = caps_alloc(path->u.string, YAJL_GET_INTEGER(mtime));
    c->version = (guint) YAJL_GET_INTEGER(version);
    c->version_str = g_strdup(version_str->u.string);
    c->kvm = YAJL_IS_TRUE(kvm);
    c->kvm_device = YAJL_IS_TRUE(kvm_device);
    c->default_machine = YAJL_IS_STRING(def) ? g_strdup(def->u.string) : NULL;
    c->machines = g_new0(char *, machines->u.array.len + 1);
    for (size_t i = 0; i < machines->u.array.len; i++) {
        yajl_val m = machines->u.array.values[i];

        if (!YAJL_IS_STRING(m)) {
            g_clear_pointer(&c, berth_qemu_caps_unref);
            goto cleanup;
        }
        c->machines[i] = g_strdup(m->u.string);
    }
    for (size_t i = 0; i < alias->u.object.len; i++) {
        yajl_val v = alias->u.object.values[i];

        if (!YAJL_IS_STRING(v)) {
            g_clear_pointer(&c, berth_qemu_caps_unref);
            goto cleanup;
        }
        g_hash_table_insert(c->machine_alias, g_strdup(alias->u.object.keys[i]),
                            g_strdup(v->u.string));
    }
    for (size_t i = 0; i < devices->u.array.len; i++) {
        yajl_val v = devices->u.array.values[i];

        if (!YAJL_IS_STRING(v)) {
            g_clear_pointer(&c, berth_qemu_caps_unref);
            goto cleanup;
        }
        g_hash_table_add(c->devices, g_strdup(v->u.string));
    }

cleanup:
    yajl_tree_free(root);
    return c;
}

static char *
cache_file_path(const char *cache_dir, const char *binary)
{
    g_autofree char *sum = g_compute_checksum_for_string(G_CHECKSUM_SHA256, binary, -1);
    g_autofree char *name = g_strdup_printf("caps-%.16s.json", sum);

    return g_build_filename(cache_dir, name, NULL);
}

/* The cached result for @binary at @mtime_us, or NULL (missing, stale or unreadable). */
static BerthQemuCaps *
cache_file_load(const char *cache_dir, const char *binary, gint64 mtime_us, gboolean kvm_dev)
{
    g_autofree char *file = cache_file_path(cache_dir, binary);
    g_autofree char *text = NULL;
    gsize len = 0;
    struct stat st;

    if (stat(file, &st) != 0 || st.st_size > CAPS_JSON_MAX ||
        !g_file_get_contents(file, &text, &len, NULL) || strlen(text) != len) {
        return NULL;
    }
    BerthQemuCaps *c = caps_from_json(text);
    if (c && (strcmp(c->binary, binary) != 0 || c->mtime_us != mtime_us ||
              c->kvm_device != kvm_dev)) {
        g_clear_pointer(&c, berth_qemu_caps_unref);
    }
    return c;
}

/* Best effort: a cache that cannot be written costs a probe at the next start, nothing else.
 * g_file_set_contents writes a temporary file and renames it over the old one. */
static void
cache_file_store(const char *cache_dir, const BerthQemuCaps *c)
{
    g_autofree char *file = cache_file_path(cache_dir, c->binary);
    g_autofree char *json = caps_to_json(c);

    if (g_mkdir_with_parents(cache_dir, 0700) == 0) {
        g_file_set_contents_full(file, json, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, NULL);
    }
}

/* ---- the probe ---- */

typedef struct {
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
} ProbeLoop;

static gpointer
probe_loop_run(gpointer data)
{
    ProbeLoop *pl = data;

    g_main_context_push_thread_default(pl->ctx);
    g_main_loop_run(pl->loop);
    g_main_context_pop_thread_default(pl->ctx);
    return NULL;
}

static gboolean
probe_loop_quit(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

static gboolean
probe_fail(GError **error, const char *binary, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean
probe_fail(GError **error, const char *binary, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_autofree char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                "probing the capabilities of QEMU '%s' failed: %s", binary, msg);
    return FALSE;
}

static gboolean
probe_command(BerthQmp *qmp, const char *command, const char *args, gint64 deadline,
              yajl_val *out, GError **error)
{
    g_autofree char *reply = NULL;
    char errbuf[128];
    gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;

    if (left_ms <= 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT, "no time left for %s", command);
        return FALSE;
    }
    if (!berth_qmp_command(qmp, command, args, (guint) left_ms, NULL, &reply, NULL, error)) {
        return FALSE;
    }
    if (!reply || strlen(reply) > CAPS_JSON_MAX ||
        !(*out = yajl_tree_parse(reply, errbuf, sizeof(errbuf)))) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "the reply to %s is not JSON", command);
        return FALSE;
    }
    return TRUE;
}

static guint
json_uint_member(yajl_val obj, const char *key)
{
    yajl_val v = json_get(obj, key, yajl_t_number);

    return v && YAJL_IS_INTEGER(v) && YAJL_GET_INTEGER(v) >= 0 && YAJL_GET_INTEGER(v) < 1000
               ? (guint) YAJL_GET_INTEGER(v)
               : 0;
}

/* The queries, over a connected monitor. */
static gboolean
probe_query(BerthQmp *qmp, BerthQemuCaps *c, gint64 deadline, GError **error)
{
    yajl_val v = NULL;

    if (!probe_command(qmp, "query-version", NULL, deadline, &v, error)) {
        return FALSE;
    }
    yajl_val qemu = json_get(v, "qemu", yajl_t_object);
    yajl_val package = json_get(v, "package", yajl_t_string);
    guint major = qemu ? json_uint_member(qemu, "major") : 0;
    guint minor = qemu ? json_uint_member(qemu, "minor") : 0;
    guint micro = qemu ? json_uint_member(qemu, "micro") : 0;
    c->version = major * 1000000 + minor * 1000 + micro;
    c->version_str = package && *package->u.string
                         ? g_strdup_printf("%u.%u.%u (%s)", major, minor, micro,
                                           package->u.string)
                         : g_strdup_printf("%u.%u.%u", major, minor, micro);
    yajl_tree_free(v);
    if (!qemu || major == 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "query-version gave no version");
        return FALSE;
    }

    if (!probe_command(qmp, "query-kvm", NULL, deadline, &v, error)) {
        return FALSE;
    }
    c->kvm = YAJL_IS_TRUE(json_get(v, "present", yajl_t_any)) &&
             YAJL_IS_TRUE(json_get(v, "enabled", yajl_t_any));
    yajl_tree_free(v);

    if (!probe_command(qmp, "query-machines", NULL, deadline, &v, error)) {
        return FALSE;
    }
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
        yajl_val m = v->u.array.values[i];
        yajl_val name = json_get(m, "name", yajl_t_string);
        yajl_val alias = json_get(m, "alias", yajl_t_string);

        if (!name) {
            continue;
        }
        g_ptr_array_add(names, g_strdup(name->u.string));
        if (alias) {
            g_ptr_array_add(names, g_strdup(alias->u.string));
            g_hash_table_replace(c->machine_alias, g_strdup(alias->u.string),
                                 g_strdup(name->u.string));
        }
        if (YAJL_IS_TRUE(json_get(m, "is-default", yajl_t_any))) {
            g_free(c->default_machine);
            c->default_machine = g_strdup(name->u.string);
        }
    }
    yajl_tree_free(v);
    g_ptr_array_add(names, NULL);
    c->machines = (char **) g_ptr_array_steal(names, NULL);

    if (!probe_command(qmp, "qom-list-types", "{\"implements\":\"device\",\"abstract\":false}",
                       deadline, &v, error)) {
        return FALSE;
    }
    for (size_t i = 0; YAJL_IS_ARRAY(v) && i < v->u.array.len; i++) {
        yajl_val name = json_get(v->u.array.values[i], "name", yajl_t_string);

        if (name) {
            g_hash_table_add(c->devices, g_strdup(name->u.string));
        }
    }
    yajl_tree_free(v);
    if (!c->machines[0] || g_hash_table_size(c->devices) == 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU listed no machine types or no device types");
        return FALSE;
    }
    return TRUE;
}

/* Waits for @pid up to @wait_ms, then kills it and reaps it; returns its wait status. */
static int
probe_reap(GPid pid, guint wait_ms)
{
    int status = 0;
    gint64 until = g_get_monotonic_time() + (gint64) wait_ms * 1000;

    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);

        if (r == pid || (r < 0 && errno != EINTR)) {
            return status;
        }
        if (g_get_monotonic_time() >= until) {
            break;
        }
        g_usleep(5000);
    }
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

static char *
read_stderr(const char *file)
{
    g_autofree char *text = NULL;

    if (!g_file_get_contents(file, &text, NULL, NULL)) {
        return g_strdup("");
    }
    g_strstrip(text);
    if (strlen(text) > 512) {
        text[512] = '\0';
    }
    return g_steal_pointer(&text);
}

static gboolean
probe_run(BerthQemuCaps *c, GMainContext *ctx, GError **error)
{
    const gint64 deadline = g_get_monotonic_time() + BERTH_QEMU_CAPS_TIMEOUT_MS * 1000;
    g_autoptr(GError) local = NULL;
    g_autofree char *dir = g_dir_make_tmp("berth-caps-XXXXXX", &local);
    GPid pid = 0;
    gboolean ok = FALSE;

    if (!dir) {
        return probe_fail(error, c->binary, "%s", local->message);
    }
    g_autofree char *sock = g_build_filename(dir, "qmp.sock", NULL);
    g_autofree char *errfile = g_build_filename(dir, "stderr", NULL);
    g_autofree char *chardev = g_strdup_printf("socket,id=mon,path=%s,server=on,wait=off", sock);
    /* With /dev/kvm, KVM first and TCG as QEMU's fallback: query-kvm then tells which. */
    const char *argv[] = {c->binary, "-machine", "none", "-accel", c->kvm_device ? "kvm" : "tcg",
                          "-accel", "tcg", "-nodefaults", "-no-user-config", "-display", "none",
                          "-S", "-chardev", chardev, "-mon", "chardev=mon,mode=control", NULL};
    int errfd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);

    if (errfd < 0 || nullfd < 0 ||
        !g_spawn_async_with_fds(dir, (char **) argv, NULL,
                                G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_CLOEXEC_PIPES, NULL, NULL,
                                &pid, nullfd, nullfd, errfd, &local)) {
        if (errfd >= 0) {
            close(errfd);
        }
        if (nullfd >= 0) {
            close(nullfd);
        }
        probe_fail(error, c->binary, "cannot start it: %s",
                   local ? local->message : g_strerror(errno));
        goto cleanup_dir;
    }
    close(errfd);
    close(nullfd);
    g_mutex_lock(&caps_lock);
    caps_probe_count++;
    g_mutex_unlock(&caps_lock);

    /* Until the socket appears, watch for an early exit (bad binary, bad option). */
    while (!g_file_test(sock, G_FILE_TEST_EXISTS)) {
        int status;

        if (waitpid(pid, &status, WNOHANG) == pid) {
            g_autofree char *msg = read_stderr(errfile);

            pid = 0;
            probe_fail(error, c->binary, "it exited before its monitor came up: %s", msg);
            goto cleanup_dir;
        }
        if (g_get_monotonic_time() >= deadline) {
            probe_fail(error, c->binary, "its monitor socket did not appear within %u ms",
                       BERTH_QEMU_CAPS_TIMEOUT_MS);
            goto cleanup;
        }
        g_usleep(5000);
    }

    ProbeLoop pl = {0};
    if (!ctx) {
        pl.ctx = g_main_context_new();
        pl.loop = g_main_loop_new(pl.ctx, FALSE);
        pl.thread = g_thread_new("qemu-caps", probe_loop_run, &pl);
        ctx = pl.ctx;
    }
    BerthQmp *qmp = berth_qmp_new(ctx, NULL, NULL, NULL);
    gint64 left_ms = (deadline - g_get_monotonic_time()) / 1000;
    if (left_ms <= 0 || !berth_qmp_connect(qmp, sock, (guint) MAX(left_ms, 1), NULL, &local) ||
        !probe_query(qmp, c, deadline, &local)) {
        probe_fail(error, c->binary, "%s", local ? local->message : "timed out");
    } else {
        ok = TRUE;
        /* The reply may race with QEMU closing the socket: its exit is what counts. */
        berth_qmp_command(qmp, "quit", NULL, CAPS_QUIT_WAIT_MS, NULL, NULL, NULL, NULL);
    }
    berth_qmp_close(qmp);
    berth_qmp_unref(qmp);
    if (pl.thread) {
        g_main_context_invoke(pl.ctx, probe_loop_quit, pl.loop);
        g_thread_join(pl.thread);
        g_main_loop_unref(pl.loop);
        g_main_context_unref(pl.ctx);
    }

cleanup:
    if (pid) {
        probe_reap(pid, ok ? CAPS_QUIT_WAIT_MS : 0);
    }
cleanup_dir:
    unlink(sock);
    unlink(errfile);
    rmdir(dir);
    return ok;
}

/* ---- the cache ---- */

static BerthQemuCaps *
cache_lookup(const char *binary, gint64 mtime_us, gboolean kvm_dev)
{
    BerthQemuCaps *c = NULL;

    g_mutex_lock(&caps_lock);
    if (caps_cache) {
        c = g_hash_table_lookup(caps_cache, binary);
        c = c && c->mtime_us == mtime_us && c->kvm_device == kvm_dev ? berth_qemu_caps_ref(c)
                                                                      : NULL;
    }
    g_mutex_unlock(&caps_lock);
    return c;
}

static void
cache_insert(BerthQemuCaps *c)
{
    g_mutex_lock(&caps_lock);
    if (!caps_cache) {
        caps_cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                           (GDestroyNotify) berth_qemu_caps_unref);
    }
    g_hash_table_replace(caps_cache, g_strdup(c->binary), berth_qemu_caps_ref(c));
    g_mutex_unlock(&caps_lock);
}

BerthQemuCaps *
berth_qemu_caps_get(const char *binary, const char *cache_dir, GMainContext *ctx,
                    GError **error)
{
    g_autofree char *path = NULL;
    struct stat st;

    g_return_val_if_fail(binary != NULL, NULL);
    path = g_path_is_absolute(binary) ? g_strdup(binary) : g_find_program_in_path(binary);
    if (!path) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "QEMU binary '%s' is not in PATH", binary);
        return NULL;
    }
    if (stat(path, &st) != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "QEMU binary '%s' cannot be read: %s", path, g_strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "QEMU binary '%s' is not a regular file", path);
        return NULL;
    }
    if (access(path, X_OK) != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "QEMU binary '%s' is not executable", path);
        return NULL;
    }
    gint64 mtime_us = (gint64) st.st_mtim.tv_sec * G_USEC_PER_SEC + st.st_mtim.tv_nsec / 1000;

    gboolean kvm_dev = kvm_device_usable();
    BerthQemuCaps *c = cache_lookup(path, mtime_us, kvm_dev);
    if (c) {
        return c;
    }
    g_mutex_lock(&caps_probe_lock);
    c = cache_lookup(path, mtime_us, kvm_dev);
    if (!c && cache_dir) {
        c = cache_file_load(cache_dir, path, mtime_us, kvm_dev);
        if (c) {
            cache_insert(c);
        }
    }
    if (!c) {
        c = caps_alloc(path, mtime_us);
        c->kvm_device = kvm_dev;
        if (!probe_run(c, ctx, error)) {
            g_clear_pointer(&c, berth_qemu_caps_unref);
        } else {
            cache_insert(c);
            if (cache_dir) {
                cache_file_store(cache_dir, c);
            }
        }
    }
    g_mutex_unlock(&caps_probe_lock);
    return c;
}
