/* berth-plugin-check: opens a plugin as berthd's loader does and reports whether it conforms. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <berth/fs.h>
#include <berth/hostdev.h>
#include <berth/hypervisor.h>
#include <berth/sink.h>

#include "plugin-loader.h"

typedef struct {
    const char *name;
    gsize offset;
} OpInfo;

#define OP(type, member) {#member, offsetof(type, member)}

static const OpInfo hypervisor_ops[] = {
    OP(BerthHypervisorOps, domain_validate), OP(BerthHypervisorOps, domain_start),
    OP(BerthHypervisorOps, domain_shutdown), OP(BerthHypervisorOps, domain_destroy),
    OP(BerthHypervisorOps, domain_suspend),  OP(BerthHypervisorOps, domain_resume),
    OP(BerthHypervisorOps, domain_reboot),   OP(BerthHypervisorOps, domain_reconnect),
    OP(BerthHypervisorOps, device_detach),   {NULL, 0},
};
static const OpInfo hostdev_ops[] = {
    OP(BerthHostdevOps, prepare), OP(BerthHostdevOps, release), {NULL, 0},
};
static const OpInfo fs_ops[] = {
    OP(BerthFsOps, share_start), OP(BerthFsOps, share_stop), {NULL, 0},
};
static const OpInfo sink_ops[] = {
    OP(BerthSinkOps, deliver), {NULL, 0},
};

/* The ops each kind has in this ABI; NULL in a plugin means "unsupported". */
static const OpInfo *
kind_ops(BerthPluginKind kind)
{
    switch (kind) {
    case BERTH_PLUGIN_HYPERVISOR:
        return hypervisor_ops;
    case BERTH_PLUGIN_HOSTDEV:
        return hostdev_ops;
    case BERTH_PLUGIN_FS:
        return fs_ops;
    case BERTH_PLUGIN_EVENT_SINK:
        return sink_ops;
    default:
        return NULL;
    }
}

static void
report_ops(const BerthPlugin *p, guint *warnings)
{
    const gsize size = *(const gsize *)p->ops;
    const gsize known = berth_plugin_ops_size_1_0(p->kind);
    const OpInfo *ops = kind_ops(p->kind);
    guint present = 0;

    printf("ops:         %s table, %zu bytes (ABI %d.%d: %zu)\n", berth_plugin_kind_name(p->kind),
           (size_t)size, BERTH_ABI_MAJOR, BERTH_ABI_MINOR, (size_t)known);
    for (const OpInfo *op = ops; op && op->name; op++) {
        const void *fn;
        memcpy(&fn, (const char *)p->ops + op->offset, sizeof(fn));
        printf("  %-20s %s\n", op->name, fn ? "implemented" : "NULL (unsupported)");
        present += fn != NULL;
    }
    if (present == 0) {
        printf("warning: every op is NULL: the plugin supports nothing\n");
        (*warnings)++;
    }
}

static void
report_keys(const BerthPlugin *p, guint *warnings)
{
    if (!p->config_keys || !p->config_keys[0].key) {
        printf("config keys: none\n");
        return;
    }
    printf("config keys: (all checked: names, types, ranges, defaults)\n");
    for (const BerthConfigKey *k = p->config_keys; k->key; k++) {
        g_autofree char *range = NULL;
        if (k->type == BERTH_CONFIG_INT) {
            range = g_strdup_printf(" range %" G_GINT64_FORMAT "..%" G_GINT64_FORMAT, k->min,
                                    k->max);
        }
        printf("  %-20s %-8s default %s%s%s%s\n", k->key, berth_config_type_name(k->type),
               k->default_value ? "'" : "", k->default_value ? k->default_value : "(unset)",
               k->default_value ? "'" : "", range ? range : "");
        if (!k->help || !*k->help) {
            printf("warning: config key '%s' has no help text for berthd.conf(5)\n", k->key);
            (*warnings)++;
        }
    }
}

int
main(int argc, char **argv)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *file = NULL;
    g_autofree char *dir = NULL;
    g_autofree char *name = NULL;
    g_autofree char *path = NULL;
    const BerthPlugin *p;
    guint warnings = 0;

    if (argc != 2 || g_str_has_prefix(argv[1], "-")) {
        fprintf(stderr, "usage: berth-plugin-check FILE.so\n"
                        "Opens FILE.so as berthd's plugin loader does (without running init)\n"
                        "and reports its ABI, kind, ops and config keys. Exit status 0 when the\n"
                        "plugin conforms, 1 when berthd would refuse it, 2 on usage errors.\n");
        return 2;
    }
    file = g_canonicalize_filename(argv[1], NULL);
    if (!g_str_has_suffix(file, ".so")) {
        fprintf(stderr, "berth-plugin-check: '%s' is not a .so file\n", argv[1]);
        return 2;
    }
    dir = g_path_get_dirname(file);
    name = g_path_get_basename(file);
    name[strlen(name) - strlen(".so")] = '\0';

    p = berth_plugin_open(dir, name, &path, &error);
    printf("file:        %s\n", path ? path : file);
    if (!p) {
        printf("FAIL: %s\n", error->message);
        return 1;
    }
    printf("ABI:         %u.%u (this berth: %d.%d)\n", p->abi_major, p->abi_minor,
           BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
    printf("struct_size: %zu (ABI 1.0: %zu)\n", (size_t)p->struct_size, sizeof(BerthPlugin));
    printf("name:        %s\n", p->name);
    printf("version:     %s\n", p->version ? p->version : "(none)");
    printf("description: %s\n", p->description ? p->description : "(none)");
    printf("kind:        %s\n", berth_plugin_kind_name(p->kind));
    printf("init:        %s\n", p->init ? "yes" : "no");
    printf("shutdown:    %s\n", p->shutdown ? "yes" : "no");
    printf("reload:      %s\n", p->reload ? "yes" : "no (its keys need a restart)");
    if (!p->version || !p->description) {
        printf("warning: a version and a one-line description are expected "
               "(berthd --list-plugins)\n");
        warnings++;
    }
    report_ops(p, &warnings);
    report_keys(p, &warnings);
    printf("PASS: conformant (%u warning%s)\n", warnings, warnings == 1 ? "" : "s");
    return 0;
}
