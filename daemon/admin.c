/* admin: the io.tpad.Admin device methods — Import, Export, ListDevices and GetDevice. */
#include "admin.h"
#include "clock.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/queue.h>

#include "activation.h"
#include "config.h"
#include "cred.h"
#include "hex.h"
#include "label.h"
#include "log.h"
#include "message.h"
#include "qr.h"
#include "server.h"
#include "station.h"
#include "store.h"
#include "tpad.h"

#define IMPORT_MAX_WAITING_CALLS 16 /* Import calls queued behind the running one */
#define IMPORT_MAX_ATTEMPTS 8	    /* tries of one row the cloud could not take yet */
#define IMPORT_MAX_WAITS 64     /* waits of one row whose import may still land */
#define IMPORT_BACKOFF_MIN_MS 200
#define IMPORT_BACKOFF_MAX_MS 10000
#define IMPORT_RETRY_AFTER_MAX_S 300 /* a longer Retry-After is cut to this */
#define IMPORT_HOLD_AFTER 4	     /* unavailable rows in a row that pause the whole call */
#define IMPORT_TICK_MS 50
#define IMPORT_PROGRESS_MS 200
#define IMPORT_LOGGED_FAILURES 10 /* failed rows logged one by one per call */

#define EXPORT_PAGE 256		      /* devices read from the store at once */
#define EXPORT_MAX_PENDING (1u << 20) /* reply bytes waiting for the client */
#define EXPORT_SLICE 64		      /* labels per turn of the event loop */
#define EXPORT_RESUME_MS 5

#define LIST_DEFAULT 100
#define LIST_MAX 1000
#define AUDIT_MAX 1000 /* the newest entries GetDevice shows */

/* ---- shared helpers ---- */

/* Send an InvalidParameter error of the admin interface. */
static void invalid(struct req *r, const char *parameter, const char *reason)
{
	req_error(r, "io.tpad.Admin.InvalidParameter",
		  json_pack("{s:s, s:s}", "parameter", parameter, "reason", reason));
}

/* Send a StoreFailed error for a negative errno. */
static void store_failed(struct req *r, int err, const char *reason)
{
	req_error(r, "io.tpad.Admin.StoreFailed",
		  json_pack("{s:s}", "reason", reason && *reason ? reason : strerror(-err)));
}

/* The state filter of a call: -1 for none, else the state; -EINVAL if unknown. */
static int param_state(json_t *params, int *ret)
{
	const char *s = json_string_value(json_object_get(params, "state"));
	if (!s) {
		*ret = -1;
		return 0;
	}
	char up[16];
	size_t n = strlen(s);
	if (n >= sizeof(up))
		return -EINVAL;
	for (size_t i = 0; i <= n; i++)
		up[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 'a' + 'A' : s[i]);
	enum store_state st;
	if (store_state_parse(up, &st) < 0)
		return -EINVAL;
	*ret = (int)st;
	return 0;
}

/* Milliseconds to a timeval. */
static struct timeval ms_tv(uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

/* The DeviceInfo object of a record: never the AppKey, only whether there is one. */
static json_t *device_info(const struct config *cfg, const struct store_record *rec)
{
	json_t *d = label_device_json(cfg, rec, NULL, false);
	if (!d)
		return NULL;
	if (!rec->owner_token[0])
		json_object_del(d, "ownerToken");
	const char *qr = json_string_value(json_object_get(d, "qrText"));
	if (qr && !qr[0])
		json_object_del(d, "qrText");
	json_object_set_new(d, "created", json_integer(rec->created_at / 1000));
	json_object_set_new(d, "updated", json_integer(rec->updated_at / 1000));
	if (rec->origin[0])
		json_object_set_new(d, "origin", json_string(rec->origin));
	if (rec->last_error[0] && rec->state != STORE_ISSUED)
		json_object_set_new(d, "lastError", json_string(rec->last_error));
	json_object_set_new(d, "attempts", json_integer(rec->attempts));
	if (rec->instance[0])
		json_object_set_new(d, "instance", json_string(rec->instance));
	return d;
}

/* ---- Import ---- */

enum row_state {
	ROW_NEW,
	ROW_RUNNING,
	ROW_WAITING, /* for a retry timer */
	ROW_DONE,
};

struct import_call;

struct import_row {
	struct import_call *call;
	struct import_row *next_waiting;
	struct act_request q; /* holds the AppKey in clear until the row is done */
	json_int_t line;
	unsigned attempts;
	unsigned waits; /* for an import that may still land */
	enum row_state state;
	uint64_t retry_at_us;
};

struct import_call {
	struct tpad *t;
	struct req *r;
	TAILQ_ENTRY(import_call) entry;
	struct import_row *rows;
	size_t n, next;
	struct import_row *waiting; /* rows waiting for a retry */
	unsigned in_flight, concurrency;
	size_t done, issued, skipped, failed;
	unsigned unavailable_in_a_row;
	json_t *failures;
	struct event *tick;
	uint64_t hold_until_us;
	uint64_t started_us, last_progress_us;
	size_t last_progress_done;
	uint32_t rand;
	bool pumping, started, final;
};

static TAILQ_HEAD(import_queue, import_call) import_calls = TAILQ_HEAD_INITIALIZER(import_calls);
static size_t import_n_calls;

/* Totals of the batch (calls up to final: true) of one admin connection, for the log. */
static struct {
	uint64_t conn_id;
	size_t total, issued, skipped, failed;
	uint64_t started_us;
} batch;

static void import_pump(struct import_call *c);

/* A pseudo-random number for retry jitter (xorshift32). */
static uint32_t import_rand(struct import_call *c)
{
	uint32_t x = c->rand;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	c->rand = x;
	return x;
}

/* Record a failed row with its reason. */
static void row_fail(struct import_row *row, const char *reason)
{
	struct import_call *c = row->call;
	row->state = ROW_DONE;
	c->done++;
	c->failed++;
	json_array_append_new(c->failures, json_pack("{s:I, s:s, s:s}", "line", row->line, "devEUI",
						     row->q.dev_eui, "reason", reason));
	if (c->failed <= IMPORT_LOGGED_FAILURES)
		log_notice("import of %s (line %lld) failed: %s", row->q.dev_eui,
			   (long long)row->line, reason);
	cred_wipe(&row->q.app_key, sizeof(row->q.app_key));
}

/* The human reason of a failed activation. */
static void failure_reason(const struct act_result *res, char *buf, size_t len)
{
	switch (res->outcome) {
	case ACT_CONFLICT:
		snprintf(buf, len, "conflict: %s", res->reason);
		return;
	case ACT_REJECTED:
		if (res->http_status)
			snprintf(buf, len, "upstream rejected: %d%s%s%s%s", res->http_status,
				 res->code[0] ? " " : "", res->code,
				 res->message[0] || res->reason[0] ? ": " : "",
				 res->message[0] ? res->message : res->reason);
		else
			snprintf(buf, len, "upstream rejected: %s", res->reason);
		return;
	case ACT_NOT_FOUND:
		snprintf(buf, len,
			 "no tkmInfo or appKey and the store does not hold the device "
			 "(give a key, or generateAppKeys)");
		return;
	case ACT_UNAVAILABLE:
		snprintf(buf, len, "upstream unavailable: %s", res->reason);
		return;
	case ACT_UNKNOWN:
		snprintf(buf, len,
			 "outcome unknown (the row stays PENDING and is settled in the "
			 "background; run the import again later): %s",
			 res->reason);
		return;
	case ACT_BUSY:
		snprintf(buf, len, "busy: %s", res->reason);
		return;
	case ACT_STORE_FAILED:
		snprintf(buf, len, "store failed: %s", res->reason);
		return;
	case ACT_RETIRED:
		snprintf(buf, len, "retired: %s", res->reason);
		return;
	case ACT_OK:
		break;
	}
	snprintf(buf, len, "%s", res->reason);
}

/* Whether an outcome means "not now": the row may be tried again. */
static bool outcome_retryable(enum act_outcome o)
{
	return o == ACT_UNAVAILABLE || o == ACT_BUSY || o == ACT_UNKNOWN;
}

/* Whether the call must not start rows any more. */
static bool import_stopping(const struct import_call *c)
{
	return req_gone(c->r) || c->t->stopping || !c->t->act;
}

/* Put row on the retry list after delay_ms. */
static void row_retry_later(struct import_row *row, uint64_t delay_ms)
{
	struct import_call *c = row->call;
	row->state = ROW_WAITING;
	row->retry_at_us = clock_now_us() + delay_ms * 1000u;
	row->next_waiting = c->waiting;
	c->waiting = row;
}

/* One row's activation ended. */
static void on_row_done(const struct act_result *res, void *arg)
{
	struct import_row *row = arg;
	struct import_call *c = row->call;
	c->in_flight--;
	if (res->outcome == ACT_OK) {
		row->state = ROW_DONE;
		c->done++;
		/*
		 * Skipped means ISSUED before this call. A row this call already sent (its
		 * import's answer lost) may be found ISSUED by its retry because the background
		 * settler settled it in between: that token was issued by this call.
		 */
		bool ours = row->attempts > 1 || row->waits > 0;
		if (res->skipped && !ours) {
			c->skipped++;
		} else {
			c->issued++;
			/* Pre-generation: the label is encoded now, drawn cheaply on the line. */
			if (c->t->store)
				label_precompute(c->t->cfg, c->t->layout, c->t->store, &res->rec);
		}
		c->unavailable_in_a_row = 0;
		cred_wipe(&row->q.app_key, sizeof(row->q.app_key));
	} else if (res->outcome == ACT_UNKNOWN && res->retry_after > 0 &&
		   row->waits < IMPORT_MAX_WAITS && !import_stopping(c)) {
		/*
		 * An import of this row may still land: ask again when the settle rules allow
		 * an answer. Waiting is not a failed try.
		 */
		row->waits++;
		row->attempts--;
		uint64_t delay = (uint64_t)res->retry_after * 1000u;
		log_debug("import of %s (line %lld): outcome unknown; asking again in %llu ms",
			  row->q.dev_eui, (long long)row->line, (unsigned long long)delay);
		row_retry_later(row, delay);
	} else if (outcome_retryable(res->outcome) && row->attempts < IMPORT_MAX_ATTEMPTS &&
		   !import_stopping(c)) {
		uint64_t delay;
		if (res->outcome == ACT_UNAVAILABLE && res->retry_after > 0) {
			int s = res->retry_after < IMPORT_RETRY_AFTER_MAX_S
				    ? res->retry_after
				    : IMPORT_RETRY_AFTER_MAX_S;
			delay = (uint64_t)s * 1000u;
			/* Rate limited: the whole call waits, not only this row. */
			uint64_t until = clock_now_us() + delay * 1000u;
			if (until > c->hold_until_us)
				c->hold_until_us = until;
		} else {
			uint64_t cap = (uint64_t)IMPORT_BACKOFF_MIN_MS << (row->attempts - 1);
			if (cap > IMPORT_BACKOFF_MAX_MS)
				cap = IMPORT_BACKOFF_MAX_MS;
			/* Full jitter over the upper half, so rows do not come back in a herd. */
			delay = cap / 2 + import_rand(c) % (cap / 2 + 1);
			if (++c->unavailable_in_a_row >= IMPORT_HOLD_AFTER) {
				uint64_t until = clock_now_us() + delay * 1000u;
				if (until > c->hold_until_us)
					c->hold_until_us = until;
			}
		}
		log_debug("import of %s (line %lld): %s (%s); try %u again in %llu ms",
			  row->q.dev_eui, (long long)row->line,
			  activation_outcome_name(res->outcome), res->reason, row->attempts + 1,
			  (unsigned long long)delay);
		row_retry_later(row, delay);
	} else {
		char reason[700];
		failure_reason(res, reason, sizeof(reason));
		if (outcome_retryable(res->outcome) && row->attempts >= IMPORT_MAX_ATTEMPTS) {
			char more[760];
			snprintf(more, sizeof(more), "%s (after %u tries)", reason, row->attempts);
			row_fail(row, more);
		} else {
			row_fail(row, reason);
		}
	}
	import_pump(c);
}

/* Start one row's activation. */
static void row_start(struct import_row *row)
{
	struct import_call *c = row->call;
	row->state = ROW_RUNNING;
	row->attempts++;
	c->in_flight++;
	if (activation_run(c->t->act, &row->q, on_row_done, row) < 0) {
		c->in_flight--;
		row_fail(row, "out of memory");
	}
}

/* The first waiting row whose time has come, taken off the list; NULL if none. */
static struct import_row *take_due(struct import_call *c, uint64_t now)
{
	for (struct import_row **pp = &c->waiting; *pp; pp = &(*pp)->next_waiting) {
		if ((*pp)->retry_at_us <= now) {
			struct import_row *row = *pp;
			*pp = row->next_waiting;
			row->next_waiting = NULL;
			return row;
		}
	}
	return NULL;
}

/* Fail every row that has not started and every waiting row: the call is stopping. */
static void import_abandon(struct import_call *c)
{
	const char *why = c->t->stopping ? "not imported: tpad is stopping; run the import again"
					 : "not imported: the client went away";
	while (c->waiting) {
		struct import_row *row = c->waiting;
		c->waiting = row->next_waiting;
		row_fail(row, why);
	}
	while (c->next < c->n)
		row_fail(&c->rows[c->next++], why);
}

/* Send a progress reply if rows finished since the last one. */
static void import_progress(struct import_call *c, uint64_t now)
{
	if (c->done == c->last_progress_done || req_gone(c->r) ||
	    now - c->last_progress_us < IMPORT_PROGRESS_MS * 1000u ||
	    req_output_pending(c->r) > EXPORT_MAX_PENDING)
		return;
	c->last_progress_us = now;
	c->last_progress_done = c->done;
	json_t *p =
	    json_pack("{s:{s:I, s:I, s:I, s:I, s:I}}", "progress", "done", (json_int_t)c->done,
		      "total", (json_int_t)c->n, "issued", (json_int_t)c->issued, "skipped",
		      (json_int_t)c->skipped, "failed", (json_int_t)c->failed);
	if (p)
		req_reply(c->r, p, true);
}

static void import_begin(struct import_call *c);

/* Free a call, wiping any key material left in its rows. */
static void import_call_free(struct import_call *c)
{
	if (!c)
		return;
	if (c->tick)
		event_free(c->tick);
	if (c->rows) {
		cred_wipe(c->rows, c->n * sizeof(*c->rows));
		free(c->rows);
	}
	json_decref(c->failures);
	free(c);
}

/* The connection whose import batch was announced (IMPORT_START), 0 for none. */
static uint64_t import_started_conn;

/* Add a call's counts to its connection's batch, and log the batch when it is complete. */
static void import_log(struct import_call *c)
{
	const struct peer *p = req_peer(c->r);
	double s = (double)(clock_now_us() - c->started_us) / 1e6;
	log_info("import call of %zu rows from uid %u pid %d: %zu issued, %zu skipped, %zu "
		 "failed in %.1f s",
		 c->n, (unsigned)p->uid, (int)p->pid, c->issued, c->skipped, c->failed, s);
	if (batch.conn_id != p->conn_id || !batch.started_us) {
		memset(&batch, 0, sizeof(batch));
		batch.conn_id = p->conn_id;
		batch.started_us = c->started_us;
	}
	batch.total += c->n;
	batch.issued += c->issued;
	batch.skipped += c->skipped;
	batch.failed += c->failed;
	if (c->final) {
		char msg[256], f[6][24];
		snprintf(msg, sizeof(msg),
			 "import of %zu rows from uid %u pid %d finished: %zu issued, %zu skipped, "
			 "%zu failed in %.1f s",
			 batch.total, (unsigned)p->uid, (int)p->pid, batch.issued, batch.skipped,
			 batch.failed, (double)(clock_now_us() - batch.started_us) / 1e6);
		snprintf(f[0], sizeof(f[0]), "%zu", batch.total);
		snprintf(f[1], sizeof(f[1]), "%zu", batch.issued);
		snprintf(f[2], sizeof(f[2]), "%zu", batch.skipped);
		snprintf(f[3], sizeof(f[3]), "%zu", batch.failed);
		snprintf(f[4], sizeof(f[4]), "%u", (unsigned)p->uid);
		snprintf(f[5], sizeof(f[5]), "%d", (int)p->pid);
		log_event(LOG_NOTICE, LOG_ID_IMPORT_END, msg, "ROWS", f[0], "ISSUED", f[1],
			  "SKIPPED", f[2], "FAILED", f[3], "ADMIN_UID", f[4], "ADMIN_PID", f[5], NULL);
		memset(&batch, 0, sizeof(batch));
		import_started_conn = 0;
	}
}

/* End the call if nothing is left to do: summary, free, start the next queued call. */
static void import_maybe_finish(struct import_call *c)
{
	if (c->pumping || c->next < c->n || c->in_flight || c->waiting)
		return;
	import_log(c);
	json_t *summary =
	    json_pack("{s:{s:I, s:I, s:I, s:I, s:O}}", "summary", "total", (json_int_t)c->n,
		      "issued", (json_int_t)c->issued, "skipped", (json_int_t)c->skipped, "failed",
		      (json_int_t)c->failed, "failures", c->failures);
	if (summary)
		req_reply(c->r, summary, false);
	else
		req_error(c->r, "io.tpad.Admin.Busy", NULL);
	TAILQ_REMOVE(&import_calls, c, entry);
	import_n_calls--;
	import_call_free(c);
	struct import_call *next = TAILQ_FIRST(&import_calls);
	if (next && !next->started)
		import_begin(next);
}

/* Start rows while there is room; retries that are due go first. */
static void import_pump(struct import_call *c)
{
	if (c->pumping)
		return;
	c->pumping = true;
	for (;;) {
		if (import_stopping(c)) {
			import_abandon(c);
			break;
		}
		uint64_t now = clock_now_us();
		if (c->in_flight >= c->concurrency || now < c->hold_until_us)
			break;
		struct import_row *row = take_due(c, now);
		if (!row && c->next < c->n)
			row = &c->rows[c->next++];
		if (!row)
			break;
		row_start(row);
	}
	c->pumping = false;
	import_maybe_finish(c);
}

/* The call's timer: due retries, progress replies, and noticing a client gone. */
static void import_tick(evutil_socket_t fd, short what, void *arg)
{
	struct import_call *c = arg;
	import_progress(c, clock_now_us());
	import_pump(c);
}

/* The call reached the head of the queue: start its rows. */
static void import_begin(struct import_call *c)
{
	c->started = true;
	c->started_us = c->last_progress_us = clock_now_us();
	struct timeval tv = ms_tv(IMPORT_TICK_MS);
	event_add(c->tick, &tv);
	import_pump(c);
}

/* Build the rows of a call from its validated parameters; sends the error on failure. */
static int import_rows(struct import_call *c, json_t *rows, bool generate)
{
	const struct peer *p = req_peer(c->r);
	size_t i;
	json_t *v;
	c->n = json_array_size(rows);
	c->rows = calloc(c->n ? c->n : 1, sizeof(*c->rows));
	if (!c->rows) {
		req_error(c->r, "io.tpad.Admin.Busy", NULL);
		return -ENOMEM;
	}
	json_array_foreach(rows, i, v)
	{
		struct import_row *row = &c->rows[i];
		struct act_request *q = &row->q;
		char name[64];
		row->call = c;
		row->line = json_integer_value(json_object_get(v, "line"));
		q->method = "io.tpad.Admin.Import";
		q->origin = "import";
		q->uid = (uint32_t)p->uid;
		q->pid = (int32_t)p->pid;
		q->owner = p->conn_id;
		q->oneway = req_oneway(c->r);
		proto_param_hex(v, "devEUI", q->dev_eui, HEX_EUI);
		proto_param_hex(v, "joinEUI", q->join_eui, HEX_EUI);
		proto_param_hex(v, "profileId", q->profile_id, HEX_PROFILE);
		proto_param_hex(v, "tkmInfo", q->tkm_info, HEX_TKM_INFO);
		const char *serial = json_string_value(json_object_get(v, "serial"));
		if (serial)
			snprintf(q->serial, sizeof(q->serial), "%s", serial);
		char why[300];
		if (station_serial_fits(c->t, q, why, sizeof(why)) < 0) {
			snprintf(name, sizeof(name), "rows[%zu].serial", i);
			invalid(c->r, name, why);
			return -EINVAL;
		}
		const char *app_key = json_string_value(json_object_get(v, "appKey"));
		if (!q->dev_eui[0]) {
			snprintf(name, sizeof(name), "rows[%zu].devEUI", i);
			invalid(c->r, name, "must be 16 hexadecimal digits");
			return -EINVAL;
		}
		if (app_key) {
			if (hex_decode(app_key, q->app_key, sizeof(q->app_key)) < 0) {
				snprintf(name, sizeof(name), "rows[%zu].appKey", i);
				invalid(c->r, name, "must be 32 hexadecimal digits");
				return -EINVAL;
			}
			q->has_app_key = true;
		}
		if (q->tkm_info[0] && q->has_app_key) {
			snprintf(name, sizeof(name), "rows[%zu].appKey", i);
			invalid(c->r, name, "give only one of tkmInfo and appKey");
			return -EINVAL;
		}
		q->generate_app_key = generate && !q->tkm_info[0] && !q->has_app_key;
	}
	return 0;
}

void admin_import(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	if (import_n_calls > IMPORT_MAX_WAITING_CALLS) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	struct import_call *c = calloc(1, sizeof(*c));
	if (!c) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	c->t = t;
	c->r = r;
	c->final = json_is_true(json_object_get(params, "final"));
	json_t *conc = json_object_get(params, "concurrency");
	c->concurrency =
	    json_is_integer(conc) ? (unsigned)json_integer_value(conc) : t->cfg->import_concurrency;
	if (c->concurrency < 1)
		c->concurrency = 1;
	c->rand = (uint32_t)clock_now_us() | 1u;
	c->failures = json_array();
	c->tick = event_new(t->base, -1, EV_PERSIST, import_tick, c);
	if (!c->failures || !c->tick) {
		import_call_free(c);
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	if (import_rows(c, json_object_get(params, "rows"),
			json_is_true(json_object_get(params, "generateAppKeys"))) < 0) {
		import_call_free(c);
		return;
	}
	const struct peer *p = req_peer(r);
	if (import_started_conn != p->conn_id) {
		/* The first call of a batch from this connection. */
		char msg[128], uid[16], pid[16];
		snprintf(msg, sizeof(msg), "import started by uid %u pid %d", (unsigned)p->uid,
			 (int)p->pid);
		snprintf(uid, sizeof(uid), "%u", (unsigned)p->uid);
		snprintf(pid, sizeof(pid), "%d", (int)p->pid);
		log_event(LOG_NOTICE, LOG_ID_IMPORT_START, msg, "ADMIN_UID", uid, "ADMIN_PID", pid,
			  NULL);
		import_started_conn = p->conn_id;
	}
	TAILQ_INSERT_TAIL(&import_calls, c, entry);
	import_n_calls++;
	if (TAILQ_FIRST(&import_calls) == c)
		import_begin(c);
}

/* ---- Export ---- */

struct export_call {
	struct tpad *t;
	struct req *r;
	int state;
	bool csv;
	struct qr_opts qr;
	char after[17]; /* the last DevEUI read: the next page starts after it */
	bool at_end;	/* page is the last one */
	bool reading;	/* a page is being read from the store */
	bool fetched_end; /* the last page has been read */
	bool orphaned;	/* ended while a read was out: freed when it comes back */
	struct store_record *page, *next; /* the page being exported, the one read ahead */
	size_t n, i, next_n;
	bool next_ready, next_at_end;
	uint64_t exported, skipped;
	struct event *timer;
	uint64_t started_us;
};

static void export_step(evutil_socket_t fd, short what, void *arg);
static void on_export_page(int err, const char *reason, const struct store_rows *rows,
			   void *arg);

/* Free an export (once the page it is reading ahead has come back). */
static void export_free(struct export_call *c)
{
	if (!c)
		return;
	if (c->reading) {
		c->orphaned = true;
		return;
	}
	if (c->timer)
		event_free(c->timer);
	free(c->page);
	free(c->next);
	free(c);
}

/*
 * Read the page after c->after, unless one is out or waiting: the store reads it (and its
 * labels, on SQLite's reader thread) while the loop exports the current one.
 */
static int export_read_ahead(struct export_call *c)
{
	if (c->reading || c->next_ready || c->fetched_end)
		return 0;
	int err = store_list_labels_async(c->t->store, c->state, c->after[0] ? c->after : NULL,
					  EXPORT_PAGE, on_export_page, c);
	if (err == 0)
		c->reading = true;
	return err;
}


/* The next page of records: keep them without their AppKeys and go on. */
static void on_export_page(int err, const char *reason, const struct store_rows *rows, void *arg)
{
	struct export_call *c = arg;
	c->reading = false;
	if (c->orphaned) {
		export_free(c);
		return;
	}
	if (err < 0) {
		log_warnx("export: cannot read the store: %s", reason ? reason : strerror(-err));
		store_failed(c->r, err, reason);
		export_free(c);
		return;
	}
	c->next_n = 0;
	for (size_t k = 0; k < rows->n && k < EXPORT_PAGE; k++) {
		struct store_record *dst = &c->next[c->next_n++];
		*dst = rows->records[k];
		cred_wipe(dst->app_key, sizeof(dst->app_key));
	}
	if (c->next_n)
		memcpy(c->after, c->next[c->next_n - 1].dev_eui, sizeof(c->after));
	c->next_at_end = c->fetched_end = rows->n < EXPORT_PAGE;
	c->next_ready = true;
	if (c->i == c->n) /* the export waits for it */
		export_step(-1, 0, c);
}

/* Append s to a CSV record in buf at *o, quoted if it needs to be. */
static void csv_append(char *buf, size_t len, size_t *o, const char *s, bool comma)
{
	bool quote = strpbrk(s, ",\"\r\n") != NULL;
	if (comma && *o + 1 < len)
		buf[(*o)++] = ',';
	if (quote && *o + 1 < len)
		buf[(*o)++] = '"';
	for (; *s && *o + 2 < len; s++) {
		if (*s == '"')
			buf[(*o)++] = '"';
		buf[(*o)++] = *s;
	}
	if (quote && *o + 1 < len)
		buf[(*o)++] = '"';
	buf[*o] = '\0';
}

/* The label reply of one device, or NULL with *ret_err set. */
static json_t *export_label(struct export_call *c, const struct store_record *rec, int *ret_err)
{
	char text[QR_TEXT_MAX];
	int err = label_text(c->t->cfg, rec, text, sizeof(text));
	if (err < 0) {
		*ret_err = err;
		return NULL;
	}
	json_t *label;
	if (c->csv) {
		char line[3 * QR_TEXT_MAX];
		size_t o = 0;
		csv_append(line, sizeof(line), &o, rec->dev_eui, false);
		csv_append(line, sizeof(line), &o, rec->serial, true);
		csv_append(line, sizeof(line), &o, text, true);
		label = json_pack("{s:s, s:s}", "format", "csv", "data", line);
		if (!label)
			err = -ENOMEM;
	} else {
		struct qr_opts o = c->qr;
		o.caption = rec->dev_eui;
		label = label_image_for(c->t->cfg, c->t->store, rec, text, &o, &err);
	}
	if (!label) {
		*ret_err = err;
		return NULL;
	}
	json_object_set_new(label, "devEUI", json_string(rec->dev_eui));
	json_object_set_new(label, "qrText", json_string(text));
	if (rec->serial[0])
		json_object_set_new(label, "serial", json_string(rec->serial));
	json_t *reply = json_pack("{s:o}", "label", label);
	if (!reply)
		*ret_err = -ENOMEM;
	return reply;
}

/* The last reply of an export, then free it. */
static void export_finish(struct export_call *c)
{
	double s = (double)(clock_now_us() - c->started_us) / 1e6;
	const struct peer *p = req_peer(c->r);
	log_info("export of %llu labels for uid %u pid %d (%llu devices left out) in %.1f s",
		 (unsigned long long)c->exported, (unsigned)p->uid, (int)p->pid,
		 (unsigned long long)c->skipped, s);
	req_reply(c->r,
		  json_pack("{s:{s:I, s:I}}", "summary", "exported", (json_int_t)c->exported,
			    "skipped", (json_int_t)c->skipped),
		  false);
	export_free(c);
}

/* Produce labels until the client has enough to read, then come back on a timer. */
static void export_step(evutil_socket_t fd, short what, void *arg)
{
	struct export_call *c = arg;
	struct tpad *t = c->t;
	unsigned produced = 0, visited = 0;
	if (req_gone(c->r) || t->stopping || !t->store) {
		export_finish(c);
		return;
	}
	while (req_output_pending(c->r) < EXPORT_MAX_PENDING && produced < EXPORT_SLICE &&
	       visited < 4 * EXPORT_PAGE) {
		if (c->i == c->n && c->next_ready) {
			/* The page read ahead becomes the current one; read the one after it. */
			struct store_record *p = c->page;
			c->page = c->next;
			c->next = p;
			c->n = c->next_n;
			c->i = 0;
			c->at_end = c->next_at_end;
			c->next_ready = false;
		}
		if (c->i == c->n && c->at_end) {
			export_finish(c);
			return;
		}
		int rerr = export_read_ahead(c);
		if (rerr < 0) {
			log_warn_errno(rerr, "export: cannot read the store");
			store_failed(c->r, rerr, NULL);
			export_free(c);
			return;
		}
		if (c->i == c->n)
			return; /* on_export_page comes back with the next page */
		const struct store_record *rec = &c->page[c->i++];
		visited++;
		if (rec->state != STORE_ISSUED || !rec->owner_token[0]) {
			c->skipped++;
			continue;
		}
		int err = 0;
		json_t *reply = export_label(c, rec, &err);
		if (!reply) {
			log_warn_errno(err, "export: cannot render the label of %s", rec->dev_eui);
			c->skipped++;
			continue;
		}
		req_reply(c->r, reply, true);
		c->exported++;
		produced++;
	}
	struct timeval tv =
	    ms_tv(req_output_pending(c->r) >= EXPORT_MAX_PENDING ? EXPORT_RESUME_MS : 0);
	event_add(c->timer, &tv);
}

void admin_export(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	struct export_call *c = calloc(1, sizeof(*c));
	if (!c) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	c->t = t;
	c->r = r;
	c->started_us = clock_now_us();
	const char *format = json_string_value(json_object_get(params, "format"));
	bool want;
	if (param_state(params, &c->state) < 0) {
		export_free(c);
		invalid(r, "state", "must be PENDING, ISSUED, FAILED, FOREIGN or RETIRED");
		return;
	}
	if (label_opts(t->cfg, t->layout, json_object_get(params, "qr"), &c->qr, &want) < 0) {
		export_free(c);
		invalid(r, "qr", "unknown error correction level");
		return;
	}
	c->csv = format && strcmp(format, "csv") == 0;
	if (!c->csv && (!format || qr_format_from_string(format, &c->qr.format) < 0 ||
			c->qr.format == QR_FORMAT_NONE || c->qr.format == QR_FORMAT_TEXT)) {
		export_free(c);
		invalid(r, "format", "must be png, svg, zpl or csv");
		return;
	}
	c->page = calloc(EXPORT_PAGE, sizeof(*c->page));
	c->next = calloc(EXPORT_PAGE, sizeof(*c->next));
	c->timer = evtimer_new(t->base, export_step, c);
	if (!c->page || !c->next || !c->timer) {
		export_free(c);
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	export_step(-1, 0, c);
}

/* ---- ListDevices and GetDevice ---- */

/* One ListDevices call waiting for its page. */
struct list_call {
	const struct config *cfg;
	struct req *r;
	size_t limit;
};

/* The page (one more row than asked, to tell whether there is a next one). */
static void on_list_page(int err, const char *reason, const struct store_rows *rows, void *arg)
{
	struct list_call *l = arg;
	struct req *r = l->r;
	json_t *devices = err ? NULL : json_array();
	size_t n = 0;
	for (; devices && n < rows->n && n < l->limit; n++) {
		json_t *d = device_info(l->cfg, &rows->records[n]);
		if (!d || json_array_append_new(devices, d) < 0) {
			json_decref(devices);
			devices = NULL;
		}
	}
	json_t *reply = devices ? json_pack("{s:o}", "devices", devices) : NULL;
	if (reply && rows->n > l->limit)
		json_object_set_new(reply, "next", json_string(rows->records[n - 1].dev_eui));
	if (reply)
		req_reply(r, reply, false);
	else if (err)
		store_failed(r, err, reason);
	else
		req_error(r, "io.tpad.Admin.Busy", NULL);
	free(l);
}

void admin_list_devices(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	int state;
	if (param_state(params, &state) < 0) {
		invalid(r, "state", "must be PENDING, ISSUED, FAILED, FOREIGN or RETIRED");
		return;
	}
	const char *after = json_string_value(json_object_get(params, "after"));
	if (after && !hex_valid(after, HEX_EUI)) {
		invalid(r, "after", "must be a DevEUI (16 hexadecimal digits), the next of a page");
		return;
	}
	size_t limit = LIST_DEFAULT;
	json_t *lim = json_object_get(params, "limit");
	if (json_is_integer(lim))
		limit = (size_t)json_integer_value(lim);
	if (limit < 1 || limit > LIST_MAX)
		limit = LIST_DEFAULT;
	struct list_call *l = calloc(1, sizeof(*l));
	if (!l) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	*l = (struct list_call){.cfg = t->cfg, .r = r, .limit = limit};
	int err = t->store ? store_list_async(t->store, state, after, limit + 1, on_list_page, l)
			   : -ESHUTDOWN;
	if (err < 0) {
		free(l);
		store_failed(r, err, NULL);
	}
}

/* One GetDevice call: the row, then its audit entries, then its attempts. */
struct device_call {
	struct tpad *t;
	struct req *r;
	char dev_eui[17];
	json_t *reply;
};

static void device_call_end(struct device_call *c, int err, const char *reason)
{
	if (err == 0 && c->reply) {
		req_reply(c->r, c->reply, false);
		c->reply = NULL;
	} else if (err == -ENOENT) {
		req_error(c->r, "io.tpad.Admin.NotFound", json_pack("{s:s}", "devEUI", c->dev_eui));
	} else if (err < 0 && err != -ENOMEM) {
		store_failed(c->r, err, reason);
	} else {
		req_error(c->r, "io.tpad.Admin.Busy", NULL);
	}
	json_decref(c->reply);
	free(c);
}

/* The attempts: the reply is complete (without them if they cannot be read). */
static void on_device_attempts(int err, const char *reason, const struct store_rows *rows,
			       void *arg)
{
	struct device_call *c = arg;
	json_t *attempts = err ? NULL : json_array();
	for (size_t i = 0; attempts && i < rows->n; i++) {
		const struct store_attempt *at = &rows->attempts[i];
		json_t *o = json_pack("{s:i, s:I, s:s, s:s}", "n", (int)at->n, "at",
				      (json_int_t)at->at, "digest", at->digest, "outcome",
				      at->outcome);
		if (o && at->instance[0])
			json_object_set_new(o, "instance", json_string(at->instance));
		json_array_append_new(attempts, o);
	}
	if (attempts)
		json_object_set_new(c->reply, "attempts", attempts);
	device_call_end(c, 0, NULL);
}

/* The audit trail: keep the newest AUDIT_MAX entries, then ask for the attempts. */
static void on_device_audit(int err, const char *reason, const struct store_rows *rows,
			    void *arg)
{
	struct device_call *c = arg;
	if (err < 0) {
		device_call_end(c, err, reason);
		return;
	}
	json_t *audit = json_array();
	size_t first = rows->n > AUDIT_MAX ? rows->n - AUDIT_MAX : 0;
	for (size_t i = first; audit && i < rows->n; i++) {
		const struct store_audit_entry *e = &rows->audit[i];
		json_array_append_new(audit, json_pack("{s:I, s:I, s:I, s:s, s:s}", "at",
						       (json_int_t)e->at, "uid", (json_int_t)e->uid,
						       "pid", (json_int_t)e->pid, "method",
						       e->method, "outcome", e->outcome));
	}
	if (!audit) {
		device_call_end(c, -ENOMEM, NULL);
		return;
	}
	json_object_set_new(c->reply, "audit", audit);
	if (first)
		json_object_set_new(c->reply, "auditOmitted", json_integer((json_int_t)first));
	if (!c->t->store ||
	    store_attempt_list_async(c->t->store, c->dev_eui, on_device_attempts, c) < 0)
		device_call_end(c, 0, NULL);
}

/* The row: then its audit entries. */
static void on_device_row(int err, const struct store_record *rec, const char *reason, void *arg)
{
	struct device_call *c = arg;
	if (err < 0) {
		device_call_end(c, err, reason);
		return;
	}
	json_t *device = device_info(c->t->cfg, rec);
	c->reply = device ? json_pack("{s:o}", "device", device) : NULL;
	if (!c->reply) {
		device_call_end(c, -ENOMEM, NULL);
		return;
	}
	int e = c->t->store ? store_audit_list_async(c->t->store, c->dev_eui, 0, 0, on_device_audit, c)
			    : -ESHUTDOWN;
	if (e < 0)
		device_call_end(c, e, NULL);
}

void admin_get_device(struct tpad *t, struct req *r)
{
	const char *s = json_string_value(json_object_get(req_params(r), "devEUI"));
	if (!s || !hex_valid(s, HEX_EUI)) {
		invalid(r, "devEUI", "must be 16 hexadecimal digits");
		return;
	}
	if (!t->store) {
		store_failed(r, -ESHUTDOWN, NULL);
		return;
	}
	struct device_call *c = calloc(1, sizeof(*c));
	if (!c) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	c->t = t;
	c->r = r;
	hex_upper(c->dev_eui, s, HEX_EUI);
	int err = store_get_async(t->store, c->dev_eui, on_device_row, c);
	if (err < 0) {
		free(c);
		store_failed(r, err, NULL);
	}
}

/* The device object of a reply, without the AppKey (for retire.c). */
json_t *admin_device_info(const struct config *cfg, const struct store_record *rec)
{
	return device_info(cfg, rec);
}

/* ---- Adopt ---- */

/* One Adopt call waiting for the cloud's answer. */
struct adopt_call {
	struct tpad *t;
	struct req *r;
	char dev_eui[17];
};

/* The adoption ended. */
static void on_adopted(const struct act_result *res, void *arg)
{
	struct adopt_call *a = arg;
	struct req *r = a->r;
	switch (res->outcome) {
	case ACT_OK: {
		json_t *device = device_info(a->t->cfg, &res->rec);
		log_notice("%s adopted by an admin (uid %u): the cloud's token is taken as ours",
			   a->dev_eui, (unsigned)req_peer(r)->uid);
		if (device)
			req_reply(r, json_pack("{s:o}", "device", device), false);
		else
			req_error(r, "io.tpad.Admin.Busy", NULL);
		break;
	}
	case ACT_NOT_FOUND:
		req_error(r, "io.tpad.Admin.NotFound", json_pack("{s:s}", "devEUI", a->dev_eui));
		break;
	case ACT_CONFLICT:
	case ACT_RETIRED:
		req_error(r, "io.tpad.Admin.Conflict",
			  json_pack("{s:s, s:s}", "devEUI", a->dev_eui, "reason", res->reason));
		break;
	case ACT_STORE_FAILED:
		req_error(r, "io.tpad.Admin.StoreFailed", json_pack("{s:s}", "reason", res->reason));
		break;
	case ACT_BUSY:
		req_error(r, "io.tpad.Admin.Busy", NULL);
		break;
	default: {
		json_t *p = json_pack("{s:s}", "reason", res->reason);
		if (p && res->retry_after > 0)
			json_object_set_new(p, "retryAfter", json_integer(res->retry_after));
		req_error(r, "io.tpad.Admin.UpstreamUnavailable", p);
		break;
	}
	}
	free(a);
}

void admin_adopt(struct tpad *t, struct req *r)
{
	const char *s = json_string_value(json_object_get(req_params(r), "devEUI"));
	if (!s || !hex_valid(s, HEX_EUI)) {
		invalid(r, "devEUI", "must be 16 hexadecimal digits");
		return;
	}
	struct adopt_call *a = calloc(1, sizeof(*a));
	if (!a || !t->act) {
		free(a);
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	a->t = t;
	a->r = r;
	hex_upper(a->dev_eui, s, HEX_EUI);
	const struct peer *p = req_peer(r);
	struct act_request q = {.adopt = true,
				.method = "io.tpad.Admin.Adopt",
				.origin = "activate",
				.uid = (uint32_t)p->uid,
				.pid = (int32_t)p->pid};
	memcpy(q.dev_eui, a->dev_eui, sizeof(q.dev_eui));
	if (activation_run(t->act, &q, on_adopted, a) < 0) {
		free(a);
		req_error(r, "io.tpad.Admin.Busy", NULL);
	}
}
