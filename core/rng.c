/* rng: random bytes for AppKeys from mbedTLS CTR_DRBG seeded by the OS. */
#include "rng.h"

#include <errno.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <stdlib.h>
#include <string.h>

struct rng {
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
};

struct rng *rng_new(const char *personal)
{
	struct rng *g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	mbedtls_entropy_init(&g->entropy);
	mbedtls_ctr_drbg_init(&g->drbg);
	/* Reseed regularly: AppKeys are long-lived secrets. */
	if (mbedtls_ctr_drbg_seed(&g->drbg, mbedtls_entropy_func, &g->entropy,
				  (const unsigned char *)personal, strlen(personal)) != 0) {
		rng_free(g);
		return NULL;
	}
	mbedtls_ctr_drbg_set_reseed_interval(&g->drbg, 1000);
	return g;
}

int rng_bytes(struct rng *g, uint8_t *buf, size_t n)
{
	return mbedtls_ctr_drbg_random(&g->drbg, buf, n) == 0 ? 0 : -EIO;
}

void rng_free(struct rng *g)
{
	if (!g)
		return;
	mbedtls_ctr_drbg_free(&g->drbg);
	mbedtls_entropy_free(&g->entropy);
	free(g);
}
