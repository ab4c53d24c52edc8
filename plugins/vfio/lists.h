/* The vfio plugin's ownership lists: which device a domain uses (active) and which are
 * detached to vfio-pci but unused (inactive), persisted atomically in the state dir. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
    char *address;     /* canonical PCI address */
    char *domain;      /* active: the domain using it; inactive: NULL */
    gboolean managed;  /* active: managed='yes' (reattached when released) */
    char *orig_driver; /* the host driver it had before the detach, or NULL (none/unknown) */
} VfioEntry;

typedef struct VfioLists VfioLists;

/* Lists stored in @path (loaded when it exists). Not thread safe: the caller locks. */
VfioLists *vfio_lists_new(const char *path);
void vfio_lists_free(VfioLists *l);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfioLists, vfio_lists_free)

/* Reads the file; a missing file is two empty lists. BERTH_ERROR_INTERNAL when it cannot be
 * read or parsed (the lists are then left empty). */
gboolean vfio_lists_load(VfioLists *l, GError **error);
/* Writes the file atomically (temp file, fsync, rename, fsync of the directory). */
gboolean vfio_lists_save(VfioLists *l, GError **error);

/* Lookups return the list's own entry (valid until the next change) or NULL. */
const VfioEntry *vfio_lists_active(VfioLists *l, const char *address);
const VfioEntry *vfio_lists_inactive(VfioLists *l, const char *address);

/* Puts @address on the active list for @domain (off the inactive list). */
void vfio_lists_set_active(VfioLists *l, const char *address, const char *domain,
                           gboolean managed, const char *orig_driver);
/* Puts @address on the inactive list (off the active list). */
void vfio_lists_set_inactive(VfioLists *l, const char *address, const char *orig_driver);
/* Takes @address off both lists. */
void vfio_lists_remove(VfioLists *l, const char *address);

/* Calls @func(entry, @data) for every entry, active ones first. */
void vfio_lists_foreach(VfioLists *l, void (*func)(const VfioEntry *e, gpointer data),
                        gpointer data);

/* The lists as JSON text: {"active":[{address,domain,managed,driver}],"inactive":[...]},
 * entries sorted by address (the file's format, and what tests compare). */
char *vfio_lists_to_json(VfioLists *l);

G_END_DECLS
