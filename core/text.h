/* text: the bounded copy and the decimal number that hot paths write without printf. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* Longest decimal uint64_t (20 digits) and its NUL. */
#define TEXT_U64_MAX 21

/*
 * Copy src into dst (size bytes, at least 1) as snprintf(dst, size, "%s", src) would: cut
 * to size - 1 bytes and always NUL-terminated. The length of src, so that a result of size
 * or more means it was cut.
 */
size_t text_copy(char *dst, size_t size, const char *src);

/* v in decimal into out (TEXT_U64_MAX bytes), NUL-terminated: the number of digits. */
size_t text_u64(char out[TEXT_U64_MAX], uint64_t v);
