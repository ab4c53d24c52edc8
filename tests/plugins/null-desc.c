/* Test plugin "null-desc": its entry function returns NULL: refused. */
#include <berth/plugin.h>

BERTH_PLUGIN_EXPORT const BerthPlugin *berth_plugin_entry(void);

const BerthPlugin *
berth_plugin_entry(void)
{
    return NULL;
}
