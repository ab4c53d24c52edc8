/* The simulated sysfs: an inotify thread that moves driver links like the kernel would. */
#include "vsim.h"

#include <gio/gio.h>

#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

typedef enum { W_BIND, W_UNBIND, W_PROBE, W_OVERRIDE, W_RESET, W_SIMDIR } WatchKind;

typedef struct {
    WatchKind kind;
    char *name; /* driver (bind/unbind) or device address */
} Watch;

typedef struct {
    char *addr;
    int group;
    char *native;
    char *driver;   /* bound driver or NULL */
    char *override; /* driver_override or NULL */
    char *fail;     /* failure words, " a b " form */
    guint resets;
    gboolean gone;
} SimDev;

struct VSim {
    char *root;
    char *sys;
    char *dev_vfio;
    char *pci;
    GMutex lock; /* protects everything below */
    GHashTable *devs;    /* addr -> SimDev */
    GPtrArray *drivers;  /* names */
    GHashTable *watches; /* wd -> Watch */
    guint64 handled;
    int ifd;
    int stop_pipe[2];
    GThread *thread;
};

static void
dev_free(gpointer p)
{
    SimDev *d = p;

    g_free(d->addr);
    g_free(d->native);
    g_free(d->driver);
    g_free(d->override);
    g_free(d->fail);
    g_free(d);
}

static void
watch_free(gpointer p)
{
    Watch *w = p;

    g_free(w->name);
    g_free(w);
}

static void
put(const char *path, const char *text)
{
    g_autoptr(GError) error = NULL;

    if (!g_file_set_contents(path, text, -1, &error)) {
        g_warning("vsim: %s", error->message);
    }
}

/* Writes in place (no rename): inotify watches stay on the same inode. */
static void
put_inplace(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);

    if (fd >= 0) {
        if (write(fd, text, strlen(text)) < 0) {
            g_warning("vsim: cannot write %s", path);
        }
        close(fd);
    }
}

VSim *
vsim_new(const char *root)
{
    VSim *sim = g_new0(VSim, 1);
    g_autofree char *groups = NULL;
    g_autofree char *simdir = NULL;
    g_autofree char *probe = NULL;

    sim->root = g_strdup(root);
    sim->sys = g_build_filename(root, "sys", NULL);
    sim->dev_vfio = g_build_filename(root, "dev", "vfio", NULL);
    sim->pci = g_build_filename(sim->sys, "bus", "pci", NULL);
    g_mutex_init(&sim->lock);
    sim->devs = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, dev_free);
    sim->drivers = g_ptr_array_new_with_free_func(g_free);
    sim->watches = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, watch_free);
    sim->ifd = -1;
    sim->stop_pipe[0] = sim->stop_pipe[1] = -1;
    groups = g_build_filename(sim->sys, "kernel", "iommu_groups", NULL);
    simdir = g_build_filename(root, "sim", NULL);
    probe = g_build_filename(sim->pci, "drivers_probe", NULL);
    g_mkdir_with_parents(groups, 0755);
    g_mkdir_with_parents(sim->dev_vfio, 0755);
    g_mkdir_with_parents(simdir, 0755);
    {
        g_autofree char *devs = g_build_filename(sim->pci, "devices", NULL);
        g_autofree char *drvs = g_build_filename(sim->pci, "drivers", NULL);
        g_mkdir_with_parents(devs, 0755);
        g_mkdir_with_parents(drvs, 0755);
    }
    put(probe, "");
    return sim;
}

const char *
vsim_sysfs_root(VSim *sim)
{
    return sim->sys;
}

const char *
vsim_dev_vfio(VSim *sim)
{
    return sim->dev_vfio;
}

void
vsim_add_driver(VSim *sim, const char *name)
{
    g_autofree char *dir = g_build_filename(sim->pci, "drivers", name, NULL);
    g_autofree char *bind = g_build_filename(dir, "bind", NULL);
    g_autofree char *unbind = g_build_filename(dir, "unbind", NULL);

    g_mkdir_with_parents(dir, 0755);
    put(bind, "");
    put(unbind, "");
    g_mutex_lock(&sim->lock);
    g_ptr_array_add(sim->drivers, g_strdup(name));
    g_mutex_unlock(&sim->lock);
}

static gboolean
have_driver(VSim *sim, const char *name)
{
    for (guint i = 0; i < sim->drivers->len; i++) {
        if (strcmp(sim->drivers->pdata[i], name) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static gboolean
failing(SimDev *d, const char *word)
{
    g_autofree char *w = g_strdup_printf(" %s ", word);

    return d->fail && strstr(d->fail, w) != NULL;
}

static guint
fail_delay(SimDev *d)
{
    const char *p = d->fail ? strstr(d->fail, " unbind-delay-ms=") : NULL;

    return p ? (guint) strtoul(p + strlen(" unbind-delay-ms="), NULL, 10) : 0;
}

static char *
dev_file(VSim *sim, const char *addr, const char *name)
{
    return g_build_filename(sim->pci, "devices", addr, name, NULL);
}

static void
add_watch(VSim *sim, const char *path, WatchKind kind, const char *name)
{
    Watch *w;
    int wd;

    if (sim->ifd < 0) {
        return;
    }
    wd = inotify_add_watch(sim->ifd, path, IN_CLOSE_WRITE | (kind == W_SIMDIR ? IN_MOVED_TO : 0));
    if (wd < 0) {
        g_warning("vsim: cannot watch %s: %s", path, g_strerror(errno));
        return;
    }
    w = g_new0(Watch, 1);
    w->kind = kind;
    w->name = g_strdup(name);
    g_hash_table_replace(sim->watches, GINT_TO_POINTER(wd), w);
}

/* Creates ADDR/driver and drivers/DRV/ADDR, and /dev/vfio/GROUP for vfio-pci. */
static void
link_driver(VSim *sim, SimDev *d, const char *drv)
{
    g_autofree char *dlink = dev_file(sim, d->addr, "driver");
    g_autofree char *dtarget = g_strdup_printf("../../drivers/%s", drv);
    g_autofree char *rlink = g_build_filename(sim->pci, "drivers", drv, d->addr, NULL);
    g_autofree char *rtarget = g_strdup_printf("../../devices/%s", d->addr);

    if (symlink(dtarget, dlink) < 0 || symlink(rtarget, rlink) < 0) {
        g_warning("vsim: cannot link %s to %s: %s", d->addr, drv, g_strerror(errno));
    }
    g_free(d->driver);
    d->driver = g_strdup(drv);
    if (strcmp(drv, "vfio-pci") == 0 && d->group >= 0 && !failing(d, "no-devnode")) {
        g_autofree char *node = g_strdup_printf("%s/%d", sim->dev_vfio, d->group);
        put(node, "");
    }
}

static gboolean
group_on_vfio(VSim *sim, int group)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, sim->devs);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SimDev *o = v;
        if (!o->gone && o->group == group && g_strcmp0(o->driver, "vfio-pci") == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static void
vanish(VSim *sim, SimDev *d)
{
    g_autofree char *dir = dev_file(sim, d->addr, NULL);
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    g_autofree char *glink = g_strdup_printf("%s/kernel/iommu_groups/%d/devices/%s", sim->sys,
                                             d->group, d->addr);

    if (system(cmd) != 0) {
        g_warning("vsim: cannot remove %s", dir);
    }
    g_unlink(glink);
    d->gone = TRUE;
}

static void
do_unbind(VSim *sim, SimDev *d)
{
    g_autofree char *dlink = dev_file(sim, d->addr, "driver");
    g_autofree char *rlink = NULL;
    gboolean was_vfio = g_strcmp0(d->driver, "vfio-pci") == 0;
    guint delay = fail_delay(d);

    if (!d->driver || failing(d, was_vfio ? "vfio-unbind-fail" : "unbind-fail")) {
        return;
    }
    if (delay) {
        /* A slow driver remove(): everything else waits, as the bus lock makes it. */
        g_mutex_unlock(&sim->lock);
        g_usleep((gulong) delay * 1000);
        g_mutex_lock(&sim->lock);
    }
    rlink = g_build_filename(sim->pci, "drivers", d->driver, d->addr, NULL);
    g_unlink(dlink);
    g_unlink(rlink);
    g_clear_pointer(&d->driver, g_free);
    if (was_vfio && d->group >= 0 && !group_on_vfio(sim, d->group)) {
        g_autofree char *node = g_strdup_printf("%s/%d", sim->dev_vfio, d->group);
        g_unlink(node);
    }
    if (failing(d, "vanish-on-unbind")) {
        vanish(sim, d);
    }
}

/* The kernel's driver match: driver_override alone decides when set; else the id table. */
static gboolean
matches(SimDev *d, const char *drv)
{
    if (d->override) {
        return strcmp(d->override, drv) == 0;
    }
    return g_strcmp0(d->native, drv) == 0;
}

static void
do_bind(VSim *sim, SimDev *d, const char *drv)
{
    if (d->driver || !have_driver(sim, drv) || !matches(d, drv)) {
        return;
    }
    if (strcmp(drv, "vfio-pci") == 0 ? failing(d, "bind-fail") : failing(d, "reprobe-fail")) {
        return;
    }
    link_driver(sim, d, drv);
}

static void
apply_static_fail(VSim *sim, SimDev *d)
{
    g_autofree char *reset = dev_file(sim, d->addr, "reset");

    if (d->gone) {
        return;
    }
    if (failing(d, "reset-fail") && g_file_test(reset, G_FILE_TEST_IS_REGULAR)) {
        g_unlink(reset);
        g_mkdir(reset, 0755);
    }
}

static void
set_fail_locked(VSim *sim, SimDev *d, const char *spec)
{
    g_auto(GStrv) words = g_strsplit_set(spec ? spec : "", " \t\n", -1);
    g_autoptr(GString) s = g_string_new(" ");

    for (guint i = 0; words[i]; i++) {
        if (*words[i]) {
            g_string_append_printf(s, "%s ", words[i]);
        }
    }
    g_free(d->fail);
    d->fail = g_strdup(s->str);
    apply_static_fail(sim, d);
}

void
vsim_set_fail(VSim *sim, const char *addr, const char *spec)
{
    g_autofree char *file = g_strdup_printf("%s/sim/%s.fail", sim->root, addr);
    SimDev *d;

    g_mutex_lock(&sim->lock);
    d = g_hash_table_lookup(sim->devs, addr);
    g_assert(d);
    set_fail_locked(sim, d, spec);
    g_mutex_unlock(&sim->lock);
    /* Also on disk, so a reader sees what is injected; the watch re-applies the same set. */
    put(file, spec ? spec : "");
}

void
vsim_add_device(VSim *sim, const char *addr, guint vendor, guint device, guint class_code,
                int group, const char *native, gboolean bound, gboolean has_reset)
{
    SimDev *d = g_new0(SimDev, 1);
    g_autofree char *dir = dev_file(sim, addr, NULL);
    g_autofree char *p = NULL;
    g_autofree char *text = NULL;

    d->addr = g_strdup(addr);
    d->group = group;
    d->native = g_strdup(native);
    g_mkdir_with_parents(dir, 0755);
#define ATTR(name, ...)                                                                        \
    do {                                                                                       \
        g_free(p);                                                                             \
        g_free(text);                                                                          \
        p = dev_file(sim, addr, name);                                                         \
        text = g_strdup_printf(__VA_ARGS__);                                                   \
        put(p, text);                                                                          \
    } while (0)
    ATTR("vendor", "0x%04x\n", vendor);
    ATTR("device", "0x%04x\n", device);
    ATTR("class", "0x%06x\n", class_code);
    ATTR("numa_node", "%d\n", group >= 0 ? 0 : -1);
    ATTR("driver_override", "(null)\n");
    if (has_reset) {
        ATTR("reset", "%s", "");
    }
#undef ATTR
    if (group >= 0) {
        g_autofree char *gdir = g_strdup_printf("%s/kernel/iommu_groups/%d/devices", sim->sys,
                                                group);
        g_autofree char *glink = g_build_filename(gdir, addr, NULL);
        g_autofree char *gtarget = g_strdup_printf("../../../../bus/pci/devices/%s", addr);
        g_autofree char *ilink = dev_file(sim, addr, "iommu_group");
        g_autofree char *itarget = g_strdup_printf("../../../../kernel/iommu_groups/%d", group);

        g_mkdir_with_parents(gdir, 0755);
        if (symlink(gtarget, glink) < 0 || symlink(itarget, ilink) < 0) {
            g_warning("vsim: cannot link the group of %s", addr);
        }
    }
    g_mutex_lock(&sim->lock);
    g_hash_table_replace(sim->devs, d->addr, d);
    if (bound && native) {
        link_driver(sim, d, native);
    }
    g_mutex_unlock(&sim->lock);
}

/* The first line of a control file, and the file emptied for the next write. */
static char *
take(const char *path, gboolean truncate)
{
    g_autofree char *text = NULL;

    if (!g_file_get_contents(path, &text, NULL, NULL)) {
        return NULL;
    }
    text[strcspn(text, "\n")] = '\0';
    if (truncate && *text) {
        put_inplace(path, "");
    }
    return g_steal_pointer(&text);
}

static void
handle(VSim *sim, Watch *w, const char *file)
{
    g_autofree char *path = NULL;
    g_autofree char *value = NULL;
    SimDev *d = NULL;

    switch (w->kind) {
    case W_BIND:
    case W_UNBIND:
        path = g_build_filename(sim->pci, "drivers", w->name,
                                w->kind == W_BIND ? "bind" : "unbind", NULL);
        break;
    case W_PROBE:
        path = g_build_filename(sim->pci, "drivers_probe", NULL);
        break;
    case W_OVERRIDE:
        path = dev_file(sim, w->name, "driver_override");
        break;
    case W_RESET:
        path = dev_file(sim, w->name, "reset");
        break;
    case W_SIMDIR:
        if (!file || !g_str_has_suffix(file, ".fail")) {
            return;
        }
        path = g_strdup_printf("%s/sim/%s", sim->root, file);
        break;
    }
    if (w->kind == W_SIMDIR) {
        g_autofree char *addr = g_strndup(file, strlen(file) - strlen(".fail"));
        g_autofree char *spec = NULL;

        g_file_get_contents(path, &spec, NULL, NULL);
        d = g_hash_table_lookup(sim->devs, addr);
        if (d) {
            set_fail_locked(sim, d, spec);
        }
        return;
    }
    value = take(path, w->kind != W_OVERRIDE);
    if (!value) {
        return;
    }
    if (w->kind == W_OVERRIDE || w->kind == W_RESET) {
        d = g_hash_table_lookup(sim->devs, w->name);
    } else {
        d = g_hash_table_lookup(sim->devs, value);
    }
    if (!d || d->gone || (w->kind != W_OVERRIDE && !*value)) {
        return;
    }
    sim->handled++;
    switch (w->kind) {
    case W_BIND:
        do_bind(sim, d, w->name);
        break;
    case W_UNBIND:
        if (g_strcmp0(d->driver, w->name) == 0) {
            do_unbind(sim, d);
        }
        break;
    case W_PROBE:
        if (!d->driver) {
            const char *target = d->override ? d->override : d->native;
            if (target) {
                do_bind(sim, d, target);
            }
        }
        break;
    case W_OVERRIDE: {
        const char *v = (*value && strcmp(value, "(null)") != 0) ? value : NULL;
        g_autofree char *norm = g_strdup_printf("%s\n", v ? v : "(null)");
        g_autofree char *now = NULL;

        g_free(d->override);
        d->override = g_strdup(v);
        /* Show what the kernel would show; only when it differs, or we would loop. */
        g_file_get_contents(path, &now, NULL, NULL);
        if (g_strcmp0(now, norm) != 0) {
            put_inplace(path, norm);
        }
        break;
    }
    case W_RESET:
        d->resets++;
        break;
    case W_SIMDIR:
        break;
    }
}

static gpointer
sim_thread(gpointer data)
{
    VSim *sim = data;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));

    for (;;) {
        struct pollfd fds[2] = { { sim->ifd, POLLIN, 0 }, { sim->stop_pipe[0], POLLIN, 0 } };
        ssize_t n;

        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        if (fds[1].revents) {
            break;
        }
        n = read(sim->ifd, buf, sizeof(buf));
        if (n <= 0) {
            continue;
        }
        g_mutex_lock(&sim->lock);
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *) p;
            Watch *w = g_hash_table_lookup(sim->watches, GINT_TO_POINTER(ev->wd));

            if (w && (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO))) {
                handle(sim, w, ev->len ? ev->name : NULL);
            }
            p += sizeof(struct inotify_event) + ev->len;
        }
        g_mutex_unlock(&sim->lock);
    }
    return NULL;
}

gboolean
vsim_start(VSim *sim, GError **error)
{
    g_autofree char *probe = g_build_filename(sim->pci, "drivers_probe", NULL);
    g_autofree char *simdir = g_build_filename(sim->root, "sim", NULL);
    GHashTableIter it;
    gpointer v;

    sim->ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (sim->ifd < 0 || pipe2(sim->stop_pipe, O_CLOEXEC) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "vsim: inotify: %s",
                    g_strerror(errno));
        return FALSE;
    }
    g_mutex_lock(&sim->lock);
    add_watch(sim, probe, W_PROBE, NULL);
    add_watch(sim, simdir, W_SIMDIR, NULL);
    for (guint i = 0; i < sim->drivers->len; i++) {
        const char *drv = sim->drivers->pdata[i];
        g_autofree char *bind = g_build_filename(sim->pci, "drivers", drv, "bind", NULL);
        g_autofree char *unbind = g_build_filename(sim->pci, "drivers", drv, "unbind", NULL);

        add_watch(sim, bind, W_BIND, drv);
        add_watch(sim, unbind, W_UNBIND, drv);
    }
    g_hash_table_iter_init(&it, sim->devs);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        SimDev *d = v;
        g_autofree char *ov = dev_file(sim, d->addr, "driver_override");
        g_autofree char *reset = dev_file(sim, d->addr, "reset");

        add_watch(sim, ov, W_OVERRIDE, d->addr);
        if (g_file_test(reset, G_FILE_TEST_IS_REGULAR)) {
            add_watch(sim, reset, W_RESET, d->addr);
        }
    }
    g_mutex_unlock(&sim->lock);
    sim->thread = g_thread_new("vsim", sim_thread, sim);
    return TRUE;
}

void
vsim_free(VSim *sim)
{
    if (!sim) {
        return;
    }
    if (sim->thread) {
        if (write(sim->stop_pipe[1], "x", 1) < 0) {
            g_warning("vsim: cannot stop the thread");
        }
        g_thread_join(sim->thread);
    }
    if (sim->ifd >= 0) {
        close(sim->ifd);
    }
    if (sim->stop_pipe[0] >= 0) {
        close(sim->stop_pipe[0]);
        close(sim->stop_pipe[1]);
    }
    g_hash_table_unref(sim->watches);
    g_hash_table_unref(sim->devs);
    g_ptr_array_unref(sim->drivers);
    g_mutex_clear(&sim->lock);
    g_free(sim->root);
    g_free(sim->sys);
    g_free(sim->dev_vfio);
    g_free(sim->pci);
    g_free(sim);
}

char *
vsim_driver(VSim *sim, const char *addr)
{
    SimDev *d;
    char *out;

    g_mutex_lock(&sim->lock);
    d = g_hash_table_lookup(sim->devs, addr);
    out = d ? g_strdup(d->driver) : NULL;
    g_mutex_unlock(&sim->lock);
    return out;
}

guint
vsim_resets(VSim *sim, const char *addr)
{
    SimDev *d;
    guint n;

    g_mutex_lock(&sim->lock);
    d = g_hash_table_lookup(sim->devs, addr);
    n = d ? d->resets : 0;
    g_mutex_unlock(&sim->lock);
    return n;
}

guint64
vsim_handled(VSim *sim)
{
    guint64 n;

    g_mutex_lock(&sim->lock);
    n = sim->handled;
    g_mutex_unlock(&sim->lock);
    return n;
}
