/* qr_image: QR code images of a payload text — PNG, SVG, ZPL and terminal text. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum qr_format {
	QR_FORMAT_NONE, /* no image: qr_image_render() refuses it */
	QR_FORMAT_PNG,
	QR_FORMAT_SVG,
	QR_FORMAT_ZPL,
	QR_FORMAT_TEXT,
	QR_FORMAT_PDF, /* the whole label only (layout.c): qr_image_render() refuses it */
};

#define QR_SCALE_DEFAULT 4
#define QR_SCALE_MIN 1
#define QR_SCALE_MAX 20
#define QR_MARGIN_DEFAULT 4
#define QR_MARGIN_MAX 16
#define QR_ZPL_MAG_MAX 10 /* the largest ^BQ magnification */

/*
 * How to draw a code. scale: pixels (PNG, SVG) or printer dots (ZPL) per module,
 * QR_SCALE_MIN..QR_SCALE_MAX; margin: quiet zone in modules, 0..QR_MARGIN_MAX (4 is what
 * the QR standard asks for); level: error correction; caption: ZPL only, an optional line
 * of text printed under the code (for instance the DevEUI), NULL for none.
 *
 * Per format:
 * - png: 1-bit grayscale, (modules + 2 * margin) * scale pixels square.
 * - svg: width = height = viewBox size = (modules + 2 * margin) * scale, a white
 *   background rect and one black <path> of the dark modules.
 * - zpl: one label ^XA ... ^XZ where the printer draws the code natively:
 *   ^FO<margin * mag>,<margin * mag>^BQN,2,<mag>^FD<level>A,<text>^FS with mag = scale
 *   clamped to 1..QR_ZPL_MAG_MAX and <level> the letter L, M, Q or H of level. Text with
 *   '^', '~', '_' or control characters is sent through ^FH as _XX hex escapes. ^CI28
 *   selects UTF-8.
 * - text: UTF-8 for a terminal with a LIGHT background: dark modules are drawn as blocks
 *   (U+2588, upper half U+2580, lower half U+2584), light modules and the quiet zone as
 *   spaces. Each line holds two module rows, so there are ceil((modules + 2 * margin) / 2)
 *   lines of (modules + 2 * margin) characters, each ended by '\n'. scale is ignored. On
 *   a dark terminal the code shows inverted, which many scanners do not read.
 */
struct qr_opts {
	enum qr_format format;
	int scale;
	int margin;
	enum qr_ec_level level;
	const char *caption;
	bool compact; /* PNG: smallest file at more CPU, for images made once and kept */
	/*
	 * label.c only: draw the whole label of this layout (struct layout, label.*) rather
	 * than the bare code: always for ZPL, and for PNG and SVG when label is set.
	 */
	bool label;
	const void *layout;
};

/* Fill *o with the defaults: PNG, scale 4, margin 4, level M, no caption. */
void qr_opts_default(struct qr_opts *o);

/*
 * Encode text (as 8-bit data; libqrencode picks numeric and alphanumeric segments where
 * they are shorter) and render it as o asks into a malloc'd buffer stored in *ret_data
 * with its length in *ret_len (a NUL follows the data, not counted). Returns 0, -EINVAL
 * (bad options, empty text, format none), -EMSGSIZE (too long for any QR code at this
 * level) or -ENOMEM; *ret_data and *ret_len are untouched on failure.
 */
int qr_image_render(const char *text, const struct qr_opts *o, uint8_t **ret_data, size_t *ret_len);

/* Bytes of the largest matrix: one byte of width, then 177 x 177 modules of one bit. */
#define QR_MATRIX_MAX (1 + (177 * 177 + 7) / 8)

/*
 * Encode text at level into out (outlen bytes; QR_MATRIX_MAX always suffices): the
 * costly part of a label, where libqrencode tries every mask. The matrix is the width in
 * one byte, then the modules row by row, one bit each, most significant first, 1 dark.
 * It can be stored and drawn again with qr_matrix_render(). -EINVAL, -EMSGSIZE, -ENOBUFS.
 */
int qr_matrix_encode(const char *text, enum qr_ec_level level, uint8_t *out, size_t outlen,
		     size_t *ret_len);

/*
 * Draw a matrix from qr_matrix_encode() as o asks, as qr_image_render() would for text
 * (o->level is already in the matrix; ZPL uses text, since the printer encodes it).
 * -EINVAL for a malformed matrix or options.
 */
int qr_matrix_render(const uint8_t *m, size_t len, const char *text, const struct qr_opts *o,
		     uint8_t **ret_data, size_t *ret_len);

/* Number of modules per side of text's code at level (21..177), or a negative errno. */
int qr_image_modules(const char *text, enum qr_ec_level level);

/*
 * The modules per side of the largest code a printer that encodes the text itself could
 * make of it (ZPL's ^BQ): ours (modes mixed), or the text in one mode, alphanumeric if it
 * is all of that set, else byte, whichever is larger.
 */
int qr_image_modules_printer(const char *text, enum qr_ec_level level);

/* Parse "png", "svg", "zpl", "text", "pdf" or "none"; returns 0 or -EINVAL. */
int qr_format_from_string(const char *s, enum qr_format *ret);

/* The name of a format as qr_format_from_string() takes it, or NULL. */
const char *qr_format_name(enum qr_format f);

/* The file name extension of a format ("png", "svg", "zpl", "txt", "pdf"), or NULL for none. */
const char *qr_format_ext(enum qr_format f);

/* Parse an error correction level "L", "M", "Q" or "H" (either case); 0 or -EINVAL. */
int qr_ec_level_from_string(const char *s, enum qr_ec_level *ret);

/* The letter of an error correction level, or NULL. */
const char *qr_ec_level_name(enum qr_ec_level level);
