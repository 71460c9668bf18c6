/* store_url: store.url checked as libpq parses it, and libpq's words without passwords. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>

/*
 * Remove the secrets from text in place: the password of any "scheme://user:password@"
 * (kept as "user:***@") and the value of any "password=" keyword (kept as "password=***").
 * For every libpq message tpad logs or returns: libpq may echo the connection string.
 */
void store_url_redact(char *text);

/*
 * 0 if url is a connection string libpq parses (postgresql:// or postgres:// URI, or
 * keyword=value pairs); else -EINVAL with why (no password in it).
 */
int store_url_check(const char *url, char *why, size_t whylen);

/* url without its password, for logs and Status. */
void store_url_public(const char *url, char *buf, size_t len);

/* The first line of libpq's message m (NULL: dflt) into buf, redacted as above. */
void store_url_pq_line(const char *m, const char *dflt, char *buf, size_t len);

/* True if url parses and gives a password of its own. */
bool store_url_has_password(const char *url);

/* libpq's reason for a failure on c (res's message, else the connection's), as above. */
void store_url_pq_reason(PGconn *c, const PGresult *res, char *buf, size_t len);

/*
 * Run sql with n parameters on the blocking connection c (lens and fmts NULL: all text):
 * 0 with the result in *ret (ret NULL: cleared), or -EIO with libpq's reason in err.
 */
int store_url_exec(PGconn *c, const char *sql, int n, const char *const *v, const int *lens,
		   const int *fmts, PGresult **ret, char *err, size_t errlen);
