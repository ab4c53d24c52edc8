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

#include "ctl/client.h"
#include "rpc/server.h"

#include "bench-util.h"

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
    berth_rpc_server_add_method(b->server, "agent.info", FALSE, bench_info_handler, NULL);
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

/* Synchronous calls through the client library on one connection. */
static BenchResult
run_one_connection(Bench *b, const char *method)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *uri = g_strconcat("unix:", b->path, NULL);
    g_autoptr(BerthClient) c = berth_client_connect(uri, &error);
    g_autofree gint64 *lat = g_new(gint64, ONE_CONN_CALLS);
    gint64 start, cpu_start;
    BenchResult r = {0};

    g_assert_no_error(error);
    for (int i = 0; i < 2000; i++) {
        if (!berth_client_call(c, method, NULL, NULL, &error)) {
            g_error("%s", error->message);
        }
    }
    cpu_start = bench_cpu_ns(b->cpu_clock);
    start = bench_now_ns();
    for (int i = 0; i < ONE_CONN_CALLS; i++) {
        gint64 t0 = bench_now_ns();
        char *result = NULL;

        if (!berth_client_call(c, method, NULL, &result, &error)) {
            g_error("%s", error->message);
        }
        g_free(result);
        lat[i] = bench_now_ns() - t0;
    }
    r.rate = ONE_CONN_CALLS / ((double) (bench_now_ns() - start) / 1e9);
    r.cpu_us = (double) (bench_cpu_ns(b->cpu_clock) - cpu_start) / ONE_CONN_CALLS / 1000.0;
    bench_percentiles(lat, ONE_CONN_CALLS, &r);
    return r;
}

static int raw_connect(const char *path);

/* The floor under every figure here: the echo thread over a socketpair. */
static BenchResult
run_bare_echo(void)
{
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.ping\"}\n";
    BenchResult r;
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        g_error("socketpair: %s", g_strerror(errno));
    }
    r = bench_echo_floor(sv[0], sv[1], req, ONE_CONN_CALLS);
    close(sv[0]);
    close(sv[1]);
    return r;
}

/* The same on a raw socket with blocking reads: the server alone, without the client
 * library's parsing. */
static BenchResult
run_one_raw(Bench *b, const char *method)
{
    g_autofree gint64 *lat = g_new(gint64, ONE_CONN_CALLS);
    g_autofree char *req = g_strdup_printf("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"%s\"}\n",
                                           method);
    gsize req_len = strlen(req);
    int fd = raw_connect(b->path);
    gint64 start, cpu_start;
    BenchResult r = {0};
    char buf[8192];

    cpu_start = bench_cpu_ns(b->cpu_clock);
    start = bench_now_ns();
    for (int i = 0; i < ONE_CONN_CALLS; i++) {
        gint64 t0 = bench_now_ns();
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
        lat[i] = bench_now_ns() - t0;
    }
    r.rate = ONE_CONN_CALLS / ((double) (bench_now_ns() - start) / 1e9);
    r.cpu_us = (double) (bench_cpu_ns(b->cpu_clock) - cpu_start) / ONE_CONN_CALLS / 1000.0;
    bench_percentiles(lat, ONE_CONN_CALLS, &r);
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
static BenchResult
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
    BenchResult r = {0};

    for (int i = 0; i < MANY_CONNS; i++) {
        pfd[i].fd = raw_connect(b->path);
        pfd[i].events = POLLIN;
        in[i] = g_string_sized_new(4096);
    }
    cpu_start = bench_cpu_ns(b->cpu_clock);
    start = bench_now_ns();
    for (int i = 0; i < MANY_CONNS; i++) {
        sent_at[i] = bench_now_ns();
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
            lat[done++] = bench_now_ns() - sent_at[i];
            if (issued < MANY_CALLS) {
                sent_at[i] = bench_now_ns();
                if (send(pfd[i].fd, req, req_len, MSG_NOSIGNAL) != (gssize) req_len) {
                    g_error("send: %s", g_strerror(errno));
                }
                issued++;
            }
        }
    }
    r.rate = (double) done / ((double) (bench_now_ns() - start) / 1e9);
    r.cpu_us = (double) (bench_cpu_ns(b->cpu_clock) - cpu_start) / (double) done / 1000.0;
    bench_percentiles(lat, done, &r);
    for (int i = 0; i < MANY_CONNS; i++) {
        close(pfd[i].fd);
        g_string_free(in[i], TRUE);
    }
    return r;
}

static void
report(const char *label, const char *method, BenchResult *runs)
{
    double rate[RUNS], p50[RUNS], p99[RUNS], cpu[RUNS];

    for (int i = 0; i < RUNS; i++) {
        rate[i] = runs[i].rate;
        p50[i] = runs[i].p50_us;
        p99[i] = runs[i].p99_us;
        cpu[i] = runs[i].cpu_us;
    }
    printf("| %-22s | %-10s | %9.0f | %7.1f | %7.1f | %6.2f |\n", label, method,
           bench_median(rate, RUNS), bench_median(p50, RUNS), bench_median(p99, RUNS), bench_median(cpu, RUNS));
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
    static BenchResult runs[7][RUNS];
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
