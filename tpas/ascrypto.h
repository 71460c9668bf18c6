/* ascrypto: the LRC-AS tunnel's cryptography (AppSKey unwrap, RFC 3394, FRMPayload, Tokens, ASTK).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/pk.h>

#define AS_KEY_LEN 16	       /* AES-128 keys: ASTK, AppSKey */
#define AS_WRAPPED_LEN 24      /* an AES-128 key wrapped with RFC 3394 */
#define AS_TOKEN_HEX 64	       /* a Token: SHA-256 as lower-case hex */
#define AS_MAX_FRM_PAYLOAD 255 /* bytes of FRMPayload we accept */

/*
 * The tunnel's AppSKey field: one AES-128 block decrypted with the ASTK (what Actility
 * documents as CBC with a zero IV). 0, or -EINVAL for bad lengths, -EIO from mbedTLS.
 */
int ascrypto_appskey_unwrap(const uint8_t astk[AS_KEY_LEN], const uint8_t field[AS_KEY_LEN],
			    uint8_t ret[AS_KEY_LEN]);

/*
 * RFC 3394 AES key wrap of a key of n bytes (a multiple of 8, 16..32) with a 128-bit KEK
 * into out (n + 8 bytes), and its inverse. Unwrap returns -EBADMSG when the integrity
 * check fails (wrong KEK or damaged data); out is then wiped.
 */
int ascrypto_key_wrap(const uint8_t kek[AS_KEY_LEN], const uint8_t *key, size_t n, uint8_t *out);
int ascrypto_key_unwrap(const uint8_t kek[AS_KEY_LEN], const uint8_t *in, size_t len, uint8_t *out);

/* Direction of a LoRaWAN frame for FRMPayload encryption. */
enum as_dir {
	AS_UPLINK = 0,
	AS_DOWNLINK = 1,
};

/*
 * LoRaWAN 1.0.x §4.3.3 FRMPayload encryption (which is also the decryption) of n bytes of
 * in into out (may be in) with key, the device address (as printed, big-endian) and the
 * 32-bit frame counter. 0, -EINVAL (n over AS_MAX_FRM_PAYLOAD), -EIO.
 */
int ascrypto_frm_crypt(const uint8_t key[AS_KEY_LEN], uint32_t dev_addr, uint32_t fcnt,
		       enum as_dir dir, const uint8_t *in, size_t n, uint8_t *out);

/*
 * SHA-256 of the concatenation of the n strings parts, as lower-case hex into out
 * (AS_TOKEN_HEX + 1 bytes). The tunnel's uplink and downlink Tokens are this hash over
 * the parts UPSTREAM.md §5 lists.
 */
void ascrypto_token(const char *const *parts, size_t n, char out[AS_TOKEN_HEX + 1]);

/* Compare two Tokens in time independent of where they differ; case-insensitive. */
bool ascrypto_token_equal(const char *a, const char *b);

/* Compare two AES-128 keys in time independent of where they differ. */
bool ascrypto_key_equal(const uint8_t a[AS_KEY_LEN], const uint8_t b[AS_KEY_LEN]);

/*
 * Decrypt Key Manager's encryptedASKey (RSA PKCS#1 v1.5) with the PEM private key pem
 * (pem_len bytes, NUL included or not) into the 16-byte ASTK. -EINVAL, -ENOKEY or
 * -EKEYREJECTED for a key ascrypto_rsa_key_check() refuses, -EBADMSG when the ciphertext
 * does not decrypt to 16 bytes.
 */
int ascrypto_astk_decrypt(const char *pem, size_t pem_len, const uint8_t *enc, size_t enc_len,
			  uint8_t ret[AS_KEY_LEN]);

/* The smallest RSA key taken: Key Manager's ASTK key is RSA-2048 (tpactl as keygen). */
#define ASCRYPTO_RSA_MIN_BITS 2048

/*
 * 0 when pem (pem_len bytes, NUL included or not) holds an RSA private key of
 * ASCRYPTO_RSA_MIN_BITS or more, its size in *ret_bits (if not NULL; also when shorter).
 * Else -EINVAL (a public key, another kind of key, anything else), -ENOKEY (a private key
 * protected by a passphrase), -EKEYREJECTED (too short); -ENOMEM.
 */
int ascrypto_rsa_key_check(const char *pem, size_t pem_len, unsigned *ret_bits);

/* What ascrypto_rsa_key_check()'s refusal r says of a key: "holds no RSA private key". */
const char *ascrypto_rsa_key_problem(int r);

/*
 * mbedtls_pk_parse_key() of pem (NUL-terminated) without a passphrase into pk (which
 * mbedtls_pk_init() made): 0, -ENOKEY when pem holds a private key protected by a
 * passphrase, -EINVAL when no private key, -ENOMEM.
 */
int ascrypto_private_key_parse(mbedtls_pk_context *pk, const char *pem);

/*
 * One line for a key protected by a passphrase: what ("the RSA key") in file, and how to
 * write it without one and give it to tpas by directive or by the credential cred.
 */
void ascrypto_passphrase_advice(char *buf, size_t len, const char *what, const char *file,
				const char *directive, const char *cred);
