/* label: a device record as the protocol shows it, its label text, and its QR image. */
#include "label.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "config.h"
#include "hex.h"
#include "layout.h"
#include "log.h"
#include "qr.h"
#include "store.h"

int label_text(const struct config *cfg, const struct store_record *r, char *out, size_t len)
{
	struct qr_fields f = {
	    .join_eui = r->join_eui,
	    .dev_eui = r->dev_eui,
	    .profile_id = r->profile_id,
	    .owner_token = r->owner_token[0] ? r->owner_token : NULL,
	    .serial = r->serial[0] ? r->serial : NULL,
	};
	if (cfg->qr_template)
		return qr_template_render(cfg->qr_template, &f, out, len);
	return qr_tr005(&f, out, len);
}

int label_text_to_issue(const struct config *cfg, const char *dev_eui, const char *join_eui,
			const char *serial, char *out, size_t len)
{
	static const char wide[] = "FFFFFFFFFFFFFFFF";
	struct store_record r = {.profile_id = "FFFFFFFF"};
	snprintf(r.dev_eui, sizeof(r.dev_eui), "%s", *dev_eui ? dev_eui : wide);
	snprintf(r.join_eui, sizeof(r.join_eui), "%s", *join_eui ? join_eui : wide);
	snprintf(r.serial, sizeof(r.serial), "%s", serial);
	memset(r.owner_token, 'F', LABEL_TOKEN_SAMPLE);
	return label_text(cfg, &r, out, len);
}

int label_opts(const struct config *cfg, const struct layout *layout, json_t *qr,
	       struct qr_opts *ret, bool *ret_want)
{
	struct qr_opts o;
	qr_opts_default(&o);
	o.scale = (int)cfg->qr_scale;
	o.margin = (int)cfg->qr_margin;
	o.level = cfg->qr_ec_level;
	o.layout = layout;
	/* The whole label unless the call (qr.label: false) or label.images = code says not. */
	json_t *whole = json_object_get(qr, "label");
	o.label = json_is_boolean(whole) ? json_is_true(whole)
					 : cfg->label.images == LABEL_IMAGES_WHOLE;
	*ret_want = false;
	if (!json_is_object(qr)) {
		*ret = o;
		return 0;
	}
	const char *format = json_string_value(json_object_get(qr, "format"));
	if (qr_format_from_string(format ? format : cfg->qr_format, &o.format) < 0)
		return -EINVAL;
	json_t *v;
	if ((v = json_object_get(qr, "scale")) && json_is_integer(v))
		o.scale = (int)json_integer_value(v);
	if ((v = json_object_get(qr, "margin")) && json_is_integer(v))
		o.margin = (int)json_integer_value(v);
	const char *ec = json_string_value(json_object_get(qr, "ecLevel"));
	if (ec && qr_ec_level_from_string(ec, &o.level) < 0)
		return -EINVAL;
	*ret = o;
	*ret_want = o.format != QR_FORMAT_NONE;
	return 0;
}

/* {format, data: base64} of image bytes; takes ownership of data. */
static json_t *image_json(enum qr_format format, uint8_t *data, size_t len, int *ret_err)
{
	size_t b64len;
	char *b64 = base64_encode(data, len, &b64len);
	free(data);
	if (!b64) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	json_t *j = json_pack("{s:s, s:s%}", "format", qr_format_name(format), "data", b64, b64len);
	free(b64);
	if (!j)
		*ret_err = -ENOMEM;
	return j;
}

json_t *label_image_json(const char *text, const struct qr_opts *o, int *ret_err)
{
	uint8_t *data;
	size_t len;
	int r = qr_image_render(text, o, &data, &len);
	if (r < 0) {
		*ret_err = r;
		return NULL;
	}
	return image_json(o->format, data, len, ret_err);
}

/* True if o asks for the whole label of its layout: ZPL, PDF always, PNG and SVG with label. */
static bool opts_whole(const struct qr_opts *o)
{
	return o->layout && (o->format == QR_FORMAT_ZPL || o->format == QR_FORMAT_PDF ||
			     (o->label && (o->format == QR_FORMAT_PNG || o->format == QR_FORMAT_SVG)));
}

/* The caption fields of a record. */
static struct caption_fields record_fields(const struct store_record *r)
{
	struct caption_fields f = {r->dev_eui, r->join_eui, r->serial[0] ? r->serial : NULL};
	return f;
}

/*
 * The cache key of an image. The bare code: format, scale, margin and level
 * ("png/4/4/M"). The whole label: format, the layout's fingerprint over r's captions,
 * level ("png+1a2b3c4d/M"), so a changed label.* or caption field never matches.
 */
static void image_key(const struct qr_opts *o, const struct store_record *r, char *out,
		      size_t len)
{
	if (opts_whole(o)) {
		struct caption_fields f = record_fields(r);
		snprintf(out, len, "%s+%08x/%s", qr_format_name(o->format),
			 (unsigned)layout_fingerprint(o->layout, &f), qr_ec_level_name(o->level));
		return;
	}
	snprintf(out, len, "%s/%d/%d/%s", qr_format_name(o->format), o->scale, o->margin,
		 qr_ec_level_name(o->level));
}

/* The options of the configured default label image; false if it is not cacheable. */
static bool default_opts(const struct config *cfg, const struct layout *layout,
			 struct qr_opts *ret)
{
	struct qr_opts o;
	qr_opts_default(&o);
	o.scale = (int)cfg->qr_scale;
	o.margin = (int)cfg->qr_margin;
	o.level = cfg->qr_ec_level;
	o.layout = layout;
	o.label = cfg->label.images == LABEL_IMAGES_WHOLE;
	if (qr_format_from_string(cfg->qr_format, &o.format) < 0 || o.format == QR_FORMAT_NONE ||
	    o.format == QR_FORMAT_ZPL || o.format == QR_FORMAT_PDF)
		return false;
	*ret = o;
	return true;
}

/*
 * The whole label of o->layout for r, captions included, at o->level: from matrix (a
 * code stored at that level) when given, else encoded now. Raw bytes into *ret_data.
 */
static int layout_image(const struct store_record *r, const char *text, const struct qr_opts *o,
			const uint8_t *matrix, size_t mlen, uint8_t **ret_data, size_t *ret_len)
{
	enum layout_format fmt = o->format == QR_FORMAT_ZPL   ? LAYOUT_ZPL
				 : o->format == QR_FORMAT_PDF ? LAYOUT_PDF
				 : o->format == QR_FORMAT_SVG ? LAYOUT_SVG
							      : LAYOUT_PNG;
	struct caption_fields f = record_fields(r);
	struct layout_doc *d;
	char err[256];
	int e = layout_doc_new(o->layout, fmt, &d);
	if (e < 0)
		return e;
	layout_doc_set_level(d, o->level);
	layout_doc_set_compact(d, o->compact);
	e = layout_doc_add_matrix(d, text, matrix, mlen, &f, 1, err, sizeof(err));
	if (e < 0) {
		log_warnx("label of %s: %s", r->dev_eui, err);
		layout_doc_free(d);
		return e;
	}
	return layout_doc_finish(d, ret_data, ret_len);
}

/* The image o asks for, drawn from l's matrix (at o->level) or from text. */
static int draw_image(const struct store_record *r, const char *text, const struct qr_opts *o,
		      const struct store_label *l, uint8_t **ret_data, size_t *ret_len)
{
	if (opts_whole(o))
		return layout_image(r, text, o, l ? l->matrix : NULL, l ? l->matrix_len : 0,
				    ret_data, ret_len);
	if (l)
		return qr_matrix_render(l->matrix, l->matrix_len, text, o, ret_data, ret_len);
	return qr_image_render(text, o, ret_data, ret_len);
}

/*
 * Fill l with text's QR code at the configured level (unless have_matrix: l holds it
 * already) and, for the configured default options, its image (compact: smallest PNG,
 * for pre-generation off the station path).
 */
static int label_fill(const struct config *cfg, const struct layout *layout,
		      const struct store_record *r, const char *text, struct store_label *l,
		      bool have_matrix, bool compact)
{
	int err = 0;
	if (!have_matrix) {
		snprintf(l->text, sizeof(l->text), "%s", text);
		l->ec = (int)cfg->qr_ec_level;
		err = qr_matrix_encode(text, cfg->qr_ec_level, l->matrix, sizeof(l->matrix),
				       &l->matrix_len);
	}
	struct qr_opts o;
	l->image_opts[0] = '\0';
	l->image_len = 0;
	if (err == 0 && default_opts(cfg, layout, &o)) {
		o.compact = compact;
		uint8_t *img;
		size_t len;
		if (draw_image(r, text, &o, l, &img, &len) == 0) {
			if (len <= sizeof(l->image)) {
				memcpy(l->image, img, len);
				l->image_len = len;
				image_key(&o, r, l->image_opts, sizeof(l->image_opts));
			}
			free(img);
		}
	}
	return err;
}

int label_precompute(const struct config *cfg, const struct layout *layout, struct store *store,
		     const struct store_record *r)
{
	char text[QR_TEXT_MAX];
	int err = label_text(cfg, r, text, sizeof(text));
	if (err < 0)
		return err;
	struct store_label *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	/* Made once before manufacturing, handed out many times: worth the smallest file. */
	err = label_fill(cfg, layout, r, text, l, false, true);
	if (err == 0)
		err = store_label_put(store, r->dev_eui, l);
	free(l);
	return err;
}

json_t *label_image_for(const struct config *cfg, struct store *store, const struct store_record *r,
			const char *text, const struct qr_opts *o, int *ret_err)
{
	uint8_t *data = NULL;
	size_t len = 0;
	int err;
	/*
	 * The printer encodes ZPL labels itself: nothing to reuse; a PDF is drawn whole by
	 * cairo. On PostgreSQL the cached label would cost a synchronous round trip on the
	 * loop: drawing it is cheaper.
	 */
	if (o->format == QR_FORMAT_ZPL || o->format == QR_FORMAT_PDF || !store ||
	    strcmp(store_backend_name(store), "postgresql") == 0) {
		err = draw_image(r, text, o, NULL, &data, &len);
		if (err < 0) {
			*ret_err = err;
			return NULL;
		}
		return image_json(o->format, data, len, ret_err);
	}
	struct store_label *l = malloc(sizeof(*l));
	if (!l) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	char key[sizeof(l->image_opts)], def_key[sizeof(l->image_opts)];
	image_key(o, r, key, sizeof(key));
	struct qr_opts def;
	bool is_default = default_opts(cfg, o->layout, &def);
	if (is_default) {
		image_key(&def, r, def_key, sizeof(def_key));
		is_default = strcmp(key, def_key) == 0;
	}
	json_t *j = NULL;
	/* Read with the row on the store's reader thread: nothing is read on the loop. */
	err = store_label_cached(store, r->dev_eui, l);
	bool hit = err == 0 && strcmp(l->text, text) == 0;
	err = 0;
	bool mine = (int)o->level == cfg->qr_ec_level && r->state == STORE_ISSUED;
	if (mine && (!hit || (is_default && strcmp(l->image_opts, key) != 0))) {
		/*
		 * Not made yet, stale, or its default image drawn with other options (an older
		 * layout, label.images changed): make it once and keep it for the next label.
		 */
		err = label_fill(cfg, o->layout, r, text, l, hit && l->ec == cfg->qr_ec_level,
				 false);
		if (err == 0)
			store_label_put(store, r->dev_eui, l);
		hit = err == 0;
	}
	if (hit && l->image_len && strcmp(l->image_opts, key) == 0) {
		/* Drawn already with these very options: hand out those bytes. */
		data = malloc(l->image_len);
		if (data) {
			memcpy(data, l->image, l->image_len);
			len = l->image_len;
		}
		err = data ? 0 : -ENOMEM;
	} else if (hit && l->ec == (int)o->level) {
		err = draw_image(r, text, o, l, &data, &len);
	} else if (err == 0) {
		err = draw_image(r, text, o, NULL, &data, &len);
	}
	free(l);
	if (err == 0)
		j = image_json(o->format, data, len, &err);
	if (!j)
		*ret_err = err;
	return j;
}

json_t *label_device_json(const struct config *cfg, const struct store_record *r,
			  const char *source, bool with_app_key)
{
	char text[QR_TEXT_MAX];
	json_t *d = json_pack("{s:s, s:s, s:s, s:s, s:s}", "devEUI", r->dev_eui, "joinEUI",
			      r->join_eui, "profileId", r->profile_id, "ownerToken", r->owner_token,
			      "state", store_state_name(r->state));
	if (!d)
		return NULL;
	if (r->serial[0])
		json_object_set_new(d, "serial", json_string(r->serial));
	if (r->tkm_info[0] && !with_app_key)
		json_object_set_new(d, "tkmInfo", json_string(r->tkm_info));
	if (with_app_key && r->has_app_key) {
		char hex[33];
		hex_encode(r->app_key, sizeof(r->app_key), hex);
		json_object_set_new(d, "appKey", json_string(hex));
		memset(hex, 0, sizeof(hex));
	}
	if (!with_app_key)
		json_object_set_new(d, "hasAppKey", json_boolean(r->has_app_key));
	if (r->owner_token[0] && label_text(cfg, r, text, sizeof(text)) == 0)
		json_object_set_new(d, "qrText", json_string(text));
	else
		json_object_set_new(d, "qrText", json_string(""));
	if (source)
		json_object_set_new(d, "source", json_string(source));
	return d;
}
