/* tpa: the ThingPark Activation API profile (import, query, delete, OAuth2) over the session pool. */
#include "tpa.h"
#include "clock.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "config.h"
#include "cred.h"
#include "hex.h"
#include "http.h"
#include "log.h"
#include "redact.h"
#include "wipe.h"
#include "utf8.h"

#include <mbedtls/base64.h>

#define LATENCY_RING 512
#define SECRET_MAX 512
#define TARGET_MAX 1024

static const uint32_t bucket_le[TPA_LATENCY_BUCKETS] = {
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, UINT32_MAX,
};

enum call_kind {
	CALL_IMPORT,
	CALL_QUERY,
	CALL_DELETE,
	CALL_KEYGEN,
};

#define QUERY_MAX_PAGES 1000
#define API_HOLD_MAX_S 300 /* the longest a Retry-After holds calls */

struct tpa_call {
	struct tpa *t;
	TAILQ_ENTRY(tpa_call) link;	 /* every call, for tpa_free() */
	TAILQ_ENTRY(tpa_call) wait_link; /* calls waiting for a token, or held */
	bool waiting;
	enum call_kind kind;
	char *body;
	size_t body_len;
	char target[TARGET_MAX];
	tpa_done_fn *cb;
	void *arg;
	uint64_t start_us;   /* clock_now_us() at the call */
	uint64_t sent_at_ms; /* its last request's first byte (clock_now_ms), 0: none left */
	bool retried_401;
	bool resent;	    /* the send after the 401 left (its first byte) */
	uint64_t token_gen; /* the token it was sent with (tpa.token_gen then) */
	tpa_keygen_fn *kcb; /* keygen: the caller's callback */
	char dev_eui[17]; /* query: the device asked about */
	uint64_t owner;	  /* who asked: the pool's fair queue serves owners in turn */
	unsigned page;	  /* query: page asked for (0: the first, without the parameter) */
};

TAILQ_HEAD(call_list, tpa_call);

struct tpa {
	struct event_base *base;
	const struct config *cfg;
	struct pool *pool;
	struct call_list calls;
	size_t n_calls;
	/* OAuth2 */
	bool oauth;
	char token_path[HTTP_MAX_LINE / 4];
	char *token;
	uint64_t token_gen; /* counts the tokens fetched: a 401 drops only the one it was for */
	char *token_old;    /* the token before (dropped or replaced): an answer may quote it */
	char token_type[32];	   /* as the token endpoint spelled it, e.g. "bearer" */
	char customer_id[64];	   /* from the token answer, shown in Status */
	char token_client_id[128]; /* likewise */
	uint64_t token_refresh_ms; /* refresh from this time on */
	uint64_t token_expires_ms; /* the token is not sent from this time on */
	bool token_inflight;
	struct call_list waiting;
	size_t n_waiting;
	struct event *fail_ev; /* delivers token_fail to waiting calls from the loop */
	struct tpa_result token_fail;
	/*
	 * The token endpoint refused our client (400/401/403), or the API refused a fresh
	 * token: calls fail at once with this answer, and it is asked again only after
	 * upstream.backoff-max, not once per call (a refused secret must not turn every
	 * station call into a login attempt). Any other failure to get a token (no answer,
	 * 5xx, 429, an answer without a token) holds it likewise, from upstream.backoff-min
	 * doubling up to backoff-max.
	 */
	/*
	 * The cloud answered 429 or 503 with Retry-After: new calls are not sent before then
	 * (at most API_HOLD_MAX_S), but answered UpstreamUnavailable from the loop.
	 */
	uint64_t api_hold_until_ms;
	int api_hold_status;
	struct call_list held;
	struct event *held_ev;
	struct tpa_result token_hold;
	uint64_t token_hold_until_ms; /* 0: not held */
	bool token_refused;	      /* the hold is a refusal (else the endpoint is failing) */
	bool api_refusal; /* the refusal is the API's 401 to fresh tokens: until it accepts one */
	unsigned token_fails;	      /* failures in a row, for the failing hold */
	struct event *hold_timer;     /* asks again when the hold ends, calls or not */
	/* metrics */
	struct tpa_counters counters;
	uint32_t ring[LATENCY_RING];
	size_t ring_len, ring_pos;
};

/* Outcome names for logs and metrics labels. */
const char *tpa_outcome_name(enum tpa_outcome o)
{
	switch (o) {
	case TPA_OK:
		return "ok";
	case TPA_REJECTED:
		return "rejected";
	case TPA_CONFLICT:
		return "conflict";
	case TPA_UNAVAILABLE:
		return "unavailable";
	case TPA_UNKNOWN:
		return "unknown";
	case TPA_NOT_FOUND:
		return "not_found";
	default:
		return "invalid";
	}
}

/* ---- pure response interpretation ---- */

/* Copy a JSON string or number into dst; false if it is neither. */
static bool json_text(json_t *v, char *dst, size_t size)
{
	if (json_is_string(v)) {
		utf8_copy(dst, size, json_string_value(v));
		return true;
	}
	if (json_is_integer(v)) {
		snprintf(dst, size, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return true;
	}
	return false;
}

/*
 * Turn the cloud's ownerToken text into ours by api.owner-token-form: hex is printed
 * upper-case; base64 is decoded and printed as upper-case hex of its bytes, so labels stay
 * in QR alphanumeric mode; as-is keeps printable text without blanks or ':' exactly.
 */
int tpa_owner_token_convert(enum owner_token_form form, const char *s, char *out, size_t size)
{
	size_t len = strlen(s);

	if (len == 0)
		return -EINVAL;
	switch (form) {
	case OWNER_TOKEN_HEX:
		if (!hex_valid_any(s) || len >= size)
			return -EINVAL;
		hex_upper(out, s, len);
		return 0;
	case OWNER_TOKEN_BASE64: {
		unsigned char bin[96];
		size_t n = 0;
		if (len % 4 != 0 ||
		    mbedtls_base64_decode(bin, sizeof(bin), &n, (const unsigned char *)s, len) !=
			0 ||
		    n == 0 || 2 * n >= size)
			return -EINVAL;
		static const char hexd[] = "0123456789ABCDEF";
		for (size_t i = 0; i < n; i++) {
			out[2 * i] = hexd[bin[i] >> 4];
			out[2 * i + 1] = hexd[bin[i] & 15];
		}
		out[2 * n] = '\0';
		return 0;
	}
	case OWNER_TOKEN_AS_IS:
		if (len >= size)
			return -EINVAL;
		for (const char *c = s; *c; c++)
			if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || *c == ':')
				return -EINVAL;
		memcpy(out, s, len + 1);
		return 0;
	}
	return -EINVAL;
}

/* Take ownerToken and ref from a device object; false without a usable token. */
static bool take_token(const struct config *cfg, json_t *obj, struct tpa_result *res)
{
	json_t *tok = json_object_get(obj, cfg->api_field_owner_token);
	const char *s = json_string_value(tok);

	if (!s || tpa_owner_token_convert(cfg->api_owner_token_form, s, res->owner_token,
					  sizeof(res->owner_token)) < 0)
		return false;
	json_text(json_object_get(obj, cfg->api_field_ref), res->ref, sizeof(res->ref));
	/* What the answer shows of the record, to tell our import from someone else's. */
	static const struct {
		size_t digits, off;
	} fields[] = {{HEX_EUI, offsetof(struct tpa_result, join_eui)},
		      {HEX_TKM_INFO, offsetof(struct tpa_result, tkm_info)},
		      {HEX_APP_KEY, offsetof(struct tpa_result, app_key)}};
	const char *names[] = {cfg->api_field_join_eui, cfg->api_field_tkm_info,
			       cfg->api_field_app_key};
	for (size_t i = 0; i < 3; i++) {
		const char *v = json_string_value(json_object_get(obj, names[i]));
		if (v && hex_valid(v, fields[i].digits))
			hex_upper((char *)res + fields[i].off, v, fields[i].digits);
	}
	return true;
}

/* The element of a query answer for dev_eui (any, if dev_eui is NULL), or NULL. */
static json_t *query_pick(const struct config *cfg, json_t *list, const char *dev_eui)
{
	size_t i;
	json_t *v;

	json_array_foreach(list, i, v)
	{
		if (!json_is_object(v))
			continue;
		const char *e = json_string_value(json_object_get(v, cfg->api_field_dev_eui));
		if (!dev_eui || (e && strcasecmp(e, dev_eui) == 0))
			return v;
	}
	return NULL;
}

/*
 * Replace each run of 32 or more hexadecimal digits in s by "***": a cloud's message may
 * quote the request (its AppKey) or a token, and it goes to the station, the log and the
 * store's last_error. EUIs (16) and TKM info (20) stay readable.
 */
static void mask_keys(char *s)
{
	char *out = s;
	while (*s) {
		size_t n = 0;
		while (isxdigit((unsigned char)s[n]))
			n++;
		if (n >= 32) {
			cred_wipe(s, n);
			memcpy(out, "***", 3);
			out += 3;
		} else if (n) {
			memmove(out, s, n);
			out += n;
		} else {
			*out++ = *s;
			n = 1;
		}
		s += n;
	}
	*out = '\0';
}

/*
 * Text from the cloud made fit to show and log: a key or token it quotes blanked, and no
 * control character (a terminal's escape sequences, C1 included) left in it.
 */
static void cloud_text(char *s)
{
	mask_keys(s);
	redact_tokens(s);
	char *out = s;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
			p++; /* U+0080..U+009F, C1 controls */
			*out++ = ' ';
		} else {
			*out++ = *p < 0x20 || *p == 0x7f ? ' ' : (char)*p;
		}
	}
	*out = '\0';
}

/* A result for an HTTP answer: status, the body's code and message; returns the parsed body. */
static json_t *result_start(struct tpa_result *res, int status, const char *body,
			    size_t body_len)
{
	memset(res, 0, sizeof(*res));
	res->http_status = status;
	res->retry_after = -1;
	json_t *doc = body && body_len ? wipe_json_loadb(body, body_len, 0, NULL) : NULL;
	if (json_is_object(doc)) {
		json_text(json_object_get(doc, "code"), res->code, sizeof(res->code));
		json_t *m = json_object_get(doc, "message");
		if (json_is_string(m))
			utf8_copy(res->message, sizeof(res->message), json_string_value(m));
		cloud_text(res->message);
		cloud_text(res->code);
	}
	return doc;
}

/* An error status: UNAVAILABLE (429, 5xx, with Retry-After) or REJECTED, with the reason. */
static void result_refused(struct tpa_result *res, int status, const char *retry_after,
			   time_t now)
{
	res->outcome = status == 429 || status >= 500 ? TPA_UNAVAILABLE : TPA_REJECTED;
	if (res->outcome == TPA_UNAVAILABLE)
		res->retry_after = http_retry_after(retry_after, now);
	snprintf(res->reason, sizeof(res->reason), "TPA answered HTTP %d%s%.*s", status,
		 res->message[0] ? ": " : "", (int)utf8_prefix(res->message, 100), res->message);
}

/* Interpret one HTTP answer by the profile's rules. */
void tpa_interpret(const struct config *cfg, bool query, int status, const char *body,
		   size_t body_len, const char *retry_after, time_t now, struct tpa_result *res)
{
	tpa_interpret_query(cfg, query, NULL, status, body, body_len, retry_after, now, res, NULL);
}

/* The same, for a query of dev_eui: *ret_more is set when a full page held no match. */
void tpa_interpret_query(const struct config *cfg, bool query, const char *dev_eui, int status,
			 const char *body, size_t body_len, const char *retry_after, time_t now,
			 struct tpa_result *res, bool *ret_more)
{
	if (ret_more)
		*ret_more = false;
	json_t *doc = result_start(res, status, body, body_len);

	if (status >= 200 && status < 300) {
		if (!query) {
			if (json_is_object(doc) && take_token(cfg, doc, res)) {
				res->outcome = TPA_OK;
				res->code[0] = res->message[0] = '\0';
			} else {
				res->outcome = TPA_UNKNOWN;
				snprintf(res->reason, sizeof(res->reason),
					 "HTTP %d without a usable %s in the body", status,
					 cfg->api_field_owner_token);
			}
			goto out;
		}
		res->code[0] = res->message[0] = '\0';
		if (json_is_array(doc) && json_array_size(doc) == 0) {
			res->outcome = TPA_NOT_FOUND;
			goto out;
		}
		json_t *obj = json_is_array(doc) ? query_pick(cfg, doc, dev_eui) : doc;
		if (json_is_array(doc) && !obj && dev_eui) {
			/* A list without our device: not found on this page. */
			res->outcome = TPA_NOT_FOUND;
			if (ret_more && cfg->api_query_page_param &&
			    json_array_size(doc) >= cfg->api_query_page_size)
				*ret_more = true;
			goto out;
		}
		if (json_is_object(obj) && take_token(cfg, obj, res)) {
			res->outcome = TPA_OK;
			goto out;
		}
		res->outcome = TPA_UNAVAILABLE;
		snprintf(res->reason, sizeof(res->reason),
			 "query answer HTTP %d is not a device list with %s", status,
			 cfg->api_field_owner_token);
		goto out;
	}

	if (status == 409 && !query)
		res->outcome = TPA_CONFLICT;
	else
		result_refused(res, status, retry_after, now);
out:
	json_decref(doc);
}

/* Append s to a JSON text as a quoted string (s is a field name from the config). */
static int json_quote(char *out, size_t size, size_t *pos, const char *s)
{
	static const char hexd[] = "0123456789abcdef";
	size_t o = *pos;

	if (o + 1 >= size)
		return -E2BIG;
	out[o++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (o + 7 >= size)
			return -E2BIG;
		if (c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = (char)c;
		} else if (c < 0x20) {
			memcpy(out + o, "\\u00", 4);
			out[o + 4] = hexd[c >> 4];
			out[o + 5] = hexd[c & 15];
			o += 6;
		} else {
			out[o++] = (char)c;
		}
	}
	if (o + 1 >= size)
		return -E2BIG;
	out[o++] = '"';
	out[o] = '\0';
	*pos = o;
	return 0;
}

/* Append "name":"value" (with a leading comma unless first). */
static int json_member(char *out, size_t size, size_t *pos, const char *name, const char *value)
{
	int r;

	if (*pos > 1) {
		if (*pos + 1 >= size)
			return -E2BIG;
		out[(*pos)++] = ',';
	}
	if ((r = json_quote(out, size, pos, name)) < 0)
		return r;
	if (*pos + 1 >= size)
		return -E2BIG;
	out[(*pos)++] = ':';
	return json_quote(out, size, pos, value);
}

/* Build the import body by hand so that the AppKey lives only in buffers we wipe. */
int tpa_import_body(const struct config *cfg, const struct tpa_record *rec, char **ret_body,
		    size_t *ret_len)
{
	bool tkm = rec->tkm_info[0] != '\0', key = rec->app_key[0] != '\0';

	if (!hex_valid(rec->dev_eui, HEX_EUI) || !hex_valid(rec->join_eui, HEX_EUI) || tkm == key ||
	    (tkm && !hex_valid(rec->tkm_info, HEX_TKM_INFO)) ||
	    (key && !hex_valid(rec->app_key, HEX_APP_KEY)))
		return -EINVAL;
	char dev[17], join[17], val[33];
	hex_upper(dev, rec->dev_eui, HEX_EUI);
	hex_upper(join, rec->join_eui, HEX_EUI);
	if (tkm)
		hex_upper(val, rec->tkm_info, HEX_TKM_INFO);
	else
		hex_upper(val, rec->app_key, HEX_APP_KEY);

	size_t size = 256 + 6 * (strlen(cfg->api_field_dev_eui) + strlen(cfg->api_field_join_eui) +
				 strlen(cfg->api_field_tkm_info) + strlen(cfg->api_field_app_key) +
				 strlen(cfg->api_field_hsm_group) + strlen(cfg->api_field_hsm_app_key) + 34 +
				 (cfg->api_hsm_group ? strlen(cfg->api_hsm_group) : 0));
	char *out = malloc(size);
	size_t pos = 0;
	int r = -ENOMEM;
	if (!out)
		goto done;
	out[pos++] = '{';
	if ((r = json_member(out, size, &pos, cfg->api_field_dev_eui, dev)) < 0 ||
	    (r = json_member(out, size, &pos, cfg->api_field_join_eui, join)) < 0 ||
	    (r = json_member(out, size, &pos,
			     tkm ? cfg->api_field_tkm_info : cfg->api_field_app_key, val)) < 0)
		goto done;
	if (cfg->api_hsm_group &&
	    (r = json_member(out, size, &pos, cfg->api_field_hsm_group, cfg->api_hsm_group)) < 0)
		goto done;
	if (key && hex_valid(rec->hsm_app_key, HEX_APP_KEY)) {
		char hk[33];
		hex_upper(hk, rec->hsm_app_key, HEX_APP_KEY);
		r = json_member(out, size, &pos, cfg->api_field_hsm_app_key, hk);
		cred_wipe(hk, sizeof(hk));
		if (r < 0)
			goto done;
	}
	if (pos + 2 > size) {
		r = -E2BIG;
		goto done;
	}
	out[pos++] = '}';
	out[pos] = '\0';
	*ret_body = out;
	*ret_len = pos;
	out = NULL;
	r = 0;
done:
	if (out) {
		cred_wipe(out, size);
		free(out);
	}
	cred_wipe(val, sizeof(val));
	return r;
}

/* Copy a short printable JSON string or integer into dst ("" when absent or unfit). */
static void json_printable(json_t *v, char *dst, size_t size)
{
	dst[0] = '\0';
	if (!json_text(v, dst, size) || strlen(dst) >= size - 1) {
		dst[0] = '\0';
		return;
	}
	for (const char *c = dst; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f) {
			dst[0] = '\0';
			return;
		}
}

/* Parse the token endpoint's JSON answer with everything tpad uses from it. */
int tpa_oauth2_parse_reply(const char *body, size_t len, struct tpa_oauth2_reply *ret)
{
	json_t *doc = body ? wipe_json_loadb(body, len, 0, NULL) : NULL;
	int r = -EBADMSG;

	ret->why = "the answer is not a JSON object";
	if (!json_is_object(doc))
		goto out;
	const char *tok = json_string_value(json_object_get(doc, "access_token"));
	ret->why = "no access_token";
	if (!tok || !*tok)
		goto out;
	ret->why = "access_token over 4095 characters";
	if (strlen(tok) >= sizeof(ret->token))
		goto out;
	ret->why = "access_token holds a character other than printable ASCII";
	for (const char *c = tok; *c; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
			goto out;
	json_t *type = json_object_get(doc, "token_type");
	/* DX Maker spells it "bearer": send it back as given, but only a Bearer scheme. */
	if (type && (!json_is_string(type) || strcasecmp(json_string_value(type), "bearer") != 0)) {
		char shown[40] = "";
		if (json_is_string(type))
			json_printable(type, shown, sizeof(shown));
		if (shown[0])
			snprintf(ret->why_buf, sizeof(ret->why_buf),
				 "token_type \"%s\" is not Bearer", shown);
		else
			snprintf(ret->why_buf, sizeof(ret->why_buf),
				 "token_type is not the string Bearer");
		ret->why = ret->why_buf;
		goto out;
	}
	long expires = 3600;
	json_t *exp = json_object_get(doc, "expires_in");
	if (exp) {
		/* A number, as RFC 6749 has it; some servers write "3600" or 3600.0. */
		long long v = -1;
		const char *s = json_string_value(exp);
		char *end = NULL;
		if (json_is_integer(exp))
			v = json_integer_value(exp);
		else if (json_is_real(exp) && json_real_value(exp) >= 1 &&
			 json_real_value(exp) < 1e15 &&
			 json_real_value(exp) == (double)(long long)json_real_value(exp))
			v = (long long)json_real_value(exp);
		else if (s && isdigit((unsigned char)s[0]) && strlen(s) < 16)
			v = strtoll(s, &end, 10);
		ret->why = "expires_in is not a positive whole number of seconds";
		if (v <= 0 || (end && *end))
			goto out;
		expires = v > 86400 * 365 ? 86400 * 365 : (long)v;
	}
	ret->why = NULL;
	strcpy(ret->token, tok);
	snprintf(ret->token_type, sizeof(ret->token_type), "%s",
		 type ? json_string_value(type) : "Bearer");
	json_printable(json_object_get(doc, "customer_id"), ret->customer_id,
		       sizeof(ret->customer_id));
	json_printable(json_object_get(doc, "client_id"), ret->client_id, sizeof(ret->client_id));
	ret->expires_in = expires;
	r = 0;
out:
	json_decref(doc);
	return r;
}

/* Parse the token endpoint's JSON answer (token and lifetime only). */
int tpa_oauth2_parse(const char *body, size_t len, char *token, size_t toklen, long *ret_expires_in)
{
	struct tpa_oauth2_reply *rep = calloc(1, sizeof(*rep));
	int r = -ENOMEM;

	if (!rep)
		return r;
	r = tpa_oauth2_parse_reply(body, len, rep);
	if (r == 0 && strlen(rep->token) >= toklen)
		r = -EBADMSG;
	if (r == 0) {
		strcpy(token, rep->token);
		*ret_expires_in = rep->expires_in;
	}
	cred_wipe(rep, sizeof(*rep));
	free(rep);
	return r;
}

/* ---- calls ---- */

/* Free a call, wiping its body (it may hold an AppKey). */
static void call_free(struct tpa_call *c)
{
	if (!c)
		return;
	if (c->body) {
		cred_wipe(c->body, c->body_len);
		free(c->body);
	}
	free(c);
}

/* Record one latency sample, started at start_us (clock_now_us). */
static void latency_add(struct tpa *t, uint64_t start_us)
{
	uint64_t us = clock_now_us() - start_us, ms = us / 1000;
	uint32_t v = ms > UINT32_MAX ? UINT32_MAX : (uint32_t)ms;

	t->ring[t->ring_pos] = v;
	t->ring_pos = (t->ring_pos + 1) % LATENCY_RING;
	if (t->ring_len < LATENCY_RING)
		t->ring_len++;
	t->counters.latency_count++;
	t->counters.latency_sum_us += us;
	for (size_t i = 0; i < TPA_LATENCY_BUCKETS; i++)
		if (v <= bucket_le[i])
			t->counters.bucket_count[i]++;
}

/*
 * Blank in res what only tpad knows and the cloud may quote back: its tokens (the one it
 * holds and the one before) and, for the token endpoint's answers, the client secret (as
 * is and as sent, URL-encoded).
 */
static void mask_ours(const struct tpa *t, struct tpa_result *res, const char *secret)
{
	char esecret[3 * SECRET_MAX] = "";
	if (secret && http_urlencode(secret, esecret, sizeof(esecret)) < 0)
		esecret[0] = '\0';
	const char *ours[] = {t->token, t->token_old, secret, esecret};
	char *texts[] = {res->message, res->code, res->reason};
	for (size_t i = 0; i < sizeof(ours) / sizeof(ours[0]); i++)
		for (size_t j = 0; ours[i] && j < sizeof(texts) / sizeof(texts[0]); j++)
			redact_secret(texts[j], ours[i]);
	cred_wipe(esecret, sizeof(esecret));
}

/* Replace the token tpad holds by token (NULL: none), keeping the one before to mask. */
static void token_set(struct tpa *t, char *token)
{
	if (t->token_old) {
		cred_wipe(t->token_old, strlen(t->token_old));
		free(t->token_old);
	}
	t->token_old = t->token;
	t->token = token;
}

/* Deliver the result and forget the call. */
static void call_done(struct tpa_call *c, const struct tpa_result *res)
{
	struct tpa *t = c->t;

	if (c->kind == CALL_KEYGEN) {
		/* Failed before an answer (token, queue): no keys. */
		TAILQ_REMOVE(&t->calls, c, link);
		t->n_calls--;
		c->kcb(res, NULL, 0, c->arg);
		call_free(c);
		return;
	}
	if (res->http_status)
		latency_add(t, c->start_us);
	if (res->outcome < TPA_OUTCOME_MAX)
		t->counters.outcomes[res->outcome]++;
	TAILQ_REMOVE(&t->calls, c, link);
	t->n_calls--;
	struct tpa_result out = *res;
	mask_ours(t, &out, NULL);
	uint64_t start_ms = c->start_us / 1000;
	out.sent_after_ms = c->sent_at_ms > start_ms ? c->sent_at_ms - start_ms : 0;
	/*
	 * A call whose send the API answered 401 and whose retry never left (no token, a
	 * full queue): its only answer is that refusal, so it was not imported; "refused",
	 * not "never sent", for the attempt.
	 */
	if (!out.http_status && c->retried_401 && !c->resent)
		out.http_status = 401;
	/* tpad holds calls for at most API_HOLD_MAX_S whatever the cloud asked: so do they. */
	if (out.retry_after > API_HOLD_MAX_S)
		out.retry_after = API_HOLD_MAX_S;
	c->cb(&out, c->arg);
	cred_wipe(&out, sizeof(out)); /* the answer may show the device's appKey */
	call_free(c);
}

/* Deliver a result without an HTTP answer. */
static void call_fail(struct tpa_call *c, enum tpa_outcome o, const char *reason)
{
	struct tpa_result res;

	memset(&res, 0, sizeof(res));
	res.outcome = o;
	res.retry_after = -1;
	snprintf(res.reason, sizeof(res.reason), "%s", reason);
	call_done(c, &res);
}

static void token_fetch(struct tpa *t);
static void keygen_answer(struct tpa_call *c, const struct pool_result *pr);
static int call_submit(struct tpa_call *c);

/*
 * The cloud answered 401 to c: drop the token it was sent with, unless a newer one was
 * fetched meanwhile (a late 401 of an old token must not throw away the fresh one, nor
 * make every call in flight fetch its own).
 */
static void token_rejected(struct tpa *t, const struct tpa_call *c)
{
	if (!t->token || c->token_gen != t->token_gen)
		return;
	token_set(t, NULL);
}
static int query_target(struct tpa_call *c);
static void token_hold(struct tpa *t, bool refused, struct tpa_result *fail);

/*
 * The API answered 401 to a token fetched after its last 401: it refuses this client
 * whatever the token, so hold calls as after a refused token request (logged once).
 */
static void api_refused(struct tpa *t, const struct tpa_call *c, const struct pool_result *pr)
{
	struct tpa_result fail;

	tpa_interpret(t->cfg, false, pr->res->status, pr->res->body, pr->res->body_len,
		      pr->res->retry_after, time(NULL), &fail);
	fail.outcome = TPA_REJECTED;
	fail.http_status = 0; /* for the calls held: they are not sent */
	fail.retry_after = -1;
	fail.owner_token[0] = fail.ref[0] = '\0';
	snprintf(fail.reason, sizeof(fail.reason),
		 "the API answers HTTP 401 to a fresh OAuth2 token%s%.*s",
		 fail.message[0] ? ": " : "", (int)utf8_prefix(fail.message, 100), fail.message);
	mask_ours(t, &fail, NULL);
	if (!t->api_refusal)
		log_errx("OAuth2: %s: check the rights of client '%s' (oauth2.client-id); "
			 "asking again every upstream.backoff-max meanwhile",
			 fail.reason, t->cfg->oauth2_client_id);
	t->api_refusal = true;
	token_rejected(t, c);
	token_hold(t, true, &fail);
}

/* The API took a token again after refusing fresh ones: the refusal is over. */
static void api_accepted(struct tpa *t)
{
	t->api_refusal = t->token_refused = false;
	t->token_fails = 0;
	t->token_hold_until_ms = 0;
	log_notice("OAuth2: the API accepts the tokens of client '%s' again",
		   t->cfg->oauth2_client_id);
}

/* The cloud asked to wait secs (Retry-After, < 0 none): hold new calls until then. */
static void api_hold(struct tpa *t, int status, int secs)
{
	if (secs <= 0)
		return;
	if (secs > API_HOLD_MAX_S)
		secs = API_HOLD_MAX_S;
	uint64_t now = clock_now_ms(), until = now + (uint64_t)secs * 1000u;
	if (t->api_hold_until_ms <= now)
		log_warnx("upstream: the cloud answered HTTP %d, Retry-After %d s: new calls are "
			  "answered UpstreamUnavailable without being sent until then",
			  status, secs);
	if (until > t->api_hold_until_ms)
		t->api_hold_until_ms = until;
	t->api_hold_status = status;
}

/*
 * What any API answer says of the client and the cloud, before its own meaning. A first
 * 401 sends the call again with a fresh token (true: the answer is dealt with); a 401 to a
 * fresh token holds calls as a refused client, and any other answer ends such a hold; a
 * 429 or 503 with Retry-After holds new calls until then.
 */
static bool answer_common(struct tpa_call *c, const struct pool_result *pr)
{
	struct tpa *t = c->t;
	int status = pr->res->status;

	if (status == 401 && t->oauth && !c->retried_401) {
		/* Rejected, so not imported: get a fresh token and try once more. */
		c->retried_401 = true;
		token_rejected(t, c);
		int r = call_submit(c);
		if (r < 0)
			call_fail(c, TPA_UNAVAILABLE,
				  r == -EBUSY ? "upstream queue full" : "out of memory");
		return true;
	}
	if (status == 401 && t->oauth)
		api_refused(t, c, pr);
	else if (t->api_refusal)
		api_accepted(t);
	if (status == 429 || status == 503)
		api_hold(t, status, http_retry_after(pr->res->retry_after, time(NULL)));
	return false;
}

/* The pool's answer to an API call. */
static void call_answer(const struct pool_result *pr, void *arg)
{
	struct tpa_call *c = arg;
	struct tpa *t = c->t;
	struct tpa_result res;

	if (pr->sent && pr->sent_at_ms)
		c->sent_at_ms = pr->sent_at_ms;
	if (pr->sent && c->retried_401)
		c->resent = true;
	if (c->kind == CALL_KEYGEN) {
		keygen_answer(c, pr);
		return;
	}
	if (pr->err) {
		bool unknown = pr->sent && (c->kind == CALL_IMPORT || c->kind == CALL_DELETE);
		call_fail(c, unknown ? TPA_UNKNOWN : TPA_UNAVAILABLE, pr->reason);
		return;
	}
	if (answer_common(c, pr))
		return;
	if (c->kind == CALL_DELETE) {
		tpa_interpret_delete(pr->res->status, pr->res->body, pr->res->body_len,
				     pr->res->retry_after, time(NULL), &res);
		call_done(c, &res);
		return;
	}
	bool more = false;
	tpa_interpret_query(t->cfg, c->kind == CALL_QUERY, c->kind == CALL_QUERY ? c->dev_eui : NULL,
			    pr->res->status, pr->res->body, pr->res->body_len, pr->res->retry_after,
			    time(NULL), &res, &more);
	if (more && c->page + 1 < QUERY_MAX_PAGES) {
		/* A full page without our device: ask for the next one. */
		c->page++;
		c->retried_401 = c->resent = false;
		int r = query_target(c) < 0 ? -EINVAL : call_submit(c);
		if (r < 0)
			call_fail(c, TPA_UNAVAILABLE,
				  r == -EBUSY ? "upstream queue full" : "cannot build the query");
		cred_wipe(&res, sizeof(res));
		return;
	}
	call_done(c, &res);
	cred_wipe(&res, sizeof(res)); /* the answer may show the device's appKey */
}

/* Build the HTTP request for a call (with the current token) and give it to the pool. */
static int call_send(struct tpa_call *c)
{
	struct tpa *t = c->t;
	static const char *const methods[] = {"POST", "GET", "DELETE", "POST"};
	bool json = c->kind == CALL_IMPORT || c->kind == CALL_KEYGEN;
	struct http_request hr = {
	    .method = methods[c->kind],
	    .host = pool_host(t->pool),
	    .target = c->target,
	    .content_type = json ? "application/json" : NULL,
	    .bearer = t->oauth ? t->token : NULL,
	    .auth_scheme = t->oauth && t->token_type[0] ? t->token_type : NULL,
	    .body = c->body,
	    .body_len = c->body_len,
	};
	char *buf = NULL;
	size_t len = 0;
	int r = http_request_build(&hr, &buf, &len);

	if (r < 0)
		return r;
	c->token_gen = t->token_gen;
	r = pool_submit_for(t->pool, c->owner, buf, len, call_answer, c);
	cred_wipe(buf, len);
	free(buf);
	return r;
}

/* True if the cached token is missing or due for refresh. */
static bool token_stale(struct tpa *t)
{
	return !t->token || clock_now_ms() >= t->token_refresh_ms;
}

/* Margin before a token's expiry from which it is no longer sent. */
#define TOKEN_EXPIRY_MARGIN_MS 5000

/* True if the cached token may still be sent (refresh due or not). */
static bool token_usable(struct tpa *t)
{
	return t->token && clock_now_ms() + TOKEN_EXPIRY_MARGIN_MS < t->token_expires_ms;
}

/* Send now, or park the call until a token is there. */
static int call_submit(struct tpa_call *c)
{
	struct tpa *t = c->t;

	if (t->oauth && token_stale(t) && token_usable(t)) {
		/* Due for refresh but still valid: refresh aside, send with this one. */
		token_fetch(t);
		return call_send(c);
	}
	if (t->oauth && token_stale(t)) {
		if (t->n_waiting >= t->cfg->upstream_queue)
			return -EBUSY;
		TAILQ_INSERT_TAIL(&t->waiting, c, wait_link);
		c->waiting = true;
		t->n_waiting++;
		token_fetch(t);
		return 0;
	}
	return call_send(c);
}

/* Release every call waiting for a token: send them, or fail them all. */
static void waiting_flush(struct tpa *t, const struct tpa_result *fail)
{
	struct tpa_call *c;

	while ((c = TAILQ_FIRST(&t->waiting))) {
		TAILQ_REMOVE(&t->waiting, c, wait_link);
		c->waiting = false;
		t->n_waiting--;
		if (fail) {
			struct tpa_result res = *fail;
			call_done(c, &res);
			continue;
		}
		int r = call_send(c);
		if (r < 0)
			call_fail(c, TPA_UNAVAILABLE,
				  r == -EBUSY ? "upstream queue full" : "cannot build the request");
	}
}

/*
 * Hold token requests after a failure: upstream.backoff-max after a refusal, else
 * backoff-min doubling per failure in a row up to backoff-max. Calls meanwhile fail at once
 * with *fail (its retryAfter at least the hold); the timer asks again when the hold ends
 * even if no call comes, so Status recovers by itself.
 */
static void token_hold(struct tpa *t, bool refused, struct tpa_result *fail)
{
	uint64_t max = t->cfg->upstream_backoff_max_ms ? t->cfg->upstream_backoff_max_ms : 5000;
	uint64_t hold = t->cfg->upstream_backoff_min_ms ? t->cfg->upstream_backoff_min_ms : 100;

	if (t->token_fails < UINT_MAX)
		t->token_fails++;
	for (unsigned i = 1; i < t->token_fails && hold < max; i++)
		hold *= 2;
	if (refused || hold > max)
		hold = max;
	if (fail->retry_after > API_HOLD_MAX_S)
		fail->retry_after = API_HOLD_MAX_S;
	int asked = fail->retry_after;
	if (asked > 0 && hold < (uint64_t)asked * 1000u)
		hold = (uint64_t)asked * 1000u; /* the endpoint said when */
	t->token_refused = refused;
	t->token_hold = *fail;
	int secs = (int)((hold + 999) / 1000);
	if (fail->retry_after < secs)
		fail->retry_after = secs;
	t->token_hold_until_ms = clock_now_ms() + hold;
	struct timeval tv = {.tv_sec = hold / 1000, .tv_usec = (hold % 1000) * 1000};
	evtimer_add(t->hold_timer, &tv);
}

/* A token request failed without a refusal: say so, hold, fail the waiting calls. */
static void token_failed(struct tpa *t, struct tpa_result *fail)
{
	/* Nothing reached the API: no call may take the token endpoint's status for its own. */
	fail->http_status = 0;
	fail->owner_token[0] = fail->ref[0] = '\0';
	if (t->api_refusal) {
		/* The API's refusal cannot be asked again now: this failure is what stands. */
		t->api_refusal = t->token_refused = false;
	}
	if (t->token_refused) {
		struct tpa_result refusal = t->token_hold; /* token_hold() stores what it gets */
		token_hold(t, true, &refusal);		   /* still refused as far as we know */
	} else {
		if (!t->token_fails)
			log_errx("OAuth2: %s; asking again after upstream.backoff-min, doubling up "
				 "to upstream.backoff-max, and failing calls that need a token "
				 "meanwhile",
				 fail->reason);
		token_hold(t, false, fail);
	}
	waiting_flush(t, fail);
}

/* The token endpoint answered. */
static void token_answer_read(const struct pool_result *pr, struct tpa *t);

/* An OAuth2 error answer's "error" and "error_description" (RFC 6749 5.2), as one line. */
static void oauth2_error(const char *body, size_t len, char *out, size_t outlen)
{
	json_t *j = body ? wipe_json_loadb(body, len, 0, NULL) : NULL;
	const char *e = json_string_value(json_object_get(j, "error"));
	const char *d = json_string_value(json_object_get(j, "error_description"));
	if (e)
		snprintf(out, outlen, "%.*s%s%.*s", (int)utf8_prefix(e, 60), e, d ? " (" : "",
			 d ? (int)utf8_prefix(d, 80) : 0, d ? d : "");
	if (e && d && strlen(out) + 1 < outlen)
		strcat(out, ")");
	cloud_text(out);
	json_decref(j);
}

/* The token endpoint answered: read it, then wipe the answer (it holds the token). */
static void token_answer(const struct pool_result *pr, void *arg)
{
	token_answer_read(pr, arg);
	if (pr->res && pr->res->body)
		cred_wipe(pr->res->body, pr->res->body_len);
}

static void token_answer_read(const struct pool_result *pr, struct tpa *t)
{
	struct tpa_result fail;
	long expires = 0;

	t->token_inflight = false;
	memset(&fail, 0, sizeof(fail));
	fail.retry_after = -1;
	if (pr->err) {
		fail.outcome = TPA_UNAVAILABLE;
		snprintf(fail.reason, sizeof(fail.reason), "OAuth2 token request failed: %s",
			 pr->reason);
		token_failed(t, &fail);
		return;
	}
	int status = pr->res->status;
	struct tpa_oauth2_reply *rep = calloc(1, sizeof(*rep));
	if (rep && status >= 200 && status < 300 &&
	    tpa_oauth2_parse_reply(pr->res->body, pr->res->body_len, rep) == 0) {
		expires = rep->expires_in;
		snprintf(t->token_type, sizeof(t->token_type), "%s", rep->token_type);
		snprintf(t->customer_id, sizeof(t->customer_id), "%s", rep->customer_id);
		snprintf(t->token_client_id, sizeof(t->token_client_id), "%s", rep->client_id);
		token_set(t, strdup(rep->token));
		t->token_gen++;
		if (t->api_refusal) {
			t->token_hold_until_ms = 0; /* a call may try it: the API's answer tells */
		} else if (t->token_fails) {
			t->token_hold_until_ms = 0;
			t->token_fails = 0;
			t->token_refused = false;
			log_notice("OAuth2: the token endpoint gives tokens again");
		}
		cred_wipe(rep, sizeof(*rep));
		free(rep);
		/* Refresh at 90% of the lifetime, and at least 30 s before expiry. */
		uint64_t life = (uint64_t)expires * 1000u;
		uint64_t margin = life / 10 > 30000 ? life / 10 : 30000;
		t->token_refresh_ms = clock_now_ms() + (life > margin ? life - margin : life / 2);
		t->token_expires_ms = clock_now_ms() + life;
		if (!t->token) {
			fail.outcome = TPA_UNAVAILABLE;
			snprintf(fail.reason, sizeof(fail.reason), "out of memory");
			waiting_flush(t, &fail);
			return;
		}
		waiting_flush(t, NULL);
		return;
	}
	char why[sizeof(rep->why_buf)];
	snprintf(why, sizeof(why), "%s", rep && rep->why ? rep->why : "out of memory");
	if (rep) {
		cred_wipe(rep, sizeof(*rep));
		free(rep);
	}
	tpa_interpret(t->cfg, true, status, pr->res->body, pr->res->body_len, pr->res->retry_after,
		      time(NULL), &fail);
	if (status >= 200 && status < 300) {
		fail.outcome = TPA_UNAVAILABLE;
		snprintf(
		    fail.reason, sizeof(fail.reason),
		    "the OAuth2 token endpoint answered HTTP %d without a usable access_token: "
		    "%s",
		    status, why);
		token_failed(t, &fail);
		return;
	}
	char oerr[160] = "";
	oauth2_error(pr->res->body, pr->res->body_len, oerr, sizeof(oerr));
	snprintf(fail.reason, sizeof(fail.reason),
		 "OAuth2 token request answered HTTP %d%s%.*s%s%s", status,
		 fail.message[0] ? ": " : "", (int)utf8_prefix(fail.message, 100), fail.message,
		 oerr[0] ? ": " : "", oerr);
	/* Its refusal may quote the secret it was sent: read it again to blank it. */
	char secret[SECRET_MAX];
	if (cred_load_text("oauth-secret", t->cfg->oauth2_secret_file, secret, sizeof(secret)) < 0)
		secret[0] = '\0';
	mask_ours(t, &fail, secret);
	cred_wipe(secret, sizeof(secret));
	if (status != 400 && status != 401 && status != 403) {
		/* Not a refusal of our client (a wrong token-url's 404, a redirect): failing. */
		fail.outcome = TPA_UNAVAILABLE;
		token_failed(t, &fail);
		return;
	}
	fail.outcome = TPA_REJECTED;
	/* Our client is refused: say so once, and ask again only after a while. */
	fail.http_status = 0;
	fail.owner_token[0] = fail.ref[0] = '\0';
	if (!t->token_refused)
		log_errx("OAuth2: the token endpoint refuses client '%s' (%s): check "
			 "oauth2.client-id and the oauth-secret credential; asking again "
			 "every upstream.backoff-max meanwhile",
			 t->cfg->oauth2_client_id, fail.reason);
	token_hold(t, true, &fail);
	waiting_flush(t, &fail);
}

/* The hold ended: ask for a token again (its answer clears or renews the hold). */
static void hold_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpa *t = arg;
	/* The loop's clock may run a little behind ours: the hold is over now. */
	uint64_t now = clock_now_ms();
	if (t->token_hold_until_ms > now)
		t->token_hold_until_ms = now;
	if (event_pending(t->fail_ev, EV_TIMEOUT, NULL)) {
		/* The last failure is still being delivered: ask right after it. */
		struct timeval tv = {.tv_usec = 10000};
		evtimer_add(t->hold_timer, &tv);
		return;
	}
	token_fetch(t);
}

/* Fail the calls waiting for a token with the stored reason. */
static void token_fail_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpa *t = arg;
	struct tpa_result fail = t->token_fail;

	waiting_flush(t, &fail);
}

/* Ask for a token unless a request is already out. */
static void token_fetch(struct tpa *t)
{
	const struct config *cfg = t->cfg;
	char secret[SECRET_MAX], esecret[3 * SECRET_MAX], eid[768];
	char *form = NULL, *buf = NULL;
	size_t form_len = 0, len = 0;
	int r;

	if (t->token_inflight || event_pending(t->fail_ev, EV_TIMEOUT, NULL))
		return;
	struct tpa_result fail;
	memset(&fail, 0, sizeof(fail));
	fail.outcome = TPA_UNAVAILABLE;
	fail.retry_after = -1;
	uint64_t now = clock_now_ms();
	if (t->token_hold_until_ms && now < t->token_hold_until_ms) {
		fail = t->token_hold; /* held: not asked again yet */
		int left = (int)((t->token_hold_until_ms - now + 999) / 1000);
		fail.retry_after = fail.retry_after > left ? fail.retry_after : left;
		goto fail;
	}
	r = cred_load_text("oauth-secret", cfg->oauth2_secret_file, secret, sizeof(secret));
	if (r < 0) {
		char why[256];
		snprintf(fail.reason, sizeof(fail.reason), "cannot load the OAuth2 secret: %s",
			 cred_explain(r, "oauth-secret", cfg->oauth2_secret_file, why, sizeof(why)));
		/* As a failing endpoint: shown (Status, STATUS=, metrics), logged once, held. */
		if (!t->token_fails || t->token_refused)
			log_errx("OAuth2: %s; trying again after upstream.backoff-min, doubling up "
				 "to upstream.backoff-max",
				 fail.reason);
		token_hold(t, false, &fail);
		goto fail;
	}
	if (http_urlencode(secret, esecret, sizeof(esecret)) < 0 ||
	    http_urlencode(cfg->oauth2_client_id, eid, sizeof(eid)) < 0) {
		snprintf(fail.reason, sizeof(fail.reason), "OAuth2 client id or secret too long");
		goto fail;
	}
	form_len = strlen("grant_type=client_credentials&client_id=&client_secret=") + strlen(eid) +
		   strlen(esecret);
	form = malloc(form_len + 1);
	if (!form) {
		snprintf(fail.reason, sizeof(fail.reason), "out of memory");
		goto fail;
	}
	snprintf(form, form_len + 1, "grant_type=client_credentials&client_id=%s&client_secret=%s",
		 eid, esecret);
	struct http_request hr = {
	    .method = "POST",
	    .host = pool_host(t->pool),
	    .target = t->token_path,
	    .content_type = "application/x-www-form-urlencoded",
	    .body = form,
	    .body_len = form_len,
	};
	if (http_request_build(&hr, &buf, &len) < 0) {
		snprintf(fail.reason, sizeof(fail.reason), "cannot build the OAuth2 request");
		goto fail;
	}
	r = pool_submit(t->pool, buf, len, token_answer, t);
	if (r < 0) {
		snprintf(fail.reason, sizeof(fail.reason), "upstream queue full");
		goto fail;
	}
	t->token_inflight = true;
	t->counters.token_requests++;
	goto out;
fail:
	/* Reached from inside tpa_import() or tpa_query(): answer from the loop instead. */
	t->token_fail = fail;
	event_active(t->fail_ev, EV_TIMEOUT, 0);
out:
	cred_wipe(secret, sizeof(secret));
	cred_wipe(esecret, sizeof(esecret));
	if (form) {
		cred_wipe(form, form_len);
		free(form);
	}
	if (buf) {
		cred_wipe(buf, len);
		free(buf);
	}
}

/* Allocate and register a call. */
static struct tpa_call *call_new(struct tpa *t, enum call_kind kind, tpa_done_fn *cb, void *arg)
{
	struct tpa_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->t = t;
	c->kind = kind;
	c->cb = cb;
	c->arg = arg;
	c->start_us = clock_now_us();
	return c;
}

/* Seconds left of a Retry-After hold (rounded up), 0 when none. */
static int api_hold_left_s(const struct tpa *t)
{
	uint64_t now = clock_now_ms();
	return t->api_hold_until_ms > now ? (int)((t->api_hold_until_ms - now + 999) / 1000) : 0;
}

/* Fail the calls held by a Retry-After, from the loop. */
static void held_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tpa *t = arg;
	struct tpa_call *c;
	int left = api_hold_left_s(t);
	if (!left)
		left = 1; /* the hold just ended: "soon" */

	while ((c = TAILQ_FIRST(&t->held))) {
		TAILQ_REMOVE(&t->held, c, wait_link);
		struct tpa_result res;
		memset(&res, 0, sizeof(res));
		res.outcome = TPA_UNAVAILABLE;
		res.retry_after = left;
		snprintf(res.reason, sizeof(res.reason),
			 "not sent: the cloud asked to wait (HTTP %d, Retry-After), %d s more",
			 t->api_hold_status, left);
		call_done(c, &res);
	}
}

/* Register a call and send it (or park it for a token, or hold it); undo on failure. */
static int call_start(struct tpa *t, struct tpa_call *c)
{
	TAILQ_INSERT_TAIL(&t->calls, c, link);
	t->n_calls++;
	if (t->api_hold_until_ms > clock_now_ms()) {
		TAILQ_INSERT_TAIL(&t->held, c, wait_link);
		event_active(t->held_ev, EV_TIMEOUT, 0);
		return 0;
	}
	int r = call_submit(c);
	if (r < 0) {
		if (c->waiting) {
			TAILQ_REMOVE(&t->waiting, c, wait_link);
			t->n_waiting--;
		}
		TAILQ_REMOVE(&t->calls, c, link);
		t->n_calls--;
		call_free(c);
	}
	return r;
}

/* Queue an import. */
int tpa_import(struct tpa *t, const struct tpa_record *rec, tpa_done_fn *cb, void *arg)
{
	struct tpa_call *c = call_new(t, CALL_IMPORT, cb, arg);
	int r;

	if (!c)
		return -ENOMEM;
	if ((r = tpa_import_body(t->cfg, rec, &c->body, &c->body_len)) < 0) {
		call_free(c);
		return r;
	}
	c->owner = rec->owner;
	int n = snprintf(c->target, sizeof(c->target), "%s%s", t->cfg->api_base_path,
			 t->cfg->api_import_path);
	if (n < 0 || (size_t)n >= sizeof(c->target)) {
		call_free(c);
		return -EINVAL;
	}
	if ((r = call_start(t, c)) == 0)
		t->counters.imports++;
	return r;
}

/* The query's target for its current page. */
static int query_target(struct tpa_call *c)
{
	const struct config *cfg = c->t->cfg;
	char param[256], pparam[256] = "";

	if (http_urlencode(cfg->api_query_param, param, sizeof(param)) < 0 ||
	    (cfg->api_query_page_param &&
	     http_urlencode(cfg->api_query_page_param, pparam, sizeof(pparam)) < 0))
		return -EINVAL;
	const char *path = cfg->api_query_path;
	int n;
	if (c->page > 0)
		n = snprintf(c->target, sizeof(c->target), "%s%s%c%s=%s&%s=%u", cfg->api_base_path,
			     path, strchr(path, '?') ? '&' : '?', param, c->dev_eui, pparam,
			     c->page);
	else
		n = snprintf(c->target, sizeof(c->target), "%s%s%c%s=%s", cfg->api_base_path, path,
			     strchr(path, '?') ? '&' : '?', param, c->dev_eui);
	return n < 0 || (size_t)n >= sizeof(c->target) ? -EINVAL : 0;
}

/* Queue a query. */
int tpa_query(struct tpa *t, const char *dev_eui, tpa_done_fn *cb, void *arg)
{
	if (!hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct tpa_call *c = call_new(t, CALL_QUERY, cb, arg);
	if (!c)
		return -ENOMEM;
	hex_upper(c->dev_eui, dev_eui, HEX_EUI);
	if (query_target(c) < 0) {
		call_free(c);
		return -EINVAL;
	}
	int r = call_start(t, c);
	if (r == 0)
		t->counters.queries++;
	return r;
}

/* True if ref can go into a path segment as it is. */
static bool ref_ok(const char *ref)
{
	size_t n = strlen(ref);

	if (n == 0 || n > 128)
		return false;
	for (const char *c = ref; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr("-._~", *c))
			return false;
	return true;
}

/* Queue a delete of the device the cloud calls ref. */
int tpa_delete(struct tpa *t, const char *ref, tpa_done_fn *cb, void *arg)
{
	if (!ref_ok(ref))
		return -EINVAL;
	struct tpa_call *c = call_new(t, CALL_DELETE, cb, arg);
	if (!c)
		return -ENOMEM;
	int n = snprintf(c->target, sizeof(c->target), "%s%s/%s", t->cfg->api_base_path,
			 t->cfg->api_import_path, ref);
	if (n < 0 || (size_t)n >= sizeof(c->target)) {
		call_free(c);
		return -EINVAL;
	}
	int r = call_start(t, c);
	if (r == 0)
		t->counters.deletes++;
	return r;
}

/* The answer to appKeyGens: the VendorKeys (base64 strings) or why there are none. */
static void keygen_answer(struct tpa_call *c, const struct pool_result *pr)
{
	struct tpa *t = c->t;
	struct tpa_result res;
	const char **keys = NULL;
	size_t n = 0;

	memset(&res, 0, sizeof(res));
	res.retry_after = -1;
	if (pr->err) {
		res.outcome = TPA_UNAVAILABLE;
		snprintf(res.reason, sizeof(res.reason), "%s", pr->reason);
		call_done(c, &res);
		return;
	}
	if (answer_common(c, pr))
		return;
	json_t *doc = NULL;
	if (pr->res->status >= 200 && pr->res->status < 300)
		doc = wipe_json_loadb(pr->res->body, pr->res->body_len, 0, NULL);
	if (!json_is_array(doc)) {
		tpa_interpret_delete(pr->res->status, pr->res->body, pr->res->body_len,
				     pr->res->retry_after, time(NULL), &res);
		if (res.outcome == TPA_OK || res.outcome == TPA_NOT_FOUND) {
			res.outcome = TPA_UNAVAILABLE;
			snprintf(res.reason, sizeof(res.reason),
				 "appKeyGens answered HTTP %d without a list of VendorKeys",
				 pr->res->status);
		}
		json_decref(doc);
		call_done(c, &res);
		return;
	}
	keys = calloc(json_array_size(doc) + 1, sizeof(*keys));
	size_t i;
	json_t *v;
	json_array_foreach(doc, i, v)
	{
		const char *k = json_is_string(v) ? json_string_value(v)
						  : json_string_value(json_object_get(
							v, t->cfg->api_field_vendor_key));
		if (keys && k)
			keys[n++] = k;
	}
	res.outcome = TPA_OK;
	res.http_status = pr->res->status;
	latency_add(t, c->start_us);
	t->counters.outcomes[TPA_OK]++;
	TAILQ_REMOVE(&t->calls, c, link);
	t->n_calls--;
	c->kcb(&res, keys, n, c->arg);
	free(keys);
	json_decref(doc);
	call_free(c);
}

/* Ask the cloud's HSM for n AppKeys wrapped to our RSA public key. */
int tpa_app_key_gens(struct tpa *t, unsigned n, const char *public_key_b64, tpa_keygen_fn *cb,
		     void *arg)
{
	if (n == 0 || n > 1000 || !public_key_b64)
		return -EINVAL;
	struct tpa_call *c = call_new(t, CALL_KEYGEN, NULL, arg);
	if (!c)
		return -ENOMEM;
	c->kcb = cb;
	json_t *body = json_pack("{s:s}", t->cfg->api_field_public_key, public_key_b64);
	c->body = body ? wipe_json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	if (!c->body) {
		call_free(c);
		return -ENOMEM;
	}
	c->body_len = strlen(c->body);
	int len = snprintf(c->target, sizeof(c->target), "%s%s?number=%u", t->cfg->api_base_path,
			   t->cfg->api_appkeygen_path, n);
	if (len < 0 || (size_t)len >= sizeof(c->target)) {
		call_free(c);
		return -EINVAL;
	}
	int r = call_start(t, c);
	if (r == 0)
		t->counters.key_gens++;
	return r;
}

/* Interpret the answer to a delete: gone (OK), not there (NOT_FOUND), or an error. */
void tpa_interpret_delete(int status, const char *body, size_t body_len, const char *retry_after,
			  time_t now, struct tpa_result *res)
{
	json_decref(result_start(res, status, body, body_len));
	if (status >= 200 && status < 300) {
		res->outcome = TPA_OK;
		res->code[0] = res->message[0] = '\0';
	} else if (status == 404) {
		res->outcome = TPA_NOT_FOUND;
	} else {
		result_refused(res, status, retry_after, now);
	}
}

/* The token path goes into the request line as it is: no space or control character. */
static int token_path_check(struct tpa *t, char *err, size_t errlen)
{
	for (const unsigned char *p = (const unsigned char *)t->token_path; *p; p++)
		if (*p <= 0x20 || *p == 0x7f) {
			snprintf(err, errlen,
				 "oauth2.token-url must not hold spaces or control characters "
				 "(write a space in a query as %%20)");
			return -EINVAL;
		}
	return 0;
}

/* Work out the token endpoint's path on the upstream host. */
static int token_path(struct tpa *t, char *err, size_t errlen)
{
	const char *u = t->cfg->oauth2_token_url;

	if (!u || !*u) {
		snprintf(err, errlen, "oauth2.token-url is not set");
		return -EINVAL;
	}
	if (u[0] == '/') {
		snprintf(t->token_path, sizeof(t->token_path), "%s", u);
		return token_path_check(t, err, errlen);
	}
	struct http_url tu, up;
	if (http_url_parse(u, &tu) < 0 || http_url_parse(t->cfg->upstream_url, &up) < 0 ||
	    tu.tls != up.tls || tu.port != up.port || strcasecmp(tu.host, up.host) != 0) {
		snprintf(err, errlen,
			 "oauth2.token-url must be a path or a URL on the upstream.url host");
		return -EINVAL;
	}
	snprintf(t->token_path, sizeof(t->token_path), "%s", tu.path[0] ? tu.path : "/");
	return token_path_check(t, err, errlen);
}

/* The pool's certificate verdict changed: say so once in the log, not per retry. */
static void cert_event(void *arg, enum tls_cert_error e, const char *reason)
{
	struct tpa *t = arg;

	if (e == TLS_CERT_OK)
		log_info("upstream %s: certificate accepted again, sessions reconnecting",
			 t->cfg->upstream_url);
	else
		log_errx("upstream %s: certificate refused (%s), not retrying before "
			 "upstream.backoff-max: %s",
			 t->cfg->upstream_url, tls_cert_error_name(e), reason);
}

/* Set up the profile, checking the configuration it depends on. */
struct tpa *tpa_new(struct event_base *base, const struct config *cfg, char *err, size_t errlen)
{
	struct tpa *t = calloc(1, sizeof(*t));

	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->base = base;
	t->cfg = cfg;
	TAILQ_INIT(&t->calls);
	TAILQ_INIT(&t->waiting);
	TAILQ_INIT(&t->held);
	t->fail_ev = event_new(base, -1, 0, token_fail_cb, t);
	t->hold_timer = evtimer_new(base, hold_timer_cb, t);
	t->held_ev = event_new(base, -1, 0, held_cb, t);
	if (!t->fail_ev || !t->hold_timer || !t->held_ev) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < TPA_LATENCY_BUCKETS; i++)
		t->counters.bucket_le_ms[i] = bucket_le[i];
	if (!cfg->api_base_path || !cfg->api_import_path || !cfg->api_query_path ||
	    !cfg->api_query_param || !cfg->api_field_dev_eui || !cfg->api_field_join_eui ||
	    !cfg->api_field_tkm_info || !cfg->api_field_app_key || !cfg->api_field_owner_token ||
	    !cfg->api_field_ref || !cfg->api_field_hsm_group) {
		snprintf(err, errlen, "an api.* directive is empty");
		goto fail;
	}
	if ((cfg->api_base_path[0] && cfg->api_base_path[0] != '/') ||
	    strpbrk(cfg->api_base_path, " \r\n") || strpbrk(cfg->api_import_path, " \r\n") ||
	    strpbrk(cfg->api_query_path, " \r\n")) {
		snprintf(err, errlen,
			 "api.base-path and the api paths must be absolute, without spaces");
		goto fail;
	}
	if (cfg->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2 ||
	    cfg->upstream_auth == UPSTREAM_AUTH_OAUTH2) {
		t->oauth = true;
		if (!cfg->oauth2_client_id || !*cfg->oauth2_client_id) {
			snprintf(err, errlen, "oauth2.client-id is not set");
			goto fail;
		}
		if (token_path(t, err, errlen) < 0)
			goto fail;
		char secret[SECRET_MAX];
		int r =
		    cred_load_text("oauth-secret", cfg->oauth2_secret_file, secret, sizeof(secret));
		cred_wipe(secret, sizeof(secret));
		if (r < 0) {
			char why[256];
			snprintf(err, errlen, "cannot load the OAuth2 secret: %s",
				 cred_explain(r, "oauth-secret", cfg->oauth2_secret_file, why,
					      sizeof(why)));
			goto fail;
		}
	}
	if (cfg->api_owner_token_form == OWNER_TOKEN_AS_IS && !cfg->qr_template)
		log_warnx("api.owner-token-form = as-is: an ownerToken that is not hexadecimal "
			 "cannot be printed in a TR005 label in QR alphanumeric mode; such "
			 "labels are refused (stations still get the token). Use hex or base64 "
			 "if the cloud allows it.");
	const struct pool_options po = {
	    .url = cfg->upstream_url,
	    .sessions = cfg->upstream_sessions,
	    .queue = cfg->upstream_queue,
	    .connect_timeout_ms = cfg->upstream_connect_timeout_ms,
	    .handshake_timeout_ms = cfg->upstream_handshake_timeout_ms,
	    .request_timeout_ms = cfg->upstream_request_timeout_ms,
	    .backoff_min_ms = cfg->upstream_backoff_min_ms,
	    .backoff_max_ms = cfg->upstream_backoff_max_ms,
	    .breaker_threshold = cfg->upstream_breaker_threshold,
	    .breaker_cooldown_ms = cfg->upstream_breaker_cooldown_ms,
	    .max_response = cfg->upstream_max_response,
	    .cert_cb = cert_event,
	    .cert_arg = t,
	    .tls = {.mode = cfg->upstream_tls == UPSTREAM_TLS_CERT ? TLS_MODE_CERT : TLS_MODE_PSK,
		    .psk_identity = cfg->upstream_psk_identity,
		    .psk_credential = "tpa-psk",
		    .psk_file = cfg->upstream_psk_file,
		    .tls_min = cfg->upstream_tls_min == CONFIG_TLS_1_1 ? 1 : 2,
		    .ciphersuites = cfg->upstream_ciphersuites,
		    .ca_file = cfg->upstream_ca_file,
		    .pin_sha256 = cfg->upstream_pin_sha256,
		    .client_cert = cfg->upstream_client_cert,
		    .client_key_credential = "tpa-client-key",
		    .client_key_file = cfg->upstream_client_key_file},
	};
	char perr[256];
	t->pool = pool_new(base, &po, perr, sizeof(perr));
	if (t->pool)
		log_debug("upstream %s: %s", cfg->upstream_url,
			  strncmp(cfg->upstream_url, "http://", 7) == 0
			      ? "plain HTTP (loopback only)"
			  : cfg->upstream_tls == UPSTREAM_TLS_CERT ? "certificate TLS"
								   : "PSK TLS");
	if (!t->pool) {
		/* The pool names its own keys ("url: ..."); they are upstream.* here. */
		snprintf(err, errlen, "%s%s", strncmp(perr, "url:", 4) == 0 ? "upstream." : "",
			 perr);
		goto fail;
	}
	return t;
fail:
	tpa_free(t);
	return NULL;
}

/* Free everything; pending calls get no callback. */
void tpa_free(struct tpa *t)
{
	struct tpa_call *c;

	if (!t)
		return;
	pool_free(t->pool);
	if (t->fail_ev)
		event_free(t->fail_ev);
	if (t->hold_timer)
		event_free(t->hold_timer);
	if (t->held_ev)
		event_free(t->held_ev);
	while ((c = TAILQ_FIRST(&t->calls))) {
		TAILQ_REMOVE(&t->calls, c, link);
		call_free(c);
	}
	token_set(t, NULL);
	token_set(t, NULL); /* and the one before */
	free(t);
}

/* Calls in flight. */
size_t tpa_pending(const struct tpa *t)
{
	return t->n_calls;
}

/* Compare two latency samples for qsort(). */
static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* Percentile (0..100) of the recent latency samples, nearest rank; 0 without samples. */
static uint32_t latency_pct(const struct tpa *t, unsigned pct)
{
	uint32_t tmp[LATENCY_RING];

	if (!t->ring_len)
		return 0;
	memcpy(tmp, t->ring, t->ring_len * sizeof(tmp[0]));
	qsort(tmp, t->ring_len, sizeof(tmp[0]), cmp_u32);
	size_t rank = (pct * t->ring_len + 99) / 100;
	return tmp[rank ? rank - 1 : 0];
}

/* Status object: the pool's plus latency percentiles. */
json_t *tpa_status_json(struct tpa *t)
{
	json_t *o = pool_status_json(t->pool);

	if (!o)
		return NULL;
	json_t *oa = json_null();
	bool held = t->oauth && t->token_fails;
	if (t->oauth)
		oa = json_pack(
		    "{s:s, s:o, s:o, s:b, s:o, s:o}", "clientId", t->cfg->oauth2_client_id,
		    "customerId", t->customer_id[0] ? json_string(t->customer_id) : json_null(),
		    "tokenType", t->token_type[0] ? json_string(t->token_type) : json_null(),
		    "haveToken", t->token != NULL, "refused",
		    held && t->token_refused ? json_string(t->token_hold.reason) : json_null(),
		    "failing",
		    held && !t->token_refused ? json_string(t->token_hold.reason) : json_null());
	/* Without a token, or asked to wait, the link is down whatever the sessions say. */
	int wait = api_hold_left_s(t);
	if ((held && (t->token_refused || !token_usable(t))) || wait)
		json_object_set_new(o, "state", json_string("down"));
	json_object_set_new(o, "retryAfter", wait ? json_integer(wait) : json_null());
	json_object_set_new(o, "oauth2", oa ? oa : json_null());
	json_object_set_new(o, "latency",
			    json_pack("{s:I, s:I}", "p50", (json_int_t)latency_pct(t, 50), "p99",
				      (json_int_t)latency_pct(t, 99)));
	return o;
}

/* One line of health for STATUS=. */
void tpa_status_line(struct tpa *t, char *buf, size_t len)
{
	struct pool_stats st;
	const char *state = pool_state(t->pool);
	const char *err = pool_last_error(t->pool);

	pool_get_stats(t->pool, &st);
	const char *breaker = st.breaker == POOL_BREAKER_OPEN	     ? ", breaker open"
			      : st.breaker == POOL_BREAKER_HALF_OPEN ? ", breaker half-open"
								     : "";
	char held[96];
	int wait = api_hold_left_s(t);
	if (wait) {
		snprintf(held, sizeof(held), "the cloud asked to wait (HTTP %d), %d s more",
			 t->api_hold_status, wait);
		state = "down";
		err = held;
	} else if (t->oauth && t->token_fails && (t->token_refused || !token_usable(t))) {
		state = "down";
		err = t->token_refused ? "OAuth2 client refused" : "OAuth2 token endpoint failing";
	}
	bool show_err = strcmp(state, "ok") != 0 && err[0];
	snprintf(buf, len, "upstream %s %u/%u ready%s%s%s", state, st.up, st.sessions, breaker,
		 show_err ? ": " : "", show_err ? err : "");
}

/* Counters and the pool's stats. */
void tpa_get_counters(const struct tpa *t, struct tpa_counters *ret)
{
	*ret = t->counters;
	pool_get_stats(t->pool, &ret->pool);
}
