/* csv: a small strict CSV reader (RFC 4180) over a buffer in memory, with line numbers. */
#include "csv.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct csv {
	const char *p, *end;
	unsigned line;
	char sep;
	char buf[CSV_MAX_FIELDS * (CSV_MAX_FIELD + 1)];
};

struct csv *csv_new(const char *data, size_t len)
{
	struct csv *c = malloc(sizeof(*c));
	if (!c)
		return NULL;
	c->p = data;
	c->end = data + len;
	c->line = 1;
	c->sep = ',';
	if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
		c->p += 3;
	return c;
}

void csv_set_separator(struct csv *c, char sep)
{
	c->sep = sep;
}

char csv_sniff_separator(const char *data, size_t len)
{
	const char *p = data, *end = data + len;
	if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	/* The first line that is neither empty nor a comment. */
	while (p < end && (*p == '\n' || *p == '\r' || *p == '#')) {
		if (*p == '#')
			while (p < end && *p != '\n')
				p++;
		else
			p++;
	}
	size_t commas = 0, semis = 0;
	bool quoted = false;
	for (; p < end && (quoted || (*p != '\n' && *p != '\r')); p++) {
		if (*p == '"')
			quoted = !quoted;
		else if (!quoted && *p == ',')
			commas++;
		else if (!quoted && *p == ';')
			semis++;
	}
	return semis > commas ? ';' : ',';
}

struct csv *csv_free(struct csv *c)
{
	free(c);
	return NULL;
}

/* Move past the end of the current line (or to the end of the buffer). */
static void skip_line(struct csv *c)
{
	const char *nl = memchr(c->p, '\n', (size_t)(c->end - c->p));
	if (nl) {
		c->p = nl + 1;
		c->line++;
	} else {
		c->p = c->end;
	}
}

/* Fill *e, go on at the next line, and return -EINVAL. */
__attribute__((format(printf, 4, 5))) static int fail(struct csv *c, struct csv_error *e,
						      unsigned line, const char *fmt, ...)
{
	va_list ap;
	e->line = line;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	if (c->p < c->end)
		skip_line(c);
	return -EINVAL;
}

/* Skip empty lines and comment lines; false at the end of the buffer. */
static bool skip_blank(struct csv *c)
{
	while (c->p < c->end) {
		if (*c->p == '\n') {
			c->p++;
			c->line++;
		} else if (*c->p == '\r' && c->p + 1 < c->end && c->p[1] == '\n') {
			c->p += 2;
			c->line++;
		} else if (*c->p == '#') {
			skip_line(c);
		} else {
			return true;
		}
	}
	return false;
}

int csv_next(struct csv *c, struct csv_record *ret, struct csv_error *ret_err)
{
	if (!skip_blank(c))
		return 0;
	struct csv_record rec = {.line = c->line};
	char *out = c->buf;
	for (;;) {
		if (rec.n == CSV_MAX_FIELDS)
			return fail(c, ret_err, c->line, "more than %d fields", CSV_MAX_FIELDS);
		char *field = out;
		size_t len = 0;
		if (c->p < c->end && *c->p == '"') {
			unsigned opened = c->line;
			c->p++;
			for (;;) {
				if (c->p >= c->end)
					return fail(c, ret_err, opened,
						    "a quoted field is never closed");
				char ch = *c->p;
				if (ch == '"') {
					if (c->p + 1 < c->end && c->p[1] == '"') {
						c->p += 2;
					} else {
						c->p++;
						break;
					}
				} else {
					c->p++;
					if (ch == '\0')
						return fail(c, ret_err, c->line, "a NUL byte");
					if (ch == '\n')
						c->line++;
				}
				if (len == CSV_MAX_FIELD)
					return fail(c, ret_err, c->line,
						    "a field longer than %d bytes", CSV_MAX_FIELD);
				field[len++] = ch;
			}
			if (c->p < c->end && *c->p != c->sep && *c->p != '\n' && *c->p != '\r')
				return fail(c, ret_err, c->line,
					    "text after the closing quote of a field");
		} else {
			while (c->p < c->end && *c->p != c->sep && *c->p != '\n' && *c->p != '\r') {
				char ch = *c->p;
				if (ch == '"')
					return fail(c, ret_err, c->line,
						    "a quote inside an unquoted field (quote the "
						    "whole field and double the quote)");
				if (ch == '\0')
					return fail(c, ret_err, c->line, "a NUL byte");
				if (len == CSV_MAX_FIELD)
					return fail(c, ret_err, c->line,
						    "a field longer than %d bytes", CSV_MAX_FIELD);
				field[len++] = ch;
				c->p++;
			}
		}
		field[len] = '\0';
		out = field + len + 1;
		rec.field[rec.n] = field;
		rec.len[rec.n] = len;
		rec.n++;
		if (c->p >= c->end)
			break;
		if (*c->p == c->sep) {
			c->p++;
			continue;
		}
		if (*c->p == '\r') {
			if (c->p + 1 >= c->end || c->p[1] != '\n')
				return fail(c, ret_err, c->line,
					    "a carriage return not followed by a line feed");
			c->p++;
		}
		/* *c->p is the line feed that ends the record. */
		c->p++;
		c->line++;
		break;
	}
	*ret = rec;
	return 1;
}
