/* A real berthd in a temporary directory, for tests that drive it over its sockets. */
#pragma once

#include <gio/gio.h>

#include "ctl/client.h"

typedef struct {
    char *dir;        /* the temp dir holding everything */
    char *conf;       /* berthd.conf */
    char *sock;       /* read-write socket */
    char *sock_ro;    /* read-only socket */
    char *domains;    /* domains dir */
    char *record;     /* testhv's call record */
    char *log;        /* berthd's stderr */
    GSubprocess *proc;
} Daemon;

/* Creates the dir and a config loading testhv with @testhv_keys (extra "key=value\n" lines for
 * [plugin.testhv], may be NULL). */
Daemon *daemon_new(const char *testhv_keys);
/* The same, with extra "key=value\n" lines for [rpc] (may be NULL). */
Daemon *daemon_new_full(const char *testhv_keys, const char *rpc_keys);
/* Creates the dir and a config loading @plugins ("qemu;", all required) from a plugin dir of
 * links to the build tree (BERTH_BUILD_ROOT/plugins/NAME/NAME.so, else tests/plugins/NAME.so),
 * followed by @plugin_sections (whole "[plugin.NAME]\nkey=value\n" sections, may be NULL). */
Daemon *daemon_new_plugins(const char *plugins, const char *plugin_sections);
/* Starts berthd and waits until its sockets answer; fails the test otherwise. */
void daemon_start(Daemon *d);
/* SIGTERM and wait; asserts a clean exit. */
void daemon_stop(Daemon *d);
/* SIGKILL and wait, as a crash would: domains stay, sockets and status files are left. */
void daemon_kill(Daemon *d);
/* Sends a signal. */
void daemon_signal(Daemon *d, int sig);
/* Stops it if running and removes the dir. */
void daemon_free(Daemon *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Daemon, daemon_free)

BerthClient *daemon_connect(Daemon *d, gboolean readonly);
/* Calls and asserts success; returns the result text (g_free). */
char *call_ok(BerthClient *c, const char *method, const char *params);
/* Calls and asserts the named error; returns nothing. */
void call_fails(BerthClient *c, const char *method, const char *params, int code);
/* A minimal domain XML named @name. */
char *domain_xml(const char *name);
/* Waits for the next "event" notification whose type is @type (skipping others) within 10 s,
 * returns its params (g_free). Fails the test on timeout. */
char *wait_event(BerthClient *c, const char *type);
/* Waits up to @timeout_ms for the next event of @type about domain @name (skipping others);
 * returns its params (g_free). Fails the test (printing berthd's log) on timeout. */
char *wait_event_of(BerthClient *c, const char *type, const char *name, gint64 timeout_ms);
/* The state of @name from domain.get ("running", ...); g_free. */
char *domain_state(BerthClient *c, const char *name, char **reason);
/* Polls domain.get until the state is @state (10 s), fails otherwise. */
void wait_state(BerthClient *c, const char *name, const char *state);
/* The pid testhv saved in the live status of @name, or 0. */
int domain_pid(Daemon *d, const char *name);
/* The "pid" that @plugin ("qemu") saved in the live status of @name, or 0. */
int domain_plugin_pid(Daemon *d, const char *plugin, const char *name);
/* Runs a program to completion; returns its exit status, stdout in *out (may be NULL). */
int run_cmd(const char *const *argv, char **out);
