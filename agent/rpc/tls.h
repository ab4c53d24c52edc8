/* The JSON-RPC TLS listener: credentials, client identities and roles, the listener itself. */
#pragma once

#include <gio/gio.h>
#include <gnutls/gnutls.h>

#include "server.h"

/* libvirt's remote TLS port is 16514; berthd's default is the next one. */
#define BERTH_TLS_DEFAULT_PORT 16515
/* TLS 1.2 and 1.3 only; appended to every configured priority string as well. */
#define BERTH_TLS_DEFAULT_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
#define BERTH_TLS_NO_OLD_VERSIONS ":-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1"

typedef enum {
    BERTH_TLS_ROLE_NONE = 0,
    BERTH_TLS_ROLE_READONLY,
    BERTH_TLS_ROLE_ADMIN,
    BERTH_TLS_ROLE_LAST
} BerthTlsRole;

/* What the listener is configured with ([rpc] tls_* keys). Paths are PEM files. */
typedef struct {
    char *cert;       /* the server's certificate (chain), PEM */
    char *key;        /* its private key */
    char *ca;         /* CA bundle client certificates must chain to */
    char *crl;        /* CRL of that CA, or NULL */
    char *priority;   /* gnutls priority string; NULL = BERTH_TLS_DEFAULT_PRIORITY */
    char **admin;     /* identity patterns with every method (NULL-terminated, may be NULL) */
    char **readonly;  /* identity patterns with queries and events only */
    guint handshake_timeout_s; /* a peer that has not finished its handshake by then goes */
    guint max_unauthenticated; /* peers mid-handshake at most; more are closed at accept */
    guint idle_timeout_s;      /* no byte either way for this long closes (0 = never) */
    guint keepalive_s;         /* TCP keepalive idle time; dead peers go after ~3 probes */
} BerthTlsConfig;

void berth_tls_config_clear(BerthTlsConfig *cfg);
void berth_tls_config_copy(BerthTlsConfig *dst, const BerthTlsConfig *src);

/* Loaded credentials: immutable once loaded, shared by every session made from them. */
typedef struct BerthTlsCreds BerthTlsCreds;

/* Reads and checks every file (the key matches the certificate, the certificate is valid
 * now, the CA bundle and CRL parse); errors name the file and the reason. */
BerthTlsCreds *berth_tls_creds_load(const BerthTlsConfig *cfg, GError **error);
BerthTlsCreds *berth_tls_creds_ref(BerthTlsCreds *creds);
void berth_tls_creds_unref(BerthTlsCreds *creds);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthTlsCreds, berth_tls_creds_unref)
/* The server certificate's subject and end of validity (for logs and agent.reload_tls). */
const char *berth_tls_creds_subject(BerthTlsCreds *creds);
gint64 berth_tls_creds_expires(BerthTlsCreds *creds);
/* The result of checking a client's certificate. */
typedef struct {
    BerthTlsCreds *creds; /* what the checks use (not owned; kept by clear) */
    gboolean checked;     /* the checks ran */
    int alert;            /* 0 = accepted, else the gnutls_alert_description_t to send */
    BerthTlsRole role;
    char *subject;        /* the certificate's subject DN (RFC 4514), or NULL */
    char *reason;         /* why it was refused, a sentence for the log */
} BerthTlsPeerCheck;

void berth_tls_peer_check_clear(BerthTlsPeerCheck *check);
/* A new non-blocking server session over @fd using @creds, requiring a client certificate:
 * the checks run inside the handshake and fill @check (which must outlive the session). */
gnutls_session_t berth_tls_creds_new_session(BerthTlsCreds *creds, int fd,
                                             BerthTlsPeerCheck *check, GError **error);
/* Runs every check on the peer of @session (after its Certificate message): chain to the CA,
 * validity, CRL, clientAuth EKU, identity patterns. Fills @check. */
void berth_tls_check_peer(gnutls_session_t session, BerthTlsCreds *creds,
                          BerthTlsPeerCheck *check);

/* The role of identity @subject with subjectAltNames @sans ("DNS:host", "email:a@b",
 * "URI:spiffe://x", "IP:10.0.0.1") under the patterns: admin patterns first, then readonly. A
 * pattern is a glob ('*', '?'); one that starts with DNS:, email:, URI: or IP: is matched
 * against the SANs of that type, any other against the subject DN. */
BerthTlsRole berth_tls_identity_role(const char *subject, const char *const *sans,
                                     const char *const *admin, const char *const *readonly);
const char *berth_tls_role_name(BerthTlsRole role);

/* The listener: accepts TCP connections, runs each TLS handshake on the main context with
 * its own limits, and hands authenticated peers to @server as transports. */
typedef struct BerthTlsListener BerthTlsListener;

/* Listens on @address ("HOST:PORT", "[V6]:PORT", "HOST" for the default port). */
BerthTlsListener *berth_tls_listener_new(BerthRpcServer *server, const char *address,
                                         const BerthTlsConfig *cfg, GError **error);
/* Stops listening and closes peers still mid-handshake; served connections stay with the
 * server. Accepts NULL. */
void berth_tls_listener_free(BerthTlsListener *l);
/* Loads new credentials (and limits and patterns) from @cfg (NULL = the same files again).
 * On failure nothing changes. New connections use the new ones; open ones keep theirs. */
gboolean berth_tls_listener_reload(BerthTlsListener *l, const BerthTlsConfig *cfg,
                                   GError **error);
/* The bound port (useful with port 0). */
guint16 berth_tls_listener_port(BerthTlsListener *l);
BerthTlsCreds *berth_tls_listener_creds(BerthTlsListener *l);
/* Peers refused so far (failed handshakes and checks, limits). */
guint64 berth_tls_listener_n_refused(BerthTlsListener *l);
/* Parses "HOST:PORT", "[V6]:PORT" or "HOST"; FALSE with a message otherwise. */
gboolean berth_tls_parse_address(const char *address, char **host, guint16 *port,
                                 GError **error);
