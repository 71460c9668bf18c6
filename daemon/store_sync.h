/*
 * store_sync: the store's blocking reads, for tools, tests and start-up. On PostgreSQL each
 * makes a round trip on a connection of its own; the daemon's handlers use the _async
 * forms in store.h instead, so that no store call blocks the loop. Included only by the
 * files that may block: the tests, keypool.c (its pairs are loaded before tpad serves)
 * and label.c (the label cache, read only on SQLite: a local file).
 */
#pragma once

#include "store.h"

/* Read the record of dev_eui (either case) into *ret, AppKey decrypted; -ENOENT if none. */
int store_get(struct store *s, const char *dev_eui, struct store_record *ret);

/* Call fn for each recorded attempt of dev_eui, in order; 0 or a negative errno. */
int store_attempt_list(struct store *s, const char *dev_eui,
		       int (*fn)(const struct store_attempt *a, void *arg), void *arg);

/*
 * Call fn for up to limit records (0: all) whose state is state (-1: any) and whose DevEUI
 * sorts after after (NULL or "": from the start), in DevEUI order. fn returning non-zero
 * stops the listing and store_list returns that value; otherwise 0 or a negative errno.
 */
int store_list(struct store *s, int state, const char *after, size_t limit,
	       int (*fn)(const struct store_record *r, void *arg), void *arg);

/* Fill counts[STORE_N_STATES] with the number of rows in each state. */
int store_count(struct store *s, uint64_t counts[STORE_N_STATES]);

/*
 * Call fn for up to limit audit entries (0: all) of dev_eui (NULL: every device) with an
 * id above after_id, oldest first. Same stopping rule as store_list.
 */
int store_audit_list(struct store *s, const char *dev_eui, int64_t after_id, size_t limit,
		     int (*fn)(const struct store_audit_entry *e, void *arg), void *arg);

/* Read dev_eui's stored label into *ret; -ENOENT if none. */
int store_label_get(struct store *s, const char *dev_eui, struct store_label *ret);

/* The cloud-HSM AppKey pool's reads: see store_key_pool_put in store.h. */
int store_key_pool_load(struct store *s, size_t max,
			int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg),
			void *arg);
int store_key_pool_find(struct store *s, const uint8_t app_key[16], uint8_t ret_hsm[16]);
