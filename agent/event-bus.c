/* event-bus.c: being written. */
