/* hex: the hexadecimal field rules of the protocol (EUIs, keys, tokens). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HEX_EUI 16      /* DevEUI, JoinEUI */
#define HEX_TKM_INFO 20 /* TKM_INFO */
#define HEX_APP_KEY 32  /* AppKey */
#define HEX_PROFILE 8   /* ProfileID */

/* Value of one hex digit (either case), or -1. */
int hex_digit(char c);

/* True if s is exactly ndigits hex digits (either case) and nothing else. */
bool hex_valid(const char *s, size_t ndigits);

/* True if s is a non-empty string of hex digits (either case). */
bool hex_valid_any(const char *s);

/* Copy n characters of src to dst upper-cased and NUL-terminate dst (size n + 1). */
void hex_upper(char *dst, const char *src, size_t n);

/* Decode 2 * outlen hex digits of s into out; -EINVAL if s is not exactly that. */
int hex_decode(const char *s, uint8_t *out, size_t outlen);

/* Encode n bytes as 2n upper-case hex digits plus NUL into out (size 2n + 1). */
void hex_encode(const uint8_t *in, size_t n, char *out);
