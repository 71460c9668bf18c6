/* rng: random bytes for AppKeys from mbedTLS CTR_DRBG seeded by the OS. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct rng;

/* Seed a generator; NULL on failure. personal tells generators apart (not secret). */
struct rng *rng_new(const char *personal);

/* Fill buf with n random bytes; 0 or -EIO. */
int rng_bytes(struct rng *g, uint8_t *buf, size_t n);

/* Free and wipe the state. Accepts NULL. */
void rng_free(struct rng *g);
