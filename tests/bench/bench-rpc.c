/* Benchmark of the JSON-RPC server: round trips/s and latency on one and on 50 connections. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include <berth/json.h>

#include "ctl/client.h"
#include "rpc/server.h"

#define RUNS 7
#define ONE_CONN_CALLS 50000
#define MANY_CONNS 50
#define MANY_CALLS 100000

typedef struct {
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
    BerthRpcServer *server;
    char *dir;
    char *path;
    clockid_t cpu_clock; /* the server thread's CPU clock */
    GMutex lock;
    GCond cond;
    gboolean ready;
} Bench;

typedef struct {
    double rate;   /* round trips per second */
    double p50_us;
    double p99_us;
    double cpu_us; /* server thread CPU per call */
} Result;

static gint64
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (gint64) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static gint64
cpu_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (gint64) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Answers like the daemon's agent.info: an object of about 400 bytes built with yajl. */
static void
info_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    yajl_gen g = yajl_gen_alloc(NULL);

    yajl_gen_map_open(g);
    berth_json_kv_str(g, "version", "0.1.0");
    berth_json_kv_str(g, "hostname", g_get_host_name());
    berth_json_kv_int(g, "pid", getpid());
    berth_json_kv_int(g, "uptime_s", g_get_monotonic_time() / G_USEC_PER_SEC);
    berth_json_kv_bool(g, "privileged", FALSE);
    berth_json_kv_str(g, "config_file", "/etc/berth/berthd.conf");
    berth_json_str(g, "dirs");
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "config", "/etc/berth");
    berth_json_kv_str(g, "state", "/var/lib/berth");
    berth_json_kv_str(g, "run", "/run/berth");
    berth_json_kv_str(g, "plugins", "/usr/lib/x86_64-linux-gnu/berth/plugins");
    berth_json_kv_str(g, "domains", "/etc/berth/domains");
    yajl_gen_map_close(g);
    berth_json_kv_int(g, "domains", 12);
    berth_json_kv_int(g, "plugins", 4);
    berth_json_kv_int(g, "last_event_seq", 4711);
    yajl_gen_map_close(g);
    berth_rpc_call_reply(call, berth_json_finish(g));
}

static gpointer
loop_thread(gpointer data)
{
    Bench *b = data;

    pthread_getcpuclockid(pthread_self(), &b->cpu_clock);
    g_mutex_lock(&b->lock);
    b->ready = TRUE;
    g_cond_signal(&b->cond);
    g_mutex_unlock(&b->lock);
    g_main_context_push_thread_default(b->ctx);
    g_main_loop_run(b->loop);
    g_main_context_pop_thread_default(b->ctx);
    return NULL;
}

static void
bench_start(Bench *b)
{
    g_autoptr(GError) error = NULL;
    BerthRpcLimits limits = {.max_clients = 1024};

    b->dir = g_dir_make_tmp("berth-bench-rpc-XXXXXX", &error);
    g_assert_no_error(error);
    b->path = g_build_filename(b->dir, "berthd.sock", NULL);
    b->ctx = g_main_context_new();
    b->loop = g_main_loop_new(b->ctx, FALSE);
    b->server = berth_rpc_server_new(b->ctx, NULL, &limits);
    berth_rpc_server_add_method(b->server, "agent.info", FALSE, info_handler, NULL);
    if (!berth_rpc_server_listen_unix(b->server, b->path, FALSE, 0600, &error)) {
        g_error("%s", error->message);
    }
    g_mutex_init(&b->lock);
    g_cond_init(&b->cond);
    b->thread = g_thread_new("rpc-loop", loop_thread, b);
    g_mutex_lock(&b->lock);
    while (!b->ready) {
        g_cond_wait(&b->cond, &b->lock);
    }
    g_mutex_unlock(&b->lock);
}

static gboolean
quit_loop(gpointer data)
{
    g_main_loop_quit(data);
    return G_SOURCE_REMOVE;
}

static void
bench_stop(Bench *b)
{
    g_main_context_invoke(b->ctx, quit_loop, b->loop);
    g_thread_join(b->thread);
    berth_rpc_server_free(b->server);
    g_main_loop_unref(b->loop);
    g_main_context_unref(b->ctx);
    rmdir(b->dir);
    g_free(b->dir);
    g_free(b->path);
}

static int
cmp_i64(const void *a, const void *b)
{
    gint64 x = *(const gint64 *) a, y = *(const gint64 *) b;

    return x < y ? -1 : x > y;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}

static void
percentiles(gint64 *lat, gsize n, Result *r)
{
    qsort(lat, n, sizeof(*lat), cmp_i64);
    r->p50_us = (double) lat[n / 2] / 1000.0;
    r->p99_us = (double) lat[n * 99 / 100] / 1000.0;
}

/* Synchronous calls through the client library on one connection. */
static Result
run_one_connection(Bench *b, const char *method)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *uri = g_strconcat("unix:", b->path, NULL);
    g_autoptr(BerthClient) c = berth_client_connect(uri, &error);
    g_autofree gint64 *lat = g_new(gint64, ONE_CONN_CALLS);
    gint64 start, cpu_start;
    Result r = {0};

    g_assert_no_error(error);
    for (int i = 0; i < 2000; i++) {
        if (!berth_client_call(c, method, NULL, NULL, &error)) {
            g_error("%s", error->message);
        }
    }
    cpu_start = cpu_ns(b->cpu_clock);
    start = now_ns();
    for (int i = 0; i < ONE_CONN_CALLS; i++) {
        gint64 t0 = now_ns();
        char *result = NULL;

        if (!berth_client_call(c, method, NULL, &result, &error)) {
            g_error("%s", error->message);
        }
        g_free(result);
        lat[i] = now_ns() - t0;
    }
    r.rate = ONE_CONN_CALLS / ((double) (now_ns() - start) / 1e9);
    r.cpu_us = (double) (cpu_ns(b->cpu_clock) - cpu_start) / ONE_CONN_CALLS / 1000.0;
    percentiles(lat, ONE_CONN_CALLS, &r);
    return r;
}

static int raw_connect(const char *path);

typedef struct {
    int fd;
    clockid_t cpu_clock;
    GMutex lock;
    GCond cond;
    gboolean ready;
} Echo;

static gpointer
echo_thread(gpointer data)
{
    Echo *e = data;
    char buf[8192];
    gssize n;

    pthread_getcpuclockid(pthread_self(), &e->cpu_clock);
    g_mutex_lock(&e->lock);
    e->ready = TRUE;
    g_cond_signal(&e->cond);
    g_mutex_unlock(&e->lock);
    while ((n = recv(e->fd, buf, sizeof(buf), 0)) > 0) {
        if (send(e->fd, buf, (size_t) n, MSG_NOSIGNAL) != n) {
            break;
        }
    }
    return NULL;
}

/* The floor under every figure here: a thread that echoes each line back at once over a
 * socketpair, no JSON, no main loop. Measured in the same run, so that a loaded machine shows
 * in both. */
static Result
run_bare_echo(void)
{
    g_autofree gint64 *lat = g_new(gint64, ONE_CONN_CALLS);
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.ping\"}\n";
    Echo e = {0};
    GThread *thread;
    gint64 start, cpu_start;
    Result r = {0};
    char buf[8192];
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        g_error("socketpair: %s", g_strerror(errno));
    }
    e.fd = sv[1];
    g_mutex_init(&e.lock);
    g_cond_init(&e.cond);
    thread = g_thread_new("echo", echo_thread, &e);
    g_mutex_lock(&e.lock);
    while (!e.ready) {
        g_cond_wait(&e.cond, &e.lock);
    }
    g_mutex_unlock(&e.lock);
    cpu_start = cpu_ns(e.cpu_clock);
    start = now_ns();
    for (int i = 0; i < ONE_CONN_CALLS; i++) {
        gint64 t0 = now_ns();
        gsize got = 0;

        if (send(sv[0], req, sizeof(req) - 1, MSG_NOSIGNAL) != sizeof(req) - 1) {
            g_error("send: %s", g_strerror(errno));
        }
        while (got < sizeof(req) - 1) {
            gssize n = recv(sv[0], buf, sizeof(buf), 0);

            if (n <= 0) {
                g_error("recv failed");
            }
            got += (gsize) n;
        }
        lat[i] = now_ns() - t0;
    }
    r.rate = ONE_CONN_CALLS / ((double) (now_ns() - start) / 1e9);
    r.cpu_us = (double) (cpu_ns(e.cpu_clock) - cpu_start) / ONE_CONN_CALLS / 1000.0;
    percentiles(lat, ONE_CONN_CALLS, &r);
    shutdown(sv[0], SHUT_RDWR);
    g_thread_join(thread);
    close(sv[0]);
    close(sv[1]);
    g_mutex_clear(&e.lock);
    g_cond_clear(&e.cond);
    return r;
}

/* The same on a raw socket with blocking reads: the server alone, without the client
 * library's parsing. */
static Result
run_one_raw(Bench *b, const char *method)
{
    g_autofree gint64 *lat = g_new(gint64, ONE_CONN_CALLS);
    g_autofree char *req = g_strdup_printf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}\n",
                                           method);
    gsize req_len = strlen(req);
    int fd = raw_connect(b->path);
    gint64 start, cpu_start;
    Result r = {0};
    char buf[8192];

    cpu_start = cpu_ns(b->cpu_clock);
    start = now_ns();
    for (int i = 0; i < ONE_CONN_CALLS; i++) {
        gint64 t0 = now_ns();
        gssize n;

        if (send(fd, req, req_len, MSG_NOSIGNAL) != (gssize) req_len) {
            g_error("send: %s", g_strerror(errno));
        }
        /* One reply in flight: it ends with the last byte read. */
        do {
            n = recv(fd, buf, sizeof(buf), 0);
            if (n <= 0) {
                g_error("recv: %s", n == 0 ? "closed" : g_strerror(errno));
            }
        } while (buf[n - 1] != '\n');
        lat[i] = now_ns() - t0;
    }
    r.rate = ONE_CONN_CALLS / ((double) (now_ns() - start) / 1e9);
    r.cpu_us = (double) (cpu_ns(b->cpu_clock) - cpu_start) / ONE_CONN_CALLS / 1000.0;
    percentiles(lat, ONE_CONN_CALLS, &r);
    close(fd);
    return r;
}

static int
raw_connect(const char *path)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    g_strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
    if (fd < 0 || connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0) {
        g_error("connect: %s", g_strerror(errno));
    }
    return fd;
}

/* 50 connections, each with one request in flight, driven by one poll loop (so that the
 * client side costs little and the server is what is measured). */
static Result
run_many_connections(Bench *b, const char *method)
{
    struct pollfd pfd[MANY_CONNS];
    gint64 sent_at[MANY_CONNS];
    GString *in[MANY_CONNS];
    g_autofree gint64 *lat = g_new(gint64, MANY_CALLS + MANY_CONNS);
    g_autofree char *req = g_strdup_printf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}\n",
                                           method);
    gsize req_len = strlen(req);
    gsize done = 0, issued = 0;
    gint64 start, cpu_start;
    Result r = {0};

    for (int i = 0; i < MANY_CONNS; i++) {
        pfd[i].fd = raw_connect(b->path);
        pfd[i].events = POLLIN;
        in[i] = g_string_sized_new(4096);
    }
    cpu_start = cpu_ns(b->cpu_clock);
    start = now_ns();
    for (int i = 0; i < MANY_CONNS; i++) {
        sent_at[i] = now_ns();
        if (send(pfd[i].fd, req, req_len, MSG_NOSIGNAL) != (gssize) req_len) {
            g_error("send: %s", g_strerror(errno));
        }
        issued++;
    }
    while (done < MANY_CALLS) {
        if (poll(pfd, MANY_CONNS, -1) < 0 && errno != EINTR) {
            g_error("poll: %s", g_strerror(errno));
        }
        for (int i = 0; i < MANY_CONNS; i++) {
            char buf[8192];
            gssize n;
            char *nl;

            if (!(pfd[i].revents & POLLIN)) {
                continue;
            }
            n = recv(pfd[i].fd, buf, sizeof(buf), 0);
            if (n <= 0) {
                g_error("recv: %s", n == 0 ? "closed" : g_strerror(errno));
            }
            g_string_append_len(in[i], buf, n);
            /* One request in flight per connection: a newline ends its reply. */
            nl = memchr(in[i]->str, '\n', in[i]->len);
            if (!nl) {
                continue;
            }
            g_string_erase(in[i], 0, nl - in[i]->str + 1);
            lat[done++] = now_ns() - sent_at[i];
            if (issued < MANY_CALLS) {
                sent_at[i] = now_ns();
                if (send(pfd[i].fd, req, req_len, MSG_NOSIGNAL) != (gssize) req_len) {
                    g_error("send: %s", g_strerror(errno));
                }
                issued++;
            }
        }
    }
    r.rate = (double) done / ((double) (now_ns() - start) / 1e9);
    r.cpu_us = (double) (cpu_ns(b->cpu_clock) - cpu_start) / (double) done / 1000.0;
    percentiles(lat, done, &r);
    for (int i = 0; i < MANY_CONNS; i++) {
        close(pfd[i].fd);
        g_string_free(in[i], TRUE);
    }
    return r;
}

static double
median(double *v, int n)
{
    qsort(v, (size_t) n, sizeof(*v), cmp_double);
    return v[n / 2];
}

static void
report(const char *label, const char *method, Result *runs)
{
    double rate[RUNS], p50[RUNS], p99[RUNS], cpu[RUNS];

    for (int i = 0; i < RUNS; i++) {
        rate[i] = runs[i].rate;
        p50[i] = runs[i].p50_us;
        p99[i] = runs[i].p99_us;
        cpu[i] = runs[i].cpu_us;
    }
    printf("| %-22s | %-10s | %9.0f | %7.1f | %7.1f | %6.2f |\n", label, method,
           median(rate, RUNS), median(p50, RUNS), median(p99, RUNS), median(cpu, RUNS));
    for (int i = 0; i < RUNS; i++) {
        fprintf(stderr, "#   run %d: %.0f/s p50 %.1f us p99 %.1f us server cpu %.2f us/call\n",
                i + 1, runs[i].rate, runs[i].p50_us, runs[i].p99_us, runs[i].cpu_us);
    }
    fflush(stdout);
}

int
main(int argc, char **argv)
{
    static const char *const methods[] = {"agent.ping", "agent.info"};
    static Result runs[7][RUNS];
    Bench b = {0};

    bench_start(&b);
    printf("JSON-RPC over a unix socket, in-process server; %d runs per case, medians.\n", RUNS);
    printf("| %-22s | %-10s | %9s | %7s | %7s | %6s |\n", "case", "method", "calls/s",
           "p50 us", "p99 us", "srv us");
    printf("|%s|%s|%s|%s|%s|%s|\n", "------------------------", "------------",
           "----------:", "--------:", "--------:", "-------:");
    /* Runs are interleaved across the cases, so that a change in the machine's load during the
     * benchmark touches every case alike. */
    for (int i = 0; i < RUNS; i++) {
        runs[0][i] = run_bare_echo();
        for (guint m = 0; m < G_N_ELEMENTS(methods); m++) {
            runs[1 + m][i] = run_one_connection(&b, methods[m]);
            runs[3 + m][i] = run_one_raw(&b, methods[m]);
            runs[5 + m][i] = run_many_connections(&b, methods[m]);
        }
    }
    report("bare echo (floor)", "-", runs[0]);
    for (guint m = 0; m < G_N_ELEMENTS(methods); m++) {
        report("1 connection (library)", methods[m], runs[1 + m]);
    }
    for (guint m = 0; m < G_N_ELEMENTS(methods); m++) {
        report("1 connection (raw)", methods[m], runs[3 + m]);
    }
    for (guint m = 0; m < G_N_ELEMENTS(methods); m++) {
        report("50 connections", methods[m], runs[5 + m]);
    }
    bench_stop(&b);
    return 0;
}
