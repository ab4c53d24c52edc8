/* TLS credentials, the client-certificate checks and the identity-to-role mapping. */
#include "tls.h"

#include <arpa/inet.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <string.h>

#include "../errors.h"

/* A certificate bundle or CRL is small; a huge file is a mistake, not input to parse. */
#define PEM_MAX_BYTES (4 * 1024 * 1024)
#define NAME_MAX_BYTES 1024
/* Client chains that verified, remembered by their bytes: at most this many, for this long. */
#define VERIFIED_MAX 1024
#define VERIFIED_TTL_S 600

/* A client chain that passed every check: the same bytes pass again while every certificate
 * in it is within its validity (the CA bundle, CRL and patterns belong to the same creds). */
typedef struct {
    char *subject;
    BerthTlsRole role;
    gint64 valid_from;  /* unix time: the latest activation in the chain */
    gint64 valid_until; /* the earliest expiry, at most VERIFIED_TTL_S after the check */
} VerifiedPeer;

struct BerthTlsCreds {
    gint refcount;
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t priority;
    char **admin;
    char **readonly;
    char *subject;   /* of our own certificate */
    gint64 expires;  /* unix time */
    GMutex verified_lock;
    GHashTable *verified; /* GBytes SHA-256 of the peer's chain -> VerifiedPeer */
};

static void
verified_peer_free(gpointer p)
{
    VerifiedPeer *v = p;

    g_free(v->subject);
    g_free(v);
}

static const char *const role_names[] = {"none", "readonly", "admin"};

const char *
berth_tls_role_name(BerthTlsRole role)
{
    return (guint) role < BERTH_TLS_ROLE_LAST ? role_names[role] : "none";
}

void
berth_tls_config_clear(BerthTlsConfig *cfg)
{
    g_clear_pointer(&cfg->cert, g_free);
    g_clear_pointer(&cfg->key, g_free);
    g_clear_pointer(&cfg->ca, g_free);
    g_clear_pointer(&cfg->crl, g_free);
    g_clear_pointer(&cfg->priority, g_free);
    g_clear_pointer(&cfg->admin, g_strfreev);
    g_clear_pointer(&cfg->readonly, g_strfreev);
}

void
berth_tls_config_copy(BerthTlsConfig *dst, const BerthTlsConfig *src)
{
    *dst = *src;
    dst->cert = g_strdup(src->cert);
    dst->key = g_strdup(src->key);
    dst->ca = g_strdup(src->ca);
    dst->crl = g_strdup(src->crl);
    dst->priority = g_strdup(src->priority);
    dst->admin = g_strdupv(src->admin);
    dst->readonly = g_strdupv(src->readonly);
}

static gboolean
tls_fail(GError **error, const char *what, const char *path, int rc)
{
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "TLS %s '%s': %s", what,
                path, gnutls_strerror(rc));
    return FALSE;
}

/* Reads a PEM file, bounded. */
static gboolean
read_pem(const char *what, const char *path, gnutls_datum_t *out, char **buf, GError **error)
{
    g_autoptr(GError) local = NULL;
    gsize len = 0;

    if (!path || !*path) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "no TLS %s file is set",
                    what);
        return FALSE;
    }
    if (!g_file_get_contents(path, buf, &len, &local)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT, "cannot read the TLS %s: %s",
                    what, local->message);
        return FALSE;
    }
    if (len > PEM_MAX_BYTES) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "TLS %s '%s' is larger than %d bytes", what, path, PEM_MAX_BYTES);
        g_clear_pointer(buf, g_free);
        return FALSE;
    }
    out->data = (unsigned char *) *buf;
    out->size = (unsigned int) len;
    return TRUE;
}

/* Checks our own certificate: it parses, is valid now, and gives its subject and expiry. */
static gboolean
creds_check_own(BerthTlsCreds *creds, const BerthTlsConfig *cfg, const gnutls_datum_t *pem,
                GError **error)
{
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t dn = {NULL, 0};
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    gint64 activation;
    int rc;

    gnutls_x509_crt_init(&crt);
    rc = gnutls_x509_crt_import(crt, pem, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        gnutls_x509_crt_deinit(crt);
        return tls_fail(error, "certificate", cfg->cert, rc);
    }
    activation = gnutls_x509_crt_get_activation_time(crt);
    creds->expires = gnutls_x509_crt_get_expiration_time(crt);
    if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        creds->subject = g_strndup((const char *) dn.data, dn.size);
        gnutls_free(dn.data);
    } else {
        creds->subject = g_strdup("");
    }
    gnutls_x509_crt_deinit(crt);
    if (now < activation || now > creds->expires) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "TLS certificate '%s' (%s) is not valid now", cfg->cert, creds->subject);
        return FALSE;
    }
    return TRUE;
}

BerthTlsCreds *
berth_tls_creds_load(const BerthTlsConfig *cfg, GError **error)
{
    g_autoptr(BerthTlsCreds) creds = g_new0(BerthTlsCreds, 1);
    g_autofree char *cert_buf = NULL;
    g_autofree char *key_buf = NULL;
    g_autofree char *ca_buf = NULL;
    g_autofree char *crl_buf = NULL;
    g_autofree char *prio = NULL;
    gnutls_datum_t cert, key, ca, crl;
    const char *err_pos = NULL;
    int rc;

    creds->refcount = 1;
    g_mutex_init(&creds->verified_lock);
    creds->verified = g_hash_table_new_full(g_bytes_hash, g_bytes_equal,
                                            (GDestroyNotify) g_bytes_unref, verified_peer_free);
    if (!read_pem("certificate", cfg->cert, &cert, &cert_buf, error) ||
        !read_pem("key", cfg->key, &key, &key_buf, error) ||
        !read_pem("CA bundle", cfg->ca, &ca, &ca_buf, error) ||
        (cfg->crl && *cfg->crl && !read_pem("CRL", cfg->crl, &crl, &crl_buf, error))) {
        return NULL;
    }
    gnutls_certificate_allocate_credentials(&creds->cred);
    rc = gnutls_certificate_set_x509_key_mem(creds->cred, &cert, &key, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "TLS certificate '%s' and key '%s' do not load together: %s", cfg->cert,
                    cfg->key, gnutls_strerror(rc));
        return NULL;
    }
    rc = gnutls_certificate_set_x509_trust_mem(creds->cred, &ca, GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
        if (rc == 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "TLS CA bundle '%s' holds no certificate", cfg->ca);
            return NULL;
        }
        tls_fail(error, "CA bundle", cfg->ca, rc);
        return NULL;
    }
    if (crl_buf) {
        rc = gnutls_certificate_set_x509_crl_mem(creds->cred, &crl, GNUTLS_X509_FMT_PEM);
        if (rc < 0) {
            tls_fail(error, "CRL", cfg->crl, rc);
            return NULL;
        }
        if (rc == 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "TLS CRL '%s' holds no CRL", cfg->crl);
            return NULL;
        }
    }
    if (!creds_check_own(creds, cfg, &cert, error)) {
        return NULL;
    }
    /* Whatever the configured string allows, never below TLS 1.2. */
    prio = g_strconcat(cfg->priority && *cfg->priority ? cfg->priority
                                                       : BERTH_TLS_DEFAULT_PRIORITY,
                       BERTH_TLS_NO_OLD_VERSIONS, NULL);
    rc = gnutls_priority_init(&creds->priority, prio, &err_pos);
    if (rc < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "TLS priority string '%s' is invalid at '%s': %s", cfg->priority,
                    err_pos ? err_pos : "", gnutls_strerror(rc));
        return NULL;
    }
    creds->admin = cfg->admin ? g_strdupv(cfg->admin) : g_new0(char *, 1);
    creds->readonly = cfg->readonly ? g_strdupv(cfg->readonly) : g_new0(char *, 1);
    return g_steal_pointer(&creds);
}

BerthTlsCreds *
berth_tls_creds_ref(BerthTlsCreds *creds)
{
    g_atomic_int_inc(&creds->refcount);
    return creds;
}

void
berth_tls_creds_unref(BerthTlsCreds *creds)
{
    if (!creds || !g_atomic_int_dec_and_test(&creds->refcount)) {
        return;
    }
    if (creds->cred) {
        gnutls_certificate_free_credentials(creds->cred);
    }
    if (creds->priority) {
        gnutls_priority_deinit(creds->priority);
    }
    g_strfreev(creds->admin);
    g_strfreev(creds->readonly);
    g_free(creds->subject);
    g_hash_table_unref(creds->verified);
    g_mutex_clear(&creds->verified_lock);
    g_free(creds);
}

const char *
berth_tls_creds_subject(BerthTlsCreds *creds)
{
    return creds->subject;
}

gint64
berth_tls_creds_expires(BerthTlsCreds *creds)
{
    return creds->expires;
}

/* --- client checks --- */

void
berth_tls_peer_check_clear(BerthTlsPeerCheck *check)
{
    g_clear_pointer(&check->subject, g_free);
    g_clear_pointer(&check->reason, g_free);
    check->checked = FALSE;
    check->alert = 0;
    check->role = BERTH_TLS_ROLE_NONE;
}

static gboolean
pattern_matches(const char *pattern, const char *subject, const char *const *sans)
{
    static const char *const san_types[] = {"DNS:", "email:", "URI:", "IP:"};

    for (guint i = 0; i < G_N_ELEMENTS(san_types); i++) {
        gsize plen = strlen(san_types[i]);

        if (g_ascii_strncasecmp(pattern, san_types[i], plen) != 0) {
            continue;
        }
        for (guint j = 0; sans && sans[j]; j++) {
            if (g_ascii_strncasecmp(sans[j], san_types[i], plen) == 0 &&
                g_pattern_match_simple(pattern + plen, sans[j] + plen)) {
                return TRUE;
            }
        }
        return FALSE;
    }
    return subject && g_pattern_match_simple(pattern, subject);
}

BerthTlsRole
berth_tls_identity_role(const char *subject, const char *const *sans, const char *const *admin,
                        const char *const *readonly)
{
    for (guint i = 0; admin && admin[i]; i++) {
        if (pattern_matches(admin[i], subject, sans)) {
            return BERTH_TLS_ROLE_ADMIN;
        }
    }
    for (guint i = 0; readonly && readonly[i]; i++) {
        if (pattern_matches(readonly[i], subject, sans)) {
            return BERTH_TLS_ROLE_READONLY;
        }
    }
    return BERTH_TLS_ROLE_NONE;
}

/* The SANs of @crt as "TYPE:value" strings. */
static char **
cert_sans(gnutls_x509_crt_t crt)
{
    GPtrArray *out = g_ptr_array_new();

    for (unsigned i = 0; i < 64; i++) {
        char buf[NAME_MAX_BYTES];
        size_t size = sizeof(buf) - 1;
        int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &size, NULL);

        if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
            break;
        }
        if (type < 0) {
            continue;
        }
        buf[MIN(size, sizeof(buf) - 1)] = '\0';
        switch (type) {
        case GNUTLS_SAN_DNSNAME:
            g_ptr_array_add(out, g_strconcat("DNS:", buf, NULL));
            break;
        case GNUTLS_SAN_RFC822NAME:
            g_ptr_array_add(out, g_strconcat("email:", buf, NULL));
            break;
        case GNUTLS_SAN_URI:
            g_ptr_array_add(out, g_strconcat("URI:", buf, NULL));
            break;
        case GNUTLS_SAN_IPADDRESS: {
            char text[INET6_ADDRSTRLEN];
            int af = size == 4 ? AF_INET : size == 16 ? AF_INET6 : 0;

            if (af && inet_ntop(af, buf, text, sizeof(text))) {
                g_ptr_array_add(out, g_strconcat("IP:", text, NULL));
            }
            break;
        }
        default:
            break;
        }
    }
    g_ptr_array_add(out, NULL);
    return (char **) g_ptr_array_free(out, FALSE);
}

static gboolean
cert_has_client_auth(gnutls_x509_crt_t crt)
{
    for (unsigned i = 0; i < 64; i++) {
        char oid[128];
        size_t size = sizeof(oid);
        int rc = gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, NULL);

        if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
            return FALSE;
        }
        if (rc >= 0 && strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0) {
            return TRUE;
        }
    }
    return FALSE;
}

static void
refuse(BerthTlsPeerCheck *check, int alert, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static void
refuse(BerthTlsPeerCheck *check, int alert, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    g_free(check->reason);
    check->reason = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    check->alert = alert;
    check->role = BERTH_TLS_ROLE_NONE;
}

/* SHA-256 over the chain's certificates, each preceded by its length. */
static GBytes *
chain_digest(const gnutls_datum_t *certs, unsigned int n_certs)
{
    guint8 digest[32];
    gnutls_hash_hd_t h;

    if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
        return NULL;
    }
    for (unsigned int i = 0; i < n_certs; i++) {
        guint32 size = certs[i].size;

        gnutls_hash(h, &size, sizeof(size));
        gnutls_hash(h, certs[i].data, certs[i].size);
    }
    gnutls_hash_deinit(h, digest);
    return g_bytes_new(digest, sizeof(digest));
}

/* TRUE with @check filled when these exact bytes passed every check before. */
static gboolean
verified_lookup(BerthTlsCreds *creds, GBytes *key, BerthTlsPeerCheck *check)
{
    gint64 now = g_get_real_time() / G_USEC_PER_SEC;
    VerifiedPeer *v;
    gboolean hit = FALSE;

    g_mutex_lock(&creds->verified_lock);
    v = g_hash_table_lookup(creds->verified, key);
    if (v && now >= v->valid_from && now <= v->valid_until) {
        check->subject = g_strdup(v->subject);
        check->role = v->role;
        hit = TRUE;
    } else if (v) {
        g_hash_table_remove(creds->verified, key);
    }
    g_mutex_unlock(&creds->verified_lock);
    return hit;
}

/* Remembers a chain that passed: its validity is that of its every certificate (@leaf is
 * certs[0], already parsed). */
static void
verified_add(BerthTlsCreds *creds, GBytes *key, gnutls_x509_crt_t leaf,
             const gnutls_datum_t *certs, unsigned int n_certs, const BerthTlsPeerCheck *check)
{
    VerifiedPeer *v = g_new0(VerifiedPeer, 1);

    v->valid_from = gnutls_x509_crt_get_activation_time(leaf);
    v->valid_until = MIN(g_get_real_time() / G_USEC_PER_SEC + VERIFIED_TTL_S,
                         (gint64) gnutls_x509_crt_get_expiration_time(leaf));
    for (unsigned int i = 1; i < n_certs; i++) {
        gnutls_x509_crt_t crt;

        gnutls_x509_crt_init(&crt);
        if (gnutls_x509_crt_import(crt, &certs[i], GNUTLS_X509_FMT_DER) < 0) {
            gnutls_x509_crt_deinit(crt);
            verified_peer_free(v);
            return;
        }
        v->valid_from = MAX(v->valid_from, (gint64) gnutls_x509_crt_get_activation_time(crt));
        v->valid_until = MIN(v->valid_until, (gint64) gnutls_x509_crt_get_expiration_time(crt));
        gnutls_x509_crt_deinit(crt);
    }
    v->subject = g_strdup(check->subject);
    v->role = check->role;
    g_mutex_lock(&creds->verified_lock);
    if (g_hash_table_size(creds->verified) >= VERIFIED_MAX) {
        g_hash_table_remove_all(creds->verified);
    }
    g_hash_table_replace(creds->verified, g_bytes_ref(key), v);
    g_mutex_unlock(&creds->verified_lock);
}

void
berth_tls_check_peer(gnutls_session_t session, BerthTlsCreds *creds, BerthTlsPeerCheck *check)
{
    const gnutls_datum_t *certs;
    unsigned int n_certs = 0;
    unsigned int status = 0;
    gnutls_x509_crt_t crt = NULL;
    gnutls_datum_t dn = {NULL, 0};
    g_auto(GStrv) sans = NULL;
    g_autoptr(GBytes) key = NULL;
    int rc;

    berth_tls_peer_check_clear(check);
    check->checked = TRUE;
    certs = gnutls_certificate_get_peers(session, &n_certs);
    if (!certs || n_certs == 0) {
        refuse(check, gnutls_protocol_get_version(session) == GNUTLS_TLS1_3
                          ? GNUTLS_A_CERTIFICATE_REQUIRED
                          : GNUTLS_A_HANDSHAKE_FAILURE,
               "it sent no client certificate");
        return;
    }
    /* A fleet manager reconnects with the same certificate: parsing and verifying its chain
     * again (an ECDSA verification and ASN.1 decoding) would give the same answer. */
    key = chain_digest(certs, n_certs);
    if (key && verified_lookup(creds, key, check)) {
        return;
    }
    gnutls_x509_crt_init(&crt);
    rc = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
    if (rc < 0) {
        gnutls_x509_crt_deinit(crt);
        refuse(check, GNUTLS_A_BAD_CERTIFICATE, "its certificate does not parse: %s",
               gnutls_strerror(rc));
        return;
    }
    if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        check->subject = g_strndup((const char *) dn.data, MIN(dn.size, NAME_MAX_BYTES));
        gnutls_free(dn.data);
    } else {
        check->subject = g_strdup("(no subject)");
    }
    sans = cert_sans(crt);
    rc = gnutls_certificate_verify_peers2(session, &status);
    if (rc < 0) {
        refuse(check, GNUTLS_A_BAD_CERTIFICATE, "its certificate cannot be verified: %s",
               gnutls_strerror(rc));
    } else if (status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA)) {
        refuse(check, GNUTLS_A_UNKNOWN_CA,
               "its certificate is not signed by the configured CA");
    } else if (status & GNUTLS_CERT_REVOKED) {
        refuse(check, GNUTLS_A_CERTIFICATE_REVOKED, "its certificate is revoked by the CRL");
    } else if (status & GNUTLS_CERT_EXPIRED) {
        refuse(check, GNUTLS_A_CERTIFICATE_EXPIRED, "its certificate has expired");
    } else if (status & GNUTLS_CERT_NOT_ACTIVATED) {
        /* RFC 5246: certificate_expired also covers "not currently valid". */
        refuse(check, GNUTLS_A_CERTIFICATE_EXPIRED, "its certificate is not yet valid");
    } else if (status != 0) {
        gnutls_datum_t text = {NULL, 0};

        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0);
        refuse(check, GNUTLS_A_BAD_CERTIFICATE, "its certificate does not verify: %s",
               text.data ? (const char *) text.data : "unknown reason");
        gnutls_free(text.data);
    } else if (!cert_has_client_auth(crt)) {
        refuse(check, GNUTLS_A_BAD_CERTIFICATE,
               "its certificate lacks the TLS client authentication (clientAuth) extended "
               "key usage");
    } else {
        check->role = berth_tls_identity_role(check->subject, (const char *const *) sans,
                                              (const char *const *) creds->admin,
                                              (const char *const *) creds->readonly);
        if (check->role == BERTH_TLS_ROLE_NONE) {
            refuse(check, GNUTLS_A_ACCESS_DENIED,
                   "its identity matches no pattern of tls_admin or tls_readonly");
        } else if (key) {
            verified_add(creds, key, crt, certs, n_certs, check);
        }
    }
    gnutls_x509_crt_deinit(crt);
}

/* Runs inside the handshake, after the client's Certificate message: a refusal here fails
 * the handshake, and the listener sends the alert the check recorded. */
static int
verify_callback(gnutls_session_t session)
{
    BerthTlsPeerCheck *check = gnutls_session_get_ptr(session);

    if (!check || !check->creds) {
        return -1;
    }
    berth_tls_check_peer(session, check->creds, check);
    return check->alert ? -1 : 0;
}

gnutls_session_t
berth_tls_creds_new_session(BerthTlsCreds *creds, int fd, BerthTlsPeerCheck *check,
                            GError **error)
{
    gnutls_session_t session = NULL;
    /* No session tickets: resumption would save little here, and each ticket costs an encryption
     * and a record on every handshake. */
    int rc = gnutls_init(&session, GNUTLS_SERVER | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL |
                                       GNUTLS_NO_TICKETS);

    if (rc < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "gnutls_init failed: %s",
                    gnutls_strerror(rc));
        return NULL;
    }
    rc = gnutls_priority_set(session, creds->priority);
    if (rc >= 0) {
        rc = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, creds->cred);
    }
    if (rc < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL, "cannot set up a TLS session: %s",
                    gnutls_strerror(rc));
        gnutls_deinit(session);
        return NULL;
    }
    gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
    /* No list of acceptable CAs: a client then sends the certificate it has, and learns
     * from the alert why it is refused instead of sending none. */
    gnutls_certificate_send_x509_rdn_sequence(session, 1);
    gnutls_session_set_verify_function(session, verify_callback);
    check->creds = creds;
    gnutls_session_set_ptr(session, check);
    gnutls_transport_set_int(session, fd);
    gnutls_handshake_set_timeout(session, 0);
    return session;
}
