/* tpad: the ThingPark Activation factory daemon — start-up, event loop and shutdown. */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "clock.h"
#include "cred.h"
#include "daemon.h"
#include "dispatch.h"
#include "layout.h"
#include "listener.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "sqlsetup.h"
#include "store_url.h"
#include "tpad-build.h"
#include "tpad.h"
#include "wipe.h"

/* How long SIGTERM waits for calls in flight before closing clients anyway. */
#define STOP_TIMEOUT_MS 30000
/* How often STATUS= is refreshed (systemctl status shows the upstream as it is now). */
#define STATUS_PERIOD_S 1

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tpad [--config FILE] [--verbose]\n"
		"       tpad [--config FILE] --check-config | --print-config\n"
		"       tpad [--config FILE] --copy-store URL\n"
		"       tpad [--config FILE] --restore-store FILE\n"
		"       tpad --version | --help\n"
		"\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"  -n, --check-config  check the configuration, credentials and SQLite store, and "
		"exit\n"
		"                      (0 valid, 1 not)\n"
		"  -p, --print-config  print every directive's effective value and exit\n"
		"      --copy-store URL  copy the SQLite store (store.path) into the PostgreSQL\n"
		"                      database at URL (libpq URI or keyword=value pairs),\n"
		"                      resumable, verified; then exit (0 copied, 1 not)\n"
		"      --restore-store FILE  with tpad stopped, put the SQLite store back from\n"
		"                      FILE (a tpactl backup), checked with the store key; the\n"
		"                      store it replaces is kept; then exit (0 restored, 1 not)\n"
		"  -v, --verbose       log debug messages\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          show this help\n",
		CONFIG_DEFAULT_PATH);
}

/*
 * Load the configuration; a missing default file means the built-in defaults. keep (may be
 * NULL): the store key read for the check (see dispatch_check_config()).
 */
static int load_config(struct config *cfg, const char *path, bool explicit_path,
		       struct check_key *keep)
{
	char err[512];
	config_defaults(cfg);
	if (!explicit_path && access(path, F_OK) < 0 && errno == ENOENT) {
		log_notice("%s not found, using built-in defaults", path);
		return 0;
	}
	int r = config_load(cfg, path, err, sizeof(err));
	if (r < 0) {
		log_errx("%s", err);
		return r;
	}
	r = dispatch_check_config(cfg, path, keep, err, sizeof(err));
	if (r < 0) {
		log_errx("%s", err);
		return r;
	}
	return 0;
}

/* Refresh the one-line STATUS= for systemctl status. */
static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpad *t = arg;
	char line[512];
	dispatch_status_line(t, line, sizeof(line));
	notify_status(line);
}

/* The server has answered every call in flight: leave the loop. */
static void drained_cb(void *arg)
{
	struct tpad *t = arg;
	event_base_loopexit(t->base, NULL);
}

/* SIGTERM / SIGINT: stop accepting, finish calls in flight, exit 0. */
static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct tpad *t = arg;
	if (t->stopping)
		return;
	t->stopping = true;
	log_notice("received %s, finishing calls in flight", strsignal((int)sig));
	notify_stopping();
	for (int i = 0; i < SOCK_KINDS; i++) {
		listener_free(t->listeners[i]);
		t->listeners[i] = NULL;
	}
	server_stop(t->srv, STOP_TIMEOUT_MS, drained_cb, t);
}

/* The configuration as printed, for comparing two of them. */
static void print_config(const void *cfg, FILE *f)
{
	config_print(cfg, f, false);
}

/*
 * SIGHUP: read the configuration again. The limits.* apply at once to every client;
 * anything else is named in the log as needing a restart. A file that does not parse, or
 * that --check-config would refuse, changes nothing. No call is dropped either way.
 */
static void reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct tpad *t = arg;
	if (!t->config_path) {
		log_notice("SIGHUP: started without a configuration file; nothing to reload");
		return;
	}
	struct config fresh;
	config_defaults(&fresh);
	char err[512];
	int r = config_load(&fresh, t->config_path, err, sizeof(err));
	/* What a start would refuse (a label the captions do not fit, say) is refused now:
	 * taken, it would stop the line at its next restart. */
	if (r == 0)
		r = dispatch_check_config(&fresh, t->config_path, NULL, err, sizeof(err));
	if (r < 0) {
		log_errx("SIGHUP: keeping the running configuration: %s", err);
		config_free(&fresh);
		return;
	}
	server_set_limits(t->srv, &fresh.limits);
	daemon_reload_report(t->config_path, print_config, t->cfg, &fresh);
	daemon_files_report(t->start_files, sizeof(t->start_files) / sizeof(t->start_files[0]),
			    "tpad");
	config_free(&fresh);
}

/* The upstream's certificate and key files and the store's password file as read at start,
 * for SIGHUP to compare. */
static void note_start_files(struct tpad *t)
{
	const struct config *c = t->cfg;
	bool cert = c->upstream_tls == UPSTREAM_TLS_CERT;

	daemon_file_note(&t->start_files[0], "upstream.ca-file", NULL, c->upstream_ca_file);
	daemon_file_note(&t->start_files[1], "upstream.client-cert", NULL, c->upstream_client_cert);
	daemon_file_note(&t->start_files[2], "upstream.client-key-file",
			 cert && c->upstream_client_cert ? "tpa-client-key" : NULL,
			 cert && c->upstream_client_cert ? c->upstream_client_key_file : NULL);
	daemon_file_note(&t->start_files[3], "upstream.psk-file", cert ? NULL : "tpa-psk",
			 cert ? NULL : c->upstream_psk_file);
	/* The database's password too: a role's rotated password needs a restart as well. */
	bool pg = strcmp(c->store_backend, "postgresql") == 0;
	daemon_file_note(&t->start_files[4], "store.password-file", pg ? "store-password" : NULL,
			 pg ? c->store_password_file : NULL);
}

/* --check-config passed: say so, and what a check cannot see. */
static void check_said(const struct config *cfg, const char *what)
{
	printf("%s: configuration is valid\n", what);
	if (strcmp(cfg->store_backend, "postgresql") == 0) {
		char pub[512];
		store_url_public(cfg->store_url ? cfg->store_url : "", pub, sizeof(pub));
		printf("%s: the PostgreSQL store (%s) was not contacted: a start tries the "
		       "connection, the password and the role's rights\n",
		       what, pub);
	}
}

/* Open both sockets; on failure logs and returns a negative errno. */
static int open_listeners(struct tpad *t)
{
	const struct config *c = t->cfg;
	char err[512];
	int r = listener_open(t->base, t->srv, SOCK_STATION, c->station_socket, c->station_mode,
			      c->station_group, &t->listeners[SOCK_STATION], err, sizeof(err));
	if (r == 0)
		r = listener_open(t->base, t->srv, SOCK_ADMIN, c->admin_socket, c->admin_mode,
				  c->admin_group, &t->listeners[SOCK_ADMIN], err, sizeof(err));
	if (r < 0) {
		log_errx("%s", err);
		return r;
	}
	listener_close_unused();
	return 0;
}

/* Run the daemon until a stop signal; returns the exit status. */
/* The station and admin clients, the cloud sessions, the store's connections, /metrics,
 * the printers, and 64 of our own: within the open-file limit? */
static void check_fd_limit(const struct config *c)
{
	char what[128];
	snprintf(what, sizeof(what), "limits.max-clients (%u) and upstream.sessions (%u)",
		 c->limits.max_clients, c->upstream_sessions);
	daemon_check_fd_limit((unsigned long long)c->limits.max_clients + c->upstream_sessions +
				  c->store_connections + c->n_printers +
				  (c->metrics_listen ? DAEMON_METRICS_CONNS : 0) + 64,
			      what);
}

static int run(struct config *cfg, const char *config_path)
{
	struct tpad t = {.cfg = cfg, .config_path = config_path, .started_us = clock_now_us()};
	struct daemon_signals *sigs = NULL;
	struct event *ev_status = NULL;
	int status = 1;

	signal(SIGPIPE, SIG_IGN);
	t.base = event_base_new();
	if (!t.base) {
		log_errx("cannot create the event loop");
		return 1;
	}
	t.srv = server_new(t.base, &cfg->limits, dispatch_call, &t);
	if (!t.srv) {
		log_errx("out of memory");
		goto out;
	}
	check_fd_limit(cfg);
	note_start_files(&t);
	if (dispatch_init(&t) < 0 || open_listeners(&t) < 0)
		goto out;
	sigs = daemon_signals_new(t.base, stop_cb, reload_cb, &t);
	ev_status = event_new(t.base, -1, EV_PERSIST, status_cb, &t);
	if (!sigs || !ev_status || notify_init(t.base) < 0) {
		log_errx("out of memory");
		goto out;
	}
	struct timeval period = {.tv_sec = STATUS_PERIOD_S};
	event_add(ev_status, &period);

	char line[512];
	dispatch_status_line(&t, line, sizeof(line));
	notify_ready(line);
	log_notice("tpad %s ready", TPAD_VERSION);

	if (event_base_dispatch(t.base) < 0)
		log_errx("event loop failed");
	else
		status = 0;
	log_notice("tpad stopped");
out:
	notify_finish();
	/* A repeated SIGTERM must not cut short the store's last commit below. */
	daemon_signals_free(sigs);
	if (ev_status)
		event_free(ev_status);
	for (int i = 0; i < SOCK_KINDS; i++)
		listener_free(t.listeners[i]);
	dispatch_finish(&t);
	server_free(t.srv);
	/* Let deferred frees scheduled during shutdown run. */
	event_base_loop(t.base, EVLOOP_NONBLOCK);
	event_base_free(t.base);
	return status;
}

int main(int argc, char **argv)
{
	/* Font caches of the label layout go at exit, after every thread has stopped. */
	atexit(layout_global_cleanup);
	/* Before the libraries allocate: a block they free is zeroed (keys pass there). */
	wipe_install();
	sql_process_setup(); /* before any database is opened */
	struct daemon_cmdline cl;
	int exit_status = daemon_cmdline_parse(argc, argv, "tpad", TPAD_VERSION,
					       CONFIG_DEFAULT_PATH, true, usage, &cl);
	if (exit_status >= 0)
		return exit_status;
	daemon_no_core_dumps();
	const char *path = cl.config;
	bool explicit_path = cl.explicit_config, check = cl.check, print = cl.print;
	const char *copy_url = cl.copy_store, *restore_from = cl.restore_store;

	struct config cfg;
	/* --check-config reads the store key once, for the credential and the store checks. */
	struct check_key key = {0};
	int r = load_config(&cfg, path, explicit_path, check ? &key : NULL);
	if (r == 0 && check)
		r = dispatch_check_start(&cfg, &key);
	cred_wipe(&key, sizeof(key));
	if (check || print) {
		if (r == 0 && print)
			config_print(&cfg, stdout, true);
		if (r == 0 && check)
			check_said(&cfg, explicit_path ? path : "tpad");
		config_free(&cfg);
		return r == 0 ? 0 : 1;
	}
	if (r < 0) {
		config_free(&cfg);
		return 1;
	}
	if (copy_url || restore_from) {
		int status = (copy_url ? dispatch_copy_store(&cfg, copy_url)
				       : dispatch_restore_store(&cfg, restore_from)) == 0
				 ? 0
				 : 1;
		config_free(&cfg);
		return status;
	}
	bool have_file = explicit_path || access(path, F_OK) == 0;
	int status = run(&cfg, have_file ? path : NULL);
	config_free(&cfg);
	return status;
}
