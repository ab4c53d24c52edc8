/* state-store.c: being written. */
