/* layout: one label layout (label.*) drawn alike as ZPL, PDF, PNG and SVG, captions included. */
#include "layout.h"

#include <cairo-pdf.h>
#include <cairo-svg.h>
#include <cairo.h>
#include <errno.h>
#include <fontconfig/fontconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fnv.h"
#include "png1.h"
#include "qr_image.h"
#include "utf8.h"

#define QUIET 4		 /* modules of quiet zone on every side, always kept */
/*
 * The smallest module a scanner reads on a label: 0.25 mm (2 dots at 203 dpi). At one
 * dot a module, a 10 mm code printed but read as nothing.
 */
#define MIN_MODULE_UM 250
#define CAPTION_GAP_MM10 10 /* 1 mm between the quiet zone and the captions */
/* Bumped whenever the drawing changes, so images kept by fingerprint are drawn again. */
#define LAYOUT_REVISION 2
/* A typical TR005 text (64-bit token, serial): what the configuration is checked with. */
#define SAMPLE_TEXT                                                                                \
	"LW:D0:70B3D57ED0000001:0123D345666E2DBD:00000000:O0123456789ABCDEF0123456789ABCDEF:"     \
	"SSN-00000001:C1A2B"

#define LAYOUT_OTHER_MAX 64 /* characters beyond ASCII measured in the captions' text */

struct layout {
	int dpi;
	int width, height; /* dots */
	int qr_size;	   /* dots; 0 = auto */
	int qr_x, qr_y;	   /* dots */
	int gap;	   /* dots between the quiet zone and the captions */
	char *captions[CONFIG_MAX_CAPTIONS];
	int font_px; /* caption font height in dots */
	double font_pt;
	enum label_captions position;
	enum qr_ec_level level;
	double advance[95]; /* DejaVu Sans advance widths of ' '..'~' at font_px, in dots */
	/* The same for the other characters of the captions' text (the fields are ASCII). */
	struct {
		uint32_t cp;
		double advance;
	} other[LAYOUT_OTHER_MAX];
	size_t n_other;
	double ascent; /* dots */
};

/* Where one label's parts go, in dots. */
struct geometry {
	int modules, module; /* modules per side, dots per module */
	int box;	     /* side of the code with its quiet zones */
	int text_x, text_y, text_w;
	int line_h;
};

struct layout_doc {
	const struct layout *l;
	enum layout_format fmt;
	enum qr_ec_level level; /* the layout's, unless layout_doc_set_level() */
	bool compact;		/* PNG: best compression */
	unsigned labels;
	/* ZPL: text; PDF/SVG: cairo writes its stream here; PNG: written at the end. */
	uint8_t *data;
	size_t len, cap;
	int err;
	cairo_surface_t *surface;
	cairo_t *cr;
	uint8_t *bits; /* PNG: the label, rowbytes a row, 1 dark, leftmost dot most significant */
	size_t rowbytes;
};

/* Append n bytes to the document's buffer. */
static void doc_add(struct layout_doc *d, const void *p, size_t n)
{
	if (d->err)
		return;
	if (n + 1 > d->cap - d->len) {
		size_t cap = d->cap ? d->cap : 4096;
		while (n + 1 > cap - d->len) {
			if (cap > SIZE_MAX / 2) {
				d->err = -ENOMEM;
				return;
			}
			cap *= 2;
		}
		uint8_t *nd = realloc(d->data, cap);
		if (!nd) {
			d->err = -ENOMEM;
			return;
		}
		d->data = nd;
		d->cap = cap;
	}
	memcpy(d->data + d->len, p, n);
	d->len += n;
}

/* Append a formatted string to the document's buffer. */
__attribute__((format(printf, 2, 3))) static void doc_printf(struct layout_doc *d, const char *fmt,
							     ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf)) {
		d->err = d->err ? d->err : -EINVAL;
		return;
	}
	doc_add(d, buf, (size_t)n);
}

/* cairo's stream writer: into the document's buffer. */
static cairo_status_t doc_write(void *closure, const unsigned char *data, unsigned int length)
{
	struct layout_doc *d = closure;
	doc_add(d, data, length);
	return d->err ? CAIRO_STATUS_NO_MEMORY : CAIRO_STATUS_SUCCESS;
}

/* Tenths of a millimetre to dots at dpi. */
static int mm10_to_dots(uint32_t mm10, int dpi)
{
	return (int)(((uint64_t)mm10 * (uint64_t)dpi + 127) / 254);
}

/* Dots to millimetres, for messages. */
static double dots_to_mm(int dots, int dpi)
{
	return (double)dots * 25.4 / dpi;
}

/* The measured character cp among l's others, or NULL. */
static const double *other_find(const struct layout *l, uint32_t cp)
{
	for (size_t i = 0; i < l->n_other; i++)
		if (l->other[i].cp == cp)
			return &l->other[i].advance;
	return NULL;
}

/*
 * The width of caption line s in dots, a character at a time, from the advance table (no
 * kerning in either; captions are valid UTF-8).
 */
static double text_width(const struct layout *l, const char *s)
{
	const double w_advance = l->advance['W' - 0x20];
	double w = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p;) {
		uint32_t cp;
		size_t n = utf8_decode(p, 4, &cp);
		const double *other = n > 1 ? other_find(l, cp) : NULL;
		/* Not UTF-8 (caption_check() refuses it), or not measured: as wide as a W. */
		w += n == 1 && *p >= 0x20 && *p < 0x7f ? l->advance[*p - 0x20]
		     : other			       ? *other
						       : w_advance;
		p += n ? n : 1;
	}
	return w;
}

/*
 * Measure each character of the captions beyond ASCII once, with cr set to the caption
 * font (at most LAYOUT_OTHER_MAX of them; any other is taken as wide as a W).
 */
static void measure_others(struct layout *l, cairo_t *cr)
{
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++) {
		const unsigned char *p = (const unsigned char *)l->captions[i];
		for (size_t n; p && *p; p += n ? n : 1) {
			uint32_t cp;
			n = utf8_decode(p, 4, &cp);
			if (n <= 1 || other_find(l, cp) || l->n_other == LAYOUT_OTHER_MAX)
				continue;
			char ch[5] = {0};
			memcpy(ch, p, n);
			cairo_text_extents_t te;
			cairo_text_extents(cr, ch, &te);
			l->other[l->n_other].cp = cp;
			l->other[l->n_other++].advance = te.x_advance;
		}
	}
}

/* Measure the caption font once, so fitting a line costs no font work on the loop. */
static int layout_measure(struct layout *l)
{
	cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_A8, 1, 1);
	cairo_t *cr = cairo_create(s);
	int r = cairo_status(cr) == CAIRO_STATUS_SUCCESS ? 0 : -ENOMEM;
	if (r == 0) {
		cairo_select_font_face(cr, LAYOUT_FONT, CAIRO_FONT_SLANT_NORMAL,
				       CAIRO_FONT_WEIGHT_NORMAL);
		cairo_set_font_size(cr, l->font_px);
		cairo_font_extents_t fe;
		cairo_font_extents(cr, &fe);
		l->ascent = fe.ascent;
		for (int c = 0x20; c < 0x7f; c++) {
			char ch[2] = {(char)c, 0};
			cairo_text_extents_t te;
			cairo_text_extents(cr, ch, &te);
			l->advance[c - 0x20] = te.x_advance;
		}
		measure_others(l, cr);
		if (cairo_status(cr) != CAIRO_STATUS_SUCCESS)
			r = -ENOMEM;
	}
	cairo_destroy(cr);
	cairo_surface_destroy(s);
	return r;
}

/* The number of caption lines that are not empty templates. */
static int caption_lines(const struct layout *l)
{
	int n = 0;
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++)
		if (l->captions[i] && *l->captions[i])
			n++;
	return n;
}

/* Place a code of modules per side and the caption block; -EMSGSIZE with a sentence in err. */
static int layout_place(const struct layout *l, int modules, struct geometry *g, char *err,
			size_t errlen)
{
	int lines = caption_lines(l);
	g->line_h = l->font_px + (l->font_px + 4) / 5;
	int block = lines * g->line_h;
	int avail_w = l->width - l->qr_x, avail_h = l->height - l->qr_y;
	int size = l->qr_size;
	if (!size) {
		size = avail_h < avail_w ? avail_h : avail_w;
		if (lines && l->position == LABEL_CAPTIONS_BELOW)
			size = avail_h - block - l->gap < avail_w ? avail_h - block - l->gap
								  : avail_w;
	}
	g->modules = modules;
	g->module = size > 0 ? size / (modules + 2 * QUIET) : 0;
	if (g->module > QR_ZPL_MAG_MAX)
		g->module = QR_ZPL_MAG_MAX; /* the largest ^BQ magnification */
	int min_module = (MIN_MODULE_UM * l->dpi + 25399) / 25400;
	if (min_module < 1)
		min_module = 1;
	if (g->module < min_module) {
		snprintf(err, errlen,
			 "label.qr-size: a code of %d modules and its %d-module quiet zones needs "
			 "%.1f mm at %d dpi (modules of %d dots, 0.25 mm, for a scanner to read "
			 "it); only %.1f mm are left",
			 modules, QUIET, dots_to_mm((modules + 2 * QUIET) * min_module, l->dpi),
			 l->dpi, min_module, dots_to_mm(size > 0 ? size : 0, l->dpi));
		return -EMSGSIZE;
	}
	g->box = (modules + 2 * QUIET) * g->module;
	if (l->qr_x + g->box > l->width || l->qr_y + g->box > l->height) {
		snprintf(err, errlen,
			 "label.qr-x/qr-y: the code with its quiet zone (%.1f mm) runs off the "
			 "label (%.1f x %.1f mm)",
			 dots_to_mm(g->box, l->dpi), dots_to_mm(l->width, l->dpi),
			 dots_to_mm(l->height, l->dpi));
		return -EMSGSIZE;
	}
	if (l->position == LABEL_CAPTIONS_RIGHT) {
		g->text_x = l->qr_x + g->box + l->gap;
		g->text_y = l->qr_y + QUIET * g->module;
	} else {
		g->text_x = l->qr_x + QUIET * g->module;
		g->text_y = l->qr_y + g->box + l->gap;
	}
	g->text_w = l->width - g->text_x;
	if (lines && g->text_w <= 0) {
		/* The code took the label's whole width (a tall label): its height is no help. */
		snprintf(err, errlen,
			 "label.caption-%d: the code (%.1f mm with its quiet zone) takes the "
			 "label's whole width, leaving no room beside it; set label.qr-size "
			 "smaller or label.captions = below",
			 lines, dots_to_mm(g->box, l->dpi));
		return -EMSGSIZE;
	}
	if (lines && g->text_y + block > l->height) {
		snprintf(err, errlen,
			 "label.caption-%d: %d caption lines of %.0f pt need %.1f mm %s the code; "
			 "the label has %.1f mm",
			 lines, lines, l->font_pt, dots_to_mm(block, l->dpi),
			 l->position == LABEL_CAPTIONS_RIGHT ? "beside" : "below",
			 dots_to_mm(l->height - g->text_y > 0 ? l->height - g->text_y : 0, l->dpi));
		return -EMSGSIZE;
	}
	return 0;
}

/* Render caption line i and check that it fits; -EMSGSIZE names the directive. */
static int caption_fit(const struct layout *l, const struct geometry *g, int i,
		       const struct caption_fields *f, char *out, size_t outlen, char *err,
		       size_t errlen)
{
	int r = caption_render(l->captions[i], f, out, outlen);
	if (r < 0) {
		snprintf(err, errlen, "label.caption-%d: cannot render '%s'", i + 1,
			 l->captions[i]);
		return r == -ENOBUFS ? -EMSGSIZE : r;
	}
	double w = text_width(l, out);
	if (w > g->text_w) {
		snprintf(err, errlen,
			 "label.caption-%d: '%s' is %.1f mm wide at %.0f pt; %.1f mm fit %s the "
			 "code",
			 i + 1, out, dots_to_mm((int)(w + 0.5), l->dpi), l->font_pt,
			 dots_to_mm(g->text_w, l->dpi),
			 l->position == LABEL_CAPTIONS_RIGHT ? "beside" : "below");
		return -EMSGSIZE;
	}
	return 0;
}

int layout_fields_fit(const struct layout *l, const char *text, const struct caption_fields *f,
		      char *err, size_t errlen)
{
	struct geometry g;
	char line[CAPTION_MAX];
	/* As a ZPL printer may encode it (the larger code): what fits it fits every format. */
	int modules = qr_image_modules_printer(text, l->level);
	int r = modules < 0 ? modules : layout_place(l, modules, &g, err, errlen);
	for (int i = 0; i < CONFIG_MAX_CAPTIONS && r == 0; i++)
		if (l->captions[i])
			r = caption_fit(l, &g, i, f, line, sizeof(line), err, errlen);
	return r;
}

int layout_new(const struct config_label *cl, uint32_t dpi, uint32_t width, uint32_t height,
	       enum qr_ec_level level, struct layout **ret, char *err, size_t errlen)
{
	struct layout *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->dpi = (int)(dpi ? dpi : cl->dpi);
	l->width = mm10_to_dots(width ? width : cl->width, l->dpi);
	l->height = mm10_to_dots(height ? height : cl->height, l->dpi);
	l->qr_size = mm10_to_dots(cl->qr_size, l->dpi);
	l->qr_x = mm10_to_dots(cl->qr_x, l->dpi);
	l->qr_y = mm10_to_dots(cl->qr_y, l->dpi);
	l->gap = mm10_to_dots(CAPTION_GAP_MM10, l->dpi);
	l->font_pt = cl->font_size;
	l->font_px = (int)((cl->font_size * (uint32_t)l->dpi + 36) / 72);
	l->position = cl->caption_position;
	l->level = level;
	int r = 0;
	char why[160];
	for (int i = 0; i < CONFIG_MAX_CAPTIONS && r == 0; i++) {
		if (!cl->captions[i] || !*cl->captions[i])
			continue;
		if (caption_check(cl->captions[i], why, sizeof(why)) < 0) {
			snprintf(err, errlen, "label.caption-%d: %s", i + 1, why);
			r = -EINVAL;
		} else if (!(l->captions[i] = strdup(cl->captions[i]))) {
			r = -ENOMEM;
		}
	}
	if (r == 0 && (r = layout_measure(l)) < 0)
		snprintf(err, errlen, "cannot load the caption font %s", LAYOUT_FONT);
	if (r == 0) {
		/* The typical label must fit: the code of a TR005 text and every caption. */
		const struct caption_fields sample = {"FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFF",
						     "SN-00000001"};
		r = layout_fields_fit(l, SAMPLE_TEXT, &sample, err, errlen);
		if (r == -EMSGSIZE)
			r = -EINVAL;
	}
	if (r < 0) {
		layout_free(l);
		return r;
	}
	*ret = l;
	return 0;
}

struct layout *layout_free(struct layout *l)
{
	if (!l)
		return NULL;
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++)
		free(l->captions[i]);
	free(l);
	return NULL;
}

uint32_t layout_fingerprint(const struct layout *l, const struct caption_fields *f)
{
	int geo[] = {LAYOUT_REVISION, l->dpi,	  l->width,   l->height,	   l->qr_size,
		     l->qr_x,	       l->qr_y,	  l->gap,     l->font_px, (int)l->position};
	uint32_t h = fnv32(FNV32_START, geo, sizeof(geo));
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++) {
		const char *c = l->captions[i] ? l->captions[i] : "";
		h = fnv32(h, c, strlen(c) + 1);
	}
	const char *v[] = {f && f->dev_eui ? f->dev_eui : "", f && f->join_eui ? f->join_eui : "",
			   f && f->serial ? f->serial : ""};
	for (int i = 0; i < 3; i++)
		h = fnv32(h, v[i], strlen(v[i]) + 1);
	return h;
}

void layout_size(const struct layout *l, int *ret_width, int *ret_height, int *ret_dpi)
{
	*ret_width = l->width;
	*ret_height = l->height;
	*ret_dpi = l->dpi;
}

int layout_format_from_string(const char *s, enum layout_format *ret)
{
	static const char *const names[] = {"zpl", "pdf", "png", "svg"};
	for (int i = 0; s && i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			*ret = (enum layout_format)i;
			return 0;
		}
	return -EINVAL;
}

int layout_doc_new(const struct layout *l, enum layout_format fmt, struct layout_doc **ret)
{
	if (!l || (unsigned)fmt > LAYOUT_SVG)
		return -EINVAL;
	struct layout_doc *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->l = l;
	d->fmt = fmt;
	d->level = l->level;
	/* Page sizes in points; drawing is done in dots, scaled. */
	double pw = l->width * 72.0 / l->dpi, ph = l->height * 72.0 / l->dpi;
	switch (fmt) {
	case LAYOUT_ZPL:
		break;
	case LAYOUT_PDF:
		d->surface = cairo_pdf_surface_create_for_stream(doc_write, d, pw, ph);
		break;
	case LAYOUT_SVG:
		break; /* written here: captions stay <text>, which cairo would turn to outlines */
	case LAYOUT_PNG:
		/* The printer's dots, one bit each: modules set here, captions drawn by cairo. */
		d->rowbytes = ((size_t)l->width + 7) / 8;
		d->bits = calloc((size_t)l->height, d->rowbytes);
		if (!d->bits) {
			free(d);
			return -ENOMEM;
		}
		break;
	}
	if (d->surface) {
		d->cr = cairo_create(d->surface);
		if (cairo_status(d->cr) != CAIRO_STATUS_SUCCESS) {
			layout_doc_free(d);
			return -ENOMEM;
		}
		if (fmt == LAYOUT_PDF)
			cairo_scale(d->cr, 72.0 / l->dpi, 72.0 / l->dpi);
	}
	*ret = d;
	return 0;
}

void layout_doc_set_level(struct layout_doc *d, enum qr_ec_level level)
{
	d->level = level;
}

void layout_doc_set_compact(struct layout_doc *d, bool compact)
{
	d->compact = compact;
}

void layout_doc_free(struct layout_doc *d)
{
	if (!d)
		return;
	if (d->cr)
		cairo_destroy(d->cr);
	if (d->surface) {
		cairo_surface_finish(d->surface);
		cairo_surface_destroy(d->surface);
	}
	free(d->bits);
	free(d->data);
	free(d);
}

/* True if ZPL field data needs ^FH escapes for c. */
static bool zpl_special(unsigned char c)
{
	return c == '^' || c == '~' || c == '_' || c < 0x20 || c == 0x7f;
}

/* Append a ^FD field with text, escaped through ^FH when it needs to be. */
static void zpl_field(struct layout_doc *d, const char *prefix, const char *text)
{
	bool hex = false;
	for (const char *p = text; *p; p++)
		hex |= zpl_special((unsigned char)*p);
	doc_printf(d, "%s^FD%s", hex ? "^FH_" : "", prefix);
	for (const char *p = text; *p; p++) {
		if (hex && zpl_special((unsigned char)*p))
			doc_printf(d, "_%02X", (unsigned char)*p);
		else
			doc_add(d, p, 1);
	}
	doc_printf(d, "^FS\n");
}

/* One ZPL label: size, the code drawn by the printer, the captions, copies. */
static void draw_zpl(struct layout_doc *d, const struct geometry *g, const char *text,
		     char lines[][CAPTION_MAX], unsigned copies)
{
	const struct layout *l = d->l;
	static const char levels[] = {'L', 'M', 'Q', 'H'};
	char prefix[4] = {levels[d->level], 'A', ',', 0};
	doc_printf(d, "^XA\n^CI28\n^PW%d\n^LL%d\n^LH0,0\n", l->width, l->height);
	doc_printf(d, "^FO%d,%d^BQN,2,%d", l->qr_x + QUIET * g->module,
		   l->qr_y + QUIET * g->module, g->module);
	zpl_field(d, prefix, text);
	int y = g->text_y;
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++) {
		if (!l->captions[i])
			continue;
		if (lines[i][0]) {
			doc_printf(d, "^FO%d,%d^A0N,%d,%d", g->text_x, y, l->font_px, l->font_px);
			zpl_field(d, "", lines[i]);
		}
		y += g->line_h;
	}
	if (copies > 1)
		doc_printf(d, "^PQ%u\n", copies);
	doc_printf(d, "^XZ\n");
}

/* Call fn for each horizontal run of dark modules of matrix m (qr_matrix_encode()). */
static void matrix_runs(const uint8_t *m, void (*fn)(void *arg, int x, int y, int run), void *arg)
{
	int w = m[0];
	for (int y = 0; y < w; y++)
		for (int x = 0; x < w;) {
			size_t i = (size_t)y * (size_t)w + (size_t)x;
			if (!(m[1 + i / 8] & (0x80u >> (i % 8)))) {
				x++;
				continue;
			}
			int run = 1;
			for (;;) {
				size_t k = i + (size_t)run;
				if (x + run >= w || !(m[1 + k / 8] & (0x80u >> (k % 8))))
					break;
				run++;
			}
			fn(arg, x, y, run);
			x += run;
		}
}

/* Where a run of modules goes. */
struct run_ctx {
	struct layout_doc *d;
	const struct geometry *g;
	int x0, y0;
};

/* A run of dark modules as a cairo rectangle. */
static void run_cairo(void *arg, int x, int y, int run)
{
	struct run_ctx *c = arg;
	cairo_rectangle(c->d->cr, c->x0 + x * c->g->module, c->y0 + y * c->g->module,
			run * c->g->module, c->g->module);
}

/* A run of dark modules as an SVG path segment. */
static void run_svg(void *arg, int x, int y, int run)
{
	struct run_ctx *c = arg;
	int m = c->g->module;
	doc_printf(c->d, "M%d %dh%dv%dh-%dz", c->x0 + x * m, c->y0 + y * m, run * m, m, run * m);
}

/* Append text with XML's five special characters escaped. */
static void svg_escaped(struct layout_doc *d, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&':
			doc_printf(d, "&amp;");
			break;
		case '<':
			doc_printf(d, "&lt;");
			break;
		case '>':
			doc_printf(d, "&gt;");
			break;
		case '"':
			doc_printf(d, "&quot;");
			break;
		case '\'':
			doc_printf(d, "&apos;");
			break;
		default:
			doc_add(d, s, 1);
		}
	}
}

/*
 * One label as SVG, one user unit per printer dot: a white background, the modules as
 * one path, each caption a <text> in DejaVu Sans at the same place and size as cairo
 * draws it (so the captions stay text: searchable, selectable, small).
 */
static void draw_svg(struct layout_doc *d, const struct geometry *g, const uint8_t *m,
		     char lines[][CAPTION_MAX])
{
	const struct layout *l = d->l;
	doc_printf(d,
		   "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		   "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" "
		   "width=\"%dpx\" height=\"%dpx\" viewBox=\"0 0 %d %d\">\n"
		   "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n"
		   "<path fill=\"#000\" shape-rendering=\"crispEdges\" d=\"",
		   l->width, l->height, l->width, l->height, l->width, l->height);
	struct run_ctx c = {d, g, l->qr_x + QUIET * g->module, l->qr_y + QUIET * g->module};
	matrix_runs(m, run_svg, &c);
	doc_printf(d, "\"/>\n");
	int y = g->text_y;
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++) {
		if (!l->captions[i])
			continue;
		if (lines[i][0]) {
			doc_printf(d,
				   "<text x=\"%d\" y=\"%.2f\" font-family=\"%s, sans-serif\" "
				   "font-size=\"%d\" fill=\"#000\" xml:space=\"preserve\">",
				   g->text_x, y + l->ascent, LAYOUT_FONT, l->font_px);
			svg_escaped(d, lines[i]);
			doc_printf(d, "</text>\n");
		}
		y += g->line_h;
	}
	doc_printf(d, "</svg>\n");
}

/* One label with cairo (PDF), in dots: white, the modules, the captions in DejaVu Sans. */
static int draw_cairo(struct layout_doc *d, const struct geometry *g, const uint8_t *m,
		      char lines[][CAPTION_MAX])
{
	const struct layout *l = d->l;
	cairo_t *cr = d->cr;
	cairo_set_source_rgb(cr, 1, 1, 1);
	cairo_rectangle(cr, 0, 0, l->width, l->height);
	cairo_fill(cr);
	cairo_set_source_rgb(cr, 0, 0, 0);
	struct run_ctx c = {d, g, l->qr_x + QUIET * g->module, l->qr_y + QUIET * g->module};
	matrix_runs(m, run_cairo, &c);
	cairo_fill(cr);
	cairo_select_font_face(cr, LAYOUT_FONT, CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
	cairo_set_font_size(cr, l->font_px);
	int y = g->text_y;
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++) {
		if (!l->captions[i])
			continue;
		if (lines[i][0]) {
			cairo_move_to(cr, g->text_x, y + l->ascent);
			cairo_show_text(cr, lines[i]);
		}
		y += g->line_h;
	}
	return cairo_status(cr) == CAIRO_STATUS_SUCCESS ? 0 : -ENOMEM;
}

/* A run of dark modules into the PNG's bits. */
static void run_bits(void *arg, int x, int y, int run)
{
	struct run_ctx *c = arg;
	int m = c->g->module;
	int x0 = c->x0 + x * m, x1 = x0 + run * m;
	for (int yy = c->y0 + y * m; yy < c->y0 + (y + 1) * m; yy++) {
		uint8_t *row = c->d->bits + (size_t)yy * c->d->rowbytes;
		int xx = x0;
		for (; xx < x1 && (xx & 7); xx++)
			row[xx >> 3] |= (uint8_t)(0x80u >> (xx & 7));
		for (; xx + 8 <= x1; xx += 8)
			row[xx >> 3] = 0xff;
		for (; xx < x1; xx++)
			row[xx >> 3] |= (uint8_t)(0x80u >> (xx & 7));
	}
}

/*
 * One label as the printer's dots: the modules set straight into the bits (they lie on
 * whole dots), the captions drawn by cairo without smoothing into a one-bit surface of
 * the caption block only, then copied in. No cairo for the code keeps a label cheap on
 * the activation path.
 */
static int draw_png(struct layout_doc *d, const struct geometry *g, const uint8_t *m,
		    char lines[][CAPTION_MAX])
{
	const struct layout *l = d->l;
	struct run_ctx c = {d, g, l->qr_x + QUIET * g->module, l->qr_y + QUIET * g->module};
	matrix_runs(m, run_bits, &c);
	int w = g->text_w, h = l->height - g->text_y;
	bool any = false;
	for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++)
		any |= l->captions[i] && lines[i][0];
	if (!any || w <= 0 || h <= 0)
		return 0;
	cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_A1, w, h);
	cairo_t *cr = cairo_create(s);
	int r = cairo_status(cr) == CAIRO_STATUS_SUCCESS ? 0 : -ENOMEM;
	if (r == 0) {
		cairo_set_antialias(cr, CAIRO_ANTIALIAS_NONE);
		cairo_font_options_t *fo = cairo_font_options_create();
		cairo_font_options_set_antialias(fo, CAIRO_ANTIALIAS_NONE);
		cairo_font_options_set_hint_style(fo, CAIRO_HINT_STYLE_FULL);
		/* Unhinted advances: the widths layout_measure() checked the captions with. */
		cairo_font_options_set_hint_metrics(fo, CAIRO_HINT_METRICS_OFF);
		cairo_set_font_options(cr, fo);
		cairo_font_options_destroy(fo);
		cairo_select_font_face(cr, LAYOUT_FONT, CAIRO_FONT_SLANT_NORMAL,
				       CAIRO_FONT_WEIGHT_NORMAL);
		cairo_set_font_size(cr, l->font_px);
		cairo_set_source_rgb(cr, 0, 0, 0);
		int y = 0;
		for (int i = 0; i < CONFIG_MAX_CAPTIONS; i++) {
			if (!l->captions[i])
				continue;
			if (lines[i][0]) {
				cairo_move_to(cr, 0, y + l->ascent);
				cairo_show_text(cr, lines[i]);
			}
			y += g->line_h;
		}
		cairo_surface_flush(s);
		r = cairo_status(cr) == CAIRO_STATUS_SUCCESS ? 0 : -ENOMEM;
	}
	if (r == 0) {
		/* cairo's A1: 32-bit words in native order, bit 0 the leftmost on little-endian. */
		const unsigned char *px = cairo_image_surface_get_data(s);
		int stride = cairo_image_surface_get_stride(s);
		for (int y = 0; px && y < h; y++) {
			const uint32_t *src = (const uint32_t *)(const void *)(px + (size_t)y * (size_t)stride);
			uint8_t *row = d->bits + (size_t)(g->text_y + y) * d->rowbytes;
			for (int x = 0; x < w; x++) {
				uint32_t word = src[x / 32];
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
				bool dark = (word >> (x % 32)) & 1;
#else
				bool dark = (word >> (31 - x % 32)) & 1;
#endif
				if (!word) {
					x |= 31; /* a clear word: skip to the next */
					continue;
				}
				if (dark) {
					int xx = g->text_x + x;
					row[xx >> 3] |= (uint8_t)(0x80u >> (xx & 7));
				}
			}
		}
	}
	cairo_destroy(cr);
	cairo_surface_destroy(s);
	return r;
}

int layout_doc_add(struct layout_doc *d, const char *qr_text, const struct caption_fields *f,
		   unsigned copies, char *err, size_t errlen)
{
	return layout_doc_add_matrix(d, qr_text, NULL, 0, f, copies, err, errlen);
}

int layout_doc_add_matrix(struct layout_doc *d, const char *qr_text, const uint8_t *matrix,
			  size_t mlen, const struct caption_fields *f, unsigned copies, char *err,
			  size_t errlen)
{
	if (!d || !qr_text || !*qr_text || copies < 1) {
		snprintf(err, errlen, "no label text");
		return -EINVAL;
	}
	if ((d->fmt == LAYOUT_PNG || d->fmt == LAYOUT_SVG) && d->labels) {
		snprintf(err, errlen, "a PNG or SVG file holds one label");
		return -E2BIG;
	}
	const struct layout *l = d->l;
	uint8_t own[QR_MATRIX_MAX];
	int modules;
	if (matrix) {
		/* A stored code: its width byte and enough bits for it. */
		modules = mlen ? matrix[0] : 0;
		if (modules < 21 || modules > 177 ||
		    mlen < 1 + ((size_t)modules * (size_t)modules + 7) / 8) {
			snprintf(err, errlen, "a malformed stored code");
			return -EINVAL;
		}
	} else if (d->fmt == LAYOUT_ZPL) {
		/*
		 * The printer encodes the code (^BQ's automatic mode), perhaps all of it in byte
		 * mode where ours mixes modes: room for the larger, or a code of more modules
		 * than ours would run over the captions and off the label.
		 */
		modules = qr_image_modules_printer(qr_text, d->level);
	} else {
		size_t n;
		modules = qr_matrix_encode(qr_text, d->level, own, sizeof(own), &n);
		if (modules == 0)
			modules = own[0];
		matrix = own;
	}
	if (modules < 0) {
		snprintf(err, errlen, "the label text does not fit any QR code");
		return modules == -EMSGSIZE ? -EMSGSIZE : modules;
	}
	struct geometry g;
	int r = layout_place(l, modules, &g, err, errlen);
	char lines[CONFIG_MAX_CAPTIONS][CAPTION_MAX];
	for (int i = 0; i < CONFIG_MAX_CAPTIONS && r == 0; i++) {
		lines[i][0] = '\0';
		if (l->captions[i])
			r = caption_fit(l, &g, i, f, lines[i], sizeof(lines[i]), err, errlen);
	}
	if (r < 0)
		return r;
	if (d->fmt == LAYOUT_ZPL) {
		draw_zpl(d, &g, qr_text, lines, copies);
	} else if (d->fmt == LAYOUT_SVG) {
		draw_svg(d, &g, matrix, lines);
	} else if (d->fmt == LAYOUT_PNG) {
		r = draw_png(d, &g, matrix, lines);
	} else {
		unsigned pages = d->fmt == LAYOUT_PDF ? copies : 1;
		for (unsigned c = 0; c < pages && r == 0; c++) {
			r = draw_cairo(d, &g, matrix, lines);
			if (r == 0 && d->fmt == LAYOUT_PDF)
				cairo_show_page(d->cr);
		}
	}
	if (r == 0)
		r = d->err;
	if (r < 0) {
		snprintf(err, errlen, "cannot draw the label: %s", strerror(-r));
		return r;
	}
	d->labels++;
	return 0;
}

/* The label's pixel row y for png1 (PNG gray: 1 is white; the label's bits: 1 is dark). */
static void png_row(uint32_t y, uint8_t *row, void *arg)
{
	const struct layout_doc *d = arg;
	const uint8_t *src = d->bits + (size_t)y * d->rowbytes;
	for (size_t i = 0; i < d->rowbytes; i++)
		row[i] = (uint8_t)~src[i];
}

static int png_sink(const void *data, size_t len, void *arg)
{
	struct layout_doc *d = arg;
	doc_add(d, data, len);
	return d->err;
}

/*
 * The label's bits as a 1-bit grayscale PNG of the label's size, one pixel per printer
 * dot (what a thermal printer prints), its resolution in pHYs.
 */
static int png_write(struct layout_doc *d)
{
	const struct layout *l = d->l;
	struct png1 p = {.width = (uint32_t)l->width,
			 .height = (uint32_t)l->height,
			 .dpi = (unsigned)l->dpi,
			 .compact = d->compact};
	return png1_write(&p, png_row, png_sink, d);
}

int layout_doc_finish(struct layout_doc *d, uint8_t **ret_data, size_t *ret_len)
{
	int r = 0;
	if (d->fmt == LAYOUT_PNG) {
		if (d->labels)
			r = png_write(d);
	} else if (d->surface) {
		cairo_destroy(d->cr);
		d->cr = NULL;
		cairo_surface_finish(d->surface);
		if (cairo_surface_status(d->surface) != CAIRO_STATUS_SUCCESS)
			r = -ENOMEM;
	}
	if (r == 0 && !d->err)
		doc_add(d, "", 0); /* room for the NUL */
	if (r == 0)
		r = d->err;
	if (r == 0 && !d->labels)
		r = -ENODATA;
	if (r < 0) {
		layout_doc_free(d);
		return r;
	}
	d->data[d->len] = '\0';
	*ret_data = d->data;
	*ret_len = d->len;
	d->data = NULL;
	layout_doc_free(d);
	return 0;
}

int layout_render(const struct layout *l, enum layout_format fmt, const char *qr_text,
		  const struct caption_fields *f, uint8_t **ret_data, size_t *ret_len, char *err,
		  size_t errlen)
{
	struct layout_doc *d;
	int r = layout_doc_new(l, fmt, &d);
	if (r < 0) {
		snprintf(err, errlen, "out of memory");
		return r;
	}
	r = layout_doc_add(d, qr_text, f, 1, err, errlen);
	if (r < 0) {
		layout_doc_free(d);
		return r;
	}
	r = layout_doc_finish(d, ret_data, ret_len);
	if (r < 0)
		snprintf(err, errlen, "cannot finish the label: %s", strerror(-r));
	return r;
}

void layout_global_cleanup(void)
{
	cairo_debug_reset_static_data();
	FcFini();
}
