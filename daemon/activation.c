/* activation: the exactly-once rules of getting a device's ownerToken, driven by callbacks. */
#include "activation.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/sha256.h>

#include "cred.h"
#include "hex.h"

/*
 * The rules, per DevEUI (ARCHITECTURE.md §10; the model is test/model/activation.pml):
 *  - One job at a time per DevEUI; later requests for it wait and then see its result.
 *  - Every import attempt is committed to the store (number, time, instance, digest of
 *    the record) before its first byte is sent, with the row PENDING and maybe_at, the
 *    time of the last attempt that may have reached the cloud, set to the attempt's.
 *  - A token reaches a caller only after the commit that holds it (ISSUED) returned.
 *  - An attempt whose answer is lost, or a 5xx other than 503, may have landed: it is
 *    settled with the read-only query, never by sending the import again. A query hit is
 *    adopted because our own attempt (same record) may explain it. A "not found" is
 *    trusted only settle_after after maybe_at; before that the row stays PENDING and the
 *    caller gets OutcomeUnknown with retryAfter. Once trusted, the earlier attempts are
 *    disproved and a new attempt may be sent. The window is also kept on this process's
 *    monotonic clock, from when the import's first byte left (it may wait for a session
 *    first) or, for an attempt of another process or line, from when this one first
 *    looked: maybe_at is a wall-clock time, which may step or differ between lines.
 *  - An attempt never sent, or definitely refused (4xx, 429, 503), did not land. FAILED is
 *    written only when no other attempt may have landed (maybe_at is 0 again).
 *  - A 409, or a query hit with no attempt of ours that may have landed, means the cloud
 *    holds the device from elsewhere: state FOREIGN, Conflict; only an admin's Adopt takes
 *    the cloud's token for it.
 *  - The same DevEUI with another record is a conflict; with the same record (or no key
 *    material at all, the offline mode) it is answered from the store. A FAILED row is
 *    replaced by a station's corrected record (nothing of it was imported).
 */

#define ACT_MAX_IMPORTS 3 /* import attempts per job, each after a trusted "not found" */
#define ACT_MAX_LOOKUPS 3 /* store reads per job (an insert can race with another writer) */
#define ACT_MAX_QUERIES 3 /* read-only queries per settlement: asking again is harmless */
#define ACT_BUCKETS 1024
#define ACT_CLAIM_POLL_MS 100 /* how often a job waiting for another tpad's claim looks */
#define ACT_SETTLE_PAGE 1024 /* PENDING rows read at once by the settler */
#define ACT_MAX_WAITS 3000    /* polls at most (5 min): then OutcomeUnknown */

struct job {
	struct activation *a;
	struct job *next_in_bucket;
	struct job *waiters; /* later jobs for the same DevEUI, in order */
	struct job *next_waiter;
	struct act_request req;
	act_done_fn *cb;
	void *cb_arg;
	struct store_record rec;
	struct act_result res;
	struct store_attempt att; /* the attempt in flight */
	int64_t prev_maybe_at;	  /* maybe_at before this attempt was recorded */
	int64_t query_at;	  /* when the current query was sent */
	int64_t query_mono;	  /* the same on the monotonic clock */
	int64_t import_mono;	  /* when the import was handed to the cloud client (mono) */
	unsigned imports;
	unsigned lookups;
	unsigned queries;    /* of the current settlement */
	bool after_conflict; /* the query follows a 409 explained by an earlier attempt */
	unsigned waits;	     /* polls for another tpad's claim */
	act_hold_fn *hold;   /* not an activation: an admin's hold on the DevEUI */
};

/* When a PENDING row is to be settled again in the background. */
struct settle_entry {
	struct settle_entry *next;
	char dev_eui[17];
	int64_t due_ms; /* on the monotonic clock */
	uint32_t backoff_ms;
};

/*
 * Since when, on the monotonic clock, attempt n of a device may land: the first byte of
 * our import, or (on a store shared with other lines) the first time this process looked
 * at another's attempt. Kept while the row is PENDING.
 */
struct seen_attempt {
	struct seen_attempt *next;
	char dev_eui[17];
	uint32_t n;
	int64_t from_mono;
};

/* The list of PENDING rows asked of the store; outlives a freed activation. */
struct pending_listing {
	struct activation *a; /* NULL once the activation is freed */
};

struct activation {
	const struct activation_ops *ops;
	void *ctx;
	char default_join_eui[17];
	char default_profile_id[9];
	uint32_t settle_after_ms;
	uint32_t backoff_min_ms, backoff_max_ms;
	struct job *buckets[ACT_BUCKETS];
	struct settle_entry *due[ACT_BUCKETS];
	struct seen_attempt *seen[ACT_BUCKETS];
	int64_t started_mono; /* attempts in the store before then were sent before then */
	bool seen_lost;	      /* a send time could not be kept (out of memory) */
	bool shared_store;    /* other lines write the store (PostgreSQL) */
	struct activation_stats stats;
	/* a settlement pass over the PENDING rows */
	char (*pending)[17];
	size_t n_pending, next_pending;
	unsigned settle_active, settle_max;
	unsigned still_pending, last_still_pending;
	unsigned cycle_still; /* not settled in the pages of the current cycle so far */
	char settle_cursor[17]; /* the last DevEUI of the page before; "" from the start */
	bool settle_page_full;	/* the page was full: more may follow */
	bool settle_only_due;
	char settle_why[512];		 /* why the last row not settled was not ("" none) */
	struct pending_listing *listing; /* the store's list of PENDING rows, while it runs */
	void (*settle_done)(unsigned still_pending, void *arg);
	void *settle_arg;
};

static int64_t mono_now(struct activation *a)
{
	return a->ops->mono_ms ? a->ops->mono_ms(a->ctx) : a->ops->now_ms(a->ctx);
}

static struct seen_attempt **seen_find(struct activation *a, const char *dev_eui)
{
	uint32_t h = 2166136261u;
	for (const char *p = dev_eui; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	struct seen_attempt **pp = &a->seen[h % ACT_BUCKETS];
	while (*pp && strcmp((*pp)->dev_eui, dev_eui) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* Attempt n of dev_eui may land from from_mono on. */
static void seen_set(struct activation *a, const char *dev_eui, uint32_t n, int64_t from_mono)
{
	struct seen_attempt **pp = seen_find(a, dev_eui), *e = *pp;
	if (!e) {
		/* Out of memory: windows then count from the first look, never from the start
		 * (this very attempt may have been sent since). */
		if (!(e = calloc(1, sizeof(*e)))) {
			a->seen_lost = true;
			return;
		}
		snprintf(e->dev_eui, sizeof(e->dev_eui), "%s", dev_eui);
		*pp = e;
	}
	e->n = n;
	e->from_mono = from_mono;
}

/* Since when attempt n of dev_eui may land, as this process knows; false if it does not. */
static bool seen_get(struct activation *a, const char *dev_eui, uint32_t n, int64_t *ret)
{
	struct seen_attempt *e = *seen_find(a, dev_eui);
	if (!e || e->n != n)
		return false;
	*ret = e->from_mono;
	return true;
}

/* The row is settled: nothing of it can land any more. */
static void seen_forget(struct activation *a, const char *dev_eui)
{
	struct seen_attempt **pp = seen_find(a, dev_eui), *e = *pp;
	if (e) {
		*pp = e->next;
		free(e);
	}
}

static void job_start(struct job *j);
static void step_lookup(struct job *j);
static void step_query(struct job *j);
static void send_attempt(struct job *j, bool insert);
static void job_wait_claim(struct job *j, int64_t left_ms, const char *who);
static void on_lookup(int err, const struct store_record *rec, const char *reason, void *arg);
static void lookup_decide(struct job *j, int r, const char *reason);

const char *activation_outcome_name(enum act_outcome o)
{
	static const char *const names[] = {"ok",	   "not_found",	   "conflict", "rejected",
					    "unavailable", "unknown",	   "busy",     "store_failed",
					    "retired"};
	return (unsigned)o <= ACT_RETIRED ? names[o] : "?";
}

/* Bucket of a DevEUI (FNV-1a). */
static unsigned bucket_of(const char *dev_eui)
{
	uint32_t h = 2166136261u;
	for (const char *p = dev_eui; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h % ACT_BUCKETS;
}

/* The job in flight for dev_eui, or NULL. */
static struct job *inflight_find(struct activation *a, const char *dev_eui)
{
	for (struct job *j = a->buckets[bucket_of(dev_eui)]; j; j = j->next_in_bucket)
		if (strcmp(j->req.dev_eui, dev_eui) == 0)
			return j;
	return NULL;
}

static void inflight_remove(struct activation *a, struct job *j)
{
	struct job **pp = &a->buckets[bucket_of(j->req.dev_eui)];
	while (*pp && *pp != j)
		pp = &(*pp)->next_in_bucket;
	if (*pp)
		*pp = j->next_in_bucket;
}

/* ---- background settle schedule ---- */

static struct settle_entry **due_find(struct activation *a, const char *dev_eui)
{
	struct settle_entry **pp = &a->due[bucket_of(dev_eui)];
	while (*pp && strcmp((*pp)->dev_eui, dev_eui) != 0)
		pp = &(*pp)->next;
	return pp;
}

/* Forget when dev_eui was to be settled (it is settled, or gone). */
static void due_clear(struct activation *a, const char *dev_eui)
{
	struct settle_entry **pp = due_find(a, dev_eui);
	if (*pp) {
		struct settle_entry *e = *pp;
		*pp = e->next;
		free(e);
	}
}

/*
 * Settle dev_eui again after retry_after_s seconds, or, when that is not known, after a
 * backoff that doubles with each try. Returns the seconds until then.
 */
static int due_set(struct activation *a, const char *dev_eui, int retry_after_s)
{
	struct settle_entry **pp = due_find(a, dev_eui), *e = *pp;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e)
			return retry_after_s > 0 ? retry_after_s : 1;
		memcpy(e->dev_eui, dev_eui, sizeof(e->dev_eui));
		*pp = e;
	}
	int64_t delay;
	if (retry_after_s > 0) {
		delay = (int64_t)retry_after_s * 1000;
	} else {
		e->backoff_ms = e->backoff_ms ? e->backoff_ms * 2 : a->backoff_min_ms;
		if (e->backoff_ms > a->backoff_max_ms)
			e->backoff_ms = a->backoff_max_ms;
		delay = e->backoff_ms;
	}
	e->due_ms = mono_now(a) + delay;
	return (int)((delay + 999) / 1000);
}

int activation_retry_after(struct activation *a, const struct store_record *r)
{
	int64_t left = 0;
	struct settle_entry *e = *due_find(a, r->dev_eui);
	if (e) {
		left = e->due_ms - mono_now(a);
	} else if (r->maybe_at) {
		/* The attempt was recorded before now: one whose time is later says only that
		 * the wall clock stepped back since (or another line's runs ahead). */
		left = r->maybe_at + a->settle_after_ms - a->ops->now_ms(a->ctx);
		if (left > a->settle_after_ms)
			left = a->settle_after_ms;
	}
	int64_t s = (left + 999) / 1000;
	return s < 1 ? 1 : s > 86400 ? 86400 : (int)s;
}

/* ---- finishing ---- */

/* Append w to the waiters of owner. */
static void waiters_append(struct job *owner, struct job *w)
{
	struct job **pp = &owner->waiters;
	while (*pp)
		pp = &(*pp)->next_waiter;
	*pp = w;
}

static void job_release(struct job *j);

/* A background settlement of a PENDING row (not a station's or an import's request). */
static bool is_settle(const struct job *j)
{
	return j->req.method && strcmp(j->req.method, "settle") == 0;
}

/* Report the result, release the DevEUI and start whoever waited for it. */
static void job_finish(struct job *j, enum act_outcome outcome)
{
	struct activation *a = j->a;
	j->res.outcome = outcome;
	if (outcome == ACT_OK) {
		j->res.rec = j->rec;
		/* Counted as the audit trail has it: a token is handed out live or stored. */
		if (!(is_settle(j) && j->res.skipped)) { /* the settler found nothing to do */
			const char *how = j->req.adopt	  ? "adopted"
					  : j->req.oneway ? "oneway"
					  : j->res.live	  ? "live"
							  : "stored";
			if (!j->req.adopt && !j->req.oneway) { /* a caller got the token */
				if (j->res.live)
					a->stats.live++;
				else
					a->stats.stored++;
			}
			a->ops->audit(a->ctx, j->rec.dev_eui, j->req.method, j->req.uid, j->req.pid,
				      how);
		}
	}
	if (outcome == ACT_UNKNOWN)
		j->res.retry_after = due_set(a, j->req.dev_eui, j->res.retry_after);
	else if (outcome != ACT_BUSY && outcome != ACT_STORE_FAILED &&
		 outcome != ACT_UNAVAILABLE)
		due_clear(a, j->req.dev_eui);
	else if (is_settle(j))
		due_set(a, j->req.dev_eui, -1); /* the store or a queue failed: back off too */
	if (j->rec.dev_eui[0] && j->rec.state != STORE_PENDING)
		seen_forget(a, j->rec.dev_eui);
	a->stats.outcomes[outcome]++;
	a->stats.in_flight--;
	inflight_remove(a, j);
	j->cb(&j->res, j->cb_arg);
	job_release(j);
}

/* Free a job out of the DevEUI's slot and start whoever waited for it. */
static void job_release(struct job *j)
{
	struct activation *a = j->a;
	struct job *w = j->waiters;
	cred_wipe(j, sizeof(*j));
	free(j);
	while (w) {
		struct job *next = w->next_waiter;
		w->next_waiter = NULL;
		struct job *owner = inflight_find(a, w->req.dev_eui);
		if (owner)
			waiters_append(owner, w);
		else
			job_start(w);
		w = next;
	}
}

/* Finish with a human reason for a failure. */
__attribute__((format(printf, 3, 4))) static void job_fail(struct job *j, enum act_outcome o,
							   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(j->res.reason, sizeof(j->res.reason), fmt, ap);
	va_end(ap);
	job_finish(j, o);
}

/* ---- records ---- */

/* Whether the request carries key material (a live activation or import). */
static bool req_has_keys(const struct act_request *r)
{
	return r->tkm_info[0] || r->has_app_key || r->generate_app_key;
}

/* Why the stored record differs from the request, or NULL if they agree. */
static const char *record_conflict(const struct act_request *q, const struct store_record *s)
{
	if (q->join_eui[0] && strcmp(q->join_eui, s->join_eui) != 0)
		return "the store holds this DevEUI with another joinEUI";
	if (q->profile_id[0] && strcmp(q->profile_id, s->profile_id) != 0)
		return "the store holds this DevEUI with another profileId";
	if (q->serial[0] && strcmp(q->serial, s->serial) != 0)
		return "the store holds this DevEUI with another serial";
	if (q->tkm_info[0]) {
		if (!s->tkm_info[0])
			return "the store holds this DevEUI as a device without Secure Element";
		if (strcmp(q->tkm_info, s->tkm_info) != 0)
			return "the store holds this DevEUI with another tkmInfo";
	}
	if (q->has_app_key || q->generate_app_key) {
		if (!s->has_app_key)
			return "the store holds this DevEUI as a device with a Secure Element";
		if (q->has_app_key && memcmp(q->app_key, s->app_key, sizeof(q->app_key)) != 0)
			return "the store holds this DevEUI with another appKey";
	}
	return NULL;
}

/* The import request of a record. */
static void tpa_record_of(const struct store_record *r, struct tpa_record *ret)
{
	memset(ret, 0, sizeof(*ret));
	memcpy(ret->dev_eui, r->dev_eui, sizeof(ret->dev_eui));
	memcpy(ret->join_eui, r->join_eui, sizeof(ret->join_eui));
	memcpy(ret->tkm_info, r->tkm_info, sizeof(ret->tkm_info));
	if (r->has_app_key)
		hex_encode(r->app_key, sizeof(r->app_key), ret->app_key);
}

void activation_digest(const struct store_record *r, char out[65])
{
	struct tpa_record t;
	tpa_record_of(r, &t);
	char text[sizeof(t) + 8];
	int n = snprintf(text, sizeof(text), "%s|%s|%s|%s", t.dev_eui, t.join_eui, t.tkm_info,
			 t.app_key);
	uint8_t sum[32];
	mbedtls_sha256_ret((const unsigned char *)text, (size_t)n, sum, 0);
	hex_encode(sum, sizeof(sum), out);
	cred_wipe(&t, sizeof(t));
	cred_wipe(text, sizeof(text));
}

/* Copy the cloud's error into the result. */
static void result_from_tpa(struct job *j, const struct tpa_result *t)
{
	j->res.http_status = t->http_status;
	snprintf(j->res.code, sizeof(j->res.code), "%s", t->code);
	snprintf(j->res.message, sizeof(j->res.message), "%s", t->message);
	snprintf(j->res.reason, sizeof(j->res.reason), "%s", t->reason);
	j->res.retry_after = t->retry_after;
}

/* ---- commits ---- */

/* The attempt of number n (the latest, by default) with a new outcome. */
static void attempt_outcome(struct job *j, const char *outcome)
{
	if (!j->att.n) {
		j->att.n = j->rec.attempts;
		j->att.at = j->rec.maybe_at;
		activation_digest(&j->rec, j->att.digest);
	}
	snprintf(j->att.outcome, sizeof(j->att.outcome), "%s", outcome);
}

/*
 * The reason the store keeps with a row: the first bytes of a station's reason, which may
 * be longer (the store's column is the record's fixed field).
 */
static void last_error_set(struct store_record *rec, const char *why)
{
	snprintf(rec->last_error, sizeof(rec->last_error), "%.*s", (int)sizeof(rec->last_error) - 1,
		 why);
}

/* Write j->rec with the attempt (if any), then call cb. */
static void commit(struct job *j, store_done_fn *cb)
{
	struct activation *a = j->a;
	int r = j->att.n ? a->ops->write_attempt(a->ctx, &j->rec, false, &j->att, cb, j)
			 : a->ops->update(a->ctx, &j->rec, cb, j);
	if (r < 0)
		cb(r, strerror(-r), j);
}

/* ISSUED is committed: now the caller may hear of the token. */
static void on_issued(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	if (err < 0) {
		/* The row stays PENDING: the settler adopts the token by query. */
		j->rec.state = STORE_PENDING;
		job_fail(j, ACT_STORE_FAILED,
			 "the token was received but could not be stored (%s); it will be "
			 "recovered from the cloud",
			 reason ? reason : "store error");
		return;
	}
	job_finish(j, ACT_OK);
}

/* Commit the token (from an import or the query). */
static void commit_issued(struct job *j, const char *token, const char *ref)
{
	j->rec.state = STORE_ISSUED;
	snprintf(j->rec.owner_token, sizeof(j->rec.owner_token), "%s", token);
	snprintf(j->rec.ref, sizeof(j->rec.ref), "%s", ref);
	j->rec.last_error[0] = '\0';
	if (j->rec.attempts && j->rec.maybe_at)
		attempt_outcome(j, "landed");
	j->rec.maybe_at = 0;
	j->res.live = true;
	commit(j, on_issued);
}

/* A terminal failure is committed (or could not be): report the outcome kept in res. */
static void on_failed(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	/* If the commit failed the row keeps its last state, which is only more cautious. */
	job_finish(j, j->res.outcome);
}

/* The cloud holds the device and no attempt of ours explains it: FOREIGN. */
static void commit_foreign(struct job *j, const char *how)
{
	struct activation *a = j->a;
	a->stats.foreign++;
	j->rec.state = STORE_FOREIGN;
	j->rec.maybe_at = j->prev_maybe_at;
	j->res.outcome = ACT_CONFLICT;
	j->res.foreign = true;
	snprintf(j->res.reason, sizeof(j->res.reason),
		 "the cloud holds this device from an import not ours (%s): another line, the "
		 "console, another key, or ours before a store restore; nothing imported; to "
		 "take it: tpactl adopt %s",
		 how, j->rec.dev_eui);
	last_error_set(&j->rec, j->res.reason);
	commit(j, on_failed);
}

/*
 * The current attempt certainly did not land (never sent, or refused): FAILED unless an
 * earlier attempt may still land, then report outcome.
 */
static void conclude_not_landed(struct job *j, const char *att_outcome, enum act_outcome outcome)
{
	j->rec.maybe_at = j->prev_maybe_at;
	attempt_outcome(j, att_outcome);
	last_error_set(&j->rec, j->res.reason[0] ? j->res.reason : j->res.message);
	if (j->rec.maybe_at == 0) {
		j->rec.state = STORE_FAILED;
		j->res.outcome = outcome;
	} else {
		j->res.outcome = ACT_UNKNOWN;
		j->res.retry_after = activation_retry_after(j->a, &j->rec);
	}
	commit(j, on_failed);
}

/* ---- the cloud ---- */

static void on_import(const struct tpa_result *t, void *arg)
{
	struct job *j = arg;
	result_from_tpa(j, t);
	/* It may land from its first byte on: after a wait for a session, maybe long after
	 * it was recorded (maybe_at). */
	seen_set(j->a, j->rec.dev_eui, j->att.n, j->import_mono + (int64_t)t->sent_after_ms);
	switch (t->outcome) {
	case TPA_OK:
		commit_issued(j, t->owner_token, t->ref);
		return;
	case TPA_CONFLICT:
		if (j->prev_maybe_at) {
			/* An earlier attempt of ours may have landed: the query tells. */
			j->after_conflict = true;
			j->rec.maybe_at = j->prev_maybe_at;
			attempt_outcome(j, "conflict");
			step_query(j);
			return;
		}
		attempt_outcome(j, "conflict");
		commit_foreign(j, "409 to our import");
		return;
	case TPA_REJECTED:
		/* Without an answer of the API's (a refused OAuth2 client), it was not sent. */
		conclude_not_landed(j, t->http_status ? "refused" : "not-sent", ACT_REJECTED);
		return;
	case TPA_UNAVAILABLE:
		/* Never sent, refused for now (429, 503), or its only send answered 401. */
		if (t->http_status == 0 || t->http_status == 429 || t->http_status == 503 ||
		    t->http_status == 401) {
			if (!j->res.reason[0])
				snprintf(j->res.reason, sizeof(j->res.reason),
					 "the cloud answered %d", t->http_status);
			conclude_not_landed(j, t->http_status ? "refused" : "not-sent",
					    ACT_UNAVAILABLE);
			return;
		}
		/* Another 5xx may have come after the import was done: ask. */
		step_query(j);
		return;
	case TPA_UNKNOWN:
	case TPA_NOT_FOUND:
	case TPA_OUTCOME_MAX:
		break;
	}
	/* No usable answer to an import that may have been sent: ask. */
	step_query(j);
}

/* The attempt is committed: send it. */
static void on_attempt_recorded(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	if (err == -EEXIST) {
		step_lookup(j);
		return;
	}
	if (err == -EALREADY) {
		/* Another tpad claimed the device first: nothing was sent; see what it does. */
		job_wait_claim(j, 0, NULL);
		return;
	}
	if (err < 0) {
		/* Nothing was sent: the row (if any) keeps its last committed state. */
		job_fail(j, err == -EAGAIN ? ACT_BUSY : ACT_STORE_FAILED, "%s",
			 reason && *reason ? reason : strerror(-err));
		return;
	}
	struct tpa_record tr;
	tpa_record_of(&j->rec, &tr);
	tr.owner = j->req.owner;
	j->import_mono = mono_now(j->a);
	int r = j->a->ops->import(j->a->ctx, &tr, on_import, j);
	cred_wipe(&tr, sizeof(tr));
	if (r < 0) {
		bool busy = r == -EBUSY || r == -EAGAIN;
		snprintf(j->res.reason, sizeof(j->res.reason), "cannot send the import: %s",
			 busy ? "upstream queue full" : strerror(-r));
		conclude_not_landed(j, "not-sent", busy ? ACT_BUSY : ACT_UNAVAILABLE);
	}
}

/* Record attempt number attempts + 1 of j->rec (PENDING), then send it. */
static void send_attempt(struct job *j, bool insert)
{
	struct activation *a = j->a;
	if (j->imports >= ACT_MAX_IMPORTS) {
		job_fail(j, ACT_UNKNOWN, "no answer from the cloud after %u imports", j->imports);
		return;
	}
	j->imports++;
	j->queries = 0;
	j->prev_maybe_at = j->rec.maybe_at;
	int64_t now = a->ops->now_ms(a->ctx);
	j->rec.state = STORE_PENDING;
	j->rec.attempts++;
	j->rec.maybe_at = now;
	j->rec.last_error[0] = '\0';
	memset(&j->att, 0, sizeof(j->att));
	j->att.n = j->rec.attempts;
	j->att.at = now;
	activation_digest(&j->rec, j->att.digest);
	snprintf(j->att.outcome, sizeof(j->att.outcome), "sending");
	int r = a->ops->write_attempt(a->ctx, &j->rec, insert, &j->att, on_attempt_recorded, j);
	if (r < 0)
		on_attempt_recorded(r, strerror(-r), j);
}

/* A write whose outcome changes nothing for the job (history only). */
static void on_noted(int err, const char *reason, void *arg)
{
}

/* The query says the cloud has no such device. */
static void on_not_found(struct job *j)
{
	struct activation *a = j->a;
	int64_t now = a->ops->now_ms(a->ctx), mono = mono_now(a);
	/*
	 * The attempt was recorded before the query was sent: a maybe_at later than that says
	 * only that the wall clock stepped back since (or another line's runs ahead), and
	 * nothing of when the window ends; the monotonic one below still holds it.
	 */
	int64_t trusted_at = j->rec.maybe_at && j->rec.maybe_at <= j->query_at
				 ? j->rec.maybe_at + a->settle_after_ms
				 : 0;
	/*
	 * The same window on the monotonic clock: from our import's first byte; for an
	 * attempt this process did not send, from its start (a restart) or, on a shared
	 * store, from its first look (another line's claim ran out).
	 */
	int64_t from = 0, trusted_mono = 0;
	if (j->rec.maybe_at && !seen_get(a, j->rec.dev_eui, j->rec.attempts, &from)) {
		/* Not ours: on our own store, sent (if ever) before this process started; on a
		 * shared one, maybe by a line whose claim ran out just now. */
		bool look = a->shared_store || a->seen_lost;
		from = look ? j->query_mono : a->started_mono;
		if (look)
			seen_set(a, j->rec.dev_eui, j->rec.attempts, from);
	}
	if (j->rec.maybe_at)
		trusted_mono = from + a->settle_after_ms;
	/*
	 * What counts is when the query was sent: one sent before trusted_at and answered
	 * after it saw the cloud at a time an import could still land (the model found this).
	 */
	if (j->query_at < trusted_at || j->query_mono < trusted_mono) {
		/* An import of ours may still be on its way in: wait, never send another. */
		a->stats.not_yet_trusted++;
		int64_t left = trusted_at - now > trusted_mono - mono ? trusted_at - now
									: trusted_mono - mono;
		j->res.retry_after = left > 0 ? (int)((left + 999) / 1000) : 1;
		job_fail(j, ACT_UNKNOWN,
			 "the cloud does not list the device yet, and an import sent at most "
			 "upstream.settle-after ago may still land");
		return;
	}
	if (j->req.adopt) {
		job_fail(j, ACT_NOT_FOUND, "the cloud does not hold this device: nothing to adopt");
		return;
	}
	if (j->after_conflict) {
		/* 409, then "not found": the cloud contradicts itself. Ask again later. */
		job_fail(j, ACT_UNKNOWN, "the cloud answered 409 but its query does not list the "
					 "device");
		return;
	}
	/* Every attempt that may have landed is now known not to have: import again. */
	if (j->rec.attempts && j->rec.maybe_at) {
		a->stats.reimported++;
		attempt_outcome(j, "disproved");
		j->rec.maybe_at = 0;
		j->prev_maybe_at = 0;
		/*
		 * The disproof is queued before the next attempt, so it commits first; if it
		 * is lost, the next attempt's commit sets maybe_at all the same.
		 */
		int r = a->ops->write_attempt(a->ctx, &j->rec, false, &j->att, on_noted, NULL);
		(void)r;
	}
	send_attempt(j, false);
}

/* Whether the cloud's answer shows a record other than ours (fields it shows only). */
static bool cloud_record_differs(const struct tpa_result *t, const struct store_record *r)
{
	if (t->join_eui[0] && strcmp(t->join_eui, r->join_eui) != 0)
		return true;
	if (t->tkm_info[0] && strcmp(t->tkm_info, r->tkm_info) != 0)
		return true;
	if (t->app_key[0]) {
		char hex[33];
		if (!r->has_app_key)
			return true;
		hex_encode(r->app_key, sizeof(r->app_key), hex);
		bool differs = strcmp(hex, t->app_key) != 0;
		cred_wipe(hex, sizeof(hex));
		return differs;
	}
	return false;
}

static void on_query(const struct tpa_result *t, void *arg)
{
	struct job *j = arg;
	struct activation *a = j->a;
	if (t->outcome == TPA_OK) {
		if (j->req.adopt) {
			a->stats.adopted++;
			commit_issued(j, t->owner_token, t->ref);
			return;
		}
		if (cloud_record_differs(t, &j->rec)) {
			/* Held with another record: no attempt of ours explains that. */
			commit_foreign(j, "with another record");
			return;
		}
		if (j->rec.maybe_at) {
			/* One of our own attempts, with this record, may explain it: adopt. */
			a->stats.settled_by_query++;
			commit_issued(j, t->owner_token, t->ref);
			return;
		}
		commit_foreign(j, "its query lists it");
		return;
	}
	if (t->outcome == TPA_NOT_FOUND) {
		on_not_found(j);
		return;
	}
	result_from_tpa(j, t);
	if (j->queries < ACT_MAX_QUERIES && t->outcome != TPA_REJECTED) {
		step_query(j);
		return;
	}
	j->res.retry_after = -1; /* back off */
	job_fail(j, ACT_UNKNOWN,
		 "the import may have reached the cloud and the query to settle it failed: %s",
		 t->reason[0] ? t->reason : t->message);
}

/* Ask the cloud whether it has the device (read-only). */
static void step_query(struct job *j)
{
	j->queries++;
	j->query_at = j->a->ops->now_ms(j->a->ctx);
	j->query_mono = mono_now(j->a);
	int r = j->a->ops->query(j->a->ctx, j->rec.dev_eui, on_query, j);
	if (r < 0) {
		j->res.retry_after = -1;
		job_fail(j, ACT_UNKNOWN, "cannot query the cloud to settle the outcome: %s",
			 strerror(-r));
	}
}

/* ---- the store ---- */

/* Build j->rec, a new PENDING row, from the request; false after failing the job. */
static bool build_record(struct job *j)
{
	struct activation *a = j->a;
	const struct act_request *q = &j->req;
	struct store_record *r = &j->rec;
	uint32_t attempts = r->attempts;
	memset(r, 0, sizeof(*r));
	r->attempts = attempts;
	memcpy(r->dev_eui, q->dev_eui, sizeof(r->dev_eui));
	snprintf(r->join_eui, sizeof(r->join_eui), "%s",
		 q->join_eui[0] ? q->join_eui : a->default_join_eui);
	snprintf(r->profile_id, sizeof(r->profile_id), "%s",
		 q->profile_id[0] ? q->profile_id : a->default_profile_id);
	memcpy(r->serial, q->serial, sizeof(r->serial));
	memcpy(r->tkm_info, q->tkm_info, sizeof(r->tkm_info));
	if (q->has_app_key) {
		memcpy(r->app_key, q->app_key, sizeof(r->app_key));
		r->has_app_key = true;
	} else if (q->generate_app_key) {
		int rr = a->ops->new_app_key(a->ctx, r->dev_eui, r->app_key);
		if (rr == -EAGAIN) {
			/* The cloud-HSM key pool is empty: nothing was sent, retry shortly. */
			j->res.retry_after = 1;
			job_fail(j, ACT_UNAVAILABLE,
				 "no AppKey ready: the cloud-HSM key pool is empty and refilling");
			return false;
		}
		if (rr < 0) {
			job_fail(j, ACT_STORE_FAILED, "cannot generate an AppKey: %s",
				 strerror(-rr));
			return false;
		}
		r->has_app_key = true;
		r->app_key_generated = true;
	}
	r->state = STORE_PENDING;
	snprintf(r->origin, sizeof(r->origin), "%s", q->origin ? q->origin : "activate");
	r->uid = q->uid;
	r->pid = q->pid;
	return true;
}

static void on_wait_done(void *arg)
{
	struct job *j = arg;
	j->lookups = 0;
	step_lookup(j);
}

/*
 * Another tpad on the shared store holds the device's claim (its import is in flight), or
 * wrote the row since we read it: read again shortly, and answer from the store once the
 * claim is released or expired. left_ms: how long the claim may still live.
 */
static void job_wait_claim(struct job *j, int64_t left_ms, const char *who)
{
	struct activation *a = j->a;
	if (!a->ops->later || ++j->waits > ACT_MAX_WAITS) {
		j->res.retry_after = left_ms > 0 ? (int)((left_ms + 999) / 1000) : 1;
		job_fail(j, ACT_UNKNOWN, "tpad %s is importing this device right now; ask again",
			 who && *who ? who : "another instance");
		return;
	}
	a->stats.claim_waits++;
	uint32_t ms = left_ms > 0 && left_ms < ACT_CLAIM_POLL_MS ? (uint32_t)left_ms + 1
								 : ACT_CLAIM_POLL_MS;
	int r = a->ops->later(a->ctx, ms, on_wait_done, j);
	if (r < 0)
		job_fail(j, ACT_STORE_FAILED, "cannot wait for the other tpad: %s", strerror(-r));
}

/* Read the store and decide. */
static void step_lookup(struct job *j)
{
	struct activation *a = j->a;
	if (++j->lookups > ACT_MAX_LOOKUPS) {
		job_fail(j, ACT_STORE_FAILED, "the store row of this device keeps changing");
		return;
	}
	memset(&j->rec, 0, sizeof(j->rec));
	int r = a->ops->get_async(a->ctx, j->req.dev_eui, on_lookup, j);
	if (r < 0)
		job_fail(j, ACT_STORE_FAILED, "cannot read the store: %s", strerror(-r));
}

static void on_lookup(int err, const struct store_record *rec, const char *reason, void *arg)
{
	struct job *j = arg;
	if (err == 0)
		j->rec = *rec;
	lookup_decide(j, err, reason);
}

/* Decide on what the store holds (r: 0, -ENOENT or the read's error). */
static void lookup_decide(struct job *j, int r, const char *reason)
{
	if (r == -ENOENT) {
		if (!req_has_keys(&j->req) || j->req.adopt) {
			job_fail(j, ACT_NOT_FOUND, "the store does not hold this device");
			return;
		}
		if (build_record(j))
			send_attempt(j, true);
		return;
	}
	if (r < 0) {
		job_fail(j, ACT_STORE_FAILED, "cannot read the store: %s",
			 reason && *reason ? reason : strerror(-r));
		return;
	}
	if (j->req.adopt) {
		if (j->rec.state != STORE_FOREIGN) {
			job_fail(j, ACT_CONFLICT, "the device is %s, not FOREIGN: nothing to adopt",
				 store_state_name(j->rec.state));
			return;
		}
		step_query(j);
		return;
	}
	if (j->rec.state == STORE_FAILED && req_has_keys(&j->req) &&
	    record_conflict(&j->req, &j->rec)) {
		/*
		 * The cloud refused every attempt of the stored record, so nothing of it was
		 * imported: a corrected record from the station replaces it.
		 */
		int64_t created = j->rec.created_at;
		if (!build_record(j))
			return;
		j->rec.created_at = created;
		send_attempt(j, false);
		return;
	}
	const char *why = record_conflict(&j->req, &j->rec);
	if (why) {
		job_fail(j, ACT_CONFLICT, "%s", why);
		return;
	}
	if (is_settle(j) && j->rec.state != STORE_PENDING) {
		/*
		 * Settled meanwhile (the list was read earlier): nothing for the settler, which
		 * imports nothing on its own (a FAILED row waits for a station or an import).
		 */
		j->res.skipped = true;
		job_finish(j, ACT_OK);
		return;
	}
	if (j->rec.state == STORE_PENDING && j->rec.lease_owner[0]) {
		/* Another tpad's import of this device is in flight: wait for its outcome. */
		job_wait_claim(j, j->rec.lease_left_ms, j->rec.lease_owner);
		return;
	}
	switch (j->rec.state) {
	case STORE_ISSUED:
		j->res.skipped = true;
		job_finish(j, ACT_OK);
		return;
	case STORE_PENDING:
		/* An earlier attempt may have reached the cloud: settle before anything else. */
		step_query(j);
		return;
	case STORE_FAILED:
		/* Certainly not imported: import the stored record again. */
		send_attempt(j, false);
		return;
	case STORE_FOREIGN:
		j->res.foreign = true;
		job_fail(j, ACT_CONFLICT,
			 "the cloud already holds this device from an import that was not ours; "
			 "an admin who knows it is ours can run tpactl adopt %s",
			 j->rec.dev_eui);
		return;
	case STORE_RETIRED: {
		/* The row keeps "retired: REASON" (Retire writes it so for ListDevices). */
		const char *said = j->rec.last_error;
		if (strncmp(said, "retired: ", 9) == 0)
			said += 9;
		job_fail(j, ACT_RETIRED, "the device was retired%s%s", *said ? ": " : "", said);
		return;
	}
	}
	job_fail(j, ACT_STORE_FAILED, "the store row has an unknown state");
}

/* Take the DevEUI, or wait behind the job that holds it. */
static void job_start(struct job *j)
{
	struct activation *a = j->a;
	struct job *owner = inflight_find(a, j->req.dev_eui);
	if (owner) {
		waiters_append(owner, j);
		return;
	}
	unsigned b = bucket_of(j->req.dev_eui);
	j->next_in_bucket = a->buckets[b];
	a->buckets[b] = j;
	if (j->hold) {
		j->hold((struct act_hold *)j, j->cb_arg);
		return;
	}
	step_lookup(j);
}

int activation_hold(struct activation *a, const char *dev_eui, act_hold_fn *fn, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->a = a;
	snprintf(j->req.dev_eui, sizeof(j->req.dev_eui), "%s", dev_eui);
	j->hold = fn;
	j->cb_arg = arg;
	job_start(j);
	return 0;
}

void activation_release(struct act_hold *h)
{
	struct job *j = (struct job *)h;
	if (!j)
		return;
	inflight_remove(j->a, j);
	job_release(j);
}

int activation_run(struct activation *a, const struct act_request *req, act_done_fn *cb, void *arg)
{
	struct job *j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	j->a = a;
	j->req = *req;
	j->cb = cb;
	j->cb_arg = arg;
	j->res.retry_after = -1;
	a->stats.in_flight++;
	job_start(j);
	return 0;
}

struct activation *activation_new(const struct activation_ops *ops, void *ctx,
				  const char *default_join_eui, const char *default_profile_id)
{
	struct activation *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->ops = ops;
	a->ctx = ctx;
	snprintf(a->default_join_eui, sizeof(a->default_join_eui), "%s", default_join_eui);
	snprintf(a->default_profile_id, sizeof(a->default_profile_id), "%s", default_profile_id);
	a->settle_after_ms = 60000;
	a->backoff_min_ms = 1000;
	a->backoff_max_ms = 30000;
	a->started_mono = mono_now(a);
	return a;
}

void activation_set_shared_store(struct activation *a, bool shared)
{
	a->shared_store = shared;
}

void activation_set_settle(struct activation *a, uint32_t settle_after_ms, uint32_t backoff_min_ms,
			   uint32_t backoff_max_ms)
{
	a->settle_after_ms = settle_after_ms;
	a->backoff_min_ms = backoff_min_ms ? backoff_min_ms : 1;
	a->backoff_max_ms = backoff_max_ms < a->backoff_min_ms ? a->backoff_min_ms : backoff_max_ms;
}

/* Free a job and everything waiting behind it, without callbacks. */
static void job_free_chain(struct job *j)
{
	while (j) {
		struct job *w = j->waiters, *next = j->next_waiter;
		job_free_chain(w);
		cred_wipe(j, sizeof(*j));
		free(j);
		j = next;
	}
}

void activation_free(struct activation *a)
{
	if (!a)
		return;
	if (a->listing)
		a->listing->a = NULL; /* its answer finds the activation gone */
	for (unsigned b = 0; b < ACT_BUCKETS; b++) {
		struct job *j = a->buckets[b];
		while (j) {
			struct job *next = j->next_in_bucket;
			j->next_waiter = NULL;
			job_free_chain(j);
			j = next;
		}
		struct settle_entry *e = a->due[b];
		while (e) {
			struct settle_entry *next = e->next;
			free(e);
			e = next;
		}
		struct seen_attempt *sa = a->seen[b];
		while (sa) {
			struct seen_attempt *next = sa->next;
			free(sa);
			sa = next;
		}
	}
	free(a->pending);
	free(a);
}

void activation_count_lookup(struct activation *a)
{
	if (a)
		a->stats.looked_up++;
}

void activation_get_stats(const struct activation *a, struct activation_stats *ret)
{
	*ret = a->stats;
}

/* ---- settling PENDING rows ---- */

/* Collect the DevEUIs of PENDING rows whose settlement is due. */
static int collect_pending(const struct store_record *r, void *arg)
{
	struct activation *a = arg;
	if (inflight_find(a, r->dev_eui))
		return 0; /* a request in flight settles it */
	if (r->lease_owner[0])
		return 0; /* another tpad's import is in flight: its claim must expire first */
	if (a->settle_only_due) {
		struct settle_entry *e = *due_find(a, r->dev_eui);
		if (e && e->due_ms > mono_now(a))
			return 0;
	}
	if (a->n_pending % 256 == 0) {
		char(*np)[17] = realloc(a->pending, (a->n_pending + 256) * sizeof(*np));
		if (!np)
			return -ENOMEM;
		a->pending = np;
	}
	memcpy(a->pending[a->n_pending++], r->dev_eui, 17);
	return 0;
}

static void settle_next(struct activation *a);
static int settle_list(struct activation *a);

/* One PENDING row settled (or not). */
static void on_settled(const struct act_result *res, void *arg)
{
	struct activation *a = arg;
	if (res->outcome == ACT_UNKNOWN || res->outcome == ACT_STORE_FAILED ||
	    res->outcome == ACT_BUSY) {
		a->still_pending++;
		snprintf(a->settle_why, sizeof(a->settle_why), "%s",
			 res->reason[0] ? res->reason : activation_outcome_name(res->outcome));
	}
	a->settle_active--;
	settle_next(a);
}

/* Keep up to settle_max settlements running; report when all are done. */
static void settle_next(struct activation *a)
{
	while (a->settle_active < a->settle_max && a->next_pending < a->n_pending) {
		struct act_request q = {.method = "settle", .origin = "activate"};
		memcpy(q.dev_eui, a->pending[a->next_pending++], 17);
		a->settle_active++;
		a->stats.settle_runs++;
		if (activation_run(a, &q, on_settled, a) < 0) {
			a->settle_active--;
			a->still_pending++;
		}
	}
	if (a->settle_active == 0 && a->next_pending == a->n_pending && a->settle_done &&
	    !a->listing) {
		free(a->pending);
		a->pending = NULL;
		a->n_pending = a->next_pending = 0;
		/* A whole pass (start-up) goes on with the next page. */
		if (!a->settle_only_due && a->settle_page_full && settle_list(a) == 0)
			return;
		void (*done)(unsigned, void *) = a->settle_done;
		a->settle_done = NULL;
		/* The count of a cycle is known once it wrapped around. */
		if (!a->settle_cursor[0]) {
			a->last_still_pending = a->cycle_still + a->still_pending;
			a->cycle_still = 0;
		} else {
			a->cycle_still += a->still_pending;
		}
		done(a->last_still_pending, a->settle_arg);
	}
}

const char *activation_settle_why(const struct activation *a)
{
	return a->settle_why;
}

/* The default end of a settlement nobody waits for. */
static void settle_ignore(unsigned still_pending, void *arg)
{
}

/* The store listed the PENDING rows: settle those whose time has come. */
static void on_pending_listed(int err, const char *reason, const struct store_rows *rows,
			      void *arg)
{
	struct pending_listing *l = arg;
	struct activation *a = l->a;
	free(l);
	if (!a)
		return;
	a->listing = NULL;
	a->settle_page_full = !err && rows->n >= ACT_SETTLE_PAGE;
	if (a->settle_page_full)
		memcpy(a->settle_cursor, rows->records[rows->n - 1].dev_eui, 17);
	else
		a->settle_cursor[0] = '\0'; /* the end: the next page starts again */
	if (err)
		a->cycle_still = a->last_still_pending; /* not known: as the last cycle left it */
	for (size_t i = 0; !err && i < rows->n; i++)
		if (collect_pending(&rows->records[i], a) < 0)
			break; /* out of memory: the rest is settled by a later pass */
	settle_next(a);
}

/* Ask the store for the next page of PENDING rows. */
static int settle_list(struct activation *a)
{
	struct pending_listing *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->a = a;
	a->listing = l;
	a->still_pending = 0;
	/* The answer may come inside this call (then the pass may be over already). */
	int r = a->ops->list_pending(a->ctx, a->settle_cursor, ACT_SETTLE_PAGE, on_pending_listed,
				     l);
	if (r < 0) {
		free(l);
		a->listing = NULL;
	}
	return r;
}

/* Start a settlement pass over the PENDING rows (all of them, or those due). */
static int settle_start(struct activation *a, bool only_due, unsigned concurrency,
			void (*done)(unsigned still_pending, void *arg), void *arg)
{
	if (a->settle_done)
		return -EBUSY;
	free(a->pending);
	a->pending = NULL;
	a->n_pending = a->next_pending = 0;
	a->settle_only_due = only_due;
	a->settle_max = concurrency ? concurrency : 1;
	if (!only_due) {
		/* A whole pass: every page from the start, one cycle. */
		a->settle_cursor[0] = '\0';
		a->cycle_still = 0;
	}
	a->settle_done = done ? done : settle_ignore;
	a->settle_arg = arg;
	int r = settle_list(a);
	if (r < 0)
		a->settle_done = NULL;
	return r < 0 ? r : 0;
}

int activation_reconcile(struct activation *a, unsigned concurrency,
			 void (*done)(unsigned still_pending, void *arg), void *arg)
{
	return settle_start(a, false, concurrency, done, arg);
}

int activation_settle_due(struct activation *a, unsigned concurrency,
			  void (*done)(unsigned still_pending, void *arg), void *arg)
{
	return settle_start(a, true, concurrency, done, arg);
}
