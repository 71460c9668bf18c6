/* hex: the hexadecimal field rules of the protocol (EUIs, keys, tokens). */
#include "hex.h"

#include <errno.h>
#include <string.h>

/* Each byte's value as a hex digit plus one, 0 for none (a table: every uplink's Token
 * and payload pass here). */
static const unsigned char digit_of[256] = {
    ['0'] = 1,	['1'] = 2,  ['2'] = 3,	['3'] = 4,  ['4'] = 5,	['5'] = 6,  ['6'] = 7,	['7'] = 8,
    ['8'] = 9,	['9'] = 10, ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int hex_digit(char c)
{
	return (int)digit_of[(unsigned char)c] - 1;
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
