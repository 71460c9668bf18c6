/* fuzz-http: the HTTP response and request parsers fed in arbitrary pieces, plus the URL and
 * Retry-After parsers. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* d as one response (or request) fed in pieces of step bytes into p, reset by the caller:
 * the outcome. */
static int feed_one(struct http_parser *p, bool request, const uint8_t *d, size_t len, size_t step,
		    size_t cap)
{
	if (request)
		http_parser_init_request(p, cap);
	else
		http_parser_init(p, cap);
	int r = 0;
	for (size_t off = 0; off < len && r == 0; off += step)
		r = http_parser_feed(p, d + off, len - off < step ? len - off : step, NULL);
	return r == 0 && !request ? http_parser_eof(p) : r;
}

static bool same_text(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The same message whole and a byte at a time: the same outcome, field by field. */
static void same_in_any_pieces(bool request, const uint8_t *d, size_t len, size_t cap)
{
	struct http_parser a, b;
	int ra = feed_one(&a, request, d, len, len ? len : 1, cap);
	int rb = feed_one(&b, request, d, len, 1, cap);
	const struct http_response *x = &a.res, *y = &b.res;
	if (ra != rb || (ra < 0 && a.failed_in != b.failed_in))
		abort();
	if (ra == 1 &&
	    (x->status != y->status || x->minor != y->minor || x->chunked != y->chunked ||
	     x->close != y->close || x->content_length != y->content_length ||
	     strcmp(x->content_type, y->content_type) != 0 ||
	     strcmp(x->retry_after, y->retry_after) != 0 || strcmp(x->method, y->method) != 0 ||
	     !same_text(x->target, y->target) || strcmp(x->accept, y->accept) != 0 ||
	     x->hosts != y->hosts || x->expect_continue != y->expect_continue ||
	     x->expect_unknown != y->expect_unknown || x->body_len != y->body_len ||
	     (x->body_len && memcmp(x->body, y->body, x->body_len) != 0)))
		abort();
	http_parser_reset(&a);
	http_parser_reset(&b);
}

/* Parse data as a response in pieces whose size comes from the first byte; check invariants. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] + 1;
	const uint8_t *d = data + 1;
	size_t len = size - 1;
	struct http_parser p;
	size_t cap = 1024;

	http_parser_init(&p, cap);
	int r = 0;
	size_t off = 0;
	while (off < len && r == 0) {
		size_t n = len - off < step ? len - off : step;
		size_t used = 0;
		r = http_parser_feed(&p, d + off, n, &used);
		if (used > n)
			abort();
		off += n;
	}
	if (r == 0)
		r = http_parser_eof(&p);
	if (r == 1) {
		if (!p.res.body || p.res.body_len > cap || p.res.body[p.res.body_len] != '\0')
			abort();
		if (p.res.status < 200 || p.res.status > 599)
			abort();
	} else if (r != HTTP_EMALFORMED && r != HTTP_ETOOBIG && r != HTTP_ETRUNCATED) {
		abort();
	}
	http_parser_reset(&p);
	same_in_any_pieces(false, d, len, cap);
	same_in_any_pieces(true, d, len, cap);

	/* The same bytes as requests, one after the other as a server reads them. */
	http_parser_init_request(&p, cap);
	off = 0;
	r = 0;
	while (off < len) {
		size_t n = len - off < step ? len - off : step;
		size_t used = 0;
		r = http_parser_feed(&p, d + off, n, &used);
		if (used > n)
			abort();
		off += used;
		if (r < 0)
			break;
		if (r == 1) {
			if (!p.res.body || p.res.body_len > cap ||
			    p.res.body[p.res.body_len] != '\0' || !p.res.target ||
			    !p.res.target[0] || !p.res.method[0] || p.res.status != 0)
				abort();
			http_parser_reset(&p);
		} else if (used < n) {
			abort(); /* more input wanted, yet some was left unread */
		}
	}
	if (r < 0 && r != HTTP_EMALFORMED && r != HTTP_ETOOBIG && r != -ENOMEM)
		abort();
	http_parser_reset(&p);

	char *s = malloc(len + 1);
	if (!s)
		return 0;
	memcpy(s, d, len);
	s[len] = '\0';
	struct http_url u;
	if (http_url_parse(s, &u) == 0 && (u.port == 0 || !u.host[0]))
		abort();
	int ra = http_retry_after(s, 784111777);
	if (ra < -1 || ra > 86400)
		abort();
	char enc[64];
	http_urlencode(s, enc, sizeof(enc));
	free(s);
	return 0;
}
