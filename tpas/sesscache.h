/*
 * sesscache: the sessions tpas keeps unsealed in memory, found by the AppSKey field that
 * carried their key (its kind, KEK label and hex digits: the text whose SHA-256 is the
 * session's fingerprint in the journal) and the device. An uplink of a cached session
 * costs no fingerprint, no journal read and no unsealing.
 *
 * A set-associative table: SESSCACHE_WAYS entries per set, chosen by a hash of the field
 * and the device; a full set gives up its least recently used entry. Entries are wiped
 * when replaced and when the cache is freed. Owned by the event loop's thread.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "journal.h"
#include "uplink.h"

#define SESSCACHE_WAYS 8
/* "ecb:" or "kw:", the KEK label, ":", 32 or 48 hex digits, NUL. */
#define SESSCACHE_FIELD_MAX (4 + UPLINK_MAX_LABEL + 1 + 48 + 1)

struct sesscache;

struct sesscache_stats {
	uint64_t hits, misses, replaced;
	size_t entries, capacity;
};

/* A cache of at least capacity sessions (at least SESSCACHE_WAYS); NULL when out of memory. */
struct sesscache *sesscache_new(size_t capacity);
void sesscache_free(struct sesscache *c);

/* The session of (field, customer_id, dev_eui) into *ret, if cached. */
bool sesscache_get(struct sesscache *c, const char *field, const char *customer_id,
		   const char *dev_eui, struct as_session *ret);

/* Cache s as the session of field (s's own CustomerID and DevEUI), replacing what it had. */
void sesscache_put(struct sesscache *c, const char *field, const struct as_session *s);

/* The cached session of field for (customer_id, dev_eui), to update in place, if it is the
 * session id; NULL otherwise. */
struct as_session *sesscache_session(struct sesscache *c, const char *field,
				     const char *customer_id, const char *dev_eui, int64_t id);

void sesscache_get_stats(const struct sesscache *c, struct sesscache_stats *ret);
