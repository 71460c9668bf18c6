/* sim_api: the simulated TPA API, its OAuth2 token endpoint, the control port and the registry. */
#include "sim.h"
#include "sim_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <fcntl.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "hex.h"

#define API_PATH "/maker/latest/api/factoryDevices"
#define TOKEN_PATH "/oauth/token"

uint64_t sim_random(struct sim *s)
{
	/* splitmix64: small, seedable, good enough for fault draws and fake tokens. */
	uint64_t z = (s->rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

bool sim_chance(struct sim *s, double p)
{
	if (p <= 0.0)
		return false;
	if (p >= 1.0)
		return true;
	return (double)(sim_random(s) >> 11) * 0x1.0p-53 < p;
}

void sim_random_hex(struct sim *s, char *out, size_t ndigits)
{
	static const char digits[] = "0123456789abcdef";
	uint64_t v = 0;
	for (size_t i = 0; i < ndigits; i++) {
		if (i % 16 == 0)
			v = sim_random(s);
		out[i] = digits[v & 15];
		v >>= 4;
	}
	out[ndigits] = '\0';
}

int64_t sim_wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t sim_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void reply_clear(struct sim_reply *r)
{
	if (!r)
		return;
	free(r->body);
	r->body = NULL;
}

/* Set the reply to status with the JSON value v as body; v is consumed. */
void reply_json(struct sim_reply *rep, int status, json_t *v)
{
	reply_clear(rep);
	rep->status = status;
	rep->body = v ? json_dumps(v, JSON_COMPACT) : NULL;
	if (v && !rep->body)
		rep->status = 500;
	json_decref(v);
}

/* Set the reply to an error object {"code","message"}. */
void reply_error(struct sim_reply *rep, int status, const char *code, const char *message)
{
	reply_json(rep, status, json_pack("{s:s, s:s}", "code", code, "message", message));
}

/* FNV-1a hash of a DevEUI, for the registry index. */
static size_t eui_hash(const char *eui)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *eui; eui++)
		h = (h ^ (unsigned char)*eui) * 0x100000001b3ULL;
	return (size_t)h;
}

/* Put device number i into the open-addressing index (which has room). */
static void index_insert(struct sim *s, size_t i)
{
	size_t mask = s->index_cap - 1;
	size_t h = eui_hash(s->devices[i].dev_eui) & mask;
	while (s->index[h])
		h = (h + 1) & mask;
	s->index[h] = i + 1;
}

/* Grow the index so that it stays at most half full; -ENOMEM. */
static int index_reserve(struct sim *s, size_t n)
{
	if (n * 2 <= s->index_cap)
		return 0;
	size_t cap = s->index_cap ? s->index_cap : 128;
	while (n * 2 > cap)
		cap *= 2;
	size_t *idx = calloc(cap, sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	free(s->index);
	s->index = idx;
	s->index_cap = cap;
	for (size_t i = 0; i < s->ndevices; i++)
		index_insert(s, i);
	return 0;
}

/* The registry entry for an upper-case DevEUI, or NULL. */
struct sim_device *device_find(struct sim *s, const char *dev_eui)
{
	if (!s->index_cap)
		return NULL;
	size_t mask = s->index_cap - 1;
	for (size_t h = eui_hash(dev_eui) & mask; s->index[h]; h = (h + 1) & mask)
		if (strcmp(s->devices[s->index[h] - 1].dev_eui, dev_eui) == 0)
			return &s->devices[s->index[h] - 1];
	return NULL;
}

/* A device as the API shows it, or with every stored field for the control port. */
json_t *device_json(const struct sim_device *d, bool full)
{
	char ref[32];
	snprintf(ref, sizeof(ref), "fd-%llu", (unsigned long long)d->ref);
	json_t *o = json_pack("{s:s, s:s, s:s, s:s}", "ref", ref, "ownerToken", d->owner_token,
			      "deviceEUI", d->dev_eui, "joinEUI", d->join_eui);
	if (o && d->tkm_info[0])
		json_object_set_new(o, "tkmInfo", json_string(d->tkm_info));
	if (!o || !full)
		return o;
	if (d->app_key[0])
		json_object_set_new(o, "appKey", json_string(d->app_key));
	if (d->hsm_group[0])
		json_object_set_new(o, "hsmGroupId", json_string(d->hsm_group));
	if (d->lands_at)
		json_object_set_new(o, "landsAt", json_integer(d->lands_at));
	if (d->foreign)
		json_object_set_new(o, "foreign", json_true());
	return o;
}

/* A device in an answer of the API: with its appKey when the fault echo_app_key asks. */
static json_t *api_device_json(const struct sim *s, const struct sim_device *d)
{
	json_t *o = device_json(d, false);
	if (o && s->faults.echo_app_key && d->app_key[0])
		json_object_set_new(o, "appKey", json_string(d->app_key));
	if (o && s->faults.note[0])
		json_object_set_new(o, "note", json_string(s->faults.note));
	return o;
}

/* Append a device to the registry and its index; -ENOMEM. */
static int device_add(struct sim *s, const struct sim_device *d)
{
	if (index_reserve(s, s->ndevices + 1) < 0)
		return -ENOMEM;
	if (s->ndevices == s->cap_devices) {
		size_t cap = s->cap_devices ? s->cap_devices * 2 : 64;
		struct sim_device *n = realloc(s->devices, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->devices = n;
		s->cap_devices = cap;
	}
	s->devices[s->ndevices] = *d;
	index_insert(s, s->ndevices);
	s->ndevices++;
	return 0;
}

/* Remove device number i (the last one takes its place) and rebuild the index. */
void device_remove(struct sim *s, size_t i)
{
	if (i >= s->ndevices)
		return;
	s->devices[i] = s->devices[s->ndevices - 1];
	s->ndevices--;
	memset(s->index, 0, s->index_cap * sizeof(*s->index));
	for (size_t k = 0; k < s->ndevices; k++)
		index_insert(s, k);
}

void sim_devices_free(struct sim *s)
{
	free(s->devices);
	free(s->index);
	s->devices = NULL;
	s->index = NULL;
	s->ndevices = s->cap_devices = s->index_cap = 0;
}

/*
 * Read an optional string member of o with exactly ndigits hex digits into out upper-cased.
 * 1 if present and valid, 0 if absent, -EINVAL otherwise.
 */
static int get_hex(json_t *o, const char *key, size_t ndigits, char *out)
{
	json_t *v = json_object_get(o, key);
	if (!v)
		return 0;
	if (!json_is_string(v) || !hex_valid(json_string_value(v), ndigits))
		return -EINVAL;
	hex_upper(out, json_string_value(v), ndigits);
	return 1;
}

/* POST factoryDevices: validate the record, then import it or apply the duplicate policy. */
static void api_import(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	json_error_t jerr;
	json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(o)) {
		json_decref(o);
		reply_error(rep, 400, "BAD_REQUEST", "body is not a JSON object");
		return;
	}
	struct sim_device d = {0};
	const char *bad = NULL;
	int tkm = get_hex(o, "tkmInfo", HEX_TKM_INFO, d.tkm_info);
	int key = get_hex(o, "appKey", HEX_APP_KEY, d.app_key);
	json_t *hsm = json_object_get(o, "hsmGroupId");
	if (get_hex(o, "deviceEUI", HEX_EUI, d.dev_eui) != 1)
		bad = "deviceEUI must be 16 hexadecimal digits";
	else if (get_hex(o, "joinEUI", HEX_EUI, d.join_eui) != 1)
		bad = "joinEUI must be 16 hexadecimal digits";
	else if (tkm < 0)
		bad = "tkmInfo must be 20 hexadecimal digits";
	else if (key < 0)
		bad = "appKey must be 32 hexadecimal digits";
	else if (tkm + key != 1)
		bad = "exactly one of tkmInfo and appKey is required";
	else if (hsm && (!json_is_string(hsm) || json_string_length(hsm) >= sizeof(d.hsm_group) ||
			 json_string_length(hsm) != strlen(json_string_value(hsm))))
		bad = "hsmGroupId must be a string of at most 64 characters";
	if (bad) {
		json_decref(o);
		reply_error(rep, 400, "BAD_REQUEST", bad);
		return;
	}
	if (hsm)
		strcpy(d.hsm_group, json_string_value(hsm));
	json_decref(o);
	if (s->faults.reject_message[0]) {
		reply_error(rep, 400, "BAD_REQUEST", s->faults.reject_message);
		return;
	}
	if (s->faults.reject_echo) {
		/* A validation message that quotes the request, as some APIs' do. */
		char msg[128];
		snprintf(msg, sizeof(msg), "appKey %s refused for device %s", d.app_key, d.dev_eui);
		reply_error(rep, 400, "BAD_REQUEST", msg);
		return;
	}

	struct sim_device *known = device_find(s, d.dev_eui);
	if (known) {
		s->counters.duplicate_imports++;
		switch (s->faults.duplicate) {
		case SIM_DUP_409: {
			char msg[96];
			snprintf(msg, sizeof(msg), "device %s is already imported", d.dev_eui);
			reply_error(rep, 409, "ALREADY_IMPORTED", msg);
			return;
		}
		case SIM_DUP_NEW:
			sim_random_hex(s, known->owner_token, SIM_TOKEN_HEX);
			registry_changed(s, known, NULL);
			break;
		case SIM_DUP_SAME:
			break;
		}
		reply_json(rep, 200, api_device_json(s, known));
		return;
	}
	d.ref = s->next_ref++;
	sim_random_hex(s, d.owner_token, SIM_TOKEN_HEX);
	/* A slow cloud: the device is processed, and visible to queries, only after this. */
	if (s->faults.import_latency_ms) {
		d.lands_at = sim_wall_ms() + s->faults.import_latency_ms;
		rep->delay_ms = s->faults.import_latency_ms;
	}
	if (device_add(s, &d) < 0) {
		reply_error(rep, 500, "INTERNAL", "out of memory");
		return;
	}
	s->counters.imports++;
	registry_changed(s, device_find(s, d.dev_eui), NULL);
	reply_json(rep, 201, api_device_json(s, &d));
}

/* GET factoryDevices?deviceEUI=X: an array with the matching device, or empty. */
static void api_query(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char eui[64];
	s->counters.queries++;
	if (http_query_param(req->target, "deviceEUI", eui, sizeof(eui)) < 0 ||
	    !hex_valid(eui, HEX_EUI)) {
		reply_error(rep, 400, "BAD_REQUEST", "deviceEUI must be 16 hexadecimal digits");
		return;
	}
	char up[HEX_EUI + 1];
	hex_upper(up, eui, HEX_EUI);
	json_t *a = json_array();
	struct sim_device *d = device_find(s, up);
	/* An import still being processed is not visible yet. */
	if (a && d && d->lands_at <= sim_wall_ms())
		json_array_append_new(a, api_device_json(s, d));
	rep->delay_ms = s->faults.query_latency_ms;
	reply_json(rep, 200, a);
}

/* Compare two strings in time independent of where they differ. */
static bool secret_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	unsigned char diff = la != lb;
	for (size_t i = 0; i < la && i < lb; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

/* POST /oauth/token with the client credentials grant. */
void api_token(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char grant[64], id[SIM_SECRET_MAX], secret[SIM_SECRET_MAX];
	s->counters.token_requests++;
	if (http_form_param(req->body, "grant_type", grant, sizeof(grant)) < 0 ||
	    strcmp(grant, "client_credentials") != 0) {
		reply_json(rep, 400, json_pack("{s:s}", "error", "unsupported_grant_type"));
		return;
	}
	if (http_form_param(req->body, "client_id", id, sizeof(id)) < 0 ||
	    http_form_param(req->body, "client_secret", secret, sizeof(secret)) < 0 ||
	    !secret_equal(id, s->client_id) || !secret_equal(secret, s->client_secret)) {
		explicit_bzero(secret, sizeof(secret));
		reply_json(rep, 401, json_pack("{s:s}", "error", "invalid_client"));
		return;
	}
	explicit_bzero(secret, sizeof(secret));
	if (s->faults.token_status) {
		/* A failing endpoint; 200 stands for a proxy's HTML page instead of a token. */
		s->counters.errors_injected++;
		reply_json(rep, s->faults.token_status,
			   s->faults.token_status == 200
			       ? json_pack("{s:s}", "message", "maintenance")
			       : json_pack("{s:s}", "error", "temporarily_unavailable"));
		if (s->faults.token_status == 429 || s->faults.token_status == 503)
			rep->retry_after = s->faults.retry_after;
		return;
	}
	/* Reuse an expired slot, or else the one that expires first. */
	uint64_t now = sim_now_ms();
	struct sim_token *slot = &s->tokens[0];
	for (size_t i = 0; i < SIM_TOKENS_MAX; i++) {
		if (s->tokens[i].expires_ms <= now) {
			slot = &s->tokens[i];
			break;
		}
		if (s->tokens[i].expires_ms < slot->expires_ms)
			slot = &s->tokens[i];
	}
	sim_random_hex(s, slot->token, SIM_TOKEN_HEX);
	slot->expires_ms = now + (uint64_t)s->token_ttl * 1000;
	reply_json(rep, 200,
		   json_pack("{s:s, s:s, s:I}", "access_token", slot->token, "token_type", "Bearer",
			     "expires_in", (json_int_t)s->token_ttl));
}

/* True if the request carries a valid, unexpired bearer token. */
bool api_authorized(struct sim *s, const struct http_request *req)
{
	if (s->faults.api_unauthorized || strncasecmp(req->authorization, "Bearer ", 7) != 0)
		return false;
	const char *tok = req->authorization + 7;
	uint64_t now = sim_now_ms();
	for (size_t i = 0; i < SIM_TOKENS_MAX; i++)
		if (s->tokens[i].expires_ms > now && secret_equal(tok, s->tokens[i].token))
			return true;
	return false;
}

/* Route one request of the API port, without faults. */
static void api_route(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char path[HTTP_TARGET_MAX];
	if (http_target_path(req->target, path, sizeof(path)) < 0) {
		reply_error(rep, 404, "NOT_FOUND", "no such resource");
		return;
	}
	if (s->dx && dx_route(s, req, path, rep))
		return;
	if (s->oauth2 && strcmp(path, TOKEN_PATH) == 0) {
		if (strcmp(req->method, "POST") != 0) {
			rep->allow = "POST";
			reply_error(rep, 405, "METHOD_NOT_ALLOWED", "use POST");
			return;
		}
		api_token(s, req, rep);
		return;
	}
	if (strcmp(path, API_PATH) != 0) {
		reply_error(rep, 404, "NOT_FOUND", "no such resource");
		return;
	}
	bool post = strcmp(req->method, "POST") == 0, get = strcmp(req->method, "GET") == 0;
	if (!post && !get) {
		rep->allow = "GET, POST";
		reply_error(rep, 405, "METHOD_NOT_ALLOWED", "use GET or POST");
		return;
	}
	if (s->oauth2 && !api_authorized(s, req)) {
		reply_error(rep, 401, "UNAUTHORIZED", "a valid bearer token is required");
		return;
	}
	if (post) {
		if (req->content_type[0] &&
		    strncasecmp(req->content_type, "application/json", 16) != 0) {
			reply_error(rep, 415, "UNSUPPORTED_MEDIA_TYPE", "send application/json");
			return;
		}
		api_import(s, req, rep);
	} else {
		api_query(s, req, rep);
	}
}

void api_handle(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	struct sim_faults *f = &s->faults;
	rep->action = SIM_ANSWER;
	if (sim_chance(s, f->drop_before_import)) {
		s->counters.errors_injected++;
		rep->action = SIM_DROP;
		return;
	}
	if (sim_chance(s, f->malformed)) {
		s->counters.errors_injected++;
		rep->action = SIM_GARBAGE;
		return;
	}
	if (sim_chance(s, f->rate_5xx)) {
		s->counters.errors_injected++;
		reply_error(rep, 503, "UNAVAILABLE", "service temporarily unavailable");
		return;
	}
	if (sim_chance(s, f->rate_429)) {
		s->counters.errors_injected++;
		rep->retry_after = f->retry_after;
		reply_error(rep, 429, "TOO_MANY_REQUESTS", "rate limit exceeded");
		return;
	}
	api_route(s, req, rep);
	if (sim_chance(s, f->drop_before_answer)) {
		s->counters.errors_injected++;
		reply_clear(rep);
		rep->action = SIM_DROP;
	}
}

/* The counters as a JSON object. */
static json_t *counters_json(struct sim *s)
{
	const struct sim_counters *c = &s->counters;
	return json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "imports", (json_int_t)c->imports,
	    "duplicate_imports", (json_int_t)c->duplicate_imports, "queries",
	    (json_int_t)c->queries, "connections", (json_int_t)c->connections, "handshakes",
	    (json_int_t)c->handshakes, "resumed", (json_int_t)c->resumed, "requests",
	    (json_int_t)c->requests, "errors_injected", (json_int_t)c->errors_injected,
	    "token_requests", (json_int_t)c->token_requests, "devices", (json_int_t)s->ndevices);
}

/* The name of a duplicate policy. */
static const char *duplicate_name(enum sim_duplicate d)
{
	return d == SIM_DUP_SAME ? "same" : d == SIM_DUP_NEW ? "new" : "409";
}

int sim_parse_duplicate(const char *v, enum sim_duplicate *ret)
{
	if (strcmp(v, "409") == 0)
		*ret = SIM_DUP_409;
	else if (strcmp(v, "same") == 0)
		*ret = SIM_DUP_SAME;
	else if (strcmp(v, "new") == 0)
		*ret = SIM_DUP_NEW;
	else
		return -EINVAL;
	return 0;
}

/* The fault settings as a JSON object. */
static json_t *faults_json(const struct sim_faults *f)
{
	return json_pack(
	    "{s:i, s:i, s:i, s:i, s:f, s:f, s:i, s:i, s:f, s:f, s:i, s:b, s:f, s:b, "
	    "s:s, s:i, s:b, s:b, s:b, s:s, s:s}",
	    "latency_ms", (int)f->latency_ms, "import_latency_ms", (int)f->import_latency_ms,
	    "query_latency_ms", (int)f->query_latency_ms, "jitter_ms", (int)f->jitter_ms,
	    "rate_5xx", f->rate_5xx, "rate_429", f->rate_429, "retry_after", (int)f->retry_after,
	    "reset_after", (int)f->reset_after, "drop_before_answer", f->drop_before_answer,
	    "drop_before_import", f->drop_before_import, "idle_close_ms", (int)f->idle_close_ms,
	    "slow", f->slow, "malformed", f->malformed, "refuse", f->refuse, "duplicate",
	    duplicate_name(f->duplicate), "token_status", (int)f->token_status, "api_unauthorized",
	    f->api_unauthorized, "echo_app_key", f->echo_app_key, "reject_echo", f->reject_echo,
	    "note", f->note, "reject_message", f->reject_message);
}

/* A text fault's value v into buf (size bytes): false if not a string that fits. */
static bool string_fault(json_t *v, char *buf, size_t size)
{
	const char *sv = json_string_value(v);
	if (!sv || strlen(sv) >= size)
		return false;
	memcpy(buf, sv, strlen(sv) + 1);
	return true;
}

/* Apply the members of o to a copy of the faults; all or nothing. NULL or an error text. */
static const char *faults_update(struct sim_faults *faults, json_t *o)
{
	struct sim_faults f = *faults;
	const char *key;
	json_t *v;
	json_object_foreach(o, key, v)
	{
		unsigned *u = NULL;
		double *p = NULL;
		bool *b = NULL;
		if (strcmp(key, "latency_ms") == 0)
			u = &f.latency_ms;
		else if (strcmp(key, "import_latency_ms") == 0)
			u = &f.import_latency_ms;
		else if (strcmp(key, "query_latency_ms") == 0)
			u = &f.query_latency_ms;
		else if (strcmp(key, "jitter_ms") == 0)
			u = &f.jitter_ms;
		else if (strcmp(key, "retry_after") == 0)
			u = &f.retry_after;
		else if (strcmp(key, "token_status") == 0)
			u = &f.token_status;
		else if (strcmp(key, "api_unauthorized") == 0)
			b = &f.api_unauthorized;
		else if (strcmp(key, "echo_app_key") == 0)
			b = &f.echo_app_key;
		else if (strcmp(key, "reject_echo") == 0)
			b = &f.reject_echo;
		else if (strcmp(key, "reset_after") == 0)
			u = &f.reset_after;
		else if (strcmp(key, "idle_close_ms") == 0)
			u = &f.idle_close_ms;
		else if (strcmp(key, "rate_5xx") == 0)
			p = &f.rate_5xx;
		else if (strcmp(key, "rate_429") == 0)
			p = &f.rate_429;
		else if (strcmp(key, "drop_before_answer") == 0)
			p = &f.drop_before_answer;
		else if (strcmp(key, "drop_before_import") == 0)
			p = &f.drop_before_import;
		else if (strcmp(key, "malformed") == 0)
			p = &f.malformed;
		else if (strcmp(key, "slow") == 0)
			b = &f.slow;
		else if (strcmp(key, "refuse") == 0)
			b = &f.refuse;
		else if (strcmp(key, "note") == 0) {
			if (!string_fault(v, f.note, sizeof(f.note)))
				return "note must be a string of at most 63 bytes";
			continue;
		} else if (strcmp(key, "reject_message") == 0) {
			if (!string_fault(v, f.reject_message, sizeof(f.reject_message)))
				return "reject_message must be a string of at most 1023 bytes";
			continue;
		} else if (strcmp(key, "duplicate") == 0) {
			char num[16];
			const char *sv = json_string_value(v);
			if (json_is_integer(v)) {
				snprintf(num, sizeof(num), "%lld",
					 (long long)json_integer_value(v));
				sv = num;
			}
			if (!sv || sim_parse_duplicate(sv, &f.duplicate) < 0)
				return "duplicate must be 409, \"same\" or \"new\"";
			continue;
		} else
			return "unknown fault";
		if (u) {
			if (!json_is_integer(v) || json_integer_value(v) < 0 ||
			    json_integer_value(v) > 86400000)
				return "expected an integer between 0 and 86400000";
			*u = (unsigned)json_integer_value(v);
		} else if (p) {
			if (!json_is_number(v) || json_number_value(v) < 0.0 ||
			    json_number_value(v) > 1.0)
				return "expected a probability between 0 and 1";
			*p = json_number_value(v);
		} else {
			if (!json_is_boolean(v))
				return "expected true or false";
			*b = json_is_true(v);
		}
	}
	*faults = f;
	return NULL;
}

/*
 * POST /devices {deviceEUI, joinEUI, tkmInfo | appKey}: a device imported elsewhere (by
 * another line or the console). It is not counted as an import; its answer carries the
 * token it was given.
 */
static void seed_device(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	json_error_t jerr;
	json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
	struct sim_device d = {0};
	int tkm = get_hex(o, "tkmInfo", HEX_TKM_INFO, d.tkm_info);
	int key = get_hex(o, "appKey", HEX_APP_KEY, d.app_key);
	bool ok = json_is_object(o) && get_hex(o, "deviceEUI", HEX_EUI, d.dev_eui) == 1 &&
		  get_hex(o, "joinEUI", HEX_EUI, d.join_eui) == 1 && tkm >= 0 && key >= 0 &&
		  tkm + key == 1;
	json_decref(o);
	if (!ok) {
		reply_error(rep, 400, "BAD_REQUEST",
			    "want {deviceEUI, joinEUI, and one of tkmInfo or appKey}");
		return;
	}
	if (device_find(s, d.dev_eui)) {
		reply_error(rep, 409, "ALREADY_IMPORTED", "device already in the registry");
		return;
	}
	d.ref = s->next_ref++;
	d.foreign = true;
	sim_random_hex(s, d.owner_token, SIM_TOKEN_HEX);
	if (device_add(s, &d) < 0) {
		reply_error(rep, 500, "INTERNAL", "out of memory");
		return;
	}
	registry_changed(s, device_find(s, d.dev_eui), NULL);
	reply_json(rep, 201, device_json(&d, true));
}

void control_handle(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char path[HTTP_TARGET_MAX];
	bool get = strcmp(req->method, "GET") == 0, post = strcmp(req->method, "POST") == 0;
	rep->action = SIM_ANSWER;
	if (http_target_path(req->target, path, sizeof(path)) < 0) {
		reply_error(rep, 404, "NOT_FOUND", "no such resource");
	} else if (dx_control(s, req, path, rep)) {
		/* answered by the DX Maker part (sim_dx.c) */
	} else if (strcmp(path, "/counters") == 0 && get) {
		reply_json(rep, 200, counters_json(s));
	} else if (strcmp(path, "/devices") == 0 && get) {
		json_t *a = json_array();
		for (size_t i = 0; a && i < s->ndevices; i++)
			json_array_append_new(a, device_json(&s->devices[i], true));
		reply_json(rep, 200, a);
	} else if (strcmp(path, "/devices") == 0 && strcmp(req->method, "DELETE") == 0) {
		sim_devices_free(s);
		registry_changed(s, NULL, NULL);
		reply_json(rep, 200, json_array());
	} else if (strcmp(path, "/devices") == 0 && post) {
		seed_device(s, req, rep);
	} else if (strcmp(path, "/faults") == 0 && get) {
		reply_json(rep, 200, faults_json(&s->faults));
	} else if (strcmp(path, "/faults") == 0 && post) {
		json_error_t jerr;
		json_t *o = json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr);
		const char *err =
		    json_is_object(o) ? faults_update(&s->faults, o) : "body is not a JSON object";
		json_decref(o);
		if (err)
			reply_error(rep, 400, "BAD_REQUEST", err);
		else
			reply_json(rep, 200, faults_json(&s->faults));
	} else if (strcmp(path, "/reset-counters") == 0 && post) {
		memset(&s->counters, 0, sizeof(s->counters));
		reply_json(rep, 200, counters_json(s));
	} else if (strcmp(path, "/revoke-tokens") == 0 && post) {
		/* Every OAuth2 token handed out stops working now, as after a key rotation. */
		memset(s->tokens, 0, sizeof(s->tokens));
		reply_json(rep, 200, json_pack("{s:b}", "revoked", 1));
	} else if (strcmp(path, "/counters") == 0 || strcmp(path, "/devices") == 0 ||
		   strcmp(path, "/faults") == 0 || strcmp(path, "/reset-counters") == 0 ||
		   strcmp(path, "/revoke-tokens") == 0) {
		reply_error(rep, 405, "METHOD_NOT_ALLOWED", "method not allowed here");
	} else {
		reply_error(rep, 404, "NOT_FOUND", "no such resource");
	}
}

#define JOURNAL_COMPACT_LINES 1000 /* then the whole registry is written anew */

void registry_changed(struct sim *s, const struct sim_device *d, const char *removed_eui)
{
	if (!s->registry_path || s->journal_fd < 0)
		return;
	json_t *line = d		? json_pack("{s:o}", "put", device_json(d, true))
		       : removed_eui ? json_pack("{s:s}", "del", removed_eui)
				     : json_pack("{s:b}", "clear", 1);
	char *text = line ? json_dumps(line, JSON_COMPACT) : NULL;
	json_decref(line);
	size_t n = text ? strlen(text) : 0;
	if (!text || write(s->journal_fd, text, n) != (ssize_t)n ||
	    write(s->journal_fd, "\n", 1) != 1)
		fprintf(stderr, "tpa-sim: cannot write the registry journal: %s\n",
			strerror(errno));
	free(text);
	s->journal_unsynced = true;
	/* Rewrites are coalesced: many changes, one file written now and then. */
	if (++s->journal_lines >= JOURNAL_COMPACT_LINES && s->save_ev)
		event_active(s->save_ev, EV_TIMEOUT, 0);
}

int registry_sync(struct sim *s)
{
	if (!s->journal_unsynced)
		return 0;
	s->journal_unsynced = false;
	return fdatasync(s->journal_fd) < 0 ? -errno : 0;
}

/* The journal's path, or -ENAMETOOLONG. */
static int journal_path(const struct sim *s, char *buf, size_t len)
{
	return snprintf(buf, len, "%s.journal", s->registry_path) >= (int)len ? -ENAMETOOLONG : 0;
}

int registry_save(struct sim *s)
{
	if (!s->registry_path)
		return 0;
	json_t *a = json_array();
	json_t *root = json_pack("{s:I, s:o}", "next_ref", (json_int_t)s->next_ref, "devices", a);
	if (!root)
		return -ENOMEM;
	for (size_t i = 0; i < s->ndevices; i++)
		if (json_array_append_new(a, device_json(&s->devices[i], true)) < 0) {
			json_decref(root);
			return -ENOMEM;
		}
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", s->registry_path) >= (int)sizeof(tmp)) {
		json_decref(root);
		return -ENAMETOOLONG;
	}
	FILE *f = fopen(tmp, "we");
	if (!f) {
		json_decref(root);
		return -errno;
	}
	int r = json_dumpf(root, f, JSON_INDENT(1)) < 0 ? -EIO : 0;
	json_decref(root);
	if (r == 0 && (fputc('\n', f) == EOF || fflush(f) != 0 || fsync(fileno(f)) < 0))
		r = -errno;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, s->registry_path) < 0)
		r = -errno;
	if (r < 0) {
		unlink(tmp);
		return r;
	}
	/* Everything is in the file now: the journal starts again (replaying an old one over
	 * it would do no harm either: every line is idempotent). */
	if (s->journal_fd >= 0 && ftruncate(s->journal_fd, 0) == 0)
		s->journal_lines = 0;
	return 0;
}

/* Copy a registry device from its JSON object; -EINVAL if a field is wrong. */
static int registry_device(json_t *o, struct sim_device *d)
{
	const char *ref = json_string_value(json_object_get(o, "ref"));
	const char *tok = json_string_value(json_object_get(o, "ownerToken"));
	json_t *hsm = json_object_get(o, "hsmGroupId");
	char *end;
	if (!json_is_object(o) || !ref || strncmp(ref, "fd-", 3) != 0 || !tok ||
	    !hex_valid(tok, SIM_TOKEN_HEX))
		return -EINVAL;
	d->ref = strtoull(ref + 3, &end, 10);
	if (*end || end == ref + 3)
		return -EINVAL;
	strcpy(d->owner_token, tok);
	int tkm = get_hex(o, "tkmInfo", HEX_TKM_INFO, d->tkm_info);
	int key = get_hex(o, "appKey", HEX_APP_KEY, d->app_key);
	if (get_hex(o, "deviceEUI", HEX_EUI, d->dev_eui) != 1 ||
	    get_hex(o, "joinEUI", HEX_EUI, d->join_eui) != 1 || tkm < 0 || key < 0 ||
	    tkm + key != 1)
		return -EINVAL;
	if (hsm) {
		if (!json_is_string(hsm) || json_string_length(hsm) >= sizeof(d->hsm_group))
			return -EINVAL;
		strcpy(d->hsm_group, json_string_value(hsm));
	}
	json_t *lands = json_object_get(o, "landsAt");
	if (lands && !json_is_integer(lands))
		return -EINVAL;
	d->lands_at = lands ? (int64_t)json_integer_value(lands) : 0;
	d->foreign = json_is_true(json_object_get(o, "foreign"));
	return 0;
}

/* The registry file as last written whole. */
static int registry_load_file(struct sim *s)
{
	if (access(s->registry_path, F_OK) < 0)
		return 0;
	json_error_t jerr;
	json_t *root = json_load_file(s->registry_path, JSON_REJECT_DUPLICATES, &jerr);
	json_t *a = json_object_get(root, "devices");
	json_t *next = json_object_get(root, "next_ref");
	int r = 0;
	if (!json_is_array(a) || !json_is_integer(next) || json_integer_value(next) < 1) {
		r = -EINVAL;
		goto out;
	}
	s->next_ref = (uint64_t)json_integer_value(next);
	size_t i;
	json_t *v;
	json_array_foreach(a, i, v)
	{
		struct sim_device d = {0};
		r = registry_device(v, &d);
		if (r == 0 && device_find(s, d.dev_eui))
			r = -EINVAL;
		if (r == 0)
			r = device_add(s, &d);
		if (r < 0)
			goto out;
		if (d.ref >= s->next_ref)
			s->next_ref = d.ref + 1;
	}
out:
	json_decref(root);
	return r;
}

/* Replay the journal's changes over the registry loaded; a torn last line is ignored. */
static int journal_replay(struct sim *s, const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	char *line = NULL;
	size_t cap = 0;
	int r = 0;
	while (r == 0 && getline(&line, &cap, f) > 0) {
		json_t *o = json_loads(line, 0, NULL);
		json_t *put = json_object_get(o, "put");
		const char *del = json_string_value(json_object_get(o, "del"));
		if (!o) {
			break; /* the last change, cut short by a crash: never answered */
		} else if (put) {
			struct sim_device d = {0};
			r = registry_device(put, &d);
			struct sim_device *known = r == 0 ? device_find(s, d.dev_eui) : NULL;
			if (known)
				*known = d;
			else if (r == 0)
				r = device_add(s, &d);
			if (r == 0 && d.ref >= s->next_ref)
				s->next_ref = d.ref + 1;
		} else if (del) {
			struct sim_device *known = device_find(s, del);
			if (known)
				device_remove(s, (size_t)(known - s->devices));
		} else if (json_is_true(json_object_get(o, "clear"))) {
			sim_devices_free(s);
		}
		json_decref(o);
		s->journal_lines++;
	}
	free(line);
	fclose(f);
	return r;
}

int registry_load(struct sim *s)
{
	s->journal_fd = -1;
	if (!s->registry_path)
		return 0;
	char path[4096];
	int r = journal_path(s, path, sizeof(path));
	if (r == 0)
		r = registry_load_file(s);
	if (r == 0)
		r = journal_replay(s, path);
	if (r == 0 && (s->journal_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
					     0600)) < 0)
		r = -errno;
	return r;
}

