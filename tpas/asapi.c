/* asapi: io.tpad.AS and io.tpad.ASAdmin on tpas's sockets: uplink streams, downlinks, ASTKs. */
#include "asapi.h"

#include <errno.h>
#include <limits.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

#include "ascrypto.h"
#include "asconf.h"
#include "clock.h"
#include "cred.h"
#include "downlink.h"
#include "events.h"
#include "hex.h"
#include "iface.h"
#include "journal.h"
#include "log.h"
#include "message.h"
#include "server.h"
#include "tpad-build.h"
#include "tpas.h"
#include "tunnel.h"
#include "uplink.h"
#include "utf8.h"
#include "webhook.h"

#define BATCH 64		   /* uplinks read from the journal at once */
#define MAX_PENDING (256u * 1024u) /* bytes queued to a slow reader before pausing it */
#define SWEEP_MS 1000		   /* how often idle streams check that the client is there */
#define RECENT 4096		   /* newest uplinks kept encoded for the streams (a ring) */
/*
 * And at most this many bytes of them, whatever their size (tunnel.max-body allows 1 MiB
 * an uplink): a stream further behind reads the journal, as it does past RECENT uplinks.
 */
#define RECENT_BYTES (8u * 1024u * 1024u)

/* One Uplinks stream. */
struct sub {
	struct asapi *a;
	struct req *r;
	int64_t cursor;
	int64_t pruned_through; /* > cursor: uplinks up to it were removed before it read them */
	bool follow;
	bool caught_up;
	struct sub *prev, *next;
};

/* A recently committed uplink, encoded once for every stream. */
struct recent {
	int64_t seq;
	char *text;
	size_t len;
};

struct asapi {
	struct tpas *t;
	/* The ring of recent uplinks: n entries from head (oldest) on, seqs increasing. */
	struct recent ring[RECENT];
	size_t head, n;
	size_t bytes; /* the ring's texts */
	struct sub *subs;
	unsigned n_subs;
	struct dl_call *calls; /* SendDownlink calls waiting for the LRC */
	struct event *sweep;
};

/* Unlink and free a subscriber whose call has been answered. */
static void sub_free(struct sub *s)
{
	struct asapi *a = s->a;
	if (s->prev)
		s->prev->next = s->next;
	else
		a->subs = s->next;
	if (s->next)
		s->next->prev = s->prev;
	a->n_subs--;
	free(s);
}

/* End a subscriber's stream with a last reply. */
static void sub_end(struct sub *s, json_t *last)
{
	req_reply(s->r, last, false);
	sub_free(s);
}

static struct recent *ring_at(struct asapi *a, size_t i)
{
	return &a->ring[(a->head + i) % RECENT];
}

/* Drop the ring (an uplink came without its text: the ring would have a hole). */
static void ring_clear(struct asapi *a)
{
	for (size_t i = 0; i < a->n; i++) {
		free(ring_at(a, i)->text);
		ring_at(a, i)->text = NULL;
	}
	a->head = a->n = 0;
	a->bytes = 0;
}

/* Free the ring's oldest uplink. */
static void ring_drop_oldest(struct asapi *a)
{
	struct recent *e = ring_at(a, 0);
	a->bytes -= e->len;
	free(e->text);
	e->text = NULL;
	a->head = (a->head + 1) % RECENT;
	a->n--;
}

void asapi_remember(struct asapi *a, struct tunnel_uplink *ups, size_t n)
{
	if (!a)
		return;
	for (size_t i = 0; i < n; i++) {
		if (!ups[i].text || (a->n && ring_at(a, a->n - 1)->seq >= ups[i].seq)) {
			ring_clear(a);
			continue;
		}
		while (a->n && (a->n == RECENT || a->bytes + ups[i].len > RECENT_BYTES))
			ring_drop_oldest(a);
		*ring_at(a, a->n++) = (struct recent){ups[i].seq, ups[i].text, ups[i].len};
		a->bytes += ups[i].len;
		ups[i].text = NULL;
	}
}

/*
 * The ring's index of the first uplink after cursor, if the ring holds everything after
 * cursor that was committed (cursor not older than the ring's first uplink but one); else
 * -1 (read the journal). a->n when the stream has everything the ring holds.
 */
static ssize_t ring_find(struct asapi *a, int64_t cursor)
{
	if (!a->n || cursor < ring_at(a, 0)->seq - 1)
		return -1;
	size_t lo = 0, hi = a->n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (ring_at(a, mid)->seq <= cursor)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (ssize_t)lo;
}

static void sub_pump(struct sub *s);

static void sub_resume(void *arg)
{
	sub_pump(arg);
}

/* The client has MAX_PENDING bytes to read: the stream goes on once it has read them. */
static void sub_pause(struct sub *s)
{
	s->caught_up = false;
	req_when_written(s->r, sub_resume, s);
}

/* A following stream: send from the ring. false when the ring does not cover the cursor. */
static bool sub_pump_recent(struct sub *s)
{
	struct asapi *a = s->a;
	ssize_t i = ring_find(a, s->cursor);
	if (i < 0)
		return false;
	for (; (size_t)i < a->n; i++) {
		if (req_gone(s->r))
			return false; /* sub_pump() ends the stream */
		if (req_output_pending(s->r) > MAX_PENDING) {
			sub_pause(s);
			return true;
		}
		const struct recent *e = ring_at(a, (size_t)i);
		char buf[1024];
		/* {"uplink": <object>}: the parameters req_reply() would send for the row. */
		size_t n = e->len + 12;
		char *p = n <= sizeof(buf) ? buf : malloc(n);
		if (!p)
			return false;
		memcpy(p, "{\"uplink\":", 10);
		memcpy(p + 10, e->text, e->len);
		p[10 + e->len] = '}';
		req_reply_text(s->r, p, e->len + 11, true);
		if (p != buf)
			free(p);
		s->cursor = e->seq;
	}
	s->caught_up = true;
	return true;
}

/*
 * Note the uplinks after the cursor that store.retention-days removed before the stream
 * read them, for prunedThrough on its next reply: the gap is never silent. Checked before
 * each read of the journal, since a prune may run while a stream catches up.
 */
static void sub_check_pruned(struct sub *s)
{
	struct journal *j = s->a->t->journal;
	if (s->cursor <= 0)
		return;
	int64_t first = journal_first_seq(j);
	if (first < 0)
		return; /* unknown: told on a later read, never guessed */
	int64_t gone = first - 1;
	if (!first) {
		struct journal_stats js;
		journal_get_counters(j, &js);
		gone = js.last_seq;
	}
	if (gone <= s->cursor || gone <= s->pruned_through)
		return;
	s->pruned_through = gone;
	log_warnx("uplink stream after seq %" PRId64 ": uplinks up to seq %" PRId64
		  " were removed (store.retention-days) before it read them",
		  s->cursor, gone);
}

/* Send what the journal holds past the cursor, as far as the client keeps up. */
static void sub_pump(struct sub *s)
{
	struct asapi *a = s->a;
	if (s->follow && !s->pruned_through && !req_gone(s->r) && sub_pump_recent(s))
		return;
	for (;;) {
		if (req_gone(s->r)) {
			sub_end(s, NULL);
			return;
		}
		if (req_output_pending(s->r) > MAX_PENDING) {
			sub_pause(s);
			return;
		}
		sub_check_pruned(s);
		json_t *rows = journal_uplinks_after(a->t->journal, s->cursor, BATCH);
		if (!rows) {
			log_warnx("uplink stream: cannot read the journal");
			req_error(s->r, "io.tpad.AS.StoreFailed",
				  json_pack("{s:s}", "reason", "cannot read the journal"));
			s->r = NULL;
			sub_free(s); /* req_error finished the call */
			return;
		}
		size_t n = json_array_size(rows);
		bool last_batch = n < BATCH;
		for (size_t i = 0; i < n; i++) {
			if (i && req_output_pending(s->r) > MAX_PENDING) {
				/* At most one uplink past the limit, however large: the rest is
				 * read again from the cursor once the client has read. */
				json_decref(rows);
				sub_pause(s);
				return;
			}
			json_t *o = json_array_get(rows, i);
			s->cursor = json_integer_value(json_object_get(o, "seq"));
			json_t *msg = json_pack("{s:O}", "uplink", o);
			if (msg && s->pruned_through) {
				json_object_set_new(msg, "prunedThrough",
						    json_integer((json_int_t)s->pruned_through));
				s->pruned_through = 0;
			}
			if (!s->follow && last_batch && i + 1 == n) {
				json_decref(rows);
				sub_end(s, msg);
				return;
			}
			req_reply(s->r, msg, true);
		}
		json_decref(rows);
		if (last_batch) {
			json_t *gap = s->pruned_through ? json_pack("{s:I}", "prunedThrough",
								    (json_int_t)s->pruned_through)
							: NULL;
			if (!s->follow) {
				sub_end(s, gap);
				return;
			}
			/* Everything after the cursor was removed: say so now, not with the
			 * next uplink, which may be long in coming. */
			if (gap) {
				req_reply(s->r, gap, true);
				s->cursor = s->pruned_through;
			}
			s->pruned_through = 0;
			s->caught_up = true;
			return;
		}
	}
}

/* Idle streams whose client left are closed. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
	struct asapi *a = arg;
	for (struct sub *s = a->subs, *next; s; s = next) {
		next = s->next;
		if (req_gone(s->r))
			sub_end(s, NULL);
	}
}

void asapi_notify(struct asapi *a, int64_t seq)
{
	if (!a)
		return;
	for (struct sub *s = a->subs, *next; s; s = next) {
		next = s->next;
		if (s->caught_up && s->cursor < seq)
			sub_pump(s);
	}
}

static void h_uplinks(struct asapi *a, struct req *r)
{
	json_t *p = req_params(r);
	json_t *after = json_object_get(p, "after");
	json_t *follow = json_object_get(p, "follow");
	if (req_oneway(r)) {
		/* Nobody reads the stream: reading the journal for it would only hold the loop. */
		req_reply(r, NULL, false);
		return;
	}
	/* Past the journal's end (a store put back from a backup, say): waiting for seq
	 * after + 1 would skip the uplinks between, so the application is told. */
	struct journal_stats js;
	journal_get_counters(a->t->journal, &js);
	if (json_integer_value(after) > js.last_seq) {
		char why[120];
		snprintf(why, sizeof(why),
			 "%" JSON_INTEGER_FORMAT " is past the journal's lastSeq %" PRId64,
			 json_integer_value(after), js.last_seq);
		req_error(r, "io.tpad.AS.InvalidParameter",
			  json_pack("{s:s, s:s}", "parameter", "after", "reason", why));
		return;
	}
	struct sub *s = calloc(1, sizeof(*s));
	if (!s) {
		req_error(r, "io.tpad.AS.Busy", NULL);
		return;
	}
	s->a = a;
	s->r = r;
	s->cursor = json_is_integer(after) ? json_integer_value(after) : 0;
	s->follow = !json_is_false(follow);
	/* Resuming after a seq whose successors store.retention-days removed: the first reply
	 * says up to where (prunedThrough), before the ring is tried. */
	sub_check_pruned(s);
	s->next = a->subs;
	if (s->next)
		s->next->prev = s;
	a->subs = s;
	a->n_subs++;
	if (a->t->stopping) {
		sub_end(s, NULL);
		return;
	}
	sub_pump(s);
}

/* Status's journal health: failed commits, and whether the last write failed, since when, why. */
static json_t *journal_health_json(const struct journal_stats *js)
{
	char since[40];
	if (js->failing_since_ms)
		uplink_time_format(js->failing_since_ms, since, sizeof(since));
	return json_pack("{s:I, s:b, s:o, s:o}", "failedCommits", (json_int_t)js->failed_commits,
			 "failing", js->failing_since_ms != 0, "failingSince",
			 js->failing_since_ms ? json_string(since) : json_null(), "lastError",
			 js->last_error[0] ? json_string(js->last_error) : json_null());
}

/* Status's tunnel: requests, then each outcome (they sum to requests), then the rest. */
static json_t *tunnel_counters(const struct tpas *t)
{
	struct tunnel_stats st;
	tpas_tunnel_stats(t, &st);
	json_t *o = json_object();
	int r = json_object_set_new(o, "requests", json_integer((json_int_t)st.requests));
	for (size_t i = 0; r == 0 && i < TUNNEL_OUTCOMES; i++) {
		const struct tunnel_outcome *out = &tunnel_outcomes[i];
		r = json_object_set_new(o, out->status_name,
					json_integer((json_int_t)tunnel_outcome_count(&st, out)));
	}
	if (r == 0)
		r = json_object_update_new(
		    o, json_pack("{s:I, s:I, s:I}", "tlsFailed", (json_int_t)st.tls_failed,
				 "connections", (json_int_t)st.connections, "connectionLimitHit",
				 (json_int_t)st.connection_limit_hit));
	if (r < 0) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static void h_status(struct asapi *a, struct req *r)
{
	struct tpas *t = a->t;
	struct journal_stats js;
	journal_get_stats(t->journal, &js);
	struct server_stats ss;
	server_get_stats(t->srv, &ss);
	json_t *o = json_pack(
	    "{s:s, s:I, s:o, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o, s:i, s:{s:i, s:i}, "
	    "s:I}",
	    "version", TPAD_VERSION, "uptime",
	    (json_int_t)((clock_now_us() - t->started_us) / 1000000u), "tunnel", tunnel_counters(t),
	    "journal", "lastSeq", (json_int_t)js.last_seq, "uplinks", (json_int_t)js.uplinks,
	    "sessions", (json_int_t)js.sessions, "astks", (json_int_t)js.astks, "commits",
	    (json_int_t)js.commits, "batches", (json_int_t)js.batches, "batchedUplinks",
	    (json_int_t)js.batched, "largestBatch", (json_int_t)js.largest_batch, "lrc",
	    downlink_status_json(t->downlink), "subscribers", (int)a->n_subs, "connections", "apps",
	    (int)ss.connections[SOCK_STATION], "admin", (int)ss.connections[SOCK_ADMIN],
	    "outputOwed", (json_int_t)ss.output_owed);
	if (!o) {
		req_error(r, "io.tpad.AS.Busy", NULL);
		return;
	}
	json_object_update_new(json_object_get(o, "journal"), journal_health_json(&js));
	if (t->tunnel)
		json_object_set_new(o, "tunnelPort", json_integer(tunnel_port(t->tunnel)));
	json_object_set_new(o, "webhook", webhook_status_json(t->webhook));
	struct downlink_stats ds;
	downlink_get_stats(t->downlink, &ds);
	json_object_set_new(o, "downlinks",
			    json_pack("{s:I, s:I, s:I, s:I}", "sent", (json_int_t)ds.sent,
				      "lrcRefused", (json_int_t)ds.lrc_refused, "failed",
				      (json_int_t)ds.failed, "refused", (json_int_t)ds.refused));
	req_reply(r, o, false);
}

/*
 * One SendDownlink call in flight, and its answer, allocated before an FCntDn is taken:
 * once a counter is spent, filling the answer in needs no memory, so the call is never
 * answered Busy (nothing spent) for a downlink that was sent.
 */
struct dl_call {
	struct asapi *a;
	struct req *r;
	/* {devEUI, fCntDn, status, reason, answer}: SendDownlink's reply once devEUI and
	 * reason are taken out, LrcFailed's parameters as it is. */
	json_t *o;
	struct dl_call *prev, *next;
};

static void dl_call_free(struct dl_call *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		c->a->calls = c->next;
	if (c->next)
		c->next->prev = c->prev;
	json_decref(c->o);
	free(c);
}

/* The skeleton of the answer; NULL when out of memory. */
static struct dl_call *dl_call_new(struct asapi *a, struct req *r, const char *dev)
{
	struct dl_call *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	char up[17] = "";
	hex_upper(up, dev, 16);
	/* The reason stands if the real one cannot be copied (it is logged all the same). */
	c->o =
	    json_pack("{s:s, s:I, s:i, s:s, s:s}", "devEUI", up, "fCntDn", (json_int_t)0, "status",
		      0, "reason", "see tpas's log (out of memory for the reason)", "answer", "");
	if (!c->o) {
		free(c);
		return NULL;
	}
	c->a = a;
	c->r = r;
	c->next = a->calls;
	if (c->next)
		c->next->prev = c;
	a->calls = c;
	return c;
}

/*
 * The LRC's body (len bytes), made valid UTF-8 for JSON (text from elsewhere, a NUL
 * becoming U+FFFD, which every JSON reader takes), as o's answer.
 */
static int answer_set(json_t *o, const char *answer, size_t len)
{
	char *clean = utf8_clean(answer, len);
	int r = clean ? json_string_set(json_object_get(o, "answer"), clean) : -1;
	free(clean);
	return r;
}

/* A downlink refused with nothing spent (downlink_send()'s rc; why: "" or at which step). */
static void downlink_refused(struct req *r, int rc, const char *dev, const char *why)
{
	switch (rc) {
	case -ENOENT:
		req_error(r, "io.tpad.AS.UnknownDevice", json_pack("{s:s}", "devEUI", dev));
		return;
	case -ERANGE:
		req_error(r, "io.tpad.AS.CounterExhausted", json_pack("{s:s}", "devEUI", dev));
		return;
	case -ENOTCONN:
		req_error(r, "io.tpad.AS.NoLrc", NULL);
		return;
	case -EBUSY:
		req_error(r, "io.tpad.AS.Busy", NULL);
		return;
	default: {
		char reason[200];
		if (why[0])
			snprintf(reason, sizeof(reason), "%s", why);
		else
			snprintf(reason, sizeof(reason), "the journal failed: %s", strerror(-rc));
		log_warnx("downlink to %s: %s", dev, reason);
		req_error(r, "io.tpad.AS.StoreFailed", json_pack("{s:s}", "reason", reason));
		return;
	}
	}
}

/* The downlink's answer reaches the caller. */
static void downlink_done(const struct downlink_result *d, void *arg)
{
	struct dl_call *c = arg;
	if (d->refused) {
		downlink_refused(c->r, d->err, json_string_value(json_object_get(c->o, "devEUI")),
				 d->reason);
		dl_call_free(c);
		return;
	}
	json_t *o = c->o;
	c->o = NULL;
	json_integer_set(json_object_get(o, "fCntDn"), (json_int_t)d->fcnt_dn);
	json_integer_set(json_object_get(o, "status"), d->status);
	/* A refusal's body says why the LRC refused; with no answer there is none. */
	bool answered = !d->err || d->status, lost = false;
	if (answered && d->answer_len && answer_set(o, d->answer, d->answer_len) < 0) {
		lost = true;
		log_warnx("downlink to %s FCntDn %" PRIu32
			  ": out of memory for the LRC's answer, answered without it",
			  json_string_value(json_object_get(o, "devEUI")), d->fcnt_dn);
	}
	if (d->err) {
		/* The FCntDn is spent: the error says which, whatever failed. */
		if (json_string_set(json_object_get(o, "reason"), d->reason) < 0)
			log_warnx("downlink to %s FCntDn %" PRIu32
				  ": out of memory for the reason, answered without it",
				  json_string_value(json_object_get(o, "devEUI")), d->fcnt_dn);
		if (!answered || lost)
			json_object_del(o, "answer");
		req_error(c->r, "io.tpad.AS.LrcFailed", o);
	} else {
		json_object_del(o, "devEUI");
		json_object_del(o, "reason");
		req_reply(c->r, o, false);
	}
	dl_call_free(c);
}

static void h_send_downlink(struct asapi *a, struct req *r)
{
	json_t *p = req_params(r);
	char dev[17];
	proto_param_hex(p, "devEUI", dev, 16);
	int fport = (int)json_integer_value(json_object_get(p, "fPort"));
	const char *hex = json_string_value(json_object_get(p, "payload"));
	bool confirmed = json_is_true(json_object_get(p, "confirmed"));
	size_t n = strlen(hex) / 2;
	uint8_t buf[DOWNLINK_MAX_PAYLOAD];
	if (n > DOWNLINK_MAX_PAYLOAD || (n && hex_decode(hex, buf, n) < 0)) {
		req_error(r, "io.tpad.AS.InvalidParameter",
			  json_pack("{s:s, s:s}", "parameter", "payload", "reason",
				    "must be at most 242 bytes of hexadecimal"));
		return;
	}
	struct dl_call *c = dl_call_new(a, r, dev);
	if (!c) {
		cred_wipe(buf, sizeof(buf));
		log_warnx("downlink to %s: out of memory (no FCntDn taken)", dev);
		req_error(r, "io.tpad.AS.Busy", NULL);
		return;
	}
	char why[160];
	int rc = downlink_send(a->t->downlink, dev, fport, buf, n, confirmed, downlink_done, c, why,
			       sizeof(why));
	cred_wipe(buf, sizeof(buf));
	if (rc == 0)
		return; /* downlink_done answers, maybe already has */
	dl_call_free(c);
	downlink_refused(r, rc, dev, why);
}

static void h_import_astk(struct asapi *a, struct req *r)
{
	json_t *p = req_params(r);
	const struct asconf *cfg = a->t->cfg;
	const char *enc_hex = json_string_value(json_object_get(p, "encryptedASKey"));
	const char *label = json_string_value(json_object_get(p, "label"));
	const char *customer = json_string_value(json_object_get(p, "customerID"));
	char dev[17] = "";
	proto_param_hex(p, "devEUI", dev, 16);
	size_t n = strlen(enc_hex) / 2;
	uint8_t enc[512], astk[AS_KEY_LEN];
	if (n > sizeof(enc) || hex_decode(enc_hex, enc, n) < 0) {
		req_error(r, "io.tpad.ASAdmin.InvalidParameter",
			  json_pack("{s:s, s:s}", "parameter", "encryptedASKey", "reason",
				    "must be hexadecimal, at most 512 bytes"));
		return;
	}
	static char pem[4096];
	int rc = cred_load_text("as-rsa-key", cfg->rsa_key_file, pem, sizeof(pem));
	if (rc < 0) {
		char why[2 * PATH_MAX + 300], explain[PATH_MAX + 200];
		/* None yet (the empty placeholder, or no file): say what makes one. */
		bool none = rc == -ENODATA || rc == -ENOENT;
		snprintf(
		    why, sizeof(why), "cannot load the RSA key: %s%s%s",
		    cred_explain(rc, "as-rsa-key", cfg->rsa_key_file, explain, sizeof(explain)),
		    none ? ": make it with tpactl as keygen --out " : "",
		    none ? (cfg->rsa_key_file && *cfg->rsa_key_file
				? cfg->rsa_key_file
				: "/etc/tpas/credentials/as-rsa-key, then restart tpas")
			 : "");
		log_warnx("ImportASTK: %s", why);
		req_error(r, "io.tpad.ASAdmin.NoRsaKey", json_pack("{s:s}", "reason", why));
		return;
	}
	rc = ascrypto_astk_decrypt(pem, strlen(pem), enc, n, astk);
	cred_wipe(pem, sizeof(pem));
	if (rc < 0) {
		/* A key refused here was replaced since the start, which checks it. */
		bool no_key = rc == -EINVAL || rc == -ENOKEY || rc == -EKEYREJECTED;
		char why[160];
		if (no_key)
			snprintf(why, sizeof(why),
				 "the RSA key file %s (tpas --check-config says more)",
				 ascrypto_rsa_key_problem(rc));
		else
			snprintf(
			    why, sizeof(why),
			    "encryptedASKey does not decrypt to a 16-byte key with this RSA key");
		log_warnx("ImportASTK: %s", why);
		req_error(r, no_key ? "io.tpad.ASAdmin.NoRsaKey" : "io.tpad.ASAdmin.BadASKey",
			  json_pack("{s:s}", "reason", why));
		return;
	}
	int64_t id = 0;
	bool existing = false;
	rc = journal_astk_add(a->t->journal, label ? label : "", customer ? customer : "", dev,
			      astk, &id, &existing);
	cred_wipe(astk, sizeof(astk));
	if (rc < 0) {
		req_error(r, "io.tpad.ASAdmin.StoreFailed",
			  json_pack("{s:s}", "reason", strerror(-rc)));
		return;
	}
	char msg[240], ids[24];
	snprintf(msg, sizeof(msg), "ASTK %" PRId64 " %s (label '%s', CustomerID '%s', DevEUI '%s')",
		 id, existing ? "imported again: the same key, nothing added" : "imported",
		 label ? label : "", customer ? customer : "", dev);
	snprintf(ids, sizeof(ids), "%" PRId64, id);
	log_event(LOG_NOTICE, LOG_ID_AS_ASTK, msg, "ASTK_ID", ids, "LABEL", label ? label : "",
		  "CUSTOMER_ID", customer ? customer : "", "DEVEUI", dev, NULL);
	req_reply(r, json_pack("{s:I, s:b}", "id", (json_int_t)id, "existing", existing), false);
}

static void h_list_astks(struct asapi *a, struct req *r)
{
	json_t *l = journal_astk_list(a->t->journal);
	if (!l) {
		req_error(r, "io.tpad.ASAdmin.StoreFailed",
			  json_pack("{s:s}", "reason", "cannot read the store"));
		return;
	}
	req_reply(r, json_pack("{s:o}", "astks", l), false);
}

/* The proto socket bit of a connection. */
static unsigned sock_bit(const struct req *r)
{
	return req_peer(r)->kind == SOCK_STATION ? PROTO_SOCKET_AS_APPS : PROTO_SOCKET_AS_ADMIN;
}

static void h_get_info(struct asapi *a, struct req *r)
{
	(void)a;
	req_reply_info(r, "tpas", sock_bit(r));
}

static void h_get_interface_description(struct asapi *a, struct req *r)
{
	(void)a;
	req_reply_interface_description(r, sock_bit(r));
}

static const struct {
	const char *method;
	void (*fn)(struct asapi *a, struct req *r);
} handlers[] = {
    {"org.varlink.service.GetInfo", h_get_info},
    {"org.varlink.service.GetInterfaceDescription", h_get_interface_description},
    {"io.tpad.AS.Uplinks", h_uplinks},
    {"io.tpad.AS.SendDownlink", h_send_downlink},
    {"io.tpad.AS.Status", h_status},
    {"io.tpad.ASAdmin.ImportASTK", h_import_astk},
    {"io.tpad.ASAdmin.ListASTKs", h_list_astks},
};

void asapi_call(struct req *r, void *arg)
{
	struct tpas *t = arg;
	struct call c = {.method = (char *)req_method(r),
			 .parameters = req_params(r),
			 .more = req_more(r),
			 .oneway = req_oneway(r)};
	const struct method_spec *m;
	struct proto_fault f;
	int rc =
	    proto_check_on(&c, sock_bit(r), PROTO_SOCKET_AS_APPS | PROTO_SOCKET_AS_ADMIN, &m, &f);
	if (rc < 0) {
		log_debug("%s: %s %s %s", req_method(r), f.error, f.parameter, f.reason);
		req_error(r, f.error, proto_fault_parameters(&f));
		return;
	}
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++) {
		if (strcmp(handlers[i].method, m->name) == 0) {
			handlers[i].fn(t->api, r);
			return;
		}
	}
	req_error(r, PROTO_ERR_METHOD_NOT_IMPLEMENTED, json_pack("{s:s}", "method", m->name));
}

struct asapi *asapi_new(struct tpas *t)
{
	struct asapi *a = calloc(1, sizeof(*a));
	if (!a)
		return NULL;
	a->t = t;
	a->sweep = event_new(t->base, -1, EV_PERSIST, sweep_cb, a);
	if (!a->sweep) {
		asapi_free(a);
		return NULL;
	}
	struct timeval tv = {SWEEP_MS / 1000, (SWEEP_MS % 1000) * 1000};
	event_add(a->sweep, &tv);
	return a;
}

void asapi_stop(struct asapi *a)
{
	if (!a)
		return;
	while (a->subs)
		sub_end(a->subs, NULL);
}

struct asapi *asapi_free(struct asapi *a)
{
	if (!a)
		return NULL;
	asapi_stop(a);
	/* Downlinks still in flight are dropped unanswered (downlink_free() says nothing). */
	while (a->calls)
		dl_call_free(a->calls);
	ring_clear(a);
	if (a->sweep)
		event_free(a->sweep);
	free(a);
	return NULL;
}

unsigned asapi_subscribers(const struct asapi *a)
{
	return a ? a->n_subs : 0;
}
