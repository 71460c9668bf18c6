/* ctl_station: tpactl's station commands, activate and lookup, on libtpad-client. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <jansson.h>
#include <tpad-client.h>

#include "base64.h"
#include "ctl.h"

/* The label format: --format, else from -o's extension (any case), else none. */
static const char *label_format(const struct ctl_args *a)
{
	if (a->format)
		return a->format;
	if (!a->output)
		return NULL;
	const char *dot = strrchr(a->output, '.');
	if (dot && strcasecmp(dot, ".svg") == 0)
		return "svg";
	if (dot && strcasecmp(dot, ".zpl") == 0)
		return "zpl";
	if (dot && strcasecmp(dot, ".pdf") == 0)
		return "pdf";
	if (dot && strcasecmp(dot, ".txt") == 0)
		return "text";
	return "png";
}

/*
 * Print a text label with light and dark swapped, for dark terminals: a space becomes a
 * full block, an upper half block a lower one, and back. Other bytes pass unchanged.
 */
static void print_inverted(const uint8_t *p, size_t len)
{
	static const char full[] = "\u2588", upper[] = "\u2580", lower[] = "\u2584";
	for (size_t i = 0; i < len;) {
		if (p[i] == ' ') {
			fputs(full, stdout);
			i++;
		} else if (i + 3 <= len && memcmp(p + i, full, 3) == 0) {
			putchar(' ');
			i += 3;
		} else if (i + 3 <= len && memcmp(p + i, upper, 3) == 0) {
			fputs(lower, stdout);
			i += 3;
		} else if (i + 3 <= len && memcmp(p + i, lower, 3) == 0) {
			fputs(upper, stdout);
			i += 3;
		} else {
			putchar(p[i++]);
		}
	}
}

/* Write the label to -o, or show a text label on the terminal. */
static int handle_label(const struct ctl_args *a, const struct tpad_device *d)
{
	if (!d->qr_data)
		return 0;
	int status = 0;
	if (a->output) {
		int r = ctl_write_file(a->output, d->qr_data, d->qr_len, true);
		if (r < 0) {
			fprintf(stderr, "tpactl: cannot write %s: %s\n", a->output, strerror(-r));
			status = 1;
		} else if (!a->json) {
			printf("label       %s (%s, %zu bytes)\n", a->output, d->qr_format,
			       d->qr_len);
		}
	} else if (strcmp(d->qr_format, "text") == 0 && !a->json) {
		if (a->invert)
			print_inverted(d->qr_data, d->qr_len);
		else
			fwrite(d->qr_data, 1, d->qr_len, stdout);
	}
	return status;
}

/* Print a device record for a person. */
static void print_device(const struct tpad_device *d)
{
	const char *const keys[] = {"devEUI",	  "joinEUI", "profileId", "serial",
				    "ownerToken", "appKey",  "qrText"};
	const char *const vals[] = {d->dev_eui,	    d->join_eui, d->profile_id, d->serial,
				    d->owner_token, d->app_key,	 d->qr_text};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (vals[i][0])
			printf("%-11s %s\n", keys[i], vals[i]);
	printf("%-11s %s (%s)\n", "state", d->state, d->source);
}

/* The reply as --json prints it: {"device": {...}, "qr": {format, data}}. */
static void print_device_json(const struct tpad_device *d)
{
	json_t *dev =
	    json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "devEUI", d->dev_eui, "joinEUI",
		      d->join_eui, "profileId", d->profile_id, "ownerToken", d->owner_token,
		      "qrText", d->qr_text, "state", d->state, "source", d->source);
	if (dev && d->serial[0])
		json_object_set_new(dev, "serial", json_string(d->serial));
	if (dev && d->app_key[0])
		json_object_set_new(dev, "appKey", json_string(d->app_key));
	json_t *o = json_pack("{s:o}", "device", dev ? dev : json_object());
	if (o && d->qr_data) {
		char *b64 = base64_encode(d->qr_data, d->qr_len, NULL);
		if (b64)
			json_object_set_new(
			    o, "qr", json_pack("{s:s, s:s}", "format", d->qr_format, "data", b64));
		free(b64);
	}
	ctl_print_json(o);
	json_decref(o);
}

/* Open the station connection with libtpad-client; exit status on failure. */
static int station_open(struct ctl *c, tpad_client **ret)
{
	struct tpad_error err;
	if (tpad_client_open(c->path, CTL_CALL_TIMEOUT_MS, ret, &err) < 0) {
		/* The library's own hint is left out: the one below says more. */
		if (err.sys_errno)
			fprintf(stderr, "tpactl: cannot connect to %s: %s\n", c->path,
				strerror(err.sys_errno));
		else
			fprintf(stderr, "tpactl: %s\n", err.message);
		ctl_connect_hint(err.sys_errno, CTL_STATION, c->path, "tpad");
		return CTL_EXIT_CONNECT;
	}
	return 0;
}

/* The exit status of a failed station call, after saying why. */
static int station_error(struct ctl *c, const struct ctl_args *a, const char *method,
			 const struct tpad_error *err)
{
	if (err->code == TPAD_E_METHOD_NOT_FOUND) {
		fprintf(stderr,
			"tpactl: %s is a station method, but %s is tpad's admin socket\n"
			"Use the station socket: --socket " TPAD_DEFAULT_STATION_SOCKET
			" or set TPAD_STATION_SOCKET.\n",
			method, c->path);
		return CTL_EXIT_USAGE;
	}
	if (a->json && err->code <= TPAD_E_INVALID_PARAMETER)
		printf("{\"error\":\"%s\",\"parameters\":%s}\n", err->name, err->parameters);
	const char *short_name = strrchr(err->name, '.');
	if (err->code <= TPAD_E_INVALID_PARAMETER)
		fprintf(stderr, "tpactl: %s%s%s\n", short_name ? short_name + 1 : err->name,
			err->message[0] ? ": " : "", err->message);
	else
		fprintf(stderr, "tpactl: %s\n", err->message);
	ctl_print_error_hint(err->name);
	return 1;
}

/* ---- the path of calls that print or ask for the whole label layout ---- */

/* A JSON qr of a reply: write it to -o, or show a text label on the terminal. */
static int handle_label_json(const struct ctl_args *a, json_t *qr)
{
	const char *format = json_string_value(json_object_get(qr, "format"));
	const char *data = json_string_value(json_object_get(qr, "data"));
	if (!json_is_object(qr) || !format || !data)
		return 0;
	struct tpad_device d = {0};
	if (base64_decode(data, strlen(data), &d.qr_data, &d.qr_len) < 0) {
		fprintf(stderr, "tpactl: tpad sent a label that is not valid base64\n");
		return 1;
	}
	snprintf(d.qr_format, sizeof(d.qr_format), "%s", format);
	int status = handle_label(a, &d);
	tpad_device_clear(&d);
	return status;
}

/* Print a device record of a JSON reply for a person. */
static void print_device_obj(json_t *d)
{
	static const char *const keys[] = {"devEUI",	 "joinEUI", "profileId", "serial",
					   "ownerToken", "appKey",  "qrText"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = json_string_value(json_object_get(d, keys[i]));
		if (v)
			printf("%-11s %s\n", keys[i], v);
	}
	const char *state = json_string_value(json_object_get(d, "state"));
	const char *source = json_string_value(json_object_get(d, "source"));
	if (state)
		printf("%-11s %s (%s)\n", "state", state, source ? source : "");
}

/* Set key to a string value if it was given. */
static void set_opt(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, json_string(v));
}

/*
 * A station call with print options or the whole label (--print, --printer, --copies,
 * --label): built here as JSON and sent through libtpad-client's tpad_call_reply(), so
 * that a PrintFailed reply still shows the committed device it carries.
 */
static int station_call_raw(struct ctl *c, struct ctl_args *a, bool activate)
{
	const char *method = activate ? "io.tpad.Station.Activate" : "io.tpad.Station.Lookup";
	json_t *params = json_object();
	set_opt(params, "devEUI", a->dev_eui);
	if (activate) {
		set_opt(params, "joinEUI", a->join_eui);
		set_opt(params, "tkmInfo", a->tkm_info);
		set_opt(params, "appKey", a->app_key);
		set_opt(params, "serial", a->serial);
		set_opt(params, "profileId", a->profile_id);
		if (a->generate_app_key)
			json_object_set_new(params, "generateAppKey", json_true());
	}
	const char *format = label_format(a);
	json_t *qr = ctl_qr_options(a, format);
	if (qr)
		json_object_set_new(params, "qr", qr);
	json_t *print = ctl_print_options(a);
	bool printing = print != NULL;
	if (print)
		json_object_set_new(params, "print", print);
	char *ptext = json_dumps(params, JSON_COMPACT);
	json_decref(params);
	if (!ptext) {
		fprintf(stderr, "tpactl: out of memory\n");
		return 1;
	}
	tpad_client *tc;
	int r = station_open(c, &tc);
	if (r) {
		free(ptext);
		return r;
	}
	char *reply_text = NULL;
	struct tpad_error err;
	r = tpad_call_reply(tc, method, ptext, &reply_text, &err);
	tpad_client_close(tc);
	free(ptext);
	if (r < 0)
		return station_error(c, a, method, &err);
	json_t *reply = json_loads(reply_text, 0, NULL);
	free(reply_text);
	if (!reply) {
		fprintf(stderr, "tpactl: tpad's reply could not be read\n");
		return 1;
	}
	const char *error = json_string_value(json_object_get(reply, "error"));
	bool print_failed = error && strcmp(error, "io.tpad.Station.PrintFailed") == 0;
	if (error && !print_failed) {
		int st = ctl_wrong_socket(c, method, reply);
		if (!st) {
			st = 1;
			if (a->json)
				ctl_print_json(reply);
			ctl_print_error(reply);
		}
		json_decref(reply);
		return st;
	}
	json_t *p = json_object_get(reply, "parameters");
	int status;
	if (print_failed) {
		/* The device is committed and carried by the error: show it, then why. */
		if (a->json)
			ctl_print_json(reply);
		else
			print_device_obj(json_object_get(p, "device"));
		status = handle_label_json(a, json_object_get(p, "qr"));
		const char *printer = json_string_value(json_object_get(p, "printer"));
		const char *reason = json_string_value(json_object_get(p, "reason"));
		json_t *dev = json_object_get(p, "device");
		const char *state = json_string_value(json_object_get(dev, "state"));
		const char *eui = json_string_value(json_object_get(dev, "devEUI"));
		fprintf(stderr, "tpactl: PrintFailed: printer=%s, reason=%s\n",
			printer ? printer : "?", reason ? reason : "?");
		/* Whether to activate again is the question: no, only the label is missing. */
		fprintf(stderr,
			"The device is %s and its token is valid; only the label may be missing. "
			"If it is, once the printer is fixed: tpactl lookup --dev-eui %s --printer "
			"%s\n",
			state ? state : "committed", eui ? eui : a->dev_eui,
			printer ? printer : "NAME");
		json_decref(reply);
		return status ? status : 1;
	}
	if (a->json) {
		ctl_print_json(p ? p : json_object());
	} else {
		print_device_obj(json_object_get(p, "device"));
		json_t *pr = json_object_get(p, "print");
		if (pr)
			printf("%-11s %s on %s (job %lld)\n", "print",
			       json_string_value(json_object_get(pr, "state")),
			       json_string_value(json_object_get(pr, "printer")),
			       (long long)json_integer_value(json_object_get(pr, "job")));
	}
	status = handle_label_json(a, json_object_get(p, "qr"));
	if (printing && !json_is_object(json_object_get(p, "print"))) {
		/* A tpad older than tpactl ignores print (unknown parameters are ignored). */
		fprintf(stderr,
			"tpactl: tpad did not print the label: its reply says nothing of a print "
			"job, so it is older than this tpactl and does not print; the device is "
			"%s\nPrint it from a tpad that prints, or upgrade this one.\n",
			json_string_value(json_object_get(json_object_get(p, "device"), "state")));
		status = status ? status : 1;
	}
	json_decref(reply);
	return status;
}

/* Run a station call through libtpad-client and present its device and label. */
static int station_run(struct ctl *c, struct ctl_args *a, bool activate)
{
	if (a->print || a->printer || a->copies || a->label || a->code)
		return station_call_raw(c, a, activate);
	const char *format = label_format(a);
	struct tpad_label label = {.format = format,
				   .scale = a->scale,
				   .margin = a->margin_set ? a->margin : -1,
				   .ec_level = a->ec_level};
	tpad_client *tc;
	int r = station_open(c, &tc);
	if (r)
		return r;
	struct tpad_device d;
	struct tpad_error err;
	if (activate) {
		struct tpad_activation act = {.dev_eui = a->dev_eui,
					      .tkm_info = a->tkm_info,
					      .app_key = a->app_key,
					      .generate_app_key = a->generate_app_key,
					      .join_eui = a->join_eui,
					      .profile_id = a->profile_id,
					      .serial = a->serial,
					      .label = label};
		r = tpad_activate(tc, &act, &d, &err);
	} else {
		r = tpad_lookup(tc, a->dev_eui, &label, &d, &err);
	}
	tpad_client_close(tc);
	if (r < 0)
		return station_error(
		    c, a, activate ? "io.tpad.Station.Activate" : "io.tpad.Station.Lookup", &err);
	if (a->json)
		print_device_json(&d);
	else
		print_device(&d);
	int status = handle_label(a, &d);
	tpad_device_clear(&d);
	return status;
}

int ctl_activate(struct ctl *c, struct ctl_args *a)
{
	return station_run(c, a, true);
}

int ctl_lookup(struct ctl *c, struct ctl_args *a)
{
	return station_run(c, a, false);
}
