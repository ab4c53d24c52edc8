/* Tests of the registry: definitions in the domains dir, state, live status and restore. */
#include <string.h>
#include <unistd.h>

#include "domain-xml.h"
#include "registry.h"

typedef struct {
    char *dir;
    char *domains;
    char *status;
    BerthBus *bus;
    BerthBusSub *sub;
    BerthRegistry *reg;
} Fixture;

static char *
xml_named(const char *name, const char *uuid, guint mib)
{
    return g_strdup_printf("<domain type='kvm'><name>%s</name>%s%s%s"
                           "<memory unit='MiB'>%u</memory><vcpu>1</vcpu>"
                           "<os><type arch='x86_64' machine='q35'>hvm</type></os></domain>",
                           name, uuid ? "<uuid>" : "", uuid ? uuid : "", uuid ? "</uuid>" : "",
                           mib);
}

static void
fixture_setup(Fixture *f, gconstpointer data)
{
    g_autoptr(GError) error = NULL;

    f->dir = g_dir_make_tmp("berth-registry-XXXXXX", &error);
    g_assert_no_error(error);
    f->domains = g_build_filename(f->dir, "domains", NULL);
    f->status = g_build_filename(f->dir, "run", NULL);
    f->bus = berth_bus_new(64);
    f->sub = berth_bus_subscribe(f->bus, 256, 0, NULL);
    f->reg = berth_registry_new(f->domains, f->status, f->bus, &error);
    g_assert_no_error(error);
}

static void
fixture_teardown(Fixture *f, gconstpointer data)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);

    berth_registry_free(f->reg);
    berth_bus_unsubscribe(f->sub);
    berth_bus_free(f->bus);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(f->dir);
    g_free(f->domains);
    g_free(f->status);
}

/* The type of the next event, or NULL when none is queued. */
static char *
next_event(Fixture *f)
{
    const BerthEvent *ev = berth_bus_sub_pop(f->sub, 0);
    char *type;

    if (!ev) {
        return NULL;
    }
    type = g_strdup(ev->type);
    berth_event_unref(ev);
    return type;
}

static void
test_define_writes_file(Fixture *f, gconstpointer data)
{
    g_autofree char *xml = xml_named("web1", NULL, 64);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = berth_registry_define(f->reg, xml, strlen(xml), 0, &error);
    g_autofree char *path = g_build_filename(f->domains, "web1.xml", NULL);
    g_autofree char *text = NULL;
    g_autofree char *ev = NULL;
    BerthDomainInfo info;

    g_assert_no_error(error);
    g_assert_nonnull(dom);
    g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
    /* The file holds the canonical XML with the generated uuid. */
    g_assert_nonnull(strstr(text, berth_domain_get_uuid(dom)));
    info = berth_domain_get_info(dom);
    g_assert_cmpint(info.state, ==, BERTH_DOMAIN_SHUTOFF);
    g_assert_true(info.persistent);
    ev = next_event(f);
    g_assert_cmpstr(ev, ==, "domain-defined");
}

static void
test_uuid_conflicts(Fixture *f, gconstpointer data)
{
    g_autofree char *a = xml_named("a", "11111111-2222-3333-4444-555555555555", 64);
    g_autofree char *a2 = xml_named("a", "99999999-2222-3333-4444-555555555555", 64);
    g_autofree char *b = xml_named("b", "11111111-2222-3333-4444-555555555555", 64);
    g_autofree char *a_nouuid = xml_named("a", NULL, 128);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) da = berth_registry_define(f->reg, a, strlen(a), 0, &error);
    BerthDomain *d;

    g_assert_no_error(error);
    g_assert_nonnull(da);
    d = berth_registry_define(f->reg, a2, strlen(a2), 0, &error);
    g_assert_null(d);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS);
    g_clear_error(&error);
    d = berth_registry_define(f->reg, b, strlen(b), 0, &error);
    g_assert_null(d);
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS);
    g_clear_error(&error);
    /* Redefining without a uuid keeps the domain's uuid. */
    d = berth_registry_define(f->reg, a_nouuid, strlen(a_nouuid), 0, &error);
    g_assert_no_error(error);
    g_assert_cmpstr(berth_domain_get_uuid(d), ==, "11111111-2222-3333-4444-555555555555");
    berth_domain_unref(d);
}

static void
test_state_events_and_status(Fixture *f, gconstpointer data)
{
    g_autofree char *xml = xml_named("web1", NULL, 64);
    g_autofree char *xml2 = xml_named("web1", NULL, 256);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = berth_registry_define(f->reg, xml, strlen(xml), 0, &error);
    g_autofree char *status = g_build_filename(f->status, "web1.json", NULL);
    g_autofree char *saved = NULL;
    BerthDomainInfo info;
    BerthDomainDef *def;
    const char *expect[] = { "domain-defined", "domain-started", "domain-suspended",
                             "domain-resumed", "domain-defined", "domain-stopped" };

    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_BOOTED);
    g_assert_true(g_file_test(status, G_FILE_TEST_IS_REGULAR));
    g_assert_true(berth_registry_set_plugin_status(f->reg, dom, "testhv", "{\"pid\":1}",
                                                   &error));
    saved = berth_registry_get_plugin_status(f->reg, dom, "testhv");
    g_assert_cmpstr(saved, ==, "{\"pid\":1}");
    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_USER);
    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_UNPAUSED);
    /* Same state again: no event. */
    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_UNPAUSED);

    /* A redefinition while running waits for the next start. */
    berth_domain_unref(berth_registry_define(f->reg, xml2, strlen(xml2), 0, &error));
    g_assert_no_error(error);
    info = berth_domain_get_info(dom);
    g_assert_true(info.has_next);
    def = berth_domain_get_def(dom);
    g_assert_cmpuint(def->memory_kib, ==, 64 * 1024);
    berth_domain_def_free(def);

    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_SHUTOFF, BERTH_SHUTOFF_DESTROYED);
    g_assert_false(g_file_test(status, G_FILE_TEST_EXISTS));
    def = berth_domain_get_def(dom);
    g_assert_cmpuint(def->memory_kib, ==, 256 * 1024);
    berth_domain_def_free(def);
    g_assert_false(berth_domain_get_info(dom).has_next);

    for (gsize i = 0; i < G_N_ELEMENTS(expect); i++) {
        g_autofree char *ev = next_event(f);
        g_assert_cmpstr(ev, ==, expect[i]);
    }
    g_assert_null(next_event(f));
}

static void
test_undefine(Fixture *f, gconstpointer data)
{
    g_autofree char *xml = xml_named("web1", NULL, 64);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = berth_registry_define(f->reg, xml, strlen(xml), 0, &error);
    g_autofree char *path = g_build_filename(f->domains, "web1.xml", NULL);

    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_RUNNING, BERTH_RUNNING_BOOTED);
    g_assert_false(berth_registry_undefine(f->reg, "web1", &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE);
    g_clear_error(&error);
    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_SHUTOFF, BERTH_SHUTOFF_SHUTDOWN);
    g_assert_true(berth_registry_undefine(f->reg, "web1", &error));
    g_assert_false(g_file_test(path, G_FILE_TEST_EXISTS));
    g_assert_null(berth_registry_lookup(f->reg, "web1", &error));
    g_assert_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DOMAIN);
}

/* The directory is the store: files appear, change and vanish; bad files are skipped. */
/* Warnings the registry logged (it logs bad files and goes on), captured by log_capture. */
static GPtrArray *warnings;

static GLogWriterOutput
log_capture(GLogLevelFlags level, const GLogField *fields, gsize n_fields, gpointer data)
{
    for (gsize i = 0; i < n_fields; i++) {
        if (g_str_equal(fields[i].key, "MESSAGE") && (level & G_LOG_LEVEL_WARNING)) {
            g_ptr_array_add(warnings, g_strdup(fields[i].value));
            return G_LOG_WRITER_HANDLED;
        }
    }
    return g_log_writer_default(level, fields, n_fields, data);
}

static gboolean
warned_about(const char *what)
{
    for (guint i = 0; i < warnings->len; i++) {
        if (strstr(warnings->pdata[i], what)) {
            return TRUE;
        }
    }
    return FALSE;
}

static void
test_load_directory(Fixture *f, gconstpointer data)
{
    g_autofree char *a = xml_named("a", NULL, 64);
    g_autofree char *b = xml_named("b", NULL, 64);
    g_autofree char *pa = g_build_filename(f->domains, "a.xml", NULL);
    g_autofree char *pb = g_build_filename(f->domains, "b.xml", NULL);
    g_autofree char *pbad = g_build_filename(f->domains, "bad.xml", NULL);
    g_autofree char *pwrong = g_build_filename(f->domains, "wrong.xml", NULL);
    g_autoptr(GPtrArray) list = NULL;
    g_autoptr(BerthDomain) da = NULL;
    g_autofree char *ua = NULL;

    g_assert_true(g_file_set_contents(pa, a, -1, NULL));
    g_assert_true(g_file_set_contents(pb, b, -1, NULL));
    g_assert_true(g_file_set_contents(pbad, "<domain>", -1, NULL));
    /* A file whose name differs from the domain's is refused. */
    g_assert_true(g_file_set_contents(pwrong, a, -1, NULL));
    g_ptr_array_set_size(warnings, 0);
    berth_registry_load(f->reg, NULL);
    g_assert_true(warned_about("bad.xml"));
    g_assert_true(warned_about("wrong.xml"));
    list = berth_registry_list(f->reg);
    g_assert_cmpuint(list->len, ==, 2);
    da = berth_registry_lookup(f->reg, "a", NULL);
    ua = g_strdup(berth_domain_get_uuid(da));

    /* Reload: the same uuid (derived from the existing domain), b gone. */
    g_assert_cmpint(unlink(pb), ==, 0);
    g_assert_cmpint(unlink(pbad), ==, 0);
    g_assert_cmpint(unlink(pwrong), ==, 0);
    berth_registry_load(f->reg, NULL);
    g_ptr_array_unref(g_steal_pointer(&list));
    list = berth_registry_list(f->reg);
    g_assert_cmpuint(list->len, ==, 1);
    g_assert_cmpstr(berth_domain_get_uuid(list->pdata[0]), ==, ua);
}

/* After a restart, active domains come back from the live status with their plugin status. */
static void
test_restore_from_status(Fixture *f, gconstpointer data)
{
    g_autofree char *xml = xml_named("web1", NULL, 64);
    g_autoptr(GError) error = NULL;
    g_autoptr(BerthDomain) dom = berth_registry_define(f->reg, xml, strlen(xml), 0, &error);
    g_autoptr(GPtrArray) reconnect = g_ptr_array_new_with_free_func(g_free);
    g_autoptr(BerthDomain) again = NULL;
    g_autofree char *ps = NULL;
    BerthRegistry *reg2;
    BerthDomainInfo info;

    berth_registry_set_state(f->reg, dom, BERTH_DOMAIN_PAUSED, BERTH_PAUSED_USER);
    g_assert_true(berth_registry_set_plugin_status(f->reg, dom, "qemu", "{\"pid\":42}",
                                                   &error));
    /* A second registry over the same dirs plays the restarted berthd. */
    reg2 = berth_registry_new(f->domains, f->status, NULL, &error);
    berth_registry_load(reg2, reconnect);
    g_assert_cmpuint(reconnect->len, ==, 1);
    g_assert_cmpstr(reconnect->pdata[0], ==, "web1");
    again = berth_registry_lookup(reg2, "web1", &error);
    g_assert_nonnull(again);
    info = berth_domain_get_info(again);
    g_assert_cmpint(info.state, ==, BERTH_DOMAIN_PAUSED);
    g_assert_cmpint(info.reason, ==, BERTH_PAUSED_USER);
    g_assert_true(info.persistent);
    g_assert_false(info.has_next);
    ps = berth_registry_get_plugin_status(reg2, again, "qemu");
    g_assert_cmpstr(ps, ==, "{\"pid\":42}");
    g_assert_cmpstr(berth_domain_get_uuid(again), ==, berth_domain_get_uuid(dom));
    berth_registry_free(reg2);
}

static void
test_state_names(void)
{
    BerthDomainState s;

    g_assert_cmpstr(berth_domain_state_name(BERTH_DOMAIN_SHUTOFF), ==, "shutoff");
    g_assert_cmpstr(berth_domain_reason_name(BERTH_DOMAIN_SHUTOFF, BERTH_SHUTOFF_CRASHED), ==,
                    "crashed");
    g_assert_cmpstr(berth_domain_reason_name(BERTH_DOMAIN_RUNNING, 99), ==, "unknown");
    g_assert_true(berth_domain_state_from_name("paused", &s));
    g_assert_cmpint(s, ==, BERTH_DOMAIN_PAUSED);
    g_assert_false(berth_domain_state_from_name("sleepy", &s));
}

#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* Bad files are warned about, not fatal: the tests check the warnings themselves. */
    g_log_set_always_fatal(G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
    warnings = g_ptr_array_new_with_free_func(g_free);
    g_log_set_writer_func(log_capture, NULL, NULL);
    ADD("/core/registry/define-writes-file", test_define_writes_file);
    ADD("/core/registry/uuid-conflicts", test_uuid_conflicts);
    ADD("/core/registry/state-events-and-status", test_state_events_and_status);
    ADD("/core/registry/undefine", test_undefine);
    ADD("/core/registry/load-directory", test_load_directory);
    ADD("/core/registry/restore-from-status", test_restore_from_status);
    g_test_add_func("/core/registry/state-names", test_state_names);
    return g_test_run();
}
