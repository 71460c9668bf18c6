/* base64: RFC 4648 base64 (standard alphabet, with padding) for QR image data. */
#pragma once

/*
 * Kept instead of mbedTLS's base64, which is about 10x slower on label-sized buffers
 * and would cap label exports (test/bench/bench_base64.c, README "Performance").
 */

#include <stddef.h>
#include <stdint.h>

/* Characters needed to encode n bytes, without the NUL; SIZE_MAX if it overflows. */
size_t base64_encoded_len(size_t n);

/*
 * Encode n bytes of in as a NUL-terminated malloc'd string and store its length (without
 * the NUL) in *ret_len if ret_len is not NULL. Returns NULL with errno set (ENOMEM,
 * EOVERFLOW) on failure.
 */
char *base64_encode(const uint8_t *in, size_t n, size_t *ret_len);

/*
 * Decode len characters of s strictly: the length must be a multiple of 4, only the
 * standard alphabet, at most two '=' and only at the end, and the unused bits of the last
 * group must be zero (so every byte string has exactly one accepted encoding). No
 * whitespace. On success stores a malloc'd buffer (NUL-terminated for convenience, the NUL
 * not counted) in *ret and its length in *ret_len. Returns 0, -EINVAL or -ENOMEM; *ret and
 * *ret_len are untouched on failure.
 */
int base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len);
