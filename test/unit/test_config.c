/* Unit tests for the config table: parsing, ranges, errors with file:line, the shipped file. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tap.h"

/* Load text over the defaults; returns the result and leaves the error in err. */
static int load(struct config *c, const char *text, char *err, size_t errlen)
{
	config_defaults(c);
	err[0] = '\0';
	return config_load_string(c, "t.conf", text, err, errlen);
}

/* config_print output as a malloc'd string. */
static char *print(const struct config *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	config_print(c, f, false);
	fclose(f);
	return buf;
}

/* Every "#key = value" line of the shipped file, uncommented, must give the defaults. */
static void test_shipped_file(const char *path)
{
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	if (!f)
		return;
	char line[1024], *text = calloc(1, 65536);
	size_t n = 0, directives = 0;
	while (fgets(line, sizeof(line), f)) {
		const char *l = line;
		if (l[0] == '#' && strchr(l, '=') && l[1] != ' ' && l[1] != '\n') {
			l++;
			directives++;
		}
		n += (size_t)snprintf(text + n, 65536 - n, "%s", l);
	}
	fclose(f);
	struct config a, b;
	char err[256];
	config_defaults(&a);
	CHECK_INT(load(&b, text, err, sizeof(err)), 0);
	if (err[0])
		fprintf(stderr, "%s\n", err);
	char *pa = print(&a), *pb = print(&b);
	CHECK_STR(pb, pa);
	/* Every directive printed is documented: the printed lines count the directives. */
	size_t printed = 0;
	for (char *p = pa; (p = strstr(p, " = ")); p++)
		printed++;
	CHECK_INT(directives, printed);
	free(pa);
	free(pb);
	free(text);
	config_free(&a);
	config_free(&b);
}

int main(int argc, char **argv)
{
	struct config c;
	char err[256];

	CHECK_INT(
	    load(&c, "[limits]\nmax-message = 128K\nidle-timeout = 1500ms\n", err, sizeof(err)), 0);
	CHECK_INT(c.limits.max_message, 128 * 1024);
	CHECK_INT(c.limits.idle_timeout_ms, 1500);
	config_free(&c);

	CHECK_INT(load(&c,
		       "# comment\n; other\n\n[upstream]\n  sessions = 8  \nbackoff-max = 2m\n"
		       "tls-min = 1.1\nauth = psk\n",
		       err, sizeof(err)),
		  0);
	CHECK_INT(c.upstream_sessions, 8);
	CHECK_INT(c.upstream_backoff_max_ms, 120000);
	CHECK_INT(c.upstream_tls_min, CONFIG_TLS_1_1);
	config_free(&c);

	/* --print-config shows store.url without its password. */
	CHECK_INT(load(&c,
		       "[upstream]\npsk-identity = x\n[store]\nbackend = postgresql\n"
		       "url = postgresql://u:secret@h/db\n",
		       err, sizeof(err)),
		  0);
	char *text = print(&c);
	CHECK(text && strstr(text, "url = postgresql://u:***@h/db\n") && !strstr(text, "u:secret"));
	free(text);
	CHECK_STR(c.store_url, "postgresql://u:secret@h/db"); /* used as written */
	config_free(&c);

	CHECK_INT(load(&c, "[device]\njoin-eui = 70b3d57ed0000001\n[qr]\nprofile-id = aabb1122\n",
		       err, sizeof(err)),
		  0);
	CHECK_STR(c.device_join_eui, "70B3D57ED0000001");
	CHECK_STR(c.qr_profile_id, "AABB1122");
	config_free(&c);

	CHECK_INT(load(&c,
		       "[station]\nmode = 0640\nallowed-uids = 0, 1000\nallowed-groups = root\n",
		       err, sizeof(err)),
		  0);
	CHECK_INT(c.station_mode, 0640);
	CHECK_INT(c.n_station_allowed_uids, 2);
	CHECK_INT(c.station_allowed_uids[1], 1000);
	CHECK_INT(c.n_station_allowed_gids, 1);
	CHECK_INT(c.station_allowed_gids[0], 0);
	config_free(&c);

	/* Printer urls with IPv6 addresses, with and without a port. */
	CHECK_INT(load(&c,
		       "[printer.a]\nurl = ipp://[::1]:8631/ipp/print\n"
		       "[printer.b]\nurl = socket://[fe80::1]\nlanguage = zpl\n",
		       err, sizeof(err)),
		  0);
	config_free(&c);

	/* Must fail, naming file:line. */
	static const struct {
		const char *text, *want;
	} bad[] = {
	    {"[limits]\nmax-clients = 0\n", "t.conf:2: limits.max-clients: '0' must be between"},
	    {"[limits]\nmax-clients = 12x\n", "t.conf:2:"},
	    {"[limits]\nmax-clients = -1\n", "t.conf:2:"},
	    {"[limits]\nmax-clients = 99999999999999999999999\n", "t.conf:2:"},
	    {"[limits]\nidle-timeout = 5 s\n", "t.conf:2:"},
	    {"[limits]\nidle-timeout = 5d\n", "t.conf:2:"},
	    {"[limits]\nmax-message = 1G\n", "t.conf:2:"},
	    {"\n\n[limits]\nnope = 1\n", "t.conf:4: unknown directive 'limits.nope'"},
	    {"sessions = 4\n", "t.conf:1: key 'sessions' outside of a [section]"},
	    {"[upstream\n", "t.conf:1: malformed section header"},
	    {"[upstream]\njust a line\n", "t.conf:2: expected"},
	    {"[upstream]\nurl = ftp://x\n", "t.conf:2:"},
	    {"[upstream]\nurl = https://\n", "t.conf:2:"},
	    {"[upstream]\ntls-min = 1.0\n", "t.conf:2:"},
	    {"[upstream]\nauth = oauth\n", "t.conf:2:"},
	    {"[upstream]\nauth = psk+oauth2\n", "oauth2.token-url"},
	    {"[upstream]\nbackoff-min = 10s\nbackoff-max = 1s\n", "backoff-min is larger"},
	    {"[station]\nmode = 0999\n", "t.conf:2:"},
	    {"[station]\nsocket =\n", "t.conf:2: station.socket: '' must not be empty"},
	    {"[station]\nsocket = tpad.sock\n",
	     "t.conf:2: station.socket: 'tpad.sock' must be an absolute path"},
	    {"[station]\nallowed-groups = no-such-group-here\n",
	     "'no-such-group-here' is not a group on this system"},
	    {"[station]\nallowed-groups = root, no-such-group-here\n",
	     "names 'no-such-group-here', not a group on this system"},
	    {"[device]\njoin-eui = 0011\n", "must be 16 hexadecimal digits"},
	    {"[qr]\nec-level = X\n", "t.conf:2:"},
	    {"[qr]\nformat = gif\n", "t.conf:2:"},
	    {"[admin]\nsocket = /run/tpad/station.sock\n", "are the same path"},
	    /* ZPL over IPP: print.c would make ZPL an IPP worker cannot send. */
	    {"[printer.a]\nurl = ipp://h/ipp/print\nlanguage = zpl\n",
	     "t.conf:3: printer.a.language = zpl needs a socket:// url"},
	    {"[printer.a]\nurl = socket://h\nlanguage = pdf\n", "t.conf:3: printer.a.language"},
	    {"[printer.a]\nurl = socket://user@h:9100\n", "t.conf:2: printer.a.url"},
	    {"[printer.a]\nurl = ipp://u:pw@h/ipp/print\n", "user name"},
	    {"[printer.a]\nurl = ipp://[::1/ipp\n", "not closed"},
	    {"[printer.a]\nurl = ipp://[]/ipp\n", "t.conf:2: printer.a.url"},
	    {"[printer.a]\nurl = ipp://[::1]x/ipp\n", "after the IPv6 address"},
	    {"[printer.a]\nurl = ipp://[::1]:/ipp\n", "bad port"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = load(&c, bad[i].text, err, sizeof(err));
		CHECK(r < 0);
		if (!strstr(err, bad[i].want)) {
			fprintf(stderr, "case %zu: error '%s' lacks '%s'\n", i, err, bad[i].want);
			CHECK(0);
		}
		config_free(&c);
	}

	if (argc > 1)
		test_shipped_file(argv[1]);
	else
		CHECK(!"path of conf/tpad.conf not given");
	return tap_done();
}
