/* redact: passwords taken out of text that is logged or shown (a URL's user:password@). */
#include "redact.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

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

/*
 * The '@' that ends the userinfo of the URI whose authority starts at auth and may run n
 * bytes, or NULL: the last '@' in them (a password may hold a raw '@').
 */
static const char *userinfo_at(const char *auth, size_t n)
{
	const char *at = NULL;
	for (size_t i = 0; i < n; i++)
		if (auth[i] == '@')
			at = auth + i;
	return at;
}

bool redact_uri_has_userinfo(const char *text, bool with_password)
{
	const char *p = strstr(text, "://");
	const char *at = p ? userinfo_at(p + 3, strlen(p + 3)) : NULL;
	if (!at)
		return false;
	return !with_password || memchr(p + 3, ':', (size_t)(at - (p + 3))) != NULL;
}

void redact_uri_passwords(char *text)
{
	for (char *p = strstr(text, "://"); p; p = strstr(p, "://")) {
		char *auth = p + 3;
		char *at = (char *)userinfo_at(auth, token_len(auth));
		char *colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
		if (colon && at > colon + 1) {
			redact_span(text, (size_t)(colon + 1 - text), (size_t)(at - text));
			p = colon + 1;
		} else {
			p = auth;
		}
	}
}

void redact_secret(char *text, const char *secret)
{
	size_t n = secret ? strlen(secret) : 0;
	if (n < 4)
		return;
	for (char *p = strstr(text, secret); p; p = strstr(p, secret)) {
		size_t at = (size_t)(p - text);
		redact_span(text, at, at + n);
		p = text + at + (n < strlen(REDACTED) ? n : strlen(REDACTED));
	}
}

/* Length of the base64url (and '.') run at p. */
static size_t b64url_len(const char *p)
{
	size_t n = 0;
	while (isalnum((unsigned char)p[n]) || p[n] == '-' || p[n] == '_' || p[n] == '.' ||
	       p[n] == '+' || p[n] == '/' || p[n] == '=' || p[n] == '~')
		n++;
	return n;
}

void redact_tokens(char *text)
{
	size_t rl = strlen(REDACTED);
	for (size_t i = 0; text[i];) {
		size_t at = 0, n = 0;
		if (strncasecmp(text + i, "bearer ", 7) == 0) {
			at = i + 7;
			while (text[at] == ' ')
				at++;
			n = b64url_len(text + at);
		} else if (strncmp(text + i, "eyJ", 3) == 0 &&
			   (i == 0 || !isalnum((unsigned char)text[i - 1]))) {
			at = i;
			n = b64url_len(text + i);
			if (n < 19)
				n = 0;
		}
		if (n == 0) { /* ("***" holds no base64url character: a mark is never taken) */
			i++;
			continue;
		}
		redact_span(text, at, at + n);
		i = at + (n < rl ? n : rl);
	}
}
