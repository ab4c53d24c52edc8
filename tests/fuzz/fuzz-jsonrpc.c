/* libFuzzer target: one request line through the JSON-RPC parser and the typed param readers. */
#include <stdint.h>
#include <string.h>

#include "rpc/jsonrpc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every line the server builds must itself be one valid JSON object. */
static void
assert_valid_json(const char *line)
{
    g_autofree char *copy = g_strdup(line);
    yajl_val tree;

    g_assert(copy[strlen(copy) - 1] == '\n');
    copy[strlen(copy) - 1] = '\0';
    tree = yajl_tree_parse(copy, NULL, 0);
    g_assert(YAJL_IS_OBJECT(tree));
    yajl_tree_free(tree);
}

static void
read_params(yajl_val params)
{
    static const char *const names[] = {"name", "id", "since", "force", "filter", "xml", NULL};
    const char *s = NULL;
    gint64 i = 0;
    gboolean b = FALSE;
    yajl_val obj = NULL;

    for (guint n = 0; names[n]; n++) {
        berth_rpc_param_string(params, names[n], FALSE, &s, NULL);
        berth_rpc_param_int(params, names[n], n % 2, &i, NULL);
        berth_rpc_param_bool(params, names[n], FALSE, &b, NULL);
        if (berth_rpc_param_object(params, names[n], FALSE, &obj, NULL) && obj) {
            berth_rpc_param_string(obj, "type", FALSE, &s, NULL);
            berth_rpc_param_string(obj, "object_name", FALSE, &s, NULL);
        }
    }
    berth_rpc_params_check(params, names, NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *id_json = NULL;
    int code = 0;
    g_autoptr(BerthRpcRequest) req =
        berth_rpc_request_parse((const char *) data, size, &code, &id_json, &error);

    if (req) {
        g_autofree char *reply = berth_rpc_response_result(req->id_json, "true");
        g_autofree char *note = berth_rpc_notification(req->method, NULL);

        assert_valid_json(reply);
        assert_valid_json(note);
        read_params(req->params);
        /* The serializer the client uses must give back valid JSON for any accepted tree. */
        {
            g_autoptr(GString) again = g_string_new(NULL);

            berth_rpc_json_append_value(again, req->tree);
            g_string_append_c(again, '\n');
            assert_valid_json(again->str);
        }
    } else {
        g_autofree char *reply = NULL;

        g_assert(code == BERTH_RPC_PARSE_ERROR || code == BERTH_RPC_INVALID_REQUEST);
        g_assert(error != NULL);
        reply = berth_rpc_response_error(id_json, code, berth_rpc_code_name(code),
                                         error->message);
        assert_valid_json(reply);
    }
    return 0;
}
