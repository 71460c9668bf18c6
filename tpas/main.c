/* tpas: the application-server daemon — start-up, event loop and shutdown. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <event2/event.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "asapi.h"
#include "asconf.h"
#include "ascrypto.h"
#include "asmetrics.h"
#include "clock.h"
#include "cred.h"
#include "daemon.h"
#include "downlink.h"
#include "events.h"
#include "httpd.h"
#include "journal.h"
#include "lockfile.h"
#include "listener.h"
#include "log.h"
#include "metrics_http.h"
#include "notify.h"
#include "pool.h"
#include "seal.h"
#include "server.h"
#include "sqlsetup.h"
#include "tpad-build.h"
#include "tpas.h"
#include "tunnel.h"
#include "tunnel_tls.h"
#include "uplink_read.h"
#include "webhook.h"
#include "wipe.h"

/* How long SIGTERM waits for calls in flight (downlinks) before closing clients anyway. */
#define STOP_TIMEOUT_MS 15000
/*
 * Before that, the downlinks still without the LRC's answer are ended (LrcFailed, each
 * logged with its FCntDn), so that their callers hear it in the time left.
 */
#define STOP_CUT_MS (STOP_TIMEOUT_MS - 1000)
/* How often STATUS= is refreshed and old uplinks are pruned. */
#define STATUS_PERIOD_S 1
#define PRUNE_PERIOD_S 3600
/*
 * Uplinks removed per transaction by a prune, the loop serving in between: a day of a
 * busy network's uplinks in one DELETE held the loop for seconds and left a WAL as large
 * as what it removed.
 */
#define PRUNE_STEP_ROWS 2000

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tpas [--config FILE] [--verbose]\n"
		"       tpas [--config FILE] --check-config | --print-config\n"
		"       tpas --version | --help\n"
		"\n"
		"  -c, --config FILE   configuration file (default %s)\n"
		"  -n, --check-config  check the configuration and the keys, and exit (0 valid)\n"
		"  -p, --print-config  print every directive's effective value and exit\n"
		"  -v, --verbose       log debug messages\n"
		"  -V, --version       print the version and exit\n"
		"  -h, --help          show this help\n",
		ASCONF_DEFAULT_PATH);
}

/* Load the configuration; a missing default file means the built-in defaults. */
static int load_config(struct asconf *cfg, const char *path, bool explicit_path)
{
	char err[512];
	asconf_defaults(cfg);
	if (!explicit_path && access(path, F_OK) < 0 && errno == ENOENT) {
		log_notice("%s not found, using built-in defaults", path);
		return 0;
	}
	int r = asconf_load(cfg, path, err, sizeof(err));
	if (r < 0)
		log_errx("%s", err);
	return r;
}

/* Whether s holds a control character: a line break above all. */
static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* The tunnel key (text), as start needs it. */
static int load_tunnel_key(const struct asconf *cfg, char *tunnel_key, size_t tklen)
{
	char why[PATH_MAX + 200];
	int r = cred_load_text("tunnel-key", cfg->tunnel_key_file, tunnel_key, tklen);
	if (r == 0 && !tunnel_key[0])
		r = -EINVAL;
	if (r == 0 && has_control(tunnel_key)) {
		/* The key with a second line signs no Token the LRC makes: every uplink 401. */
		char path[PATH_MAX];
		const char *src =
		    cred_source("tunnel-key", cfg->tunnel_key_file, path, sizeof(path));
		cred_wipe(tunnel_key, tklen);
		log_errx("cannot load the tunnel key: %s holds more than one line (or another "
			 "control character): write the AS route's tunnel key alone, on one line "
			 "(a newline at its end is fine)",
			 src ? src : "the credential tunnel-key");
		return -EINVAL;
	}
	if (r < 0)
		log_errx("cannot load the tunnel key: %s",
			 cred_explain(r, "tunnel-key", cfg->tunnel_key_file, why, sizeof(why)));
	return r;
}

/*
 * The webhook's token (webhook.token-file, the credential webhook-token) into token
 * (WEBHOOK_TOKEN_MAX + 1 bytes): "" when none is configured, 0; or < 0, logged.
 */
static int load_webhook_token(const struct asconf *cfg, char *token)
{
	token[0] = '\0';
	if (!cfg->webhook_token_file || !*cfg->webhook_token_file)
		return 0;
	char why[PATH_MAX + 200];
	int r =
	    cred_load_text("webhook-token", cfg->webhook_token_file, token, WEBHOOK_TOKEN_MAX + 1);
	if (r == -E2BIG)
		log_errx("cannot load the webhook token: it is longer than %d characters",
			 WEBHOOK_TOKEN_MAX);
	else if (r < 0)
		log_errx(
		    "cannot load the webhook token: %s",
		    cred_explain(r, "webhook-token", cfg->webhook_token_file, why, sizeof(why)));
	else if ((r = webhook_token_check(token, why, sizeof(why))) < 0)
		log_errx("cannot load the webhook token from %s: %s", cfg->webhook_token_file, why);
	if (r < 0)
		cred_wipe(token, WEBHOOK_TOKEN_MAX + 1);
	return r;
}

/* The store key, as start needs it. */
static int load_store_key(const struct asconf *cfg, uint8_t store_key[SEAL_KEY_LEN])
{
	char why[PATH_MAX + 200];
	size_t len = 0;
	int r = cred_load_hex("store-key", cfg->store_key_file, store_key, SEAL_KEY_LEN, &len);
	if (r == 0 && len != SEAL_KEY_LEN) {
		cred_wipe(store_key, SEAL_KEY_LEN);
		log_errx("cannot load the store key: it must be %d hexadecimal digits, not %zu",
			 2 * SEAL_KEY_LEN, 2 * len);
		return -EINVAL;
	}
	if (r < 0) {
		cred_wipe(store_key, SEAL_KEY_LEN);
		log_errx("cannot load the store key (64 hexadecimal digits): %s",
			 cred_explain(r, "store-key", cfg->store_key_file, why, sizeof(why)));
	}
	return r;
}

/* The two secrets tpas needs at start: the tunnel key (text) and the store key. */
static int load_keys(const struct asconf *cfg, char *tunnel_key, size_t tklen,
		     uint8_t store_key[SEAL_KEY_LEN])
{
	int r = load_tunnel_key(cfg, tunnel_key, tklen);
	if (r == 0 && (r = load_store_key(cfg, store_key)) < 0)
		cred_wipe(tunnel_key, tklen);
	return r;
}

/* --check-config: the store key loads and opens the store, where they can be seen. */
static int check_store(const struct asconf *cfg)
{
	uint8_t store_key[SEAL_KEY_LEN];
	int r = 0;
	if (daemon_cred_visible("store-key", cfg->store_key_file, "store.key-file") &&
	    (r = load_store_key(cfg, store_key)) == 0) {
		char err[512];
		if ((r = journal_check_key(cfg->store_path, store_key, err, sizeof(err))) < 0)
			log_errx("store: %s", err);
		cred_wipe(store_key, sizeof(store_key));
	}
	return r;
}

/* Log err, at the file:line of the directive it begins with when the file set it. */
static void log_directive_errx(const struct asconf *cfg, const char *err)
{
	char name[64];
	size_t n = strcspn(err, " :");
	const char *where = "default";
	if (n < sizeof(name)) {
		memcpy(name, err, n);
		name[n] = '\0';
		where = asconf_origin(cfg, name);
	}
	if (strcmp(where, "default") != 0)
		log_errx("%s: %s", where, err);
	else
		log_errx("%s", err);
}

/*
 * --check-config: no file stands where a socket is to be bound (a start by hand), and the
 * listening addresses' hosts resolve.
 */
static int check_sockets(const struct asconf *cfg)
{
	static const char *const names[] = {"apps.socket", "admin.socket"};
	const char *paths[] = {cfg->apps_socket, cfg->admin_socket};
	char why[PATH_MAX + 200], err[PATH_MAX + 300];
	for (size_t i = 0; i < 2; i++) {
		if (paths[i] && listener_check_path(paths[i], why, sizeof(why)) < 0) {
			snprintf(err, sizeof(err), "%s: %s", names[i], why);
			log_directive_errx(cfg, err);
			return -EINVAL;
		}
	}
	static const char *const listens[] = {"tunnel.listen", "metrics.listen"};
	const char *addrs[] = {cfg->tunnel_listen, cfg->metrics_listen};
	for (size_t i = 0; i < 2; i++) {
		if (addrs[i] && *addrs[i] && httpd_listen_check(addrs[i], why, sizeof(why)) < 0) {
			snprintf(err, sizeof(err), "%s: %s", listens[i], why);
			log_directive_errx(cfg, err);
			return -EINVAL;
		}
	}
	return 0;
}

static int check_rsa_key(const struct asconf *cfg);
static int check_tunnel_tls(const struct asconf *cfg);

/*
 * --check-config, and SIGHUP before it takes a file: what a start reads besides the
 * journal (the tunnel key, the RSA key, the socket paths, the tunnel's certificate and
 * key, the webhook token). Each failure is logged; a negative errno.
 */
static int check_files(const struct asconf *cfg)
{
	char key[129];
	int r = 0;
	if (daemon_cred_visible("tunnel-key", cfg->tunnel_key_file, "tunnel.key-file"))
		r = load_tunnel_key(cfg, key, sizeof(key));
	cred_wipe(key, sizeof(key));
	if (r == 0)
		r = check_rsa_key(cfg);
	if (r == 0)
		r = check_sockets(cfg);
	if (r == 0)
		r = check_tunnel_tls(cfg);
	if (r == 0) {
		char token[WEBHOOK_TOKEN_MAX + 1];
		r = load_webhook_token(cfg, token);
		cred_wipe(token, sizeof(token));
	}
	return r;
}

/* --check-config: the tunnel's certificate and TLS key load (as tunnel_new() will). */
static int check_tunnel_tls(const struct asconf *cfg)
{
	if (!cfg->tunnel_tls_cert_file)
		return 0;
	char err[1024];
	struct tunnel_tls *tls =
	    tunnel_tls_new(cfg->tunnel_tls_cert_file, cfg->tunnel_tls_key_file, err, sizeof(err));
	if (!tls) {
		log_directive_errx(cfg, err);
		return -EINVAL;
	}
	tunnel_tls_free(tls);
	return 0;
}

/*
 * The RSA key is read at each ImportASTK; one that is there must already be private
 * (mode 0600), readable and an RSA private key at start, so that a wrong key is found at
 * once. Only the empty file tmpfiles.d makes for the credential (or no key configured at
 * all) means none yet: ImportASTK answers NoRsaKey until `tpactl as keygen` made it.
 */
static int check_rsa_key(const struct asconf *cfg)
{
	static char pem[8192];
	char why[PATH_MAX + 200];
	const char *file = cfg->rsa_key_file && *cfg->rsa_key_file ? cfg->rsa_key_file : NULL;
	int r = cred_load_text("as-rsa-key", file, pem, sizeof(pem)), refused = 0;
	unsigned bits = 0;
	if (r == 0)
		r = refused = ascrypto_rsa_key_check(pem, sizeof(pem), &bits);
	cred_wipe(pem, sizeof(pem));
	if (r == -ENODATA || (r == -ENOENT && !file && !getenv("CREDENTIALS_DIRECTORY")))
		return 0;
	const char *shown = file ? file : "the credential as-rsa-key";
	if (refused == -ENOKEY) {
		/* Not "make a new one": Key Manager already encrypts ASTKs for this key. */
		char advice[4 * PATH_MAX + 400], src_path[PATH_MAX];
		const char *src = cred_source("as-rsa-key", file, src_path, sizeof(src_path));
		ascrypto_passphrase_advice(advice, sizeof(advice), "the RSA key",
					   src ? src : "FILE", "astk.rsa-key-file", "as-rsa-key");
		log_errx("%s", advice);
	} else if (refused == -EKEYREJECTED) {
		log_errx("the RSA key %s is RSA-%u, shorter than the %d bits of Key Manager's "
			 "ASTK key: make an RSA-2048 one with tpactl as keygen --out NEW-FILE, "
			 "point astk.rsa-key-file (or the credential as-rsa-key) at it, give "
			 "Key Manager the public key it prints, and import the ASTK it "
			 "encrypts for that key",
			 shown, bits, ASCRYPTO_RSA_MIN_BITS);
	} else if (refused == -EINVAL) {
		log_errx(
		    "the RSA key %s holds no RSA private key (a public key, or another kind?): "
		    "empty the file (none yet), then make one with tpactl as keygen --out %s "
		    "(it fills an empty file, never overwrites a key)",
		    shown, file ? file : "FILE");
	} else if (r == -ENOENT && file) {
		log_errx("the RSA key %s does not exist: make it with tpactl as keygen --out %s, "
			 "or create it empty for none yet",
			 file, file);
	} else if (r < 0) {
		log_errx("cannot load the RSA key: %s",
			 cred_explain(r, "as-rsa-key", file, why, sizeof(why)));
	}
	return r;
}

/* Committed uplinks wake the streams (which keep the newest ones encoded) and the webhook. */
static void commit_cb(struct tunnel_uplink *ups, size_t n, void *arg)
{
	struct tpas *t = arg;
	asapi_remember(t->api, ups, n);
	asapi_notify(t->api, ups[n - 1].seq);
	webhook_notify(t->webhook);
}

/* One line of health for systemctl status. */
static void status_line(struct tpas *t, char *buf, size_t len)
{
	struct tunnel_stats ts;
	struct journal_stats js = {0};
	tpas_tunnel_stats(t, &ts);
	/* Counters only: counting the tables would take the loop ~7 ms a million uplinks,
	 * every second. */
	if (t->journal)
		journal_get_counters(t->journal, &js);
	/* A failing journal first, where systemctl status cannot cut it off. */
	int n =
	    js.failing_since_ms ? snprintf(buf, len, "journal FAILING: %s; ", js.last_error) : 0;
	if (n < 0 || (size_t)n >= len)
		return;
	snprintf(buf + n, len - (size_t)n,
		 "uplinks %llu accepted, %llu refused; journal seq %lld; %u subscribers",
		 (unsigned long long)ts.accepted,
		 (unsigned long long)(ts.requests - ts.accepted - ts.duplicates),
		 (long long)js.last_seq, asapi_subscribers(t->api));
}

/*
 * Once a second: the LRC link's breaker opened, is still open, or closed again, one line
 * each, paced as tpad's cloud outages (pool_watch). Nothing else in the journal says that
 * downlinks fail, nor why (TpasLrcBreakerOpen points here and to tpactl as status).
 */
static void watch_lrc(struct tpas *t)
{
	const struct pool *p = downlink_pool(t->downlink);
	if (!p)
		return;
	struct pool_stats ps;
	pool_get_stats(p, &ps);
	uint64_t open_s, reopens;
	unsigned say = pool_watch_look(&t->lrc_watch, &ps, clock_now_us(), &open_s, &reopens);
	const char *url = pool_url(p), *why = pool_last_error(p);
	char msg[512];
	if (say & (POOL_WATCH_OPENED | POOL_WATCH_STILL)) {
		if (say & POOL_WATCH_STILL)
			snprintf(msg, sizeof(msg),
				 "LRC circuit breaker still open after %llu s (%llu re-openings): "
				 "downlinks fail fast (%s)",
				 (unsigned long long)open_s, (unsigned long long)reopens,
				 *why ? why : "repeated failures");
		else
			snprintf(msg, sizeof(msg),
				 "LRC circuit breaker open: downlinks fail fast (%s); tpactl as "
				 "status shows each session",
				 *why ? why : "repeated failures");
		log_event(LOG_WARNING, LOG_ID_AS_LRC_BREAKER_OPEN, msg, "UPSTREAM_URL", url,
			  "REASON", why, NULL);
	}
	if (say & POOL_WATCH_CLOSED) {
		snprintf(msg, sizeof(msg),
			 "LRC circuit breaker closed: the LRC answers again (open for %llu s)",
			 (unsigned long long)open_s);
		log_event(LOG_NOTICE, LOG_ID_AS_LRC_BREAKER_CLOSE, msg, "UPSTREAM_URL", url, NULL);
	}
}

static void prune_cb(evutil_socket_t fd, short what, void *arg);
static void prune_step_cb(evutil_socket_t fd, short what, void *arg);

static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpas *t = arg;
	char line[512];
	status_line(t, line, sizeof(line));
	notify_status(line);
	watch_lrc(t);
	int64_t lrc_now;
	if (!t->pruned && t->cfg->retention_days && t->tunnel &&
	    tunnel_lrc_now(t->tunnel, &lrc_now))
		prune_cb(-1, 0, t); /* the first since start, now that the LRC's clock is known */
}

/*
 * Drop uplinks older than store.retention-days, by this host's clock but never ahead of
 * the LRC's (tunnel_lrc_now): a host clock stepped ahead (or wrong at boot) must not take
 * uplinks that are not old. Until a request has shown the LRC's clock since start, no
 * uplink is dropped: a journal a year old and a clock a year ahead look the same.
 */
static void prune_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpas *t = arg;
	if (!t->cfg->retention_days || !t->tunnel || t->prune.running)
		return;
	int64_t now = clock_wall_ms(), lrc_now;
	if (!tunnel_lrc_now(t->tunnel, &lrc_now)) {
		if (!t->prune_waited)
			log_info("journal: uplinks older than %u days are removed once a signed "
				 "request shows the LRC's clock (this host's is not taken alone)",
				 t->cfg->retention_days);
		t->prune_waited = true;
		return;
	}
	if (lrc_now < now)
		now = lrc_now;
	t->pruned = true;
	/* The webhook gets every uplink: none it has not delivered goes, however old. */
	int64_t keep_after = INT64_MAX;
	if (t->webhook && journal_cursor_get(t->journal, "webhook", &keep_after) < 0)
		return; /* next hour */
	t->prune.before_ms = now - (int64_t)t->cfg->retention_days * 86400000;
	t->prune.keep_after = keep_after;
	t->prune.removed = 0;
	t->prune.running = true;
	prune_step_cb(-1, 0, t);
}

/* One step of the prune; the next is taken once the loop has served what came meanwhile. */
static void prune_step_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpas *t = arg;
	if (t->stopping || !t->tunnel) {
		t->prune.running = false;
		return;
	}
	if (journal_checkpointing(t->journal)) {
		/* The writer copies the WAL back first: then the next step starts it again. */
		static const struct timeval soon = {0, 2000};
		evtimer_add(t->prune.step, &soon);
		return;
	}
	int64_t held = 0;
	int r = journal_prune(t->journal, t->prune.before_ms, t->prune.keep_after, PRUNE_STEP_ROWS,
			      &held);
	if (r > 0)
		t->prune.removed += r;
	if (r == PRUNE_STEP_ROWS) {
		static const struct timeval now = {0, 0};
		evtimer_add(t->prune.step, &now);
		return;
	}
	t->prune.running = false;
	if (r < 0)
		log_warn_errno(r, "cannot prune the journal");
	if (t->prune.removed > 0) {
		journal_checkpoint(t->journal); /* the next commit cuts the WAL back */
		log_info("journal: %" PRId64 " uplinks older than %u days removed",
			 t->prune.removed, t->cfg->retention_days);
	}
	if (r >= 0 && held > 0)
		log_warnx("journal: %" PRId64 " uplinks older than %u days kept: the webhook has "
			  "delivered up to seq %" PRId64 " only",
			  held, t->cfg->retention_days, t->prune.keep_after);
}

static void drained_cb(void *arg)
{
	struct tpas *t = arg;
	event_base_loopexit(t->base, NULL);
}

/* The configuration as printed, for comparing two of them. */
static void print_config(const void *cfg, FILE *f)
{
	asconf_print(cfg, f, false);
}

/*
 * SIGHUP (systemctl reload tpas): read the configuration again. The limits.* of the apps
 * and admin sockets apply at once; anything else is named in the log as taking effect at
 * the next start. A file that does not parse changes nothing; nothing in flight is dropped.
 */
static void reload_cb(evutil_socket_t sig, short what, void *arg)
{
	struct tpas *t = arg;
	if (t->stopping)
		return;
	if (!t->config_path) {
		log_notice("SIGHUP: started without a configuration file; nothing to reload");
		return;
	}
	struct asconf fresh;
	asconf_defaults(&fresh);
	char err[512];
	if (asconf_load(&fresh, t->config_path, err, sizeof(err)) < 0) {
		log_errx("SIGHUP: keeping the running configuration: %s", err);
		asconf_free(&fresh);
		return;
	}
	/* What --check-config refuses, a start would: taken now, tpas would not come back. */
	if (check_files(&fresh) < 0) {
		log_errx("SIGHUP: keeping the running configuration: tpas --check-config refuses "
			 "%s (the reason is above)",
			 t->config_path);
		asconf_free(&fresh);
		return;
	}
	server_set_limits(t->srv, &fresh.limits);
	daemon_reload_report(t->config_path, print_config, t->cfg, &fresh);
	daemon_files_report(t->tls_files, sizeof(t->tls_files) / sizeof(t->tls_files[0]), "tpas");
	asconf_free(&fresh);
}

/* The certificate and key files as read at start, for SIGHUP to compare. */
static void note_tls_files(struct tpas *t)
{
	const struct asconf *c = t->cfg;
	bool tls = c->tunnel_tls_cert_file && *c->tunnel_tls_cert_file;

	daemon_file_note(&t->tls_files[0], "tunnel.tls-cert-file", NULL, c->tunnel_tls_cert_file);
	daemon_file_note(&t->tls_files[1], "tunnel.tls-key-file", tls ? "tunnel-tls-key" : NULL,
			 tls ? c->tunnel_tls_key_file : NULL);
	daemon_file_note(&t->tls_files[2], "lrc.ca-file", NULL, c->lrc_ca_file);
	daemon_file_note(&t->tls_files[3], "webhook.ca-file", NULL, c->webhook_ca_file);
}

/* Stopping, and the LRC has not answered every downlink yet: end those now. */
static void stop_cut_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpas *t = arg;
	downlink_cut(t->downlink, "tpas stopped before the LRC answered");
}

/* SIGTERM / SIGINT: stop the tunnel and the sockets, end streams, finish downlinks, exit 0. */
static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
	struct tpas *t = arg;
	if (t->stopping)
		return;
	t->stopping = true;
	log_notice("received %s, finishing calls in flight", strsignal((int)sig));
	notify_stopping();
	/* Status and /metrics go on showing its counters while calls finish. */
	t->tunnel = tunnel_close(t->tunnel, &t->tunnel_final);
	for (int i = 0; i < SOCK_KINDS; i++) {
		listener_free(t->listeners[i]);
		t->listeners[i] = NULL;
	}
	asapi_stop(t->api);
	server_stop(t->srv, STOP_TIMEOUT_MS, drained_cb, t);
	t->stop_cut = evtimer_new(t->base, stop_cut_cb, t);
	struct timeval tv = {.tv_sec = STOP_CUT_MS / 1000, .tv_usec = (STOP_CUT_MS % 1000) * 1000};
	if (!t->stop_cut || evtimer_add(t->stop_cut, &tv) < 0)
		stop_cut_cb(-1, 0, t); /* no timer: end them now rather than never */
}

/* Descriptors the configured limits may take, against RLIMIT_NOFILE: a warning if short. */
static void check_fd_limit(const struct asconf *c)
{
	/* The tunnel's connections, the apps and admin clients, /metrics, 64 of our own. */
	char what[160];
	snprintf(what, sizeof(what), "tunnel.max-connections (%u) and limits.max-clients (%u)",
		 c->tunnel_max_conns, c->limits.max_clients);
	daemon_check_fd_limit((unsigned long long)c->tunnel_max_conns + c->limits.max_clients +
				  (c->metrics_listen ? DAEMON_METRICS_CONNS : 0) + 64,
			      what);
}

static int open_listeners(struct tpas *t)
{
	const struct asconf *c = t->cfg;
	char err[1024];
	int r =
	    listener_open_named(t->base, t->srv, SOCK_STATION, "apps", c->apps_socket, c->apps_mode,
				c->apps_group, &t->listeners[SOCK_STATION], err, sizeof(err));
	if (r == 0)
		r = listener_open_named(t->base, t->srv, SOCK_ADMIN, "admin", c->admin_socket,
					c->admin_mode, c->admin_group, &t->listeners[SOCK_ADMIN],
					err, sizeof(err));
	if (r < 0) {
		log_directive_errx(c, err); /* "apps.socket: ...", at its line */
		return r;
	}
	listener_close_unused();
	return 0;
}

/* How the apps and admin sockets name themselves and their Busy error. */
static const struct server_identity tpas_identity = {
    .stopping = "tpas is stopping",
    .kind_names = {"apps", "admin"},
    .busy = {"io.tpad.AS.Busy", "io.tpad.AS.Busy"},
};

static int run(const struct asconf *cfg, const char *config_path)
{
	struct tpas t = {.cfg = cfg, .config_path = config_path, .started_us = clock_now_us()};
	struct daemon_signals *sigs = NULL;
	struct event *ev_status = NULL, *ev_prune = NULL;
	struct metrics_http *metrics = NULL;
	char tunnel_key[129], err[4200];
	uint8_t store_key[SEAL_KEY_LEN];
	int status = 1, store_lock = -1;

	signal(SIGPIPE, SIG_IGN);
	if (load_keys(cfg, tunnel_key, sizeof(tunnel_key), store_key) < 0)
		return 1;
	check_fd_limit(cfg);
	if (check_rsa_key(cfg) < 0) {
		cred_wipe(tunnel_key, sizeof(tunnel_key));
		cred_wipe(store_key, sizeof(store_key));
		return 1;
	}
	/*
	 * The changelist folds the add/remove pairs of a connection's write event (armed when
	 * an answer does not leave at once) into one epoll_ctl per descriptor and turn.
	 */
	struct event_config *ec = event_config_new();
	if (ec)
		event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	t.base = ec ? event_base_new_with_config(ec) : NULL;
	if (ec)
		event_config_free(ec);
	if (!t.base)
		t.base = event_base_new();
	if (!t.base) {
		log_errx("cannot create the event loop");
		goto out;
	}
	/* One tpas per store: its streams take every seq for one this process wrote. */
	bool in_memory = strcmp(cfg->store_path, ":memory:") == 0;
	int r = in_memory ? 0
			  : lockfile_take(cfg->store_path, "tpas", "store", &store_lock, err,
					  sizeof(err));
	if (r == 0 && in_memory)
		log_warnx("store.path is :memory:: the journal, keys and FCntDn counters live in "
			  "memory only and are lost at exit (for tests)");
	if (r == 0)
		r = journal_open(cfg->store_path, store_key, &t.journal, err, sizeof(err));
	cred_wipe(store_key, sizeof(store_key));
	if (r < 0) {
		log_errx("store: %s", err);
		goto out;
	}
	t.srv = server_new(t.base, &cfg->limits, asapi_call, &t);
	if (t.srv)
		server_set_identity(t.srv, &tpas_identity);
	t.api = t.srv ? asapi_new(&t) : NULL;
	if (!t.api) {
		log_errx("out of memory");
		goto out;
	}
	const struct downlink_options dopt = {
	    .url = cfg->lrc_url,
	    .key = tunnel_key,
	    .as_id = cfg->as_id,
	    .ca_file = cfg->lrc_ca_file,
	    .sessions = cfg->lrc_sessions,
	    .request_timeout_ms = cfg->lrc_timeout_ms,
	};
	t.downlink = downlink_new(t.base, &dopt, t.journal, err, sizeof(err));
	if (!t.downlink) {
		log_errx("%s", err);
		goto out;
	}
	if (cfg->webhook_url) {
		static char token[WEBHOOK_TOKEN_MAX + 1];
		if (load_webhook_token(cfg, token) < 0)
			goto out;
		const struct webhook_options wopt = {
		    .url = cfg->webhook_url,
		    .ca_file = cfg->webhook_ca_file,
		    .request_timeout_ms = cfg->webhook_timeout_ms,
		    .retry_max_ms = cfg->webhook_retry_max_ms,
		    .batch = cfg->webhook_batch,
		    .token = token,
		};
		t.webhook = webhook_new(t.base, &wopt, t.journal, err, sizeof(err));
		cred_wipe(token, sizeof(token));
		if (!t.webhook) {
			log_errx("%s", err);
			goto out;
		}
	}
	const struct tunnel_options topt = {
	    .listen = cfg->tunnel_listen,
	    .path = cfg->tunnel_path,
	    .key = tunnel_key,
	    .max_deviation_ms = cfg->max_time_deviation_ms,
	    .max_body = cfg->tunnel_max_body,
	    .timeout_ms = cfg->tunnel_timeout_ms,
	    .max_conns = cfg->tunnel_max_conns,
	    .tls_cert_file = cfg->tunnel_tls_cert_file,
	    .tls_key_file = cfg->tunnel_tls_key_file,
	};
	r = tunnel_new(t.base, &topt, t.journal, commit_cb, &t, &t.tunnel, err, sizeof(err));
	cred_wipe(tunnel_key, sizeof(tunnel_key));
	if (r < 0) {
		log_directive_errx(cfg, err);
		goto out;
	}
	if (cfg->metrics_listen &&
	    metrics_http_new(t.base, cfg->metrics_listen, "tpas", asmetrics_render, &t, &metrics,
			     err, sizeof(err)) < 0) {
		log_errx("%s", err);
		goto out;
	}
	if (open_listeners(&t) < 0)
		goto out;
	note_tls_files(&t);
	sigs = daemon_signals_new(t.base, stop_cb, reload_cb, &t);
	ev_status = event_new(t.base, -1, EV_PERSIST, status_cb, &t);
	ev_prune = event_new(t.base, -1, EV_PERSIST, prune_cb, &t);
	t.prune.step = evtimer_new(t.base, prune_step_cb, &t);
	if (!sigs || !ev_status || !ev_prune || !t.prune.step || notify_init(t.base) < 0) {
		log_errx("out of memory");
		goto out;
	}
	struct timeval period = {.tv_sec = STATUS_PERIOD_S}, prune = {.tv_sec = PRUNE_PERIOD_S};
	event_add(ev_status, &period);
	event_add(ev_prune, &prune);
	prune_cb(-1, 0, &t);

	char line[256];
	status_line(&t, line, sizeof(line));
	notify_ready(line);
	log_notice("tpas %s ready", TPAD_VERSION);
	if (event_base_dispatch(t.base) < 0)
		log_errx("event loop failed");
	else
		status = 0;
	log_notice("tpas stopped");
out:
	cred_wipe(tunnel_key, sizeof(tunnel_key));
	cred_wipe(store_key, sizeof(store_key));
	notify_finish();
	/* A repeated SIGTERM must not cut short the journal's last commit below. */
	daemon_signals_free(sigs);
	if (ev_status)
		event_free(ev_status);
	if (ev_prune)
		event_free(ev_prune);
	if (t.prune.step)
		event_free(t.prune.step);
	for (int i = 0; i < SOCK_KINDS; i++)
		listener_free(t.listeners[i]);
	tunnel_free(t.tunnel);
	metrics_http_free(metrics);
	asapi_free(t.api);
	server_free(t.srv);
	downlink_free(t.downlink);
	if (t.stop_cut)
		event_free(t.stop_cut);
	webhook_free(t.webhook);
	journal_free(t.journal);
	if (store_lock >= 0)
		close(store_lock);
	if (t.base) {
		event_base_loop(t.base, EVLOOP_NONBLOCK);
		event_base_free(t.base);
	}
	return status;
}

int main(int argc, char **argv)
{
	/* Before the libraries allocate: a block they free is zeroed (keys pass there). */
	wipe_install();
	uplink_read_install();
	sql_process_setup(); /* before any database is opened */
	struct daemon_cmdline cl;
	int exit_status = daemon_cmdline_parse(argc, argv, "tpas", TPAD_VERSION,
					       ASCONF_DEFAULT_PATH, false, usage, &cl);
	if (exit_status >= 0)
		return exit_status;
	daemon_no_core_dumps();
	const char *path = cl.config;
	bool explicit_path = cl.explicit_config, check = cl.check, print = cl.print;
	struct asconf cfg;
	int r = load_config(&cfg, path, explicit_path);
	if (r == 0 && check) {
		r = check_store(&cfg);
		if (r == 0)
			r = check_files(&cfg);
	}
	if (check || print) {
		if (r == 0 && print)
			asconf_print(&cfg, stdout, true);
		if (r == 0 && check)
			printf("%s: configuration is valid\n", explicit_path ? path : "tpas");
		asconf_free(&cfg);
		return r == 0 ? 0 : 1;
	}
	if (r < 0) {
		asconf_free(&cfg);
		return 1;
	}
	bool have_file = explicit_path || access(path, F_OK) == 0;
	int status = run(&cfg, have_file ? path : NULL);
	asconf_free(&cfg);
	return status;
}
