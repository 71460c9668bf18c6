/* fuzz-tpa: answers from the cloud (import, query, OAuth2 token) and base64 on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base64.h"
#include "config.h"
#include "hex.h"
#include "tpa.h"

/* Abort on a broken promise, so the fuzzer reports it. */
static void require(int ok)
{
	if (!ok)
		abort();
}

/* True if s is NUL-terminated within n bytes. */
static int terminated(const char *s, size_t n)
{
	return memchr(s, '\0', n) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg;
	static int ready;
	if (!ready) {
		config_defaults(&cfg);
		ready = 1;
	}
	if (size < 3)
		return 0;
	/* Byte 0: import or query; bytes 1-2: the HTTP status; the rest: the body. */
	bool query = data[0] & 1;
	int status = 100 + (data[1] << 8 | data[2]) % 500;
	const char *body = (const char *)data + 3;
	size_t len = size - 3;

	struct tpa_result res;
	tpa_interpret(&cfg, query, status, body, len, (data[0] & 2) ? "7" : NULL, time(NULL), &res);
	require(res.outcome < TPA_OUTCOME_MAX);
	require(terminated(res.owner_token, sizeof(res.owner_token)));
	require(terminated(res.ref, sizeof(res.ref)));
	require(terminated(res.code, sizeof(res.code)));
	require(terminated(res.message, sizeof(res.message)));
	require(terminated(res.reason, sizeof(res.reason)));
	/* A token handed on is hexadecimal, upper-case. */
	if (res.outcome == TPA_OK) {
		require(hex_valid_any(res.owner_token));
		for (const char *p = res.owner_token; *p; p++)
			require(!(*p >= 'a' && *p <= 'f'));
	}
	/* Only success statuses give a token. */
	if (status < 200 || status > 299)
		require(res.outcome != TPA_OK);

	char token[256];
	long expires = 0;
	if (tpa_oauth2_parse(body, len, token, sizeof(token), &expires) == 0) {
		require(terminated(token, sizeof(token)) && token[0] != '\0');
		require(expires > 0);
	}

	/* The same answer read as a query for one DevEUI, paged; and as a delete. */
	bool more = false;
	tpa_interpret_query(&cfg, true, "70B3D50000000001", status, body, len, NULL, time(NULL),
			    &res, &more);
	require(res.outcome < TPA_OUTCOME_MAX);
	require(!more || res.outcome == TPA_NOT_FOUND);
	tpa_interpret_delete(status, body, len, NULL, time(NULL), &res);
	require(res.outcome == TPA_OK || res.outcome == TPA_NOT_FOUND ||
		res.outcome == TPA_UNAVAILABLE || res.outcome == TPA_REJECTED);
	require(terminated(res.message, sizeof(res.message)));

	/* The DX Maker token answer; every ownerToken form on the body as text. */
	static struct tpa_oauth2_reply rep;
	if (tpa_oauth2_parse_reply(body, len, &rep) == 0) {
		require(rep.token[0] && terminated(rep.customer_id, sizeof(rep.customer_id)));
		require(terminated(rep.token_type, sizeof(rep.token_type)));
	}
	char text[512], out[129];
	size_t tl = len < sizeof(text) - 1 ? len : sizeof(text) - 1;
	memcpy(text, body, tl);
	text[tl] = '\0';
	for (int form = OWNER_TOKEN_HEX; form <= OWNER_TOKEN_AS_IS; form++)
		if (tpa_owner_token_convert((enum owner_token_form)form, text, out, sizeof(out)) == 0) {
			require(terminated(out, sizeof(out)) && out[0]);
			require(!strchr(out, ':'));
			if (form != OWNER_TOKEN_AS_IS)
				require(hex_valid_any(out));
		}

	/* base64: what decodes re-encodes to the same text. */
	uint8_t *bin;
	size_t blen, elen;
	if (base64_decode(body, len, &bin, &blen) == 0) {
		char *again = base64_encode(bin, blen, &elen);
		require(again && elen == len && memcmp(again, body, len) == 0);
		free(again);
		free(bin);
	}
	return 0;
}
