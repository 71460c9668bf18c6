/* Unit tests for the strict CSV reader: records, quoting, line numbers and must-fail input. */
#include <errno.h>
#include <string.h>

#include "csv.h"
#include "tap.h"

/* Read every record of text into a flat "line:f1|f2;" description, errors as "line!". */
static void describe(const char *text, size_t len, char *out, size_t outlen)
{
	struct csv *c = csv_new(text, len);
	struct csv_record rec;
	struct csv_error err;
	size_t o = 0;
	int r;
	out[0] = '\0';
	while ((r = csv_next(c, &rec, &err)) != 0) {
		if (r < 0) {
			o += (size_t)snprintf(out + o, outlen - o, "%u!", err.line);
			continue;
		}
		o += (size_t)snprintf(out + o, outlen - o, "%u:", rec.line);
		for (size_t i = 0; i < rec.n; i++)
			o += (size_t)snprintf(out + o, outlen - o, "%s%s", i ? "|" : "",
					      rec.field[i]);
		o += (size_t)snprintf(out + o, outlen - o, ";");
	}
	csv_free(c);
}

/* describe() of a NUL-terminated text. */
static const char *d(const char *text)
{
	static char out[4096];
	describe(text, strlen(text), out, sizeof(out));
	return out;
}

/* The error of the first record of text (len bytes), or NULL if it reads. */
static const char *first_error(const char *text, size_t len, unsigned *ret_line)
{
	static struct csv_error err;
	struct csv *c = csv_new(text, len);
	struct csv_record rec;
	int r = csv_next(c, &rec, &err);
	csv_free(c);
	if (r >= 0)
		return NULL;
	*ret_line = err.line;
	return err.message;
}

static void test_records(void)
{
	CHECK_STR(d(""), "");
	CHECK_STR(d("a,b,c"), "1:a|b|c;");
	CHECK_STR(d("a,b,c\n"), "1:a|b|c;");
	CHECK_STR(d("a,b\r\nc,d\r\n"), "1:a|b;2:c|d;");
	CHECK_STR(d("a,,c\n,\n"), "1:a||c;2:|;");
	CHECK_STR(d("a,b,\n"), "1:a|b|;");
	/* Blank and comment lines are skipped but counted. */
	CHECK_STR(d("\n# comment, \"with\" quotes\n\nx,y\n\r\n#\nz\n"), "4:x|y;7:z;");
	/* A '#' not at the start of a line is data. */
	CHECK_STR(d("a,#b\n"), "1:a|#b;");
	/* Spaces are kept: trimming is the caller's choice. */
	CHECK_STR(d(" a , b \n"), "1: a | b ;");
	/* A byte order mark at the start is skipped. */
	CHECK_STR(d("\xEF\xBB\xBF"
		    "devEUI\n1\n"),
		  "1:devEUI;2:1;");
}

static void test_quotes(void)
{
	CHECK_STR(d("\"a\",\"b,c\"\n"), "1:a|b,c;");
	CHECK_STR(d("\"say \"\"hi\"\"\",x\n"), "1:say \"hi\"|x;");
	CHECK_STR(d("\"\",\"\"\n"), "1:|;");
	/* Line ends inside quotes are data and still counted. */
	CHECK_STR(d("\"two\nlines\",x\ny,z\n"), "1:two\nlines|x;3:y|z;");
	CHECK_STR(d("\"a\"\r\nb\n"), "1:a;2:b;");
	CHECK_STR(d("\"a\""), "1:a;");

	struct csv *c = csv_new("\"x\",\"y\"\"\"", 9);
	struct csv_record rec;
	struct csv_error err;
	CHECK_INT(csv_next(c, &rec, &err), 1);
	CHECK_INT(rec.n, 2);
	CHECK_INT(rec.len[1], 2);
	CHECK_STR(rec.field[1], "y\"");
	CHECK_INT(csv_next(c, &rec, &err), 0);
	CHECK_INT(csv_next(c, &rec, &err), 0);
	csv_free(c);
}

static void test_must_fail(void)
{
	unsigned line = 0;
	const char *m;

	m = first_error("a\"b,c\n", 6, &line);
	CHECK(m && strstr(m, "quote inside an unquoted field"));
	CHECK_INT(line, 1);

	m = first_error("\"ab\"c,d\n", 8, &line);
	CHECK(m && strstr(m, "text after the closing quote"));

	m = first_error("x\n\n\"never closed,\nmore\n", 23, &line);
	CHECK(m == NULL); /* the first record is fine */
	CHECK_STR(d("x\n\n\"never closed,\nmore\n"), "1:x;3!");

	m = first_error("a\rb\n", 4, &line);
	CHECK(m && strstr(m, "carriage return"));
	m = first_error("a,b\r", 4, &line);
	CHECK(m && strstr(m, "carriage return"));

	m = first_error("a\0b\n", 4, &line);
	CHECK(m && strstr(m, "NUL"));
	m = first_error("\"a\0b\"\n", 6, &line);
	CHECK(m && strstr(m, "NUL"));

	char many[CSV_MAX_FIELDS * 2 + 8];
	size_t n = 0;
	for (int i = 0; i <= CSV_MAX_FIELDS; i++) {
		many[n++] = 'x';
		many[n++] = ',';
	}
	many[n - 1] = '\n';
	m = first_error(many, n, &line);
	CHECK(m && strstr(m, "more than 64 fields"));
	/* Exactly CSV_MAX_FIELDS fields are fine. */
	CHECK(first_error(many + 2, n - 2, &line) == NULL);

	static char big[CSV_MAX_FIELD + 8];
	memset(big, 'a', CSV_MAX_FIELD + 1);
	m = first_error(big, CSV_MAX_FIELD + 1, &line);
	CHECK(m && strstr(m, "longer than 1024"));
	CHECK(first_error(big, CSV_MAX_FIELD, &line) == NULL);
	big[0] = '"';
	big[CSV_MAX_FIELD + 1] = '"';
	m = first_error(big, CSV_MAX_FIELD + 2, &line);
	CHECK(m == NULL); /* 1024 bytes between the quotes */
	big[CSV_MAX_FIELD + 1] = 'a';
	big[CSV_MAX_FIELD + 2] = '"';
	m = first_error(big, CSV_MAX_FIELD + 3, &line);
	CHECK(m && strstr(m, "longer than 1024"));
}

static void test_recovery(void)
{
	/* Every bad line is reported with its number; good lines around it still read. */
	CHECK_STR(d("h1,h2\na\"b,c\nok,1\n\"x\"y,2\nfine,3\n"), "1:h1|h2;2!3:ok|1;4!5:fine|3;");
	/* An error in the last line without a line end. */
	CHECK_STR(d("a,b\nc\"d"), "1:a|b;2!");
	/* A quoted field open to the end names the line where it opened. */
	CHECK_STR(d("a\nb\n\"c\nd\ne"), "1:a;2:b;3!");
}

/* ';' separated files (Excel in comma-decimal locales) and the guess of the separator. */
static void test_separator(void)
{
	CHECK_INT(csv_sniff_separator("a,b,c\n1;2,3\n", 13), ',');
	CHECK_INT(csv_sniff_separator("a;b;c\n1,2,3\n", 13), ';');
	CHECK_INT(csv_sniff_separator("\xEF\xBB\xBF# x,y,z\n\r\na;b\n", 19), ';');
	CHECK_INT(csv_sniff_separator("\"a;b\",c\n", 8), ',');
	CHECK_INT(csv_sniff_separator("devEUI\n", 7), ',');
	CHECK_INT(csv_sniff_separator("", 0), ',');
	const char *text = "a;\"b;c\";d\r\n1;2;3\n";
	struct csv *c = csv_new(text, strlen(text));
	csv_set_separator(c, ';');
	struct csv_record r;
	struct csv_error e;
	CHECK_INT(csv_next(c, &r, &e), 1);
	CHECK_INT(r.n, 3);
	CHECK_STR(r.field[1], "b;c");
	CHECK_INT(csv_next(c, &r, &e), 1);
	CHECK_INT(r.n, 3);
	CHECK_STR(r.field[2], "3");
	CHECK_INT(csv_next(c, &r, &e), 0);
	csv_free(c);
}

int main(void)
{
	test_separator();
	test_records();
	test_quotes();
	test_must_fail();
	test_recovery();
	return tap_done();
}
