/* seal: AES-256-GCM sealing of small secrets (AppKeys) bound to associated data. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define SEAL_KEY_LEN 32
#define SEAL_NONCE_LEN 12
#define SEAL_TAG_LEN 16
#define SEAL_OVERHEAD (SEAL_NONCE_LEN + SEAL_TAG_LEN)

struct seal;

/*
 * Create a sealer for key (exactly SEAL_KEY_LEN bytes; -EINVAL otherwise). The key is
 * copied into the cipher context; the caller wipes its own copy. Nonces come from a
 * CTR_DRBG seeded from the OS entropy source (-EIO if it cannot be seeded).
 * A struct seal is not thread-safe: use it from one thread.
 */
int seal_new(const uint8_t *key, size_t key_len, struct seal **ret);

/* Wipe the key schedule and free s. Accepts NULL; returns NULL. */
struct seal *seal_free(struct seal *s);

/*
 * Seal n bytes of in with a fresh random nonce and associated data aad (aad_len bytes)
 * into out as nonce || ciphertext || tag (n + SEAL_OVERHEAD bytes; outsz must be at
 * least that, else -ENOBUFS).
 */
int seal_encrypt(struct seal *s, const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t n,
		 uint8_t *out, size_t outsz);

/*
 * Same as seal_encrypt() with the caller's nonce. Reusing a nonce with the same key
 * breaks GCM: this exists for known-answer tests only.
 */
int seal_encrypt_nonce(struct seal *s, const uint8_t nonce[SEAL_NONCE_LEN], const uint8_t *aad,
		       size_t aad_len, const uint8_t *in, size_t n, uint8_t *out, size_t outsz);

/*
 * Open a sealed blob of len bytes (nonce || ciphertext || tag) made with the same aad;
 * writes len - SEAL_OVERHEAD bytes to out (outsz must be at least that, else -ENOBUFS).
 * -EBADMSG if the blob is too short, was tampered with, was sealed for other associated
 * data or with another key; out is then wiped.
 */
int seal_decrypt(struct seal *s, const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
		 uint8_t *out, size_t outsz);
