/* Unit tests for the shared config grammar: named sections, enums, booleans, provenance. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "tap.h"

struct thing {
	char *name;
	char *url;
	uint32_t dpi;
	bool on;
};

struct cfg {
	char *path;
	int mode; /* enum */
	uint32_t timeout_ms;
	struct thing things[3];
	size_t n_things;
	struct conf_origins *origins;
};

static const char *const modes[] = {"fast", "safe", NULL};

#define OFF(f) offsetof(struct cfg, f)
#define TOFF(f) offsetof(struct thing, f)

static const struct conf_directive top[] = {
    {.name = "main.path", .type = CONF_STR, .offset = OFF(path), .def = "/a"},
    {.name = "main.mode", .type = CONF_ENUM, .offset = OFF(mode), .def = "safe", .names = modes},
    {.name = "main.timeout",
     .type = CONF_DURATION,
     .offset = OFF(timeout_ms),
     .def = "5s",
     .min = 10,
     .max = 60000},
};

static const struct conf_directive thing_dirs[] = {
    {.name = "url", .type = CONF_STR, .offset = TOFF(url), .def = "socket://x:9100"},
    {.name = "dpi", .type = CONF_UINT, .offset = TOFF(dpi), .def = "203", .min = 100, .max = 600},
    {.name = "on", .type = CONF_BOOL, .offset = TOFF(on), .def = "yes"},
};

static const struct conf_section_type sections[] = {{
    .prefix = "thing",
    .directives = thing_dirs,
    .n_directives = 3,
    .array_offset = OFF(things),
    .count_offset = OFF(n_things),
    .elem_size = sizeof(struct thing),
    .max = 3,
    .name_offset = TOFF(name),
}};

static int check_rules(const void *p, char *why, size_t whylen)
{
	const struct cfg *c = p;
	if (c->mode == 0 && c->timeout_ms > 10000) {
		snprintf(why, whylen, "main.mode = fast wants main.timeout <= 10s");
		return -EINVAL;
	}
	return 0;
}

static const struct conf_schema schema = {
    .directives = top,
    .n_directives = 3,
    .sections = sections,
    .n_sections = 1,
    .origins_offset = OFF(origins),
    .check = check_rules,
};

static int load(struct cfg *c, const char *text, char *err)
{
	memset(c, 0, sizeof(*c));
	conf_defaults(&schema, c);
	err[0] = '\0';
	return conf_load_string(&schema, c, "t.conf", text, err, 256);
}

static char *print(const struct cfg *c, bool origins)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	conf_print(&schema, c, f, origins);
	fclose(f);
	return buf;
}

int main(void)
{
	struct cfg c;
	char err[256], why[256];

	/* Defaults, enums in any case, named sections with their own defaults. */
	CHECK_INT(load(&c,
		       "[main]\nmode = FAST\n\n[thing.front]\ndpi = 300\n[thing.back]\non = no\n",
		       err),
		  0);
	CHECK_INT(c.mode, 0);
	CHECK_STR(c.path, "/a");
	CHECK_INT(c.n_things, 2);
	CHECK_STR(c.things[0].name, "front");
	CHECK_INT(c.things[0].dpi, 300);
	CHECK(c.things[0].on);
	CHECK_STR(c.things[1].url, "socket://x:9100");
	CHECK(!c.things[1].on);
	CHECK_STR(conf_origin(&schema, &c, "main.mode"), "t.conf:2");
	CHECK_STR(conf_origin(&schema, &c, "thing.front.dpi"), "t.conf:5");
	CHECK_STR(conf_origin(&schema, &c, "main.path"), "default");

	/* A preset fills defaults only; the file wins. */
	CHECK_INT(conf_set(&schema, &c, "main.mode", "safe", "profile x", true, why, sizeof(why)),
		  0);
	CHECK_INT(c.mode, 0);
	CHECK_INT(conf_set(&schema, &c, "main.path", "/b", "profile x", true, why, sizeof(why)), 0);
	CHECK_STR(c.path, "/b");
	CHECK_STR(conf_origin(&schema, &c, "main.path"), "profile x");
	CHECK_INT(conf_set(&schema, &c, "main.nope", "1", "p", true, why, sizeof(why)), -ENOENT);
	CHECK_INT(conf_set(&schema, &c, "thing.front.dpi", "9", "p", false, why, sizeof(why)),
		  -ERANGE);

	/* The printed text, origins included, parses back to the same values. */
	char *once = print(&c, true);
	CHECK(strstr(once, "[thing.back]\n") != NULL);
	CHECK(strstr(once, "# from t.conf:5\ndpi = 300\n") != NULL);
	struct cfg again;
	CHECK_INT(load(&again, once, err), 0);
	char *a = print(&c, false), *b = print(&again, false);
	CHECK_STR(b, a);
	free(once);
	free(a);
	free(b);
	conf_free(&schema, &again);
	conf_free(&schema, &c);

	/* Errors name file:line and the directive. */
	CHECK(load(&c, "[main]\nmode = slow\n", err) < 0);
	CHECK_STR(err, "t.conf:2: main.mode: 'slow' must be fast or safe");
	conf_free(&schema, &c);
	CHECK(load(&c, "[thing.a]\ncolour = red\n", err) < 0);
	CHECK_STR(err, "t.conf:2: unknown directive 'thing.a.colour'");
	conf_free(&schema, &c);
	/* A typo gets the closest directive, in a named section the closest key. */
	CHECK(load(&c, "[mian]\nmode = fast\n", err) < 0);
	CHECK_STR(err, "t.conf:2: unknown directive 'mian.mode' (did you mean 'main.mode'?)");
	conf_free(&schema, &c);
	CHECK(load(&c, "[thing.a]\ndpii = 3\n", err) < 0);
	CHECK_STR(err, "t.conf:2: unknown directive 'thing.a.dpii' (did you mean key 'dpi'?)");
	conf_free(&schema, &c);
	CHECK_INT(conf_set(&schema, &c, "main.tiemout", "1s", "p", false, why, sizeof(why)),
		  -ENOENT);
	CHECK_STR(why, "unknown directive 'main.tiemout' (did you mean 'main.timeout'?)");
	CHECK(load(&c, "[thing.bad name]\n", err) < 0);
	CHECK(strstr(err, "t.conf:1: [thing.NAME]") != NULL);
	conf_free(&schema, &c);
	CHECK(load(&c, "[thing.a]\n[thing.b]\n[thing.c]\n[thing.d]\n", err) < 0);
	CHECK_STR(err, "t.conf:4: more than 3 [thing.NAME] sections");
	conf_free(&schema, &c);
	CHECK(load(&c, "[thing.a]\non = maybe\n", err) < 0);
	CHECK_STR(err, "t.conf:2: thing.a.on: 'maybe' must be yes or no");
	conf_free(&schema, &c);
	/* A rule across directives: at the line of the directive it names first. */
	CHECK(load(&c, "[main]\ntimeout = 20s\nmode = fast\n", err) < 0);
	CHECK_STR(err, "t.conf:3: main.mode = fast wants main.timeout <= 10s");
	conf_free(&schema, &c);
	CHECK(load(&c, "[main]\ntimeout = 2x\n", err) < 0);
	CHECK_STR(err,
		  "t.conf:2: main.timeout: '2x' must be a duration such as 500ms, 5s, 2m or 1h");
	conf_free(&schema, &c);
	/* A number too large for any unit is out of range, not a wrong kind of value. */
	CHECK(load(&c, "[main]\ntimeout = 99999999999999999999s\n", err) < 0);
	CHECK_STR(err, "t.conf:2: main.timeout: '99999999999999999999s' must be between 10ms "
		       "and 1m");
	conf_free(&schema, &c);
	CHECK(load(&c, "[main]\ntimeout = 9999999999999999h\n", err) < 0);
	CHECK(strstr(err, "must be between 10ms and 1m") != NULL);
	conf_free(&schema, &c);
	CHECK(load(&c, "[main]\ntimeout = 99999999999999999999x\n", err) < 0);
	CHECK(strstr(err, "must be a duration") != NULL);
	conf_free(&schema, &c);
	CHECK(load(&c, "[thing.a]\ndpi = 99999999999999999999\n", err) < 0);
	CHECK_STR(err, "t.conf:2: thing.a.dpi: '99999999999999999999' must be between 100 and "
		       "600");
	conf_free(&schema, &c);

	/* A URL with a user (with or without a password) is refused as such; an '@' in a
	 * path is not a user. */
	CHECK_INT(conf_validate_url("https://u:pw@h/x", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "holds user:password@") != NULL);
	CHECK_INT(conf_validate_origin_url("https://line1@h", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "holds user:password@") != NULL);
	CHECK_INT(conf_validate_url("https://h/a@b", why, sizeof(why)), 0);
	/* A #fragment would be sent in the request line: refused, and said why. */
	CHECK_INT(conf_validate_url("http://127.0.0.1:8080/hook#frag", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "#fragment") != NULL);
	CHECK_INT(conf_validate_origin_url("https://h:99999", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "user") == NULL);
	return tap_done();
}
