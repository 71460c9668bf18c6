/* layout: one label layout (label.*) drawn alike as ZPL, PDF, PNG and SVG, captions included. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "caption.h"
#include "config.h"

/* The formats a layout draws. */
enum layout_format {
	LAYOUT_ZPL, /* ^XA...^XZ per label; the printer encodes the code (^BQN,2,<mag>) */
	LAYOUT_PDF, /* one page per label, cairo, DejaVu Sans */
	LAYOUT_PNG, /* one label, 1-bit grayscale, one pixel per printer dot, drawn unsmoothed */
	LAYOUT_SVG, /* one label, one user unit per printer dot, captions as <text> */
};

#define LAYOUT_FONT "DejaVu Sans"

struct layout;

/*
 * Make the layout of cl for one printer: dpi, width and height (0.1 mm) override cl's when
 * not 0. Checks that a typical TR005 code with its 4-module quiet zone and every caption
 * line fit the label; on failure -EINVAL with a sentence naming the label.* directive in
 * err. -ENOMEM.
 */
int layout_new(const struct config_label *cl, uint32_t dpi, uint32_t width, uint32_t height,
	       enum qr_ec_level level, struct layout **ret, char *err, size_t errlen);

/*
 * Whether every caption line of a device with these fields fits beside or below the code
 * of text (its label text, or one as long: the code's size depends on it): 0, or
 * -EMSGSIZE with the line, its width and the room in err. For the protocol's check of a
 * serial, before anything is issued (see label_text_to_issue()).
 */
int layout_fields_fit(const struct layout *l, const char *text, const struct caption_fields *f,
		      char *err, size_t errlen);

/* Free a layout; accepts NULL, returns NULL. */
struct layout *layout_free(struct layout *l);

/* The label's size in printer dots, and its dpi. */
void layout_size(const struct layout *l, int *ret_width, int *ret_height, int *ret_dpi);

/*
 * A hash of everything that decides how a label of f looks with this layout (geometry,
 * captions, the fields the captions name, the drawing's revision), so an image kept
 * in a cache under it is known to be drawn the same way.
 */
uint32_t layout_fingerprint(const struct layout *l, const struct caption_fields *f);

/* A document of labels being drawn. */
struct layout_doc;

/* Start a document in format fmt (PNG and SVG hold one label). -ENOMEM, -EINVAL. */
int layout_doc_new(const struct layout *l, enum layout_format fmt, struct layout_doc **ret);

/* Draw the codes at level rather than the layout's own (a call's qr.ecLevel). */
void layout_doc_set_level(struct layout_doc *d, enum qr_ec_level level);

/* PNG: the smallest file at more CPU, for images made once and kept. */
void layout_doc_set_compact(struct layout_doc *d, bool compact);

/*
 * Add one label: the code of qr_text and the captions over f, copies times (ZPL: ^PQ;
 * PDF: that many pages). -EMSGSIZE with a sentence in err when the code or a caption
 * does not fit the label (naming the label.caption-N line), -E2BIG for a second label in
 * PNG or SVG, -EINVAL, -ENOMEM.
 */
int layout_doc_add(struct layout_doc *d, const char *qr_text, const struct caption_fields *f,
		   unsigned copies, char *err, size_t errlen);

/*
 * layout_doc_add() with the code already encoded (qr_matrix_encode() at the document's
 * level, e.g. a stored one), so the costly encoding is not done again; -EINVAL for a
 * malformed matrix.
 */
int layout_doc_add_matrix(struct layout_doc *d, const char *qr_text, const uint8_t *matrix,
			  size_t mlen, const struct caption_fields *f, unsigned copies, char *err,
			  size_t errlen);

/* Finish the document into a malloc'd buffer (NUL after it, not counted) and free it. */
int layout_doc_finish(struct layout_doc *d, uint8_t **ret_data, size_t *ret_len);

/* Free an unfinished document; accepts NULL. */
void layout_doc_free(struct layout_doc *d);

/* One label in one call: layout_doc_new(), _add(), _finish(). */
int layout_render(const struct layout *l, enum layout_format fmt, const char *qr_text,
		  const struct caption_fields *f, uint8_t **ret_data, size_t *ret_len, char *err,
		  size_t errlen);

/* "zpl", "pdf", "png" or "svg" to a format; -EINVAL otherwise. */
int layout_format_from_string(const char *s, enum layout_format *ret);

/*
 * Release what cairo and fontconfig keep for the life of the process (font caches), so
 * leak checkers see a clean exit. Only at exit, with no layout or document in use and
 * no other thread drawing.
 */
void layout_global_cleanup(void);
