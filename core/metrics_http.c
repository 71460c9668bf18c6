/* metrics_http: the HTTP /metrics endpoint for Prometheus (metrics.listen), for either daemon. */
#include "metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "daemon.h"
#include "httpd.h"
#include "log.h"

#define HTTP_TIMEOUT_MS 10000
/* A small body is read, so that a POST or PUT gets its 405 rather than a 413. */
#define HTTP_MAX_BODY 4096

struct metrics_http {
	struct httpd *http;
	metrics_render_fn *render;
	void *arg;
	char program[16];
};

/* The quality of one media range from its parameters (";version=1.0.0;q=0.5"), 1 if none. */
static double quality(const char *params, const char *end)
{
	if (!params)
		return 1.0;
	size_t n = (size_t)(end - params);
	for (size_t i = 0; i < n; i++) {
		if (params[i] != ';')
			continue;
		size_t j = i + 1;
		while (j < n && (params[j] == ' ' || params[j] == '\t'))
			j++;
		if (j + 2 < n + 1 && j + 1 < n && (params[j] == 'q' || params[j] == 'Q') &&
		    params[j + 1] == '=')
			return strtod(params + j + 2, NULL);
	}
	return 1.0;
}

enum metrics_format metrics_http_negotiate(const char *accept)
{
	double om = 0.0, text = 0.0;
	if (!accept)
		return METRICS_PROMETHEUS;
	for (const char *p = accept; *p;) {
		const char *end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		const char *semi = end > p ? memchr(p, ';', (size_t)(end - p)) : NULL;
		const char *tend = semi ? semi : end;
		while (tend > p && (tend[-1] == ' ' || tend[-1] == '\t'))
			tend--;
		size_t tl = (size_t)(tend - p);
		double q = quality(semi, end);
		if (tl == 28 && strncasecmp(p, "application/openmetrics-text", tl) == 0) {
			if (q > om)
				om = q;
		} else if ((tl == 10 && strncasecmp(p, "text/plain", tl) == 0) ||
			   (tl == 6 && strncasecmp(p, "text/*", tl) == 0) ||
			   (tl == 3 && strncmp(p, "*/*", tl) == 0)) {
			if (q > text)
				text = q;
		}
		p = *end ? end + 1 : end;
	}
	return om > 0.0 && om >= text ? METRICS_OPENMETRICS : METRICS_PROMETHEUS;
}

/* GET or HEAD /metrics; 405 for another method there; 404 elsewhere. */
static void on_request(struct httpd_req *r, void *arg)
{
	struct metrics_http *m = arg;
	const char *method = httpd_req_method(r);
	static const char text_type[] = "text/plain; charset=utf-8";
	if (strcmp(httpd_req_path(r), "/metrics") != 0) {
		char body[64];
		int n = snprintf(body, sizeof(body), "%s serves its metrics at /metrics\n",
				 m->program);
		httpd_reply_as(r, 404, text_type, NULL, body, (size_t)n);
		return;
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		static const char body[] = "only GET and HEAD\n";
		httpd_reply_as(r, 405, text_type, "Allow: GET, HEAD\r\n", body, sizeof(body) - 1);
		return;
	}
	const char *accept = httpd_req_accept(r);
	enum metrics_format fmt = metrics_http_negotiate(*accept ? accept : NULL);
	char *text = m->render(m->arg, fmt);
	if (!text) {
		static const char body[] = "out of memory\n";
		httpd_reply_as(r, 500, text_type, NULL, body, sizeof(body) - 1);
		return;
	}
	httpd_reply_as(r, 200, metrics_content_type(fmt), "Cache-Control: no-store\r\n", text,
		       strlen(text));
	free(text);
}

int metrics_http_new(struct event_base *base, const char *addr, const char *program,
		     metrics_render_fn *render, void *arg, struct metrics_http **ret, char *err,
		     size_t errlen)
{
	char host[256], why[256];
	uint16_t port;
	if (conf_parse_listen(addr, host, sizeof(host), &port, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "metrics.listen: '%s' %s", addr, why);
		return -EINVAL;
	}
	struct metrics_http *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->render = render;
	m->arg = arg;
	snprintf(m->program, sizeof(m->program), "%s", program);
	const struct httpd_options o = {.name = "metrics",
					.timeout_name = "the metrics endpoint's timeout",
					.cap_name = "the metrics endpoint's most",
					.host = host,
					.port = port,
					.max_body = HTTP_MAX_BODY,
					.timeout_ms = HTTP_TIMEOUT_MS,
					/* A scraper or two, a person with curl: more wait
					 * in the listen backlog (a trickling client holds a
					 * slot for HTTP_TIMEOUT_MS at most). */
					.max_conns = DAEMON_METRICS_CONNS};
	m->http = httpd_new(base, &o, on_request, m, why, sizeof(why));
	if (!m->http) {
		snprintf(err, errlen, "metrics.listen: %s", why);
		free(m);
		return -EADDRINUSE;
	}
	/* The port bound, which port 0 leaves to the system. */
	bool v6 = strchr(host, ':') != NULL;
	log_info("metrics served on http://%s%s%s:%u/metrics", v6 ? "[" : "", host, v6 ? "]" : "",
		 (unsigned)httpd_port(m->http));
	*ret = m;
	return 0;
}

void metrics_http_free(struct metrics_http *m)
{
	if (!m)
		return;
	httpd_free(m->http);
	free(m);
}
