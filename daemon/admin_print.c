/* admin_print: io.tpad.Admin.Print, reprinting one device or a batch as one audited job. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "config.h"
#include "cred.h"
#include "hex.h"
#include "label.h"
#include "message.h"
#include "print.h"
#include "server.h"
#include "store.h"
#include "tpad.h"

/* One Print call waiting for its job. */
struct admin_print_call {
	struct tpad *t;
	struct req *r;
	uint32_t uid;
	int32_t pid;
	char printer[64];
	unsigned copies;
	char dev_eui[17]; /* "" for a batch */
	struct print_label *labels;
	size_t n, cap;
	size_t max;   /* labels this call may print: limit, else PROTO_MAX_PRINT_LABELS */
	bool limited; /* the call gave a limit */
	bool more;    /* the batch goes on after the max-th label */
	char after[17]; /* the batch's "after", "" for its start */
	int err;
};

/* Send an InvalidParameter error of the admin interface. */
static void invalid(struct req *r, const char *parameter, const char *reason)
{
	req_error(r, "io.tpad.Admin.InvalidParameter",
		  json_pack("{s:s, s:s}", "parameter", parameter, "reason", reason));
}

/* Add the label of one issued record. */
static int collect(const struct store_record *rec, void *arg)
{
	struct admin_print_call *c = arg;
	if (rec->state != STORE_ISSUED || !rec->owner_token[0])
		return 0;
	if (c->n == c->max) {
		c->more = true;
		return 1;
	}
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct print_label *l = realloc(c->labels, cap * sizeof(*l));
		if (!l) {
			c->err = -ENOMEM;
			return 1;
		}
		c->labels = l;
		c->cap = cap;
	}
	struct print_label *l = &c->labels[c->n];
	memset(l, 0, sizeof(*l));
	int r = label_text(c->t->cfg, rec, l->text, sizeof(l->text));
	if (r < 0) {
		c->err = r;
		return 1;
	}
	snprintf(l->dev_eui, sizeof(l->dev_eui), "%s", rec->dev_eui);
	snprintf(l->join_eui, sizeof(l->join_eui), "%s", rec->join_eui);
	snprintf(l->serial, sizeof(l->serial), "%s", rec->serial);
	c->n++;
	return 0;
}

/* Audit every device of the job. */
static void audit_all(struct admin_print_call *c, const char *printer, uint64_t job,
		      const char *reason)
{
	char outcome[STORE_AUDIT_OUTCOME_MAX];
	print_outcome(outcome, sizeof(outcome), printer, job, reason);
	for (size_t i = 0; c->t->store && i < c->n; i++)
		store_audit(c->t->store, c->labels[i].dev_eui, "io.tpad.Admin.Print", c->uid,
			    c->pid, outcome);
}

/* Free a call. */
static void call_free(struct admin_print_call *c)
{
	free(c->labels);
	free(c);
}

/* The reply of a printed job; a batch's says where it ended, so the next part follows on. */
static json_t *printed_reply(const struct admin_print_call *c, const struct print_result *res)
{
	json_t *o = json_pack("{s:s, s:I, s:s, s:I, s:f}", "printer", res->printer, "job",
			      (json_int_t)res->job, "state", "printed", "labels", (json_int_t)c->n,
			      "sendMs", res->sent_ms);
	if (o && !c->dev_eui[0]) {
		json_object_set_new(o, "last", json_string(c->labels[c->n - 1].dev_eui));
		json_object_set_new(o, "more", json_boolean(c->more));
	}
	return o;
}

/* The job ended. */
static void on_printed(const struct print_result *res, void *arg)
{
	struct admin_print_call *c = arg;
	audit_all(c, res->printer, res->job, res->ok ? NULL : res->reason);
	if (res->ok)
		req_reply(c->r, printed_reply(c, res), false);
	else
		req_error(c->r, "io.tpad.Admin.PrintFailed",
			  json_pack("{s:s, s:s, s:I}", "printer", res->printer, "reason",
				    res->reason, "job", (json_int_t)res->job));
	call_free(c);
}

/* The labels are gathered (rc: 0, -ENOENT or why the store could not be read): print. */
static void print_gathered(struct admin_print_call *c, int rc)
{
	struct req *r = c->r;
	if (rc == -ENOENT) {
		req_error(r, "io.tpad.Admin.NotFound", json_pack("{s:s}", "devEUI", c->dev_eui));
		call_free(c);
		return;
	}
	if (rc < 0 || c->err < 0) {
		req_error(r, "io.tpad.Admin.StoreFailed",
			  json_pack("{s:s}", "reason", strerror(-(rc < 0 ? rc : c->err))));
		call_free(c);
		return;
	}
	if (c->more && !c->limited) {
		invalid(r, "state",
			"more than 10000 labels: print them in parts with limit (at most 10000) "
			"and after (the reply's last), e.g. tpactl print --state STATE --limit "
			"10000, then --after LAST");
		call_free(c);
		return;
	}
	if (!c->n && c->after[0]) {
		/* The part after the last one: the batch was printed whole. */
		char why[160];
		snprintf(why, sizeof(why),
			 "no device in this state after %s has a label to print: the batch is "
			 "done",
			 c->after);
		invalid(r, "after", why);
		call_free(c);
		return;
	}
	if (!c->n) {
		/* A batch of nothing: no device of that state has a label to print. */
		invalid(r, "state", "no device in this state has a label to print (only ISSUED "
				    "devices with an ownerToken have one)");
		call_free(c);
		return;
	}
	char err[256] = "tpad is shutting down";
	int64_t job = c->t->print ? print_submit(c->t->print, c->printer, c->labels, c->n,
						 c->copies, on_printed, c, err, sizeof(err))
				  : -ESHUTDOWN;
	if (job < 0) {
		audit_all(c, c->printer, 0, err);
		req_error(r, "io.tpad.Admin.PrintFailed",
			  json_pack("{s:s, s:s}", "printer", c->printer, "reason", err));
		call_free(c);
	}
}

/* The one device to reprint, as the store holds it. */
static void on_print_get(int err, const struct store_record *rec, const char *reason, void *arg)
{
	struct admin_print_call *c = arg;
	if (err == 0 && (rec->state != STORE_ISSUED || !rec->owner_token[0]))
		err = -ENOENT;
	if (err == 0)
		collect(rec, c);
	print_gathered(c, err);
}

/* The devices of a batch, in DevEUI order. */
static void on_print_list(int err, const char *reason, const struct store_rows *rows, void *arg)
{
	struct admin_print_call *c = arg;
	for (size_t i = 0; err == 0 && i < rows->n; i++)
		if (collect(&rows->records[i], c))
			break;
	print_gathered(c, err);
}

void admin_print(struct tpad *t, struct req *r)
{
	json_t *params = req_params(r);
	const struct peer *peer = req_peer(r);
	char dev_eui[17];
	proto_param_hex(params, "devEUI", dev_eui, HEX_EUI);
	const char *state = json_string_value(json_object_get(params, "state"));
	if (!dev_eui[0] == !state) {
		invalid(r, dev_eui[0] ? "state" : "devEUI", "give exactly one of devEUI and state");
		return;
	}
	const char *printer = json_string_value(json_object_get(params, "printer"));
	if (!printer)
		printer = t->cfg->print_default;
	if (!printer) {
		invalid(r, "printer", "no printer named and no print.default");
		return;
	}
	if (!print_has(t->print, printer)) {
		char why[256];
		print_unknown(t->print, printer, why, sizeof(why));
		invalid(r, "printer", why);
		return;
	}
	json_t *copies = json_object_get(params, "copies");
	unsigned n_copies = json_is_integer(copies) ? (unsigned)json_integer_value(copies) : 1;
	char after[17];
	proto_param_hex(params, "after", after, HEX_EUI);
	json_t *limit = json_object_get(params, "limit");
	if (dev_eui[0] && (after[0] || json_is_integer(limit))) {
		invalid(r, after[0] ? "after" : "limit", "after and limit go with state, a batch");
		return;
	}
	if (!t->store) {
		req_error(r, "io.tpad.Admin.StoreFailed", json_pack("{s:s}", "reason", "closed"));
		return;
	}
	struct admin_print_call *c = calloc(1, sizeof(*c));
	if (!c) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	*c = (struct admin_print_call){.t = t,
				       .r = r,
				       .uid = (uint32_t)peer->uid,
				       .pid = (int32_t)peer->pid,
				       .copies = n_copies,
				       .limited = json_is_integer(limit),
				       .max = json_is_integer(limit)
						  ? (size_t)json_integer_value(limit)
						  : PROTO_MAX_PRINT_LABELS};
	snprintf(c->printer, sizeof(c->printer), "%s", printer);
	memcpy(c->dev_eui, dev_eui, sizeof(c->dev_eui));
	memcpy(c->after, after, sizeof(c->after));
	int rc;
	if (dev_eui[0]) {
		rc = store_get_async(t->store, dev_eui, on_print_get, c);
	} else {
		char up[16];
		size_t i = 0;
		for (; state[i] && i + 1 < sizeof(up); i++)
			up[i] = (char)(state[i] >= 'a' && state[i] <= 'z' ? state[i] - 'a' + 'A'
									  : state[i]);
		up[i] = '\0';
		enum store_state st;
		rc = store_state_parse(up, &st);
		/* One more than a call may print: enough to tell that there are more. */
		if (rc == 0)
			rc = store_list_async(t->store, (int)st, after[0] ? after : NULL,
					      c->max + 1, on_print_list, c);
	}
	if (rc < 0)
		print_gathered(c, rc);
}
