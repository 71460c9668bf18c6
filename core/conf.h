/* conf: the config grammar shared by the daemons: a table of typed directives -> a struct. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * The grammar: "[section]" or "[prefix.NAME]" headers, "key = value" lines, blank lines
 * and comments ('#' or ';' first). Every value is parsed into a typed, range-checked
 * field of the program's config struct; errors name file:line. Each program declares a
 * struct conf_schema; this module owns nothing but the strings it stores in the struct
 * and a record of where each value came from (default, a preset, or file:line).
 */

#define CONF_MAX_IDS 32 /* entries of a CONF_GIDS / CONF_UIDS list */

enum conf_type {
	CONF_STR,      /* string, required non-empty (char *) */
	CONF_STR_OPT,  /* string, empty means unset: NULL (char *) */
	CONF_MODE,     /* octal file mode up to max (mode_t) */
	CONF_UINT,     /* unsigned integer in [min, max] (uint32_t) */
	CONF_SIZE,     /* bytes with optional K/M suffix, in [min, max] (size_t) */
	CONF_DURATION, /* ms, s, m, h (bare number = seconds) -> milliseconds in [min, max]
			  (uint32_t) */
	CONF_HEX,      /* exactly min hex digits, stored upper-case (char *) */
	CONF_URL,      /* http:// or https:// URL with a host (char *) */
	CONF_GIDS,     /* list of group names or numbers (gid_t[CONF_MAX_IDS]; count at aux) */
	CONF_UIDS,     /* list of user names or numbers (uid_t[CONF_MAX_IDS]; count at aux) */
	CONF_ENUM,     /* one of names, any case; its index (int) */
	CONF_ENUM_STR, /* one of names, any case; the name as written in names (char *) */
	CONF_BOOL,     /* yes|no|true|false|on|off|1|0 (bool) */
	CONF_TENTHS,   /* a number with at most one decimal ("25.4"), stored times ten, in
			  [min, max] tenths (uint32_t) */
};

struct conf_directive {
	const char *name; /* "section.key"; in a named section just "key" */
	enum conf_type type;
	size_t offset;		  /* of the field in the struct (or in one section instance) */
	const char *def;	  /* default in config syntax; "" = unset or empty */
	uint64_t min, max;	  /* ranges; CONF_HEX: digits in min; CONF_MODE: max */
	const char *const *names; /* CONF_ENUM, CONF_ENUM_STR: NULL-terminated */
	size_t aux;		  /* CONF_GIDS, CONF_UIDS: offset of the size_t count */
	/* Optional: a rule of the program's own for the value as written, checked before it
	 * is stored; 0, or -EINVAL with the reason in why (reported at file:line). */
	int (*validate)(const char *value, char *why, size_t whylen);
	/* Optional: the value as --print-config shows it (a password taken out, say). */
	void (*shown)(const char *value, char *buf, size_t len);
};

/* "[prefix.NAME]" sections, each an instance in an array inside the config struct. */
struct conf_section_type {
	const char *prefix;
	const struct conf_directive *directives;
	size_t n_directives;
	size_t array_offset; /* of the first instance */
	size_t count_offset; /* of the size_t number of instances */
	size_t elem_size;
	size_t max;	    /* instances the array holds */
	size_t name_offset; /* of the instance's char *name */
};

struct conf_schema {
	const struct conf_directive *directives;
	size_t n_directives;
	const struct conf_section_type *sections;
	size_t n_sections;
	size_t origins_offset; /* of a struct conf_origins * in the config struct */
	/* Cross-directive rules once a file is read; 0 or -EINVAL with one line in why. */
	int (*check)(const void *cfg, char *why, size_t whylen);
};

struct conf_origins;

/* Fill *cfg (zeroed first) with every top-level directive's default. */
void conf_defaults(const struct conf_schema *s, void *cfg);

/*
 * Parse text over the values already in *cfg; name is the file name used in errors. On
 * error returns a negative errno and writes one "name:line: ..." line to err; *cfg then
 * holds a mix of values and must still be passed to conf_free().
 */
int conf_load_string(const struct conf_schema *s, void *cfg, const char *name, const char *text,
		     char *err, size_t errlen);

/* Same as conf_load_string() from the file at path (at most 1 MiB). */
int conf_load(const struct conf_schema *s, void *cfg, const char *path, char *err, size_t errlen);

/*
 * Set one directive ("section.key", or "prefix.NAME.key") as if a file said so, recording
 * origin (e.g. "profile dx-maker"). With only_default, a value that did not come from the
 * defaults is kept (a preset never overrides the file). 0, -ENOENT for an unknown name, or
 * -EINVAL with the reason in why.
 */
int conf_set(const struct conf_schema *s, void *cfg, const char *name, const char *value,
	     const char *origin, bool only_default, char *why, size_t whylen);

/* Where the value of a directive came from: "default", "file:line" or a preset's origin. */
const char *conf_origin(const struct conf_schema *s, const void *cfg, const char *name);

/*
 * Write every directive with its effective value in config syntax, named sections after
 * the rest; with origins, a comment line "# from <where>" precedes each directive, so the
 * text still parses.
 */
void conf_print(const struct conf_schema *s, const void *cfg, FILE *f, bool origins);

/*
 * A rule across directives failed with why, which begins with the directive it is about
 * ("metrics.listen: ..."): the one error line, at that directive's file:line when the
 * file (name) set it, else at the file. Returns -EINVAL.
 */
int conf_check_error(const struct conf_schema *s, const void *cfg, const char *name,
		     const char *why, char *err, size_t errlen);

/*
 * Split "host:port" ("127.0.0.1:9873", "[::1]:9873", "localhost:9873") into host (size
 * hostlen) and *port (1..65535, or 0 for any free port). -EINVAL with a reason in why
 * that follows the value ("is not HOST:PORT ...").
 */
int conf_parse_listen(const char *s, char *host, size_t hostlen, uint16_t *port, char *why,
		      size_t whylen);

/*
 * Rules for conf_directive.validate, each 0 for an empty (unset) value: a listen address
 * (host:port), a group that exists here (name or number), an absolute Unix socket path that fits
 * sockaddr_un, an http[s]://host[:port] with no path, an http[s] URL.
 */
int conf_validate_listen(const char *v, char *why, size_t whylen);
int conf_validate_group(const char *v, char *why, size_t whylen);
int conf_validate_socket_path(const char *v, char *why, size_t whylen);
int conf_validate_origin_url(const char *v, char *why, size_t whylen);
int conf_validate_url(const char *v, char *why, size_t whylen);

/* Free the strings and origins held by *cfg. Accepts a zeroed struct. */
void conf_free(const struct conf_schema *s, void *cfg);
