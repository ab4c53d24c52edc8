/* virtiofs without a guest: the test front-end drives berth-virtiofsd and Debian's virtiofsd alike. */
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "frontend.h"

#define GUEST_MEM (64 * 1024 * 1024)
#define FILE_SIZE (64 * 1024 * 1024)
#define MAX_INFLIGHT 8
#define SLOT_SIZE (2 * 1024 * 1024 + 256 * 1024)
#define RQ 1     /* the first request queue (0 is hiprio) */
#define MAX_RQ 4 /* request queues for the multiqueue lines */
#define PAGE 4096

typedef enum {
    ST_READ_4K,
    ST_READ_1M,
    ST_WRITE_4K,
    ST_WRITE_1M,
    ST_GETATTR,
    ST_LOOKUP,
    ST_CREATE_UNLINK,
    ST_LAST
} Stream;

static const char *const stream_names[] = {
    "read 4 KiB", "read 1 MiB", "write 4 KiB", "write 1 MiB", "GETATTR", "LOOKUP",
    "create+unlink",
};

typedef struct {
    guint64 req;   /* request header and arguments */
    guint64 data;  /* WRITE payload, READ destination */
    guint64 reply; /* reply header and arguments */
    guint64 table; /* indirect table */
    guint q;       /* the request queue it uses */
    int head;
    guint phase;
    guint64 n;
    guint64 node;
    guint64 fh;
} Slot;

typedef struct {
    const char *name;
    const char *path;
    guint pool;
    GPid pid;
    char *dir;
    char *sock;
    VfsFe *fe;
    guint64 unique;
    guint64 data_node;
    guint64 data_fh;
    guint64 w_node;
    guint64 w_fh;
    guint32 max_write;
    char prefix;
    gboolean berth;     /* a berth-virtiofsd (its options), not Debian's virtiofsd */
    char **extra_args;  /* berth-virtiofsd only */
    Slot slots[MAX_INFLIGHT];
    Slot *by_head[1 + MAX_RQ][1024];
    guint nrq; /* request queues set up */
    guint errors;
} Backend;

static gint opt_runs = 3;
static gdouble opt_seconds = 1.0;
static gchar *opt_berth;
static gchar *opt_virtiofsd = "/usr/lib/qemu/virtiofsd";
static gchar *opt_streams;
static gboolean opt_berth_only;
static gchar *opt_share_base;
static gboolean opt_counts;
static char **opt_berth_args;
static char **opt_b_args;
static gchar *opt_b_berth;
static gint opt_pool = -1;
static gint opt_inflight;

/* ---- requests ---- */

static gsize build(Backend *b, Slot *s, guint32 op, guint64 node, const void *arg, guint32 alen,
                   const char *name)
{
    guint8 *p = vfs_fe_host(b->fe, s->req);
    gsize nlen = name ? strlen(name) + 1 : 0;
    struct fuse_in_header h = { .len = sizeof(h) + alen + nlen, .opcode = op,
                                .unique = b->unique++, .nodeid = node };
    memcpy(p, &h, sizeof(h));
    memcpy(p + sizeof(h), arg, alen);
    if (name) {
        memcpy(p + sizeof(h) + alen, name, nlen);
    }
    return h.len;
}

/* Queues one request the way Linux lays it out: header+args, data pages; reply header, args,
 * data pages; through an indirect table. */
static void submit(Backend *b, Slot *s, gsize req_len, guint32 wdata, guint32 reply_args,
                   guint32 rdata)
{
    VfsFeBuf bufs[2 + 256 + 2 + 256];
    guint n = 0;
    bufs[n++] = (VfsFeBuf){ s->req, req_len, FALSE };
    for (guint32 off = 0; off < wdata; off += PAGE) {
        bufs[n++] = (VfsFeBuf){ s->data + off, MIN(PAGE, wdata - off), FALSE };
    }
    bufs[n++] = (VfsFeBuf){ s->reply, sizeof(struct fuse_out_header), TRUE };
    if (reply_args) {
        bufs[n++] = (VfsFeBuf){ s->reply + 64, reply_args, TRUE };
    }
    for (guint32 off = 0; off < rdata; off += PAGE) {
        bufs[n++] = (VfsFeBuf){ s->data + off, MIN(PAGE, rdata - off), TRUE };
    }
    s->head = vfs_fe_submit_at(b->fe, s->q, bufs, n, n > 1 ? s->table : 0);
    g_assert(s->head >= 0 && s->head < 1024);
    b->by_head[s->q][s->head] = s;
}

static void slot_name(Backend *b, Slot *s, char *buf, gsize len)
{
    g_snprintf(buf, len, "%c-%u-%" G_GUINT64_FORMAT, b->prefix, (guint)(s - b->slots), s->n);
}

static void slot_submit(Backend *b, Slot *s, Stream st)
{
    char name[64];
    switch (st) {
    case ST_READ_4K:
    case ST_READ_1M: {
        guint32 size = st == ST_READ_4K ? 4096 : 1 << 20;
        struct fuse_read_in in = { .fh = b->data_fh, .offset = (s->n * size + (s - b->slots) *
                                   (FILE_SIZE / MAX_INFLIGHT)) % FILE_SIZE, .size = size };
        submit(b, s, build(b, s, FUSE_READ, b->data_node, &in, sizeof(in), NULL), 0, 0, size);
        break;
    }
    case ST_WRITE_4K:
    case ST_WRITE_1M: {
        guint32 size = MIN(st == ST_WRITE_4K ? 4096 : 1 << 20, b->max_write);
        struct fuse_write_in in = { .fh = b->w_fh, .offset = (s->n * size + (s - b->slots) *
                                    (FILE_SIZE / MAX_INFLIGHT)) % FILE_SIZE, .size = size };
        gsize len = build(b, s, FUSE_WRITE, b->w_node, &in, sizeof(in), NULL);
        /* The header's length counts the data that follows in its own descriptors. */
        struct fuse_in_header *h = vfs_fe_host(b->fe, s->req);
        h->len += size;
        submit(b, s, len, size, sizeof(struct fuse_write_out), 0);
        break;
    }
    case ST_GETATTR: {
        struct fuse_getattr_in in = { 0 };
        submit(b, s, build(b, s, FUSE_GETATTR, b->data_node, &in, sizeof(in), NULL), 0,
               sizeof(struct fuse_attr_out), 0);
        break;
    }
    case ST_LOOKUP:
        submit(b, s, build(b, s, FUSE_LOOKUP, 1, NULL, 0, "data"), 0,
               sizeof(struct fuse_entry_out), 0);
        break;
    default:
        slot_name(b, s, name, sizeof(name));
        if (s->phase == 0) {
            struct fuse_create_in in = { .flags = O_CREAT | O_EXCL | O_RDWR, .mode = 0100644 };
            submit(b, s, build(b, s, FUSE_CREATE, 1, &in, sizeof(in), name), 0,
                   sizeof(struct fuse_entry_out) + sizeof(struct fuse_open_out), 0);
        } else if (s->phase == 1) {
            struct fuse_release_in in = { .fh = s->fh };
            submit(b, s, build(b, s, FUSE_RELEASE, s->node, &in, sizeof(in), NULL), 0, 0, 0);
        } else if (s->phase == 2) {
            submit(b, s, build(b, s, FUSE_UNLINK, 1, NULL, 0, name), 0, 0, 0);
        } else {
            struct fuse_forget_in in = { .nlookup = 1 };
            VfsFeBuf buf = { s->req, build(b, s, FUSE_FORGET, s->node, &in, sizeof(in), NULL),
                             FALSE };
            s->head = vfs_fe_submit_at(b->fe, s->q, &buf, 1, 0);
            b->by_head[s->q][s->head] = s;
        }
        break;
    }
}

/* Handles a completion; TRUE when it finished one whole operation of the stream. */
static gboolean slot_done(Backend *b, Slot *s, Stream st, guint32 len)
{
    struct fuse_out_header oh;
    if (st == ST_CREATE_UNLINK && s->phase == 3) {
        s->phase = 0;
        s->n++;
        return TRUE;
    }
    memcpy(&oh, vfs_fe_host(b->fe, s->reply), sizeof(oh));
    if (len < sizeof(oh) || oh.error != 0) {
        if (b->errors++ < 3) {
            g_printerr("%s: %s failed: len %u error %d\n", b->name, stream_names[st], len,
                       oh.error);
        }
    }
    if (st != ST_CREATE_UNLINK) {
        s->n++;
        return TRUE;
    }
    if (s->phase == 0) {
        struct fuse_entry_out e;
        struct fuse_open_out o;
        memcpy(&e, vfs_fe_host(b->fe, s->reply + 64), sizeof(e));
        memcpy(&o, vfs_fe_host(b->fe, s->reply + 64 + sizeof(e)), sizeof(o));
        s->node = e.nodeid;
        s->fh = o.fh;
    }
    s->phase++;
    return FALSE;
}

typedef struct {
    double ops;
    double mib;
    double cpu_us; /* the backend's CPU time (all threads, user + system) per operation */
    /* Per operation (--counts): front-end kicks and its sleeps on the call eventfds, calls
     * from the backend, and the backend's voluntary context switches (its sleeps). */
    double kicks;
    double calls;
    double fe_sleeps;
    double be_sleeps;
    double fe_cpu_us; /* the front-end's (this process's) CPU time */
} Result;

/* CPU time of process @pid and its descendants so far, in microseconds (from /proc): Debian's
 * virtiofsd does its work in a child it forks into its sandbox. */
static double proc_cpu_us(GPid pid)
{
    double children = 0;
    g_autofree char *tdir = g_strdup_printf("/proc/%d/task", (int)pid);
    g_autoptr(GDir) d = g_dir_open(tdir, 0, NULL);
    const char *tid;
    while (d && (tid = g_dir_read_name(d))) {
        g_autofree char *cpath = g_strdup_printf("%s/%s/children", tdir, tid);
        g_autofree char *list = NULL;
        if (g_file_get_contents(cpath, &list, NULL, NULL)) {
            g_auto(GStrv) pids = g_strsplit(g_strstrip(list), " ", 0);
            for (guint i = 0; pids[i]; i++) {
                if (*pids[i]) {
                    children += proc_cpu_us(atoi(pids[i]));
                }
            }
        }
    }
    g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
    g_autofree char *text = NULL;
    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return children;
    }
    /* Fields after the command name, which ends with the last ')': utime is the 14th. */
    char *p = strrchr(text, ')');
    g_auto(GStrv) f = g_strsplit(p ? p + 2 : text, " ", 0);
    if (g_strv_length(f) < 13) {
        return children;
    }
    double ticks = g_ascii_strtod(f[11], NULL) + g_ascii_strtod(f[12], NULL);
    return children + ticks * 1e6 / sysconf(_SC_CLK_TCK);
}

static double self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

/* Voluntary context switches of process @pid's threads and its descendants'. */
static double proc_vcsw(GPid pid)
{
    double n = 0;
    g_autofree char *tdir = g_strdup_printf("/proc/%d/task", (int)pid);
    g_autoptr(GDir) d = g_dir_open(tdir, 0, NULL);
    const char *tid;
    while (d && (tid = g_dir_read_name(d))) {
        g_autofree char *cpath = g_strdup_printf("%s/%s/children", tdir, tid);
        g_autofree char *spath = g_strdup_printf("%s/%s/status", tdir, tid);
        g_autofree char *text = NULL;
        if (g_file_get_contents(cpath, &text, NULL, NULL)) {
            g_auto(GStrv) pids = g_strsplit(g_strstrip(text), " ", 0);
            for (guint i = 0; pids[i]; i++) {
                if (*pids[i]) {
                    n += proc_vcsw(atoi(pids[i]));
                }
            }
            g_clear_pointer(&text, g_free);
        }
        const char *v;
        if (g_file_get_contents(spath, &text, NULL, NULL) &&
            (v = strstr(text, "\nvoluntary_ctxt_switches:"))) {
            n += g_ascii_strtod(v + strlen("\nvoluntary_ctxt_switches:"), NULL);
        }
    }
    return n;
}

static VfsFeCounters counters_sum(Backend *b, guint nrq)
{
    VfsFeCounters sum = { 0 };
    for (guint q = RQ; q < RQ + nrq; q++) {
        VfsFeCounters c;
        vfs_fe_counters(b->fe, q, &c);
        sum.kicks += c.kicks;
        sum.calls += c.calls;
        sum.sleeps += c.sleeps;
    }
    return sum;
}

static void kick_all(Backend *b, guint nrq)
{
    for (guint q = RQ; q < RQ + nrq; q++) {
        vfs_fe_kick(b->fe, q);
    }
}

/* Runs one stream with @inflight requests spread over @nrq request queues. */
static Result run_line(Backend *b, Stream st, guint inflight, guint nrq)
{
    gint64 t0 = g_get_monotonic_time();
    gint64 warm = t0 + 200000, end = warm + (gint64)(opt_seconds * 1e6);
    guint64 done = 0;
    guint outstanding = 0;
    gboolean counting = FALSE;
    gint64 start = warm;
    double cpu0 = 0, vcsw0 = 0, fecpu0 = 0;
    VfsFeCounters c0 = { 0 };

    for (guint i = 0; i < inflight; i++) {
        b->slots[i].q = RQ + i % nrq;
        slot_submit(b, &b->slots[i], st);
        outstanding++;
    }
    kick_all(b, nrq);
    while (outstanding > 0) {
        VfsFeUsed u;
        guint qi;
        if (!vfs_fe_wait_any(b->fe, RQ, nrq, &qi, &u, 10000)) {
            g_printerr("%s: no completion within 10 s on %s\n", b->name, stream_names[st]);
            exit(1);
        }
        gint64 now = g_get_monotonic_time();
        if (!counting && now >= warm) {
            counting = TRUE;
            start = now;
            done = 0;
            cpu0 = proc_cpu_us(b->pid);
            if (opt_counts) {
                vcsw0 = proc_vcsw(b->pid);
                fecpu0 = self_cpu_us();
                c0 = counters_sum(b, nrq);
            }
        }
        gboolean stop = now >= end;
        for (;;) {
            Slot *s = b->by_head[qi][u.id];
            outstanding--;
            if (slot_done(b, s, st, u.len)) {
                done++;
            }
            if (!stop || (st == ST_CREATE_UNLINK && s->phase != 0)) {
                slot_submit(b, s, st);
                outstanding++;
            }
            gboolean more = FALSE;
            for (guint q = RQ; q < RQ + nrq && !more; q++) {
                if (vfs_fe_poll_used(b->fe, q, &u)) {
                    qi = q;
                    more = TRUE;
                }
            }
            if (!more) {
                break;
            }
        }
        kick_all(b, nrq);
    }
    double secs = (g_get_monotonic_time() - start) / 1e6;
    double cpu = proc_cpu_us(b->pid) - cpu0;
    Result res = { 0 };
    if (opt_counts && done) {
        VfsFeCounters c1 = counters_sum(b, nrq);
        res.kicks = (double)(c1.kicks - c0.kicks) / done;
        res.calls = (double)(c1.calls - c0.calls) / done;
        res.fe_sleeps = (double)(c1.sleeps - c0.sleeps) / done;
        res.be_sleeps = (proc_vcsw(b->pid) - vcsw0) / done;
        res.fe_cpu_us = (self_cpu_us() - fecpu0) / done;
    }
    double size = st == ST_READ_4K || st == ST_WRITE_4K ? 4096
                  : st == ST_READ_1M ? 1 << 20
                  : st == ST_WRITE_1M ? MIN(1 << 20, b->max_write) : 0;
    vfs_fe_alloc_reset(b->fe);
    res.ops = done / secs;
    res.mib = done * size / secs / (1 << 20);
    res.cpu_us = done ? cpu / done : 0;
    return res;
}

/* ---- backends ---- */

static guint64 one_call(Backend *b, guint32 op, guint64 node, const void *arg, guint32 alen,
                        const char *name, guint32 reply_args, void *reply)
{
    Slot *s = &b->slots[0];
    VfsFeUsed u;
    s->q = RQ;
    struct fuse_out_header oh;
    submit(b, s, build(b, s, op, node, arg, alen, name), 0, reply_args, 0);
    vfs_fe_kick(b->fe, RQ);
    if (!vfs_fe_wait_used(b->fe, RQ, &u, 10000)) {
        g_printerr("%s: no reply to opcode %u\n", b->name, op);
        exit(1);
    }
    memcpy(&oh, vfs_fe_host(b->fe, s->reply), sizeof(oh));
    if (oh.error) {
        g_printerr("%s: opcode %u failed: %d\n", b->name, op, oh.error);
        exit(1);
    }
    memcpy(reply, vfs_fe_host(b->fe, s->reply + 64), reply_args);
    return u.len;
}

static void backend_start(Backend *b, const char *shared)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *pool = g_strdup_printf("--thread-pool-size=%u", b->pool);
    g_autofree char *sockarg = NULL;
    g_autofree char *src = g_strdup_printf("source=%s", shared);
    g_autofree char *dirarg = g_strdup_printf("--shared-dir=%s", shared);
    g_auto(GStrv) env = g_get_environ();
    GPtrArray *argv = g_ptr_array_new();

    b->dir = g_dir_make_tmp("bench-vfs-XXXXXX", NULL);
    b->sock = g_build_filename(b->dir, "sock", NULL);
    sockarg = g_strdup_printf("--socket-path=%s", b->sock);
    g_ptr_array_add(argv, (char *)b->path);
    g_ptr_array_add(argv, sockarg);
    if (b->berth) {
        g_ptr_array_add(argv, dirarg);
        g_ptr_array_add(argv, "--cache=auto");
    } else {
        g_ptr_array_add(argv, "-o");
        g_ptr_array_add(argv, src);
        g_ptr_array_add(argv, "-o");
        g_ptr_array_add(argv, "cache=auto");
        /* Its seccomp filter kills it (SIGSYS on sched_getaffinity) with 64 threads unless
         * glibc's malloc arenas are bounded. */
        env = g_environ_setenv(env, "MALLOC_ARENA_MAX", "16", TRUE);
    }
    g_ptr_array_add(argv, pool);
    for (guint i = 0; b->berth && b->extra_args && b->extra_args[i]; i++) {
        g_ptr_array_add(argv, b->extra_args[i]);
    }
    g_ptr_array_add(argv, NULL);
    if (!g_spawn_async(NULL, (char **)argv->pdata, env,
                       G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL |
                           G_SPAWN_STDERR_TO_DEV_NULL,
                       NULL, NULL, &b->pid, &error)) {
        g_printerr("cannot start %s: %s\n", b->path, error->message);
        exit(1);
    }
    g_ptr_array_free(argv, TRUE);
    for (guint i = 0; i < 500 && !g_file_test(b->sock, G_FILE_TEST_EXISTS); i++) {
        g_usleep(10000);
    }
    b->fe = vfs_fe_connect(b->sock, GUEST_MEM, &error);
    VfsFeSetup setup = { .nqueues = 1 + b->nrq, .qsize = 1024 };
    if (!b->fe || !vfs_fe_setup(b->fe, &setup, &error)) {
        g_printerr("cannot set up %s: %s\n", b->name, error->message);
        exit(1);
    }
    for (guint i = 0; i < MAX_INFLIGHT; i++) {
        Slot *s = &b->slots[i];
        guint64 base = vfs_fe_alloc(b->fe, SLOT_SIZE, PAGE);
        s->req = base;
        s->reply = base + 4096;
        s->table = base + 8192;
        s->data = base + 16384;
    }
    vfs_fe_alloc_reset(b->fe);
    /* Keep the slots: restart the allocator after them. */
    vfs_fe_alloc(b->fe, SLOT_SIZE * MAX_INFLIGHT, PAGE);

    struct fuse_init_in init = { .major = 7, .minor = 31, .max_readahead = 1 << 20,
                                 .flags = FUSE_ASYNC_READ | FUSE_BIG_WRITES | FUSE_MAX_PAGES };
    struct fuse_init_out io;
    b->unique = 1;
    one_call(b, FUSE_INIT, 0, &init, sizeof(init), NULL, sizeof(io), &io);
    b->max_write = io.max_write;

    struct fuse_entry_out e;
    struct fuse_open_out o;
    struct fuse_open_in oi = { .flags = O_RDONLY };
    one_call(b, FUSE_LOOKUP, 1, NULL, 0, "data", sizeof(e), &e);
    b->data_node = e.nodeid;
    one_call(b, FUSE_OPEN, b->data_node, &oi, sizeof(oi), NULL, sizeof(o), &o);
    b->data_fh = o.fh;
    one_call(b, FUSE_LOOKUP, 1, NULL, 0, b->prefix == 'b' ? "w-berth" : "w-virtiofsd",
             sizeof(e), &e);
    oi.flags = O_RDWR;
    b->w_node = e.nodeid;
    one_call(b, FUSE_OPEN, e.nodeid, &oi, sizeof(oi), NULL, sizeof(o), &o);
    b->w_fh = o.fh;
}

static void backend_stop(Backend *b)
{
    int status;
    g_clear_pointer(&b->fe, vfs_fe_free);
    for (guint i = 0; i < 300; i++) {
        if (waitpid(b->pid, &status, WNOHANG) == b->pid) {
            b->pid = 0;
            break;
        }
        g_usleep(10000);
    }
    if (b->pid) {
        kill(b->pid, SIGKILL);
        waitpid(b->pid, &status, 0);
    }
    unlink(b->sock);
    g_autofree char *lock = g_strdup_printf("%s.lock", b->sock);
    unlink(lock);
    rmdir(b->dir);
    g_free(b->sock);
    g_free(b->dir);
}

static void make_file(const char *dir, const char *name)
{
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_autofree guint8 *buf = g_malloc(1 << 20);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    g_assert(fd >= 0);
    for (guint i = 0; i < (1 << 20); i++) {
        buf[i] = i * 31;
    }
    for (guint i = 0; i < FILE_SIZE / (1 << 20); i++) {
        g_assert(write(fd, buf, 1 << 20) == 1 << 20);
    }
    close(fd);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, guint n)
{
    qsort(v, n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void rm_tree(const char *dir)
{
    g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
    const char *name;
    while (d && (name = g_dir_read_name(d))) {
        g_autofree char *p = g_build_filename(dir, name, NULL);
        unlink(p);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    GOptionEntry entries[] = {
        { "berth", 0, 0, G_OPTION_ARG_FILENAME, &opt_berth, "berth-virtiofsd to run", "PATH" },
        { "virtiofsd", 0, 0, G_OPTION_ARG_FILENAME, &opt_virtiofsd, "virtiofsd to compare",
          "PATH" },
        { "runs", 0, 0, G_OPTION_ARG_INT, &opt_runs, "runs per line (median)", "N" },
        { "seconds", 0, 0, G_OPTION_ARG_DOUBLE, &opt_seconds, "seconds per run", "S" },
        { "streams", 0, 0, G_OPTION_ARG_STRING, &opt_streams,
          "only streams whose name contains this", "TEXT" },
        { "berth-only", 0, 0, G_OPTION_ARG_NONE, &opt_berth_only, "skip virtiofsd", NULL },
        { "share-base", 0, 0, G_OPTION_ARG_FILENAME, &opt_share_base,
          "where to make the shared directory (default /dev/shm: measure the backends, not "
          "the disk)", "DIR" },
        { "pool", 0, 0, G_OPTION_ARG_INT, &opt_pool, "only this pool size (0 or 64)", "N" },
        { "inflight", 0, 0, G_OPTION_ARG_INT, &opt_inflight,
          "only this many in flight (1 or 8; skips the several-queue lines)", "N" },
        { "berth-arg", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_berth_args,
          "an extra argument for berth-virtiofsd (repeatable), e.g. --berth-arg=--poll-us=50",
          "ARG" },
        { "b-arg", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt_b_args,
          "A/B mode: compare against a second berth-virtiofsd (same --berth binary) run with "
          "this extra argument (repeatable; '-' for none) instead of virtiofsd; the 'virtiofsd' "
          "columns are then B's", "ARG" },
        { "b-berth", 0, 0, G_OPTION_ARG_FILENAME, &opt_b_berth,
          "A/B mode with another berth-virtiofsd binary as B (e.g. an older build); with "
          "--b-arg, B gets those arguments too", "PATH" },
        { "counts", 0, 0, G_OPTION_ARG_NONE, &opt_counts,
          "also print kicks, calls and sleeps per operation (after each line)", NULL },
        { NULL },
    };
    g_autoptr(GOptionContext) ctx = g_option_context_new("- virtiofs backends without a guest");
    g_autoptr(GError) error = NULL;
    static const guint pools[] = { 0, 64 };
    static const guint inflights[] = { 1, 8 };

    g_option_context_add_main_entries(ctx, entries, NULL);
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        g_printerr("%s\n", error->message);
        return 2;
    }
    if (opt_b_berth && !opt_b_args) {
        static char *none[] = { "-", NULL };
        opt_b_args = none;
    }
    if (!opt_berth && argc > 1) {
        opt_berth = g_strdup(argv[1]);
    }
    if (!opt_berth) {
        g_printerr("needs --berth=PATH to berth-virtiofsd\n");
        return 2;
    }
    gboolean with_virtiofsd = !opt_berth_only &&
                              (opt_b_args || g_file_test(opt_virtiofsd, G_FILE_TEST_IS_EXECUTABLE));
    if (!with_virtiofsd && !opt_berth_only) {
        g_printerr("%s is missing (package qemu-system-common): berth-virtiofsd only\n",
                   opt_virtiofsd);
    }
    signal(SIGPIPE, SIG_IGN);
    if (!opt_share_base && access("/dev/shm", W_OK) == 0) {
        opt_share_base = g_strdup("/dev/shm");
    }
    g_autofree char *shared = NULL;
    if (opt_share_base) {
        shared = g_build_filename(opt_share_base, "bench-vfs-share-XXXXXX", NULL);
        if (!g_mkdtemp(shared)) {
            g_printerr("cannot make a directory in %s\n", opt_share_base);
            return 1;
        }
    } else {
        shared = g_dir_make_tmp("bench-vfs-share-XXXXXX", NULL);
    }
    make_file(shared, "data");
    make_file(shared, "w-berth");
    make_file(shared, "w-virtiofsd");

    const char *an = opt_b_args ? "A" : "berth", *bn = opt_b_args ? "B" : "virtiofsd";
    printf("| stream | in flight | pool | %s ops/s | %s ops/s | ratio | %s MiB/s | %s MiB/s | "
           "%s CPU us/op | %s CPU us/op |\n|---|---|---|---|---|---|---|---|---|---|\n",
           an, bn, an, bn, an, bn);
    fflush(stdout);
    for (guint p = 0; p < G_N_ELEMENTS(pools); p++) {
        if (opt_pool >= 0 && (guint)opt_pool != pools[p]) {
            continue;
        }
        /* Debian's virtiofsd has one request queue; berth-virtiofsd gets several. */
        Backend bb = { .name = "berth-virtiofsd", .path = opt_berth, .pool = pools[p],
                       .prefix = 'b', .nrq = MAX_RQ, .berth = TRUE,
                       .extra_args = opt_berth_args };
        Backend vb = { .name = "virtiofsd", .path = opt_virtiofsd, .pool = pools[p],
                       .prefix = 'v', .nrq = 1 };
        if (opt_b_args) {
            /* B: the same binary with other options; '-' alone means none. */
            vb.name = "berth-virtiofsd (B)";
            vb.path = opt_b_berth ? opt_b_berth : opt_berth;
            vb.berth = TRUE;
            vb.extra_args = g_str_equal(opt_b_args[0], "-") ? NULL : opt_b_args;
        }
        backend_start(&bb, shared);
        if (with_virtiofsd) {
            backend_start(&vb, shared);
        }
        for (guint st = 0; st < ST_LAST; st++) {
            if (opt_streams && !strstr(stream_names[st], opt_streams)) {
                continue;
            }
            for (guint f = 0; f < G_N_ELEMENTS(inflights); f++) {
                if (opt_inflight && (guint)opt_inflight != inflights[f]) {
                    continue;
                }
                double bo[16], vo[16], bm[16], vm[16], bc[16], vc[16];
                Result bx[16], vx[16];
                guint runs = CLAMP(opt_runs, 1, 16);
                for (guint r = 0; r < runs; r++) {
                    /* Interleaved, each going first every other time, so that both see the
                     * same machine; writes start with no dirty page left by the other. */
                    for (guint k = 0; k < 2; k++) {
                        gboolean berth_turn = (k == 0) == (r % 2 == 0);
                        if (!berth_turn && !with_virtiofsd) {
                            continue;
                        }
                        if (st == ST_WRITE_4K || st == ST_WRITE_1M ||
                            st == ST_CREATE_UNLINK) {
                            sync();
                        }
                        Result x = run_line(berth_turn ? &bb : &vb, st, inflights[f], 1);
                        (berth_turn ? bo : vo)[r] = x.ops;
                        (berth_turn ? bm : vm)[r] = x.mib;
                        (berth_turn ? bc : vc)[r] = x.cpu_us;
                        (berth_turn ? bx : vx)[r] = x;
                    }
                }
                double b_ops = median(bo, runs), b_mib = median(bm, runs);
                double b_cpu = median(bc, runs);
                if (with_virtiofsd) {
                    double v_ops = median(vo, runs), v_mib = median(vm, runs);
                    double v_cpu = median(vc, runs);
                    printf("| %s | %u | %u | %.0f | %.0f | %.2f | %.1f | %.1f | %.1f | %.1f |\n",
                           stream_names[st], inflights[f], pools[p], b_ops, v_ops,
                           b_ops / v_ops, b_mib, v_mib, b_cpu, v_cpu);
                } else {
                    printf("| %s | %u | %u | %.0f | - | - | %.1f | - | %.1f | - |\n",
                           stream_names[st], inflights[f], pools[p], b_ops, b_mib, b_cpu);
                }
                for (guint k = 0; opt_counts && k < 2; k++) {
                    Result *x = k ? vx : bx;
                    double kk[16], cc[16], fs[16], bs[16], fc[16];
                    if (k && !with_virtiofsd) {
                        continue;
                    }
                    for (guint r = 0; r < runs; r++) {
                        kk[r] = x[r].kicks;
                        cc[r] = x[r].calls;
                        fs[r] = x[r].fe_sleeps;
                        bs[r] = x[r].be_sleeps;
                        fc[r] = x[r].fe_cpu_us;
                    }
                    printf("|   per op, %s | kicks %.3f | calls %.3f | front-end sleeps %.3f | "
                           "backend sleeps %.3f | front-end CPU us %.1f |\n",
                           k ? vb.name : bb.name, median(kk, runs), median(cc, runs),
                           median(fs, runs), median(bs, runs), median(fc, runs));
                }
                fflush(stdout);
            }
        }
        /* Several request queues: berth-virtiofsd alone (virtiofsd has one). */
        for (guint st = 0; st < ST_LAST; st++) {
            if ((st != ST_READ_4K && st != ST_GETATTR) || opt_inflight ||
                (opt_streams && !strstr(stream_names[st], opt_streams))) {
                continue;
            }
            double bo[16], bm[16], bc[16];
            guint runs = CLAMP(opt_runs, 1, 16);
            for (guint r = 0; r < runs; r++) {
                Result x = run_line(&bb, st, MAX_INFLIGHT, MAX_RQ);
                bo[r] = x.ops;
                bm[r] = x.mib;
                bc[r] = x.cpu_us;
            }
            printf("| %s, %u queues | %u | %u | %.0f | (1 queue only) | - | %.1f | - | %.1f "
                   "| - |\n", stream_names[st], MAX_RQ, MAX_INFLIGHT, pools[p],
                   median(bo, runs), median(bm, runs), median(bc, runs));
            fflush(stdout);
        }
        backend_stop(&bb);
        if (with_virtiofsd) {
            backend_stop(&vb);
        }
        if (bb.errors || vb.errors) {
            g_printerr("errors: berth %u, virtiofsd %u\n", bb.errors, vb.errors);
        }
    }
    rm_tree(shared);
    return 0;
}
