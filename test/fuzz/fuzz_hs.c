/*
 * Fuzz target for print_hs_parse(): any bytes as a printer's answer to ~HS. A parse that
 * succeeds uses no more than it was given and parses the same from exactly those bytes;
 * a shorter prefix never parses to something else; the description always fits.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "print.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Field by field: padding bytes are not part of the answer. */
static int hs_same(const struct print_hs *a, const struct print_hs *b)
{
	return a->paper_out == b->paper_out && a->paused == b->paused &&
	       a->buffer_full == b->buffer_full && a->under_temp == b->under_temp &&
	       a->over_temp == b->over_temp && a->head_open == b->head_open &&
	       a->ribbon_out == b->ribbon_out && a->formats_in_buffer == b->formats_in_buffer &&
	       a->labels_remaining == b->labels_remaining;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	struct print_hs hs, again;
	size_t used = 0, used2 = 0;
	int r = print_hs_parse(buf, size, &hs, &used);
	if (r != 0 && r != -EAGAIN && r != -EBADMSG)
		abort();
	if (r != 0)
		return 0;
	if (used == 0 || used > size)
		abort();
	if (print_hs_parse(buf, used, &again, &used2) != 0 || used2 != used ||
	    !hs_same(&hs, &again))
		abort();
	/* One byte short of its last string's end can only need more (or be refused). */
	size_t cut = used;
	while (cut > 0 && (buf[cut - 1] == '\r' || buf[cut - 1] == '\n'))
		cut--;
	if (cut > 0 && print_hs_parse(buf, cut - 1, &again, &used2) == 0)
		abort();
	char why[160];
	int n = print_hs_describe(&hs, why, sizeof(why));
	if (n < 0 || strlen(why) >= sizeof(why) || (n == 0) != (strcmp(why, "ready") == 0) ||
	    (n > 0) != (print_hs_reason(&hs) != 0))
		abort();
	return 0;
}
