/*
 * httpd: the daemons' HTTP/1.1 server (tpas's tunnel, either daemon's /metrics), plain or
 * TLS (a bufferevent the caller makes), on core/http's request parser. Keep-alive and
 * HTTP/1.0, one request at a time per connection (a pipelined one waits, unread, until the
 * one before is answered and its answer written: a client that does not read holds no
 * more than one answer and a bounded input), Content-Length and chunked bodies,
 * "100 Continue", a cap on the header section, on the body and on the connections open,
 * and a timeout: a client that leaves a request unfinished that long is answered 408 and
 * closed (libevent 2.1's evhttp could only drop it unanswered and uncounted, and let a
 * pipelining client that never reads fill memory), an idle one is closed. Answers go out
 * with one write when the socket takes them; a plain connection is read with one read()
 * (a bufferevent would ask FIONREAD first: a second system call per request).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct event_base;
struct httpd;
struct httpd_req;

/* A complete request; answer it with httpd_reply(), now or later, exactly once. */
typedef void httpd_handler(struct httpd_req *r, void *arg);

/*
 * A request announced its body with "Expect: 100-continue": true to invite the body, false
 * to have the handler answer it now (httpd_req_unread() tells), its body never read. The
 * target is the path and query; declared is the Content-Length (-1 when chunked).
 */
typedef bool httpd_invite_fn(const char *method, const char *target, long long declared,
			     void *arg);

/* A connection's bufferevent (a TLS filter, say), its socket set by the server. */
typedef struct bufferevent *httpd_bev_fn(struct event_base *base, void *arg);

/* The server answered by itself (400, 408, 413, 417, 431): for the caller's log. */
typedef void httpd_refused_fn(int status, const char *reason, const char *why,
			      const char *peer, void *arg);

struct httpd_options {
	const char *name;	  /* in log lines: "tunnel", "metrics" */
	const char *timeout_name; /* what sets timeout_ms, in messages ("tunnel.timeout") */
	const char *cap_name;	  /* what sets max_conns, in messages */
	const char *host;	  /* numeric address to bind */
	uint16_t port;		  /* 0: any */
	size_t max_body;	  /* larger bodies are answered 413 and the connection closed */
	uint32_t timeout_ms;	  /* unfinished request: 408; idle connection: closed */
	httpd_bev_fn *bev;	  /* NULL: plain HTTP */
	void *bev_arg;
	unsigned max_conns;	  /* open at once at most; then accepting pauses (0: no cap) */
	httpd_invite_fn *invite;  /* NULL: every announced body is invited */
	httpd_refused_fn *refused; /* NULL: logged as a warning */
};

/* What the server answered by itself, since start. */
struct httpd_stats {
	uint64_t malformed; /* 400: not HTTP/1.x, or no Host or two (417: an unknown Expect) */
	uint64_t too_big;   /* 413: body over max_body, or 431-sized header section */
	uint64_t timed_out; /* 408: a request left unfinished for timeout_ms */
	uint64_t no_memory; /* 503: out of memory reading a request (the client may retry) */
	uint64_t capped;    /* episodes of max_conns open (reaches under 1 s apart are one) */
};

/* Bind and listen; NULL with one line in err. */
struct httpd *httpd_new(struct event_base *base, const struct httpd_options *o,
			httpd_handler *handler, void *arg, char *err, size_t errlen);

/* Close every connection (requests not yet answered are dropped) and free. Accepts NULL. */
void httpd_free(struct httpd *h);

/* Connections open now. */
unsigned httpd_connections(const struct httpd *h);

/* The bound port. */
uint16_t httpd_port(const struct httpd *h);

/*
 * What --check-config can tell of a listening address (HOST:PORT) before binding it: its
 * form, and that its host resolves. 0, or -EINVAL with a reason in why.
 */
int httpd_listen_check(const char *listen, char *why, size_t whylen);

void httpd_get_stats(const struct httpd *h, struct httpd_stats *ret);

/* The request's method ("POST"), path (before '?'), query (after it; NULL if none), body. */
const char *httpd_req_method(const struct httpd_req *r);
const char *httpd_req_path(const struct httpd_req *r);
const char *httpd_req_query(const struct httpd_req *r);
const char *httpd_req_body(const struct httpd_req *r, size_t *ret_len);

/* The request's Accept header ("" when it has none). */
const char *httpd_req_accept(const struct httpd_req *r);

/* True for a request answered before its body (see httpd_invite_fn); *declared its length. */
bool httpd_req_unread(const struct httpd_req *r, long long *declared);

/*
 * Answer r with status and a JSON body (len bytes; may be NULL), plus extra header lines
 * ("Name: value\r\n" each, or NULL); r is freed. A client gone meanwhile is simply not
 * written to. A HEAD request gets the headers only (the length of body).
 */
void httpd_reply(struct httpd_req *r, int status, const char *extra_headers, const char *body,
		 size_t len);

/* The same with another Content-Type. */
void httpd_reply_as(struct httpd_req *r, int status, const char *content_type,
		    const char *extra_headers, const char *body, size_t len);
