/* Names and JSON-RPC codes of the BERTH_ERROR codes. */
#include "errors.h"

#include <gio/gio.h>

static const char *const error_names[BERTH_ERROR_LAST] = {
    [BERTH_ERROR_INTERNAL] = "internal-error",
    [BERTH_ERROR_INVALID_ARGUMENT] = "invalid-argument",
    [BERTH_ERROR_NO_SUCH_DOMAIN] = "no-such-domain",
    [BERTH_ERROR_INVALID_STATE] = "invalid-state",
    [BERTH_ERROR_ACCESS_DENIED] = "access-denied",
    [BERTH_ERROR_BUSY] = "busy",
    [BERTH_ERROR_TIMEOUT] = "timeout",
    [BERTH_ERROR_UNSUPPORTED] = "unsupported",
    [BERTH_ERROR_PLUGIN_FAILED] = "plugin-failed",
    [BERTH_ERROR_CANCELLED] = "cancelled",
    [BERTH_ERROR_NO_SUCH_JOB] = "no-such-job",
    [BERTH_ERROR_NO_SUCH_DEVICE] = "no-such-device",
    [BERTH_ERROR_EXISTS] = "exists",
};

const char *
berth_error_name(int code)
{
    if (code < 0 || code >= BERTH_ERROR_LAST || !error_names[code]) {
        return "internal-error";
    }
    return error_names[code];
}

const char *
berth_error_name_for(const GError *error)
{
    if (error && error->domain == BERTH_ERROR) {
        return berth_error_name(error->code);
    }
    if (error && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
        return "cancelled";
    }
    if (error && g_error_matches(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT)) {
        return "timeout";
    }
    return "internal-error";
}

/* Application errors use -32000 - code (JSON-RPC's server-error range); invalid arguments use
 * the standard "Invalid params" code so that generic clients understand them. */
int
berth_error_rpc_code(const GError *error)
{
    const char *name = berth_error_name_for(error);

    if (error && error->domain == BERTH_ERROR) {
        if (error->code == BERTH_ERROR_INVALID_ARGUMENT) {
            return -32602;
        }
        if (error->code == BERTH_ERROR_INTERNAL) {
            return -32603;
        }
        return -32000 - error->code;
    }
    if (g_str_equal(name, "cancelled")) {
        return -32000 - BERTH_ERROR_CANCELLED;
    }
    if (g_str_equal(name, "timeout")) {
        return -32000 - BERTH_ERROR_TIMEOUT;
    }
    return -32603;
}
