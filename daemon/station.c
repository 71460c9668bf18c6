/* station: the io.tpad.Station methods, Activate and Lookup. */
#include "station.h"
#include "clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "config.h"
#include "cred.h"
#include "hex.h"
#include "label.h"
#include "layout.h"
#include "log.h"
#include "message.h"
#include "print.h"
#include "qr.h"
#include "server.h"
#include "store.h"
#include "tpad.h"

/* What a call asked to print: a printer (resolved) and copies; printer[0] = nothing. */
struct print_want {
	char printer[CONFIG_PRINTER_NAME_MAX];
	unsigned copies;
};

/* One Activate call waiting for its activation. */
struct pending_activate {
	struct tpad *t;
	struct req *r;
	struct qr_opts qr;
	bool want_qr;
	struct print_want print;
	uint64_t started_us;
	char dev_eui[17];
};

/* One reply waiting for its print job. */
struct pending_print {
	struct tpad *t;
	struct req *r;
	json_t *reply; /* {device, qr?}: the record is committed */
	const char *method;
	uint32_t uid;
	int32_t pid;
	char dev_eui[17];
};

/* Send an InvalidParameter error of the station interface. */
static void invalid(struct req *r, const char *parameter, const char *reason)
{
	req_error(r, "io.tpad.Station.InvalidParameter",
		  json_pack("{s:s, s:s}", "parameter", parameter, "reason", reason));
}

/* The reply of a device and, if asked, its label image. */
static json_t *device_reply(struct tpad *t, const struct store_record *rec, const char *source,
			    const struct qr_opts *qr, bool want_qr)
{
	json_t *device = label_device_json(t->cfg, rec, source, true);
	if (!device)
		return NULL;
	json_t *reply = json_pack("{s:o}", "device", device);
	if (!reply || !want_qr)
		return reply;
	char text[QR_TEXT_MAX];
	int err = label_text(t->cfg, rec, text, sizeof(text));
	json_t *img = err < 0 ? NULL : label_image_for(t->cfg, t->store, rec, text, qr, &err);
	if (img)
		json_object_set_new(reply, "qr", img);
	else
		/* The token is stored; Lookup can render the label again once fixed. */
		log_warn_errno(err, "cannot render the label of %s", rec->dev_eui);
	return reply;
}

/*
 * Read a call's "print" object: the printer named, else the station's own, else
 * print.default. false after sending InvalidParameter (unknown printer, none at all).
 */
static bool print_want_parse(struct tpad *t, struct req *r, struct print_want *ret)
{
	json_t *o = json_object_get(req_params(r), "print");
	ret->printer[0] = '\0';
	ret->copies = 1;
	if (!json_is_object(o))
		return true;
	const struct peer *peer = req_peer(r);
	const char *name = json_string_value(json_object_get(o, "printer"));
	json_t *copies = json_object_get(o, "copies");
	if (json_is_integer(copies))
		ret->copies = (unsigned)json_integer_value(copies);
	if (!name)
		name = print_default_for(t->print, peer->uid, peer->gid);
	if (!name) {
		invalid(r, "print.printer",
			"no printer named, and no default printer for this station "
			"(print.default or a printer's station-uids / station-groups)");
		return false;
	}
	if (!print_has(t->print, name)) {
		char why[256];
		print_unknown(t->print, name, why, sizeof(why));
		invalid(r, "print.printer", why);
		return false;
	}
	snprintf(ret->printer, sizeof(ret->printer), "%s", name);
	return true;
}

/* Audit one print of a device. */
static void print_audit(struct tpad *t, const char *dev_eui, const char *method, uint32_t uid,
			int32_t pid, const char *printer, uint64_t job, const char *reason)
{
	char outcome[STORE_AUDIT_OUTCOME_MAX];
	print_outcome(outcome, sizeof(outcome), printer, job, reason);
	if (t->store)
		store_audit(t->store, dev_eui, method, uid, pid, outcome);
}

/* The PrintFailed error: the committed record travels with it, so nothing is lost. */
static void reply_print_failed(struct req *r, json_t *reply, const char *printer, int64_t job,
			       const char *reason)
{
	json_object_set_new(reply, "printer", json_string(printer));
	json_object_set_new(reply, "reason", json_string(reason));
	if (job > 0)
		json_object_set_new(reply, "job", json_integer(job));
	req_error(r, "io.tpad.Station.PrintFailed", reply);
}

/* The print job of a reply ended. */
static void on_printed(const struct print_result *res, void *arg)
{
	struct pending_print *pp = arg;
	print_audit(pp->t, pp->dev_eui, pp->method, pp->uid, pp->pid, res->printer, res->job,
		    res->ok ? NULL : res->reason);
	if (res->ok) {
		json_t *p = json_pack("{s:s, s:I, s:s, s:f}", "printer", res->printer, "job",
				      (json_int_t)res->job, "state", "printed", "sendMs",
				      res->sent_ms);
		if (p && res->printer_job)
			json_object_set_new(p, "printerJob", json_integer(res->printer_job));
		json_object_set_new(pp->reply, "print", p);
		req_reply(pp->r, pp->reply, false);
	} else {
		reply_print_failed(pp->r, pp->reply, res->printer, (int64_t)res->job, res->reason);
	}
	free(pp);
}

/*
 * Send reply, or first print rec's label when the call asked for it: the record is
 * committed already, so a failed print never loses the token (it rides in PrintFailed).
 */
static void reply_maybe_print(struct tpad *t, struct req *r, json_t *reply,
			      const struct store_record *rec, const struct print_want *pw,
			      const char *method)
{
	if (!pw->printer[0]) {
		req_reply(r, reply, false);
		return;
	}
	const struct peer *peer = req_peer(r);
	struct print_label *l = calloc(1, sizeof(*l));
	struct pending_print *pp = calloc(1, sizeof(*pp));
	char err[256] = "out of memory";
	int64_t job = -ENOMEM;
	if (l && pp && label_text(t->cfg, rec, l->text, sizeof(l->text)) == 0) {
		snprintf(l->dev_eui, sizeof(l->dev_eui), "%s", rec->dev_eui);
		snprintf(l->join_eui, sizeof(l->join_eui), "%s", rec->join_eui);
		snprintf(l->serial, sizeof(l->serial), "%s", rec->serial);
		*pp = (struct pending_print){.t = t,
					     .r = r,
					     .reply = reply,
					     .method = method,
					     .uid = (uint32_t)peer->uid,
					     .pid = (int32_t)peer->pid};
		snprintf(pp->dev_eui, sizeof(pp->dev_eui), "%s", rec->dev_eui);
		job = print_submit(t->print, pw->printer, l, 1, pw->copies, on_printed, pp, err,
				   sizeof(err));
	}
	free(l);
	if (job > 0)
		return;
	free(pp);
	print_audit(t, rec->dev_eui, method, (uint32_t)peer->uid, (int32_t)peer->pid, pw->printer,
		    0, err);
	reply_print_failed(r, reply, pw->printer, 0, err);
}

/* Map an activation failure to the protocol's error. */
static void reply_failure(struct req *r, const struct act_result *res, const char *dev_eui)
{
	switch (res->outcome) {
	case ACT_NOT_FOUND:
		req_error(r, "io.tpad.Station.NotFound", json_pack("{s:s}", "devEUI", dev_eui));
		return;
	case ACT_CONFLICT:
		req_error(r, "io.tpad.Station.Conflict",
			  json_pack("{s:s, s:s}", "devEUI", dev_eui, "reason", res->reason));
		return;
	case ACT_REJECTED: {
		json_t *p = json_pack("{s:i}", "status", res->http_status);
		if (res->code[0])
			json_object_set_new(p, "code", json_string(res->code));
		if (res->message[0] || res->reason[0])
			json_object_set_new(
			    p, "message",
			    json_string(res->message[0] ? res->message : res->reason));
		req_error(r, "io.tpad.Station.UpstreamRejected", p);
		return;
	}
	case ACT_UNAVAILABLE: {
		json_t *p = json_pack("{s:s}", "reason", res->reason);
		if (res->retry_after >= 0)
			json_object_set_new(p, "retryAfter", json_integer(res->retry_after));
		req_error(r, "io.tpad.Station.UpstreamUnavailable", p);
		return;
	}
	case ACT_UNKNOWN:
		req_error(r, "io.tpad.Station.OutcomeUnknown",
			  json_pack("{s:s, s:i}", "devEUI", dev_eui, "retryAfter",
				    res->retry_after > 0 ? res->retry_after : 1));
		return;
	case ACT_RETIRED:
		req_error(r, "io.tpad.Station.Retired",
			  json_pack("{s:s, s:s}", "devEUI", dev_eui, "reason", res->reason));
		return;
	case ACT_BUSY:
		req_error(r, "io.tpad.Station.Busy", NULL);
		return;
	case ACT_STORE_FAILED:
		req_error(r, "io.tpad.Station.StoreFailed",
			  json_pack("{s:s}", "reason", res->reason));
		return;
	case ACT_OK:
		break;
	}
}

/* The activation ended: reply (the ISSUED commit has returned if a token is in it). */
static void on_activated(const struct act_result *res, void *arg)
{
	struct pending_activate *p = arg;
	const struct peer *peer = req_peer(p->r);
	double ms = (double)(clock_now_us() - p->started_us) / 1000.0;
	const char *source = res->live ? "live" : "stored";
	if (res->outcome == ACT_OK) {
		json_t *reply = device_reply(p->t, &res->rec, source, &p->qr, p->want_qr);
		if (reply)
			reply_maybe_print(p->t, p->r, reply, &res->rec, &p->print,
					  "io.tpad.Station.Activate");
		else
			req_error(p->r, "io.tpad.Station.Busy", NULL);
	} else {
		if (res->outcome != ACT_NOT_FOUND && res->outcome != ACT_CONFLICT)
			log_notice("activation of %s: %s: %s", p->dev_eui,
				   activation_outcome_name(res->outcome),
				   res->reason[0] ? res->reason : res->message);
		reply_failure(p->r, res, p->dev_eui);
	}
	log_activation(
	    p->dev_eui, "io.tpad.Station.Activate", activation_outcome_name(res->outcome),
	    res->outcome == ACT_OK ? source : NULL, (unsigned)peer->uid, (int)peer->pid, ms);
	free(p);
}

/*
 * Whether q's serial fits the label l (what names it in why), beside the code of the label
 * text q's device will get: a longer serial can make a larger code and leave less room.
 */
static int serial_fits(const struct tpad *t, const struct layout *l, const struct act_request *q,
		       const char *what, char *why, size_t whylen)
{
	if (!q->serial[0] || !l)
		return 0;
	static const char wide[] = "FFFFFFFFFFFFFFFF";
	const struct caption_fields f = {q->dev_eui[0] ? q->dev_eui : wide,
					q->join_eui[0] ? q->join_eui : wide, q->serial};
	char text[QR_TEXT_MAX], err[256];
	int r = label_text_to_issue(t->cfg, q->dev_eui, q->join_eui, q->serial, text, sizeof(text));
	if (r < 0) {
		snprintf(why, whylen, "cannot make a label of it: %s", strerror(-r));
		return r;
	}
	r = layout_fields_fit(l, text, &f, err, sizeof(err));
	if (r < 0)
		snprintf(why, whylen, "too long for %s: %s", what, err);
	return r;
}

int station_serial_fits(const struct tpad *t, const struct act_request *q, char *why,
			size_t whylen)
{
	return serial_fits(t, t->layout, q, "the label", why, whylen);
}

int station_serial_fits_printer(const struct tpad *t, const struct act_request *q,
				const char *printer, char *why, size_t whylen)
{
	char what[96];
	snprintf(what, sizeof(what), "printer %s's label", printer);
	return serial_fits(t, t->print ? print_layout(t->print, printer) : NULL, q, what, why,
			   whylen);
}

void station_activate(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	const struct peer *peer = req_peer(r);
	struct act_request q = {.method = "io.tpad.Station.Activate",
				.origin = "activate",
				.uid = (uint32_t)peer->uid,
				.pid = (int32_t)peer->pid,
				.owner = peer->conn_id,
				.oneway = req_oneway(r)};
	proto_param_hex(params, "devEUI", q.dev_eui, HEX_EUI);
	proto_param_hex(params, "joinEUI", q.join_eui, HEX_EUI);
	proto_param_hex(params, "profileId", q.profile_id, HEX_PROFILE);
	proto_param_hex(params, "tkmInfo", q.tkm_info, HEX_TKM_INFO);
	const char *serial = json_string_value(json_object_get(params, "serial"));
	if (serial)
		snprintf(q.serial, sizeof(q.serial), "%s", serial);
	char why[300];
	if (station_serial_fits(t, &q, why, sizeof(why)) < 0) {
		invalid(r, "serial", why);
		return;
	}
	const char *app_key = json_string_value(json_object_get(params, "appKey"));
	if (app_key) {
		if (hex_decode(app_key, q.app_key, sizeof(q.app_key)) < 0) {
			invalid(r, "appKey", "must be 32 hexadecimal digits");
			return;
		}
		q.has_app_key = true;
	}
	q.generate_app_key = json_is_true(json_object_get(params, "generateAppKey"));

	const char *second = NULL;
	if (q.tkm_info[0] && q.has_app_key)
		second = "appKey";
	else if ((q.tkm_info[0] || q.has_app_key) && q.generate_app_key)
		second = "generateAppKey";
	if (second) {
		cred_wipe(&q, sizeof(q));
		invalid(r, second, "give only one of tkmInfo, appKey and generateAppKey");
		return;
	}

	struct pending_activate *p = calloc(1, sizeof(*p));
	if (!p || label_opts(t->cfg, t->layout, json_object_get(params, "qr"), &p->qr, &p->want_qr) < 0) {
		free(p);
		cred_wipe(&q, sizeof(q));
		if (p)
			invalid(r, "qr", "unknown format or error correction level");
		else
			req_error(r, "io.tpad.Station.Busy", NULL);
		return;
	}
	if (!print_want_parse(t, r, &p->print)) {
		free(p);
		cred_wipe(&q, sizeof(q));
		return;
	}
	if (p->print.printer[0] &&
	    station_serial_fits_printer(t, &q, p->print.printer, why, sizeof(why)) < 0) {
		free(p);
		cred_wipe(&q, sizeof(q));
		invalid(r, "serial", why);
		return;
	}
	p->t = t;
	p->r = r;
	p->started_us = clock_now_us();
	memcpy(p->dev_eui, q.dev_eui, sizeof(p->dev_eui));
	int rc = activation_run(t->act, &q, on_activated, p);
	cred_wipe(&q, sizeof(q));
	if (rc < 0) {
		free(p);
		req_error(r, "io.tpad.Station.Busy", NULL);
	}
}

/* A Lookup waiting for its read. */
struct pending_lookup {
	struct tpad *t;
	struct req *r;
	char dev_eui[17];
	struct qr_opts qr;
	bool want_qr;
	struct print_want pw;
	uint64_t started_us;
};

static void on_lookup_read(int rc, const struct store_record *rec, const char *reason, void *arg)
{
	struct pending_lookup *p = arg;
	struct tpad *t = p->t;
	struct req *r = p->r;
	const struct peer *peer = req_peer(r);
	const char *dev_eui = p->dev_eui;
	const char *outcome = "ok";
	if (rc == -ENOENT || (rc == 0 && rec->state == STORE_FAILED)) {
		outcome = "not_found";
		req_error(r, "io.tpad.Station.NotFound", json_pack("{s:s}", "devEUI", dev_eui));
	} else if (rc < 0) {
		outcome = "store_failed";
		req_error(r, "io.tpad.Station.StoreFailed",
			  json_pack("{s:s}", "reason", reason && *reason ? reason : strerror(-rc)));
	} else if (rec->state == STORE_PENDING) {
		/* Its import is in flight or unsettled; the background settler settles it. */
		outcome = "unknown";
		req_error(r, "io.tpad.Station.OutcomeUnknown",
			  json_pack("{s:s, s:i}", "devEUI", dev_eui, "retryAfter",
				    activation_retry_after(t->act, rec)));
	} else if (rec->state == STORE_FOREIGN) {
		outcome = "conflict";
		req_error(r, "io.tpad.Station.Conflict",
			  json_pack("{s:s, s:s}", "devEUI", dev_eui, "reason",
				    "the cloud already holds this device from an import that was "
				    "not ours; an admin who knows it is ours can run tpactl adopt"));
	} else if (rec->state == STORE_RETIRED) {
		outcome = "retired";
		req_error(r, "io.tpad.Station.Retired",
			  json_pack("{s:s, s:s}", "devEUI", dev_eui, "reason",
				    rec->last_error[0] ? rec->last_error : "the device was retired"));
	} else {
		json_t *reply = device_reply(t, rec, "stored", &p->qr, p->want_qr);
		if (t->store)
			store_audit(t->store, dev_eui, "io.tpad.Station.Lookup",
				    (uint32_t)peer->uid, (int32_t)peer->pid,
				    req_oneway(r) ? "oneway" : "stored");
		if (!req_oneway(r)) /* counted as its audit entry says: handed out */
			activation_count_lookup(t->act);
		if (reply)
			reply_maybe_print(t, r, reply, rec, &p->pw, "io.tpad.Station.Lookup");
		else
			req_error(r, "io.tpad.Station.Busy", NULL);
	}
	log_activation(dev_eui, "io.tpad.Station.Lookup", outcome,
		       strcmp(outcome, "ok") == 0 ? "stored" : NULL, (unsigned)peer->uid,
		       (int)peer->pid, (double)(clock_now_us() - p->started_us) / 1000.0);
	free(p);
}

void station_lookup(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	struct pending_lookup *p = calloc(1, sizeof(*p));
	if (!p) {
		req_error(r, "io.tpad.Station.Busy", NULL);
		return;
	}
	p->t = t;
	p->r = r;
	p->started_us = clock_now_us();
	proto_param_hex(params, "devEUI", p->dev_eui, HEX_EUI);
	if (label_opts(t->cfg, t->layout, json_object_get(params, "qr"), &p->qr, &p->want_qr) < 0) {
		free(p);
		invalid(r, "qr", "unknown format or error correction level");
		return;
	}
	if (!print_want_parse(t, r, &p->pw)) {
		free(p);
		return;
	}
	/* The read completes from the loop: on PostgreSQL no round trip blocks it. */
	int rc = t->store ? store_get_async(t->store, p->dev_eui, on_lookup_read, p) : -ESHUTDOWN;
	if (rc < 0)
		on_lookup_read(rc, NULL, strerror(-rc), p);
}

bool station_allowed(const struct config *cfg, const struct peer *peer)
{
	if (!cfg->n_station_allowed_uids && !cfg->n_station_allowed_gids)
		return true;
	for (size_t i = 0; i < cfg->n_station_allowed_uids; i++)
		if (cfg->station_allowed_uids[i] == peer->uid)
			return true;
	for (size_t i = 0; i < cfg->n_station_allowed_gids; i++)
		if (cfg->station_allowed_gids[i] == peer->gid)
			return true;
	return false;
}
