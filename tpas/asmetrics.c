/* asmetrics: tpas's counters and gauges as Prometheus text or OpenMetrics (metrics.listen). */
#include "asmetrics.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "asapi.h"
#include "clock.h"
#include "downlink.h"
#include "journal.h"
#include "server.h"
#include "tpad-build.h"
#include "tpas.h"
#include "tunnel.h"
#include "webhook.h"

/* Requests on the tunnel by outcome: every request has exactly one. */
static void render_tunnel(struct metrics_out *f, const struct tpas *t)
{
	struct tunnel_stats s;
	tpas_tunnel_stats(t, &s);
	char labels[48];
	metrics_family(f, "tpas_tunnel_requests", "counter",
		       "Requests on the LRC-AS tunnel, by outcome (accepted and duplicate: 200).");
	for (size_t i = 0; i < TUNNEL_OUTCOMES; i++) {
		const struct tunnel_outcome *o = &tunnel_outcomes[i];
		snprintf(labels, sizeof(labels), "outcome=\"%s\"", o->metric_label);
		metrics_sample(f, "tpas_tunnel_requests_total", labels,
			       tunnel_outcome_count(&s, o));
	}
	metrics_counter(f, "tpas_tunnel_tls_failed",
			"TLS handshakes on the tunnel that failed (no HTTP answer possible).",
			s.tls_failed);
	metrics_gauge(f, "tpas_tunnel_connections", "Tunnel connections open now.", s.connections);
	metrics_counter(f, "tpas_tunnel_connection_limit_hit",
			"Times tunnel.max-connections were open and accepting paused.",
			s.connection_limit_hit);
}

/* The journal: its seqs and the writer thread's group commits. */
static void render_journal(struct metrics_out *f, const struct tpas *t)
{
	struct journal_stats s;
	journal_get_counters(t->journal, &s);
	metrics_gauge(f, "tpas_journal_last_seq", "The seq of the newest uplink journaled.",
		      (unsigned long long)s.last_seq);
	int64_t first = journal_first_seq(t->journal);
	if (first >= 0) /* left out of a scrape when it cannot be read */
		metrics_gauge(f, "tpas_journal_first_seq",
			      "The seq of the oldest uplink kept (store.retention-days), 0 when "
			      "none.",
			      (unsigned long long)first);
	metrics_counter(f, "tpas_journal_commits",
			"Transactions committed to the journal (each one fsync).", s.commits);
	metrics_counter(f, "tpas_journal_batches",
			"Of those, the writer thread's group commits of uplinks.", s.batches);
	metrics_counter(f, "tpas_journal_batched_uplinks",
			"Uplinks (replays included) that went through a group commit.", s.batched);
	metrics_gauge(f, "tpas_journal_largest_batch",
		      "The most uplinks one group commit held since start.", s.largest_batch);
	metrics_counter(f, "tpas_journal_failed_commits",
			"Writes to the journal that failed (disk full, I/O error).",
			s.failed_commits);
	metrics_gauge(f, "tpas_journal_failing",
		      "1 from a failed write until the next commit, else 0.",
		      s.failing_since_ms != 0);
}

/* An integer member of a status object, 0 when absent. */
static unsigned long long member(const json_t *o, const char *name)
{
	json_int_t v = json_integer_value(json_object_get(o, name));
	return v > 0 ? (unsigned long long)v : 0;
}

/* Downlinks by outcome and the LRC link's sessions. */
static void render_downlinks(struct metrics_out *f, const struct tpas *t)
{
	struct downlink_stats d;
	downlink_get_stats(t->downlink, &d);
	metrics_family(f, "tpas_downlinks", "counter", "SendDownlink calls, by how they ended.");
	metrics_sample(f, "tpas_downlinks_total", "outcome=\"sent\"", d.sent);
	metrics_sample(f, "tpas_downlinks_total", "outcome=\"lrc_refused\"", d.lrc_refused);
	metrics_sample(f, "tpas_downlinks_total", "outcome=\"failed\"", d.failed);
	metrics_sample(f, "tpas_downlinks_total", "outcome=\"refused\"", d.refused);

	static const char *const states[] = {"connecting", "handshaking", "ready", "busy",
					     "backoff"};
	unsigned long long by_state[sizeof(states) / sizeof(states[0])] = {0};
	unsigned long long requests = 0, reconnects = 0;
	json_t *link = downlink_status_json(t->downlink);
	json_t *sess;
	size_t i;
	json_array_foreach(json_object_get(link, "sessions"), i, sess)
	{
		const char *st = json_string_value(json_object_get(sess, "state"));
		for (size_t k = 0; st && k < sizeof(states) / sizeof(states[0]); k++)
			if (strcmp(st, states[k]) == 0)
				by_state[k]++;
		requests += member(sess, "requests");
		reconnects += member(sess, "reconnects");
	}
	if (json_is_string(json_object_get(link, "url"))) {
		const char *state = json_string_value(json_object_get(link, "state"));
		const char *breaker = json_string_value(json_object_get(link, "breaker"));
		metrics_gauge(f, "tpas_lrc_up",
			      "1 while a session to the LRC is ready and the breaker is not open.",
			      state && strcmp(state, "down") != 0);
		metrics_family(
		    f, "tpas_lrc_breaker_open", "gauge",
		    "1 while the LRC link's breaker fails downlinks fast (0.5 half-open), else 0.");
		fprintf(f->f, "tpas_lrc_breaker_open %s\n",
			!breaker			    ? "0"
			: strcmp(breaker, "open") == 0	    ? "1"
			: strcmp(breaker, "half-open") == 0 ? "0.5"
							    : "0");
	}
	json_decref(link);
	char labels[40];
	metrics_family(f, "tpas_lrc_sessions", "gauge",
		       "Sessions of the pool to the LRC (lrc.sessions), by state.");
	for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", states[k]);
		metrics_sample(f, "tpas_lrc_sessions", labels, by_state[k]);
	}
	metrics_counter(f, "tpas_lrc_requests", "Answers received from the LRC (a request without one is a failed downlink).", requests);
	metrics_counter(f, "tpas_lrc_reconnects",
			"Connections to the LRC opened again after one was lost.", reconnects);
}

/* Applications: streams, and the webhook when there is one. */
static void render_apps(struct metrics_out *f, const struct tpas *t)
{
	metrics_gauge(f, "tpas_subscribers", "io.tpad.AS.Uplinks streams open.",
		      asapi_subscribers(t->api));
	if (!t->webhook)
		return;
	json_t *w = webhook_status_json(t->webhook);
	metrics_counter(f, "tpas_webhook_delivered", "Uplinks the webhook accepted.",
			member(w, "delivered"));
	metrics_counter(f, "tpas_webhook_failures", "Webhook POSTs that failed (each retried).",
			member(w, "failures"));
	metrics_gauge(f, "tpas_webhook_cursor", "The seq of the last uplink the webhook accepted.",
		      member(w, "cursor"));
	metrics_gauge(
	    f, "tpas_webhook_lag_seconds",
	    "Seconds since the oldest uplink the webhook has not accepted was received, 0 "
	    "when it has them all.",
	    webhook_lag_seconds(t->webhook, clock_wall_ms()));
	json_decref(w);
}

char *asmetrics_render(void *arg, enum metrics_format fmt)
{
	const struct tpas *t = arg;
	static const char *const sockets[SOCK_KINDS] = {"apps", "admin"};
	struct metrics_out o;
	if (metrics_begin(&o, fmt) < 0)
		return NULL;
	metrics_build_info(&o, "tpas", TPAD_VERSION);
	metrics_process(&o);
	struct server_stats ss;
	server_get_stats(t->srv, &ss);
	metrics_server(&o, "tpas", &ss, sockets);
	render_tunnel(&o, t);
	render_journal(&o, t);
	render_downlinks(&o, t);
	render_apps(&o, t);
	return metrics_end(&o);
}
