/* The QMP client against a fake QEMU: the test thread plays QEMU on the other end of a socket. */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib/gstdio.h>
#include <yajl/yajl_tree.h>

#include <berth/error.h>

#include "qmp.h"

#define GREETING                                                                               \
    "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, "           \
    "\"package\": \"Debian 1:7.2+dfsg-7\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define PEER_TIMEOUT_MS 10000

typedef struct {
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *loop_thread;
    BerthQmp *qmp;
    int peer;      /* the fake QEMU's end */
    int client_fd; /* the client's end, until connect takes it */
    GString *peer_in;

    GMutex lock; /* protects what the callbacks record, below */
    GCond cond;
    GPtrArray *events; /* "NAME DATA TIMESTAMP" */
    guint closed_count;
    char *closed_reason;
    gboolean close_in_callback;   /* the event callback closes the client on "CLOSE_ME" */
    gboolean unref_in_callback;   /* ... or drops the fixture's reference */
    gboolean block_in_callback;   /* the event callback waits for @release on "BLOCK" */
    gboolean blocked;
    gboolean release;
    gboolean callback_done;
} Fixture;

/* ---- the fake QEMU ---- */

static void
peer_send(Fixture *f, const char *text)
{
    gsize len = strlen(text), off = 0;

    while (off < len) {
        ssize_t n = send(f->peer, text + off, len - off, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        g_assert_cmpint(n, >, 0);
        off += (gsize) n;
    }
}

/* The next line the client wrote, or NULL on EOF. */
static char *
peer_read_line(Fixture *f)
{
    for (;;) {
        char *nl = strchr(f->peer_in->str, '\n');
        struct pollfd pfd = {.fd = f->peer, .events = POLLIN};
        char buf[4096];
        ssize_t n;

        if (nl) {
            char *line = g_strndup(f->peer_in->str, (gsize) (nl - f->peer_in->str));

            g_string_erase(f->peer_in, 0, nl - f->peer_in->str + 1);
            return line;
        }
        g_assert_cmpint(poll(&pfd, 1, PEER_TIMEOUT_MS), ==, 1);
        n = read(f->peer, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) { /* reset: it closed with input unread */
            return NULL;
        }
        g_assert_cmpint(n, >, 0);
        g_string_append_len(f->peer_in, buf, n);
    }
}

/* Reads one command; returns its name, sets *@id and *@args (JSON text or NULL). */
static char *
peer_read_command(Fixture *f, char **id, char **args_n)
{
    g_autofree char *line = peer_read_line(f);
    const char *exec_path[] = {"execute", NULL};
    const char *id_path[] = {"id", NULL};
    const char *n_path[] = {"arguments", "n", NULL};
    yajl_val tree, v;
    char *name;

    g_assert_nonnull(line);
    g_assert_true(g_str_has_suffix(line, "\r"));
    tree = yajl_tree_parse(line, NULL, 0);
    g_assert_nonnull(tree);
    v = yajl_tree_get(tree, exec_path, yajl_t_string);
    g_assert_nonnull(v);
    name = g_strdup(YAJL_GET_STRING(v));
    v = yajl_tree_get(tree, id_path, yajl_t_string);
    g_assert_nonnull(v);
    *id = g_strdup(YAJL_GET_STRING(v));
    if (args_n) {
        v = yajl_tree_get(tree, n_path, yajl_t_number);
        *args_n = v ? g_strdup(YAJL_GET_NUMBER(v)) : NULL;
    }
    yajl_tree_free(tree);
    return name;
}

static void
peer_reply(Fixture *f, const char *id, const char *return_json)
{
    g_autofree char *msg = g_strdup_printf("{\"return\": %s, \"id\": \"%s\"}\r\n", return_json, id);

    peer_send(f, msg);
}

static void
peer_expect_eof(Fixture *f)
{
    g_autofree char *line = peer_read_line(f);

    g_assert_null(line);
}

/* ---- the client's side ---- */

static void
on_event(BerthQmp *qmp, const char *event, const char *data_json, gint64 timestamp_us,
         gpointer user_data)
{
    Fixture *f = user_data;
    gboolean close_it, unref_it;

    g_mutex_lock(&f->lock);
    g_ptr_array_add(f->events, g_strdup_printf("%s %s %" G_GINT64_FORMAT, event, data_json,
                                               timestamp_us));
    close_it = f->close_in_callback && strcmp(event, "CLOSE_ME") == 0;
    unref_it = f->unref_in_callback && strcmp(event, "CLOSE_ME") == 0;
    if (f->block_in_callback && strcmp(event, "BLOCK") == 0) {
        f->blocked = TRUE;
        g_cond_broadcast(&f->cond);
        while (!f->release) {
            g_cond_wait(&f->cond, &f->lock);
        }
        g_usleep(50 * 1000);
        f->callback_done = TRUE;
    }
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
    if (close_it) {
        berth_qmp_close(qmp);
    }
    if (unref_it) {
        berth_qmp_unref(g_steal_pointer(&f->qmp));
    }
}

static void
on_closed(BerthQmp *qmp, const GError *reason, gpointer user_data)
{
    Fixture *f = user_data;

    g_assert_true(g_error_matches(reason, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED));
    g_mutex_lock(&f->lock);
    f->closed_count++;
    g_free(f->closed_reason);
    f->closed_reason = g_strdup(reason->message);
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
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
fixture_setup(Fixture *f, gconstpointer data)
{
    int sv[2];

    g_mutex_init(&f->lock);
    g_cond_init(&f->cond);
    f->events = g_ptr_array_new_with_free_func(g_free);
    f->ctx = g_main_context_new();
    f->loop = g_main_loop_new(f->ctx, FALSE);
    f->loop_thread = g_thread_new("qmp-loop", loop_thread, f);
    g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), ==, 0);
    f->peer = sv[0];
    f->client_fd = sv[1];
    f->peer_in = g_string_new(NULL);
    f->qmp = berth_qmp_new(f->ctx, on_event, on_closed, f);
}

static gboolean
quit_cb(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

static void
fixture_teardown(Fixture *f, gconstpointer data)
{
    GSource *idle = g_idle_source_new();

    berth_qmp_unref(f->qmp);
    g_source_set_callback(idle, quit_cb, f->loop, NULL);
    g_source_attach(idle, f->ctx);
    g_source_unref(idle);
    g_thread_join(f->loop_thread);
    g_main_loop_unref(f->loop);
    g_main_context_unref(f->ctx);
    if (f->client_fd >= 0) {
        close(f->client_fd);
    }
    close(f->peer);
    g_string_free(f->peer_in, TRUE);
    g_ptr_array_unref(f->events);
    g_free(f->closed_reason);
    g_mutex_clear(&f->lock);
    g_cond_clear(&f->cond);
}

/* ---- calls from other threads ---- */

typedef struct {
    Fixture *f;
    BerthQmp *qmp;
    char *command;
    char *args;
    guint timeout_ms;
    GCancellable *cancellable;
    gboolean ok;
    char *ret;
    char *error_class;
    GError *error;
    gint64 took_us;
    GThread *thread;
    gboolean hold;
} Call;

static gpointer
call_thread(gpointer data)
{
    Call *c = data;
    gint64 start = g_get_monotonic_time();

    c->ok = berth_qmp_command(c->qmp, c->command, c->args, c->timeout_ms, c->cancellable,
                              &c->ret, &c->error_class, &c->error);
    c->took_us = g_get_monotonic_time() - start;
    return NULL;
}

/* @hold: the call keeps a reference of its own (else the test keeps the client alive). */
static Call *
call_start_full(Fixture *f, gboolean hold, const char *command, const char *args,
                guint timeout_ms, GCancellable *cancellable)
{
    Call *c = g_new0(Call, 1);

    c->f = f;
    c->qmp = hold ? berth_qmp_ref(f->qmp) : f->qmp;
    c->hold = hold;
    c->command = g_strdup(command);
    c->args = g_strdup(args);
    c->timeout_ms = timeout_ms;
    c->cancellable = cancellable ? g_object_ref(cancellable) : NULL;
    c->thread = g_thread_new("qmp-call", call_thread, c);
    return c;
}

static Call *
call_start(Fixture *f, const char *command, const char *args, guint timeout_ms,
           GCancellable *cancellable)
{
    return call_start_full(f, TRUE, command, args, timeout_ms, cancellable);
}

static void
call_join(Call *c)
{
    g_thread_join(c->thread);
    c->thread = NULL;
}

static void
call_free(Call *c)
{
    if (c->thread) {
        call_join(c);
    }
    if (c->hold) {
        berth_qmp_unref(c->qmp);
    }
    g_free(c->command);
    g_free(c->args);
    g_clear_object(&c->cancellable);
    g_free(c->ret);
    g_free(c->error_class);
    g_clear_error(&c->error);
    g_free(c);
}

typedef struct {
    BerthQmp *qmp;
    int fd;
    const char *path;
    guint timeout_ms;
    GCancellable *cancellable;
    gboolean ok;
    GError *error;
    gint64 took_us;
} ConnectCall;

static gpointer
connect_thread(gpointer data)
{
    ConnectCall *c = data;
    gint64 start = g_get_monotonic_time();

    if (c->path) {
        c->ok = berth_qmp_connect(c->qmp, c->path, c->timeout_ms, c->cancellable, &c->error);
    } else {
        c->ok = berth_qmp_connect_fd(c->qmp, c->fd, c->timeout_ms, c->cancellable, &c->error);
    }
    c->took_us = g_get_monotonic_time() - start;
    return NULL;
}

/* Plays QEMU's side of a connect: greeting (in pieces of @split bytes), capabilities. */
static void
peer_handshake(Fixture *f, gsize split)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    const char *greeting = GREETING;

    for (gsize off = 0; off < strlen(greeting); off += split) {
        g_autofree char *piece = g_strndup(greeting + off, split);

        peer_send(f, piece);
        if (split < 8) {
            g_usleep(200);
        }
    }
    name = peer_read_command(f, &id, NULL);
    g_assert_cmpstr(name, ==, "qmp_capabilities");
    peer_reply(f, id, "{}");
}

static void
connect_fixture(Fixture *f, gsize split)
{
    ConnectCall c = {.qmp = f->qmp, .fd = f->client_fd, .timeout_ms = PEER_TIMEOUT_MS};
    GThread *t;

    f->client_fd = -1;
    t = g_thread_new("qmp-connect", connect_thread, &c);
    peer_handshake(f, split);
    g_thread_join(t);
    g_assert_no_error(c.error);
    g_assert_true(c.ok);
    g_assert_true(berth_qmp_is_connected(f->qmp));
}

static void
wait_events(Fixture *f, guint n)
{
    gint64 deadline = g_get_monotonic_time() + PEER_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;

    g_mutex_lock(&f->lock);
    while (f->events->len < n) {
        g_assert_true(g_cond_wait_until(&f->cond, &f->lock, deadline) || f->events->len >= n);
    }
    g_mutex_unlock(&f->lock);
}

static void
wait_closed(Fixture *f)
{
    gint64 deadline = g_get_monotonic_time() + PEER_TIMEOUT_MS * G_TIME_SPAN_MILLISECOND;

    g_mutex_lock(&f->lock);
    while (f->closed_count == 0) {
        g_assert_true(g_cond_wait_until(&f->cond, &f->lock, deadline) || f->closed_count > 0);
    }
    g_mutex_unlock(&f->lock);
}

/* Lets the context run whatever is queued (late callbacks would show up by now). */
static void
settle(void)
{
    g_usleep(100 * 1000);
}

/* ---- tests ---- */

static void
test_connect(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    g_assert_null(berth_qmp_qemu_version(f->qmp));
    g_assert_false(berth_qmp_is_connected(f->qmp));
    connect_fixture(f, 1); /* the greeting one byte at a time */
    g_assert_cmpstr(berth_qmp_qemu_version(f->qmp), ==, "7.2.0");

    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    g_assert_cmpstr(name, ==, "query-status");
    peer_reply(f, id, "{\"status\": \"running\", \"singlestep\": false, \"running\": true}");
    call_join(c);
    g_assert_no_error(c->error);
    g_assert_true(c->ok);
    g_assert_cmpstr(c->ret, ==, "{\"status\":\"running\",\"singlestep\":false,\"running\":true}");
    call_free(c);
}

/* Several threads at once; QEMU answers each round in reverse order. */
static void
test_out_of_order(Fixture *f, gconstpointer data)
{
    enum { THREADS = 12, ROUNDS = 5 };

    connect_fixture(f, 4096);
    for (guint round = 0; round < ROUNDS; round++) {
        Call *calls[THREADS];
        char *ids[THREADS];
        char *ns[THREADS];

        for (guint i = 0; i < THREADS; i++) {
            g_autofree char *args = g_strdup_printf("{\"n\": %u}", round * 100 + i);

            calls[i] = call_start(f, "echo", args, PEER_TIMEOUT_MS, NULL);
        }
        for (guint i = 0; i < THREADS; i++) {
            g_autofree char *name = peer_read_command(f, &ids[i], &ns[i]);

            g_assert_cmpstr(name, ==, "echo");
            g_assert_nonnull(ns[i]);
        }
        for (guint i = THREADS; i-- > 0;) {
            g_autofree char *ret = g_strdup_printf("{\"n\": %s}", ns[i]);

            peer_reply(f, ids[i], ret);
            g_free(ids[i]);
            g_free(ns[i]);
        }
        for (guint i = 0; i < THREADS; i++) {
            g_autofree char *want = g_strdup_printf("{\"n\":%u}", round * 100 + i);

            call_join(calls[i]);
            g_assert_no_error(calls[i]->error);
            g_assert_cmpstr(calls[i]->ret, ==, want);
            call_free(calls[i]);
        }
    }
}

/* Events in random pieces, with a reply among them: delivered in order, data intact. */
static void
test_events_in_order(Fixture *f, gconstpointer data)
{
    enum { EVENTS = 300 };
    g_autoptr(GString) stream = g_string_new(NULL);
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    GRand *rand = g_rand_new_with_seed(42);
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, PEER_TIMEOUT_MS, NULL);
    name = peer_read_command(f, &id, NULL);
    for (guint i = 0; i < EVENTS; i++) {
        if (i == EVENTS / 2) {
            g_string_append_printf(stream, "{\"return\": {\"status\": \"paused\"}, \"id\": \"%s\"}",
                                   id);
        }
        g_string_append_printf(stream,
                               "{\"timestamp\": {\"seconds\": %u, \"microseconds\": %u}, "
                               "\"event\": \"%s\", \"data\": {\"n\": %u, \"s\": \"a}\\\"{\"}}%s",
                               1700000000 + i, i, i % 2 ? "STOP" : "RESUME", i,
                               i % 3 ? "\r\n" : "");
    }
    for (gsize off = 0; off < stream->len;) {
        gsize n = MIN((gsize) g_rand_int_range(rand, 1, 200), stream->len - off);
        g_autofree char *piece = g_strndup(stream->str + off, n);

        peer_send(f, piece);
        off += n;
    }
    wait_events(f, EVENTS);
    call_join(c);
    g_assert_no_error(c->error);
    g_assert_cmpstr(c->ret, ==, "{\"status\":\"paused\"}");
    for (guint i = 0; i < EVENTS; i++) {
        g_autofree char *want = g_strdup_printf("%s {\"n\":%u,\"s\":\"a}\\\"{\"} %" G_GINT64_FORMAT,
                                                i % 2 ? "STOP" : "RESUME", i,
                                                (gint64) (1700000000 + i) * G_USEC_PER_SEC + i);

        g_assert_cmpstr(g_ptr_array_index(f->events, i), ==, want);
    }
    /* No data, no timestamp. */
    peer_send(f, "{\"event\": \"SHUTDOWN\"}\n");
    wait_events(f, EVENTS + 1);
    g_assert_cmpstr(g_ptr_array_index(f->events, EVENTS), ==, "SHUTDOWN {} 0");
    call_free(c);
    g_rand_free(rand);
}

static void
test_error_reply(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    g_autofree char *msg = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "device_del", "{\"id\": \"net0\"}", PEER_TIMEOUT_MS, NULL);
    name = peer_read_command(f, &id, NULL);
    g_assert_cmpstr(name, ==, "device_del");
    msg = g_strdup_printf("{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'net0' "
                          "not found\"}, \"id\": \"%s\"}\r\n",
                          id);
    peer_send(f, msg);
    call_join(c);
    g_assert_false(c->ok);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_cmpstr(c->error->message, ==, "QEMU refused device_del: Device 'net0' not found");
    g_assert_cmpstr(c->error_class, ==, "DeviceNotFound");
    g_assert_null(c->ret);
    g_assert_true(berth_qmp_is_connected(f->qmp));
    call_free(c);
}

/* A reply without an id goes to the only waiting command. */
static void
test_reply_without_id(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, PEER_TIMEOUT_MS, NULL);
    name = peer_read_command(f, &id, NULL);
    peer_send(f, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error\"}}\n");
    call_join(c);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_cmpstr(c->error_class, ==, "GenericError");
    call_free(c);
    /* With nobody waiting it is dropped. */
    peer_send(f, "{\"return\": {}}\n");
    settle();
    g_assert_true(berth_qmp_is_connected(f->qmp));
}

static void
test_timeout_late_reply(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *id2 = NULL;
    g_autofree char *name = NULL;
    g_autofree char *name2 = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 150, NULL);
    name = peer_read_command(f, &id, NULL);
    call_join(c);
    g_assert_false(c->ok);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_TIMEOUT);
    g_assert_cmpint(c->took_us, >=, 150 * G_TIME_SPAN_MILLISECOND);
    call_free(c);

    c = call_start(f, "query-version", NULL, PEER_TIMEOUT_MS, NULL);
    name2 = peer_read_command(f, &id2, NULL);
    g_assert_cmpstr(id, !=, id2);
    peer_reply(f, id, "{\"status\": \"late\"}"); /* dropped */
    peer_reply(f, id2, "{\"qemu\": {}}");
    call_join(c);
    g_assert_no_error(c->error);
    g_assert_cmpstr(c->ret, ==, "{\"qemu\":{}}");
    g_assert_true(berth_qmp_is_connected(f->qmp));
    call_free(c);
}

/* A pending command fails with @what, the closed callback runs once, later commands fail. */
static void
assert_closed_with(Fixture *f, Call *c, const char *what)
{
    GError *error = NULL;

    call_join(c);
    g_assert_false(c->ok);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(c->error->message, what));
    wait_closed(f);
    settle();
    g_mutex_lock(&f->lock);
    g_assert_cmpuint(f->closed_count, ==, 1);
    g_assert_nonnull(strstr(f->closed_reason, what));
    g_mutex_unlock(&f->lock);
    g_assert_false(berth_qmp_is_connected(f->qmp));
    g_assert_false(berth_qmp_command(f->qmp, "query-status", NULL, 0, NULL, NULL, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(error->message, what));
    g_error_free(error);
    peer_expect_eof(f);
}

static void
test_oversize(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    g_autofree char *big = NULL;
    Call *c;

    connect_fixture(f, 4096);
    berth_qmp_set_max_message(f->qmp, 1024);
    /* Just fits. */
    big = g_strdup_printf("{\"event\":\"X\",\"data\":{\"s\":\"%*s\"}}", 1024 - 29, "");
    g_assert_cmpuint(strlen(big), ==, 1024);
    peer_send(f, big);
    wait_events(f, 1);
    g_free(big);

    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    /* An unterminated string far over the limit: refused before it is all there. */
    big = g_strdup_printf("{\"return\": \"%*s", 4000, "");
    peer_send(f, big);
    assert_closed_with(f, c, "larger than the limit of 1024 bytes");
    call_free(c);
}

static void
test_malformed(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    peer_send(f, "{\"return\": nope}\r\n");
    assert_closed_with(f, c, "QEMU sent malformed JSON");
    call_free(c);
}

static void
test_garbage_between(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    peer_send(f, "[1]\r\n");
    assert_closed_with(f, c, "unexpected byte 0x5b");
    call_free(c);
}

static void
test_too_deep(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    g_autofree char *deep = g_strnfill(200, '[');
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    peer_send(f, "{\"return\": ");
    peer_send(f, deep);
    assert_closed_with(f, c, "nested deeper than");
    call_free(c);
}

/* EOF with a command waiting (no timeout): it fails at once. */
static void
test_eof_pending(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    shutdown(f->peer, SHUT_WR);
    assert_closed_with(f, c, "monitor connection closed by QEMU");
    call_free(c);
}

static void
test_cancel(Fixture *f, gconstpointer data)
{
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 0, cancellable);
    name = peer_read_command(f, &id, NULL);
    g_cancellable_cancel(cancellable);
    call_join(c);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_CANCELLED);
    call_free(c);
    /* Already cancelled: fails without sending anything. */
    c = call_start(f, "query-status", NULL, 0, cancellable);
    call_join(c);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_CANCELLED);
    call_free(c);
    peer_reply(f, id, "{}"); /* late, dropped */

    c = call_start(f, "query-status", NULL, PEER_TIMEOUT_MS, NULL);
    g_free(g_steal_pointer(&name));
    g_free(g_steal_pointer(&id));
    name = peer_read_command(f, &id, NULL);
    peer_reply(f, id, "{\"status\": \"running\"}");
    call_join(c);
    g_assert_no_error(c->error);
    call_free(c);
}

/* Arguments that are not a JSON object are refused before anything is sent. */
static void
test_bad_args(Fixture *f, gconstpointer data)
{
    GError *error = NULL;

    connect_fixture(f, 4096);
    g_assert_false(berth_qmp_command(f->qmp, "x", "[1]", 0, NULL, NULL, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_false(berth_qmp_command(f->qmp, "x", "{\"a\":", 0, NULL, NULL, NULL, &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT);
    g_clear_error(&error);
    g_assert_true(berth_qmp_is_connected(f->qmp));
}

static char *
socket_path(void)
{
    g_autofree char *dir = g_dir_make_tmp("test-qmp-XXXXXX", NULL);

    g_assert_nonnull(dir);
    return g_build_filename(dir, "qmp.sock", NULL);
}

static void
remove_socket(const char *path)
{
    g_autofree char *dir = g_path_get_dirname(path);

    g_unlink(path);
    g_rmdir(dir);
}

/* The socket appears only after the client started trying. */
static void
test_connect_retry(Fixture *f, gconstpointer data)
{
    g_autofree char *path = socket_path();
    ConnectCall c = {.qmp = f->qmp, .path = path, .timeout_ms = PEER_TIMEOUT_MS};
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    GThread *t;
    int listener;

    t = g_thread_new("qmp-connect", connect_thread, &c);
    g_usleep(200 * 1000);
    /* Bound but not listening yet: refused, retried. */
    listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    g_strlcpy(addr.sun_path, path, sizeof addr.sun_path);
    g_assert_cmpint(bind(listener, (struct sockaddr *) &addr, sizeof addr), ==, 0);
    g_usleep(100 * 1000);
    g_assert_cmpint(listen(listener, 1), ==, 0);
    close(f->peer);
    f->peer = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    g_assert_cmpint(f->peer, >=, 0);
    peer_handshake(f, 4096);
    g_thread_join(t);
    g_assert_no_error(c.error);
    g_assert_true(c.ok);
    g_assert_cmpint(c.took_us, >=, 300 * G_TIME_SPAN_MILLISECOND);
    g_assert_true(berth_qmp_is_connected(f->qmp));
    close(listener);
    remove_socket(path);
}

static void
test_connect_timeout(Fixture *f, gconstpointer data)
{
    g_autofree char *path = socket_path();
    ConnectCall c = {.qmp = f->qmp, .path = path, .timeout_ms = 200};
    GThread *t;

    t = g_thread_new("qmp-connect", connect_thread, &c);
    g_thread_join(t);
    g_assert_false(c.ok);
    g_assert_error(c.error, BERTH_ERROR, BERTH_ERROR_TIMEOUT);
    g_assert_cmpint(c.took_us, >=, 200 * G_TIME_SPAN_MILLISECOND);
    g_assert_cmpint(c.took_us, <, 5 * G_USEC_PER_SEC);
    g_assert_false(berth_qmp_is_connected(f->qmp));
    g_clear_error(&c.error);
    remove_socket(path);
}

/* Connected, but QEMU never greets: a timeout, and the socket is closed. */
static void
test_greeting_timeout(Fixture *f, gconstpointer data)
{
    ConnectCall c = {.qmp = f->qmp, .fd = f->client_fd, .timeout_ms = 200};
    GThread *t;

    f->client_fd = -1;
    t = g_thread_new("qmp-connect", connect_thread, &c);
    g_thread_join(t);
    g_assert_false(c.ok);
    g_assert_error(c.error, BERTH_ERROR, BERTH_ERROR_TIMEOUT);
    g_clear_error(&c.error);
    peer_expect_eof(f);
    settle();
    g_assert_cmpuint(f->closed_count, ==, 0); /* it never was connected */
}

static void
test_connect_cancel(Fixture *f, gconstpointer data)
{
    g_autoptr(GCancellable) cancellable = g_cancellable_new();
    ConnectCall c = {.qmp = f->qmp, .fd = f->client_fd, .timeout_ms = 0,
                     .cancellable = cancellable};
    GThread *t;

    f->client_fd = -1;
    t = g_thread_new("qmp-connect", connect_thread, &c);
    g_usleep(50 * 1000);
    g_cancellable_cancel(cancellable);
    g_thread_join(t);
    g_assert_error(c.error, BERTH_ERROR, BERTH_ERROR_CANCELLED);
    g_clear_error(&c.error);
    peer_expect_eof(f);
}

/* A greeting that is not one: the connect fails with the reason. */
static void
test_connect_bad_greeting(Fixture *f, gconstpointer data)
{
    ConnectCall c = {.qmp = f->qmp, .fd = f->client_fd, .timeout_ms = PEER_TIMEOUT_MS};
    GThread *t;

    f->client_fd = -1;
    t = g_thread_new("qmp-connect", connect_thread, &c);
    peer_send(f, "{\"event\": \"STOP\"}\r\n");
    g_thread_join(t);
    g_assert_error(c.error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(c.error->message, "before its QMP greeting"));
    g_clear_error(&c.error);
    peer_expect_eof(f);
}

/* The last reference goes while another thread waits: it fails, no callback runs. */
static void
test_unref_pending(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start_full(f, FALSE, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    berth_qmp_unref(g_steal_pointer(&f->qmp));
    call_join(c);
    g_assert_error(c->error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED);
    g_assert_nonnull(strstr(c->error->message, "released"));
    peer_expect_eof(f);
    settle();
    g_assert_cmpuint(f->events->len, ==, 0);
    g_assert_cmpuint(f->closed_count, ==, 0);
    call_free(c);
}

/* berth_qmp_close() from another thread: the waiting command fails, closed runs once. */
static void
test_close_from_thread(Fixture *f, gconstpointer data)
{
    g_autofree char *id = NULL;
    g_autofree char *name = NULL;
    Call *c;

    connect_fixture(f, 4096);
    c = call_start(f, "query-status", NULL, 0, NULL);
    name = peer_read_command(f, &id, NULL);
    berth_qmp_close(f->qmp);
    assert_closed_with(f, c, "closed by berth");
    berth_qmp_close(f->qmp); /* twice is harmless */
    settle();
    g_assert_cmpuint(f->closed_count, ==, 1);
    call_free(c);
}

/* The last unref from another thread returns only after a running callback did. */
static gpointer
unref_thread(gpointer data)
{
    Fixture *f = data;
    gboolean done;

    berth_qmp_unref(f->qmp);
    g_mutex_lock(&f->lock);
    done = f->callback_done;
    g_mutex_unlock(&f->lock);
    return GINT_TO_POINTER(done);
}

static void
test_unref_waits_for_callback(Fixture *f, gconstpointer data)
{
    GThread *t;

    connect_fixture(f, 4096);
    f->block_in_callback = TRUE;
    peer_send(f, "{\"event\": \"BLOCK\"}{\"event\": \"AFTER\"}\r\n");
    g_mutex_lock(&f->lock);
    while (!f->blocked) {
        g_cond_wait(&f->cond, &f->lock);
    }
    g_mutex_unlock(&f->lock);
    t = g_thread_new("qmp-unref", unref_thread, f);
    settle();
    g_mutex_lock(&f->lock);
    f->release = TRUE;
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
    g_assert_true(GPOINTER_TO_INT(g_thread_join(t)));
    f->qmp = NULL;
    peer_expect_eof(f);
    settle();
    g_assert_cmpuint(f->events->len, ==, 1); /* not AFTER */
    g_assert_cmpuint(f->closed_count, ==, 0);
}

/* berth_qmp_close() from an event callback: the events after it are not delivered, closed
 * runs once, after the event. */
static void
test_close_in_callback(Fixture *f, gconstpointer data)
{
    connect_fixture(f, 4096);
    f->close_in_callback = TRUE;
    peer_send(f, "{\"event\": \"A\"}{\"event\": \"CLOSE_ME\"}{\"event\": \"B\"}\r\n");
    wait_closed(f);
    settle();
    g_assert_cmpuint(f->events->len, ==, 2);
    g_assert_cmpuint(f->closed_count, ==, 1);
    g_assert_cmpstr(f->closed_reason, ==, "the monitor connection was closed by berth");
    peer_expect_eof(f);
}

static void
test_unref_in_callback(Fixture *f, gconstpointer data)
{
    connect_fixture(f, 4096);
    f->unref_in_callback = TRUE;
    peer_send(f, "{\"event\": \"A\"}{\"event\": \"CLOSE_ME\"}{\"event\": \"B\"}\r\n");
    peer_expect_eof(f);
    settle();
    g_assert_null(f->qmp);
    g_assert_cmpuint(f->events->len, ==, 2);
    g_assert_cmpuint(f->closed_count, ==, 0);
}

/* flush_input on the context thread reads what is there at once (events before an exit). The
 * loop is held in a callback while QEMU writes, so the socket watch cannot see it first. */
typedef struct {
    Fixture *f;
    gboolean started;
    gboolean sent;
    gboolean done;
    guint events;
    guint closed;
} FlushData;

static gboolean
flush_cb(gpointer data)
{
    FlushData *d = data;
    Fixture *f = d->f;

    g_mutex_lock(&f->lock);
    d->started = TRUE;
    g_cond_broadcast(&f->cond);
    while (!d->sent) {
        g_cond_wait(&f->cond, &f->lock);
    }
    g_mutex_unlock(&f->lock);
    g_assert_cmpuint(f->events->len, ==, 0);
    berth_qmp_flush_input(f->qmp);
    g_mutex_lock(&f->lock);
    d->events = f->events->len;
    d->closed = f->closed_count;
    d->done = TRUE;
    g_cond_broadcast(&f->cond);
    g_mutex_unlock(&f->lock);
    return G_SOURCE_REMOVE;
}

static void
test_flush_input(Fixture *f, gconstpointer data)
{
    FlushData d = {.f = f};
    GSource *idle = g_idle_source_new();

    connect_fixture(f, 4096);
    g_source_set_callback(idle, flush_cb, &d, NULL);
    g_source_attach(idle, f->ctx);
    g_source_unref(idle);
    g_mutex_lock(&f->lock);
    while (!d.started) {
        g_cond_wait(&f->cond, &f->lock);
    }
    g_mutex_unlock(&f->lock);
    peer_send(f, "{\"event\": \"STOP\"}\r\n{\"event\": \"SHUTDOWN\"}\r\n");
    shutdown(f->peer, SHUT_WR);
    g_mutex_lock(&f->lock);
    d.sent = TRUE;
    g_cond_broadcast(&f->cond);
    while (!d.done) {
        g_cond_wait(&f->cond, &f->lock);
    }
    g_mutex_unlock(&f->lock);
    g_assert_cmpuint(d.events, ==, 2);
    g_assert_cmpuint(d.closed, ==, 1);
    g_assert_cmpstr(g_ptr_array_index(f->events, 1), ==, "SHUTDOWN {} 0");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
    ADD("/qemu/qmp/connect", test_connect);
    ADD("/qemu/qmp/out-of-order-from-threads", test_out_of_order);
    ADD("/qemu/qmp/events-in-order", test_events_in_order);
    ADD("/qemu/qmp/error-reply", test_error_reply);
    ADD("/qemu/qmp/reply-without-id", test_reply_without_id);
    ADD("/qemu/qmp/timeout-then-late-reply", test_timeout_late_reply);
    ADD("/qemu/qmp/oversize", test_oversize);
    ADD("/qemu/qmp/malformed", test_malformed);
    ADD("/qemu/qmp/garbage-between-messages", test_garbage_between);
    ADD("/qemu/qmp/too-deep", test_too_deep);
    ADD("/qemu/qmp/eof-pending", test_eof_pending);
    ADD("/qemu/qmp/cancel", test_cancel);
    ADD("/qemu/qmp/bad-args", test_bad_args);
    ADD("/qemu/qmp/connect-retry", test_connect_retry);
    ADD("/qemu/qmp/connect-timeout", test_connect_timeout);
    ADD("/qemu/qmp/greeting-timeout", test_greeting_timeout);
    ADD("/qemu/qmp/connect-cancel", test_connect_cancel);
    ADD("/qemu/qmp/connect-bad-greeting", test_connect_bad_greeting);
    ADD("/qemu/qmp/unref-with-pending", test_unref_pending);
    ADD("/qemu/qmp/close-from-thread", test_close_from_thread);
    ADD("/qemu/qmp/unref-waits-for-callback", test_unref_waits_for_callback);
    ADD("/qemu/qmp/close-in-callback", test_close_in_callback);
    ADD("/qemu/qmp/unref-in-callback", test_unref_in_callback);
    ADD("/qemu/qmp/flush-input", test_flush_input);
#undef ADD
    return g_test_run();
}
