/* utf8: checking UTF-8 text, and making text from elsewhere valid UTF-8. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Length of the valid UTF-8 sequence at s (1 to 4), reading at most max bytes, or 0 if none
 * starts there: overlong forms, surrogates and code points past U+10FFFF are not valid. A
 * NUL ends any sequence, so for a NUL-terminated string any max of 4 or more is safe.
 */
size_t utf8_len(const unsigned char *s, size_t max);

/* utf8_len(), and the sequence's code point into *ret_cp when it is valid. */
size_t utf8_decode(const unsigned char *s, size_t max, uint32_t *ret_cp);

/*
 * A copy of the n bytes at s as valid UTF-8 text (NUL-terminated, malloc()ed): each byte
 * that starts no valid sequence, a NUL included, becomes U+FFFD. NULL on ENOMEM.
 */
char *utf8_clean(const char *s, size_t n);

/*
 * The length of the longest prefix of the NUL-terminated UTF-8 text s of at most max
 * bytes that does not cut a character: for "%.*s" where "%.Ns" could leave half of one.
 */
size_t utf8_prefix(const char *s, size_t max);

/*
 * Copy the NUL-terminated UTF-8 text src into dst (size bytes, at least 1), cut between
 * characters to fit, always NUL-terminated. The length of src: size or more means cut.
 */
size_t utf8_copy(char *dst, size_t size, const char *src);

/* Make s valid UTF-8 in place: each byte that starts no valid sequence becomes '?'. */
void utf8_scrub(char *s);

/* True if the NUL-terminated s is valid UTF-8 throughout. */
bool utf8_valid(const char *s);

/* The characters (code points) of the n bytes of UTF-8 text at s. */
size_t utf8_chars(const char *s, size_t n);
