/* redact: passwords taken out of text that is logged or shown (a URL's user:password@). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* What a secret is replaced by. */
#define REDACTED "***"

/*
 * Replace text[from, to) by REDACTED in place (to - from >= 1): the text never grows; a
 * span shorter than the mark becomes as many '*'.
 */
void redact_span(char *text, size_t from, size_t to);

/*
 * Whether the first URI in text has a userinfo ("scheme://user@host"); with_password, only
 * one with a password ("user:password@"). It ends at the last '@' after the "://", as a
 * password may hold a raw '@' or even a space: a check errs towards "it may".
 */
bool redact_uri_has_userinfo(const char *text, bool with_password);

/* The password of each "://user:password@" in text, in place. */
void redact_uri_passwords(char *text);

/*
 * Each occurrence of secret in text, in place (a secret under 4 bytes is not looked for:
 * it would blank ordinary words). For what a peer may quote back: a client secret, a token.
 */
void redact_secret(char *text, const char *secret);

/*
 * The credential after each "Bearer " (any case) and each JSON Web Token ("eyJ" and at
 * least 16 more base64url characters or dots), in place: tokens a peer quotes that tpad no
 * longer holds.
 */
void redact_tokens(char *text);
