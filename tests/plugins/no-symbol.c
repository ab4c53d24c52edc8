/* Test plugin "no-symbol": a shared object without berth_plugin_entry: refused. */
#include <glib.h>

/* Exported under another name, so the object is not empty but has no entry symbol. */
__attribute__((visibility("default"))) int berth_plugin_entry_typo(void);

int
berth_plugin_entry_typo(void)
{
    return 0;
}
