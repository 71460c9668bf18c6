/* redact: passwords taken out of text that is logged or shown (a URL's user:password@). */
#pragma once

#include <stddef.h>

/* What a secret is replaced by. */
#define REDACTED "***"

/*
 * Replace text[from, to) by REDACTED in place (to - from >= 1): the text never grows; a
 * span shorter than the mark becomes as many '*'.
 */
void redact_span(char *text, size_t from, size_t to);

/* The password of each "://user:password@" in text, in place. */
void redact_uri_passwords(char *text);
