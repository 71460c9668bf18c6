/*
 * Fuzz target for the /metrics endpoint's inputs: the Accept header (any bytes a scraper
 * sends) and the metrics.listen address. Checks that negotiation answers one of the two
 * formats, that a parsed address is non-empty, and that parsing is stable.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "metrics_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);
	if (!s)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	enum metrics_format f = metrics_http_negotiate(s);
	if (f != METRICS_PROMETHEUS && f != METRICS_OPENMETRICS)
		abort();
	char host[256], why[256];
	uint16_t port;
	if (conf_parse_listen(s, host, sizeof(host), &port, why, sizeof(why)) == 0) {
		if (!host[0] || strlen(host) >= sizeof(host))
			abort();
		char host2[256];
		uint16_t port2;
		if (conf_parse_listen(s, host2, sizeof(host2), &port2, why, sizeof(why)) !=
			0 ||
		    strcmp(host, host2) != 0 || port != port2)
			abort();
	} else if (!why[0]) {
		abort();
	}
	free(s);
	return 0;
}
