/* tpas: the daemon's shared context, handed to every module's handlers. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon.h"
#include "pool.h"
#include "tunnel.h"

struct asapi;
struct asconf;
struct downlink;
struct event_base;
struct journal;
struct listener;
struct server;
struct tunnel;
struct webhook;

struct tpas {
	struct event_base *base;
	const struct asconf *cfg;
	const char *config_path; /* NULL: built-in defaults (nothing to reload) */
	struct server *srv;
	struct listener *listeners[2]; /* SOCK_STATION: the apps socket, SOCK_ADMIN: admin */
	struct journal *journal;
	struct tunnel *tunnel;
	struct downlink *downlink;
	struct asapi *api;
	struct webhook *webhook; /* NULL without webhook.url */
	uint64_t started_us;	 /* monotonic */
	bool stopping;
	struct event *stop_cut;	     /* stopping: downlinks still unanswered are ended then */
	bool pruned;		     /* the journal was pruned since start (by the LRC's clock) */
	bool prune_waited;	     /* said that pruning waits for the LRC's clock */
	struct {		     /* the prune under way, a step at a time */
		struct event *step;
		int64_t before_ms, keep_after, removed;
		bool running;
	} prune;
	struct pool_watch lrc_watch; /* the LRC link's outages, told once each */
	struct tunnel_stats tunnel_final; /* the tunnel's counters when it was closed (stopping) */
	struct daemon_file tls_files[4];  /* certificates and keys as at start (SIGHUP) */
};

/* The tunnel's counters: live, or as they were when stopping closed it. */
static inline void tpas_tunnel_stats(const struct tpas *t, struct tunnel_stats *ret)
{
	if (t->tunnel)
		tunnel_get_stats(t->tunnel, ret);
	else
		*ret = t->tunnel_final;
}
