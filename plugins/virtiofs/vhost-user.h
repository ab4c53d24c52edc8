/* The vhost-user wire protocol (backend side): messages, fds in ancillary data, the socket. */
#pragma once

#include <glib.h>
#include <stdint.h>

enum {
    VHOST_USER_GET_FEATURES = 1,
    VHOST_USER_SET_FEATURES = 2,
    VHOST_USER_SET_OWNER = 3,
    VHOST_USER_RESET_OWNER = 4,
    VHOST_USER_SET_MEM_TABLE = 5,
    VHOST_USER_SET_LOG_BASE = 6,
    VHOST_USER_SET_LOG_FD = 7,
    VHOST_USER_SET_VRING_NUM = 8,
    VHOST_USER_SET_VRING_ADDR = 9,
    VHOST_USER_SET_VRING_BASE = 10,
    VHOST_USER_GET_VRING_BASE = 11,
    VHOST_USER_SET_VRING_KICK = 12,
    VHOST_USER_SET_VRING_CALL = 13,
    VHOST_USER_SET_VRING_ERR = 14,
    VHOST_USER_GET_PROTOCOL_FEATURES = 15,
    VHOST_USER_SET_PROTOCOL_FEATURES = 16,
    VHOST_USER_GET_QUEUE_NUM = 17,
    VHOST_USER_SET_VRING_ENABLE = 18,
    VHOST_USER_GET_MAX_MEM_SLOTS = 36,
    VHOST_USER_ADD_MEM_REG = 37,
    VHOST_USER_REM_MEM_REG = 38,
};

#define VHOST_USER_VERSION 0x1u
#define VHOST_USER_VERSION_MASK 0x3u
#define VHOST_USER_REPLY_MASK (1u << 2)
#define VHOST_USER_NEED_REPLY_MASK (1u << 3)

#define VHOST_USER_F_PROTOCOL_FEATURES 30
#define VFS_VIRTIO_F_VERSION_1 32

#define VHOST_USER_PROTOCOL_F_MQ 0
#define VHOST_USER_PROTOCOL_F_REPLY_ACK 3
#define VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS 15

#define VHOST_USER_VRING_IDX_MASK 0xffu
#define VHOST_USER_VRING_NOFD_MASK (1u << 8)

#define VHOST_USER_MEM_TABLE_MAX 8 /* regions in one SET_MEM_TABLE; also the most fds a message carries */
#define VHOST_USER_MAX_FDS VHOST_USER_MEM_TABLE_MAX
#define VHOST_USER_MAX_PAYLOAD 4096 /* larger payloads are a protocol error */

typedef struct {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
} __attribute__((packed)) VhostUserHeader;

typedef struct {
    uint32_t index;
    uint32_t num;
} __attribute__((packed)) VhostUserVringState;

typedef struct {
    uint32_t index;
    uint32_t flags;
    uint64_t desc;
    uint64_t used;
    uint64_t avail;
    uint64_t log;
} __attribute__((packed)) VhostUserVringAddr;

typedef struct {
    uint64_t gpa;
    uint64_t size;
    uint64_t uva;
    uint64_t mmap_offset;
} __attribute__((packed)) VhostUserMemRegion;

typedef struct {
    uint32_t nregions;
    uint32_t padding;
    VhostUserMemRegion regions[VHOST_USER_MEM_TABLE_MAX];
} __attribute__((packed)) VhostUserMemTable;

typedef struct {
    uint64_t padding;
    VhostUserMemRegion region;
} __attribute__((packed)) VhostUserMemRegionMsg;

/* One message as received: header, payload (hdr.size bytes valid) and its fds. */
typedef struct {
    VhostUserHeader hdr;
    union {
        uint64_t u64;
        VhostUserVringState state;
        VhostUserVringAddr addr;
        VhostUserMemTable mem;
        VhostUserMemRegionMsg reg;
        uint8_t bytes[VHOST_USER_MAX_PAYLOAD];
    } payload;
    int fds[VHOST_USER_MAX_FDS];
    guint nfds;
} VhostUserMsg;

/* The request's name for messages ("SET_MEM_TABLE"), or "unknown". */
const char *vhost_user_request_name(uint32_t request);

/*
 * Reads one message. Returns 1 on a message, 0 on a clean end of stream before a header, -1 on
 * an error (@error set). A payload larger than VHOST_USER_MAX_PAYLOAD is an error: the stream
 * cannot be trusted after it. On 1 the fds that came with the message are in @msg (the caller
 * closes what it does not take with vhost_user_msg_close_fds); on -1 they are already closed.
 */
int vhost_user_msg_read(int sock, VhostUserMsg *msg, GError **error);
/* Closes every fd still held by @msg. */
void vhost_user_msg_close_fds(VhostUserMsg *msg);
/* Takes fd @i out of @msg (the caller owns it now). */
int vhost_user_msg_steal_fd(VhostUserMsg *msg, guint i);

/* Sends a reply to @request with @size bytes of @payload. */
gboolean vhost_user_reply(int sock, uint32_t request, const void *payload, uint32_t size,
                          GError **error);

/*
 * Listens on @path: takes the lock file "@path.lock" (refusing when another instance holds
 * it), replaces a stale socket, optionally gives it to @group (mode 0660). Returns the
 * listening fd and the held lock fd in *@lock_fd.
 */
int vhost_user_listen(const char *path, const char *group, int *lock_fd, GError **error);
/* Removes the socket and its lock file, and closes @listen_fd and @lock_fd. */
void vhost_user_unlisten(const char *path, int listen_fd, int lock_fd);
/* Accepts one front-end on a listening socket; EINTR is an error too. */
int vhost_user_accept(int listen_fd, GError **error);
