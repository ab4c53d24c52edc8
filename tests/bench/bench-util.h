/* What the JSON-RPC benchmarks share: clocks, percentiles and medians, the agent.info-like
 * handler, and the echo floor (a thread that sends each request straight back). */
#pragma once

#include <glib.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "rpc/server.h"

typedef struct {
    double rate;   /* round trips (or handshakes) per second */
    double p50_us;
    double p99_us;
    double cpu_us; /* server thread CPU per call or handshake */
} BenchResult;

gint64 bench_now_ns(void);
/* @clock: a thread's CPU clock (pthread_getcpuclockid). */
gint64 bench_cpu_ns(clockid_t clock);
/* Sorts @lat (ns) and sets r->p50_us and r->p99_us. */
void bench_percentiles(gint64 *lat, gsize n, BenchResult *r);
/* Sorts @v. */
double bench_median(double *v, int n);
/* Answers like the daemon's agent.info: an object of about 400 bytes built with yajl. */
void bench_info_handler(BerthRpcCall *call, yajl_val params, gpointer data);

/* The floor: @n round trips of @req from @client_fd to a thread that echoes on @server_fd,
 * no JSON, no main loop. Measured in the same run as the cases, so that a loaded machine
 * shows in both. cpu_us is the echo thread's CPU per round trip. */
BenchResult bench_echo_floor(int client_fd, int server_fd, const char *req, int n);
