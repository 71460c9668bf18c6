/* Unit tests for secrets: reading, trimming, permission checks, hex decoding, precedence. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cred.h"
#include "tap.h"

static char dir[] = "/tmp/test-cred-XXXXXX";

/* Write text to dir/name with mode; returns the path (static buffer per call). */
static const char *put(const char *name, const char *text, mode_t mode)
{
	static char paths[8][512];
	static int next;
	char *p = paths[next++ % 8];
	snprintf(p, 512, "%s/%s", dir, name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	CHECK_INT(write(fd, text, strlen(text)), (long long)strlen(text));
	close(fd);
	chmod(p, mode);
	return p;
}

int main(void)
{
	CHECK(mkdtemp(dir) != NULL);
	char buf[64];

	CHECK_INT(cred_read_file(put("a", "  s3cret \n\n", 0600), true, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "s3cret");
	CHECK_INT(cred_read_file(put("b", "", 0600), true, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "");
	/* Readable by others: refused when private_only, read otherwise. */
	const char *loose = put("c", "x\n", 0644);
	CHECK_INT(cred_read_file(loose, true, buf, sizeof(buf)), -EPERM);
	CHECK_INT(cred_read_file(loose, false, buf, sizeof(buf)), 0);
	CHECK_STR(buf, "x");
	CHECK_INT(cred_read_file(put("d", "0123456789", 0600), true, buf, 8), -E2BIG);
	CHECK_INT(cred_read_file(dir, true, buf, sizeof(buf)), -EINVAL);
	CHECK_INT(cred_read_file("/nonexistent/secret", true, buf, sizeof(buf)), -ENOENT);
	/* A FIFO in a key's place is refused at once, not waited on for a writer. */
	char fifo[512];
	snprintf(fifo, sizeof(fifo), "%s/fifo", dir);
	CHECK_INT(mkfifo(fifo, 0600), 0);
	alarm(5); /* the old open() blocked here for ever */
	CHECK_INT(cred_read_file(fifo, true, buf, sizeof(buf)), -EINVAL);
	alarm(0);
	unlink(fifo);

	/* Hex: decoded, bounded, must-fail cases. */
	uint8_t key[4];
	size_t len = 0;
	unsetenv("CREDENTIALS_DIRECTORY");
	CHECK_INT(cred_load_hex("k", put("k1", "deadBEEF\n", 0600), key, sizeof(key), &len), 0);
	CHECK_INT(len, 4);
	CHECK(key[0] == 0xde && key[3] == 0xef);
	CHECK_INT(cred_load_hex("k", put("k2", "deadbee", 0600), key, 4, &len), -EBADMSG);
	CHECK_INT(cred_load_hex("k", put("k3", "deadbeeg", 0600), key, 4, &len), -EBADMSG);
	const char *k4 = put("k4", "deadbeef00", 0600);
	CHECK_INT(cred_load_hex("k", k4, key, 4, &len), -E2BIG);
	char limit[700]; /* the refusal says how long it may be */
	cred_explain(-E2BIG, "k", k4, limit, sizeof(limit));
	CHECK(strstr(limit, "longer secret than allowed (at most 4 bytes, 8 hexadecimal digits; "
			    "it has 10)") != NULL);
	CHECK_INT(cred_load_hex("k", put("k5", " \n", 0600), key, 4, &len), -ENODATA);
	CHECK_INT(cred_load_hex("k", put("k6", "deadbeef", 0640), key, 4, &len), 0);
	CHECK_INT(cred_load_hex("k", put("k7", "deadbeef", 0604), key, 4, &len), -EPERM);
	/* Writable by its group (which could put its own key in): refused, with the chmod. */
	CHECK_INT(cred_load_hex("k", put("k8", "deadbeef", 0660), key, 4, &len), -EPERM);
	CHECK_INT(cred_load_hex("k", put("k9", "deadbeef", 0620), key, 4, &len), -EPERM);
	CHECK_INT(cred_load_hex("k", put("k10", "deadbeef", 0640), key, 4, &len), 0);
	char fix[700];
	const char *gw = put("k11", "deadbeef", 0660);
	cred_explain(-EPERM, "k", gw, fix, sizeof(fix));
	CHECK(strstr(fix, "is writable by its group: run chmod g-w ") != NULL);
	const char *both = put("k12", "deadbeef", 0666);
	cred_explain(-EPERM, "k", both, fix, sizeof(fix));
	CHECK(strstr(fix, "readable by other users and writable by its group: run chmod "
			  "o-rwx,g-w ") != NULL);
	const char *oth = put("k13", "deadbeef", 0604);
	cred_explain(-EPERM, "k", oth, fix, sizeof(fix));
	CHECK(strstr(fix, "is readable by other users: run chmod o-rwx ") != NULL);
	CHECK_INT(cred_load_hex("k", NULL, key, 4, &len), -ENOENT);

	/* The credentials directory comes first; the fallback only when it lacks the name. */
	char creds[600];
	snprintf(creds, sizeof(creds), "%s/creds", dir);
	CHECK_INT(mkdir(creds, 0700), 0);
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	const char *fallback = put("fb", "01020304", 0600);
	CHECK_INT(cred_load_hex("tpa-psk", fallback, key, 4, &len), 0);
	CHECK_INT(key[0], 1);
	put("creds/tpa-psk", "0a0b0c0d", 0600);
	CHECK_INT(cred_load_hex("tpa-psk", fallback, key, 4, &len), 0);
	CHECK_INT(key[0], 0x0a);
	char text[16];
	put("creds/oauth-secret", "pa ss\n", 0600);
	CHECK_INT(cred_load_text("oauth-secret", NULL, text, sizeof(text)), 0);
	CHECK_STR(text, "pa ss");
	CHECK_INT(cred_load_text("oauth-secret", NULL, text, 3), -E2BIG);
	cred_explain(-E2BIG, "oauth-secret", NULL, limit, sizeof(limit));
	CHECK(strstr(limit, "(at most 2 characters; it has 5)") != NULL);

	/* What a check by hand can see; why an empty file was refused. */
	char why[700];
	CHECK(cred_visible(NULL));
	unsetenv("CREDENTIALS_DIRECTORY");
	CHECK(!cred_visible(NULL) && !cred_visible(""));
	CHECK(cred_visible(fallback));
	const char *empty = put("empty", "", 0600);
	CHECK_INT(cred_load_text("as-rsa-key", empty, text, sizeof(text)), -ENODATA);
	cred_explain(-ENODATA, "as-rsa-key", empty, why, sizeof(why));
	CHECK(strstr(why, "is empty") != NULL && strstr(why, "hexadecimal") == NULL);

	/*
	 * A missing file is named when its value reads as a path; a value that may be the
	 * secret itself (no dot, or an absolute name in no directory that exists, as base64
	 * can be) is not.
	 */
	char missing[600];
	snprintf(missing, sizeof(missing), "%s/missing-key", dir);
	const char *hidden[] = {
	    "0a0b0c0d",		"/Zk3x+AbCdEf",	 "/Zk3x/AbC+dEf", "/",
	    "Zk3x/AbC+dEf",	"//poHFJz1T07",	 "///Zk3x", /* (in /, not a path) */
	    "My.Pass-word2024", "hunter2.final", "tpa.psk",	  ".hidden"};
	for (size_t i = 0; i < sizeof(hidden) / sizeof(hidden[0]); i++) {
		cred_explain(-ENOENT, "tpa-psk", hidden[i], why, sizeof(why));
		CHECK(strstr(why, "names no file") != NULL);
		CHECK(!hidden[i][1] || strstr(why, hidden[i] + 1) == NULL);
	}
	char relative[600]; /* a relative path with a slash and no dot, in a directory here */
	snprintf(relative, sizeof(relative), "%s/missing-key", dir[0] == '/' ? dir + 1 : dir);
	CHECK(chdir("/") == 0);
	const char *shown[] = {missing, relative};
	for (size_t i = 0; i < sizeof(shown) / sizeof(shown[0]); i++) {
		cred_explain(-ENOENT, "tpa-psk", shown[i], why, sizeof(why));
		CHECK(strstr(why, shown[i]) != NULL && strstr(why, "does not exist") != NULL);
	}

	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_INT(system(cmd), 0);
	return tap_done();
}
