/* Unit tests for the HTTP request builder, response and request parser and URL helpers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "tap.h"

/* Feed the whole text in one call and return the feed result, then the eof result if 0. */
static int parse_all(const char *text, size_t len, size_t cap, struct http_parser *p, bool eof)
{
	size_t used = 0;

	http_parser_init(p, cap);
	int r = http_parser_feed(p, text, len, &used);
	if (r == 0 && eof)
		r = http_parser_eof(p);
	return r;
}

/* Feed text split into two parts at every position, and byte by byte; all must agree. */
static void check_splits(const char *text, int want, const char *want_body, int want_status)
{
	size_t len = strlen(text);

	for (size_t cut = 0; cut <= len; cut++) {
		struct http_parser p;
		size_t used = 0;
		http_parser_init(&p, 4096);
		int r = http_parser_feed(&p, text, cut, &used);
		if (r == 0)
			r = http_parser_feed(&p, text + cut, len - cut, &used);
		if (r == 0)
			r = http_parser_eof(&p);
		CHECK_INT(r, want);
		if (r == 1 && want_body) {
			CHECK_STR(p.res.body, want_body);
			CHECK_INT(p.res.status, want_status);
		}
		http_parser_reset(&p);
	}
	struct http_parser p;
	http_parser_init(&p, 4096);
	int r = 0;
	for (size_t i = 0; i < len && r == 0; i++)
		r = http_parser_feed(&p, text + i, 1, NULL);
	if (r == 0)
		r = http_parser_eof(&p);
	CHECK_INT(r, want);
	if (r == 1 && want_body)
		CHECK_STR(p.res.body, want_body);
	free(p.res.body);
}

/* Requests are built byte for byte as expected, and header injection is refused. */
static void test_request(void)
{
	char *buf = NULL;
	size_t len = 0;
	struct http_request r = {
	    .method = "POST",
	    .host = "tpa.example:8443",
	    .target = "/maker/latest/api/factoryDevices",
	    .content_type = "application/json",
	    .bearer = "tok123",
	    .body = "{}",
	    .body_len = 2,
	};
	CHECK_INT(http_request_build(&r, &buf, &len), 0);
	CHECK_STR(buf, "POST /maker/latest/api/factoryDevices HTTP/1.1\r\n"
		       "Host: tpa.example:8443\r\n"
		       "User-Agent: tpad\r\n"
		       "Accept: application/json\r\n"
		       "Connection: keep-alive\r\n"
		       "Authorization: Bearer tok123\r\n"
		       "Content-Type: application/json\r\n"
		       "Content-Length: 2\r\n"
		       "\r\n"
		       "{}");
	CHECK_INT(len, strlen(buf));
	free(buf);

	struct http_request g = {.method = "GET", .host = "h", .target = "/q?deviceEUI=01"};
	buf = NULL;
	CHECK_INT(http_request_build(&g, &buf, &len), 0);
	CHECK_STR(buf, "GET /q?deviceEUI=01 HTTP/1.1\r\nHost: h\r\nUser-Agent: tpad\r\n"
		       "Accept: application/json\r\nConnection: keep-alive\r\n\r\n");
	free(buf);

	buf = NULL;
	struct http_request bad = g;
	bad.bearer = "x\r\nX-Evil: 1";
	CHECK_INT(http_request_build(&bad, &buf, &len), -EINVAL);
	CHECK(buf == NULL);
	bad = g;
	bad.target = "/a\nb";
	CHECK_INT(http_request_build(&bad, &buf, &len), -EINVAL);
	bad = g;
	bad.target = "relative";
	CHECK_INT(http_request_build(&bad, &buf, &len), -EINVAL);
	bad = g;
	bad.host = "";
	CHECK_INT(http_request_build(&bad, &buf, &len), -EINVAL);
}

/* Well-formed responses parse the same at every split point. */
static void test_splits(void)
{
	check_splits("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
		     "Content-Length: 13\r\n\r\n{\"ref\":\"abc\"}",
		     1, "{\"ref\":\"abc\"}", 201);
	check_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
		     "4;name=val;x=\"q\"\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n"
		     "0;last\r\nX-Trailer: yes\r\nAnother: 1\r\n\r\n",
		     1, "Wikipedia in\r\n\r\nchunks.", 200);
	check_splits("HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end", 1, "until the end", 200);
	check_splits("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n"
		     "\r\n{}",
		     1, "{}", 409);
	check_splits("HTTP/1.1 204 No Content\r\n\r\n", 1, "", 204);
	check_splits("HTTP/1.1 200 OK\nContent-Length: 3\n\nabc", 1, "abc", 200);
	/* Truncated at every split: the eof comes too early. */
	check_splits("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", HTTP_ETRUNCATED, NULL, 0);
	check_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
		     HTTP_ETRUNCATED, NULL, 0);
	check_splits("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", HTTP_ETRUNCATED,
		     NULL, 0);
	check_splits("HTTP/1.1 200 OK\r\nContent-Le", HTTP_ETRUNCATED, NULL, 0);
	check_splits("", HTTP_ETRUNCATED, NULL, 0);
}

/* Headers that matter are recorded; connection persistence follows the version. */
static void test_headers(void)
{
	struct http_parser p;
	const char *t = "HTTP/1.1 429 Too Many Requests\r\nRetry-After:  30 \r\n"
			"connection: Keep-Alive, CLOSE\r\ncontent-length: 0\r\n\r\n";
	CHECK_INT(parse_all(t, strlen(t), 100, &p, false), 1);
	CHECK_INT(p.res.status, 429);
	CHECK_STR(p.res.retry_after, "30");
	CHECK(p.res.close);
	CHECK_INT(p.res.content_length, 0);
	CHECK_STR(p.res.body, "");
	http_parser_reset(&p);

	t = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok";
	CHECK_INT(parse_all(t, strlen(t), 100, &p, false), 1);
	CHECK(!p.res.close);
	CHECK_INT(p.res.minor, 0);
	http_parser_reset(&p);

	t = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	CHECK_INT(parse_all(t, strlen(t), 100, &p, false), 1);
	CHECK(!p.res.close);
	size_t blen = 0;
	char *b = http_parser_steal_body(&p, &blen);
	CHECK_STR(b, "ok");
	CHECK_INT(blen, 2);
	CHECK(p.res.body == NULL);
	free(b);
	http_parser_reset(&p);

	/* Extra bytes after a complete response are left to the caller. */
	t = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA";
	size_t used = 0;
	http_parser_init(&p, 100);
	CHECK_INT(http_parser_feed(&p, t, strlen(t), &used), 1);
	CHECK_INT(used, strlen(t) - 5);
	CHECK_INT(http_parser_feed(&p, "x", 1, &used), 1);
	http_parser_reset(&p);

	/* Same Content-Length twice is fine. */
	t = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nk";
	CHECK_INT(parse_all(t, strlen(t), 100, &p, false), 1);
	http_parser_reset(&p);
	CHECK(!http_parser_started(&p));
	http_parser_feed(&p, "H", 1, NULL);
	CHECK(http_parser_started(&p));
	http_parser_reset(&p);
}

/* Every malformed or oversized input gets its own error. */
static void test_must_fail(void)
{
	static const struct {
		const char *text;
		int want;
	} cases[] = {
	    {"garbage\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/2 200 OK\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 20 OK\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 2000 OK\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 099 Low\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 600 High\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 101 Switching\r\n\r\n", HTTP_EMALFORMED},
	    {"http/1.1 200 OK\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nA: b\r\n folded\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
	     HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000\r\n",
	     HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nA: b\x01\r\n\r\n", HTTP_EMALFORMED},
	    {"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n", HTTP_ETOOBIG},
	    {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", HTTP_ETOOBIG},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_parser p;
		int r = parse_all(cases[i].text, strlen(cases[i].text), 100, &p, false);
		if (r != cases[i].want)
			fprintf(stderr, "case %zu: %s\n", i, cases[i].text);
		CHECK_INT(r, cases[i].want);
		/* The parser stays in its error state. */
		CHECK(http_parser_feed(&p, "x", 1, NULL) < 0);
		http_parser_reset(&p);
	}

	/* A NUL byte in the header section. */
	struct http_parser p;
	const char nul[] = "HTTP/1.1 200 OK\r\nA: \0\r\n\r\n";
	CHECK_INT(parse_all(nul, sizeof(nul) - 1, 100, &p, false), HTTP_EMALFORMED);
	http_parser_reset(&p);

	/* Chunks that add up over the cap. */
	const char *t = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			"32\r\n01234567890123456789012345678901234567890123456789\r\n"
			"33\r\n";
	CHECK_INT(parse_all(t, strlen(t), 100, &p, false), HTTP_ETOOBIG);
	http_parser_reset(&p);

	/* A close-delimited body over the cap. */
	char big[300];
	snprintf(big, sizeof(big), "HTTP/1.0 200 OK\r\n\r\n%0200d", 7);
	CHECK_INT(parse_all(big, strlen(big), 100, &p, false), HTTP_ETOOBIG);
	http_parser_reset(&p);

	/* Exactly at the cap is fine. */
	snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n%0100d", 7);
	CHECK_INT(parse_all(big, strlen(big), 100, &p, false), 1);
	CHECK_INT(p.res.body_len, 100);
	http_parser_reset(&p);

	/* A header line longer than the line limit. */
	size_t n = HTTP_MAX_LINE + 64;
	char *longline = malloc(n + 64);
	strcpy(longline, "HTTP/1.1 200 OK\r\nX: ");
	size_t l = strlen(longline);
	memset(longline + l, 'a', n);
	strcpy(longline + l + n, "\r\n\r\n");
	CHECK_INT(parse_all(longline, strlen(longline), 100, &p, false), HTTP_ETOOBIG);
	http_parser_reset(&p);
	free(longline);

	/* Many short headers over the section limit. */
	size_t hn = HTTP_MAX_HEADERS + 100;
	char *many = malloc(hn + 64);
	strcpy(many, "HTTP/1.1 200 OK\r\n");
	l = strlen(many);
	while (l + 7 < hn) {
		memcpy(many + l, "A: b\r\n", 6);
		l += 6;
	}
	strcpy(many + l, "\r\n");
	CHECK_INT(parse_all(many, strlen(many), 100, &p, false), HTTP_ETOOBIG);
	http_parser_reset(&p);
	free(many);

	CHECK_STR(http_strerror(HTTP_ETRUNCATED), "HTTP response truncated");
	CHECK_STR(http_strerror(HTTP_ETOOBIG), "HTTP response too large");
	CHECK_STR(http_strerror(HTTP_EMALFORMED), "malformed HTTP response");
}

/* A cut body keeps its first max_body bytes, reads the rest and ends where the message
 * does (the next response on the connection is parsed), in every framing. */
static void test_cut_body(void)
{
	static const char *const texts[] = {
	    "HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz",
	    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "10\r\nabcdefghijklmnop\r\na\r\nqrstuvwxyz\r\n0\r\n\r\n",
	};
	for (size_t i = 0; i < 2; i++) {
		char two[256];
		snprintf(two, sizeof(two), "%sHTTP/1.1 204 No Content\r\n\r\n", texts[i]);
		for (size_t step = 1; step <= strlen(two); step += strlen(two) - 1) {
			struct http_parser p;
			http_parser_init(&p, 4);
			http_parser_cut_body(&p);
			size_t off = 0, used = 0;
			int r = 0;
			while (r == 0 && off < strlen(two)) {
				size_t n = strlen(two) - off < step ? strlen(two) - off : step;
				r = http_parser_feed(&p, two + off, n, &used);
				off += used;
			}
			CHECK_INT(r, 1);
			CHECK_STR(p.res.body, "abcd");
			CHECK(p.res.body_cut);
			http_parser_reset(&p);
			CHECK_INT(http_parser_feed(&p, two + off, strlen(two) - off, &used), 1);
			CHECK_INT(p.res.status, 204);
			CHECK(!p.res.body_cut);
			http_parser_reset(&p);
		}
	}
	/* Close-delimited, and one of any declared size. */
	struct http_parser p;
	http_parser_init(&p, 4);
	http_parser_cut_body(&p);
	const char *close = "HTTP/1.0 200 OK\r\n\r\n0123456789";
	CHECK_INT(http_parser_feed(&p, close, strlen(close), NULL), 0);
	CHECK_INT(http_parser_eof(&p), 1);
	CHECK_STR(p.res.body, "0123");
	http_parser_reset(&p);
	const char *huge = "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nxyzzy";
	CHECK_INT(http_parser_feed(&p, huge, strlen(huge), NULL), 0);
	CHECK_INT(p.res.body_len, 4);
	http_parser_reset(&p);
}

/* Retry-After takes seconds or an HTTP date. */
static void test_retry_after(void)
{
	CHECK_INT(http_retry_after("120", 0), 120);
	CHECK_INT(http_retry_after("0", 0), 0);
	CHECK_INT(http_retry_after("999999", 0), 86400);
	CHECK_INT(http_retry_after("", 0), -1);
	CHECK_INT(http_retry_after(NULL, 0), -1);
	CHECK_INT(http_retry_after("-5", 0), -1);
	CHECK_INT(http_retry_after("soon", 0), -1);
	/* Sun, 06 Nov 1994 08:49:37 GMT is 784111777. */
	CHECK_INT(http_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 - 42), 42);
	CHECK_INT(http_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784111777 + 42), 0);
	CHECK_INT(http_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", 0), -1);
	CHECK_INT(http_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", 0), -1);
}

/* URLs split into their parts; anything odd is refused. */
static void test_url(void)
{
	struct http_url u;

	CHECK_INT(http_url_parse("https://activation.thingpark.com", &u), 0);
	CHECK(u.tls);
	CHECK_STR(u.host, "activation.thingpark.com");
	CHECK_INT(u.port, 443);
	CHECK(u.default_port);
	CHECK_STR(u.path, "");
	CHECK_INT(http_url_parse("http://127.0.0.1:8080/oauth/token", &u), 0);
	CHECK(!u.tls);
	CHECK_STR(u.host, "127.0.0.1");
	CHECK_INT(u.port, 8080);
	CHECK(!u.default_port);
	CHECK_STR(u.path, "/oauth/token");
	CHECK_INT(http_url_parse("https://[::1]:8443/", &u), 0);
	CHECK_STR(u.host, "::1");
	CHECK_INT(u.port, 8443);
	CHECK_STR(u.path, "/");

	u.port = 7;
	CHECK_INT(http_url_parse("ftp://x", &u), -EINVAL);
	CHECK_INT(http_url_parse("http://h/hook#frag", &u), -EINVAL);
	CHECK_INT(u.port, 7);
	CHECK_INT(http_url_parse("https://", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://h:0", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://h:65536", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://h:", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://h:12x", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://h o", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://h/a b", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://[::1", &u), -EINVAL);
	CHECK_INT(http_url_parse("https://user@h", &u), -EINVAL);
	CHECK_INT(http_url_parse(NULL, &u), -EINVAL);
}

/* Percent-encoding keeps unreserved characters only. */
static void test_urlencode(void)
{
	char out[64];

	CHECK_INT(http_urlencode("a-b_c.d~E9", out, sizeof(out)), 0);
	CHECK_STR(out, "a-b_c.d~E9");
	CHECK_INT(http_urlencode("a b&c=d/é", out, sizeof(out)), 0);
	CHECK_STR(out, "a%20b%26c%3Dd%2F%C3%A9");
	CHECK_INT(http_urlencode("abc", out, 3), -ENOBUFS);
	CHECK_INT(http_urlencode("abc", out, 4), 0);
	CHECK_INT(http_urlencode("&", out, 3), -ENOBUFS);
}

/* Parse one request fed in two parts at every cut, and byte by byte: all must agree. */
static void check_request(const char *text, int want, const char *method, const char *target,
			  const char *body, bool close)
{
	size_t len = strlen(text);
	for (size_t cut = 0; cut <= len + 1; cut++) {
		struct http_parser p;
		size_t used = 0, used2 = 0;
		http_parser_init_request(&p, 64);
		int r;
		if (cut <= len) {
			r = http_parser_feed(&p, text, cut, &used);
			if (r == 0)
				r = http_parser_feed(&p, text + cut, len - cut, &used2);
		} else {
			r = 0;
			for (size_t i = 0; i < len && r == 0; i++)
				r = http_parser_feed(&p, text + i, 1, &used2);
		}
		CHECK_INT(r, want);
		if (r == 1) {
			CHECK_STR(p.res.method, method);
			CHECK_STR(p.res.target, target);
			CHECK_STR(p.res.body, body);
			CHECK(p.res.close == close);
			CHECK_INT(p.res.status, 0);
		}
		http_parser_reset(&p);
		http_parser_reset(&p); /* twice: nothing is freed twice */
	}
}

/* The request parser: request line, no body without framing, keep-alive, pipelining. */
static void test_request_parser(void)
{
	check_request("POST /?a=1&Token=x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}", 1,
		      "POST", "/?a=1&Token=x", "{}", false);
	check_request("GET / HTTP/1.1\r\nHost: h\r\n\r\n", 1, "GET", "/", "", false);
	check_request("GET / HTTP/1.0\r\n\r\n", 1, "GET", "/", "", true);
	check_request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1, "GET", "/", "",
		      false);
	check_request("POST /x HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", 1,
		      "POST", "/x", "", true);
	check_request("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		      1, "POST", "/", "{}", false);
	check_request("\r\nGET / HTTP/1.1\r\n\r\n", 1, "GET", "/", "", false); /* a stray CRLF */
	/* Must fail. */
	check_request("GET /\r\n\r\n", HTTP_EMALFORMED, NULL, NULL, NULL, false);
	check_request("GET  / HTTP/1.1\r\n\r\n", HTTP_EMALFORMED, NULL, NULL, NULL, false);
	check_request("GET / HTTP/2.0\r\n\r\n", HTTP_EMALFORMED, NULL, NULL, NULL, false);
	check_request("G(T / HTTP/1.1\r\n\r\n", HTTP_EMALFORMED, NULL, NULL, NULL, false);
	check_request("GET /a\x01 HTTP/1.1\r\n\r\n", HTTP_EMALFORMED, NULL, NULL, NULL, false);
	check_request("VERYLONGMETHODNAME / HTTP/1.1\r\n\r\n", HTTP_EMALFORMED, NULL, NULL, NULL,
		      false);
	check_request("POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 1, "POST", "/", "", false);
	check_request("POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", HTTP_ETOOBIG, NULL, NULL,
		      NULL, false);
	check_request("POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
		      HTTP_EMALFORMED, NULL, NULL, NULL, false);
	/* HTTP/1.0 has no chunked framing (RFC 9112 §6.1): faulty, not a body. */
	check_request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		      HTTP_EMALFORMED, NULL, NULL, NULL, false);

	/* Expect: 100-continue is noted; the parser says when the body is awaited. */
	struct http_parser p;
	http_parser_init_request(&p, 64);
	CHECK_INT(http_parser_feed(&p, "POST / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 36, NULL), 1);
	CHECK(p.res.expect_unknown && !p.res.expect_continue);
	http_parser_reset(&p);
	/* A declared body is allocated once, at its length, however it arrives. */
	{
		struct http_parser q;
		char req[800], body[601];
		memset(body, 'b', 600);
		body[600] = '\0';
		int n = snprintf(req, sizeof(req),
				 "POST / HTTP/1.1\r\nContent-Length: 600\r\n\r\n%s", body);
		http_parser_init_request(&q, 4096);
		CHECK_INT(http_parser_feed(&q, req, (size_t)n - 500, NULL), 0);
		CHECK_INT(q.body_cap, 601);
		CHECK_INT(http_parser_feed(&q, req + n - 500, 500, NULL), 1);
		CHECK_INT(q.body_cap, 601);
		CHECK_INT(q.res.body_len, 600);
		CHECK_STR(q.res.body, body);
		http_parser_reset(&q);
		/* A large one declared is not: only what arrived is held. */
		http_parser_init_request(&q, 1 << 20);
		const char big[] = "POST / HTTP/1.1\r\nContent-Length: 1000000\r\n\r\nabc";
		CHECK_INT(http_parser_feed(&q, big, sizeof(big) - 1, NULL), 0);
		CHECK(q.body_cap <= 256);
		http_parser_reset(&q);
	}
	/* Blank lines before a request do not start one; a body too big is after the header. */
	CHECK_INT(http_parser_feed(&p, "\r\n\r\n", 4, NULL), 0);
	CHECK(!http_parser_started(&p));
	CHECK_INT(http_parser_feed(&p, "POST / HTTP/1.1\r\nContent-Length: 65\r\n\r\n", 42, NULL),
		  HTTP_ETOOBIG);
	CHECK(http_parser_started(&p) && http_parser_headers_done(&p));
	http_parser_reset(&p);
	char big[HTTP_MAX_HEADERS + 64];
	memset(big, 'a', sizeof(big));
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	CHECK_INT(http_parser_feed(&p, big, sizeof(big), NULL), HTTP_ETOOBIG);
	CHECK(!http_parser_headers_done(&p));
	http_parser_reset(&p);
	http_parser_init_request(&p, 64);
	const char *head = "POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\n";
	CHECK(!http_parser_started(&p));
	CHECK_INT(http_parser_feed(&p, head, 10, NULL), 0);
	CHECK(http_parser_started(&p) && !http_parser_headers_done(&p));
	CHECK_INT(http_parser_feed(&p, head + 10, strlen(head) - 10, NULL), 0);
	CHECK(p.res.expect_continue && http_parser_awaits_body(&p) && http_parser_headers_done(&p));
	CHECK_INT(http_parser_feed(&p, "{", 1, NULL), 0);
	CHECK(!http_parser_awaits_body(&p));
	CHECK_INT(http_parser_feed(&p, "}", 1, NULL), 1);
	http_parser_reset(&p);

	/* Two pipelined requests: the first one's bytes are counted, the rest is left. */
	const char *two = "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
	size_t used = 0;
	CHECK_INT(http_parser_feed(&p, two, strlen(two), &used), 1);
	CHECK_STR(p.res.target, "/1");
	http_parser_reset(&p);
	CHECK_INT(http_parser_feed(&p, two + used, strlen(two) - used, &used), 1);
	CHECK_STR(p.res.target, "/2");
	http_parser_reset(&p);

	/* Accept lines are one list; what does not fit is left out whole; the part of a
	 * malformed request is named (400's reason). */
	const char *acc = "GET /m HTTP/1.1\r\nAccept: text/plain\r\nAccept: */*;q=0.1\r\n\r\n";
	CHECK_INT(http_parser_feed(&p, acc, strlen(acc), NULL), 1);
	CHECK_STR(p.res.accept, "text/plain, */*;q=0.1");
	http_parser_reset(&p);
	char many[1024];
	int n = snprintf(many, sizeof(many), "GET /m HTTP/1.1\r\nAccept: a/%0200d\r\n", 0);
	n += snprintf(many + n, sizeof(many) - (size_t)n, "Accept: b/%0100d\r\n\r\n", 0);
	CHECK_INT(http_parser_feed(&p, many, (size_t)n, NULL), 1);
	CHECK(strncmp(p.res.accept, "a/", 2) == 0 && !strstr(p.res.accept, "b/"));
	http_parser_reset(&p);
	/* Host fields are counted (the server answers 400 to none in HTTP/1.1, or two). */
	CHECK_INT(p.res.hosts, 0);
	const char *hosts = "GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n";
	CHECK_INT(http_parser_feed(&p, hosts, strlen(hosts), NULL), 1);
	CHECK_INT(p.res.hosts, 2);
	http_parser_reset(&p);
	const char *smuggle = "POST / HTTP/1.1\r\nContent-Length: 2\r\n"
			      "Transfer-Encoding: chunked\r\n\r\n";
	CHECK_INT(http_parser_feed(&p, smuggle, strlen(smuggle), NULL), HTTP_EMALFORMED);
	CHECK_STR(http_parser_failed_part(&p), "header section");
	http_parser_reset(&p);
	CHECK_INT(http_parser_feed(&p, "\x16\x03 hi\r\n", 8, NULL), HTTP_EMALFORMED);
	CHECK_STR(http_parser_failed_part(&p), "request line (not HTTP/1.x)");
	http_parser_reset(&p);
	/* A response parser still refuses a request line. */
	struct http_parser r;
	http_parser_init(&r, 64);
	CHECK_INT(http_parser_feed(&r, "GET / HTTP/1.1\r\n", 16, NULL), HTTP_EMALFORMED);
	http_parser_reset(&r);
}

/* Feed a request whole (step 0) or step bytes at a time: the outcome. */
static int feed_request(const char *text, size_t len, size_t step)
{
	struct http_parser p;
	http_parser_init_request(&p, 64);
	int r = 0;
	for (size_t off = 0; off < len && r == 0; off += step ? step : len)
		r = http_parser_feed(&p, text + off, step && len - off > step ? step : len - off,
				     NULL);
	http_parser_reset(&p);
	return r;
}

/*
 * Lines and header sections around their limits, a NUL inside, in one piece and a byte
 * at a time: the same outcome (a line is copied a run at a time only where nothing in the
 * run can fail).
 */
static void test_limits_in_any_pieces(void)
{
	static char text[HTTP_MAX_HEADERS + 64];
	bool fits = false, too_long = false;
	for (size_t k = HTTP_MAX_LINE - 24; k < HTTP_MAX_LINE; k++) {
		int n =
		    snprintf(text, sizeof(text), "GET / HTTP/1.1\r\nX: %0*d\r\n\r\n", (int)k, 0);
		int whole = feed_request(text, (size_t)n, 0);
		CHECK_INT(feed_request(text, (size_t)n, 1), whole);
		CHECK_INT(feed_request(text, (size_t)n, 7), whole);
		fits |= whole == 1;
		too_long |= whole == HTTP_ETOOBIG;
	}
	CHECK(fits && too_long);
	fits = too_long = false;
	for (size_t k = HTTP_MAX_HEADERS - 8; k < HTTP_MAX_HEADERS + 4; k++) {
		/* Header lines of 1,000 bytes, the last one shorter, k bytes in the section. */
		size_t len = (size_t)snprintf(text, sizeof(text), "GET / HTTP/1.1\r\n");
		while (len < k) {
			size_t line = k - len < 1000 ? k - len : 1000;
			if (line < 6)
				line = 6;
			len += (size_t)snprintf(text + len, sizeof(text) - len, "X: %0*d\r\n",
						(int)(line - 5), 0);
		}
		len += (size_t)snprintf(text + len, sizeof(text) - len, "\r\n");
		int whole = feed_request(text, len, 0);
		CHECK_INT(feed_request(text, len, 1), whole);
		CHECK_INT(feed_request(text, len, 333), whole);
		fits |= whole == 1;
		too_long |= whole == HTTP_ETOOBIG;
	}
	CHECK(fits && too_long);
	const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
	CHECK_INT(feed_request(nul, sizeof(nul) - 1, 0), HTTP_EMALFORMED);
	CHECK_INT(feed_request(nul, sizeof(nul) - 1, 1), HTTP_EMALFORMED);
}

int main(void)
{
	test_request();
	test_request_parser();
	test_splits();
	test_headers();
	test_must_fail();
	test_cut_body();
	test_retry_after();
	test_url();
	test_urlencode();
	test_limits_in_any_pieces();
	return tap_done();
}
