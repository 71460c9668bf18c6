/* utf8: checking UTF-8 text, and making text from elsewhere valid UTF-8. */
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

size_t utf8_len(const unsigned char *s, size_t max)
{
	uint32_t cp;
	return utf8_decode(s, max, &cp);
}

size_t utf8_decode(const unsigned char *s, size_t max, uint32_t *ret_cp)
{
	if (max == 0)
		return 0;
	if (s[0] < 0x80) {
		*ret_cp = s[0];
		return 1;
	}
	size_t len;
	uint32_t cp;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > max)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
	if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	*ret_cp = cp;
	return len;
}

char *utf8_clean(const char *s, size_t n)
{
	static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
	char *out = malloc(3 * n + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		size_t l = s[i] ? utf8_len((const unsigned char *)s + i, n - i) : 0;
		if (l) {
			memcpy(out + o, s + i, l);
			o += l;
			i += l;
		} else {
			memcpy(out + o, replacement, 3);
			o += 3;
			i++;
		}
	}
	out[o] = '\0';
	return out;
}

size_t utf8_prefix(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	if (n <= max)
		return n;
	/* s[max] is the first byte left out: inside a character, leave all of it out. */
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	return max;
}

size_t utf8_chars(const char *s, size_t n)
{
	size_t chars = 0;
	for (size_t i = 0; i < n; i++)
		chars += ((unsigned char)s[i] & 0xc0) != 0x80;
	return chars;
}

size_t utf8_copy(char *dst, size_t size, const char *src)
{
	size_t len = strlen(src), n = len < size ? len : utf8_prefix(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return len;
}

bool utf8_valid(const char *s)
{
	for (size_t l; *s; s += l)
		if (!(l = utf8_len((const unsigned char *)s, 4)))
			return false;
	return true;
}

void utf8_scrub(char *s)
{
	for (size_t l; *s; s += l)
		if (!(l = utf8_len((const unsigned char *)s, 4))) {
			*s = '?';
			l = 1;
		}
}
