/* utf8: checking UTF-8 text, and making text from elsewhere valid UTF-8. */
#pragma once

#include <stddef.h>

/*
 * Length of the valid UTF-8 sequence at s (1 to 4), reading at most max bytes, or 0 if none
 * starts there: overlong forms, surrogates and code points past U+10FFFF are not valid. A
 * NUL ends any sequence, so for a NUL-terminated string any max of 4 or more is safe.
 */
size_t utf8_len(const unsigned char *s, size_t max);

/*
 * A copy of the n bytes at s as valid UTF-8 text (NUL-terminated, malloc()ed): each byte
 * that starts no valid sequence, a NUL included, becomes U+FFFD. NULL on ENOMEM.
 */
char *utf8_clean(const char *s, size_t n);
