/* The pieces the JSON-RPC benchmarks share (bench-util.h). */
#include "bench-util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yajl/yajl_gen.h>

#include <berth/json.h>

gint64
bench_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (gint64) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

gint64
bench_cpu_ns(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (gint64) ts.tv_sec * 1000000000 + ts.tv_nsec;
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

void
bench_percentiles(gint64 *lat, gsize n, BenchResult *r)
{
    qsort(lat, n, sizeof(*lat), cmp_i64);
    r->p50_us = (double) lat[n / 2] / 1000.0;
    r->p99_us = (double) lat[n * 99 / 100] / 1000.0;
}

double
bench_median(double *v, int n)
{
    qsort(v, (size_t) n, sizeof(*v), cmp_double);
    return v[n / 2];
}

void
bench_info_handler(BerthRpcCall *call, yajl_val params, gpointer data)
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

typedef struct {
    int fd;
    clockid_t cpu_clock;
    gint ready;
} Echo;

static gpointer
echo_thread(gpointer data)
{
    Echo *e = data;
    char buf[8192];
    gssize n;

    pthread_getcpuclockid(pthread_self(), &e->cpu_clock);
    g_atomic_int_set(&e->ready, 1);
    while ((n = recv(e->fd, buf, sizeof(buf), 0)) > 0) {
        if (send(e->fd, buf, (size_t) n, MSG_NOSIGNAL) != n) {
            break;
        }
    }
    return NULL;
}

BenchResult
bench_echo_floor(int client_fd, int server_fd, const char *req, int n)
{
    g_autofree gint64 *lat = g_new(gint64, n);
    gsize len = strlen(req);
    Echo e = {.fd = server_fd};
    GThread *thread = g_thread_new("echo", echo_thread, &e);
    gint64 start, cpu_start;
    BenchResult r = {0};
    char buf[8192];

    while (!g_atomic_int_get(&e.ready)) {
        g_usleep(1000);
    }
    cpu_start = bench_cpu_ns(e.cpu_clock);
    start = bench_now_ns();
    for (int i = 0; i < n; i++) {
        gint64 t0 = bench_now_ns();
        gsize got = 0;

        if (send(client_fd, req, len, MSG_NOSIGNAL) != (gssize) len) {
            g_error("send: %s", g_strerror(errno));
        }
        while (got < len) {
            gssize k = recv(client_fd, buf, sizeof(buf), 0);

            if (k <= 0) {
                g_error("recv failed");
            }
            got += (gsize) k;
        }
        lat[i] = bench_now_ns() - t0;
    }
    r.rate = n / ((double) (bench_now_ns() - start) / 1e9);
    r.cpu_us = (double) (bench_cpu_ns(e.cpu_clock) - cpu_start) / n / 1000.0;
    bench_percentiles(lat, (gsize) n, &r);
    shutdown(client_fd, SHUT_RDWR);
    g_thread_join(thread);
    return r;
}
