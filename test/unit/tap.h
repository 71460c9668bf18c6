/* tap: a tiny check harness for unit tests; exits non-zero if any check failed. */
#pragma once

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int tap_failed, tap_run;

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		tap_run++;                                                                         \
		if (!(cond)) {                                                                     \
			tap_failed++;                                                              \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);   \
		}                                                                                  \
	} while (0)

#define CHECK_STR(a, b)                                                                            \
	do {                                                                                       \
		const char *tap_a = (a), *tap_b = (b);                                             \
		tap_run++;                                                                         \
		if (!tap_a || !tap_b || strcmp(tap_a, tap_b) != 0) {                               \
			tap_failed++;                                                              \
			fprintf(stderr, "%s:%d: %s is \"%s\", want \"%s\"\n", __FILE__, __LINE__,  \
				#a, tap_a ? tap_a : "(null)", tap_b ? tap_b : "(null)");           \
		}                                                                                  \
	} while (0)

#define CHECK_INT(a, b)                                                                            \
	do {                                                                                       \
		long long tap_a = (long long)(a), tap_b = (long long)(b);                          \
		tap_run++;                                                                         \
		if (tap_a != tap_b) {                                                              \
			tap_failed++;                                                              \
			fprintf(stderr, "%s:%d: %s is %lld, want %lld\n", __FILE__, __LINE__, #a,  \
				tap_a, tap_b);                                                     \
		}                                                                                  \
	} while (0)

/* Print the summary and return the exit status for main(). */
static inline int tap_done(void)
{
	printf("%d checks, %d failed\n", tap_run, tap_failed);
	return tap_failed ? 1 : 0;
}
