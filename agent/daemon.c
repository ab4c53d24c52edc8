/* daemon.c: being written. */
