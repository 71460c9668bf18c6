/* Unit tests for wipe: realloc keeps the contents, shrinks in place with the tail zeroed. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tap.h"
#include "wipe.h"

int main(void)
{
	wipe_install();

	/* NULL grows like malloc; growing keeps every byte. */
	char *p = wipe_realloc(NULL, 16);
	CHECK(p != NULL);
	memcpy(p, "0123456789abcdef", 16);
	p = wipe_realloc(p, 4096);
	CHECK(p != NULL);
	CHECK(memcmp(p, "0123456789abcdef", 16) == 0);

	/* Shrinking stays in place and zeroes what the caller gave back. */
	memset(p, 'k', 4096);
	char *q = wipe_realloc(p, 8);
	CHECK(q == p);
	CHECK(memcmp(q, "kkkkkkkk", 8) == 0);
	size_t have = malloc_usable_size(q);
	size_t zeros = 0;
	for (size_t i = 8; i < have; i++)
		zeros += q[i] == 0;
	CHECK_INT(zeros, have - 8);

	/* Size 0 frees. */
	CHECK(wipe_realloc(q, 0) == NULL);
	wipe_free(NULL);

	/* jansson runs on the hooks. */
	json_t *j = json_pack("{s:s}", "appKey", "00112233445566778899AABBCCDDEEFF");
	char *s = json_dumps(j, JSON_COMPACT);
	CHECK_STR(s, "{\"appKey\":\"00112233445566778899AABBCCDDEEFF\"}");
	wipe_free(s);
	json_decref(j);

	return tap_done();
}
