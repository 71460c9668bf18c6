/* metrics: tpad's counters and gauges as Prometheus text or OpenMetrics. */
#pragma once

#include "metrics_text.h"

struct tpad;

/*
 * Render every metric: "# HELP"/"# TYPE" lines and samples (counters, gauges, one
 * histogram, the build info, the process_* families of the Prometheus client libraries).
 * Returns a malloc'd NUL-terminated string, or NULL on ENOMEM.
 */
char *metrics_render(const struct tpad *t, enum metrics_format fmt);
