/* text: the bounded copy and the decimal number that hot paths write without printf. */
#include "text.h"

#include <string.h>

size_t text_copy(char *dst, size_t size, const char *src)
{
	size_t len = strlen(src), n = len < size ? len : size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return len;
}

size_t text_u64(char out[TEXT_U64_MAX], uint64_t v)
{
	char rev[TEXT_U64_MAX];
	size_t n = 0;
	do {
		rev[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (size_t i = 0; i < n; i++)
		out[i] = rev[n - 1 - i];
	out[n] = '\0';
	return n;
}
