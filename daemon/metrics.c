/* metrics: the daemon's counters and gauges as text for Prometheus and node_exporter. */
#include "metrics.h"

#include "keypool.h"
#include "clock.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "print.h"
#include "server.h"
#include "store.h"
#include "tpa.h"
#include "tpad-build.h"
#include "tpad.h"

/* Start a family: its help text and type. */
static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(FILE *f, const char *name, const char *labels, unsigned long long v)
{
	if (labels && *labels)
		fprintf(f, "%s{%s} %llu\n", name, labels, v);
	else
		fprintf(f, "%s %llu\n", name, v);
}

/* Server side: connections, calls and the limits clients ran into. */
static void render_server(FILE *f, const struct tpad *t)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	family(f, "tpad_connections", "gauge", "Client connections open now, by socket.");
	sample(f, "tpad_connections", "socket=\"station\"", st.connections[SOCK_STATION]);
	sample(f, "tpad_connections", "socket=\"admin\"", st.connections[SOCK_ADMIN]);
	family(f, "tpad_connections_accepted_total", "counter",
	       "Client connections accepted, by socket.");
	sample(f, "tpad_connections_accepted_total", "socket=\"station\"",
	       st.accepted[SOCK_STATION]);
	sample(f, "tpad_connections_accepted_total", "socket=\"admin\"", st.accepted[SOCK_ADMIN]);
	family(f, "tpad_calls_total", "counter", "Calls received on both sockets.");
	sample(f, "tpad_calls_total", NULL, st.calls);
	family(f, "tpad_calls_in_flight", "gauge", "Calls not answered yet.");
	sample(f, "tpad_calls_in_flight", NULL, st.calls_in_flight);
	family(f, "tpad_limits_hit_total", "counter", "Times a client ran into a limit.");
	sample(f, "tpad_limits_hit_total", "limit=\"max_clients\"", st.hit.max_clients);
	sample(f, "tpad_limits_hit_total", "limit=\"max_clients_per_uid\"",
	       st.hit.max_clients_per_uid);
	sample(f, "tpad_limits_hit_total", "limit=\"max_clients_per_process\"",
	       st.hit.max_clients_per_process);
	sample(f, "tpad_limits_hit_total", "limit=\"message_timeout\"", st.hit.message_timeout);
	sample(f, "tpad_limits_hit_total", "limit=\"max_output\"", st.hit.max_output);
	sample(f, "tpad_limits_hit_total", "limit=\"max_output_total\"", st.hit.max_output_total);
	sample(f, "tpad_limits_hit_total", "limit=\"max_message\"", st.hit.max_message);
	sample(f, "tpad_limits_hit_total", "limit=\"idle_timeout\"", st.hit.idle_timeout);
	sample(f, "tpad_limits_hit_total", "limit=\"max_pending_calls\"", st.hit.max_pending_calls);
	sample(f, "tpad_limits_hit_total", "limit=\"slow_reader\"", st.hit.slow_reader);
}

/* Activations by outcome and by where the token came from. */
static void render_activations(FILE *f, const struct tpad *t)
{
	if (!t->act)
		return;
	struct activation_stats as;
	activation_get_stats(t->act, &as);
	char labels[64];
	family(f, "tpad_activations_total", "counter",
	       "Activations, imports and settlements finished, by outcome.");
	for (int i = 0; i <= ACT_RETIRED; i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"",
			 activation_outcome_name((enum act_outcome)i));
		sample(f, "tpad_activations_total", labels, as.outcomes[i]);
	}
	family(f, "tpad_tokens_handed_out_total", "counter",
	       "Successful answers, by source: live from the cloud or stored.");
	sample(f, "tpad_tokens_handed_out_total", "source=\"live\"", as.live);
	sample(f, "tpad_tokens_handed_out_total", "source=\"stored\"", as.stored);
	family(f, "tpad_outcomes_settled_by_query_total", "counter",
	       "Unknown import outcomes settled with the read-only query.");
	sample(f, "tpad_outcomes_settled_by_query_total", NULL, as.settled_by_query);
	family(f, "tpad_settle_not_yet_trusted_total", "counter",
	       "Query answers \"not found\" too early to trust (upstream.settle-after).");
	sample(f, "tpad_settle_not_yet_trusted_total", NULL, as.not_yet_trusted);
	family(f, "tpad_devices_foreign_total", "counter",
	       "Devices found held by the cloud from an import that was not ours.");
	sample(f, "tpad_devices_foreign_total", NULL, as.foreign);
	family(f, "tpad_devices_adopted_total", "counter", "FOREIGN devices an admin adopted.");
	sample(f, "tpad_devices_adopted_total", NULL, as.adopted);
	family(f, "tpad_settle_runs_total", "counter",
	       "Background settlements of PENDING devices started.");
	sample(f, "tpad_settle_runs_total", NULL, as.settle_runs);
	family(f, "tpad_activations_in_flight", "gauge",
	       "Activations waiting on the store or cloud.");
	sample(f, "tpad_activations_in_flight", NULL, as.in_flight);
}

/* Upstream: requests by outcome, latency histogram, sessions, queue and breaker. */
static void render_upstream(FILE *f, struct tpad *t)
{
	if (!t->tpa)
		return;
	struct tpa_counters c;
	tpa_get_counters(t->tpa, &c);
	char labels[64];
	family(f, "tpad_upstream_requests_total", "counter",
	       "Requests to ThingPark Activation, by kind.");
	sample(f, "tpad_upstream_requests_total", "kind=\"import\"", c.imports);
	sample(f, "tpad_upstream_requests_total", "kind=\"query\"", c.queries);
	sample(f, "tpad_upstream_requests_total", "kind=\"token\"", c.token_requests);
	family(f, "tpad_upstream_outcomes_total", "counter",
	       "Answers from ThingPark Activation, by outcome.");
	for (int i = 0; i < TPA_OUTCOME_MAX; i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"",
			 tpa_outcome_name((enum tpa_outcome)i));
		sample(f, "tpad_upstream_outcomes_total", labels, c.outcomes[i]);
	}
	family(f, "tpad_upstream_request_duration_seconds", "histogram",
	       "Time from sending a request to its complete answer.");
	for (int i = 0; i < TPA_LATENCY_BUCKETS; i++) {
		if (c.bucket_le_ms[i] == UINT32_MAX)
			snprintf(labels, sizeof(labels), "le=\"+Inf\"");
		else
			snprintf(labels, sizeof(labels), "le=\"%g\"", c.bucket_le_ms[i] / 1000.0);
		sample(f, "tpad_upstream_request_duration_seconds_bucket", labels,
		       c.bucket_count[i]);
	}
	fprintf(f, "tpad_upstream_request_duration_seconds_sum %.3f\n",
		(double)c.latency_sum_ms / 1000.0);
	sample(f, "tpad_upstream_request_duration_seconds_count", NULL, c.latency_count);

	/* Sessions by state, from the status object the pool already builds. */
	static const char *const states[] = {"connecting", "handshaking", "ready", "busy",
					     "backoff"};
	unsigned n[5] = {0};
	json_t *st = tpa_status_json(t->tpa);
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
	family(f, "tpad_upstream_sessions", "gauge", "TLS-PSK sessions to the cloud, by state.");
	for (int k = 0; k < 5; k++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", states[k]);
		sample(f, "tpad_upstream_sessions", labels, n[k]);
	}
	family(f, "tpad_upstream_queue_depth", "gauge", "Requests waiting for a free session.");
	sample(f, "tpad_upstream_queue_depth", NULL, c.pool.queued);
	family(f, "tpad_upstream_breaker_open", "gauge",
	       "1 while the circuit breaker fails requests fast (0.5 half-open), else 0.");
	fprintf(f, "tpad_upstream_breaker_open %s\n",
		c.pool.breaker == POOL_BREAKER_OPEN	   ? "1"
		: c.pool.breaker == POOL_BREAKER_HALF_OPEN ? "0.5"
							   : "0");
	family(f, "tpad_upstream_connections_total", "counter",
	       "TCP connections, TLS handshakes (of which resumed) and failures.");
	sample(f, "tpad_upstream_connections_total", "event=\"connect\"", c.pool.connects);
	sample(f, "tpad_upstream_connections_total", "event=\"handshake\"", c.pool.handshakes);
	sample(f, "tpad_upstream_connections_total", "event=\"resumed\"", c.pool.resumed);
	sample(f, "tpad_upstream_connections_total", "event=\"failure\"", c.pool.connect_failures);
	family(f, "tpad_upstream_breaker_opens_total", "counter", "Times the breaker opened.");
	sample(f, "tpad_upstream_breaker_opens_total", NULL, c.pool.breaker_opens);
	family(f, "tpad_upstream_certificate_failures_total", "counter",
	       "TLS handshakes refused for a certificate (expired, wrong host, unknown CA, pin).");
	sample(f, "tpad_upstream_certificate_failures_total", NULL, c.pool.cert_failures);
	family(f, "tpad_upstream_deletes_total", "counter", "Devices deleted in the cloud (Retire).");
	sample(f, "tpad_upstream_deletes_total", NULL, c.deletes);
}

/* The cloud-HSM AppKey pool, when it is in use. */
static void render_keypool(FILE *f, const struct tpad *t)
{
	if (!t->keypool)
		return;
	struct keypool_stats k;
	keypool_get_stats(t->keypool, &k);
	family(f, "tpad_app_key_pool_available", "gauge", "Cloud-HSM AppKeys ready to hand out.");
	sample(f, "tpad_app_key_pool_available", NULL, k.available);
	family(f, "tpad_app_key_pool_low_water", "gauge",
	       "device.app-key-pool: a refill starts below this.");
	sample(f, "tpad_app_key_pool_low_water", NULL, k.low_water);
	family(f, "tpad_app_key_pool_keys_total", "counter",
	       "Cloud-HSM AppKeys fetched and handed out.");
	sample(f, "tpad_app_key_pool_keys_total", "event=\"fetched\"", k.fetched);
	sample(f, "tpad_app_key_pool_keys_total", "event=\"handed_out\"", k.handed_out);
	family(f, "tpad_app_key_pool_empty_total", "counter",
	       "Activations that found the pool empty (answered at once, not kept waiting).");
	sample(f, "tpad_app_key_pool_empty_total", NULL, k.empty);
	family(f, "tpad_app_key_pool_failures_total", "counter",
	       "appKeyGens calls that failed and VendorKeys that could not be decrypted.");
	sample(f, "tpad_app_key_pool_failures_total", NULL, k.failures);
}

/* Store, per backend: up, connections, claims, commit latency (PostgreSQL). */
static void render_store_backend(FILE *f, const struct tpad *t, const struct store_stats *s)
{
	char labels[96];
	bool pg = strcmp(store_backend_name(t->store), "postgresql") == 0;
	snprintf(labels, sizeof(labels), "backend=\"%s\"", store_backend_name(t->store));
	family(f, "tpad_store_up", "gauge", "1 if the store can be written now.");
	sample(f, "tpad_store_up", labels, !s->down);
	if (!pg)
		return;
	family(f, "tpad_store_connections", "gauge", "Connections to the database up now.");
	sample(f, "tpad_store_connections", labels, s->connections);
	family(f, "tpad_store_lease_takeovers_total", "counter",
	       "Devices taken over from another tpad's expired claim.");
	sample(f, "tpad_store_lease_takeovers_total", labels, s->lease_takeovers);
	family(f, "tpad_store_claims_refused_total", "counter",
	       "Writes refused because another tpad held the device's claim.");
	sample(f, "tpad_store_claims_refused_total", labels, s->claims_refused);
	family(f, "tpad_store_reconnects_total", "counter",
	       "Connections to the database made again after a loss.");
	sample(f, "tpad_store_reconnects_total", labels, s->reconnects);
	family(f, "tpad_store_commit_duration_seconds", "histogram",
	       "Time from sending a transaction to its commit.");
	static const char *const le[8] = {"0.001", "0.002", "0.005", "0.01",
					  "0.02",  "0.05",  "0.1",   "+Inf"};
	unsigned long long cum = 0;
	for (int i = 0; i < 8; i++) {
		cum += s->latency_buckets[i];
		char l[128];
		snprintf(l, sizeof(l), "%s,le=\"%s\"", labels, le[i]);
		sample(f, "tpad_store_commit_duration_seconds_bucket", l, cum);
	}
	fprintf(f, "tpad_store_commit_duration_seconds_sum{%s} %.6f\n", labels,
		(double)s->latency_sum_us / 1e6);
	sample(f, "tpad_store_commit_duration_seconds_count", labels, cum);
}

/* Store: rows by state, commits and failures. */
static void render_store(FILE *f, const struct tpad *t)
{
	if (!t->store)
		return;
	uint64_t counts[STORE_N_STATES] = {0};
	store_count(t->store, counts);
	char labels[64];
	family(f, "tpad_store_devices", "gauge", "Device rows in the store, by state.");
	for (int i = 0; i < STORE_N_STATES; i++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"",
			 store_state_name((enum store_state)i));
		sample(f, "tpad_store_devices", labels, counts[i]);
	}
	struct store_stats s;
	store_stats(t->store, &s);
	family(f, "tpad_store_commits_total", "counter", "Store transactions committed (fsyncs).");
	sample(f, "tpad_store_commits_total", NULL, s.commits);
	family(f, "tpad_store_writes_total", "counter", "Writes in committed transactions.");
	sample(f, "tpad_store_writes_total", NULL, s.ops);
	family(f, "tpad_store_failed_commits_total", "counter",
	       "Transactions rolled back (disk full, I/O error).");
	sample(f, "tpad_store_failed_commits_total", NULL, s.batch_failures);
	family(f, "tpad_store_queue_depth", "gauge", "Writes waiting for the store's writer.");
	sample(f, "tpad_store_queue_depth", NULL, s.queued);
	render_store_backend(f, t, &s);
}

char *metrics_render(const struct tpad *t)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	family(f, "tpad_build_info", "gauge", "Always 1; the version is a label.");
	fprintf(f, "tpad_build_info{version=\"%s\"} 1\n", TPAD_VERSION);
	family(f, "tpad_uptime_seconds", "gauge", "Seconds since tpad started.");
	sample(f, "tpad_uptime_seconds", NULL, (clock_now_us() - t->started_us) / 1000000u);
	render_server(f, t);
	render_activations(f, t);
	render_upstream(f, (struct tpad *)t);
	render_store(f, t);
	render_keypool(f, t);
	print_metrics(t->print, f);
	fputs("# EOF\n", f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}
