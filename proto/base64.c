/* base64: RFC 4648 base64 (standard alphabet, with padding) for QR image data. */
#include "base64.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Each character's value plus one; 0 for characters outside the alphabet. */
static const uint8_t b64_values[256] = {
    ['A'] = 1,	['B'] = 2,  ['C'] = 3,	['D'] = 4,  ['E'] = 5,	['F'] = 6,  ['G'] = 7,	['H'] = 8,
    ['I'] = 9,	['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15, ['P'] = 16,
    ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22, ['W'] = 23, ['X'] = 24,
    ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32,
    ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40,
    ['o'] = 41, ['p'] = 42, ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48,
    ['w'] = 49, ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
    ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63, ['/'] = 64,
};

/* The value of one base64 character, or -1. */
static inline int b64_value(unsigned char c)
{
	return (int)b64_values[c] - 1;
}

/* Number of base64 characters for n bytes, or SIZE_MAX on overflow. */
size_t base64_encoded_len(size_t n)
{
	size_t groups = n / 3 + (n % 3 != 0);
	if (groups > (SIZE_MAX - 1) / 4)
		return SIZE_MAX;
	return groups * 4;
}

/* Encode n bytes into a new NUL-terminated string. */
char *base64_encode(const uint8_t *in, size_t n, size_t *ret_len)
{
	size_t len = base64_encoded_len(n);
	if (len == SIZE_MAX) {
		errno = EOVERFLOW;
		return NULL;
	}
	char *out = malloc(len + 1);
	if (!out)
		return NULL;

	char *p = out;
	size_t i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*p++ = b64_alphabet[v >> 18];
		*p++ = b64_alphabet[(v >> 12) & 0x3f];
		*p++ = b64_alphabet[(v >> 6) & 0x3f];
		*p++ = b64_alphabet[v & 0x3f];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		*p++ = b64_alphabet[v >> 18];
		*p++ = b64_alphabet[(v >> 12) & 0x3f];
		*p++ = '=';
		*p++ = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		*p++ = b64_alphabet[v >> 18];
		*p++ = b64_alphabet[(v >> 12) & 0x3f];
		*p++ = b64_alphabet[(v >> 6) & 0x3f];
		*p++ = '=';
	}
	*p = '\0';
	if (ret_len)
		*ret_len = len;
	return out;
}

/* Decode a strict base64 string into a new buffer. */
int base64_decode(const char *s, size_t len, uint8_t **ret, size_t *ret_len)
{
	if (!s || len % 4 != 0)
		return -EINVAL;

	size_t pad = 0;
	if (len > 0 && s[len - 1] == '=')
		pad = (len > 1 && s[len - 2] == '=') ? 2 : 1;
	size_t n = len / 4 * 3 - pad;

	uint8_t *out = malloc(n + 1);
	if (!out)
		return -ENOMEM;

	uint8_t *p = out;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		size_t data = last ? 4 - pad : 4;
		uint32_t v = 0;
		for (size_t j = 0; j < 4; j++) {
			int d = 0;
			if (j < data) {
				d = b64_value((unsigned char)s[i + j]);
				if (d < 0)
					goto fail;
			} else if (s[i + j] != '=') {
				goto fail;
			}
			v = v << 6 | (uint32_t)d;
		}
		/* Reject non-zero bits after the last byte: only canonical encodings. */
		if ((pad == 2 && last && (v & 0xffff)) || (pad == 1 && last && (v & 0xff)))
			goto fail;
		*p++ = (uint8_t)(v >> 16);
		if (data > 2)
			*p++ = (uint8_t)(v >> 8);
		if (data > 3)
			*p++ = (uint8_t)v;
	}
	*p = '\0';
	*ret = out;
	*ret_len = n;
	return 0;

fail:
	free(out);
	return -EINVAL;
}
