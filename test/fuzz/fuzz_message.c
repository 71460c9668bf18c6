/* Fuzz target: framing, call decoding, method lookup, validation and encoding round trips. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "frame.h"
#include "message.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stop on a broken invariant: libFuzzer reports the input. */
static void require(int cond)
{
	if (!cond)
		abort();
}

/* Check decoded call c on sock; return 0 or the fault's error (a static string). */
static const char *check(const struct call *c, unsigned sock, struct proto_fault *f)
{
	const struct method_spec *m = NULL;
	int r = proto_check(c, sock, &m, f);
	require((r == 0) == (m != NULL));
	if (r < 0) {
		/* Every fault encodes to an error reply that decodes back. */
		size_t len = 0;
		char *msg = fault_encode(f, &len);
		struct reply rep = {0};
		require(msg != NULL && memchr(msg, '\0', len) == NULL);
		require(reply_decode(msg, len, &rep) == 0);
		require(rep.error && strcmp(rep.error, f->error) == 0 && !rep.continues);
		reply_clear(&rep);
		free(msg);
		return f->error;
	}
	return NULL;
}

/* Everything one message goes through in the daemon and in the client. */
static void one_message(const char *msg, size_t len)
{
	struct reply rep = {0};
	if (reply_decode(msg, len, &rep) == 0)
		require(json_is_object(rep.parameters));
	reply_clear(&rep);

	struct call c = {0};
	struct proto_fault f = {0};
	if (call_decode(msg, len, &c, &f) < 0) {
		require(c.method == NULL && f.error != NULL);
		require(strcmp(f.error, PROTO_ERR_INVALID_PARAMETER) == 0);
		return;
	}
	require(c.method && json_is_object(c.parameters) && !(c.more && c.oneway));

	struct proto_fault fs = {0}, fa = {0};
	const char *es = check(&c, PROTO_SOCKET_STATION, &fs);
	const char *ea = check(&c, PROTO_SOCKET_ADMIN, &fa);

	/* Encoding the call and decoding it again gives the same verdicts. */
	size_t n = 0;
	char *again = call_encode(c.method, c.parameters, c.more, c.oneway, &n);
	require(again != NULL);
	struct call c2 = {0};
	struct proto_fault f2 = {0};
	require(call_decode(again, n, &c2, &f2) == 0);
	require(strcmp(c2.method, c.method) == 0 && c2.more == c.more && c2.oneway == c.oneway);
	const char *es2 = check(&c2, PROTO_SOCKET_STATION, &f2);
	require((es == NULL) == (es2 == NULL));
	require(!es || (strcmp(es, es2) == 0 && strcmp(fs.parameter, f2.parameter) == 0));
	const char *ea2 = check(&c2, PROTO_SOCKET_ADMIN, &f2);
	require((ea == NULL) == (ea2 == NULL));
	require(!ea || (strcmp(ea, ea2) == 0 && strcmp(fa.parameter, f2.parameter) == 0));
	call_clear(&c2);
	free(again);

	/* Echoing the parameters as a reply is framable and decodes. */
	char *out = reply_encode(c.parameters, c.more, &n);
	require(out != NULL);
	struct evbuffer *eb = evbuffer_new();
	require(eb && frame_push(eb, out, n) == 0);
	char *back = NULL;
	size_t blen = 0;
	require(frame_pop(eb, n, &back, &blen) == 1 && blen == n && memcmp(back, out, n) == 0);
	require(reply_decode(back, blen, &rep) == 0 && rep.continues == c.more);
	reply_clear(&rep);
	free(back);
	evbuffer_free(eb);
	free(out);
	call_clear(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* The whole input as one message, if it can be one. */
	if (!memchr(data, '\0', size))
		one_message((const char *)data, size);

	/* The input as a byte stream arriving in chunks of a size taken from its length. */
	size_t chunk = 1 + size % 13, max = 64 + size % 4096;
	struct evbuffer *in = evbuffer_new();
	require(in != NULL);
	for (size_t off = 0; off < size; off += chunk) {
		size_t n = size - off < chunk ? size - off : chunk;
		require(evbuffer_add(in, data + off, n) == 0);
		for (;;) {
			char *msg = NULL;
			size_t len = 0;
			int r = frame_pop(in, max, &msg, &len);
			if (r == 1) {
				require(len <= max && msg[len] == '\0' && strlen(msg) == len);
				one_message(msg, len);
				free(msg);
				continue;
			}
			require(r == 0 || r == -EMSGSIZE);
			if (r == -EMSGSIZE)
				evbuffer_drain(in, evbuffer_get_length(in));
			break;
		}
	}
	evbuffer_free(in);
	return 0;
}
