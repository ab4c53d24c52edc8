/* vhost-user messages over a unix socket: bounded reads, fds in ancillary data, the listener. */
#include "vhost-user.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

const char *vhost_user_request_name(uint32_t request)
{
    static const char *const names[] = {
        [VHOST_USER_GET_FEATURES] = "GET_FEATURES",
        [VHOST_USER_SET_FEATURES] = "SET_FEATURES",
        [VHOST_USER_SET_OWNER] = "SET_OWNER",
        [VHOST_USER_RESET_OWNER] = "RESET_OWNER",
        [VHOST_USER_SET_MEM_TABLE] = "SET_MEM_TABLE",
        [VHOST_USER_SET_LOG_BASE] = "SET_LOG_BASE",
        [VHOST_USER_SET_LOG_FD] = "SET_LOG_FD",
        [VHOST_USER_SET_VRING_NUM] = "SET_VRING_NUM",
        [VHOST_USER_SET_VRING_ADDR] = "SET_VRING_ADDR",
        [VHOST_USER_SET_VRING_BASE] = "SET_VRING_BASE",
        [VHOST_USER_GET_VRING_BASE] = "GET_VRING_BASE",
        [VHOST_USER_SET_VRING_KICK] = "SET_VRING_KICK",
        [VHOST_USER_SET_VRING_CALL] = "SET_VRING_CALL",
        [VHOST_USER_SET_VRING_ERR] = "SET_VRING_ERR",
        [VHOST_USER_GET_PROTOCOL_FEATURES] = "GET_PROTOCOL_FEATURES",
        [VHOST_USER_SET_PROTOCOL_FEATURES] = "SET_PROTOCOL_FEATURES",
        [VHOST_USER_GET_QUEUE_NUM] = "GET_QUEUE_NUM",
        [VHOST_USER_SET_VRING_ENABLE] = "SET_VRING_ENABLE",
        [VHOST_USER_GET_MAX_MEM_SLOTS] = "GET_MAX_MEM_SLOTS",
        [VHOST_USER_ADD_MEM_REG] = "ADD_MEM_REG",
        [VHOST_USER_REM_MEM_REG] = "REM_MEM_REG",
    };
    if (request < G_N_ELEMENTS(names) && names[request]) {
        return names[request];
    }
    return "unknown";
}

void vhost_user_msg_close_fds(VhostUserMsg *msg)
{
    for (guint i = 0; i < msg->nfds; i++) {
        if (msg->fds[i] >= 0) {
            close(msg->fds[i]);
        }
    }
    msg->nfds = 0;
}

int vhost_user_msg_steal_fd(VhostUserMsg *msg, guint i)
{
    int fd = msg->fds[i];
    msg->fds[i] = -1;
    return fd;
}

/* Reads exactly @len bytes; FALSE with @error on an error or an early end of stream. */
static gboolean read_full(int sock, void *buf, size_t len, GError **error)
{
    guint8 *p = buf;
    while (len > 0) {
        ssize_t n = recv(sock, p, len, 0);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                        "cannot read a vhost-user message: %s", g_strerror(errno));
            return FALSE;
        }
        if (n == 0) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                        "the front-end closed the connection inside a message");
            return FALSE;
        }
        p += n;
        len -= n;
    }
    return TRUE;
}

/* Collects the fds of every SCM_RIGHTS block; FALSE when there were more than fit. */
static gboolean take_fds(struct msghdr *mh, VhostUserMsg *msg)
{
    gboolean ok = !(mh->msg_flags & MSG_CTRUNC);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            continue;
        }
        guint n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (guint i = 0; i < n; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (msg->nfds < VHOST_USER_MAX_FDS) {
                msg->fds[msg->nfds++] = fd;
            } else {
                close(fd);
                ok = FALSE;
            }
        }
    }
    return ok;
}

int vhost_user_msg_read(int sock, VhostUserMsg *msg, GError **error)
{
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * VHOST_USER_MAX_FDS)];
    } control;
    struct iovec iov = { .iov_base = &msg->hdr, .iov_len = sizeof(msg->hdr) };
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    ssize_t n;

    msg->nfds = 0;
    do {
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot read a vhost-user message: %s", g_strerror(errno));
        return -1;
    }
    if (n == 0) {
        return 0;
    }
    if (!take_fds(&mh, msg)) {
        vhost_user_msg_close_fds(msg);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "a vhost-user message came with more than %d fds", VHOST_USER_MAX_FDS);
        return -1;
    }
    if ((size_t)n < sizeof(msg->hdr) &&
        !read_full(sock, (guint8 *)&msg->hdr + n, sizeof(msg->hdr) - n, error)) {
        vhost_user_msg_close_fds(msg);
        return -1;
    }
    if (msg->hdr.size > VHOST_USER_MAX_PAYLOAD) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "vhost-user message %s has a payload of %u bytes, more than %d",
                    vhost_user_request_name(msg->hdr.request), msg->hdr.size,
                    VHOST_USER_MAX_PAYLOAD);
        vhost_user_msg_close_fds(msg);
        return -1;
    }
    if (!read_full(sock, &msg->payload, msg->hdr.size, error)) {
        vhost_user_msg_close_fds(msg);
        return -1;
    }
    return 1;
}

gboolean vhost_user_reply(int sock, uint32_t request, const void *payload, uint32_t size,
                          GError **error)
{
    VhostUserHeader hdr = {
        .request = request,
        .flags = VHOST_USER_VERSION | VHOST_USER_REPLY_MASK,
        .size = size,
    };
    struct iovec iov[2] = {
        { .iov_base = &hdr, .iov_len = sizeof(hdr) },
        { .iov_base = (void *)payload, .iov_len = size },
    };
    struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
    size_t want = sizeof(hdr) + size;
    ssize_t n;

    do {
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0 || (size_t)n != want) {
        g_set_error(error, G_IO_ERROR, n < 0 ? g_io_error_from_errno(errno) : G_IO_ERROR_FAILED,
                    "cannot send the reply to %s: %s", vhost_user_request_name(request),
                    n < 0 ? g_strerror(errno) : "short write");
        return FALSE;
    }
    return TRUE;
}

static gboolean lookup_group(const char *group, gid_t *gid, GError **error)
{
    struct group grbuf, *gr = NULL;
    char buf[4096];
    int rc = getgrnam_r(group, &grbuf, buf, sizeof(buf), &gr);
    if (rc != 0 || !gr) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "socket group '%s' does not exist",
                    group);
        return FALSE;
    }
    *gid = gr->gr_gid;
    return TRUE;
}

int vhost_user_listen(const char *path, const char *group, int *lock_fd, GError **error)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    g_autofree char *lock_path = g_strdup_printf("%s.lock", path);
    gid_t gid = 0;
    int lfd, fd;

    *lock_fd = -1;
    if (strlen(path) >= sizeof(sun.sun_path)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FILENAME_TOO_LONG,
                    "socket path '%s' is longer than %zu bytes", path,
                    sizeof(sun.sun_path) - 1);
        return -1;
    }
    if (group && !lookup_group(group, &gid, error)) {
        return -1;
    }
    lfd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (lfd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot open lock file '%s': %s", lock_path, g_strerror(errno));
        return -1;
    }
    if (flock(lfd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        close(lfd);
        g_set_error(error, G_IO_ERROR,
                    e == EWOULDBLOCK ? G_IO_ERROR_BUSY : g_io_error_from_errno(e),
                    e == EWOULDBLOCK ? "socket '%s' is in use: another instance holds '%s'"
                                     : "cannot lock '%s' (%s)",
                    path, e == EWOULDBLOCK ? lock_path : g_strerror(e));
        return -1;
    }
    g_autofree char *pid = g_strdup_printf("%d\n", (int)getpid());
    if (ftruncate(lfd, 0) < 0 || write(lfd, pid, strlen(pid)) < 0) {
        /* The pid is a courtesy to the operator; the lock is what counts. */
    }

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot create a unix socket: %s", g_strerror(errno));
        close(lfd);
        return -1;
    }
    /* Bind under a temporary name and rename once listening, so that the socket never
     * appears before it accepts connections (a front-end may connect as soon as it sees it). */
    g_autofree char *tmp_path = g_strdup_printf("%s.new", path);
    const char *bind_path = strlen(tmp_path) < sizeof(sun.sun_path) ? tmp_path : path;
    strcpy(sun.sun_path, bind_path);
    /* We hold the lock: socket files left here are a previous instance's. */
    unlink(bind_path);
    mode_t old = umask(0077);
    int rc = bind(fd, (struct sockaddr *)&sun, sizeof(sun));
    umask(old);
    if (rc < 0 || listen(fd, 1) < 0 ||
        (bind_path != path && rename(bind_path, path) < 0)) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot listen on '%s': %s", path, g_strerror(errno));
        if (rc == 0) {
            unlink(bind_path);
        }
        goto fail;
    }
    if (group && (chown(path, (uid_t)-1, gid) < 0 || chmod(path, 0660) < 0)) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot give socket '%s' to group '%s': %s", path, group,
                    g_strerror(errno));
        unlink(path);
        goto fail;
    }
    *lock_fd = lfd;
    return fd;

fail:
    close(fd);
    unlink(lock_path);
    close(lfd);
    return -1;
}

void vhost_user_unlisten(const char *path, int listen_fd, int lock_fd)
{
    if (listen_fd >= 0) {
        close(listen_fd);
    }
    if (path) {
        g_autofree char *lock_path = g_strdup_printf("%s.lock", path);
        unlink(path);
        /* Unlink while still holding the lock so that no newcomer locks a removed file. */
        if (lock_fd >= 0) {
            unlink(lock_path);
        }
    }
    if (lock_fd >= 0) {
        close(lock_fd);
    }
}

int vhost_user_accept(int listen_fd, GError **error)
{
    /* EINTR is returned to the caller: a signal may mean "stop waiting". */
    int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                    "cannot accept a vhost-user front-end: %s", g_strerror(errno));
    }
    return fd;
}
