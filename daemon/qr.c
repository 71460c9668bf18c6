/* qr: the label payload — LoRa Alliance TR005 text, its CRC, and manufacturer templates. */
#include "qr.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "utf8.h"

#define QR_PROFILE_NONE "00000000"

/* The fields of a label, checked and in the form they are printed. */
struct qr_norm {
	char join_eui[HEX_EUI + 1];
	char dev_eui[HEX_EUI + 1];
	char profile_id[HEX_PROFILE + 1];
	char owner_token[QR_TOKEN_MAX + 1];
	char serial[QR_SERIAL_MAX + 1];
	char proprietary[QR_PROPRIETARY_MAX + 1];
};

/* The template placeholders and the longest value each can take. */
static const struct {
	const char *name;
	size_t max;
} qr_placeholders[] = {
    {"devEUI", HEX_EUI},	  {"joinEUI", HEX_EUI},	     {"profileId", HEX_PROFILE},
    {"ownerToken", QR_TOKEN_MAX}, {"serial", QR_SERIAL_MAX},
};

/* CRC-16/MODBUS of len bytes. */
uint16_t qr_crc16(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint16_t crc = 0xffff;
	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		for (int b = 0; b < 8; b++)
			crc = (crc & 1) ? (uint16_t)((crc >> 1) ^ 0xa001) : (uint16_t)(crc >> 1);
	}
	return crc;
}

/* True if c may appear in a serial or proprietary value (upper-case form). */
static bool qr_text_char_upper(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c && strchr("$%*+-./", c));
}

/* True if s is 1..max characters of the serial set, lower-case letters included. */
static bool qr_text_valid(const char *s, size_t max)
{
	if (!s || !*s)
		return false;
	size_t n = 0;
	for (; s[n]; n++) {
		if (n >= max)
			return false;
		if (!qr_text_char_upper(s[n]) && !(s[n] >= 'a' && s[n] <= 'z'))
			return false;
	}
	return true;
}

/* True if s is a serial value qr accepts. */
bool qr_serial_valid(const char *s)
{
	return qr_text_valid(s, QR_SERIAL_MAX);
}

/* Copy an optional text field to dst (size max + 1), upper-cased if upcase. */
static int qr_norm_text(char *dst, const char *src, size_t max, bool upcase)
{
	dst[0] = '\0';
	if (!src || !*src)
		return 0;
	if (!qr_text_valid(src, max))
		return -EINVAL;
	size_t i = 0;
	for (; src[i]; i++)
		dst[i] = (upcase && src[i] >= 'a' && src[i] <= 'z') ? (char)(src[i] - 'a' + 'A')
								    : src[i];
	dst[i] = '\0';
	return 0;
}

/* Check the fields of f and store their printed form in *n. */
static int qr_normalize(const struct qr_fields *f, struct qr_norm *n, bool upcase_text)
{
	if (!f || !hex_valid(f->join_eui, HEX_EUI) || !hex_valid(f->dev_eui, HEX_EUI))
		return -EINVAL;
	hex_upper(n->join_eui, f->join_eui, HEX_EUI);
	hex_upper(n->dev_eui, f->dev_eui, HEX_EUI);

	const char *profile = f->profile_id ? f->profile_id : QR_PROFILE_NONE;
	if (!hex_valid(profile, HEX_PROFILE))
		return -EINVAL;
	hex_upper(n->profile_id, profile, HEX_PROFILE);

	n->owner_token[0] = '\0';
	if (f->owner_token && *f->owner_token) {
		size_t len = strlen(f->owner_token);
		if (len > QR_TOKEN_MAX || !hex_valid(f->owner_token, len))
			return -EINVAL;
		hex_upper(n->owner_token, f->owner_token, len);
	}

	if (qr_norm_text(n->serial, f->serial, QR_SERIAL_MAX, upcase_text) < 0 ||
	    qr_norm_text(n->proprietary, f->proprietary, QR_PROPRIETARY_MAX, upcase_text) < 0)
		return -EINVAL;
	return 0;
}

/* Append a formatted string to out at *pos; -ENOBUFS if it does not fit. */
__attribute__((format(printf, 4, 5))) static int qr_append(char *out, size_t outlen, size_t *pos,
							   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = vsnprintf(out + *pos, outlen - *pos, fmt, ap);
	va_end(ap);
	if (r < 0 || (size_t)r >= outlen - *pos)
		return -ENOBUFS;
	*pos += (size_t)r;
	return 0;
}

/* Write the TR005 text of f to out. */
int qr_tr005(const struct qr_fields *f, char *out, size_t outlen)
{
	struct qr_norm n;
	int r = qr_normalize(f, &n, true);
	if (r < 0)
		return r;
	if (!out || outlen == 0)
		return -ENOBUFS;

	size_t pos = 0;
	r = qr_append(out, outlen, &pos, "LW:D0:%s:%s:%s", n.join_eui, n.dev_eui, n.profile_id);
	if (r == 0 && n.owner_token[0])
		r = qr_append(out, outlen, &pos, ":O%s", n.owner_token);
	if (r == 0 && n.serial[0])
		r = qr_append(out, outlen, &pos, ":S%s", n.serial);
	if (r == 0 && n.proprietary[0])
		r = qr_append(out, outlen, &pos, ":P%s", n.proprietary);
	if (r == 0)
		r = qr_append(out, outlen, &pos, ":C%04X", qr_crc16(out, pos));
	return r;
}

/* Value of placeholder i in n. */
static const char *qr_placeholder_value(const struct qr_norm *n, size_t i)
{
	switch (i) {
	case 0:
		return n->dev_eui;
	case 1:
		return n->join_eui;
	case 2:
		return n->profile_id;
	case 3:
		return n->owner_token;
	default:
		return n->serial;
	}
}

/* Write a one-line reason to err if there is room for it; always returns -EINVAL. */
__attribute__((format(printf, 3, 4))) static int qr_fail(char *err, size_t errlen, const char *fmt,
							 ...)
{
	if (err && errlen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

/*
 * Walk a template: with n NULL only check it (and its longest rendering); otherwise also
 * write the rendering to out.
 */
static int qr_template_walk(const char *tmpl, const struct qr_norm *n, char *out, size_t outlen,
			    char *err, size_t errlen)
{
	if (!tmpl || !*tmpl)
		return qr_fail(err, errlen, "template is empty");
	size_t len = strlen(tmpl);
	if (len > QR_TEMPLATE_MAX)
		return qr_fail(err, errlen, "template is longer than %d bytes", QR_TEMPLATE_MAX);

	size_t worst = 0, pos = 0;
	for (size_t i = 0; i < len;) {
		const unsigned char c = (unsigned char)tmpl[i];
		const char *piece = tmpl + i; /* what this step writes */
		size_t piece_len = 1;	      /* its length */
		size_t piece_max = 1;	      /* the most it can ever write */
		size_t step = 1;	      /* template bytes consumed */

		if (c == '{' && tmpl[i + 1] == '{') {
			step = 2;
		} else if (c == '}') {
			if (tmpl[i + 1] != '}')
				return qr_fail(err, errlen, "lone '}' at offset %zu (write '}}')",
					       i);
			step = 2;
		} else if (c == '{') {
			const size_t count = sizeof(qr_placeholders) / sizeof(qr_placeholders[0]);
			const char *end = strchr(tmpl + i + 1, '}');
			size_t name_len = end ? (size_t)(end - tmpl - i - 1) : 0;
			size_t k = 0;
			for (; end && k < count; k++)
				if (strlen(qr_placeholders[k].name) == name_len &&
				    memcmp(qr_placeholders[k].name, tmpl + i + 1, name_len) == 0)
					break;
			if (!end)
				return qr_fail(err, errlen,
					       "the '{' at offset %zu has no '}' (write '{{' for a "
					       "brace)",
					       i);
			if (k == count)
				return qr_fail(err, errlen,
					       "unknown placeholder at offset %zu (known: {devEUI} "
					       "{joinEUI} {profileId} {ownerToken} {serial}; "
					       "write '{{' for a brace)",
					       i);
			step = name_len + 2;
			piece_max = qr_placeholders[k].max;
			piece = n ? qr_placeholder_value(n, k) : "";
			piece_len = strlen(piece);
		} else if (c < 0x20 || c == 0x7f) {
			return qr_fail(err, errlen, "control character at offset %zu", i);
		} else {
			step = piece_len = piece_max = utf8_len((const unsigned char *)piece, 4);
			if (step == 0)
				return qr_fail(err, errlen, "invalid UTF-8 at offset %zu", i);
		}
		worst += piece_max;

		if (n) {
			if (piece_len >= outlen - pos)
				return -ENOBUFS;
			memcpy(out + pos, piece, piece_len);
			pos += piece_len;
		}
		i += step;
	}
	if (worst >= QR_TEXT_MAX)
		return qr_fail(err, errlen, "template can render to more than %d bytes",
			       QR_TEXT_MAX - 1);
	if (n)
		out[pos] = '\0';
	return 0;
}

/* Validate a template at configuration time. */
int qr_template_check(const char *tmpl, char *err, size_t errlen)
{
	return qr_template_walk(tmpl, NULL, NULL, 0, err, errlen);
}

/* Render a template with the fields of f. */
int qr_template_render(const char *tmpl, const struct qr_fields *f, char *out, size_t outlen)
{
	struct qr_norm n;
	int r = qr_normalize(f, &n, false);
	if (r < 0)
		return r;
	/* Check first, so a bad template is -EINVAL even where it overflows out. */
	r = qr_template_walk(tmpl, NULL, NULL, 0, NULL, 0);
	if (r < 0)
		return r;
	if (!out || outlen == 0)
		return -ENOBUFS;
	return qr_template_walk(tmpl, &n, out, outlen, NULL, 0);
}

/* Copy the n characters at s to dst (size n + 1) and NUL-terminate it. */
static void qr_copy(char *dst, const char *s, size_t n)
{
	memcpy(dst, s, n);
	dst[n] = '\0';
}

/* True if the n characters at s are upper-case hex digits. */
static bool qr_upper_hex_n(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	return true;
}

/* Parse and verify a TR005 text. */
int qr_tr005_parse(const char *text, struct qr_parsed *ret)
{
	static const char preface[] = "LW:D0:";
	const size_t pre = sizeof(preface) - 1;
	/* preface, JoinEUI ':' DevEUI ':' ProfileID, ":C" and 4 digits */
	const size_t min_len = pre + HEX_EUI + 1 + HEX_EUI + 1 + HEX_PROFILE + 6;

	if (!text || !ret)
		return -EINVAL;
	size_t len = strnlen(text, QR_TEXT_MAX);
	if (len >= QR_TEXT_MAX || len < min_len || memcmp(text, preface, pre) != 0)
		return -EINVAL;

	struct qr_parsed p;
	memset(&p, 0, sizeof(p));
	const char *s = text + pre;
	if (!qr_upper_hex_n(s, HEX_EUI) || s[HEX_EUI] != ':')
		return -EINVAL;
	qr_copy(p.join_eui, s, HEX_EUI);
	s += HEX_EUI + 1;
	if (!qr_upper_hex_n(s, HEX_EUI) || s[HEX_EUI] != ':')
		return -EINVAL;
	qr_copy(p.dev_eui, s, HEX_EUI);
	s += HEX_EUI + 1;
	if (!qr_upper_hex_n(s, HEX_PROFILE))
		return -EINVAL;
	qr_copy(p.profile_id, s, HEX_PROFILE);
	s += HEX_PROFILE;

	/* The checksum field is last: ":C" and exactly 4 upper-case hex digits. */
	const char *crc_field = text + len - 6;
	if (crc_field < s || crc_field[0] != ':' || crc_field[1] != 'C' ||
	    !qr_upper_hex_n(crc_field + 2, 4))
		return -EINVAL;

	/* Optional fields between the ProfileID and the checksum, in order O, S, P. */
	const char order[] = "OSP";
	size_t next = 0;
	while (s < crc_field) {
		if (*s != ':')
			return -EINVAL;
		const char *value = s + 2;
		const char *end = memchr(value, ':', (size_t)(crc_field - value) + 1);
		if (value > crc_field || !end)
			return -EINVAL;
		size_t vlen = (size_t)(end - value);
		const char *letter = memchr(order + next, s[1], sizeof(order) - 1 - next);
		if (!letter || vlen == 0)
			return -EINVAL;
		next = (size_t)(letter - order) + 1;
		switch (*letter) {
		case 'O':
			if (vlen > QR_TOKEN_MAX || !qr_upper_hex_n(value, vlen))
				return -EINVAL;
			qr_copy(p.owner_token, value, vlen);
			break;
		case 'S':
		case 'P': {
			char *dst = *letter == 'S' ? p.serial : p.proprietary;
			if (vlen > (*letter == 'S' ? QR_SERIAL_MAX : QR_PROPRIETARY_MAX))
				return -EINVAL;
			for (size_t i = 0; i < vlen; i++)
				if (!qr_text_char_upper(value[i]))
					return -EINVAL;
			qr_copy(dst, value, vlen);
			break;
		}
		}
		s = end;
	}

	for (size_t i = 2; i < 6; i++) {
		char d = crc_field[i];
		p.crc = (uint16_t)(p.crc << 4 | (d <= '9' ? d - '0' : d - 'A' + 10));
	}
	if (qr_crc16(text, (size_t)(crc_field - text)) != p.crc)
		return -EBADMSG;
	*ret = p;
	return 0;
}
