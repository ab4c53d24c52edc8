/* Tests of the JSON-RPC framing: request parsing, response building and the param readers. */
#include <string.h>

#include "errors.h"
#include "rpc/jsonrpc.h"

static BerthRpcRequest *
parse(const char *line, int *code, char **id_json, GError **error)
{
    return berth_rpc_request_parse(line, strlen(line), code, id_json, error);
}

/* Parses @line, expecting a failure with @want_code and an error response carrying @want_id. */
static void
assert_refused(const char *line, int want_code, const char *want_id)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *id_json = NULL;
    int code = 0;
    g_autoptr(BerthRpcRequest) req = parse(line, &code, &id_json, &error);

    g_assert_null(req);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_cmpint(code, ==, want_code);
    g_assert_cmpstr(id_json, ==, want_id);
}

static void
test_parse_valid(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *id_json = NULL;
    int code = 0;
    g_autoptr(BerthRpcRequest) req = NULL;
    const char *name = NULL;

    req = parse("{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"domain.get\","
                "\"params\":{\"name\":\"web1\"}}", &code, &id_json, &error);
    g_assert_no_error(error);
    g_assert_nonnull(req);
    g_assert_cmpstr(req->id_json, ==, "7");
    g_assert_cmpstr(req->method, ==, "domain.get");
    g_assert_true(berth_rpc_param_string(req->params, "name", TRUE, &name, &error));
    g_assert_cmpstr(name, ==, "web1");
    g_clear_pointer(&req, berth_rpc_request_free);

    /* Not NUL-terminated: only @len bytes count. */
    {
        const char *text = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.ping\"}GARBAGE";

        req = berth_rpc_request_parse(text, strlen(text) - 7, &code, &id_json, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(req->method, ==, "agent.ping");
        g_assert_null(req->params);
        g_clear_pointer(&req, berth_rpc_request_free);
    }

    /* Whitespace around, and "params": null, are fine. */
    req = parse("  { \"method\" : \"agent.ping\", \"jsonrpc\" : \"2.0\", \"id\" : 0,"
                " \"params\" : null }  ", &code, &id_json, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(req->id_json, ==, "0");
    g_assert_null(req->params);
}

static void
test_parse_ids(void)
{
    static const struct {
        const char *id;
        const char *want;
    } cases[] = {
        {"\"abc\"", "\"abc\""},
        {"\"a\\\"b\\\\c\\n\"", "\"a\\\"b\\\\c\\n\""},
        {"\"\\u0001\"", "\"\\u0001\""},
        {"-42", "-42"},
        {"9223372036854775807", "9223372036854775807"},
        {"null", "null"},
    };

    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autoptr(GError) error = NULL;
        g_autofree char *id_json = NULL;
        g_autofree char *line = g_strdup_printf(
            "{\"jsonrpc\":\"2.0\",\"id\":%s,\"method\":\"m\"}", cases[i].id);
        int code = 0;
        g_autoptr(BerthRpcRequest) req = parse(line, &code, &id_json, &error);

        g_assert_no_error(error);
        g_assert_cmpstr(req->id_json, ==, cases[i].want);
    }

    /* No id: a notification. */
    {
        g_autoptr(GError) error = NULL;
        g_autofree char *id_json = NULL;
        int code = 0;
        g_autoptr(BerthRpcRequest) req = parse("{\"jsonrpc\":\"2.0\",\"method\":\"m\"}", &code,
                                               &id_json, &error);

        g_assert_no_error(error);
        g_assert_null(req->id_json);
    }
}

static void
test_parse_invalid(void)
{
    /* Not JSON at all, or truncated: parse error, no id. */
    assert_refused("", BERTH_RPC_PARSE_ERROR, NULL);
    assert_refused("hello", BERTH_RPC_PARSE_ERROR, NULL);
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":1,", BERTH_RPC_PARSE_ERROR, NULL);
    assert_refused("{\"a\":1}}", BERTH_RPC_PARSE_ERROR, NULL);
    assert_refused("{\"method\":\"\xff\xfe\"}", BERTH_RPC_PARSE_ERROR, NULL);
    /* Valid JSON but not a request object. */
    assert_refused("42", BERTH_RPC_INVALID_REQUEST, NULL);
    assert_refused("\"x\"", BERTH_RPC_INVALID_REQUEST, NULL);
    assert_refused("null", BERTH_RPC_INVALID_REQUEST, NULL);
    assert_refused("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\"}]", BERTH_RPC_INVALID_REQUEST,
                   NULL);
    assert_refused("[]", BERTH_RPC_INVALID_REQUEST, NULL);
    /* Bad members: the id is carried back when it could be read. */
    assert_refused("{\"id\":1,\"method\":\"m\"}", BERTH_RPC_INVALID_REQUEST, "1");
    assert_refused("{\"jsonrpc\":\"1.0\",\"id\":2,\"method\":\"m\"}", BERTH_RPC_INVALID_REQUEST,
                   "2");
    assert_refused("{\"jsonrpc\":2.0,\"id\":2,\"method\":\"m\"}", BERTH_RPC_INVALID_REQUEST,
                   "2");
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":\"x\"}", BERTH_RPC_INVALID_REQUEST, "\"x\"");
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"\"}", BERTH_RPC_INVALID_REQUEST,
                   "3");
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":5}", BERTH_RPC_INVALID_REQUEST,
                   "3");
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"m\",\"params\":[1,2]}",
                   BERTH_RPC_INVALID_REQUEST, "4");
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"m\",\"params\":\"x\"}",
                   BERTH_RPC_INVALID_REQUEST, "4");
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"m\",\"params\":3}",
                   BERTH_RPC_INVALID_REQUEST, "4");
    /* Ids that are neither string, integer nor null. */
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":1.5,\"method\":\"m\"}", BERTH_RPC_INVALID_REQUEST,
                   NULL);
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":true,\"method\":\"m\"}",
                   BERTH_RPC_INVALID_REQUEST, NULL);
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}", BERTH_RPC_INVALID_REQUEST,
                   NULL);
    /* An id too big for 64 bits is not echoed as something else. */
    assert_refused("{\"jsonrpc\":\"2.0\",\"id\":99999999999999999999999,\"method\":\"m\"}",
                   BERTH_RPC_INVALID_REQUEST, NULL);
    /* An embedded NUL must not hide the rest of the line from the parser. */
    {
        static const char text[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\"}\0junk";
        g_autoptr(GError) error = NULL;
        g_autofree char *id_json = NULL;
        int code = 0;

        g_assert_null(berth_rpc_request_parse(text, sizeof(text) - 1, &code, &id_json, &error));
        g_assert_cmpint(code, ==, BERTH_RPC_PARSE_ERROR);
    }
}

static void
test_parse_nesting(void)
{
    g_autoptr(GString) ok = g_string_new("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\","
                                         "\"params\":{\"a\":");
    g_autoptr(GString) deep = g_string_new(NULL);
    g_autoptr(GError) error = NULL;
    g_autofree char *id_json = NULL;
    int code = 0;
    g_autoptr(BerthRpcRequest) req = NULL;

    /* Depth limit minus the request and params objects. */
    for (int i = 0; i < BERTH_RPC_MAX_DEPTH - 2; i++) {
        g_string_append_c(ok, '[');
    }
    for (int i = 0; i < BERTH_RPC_MAX_DEPTH - 2; i++) {
        g_string_append_c(ok, ']');
    }
    g_string_append(ok, "}}");
    req = parse(ok->str, &code, &id_json, &error);
    g_assert_no_error(error);
    g_assert_nonnull(req);

    /* A million levels: refused quickly, without recursion. */
    g_string_append(deep, "{\"a\":");
    for (int i = 0; i < 1000000; i++) {
        g_string_append_c(deep, '[');
    }
    assert_refused(deep->str, BERTH_RPC_PARSE_ERROR, NULL);

    /* Brackets inside strings do not count. */
    g_clear_pointer(&req, berth_rpc_request_free);
    {
        g_autoptr(GString) str = g_string_new("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"");

        for (int i = 0; i < 1000; i++) {
            g_string_append(str, "[{\\\"");
        }
        g_string_append(str, "\"}");
        req = parse(str->str, &code, &id_json, &error);
        g_assert_no_error(error);
        g_assert_nonnull(req);
    }
}

static void
test_build(void)
{
    g_autofree char *r1 = berth_rpc_response_result("1", "{\"a\":true}");
    g_autofree char *r2 = berth_rpc_response_result(NULL, NULL);
    g_autofree char *e1 = berth_rpc_response_error("\"x\"", -32001, "no-such-domain",
                                                   "domain 'a\"b' does not exist");
    g_autofree char *e2 = berth_rpc_response_error(NULL, BERTH_RPC_PARSE_ERROR, "parse-error",
                                                   "line\nbreak\x01");
    g_autofree char *n1 = berth_rpc_notification("event", "{\"seq\":1}");
    g_autofree char *n2 = berth_rpc_notification("ev\"il", NULL);

    g_assert_cmpstr(r1, ==, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"a\":true}}\n");
    g_assert_cmpstr(r2, ==, "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":null}\n");
    g_assert_cmpstr(e1, ==,
                    "{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"error\":{\"code\":-32001,\"message\":"
                    "\"domain 'a\\\"b' does not exist\",\"data\":{\"name\":\"no-such-domain\"}}}"
                    "\n");
    g_assert_cmpstr(e2, ==,
                    "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32700,\"message\":"
                    "\"line\\nbreak\\u0001\",\"data\":{\"name\":\"parse-error\"}}}\n");
    g_assert_cmpstr(n1, ==, "{\"jsonrpc\":\"2.0\",\"method\":\"event\",\"params\":{\"seq\":1}}\n");
    g_assert_cmpstr(n2, ==, "{\"jsonrpc\":\"2.0\",\"method\":\"ev\\\"il\",\"params\":{}}\n");

    g_assert_cmpstr(berth_rpc_code_name(BERTH_RPC_METHOD_NOT_FOUND), ==, "method-not-found");
    g_assert_cmpstr(berth_rpc_code_name(BERTH_RPC_INVALID_PARAMS), ==, "invalid-argument");
    g_assert_cmpstr(berth_rpc_code_name(1), ==, "internal-error");
}

static yajl_val
parse_params(const char *json, BerthRpcRequest **keep)
{
    g_autofree char *line = g_strdup_printf(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\",\"params\":%s}", json);
    g_autofree char *id_json = NULL;
    int code = 0;

    *keep = parse(line, &code, &id_json, NULL);
    g_assert_nonnull(*keep);
    return (*keep)->params;
}

static void
test_params(void)
{
    g_autoptr(BerthRpcRequest) req = NULL;
    g_autoptr(GError) error = NULL;
    yajl_val p = parse_params("{\"s\":\"v\",\"i\":-5,\"big\":99999999999999999999,"
                              "\"f\":1.5,\"t\":true,\"n\":null,\"o\":{\"k\":1}}", &req);
    const char *s = "unset";
    gint64 i = 17;
    gboolean b = FALSE;
    yajl_val o = NULL;
    static const char *const allowed[] = {"s", "i", "big", "f", "t", "n", "o", NULL};
    static const char *const fewer[] = {"s", NULL};

    g_assert_true(berth_rpc_param_string(p, "s", TRUE, &s, &error));
    g_assert_cmpstr(s, ==, "v");
    g_assert_true(berth_rpc_param_int(p, "i", TRUE, &i, &error));
    g_assert_cmpint(i, ==, -5);
    g_assert_true(berth_rpc_param_bool(p, "t", TRUE, &b, &error));
    g_assert_true(b);
    g_assert_true(berth_rpc_param_object(p, "o", TRUE, &o, &error));
    g_assert_true(YAJL_IS_OBJECT(o));
    g_assert_no_error(error);

    /* Missing optional params (and explicit nulls) leave the output alone. */
    i = 17;
    g_assert_true(berth_rpc_param_int(p, "absent", FALSE, &i, &error));
    g_assert_true(berth_rpc_param_int(p, "n", FALSE, &i, &error));
    g_assert_cmpint(i, ==, 17);
    g_assert_true(berth_rpc_param_string(NULL, "s", FALSE, &s, &error));
    g_assert_no_error(error);

    /* Missing required params name the param. */
    g_assert_false(berth_rpc_param_string(p, "name", TRUE, &s, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "'name'"));
    g_clear_error(&error);
    g_assert_false(berth_rpc_param_int(NULL, "id", TRUE, &i, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);

    /* Wrong types. */
    g_assert_false(berth_rpc_param_string(p, "i", FALSE, &s, &error));
    g_assert_nonnull(strstr(error->message, "'i' must be a string"));
    g_clear_error(&error);
    g_assert_false(berth_rpc_param_int(p, "s", FALSE, &i, &error));
    g_clear_error(&error);
    g_assert_false(berth_rpc_param_int(p, "f", FALSE, &i, &error));
    g_clear_error(&error);
    g_assert_false(berth_rpc_param_int(p, "big", FALSE, &i, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(berth_rpc_param_bool(p, "i", FALSE, &b, &error));
    g_clear_error(&error);
    g_assert_false(berth_rpc_param_object(p, "s", FALSE, &o, &error));
    g_clear_error(&error);

    /* Unknown members. */
    g_assert_true(berth_rpc_params_check(p, allowed, &error));
    g_assert_true(berth_rpc_params_check(NULL, fewer, &error));
    g_assert_no_error(error);
    g_assert_false(berth_rpc_params_check(p, fewer, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_assert_nonnull(strstr(error->message, "unknown parameter 'i'"));
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/rpc/jsonrpc/parse-valid", test_parse_valid);
    g_test_add_func("/rpc/jsonrpc/parse-ids", test_parse_ids);
    g_test_add_func("/rpc/jsonrpc/parse-invalid", test_parse_invalid);
    g_test_add_func("/rpc/jsonrpc/parse-nesting-bounded", test_parse_nesting);
    g_test_add_func("/rpc/jsonrpc/build", test_build);
    g_test_add_func("/rpc/jsonrpc/params", test_params);
    return g_test_run();
}
