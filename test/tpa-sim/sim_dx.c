/* sim_dx: the DX Maker API paths of tpa-sim (token form, paging, DELETE by ref, appKeyGens). */
#include "sim.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <mbedtls/base64.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/rsa.h>

#include "hex.h"
#include "sim_http.h"

#define DX_BASE "/maker/latest/api"
#define DX_DEVICES DX_BASE "/factoryDevices"
#define DX_KEYGENS DX_BASE "/appKeyGens"
#define DX_TOKEN "/admin/latest/api/oauth/token"
#define DX_PAGE 100
#define DX_KEYGEN_MAX 1000

/* True if id has the DX Maker form <platform>/<login>, both parts non-empty. */
static bool client_id_form(const char *id)
{
	const char *slash = strchr(id, '/');
	return slash && slash != id && slash[1] && !strchr(slash + 1, '/');
}

/* POST /admin/latest/api/oauth/token: the usual grant, answered the DX Maker way. */
static void dx_token(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char id[SIM_SECRET_MAX];
	if (http_form_param(req->body, "client_id", id, sizeof(id)) == 0 && !client_id_form(id)) {
		reply_json(rep, 401,
			   json_pack("{s:s, s:s}", "error", "invalid_client", "error_description",
				     "client_id must be <platform>/<login>"));
		return;
	}
	api_token(s, req, rep);
	if (rep->status != 200 || !rep->body)
		return;
	json_t *o = json_loads(rep->body, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return;
	}
	json_object_set_new(o, "token_type", json_string("bearer"));
	json_object_set_new(o, "client_id", json_string(s->client_id));
	json_object_set_new(o, "customer_id", json_string(s->customer_id));
	reply_json(rep, 200, o);
}

/*
 * POST factoryDevices: DX Maker refuses an import without hsmGroupId; else the usual
 * import runs (false). Imports carrying an hsmEncryptedAppKey (32 hex digits) are counted.
 */
static bool dx_import_check(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	json_t *o = json_loadb(req->body, req->body_len, 0, NULL);
	json_t *h = json_is_object(o) ? json_object_get(o, "hsmGroupId") : NULL;
	const char *k = json_string_value(json_object_get(o, "hsmEncryptedAppKey"));
	bool ok = !json_is_object(o) || (json_is_string(h) && json_string_length(h) > 0);
	if (ok && k && strlen(k) == 32 && hex_valid(k, 32))
		s->hsm_key_imports++;
	json_decref(o);
	if (!ok)
		reply_error(rep, 400, "BAD_REQUEST", "hsmGroupId is required");
	return !ok;
}

/* GET factoryDevices[?deviceEUI=X][&pageIndex=N]: pages of 100 devices, from index 0. */
static void dx_query(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char eui[64], page_s[32];
	unsigned long page = 0;
	bool have_eui = http_query_param(req->target, "deviceEUI", eui, sizeof(eui)) == 0;

	if (http_query_param(req->target, "pageIndex", page_s, sizeof(page_s)) == 0) {
		char *end;
		page = strtoul(page_s, &end, 10);
		if (!page_s[0] || *end || page > 1000000) {
			reply_error(rep, 400, "BAD_REQUEST", "pageIndex must be a number");
			return;
		}
	}
	if (have_eui && !hex_valid(eui, HEX_EUI)) {
		reply_error(rep, 400, "BAD_REQUEST", "deviceEUI must be 16 hexadecimal digits");
		return;
	}
	s->counters.queries++;
	json_t *a = json_array();
	if (have_eui && !s->query_unfiltered) {
		char up[HEX_EUI + 1];
		hex_upper(up, eui, HEX_EUI);
		struct sim_device *d = device_find(s, up);
		if (a && d && page == 0)
			json_array_append_new(a, device_json(d, false));
	} else {
		for (size_t i = page * DX_PAGE; a && i < s->ndevices && i < (page + 1) * DX_PAGE;
		     i++)
			json_array_append_new(a, device_json(&s->devices[i], false));
	}
	reply_json(rep, 200, a);
}

/* DELETE factoryDevices/{ref}: 204 when removed, 404 when there is no such ref. */
static void dx_delete(struct sim *s, const char *ref, struct sim_reply *rep)
{
	char want[48];
	for (size_t i = 0; i < s->ndevices; i++) {
		snprintf(want, sizeof(want), "fd-%llu", (unsigned long long)s->devices[i].ref);
		if (strcmp(want, ref) == 0) {
			char eui[sizeof(s->devices[i].dev_eui)];
			memcpy(eui, s->devices[i].dev_eui, sizeof(eui));
			device_remove(s, i);
			s->deletes++;
			registry_changed(s, NULL, eui);
			reply_clear(rep);
			rep->status = 204;
			return;
		}
	}
	reply_error(rep, 404, "NOT_FOUND", "no such factory device");
}

/* The random generator for RSA padding, set up on first use. */
static mbedtls_ctr_drbg_context *dx_rng(struct sim *s)
{
	static mbedtls_entropy_context entropy;
	if (s->dx_drbg)
		return s->dx_drbg;
	mbedtls_ctr_drbg_context *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	mbedtls_entropy_init(&entropy);
	mbedtls_ctr_drbg_init(d);
	if (mbedtls_ctr_drbg_seed(d, mbedtls_entropy_func, &entropy,
				  (const unsigned char *)"tpa-sim dx", 10) != 0) {
		mbedtls_ctr_drbg_free(d);
		free(d);
		return NULL;
	}
	s->dx_drbg = d;
	return d;
}

/*
 * POST appKeyGens?number=N {"publicKey": PEM or base64 DER of an RSA key}: N VendorKeys,
 * each AppKey (16 bytes) || hsmEncryptedAppKey (16 bytes) encrypted to the key with
 * RSAES-OAEP (SHA-256), base64: [{"vendorKey":"..."}, ...].
 */
static void dx_keygens(struct sim *s, const struct http_request *req, struct sim_reply *rep)
{
	char num[16];
	char *end;
	unsigned long n = 0;
	if (http_query_param(req->target, "number", num, sizeof(num)) == 0)
		n = strtoul(num, &end, 10);
	if (n == 0 || n > DX_KEYGEN_MAX) {
		reply_error(rep, 400, "BAD_REQUEST", "number must be 1 to 1000");
		return;
	}
	json_t *o = json_loadb(req->body, req->body_len, 0, NULL);
	const char *pub = json_string_value(json_object_get(o, "publicKey"));
	mbedtls_pk_context pk;
	mbedtls_pk_init(&pk);
	int m = -1;
	if (pub && strstr(pub, "-----BEGIN")) {
		m = mbedtls_pk_parse_public_key(&pk, (const unsigned char *)pub, strlen(pub) + 1);
	} else if (pub) {
		unsigned char der[2048];
		size_t len = 0;
		if (mbedtls_base64_decode(der, sizeof(der), &len, (const unsigned char *)pub,
					  strlen(pub)) == 0)
			m = mbedtls_pk_parse_public_key(&pk, der, len);
	}
	json_decref(o);
	mbedtls_ctr_drbg_context *rng = dx_rng(s);
	if (m != 0 || mbedtls_pk_get_type(&pk) != MBEDTLS_PK_RSA || !rng) {
		mbedtls_pk_free(&pk);
		reply_error(rep, 400, "BAD_REQUEST", "publicKey must be an RSA public key");
		return;
	}
	mbedtls_rsa_context *rsa = mbedtls_pk_rsa(pk);
	mbedtls_rsa_set_padding(rsa, MBEDTLS_RSA_PKCS_V21, MBEDTLS_MD_SHA256);
	json_t *a = json_array();
	for (unsigned long i = 0; a && i < n; i++) {
		unsigned char plain[32], ct[1024], b64[1400];
		size_t b64len = 0;
		for (size_t k = 0; k < sizeof(plain); k++)
			plain[k] = (unsigned char)sim_random(s);
		if (mbedtls_rsa_get_len(rsa) > sizeof(ct) ||
		    mbedtls_rsa_rsaes_oaep_encrypt(rsa, mbedtls_ctr_drbg_random, rng,
						   MBEDTLS_RSA_PUBLIC, NULL, 0, sizeof(plain),
						   plain, ct) != 0 ||
		    mbedtls_base64_encode(b64, sizeof(b64), &b64len, ct,
					  mbedtls_rsa_get_len(rsa)) != 0) {
			json_decref(a);
			a = NULL;
			break;
		}
		mbedtls_platform_zeroize(plain, sizeof(plain));
		json_array_append_new(a,
				      json_pack("{s:s%}", "vendorKey", (const char *)b64, b64len));
	}
	mbedtls_pk_free(&pk);
	if (!a) {
		reply_error(rep, 500, "INTERNAL", "cannot encrypt");
		return;
	}
	s->key_gens += n;
	reply_json(rep, 200, a);
	rep->delay_ms = s->keygen_delay_ms;
}

bool dx_route(struct sim *s, const struct http_request *req, const char *path,
	      struct sim_reply *rep)
{
	bool post = strcmp(req->method, "POST") == 0, get = strcmp(req->method, "GET") == 0;
	bool del = strcmp(req->method, "DELETE") == 0;

	if (strcmp(path, DX_TOKEN) == 0 && s->oauth2) {
		if (!post) {
			rep->allow = "POST";
			reply_error(rep, 405, "METHOD_NOT_ALLOWED", "use POST");
			return true;
		}
		dx_token(s, req, rep);
		return true;
	}
	bool devices = strcmp(path, DX_DEVICES) == 0;
	bool one = strncmp(path, DX_DEVICES "/", sizeof(DX_DEVICES)) == 0;
	bool keygens = strcmp(path, DX_KEYGENS) == 0;
	if (!devices && !one && !keygens)
		return false;
	if (s->oauth2 && !api_authorized(s, req)) {
		reply_error(rep, 401, "UNAUTHORIZED", "a valid bearer token is required");
		return true;
	}
	if (devices && post)
		return dx_import_check(s, req, rep);
	if (devices && get) {
		dx_query(s, req, rep);
		return true;
	}
	if (one && del) {
		s->delete_requests++;
		if (s->drop_delete_before) {
			s->drop_delete_before--;
			rep->action = SIM_DROP;
			return true;
		}
		dx_delete(s, path + sizeof(DX_DEVICES), rep);
		if (s->drop_delete_after) {
			s->drop_delete_after--;
			reply_clear(rep);
			rep->action = SIM_DROP;
		}
		return true;
	}
	if (keygens && post) {
		dx_keygens(s, req, rep);
		return true;
	}
	if (one || keygens) {
		rep->allow = one ? "DELETE" : "POST";
		reply_error(rep, 405, "METHOD_NOT_ALLOWED", one ? "use DELETE" : "use POST");
		return true;
	}
	return false;
}

bool dx_control(struct sim *s, const struct http_request *req, const char *path,
		struct sim_reply *rep)
{
	if (strcmp(path, "/dx") != 0)
		return false;
	if (strcmp(req->method, "POST") == 0) {
		json_t *o = json_loadb(req->body, req->body_len, 0, NULL);
		json_t *q = json_object_get(o, "query_unfiltered");
		json_t *db = json_object_get(o, "drop_delete_before");
		json_t *da = json_object_get(o, "drop_delete_after");
		json_t *kd = json_object_get(o, "keygen_delay_ms");
		if (!json_is_object(o) || (q && !json_is_boolean(q)) ||
		    (db && (!json_is_integer(db) || json_integer_value(db) < 0)) ||
		    (da && (!json_is_integer(da) || json_integer_value(da) < 0)) ||
		    (kd && (!json_is_integer(kd) || json_integer_value(kd) < 0 ||
			    json_integer_value(kd) > 600000))) {
			json_decref(o);
			reply_error(rep, 400, "BAD_REQUEST",
				    "want {\"query_unfiltered\": bool, \"drop_delete_before\": N, "
				    "\"drop_delete_after\": N, \"keygen_delay_ms\": N}");
			return true;
		}
		if (q)
			s->query_unfiltered = json_is_true(q);
		if (db)
			s->drop_delete_before = (unsigned)json_integer_value(db);
		if (da)
			s->drop_delete_after = (unsigned)json_integer_value(da);
		if (kd)
			s->keygen_delay_ms = (unsigned)json_integer_value(kd);
		json_decref(o);
	}
	reply_json(rep, 200,
		   json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:s}", "dx", s->dx, "query_unfiltered",
			     s->query_unfiltered, "deletes", (json_int_t)s->deletes,
			     "delete_requests", (json_int_t)s->delete_requests, "key_gens",
			     (json_int_t)s->key_gens, "hsm_key_imports",
			     (json_int_t)s->hsm_key_imports, "customer_id", s->customer_id));
	return true;
}

void dx_free(struct sim *s)
{
	if (s->dx_drbg) {
		mbedtls_ctr_drbg_free(s->dx_drbg);
		free(s->dx_drbg);
		s->dx_drbg = NULL;
	}
}
