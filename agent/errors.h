/* Names and JSON-RPC codes of the BERTH_ERROR codes (the API's named errors). */
#pragma once

#include <berth/error.h>

/* The API's name of a code, e.g. "no-such-domain"; "internal-error" for unknown codes. */
const char *berth_error_name(int code);
/* The JSON-RPC error code the API sends for @error (any domain). */
int berth_error_rpc_code(const GError *error);
/* The name for any GError: BERTH_ERROR names, G_IO_ERROR_CANCELLED -> "cancelled", else
 * "internal-error". */
const char *berth_error_name_for(const GError *error);
