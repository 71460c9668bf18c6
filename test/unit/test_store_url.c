/* Unit tests for store_url: secrets taken out of libpq's words, store.url checked. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store_url.h"
#include "tap.h"

/* text redacted, as a static copy. */
static const char *redacted(const char *text)
{
	static char buf[512];
	snprintf(buf, sizeof(buf), "%s", text);
	store_url_redact(buf);
	return buf;
}

static void test_redact(void)
{
	static const struct {
		const char *in, *out;
	} cases[] = {
	    /* libpq's own words about a malformed URI. */
	    {"invalid URI query parameter: \"postgresql://tpad:SECRETPW@[::1/tpad\"",
	     "invalid URI query parameter: \"postgresql://tpad:***@[::1/tpad\""},
	    {"postgres://u:p%40ss@h:5432/db?sslmode=require",
	     "postgres://u:***@h:5432/db?sslmode=require"},
	    /* A raw '@' or '/' in the password: up to the last '@'. */
	    {"postgresql://u:a@b/c@host/db", "postgresql://u:***@host/db"},
	    /* A user alone, a host with a port: nothing to hide. */
	    {"postgresql://tpad@db:5432/tpad", "postgresql://tpad@db:5432/tpad"},
	    {"postgresql://db:5432/tpad", "postgresql://db:5432/tpad"},
	    /* Keyword values, quoted or not, in any case; other keywords stay. */
	    {"host=db password=s3cret dbname=tpad", "host=db password=*** dbname=tpad"},
	    {"PASSWORD = 'a b\\' c' user=x", "PASSWORD = *** user=x"},
	    {"postgresql://db/tpad?password=s3cret&sslmode=require",
	     "postgresql://db/tpad?password=***&sslmode=require"},
	    {"password authentication failed for user \"tpad\"",
	     "password authentication failed for user \"tpad\""},
	    {"store.password-file=/x", "store.password-file=/x"},
	    /* A secret shorter than the mark is masked to its length. */
	    {"postgresql://u:p@h/db", "postgresql://u:*@h/db"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		CHECK_STR(redacted(cases[i].in), cases[i].out);
	char line[128];
	store_url_pq_line("FATAL: x in \"postgresql://a:b1@h/d\"\nDETAIL: y", NULL, line,
			  sizeof(line));
	CHECK_STR(line, "FATAL: x in \"postgresql://a:**@h/d\"");
	store_url_pq_line(NULL, "unknown", line, sizeof(line));
	CHECK_STR(line, "unknown");
	/* A line longer than the buffer is redacted before it is cut. */
	char small[40];
	store_url_pq_line("[connection to postgresql://tpad:verylongsecret@h/d]", NULL, small,
			  sizeof(small));
	CHECK(strstr(small, "verylon") == NULL);
}

static void test_check(void)
{
	char why[256];
	CHECK_INT(
	    store_url_check("postgresql://tpad@db/tpad?sslmode=verify-full", why, sizeof(why)), 0);
	CHECK_INT(store_url_check("host=db dbname=tpad", why, sizeof(why)), 0);
	CHECK_INT(store_url_check("postgresql://tpad:SECRETPW@[::1/tpad", why, sizeof(why)),
		  -EINVAL);
	CHECK(strstr(why, "store.url") != NULL);
	CHECK(strstr(why, "SECRETPW") == NULL);
	/* libpq quotes a bad escape or the word after a missing '=' without any marker. */
	static const char *const quoting[] = {"postgresql://tpad:s3cr%zzt@db/tpad",
					      "postgresql://tpad:p%00w@db/tpad",
					      "host=db password=abc def dbname=x"};
	for (size_t i = 0; i < sizeof(quoting) / sizeof(quoting[0]); i++) {
		CHECK_INT(store_url_check(quoting[i], why, sizeof(why)), -EINVAL);
		CHECK(strstr(why, "s3cr") == NULL && strstr(why, "p%00w") == NULL &&
		      strstr(why, "def") == NULL);
		CHECK(strstr(why, "store.url") != NULL);
	}
	/* Without a password libpq's reason is shown. */
	CHECK_INT(store_url_check("host=db dbname", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "missing") != NULL);
	CHECK_INT(store_url_check("/var/lib/tpad/tpad.db", why, sizeof(why)), -EINVAL);
	CHECK_INT(store_url_check("mysql://a/b", why, sizeof(why)), -EINVAL);
	CHECK(store_url_has_password("postgresql://u:pw@h/db"));
	CHECK(store_url_has_password("host=h password=pw"));
	CHECK(!store_url_has_password("postgresql://u@h/db"));
	char pub[128];
	store_url_public("postgresql://u:pwd1@h/db", pub, sizeof(pub));
	CHECK_STR(pub, "postgresql://u:***@h/db");
}

int main(void)
{
	test_redact();
	test_check();
	return tap_done();
}
