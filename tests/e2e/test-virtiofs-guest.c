/* End-to-end test: a real Linux guest mounts a share served by berth-virtiofsd and works in it. */
#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Environment set by meson: the backend binary, the helper scripts and the guest cache dir. */
#define ENV_VIRTIOFSD "BERTH_VIRTIOFSD"
#define ENV_RUN_GUEST "BERTH_RUN_GUEST"
#define ENV_GUEST_DIR "BERTH_GUEST_DIR"
/* "debian" runs the same test against /usr/lib/qemu/virtiofsd, to check the kit itself. */
#define ENV_BACKEND "BERTH_E2E_BACKEND"

/*
 * The guest side: busybox sh in the share's root. Lines starting with a capitalised tag are
 * checked by the host; `set -e` makes any failed step end the script with a non-zero EXIT.
 */
static const char guest_script[] =
    "set -e\n"
    "mkdir -p d1/sub\n"
    "echo hello > d1/a.txt\n"
    "printf 'line1\\nline2\\n' > d1/sub/b.txt\n"
    "seq 1 200000 > big\n"
    "sync\n"
    /* Read back from the host, not from the guest's page cache. */
    "echo 3 > /proc/sys/vm/drop_caches\n"
    "echo \"READBACK $(cat d1/a.txt)\"\n"
    "echo \"BIGSUM $(md5sum big | cut -d' ' -f1)\"\n"
    "echo \"HOSTFILE $(cat from-host.txt)\"\n"
    "echo \"LIST $(ls d1 | tr '\\n' ' ')\"\n"
    "dd if=big of=part bs=4096 skip=10 count=3 2>/dev/null\n"
    "truncate -s 5000 part\n"
    "mv d1/a.txt d1/renamed.txt\n"
    "mv d1/sub d2\n"
    "echo appended >> d1/renamed.txt\n"
    "mkdir gone\n"
    "touch gone/x\n"
    "rm gone/x\n"
    "rmdir gone\n"
    "echo bye > from-host-copy\n"
    "rm from-host.txt\n"
    "ln -s d1/renamed.txt link\n"
    "echo \"LINK $(readlink link)\"\n"
    "echo \"STAT $(stat -c '%s %F' d1/renamed.txt)\"\n"
    "echo \"FIND $(find . | sort | tr '\\n' ' ')\"\n"
    "sync\n";

typedef struct {
    const char *backend;
    const char *cache;
    const char *pool;
} Variant;

static GString *seq_bytes(guint from, guint to)
{
    GString *s = g_string_new(NULL);

    for (guint i = from; i <= to; i++) {
        g_string_append_printf(s, "%u\n", i);
    }
    return s;
}

/* The value after "TAG " on its console line, or NULL. */
static char *console_value(const char *console, const char *tag)
{
    g_autofree char *needle = g_strdup_printf("\n%s ", tag);
    const char *p = strstr(console, needle);

    if (p == NULL) {
        return NULL;
    }
    p += strlen(needle);
    const char *end = strpbrk(p, "\r\n");
    return g_strndup(p, end != NULL ? (gsize)(end - p) : strlen(p));
}

/* Lists the tree under @dir as sorted "path:type" lines (d, f, l). */
static void walk(const char *root, const char *rel, GPtrArray *out)
{
    g_autofree char *path = g_build_filename(root, rel, NULL);
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    const char *name;

    g_assert_nonnull(dir);
    while ((name = g_dir_read_name(dir)) != NULL) {
        g_autofree char *child_rel = *rel ? g_build_filename(rel, name, NULL) : g_strdup(name);
        g_autofree char *child = g_build_filename(root, child_rel, NULL);
        struct stat st;
        g_assert_cmpint(lstat(child, &st), ==, 0);
        char type = S_ISDIR(st.st_mode) ? 'd' : S_ISLNK(st.st_mode) ? 'l' : 'f';
        g_ptr_array_add(out, g_strdup_printf("%s:%c", child_rel, type));
        if (type == 'd') {
            walk(root, child_rel, out);
        }
    }
}

static gint cmp_str(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void assert_file(const char *share, const char *rel, const char *data, gsize len)
{
    g_autofree char *path = g_build_filename(share, rel, NULL);
    g_autofree char *contents = NULL;
    gsize got = 0;

    g_assert_true(g_file_get_contents(path, &contents, &got, NULL));
    g_assert_cmpmem(contents, got, data, len);
}

static void test_guest(gconstpointer data)
{
    const Variant *v = data;
    const char *run_guest = g_getenv(ENV_RUN_GUEST);
    const char *guest_dir = g_getenv(ENV_GUEST_DIR);
    const char *virtiofsd = g_getenv(ENV_VIRTIOFSD);
    const char *backend = g_getenv(ENV_BACKEND) ? g_getenv(ENV_BACKEND) : v->backend;
    g_autoptr(GError) error = NULL;

    if (run_guest == NULL || guest_dir == NULL) {
        g_test_skip(ENV_RUN_GUEST " and " ENV_GUEST_DIR " are not set (run through meson)");
        return;
    }
    g_autofree char *tmp = g_dir_make_tmp("berth-e2e-XXXXXX", &error);
    g_assert_no_error(error);
    g_autofree char *share = g_build_filename(tmp, "share", NULL);
    g_autofree char *script = g_build_filename(tmp, "test.sh", NULL);
    g_assert_cmpint(g_mkdir(share, 0755), ==, 0);
    g_assert_true(g_file_set_contents(script, guest_script, -1, NULL));
    g_autofree char *host_file = g_build_filename(share, "from-host.txt", NULL);
    g_assert_true(g_file_set_contents(host_file, "written by the host", -1, NULL));

    const char *argv[] = { run_guest, "--guest-dir", guest_dir, "--share", share,
                           "--script", script, "--backend", backend,
                           "--virtiofsd",
                           g_str_equal(backend, "berth") && virtiofsd ? virtiofsd : "",
                           "--cache", v->cache, "--thread-pool-size", v->pool,
                           "--timeout", "300", NULL };
    g_autofree char *console = NULL;
    g_autofree char *err = NULL;
    int status = 0;
    g_assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                               &console, &err, &status, &error));
    g_assert_no_error(error);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77) {
        g_autofree char *reason = g_strstrip(g_strdup(err));
        g_test_skip(reason);
        const char *rm_argv[] = { "rm", "-rf", tmp, NULL };
        g_spawn_sync(NULL, (char **)rm_argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                     NULL, NULL);
        return;
    }
    g_test_message("guest console:\n%s", console);
    if (!g_spawn_check_wait_status(status, NULL)) {
        g_test_message("run-guest stderr:\n%s", err);
    }
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* The guest's view. */
    g_autofree char *padded = g_strconcat("\n", console, NULL);
    g_assert_nonnull(strstr(padded, "\nBERTH-E2E: MOUNTED"));
    g_autofree char *exit_rc = console_value(padded, "BERTH-E2E: EXIT");
    g_assert_cmpstr(exit_rc, ==, "0");
    g_autofree char *readback = console_value(padded, "READBACK");
    g_assert_cmpstr(readback, ==, "hello");
    g_autoptr(GString) big = seq_bytes(1, 200000);
    g_autofree char *want_sum = g_compute_checksum_for_data(G_CHECKSUM_MD5,
                                                            (const guchar *)big->str, big->len);
    g_autofree char *bigsum = console_value(padded, "BIGSUM");
    g_assert_cmpstr(bigsum, ==, want_sum);
    g_autofree char *hostfile = console_value(padded, "HOSTFILE");
    g_assert_cmpstr(hostfile, ==, "written by the host");
    g_autofree char *list = console_value(padded, "LIST");
    g_assert_cmpstr(list, ==, "a.txt sub ");
    g_autofree char *link = console_value(padded, "LINK");
    g_assert_cmpstr(link, ==, "d1/renamed.txt");
    g_autofree char *stat_line = console_value(padded, "STAT");
    g_assert_cmpstr(stat_line, ==, "15 regular file");
    g_autofree char *find = console_value(padded, "FIND");
    g_assert_cmpstr(find, ==,
                    ". ./big ./d1 ./d1/renamed.txt ./d2 ./d2/b.txt ./from-host-copy ./link "
                    "./part ");

    /* The host's view: exactly this tree, these bytes. */
    g_autoptr(GPtrArray) tree = g_ptr_array_new_with_free_func(g_free);
    walk(share, "", tree);
    g_ptr_array_sort(tree, cmp_str);
    g_ptr_array_add(tree, NULL);
    g_autofree char *joined = g_strjoinv(" ", (char **)tree->pdata);
    g_assert_cmpstr(joined, ==,
                    "big:f d1/renamed.txt:f d1:d d2/b.txt:f d2:d from-host-copy:f link:l part:f");
    assert_file(share, "big", big->str, big->len);
    assert_file(share, "d1/renamed.txt", "hello\nappended\n", 15);
    assert_file(share, "d2/b.txt", "line1\nline2\n", 12);
    assert_file(share, "from-host-copy", "bye\n", 4);
    assert_file(share, "part", big->str + 40960, 5000);
    g_autofree char *link_path = g_build_filename(share, "link", NULL);
    g_autofree char *target = g_file_read_link(link_path, NULL);
    g_assert_cmpstr(target, ==, "d1/renamed.txt");

    const char *rm_argv[] = { "rm", "-rf", tmp, NULL };
    g_spawn_sync(NULL, (char **)rm_argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL,
                 NULL);
}

int main(int argc, char **argv)
{
    static const Variant auto_pool0 = { "berth", "auto", "0" };
    static const Variant never_pool8 = { "berth", "never", "8" };

    g_test_init(&argc, &argv, NULL);
    g_test_add_data_func("/e2e/virtiofs/guest-file-work/cache-auto-pool-0", &auto_pool0,
                         test_guest);
    g_test_add_data_func("/e2e/virtiofs/guest-file-work/cache-never-pool-8", &never_pool8,
                         test_guest);
    return g_test_run();
}
