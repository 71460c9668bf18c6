/* bench_base64: proto/base64 against mbedTLS's base64 on label-sized buffers. */
#include <mbedtls/base64.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base64.h"

#define LABEL_BYTES 3000 /* a 4x-scale PNG label */
#define REPS 20000

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(void)
{
	uint8_t *in = malloc(LABEL_BYTES);
	srand(13);
	for (size_t i = 0; in && i < LABEL_BYTES; i++)
		in[i] = (uint8_t)rand();
	size_t elen;
	char *enc = in ? base64_encode(in, LABEL_BYTES, &elen) : NULL;
	unsigned char *buf = enc ? malloc(elen + 4) : NULL;
	if (!buf)
		return 1;
	double t[4];
	int bad = 0;

	double t0 = now_s();
	for (int i = 0; i < REPS; i++) {
		size_t l;
		char *x = base64_encode(in, LABEL_BYTES, &l);
		bad |= !x;
		free(x);
	}
	t[0] = now_s() - t0;
	t0 = now_s();
	for (int i = 0; i < REPS; i++) {
		size_t l;
		bad |= mbedtls_base64_encode(buf, elen + 4, &l, in, LABEL_BYTES) != 0;
	}
	t[1] = now_s() - t0;
	bad |= memcmp(buf, enc, elen) != 0;
	t0 = now_s();
	for (int i = 0; i < REPS; i++) {
		uint8_t *o;
		size_t l;
		bad |= base64_decode(enc, elen, &o, &l) != 0;
		free(o);
	}
	t[2] = now_s() - t0;
	t0 = now_s();
	for (int i = 0; i < REPS; i++) {
		size_t l;
		bad |= mbedtls_base64_decode(buf, elen, &l, (const unsigned char *)enc, elen) != 0;
	}
	t[3] = now_s() - t0;
	double mb = (double)LABEL_BYTES * REPS / 1e6;
	printf("base64 of %d-byte labels, %d times:\n"
	       "  encode: proto %.0f MB/s, mbedTLS %.0f MB/s\n"
	       "  decode: proto %.0f MB/s, mbedTLS %.0f MB/s\n",
	       LABEL_BYTES, REPS, mb / t[0], mb / t[1], mb / t[2], mb / t[3]);
	free(enc);
	free(buf);
	free(in);
	return bad;
}
