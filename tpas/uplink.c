/* uplink: one DevEUI_uplink (its fields checked as they are taken, its radio fields), and
 * the tunnel's query string, Token and Time. */
#include "uplink.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ascrypto.h"
#include "clock.h"
#include "cred.h"
#include "hex.h"
#include "message.h"
#include "text.h"
#include "uplink_fields.h"
#include "wipe.h"

/* The fields tpas reads; every other one is passed on to applications in radio. */
#define FIELD(name)                                                                                \
	{                                                                                          \
		name, sizeof(name) - 1                                                             \
	}
static const struct {
	const char *name;
	size_t len;
} read_fields[] = {
    FIELD("DevEUI"),  FIELD("FPort"),	   FIELD("FCntUp"), FIELD("FCntDn"),  FIELD("payload_hex"),
    FIELD("DevAddr"), FIELD("CustomerID"), FIELD("Time"),   FIELD("AppSKey"),
};
#undef FIELD

int uplink_fail(char *reason, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, n, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* Parse a whole decimal number of at most 10 digits in 0..max. */
static bool parse_uint(const char *s, uint64_t max, uint64_t *ret)
{
	size_t n = strlen(s);
	if (n == 0 || n > 10)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v > max)
		return false;
	*ret = v;
	return true;
}

/* Take one field of the uplink by name; value is its text. 1 if taken, 0 if not ours. */
int uplink_field_set(struct uplink *u, const char *name, const char *value, char *reason, size_t rn)
{
	uint64_t v;
	size_t len = strlen(value);
	if (strcmp(name, "DevEUI") == 0) {
		if (!hex_valid(value, 16))
			return uplink_fail(reason, rn, "DevEUI must be 16 hexadecimal digits");
		hex_upper(u->dev_eui, value, 16);
		memcpy(u->dev_eui_raw, value, 17);
	} else if (strcmp(name, "FPort") == 0) {
		if (!parse_uint(value, 255, &v) || len > 3)
			return uplink_fail(reason, rn, "FPort must be a number from 0 to 255");
		u->fport = (int)v;
		text_copy(u->fport_s, sizeof(u->fport_s), value);
	} else if (strcmp(name, "FCntUp") == 0) {
		if (!parse_uint(value, UINT32_MAX, &v))
			return uplink_fail(reason, rn, "FCntUp must be a 32-bit counter");
		u->fcnt_up = (uint32_t)v;
		text_copy(u->fcnt_up_s, sizeof(u->fcnt_up_s), value);
	} else if (strcmp(name, "FCntDn") == 0) {
		if (!parse_uint(value, UINT32_MAX, &v))
			return uplink_fail(reason, rn, "FCntDn must be a 32-bit counter");
		u->fcnt_dn = (uint32_t)v;
		u->has_fcnt_dn = true;
	} else if (strcmp(name, "payload_hex") == 0) {
		if (len % 2 || len > 2 * AS_MAX_FRM_PAYLOAD || (len && !hex_valid_any(value)))
			return uplink_fail(
			    reason, rn,
			    "payload_hex must be an even number of hexadecimal digits, "
			    "at most %d",
			    2 * AS_MAX_FRM_PAYLOAD);
		memcpy(u->payload_hex, value, len + 1);
	} else if (strcmp(name, "DevAddr") == 0) {
		if (!hex_valid(value, 8))
			return uplink_fail(reason, rn, "DevAddr must be 8 hexadecimal digits");
		hex_upper(u->dev_addr, value, 8);
		uint8_t a[4];
		hex_decode(u->dev_addr, a, sizeof(a));
		u->dev_addr_n =
		    (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
	} else if (strcmp(name, "CustomerID") == 0) {
		if (len > UPLINK_MAX_CUSTOMER || !proto_plain_text(value))
			return uplink_fail(reason, rn,
					   "CustomerID must be at most %d printable characters",
					   UPLINK_MAX_CUSTOMER);
		memcpy(u->customer_id, value, len + 1);
	} else if (strcmp(name, "Time") == 0) {
		int64_t ms;
		if (len > UPLINK_MAX_TIME || uplink_time_parse(value, &ms) < 0)
			return uplink_fail(reason, rn, "Time is not a date and time");
		memcpy(u->time, value, len + 1);
	} else if (strcmp(name, "AppSKey") == 0) {
		if (!hex_valid(value, 32))
			return uplink_fail(reason, rn, "AppSKey must be 32 hexadecimal digits");
		memcpy(u->key_hex, value, 33);
		u->key_kind = UPLINK_KEY_BLOCK;
	} else {
		return 0;
	}
	return 1;
}

/* Take a KeyEnvelope's two parts. */
int uplink_envelope_set(struct uplink *u, const char *label, const char *aes_key, char *reason,
			size_t rn)
{
	if (!label || !aes_key)
		return uplink_fail(reason, rn, "AppSKey envelope needs KEKLabel and AESKey");
	if (!hex_valid(aes_key, 48) && !hex_valid(aes_key, 32))
		return uplink_fail(reason, rn, "AppSKey.AESKey must be 48 hexadecimal digits");
	if (strlen(label) > UPLINK_MAX_LABEL || !proto_plain_text(label))
		return uplink_fail(reason, rn,
				   "AppSKey.KEKLabel must be at most %d printable characters",
				   UPLINK_MAX_LABEL);
	text_copy(u->key_hex, sizeof(u->key_hex), aes_key);
	text_copy(u->kek_label, sizeof(u->kek_label), label);
	/* An empty label means "not wrapped" in TS002: the key is then one plain block. */
	u->key_kind = label[0] ? UPLINK_KEY_ENVELOPE : UPLINK_KEY_BLOCK;
	if (u->key_kind == UPLINK_KEY_ENVELOPE && strlen(aes_key) != 48)
		return uplink_fail(reason, rn, "AppSKey.AESKey must be 48 hexadecimal digits");
	if (u->key_kind == UPLINK_KEY_BLOCK && strlen(aes_key) != 32)
		return uplink_fail(reason, rn, "AppSKey.AESKey must be 32 hexadecimal digits");
	return 0;
}

/* True if tpas reads the field called name (so it is not in radio). */
bool uplink_field_read(const char *name, size_t len)
{
	for (size_t i = 0; i < sizeof(read_fields) / sizeof(read_fields[0]); i++)
		if (read_fields[i].len == len && memcmp(read_fields[i].name, name, len) == 0)
			return true;
	return false;
}

/* The checks common to both syntaxes, once every field is in. */
int uplink_fields_check(const struct uplink *u, char *reason, size_t rn)
{
	if (!u->dev_eui[0])
		return uplink_fail(reason, rn, "DevEUI is missing");
	if (!u->fcnt_up_s[0])
		return uplink_fail(reason, rn, "FCntUp is missing");
	if (u->payload_hex[0] && u->fport < 0)
		return uplink_fail(reason, rn, "FPort is missing");
	if (u->payload_hex[0] && u->fport > 0 && !u->dev_addr[0])
		return uplink_fail(reason, rn, "DevAddr is missing");
	return 0;
}

char *uplink_radio_take(struct uplink *u)
{
	char *text = u->radio_text;
	u->radio_text = NULL;
	return text ? text : wipe_json_dumps(u->radio, PROTO_JSON_FLAGS);
}

void uplink_clear(struct uplink *u)
{
	if (!u)
		return;
	json_decref(u->radio);
	u->radio = NULL;
	free(u->radio_text);
	u->radio_text = NULL;
	cred_wipe(u->key_hex, sizeof(u->key_hex));
}

/* Percent-decode a query value (with '+' as a space) into out; false if it does not fit. */
/*
 * Percent-decode a query value of n bytes into out: 0, -E2BIG when it does not fit, or
 * -EINVAL for a %00, which C strings would end there (a Time read short).
 */
static int query_decode(const char *s, size_t n, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
			   isxdigit((unsigned char)s[i + 2])) {
			char h[3] = {s[i + 1], s[i + 2], 0};
			c = (char)strtol(h, NULL, 16);
			i += 2;
			if (!c)
				return -EINVAL;
		}
		if (o + 1 >= outlen)
			return -E2BIG;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

/* Decode a query value into out: 0, or -EINVAL with the reason (uplink_fail). */
static int query_value(const char *name, const char *val, size_t vlen, char *out, size_t outlen,
		       char *reason, size_t reasonlen)
{
	int r = query_decode(val, vlen, out, outlen);
	if (r == -EINVAL)
		return uplink_fail(reason, reasonlen, "%s holds %%00", name);
	if (r < 0)
		return uplink_fail(reason, reasonlen, "%s is too long", name);
	return 0;
}

int uplink_query_parse(const char *query, struct uplink_query *ret, char *reason, size_t reasonlen)
{
	memset(ret, 0, sizeof(*ret));
	if (!query)
		return uplink_fail(reason, reasonlen, "no query string (Token is missing)");
	size_t qlen = strlen(query);
	if (qlen > UPLINK_MAX_QUERY)
		return uplink_fail(reason, reasonlen, "query string longer than %d bytes",
				   UPLINK_MAX_QUERY);
	const char *tok = NULL;
	for (const char *p = query; p && *p;) {
		const char *end = strchr(p, '&');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		size_t klen = eq ? (size_t)(eq - p) : n;
		const char *val = eq ? eq + 1 : p + n;
		size_t vlen = eq ? n - klen - 1 : 0;
		if (tok)
			/* The Token signs what comes before it: anything after would be taken
			 * unsigned (a fresh Time on a replayed uplink). The LRC puts it last. */
			return uplink_fail(reason, reasonlen,
					   "parameters after Token are not signed");
		if (klen == 5 && memcmp(p, "Token", 5) == 0) {
			tok = p;
			if (vlen != AS_TOKEN_HEX)
				return uplink_fail(reason, reasonlen,
						   "Token must be 64 hexadecimal digits");
			memcpy(ret->token, val, vlen);
			ret->token[vlen] = '\0';
			if (!hex_valid(ret->token, AS_TOKEN_HEX))
				return uplink_fail(reason, reasonlen,
						   "Token must be 64 hexadecimal digits");
		} else if (klen == 4 && memcmp(p, "Time", 4) == 0) {
			if (query_value("Time", val, vlen, ret->time, sizeof(ret->time), reason,
					reasonlen) < 0)
				return -EINVAL;
		} else if (klen == 5 && memcmp(p, "AS_ID", 5) == 0) {
			if (query_value("AS_ID", val, vlen, ret->as_id, sizeof(ret->as_id), reason,
					reasonlen) < 0)
				return -EINVAL;
		}
		p = end ? end + 1 : NULL;
	}
	if (!tok)
		return uplink_fail(reason, reasonlen, "Token is missing");
	/* What is signed: everything before "&Token=" as received. */
	size_t sp = (size_t)(tok - query);
	if (sp > 0)
		sp--;
	memcpy(ret->signed_part, query, sp);
	ret->signed_part[sp] = '\0';
	return 0;
}

void uplink_token(const struct uplink *u, const char *signed_query, const char *key_hex,
		  char out[65])
{
	const char *parts[] = {u->customer_id, u->dev_eui_raw[0] ? u->dev_eui_raw : u->dev_eui,
			       u->fport_s,     u->fcnt_up_s,
			       u->payload_hex, signed_query,
			       key_hex};
	ascrypto_token(parts, sizeof(parts) / sizeof(parts[0]), out);
}

/* Read exactly n digits at *p into *ret and advance. */
static bool digits(const char **p, int n, int *ret)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		char c = (*p)[i];
		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*ret = v;
	return true;
}

/* The days of month m (1-12) of year y in the proleptic Gregorian calendar. */
static int month_days(int y, int m)
{
	static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
	return m == 2 && leap ? 29 : days[m - 1];
}

int uplink_time_parse(const char *s, int64_t *ret_ms)
{
	int Y, M, D, h, m, sec, ms = 0;
	const char *p = s;
	if (!s || !digits(&p, 4, &Y) || *p++ != '-' || !digits(&p, 2, &M) || *p++ != '-' ||
	    !digits(&p, 2, &D) || (*p != 'T' && *p != 't' && *p != ' '))
		return -EINVAL;
	p++;
	if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &m) || *p++ != ':' ||
	    !digits(&p, 2, &sec))
		return -EINVAL;
	/* Refused, not carried into the next month: 2026-02-30 is no date, and read as 2 March
	 * it would be refused as a stale Time, which says the clocks differ. Second 60 is a
	 * leap second's (RFC 3339 5.7), read as the next minute's start. */
	if (M < 1 || M > 12 || D < 1 || D > month_days(Y, M) || h > 23 || m > 59 || sec > 60)
		return -EINVAL;
	if (*p == '.') {
		p++;
		int n = 0, scale = 100;
		while (*p >= '0' && *p <= '9' && n < 9) {
			ms += (*p - '0') * scale;
			scale /= 10;
			p++;
			n++;
		}
		if (n == 0)
			return -EINVAL;
	}
	int off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-' || *p == ' ') {
		int sign = *p == '-' ? -1 : 1, oh, om;
		p++;
		if (!digits(&p, 2, &oh) || oh > 23)
			return -EINVAL;
		if (*p == ':')
			p++;
		if (!digits(&p, 2, &om) || om > 59)
			return -EINVAL;
		off = sign * (oh * 60 + om);
	}
	if (*p)
		return -EINVAL;
	int64_t days = clock_days_from_civil(Y, M, D);
	*ret_ms = ((days * 86400 + h * 3600 + m * 60 + sec) - (int64_t)off * 60) * 1000 + ms;
	return 0;
}

/* n as exactly width decimal digits (n < 10^width) at p; returns the end. */
static char *put_digits(char *p, int64_t n, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		p[i] = (char)('0' + n % 10);
		n /= 10;
	}
	return p + width;
}

void uplink_time_format(int64_t ms, char *out, size_t outlen)
{
	int64_t secs = ms >= 0 ? ms / 1000 : (ms - 999) / 1000, frac = ms - secs * 1000;
	int64_t days = secs >= 0 ? secs / 86400 : (secs - 86399) / 86400, sod = secs - days * 86400;
	int64_t y;
	int m, d;
	clock_civil_from_days(days, &y, &m, &d); /* not gmtime_r: every uplink, on the writer */
	char buf[40], *p = buf;
	if (y < 0 || y > 9999) { /* never a clock's, but said as it is */
		snprintf(out, outlen, "%" PRId64 "-%02d-%02dT%02d:%02d:%02d.%03d+00:00", y, m, d,
			 (int)(sod / 3600), (int)(sod / 60 % 60), (int)(sod % 60), (int)frac);
		return;
	}
	p = put_digits(p, y, 4);
	*p++ = '-';
	p = put_digits(p, m, 2);
	*p++ = '-';
	p = put_digits(p, d, 2);
	*p++ = 'T';
	p = put_digits(p, sod / 3600, 2);
	*p++ = ':';
	p = put_digits(p, sod / 60 % 60, 2);
	*p++ = ':';
	p = put_digits(p, sod % 60, 2);
	*p++ = '.';
	p = put_digits(p, frac, 3);
	memcpy(p, "+00:00", 7);
	size_t n = (size_t)(p - buf) + 6;
	if (outlen == 0)
		return;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, buf, n);
	out[n] = '\0';
}
