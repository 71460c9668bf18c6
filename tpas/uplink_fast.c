/*
 * uplink_fast: the body the LRC usually posts, {"DevEUI_uplink":{...}} in printable ASCII
 * without escapes, read in one pass without jansson; every other body is left to the
 * reader in uplink.c.
 *
 * Why not jansson alone: on a 1.3 KB uplink as the LRC sends them (base stations,
 * customer data, radio settings), parsing it into a jansson tree and writing the radio
 * fields back out took half of the event loop's time per uplink (test/bench/bench_tpas.py
 * --radio full). This reader checks the JSON grammar itself (a token scanner such as
 * jsmn takes "{\"a\":1 \"b\":2}" and leaves the grammar to its caller) and copies the
 * radio fields' text as it goes, compacted.
 *
 * It takes a body only when the result is the one the jansson reader would give, byte for
 * byte (test-tpas-crypto and fuzz-tunnel hold the two to it): strings of printable ASCII
 * with no escape sequence (they read and write back unchanged); integers of at most 18
 * digits other than -0; reals without an exponent in the form a 15-digit %g writes back
 * unchanged ("868.1", "-41.5", "2.0"; not "2.50", "1e3" or "0.00001"); no object with a
 * name twice or more than FAST_MAX_NAMES names; nesting at most FAST_MAX_DEPTH deep; every
 * field valid. Anything else, an error included, is "not mine" (0), and the jansson reader
 * reads the body again and gives the answer, so refusals and their reasons come from one
 * place.
 */
#include "uplink_fast.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cred.h"
#include "uplink_fields.h"

#define FAST_MAX_DEPTH 32  /* objects and arrays nested in the whole body */
#define FAST_MAX_NAMES 64  /* names in one object */
#define FAST_MAX_FIELD 600 /* characters of a field tpas reads (payload_hex: 510) */

struct scan {
	const char *s;
	size_t n, i;
	char *out; /* the radio text being written, or NULL while skipping */
	size_t o;
	int depth;
};

/* A span of the body: a string's content, or a number's text. */
struct span {
	const char *p;
	size_t n;
};

static void skip_blank(struct scan *sc)
{
	while (sc->i < sc->n) {
		char c = sc->s[sc->i];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			return;
		sc->i++;
	}
}

static bool take(struct scan *sc, char c)
{
	skip_blank(sc);
	if (sc->i >= sc->n || sc->s[sc->i] != c)
		return false;
	sc->i++;
	return true;
}

static void put(struct scan *sc, const char *p, size_t n)
{
	if (sc->out) {
		memcpy(sc->out + sc->o, p, n);
		sc->o += n;
	}
}

/* A string: printable ASCII, no escape. The span is its content. */
static bool scan_string(struct scan *sc, struct span *ret)
{
	skip_blank(sc);
	if (sc->i >= sc->n || sc->s[sc->i] != '"')
		return false;
	size_t start = ++sc->i;
	for (; sc->i < sc->n; sc->i++) {
		unsigned char c = (unsigned char)sc->s[sc->i];
		if (c == '"') {
			*ret = (struct span){sc->s + start, sc->i - start};
			sc->i++;
			return true;
		}
		if (c < 0x20 || c > 0x7e || c == '\\')
			return false;
	}
	return false;
}

static bool digit(char c)
{
	return c >= '0' && c <= '9';
}

enum number { NUMBER_NO, NUMBER_INTEGER, NUMBER_REAL };

/*
 * A number in a form jansson reads and writes back unchanged: an integer of at most 18
 * digits (not -0), or a real I.F without exponent whose 15-digit %g is its own text: at
 * most 15 significant digits, F without trailing zeros (or exactly "0"), and a decimal
 * exponent from -4 to 14 (%g's fixed range).
 */
static enum number scan_number(struct scan *sc, struct span *ret)
{
	const char *s = sc->s;
	size_t i = sc->i, n = sc->n, start = i;
	bool minus = i < n && s[i] == '-';
	if (minus)
		i++;
	size_t ib = i;
	if (i >= n || !digit(s[i]))
		return NUMBER_NO;
	if (s[i] == '0')
		i++;
	else
		while (i < n && digit(s[i]))
			i++;
	size_t ilen = i - ib;
	bool zero = ilen == 1 && s[ib] == '0';
	enum number kind = NUMBER_INTEGER;
	if (i < n && s[i] == '.') {
		size_t fb = ++i;
		while (i < n && digit(s[i]))
			i++;
		size_t flen = i - fb;
		if (flen == 0)
			return NUMBER_NO;
		bool dot_zero = flen == 1 && s[fb] == '0';
		if (!dot_zero && s[i - 1] == '0')
			return NUMBER_NO; /* "2.50": written "2.5" */
		if (zero && !dot_zero) {
			size_t lead = 0;
			while (s[fb + lead] == '0')
				lead++;
			if (lead > 3 || flen - lead > 15)
				return NUMBER_NO; /* "0.00001": written "1e-5" */
		} else if (ilen > 15 || (!dot_zero && ilen + flen > 15)) {
			return NUMBER_NO;
		}
		kind = NUMBER_REAL;
	} else if (ilen > 18 || (minus && zero)) {
		return NUMBER_NO; /* may not fit a json_int_t; -0 is written 0 */
	}
	if (i < n && (s[i] == 'e' || s[i] == 'E'))
		return NUMBER_NO;
	*ret = (struct span){s + start, i - start};
	sc->i = i;
	return kind;
}

static bool scan_word(struct scan *sc, const char *w)
{
	size_t n = strlen(w);
	if (sc->n - sc->i < n || memcmp(sc->s + sc->i, w, n) != 0)
		return false;
	put(sc, w, n);
	sc->i += n;
	return true;
}

static bool scan_value(struct scan *sc);

/* Whether name was already among the object's names (then jansson refuses the body). */
static bool seen_before(const struct span *names, size_t count, struct span name)
{
	for (size_t k = 0; k < count; k++)
		if (names[k].n == name.n && memcmp(names[k].p, name.p, name.n) == 0)
			return true;
	return false;
}

/*
 * The members of an object after its '{': for each, member(arg, name, sc) reads the value
 * (returning false when the body is not the kind this reader takes); with member NULL
 * each is copied to the output as it came, compacted.
 */
typedef bool member_fn(void *arg, struct span name, struct scan *sc);

static bool scan_members(struct scan *sc, member_fn *member, void *arg)
{
	struct span names[FAST_MAX_NAMES];
	size_t count = 0;
	if (++sc->depth > FAST_MAX_DEPTH)
		return false;
	if (take(sc, '}'))
		goto end;
	do {
		struct span name;
		if (count == FAST_MAX_NAMES || !scan_string(sc, &name) ||
		    seen_before(names, count, name) || !take(sc, ':'))
			return false;
		names[count++] = name;
		if (member) {
			if (!member(arg, name, sc))
				return false;
			continue;
		}
		if (count > 1)
			put(sc, ",", 1);
		put(sc, "\"", 1);
		put(sc, name.p, name.n);
		put(sc, "\":", 2);
		if (!scan_value(sc))
			return false;
	} while (take(sc, ','));
	if (!take(sc, '}'))
		return false;
end:
	sc->depth--;
	return true;
}

static bool scan_array(struct scan *sc)
{
	if (++sc->depth > FAST_MAX_DEPTH)
		return false;
	if (!take(sc, ']')) {
		size_t k = 0;
		do {
			if (k++)
				put(sc, ",", 1);
			if (!scan_value(sc))
				return false;
		} while (take(sc, ','));
		if (!take(sc, ']'))
			return false;
	}
	put(sc, "]", 1);
	sc->depth--;
	return true;
}

/* Any value, copied to the output (when there is one) compacted. */
static bool scan_value(struct scan *sc)
{
	struct span v;
	skip_blank(sc);
	if (sc->i >= sc->n)
		return false;
	switch (sc->s[sc->i]) {
	case '"':
		if (!scan_string(sc, &v))
			return false;
		put(sc, "\"", 1);
		put(sc, v.p, v.n);
		put(sc, "\"", 1);
		return true;
	case '{':
		sc->i++;
		put(sc, "{", 1);
		if (!scan_members(sc, NULL, NULL))
			return false;
		put(sc, "}", 1);
		return true;
	case '[':
		sc->i++;
		put(sc, "[", 1);
		return scan_array(sc);
	case 't':
		return scan_word(sc, "true");
	case 'f':
		return scan_word(sc, "false");
	case 'n':
		return scan_word(sc, "null");
	default:
		if (scan_number(sc, &v) == NUMBER_NO)
			return false;
		put(sc, v.p, v.n);
		return true;
	}
}

/* A span as a C string in buf (size FAST_MAX_FIELD + 1); false if it is longer. */
static bool span_text(struct span v, char *buf)
{
	if (v.n > FAST_MAX_FIELD)
		return false;
	memcpy(buf, v.p, v.n);
	buf[v.n] = '\0';
	return true;
}

static bool span_is(struct span v, const char *s)
{
	return v.n == strlen(s) && memcmp(v.p, s, v.n) == 0;
}

/* The reading of DevEUI_uplink's members. */
struct uplink_scan {
	struct uplink *u;
	struct scan *sc;
	size_t radio_fields;
	struct span label, aes_key;
	bool has_label, has_aes_key;
	char reason[160]; /* a field's refusal: the body is then left to jansson */
};

/* A member of an AppSKey envelope: KEKLabel and AESKey are strings, the rest skipped. */
static bool envelope_member(void *arg, struct span name, struct scan *sc)
{
	struct uplink_scan *us = arg;
	if (span_is(name, "KEKLabel") || span_is(name, "AESKey")) {
		bool label = name.p[0] == 'K';
		if (!scan_string(sc, label ? &us->label : &us->aes_key))
			return false;
		*(label ? &us->has_label : &us->has_aes_key) = true;
		return true;
	}
	return scan_value(sc);
}

static bool uplink_member(void *arg, struct span name, struct scan *sc)
{
	struct uplink_scan *us = arg;
	char key[32], text[FAST_MAX_FIELD + 1]; /* a name tpas reads has at most 11 characters */
	if (!uplink_field_read(name.p, name.n) || !span_text(name, key)) {
		/* A radio field: copied as it came, compacted. */
		if (us->radio_fields++)
			put(sc, ",", 1);
		put(sc, "\"", 1);
		put(sc, name.p, name.n);
		put(sc, "\":", 2);
		return scan_value(sc);
	}
	char *out = sc->out;
	sc->out = NULL; /* a field tpas reads is not radio */
	struct span v;
	bool ok;
	skip_blank(sc);
	if (sc->i < sc->n && sc->s[sc->i] == '"') {
		ok = scan_string(sc, &v) && span_text(v, text) &&
		     uplink_field_set(us->u, key, text, us->reason, sizeof(us->reason)) > 0;
	} else if (sc->i < sc->n && sc->s[sc->i] == '{' && strcmp(key, "AppSKey") == 0) {
		char label[FAST_MAX_FIELD + 1];
		sc->i++;
		us->has_label = us->has_aes_key = false;
		ok = scan_members(sc, envelope_member, us) && us->has_label && us->has_aes_key &&
		     span_text(us->label, label) && span_text(us->aes_key, text) &&
		     uplink_envelope_set(us->u, label, text, us->reason, sizeof(us->reason)) == 0;
	} else {
		ok = scan_number(sc, &v) == NUMBER_INTEGER && span_text(v, text) &&
		     uplink_field_set(us->u, key, text, us->reason, sizeof(us->reason)) > 0;
	}
	sc->out = out;
	if (strcmp(key, "AppSKey") == 0)
		cred_wipe(text, sizeof(text)); /* the wrapped key, as the jansson reader's */
	return ok;
}

/* A member of the body's object: DevEUI_uplink is read, any other one checked and left. */
static bool root_member(void *arg, struct span name, struct scan *sc)
{
	struct uplink_scan *us = arg;
	if (!span_is(name, "DevEUI_uplink")) {
		char *out = sc->out;
		sc->out = NULL;
		bool ok = scan_value(sc);
		sc->out = out;
		return ok;
	}
	if (!take(sc, '{'))
		return false;
	put(sc, "{", 1);
	if (!scan_members(sc, uplink_member, us))
		return false;
	put(sc, "}", 1);
	return true;
}

int uplink_parse_fast(const char *body, size_t len, struct uplink *u)
{
	char *radio = malloc(len + 3); /* compacted radio fields are never longer than the body */
	if (!radio)
		return -ENOMEM;
	struct scan sc = {.s = body, .n = len, .out = radio};
	struct uplink_scan us = {.u = u, .sc = &sc};
	bool ok = take(&sc, '{') && scan_members(&sc, root_member, &us);
	skip_blank(&sc);
	ok = ok && sc.i == sc.n && sc.o > 0 &&
	     uplink_fields_check(u, us.reason, sizeof(us.reason)) == 0;
	if (!ok) {
		free(radio);
		return 0;
	}
	radio[sc.o] = '\0';
	u->radio_text = radio;
	return 1;
}
