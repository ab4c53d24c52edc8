/* host.c: being written. */
