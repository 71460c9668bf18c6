/* Unit tests for redact: passwords in URLs, secrets and tokens a peer quotes back. */
#include <stdio.h>
#include <string.h>

#include "redact.h"
#include "tap.h"

static void check_secret(const char *text, const char *secret, const char *want)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", text);
	redact_secret(buf, secret);
	CHECK_STR(buf, want);
}

static void check_tokens(const char *text, const char *want)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", text);
	redact_tokens(buf);
	CHECK_STR(buf, want);
}

static void check_uri(const char *text, const char *want)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", text);
	redact_uri_passwords(buf);
	CHECK_STR(buf, want);
}

int main(void)
{
	check_secret("bad secret S3cr3t-Passw0rd!x", "S3cr3t-Passw0rd!x", "bad secret ***");
	check_secret("client_secret=S3cr3t and S3cr3t again", "S3cr3t",
		     "client_secret=*** and *** again");
	check_secret("S3cr3tS3cr3t", "S3cr3t", "******");
	check_secret("abcabc", "abc", "abcabc"); /* under 4 bytes: not looked for */
	check_secret("a secret of its own", "****", "a secret of its own");
	check_secret("one ****x", "****", "one ***x"); /* never loops on its own mark */
	check_secret("nothing here", "", "nothing here");
	check_secret("nothing here", NULL, "nothing here");

	check_tokens("token rejected: bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc-_",
		     "token rejected: bearer ***");
	check_tokens("Authorization: Bearer   abc123/+= was refused",
		     "Authorization: Bearer   *** was refused");
	check_tokens("jwt eyJhbGciOiJIUzI1NiJ9.eyJz.x expired", "jwt *** expired");
	check_tokens("eyJshort is no token", "eyJshort is no token");
	check_tokens("keyJabcdefghijklmnopqrstuvwxyz", "keyJabcdefghijklmnopqrstuvwxyz");
	check_tokens("Bearer", "Bearer");
	check_tokens("bearer ***", "bearer ***");
	check_tokens("no token here", "no token here");

	check_uri("postgresql://tpad:secret@db/tpad", "postgresql://tpad:***@db/tpad");
	check_uri("postgresql://tpad:pw@db/tpad",
		  "postgresql://tpad:**@db/tpad"); /* never longer */
	check_uri("http://user@host/", "http://user@host/");
	return tap_done();
}
