/* process.c: being written. */
