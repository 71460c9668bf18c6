/* words: how far apart two short words are, for "did you mean" (tpactl, the config files). */
#pragma once

#include <stddef.h>

/*
 * The edit distance (Levenshtein) of a and b, letters compared regardless of case; a large
 * number for words over 31 bytes.
 */
size_t words_distance(const char *a, const char *b);
