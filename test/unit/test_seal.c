/* Unit tests for AES-256-GCM sealing: known answers, round trips and tampering. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "hex.h"
#include "seal.h"
#include "tap.h"

/* Decode a hex literal of the test vectors into out (must fit). */
static size_t unhex(const char *s, uint8_t *out, size_t max)
{
	size_t n = strlen(s) / 2;
	if (n > max || hex_decode(s, out, n) != 0)
		abort();
	return n;
}

/* The AES-256 GCM test case 16 of the GCM specification (McGrew and Viega). */
static void test_known_answer(void)
{
	uint8_t key[32], nonce[12], pt[64], aad[20], want[128], got[128], back[64];
	unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key, sizeof(key));
	unhex("cafebabefacedbaddecaf888", nonce, sizeof(nonce));
	size_t n = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
			 "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
			 pt, sizeof(pt));
	size_t an = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad, sizeof(aad));
	size_t wn = unhex("cafebabefacedbaddecaf888"
			  "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
			  "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
			  "76fc6ece0f4e1768cddf8853bb2d551b",
			  want, sizeof(want));
	CHECK_INT(n, 60);
	CHECK_INT(wn, n + SEAL_OVERHEAD);

	struct seal *s = NULL;
	CHECK_INT(seal_new(key, sizeof(key), &s), 0);
	CHECK(s != NULL);
	if (!s)
		return;
	CHECK_INT(seal_encrypt_nonce(s, nonce, aad, an, pt, n, got, sizeof(got)), 0);
	CHECK(memcmp(got, want, wn) == 0);
	memset(back, 0, sizeof(back));
	CHECK_INT(seal_decrypt(s, aad, an, want, wn, back, sizeof(back)), 0);
	CHECK(memcmp(back, pt, n) == 0);
	CHECK_INT(seal_encrypt_nonce(s, nonce, aad, an, pt, n, got, wn - 1), -ENOBUFS);
	CHECK_INT(seal_decrypt(s, aad, an, want, wn, back, n - 1), -ENOBUFS);
	seal_free(s);
}

/* An AppKey sealed for one DevEUI opens only with that DevEUI, key and unaltered bytes. */
static void test_appkey(void)
{
	uint8_t key[32], key2[32], appkey[16], blob[16 + SEAL_OVERHEAD], blob2[sizeof(blob)];
	uint8_t out[16];
	for (int i = 0; i < 32; i++) {
		key[i] = (uint8_t)i;
		key2[i] = (uint8_t)(i + 1);
	}
	unhex("00112233445566778899AABBCCDDEEFF", appkey, sizeof(appkey));
	const char *eui = "0123456789ABCDEF";

	struct seal *s = NULL, *s2 = NULL;
	CHECK_INT(seal_new(key, sizeof(key), &s), 0);
	CHECK_INT(seal_new(key2, sizeof(key2), &s2), 0);
	if (!s || !s2)
		return;

	/* A fixed vector with a text AAD, as the store uses it. */
	uint8_t nonce[12], want[sizeof(blob)];
	for (int i = 0; i < 12; i++)
		nonce[i] = (uint8_t)i;
	unhex("000102030405060708090A0B"
	      "4713f42881b0a46c05d83d307d349692bdb7e07ad58d6e98dd659a88e9b1c699",
	      want, sizeof(want));
	CHECK_INT(
	    seal_encrypt_nonce(s, nonce, (const uint8_t *)eui, 16, appkey, 16, blob, sizeof(blob)),
	    0);
	CHECK(memcmp(blob, want, sizeof(blob)) == 0);

	CHECK_INT(seal_encrypt(s, (const uint8_t *)eui, 16, appkey, 16, blob, sizeof(blob)), 0);
	CHECK_INT(seal_encrypt(s, (const uint8_t *)eui, 16, appkey, 16, blob2, sizeof(blob2)), 0);
	/* Fresh nonces: two seals of the same key differ. */
	CHECK(memcmp(blob, blob2, SEAL_NONCE_LEN) != 0);
	CHECK(memcmp(blob + SEAL_NONCE_LEN, appkey, 16) != 0);

	memset(out, 0, sizeof(out));
	CHECK_INT(seal_decrypt(s, (const uint8_t *)eui, 16, blob, sizeof(blob), out, sizeof(out)),
		  0);
	CHECK(memcmp(out, appkey, 16) == 0);

	/* Wrong associated data, wrong key, flipped bits anywhere, short blobs. */
	CHECK_INT(seal_decrypt(s, (const uint8_t *)"0123456789ABCDEE", 16, blob, sizeof(blob), out,
			       sizeof(out)),
		  -EBADMSG);
	uint8_t zero[16] = {0};
	CHECK(memcmp(out, zero, 16) == 0);
	CHECK_INT(seal_decrypt(s2, (const uint8_t *)eui, 16, blob, sizeof(blob), out, sizeof(out)),
		  -EBADMSG);
	for (size_t i = 0; i < sizeof(blob); i += 7) {
		memcpy(blob2, blob, sizeof(blob));
		blob2[i] ^= 0x01;
		CHECK_INT(seal_decrypt(s, (const uint8_t *)eui, 16, blob2, sizeof(blob2), out,
				       sizeof(out)),
			  -EBADMSG);
	}
	blob2[sizeof(blob2) - 1] = blob[sizeof(blob) - 1] ^ 0x80;
	CHECK_INT(seal_decrypt(s, (const uint8_t *)eui, 16, blob2, sizeof(blob2), out, sizeof(out)),
		  -EBADMSG);
	CHECK_INT(
	    seal_decrypt(s, (const uint8_t *)eui, 16, blob, SEAL_OVERHEAD - 1, out, sizeof(out)),
	    -EBADMSG);
	CHECK_INT(
	    seal_decrypt(s, (const uint8_t *)eui, 16, blob, sizeof(blob) - 1, out, sizeof(out)),
	    -EBADMSG);

	/* Bad keys. */
	struct seal *bad = NULL;
	CHECK_INT(seal_new(key, 16, &bad), -EINVAL);
	CHECK_INT(seal_new(NULL, 32, &bad), -EINVAL);
	CHECK(bad == NULL);

	CHECK(seal_free(s) == NULL);
	seal_free(s2);
	CHECK(seal_free(NULL) == NULL);
}

int main(void)
{
	test_known_answer();
	test_appkey();
	return tap_done();
}
