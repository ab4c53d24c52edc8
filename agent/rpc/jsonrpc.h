/* JSON-RPC 2.0 framing: parsing one request line and building responses and notifications. */
#pragma once

#include <glib.h>
#include <yajl/yajl_tree.h>

/* JSON-RPC's own error codes. */
#define BERTH_RPC_PARSE_ERROR -32700
#define BERTH_RPC_INVALID_REQUEST -32600
#define BERTH_RPC_METHOD_NOT_FOUND -32601
#define BERTH_RPC_INVALID_PARAMS -32602
#define BERTH_RPC_INTERNAL_ERROR -32603

/* One parsed request. */
typedef struct {
    char *id_json;   /* the id exactly as JSON text (number or string), NULL for a notification */
    char *method;
    yajl_val params; /* an object, or NULL when absent (positional arrays are refused) */
    yajl_val tree;   /* the whole parsed request, which owns @params */
} BerthRpcRequest;

/* Requests nested deeper than this (objects and arrays) are refused with a parse error before
 * yajl sees them, because yajl_tree recurses once per level. */
#define BERTH_RPC_MAX_DEPTH 64

void berth_rpc_request_free(BerthRpcRequest *req);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthRpcRequest, berth_rpc_request_free)

/*
 * Parses one line (without its newline; @len bytes, not NUL-terminated). A batch (a JSON
 * array) is refused with INVALID_REQUEST; "params": null counts as absent; the id must be a
 * string, an integer or null (id_json "null"); no id at all is a notification. On failure
 * returns NULL, sets *@rpc_code (PARSE_ERROR or INVALID_REQUEST), and *@id_json to the
 * request's id when one could be read (so the error response can carry it), and fills @error.
 */
BerthRpcRequest *berth_rpc_request_parse(const char *line, gsize len, int *rpc_code,
                                         char **id_json, GError **error);

/* {"jsonrpc":"2.0","id":ID,"result":RESULT}\n (RESULT NULL = null). g_free the result. */
char *berth_rpc_response_result(const char *id_json, const char *result_json);
/* {"jsonrpc":"2.0","id":ID,"error":{"code":C,"message":M,"data":{"name":NAME}}}\n
 * (@id_json NULL = null). */
char *berth_rpc_response_error(const char *id_json, int code, const char *name,
                               const char *message);
/* {"jsonrpc":"2.0","method":M,"params":P}\n */
char *berth_rpc_notification(const char *method, const char *params_json);

/* Typed param readers: FALSE with an invalid-argument error naming the param when it has the
 * wrong type, or when it is missing and @required. A missing optional param leaves *out as
 * it was. */
gboolean berth_rpc_param_string(yajl_val params, const char *name, gboolean required,
                                const char **out, GError **error);
gboolean berth_rpc_param_int(yajl_val params, const char *name, gboolean required,
                             gint64 *out, GError **error);
gboolean berth_rpc_param_bool(yajl_val params, const char *name, gboolean required,
                              gboolean *out, GError **error);
gboolean berth_rpc_param_object(yajl_val params, const char *name, gboolean required,
                                yajl_val *out, GError **error);
/* FALSE with an invalid-argument error naming the first member of @params (may be NULL) that is
 * not in the NULL-terminated @allowed list, so that a typo in a param name is not ignored. */
gboolean berth_rpc_params_check(yajl_val params, const char *const *allowed, GError **error);

/* @s as a JSON string literal, quoted and escaped (g_free it). */
char *berth_rpc_json_string(const char *s);
/* The data.name the server sends with JSON-RPC's own codes: "parse-error", "invalid-request",
 * "method-not-found", "invalid-argument"; "internal-error" for anything else. */
const char *berth_rpc_code_name(int rpc_code);
/* Appends @v as compact JSON text (recursive: only for trees whose depth was bounded). */
void berth_rpc_json_append_value(GString *out, yajl_val v);
/* FALSE when @text (@len bytes) nests objects and arrays deeper than @max_depth. */
gboolean berth_rpc_json_depth_ok(const char *text, gsize len, guint max_depth);
