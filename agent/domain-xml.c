/* domain-xml.c: being written. */
