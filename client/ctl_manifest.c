/* ctl_manifest: tpactl import --manifest: a Microchip manifest verified and mapped to rows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "ctl.h"
#include "hex.h"
#include "manifest.h"

/* The import.* settings of tpad (from Status) that a manifest import needs. */
struct import_settings {
	char signer[1024];
	char tkm_prefix[8];
	char dev_eui_attr[64];
};

/* Ask tpad for its import.manifest-signer, import.tkm-prefix and import.manifest-dev-eui. */
static int settings_from_status(struct ctl *c, struct import_settings *s)
{
	json_t *reply = NULL;
	int r = ctl_call(c, "io.tpad.Admin.Status", NULL, false, &reply);
	if (r != 0)
		return r;
	json_t *imp = json_object_get(reply, "import");
	const char *v;
	if ((v = json_string_value(json_object_get(imp, "manifestSigner"))))
		snprintf(s->signer, sizeof(s->signer), "%s", v);
	if ((v = json_string_value(json_object_get(imp, "tkmPrefix"))))
		snprintf(s->tkm_prefix, sizeof(s->tkm_prefix), "%s", v);
	if ((v = json_string_value(json_object_get(imp, "manifestDevEui"))))
		snprintf(s->dev_eui_attr, sizeof(s->dev_eui_attr), "%s", v);
	json_decref(reply);
	return 0;
}

/* The serial -> DevEUI map of --dev-eui-map (serial,devEUI per line; a header is allowed). */
struct eui_map {
	char **serial, **dev_eui;
	size_t n;
};

static void map_free(struct eui_map *m)
{
	for (size_t i = 0; i < m->n; i++) {
		free(m->serial[i]);
		free(m->dev_eui[i]);
	}
	free(m->serial);
	free(m->dev_eui);
}

/* Read the CSV map; prints each bad line, returns the number of errors (or -ENOMEM). */
static int map_load(const char *path, struct eui_map *m)
{
	char *data;
	size_t len;
	int r = ctl_read_file(path, &data, &len);
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot read %s: %s\n", path, strerror(-r));
		return 1;
	}
	struct csv *csv = csv_new(data, len);
	struct csv_record rec;
	struct csv_error err;
	int bad = 0;
	while (csv && (r = csv_next(csv, &rec, &err)) != 0) {
		if (r < 0) {
			fprintf(stderr, "%s:%u: %s\n", path, err.line, err.message);
			bad++;
			continue;
		}
		if (rec.n != 2) {
			fprintf(stderr, "%s:%u: want serial,devEUI\n", path, rec.line);
			bad++;
			continue;
		}
		if (rec.line == 1 && !hex_valid_any(rec.field[1]))
			continue; /* a header */
		if (!hex_valid(rec.field[0], rec.len[0]) || rec.len[0] != 18 ||
		    !hex_valid(rec.field[1], 16) || rec.len[1] != 16) {
			fprintf(stderr,
				"%s:%u: want an 18-hex-digit serial (uniqueId) and a 16-hex-digit "
				"DevEUI\n",
				path, rec.line);
			bad++;
			continue;
		}
		char **ns = realloc(m->serial, (m->n + 1) * sizeof(*ns));
		if (ns)
			m->serial = ns;
		char **nd = realloc(m->dev_eui, (m->n + 1) * sizeof(*nd));
		if (nd)
			m->dev_eui = nd;
		if (!ns || !nd) {
			bad = -ENOMEM;
			break;
		}
		m->serial[m->n] = strdup(rec.field[0]);
		m->dev_eui[m->n] = strdup(rec.field[1]);
		m->n++;
		if (!m->serial[m->n - 1] || !m->dev_eui[m->n - 1]) {
			bad = -ENOMEM;
			break;
		}
	}
	if (!csv)
		bad = -ENOMEM;
	csv_free(csv);
	free(data);
	return bad;
}

int ctl_manifest_rows(struct ctl *c, struct ctl_args *a, void **ret_rows, size_t *ret_n,
		      size_t row_size)
{
	struct import_settings set = {.tkm_prefix = "3121"};
	struct eui_map map = {0};
	struct manifest_result res = {0};
	char *text = NULL, *signer = NULL;
	size_t len, slen;
	int status = 1;

	if (settings_from_status(c, &set) != 0)
		return 1;
	const char *signer_path = a->signer ? a->signer : set.signer[0] ? set.signer : NULL;
	if (!signer_path) {
		fprintf(stderr, "tpactl: no signer certificate: give --signer CERT.pem or set "
				"import.manifest-signer in tpad.conf\n");
		return 2;
	}
	int r = ctl_read_file(signer_path, &signer, &slen);
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot read the signer %s: %s\n", signer_path,
			strerror(-r));
		goto out;
	}
	if (a->dev_eui_map && (r = map_load(a->dev_eui_map, &map)) != 0) {
		if (r > 0)
			fprintf(stderr, "tpactl: %d error%s in %s; nothing was imported\n", r,
				r == 1 ? "" : "s", a->dev_eui_map);
		goto out;
	}
	r = ctl_read_file(a->manifest, &text, &len);
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot read %s: %s\n", a->manifest, strerror(-r));
		goto out;
	}
	struct manifest_options o = {
	    .signer_pem = signer,
	    .tkm_prefix = set.tkm_prefix,
	    .dev_eui_attr = set.dev_eui_attr[0] ? set.dev_eui_attr : NULL,
	    .map_serial = (const char *const *)map.serial,
	    .map_dev_eui = (const char *const *)map.dev_eui,
	    .map_n = map.n,
	};
	r = manifest_read(text, len, &o, &res);
	if (r == -ENOMEM) {
		fprintf(stderr, "tpactl: out of memory\n");
		goto out;
	}
	if (r < 0) {
		fprintf(stderr, "tpactl: %s: %s\n", a->manifest, res.fatal);
		goto out;
	}
	if (res.n_errors) {
		for (size_t i = 0; i < res.n_errors; i++)
			fprintf(stderr, "%s: entry %zu (uniqueId %s): %s\n", a->manifest,
				res.errors[i].index, res.errors[i].unique_id, res.errors[i].reason);
		fprintf(stderr, "tpactl: %zu bad entr%s in %s; nothing was imported\n",
			res.n_errors, res.n_errors == 1 ? "y" : "ies", a->manifest);
		goto out;
	}
	if (!res.n_rows) {
		fprintf(stderr, "tpactl: %s holds no entries\n", a->manifest);
		goto out;
	}
	void *rows = calloc(res.n_rows, row_size);
	if (!rows) {
		fprintf(stderr, "tpactl: out of memory\n");
		goto out;
	}
	/* "line" of a manifest row is its entry index + 1, so failure files name entries. */
	for (size_t i = 0; i < res.n_rows; i++)
		ctl_import_row_set(rows, i, (unsigned)res.rows[i].index + 1, res.rows[i].dev_eui,
				   res.rows[i].tkm_info);
	*ret_rows = rows;
	*ret_n = res.n_rows;
	status = 0;
out:
	manifest_result_free(&res);
	map_free(&map);
	free(text);
	free(signer);
	return status;
}
