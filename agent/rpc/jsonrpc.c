/* JSON-RPC 2.0 framing: parsing one request line and building responses and notifications. */
#include "jsonrpc.h"

#include <string.h>

#include "../errors.h"

/*
 * yajl_tree builds and frees its tree recursively, so a line of a million '[' would exhaust
 * the stack long before the size limit stops it; count the depth before yajl sees the text.
 */
gboolean
berth_rpc_json_depth_ok(const char *text, gsize len, guint max_depth)
{
    guint depth = 0;
    gboolean in_string = FALSE;

    for (gsize i = 0; i < len; i++) {
        char c = text[i];

        if (in_string) {
            if (c == '\\') {
                i++;
            } else if (c == '"') {
                in_string = FALSE;
            }
            continue;
        }
        if (c == '"') {
            in_string = TRUE;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) {
                return FALSE;
            }
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return TRUE;
}

/* Appends @s as a JSON string literal (quoted and escaped). */
static void
append_json_string(GString *out, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    g_string_append_c(out, '"');
    for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
        switch (*p) {
        case '"':
            g_string_append(out, "\\\"");
            break;
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\r':
            g_string_append(out, "\\r");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        default:
            if (*p < 0x20) {
                g_string_append(out, "\\u00");
                g_string_append_c(out, hex[*p >> 4]);
                g_string_append_c(out, hex[*p & 0xf]);
            } else {
                g_string_append_c(out, (char) *p);
            }
            break;
        }
    }
    g_string_append_c(out, '"');
}

void
berth_rpc_json_append_value(GString *out, yajl_val v)
{
    if (YAJL_IS_STRING(v)) {
        append_json_string(out, v->u.string);
    } else if (YAJL_IS_NUMBER(v)) {
        g_string_append(out, v->u.number.r);
    } else if (YAJL_IS_TRUE(v)) {
        g_string_append(out, "true");
    } else if (YAJL_IS_FALSE(v)) {
        g_string_append(out, "false");
    } else if (YAJL_IS_OBJECT(v)) {
        g_string_append_c(out, '{');
        for (size_t i = 0; i < v->u.object.len; i++) {
            if (i > 0) {
                g_string_append_c(out, ',');
            }
            append_json_string(out, v->u.object.keys[i]);
            g_string_append_c(out, ':');
            berth_rpc_json_append_value(out, v->u.object.values[i]);
        }
        g_string_append_c(out, '}');
    } else if (YAJL_IS_ARRAY(v)) {
        g_string_append_c(out, '[');
        for (size_t i = 0; i < v->u.array.len; i++) {
            if (i > 0) {
                g_string_append_c(out, ',');
            }
            berth_rpc_json_append_value(out, v->u.array.values[i]);
        }
        g_string_append_c(out, ']');
    } else {
        g_string_append(out, "null");
    }
}

char *
berth_rpc_json_string(const char *s)
{
    GString *out = g_string_sized_new(strlen(s) + 2);

    append_json_string(out, s);
    return g_string_free(out, FALSE);
}

void
berth_rpc_request_free(BerthRpcRequest *req)
{
    if (!req) {
        return;
    }
    g_free(req->id_json);
    g_free(req->method);
    if (req->tree) {
        yajl_tree_free(req->tree);
    }
    g_free(req);
}

static yajl_val
object_get(yajl_val obj, const char *key)
{
    if (!YAJL_IS_OBJECT(obj)) {
        return NULL;
    }
    for (size_t i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0) {
            return obj->u.object.values[i];
        }
    }
    return NULL;
}

/* The id as JSON text: an integer as written, a string re-encoded, null as "null". */
static gboolean
id_to_json(yajl_val id, char **out)
{
    if (YAJL_IS_STRING(id)) {
        *out = berth_rpc_json_string(id->u.string);
        return TRUE;
    }
    if (YAJL_IS_INTEGER(id)) {
        /* yajl keeps the number's text; an integer it could read is echoed exactly as sent. */
        *out = g_strdup(id->u.number.r);
        return TRUE;
    }
    if (YAJL_IS_NULL(id)) {
        *out = g_strdup("null");
        return TRUE;
    }
    return FALSE;
}

static BerthRpcRequest *
parse_fail(int *rpc_code, int code, GError **error, const char *message)
{
    *rpc_code = code;
    g_set_error_literal(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, message);
    return NULL;
}

BerthRpcRequest *
berth_rpc_request_parse(const char *line, gsize len, int *rpc_code, char **id_json,
                        GError **error)
{
    g_autofree char *text = NULL;
    char errbuf[256] = "";
    yajl_val tree;
    yajl_val version, id, method, params;
    g_autofree char *id_text = NULL;
    BerthRpcRequest *req;
    gsize start = 0;

    *id_json = NULL;
    /* yajl_tree_parse stops at a NUL: a line with one inside would parse as its prefix. */
    if (memchr(line, '\0', len)) {
        return parse_fail(rpc_code, BERTH_RPC_PARSE_ERROR, error,
                          "request contains a NUL byte");
    }
    if (!berth_rpc_json_depth_ok(line, len, BERTH_RPC_MAX_DEPTH)) {
        return parse_fail(rpc_code, BERTH_RPC_PARSE_ERROR, error,
                          "request nests deeper than " G_STRINGIFY(BERTH_RPC_MAX_DEPTH)
                          " levels");
    }
    while (start < len && g_ascii_isspace(line[start])) {
        start++;
    }
    if (start < len && line[start] == '[') {
        /* Checked before parsing so that a batch gets the clear message even when broken. */
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "batch requests are not supported");
    }
    text = g_strndup(line, len);
    tree = yajl_tree_parse(text, errbuf, sizeof(errbuf));
    if (!tree) {
        /* yajl's verbose message quotes the input over several lines: keep the first. */
        errbuf[strcspn(errbuf, "\n")] = '\0';
        *rpc_code = BERTH_RPC_PARSE_ERROR;
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "request is not valid JSON: %s", errbuf[0] ? errbuf : "parse error");
        return NULL;
    }
    if (!YAJL_IS_OBJECT(tree)) {
        yajl_tree_free(tree);
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "request must be a JSON object");
    }

    id = object_get(tree, "id");
    if (id && !id_to_json(id, &id_text)) {
        yajl_tree_free(tree);
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "'id' must be a string, an integer or null");
    }
    version = object_get(tree, "jsonrpc");
    if (!YAJL_IS_STRING(version) || strcmp(version->u.string, "2.0") != 0) {
        yajl_tree_free(tree);
        *id_json = g_steal_pointer(&id_text);
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "'jsonrpc' must be \"2.0\"");
    }
    method = object_get(tree, "method");
    if (!YAJL_IS_STRING(method) || method->u.string[0] == '\0') {
        yajl_tree_free(tree);
        *id_json = g_steal_pointer(&id_text);
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "'method' must be a non-empty string");
    }
    params = object_get(tree, "params");
    if (params && YAJL_IS_ARRAY(params)) {
        yajl_tree_free(tree);
        *id_json = g_steal_pointer(&id_text);
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "positional 'params' (an array) are not supported; use an object");
    }
    if (params && !YAJL_IS_OBJECT(params) && !YAJL_IS_NULL(params)) {
        yajl_tree_free(tree);
        *id_json = g_steal_pointer(&id_text);
        return parse_fail(rpc_code, BERTH_RPC_INVALID_REQUEST, error,
                          "'params' must be an object");
    }
    req = g_new0(BerthRpcRequest, 1);
    req->id_json = g_steal_pointer(&id_text);
    req->method = g_strdup(method->u.string);
    req->params = YAJL_IS_OBJECT(params) ? params : NULL;
    req->tree = tree;
    return req;
}

char *
berth_rpc_response_result(const char *id_json, const char *result_json)
{
    GString *out = g_string_sized_new(48 + (result_json ? strlen(result_json) : 4));

    g_string_append(out, "{\"jsonrpc\":\"2.0\",\"id\":");
    g_string_append(out, id_json ? id_json : "null");
    g_string_append(out, ",\"result\":");
    g_string_append(out, result_json ? result_json : "null");
    g_string_append(out, "}\n");
    return g_string_free(out, FALSE);
}

char *
berth_rpc_response_error(const char *id_json, int code, const char *name, const char *message)
{
    GString *out = g_string_sized_new(128);

    g_string_append(out, "{\"jsonrpc\":\"2.0\",\"id\":");
    g_string_append(out, id_json ? id_json : "null");
    g_string_append_printf(out, ",\"error\":{\"code\":%d,\"message\":", code);
    append_json_string(out, message ? message : "");
    g_string_append(out, ",\"data\":{\"name\":");
    append_json_string(out, name ? name : "internal-error");
    g_string_append(out, "}}}\n");
    return g_string_free(out, FALSE);
}

char *
berth_rpc_notification(const char *method, const char *params_json)
{
    GString *out = g_string_sized_new(48 + (params_json ? strlen(params_json) : 2));

    g_string_append(out, "{\"jsonrpc\":\"2.0\",\"method\":");
    append_json_string(out, method);
    g_string_append(out, ",\"params\":");
    g_string_append(out, params_json ? params_json : "{}");
    g_string_append(out, "}\n");
    return g_string_free(out, FALSE);
}

const char *
berth_rpc_code_name(int rpc_code)
{
    switch (rpc_code) {
    case BERTH_RPC_PARSE_ERROR:
        return "parse-error";
    case BERTH_RPC_INVALID_REQUEST:
        return "invalid-request";
    case BERTH_RPC_METHOD_NOT_FOUND:
        return "method-not-found";
    case BERTH_RPC_INVALID_PARAMS:
        return "invalid-argument";
    default:
        return "internal-error";
    }
}

/* Looks up @name (an explicit null counts as missing); FALSE with an error when it is
 * required and missing. */
static gboolean
param_lookup(yajl_val params, const char *name, gboolean required, yajl_val *val,
             GError **error)
{
    *val = object_get(params, name);
    if (*val && YAJL_IS_NULL(*val)) {
        *val = NULL;
    }
    if (!*val && required) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "missing required parameter '%s'", name);
        return FALSE;
    }
    return TRUE;
}

static gboolean
param_type_error(const char *name, const char *type, GError **error)
{
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                "parameter '%s' must be %s", name, type);
    return FALSE;
}

gboolean
berth_rpc_param_string(yajl_val params, const char *name, gboolean required, const char **out,
                       GError **error)
{
    yajl_val v;

    if (!param_lookup(params, name, required, &v, error)) {
        return FALSE;
    }
    if (!v) {
        return TRUE;
    }
    if (!YAJL_IS_STRING(v)) {
        return param_type_error(name, "a string", error);
    }
    *out = v->u.string;
    return TRUE;
}

gboolean
berth_rpc_param_int(yajl_val params, const char *name, gboolean required, gint64 *out,
                    GError **error)
{
    yajl_val v;

    if (!param_lookup(params, name, required, &v, error)) {
        return FALSE;
    }
    if (!v) {
        return TRUE;
    }
    /* A number yajl could not hold in a long long has no INT flag: out of range, refused. */
    if (!YAJL_IS_INTEGER(v)) {
        return param_type_error(name, "an integer (64-bit)", error);
    }
    *out = v->u.number.i;
    return TRUE;
}

gboolean
berth_rpc_param_bool(yajl_val params, const char *name, gboolean required, gboolean *out,
                     GError **error)
{
    yajl_val v;

    if (!param_lookup(params, name, required, &v, error)) {
        return FALSE;
    }
    if (!v) {
        return TRUE;
    }
    if (!YAJL_IS_TRUE(v) && !YAJL_IS_FALSE(v)) {
        return param_type_error(name, "a boolean", error);
    }
    *out = YAJL_IS_TRUE(v);
    return TRUE;
}

gboolean
berth_rpc_param_object(yajl_val params, const char *name, gboolean required, yajl_val *out,
                       GError **error)
{
    yajl_val v;

    if (!param_lookup(params, name, required, &v, error)) {
        return FALSE;
    }
    if (!v) {
        return TRUE;
    }
    if (!YAJL_IS_OBJECT(v)) {
        return param_type_error(name, "an object", error);
    }
    *out = v;
    return TRUE;
}

gboolean
berth_rpc_params_check(yajl_val params, const char *const *allowed, GError **error)
{
    if (!params) {
        return TRUE;
    }
    for (size_t i = 0; i < params->u.object.len; i++) {
        const char *key = params->u.object.keys[i];

        if (!allowed || !g_strv_contains(allowed, key)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "unknown parameter '%s'", key);
            return FALSE;
        }
    }
    return TRUE;
}
