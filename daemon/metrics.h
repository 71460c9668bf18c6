/* metrics: the daemon's counters and gauges as text for Prometheus and node_exporter. */
#pragma once

#include <stddef.h>

struct tpad;

/*
 * Render every metric: "# HELP"/"# TYPE" lines and samples in the Prometheus text
 * format that node_exporter's textfile collector reads (counters, gauges and histograms
 * only; counter names end in _total), closed by OpenMetrics' "# EOF" line.
 * Returns a malloc'd NUL-terminated string, or NULL on ENOMEM.
 */
char *metrics_render(const struct tpad *t);
