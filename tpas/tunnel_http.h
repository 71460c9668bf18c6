/*
 * tunnel_http: the tunnel's HTTP/1.1 server, plain or TLS (tunnel_tls), on core/http's
 * request parser. Keep-alive and HTTP/1.0, one request at a time per connection (a
 * pipelined one waits, unread, until the one before is answered), Content-Length and
 * chunked bodies, "100 Continue", a cap on the header section and on the body, and
 * tunnel.timeout: a client that leaves a request unfinished that long is answered 408 and
 * closed (libevent's evhttp could only drop it unanswered and uncounted), an idle one is
 * closed. Answers go out with one write when the socket takes them.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct thttp;
struct thttp_req;
struct tunnel_tls;

/* A complete request; answer it with thttp_reply(), now or later, exactly once. */
typedef void thttp_handler(struct thttp_req *r, void *arg);

/*
 * A request announced its body with "Expect: 100-continue": true to invite the body, false
 * to have the handler answer it now (thttp_req_unread() tells), its body never read. The
 * target is the path and query; declared is the Content-Length (-1 when chunked).
 */
typedef bool thttp_invite_fn(const char *method, const char *target, long long declared,
			     void *arg);

struct thttp_options {
	const char *host;	/* numeric address to bind */
	uint16_t port;		/* 0: any */
	size_t max_body;	/* larger bodies are answered 413 and the connection closed */
	uint32_t timeout_ms;	/* unfinished request: 408; idle connection: closed */
	struct tunnel_tls *tls; /* NULL: plain HTTP */
	unsigned max_conns;	/* open at once at most; then accepting pauses (0: no cap) */
	thttp_invite_fn *invite; /* NULL: every announced body is invited */
};

/* What the server answered by itself, since start. */
struct thttp_stats {
	uint64_t malformed; /* 400: not HTTP/1.x */
	uint64_t too_big;   /* 413: body over max_body, or 431-sized header section */
	uint64_t timed_out; /* 408: a request left unfinished for timeout_ms */
	uint64_t capped;    /* episodes of max_conns open (reaches under 1 s apart are one) */
};

/* Bind and listen; NULL with one line in err. */
struct thttp *thttp_new(struct event_base *base, const struct thttp_options *o,
			thttp_handler *handler, void *arg, char *err, size_t errlen);

/* Close every connection (requests not yet answered are dropped) and free. Accepts NULL. */
void thttp_free(struct thttp *h);

/* Connections open now. */
unsigned thttp_connections(const struct thttp *h);

/* The bound port. */
uint16_t thttp_port(const struct thttp *h);

void thttp_get_stats(const struct thttp *h, struct thttp_stats *ret);

/* The request's method ("POST"), path (before '?'), query (after it; NULL if none), body. */
const char *thttp_req_method(const struct thttp_req *r);
const char *thttp_req_path(const struct thttp_req *r);
const char *thttp_req_query(const struct thttp_req *r);
const char *thttp_req_body(const struct thttp_req *r, size_t *ret_len);

/* True for a request answered before its body (see thttp_invite_fn); *declared its length. */
bool thttp_req_unread(const struct thttp_req *r, long long *declared);

/*
 * Answer r with status and a JSON body (len bytes; may be NULL), plus extra header lines
 * ("Name: value\r\n" each, or NULL); r is freed. A client gone meanwhile is simply not
 * written to.
 */
void thttp_reply(struct thttp_req *r, int status, const char *extra_headers, const char *body,
		 size_t len);
