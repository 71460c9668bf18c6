/* fuzz-tunnel: the tunnel's request path: query string, JSON and XML bodies (each body read
 * by uplink_fast and by jansson alone must give the same), then the whole verification,
 * decryption and journal with a Token made to match. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "journal.h"
#include "tunnel.h"
#include "uplink.h"
#include "uplink_read.h"
#include "../unit/uplink_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KEY "bec499c69e9c939e413b663961636c61"

static struct journal *j;
static struct tunnel *t;

/* One journal (in memory) and tunnel for the whole run, with an ASTK and a labelled one. */
static void setup(void)
{
	static const uint8_t store_key[32] = {7};
	static const uint8_t astk[16] = {0x48, 0xe6, 0x16, 0xc7, 0xaa, 0xe1, 0x68, 0x01,
					 0x7d, 0x14, 0xd9, 0x7d, 0x50, 0xd5, 0xef, 0xef};
	char err[256];
	if (journal_open(":memory:", store_key, &j, err, sizeof(err)) < 0)
		abort();
	journal_astk_add(j, "", "", "", astk, NULL, NULL);
	journal_astk_add(j, "kek", "", "", astk, NULL, NULL);
	const struct tunnel_options o = {.key = KEY, .max_deviation_ms = 0, .max_body = 65536};
	if (tunnel_new(NULL, &o, j, NULL, NULL, &t, err, sizeof(err)) < 0)
		abort();
}

/* Input: the query string up to the first newline, the body after it. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!t)
		setup();
	const uint8_t *nl = memchr(data, '\n', size);
	size_t qlen = nl ? (size_t)(nl - data) : size;
	char *query = malloc(qlen + 1);
	if (!query)
		return 0;
	memcpy(query, data, qlen);
	query[qlen] = '\0';
	const char *body = nl ? (const char *)nl + 1 : "";
	size_t blen = nl ? size - qlen - 1 : 0;

	char reason[200];
	struct uplink_query q;
	int qr = uplink_query_parse(query, &q, reason, sizeof(reason));
	if (qr == 0 && (strlen(q.token) != 64 || strlen(q.signed_part) > qlen))
		abort();
	/* uplink_fast gives what jansson gives, or leaves the body to it. */
	bool fast;
	if (uplink_same(body, blen, &fast) == 0)
		abort();
	struct uplink u;
	int r = uplink_parse(body, blen, &u, reason, sizeof(reason));
	if (r == 0) {
		if (strlen(u.dev_eui) != 16 || strlen(u.payload_hex) % 2 || u.fport > 255)
			abort();
		/* Sign it for real so the deeper path runs. */
		char tok[65], *signed_q = malloc(qlen + 80);
		const char *part = qr == 0 ? q.signed_part : query;
		if (signed_q) {
			uplink_token(&u, part, KEY, tok);
			snprintf(signed_q, qlen + 80, "%s&Token=%s", part, tok);
			json_t *ans = NULL;
			int st = tunnel_process(t, signed_q, body, blen, 1577836800000LL, &ans);
			if (!ans || (st == 200 && !json_is_integer(json_object_get(ans, "seq"))))
				abort();
			if (st != 200 && st != 400 && st != 401 && st != 404 && st != 413 &&
			    st != 503)
				abort();
			json_decref(ans);
		}
		free(signed_q);
		uplink_clear(&u);
	} else if (!reason[0]) {
		abort();
	}
	json_t *ans = NULL;
	tunnel_process(t, query, body, blen, 1577836800000LL, &ans);
	if (!ans)
		abort();
	json_decref(ans);
	free(query);
	return 0;
}
