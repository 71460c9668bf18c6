/* tpad: the daemon's shared context, handed to every method handler. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "daemon.h"
#include "store.h"

struct event_base;
struct event;
struct config;
struct server;
struct listener;
struct tpa;
struct activation;
struct rng;
struct metrics_http;
struct layout;
struct print;

struct tpad {
	struct event_base *base;
	const struct config *cfg;
	const char *config_path; /* NULL: built-in defaults (nothing to reload) */
	struct server *srv;
	struct listener *listeners[2]; /* indexed by enum sock_kind */
	struct tpa *tpa;	       /* upstream API client */
	struct store *store;
	struct activation *act;
	struct rng *rng;     /* AppKey generator */
	struct metrics_http *metrics; /* HTTP /metrics; NULL when metrics.listen is unset */
	struct keypool *keypool; /* cloud-HSM AppKeys (device.app-key-source = cloud-hsm) */
	struct layout *layout; /* label.* at label.dpi: station and export labels */
	struct print *print;   /* label printers */
	struct event *settle_ev;   /* background settling of PENDING rows */
	struct later *later;	   /* timers of jobs waiting for another tpad's claim */
	unsigned settle_pending;   /* PENDING rows the last settle pass could not settle */
	/* Rows by state as last counted (every second, and by each Status call). */
	uint64_t store_counts[STORE_N_STATES];
	bool store_counts_known, store_counting;
	time_t store_counted_at; /* wall clock of the last count */
	uint64_t started_us; /* monotonic */
	bool stopping;
	struct daemon_file start_files[5]; /* as read at start (SIGHUP names changes) */
};
