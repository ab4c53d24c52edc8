/* The byte stream under a JSON-RPC connection: a small vtable so TLS can sit under the framing. */
#pragma once

#include <gio/gio.h>

typedef struct BerthRpcTransport BerthRpcTransport;

/*
 * What a connection needs from its stream. Every function runs on the server's main context
 * and must not block: when nothing can move now, read and write fail with G_IO_ERROR
 * G_IO_ERROR_WOULD_BLOCK and the connection waits for its fd to become ready.
 */
typedef struct {
    /* Reads up to @len bytes: the count, 0 at end of stream, -1 with @error. */
    gssize (*read)(BerthRpcTransport *t, void *buf, gsize len, GError **error);
    /* Writes up to @len bytes: the count (> 0), or -1 with @error. */
    gssize (*write)(BerthRpcTransport *t, const void *buf, gsize len, GError **error);
    /* Optional: TRUE when read() has bytes buffered above the fd (decrypted TLS records), so
     * the connection reads again without waiting for the fd. */
    gboolean (*pending)(BerthRpcTransport *t);
    /* Optional: conditions to poll on the fd besides the connection's own (G_IO_IN while it
     * wants requests, G_IO_OUT while output waits), e.g. G_IO_OUT while a TLS handshake or
     * rekey must write before it can read again. A transport that has this hook gets a read()
     * call on every wake-up of its connection (read returns WOULD_BLOCK when it has nothing),
     * and queued output is written again when the fd is writable. */
    GIOCondition (*extra_events)(BerthRpcTransport *t);
    /* Closes the stream (the fd too); the struct stays valid until free(). */
    void (*close)(BerthRpcTransport *t);
    /* Frees the struct (after close). */
    void (*free)(BerthRpcTransport *t);
} BerthRpcTransportOps;

/* A transport implementation embeds this at the start of its own struct. */
struct BerthRpcTransport {
    const BerthRpcTransportOps *ops;
    int fd;          /* polled by the connection; -1 once closed */
    char *peer;      /* who is at the other end, for logs ("uid=0 gid=0 pid=1"; a TLS subject);
                      * may be set by the transport before its first request is read */
    gboolean readonly; /* the transport's own verdict (a readonly TLS identity) */
};

/* A transport over a connected, non-blocking stream socket @fd (taken). For unix sockets the
 * peer is read with SO_PEERCRED: "uid=U gid=G pid=P". */
BerthRpcTransport *berth_rpc_transport_fd_new(int fd);
