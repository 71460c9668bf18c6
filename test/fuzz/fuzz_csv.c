/*
 * Fuzz target for the CSV reader: reads every record of the input, checks the limits and
 * line numbers, and that each record written back fully quoted reads back the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Write rec fully quoted into out; returns the length. */
static size_t encode(const struct csv_record *rec, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < rec->n; i++) {
		if (i)
			out[o++] = ',';
		out[o++] = '"';
		for (size_t k = 0; k < rec->len[i]; k++) {
			if (rec->field[i][k] == '"')
				out[o++] = '"';
			out[o++] = rec->field[i][k];
		}
		out[o++] = '"';
	}
	out[o++] = '\n';
	return o;
}

/* Check that the fully quoted text of rec reads back as rec. */
static void round_trip(const struct csv_record *rec)
{
	static char text[CSV_MAX_FIELDS * (2 * CSV_MAX_FIELD + 3) + 1];
	size_t len = encode(rec, text);
	struct csv *c = csv_new(text, len);
	if (!c)
		return;
	struct csv_record back;
	struct csv_error err;
	if (csv_next(c, &back, &err) != 1 || back.n != rec->n || back.line != 1)
		abort();
	for (size_t i = 0; i < rec->n; i++)
		if (back.len[i] != rec->len[i] ||
		    memcmp(back.field[i], rec->field[i], rec->len[i]) != 0)
			abort();
	if (csv_next(c, &back, &err) != 0)
		abort();
	csv_free(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned lines = 1;
	for (size_t i = 0; i < size; i++)
		lines += data[i] == '\n';
	struct csv *c = csv_new((const char *)data, size);
	if (!c)
		return 0;
	/* As tpactl import reads: the header decides between ',' and ';'. */
	csv_set_separator(c, csv_sniff_separator((const char *)data, size));
	struct csv_record rec;
	struct csv_error err;
	unsigned last = 0;
	size_t records = 0;
	int r;
	while ((r = csv_next(c, &rec, &err)) != 0) {
		unsigned line = r > 0 ? rec.line : err.line;
		if (line < 1 || line > lines || line < last)
			abort();
		last = line;
		/* Every call consumes at least one line or ends the input. */
		if (++records > size + 1)
			abort();
		if (r < 0) {
			if (!err.message[0] || strlen(err.message) >= CSV_ERROR_MAX)
				abort();
			continue;
		}
		if (rec.n < 1 || rec.n > CSV_MAX_FIELDS)
			abort();
		for (size_t i = 0; i < rec.n; i++)
			if (rec.len[i] > CSV_MAX_FIELD || strlen(rec.field[i]) != rec.len[i])
				abort();
		round_trip(&rec);
	}
	csv_free(c);
	return 0;
}
