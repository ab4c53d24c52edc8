/* The inode table: FUSE node ids mapped to O_PATH fds inside the shared directory. */
#include "inode.h"

#include <linux/fuse.h>
#include <unistd.h>

typedef struct {
    VfsInode pub;
    guint64 nlookup; /* lookups the guest holds; 0 means unlinked from the table */
    guint refs;      /* requests in flight that use the fd */
} Node;

typedef struct {
    dev_t dev;
    ino_t ino;
} FileKey;

struct VfsInodeTable {
    /*
     * Protects by_id, by_file, next_id and every Node's nlookup and refs. Held only for
     * hash-table work, never across a syscall other than the close of a dead node's fd.
     */
    GMutex lock;
    GHashTable *by_id;   /* guint64 nodeid -> Node, owns the nodes */
    GHashTable *by_file; /* FileKey (inside the Node) -> Node */
    guint64 next_id;
    gint *open_fds;
};

static guint file_key_hash(gconstpointer p)
{
    const FileKey *k = p;
    guint64 v = (guint64)k->ino * 0x9e3779b97f4a7c15ull ^ (guint64)k->dev;

    return (guint)(v ^ (v >> 32));
}

static gboolean file_key_equal(gconstpointer a, gconstpointer b)
{
    const FileKey *x = a;
    const FileKey *y = b;

    return x->dev == y->dev && x->ino == y->ino;
}

static guint id_hash(gconstpointer p)
{
    guint64 v = *(const guint64 *)p;

    return (guint)(v ^ (v >> 32));
}

static gboolean id_equal(gconstpointer a, gconstpointer b)
{
    return *(const guint64 *)a == *(const guint64 *)b;
}

/* The FileKey lives at the start of a heap copy kept beside the node. */
typedef struct {
    FileKey key;
    Node node;
} Entry;

static void node_close(VfsInodeTable *t, Node *n)
{
    close(n->pub.fd);
    g_atomic_int_add(t->open_fds, -1);
    g_free((Entry *)((char *)n - offsetof(Entry, node)));
}

static Node *node_new(VfsInodeTable *t, int fd, const struct stat *st, guint64 id)
{
    Entry *e = g_new0(Entry, 1);

    e->key.dev = st->st_dev;
    e->key.ino = st->st_ino;
    e->node.pub.nodeid = id;
    e->node.pub.fd = fd;
    e->node.pub.dev = st->st_dev;
    e->node.pub.ino = st->st_ino;
    e->node.pub.type = st->st_mode & S_IFMT;
    g_hash_table_insert(t->by_id, &e->node.pub.nodeid, &e->node);
    g_hash_table_insert(t->by_file, &e->key, &e->node);
    return &e->node;
}

/* Called with the lock held when a node's lookups reach 0. */
static void node_unlink(VfsInodeTable *t, Node *n)
{
    Entry *e = (Entry *)((char *)n - offsetof(Entry, node));

    g_hash_table_remove(t->by_file, &e->key);
    g_hash_table_remove(t->by_id, &n->pub.nodeid);
    if (n->refs == 0) {
        node_close(t, n);
    }
}

VfsInodeTable *vfs_inode_table_new(int root_fd, const struct stat *st, gint *open_fds)
{
    VfsInodeTable *t = g_new0(VfsInodeTable, 1);

    g_mutex_init(&t->lock);
    t->by_id = g_hash_table_new(id_hash, id_equal);
    t->by_file = g_hash_table_new(file_key_hash, file_key_equal);
    t->open_fds = open_fds;
    Node *root = node_new(t, root_fd, st, FUSE_ROOT_ID);
    root->nlookup = 1;
    t->next_id = FUSE_ROOT_ID + 1;
    return t;
}

void vfs_inode_table_free(VfsInodeTable *t)
{
    if (t == NULL) {
        return;
    }
    GHashTableIter it;
    gpointer v;
    g_autoptr(GPtrArray) all = g_ptr_array_new();

    g_hash_table_iter_init(&it, t->by_id);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        g_ptr_array_add(all, v);
    }
    g_hash_table_remove_all(t->by_file);
    g_hash_table_remove_all(t->by_id);
    for (guint i = 0; i < all->len; i++) {
        node_close(t, all->pdata[i]);
    }
    g_hash_table_unref(t->by_id);
    g_hash_table_unref(t->by_file);
    g_mutex_clear(&t->lock);
    g_free(t);
}

VfsInode *vfs_inode_get(VfsInodeTable *t, guint64 nodeid)
{
    g_mutex_lock(&t->lock);
    Node *n = g_hash_table_lookup(t->by_id, &nodeid);
    if (n != NULL) {
        n->refs++;
    }
    g_mutex_unlock(&t->lock);
    return n != NULL ? &n->pub : NULL;
}

void vfs_inode_put(VfsInodeTable *t, VfsInode *inode)
{
    if (inode == NULL) {
        return;
    }
    Node *n = (Node *)inode;

    g_mutex_lock(&t->lock);
    g_assert(n->refs > 0);
    n->refs--;
    if (n->refs == 0 && n->nlookup == 0) {
        node_close(t, n);
    }
    g_mutex_unlock(&t->lock);
}

VfsInode *vfs_inode_lookup(VfsInodeTable *t, int fd, const struct stat *st)
{
    FileKey key = { st->st_dev, st->st_ino };

    g_mutex_lock(&t->lock);
    Node *n = g_hash_table_lookup(t->by_file, &key);
    if (n != NULL) {
        /* Keep the fd the table has: the guest already knows this node id. */
        close(fd);
        g_atomic_int_add(t->open_fds, -1);
    } else {
        n = node_new(t, fd, st, t->next_id++);
    }
    if (n->pub.nodeid != FUSE_ROOT_ID) {
        n->nlookup++;
    }
    n->refs++;
    g_mutex_unlock(&t->lock);
    return &n->pub;
}

void vfs_inode_forget(VfsInodeTable *t, guint64 nodeid, guint64 nlookup)
{
    if (nodeid == FUSE_ROOT_ID) {
        return;
    }
    g_mutex_lock(&t->lock);
    Node *n = g_hash_table_lookup(t->by_id, &nodeid);
    if (n != NULL) {
        n->nlookup -= MIN(nlookup, n->nlookup);
        if (n->nlookup == 0) {
            node_unlink(t, n);
        }
    }
    g_mutex_unlock(&t->lock);
}

void vfs_inode_table_reset(VfsInodeTable *t)
{
    g_autoptr(GPtrArray) doomed = g_ptr_array_new();
    GHashTableIter it;
    gpointer v;

    g_mutex_lock(&t->lock);
    g_hash_table_iter_init(&it, t->by_id);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
        if (((Node *)v)->pub.nodeid != FUSE_ROOT_ID) {
            g_ptr_array_add(doomed, v);
        }
    }
    for (guint i = 0; i < doomed->len; i++) {
        Node *n = doomed->pdata[i];
        n->nlookup = 0;
        node_unlink(t, n);
    }
    g_mutex_unlock(&t->lock);
}

guint vfs_inode_table_size(VfsInodeTable *t)
{
    g_mutex_lock(&t->lock);
    guint size = g_hash_table_size(t->by_id);
    g_mutex_unlock(&t->lock);
    return size;
}
