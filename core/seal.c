/* seal: AES-256-GCM sealing of small secrets (AppKeys) bound to associated data. */
#include "seal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/gcm.h>

#include "cred.h"

struct seal {
	mbedtls_gcm_context gcm;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
};

static const char seal_personalization[] = "tpad-seal";

/* Set up the cipher context with key and seed the nonce generator. */
int seal_new(const uint8_t *key, size_t key_len, struct seal **ret)
{
	if (!key || key_len != SEAL_KEY_LEN || !ret)
		return -EINVAL;
	struct seal *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	mbedtls_gcm_init(&s->gcm);
	mbedtls_entropy_init(&s->entropy);
	mbedtls_ctr_drbg_init(&s->drbg);
	if (mbedtls_ctr_drbg_seed(&s->drbg, mbedtls_entropy_func, &s->entropy,
				  (const unsigned char *)seal_personalization,
				  sizeof(seal_personalization) - 1) != 0) {
		seal_free(s);
		return -EIO;
	}
	if (mbedtls_gcm_setkey(&s->gcm, MBEDTLS_CIPHER_ID_AES, key, SEAL_KEY_LEN * 8) != 0) {
		seal_free(s);
		return -EINVAL;
	}
	*ret = s;
	return 0;
}

/* Release the contexts and wipe every byte of them. */
struct seal *seal_free(struct seal *s)
{
	if (!s)
		return NULL;
	mbedtls_gcm_free(&s->gcm);
	mbedtls_ctr_drbg_free(&s->drbg);
	mbedtls_entropy_free(&s->entropy);
	cred_wipe(s, sizeof(*s));
	free(s);
	return NULL;
}

/* Seal with a given nonce into nonce || ciphertext || tag. */
int seal_encrypt_nonce(struct seal *s, const uint8_t nonce[SEAL_NONCE_LEN], const uint8_t *aad,
		       size_t aad_len, const uint8_t *in, size_t n, uint8_t *out, size_t outsz)
{
	if (!s || !nonce || (!aad && aad_len) || (!in && n) || !out)
		return -EINVAL;
	if (n > SIZE_MAX - SEAL_OVERHEAD || outsz < n + SEAL_OVERHEAD)
		return -ENOBUFS;
	memmove(out, nonce, SEAL_NONCE_LEN);
	if (mbedtls_gcm_crypt_and_tag(&s->gcm, MBEDTLS_GCM_ENCRYPT, n, out, SEAL_NONCE_LEN, aad,
				      aad_len, in, out + SEAL_NONCE_LEN, SEAL_TAG_LEN,
				      out + SEAL_NONCE_LEN + n) != 0) {
		cred_wipe(out, n + SEAL_OVERHEAD);
		return -EIO;
	}
	return 0;
}

/* Seal with a fresh nonce drawn from the DRBG. */
int seal_encrypt(struct seal *s, const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n,
		 uint8_t *out, size_t outsz)
{
	if (!s)
		return -EINVAL;
	uint8_t nonce[SEAL_NONCE_LEN];
	if (mbedtls_ctr_drbg_random(&s->drbg, nonce, sizeof(nonce)) != 0)
		return -EIO;
	return seal_encrypt_nonce(s, nonce, aad, aad_len, in, n, out, outsz);
}

/* Check the tag and decrypt a blob made by seal_encrypt(). */
int seal_decrypt(struct seal *s, const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
		 uint8_t *out, size_t outsz)
{
	if (!s || (!aad && aad_len) || !in || !out)
		return -EINVAL;
	if (len < SEAL_OVERHEAD)
		return -EBADMSG;
	size_t n = len - SEAL_OVERHEAD;
	if (outsz < n)
		return -ENOBUFS;
	int r = mbedtls_gcm_auth_decrypt(&s->gcm, n, in, SEAL_NONCE_LEN, aad, aad_len,
					 in + SEAL_NONCE_LEN + n, SEAL_TAG_LEN, in + SEAL_NONCE_LEN,
					 out);
	if (r != 0) {
		cred_wipe(out, n);
		return r == MBEDTLS_ERR_GCM_AUTH_FAILED ? -EBADMSG : -EIO;
	}
	return 0;
}
