/* ctl_admin: tpactl's device commands import, export, devices and device, with progress bars. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "csv.h"
#include "ctl.h"
#include "hex.h"

#define IMPORT_CHUNK_ROWS 1000	       /* rows per Import call, as the protocol allows */
#define IMPORT_CHUNK_BYTES (48u << 10) /* and well under the default limits.max-message */
#define IMPORT_MAX_FILE (1u << 30)
#define SERIAL_MAX 64
#define LIST_PAGE 1000
#define BAR_WIDTH 24
#define REDRAW_US 100000u


enum column {
	COL_DEV_EUI,
	COL_JOIN_EUI,
	COL_TKM_INFO,
	COL_APP_KEY,
	COL_SERIAL,
	COL_PROFILE_ID,
	N_COLUMNS,
};

static const char *const column_names[N_COLUMNS] = {"devEUI", "joinEUI", "tkmInfo",
						    "appKey", "serial",	 "profileId"};

/* One validated row of an import file; hex fields upper-case, "" when absent. */
struct row {
	unsigned line;
	char dev_eui[17];
	char join_eui[17];
	char tkm_info[21];
	char app_key[33];
	char serial[SERIAL_MAX + 1];
	char profile_id[9];
};

/* One problem of an import file. */
struct file_error {
	unsigned line;
	size_t seq; /* the order it was found in */
	char *message;
};

struct file_errors {
	struct file_error *v;
	size_t n, cap;
};

/* ---- small helpers ---- */

/* Microseconds on the monotonic clock. */
static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Record an error on line (0: the whole file). */
__attribute__((format(printf, 3, 4))) static void add_error(struct file_errors *e, unsigned line,
							    const char *fmt, ...)
{
	if (e->n == e->cap) {
		size_t cap = e->cap ? 2 * e->cap : 64;
		struct file_error *v = realloc(e->v, cap * sizeof(*v));
		if (!v)
			return;
		e->v = v;
		e->cap = cap;
	}
	va_list ap;
	va_start(ap, fmt);
	char *m = NULL;
	if (vasprintf(&m, fmt, ap) < 0)
		m = NULL;
	va_end(ap);
	if (m) {
		e->v[e->n] = (struct file_error){line, e->n, m};
		e->n++;
	}
}

/* Order errors by line, keeping the order of errors on the same line. */
static int cmp_error(const void *a, const void *b)
{
	const struct file_error *x = a, *y = b;
	if (x->line != y->line)
		return x->line < y->line ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Print every error as FILE:LINE: message, sorted by line, and free them. */
static void print_errors(struct file_errors *e, const char *path)
{
	qsort(e->v, e->n, sizeof(*e->v), cmp_error);
	for (size_t i = 0; i < e->n; i++) {
		if (e->v[i].line)
			fprintf(stderr, "%s:%u: %s\n", path, e->v[i].line, e->v[i].message);
		else
			fprintf(stderr, "%s: %s\n", path, e->v[i].message);
		free(e->v[i].message);
	}
	free(e->v);
	e->v = NULL;
	e->n = e->cap = 0;
}

/* Read a whole file into a malloc'd buffer. */
static int read_file(const char *path, char **ret, size_t *ret_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = 0, cap = 1 << 16;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf) {
			close(fd);
			return -ENOMEM;
		}
		if (len == cap) {
			if (cap >= IMPORT_MAX_FILE) {
				free(buf);
				close(fd);
				return -EFBIG;
			}
			cap *= 2;
			char *nb = realloc(buf, cap);
			if (!nb)
				free(buf);
			buf = nb;
			continue;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			free(buf);
			close(fd);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	*ret = buf;
	*ret_len = len;
	return 0;
}

/* Write s as one CSV field to f, quoted when it holds a comma, quote or line end. */
static void csv_put(FILE *f, const char *s)
{
	if (!strpbrk(s, ",\"\r\n")) {
		fputs(s, f);
		return;
	}
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"')
			fputc('"', f);
		fputc(*s, f);
	}
	fputc('"', f);
}

/* Copy a field without the spaces and tabs around it into out (size n); false if too long. */
static bool trimmed(const char *s, size_t len, char *out, size_t n)
{
	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len >= n)
		return false;
	memcpy(out, s, len);
	out[len] = '\0';
	return true;
}

/* Seconds as H:MM:SS or M:SS. */
static void format_duration(double s, char *buf, size_t len)
{
	if (s < 0 || s > 360000)
		s = 0;
	unsigned long t = (unsigned long)(s + 0.5);
	if (t >= 3600)
		snprintf(buf, len, "%lu:%02lu:%02lu", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(buf, len, "%lu:%02lu", t / 60, t % 60);
}

/* ---- progress bar ---- */

struct bar {
	bool on; /* stderr is a terminal and --json is off */
	const char *unit;
	uint64_t started_us, drawn_us;
	size_t total;
	bool shown;
};

/* Draw done/total with rate and ETA on one line of stderr; force skips the rate limit. */
static void bar_draw(struct bar *b, size_t done, bool force)
{
	if (!b->on)
		return;
	uint64_t now = now_us();
	if (!force && b->shown && now - b->drawn_us < REDRAW_US)
		return;
	b->drawn_us = now;
	b->shown = true;
	double secs = (double)(now - b->started_us) / 1e6;
	double rate = secs > 0.05 ? (double)done / secs : 0;
	size_t total = b->total > done ? b->total : done;
	unsigned fill = total ? (unsigned)((double)done / (double)total * BAR_WIDTH) : 0;
	char bar[BAR_WIDTH + 1], eta[32] = "--:--";
	for (unsigned i = 0; i < BAR_WIDTH; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[BAR_WIDTH] = '\0';
	if (rate > 0)
		format_duration((double)(total - done) / rate, eta, sizeof(eta));
	fprintf(stderr, "\r[%s] %zu/%zu %s (%3.0f%%)  %.0f %s/s  ETA %s\033[K", bar, done, total,
		b->unit, total ? 100.0 * (double)done / (double)total : 100.0, rate, b->unit, eta);
	fflush(stderr);
}

/* Clear the bar's line. */
static void bar_clear(struct bar *b)
{
	if (b->on && b->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	b->shown = false;
}

/* Read a whole file, NUL-terminated (the NUL not counted), for the other commands. */
int ctl_read_file(const char *path, char **ret, size_t *ret_len)
{
	char *buf;
	size_t len;
	int r = read_file(path, &buf, &len);
	if (r < 0)
		return r;
	char *nb = realloc(buf, len + 1);
	if (!nb) {
		free(buf);
		return -ENOMEM;
	}
	nb[len] = '\0';
	*ret = nb;
	*ret_len = len;
	return 0;
}

/* ---- import: reading and checking the file ---- */

/* Whether s is a serial number the TR005 label can carry. */
static bool serial_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > SERIAL_MAX)
		return false;
	for (; *s; s++)
		if (!((*s >= '0' && *s <= '9') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= 'a' && *s <= 'z') || strchr("$%*+-./", *s)))
			return false;
	return true;
}

/* Map the header record to columns; errors for unknown, repeated and missing names. */
static bool read_header(const struct csv_record *rec, int map[CSV_MAX_FIELDS], bool ignore_unknown,
			char sep, struct file_errors *e)
{
	bool seen[N_COLUMNS] = {false}, ok = true;
	for (size_t i = 0; i < rec->n; i++) {
		char name[64];
		map[i] = -1;
		if (!trimmed(rec->field[i], rec->len[i], name, sizeof(name)))
			name[0] = '\0';
		for (int k = 0; k < N_COLUMNS; k++)
			if (strcasecmp(name, column_names[k]) == 0)
				map[i] = k;
		if (map[i] < 0 && name[0] && hex_valid_any(name) && strlen(name) == 16) {
			add_error(e, rec->line,
				  "no header: the first line must name the columns, e.g. "
				  "devEUI,joinEUI,tkmInfo,appKey,serial,profileId");
			return false;
		}
		if (map[i] < 0 && ignore_unknown) {
			fprintf(stderr, "tpactl: line %u: ignoring column '%s'\n", rec->line, name);
			continue;
		}
		if (map[i] < 0) {
			bool other = sep == ',' && strchr(name, ';');
			add_error(e, rec->line,
				  "unknown column '%s' (the columns are devEUI, joinEUI, tkmInfo, "
				  "appKey, serial and profileId%s)",
				  name,
				  other ? "; the file looks ';'-separated but its header has commas "
					  "too: use one separator"
					: "; --ignore-unknown-columns skips others");
			return false;
		}
		if (seen[map[i]]) {
			add_error(e, rec->line, "column %s named twice", column_names[map[i]]);
			ok = false;
		}
		seen[map[i]] = true;
	}
	if (!seen[COL_DEV_EUI]) {
		add_error(e, rec->line, "the header has no devEUI column");
		ok = false;
	}
	return ok;
}

/* Check one hex field of a row; copies it upper-cased into out (size digits + 1). */
static bool check_hex(const char *v, size_t digits, const char *name, unsigned line, char *out,
		      struct file_errors *e)
{
	if (!v[0]) {
		out[0] = '\0';
		return true;
	}
	if (!hex_valid(v, digits) && strcmp(name, "appKey") == 0) { /* a secret: not echoed */
		add_error(e, line, "appKey is not %zu hexadecimal digits; it has %zu characters "
			  "(a key is not shown)", digits, strlen(v));
		return false;
	}
	if (!hex_valid(v, digits)) {
		add_error(e, line, "%s '%s' is not %zu hexadecimal digits", name, v, digits);
		return false;
	}
	hex_upper(out, v, digits);
	return true;
}

/* Check one data record against the header; fills *ret when it is good. */
static bool read_row(const struct csv_record *rec, const int map[CSV_MAX_FIELDS], size_t ncols,
		     bool generate, struct row *ret, struct file_errors *e)
{
	char v[N_COLUMNS][CSV_MAX_FIELD + 1];
	memset(v, 0, sizeof(v[0]) * N_COLUMNS);
	struct row row = {.line = rec->line};
	bool ok = true;
	if (rec->n != ncols) {
		add_error(e, rec->line, "%zu field%s where the header has %zu", rec->n,
			  rec->n == 1 ? "" : "s", ncols);
		return false;
	}
	for (size_t i = 0; i < rec->n; i++)
		if (map[i] >= 0)
			trimmed(rec->field[i], rec->len[i], v[map[i]], sizeof(v[0]));
	if (!v[COL_DEV_EUI][0]) {
		add_error(e, rec->line, "no devEUI");
		ok = false;
	} else {
		ok &= check_hex(v[COL_DEV_EUI], 16, "devEUI", rec->line, row.dev_eui, e);
	}
	ok &= check_hex(v[COL_JOIN_EUI], 16, "joinEUI", rec->line, row.join_eui, e);
	ok &= check_hex(v[COL_TKM_INFO], 20, "tkmInfo", rec->line, row.tkm_info, e);
	ok &= check_hex(v[COL_APP_KEY], 32, "appKey", rec->line, row.app_key, e);
	ok &= check_hex(v[COL_PROFILE_ID], 8, "profileId", rec->line, row.profile_id, e);
	if (v[COL_SERIAL][0]) {
		if (serial_valid(v[COL_SERIAL])) {
			snprintf(row.serial, sizeof(row.serial), "%s", v[COL_SERIAL]);
		} else {
			add_error(e, rec->line,
				  "serial '%s' must be 1 to %d of 0-9 A-Z a-z $ %% * + - . /",
				  v[COL_SERIAL], SERIAL_MAX);
			ok = false;
		}
	}
	if (v[COL_TKM_INFO][0] && v[COL_APP_KEY][0]) {
		add_error(e, rec->line, "both tkmInfo and appKey: give only one");
		ok = false;
	} else if (!v[COL_TKM_INFO][0] && !v[COL_APP_KEY][0] && !generate) {
		add_error(
		    e, rec->line,
		    "neither tkmInfo nor appKey (use --generate-appkeys to have tpad generate "
		    "AppKeys)");
		ok = false;
	}
	explicit_bzero(v[COL_APP_KEY], sizeof(v[0]));
	if (ok)
		*ret = row;
	explicit_bzero(&row, sizeof(row));
	return ok;
}

/* The 64-bit value of an upper-case DevEUI. */
static uint64_t eui_value(const char *s)
{
	uint64_t v = 0;
	for (int i = 0; i < 16; i++)
		v = v << 4 | (uint64_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'A' + 10);
	return v;
}

/* Report every DevEUI that appears on more than one line. */
static void check_duplicates(const struct row *rows, size_t n, struct file_errors *e)
{
	size_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	struct slot {
		uint64_t eui;
		unsigned line; /* 0: empty */
	} *t = calloc(cap, sizeof(*t));
	if (!t) {
		add_error(e, 0, "out of memory checking for duplicate devEUIs");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		uint64_t v = eui_value(rows[i].dev_eui);
		size_t h = (size_t)((v * 0x9E3779B97F4A7C15ull) >> 20) & (cap - 1);
		while (t[h].line && t[h].eui != v)
			h = (h + 1) & (cap - 1);
		if (t[h].line)
			add_error(e, rows[i].line, "duplicate devEUI %s (also on line %u)",
				  rows[i].dev_eui, t[h].line);
		else
			t[h] = (struct slot){v, rows[i].line};
	}
	free(t);
}

/* Read and check the whole file; every problem goes to e. */
static int load_rows(const char *path, bool generate, bool ignore_unknown, struct row **ret,
		     size_t *ret_n, struct file_errors *e)
{
	char *data = NULL;
	size_t len = 0;
	int r = read_file(path, &data, &len);
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot read %s: %s\n", path, strerror(-r));
		return r;
	}
	/* "Unicode text" from Excel or Notepad: UTF-16, a BOM or a NUL in every other byte. */
	if (len >= 2 && (memcmp(data, "\xFF\xFE", 2) == 0 || memcmp(data, "\xFE\xFF", 2) == 0 ||
			 (len >= 4 && (!data[1] || !data[0]) && (!data[3] || !data[2])))) {
		add_error(e, 1, "the file is UTF-16 text: save it as CSV UTF-8 (or convert it: "
				"iconv -f UTF-16 -t UTF-8)");
		explicit_bzero(data, len);
		free(data);
		return -EINVAL;
	}
	struct csv *csv = csv_new(data, len);
	/* Excel writes ';' where the decimal separator is a comma (most of Europe). */
	char sep = csv_sniff_separator(data, len);
	if (csv)
		csv_set_separator(csv, sep);
	struct row *rows = NULL;
	size_t n = 0, cap = 0;
	int map[CSV_MAX_FIELDS];
	size_t ncols = 0;
	bool header = false, header_ok = false;
	struct csv_record rec;
	struct csv_error err;
	while (csv && (r = csv_next(csv, &rec, &err)) != 0) {
		if (r < 0) {
			add_error(e, err.line, "%s", err.message);
			if (!header) {
				header = true;
				add_error(e, err.line, "cannot read the header");
			}
			continue;
		}
		if (!header) {
			header = true;
			header_ok = read_header(&rec, map, ignore_unknown, sep, e);
			ncols = rec.n;
			if (!header_ok)
				break;
			continue;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			struct row *nr = realloc(rows, cap * sizeof(*nr));
			if (!nr) {
				add_error(e, rec.line, "out of memory");
				break;
			}
			rows = nr;
		}
		if (read_row(&rec, map, ncols, generate, &rows[n], e))
			n++;
	}
	if (!csv)
		add_error(e, 0, "out of memory");
	else if (!header)
		add_error(e, 1,
			  "no header: the first line must name the columns, e.g. "
			  "devEUI,joinEUI,tkmInfo,appKey,serial,profileId");
	csv_free(csv);
	if (data)
		explicit_bzero(data, len); /* it may hold AppKeys */
	free(data);
	if (header_ok)
		check_duplicates(rows, n, e);
	if (e->n) {
		if (rows)
			explicit_bzero(rows, n * sizeof(*rows));
		free(rows);
		return -EINVAL;
	}
	*ret = rows;
	*ret_n = n;
	return 0;
}

/* Fill row i of a manifest import (used by ctl_manifest.c, which cannot see struct row). */
void ctl_import_row_set(void *rows, size_t i, unsigned line, const char *dev_eui,
			const char *tkm_info)
{
	struct row *r = &((struct row *)rows)[i];
	memset(r, 0, sizeof(*r));
	r->line = line;
	snprintf(r->dev_eui, sizeof(r->dev_eui), "%s", dev_eui);
	snprintf(r->tkm_info, sizeof(r->tkm_info), "%s", tkm_info);
}

/* ---- import: sending ---- */

static volatile sig_atomic_t interrupted;

/* Ctrl-C: the first asks to stop after the current call; the second leaves at once. */
static void on_sigint(int sig)
{
	static const char first[] = "\ntpactl: stopping: waiting for the rows in flight (Ctrl-C "
				    "again to quit at once)\n";
	static const char second[] = "\ntpactl: interrupted; run the same command again to "
				     "finish the import\n";
	if (interrupted) {
		ssize_t n = write(STDERR_FILENO, second, sizeof(second) - 1);
		(void)n;
		_exit(CTL_EXIT_INTERRUPTED);
	}
	interrupted = 1;
	ssize_t n = write(STDERR_FILENO, first, sizeof(first) - 1);
	(void)n;
}

/* Set key to s in o unless s is empty. */
static void set_nonempty(json_t *o, const char *key, const char *s)
{
	if (s[0])
		json_object_set_new(o, key, json_string(s));
}

/* The rows of the next call, from *next on; advances *next. */
static json_t *build_chunk(const struct row *rows, size_t n, size_t *next)
{
	json_t *arr = json_array();
	size_t bytes = 0;
	while (arr && *next < n && json_array_size(arr) < IMPORT_CHUNK_ROWS) {
		const struct row *r = &rows[*next];
		size_t est = 40 + strlen(r->join_eui) + strlen(r->tkm_info) + strlen(r->app_key) +
			     strlen(r->serial) + strlen(r->profile_id) + 16 * 5;
		if (json_array_size(arr) && bytes + est > IMPORT_CHUNK_BYTES)
			break;
		bytes += est;
		json_t *o =
		    json_pack("{s:I, s:s}", "line", (json_int_t)r->line, "devEUI", r->dev_eui);
		if (!o) {
			json_decref(arr);
			return NULL;
		}
		set_nonempty(o, "joinEUI", r->join_eui);
		set_nonempty(o, "tkmInfo", r->tkm_info);
		set_nonempty(o, "appKey", r->app_key);
		set_nonempty(o, "serial", r->serial);
		set_nonempty(o, "profileId", r->profile_id);
		json_array_append_new(arr, o);
		(*next)++;
	}
	return arr;
}

/* Totals over the calls of one import. */
struct import_totals {
	size_t total, done, issued, skipped, failed;
	json_t *failures;
};

/* The failures file: --failures, else FILE.failures.csv next to the input. */
static char *failures_path(const struct ctl_args *a, const char *input)
{
	if (a->failures)
		return strdup(a->failures);
	size_t n = strlen(input);
	if (n > 4 && strcasecmp(input + n - 4, ".csv") == 0)
		n -= 4;
	char *p = NULL;
	if (asprintf(&p, "%.*s.failures.csv", (int)n, input) < 0)
		return NULL;
	return p;
}

/* Write the failed rows as CSV (line,devEUI,reason). */
static int write_failures(const char *path, json_t *failures)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return -ENOMEM;
	fputs("line,devEUI,reason\n", f);
	size_t i;
	json_t *v;
	json_array_foreach(failures, i, v)
	{
		fprintf(f, "%lld,", (long long)json_integer_value(json_object_get(v, "line")));
		const char *eui = json_string_value(json_object_get(v, "devEUI"));
		const char *why = json_string_value(json_object_get(v, "reason"));
		csv_put(f, eui ? eui : "");
		fputc(',', f);
		csv_put(f, why ? why : "");
		fputc('\n', f);
	}
	if (fclose(f) != 0) {
		free(buf);
		return -ENOMEM;
	}
	int r = ctl_write_file(path, buf, len, true);
	free(buf);
	return r;
}

/* Print progress as JSON over the whole file. */
static void print_json_progress(const struct import_totals *t, size_t done, json_t *p)
{
	json_t *o = json_pack(
	    "{s:{s:I, s:I, s:I, s:I, s:I}}", "progress", "done", (json_int_t)done, "total",
	    (json_int_t)t->total, "issued",
	    (json_int_t)(t->issued + json_integer_value(json_object_get(p, "issued"))), "skipped",
	    (json_int_t)(t->skipped + json_integer_value(json_object_get(p, "skipped"))), "failed",
	    (json_int_t)(t->failed + json_integer_value(json_object_get(p, "failed"))));
	if (o) {
		ctl_print_json(o);
		fflush(stdout);
		json_decref(o);
	}
}

/* Run one Import call and fold its replies into the totals; 0, 1 (error reply) or < 0. */
static int import_call(struct ctl *c, struct ctl_args *a, json_t *chunk, bool final,
		       struct import_totals *t, struct bar *b)
{
	json_t *params = json_pack("{s:o, s:b}", "rows", chunk, "final", final);
	if (!params)
		return -ENOMEM;
	if (a->generate_appkeys)
		json_object_set_new(params, "generateAppKeys", json_true());
	if (a->concurrency)
		json_object_set_new(params, "concurrency", json_integer(a->concurrency));
	int r = ctl_send(c, "io.tpad.Admin.Import", params, true);
	if (r < 0)
		return r;
	for (;;) {
		json_t *reply;
		r = ctl_recv(c, &reply);
		if (r < 0)
			return r;
		if (json_object_get(reply, "error")) {
			bar_clear(b);
			int wrong = ctl_wrong_socket(c, "io.tpad.Admin.Import", reply);
			if (wrong) {
				json_decref(reply);
				return wrong;
			}
			if (a->json)
				ctl_print_json(reply);
			ctl_print_error(reply);
			json_decref(reply);
			return 1;
		}
		json_t *p = json_object_get(reply, "parameters");
		json_t *progress = json_object_get(p, "progress");
		json_t *summary = json_object_get(p, "summary");
		if (json_is_object(progress)) {
			size_t done =
			    t->done + (size_t)json_integer_value(json_object_get(progress, "done"));
			if (a->json)
				print_json_progress(t, done, progress);
			bar_draw(b, done, false);
		}
		if (json_is_object(summary)) {
			t->done += (size_t)json_integer_value(json_object_get(summary, "total"));
			t->issued += (size_t)json_integer_value(json_object_get(summary, "issued"));
			t->skipped +=
			    (size_t)json_integer_value(json_object_get(summary, "skipped"));
			t->failed += (size_t)json_integer_value(json_object_get(summary, "failed"));
			json_array_extend(t->failures, json_object_get(summary, "failures"));
			if (a->json)
				print_json_progress(t, t->done, NULL);
			bar_draw(b, t->done, true);
		}
		bool more = json_is_true(json_object_get(reply, "continues"));
		json_decref(reply);
		if (!more)
			return 0;
	}
}

/* Whether the failures file would be the input itself (the same inode), rows lost. */
static bool failures_is_input(const struct ctl_args *a, const char *input)
{
	char *fp = failures_path(a, input);
	struct stat in, out;
	bool same = fp && stat(input, &in) == 0 && stat(fp, &out) == 0 && in.st_dev == out.st_dev &&
		    in.st_ino == out.st_ino;
	free(fp);
	return same;
}

int ctl_import(struct ctl *c, struct ctl_args *a)
{
	const char *path = a->manifest ? a->manifest : a->argc ? a->argv[0] : NULL;
	if (!path || (a->manifest && a->argc)) {
		fprintf(stderr, "tpactl: import takes FILE.csv or --manifest FILE.json\n");
		return 2;
	}
	if (failures_is_input(a, path)) {
		fprintf(stderr,
			"tpactl: the failures file is %s itself: the failed rows would be "
			"written over it; give another path with --failures\n",
			path);
		return 2;
	}
	if (!a->manifest && (a->signer || a->dev_eui_map)) {
		fprintf(stderr, "tpactl: --signer and --dev-eui-map go with --manifest\n");
		return 2;
	}
	if (a->manifest && a->generate_appkeys) {
		fprintf(stderr, "tpactl: manifest devices have secure elements: no "
				"--generate-appkeys\n");
		return 2;
	}
	struct file_errors e = {0};
	struct row *rows = NULL;
	size_t n = 0;
	int r = a->manifest ? ctl_manifest_rows(c, a, (void **)&rows, &n, sizeof(*rows))
			    : load_rows(path, a->generate_appkeys, a->ignore_unknown_columns, &rows, &n, &e);
	if (a->manifest && r != 0)
		return r < 0 ? 1 : r;
	if (r == -EINVAL) {
		size_t count = e.n;
		print_errors(&e, path);
		fprintf(stderr, "tpactl: %zu error%s in %s; nothing was imported\n", count,
			count == 1 ? "" : "s", path);
		return 1;
	}
	if (r < 0)
		return 1;

	struct import_totals t = {.total = n, .failures = json_array()};
	struct bar b = {.on = isatty(STDERR_FILENO) && !a->json,
			.unit = "rows",
			.started_us = now_us(),
			.total = n};
	struct sigaction sa = {.sa_handler = on_sigint}, old;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old);

	size_t next = 0;
	int status = 0;
	while (next < n && !interrupted) {
		json_t *chunk = build_chunk(rows, n, &next);
		if (!chunk) {
			fprintf(stderr, "tpactl: out of memory\n");
			status = 1;
			break;
		}
		r = import_call(c, a, chunk, next == n, &t, &b);
		if (r != 0) {
			bar_clear(&b);
			if (r < 0)
				fprintf(stderr,
					"tpactl: the import stopped after %zu of %zu rows; run "
					"the same command again to finish it (rows already "
					"issued are skipped)\n",
					t.done, n);
			status = r == CTL_EXIT_USAGE ? r : 1;
			break;
		}
	}
	if (rows) /* none for a file of only a header */
		explicit_bzero(rows, n * sizeof(*rows));
	free(rows);
	bar_clear(&b);
	double secs = (double)(now_us() - b.started_us) / 1e6;
	if (status == 0) {
		if (a->json) {
			json_t *s =
			    json_pack("{s:{s:I, s:I, s:I, s:I, s:I, s:O, s:b}}", "summary", "total",
				      (json_int_t)n, "done", (json_int_t)t.done, "issued",
				      (json_int_t)t.issued, "skipped", (json_int_t)t.skipped,
				      "failed", (json_int_t)t.failed, "failures", t.failures,
				      "interrupted", interrupted != 0);
			ctl_print_json(s);
			json_decref(s);
		} else {
			printf("%s: %zu of %zu rows: %zu issued, %zu skipped, %zu "
			       "failed in %.1f s (%.0f rows/s)\n",
			       path, t.done, n, t.issued, t.skipped, t.failed, secs,
			       secs > 0 ? (double)t.done / secs : 0.0);
		}
	}
	if (t.failed) {
		char *fp = failures_path(a, path);
		int w = fp ? write_failures(fp, t.failures) : -ENOMEM;
		if (w < 0)
			fprintf(stderr, "tpactl: cannot write the failed rows to %s: %s\n",
				fp ? fp : "a file", strerror(-w));
		else
			fprintf(stderr, "tpactl: %zu row%s failed; they are listed in %s\n",
				t.failed, t.failed == 1 ? "" : "s", fp);
		free(fp);
		status = 1;
	}
	json_decref(t.failures);
	sigaction(SIGINT, &old, NULL);
	if (interrupted && t.done < n) {
		fprintf(stderr,
			"tpactl: import interrupted after %zu of %zu rows; run the same "
			"command again to finish it (rows already issued are skipped)\n",
			t.done, n);
		return CTL_EXIT_INTERRUPTED;
	}
	return status;
}

/* ---- export ---- */

/* Create dir and its missing parents. */
static int make_dirs(const char *dir)
{
	char *p = strdup(dir);
	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) < 0 && errno != EEXIST) {
			int r = -errno;
			free(p);
			return r;
		}
		*s = '/';
	}
	int r = mkdir(p, 0755) < 0 && errno != EEXIST ? -errno : 0;
	free(p);
	return r;
}

/* The number of stored devices in state (NULL: all), from Status; 0 if unknown. */
static size_t device_count(struct ctl *c, const char *state)
{
	json_t *p;
	if (ctl_call(c, "io.tpad.Admin.Status", NULL, false, &p) != 0)
		return 0;
	json_t *rows = json_object_get(json_object_get(p, "store"), "rows");
	size_t n = 0;
	const char *key;
	json_t *v;
	json_object_foreach(rows, key, v)
	{
		if (!state || strcasecmp(key, state) == 0)
			n += (size_t)json_integer_value(v);
	}
	json_decref(p);
	return n;
}

/* Write one label file and its index line; 0 or a negative errno (after printing why). */
static int export_label(const struct ctl_args *a, json_t *label, FILE *index, const char *ext)
{
	const char *eui = json_string_value(json_object_get(label, "devEUI"));
	const char *serial = json_string_value(json_object_get(label, "serial"));
	const char *text = json_string_value(json_object_get(label, "qrText"));
	const char *data = json_string_value(json_object_get(label, "data"));
	if (!eui || !hex_valid(eui, 16) || !text || !data) {
		fprintf(stderr, "tpactl: tpad sent a malformed label\n");
		return -EPROTO;
	}
	csv_put(index, eui);
	fputc(',', index);
	csv_put(index, serial ? serial : "");
	fputc(',', index);
	csv_put(index, text);
	fputc('\n', index);
	if (!ext)
		return 0;
	uint8_t *bytes;
	size_t len;
	if (base64_decode(data, strlen(data), &bytes, &len) < 0) {
		fprintf(stderr, "tpactl: tpad sent a label that is not valid base64\n");
		return -EPROTO;
	}
	char path[4096];
	int r = -ENAMETOOLONG;
	if (snprintf(path, sizeof(path), "%s/%s.%s", a->out_dir, eui, ext) < (int)sizeof(path))
		r = ctl_write_file(path, bytes, len, false);
	free(bytes);
	if (r < 0)
		fprintf(stderr, "tpactl: cannot write %s: %s\n", path, strerror(-r));
	return r;
}

/* The index an export is writing, for its signal handler. */
static char export_tmp[4300];

/* Ctrl-C or SIGTERM during an export: remove its unfinished index, then die of the signal. */
static void on_export_signal(int sig)
{
	static const char msg[] = "\ntpactl: export interrupted: no index.csv written (the "
				  "labels written so far stay)\n";
	unlink(export_tmp);
	ssize_t n = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)n;
	raise(sig); /* SA_RESETHAND: the default action now */
}

/* Unfinished indexes of exports into dir that were killed before they could clean up. */
static void remove_stale_index_tmps(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strncmp(e->d_name, "index.csv.tmp.", 14) == 0)
			unlinkat(dirfd(d), e->d_name, 0);
	closedir(d);
}

int ctl_export(struct ctl *c, struct ctl_args *a)
{
	static const char *const formats[] = {"png", "svg", "zpl", "pdf", "csv"};
	const char *format = a->format;
	bool known = false;
	for (size_t i = 0; format && i < sizeof(formats) / sizeof(formats[0]); i++)
		known |= strcmp(format, formats[i]) == 0;
	if (!known || !a->out_dir) {
		fprintf(stderr, "tpactl: export needs --format png|svg|zpl|pdf|csv and --out DIR\n"
				"Try 'tpactl help export'.\n");
		return 2;
	}
	const char *ext = strcmp(format, "csv") == 0 ? NULL : format;
	const char *state = a->state ? a->state : "ISSUED";
	int r = make_dirs(a->out_dir);
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot create %s: %s\n", a->out_dir, strerror(-r));
		return 1;
	}
	char index_path[4096], index_tmp[4200];
	snprintf(index_path, sizeof(index_path), "%s/index.csv", a->out_dir);
	snprintf(index_tmp, sizeof(index_tmp), "%s.tmp.%d", index_path, (int)getpid());
	/*
	 * Label files are written in place; index.csv, renamed into place at the end, is
	 * what says an export is complete. An older one goes first, so it can never list
	 * a label this run was still writing.
	 */
	if (unlink(index_path) < 0 && errno != ENOENT) {
		fprintf(stderr, "tpactl: cannot remove %s: %s\n", index_path, strerror(errno));
		return 1;
	}
	remove_stale_index_tmps(a->out_dir);
	FILE *index = fopen(index_tmp, "we");
	if (!index) {
		fprintf(stderr, "tpactl: cannot write %s: %s\n", index_tmp, strerror(errno));
		return 1;
	}
	fputs("devEUI,serial,qrText\n", index);
	/* Ctrl-C: no half index is left behind (the labels written so far stay). */
	snprintf(export_tmp, sizeof(export_tmp), "%s", index_tmp);
	struct sigaction sa = {.sa_handler = on_export_signal, .sa_flags = SA_RESETHAND}, old_int,
			 old_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	struct bar b = {.on = isatty(STDERR_FILENO) && !a->json, .unit = "labels"};
	if (b.on)
		b.total = device_count(c, state);
	b.started_us = now_us();
	json_t *params = json_pack("{s:s, s:s}", "format", format, "state", state);
	json_t *q = ctl_qr_options(a, NULL);
	if (q)
		json_object_set_new(params, "qr", q);
	int status = 0;
	size_t done = 0;
	json_int_t skipped = 0;
	r = ctl_send(c, "io.tpad.Admin.Export", params, true);
	while (r == 0) {
		json_t *reply;
		if (ctl_recv(c, &reply) < 0) {
			status = 1;
			break;
		}
		if (json_object_get(reply, "error")) {
			bar_clear(&b);
			int wrong = ctl_wrong_socket(c, "io.tpad.Admin.Export", reply);
			if (wrong) {
				json_decref(reply);
				status = wrong;
				break;
			}
			if (a->json)
				ctl_print_json(reply);
			ctl_print_error(reply);
			json_decref(reply);
			status = 1;
			break;
		}
		json_t *p = json_object_get(reply, "parameters");
		json_t *label = json_object_get(p, "label");
		json_t *summary = json_object_get(p, "summary");
		if (json_is_object(label)) {
			if (export_label(a, label, index, ext) < 0) {
				json_decref(reply);
				status = 1;
				break;
			}
			done++;
			if (a->json) {
				json_object_del(label, "data");
				ctl_print_json(label);
			}
			bar_draw(&b, done, false);
		}
		if (json_is_object(summary)) {
			skipped = json_integer_value(json_object_get(summary, "skipped"));
			if (a->json)
				ctl_print_json(p);
		}
		bool more = json_is_true(json_object_get(reply, "continues"));
		json_decref(reply);
		if (!more)
			break;
	}
	if (r < 0)
		status = 1;
	bar_clear(&b);
	if (fclose(index) != 0 && status == 0) {
		fprintf(stderr, "tpactl: cannot write %s: %s\n", index_tmp, strerror(errno));
		status = 1;
	}
	if (status == 0 && rename(index_tmp, index_path) < 0) {
		fprintf(stderr, "tpactl: cannot write %s: %s\n", index_path, strerror(errno));
		status = 1;
	}
	if (status != 0)
		unlink(index_tmp);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (status != 0)
		return status;
	double secs = (double)(now_us() - b.started_us) / 1e6;
	if (!a->json)
		printf("exported %zu %s labels to %s in %.1f s (%.0f labels/s)%s; index in %s\n",
		       done, format, a->out_dir, secs, secs > 0 ? (double)done / secs : 0.0,
		       skipped ? " (devices without an ownerToken left out)" : "", index_path);
	return 0;
}

/* ---- devices and device ---- */

/* Shortcut: a string member of o, or dflt. */
static const char *str_or(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : dflt;
}

int ctl_devices(struct ctl *c, struct ctl_args *a)
{
	char after[17] = "";
	size_t shown = 0;
	bool header = false;
	for (;;) {
		size_t want = LIST_PAGE;
		if (a->limit && a->limit - shown < want)
			want = a->limit - shown;
		if (a->limit && want == 0)
			break;
		json_t *params = json_pack("{s:I}", "limit", (json_int_t)want);
		if (a->state)
			json_object_set_new(params, "state", json_string(a->state));
		if (after[0])
			json_object_set_new(params, "after", json_string(after));
		json_t *p;
		int r = ctl_call(c, "io.tpad.Admin.ListDevices", params, a->json, &p);
		if (r != 0)
			return r < 0 ? 1 : r;
		if (a->json)
			ctl_print_json(p);
		size_t i;
		json_t *d;
		json_array_foreach(json_object_get(p, "devices"), i, d)
		{
			if (a->json)
				break;
			if (!header) {
				printf("%-16s  %-7s  %-20s  %-6s  %s\n", "DEVEUI", "STATE",
				       "SERIAL", "APPKEY", "OWNERTOKEN");
				header = true;
			}
			printf("%-16s  %-7s  %-20s  %-6s  %s\n", str_or(d, "devEUI", "?"),
			       str_or(d, "state", "?"), str_or(d, "serial", "-"),
			       json_is_true(json_object_get(d, "hasAppKey")) ? "yes" : "no",
			       str_or(d, "ownerToken", "-"));
		}
		shown += json_array_size(json_object_get(p, "devices"));
		const char *next = json_string_value(json_object_get(p, "next"));
		bool more = next && hex_valid(next, 16);
		if (more)
			memcpy(after, next, sizeof(after));
		json_decref(p);
		if (!more)
			break;
	}
	if (!a->json && !header)
		printf("no devices%s%s\n", a->state ? " in state " : "", a->state ? a->state : "");
	return 0;
}

/* Milliseconds since the epoch as ISO-8601 UTC. */
static void format_time_ms(long long ms, char *buf, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	if (!gmtime_r(&s, &tm)) {
		snprintf(buf, len, "%lld", ms);
		return;
	}
	char day[32];
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, len, "%s.%03lldZ", day, ms % 1000);
}

/* The fields of a DeviceInfo, one per line. */
static void print_device_info(json_t *d)
{
	static const char *const keys[] = {"devEUI",	 "joinEUI", "profileId",  "serial",
					   "tkmInfo",	 "state",   "ownerToken", "qrText",
					   "origin",	 "lastError", "instance"};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		const char *v = json_string_value(json_object_get(d, keys[i]));
		if (v)
			printf("%-11s %s\n", keys[i], v);
	}
	printf("%-11s %s\n", "appKey",
	       json_is_true(json_object_get(d, "hasAppKey")) ? "stored (encrypted; handed to "
							       "stations only)"
							     : "none");
	char when[64];
	format_time_ms(json_integer_value(json_object_get(d, "created")) * 1000, when,
		       sizeof(when));
	printf("%-11s %s\n", "created", when);
	format_time_ms(json_integer_value(json_object_get(d, "updated")) * 1000, when,
		       sizeof(when));
	printf("%-11s %s\n", "updated", when);
}

int ctl_device(struct ctl *c, struct ctl_args *a)
{
	json_t *p;
	int r = ctl_call(c, "io.tpad.Admin.GetDevice", json_pack("{s:s}", "devEUI", a->argv[0]),
			 a->json, &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	if (a->json) {
		ctl_print_json(p);
		json_decref(p);
		return 0;
	}
	print_device_info(json_object_get(p, "device"));
	char when[64];
	json_t *audit = json_object_get(p, "audit");
	json_int_t omitted = json_integer_value(json_object_get(p, "auditOmitted"));
	printf("audit       %zu hand-out%s%s\n", json_array_size(audit),
	       json_array_size(audit) == 1 ? "" : "s",
	       omitted ? " (the newest; older left out)" : "");
	size_t i;
	json_t *e;
	json_array_foreach(audit, i, e)
	{
		format_time_ms(json_integer_value(json_object_get(e, "at")), when, sizeof(when));
		printf("  %s  %-26s uid %-6lld pid %-7lld %s\n", when, str_or(e, "method", "?"),
		       (long long)json_integer_value(json_object_get(e, "uid")),
		       (long long)json_integer_value(json_object_get(e, "pid")),
		       str_or(e, "outcome", "?"));
	}
	json_t *attempts = json_object_get(p, "attempts");
	printf("attempts    %zu import attempt%s\n", json_array_size(attempts),
	       json_array_size(attempts) == 1 ? "" : "s");
	json_array_foreach(attempts, i, e)
	{
		format_time_ms(json_integer_value(json_object_get(e, "at")), when, sizeof(when));
		printf("  #%-3lld %s  %-10s by %s\n",
		       (long long)json_integer_value(json_object_get(e, "n")), when,
		       str_or(e, "outcome", "?"), str_or(e, "instance", "?"));
	}
	json_decref(p);
	return 0;
}

int ctl_adopt(struct ctl *c, struct ctl_args *a)
{
	json_t *p;
	int r = ctl_call(c, "io.tpad.Admin.Adopt", json_pack("{s:s}", "devEUI", a->argv[0]),
			 a->json, &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	if (a->json) {
		ctl_print_json(p);
	} else {
		printf("adopted: the cloud's token is now this device's (audited)\n");
		print_device_info(json_object_get(p, "device"));
	}
	json_decref(p);
	return 0;
}

/* ---- retire ---- */

int ctl_retire(struct ctl *c, struct ctl_args *a)
{
	if (!a->reason || !*a->reason) {
		fprintf(stderr, "tpactl: retire needs --reason TEXT (kept in the audit trail)\n");
		return 2;
	}
	json_t *p;
	int r = ctl_call(c, "io.tpad.Admin.Retire",
			 json_pack("{s:s, s:s}", "devEUI", a->argv[0], "reason", a->reason), a->json,
			 &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	if (a->json) {
		ctl_print_json(p);
	} else {
		json_t *d = json_object_get(p, "device");
		printf("%s: %s (%s)\n", str_or(d, "devEUI", a->argv[0]), str_or(d, "state", "?"),
		       json_is_true(json_object_get(p, "cloudDeleted"))
			   ? "deleted in the cloud"
			   : "the cloud did not hold it");
	}
	json_decref(p);
	return 0;
}
