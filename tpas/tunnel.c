/*
 * tunnel: the LRC-AS tunnel endpoint (on core/httpd): each DevEUI_uplink verified,
 * decrypted, journaled.
 */
#include "tunnel.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "ascrypto.h"
#include "clock.h"
#include "conf.h"
#include "cred.h"
#include "events.h"
#include "hex.h"
#include "journal.h"
#include "log.h"
#include "httpd.h"
#include "sesscache.h"
#include "text.h"
#include "tunnel_tls.h"
#include "uplink.h"
#include "uplink_read.h"
#include "wipe.h"

/* The HTTP server refuses bodies over this many times max-body itself (413, and closes). */
#define HARD_BODY_FACTOR 4
/* Uplinks committed in one transaction at most. */
#define MAX_BATCH 1024
/*
 * Sessions kept unsealed in memory (sesscache), so an uplink of a known session costs no
 * store read and no unsealing. Sessions are never deleted; their DevAddr and FCntDn in the
 * cache may lag the store, which only makes an uplink update the session row again (the
 * store keeps the larger FCntDn). About 270 bytes each.
 */
#define SESSION_CACHE 8192

#define INFLIGHT_BUCKETS 256

struct tunnel {
	struct httpd *http;
	struct tunnel_tls *tls;
	struct journal *journal;
	tunnel_commit_fn *on_commit;
	void *arg;
	char path[256];
	char key_lower[129];
	int64_t max_deviation_ms;
	size_t max_body;
	uint16_t port;
	struct tunnel_stats stats;
	struct event *flush; /* runs the group commit once the loop has read what it can */
	struct pending *batch, **batch_tail;
	size_t batch_n;
	bool writer; /* the journal's writer thread commits (group commit off the loop) */
	/* The last Token-verified Time that passed the deviation check (the LRC's clock), and
	 * when it came on the monotonic clock: tunnel_lrc_now(). */
	bool lrc_seen;
	int64_t lrc_time_ms;
	uint64_t lrc_at_ms;
	struct sesscache *cache;
	struct new_session *new_sessions; /* made here, their first uplinks being committed */
	/* The requests being committed, by Token: the same request again meanwhile waits. */
	struct pending *inflight[INFLIGHT_BUCKETS];
};

/* An answer with a reason: counted, logged (never with key material), returned. */
static int refuse(struct tunnel *t, uint64_t *counter, int status, json_t **ret,
		  const char *dev_eui, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int refuse(struct tunnel *t, uint64_t *counter, int status, json_t **ret,
		  const char *dev_eui, const char *fmt, ...)
{
	char reason[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	/* Reasons may quote what the client sent: keep them printable ASCII (and valid JSON). */
	for (char *p = reason; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = '?';
	(*counter)++;
	/*
	 * What the admin can do, in the log only: the answer goes to whoever posted, and
	 * REASON stays the short text. A wrong key is the usual cause of both.
	 */
	const char *hint = "";
	if (counter == &t->stats.bad_token)
		hint = " (the AS route's tunnel key and tunnel.key-file differ, or this request "
		       "does not come from the LRC)";
	else if (counter == &t->stats.wrong_key)
		hint = " (the LRC uses another ASTK under that label: import its encryptedASKey "
		       "with tpactl as import-astk)";
	char msg[448], st[8];
	snprintf(msg, sizeof(msg), "tunnel: %d for DevEUI %s: %s%s", status,
		 dev_eui && *dev_eui ? dev_eui : "-", reason, hint);
	snprintf(st, sizeof(st), "%d", status);
	log_event(LOG_WARNING, LOG_ID_AS_REFUSED, msg, "STATUS", st, "REASON", reason, "DEVEUI",
		  dev_eui ? dev_eui : "", NULL);
	*ret = json_pack("{s:s}", "error", reason);
	return status;
}

/* The server's own refusals (400, 408, 413, 417, 431): logged as the tunnel's are. */
static void http_refused(int status, const char *reason, const char *why, const char *peer,
			 void *arg)
{
	(void)arg;
	char msg[256], st[8];
	snprintf(msg, sizeof(msg), "tunnel: %d %s from %s: %s", status, reason, peer, why);
	snprintf(st, sizeof(st), "%d", status);
	log_event(LOG_WARNING, LOG_ID_AS_REFUSED, msg, "STATUS", st, "REASON", why, "PEER", peer,
		  NULL);
}

/* A connection's TLS filter. */
static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
	return tunnel_tls_bufferevent(base, arg);
}

/*
 * The text that tells one session's AppSKey field from another's: its kind, KEK label and
 * hex digits in lower case. Its SHA-256 is the session's fingerprint in the journal.
 */
static void key_field(const struct uplink *u, char out[SESSCACHE_FIELD_MAX])
{
	const char *kind = u->key_kind == UPLINK_KEY_ENVELOPE ? "kw:" : "ecb:";
	size_t k = strlen(kind), l = strlen(u->kek_label), n = strlen(u->key_hex);
	/* The parser bounds the label (UPLINK_MAX_LABEL) and the digits (48). */
	memcpy(out, kind, k);
	memcpy(out + k, u->kek_label, l);
	out[k + l] = ':';
	char *d = out + k + l + 1;
	for (size_t i = 0; i <= n; i++)
		d[i] = (char)tolower((unsigned char)u->key_hex[i]);
}

static void key_fingerprint(const char *field, char out[65])
{
	ascrypto_token(&field, 1, out);
}

/*
 * A session made here from an AppSKey field whose uplinks are still being committed. Each
 * of them (the first, any other with the same field or the same key meanwhile, and an
 * uplink without the field that it can carry) brings the row to the journal, which adds
 * it in the uplink's own transaction, or finds it there when an earlier one did. So the
 * loop never commits, nor waits for the journal's write lock, for a new session: a burst
 * of devices joining costs the other requests nothing. Freed, its key wiped, once the last
 * of its uplinks is answered; by then, if one committed, the cache has it with its id.
 */
struct new_session {
	struct new_session *next;
	char field[SESSCACHE_FIELD_MAX];
	struct as_session s; /* id 0 */
	struct journal_new_session row;
	unsigned uplinks; /* pending uplinks that carry it */
};

static bool same_device(const struct new_session *n, const char *customer_id, const char *dev_eui)
{
	return strcmp(n->s.dev_eui, dev_eui) == 0 && strcmp(n->s.customer_id, customer_id) == 0;
}

static struct new_session *new_by_field(struct tunnel *t, const char *field,
					const char *customer_id, const char *dev_eui)
{
	for (struct new_session *n = t->new_sessions; n; n = n->next)
		if (same_device(n, customer_id, dev_eui) && strcmp(n->field, field) == 0)
			return n;
	return NULL;
}

static struct new_session *new_by_key(struct tunnel *t, const char *customer_id,
				      const char *dev_eui, const uint8_t key[AS_KEY_LEN])
{
	for (struct new_session *n = t->new_sessions; n; n = n->next)
		if (ascrypto_key_equal(n->s.key, key) && same_device(n, customer_id, dev_eui))
			return n;
	return NULL;
}

/* The newest of the device's new sessions that began by at_ms (journal_session_at()). */
static struct new_session *new_at(struct tunnel *t, const char *customer_id, const char *dev_eui,
				  int64_t at_ms)
{
	struct new_session *best = NULL;
	for (struct new_session *n = t->new_sessions; n; n = n->next)
		if (same_device(n, customer_id, dev_eui) && n->s.received_ms <= at_ms &&
		    (!best || n->s.received_ms > best->s.received_ms))
			best = n;
	return best;
}

static int new_add(struct tunnel *t, const char *field, const char *fp, const struct as_session *s,
		   struct new_session **ret)
{
	struct new_session *n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	int r = journal_session_seal(t->journal, fp, s, &n->row);
	if (r < 0) {
		cred_wipe(n, sizeof(*n));
		free(n);
		return r;
	}
	memcpy(n->field, field, strlen(field) + 1);
	n->s = *s;
	n->s.id = 0;
	n->next = t->new_sessions;
	t->new_sessions = n;
	*ret = n;
	return 0;
}

/*
 * One of a new session's uplinks is answered: committed (err 0) in session id, which the
 * cache takes; the session freed after its last (or at once when none took it).
 */
static void new_release(struct tunnel *t, struct new_session *n, int err, int64_t id)
{
	if (err == 0 && id > 0 && n->s.id == 0) {
		n->s.id = id;
		sesscache_put(t->cache, n->field, &n->s);
		char msg[64 + sizeof(n->s.dev_eui) + sizeof(n->s.customer_id)];
		snprintf(msg, sizeof(msg), "tunnel: new session key for DevEUI %s (CustomerID %s)",
			 n->s.dev_eui, n->s.customer_id[0] ? n->s.customer_id : "-");
		log_event(LOG_INFO, LOG_ID_AS_SESSION, msg, "DEVEUI", n->s.dev_eui, "CUSTOMER_ID",
			  n->s.customer_id, NULL); /* stored now: committed with its uplink */
	}
	if (n->uplinks > 0 && --n->uplinks > 0)
		return;
	for (struct new_session **pp = &t->new_sessions; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			break;
		}
	}
	cred_wipe(n, sizeof(*n));
	free(n);
}

/*
 * When the network received an uplink: the body's Time (not signed), but never after the
 * LRC signed the POST (sent_ms, the query's Time), which it cannot precede.
 */
static int64_t frame_time(const struct uplink *u, int64_t sent_ms)
{
	int64_t ms;
	if (!u->time[0] || uplink_time_parse(u->time, &ms) < 0 || ms > sent_ms)
		return sent_ms;
	return ms;
}

/*
 * Whether s (journal_session_at's choice) can be the session of u, an uplink without the
 * AppSKey field that the network received at frame_ms: s had begun by then (else no known
 * session had: the uplink with its key has not come yet, or the LRC's clock went back) and
 * has u's DevAddr (a rejoin gives a new one: an uplink of a session whose key has not come
 * yet). Refused, the LRC posts it again, and it is read once its key is known; guessed, it
 * would be journaled under another session's key and take that session's FCntUp.
 */
static bool session_can_carry(const struct as_session *s, const struct uplink *u, int64_t frame_ms)
{
	if (s->received_ms > frame_ms)
		return false;
	return !u->dev_addr[0] || !s->dev_addr[0] || strcmp(u->dev_addr, s->dev_addr) == 0;
}

/*
 * Find or create the session of an uplink that carries an AppSKey field; time_ms is the
 * signed Time (the Token's), frame_ms frame_time()'s.
 */
static int session_from_field(struct tunnel *t, const struct uplink *u, const char *token,
			      int64_t time_ms, int64_t frame_ms, struct as_session *ret,
			      char field[SESSCACHE_FIELD_MAX], struct new_session **ret_new,
			      json_t **ans, int *status)
{
	key_field(u, field);
	if (sesscache_get(t->cache, field, u->customer_id, u->dev_eui, ret))
		return 0;
	struct new_session *n = new_by_field(t, field, u->customer_id, u->dev_eui);
	if (n) {
		*ret = n->s;
		*ret_new = n;
		return 0;
	}
	char fp[65];
	key_fingerprint(field, fp);
	int r = journal_session_find(t->journal, u->customer_id, u->dev_eui, fp, ret);
	if (r == 0)
		sesscache_put(t->cache, field, ret);
	if (r != -ENOENT) {
		if (r < 0)
			*status = refuse(t, &t->stats.store_failed, 503, ans, u->dev_eui,
					 "cannot read the key store: %s", strerror(-r));
		return r;
	}
	/* A new session from a request journaled already is a replay with a forged field. */
	int64_t seq;
	r = journal_token_find(t->journal, time_ms, token, &seq);
	if (r == 0) {
		t->stats.duplicates++;
		log_info("tunnel: DevEUI %s FCntUp %" PRIu32
			 " again: already journaled as %" PRId64,
			 u->dev_eui, u->fcnt_up, seq);
		*ans = json_pack("{s:I, s:b}", "seq", (json_int_t)seq, "duplicate", true);
		*status = 200;
		return -EEXIST;
	}
	if (r != -ENOENT) {
		*status = refuse(t, &t->stats.store_failed, 503, ans, u->dev_eui,
				 "cannot read the journal: %s", strerror(-r));
		return r;
	}
	uint8_t astk[AS_KEY_LEN], wrapped[AS_WRAPPED_LEN];
	r = journal_astk_find(t->journal, u->kek_label, u->customer_id, u->dev_eui, astk, NULL);
	if (r == -ENOENT) {
		*status =
		    refuse(t, &t->stats.no_astk, 503, ans, u->dev_eui,
			   u->kek_label[0] ? "no ASTK with KEKLabel '%s' (tpactl as import-astk)"
					   : "no ASTK for CustomerID '%s' (tpactl as import-astk)",
			   u->kek_label[0] ? u->kek_label : u->customer_id);
		return r;
	}
	if (r < 0) {
		*status = refuse(t, &t->stats.store_failed, 503, ans, u->dev_eui,
				 "cannot read the ASTK: %s", strerror(-r));
		return r;
	}
	/*
	 * A session is as new as the network's reception of the uplink that brought its key
	 * (the body's Time, else the signed one), not as our receipt of it: a late retry from
	 * a session the device has left must not become its newest.
	 */
	struct as_session s = {.received_ms = frame_ms,
			       .fcnt_dn_next = u->has_fcnt_dn ? u->fcnt_dn : 0};
	text_copy(s.customer_id, sizeof(s.customer_id), u->customer_id);
	text_copy(s.dev_eui, sizeof(s.dev_eui), u->dev_eui);
	text_copy(s.dev_addr, sizeof(s.dev_addr), u->dev_addr);
	if (u->key_kind == UPLINK_KEY_ENVELOPE) {
		r = hex_decode(u->key_hex, wrapped, AS_WRAPPED_LEN);
		if (r == 0)
			r = ascrypto_key_unwrap(astk, wrapped, AS_WRAPPED_LEN, s.key);
		if (r < 0) {
			*status = refuse(t, &t->stats.wrong_key, 401, ans, u->dev_eui,
					 "AppSKey does not unwrap with the ASTK labelled '%s'",
					 u->kek_label);
			goto out;
		}
	} else {
		uint8_t block[AS_KEY_LEN];
		r = hex_decode(u->key_hex, block, AS_KEY_LEN);
		if (r == 0)
			r = ascrypto_appskey_unwrap(astk, block, s.key);
		cred_wipe(block, sizeof(block));
		if (r < 0) {
			*status = refuse(t, &t->stats.bad_request, 400, ans, u->dev_eui,
					 "AppSKey cannot be decrypted");
			goto out;
		}
	}
	/* The same key in another field (an envelope now, another ASTK): the same session. */
	struct as_session same;
	r = journal_session_with_key(t->journal, u->customer_id, u->dev_eui, s.key, &same);
	if (r == 0) {
		log_info("tunnel: DevEUI %s: a known AppSKey in a new field (%s)", u->dev_eui,
			 u->key_kind == UPLINK_KEY_ENVELOPE ? "a key envelope" : "an AES block");
		sesscache_put(t->cache, field, &same);
		*ret = same;
		cred_wipe(&same, sizeof(same));
		goto out;
	}
	if (r != -ENOENT) {
		*status = refuse(t, &t->stats.store_failed, 503, ans, u->dev_eui,
				 "cannot read the key store: %s", strerror(-r));
		goto out;
	}
	if ((n = new_by_key(t, u->customer_id, u->dev_eui, s.key))) {
		/* The same key in another field while the first is being committed. */
		*ret = n->s;
		*ret_new = n;
		goto out;
	}
	r = new_add(t, field, fp, &s, &n);
	if (r < 0) {
		*status = refuse(t, &t->stats.store_failed, 503, ans, u->dev_eui,
				 "cannot store the AppSKey: %s", strerror(-r));
		goto out;
	}
	*ret = s;
	*ret_new = n;
out:
	cred_wipe(astk, sizeof(astk));
	cred_wipe(wrapped, sizeof(wrapped));
	cred_wipe(&s, sizeof(s));
	return r;
}

/* An uplink verified and decrypted, waiting for the group commit. */
struct pending {
	struct journal_entry e; /* first: the writer hands back entries */
	struct pending *next;
	struct httpd_req *req; /* NULL for tunnel_process() */
	int64_t received_ms, session_id;
	char dev_eui[17], customer_id[UPLINK_MAX_CUSTOMER + 1], dev_addr[9];
	char time[UPLINK_MAX_TIME + 1];
	int fport;
	uint32_t fcnt_up, fcnt_dn;
	bool has_fcnt_dn, encrypted, session_update;
	int64_t began_ms; /* with session_update: the session began by then (0: as it was) */
	char payload[2 * AS_MAX_FRM_PAYLOAD + 1];
	char *radio;
	char token[65];		    /* lower-case hex */
	int64_t time_ms;	    /* the signed Time */
	char field[SESSCACHE_FIELD_MAX]; /* its session's cache key (key_field); "" for none */
	struct new_session *new_session; /* the session it brings to the journal, if new */
	struct pending *tok_next;   /* in tunnel.inflight while it is being committed */
	struct follower *followers; /* the same request again meanwhile: answered with it */
	struct pending *same;	    /* tunnel_check(): this request is being committed as that */
	/* After the commit. */
	int64_t seq;
	bool duplicate;
};

static unsigned inflight_bucket(const char *token)
{
	/* The first byte of a SHA-256 (hex, computed here): evenly spread. */
	return (unsigned)(hex_digit(token[0]) << 4 | hex_digit(token[1])) % INFLIGHT_BUCKETS;
}

/* A request sent again while the first is being committed waits for its answer. */
struct follower {
	struct follower *next;
	struct httpd_req *req;
};

static struct pending *inflight_find(struct tunnel *t, const char *token)
{
	for (struct pending *p = t->inflight[inflight_bucket(token)]; p; p = p->tok_next)
		if (strcmp(p->token, token) == 0)
			return p;
	return NULL;
}

static void inflight_add(struct tunnel *t, struct pending *p)
{
	struct pending **b = &t->inflight[inflight_bucket(p->token)];
	p->tok_next = *b;
	*b = p;
}

static void inflight_remove(struct tunnel *t, struct pending *p)
{
	for (struct pending **pp = &t->inflight[inflight_bucket(p->token)]; *pp;
	     pp = &(*pp)->tok_next)
		if (*pp == p) {
			*pp = p->tok_next;
			return;
		}
}

/* A span of ms for a person, to the nearest unit: "2 days", "3 h", "5 min" or "42 s". */
static void span_text(int64_t ms, char *out, size_t len)
{
	int64_t s = ms / 1000;
	if (s >= 2 * 86400)
		snprintf(out, len, "%" PRId64 " days", (s + 43200) / 86400);
	else if (s >= 2 * 3600)
		snprintf(out, len, "%" PRId64 " h", (s + 1800) / 3600);
	else if (s >= 2 * 60)
		snprintf(out, len, "%" PRId64 " min", (s + 30) / 60);
	else
		snprintf(out, len, "%" PRId64 " s", s);
}

/*
 * How far a Time is from our clock, over the limit max_ms, for a person: span_text(), or
 * to the millisecond when that would read as the limit does ("60 s" for 60.9 s over 60 s).
 */
static void deviation_text(int64_t ms, int64_t max_ms, char *out, size_t len)
{
	char max[24];
	span_text(ms, out, len);
	span_text(max_ms, max, sizeof(max));
	if (strcmp(out, max) != 0)
		return;
	char frac[8] = "";
	if (ms % 1000) {
		snprintf(frac, sizeof(frac), ".%03d", (int)(ms % 1000));
		for (size_t n = strlen(frac); frac[n - 1] == '0'; n--)
			frac[n - 1] = '\0';
	}
	snprintf(out, len, "%" PRId64 "%s s", ms / 1000, frac);
}

/*
 * Everything but the commit: a final status with *ret_answer, or 0 with p filled for the
 * journal.
 */
static int tunnel_check(struct tunnel *t, const char *query, const char *body, size_t len,
			int64_t now_ms, json_t **ret_answer, struct pending *p)
{
	char reason[200];
	struct uplink_query q;
	struct uplink u;
	struct as_session s = {0};
	char field[SESSCACHE_FIELD_MAX] = "";
	struct new_session *ns = NULL;
	int status = 503; /* each way out sets its own */
	t->stats.requests++;
	if (len > t->max_body)
		return refuse(t, &t->stats.too_big, 413, ret_answer, NULL,
			      "body of %zu bytes is over max-body (%zu)", len, t->max_body);
	if (uplink_query_parse(query, &q, reason, sizeof(reason)) < 0)
		return refuse(t,
			      q.token[0] || !strstr(reason, "missing") ? &t->stats.bad_request
								       : &t->stats.bad_token,
			      q.token[0] || !strstr(reason, "missing") ? 400 : 401, ret_answer,
			      NULL, "%s", reason);
	int r = uplink_parse(body, len, &u, reason, sizeof(reason));
	if (r == -ENOMEM)
		return refuse(t, &t->stats.store_failed, 503, ret_answer, NULL, "out of memory");
	if (r < 0)
		return refuse(t, &t->stats.bad_request, 400, ret_answer, NULL, "%s", reason);

	char tok[65];
	uplink_token(&u, q.signed_part, t->key_lower, tok);
	if (!ascrypto_token_equal(tok, q.token)) {
		status = refuse(t, &t->stats.bad_token, 401, ret_answer, u.dev_eui, "bad Token");
		goto out;
	}
	/* The query's Time, which the Token signs; the body's is not signed. */
	const char *time_s = q.time;
	int64_t sent_ms;
	if (!time_s[0] || uplink_time_parse(time_s, &sent_ms) < 0) {
		status = refuse(t, &t->stats.bad_request, 400, ret_answer, u.dev_eui, "Time is %s",
				time_s[0] ? "not a date and time" : "missing from the query");
		goto out;
	}
	int64_t dev = now_ms - sent_ms;
	if (dev < 0)
		dev = -dev;
	if (t->max_deviation_ms > 0 && dev > t->max_deviation_ms) {
		/* Either clock may be the wrong one: say which way, and what ours reads. */
		char sent[40], ours[40], by[24], max[24];
		uplink_time_format(sent_ms, sent, sizeof(sent));
		uplink_time_format(now_ms, ours, sizeof(ours));
		deviation_text(dev, t->max_deviation_ms, by, sizeof(by));
		span_text(t->max_deviation_ms, max, sizeof(max));
		status = refuse(t, &t->stats.stale_time, 401, ret_answer, u.dev_eui,
				"stale Time: %s is %s %s this host's wall clock (%s), more than "
				"tunnel.max-time-deviation (%s): check the clocks (NTP) of the "
				"LRC and of this host",
				sent, by, sent_ms > now_ms ? "ahead of" : "behind", ours, max);
		goto out;
	}
	t->lrc_seen = true;
	t->lrc_time_ms = sent_ms;
	t->lrc_at_ms = clock_now_ms();

	/*
	 * A replay is the same signed request, whatever unsigned fields (AppSKey, FCntDn,
	 * DevAddr) come with it. The writer finds it by its Token before the uplink or its
	 * session's FCntDn is written; one that would make a new session from its AppSKey
	 * field is looked up here first (session_from_field); the same request while the
	 * first is being committed waits for that one's answer.
	 */
	if ((p->same = inflight_find(t, tok))) {
		status = 0; /* answered with the first, once it is committed */
		goto out;
	}
	memcpy(p->token, tok, sizeof(p->token));
	p->time_ms = sent_ms;

	bool need_key = u.payload_hex[0] && u.fport > 0;
	int64_t frame_ms = frame_time(&u, sent_ms);
	if (u.key_kind != UPLINK_KEY_NONE) {
		if (session_from_field(t, &u, tok, sent_ms, frame_ms, &s, field, &ns, ret_answer,
				       &status) < 0)
			goto out;
	} else {
		/* Not necessarily the newest: a late uplink of the session before a rejoin. */
		r = journal_session_at(t->journal, u.customer_id, u.dev_eui, frame_ms, &s);
		ns = r == 0 || r == -ENOENT ? new_at(t, u.customer_id, u.dev_eui, frame_ms) : NULL;
		if (ns && (r == -ENOENT || s.received_ms > frame_ms ||
			   ns->s.received_ms >= s.received_ms)) {
			s = ns->s; /* one being committed is newer */
			r = 0;
		} else {
			ns = NULL;
		}
		if (r == 0 && !session_can_carry(&s, &u, frame_ms)) {
			status = refuse(t, &t->stats.no_session, 503, ret_answer, u.dev_eui,
					"no AppSKey field, and no session known here can have "
					"carried it (%s): its uplink with the key has not come yet",
					s.received_ms > frame_ms ? "none had begun by its Time"
								 : "another DevAddr");
			goto out;
		}
		if (r == -ENOENT && need_key) {
			status = refuse(t, &t->stats.unknown_device, 404, ret_answer, u.dev_eui,
					"unknown DevEUI: no AppSKey field and no stored key");
			goto out;
		}
		if (r < 0 && r != -ENOENT) {
			status = refuse(t, &t->stats.store_failed, 503, ret_answer, u.dev_eui,
					"cannot read the key store: %s", strerror(-r));
			goto out;
		}
	}

	/* A replay is found by the journal when it is committed (journal_uplink_insert). */
	bool encrypted = false;
	size_t n = strlen(u.payload_hex) / 2;
	p->payload[0] = '\0';
	if (n > 0) {
		uint8_t buf[AS_MAX_FRM_PAYLOAD];
		hex_decode(u.payload_hex, buf, n);
		if (need_key) {
			uint32_t dev_addr =
			    u.dev_addr[0] ? u.dev_addr_n : (uint32_t)strtoul(s.dev_addr, NULL, 16);
			ascrypto_frm_crypt(s.key, dev_addr, u.fcnt_up, AS_UPLINK, buf, n, buf);
		} else {
			encrypted =
			    true; /* FPort 0: MAC commands under the NwkSKey we never hold */
		}
		hex_encode(buf, n, p->payload);
		cred_wipe(buf, sizeof(buf));
	}
	p->radio = uplink_radio_take(&u);
	if (!p->radio) { /* never journaled without them: the LRC sends it again */
		status =
		    refuse(t, &t->stats.store_failed, 503, ret_answer, u.dev_eui, "out of memory");
		goto out;
	}
	p->received_ms = now_ms;
	p->session_id = s.id;
	memcpy(p->dev_eui, u.dev_eui, sizeof(p->dev_eui));
	memcpy(p->customer_id, u.customer_id, sizeof(p->customer_id));
	text_copy(p->dev_addr, sizeof(p->dev_addr), u.dev_addr[0] ? u.dev_addr : s.dev_addr);
	text_copy(p->time, sizeof(p->time), time_s);
	p->fport = u.fport;
	p->fcnt_up = u.fcnt_up;
	p->has_fcnt_dn = u.has_fcnt_dn;
	p->fcnt_dn = u.fcnt_dn;
	/*
	 * The session row changes only when the device moved, the LRC's FCntDn passed ours, or
	 * an uplink with the key shows the session began before the one that brought it first
	 * (so an uplink without the key between the two is no longer refused).
	 */
	p->began_ms = u.key_kind != UPLINK_KEY_NONE && frame_ms < s.received_ms ? frame_ms : 0;
	p->session_update =
	    (s.id > 0 || ns) && ((u.dev_addr[0] && strcmp(u.dev_addr, s.dev_addr) != 0) ||
				 (u.has_fcnt_dn && u.fcnt_dn > s.fcnt_dn_next) || p->began_ms > 0);
	p->encrypted = encrypted;
	/* The cached session follows once the uplink is committed (not a replay, not failed). */
	memcpy(p->field, field, sizeof(p->field));
	p->new_session = ns;
	if (ns)
		ns->uplinks++;
	status = 0;
out:
	if (status != 0 && ns && ns->uplinks == 0) /* made for this uplink, which failed */
		new_release(t, ns, status, 0);
	cred_wipe(&s, sizeof(s));
	uplink_clear(&u);
	return status;
}

/* The journal row of a pending uplink (its strings stay p's). */
static struct journal_uplink uplink_of(const struct pending *p)
{
	return (struct journal_uplink){
	    .received_ms = p->received_ms,
	    .session_id = p->session_id,
	    .dev_eui = p->dev_eui,
	    .customer_id = p->customer_id,
	    .dev_addr = p->dev_addr,
	    .time = p->time,
	    .fport = p->fport,
	    .fcnt_up = p->fcnt_up,
	    .has_fcnt_dn = p->has_fcnt_dn,
	    .fcnt_dn = p->fcnt_dn,
	    .payload_hex = p->payload,
	    .encrypted = p->encrypted,
	    .radio = p->radio,
	    .update_session = p->session_update,
	    .began_ms = p->began_ms,
	    .token = p->token,
	    .time_ms = p->time_ms,
	    .new_session = p->new_session ? &p->new_session->row : NULL,
	};
}

/*
 * Commit a list of pending uplinks in one transaction (one fsync) and set each one's seq;
 * a replay within the list or of the journal is marked duplicate. 0 or a negative errno
 * (then nothing of the list was kept).
 */
static int commit_list(struct tunnel *t, struct pending *list)
{
	int r = journal_begin(t->journal);
	for (struct pending *p = list; r == 0 && p; p = p->next) {
		struct journal_uplink ju = uplink_of(p);
		r = journal_uplink_insert(t->journal, &ju, &p->seq);
		p->session_id = ju.session_id;
		p->duplicate = r == -EEXIST;
		if (r == -EEXIST)
			r = 0;
	}
	if (r == 0)
		return journal_commit(t->journal);
	journal_rollback(t->journal);
	return r;
}

/* The cached session (if any) after an uplink moved its DevAddr, FCntDn or start. */
static void cache_update(struct tunnel *t, const struct pending *p)
{
	struct as_session *s =
	    sesscache_session(t->cache, p->field, p->customer_id, p->dev_eui, p->session_id);
	if (!s)
		return;
	if (p->began_ms > 0 && p->began_ms < s->received_ms)
		s->received_ms = p->began_ms;
	if (p->dev_addr[0])
		text_copy(s->dev_addr, sizeof(s->dev_addr), p->dev_addr);
	if (p->has_fcnt_dn && p->fcnt_dn > s->fcnt_dn_next)
		s->fcnt_dn_next = p->fcnt_dn;
}

/*
 * An uplink is answered: the session it brought, if new, is cached once committed; one
 * that it moved on (DevAddr, FCntDn) is updated in the cache.
 */
static void committed_session(struct tunnel *t, const struct pending *p, int err)
{
	if (p->new_session)
		new_release(t, p->new_session, err, p->session_id);
	if (err == 0 && !p->duplicate && p->session_update && p->field[0])
		cache_update(t, p);
}

/* The answer of one pending uplink after its commit (or the commit's failure). */
static int pending_answer(struct tunnel *t, struct pending *p, int err, json_t **ret)
{
	if (err < 0)
		return refuse(t, &t->stats.store_failed, 503, ret, p->dev_eui,
			      "cannot commit the uplink: %s", strerror(-err));
	if (p->duplicate) {
		t->stats.duplicates++;
		log_info("tunnel: DevEUI %s FCntUp %" PRIu32
			 " again: already journaled as %" PRId64,
			 p->dev_eui, p->fcnt_up, p->seq);
	} else {
		t->stats.accepted++;
		log_debug("tunnel: DevEUI %s FCntUp %" PRIu32 " journaled as %" PRId64, p->dev_eui,
			  p->fcnt_up, p->seq);
	}
	*ret = json_pack("{s:I, s:b}", "seq", (json_int_t)p->seq, "duplicate", p->duplicate);
	return 200;
}

static void answer(struct httpd_req *req, int status, json_t *body);

/* Answer a list of committed pendings (linked by next) and wake the streams. */
static void answer_list(struct tunnel *t, struct pending *list, int err)
{
	size_t n = 0, cap = 0;
	for (struct pending *p = list; p; p = p->next)
		cap++;
	struct tunnel_uplink *ups = t->on_commit ? calloc(cap, sizeof(*ups)) : NULL;
	int64_t last = 0;
	if (err) {
		char msg[160], count[24];
		snprintf(msg, sizeof(msg),
			 "journal: cannot commit %zu uplinks (each answered 503): %s", cap,
			 strerror(-err));
		snprintf(count, sizeof(count), "%zu", cap);
		log_event(LOG_ERR, LOG_ID_AS_JOURNAL_FAILED, msg, "UPLINKS", count, "REASON",
			  strerror(-err), NULL);
	}
	while (list) {
		struct pending *p = list;
		list = p->next;
		int e = err ? err : p->e.job.err;
		inflight_remove(t, p);
		committed_session(t, p, e);
		for (struct follower *f = p->followers, *next; f; f = next) {
			next = f->next;
			json_t *ans = NULL;
			int status = e ? refuse(t, &t->stats.store_failed, 503, &ans, p->dev_eui,
						"cannot commit the uplink: %s", strerror(-e))
				       : (t->stats.duplicates++, 200);
			if (!e)
				ans = json_pack("{s:I, s:b}", "seq", (json_int_t)p->seq,
						"duplicate", true);
			answer(f->req, status, ans);
			free(f);
		}
		if (e == 0 && !p->duplicate) {
			/* The common answer, written as pending_answer() would, without jansson. */
			static const char head[] = "{\"seq\":", tail[] = ",\"duplicate\":false}\n";
			char text[sizeof(head) + TEXT_U64_MAX + sizeof(tail)];
			size_t len = sizeof(head) - 1;
			memcpy(text, head, len);
			len += text_u64(text + len, (uint64_t)p->seq);
			memcpy(text + len, tail, sizeof(tail));
			len += sizeof(tail) - 1;
			t->stats.accepted++;
			log_debug("tunnel: DevEUI %s FCntUp %" PRIu32 " journaled as %" PRId64,
				  p->dev_eui, p->fcnt_up, p->seq);
			if (p->seq > last)
				last = p->seq;
			if (ups)
				ups[n++] = (struct tunnel_uplink){p->seq, p->e.text, p->e.text_len};
			else
				free(p->e.text);
			p->e.text = NULL;
			httpd_reply(p->req, 200, NULL, text, len);
		} else {
			json_t *ans = NULL;
			int status = pending_answer(t, p, e, &ans);
			answer(p->req, status, ans);
			free(p->e.text);
		}
		free(p->radio);
		free(p);
	}
	if (last && t->on_commit) {
		struct tunnel_uplink one = {last, NULL, 0};
		t->on_commit(ups && n ? ups : &one, ups && n ? n : 1, t->arg);
	}
	for (size_t i = 0; ups && i < n; i++)
		free(ups[i].text);
	free(ups);
}

/* The writer thread committed these entries (or failed to): answer them now, not before. */
static void committed_cb(struct journal_entry *list, void *arg)
{
	struct tunnel *t = arg;
	struct pending *head = NULL, **tail = &head;
	for (struct journal_entry *e = list, *next; e; e = next) {
		next = (struct journal_entry *)e->job.next;
		struct pending *p = (struct pending *)e;
		p->seq = e->seq;
		p->session_id = e->u.session_id;
		p->duplicate = e->duplicate;
		p->next = NULL;
		*tail = p;
		tail = &p->next;
	}
	answer_list(t, head, 0);
}

/*
 * Hand the batch to the journal's writer thread, which answers each request once the
 * transaction holding it is durable (committed_cb); without a writer (a journal in memory),
 * commit here.
 */
static void flush_batch(struct tunnel *t)
{
	struct pending *list = t->batch;
	t->batch = NULL;
	t->batch_tail = &t->batch;
	t->batch_n = 0;
	if (!list)
		return;
	if (t->writer) {
		for (struct pending *p = list; p; p = p->next) {
			p->e.u = uplink_of(p);
			p->e.job.next = p->next ? &p->next->e.job : NULL;
		}
		int r = journal_uplink_queue(t->journal, &list->e);
		if (r == 0)
			return;
		answer_list(t, list, r); /* the writer is stopping: 503, the LRC retries */
		return;
	}
	answer_list(t, list, commit_list(t, list));
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	flush_batch(arg);
}

int tunnel_process(struct tunnel *t, const char *query, const char *body, size_t len,
		   int64_t now_ms, json_t **ret_answer)
{
	struct pending p = {0};
	int status = tunnel_check(t, query, body, len, now_ms, ret_answer, &p);
	if (status != 0)
		return status;
	int err = commit_list(t, &p);
	committed_session(t, &p, err);
	status = pending_answer(t, &p, err, ret_answer);
	free(p.radio);
	if (status == 200 && !p.duplicate && t->on_commit) {
		struct tunnel_uplink one = {p.seq, NULL, 0};
		t->on_commit(&one, 1, t->arg);
	}
	return status;
}

/*
 * A body announced with "Expect: 100-continue" is invited only when it can be taken:
 * a POST to the tunnel's path within max-body. Anything else is answered (404, 405, 413)
 * before the client sends it.
 */
static bool invite_body(const char *method, const char *target, long long declared, void *arg)
{
	struct tunnel *t = arg;
	size_t n = strcspn(target, "?");
	return strcmp(method, "POST") == 0 && strlen(t->path) == n &&
	       strncmp(target, t->path, n) == 0 &&
	       (declared < 0 || (unsigned long long)declared <= t->max_body);
}

/* Send a JSON answer (one line) with a status. */
static void answer_with(struct httpd_req *req, int status, const char *extra, json_t *body)
{
	char *s = body ? wipe_json_dumps(body, JSON_COMPACT) : NULL;
	size_t n = s ? strlen(s) : 0;
	if (s) {
		char *nl = realloc(s, n + 2);
		if (nl) {
			s = nl;
			s[n++] = '\n';
			s[n] = '\0';
		}
	}
	httpd_reply(req, status, extra, s, n);
	free(s);
	json_decref(body);
}

static void answer(struct httpd_req *req, int status, json_t *body)
{
	answer_with(req, status, NULL, body);
}

static void request_cb(struct httpd_req *req, void *arg)
{
	struct tunnel *t = arg;
	const char *path = httpd_req_path(req);
	const char *extra = NULL;
	json_t *ans = NULL;
	int status;
	long long declared;
	if (!path || !*path)
		path = "/";
	if (strcmp(path, t->path) != 0) {
		t->stats.requests++;
		status =
		    refuse(t, &t->stats.not_found, 404, &ans, NULL, "no tunnel at %.100s", path);
	} else if (strcmp(httpd_req_method(req), "POST") != 0) {
		t->stats.requests++;
		status = refuse(t, &t->stats.bad_method, 405, &ans, NULL, "the tunnel takes POST");
		extra = "Allow: POST\r\n";
	} else if (httpd_req_unread(req, &declared)) {
		/* Refused before its body came (invite_body). */
		t->stats.requests++;
		status = refuse(t, &t->stats.too_big, 413, &ans, NULL,
				"body of %lld bytes is over max-body (%zu)", declared, t->max_body);
	} else {
		size_t len;
		const char *body = httpd_req_body(req, &len);
		struct pending *p = calloc(1, sizeof(*p));
		if (!p) {
			t->stats.requests++;
			status =
			    refuse(t, &t->stats.store_failed, 503, &ans, NULL, "out of memory");
		} else {
			status = tunnel_check(t, httpd_req_query(req), body, len, clock_wall_ms(),
					      &ans, p);
			struct follower *f = status == 0 && p->same ? malloc(sizeof(*f)) : NULL;
			if (f) {
				/* The same request as one being committed: answered with it. */
				*f = (struct follower){p->same->followers, req};
				p->same->followers = f;
				free(p->radio);
				free(p);
				return;
			}
			if (status == 0 && p->same)
				status = refuse(t, &t->stats.store_failed, 503, &ans, NULL,
						"out of memory");
			if (status == 0) {
				/* Answered once committed, with whatever else this turn brought. */
				p->req = req;
				inflight_add(t, p);
				*t->batch_tail = p;
				t->batch_tail = &p->next;
				if (++t->batch_n >= MAX_BATCH)
					flush_batch(t);
				else
					event_active(t->flush, EV_TIMEOUT, 1);
				return;
			}
			free(p);
		}
	}
	answer_with(req, status, extra, ans);
}

int tunnel_new(struct event_base *base, const struct tunnel_options *o, struct journal *j,
	       tunnel_commit_fn *on_commit, void *arg, struct tunnel **ret, char *err,
	       size_t errlen)
{
	size_t klen = o->key ? strlen(o->key) : 0;
	if (klen == 0 || klen >= sizeof(((struct tunnel *)0)->key_lower)) {
		snprintf(err, errlen, "the tunnel key is empty or too long");
		return -EINVAL;
	}
	struct tunnel *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->journal = j;
	t->batch_tail = &t->batch;
	t->cache = sesscache_new(SESSION_CACHE);
	if (!t->cache) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->on_commit = on_commit;
	t->arg = arg;
	t->max_deviation_ms = o->max_deviation_ms;
	t->max_body = o->max_body;
	text_copy(t->path, sizeof(t->path), o->path && *o->path ? o->path : "/");
	for (size_t i = 0; i <= klen; i++)
		t->key_lower[i] = (char)tolower((unsigned char)o->key[i]);
	if (!base || !o->listen) {
		*ret = t;
		return 0;
	}
	char host[256], why[256];
	if (conf_parse_listen(o->listen, host, sizeof(host), &t->port, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "tunnel.listen '%s' %s", o->listen, why);
		tunnel_free(t);
		return -EINVAL;
	}
	t->flush = event_new(base, -1, 0, flush_cb, t);
	if (!t->flush) {
		snprintf(err, errlen, "out of memory");
		tunnel_free(t);
		return -ENOMEM;
	}
	if (o->tls_cert_file) {
		t->tls = tunnel_tls_new(o->tls_cert_file, o->tls_key_file, err, errlen);
		if (!t->tls) {
			tunnel_free(t);
			return -EINVAL;
		}
	}
	const struct httpd_options ho = {.name = "tunnel",
					 .timeout_name = "tunnel.timeout",
					 .cap_name = "tunnel.max-connections",
					 .host = host,
					 .port = t->port,
					 .max_body = o->max_body * HARD_BODY_FACTOR,
					 .timeout_ms = o->timeout_ms,
					 .bev = t->tls ? tls_bev : NULL,
					 .bev_arg = t->tls,
					 .max_conns = o->max_conns,
					 .invite = invite_body,
					 .refused = http_refused};
	t->http = httpd_new(base, &ho, request_cb, t, why, sizeof(why));
	if (!t->http) {
		snprintf(err, errlen, "tunnel.listen %s: %s", o->listen, why);
		tunnel_free(t);
		return -EADDRINUSE;
	}
	t->port = httpd_port(t->http);
	/* A journal in memory (tests) has no second connection: commits stay on the loop. */
	int wr = journal_writer_start(j, base, committed_cb, t, err, errlen);
	if (wr < 0 && wr != -EINVAL) {
		tunnel_free(t);
		return wr;
	}
	t->writer = wr == 0;
	log_info("tunnel listening on %s port %u, path %s%s", host, t->port, t->path,
		 t->tls ? ", TLS" : "");
	*ret = t;
	return 0;
}

struct tunnel *tunnel_close(struct tunnel *t, struct tunnel_stats *ret_final)
{
	if (!t)
		return NULL;
	flush_batch(t); /* what was verified is committed and answered before we go */
	if (t->writer)
		journal_writer_drain(t->journal);
	if (ret_final) {
		tunnel_get_stats(t, ret_final);
		ret_final->connections = 0;
	}
	if (t->flush)
		event_free(t->flush);
	httpd_free(t->http);
	tunnel_tls_free(t->tls);
	sesscache_free(t->cache);
	while (t->new_sessions) { /* none once every uplink is answered; wiped all the same */
		struct new_session *n = t->new_sessions;
		t->new_sessions = n->next;
		cred_wipe(n, sizeof(*n));
		free(n);
	}
	cred_wipe(t->key_lower, sizeof(t->key_lower));
	free(t);
	return NULL;
}

struct tunnel *tunnel_free(struct tunnel *t)
{
	return tunnel_close(t, NULL);
}

#define OUTCOME(status, metric, field)                                                             \
	{                                                                                          \
		status, metric, offsetof(struct tunnel_stats, field)                               \
	}

const struct tunnel_outcome tunnel_outcomes[TUNNEL_OUTCOMES] = {
    OUTCOME("accepted", "accepted", accepted),
    OUTCOME("duplicates", "duplicate", duplicates),
    OUTCOME("badRequest", "bad_request", bad_request),
    OUTCOME("badToken", "bad_token", bad_token),
    OUTCOME("staleTime", "stale_time", stale_time),
    OUTCOME("wrongKey", "wrong_key", wrong_key),
    OUTCOME("unknownDevice", "unknown_device", unknown_device),
    OUTCOME("notFound", "not_found", not_found),
    OUTCOME("badMethod", "bad_method", bad_method),
    OUTCOME("tooBig", "too_big", too_big),
    OUTCOME("timedOut", "timed_out", timed_out),
    OUTCOME("noASTK", "no_astk", no_astk),
    OUTCOME("noSession", "no_session", no_session),
    OUTCOME("storeFailed", "store_failed", store_failed),
};

uint16_t tunnel_port(const struct tunnel *t)
{
	return t->port;
}

void tunnel_get_stats(const struct tunnel *t, struct tunnel_stats *ret)
{
	*ret = t->stats;
	ret->tls_failed = tunnel_tls_failures(t->tls);
	/* What the HTTP server answered by itself counts as requests with their outcome. */
	struct httpd_stats hs = {0};
	if (t->http)
		httpd_get_stats(t->http, &hs);
	ret->bad_request += hs.malformed;
	ret->too_big += hs.too_big;
	ret->timed_out = hs.timed_out;
	ret->store_failed += hs.no_memory; /* as the tunnel counts its own 503s for memory */
	ret->connections = t->http ? httpd_connections(t->http) : 0;
	ret->connection_limit_hit = hs.capped;
	ret->requests += hs.malformed + hs.too_big + hs.timed_out + hs.no_memory;
}

bool tunnel_lrc_now(const struct tunnel *t, int64_t *ret_ms)
{
	if (!t->lrc_seen)
		return false;
	*ret_ms = t->lrc_time_ms + (int64_t)(clock_now_ms() - t->lrc_at_ms);
	return true;
}
