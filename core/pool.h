/* pool: warm, kept-alive HTTP sessions (TLS with a PSK or a certificate, or plain) to one upstream
 * host. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "tls.h"

struct event_base;
struct http_response;
struct pool;
struct pool_req;

/* How one submitted request ended. */
struct pool_result {
	int err;	    /* 0: res holds a complete response; else a negative errno */
	bool sent;	    /* some bytes of the request reached the network */
	uint64_t sent_at_ms; /* when its first byte left (clock_now_ms), 0 if none did: a
			      * request may wait in the queue, or go again on another session */
	const char *reason; /* human text when err != 0 */
	const struct http_response *res; /* valid during the callback only; NULL if err */
};

/* Called exactly once per submitted request, always from the event loop. */
typedef void pool_done_fn(const struct pool_result *r, void *arg);

enum pool_breaker {
	POOL_BREAKER_CLOSED,
	POOL_BREAKER_OPEN,
	POOL_BREAKER_HALF_OPEN,
};

/* Counters for metrics; all monotonic except the gauges marked. */
struct pool_stats {
	uint32_t sessions;	   /* gauge: configured */
	uint32_t up;		   /* gauge: ready or busy */
	size_t queued;		   /* gauge */
	enum pool_breaker breaker; /* gauge */
	uint64_t connects;	   /* TCP connections established */
	uint64_t handshakes;	   /* TLS handshakes completed */
	uint64_t resumed;	   /* of which resumed a previous session */
	uint64_t connect_failures;
	uint64_t requests;   /* responses received */
	uint64_t retried;    /* requests moved to another session before any byte was sent */
	uint64_t unknown;    /* requests that failed after bytes were sent */
	uint64_t queue_full; /* submissions refused */
	uint64_t breaker_opens;
	uint64_t cert_failures; /* handshakes refused for a certificate */
};

/* The pool's settings; strings are borrowed and must outlive the pool. */
struct pool_options {
	const char *url;  /* https://host[:port] or http://host[:port] */
	const char *name; /* what it links to, in its failures' reasons (NULL: "upstream") */
	uint32_t sessions;
	uint32_t queue; /* queued requests before -EBUSY */
	uint32_t connect_timeout_ms;
	uint32_t handshake_timeout_ms;
	uint32_t request_timeout_ms;
	uint32_t backoff_min_ms;
	uint32_t backoff_max_ms;
	uint32_t breaker_threshold; /* consecutive failures that open the breaker */
	uint32_t breaker_cooldown_ms;
	size_t max_response;
	bool cut_response;	/* keep max_response bytes of a body, read and drop the rest,
				 * instead of failing the request (http_parser_cut_body()) */
	/* A connection that cannot be made (refused, unreachable, timed out, its handshake
	 * failed) while no session is up fails the queued requests at once, unsent, instead
	 * of holding them for request_timeout_ms: for a client that retries on its own. */
	bool fail_unreachable;
	struct tls_options tls; /* for https:// */
	/* Called (from the loop) when a certificate failure starts or changes, and with
	 * TLS_CERT_OK once a handshake succeeds again; may be NULL. */
	void (*cert_cb)(void *arg, enum tls_cert_error e, const char *reason);
	void *cert_arg;
};

/*
 * Parse o->url, set up TLS (unless http://) and start opening
 * o->sessions sessions in the background. Fails only on configuration
 * errors (one line in err); an unreachable server is not an error.
 */
struct pool *pool_new(struct event_base *base, const struct pool_options *o, char *err, size_t errlen);

/* Close every session and drop queued requests without calling their callbacks. */
struct pool *pool_free(struct pool *p);

/*
 * End every request now, queued or on a session, with err and reason (sent as it stands:
 * a request that went out may have arrived); the sessions that carried one are closed
 * and reconnect as usual. The callbacks run later from the loop, as always. For an owner
 * that stops and must answer its callers before it does.
 */
void pool_fail_all(struct pool *p, int err, const char *reason);

/* Whether pool_submit() would queue a request now (else it answers -EBUSY). */
bool pool_has_room(const struct pool *p);

/*
 * How many more requests pool_submit() would take now, one after another: one for each
 * ready (idle, connected) session, which takes it at once, and the queue's room.
 */
size_t pool_room(const struct pool *p);

/*
 * Whether pool_submit() would fail a request at once, unsent, because the breaker is
 * open (its cool-down not over, or a certificate failure standing).
 */
bool pool_fails_fast(const struct pool *p);

/*
 * Queue one complete HTTP request (buf, len, copied). 0 when queued: cb is then called
 * later from the loop, exactly once. -EBUSY when the queue is full, -ENOMEM.
 * A request that fails before any byte was sent is retried on another session; once
 * bytes were sent, a failure is reported with sent = true and is never re-sent.
 */
int pool_submit(struct pool *p, const char *buf, size_t len, pool_done_fn *cb, void *arg);

/*
 * The same on behalf of owner (a client connection, say; pool_submit's is 0): the queue
 * is fair between owners, each getting its turn in rotation whatever the others queued,
 * so one owner's backlog delays another's request by about one request per owner.
 */
int pool_submit_for(struct pool *p, uint64_t owner, const char *buf, size_t len,
		    pool_done_fn *cb, void *arg);

/* The Host header value for requests ("host" or "host:port"). */
const char *pool_host(const struct pool *p);

/* The configured URL (scheme, host, port). */
const char *pool_url(const struct pool *p);

/* Fill *ret with the current counters and gauges. */
void pool_get_stats(const struct pool *p, struct pool_stats *ret);

/*
 * {"url","tls":"psk|cert|none","state":"ok|degraded|down","breaker":"closed|open|half-open",
 *  "queue":N,"certificate":null|{"error":"expired|wrong-host|unknown-ca|pin-mismatch|...",
 *  "reason"},"sessions":[{"state","requests","reconnects","lastError","ciphersuite"}]}
 * A certificate failure opens the breaker at once and keeps it open (requests fail fast
 * with the reason) until a handshake succeeds; one session per upstream.backoff-max
 * tries again meanwhile.
 */
json_t *pool_status_json(const struct pool *p);

/* "ok", "degraded" or "down". */
const char *pool_state(const struct pool *p);

/* The breaker state's name. */
const char *pool_breaker_name(enum pool_breaker b);

/* The standing certificate failure (TLS_CERT_OK if none). */
enum tls_cert_error pool_cert_error(const struct pool *p);

/* The most recent session error ("" if none), for one-line summaries. */
const char *pool_last_error(const struct pool *p);

/*
 * An outage of the far end as a log tells it, from a look at pool_stats about once a
 * second: one episode from the breaker's opening to its closing, however often it
 * half-opens and opens again between (every breaker cooldown while the far end stays
 * away). Zero-initialised: the first look tells a breaker that opened since start.
 */
struct pool_watch {
	bool open; /* an episode is on: its opening was told, its closing not yet */
	uint64_t opens, since_us, note_us, every_us, opens_at_open;
};

/* What pool_watch_look() says is to be told (a mask). */
enum { POOL_WATCH_OPENED = 1, POOL_WATCH_STILL = 2, POOL_WATCH_CLOSED = 4 };

/*
 * Look at s (monotonic now_us): the opening; "still open" a minute on, then at doubling
 * intervals up to every 10 minutes; the closing (also of a breaker that opened and closed
 * since the last look). *open_s: how long the episode has lasted; *reopens: the breaker's
 * openings in it after the first.
 */
unsigned pool_watch_look(struct pool_watch *w, const struct pool_stats *s, uint64_t now_us,
			 uint64_t *open_s, uint64_t *reopens);
