/* rpc/jsonrpc.c: being written. */
