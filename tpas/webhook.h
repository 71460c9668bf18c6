/* webhook: the journal's uplinks POSTed in order to an HTTP endpoint, with retries. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct event_base;
struct journal;
struct webhook;

/* The webhook's settings; strings are borrowed for webhook_new() only. */
struct webhook_options {
	const char *url;     /* http:// or https://host[:port]/path */
	const char *ca_file; /* https: the CA bundle (NULL: the system's) */
	uint32_t request_timeout_ms;
	uint32_t retry_max_ms; /* longest wait between two tries */
	uint32_t batch;	       /* uplinks per POST at most */
	const char *token;     /* sent as "Authorization: Bearer TOKEN"; NULL or "": none */
};

/* The longest webhook token (visible ASCII, no spaces). */
#define WEBHOOK_TOKEN_MAX 1024

/*
 * Whether text can be the webhook's token: 1 to WEBHOOK_TOKEN_MAX characters of visible
 * ASCII (it goes in an HTTP header line). 0, or -EINVAL with the reason in why.
 */
int webhook_token_check(const char *text, char *why, size_t whylen);

/*
 * Start delivering from the cursor stored in the journal (0 the first time): every uplink
 * is POSTed as {"uplinks":[...]} (the objects of io.tpad.AS.Uplinks) in seq order, the
 * cursor committed after each 2xx, a failure retried with a growing delay. Delivery is at
 * least once: a receiver deduplicates by seq. NULL with one line in err on a bad URL.
 */
struct webhook *webhook_new(struct event_base *base, const struct webhook_options *o,
			    struct journal *j, char *err, size_t errlen);

/* Stop (a POST in flight is dropped and sent again next time). Accepts NULL; returns NULL. */
struct webhook *webhook_free(struct webhook *w);

/* New uplinks were committed. */
void webhook_notify(struct webhook *w);

/*
 * Seconds since the oldest uplink the webhook has not accepted yet was received (now_ms:
 * the wall clock, ms since the epoch), 0 when it has them all.
 */
uint64_t webhook_lag_seconds(const struct webhook *w, int64_t now_ms);

/* {"url", "cursor", "delivered", "failures", "lastError"} or null. */
json_t *webhook_status_json(const struct webhook *w);
