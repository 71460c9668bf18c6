/* store: the device store interface (records, states, sealed AppKeys, audit), backend-neutral. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct store;

#define STORE_KEY_LEN 32 /* the store-key credential: 32 bytes (64 hex digits) */

enum store_state {
	STORE_PENDING, /* an import was or may be sent; its outcome is not settled */
	STORE_ISSUED,  /* the cloud's token is stored */
	STORE_FAILED,  /* every import attempt was never sent or definitely refused */
	STORE_FOREIGN, /* the cloud holds the device from an import that was not ours */
	STORE_RETIRED, /* deleted from the cloud after it was issued (scrapped) */
};
#define STORE_N_STATES 5

/* One device. Strings are NUL-terminated; "" means none. EUIs etc. are upper-case hex. */
struct store_record {
	char dev_eui[17];
	char join_eui[17];
	char profile_id[9];
	char serial[65];
	char tkm_info[21];
	uint8_t app_key[16]; /* clear only in memory; sealed in the store */
	bool has_app_key;
	bool app_key_generated;
	enum store_state state;
	char owner_token[129]; /* "" until ISSUED */
	char ref[129];	       /* upstream reference */
	char last_error[256];
	char origin[16]; /* "activate" | "import" */
	uint32_t uid;	 /* station peer credentials */
	int32_t pid;
	int64_t created_at; /* unix ms */
	int64_t updated_at; /* unix ms */
	uint32_t attempts;  /* import attempts recorded so far */
	int64_t maybe_at;   /* unix ms of the last attempt that may have reached the cloud; 0 none */
	char instance[65];  /* the tpad that wrote the row last (store.instance) */
	/*
	 * PostgreSQL: another tpad whose claim on the device (store.lease) is live, and for
	 * how many more ms by the database's clock; "" and 0 when none (always on SQLite).
	 */
	char lease_owner[65];
	int64_t lease_left_ms;
};

/*
 * One import attempt, recorded before its first byte is sent and updated with what became
 * of it. outcome: "sending" (may have reached the cloud), "not-sent", "refused" (a
 * definite no), "landed" (token received), "disproved" (the query, trusted after
 * upstream.settle-after, says it never landed), "conflict" (409).
 */
struct store_attempt {
	uint32_t n; /* 1, 2, ... per device */
	int64_t at; /* unix ms when it was recorded */
	char instance[65];
	char digest[65]; /* SHA-256 (hex) of the record sent */
	char outcome[16];
};

/* Bytes of an audit entry's outcome, NUL included: a print failure's whole reason fits. */
#define STORE_AUDIT_OUTCOME_MAX 256

/* One hand-out of a record: who asked, when, through which method, with what outcome. */
struct store_audit_entry {
	int64_t id; /* increasing */
	char dev_eui[17];
	char method[64];
	uint32_t uid;
	int32_t pid;
	int64_t at; /* unix ms */
	char outcome[STORE_AUDIT_OUTCOME_MAX];
};

enum store_backend { STORE_SQLITE, STORE_POSTGRESQL };

struct store_options {
	enum store_backend backend;
	const char *path;     /* SQLite: database file, created mode 0600; locked while open */
	const char *url;      /* PostgreSQL: libpq connection URI */
	const char *password; /* PostgreSQL: NULL for libpq's own (passfile, PGPASSWORD) */
	unsigned connections; /* PostgreSQL: writer connections + 1 reader; 0: 2 */
	uint32_t lease_ms;    /* PostgreSQL: how long a claim on a device lives; 0: 30 s */
	const char *instance; /* names this tpad in rows, attempts and audit entries */
	const uint8_t *key; /* STORE_KEY_LEN bytes; the store keeps its own copy */
	size_t key_len;
	uint32_t commit_delay_ms; /* group commit window; 0: commit as soon as the writer is free */
	size_t max_queue;	  /* queued writes before -EAGAIN; 0: 16384 */
	/* store_check() of a copy to restore: it must already be a store (schema 1 or more),
	 * not an empty file or another program's database, which a start would take as new. */
	bool existing;
};

/* Counters for Status and metrics; each commit is one fsync batch. */
struct store_stats {
	uint64_t commits;	 /* transactions committed */
	uint64_t ops;		 /* writes in committed transactions (audit rows included) */
	uint64_t ops_rejected;	 /* writes refused alone (-EEXIST, -ENOENT), batch committed */
	uint64_t batch_failures; /* transactions rolled back (disk full, I/O error...) */
	uint64_t ops_failed;	 /* writes lost with a rolled-back transaction */
	uint64_t max_batch;	 /* most writes in one transaction */
	uint64_t queued;	 /* writes waiting for the writer now */
	int last_error;		 /* negative errno of the last failed transaction, 0 if none */
	char last_reason[512];	 /* its reason */
	/* PostgreSQL */
	bool down;		       /* the database cannot be reached now */
	uint64_t outages;	       /* times it became unreachable (down false to true) */
	uint32_t connections;	       /* connections up now */
	uint64_t lease_takeovers;      /* claims taken over from another tpad's expired lease */
	uint64_t lease_renewals;       /* claims extended while their import ran */
	uint64_t claims_refused;       /* writes refused: another tpad holds the claim */
	uint64_t reconnects;	       /* connections made again after a loss */
	uint64_t latency_buckets[8];   /* commits by latency: <=1, 2, 5, 10, 20, 50, 100 ms, more */
	uint64_t latency_sum_us;       /* total commit latency */
};

/*
 * Called on the loop thread, exactly once per accepted write, never from inside the call
 * that submitted it. err 0: durably committed (fsynced). Otherwise a negative errno and a
 * short reason valid during the call: -EEXIST (insert of a known DevEUI), -ENOENT
 * (update of an unknown one), -ENOSPC, -EIO, -EROFS, -EBUSY... (the whole transaction
 * was rolled back; nothing of it was written), -ESHUTDOWN never (close completes writes).
 * PostgreSQL also: -EALREADY (another tpad holds the device's claim, or recorded an attempt
 * since the row was read: nothing of this write was done; read the row again), -EIO with
 * the reason while the database cannot be reached (writes fail fast, nothing is kept).
 */
typedef void store_done_fn(int err, const char *reason, void *arg);

/*
 * Open (creating if needed) the store and start its writer. Completions are delivered
 * through base. Refuses a store written by a newer tpad (-ENOTSUP) and a key that does
 * not match the one the store was created with (-EBADMSG). On failure writes one line
 * saying why to err (size errlen).
 */
int store_open(struct event_base *base, const struct store_options *o, struct store **ret,
	       char *err, size_t errlen);

/*
 * What store_open() would refuse of a SQLite store, found without changing the file (read
 * only, no lock, beside a running tpad): a store of a newer tpad (-ENOTSUP), a key that
 * does not open it (-EBADMSG). 0 for a file not made yet and for PostgreSQL, which only a
 * start checks (--check-config connects to nothing).
 */
int store_check(const struct store_options *o, char *err, size_t errlen);

/*
 * Stop accepting writes, commit what is queued, run the pending callbacks, stop the
 * writer and free everything, wiping the key. Accepts NULL. Not from a store callback.
 */
void store_close(struct store *s);


/*
 * The result of store_get_async: err 0 and rec (valid during the call, AppKey in clear,
 * wiped after), or -ENOENT, or another negative errno with a reason.
 */
typedef void store_get_fn(int err, const struct store_record *rec, const char *reason,
			  void *arg);

/*
 * Read the record of dev_eui without blocking the loop; cb is called exactly once from
 * the loop, never inside this call, and (PostgreSQL) after every write of this device
 * submitted before. Returns 0, or a negative errno without calling cb (-EINVAL,
 * -ENOMEM, -ESHUTDOWN).
 */
int store_get_async(struct store *s, const char *dev_eui, store_get_fn *cb, void *arg);

/*
 * The answer of an asynchronous read, valid during its callback only (AppKeys in clear
 * are wiped after it). n counts the records, audit entries or attempts, by the read.
 */
struct store_rows {
	size_t n;
	struct store_record *records;	 /* store_list_async */
	struct store_audit_entry *audit; /* store_audit_list_async */
	struct store_attempt *attempts;	 /* store_attempt_list_async */
	uint64_t counts[STORE_N_STATES]; /* store_count_async */
	uint8_t hsm_key[16];		 /* store_key_pool_find_async */
};

/*
 * The end of an asynchronous read: err 0 and rows, or a negative errno and a reason
 * (rows NULL): -ENOENT (store_key_pool_find_async: no such pair), -EIO while the database
 * cannot be reached, -EUCLEAN for a row that cannot be read...
 */
typedef void store_rows_fn(int err, const char *reason, const struct store_rows *rows,
			   void *arg);

/*
 * Reads that never block the loop: the same as store_list, store_count, store_audit_list,
 * store_attempt_list and store_key_pool_find, answered through cb, exactly once, from the
 * loop, never inside the call. PostgreSQL runs them on its reader connection (non-blocking,
 * libevent); SQLite reads its local file (WAL: readers never wait for the writer) and
 * defers the answer. Each returns 0, or a negative errno without calling cb (-EINVAL,
 * -ENOMEM, -EAGAIN, -ESHUTDOWN). The daemon uses only these and store_get_async; the
 * synchronous forms are for tools, tests and start-up.
 */
int store_list_async(struct store *s, int state, const char *after, size_t limit,
		     store_rows_fn *cb, void *arg);
int store_count_async(struct store *s, store_rows_fn *cb, void *arg);

/* As store_list_async, and on SQLite the rows' labels read for store_label_cached (Export). */
int store_list_labels_async(struct store *s, int state, const char *after, size_t limit,
			    store_rows_fn *cb, void *arg);
int store_audit_list_async(struct store *s, const char *dev_eui, int64_t after_id, size_t limit,
			   store_rows_fn *cb, void *arg);
int store_attempt_list_async(struct store *s, const char *dev_eui, store_rows_fn *cb, void *arg);
int store_key_pool_find_async(struct store *s, const uint8_t app_key[16], store_rows_fn *cb,
			      void *arg);

/*
 * Queue a new row for r (fields validated: -EINVAL). created_at and updated_at are set
 * to now unless r->created_at is set. The AppKey is sealed before it is queued.
 * Returns 0 when queued (cb will be called), or a negative errno with cb not called:
 * -EINVAL, -ENOMEM, -EAGAIN (queue full), -ESHUTDOWN (closing).
 */
int store_insert(struct store *s, const struct store_record *r, store_done_fn *cb, void *arg);

/* Queue the replacement of the row of r->dev_eui (created_at kept, updated_at now). */
int store_update(struct store *s, const struct store_record *r, store_done_fn *cb, void *arg);

/*
 * Queue the row write (insert when insert, else update) and, in the same transaction, the
 * attempt a (inserted, or replaced when one with its number exists). a may be NULL.
 */
int store_write_attempt(struct store *s, const struct store_record *r, bool insert,
			const struct store_attempt *a, store_done_fn *cb, void *arg);


/*
 * PostgreSQL: extend this tpad's claim on dev_eui by store.lease from the database's now,
 * if it still holds it (a PENDING row it wrote whose claim no other tpad took over); into
 * the next commit of the device, no callback. Called while an import of the device runs,
 * so that a slow import never loses its claim. SQLite: nothing to do (one tpad per file).
 */
int store_claim_renew(struct store *s, const char *dev_eui);

/* Queue an audit row into the next commit; there is no callback. */
int store_audit(struct store *s, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		const char *outcome);




#define STORE_LABEL_TEXT_MAX 1024 /* bytes of a label text, NUL included */
#define STORE_LABEL_MAX 4096	  /* bytes of a stored QR matrix */
#define STORE_IMAGE_MAX 16384	  /* bytes of a stored label image */

/*
 * A device's label, ready to print: the text it encodes, the QR code's error correction
 * level and matrix (the costly part to compute), and optionally one image drawn from it
 * with the options named by image_opts ("" and image_len 0 when none).
 */
struct store_label {
	char text[STORE_LABEL_TEXT_MAX];
	int ec;
	uint8_t matrix[STORE_LABEL_MAX];
	size_t matrix_len;
	char image_opts[32];
	uint8_t image[STORE_IMAGE_MAX];
	size_t image_len;
};

/*
 * Queue l as dev_eui's label into the next commit, replacing any earlier one; no
 * callback. Labels are a cache of what the record determines: losing one costs only the
 * time to make it again.
 */
int store_label_put(struct store *s, const char *dev_eui, const struct store_label *l);

/*
 * dev_eui's label as the loop knows it, without reading the store: on SQLite the labels
 * read with their rows on the reader thread (store_get_async, store_list_labels_async),
 * at most 1,024, each taken by the first call that finds it. -ENOENT for any other (a
 * label put is not kept here; always -ENOENT on PostgreSQL).
 */
int store_label_cached(struct store *s, const char *dev_eui, struct store_label *ret);


/* "sqlite" or "postgresql". */
const char *store_backend_name(struct store *s);

/*
 * The cloud-HSM AppKey pool (table app_key_pool): each pair AppKey || hsmEncryptedAppKey
 * sealed with the store key, found by a digest of the AppKey (never the key itself).
 * store_key_pool_put queues a new pair and store_key_pool_taken marks one handed out to
 * dev_eui, both into the next commit with no callback, or fail at once (-EIO) while the
 * database cannot be reached. The mark goes on dev_eui's queue: a key marked before the
 * device row that uses it is committed no later than that row (PostgreSQL's writers are
 * one per group of devices, so a mark on another writer would not be ordered). store_key_pool_load calls
 * fn for up to max pairs not handed out, oldest first (fn returning non-zero stops).
 * store_key_pool_find gives the hsmEncryptedAppKey of any pair by its AppKey (-ENOENT).
 */
int store_key_pool_put(struct store *s, const uint8_t app_key[16], const uint8_t hsm_key[16]);
int store_key_pool_taken(struct store *s, const uint8_t app_key[16], const char *dev_eui);

/* Copy the counters into *ret. */
void store_stats(struct store *s, struct store_stats *ret);

/*
 * True from a transaction that failed (disk full, I/O error, database gone) until the next
 * one commits, as seen since the last call (each caller looks at least once a second).
 */
bool store_failing(struct store *s);

/*
 * Status object: path, rows by state (from counts, as store_count gives them; NULL: rows
 * null), commits, ops, mean ops per commit, last error.
 */
json_t *store_status_json(struct store *s, const uint64_t counts[STORE_N_STATES]);

/* "PENDING", "ISSUED", "FAILED", "FOREIGN", "RETIRED"; NULL for anything else. */
const char *store_state_name(enum store_state st);

/* Parse a state name; -EINVAL if unknown. */
int store_state_parse(const char *name, enum store_state *ret);

/*
 * For tests: cap the database at pages pages (0: lift the cap) from the next transaction
 * on, so that writes fail as on a full disk. The file never shrinks below its size.
 */
void store_test_set_max_pages(struct store *s, uint32_t pages);
