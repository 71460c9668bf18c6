/* metrics: the daemon's counters and gauges as Prometheus text or OpenMetrics. */
#include "metrics.h"

#include "keypool.h"
#include "clock.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <mbedtls/version.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "activation.h"
#include "print.h"
#include "server.h"
#include "store.h"
#include "tpa.h"
#include "tpad-build.h"
#include "tpad.h"

/* Server side: connections, calls and the limits clients ran into. */
static void render_server(struct metrics_out *f, const struct tpad *t)
{
	static const char *const sockets[SOCK_KINDS] = {"station", "admin"};
	struct server_stats st;
	server_get_stats(t->srv, &st);
	metrics_server(f, "tpad", &st, sockets);
}

/* Activations by outcome and by where the token came from. */
static void render_activations(struct metrics_out *f, const struct tpad *t)
{
	if (!t->act)
		return;
	struct activation_stats as;
	activation_get_stats(t->act, &as);
	char labels[64];
	metrics_family(f, "tpad_activations", "counter",
		       "Activations, imports and settlements finished, by outcome.");
	for (int i = 0; i <= ACT_RETIRED; i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"",
			 activation_outcome_name((enum act_outcome)i));
		metrics_sample(f, "tpad_activations_total", labels, as.outcomes[i]);
	}
	metrics_family(f, "tpad_tokens_handed_out", "counter",
		       "Tokens handed out, by source: live from the cloud, stored (Activate or "
		       "Import from the store), lookup (Lookup); the audit trail's live and "
		       "stored entries.");
	metrics_sample(f, "tpad_tokens_handed_out_total", "source=\"live\"", as.live);
	metrics_sample(f, "tpad_tokens_handed_out_total", "source=\"stored\"", as.stored);
	metrics_sample(f, "tpad_tokens_handed_out_total", "source=\"lookup\"", as.looked_up);
	metrics_counter(f, "tpad_outcomes_settled_by_query",
			"Unknown import outcomes settled with the read-only query.",
			as.settled_by_query);
	metrics_counter(f, "tpad_settle_not_yet_trusted",
			"Query answers \"not found\" too early to trust (upstream.settle-after).",
			as.not_yet_trusted);
	metrics_counter(f, "tpad_devices_foreign",
			"Devices found held by the cloud from an import that was not ours.",
			as.foreign);
	metrics_counter(f, "tpad_devices_adopted", "FOREIGN devices an admin adopted.", as.adopted);
	metrics_counter(f, "tpad_settle_runs", "Background settlements of PENDING devices started.",
			as.settle_runs);
	metrics_gauge(f, "tpad_activations_in_flight", "Activations waiting on the store or cloud.",
		      as.in_flight);
}

/* Upstream: requests by outcome, latency histogram, sessions, queue and breaker. */
static void render_upstream(struct metrics_out *f, struct tpad *t)
{
	if (!t->tpa)
		return;
	struct tpa_counters c;
	tpa_get_counters(t->tpa, &c);
	char labels[64];
	metrics_family(f, "tpad_upstream_requests", "counter",
		       "Requests to ThingPark Activation, by kind.");
	metrics_sample(f, "tpad_upstream_requests_total", "kind=\"import\"", c.imports);
	metrics_sample(f, "tpad_upstream_requests_total", "kind=\"query\"", c.queries);
	metrics_sample(f, "tpad_upstream_requests_total", "kind=\"token\"", c.token_requests);
	metrics_family(f, "tpad_upstream_outcomes", "counter",
		       "Answers from ThingPark Activation, by outcome.");
	for (int i = 0; i < TPA_OUTCOME_MAX; i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"",
			 tpa_outcome_name((enum tpa_outcome)i));
		metrics_sample(f, "tpad_upstream_outcomes_total", labels, c.outcomes[i]);
	}
	metrics_family(f, "tpad_upstream_request_duration_seconds", "histogram",
		       "Time from sending a request to its complete answer.");
	for (int i = 0; i < TPA_LATENCY_BUCKETS; i++) {
		if (c.bucket_le_ms[i] == UINT32_MAX)
			snprintf(labels, sizeof(labels), "le=\"+Inf\"");
		else
			snprintf(labels, sizeof(labels), "le=\"%g\"", c.bucket_le_ms[i] / 1000.0);
		metrics_sample(f, "tpad_upstream_request_duration_seconds_bucket", labels,
			       c.bucket_count[i]);
	}
	fprintf(f->f, "tpad_upstream_request_duration_seconds_sum %.6f\n",
		(double)c.latency_sum_us / 1e6);
	metrics_sample(f, "tpad_upstream_request_duration_seconds_count", NULL, c.latency_count);

	/* Sessions by state, from the status object the pool already builds. */
	static const char *const states[] = {"connecting", "handshaking", "ready", "busy",
					     "backoff"};
	unsigned n[5] = {0};
	json_t *st = tpa_status_json(t->tpa);
	const char *pool_st = json_string_value(json_object_get(st, "state"));
	metrics_family(
	    f, "tpad_upstream_up", "gauge",
	    "1 while at least one session to the cloud is ready, the breaker is not open and "
	    "(with OAuth2) the client is not refused.");
	metrics_sample(f, "tpad_upstream_up", NULL, pool_st && strcmp(pool_st, "down") != 0);
	size_t i;
	json_t *s;
	json_array_foreach(json_object_get(st, "sessions"), i, s)
	{
		const char *name = json_string_value(json_object_get(s, "state"));
		for (int k = 0; k < 5; k++)
			if (name && strcmp(name, states[k]) == 0)
				n[k]++;
	}
	json_decref(st);
	metrics_family(f, "tpad_upstream_sessions", "gauge",
		       "TLS-PSK sessions to the cloud, by state.");
	for (int k = 0; k < 5; k++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", states[k]);
		metrics_sample(f, "tpad_upstream_sessions", labels, n[k]);
	}
	metrics_gauge(f, "tpad_upstream_queue_depth", "Requests waiting for a free session.",
		      c.pool.queued);
	metrics_family(f, "tpad_upstream_breaker_open", "gauge",
		       "1 while the circuit breaker fails requests fast (0.5 half-open), else 0.");
	fprintf(f->f, "tpad_upstream_breaker_open %s\n",
		c.pool.breaker == POOL_BREAKER_OPEN	   ? "1"
		: c.pool.breaker == POOL_BREAKER_HALF_OPEN ? "0.5"
							   : "0");
	metrics_family(f, "tpad_upstream_connections", "counter",
		       "TCP connections, TLS handshakes (of which resumed) and failures.");
	metrics_sample(f, "tpad_upstream_connections_total", "event=\"connect\"", c.pool.connects);
	metrics_sample(f, "tpad_upstream_connections_total", "event=\"handshake\"",
		       c.pool.handshakes);
	metrics_sample(f, "tpad_upstream_connections_total", "event=\"resumed\"", c.pool.resumed);
	metrics_sample(f, "tpad_upstream_connections_total", "event=\"failure\"",
		       c.pool.connect_failures);
	metrics_counter(f, "tpad_upstream_breaker_opens", "Times the breaker opened.",
			c.pool.breaker_opens);
	metrics_family(
	    f, "tpad_upstream_certificate_failures", "counter",
	    "TLS handshakes refused for a certificate (expired, wrong host, unknown CA, pin).");
	metrics_sample(f, "tpad_upstream_certificate_failures_total", NULL, c.pool.cert_failures);
	metrics_counter(f, "tpad_upstream_deletes", "Devices deleted in the cloud (Retire).",
			c.deletes);
}

/* The cloud-HSM AppKey pool, when it is in use. */
static void render_keypool(struct metrics_out *f, const struct tpad *t)
{
	if (!t->keypool)
		return;
	struct keypool_stats k;
	keypool_get_stats(t->keypool, &k);
	metrics_gauge(f, "tpad_app_key_pool_available", "Cloud-HSM AppKeys ready to hand out.",
		      k.available);
	metrics_gauge(f, "tpad_app_key_pool_low_water",
		      "device.app-key-pool: a refill starts below this.", k.low_water);
	metrics_family(f, "tpad_app_key_pool_keys", "counter",
		       "Cloud-HSM AppKeys fetched and handed out.");
	metrics_sample(f, "tpad_app_key_pool_keys_total", "event=\"fetched\"", k.fetched);
	metrics_sample(f, "tpad_app_key_pool_keys_total", "event=\"handed_out\"", k.handed_out);
	metrics_family(
	    f, "tpad_app_key_pool_empty", "counter",
	    "Activations that found the pool empty (answered at once, not kept waiting).");
	metrics_sample(f, "tpad_app_key_pool_empty_total", NULL, k.empty);
	metrics_counter(f, "tpad_app_key_pool_failures",
			"appKeyGens calls that failed and VendorKeys that could not be decrypted.",
			k.failures);
}

/* Store, per backend: up, connections, claims, commit latency (PostgreSQL). */
static void render_store_backend(struct metrics_out *f, const struct tpad *t,
				 const struct store_stats *s)
{
	char labels[96];
	bool pg = strcmp(store_backend_name(t->store), "postgresql") == 0;
	snprintf(labels, sizeof(labels), "backend=\"%s\"", store_backend_name(t->store));
	metrics_family(f, "tpad_store_up", "gauge", "1 if the store can be written now.");
	metrics_sample(f, "tpad_store_up", labels, !s->down);
	if (!pg)
		return;
	metrics_family(f, "tpad_store_connections", "gauge", "Connections to the database up now.");
	metrics_sample(f, "tpad_store_connections", labels, s->connections);
	metrics_family(f, "tpad_store_lease_takeovers", "counter",
		       "Devices taken over from another tpad's expired claim.");
	metrics_sample(f, "tpad_store_lease_takeovers_total", labels, s->lease_takeovers);
	metrics_family(f, "tpad_store_lease_renewals", "counter",
		       "Claims extended by store.lease while their import ran.");
	metrics_sample(f, "tpad_store_lease_renewals_total", labels, s->lease_renewals);
	metrics_family(f, "tpad_store_claims_refused", "counter",
		       "Writes refused because another tpad held the device's claim.");
	metrics_sample(f, "tpad_store_claims_refused_total", labels, s->claims_refused);
	metrics_family(f, "tpad_store_reconnects", "counter",
		       "Connections to the database made again after a loss.");
	metrics_sample(f, "tpad_store_reconnects_total", labels, s->reconnects);
	metrics_family(f, "tpad_store_commit_duration_seconds", "histogram",
		       "Time from sending a transaction to its commit.");
	static const char *const le[8] = {"0.001", "0.002", "0.005", "0.01",
					  "0.02",  "0.05",  "0.1",   "+Inf"};
	unsigned long long cum = 0;
	for (int i = 0; i < 8; i++) {
		cum += s->latency_buckets[i];
		char l[128];
		snprintf(l, sizeof(l), "%s,le=\"%s\"", labels, le[i]);
		metrics_sample(f, "tpad_store_commit_duration_seconds_bucket", l, cum);
	}
	fprintf(f->f, "tpad_store_commit_duration_seconds_sum{%s} %.6f\n", labels,
		(double)s->latency_sum_us / 1e6);
	metrics_sample(f, "tpad_store_commit_duration_seconds_count", labels, cum);
}

/* Store: rows by state, commits and failures. */
static void render_store(struct metrics_out *f, const struct tpad *t)
{
	if (!t->store)
		return;
	/* As counted in the background every second: a scrape never waits for the store. */
	const uint64_t *counts = t->store_counts;
	char labels[64];
	metrics_family(f, "tpad_store_devices", "gauge", "Device rows in the store, by state.");
	for (int i = 0; t->store_counts_known && i < STORE_N_STATES; i++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"",
			 store_state_name((enum store_state)i));
		metrics_sample(f, "tpad_store_devices", labels, counts[i]);
	}
	struct store_stats s;
	store_stats(t->store, &s);
	metrics_counter(f, "tpad_store_commits", "Store transactions committed (fsyncs).",
			s.commits);
	metrics_counter(f, "tpad_store_writes", "Writes in committed transactions.", s.ops);
	metrics_counter(f, "tpad_store_failed_commits",
			"Transactions rolled back (disk full, I/O error).", s.batch_failures);
	metrics_gauge(f, "tpad_store_failing",
		      "1 from a rolled-back transaction until the next commit, else 0.",
		      store_failing(t->store));
	metrics_gauge(f, "tpad_store_queue_depth", "Writes waiting for the store's writer.",
		      s.queued);
	render_store_backend(f, t, &s);
}

/*
 * Label printers, as the print module writes them (Prometheus text). For OpenMetrics
 * the counter families it declares with "_total" are declared without it.
 */
static void render_printers(struct metrics_out *o, const struct tpad *t)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	if (!m)
		return;
	print_metrics(t->print, m);
	if (fclose(m) != 0) {
		free(buf);
		return;
	}
	for (char *line = buf, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		size_t n = strlen(line);
		if (o->fmt == METRICS_OPENMETRICS && strncmp(line, "# TYPE ", 7) == 0 && n > 15 &&
		    strcmp(line + n - 8, " counter") == 0 && n - 8 > 13 &&
		    strncmp(line + n - 14, "_total", 6) == 0) {
			fprintf(o->f, "# TYPE %.*s counter\n", (int)(n - 7 - 14), line + 7);
			continue;
		}
		if (o->fmt == METRICS_OPENMETRICS && strncmp(line, "# HELP ", 7) == 0) {
			const char *sp = strchr(line + 7, ' ');
			size_t nl = sp ? (size_t)(sp - line - 7) : 0;
			if (nl > 6 && strncmp(line + 7 + nl - 6, "_total", 6) == 0) {
				fprintf(o->f, "# HELP %.*s%s\n", (int)(nl - 6), line + 7, sp);
				continue;
			}
		}
		fprintf(o->f, "%s\n", line);
	}
	free(buf);
}

char *metrics_render(const struct tpad *t, enum metrics_format fmt)
{
	struct metrics_out o;
	if (metrics_begin(&o, fmt) < 0)
		return NULL;
	metrics_build_info(&o, "tpad", TPAD_VERSION);
	metrics_process(&o);
	render_server(&o, t);
	render_activations(&o, t);
	render_upstream(&o, (struct tpad *)t);
	render_store(&o, t);
	render_keypool(&o, t);
	render_printers(&o, t);
	return metrics_end(&o);
}
