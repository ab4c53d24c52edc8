/* Checks that docs/api.md documents every method the daemon and the server register, and
 * every core event type and error name, and no method that does not exist. */
#include <string.h>

#include "build-config.h"
#include "core.h"
#include "errors.h"
#include "rpc/server.h"

/* Every "### `NAME`" heading of @doc above "## Plugin methods": the core methods it documents. */
static char **
doc_methods(const char *doc)
{
    GPtrArray *names = g_ptr_array_new();
    g_auto(GStrv) lines = g_strsplit(doc, "\n", -1);

    for (guint i = 0; lines[i]; i++) {
        const char *l = lines[i];
        const char *end;

        /* Below it: methods of plugins, which their own tests check. */
        if (g_str_has_prefix(l, "## Plugin methods")) {
            break;
        }
        if (!g_str_has_prefix(l, "### `")) {
            continue;
        }
        l += strlen("### `");
        end = strchr(l, '`');
        if (end) {
            g_ptr_array_add(names, g_strndup(l, (gsize) (end - l)));
        }
    }
    g_ptr_array_add(names, NULL);
    return (char **) g_ptr_array_free(names, FALSE);
}

static char *
read_doc(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *path = g_build_filename(BERTH_SOURCE_ROOT, "docs", "api.md", NULL);
    char *doc = NULL;

    g_assert_true(g_file_get_contents(path, &doc, NULL, &error));
    g_assert_no_error(error);
    return doc;
}

static void
test_methods_documented(void)
{
    g_autofree char *doc = read_doc();
    g_auto(GStrv) documented = doc_methods(doc);
    /* Registration only stores the core pointer; no handler runs here. */
    BerthRpcServer *server = berth_rpc_server_new(NULL, NULL, NULL);
    g_auto(GStrv) methods = NULL;
    guint missing = 0, stale = 0;

    berth_daemon_register_methods(server, NULL);
    berth_daemon_register_tls_methods(server, NULL);
    methods = berth_rpc_server_list_methods(server);
    g_assert_cmpuint(g_strv_length(methods), >=, 18);
    for (guint i = 0; methods[i]; i++) {
        if (!g_strv_contains((const char *const *) documented, methods[i])) {
            g_printerr("docs/api.md has no '### `%s`' section\n", methods[i]);
            missing++;
        }
    }
    for (guint i = 0; documented[i]; i++) {
        if (!g_strv_contains((const char *const *) methods, documented[i])) {
            g_printerr("docs/api.md documents '%s', which no code registers\n", documented[i]);
            stale++;
        }
    }
    g_assert_cmpuint(missing, ==, 0);
    g_assert_cmpuint(stale, ==, 0);
    berth_rpc_server_free(server);
}

static void
test_events_and_errors_documented(void)
{
    static const char *const types[] = {
        "domain-defined", "domain-undefined", "domain-started", "domain-suspended",
        "domain-resumed", "domain-shutdown", "domain-stopped", "domain-crashed",
        "device-removed", "nodedev-detached", "nodedev-reattached", "job-finished",
        "events-lost",
    };
    g_autofree char *doc = read_doc();

    for (guint i = 0; i < G_N_ELEMENTS(types); i++) {
        g_autofree char *row = g_strdup_printf("| `%s` |", types[i]);

        if (!strstr(doc, row)) {
            g_printerr("docs/api.md has no table row for event type '%s'\n", types[i]);
        }
        g_assert_nonnull(strstr(doc, row));
    }
    for (int code = 0; code < BERTH_ERROR_LAST; code++) {
        g_autoptr(GError) error = g_error_new_literal(BERTH_ERROR, code, "x");
        g_autofree char *row = g_strdup_printf("| `%s` | %d |", berth_error_name(code),
                                               berth_error_rpc_code(error));

        if (!strstr(doc, row)) {
            g_printerr("docs/api.md has no row '%s'\n", row);
        }
        g_assert_nonnull(strstr(doc, row));
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rpc/api-doc/every-method", test_methods_documented);
    g_test_add_func("/rpc/api-doc/events-and-errors", test_events_and_errors_documented);
    return g_test_run();
}
