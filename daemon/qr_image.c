/* qr_image: QR code images of a payload text — PNG, SVG, ZPL and terminal text. */
#include "qr_image.h"
#include "png1.h"

#include <errno.h>
#include <qrencode.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A growing output buffer; err is set once an append failed. */
struct qr_buf {
	uint8_t *data;
	size_t len, cap;
	int err;
};

static const char *const qr_format_names[] = {
    [QR_FORMAT_NONE] = "none", [QR_FORMAT_PNG] = "png",	  [QR_FORMAT_SVG] = "svg",
    [QR_FORMAT_ZPL] = "zpl",   [QR_FORMAT_TEXT] = "text", [QR_FORMAT_PDF] = "pdf",
};

static const char *const qr_format_exts[] = {
    [QR_FORMAT_NONE] = NULL, [QR_FORMAT_PNG] = "png",  [QR_FORMAT_SVG] = "svg",
    [QR_FORMAT_ZPL] = "zpl", [QR_FORMAT_TEXT] = "txt", [QR_FORMAT_PDF] = "pdf",
};

static const char *const qr_level_names[] = {
    [QR_EC_L] = "L",
    [QR_EC_M] = "M",
    [QR_EC_Q] = "Q",
    [QR_EC_H] = "H",
};

/* Make room for n more bytes (plus a NUL) in b. */
static int qr_buf_reserve(struct qr_buf *b, size_t n)
{
	if (b->err)
		return b->err;
	if (n < b->cap - b->len)
		return 0;
	size_t cap = b->cap ? b->cap : 1024;
	while (n >= cap - b->len) {
		if (cap > SIZE_MAX / 2)
			return b->err = -ENOMEM;
		cap *= 2;
	}
	uint8_t *data = realloc(b->data, cap);
	if (!data)
		return b->err = -ENOMEM;
	b->data = data;
	b->cap = cap;
	return 0;
}

/* Append n bytes to b. */
static void qr_buf_add(struct qr_buf *b, const void *p, size_t n)
{
	if (qr_buf_reserve(b, n) < 0)
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* Append a formatted string to b. */
__attribute__((format(printf, 2, 3))) static void qr_buf_printf(struct qr_buf *b, const char *fmt,
								...)
{
	va_list ap;
	for (int pass = 0; pass < 2; pass++) {
		if (b->err || (!b->cap && qr_buf_reserve(b, 0) < 0))
			return;
		va_start(ap, fmt);
		int r = vsnprintf((char *)b->data + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (r < 0) {
			b->err = -EINVAL;
			return;
		}
		if ((size_t)r < b->cap - b->len) {
			b->len += (size_t)r;
			return;
		}
		if (qr_buf_reserve(b, (size_t)r) < 0)
			return;
	}
}

/* Hand the buffer over NUL-terminated, or free it if something failed. */
static int qr_buf_finish(struct qr_buf *b, uint8_t **ret_data, size_t *ret_len)
{
	if (qr_buf_reserve(b, 0) < 0) {
		free(b->data);
		return b->err;
	}
	b->data[b->len] = '\0';
	*ret_data = b->data;
	*ret_len = b->len;
	return 0;
}

/* Fill *o with the default options. */
void qr_opts_default(struct qr_opts *o)
{
	*o = (struct qr_opts){
	    .format = QR_FORMAT_PNG,
	    .scale = QR_SCALE_DEFAULT,
	    .margin = QR_MARGIN_DEFAULT,
	    .level = QR_EC_M,
	    .caption = NULL,
	};
}

/* True if module (x, y) of code is dark. */
static inline bool qr_dark(const QRcode *code, int x, int y)
{
	return code->data[(size_t)y * (size_t)code->width + (size_t)x] & 1;
}

/* libqrencode's level for ours. */
static const QRecLevel qr_levels[] = {
    [QR_EC_L] = QR_ECLEVEL_L,
    [QR_EC_M] = QR_ECLEVEL_M,
    [QR_EC_Q] = QR_ECLEVEL_Q,
    [QR_EC_H] = QR_ECLEVEL_H,
};

/* Encode text at level with libqrencode. */
static int qr_encode(const char *text, enum qr_ec_level level, QRcode **ret)
{
	if (!text || !*text || (unsigned)level > QR_EC_H)
		return -EINVAL;
	errno = 0;
	QRcode *code = QRcode_encodeString(text, 0, qr_levels[level], QR_MODE_8, 1);
	if (!code) {
		if (errno == ERANGE)
			return -EMSGSIZE;
		return errno == EINVAL ? -EINVAL : -ENOMEM;
	}
	*ret = code;
	return 0;
}

/* What png1 needs to draw a code into a qr_buf. */
struct qr_png {
	const QRcode *code;
	const struct qr_opts *o;
	struct qr_buf *b;
};

/* The packed 1-bit pixel row y (white = 1) of the code with its quiet zone. */
static void qr_png_row(uint32_t y, uint8_t *row, void *arg)
{
	const struct qr_png *q = arg;
	const int scale = q->o->scale, margin = q->o->margin, width = q->code->width;
	memset(row, 0xff, ((size_t)(width + 2 * margin) * (size_t)scale + 7) / 8);
	int my = (int)(y / (uint32_t)scale) - margin;
	if (my < 0 || my >= width)
		return;
	for (int x = 0; x < width; x++) {
		if (!qr_dark(q->code, x, my))
			continue;
		size_t px = (size_t)(x + margin) * (size_t)scale;
		for (int k = 0; k < scale; k++, px++)
			row[px >> 3] &= (uint8_t) ~(0x80u >> (px & 7));
	}
}

static int qr_png_sink(const void *data, size_t len, void *arg)
{
	struct qr_png *q = arg;
	qr_buf_add(q->b, data, len);
	return q->b->err;
}

/* Render code as a 1-bit grayscale PNG into b. */
static int qr_render_png(const QRcode *code, const struct qr_opts *o, struct qr_buf *b)
{
	const uint32_t px = (uint32_t)(code->width + 2 * o->margin) * (uint32_t)o->scale;
	struct png1 p = {.width = px, .height = px, .compact = o->compact};
	struct qr_png q = {.code = code, .o = o, .b = b};
	return png1_write(&p, qr_png_row, qr_png_sink, &q);
}

/* Render code as an SVG document into b. */
static int qr_render_svg(const QRcode *code, const struct qr_opts *o, struct qr_buf *b)
{
	const int s = o->scale, m = o->margin;
	const int px = (code->width + 2 * m) * s;

	qr_buf_printf(b,
		      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
		      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%d\" "
		      "height=\"%d\" viewBox=\"0 0 %d %d\" shape-rendering=\"crispEdges\">\n"
		      "<rect width=\"%d\" height=\"%d\" fill=\"#fff\"/>\n"
		      "<path fill=\"#000\" d=\"",
		      px, px, px, px, px, px);
	/* One rectangle per horizontal run of dark modules. */
	for (int y = 0; y < code->width; y++) {
		for (int x = 0; x < code->width;) {
			if (!qr_dark(code, x, y)) {
				x++;
				continue;
			}
			int run = 1;
			while (x + run < code->width && qr_dark(code, x + run, y))
				run++;
			qr_buf_printf(b, "M%d %dh%dv%dh-%dz", (x + m) * s, (y + m) * s, run * s, s,
				      run * s);
			x += run;
		}
	}
	qr_buf_printf(b, "\"/>\n</svg>\n");
	return b->err;
}

/* True if ZPL field data must be sent through ^FH escapes for c. */
static bool qr_zpl_special(unsigned char c)
{
	return c == '^' || c == '~' || c == '_' || c < 0x20 || c == 0x7f;
}

/* Append a ZPL ^FD field with text, escaped with ^FH when it needs to be. */
static void qr_zpl_field(struct qr_buf *b, const char *prefix, const char *text)
{
	bool hex = false;
	for (const char *p = text; *p; p++)
		if (qr_zpl_special((unsigned char)*p))
			hex = true;
	qr_buf_printf(b, "%s^FD%s", hex ? "^FH_" : "", prefix);
	for (const char *p = text; *p; p++) {
		if (hex && qr_zpl_special((unsigned char)*p))
			qr_buf_printf(b, "_%02X", (unsigned char)*p);
		else
			qr_buf_add(b, p, 1);
	}
	qr_buf_printf(b, "^FS\n");
}

/* Render text as a ZPL label where the printer draws the code (code gives its size). */
static int qr_render_zpl(const QRcode *code, const char *text, const struct qr_opts *o,
			 struct qr_buf *b)
{
	const int mag = o->scale > QR_ZPL_MAG_MAX ? QR_ZPL_MAG_MAX : o->scale;
	const int origin = o->margin * mag;
	char prefix[4];

	snprintf(prefix, sizeof(prefix), "%sA,", qr_level_names[o->level]);
	qr_buf_printf(b, "^XA\n^CI28\n^FO%d,%d^BQN,2,%d", origin, origin, mag);
	qr_zpl_field(b, prefix, text);
	if (o->caption && *o->caption) {
		/* ^BQ draws the code about 10 dots below its ^FO origin. */
		const int font = mag * 5 < 20 ? 20 : mag * 5;
		const int y = origin + 10 + (code->width + 1) * mag;
		qr_buf_printf(b, "^FO%d,%d^A0N,%d,%d", origin, y, font, font);
		qr_zpl_field(b, "", o->caption);
	}
	qr_buf_printf(b, "^XZ\n");
	return b->err;
}

/* Render code as UTF-8 half blocks, two module rows per line, into b. */
static int qr_render_text(const QRcode *code, const struct qr_opts *o, struct qr_buf *b)
{
	static const char *const cells[4] = {" ", "\u2580", "\u2584", "\u2588"};
	const int m = o->margin, side = code->width + 2 * m;

	for (int y = 0; y < side; y += 2) {
		for (int x = 0; x < side; x++) {
			int cx = x - m, top = y - m, bottom = y + 1 - m;
			bool in_x = cx >= 0 && cx < code->width;
			int cell = 0;
			if (in_x && top >= 0 && top < code->width && qr_dark(code, cx, top))
				cell |= 1;
			if (in_x && bottom >= 0 && bottom < code->width &&
			    qr_dark(code, cx, bottom))
				cell |= 2;
			qr_buf_add(b, cells[cell], strlen(cells[cell]));
		}
		qr_buf_add(b, "\n", 1);
	}
	return b->err;
}

/* Check the options every renderer relies on. */
static int qr_opts_check(const struct qr_opts *o)
{
	if (!o || o->scale < QR_SCALE_MIN || o->scale > QR_SCALE_MAX || o->margin < 0 ||
	    o->margin > QR_MARGIN_MAX || (unsigned)o->level > QR_EC_H)
		return -EINVAL;
	if (o->format != QR_FORMAT_PNG && o->format != QR_FORMAT_SVG &&
	    o->format != QR_FORMAT_ZPL && o->format != QR_FORMAT_TEXT)
		return -EINVAL;
	return 0;
}

/* Draw an encoded code in o's format. */
static int qr_render_code(const QRcode *code, const char *text, const struct qr_opts *o,
			  uint8_t **ret_data, size_t *ret_len)
{
	struct qr_buf b = {0};
	int r;
	switch (o->format) {
	case QR_FORMAT_PNG:
		r = qr_render_png(code, o, &b);
		break;
	case QR_FORMAT_SVG:
		r = qr_render_svg(code, o, &b);
		break;
	case QR_FORMAT_ZPL:
		r = qr_render_zpl(code, text, o, &b);
		break;
	default:
		r = qr_render_text(code, o, &b);
		break;
	}
	if (r < 0) {
		free(b.data);
		return r;
	}
	return qr_buf_finish(&b, ret_data, ret_len);
}

/* Render text as o asks. */
int qr_image_render(const char *text, const struct qr_opts *o, uint8_t **ret_data, size_t *ret_len)
{
	if (!ret_data || !ret_len || qr_opts_check(o) < 0)
		return -EINVAL;
	QRcode *code;
	int r = qr_encode(text, o->level, &code);
	if (r < 0)
		return r;
	r = qr_render_code(code, text, o, ret_data, ret_len);
	QRcode_free(code);
	return r;
}

int qr_matrix_encode(const char *text, enum qr_ec_level level, uint8_t *out, size_t outlen,
		     size_t *ret_len)
{
	if (!out || !ret_len)
		return -EINVAL;
	QRcode *code;
	int r = qr_encode(text, level, &code);
	if (r < 0)
		return r;
	size_t w = (size_t)code->width, n = 1 + (w * w + 7) / 8;
	if (w > 255 || n > outlen) {
		QRcode_free(code);
		return -ENOBUFS;
	}
	memset(out, 0, n);
	out[0] = (uint8_t)w;
	for (size_t i = 0; i < w * w; i++)
		if (code->data[i] & 1)
			out[1 + i / 8] |= (uint8_t)(0x80u >> (i % 8));
	QRcode_free(code);
	*ret_len = n;
	return 0;
}

int qr_matrix_render(const uint8_t *m, size_t len, const char *text, const struct qr_opts *o,
		     uint8_t **ret_data, size_t *ret_len)
{
	if (!m || !len || !ret_data || !ret_len || qr_opts_check(o) < 0)
		return -EINVAL;
	size_t w = m[0];
	/* Versions 1 to 40: 21 to 177 modules, in steps of 4. */
	if (w < 21 || w > 177 || (w - 17) % 4 || len != 1 + (w * w + 7) / 8)
		return -EINVAL;
	QRcode code = {.version = (int)(w - 17) / 4, .width = (int)w, .data = malloc(w * w)};
	if (!code.data)
		return -ENOMEM;
	for (size_t i = 0; i < w * w; i++)
		code.data[i] = (m[1 + i / 8] >> (7 - i % 8)) & 1;
	int r = qr_render_code(&code, text, o, ret_data, ret_len);
	free(code.data);
	return r;
}

/* Number of modules per side of text's code at level. */
int qr_image_modules(const char *text, enum qr_ec_level level)
{
	QRcode *code;
	int r = qr_encode(text, level, &code);
	if (r < 0)
		return r;
	r = code->width;
	QRcode_free(code);
	return r;
}

int qr_image_modules_printer(const char *text, enum qr_ec_level level)
{
	int ours = qr_image_modules(text, level);
	if (ours < 0)
		return ours;
	/* Text of the alphanumeric set all in that mode, any other text all in byte mode:
	 * what an encoder that does not mix modes makes of it. */
	size_t n = strlen(text);
	bool alnum = n > 0;
	for (size_t i = 0; i < n && alnum; i++)
		alnum = strchr("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:", text[i]) != NULL;
	QRinput *in = QRinput_new2(0, qr_levels[level]);
	if (!in)
		return -ENOMEM;
	errno = 0;
	QRcode *code = NULL;
	if (QRinput_append(in, alnum ? QR_MODE_AN : QR_MODE_8, (int)n,
			   (const unsigned char *)text) == 0)
		code = QRcode_encodeInput(in);
	int e = errno;
	QRinput_free(in);
	if (!code)
		return e == ERANGE ? -EMSGSIZE : -ENOMEM;
	int whole = code->width;
	QRcode_free(code);
	return whole > ours ? whole : ours;
}

/* Parse a format name. */
int qr_format_from_string(const char *s, enum qr_format *ret)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(qr_format_names) / sizeof(qr_format_names[0]); i++)
		if (strcmp(s, qr_format_names[i]) == 0) {
			*ret = (enum qr_format)i;
			return 0;
		}
	return -EINVAL;
}

/* The name of a format. */
const char *qr_format_name(enum qr_format f)
{
	if ((unsigned)f >= sizeof(qr_format_names) / sizeof(qr_format_names[0]))
		return NULL;
	return qr_format_names[f];
}

/* The file name extension of a format. */
const char *qr_format_ext(enum qr_format f)
{
	if ((unsigned)f >= sizeof(qr_format_exts) / sizeof(qr_format_exts[0]))
		return NULL;
	return qr_format_exts[f];
}

/* Parse an error correction level letter. */
int qr_ec_level_from_string(const char *s, enum qr_ec_level *ret)
{
	if (!s)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(qr_level_names) / sizeof(qr_level_names[0]); i++)
		if (strcasecmp(s, qr_level_names[i]) == 0) {
			*ret = (enum qr_ec_level)i;
			return 0;
		}
	return -EINVAL;
}

/* The letter of an error correction level. */
const char *qr_ec_level_name(enum qr_ec_level level)
{
	if ((unsigned)level >= sizeof(qr_level_names) / sizeof(qr_level_names[0]))
		return NULL;
	return qr_level_names[level];
}
