/* The daemon's context: everything a running berthd holds, handed to host services. */
#pragma once

#include <berth/host.h>
#include <yajl/yajl_tree.h>

#include "config.h"
#include "event-bus.h"
#include "jobs.h"
#include "plugin-loader.h"
#include "registry.h"
#include "rpc/server.h"
#include "rpc/tls.h"

typedef struct {
    BerthConfig *config;
    char *config_path;       /* as given on the command line, NULL = default */
    GMainContext *ctx;       /* the main context: all socket I/O */
    GMainLoop *loop;
    BerthBus *bus;
    BerthScheduler *sched;
    BerthRegistry *registry;
    GPtrArray *plugins;      /* BerthPluginHandle *, load order */
    BerthRpcServer *server;
    BerthTlsListener *tls;   /* the TLS listener, NULL when [rpc] tls_listen is empty */
    GPtrArray *sinks;        /* sink delivery threads (daemon.c) */
    gint64 started_us;       /* monotonic */
} BerthCore;

/* The services table every plugin gets (host.c). */
extern const BerthHost berth_host_table;

/* The hypervisor plugin (the first loaded), or NULL with an unsupported error. */
BerthPluginHandle *berth_core_hypervisor(BerthCore *core, GError **error);

/* A yajl tree as JSON text (g_free); "{}" for NULL. */
char *berth_json_from_tree(yajl_val v);

/* Starts a domain without an RPC call (autostart); returns the job id or 0. */
guint64 berth_daemon_start_domain(BerthCore *core, const char *name, GError **error);

/* Registers every daemon method on @server (methods.c). */
void berth_daemon_register_methods(BerthRpcServer *server, BerthCore *core);
/* Registers agent.reload_tls (daemon.c, beside the TLS listener it reloads). */
void berth_daemon_register_tls_methods(BerthRpcServer *server, BerthCore *core);
