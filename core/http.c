/* http: HTTP/1.1 request builder, incremental response and request parser, URL helpers. */
#include "http.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "wipe.h"

enum {
	ST_STATUS,     /* reading the status line (a request's: the request line) */
	ST_HEADER,     /* reading header lines */
	ST_BODY_LEN,   /* Content-Length body */
	ST_BODY_CLOSE, /* body delimited by the end of the connection */
	ST_CHUNK_SIZE, /* chunk-size [; ext] line */
	ST_CHUNK_DATA, /* chunk bytes */
	ST_CHUNK_END,  /* CRLF after chunk bytes */
	ST_TRAILER,    /* trailer lines after the last chunk */
	ST_DONE,
	ST_ERROR,
};

/* True if s holds a CR or LF, which would split a header. */
static bool has_crlf(const char *s)
{
	return s && strpbrk(s, "\r\n") != NULL;
}

/* Build the request bytes into a new buffer, refusing fields that would split a header. */
int http_request_build(const struct http_request *r, char **ret_buf, size_t *ret_len)
{
	if (!r->method || !r->host || !r->target || !*r->method || !*r->host || r->target[0] != '/')
		return -EINVAL;
	if (has_crlf(r->method) || has_crlf(r->host) || has_crlf(r->target) ||
	    has_crlf(r->content_type) || has_crlf(r->bearer) || has_crlf(r->auth_scheme) ||
	    (r->auth_scheme && strpbrk(r->auth_scheme, " \t")))
		return -EINVAL;
	if (r->body_len > 0 && !r->body)
		return -EINVAL;

	char head[HTTP_MAX_HEADERS];
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\n"
			 "Host: %s\r\n"
			 "User-Agent: tpad\r\n"
			 "Accept: application/json\r\n"
			 "Connection: keep-alive\r\n",
			 r->method, r->target, r->host);
	if (n < 0 || (size_t)n >= sizeof(head))
		return -E2BIG;
	size_t len = (size_t)n;
	if (r->bearer) {
		n = snprintf(head + len, sizeof(head) - len, "Authorization: %s %s\r\n",
			     r->auth_scheme && *r->auth_scheme ? r->auth_scheme : "Bearer", r->bearer);
		if (n < 0 || (size_t)n >= sizeof(head) - len)
			return -E2BIG;
		len += (size_t)n;
	}
	if (r->content_type || r->body_len > 0 || strcmp(r->method, "POST") == 0) {
		if (r->content_type) {
			n = snprintf(head + len, sizeof(head) - len, "Content-Type: %s\r\n",
				     r->content_type);
			if (n < 0 || (size_t)n >= sizeof(head) - len)
				return -E2BIG;
			len += (size_t)n;
		}
		n = snprintf(head + len, sizeof(head) - len, "Content-Length: %zu\r\n",
			     r->body_len);
		if (n < 0 || (size_t)n >= sizeof(head) - len)
			return -E2BIG;
		len += (size_t)n;
	}
	if (len + 2 >= sizeof(head))
		return -E2BIG;
	memcpy(head + len, "\r\n", 2);
	len += 2;

	char *buf = malloc(len + r->body_len + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, head, len);
	if (r->body_len)
		memcpy(buf + len, r->body, r->body_len);
	buf[len + r->body_len] = '\0';
	*ret_buf = buf;
	*ret_len = len + r->body_len;
	return 0;
}

/* Prepare p for one response with the given body cap. */
void http_parser_init(struct http_parser *p, size_t max_body)
{
	memset(p, 0, sizeof(*p));
	p->max_body = max_body;
	p->res.content_length = -1;
	p->state = ST_STATUS;
}

void http_parser_init_request(struct http_parser *p, size_t max_body)
{
	http_parser_init(p, max_body);
	p->request = true;
}

/* Free the body and start over with the same cap and kind. */
void http_parser_reset(struct http_parser *p)
{
	size_t max_body = p->max_body;
	bool request = p->request, cut_body = p->cut_body;

	wipe_free(p->res.body); /* an answer may carry a secret (a token, an appKey) */
	free(p->res.target);
	http_parser_init(p, max_body);
	p->request = request;
	p->cut_body = cut_body;
}

void http_parser_cut_body(struct http_parser *p)
{
	p->cut_body = true;
}

/* Whether a body of n more bytes is over the cap (a cut body never is). */
static bool body_over(const struct http_parser *p, unsigned long long n)
{
	return !p->cut_body && (n > p->max_body || p->res.body_len > p->max_body - n);
}

bool http_parser_in_start_line(const struct http_parser *p)
{
	return (p->state == ST_ERROR ? p->failed_in : p->state) == ST_STATUS;
}

bool http_parser_headers_done(const struct http_parser *p)
{
	int s = p->state == ST_ERROR ? p->failed_in : p->state;
	return s != ST_STATUS && s != ST_HEADER && s != ST_ERROR;
}

const char *http_parser_failed_part(const struct http_parser *p)
{
	switch (p->state == ST_ERROR ? p->failed_in : p->state) {
	case ST_STATUS:
		return p->request ? "request line (not HTTP/1.x)" : "status line";
	case ST_HEADER:
		return "header section";
	case ST_CHUNK_SIZE:
	case ST_CHUNK_DATA:
	case ST_CHUNK_END:
	case ST_TRAILER:
		return "chunked body";
	default:
		return "body";
	}
}

bool http_parser_awaits_body(const struct http_parser *p)
{
	return p->request && p->res.body_len == 0 &&
	       (p->state == ST_BODY_LEN || p->state == ST_CHUNK_SIZE);
}

/* True once any byte of a response was fed. */
bool http_parser_started(const struct http_parser *p)
{
	return p->started;
}

/* Give the body buffer to the caller. */
char *http_parser_steal_body(struct http_parser *p, size_t *ret_len)
{
	char *b = p->res.body;

	if (ret_len)
		*ret_len = p->res.body_len;
	p->res.body = NULL;
	p->res.body_len = 0;
	p->body_cap = 0;
	return b;
}

/* The largest body allocated at its declared length before it arrives. */
#define BODY_PRESIZE_MAX 16384

/* Append n body bytes, enforcing the cap (or cutting); the body stays NUL-terminated. */
static int body_append(struct http_parser *p, const char *d, size_t n)
{
	struct http_response *r = &p->res;

	if (body_over(p, n))
		return HTTP_ETOOBIG;
	p->body_seen += n;
	if (n > p->max_body - r->body_len) {
		n = p->max_body - r->body_len;
		r->body_cut = true;
	}
	if (!r->body || r->body_len + n + 1 > p->body_cap) {
		/*
		 * A declared length is allocated at once (no copy, wipe and free per doubling),
		 * up to BODY_PRESIZE_MAX: past that, only what arrives, so that a peer cannot
		 * make us hold max_body by declaring it.
		 */
		size_t cap = p->body_cap ? p->body_cap
			     : r->content_length >= 0 && r->content_length < BODY_PRESIZE_MAX
				 ? (size_t)r->content_length + 1
				 : 256;
		while (cap < r->body_len + n + 1)
			cap *= 2;
		if (cap > p->max_body + 1)
			cap = p->max_body + 1;
		char *nb = wipe_realloc(r->body, cap); /* no copy left where it was */
		if (!nb)
			return -ENOMEM;
		r->body = nb;
		p->body_cap = cap;
	}
	memcpy(r->body + r->body_len, d, n);
	r->body_len += n;
	r->body[r->body_len] = '\0';
	return 0;
}

/* True for the characters RFC 9110 allows in a token (header names). */
static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Parse a non-negative decimal number with no sign and no overflow; -1 if invalid. */
static long long parse_decimal(const char *s)
{
	long long v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (LLONG_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

/* True if the comma-separated list value holds token (any case). */
static bool list_has(const char *value, const char *token)
{
	size_t tl = strlen(token);
	const char *s = value;

	while (*s) {
		while (*s == ' ' || *s == '\t' || *s == ',')
			s++;
		const char *e = s;
		while (*e && *e != ',')
			e++;
		const char *t = e;
		while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
			t--;
		if ((size_t)(t - s) == tl && strncasecmp(s, token, tl) == 0)
			return true;
		s = e;
	}
	return false;
}

/* Parse "HTTP/1.x NNN reason"; interim 1xx responses are noted by the caller. */
static int parse_status(struct http_parser *p, char *line)
{
	if (strncmp(line, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)line[7]) || line[8] != ' ')
		return HTTP_EMALFORMED;
	p->res.minor = line[7] - '0';
	const char *s = line + 9;
	if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1]) ||
	    !isdigit((unsigned char)s[2]) || (s[3] != ' ' && s[3] != '\0'))
		return HTTP_EMALFORMED;
	int status = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
	if (status < 100 || status > 599)
		return HTTP_EMALFORMED;
	for (const char *c = s + 3; *c; c++)
		if ((unsigned char)*c < 0x20 && *c != '\t')
			return HTTP_EMALFORMED;
	p->res.status = status;
	p->res.close = p->res.minor == 0;
	return 0;
}

/*
 * Parse "METHOD SP request-target SP HTTP/1.x" (RFC 9112 §3): a token, a target without
 * spaces or controls, the version.
 */
static int parse_request_line(struct http_parser *p, char *line)
{
	char *sp1 = strchr(line, ' ');
	if (!sp1 || sp1 == line || (size_t)(sp1 - line) >= sizeof(p->res.method))
		return HTTP_EMALFORMED;
	for (char *c = line; c < sp1; c++)
		if (!is_tchar((unsigned char)*c))
			return HTTP_EMALFORMED;
	char *target = sp1 + 1, *sp2 = strchr(target, ' ');
	if (!sp2 || sp2 == target)
		return HTTP_EMALFORMED;
	for (char *c = target; c < sp2; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f)
			return HTTP_EMALFORMED;
	const char *v = sp2 + 1;
	if (strncmp(v, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)v[7]) || v[8] != '\0')
		return HTTP_EMALFORMED;
	memcpy(p->res.method, line, (size_t)(sp1 - line));
	p->res.method[sp1 - line] = '\0';
	p->res.target = strndup(target, (size_t)(sp2 - target));
	if (!p->res.target)
		return -ENOMEM;
	p->res.minor = v[7] - '0';
	p->res.close = p->res.minor == 0;
	return 0;
}

/* Copy a header value into a fixed field, truncating safely. */
static void copy_value(char *dst, size_t size, const char *v)
{
	snprintf(dst, size, "%s", v);
}

/* Split "Name: value" and record the headers that matter; trailers are only checked. */
static int parse_header(struct http_parser *p, char *line, bool trailer)
{
	char *colon = strchr(line, ':');

	if (!colon || colon == line)
		return HTTP_EMALFORMED;
	for (char *c = line; c < colon; c++)
		if (!is_tchar((unsigned char)*c))
			return HTTP_EMALFORMED;
	*colon = '\0';
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	char *end = v + strlen(v);
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		*--end = '\0';
	for (char *c = v; *c; c++)
		if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f)
			return HTTP_EMALFORMED;
	if (trailer)
		return 0;

	struct http_response *r = &p->res;
	if (strcasecmp(line, "Content-Length") == 0) {
		long long n = parse_decimal(v);
		if (n < 0 || (r->content_length >= 0 && r->content_length != n))
			return HTTP_EMALFORMED;
		r->content_length = n;
	} else if (strcasecmp(line, "Transfer-Encoding") == 0) {
		if (strcasecmp(v, "chunked") != 0 || r->chunked)
			return HTTP_EMALFORMED;
		r->chunked = true;
	} else if (strcasecmp(line, "Connection") == 0) {
		if (list_has(v, "close"))
			r->close = true;
		else if (list_has(v, "keep-alive") && r->minor == 0)
			r->close = false;
	} else if (strcasecmp(line, "Retry-After") == 0) {
		copy_value(r->retry_after, sizeof(r->retry_after), v);
	} else if (strcasecmp(line, "Content-Type") == 0) {
		copy_value(r->content_type, sizeof(r->content_type), v);
	} else if (p->request && strcasecmp(line, "Accept") == 0) {
		/* Repeated Accept lines are one list (RFC 9110 §5.3); what does not fit is
		 * left out, whole media ranges only. */
		size_t have = strlen(r->accept), n = strlen(v);
		if (have + (have ? 2 : 0) + n < sizeof(r->accept))
			snprintf(r->accept + have, sizeof(r->accept) - have, "%s%s", have ? ", " : "",
				 v);
	} else if (p->request && strcasecmp(line, "Host") == 0) {
		r->hosts++;
	} else if (p->request && strcasecmp(line, "Expect") == 0) {
		/* 100-continue is the only expectation there is (RFC 9110 §10.1.1). */
		if (strcasecmp(v, "100-continue") == 0)
			r->expect_continue = true;
		else
			r->expect_unknown = true;
	}
	return 0;
}

/* The header section ended: choose how the body is delimited. */
static int headers_done(struct http_parser *p)
{
	struct http_response *r = &p->res;

	/* Both framings, or chunked in HTTP/1.0 (which has none): faulty (RFC 9112 §6.1, §6.3). */
	if (r->chunked && (r->content_length >= 0 || r->minor == 0))
		return HTTP_EMALFORMED;
	/* A request without Content-Length or chunked has no body (RFC 9112 §6.3). */
	if (p->request && !r->chunked && r->content_length < 0)
		r->content_length = 0;
	if (r->status == 204 || r->status == 304) {
		int e = body_append(p, "", 0);
		if (e < 0)
			return e;
		p->state = ST_DONE;
		return 1;
	}
	if (r->chunked) {
		p->state = ST_CHUNK_SIZE;
		return 0;
	}
	if (r->content_length >= 0) {
		if (!p->cut_body && (unsigned long long)r->content_length > p->max_body) {
			p->state = ST_BODY_LEN; /* the header section was fine: the body is too big */
			return HTTP_ETOOBIG;
		}
		if (r->content_length == 0) {
			int e = body_append(p, "", 0);
			if (e < 0)
				return e;
			p->state = ST_DONE;
			return 1;
		}
		p->state = ST_BODY_LEN;
		return 0;
	}
	r->close = true;
	p->state = ST_BODY_CLOSE;
	return 0;
}

/* Parse "hex-size [; extensions]". */
static int parse_chunk_size(struct http_parser *p, const char *line)
{
	unsigned long long n = 0;
	const char *s = line;
	int digits = 0;

	for (; isxdigit((unsigned char)*s); s++) {
		if (++digits > 15)
			return HTTP_EMALFORMED;
		int d =
		    isdigit((unsigned char)*s) ? *s - '0' : (tolower((unsigned char)*s) - 'a' + 10);
		n = n * 16 + (unsigned)d;
	}
	if (digits == 0)
		return HTTP_EMALFORMED;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s && *s != ';')
		return HTTP_EMALFORMED;
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return HTTP_EMALFORMED;
	if (body_over(p, n))
		return HTTP_ETOOBIG;
	p->chunk_left = n;
	p->state = n ? ST_CHUNK_DATA : ST_TRAILER;
	return 0;
}

/* Handle one complete line (CR/LF stripped) in the current state. */
static int line_done(struct http_parser *p)
{
	char *line = p->line;
	int e;

	switch (p->state) {
	case ST_STATUS:
		if (p->request && !*line && !p->res.target)
			return 0; /* an empty line before a request line is ignored (RFC 9112 §2.2) */
		if ((e = p->request ? parse_request_line(p, line) : parse_status(p, line)) < 0)
			return e;
		p->state = ST_HEADER;
		return 0;
	case ST_HEADER:
		if (!*line) {
			if (p->res.status >= 100 && p->res.status < 200) {
				/* An interim response: the real one follows. */
				if (p->res.status == 101)
					return HTTP_EMALFORMED;
				http_parser_reset(p);
				p->started = true;
				return 0;
			}
			p->section_bytes = 0;
			return headers_done(p);
		}
		if (*line == ' ' || *line == '\t')
			return HTTP_EMALFORMED; /* obsolete line folding */
		return parse_header(p, line, false);
	case ST_CHUNK_SIZE:
		return parse_chunk_size(p, line);
	case ST_CHUNK_END:
		if (*line)
			return HTTP_EMALFORMED;
		p->state = ST_CHUNK_SIZE;
		return 0;
	case ST_TRAILER:
		if (!*line) {
			if (!p->res.body && (e = body_append(p, "", 0)) < 0)
				return e;
			p->state = ST_DONE;
			return 1;
		}
		if (*line == ' ' || *line == '\t')
			return HTTP_EMALFORMED;
		return parse_header(p, line, true);
	default:
		return HTTP_EMALFORMED;
	}
}

/* Whether the line being read counts to the header (or trailer) section's size. */
static bool in_section(const struct http_parser *p)
{
	return p->state == ST_HEADER || p->state == ST_TRAILER || p->state == ST_STATUS;
}

/*
 * The bytes of a started line up to its LF (or the data's end) in one copy, when none of
 * them fails (a NUL, a line or a header section too long): what the loop below does byte
 * by byte then. False, nothing done: the loop takes them. A single byte is always the
 * loop's, so data fed a byte at a time is parsed by the loop alone: the tests compare the
 * two (test_limits_in_any_pieces(), fuzz-http).
 */
static bool bulk_copy(struct http_parser *p, const char *d, size_t len, size_t *i)
{
	const char *from = d + *i, *lf = memchr(from, '\n', len - *i);
	size_t n = lf ? (size_t)(lf - from) : len - *i;
	bool section = in_section(p);
	if (n < 2 || p->line_len + n >= sizeof(p->line) ||
	    (section && p->section_bytes + n > HTTP_MAX_HEADERS) || memchr(from, '\0', n))
		return false;
	memcpy(p->line + p->line_len, from, n);
	p->line_len += n;
	if (section)
		p->section_bytes += n;
	*i += n;
	return true;
}

/*
 * Consume bytes: body states in bulk, line states a run at a time where none of it can
 * fail (bulk_copy()), else byte by byte.
 */
int http_parser_feed(struct http_parser *p, const void *data, size_t len, size_t *ret_used)
{
	const char *d = data;
	size_t i = 0;
	int e = 0;

	if (p->state == ST_DONE || p->state == ST_ERROR)
		return p->state == ST_DONE ? 1 : HTTP_EMALFORMED;
	while (i < len) {
		switch (p->state) {
		case ST_BODY_LEN: {
			unsigned long long want =
			    (unsigned long long)p->res.content_length - p->body_seen;
			size_t n = len - i < want ? len - i : (size_t)want;
			if ((e = body_append(p, d + i, n)) < 0)
				goto fail;
			i += n;
			if (p->body_seen == (unsigned long long)p->res.content_length) {
				p->state = ST_DONE;
				e = 1;
				goto out;
			}
			continue;
		}
		case ST_BODY_CLOSE:
			if ((e = body_append(p, d + i, len - i)) < 0)
				goto fail;
			i = len;
			continue;
		case ST_CHUNK_DATA: {
			size_t n = len - i;
			if (n > p->chunk_left)
				n = (size_t)p->chunk_left;
			if ((e = body_append(p, d + i, n)) < 0)
				goto fail;
			i += n;
			p->chunk_left -= n;
			if (!p->chunk_left)
				p->state = ST_CHUNK_END;
			continue;
		}
		default:
			break;
		}

		/* Line-oriented states. */
		if (p->started && bulk_copy(p, d, len, &i))
			continue;
		char c = d[i++];
		/* Empty lines before a request line are not the start of one (RFC 9112 §2.2). */
		if (!(p->request && p->state == ST_STATUS && (c == '\r' || c == '\n') &&
		      (!p->line_len || (p->line_len == 1 && p->line[0] == '\r'))))
			p->started = true;
		if (c == '\0') {
			e = HTTP_EMALFORMED;
			goto fail;
		}
		bool section = in_section(p);
		if (section && ++p->section_bytes > HTTP_MAX_HEADERS) {
			e = HTTP_ETOOBIG;
			goto fail;
		}
		if (c != '\n') {
			if (p->line_len + 1 >= sizeof(p->line)) {
				e = HTTP_ETOOBIG;
				goto fail;
			}
			p->line[p->line_len++] = c;
			continue;
		}
		if (p->line_len && p->line[p->line_len - 1] == '\r')
			p->line_len--;
		p->line[p->line_len] = '\0';
		if (memchr(p->line, '\r', p->line_len)) {
			e = HTTP_EMALFORMED;
			goto fail;
		}
		p->line_len = 0;
		if ((e = line_done(p)) < 0)
			goto fail;
		if (e == 1)
			goto out;
	}
	e = 0;
out:
	if (ret_used)
		*ret_used = i;
	return e;
fail:
	p->failed_in = p->state;
	p->state = ST_ERROR;
	if (ret_used)
		*ret_used = i;
	return e;
}

/* The peer closed: finish a close-delimited body or report truncation. */
int http_parser_eof(struct http_parser *p)
{
	if (p->state == ST_DONE)
		return 1;
	if (p->state == ST_BODY_CLOSE) {
		if (!p->res.body) {
			int e = body_append(p, "", 0);
			if (e < 0)
				return e;
		}
		p->state = ST_DONE;
		return 1;
	}
	return HTTP_ETRUNCATED;
}

/* Describe a parser error or an errno. */
const char *http_strerror(int err)
{
	switch (err) {
	case HTTP_EMALFORMED:
		return "malformed HTTP response";
	case HTTP_ETOOBIG:
		return "HTTP response too large";
	case HTTP_ETRUNCATED:
		return "HTTP response truncated";
	default:
		return strerror(err < 0 ? -err : err);
	}
}

/* Month number 0..11 from its English abbreviation; -1 if unknown. */
static int month_index(const char *m)
{
	static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

	for (int i = 0; i < 12; i++)
		if (strncmp(names + 3 * i, m, 3) == 0)
			return i;
	return -1;
}

/* Convert a Retry-After value to seconds from now. */
int http_retry_after(const char *value, time_t now)
{
	if (!value || !*value)
		return -1;
	long long secs = parse_decimal(value);
	if (secs < 0) {
		/* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
		char wd[4], mon[4], zone[4];
		int day, year, hh, mm, ss, used = 0;
		if (strlen(value) != 29 ||
		    sscanf(value, "%3[A-Za-z], %2d %3[A-Za-z] %4d %2d:%2d:%2d %3s%n", wd, &day, mon,
			   &year, &hh, &mm, &ss, zone, &used) != 8 ||
		    used != 29 || strcmp(zone, "GMT") != 0)
			return -1;
		int m = month_index(mon);
		if (m < 0 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60 || year < 1970)
			return -1;
		long long t =
		    clock_days_from_civil(year, m + 1, day) * 86400LL + hh * 3600 + mm * 60 + ss;
		secs = t - (long long)now;
		if (secs < 0)
			secs = 0;
	}
	return secs > 86400 ? 86400 : (int)secs;
}

/* Split an http or https URL into scheme, host, port and path. */
int http_url_parse(const char *url, struct http_url *ret)
{
	struct http_url u;
	const char *s;

	memset(&u, 0, sizeof(u));
	if (!url)
		return -EINVAL;
	if (strncasecmp(url, "https://", 8) == 0) {
		u.tls = true;
		u.port = 443;
		s = url + 8;
	} else if (strncasecmp(url, "http://", 7) == 0) {
		u.port = 80;
		s = url + 7;
	} else {
		return -EINVAL;
	}
	const char *host_end;
	const char *h = s;
	if (*s == '[') {
		h = s + 1;
		host_end = strchr(h, ']');
		if (!host_end)
			return -EINVAL;
		s = host_end + 1;
	} else {
		host_end = s;
		while (*host_end && *host_end != ':' && *host_end != '/')
			host_end++;
		s = host_end;
	}
	size_t hl = (size_t)(host_end - h);
	if (hl == 0 || hl >= sizeof(u.host))
		return -EINVAL;
	memcpy(u.host, h, hl);
	for (size_t i = 0; i < hl; i++) {
		unsigned char c = (unsigned char)u.host[i];
		if (!isalnum(c) && c != '.' && c != '-' && c != ':' && c != '_')
			return -EINVAL;
	}
	u.default_port = true;
	if (*s == ':') {
		s++;
		long v = 0;
		int digits = 0;
		while (isdigit((unsigned char)*s) && digits < 6) {
			v = v * 10 + (*s++ - '0');
			digits++;
		}
		if (digits == 0 || v < 1 || v > 65535)
			return -EINVAL;
		u.port = (uint16_t)v;
		u.default_port = false;
	}
	if (*s && *s != '/')
		return -EINVAL;
	if (strlen(s) >= sizeof(u.path))
		return -EINVAL;
	/* A request-target has no #fragment (RFC 9112 3.2): it would go on the wire. */
	for (const char *c = s; *c; c++)
		if ((unsigned char)*c <= 0x20 || *c == 0x7f || *c == '#')
			return -EINVAL;
	strcpy(u.path, s);
	*ret = u;
	return 0;
}

/* Percent-encode everything but RFC 3986 unreserved characters. */
int http_urlencode(const char *s, char *out, size_t outlen)
{
	static const char hexd[] = "0123456789ABCDEF";
	size_t o = 0;

	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			if (o + 1 >= outlen)
				return -ENOBUFS;
			out[o++] = (char)c;
		} else {
			if (o + 3 >= outlen)
				return -ENOBUFS;
			out[o++] = '%';
			out[o++] = hexd[c >> 4];
			out[o++] = hexd[c & 15];
		}
	}
	if (o >= outlen)
		return -ENOBUFS;
	out[o] = '\0';
	return 0;
}
