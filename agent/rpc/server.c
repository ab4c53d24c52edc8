/* rpc/server.c: being written. */
