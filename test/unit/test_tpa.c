/* Unit tests for the TPA profile's pure parts: answer rules, import body, OAuth2 answer. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tap.h"
#include "tpa.h"

static struct config cfg;

/* Interpret a body given as a C string. */
static void interp(bool query, int status, const char *body, const char *retry,
		   struct tpa_result *res)
{
	tpa_interpret(&cfg, query, status, body, body ? strlen(body) : 0, retry, 1000, res);
}

/* Import answers map to outcomes as UPSTREAM.md says. */
static void test_import_answers(void)
{
	struct tpa_result r;

	interp(false, 201, "{\"ref\":\"r-1\",\"ownerToken\":\"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"}",
	       NULL, &r);
	CHECK_INT(r.outcome, TPA_OK);
	CHECK_INT(r.http_status, 201);
	CHECK_STR(r.owner_token, "0A1B2C3D4E5F60718293A4B5C6D7E8F9");
	CHECK_STR(r.ref, "r-1");
	CHECK_INT(r.retry_after, -1);

	interp(false, 200, "{\"ref\":42,\"ownerToken\":\"AB\"}", NULL, &r);
	CHECK_INT(r.outcome, TPA_OK);
	CHECK_STR(r.ref, "42");

	/* A 2xx without a usable token: the cloud may hold it, so unknown. */
	const char *bad2xx[] = {
	    "{\"ref\":\"r\"}",
	    "{\"ownerToken\":\"not hex\"}",
	    "{\"ownerToken\":12}",
	    "{\"ownerToken\":\"\"}",
	    "[{\"ownerToken\":\"AB\"}]",
	    "<html>oops</html>",
	    "",
	    NULL,
	};
	for (size_t i = 0; i < sizeof(bad2xx) / sizeof(bad2xx[0]); i++) {
		interp(false, 200, bad2xx[i], NULL, &r);
		CHECK_INT(r.outcome, TPA_UNKNOWN);
		CHECK(strstr(r.reason, "ownerToken") != NULL);
		CHECK_STR(r.owner_token, "");
	}
	char longtok[300] = "{\"ownerToken\":\"";
	size_t l = strlen(longtok);
	memset(longtok + l, 'A', 129);
	strcpy(longtok + l + 129, "\"}");
	interp(false, 200, longtok, NULL, &r);
	CHECK_INT(r.outcome, TPA_UNKNOWN);

	interp(false, 409, "{\"code\":409,\"message\":\"device already imported\"}", NULL, &r);
	CHECK_INT(r.outcome, TPA_CONFLICT);
	CHECK_STR(r.code, "409");
	CHECK_STR(r.message, "device already imported");

	interp(false, 429, "{\"code\":\"TOO_MANY\",\"message\":\"slow down\"}", "7", &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.retry_after, 7);
	CHECK_STR(r.code, "TOO_MANY");
	CHECK(strstr(r.reason, "429") != NULL);

	interp(false, 503, "not json", NULL, &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.retry_after, -1);
	CHECK_STR(r.code, "");

	interp(false, 500, NULL, "junk", &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.retry_after, -1);

	interp(false, 400, "{\"code\":\"BAD_REQUEST\",\"message\":\"tkmInfo is invalid\"}", NULL,
	       &r);
	CHECK_INT(r.outcome, TPA_REJECTED);
	CHECK_INT(r.http_status, 400);
	CHECK_STR(r.code, "BAD_REQUEST");
	CHECK_STR(r.message, "tkmInfo is invalid");

	interp(false, 401, "", NULL, &r);
	CHECK_INT(r.outcome, TPA_REJECTED);
	interp(false, 403, "{}", NULL, &r);
	CHECK_INT(r.outcome, TPA_REJECTED);
	interp(false, 404, "{}", NULL, &r);
	CHECK_INT(r.outcome, TPA_REJECTED);
	interp(false, 302, "", NULL, &r);
	CHECK_INT(r.outcome, TPA_REJECTED);
}

/* Query answers: a list with a token, an empty list, or something unusable. */
static void test_query_answers(void)
{
	struct tpa_result r;

	interp(true, 200, "[]", NULL, &r);
	CHECK_INT(r.outcome, TPA_NOT_FOUND);
	interp(true, 200, "[{\"deviceEUI\":\"0123\",\"ref\":\"x\",\"ownerToken\":\"abcdef\"}]",
	       NULL, &r);
	CHECK_INT(r.outcome, TPA_OK);
	CHECK_STR(r.owner_token, "ABCDEF");
	CHECK_STR(r.ref, "x");
	interp(true, 200, "{\"ownerToken\":\"abcdef\"}", NULL, &r);
	CHECK_INT(r.outcome, TPA_OK);
	interp(true, 200, "{}", NULL, &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	interp(true, 200, "[{\"ownerToken\":null}]", NULL, &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	interp(true, 200, "[", NULL, &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	interp(true, 409, "{}", NULL, &r);
	CHECK_INT(r.outcome, TPA_REJECTED);
	interp(true, 503, "{}", "Thu, 01 Jan 1970 00:17:00 GMT", &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.retry_after, 20);

	/* Field names come from the configuration. */
	free(cfg.api_field_owner_token);
	cfg.api_field_owner_token = strdup("token");
	interp(true, 200, "[{\"token\":\"12\"}]", NULL, &r);
	CHECK_INT(r.outcome, TPA_OK);
	CHECK_STR(r.owner_token, "12");
	interp(true, 200, "[{\"ownerToken\":\"12\"}]", NULL, &r);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	free(cfg.api_field_owner_token);
	cfg.api_field_owner_token = strdup("ownerToken");
}

/* The import body carries upper-case hex under the configured names. */
static void test_import_body(void)
{
	struct tpa_record rec = {
	    .dev_eui = "0123d345666e2dbd",
	    .join_eui = "70B3D57ED0000000",
	    .tkm_info = "31110123d345666e2dbd",
	};
	char *body = NULL;
	size_t len = 0;

	CHECK_INT(tpa_import_body(&cfg, &rec, &body, &len), 0);
	CHECK_STR(body, "{\"deviceEUI\":\"0123D345666E2DBD\",\"joinEUI\":\"70B3D57ED0000000\","
			"\"tkmInfo\":\"31110123D345666E2DBD\"}");
	CHECK_INT(len, strlen(body));
	free(body);

	struct tpa_record key = {
	    .dev_eui = "0123D345666E2DBD",
	    .join_eui = "70B3D57ED0000000",
	    .app_key = "000102030405060708090a0b0c0d0e0f",
	};
	cfg.api_hsm_group = strdup("grp\"1");
	body = NULL;
	CHECK_INT(tpa_import_body(&cfg, &key, &body, &len), 0);
	CHECK_STR(body,
		  "{\"deviceEUI\":\"0123D345666E2DBD\",\"joinEUI\":\"70B3D57ED0000000\","
		  "\"appKey\":\"000102030405060708090A0B0C0D0E0F\",\"hsmGroupId\":\"grp\\\"1\"}");
	free(body);
	free(cfg.api_hsm_group);
	cfg.api_hsm_group = NULL;

	/* Exactly one of TKM_INFO and AppKey, each well-formed. */
	struct tpa_record bad = key;
	strcpy(bad.tkm_info, "31110123D345666E2DBD");
	body = NULL;
	CHECK_INT(tpa_import_body(&cfg, &bad, &body, &len), -EINVAL);
	CHECK(body == NULL);
	bad = key;
	bad.app_key[0] = '\0';
	CHECK_INT(tpa_import_body(&cfg, &bad, &body, &len), -EINVAL);
	bad = key;
	bad.app_key[31] = 'g';
	CHECK_INT(tpa_import_body(&cfg, &bad, &body, &len), -EINVAL);
	bad = rec;
	bad.dev_eui[15] = '\0';
	CHECK_INT(tpa_import_body(&cfg, &bad, &body, &len), -EINVAL);
	bad = rec;
	bad.join_eui[0] = 'x';
	CHECK_INT(tpa_import_body(&cfg, &bad, &body, &len), -EINVAL);
	bad = rec;
	bad.tkm_info[19] = '\0';
	CHECK_INT(tpa_import_body(&cfg, &bad, &body, &len), -EINVAL);
	CHECK(body == NULL);
}

/* OAuth2 token answers are checked before use. */
static void test_oauth2(void)
{
	char tok[64];
	long exp = 0;
	const char *good = "{\"access_token\":\"abc.DEF-123\",\"token_type\":\"Bearer\","
			   "\"expires_in\":120}";

	CHECK_INT(tpa_oauth2_parse(good, strlen(good), tok, sizeof(tok), &exp), 0);
	CHECK_STR(tok, "abc.DEF-123");
	CHECK_INT(exp, 120);
	const char *deflt = "{\"access_token\":\"t\"}";
	CHECK_INT(tpa_oauth2_parse(deflt, strlen(deflt), tok, sizeof(tok), &exp), 0);
	CHECK_INT(exp, 3600);

	const char *bad[] = {
	    "{}",
	    "[]",
	    "nope",
	    "{\"access_token\":\"\"}",
	    "{\"access_token\":\"a b\"}",
	    "{\"access_token\":\"a\\r\\nX: y\"}",
	    "{\"access_token\":7}",
	    "{\"access_token\":\"t\",\"token_type\":\"mac\"}",
	    "{\"access_token\":\"t\",\"expires_in\":-5}",
	    "{\"access_token\":\"t\",\"expires_in\":\"60s\"}",
	    "{\"access_token\":\"t\",\"expires_in\":\" 60\"}",
	    "{\"access_token\":\"t\",\"expires_in\":\"0\"}",
	    "{\"access_token\":\"t\",\"expires_in\":1.5}",
	    "{\"access_token\":\"t\",\"expires_in\":0.0}",
	    "{\"access_token\":\"t\",\"expires_in\":true}",
	    ("{\"access_token\":\"0123456789012345678901234567890123456789012345678901234567890"
	     "123456789\"}"),
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		exp = 99;
		CHECK_INT(tpa_oauth2_parse(bad[i], strlen(bad[i]), tok, sizeof(tok), &exp),
			  -EBADMSG);
		CHECK_INT(exp, 99);
	}
}

/* DX Maker: token_type as spelled, customer_id kept for Status. */
static void test_oauth2_reply(void)
{
	struct tpa_oauth2_reply r;
	const char *dx = "{\"access_token\":\"eyJ.x\",\"token_type\":\"bearer\",\"expires_in\":"
			 "300,\"client_id\":\"js-labs-api/maker1\",\"customer_id\":\"100001234\"}";
	CHECK_INT(tpa_oauth2_parse_reply(dx, strlen(dx), &r), 0);
	CHECK_STR(r.token_type, "bearer");
	CHECK_STR(r.customer_id, "100001234");
	CHECK_STR(r.client_id, "js-labs-api/maker1");
	CHECK_INT(r.expires_in, 300);
	const char *num = "{\"access_token\":\"t\",\"customer_id\":42}";
	CHECK_INT(tpa_oauth2_parse_reply(num, strlen(num), &r), 0);
	CHECK_STR(r.customer_id, "42");
	CHECK_STR(r.token_type, "Bearer");
	const char *ctl = "{\"access_token\":\"t\",\"customer_id\":\"a\\nb\"}";
	CHECK_INT(tpa_oauth2_parse_reply(ctl, strlen(ctl), &r), 0);
	CHECK_STR(r.customer_id, "");
	/* expires_in as some servers write it: a string of digits, a whole real. */
	const char *str = "{\"access_token\":\"t\",\"expires_in\":\"3600\"}";
	CHECK_INT(tpa_oauth2_parse_reply(str, strlen(str), &r), 0);
	CHECK_INT(r.expires_in, 3600);
	const char *real = "{\"access_token\":\"t\",\"expires_in\":1800.0}";
	CHECK_INT(tpa_oauth2_parse_reply(real, strlen(real), &r), 0);
	CHECK_INT(r.expires_in, 1800);
	/* A refused answer says which member. */
	const struct {
		const char *body, *why;
	} why[] = {
	    {"[]", "the answer is not a JSON object"},
	    {"{}", "no access_token"},
	    {"{\"access_token\":\"a b\"}",
	     "access_token holds a character other than printable ASCII"},
	    {"{\"access_token\":\"t\",\"token_type\":\"mac\"}", "token_type \"mac\" is not Bearer"},
	    {"{\"access_token\":\"t\",\"token_type\":5}", "token_type is not the string Bearer"},
	    {"{\"access_token\":\"t\",\"token_type\":[]}", "token_type is not the string Bearer"},
	    {"{\"access_token\":\"t\",\"expires_in\":\"1h\"}",
	     "expires_in is not a positive whole number of seconds"},
	};
	for (size_t i = 0; i < sizeof(why) / sizeof(why[0]); i++) {
		CHECK_INT(tpa_oauth2_parse_reply(why[i].body, strlen(why[i].body), &r), -EBADMSG);
		CHECK_STR(r.why, why[i].why);
	}
	static char long_tok[5000];
	int n = snprintf(long_tok, sizeof(long_tok), "{\"access_token\":\"");
	memset(long_tok + n, 'a', 4096);
	strcpy(long_tok + n + 4096, "\"}");
	CHECK_INT(tpa_oauth2_parse_reply(long_tok, strlen(long_tok), &r), -EBADMSG);
	CHECK_STR(r.why, "access_token over 4095 characters");
}

/* api.owner-token-form: hex, base64 (to hex), as-is. */
static void test_owner_token_forms(void)
{
	char out[129];
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_HEX, "a1b2", out, sizeof(out)), 0);
	CHECK_STR(out, "A1B2");
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_HEX, "q1", out, sizeof(out)), -EINVAL);
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_BASE64, "3q2+7w==", out, sizeof(out)), 0);
	CHECK_STR(out, "DEADBEEF");
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_BASE64, "3q2+7w=", out, sizeof(out)),
		  -EINVAL);
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_BASE64, "", out, sizeof(out)), -EINVAL);
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_AS_IS, "Ab+/9=", out, sizeof(out)), 0);
	CHECK_STR(out, "Ab+/9=");
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_AS_IS, "a:b", out, sizeof(out)), -EINVAL);
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_AS_IS, "a b", out, sizeof(out)), -EINVAL);
	char small[4];
	CHECK_INT(tpa_owner_token_convert(OWNER_TOKEN_HEX, "a1b2", small, sizeof(small)), -EINVAL);
}

/* A query answer is searched for the DevEUI asked; a full page without it asks for more. */
static void test_query_paging(void)
{
	struct tpa_result res;
	bool more = true;
	const char *two = "[{\"deviceEUI\":\"0000000000000001\",\"ownerToken\":\"aa\",\"ref\":\"r1\"},"
			  "{\"deviceEUI\":\"70b3d50000000002\",\"ownerToken\":\"bb\",\"ref\":\"r2\"}]";
	tpa_interpret_query(&cfg, true, "70B3D50000000002", 200, two, strlen(two), NULL, 0, &res,
			    &more);
	CHECK_INT(res.outcome, TPA_OK);
	CHECK_STR(res.owner_token, "BB");
	CHECK_STR(res.ref, "r2");
	CHECK(!more);
	tpa_interpret_query(&cfg, true, "70B3D50000000009", 200, two, strlen(two), NULL, 0, &res,
			    &more);
	CHECK_INT(res.outcome, TPA_NOT_FOUND);
	CHECK(!more); /* 2 < page size 100: the last page */
	uint32_t saved = cfg.api_query_page_size;
	cfg.api_query_page_size = 2;
	tpa_interpret_query(&cfg, true, "70B3D50000000009", 200, two, strlen(two), NULL, 0, &res,
			    &more);
	CHECK_INT(res.outcome, TPA_NOT_FOUND);
	CHECK(more);
	cfg.api_query_page_size = saved;
}

/* DELETE by ref. */
static void test_delete_answers(void)
{
	struct tpa_result res;
	tpa_interpret_delete(204, NULL, 0, NULL, 0, &res);
	CHECK_INT(res.outcome, TPA_OK);
	tpa_interpret_delete(404, "{\"code\":\"NOT_FOUND\"}", 20, NULL, 0, &res);
	CHECK_INT(res.outcome, TPA_NOT_FOUND);
	CHECK_STR(res.code, "NOT_FOUND");
	tpa_interpret_delete(503, NULL, 0, "7", 0, &res);
	CHECK_INT(res.outcome, TPA_UNAVAILABLE);
	CHECK_INT(res.retry_after, 7);
	tpa_interpret_delete(403, "{\"message\":\"no\"}", 16, NULL, 0, &res);
	CHECK_INT(res.outcome, TPA_REJECTED);
}

int main(void)
{
	config_defaults(&cfg);
	test_oauth2_reply();
	test_owner_token_forms();
	test_query_paging();
	test_delete_answers();
	test_import_answers();
	test_query_answers();
	test_import_body();
	test_oauth2();
	CHECK_STR(tpa_outcome_name(TPA_UNKNOWN), "unknown");
	CHECK_STR(tpa_outcome_name(TPA_NOT_FOUND), "not_found"); /* as activations' label */
	config_free(&cfg);
	return tap_done();
}
