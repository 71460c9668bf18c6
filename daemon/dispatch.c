/* dispatch: routes each call to its handler after the protocol checks; built-in methods. */
#include "dispatch.h"
#include "thread.h"
#include "clock.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <syslog.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "activation.h"
#include "admin.h"
#include "config.h"
#include "cred.h"
#include "daemon.h"
#include "iface.h"
#include "keypool.h"
#include "layout.h"
#include "httpd.h"
#include "listener.h"
#include "log.h"
#include "message.h"
#include "metrics.h"
#include "metrics_http.h"
#include "print.h"
#include "qr.h"
#include "rng.h"
#include "server.h"
#include "store_copy.h"
#include "station.h"
#include "store.h"
#include "store_restore.h"
#include "store_url.h"
#include "sqlbackup.h"
#include "tpa.h"
#include "tpad-build.h"
#include "tpad.h"
#include "utf8.h"

typedef void handler_fn(struct tpad *t, struct req *r);

static uint32_t settle_after_ms(const struct config *cfg);

struct handler {
	const char *method;
	handler_fn *fn;
};

/* The proto socket bit of a connection. */
static unsigned sock_bit(const struct req *r)
{
	return req_peer(r)->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
}

/* org.varlink.service.GetInfo: who we are and the interfaces of this socket. */
static void h_get_info(struct tpad *t, struct req *r)
{
	(void)t;
	req_reply_info(r, "tpad", sock_bit(r));
}

/* org.varlink.service.GetInterfaceDescription: the IDL text of one interface. */
static void h_get_interface_description(struct tpad *t, struct req *r)
{
	(void)t;
	req_reply_interface_description(r, sock_bit(r));
}

/*
 * A Status call waiting for the store's row counts, at most STATUS_COUNT_WAIT_MS: a
 * database that does not answer gets the counts of the last look (Status is how one
 * finds out what is wrong). Freed when both the count and the timer are done.
 */
#define STATUS_COUNT_WAIT_MS 1000
struct status_call {
	struct tpad *t;
	struct req *r;
	json_t *o;	   /* the reply, until sent */
	struct event *timer;
	bool counting; /* the count's answer is still to come */
};

/* Send the reply with the store's part (counts NULL: as last counted, if ever). */
static void status_send(struct status_call *c, const uint64_t *counts, const char *why)
{
	struct tpad *t = c->t;
	if (!c->o)
		return;
	if (!counts && t->store_counts_known)
		counts = t->store_counts;
	json_t *sj = t->store ? store_status_json(t->store, counts) : NULL;
	if (sj) {
		json_object_set_new(sj, "failing", json_boolean(store_failing(t->store)));
		json_object_set_new(sj, "rowsCountedAt",
				    counts && t->store_counts_known
					? json_integer((json_int_t)t->store_counted_at)
					: json_null());
		if (why)
			json_object_set_new(sj, "rowsError", json_string(why));
	}
	json_object_set_new(c->o, "store", sj ? sj : json_null());
	req_reply(c->r, c->o, false);
	c->o = NULL;
}

static void status_call_free(struct status_call *c)
{
	if (c->timer)
		event_free(c->timer);
	json_decref(c->o);
	free(c);
}

/* The count took too long: answer with the last one. */
static void on_status_timer(evutil_socket_t fd, short what, void *arg)
{
	struct status_call *c = arg;
	status_send(c, NULL, "the store did not count its rows within 1 s: rows as last counted");
	if (!c->counting)
		status_call_free(c);
}

/* Keep the row counts for STATUS= and metrics; a failed count keeps the last ones. */
static void counts_note(struct tpad *t, int err, const struct store_rows *rows)
{
	if (err)
		return;
	t->store_counts_known = true;
	t->store_counted_at = time(NULL);
	memcpy(t->store_counts, rows->counts, sizeof(t->store_counts));
}

/* The store counted its rows: the Status reply is complete. */
static void on_status_counts(int err, const char *reason, const struct store_rows *rows,
			     void *arg)
{
	struct status_call *c = arg;
	c->counting = false;
	counts_note(c->t, err, rows);
	status_send(c, err ? NULL : rows->counts, err ? (reason ? reason : strerror(-err)) : NULL);
	status_call_free(c);
}

/* The counts asked every second for STATUS= and metrics. */
static void on_watch_counts(int err, const char *reason, const struct store_rows *rows,
			    void *arg)
{
	struct tpad *t = arg;
	t->store_counting = false;
	counts_note(t, err, rows);
}

/* io.tpad.Admin.Status: version, uptime, connections, limits hit, and the modules. */
static void h_status(struct tpad *t, struct req *r)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	uint64_t up = (clock_now_us() - t->started_us) / 1000000u;
	json_t *o = json_pack(
	    "{s:s, s:I, s:{s:i, s:i}, s:{s:I, s:I}, s:I, s:i, s:I, s:{s:I, s:I, s:I, s:I, s:I, "
	    "s:I, s:I, s:I, s:I, s:I}}",
	    "version", TPAD_VERSION, "uptime", (json_int_t)up, "connections", "station",
	    (int)st.connections[SOCK_STATION], "admin", (int)st.connections[SOCK_ADMIN], "accepted",
	    "station", (json_int_t)st.accepted[SOCK_STATION], "admin",
	    (json_int_t)st.accepted[SOCK_ADMIN], "calls", (json_int_t)st.calls, "callsInFlight",
	    (int)st.calls_in_flight, "outputOwed", (json_int_t)st.output_owed, "limitsHit",
	    "maxClients", (json_int_t)st.hit.max_clients, "maxClientsPerUid",
	    (json_int_t)st.hit.max_clients_per_uid, "maxClientsPerProcess",
	    (json_int_t)st.hit.max_clients_per_process, "messageTimeout",
	    (json_int_t)st.hit.message_timeout, "maxOutput", (json_int_t)st.hit.max_output,
	    "maxOutputTotal", (json_int_t)st.hit.max_output_total, "maxMessage",
	    (json_int_t)st.hit.max_message, "idleTimeout", (json_int_t)st.hit.idle_timeout,
	    "maxPendingCalls", (json_int_t)st.hit.max_pending_calls, "slowReader",
	    (json_int_t)st.hit.slow_reader);
	if (!o) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	if (t->tpa)
		json_object_set_new(o, "upstream", tpa_status_json(t->tpa));
	json_object_set_new(o, "profile", json_string(config_profile_name(t->cfg->api_profile)));
	json_object_set_new(o, "appKeys",
			    t->keypool ? keypool_status_json(t->keypool)
				       : json_pack("{s:s}", "source", "local"));
	/* What tpactl import --manifest needs; the signer is a public certificate's path. */
	json_object_set_new(
	    o, "import",
	    json_pack("{s:o, s:s, s:o}", "manifestSigner",
		      t->cfg->import_manifest_signer ? json_string(t->cfg->import_manifest_signer)
						     : json_null(),
		      "tkmPrefix", t->cfg->import_tkm_prefix, "manifestDevEui",
		      t->cfg->import_manifest_dev_eui ? json_string(t->cfg->import_manifest_dev_eui)
						      : json_null()));
	if (t->print)
		json_object_set_new(o, "printers", print_status_json(t->print));
	if (t->act) {
		struct activation_stats as;
		activation_get_stats(t->act, &as);
		json_t *a = json_pack(
		    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:i}", "live",
		    (json_int_t)as.live, "stored", (json_int_t)as.stored, "lookedUp",
		    (json_int_t)as.looked_up, "settledByQuery", (json_int_t)as.settled_by_query,
		    "reimported", (json_int_t)as.reimported, "notYetTrusted",
		    (json_int_t)as.not_yet_trusted, "foreign", (json_int_t)as.foreign, "adopted",
		    (json_int_t)as.adopted, "settleRuns", (json_int_t)as.settle_runs, "unsettled",
		    (int)t->settle_pending, "settleAfterMs", (int)settle_after_ms(t->cfg),
		    "inFlight", (int)as.in_flight);
		json_object_set_new(a, "claimWaits", json_integer((json_int_t)as.claim_waits));
		json_t *by = json_object();
		for (int i = 0; i <= ACT_RETIRED; i++)
			json_object_set_new(by, activation_outcome_name((enum act_outcome)i),
					    json_integer((json_int_t)as.outcomes[i]));
		json_object_set_new(a, "outcomes", by);
		json_object_set_new(o, "activations", a);
	}
	if (!t->store) {
		req_reply(r, o, false);
		return;
	}
	/* The store's part waits for its row counts (a round trip on PostgreSQL). */
	struct status_call *c = calloc(1, sizeof(*c));
	if (!c) {
		json_decref(o);
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	*c = (struct status_call){.t = t, .r = r, .o = o};
	c->timer = evtimer_new(t->base, on_status_timer, c);
	int e = c->timer ? store_count_async(t->store, on_status_counts, c) : -ENOMEM;
	if (e < 0) {
		status_send(c, NULL, strerror(-e));
		status_call_free(c);
		return;
	}
	c->counting = true;
	struct timeval tv = {.tv_sec = STATUS_COUNT_WAIT_MS / 1000,
			     .tv_usec = (STATUS_COUNT_WAIT_MS % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

/* The /metrics endpoint's text (core/metrics_http calls it per scrape). */
static char *render_metrics(void *arg, enum metrics_format fmt)
{
	return metrics_render(arg, fmt);
}

/* io.tpad.Admin.Metrics: OpenMetrics (default) or Prometheus text. */
static void h_metrics(struct tpad *t, struct req *r)
{
	enum metrics_format fmt = METRICS_OPENMETRICS;
	const char *name = json_string_value(json_object_get(req_params(r), "format"));
	if (name && metrics_format_parse(name, &fmt) < 0) {
		req_error(r, "io.tpad.Admin.InvalidParameter",
			  json_pack("{s:s, s:s}", "parameter", "format", "reason",
				    "must be \"openmetrics\" or \"prometheus\""));
		return;
	}
	char *text = metrics_render(t, fmt);
	json_t *o = text ? json_pack("{s:s}", "text", text) : NULL;
	free(text);
	if (!o) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	req_reply(r, o, false);
}

/* ---- journal events seen by watching the modules' counters ---- */

static struct event *watch_ev;
static struct {
	bool have;
	uint64_t failed_commits, settled;
	/* The database unreachable since down_us (monotonic); next "still" line at note_us. */
	bool store_down;
	uint64_t outages, down_us, note_us, note_every_us;
	struct pool_watch breaker; /* the cloud's outages, told once each */
} watched;

/* "Still unreachable" after 10 s, then at doubling intervals up to every 5 minutes. */
#define STORE_DOWN_FIRST_NOTE_US (10 * 1000000ull)
#define STORE_DOWN_MAX_NOTE_US (300 * 1000000ull)

/* The journal field that names the store in use: its path, or its URL without password. */
static const char *store_field(const struct config *cfg, char *buf, size_t len)
{
	if (strcmp(cfg->store_backend, "postgresql") != 0) {
		snprintf(buf, len, "%s", cfg->store_path);
		return "STORE_PATH";
	}
	store_url_public(cfg->store_url, buf, len);
	return "STORE_URL";
}

/* Seconds since the database went down, as text. */
static void down_seconds(uint64_t now, char *buf, size_t len)
{
	snprintf(buf, len, "%llu", (unsigned long long)((now - watched.down_us) / 1000000u));
}

/* The database is back: how long it was down. */
static void note_store_back(const char *key, const char *where, uint64_t now)
{
	char msg[512], secs[32];
	down_seconds(now, secs, sizeof(secs));
	snprintf(msg, sizeof(msg), "store: the database is reachable again after %s s", secs);
	log_event(LOG_NOTICE, LOG_ID_STORE_UP, msg, key, where, "DOWN_SECONDS", secs, NULL);
}

/* The database went; the first "still unreachable" line comes 10 s later. */
static void note_store_down(const char *key, const char *where, const char *why, uint64_t now)
{
	char msg[600];
	watched.down_us = now;
	watched.note_every_us = STORE_DOWN_FIRST_NOTE_US;
	watched.note_us = now + watched.note_every_us;
	snprintf(msg, sizeof(msg), "store: the database cannot be reached: %s", why);
	log_event(LOG_ERR, LOG_ID_STORE_DOWN, msg, key, where, "REASON", why, NULL);
}

/* Still down: say so at doubling intervals, up to every 5 minutes. */
static void note_store_still_down(const char *key, const char *where, const char *why, uint64_t now)
{
	char msg[600], secs[32];
	down_seconds(now, secs, sizeof(secs));
	snprintf(msg, sizeof(msg), "store: the database is still unreachable after %s s: %s", secs,
		 why);
	log_event(LOG_WARNING, LOG_ID_STORE_DOWN, msg, key, where, "REASON", why, "DOWN_SECONDS",
		  secs, NULL);
	watched.note_every_us = watched.note_every_us * 2 > STORE_DOWN_MAX_NOTE_US
				    ? STORE_DOWN_MAX_NOTE_US
				    : watched.note_every_us * 2;
	watched.note_us = now + watched.note_every_us;
}

/*
 * The database became unreachable, is still, or is back: one line each, paced. The
 * outages counter catches an up between two looks (back, then down again); an outage
 * begun and ended between two looks is left to the connections' own lines.
 */
static void watch_store_down(struct tpad *t, const struct store_stats *ss)
{
	uint64_t now = clock_now_us();
	bool new_outage = ss->outages > watched.outages;
	bool back = watched.store_down && (new_outage || !ss->down);
	bool down = ss->down && (new_outage || !watched.store_down);
	bool still = ss->down && !down && now >= watched.note_us;
	watched.store_down = ss->down;
	watched.outages = ss->outages;
	if (!back && !down && !still)
		return; /* the usual second: nothing to say, nothing to format */
	char where[512];
	const char *key = store_field(t->cfg, where, sizeof(where));
	if (back)
		note_store_back(key, where, now);
	if (down)
		note_store_down(key, where, ss->last_reason, now);
	else if (still)
		note_store_still_down(key, where, ss->last_reason, now);
}

/* The store's part of the watch: failed transactions, the database down or back. */
static void watch_store(struct tpad *t)
{
	struct store_stats ss;
	store_stats(t->store, &ss);
	if (watched.have && ss.batch_failures > watched.failed_commits) {
		char a[32], b[32], where[512], msg[600];
		const char *key = store_field(t->cfg, where, sizeof(where));
		snprintf(a, sizeof(a), "%llu",
			 (unsigned long long)(ss.batch_failures - watched.failed_commits));
		snprintf(b, sizeof(b), "%llu", (unsigned long long)ss.ops_failed);
		snprintf(msg, sizeof(msg), "store transaction failed: %s", ss.last_reason);
		log_event(LOG_ERR, LOG_ID_STORE_FAILED, msg, key, where, "REASON", ss.last_reason,
			  "FAILED_COMMITS", a, "FAILED_OPS_TOTAL", b, NULL);
	}
	watched.failed_commits = ss.batch_failures;
	watch_store_down(t, &ss);
	store_failing(t->store);
	if (!t->store_counting && !t->stopping &&
	    store_count_async(t->store, on_watch_counts, t) == 0)
		t->store_counting = true;
}

/*
 * The breaker opened, is still open, or closed: one line each, paced (pool_watch): a cloud
 * that stays away is one outage, not a line at every re-opening (counted in the "still"
 * line and in tpad_upstream_breaker_opens_total).
 */
static void watch_breaker(struct tpad *t, const struct tpa_counters *c, const char *url)
{
	uint64_t open_s, reopens;
	unsigned say =
	    pool_watch_look(&watched.breaker, &c->pool, clock_now_us(), &open_s, &reopens);
	if (say & (POOL_WATCH_OPENED | POOL_WATCH_STILL)) {
		/* With why (the last error says it: a refused PSK, a certificate...). */
		char line[300], msg[448], a[32];
		tpa_status_line(t->tpa, line, sizeof(line));
		snprintf(a, sizeof(a), "%llu", (unsigned long long)c->pool.breaker_opens);
		if (say & POOL_WATCH_STILL)
			snprintf(msg, sizeof(msg),
				 "circuit breaker still open after %llu s (%llu re-openings): "
				 "requests to the cloud fail fast (%s)",
				 (unsigned long long)open_s, (unsigned long long)reopens, line);
		else
			snprintf(msg, sizeof(msg),
				 "circuit breaker open: requests to the cloud fail fast (%s)",
				 line);
		log_event(LOG_WARNING, LOG_ID_BREAKER_OPEN, msg, "UPSTREAM_URL", url,
			  "BREAKER_OPENS", a, NULL);
	}
	if (say & POOL_WATCH_CLOSED) {
		char msg[160];
		snprintf(msg, sizeof(msg),
			 "circuit breaker closed: the cloud answers again (open for %llu s)",
			 (unsigned long long)open_s);
		log_event(LOG_NOTICE, LOG_ID_BREAKER_CLOSE, msg, "UPSTREAM_URL", url, NULL);
	}
}

/* Once a second: breaker opened or closed, store transactions failed, outcomes settled. */
static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpad *t = arg;
	char a[32];
	if (t->tpa) {
		struct tpa_counters c;
		tpa_get_counters(t->tpa, &c);
		/* The pool's URL is upstream.url (no Status built once a second for it). */
		watch_breaker(t, &c, t->cfg->upstream_url ? t->cfg->upstream_url : "");
	}
	if (t->store)
		watch_store(t);
	if (t->act) {
		struct activation_stats as;
		activation_get_stats(t->act, &as);
		if (watched.have && as.settled_by_query > watched.settled) {
			snprintf(a, sizeof(a), "%llu",
				 (unsigned long long)(as.settled_by_query - watched.settled));
			char msg[128];
			snprintf(msg, sizeof(msg),
				 "%s unknown outcome%s settled with the read-only query", a,
				 as.settled_by_query - watched.settled == 1 ? "" : "s");
			log_event(LOG_NOTICE, LOG_ID_SETTLED, msg, "COUNT", a, NULL);
		}
		watched.settled = as.settled_by_query;
	}
	watched.have = true;
}

/* ---- io.tpad.Admin.Backup: an online copy of the store, made on a thread ---- */

struct backup_job {
	struct req *r;
	char *db_path, *dest;
	int err;
	char reason[512];
	struct sql_backup_info info;
	int pipe[2];
	struct event *done;
	pthread_t thread;
};

static struct backup_job *backup_running; /* one at a time */

static void *backup_thread(void *arg)
{
	struct backup_job *j = arg;
	j->err = sql_backup_path(j->db_path, j->dest, &j->info, j->reason, sizeof(j->reason));
	ssize_t n = write(j->pipe[1], "x", 1);
	(void)n;
	return NULL;
}

static void backup_job_free(struct backup_job *j)
{
	if (!j)
		return;
	if (j->done)
		event_free(j->done);
	if (j->pipe[0] >= 0)
		close(j->pipe[0]);
	if (j->pipe[1] >= 0)
		close(j->pipe[1]);
	free(j->db_path);
	free(j->dest);
	free(j);
}

/* Back on the loop: answer and clean up. */
static void backup_done(evutil_socket_t fd, short what, void *arg)
{
	struct backup_job *j = arg;
	pthread_join(j->thread, NULL);
	backup_running = NULL;
	if (j->err < 0) {
		char msg[700];
		snprintf(msg, sizeof(msg), "backup of the store to %s failed: %s", j->dest,
			 j->reason);
		log_event(LOG_WARNING, LOG_ID_BACKUP, msg, "BACKUP_PATH", j->dest, "OUTCOME",
			  "failed", "REASON", j->reason, NULL);
		req_error(j->r, "io.tpad.Admin.BackupFailed",
			  json_pack("{s:s}", "reason", j->reason));
	} else {
		char msg[600], bytes[32];
		snprintf(msg, sizeof(msg),
			 "store backed up to %s (%llu bytes, %llu pages, %llu ms)%s", j->dest,
			 (unsigned long long)j->info.bytes, (unsigned long long)j->info.pages,
			 (unsigned long long)j->info.ms,
			 j->info.leftovers ? "; removed the unfinished copy an interrupted "
					     "backup had left beside it"
					   : "");
		snprintf(bytes, sizeof(bytes), "%llu", (unsigned long long)j->info.bytes);
		log_event(LOG_NOTICE, LOG_ID_BACKUP, msg, "BACKUP_PATH", j->dest, "OUTCOME", "ok",
			  "BYTES", bytes, NULL);
		req_reply(j->r,
			  json_pack("{s:s, s:I, s:I, s:I}", "path", j->dest, "bytes",
				    (json_int_t)j->info.bytes, "pages", (json_int_t)j->info.pages,
				    "milliseconds", (json_int_t)j->info.ms),
			  false);
	}
	backup_job_free(j);
}

/* True if dest names the store, one of its companion files or its lock file. */
static bool is_store_file(const char *store_path, const char *dest)
{
	char a[PATH_MAX], b[PATH_MAX];
	if (!realpath(store_path, a))
		return false;
	/* dest may not exist yet: resolve its directory. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", dest);
	char *slash = strrchr(dir, '/');
	if (!slash)
		return false;
	*slash = '\0';
	if (!realpath(dir[0] ? dir : "/", b))
		return false;
	size_t n = strlen(b);
	snprintf(b + n, sizeof(b) - n, "/%s", slash + 1);
	static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", ".lock"};
	for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++) {
		char s[PATH_MAX + 16];
		snprintf(s, sizeof(s), "%s%s", a, suffixes[i]);
		if (strcmp(s, b) == 0)
			return true;
	}
	return false;
}

static void h_backup(struct tpad *t, struct req *r)
{
	const char *dest = json_string_value(json_object_get(req_params(r), "path"));
	const char *why = NULL;
	char dest_why[200];
	if (!dest || dest[0] != '/')
		why = "must be an absolute path (tpad resolves it, not the client)";
	else if (dest[strlen(dest) - 1] == '/')
		why = "must name a file, not a directory";
	else if (is_store_file(t->cfg->store_path, dest))
		why = "is the store itself or one of its files";
	else if (daemon_private_tmp(dest, "/proc/self/mountinfo"))
		why = "is in tpad's own /tmp (PrivateTmp=yes in its unit): no one else sees the copy "
		      "and it goes when tpad stops; use a directory tpad can write, e.g. "
		      "/var/lib/tpad/backups (install -d -o tpad -m 0700 /var/lib/tpad/backups)";
	else if (sql_backup_dest_ok(dest, dest_why, sizeof(dest_why)) < 0)
		why = dest_why;
	if (why) {
		req_error(r, "io.tpad.Admin.InvalidParameter",
			  json_pack("{s:s, s:s}", "parameter", "path", "reason", why));
		return;
	}
	if (t->cfg->store_backend && strcmp(t->cfg->store_backend, "postgresql") == 0) {
		req_error(r, "io.tpad.Admin.BackupFailed",
			  json_pack("{s:s}", "reason",
				    "the store is PostgreSQL: back it up with pg_dump (see README, "
				    "\"Many lines, one store\")"));
		return;
	}
	if (backup_running || !t->store) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	struct backup_job *j = calloc(1, sizeof(*j));
	if (!j) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	j->pipe[0] = j->pipe[1] = -1;
	j->r = r;
	j->db_path = strdup(t->cfg->store_path);
	j->dest = strdup(dest);
	if (!j->db_path || !j->dest || pipe2(j->pipe, O_CLOEXEC) < 0 ||
	    !(j->done = event_new(t->base, j->pipe[0], EV_READ, backup_done, j)) ||
	    event_add(j->done, NULL) < 0 || thread_start(&j->thread, backup_thread, j, "backup")) {
		backup_job_free(j);
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	backup_running = j;
}

static const struct handler handlers[] = {
    {"org.varlink.service.GetInfo", h_get_info},
    {"org.varlink.service.GetInterfaceDescription", h_get_interface_description},
    {"io.tpad.Admin.Status", h_status},
    {"io.tpad.Admin.Metrics", h_metrics},
    {"io.tpad.Admin.Backup", h_backup},
    {"io.tpad.Station.Activate", station_activate},
    {"io.tpad.Station.Lookup", station_lookup},
    {"io.tpad.Admin.Import", admin_import},
    {"io.tpad.Admin.Export", admin_export},
    {"io.tpad.Admin.ListDevices", admin_list_devices},
    {"io.tpad.Admin.GetDevice", admin_get_device},
    {"io.tpad.Admin.Print", admin_print},
    {"io.tpad.Admin.Adopt", admin_adopt},
    {"io.tpad.Admin.Retire", admin_retire},
};

/* The handler of a method, or NULL if it is declared but not built yet. */
static handler_fn *handler_find(const char *method)
{
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (strcmp(handlers[i].method, method) == 0)
			return handlers[i].fn;
	return NULL;
}

/* Send the error of a fault. */
static void req_fault(struct req *r, const struct proto_fault *f)
{
	req_error(r, f->error, proto_fault_parameters(f));
}

void dispatch_call(struct req *r, void *arg)
{
	struct tpad *t = arg;
	const struct peer *p = req_peer(r);
	unsigned sock = p->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	struct call c = {.method = (char *)req_method(r),
			 .parameters = req_params(r),
			 .more = req_more(r),
			 .oneway = req_oneway(r)};
	const struct method_spec *m;
	struct proto_fault f;

	int rc = proto_check_on(&c, sock, PROTO_SOCKET_STATION | PROTO_SOCKET_ADMIN, &m, &f);
	if (rc < 0) {
		log_debug("%s: %s %s %s", req_method(r), f.error, f.parameter, f.reason);
		req_fault(r, &f);
		return;
	}
	if (p->kind == SOCK_STATION && strcmp(m->interface, "io.tpad.Station") == 0 &&
	    !station_allowed(t->cfg, p)) {
		/* The second fence behind the socket's mode: refuse, and leave a trace. */
		log_warnx("refused %s from uid %u gid %u pid %d: not in station.allowed-uids or "
			  "station.allowed-groups",
			  m->name, (unsigned)p->uid, (unsigned)p->gid, (int)p->pid);
		const char *dev = json_string_value(json_object_get(req_params(r), "devEUI"));
		if (t->store)
			store_audit(t->store, dev ? dev : "", m->name, (uint32_t)p->uid,
				    (int32_t)p->pid, "denied");
		req_error(r, "io.tpad.Station.PermissionDenied",
			  json_pack("{s:s}", "reason",
				    "this user is not allowed to call station methods"));
		return;
	}
	handler_fn *fn = handler_find(m->name);
	if (!fn) {
		req_error(r, PROTO_ERR_METHOD_NOT_IMPLEMENTED,
			  json_pack("{s:s}", "method", m->name));
		return;
	}
	fn(t, r);
}

/* store.lease in force: as set, or twice the request timeout. */
static uint32_t store_lease_ms(const struct config *cfg)
{
	return cfg->store_lease_ms ? cfg->store_lease_ms : 2 * cfg->upstream_request_timeout_ms;
}

/* The production wiring of activation: the store and the cloud. */
static int op_get_async(void *ctx, const char *dev_eui, store_get_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_get_async(t->store, dev_eui, cb, arg) : -ESHUTDOWN;
}

static int op_insert(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_insert(t->store, r, cb, arg) : -ESHUTDOWN;
}

static int op_update(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_update(t->store, r, cb, arg) : -ESHUTDOWN;
}

static int op_write_attempt(void *ctx, const struct store_record *r, bool insert,
			    const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_write_attempt(t->store, r, insert, a, cb, arg) : -ESHUTDOWN;
}

static int64_t op_now_ms(void *ctx)
{
	return clock_wall_ms();
}

static int64_t op_mono_ms(void *ctx)
{
	return (int64_t)clock_now_ms();
}

static int op_audit(void *ctx, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		    const char *outcome)
{
	struct tpad *t = ctx;
	return t->store ? store_audit(t->store, dev_eui, method, uid, pid, outcome) : -ESHUTDOWN;
}

/*
 * An import in flight on a shared store: its claim on the device is renewed every third
 * of store.lease until the cloud answers, so that no other tpad takes the device over
 * (and imports it again) while a slow import still runs.
 */
struct import_watch {
	struct import_watch *next, *prev;
	struct tpad *t;
	char dev_eui[17];
	struct event *timer;
	tpa_done_fn *cb;
	void *arg;
};

static struct import_watch *import_watches;

static void import_watch_free(struct import_watch *w)
{
	if (w->prev)
		w->prev->next = w->next;
	else
		import_watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	event_free(w->timer);
	free(w);
}

static void on_claim_renew(evutil_socket_t fd, short what, void *arg)
{
	struct import_watch *w = arg;
	if (w->t->store)
		store_claim_renew(w->t->store, w->dev_eui);
}

static void on_watched_import(const struct tpa_result *res, void *arg)
{
	struct import_watch *w = arg;
	tpa_done_fn *cb = w->cb;
	void *cb_arg = w->arg;
	import_watch_free(w);
	cb(res, cb_arg);
}

/* Send the import of rec; on PostgreSQL its claim is renewed while it runs. */
static int send_import(struct tpad *t, const struct tpa_record *rec, tpa_done_fn *cb, void *arg)
{
	if (!t->tpa)
		return -ESHUTDOWN;
	if (!t->store || strcmp(store_backend_name(t->store), "postgresql") != 0)
		return tpa_import(t->tpa, rec, cb, arg);
	struct import_watch *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->timer = event_new(t->base, -1, EV_PERSIST, on_claim_renew, w);
	if (!w->timer) {
		free(w);
		return -ENOMEM;
	}
	w->t = t;
	hex_upper(w->dev_eui, rec->dev_eui, HEX_EUI);
	w->cb = cb;
	w->arg = arg;
	w->next = import_watches;
	if (w->next)
		w->next->prev = w;
	import_watches = w;
	int e = tpa_import(t->tpa, rec, on_watched_import, w);
	if (e < 0) {
		import_watch_free(w);
		return e;
	}
	uint32_t every = store_lease_ms(t->cfg) / 3;
	struct timeval tv = {.tv_sec = every / 1000, .tv_usec = (every % 1000) * 1000};
	event_add(w->timer, &tv);
	return 0;
}

/* An import waiting for its pooled key's hsmEncryptedAppKey from the store. */
struct hsm_import {
	struct tpad *t;
	struct tpa_record rec;
	tpa_done_fn *cb;
	void *arg;
};

/* The store found (or not) the pooled pair: send the import. */
static void on_hsm_key(int err, const char *reason, const struct store_rows *rows, void *arg)
{
	struct hsm_import *h = arg;
	static const char hexd[] = "0123456789ABCDEF";
	if (err == 0) {
		for (size_t b = 0; b < 16; b++) {
			h->rec.hsm_app_key[2 * b] = hexd[rows->hsm_key[b] >> 4];
			h->rec.hsm_app_key[2 * b + 1] = hexd[rows->hsm_key[b] & 15];
		}
		h->rec.hsm_app_key[32] = '\0';
	}
	int e = !h->t->stopping ? send_import(h->t, &h->rec, h->cb, h->arg) : -ESHUTDOWN;
	if (e < 0) {
		/* Nothing was sent: the attempt is answered as never sent. */
		struct tpa_result res = {.outcome = TPA_UNAVAILABLE, .retry_after = -1};
		snprintf(res.reason, sizeof(res.reason), "the import could not be queued: %s",
			 strerror(-e));
		h->cb(&res, h->arg);
	}
	cred_wipe(h, sizeof(*h));
	free(h);
}

static int op_import(void *ctx, const struct tpa_record *rec, tpa_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	if (!t->tpa)
		return -ESHUTDOWN;
	if (!t->keypool || !rec->app_key[0])
		return send_import(t, rec, cb, arg);
	/* A cloud-HSM key travels with its hsmEncryptedAppKey. */
	struct tpa_record r = *rec;
	int k = keypool_hsm_key(t->keypool, rec->app_key, r.hsm_app_key);
	if (k == -EAGAIN) {
		/* Not handed out in this run: its pair is in the store. */
		struct hsm_import *h = calloc(1, sizeof(*h));
		uint8_t key[16];
		int e = h ? hex_decode(rec->app_key, key, sizeof(key)) : -ENOMEM;
		if (e >= 0) {
			h->t = t;
			h->rec = r;
			h->rec.hsm_app_key[0] = '\0';
			h->cb = cb;
			h->arg = arg;
			e = t->store ? store_key_pool_find_async(t->store, key, on_hsm_key, h)
				     : -ESHUTDOWN;
		}
		cred_wipe(key, sizeof(key));
		cred_wipe(&r, sizeof(r));
		if (e < 0 && h) {
			cred_wipe(h, sizeof(*h));
			free(h);
		}
		return e < 0 ? e : 0;
	}
	if (k < 0)
		r.hsm_app_key[0] = '\0';
	int e = send_import(t, &r, cb, arg);
	cred_wipe(&r, sizeof(r));
	return e;
}

static int op_query(void *ctx, const char *dev_eui, tpa_done_fn *cb, void *arg)
{
	struct tpad *t = ctx;
	return t->tpa ? tpa_query(t->tpa, dev_eui, cb, arg) : -ESHUTDOWN;
}

static int op_list_pending(void *ctx, const char *after, size_t limit, store_rows_fn *cb,
			   void *arg)
{
	struct tpad *t = ctx;
	return t->store ? store_list_async(t->store, STORE_PENDING, after, limit, cb, arg)
			: -ESHUTDOWN;
}

static int op_new_app_key(void *ctx, const char *dev_eui, uint8_t key[16])
{
	struct tpad *t = ctx;
	/* With cloud-hsm from the pool, never waiting for it. */
	if (t->keypool)
		return keypool_take(t->keypool, dev_eui, key);
	return rng_bytes(t->rng, key, 16);
}

/* A timer of activation (ops.later), owned here so that shutdown can drop it. */
struct later {
	struct later *next, *prev;
	struct tpad *t;
	struct event *ev;
	void (*fn)(void *arg);
	void *arg;
};

static void later_unlink(struct later *l)
{
	if (l->prev)
		l->prev->next = l->next;
	else
		l->t->later = l->next;
	if (l->next)
		l->next->prev = l->prev;
	event_free(l->ev);
}

static void on_later(evutil_socket_t fd, short what, void *arg)
{
	struct later *l = arg;
	void (*fn)(void *) = l->fn;
	void *fn_arg = l->arg;
	later_unlink(l);
	free(l);
	fn(fn_arg);
}

static int op_later(void *ctx, uint32_t ms, void (*fn)(void *arg), void *arg)
{
	struct tpad *t = ctx;
	if (t->stopping)
		return -ESHUTDOWN;
	struct later *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->ev = evtimer_new(t->base, on_later, l);
	if (!l->ev) {
		free(l);
		return -ENOMEM;
	}
	l->t = t;
	l->fn = fn;
	l->arg = arg;
	l->next = t->later;
	if (l->next)
		l->next->prev = l;
	t->later = l;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	evtimer_add(l->ev, &tv);
	return 0;
}

static const struct activation_ops production_ops = {
    .later = op_later,
    .get_async = op_get_async,
    .insert = op_insert,
    .update = op_update,
    .audit = op_audit,
    .import = op_import,
    .query = op_query,
    .list_pending = op_list_pending,
    .new_app_key = op_new_app_key,
    .write_attempt = op_write_attempt,
    .now_ms = op_now_ms,
    .mono_ms = op_mono_ms,
};

/* How often PENDING rows whose time has come are settled in the background. */
#define SETTLE_TICK_MS 1000

/* The settle-after in force: upstream.settle-after, or twice the request timeout. */
static uint32_t settle_after_ms(const struct config *cfg)
{
	return cfg->upstream_settle_after_ms ? cfg->upstream_settle_after_ms
					     : 2 * cfg->upstream_request_timeout_ms;
}

/* A background pass over the PENDING rows ended. */
static void on_settle_pass(unsigned still_pending, void *arg)
{
	struct tpad *t = arg;
	t->settle_pending = still_pending;
}

/* Every SETTLE_TICK_MS: settle the PENDING rows whose time has come. */
static void settle_tick(evutil_socket_t fd, short what, void *arg)
{
	struct tpad *t = arg;
	if (!t->act || t->stopping)
		return;
	int r = activation_settle_due(t->act, t->cfg->upstream_sessions, on_settle_pass, t);
	if (r < 0 && r != -EBUSY)
		log_warn_errno(r, "cannot list PENDING devices to settle");
}

/* Start-up reconciliation finished. */
static uint64_t reconcile_runs; /* settle runs before the start-up pass */

static void on_reconciled(unsigned still_pending, void *arg)
{
	struct tpad *t = arg;
	t->settle_pending = still_pending;
	struct activation_stats as;
	activation_get_stats(t->act, &as);
	uint64_t listed = as.settle_runs - reconcile_runs;
	if (listed)
		log_notice("start-up: %llu PENDING devices settled with the cloud",
			   (unsigned long long)(listed - still_pending));
	/* With the last reason: the cloud down, a refused query... (tpactl devices
	 * --state PENDING lists them). */
	if (still_pending)
		log_warnx("%u PENDING devices could not be settled with the cloud yet (the last: "
			  "%s); they are settled in the background with backoff",
			  still_pending, activation_settle_why(t->act));
	else if (listed)
		log_info("every PENDING device is settled");
}

/* Open the store with the key from the credential or key file. */
static int open_store(struct tpad *t)
{
	const struct config *cfg = t->cfg;
	uint8_t key[STORE_KEY_LEN];
	size_t len = 0;
	char err[512];
	int r = cred_load_hex("store-key", cfg->store_key_file, key, sizeof(key), &len);
	if (r < 0) {
		char why[256];
		log_errx("cannot load the store key: %s",
			 cred_explain(r, "store-key", cfg->store_key_file, why, sizeof(why)));
		return r;
	}
	if (len != STORE_KEY_LEN) {
		cred_wipe(key, sizeof(key));
		log_errx("the store key must be %d bytes (%d hexadecimal digits), not %zu",
			 STORE_KEY_LEN, 2 * STORE_KEY_LEN, len);
		return -EINVAL;
	}
	char host[65] = "";
	if (!cfg->store_instance && gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "tpad");
	bool pg = strcmp(cfg->store_backend, "postgresql") == 0;
	char password[256] = "";
	bool has_password = false;
	if (pg) {
		r = cred_load_text("store-password", cfg->store_password_file, password,
				   sizeof(password));
		if (r == 0) {
			has_password = true;
		} else if (r != -ENOENT || cfg->store_password_file) {
			char why[256];
			cred_wipe(key, sizeof(key));
			log_errx("cannot load the store password: %s",
				 cred_explain(r, "store-password", cfg->store_password_file, why,
					      sizeof(why)));
			return r;
		}
	}
	struct store_options o = {.backend = pg ? STORE_POSTGRESQL : STORE_SQLITE,
				  .path = cfg->store_path,
				  .url = cfg->store_url,
				  .password = has_password ? password : NULL,
				  .connections = cfg->store_connections,
				  .lease_ms = store_lease_ms(cfg),
				  .instance = cfg->store_instance ? cfg->store_instance : host,
				  .key = key,
				  .key_len = len,
				  .commit_delay_ms = cfg->store_commit_delay_ms};
	r = store_open(t->base, &o, &t->store, err, sizeof(err));
	cred_wipe(key, sizeof(key));
	cred_wipe(password, sizeof(password));
	if (r < 0)
		log_errx("cannot open the store %s: %s", pg ? "(postgresql)" : cfg->store_path,
			 err);
	return r;
}

int dispatch_init(struct tpad *t)
{
	char err[512];
	int r = open_store(t);
	if (r < 0)
		return r;
	t->tpa = tpa_new(t->base, t->cfg, err, sizeof(err));
	if (!t->tpa) {
		log_errx("upstream: %s", err);
		return -EINVAL;
	}
	r = layout_new(&t->cfg->label, 0, 0, 0, t->cfg->qr_ec_level, &t->layout, err, sizeof(err));
	if (r < 0) {
		log_errx("%s", err);
		return r;
	}
	t->print = print_new(t->base, t->cfg, err, sizeof(err));
	if (!t->print) {
		log_errx("printers: %s", err);
		return -EINVAL;
	}
	t->rng = rng_new("tpad AppKey generator");
	if (t->cfg->device_app_key_source == APP_KEY_CLOUD_HSM) {
		t->keypool = keypool_new(t->base, t->cfg, t->tpa, t->store, err, sizeof(err));
		if (!t->keypool) {
			log_errx("%s", err);
			return -EINVAL;
		}
	}
	t->act = activation_new(&production_ops, t, t->cfg->device_join_eui, t->cfg->qr_profile_id);
	t->settle_ev = event_new(t->base, -1, EV_PERSIST, settle_tick, t);
	if (!t->rng || !t->act || !t->settle_ev) {
		log_errx("cannot set up activation");
		return -ENOMEM;
	}
	activation_set_settle(t->act, settle_after_ms(t->cfg), t->cfg->upstream_backoff_min_ms,
			      t->cfg->upstream_backoff_max_ms);
	activation_set_shared_store(t->act, strcmp(t->cfg->store_backend, "postgresql") == 0);
	struct timeval tick = {.tv_sec = SETTLE_TICK_MS / 1000,
			       .tv_usec = (SETTLE_TICK_MS % 1000) * 1000};
	event_add(t->settle_ev, &tick);
	watch_ev = event_new(t->base, -1, EV_PERSIST, watch_cb, t);
	if (!watch_ev) {
		log_errx("out of memory");
		return -ENOMEM;
	}
	struct timeval second = {.tv_sec = 1};
	event_add(watch_ev, &second);
	watch_cb(-1, 0, t);
	if (t->cfg->metrics_listen) {
		r = metrics_http_new(t->base, t->cfg->metrics_listen, "tpad", render_metrics, t,
				     &t->metrics, err, sizeof(err));
		if (r < 0) {
			log_errx("%s", err);
			return r;
		}
	}
	struct activation_stats as;
	activation_get_stats(t->act, &as);
	reconcile_runs = as.settle_runs;
	r = activation_reconcile(t->act, t->cfg->upstream_sessions, on_reconciled, t);
	if (r < 0)
		log_warn_errno(r, "cannot start settling PENDING devices");
	return 0;
}

void dispatch_finish(struct tpad *t)
{
	/*
	 * Order matters: without the cloud no new request can start; closing the store runs
	 * its last callbacks, which find the cloud gone; then what is left is dropped.
	 * Printers go first: a job still queued is answered while the store can audit it.
	 */
	t->print = print_free(t->print);
	t->layout = layout_free(t->layout);
	if (t->settle_ev)
		event_free(t->settle_ev);
	t->settle_ev = NULL;
	metrics_http_free(t->metrics);
	t->metrics = NULL;
	if (watch_ev) {
		watch_cb(-1, 0, t); /* what happened since the last look */
		event_free(watch_ev);
		watch_ev = NULL;
	}
	if (backup_running) {
		/* Let the copy finish and answer it: the store it reads is still there. */
		backup_done(-1, EV_READ, backup_running);
	}
	keypool_free(t->keypool);
	t->keypool = NULL;
	tpa_free(t->tpa);
	while (import_watches) /* their imports were dropped with the pool */
		import_watch_free(import_watches);
	t->tpa = NULL;
	struct store *s = t->store;
	t->store = NULL;
	store_close(s);
	while (t->later) {
		struct later *l = t->later;
		later_unlink(l);
		free(l);
	}
	activation_free(t->act);
	t->act = NULL;
	rng_free(t->rng);
	t->rng = NULL;
}

/* Whether the upstream channel is TLS-PSK (https:// in PSK mode: it reads the tpa-psk). */
static bool upstream_psk(const struct config *cfg)
{
	return cfg->upstream_tls == UPSTREAM_TLS_PSK && strncmp(cfg->upstream_url, "https:", 6) == 0;
}

/* Whether the upstream asks for an OAuth2 token (and so reads the oauth-secret). */
static bool upstream_oauth2(const struct config *cfg)
{
	return cfg->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2 ||
	       cfg->upstream_auth == UPSTREAM_AUTH_OAUTH2;
}

/*
 * Check that a credential the configuration needs can be loaded. One that is neither in
 * $CREDENTIALS_DIRECTORY nor given by a file directive comes from systemd at run time and
 * is not checked here. keep (NULL: none): where a hex credential of STORE_KEY_LEN bytes
 * that passed goes, *ret_kept set to its length (0 when not loaded), so that what checks
 * it next need not read it again.
 */
static int check_credential_keep(const char *name, const char *file, bool hex, uint8_t *keep,
				 size_t *ret_kept, char *err, size_t errlen)
{
	if (ret_kept)
		*ret_kept = 0;
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	if ((!dir || !*dir) && (!file || !*file))
		return 0;
	uint8_t buf[512];
	size_t len = 0;
	int r = hex ? cred_load_hex(name, file, buf, sizeof(buf), &len)
		    : cred_load_text(name, file, (char *)buf, sizeof(buf));
	if (r == 0 && keep && hex && len == STORE_KEY_LEN) {
		memcpy(keep, buf, len);
		*ret_kept = len;
	}
	cred_wipe(buf, sizeof(buf));
	if (r < 0) {
		char why[256];
		snprintf(err, errlen, "%s", cred_explain(r, name, file, why, sizeof(why)));
		return r;
	}
	if (strcmp(name, "store-key") == 0 && len != STORE_KEY_LEN) {
		snprintf(err, errlen, "the store key (%s) must be %d hexadecimal digits, not %zu",
			 file && *file ? file : "credential store-key", 2 * STORE_KEY_LEN, 2 * len);
		return -EINVAL;
	}
	return 0;
}

static int check_credential(const char *name, const char *file, bool hex, char *err, size_t errlen)
{
	return check_credential_keep(name, file, hex, NULL, NULL, err, errlen);
}

/*
 * A directive's error as the configuration's own are given: "FILE:LINE: key: why", or
 * "FILE: key (default): why" for a default value. -EINVAL.
 */
static int located(const struct config *cfg, const char *path, const char *key, const char *why,
		   char *err, size_t errlen)
{
	const char *where = config_origin(cfg, key);
	if (strcmp(where, "default") == 0)
		snprintf(err, errlen, "%s: %s (default): %s", path, key, why);
	else
		snprintf(err, errlen, "%s: %s: %s", where, key, why);
	return -EINVAL;
}

/*
 * The same for a reason that names its directive first ("label.caption-2: ..."), when
 * the file sets it; a default one is not what is at fault (the label's size is).
 */
static int located_reason(const struct config *cfg, const char *path, const char *why, char *err,
			  size_t errlen)
{
	size_t n = strcspn(why, ": ");
	char key[64];
	if (why[n] == ':' && n > 0 && n < sizeof(key)) {
		memcpy(key, why, n);
		key[n] = '\0';
		if (strcmp(config_origin(cfg, key), "default") != 0)
			return located(cfg, path, key, why + n + strspn(why + n, ": "), err,
				       errlen);
	}
	snprintf(err, errlen, "%s: %s", path, why);
	return -EINVAL;
}

int dispatch_check_config(const struct config *cfg, const char *path, struct check_key *keep,
			  char *err, size_t errlen)
{
	char why[400];
	if (cfg->qr_template && qr_template_check(cfg->qr_template, why, sizeof(why)) < 0)
		return located(cfg, path, "qr.template", why, err, errlen);
	/* A socket path a start by hand would not bind (systemd's sockets are its own). */
	if (cfg->station_socket && listener_check_path(cfg->station_socket, why, sizeof(why)) < 0)
		return located(cfg, path, "station.socket", why, err, errlen);
	if (cfg->admin_socket && listener_check_path(cfg->admin_socket, why, sizeof(why)) < 0)
		return located(cfg, path, "admin.socket", why, err, errlen);
	if (cfg->metrics_listen && *cfg->metrics_listen &&
	    httpd_listen_check(cfg->metrics_listen, why, sizeof(why)) < 0)
		return located(cfg, path, "metrics.listen", why, err, errlen);
	/* The label and each printer's variant of it must fit a typical code and captions. */
	struct layout *l;
	int r = layout_new(&cfg->label, 0, 0, 0, cfg->qr_ec_level, &l, why, sizeof(why));
	if (r < 0)
		return located_reason(cfg, path, why, err, errlen);
	layout_free(l);
	for (size_t i = 0; i < cfg->n_printers; i++) {
		const struct config_printer *p = &cfg->printers[i];
		r = layout_new(&cfg->label, p->dpi, p->width, p->height, cfg->qr_ec_level, &l, why,
			       sizeof(why));
		if (r < 0) {
			char url[128];
			snprintf(url, sizeof(url), "printer.%s.url", p->name);
			snprintf(err, errlen, "%s: [printer.%s]: %s", config_origin(cfg, url),
				 p->name, why);
			return r;
		}
		layout_free(l);
	}
	if (upstream_psk(cfg) && (!cfg->upstream_psk_identity || !*cfg->upstream_psk_identity)) {
		snprintf(err, errlen, "%s: the PSK identity (upstream.psk-identity) is not set",
			 path);
		return -EINVAL;
	}
	r = check_credential_keep("store-key", cfg->store_key_file, true, keep ? keep->key : NULL,
				  keep ? &keep->len : NULL, why, sizeof(why));
	if (r == 0 && upstream_psk(cfg))
		r = check_credential("tpa-psk", cfg->upstream_psk_file, true, why, sizeof(why));
	if (r == 0 && upstream_oauth2(cfg))
		r = check_credential("oauth-secret", cfg->oauth2_secret_file, false, why,
				     sizeof(why));
	/* Without a file the password is optional (libpq's passfile, client certificates). */
	if (r == 0 && strcmp(cfg->store_backend, "postgresql") == 0 && cfg->store_password_file)
		r = check_credential("store-password", cfg->store_password_file, false, why,
				     sizeof(why));
	if (r < 0)
		snprintf(err, errlen, "%s: %s", path, why);
	return r;
}

/*
 * --check-config: a SQLite store as a start would take it (a newer tpad's, or one the store
 * key does not open, is refused), read only: the file does not change, a running tpad is
 * not disturbed (systemctl reload runs this first).
 */
static int check_store(const struct config *cfg, const struct check_key *key)
{
	if (strcmp(cfg->store_backend, "postgresql") == 0)
		return 0;
	struct check_key own = {0};
	if (!key || key->len != STORE_KEY_LEN) {
		/* dispatch_check_config() did not run (no configuration file), or said why. */
		if (cred_load_hex("store-key", cfg->store_key_file, own.key, sizeof(own.key),
				  &own.len) < 0 ||
		    own.len != STORE_KEY_LEN) {
			cred_wipe(&own, sizeof(own));
			return 0;
		}
		key = &own;
	}
	const struct store_options o = {
	    .backend = STORE_SQLITE, .path = cfg->store_path, .key = key->key, .key_len = key->len};
	char err[512];
	int r = store_check(&o, err, sizeof(err));
	cred_wipe(&own, sizeof(own));
	if (r < 0)
		log_errx("store: %s", err);
	return r;
}

int dispatch_check_start(const struct config *cfg, const struct check_key *key)
{
	if (daemon_cred_visible("store-key", cfg->store_key_file, "store.key-file") &&
	    check_store(cfg, key) < 0)
		return -EINVAL;
	if (cfg->device_app_key_source == APP_KEY_CLOUD_HSM) {
		char err[512];
		if (daemon_cred_visible("tpa-rsa-key", cfg->device_rsa_key_file,
					"device.rsa-key-file") &&
		    check_credential("tpa-rsa-key", cfg->device_rsa_key_file, false, err,
				     sizeof(err)) < 0) {
			log_errx("%s", err);
			return -EINVAL;
		}
	}
	/* The upstream client as start sets it up (no connection is made), if its secrets can
	 * be read here: the PSK and its identity, the CA file, the client certificate, the
	 * OAuth2 settings and secret, the API paths. */
	bool ok = true;
	if (upstream_psk(cfg))
		ok &= daemon_cred_visible("tpa-psk", cfg->upstream_psk_file, "upstream.psk-file");
	if (cfg->upstream_tls == UPSTREAM_TLS_CERT && cfg->upstream_client_cert)
		ok &= daemon_cred_visible("tpa-client-key", cfg->upstream_client_key_file,
					  "upstream.client-key-file");
	if (upstream_oauth2(cfg))
		ok &= daemon_cred_visible("oauth-secret", cfg->oauth2_secret_file,
					  "oauth2.secret-file");
	if (!ok)
		return 0;
	struct event_base *base = event_base_new();
	if (!base)
		return -ENOMEM;
	char err[512];
	struct tpa *t = tpa_new(base, cfg, err, sizeof(err));
	if (!t)
		log_errx("upstream: %s", err);
	tpa_free(t);
	event_base_free(base);
	return t ? 0 : -EINVAL;
}

void dispatch_status_line(const struct tpad *t, char *buf, size_t len)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	char up[384] = "upstream not set up";
	if (t->tpa)
		tpa_status_line(t->tpa, up, sizeof(up));
	uint64_t counts[STORE_N_STATES] = {0};
	struct store_stats ss = {0};
	if (t->store)
		store_stats(t->store, &ss);
	if (ss.down) {
		snprintf(buf, len, "%s; store %s down: %.*s; %u station clients", up,
			 store_backend_name(t->store), (int)utf8_prefix(ss.last_reason, 120),
			 ss.last_reason, st.connections[SOCK_STATION]);
		return;
	}
	if (t->store_counts_known)
		memcpy(counts, t->store_counts, sizeof(counts));
	char printers[160] = "";
	print_status_line(t->print, printers, sizeof(printers));
	snprintf(buf, len, "%s; %llu issued, %llu pending; %u station clients%s%s", up,
		 (unsigned long long)counts[STORE_ISSUED],
		 (unsigned long long)counts[STORE_PENDING], st.connections[SOCK_STATION],
		 printers[0] ? "; " : "", printers);
}

/* The counts of a copy, printed when it copied anything or ended well. */
static void copy_counts_print(const struct store_copy_counts *n, int r)
{
	if (r < 0 && !n->devices && !n->devices_there && !n->conflicts && !n->attempts &&
	    !n->labels && !n->audit)
		return;
	printf("copied %llu devices (%llu there already, %llu conflicting), %llu attempts, "
	       "%llu labels, %llu audit entries\n",
	       (unsigned long long)n->devices, (unsigned long long)n->devices_there,
	       (unsigned long long)n->conflicts, (unsigned long long)n->attempts,
	       (unsigned long long)n->labels, (unsigned long long)n->audit);
}

/* The store key for a one-shot store command; said and wiped on failure. */
static int store_key_load(const struct config *cfg, uint8_t key[STORE_KEY_LEN], size_t *len)
{
	char why[256];
	int r = cred_load_hex("store-key", cfg->store_key_file, key, STORE_KEY_LEN, len);
	if (r < 0 || *len != STORE_KEY_LEN) {
		log_errx("cannot load the store key: %s",
			 r < 0 ? cred_explain(r, "store-key", cfg->store_key_file, why, sizeof(why))
			       : "it must be 32 bytes (64 hexadecimal digits)");
		cred_wipe(key, STORE_KEY_LEN);
		return r < 0 ? r : -EINVAL;
	}
	return 0;
}

int dispatch_restore_store(const struct config *cfg, const char *file)
{
	if (strcmp(cfg->store_backend, "postgresql") == 0) {
		log_errx("--restore-store puts back a SQLite store (store.path); this one is "
			 "PostgreSQL: restore the database with pg_restore");
		return -EINVAL;
	}
	uint8_t key[STORE_KEY_LEN];
	size_t len = 0;
	int r = store_key_load(cfg, key, &len);
	if (r < 0)
		return r;
	char kept[PATH_MAX], err[1024];
	r = store_restore(cfg->store_path, file, key, len, kept, sizeof(kept), err, sizeof(err));
	cred_wipe(key, sizeof(key));
	if (r < 0) {
		log_errx("%s", err);
		return r;
	}
	printf("%s restored from %s\n", cfg->store_path, file);
	if (kept[0])
		printf("the store it replaced is kept as %s (with its -wal and -shm, if it had "
		       "them)\n",
		       kept);
	return 0;
}

int dispatch_copy_store(const struct config *cfg, const char *url)
{
	uint8_t key[STORE_KEY_LEN];
	size_t len = 0;
	char why[256];
	if (store_url_check(url, why, sizeof(why)) < 0) {
		/* The words are store.url's: here the URL is the command line's. */
		log_errx("--copy-store: %s", why);
		return -EINVAL;
	}
	int r = store_key_load(cfg, key, &len);
	if (r < 0)
		return r;
	char password[256] = "";
	r = cred_load_text("store-password", cfg->store_password_file, password, sizeof(password));
	if (r < 0 && (r != -ENOENT || cfg->store_password_file)) {
		log_errx("cannot load the store password: %s",
			 cred_explain(r, "store-password", cfg->store_password_file, why,
				      sizeof(why)));
		cred_wipe(key, sizeof(key));
		return r;
	}
	char host[65] = "";
	if (!cfg->store_instance && gethostname(host, sizeof(host) - 1) < 0)
		snprintf(host, sizeof(host), "tpad");
	struct store_copy_options o = {.sqlite_path = cfg->store_path,
				       .url = url,
				       .password = r == 0 ? password : NULL,
				       .instance = cfg->store_instance ? cfg->store_instance : host,
				       .key = key,
				       .key_len = len};
	struct store_copy_counts n = {0};
	char err[512] = "";
	r = store_copy_to_pg(&o, &n, err, sizeof(err));
	cred_wipe(key, sizeof(key));
	cred_wipe(password, sizeof(password));
	copy_counts_print(&n, r);
	if (r == -ENOENT && strcmp(cfg->store_backend, "postgresql") == 0) {
		log_errx("nothing to copy: %s (store.backend is already postgresql in this "
			 "configuration: --copy-store copies the SQLite store at store.path; give "
			 "--config a configuration that names it)",
			 err);
		return r;
	}
	if (r < 0) {
		log_errx("copy of %s stopped: %s (run it again to resume)", cfg->store_path, err);
		return r;
	}
	printf("verified: %llu devices, %llu attempts, %llu labels, %llu audit entries of %s are "
	       "in the database\n",
	       (unsigned long long)n.verified_devices, (unsigned long long)n.verified_attempts,
	       (unsigned long long)n.verified_labels, (unsigned long long)n.verified_audit,
	       cfg->store_path);
	if (n.conflicts) {
		log_errx("%llu devices are held by the database with another record (another "
			 "line?): not copied; see them with tpactl device on both sides",
			 (unsigned long long)n.conflicts);
		return -EEXIST;
	}
	return 0;
}
