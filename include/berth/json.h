/* Small header-only helpers for plugins that build JSON with yajl (event details, results). */
#pragma once

#include <glib.h>
#include <string.h>
#include <yajl/yajl_gen.h>

G_BEGIN_DECLS

/* Adds a NUL-terminated string (key or value) to @g. */
static inline void
berth_json_str(yajl_gen g, const char *s)
{
    yajl_gen_string(g, (const unsigned char *) s, strlen(s));
}

/* Adds "key": "value" (null when @value is NULL). */
static inline void
berth_json_kv_str(yajl_gen g, const char *key, const char *value)
{
    berth_json_str(g, key);
    if (value) {
        berth_json_str(g, value);
    } else {
        yajl_gen_null(g);
    }
}

/* Adds "key": integer. */
static inline void
berth_json_kv_int(yajl_gen g, const char *key, long long value)
{
    berth_json_str(g, key);
    yajl_gen_integer(g, value);
}

/* Adds "key": true/false. */
static inline void
berth_json_kv_bool(yajl_gen g, const char *key, gboolean value)
{
    berth_json_str(g, key);
    yajl_gen_bool(g, value);
}

/* Returns the generated text as a g_malloc'd string and frees @g. */
static inline char *
berth_json_finish(yajl_gen g)
{
    const unsigned char *buf = NULL;
    size_t len = 0;
    char *out;

    yajl_gen_get_buf(g, &buf, &len);
    out = g_strndup((const char *) buf, len);
    yajl_gen_free(g);
    return out;
}

G_END_DECLS
