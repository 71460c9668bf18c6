/* sim_http: HTTP/1.1 request parsing and response formatting for tpa-sim. */
#include "sim_http.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

/* True for the characters of an RFC 9110 token. */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Value of a hex digit, or -1. */
static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Find "\r\n" in [p, end); NULL if absent. */
static const char *find_crlf(const char *p, const char *end)
{
	for (; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return NULL;
}

/* Copy the n bytes at src into the fixed field dst (size dstsz); -EMSGSIZE if too long. */
static int copy_field(char *dst, size_t dstsz, const char *src, size_t n)
{
	if (n >= dstsz)
		return -EMSGSIZE;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return 0;
}

/* Does the comma-separated header value [v, v+n) contain token tok (case-insensitive)? */
static bool list_has(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok);
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return true;
	}
	return false;
}

/* Parse the request line [p, eol) into r. */
static int parse_request_line(const char *p, const char *eol, struct http_request *r)
{
	const char *sp1 = memchr(p, ' ', (size_t)(eol - p));
	if (!sp1 || sp1 == p)
		return -EBADMSG;
	for (const char *q = p; q < sp1; q++)
		if (*q < 'A' || *q > 'Z')
			return -EBADMSG;
	if (copy_field(r->method, sizeof(r->method), p, (size_t)(sp1 - p)) < 0)
		return -EBADMSG;
	const char *t = sp1 + 1;
	const char *sp2 = memchr(t, ' ', (size_t)(eol - t));
	if (!sp2 || sp2 == t || *t != '/')
		return -EBADMSG;
	for (const char *q = t; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
			return -EBADMSG;
	int rr = copy_field(r->target, sizeof(r->target), t, (size_t)(sp2 - t));
	if (rr < 0)
		return rr;
	const char *v = sp2 + 1;
	if (eol - v != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
		return -EBADMSG;
	r->minor = v[7] - '0';
	return 0;
}

/* Decode a chunked body starting at p; -EAGAIN until the last chunk and trailers are in. */
static int parse_chunked(const char *p, const char *end, size_t max_body, char **ret_body,
			 size_t *ret_len, const char **ret_end)
{
	/* First pass: validate and measure, so nothing is allocated for an incomplete body. */
	size_t total = 0;
	const char *q = p;
	for (;;) {
		const char *eol = find_crlf(q, end);
		if (!eol)
			return (end - q) > 64 ? -EBADMSG : -EAGAIN;
		size_t size = 0;
		const char *d = q;
		if (d == eol || hex_value((unsigned char)*d) < 0)
			return -EBADMSG;
		for (; d < eol && hex_value((unsigned char)*d) >= 0; d++) {
			size = size * 16 + (size_t)hex_value((unsigned char)*d);
			if (size > max_body)
				return -EFBIG;
		}
		if (d < eol && *d != ';' && *d != ' ' && *d != '\t')
			return -EBADMSG;
		q = eol + 2;
		if (size == 0)
			break;
		if (total + size > max_body)
			return -EFBIG;
		if ((size_t)(end - q) < size + 2)
			return -EAGAIN;
		if (q[size] != '\r' || q[size + 1] != '\n')
			return -EBADMSG;
		total += size;
		q += size + 2;
	}
	/* Trailer fields are read and ignored up to the empty line. */
	for (;;) {
		const char *eol = find_crlf(q, end);
		if (!eol)
			return (end - q) > HTTP_HEAD_MAX ? -EMSGSIZE : -EAGAIN;
		const char *line = q;
		q = eol + 2;
		if (eol == line)
			break;
	}
	char *body = malloc(total + 1);
	if (!body)
		return -ENOMEM;
	size_t off = 0;
	const char *c = p;
	for (;;) {
		const char *eol = find_crlf(c, end);
		size_t size = strtoul(c, NULL, 16);
		c = eol + 2;
		if (size == 0)
			break;
		memcpy(body + off, c, size);
		off += size;
		c += size + 2;
	}
	body[total] = '\0';
	*ret_body = body;
	*ret_len = total;
	*ret_end = q;
	return 0;
}

int http_parse_request(const char *buf, size_t len, size_t max_body, struct http_request *ret,
		       size_t *ret_consumed)
{
	struct http_request r = {0};
	const char *p = buf, *end = buf + len;

	/* Empty lines before a request line are ignored (RFC 9112 2.2). */
	while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
		p += 2;
	size_t window = (size_t)(end - p) < HTTP_HEAD_MAX ? (size_t)(end - p) : HTTP_HEAD_MAX;
	const char *head_end = NULL;
	for (size_t i = 0; i + 3 < window; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
			head_end = p + i + 2;
			break;
		}
	if (!head_end)
		return (size_t)(end - p) >= HTTP_HEAD_MAX ? -EMSGSIZE : -EAGAIN;

	const char *eol = find_crlf(p, head_end);
	int rr = parse_request_line(p, eol, &r);
	if (rr < 0)
		return rr;
	r.keep_alive = r.minor >= 1;

	long long content_length = -1;
	bool chunked = false, have_te = false;
	const char *line = eol + 2;
	while (line < head_end) {
		eol = find_crlf(line, head_end + 2);
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		if (!colon || colon == line)
			return -EBADMSG;
		for (const char *q = line; q < colon; q++)
			if (!is_tchar((unsigned char)*q))
				return -EBADMSG;
		const char *v = colon + 1, *ve = eol;
		while (v < ve && (*v == ' ' || *v == '\t'))
			v++;
		while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
			ve--;
		for (const char *q = v; q < ve; q++)
			if (((unsigned char)*q < 0x20 && *q != '\t') || *q == 0x7f)
				return -EBADMSG;
		size_t nl = (size_t)(colon - line), vl = (size_t)(ve - v);
		if (nl == 14 && strncasecmp(line, "content-length", nl) == 0) {
			if (vl == 0 || vl > 18)
				return vl == 0 ? -EBADMSG : -EFBIG;
			long long n = 0;
			for (const char *q = v; q < ve; q++) {
				if (*q < '0' || *q > '9')
					return -EBADMSG;
				n = n * 10 + (*q - '0');
			}
			if (content_length >= 0 && content_length != n)
				return -EBADMSG;
			content_length = n;
		} else if (nl == 17 && strncasecmp(line, "transfer-encoding", nl) == 0) {
			if (have_te || vl != 7 || strncasecmp(v, "chunked", 7) != 0)
				return have_te ? -EBADMSG : -ENOTSUP;
			have_te = chunked = true;
		} else if (nl == 10 && strncasecmp(line, "connection", nl) == 0) {
			if (list_has(v, vl, "close"))
				r.keep_alive = false;
			else if (list_has(v, vl, "keep-alive"))
				r.keep_alive = true;
		} else if (nl == 13 && strncasecmp(line, "authorization", nl) == 0) {
			rr = copy_field(r.authorization, sizeof(r.authorization), v, vl);
			if (rr < 0)
				return rr;
		} else if (nl == 12 && strncasecmp(line, "content-type", nl) == 0) {
			rr = copy_field(r.content_type, sizeof(r.content_type), v, vl);
			if (rr < 0)
				return rr;
		}
		line = eol + 2;
	}
	if (chunked && content_length >= 0)
		return -EBADMSG;

	const char *body_start = head_end + 2;
	const char *req_end;
	if (chunked) {
		rr = parse_chunked(body_start, end, max_body, &r.body, &r.body_len, &req_end);
		if (rr < 0)
			return rr;
	} else {
		size_t n = content_length > 0 ? (size_t)content_length : 0;
		if (n > max_body)
			return -EFBIG;
		if ((size_t)(end - body_start) < n)
			return -EAGAIN;
		r.body = malloc(n + 1);
		if (!r.body)
			return -ENOMEM;
		memcpy(r.body, body_start, n);
		r.body[n] = '\0';
		r.body_len = n;
		req_end = body_start + n;
	}
	*ret = r;
	*ret_consumed = (size_t)(req_end - buf);
	return 0;
}

void http_request_clear(struct http_request *r)
{
	if (!r)
		return;
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int http_error_status(int negerr)
{
	switch (negerr) {
	case -EMSGSIZE:
		return 431;
	case -EFBIG:
		return 413;
	case -ENOTSUP:
		return 501;
	case -ENOMEM:
		return 500;
	default:
		return 400;
	}
}

const char *http_reason(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 204:
		return "No Content";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 409:
		return "Conflict";
	case 413:
		return "Content Too Large";
	case 415:
		return "Unsupported Media Type";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 503:
		return "Service Unavailable";
	default:
		return "Unknown";
	}
}

int http_format_response(struct evbuffer *out, int status, const char *body, unsigned retry_after,
			 const char *allow, bool keep_alive, int minor)
{
	size_t blen = body ? strlen(body) : 0;
	int r = evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nServer: tpa-sim\r\n", status,
				    http_reason(status));
	if (r >= 0 && body)
		r = evbuffer_add_printf(out, "Content-Type: application/json\r\n");
	if (r >= 0)
		r = evbuffer_add_printf(out, "Content-Length: %zu\r\n", blen);
	if (r >= 0 && retry_after > 0)
		r = evbuffer_add_printf(out, "Retry-After: %u\r\n", retry_after);
	if (r >= 0 && allow)
		r = evbuffer_add_printf(out, "Allow: %s\r\n", allow);
	if (r >= 0 && !keep_alive)
		r = evbuffer_add_printf(out, "Connection: close\r\n");
	else if (r >= 0 && minor == 0)
		r = evbuffer_add_printf(out, "Connection: keep-alive\r\n");
	if (r >= 0)
		r = evbuffer_add(out, "\r\n", 2);
	if (r >= 0 && blen)
		r = evbuffer_add(out, body, blen);
	return r < 0 ? -ENOMEM : 0;
}

/* Percent-decode [s, s+n) into out (size outsz), '+' meaning space. */
static int url_decode(const char *s, size_t n, char *out, size_t outsz)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return -EINVAL;
			int h = hex_value((unsigned char)s[i + 1]);
			int l = hex_value((unsigned char)s[i + 2]);
			if (h < 0 || l < 0)
				return -EINVAL;
			c = (char)(h * 16 + l);
			if (c == '\0')
				return -EINVAL;
			i += 2;
		} else if (c == '+') {
			c = ' ';
		}
		if (o + 1 >= outsz)
			return -E2BIG;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

int http_form_param(const char *form, const char *name, char *out, size_t outsz)
{
	size_t nl = strlen(name);
	const char *p = form;
	while (*p) {
		const char *amp = strchr(p, '&');
		size_t pl = amp ? (size_t)(amp - p) : strlen(p);
		if (pl > nl && p[nl] == '=' && strncmp(p, name, nl) == 0)
			return url_decode(p + nl + 1, pl - nl - 1, out, outsz);
		if (pl == nl && strncmp(p, name, nl) == 0)
			return url_decode(p, 0, out, outsz);
		p += pl;
		if (*p == '&')
			p++;
	}
	return -ENOENT;
}

int http_query_param(const char *target, const char *name, char *out, size_t outsz)
{
	const char *q = strchr(target, '?');
	if (!q)
		return -ENOENT;
	return http_form_param(q + 1, name, out, outsz);
}

int http_target_path(const char *target, char *out, size_t outsz)
{
	size_t n = strcspn(target, "?");
	if (n >= outsz)
		return -E2BIG;
	memcpy(out, target, n);
	out[n] = '\0';
	return 0;
}
