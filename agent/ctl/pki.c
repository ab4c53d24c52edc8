/* berthctl pki: shows the client certificate berthctl would use and checks it against the CA
 * and, given a tls:// address, against berthd itself. */
#include "pki.h"

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>

static char *
time_text(time_t t)
{
    g_autoptr(GDateTime) dt = g_date_time_new_from_unix_utc(t);

    return dt ? g_date_time_format(dt, "%Y-%m-%d %H:%M:%S UTC") : g_strdup("?");
}

static gnutls_x509_crt_t
load_cert(const char *path, GError **error)
{
    g_autofree char *text = NULL;
    gsize len = 0;
    gnutls_datum_t d;
    gnutls_x509_crt_t crt;
    int rc;

    if (!g_file_get_contents(path, &text, &len, error)) {
        return NULL;
    }
    d.data = (unsigned char *) text;
    d.size = (unsigned int) len;
    gnutls_x509_crt_init(&crt);
    rc = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        gnutls_x509_crt_deinit(crt);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "'%s': %s", path,
                    gnutls_strerror(rc));
        return NULL;
    }
    return crt;
}

/* Prints the facts of the client certificate; FALSE when one would make berthd refuse it. */
static gboolean
show_client(const BerthClientTls *tls)
{
    g_autoptr(GError) error = NULL;
    gnutls_x509_crt_t crt = load_cert(tls->cert, &error);
    gnutls_x509_trust_list_t list = NULL;
    gnutls_datum_t dn = {NULL, 0};
    g_autofree char *from = NULL;
    g_autofree char *until = NULL;
    gboolean client_auth = FALSE;
    gboolean ok = TRUE;
    unsigned int status = 0;
    int rc;

    if (!crt) {
        fprintf(stderr, "berthctl: cannot read the client certificate: %s\n", error->message);
        return FALSE;
    }
    if (gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
        printf("subject:            %.*s\n", (int) dn.size, dn.data);
        gnutls_free(dn.data);
    }
    if (gnutls_x509_crt_get_issuer_dn3(crt, &dn, 0) >= 0) {
        printf("issuer:             %.*s\n", (int) dn.size, dn.data);
        gnutls_free(dn.data);
    }
    for (unsigned i = 0; i < 64; i++) {
        char buf[1024];
        size_t size = sizeof(buf) - 1;
        int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &size, NULL);

        if (type == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE) {
            break;
        }
        buf[MIN(size, sizeof(buf) - 1)] = '\0';
        if (type == GNUTLS_SAN_DNSNAME) {
            printf("subjectAltName:     DNS:%s\n", buf);
        } else if (type == GNUTLS_SAN_RFC822NAME) {
            printf("subjectAltName:     email:%s\n", buf);
        } else if (type == GNUTLS_SAN_URI) {
            printf("subjectAltName:     URI:%s\n", buf);
        }
    }
    from = time_text(gnutls_x509_crt_get_activation_time(crt));
    until = time_text(gnutls_x509_crt_get_expiration_time(crt));
    printf("valid:              %s to %s\n", from, until);
    for (unsigned i = 0; i < 64; i++) {
        char oid[128];
        size_t size = sizeof(oid);

        if (gnutls_x509_crt_get_key_purpose_oid(crt, i, oid, &size, NULL) < 0) {
            break;
        }
        client_auth = client_auth || strcmp(oid, GNUTLS_KP_TLS_WWW_CLIENT) == 0;
    }
    printf("clientAuth usage:   %s\n", client_auth ? "yes" : "NO (berthd refuses it)");
    ok = client_auth;

    gnutls_x509_trust_list_init(&list, 0);
    rc = gnutls_x509_trust_list_add_trust_file(list, tls->ca, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
    if (rc <= 0) {
        printf("signed by the CA:   cannot load '%s'\n", tls->ca);
        ok = FALSE;
    } else if (gnutls_x509_trust_list_verify_crt(list, &crt, 1, 0, &status, NULL) < 0 ||
               status != 0) {
        gnutls_datum_t text = {NULL, 0};

        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0);
        printf("signed by the CA:   NO: %s\n", text.data ? (const char *) text.data : "?");
        gnutls_free(text.data);
        ok = FALSE;
    } else {
        printf("signed by the CA:   yes, and valid now\n");
    }
    gnutls_x509_trust_list_deinit(list, 1);
    gnutls_x509_crt_deinit(crt);
    return ok;
}

int
berthctl_pki(const char *uri, const BerthClientTls *given)
{
    g_autoptr(GError) error = NULL;
    BerthClientTls tls = {NULL, NULL, NULL};
    g_autoptr(BerthClient) c = NULL;
    gboolean ok;

    tls.cert = g_strdup(given->cert);
    tls.key = g_strdup(given->key);
    tls.ca = g_strdup(given->ca);
    if (!berth_client_tls_find(&tls, &error)) {
        fprintf(stderr, "berthctl: %s\n", error->message);
        berth_client_tls_clear(&tls);
        return 2;
    }
    printf("client certificate: %s\nclient key:         %s\nCA certificate:     %s\n", tls.cert,
           tls.key, tls.ca);
    ok = show_client(&tls);
    if (!uri || !g_str_has_prefix(uri, "tls://")) {
        printf("(give --connect tls://HOST:PORT to check berthd's certificate too)\n");
        berth_client_tls_clear(&tls);
        return ok ? 0 : 1;
    }
    c = berth_client_connect_tls(uri, &tls, &error);
    berth_client_tls_clear(&tls);
    if (c) {
        printf("server certificate: %s (verifies against the CA, names the host)\n",
               berth_client_server_subject(c));
    }
    /* TLS 1.3 tells a client it is refused after the handshake: one call to know. */
    if (!c || !berth_client_call(c, "agent.ping", NULL, NULL, &error)) {
        printf("berthd:             %s\n", error->message);
        return 3;
    }
    printf("berthd:             accepts this client\n");
    return ok ? 0 : 1;
}
