/* sim_http: HTTP/1.1 request parsing and response formatting for tpa-sim. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

#define HTTP_HEAD_MAX (16 * 1024) /* request line plus headers */
#define HTTP_TARGET_MAX 2048

/* One parsed request; body is malloc'd and NUL-terminated (empty, not NULL). */
struct http_request {
	char method[16];
	char target[HTTP_TARGET_MAX];
	int minor; /* HTTP/1.minor */
	bool keep_alive;
	char authorization[512];
	char content_type[128];
	char *body;
	size_t body_len;
};

/*
 * Parse one request from the len bytes at buf, with a body of at most max_body bytes
 * (Content-Length or chunked). On success fill *ret (release with http_request_clear)
 * and set *ret_consumed. -EAGAIN: incomplete; -EBADMSG: malformed (400);
 * -EMSGSIZE: head over HTTP_HEAD_MAX or a field too long (431); -EFBIG: body over
 * max_body (413); -ENOTSUP: a transfer coding other than chunked (501); -ENOMEM.
 */
int http_parse_request(const char *buf, size_t len, size_t max_body, struct http_request *ret,
		       size_t *ret_consumed);

/* Free the body of r and reset it; accepts a zeroed request. */
void http_request_clear(struct http_request *r);

/* The HTTP status code a parse error maps to. */
int http_error_status(int negerr);

/* The reason phrase of status. */
const char *http_reason(int status);

/*
 * Append a complete response to out: status line, Content-Type application/json when body
 * is not NULL, Content-Length, Retry-After when retry_after > 0, Allow when allow is not
 * NULL, and Connection: close or keep-alive as asked. -ENOMEM on failure.
 */
int http_format_response(struct evbuffer *out, int status, const char *body, unsigned retry_after,
			 const char *allow, bool keep_alive, int minor);

/*
 * Find the value of query parameter name in target (after '?'), percent-decoded into out
 * (size outsz). -ENOENT if absent, -EINVAL if badly encoded, -E2BIG if too long.
 */
int http_query_param(const char *target, const char *name, char *out, size_t outsz);

/* Same as http_query_param for an application/x-www-form-urlencoded body. */
int http_form_param(const char *form, const char *name, char *out, size_t outsz);

/* The path part of target (up to '?') copied into out; -E2BIG if too long. */
int http_target_path(const char *target, char *out, size_t outsz);
