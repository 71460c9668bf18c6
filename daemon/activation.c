/* activation: the exactly-once rules of getting a device's ownerToken, driven by callbacks. */
#include "activation.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cred.h"
#include "hex.h"

/*
 * The rules, per DevEUI:
 *  - One job at a time per DevEUI; later requests for it wait and then see its result.
 *  - A new device is committed PENDING (with its full record) before the import is sent,
 *    and ISSUED with its token after; the caller hears of the token only after that
 *    commit returned, so a crash can never lose a token a station received.
 *  - Once an import was (maybe) sent, it is never sent again blindly: a lost answer, a
 *    409 or a 5xx other than 503 is settled with the read-only query. The cloud has the
 *    device: adopt its token. It has not: import once more. The query fails too: the
 *    outcome is unknown and the row stays PENDING, to be settled later the same way.
 *  - A definite "not imported" (4xx, 429, 503, never sent) marks the row FAILED; a later
 *    request imports it again, with the station's corrected record if it brings one.
 *  - The same DevEUI with another record is a conflict; with the same record (or no key
 *    material at all, the offline mode) it is answered from the store.
 */

#define ACT_MAX_IMPORTS 3 /* import attempts per job, each after a query proved none landed */
#define ACT_MAX_LOOKUPS 3 /* store reads per job (an insert can race with another writer) */
#define ACT_MAX_QUERIES 3 /* read-only queries per settlement: asking again is harmless */
#define ACT_BUCKETS 1024

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
	unsigned imports;
	unsigned lookups;
	unsigned queries;    /* of the current settlement */
	bool after_conflict; /* the query follows a 409 */
};

struct activation {
	const struct activation_ops *ops;
	void *ctx;
	char default_join_eui[17];
	char default_profile_id[9];
	struct job *buckets[ACT_BUCKETS];
	struct activation_stats stats;
	/* reconcile */
	char (*pending)[17];
	size_t n_pending, next_pending;
	unsigned reconcile_active, reconcile_max;
	unsigned still_pending;
	void (*reconcile_done)(unsigned still_pending, void *arg);
	void *reconcile_arg;
};

static void job_start(struct job *j);
static void step_lookup(struct job *j);
static void step_import(struct job *j);
static void step_query(struct job *j);

const char *activation_outcome_name(enum act_outcome o)
{
	static const char *const names[] = {"ok",	   "not_found", "conflict", "rejected",
					    "unavailable", "unknown",	"busy",	    "store_failed"};
	return (unsigned)o <= ACT_STORE_FAILED ? names[o] : "?";
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

/* Append w to the waiters of owner. */
static void waiters_append(struct job *owner, struct job *w)
{
	struct job **pp = &owner->waiters;
	while (*pp)
		pp = &(*pp)->next_waiter;
	*pp = w;
}

/* Report the result, release the DevEUI and start whoever waited for it. */
static void job_finish(struct job *j, enum act_outcome outcome)
{
	struct activation *a = j->a;
	j->res.outcome = outcome;
	if (outcome == ACT_OK) {
		j->res.rec = j->rec;
		if (j->res.live)
			a->stats.live++;
		else
			a->stats.stored++;
		a->ops->audit(a->ctx, j->rec.dev_eui, j->req.method, j->req.uid, j->req.pid,
			      j->res.live ? "live" : "stored");
	}
	a->stats.outcomes[outcome]++;
	a->stats.in_flight--;
	inflight_remove(a, j);
	struct job *w = j->waiters;
	j->cb(&j->res, j->cb_arg);
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

/* ISSUED is committed: now the caller may hear of the token. */
static void on_issued(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	if (err < 0) {
		/* The row stays PENDING: the next request or restart adopts the token by query. */
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
	j->res.live = true;
	int r = j->a->ops->update(j->a->ctx, &j->rec, on_issued, j);
	if (r < 0)
		on_issued(r, strerror(-r), j);
}

/* FAILED is committed (or could not be): report the failure kept in res. */
static void on_failed(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	/* If the commit failed the row stays PENDING, which is only more cautious. */
	job_finish(j, j->res.outcome);
}

/* The cloud certainly did not import the device: record that, then report outcome. */
static void fail_not_imported(struct job *j, enum act_outcome outcome)
{
	j->res.outcome = outcome;
	j->rec.state = STORE_FAILED;
	snprintf(j->rec.last_error, sizeof(j->rec.last_error), "%s",
		 j->res.reason[0] ? j->res.reason : j->res.message);
	int r = j->a->ops->update(j->a->ctx, &j->rec, on_failed, j);
	if (r < 0)
		job_finish(j, outcome);
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

static void on_import(const struct tpa_result *t, void *arg)
{
	struct job *j = arg;
	result_from_tpa(j, t);
	switch (t->outcome) {
	case TPA_OK:
		commit_issued(j, t->owner_token, t->ref);
		return;
	case TPA_CONFLICT:
		j->after_conflict = true;
		step_query(j);
		return;
	case TPA_REJECTED:
		fail_not_imported(j, ACT_REJECTED);
		return;
	case TPA_UNAVAILABLE:
		if (t->http_status == 0 || t->http_status == 429 || t->http_status == 503) {
			if (!j->res.reason[0])
				snprintf(j->res.reason, sizeof(j->res.reason),
					 "the cloud answered %d", t->http_status);
			fail_not_imported(j, ACT_UNAVAILABLE);
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

/* Send the import of j->rec (committed PENDING). */
static void step_import(struct job *j)
{
	if (j->imports >= ACT_MAX_IMPORTS) {
		job_fail(j, ACT_UNKNOWN, "no answer from the cloud after %u imports", j->imports);
		return;
	}
	j->imports++;
	j->queries = 0;
	struct tpa_record tr;
	tpa_record_of(&j->rec, &tr);
	int r = j->a->ops->import(j->a->ctx, &tr, on_import, j);
	cred_wipe(&tr, sizeof(tr));
	if (r < 0) {
		snprintf(j->res.reason, sizeof(j->res.reason), "cannot send the import: %s",
			 r == -EBUSY || r == -EAGAIN ? "upstream queue full" : strerror(-r));
		fail_not_imported(j, r == -EBUSY || r == -EAGAIN ? ACT_BUSY : ACT_UNAVAILABLE);
	}
}

static void on_query(const struct tpa_result *t, void *arg)
{
	struct job *j = arg;
	struct activation *a = j->a;
	if (t->outcome == TPA_OK) {
		a->stats.settled_by_query++;
		commit_issued(j, t->owner_token, t->ref);
		return;
	}
	if (t->outcome == TPA_NOT_FOUND) {
		if (j->after_conflict) {
			/* 409 but the query knows no such device: the cloud refuses it. */
			j->res.outcome = ACT_REJECTED;
			snprintf(j->res.reason, sizeof(j->res.reason),
				 "the cloud answered 409 but its query does not list the device");
			fail_not_imported(j, ACT_REJECTED);
			return;
		}
		if (j->imports)
			a->stats.reimported++;
		step_import(j);
		return;
	}
	result_from_tpa(j, t);
	if (j->queries < ACT_MAX_QUERIES && t->outcome != TPA_REJECTED) {
		step_query(j);
		return;
	}
	job_fail(j, ACT_UNKNOWN,
		 "the import may have reached the cloud and the query to settle it failed: %s",
		 t->reason[0] ? t->reason : t->message);
}

/* Ask the cloud whether it has the device (read-only). */
static void step_query(struct job *j)
{
	j->queries++;
	int r = j->a->ops->query(j->a->ctx, j->rec.dev_eui, on_query, j);
	if (r < 0)
		job_fail(j, ACT_UNKNOWN, "cannot query the cloud to settle the outcome: %s",
			 strerror(-r));
}

/* The PENDING row of a new device is committed: import. */
static void on_inserted(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	if (err == -EEXIST) {
		step_lookup(j);
		return;
	}
	if (err == -EAGAIN) {
		job_fail(j, ACT_BUSY, "store queue full");
		return;
	}
	if (err < 0) {
		job_fail(j, ACT_STORE_FAILED, "%s", reason ? reason : strerror(-err));
		return;
	}
	step_import(j);
}

/* A FAILED row set back to PENDING is committed: import. */
static void on_retry_committed(int err, const char *reason, void *arg)
{
	struct job *j = arg;
	if (err < 0) {
		job_fail(j, err == -EAGAIN ? ACT_BUSY : ACT_STORE_FAILED, "%s",
			 reason ? reason : strerror(-err));
		return;
	}
	step_import(j);
}

/* Build j->rec, a PENDING row, from the request; false after failing the job. */
static bool build_record(struct job *j)
{
	struct activation *a = j->a;
	const struct act_request *q = &j->req;
	struct store_record *r = &j->rec;
	memset(r, 0, sizeof(*r));
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
		int rr = a->ops->random(a->ctx, r->app_key, sizeof(r->app_key));
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

/* A device the store does not hold: commit its PENDING row, then import. */
static void start_new(struct job *j)
{
	if (!build_record(j))
		return;
	int rr = j->a->ops->insert(j->a->ctx, &j->rec, on_inserted, j);
	if (rr < 0)
		on_inserted(rr, strerror(-rr), j);
}

/* Read the store and decide. */
static void step_lookup(struct job *j)
{
	struct activation *a = j->a;
	if (++j->lookups > ACT_MAX_LOOKUPS) {
		job_fail(j, ACT_STORE_FAILED, "the store row of this device keeps changing");
		return;
	}
	int r = a->ops->get(a->ctx, j->req.dev_eui, &j->rec);
	if (r == -ENOENT) {
		if (!req_has_keys(&j->req)) {
			job_fail(j, ACT_NOT_FOUND, "the store does not hold this device");
			return;
		}
		start_new(j);
		return;
	}
	if (r < 0) {
		job_fail(j, ACT_STORE_FAILED, "cannot read the store: %s", strerror(-r));
		return;
	}
	if (j->rec.state == STORE_FAILED && req_has_keys(&j->req) &&
	    record_conflict(&j->req, &j->rec)) {
		/*
		 * The cloud refused the stored record, so nothing of it was imported: a
		 * corrected record from the station replaces it.
		 */
		int64_t created = j->rec.created_at;
		if (!build_record(j))
			return;
		j->rec.created_at = created;
		r = a->ops->update(a->ctx, &j->rec, on_retry_committed, j);
		if (r < 0)
			on_retry_committed(r, strerror(-r), j);
		return;
	}
	const char *why = record_conflict(&j->req, &j->rec);
	if (why) {
		job_fail(j, ACT_CONFLICT, "%s", why);
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
		j->rec.state = STORE_PENDING;
		r = a->ops->update(a->ctx, &j->rec, on_retry_committed, j);
		if (r < 0)
			on_retry_committed(r, strerror(-r), j);
		return;
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
	step_lookup(j);
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
	return a;
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
	for (unsigned b = 0; b < ACT_BUCKETS; b++) {
		struct job *j = a->buckets[b];
		while (j) {
			struct job *next = j->next_in_bucket;
			j->next_waiter = NULL;
			job_free_chain(j);
			j = next;
		}
	}
	free(a->pending);
	free(a);
}

void activation_get_stats(const struct activation *a, struct activation_stats *ret)
{
	*ret = a->stats;
}

/* Collect the DevEUIs of PENDING rows. */
static int collect_pending(const struct store_record *r, void *arg)
{
	struct activation *a = arg;
	if (a->n_pending % 256 == 0) {
		char(*np)[17] = realloc(a->pending, (a->n_pending + 256) * sizeof(*np));
		if (!np)
			return -ENOMEM;
		a->pending = np;
	}
	memcpy(a->pending[a->n_pending++], r->dev_eui, 17);
	return 0;
}

static void reconcile_next(struct activation *a);

/* One PENDING row settled (or not). */
static void on_reconciled(const struct act_result *res, void *arg)
{
	struct activation *a = arg;
	if (res->outcome != ACT_OK && res->outcome != ACT_REJECTED &&
	    res->outcome != ACT_UNAVAILABLE)
		a->still_pending++;
	a->reconcile_active--;
	reconcile_next(a);
}

/* Keep up to reconcile_max settlements running; report when all are done. */
static void reconcile_next(struct activation *a)
{
	while (a->reconcile_active < a->reconcile_max && a->next_pending < a->n_pending) {
		struct act_request q = {.method = "reconcile", .origin = "activate"};
		memcpy(q.dev_eui, a->pending[a->next_pending++], 17);
		a->reconcile_active++;
		if (activation_run(a, &q, on_reconciled, a) < 0) {
			a->reconcile_active--;
			a->still_pending++;
		}
	}
	if (a->reconcile_active == 0 && a->next_pending == a->n_pending && a->reconcile_done) {
		void (*done)(unsigned, void *) = a->reconcile_done;
		a->reconcile_done = NULL;
		free(a->pending);
		a->pending = NULL;
		a->n_pending = a->next_pending = 0;
		done(a->still_pending, a->reconcile_arg);
	}
}

/* The default end of a reconciliation nobody waits for. */
static void reconcile_ignore(unsigned still_pending, void *arg)
{
}

int activation_reconcile(struct activation *a, unsigned concurrency,
			 void (*done)(unsigned still_pending, void *arg), void *arg)
{
	if (a->reconcile_done)
		return -EBUSY;
	free(a->pending);
	a->pending = NULL;
	a->n_pending = a->next_pending = 0;
	int r = a->ops->list_pending(a->ctx, collect_pending, a);
	if (r < 0)
		return r;
	a->reconcile_max = concurrency ? concurrency : 1;
	a->still_pending = 0;
	a->reconcile_done = done ? done : reconcile_ignore;
	a->reconcile_arg = arg;
	reconcile_next(a);
	return 0;
}
