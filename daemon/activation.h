/* activation: the exactly-once rules of getting a device's ownerToken, driven by callbacks. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "store.h"
#include "tpa.h"

struct activation;

/*
 * What activation needs from the outside world. Production wires these to store_* and
 * tpa_*; unit tests to fakes. Every callback-taking op returns 0 when the callback will
 * be called later (exactly once), or a negative errno without calling it.
 */
struct activation_ops {
	/* Read a device's row (store_get_async): cb gets it, possibly inside the call. */
	int (*get_async)(void *ctx, const char *dev_eui, store_get_fn *cb, void *arg);
	int (*insert)(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg);
	int (*update)(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg);
	/* Write the row (insert or update) and the attempt a in one commit. */
	int (*write_attempt)(void *ctx, const struct store_record *r, bool insert,
			     const struct store_attempt *a, store_done_fn *cb, void *arg);
	int (*audit)(void *ctx, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		     const char *outcome);
	int (*import)(void *ctx, const struct tpa_record *rec, tpa_done_fn *cb, void *arg);
	int (*query)(void *ctx, const char *dev_eui, tpa_done_fn *cb, void *arg);
	/*
	 * List up to limit PENDING rows whose DevEUI sorts after after ("" from the start) in
	 * DevEUI order (store_list_async): cb gets them, exactly once, possibly inside the
	 * call; 0 or a negative errno (then cb is not called).
	 */
	int (*list_pending)(void *ctx, const char *after, size_t limit, store_rows_fn *cb,
			    void *arg);
	/*
	 * A new AppKey for dev_eui (generateAppKey): 0, -EAGAIN when none is ready now (the
	 * cloud-HSM pool refills), or a negative errno. The device's row that uses it is
	 * written after this call.
	 */
	int (*new_app_key)(void *ctx, const char *dev_eui, uint8_t key[16]);
	/* Wall-clock time in unix milliseconds (attempt times are compared with it). */
	int64_t (*now_ms)(void *ctx);
	/*
	 * A clock that never steps (CLOCK_MONOTONIC ms), for how long this process has seen an
	 * attempt wait: the settle window is kept on it too, so that a wall clock stepped
	 * forward, or another line's clock ahead of ours, cannot shorten it. NULL: now_ms.
	 */
	int64_t (*mono_ms)(void *ctx);
	/*
	 * Call fn(arg) once after ms on the loop (to wait for another tpad's claim on a
	 * device); 0 or a negative errno. May be NULL: then a caller who would wait is told
	 * OutcomeUnknown with retryAfter instead. Pending calls are dropped by their owner
	 * before activation_free.
	 */
	int (*later)(void *ctx, uint32_t ms, void (*fn)(void *arg), void *arg);
};

/* One request for a device's token: from a station, an import row, or a restart. */
struct act_request {
	char dev_eui[17];    /* upper-case */
	char join_eui[17];   /* upper-case; "" = from the store, else the default */
	char profile_id[9];  /* "" = from the store, else the default */
	char serial[65];     /* "" = none given */
	char tkm_info[21];   /* "" = none */
	uint8_t app_key[16]; /* when has_app_key */
	bool has_app_key;
	bool generate_app_key;
	bool adopt;	    /* an admin takes a FOREIGN device: adopt the cloud's token */
	bool oneway;	    /* the caller wants no reply: the work is done, nothing handed out */
	const char *method; /* for the audit trail: "io.tpad.Station.Activate" ... */
	const char *origin; /* "activate" or "import" */
	uint32_t uid;
	int32_t pid;
	uint64_t owner; /* the client connection asking: its share of the upstream queue */
};

enum act_outcome {
	ACT_OK,		 /* rec holds the ISSUED record */
	ACT_NOT_FOUND,	 /* no key material given and the store does not hold the device */
	ACT_CONFLICT,	 /* the store holds this DevEUI with another record */
	ACT_REJECTED,	 /* the cloud refused the import */
	ACT_UNAVAILABLE, /* the cloud could not be asked; nothing was imported */
	ACT_UNKNOWN,	 /* the import may have happened; the row stays PENDING */
	ACT_BUSY,	 /* a queue is full */
	ACT_STORE_FAILED, /* the store could not commit */
	ACT_RETIRED	  /* the device was retired (deleted from the cloud) */
};

struct act_result {
	enum act_outcome outcome;
	bool live;		 /* ACT_OK: the token came from the cloud in this call */
	bool skipped;		 /* ACT_OK: it was already ISSUED with the same record */
	bool foreign;		 /* ACT_CONFLICT: the cloud holds the device from elsewhere */
	struct store_record rec; /* ACT_OK: the record (AppKey in clear) */
	int http_status;	 /* ACT_REJECTED */
	char code[64];		 /* ACT_REJECTED: the cloud's error code, "" if none */
	char message[256];	 /* ACT_REJECTED: the cloud's message */
	char reason[512];	 /* human text for every other failure */
	int retry_after;	 /* ACT_UNAVAILABLE, ACT_UNKNOWN: seconds, -1 if none */
};

typedef void act_done_fn(const struct act_result *res, void *arg);

/*
 * An admin's change of a row (Retire) holds its DevEUI against every activation of this
 * tpad (stations, imports, the settler): fn runs once no activation of the DevEUI runs,
 * possibly inside this call, and the activations asked meanwhile wait until
 * activation_release(). 0 or -ENOMEM (fn is not called then). A hold still on at
 * activation_free() is dropped without a call.
 */
struct act_hold;
typedef void act_hold_fn(struct act_hold *h, void *arg);
int activation_hold(struct activation *a, const char *dev_eui, act_hold_fn *fn, void *arg);
void activation_release(struct act_hold *h);

/* Counters for Status and metrics. */
struct activation_stats {
	uint64_t outcomes[ACT_RETIRED + 1];
	uint64_t live;
	uint64_t stored;
	uint64_t looked_up;	   /* tokens Lookup handed out (its audit entries "stored") */
	uint64_t settled_by_query; /* unknown outcomes resolved by the read-only query */
	uint64_t reimported;	   /* imports sent again after the query proved none happened */
	uint64_t not_yet_trusted;  /* "not found" answers too early to trust (settle-after) */
	uint64_t foreign;	   /* devices found held by the cloud from elsewhere */
	uint64_t adopted;	   /* FOREIGN devices an admin adopted */
	uint64_t settle_runs;	   /* background settlements started */
	uint64_t claim_waits;	   /* waits for another tpad's claim on a device (shared store) */
	uint32_t in_flight;
};

/*
 * default_join_eui and default_profile_id (upper-case hex) fill requests that give none
 * for a device the store does not hold. ctx is passed to every op.
 */
/* A Lookup handed out a stored token (counted with the activations' for Status and metrics). */
void activation_count_lookup(struct activation *a);

struct activation *activation_new(const struct activation_ops *ops, void *ctx,
				  const char *default_join_eui, const char *default_profile_id);

/*
 * The store is shared with other lines (PostgreSQL): an attempt this process did not send
 * may have been sent after it started, so its settle window counts from the first look.
 */
void activation_set_shared_store(struct activation *a, bool shared);

/*
 * The settle rules: a query's "not found" is trusted only settle_after_ms after the last
 * attempt that may have reached the cloud (from its first byte, on a clock that does not
 * step; see activation.c); a PENDING row that cannot be settled yet is retried in the
 * background after backoff_min_ms, doubling up to backoff_max_ms.
 */
void activation_set_settle(struct activation *a, uint32_t settle_after_ms, uint32_t backoff_min_ms,
			   uint32_t backoff_max_ms);

/* Seconds after which asking again about a PENDING row r may give an answer (>= 1). */
int activation_retry_after(struct activation *a, const struct store_record *r);

/* Why the last PENDING row a settlement could not settle was not ("" if none was). */
const char *activation_settle_why(const struct activation *a);

/*
 * Settle in the background the PENDING rows whose time has come (see
 * activation_set_settle), at most concurrency at a time; rows with a request in flight
 * are left to it. Each call reads one page of 1024 PENDING rows, the next page the next
 * time (wrapping around), so that a large backlog costs each call the same. done (may be
 * NULL) gets the number left PENDING by the last whole cycle over the pages. -EBUSY while
 * a settlement runs.
 */
int activation_settle_due(struct activation *a, unsigned concurrency,
			  void (*done)(unsigned still_pending, void *arg), void *arg);

/* SHA-256 (64 hex digits) of what an import of r sends, to recognise our own attempts. */
void activation_digest(const struct store_record *r, char out[65]);

/* Free a; requests still in flight get no callback. Accepts NULL. */
void activation_free(struct activation *a);

/*
 * Get the token of req->dev_eui exactly once (see activation.c for the rules). cb is called
 * exactly once, possibly before this call returns (a stored answer needs no I/O). Returns
 * 0, or -ENOMEM without calling cb.
 */
int activation_run(struct activation *a, const struct act_request *req, act_done_fn *cb, void *arg);

/*
 * Settle every PENDING row of the store with the read-only query (adopt the cloud's token,
 * or import once more if it has none), at most concurrency at a time. done (may be NULL)
 * gets the number of rows still PENDING afterwards.
 */
int activation_reconcile(struct activation *a, unsigned concurrency,
			 void (*done)(unsigned still_pending, void *arg), void *arg);

void activation_get_stats(const struct activation *a, struct activation_stats *ret);

/* The name of an outcome, for logs and metrics ("ok", "conflict", ...). */
const char *activation_outcome_name(enum act_outcome o);
