/* metrics_http: the HTTP /metrics endpoint for Prometheus (metrics.listen), for either daemon. */
#include "metrics_http.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf.h"
#include "log.h"

#define HTTP_TIMEOUT_S 10
#define HTTP_MAX_HEADERS 8192

struct metrics_http {
	struct evhttp *http;
	metrics_render_fn *render;
	void *arg;
	char program[16];
	struct evconnlistener *listener;
	struct event *resume; /* accepting again after accept() failed (out of descriptors) */
	unsigned long long scrapes;
	struct metrics_http *next; /* in endpoints */
};

/*
 * The endpoints open (the loop thread's): the listener's callbacks get evhttp's argument,
 * not ours, so its error callback finds its endpoint here.
 */
static struct metrics_http *endpoints;

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

/* GET or HEAD /metrics. */
static void on_metrics(struct evhttp_request *req, void *arg)
{
	struct metrics_http *m = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq *out = evhttp_request_get_output_headers(req);
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(out, "Allow", "GET, HEAD");
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
	enum metrics_format fmt = metrics_http_negotiate(accept);
	char *text = m->render(m->arg, fmt);
	struct evbuffer *body = evbuffer_new();
	if (!text || !body || evbuffer_add(body, text, strlen(text)) < 0) {
		free(text);
		if (body)
			evbuffer_free(body);
		evhttp_send_error(req, 500, "Out of memory");
		return;
	}
	free(text);
	m->scrapes++;
	evhttp_add_header(out, "Content-Type", metrics_content_type(fmt));
	evhttp_add_header(out, "Cache-Control", "no-store");
	if (cmd == EVHTTP_REQ_HEAD) {
		/* evhttp 2.1 would send the body after a HEAD's headers: the GET's length only. */
		char len[24];
		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
		evhttp_add_header(out, "Content-Length", len);
		evbuffer_drain(body, evbuffer_get_length(body));
	}
	evhttp_send_reply(req, 200, "OK", body);
	evbuffer_free(body);
}

/* Anything else: 404, with a pointer to the one page there is. */
static void on_other(struct evhttp_request *req, void *arg)
{
	struct metrics_http *m = arg;
	struct evbuffer *body = evbuffer_new();
	if (body)
		evbuffer_add_printf(body, "%s serves its metrics at /metrics\n", m->program);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			  "text/plain; charset=utf-8");
	evhttp_send_reply(req, 404, "Not Found", body);
	if (body)
		evbuffer_free(body);
}

/*
 * accept() failed (out of descriptors, say): stop accepting for a second. libevent's
 * default would warn and try again at once, spinning while a client waits.
 */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct metrics_http *m = endpoints;
	while (m && m->listener != l)
		m = m->next;
	if (!m)
		return;
	log_warnx("metrics: cannot accept a connection: %s; trying again in 1 s",
		  strerror(EVUTIL_SOCKET_ERROR()));
	evconnlistener_disable(l);
	struct timeval tv = {.tv_sec = 1};
	evtimer_add(m->resume, &tv);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct metrics_http *m = arg;
	evconnlistener_enable(m->listener);
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
	if (!m || !(m->http = evhttp_new(base))) {
		free(m);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	m->render = render;
	m->arg = arg;
	snprintf(m->program, sizeof(m->program), "%s", program);
	evhttp_set_timeout(m->http, HTTP_TIMEOUT_S);
	evhttp_set_max_headers_size(m->http, HTTP_MAX_HEADERS);
	/* A small body is read, so that a POST or PUT gets its 405 rather than a 413. */
	evhttp_set_max_body_size(m->http, 4096);
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
						EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_cb(m->http, "/metrics", on_metrics, m);
	evhttp_set_gencb(m->http, on_other, m);
	errno = 0;
	struct evhttp_bound_socket *bound = evhttp_bind_socket_with_handle(m->http, host, port);
	if (!bound) {
		int e = errno ? errno : EADDRNOTAVAIL;
		snprintf(err, errlen, "metrics.listen: cannot listen on %s: %s", addr, strerror(e));
		metrics_http_free(m);
		return -e;
	}
	m->listener = evhttp_bound_socket_get_listener(bound);
	m->resume = evtimer_new(base, resume_cb, m);
	if (!m->resume) {
		snprintf(err, errlen, "out of memory");
		metrics_http_free(m);
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(m->listener, accept_error_cb);
	m->next = endpoints;
	endpoints = m;
	log_info("metrics served on http://%s/metrics", addr);
	*ret = m;
	return 0;
}

void metrics_http_free(struct metrics_http *m)
{
	if (!m)
		return;
	for (struct metrics_http **p = &endpoints; *p; p = &(*p)->next)
		if (*p == m) {
			*p = m->next;
			break;
		}
	if (m->resume)
		event_free(m->resume);
	evhttp_free(m->http);
	free(m);
}
