/* uplink_read: a DevEUI_uplink body (JSON or XML) read into struct uplink. */
#pragma once

#include <stddef.h>

#include "uplink.h"

/*
 * Give libxml2 the allocator of core/wipe (blocks wiped when freed, failures counted).
 * Once, at the start of main, after wipe_install() and before libxml2 allocates.
 */
void uplink_read_install(void);

/*
 * Parse a body as JSON ({"DevEUI_uplink":{...}}) or XML (<DevEUI_uplink>), chosen by its
 * first non-blank character. 0, or -EINVAL / -EBADMSG with a one-line reason (never a
 * key); -ENOMEM, also when an allocation counted by wipe_alloc_failures() failed while it
 * read (jansson and libxml2 may then read a body wrong without saying so). On success the
 * caller frees with uplink_clear().
 * A radio field nested deeper than UPLINK_MAX_RADIO_DEPTH is refused (-EINVAL, naming
 * it); a JSON number no integer or double holds (12345678901234567890, 1e400) is kept
 * as a string of its text, UPLINK_MAX_NUMBER_TEXTS of them at most; a string's \u0000 or
 * lone UTF-16 surrogate escape (valid JSON that jansson refuses) is read as U+FFFD, so no
 * field ever holds a NUL.
 */
int uplink_parse(const char *body, size_t len, struct uplink *ret, char *reason, size_t reasonlen);

/* uplink_parse() with jansson and libxml2 only, never uplink_fast (which must give the same
 * result: the tests compare the two). */
int uplink_parse_library(const char *body, size_t len, struct uplink *ret, char *reason,
			 size_t reasonlen);
