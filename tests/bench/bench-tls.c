/* Benchmark of the JSON-RPC TLS listener: round trips/s on one connection, full handshakes/s
 * (new connection + one call), and latency with 100 concurrent clients; optionally berthctl
 * against virsh over TLS. */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "ctl/client.h"
#include "rpc/server.h"
#include "rpc/tls.h"

#include "bench-util.h"

#define RUNS 5
#define ONE_CONN_CALLS 20000
#define HANDSHAKES 400
#define MANY_CONNS 100
#define MANY_CALLS 50000
#define CLI_RUNS 20

typedef struct {
    GMainContext *ctx;
    GMainLoop *loop;
    GThread *thread;
    BerthRpcServer *server;
    BerthTlsListener *tls;
    guint16 port;
    char *pki;
    clockid_t cpu_clock; /* the server thread's CPU clock */
    gint ready;
} Bench;

static void
list_handler(BerthRpcCall *call, yajl_val params, gpointer data)
{
    berth_rpc_call_reply(call, g_strdup("[]"));
}

static gpointer
loop_thread(gpointer data)
{
    Bench *b = data;

    pthread_getcpuclockid(pthread_self(), &b->cpu_clock);
    g_atomic_int_set(&b->ready, 1);
    g_main_context_push_thread_default(b->ctx);
    g_main_loop_run(b->loop);
    g_main_context_pop_thread_default(b->ctx);
    return NULL;
}

static char *
pki_file(Bench *b, const char *name, const char *kind)
{
    return g_strdup_printf("%s/%s-%s.pem", b->pki, name, kind);
}

static void
bench_start(Bench *b)
{
    g_autoptr(GError) error = NULL;
    BerthRpcLimits limits = {.max_clients = 1024};
    char *admin[] = {"CN=admin*", NULL};
    g_autofree char *cmd = NULL;
    BerthTlsConfig cfg = {
        .admin = admin,
        .handshake_timeout_s = 10,
        .max_unauthenticated = 1024,
        .idle_timeout_s = 0,
        .keepalive_s = 30,
    };

    b->pki = g_dir_make_tmp("berth-bench-tls-XXXXXX", &error);
    g_assert_no_error(error);
    cmd = g_strdup_printf("sh %s/tests/tls/gen-pki.sh %s >/dev/null", BERTH_SOURCE_ROOT, b->pki);
    cfg.priority = (char *) g_getenv("BERTH_BENCH_TLS_PRIORITY");
    if (system(cmd) != 0) {
        g_error("cannot make the PKI (certtool, gnutls-bin)");
    }
    cfg.cert = pki_file(b, "server", "cert");
    cfg.key = pki_file(b, "server", "key");
    cfg.ca = pki_file(b, "ca", "cert");
    b->ctx = g_main_context_new();
    b->loop = g_main_loop_new(b->ctx, FALSE);
    b->server = berth_rpc_server_new(b->ctx, NULL, &limits);
    berth_rpc_server_add_method(b->server, "agent.info", FALSE, bench_info_handler, NULL);
    berth_rpc_server_add_method(b->server, "domain.list", FALSE, list_handler, NULL);
    b->tls = berth_tls_listener_new(b->server, "127.0.0.1:0", &cfg, &error);
    g_assert_no_error(error);
    b->port = berth_tls_listener_port(b->tls);
    g_free(cfg.cert);
    g_free(cfg.key);
    g_free(cfg.ca);
    b->thread = g_thread_new("rpc-loop", loop_thread, b);
    while (!g_atomic_int_get(&b->ready)) {
        g_usleep(1000);
    }
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
    g_autofree char *cmd = g_strdup_printf("rm -rf %s", b->pki);

    g_main_context_invoke(b->ctx, quit_loop, b->loop);
    g_thread_join(b->thread);
    berth_tls_listener_free(b->tls);
    berth_rpc_server_free(b->server);
    g_main_loop_unref(b->loop);
    g_main_context_unref(b->ctx);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot remove %s\n", b->pki);
    }
    g_free(b->pki);
}

static BerthClient *
client(Bench *b)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *uri = g_strdup_printf("tls://localhost:%u", b->port);
    g_autofree char *cert = pki_file(b, "admin", "cert");
    g_autofree char *key = pki_file(b, "admin", "key");
    g_autofree char *ca = pki_file(b, "ca", "cert");
    BerthClientTls tls = {cert, key, ca};
    BerthClient *c = berth_client_connect_tls(uri, &tls, &error);

    if (!c) {
        g_error("%s", error->message);
    }
    return c;
}

static BenchResult
run_one_connection(Bench *b)
{
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthClient) c = client(b);
    g_autofree gint64 *lat = g_new(gint64, ONE_CONN_CALLS);
    gint64 start;
    BenchResult r = {0};

    for (int i = 0; i < 1000; i++) {
        if (!berth_client_call(c, "agent.info", NULL, NULL, &error)) {
            g_error("%s", error->message);
        }
    }
    gint64 cpu_start = bench_cpu_ns(b->cpu_clock);

    start = bench_now_ns();
    for (int i = 0; i < ONE_CONN_CALLS; i++) {
        gint64 t0 = bench_now_ns();
        char *result = NULL;

        if (!berth_client_call(c, "agent.info", NULL, &result, &error)) {
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

/* The floor under the TLS figures: the echo thread over TCP on loopback (TCP_NODELAY,
 * blocking calls), no TLS. */
static BenchResult
run_tcp_echo(void)
{
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.info\"}\n";
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1;
    int sfd;
    BenchResult r;

    if (bind(lfd, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(lfd, 1) < 0 ||
        getsockname(lfd, (struct sockaddr *) &a, &alen) < 0 ||
        connect(cfd, (struct sockaddr *) &a, sizeof(a)) < 0) {
        g_error("loopback TCP: %s", g_strerror(errno));
    }
    sfd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (sfd < 0) {
        g_error("accept: %s", g_strerror(errno));
    }
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    r = bench_echo_floor(cfd, sfd, req, ONE_CONN_CALLS);
    close(cfd);
    close(sfd);
    close(lfd);
    return r;
}

/* A new connection (TCP, full TLS handshake with both certificates) and one call, in turn. */
static BenchResult
run_handshakes(Bench *b)
{
    g_autoptr(GError) error = NULL;
    g_autofree gint64 *lat = g_new(gint64, HANDSHAKES);
    gint64 start = bench_now_ns();
    gint64 cpu_start = bench_cpu_ns(b->cpu_clock);
    BenchResult r = {0};

    for (int i = 0; i < HANDSHAKES; i++) {
        gint64 t0 = bench_now_ns();
        g_autoptr(BerthClient) c = client(b);

        if (!berth_client_call(c, "agent.ping", NULL, NULL, &error)) {
            g_error("%s", error->message);
        }
        lat[i] = bench_now_ns() - t0;
    }
    r.rate = HANDSHAKES / ((double) (bench_now_ns() - start) / 1e9);
    r.cpu_us = (double) (bench_cpu_ns(b->cpu_clock) - cpu_start) / HANDSHAKES / 1000.0;
    bench_percentiles(lat, HANDSHAKES, &r);
    return r;
}

typedef struct {
    gnutls_session_t s;
    gnutls_certificate_credentials_t cred;
    int fd;
    GString *in;
    gint64 sent_at;
} RawConn;

static void
raw_open(Bench *b, RawConn *rc)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(b->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    g_autofree char *cert = pki_file(b, "admin", "cert");
    g_autofree char *key = pki_file(b, "admin", "key");
    g_autofree char *ca = pki_file(b, "ca", "cert");
    int on = 1;
    int ret;

    rc->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(rc->fd, (struct sockaddr *) &a, sizeof(a)) < 0) {
        g_error("connect: %s", g_strerror(errno));
    }
    setsockopt(rc->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    gnutls_certificate_allocate_credentials(&rc->cred);
    gnutls_certificate_set_x509_trust_file(rc->cred, ca, GNUTLS_X509_FMT_PEM);
    gnutls_certificate_set_x509_key_file(rc->cred, cert, key, GNUTLS_X509_FMT_PEM);
    gnutls_init(&rc->s, GNUTLS_CLIENT);
    gnutls_set_default_priority(rc->s);
    gnutls_credentials_set(rc->s, GNUTLS_CRD_CERTIFICATE, rc->cred);
    gnutls_transport_set_int(rc->s, rc->fd);
    do {
        ret = gnutls_handshake(rc->s);
    } while (ret < 0 && !gnutls_error_is_fatal(ret));
    if (ret < 0) {
        g_error("handshake: %s", gnutls_strerror(ret));
    }
    fcntl(rc->fd, F_SETFL, fcntl(rc->fd, F_GETFL) | O_NONBLOCK);
    rc->in = g_string_new(NULL);
}

static void
raw_send(RawConn *rc, const char *req, gsize len)
{
    gssize n;

    rc->sent_at = bench_now_ns();
    do {
        n = gnutls_record_send(rc->s, req, len);
    } while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
    if (n != (gssize) len) {
        g_error("send: %s", gnutls_strerror((int) n));
    }
}

/* @nconns TLS connections (gnutls directly, no client library), each with one request in
 * flight, driven by one poll loop. */
static BenchResult
run_many_connections(Bench *b, int nconns, gsize calls)
{
    static const char req[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"agent.info\"}\n";
    RawConn conns[MANY_CONNS];
    struct pollfd pfd[MANY_CONNS];
    g_autofree gint64 *lat = g_new(gint64, calls + MANY_CONNS);
    gsize done = 0, issued = 0;
    gint64 start, cpu_start;
    BenchResult r = {0};

    for (int i = 0; i < nconns; i++) {
        raw_open(b, &conns[i]);
        pfd[i].fd = conns[i].fd;
        pfd[i].events = POLLIN;
    }
    cpu_start = bench_cpu_ns(b->cpu_clock);
    start = bench_now_ns();
    for (int i = 0; i < nconns; i++) {
        raw_send(&conns[i], req, strlen(req));
        issued++;
    }
    while (done < calls) {
        if (poll(pfd, (nfds_t) nconns, -1) < 0 && errno != EINTR) {
            g_error("poll: %s", g_strerror(errno));
        }
        for (int i = 0; i < nconns; i++) {
            RawConn *rc = &conns[i];
            char buf[8192];
            gssize n;
            char *nl;

            if (!(pfd[i].revents & POLLIN)) {
                continue;
            }
            do {
                n = gnutls_record_recv(rc->s, buf, sizeof(buf));
                if (n > 0) {
                    g_string_append_len(rc->in, buf, n);
                }
            } while (n > 0 && gnutls_record_check_pending(rc->s) > 0);
            if (n < 0 && n != GNUTLS_E_AGAIN && n != GNUTLS_E_INTERRUPTED) {
                g_error("recv: %s", gnutls_strerror((int) n));
            }
            if (n == 0) {
                g_error("recv: closed");
            }
            nl = memchr(rc->in->str, '\n', rc->in->len);
            if (!nl) {
                continue;
            }
            g_string_erase(rc->in, 0, nl - rc->in->str + 1);
            lat[done++] = bench_now_ns() - rc->sent_at;
            if (issued < calls) {
                raw_send(rc, req, strlen(req));
                issued++;
            }
        }
    }
    r.rate = (double) done / ((double) (bench_now_ns() - start) / 1e9);
    r.cpu_us = (double) (bench_cpu_ns(b->cpu_clock) - cpu_start) / (double) done / 1000.0;
    bench_percentiles(lat, done, &r);
    for (int i = 0; i < nconns; i++) {
        gnutls_deinit(conns[i].s);
        gnutls_certificate_free_credentials(conns[i].cred);
        close(conns[i].fd);
        g_string_free(conns[i].in, TRUE);
    }
    return r;
}

static void
report(const char *label, BenchResult *runs, const char *unit)
{
    double rate[RUNS], p50[RUNS], p99[RUNS], cpu[RUNS];

    for (int i = 0; i < RUNS; i++) {
        rate[i] = runs[i].rate;
        p50[i] = runs[i].p50_us;
        p99[i] = runs[i].p99_us;
        cpu[i] = runs[i].cpu_us;
    }
    printf("| %-34s | %9.0f %-13s | %8.1f | %8.1f | %7.1f |\n", label, bench_median(rate, RUNS), unit,
           bench_median(p50, RUNS), bench_median(p99, RUNS), bench_median(cpu, RUNS));
    for (int i = 0; i < RUNS; i++) {
        fprintf(stderr, "#   run %d: %.0f/s p50 %.1f us p99 %.1f us\n", i + 1, runs[i].rate,
                runs[i].p50_us, runs[i].p99_us);
    }
    fflush(stdout);
}

/* Wall time of one run of @cmd, in ms. */
static double
time_cmd(const char *cmd)
{
    gint64 t0 = bench_now_ns();

    if (system(cmd) != 0) {
        fprintf(stderr, "# failed: %s\n", cmd);
        return -1;
    }
    return (double) (bench_now_ns() - t0) / 1e6;
}

/* berthctl list over TLS (a whole process: start, handshake, one call), and virsh against a
 * libvirtd over TLS when $BERTH_BENCH_LIBVIRT_URI names one (docs/tls.md shows the setup). */
static void
run_cli(Bench *b)
{
    g_autofree char *cert = pki_file(b, "admin", "cert");
    g_autofree char *key = pki_file(b, "admin", "key");
    g_autofree char *ca = pki_file(b, "ca", "cert");
    g_autofree char *berthctl = g_strdup_printf(
        "%s/agent/ctl/berthctl --connect tls://localhost:%u --tls-cert %s --tls-key %s "
        "--tls-ca %s list >/dev/null", BERTH_BUILD_ROOT, b->port, cert, key, ca);
    const char *virsh_uri = g_getenv("BERTH_BENCH_LIBVIRT_URI");
    g_autofree char *virsh = virsh_uri ? g_strdup_printf("virsh -c '%s' list >/dev/null",
                                                         virsh_uri) : NULL;
    double bt[CLI_RUNS], vt[CLI_RUNS];

    for (int i = 0; i < CLI_RUNS; i++) {
        bt[i] = time_cmd(berthctl);
        vt[i] = virsh ? time_cmd(virsh) : 0;
    }
    printf("\nberthctl --connect tls://... list: %.1f ms (median of %d runs)\n",
           bench_median(bt, CLI_RUNS), CLI_RUNS);
    if (virsh) {
        double v = bench_median(vt, CLI_RUNS);

        g_autoptr(GString) many = g_string_new(NULL);
        double mt[CLI_RUNS];

        printf("virsh -c %s list: %.1f ms; virsh/berthctl = %.1f\n", virsh_uri, v,
               v / bench_median(bt, CLI_RUNS));
        /* Calls on an open connection: one virsh process with 101 commands, less one with 1. */
        g_string_printf(many, "virsh -c '%s' '", virsh_uri);
        for (int i = 0; i < 101; i++) {
            g_string_append(many, i ? "; list" : "list");
        }
        g_string_append(many, "' >/dev/null");
        for (int i = 0; i < CLI_RUNS; i++) {
            mt[i] = time_cmd(many->str);
        }
        printf("virsh: 100 more list commands on the connection: %.1f ms (%.0f/s)\n",
               bench_median(mt, CLI_RUNS) - v, 100.0 / ((bench_median(mt, CLI_RUNS) - v) / 1000.0));
    } else {
        printf("virsh: not measured (set BERTH_BENCH_LIBVIRT_URI=qemu+tls://127.0.0.1/system "
               "with libvirtd listening for TLS)\n");
    }
}

/* TRUE when @name was asked for on the command line (no arguments: every case). */
static gboolean
wanted(int argc, char **argv, const char *name)
{
    if (argc < 2) {
        return TRUE;
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], name) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

int
main(int argc, char **argv)
{
    static BenchResult floor[RUNS], one[RUNS], raw[RUNS], hs[RUNS], many[RUNS];
    static const char *const cases[] = {"one", "raw", "handshake", "many", "cli", "floor"};
    gboolean run_case[G_N_ELEMENTS(cases)];
    Bench b = {0};

    for (int i = 1; i < argc; i++) {
        if (!g_strv_contains(cases, argv[i])) {
            fprintf(stderr, "usage: %s [floor] [one] [raw] [handshake] [many] [cli] (default: all)\n",
                    argv[0]);
            return 2;
        }
    }
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        run_case[i] = wanted(argc, argv, cases[i]);
    }
    gnutls_global_init();
    bench_start(&b);
    printf("JSON-RPC over mutual TLS (loopback, in-process server, ECDSA P-256 certificates, "
           "TLS 1.3); %d runs per case, medians.\n", RUNS);
    printf("| %-34s | %-23s | %8s | %8s | %7s |\n", "case", "rate", "p50 us", "p99 us",
           "srv us");
    printf("|------------------------------------|-------------------------:|---------:|"
           "---------:|--------:|\n");
    for (int i = 0; i < RUNS; i++) {
        if (run_case[5]) {
            floor[i] = run_tcp_echo();
        }
        if (run_case[0]) {
            one[i] = run_one_connection(&b);
        }
        if (run_case[1]) {
            raw[i] = run_many_connections(&b, 1, ONE_CONN_CALLS);
        }
        if (run_case[2]) {
            hs[i] = run_handshakes(&b);
        }
        if (run_case[3]) {
            many[i] = run_many_connections(&b, MANY_CONNS, MANY_CALLS);
        }
    }
    if (run_case[5]) {
        report("TCP echo, no TLS (floor)", floor, "round trips/s");
    }
    if (run_case[0]) {
        report("agent.info, 1 connection", one, "calls/s");
    }
    if (run_case[1]) {
        report("agent.info, 1 connection (raw)", raw, "calls/s");
    }
    if (run_case[2]) {
        report("handshake + agent.ping, in turn", hs, "handshakes/s");
    }
    if (run_case[3]) {
        report("agent.info, 100 connections", many, "calls/s");
    }
    printf("Goals: >= 30000 calls/s on 1 connection, >= 500 handshakes/s, p99 < 5000 us at "
           "100 clients.\n");
    if (run_case[4]) {
        run_cli(&b);
    }
    bench_stop(&b);
    return 0;
}
