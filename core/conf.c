/* conf: the config grammar shared by the daemons: a table of typed directives -> a struct. */
#include "conf.h"

#include <ctype.h>
#include <errno.h>
#include <unistd.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <sys/un.h>

#include "hex.h"
#include "http.h"
#include "redact.h"
#include "words.h"

/* One directive's provenance, by its full name ("upstream.url", "printer.a.url"). */
struct conf_origin {
	char *name;
	char *where;
};

struct conf_origins {
	struct conf_origin *v;
	size_t n, cap;
};

#define CONF_MAX_LINE 4096
#define CONF_MAX_FILE (1u << 20)

/* ---- values ---- */

/* Parse an unsigned decimal number with an optional unit suffix into *ret_num, *ret_unit. */
static int parse_number(const char *s, uint64_t *ret_num, const char **ret_unit)
{
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	*ret_num = v; /* ULLONG_MAX when too large: beyond every directive's range */
	*ret_unit = end;
	return errno ? -ERANGE : 0;
}

/* Multiply with overflow check. */
static int mul_checked(uint64_t a, uint64_t b, uint64_t *ret)
{
	if (a && b > UINT64_MAX / a)
		return -ERANGE;
	*ret = a * b;
	return 0;
}

/* Resolve a comma or space separated list of ids (numbers or names) into out. */
static int parse_id_list(const char *s, bool groups, uint32_t *out, size_t *ret_n, char *why,
			 size_t whylen)
{
	size_t n = 0;
	char *copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	char *save = NULL;
	int r = 0;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		if (n == CONF_MAX_IDS) {
			snprintf(why, whylen, "more than %d entries", CONF_MAX_IDS);
			r = -E2BIG;
			break;
		}
		uint64_t v;
		const char *unit;
		if (parse_number(tok, &v, &unit) == 0 && *unit == '\0' && v < UINT32_MAX) {
			out[n++] = (uint32_t)v;
			continue;
		}
		if (groups) {
			struct group *g = getgrnam(tok);
			if (g) {
				out[n++] = g->gr_gid;
				continue;
			}
		} else {
			struct passwd *p = getpwnam(tok);
			if (p) {
				out[n++] = p->pw_uid;
				continue;
			}
		}
		/* The refused value is quoted before this: a list's entry is named, one alone is
		 * not. */
		if (n == 0 && !strtok_r(NULL, ", \t", &save))
			snprintf(why, whylen, "is not a %s on this system",
				 groups ? "group" : "user");
		else
			snprintf(why, whylen, "names '%s', not a %s on this system", tok,
				 groups ? "group" : "user");
		r = -EINVAL;
		break;
	}
	free(copy);
	if (r == 0)
		*ret_n = n;
	return r;
}

/* Replace the string at *slot; an empty value stores NULL. */
static int set_string(char **slot, const char *v, bool allow_empty)
{
	if (!*v && !allow_empty)
		return -EINVAL;
	char *copy = *v ? strdup(v) : NULL;
	if (*v && !copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

/* "a, b or c" from a NULL-terminated list of names. */
static void names_text(const char *const *names, char *buf, size_t len)
{
	size_t n = 0, used = 0;
	while (names[n])
		n++;
	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
					 i == 0 ? "" : (i + 1 == n ? " or " : ", "), names[i]);
}

/* Parse a duration or size with its unit table; 0 or -EINVAL. */
static int scale_unit(uint64_t *num, const char *unit, bool duration)
{
	if (duration) {
		if (strcmp(unit, "ms") == 0)
			return 0;
		if (strcmp(unit, "s") == 0 || !*unit)
			return mul_checked(*num, 1000, num);
		if (strcmp(unit, "m") == 0)
			return mul_checked(*num, 60000, num);
		if (strcmp(unit, "h") == 0)
			return mul_checked(*num, 3600000, num);
		return -EINVAL;
	}
	if (strcmp(unit, "K") == 0 || strcmp(unit, "k") == 0)
		return mul_checked(*num, 1024, num);
	if (strcmp(unit, "M") == 0)
		return mul_checked(*num, 1024 * 1024, num);
	return *unit ? -EINVAL : 0;
}

/*
 * A duration (ms) or size (bytes) in the largest unit that divides it, as the file would
 * write it ("24h", "100ms", "16M"): range messages speak the units the value was given in.
 */
static void unit_text(char *buf, size_t len, uint64_t num, bool duration)
{
	static const struct {
		uint64_t mul;
		const char *unit;
	} dur[] = {{3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}},
	  size[] = {{1u << 20, "M"}, {1024, "K"}, {1, ""}};
	size_t n = duration ? 4 : 3;
	for (size_t i = 0; i < n; i++) {
		uint64_t mul = duration ? dur[i].mul : size[i].mul;
		if (mul == 1 || (num && num % mul == 0)) {
			snprintf(buf, len, "%llu%s", (unsigned long long)(num / mul),
				 duration ? dur[i].unit : size[i].unit);
			return;
		}
	}
}

/* Parse value v for directive d into the struct at base; on failure the reason goes to why. */
static int directive_set(const struct conf_directive *d, char *base, const char *v, char *why,
			 size_t whylen)
{
	void *slot = base + d->offset;
	uint64_t num = 0;
	const char *unit = "";
	char list[256];

	if (d->validate && d->validate(v, why, whylen) < 0)
		return -EINVAL;
	switch (d->type) {
	case CONF_STR:
	case CONF_STR_OPT: {
		int r = set_string(slot, v, d->type == CONF_STR_OPT);
		if (r == -EINVAL)
			snprintf(why, whylen, "must not be empty");
		return r;
	}
	case CONF_URL:
		if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) {
			snprintf(why, whylen, "must start with https:// (or http:// for tests)");
			return -EINVAL;
		}
		if (!v[strcspn(v, "/") + 2]) {
			snprintf(why, whylen, "has no host");
			return -EINVAL;
		}
		return set_string(slot, v, false);
	case CONF_MODE: {
		char *end;
		errno = 0;
		unsigned long m = strtoul(v, &end, 8);
		if (!*v || *end || errno || m > d->max) {
			snprintf(why, whylen, "must be an octal file mode such as 0660");
			return -EINVAL;
		}
		*(mode_t *)slot = (mode_t)m;
		return 0;
	}
	case CONF_UINT:
		/* Too large (-ERANGE) is said by the range check below, with the range. */
		if (parse_number(v, &num, &unit) == -EINVAL || *unit) {
			snprintf(why, whylen, "must be a whole number");
			return -EINVAL;
		}
		break;
	case CONF_SIZE:
	case CONF_DURATION: {
		bool dur = d->type == CONF_DURATION;
		int r = parse_number(v, &num, &unit);
		if (r != -EINVAL) {
			int scaled = scale_unit(&num, unit, dur);
			r = scaled == -EINVAL ? scaled : r < 0 ? r : scaled;
		}
		if (r == -EINVAL) {
			snprintf(why, whylen, "%s",
				 dur ? "must be a duration such as 500ms, 5s, 2m or 1h"
				     : "must be a size such as 65536, 64K or 1M");
			return -EINVAL;
		}
		if (r == -ERANGE) /* too large for any unit: the range check says so */
			num = UINT64_MAX;
		break;
	}
	case CONF_HEX: {
		if (!hex_valid(v, d->min)) {
			snprintf(why, whylen, "must be %u hexadecimal digits", (unsigned)d->min);
			return -EINVAL;
		}
		char up[130];
		if (d->min >= sizeof(up))
			return -EINVAL;
		hex_upper(up, v, d->min);
		return set_string(slot, up, false);
	}
	case CONF_GIDS:
	case CONF_UIDS:
		return parse_id_list(v, d->type == CONF_GIDS, (uint32_t *)slot,
				     (size_t *)(base + d->aux), why, whylen);
	case CONF_ENUM:
	case CONF_ENUM_STR:
		for (size_t i = 0; d->names[i]; i++) {
			if (strcasecmp(v, d->names[i]) != 0)
				continue;
			if (d->type == CONF_ENUM) {
				*(int *)slot = (int)i;
				return 0;
			}
			return set_string(slot, d->names[i], false);
		}
		names_text(d->names, list, sizeof(list));
		snprintf(why, whylen, "must be %s", list);
		return -EINVAL;
	case CONF_TENTHS:
		if (parse_number(v, &num, &unit) == -EINVAL) {
			snprintf(why, whylen, "must be a number such as 50 or 25.4");
			return -EINVAL;
		}
		num = num > UINT32_MAX / 10 ? UINT32_MAX : num * 10; /* the range check says */
		if (*unit == '.' && unit[1] >= '0' && unit[1] <= '9') {
			num += (uint64_t)(unit[1] - '0');
			unit += 2;
			while (*unit == '0')
				unit++;
		}
		if (*unit) {
			snprintf(why, whylen, "must be a number such as 50 or 25.4");
			return -EINVAL;
		}
		if (num < d->min || num > d->max) {
			snprintf(why, whylen, "must be between %llu.%llu and %llu.%llu",
				 (unsigned long long)d->min / 10, (unsigned long long)d->min % 10,
				 (unsigned long long)d->max / 10, (unsigned long long)d->max % 10);
			return -ERANGE;
		}
		*(uint32_t *)slot = (uint32_t)num;
		return 0;
	case CONF_BOOL:
		if (!strcasecmp(v, "yes") || !strcasecmp(v, "true") || !strcasecmp(v, "on") ||
		    !strcmp(v, "1"))
			*(bool *)slot = true;
		else if (!strcasecmp(v, "no") || !strcasecmp(v, "false") || !strcasecmp(v, "off") ||
			 !strcmp(v, "0"))
			*(bool *)slot = false;
		else {
			snprintf(why, whylen, "must be yes or no");
			return -EINVAL;
		}
		return 0;
	}

	if (num < d->min || num > d->max) {
		char lo[32], hi[32];
		if (d->type == CONF_UINT) {
			snprintf(lo, sizeof(lo), "%llu", (unsigned long long)d->min);
			snprintf(hi, sizeof(hi), "%llu", (unsigned long long)d->max);
		} else {
			unit_text(lo, sizeof(lo), d->min, d->type == CONF_DURATION);
			unit_text(hi, sizeof(hi), d->max, d->type == CONF_DURATION);
		}
		snprintf(why, whylen, "must be between %s and %s", lo, hi);
		return -ERANGE;
	}
	if (d->type == CONF_SIZE)
		*(size_t *)slot = (size_t)num;
	else
		*(uint32_t *)slot = (uint32_t)num;
	return 0;
}

/* True for the types whose field is a malloc'd string. */
static bool is_string(enum conf_type t)
{
	return t == CONF_STR || t == CONF_STR_OPT || t == CONF_URL || t == CONF_HEX ||
	       t == CONF_ENUM_STR;
}

/* ---- origins ---- */

static struct conf_origins **origins_of(const struct conf_schema *s, const void *cfg)
{
	return (struct conf_origins **)((char *)(uintptr_t)cfg + s->origins_offset);
}

/* Record where name's value came from; -ENOMEM. */
static int origin_set(const struct conf_schema *s, void *cfg, const char *name, const char *where)
{
	struct conf_origins **pp = origins_of(s, cfg);
	if (!*pp && !(*pp = calloc(1, sizeof(**pp))))
		return -ENOMEM;
	struct conf_origins *o = *pp;
	for (size_t i = 0; i < o->n; i++) {
		if (strcmp(o->v[i].name, name) == 0) {
			char *w = strdup(where);
			if (!w)
				return -ENOMEM;
			free(o->v[i].where);
			o->v[i].where = w;
			return 0;
		}
	}
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 32;
		struct conf_origin *nv = realloc(o->v, cap * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		o->v = nv;
		o->cap = cap;
	}
	char *n = strdup(name), *w = strdup(where);
	if (!n || !w) {
		free(n);
		free(w);
		return -ENOMEM;
	}
	o->v[o->n++] = (struct conf_origin){.name = n, .where = w};
	return 0;
}

const char *conf_origin(const struct conf_schema *s, const void *cfg, const char *name)
{
	const struct conf_origins *o = *origins_of(s, cfg);
	for (size_t i = 0; o && i < o->n; i++)
		if (strcmp(o->v[i].name, name) == 0)
			return o->v[i].where;
	return "default";
}

/* ---- sections ---- */

/* Set every directive of a table to its default in the struct at base. */
static void table_defaults(const struct conf_directive *t, size_t n, char *base)
{
	char why[160];
	for (size_t i = 0; i < n; i++)
		if (directive_set(&t[i], base, t[i].def, why, sizeof(why)) < 0)
			abort(); /* a default that does not parse is our own bug */
}

void conf_defaults(const struct conf_schema *s, void *cfg)
{
	table_defaults(s->directives, s->n_directives, cfg);
}

static const struct conf_directive *table_find(const struct conf_directive *t, size_t n,
					       const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].name, name) == 0)
			return &t[i];
	return NULL;
}

/* The section type whose prefix starts section ("printer" for "printer.a"), or NULL. */
static const struct conf_section_type *section_type(const struct conf_schema *s,
						    const char *section, const char **ret_name)
{
	for (size_t i = 0; i < s->n_sections; i++) {
		size_t pl = strlen(s->sections[i].prefix);
		if (strncmp(section, s->sections[i].prefix, pl) == 0 && section[pl] == '.') {
			*ret_name = section + pl + 1;
			return &s->sections[i];
		}
	}
	return NULL;
}

/* Whether a section instance name is usable: letters, digits, '-', '_'. */
static bool name_valid(const char *n)
{
	if (!*n || strlen(n) > 63)
		return false;
	for (const char *p = n; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
			return false;
	return true;
}

/* The instance named name of section type st, created with defaults if new; NULL if full. */
static char *instance_get(const struct conf_section_type *st, void *cfg, const char *name,
			  bool create, int *ret_err)
{
	char *base = cfg;
	size_t *count = (size_t *)(base + st->count_offset);
	char *arr = base + st->array_offset;
	for (size_t i = 0; i < *count; i++) {
		char *inst = arr + i * st->elem_size;
		const char *n = *(char **)(inst + st->name_offset);
		if (n && strcmp(n, name) == 0)
			return inst;
	}
	*ret_err = -ENOENT;
	if (!create)
		return NULL;
	*ret_err = -E2BIG;
	if (*count >= st->max)
		return NULL;
	char *inst = arr + *count * st->elem_size;
	memset(inst, 0, st->elem_size);
	table_defaults(st->directives, st->n_directives, inst);
	char *copy = strdup(name);
	*ret_err = -ENOMEM;
	if (!copy)
		return NULL;
	*(char **)(inst + st->name_offset) = copy;
	(*count)++;
	return inst;
}

/* Resolve a full name to its directive and the struct it writes into. */
static const struct conf_directive *resolve(const struct conf_schema *s, void *cfg,
					    const char *full, bool create, char **ret_base,
					    int *ret_err)
{
	*ret_err = -ENOENT;
	const struct conf_directive *d = table_find(s->directives, s->n_directives, full);
	if (d) {
		*ret_base = cfg;
		return d;
	}
	const char *rest;
	const struct conf_section_type *st = section_type(s, full, &rest);
	const char *dot = st ? strrchr(rest, '.') : NULL;
	if (!dot)
		return NULL;
	char name[64];
	if ((size_t)(dot - rest) >= sizeof(name))
		return NULL;
	memcpy(name, rest, (size_t)(dot - rest));
	name[dot - rest] = '\0';
	d = table_find(st->directives, st->n_directives, dot + 1);
	if (!d || !name_valid(name))
		return NULL;
	*ret_base = instance_get(st, cfg, name, create, ret_err);
	return *ret_base ? d : NULL;
}

/*
 * A misspelt type of named section ("[printers.line1]" for "[printer.line1]") with a key
 * the type has: full with the type spelt right, into out.
 */
static bool section_typo(const struct conf_schema *s, const char *full, char *out, size_t outlen)
{
	const char *dot = strchr(full, '.'), *key = strrchr(full, '.');
	char head[32];
	if (!dot || key == dot || (size_t)(dot - full) >= sizeof(head))
		return false;
	memcpy(head, full, (size_t)(dot - full));
	head[dot - full] = '\0';
	for (size_t i = 0; i < s->n_sections; i++) {
		const struct conf_section_type *st = &s->sections[i];
		if (words_distance(head, st->prefix) < 3 &&
		    table_find(st->directives, st->n_directives, key + 1)) {
			int n = snprintf(out, outlen, "%s%s", st->prefix, dot);
			return n > 0 && (size_t)n < outlen;
		}
	}
	return false;
}

/*
 * "unknown directive 'full'", and the closest one the schema has when it is close enough
 * to be a typo ("tunel.listen": "tunnel.listen"; in a named section, the key).
 */
static void unknown_directive(const struct conf_schema *s, const char *full, char *why,
			      size_t whylen)
{
	const char *best = NULL, *prefix = "";
	size_t bd = 3;
	for (size_t i = 0; i < s->n_directives; i++) {
		size_t d = words_distance(full, s->directives[i].name);
		if (d < bd) {
			bd = d;
			best = s->directives[i].name;
		}
	}
	const char *rest, *dot;
	const struct conf_section_type *st = section_type(s, full, &rest);
	if (!best && st && (dot = strrchr(rest, '.')))
		for (size_t i = 0; i < st->n_directives; i++) {
			size_t d = words_distance(dot + 1, st->directives[i].name);
			if (d < bd) {
				bd = d;
				best = st->directives[i].name;
				prefix = "key ";
			}
		}
	char fixed[128];
	if (!best && section_typo(s, full, fixed, sizeof(fixed)))
		best = fixed;
	if (best)
		snprintf(why, whylen, "unknown directive '%s' (did you mean %s'%s'?)", full, prefix,
			 best);
	else
		snprintf(why, whylen, "unknown directive '%s'", full);
}

int conf_set(const struct conf_schema *s, void *cfg, const char *name, const char *value,
	     const char *origin, bool only_default, char *why, size_t whylen)
{
	char *base;
	int err;
	const struct conf_directive *d = resolve(s, cfg, name, true, &base, &err);
	if (!d) {
		unknown_directive(s, name, why, whylen);
		return err;
	}
	if (only_default && strcmp(conf_origin(s, cfg, name), "default") != 0)
		return 0;
	int r = directive_set(d, base, value, why, whylen);
	if (r < 0)
		return r;
	return origin_set(s, cfg, name, origin);
}

/* ---- files ---- */

/* Strip leading and trailing blanks in place. */
static char *strip(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Whether a refused value looks like one with a comment after it ("4  # four"). */
static bool trailing_comment(const char *value)
{
	for (const char *p = value; *p; p++)
		if ((*p == '#' || *p == ';') && p > value && (p[-1] == ' ' || p[-1] == '\t'))
			return true;
	return false;
}

/* Write one "name:line: message" error. */
__attribute__((format(printf, 5, 6))) static int
conf_error(char *err, size_t errlen, const char *name, unsigned line, const char *fmt, ...)
{
	char msg[320];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s:%u: %s", name, line, msg);
	return -EINVAL;
}

/* Handle a "[section]" line; the section's name goes to section. */
static int section_header(const struct conf_schema *s, void *cfg, char *line, char *section,
			  size_t seclen, const char *name, unsigned lineno, char *err,
			  size_t errlen)
{
	char *end = strchr(line, ']');
	if (!end || *strip(end + 1))
		return conf_error(err, errlen, name, lineno, "malformed section header");
	*end = '\0';
	char *sec = strip(line + 1);
	if (!*sec || strlen(sec) >= seclen)
		return conf_error(err, errlen, name, lineno, "malformed section header");
	const char *inst;
	const struct conf_section_type *st = section_type(s, sec, &inst);
	if (st) {
		if (!name_valid(inst))
			return conf_error(err, errlen, name, lineno,
					  "[%s.NAME]: the name must be 1-63 letters, digits, '-' "
					  "or '_'",
					  st->prefix);
		int r;
		if (!instance_get(st, cfg, inst, true, &r))
			return r == -E2BIG ? conf_error(err, errlen, name, lineno,
							"more than %zu [%s.NAME] sections", st->max,
							st->prefix)
					   : r;
	}
	snprintf(section, seclen, "%s", sec);
	return 0;
}

int conf_load_string(const struct conf_schema *s, void *cfg, const char *name, const char *text,
		     char *err, size_t errlen)
{
	char section[96] = "";
	unsigned lineno = 0;
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		lineno++;
		if (len >= CONF_MAX_LINE)
			return conf_error(err, errlen, name, lineno, "line too long");
		char buf[CONF_MAX_LINE];
		memcpy(buf, p, len);
		buf[len] = '\0';
		p += len + (eol ? 1 : 0);

		if (memchr(buf, '\0', len))
			return conf_error(err, errlen, name, lineno, "NUL byte in line");
		char *line = strip(buf);
		if (!*line || *line == '#' || *line == ';')
			continue;
		if (*line == '[') {
			int r = section_header(s, cfg, line, section, sizeof(section), name, lineno,
					       err, errlen);
			if (r < 0)
				return r;
			continue;
		}
		char *eq = strchr(line, '=');
		if (!eq)
			return conf_error(err, errlen, name, lineno,
					  "expected 'key = value' or '[section]'");
		*eq = '\0';
		char *key = strip(line), *value = strip(eq + 1);
		if (!*section)
			return conf_error(err, errlen, name, lineno,
					  "key '%s' outside of a [section]", key);
		char full[192];
		if (snprintf(full, sizeof(full), "%s.%s", section, key) >= (int)sizeof(full))
			return conf_error(err, errlen, name, lineno, "key too long");
		char *base;
		int rerr;
		const struct conf_directive *d = resolve(s, cfg, full, false, &base, &rerr);
		if (!d) {
			char why[256];
			unknown_directive(s, full, why, sizeof(why));
			return conf_error(err, errlen, name, lineno, "%s", why);
		}
		char why[256];
		int r = directive_set(d, base, value, why, sizeof(why));
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			/* Echoed, but not a URL's password: the error goes to the journal. */
			char shown[512];
			snprintf(shown, sizeof(shown), "%s", value);
			redact_uri_passwords(shown);
			return conf_error(
			    err, errlen, name, lineno, "%s: '%s' %s%s", full, shown, why,
			    trailing_comment(value) ? " (a comment goes on a line of its own: '#' "
						      "after a value is part of it)"
						    : "");
		}
		char where[300];
		snprintf(where, sizeof(where), "%s:%u", name, lineno);
		if (origin_set(s, cfg, full, where) < 0)
			return -ENOMEM;
	}
	if (s->check) {
		char why[256] = "";
		if (s->check(cfg, why, sizeof(why)) < 0)
			return conf_check_error(s, cfg, name, why, err, errlen);
	}
	return 0;
}

int conf_load(const struct conf_schema *s, void *cfg, const char *path, char *err, size_t errlen)
{
	/* Not blocking: a FIFO given by mistake would hold the open (and tpad) for ever. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		int r = -errno;
		if (fd >= 0)
			close(fd);
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 S_ISDIR(st.st_mode) ? "it is a directory, not a file"
					     : "it is not a regular file (a FIFO, a device?)");
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	FILE *f = fdopen(fd, "r");
	if (!f) {
		int r = -errno;
		close(fd);
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	size_t cap = 8192, len = 0;
	char *text = malloc(cap);
	int r = 0;
	errno = 0;
	while (text) {
		size_t n = fread(text + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
		if (len + 1 == cap) {
			if (cap >= CONF_MAX_FILE) {
				snprintf(err, errlen, "%s: file too large", path);
				r = -EFBIG;
				break;
			}
			char *nt = realloc(text, cap * 2);
			if (!nt) {
				free(text);
				text = NULL;
				break;
			}
			text = nt;
			cap *= 2;
		}
	}
	if (!r && ferror(f)) {
		r = errno ? -errno : -EIO;
		snprintf(err, errlen, "%s: cannot read: %s", path,
			 r == -EISDIR ? "it is a directory, not a file" : strerror(-r));
	}
	fclose(f);
	if (!text) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	const char *nul = r == 0 ? memchr(text, '\0', len) : NULL;
	if (nul) {
		/* The text would end there, and what follows be left out without a word. */
		int line = 1;
		for (const char *p = text; p < nul; p++)
			line += *p == '\n';
		snprintf(err, errlen, "%s:%d: a NUL byte: the file is not text", path, line);
		r = -EINVAL;
	}
	if (r == 0) {
		text[len] = '\0';
		/* A UTF-8 byte order mark (Notepad writes one) is not part of the first line. */
		bool bom = len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0;
		r = conf_load_string(s, cfg, path, text + (bom ? 3 : 0), err, errlen);
	}
	free(text);
	return r;
}

/* ---- printing ---- */

/* Print one value of d from the struct at base. */
static void print_value(FILE *f, const struct conf_directive *d, const char *base)
{
	const void *slot = base + d->offset;
	switch (d->type) {
	case CONF_STR:
	case CONF_STR_OPT:
	case CONF_URL:
	case CONF_HEX:
	case CONF_ENUM_STR: {
		const char *s = *(char *const *)slot;
		char shown[1024];
		if (s && d->shown) {
			d->shown(s, shown, sizeof(shown));
			s = shown;
		}
		fputs(s ? s : "", f);
		break;
	}
	case CONF_MODE:
		fprintf(f, "%04o", (unsigned)*(const mode_t *)slot);
		break;
	case CONF_UINT:
		fprintf(f, "%u", *(const uint32_t *)slot);
		break;
	case CONF_SIZE:
		fprintf(f, "%zu", *(const size_t *)slot);
		break;
	case CONF_DURATION: {
		char text[32];
		unit_text(text, sizeof(text), *(const uint32_t *)slot, true);
		fputs(text, f);
		break;
	}
	case CONF_GIDS:
	case CONF_UIDS: {
		size_t n = *(const size_t *)(base + d->aux);
		for (size_t i = 0; i < n; i++)
			fprintf(f, "%s%u", i ? "," : "", ((const uint32_t *)slot)[i]);
		break;
	}
	case CONF_ENUM:
		fputs(d->names[*(const int *)slot], f);
		break;
	case CONF_BOOL:
		fputs(*(const bool *)slot ? "yes" : "no", f);
		break;
	case CONF_TENTHS: {
		uint32_t v = *(const uint32_t *)slot;
		if (v % 10)
			fprintf(f, "%u.%u", v / 10, v % 10);
		else
			fprintf(f, "%u", v / 10);
		break;
	}
	}
}

/* Print a table's directives; prefix "" for top-level names, else "prefix.NAME". */
static void print_table(const struct conf_schema *s, const void *cfg,
			const struct conf_directive *t, size_t n, const char *base,
			const char *inst, FILE *f, bool origins, bool *first)
{
	char section[96] = "";
	for (size_t i = 0; i < n; i++) {
		const struct conf_directive *d = &t[i];
		char full[192];
		const char *key = d->name;
		if (inst) {
			snprintf(full, sizeof(full), "%s.%s", inst, d->name);
			if (!section[0]) {
				snprintf(section, sizeof(section), "%s", inst);
				fprintf(f, "%s[%s]\n", *first ? "" : "\n", section);
				*first = false;
			}
		} else {
			snprintf(full, sizeof(full), "%s", d->name);
			const char *dot = strchr(d->name, '.');
			size_t slen = (size_t)(dot - d->name);
			if (strncmp(section, d->name, slen) != 0 || section[slen] != '\0') {
				snprintf(section, sizeof(section), "%.*s", (int)slen, d->name);
				fprintf(f, "%s[%s]\n", *first ? "" : "\n", section);
				*first = false;
			}
			key = dot + 1;
		}
		if (origins)
			fprintf(f, "# from %s\n", conf_origin(s, cfg, full));
		fprintf(f, "%s = ", key);
		print_value(f, d, base);
		fputc('\n', f);
	}
}

void conf_print(const struct conf_schema *s, const void *cfg, FILE *f, bool origins)
{
	bool first = true;
	print_table(s, cfg, s->directives, s->n_directives, cfg, NULL, f, origins, &first);
	for (size_t k = 0; k < s->n_sections; k++) {
		const struct conf_section_type *st = &s->sections[k];
		const char *base = cfg;
		size_t count = *(const size_t *)(base + st->count_offset);
		for (size_t i = 0; i < count; i++) {
			const char *inst = base + st->array_offset + i * st->elem_size;
			char label[128];
			snprintf(label, sizeof(label), "%s.%s", st->prefix,
				 *(char *const *)(inst + st->name_offset));
			print_table(s, cfg, st->directives, st->n_directives, inst, label, f,
				    origins, &first);
		}
	}
}

/* Free a table's strings in the struct at base. */
static void table_free(const struct conf_directive *t, size_t n, char *base)
{
	for (size_t i = 0; i < n; i++) {
		if (!is_string(t[i].type))
			continue;
		char **slot = (char **)(base + t[i].offset);
		free(*slot);
		*slot = NULL;
	}
}

void conf_free(const struct conf_schema *s, void *cfg)
{
	if (!cfg)
		return;
	char *base = cfg;
	table_free(s->directives, s->n_directives, base);
	for (size_t k = 0; k < s->n_sections; k++) {
		const struct conf_section_type *st = &s->sections[k];
		size_t *count = (size_t *)(base + st->count_offset);
		for (size_t i = 0; i < *count; i++) {
			char *inst = base + st->array_offset + i * st->elem_size;
			table_free(st->directives, st->n_directives, inst);
			char **name = (char **)(inst + st->name_offset);
			free(*name);
			*name = NULL;
		}
		*count = 0;
	}
	struct conf_origins **pp = origins_of(s, cfg);
	if (*pp) {
		for (size_t i = 0; i < (*pp)->n; i++) {
			free((*pp)->v[i].name);
			free((*pp)->v[i].where);
		}
		free((*pp)->v);
		free(*pp);
		*pp = NULL;
	}
}

/* ---- rules for values, shared by the programs' tables ---- */

int conf_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port, char *why,
			      size_t whylen)
{
	const char *colon, *h = s;
	size_t hl;
	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':') {
			snprintf(why, whylen, "is not HOST:PORT (an IPv6 address is written [ADDRESS]:PORT)");
			return -EINVAL;
		}
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon) {
			snprintf(why, whylen, "is not HOST:PORT (e.g. 127.0.0.1:9873)");
			return -EINVAL;
		}
		hl = (size_t)(colon - s);
	}
	if (hl == 0 || hl >= hostlen) {
		snprintf(why, whylen, "is not HOST:PORT (the host is %s)", hl ? "too long" : "missing");
		return -EINVAL;
	}
	char *end;
	errno = 0;
	unsigned long p = strtoul(colon + 1, &end, 10);
	if (!isdigit((unsigned char)colon[1]) || *end || errno || p > 65535) {
		snprintf(why, whylen, "is not HOST:PORT (the port must be a number from 0 to 65535)");
		return -EINVAL;
	}
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int conf_validate_listen(const char *v, char *why, size_t whylen)
{
	char host[256];
	uint16_t port;
	return !*v ? 0 : conf_parse_listen(v, host, sizeof(host), &port, why, whylen);
}

int conf_validate_group(const char *v, char *why, size_t whylen)
{
	if (!*v || getgrnam(v))
		return 0;
	char *end;
	errno = 0;
	unsigned long g = strtoul(v, &end, 10);
	if (isdigit((unsigned char)*v) && !*end && !errno && g <= UINT32_MAX - 1)
		return 0;
	snprintf(why, whylen, "is not a group on this machine");
	return -EINVAL;
}

int conf_validate_socket_path(const char *v, char *why, size_t whylen)
{
	struct sockaddr_un sa;
	/* Relative, it would be made in the daemon's working directory (/ under systemd),
	 * and tpactl would look for it in its own. */
	if (*v && *v != '/') {
		snprintf(why, whylen, "must be an absolute path (a socket clients can find)");
		return -EINVAL;
	}
	if (strlen(v) < sizeof(sa.sun_path))
		return 0;
	snprintf(why, whylen, "is longer than the %zu bytes a socket path may have",
		 sizeof(sa.sun_path) - 1);
	return -EINVAL;
}

/* A URL with user:password@: nothing here sends credentials that way. */
static int user_refused(char *why, size_t whylen)
{
	snprintf(why, whylen,
		 "holds user:password@, which is not supported: give the URL "
		 "without it");
	return -EINVAL;
}

int conf_validate_origin_url(const char *v, char *why, size_t whylen)
{
	struct http_url u;
	if (!*v || (http_url_parse(v, &u) == 0 && (!u.path[0] || strcmp(u.path, "/") == 0)))
		return 0;
	if (redact_uri_has_userinfo(v, false))
		return user_refused(why, whylen);
	snprintf(why, whylen, "is not https://host[:port] (or http:// for tests), with no path");
	return -EINVAL;
}

int conf_validate_url(const char *v, char *why, size_t whylen)
{
	struct http_url u;
	if (!*v || http_url_parse(v, &u) == 0)
		return 0;
	if (redact_uri_has_userinfo(v, false))
		return user_refused(why, whylen);
	if (strchr(v, '#')) {
		snprintf(why, whylen,
			 "has a #fragment, which no HTTP request carries: remove it from the URL");
		return -EINVAL;
	}
	snprintf(why, whylen, "is not https://host[:port][/path] or http://host[:port][/path]");
	return -EINVAL;
}

int conf_check_error(const struct conf_schema *s, const void *cfg, const char *name,
		     const char *why, char *err, size_t errlen)
{
	char first[192];
	size_t n = strcspn(why, " :=,'");
	const char *where = "default";
	if (n > 0 && n < sizeof(first)) {
		memcpy(first, why, n);
		first[n] = '\0';
		where = conf_origin(s, cfg, first);
	}
	size_t nl = strlen(name);
	if (strncmp(where, name, nl) == 0 && where[nl] == ':')
		snprintf(err, errlen, "%s: %s", where, why);
	else
		snprintf(err, errlen, "%s: %s", name, why);
	return -EINVAL;
}
