/* The inode table: FUSE node ids mapped to O_PATH fds inside the shared directory. */
#pragma once

#include <glib.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef struct VfsInodeTable VfsInodeTable;

typedef struct {
    guint64 nodeid; /* never reused while the table lives, so a stale id finds nothing */
    int fd;         /* O_PATH | O_NOFOLLOW, owned by the table */
    dev_t dev;
    ino_t ino;
    mode_t type; /* S_IFMT bits; a file's type never changes */
} VfsInode;

/*
 * Takes @root_fd (an O_PATH fd of the shared directory) as node FUSE_ROOT_ID, which is never
 * forgotten. @open_fds counts the fds the table holds (atomically; shared with file handles).
 */
VfsInodeTable *vfs_inode_table_new(int root_fd, const struct stat *st, gint *open_fds);
/* Closes every inode fd. Callers make sure no request is in flight. */
void vfs_inode_table_free(VfsInodeTable *t);

/* The inode for @nodeid with a reference held for the caller, or NULL if unknown. */
VfsInode *vfs_inode_get(VfsInodeTable *t, guint64 nodeid);
/* Drops a reference from vfs_inode_get() or vfs_inode_lookup(); accepts NULL. */
void vfs_inode_put(VfsInodeTable *t, VfsInode *inode);

/*
 * Records one FUSE lookup of the file @fd (O_PATH, consumed: kept or closed) with @st.
 * A file already in the table (same dev and ino) gets its lookup count raised; otherwise a new
 * node is made. Returns the inode with a reference held for the caller.
 */
VfsInode *vfs_inode_lookup(VfsInodeTable *t, int fd, const struct stat *st);

/* FORGET: drops @nlookup lookups of @nodeid; unknown ids and the root are ignored. */
void vfs_inode_forget(VfsInodeTable *t, guint64 nodeid, guint64 nlookup);

/* DESTROY: forgets every node but the root. */
void vfs_inode_table_reset(VfsInodeTable *t);

/* Number of nodes known to the guest, the root included. */
guint vfs_inode_table_size(VfsInodeTable *t);
