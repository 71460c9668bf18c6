/* tpa: the ThingPark Activation API profile (import, query, delete, OAuth2) over the session pool. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "config.h"
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
	char hsm_app_key[33]; /* a cloud-HSM AppKey's hsmEncryptedAppKey; "" if none */
	uint64_t owner;	      /* who asks (a station connection; 0: tpad itself): the
				 upstream queue is fair between owners */
};

enum tpa_outcome {
	TPA_OK,		 /* ownerToken issued (import) or found (query) */
	TPA_REJECTED,	 /* 4xx other than 409/429; also a refused OAuth2 token request */
	TPA_CONFLICT,	 /* 409: already imported */
	TPA_UNAVAILABLE, /* 5xx, 429, breaker open, no session, timeout before sending */
	TPA_UNKNOWN,	 /* import sent, no usable answer: settle with tpa_query() */
	TPA_NOT_FOUND,	 /* query, delete: no such device */
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
	char reason[512]; /* human text for UNAVAILABLE, UNKNOWN (and REJECTED) */
	/*
	 * From the call to when the first byte of its last request left (it may wait for a
	 * session or a token, or go again after a 401), monotonic; 0 if nothing was sent.
	 * An import that may have landed may have done so from then on, not from the call.
	 */
	uint64_t sent_after_ms;
};

/* Called exactly once per accepted call, from the event loop, never from inside the call. */
typedef void tpa_done_fn(const struct tpa_result *res, void *arg);

#define TPA_LATENCY_BUCKETS 12

/* Counters for metrics. Latency covers calls that got an HTTP response. */
struct tpa_counters {
	uint64_t imports;
	uint64_t queries;
	uint64_t deletes;
	uint64_t key_gens;
	uint64_t token_requests;
	uint64_t outcomes[TPA_OUTCOME_MAX];
	uint64_t latency_count;
	uint64_t latency_sum_us;
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

/*
 * Delete the device the cloud knows as ref (DELETE {base}{import-path}/{ref}): TPA_OK when
 * gone, TPA_NOT_FOUND when the cloud has no such device, TPA_UNKNOWN when the request was
 * sent and no answer came (settle with tpa_query()). -EINVAL for a ref that is not a
 * plain path segment (letters, digits, - . _ ~; at most 128). Errors as tpa_import().
 */
int tpa_delete(struct tpa *t, const char *ref, tpa_done_fn *cb, void *arg);

/*
 * Called once per appKeyGens call: res->outcome TPA_OK with the n VendorKeys (base64
 * strings, valid during the call), or another outcome with n = 0 and a reason.
 */
typedef void tpa_keygen_fn(const struct tpa_result *res, const char *const *keys, size_t n,
			   void *arg);

/*
 * Ask the cloud's HSM for n (1..1000) AppKeys: POST {base}{api.appkeygen-path}?number=n
 * with {api.field-public-key: public_key_b64}. The answer is a JSON array of strings or of
 * objects with api.field-vendor-key. Errors as tpa_import().
 */
int tpa_app_key_gens(struct tpa *t, unsigned n, const char *public_key_b64, tpa_keygen_fn *cb,
		     void *arg);

/* Calls accepted and not yet answered. */
size_t tpa_pending(const struct tpa *t);

/* The pool status object plus "latency":{"p50","p99"} in ms over recent calls. */
json_t *tpa_status_json(struct tpa *t);

/* One line for systemd STATUS=, e.g. "upstream ok 4/4 ready". */
void tpa_status_line(struct tpa *t, char *buf, size_t len);

/* Fill *ret with counters. */
void tpa_get_counters(const struct tpa *t, struct tpa_counters *ret);

/* "ok", "rejected", "conflict", "unavailable", "unknown", "not_found". */
const char *tpa_outcome_name(enum tpa_outcome o);

/*
 * Interpret an HTTP answer (pure): query selects the query rules. retry_after is the raw
 * header value (may be NULL), now the wall clock for HTTP dates. Fills *res completely.
 */
void tpa_interpret(const struct config *cfg, bool query, int status, const char *body,
		   size_t body_len, const char *retry_after, time_t now, struct tpa_result *res);

/*
 * tpa_interpret() for a query of dev_eui (NULL: any element): the answer's element for that
 * DevEUI is used; *ret_more (may be NULL) is set when a full page (api.query-page-size
 * elements) held no match, so the next page must be asked for.
 */
void tpa_interpret_query(const struct config *cfg, bool query, const char *dev_eui, int status,
			 const char *body, size_t body_len, const char *retry_after, time_t now,
			 struct tpa_result *res, bool *ret_more);

/* Interpret the answer to a delete (pure): 2xx OK, 404 NOT_FOUND, 5xx/429 UNAVAILABLE. */
void tpa_interpret_delete(int status, const char *body, size_t body_len, const char *retry_after,
			  time_t now, struct tpa_result *res);

/*
 * The cloud's ownerToken text in tpad's form (api.owner-token-form) into out (size): hex
 * upper-cased; base64 decoded and printed as upper-case hex; as-is kept (printable, no
 * blank, no ':'). -EINVAL if the text does not fit the form.
 */
int tpa_owner_token_convert(enum owner_token_form form, const char *s, char *out, size_t size);

/* Build the import request body (JSON) into a new buffer; -EINVAL for a bad record. */
int tpa_import_body(const struct config *cfg, const struct tpa_record *rec, char **ret_body,
		    size_t *ret_len);

/* What tpad takes from an OAuth2 token answer. */
struct tpa_oauth2_reply {
	char token[4096];
	char token_type[32];   /* as spelled by the server ("bearer"); "Bearer" when absent */
	char customer_id[64];  /* "" when absent (DX Maker sends it) */
	char client_id[128];   /* "" when absent */
	long expires_in;
	const char
	    *why; /* on -EBADMSG: what was refused, e.g. "token_type \"mac\" is not Bearer" */
	char why_buf[96];
};

/*
 * Parse an OAuth2 token answer: access_token (printable, under 4096 characters),
 * token_type (a Bearer scheme in any spelling, sent back as spelled), expires_in (a
 * positive whole number of seconds, also written as a string of digits or as 3600.0;
 * default 3600 s), customer_id and client_id (optional, printable). -EBADMSG otherwise,
 * with ret->why.
 */
int tpa_oauth2_parse_reply(const char *body, size_t len, struct tpa_oauth2_reply *ret);

/* The same, token and lifetime only (token at most toklen - 1 chars). */
int tpa_oauth2_parse(const char *body, size_t len, char *token, size_t toklen,
		     long *ret_expires_in);
