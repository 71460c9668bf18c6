/*
 * tunnel: the LRC-AS tunnel endpoint (on core/httpd): each DevEUI_uplink verified,
 * decrypted, journaled.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct journal;
struct tunnel;

/* What the tunnel answered, counted since start; one counter per outcome. */
struct tunnel_stats {
	uint64_t requests;
	uint64_t accepted;	 /* 200, journaled */
	uint64_t duplicates;	 /* 200, already journaled: not delivered again */
	uint64_t bad_request;	 /* 400: not HTTP, malformed query or body, a field out of range */
	uint64_t bad_token;	 /* 401: Token missing or wrong */
	uint64_t stale_time;	 /* 401: Time outside max-time-deviation */
	uint64_t wrong_key;	 /* 401: the AppSKey envelope does not unwrap with the ASTK */
	uint64_t unknown_device; /* 404: no AppSKey field and no stored key */
	uint64_t not_found;	 /* 404: another path */
	uint64_t bad_method;	 /* 405 */
	uint64_t too_big;	 /* 413 (431: a header section too large) */
	uint64_t timed_out;	 /* 408: a request left unfinished for tunnel.timeout */
	uint64_t no_astk;	 /* 503: an AppSKey field but no ASTK to unwrap it */
	uint64_t no_session;	 /* 503: no AppSKey field, and no session it can be of yet */
	uint64_t store_failed;	 /* 503: the journal could not commit */
	uint64_t tls_failed;	 /* TLS handshakes that failed (no HTTP answer possible) */
	/* Not requests: */
	uint64_t connections;	       /* open now */
	uint64_t connection_limit_hit; /* episodes of max-connections open (accepting paused) */
};

/*
 * The outcomes a request ends in, each a counter of tunnel_stats: its name in Status
 * (io.tpad.AS TunnelCounters) and its label in /metrics (tpas_tunnel_requests_total).
 */
struct tunnel_outcome {
	const char *status_name;
	const char *metric_label;
	size_t offset; /* of its uint64_t in struct tunnel_stats */
};

#define TUNNEL_OUTCOMES 14
extern const struct tunnel_outcome tunnel_outcomes[TUNNEL_OUTCOMES];

/* The counter of outcome o in s. */
static inline uint64_t tunnel_outcome_count(const struct tunnel_stats *s,
					    const struct tunnel_outcome *o)
{
	return *(const uint64_t *)((const char *)s + o->offset);
}

/* The tunnel's settings; strings are borrowed for tunnel_new() only. */
struct tunnel_options {
	const char *listen;	  /* host:port, [v6]:port */
	const char *path;	  /* "/" */
	const char *key;	  /* the tunnel key (LRC-AS key) as configured */
	int64_t max_deviation_ms; /* Time within this of our clock */
	size_t max_body;	  /* bytes */
	uint32_t
	    timeout_ms; /* a request unfinished this long: 408; a client idle this long: closed */
	const char *tls_cert_file; /* PEM chain: the listener speaks TLS; NULL: plain HTTP */
	const char *tls_key_file;  /* its key when not the credential tunnel-tls-key */
	unsigned max_conns;	   /* connections open at once at most (0: no cap) */
};

/* An uplink newly committed: its seq and its io.tpad.AS object as JSON text, if encoded. */
struct tunnel_uplink {
	int64_t seq;
	char *text; /* NULL when not encoded; the callee may take it (and set it to NULL) */
	size_t len;
};

/* Called after each commit with its new uplinks (n >= 1) in seq order. */
typedef void tunnel_commit_fn(struct tunnel_uplink *ups, size_t n, void *arg);

/* Bind and serve; on failure a negative errno and one line in err. */
int tunnel_new(struct event_base *base, const struct tunnel_options *o, struct journal *j,
	       tunnel_commit_fn *on_commit, void *arg, struct tunnel **ret, char *err,
	       size_t errlen);

/*
 * Commit and answer what was verified, stop listening, close clients (the key is wiped)
 * and free. With ret_final, the counters as they ended (no connection open). Accepts
 * NULL; returns NULL.
 */
struct tunnel *tunnel_close(struct tunnel *t, struct tunnel_stats *ret_final);

/* tunnel_close() without the counters. */
struct tunnel *tunnel_free(struct tunnel *t);

/*
 * Handle one POST: query is the raw query string (NULL if none), body its bytes, now_ms
 * the wall clock. Returns the HTTP status and sets *ret_answer (owned by the caller) to
 * the JSON answer: {"seq", "duplicate"} or {"error"}. Exposed for the unit tests.
 */
int tunnel_process(struct tunnel *t, const char *query, const char *body, size_t len,
		   int64_t now_ms, json_t **ret_answer);

/* The port the listener is bound to (useful with port 0). */
uint16_t tunnel_port(const struct tunnel *t);

void tunnel_get_stats(const struct tunnel *t, struct tunnel_stats *ret);

/*
 * The wall clock as the LRC keeps it: the Time of the last request whose Token verified
 * and whose Time was within max-time-deviation, plus the monotonic time since. false until
 * such a request came (since start). The journal's retention goes by it, so that a host
 * clock stepped ahead does not prune uplinks that are not old.
 */
bool tunnel_lrc_now(const struct tunnel *t, int64_t *ret_ms);
