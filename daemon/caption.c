/* caption: check and render a label caption template. */
#include "caption.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

/* The field a template names between its braces, or NULL. */
static const char *field_value(const char *name, size_t len, const struct caption_fields *f,
			       bool *ret_known)
{
	static const char *const names[] = {"devEUI", "joinEUI", "serial"};
	const char *values[] = {f ? f->dev_eui : NULL, f ? f->join_eui : NULL,
				f ? f->serial : NULL};
	for (size_t i = 0; i < 3; i++)
		if (strlen(names[i]) == len && memcmp(names[i], name, len) == 0) {
			*ret_known = true;
			return values[i] ? values[i] : "";
		}
	*ret_known = false;
	return NULL;
}

/* Walk a template: check it and, when out is given, render it. */
static int caption_walk(const char *tmpl, const struct caption_fields *f, char *out, size_t outlen,
			char *why, size_t whylen)
{
	size_t o = 0;
	if (strlen(tmpl) > CAPTION_MAX / 2) {
		snprintf(why, whylen, "is longer than %d bytes", CAPTION_MAX / 2);
		return -EINVAL;
	}
	for (const char *p = tmpl; *p;) {
		const char *piece = p;
		size_t n = 1;
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(why, whylen, "has a control character");
			return -EINVAL;
		}
		if ((unsigned char)*p >= 0x80) {
			n = utf8_len((const unsigned char *)p, 4); /* p is NUL-terminated */
			if (!n) {
				snprintf(why, whylen, "is not valid UTF-8");
				return -EINVAL;
			}
			p += n;
		} else if (p[0] == '{' && p[1] == '{') {
			n = 1;
			p += 2;
		} else if (p[0] == '}' && p[1] == '}') {
			n = 1;
			p += 2;
		} else if (*p == '{') {
			const char *end = strchr(p, '}');
			if (!end) {
				snprintf(why, whylen, "has a '{' without its '}'");
				return -EINVAL;
			}
			bool known;
			piece = field_value(p + 1, (size_t)(end - p - 1), f, &known);
			if (!known) {
				snprintf(why, whylen,
					 "names an unknown field {%.*s} (known: {devEUI}, "
					 "{joinEUI}, {serial})",
					 (int)(end - p - 1 > 40 ? 40 : end - p - 1), p + 1);
				return -EINVAL;
			}
			n = strlen(piece);
			p = end + 1;
		} else if (*p == '}') {
			snprintf(why, whylen, "has a '}' without its '{' (write }} for a brace)");
			return -EINVAL;
		} else {
			p++;
		}
		if (!out)
			continue;
		if (n >= outlen - o)
			return -ENOBUFS;
		memcpy(out + o, piece, n);
		o += n;
	}
	if (out)
		out[o] = '\0';
	return 0;
}

int caption_check(const char *tmpl, char *why, size_t whylen)
{
	return caption_walk(tmpl, NULL, NULL, 0, why, whylen);
}

int caption_render(const char *tmpl, const struct caption_fields *f, char *out,
			  size_t outlen)
{
	char why[128];
	if (!out || !outlen)
		return -EINVAL;
	return caption_walk(tmpl, f, out, outlen, why, sizeof(why));
}
