/* A small synchronous JSON-RPC client for berthd (berthctl, tests and the SDK link it). */
#pragma once

#include <berth/error.h>
#include <gio/gio.h>

G_BEGIN_DECLS

/* One connection. Not thread safe: use one client per thread, or lock around it. */
typedef struct BerthClient BerthClient;

/*
 * Connects to "unix:PATH" (or a bare absolute PATH), or to "tls://HOST[:PORT]" (port 16515 by
 * default) with the client certificate found by berth_client_tls_find(). Socket failures come
 * back in the G_IO_ERROR domain (e.g. G_IO_ERROR_NOT_FOUND, G_IO_ERROR_CONNECTION_REFUSED,
 * G_IO_ERROR_PERMISSION_DENIED), a malformed URI as BERTH_ERROR_INVALID_ARGUMENT.
 */
BerthClient *berth_client_connect(const char *uri, GError **error);

/* The files of a TLS client: its certificate and key, and the CA that signed berthd's. */
typedef struct {
    char *cert;
    char *key;
    char *ca;
} BerthClientTls;

void berth_client_tls_clear(BerthClientTls *tls);
/*
 * Fills the fields of @tls that are NULL, each from the first place that names or holds it:
 * the [tls] cert, key and ca keys of $XDG_CONFIG_HOME/berth/client.conf
 * (~/.config/berth/client.conf), then for a non-root user ~/.config/berth/pki/ and finally
 * /etc/berth/pki/ (client-cert.pem, client-key.pem, ca-cert.pem). FALSE with a message naming
 * the places looked at when one is missing.
 */
gboolean berth_client_tls_find(BerthClientTls *tls, GError **error);
/*
 * Connects to "tls://HOST[:PORT]" with these files (NULL fields are found as above). berthd's
 * certificate must chain to the CA and name HOST (else G_IO_ERROR_PERMISSION_DENIED). A
 * refusal by berthd comes back as G_IO_ERROR_PERMISSION_DENIED naming the TLS alert it sent
 * ("certificate_expired", ...), here or (TLS 1.3 sends it after the handshake) on the first
 * call.
 */
BerthClient *berth_client_connect_tls(const char *uri, const BerthClientTls *tls,
                                      GError **error);
/* The subject DN of the server's certificate on a TLS connection (NULL on unix sockets). */
const char *berth_client_server_subject(BerthClient *c);
/* Closes the connection. Accepts NULL. */
void berth_client_free(BerthClient *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BerthClient, berth_client_free)

/*
 * Calls @method with @params_json (a JSON object as text, or NULL) and waits for its reply;
 * notifications that arrive meanwhile are queued for berth_client_next_notification().
 * On success *@result_json (may be NULL) gets the result as compact JSON text (g_free it).
 * A remote error comes back in BERTH_ERROR with the code of its named error (data.name;
 * "method-not-found" -> BERTH_ERROR_UNSUPPORTED, "parse-error" and "invalid-request" ->
 * BERTH_ERROR_INVALID_ARGUMENT) and the server's message; a lost connection or a timeout in
 * G_IO_ERROR (G_IO_ERROR_CONNECTION_CLOSED, G_IO_ERROR_TIMED_OUT).
 */
gboolean berth_client_call(BerthClient *c, const char *method, const char *params_json,
                           char **result_json, GError **error);

/*
 * The next notification: a queued one, or one read within @timeout_ms (-1 = wait for ever,
 * 0 = do not wait). FALSE without @error set when none arrived in time; FALSE with @error
 * when the connection failed. *@method and *@params_json (compact JSON) are g_free'd by the
 * caller.
 */
gboolean berth_client_next_notification(BerthClient *c, gint64 timeout_ms, char **method,
                                        char **params_json, GError **error);

/* How long berth_client_call waits for a reply (-1, the default, = for ever). */
void berth_client_set_call_timeout(BerthClient *c, gint64 timeout_ms);
/* The BERTH_ERROR code the API's error @name stands for (BERTH_ERROR_INTERNAL if unknown). */
int berth_client_error_code_from_name(const char *name);

G_END_DECLS
