/* A read buffer under a gnutls session: one recv per wake-up instead of one for the record
 * header and one for its body. */
#pragma once

#include <glib.h>
#include <gnutls/gnutls.h>

/* Small requests and replies fit whole; larger records are read straight into gnutls. */
#define BERTH_TLS_IO_BUF 4096

typedef struct {
    int fd;
    gsize off; /* first unread byte in buf */
    gsize len; /* bytes read from fd and not yet handed to gnutls */
    guint8 buf[BERTH_TLS_IO_BUF];
} BerthTlsIo;

/* Makes @session read @io->fd through @io and write @io->fd directly. @io must outlive the
 * session's I/O. */
void berth_tls_io_attach(BerthTlsIo *io, gnutls_session_t session, int fd);

/* TRUE when bytes are buffered here or decrypted in the session: a reader must consume them
 * before it waits on the fd, which may never become readable again. */
gboolean berth_tls_io_pending(const BerthTlsIo *io, gnutls_session_t session);
