/* redact: passwords taken out of text that is logged or shown (a URL's user:password@). */
#include "redact.h"

#include <string.h>

/* Where a token that started at p ends: a quote, white space or the end. */
static size_t token_len(const char *p)
{
	return strcspn(p, "\"' \t\r\n");
}

void redact_span(char *text, size_t from, size_t to)
{
	size_t rl = strlen(REDACTED);
	if (to - from < rl) {
		/* Shorter than the mark: the mark is cut to the secret's length, never longer. */
		memset(text + from, '*', to - from);
		return;
	}
	memcpy(text + from, REDACTED, rl);
	memmove(text + from + rl, text + to, strlen(text + to) + 1);
}

void redact_uri_passwords(char *text)
{
	for (char *p = strstr(text, "://"); p; p = strstr(p, "://")) {
		char *auth = p + 3;
		size_t n = token_len(auth);
		char *at = NULL;
		for (size_t i = 0; i < n; i++)
			if (auth[i] == '@')
				at = auth + i; /* the last one: a password may hold a raw '@' */
		char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon && at > colon + 1) {
			redact_span(text, (size_t)(colon + 1 - text), (size_t)(at - text));
			p = colon + 1;
		} else {
			p = auth;
		}
	}
}
