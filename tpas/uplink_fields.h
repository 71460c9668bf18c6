/*
 * uplink_fields: how a DevEUI_uplink's fields are taken into struct uplink, shared by the
 * body readers (uplink.c: JSON through jansson and XML through libxml2; uplink_fast.c:
 * the LRC's usual JSON in one pass), so that every reader checks a field the same way.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "uplink.h"

/* Write a one-line reason: returns -EINVAL. */
__attribute__((format(printf, 3, 4))) int uplink_fail(char *reason, size_t n, const char *fmt, ...);

/* Take one field by name; value is its text. 1 if taken, 0 if not ours, or -EINVAL and a
 * reason. */
int uplink_field_set(struct uplink *u, const char *name, const char *value, char *reason,
		     size_t rn);

/* Take a key envelope's two parts (either may be NULL: then -EINVAL and a reason). */
int uplink_envelope_set(struct uplink *u, const char *label, const char *aes_key, char *reason,
			size_t rn);

/* True if tpas reads the field called name, of len bytes (so it is not in radio). */
bool uplink_field_read(const char *name, size_t len);

/* The checks common to every reader once all fields are in: 0 or -EINVAL and a reason. */
int uplink_fields_check(const struct uplink *u, char *reason, size_t rn);
