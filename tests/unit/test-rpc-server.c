/* Tests of the JSON-RPC server: a real server on temporary unix sockets, in-process. */
#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl/client.h"
#include "errors.h"
#include "rpc/jsonrpc.h"
#include "rpc/server.h"

/* A gate that slow handlers wait on, from their own threads. */
static GMutex gate_lock;
static GCond gate_cond;
static gboolean gate_open;
static guint slow_started; /* slow handlers entered so far (under gate_lock) */
static guint slow_done;    /* slow replies handed to the server (under gate_lock) */

/* Log records of modifying calls (domain berth-rpc with a BERTH_METHOD field). */
static gint modify_logs;
static char *last_logged_peer; /* under gate_lock */

typedef struct {
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
    BerthRpcServer *server;
    BerthBus *bus;
    char *dir;
    char *path;
    char *ro_path;
    char *uri;
    char *ro_uri;
} Fixture;

static void
echo_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    GString *out = g_string_new(NULL);

    if (params) {
        berth_rpc_json_append_value(out, params);
    } else {
        g_string_append(out, "null");
    }
    berth_rpc_call_reply(call, g_string_free(out, FALSE));
}

static gpointer
slow_thread(gpointer data)
{
    BerthRpcCall *call = data;

    g_mutex_lock(&gate_lock);
    while (!gate_open) {
        g_cond_wait(&gate_cond, &gate_lock);
    }
    g_mutex_unlock(&gate_lock);
    berth_rpc_call_reply(call, g_strdup("\"slow\""));
    g_mutex_lock(&gate_lock);
    slow_done++;
    g_cond_broadcast(&gate_cond);
    g_mutex_unlock(&gate_lock);
    return NULL;
}

static void
slow_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    g_mutex_lock(&gate_lock);
    slow_started++;
    g_cond_broadcast(&gate_cond);
    g_mutex_unlock(&gate_lock);
    g_thread_unref(g_thread_new("slow-reply", slow_thread, call));
}

static void
modify_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    berth_rpc_call_reply(call, berth_rpc_json_string(berth_rpc_call_peer(call)));
}

static void
fail_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    berth_rpc_call_reply_new_error(call, BERTH_ERROR_NO_SUCH_DOMAIN,
                                   "domain '%s' does not exist", "x");
}

static gpointer
loop_thread(gpointer data)
{
    Fixture *f = data;

    g_main_context_push_thread_default(f->ctx);
    g_main_loop_run(f->loop);
    g_main_context_pop_thread_default(f->ctx);
    return NULL;
}

static void
fixture_start(Fixture *f, const BerthRpcLimits *limits)
{
    g_autoptr(GError) error = NULL;

    g_mutex_lock(&gate_lock);
    gate_open = FALSE;
    slow_started = 0;
    slow_done = 0;
    g_mutex_unlock(&gate_lock);

    f->dir = g_dir_make_tmp("berth-rpc-XXXXXX", &error);
    g_assert_no_error(error);
    f->path = g_build_filename(f->dir, "rw.sock", NULL);
    f->ro_path = g_build_filename(f->dir, "ro.sock", NULL);
    f->uri = g_strconcat("unix:", f->path, NULL);
    f->ro_uri = g_strconcat("unix:", f->ro_path, NULL);
    f->ctx = g_main_context_new();
    f->loop = g_main_loop_new(f->ctx, FALSE);
    f->bus = berth_bus_new(64);
    f->server = berth_rpc_server_new(f->ctx, f->bus, limits);
    berth_rpc_server_add_method(f->server, "test.echo", FALSE, echo_handler, NULL);
    berth_rpc_server_add_method(f->server, "test.slow", FALSE, slow_handler, NULL);
    berth_rpc_server_add_method(f->server, "test.modify", TRUE, modify_handler, NULL);
    berth_rpc_server_add_method(f->server, "test.fail", FALSE, fail_handler, NULL);
    g_assert_true(berth_rpc_server_listen_unix(f->server, f->path, FALSE, 0600, &error));
    g_assert_no_error(error);
    g_assert_true(berth_rpc_server_listen_unix(f->server, f->ro_path, TRUE, 0666, &error));
    g_assert_no_error(error);
    /* The server is set up before its loop runs; from here on only the loop thread uses it. */
    f->thread = g_thread_new("rpc-loop", loop_thread, f);
}

static gboolean
quit_loop(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

static void open_gate(void);

static void
fixture_stop(Fixture *f)
{
    /* Every slow reply is posted before the loop stops, so that the flush below delivers (or
     * drops) it and nothing outlives the fixture. */
    open_gate();
    g_mutex_lock(&gate_lock);
    while (slow_done < slow_started) {
        g_cond_wait(&gate_cond, &gate_lock);
    }
    g_mutex_unlock(&gate_lock);
    g_main_context_invoke(f->ctx, quit_loop, f->loop);
    g_thread_join(f->thread);
    berth_rpc_server_free(f->server);
    /* Replies posted after the loop stopped are idles that hold connection references. */
    while (g_main_context_iteration(f->ctx, FALSE)) {
    }
    berth_bus_free(f->bus);
    g_main_loop_unref(f->loop);
    g_main_context_unref(f->ctx);
    g_assert_false(g_file_test(f->path, G_FILE_TEST_EXISTS));
    g_rmdir(f->dir);
    g_free(f->dir);
    g_free(f->path);
    g_free(f->ro_path);
    g_free(f->uri);
    g_free(f->ro_uri);
}

static BerthClient *
connect_ok(const char *uri)
{
    g_autoptr(GError) error = NULL;
    BerthClient *c = berth_client_connect(uri, &error);

    g_assert_no_error(error);
    return c;
}

static char *
call_ok(BerthClient *c, const char *method, const char *params)
{
    g_autoptr(GError) error = NULL;
    char *result = NULL;

    g_assert_true(berth_client_call(c, method, params, &result, &error));
    g_assert_no_error(error);
    return result;
}

/* A raw connection, for bytes no client library would send. */
static int
raw_connect(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_assert_cmpint(fd, >=, 0);
    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    g_assert_cmpint(connect(fd, (struct sockaddr *) &addr, sizeof(addr)), ==, 0);
    return fd;
}

static void
raw_send(int fd, const char *text, gsize len)
{
    while (len > 0) {
        gssize n = send(fd, text, len, MSG_NOSIGNAL);

        g_assert_cmpint(n, >, 0);
        text += n;
        len -= (gsize) n;
    }
}

static void
raw_send_str(int fd, const char *text)
{
    raw_send(fd, text, strlen(text));
}

/* One line from @fd, or NULL at end of stream. Byte by byte: tests only. */
static char *
raw_line(int fd)
{
    GString *line = g_string_new(NULL);

    for (;;) {
        char ch;
        gssize n = recv(fd, &ch, 1, 0);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            g_string_free(line, TRUE);
            return NULL;
        }
        if (ch == '\n') {
            return g_string_free(line, FALSE);
        }
        g_string_append_c(line, ch);
    }
}

static void
test_happy(void)
{
    Fixture f = {0};
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *pong = NULL;
    g_autofree char *echo = NULL;
    g_autofree char *echo_none = NULL;
    g_auto(GStrv) methods = NULL;
    char *result = NULL;

    fixture_start(&f, NULL);
    methods = berth_rpc_server_list_methods(f.server);
    g_assert_true(g_strv_contains((const char *const *) methods, "agent.ping"));
    g_assert_true(g_strv_contains((const char *const *) methods, "events.subscribe"));
    g_assert_true(g_strv_contains((const char *const *) methods, "events.unsubscribe"));
    g_assert_cmpstr(methods[0], ==, "agent.ping"); /* sorted */

    c = connect_ok(f.uri);
    pong = call_ok(c, "agent.ping", NULL);
    g_assert_cmpstr(pong, ==, "\"pong\"");
    echo = call_ok(c, "test.echo", "{\"a\":[1,\"x\\\"y\",true,null,-2.5e3],\"b\":{}}");
    g_assert_cmpstr(echo, ==, "{\"a\":[1,\"x\\\"y\",true,null,-2.5e3],\"b\":{}}");
    echo_none = call_ok(c, "test.echo", NULL);
    g_assert_cmpstr(echo_none, ==, "null");

    g_assert_false(berth_client_call(c, "test.fail", NULL, &result, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DOMAIN);
    g_assert_cmpstr(error->message, ==, "domain 'x' does not exist");
    g_assert_null(result);
    g_clear_error(&error);

    g_assert_false(berth_client_call(c, "no.such", NULL, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_UNSUPPORTED);
    g_assert_cmpstr(error->message, ==, "unknown method 'no.such'");
    g_clear_error(&error);

    /* Positional params are refused, and the connection stays usable. */
    g_assert_false(berth_client_call(c, "test.echo", "[1]", NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_free(call_ok(c, "agent.ping", NULL));

    /* A TLS URI with no certificate files to be found says which it looked for (tests/tls
     * connects for real). */
    {
        BerthClientTls none = {"/nonexistent/cert.pem", "/nonexistent/key.pem",
                               "/nonexistent/ca.pem"};

        g_assert_null(berth_client_connect_tls("tls://", &none, &error));
        g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
        g_clear_error(&error);
        g_assert_null(berth_client_connect_tls("tls://127.0.0.1:1", &none, &error));
        g_assert_nonnull(error);
        g_clear_error(&error);
    }
    g_assert_null(berth_client_connect("nonsense", &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    {
        g_autofree char *missing = g_strconcat("unix:", f.dir, "/none.sock", NULL);

        g_assert_null(berth_client_connect(missing, &error));
        g_assert_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
    }

    g_clear_pointer(&c, berth_client_free);
    fixture_stop(&f);
}

static void
test_malformed(void)
{
    Fixture f = {0};
    int fd;
    g_autofree char *l1 = NULL, *l2 = NULL, *l3 = NULL, *l4 = NULL, *l5 = NULL, *l6 = NULL;
    static const char bad[] = "this is not json\n"
                              "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.ping\"}]\n"
                              "{\"jsonrpc\":\"1.0\",\"id\":\"q\",\"method\":\"agent.ping\"}\n"
                              "\n"
                              "{\"jsonrpc\":\"2.0\",\"method\":\"agent.ping\"}\n"
                              "{\"jsonrpc\":\"2.0\",\"method\":\"no.such\"}\n"
                              "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"no.such\"}\n"
                              "{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"agent.ping\"}\r\n"
                              "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"test.modify\"}\n";

    fixture_start(&f, NULL);
    fd = raw_connect(f.path);
    raw_send(fd, bad, sizeof(bad) - 1);

    l1 = raw_line(fd);
    g_assert_nonnull(strstr(l1, "\"id\":null,\"error\":{\"code\":-32700"));
    g_assert_nonnull(strstr(l1, "\"name\":\"parse-error\""));
    l2 = raw_line(fd);
    g_assert_nonnull(
        strstr(l2, "\"code\":-32600,\"message\":\"batch requests are not supported\""));
    l3 = raw_line(fd);
    g_assert_nonnull(strstr(l3, "\"id\":\"q\",\"error\":{\"code\":-32600"));
    /* The blank line and both notifications get nothing; a null id is still answered. */
    l4 = raw_line(fd);
    g_assert_nonnull(strstr(l4, "\"id\":null,\"error\":{\"code\":-32601"));
    g_assert_nonnull(strstr(l4, "\"name\":\"method-not-found\""));
    l5 = raw_line(fd);
    g_assert_cmpstr(l5, ==, "{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"result\":\"pong\"}");
    l6 = raw_line(fd);
    g_assert_nonnull(strstr(l6, "\"id\":9,\"result\":\"uid="));

    /* Half-close after a last line without newline: answered, then closed. */
    raw_send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":10,\"method\":\"agent.ping\"}");
    g_assert_cmpint(shutdown(fd, SHUT_WR), ==, 0);
    {
        g_autofree char *last = raw_line(fd);
        g_autofree char *eof = NULL;

        g_assert_cmpstr(last, ==, "{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":\"pong\"}");
        eof = raw_line(fd);
        g_assert_null(eof);
    }
    close(fd);
    fixture_stop(&f);
}

static void
test_oversized(void)
{
    BerthRpcLimits limits = {.max_request = 1024};
    Fixture f = {0};
    g_autoptr(BerthClient) other = NULL;
    g_autoptr(GString) exact = g_string_new(
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.echo\",\"params\":{\"p\":\"");
    g_autoptr(GString) big = g_string_new(NULL);
    int fd;

    fixture_start(&f, &limits);
    other = connect_ok(f.uri);
    g_free(call_ok(other, "agent.ping", NULL));

    /* A line of exactly max_request bytes is served. */
    fd = raw_connect(f.path);
    while (exact->len < 1024 - 3) {
        g_string_append_c(exact, 'x');
    }
    g_string_append(exact, "\"}}");
    g_assert_cmpuint(exact->len, ==, 1024);
    g_string_append_c(exact, '\n');
    raw_send(fd, exact->str, exact->len);
    {
        g_autofree char *reply = raw_line(fd);

        g_assert_nonnull(strstr(reply, "\"result\":{\"p\":\"xxx"));
    }

    /* One byte more: an error, then that connection (only) closes. */
    g_string_assign(big, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"x\",\"params\":\"");
    while (big->len < 5000) {
        g_string_append_c(big, 'y');
    }
    raw_send(fd, big->str, big->len);
    {
        g_autofree char *reply = raw_line(fd);
        g_autofree char *eof = NULL;

        g_assert_nonnull(reply);
        g_assert_nonnull(strstr(reply, "\"id\":null,\"error\":{\"code\":-32600"));
        g_assert_nonnull(strstr(reply, "exceeds the limit of 1024 bytes"));
        eof = raw_line(fd);
        g_assert_null(eof);
    }
    close(fd);

    g_free(call_ok(other, "agent.ping", NULL));
    g_clear_pointer(&other, berth_client_free);
    fixture_stop(&f);
}

static void
test_max_clients(void)
{
    BerthRpcLimits limits = {.max_clients = 2};
    Fixture f = {0};
    g_autoptr(GError) error = NULL;
    BerthClient *a, *b, *c;
    gboolean served = FALSE;

    fixture_start(&f, &limits);
    a = connect_ok(f.uri);
    b = connect_ok(f.ro_uri);
    g_free(call_ok(a, "agent.ping", NULL));
    g_free(call_ok(b, "agent.ping", NULL));

    /* The kernel completes the connect; the server accepts and closes it at once. */
    c = connect_ok(f.uri);
    g_assert_false(berth_client_call(c, "agent.ping", NULL, NULL, &error));
    g_assert_true(error->domain == G_IO_ERROR);
    g_clear_error(&error);
    berth_client_free(c);
    g_free(call_ok(a, "agent.ping", NULL));

    /* Once one leaves, a newcomer is served (the server notices the close asynchronously, so
     * a refused attempt may still happen before it does). */
    berth_client_free(b);
    for (int i = 0; i < 1000 && !served; i++) {
        c = connect_ok(f.uri);
        served = berth_client_call(c, "agent.ping", NULL, NULL, NULL);
        berth_client_free(c);
        if (!served) {
            g_usleep(5000);
        }
    }
    g_assert_true(served);
    berth_client_free(a);
    fixture_stop(&f);
}

static void
open_gate(void)
{
    g_mutex_lock(&gate_lock);
    gate_open = TRUE;
    g_cond_broadcast(&gate_cond);
    g_mutex_unlock(&gate_lock);
}

static void
wait_slow_started(guint n)
{
    g_mutex_lock(&gate_lock);
    while (slow_started < n) {
        g_cond_wait(&gate_cond, &gate_lock);
    }
    g_mutex_unlock(&gate_lock);
}

static void
test_max_pending(void)
{
    BerthRpcLimits limits = {.max_pending = 2};
    Fixture f = {0};
    g_autoptr(GString) reqs = g_string_new(NULL);
    g_autoptr(BerthClient) other = NULL;
    gboolean seen[6] = {FALSE};
    int fd;

    fixture_start(&f, &limits);
    fd = raw_connect(f.path);
    for (int id = 1; id <= 4; id++) {
        g_string_append_printf(reqs, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"test.slow\"}\n",
                               id);
    }
    g_string_append(reqs, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"agent.ping\"}\n");
    raw_send(fd, reqs->str, reqs->len);
    wait_slow_started(2);

    /* The server keeps serving others while this connection waits for its replies. */
    other = connect_ok(f.uri);
    g_free(call_ok(other, "agent.ping", NULL));
    g_mutex_lock(&gate_lock);
    g_assert_cmpuint(slow_started, ==, 2);
    g_mutex_unlock(&gate_lock);

    open_gate();
    for (int i = 0; i < 5; i++) {
        g_autofree char *line = raw_line(fd);
        int id;

        g_assert_nonnull(line);
        g_assert_cmpint(sscanf(line, "{\"jsonrpc\":\"2.0\",\"id\":%d,", &id), ==, 1);
        g_assert_cmpint(id, >=, 1);
        g_assert_cmpint(id, <=, 5);
        g_assert_false(seen[id]);
        seen[id] = TRUE;
    }
    g_assert_cmpuint(slow_started, ==, 4);
    close(fd);
    g_clear_pointer(&other, berth_client_free);
    fixture_stop(&f);
}

static void
test_reply_after_disconnect(void)
{
    Fixture f = {0};
    g_autoptr(BerthClient) c = NULL;
    int fd;

    fixture_start(&f, NULL);
    fd = raw_connect(f.path);
    raw_send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"test.slow\"}\n");
    wait_slow_started(1);
    close(fd);
    open_gate();
    /* The reply finds its connection closed (or about to be) and is dropped; all is well. */
    c = connect_ok(f.uri);
    g_free(call_ok(c, "agent.ping", NULL));
    g_clear_pointer(&c, berth_client_free);
    fixture_stop(&f);
}

static GLogWriterOutput
log_writer(GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
    const char *domain = NULL, *method = NULL, *peer = NULL;

    for (gsize i = 0; i < n_fields; i++) {
        if (g_str_equal(fields[i].key, "GLIB_DOMAIN")) {
            domain = fields[i].value;
        } else if (g_str_equal(fields[i].key, "BERTH_METHOD")) {
            method = fields[i].value;
        } else if (g_str_equal(fields[i].key, "BERTH_PEER")) {
            peer = fields[i].value;
        }
    }
    if (g_strcmp0(domain, "berth-rpc") == 0 && method) {
        g_mutex_lock(&gate_lock);
        g_free(last_logged_peer);
        last_logged_peer = g_strdup(peer);
        g_mutex_unlock(&gate_lock);
        g_atomic_int_inc(&modify_logs);
        return G_LOG_WRITER_HANDLED;
    }
    if (level & (G_LOG_LEVEL_INFO | G_LOG_LEVEL_DEBUG)) {
        return G_LOG_WRITER_HANDLED;
    }
    return g_log_writer_default(level, fields, n_fields, data);
}

static void
test_readonly_and_peer(void)
{
    Fixture f = {0};
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthClient) ro = NULL;
    g_autoptr(BerthClient) rw = NULL;
    g_autofree char *want = g_strdup_printf("\"uid=%u gid=%u pid=%d\"", (unsigned) getuid(),
                                            (unsigned) getgid(), (int) getpid());
    g_autofree char *peer = NULL;
    int logs_before;

    fixture_start(&f, NULL);
    g_assert_true(berth_rpc_server_method_modifies(f.server, "test.modify"));
    g_assert_false(berth_rpc_server_method_modifies(f.server, "test.echo"));
    ro = connect_ok(f.ro_uri);
    rw = connect_ok(f.uri);
    logs_before = g_atomic_int_get(&modify_logs);

    g_assert_false(berth_client_call(ro, "test.modify", NULL, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_ACCESS_DENIED);
    g_assert_nonnull(strstr(error->message, "'test.modify'"));
    g_clear_error(&error);
    g_free(call_ok(ro, "test.echo", "{}"));
    g_free(call_ok(ro, "agent.ping", NULL));
    g_assert_cmpint(g_atomic_int_get(&modify_logs), ==, logs_before);

    peer = call_ok(rw, "test.modify", NULL);
    g_assert_cmpstr(peer, ==, want);
    /* Logged once, with the peer, before the handler ran. */
    g_assert_cmpint(g_atomic_int_get(&modify_logs), ==, logs_before + 1);
    g_mutex_lock(&gate_lock);
    g_assert_cmpuint(strlen(last_logged_peer), ==, strlen(want) - 2);
    g_assert_true(strncmp(last_logged_peer, want + 1, strlen(want) - 2) == 0);
    g_mutex_unlock(&gate_lock);

    g_clear_pointer(&ro, berth_client_free);
    g_clear_pointer(&rw, berth_client_free);
    fixture_stop(&f);
}

static void
publish(BerthBus *bus, const char *name, const char *type, const char *detail)
{
    BerthEvent ev = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "domain",
        .object_name = name,
        .type = type,
        .detail_json = detail,
    };

    berth_bus_publish(bus, &ev);
}

static char *
next_event(BerthClient *c)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *method = NULL;
    char *params = NULL;

    g_assert_true(berth_client_next_notification(c, -1, &method, &params, &error));
    g_assert_no_error(error);
    g_assert_cmpstr(method, ==, "event");
    return params;
}

static void
test_events(void)
{
    Fixture f = {0};
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthClient) c = NULL;
    g_autoptr(BerthClient) late = NULL;
    g_autofree char *sub = NULL, *ev1 = NULL, *ev2 = NULL, *sub2 = NULL, *replay = NULL;
    char *method = NULL, *params = NULL;

    fixture_start(&f, NULL);
    c = connect_ok(f.ro_uri); /* subscribing is a query: allowed read-only */
    sub = call_ok(c, "events.subscribe",
                  "{\"filter\":{\"type\":\"domain-started\",\"object_kind\":\"domain\"}}");
    g_assert_cmpstr(sub, ==, "{\"subscription\":1,\"last_seq\":0,\"missed\":0}");

    publish(f.bus, "web1", "domain-defined", NULL);
    publish(f.bus, "web1", "domain-started", "{\"state\":\"running\",\"reason\":\"booted\"}");
    publish(f.bus, "web2", "domain-started", "{\"state\":\"running\",\"reason\":\"booted\"}");
    ev1 = next_event(c);
    g_assert_nonnull(strstr(ev1, "\"seq\":2,"));
    g_assert_nonnull(strstr(ev1, "\"name\":\"web1\""));
    g_assert_nonnull(strstr(ev1, "\"type\":\"domain-started\""));
    g_assert_nonnull(strstr(ev1, "\"detail\":{\"state\":\"running\",\"reason\":\"booted\"}"));
    ev2 = next_event(c);
    g_assert_nonnull(strstr(ev2, "\"seq\":3,"));

    /* A call while events flow: notifications arriving meanwhile are queued, not lost. */
    publish(f.bus, "web3", "domain-started", NULL);
    g_free(call_ok(c, "agent.ping", NULL));
    g_free(next_event(c));

    /* A second subscription resumes from a sequence number, by object name. */
    sub2 = call_ok(c, "events.subscribe", "{\"since\":1,\"filter\":{\"object_name\":\"web2\"}}");
    g_assert_cmpstr(sub2, ==, "{\"subscription\":2,\"last_seq\":4,\"missed\":0}");
    replay = next_event(c);
    g_assert_nonnull(strstr(replay, "\"seq\":3,"));
    g_assert_nonnull(strstr(replay, "\"name\":\"web2\""));

    /* Unsubscribe, then bad params. */
    g_free(call_ok(c, "events.unsubscribe", "{\"subscription\":1}"));
    g_free(call_ok(c, "events.unsubscribe", "{\"subscription\":2}"));
    g_assert_false(berth_client_call(c, "events.unsubscribe", "{\"subscription\":1}", NULL,
                                     &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(berth_client_call(c, "events.subscribe", "{\"since\":\"x\"}", NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(berth_client_call(c, "events.subscribe", "{\"filter\":{\"kind\":\"x\"}}",
                                     NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    publish(f.bus, "web2", "domain-started", NULL);
    g_assert_false(berth_client_next_notification(c, 0, &method, &params, &error));
    g_assert_no_error(error);

    /* Bounded subscriptions per connection. */
    for (int i = 0; i < BERTH_RPC_MAX_SUBSCRIPTIONS; i++) {
        g_free(call_ok(c, "events.subscribe", "{\"filter\":{\"type\":\"none\"}}"));
    }
    g_assert_false(berth_client_call(c, "events.subscribe", NULL, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_BUSY);
    g_clear_error(&error);

    /* A client that leaves with subscriptions frees them (checked by bus_free at the end). */
    late = connect_ok(f.uri);
    g_free(call_ok(late, "events.subscribe", NULL));
    g_clear_pointer(&late, berth_client_free);
    g_clear_pointer(&c, berth_client_free);
    fixture_stop(&f);
}

static void
test_events_slow_reader(void)
{
    BerthRpcLimits limits = {.max_output = 4096, .event_queue_len = 8};
    Fixture f = {0};
    g_autoptr(BerthClient) other = NULL;
    g_autoptr(GString) detail = g_string_new("{\"pad\":\"");
    gboolean lost = FALSE, tail = FALSE;
    int fd;

    fixture_start(&f, &limits);
    fd = raw_connect(f.path);
    raw_send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\"}\n");
    g_free(raw_line(fd));
    while (detail->len < 4000) {
        g_string_append_c(detail, 'z');
    }
    g_string_append(detail, "\"}");

    /* Far more than the socket, max_output and the queue hold, while nobody reads. */
    for (int i = 0; i < 500; i++) {
        publish(f.bus, "flood", "domain-started", detail->str);
    }
    other = connect_ok(f.uri);
    g_free(call_ok(other, "agent.ping", NULL));

    /* The reader catches up: it finds the events-lost marker, then newer events again. */
    while (!lost) {
        g_autofree char *line = raw_line(fd);

        g_assert_nonnull(line);
        lost = strstr(line, "\"type\":\"events-lost\"") != NULL;
    }
    /* The queue may still be full when "after" is published: then it is lost too, and the
     * marker for it comes once the queue drained; publish again on each marker. */
    publish(f.bus, "after", "domain-started", NULL);
    while (!tail) {
        g_autofree char *line = raw_line(fd);

        g_assert_nonnull(line);
        tail = strstr(line, "\"name\":\"after\"") != NULL;
        if (strstr(line, "\"type\":\"events-lost\"")) {
            publish(f.bus, "after", "domain-started", NULL);
        }
    }
    close(fd);
    g_clear_pointer(&other, berth_client_free);
    fixture_stop(&f);
}

/* A call that times out on the client; its late reply is skipped by the next call. */
static void
test_client_timeout(void)
{
    Fixture f = {0};
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthClient) c = NULL;
    g_autofree char *pong = NULL;

    fixture_start(&f, NULL);
    c = connect_ok(f.uri);
    berth_client_set_call_timeout(c, 50);
    g_assert_false(berth_client_call(c, "test.slow", NULL, NULL, &error));
    g_assert_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
    open_gate();
    berth_client_set_call_timeout(c, -1);
    pong = call_ok(c, "agent.ping", NULL);
    g_assert_cmpstr(pong, ==, "\"pong\"");
    g_clear_pointer(&c, berth_client_free);
    fixture_stop(&f);
}

/* A subscriber that goes away while events are being written to it: the write fails, the
 * connection closes from inside the event callback, and nothing else notices. */
static void
test_subscriber_vanishes(void)
{
    Fixture f = {0};
    g_autoptr(BerthClient) other = NULL;

    fixture_start(&f, NULL);
    for (int round = 0; round < 20; round++) {
        int fd = raw_connect(f.path);

        raw_send_str(fd, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"events.subscribe\"}\n");
        g_free(raw_line(fd));
        publish(f.bus, "x", "domain-started", NULL);
        close(fd);
        for (int i = 0; i < 50; i++) {
            publish(f.bus, "x", "domain-started", NULL);
        }
    }
    other = connect_ok(f.uri);
    g_free(call_ok(other, "agent.ping", NULL));
    g_clear_pointer(&other, berth_client_free);
    fixture_stop(&f);
}

static void
test_writer_never_reads(void)
{
    BerthRpcLimits limits = {.max_output = 65536};
    Fixture f = {0};
    g_autoptr(BerthClient) other = NULL;
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.ping\"}\n";
    gsize sent = 0;
    int fd;

    fixture_start(&f, &limits);
    fd = raw_connect(f.path);
    g_assert_true(g_unix_set_fd_nonblocking(fd, TRUE, NULL));
    /* Requests without ever reading a reply: once the replies fill the socket and max_output,
     * the server stops reading, and this side's sends fail with EAGAIN. Without that limit the
     * server would read (and buffer replies) for ever: the cap turns that into a failure. */
    for (;;) {
        gssize n = send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL);

        if (n < 0) {
            g_assert_cmpint(errno, ==, EAGAIN);
            break;
        }
        sent += (gsize) n;
        g_assert_cmpuint(sent, <, 256 * 1024 * 1024);
    }
    other = connect_ok(f.uri);
    g_free(call_ok(other, "agent.ping", NULL));
    close(fd);
    g_free(call_ok(other, "agent.ping", NULL));
    g_clear_pointer(&other, berth_client_free);
    fixture_stop(&f);
}

typedef struct {
    const char *uri;
    int index;
} Worker;

static gpointer
worker_thread(gpointer data)
{
    Worker *w = data;
    g_autoptr(BerthClient) c = connect_ok(w->uri);

    for (int i = 0; i < 200; i++) {
        g_autofree char *params = g_strdup_printf("{\"w\":%d,\"i\":%d}", w->index, i);
        g_autofree char *result = call_ok(c, i % 50 == 0 ? "test.slow" : "test.echo", params);

        if (i % 50 != 0) {
            g_assert_cmpstr(result, ==, params);
        }
    }
    return NULL;
}

static void
test_concurrent(void)
{
    Fixture f = {0};
    Worker workers[8];
    GThread *threads[8];

    fixture_start(&f, NULL);
    open_gate(); /* slow calls answer from their own threads, at once */
    for (int i = 0; i < 8; i++) {
        workers[i].uri = f.uri;
        workers[i].index = i;
        threads[i] = g_thread_new("worker", worker_thread, &workers[i]);
    }
    for (int i = 0; i < 8; i++) {
        g_thread_join(threads[i]);
    }
    fixture_stop(&f);
}

static void
test_listen_errors(void)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *dir = g_dir_make_tmp("berth-rpc-XXXXXX", NULL);
    g_autofree char *file = g_build_filename(dir, "plain", NULL);
    g_autoptr(GString) longpath = g_string_new("/tmp/");
    BerthRpcServer *server = berth_rpc_server_new(NULL, NULL, NULL);
    BerthClient *c;
    int fds[2];

    g_assert_true(g_file_set_contents(file, "x", 1, NULL));
    g_assert_false(berth_rpc_server_listen_unix(server, file, FALSE, 0600, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS);
    g_clear_error(&error);
    while (longpath->len < 200) {
        g_string_append_c(longpath, 'l');
    }
    g_assert_false(berth_rpc_server_listen_unix(server, longpath->str, FALSE, 0600, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), ==, 0);
    g_assert_false(berth_rpc_server_listen_fd(server, fds[0], FALSE, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    close(fds[1]);

    /* An old socket file is replaced. */
    g_unlink(file);
    {
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);

        g_strlcpy(addr.sun_path, file, sizeof(addr.sun_path));
        g_assert_cmpint(bind(fd, (struct sockaddr *) &addr, sizeof(addr)), ==, 0);
        close(fd);
    }
    g_assert_true(berth_rpc_server_listen_unix(server, file, FALSE, 0600, &error));
    g_assert_no_error(error);
    /* The backlog completes the connect although no loop runs here. */
    c = connect_ok(file);
    berth_client_free(c);
    berth_rpc_server_free(server);
    g_assert_false(g_file_test(file, G_FILE_TEST_EXISTS));
    g_rmdir(dir);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_log_set_writer_func(log_writer, NULL, NULL);
    g_test_add_func("/rpc/server/happy-paths", test_happy);
    g_test_add_func("/rpc/server/malformed-lines-keep-connection", test_malformed);
    g_test_add_func("/rpc/server/oversized-closes-only-that-connection", test_oversized);
    g_test_add_func("/rpc/server/max-clients", test_max_clients);
    g_test_add_func("/rpc/server/max-pending", test_max_pending);
    g_test_add_func("/rpc/server/reply-after-disconnect", test_reply_after_disconnect);
    g_test_add_func("/rpc/server/readonly-and-peer", test_readonly_and_peer);
    g_test_add_func("/rpc/server/events", test_events);
    g_test_add_func("/rpc/server/events-slow-reader", test_events_slow_reader);
    g_test_add_func("/rpc/server/subscriber-vanishes", test_subscriber_vanishes);
    g_test_add_func("/rpc/client/timeout-skips-late-reply", test_client_timeout);
    g_test_add_func("/rpc/server/writer-that-never-reads", test_writer_never_reads);
    g_test_add_func("/rpc/server/concurrent-clients", test_concurrent);
    g_test_add_func("/rpc/server/listen-errors", test_listen_errors);
    return g_test_run();
}
