/* ascrypto: the LRC-AS tunnel's cryptography (AppSKey unwrap, RFC 3394, FRMPayload, Tokens, ASTK).
 */
#include "ascrypto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/aes.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <nettle/sha2.h>

#include "cred.h"

/* One AES-128 block in ECB mode; mode is MBEDTLS_AES_ENCRYPT or MBEDTLS_AES_DECRYPT. */
static int aes_block(const uint8_t key[AS_KEY_LEN], int mode, const uint8_t in[16], uint8_t out[16])
{
	mbedtls_aes_context aes;
	mbedtls_aes_init(&aes);
	int r = mode == MBEDTLS_AES_ENCRYPT ? mbedtls_aes_setkey_enc(&aes, key, 128)
					    : mbedtls_aes_setkey_dec(&aes, key, 128);
	if (r == 0)
		r = mbedtls_aes_crypt_ecb(&aes, mode, in, out);
	mbedtls_aes_free(&aes);
	return r == 0 ? 0 : -EIO;
}

int ascrypto_appskey_unwrap(const uint8_t astk[AS_KEY_LEN], const uint8_t field[AS_KEY_LEN],
			    uint8_t ret[AS_KEY_LEN])
{
	if (!astk || !field || !ret)
		return -EINVAL;
	return aes_block(astk, MBEDTLS_AES_DECRYPT, field, ret);
}

static const uint8_t kw_iv[8] = {0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6, 0xA6};

/* XOR the 64-bit big-endian step counter t into a. */
static void kw_xor_t(uint8_t a[8], uint64_t t)
{
	for (int k = 7; k >= 0; k--) {
		a[k] ^= (uint8_t)(t & 0xff);
		t >>= 8;
	}
}

int ascrypto_key_wrap(const uint8_t kek[AS_KEY_LEN], const uint8_t *key, size_t n, uint8_t *out)
{
	if (!kek || !key || !out || n < 16 || n > 32 || n % 8)
		return -EINVAL;
	size_t blocks = n / 8;
	uint8_t a[8], b[16];
	memcpy(a, kw_iv, 8);
	memmove(out + 8, key, n);
	for (uint64_t j = 0; j < 6; j++) {
		for (size_t i = 1; i <= blocks; i++) {
			memcpy(b, a, 8);
			memcpy(b + 8, out + 8 * i, 8);
			if (aes_block(kek, MBEDTLS_AES_ENCRYPT, b, b) < 0) {
				cred_wipe(b, sizeof(b));
				cred_wipe(out, n + 8);
				return -EIO;
			}
			memcpy(a, b, 8);
			kw_xor_t(a, blocks * j + i);
			memcpy(out + 8 * i, b + 8, 8);
		}
	}
	memcpy(out, a, 8);
	cred_wipe(b, sizeof(b));
	return 0;
}

int ascrypto_key_unwrap(const uint8_t kek[AS_KEY_LEN], const uint8_t *in, size_t len, uint8_t *out)
{
	if (!kek || !in || !out || len < 24 || len > 40 || len % 8)
		return -EINVAL;
	size_t blocks = len / 8 - 1;
	uint8_t a[8], b[16];
	memcpy(a, in, 8);
	memmove(out, in + 8, len - 8);
	for (uint64_t j = 6; j-- > 0;) {
		for (size_t i = blocks; i >= 1; i--) {
			kw_xor_t(a, blocks * j + i);
			memcpy(b, a, 8);
			memcpy(b + 8, out + 8 * (i - 1), 8);
			if (aes_block(kek, MBEDTLS_AES_DECRYPT, b, b) < 0) {
				cred_wipe(b, sizeof(b));
				cred_wipe(out, len - 8);
				return -EIO;
			}
			memcpy(a, b, 8);
			memcpy(out + 8 * (i - 1), b + 8, 8);
		}
	}
	cred_wipe(b, sizeof(b));
	/* Constant-time check of the integrity value. */
	uint8_t diff = 0;
	for (int k = 0; k < 8; k++)
		diff |= (uint8_t)(a[k] ^ kw_iv[k]);
	if (diff) {
		cred_wipe(out, len - 8);
		return -EBADMSG;
	}
	return 0;
}

int ascrypto_frm_crypt(const uint8_t key[AS_KEY_LEN], uint32_t dev_addr, uint32_t fcnt,
		       enum as_dir dir, const uint8_t *in, size_t n, uint8_t *out)
{
	if (!key || (n && (!in || !out)) || n > AS_MAX_FRM_PAYLOAD)
		return -EINVAL;
	mbedtls_aes_context aes;
	mbedtls_aes_init(&aes);
	if (mbedtls_aes_setkey_enc(&aes, key, 128) != 0) {
		mbedtls_aes_free(&aes);
		return -EIO;
	}
	uint8_t a[16] = {0x01}, s[16];
	a[5] = (uint8_t)dir;
	for (int k = 0; k < 4; k++) {
		a[6 + k] = (uint8_t)(dev_addr >> (8 * k));
		a[10 + k] = (uint8_t)(fcnt >> (8 * k));
	}
	int r = 0;
	for (size_t off = 0, i = 1; off < n; off += 16, i++) {
		a[15] = (uint8_t)i;
		if (mbedtls_aes_crypt_ecb(&aes, MBEDTLS_AES_ENCRYPT, a, s) != 0) {
			r = -EIO;
			break;
		}
		for (size_t k = 0; k < 16 && off + k < n; k++)
			out[off + k] = in[off + k] ^ s[k];
	}
	cred_wipe(s, sizeof(s));
	mbedtls_aes_free(&aes);
	return r;
}

/*
 * SHA-256 by nettle, not mbedTLS: nettle uses the CPU's SHA instructions where it has them
 * (x86 SHA-NI, ARMv8), mbedTLS 2.28 does not; 180 against 670 ns for a Token's 260 bytes
 * (test/bench/README.md). The context holds the tunnel key's bytes: wiped after.
 */
void ascrypto_token(const char *const *parts, size_t n, char out[AS_TOKEN_HEX + 1])
{
	struct sha256_ctx sha;
	uint8_t digest[SHA256_DIGEST_SIZE];
	sha256_init(&sha);
	for (size_t i = 0; i < n; i++)
		if (parts[i])
			sha256_update(&sha, strlen(parts[i]), (const uint8_t *)parts[i]);
	sha256_digest(&sha, sizeof(digest), digest);
	cred_wipe(&sha, sizeof(sha));
	static const char hexd[] = "0123456789abcdef";
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hexd[digest[i] >> 4];
		out[2 * i + 1] = hexd[digest[i] & 15];
	}
	out[AS_TOKEN_HEX] = '\0';
}

bool ascrypto_key_equal(const uint8_t a[AS_KEY_LEN], const uint8_t b[AS_KEY_LEN])
{
	uint8_t diff = 0;
	for (size_t i = 0; i < AS_KEY_LEN; i++)
		diff |= (uint8_t)(a[i] ^ b[i]);
	return diff == 0;
}

bool ascrypto_token_equal(const char *a, const char *b)
{
	if (!a || !b || strlen(a) != AS_TOKEN_HEX || strlen(b) != AS_TOKEN_HEX)
		return false;
	unsigned diff = 0;
	for (size_t i = 0; i < AS_TOKEN_HEX; i++) {
		unsigned ca = (unsigned char)a[i], cb = (unsigned char)b[i];
		if (ca >= 'A' && ca <= 'F')
			ca += 'a' - 'A';
		if (cb >= 'A' && cb <= 'F')
			cb += 'a' - 'A';
		diff |= ca ^ cb;
	}
	return diff == 0;
}

/* Whether pem, which mbedTLS refused with err, holds a key protected by a passphrase. */
static bool needs_passphrase(int err, const char *pem)
{
	/* Also when mbedTLS lacks the key's cipher: the PEM says so in its header. */
	return err == MBEDTLS_ERR_PK_PASSWORD_REQUIRED || err == MBEDTLS_ERR_PK_PASSWORD_MISMATCH ||
	       strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----") ||
	       strstr(pem, "Proc-Type: 4,ENCRYPTED");
}

int ascrypto_private_key_parse(mbedtls_pk_context *pk, const char *pem)
{
	int err = mbedtls_pk_parse_key(pk, (const unsigned char *)pem, strlen(pem) + 1, NULL, 0);
	if (err == 0)
		return 0;
	if (err == MBEDTLS_ERR_PK_ALLOC_FAILED)
		return -ENOMEM;
	return needs_passphrase(err, pem) ? -ENOKEY : -EINVAL;
}

/*
 * Parse pem (pem_len bytes, NUL included or not) into pk: 0, or as
 * ascrypto_rsa_key_check(), with the key's size in *ret_bits when it is RSA.
 */
static int rsa_private_parse(mbedtls_pk_context *pk, const char *pem, size_t pem_len,
			     unsigned *ret_bits)
{
	if (!pem || pem_len == 0 || pem_len > 16384)
		return -EINVAL;
	/* mbedTLS wants a PEM buffer with its NUL counted in the length. */
	size_t n = strnlen(pem, pem_len);
	char *buf = malloc(n + 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, pem, n);
	buf[n] = '\0';
	int r = ascrypto_private_key_parse(pk, buf);
	if (r == 0 && mbedtls_pk_get_type(pk) != MBEDTLS_PK_RSA)
		r = -EINVAL;
	if (r == 0 && ret_bits)
		*ret_bits = (unsigned)mbedtls_pk_get_bitlen(pk);
	if (r == 0 && mbedtls_pk_get_bitlen(pk) < ASCRYPTO_RSA_MIN_BITS)
		r = -EKEYREJECTED;
	cred_wipe(buf, n);
	free(buf);
	return r;
}

int ascrypto_rsa_key_check(const char *pem, size_t pem_len, unsigned *ret_bits)
{
	mbedtls_pk_context pk;
	mbedtls_pk_init(&pk);
	int r = rsa_private_parse(&pk, pem, pem_len, ret_bits);
	mbedtls_pk_free(&pk);
	return r;
}

const char *ascrypto_rsa_key_problem(int r)
{
	switch (r) {
	case -ENOKEY:
		return "is protected by a passphrase";
	case -EKEYREJECTED:
		return "is shorter than 2048 bits";
	default:
		return "holds no RSA private key";
	}
}

void ascrypto_passphrase_advice(char *buf, size_t len, const char *what, const char *file,
				const char *directive, const char *cred)
{
	snprintf(buf, len,
		 "%s %s is protected by a passphrase, which tpas has no way to be given: write "
		 "it without one, the same key, with openssl pkey -in %s -out %s.plain (it "
		 "asks for the passphrase), chmod 0600 %s.plain, and point %s (or the "
		 "credential %s) at %s.plain",
		 what, file, file, file, file, directive, cred, file);
}

int ascrypto_astk_decrypt(const char *pem, size_t pem_len, const uint8_t *enc, size_t enc_len,
			  uint8_t ret[AS_KEY_LEN])
{
	if (!enc || !ret)
		return -EINVAL;
	mbedtls_pk_context pk;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_pk_init(&pk);
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(&drbg);
	uint8_t out[512];
	size_t out_len = 0;
	int r = -EIO;
	static const char personal[] = "tpas-astk";
	if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
				  (const unsigned char *)personal, sizeof(personal) - 1) != 0)
		goto out;
	if ((r = rsa_private_parse(&pk, pem, pem_len, NULL)) < 0)
		goto out;
	mbedtls_rsa_set_padding(mbedtls_pk_rsa(pk), MBEDTLS_RSA_PKCS_V15, 0);
	if (enc_len != mbedtls_pk_get_len(&pk) ||
	    mbedtls_pk_decrypt(&pk, enc, enc_len, out, &out_len, sizeof(out),
			       mbedtls_ctr_drbg_random, &drbg) != 0 ||
	    out_len != AS_KEY_LEN) {
		r = -EBADMSG;
		goto out;
	}
	memcpy(ret, out, AS_KEY_LEN);
	r = 0;
out:
	cred_wipe(out, sizeof(out));
	mbedtls_pk_free(&pk);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&entropy);
	return r;
}
