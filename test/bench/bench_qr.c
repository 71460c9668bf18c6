/*
 * bench_qr: labels per second on one core for each QR image format, for a TR005 text
 * with a 32-digit ownerToken: the bare code, then the whole label of the default
 * [label] layout (captions included), encoded from text or drawn from a stored code.
 * Usage: bench-qr [seconds per format, default 1] [only the runs whose name has WORD].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "layout.h"
#include "qr.h"
#include "qr_image.h"

/* Monotonic time in seconds. */
static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Make labels as o asks for about seconds; print the rate. */
static const char *only; /* run only what has this in its name */

static int bench(const char *what, const char *text, const struct qr_opts *o, double seconds)
{
	if (only && !strstr(what, only))
		return 0;
	long n = 0;
	size_t bytes = 0;
	double start = now(), elapsed;
	do {
		for (int i = 0; i < 100; i++) {
			uint8_t *data;
			size_t len;
			if (qr_image_render(text, o, &data, &len) < 0) {
				fprintf(stderr, "%s: render failed\n", what);
				return 1;
			}
			bytes = len;
			free(data);
		}
		n += 100;
		elapsed = now() - start;
	} while (elapsed < seconds);
	printf("%-22s %9.0f labels/s  %7.1f us/label  %6zu bytes\n", what, (double)n / elapsed,
	       elapsed / (double)n * 1e6, bytes);
	return 0;
}

/* Draw whole labels of l in fmt for about seconds (from matrix m when given); print the rate. */
static int bench_layout(const char *what, const struct layout *l, enum layout_format fmt,
			const char *text, const uint8_t *m, size_t mlen, bool compact,
			double seconds)
{
	if (only && !strstr(what, only))
		return 0;
	const struct caption_fields f = {"0123D345666E2DBD", "70B3D57ED0000001", "SN-00000042"};
	long n = 0;
	size_t bytes = 0;
	double start = now(), elapsed;
	do {
		for (int i = 0; i < 20; i++) {
			struct layout_doc *d;
			uint8_t *data;
			size_t len;
			char err[256];
			if (layout_doc_new(l, fmt, &d) < 0)
				return 1;
			layout_doc_set_compact(d, compact);
			if (layout_doc_add_matrix(d, text, m, mlen, &f, 1, err, sizeof(err)) < 0 ||
			    layout_doc_finish(d, &data, &len) < 0) {
				fprintf(stderr, "%s: %s\n", what, err);
				return 1;
			}
			bytes = len;
			free(data);
		}
		n += 20;
		elapsed = now() - start;
	} while (elapsed < seconds);
	printf("%-22s %9.0f labels/s  %7.1f us/label  %6zu bytes\n", what, (double)n / elapsed,
	       elapsed / (double)n * 1e6, bytes);
	return 0;
}

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 1.0;
	if (seconds <= 0)
		seconds = 1.0;
	only = argc > 2 ? argv[2] : NULL;
	struct qr_fields f = {"70B3D57ED0000001",
			      "0123D345666E2DBD",
			      "00000000",
			      "0123456789ABCDEF0123456789ABCDEF",
			      NULL,
			      NULL};
	char text[QR_TEXT_MAX];
	if (qr_tr005(&f, text, sizeof(text)) < 0)
		return 1;
	printf("payload %s (%d modules at level M)\n", text, qr_image_modules(text, QR_EC_M));

	/* TR005 text alone, for reference. */
	long n = 0;
	double start = now(), elapsed;
	do {
		for (int i = 0; i < 1000; i++)
			n += qr_tr005(&f, text, sizeof(text)) == 0;
		elapsed = now() - start;
	} while (elapsed < seconds && !only);
	if (!only)
		printf("%-22s %9.0f labels/s\n", "tr005 text", (double)n / elapsed);

	static const struct {
		const char *name;
		enum qr_format format;
		int scale;
	} runs[] = {
	    {"png scale 4", QR_FORMAT_PNG, 4}, {"png scale 10", QR_FORMAT_PNG, 10},
	    {"svg scale 4", QR_FORMAT_SVG, 4}, {"zpl scale 4", QR_FORMAT_ZPL, 4},
	    {"text", QR_FORMAT_TEXT, 1},
	};
	int r = 0;
	for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		struct qr_opts o;
		qr_opts_default(&o);
		o.format = runs[i].format;
		o.scale = runs[i].scale;
		r |= bench(runs[i].name, text, &o, seconds);
	}

	/* The whole label (label.* defaults: 57 x 32 mm, 203 dpi, DevEUI and serial). */
	struct config c;
	struct layout *l;
	char err[512];
	config_defaults(&c);
	if (layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	uint8_t m[QR_MATRIX_MAX];
	size_t mlen;
	if (qr_matrix_encode(text, QR_EC_M, m, sizeof(m), &mlen) < 0)
		return 1;
	r |= bench_layout("label png", l, LAYOUT_PNG, text, NULL, 0, false, seconds);
	r |= bench_layout("label png, stored code", l, LAYOUT_PNG, text, m, mlen, false, seconds);
	r |= bench_layout("label png, compact", l, LAYOUT_PNG, text, m, mlen, true, seconds);
	r |= bench_layout("label svg", l, LAYOUT_SVG, text, NULL, 0, false, seconds);
	r |= bench_layout("label zpl", l, LAYOUT_ZPL, text, NULL, 0, false, seconds);
	r |= bench_layout("label pdf", l, LAYOUT_PDF, text, NULL, 0, false, seconds);
	layout_free(l);
	config_free(&c);
	layout_global_cleanup();
	return r;
}
