/* asmetrics: tpas's counters and gauges as Prometheus text or OpenMetrics (metrics.listen). */
#pragma once

#include "metrics_text.h"

struct tpas;

/*
 * Render every tpas_* family, tpas_build_info and the process_* families; cheap enough to
 * run per scrape on the loop (no table is counted). A malloc'd text, or NULL on ENOMEM.
 * arg is the struct tpas (a metrics_render_fn for core/metrics_http).
 */
char *asmetrics_render(void *arg, enum metrics_format fmt);
