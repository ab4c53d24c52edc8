/* The one error domain of berth; its codes map one-to-one to the API's named errors. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/**
 * BerthError:
 * Codes of the BERTH_ERROR domain. Values never change; new codes are added before
 * BERTH_ERROR_LAST. berth_error_name() (in the core) gives the API's name of each code.
 */
typedef enum {
    BERTH_ERROR_INTERNAL = 0,     /* "internal-error": a bug or an unexpected system failure */
    BERTH_ERROR_INVALID_ARGUMENT, /* "invalid-argument": bad parameters, XML or config */
    BERTH_ERROR_NO_SUCH_DOMAIN,   /* "no-such-domain" */
    BERTH_ERROR_INVALID_STATE,    /* "invalid-state": the object is not in a state for this */
    BERTH_ERROR_ACCESS_DENIED,    /* "access-denied": the caller's role does not allow it */
    BERTH_ERROR_BUSY,             /* "busy": another job holds the object */
    BERTH_ERROR_TIMEOUT,          /* "timeout": a job or a wait ran out of time */
    BERTH_ERROR_UNSUPPORTED,      /* "unsupported": no plugin implements it, or a NULL op */
    BERTH_ERROR_PLUGIN_FAILED,    /* "plugin-failed": a plugin reported a failure */
    BERTH_ERROR_CANCELLED,        /* "cancelled": the job was cancelled or interrupted */
    BERTH_ERROR_NO_SUCH_JOB,      /* "no-such-job" */
    BERTH_ERROR_NO_SUCH_DEVICE,   /* "no-such-device": node device or domain device */
    BERTH_ERROR_EXISTS,           /* "exists": an object with that name or uuid exists */
    BERTH_ERROR_LAST
} BerthError;

/* The error domain. A quark is process-wide, so plugins and the core share it. */
#define BERTH_ERROR (g_quark_from_static_string("berth-error-quark"))

G_END_DECLS
