/* downlink: a plaintext downlink encrypted with the AppSKey and next FCntDn, POSTed to the LRC. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct downlink;
struct event_base;
struct journal;

#define DOWNLINK_PATH "/thingpark/lrc/rest/downlink"
#define DOWNLINK_MAX_PAYLOAD 242

/* The LRC link's settings; strings are borrowed for downlink_new() only. */
struct downlink_options {
	const char *url; /* http[s]://host[:port] of the LRC */
	const char *key; /* the tunnel key, as configured (the downlink Token uses it as written) */
	const char *as_id;   /* AS_ID */
	const char *ca_file; /* https: the CA bundle to verify the LRC with (see README) */
	uint32_t sessions;
	uint32_t request_timeout_ms;
};

/* How one downlink ended; valid during the callback only. */
struct downlink_result {
	int err;	    /* 0: the LRC answered 2xx */
	/*
	 * No counter was spent (err is then one downlink_send() returns: -ENOENT, -ERANGE or
	 * the journal's, and reason, when not "", says at which step): the journal's writer
	 * thread could not take it. fcnt_dn is then 0.
	 */
	bool refused;
	uint32_t fcnt_dn;   /* the counter used (consumed even on failure) */
	int status;	    /* the LRC's HTTP status; 0 when none came */
	const char *answer; /* the LRC's body ("" if none), any bytes, NULs included */
	size_t answer_len;  /* its length */
	const char *reason; /* human text when err != 0 */
};

/* Downlinks since start, by how they ended. */
struct downlink_stats {
	uint64_t sent;	      /* the LRC answered 2xx */
	uint64_t lrc_refused; /* the LRC answered another status */
	uint64_t failed;      /* no answer from the LRC (not reached, timed out, closed, or
				 not sent for lack of memory once its counter was taken) */
	uint64_t refused;     /* not sent, no counter spent: no LRC, unknown device, counter
				 used up, busy, store */
};

typedef void downlink_done_fn(const struct downlink_result *r, void *arg);

/* Set up the link to the LRC; NULL with one line in err on a configuration error. */
struct downlink *downlink_new(struct event_base *base, const struct downlink_options *o,
			      struct journal *j, char *err, size_t errlen);

/*
 * Stopping: end every downlink in flight now through its callback, with reason (those
 * given to the LRC as having no answer, their FCntDn spent and possibly delivered; those
 * held as not sent, their FCntDn spent), each logged with its DevEUI and FCntDn. A
 * counter being taken meanwhile ends the same way once it is committed; downlink_send()
 * refuses from then on (-ENOTCONN).
 */
void downlink_cut(struct downlink *d, const char *reason);

/* Close the link; requests in flight are dropped without their callbacks. Accepts NULL. */
struct downlink *downlink_free(struct downlink *d);

/*
 * Send payload (n bytes of plaintext) to dev_eui on fport: take and commit the session's
 * next FCntDn, encrypt, sign and queue the POST. The counter is committed by the journal's
 * writer thread with the uplinks of its next batch (so a downlink never makes the event
 * loop wait for a commit of its own), or here when the writer is not running. 0 once the
 * request was taken: done is called once with how the downlink ended, later, or before
 * this returns when the POST could not be queued (out of memory: err set, status 0, the
 * counter spent and nothing sent); done with refused set when the writer could not take
 * the counter (nothing spent nor sent, err as below). Else nothing was spent nor sent:
 * -ENOTCONN no LRC, -EINVAL fport or n out of range, -ENOENT no session for the device,
 * -ERANGE its FCntDn is used up, -EBUSY the queue is full or the LRC too slow or failing
 * (or no memory to take the request); any other negative errno: the journal failed with it
 * (-ENOSPC the disk is full, -ENOMEM out of memory; -EIO when its own code is one of the
 * above), and why (whylen bytes) says at which step ("cannot read the device's session:
 * ...").
 */
int downlink_send(struct downlink *d, const char *dev_eui, int fport, const uint8_t *payload,
		  size_t n, bool confirmed, downlink_done_fn *done, void *arg, char *why,
		  size_t whylen);

/*
 * The signed query string: DevEUI, FPort, Payload, FCntDn (when fcnt_dn >= 0), Confirmed
 * (when confirmed), AS_ID, Time (URL-encoded) and Token = SHA-256 hex of all that and the
 * key as written. 0, or -ENOBUFS if out (outlen) is too small.
 */
int downlink_query(const char *dev_eui, int fport, const char *payload_hex, int64_t fcnt_dn,
		   bool confirmed, const char *as_id, const char *time, const char *key, char *out,
		   size_t outlen);

/* The counters (zero for NULL). */
void downlink_get_stats(const struct downlink *d, struct downlink_stats *ret);

/* {"url", "state", ...} of the LRC link, or {"url": null} when none is configured. */
json_t *downlink_status_json(const struct downlink *d);

/* The pool of sessions to the LRC, for its counters and last error; NULL with no LRC. */
const struct pool *downlink_pool(const struct downlink *d);
