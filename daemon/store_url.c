/* store_url: store.url checked as libpq parses it, and libpq's words without passwords. */
#include "store_url.h"

#include <errno.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "redact.h"
#include "utf8.h"

/* The value of each "password=" keyword (quoted or not) in text. */
static void redact_keywords(char *text)
{
	static const char kw[] = "password";
	for (char *p = text; (p = strcasestr(p, kw));) {
		char *v = p + strlen(kw);
		while (*v == ' ' || *v == '\t')
			v++;
		if (*v != '=' || (p > text && (p[-1] == '_' || p[-1] == '.' || p[-1] == '-'))) {
			p += strlen(kw);
			continue;
		}
		v++;
		while (*v == ' ' || *v == '\t')
			v++;
		size_t n;
		if (*v == '\'') {
			n = 1;
			while (v[n] && v[n] != '\'')
				n += v[n] == '\\' && v[n + 1] ? 2 : 1;
			n += v[n] == '\'';
		} else {
			n = strcspn(v, " \t\r\n\"&");
		}
		if (n)
			redact_span(text, (size_t)(v - text), (size_t)(v - text) + n);
		p = v;
	}
}

void store_url_redact(char *text)
{
	if (!text)
		return;
	redact_uri_passwords(text);
	redact_keywords(text);
}

/* A URI prefix libpq knows, or keyword=value pairs: anything else libpq takes as a name. */
static bool looks_like_conninfo(const char *url)
{
	return strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0 ||
	       (strchr(url, '=') && !strstr(url, "://"));
}

/*
 * Whether url may hold a password: a "user:password@" after "://", or a password keyword
 * or parameter. libpq's parse errors quote bits of the string (a bad percent-escape, the
 * word after a missing '='), which may be the password without any marker around it.
 */
static bool may_hold_password(const char *url)
{
	return redact_uri_has_userinfo(url, true) || strcasestr(url, "password") != NULL;
}

int store_url_check(const char *url, char *why, size_t whylen)
{
	if (!url || !looks_like_conninfo(url)) {
		snprintf(
		    why, whylen,
		    "store.url must be a libpq URI (postgresql://user@host/db) or keyword=value "
		    "pairs (host=... dbname=...)");
		return -EINVAL;
	}
	char *msg = NULL;
	PQconninfoOption *o = PQconninfoParse(url, &msg);
	if (o) {
		PQconninfoFree(o);
		return 0;
	}
	if (msg && may_hold_password(url)) {
		PQfreemem(msg);
		snprintf(why, whylen,
			 "store.url is not a valid connection string (libpq's reason is not shown: "
			 "it may quote the password); check its syntax, and percent-encode any of "
			 "%%:@/?#& in the password");
		return -EINVAL;
	}
	if (msg) {
		store_url_redact(msg);
		msg[strcspn(msg, "\n")] = '\0';
	}
	snprintf(why, whylen, "store.url is not a valid connection string: %s",
		 msg ? msg : "out of memory");
	int e = msg ? -EINVAL : -ENOMEM;
	PQfreemem(msg);
	return e;
}

void store_url_public(const char *url, char *buf, size_t len)
{
	snprintf(buf, len, "%s", url ? url : "");
	store_url_redact(buf);
}

void store_url_pq_line(const char *m, const char *dflt, char *buf, size_t len)
{
	if (!m || !*m)
		m = dflt;
	/*
	 * Redacted whole, then cut: a cut inside "user:password@" would hide nothing. Made
	 * valid UTF-8 (libpq's own messages follow the locale) and cut between characters:
	 * the reason goes into replies and, as a device's last error, into the database.
	 */
	char *line = utf8_clean(m, strcspn(m, "\n"));
	if (!line) {
		snprintf(buf, len, "%s", dflt);
		return;
	}
	store_url_redact(line);
	utf8_copy(buf, len, line);
	free(line);
}

bool store_url_has_password(const char *url)
{
	PQconninfoOption *opts = url ? PQconninfoParse(url, NULL) : NULL;
	bool has = false;
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "password") == 0 && o->val && *o->val)
			has = true;
	PQconninfoFree(opts);
	return has;
}

void store_url_pq_reason(PGconn *c, const PGresult *res, char *buf, size_t len)
{
	const char *m = res ? PQresultErrorMessage(res) : NULL;
	if (!m || !*m)
		m = c ? PQerrorMessage(c) : "no connection";
	store_url_pq_line(m, "unknown database error", buf, len);
}

int store_url_exec(PGconn *c, const char *sql, int n, const char *const *v, const int *lens,
		   const int *fmts, PGresult **ret, char *err, size_t errlen)
{
	PGresult *res = PQexecParams(c, sql, n, NULL, v, lens, fmts, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		if (err && errlen)
			store_url_pq_reason(c, res, err, errlen);
		PQclear(res);
		return -EIO;
	}
	if (ret)
		*ret = res;
	else
		PQclear(res);
	return 0;
}
