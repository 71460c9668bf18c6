/* asmetrics: tpas's counters and gauges as Prometheus text or OpenMetrics (metrics.listen). */
#include "asmetrics.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "asapi.h"
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
	const struct {
		const char *outcome;
		uint64_t v;
	} by[] = {
	    {"accepted", s.accepted},
	    {"duplicate", s.duplicates},
	    {"bad_request", s.bad_request},
	    {"bad_token", s.bad_token},
	    {"stale_time", s.stale_time},
	    {"wrong_key", s.wrong_key},
	    {"unknown_device", s.unknown_device},
	    {"not_found", s.not_found},
	    {"bad_method", s.bad_method},
	    {"too_big", s.too_big},
	    {"timed_out", s.timed_out},
	    {"no_astk", s.no_astk},
	    {"store_failed", s.store_failed},
	};
	char labels[48];
	metrics_family(f, "tpas_tunnel_requests", "counter",
		       "Requests on the LRC-AS tunnel, by outcome (accepted and duplicate: 200).");
	for (size_t i = 0; i < sizeof(by) / sizeof(by[0]); i++) {
		snprintf(labels, sizeof(labels), "outcome=\"%s\"", by[i].outcome);
		metrics_sample(f, "tpas_tunnel_requests_total", labels, by[i].v);
	}
	metrics_family(f, "tpas_tunnel_tls_failed", "counter",
		       "TLS handshakes on the tunnel that failed (no HTTP answer possible).");
	metrics_sample(f, "tpas_tunnel_tls_failed_total", NULL, s.tls_failed);
	metrics_family(f, "tpas_tunnel_connections", "gauge", "Tunnel connections open now.");
	metrics_sample(f, "tpas_tunnel_connections", NULL, s.connections);
	metrics_family(f, "tpas_tunnel_connection_limit_hit", "counter",
		       "Times tunnel.max-connections were open and accepting paused.");
	metrics_sample(f, "tpas_tunnel_connection_limit_hit_total", NULL, s.connection_limit_hit);
}

/* The journal: its seqs and the writer thread's group commits. */
static void render_journal(struct metrics_out *f, const struct tpas *t)
{
	struct journal_stats s;
	int64_t first, last;
	journal_get_counters(t->journal, &s);
	journal_seq_range(t->journal, &first, &last);
	metrics_family(f, "tpas_journal_last_seq", "gauge",
		       "The seq of the newest uplink journaled.");
	metrics_sample(f, "tpas_journal_last_seq", NULL, (unsigned long long)last);
	metrics_family(f, "tpas_journal_first_seq", "gauge",
		       "The seq of the oldest uplink kept (store.retention-days), 0 when none.");
	metrics_sample(f, "tpas_journal_first_seq", NULL, (unsigned long long)first);
	metrics_family(f, "tpas_journal_commits", "counter",
		       "Transactions committed to the journal (each one fsync).");
	metrics_sample(f, "tpas_journal_commits_total", NULL, s.commits);
	metrics_family(f, "tpas_journal_batches", "counter",
		       "Of those, the writer thread's group commits of uplinks.");
	metrics_sample(f, "tpas_journal_batches_total", NULL, s.batches);
	metrics_family(f, "tpas_journal_batched_uplinks", "counter",
		       "Uplinks (replays included) that went through a group commit.");
	metrics_sample(f, "tpas_journal_batched_uplinks_total", NULL, s.batched);
	metrics_family(f, "tpas_journal_largest_batch", "gauge",
		       "The most uplinks one group commit held since start.");
	metrics_sample(f, "tpas_journal_largest_batch", NULL, s.largest_batch);
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
	json_decref(link);
	char labels[40];
	metrics_family(f, "tpas_lrc_sessions", "gauge",
		       "Sessions of the pool to the LRC (lrc.sessions), by state.");
	for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
		snprintf(labels, sizeof(labels), "state=\"%s\"", states[k]);
		metrics_sample(f, "tpas_lrc_sessions", labels, by_state[k]);
	}
	metrics_family(f, "tpas_lrc_requests", "counter", "Requests sent to the LRC.");
	metrics_sample(f, "tpas_lrc_requests_total", NULL, requests);
	metrics_family(f, "tpas_lrc_reconnects", "counter",
		       "Connections to the LRC opened again after one was lost.");
	metrics_sample(f, "tpas_lrc_reconnects_total", NULL, reconnects);
}

/* Applications: streams, and the webhook when there is one. */
static void render_apps(struct metrics_out *f, const struct tpas *t)
{
	metrics_family(f, "tpas_subscribers", "gauge", "io.tpad.AS.Uplinks streams open.");
	metrics_sample(f, "tpas_subscribers", NULL, asapi_subscribers(t->api));
	if (!t->webhook)
		return;
	json_t *w = webhook_status_json(t->webhook);
	metrics_family(f, "tpas_webhook_delivered", "counter", "Uplinks the webhook accepted.");
	metrics_sample(f, "tpas_webhook_delivered_total", NULL, member(w, "delivered"));
	metrics_family(f, "tpas_webhook_failures", "counter",
		       "Webhook POSTs that failed (each retried).");
	metrics_sample(f, "tpas_webhook_failures_total", NULL, member(w, "failures"));
	metrics_family(f, "tpas_webhook_cursor", "gauge",
		       "The seq of the last uplink the webhook accepted.");
	metrics_sample(f, "tpas_webhook_cursor", NULL, member(w, "cursor"));
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
