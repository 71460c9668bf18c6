/* metrics_text: writing Prometheus text and OpenMetrics, shared by the daemons' /metrics. */
#pragma once

#include <stdio.h>

enum metrics_format {
	METRICS_PROMETHEUS,  /* text format 0.0.4: node_exporter's textfile collector, curl */
	METRICS_OPENMETRICS, /* OpenMetrics 1.0.0: counter families without _total, "# EOF" */
};

/* Where the text goes and in which of the two formats. */
struct metrics_out {
	FILE *f;
	enum metrics_format fmt;
	char *buf;
	size_t len;
};

/* Renders a program's metrics: a malloc'd NUL-terminated text, or NULL on ENOMEM. */
typedef char *metrics_render_fn(void *arg, enum metrics_format fmt);

/* Start a text in memory; -ENOMEM. */
int metrics_begin(struct metrics_out *o, enum metrics_format fmt);

/* End it ("# EOF" for OpenMetrics): the malloc'd text, or NULL on ENOMEM. */
char *metrics_end(struct metrics_out *o);

/*
 * Start a family: its help text and type. A counter family is named without "_total"
 * in OpenMetrics (its samples carry the suffix) and with it in the Prometheus text format.
 */
void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help);

/* One sample; labels is 'name="value",...' or NULL. */
void metrics_sample(struct metrics_out *o, const char *name, const char *labels,
		    unsigned long long v);

/* A family of one unlabelled sample: a counter (its sample NAME_total) or a gauge. */
void metrics_counter(struct metrics_out *o, const char *name, const char *help,
		     unsigned long long v);
void metrics_gauge(struct metrics_out *o, const char *name, const char *help, unsigned long long v);

struct server_stats;

/*
 * PROGRAM_connections (open now) and PROGRAM_connections_accepted by socket (sockets: the
 * label of each SOCK_* kind), PROGRAM_calls, PROGRAM_calls_in_flight and
 * PROGRAM_limits_hit by limit, from a varlink server's counters.
 */
void metrics_server(struct metrics_out *o, const char *program, const struct server_stats *s,
		    const char *const sockets[]);

/*
 * PROGRAM_build_info (an info family in OpenMetrics, a gauge of 1 in the text format):
 * the program's version and those of libevent, SQLite and mbedTLS as labels.
 */
void metrics_build_info(struct metrics_out *o, const char *program, const char *version);

/* The process_* families of the Prometheus client libraries (CPU, memory, fds, start). */
void metrics_process(struct metrics_out *o);

/* "openmetrics" or "prometheus"; -EINVAL for anything else. */
int metrics_format_parse(const char *name, enum metrics_format *ret);

/* The HTTP Content-Type of a format. */
const char *metrics_content_type(enum metrics_format fmt);
