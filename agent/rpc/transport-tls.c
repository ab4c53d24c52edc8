/* The TLS listener and transport: accept, a non-blocking handshake with its limits, then
 * gnutls records under the JSON-RPC framing. */
#include "tls.h"

#include <errno.h>
#include <glib-unix.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../errors.h"
#include "server-private.h"
#include "tls-io.h"

#define ACCEPT_BURST 32
#define ACCEPT_BACKOFF_MS 200
/* How often handshake and idle deadlines are checked. */
#define SWEEP_MS 500
/* Keepalive probes after the idle time before the kernel declares the peer dead. */
#define KEEPALIVE_PROBES 3

typedef struct TlsTransport TlsTransport;

struct BerthTlsListener {
    gint refcount;
    BerthRpcServer *server;  /* NULL once freed by its owner */
    GMainContext *ctx;
    int fd;
    guint16 port;
    GSource *source;
    GSource *backoff;
    GSource *sweep;
    BerthTlsConfig cfg;      /* as last loaded */
    BerthTlsCreds *creds;    /* for new connections */
    GHashTable *handshaking; /* TlsTransport set: not yet served */
    GHashTable *served;      /* TlsTransport set: handed to the server */
    guint64 n_refused;
};

struct TlsTransport {
    BerthRpcTransport base;
    BerthTlsListener *listener; /* a reference */
    gnutls_session_t session;
    BerthTlsCreds *creds;       /* the session's, a reference */
    BerthTlsPeerCheck check;
    char *addr;                 /* "HOST:PORT" of the peer */
    GSource *hs_source;         /* during the handshake */
    gint64 started;             /* monotonic µs */
    gint64 last_io;             /* monotonic µs */
    gsize send_stalled;         /* bytes of a record send that got GNUTLS_E_AGAIN */
    gboolean want_write;        /* the last record_recv needs the fd writable */
    gboolean dropped;           /* shut down by a limit */
    gboolean lingering;         /* refused: the alert is out, waiting for the peer to close */
    BerthTlsIo io;              /* what the session reads through */
};

static BerthTlsListener *
listener_ref(BerthTlsListener *l)
{
    g_atomic_int_inc(&l->refcount);
    return l;
}

static void
listener_unref(BerthTlsListener *l)
{
    if (!l || !g_atomic_int_dec_and_test(&l->refcount)) {
        return;
    }
    berth_tls_creds_unref(l->creds);
    berth_tls_config_clear(&l->cfg);
    g_hash_table_unref(l->handshaking);
    g_hash_table_unref(l->served);
    g_main_context_unref(l->ctx);
    g_free(l);
}

static void
refusal_log(TlsTransport *t, const char *why)
{
    t->listener->n_refused++;
    g_log_structured("berth-rpc", G_LOG_LEVEL_WARNING, "BERTH_PEER", t->addr, "BERTH_TLS_SUBJECT",
                     t->check.subject ? t->check.subject : "", "MESSAGE",
                     "refusing TLS client %s%s%s%s: %s", t->addr,
                     t->check.subject ? " ('" : "", t->check.subject ? t->check.subject : "",
                     t->check.subject ? "')" : "", why);
}

/* --- the transport vtable --- */

static gboolean
tls_io_error(GError **error, int rc)
{
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) {
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK, "would block");
    } else {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "TLS: %s", gnutls_strerror(rc));
    }
    return FALSE;
}

static gssize
tls_read(BerthRpcTransport *base, void *buf, gsize len, GError **error)
{
    TlsTransport *t = (TlsTransport *) base;
    gssize n = gnutls_record_recv(t->session, buf, len);

    t->want_write = FALSE;
    if (n >= 0) {
        if (n > 0) {
            t->last_io = g_get_monotonic_time();
        }
        return n;
    }
    if (n == GNUTLS_E_AGAIN) {
        t->want_write = gnutls_record_get_direction(t->session) == 1;
    } else if (n == GNUTLS_E_REHANDSHAKE) {
        /* Renegotiation (TLS 1.2) is refused: the identity is fixed for the connection. */
        gnutls_alert_send(t->session, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION);
        n = GNUTLS_E_AGAIN;
    } else if (n == GNUTLS_E_PREMATURE_TERMINATION) {
        return 0; /* the peer closed without close_notify: the same as an end for us */
    }
    tls_io_error(error, (int) n);
    return -1;
}

static gssize
tls_write(BerthRpcTransport *base, const void *buf, gsize len, GError **error)
{
    TlsTransport *t = (TlsTransport *) base;
    gssize n;

    /* After GNUTLS_E_AGAIN gnutls wants the same record again: the connection's buffer only
     * grows at its end, so its head still holds those bytes. */
    if (t->send_stalled) {
        n = gnutls_record_send(t->session, NULL, 0);
    } else {
        n = gnutls_record_send(t->session, buf, len);
    }
    if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
        if (!t->send_stalled) {
            t->send_stalled = len;
        }
        tls_io_error(error, (int) n);
        return -1;
    }
    t->send_stalled = 0;
    if (n < 0) {
        tls_io_error(error, (int) n);
        return -1;
    }
    t->last_io = g_get_monotonic_time();
    return n;
}

static gboolean
tls_pending(BerthRpcTransport *base)
{
    TlsTransport *t = (TlsTransport *) base;

    return berth_tls_io_pending(&t->io, t->session);
}

static GIOCondition
tls_extra_events(BerthRpcTransport *base)
{
    TlsTransport *t = (TlsTransport *) base;

    return (t->want_write || t->send_stalled) ? G_IO_OUT : 0;
}

static void
tls_close(BerthRpcTransport *base)
{
    TlsTransport *t = (TlsTransport *) base;

    if (t->hs_source) {
        g_source_destroy(t->hs_source);
        g_clear_pointer(&t->hs_source, g_source_unref);
    }
    if (base->fd >= 0) {
        /* Best effort close_notify: never wait for a peer. */
        if (t->check.checked && t->check.alert == 0 && !t->dropped) {
            gnutls_bye(t->session, GNUTLS_SHUT_WR);
        }
        close(base->fd);
        base->fd = -1;
    }
    g_hash_table_remove(t->listener->handshaking, t);
    g_hash_table_remove(t->listener->served, t);
}

static void
tls_free(BerthRpcTransport *base)
{
    TlsTransport *t = (TlsTransport *) base;

    tls_close(base);
    if (t->session) {
        gnutls_deinit(t->session);
    }
    berth_tls_creds_unref(t->creds);
    berth_tls_peer_check_clear(&t->check);
    listener_unref(t->listener);
    g_free(t->addr);
    g_free(base->peer);
    g_free(t);
}

static const BerthRpcTransportOps tls_ops = {
    .read = tls_read,
    .write = tls_write,
    .pending = tls_pending,
    .extra_events = tls_extra_events,
    .close = tls_close,
    .free = tls_free,
};

/* --- the handshake --- */

static gboolean handshake_step(gint fd, GIOCondition cond, gpointer data);

static void
handshake_watch(TlsTransport *t, GIOCondition cond)
{
    if (t->hs_source) {
        g_source_destroy(t->hs_source);
        g_source_unref(t->hs_source);
    }
    t->hs_source = g_unix_fd_source_new(t->base.fd, cond);
    g_source_set_callback(t->hs_source, G_SOURCE_FUNC(handshake_step), t, NULL);
    g_source_set_static_name(t->hs_source, "berth-tls-handshake");
    g_source_attach(t->hs_source, t->listener->ctx);
}

static gboolean
linger_read(gint fd, GIOCondition cond, gpointer data)
{
    TlsTransport *t = data;
    char buf[4096];

    for (;;) {
        gssize n = recv(fd, buf, sizeof(buf), 0);

        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EINTR)) {
            continue;
        }
        if (n < 0 && errno == EAGAIN) {
            return G_SOURCE_CONTINUE;
        }
        g_clear_pointer(&t->hs_source, g_source_unref);
        tls_free(&t->base);
        return G_SOURCE_REMOVE;
    }
}

/* After the alert: closing now, with the client's first request unread, would reset the
 * connection, and a reset can destroy the alert before the client reads it. So stop
 * writing, read and discard until the client closes (or the handshake timeout). */
static void
linger(TlsTransport *t)
{
    t->lingering = TRUE;
    t->started = g_get_monotonic_time();
    shutdown(t->base.fd, SHUT_WR);
    if (t->hs_source) {
        g_source_destroy(t->hs_source);
        g_source_unref(t->hs_source);
    }
    t->hs_source = g_unix_fd_source_new(t->base.fd, G_IO_IN);
    g_source_set_callback(t->hs_source, G_SOURCE_FUNC(linger_read), t, NULL);
    g_source_set_static_name(t->hs_source, "berth-tls-linger");
    g_source_attach(t->hs_source, t->listener->ctx);
    g_hash_table_add(t->listener->handshaking, t);
}

/* Ends a handshake that failed: the alert that names the reason, a log line, the socket. */
static void
handshake_refuse(TlsTransport *t, int rc)
{
    g_autofree char *why = NULL;

    if (t->check.alert) {
        gnutls_alert_send(t->session, GNUTLS_AL_FATAL, t->check.alert);
        g_autofree char *name = g_ascii_strdown(gnutls_alert_get_strname(t->check.alert)
                                                    + strlen("GNUTLS_A_"), -1);

        why = g_strdup_printf("%s (alert %s)", t->check.reason, name);
    } else {
        if (rc != GNUTLS_E_PREMATURE_TERMINATION && rc != GNUTLS_E_PUSH_ERROR &&
            rc != GNUTLS_E_FATAL_ALERT_RECEIVED) {
            gnutls_alert_send_appropriate(t->session, rc);
        }
        why = g_strdup_printf("TLS handshake failed: %s", rc ? gnutls_strerror(rc) : "timeout");
    }
    refusal_log(t, why);
    linger(t);
}

static void
handshake_done(TlsTransport *t)
{
    BerthTlsListener *l = t->listener;

    g_source_destroy(t->hs_source);
    g_clear_pointer(&t->hs_source, g_source_unref);
    /* The callback ran inside the handshake; should gnutls ever skip it, check here. */
    if (!t->check.checked) {
        berth_tls_check_peer(t->session, t->creds, &t->check);
    }
    if (t->check.alert) {
        handshake_refuse(t, 0);
        return;
    }
    g_hash_table_remove(l->handshaking, t);
    t->base.readonly = t->check.role != BERTH_TLS_ROLE_ADMIN;
    t->base.peer = g_strdup_printf("%s (%s, %s)", t->check.subject, t->addr,
                                   berth_tls_role_name(t->check.role));
    t->last_io = g_get_monotonic_time();
    g_info("TLS client %s authenticated as '%s' (%s, %s)", t->addr, t->check.subject,
           berth_tls_role_name(t->check.role),
           gnutls_protocol_get_name(gnutls_protocol_get_version(t->session)));
    if (!l->server) {
        tls_free(&t->base);
        return;
    }
    g_hash_table_add(l->served, t);
    if (!berth_rpc_server_add_transport(l->server, &t->base, FALSE)) {
        l->n_refused++;
    }
}

static gboolean
handshake_step(gint fd, GIOCondition cond, gpointer data)
{
    TlsTransport *t = data;
    int rc;

    do {
        rc = gnutls_handshake(t->session);
        /* A warning alert ends the call with the next message possibly already read into
         * t->io, where no poll would see it. */
    } while (rc < 0 && !gnutls_error_is_fatal(rc) && rc != GNUTLS_E_AGAIN &&
             rc != GNUTLS_E_INTERRUPTED && t->io.len > 0);
    if (rc == GNUTLS_E_SUCCESS) {
        handshake_done(t);
        return G_SOURCE_REMOVE;
    }
    if (rc < 0 && !gnutls_error_is_fatal(rc)) {
        GIOCondition want = gnutls_record_get_direction(t->session) == 1 ? G_IO_OUT : G_IO_IN;

        handshake_watch(t, want);
        return G_SOURCE_REMOVE;
    }
    handshake_refuse(t, rc);
    return G_SOURCE_REMOVE;
}

static char *
sockaddr_text(const struct sockaddr_storage *ss, socklen_t len)
{
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];

    if (getnameinfo((const struct sockaddr *) ss, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return g_strdup("unknown");
    }
    return ss->ss_family == AF_INET6 ? g_strdup_printf("[%s]:%s", host, serv)
                                     : g_strdup_printf("%s:%s", host, serv);
}

static void
set_keepalive(int fd, guint idle)
{
    int on = 1;
    int idle_s = (int) idle;
    int intvl = (int) MAX(1, idle / KEEPALIVE_PROBES);
    int cnt = KEEPALIVE_PROBES;
    /* Unacknowledged output also ends a dead peer's connection within the same time. */
    unsigned int user_timeout = (idle + (guint) intvl * KEEPALIVE_PROBES) * 1000u;

    if (idle == 0) {
        return;
    }
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof(idle_s));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout, sizeof(user_timeout));
}

static void
accept_one(BerthTlsListener *l, int cfd, const struct sockaddr_storage *ss, socklen_t len)
{
    g_autoptr(GError) error = NULL;
    TlsTransport *t = g_new0(TlsTransport, 1);
    int on = 1;

    t->base.ops = &tls_ops;
    t->base.fd = cfd;
    t->base.readonly = TRUE;
    t->listener = listener_ref(l);
    t->creds = berth_tls_creds_ref(l->creds);
    t->addr = sockaddr_text(ss, len);
    t->started = t->last_io = g_get_monotonic_time();
    if (g_hash_table_size(l->handshaking) >= l->cfg.max_unauthenticated) {
        refusal_log(t, "too many clients in their TLS handshake");
        tls_free(&t->base);
        return;
    }
    if (l->server &&
        berth_rpc_server_n_clients(l->server) >= berth_rpc_server_get_limits(l->server)->max_clients) {
        refusal_log(t, "the server has max_clients connections");
        tls_free(&t->base);
        return;
    }
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    set_keepalive(cfd, l->cfg.keepalive_s);
    t->session = berth_tls_creds_new_session(t->creds, cfd, &t->check, &error);
    if (!t->session) {
        refusal_log(t, error->message);
        tls_free(&t->base);
        return;
    }
    berth_tls_io_attach(&t->io, t->session, cfd);
    g_hash_table_add(l->handshaking, t);
    /* The client speaks first. */
    handshake_watch(t, G_IO_IN);
}

static gboolean listener_ready(gint fd, GIOCondition cond, gpointer data);

static void
listener_watch(BerthTlsListener *l)
{
    l->source = g_unix_fd_source_new(l->fd, G_IO_IN);
    g_source_set_callback(l->source, G_SOURCE_FUNC(listener_ready), l, NULL);
    g_source_set_static_name(l->source, "berth-tls-listener");
    g_source_attach(l->source, l->ctx);
}

static gboolean
listener_resume(gpointer data)
{
    BerthTlsListener *l = data;

    g_clear_pointer(&l->backoff, g_source_unref);
    listener_watch(l);
    return G_SOURCE_REMOVE;
}

static gboolean
listener_ready(gint fd, GIOCondition cond, gpointer data)
{
    BerthTlsListener *l = data;

    for (int i = 0; i < ACCEPT_BURST; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int cfd = accept4(fd, (struct sockaddr *) &ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                g_warning("cannot accept TLS connections: %s", g_strerror(errno));
                l->backoff = g_timeout_source_new(ACCEPT_BACKOFF_MS);
                g_source_set_callback(l->backoff, listener_resume, l, NULL);
                g_source_attach(l->backoff, l->ctx);
                g_clear_pointer(&l->source, g_source_unref);
                return G_SOURCE_REMOVE;
            }
            break;
        }
        accept_one(l, cfd, &ss, len);
    }
    return G_SOURCE_CONTINUE;
}

/* Enforces the handshake and idle deadlines. A served connection is ended by shutting its
 * socket down: its connection then sees the end on its next poll and closes itself. */
static gboolean
listener_sweep(gpointer data)
{
    BerthTlsListener *l = data;
    gint64 now = g_get_monotonic_time();
    gint64 hs_limit = (gint64) l->cfg.handshake_timeout_s * G_USEC_PER_SEC;
    gint64 idle_limit = (gint64) l->cfg.idle_timeout_s * G_USEC_PER_SEC;
    g_autoptr(GPtrArray) late = g_ptr_array_new();
    GHashTableIter iter;
    gpointer key;

    g_hash_table_iter_init(&iter, l->handshaking);
    while (g_hash_table_iter_next(&iter, &key, NULL)) {
        TlsTransport *t = key;

        if (now - t->started > hs_limit) {
            g_ptr_array_add(late, t);
        }
    }
    for (guint i = 0; i < late->len; i++) {
        TlsTransport *t = late->pdata[i];

        if (!t->lingering) {
            refusal_log(t, "no TLS handshake within the handshake timeout");
        }
        tls_free(&t->base);
    }
    if (idle_limit > 0) {
        g_hash_table_iter_init(&iter, l->served);
        while (g_hash_table_iter_next(&iter, &key, NULL)) {
            TlsTransport *t = key;

            if (!t->dropped && t->base.fd >= 0 && now - t->last_io > idle_limit) {
                t->dropped = TRUE;
                g_info("closing idle TLS connection %s", t->base.peer);
                shutdown(t->base.fd, SHUT_RDWR);
            }
        }
    }
    return G_SOURCE_CONTINUE;
}

gboolean
berth_tls_parse_address(const char *address, char **host, guint16 *port, GError **error)
{
    const char *colon;
    guint64 p = BERTH_TLS_DEFAULT_PORT;

    if (!address || !*address) {
        goto bad;
    }
    if (address[0] == '[') {
        const char *end = strchr(address, ']');

        if (!end || end == address + 1) {
            goto bad;
        }
        *host = g_strndup(address + 1, (gsize) (end - address - 1));
        colon = end[1] == ':' ? end + 1 : NULL;
        if (end[1] && !colon) {
            g_clear_pointer(host, g_free);
            goto bad;
        }
    } else {
        colon = strrchr(address, ':');
        if (colon && strchr(address, ':') != colon) {
            goto bad; /* a bare IPv6 address needs brackets */
        }
        *host = colon ? g_strndup(address, (gsize) (colon - address)) : g_strdup(address);
    }
    if (colon && !g_ascii_string_to_unsigned(colon + 1, 10, 0, 65535, &p, NULL)) {
        g_clear_pointer(host, g_free);
        goto bad;
    }
    if (!**host) {
        g_clear_pointer(host, g_free);
        goto bad;
    }
    *port = (guint16) p;
    return TRUE;

bad:
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                "'%s' is not a TLS listen address: expected HOST:PORT, [IPV6]:PORT or HOST",
                address ? address : "");
    return FALSE;
}

static int
listen_socket(const char *address, guint16 *bound, GError **error)
{
    g_autofree char *host = NULL;
    g_autofree char *port_text = NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    guint16 port;
    int rc, fd = -1, saved = 0;

    if (!berth_tls_parse_address(address, &host, &port, error)) {
        return -1;
    }
    port_text = g_strdup_printf("%u", port);
    rc = getaddrinfo(host, port_text, &hints, &res);
    if (rc != 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "cannot resolve TLS listen address '%s': %s", address, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int on = 1;
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0 &&
            getsockname(fd, (struct sockaddr *) &ss, &len) == 0) {
            *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                                    : ((struct sockaddr_in *) &ss)->sin_port);
            break;
        }
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "cannot listen for TLS on '%s': %s", address, g_strerror(saved));
    }
    return fd;
}

BerthTlsListener *
berth_tls_listener_new(BerthRpcServer *server, const char *address, const BerthTlsConfig *cfg,
                       GError **error)
{
    BerthTlsListener *l;
    BerthTlsCreds *creds = berth_tls_creds_load(cfg, error);
    guint16 port = 0;
    int fd;

    if (!creds) {
        return NULL;
    }
    fd = listen_socket(address, &port, error);
    if (fd < 0) {
        berth_tls_creds_unref(creds);
        return NULL;
    }
    l = g_new0(BerthTlsListener, 1);
    l->refcount = 1;
    l->server = server;
    l->ctx = g_main_context_ref(server->ctx);
    l->fd = fd;
    l->port = port;
    l->creds = creds;
    berth_tls_config_copy(&l->cfg, cfg);
    l->handshaking = g_hash_table_new(NULL, NULL);
    l->served = g_hash_table_new(NULL, NULL);
    listener_watch(l);
    l->sweep = g_timeout_source_new(SWEEP_MS);
    g_source_set_callback(l->sweep, listener_sweep, l, NULL);
    g_source_set_static_name(l->sweep, "berth-tls-sweep");
    g_source_attach(l->sweep, l->ctx);
    return l;
}

static void
source_clear(GSource **source)
{
    if (*source) {
        g_source_destroy(*source);
        g_clear_pointer(source, g_source_unref);
    }
}

void
berth_tls_listener_free(BerthTlsListener *l)
{
    GHashTableIter iter;
    gpointer key;

    if (!l) {
        return;
    }
    source_clear(&l->source);
    source_clear(&l->backoff);
    source_clear(&l->sweep);
    close(l->fd);
    l->fd = -1;
    l->server = NULL;
    while (g_hash_table_size(l->handshaking) > 0) {
        g_hash_table_iter_init(&iter, l->handshaking);
        g_hash_table_iter_next(&iter, &key, NULL);
        tls_free(key);
    }
    listener_unref(l);
}

gboolean
berth_tls_listener_reload(BerthTlsListener *l, const BerthTlsConfig *cfg, GError **error)
{
    BerthTlsCreds *creds = berth_tls_creds_load(cfg ? cfg : &l->cfg, error);

    if (!creds) {
        return FALSE;
    }
    if (cfg) {
        berth_tls_config_clear(&l->cfg);
        berth_tls_config_copy(&l->cfg, cfg);
    }
    berth_tls_creds_unref(l->creds);
    l->creds = creds;
    return TRUE;
}

guint16
berth_tls_listener_port(BerthTlsListener *l)
{
    return l->port;
}

BerthTlsCreds *
berth_tls_listener_creds(BerthTlsListener *l)
{
    return l->creds;
}

guint64
berth_tls_listener_n_refused(BerthTlsListener *l)
{
    return l->n_refused;
}
