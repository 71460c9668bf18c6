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

/* One hand-out of a record: who asked, when, through which method, with what outcome. */
struct store_audit_entry {
	int64_t id; /* increasing */
	char dev_eui[17];
	char method[64];
	uint32_t uid;
	int32_t pid;
	int64_t at; /* unix ms */
	char outcome[128];
};

struct store_options {
	const char *path;     /* database file, created mode 0600; locked while open */
	const char *instance; /* names this tpad in rows, attempts and audit entries */
	const uint8_t *key; /* STORE_KEY_LEN bytes; the store keeps its own copy */
	size_t key_len;
	uint32_t commit_delay_ms; /* group commit window; 0: commit as soon as the writer is free */
	size_t max_queue;	  /* queued writes before -EAGAIN; 0: 16384 */
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
	char last_reason[256];	 /* its reason */
};

/*
 * Called on the loop thread, exactly once per accepted write, never from inside the call
 * that submitted it. err 0: durably committed (fsynced). Otherwise a negative errno and a
 * short reason valid during the call: -EEXIST (insert of a known DevEUI), -ENOENT
 * (update of an unknown one), -ENOSPC, -EIO, -EROFS, -EBUSY... (the whole transaction
 * was rolled back; nothing of it was written), -ESHUTDOWN never (close completes writes).
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
 * Stop accepting writes, commit what is queued, run the pending callbacks, stop the
 * writer and free everything, wiping the key. Accepts NULL. Not from a store callback.
 */
void store_close(struct store *s);

/* Read the record of dev_eui (either case) into *ret, AppKey decrypted; -ENOENT if none. */
int store_get(struct store *s, const char *dev_eui, struct store_record *ret);

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

/* Call fn for each recorded attempt of dev_eui, in order; 0 or a negative errno. */
int store_attempt_list(struct store *s, const char *dev_eui,
		       int (*fn)(const struct store_attempt *a, void *arg), void *arg);

/* Queue an audit row into the next commit; there is no callback. */
int store_audit(struct store *s, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		const char *outcome);

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

/* Read dev_eui's stored label into *ret; -ENOENT if none. */
int store_label_get(struct store *s, const char *dev_eui, struct store_label *ret);

/*
 * The cloud-HSM AppKey pool (table app_key_pool): each pair AppKey || hsmEncryptedAppKey
 * sealed with the store key, found by a digest of the AppKey (never the key itself).
 * store_key_pool_put queues a new pair and store_key_pool_taken marks one handed out,
 * both into the next commit with no callback (in queue order: a key marked before a
 * device row that uses it is committed no later than that row). store_key_pool_load calls
 * fn for up to max pairs not handed out, oldest first (fn returning non-zero stops).
 * store_key_pool_find gives the hsmEncryptedAppKey of any pair by its AppKey (-ENOENT).
 */
int store_key_pool_put(struct store *s, const uint8_t app_key[16], const uint8_t hsm_key[16]);
int store_key_pool_taken(struct store *s, const uint8_t app_key[16]);
int store_key_pool_load(struct store *s, size_t max,
			int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg),
			void *arg);
int store_key_pool_find(struct store *s, const uint8_t app_key[16], uint8_t ret_hsm[16]);

/* Copy the counters into *ret. */
void store_stats(struct store *s, struct store_stats *ret);

/* Status object: path, rows by state, commits, ops, mean ops per commit, last error. */
json_t *store_status_json(struct store *s);

/* "PENDING", "ISSUED", "FAILED", "FOREIGN", "RETIRED"; NULL for anything else. */
const char *store_state_name(enum store_state st);

/* Parse a state name; -EINVAL if unknown. */
int store_state_parse(const char *name, enum store_state *ret);

/*
 * For tests: cap the database at pages pages (0: lift the cap) from the next transaction
 * on, so that writes fail as on a full disk. The file never shrinks below its size.
 */
void store_test_set_max_pages(struct store *s, uint32_t pages);
