/* Unit tests for call decoding, the method table, validation and reply encoding. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "iface.h"
#include "message.h"
#include "tap.h"

/* Decode text as a call; expect failure naming parameter when parameter is not NULL. */
static void expect_decode_fail(const char *text, const char *parameter)
{
	struct call c = {0};
	/* Whatever the fault held before, only a call that says oneway is answered with none. */
	struct proto_fault f = {.oneway = true};
	CHECK_INT(call_decode(text, strlen(text), &c, &f), -EINVAL);
	CHECK(f.oneway == (strstr(text, "\"oneway\":true") != NULL));
	CHECK_STR(f.error, PROTO_ERR_INVALID_PARAMETER);
	CHECK_STR(f.parameter, parameter);
	CHECK(f.reason[0] != '\0');
	CHECK(c.method == NULL && c.parameters == NULL);
}

static void test_decode(void)
{
	struct call c = {0};
	struct proto_fault f = {0};
	const char *m = "{\"method\":\"io.tpad.Station.Lookup\",\"parameters\":{\"devEUI\":\"x\"},"
			"\"more\":true,\"extra\":[1]}";
	CHECK_INT(call_decode(m, strlen(m), &c, &f), 0);
	CHECK_STR(c.method, "io.tpad.Station.Lookup");
	CHECK(json_is_object(c.parameters));
	CHECK_STR(json_string_value(json_object_get(c.parameters, "devEUI")), "x");
	CHECK(c.more && !c.oneway);
	call_clear(&c);
	CHECK(c.method == NULL && c.parameters == NULL);
	call_clear(&c);

	m = "{\"method\":\"org.varlink.service.GetInfo\",\"oneway\":true}";
	CHECK_INT(call_decode(m, strlen(m), &c, &f), 0);
	CHECK(json_is_object(c.parameters) && json_object_size(c.parameters) == 0);
	CHECK(!c.more && c.oneway);
	call_clear(&c);

	/* The length is what counts, not a NUL. */
	m = "{\"method\":\"a.b\"}garbage";
	CHECK_INT(call_decode(m, 16, &c, &f), 0);
	CHECK_STR(c.method, "a.b");
	call_clear(&c);

	/* An integer beyond 64 bits is valid JSON: the call decodes, the number stays a real
	 * (its parameter's check names it), the other numbers stay integers. */
	m = "{\"method\":\"io.tpad.Station.Activate\",\"parameters\":{\"devEUI\":"
	    "\"0123456789ABCDEF\",\"qr\":{\"scale\":99999999999999999999,\"margin\":2}}}";
	CHECK_INT(call_decode(m, strlen(m), &c, &f), 0);
	json_t *qr = json_object_get(c.parameters, "qr");
	CHECK(json_is_real(json_object_get(qr, "scale")));
	CHECK(json_is_integer(json_object_get(qr, "margin")));
	CHECK_INT(proto_validate(proto_method_find(c.method), c.parameters, &f), -EINVAL);
	CHECK_STR(f.parameter, "qr.scale");
	call_clear(&c);

	expect_decode_fail("", "");
	expect_decode_fail("{", "");
	expect_decode_fail("not json", "");
	expect_decode_fail("[1,2]", "");
	expect_decode_fail("\"method\"", "");
	expect_decode_fail("{\"method\":\"a.b\"} {}", "");
	expect_decode_fail("{\"method\":\"a.b\",\"method\":\"a.c\"}", "");
	expect_decode_fail("{\"parameters\":{}}", "method");
	expect_decode_fail("{\"method\":\"a.b\",\"upgrade\":true}", "upgrade");
	expect_decode_fail("{\"method\":\"a.b\",\"upgrade\":1}", "upgrade");
	expect_decode_fail("{\"method\":42}", "method");
	expect_decode_fail("{\"method\":null}", "method");
	expect_decode_fail("{\"method\":\"a.b\",\"parameters\":[]}", "parameters");
	expect_decode_fail("{\"method\":\"a.b\",\"parameters\":\"x\"}", "parameters");
	expect_decode_fail("{\"method\":\"a.b\",\"more\":1}", "more");
	expect_decode_fail("{\"method\":\"a.b\",\"oneway\":\"yes\"}", "oneway");
	/* oneway wins over more: the call is done and nothing is sent. */
	m = "{\"method\":\"org.varlink.service.GetInfo\",\"more\":true,\"oneway\":true}";
	CHECK_INT(call_decode(m, strlen(m), &c, &f), 0);
	CHECK(!c.more && c.oneway);
	call_clear(&c);
	expect_decode_fail("{\"method\":\"a\\u0000b\"}", "");
}

/* Look up method on socket; expect error naming what (NULL error: expect success). */
static void expect_lookup(const char *method, unsigned sock, const char *error, const char *what)
{
	const struct method_spec *m = NULL;
	struct proto_fault f = {0};
	int r = proto_method_lookup(method, sock, &m, &f);
	if (!error) {
		CHECK_INT(r, 0);
		CHECK(m && strcmp(m->name, method) == 0);
		return;
	}
	CHECK_INT(r, -ENOENT);
	CHECK(m == NULL);
	CHECK_STR(f.error, error);
	CHECK_STR(f.parameter, what);
}

static void test_lookup(void)
{
	expect_lookup("io.tpad.Station.Activate", PROTO_SOCKET_STATION, NULL, NULL);
	expect_lookup("io.tpad.Admin.Import", PROTO_SOCKET_ADMIN, NULL, NULL);
	expect_lookup("org.varlink.service.GetInfo", PROTO_SOCKET_STATION, NULL, NULL);
	expect_lookup("org.varlink.service.GetInfo", PROTO_SOCKET_ADMIN, NULL, NULL);
	expect_lookup("io.tpad.Admin.Status", PROTO_SOCKET_STATION, PROTO_ERR_INTERFACE_NOT_FOUND,
		      "io.tpad.Admin");
	expect_lookup("io.tpad.Station.Lookup", PROTO_SOCKET_ADMIN, PROTO_ERR_INTERFACE_NOT_FOUND,
		      "io.tpad.Station");
	expect_lookup("io.tpad.Station.Status", PROTO_SOCKET_STATION, PROTO_ERR_METHOD_NOT_FOUND,
		      "io.tpad.Station.Status");
	expect_lookup("io.tpad.Station.activate", PROTO_SOCKET_STATION, PROTO_ERR_METHOD_NOT_FOUND,
		      "io.tpad.Station.activate");
	expect_lookup("com.example.Foo", PROTO_SOCKET_ANY, PROTO_ERR_INTERFACE_NOT_FOUND,
		      "com.example");
	expect_lookup("Activate", PROTO_SOCKET_STATION, PROTO_ERR_METHOD_NOT_FOUND, "Activate");
	expect_lookup("", PROTO_SOCKET_STATION, PROTO_ERR_METHOD_NOT_FOUND, "");
	CHECK(proto_method_find("io.tpad.Admin.Metrics") != NULL);
	CHECK(proto_method_find("io.tpad.Admin") == NULL);
	CHECK(proto_method_find(NULL) == NULL);

	const struct method_spec *m = proto_method_find("io.tpad.Admin.Export");
	CHECK(m && m->streams && m->sockets == PROTO_SOCKET_ADMIN);
	CHECK_STR(m ? m->interface : NULL, "io.tpad.Admin");
	CHECK_STR(m ? m->member : NULL, "Export");
	m = proto_method_find("org.varlink.service.GetInterfaceDescription");
	CHECK(m && !m->streams && m->sockets == PROTO_SOCKET_ANY);
}

/* Validate JSON params for method; NULL parameter: expect success. */
static void expect_valid(const char *method, const char *json, const char *error,
			 const char *parameter, const char *reason)
{
	const struct method_spec *m = proto_method_find(method);
	CHECK(m != NULL);
	if (!m)
		return;
	json_t *p = json_loads(json, 0, NULL);
	CHECK(p != NULL);
	struct proto_fault f = {0};
	int r = proto_validate(m, p, &f);
	if (!parameter) {
		CHECK_INT(r, 0);
		if (r < 0)
			fprintf(stderr, "  %s %s: %s %s\n", method, json, f.parameter, f.reason);
	} else {
		CHECK_INT(r, -EINVAL);
		CHECK_STR(f.error, error);
		CHECK_STR(f.parameter, parameter);
		if (reason)
			CHECK_STR(f.reason, reason);
	}
	json_decref(p);
}

#define ST "io.tpad.Station.InvalidParameter"
#define AD "io.tpad.Admin.InvalidParameter"

static void test_validate(void)
{
	const char *act = "io.tpad.Station.Activate";
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"tkmInfo\":\"31110123D345666E2DBD\"}",
		     NULL, NULL, NULL);
	expect_valid(act,
		     "{\"devEUI\":\"0123456789ABCDEF\",\"joinEUI\":\"70b3d57ed0000000\","
		     "\"profileId\":\"0000abcd\",\"serial\":\"SN-0001/A\","
		     "\"appKey\":\"000102030405060708090a0b0c0d0e0f\",\"generateAppKey\":false,"
		     "\"qr\":{\"format\":\"png\",\"scale\":4,\"margin\":0,\"ecLevel\":\"Q\"},"
		     "\"whatever\":{\"x\":[1]}}",
		     NULL, NULL, NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"serial\":null,\"qr\":null}", NULL,
		     NULL, NULL);
	expect_valid(act, "{}", ST, "devEUI", "is required");
	expect_valid(act, "{\"devEUI\":null}", ST, "devEUI", "is required");
	expect_valid(act, "{\"devEUI\":42}", ST, "devEUI", "must be 16 hexadecimal digits");
	expect_valid(act, "{\"devEUI\":\"01-23-45-67-89-ab-cd-ef\"}", ST, "devEUI",
		     "must be 16 hexadecimal digits; character 3 is '-': give the digits alone, "
		     "without 0x, spaces, dashes or colons");
	expect_valid(act, "{\"devEUI\":\"0123456789abcde\\u00e9\"}", ST, "devEUI",
		     "must be 16 hexadecimal digits; character 16 is not a hexadecimal digit");
	expect_valid(act, "{\"devEUI\":\"0123456789abcde\"}", ST, "devEUI", NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef0\"}", ST, "devEUI", NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdeg\"}", ST, "devEUI", NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"joinEUI\":\"\"}", ST, "joinEUI",
		     NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"tkmInfo\":\"31110123D345666E2DB\"}",
		     ST, "tkmInfo", "must be 20 hexadecimal digits");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"appKey\":\"00\"}", ST, "appKey",
		     "must be 32 hexadecimal digits");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"profileId\":\"0000abc\"}", ST,
		     "profileId", "must be 8 hexadecimal digits");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"generateAppKey\":\"true\"}", ST,
		     "generateAppKey", "must be true or false");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"serial\":\"\"}", ST, "serial", NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"serial\":\"A:B\"}", ST, "serial",
		     NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"serial\":\"A B\"}", ST, "serial",
		     NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"serial\":\"caf\\u00e9\"}", ST,
		     "serial", NULL);
	expect_valid(act,
		     "{\"devEUI\":\"0123456789abcdef\",\"serial\":"
		     "\"0123456789012345678901234567890123456789012345678901234567890123\"}",
		     NULL, NULL, NULL);
	expect_valid(act,
		     "{\"devEUI\":\"0123456789abcdef\",\"serial\":"
		     "\"01234567890123456789012345678901234567890123456789012345678901234\"}",
		     ST, "serial", NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":\"png\"}", ST, "qr",
		     "must be an object");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"format\":\"gif\"}}", ST,
		     "qr.format", NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"format\":1}}", ST,
		     "qr.format", "must be a string");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"scale\":0}}", ST, "qr.scale",
		     "must be between 1 and 20");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"scale\":33}}", ST, "qr.scale",
		     NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"scale\":2.0}}", ST,
		     "qr.scale", "must be an integer");
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"margin\":-1}}", ST,
		     "qr.margin", "must be between 0 and 16");
	/* Either case, as tpad.conf's qr.ec-level and tpactl's --ec-level take it. */
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"ecLevel\":\"m\"}}", ST, NULL,
		     NULL);
	expect_valid(act, "{\"devEUI\":\"0123456789abcdef\",\"qr\":{\"ecLevel\":\"x\"}}", ST,
		     "qr.ecLevel", NULL);

	const char *imp = "io.tpad.Admin.Import";
	expect_valid(imp,
		     "{\"rows\":[{\"line\":1,\"devEUI\":\"0123456789abcdef\","
		     "\"tkmInfo\":\"31110123D345666E2DBD\"},{\"line\":2,\"devEUI\":"
		     "\"0123456789ABCDEE\",\"appKey\":\"000102030405060708090a0b0c0d0e0f\","
		     "\"serial\":\"X1\",\"profileId\":\"00000000\",\"joinEUI\":null}],"
		     "\"generateAppKeys\":true,\"concurrency\":8,\"final\":true}",
		     NULL, NULL, NULL);
	expect_valid(imp, "{\"rows\":[]}", NULL, NULL, NULL);
	expect_valid(imp, "{}", AD, "rows", "is required");
	expect_valid(imp, "{\"rows\":{}}", AD, "rows", "must be an array");
	expect_valid(imp, "{\"rows\":[1]}", AD, "rows[0]", "must be an object");
	expect_valid(imp, "{\"rows\":[{\"line\":1,\"devEUI\":\"0123456789abcdef\"},{\"line\":2}]}",
		     AD, "rows[1].devEUI", "is required");
	expect_valid(imp, "{\"rows\":[{\"line\":0,\"devEUI\":\"0123456789abcdef\"}]}", AD,
		     "rows[0].line", NULL);
	expect_valid(imp,
		     "{\"rows\":[{\"line\":3,\"devEUI\":\"0123456789abcdef\",\"tkmInfo\":\"zz\"}]}",
		     AD, "rows[0].tkmInfo",
		     "must be 20 hexadecimal digits; character 1 is 'z': give the digits alone, "
		     "without 0x, spaces, dashes or colons");
	expect_valid(imp, "{\"rows\":[],\"concurrency\":1025}", AD, "concurrency", NULL);
	expect_valid(imp, "{\"rows\":[],\"final\":1}", AD, "final", NULL);

	/* The row limit. */
	json_t *rows = json_array();
	for (int i = 0; i <= PROTO_MAX_IMPORT_ROWS; i++)
		json_array_append_new(
		    rows, json_pack("{s:i,s:s}", "line", i + 1, "devEUI", "0123456789ABCDEF"));
	json_t *p = json_pack("{s:o}", "rows", rows);
	struct proto_fault f = {0};
	CHECK_INT(proto_validate(proto_method_find(imp), p, &f), -EINVAL);
	CHECK_STR(f.parameter, "rows");
	json_array_remove(rows, 0);
	CHECK_INT(proto_validate(proto_method_find(imp), p, &f), 0);
	json_decref(p);

	const char *exp = "io.tpad.Admin.Export";
	expect_valid(exp, "{\"format\":\"csv\",\"state\":\"issued\"}", NULL, NULL, NULL);
	expect_valid(exp, "{\"format\":\"zpl\",\"state\":\"PENDING\",\"qr\":{\"scale\":3}}", NULL,
		     NULL, NULL);
	expect_valid(exp, "{\"format\":\"text\"}", AD, "format", NULL);
	expect_valid(exp, "{\"format\":\"csv\",\"state\":\"DONE\"}", AD, "state",
		     "must be PENDING, ISSUED, FAILED, FOREIGN or RETIRED");

	const char *list = "io.tpad.Admin.ListDevices";
	expect_valid(list, "{}", NULL, NULL, NULL);
	expect_valid(list, "{\"state\":\"failed\",\"after\":\"0123456789ABCDEF\",\"limit\":1000}",
		     NULL, NULL, NULL);
	expect_valid(list, "{\"limit\":0}", AD, "limit", NULL);
	expect_valid(list, "{\"after\":\"\"}", AD, "after", NULL);
	expect_valid(list, "{\"after\":5}", AD, "after", "must be a string");

	expect_valid("io.tpad.Admin.GetDevice", "{\"devEUI\":\"0123456789abcdef\"}", NULL, NULL,
		     NULL);
	expect_valid("io.tpad.Admin.GetDevice", "{\"devEUI\":[]}", AD, "devEUI", NULL);
	expect_valid("io.tpad.Admin.Status", "{\"anything\":1}", NULL, NULL, NULL);
	expect_valid("org.varlink.service.GetInterfaceDescription",
		     "{\"interface\":\"io.tpad.Station\"}", NULL, NULL, NULL);
	expect_valid("org.varlink.service.GetInterfaceDescription", "{\"interface\":true}",
		     PROTO_ERR_INVALID_PARAMETER, "interface", NULL);
}

/* Decode, check on socket and compare the error (NULL: expect success). */
static void expect_check(const char *text, unsigned sock, const char *error)
{
	struct call c = {0};
	struct proto_fault f = {0};
	CHECK_INT(call_decode(text, strlen(text), &c, &f), 0);
	const struct method_spec *m = NULL;
	int r = proto_check(&c, sock, &m, &f);
	if (error) {
		CHECK(r < 0);
		CHECK_STR(f.error, error);
		CHECK(m == NULL);
	} else {
		CHECK_INT(r, 0);
		CHECK(m != NULL);
	}
	call_clear(&c);
}

static void test_check(void)
{
	expect_check("{\"method\":\"io.tpad.Admin.Import\",\"parameters\":{\"rows\":[]}}",
		     PROTO_SOCKET_ADMIN, PROTO_ERR_EXPECTED_MORE);
	expect_check("{\"method\":\"io.tpad.Admin.Import\",\"parameters\":{\"rows\":[]},"
		     "\"more\":true}",
		     PROTO_SOCKET_ADMIN, NULL);
	/* Method before more before parameters. */
	expect_check("{\"method\":\"io.tpad.Admin.Export\"}", PROTO_SOCKET_STATION,
		     PROTO_ERR_INTERFACE_NOT_FOUND);
	expect_check("{\"method\":\"io.tpad.Admin.Export\"}", PROTO_SOCKET_ADMIN,
		     PROTO_ERR_EXPECTED_MORE);
	expect_check("{\"method\":\"io.tpad.Admin.Export\",\"more\":true}", PROTO_SOCKET_ADMIN, AD);
	expect_check("{\"method\":\"io.tpad.Station.Lookup\",\"more\":true,"
		     "\"parameters\":{\"devEUI\":\"0123456789abcdef\"}}",
		     PROTO_SOCKET_STATION, NULL);
}

static void test_encode(void)
{
	size_t len = 0;
	json_t *p = json_pack("{s:s}", "a", "b");
	char *s = reply_encode(p, false, &len);
	CHECK_STR(s, "{\"parameters\":{\"a\":\"b\"}}");
	CHECK_INT(len, strlen("{\"parameters\":{\"a\":\"b\"}}"));
	free(s);
	s = reply_encode(p, true, &len);
	CHECK_STR(s, "{\"parameters\":{\"a\":\"b\"},\"continues\":true}");
	free(s);
	CHECK_INT(p->refcount, 1); /* not stolen */
	s = reply_encode(NULL, false, &len);
	CHECK_STR(s, "{\"parameters\":{}}");
	free(s);
	s = error_encode("io.tpad.Station.Busy", NULL, &len);
	CHECK_STR(s, "{\"error\":\"io.tpad.Station.Busy\",\"parameters\":{}}");
	free(s);
	s = call_encode("io.tpad.Station.Lookup", p, true, false, &len);
	CHECK_STR(s, "{\"method\":\"io.tpad.Station.Lookup\",\"parameters\":{\"a\":\"b\"},"
		     "\"more\":true}");
	free(s);
	s = call_encode("x.y", NULL, false, true, &len);
	CHECK_STR(s, "{\"method\":\"x.y\",\"parameters\":{},\"oneway\":true}");
	free(s);
	/* Characters that would break framing or JSON are escaped. */
	json_t *q = json_pack("{s:s#}", "s", "a\0\"b", (size_t)4);
	s = reply_encode(q, false, &len);
	CHECK_STR(s, "{\"parameters\":{\"s\":\"a\\u0000\\\"b\"}}");
	CHECK(s && memchr(s, '\0', len) == NULL);
	free(s);
	json_decref(q);
	json_decref(p);

	struct proto_fault f = {PROTO_ERR_INVALID_PARAMETER, "devEUI", "must be a string", false};
	f.error = ST;
	s = fault_encode(&f, &len);
	CHECK_STR(s, "{\"error\":\"io.tpad.Station.InvalidParameter\",\"parameters\":"
		     "{\"parameter\":\"devEUI\",\"reason\":\"must be a string\"}}");
	free(s);
	/* org.varlink.service.InvalidParameter carries only its declared parameter. */
	f = (struct proto_fault){PROTO_ERR_INVALID_PARAMETER, "upgrade", "no method upgrades", false};
	s = fault_encode(&f, &len);
	CHECK_STR(s, "{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":"
		     "{\"parameter\":\"upgrade\"}}");
	free(s);
	f = (struct proto_fault){PROTO_ERR_METHOD_NOT_FOUND, "a.B", "", false};
	s = fault_encode(&f, &len);
	CHECK_STR(s, "{\"error\":\"org.varlink.service.MethodNotFound\",\"parameters\":"
		     "{\"method\":\"a.B\"}}");
	free(s);
	f = (struct proto_fault){PROTO_ERR_INTERFACE_NOT_FOUND, "a", "", false};
	s = fault_encode(&f, &len);
	CHECK_STR(s, "{\"error\":\"org.varlink.service.InterfaceNotFound\",\"parameters\":"
		     "{\"interface\":\"a\"}}");
	free(s);
	f = (struct proto_fault){PROTO_ERR_EXPECTED_MORE, "", "", false};
	s = fault_encode(&f, &len);
	CHECK_STR(s, "{\"error\":\"org.varlink.service.ExpectedMore\",\"parameters\":{}}");
	free(s);

	/* Replies decode back. */
	struct reply r = {0};
	const char *m = "{\"parameters\":{\"n\":1},\"continues\":true}";
	CHECK_INT(reply_decode(m, strlen(m), &r), 0);
	CHECK(r.error == NULL && r.continues);
	CHECK_INT(json_integer_value(json_object_get(r.parameters, "n")), 1);
	reply_clear(&r);
	m = "{\"error\":\"io.tpad.Station.NotFound\",\"parameters\":{\"devEUI\":\"X\"}}";
	CHECK_INT(reply_decode(m, strlen(m), &r), 0);
	CHECK_STR(r.error, "io.tpad.Station.NotFound");
	CHECK(!r.continues);
	reply_clear(&r);
	m = "{\"error\":\"x.Y\"}";
	CHECK_INT(reply_decode(m, strlen(m), &r), 0);
	CHECK(json_is_object(r.parameters));
	reply_clear(&r);
	CHECK_INT(reply_decode("[]", 2, &r), -EINVAL);
	CHECK_INT(reply_decode("{\"error\":1}", 11, &r), -EINVAL);
	CHECK_INT(reply_decode("{\"parameters\":1}", 16, &r), -EINVAL);
	CHECK_INT(reply_decode("{\"continues\":\"1\"}", 17, &r), -EINVAL);
	CHECK_INT(reply_decode("", 0, &r), -EINVAL);
	CHECK(r.error == NULL && r.parameters == NULL);
}

/* Copy the parameter list of "method <member>(" in text, without comment lines, to buf. */
static bool idl_method(const char *text, const char *member, char *buf, size_t size)
{
	char pat[128];
	snprintf(pat, sizeof(pat), "\nmethod %s(", member);
	const char *p = strstr(text, pat);
	if (!p)
		return false;
	p += strlen(pat);
	size_t n = 0;
	while (*p && *p != ')') {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) + 1 : strlen(p);
		const char *first = p + strspn(p, " \t");
		if (*first != '#') {
			const char *close = memchr(p, ')', len);
			size_t take = close ? (size_t)(close - p) : len;
			if (n + take + 1 > size)
				return false;
			memcpy(buf + n, p, take);
			n += take;
			if (close)
				break;
		}
		p += len;
	}
	buf[n] = '\0';
	return true;
}

/* The method table and the interface description files declare the same methods. */
static void test_idl_matches_table(void)
{
	size_t n;
	const struct method_spec *methods = proto_methods(&n);
	CHECK(n == 19);
	for (size_t i = 0; i < n; i++) {
		const struct method_spec *m = &methods[i];
		const char *text = iface_description(m->interface);
		CHECK(text != NULL);
		if (!text)
			continue;
		CHECK(iface_sockets(m->interface) == m->sockets);
		char buf[4096];
		bool found = idl_method(text, m->member, buf, sizeof(buf));
		CHECK(found);
		if (!found) {
			fprintf(stderr, "  %s not in the IDL\n", m->name);
			continue;
		}
		size_t declared = 0;
		for (const char *c = buf; (c = strchr(c, ':')); c++)
			declared++;
		CHECK_INT(declared, m->n_params);
		for (size_t j = 0; j < m->n_params; j++) {
			char want[96];
			snprintf(want, sizeof(want), "  %s: %s", m->params[j].name,
				 m->params[j].required ? "" : "?");
			char *hit = strstr(buf, want);
			CHECK(hit != NULL);
			if (!hit)
				fprintf(stderr, "  %s: \"%s\" not in the IDL\n", m->name, want);
			else if (m->params[j].required)
				CHECK(hit[strlen(want)] != '?');
		}
	}

	/* And no method in the IDL is missing from the table. */
	for (const char *const *name = iface_names(); *name; name++) {
		const char *text = iface_description(*name);
		size_t count = 0;
		for (const char *p = text; (p = strstr(p, "\nmethod ")); p++) {
			char member[64];
			CHECK_INT(sscanf(p, "\nmethod %63[A-Za-z](", member), 1);
			char full[256];
			snprintf(full, sizeof(full), "%s.%s", *name, member);
			CHECK(proto_method_find(full) != NULL);
			count++;
		}
		CHECK(count > 0);
	}
}

static void test_iface(void)
{
	const char *const *names = iface_names();
	CHECK_STR(names[0], "org.varlink.service");
	CHECK_STR(names[1], "io.tpad.Station");
	CHECK_STR(names[2], "io.tpad.Admin");
	CHECK_STR(names[3], "io.tpad.AS");
	CHECK_STR(names[4], "io.tpad.ASAdmin");
	CHECK(names[5] == NULL);
	const char *s = iface_description("io.tpad.Station");
	CHECK(s && strstr(s, "interface io.tpad.Station\n"));
	CHECK(s && strstr(s, "error OutcomeUnknown ("));
	CHECK(s && strstr(s, "error PermissionDenied (reason: string)"));
	s = iface_description("io.tpad.Admin");
	CHECK(s && !strstr(s, "error ExpectedMore"));
	CHECK(s && strstr(s, "hasAppKey: bool"));
	CHECK(s && strstr(s, "upstream: ?Upstream"));
	CHECK(s && strstr(s, "store: ?Store"));
	s = iface_description("org.varlink.service");
	CHECK(s && strstr(s, "error MethodNotFound (method: string)"));
	CHECK(s && strstr(s, "error ExpectedMore ()"));
	CHECK(iface_description("io.tpad") == NULL);
	CHECK(iface_description(NULL) == NULL);
	CHECK(iface_sockets("org.varlink.service") == PROTO_SOCKET_ANY);
	CHECK(iface_sockets("io.tpad.Station") == PROTO_SOCKET_STATION);
	CHECK(iface_sockets("io.tpad.Admin") == PROTO_SOCKET_ADMIN);
	CHECK(iface_sockets("io.tpad.AS") == (PROTO_SOCKET_AS_APPS | PROTO_SOCKET_AS_ADMIN));
	CHECK(iface_sockets("io.tpad.ASAdmin") == PROTO_SOCKET_AS_ADMIN);
	CHECK(iface_sockets("nope") == 0);
}

int main(void)
{
	test_decode();
	test_lookup();
	test_validate();
	test_check();
	test_encode();
	test_idl_matches_table();
	test_iface();
	return tap_done();
}
