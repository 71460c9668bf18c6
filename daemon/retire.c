/* retire: io.tpad.Admin.Retire — a scrapped device deleted in the cloud by its ref, state RETIRED.
 */
#include "admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "cred.h"
#include "hex.h"
#include "log.h"
#include "server.h"
#include "store.h"
#include "tpa.h"
#include "tpad.h"
#include "utf8.h"

#define RETIRE_REASON_MAX 200
#define RETIRE_MAX_DELETES 3 /* deletes sent for one call (a lost answer is asked about) */

/* One Retire call, from the store read to the commit of RETIRED. */
struct retire_call {
	struct tpad *t;
	struct req *r;
	struct store_record rec;
	char dev_eui[17];
	char reason[4 * RETIRE_REASON_MAX + 1]; /* characters of UTF-8: up to 4 bytes each */
	unsigned deletes;
	bool cloud_deleted; /* the cloud held it and does no more */
	char how[96];	    /* for the audit trail and the log */
	struct act_hold *hold; /* no activation of the device runs while Retire decides */
};

static void retire_delete(struct retire_call *c);
static void on_retire_get(int err, const struct store_record *rec, const char *reason, void *arg);

/* Forget the call, wiping the record (it may hold an AppKey); activations may go on. */
static void call_free(struct retire_call *c)
{
	activation_release(c->hold);
	cred_wipe(&c->rec, sizeof(c->rec));
	free(c);
}

/* Answer with an error and forget the call. */
static void fail(struct retire_call *c, const char *error, json_t *params)
{
	req_error(c->r, error, params);
	call_free(c);
}

/* No activation of the device runs now, nor will until the call ends: read its row. */
static void on_hold(struct act_hold *h, void *arg)
{
	struct retire_call *c = arg;
	c->hold = h;
	int err = store_get_async(c->t->store, c->dev_eui, on_retire_get, c);
	if (err < 0)
		fail(c, "io.tpad.Admin.StoreFailed", json_pack("{s:s}", "reason", strerror(-err)));
}

/* The cloud could not be asked: nothing changed, the admin retries. */
static void unavailable(struct retire_call *c, const struct tpa_result *res, const char *what)
{
	char why[600];
	snprintf(why, sizeof(why), "%s: %s; the device stays %s, run retire again", what,
		 res->reason[0] ? res->reason : "no answer", store_state_name(c->rec.state));
	json_t *p = json_pack("{s:s}", "reason", why);
	if (p && res->retry_after > 0)
		json_object_set_new(p, "retryAfter", json_integer(res->retry_after));
	fail(c, "io.tpad.Admin.UpstreamUnavailable", p);
}

/* The cloud refused to delete it (status, code, message): logged, answered, nothing changes. */
static void refused(struct retire_call *c, int status, const char *code, const char *message)
{
	log_notice("%s not retired: %s (HTTP %d%s%s); it stays %s", c->rec.dev_eui, message,
		   status, code[0] ? " " : "", code, store_state_name(c->rec.state));
	fail(c, "io.tpad.Admin.Rejected",
	     json_pack("{s:s, s:i, s:s, s:s}", "devEUI", c->rec.dev_eui, "httpStatus", status,
		       "code", code, "message", message));
}

static void rejected(struct retire_call *c, const struct tpa_result *res)
{
	refused(c, res->http_status, res->code, res->message[0] ? res->message : res->reason);
}

/* RETIRED is durable: reply with the record. */
static void on_committed(int err, const char *reason, void *arg)
{
	struct retire_call *c = arg;
	if (err == -EALREADY) {
		/* Another tpad changed the row since it was read (PostgreSQL): decide again. */
		fail(c, "io.tpad.Admin.Conflict",
		     json_pack("{s:s, s:s}", "devEUI", c->rec.dev_eui, "reason", reason));
		return;
	}
	if (err < 0) {
		fail(c, "io.tpad.Admin.StoreFailed", json_pack("{s:s}", "reason", reason));
		return;
	}
	log_notice("%s retired by an admin (uid %u): %s; %s", c->rec.dev_eui,
		   (unsigned)req_peer(c->r)->uid, c->reason, c->how);
	json_t *d = admin_device_info(c->t->cfg, &c->rec);
	if (d)
		req_reply(c->r,
			  json_pack("{s:o, s:b}", "device", d, "cloudDeleted", c->cloud_deleted),
			  false);
	else
		req_error(c->r, "io.tpad.Admin.Busy", NULL);
	call_free(c);
}

/* Write RETIRED with the reason (Lookup and Activate show it) and the audit row. */
static void commit_retired(struct retire_call *c, bool cloud_deleted, const char *how)
{
	const struct peer *p = req_peer(c->r);
	char outcome[128];

	c->cloud_deleted = cloud_deleted;
	snprintf(c->how, sizeof(c->how), "%s", how);
	c->rec.state = STORE_RETIRED;
	/* Cut whole characters: the store (PostgreSQL) and the replies take UTF-8 only. */
	snprintf(c->rec.last_error, sizeof(c->rec.last_error), "retired: %.*s",
		 (int)utf8_prefix(c->reason, sizeof(c->rec.last_error) - 10), c->reason);
	snprintf(outcome, sizeof(outcome), "retired (%s): %.*s", how,
		 (int)utf8_prefix(c->reason, 80), c->reason);
	(void)store_audit(c->t->store, c->rec.dev_eui, "io.tpad.Admin.Retire", (uint32_t)p->uid,
			  (int32_t)p->pid, outcome);
	int r = store_update(c->t->store, &c->rec, on_committed, c);
	if (r < 0)
		fail(c, r == -EAGAIN ? "io.tpad.Admin.Busy" : "io.tpad.Admin.StoreFailed",
		     r == -EAGAIN ? NULL : json_pack("{s:s}", "reason", strerror(-r)));
}

/* After a lost answer: the query says whether the device is still in the cloud. */
static void on_settle_query(const struct tpa_result *res, void *arg)
{
	struct retire_call *c = arg;
	switch (res->outcome) {
	case TPA_NOT_FOUND:
		commit_retired(c, true,
			       "deleted in the cloud (a lost answer settled by the query)");
		return;
	case TPA_OK:
		/* Still there: the delete did not land (or not yet). Deleting again is safe. */
		if (res->ref[0])
			snprintf(c->rec.ref, sizeof(c->rec.ref), "%s", res->ref);
		if (c->deletes >= RETIRE_MAX_DELETES) {
			struct tpa_result u = *res;
			snprintf(u.reason, sizeof(u.reason),
				 "the cloud still holds it after %u deletes", c->deletes);
			unavailable(c, &u, "cannot retire");
			return;
		}
		retire_delete(c);
		return;
	default:
		unavailable(c, res, "the delete's answer was lost and the query failed");
		return;
	}
}

/*
 * The delete was answered 404: the device is gone, or this cloud does not delete by that
 * path (a profile or api.import-path that does not fit it). The query tells them apart.
 */
static void on_gone_query(const struct tpa_result *res, void *arg)
{
	struct retire_call *c = arg;
	switch (res->outcome) {
	case TPA_NOT_FOUND:
		commit_retired(c, false, "the cloud no longer held it");
		return;
	case TPA_OK:
		refused(c, 404, "",
			"the cloud answered 404 to the delete but still holds the device: it "
			"does not delete by this path (see api.import-path and the profile); "
			"nothing changed");
		return;
	default:
		unavailable(c, res, "the delete was answered 404 and the query failed");
		return;
	}
}

/* Settle the delete's answer res with the read-only query (cb gets it). */
static void ask_cloud(struct retire_call *c, const struct tpa_result *res, tpa_done_fn *cb,
		      const char *what)
{
	int r = c->t->tpa ? tpa_query(c->t->tpa, c->rec.dev_eui, cb, c) : -ESHUTDOWN;
	if (r < 0) {
		struct tpa_result u = *res;
		snprintf(u.reason, sizeof(u.reason), "%s", strerror(-r));
		unavailable(c, &u, what);
	}
}

/* The cloud answered the delete (or did not). */
static void on_deleted(const struct tpa_result *res, void *arg)
{
	struct retire_call *c = arg;
	switch (res->outcome) {
	case TPA_OK:
		commit_retired(c, true, "deleted in the cloud");
		return;
	case TPA_NOT_FOUND:
		/* Trusted only once the read-only query agrees. */
		ask_cloud(c, res, on_gone_query, "cannot ask the cloud after a 404 to the delete");
		return;
	case TPA_UNKNOWN:
		/* The delete was sent and no answer came: ask, never guess. */
		ask_cloud(c, res, on_settle_query, "cannot ask the cloud after a lost answer");
		return;
	case TPA_REJECTED:
	case TPA_CONFLICT:
		rejected(c, res);
		return;
	default:
		unavailable(c, res, "cannot delete the device in the cloud");
		return;
	}
}

/* Send DELETE {import-path}/{ref}. */
static void retire_delete(struct retire_call *c)
{
	c->deletes++;
	int r = c->t->tpa ? tpa_delete(c->t->tpa, c->rec.ref, on_deleted, c) : -ESHUTDOWN;
	if (r == -EINVAL) {
		fail(c, "io.tpad.Admin.Conflict",
		     json_pack("{s:s, s:s}", "devEUI", c->rec.dev_eui, "reason",
			       "the cloud's ref of this device cannot be used in a path"));
	} else if (r < 0) {
		fail(c, "io.tpad.Admin.Busy", NULL);
	}
}

/* Without a stored ref: the query gives it. */
static void on_ref_query(const struct tpa_result *res, void *arg)
{
	struct retire_call *c = arg;
	if (res->outcome == TPA_NOT_FOUND) {
		commit_retired(c, false, "the cloud did not hold it");
		return;
	}
	if (res->outcome != TPA_OK || !res->ref[0]) {
		struct tpa_result u = *res;
		if (res->outcome == TPA_OK)
			snprintf(u.reason, sizeof(u.reason), "the cloud's answer has no %s",
				 c->t->cfg->api_field_ref);
		unavailable(c, &u, "cannot find the device's ref in the cloud");
		return;
	}
	snprintf(c->rec.ref, sizeof(c->rec.ref), "%s", res->ref);
	retire_delete(c);
}

void admin_retire(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	const char *s = json_string_value(json_object_get(params, "devEUI"));
	const char *why = json_string_value(json_object_get(params, "reason"));
	if (!s || !hex_valid(s, HEX_EUI)) {
		req_error(r, "io.tpad.Admin.InvalidParameter",
			  json_pack("{s:s, s:s}", "parameter", "devEUI", "reason",
				    "must be 16 hexadecimal digits"));
		return;
	}
	/* reason: 1 to RETIRE_REASON_MAX printable characters (proto's PARAM_TEXT). */
	struct retire_call *c = calloc(1, sizeof(*c));
	if (!c || !t->store || !t->tpa) {
		free(c);
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	c->t = t;
	c->r = r;
	snprintf(c->reason, sizeof(c->reason), "%s", why);
	char dev_eui[17];
	hex_upper(dev_eui, s, HEX_EUI);
	memcpy(c->dev_eui, dev_eui, sizeof(c->dev_eui));
	/*
	 * Hold the device against this tpad's activations (a station, an import, the
	 * settler): one that read FAILED and is sending an import must not be overwritten
	 * with RETIRED, nor may one start while Retire decides.
	 */
	int err = t->act ? activation_hold(t->act, dev_eui, on_hold, c) : -ESHUTDOWN;
	if (err < 0)
		fail(c, "io.tpad.Admin.StoreFailed", json_pack("{s:s}", "reason", strerror(-err)));
}

/* The row to retire, as the store holds it: decide. */
static void on_retire_get(int err, const struct store_record *rec, const char *reason, void *arg)
{
	struct retire_call *c = arg;
	struct tpad *t = c->t;
	struct req *r = c->r;
	const char *dev_eui = c->dev_eui;
	if (err == -ENOENT) {
		fail(c, "io.tpad.Admin.NotFound", json_pack("{s:s}", "devEUI", dev_eui));
		return;
	}
	if (err < 0) {
		fail(c, "io.tpad.Admin.StoreFailed",
		     json_pack("{s:s}", "reason", reason ? reason : strerror(-err)));
		return;
	}
	c->rec = *rec;
	switch (c->rec.state) {
	case STORE_RETIRED: {
		/* Already done: say so again, changing nothing. */
		json_t *d = admin_device_info(t->cfg, &c->rec);
		if (d)
			req_reply(r, json_pack("{s:o, s:b}", "device", d, "cloudDeleted", false),
				  false);
		else
			req_error(r, "io.tpad.Admin.Busy", NULL);
		call_free(c);
		return;
	}
	case STORE_FAILED:
		/* No import of ours may have landed: nothing to delete in the cloud. */
		commit_retired(c, false, "never imported");
		return;
	case STORE_PENDING:
		fail(c, "io.tpad.Admin.Conflict",
		     json_pack("{s:s, s:s}", "devEUI", dev_eui, "reason",
			       "its import is not settled yet; retire it once it is ISSUED or "
			       "FAILED"));
		return;
	case STORE_FOREIGN:
		fail(c, "io.tpad.Admin.Conflict",
		     json_pack("{s:s, s:s}", "devEUI", dev_eui, "reason",
			       "the cloud holds it from an import that was not ours: tpad does "
			       "not delete it"));
		return;
	case STORE_ISSUED:
		break;
	}
	if (c->rec.ref[0]) {
		retire_delete(c);
		return;
	}
	int q = t->tpa ? tpa_query(t->tpa, dev_eui, on_ref_query, c) : -ESHUTDOWN;
	if (q < 0)
		fail(c, "io.tpad.Admin.Busy", NULL);
}
