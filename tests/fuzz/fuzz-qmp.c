/* libFuzzer target: bytes as QEMU would write them to the monitor socket, through the QMP
 * client's reader (framing, size and depth limits, greeting, replies matched to waiters,
 * events). The input is fed in pieces whose size depends on its length, so splits vary. */
#include <stdint.h>
#include <string.h>

#include <yajl/yajl_tree.h>

#include "../../plugins/qemu/qmp-private.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
on_event(BerthQmp *qmp, const char *event, const char *data_json, gint64 timestamp_us,
         gpointer user_data)
{
    yajl_val tree = yajl_tree_parse(data_json, NULL, 0);

    g_assert_nonnull(event);
    g_assert_true(YAJL_IS_OBJECT(tree));
    g_assert_cmpint(timestamp_us, >=, 0);
    yajl_tree_free(tree);
    (*(guint *) user_data)++;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static GMainContext *ctx;
    static const char *const ids[] = {"berth-1", "berth-2", "berth-3"};
    QmpPending *pending[G_N_ELEMENTS(ids)];
    guint events = 0;
    gsize piece = 1 + size % 61;
    BerthQmp *qmp;

    if (!ctx) {
        ctx = g_main_context_new();
    }
    qmp = qmp_new_detached(ctx, on_event, &events);
    berth_qmp_set_max_message(qmp, 4096);
    for (guint i = 0; i < G_N_ELEMENTS(ids); i++) {
        pending[i] = qmp_expect_reply(qmp, ids[i], "query-status");
    }
    for (gsize off = 0; off < size; off += piece) {
        if (!qmp_feed(qmp, data + off, MIN(piece, size - off))) {
            break;
        }
    }
    for (guint i = 0; i < G_N_ELEMENTS(ids); i++) {
        g_autofree char *ret = NULL;
        g_autofree char *cls = NULL;
        g_autoptr(GError) error = NULL;

        if (!qmp_pending_finish(qmp, pending[i], &ret, &cls, &error)) {
            continue;
        }
        if (ret) {
            /* The return member, whatever its type, comes back as valid JSON. */
            yajl_val tree = yajl_tree_parse(ret, NULL, 0);

            g_assert_nonnull(tree);
            yajl_tree_free(tree);
        } else {
            g_assert_nonnull(error);
            g_assert_true(cls == NULL || g_str_has_prefix(error->message, "QEMU refused "));
        }
    }
    berth_qmp_unref(qmp);
    return 0;
}
