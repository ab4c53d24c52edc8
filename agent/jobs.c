/* jobs.c: being written. */
