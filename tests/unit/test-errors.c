/* Tests of the named errors and their JSON-RPC codes. */
#include <gio/gio.h>

#include "errors.h"

static void
test_names(void)
{
    g_assert_cmpstr(berth_error_name(BERTH_ERROR_NO_SUCH_DOMAIN), ==, "no-such-domain");
    g_assert_cmpstr(berth_error_name(BERTH_ERROR_ACCESS_DENIED), ==, "access-denied");
    g_assert_cmpstr(berth_error_name(-1), ==, "internal-error");
    g_assert_cmpstr(berth_error_name(BERTH_ERROR_LAST), ==, "internal-error");
    for (int i = 0; i < BERTH_ERROR_LAST; i++) {
        g_assert_nonnull(berth_error_name(i));
    }
}

static void
test_codes(void)
{
    g_autoptr(GError) inval = g_error_new(BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "x");
    g_autoptr(GError) busy = g_error_new(BERTH_ERROR, BERTH_ERROR_BUSY, "x");
    g_autoptr(GError) cancel = g_error_new(G_IO_ERROR, G_IO_ERROR_CANCELLED, "x");
    g_autoptr(GError) other = g_error_new(G_FILE_ERROR, G_FILE_ERROR_NOENT, "x");

    g_assert_cmpint(berth_error_rpc_code(inval), ==, -32602);
    g_assert_cmpint(berth_error_rpc_code(busy), ==, -32000 - BERTH_ERROR_BUSY);
    g_assert_cmpstr(berth_error_name_for(cancel), ==, "cancelled");
    g_assert_cmpstr(berth_error_name_for(other), ==, "internal-error");
    g_assert_cmpint(berth_error_rpc_code(other), ==, -32603);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/core/errors/names", test_names);
    g_test_add_func("/core/errors/rpc-codes", test_codes);
    return g_test_run();
}
