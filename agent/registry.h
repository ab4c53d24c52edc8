/* The registry: every domain berthd knows, its definition, runtime state and live status. */
#pragma once

#include <berth/domain.h>

#include "event-bus.h"

typedef struct BerthRegistry BerthRegistry;
typedef struct BerthDomain BerthDomain;

/* A snapshot of a domain's runtime state (a copy: safe to use without a lock). */
typedef struct {
    BerthDomainState state;
    int reason;
    gboolean persistent; /* has a file in the domains dir */
    gboolean autostart;  /* DOMAINS_DIR/autostart/NAME exists */
    gboolean has_next;   /* the file changed while active: takes effect at next start */
} BerthDomainInfo;

/* @domains_dir holds NAME.xml definitions (created 0700); @status_dir holds the live status
 * NAME.json of active domains; events go to @bus. */
BerthRegistry *berth_registry_new(const char *domains_dir, const char *status_dir,
                                  BerthBus *bus, GError **error);
void berth_registry_free(BerthRegistry *reg);

/*
 * Reads the domains dir: defines new NAME.xml files, records changed ones (for the next start
 * when active, at once otherwise), undefines removed ones (running ones become transient and
 * go away when they stop). Reads the live status of every domain that was active when berthd
 * stopped and restores its state (the hypervisor plugin then reconnects). A bad file is logged
 * and skipped, never fatal. Fills @reconnect (may be NULL) with the names of domains whose
 * status says they were active.
 */
void berth_registry_load(BerthRegistry *reg, GPtrArray *reconnect);

/* Parses, validates and writes DOMAINS_DIR/NAME.xml atomically; publishes domain-defined
 * (detail {"updated": bool}). Redefining an active domain stores the definition for its next
 * start. A uuid that belongs to another name, or a name with another uuid, is refused. */
BerthDomain *berth_registry_define(BerthRegistry *reg, const char *xml, gsize len, guint flags,
                                   GError **error);
/* The same for a definition the caller parsed from @xml (taken over, also on failure); @xml is
 * only read to see whether it names a uuid. */
BerthDomain *berth_registry_define_parsed(BerthRegistry *reg, BerthDomainDef *def,
                                          const char *xml, gsize len, GError **error);
/* Removes the file; refused with invalid-state while the domain is active. */
gboolean berth_registry_undefine(BerthRegistry *reg, const char *name, GError **error);

/* A new reference, or NULL and a no-such-domain error. */
BerthDomain *berth_registry_lookup(BerthRegistry *reg, const char *name, GError **error);
/* References to every domain, sorted by name. */
GPtrArray *berth_registry_list(BerthRegistry *reg);

BerthDomain *berth_domain_ref(BerthDomain *dom);
void berth_domain_unref(BerthDomain *dom);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthDomain, berth_domain_unref)
const char *berth_domain_get_name(BerthDomain *dom);
const char *berth_domain_get_uuid(BerthDomain *dom);
/* The definition in effect (the live one while active): a new copy, free it. */
BerthDomainDef *berth_domain_get_def(BerthDomain *dom);
/* The definition as XML (persistent one, or the live one while active). */
char *berth_domain_get_xml(BerthDomain *dom);
BerthDomainInfo berth_domain_get_info(BerthDomain *dom);
gboolean berth_domain_is_active(BerthDomain *dom);

/* Sets state and reason, writes the live status (or removes it when inactive), publishes the
 * lifecycle event for the change (nothing when unchanged). Starting from inactive makes the
 * next definition current first. */
void berth_registry_set_state(BerthRegistry *reg, BerthDomain *dom, BerthDomainState state,
                              int reason);
/* Before a start: makes the pending definition current, remembers it as the one to go back
 * to at stop, gives the live definition its runtime aliases (virtio-disk0, net0, ...) and
 * returns a copy of it. A no-op on an active domain (returns the live definition). */
BerthDomainDef *berth_registry_prepare_start(BerthRegistry *reg, BerthDomain *dom);
/* After a start that failed before the domain became active: back to the inactive definition. */
void berth_registry_abort_start(BerthRegistry *reg, BerthDomain *dom);

/* Hotplug. check_device gives @dev its alias in the live definition and checks that it fits
 * (unique alias, target, MAC, tag, addresses) by adding @probe (a second parse of the same
 * XML) to a copy. add_device adds @dev (its struct moves into the definition), rewrites the
 * live status and publishes device-added; remove_device drops the device with @alias and
 * publishes device-removed (FALSE when it has no such device). */
gboolean berth_registry_check_device(BerthRegistry *reg, BerthDomain *dom, BerthDeviceDef *dev,
                                     BerthDeviceDef *probe, GError **error);
gboolean berth_registry_add_device(BerthRegistry *reg, BerthDomain *dom, BerthDeviceDef *dev,
                                   GError **error);
gboolean berth_registry_remove_device(BerthRegistry *reg, BerthDomain *dom, const char *alias);
/* TRUE when the live (or inactive) definition has a device with @alias. */
gboolean berth_domain_has_device(BerthDomain *dom, const char *alias);

/* A plugin's live status of an active domain (JSON object text, NULL removes). */
gboolean berth_registry_set_plugin_status(BerthRegistry *reg, BerthDomain *dom,
                                          const char *plugin, const char *status_json,
                                          GError **error);
char *berth_registry_get_plugin_status(BerthRegistry *reg, BerthDomain *dom,
                                       const char *plugin);

/* Names for the API: "running", "shutoff"...; reason names per state ("booted", "destroyed"). */
const char *berth_domain_state_name(BerthDomainState state);
gboolean berth_domain_state_from_name(const char *name, BerthDomainState *state);
const char *berth_domain_reason_name(BerthDomainState state, int reason);
