/* words: how far apart two short words are, for "did you mean". */
#include "words.h"

#include <ctype.h>
#include <string.h>

size_t words_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	if (la > 31 || lb > 31)
		return 99;
	size_t d[32][32];
	for (size_t i = 0; i <= la; i++)
		d[i][0] = i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = j;
	for (size_t i = 1; i <= la; i++)
		for (size_t j = 1; j <= lb; j++) {
			/* Case is free: "URL" is a typo of "url", "--JSON" of "--json". */
			size_t sub = d[i - 1][j - 1] + (tolower((unsigned char)a[i - 1]) !=
							tolower((unsigned char)b[j - 1]));
			size_t del = d[i - 1][j] + 1, ins = d[i][j - 1] + 1;
			d[i][j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
		}
	return d[la][lb];
}
