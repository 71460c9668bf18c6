/* csv: a small strict CSV reader (RFC 4180) over a buffer in memory, with line numbers. */
#pragma once

#include <stddef.h>

#define CSV_MAX_FIELDS 64  /* fields in one record */
#define CSV_MAX_FIELD 1024 /* bytes in one field, after unquoting */
#define CSV_ERROR_MAX 160  /* bytes of an error message, NUL included */

struct csv;

/*
 * One record. Fields are NUL-terminated, unquoted, and owned by the reader: valid until
 * the next csv_next() or csv_free(). line is the line on which the record starts (1 for
 * the first line of the buffer).
 */
struct csv_record {
	unsigned line;
	size_t n;
	const char *field[CSV_MAX_FIELDS];
	size_t len[CSV_MAX_FIELDS];
};

/* Why a record could not be read, and on which line. */
struct csv_error {
	unsigned line;
	char message[CSV_ERROR_MAX];
};

/*
 * A reader of the len bytes at data (not copied: keep them until csv_free()). A UTF-8
 * byte order mark at the start is skipped. NULL on ENOMEM.
 */
struct csv *csv_new(const char *data, size_t len);

/* Separate fields with sep (',' by default; ';' for Excel in many locales). */
void csv_set_separator(struct csv *c, char sep);

/*
 * Guess the separator from the first line that is neither empty nor a comment (the
 * header): ';' when it holds more semicolons than commas outside quotes, else ','.
 */
char csv_sniff_separator(const char *data, size_t len);

/* Free c; accepts NULL and returns NULL. */
struct csv *csv_free(struct csv *c);

/*
 * Read the next record, skipping empty lines and lines whose first character is '#'.
 * Records end with LF or CRLF (or the end of the buffer); fields are separated by ','
 * (or the separator set with csv_set_separator()) and may be quoted with '"' (a quote inside is
 * doubled; commas and line ends inside quotes are data). Returns 1 with *ret filled, 0 at the end
 * of the buffer, or -EINVAL with *ret_err filled and *ret untouched: a quote inside an unquoted
 * field, text after a closing quote, a quoted field never closed, a CR not followed by LF, a NUL
 * byte, more than CSV_MAX_FIELDS fields or a field longer than CSV_MAX_FIELD bytes. After an error
 * the reader goes on at the next line, so every bad line can be reported.
 */
int csv_next(struct csv *c, struct csv_record *ret, struct csv_error *ret_err);
