/* Guest memory as the vhost-user front-end shares it: mapped regions and bounded address lookups. */
#pragma once

#include <glib.h>
#include <stdint.h>

/* A table holds at most this many regions (GET_MAX_MEM_SLOTS answers it). */
#define VFS_MEM_MAX_SLOTS 32

/* One region as the front-end describes it (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG). */
typedef struct {
    guint64 gpa;         /* guest physical address of the first byte */
    guint64 size;        /* bytes */
    guint64 uva;         /* the front-end's own virtual address of the first byte */
    guint64 mmap_offset; /* where the region starts in the fd */
} VfsMemRegionDesc;

/*
 * An immutable, reference-counted table of mapped regions. A new table replaces the old one on
 * every change; a request in flight keeps a reference to the table its buffers point into, so a
 * region is unmapped only when the last request that used it is done.
 */
typedef struct VfsGuestMem VfsGuestMem;

VfsGuestMem *vfs_guest_mem_new(void);
VfsGuestMem *vfs_guest_mem_ref(VfsGuestMem *mem);
void vfs_guest_mem_unref(VfsGuestMem *mem);

/*
 * Returns a new table: @old (may be NULL) plus the region @desc mapped from @fd. Refuses empty,
 * overflowing or overlapping regions and a region larger than its file. Does not take @fd.
 */
VfsGuestMem *vfs_guest_mem_add(const VfsGuestMem *old, const VfsMemRegionDesc *desc, int fd,
                               GError **error);
/* Returns a new table without the region that matches @desc's gpa, size and uva. */
VfsGuestMem *vfs_guest_mem_remove(const VfsGuestMem *old, const VfsMemRegionDesc *desc,
                                  GError **error);

/*
 * Translates a guest physical address. Returns the host address of @gpa and sets *@contig to the
 * number of bytes, at most @len, that follow it inside the same region; NULL if @gpa is in no
 * region. A buffer that spans two adjacent regions is translated piece by piece.
 */
void *vfs_guest_mem_gpa(const VfsGuestMem *mem, guint64 gpa, guint64 len, guint64 *contig);
/* Translates a front-end virtual address range that must lie inside one region; else NULL. */
void *vfs_guest_mem_uva(const VfsGuestMem *mem, guint64 uva, guint64 len);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(VfsGuestMem, vfs_guest_mem_unref)
