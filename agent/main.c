/* berthd's entry point: command-line options, then the daemon (daemon.c) runs. */
#include <stdio.h>
#include <stdlib.h>

#include <glib.h>

#include "build-config.h"
#include "daemon.h"

int
main(int argc, char **argv)
{
    g_autofree char *config = NULL;
    gboolean foreground = FALSE;
    gboolean list = FALSE;
    gboolean version = FALSE;
    g_autoptr(GError) error = NULL;
    g_autoptr(GOptionContext) ctx = g_option_context_new("- the berth host agent");
    BerthDaemonOptions opts = { 0 };
    GOptionEntry entries[] = {
        { "config", 'c', 0, G_OPTION_ARG_FILENAME, &config,
          "Configuration file (default: /etc/berth/berthd.conf as root, "
          "$XDG_CONFIG_HOME/berth/berthd.conf otherwise)", "FILE" },
        { "foreground", 'f', 0, G_OPTION_ARG_NONE, &foreground,
          "Run in the foreground (berthd never forks; kept for service managers)", NULL },
        { "list-plugins", 0, 0, G_OPTION_ARG_NONE, &list,
          "Print the plugins the configuration would load, and exit", NULL },
        { "version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL },
        { NULL },
    };

    g_option_context_add_main_entries(ctx, entries, NULL);
    g_option_context_set_summary(ctx, "berthd runs virtual machines through plugins and "
                                      "serves the JSON-RPC API (see berthd(8)).");
    if (!g_option_context_parse(ctx, &argc, &argv, &error)) {
        fprintf(stderr, "berthd: %s\n", error->message);
        return 2;
    }
    if (version) {
        printf("berthd %s\n", BERTH_VERSION);
        return 0;
    }
    opts.config_path = config;
    opts.list_plugins = list;
    return berth_daemon_run(&opts);
}
