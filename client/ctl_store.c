/*
 * ctl_store: tpactl store copy --to URL and tpactl store restore FILE, which are tpad's
 * --copy-store and --restore-store run in its place.
 */
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

/* Check store copy's arguments; 0 or a usage exit status, said. */
static int copy_args(const struct ctl_args *a)
{
	if (a->argc != 1) {
		fprintf(stderr,
			"tpactl: store copy takes no file: give the database with --to URL\n");
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
	return 0;
}

/* Check store restore's arguments; 0 or a usage exit status, said. */
static int restore_args(const struct ctl_args *a)
{
	if (a->to) {
		fprintf(stderr, "tpactl: store restore takes no --to: it puts back store.path of "
				"tpad's configuration (--config)\n");
		return CTL_EXIT_USAGE;
	}
	if (a->argc != 2 || !*a->argv[1]) {
		fprintf(stderr, "tpactl: store restore needs the copy's FILE (made by tpactl "
				"backup)\n");
		return CTL_EXIT_USAGE;
	}
	return 0;
}

int ctl_store(struct ctl *c, struct ctl_args *a)
{
	(void)c;
	bool copy = strcmp(a->argv[0], "copy") == 0;
	if (!copy && strcmp(a->argv[0], "restore") != 0) {
		fprintf(stderr, "tpactl: store has two actions, copy and restore, not '%s'\n",
			a->argv[0]);
		return CTL_EXIT_USAGE;
	}
	int r = copy ? copy_args(a) : restore_args(a);
	if (r)
		return r;
	if (a->json) {
		fprintf(stderr, "tpactl: store %s prints tpad's report; it has no --json form\n",
			a->argv[0]);
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
	argv[n++] = copy ? "--copy-store" : "--restore-store";
	argv[n++] = (char *)(copy ? a->to : a->argv[1]);
	argv[n] = NULL;
	fflush(stdout);
	execv(tpad, argv);
	int e = errno;
	fprintf(stderr, "tpactl: cannot run %s: %s%s\n", tpad, strerror(e),
		e == ENOENT ? " (give tpad's path with --tpad)" : "");
	return CTL_EXIT_REPLY;
}
