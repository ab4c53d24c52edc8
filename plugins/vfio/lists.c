/* The active and inactive lists of the vfio plugin and their atomic file. */
#include "lists.h"

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include <berth/error.h>
#include <berth/json.h>

#include "pci-address.h"

/* The file is ours, but it is outside input after all: bound it. */
#define LISTS_FILE_MAX (1024 * 1024)

struct VfioLists {
    char *path;
    GHashTable *active;   /* address -> VfioEntry */
    GHashTable *inactive; /* address -> VfioEntry */
};

static void
entry_free(gpointer p)
{
    VfioEntry *e = p;

    g_free(e->address);
    g_free(e->domain);
    g_free(e->orig_driver);
    g_free(e);
}

static VfioEntry *
entry_new(const char *address, const char *domain, gboolean managed, const char *orig_driver)
{
    VfioEntry *e = g_new0(VfioEntry, 1);

    e->address = g_strdup(address);
    e->domain = g_strdup(domain);
    e->managed = managed;
    e->orig_driver = g_strdup(orig_driver);
    return e;
}

VfioLists *
vfio_lists_new(const char *path)
{
    VfioLists *l = g_new0(VfioLists, 1);

    l->path = g_strdup(path);
    l->active = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, entry_free);
    l->inactive = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, entry_free);
    return l;
}

void
vfio_lists_free(VfioLists *l)
{
    if (!l) {
        return;
    }
    g_hash_table_unref(l->active);
    g_hash_table_unref(l->inactive);
    g_free(l->path);
    g_free(l);
}

const VfioEntry *
vfio_lists_active(VfioLists *l, const char *address)
{
    return g_hash_table_lookup(l->active, address);
}

const VfioEntry *
vfio_lists_inactive(VfioLists *l, const char *address)
{
    return g_hash_table_lookup(l->inactive, address);
}

void
vfio_lists_set_active(VfioLists *l, const char *address, const char *domain, gboolean managed,
                      const char *orig_driver)
{
    VfioEntry *e = entry_new(address, domain, managed, orig_driver);

    /* @address may be an entry's own string: look up with the copy. */
    g_hash_table_remove(l->inactive, e->address);
    g_hash_table_replace(l->active, e->address, e);
}

void
vfio_lists_set_inactive(VfioLists *l, const char *address, const char *orig_driver)
{
    VfioEntry *e = entry_new(address, NULL, FALSE, orig_driver);

    g_hash_table_remove(l->active, e->address);
    g_hash_table_replace(l->inactive, e->address, e);
}

void
vfio_lists_remove(VfioLists *l, const char *address)
{
    g_autofree char *copy = g_strdup(address);

    g_hash_table_remove(l->active, copy);
    g_hash_table_remove(l->inactive, copy);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *) a, *(char *const *) b);
}

static void
gen_list(yajl_gen g, const char *key, GHashTable *t, gboolean active)
{
    g_autofree gpointer *keys = g_hash_table_get_keys_as_array(t, NULL);
    guint n = g_hash_table_size(t);

    qsort(keys, n, sizeof(gpointer), cmp_str);
    berth_json_str(g, key);
    yajl_gen_array_open(g);
    for (guint i = 0; i < n; i++) {
        const VfioEntry *e = g_hash_table_lookup(t, keys[i]);

        yajl_gen_map_open(g);
        berth_json_kv_str(g, "address", e->address);
        if (active) {
            berth_json_kv_str(g, "domain", e->domain);
            berth_json_kv_bool(g, "managed", e->managed);
        }
        berth_json_kv_str(g, "driver", e->orig_driver);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
}

char *
vfio_lists_to_json(VfioLists *l)
{
    yajl_gen g = yajl_gen_alloc(NULL);

    yajl_gen_map_open(g);
    berth_json_kv_int(g, "version", 1);
    gen_list(g, "active", l->active, TRUE);
    gen_list(g, "inactive", l->inactive, FALSE);
    yajl_gen_map_close(g);
    return berth_json_finish(g);
}

static gboolean
write_all(int fd, const char *data, gsize len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return FALSE;
        }
        data += n;
        len -= (gsize) n;
    }
    return TRUE;
}

/* temp file, fsync, rename, fsync of the directory: a crash leaves the old or the new file. */
static gboolean
write_atomic(const char *path, const char *data, GError **error)
{
    g_autofree char *dir = g_path_get_dirname(path);
    g_autofree char *base = g_path_get_basename(path);
    g_autofree char *tmp = g_strdup_printf("%s/.%s.tmp-XXXXXX", dir, base);
    int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0600);
    int dfd;
    int err;

    if (fd < 0) {
        err = errno;
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "cannot create a temporary file in '%s': %s", dir, g_strerror(err));
        return FALSE;
    }
    if (!write_all(fd, data, strlen(data)) || fsync(fd) < 0) {
        err = errno;
        close(fd);
        g_unlink(tmp);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot write '%s': %s", tmp,
                    g_strerror(err));
        return FALSE;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        err = errno;
        g_unlink(tmp);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot rename '%s' to '%s': %s",
                    tmp, path, g_strerror(err));
        return FALSE;
    }
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) < 0) {
        err = errno;
        if (dfd >= 0) {
            close(dfd);
        }
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot sync directory '%s': %s",
                    dir, g_strerror(err));
        return FALSE;
    }
    close(dfd);
    return TRUE;
}

gboolean
vfio_lists_save(VfioLists *l, GError **error)
{
    g_autofree char *json = vfio_lists_to_json(l);
    g_autofree char *text = g_strconcat(json, "\n", NULL);

    return write_atomic(l->path, text, error);
}

static const char *
get_str(yajl_val obj, const char *key)
{
    const char *path[] = { key, NULL };
    yajl_val v = yajl_tree_get(obj, path, yajl_t_any);

    return v && YAJL_IS_STRING(v) ? YAJL_GET_STRING(v) : NULL;
}

static gboolean
load_list(VfioLists *l, yajl_val root, const char *key, gboolean active, GError **error)
{
    const char *path[] = { key, NULL };
    yajl_val arr = yajl_tree_get(root, path, yajl_t_array);

    if (!arr) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "'%s' has no '%s' list", l->path,
                    key);
        return FALSE;
    }
    for (gsize i = 0; i < arr->u.array.len; i++) {
        yajl_val e = arr->u.array.values[i];
        const char *addr = YAJL_IS_OBJECT(e) ? get_str(e, "address") : NULL;
        const char *domain = YAJL_IS_OBJECT(e) ? get_str(e, "domain") : NULL;
        const char *driver = YAJL_IS_OBJECT(e) ? get_str(e, "driver") : NULL;
        const char *mpath[] = { "managed", NULL };
        yajl_val managed = YAJL_IS_OBJECT(e) ? yajl_tree_get(e, mpath, yajl_t_any) : NULL;
        VfioPciAddr a;

        if (!vfio_pci_addr_parse_canonical(addr, &a, NULL) || (active && !domain)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                        "entry %" G_GSIZE_FORMAT " of the '%s' list in '%s' is malformed", i,
                        key, l->path);
            return FALSE;
        }
        if (active) {
            vfio_lists_set_active(l, addr, domain, managed && YAJL_IS_TRUE(managed), driver);
        } else {
            vfio_lists_set_inactive(l, addr, driver);
        }
    }
    return TRUE;
}

gboolean
vfio_lists_load(VfioLists *l, GError **error)
{
    g_autoptr(GError) read_error = NULL;
    g_autofree char *text = NULL;
    gsize len = 0;
    char err[256];
    yajl_val root;
    gboolean ok;

    g_hash_table_remove_all(l->active);
    g_hash_table_remove_all(l->inactive);
    if (!g_file_get_contents(l->path, &text, &len, &read_error)) {
        if (g_error_matches(read_error, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
            return TRUE;
        }
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot read '%s': %s", l->path,
                    read_error->message);
        return FALSE;
    }
    if (len > LISTS_FILE_MAX) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "'%s' is larger than %d bytes",
                    l->path, LISTS_FILE_MAX);
        return FALSE;
    }
    root = yajl_tree_parse(text, err, sizeof(err));
    if (!root || !YAJL_IS_OBJECT(root)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "'%s' is not a JSON object: %s",
                    l->path, root ? "" : err);
        yajl_tree_free(root);
        return FALSE;
    }
    ok = load_list(l, root, "active", TRUE, error) && load_list(l, root, "inactive", FALSE, error);
    yajl_tree_free(root);
    if (!ok) {
        g_hash_table_remove_all(l->active);
        g_hash_table_remove_all(l->inactive);
    }
    return ok;
}

void
vfio_lists_foreach(VfioLists *l, void (*func)(const VfioEntry *e, gpointer data), gpointer data)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, l->active);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        func(v, data);
    }
    g_hash_table_iter_init(&it, l->inactive);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        func(v, data);
    }
}
