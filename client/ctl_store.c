/* ctl_store: tpactl store copy --to URL, which is tpad's --copy-store run in its place. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "tpad-build.h"

/*
 * What tpad's store.url takes: a libpq URI, or keyword=value pairs (anything else libpq
 * would take as a database name). tpad checks the rest, without echoing a password.
 */
static bool store_target_ok(const char *to)
{
	return strncmp(to, "postgresql://", 13) == 0 || strncmp(to, "postgres://", 11) == 0 ||
	       (strchr(to, '=') && !strstr(to, "://"));
}

int ctl_store(struct ctl *c, struct ctl_args *a)
{
	(void)c;
	if (strcmp(a->argv[0], "copy") != 0) {
		fprintf(stderr, "tpactl: store has one action, copy, not '%s'\n", a->argv[0]);
		return CTL_EXIT_USAGE;
	}
	if (!a->to || !*a->to) {
		fprintf(stderr, "tpactl: store copy needs --to URL (the PostgreSQL database)\n");
		return CTL_EXIT_USAGE;
	}
	if (!store_target_ok(a->to)) {
		fprintf(stderr,
			"tpactl: store copy --to takes a PostgreSQL database: a postgresql:// or "
			"postgres:// URI, or libpq keyword=value pairs (what was given is not "
			"repeated: it may hold a password)\n");
		return CTL_EXIT_USAGE;
	}
	if (a->json) {
		fprintf(stderr, "tpactl: store copy prints tpad's report; it has no --json form\n");
		return CTL_EXIT_USAGE;
	}
	/* tpad reads the store, its key and the database's password as it does at start. */
	const char *tpad = a->tpad ? a->tpad : TPAD_SBINDIR "/tpad";
	char *argv[7];
	int n = 0;
	argv[n++] = (char *)tpad;
	if (a->config) {
		argv[n++] = "--config";
		argv[n++] = (char *)a->config;
	}
	argv[n++] = "--copy-store";
	argv[n++] = (char *)a->to;
	argv[n] = NULL;
	fflush(stdout);
	execv(tpad, argv);
	int e = errno;
	fprintf(stderr, "tpactl: cannot run %s: %s%s\n", tpad, strerror(e),
		e == ENOENT ? " (give tpad's path with --tpad)" : "");
	return CTL_EXIT_REPLY;
}
