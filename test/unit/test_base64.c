/* Unit tests for base64: RFC 4648 vectors, round trips and must-fail decodes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "tap.h"

/* Check that in encodes to want and that want decodes back to in. */
static void check_vector(const char *in, const char *want)
{
	size_t len = 0;
	char *enc = base64_encode((const uint8_t *)in, strlen(in), &len);
	CHECK_STR(enc, want);
	CHECK_INT(len, strlen(want));
	free(enc);

	uint8_t *dec = NULL;
	size_t dlen = 0;
	CHECK_INT(base64_decode(want, strlen(want), &dec, &dlen), 0);
	CHECK_INT(dlen, strlen(in));
	CHECK(dec && memcmp(dec, in, dlen) == 0 && dec[dlen] == '\0');
	free(dec);
}

/* Check that s is refused and the output parameters are left alone. */
static void check_bad(const char *s, size_t len)
{
	uint8_t sentinel = 0, *dec = &sentinel;
	size_t dlen = 12345;
	int r = base64_decode(s, len, &dec, &dlen);
	CHECK_INT(r, -EINVAL);
	if (r != -EINVAL)
		fprintf(stderr, "  accepted \"%.*s\"\n", (int)len, s);
	CHECK(dec == &sentinel);
	CHECK_INT(dlen, 12345);
}

int main(void)
{
	/* RFC 4648 section 10. */
	check_vector("", "");
	check_vector("f", "Zg==");
	check_vector("fo", "Zm8=");
	check_vector("foo", "Zm9v");
	check_vector("foob", "Zm9vYg==");
	check_vector("fooba", "Zm9vYmE=");
	check_vector("foobar", "Zm9vYmFy");

	/* Every byte value and every length up to 300 survives a round trip. */
	uint8_t all[300];
	for (size_t i = 0; i < sizeof(all); i++)
		all[i] = (uint8_t)(i * 7 + 3);
	int round_trips_ok = 1;
	for (size_t n = 0; n <= sizeof(all); n++) {
		size_t len;
		char *enc = base64_encode(all, n, &len);
		uint8_t *dec = NULL;
		size_t dlen = 0;
		if (!enc || len != base64_encoded_len(n) || strlen(enc) != len ||
		    base64_decode(enc, len, &dec, &dlen) != 0 || dlen != n ||
		    memcmp(dec, all, n) != 0)
			round_trips_ok = 0;
		free(enc);
		free(dec);
	}
	CHECK(round_trips_ok);
	const uint8_t hi[] = {0xfb, 0xff, 0xbf};
	char *enc = base64_encode(hi, sizeof(hi), NULL);
	CHECK_STR(enc, "+/+/");
	free(enc);
	CHECK_INT(base64_encoded_len(0), 0);
	CHECK_INT(base64_encoded_len(4), 8);

	/* Must fail: bad length, bad characters, bad padding, non-canonical bits. */
	check_bad("Zg=", 3);
	check_bad("Zm9", 3);
	check_bad("Z", 1);
	check_bad("Zm9vY", 5);
	check_bad("Zm9v\n", 5);
	check_bad("Zm 9", 4);
	check_bad("Zm-_", 4);
	check_bad("Zm9v\0Zm9", 8);
	check_bad("Z===", 4);
	check_bad("====", 4);
	check_bad("Zg=a", 4);
	check_bad("=Zm9", 4);
	check_bad("Zg==Zm9v", 8);
	check_bad("Zm8=Zm9v", 8);
	check_bad("Zh==", 4);
	check_bad("Zm9=", 4);
	check_bad(NULL, 0);
	return tap_done();
}
