/* A small synchronous JSON-RPC client for berthd over its unix socket or mutual TLS. */
#include "client.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "errors.h"
#include "rpc/jsonrpc.h"
#include "rpc/tls-io.h"

/* A reply line from the server is bounded too: a broken or hostile peer cannot make the client
 * allocate without end. Large enough for domain.list of thousands of domains. */
#define MAX_LINE (64u * 1024 * 1024)
#define MAX_DEPTH 128
#define READ_CHUNK 65536
#define TLS_DEFAULT_PORT "16515"
#define TLS_HANDSHAKE_MS 30000

typedef struct {
    char *method;
    char *params;
} Notification;

struct BerthClient {
    int fd;
    gnutls_session_t tls;  /* NULL on unix sockets */
    BerthTlsIo *tls_io;    /* what tls reads through */
    gnutls_certificate_credentials_t cred;
    char *server_subject;
    GString *in;   /* bytes read and not yet consumed */
    gsize scanned; /* no newline in in[0, scanned) */
    guint64 next_id;
    gint64 call_timeout_ms;
    GQueue notes; /* Notification */
};

static void
notification_free(gpointer p)
{
    Notification *n = p;

    g_free(n->method);
    g_free(n->params);
    g_free(n);
}

void
berth_client_free(BerthClient *c)
{
    if (!c) {
        return;
    }
    if (c->tls) {
        gnutls_bye(c->tls, GNUTLS_SHUT_WR);
        gnutls_deinit(c->tls);
    }
    g_free(c->tls_io);
    if (c->cred) {
        gnutls_certificate_free_credentials(c->cred);
    }
    g_free(c->server_subject);
    if (c->fd >= 0) {
        close(c->fd);
    }
    g_string_free(c->in, TRUE);
    g_queue_clear_full(&c->notes, notification_free);
    g_free(c);
}

void
berth_client_set_call_timeout(BerthClient *c, gint64 timeout_ms)
{
    c->call_timeout_ms = timeout_ms;
}

static BerthClient *
client_new(int fd)
{
    BerthClient *c = g_new0(BerthClient, 1);

    c->fd = fd;
    c->in = g_string_sized_new(READ_CHUNK);
    c->next_id = 1;
    c->call_timeout_ms = -1;
    g_queue_init(&c->notes);
    return c;
}

/* The TLS name of an alert ("certificate_expired"), as RFC 8446 spells it. */
static char *
alert_tls_name(gnutls_alert_description_t alert)
{
    const char *name = gnutls_alert_get_strname(alert);

    if (!name) {
        return g_strdup_printf("alert %d", (int) alert);
    }
    if (g_str_has_prefix(name, "GNUTLS_A_")) {
        name += strlen("GNUTLS_A_");
    }
    return g_ascii_strdown(name, -1);
}

/* A gnutls error as a GError: a fatal alert from berthd says what it refused. */
static void
set_tls_error(BerthClient *c, int rc, const char *what, GError **error)
{
    if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED || rc == GNUTLS_E_WARNING_ALERT_RECEIVED) {
        gnutls_alert_description_t alert = gnutls_alert_get(c->tls);
        g_autofree char *name = alert_tls_name(alert);

        g_set_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                    "berthd refused the TLS connection: %s (%s)", name,
                    gnutls_alert_get_name(alert));
        return;
    }
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR) {
        gnutls_datum_t text = {NULL, 0};
        unsigned status = gnutls_session_get_verify_cert_status(c->tls);

        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0);
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_PERMISSION_DENIED,
                    "berthd's certificate does not verify: %s",
                    text.data ? (const char *) text.data : "unknown reason");
        gnutls_free(text.data);
        return;
    }
    g_set_error(error, G_IO_ERROR, rc == GNUTLS_E_PREMATURE_TERMINATION
                                       ? G_IO_ERROR_CONNECTION_CLOSED
                                       : G_IO_ERROR_FAILED,
                "%s: %s", what, gnutls_strerror(rc));
}

void
berth_client_tls_clear(BerthClientTls *tls)
{
    g_clear_pointer(&tls->cert, g_free);
    g_clear_pointer(&tls->key, g_free);
    g_clear_pointer(&tls->ca, g_free);
}

gboolean
berth_client_tls_find(BerthClientTls *tls, GError **error)
{
    g_autofree char *conf = g_build_filename(g_get_user_config_dir(), "berth", "client.conf",
                                             NULL);
    g_autofree char *user_pki = g_build_filename(g_get_user_config_dir(), "berth", "pki", NULL);
    g_autoptr(GKeyFile) kf = g_key_file_new();
    gboolean have_conf = g_key_file_load_from_file(kf, conf, G_KEY_FILE_NONE, NULL);
    char **fields[] = {&tls->cert, &tls->key, &tls->ca};
    const char *keys[] = {"cert", "key", "ca"};
    const char *files[] = {"client-cert.pem", "client-key.pem", "ca-cert.pem"};

    for (guint i = 0; i < G_N_ELEMENTS(fields); i++) {
        g_autofree char *in_user = NULL;
        g_autofree char *in_etc = NULL;

        if (*fields[i]) {
            continue;
        }
        if (have_conf) {
            *fields[i] = g_key_file_get_string(kf, "tls", keys[i], NULL);
            if (*fields[i]) {
                continue;
            }
        }
        in_user = g_build_filename(user_pki, files[i], NULL);
        in_etc = g_build_filename("/etc/berth/pki", files[i], NULL);
        if (geteuid() != 0 && g_file_test(in_user, G_FILE_TEST_EXISTS)) {
            *fields[i] = g_steal_pointer(&in_user);
        } else if (g_file_test(in_etc, G_FILE_TEST_EXISTS)) {
            *fields[i] = g_steal_pointer(&in_etc);
        } else {
            g_autofree char *user_part = geteuid() != 0 ? g_strdup_printf("'%s', ", in_user)
                                                        : g_strdup("");

            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "no TLS client %s: give it with --tls-%s, as %s= in [tls] of '%s', or "
                        "as %s'%s'", keys[i], keys[i], keys[i], conf, user_part, in_etc);
            return FALSE;
        }
    }
    return TRUE;
}

/* "tls://HOST[:PORT]" into its parts ("[V6]" brackets removed). */
static gboolean
parse_tls_uri(const char *uri, char **host, char **port, GError **error)
{
    const char *rest = uri + strlen("tls://");
    const char *colon;

    if (rest[0] == '[') {
        const char *end = strchr(rest, ']');

        if (!end) {
            goto bad;
        }
        *host = g_strndup(rest + 1, (gsize) (end - rest - 1));
        colon = end[1] == ':' ? end + 1 : NULL;
    } else {
        colon = strrchr(rest, ':');
        *host = colon ? g_strndup(rest, (gsize) (colon - rest)) : g_strdup(rest);
    }
    *port = g_strdup(colon && colon[1] ? colon + 1 : TLS_DEFAULT_PORT);
    if (**host && !strchr(*host, '/')) {
        return TRUE;
    }
    g_clear_pointer(host, g_free);
    g_clear_pointer(port, g_free);
bad:
    g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                "'%s' is not a berthd address: expected tls://HOST[:PORT]", uri);
    return FALSE;
}

static int
tcp_connect(const char *host, const char *port, GError **error)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    int fd = -1, saved = ECONNREFUSED;

    if (rc != 0) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND, "cannot resolve '%s': %s", host,
                    gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int on = 1;

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
            break;
        }
        saved = errno;
        if (fd >= 0) {
            close(fd);
        }
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved),
                    "cannot connect to berthd at %s port %s: %s", host, port, g_strerror(saved));
    }
    return fd;
}

BerthClient *
berth_client_connect_tls(const char *uri, const BerthClientTls *given, GError **error)
{
    g_autofree char *host = NULL;
    g_autofree char *port = NULL;
    BerthClientTls tls = {NULL, NULL, NULL};
    g_autoptr(BerthClient) c = NULL;
    const gnutls_datum_t *certs;
    unsigned n_certs = 0;
    gboolean ok;
    int fd, rc;

    if (!g_str_has_prefix(uri, "tls://") || !parse_tls_uri(uri, &host, &port, error)) {
        if (error && !*error) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "'%s' is not a berthd address: expected tls://HOST[:PORT]", uri);
        }
        return NULL;
    }
    if (given) {
        tls.cert = g_strdup(given->cert);
        tls.key = g_strdup(given->key);
        tls.ca = g_strdup(given->ca);
    }
    ok = berth_client_tls_find(&tls, error);
    if (!ok) {
        berth_client_tls_clear(&tls);
        return NULL;
    }
    fd = tcp_connect(host, port, error);
    if (fd < 0) {
        berth_client_tls_clear(&tls);
        return NULL;
    }
    c = client_new(fd);
    gnutls_certificate_allocate_credentials(&c->cred);
    rc = gnutls_certificate_set_x509_trust_file(c->cred, tls.ca, GNUTLS_X509_FMT_PEM);
    if (rc <= 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "cannot load the CA certificate '%s': %s", tls.ca,
                    rc == 0 ? "no certificate in it" : gnutls_strerror(rc));
        berth_client_tls_clear(&tls);
        return NULL;
    }
    rc = gnutls_certificate_set_x509_key_file(c->cred, tls.cert, tls.key, GNUTLS_X509_FMT_PEM);
    if (rc < 0) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "cannot load the client certificate '%s' with key '%s': %s", tls.cert,
                    tls.key, gnutls_strerror(rc));
        berth_client_tls_clear(&tls);
        return NULL;
    }
    berth_client_tls_clear(&tls);
    gnutls_init(&c->tls, GNUTLS_CLIENT);
    gnutls_set_default_priority_append(c->tls, "-VERS-SSL3.0:-VERS-TLS1.0:-VERS-TLS1.1", NULL,
                                       0);
    gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->cred);
    gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, host, strlen(host));
    gnutls_session_set_verify_cert(c->tls, host, 0);
    c->tls_io = g_new(BerthTlsIo, 1);
    berth_tls_io_attach(c->tls_io, c->tls, fd);
    gnutls_handshake_set_timeout(c->tls, TLS_HANDSHAKE_MS);
    do {
        rc = gnutls_handshake(c->tls);
    } while (rc < 0 && !gnutls_error_is_fatal(rc));
    if (rc < 0) {
        set_tls_error(c, rc, "TLS handshake with berthd failed", error);
        return NULL;
    }
    certs = gnutls_certificate_get_peers(c->tls, &n_certs);
    if (certs && n_certs > 0) {
        gnutls_x509_crt_t crt;
        gnutls_datum_t dn = {NULL, 0};

        gnutls_x509_crt_init(&crt);
        if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) >= 0 &&
            gnutls_x509_crt_get_dn3(crt, &dn, 0) >= 0) {
            c->server_subject = g_strndup((const char *) dn.data, dn.size);
            gnutls_free(dn.data);
        }
        gnutls_x509_crt_deinit(crt);
    }
    return g_steal_pointer(&c);
}

const char *
berth_client_server_subject(BerthClient *c)
{
    return c->server_subject;
}

BerthClient *
berth_client_connect(const char *uri, GError **error)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    const char *path;
    int fd;

    if (g_str_has_prefix(uri, "tls://")) {
        return berth_client_connect_tls(uri, NULL, error);
    }
    if (g_str_has_prefix(uri, "unix:")) {
        path = uri + strlen("unix:");
    } else if (uri[0] == '/') {
        path = uri;
    } else {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "'%s' is not a berthd address: expected unix:PATH or tls://HOST:PORT", uri);
        return NULL;
    }
    if (path[0] == '\0' || strlen(path) >= sizeof(addr.sun_path)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "socket path '%s' is empty or longer than %zu bytes", path,
                    sizeof(addr.sun_path) - 1);
        return NULL;
    }
    strcpy(addr.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0) {
        int saved = errno;

        if (fd >= 0) {
            close(fd);
        }
        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved),
                    "cannot connect to berthd at '%s': %s", path, g_strerror(saved));
        return NULL;
    }
    return client_new(fd);
}

static gboolean
write_all(BerthClient *c, const char *buf, gsize len, GError **error)
{
    while (len > 0) {
        gssize n;

        if (c->tls) {
            n = gnutls_record_send(c->tls, buf, len);
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                continue;
            }
            if (n < 0) {
                set_tls_error(c, (int) n, "cannot send to berthd", error);
                return FALSE;
            }
            buf += n;
            len -= (gsize) n;
            continue;
        }
        n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n < 0) {
            int saved = errno;

            if (saved == EINTR) {
                continue;
            }
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(saved),
                        "cannot send to berthd: %s", g_strerror(saved));
            return FALSE;
        }
        buf += n;
        len -= (gsize) n;
    }
    return TRUE;
}

/*
 * Reads one line (without its newline) into *@line, waiting until @deadline (monotonic µs,
 * -1 = for ever). FALSE without @error when the deadline passed.
 */
static gboolean
read_line(BerthClient *c, gint64 deadline, char **line, GError **error)
{
    for (;;) {
        char *nl = memchr(c->in->str + c->scanned, '\n', c->in->len - c->scanned);
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        int timeout = -1;
        gsize old;
        gssize n;

        if (nl) {
            gsize len = (gsize) (nl - c->in->str);

            *line = g_strndup(c->in->str, len);
            g_string_erase(c->in, 0, (gssize) len + 1);
            c->scanned = 0;
            return TRUE;
        }
        c->scanned = c->in->len;
        if (c->in->len > MAX_LINE) {
            g_set_error(error, G_IO_ERROR, G_IO_ERROR_MESSAGE_TOO_LARGE,
                        "berthd sent a line longer than %u bytes", MAX_LINE);
            return FALSE;
        }
        if (c->tls && berth_tls_io_pending(c->tls_io, c->tls)) {
            n = 1;
        } else if (deadline >= 0) {
            gint64 left = deadline - g_get_monotonic_time();

            timeout = left <= 0 ? 0 : (int) MIN((left + 999) / 1000, G_MAXINT);
            n = poll(&pfd, 1, timeout);
        } else {
            /* No deadline: the blocking recv below waits by itself, one syscall fewer. */
            n = 1;
        }
        if (n < 0 && errno != EINTR) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "poll failed: %s",
                        g_strerror(errno));
            return FALSE;
        }
        if (n == 0 && deadline >= 0 && g_get_monotonic_time() >= deadline) {
            return FALSE;
        }
        if (n <= 0) {
            continue;
        }
        old = c->in->len;
        g_string_set_size(c->in, old + READ_CHUNK);
        if (c->tls) {
            n = gnutls_record_recv(c->tls, c->in->str + old, READ_CHUNK);
            g_string_set_size(c->in, old + (gsize) MAX(n, 0));
            if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                continue;
            }
            if (n < 0) {
                set_tls_error(c, (int) n, "cannot read from berthd", error);
                return FALSE;
            }
        } else {
            n = recv(c->fd, c->in->str + old, READ_CHUNK, 0);
            g_string_set_size(c->in, old + (gsize) MAX(n, 0));
        }
        if (n == 0) {
            g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_CONNECTION_CLOSED,
                                "berthd closed the connection");
            return FALSE;
        }
        if (n < 0 && errno != EINTR && errno != EAGAIN) {
            g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno),
                        "cannot read from berthd: %s", g_strerror(errno));
            return FALSE;
        }
    }
}

static yajl_val
object_get(yajl_val obj, const char *key)
{
    if (!YAJL_IS_OBJECT(obj)) {
        return NULL;
    }
    for (size_t i = 0; i < obj->u.object.len; i++) {
        if (strcmp(obj->u.object.keys[i], key) == 0) {
            return obj->u.object.values[i];
        }
    }
    return NULL;
}

static char *
value_to_json(yajl_val v)
{
    GString *out = g_string_new(NULL);

    berth_rpc_json_append_value(out, v);
    return g_string_free(out, FALSE);
}

int
berth_client_error_code_from_name(const char *name)
{
    if (!name) {
        return BERTH_ERROR_INTERNAL;
    }
    for (int code = 0; code < BERTH_ERROR_LAST; code++) {
        if (strcmp(berth_error_name(code), name) == 0) {
            return code;
        }
    }
    if (strcmp(name, "method-not-found") == 0) {
        return BERTH_ERROR_UNSUPPORTED;
    }
    if (strcmp(name, "parse-error") == 0 || strcmp(name, "invalid-request") == 0) {
        return BERTH_ERROR_INVALID_ARGUMENT;
    }
    return BERTH_ERROR_INTERNAL;
}

/* The GError for a JSON-RPC error object. */
static void
set_remote_error(yajl_val err, GError **error)
{
    yajl_val message = object_get(err, "message");
    yajl_val name = object_get(object_get(err, "data"), "name");
    yajl_val rpc_code = object_get(err, "code");
    int code = BERTH_ERROR_INTERNAL;

    if (YAJL_IS_STRING(name)) {
        code = berth_client_error_code_from_name(name->u.string);
    } else if (YAJL_IS_INTEGER(rpc_code)) {
        /* A server that sends no name: undo the code mapping of errors.c. */
        long long rc = rpc_code->u.number.i;

        if (rc == BERTH_RPC_INVALID_PARAMS || rc == BERTH_RPC_INVALID_REQUEST ||
            rc == BERTH_RPC_PARSE_ERROR) {
            code = BERTH_ERROR_INVALID_ARGUMENT;
        } else if (rc == BERTH_RPC_METHOD_NOT_FOUND) {
            code = BERTH_ERROR_UNSUPPORTED;
        } else if (rc <= -32001 && rc > -32000 - BERTH_ERROR_LAST) {
            code = (int) (-32000 - rc);
        }
    }
    g_set_error_literal(error, BERTH_ERROR, code,
                        YAJL_IS_STRING(message) ? message->u.string : "unknown error");
}

/*
 * The result of @reply as JSON text. berthd writes {"jsonrpc":"2.0","id":N,"result":R}: when
 * the parsed reply has exactly those members in that order, R is the text between the prefix
 * and the final brace, taken as is; anything else is serialized again from the tree.
 */
static char *
result_text(const char *line, guint64 id, yajl_val reply)
{
    char prefix[64];
    int plen = g_snprintf(prefix, sizeof(prefix),
                          "{\"jsonrpc\":\"2.0\",\"id\":%" G_GUINT64_FORMAT ",\"result\":", id);
    gsize len = strlen(line);
    yajl_val result = object_get(reply, "result");

    if (!result) {
        return g_strdup("null");
    }
    if (reply->u.object.len == 3 && strcmp(reply->u.object.keys[0], "jsonrpc") == 0 &&
        strcmp(reply->u.object.keys[1], "id") == 0 &&
        strcmp(reply->u.object.keys[2], "result") == 0 && plen > 0 &&
        (gsize) plen < len && strncmp(line, prefix, (gsize) plen) == 0 && line[len - 1] == '}') {
        return g_strndup(line + plen, len - (gsize) plen - 1);
    }
    return value_to_json(result);
}

typedef enum {
    LINE_NOTIFICATION,
    LINE_REPLY,
    LINE_OTHER,
} LineKind;

/* Parses one line: queues a notification, or fills @reply (the tree, caller frees) for a
 * response. */
static LineKind
classify_line(BerthClient *c, const char *line, yajl_val *reply, GError **error)
{
    yajl_val tree, method, id;

    if (!berth_rpc_json_depth_ok(line, strlen(line), MAX_DEPTH)) {
        g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                    "berthd sent JSON nested deeper than %d levels", MAX_DEPTH);
        return LINE_OTHER;
    }
    tree = yajl_tree_parse(line, NULL, 0);
    if (!YAJL_IS_OBJECT(tree)) {
        if (tree) {
            yajl_tree_free(tree);
        }
        g_set_error_literal(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA,
                            "berthd sent a line that is not a JSON object");
        return LINE_OTHER;
    }
    method = object_get(tree, "method");
    id = object_get(tree, "id");
    if (YAJL_IS_STRING(method) && !id) {
        Notification *n = g_new0(Notification, 1);
        yajl_val params = object_get(tree, "params");

        n->method = g_strdup(method->u.string);
        n->params = params ? value_to_json(params) : g_strdup("{}");
        g_queue_push_tail(&c->notes, n);
        yajl_tree_free(tree);
        return LINE_NOTIFICATION;
    }
    *reply = tree;
    return LINE_REPLY;
}

gboolean
berth_client_call(BerthClient *c, const char *method, const char *params_json,
                  char **result_json, GError **error)
{
    g_autoptr(GString) req = g_string_sized_new(128);
    g_autofree char *method_json = berth_rpc_json_string(method);
    guint64 id = c->next_id++;
    gint64 deadline = -1;

    if (result_json) {
        *result_json = NULL;
    }
    g_string_append_printf(req, "{\"jsonrpc\":\"2.0\",\"id\":%" G_GUINT64_FORMAT
                           ",\"method\":%s", id, method_json);
    if (params_json) {
        g_string_append(req, ",\"params\":");
        g_string_append(req, params_json);
    }
    g_string_append(req, "}\n");
    if (!write_all(c, req->str, req->len, error)) {
        return FALSE;
    }
    if (c->call_timeout_ms >= 0) {
        deadline = g_get_monotonic_time() + c->call_timeout_ms * 1000;
    }

    for (;;) {
        g_autofree char *line = NULL;
        GError *local = NULL;
        yajl_val reply = NULL;
        yajl_val rid, err;
        LineKind kind;

        if (!read_line(c, deadline, &line, &local)) {
            if (!local) {
                g_set_error(&local, G_IO_ERROR, G_IO_ERROR_TIMED_OUT,
                            "no reply to '%s' from berthd within %" G_GINT64_FORMAT " ms",
                            method, c->call_timeout_ms);
            }
            g_propagate_error(error, local);
            return FALSE;
        }
        kind = classify_line(c, line, &reply, &local);
        if (local) {
            g_propagate_error(error, local);
            return FALSE;
        }
        if (kind != LINE_REPLY) {
            continue;
        }
        rid = object_get(reply, "id");
        err = object_get(reply, "error");
        /* An error with id null answers a request the server could not read: ours, since
         * this client has one call in flight. */
        if ((YAJL_IS_INTEGER(rid) && (guint64) rid->u.number.i == id) ||
            (YAJL_IS_NULL(rid) && err)) {
            if (err) {
                set_remote_error(err, error);
                yajl_tree_free(reply);
                return FALSE;
            }
            if (result_json) {
                *result_json = result_text(line, id, reply);
            }
            yajl_tree_free(reply);
            return TRUE;
        }
        /* A stale reply (a call that timed out earlier): skip it. */
        yajl_tree_free(reply);
    }
}

gboolean
berth_client_next_notification(BerthClient *c, gint64 timeout_ms, char **method,
                               char **params_json, GError **error)
{
    gint64 deadline = timeout_ms < 0 ? -1 : g_get_monotonic_time() + timeout_ms * 1000;

    while (g_queue_is_empty(&c->notes)) {
        g_autofree char *line = NULL;
        yajl_val reply = NULL;
        GError *local = NULL;

        if (!read_line(c, deadline, &line, &local)) {
            if (local) {
                g_propagate_error(error, local);
            }
            return FALSE;
        }
        if (classify_line(c, line, &reply, &local) == LINE_REPLY) {
            yajl_tree_free(reply);
        }
        if (local) {
            g_propagate_error(error, local);
            return FALSE;
        }
    }
    {
        Notification *n = g_queue_pop_head(&c->notes);

        *method = g_steal_pointer(&n->method);
        *params_json = g_steal_pointer(&n->params);
        notification_free(n);
    }
    return TRUE;
}
