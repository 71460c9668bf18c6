/* webhook: the journal's uplinks POSTed in order to an HTTP endpoint, with retries. */
#include "webhook.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "cred.h"
#include "events.h"
#include "http.h"
#include "journal.h"
#include "log.h"
#include "message.h"
#include "pool.h"
#include "redact.h"
#include "wipe.h"

#define RETRY_MIN_MS 200
#define WEBHOOK_BODY_KEPT 1024
#define ANSWER_SHOWN 120 /* bytes of a refusal's body in its reason */
#define WHY_MAX 256	 /* a failure's reason */
static_assert(sizeof("answered 999: ...") + ANSWER_SHOWN <= WHY_MAX, "a reason holds an answer");

struct webhook {
	struct pool *pool;
	struct journal *journal;
	struct event *retry;
	char url[512];
	char path[HTTP_MAX_LINE / 4];
	char token[WEBHOOK_TOKEN_MAX + 1]; /* "" none; wiped at free */
	uint32_t retry_max_ms, backoff_ms, batch;
	int64_t cursor;
	int64_t sending_last; /* seq of the last uplink in the POST in flight; 0: none */
	size_t sending_n;
	uint64_t delivered, failures;
	unsigned streak; /* POSTs failed since the last one taken */
	char last_error[WHY_MAX];
};

static void pump(struct webhook *w);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}

/* A failed POST: wait longer each time, then send the same uplinks again. */
static void failed(struct webhook *w, const char *reason)
{
	w->failures++;
	w->streak++;
	/* The receiver may quote the request: never its token, in Status or the log. */
	char why[WHY_MAX];
	snprintf(why, sizeof(why), "%s", reason);
	redact_secret(why, w->token);
	redact_tokens(why);
	snprintf(w->last_error, sizeof(w->last_error), "%s", why);
	w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : RETRY_MIN_MS;
	if (w->backoff_ms > w->retry_max_ms)
		w->backoff_ms = w->retry_max_ms;
	char *msg = NULL, retry[16];
	if (asprintf(&msg, "webhook %s: %s; retrying in %u ms", w->url, why, w->backoff_ms) < 0)
		msg = NULL;
	snprintf(retry, sizeof(retry), "%u", w->backoff_ms);
	log_event(LOG_WARNING, LOG_ID_AS_WEBHOOK_FAILED, msg ? msg : "webhook: POST failed",
		  "WEBHOOK_URL", w->url, "REASON", why, "RETRY_MS", retry, NULL);
	free(msg);
	struct timeval tv = {w->backoff_ms / 1000, (w->backoff_ms % 1000) * 1000};
	evtimer_add(w->retry, &tv);
}

/*
 * "answered STATUS", then the start of what the receiver said, as one line of printable
 * ASCII: its "wrong path" or "bad token" is what its developer needs to see, in the log
 * and in Status, and the text goes into both as it is.
 */
static void answered(const struct http_response *res, char why[WHY_MAX])
{
	int n = snprintf(why, WHY_MAX, "answered %d", res->status);
	const char *b = res->body ? res->body : "";
	size_t len = res->body_len;
	bool cut = len > ANSWER_SHOWN || res->body_cut;
	if (len > ANSWER_SHOWN)
		len = ANSWER_SHOWN;
	while (len && (unsigned char)*b <= ' ')
		b++, len--;
	while (len && (unsigned char)b[len - 1] <= ' ')
		len--;
	if (!len || n < 0)
		return;
	char *o = why + n;
	*o++ = ':';
	*o++ = ' ';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)b[i];
		*o++ = c < 0x20 || c == 0x7f ? ' ' : c > 0x7f ? '?' : (char)c;
	}
	strcpy(o, cut ? "..." : "");
}

static void done_cb(const struct pool_result *r, void *arg)
{
	struct webhook *w = arg;
	int64_t last = w->sending_last;
	w->sending_last = 0;
	char why[WHY_MAX];
	if (r->err) {
		snprintf(why, sizeof(why), "%s", r->reason ? r->reason : strerror(-r->err));
		failed(w, why);
		return;
	}
	if (r->res->status < 200 || r->res->status > 299) {
		answered(r->res, why);
		failed(w, why);
		return;
	}
	int rc = journal_cursor_set(w->journal, "webhook", last);
	if (rc < 0) {
		snprintf(why, sizeof(why), "cannot store the cursor: %s", strerror(-rc));
		failed(w, why);
		return;
	}
	w->delivered += w->sending_n;
	w->cursor = last;
	w->backoff_ms = 0;
	if (w->streak) {
		/* Each failure was logged: so is the end of them, or the reader keeps waiting. */
		char msg[640], n[16];
		snprintf(n, sizeof(n), "%u", w->streak);
		snprintf(msg, sizeof(msg), "webhook %s: delivering again after %u failed POST%s",
			 w->url, w->streak, w->streak == 1 ? "" : "s");
		log_event(LOG_NOTICE, LOG_ID_AS_WEBHOOK_BACK, msg, "WEBHOOK_URL", w->url,
			  "FAILED_POSTS", n, NULL);
		w->streak = 0;
	}
	w->last_error[0] = '\0';
	pump(w);
}

/* Send the next uplinks past the cursor, unless a POST or a retry is pending. */
static void pump(struct webhook *w)
{
	if (w->sending_last || evtimer_pending(w->retry, NULL))
		return;
	json_t *rows = journal_uplinks_after(w->journal, w->cursor, w->batch);
	if (!rows) {
		failed(w, "cannot read the journal");
		return;
	}
	size_t n = json_array_size(rows);
	if (n == 0) {
		json_decref(rows);
		return;
	}
	int64_t last = json_integer_value(json_object_get(json_array_get(rows, n - 1), "seq"));
	json_t *body = json_pack("{s:o}", "uplinks", rows);
	char *text = body ? wipe_json_dumps(body, PROTO_JSON_FLAGS) : NULL;
	json_decref(body);
	char *buf = NULL;
	size_t len = 0;
	const struct http_request hr = {
	    .method = "POST",
	    .host = pool_host(w->pool),
	    .target = w->path,
	    .content_type = "application/json",
	    .body = text,
	    .body_len = text ? strlen(text) : 0,
	    .bearer = w->token[0] ? w->token : NULL,
	};
	int r = text ? http_request_build(&hr, &buf, &len) : -ENOMEM;
	free(text);
	if (r == 0)
		r = pool_submit(w->pool, buf, len, done_cb, w);
	if (buf)
		cred_wipe(buf, len); /* the token; the pool wipes its own copy */
	free(buf);
	if (r < 0) {
		failed(w, strerror(-r));
		return;
	}
	w->sending_last = last;
	w->sending_n = n;
}

struct webhook *webhook_new(struct event_base *base, const struct webhook_options *o,
			    struct journal *j, char *err, size_t errlen)
{
	struct http_url u;
	if (!o->url || http_url_parse(o->url, &u) < 0) {
		snprintf(err, errlen, "webhook.url: want http[s]://host[:port]/path, got %s",
			 o->url ? o->url : "nothing");
		return NULL;
	}
	struct webhook *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	w->journal = j;
	w->retry_max_ms = o->retry_max_ms ? o->retry_max_ms : 30000;
	w->batch = o->batch ? o->batch : 100;
	snprintf(w->url, sizeof(w->url), "%s", o->url);
	if (o->token && *o->token) {
		if (webhook_token_check(o->token, err, errlen) < 0) {
			free(w);
			return NULL;
		}
		snprintf(w->token, sizeof(w->token), "%s", o->token);
	}
	snprintf(w->path, sizeof(w->path), "%s", u.path[0] ? u.path : "/");
	bool v6 = strchr(u.host, ':') != NULL;
	char origin[HTTP_MAX_HOST + 32];
	snprintf(origin, sizeof(origin), "%s://%s%s%s:%u", u.tls ? "https" : "http", v6 ? "[" : "",
		 u.host, v6 ? "]" : "", u.port);
	const struct pool_options po = {
	    .url = origin,
	    .name = "webhook",
	    .sessions = 1,
	    .queue = 4,
	    .connect_timeout_ms = 5000,
	    .handshake_timeout_ms = 5000,
	    .request_timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : 10000,
	    .backoff_min_ms = RETRY_MIN_MS,
	    .backoff_max_ms = w->retry_max_ms,
	    .breaker_threshold = 1000000, /* the webhook's own retries pace it */
	    .fail_unreachable = true,	  /* and a receiver down is told at once */
	    .breaker_cooldown_ms = 1000,
	    /* Only the status counts: a 2xx's body (an echo of the batch, say) is read and
	     * dropped past its first bytes, whatever its size. */
	    .max_response = WEBHOOK_BODY_KEPT,
	    .cut_response = true,
	    .tls = {.mode = TLS_MODE_CERT, .ca_file = o->ca_file, .tls_min = 2},
	};
	int r = journal_cursor_get(j, "webhook", &w->cursor);
	w->pool = r == 0 ? pool_new(base, &po, err, errlen) : NULL;
	w->retry = evtimer_new(base, retry_cb, w);
	if (r < 0)
		snprintf(err, errlen, "webhook: cannot read its cursor: %s", strerror(-r));
	if (!w->pool || !w->retry) {
		webhook_free(w);
		return NULL;
	}
	log_info("webhook %s: delivering after seq %" PRId64, w->url, w->cursor);
	pump(w);
	return w;
}

struct webhook *webhook_free(struct webhook *w)
{
	if (!w)
		return NULL;
	pool_free(w->pool);
	if (w->retry)
		event_free(w->retry);
	cred_wipe(w->token, sizeof(w->token));
	free(w);
	return NULL;
}

int webhook_token_check(const char *text, char *why, size_t whylen)
{
	size_t n = strlen(text);
	if (n == 0 || n > WEBHOOK_TOKEN_MAX) {
		snprintf(why, whylen, "the webhook token must be 1 to %d characters",
			 WEBHOOK_TOKEN_MAX);
		return -EINVAL;
	}
	for (size_t i = 0; i < n; i++)
		if (text[i] <= ' ' || text[i] > '~') {
			/* Which one, not what: the text is a secret. */
			snprintf(why, whylen,
				 "the webhook token's character %zu is not visible ASCII (it goes "
				 "in an HTTP header: one line, no spaces)",
				 i + 1);
			return -EINVAL;
		}
	return 0;
}

void webhook_notify(struct webhook *w)
{
	if (w)
		pump(w);
}

uint64_t webhook_lag_seconds(const struct webhook *w, int64_t now_ms)
{
	int64_t since_ms = journal_received_after(w->journal, w->cursor);
	/* A clock stepped back since then: waiting, but for no time this host can tell. */
	return since_ms && now_ms > since_ms ? (uint64_t)(now_ms - since_ms) / 1000 : 0;
}

json_t *webhook_status_json(const struct webhook *w)
{
	if (!w)
		return json_null();
	return json_pack("{s:s, s:b, s:I, s:I, s:I, s:s}", "url", w->url, "token",
			 w->token[0] != '\0', "cursor", (json_int_t)w->cursor, "delivered",
			 (json_int_t)w->delivered, "failures", (json_int_t)w->failures, "lastError",
			 w->last_error);
}
