/* downlink: a plaintext downlink encrypted with the AppSKey and next FCntDn, POSTed to the LRC. */
#include "downlink.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ascrypto.h"
#include "clock.h"
#include "cred.h"
#include "hex.h"
#include "http.h"
#include "journal.h"
#include "events.h"
#include "log.h"
#include "pool.h"
#include "uplink.h"

/*
 * One downlink in flight: its counter being taken (committed by the journal's writer
 * thread), held behind an earlier one to its device, or given to the pool.
 */
struct dl_req {
	struct downlink *d;
	struct dl_req *prev, *next;
	downlink_done_fn *done;
	void *arg;
	uint64_t order; /* when it was asked for: the device's downlinks go in this order */
	bool taking;	/* its counter not committed yet (take) */
	bool held;	/* waits for the answer to the device's downlink before it, or for room */
	bool confirmed;
	int fport;
	uint32_t fcnt_dn;
	char dev_eui[17];
	struct journal_take take;
	/* While taking: the session and the plaintext (wiped once encrypted). */
	struct as_session session;
	size_t n;
	uint8_t plain[DOWNLINK_MAX_PAYLOAD];
	char hex[2 * DOWNLINK_MAX_PAYLOAD + 1]; /* the payload, encrypted */
};

struct downlink {
	struct pool *pool;
	struct journal *journal;
	char key[129];
	char as_id[65];
	struct dl_req *inflight; /* given to the pool, or held */
	size_t outstanding;	 /* requests given to the pool and not done */
	size_t held;		 /* requests held, not yet given to the pool */
	size_t taking;		 /* requests whose counter is being committed */
	uint64_t taken;		 /* requests with a counter asked for: the next one's order */
	uint32_t sessions;   /* the pool's */
	uint32_t timeout_ms; /* the pool's: for the wait, then again once given to a session */
	uint64_t latency_ms; /* the LRC's recent answer time (a moving average; 0: none yet) */
	const char *cut;     /* downlink_cut()'s reason: nothing more is sent */
	struct downlink_stats stats;
};

/*
 * Percent-encode a query value the way the LRC's examples are written: unreserved
 * characters and ':' stay, everything else ('+' of a time zone above all) is encoded.
 */
static int query_encode(const char *s, char *out, size_t outlen)
{
	static const char hexd[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool keep = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
			    c == '~' || c == ':';
		if (o + (keep ? 1 : 3) >= outlen)
			return -ENOBUFS;
		if (keep) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hexd[c >> 4];
			out[o++] = hexd[c & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

int downlink_query(const char *dev_eui, int fport, const char *payload_hex, int64_t fcnt_dn,
		   bool confirmed, const char *as_id, const char *time, const char *key, char *out,
		   size_t outlen)
{
	char as_enc[200], time_enc[128];
	if (query_encode(as_id, as_enc, sizeof(as_enc)) < 0 ||
	    query_encode(time, time_enc, sizeof(time_enc)) < 0)
		return -ENOBUFS;
	char fcnt[32] = "";
	if (fcnt_dn >= 0)
		snprintf(fcnt, sizeof(fcnt), "&FCntDn=%" PRId64, fcnt_dn);
	int n =
	    snprintf(out, outlen, "DevEUI=%s&FPort=%d&Payload=%s%s%s&AS_ID=%s&Time=%s", dev_eui,
		     fport, payload_hex, fcnt, confirmed ? "&Confirmed=1" : "", as_enc, time_enc);
	if (n < 0 || (size_t)n + 7 + AS_TOKEN_HEX >= outlen)
		return -ENOBUFS;
	char tok[AS_TOKEN_HEX + 1];
	const char *parts[] = {out, key};
	ascrypto_token(parts, 2, tok);
	snprintf(out + n, outlen - (size_t)n, "&Token=%s", tok);
	return 0;
}

/* Free a request, its key and plaintext wiped. */
static void req_free(struct dl_req *q)
{
	cred_wipe(q, sizeof(*q));
	free(q);
}

struct downlink *downlink_new(struct event_base *base, const struct downlink_options *o,
			      struct journal *j, char *err, size_t errlen)
{
	struct downlink *d = calloc(1, sizeof(*d));
	if (!d) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->journal = j;
	if (!o->key || strlen(o->key) >= sizeof(d->key)) {
		snprintf(err, errlen, "the tunnel key is missing or too long");
		free(d);
		return NULL;
	}
	snprintf(d->key, sizeof(d->key), "%s", o->key);
	snprintf(d->as_id, sizeof(d->as_id), "%s", o->as_id ? o->as_id : "");
	d->sessions = o->sessions ? o->sessions : 2;
	d->timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : 10000;
	if (o->url && *o->url) {
		/* https://: the LRC's certificate chain and host name, checked by core/tls. */
		const struct pool_options po = {
		    .url = o->url,
		    .name = "LRC",
		    .sessions = d->sessions,
		    /* One waiting per session: more would wait for the request timeout. */
		    .queue = d->sessions,
		    .connect_timeout_ms = 5000,
		    .handshake_timeout_ms = 5000,
		    .request_timeout_ms = d->timeout_ms,
		    .backoff_min_ms = 200,
		    .backoff_max_ms = 10000,
		    .breaker_threshold = 5,
		    .breaker_cooldown_ms = 5000,
		    /* An answer's first 64 KiB: its status counts, not the length of its text. */
		    .max_response = 65536,
		    .cut_response = true,
		    .tls = {.mode = TLS_MODE_CERT, .ca_file = o->ca_file, .tls_min = 2},
		};
		char perr[256];
		d->pool = pool_new(base, &po, perr, sizeof(perr));
		if (!d->pool) {
			snprintf(err, errlen, "%s%s", strncmp(perr, "url:", 4) == 0 ? "lrc." : "",
				 perr);
			downlink_free(d);
			return NULL;
		}
	}
	return d;
}

struct downlink *downlink_free(struct downlink *d)
{
	if (!d)
		return NULL;
	pool_free(d->pool);
	while (d->inflight) {
		struct dl_req *q = d->inflight;
		d->inflight = q->next;
		if (q->taking) /* the journal's writer still holds it: stopped first (tunnel) */
			log_warnx("downlink to %s: dropped while its counter was being taken",
				  q->dev_eui);
		req_free(q);
	}
	cred_wipe(d->key, sizeof(d->key));
	free(d);
	return NULL;
}

/* Take a request off the list of those in flight or held. */
static void req_unlink(struct dl_req *q)
{
	if (q->prev)
		q->prev->next = q->next;
	else
		q->d->inflight = q->next;
	if (q->next)
		q->next->prev = q->prev;
}

/*
 * Whether one more request would likely not be answered within the timeout of the call:
 * the requests ahead of it, a session's worth at a time, or the device's own ahead of it
 * (ahead), one at a time, each take about the LRC's recent answer time, and then its own.
 * Stricter than the pool, which times the wait and the answer each on their own: a taken
 * downlink is answered within about the timeout.
 */
static bool too_slow(const struct downlink *d, size_t ahead)
{
	uint64_t rounds_ahead = (d->outstanding + d->taking) / d->sessions;
	if (rounds_ahead < ahead)
		rounds_ahead = ahead;
	return d->latency_ms && rounds_ahead > 0 &&
	       (rounds_ahead + 1) * d->latency_ms > d->timeout_ms;
}

/* The downlinks to dev_eui given to the pool or held. */
static size_t device_ahead(const struct downlink *d, const char *dev_eui)
{
	size_t n = 0;
	for (const struct dl_req *q = d->inflight; q; q = q->next)
		n += strcmp(q->dev_eui, dev_eui) == 0;
	return n;
}

/*
 * Whether q must wait for another downlink to its device: one at the pool, or one asked
 * for before it. A device's downlinks go one at a time, in the order they were asked for
 * (their counters are taken in that order): sent on two sessions at once, the higher
 * FCntDn could reach the LRC first, which queues it first, and the device would drop the
 * lower one after it.
 */
static bool behind(const struct downlink *d, const struct dl_req *q)
{
	for (const struct dl_req *o = d->inflight; o; o = o->next)
		if (o != q && strcmp(o->dev_eui, q->dev_eui) == 0 &&
		    (o->order < q->order || (!o->held && !o->taking)))
			return true;
	return false;
}

/* The held request to send next: the first asked for of those behind no other. */
static struct dl_req *next_held(const struct downlink *d)
{
	struct dl_req *best = NULL;
	for (struct dl_req *q = d->inflight; q; q = q->next)
		if (q->held && (!best || q->order < best->order) && !behind(d, q))
			best = q;
	return best;
}

/* Fold one answer's time into the moving average (1/4 weight). */
static void latency_note(struct downlink *d, const struct pool_result *pr)
{
	uint64_t now = clock_now_ms();
	if (!pr->sent_at_ms || now < pr->sent_at_ms)
		return;
	uint64_t took = now - pr->sent_at_ms;
	d->latency_ms = d->latency_ms ? (3 * d->latency_ms + took) / 4 : took;
	if (!d->latency_ms)
		d->latency_ms = 1;
}

/* Log and count how a downlink ended, then tell the caller. */
static void finish(struct downlink *d, const char *dev_eui, uint32_t fcnt_dn,
		   const struct downlink_result *r, downlink_done_fn *done, void *arg)
{
	char msg[400], fcnt[16], status[8];
	if (r->err)
		snprintf(msg, sizeof(msg), "downlink to %s FCntDn %" PRIu32 ": %s", dev_eui,
			 fcnt_dn, r->reason);
	else
		snprintf(msg, sizeof(msg), "downlink to %s FCntDn %" PRIu32 ": LRC answered %d",
			 dev_eui, fcnt_dn, r->status);
	snprintf(fcnt, sizeof(fcnt), "%" PRIu32, fcnt_dn);
	snprintf(status, sizeof(status), "%d", r->status);
	log_event(r->err ? LOG_WARNING : LOG_INFO, LOG_ID_AS_DOWNLINK, msg, "DEVEUI", dev_eui,
		  "FCNTDN", fcnt, "OUTCOME", r->err ? "failed" : "ok", "STATUS", status, "REASON",
		  r->reason, NULL);
	if (!r->err)
		d->stats.sent++;
	else if (r->status)
		d->stats.lrc_refused++;
	else
		d->stats.failed++;
	done(r, arg);
}

static void release_held(struct downlink *d);

static void pool_done(const struct pool_result *pr, void *arg)
{
	struct dl_req *q = arg;
	q->d->outstanding--;
	if (!pr->err)
		latency_note(q->d, pr);
	struct downlink_result r = {.fcnt_dn = q->fcnt_dn, .answer = "", .reason = ""};
	char reason[256];
	if (pr->err) {
		r.err = pr->err;
		snprintf(reason, sizeof(reason), "%s: %s",
			 pr->sent ? "no usable answer from the LRC (the request may have arrived)"
				  : "LRC not reached",
			 pr->reason ? pr->reason : strerror(-pr->err));
		r.reason = reason;
	} else {
		r.status = pr->res->status;
		r.answer = pr->res->body ? pr->res->body : "";
		r.answer_len = pr->res->body ? pr->res->body_len : 0;
		if (r.status < 200 || r.status > 299) {
			r.err = -EPROTO;
			snprintf(reason, sizeof(reason), "LRC answered %d", r.status);
			r.reason = reason;
		}
	}
	struct downlink *d = q->d;
	finish(d, q->dev_eui, q->fcnt_dn, &r, q->done, q->arg);
	req_unlink(q);
	req_free(q);
	release_held(d);
}

/*
 * A taken counter whose POST could not be queued (err: why): the downlink ends unsent,
 * its counter spent, told as one the LRC never saw. q is freed.
 */
static void not_sent(struct dl_req *q, int err)
{
	char reason[300];
	snprintf(reason, sizeof(reason), "not sent, its FCntDn spent: %s",
		 err == -ECANCELED && q->d->cut ? q->d->cut : strerror(-err));
	const struct downlink_result r = {
	    .err = err, .fcnt_dn = q->fcnt_dn, .answer = "", .reason = reason};
	finish(q->d, q->dev_eui, q->fcnt_dn, &r, q->done, q->arg);
	req_free(q);
}

/*
 * A journal error as downlink_send() returns it: the journal's own errno, so that a full
 * disk or a lack of memory is named as one, except the codes that mean something else to
 * its caller.
 */
static int store_err(int r)
{
	switch (r) {
	case -ENOENT:
	case -ERANGE:
	case -EBUSY:
	case -ENOTCONN:
	case -EINVAL:
		return -EIO;
	default:
		return r;
	}
}

/* Encrypt q's plaintext with its session's key and counter into q->hex; wipe both. */
static int payload_encrypt(struct dl_req *q)
{
	const struct as_session *s = &q->session;
	uint8_t buf[DOWNLINK_MAX_PAYLOAD];
	uint32_t addr = (uint32_t)strtoul(s->dev_addr[0] ? s->dev_addr : "0", NULL, 16);
	int r = ascrypto_frm_crypt(s->key, addr, q->fcnt_dn, AS_DOWNLINK, q->plain, q->n, buf);
	cred_wipe(&q->session, sizeof(q->session));
	cred_wipe(q->plain, sizeof(q->plain));
	if (r < 0)
		return -EIO;
	hex_encode(buf, q->n, q->hex);
	return 0;
}

/* Sign and build the POST of q, timed now; in *ret (malloc'ed), 0 or -errno. */
static int request_build(struct downlink *d, const struct dl_req *q, char **ret, size_t *ret_len)
{
	char when[40], query[1536], target[1700];
	uplink_time_format(clock_wall_ms(), when, sizeof(when));
	int r = downlink_query(q->dev_eui, q->fport, q->hex, q->fcnt_dn, q->confirmed, d->as_id,
			       when, d->key, query, sizeof(query));
	if (r < 0)
		return -EIO;
	snprintf(target, sizeof(target), "%s?%s", DOWNLINK_PATH, query);
	const struct http_request hr = {
	    .method = "POST",
	    .host = pool_host(d->pool),
	    .target = target,
	    .content_type = "application/json",
	    .body = "",
	    .body_len = 0,
	};
	return http_request_build(&hr, ret, ret_len);
}

/* Give q's POST to the pool; 0, or -errno with nothing queued. */
static int submit(struct downlink *d, struct dl_req *q)
{
	char *req_buf = NULL;
	size_t req_len = 0;
	int r = request_build(d, q, &req_buf, &req_len);
	if (r == 0)
		r = pool_submit(d->pool, req_buf, req_len, pool_done, q);
	free(req_buf);
	if (r == 0)
		d->outstanding++;
	return r;
}

static void inflight_add(struct downlink *d, struct dl_req *q)
{
	q->prev = NULL;
	q->next = d->inflight;
	if (q->next)
		q->next->prev = q;
	d->inflight = q;
}

/* Send the held requests whose turn came, while the pool takes them. */
static void release_held(struct downlink *d)
{
	struct dl_req *q;
	while (!d->cut && pool_has_room(d->pool) && (q = next_held(d))) {
		q->held = false;
		d->held--;
		int r = submit(d, q);
		if (r < 0) {
			req_unlink(q);
			not_sent(q, r);
		}
	}
}

/*
 * Whether the pool would take one more request now, after those whose counters are being
 * taken (each goes to the pool, or is held, once its counter is committed).
 */
static bool room_for_one(const struct downlink *d)
{
	return pool_room(d->pool) > d->taking;
}

/*
 * q's counter is committed: from here on it is spent, and a failure ends the downlink
 * through done. Encrypted, then sent, or held behind the device's earlier downlink or
 * for room at the pool.
 */
static void counter_taken(struct downlink *d, struct dl_req *q)
{
	if (d->cut) {
		req_unlink(q);
		not_sent(q, -ECANCELED);
		return;
	}
	int r = payload_encrypt(q);
	if (r == 0 && (behind(d, q) || !pool_has_room(d->pool))) {
		q->held = true;
		d->held++;
		return;
	}
	if (r == 0)
		r = submit(d, q);
	if (r < 0) {
		req_unlink(q);
		not_sent(q, r);
	}
}

/*
 * The journal's writer thread took q's counter, or could not: then the downlink ends
 * refused through done (no counter spent), as downlink_send() would have returned.
 */
static void taken_cb(struct journal_take *t, void *arg)
{
	struct dl_req *q = arg;
	struct downlink *d = q->d;
	q->taking = false;
	d->taking--;
	if (t->err == 0) {
		q->fcnt_dn = t->fcnt_dn;
		counter_taken(d, q);
		return;
	}
	char reason[160] = "";
	if (t->err != -ENOENT && t->err != -ERANGE)
		snprintf(reason, sizeof(reason), "cannot commit the downlink counter: %s",
			 strerror(-t->err));
	const struct downlink_result r = {
	    .err = t->err == -ENOENT || t->err == -ERANGE ? t->err : store_err(t->err),
	    .refused = true,
	    .answer = "",
	    .reason = reason};
	d->stats.refused++;
	downlink_done_fn *done = q->done;
	void *done_arg = q->arg;
	req_unlink(q);
	req_free(q);
	done(&r, done_arg);
	release_held(d); /* one held behind it may go now */
}

static int send_one(struct downlink *d, const char *dev_eui, int fport, const uint8_t *payload,
		    size_t n, bool confirmed, downlink_done_fn *done, void *arg, char *why,
		    size_t whylen)
{
	if (!d->pool || d->cut)
		return -ENOTCONN;
	if (n > DOWNLINK_MAX_PAYLOAD || fport < 1 || fport > 223)
		return -EINVAL;
	/* A counter is taken only for a request the pool will queue and send in time: none
	 * spent on Busy, nor while the breaker is open (the pool would fail it unsent). One
	 * behind the device's earlier downlink is held until that one is answered, in as many
	 * places as the pool's queue has. */
	size_t ahead = device_ahead(d, dev_eui);
	if ((ahead ? d->held + d->taking >= d->sessions : !room_for_one(d)) ||
	    pool_fails_fast(d->pool) || too_slow(d, ahead))
		return -EBUSY;
	/* Allocated before a counter is taken, so that none is spent for lack of it. */
	struct dl_req *q = calloc(1, sizeof(*q));
	if (!q) {
		log_warnx("downlink to %s: out of memory (no FCntDn taken)", dev_eui);
		return -EBUSY;
	}
	q->d = d;
	q->done = done;
	q->arg = arg;
	q->fport = fport;
	q->confirmed = confirmed;
	snprintf(q->dev_eui, sizeof(q->dev_eui), "%s", dev_eui);
	int r = journal_session_newest(d->journal, NULL, dev_eui, &q->session);
	if (r < 0) {
		req_free(q);
		if (r == -ENOENT)
			return r;
		snprintf(why, whylen, "cannot read the device's session: %s", strerror(-r));
		return store_err(r);
	}
	memcpy(q->plain, payload, n);
	q->n = n;
	q->order = d->taken++;
	/* The counter rides the writer thread's next commit with the uplinks (its fsync
	 * theirs); without the writer (stopping, or a journal in memory) it is committed here. */
	q->take = (struct journal_take){.session_id = q->session.id, .done = taken_cb, .arg = q};
	inflight_add(d, q);
	if (journal_fcnt_dn_queue(d->journal, &q->take) == 0) {
		q->taking = true;
		d->taking++;
		return 0;
	}
	r = journal_fcnt_dn_take(d->journal, q->session.id, &q->fcnt_dn);
	if (r < 0) {
		req_unlink(q);
		req_free(q);
		if (r == -ERANGE)
			return r;
		snprintf(why, whylen, "cannot commit the downlink counter: %s", strerror(-r));
		return store_err(r);
	}
	counter_taken(d, q);
	return 0;
}

int downlink_send(struct downlink *d, const char *dev_eui, int fport, const uint8_t *payload,
		  size_t n, bool confirmed, downlink_done_fn *done, void *arg, char *why,
		  size_t whylen)
{
	if (whylen)
		why[0] = '\0';
	int r = send_one(d, dev_eui, fport, payload, n, confirmed, done, arg, why, whylen);
	if (r < 0)
		d->stats.refused++;
	return r;
}

void downlink_cut(struct downlink *d, const char *reason)
{
	if (!d || d->cut)
		return;
	d->cut = reason;
	for (struct dl_req *q = d->inflight, *next; q; q = next) {
		next = q->next;
		if (!q->held)
			continue; /* at the pool (failed below), or taking (ends once taken) */
		q->held = false;
		d->held--;
		req_unlink(q);
		not_sent(q, -ECANCELED);
	}
	pool_fail_all(d->pool, -ECANCELED, reason);
}

void downlink_get_stats(const struct downlink *d, struct downlink_stats *ret)
{
	*ret = d ? d->stats : (struct downlink_stats){0};
}

const struct pool *downlink_pool(const struct downlink *d)
{
	return d ? d->pool : NULL;
}

json_t *downlink_status_json(const struct downlink *d)
{
	if (!d || !d->pool)
		return json_pack("{s:n}", "url");
	return pool_status_json(d->pool);
}
