/* uplink_fast: the LRC's usual JSON uplink body read in one pass, without jansson. */
#pragma once

#include <stddef.h>

#include "uplink.h"

/*
 * Read body into u (zeroed, fport -1) when it is of the kind this reader takes (see
 * uplink_fast.c): 1, with u's fields and u->radio_text (compact JSON, malloc()ed) set, the
 * same as uplink.c's jansson reader would give. 0: not of that kind, or not valid; u may
 * be partly filled, and the caller wipes it and reads the body with jansson. -ENOMEM.
 */
int uplink_parse_fast(const char *body, size_t len, struct uplink *u);
