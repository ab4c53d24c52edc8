/* berthctl pki: the client certificate's facts and a check against the CA and berthd. */
#pragma once

#include "client.h"

/* Prints the client certificate (found as berth_client_tls_find() does), checks that it has
 * clientAuth and chains to the CA and, when @uri is tls://, that berthd's certificate
 * verifies and berthd accepts the client. Returns berthctl's exit code: 0 all good, 1 a check
 * failed, 2 no certificate found, 3 berthd cannot be reached or refuses. */
int berthctl_pki(const char *uri, const BerthClientTls *tls);
