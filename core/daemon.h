/* daemon: what each daemon's main() does alike: its command line and its stop signals. */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>

#include <event2/event.h>

/* The command line every daemon takes (see tpad(8), tpas(8)). */
struct daemon_cmdline {
	const char *config;   /* -c FILE, else the program's default path */
	bool explicit_config; /* -c was given */
	bool check;	      /* -n, --check-config */
	bool print;	      /* -p, --print-config */
	const char *copy_store;	   /* --copy-store URL, where the program takes it */
	const char *restore_store; /* --restore-store FILE, likewise */
};

/*
 * Parse argv for the program name (its version, default configuration path, whether it
 * takes --copy-store and --restore-store, and its usage text). -v turns on verbose
 * logging. Returns -1 to go on with *ret filled, else the exit status: 0 after --version or
 * --help, 2 after a usage error (said on stderr with the usage).
 */
int daemon_cmdline_parse(int argc, char **argv, const char *name, const char *version,
			 const char *default_config, bool store_tools, void (*usage)(FILE *f),
			 struct daemon_cmdline *ret);

/*
 * No core file: a core would hold the store key, the PSK and the AppKeys in memory. Marks
 * the process not dumpable (no core to a core_pattern pipe either, no ptrace or
 * /proc/PID/mem by its user) and sets the core size limit (soft and hard) to 0 for this
 * process and its children; under the units, whose system call filter refuses setrlimit,
 * LimitCORE=0 has done that already.
 */
void daemon_no_core_dumps(void);

/*
 * SIGTERM and SIGINT (stop), and SIGHUP (reload; ignored when reload is NULL), on the
 * loop. Until this is called they keep their default action, so that a daemon still
 * starting dies of them; from then on they are blocked in the calling thread, read from
 * a signalfd, and never interrupt a thread (start workers with thread_start()).
 */
struct daemon_signals;

/* NULL when out of memory. The callbacks get the signal number and arg. */
struct daemon_signals *daemon_signals_new(struct event_base *base, event_callback_fn stop,
					  event_callback_fn reload, void *arg);

/*
 * Stop listening for the signals: they stay blocked, so one that comes during the
 * teardown is never acted on (a repeated SIGTERM cannot cut it short). Accepts NULL.
 */
void daemon_signals_free(struct daemon_signals *s);

/*
 * SIGHUP's report once the file at path was read again into fresh and its limits applied:
 * each directive whose value (as print writes it) differs from running's is logged as
 * taking effect at the next start, the [limits] aside.
 */
void daemon_reload_report(const char *path, void (*print)(const void *cfg, FILE *f),
			  const void *running, const void *fresh);

/*
 * --check-config: whether credential name (or the file directive names) can be read
 * here; when not (cred_visible), a notice says it is not checked, instead of an error.
 */
bool daemon_cred_visible(const char *name, const char *file, const char *directive);

/* A file read at start only (a certificate, a key), as it was then. */
struct daemon_file {
	const char *directive; /* NULL: none */
	char path[PATH_MAX];
	struct stat st;
	bool seen; /* st is valid */
};

/*
 * Note the file directive names (credential, if not NULL, in the credentials directory
 * first, as cred_source finds it); nothing when neither is set.
 */
void daemon_file_note(struct daemon_file *f, const char *directive, const char *credential,
		      const char *path);

/*
 * SIGHUP: name each noted file that changed on disk since the start (replaced, rewritten
 * or removed): prog reads it at start only, so a restart is needed to use it.
 */
void daemon_files_report(const struct daemon_file *f, size_t n, const char *prog);

/* Descriptors the metrics endpoint (core/httpd) keeps open at most. */
#define DAEMON_METRICS_CONNS 16

/*
 * Warn when the daemon's limits may need more descriptors than the open-file limit
 * allows: accepting would then fail before the limits are reached. what names the
 * directives that set need ("limits.max-clients (1024)").
 */
void daemon_check_fd_limit(unsigned long long need, const char *what);

/*
 * Whether path lies in a /tmp or /var/tmp that systemd made private to this service
 * (PrivateTmp=yes: the mount's root in mountinfo, normally /proc/self/mountinfo, is a
 * systemd-private-* directory): a file written there is seen by no one else and goes
 * when the service stops.
 */
bool daemon_private_tmp(const char *path, const char *mountinfo);
