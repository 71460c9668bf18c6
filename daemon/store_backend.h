/* store_backend: the functions each store backend (SQLite, PostgreSQL) gives daemon/store.c. */
#pragma once

#include "store.h"

struct sqlite_store;
struct pg_store;

/* Every function has the meaning of its store_* namesake in store.h. */
#define STORE_BACKEND_DECLARE(T, p)                                                                \
	int p##_open(struct event_base *base, const struct store_options *o, struct T **ret,      \
		     char *err, size_t errlen);                                                    \
	void p##_close(struct T *s);                                                               \
	int p##_get(struct T *s, const char *dev_eui, struct store_record *ret);                  \
	int p##_write_attempt(struct T *s, const struct store_record *r, bool insert,             \
			      const struct store_attempt *a, store_done_fn *cb, void *arg);        \
	int p##_attempt_list(struct T *s, const char *dev_eui,                                     \
			     int (*fn)(const struct store_attempt *a, void *arg), void *arg);      \
	int p##_audit(struct T *s, const char *dev_eui, const char *method, uint32_t uid,          \
		      int32_t pid, const char *outcome);                                           \
	int p##_list(struct T *s, int state, const char *after, size_t limit,                     \
		     int (*fn)(const struct store_record *r, void *arg), void *arg);               \
	int p##_count(struct T *s, uint64_t counts[STORE_N_STATES]);                               \
	int p##_audit_list(struct T *s, const char *dev_eui, int64_t after_id, size_t limit,      \
			   int (*fn)(const struct store_audit_entry *e, void *arg), void *arg);    \
	int p##_label_put(struct T *s, const char *dev_eui, const struct store_label *l);          \
	int p##_label_get(struct T *s, const char *dev_eui, struct store_label *ret);             \
	void p##_stats(struct T *s, struct store_stats *ret);                                      \
	json_t *p##_status_json(struct T *s);                                                     \
	int p##_key_pool_put(struct T *s, const uint8_t app_key[16], const uint8_t hsm_key[16]);  \
	int p##_key_pool_taken(struct T *s, const uint8_t app_key[16], const char *dev_eui);       \
	int p##_key_pool_load(struct T *s, size_t max,                                             \
			      int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16],      \
					void *arg),                                                \
			      void *arg);                                                          \
	int p##_key_pool_find(struct T *s, const uint8_t app_key[16], uint8_t ret_hsm[16]);

/* store_check() for a SQLite store: opened read only, nothing of it changes. */
int sqlite_store_check(const struct store_options *o, char *err, size_t errlen);

/* True if s is NUL-terminated within size bytes. */
bool store_fits(const char *s, size_t size);

/*
 * A record a backend may write: every hex field the right length (TKM_INFO may be empty),
 * every text NUL-terminated in its field, a known state and origin. 0 or -EINVAL.
 */
int store_record_check(const struct store_record *r);

/* An attempt a backend may write: numbered from 1, digest and outcome set. 0 or -EINVAL. */
int store_attempt_check(const struct store_attempt *a);

/* Write a formatted reason into err (size errlen) when the caller gave room for one. */
void store_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

STORE_BACKEND_DECLARE(sqlite_store, sqlite_store)
STORE_BACKEND_DECLARE(pg_store, pg_store)

int pg_store_get_async(struct pg_store *s, const char *dev_eui, store_get_fn *cb, void *arg);
int pg_store_claim_renew(struct pg_store *s, const char *dev_eui);
int pg_store_list_async(struct pg_store *s, int state, const char *after, size_t limit,
			store_rows_fn *cb, void *arg);
int pg_store_count_async(struct pg_store *s, store_rows_fn *cb, void *arg);
int pg_store_audit_list_async(struct pg_store *s, const char *dev_eui, int64_t after_id,
			      size_t limit, store_rows_fn *cb, void *arg);
int pg_store_attempt_list_async(struct pg_store *s, const char *dev_eui, store_rows_fn *cb,
				void *arg);
int pg_store_key_pool_find_async(struct pg_store *s, const uint8_t app_key[16],
				 store_rows_fn *cb, void *arg);
void sqlite_store_test_set_max_pages(struct sqlite_store *s, uint32_t pages);

/*
 * SQLite's reads off the loop: fn runs on the store's reader thread with its own
 * connection (rd, for the sqlite_reader_* calls below; NULL when the store closes before
 * the read began: fn then fails it without reading), then done on the loop thread, in
 * the order submitted. 0, or -ESHUTDOWN once the store is closing, -EAGAIN when as many
 * reads wait as the write queue may hold (store_options.max_queue), -ENOMEM.
 */
struct sqlite_reader;
typedef void sqlite_read_fn(struct sqlite_reader *rd, void *arg);
typedef void sqlite_read_done_fn(void *arg);
int sqlite_store_read_async(struct sqlite_store *s, sqlite_read_fn *fn, sqlite_read_done_fn *done,
			    void *arg);
/* The same meaning as the sqlite_store_* namesakes, on the given connection. */
int sqlite_reader_get(struct sqlite_reader *rd, const char *dev_eui, struct store_record *ret);
int sqlite_reader_list(struct sqlite_reader *rd, int state, const char *after, size_t limit,
		       int (*fn)(const struct store_record *r, void *arg), void *arg);
int sqlite_reader_attempt_list(struct sqlite_reader *rd, const char *dev_eui,
			       int (*fn)(const struct store_attempt *a, void *arg), void *arg);
int sqlite_reader_count(struct sqlite_reader *rd, uint64_t counts[STORE_N_STATES]);
int sqlite_reader_audit_list(struct sqlite_reader *rd, const char *dev_eui, int64_t after_id,
			     size_t limit, int (*fn)(const struct store_audit_entry *e, void *arg),
			     void *arg);
int sqlite_reader_key_pool_find(struct sqlite_reader *rd, const uint8_t app_key[16],
				uint8_t ret_hsm[16]);
int sqlite_reader_label_get(struct sqlite_reader *rd, const char *dev_eui, struct store_label *ret);

/*
 * The answer of an asynchronous read, built by either backend: append one entry (cap: the
 * entries allocated, 0 at first; -ENOMEM), and free it all, wiping the records.
 */
int store_rows_add_record(struct store_rows *rows, size_t *cap, const struct store_record *r);
int store_rows_add_audit(struct store_rows *rows, size_t *cap, const struct store_audit_entry *e);
int store_rows_add_attempt(struct store_rows *rows, size_t *cap, const struct store_attempt *a);
void store_rows_clear(struct store_rows *rows);

/*
 * The row key of a pooled AppKey in either backend: SHA-256 over a fixed label and the
 * key, so the key itself is never a column.
 */
void store_key_digest(const uint8_t app_key[16], uint8_t out[32]);
