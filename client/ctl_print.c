/* ctl_print: tpactl print (Admin.Print), the printers in tpactl status, station --print. */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

int ctl_print(struct ctl *c, struct ctl_args *a)
{
	const char *eui = a->argc ? a->argv[0] : NULL; /* or a->state: checked by tpactl.c */
	json_t *p = json_object();
	if (eui)
		json_object_set_new(p, "devEUI", json_string(eui));
	else
		json_object_set_new(p, "state", json_string(a->state));
	if (a->printer)
		json_object_set_new(p, "printer", json_string(a->printer));
	if (a->copies)
		json_object_set_new(p, "copies", json_integer(a->copies));
	if (a->after)
		json_object_set_new(p, "after", json_string(a->after));
	if (a->limit)
		json_object_set_new(p, "limit", json_integer(a->limit));
	json_t *r;
	int rc = ctl_call(c, "io.tpad.Admin.Print", p, a->json, &r);
	if (rc != 0)
		return rc < 0 ? 1 : rc;
	const char *last = json_string_value(json_object_get(r, "last"));
	if (a->json)
		ctl_print_json(r);
	else
		printf("printed %lld label%s on %s (job %lld)%s%s\n",
		       (long long)json_integer_value(json_object_get(r, "labels")),
		       json_integer_value(json_object_get(r, "labels")) == 1 ? "" : "s",
		       json_string_value(json_object_get(r, "printer")),
		       (long long)json_integer_value(json_object_get(r, "job")),
		       last ? ", the last " : "", last ? last : "");
	/* More of the batch: say how to go on. */
	if (!a->json && last && json_is_true(json_object_get(r, "more")))
		printf("more to print: tpactl print --state %s --after %s%s\n", a->state, last,
		       a->limit ? " --limit N" : "");
	json_decref(r);
	return 0;
}

json_t *ctl_print_options(const struct ctl_args *a)
{
	if (!a->print && !a->printer && !a->copies)
		return NULL;
	json_t *o = json_object();
	if (a->printer)
		json_object_set_new(o, "printer", json_string(a->printer));
	if (a->copies)
		json_object_set_new(o, "copies", json_integer(a->copies));
	return o;
}

void ctl_print_printers(json_t *printers)
{
	size_t i;
	json_t *p;
	json_array_foreach(printers, i, p)
	{
		const char *reasons = json_string_value(json_object_get(p, "reasons"));
		bool ready = json_is_true(json_object_get(p, "ready"));
		json_t *jobs = json_object_get(p, "jobs");
		printf("printer:     %s %s, %s%s%s; %lld printed, %lld failed, %lld queued\n",
		       json_string_value(json_object_get(p, "name")),
		       json_string_value(json_object_get(p, "url")),
		       ready ? "ready" : json_string_value(json_object_get(p, "state")),
		       !ready && reasons && *reasons ? ": " : "", !ready && reasons ? reasons : "",
		       (long long)json_integer_value(json_object_get(jobs, "printed")),
		       (long long)json_integer_value(json_object_get(jobs, "failed")),
		       (long long)json_integer_value(json_object_get(p, "queued")));
	}
}
