/* metrics_http: the HTTP /metrics endpoint for Prometheus (metrics.listen). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "metrics_text.h"

struct event_base;
struct metrics_http;

/*
 * The format an Accept header asks for: OpenMetrics when it lists
 * application/openmetrics-text with a quality at least that of text/plain (as Prometheus
 * does), the Prometheus text format otherwise (no header, curl's any type).
 */
enum metrics_format metrics_http_negotiate(const char *accept);

/*
 * Serve GET and HEAD /metrics on addr (metrics.listen syntax) from base's loop, the text
 * made by render(arg, format) per scrape. Other paths answer 404 (naming program), other
 * methods 405. -errno with a reason in err.
 */
int metrics_http_new(struct event_base *base, const char *addr, const char *program,
		     metrics_render_fn *render, void *arg, struct metrics_http **ret, char *err,
		     size_t errlen);

/* Stop listening and close every connection. Accepts NULL. */
void metrics_http_free(struct metrics_http *m);
