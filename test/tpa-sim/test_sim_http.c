/* Unit tests for tpa-sim's HTTP request parser and response formatting. */
#include <errno.h>
#include <string.h>

#include <event2/buffer.h>

#include "sim_http.h"
#include "tap.h"

/* Parse the NUL-terminated text s; returns the parser's result. */
static int parse(const char *s, struct http_request *r, size_t *used)
{
	return http_parse_request(s, strlen(s), 1024, r, used);
}

/* A request that must be rejected with err, and every prefix of it must not be accepted. */
static void must_fail(const char *s, int err)
{
	struct http_request r = {0};
	size_t used = 0;
	int got = parse(s, &r, &used);
	CHECK_INT(got, err);
	if (got == 0) {
		fprintf(stderr, "  accepted: %s\n", s);
		http_request_clear(&r);
	}
}

int main(void)
{
	struct http_request r = {0};
	size_t used = 0;

	/* A complete POST with a body, followed by a pipelined request. */
	const char *post = "POST /maker/latest/api/factoryDevices HTTP/1.1\r\n"
			   "Host: x\r\nContent-Type: application/json\r\n"
			   "Authorization: Bearer abc\r\nContent-Length: 4\r\n\r\n"
			   "{\"a\"GET / HTTP/1.1\r\n\r\n";
	CHECK_INT(parse(post, &r, &used), 0);
	CHECK_STR(r.method, "POST");
	CHECK_STR(r.target, "/maker/latest/api/factoryDevices");
	CHECK_INT(r.minor, 1);
	CHECK(r.keep_alive);
	CHECK_STR(r.content_type, "application/json");
	CHECK_STR(r.authorization, "Bearer abc");
	CHECK_INT(r.body_len, 4);
	CHECK_STR(r.body, "{\"a\"");
	CHECK_STR(post + used, "GET / HTTP/1.1\r\n\r\n");
	http_request_clear(&r);

	/* Every strict prefix of a valid request is incomplete, never an error. */
	size_t full = strlen(post) - strlen("GET / HTTP/1.1\r\n\r\n");
	for (size_t n = 0; n < full; n++) {
		int got = http_parse_request(post, n, 1024, &r, &used);
		CHECK_INT(got, -EAGAIN);
		if (got == 0)
			http_request_clear(&r);
	}

	/* HTTP/1.0 closes unless asked; Connection: close on 1.1. */
	CHECK_INT(parse("GET /x?deviceEUI=0011 HTTP/1.0\r\n\r\n", &r, &used), 0);
	CHECK(!r.keep_alive);
	CHECK_INT(r.body_len, 0);
	CHECK_STR(r.body, "");
	http_request_clear(&r);
	CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r, &used), 0);
	CHECK(r.keep_alive);
	http_request_clear(&r);
	CHECK_INT(parse("GET / HTTP/1.1\r\nconnection: foo, close\r\n\r\n", &r, &used), 0);
	CHECK(!r.keep_alive);
	http_request_clear(&r);

	/* Chunked bodies, with an extension and a trailer. */
	const char *chunked = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
	CHECK_INT(parse(chunked, &r, &used), 0);
	CHECK_STR(r.body, "abc0123456789");
	CHECK_INT(r.body_len, 13);
	CHECK_STR(chunked + used, "NEXT");
	http_request_clear(&r);
	CHECK_INT(http_parse_request(chunked, strlen(chunked) - 6, 1024, &r, &used), -EAGAIN);

	/* Must fail. */
	must_fail("GET\r\n\r\n", -EBADMSG);
	must_fail("get / HTTP/1.1\r\n\r\n", -EBADMSG);
	must_fail("GET x HTTP/1.1\r\n\r\n", -EBADMSG);
	must_fail("GET / HTTP/2.0\r\n\r\n", -EBADMSG);
	must_fail("GET / HTTP/1.1 \r\n\r\n", -EBADMSG);
	must_fail("GET /a b HTTP/1.1\r\n\r\n", -EBADMSG);
	must_fail("GET / HTTP/1.1\r\nNo colon\r\n\r\n", -EBADMSG);
	must_fail("GET / HTTP/1.1\r\n: empty name\r\n\r\n", -EBADMSG);
	must_fail("GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", -EBADMSG);
	must_fail("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nContent-Length: 2000\r\n\r\n", -EFBIG);
	must_fail("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", -EFBIG);
	must_fail("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", -ENOTSUP);
	must_fail("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
		  -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n", -EBADMSG);
	must_fail("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFF\r\n", -EFBIG);
	must_fail("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
		  "200\r\n",
		  -EAGAIN);

	/* A head that never ends is refused at the limit. */
	static char big[HTTP_HEAD_MAX + 64];
	memset(big, 'a', sizeof(big) - 1);
	memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
	CHECK_INT(parse(big, &r, &used), -EMSGSIZE);
	CHECK_INT(http_error_status(-EMSGSIZE), 431);
	CHECK_INT(http_error_status(-EFBIG), 413);
	CHECK_INT(http_error_status(-EBADMSG), 400);

	/* Query and form parameters. */
	char v[32];
	CHECK_INT(http_query_param("/p?a=1&deviceEUI=00%41b+c", "deviceEUI", v, sizeof(v)), 0);
	CHECK_STR(v, "00Ab c");
	CHECK_INT(http_query_param("/p?a=1", "deviceEUI", v, sizeof(v)), -ENOENT);
	CHECK_INT(http_query_param("/p", "a", v, sizeof(v)), -ENOENT);
	CHECK_INT(http_query_param("/p?a=%4", "a", v, sizeof(v)), -EINVAL);
	CHECK_INT(http_query_param("/p?a=%zz", "a", v, sizeof(v)), -EINVAL);
	CHECK_INT(http_query_param("/p?a=%00", "a", v, sizeof(v)), -EINVAL);
	CHECK_INT(http_form_param("aa=1&a=2", "a", v, sizeof(v)), 0);
	CHECK_STR(v, "2");
	CHECK_INT(http_form_param("a=0123456789", "a", v, 5), -E2BIG);
	CHECK_INT(http_target_path("/x/y?z", v, sizeof(v)), 0);
	CHECK_STR(v, "/x/y");

	/* Responses. */
	struct evbuffer *out = evbuffer_new();
	CHECK_INT(http_format_response(out, 429, "{}", 3, NULL, false, 1), 0);
	size_t n = evbuffer_get_length(out);
	char text[512] = {0};
	evbuffer_remove(out, text, n < sizeof(text) - 1 ? n : sizeof(text) - 1);
	CHECK_STR(text, "HTTP/1.1 429 Too Many Requests\r\nServer: tpa-sim\r\n"
			"Content-Type: application/json\r\nContent-Length: 2\r\n"
			"Retry-After: 3\r\nConnection: close\r\n\r\n{}");
	evbuffer_free(out);
	return tap_done();
}
