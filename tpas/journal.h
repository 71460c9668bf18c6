/* journal: tpas's durable store (SQLite): sealed ASTKs and AppSKeys, the uplink journal, FCntDn. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "ascrypto.h"
#include "seal.h"
#include "sqlwriter.h"

struct event_base;
struct journal;

/* One device session: the AppSKey (unsealed) and what goes with it. */
struct as_session {
	int64_t id;
	char customer_id[65];
	char dev_eui[17];
	char dev_addr[9];
	uint8_t key[AS_KEY_LEN];
	uint32_t fcnt_dn_next;
	int64_t received_ms;
};

/* One uplink to commit; strings borrowed. */
struct journal_uplink {
	int64_t received_ms;
	int64_t session_id; /* 0: no key (FPort 0 or no payload) */
	const char *dev_eui, *customer_id, *dev_addr, *time;
	int fport; /* -1 when absent */
	uint32_t fcnt_up;
	bool has_fcnt_dn;
	uint32_t fcnt_dn;
	const char *payload_hex; /* plaintext, upper-case hex; "" when none */
	bool encrypted;		 /* payload_hex is still the ciphertext (FPort 0) */
	const char *radio;	 /* JSON object text */
	bool update_session;	 /* record dev_addr and fcnt_dn in the session (they changed) */
	int64_t began_ms;	 /* with update_session and > 0: the session began by then */
	const char *token;	 /* the request's Token (64 hex digits), or NULL */
	int64_t time_ms;	 /* the request's signed Time, unix ms (with the Token) */
	/*
	 * With session_id 0: the session to add first, in the same transaction, or to find
	 * when an earlier uplink added it (then dev_addr, fcnt_dn and its received_ms update
	 * it, as update_session would). The insert sets session_id.
	 */
	const struct journal_new_session *new_session;
};

struct journal_stats {
	int64_t last_seq;
	int64_t uplinks; /* rows in the journal */
	int64_t sessions;
	int64_t astks;
	uint64_t commits;	/* transactions committed, the writer thread's included */
	uint64_t batches;	/* of those, the writer thread's (uplinks and downlink counters) */
	uint64_t batched;	/* uplinks committed by the writer thread */
	uint64_t largest_batch; /* the most uplinks one of its transactions held */
	/* Writes that failed for the store (disk full, I/O error), both connections. */
	uint64_t failed_commits;
	/* The wall time (ms) of the first failed write since the last one that committed;
	 * 0 while the last write committed (or none failed). */
	int64_t failing_since_ms;
	/* Why the last failed write failed ("" when none has since start). */
	char last_error[160];
};

/*
 * For --check-config: whether store_key is the key of the store at path (read only; 0
 * when there is no store yet). -EBADMSG with the reason in err when it is another.
 */
int journal_check_key(const char *path, const uint8_t *store_key, char *err, size_t errlen);

/*
 * Open (creating if needed) the database at path, mode 0600, in WAL mode with
 * synchronous=FULL (":memory:" for a database that lives only in memory, for tests); store_key
 * (SEAL_KEY_LEN bytes) seals every key in it. On failure a negative errno and one line in err.
 */
int journal_open(const char *path, const uint8_t *store_key, struct journal **ret, char *err,
		 size_t errlen);

/* Close. Accepts NULL; returns NULL. */
struct journal *journal_free(struct journal *j);

/*
 * Store an ASTK sealed, with its optional KEK label and scope ("" for any). When the same
 * key is already the newest of exactly that label and scope, nothing is added: *ret_id is
 * its id and *ret_existing true (ret_existing may be NULL).
 */
int journal_astk_add(struct journal *j, const char *label, const char *customer_id,
		     const char *dev_eui, const uint8_t astk[AS_KEY_LEN], int64_t *ret_id,
		     bool *ret_existing);

/*
 * The ASTK for an uplink: with a label, the newest with that label; otherwise the newest
 * scoped to the device, else to the customer, else unscoped. -ENOENT if none, -EBADMSG
 * if it does not unseal (another store key).
 */
int journal_astk_find(struct journal *j, const char *label, const char *customer_id,
		      const char *dev_eui, uint8_t ret[AS_KEY_LEN], int64_t *ret_id);

/* Every ASTK without the key: [{id, label, customerID, devEUI, createdAt}]. */
json_t *journal_astk_list(struct journal *j);

/*
 * The session whose AppSKey field had fingerprint fp (SHA-256 hex of the field as
 * received), for (customer_id, dev_eui): 0 with *ret filled, -ENOENT.
 */
int journal_session_find(struct journal *j, const char *customer_id, const char *dev_eui,
			 const char *fp, struct as_session *ret);

/*
 * The session of (customer_id, dev_eui) whose AppSKey is key, whatever field carried it
 * (one AES block or an envelope, under one ASTK or another): 0 with *ret filled, -ENOENT.
 * Unseals the device's sessions one by one (a device has few); for a field not seen yet.
 */
int journal_session_with_key(struct journal *j, const char *customer_id, const char *dev_eui,
			     const uint8_t key[AS_KEY_LEN], struct as_session *ret);

/*
 * Add a session (its key sealed) and commit at once; sets ret->id. (The tunnel does not:
 * its new sessions come with their uplinks, journal_uplink.new_session.)
 */
int journal_session_add(struct journal *j, const char *fp, struct as_session *s);

/*
 * A session as an uplink's transaction adds it (journal_uplink.new_session): its key
 * sealed on the loop thread, the row written by whichever connection commits the uplink,
 * so the loop commits nothing of its own for a new session.
 */
struct journal_new_session {
	char fp[65];
	char customer_id[65], dev_eui[17], dev_addr[9];
	uint32_t fcnt_dn_next;
	int64_t received_ms;
	uint8_t sealed[AS_KEY_LEN + SEAL_OVERHEAD];
};

/* Seal s's key into ret, the row of s with fingerprint fp (loop thread). */
int journal_session_seal(struct journal *j, const char *fp, const struct as_session *s,
			 struct journal_new_session *ret);

/*
 * The newest session of dev_eui (for customer_id, or any customer when NULL): the one
 * whose first uplink the network received last (received_ms, the uplink's Time), so a late
 * retry from a session the device has left does not become its newest. 0, -ENOENT,
 * -EBADMSG when its key does not unseal.
 */
int journal_session_newest(struct journal *j, const char *customer_id, const char *dev_eui,
			   struct as_session *ret);

/*
 * The session of dev_eui's uplink that the network received at at_ms, which came without
 * its AppSKey field: the newest of customer_id's sessions that began by then (received_ms
 * <= at_ms), so an uplink of the previous session that the LRC posts after the device
 * rejoined is read with its own key; with none begun by then, the newest (which the
 * tunnel does not take: the uplink with the key of the session has not come yet).
 * 0, -ENOENT, -EBADMSG when its key does not unseal.
 */
int journal_session_at(struct journal *j, const char *customer_id, const char *dev_eui,
		       int64_t at_ms, struct as_session *ret);

/* The seq of the uplink whose request had this signed Time and Token, if journaled: 0, -ENOENT. */
int journal_token_find(struct journal *j, int64_t time_ms, const char *token, int64_t *ret_seq);

/* The seq of the uplink (session, FCntUp) of dev_eui if journaled: 0, -ENOENT. */
int journal_uplink_find(struct journal *j, const char *dev_eui, int64_t session_id,
			uint32_t fcnt_up, int64_t *ret_seq);

/*
 * Commit one uplink (fsync) and return its sequence number; also records the session's
 * DevAddr and raises its next FCntDn to the LRC's FCntDn. -EEXIST (with the seq it has)
 * if it is already in: the same Token, or the same (device, session, FCntUp).
 */
int journal_uplink_add(struct journal *j, const struct journal_uplink *u, int64_t *ret_seq);

/*
 * Group commit: journal_begin(), any number of journal_uplink_insert() (each as
 * journal_uplink_add() but inside the transaction; -EEXIST leaves the others in), then
 * journal_commit() (one fsync for all; on failure nothing of it is kept) or
 * journal_rollback().
 */
int journal_begin(struct journal *j);

/*
 * The uplinks journaled since uplink_seen was last filled are kept in memory by the
 * connection that writes them and moved there n at a time (0: 8192), in key order, so a
 * commit writes only pages at the journal's end. Before journal_writer_start(); for tests
 * and tuning.
 */
void journal_set_seen_move_at(struct journal *j, size_t n);
/*
 * For tests, with no writer thread running (none started, or after
 * journal_writer_drain()): the uplinks in the recent set, and whether it was dropped for
 * its size (moves failing: at most 8 moves' worth is kept, replays then looked up in the
 * table until a move succeeds).
 */
size_t journal_recent_count(const struct journal *j, bool *ret_dropped);
/* Sets u->session_id when it adds (or finds) u->new_session. */
int journal_uplink_insert(struct journal *j, struct journal_uplink *u, int64_t *ret_seq);
int journal_commit(struct journal *j);
void journal_rollback(struct journal *j);

/*
 * The group-commit writer: a second connection on its own thread (core/sqlwriter) commits
 * queued uplinks, as many as queued while the last commit ran in one transaction (one
 * fsync), and hands them back on the loop thread (done) only once that transaction is
 * durable. Not for ":memory:" (-EINVAL).
 */
struct journal_entry {
	struct sqlwriter_job job; /* next links the entries of a list */
	struct journal_uplink u;  /* strings borrowed until done */
	/* After done, when job.err is 0: */
	int64_t seq;	/* its sequence number; the journaled one for a duplicate */
	bool duplicate; /* this (device, session, FCntUp) was already in */
	char *text;	/* a new uplink: its io.tpad.AS object as JSON text (owned; may be NULL) */
	size_t text_len;
};

/* Entries committed (or failed: job.err), in queue order, linked by job.next. */
typedef void journal_done_fn(struct journal_entry *list, void *arg);

int journal_writer_start(struct journal *j, struct event_base *base, journal_done_fn *done,
			 void *arg, char *err, size_t errlen);

/* Queue entries (linked by job.next); -ENOTCONN without a writer, -ESHUTDOWN after drain. */
int journal_uplink_queue(struct journal *j, struct journal_entry *list);

/* Commit what is queued, run done for it, and stop the writer (later queues fail). */
void journal_writer_drain(struct journal *j);

/*
 * One uplink as the JSON text of the object journal_uplinks_after() gives for its row
 * (malloc'd, *ret_len bytes, NUL-terminated), or NULL when out of memory.
 */
char *journal_uplink_json(const struct journal_uplink *u, int64_t seq, size_t *ret_len);

/*
 * Up to limit uplinks with seq > after, oldest first, as the objects io.tpad.AS sends; NULL
 * if the journal cannot be read or one of them cannot be built whole.
 */
json_t *journal_uplinks_after(struct journal *j, int64_t after, size_t limit);

/*
 * When the first uplink with seq > after was received (ms since the epoch), 0 when there
 * is none or it cannot be read: one step down the table's B-tree (seq is its key), cheap
 * enough for every /metrics scrape.
 */
int64_t journal_received_after(struct journal *j, int64_t after);

/*
 * Take the next FCntDn of a session: the counter is raised and committed (fsync) before
 * it is returned, so it is never handed out twice. -ENOENT no such session, -ERANGE its
 * counter is used up (the device must rejoin), else the store's error. On this thread's
 * connection: it waits for the writer thread's transaction and for its own fsync.
 */
int journal_fcnt_dn_take(struct journal *j, int64_t session_id, uint32_t *ret);

/* The tag of a journal_take's job (an uplink's journal_entry has 0). */
#define JOURNAL_JOB_TAKE 1u

/*
 * The same through the writer thread: the counter is raised in the transaction of the
 * uplinks queued with it (one fsync for all) and done() runs on the loop thread once that
 * is durable. Takes of one journal are handed back in the order they were queued.
 */
struct journal_take;
typedef void journal_take_fn(struct journal_take *t, void *arg);
struct journal_take {
	struct sqlwriter_job job;
	int64_t session_id;
	journal_take_fn *done;
	void *arg;
	/* In done(): 0 with the counter in fcnt_dn, or what journal_fcnt_dn_take() returns. */
	int err;
	uint32_t fcnt_dn;
};

/* Queue t (session_id, done and arg set); -ENOTCONN without a writer, -ESHUTDOWN after drain. */
int journal_fcnt_dn_queue(struct journal *j, struct journal_take *t);

/*
 * Drop uplinks received before before_ms, but none past keep_after (the seq a consumer
 * that must get every uplink, the webhook, has reached; INT64_MAX for none), in seq order
 * up to the first received at or after before_ms, at most limit of them (<= 0: all) in one
 * transaction; returns the rows removed. Fewer than limit: none that old is left to
 * remove, and *ret_held (may be NULL) says how many that old stay for keep_after (0
 * otherwise). Seqs are never reused. A step reads the rows it removes and one more.
 */
int journal_prune(struct journal *j, int64_t before_ms, int64_t keep_after, int limit,
		  int64_t *ret_held);
/* For tests: the uplink rows the removals have read since the journal opened. */
uint64_t journal_prune_rows_read(const struct journal *j);

/*
 * Copy the WAL back into the database, waiting for no one (a passive checkpoint): the
 * next commit then starts the WAL again and cuts its file back (SQLWRITER_WAL_LIMIT).
 * After a prune, whose removals this connection wrote. With a writer thread, that thread
 * runs it, soon, and this returns at once.
 */
void journal_checkpoint(struct journal *j);

/* Whether the writer thread has a checkpoint of journal_checkpoint()'s still to finish (a
 * prune's next step waits for it, or the WAL grows as long as the prune lasts). */
bool journal_checkpointing(struct journal *j);

/* A named delivery cursor (the webhook's): the last seq delivered, 0 when none. */
int journal_cursor_get(struct journal *j, const char *name, int64_t *ret);
int journal_cursor_set(struct journal *j, const char *name, int64_t seq);

/*
 * The oldest seq still in the journal, 0 when it is empty, -errno when it cannot be read:
 * one step down the table's B-tree, cheap enough for every /metrics scrape (the row counts
 * of journal_get_stats() read whole tables).
 */
int64_t journal_first_seq(struct journal *j);

/* Everything in journal_stats; the row counts read whole tables. */
void journal_get_stats(struct journal *j, struct journal_stats *ret);

/* The same without the row counts (uplinks, sessions, astks stay 0): cheap. */
void journal_get_counters(struct journal *j, struct journal_stats *ret);
