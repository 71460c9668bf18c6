/* hex: the hexadecimal field rules of the protocol (EUIs, keys, tokens). */
#include "hex.h"

#include <errno.h>
#include <string.h>

/* Value of one hex digit, or -1. */
static int hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool hex_valid(const char *s, size_t ndigits)
{
	if (!s)
		return false;
	for (size_t i = 0; i < ndigits; i++)
		if (hex_digit(s[i]) < 0)
			return false;
	return s[ndigits] == '\0';
}

bool hex_valid_any(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (hex_digit(*s) < 0)
			return false;
	return true;
}

void hex_upper(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = src[i];
		dst[i] = (c >= 'a' && c <= 'f') ? (char)(c - 'a' + 'A') : c;
	}
	dst[n] = '\0';
}

int hex_decode(const char *s, uint8_t *out, size_t outlen)
{
	if (!hex_valid(s, 2 * outlen))
		return -EINVAL;
	for (size_t i = 0; i < outlen; i++)
		out[i] = (uint8_t)(hex_digit(s[2 * i]) << 4 | hex_digit(s[2 * i + 1]));
	return 0;
}

void hex_encode(const uint8_t *in, size_t n, char *out)
{
	static const char digits[] = "0123456789ABCDEF";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * n] = '\0';
}
