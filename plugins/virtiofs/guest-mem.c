/* Guest memory regions: mapping the front-end's fds and bounds-checked address translation. */
#include "guest-mem.h"

#include <errno.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* One mmap of a front-end fd; shared by every table that still lists the region. */
typedef struct {
    gint refcount;
    void *addr;
    size_t len;
} VfsMemMap;

typedef struct {
    VfsMemRegionDesc desc;
    VfsMemMap *map;
    guint8 *host; /* the region's first byte: map->addr + mmap_offset */
} VfsMemRegion;

struct VfsGuestMem {
    gint refcount;
    guint n;
    VfsMemRegion regions[VFS_MEM_MAX_SLOTS];
};

static VfsMemMap *mem_map_ref(VfsMemMap *map)
{
    g_atomic_int_inc(&map->refcount);
    return map;
}

static void mem_map_unref(VfsMemMap *map)
{
    if (map && g_atomic_int_dec_and_test(&map->refcount)) {
        munmap(map->addr, map->len);
        g_free(map);
    }
}

VfsGuestMem *vfs_guest_mem_new(void)
{
    VfsGuestMem *mem = g_new0(VfsGuestMem, 1);
    mem->refcount = 1;
    return mem;
}

VfsGuestMem *vfs_guest_mem_ref(VfsGuestMem *mem)
{
    g_atomic_int_inc(&mem->refcount);
    return mem;
}

void vfs_guest_mem_unref(VfsGuestMem *mem)
{
    if (!mem || !g_atomic_int_dec_and_test(&mem->refcount)) {
        return;
    }
    for (guint i = 0; i < mem->n; i++) {
        mem_map_unref(mem->regions[i].map);
    }
    g_free(mem);
}

static VfsGuestMem *mem_copy(const VfsGuestMem *old)
{
    VfsGuestMem *mem = vfs_guest_mem_new();
    if (old) {
        mem->n = old->n;
        memcpy(mem->regions, old->regions, sizeof(old->regions[0]) * old->n);
        for (guint i = 0; i < mem->n; i++) {
            mem_map_ref(mem->regions[i].map);
        }
    }
    return mem;
}

static gboolean ranges_overlap(guint64 a, guint64 alen, guint64 b, guint64 blen)
{
    /* Both ranges are known not to wrap. */
    return a < b + blen && b < a + alen;
}

VfsGuestMem *vfs_guest_mem_add(const VfsGuestMem *old, const VfsMemRegionDesc *d, int fd,
                               GError **error)
{
    struct stat st;
    guint64 end;

    if (old && old->n >= VFS_MEM_MAX_SLOTS) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NO_SPACE,
                    "guest memory already has the maximum of %u regions", VFS_MEM_MAX_SLOTS);
        return NULL;
    }
    if (d->size == 0 || d->size > G_MAXSIZE || d->gpa + d->size < d->gpa ||
        d->uva + d->size < d->uva || d->mmap_offset + d->size < d->mmap_offset ||
        d->mmap_offset + d->size > G_MAXSIZE) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "guest memory region at 0x%" G_GINT64_MODIFIER "x of 0x%"
                    G_GINT64_MODIFIER "x bytes is empty or overflows", d->gpa, d->size);
        return NULL;
    }
    end = d->mmap_offset + d->size;
    for (guint i = 0; old && i < old->n; i++) {
        const VfsMemRegionDesc *o = &old->regions[i].desc;
        if (ranges_overlap(d->gpa, d->size, o->gpa, o->size) ||
            ranges_overlap(d->uva, d->size, o->uva, o->size)) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                        "guest memory region at 0x%" G_GINT64_MODIFIER
                        "x overlaps the region at 0x%" G_GINT64_MODIFIER "x", d->gpa, o->gpa);
            return NULL;
        }
    }
    if (fstat(fd, &st) < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot stat the guest memory fd: %s", g_strerror(errno));
        return NULL;
    }
    /* Touching a page past the end of a file raises SIGBUS: refuse such a region up front. */
    if (S_ISREG(st.st_mode) && (guint64)st.st_size < end) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_ARGUMENT,
                    "guest memory region ends at offset 0x%" G_GINT64_MODIFIER
                    "x, past the end of its file (0x%" G_GINT64_MODIFIER "x)",
                    end, (guint64)st.st_size);
        return NULL;
    }
    /* Map from offset 0: mmap_offset need not be page aligned. */
    void *addr = mmap(NULL, end, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    if (addr == MAP_FAILED) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot map guest memory region at 0x%" G_GINT64_MODIFIER "x: %s", d->gpa,
                    g_strerror(errno));
        return NULL;
    }
    VfsMemMap *map = g_new0(VfsMemMap, 1);
    map->refcount = 1;
    map->addr = addr;
    map->len = end;

    VfsGuestMem *mem = mem_copy(old);
    VfsMemRegion *r = &mem->regions[mem->n++];
    r->desc = *d;
    r->map = map;
    r->host = (guint8 *)addr + d->mmap_offset;
    return mem;
}

VfsGuestMem *vfs_guest_mem_remove(const VfsGuestMem *old, const VfsMemRegionDesc *d,
                                  GError **error)
{
    for (guint i = 0; old && i < old->n; i++) {
        const VfsMemRegionDesc *o = &old->regions[i].desc;
        if (o->gpa == d->gpa && o->size == d->size && o->uva == d->uva) {
            VfsGuestMem *mem = mem_copy(old);
            mem_map_unref(mem->regions[i].map);
            memmove(&mem->regions[i], &mem->regions[i + 1],
                    sizeof(mem->regions[0]) * (mem->n - i - 1));
            mem->n--;
            return mem;
        }
    }
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                "no guest memory region at 0x%" G_GINT64_MODIFIER "x of 0x%" G_GINT64_MODIFIER
                "x bytes to remove", d->gpa, d->size);
    return NULL;
}

void *vfs_guest_mem_gpa(const VfsGuestMem *mem, guint64 gpa, guint64 len, guint64 *contig)
{
    for (guint i = 0; mem && i < mem->n; i++) {
        const VfsMemRegion *r = &mem->regions[i];
        /* Subtract first: gpa + len may wrap, gpa - r->desc.gpa cannot once gpa >= the base. */
        if (gpa >= r->desc.gpa && gpa - r->desc.gpa < r->desc.size) {
            guint64 off = gpa - r->desc.gpa;
            *contig = MIN(len, r->desc.size - off);
            return r->host + off;
        }
    }
    *contig = 0;
    return NULL;
}

void *vfs_guest_mem_uva(const VfsGuestMem *mem, guint64 uva, guint64 len)
{
    for (guint i = 0; mem && i < mem->n; i++) {
        const VfsMemRegion *r = &mem->regions[i];
        if (uva >= r->desc.uva && uva - r->desc.uva < r->desc.size &&
            len <= r->desc.size - (uva - r->desc.uva)) {
            return r->host + (uva - r->desc.uva);
        }
    }
    return NULL;
}
