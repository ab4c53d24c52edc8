/* The registry: domains, their definitions (DOMAINS_DIR/NAME.xml), state and live status. */
#include "registry.h"

#include <errno.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include <berth/json.h>

#include "domain-xml.h"
#include "state-store.h"

struct BerthDomain {
    gint ref;
    char *name; /* immutable */

    GMutex lock; /* protects every field below */
    char *uuid;
    BerthDomainDef *def;     /* in effect: the live one while active */
    char *xml;               /* @def as XML */
    BerthDomainDef *next;    /* the persistent definition for the next start, or NULL */
    char *next_xml;
    BerthDomainDef *inactive; /* while active: the definition to go back to at stop (the
                               * live one has runtime aliases and hot-plugged devices) */
    char *inactive_xml;
    char *file_text;         /* DOMAINS_DIR/NAME.xml as last read or written (change check) */
    BerthDomainState state;
    int reason;
    gboolean persistent;
    GHashTable *plugin_status; /* plugin name -> JSON object text */
    char *autostart;           /* DOMAINS_DIR/autostart/NAME, immutable */
};

struct BerthRegistry {
    char *domains_dir;
    char *status_dir;
    BerthBus *bus;
    gboolean status_loaded;

    GMutex lock;         /* protects @by_name; never held while taking a domain's lock */
    GHashTable *by_name; /* name -> BerthDomain (ref) */
};

static const char *const state_names[BERTH_DOMAIN_STATE_LAST] = {
    "nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsuspended",
};

static const char *const running_reasons[] = {
    "unknown", "booted", "migrated", "restored", "from-snapshot", "unpaused",
    "migration-canceled", "save-canceled", "wakeup", "crashed", "postcopy",
};
static const char *const paused_reasons[] = {
    "unknown", "user", "migration", "save", "dump", "ioerror", "watchdog", "from-snapshot",
    "shutting-down", "snapshot", "crashed", "starting-up",
};
static const char *const shutdown_reasons[] = { "unknown", "user", "destroyed" };
static const char *const shutoff_reasons[] = {
    "unknown", "shutdown", "destroyed", "crashed", "migrated", "saved", "failed",
    "from-snapshot", "daemon",
};
static const char *const crashed_reasons[] = { "unknown", "panicked" };

const char *
berth_domain_state_name(BerthDomainState state)
{
    if ((int) state < 0 || state >= BERTH_DOMAIN_STATE_LAST) {
        return "nostate";
    }
    return state_names[state];
}

gboolean
berth_domain_state_from_name(const char *name, BerthDomainState *state)
{
    for (int i = 0; i < BERTH_DOMAIN_STATE_LAST; i++) {
        if (g_str_equal(name, state_names[i])) {
            *state = (BerthDomainState) i;
            return TRUE;
        }
    }
    return FALSE;
}

/* The reason names of @state (indexed by reason), and how many there are. */
static const char *const *
reason_names(BerthDomainState state, int *n)
{
#define PICK(arr) (*n = (int) G_N_ELEMENTS(arr), arr)
    switch (state) {
    case BERTH_DOMAIN_RUNNING: return PICK(running_reasons);
    case BERTH_DOMAIN_PAUSED: return PICK(paused_reasons);
    case BERTH_DOMAIN_SHUTDOWN: return PICK(shutdown_reasons);
    case BERTH_DOMAIN_SHUTOFF: return PICK(shutoff_reasons);
    case BERTH_DOMAIN_CRASHED: return PICK(crashed_reasons);
    default: *n = 0; return NULL;
    }
#undef PICK
}

const char *
berth_domain_reason_name(BerthDomainState state, int reason)
{
    int n;
    const char *const *names = reason_names(state, &n);

    if (reason < 0 || reason >= n) {
        return "unknown";
    }
    return names[reason];
}

/* The reason number of a name; 0 ("unknown") when @state has no such reason. */
static int
reason_from_name(BerthDomainState state, const char *name)
{
    int n;
    const char *const *names = reason_names(state, &n);

    for (int r = 0; r < n; r++) {
        if (g_str_equal(names[r], name)) {
            return r;
        }
    }
    return 0;
}

static gboolean
state_is_active(BerthDomainState state)
{
    return state != BERTH_DOMAIN_NOSTATE && state != BERTH_DOMAIN_SHUTOFF;
}

BerthDomain *
berth_domain_ref(BerthDomain *dom)
{
    g_atomic_int_inc(&dom->ref);
    return dom;
}

void
berth_domain_unref(BerthDomain *dom)
{
    if (!dom || !g_atomic_int_dec_and_test(&dom->ref)) {
        return;
    }
    g_free(dom->name);
    g_free(dom->uuid);
    berth_domain_def_free(dom->def);
    g_free(dom->xml);
    berth_domain_def_free(dom->next);
    g_free(dom->next_xml);
    g_free(dom->file_text);
    berth_domain_def_free(dom->inactive);
    g_free(dom->inactive_xml);
    g_hash_table_unref(dom->plugin_status);
    g_free(dom->autostart);
    g_mutex_clear(&dom->lock);
    g_free(dom);
}

static char *autostart_path(BerthRegistry *reg, const char *name);

static BerthDomain *
domain_new(BerthRegistry *reg, BerthDomainDef *def, char *xml)
{
    BerthDomain *dom = g_new0(BerthDomain, 1);

    dom->ref = 1;
    g_mutex_init(&dom->lock);
    dom->name = g_strdup(def->name);
    dom->uuid = g_strdup(def->uuid);
    dom->def = def;
    dom->xml = xml;
    dom->state = BERTH_DOMAIN_SHUTOFF;
    dom->reason = BERTH_SHUTOFF_UNKNOWN;
    dom->plugin_status = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    dom->autostart = autostart_path(reg, dom->name);
    return dom;
}

const char *
berth_domain_get_name(BerthDomain *dom)
{
    return dom->name;
}

const char *
berth_domain_get_uuid(BerthDomain *dom)
{
    /* The uuid never changes once the domain exists (a redefine must keep it). */
    return dom->uuid;
}

BerthDomainDef *
berth_domain_get_def(BerthDomain *dom)
{
    BerthDomainDef *copy;

    g_mutex_lock(&dom->lock);
    copy = berth_domain_def_copy(dom->def);
    g_mutex_unlock(&dom->lock);
    return copy;
}

char *
berth_domain_get_xml(BerthDomain *dom)
{
    char *xml;

    g_mutex_lock(&dom->lock);
    xml = g_strdup(dom->xml);
    g_mutex_unlock(&dom->lock);
    return xml;
}

static char *
autostart_path(BerthRegistry *reg, const char *name)
{
    return g_build_filename(reg->domains_dir, "autostart", name, NULL);
}

BerthDomainInfo
berth_domain_get_info(BerthDomain *dom)
{
    BerthDomainInfo info;

    g_mutex_lock(&dom->lock);
    info.state = dom->state;
    info.reason = dom->reason;
    info.persistent = dom->persistent;
    info.has_next = dom->next != NULL;
    g_mutex_unlock(&dom->lock);
    info.autostart = g_file_test(dom->autostart, G_FILE_TEST_EXISTS);
    return info;
}

gboolean
berth_domain_is_active(BerthDomain *dom)
{
    gboolean active;

    g_mutex_lock(&dom->lock);
    active = state_is_active(dom->state);
    g_mutex_unlock(&dom->lock);
    return active;
}

static void
publish(BerthRegistry *reg, const char *name, const char *uuid, const char *type,
        const char *detail)
{
    BerthEvent ev = {
        .struct_size = sizeof(BerthEvent),
        .object_kind = "domain",
        .object_name = name,
        .object_uuid = uuid,
        .type = type,
        .detail_json = detail,
    };

    if (reg->bus) {
        berth_bus_publish(reg->bus, &ev);
    }
}

/* Writes STATUS_DIR/NAME.json from the domain's fields; caller holds dom->lock. */
static gboolean
write_status_locked(BerthRegistry *reg, BerthDomain *dom, GError **error)
{
    g_autofree char *path = g_strdup_printf("%s/%s.json", reg->status_dir, dom->name);
    yajl_gen g;
    g_autofree char *text = NULL;
    GHashTableIter it;
    gpointer k;
    gpointer v;

    if (!state_is_active(dom->state)) {
        return berth_state_remove(path, error);
    }
    g = yajl_gen_alloc(NULL);
    yajl_gen_map_open(g);
    berth_json_kv_str(g, "name", dom->name);
    berth_json_kv_str(g, "uuid", dom->uuid);
    berth_json_kv_str(g, "state", berth_domain_state_name(dom->state));
    berth_json_kv_str(g, "reason", berth_domain_reason_name(dom->state, dom->reason));
    berth_json_kv_bool(g, "persistent", dom->persistent);
    berth_json_kv_str(g, "xml", dom->xml);
    if (dom->inactive_xml) {
        berth_json_kv_str(g, "inactive_xml", dom->inactive_xml);
    }
    berth_json_str(g, "plugins");
    yajl_gen_map_open(g);
    g_hash_table_iter_init(&it, dom->plugin_status);
    while (g_hash_table_iter_next(&it, &k, &v)) {
        /* Stored as text so that plugins own their format; embedded as a string. */
        berth_json_kv_str(g, k, v);
    }
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
    text = berth_json_finish(g);
    return berth_state_write(path, text, strlen(text), 0600, error);
}

static const char *
lifecycle_event(BerthDomainState old, BerthDomainState state)
{
    switch (state) {
    case BERTH_DOMAIN_RUNNING:
        return old == BERTH_DOMAIN_PAUSED ? "domain-resumed" : "domain-started";
    case BERTH_DOMAIN_PAUSED:
        return state_is_active(old) ? "domain-suspended" : "domain-started";
    case BERTH_DOMAIN_SHUTDOWN:
        return "domain-shutdown";
    case BERTH_DOMAIN_SHUTOFF:
        return "domain-stopped";
    case BERTH_DOMAIN_CRASHED:
        return "domain-crashed";
    case BERTH_DOMAIN_PMSUSPENDED:
        return "domain-pmsuspended";
    default:
        return NULL;
    }
}

/* Makes *@def (with its *@xml) the domain's definition when there is one, taking both;
 * caller holds dom->lock. */
static void
adopt_def_locked(BerthDomain *dom, BerthDomainDef **def, char **xml)
{
    if (!*def) {
        return;
    }
    berth_domain_def_free(dom->def);
    g_free(dom->xml);
    dom->def = g_steal_pointer(def);
    dom->xml = g_steal_pointer(xml);
}

/* Back to the definition the domain had before it started; caller holds dom->lock. */
static void
restore_inactive_locked(BerthDomain *dom)
{
    adopt_def_locked(dom, &dom->inactive, &dom->inactive_xml);
}

BerthDomainDef *
berth_registry_prepare_start(BerthRegistry *reg, BerthDomain *dom)
{
    BerthDomainDef *copy;

    g_mutex_lock(&dom->lock);
    if (!state_is_active(dom->state)) {
        restore_inactive_locked(dom);
        adopt_def_locked(dom, &dom->next, &dom->next_xml);
        dom->inactive = berth_domain_def_copy(dom->def);
        dom->inactive_xml = g_strdup(dom->xml);
        berth_domain_def_assign_aliases(dom->def);
        g_free(dom->xml);
        dom->xml = berth_domain_def_format(dom->def);
    }
    copy = berth_domain_def_copy(dom->def);
    g_mutex_unlock(&dom->lock);
    return copy;
}

void
berth_registry_abort_start(BerthRegistry *reg, BerthDomain *dom)
{
    g_mutex_lock(&dom->lock);
    if (!state_is_active(dom->state)) {
        restore_inactive_locked(dom);
    }
    g_mutex_unlock(&dom->lock);
}

/* Publishes device-added/device-removed for @alias. */
static void
publish_device(BerthRegistry *reg, BerthDomain *dom, const char *type, const char *alias)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    g_autofree char *detail = NULL;

    yajl_gen_map_open(g);
    berth_json_kv_str(g, "alias", alias);
    yajl_gen_map_close(g);
    detail = berth_json_finish(g);
    publish(reg, dom->name, dom->uuid, type, detail);
}

gboolean
berth_registry_check_device(BerthRegistry *reg, BerthDomain *dom, BerthDeviceDef *dev,
                            BerthDeviceDef *probe, GError **error)
{
    g_autoptr(BerthDomainDef) copy = NULL;

    g_mutex_lock(&dom->lock);
    if (!state_is_active(dom->state)) {
        g_mutex_unlock(&dom->lock);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE, "domain '%s' is not running",
                    dom->name);
        return FALSE;
    }
    copy = berth_domain_def_copy(dom->def);
    g_mutex_unlock(&dom->lock);
    berth_domain_def_assign_device_alias(copy, dev);
    berth_domain_def_assign_device_alias(copy, probe);
    if (g_strcmp0(berth_device_def_alias(dev), berth_device_def_alias(probe)) != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "device alias mismatch");
        return FALSE;
    }
    return berth_domain_def_add_device(copy, probe, error);
}

/* Writes the live definition's XML and status after a device change; caller holds the lock. */
static void
live_changed_locked(BerthRegistry *reg, BerthDomain *dom)
{
    g_autoptr(GError) error = NULL;

    g_free(dom->xml);
    dom->xml = berth_domain_def_format(dom->def);
    if (!write_status_locked(reg, dom, &error)) {
        g_warning("domain '%s': %s", dom->name, error->message);
    }
}

gboolean
berth_registry_add_device(BerthRegistry *reg, BerthDomain *dom, BerthDeviceDef *dev,
                          GError **error)
{
    g_autofree char *alias = NULL;

    g_mutex_lock(&dom->lock);
    if (!state_is_active(dom->state)) {
        g_mutex_unlock(&dom->lock);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "domain '%s' stopped while the device was being attached", dom->name);
        return FALSE;
    }
    berth_domain_def_assign_device_alias(dom->def, dev);
    alias = g_strdup(berth_device_def_alias(dev));
    if (!berth_domain_def_add_device(dom->def, dev, error)) {
        g_mutex_unlock(&dom->lock);
        return FALSE;
    }
    live_changed_locked(reg, dom);
    g_mutex_unlock(&dom->lock);
    publish_device(reg, dom, "device-added", alias);
    return TRUE;
}

gboolean
berth_registry_remove_device(BerthRegistry *reg, BerthDomain *dom, const char *alias)
{
    gboolean found;

    g_mutex_lock(&dom->lock);
    found = berth_domain_def_remove_device(dom->def, alias);
    if (found) {
        live_changed_locked(reg, dom);
    }
    g_mutex_unlock(&dom->lock);
    if (found) {
        publish_device(reg, dom, "device-removed", alias);
    }
    return found;
}

gboolean
berth_domain_has_device(BerthDomain *dom, const char *alias)
{
    BerthDeviceType type;
    guint index;
    gboolean found;

    g_mutex_lock(&dom->lock);
    found = berth_domain_def_find_device(dom->def, alias, &type, &index);
    g_mutex_unlock(&dom->lock);
    return found;
}

static void
registry_remove(BerthRegistry *reg, BerthDomain *dom)
{
    g_mutex_lock(&reg->lock);
    if (g_hash_table_lookup(reg->by_name, dom->name) == dom) {
        g_hash_table_remove(reg->by_name, dom->name);
    }
    g_mutex_unlock(&reg->lock);
}

void
berth_registry_set_state(BerthRegistry *reg, BerthDomain *dom, BerthDomainState state,
                         int reason)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *detail = NULL;
    BerthDomainState old;
    const char *type;
    gboolean drop = FALSE;
    gboolean changed;

    g_mutex_lock(&dom->lock);
    old = dom->state;
    changed = old != state || dom->reason != reason;
    if (!state_is_active(old) && state_is_active(state)) {
        /* A definition changed while the domain was off: it is the one that starts now. */
        adopt_def_locked(dom, &dom->next, &dom->next_xml);
    }
    dom->state = state;
    dom->reason = reason;
    if (!state_is_active(state)) {
        g_hash_table_remove_all(dom->plugin_status);
        restore_inactive_locked(dom);
        adopt_def_locked(dom, &dom->next, &dom->next_xml);
        drop = !dom->persistent;
    }
    if (!write_status_locked(reg, dom, &error)) {
        g_warning("domain '%s': %s", dom->name, error->message);
    }
    g_mutex_unlock(&dom->lock);

    if (!changed) {
        return;
    }
    type = lifecycle_event(old, state);
    if (type) {
        detail = g_strdup_printf("{\"state\":\"%s\",\"reason\":\"%s\"}",
                                 berth_domain_state_name(state),
                                 berth_domain_reason_name(state, reason));
        publish(reg, dom->name, dom->uuid, type, detail);
    }
    if (drop) {
        registry_remove(reg, dom);
        publish(reg, dom->name, dom->uuid, "domain-undefined", "{\"transient\":true}");
    }
}

gboolean
berth_registry_set_plugin_status(BerthRegistry *reg, BerthDomain *dom, const char *plugin,
                                 const char *status_json, GError **error)
{
    gboolean ok;

    g_mutex_lock(&dom->lock);
    if (status_json) {
        g_hash_table_insert(dom->plugin_status, g_strdup(plugin), g_strdup(status_json));
    } else {
        g_hash_table_remove(dom->plugin_status, plugin);
    }
    ok = write_status_locked(reg, dom, error);
    g_mutex_unlock(&dom->lock);
    return ok;
}

char *
berth_registry_get_plugin_status(BerthRegistry *reg, BerthDomain *dom, const char *plugin)
{
    char *s;

    g_mutex_lock(&dom->lock);
    s = g_strdup(g_hash_table_lookup(dom->plugin_status, plugin));
    g_mutex_unlock(&dom->lock);
    return s;
}

BerthRegistry *
berth_registry_new(const char *domains_dir, const char *status_dir, BerthBus *bus,
                   GError **error)
{
    BerthRegistry *reg;

    if (!berth_state_mkdir(domains_dir, 0700, error) ||
        !berth_state_mkdir(status_dir, 0700, error)) {
        return NULL;
    }
    reg = g_new0(BerthRegistry, 1);
    reg->domains_dir = g_strdup(domains_dir);
    reg->status_dir = g_strdup(status_dir);
    reg->bus = bus;
    g_mutex_init(&reg->lock);
    reg->by_name = g_hash_table_new_full(g_str_hash, g_str_equal, NULL,
                                         (GDestroyNotify) berth_domain_unref);
    return reg;
}

void
berth_registry_free(BerthRegistry *reg)
{
    if (!reg) {
        return;
    }
    g_hash_table_unref(reg->by_name);
    g_mutex_clear(&reg->lock);
    g_free(reg->domains_dir);
    g_free(reg->status_dir);
    g_free(reg);
}

BerthDomain *
berth_registry_lookup(BerthRegistry *reg, const char *name, GError **error)
{
    BerthDomain *dom;

    g_mutex_lock(&reg->lock);
    dom = name ? g_hash_table_lookup(reg->by_name, name) : NULL;
    if (dom) {
        berth_domain_ref(dom);
    }
    g_mutex_unlock(&reg->lock);
    if (!dom) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_NO_SUCH_DOMAIN, "domain '%s' does not exist",
                    name ? name : "");
    }
    return dom;
}

static gint
compare_domains(gconstpointer a, gconstpointer b)
{
    const BerthDomain *da = *(BerthDomain *const *) a;
    const BerthDomain *db = *(BerthDomain *const *) b;

    return strcmp(da->name, db->name);
}

GPtrArray *
berth_registry_list(BerthRegistry *reg)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify) berth_domain_unref);
    GHashTableIter it;
    gpointer v;

    g_mutex_lock(&reg->lock);
    g_hash_table_iter_init(&it, reg->by_name);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        g_ptr_array_add(out, berth_domain_ref(v));
    }
    g_mutex_unlock(&reg->lock);
    g_ptr_array_sort(out, compare_domains);
    return out;
}

/* A definition without <uuid> keeps the uuid its domain already has, so that an operator's
 * file without one does not get a new identity on every reload. */
static gboolean
xml_has_uuid(const char *xml, gsize len)
{
    return g_strstr_len(xml, (gssize) len, "<uuid") != NULL;
}

static BerthDomain *
find_uuid_locked(BerthRegistry *reg, const char *uuid)
{
    GHashTableIter it;
    gpointer v;

    g_hash_table_iter_init(&it, reg->by_name);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        BerthDomain *d = v;
        if (g_ascii_strcasecmp(d->uuid, uuid) == 0) {
            return d;
        }
    }
    return NULL;
}

/*
 * Adds or updates a domain from a parsed definition. @file_text is what DOMAINS_DIR/NAME.xml
 * holds (NULL when the caller writes it afterwards). Returns the domain (new ref) and sets
 * *@updated; on a name/uuid conflict returns NULL and @error.
 */
static BerthDomain *
registry_put(BerthRegistry *reg, BerthDomainDef *def, gboolean had_uuid, gboolean *updated,
             GError **error)
{
    BerthDomain *dom;
    BerthDomain *other;
    g_autofree char *xml = NULL;

    g_mutex_lock(&reg->lock);
    dom = g_hash_table_lookup(reg->by_name, def->name);
    if (dom && !had_uuid) {
        g_free(def->uuid);
        def->uuid = g_strdup(dom->uuid);
    }
    if (dom && g_ascii_strcasecmp(dom->uuid, def->uuid) != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS,
                    "domain '%s' already exists with uuid %s", def->name, dom->uuid);
        g_mutex_unlock(&reg->lock);
        berth_domain_def_free(def);
        return NULL;
    }
    other = find_uuid_locked(reg, def->uuid);
    if (other && other != dom) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_EXISTS,
                    "uuid %s already belongs to domain '%s'", def->uuid, other->name);
        g_mutex_unlock(&reg->lock);
        berth_domain_def_free(def);
        return NULL;
    }
    xml = berth_domain_def_format(def);
    if (!dom) {
        dom = domain_new(reg, def, g_steal_pointer(&xml));
        dom->persistent = TRUE;
        g_hash_table_insert(reg->by_name, dom->name, dom);
        *updated = FALSE;
        berth_domain_ref(dom);
        g_mutex_unlock(&reg->lock);
        return dom;
    }
    berth_domain_ref(dom);
    g_mutex_unlock(&reg->lock);

    *updated = TRUE;
    g_mutex_lock(&dom->lock);
    dom->persistent = TRUE;
    if (state_is_active(dom->state) &&
        g_str_equal(dom->inactive_xml ? dom->inactive_xml : dom->xml, xml)) {
        /* Same definition as the live one: nothing waits for the next start. */
        berth_domain_def_free(def);
        berth_domain_def_free(dom->next);
        g_free(dom->next_xml);
        dom->next = NULL;
        dom->next_xml = NULL;
    } else if (state_is_active(dom->state)) {
        berth_domain_def_free(dom->next);
        g_free(dom->next_xml);
        dom->next = def;
        dom->next_xml = g_steal_pointer(&xml);
    } else {
        berth_domain_def_free(dom->def);
        g_free(dom->xml);
        dom->def = def;
        dom->xml = g_steal_pointer(&xml);
    }
    g_mutex_unlock(&dom->lock);
    return dom;
}

static void
set_file_text(BerthDomain *dom, const char *text)
{
    g_mutex_lock(&dom->lock);
    g_free(dom->file_text);
    dom->file_text = g_strdup(text);
    g_mutex_unlock(&dom->lock);
}

BerthDomain *
berth_registry_define(BerthRegistry *reg, const char *xml, gsize len, guint flags,
                      GError **error)
{
    BerthDomainDef *def = berth_domain_def_parse(xml, len, flags, error);

    if (!def) {
        return NULL;
    }
    return berth_registry_define_parsed(reg, def, xml, len, error);
}

BerthDomain *
berth_registry_define_parsed(BerthRegistry *reg, BerthDomainDef *def, const char *xml,
                             gsize len, GError **error)
{
    BerthDomain *dom;
    gboolean updated = FALSE;
    g_autofree char *path = NULL;
    g_autofree char *text = NULL;
    g_autofree char *detail = NULL;

    dom = registry_put(reg, def, xml_has_uuid(xml, len), &updated, error);
    if (!dom) {
        return NULL;
    }
    /* The file gets the canonical form of what was defined (with its uuid). */
    g_mutex_lock(&dom->lock);
    text = g_strdup(dom->next_xml      ? dom->next_xml
                    : dom->inactive_xml ? dom->inactive_xml
                                        : dom->xml);
    g_mutex_unlock(&dom->lock);
    path = g_strdup_printf("%s/%s.xml", reg->domains_dir, dom->name);
    if (!berth_state_write(path, text, strlen(text), 0600, error)) {
        if (!updated) {
            registry_remove(reg, dom);
        }
        berth_domain_unref(dom);
        return NULL;
    }
    set_file_text(dom, text);
    detail = g_strdup_printf("{\"updated\":%s}", updated ? "true" : "false");
    publish(reg, dom->name, dom->uuid, "domain-defined", detail);
    return dom;
}

gboolean
berth_registry_undefine(BerthRegistry *reg, const char *name, GError **error)
{
    g_autoptr(BerthDomain) dom = berth_registry_lookup(reg, name, error);
    g_autofree char *path = NULL;

    if (!dom) {
        return FALSE;
    }
    if (berth_domain_is_active(dom)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "domain '%s' is active: destroy it before undefining it", name);
        return FALSE;
    }
    path = g_strdup_printf("%s/%s.xml", reg->domains_dir, name);
    if (!berth_state_remove(path, error)) {
        return FALSE;
    }
    berth_state_remove(dom->autostart, NULL);
    registry_remove(reg, dom);
    publish(reg, dom->name, dom->uuid, "domain-undefined", "{\"transient\":false}");
    return TRUE;
}

/* Restores domains that were active when berthd stopped, from STATUS_DIR/NAME.json. */
static void
load_status(BerthRegistry *reg, GPtrArray *reconnect)
{
    g_autoptr(GDir) dir = g_dir_open(reg->status_dir, 0, NULL);
    const char *entry;

    while (dir && (entry = g_dir_read_name(dir))) {
        g_autofree char *path = NULL;
        g_autofree char *text = NULL;
        g_autoptr(GError) error = NULL;
        char errbuf[256];
        yajl_val root;
        const char *p_xml[] = { "xml", NULL };
        const char *p_state[] = { "state", NULL };
        const char *p_reason[] = { "reason", NULL };
        const char *p_persistent[] = { "persistent", NULL };
        const char *p_plugins[] = { "plugins", NULL };
        const char *p_inactive[] = { "inactive_xml", NULL };
        yajl_val v_inactive;
        BerthDomainDef *inactive = NULL;
        yajl_val v_xml;
        yajl_val v_state;
        yajl_val v_reason;
        yajl_val v_persistent;
        yajl_val v_plugins;
        const char *xml_text;
        BerthDomainState state;
        BerthDomainDef *def;
        BerthDomain *dom;
        gboolean updated;

        if (!g_str_has_suffix(entry, ".json") || entry[0] == '.') {
            continue;
        }
        path = g_build_filename(reg->status_dir, entry, NULL);
        if (!g_file_get_contents(path, &text, NULL, &error)) {
            g_warning("cannot read live status '%s': %s", path, error->message);
            continue;
        }
        root = yajl_tree_parse(text, errbuf, sizeof(errbuf));
        v_xml = root ? yajl_tree_get(root, p_xml, yajl_t_string) : NULL;
        v_state = root ? yajl_tree_get(root, p_state, yajl_t_string) : NULL;
        v_reason = root ? yajl_tree_get(root, p_reason, yajl_t_string) : NULL;
        if (!v_xml || !v_state || !YAJL_GET_STRING(v_state) ||
            !berth_domain_state_from_name(YAJL_GET_STRING(v_state), &state)) {
            g_warning("live status '%s' is not valid: ignored", path);
            yajl_tree_free(root);
            continue;
        }
        xml_text = YAJL_GET_STRING(v_xml) ? YAJL_GET_STRING(v_xml) : "";
        def = berth_domain_def_parse(xml_text, strlen(xml_text),
                                     BERTH_XML_PARSE_IGNORE_UNSUPPORTED | BERTH_XML_PARSE_LIVE,
                                     &error);
        if (!def) {
            g_warning("live status '%s': %s", path, error->message);
            yajl_tree_free(root);
            continue;
        }
        v_inactive = yajl_tree_get(root, p_inactive, yajl_t_string);
        if (v_inactive && YAJL_GET_STRING(v_inactive)) {
            const char *t = YAJL_GET_STRING(v_inactive);

            inactive = berth_domain_def_parse(t, strlen(t), BERTH_XML_PARSE_IGNORE_UNSUPPORTED,
                                              &error);
            if (!inactive) {
                g_warning("live status '%s': inactive definition: %s", path, error->message);
                g_clear_error(&error);
            }
        }
        dom = registry_put(reg, def, TRUE, &updated, &error);
        if (!dom) {
            g_warning("live status '%s': %s", path, error->message);
            berth_domain_def_free(inactive);
            yajl_tree_free(root);
            continue;
        }
        v_persistent = yajl_tree_get(root, p_persistent, yajl_t_any);
        v_plugins = yajl_tree_get(root, p_plugins, yajl_t_object);
        g_mutex_lock(&dom->lock);
        if (inactive) {
            berth_domain_def_free(dom->inactive);
            g_free(dom->inactive_xml);
            dom->inactive_xml = g_strdup(YAJL_GET_STRING(v_inactive));
            dom->inactive = inactive;
        }
        dom->persistent = v_persistent && YAJL_IS_TRUE(v_persistent);
        dom->state = state;
        dom->reason = v_reason && YAJL_GET_STRING(v_reason)
                          ? reason_from_name(state, YAJL_GET_STRING(v_reason))
                          : 0;
        for (gsize i = 0; v_plugins && i < v_plugins->u.object.len; i++) {
            yajl_val pv = v_plugins->u.object.values[i];
            if (YAJL_IS_STRING(pv)) {
                g_hash_table_insert(dom->plugin_status,
                                    g_strdup(v_plugins->u.object.keys[i]),
                                    g_strdup(YAJL_GET_STRING(pv)));
            }
        }
        g_mutex_unlock(&dom->lock);
        if (reconnect) {
            g_ptr_array_add(reconnect, g_strdup(dom->name));
        }
        berth_domain_unref(dom);
        yajl_tree_free(root);
    }
}

void
berth_registry_load(BerthRegistry *reg, GPtrArray *reconnect)
{
    g_autoptr(GDir) dir = NULL;
    g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    g_autoptr(GError) error = NULL;
    g_autoptr(GPtrArray) all = NULL;
    const char *entry;

    if (!reg->status_loaded) {
        reg->status_loaded = TRUE;
        load_status(reg, reconnect);
    }
    dir = g_dir_open(reg->domains_dir, 0, &error);
    if (!dir) {
        g_warning("cannot read the domains directory: %s", error->message);
        return;
    }
    while ((entry = g_dir_read_name(dir))) {
        g_autofree char *path = NULL;
        g_autofree char *text = NULL;
        g_autofree char *name = NULL;
        g_autoptr(GError) err = NULL;
        g_autoptr(BerthDomain) old = NULL;
        BerthDomainDef *def;
        BerthDomain *dom;
        gsize len = 0;
        gboolean updated = FALSE;
        gboolean same;

        if (!g_str_has_suffix(entry, ".xml") || entry[0] == '.') {
            continue;
        }
        name = g_strndup(entry, strlen(entry) - 4);
        path = g_build_filename(reg->domains_dir, entry, NULL);
        if (!g_file_get_contents(path, &text, &len, &err)) {
            g_warning("cannot read domain file '%s': %s", path, err->message);
            continue;
        }
        g_hash_table_add(seen, g_strdup(name));
        old = berth_registry_lookup(reg, name, NULL);
        if (old) {
            g_mutex_lock(&old->lock);
            same = old->file_text && g_str_equal(old->file_text, text);
            g_mutex_unlock(&old->lock);
            if (same) {
                continue;
            }
        }
        if (len > BERTH_DOMAIN_XML_MAX) {
            g_warning("domain file '%s' is larger than %d bytes: ignored", path,
                      BERTH_DOMAIN_XML_MAX);
            continue;
        }
        def = berth_domain_def_parse(text, len, 0, &err);
        if (!def) {
            g_warning("domain file '%s': %s", path, err->message);
            continue;
        }
        if (!g_str_equal(def->name, name)) {
            g_warning("domain file '%s' defines domain '%s': the file must be named '%s.xml'",
                      path, def->name, def->name);
            berth_domain_def_free(def);
            continue;
        }
        dom = registry_put(reg, def, xml_has_uuid(text, len), &updated, &err);
        if (!dom) {
            g_warning("domain file '%s': %s", path, err->message);
            continue;
        }
        set_file_text(dom, text);
        publish(reg, dom->name, dom->uuid, "domain-defined",
                updated ? "{\"updated\":true}" : "{\"updated\":false}");
        berth_domain_unref(dom);
    }

    /* Files that are gone: their domains go too, or become transient while they run. */
    all = berth_registry_list(reg);
    for (guint i = 0; i < all->len; i++) {
        BerthDomain *dom = all->pdata[i];
        gboolean active;
        gboolean persistent;

        if (g_hash_table_contains(seen, dom->name)) {
            continue;
        }
        g_mutex_lock(&dom->lock);
        persistent = dom->persistent;
        active = state_is_active(dom->state);
        if (persistent) {
            dom->persistent = FALSE;
            g_free(dom->file_text);
            dom->file_text = NULL;
            berth_domain_def_free(dom->next);
            dom->next = NULL;
            g_free(dom->next_xml);
            dom->next_xml = NULL;
        }
        g_mutex_unlock(&dom->lock);
        if (persistent && !active) {
            registry_remove(reg, dom);
            publish(reg, dom->name, dom->uuid, "domain-undefined", "{\"transient\":false}");
        }
    }
}
