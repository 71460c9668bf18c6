/* metrics: the daemon's counters and gauges as Prometheus text or OpenMetrics. */
#pragma once

#include <stddef.h>

struct tpad;

enum metrics_format {
	METRICS_PROMETHEUS,  /* text format 0.0.4: node_exporter's textfile collector, curl */
	METRICS_OPENMETRICS, /* OpenMetrics 1.0.0: counter families without _total, "# EOF" */
};

/*
 * Render every metric: "# HELP"/"# TYPE" lines and samples (counters, gauges, one
 * histogram, the build info, the process_* families of the Prometheus client libraries).
 * Returns a malloc'd NUL-terminated string, or NULL on ENOMEM.
 */
char *metrics_render(const struct tpad *t, enum metrics_format fmt);

/* "openmetrics" or "prometheus"; -EINVAL for anything else. */
int metrics_format_parse(const char *name, enum metrics_format *ret);

/* The HTTP Content-Type of a format. */
const char *metrics_content_type(enum metrics_format fmt);
