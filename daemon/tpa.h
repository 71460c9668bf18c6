/* tpa: the ThingPark Activation API profile (import, query, OAuth2) over the session pool. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "pool.h"

struct event_base;
struct config;
struct tpa;

/* One device record as sent to TPA; hex fields in either case, sent upper-case. */
struct tpa_record {
	char dev_eui[17];
	char join_eui[17];
	char tkm_info[21]; /* "" if none */
	char app_key[33];  /* "" if none */
};

enum tpa_outcome {
	TPA_OK,		 /* ownerToken issued (import) or found (query) */
	TPA_REJECTED,	 /* 4xx other than 409/429; also a refused OAuth2 token request */
	TPA_CONFLICT,	 /* 409: already imported */
	TPA_UNAVAILABLE, /* 5xx, 429, breaker open, no session, timeout before sending */
	TPA_UNKNOWN,	 /* import sent, no usable answer: settle with tpa_query() */
	TPA_NOT_FOUND,	 /* query: no such device */
	TPA_OUTCOME_MAX,
};

struct tpa_result {
	enum tpa_outcome outcome;
	int http_status;       /* 0 when no response */
	char owner_token[129]; /* upper-case hex */
	char ref[129];
	/* The record as the cloud holds it, where its answer says (upper-case; "" if not). */
	char join_eui[17];
	char tkm_info[21];
	char app_key[33];
	char code[64];
	char message[256];
	int retry_after;  /* seconds, -1 none */
	char reason[160]; /* human text for UNAVAILABLE, UNKNOWN (and REJECTED) */
};

/* Called exactly once per accepted call, from the event loop, never from inside the call. */
typedef void tpa_done_fn(const struct tpa_result *res, void *arg);

#define TPA_LATENCY_BUCKETS 12

/* Counters for metrics. Latency covers calls that got an HTTP response. */
struct tpa_counters {
	uint64_t imports;
	uint64_t queries;
	uint64_t token_requests;
	uint64_t outcomes[TPA_OUTCOME_MAX];
	uint64_t latency_count;
	uint64_t latency_sum_ms;
	uint32_t
	    bucket_le_ms[TPA_LATENCY_BUCKETS]; /* upper bounds; the last is UINT32_MAX (+Inf) */
	uint64_t bucket_count[TPA_LATENCY_BUCKETS]; /* cumulative, as OpenMetrics wants */
	struct pool_stats pool;
};

/*
 * Set up the profile and its pool (which starts connecting in the background). NULL on a
 * configuration error (bad URL, ciphersuite, missing PSK or OAuth2 secret), with one
 * line in err.
 */
struct tpa *tpa_new(struct event_base *base, const struct config *cfg, char *err, size_t errlen);

/* Close all sessions. Calls still pending are dropped without their callbacks. */
void tpa_free(struct tpa *t);

/*
 * Import one device. 0: the call is queued and cb will be called later. -EINVAL for a bad
 * record, -EBUSY when the upstream queue is full (map to Busy), -ENOMEM.
 */
int tpa_import(struct tpa *t, const struct tpa_record *rec, tpa_done_fn *cb, void *arg);

/*
 * Ask TPA whether it knows dev_eui (read-only): TPA_OK with its ownerToken, or
 * TPA_NOT_FOUND; a query without an answer is TPA_UNAVAILABLE. Errors as tpa_import().
 */
int tpa_query(struct tpa *t, const char *dev_eui, tpa_done_fn *cb, void *arg);

/* Calls accepted and not yet answered. */
size_t tpa_pending(const struct tpa *t);

/* The pool status object plus "latency":{"p50","p99"} in ms over recent calls. */
json_t *tpa_status_json(struct tpa *t);

/* One line for systemd STATUS=, e.g. "upstream ok 4/4 ready". */
void tpa_status_line(struct tpa *t, char *buf, size_t len);

/* Fill *ret with counters. */
void tpa_get_counters(const struct tpa *t, struct tpa_counters *ret);

/* "ok", "rejected", "conflict", "unavailable", "unknown", "not-found". */
const char *tpa_outcome_name(enum tpa_outcome o);

/*
 * Interpret an HTTP answer (pure): query selects the query rules. retry_after is the raw
 * header value (may be NULL), now the wall clock for HTTP dates. Fills *res completely.
 */
void tpa_interpret(const struct config *cfg, bool query, int status, const char *body,
		   size_t body_len, const char *retry_after, time_t now, struct tpa_result *res);

/* Build the import request body (JSON) into a new buffer; -EINVAL for a bad record. */
int tpa_import_body(const struct config *cfg, const struct tpa_record *rec, char **ret_body,
		    size_t *ret_len);

/*
 * Parse an OAuth2 token answer: access_token (printable, at most toklen - 1 chars),
 * optional token_type (must be Bearer), expires_in (default 3600 s). -EBADMSG otherwise.
 */
int tpa_oauth2_parse(const char *body, size_t len, char *token, size_t toklen,
		     long *ret_expires_in);
