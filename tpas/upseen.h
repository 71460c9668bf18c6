/*
 * upseen: the uplinks journaled since they were last moved into the journal's uplink_seen
 * table, by (DevEUI, session, FCntUp), each with its seq. An in-memory hash set owned by
 * the one thread that writes uplinks; it lets a commit touch only pages at the end of the
 * journal, and uplink_seen be filled a few thousand rows at a time, in key order.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct upseen;

/* NULL when out of memory. */
struct upseen *upseen_new(void);
void upseen_free(struct upseen *s);

/* Add a key with its seq (replacing an existing one's): 0, -EINVAL (a DevEUI longer than
 * 16 characters), -ENOMEM. */
int upseen_add(struct upseen *s, const char *dev_eui, int64_t session_id, uint32_t fcnt_up,
	       int64_t seq);

/* Whether the key is in; its seq in *ret_seq if so. */
bool upseen_find(const struct upseen *s, const char *dev_eui, int64_t session_id, uint32_t fcnt_up,
		 int64_t *ret_seq);

size_t upseen_count(const struct upseen *s);

/* Empty it (its table is kept for the next ones). */
void upseen_clear(struct upseen *s);
