/* ctl_station: tpactl's station commands, activate and lookup, and label files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base64.h"
#include "ctl.h"

/* The label format: --format, else from -o's extension, else none. */
static const char *label_format(const struct ctl_args *a)
{
	if (a->format)
		return a->format;
	if (!a->output)
		return NULL;
	const char *dot = strrchr(a->output, '.');
	if (dot && strcmp(dot, ".svg") == 0)
		return "svg";
	if (dot && strcmp(dot, ".zpl") == 0)
		return "zpl";
	if (dot && strcmp(dot, ".txt") == 0)
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

/* Handle the reply's qr: write it to -o, or show a text label on the terminal. */
static int handle_label(const struct ctl_args *a, json_t *qr)
{
	if (!json_is_object(qr))
		return 0;
	const char *format = json_string_value(json_object_get(qr, "format"));
	const char *data = json_string_value(json_object_get(qr, "data"));
	if (!format || !data)
		return 0;
	uint8_t *bytes;
	size_t len;
	if (base64_decode(data, strlen(data), &bytes, &len) < 0) {
		fprintf(stderr, "tpactl: tpad sent a label that is not valid base64\n");
		return 1;
	}
	int status = 0;
	if (a->output) {
		int r = ctl_write_file(a->output, bytes, len, true);
		if (r < 0) {
			fprintf(stderr, "tpactl: cannot write %s: %s\n", a->output, strerror(-r));
			status = 1;
		} else if (!a->json) {
			printf("label       %s (%s, %zu bytes)\n", a->output, format, len);
		}
	} else if (strcmp(format, "text") == 0 && !a->json) {
		if (a->invert)
			print_inverted(bytes, len);
		else
			fwrite(bytes, 1, len, stdout);
	}
	free(bytes);
	return status;
}

/* Print a device record for a person. */
static void print_device(json_t *d)
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
		printf("%-11s %s%s%s%s\n", "state", state, source ? " (" : "", source ? source : "",
		       source ? ")" : "");
}

/* Run a station call and present its device and label. */
static int station_call(struct ctl *c, struct ctl_args *a, const char *method, json_t *params)
{
	const char *format = label_format(a);
	json_t *qr = format ? ctl_qr_options(a, format) : NULL;
	if (qr)
		json_object_set_new(params, "qr", qr);
	json_t *p;
	int r = ctl_call(c, method, params, a->json, &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	if (a->json)
		ctl_print_json(p);
	else
		print_device(json_object_get(p, "device"));
	int status = handle_label(a, json_object_get(p, "qr"));
	json_decref(p);
	return status;
}

/* Set key to a string value if it was given. */
static void set_opt(json_t *o, const char *key, const char *v)
{
	if (v)
		json_object_set_new(o, key, json_string(v));
}

int ctl_activate(struct ctl *c, struct ctl_args *a)
{
	if (!a->dev_eui) {
		fprintf(stderr, "tpactl: activate needs --dev-eui\nTry 'tpactl help activate'.\n");
		return CTL_EXIT_USAGE;
	}
	int keys = !!a->tkm_info + !!a->app_key + !!a->generate_app_key;
	if (keys > 1) {
		fprintf(stderr, "tpactl: give at most one of --tkm-info, --app-key and "
				"--generate-app-key\nTry 'tpactl help activate'.\n");
		return CTL_EXIT_USAGE;
	}
	json_t *p = json_object();
	set_opt(p, "devEUI", a->dev_eui);
	set_opt(p, "joinEUI", a->join_eui);
	set_opt(p, "tkmInfo", a->tkm_info);
	set_opt(p, "appKey", a->app_key);
	set_opt(p, "serial", a->serial);
	set_opt(p, "profileId", a->profile_id);
	if (a->generate_app_key)
		json_object_set_new(p, "generateAppKey", json_true());
	return station_call(c, a, "io.tpad.Station.Activate", p);
}

int ctl_lookup(struct ctl *c, struct ctl_args *a)
{
	if (!a->dev_eui) {
		fprintf(stderr, "tpactl: lookup needs --dev-eui\nTry 'tpactl help lookup'.\n");
		return CTL_EXIT_USAGE;
	}
	json_t *p = json_object();
	set_opt(p, "devEUI", a->dev_eui);
	return station_call(c, a, "io.tpad.Station.Lookup", p);
}
