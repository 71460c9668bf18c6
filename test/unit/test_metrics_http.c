/* Unit tests of the /metrics endpoint's address parsing and Accept negotiation. */
#include <stdint.h>

#include "conf.h"
#include "metrics_http.h"
#include "tap.h"

static void test_parse_listen(void)
{
	char host[64], why[256];
	uint16_t port = 1;
	CHECK_INT(conf_parse_listen("127.0.0.1:9873", host, sizeof(host), &port, why,
					    sizeof(why)),
		  0);
	CHECK_STR(host, "127.0.0.1");
	CHECK_INT(port, 9873);
	CHECK_INT(conf_parse_listen("[::1]:0", host, sizeof(host), &port, why, sizeof(why)),
		  0);
	CHECK_STR(host, "::1");
	CHECK_INT(port, 0);
	CHECK_INT(
	    conf_parse_listen("localhost:80", host, sizeof(host), &port, why, sizeof(why)),
	    0);
	CHECK_STR(host, "localhost");
	static const char *const bad[] = {
	    "9873",	"127.0.0.1", ":9873", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000",
	    "::1:9873", "[::1]9873", "[::1",  "h:-1"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		CHECK_INT(
		    conf_parse_listen(bad[i], host, sizeof(host), &port, why, sizeof(why)),
		    -22);
		CHECK(why[0] != '\0');
	}
	CHECK_INT(conf_parse_listen(
		      "averyveryveryveryveryveryveryveryveryveryveryveryveryverylonghostname:1",
		      host, 16, &port, why, sizeof(why)),
		  -22);
}

static void test_negotiate(void)
{
	/* What Prometheus 2.x sends. */
	CHECK_INT(metrics_http_negotiate("application/openmetrics-text;version=1.0.0,"
					 "application/openmetrics-text;version=0.0.1;q=0.75,"
					 "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
		  METRICS_OPENMETRICS);
	CHECK_INT(metrics_http_negotiate("application/openmetrics-text"), METRICS_OPENMETRICS);
	CHECK_INT(metrics_http_negotiate("Application/OpenMetrics-Text; version=1.0.0"),
		  METRICS_OPENMETRICS);
	/* Older Prometheus, curl, browsers, nothing at all. */
	CHECK_INT(metrics_http_negotiate("text/plain;version=0.0.4;q=1,*/*;q=0.1"),
		  METRICS_PROMETHEUS);
	CHECK_INT(metrics_http_negotiate("*/*"), METRICS_PROMETHEUS);
	CHECK_INT(metrics_http_negotiate(NULL), METRICS_PROMETHEUS);
	CHECK_INT(metrics_http_negotiate(""), METRICS_PROMETHEUS);
	CHECK_INT(metrics_http_negotiate("text/html,application/xhtml+xml"), METRICS_PROMETHEUS);
	/* Quality decides. */
	CHECK_INT(metrics_http_negotiate("text/plain;q=0.9, application/openmetrics-text;q=0.5"),
		  METRICS_PROMETHEUS);
	CHECK_INT(metrics_http_negotiate("text/plain;q=0.4, application/openmetrics-text ; q=0.5"),
		  METRICS_OPENMETRICS);
	CHECK_INT(metrics_http_negotiate("application/openmetrics-text;q=0"), METRICS_PROMETHEUS);
}

int main(void)
{
	test_parse_listen();
	test_negotiate();
	return tap_done();
}
