/* label: a device record as the protocol shows it, its label text, and its QR image. */
#include "label.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base64.h"
#include "config.h"
#include "hex.h"
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

int label_opts(const struct config *cfg, json_t *qr, struct qr_opts *ret, bool *ret_want)
{
	struct qr_opts o;
	qr_opts_default(&o);
	o.scale = (int)cfg->qr_scale;
	o.margin = (int)cfg->qr_margin;
	o.level = cfg->qr_ec_level;
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

json_t *label_image_json(const char *text, const struct qr_opts *o, int *ret_err)
{
	uint8_t *data;
	size_t len, b64len;
	int r = qr_image_render(text, o, &data, &len);
	if (r < 0) {
		*ret_err = r;
		return NULL;
	}
	char *b64 = base64_encode(data, len, &b64len);
	free(data);
	if (!b64) {
		*ret_err = -ENOMEM;
		return NULL;
	}
	json_t *j =
	    json_pack("{s:s, s:s%}", "format", qr_format_name(o->format), "data", b64, b64len);
	free(b64);
	if (!j)
		*ret_err = -ENOMEM;
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
