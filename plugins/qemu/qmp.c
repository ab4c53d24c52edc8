/* The QMP client: one QEMU monitor connection, I/O on a GMainContext, waiters on job threads. */
#include "qmp.h"
#include "qmp-private.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <glib-unix.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include <berth/error.h>

/* Deepest nesting accepted from QEMU: bounds the recursion of the tree code (query-qmp-schema
 * and friends stay far below it). */
#define QMP_MAX_DEPTH 128
/* One read() at most; a dispatch reads at most QMP_READS_PER_DISPATCH of them so that a
 * flooding QEMU cannot starve the main loop. */
#define QMP_READ_CHUNK 65536
#define QMP_READS_PER_DISPATCH 4
/* How often a connect retries while the socket is missing or refuses (QEMU still starting). */
#define QMP_CONNECT_RETRY_US (5 * G_TIME_SPAN_MILLISECOND)

typedef enum {
    QMP_STATE_NEW = 0,      /* no socket yet */
    QMP_STATE_GREETING,     /* socket open, waiting for {"QMP":...} */
    QMP_STATE_NEGOTIATING,  /* greeting read, qmp_capabilities on its way */
    QMP_STATE_CONNECTED,    /* commands allowed */
    QMP_STATE_CLOSED,       /* for good: a BerthQmp connects once */
} QmpState;

/* One command waiting for its reply. Owned by the waiting thread; the table only points. */
struct QmpPending {
    char *id;
    char *command;
    gboolean done;
    char *return_json;
    char *error_class;
    GError *error;
};

/* The socket's watch on the context. It owns the fd (closed in finalize) and an allocation
 * reference on the client, so a dispatch in progress keeps both alive. */
typedef struct {
    GSource source;
    BerthQmp *qmp;
    int fd;
    gpointer tag;
} QmpSource;

struct BerthQmp {
    gint refs;       /* public references (atomic) */
    gint alloc_refs; /* memory: 1 for all public refs, 1 per waiter, source and idle (atomic) */
    GMainContext *ctx;
    BerthQmpEventFunc on_event;
    BerthQmpClosedFunc on_closed;
    gpointer user_data;

    /* Protects every member below except the reader's (msg ... reading). */
    GMutex lock;
    GCond cond; /* broadcast on every reply, close, state change, callback end and cancel */
    QmpState state;
    gboolean was_connected;   /* the closed callback is owed once */
    gboolean closed_notified; /* ... and was delivered (or dropped) */
    gboolean disposed;        /* the last public reference is gone: no more callbacks */
    guint in_callback;        /* callbacks running now on the context */
    gboolean kick_scheduled;  /* an idle will flush the output queue */
    gboolean detached;        /* fuzzing: no socket, input fed by qmp_feed() */
    GError *close_reason;
    char *version;            /* set once by the greeting */
    gsize max_message;
    guint64 next_id;
    GHashTable *pending; /* id -> QmpPending */
    GByteArray *outq;    /* bytes not yet written */
    QmpSource *source;   /* the socket watch, NULL before connect and after close */

    /* The reader: touched only on the context thread (or by qmp_feed()). */
    GString *msg;        /* the message being received, from its '{' */
    guint depth;         /* nesting depth inside it; 0 between messages */
    gboolean in_string;
    gboolean escaped;
    gboolean reading;    /* input is being processed: no nested flush */
};

static void qmp_fail_locked(BerthQmp *qmp, GError *reason);
static void qmp_finish_close(BerthQmp *qmp);

static BerthQmp *
qmp_alloc_ref(BerthQmp *qmp)
{
    g_atomic_int_inc(&qmp->alloc_refs);
    return qmp;
}

static void
qmp_alloc_unref(BerthQmp *qmp)
{
    if (!g_atomic_int_dec_and_test(&qmp->alloc_refs)) {
        return;
    }
    g_hash_table_unref(qmp->pending);
    g_byte_array_unref(qmp->outq);
    g_string_free(qmp->msg, TRUE);
    g_clear_error(&qmp->close_reason);
    g_free(qmp->version);
    g_main_context_unref(qmp->ctx);
    g_mutex_clear(&qmp->lock);
    g_cond_clear(&qmp->cond);
    g_free(qmp);
}

/* ---- callbacks: never under the lock, never after the last unref ---- */

static gboolean
qmp_callback_begin(BerthQmp *qmp)
{
    gboolean ok;

    g_mutex_lock(&qmp->lock);
    ok = !qmp->disposed;
    if (ok) {
        qmp->in_callback++;
    }
    g_mutex_unlock(&qmp->lock);
    return ok;
}

static void
qmp_callback_end(BerthQmp *qmp)
{
    g_mutex_lock(&qmp->lock);
    qmp->in_callback--;
    g_cond_broadcast(&qmp->cond);
    g_mutex_unlock(&qmp->lock);
}

/* ---- JSON ---- */

static void
json_gen_value(yajl_gen g, yajl_val v)
{
    switch (v->type) {
    case yajl_t_string:
        yajl_gen_string(g, (const unsigned char *) v->u.string, strlen(v->u.string));
        break;
    case yajl_t_number:
        yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
        break;
    case yajl_t_object:
        yajl_gen_map_open(g);
        for (size_t i = 0; i < v->u.object.len; i++) {
            yajl_gen_string(g, (const unsigned char *) v->u.object.keys[i],
                            strlen(v->u.object.keys[i]));
            json_gen_value(g, v->u.object.values[i]);
        }
        yajl_gen_map_close(g);
        break;
    case yajl_t_array:
        yajl_gen_array_open(g);
        for (size_t i = 0; i < v->u.array.len; i++) {
            json_gen_value(g, v->u.array.values[i]);
        }
        yajl_gen_array_close(g);
        break;
    case yajl_t_true:
        yajl_gen_bool(g, 1);
        break;
    case yajl_t_false:
        yajl_gen_bool(g, 0);
        break;
    case yajl_t_null:
    case yajl_t_any:
        yajl_gen_null(g);
        break;
    }
}

static char *
json_to_text(yajl_val v)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *buf = NULL;
    size_t len = 0;
    char *out;

    json_gen_value(g, v);
    yajl_gen_get_buf(g, &buf, &len);
    out = g_strndup((const char *) buf, len);
    yajl_gen_free(g);
    return out;
}

static yajl_val
json_member(yajl_val obj, const char *key)
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

/* Builds {"execute":COMMAND,"arguments":ARGS,"id":ID} plus a newline, or fails when @args_json
 * is not a JSON object (QEMU would answer without an id, which nobody could match). */
static GByteArray *
qmp_build_command(const char *command, const char *args_json, const char *id, GError **error)
{
    yajl_val args = NULL;
    yajl_gen g;
    const unsigned char *buf = NULL;
    size_t len = 0;
    GByteArray *line;

    if (args_json) {
        char errbuf[128] = "";

        args = yajl_tree_parse(args_json, errbuf, sizeof errbuf);
        if (!YAJL_IS_OBJECT(args)) {
            g_strdelimit(errbuf, "\r\n", ' ');
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                        "arguments of QMP command '%s' are not a JSON object%s%s", command,
                        args ? "" : ": ", args ? "" : g_strstrip(errbuf));
            yajl_tree_free(args);
            return NULL;
        }
    }
    g = yajl_gen_alloc(NULL);
    yajl_gen_config(g, yajl_gen_validate_utf8, 1);
    yajl_gen_map_open(g);
    yajl_gen_string(g, (const unsigned char *) "execute", 7);
    if (yajl_gen_string(g, (const unsigned char *) command, strlen(command)) != yajl_gen_status_ok) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "QMP command name is not valid UTF-8");
        yajl_gen_free(g);
        yajl_tree_free(args);
        return NULL;
    }
    if (args) {
        yajl_gen_string(g, (const unsigned char *) "arguments", 9);
        json_gen_value(g, args);
    }
    yajl_gen_string(g, (const unsigned char *) "id", 2);
    yajl_gen_string(g, (const unsigned char *) id, strlen(id));
    yajl_gen_map_close(g);
    yajl_gen_get_buf(g, &buf, &len);
    line = g_byte_array_sized_new(len + 2);
    g_byte_array_append(line, buf, len);
    g_byte_array_append(line, (const guint8 *) "\r\n", 2);
    yajl_gen_free(g);
    yajl_tree_free(args);
    return line;
}

/* ---- messages from QEMU ---- */

static gboolean
qmp_handle_greeting(BerthQmp *qmp, yajl_val greeting, GError **error)
{
    yajl_val qemu = json_member(json_member(greeting, "version"), "qemu");
    yajl_val major = json_member(qemu, "major");
    yajl_val minor = json_member(qemu, "minor");
    yajl_val micro = json_member(qemu, "micro");
    gboolean ok = FALSE;

    if (!YAJL_IS_INTEGER(major) || !YAJL_IS_INTEGER(minor) || !YAJL_IS_INTEGER(micro)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent a QMP greeting without a version");
        return FALSE;
    }
    g_mutex_lock(&qmp->lock);
    if (qmp->state == QMP_STATE_GREETING && !qmp->version) {
        qmp->version = g_strdup_printf("%lld.%lld.%lld", YAJL_GET_INTEGER(major),
                                       YAJL_GET_INTEGER(minor), YAJL_GET_INTEGER(micro));
        qmp->state = QMP_STATE_NEGOTIATING;
        g_cond_broadcast(&qmp->cond);
        ok = TRUE;
    }
    g_mutex_unlock(&qmp->lock);
    if (!ok) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent a second QMP greeting");
    }
    return ok;
}

static gboolean
qmp_handle_event(BerthQmp *qmp, yajl_val event, yajl_val root, GError **error)
{
    yajl_val data = json_member(root, "data");
    yajl_val ts = json_member(root, "timestamp");
    yajl_val secs = json_member(ts, "seconds");
    yajl_val usecs = json_member(ts, "microseconds");
    gint64 timestamp_us = 0;
    g_autofree char *data_json = NULL;

    if (!YAJL_IS_STRING(event)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent an event whose name is not a string");
        return FALSE;
    }
    if (data && !YAJL_IS_OBJECT(data)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent event %s with data that is not an object", YAJL_GET_STRING(event));
        return FALSE;
    }
    if (YAJL_IS_INTEGER(secs) && YAJL_IS_INTEGER(usecs) && YAJL_GET_INTEGER(secs) >= 0 &&
        YAJL_GET_INTEGER(secs) < G_MAXINT64 / G_USEC_PER_SEC - 1 &&
        YAJL_GET_INTEGER(usecs) >= 0 && YAJL_GET_INTEGER(usecs) < G_USEC_PER_SEC) {
        timestamp_us = YAJL_GET_INTEGER(secs) * G_USEC_PER_SEC + YAJL_GET_INTEGER(usecs);
    }
    data_json = data ? json_to_text(data) : g_strdup("{}");
    if (qmp->on_event && qmp_callback_begin(qmp)) {
        qmp->on_event(qmp, YAJL_GET_STRING(event), data_json, timestamp_us, qmp->user_data);
        qmp_callback_end(qmp);
    }
    return TRUE;
}

/* Hands a reply to its waiter. A reply without an id goes to the only waiting command if there
 * is exactly one (QEMU answers without an id only requests it could not parse); with none it
 * is dropped, with several it is a protocol error. Unknown ids (late replies) are dropped. */
static gboolean
qmp_handle_reply(BerthQmp *qmp, yajl_val root, yajl_val ret, yajl_val err, GError **error)
{
    yajl_val id = json_member(root, "id");
    yajl_val class = json_member(err, "class");
    yajl_val desc = json_member(err, "desc");
    QmpPending *p = NULL;

    if (err && (!YAJL_IS_STRING(class) || !YAJL_IS_STRING(desc))) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent an error reply without a class and description");
        return FALSE;
    }
    g_mutex_lock(&qmp->lock);
    if (qmp->state == QMP_STATE_CLOSED) {
        g_mutex_unlock(&qmp->lock);
        return TRUE;
    }
    if (YAJL_IS_STRING(id)) {
        p = g_hash_table_lookup(qmp->pending, YAJL_GET_STRING(id));
    } else if (!id) {
        guint n = g_hash_table_size(qmp->pending);

        if (n > 1) {
            g_mutex_unlock(&qmp->lock);
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "QEMU sent a reply without an id while %u commands were waiting", n);
            return FALSE;
        }
        if (n == 1) {
            GHashTableIter it;

            g_hash_table_iter_init(&it, qmp->pending);
            g_hash_table_iter_next(&it, NULL, (gpointer *) &p);
        }
    }
    if (!p) {
        g_mutex_unlock(&qmp->lock);
        g_info("QMP: dropped a reply nobody waits for (a late reply after a timeout)");
        return TRUE;
    }
    if (err) {
        p->error_class = g_strdup(YAJL_GET_STRING(class));
        p->error = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, "QEMU refused %s: %s",
                               p->command, YAJL_GET_STRING(desc));
    } else {
        p->return_json = json_to_text(ret);
    }
    p->done = TRUE;
    g_hash_table_remove(qmp->pending, p->id);
    g_cond_broadcast(&qmp->cond);
    g_mutex_unlock(&qmp->lock);
    return TRUE;
}

static gboolean
qmp_handle_message(BerthQmp *qmp, const char *text, GError **error)
{
    char errbuf[256] = "";
    yajl_val root = yajl_tree_parse(text, errbuf, sizeof errbuf);
    yajl_val greeting, event, ret, err;
    gboolean ok;
    QmpState state;

    if (!root) {
        g_strdelimit(errbuf, "\r\n", ' ');
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, "QEMU sent malformed JSON: %s",
                    g_strstrip(errbuf));
        return FALSE;
    }
    greeting = json_member(root, "QMP");
    event = json_member(root, "event");
    ret = json_member(root, "return");
    err = json_member(root, "error");
    g_mutex_lock(&qmp->lock);
    state = qmp->state;
    g_mutex_unlock(&qmp->lock);

    if (greeting) {
        ok = qmp_handle_greeting(qmp, greeting, error);
    } else if (state == QMP_STATE_GREETING) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent a message before its QMP greeting");
        ok = FALSE;
    } else if (event) {
        ok = qmp_handle_event(qmp, event, root, error);
    } else if (ret || err) {
        ok = qmp_handle_reply(qmp, root, ret, err, error);
    } else {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "QEMU sent a message that is neither a reply nor an event");
        ok = FALSE;
    }
    yajl_tree_free(root);
    return ok;
}

static gboolean
qmp_is_closed(BerthQmp *qmp)
{
    gboolean closed;

    g_mutex_lock(&qmp->lock);
    closed = qmp->state == QMP_STATE_CLOSED;
    g_mutex_unlock(&qmp->lock);
    return closed;
}

/* Splits the byte stream into top-level JSON objects (strings and nesting tracked, so any
 * split of the stream works) and handles each whole one. The message size is checked before
 * anything is buffered. Returns FALSE once the connection is closed (by an error here or by a
 * callback); the rest of @data is then dropped. */
static gboolean
qmp_process_input(BerthQmp *qmp, const guint8 *data, gsize len)
{
    gsize start = 0; /* where the part of the current message inside @data begins */
    GError *error = NULL;
    gsize max;

    g_mutex_lock(&qmp->lock);
    max = qmp->max_message;
    g_mutex_unlock(&qmp->lock);

    for (gsize i = 0; i < len; i++) {
        guint8 c = data[i];

        if (c == '\0') {
            error = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                "QEMU sent malformed JSON: a NUL byte");
            break;
        }
        if (qmp->depth == 0) {
            if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                continue;
            }
            if (c != '{') {
                error = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                    "QEMU sent malformed JSON: unexpected byte 0x%02x "
                                    "outside a message", c);
                break;
            }
            qmp->depth = 1;
            start = i;
            continue;
        }
        if (qmp->in_string) {
            if (qmp->escaped) {
                qmp->escaped = FALSE;
            } else if (c == '\\') {
                qmp->escaped = TRUE;
            } else if (c == '"') {
                qmp->in_string = FALSE;
            }
        } else if (c == '"') {
            qmp->in_string = TRUE;
        } else if (c == '{' || c == '[') {
            if (++qmp->depth > QMP_MAX_DEPTH) {
                error = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                    "QEMU sent JSON nested deeper than %d levels",
                                    QMP_MAX_DEPTH);
                break;
            }
        } else if (c == '}' || c == ']') {
            qmp->depth--;
        }
        if (qmp->msg->len + (i - start + 1) > max) {
            error = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                "QEMU sent a message larger than the limit of %" G_GSIZE_FORMAT
                                " bytes",
                                max);
            break;
        }
        if (qmp->depth == 0) {
            g_string_append_len(qmp->msg, (const char *) data + start, (gssize) (i - start + 1));
            if (!qmp_handle_message(qmp, qmp->msg->str, &error)) {
                break;
            }
            g_string_truncate(qmp->msg, 0);
            if (qmp_is_closed(qmp)) {
                return FALSE;
            }
        }
    }
    if (!error) {
        if (qmp->depth > 0) {
            g_string_append_len(qmp->msg, (const char *) data + start, (gssize) (len - start));
        }
        return TRUE;
    }
    g_string_truncate(qmp->msg, 0);
    qmp->depth = 0;
    qmp->in_string = FALSE;
    qmp->escaped = FALSE;
    g_mutex_lock(&qmp->lock);
    qmp_fail_locked(qmp, error);
    g_mutex_unlock(&qmp->lock);
    return FALSE;
}

/* Reads what the socket holds (at most @max_reads chunks; 0: until it would block) and handles
 * it. Returns FALSE when the connection ended. */
static gboolean
qmp_read(BerthQmp *qmp, int fd, guint max_reads)
{
    g_autofree guint8 *buf = g_malloc(QMP_READ_CHUNK);

    for (guint n = 0; max_reads == 0 || n < max_reads; n++) {
        ssize_t got = read(fd, buf, QMP_READ_CHUNK);

        if (got < 0 && errno == EINTR) {
            continue;
        }
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return TRUE;
        }
        if (got <= 0) {
            /* A reset is an EOF too: QEMU exited with our last command unread. */
            GError *reason = got == 0 || errno == ECONNRESET
                ? g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                              "monitor connection closed by QEMU")
                : g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                              "reading from the QEMU monitor failed: %s", g_strerror(errno));

            g_mutex_lock(&qmp->lock);
            qmp_fail_locked(qmp, reason);
            g_mutex_unlock(&qmp->lock);
            return FALSE;
        }
        if (!qmp_process_input(qmp, buf, (gsize) got)) {
            return FALSE;
        }
    }
    return TRUE;
}

/* ---- output, on the context thread ---- */

static void
qmp_write_locked(BerthQmp *qmp)
{
    QmpSource *src = qmp->source;

    if (!src || qmp->state == QMP_STATE_CLOSED) {
        return;
    }
    while (qmp->outq->len > 0) {
        ssize_t n = send(src->fd, qmp->outq->data, qmp->outq->len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n < 0) {
            qmp_fail_locked(qmp, g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                             "writing to the QEMU monitor failed: %s",
                                             g_strerror(errno)));
            return;
        }
        g_byte_array_remove_range(qmp->outq, 0, (guint) n);
    }
    g_source_modify_unix_fd(&src->source, src->tag,
                            G_IO_IN | G_IO_HUP | G_IO_ERR | (qmp->outq->len ? G_IO_OUT : 0));
}

static gboolean
qmp_kick_cb(gpointer data)
{
    BerthQmp *qmp = data;
    gboolean closed;

    g_mutex_lock(&qmp->lock);
    qmp->kick_scheduled = FALSE;
    qmp_write_locked(qmp);
    closed = qmp->state == QMP_STATE_CLOSED;
    g_mutex_unlock(&qmp->lock);
    if (closed) {
        qmp_finish_close(qmp);
    }
    return G_SOURCE_REMOVE;
}

/* Queues @line and makes the context write it. Called with the lock held, any thread. */
static void
qmp_queue_locked(BerthQmp *qmp, GByteArray *line)
{
    g_byte_array_append(qmp->outq, line->data, line->len);
    if (!qmp->kick_scheduled && !qmp->detached) {
        GSource *idle = g_idle_source_new();

        qmp->kick_scheduled = TRUE;
        g_source_set_priority(idle, G_PRIORITY_DEFAULT);
        g_source_set_callback(idle, qmp_kick_cb, qmp_alloc_ref(qmp),
                              (GDestroyNotify) qmp_alloc_unref);
        g_source_attach(idle, qmp->ctx);
        g_source_unref(idle);
    }
}

/* ---- the socket watch ---- */

static gboolean
qmp_source_dispatch(GSource *source, GSourceFunc callback, gpointer user_data)
{
    QmpSource *src = (QmpSource *) source;
    BerthQmp *qmp = src->qmp;
    GIOCondition rev = g_source_query_unix_fd(source, src->tag);
    gboolean open = TRUE;

    if (rev & G_IO_OUT) {
        g_mutex_lock(&qmp->lock);
        qmp_write_locked(qmp);
        open = qmp->state != QMP_STATE_CLOSED;
        g_mutex_unlock(&qmp->lock);
    }
    if (open && (rev & (G_IO_IN | G_IO_HUP | G_IO_ERR))) {
        qmp->reading = TRUE;
        open = qmp_read(qmp, src->fd, QMP_READS_PER_DISPATCH);
        qmp->reading = FALSE;
    }
    if (!open || qmp_is_closed(qmp)) {
        qmp_finish_close(qmp);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static void
qmp_source_finalize(GSource *source)
{
    QmpSource *src = (QmpSource *) source;

    if (src->fd >= 0) {
        close(src->fd);
    }
    qmp_alloc_unref(src->qmp);
}

static GSourceFuncs qmp_source_funcs = {
    .dispatch = qmp_source_dispatch,
    .finalize = qmp_source_finalize,
};

/* ---- closing ---- */

/* Marks the connection closed for @reason (taken), fails every waiter and drops the output.
 * The socket itself is released by qmp_finish_close(). */
static void
qmp_fail_locked(BerthQmp *qmp, GError *reason)
{
    GHashTableIter it;
    QmpPending *p;

    if (qmp->state == QMP_STATE_CLOSED) {
        g_error_free(reason);
        return;
    }
    qmp->state = QMP_STATE_CLOSED;
    qmp->close_reason = reason;
    g_hash_table_iter_init(&it, qmp->pending);
    while (g_hash_table_iter_next(&it, NULL, (gpointer *) &p)) {
        p->error = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                               "QEMU monitor closed before answering %s: %s", p->command,
                               reason->message);
        p->done = TRUE;
        g_hash_table_iter_remove(&it);
    }
    g_byte_array_set_size(qmp->outq, 0);
    g_cond_broadcast(&qmp->cond);
}

/* Removes the socket watch (its fd closes once no dispatch uses it) and, on the context
 * thread, runs @closed if it is owed. Any thread. */
static void
qmp_release_source(BerthQmp *qmp)
{
    QmpSource *src;

    g_mutex_lock(&qmp->lock);
    src = g_steal_pointer(&qmp->source);
    g_mutex_unlock(&qmp->lock);
    if (src) {
        g_source_destroy(&src->source);
        g_source_unref(&src->source);
    }
}

static gboolean
qmp_take_closed_notification(BerthQmp *qmp, GError **reason)
{
    gboolean owed;

    g_mutex_lock(&qmp->lock);
    owed = qmp->state == QMP_STATE_CLOSED && qmp->was_connected && !qmp->closed_notified &&
           !qmp->disposed;
    if (owed) {
        qmp->closed_notified = TRUE;
        *reason = g_error_copy(qmp->close_reason);
    }
    g_mutex_unlock(&qmp->lock);
    return owed;
}

/* On the context thread, after the state became CLOSED. */
static void
qmp_finish_close(BerthQmp *qmp)
{
    g_autoptr(GError) reason = NULL;

    qmp_release_source(qmp);
    if (qmp->on_closed && qmp_take_closed_notification(qmp, &reason) &&
        qmp_callback_begin(qmp)) {
        qmp->on_closed(qmp, reason, qmp->user_data);
        qmp_callback_end(qmp);
    }
}

static gboolean
qmp_closed_idle_cb(gpointer data)
{
    qmp_finish_close(data);
    return G_SOURCE_REMOVE;
}

/* ---- public ---- */

BerthQmp *
berth_qmp_new(GMainContext *ctx, BerthQmpEventFunc on_event, BerthQmpClosedFunc on_closed,
              gpointer user_data)
{
    BerthQmp *qmp = g_new0(BerthQmp, 1);

    g_return_val_if_fail(ctx != NULL, NULL);
    qmp->refs = 1;
    qmp->alloc_refs = 1;
    qmp->ctx = g_main_context_ref(ctx);
    qmp->on_event = on_event;
    qmp->on_closed = on_closed;
    qmp->user_data = user_data;
    g_mutex_init(&qmp->lock);
    g_cond_init(&qmp->cond);
    qmp->max_message = BERTH_QMP_DEFAULT_MAX_MESSAGE;
    qmp->pending = g_hash_table_new(g_str_hash, g_str_equal);
    qmp->outq = g_byte_array_new();
    qmp->msg = g_string_new(NULL);
    return qmp;
}

BerthQmp *
berth_qmp_ref(BerthQmp *qmp)
{
    g_return_val_if_fail(qmp != NULL, NULL);
    g_atomic_int_inc(&qmp->refs);
    return qmp;
}

void
berth_qmp_unref(BerthQmp *qmp)
{
    if (!qmp || !g_atomic_int_dec_and_test(&qmp->refs)) {
        return;
    }
    g_mutex_lock(&qmp->lock);
    qmp->disposed = TRUE;
    if (qmp->state != QMP_STATE_CLOSED && qmp->state != QMP_STATE_NEW) {
        qmp_fail_locked(qmp, g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                         "the QMP client was released"));
    }
    qmp->state = QMP_STATE_CLOSED;
    /* A callback running on the context thread finishes before the owner's data goes away;
     * on the context thread itself the only callback that can run is our caller. */
    if (!g_main_context_is_owner(qmp->ctx)) {
        while (qmp->in_callback > 0) {
            g_cond_wait(&qmp->cond, &qmp->lock);
        }
    }
    g_mutex_unlock(&qmp->lock);
    qmp_release_source(qmp);
    qmp_alloc_unref(qmp);
}

void
berth_qmp_set_max_message(BerthQmp *qmp, gsize max_bytes)
{
    g_return_if_fail(qmp != NULL && max_bytes > 0);
    g_mutex_lock(&qmp->lock);
    qmp->max_message = max_bytes;
    g_mutex_unlock(&qmp->lock);
}

static void
qmp_cancelled_cb(GCancellable *cancellable, gpointer data)
{
    BerthQmp *qmp = data;

    g_mutex_lock(&qmp->lock);
    g_cond_broadcast(&qmp->cond);
    g_mutex_unlock(&qmp->lock);
}

/* Sends @command and waits for its reply, in @allowed state. */
static gboolean
qmp_execute(BerthQmp *qmp, QmpState allowed, const char *command, const char *args_json,
            guint timeout_ms, GCancellable *cancellable, char **return_json, char **error_class,
            GError **error)
{
    QmpPending p = {0};
    gint64 deadline = timeout_ms ? g_get_monotonic_time() + timeout_ms * G_TIME_SPAN_MILLISECOND
                                 : 0;
    gulong handler = 0;
    g_autoptr(GByteArray) line = NULL;
    gboolean ok = FALSE;

    p.command = g_strdup(command);
    qmp_alloc_ref(qmp);
    if (cancellable) {
        handler = g_cancellable_connect(cancellable, G_CALLBACK(qmp_cancelled_cb), qmp, NULL);
    }
    g_mutex_lock(&qmp->lock);
    if (qmp->state != allowed) {
        if (qmp->state == QMP_STATE_CLOSED && qmp->close_reason) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED, "cannot send %s: %s",
                        command, qmp->close_reason->message);
        } else {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "cannot send %s: the QEMU monitor is not connected", command);
        }
        g_mutex_unlock(&qmp->lock);
        goto out;
    }
    p.id = g_strdup_printf("berth-%" G_GUINT64_FORMAT, ++qmp->next_id);
    line = qmp_build_command(command, args_json, p.id, error);
    if (!line) {
        g_mutex_unlock(&qmp->lock);
        goto out;
    }
    if (g_cancellable_is_cancelled(cancellable)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED, "%s was cancelled before it was sent",
                    command);
        g_mutex_unlock(&qmp->lock);
        goto out;
    }
    g_hash_table_insert(qmp->pending, p.id, &p);
    qmp_queue_locked(qmp, line);
    while (!p.done) {
        if (g_cancellable_is_cancelled(cancellable)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED,
                        "%s was cancelled while waiting for QEMU", command);
            break;
        }
        if (deadline == 0) {
            g_cond_wait(&qmp->cond, &qmp->lock);
        } else if (!g_cond_wait_until(&qmp->cond, &qmp->lock, deadline) && !p.done) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                        "QEMU did not answer %s within %u ms", command, timeout_ms);
            break;
        }
    }
    if (!p.done) {
        g_hash_table_remove(qmp->pending, p.id);
    }
    g_mutex_unlock(&qmp->lock);
    if (p.done && p.error) {
        g_propagate_error(error, g_steal_pointer(&p.error));
        if (error_class) {
            *error_class = g_steal_pointer(&p.error_class);
        }
    } else if (p.done) {
        ok = TRUE;
        if (return_json) {
            *return_json = g_steal_pointer(&p.return_json);
        }
    }

out:
    if (handler) {
        g_cancellable_disconnect(cancellable, handler);
    }
    g_free(p.id);
    g_free(p.command);
    g_free(p.return_json);
    g_free(p.error_class);
    g_clear_error(&p.error);
    qmp_alloc_unref(qmp);
    return ok;
}

static gboolean
qmp_check_thread(BerthQmp *qmp, const char *what, GError **error)
{
    if (g_main_context_is_owner(qmp->ctx)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                    "%s called on the thread that runs the QMP client's context", what);
        return FALSE;
    }
    return TRUE;
}

/* Closes without a closed callback: the connection never was up. */
static void
qmp_abort_connect(BerthQmp *qmp, GError *reason)
{
    g_mutex_lock(&qmp->lock);
    qmp_fail_locked(qmp, reason);
    g_mutex_unlock(&qmp->lock);
    qmp_release_source(qmp);
}

gboolean
berth_qmp_connect_fd(BerthQmp *qmp, int fd, guint timeout_ms, GCancellable *cancellable,
                     GError **error)
{
    gint64 deadline = timeout_ms ? g_get_monotonic_time() + timeout_ms * G_TIME_SPAN_MILLISECOND
                                 : 0;
    QmpSource *src;
    gulong handler = 0;
    GError *fail = NULL;
    QmpState state;

    g_return_val_if_fail(qmp != NULL && fd >= 0, FALSE);
    if (!qmp_check_thread(qmp, "berth_qmp_connect", error)) {
        close(fd);
        return FALSE;
    }
    if (!g_unix_set_fd_nonblocking(fd, TRUE, NULL)) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                    "cannot use the QEMU monitor socket: %s", g_strerror(errno));
        close(fd);
        return FALSE;
    }
    src = (QmpSource *) g_source_new(&qmp_source_funcs, sizeof(QmpSource));
    src->qmp = qmp_alloc_ref(qmp);
    src->fd = fd;
    src->tag = g_source_add_unix_fd(&src->source, fd, G_IO_IN | G_IO_HUP | G_IO_ERR);
    g_source_set_priority(&src->source, G_PRIORITY_DEFAULT);

    g_mutex_lock(&qmp->lock);
    if (qmp->state != QMP_STATE_NEW) {
        g_mutex_unlock(&qmp->lock);
        g_source_unref(&src->source);
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_STATE,
                    "the QMP client was connected before; use a new one");
        return FALSE;
    }
    qmp->state = QMP_STATE_GREETING;
    qmp->source = src;
    g_source_attach(&src->source, qmp->ctx);
    g_mutex_unlock(&qmp->lock);

    qmp_alloc_ref(qmp);
    if (cancellable) {
        handler = g_cancellable_connect(cancellable, G_CALLBACK(qmp_cancelled_cb), qmp, NULL);
    }
    g_mutex_lock(&qmp->lock);
    while (qmp->state == QMP_STATE_GREETING) {
        if (g_cancellable_is_cancelled(cancellable)) {
            fail = g_error_new(BERTH_ERROR, BERTH_ERROR_CANCELLED,
                               "connecting to the QEMU monitor was cancelled");
            break;
        }
        if (deadline == 0) {
            g_cond_wait(&qmp->cond, &qmp->lock);
        } else if (!g_cond_wait_until(&qmp->cond, &qmp->lock, deadline) &&
                   qmp->state == QMP_STATE_GREETING) {
            fail = g_error_new(BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                               "QEMU did not send its QMP greeting within %u ms", timeout_ms);
            break;
        }
    }
    state = qmp->state;
    if (!fail && state == QMP_STATE_CLOSED) {
        fail = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                           "QEMU monitor failed before its greeting: %s",
                           qmp->close_reason->message);
    }
    g_mutex_unlock(&qmp->lock);
    if (handler) {
        g_cancellable_disconnect(cancellable, handler);
    }

    if (!fail) {
        gint64 left = deadline ? (deadline - g_get_monotonic_time()) / G_TIME_SPAN_MILLISECOND : 0;

        if (deadline && left <= 0) {
            fail = g_error_new(BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                               "QEMU did not accept QMP capabilities within %u ms", timeout_ms);
        } else if (qmp_execute(qmp, QMP_STATE_NEGOTIATING, "qmp_capabilities", NULL,
                               deadline ? (guint) left : 0, cancellable, NULL, NULL, &fail)) {
            g_mutex_lock(&qmp->lock);
            if (qmp->state == QMP_STATE_NEGOTIATING) {
                qmp->state = QMP_STATE_CONNECTED;
                qmp->was_connected = TRUE;
            } else {
                fail = g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                   "QEMU monitor closed while connecting: %s",
                                   qmp->close_reason ? qmp->close_reason->message : "closed");
            }
            g_mutex_unlock(&qmp->lock);
        }
    }
    if (fail) {
        g_propagate_error(error, g_error_copy(fail));
        qmp_abort_connect(qmp, fail);
    }
    qmp_alloc_unref(qmp);
    return fail == NULL;
}

gboolean
berth_qmp_connect(BerthQmp *qmp, const char *path, guint timeout_ms, GCancellable *cancellable,
                  GError **error)
{
    gint64 deadline = timeout_ms ? g_get_monotonic_time() + timeout_ms * G_TIME_SPAN_MILLISECOND
                                 : 0;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    int last_errno = 0;

    g_return_val_if_fail(qmp != NULL && path != NULL, FALSE);
    if (!qmp_check_thread(qmp, "berth_qmp_connect", error)) {
        return FALSE;
    }
    if (strlen(path) >= sizeof addr.sun_path) {
        g_set_error(error, BERTH_ERROR, BERTH_ERROR_INVALID_ARGUMENT,
                    "QEMU monitor socket path '%s' is too long", path);
        return FALSE;
    }
    strcpy(addr.sun_path, path);
    for (;;) {
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        gint64 left;

        if (fd < 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_INTERNAL,
                        "cannot create a socket for the QEMU monitor: %s", g_strerror(errno));
            return FALSE;
        }
        if (connect(fd, (struct sockaddr *) &addr, sizeof addr) == 0) {
            left = deadline ? (deadline - g_get_monotonic_time()) / G_TIME_SPAN_MILLISECOND : 0;
            if (deadline && left <= 0) {
                close(fd);
                g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                            "QEMU monitor socket '%s' did not answer within %u ms", path,
                            timeout_ms);
                return FALSE;
            }
            return berth_qmp_connect_fd(qmp, fd, deadline ? (guint) left : 0, cancellable,
                                        error);
        }
        last_errno = errno;
        close(fd);
        if (last_errno != ENOENT && last_errno != ECONNREFUSED && last_errno != EAGAIN &&
            last_errno != EINTR) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                        "cannot connect to the QEMU monitor socket '%s': %s", path,
                        g_strerror(last_errno));
            return FALSE;
        }
        if (g_cancellable_is_cancelled(cancellable)) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_CANCELLED,
                        "connecting to the QEMU monitor socket '%s' was cancelled", path);
            return FALSE;
        }
        left = deadline ? deadline - g_get_monotonic_time() : QMP_CONNECT_RETRY_US;
        if (left <= 0) {
            g_set_error(error, BERTH_ERROR, BERTH_ERROR_TIMEOUT,
                        "QEMU monitor socket '%s' did not accept a connection within %u ms: %s",
                        path, timeout_ms, g_strerror(last_errno));
            return FALSE;
        }
        g_usleep((gulong) MIN(left, QMP_CONNECT_RETRY_US));
    }
}

gboolean
berth_qmp_command(BerthQmp *qmp, const char *command, const char *args_json, guint timeout_ms,
                  GCancellable *cancellable, char **return_json, char **error_class,
                  GError **error)
{
    g_return_val_if_fail(qmp != NULL && command != NULL, FALSE);
    if (!qmp_check_thread(qmp, "berth_qmp_command", error)) {
        return FALSE;
    }
    return qmp_execute(qmp, QMP_STATE_CONNECTED, command, args_json, timeout_ms, cancellable,
                       return_json, error_class, error);
}

gboolean
berth_qmp_is_connected(BerthQmp *qmp)
{
    gboolean connected;

    g_return_val_if_fail(qmp != NULL, FALSE);
    g_mutex_lock(&qmp->lock);
    connected = qmp->state == QMP_STATE_CONNECTED;
    g_mutex_unlock(&qmp->lock);
    return connected;
}

void
berth_qmp_flush_input(BerthQmp *qmp)
{
    QmpSource *src = NULL;
    gboolean open;

    g_return_if_fail(qmp != NULL);
    if (qmp->reading) {
        return; /* called from an event callback: the running read goes on by itself */
    }
    g_mutex_lock(&qmp->lock);
    if (qmp->source && qmp->state != QMP_STATE_CLOSED) {
        src = (QmpSource *) g_source_ref(&qmp->source->source);
    }
    g_mutex_unlock(&qmp->lock);
    if (!src) {
        return;
    }
    qmp->reading = TRUE;
    open = qmp_read(qmp, src->fd, 0);
    qmp->reading = FALSE;
    if (!open || qmp_is_closed(qmp)) {
        qmp_finish_close(qmp);
    }
    g_source_unref(&src->source);
}

void
berth_qmp_close(BerthQmp *qmp)
{
    gboolean owed;

    g_return_if_fail(qmp != NULL);
    g_mutex_lock(&qmp->lock);
    if (qmp->state != QMP_STATE_CLOSED) {
        qmp_fail_locked(qmp, g_error_new(BERTH_ERROR, BERTH_ERROR_PLUGIN_FAILED,
                                         "the monitor connection was closed by berth"));
    }
    owed = qmp->was_connected && !qmp->closed_notified && qmp->on_closed;
    g_mutex_unlock(&qmp->lock);
    qmp_release_source(qmp);
    if (owed) {
        /* Always later on the context, after the event being delivered now (if any). */
        GSource *idle = g_idle_source_new();

        g_source_set_callback(idle, qmp_closed_idle_cb, qmp_alloc_ref(qmp),
                              (GDestroyNotify) qmp_alloc_unref);
        g_source_attach(idle, qmp->ctx);
        g_source_unref(idle);
    }
}

const char *
berth_qmp_qemu_version(BerthQmp *qmp)
{
    const char *version;

    g_return_val_if_fail(qmp != NULL, NULL);
    g_mutex_lock(&qmp->lock);
    version = qmp->version;
    g_mutex_unlock(&qmp->lock);
    return version;
}

/* ---- fuzzing (qmp-private.h) ---- */

BerthQmp *
qmp_new_detached(GMainContext *ctx, BerthQmpEventFunc on_event, gpointer user_data)
{
    BerthQmp *qmp = berth_qmp_new(ctx, on_event, NULL, user_data);

    qmp->detached = TRUE;
    qmp->state = QMP_STATE_GREETING;
    return qmp;
}

gboolean
qmp_feed(BerthQmp *qmp, const guint8 *data, gsize len)
{
    gboolean open;

    g_return_val_if_fail(qmp->detached, FALSE);
    g_mutex_lock(&qmp->lock);
    if (qmp->state == QMP_STATE_NEGOTIATING) {
        qmp->state = QMP_STATE_CONNECTED; /* nobody negotiates here */
    }
    open = qmp->state != QMP_STATE_CLOSED;
    g_mutex_unlock(&qmp->lock);
    return open && qmp_process_input(qmp, data, len);
}

QmpPending *
qmp_expect_reply(BerthQmp *qmp, const char *id, const char *command)
{
    QmpPending *p = g_new0(QmpPending, 1);

    p->id = g_strdup(id);
    p->command = g_strdup(command);
    g_mutex_lock(&qmp->lock);
    g_hash_table_replace(qmp->pending, p->id, p);
    g_mutex_unlock(&qmp->lock);
    return p;
}

gboolean
qmp_pending_finish(BerthQmp *qmp, QmpPending *p, char **return_json, char **error_class,
                   GError **error)
{
    gboolean answered;

    g_mutex_lock(&qmp->lock);
    answered = p->done;
    if (!answered && g_hash_table_lookup(qmp->pending, p->id) == p) {
        g_hash_table_remove(qmp->pending, p->id);
    }
    g_mutex_unlock(&qmp->lock);
    if (answered && p->error) {
        g_propagate_error(error, g_steal_pointer(&p->error));
        *error_class = g_steal_pointer(&p->error_class);
    } else if (answered) {
        *return_json = g_steal_pointer(&p->return_json);
    }
    g_free(p->id);
    g_free(p->command);
    g_free(p->return_json);
    g_free(p->error_class);
    g_clear_error(&p->error);
    g_free(p);
    return answered;
}
