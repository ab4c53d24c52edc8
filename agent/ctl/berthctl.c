/* berthctl: the command-line client of berthd, one command per API method. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "build-config.h"
#include "client.h"
#include "errors.h"
#include "pki.h"
#include "rpc/jsonrpc.h"

/* Exit codes scripts rely on (documented in --help, berthctl(1) and docs/api.md). */
enum {
    EXIT_OK = 0,
    EXIT_API_ERROR = 1,
    EXIT_USAGE = 2,
    EXIT_CONNECT = 3,
};

/* A domain XML larger than this cannot fit in one request under the default limit. */
#define MAX_XML_FILE (1024 * 1024 - 4096)

typedef struct {
    char *uri;
    gboolean json;
    BerthClient *client;
    BerthClientTls tls; /* --tls-cert, --tls-key, --tls-ca (NULL: client.conf, pki dirs) */
} Ctl;

typedef struct Command Command;
typedef int (*CommandFunc)(Ctl *ctl, const Command *cmd, int argc, char **argv);

struct Command {
    const char *name;
    const char *method;
    const char *args; /* the synopsis after the name */
    const char *summary;
    const char *help; /* options and details, or NULL */
    CommandFunc func;
};

static const Command *command_find(const char *name);

/* --- output helpers --- */

static yajl_val
obj_get(yajl_val obj, const char *key)
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

/* A value as a table cell: strings bare, booleans yes/no, null "-", the rest as JSON. */
static char *
cell(yajl_val v)
{
    GString *out;

    if (!v || YAJL_IS_NULL(v)) {
        return g_strdup("-");
    }
    if (YAJL_IS_STRING(v)) {
        return g_strdup(v->u.string[0] ? v->u.string : "-");
    }
    if (YAJL_IS_TRUE(v)) {
        return g_strdup("yes");
    }
    if (YAJL_IS_FALSE(v)) {
        return g_strdup("no");
    }
    if (YAJL_IS_NUMBER(v)) {
        return g_strdup(v->u.number.r);
    }
    out = g_string_new(NULL);
    berth_rpc_json_append_value(out, v);
    return g_string_free(out, FALSE);
}

/* Prints rows (GPtrArray of GStrv, the first the header) in aligned columns. */
static void
print_table(GPtrArray *rows)
{
    g_autofree gsize *width = NULL;
    guint ncols;

    if (rows->len == 0) {
        return;
    }
    ncols = g_strv_length(rows->pdata[0]);
    width = g_new0(gsize, ncols);
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];

        for (guint c = 0; c < ncols && row[c]; c++) {
            width[c] = MAX(width[c], (gsize) g_utf8_strlen(row[c], -1));
        }
    }
    for (guint r = 0; r < rows->len; r++) {
        char **row = rows->pdata[r];
        GString *line = g_string_new(NULL);

        for (guint c = 0; c < ncols && row[c]; c++) {
            g_string_append(line, row[c]);
            if (c + 1 < ncols) {
                gsize pad = width[c] - (gsize) g_utf8_strlen(row[c], -1) + 2;

                for (gsize i = 0; i < pad; i++) {
                    g_string_append_c(line, ' ');
                }
            }
        }
        printf("%s\n", line->str);
        g_string_free(line, TRUE);
    }
}

/* A table of @result (an array of objects) with @keys as columns under @headers. */
static void
print_object_table(yajl_val result, const char *const *headers, const char *const *keys)
{
    g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func((GDestroyNotify) g_strfreev);

    g_ptr_array_add(rows, g_strdupv((char **) headers));
    for (size_t i = 0; YAJL_IS_ARRAY(result) && i < result->u.array.len; i++) {
        yajl_val item = result->u.array.values[i];
        guint n = g_strv_length((char **) keys);
        char **row = g_new0(char *, n + 1);

        for (guint k = 0; k < n; k++) {
            /* "a/b" reads a member of a member, e.g. "object/name". */
            g_auto(GStrv) path = g_strsplit(keys[k], "/", 2);
            yajl_val v = obj_get(item, path[0]);

            if (path[1]) {
                v = obj_get(v, path[1]);
            }
            row[k] = cell(v);
        }
        g_ptr_array_add(rows, row);
    }
    print_table(rows);
}

/* "Key: value" lines for an object; nested objects as "key.sub". */
static void
print_fields(yajl_val obj, const char *prefix, const char *skip)
{
    g_autoptr(GPtrArray) rows = g_ptr_array_new_with_free_func((GDestroyNotify) g_strfreev);

    for (size_t i = 0; YAJL_IS_OBJECT(obj) && i < obj->u.object.len; i++) {
        const char *key = obj->u.object.keys[i];
        yajl_val v = obj->u.object.values[i];
        char **row;

        if (skip && strcmp(key, skip) == 0) {
            continue;
        }
        if (YAJL_IS_OBJECT(v) && v->u.object.len > 0) {
            for (size_t j = 0; j < v->u.object.len; j++) {
                row = g_new0(char *, 3);
                row[0] = g_strdup_printf("%s%s.%s:", prefix, key, v->u.object.keys[j]);
                row[1] = cell(v->u.object.values[j]);
                g_ptr_array_add(rows, row);
            }
            continue;
        }
        row = g_new0(char *, 3);
        row[0] = g_strdup_printf("%s%s:", prefix, key);
        row[1] = cell(v);
        g_ptr_array_add(rows, row);
    }
    print_table(rows);
}

/* --- calls --- */

static int
ctl_connect(Ctl *ctl)
{
    g_autoptr(GError) error = NULL;

    if (ctl->client) {
        return EXIT_OK;
    }
    if (g_str_has_prefix(ctl->uri, "tls://")) {
        ctl->client = berth_client_connect_tls(ctl->uri, &ctl->tls, &error);
    } else {
        ctl->client = berth_client_connect(ctl->uri, &error);
    }
    if (!ctl->client) {
        fprintf(stderr, "berthctl: cannot connect: %s\n", error->message);
        return EXIT_CONNECT;
    }
    return EXIT_OK;
}

/* The exit code for a failed call, after the message on stderr. */
static int
report_error(const GError *error)
{
    if (error->domain == BERTH_ERROR) {
        fprintf(stderr, "berthctl: error: %s: %s\n", berth_error_name(error->code),
                error->message);
        return EXIT_API_ERROR;
    }
    fprintf(stderr, "berthctl: connection failed: %s\n", error->message);
    return EXIT_CONNECT;
}

/* Calls @method; on success *@tree holds the parsed result (free with yajl_tree_free). With
 * --json (and @print_json) the result is printed as-is and *@tree is NULL. */
static int
ctl_call(Ctl *ctl, const char *method, const char *params, gboolean print_json, yajl_val *tree)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *result = NULL;
    int rc = ctl_connect(ctl);

    *tree = NULL;
    if (rc != EXIT_OK) {
        return rc;
    }
    if (!berth_client_call(ctl->client, method, params, &result, &error)) {
        return report_error(error);
    }
    if (ctl->json && print_json) {
        printf("%s\n", result);
        return EXIT_OK;
    }
    *tree = yajl_tree_parse(result, NULL, 0);
    return EXIT_OK;
}

static int
usage_error(const Command *cmd, const char *format, ...) G_GNUC_PRINTF(2, 3);

static int
usage_error(const Command *cmd, const char *format, ...)
{
    va_list args;
    g_autofree char *msg = NULL;

    va_start(args, format);
    msg = g_strdup_vprintf(format, args);
    va_end(args);
    fprintf(stderr, "berthctl: %s\n", msg);
    if (cmd) {
        fprintf(stderr, "usage: berthctl %s%s%s\n(see 'berthctl help %s')\n", cmd->name,
                cmd->args[0] ? " " : "", cmd->args, cmd->name);
    } else {
        fprintf(stderr, "(see 'berthctl --help')\n");
    }
    return EXIT_USAGE;
}

/*
 * A tiny option parser for one command: @spec lists "name" (a flag) or "name=" (takes a
 * value); options may come before or after positionals; "--" ends options. Fills @opts
 * (name -> value, "" for flags) and @pos. FALSE after printing a usage error.
 */
static gboolean
parse_args(const Command *cmd, int argc, char **argv, const char *const *spec,
           GHashTable *opts, GPtrArray *pos, int *rc)
{
    gboolean options_done = FALSE;

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        g_autofree char *name = NULL;
        const char *value = NULL;
        gboolean known = FALSE, takes_value = FALSE;

        if (options_done || arg[0] != '-' || strcmp(arg, "-") == 0) {
            g_ptr_array_add(pos, (char *) arg);
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            options_done = TRUE;
            continue;
        }
        if (!g_str_has_prefix(arg, "--")) {
            *rc = usage_error(cmd, "unknown option '%s'", arg);
            return FALSE;
        }
        name = g_strdup(arg + 2);
        if (strchr(name, '=')) {
            value = strchr(arg, '=') + 1;
            *strchr(name, '=') = '\0';
        }
        for (guint s = 0; spec && spec[s]; s++) {
            gsize n = strlen(name);

            if (strncmp(spec[s], name, n) == 0 && (spec[s][n] == '\0' || spec[s][n] == '=')) {
                known = TRUE;
                takes_value = spec[s][n] == '=';
            }
        }
        if (!known) {
            *rc = usage_error(cmd, "unknown option '--%s'", name);
            return FALSE;
        }
        if (takes_value && !value) {
            if (i + 1 >= argc) {
                *rc = usage_error(cmd, "option '--%s' needs a value", name);
                return FALSE;
            }
            value = argv[++i];
        } else if (!takes_value && value) {
            *rc = usage_error(cmd, "option '--%s' takes no value", name);
            return FALSE;
        }
        g_hash_table_insert(opts, g_steal_pointer(&name), g_strdup(value ? value : ""));
    }
    return TRUE;
}

static gboolean
parse_uint(const char *text, guint64 *out)
{
    char *end = NULL;
    guint64 v;

    if (!text || !g_ascii_isdigit(text[0])) {
        return FALSE;
    }
    errno = 0;
    v = g_ascii_strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v > G_MAXINT64) {
        return FALSE;
    }
    *out = v;
    return TRUE;
}

/* Parses the command line of a command that takes exactly @npos positionals. */
#define PARSE(spec, npos)                                                                        \
    g_autoptr(GHashTable) opts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free); \
    g_autoptr(GPtrArray) pos = g_ptr_array_new();                                                \
    int rc = EXIT_OK;                                                                            \
    if (!parse_args(cmd, argc, argv, spec, opts, pos, &rc)) {                                    \
        return rc;                                                                               \
    }                                                                                            \
    if (pos->len != (npos)) {                                                                    \
        return usage_error(cmd, "'%s' takes %d argument%s, got %u", cmd->name, (npos),         \
                           (npos) == 1 ? "" : "s", pos->len);                                    \
    }

/* --- commands --- */

static int
cmd_simple_query(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    yajl_val tree = NULL;

    PARSE(NULL, 0);
    rc = ctl_call(ctl, cmd->method, NULL, TRUE, &tree);
    if (rc != EXIT_OK || !tree) {
        return rc;
    }
    if (strcmp(cmd->name, "plugins") == 0) {
        static const char *const headers[] = {"NAME", "VERSION", "KIND", "REQUIRED",
                                              "DESCRIPTION", NULL};
        static const char *const keys[] = {"name", "version", "kind", "required",
                                           "description", NULL};

        print_object_table(tree, headers, keys);
    } else if (strcmp(cmd->name, "jobs") == 0) {
        static const char *const headers[] = {"ID", "STATE", "KIND", "OBJECT", "DESCRIPTION",
                                              "PROGRESS", "OWNER", NULL};
        static const char *const keys[] = {"id", "state", "kind", "object/name", "description",
                                           "progress", "owner", NULL};

        print_object_table(tree, headers, keys);
    } else if (YAJL_IS_OBJECT(tree)) {
        print_fields(tree, "", NULL);
    } else {
        g_autofree char *text = cell(tree);

        printf("%s\n", text);
    }
    yajl_tree_free(tree);
    return EXIT_OK;
}

static int
cmd_list(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    static const char *const spec[] = {"state=", NULL};
    static const char *const headers[] = {"NAME", "STATE", "REASON", "PERSISTENT", "AUTOSTART",
                                          "UUID", NULL};
    static const char *const keys[] = {"name", "state", "reason", "persistent", "autostart",
                                       "uuid", NULL};
    g_autofree char *params = NULL;
    const char *state;
    yajl_val tree = NULL;

    PARSE(spec, 0);
    state = g_hash_table_lookup(opts, "state");
    if (state) {
        g_autofree char *s = berth_rpc_json_string(state);

        params = g_strdup_printf("{\"state\":%s}", s);
    }
    rc = ctl_call(ctl, cmd->method, params, TRUE, &tree);
    if (rc == EXIT_OK && tree) {
        print_object_table(tree, headers, keys);
        yajl_tree_free(tree);
    }
    return rc;
}

/* Reads an XML FILE argument ('-': stdin) as a JSON string; NULL after a usage error. */
static char *
read_xml_json(const char *file, int *rc)
{
    g_autoptr(GError) error = NULL;
    g_autofree char *xml = NULL;
    gsize len = 0;

    if (strcmp(file, "-") == 0) {
        GString *in = g_string_new(NULL);
        char buf[65536];
        size_t n;

        while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0 && in->len <= MAX_XML_FILE) {
            g_string_append_len(in, buf, (gssize) n);
        }
        len = in->len;
        xml = g_string_free(in, FALSE);
    } else if (!g_file_get_contents(file, &xml, &len, &error)) {
        *rc = usage_error(NULL, "cannot read '%s': %s", file, error->message);
        return NULL;
    }
    if (len > MAX_XML_FILE) {
        *rc = usage_error(NULL, "'%s' is larger than %d bytes", file, MAX_XML_FILE);
        return NULL;
    }
    if (!g_utf8_validate(xml, (gssize) len, NULL) || strlen(xml) != len) {
        *rc = usage_error(NULL, "'%s' is not UTF-8 text", file);
        return NULL;
    }
    return berth_rpc_json_string(xml);
}

static int
cmd_define(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    static const char *const spec[] = {"ignore-unsupported", NULL};
    g_autofree char *xml_json = NULL;
    g_autofree char *params = NULL;
    yajl_val tree = NULL;

    PARSE(spec, 1);
    xml_json = read_xml_json(pos->pdata[0], &rc);
    if (!xml_json) {
        return rc;
    }
    params = g_strdup_printf("{\"xml\":%s%s}", xml_json,
                             g_hash_table_contains(opts, "ignore-unsupported")
                                 ? ",\"ignore_unsupported\":true"
                                 : "");
    rc = ctl_call(ctl, cmd->method, params, TRUE, &tree);
    if (rc == EXIT_OK && tree) {
        g_autofree char *name = cell(obj_get(tree, "name"));
        g_autofree char *uuid = cell(obj_get(tree, "uuid"));

        printf("Domain '%s' defined (uuid %s).\n", name, uuid);
        yajl_tree_free(tree);
    }
    return rc;
}

static int
cmd_attach_device(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    static const char *const spec[] = {"ignore-unsupported", NULL};
    g_autofree char *xml_json = NULL;
    g_autofree char *name_json = NULL;
    g_autofree char *params = NULL;
    yajl_val tree = NULL;

    PARSE(spec, 2);
    xml_json = read_xml_json(pos->pdata[1], &rc);
    if (!xml_json) {
        return rc;
    }
    name_json = berth_rpc_json_string(pos->pdata[0]);
    params = g_strdup_printf("{\"name\":%s,\"xml\":%s%s}", name_json, xml_json,
                             g_hash_table_contains(opts, "ignore-unsupported")
                                 ? ",\"ignore_unsupported\":true"
                                 : "");
    rc = ctl_call(ctl, cmd->method, params, TRUE, &tree);
    if (rc == EXIT_OK && tree) {
        g_autofree char *alias = cell(obj_get(tree, "alias"));

        printf("Device '%s' attached to domain '%s'.\n", alias, (const char *) pos->pdata[0]);
        yajl_tree_free(tree);
    }
    return rc;
}

static int
cmd_detach_device(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    g_autofree char *name_json = NULL;
    g_autofree char *alias_json = NULL;
    g_autofree char *params = NULL;
    yajl_val tree = NULL;

    PARSE(NULL, 2);
    name_json = berth_rpc_json_string(pos->pdata[0]);
    alias_json = berth_rpc_json_string(pos->pdata[1]);
    params = g_strdup_printf("{\"name\":%s,\"alias\":%s}", name_json, alias_json);
    rc = ctl_call(ctl, cmd->method, params, TRUE, &tree);
    if (rc == EXIT_OK && tree) {
        g_autofree char *status = cell(obj_get(tree, "status"));

        printf("Device '%s' of domain '%s': %s.\n", (const char *) pos->pdata[1],
               (const char *) pos->pdata[0], status);
        yajl_tree_free(tree);
    }
    return rc;
}

/* Commands that take one domain NAME: undefine, get, dumpxml, destroy, suspend, resume, and
 * (with their options) start and shutdown. */
static int
cmd_domain(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    static const char *const start_spec[] = {"paused", NULL};
    static const char *const shutdown_spec[] = {"force", "timeout=", NULL};
    const char *const *spec = NULL;
    g_autoptr(GString) params = g_string_new("{\"name\":");
    g_autofree char *name_json = NULL;
    const char *timeout;
    yajl_val tree = NULL;
    gboolean is_dumpxml = strcmp(cmd->name, "dumpxml") == 0;

    if (strcmp(cmd->name, "start") == 0) {
        spec = start_spec;
    } else if (strcmp(cmd->name, "shutdown") == 0) {
        spec = shutdown_spec;
    }
    PARSE(spec, 1);
    name_json = berth_rpc_json_string(pos->pdata[0]);
    g_string_append(params, name_json);
    if (g_hash_table_contains(opts, "paused")) {
        g_string_append(params, ",\"paused\":true");
    }
    if (g_hash_table_contains(opts, "force")) {
        g_string_append(params, ",\"force\":true");
    }
    timeout = g_hash_table_lookup(opts, "timeout");
    if (timeout) {
        guint64 ms;

        if (!parse_uint(timeout, &ms)) {
            return usage_error(cmd, "'--timeout' needs a number of milliseconds, not '%s'",
                               timeout);
        }
        g_string_append_printf(params, ",\"timeout_ms\":%" G_GUINT64_FORMAT, ms);
    }
    g_string_append_c(params, '}');

    /* dumpxml prints only the XML, also with --json (it is for redirecting into a file). */
    rc = ctl_call(ctl, cmd->method, params->str, !is_dumpxml, &tree);
    if (rc != EXIT_OK || !tree) {
        return rc;
    }
    if (is_dumpxml) {
        yajl_val xml = obj_get(tree, "xml");

        printf("%s", YAJL_IS_STRING(xml) ? xml->u.string : "");
        if (YAJL_IS_STRING(xml) && !g_str_has_suffix(xml->u.string, "\n")) {
            printf("\n");
        }
    } else if (strcmp(cmd->name, "get") == 0) {
        print_fields(tree, "", "xml");
    } else if (strcmp(cmd->name, "undefine") == 0) {
        printf("Domain '%s' undefined.\n", (const char *) pos->pdata[0]);
    } else {
        g_autofree char *state = cell(obj_get(tree, "state"));
        g_autofree char *reason = cell(obj_get(tree, "reason"));
        g_autofree char *job = cell(obj_get(tree, "job"));

        printf("Domain '%s': %s (%s), job %s.\n", (const char *) pos->pdata[0], state, reason,
               job);
    }
    yajl_tree_free(tree);
    return EXIT_OK;
}

static int
cmd_job(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    g_autofree char *params = NULL;
    guint64 id;
    yajl_val tree = NULL;

    PARSE(NULL, 1);
    if (!parse_uint(pos->pdata[0], &id) || id == 0) {
        return usage_error(cmd, "'%s' is not a job id", (const char *) pos->pdata[0]);
    }
    params = g_strdup_printf("{\"id\":%" G_GUINT64_FORMAT "}", id);
    rc = ctl_call(ctl, cmd->method, params, TRUE, &tree);
    if (rc != EXIT_OK || !tree) {
        return rc;
    }
    if (strcmp(cmd->name, "job-cancel") == 0) {
        printf("Job %" G_GUINT64_FORMAT " cancelled.\n", id);
    } else {
        print_fields(tree, "", NULL);
    }
    yajl_tree_free(tree);
    return EXIT_OK;
}

/* One event, as a line: SEQ TIME KIND/NAME TYPE DETAIL. */
static void
print_event(Ctl *ctl, const char *params)
{
    yajl_val ev;
    yajl_val object, detail;
    g_autofree char *seq = NULL, *ts = NULL, *kind = NULL, *name = NULL, *type = NULL;
    g_autofree char *det = NULL;

    if (ctl->json) {
        printf("%s\n", params);
        fflush(stdout);
        return;
    }
    ev = yajl_tree_parse(params, NULL, 0);
    object = obj_get(ev, "object");
    detail = obj_get(ev, "detail");
    seq = cell(obj_get(ev, "seq"));
    ts = cell(obj_get(ev, "timestamp"));
    kind = cell(obj_get(object, "kind"));
    name = cell(obj_get(object, "name"));
    type = cell(obj_get(ev, "type"));
    det = detail ? cell(detail) : g_strdup("{}");
    printf("%-6s %s %s/%s %s %s\n", seq, ts, kind, name, type, det);
    fflush(stdout);
    if (ev) {
        yajl_tree_free(ev);
    }
}

/* TRUE when the event passes the command-line filters (used when replaying unfiltered). */
static gboolean
event_matches(const char *params, const char *type, const char *object, guint64 *seq)
{
    yajl_val ev = yajl_tree_parse(params, NULL, 0);
    yajl_val t = obj_get(ev, "type");
    yajl_val n = obj_get(obj_get(ev, "object"), "name");
    yajl_val s = obj_get(ev, "seq");
    gboolean lost = YAJL_IS_STRING(t) && strcmp(t->u.string, "events-lost") == 0;
    gboolean ok = lost || ((!type || (YAJL_IS_STRING(t) && strcmp(t->u.string, type) == 0)) &&
                           (!object || (YAJL_IS_STRING(n) && strcmp(n->u.string, object) == 0)));

    *seq = YAJL_IS_INTEGER(s) ? (guint64) s->u.number.i : 0;
    if (lost) {
        /* The marker stands for events up to detail.last: a replay that overflowed this
         * client's queue ends with it. */
        yajl_val last = obj_get(obj_get(ev, "detail"), "last");

        *seq = YAJL_IS_INTEGER(last) ? (guint64) last->u.number.i : 0;
    }
    if (ev) {
        yajl_tree_free(ev);
    }
    return ok;
}

static int
cmd_events(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    static const char *const spec[] = {"follow", "since=", "type=", "object=", NULL};
    g_autoptr(GString) params = g_string_new("{");
    g_autoptr(GError) error = NULL;
    g_autofree char *result = NULL;
    const char *since_text, *type, *object;
    gboolean follow;
    guint64 since = 0, last_seq = 0;
    yajl_val tree;

    PARSE(spec, 0);
    follow = g_hash_table_contains(opts, "follow");
    since_text = g_hash_table_lookup(opts, "since");
    type = g_hash_table_lookup(opts, "type");
    object = g_hash_table_lookup(opts, "object");
    if (since_text && !parse_uint(since_text, &since)) {
        return usage_error(cmd, "'--since' needs a sequence number, not '%s'", since_text);
    }
    if (!follow && !since_text) {
        return usage_error(cmd, "'events' needs --follow, --since N, or both");
    }
    /* Without --since: only new events; --since 0: everything berthd still holds. */
    if (since_text) {
        g_string_append_printf(params, "\"since\":%" G_GUINT64_FORMAT, since);
    }
    /* Following: the server filters. Replaying only: filter here, so that the last event
     * (which tells the replay is complete) is seen even when the filter would drop it. */
    if (follow && (type || object)) {
        g_string_append_printf(params, "%s\"filter\":{", since_text ? "," : "");
        if (type) {
            g_autofree char *t = berth_rpc_json_string(type);

            g_string_append_printf(params, "\"type\":%s", t);
        }
        if (object) {
            g_autofree char *o = berth_rpc_json_string(object);

            g_string_append_printf(params, "%s\"object_name\":%s", type ? "," : "", o);
        }
        g_string_append_c(params, '}');
    }
    g_string_append_c(params, '}');

    rc = ctl_connect(ctl);
    if (rc != EXIT_OK) {
        return rc;
    }
    if (!berth_client_call(ctl->client, "events.subscribe", params->str, &result, &error)) {
        return report_error(error);
    }
    tree = yajl_tree_parse(result, NULL, 0);
    if (YAJL_IS_INTEGER(obj_get(tree, "last_seq"))) {
        last_seq = (guint64) obj_get(tree, "last_seq")->u.number.i;
    }
    if (YAJL_IS_INTEGER(obj_get(tree, "missed")) && obj_get(tree, "missed")->u.number.i > 0) {
        fprintf(stderr, "berthctl: %lld events after %" G_GUINT64_FORMAT
                " are no longer held by berthd\n",
                obj_get(tree, "missed")->u.number.i, since);
    }
    if (tree) {
        yajl_tree_free(tree);
    }

    /* Replay what the agent holds up to last_seq; then stop, or follow. */
    while (follow || (since_text && since < last_seq)) {
        g_autofree char *method = NULL;
        g_autofree char *note = NULL;
        guint64 seq = 0;

        if (!berth_client_next_notification(ctl->client, -1, &method, &note, &error)) {
            return report_error(error);
        }
        if (strcmp(method, "event") != 0) {
            continue;
        }
        if (follow) {
            print_event(ctl, note);
            continue;
        }
        if (event_matches(note, type, object, &seq)) {
            print_event(ctl, note);
        }
        if (seq >= last_seq) {
            break;
        }
    }
    return EXIT_OK;
}

/* nodedev-list [--class 0xCC] [--driver NAME]: host PCI devices (the vfio plugin). */
static int
cmd_nodedev_list(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    static const char *const spec[] = {"class=", "driver=", NULL};
    static const char *const headers[] = {"ADDRESS", "CLASS", "VENDOR", "DEVICE", "DRIVER",
                                          "GROUP", "STATE", "DOMAIN", NULL};
    static const char *const keys[] = {"address", "class", "vendor", "device", "driver",
                                       "iommu_group", "state", "domain", NULL};
    g_autoptr(GString) params = g_string_new("{");
    const char *cls;
    const char *driver;
    yajl_val tree = NULL;

    PARSE(spec, 0);
    cls = g_hash_table_lookup(opts, "class");
    driver = g_hash_table_lookup(opts, "driver");
    if (cls) {
        g_autofree char *s = berth_rpc_json_string(cls);
        g_string_append_printf(params, "\"class\":%s", s);
    }
    if (driver) {
        g_autofree char *s = berth_rpc_json_string(driver);
        g_string_append_printf(params, "%s\"driver\":%s", cls ? "," : "", s);
    }
    g_string_append_c(params, '}');
    rc = ctl_call(ctl, cmd->method, params->str, TRUE, &tree);
    if (rc == EXIT_OK && tree) {
        print_object_table(tree, headers, keys);
        yajl_tree_free(tree);
    }
    return rc;
}

/* nodedev-get/detach/reattach/reset ADDRESS. */
static int
cmd_nodedev(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    g_autofree char *addr = NULL;
    g_autofree char *params = NULL;
    yajl_val tree = NULL;
    const char *done = NULL;

    PARSE(NULL, 1);
    addr = berth_rpc_json_string(pos->pdata[0]);
    params = g_strdup_printf("{\"address\":%s}", addr);
    rc = ctl_call(ctl, cmd->method, params, TRUE, &tree);
    if (rc != EXIT_OK || ctl->json) {
        yajl_tree_free(tree);
        return rc;
    }
    if (strcmp(cmd->name, "nodedev-get") == 0) {
        print_fields(tree, "", NULL);
    } else if (strcmp(cmd->name, "nodedev-detach") == 0) {
        done = "detached to vfio-pci";
    } else if (strcmp(cmd->name, "nodedev-reattach") == 0) {
        done = "reattached to its host driver";
    } else {
        done = "reset";
    }
    if (done) {
        yajl_val driver = obj_get(tree, "driver");
        g_autofree char *d = driver ? cell(driver) : NULL;

        printf("Device '%s' %s%s%s%s.\n", (const char *) pos->pdata[0], done,
               d ? " (driver " : "", d ? d : "", d ? ")" : "");
    }
    yajl_tree_free(tree);
    return EXIT_OK;
}

static int
cmd_help(Ctl *ctl, const Command *cmd, int argc, char **argv);

static int
cmd_pki(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    if (argc > 0) {
        return usage_error(cmd, "unexpected argument '%s'", argv[0]);
    }
    return berthctl_pki(ctl->uri, &ctl->tls);
}

static const Command commands[] = {
    {"info", "agent.info", "", "Show the agent: version, directories, counts.", NULL,
     cmd_simple_query},
    {"plugins", "agent.plugins", "", "List the loaded plugins.", NULL, cmd_simple_query},
    {"list", "domain.list", "[--state STATE]", "List the domains.",
     "  --state STATE   only domains in STATE (running, paused, shutoff, ...)\n", cmd_list},
    {"define", "domain.define", "FILE [--ignore-unsupported]",
     "Define (or redefine) a domain from its XML (FILE '-' reads stdin).",
     "  --ignore-unsupported   define it although it has elements berth does not support\n"
     "                         (they are ignored); without it they are refused, each named\n",
     cmd_define},
    {"undefine", "domain.undefine", "NAME", "Remove an inactive domain's definition.", NULL,
     cmd_domain},
    {"get", "domain.get", "NAME", "Show a domain's state and settings.", NULL, cmd_domain},
    {"dumpxml", "domain.get", "NAME", "Print a domain's XML definition (only the XML).", NULL,
     cmd_domain},
    {"start", "domain.start", "NAME [--paused]", "Start a domain and wait for the job.",
     "  --paused   start it with its CPUs paused (resume it later)\n", cmd_domain},
    {"shutdown", "domain.shutdown", "NAME [--force] [--timeout MS]",
     "Ask the guest to shut down and wait for it.",
     "  --force        destroy the domain when the guest has not shut down in time\n"
     "  --timeout MS   how long to wait for the guest, in milliseconds\n",
     cmd_domain},
    {"destroy", "domain.destroy", "NAME", "Stop a domain at once (power off).", NULL,
     cmd_domain},
    {"reboot", "domain.reboot", "NAME", "Ask the guest to reboot.", NULL, cmd_domain},
    {"suspend", "domain.suspend", "NAME", "Pause a domain's CPUs.", NULL, cmd_domain},
    {"resume", "domain.resume", "NAME", "Resume a paused domain.", NULL, cmd_domain},
    {"attach-device", "domain.attach_device", "NAME FILE [--ignore-unsupported]",
     "Hot-plug the device in FILE (a <disk>, <interface>, <filesystem> or <hostdev>).",
     "  --ignore-unsupported   ignore elements berth does not support instead of refusing\n",
     cmd_attach_device},
    {"detach-device", "domain.detach_device", "NAME ALIAS",
     "Unplug the device ALIAS (see dumpxml) and wait for its whole teardown.", NULL,
     cmd_detach_device},
    {"jobs", "job.list", "", "List running, queued and recent jobs.", NULL, cmd_simple_query},
    {"job", "job.get", "ID", "Show one job.", NULL, cmd_job},
    {"job-cancel", "job.cancel", "ID", "Cancel a queued or running job.", NULL, cmd_job},
    {"events", "events.subscribe", "[--follow] [--since N] [--type T] [--object NAME]",
     "Print events: those after N that berthd still holds, and/or new ones as they come.",
     "  --follow        keep printing new events until interrupted\n"
     "  --since N       first replay the events with a sequence number above N that\n"
     "                  berthd still holds (0: all of them); without it, only new events\n"
     "  --type T        only events of type T (e.g. domain-started)\n"
     "  --object NAME   only events about the object NAME (e.g. a domain)\n"
     "One line per event: SEQ TIMESTAMP KIND/NAME TYPE DETAIL; with --json, one event\n"
     "object per line. A line of type events-lost says how many events were dropped because\n"
     "this client did not keep up.\n",
     cmd_events},
    {"nodedev-list", "nodedev.list", "[--class 0xCC] [--driver NAME]",
     "List host PCI devices and who owns them (the vfio plugin).",
     "  --class 0xCC    only devices whose class starts so (0x02: network, 0x0c03: USB)\n"
     "  --driver NAME   only devices bound to NAME ('none': unbound)\n",
     cmd_nodedev_list},
    {"nodedev-get", "nodedev.get", "ADDRESS", "Show one host PCI device (0000:06:12.5).", NULL,
     cmd_nodedev},
    {"nodedev-detach", "nodedev.detach", "ADDRESS",
     "Bind a host PCI device to vfio-pci for a managed='no' hostdev.", NULL, cmd_nodedev},
    {"nodedev-reattach", "nodedev.reattach", "ADDRESS",
     "Give a detached host PCI device back to its host driver.", NULL, cmd_nodedev},
    {"nodedev-reset", "nodedev.reset", "ADDRESS",
     "Reset a host PCI device that no domain uses (function-level reset).", NULL,
     cmd_nodedev},
    {"ping", "agent.ping", "", "Check that berthd answers.", NULL, cmd_simple_query},
    {"reload-tls", "agent.reload_tls", "",
     "Make berthd re-read its TLS certificate, key, CA and CRL.", NULL, cmd_simple_query},
    {"pki", NULL, "",
     "Show the TLS client certificate in use and check it (and berthd's, with --connect).",
     "Prints the subject (the form tls_admin and tls_readonly patterns match), SANs,\n"
     "validity and clientAuth usage of the client certificate, checks that it chains to the\n"
     "CA and, with --connect tls://HOST:PORT, that berthd's certificate verifies and that\n"
     "berthd accepts this client. Files: see --tls-cert; docs/tls.md.\n",
     cmd_pki},
    {"help", NULL, "[COMMAND]", "Show the help of berthctl or of one command.", NULL,
     cmd_help},
};

static const Command *
command_find(const char *name)
{
    for (guint i = 0; i < G_N_ELEMENTS(commands); i++) {
        if (strcmp(commands[i].name, name) == 0) {
            return &commands[i];
        }
    }
    return NULL;
}

static void
print_usage(FILE *out)
{
    fprintf(out,
            "usage: berthctl [--connect URI] [--readonly] [--json] COMMAND [ARGS]\n"
            "\n"
            "The command-line client of berthd.\n"
            "\n"
            "Options:\n"
            "  -c, --connect URI   berthd's address: unix:PATH or tls://HOST[:PORT]\n"
            "                      (port 16515; mutual TLS, see docs/tls.md);\n"
            "                      default $BERTH_URI, else the default socket:\n"
            "                      /run/berth/berthd.sock as root,\n"
            "                      $XDG_RUNTIME_DIR/berth/berthd.sock otherwise\n"
            "  -r, --readonly      use the read-only socket (berthd-ro.sock) beside the\n"
            "                      default one or $BERTH_URI's: queries and events only\n"
            "  -j, --json          print results as JSON, one line, for scripts\n"
            "  --tls-cert FILE     TLS client certificate; --tls-key FILE its key;\n"
            "  --tls-ca FILE       the CA of berthd's certificate. Defaults: [tls] cert,\n"
            "                      key, ca in ~/.config/berth/client.conf, else\n"
            "                      ~/.config/berth/pki/ (non-root), else /etc/berth/pki/\n"
            "                      client-cert.pem, client-key.pem, ca-cert.pem\n"
            "  -h, --help          show this help ('berthctl help COMMAND' for a command)\n"
            "  -V, --version       show berthctl's version\n"
            "\n"
            "Commands:\n");
    for (guint i = 0; i < G_N_ELEMENTS(commands); i++) {
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    }
    fprintf(out,
            "\n"
            "'berthctl help COMMAND' (or 'berthctl COMMAND --help') shows its arguments.\n"
            "\n"
            "Exit codes:\n"
            "  0   success\n"
            "  1   berthd answered with an error (printed as 'berthctl: error: NAME: MESSAGE')\n"
            "  2   usage error (unknown command or option, bad argument, unreadable file)\n"
            "  3   cannot connect to berthd, or the connection broke\n");
}

static void
print_command_help(const Command *cmd)
{
    printf("usage: berthctl [--connect URI] [--json] %s%s%s\n\n%s\n", cmd->name,
           cmd->args[0] ? " " : "", cmd->args, cmd->summary);
    if (cmd->method) {
        printf("API method: %s (see docs/api.md)\n", cmd->method);
    }
    if (cmd->help) {
        printf("\nOptions:\n%s", cmd->help);
    }
}

static int
cmd_help(Ctl *ctl, const Command *cmd, int argc, char **argv)
{
    const Command *topic;

    if (argc == 0) {
        print_usage(stdout);
        return EXIT_OK;
    }
    topic = command_find(argv[0]);
    if (!topic || argc > 1) {
        return usage_error(NULL, "unknown command '%s'", argv[0]);
    }
    print_command_help(topic);
    return EXIT_OK;
}

/* The socket berthd listens on by default for this user. */
static char *
default_uri(gboolean readonly)
{
    const char *name = readonly ? "berthd-ro.sock" : "berthd.sock";
    g_autofree char *dir = NULL;

    if (geteuid() == 0) {
        dir = g_strdup("/run/berth");
    } else {
        dir = g_build_filename(g_get_user_runtime_dir(), "berth", NULL);
    }
    return g_strdup_printf("unix:%s/%s", dir, name);
}

int
main(int argc, char **argv)
{
    Ctl ctl = {0};
    const char *connect = NULL;
    gboolean readonly = FALSE;
    const Command *cmd;
    int i, rc;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];

        if (strcmp(arg, "-c") == 0 || strcmp(arg, "--connect") == 0) {
            if (i + 1 >= argc) {
                return usage_error(NULL, "option '%s' needs a URI", arg);
            }
            connect = argv[++i];
        } else if (g_str_has_prefix(arg, "--connect=")) {
            connect = arg + strlen("--connect=");
        } else if (strcmp(arg, "--tls-cert") == 0 || strcmp(arg, "--tls-key") == 0 ||
                   strcmp(arg, "--tls-ca") == 0) {
            char **field = arg[6] == 'c' && arg[7] == 'e' ? &ctl.tls.cert
                           : arg[6] == 'k'               ? &ctl.tls.key
                                                         : &ctl.tls.ca;

            if (i + 1 >= argc) {
                return usage_error(NULL, "option '%s' needs a file", arg);
            }
            g_free(*field);
            *field = g_strdup(argv[++i]);
        } else if (strcmp(arg, "-r") == 0 || strcmp(arg, "--readonly") == 0) {
            readonly = TRUE;
        } else if (strcmp(arg, "-j") == 0 || strcmp(arg, "--json") == 0) {
            ctl.json = TRUE;
        } else if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            return EXIT_OK;
        } else if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
            printf("berthctl %s\n", BERTH_VERSION);
            return EXIT_OK;
        } else {
            return usage_error(NULL, "unknown option '%s'", arg);
        }
    }
    if (i >= argc) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    cmd = command_find(argv[i]);
    if (!cmd) {
        return usage_error(NULL, "unknown command '%s'", argv[i]);
    }
    for (int j = i + 1; j < argc; j++) {
        if (strcmp(argv[j], "--") == 0) {
            break;
        }
        if (strcmp(argv[j], "--help") == 0 || strcmp(argv[j], "-h") == 0) {
            print_command_help(cmd);
            return EXIT_OK;
        }
    }

    if (connect) {
        ctl.uri = g_strdup(connect);
    } else if (g_getenv("BERTH_URI") && g_getenv("BERTH_URI")[0]) {
        ctl.uri = g_strdup(g_getenv("BERTH_URI"));
        /* --readonly with $BERTH_URI naming a berthd.sock: the read-only one beside it. */
        if (readonly && g_str_has_prefix(ctl.uri, "unix:") &&
            g_str_has_suffix(ctl.uri, "/berthd.sock")) {
            g_autofree char *dir = ctl.uri;

            dir[strlen(dir) - strlen("berthd.sock")] = '\0';
            ctl.uri = g_strconcat(dir, "berthd-ro.sock", NULL);
        }
    } else {
        ctl.uri = default_uri(readonly);
    }
    rc = cmd->func(&ctl, cmd, argc - i - 1, argv + i + 1);
    berth_client_free(ctl.client);
    berth_client_tls_clear(&ctl.tls);
    g_free(ctl.uri);
    return rc;
}
