/* Protocol corpus runner: every must-pass and must-fail message of test/proto/. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iface.h"
#include "message.h"
#include "tap.h"

/* PASS and FAIL cases seen per method of the table, to prove each one is covered. */
static size_t n_methods;
static const struct method_spec *methods;
static int pass_seen[64], fail_seen[64];

/* Count a case for the method named in a decoded call. */
static void cover(const char *method, bool pass)
{
	for (size_t i = 0; i < n_methods; i++)
		if (strcmp(methods[i].name, method) == 0)
			(pass ? pass_seen : fail_seen)[i]++;
}

/* Decode and check msg on sock: 0, or the failure with fault set. Counts coverage. */
static int run(const char *msg, size_t len, unsigned sock, bool pass, struct proto_fault *f)
{
	struct call c = {0};
	int r = call_decode(msg, len, &c, f);
	if (r < 0) {
		/* Still count a refused message for the method it names, if it names one. */
		json_t *root = json_loadb(msg, len, 0, NULL);
		const char *name = json_string_value(json_object_get(root, "method"));
		if (name)
			cover(name, pass);
		json_decref(root);
		return r;
	}
	cover(c.method, pass);
	const struct method_spec *m = NULL;
	r = proto_check(&c, sock, &m, f);

	/* A passing call survives being encoded and decoded again. */
	if (r == 0) {
		size_t n = 0;
		char *again = call_encode(c.method, c.parameters, c.more, c.oneway, &n);
		struct call c2 = {0};
		struct proto_fault f2 = {0};
		const struct method_spec *m2 = NULL;
		CHECK(again != NULL);
		if (again) {
			CHECK_INT(call_decode(again, n, &c2, &f2), 0);
			CHECK_INT(proto_check(&c2, sock, &m2, &f2), 0);
			CHECK(m2 == m);
			call_clear(&c2);
			free(again);
		}
	}
	call_clear(&c);
	return r;
}

/* Take the next space-terminated word of *p, or NULL. */
static char *word(char **p)
{
	char *s = *p, *sp = strchr(s, ' ');
	if (!sp)
		return NULL;
	*sp = '\0';
	*p = sp + 1;
	return s;
}

/* Run every case of one corpus file; returns the number of cases or -1. */
static int run_file(const char *path)
{
	FILE *fp = fopen(path, "r");
	if (!fp) {
		perror(path);
		return -1;
	}
	unsigned sock = 0;
	int cases = 0, lineno = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, fp)) >= 0) {
		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		if (strcmp(line, "@socket station") == 0) {
			sock = PROTO_SOCKET_STATION;
			continue;
		}
		if (strcmp(line, "@socket admin") == 0) {
			sock = PROTO_SOCKET_ADMIN;
			continue;
		}
		if (strcmp(line, "@socket as-apps") == 0) {
			sock = PROTO_SOCKET_AS_APPS;
			continue;
		}
		if (strcmp(line, "@socket as-admin") == 0) {
			sock = PROTO_SOCKET_AS_ADMIN;
			continue;
		}

		char *p = line, *kind = word(&p);
		bool pass = kind && strcmp(kind, "PASS") == 0;
		bool fail = kind && strcmp(kind, "FAIL") == 0;
		char *error = fail ? word(&p) : NULL, *what = fail ? word(&p) : NULL;
		if (!sock || !(pass || (fail && error && what))) {
			fprintf(stderr, "%s:%d: malformed corpus line\n", path, lineno);
			tap_failed++;
			continue;
		}
		if (what && strcmp(what, "-") == 0)
			what = (char *)"";

		struct proto_fault f = {0};
		int r = run(p, strlen(p), sock, pass, &f);
		tap_run++;
		cases++;
		if (pass && r != 0) {
			tap_failed++;
			fprintf(stderr, "%s:%d: want PASS, got %s \"%s\" (%s)\n", path, lineno,
				f.error, f.parameter, f.reason);
		} else if (fail && r == 0) {
			tap_failed++;
			fprintf(stderr, "%s:%d: want FAIL %s, got PASS\n", path, lineno, error);
		} else if (fail &&
			   (strcmp(f.error, error) != 0 || strcmp(f.parameter, what) != 0)) {
			tap_failed++;
			fprintf(stderr, "%s:%d: want %s \"%s\", got %s \"%s\" (%s)\n", path, lineno,
				error, what, f.error, f.parameter, f.reason);
		} else if (fail) {
			/* The error reply a client would get names the same error. */
			size_t len = 0;
			char *reply = fault_encode(&f, &len);
			struct reply rep = {0};
			CHECK(reply && reply_decode(reply, len, &rep) == 0);
			CHECK_STR(rep.error, error);
			reply_clear(&rep);
			free(reply);
		}
	}
	free(line);
	fclose(fp);
	return cases;
}

int main(int argc, char **argv)
{
	methods = proto_methods(&n_methods);
	if (argc < 2 || n_methods > sizeof(pass_seen) / sizeof(pass_seen[0])) {
		fprintf(stderr, "usage: test-corpus FILE.corpus...\n");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		int cases = run_file(argv[i]);
		CHECK(cases > 0);
		printf("%s: %d cases\n", argv[i], cases);
	}
	for (size_t i = 0; i < n_methods; i++) {
		if (!pass_seen[i] || !fail_seen[i]) {
			tap_failed++;
			fprintf(stderr,
				"%s: %d PASS and %d FAIL cases; need at least one of each\n",
				methods[i].name, pass_seen[i], fail_seen[i]);
		}
	}
	return tap_done();
}
