/* A tiny stand-in for the FUSE filesystem: INIT, GETATTR, FORGET and an echo opcode for tests. */
#pragma once

#include <glib.h>
#include <sys/uio.h>

/* Replies with fuse_out_header followed by every byte of the request, as the device saw it. */
#define FAKE_FS_OP_ECHO 4000

typedef struct {
    gint calls;     /* atomic: requests handled */
    gint queue_thread_calls; /* atomic: of those, handled in a queue thread ("vfs-queue-N") */
    guint delay_us; /* sleep in each request, to keep requests in flight */
} FakeFs;

/* A VfsRequestFunc; @fs is a FakeFs. */
size_t fake_fs_handle(gpointer fs, const struct iovec *out, unsigned out_n,
                      const struct iovec *in, unsigned in_n);
