/*
 * http: HTTP/1.1 request builder, incremental response and request parser and URL helpers
 * (no I/O).
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Distinct parser errors (negative errno values). */
#define HTTP_EMALFORMED (-EBADMSG) /* not HTTP/1.x, bad syntax, bad framing */
#define HTTP_ETOOBIG (-EMSGSIZE)   /* body over the cap, or a header section over its limit */
#define HTTP_ETRUNCATED (-ENODATA) /* the connection ended before the response did */

#define HTTP_MAX_LINE 8192     /* status, header, chunk-size and trailer lines */
#define HTTP_MAX_HEADERS 16384 /* whole header section, or trailer section */
#define HTTP_MAX_HOST 256

/* A parsed http:// or https:// URL. */
struct http_url {
	bool tls;		      /* https */
	char host[HTTP_MAX_HOST];     /* without brackets for IPv6 literals */
	uint16_t port;		      /* explicit or the scheme's default */
	bool default_port;	      /* port was not given */
	char path[HTTP_MAX_LINE / 4]; /* "" when the URL has none */
};

/* What a request consists of; every string must be free of CR and LF. */
struct http_request {
	const char *method;	  /* "GET", "POST" */
	const char *host;	  /* value of the Host header, port included if not default */
	const char *target;	  /* path and query */
	const char *content_type; /* NULL: no body headers unless body_len > 0 */
	const char *bearer;	  /* NULL: no Authorization header */
	const char *auth_scheme;  /* scheme word before the token; NULL: "Bearer" */
	const void *body;
	size_t body_len;
};

/*
 * A response (or, from a request parser, a request) as far as it was parsed; body is
 * NUL-terminated (body_len excludes it).
 */
struct http_response {
	int status;		  /* 0 for a request */
	int minor;		  /* HTTP/1.<minor> */
	bool chunked;		  /* Transfer-Encoding: chunked */
	bool close;		  /* the server closes after this response (a request: the
				   * client wants the connection closed after the answer) */
	long long content_length; /* -1 when absent */
	char retry_after[64];	  /* raw Retry-After value, "" when absent */
	char content_type[128];	  /* raw Content-Type value, "" when absent */
	char *body;
	size_t body_len;
	bool body_cut; /* http_parser_cut_body(): bytes past max_body were read and dropped */
	/* A request's: its method, its target (path and query, malloc()ed) and whether it
	 * waits for "100 Continue" before sending its body. */
	char method[16];
	char *target;
	bool expect_continue;
	bool expect_unknown; /* an Expect other than 100-continue (answer 417) */
	char accept[256];    /* its Accept value(s), joined by ", "; "" when absent */
	unsigned hosts;	     /* its Host fields (RFC 9112 §3.2: one, or none in HTTP/1.0) */
};

/* Incremental response parser state; initialise with http_parser_init(). */
struct http_parser {
	struct http_response res;
	int state;
	size_t max_body;
	size_t body_cap;
	size_t section_bytes;
	unsigned long long chunk_left;
	bool started;
	bool request;  /* parses requests (http_parser_init_request()) */
	bool cut_body; /* keep max_body bytes of a body, read and drop the rest */
	unsigned long long body_seen; /* body bytes read, kept or not */
	int failed_in; /* the state an error happened in */
	size_t line_len;
	char line[HTTP_MAX_LINE];
};

/* Build the request bytes into a new malloc()ed buffer; -EINVAL on CR/LF in any field. */
int http_request_build(const struct http_request *r, char **ret_buf, size_t *ret_len);

/* Prepare p for one response whose body may hold at most max_body bytes. */
void http_parser_init(struct http_parser *p, size_t max_body);

/*
 * Prepare p for one request whose body may hold at most max_body bytes: a request line
 * ("METHOD target HTTP/1.x"), and a body only with Content-Length or chunked. Its fields
 * are in p->res (status 0).
 */
void http_parser_init_request(struct http_parser *p, size_t max_body);

/*
 * Keep at most max_body bytes of a body and read the rest without keeping it (res.body_cut
 * tells), instead of failing with HTTP_ETOOBIG: for a caller that wants the status and
 * headers of a response whose body may be of any size. Kept across resets.
 */
void http_parser_cut_body(struct http_parser *p);

/* Release the body (and a request's target) held by p, ready for the next message. */
void http_parser_reset(struct http_parser *p);

/* True when a request's header section is done and its body has not begun. */
bool http_parser_awaits_body(const struct http_parser *p);

/* True once the header section is done (the body, if any, is being read), also when the
 * error that ended parsing came after it. */
bool http_parser_headers_done(const struct http_parser *p);

/* True while (or if it failed while) the start line is read: a request line too long. */
bool http_parser_in_start_line(const struct http_parser *p);

/*
 * After an error, the part of the message it was in: "request line (not HTTP/1.x)" (or
 * "status line"), "header section" (a bad line, conflicting Content-Length or
 * Transfer-Encoding, folded lines), "chunked body", "body".
 */
const char *http_parser_failed_part(const struct http_parser *p);

/*
 * Feed len bytes. Returns 0 when more input is needed, 1 when the response is complete
 * (*ret_used then tells how many bytes of data belonged to it), or HTTP_EMALFORMED,
 * HTTP_ETOOBIG, -ENOMEM. After an error or completion, feed no more without a reset.
 */
int http_parser_feed(struct http_parser *p, const void *data, size_t len, size_t *ret_used);

/* The connection ended: 1 if that completes a close-delimited body, else HTTP_ETRUNCATED. */
int http_parser_eof(struct http_parser *p);

/* True once any byte was fed since the last init or reset. */
bool http_parser_started(const struct http_parser *p);

/* Hand the parsed body to the caller (who free()s it); the parser keeps none. */
char *http_parser_steal_body(struct http_parser *p, size_t *ret_len);

/* A short English text for the parser's error codes and other errnos. */
const char *http_strerror(int err);

/*
 * Retry-After value in seconds from now: delta-seconds or an IMF-fixdate, clamped to
 * [0, 86400]; -1 when the value is empty or unusable.
 */
int http_retry_after(const char *value, time_t now);

/* Parse "http[s]://host[:port][/path]"; -EINVAL on anything else. */
int http_url_parse(const char *url, struct http_url *ret);

/* Percent-encode s for a query or form value into out; -ENOBUFS if out is too small. */
int http_urlencode(const char *s, char *out, size_t outlen);
