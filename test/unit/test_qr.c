/*
 * Unit tests for qr and qr_image: TR005 text, CRC, parsing, templates and every image
 * format. With "render" arguments it writes one image for test_qr_decode.py.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qr.h"
#include "qr_image.h"
#include "tap.h"

#define SPEC_TEXT                                                                                  \
	"LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:SYYWWNNNNNN:PFOOBAR:"      \
	"CAF2C"
#define TOKEN32 "0123456789ABCDEF0123456789ABCDEF"

/* A small deterministic generator for test data. */
static uint32_t rng_state = 12345;
static uint32_t rng(void)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return rng_state >> 8;
}

/* Fill s with n random hex digits (mixed case if mixed) and a NUL. */
static void rand_hex(char *s, size_t n, int mixed)
{
	const char *digits = mixed ? "0123456789abcdefABCDEF" : "0123456789ABCDEF";
	size_t nd = strlen(digits);
	for (size_t i = 0; i < n; i++)
		s[i] = digits[rng() % nd];
	s[n] = '\0';
}

/* Append ":C<crc>" of body to body (which has room for it). */
static void add_crc(char *body)
{
	size_t len = strlen(body);
	snprintf(body + len, 7, ":C%04X", qr_crc16(body, len));
}

/* Check that text is refused by qr_tr005_parse() with want, leaving *ret alone. */
static void check_parse_fails(const char *text, int want)
{
	struct qr_parsed p;
	memset(&p, 0x5a, sizeof(p));
	int r = qr_tr005_parse(text, &p);
	CHECK_INT(r, want);
	if (r != want)
		fprintf(stderr, "  text: %s\n", text ? text : "(null)");
	CHECK(p.crc == 0x5a5a && (unsigned char)p.dev_eui[0] == 0x5a);
}

/* Same as check_parse_fails() for a body that gets its correct checksum first. */
static void check_body_fails(const char *body)
{
	char text[QR_TEXT_MAX];
	snprintf(text, sizeof(text) - 7, "%s", body);
	add_crc(text);
	check_parse_fails(text, -EINVAL);
}

/* The CRC, the spec's example and the text's shape. */
static void test_tr005(void)
{
	CHECK_INT(qr_crc16("123456789", 9), 0x4B37);
	CHECK_INT(qr_crc16("", 0), 0xFFFF);
	CHECK_INT(qr_crc16(SPEC_TEXT, strlen(SPEC_TEXT) - 6), 0xAF2C);

	char out[QR_TEXT_MAX];
	struct qr_fields f = {
	    .join_eui = "1122334455667788",
	    .dev_eui = "AABBCCDDEEFF0011",
	    .profile_id = "AABB1122",
	    .owner_token = "AABBCCDDEEFF",
	    .serial = "YYWWNNNNNN",
	    .proprietary = "FOOBAR",
	};
	CHECK_INT(qr_tr005(&f, out, sizeof(out)), 0);
	CHECK_STR(out, SPEC_TEXT);

	/* Lower-case input gives the same label; the serial is upper-cased. */
	struct qr_fields lower = {"1122334455667788", "aabbccddeeff0011", "aabb1122",
				  "aabbccddeeff",     "yywwNNNNNN",	  "fooBAR"};
	CHECK_INT(qr_tr005(&lower, out, sizeof(out)), 0);
	CHECK_STR(out, SPEC_TEXT);

	/* Optional fields left out, profile defaulting to 00000000. */
	struct qr_fields bare = {.join_eui = "0000000000000001", .dev_eui = "0123D345666E2DBD"};
	CHECK_INT(qr_tr005(&bare, out, sizeof(out)), 0);
	char want[QR_TEXT_MAX] = "LW:D0:0000000000000001:0123D345666E2DBD:00000000";
	add_crc(want);
	CHECK_STR(out, want);
	bare.owner_token = "";
	bare.serial = "";
	CHECK_INT(qr_tr005(&bare, out, sizeof(out)), 0);
	CHECK_STR(out, want);

	bare.serial = "SN-1/2.3";
	CHECK_INT(qr_tr005(&bare, out, sizeof(out)), 0);
	snprintf(want, sizeof(want), "LW:D0:0000000000000001:0123D345666E2DBD:00000000:SSN-1/2.3");
	add_crc(want);
	CHECK_STR(out, want);

	/* Output buffer exactly the right size, then one byte short. */
	size_t need = strlen(SPEC_TEXT) + 1;
	CHECK_INT(qr_tr005(&f, out, need), 0);
	CHECK_STR(out, SPEC_TEXT);
	CHECK_INT(qr_tr005(&f, out, need - 1), -ENOBUFS);
	CHECK_INT(qr_tr005(&f, out, 0), -ENOBUFS);
	CHECK_INT(qr_tr005(&f, NULL, 0), -ENOBUFS);

	/* Must fail: each field wrong in turn. */
	const struct {
		int field;
		const char *value;
	} bad[] = {
	    {0, NULL},
	    {0, "112233445566778"},
	    {0, "11223344556677889"},
	    {0, "112233445566778G"},
	    {1, NULL},
	    {1, ""},
	    {1, "AABBCCDDEEFF001 "},
	    {2, "AABB112"},
	    {2, "AABB11223"},
	    {2, "AABB112X"},
	    {3, "AABBCCDDEEFG"},
	    {3, "0x12"},
	    {3, "AA:BB"},
	    {4, "SN:1"},
	    {4, "SN 1"},
	    {4, "SN_1"},
	    {4, "SN\n"},
	    {4, "\xc3\xa9"},
	    {5, "FOO:BAR"},
	    {5, "FOO BAR"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct qr_fields g = f;
		const char **fields[] = {&g.join_eui,	 &g.dev_eui, &g.profile_id,
					 &g.owner_token, &g.serial,  &g.proprietary};
		*fields[bad[i].field] = bad[i].value;
		int r = qr_tr005(&g, out, sizeof(out));
		CHECK_INT(r, -EINVAL);
		if (r != -EINVAL)
			fprintf(stderr, "  field %d accepted \"%s\"\n", bad[i].field,
				bad[i].value ? bad[i].value : "(null)");
	}
	CHECK_INT(qr_tr005(NULL, out, sizeof(out)), -EINVAL);

	/* Length limits of the token and the serial. */
	char token[QR_TOKEN_MAX + 2], serial[QR_SERIAL_MAX + 2];
	rand_hex(token, QR_TOKEN_MAX, 1);
	memset(serial, 'Z', QR_SERIAL_MAX);
	serial[QR_SERIAL_MAX] = '\0';
	struct qr_fields longest = f;
	longest.owner_token = token;
	longest.serial = serial;
	longest.proprietary = serial;
	CHECK_INT(qr_tr005(&longest, out, sizeof(out)), 0);
	struct qr_parsed p;
	CHECK_INT(qr_tr005_parse(out, &p), 0);
	CHECK_INT(strlen(p.owner_token), QR_TOKEN_MAX);
	CHECK_STR(p.serial, serial);
	rand_hex(token, QR_TOKEN_MAX + 1, 0);
	CHECK_INT(qr_tr005(&longest, out, sizeof(out)), -EINVAL);
	token[QR_TOKEN_MAX] = '\0';
	serial[QR_SERIAL_MAX] = 'Z';
	serial[QR_SERIAL_MAX + 1] = '\0';
	CHECK_INT(qr_tr005(&longest, out, sizeof(out)), -EINVAL);

	CHECK(qr_serial_valid("ab-12.C/$%*+"));
	CHECK(!qr_serial_valid(""));
	CHECK(!qr_serial_valid(NULL));
	CHECK(!qr_serial_valid("a:b"));
	CHECK(!qr_serial_valid(serial));
}

/* Generated labels parse back to the fields they were made from. */
static void test_round_trip(void)
{
	static const char serial_chars[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ$%*+-./";
	int ok = 1;
	for (int i = 0; i < 500; i++) {
		char join[17], dev[17], prof[9], token[QR_TOKEN_MAX + 1];
		char serial[QR_SERIAL_MAX + 1], prop[QR_PROPRIETARY_MAX + 1];
		rand_hex(join, 16, 1);
		rand_hex(dev, 16, 1);
		rand_hex(prof, 8, 1);
		rand_hex(token, 1 + rng() % QR_TOKEN_MAX, 1);
		size_t sl = 1 + rng() % QR_SERIAL_MAX, pl = 1 + rng() % QR_PROPRIETARY_MAX;
		for (size_t k = 0; k < sl; k++)
			serial[k] = serial_chars[rng() % (sizeof(serial_chars) - 1)];
		serial[sl] = '\0';
		for (size_t k = 0; k < pl; k++)
			prop[k] = serial_chars[rng() % (sizeof(serial_chars) - 1)];
		prop[pl] = '\0';
		unsigned opt = rng() % 8;
		struct qr_fields f = {join,
				      dev,
				      prof,
				      (opt & 1) ? token : NULL,
				      (opt & 2) ? serial : NULL,
				      (opt & 4) ? prop : NULL};

		char text[QR_TEXT_MAX];
		struct qr_parsed p;
		if (qr_tr005(&f, text, sizeof(text)) != 0 || qr_tr005_parse(text, &p) != 0) {
			fprintf(stderr, "round trip %d failed: %s\n", i, text);
			ok = 0;
			continue;
		}
		char up[QR_TOKEN_MAX + 1];
		hex_upper(up, join, 16);
		ok &= strcmp(p.join_eui, up) == 0;
		hex_upper(up, dev, 16);
		ok &= strcmp(p.dev_eui, up) == 0;
		hex_upper(up, prof, 8);
		ok &= strcmp(p.profile_id, up) == 0;
		hex_upper(up, token, strlen(token));
		ok &= strcmp(p.owner_token, (opt & 1) ? up : "") == 0;
		ok &= strcmp(p.serial, (opt & 2) ? serial : "") == 0;
		ok &= strcmp(p.proprietary, (opt & 4) ? prop : "") == 0;
		ok &= p.crc == qr_crc16(text, strlen(text) - 6);
		/* Only QR alphanumeric characters: upper-case, digits, $%*+-./: */
		ok &= strspn(text, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ$%*+-./:") == strlen(text);
	}
	CHECK(ok);
}

/* Parsing the spec's text and must-fail texts. */
static void test_parse(void)
{
	struct qr_parsed p;
	CHECK_INT(qr_tr005_parse(SPEC_TEXT, &p), 0);
	CHECK_STR(p.join_eui, "1122334455667788");
	CHECK_STR(p.dev_eui, "AABBCCDDEEFF0011");
	CHECK_STR(p.profile_id, "AABB1122");
	CHECK_STR(p.owner_token, "AABBCCDDEEFF");
	CHECK_STR(p.serial, "YYWWNNNNNN");
	CHECK_STR(p.proprietary, "FOOBAR");
	CHECK_INT(p.crc, 0xAF2C);

	/* Checksum wrong, or the text changed under it. */
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAR:CAF2D",
			  -EBADMSG);
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0012:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAR:CAF2C",
			  -EBADMSG);
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAZ:CAF2C",
			  -EBADMSG);

	/* Checksum field malformed or missing. */
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAR:Caf2c",
			  -EINVAL);
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAR:CAF2",
			  -EINVAL);
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAR:CAF2C0",
			  -EINVAL);
	check_parse_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:"
			  "SYYWWNNNNNN:PFOOBAR",
			  -EINVAL);
	check_parse_fails(SPEC_TEXT ":CAF2C", -EINVAL);
	check_parse_fails(SPEC_TEXT "\n", -EINVAL);
	check_parse_fails(" " SPEC_TEXT, -EINVAL);
	check_parse_fails("", -EINVAL);
	check_parse_fails(NULL, -EINVAL);
	check_parse_fails("LW:D0::C1234", -EINVAL);

	/* Structure wrong, with a correct checksum so only the structure is judged. */
	check_body_fails("LW:D1:1122334455667788:AABBCCDDEEFF0011:AABB1122");
	check_body_fails("lw:d0:1122334455667788:AABBCCDDEEFF0011:AABB1122");
	check_body_fails("LW:D0:1122334455667788:aabbccddeeff0011:AABB1122");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:aabb1122");
	check_body_fails("LW:D0:112233445566778:AABBCCDDEEFF0011:AABB1122");
	check_body_fails("LW:D0:11223344556677889:AABBCCDDEEFF0011:AABB1122");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF001:AABB1122");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB112");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB11223");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:O");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:Oaabb");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABG");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:Sabc");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:SA B");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:SAB:OAABB");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:PX:SAB");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAA:OBB");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:XFOO");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:CAAAA");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122::SAB");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:SAB:");
	check_body_fails("LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122X");
	check_body_fails("LW:D0:1122334455667788-AABBCCDDEEFF0011:AABB1122");

	/* Field length limits. */
	char body[QR_TEXT_MAX];
	int n = snprintf(body, sizeof(body), "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:O");
	memset(body + n, 'A', QR_TOKEN_MAX + 1);
	body[n + QR_TOKEN_MAX + 1] = '\0';
	check_body_fails(body);
	body[n + QR_TOKEN_MAX] = '\0';
	add_crc(body);
	CHECK_INT(qr_tr005_parse(body, &p), 0);
	n = snprintf(body, sizeof(body), "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:S");
	memset(body + n, 'S', QR_SERIAL_MAX + 1);
	body[n + QR_SERIAL_MAX + 1] = '\0';
	check_body_fails(body);
	n = snprintf(body, sizeof(body), "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:P");
	memset(body + n, 'P', QR_PROPRIETARY_MAX + 1);
	body[n + QR_PROPRIETARY_MAX + 1] = '\0';
	check_body_fails(body);
}

/* Check that tmpl is refused by qr_template_check() with a reason. */
static void check_template_bad(const char *tmpl)
{
	char err[256] = "";
	int r = qr_template_check(tmpl, err, sizeof(err));
	CHECK_INT(r, -EINVAL);
	CHECK(err[0] != '\0');
	if (r != -EINVAL)
		fprintf(stderr, "  template accepted: %s\n", tmpl ? tmpl : "(null)");
	struct qr_fields f = {"1122334455667788", "AABBCCDDEEFF0011", NULL, NULL, NULL, NULL};
	char out[QR_TEXT_MAX];
	CHECK_INT(qr_template_render(tmpl, &f, out, sizeof(out)), -EINVAL);
}

/* Manufacturer templates. */
static void test_template(void)
{
	char err[256], out[QR_TEXT_MAX];
	struct qr_fields f = {
	    "1122334455667788", "aabbccddeeff0011", "aabb1122", "aabbccddeeff", "sn-42", NULL};

	const char *t1 = "https://example.com/d/{devEUI}?j={joinEUI}&p={profileId}&t={ownerToken}"
			 "&s={serial}";
	CHECK_INT(qr_template_check(t1, err, sizeof(err)), 0);
	CHECK_INT(qr_template_render(t1, &f, out, sizeof(out)), 0);
	CHECK_STR(out, "https://example.com/d/AABBCCDDEEFF0011?j=1122334455667788&p=AABB1122"
		       "&t=AABBCCDDEEFF&s=sn-42");

	CHECK_INT(qr_template_render("{{{devEUI}}}-{{}}", &f, out, sizeof(out)), 0);
	CHECK_STR(out, "{AABBCCDDEEFF0011}-{}");
	CHECK_INT(qr_template_render("Ger\xc3\xa4t \xe2\x82\xac {serial}", &f, out, sizeof(out)),
		  0);
	CHECK_STR(out, "Ger\xc3\xa4t \xe2\x82\xac sn-42");

	/* Absent fields render empty; the profile defaults to 00000000. */
	struct qr_fields bare = {.join_eui = "1122334455667788", .dev_eui = "AABBCCDDEEFF0011"};
	CHECK_INT(
	    qr_template_render("[{ownerToken}][{serial}][{profileId}]", &bare, out, sizeof(out)),
	    0);
	CHECK_STR(out, "[][][00000000]");

	/* Buffer limits. */
	CHECK_INT(qr_template_render("{devEUI}", &f, out, 17), 0);
	CHECK_STR(out, "AABBCCDDEEFF0011");
	CHECK_INT(qr_template_render("{devEUI}", &f, out, 16), -ENOBUFS);
	CHECK_INT(qr_template_render("x", &f, out, 0), -ENOBUFS);

	/* Bad fields are refused as in qr_tr005(). */
	struct qr_fields badf = f;
	badf.dev_eui = "AABB";
	CHECK_INT(qr_template_render("{devEUI}", &badf, out, sizeof(out)), -EINVAL);
	badf = f;
	badf.serial = "a b";
	CHECK_INT(qr_template_render("{devEUI}", &badf, out, sizeof(out)), -EINVAL);

	/* Must-fail templates. */
	check_template_bad(NULL);
	check_template_bad("");
	check_template_bad("{devEui}");
	check_template_bad("{deveui}");
	check_template_bad("{devEUI");
	check_template_bad("{");
	check_template_bad("}");
	check_template_bad("a}b");
	check_template_bad("{{devEUI}");
	check_template_bad("{ devEUI}");
	check_template_bad("{}");
	check_template_bad("{{}");
	check_template_bad("{dev{EUI}");
	check_template_bad("line\nbreak");
	check_template_bad("tab\there");
	check_template_bad("del\x7f");
	check_template_bad("bad \xc3");
	check_template_bad("bad \xc3\x28");
	check_template_bad("overlong \xc0\xaf");
	check_template_bad("surrogate \xed\xa0\x80");
	check_template_bad("too big \xf4\x90\x80\x80");
	check_template_bad("\xff");

	char big[QR_TEMPLATE_MAX + 2];
	memset(big, 'x', QR_TEMPLATE_MAX);
	big[QR_TEMPLATE_MAX] = '\0';
	CHECK_INT(qr_template_check(big, err, sizeof(err)), 0);
	big[QR_TEMPLATE_MAX] = 'x';
	big[QR_TEMPLATE_MAX + 1] = '\0';
	check_template_bad(big);

	/* Eight tokens can render to 8 * QR_TOKEN_MAX = 1024 bytes: one too many. */
	char tokens[256] = "";
	for (int i = 0; i < 7; i++)
		strcat(tokens, "{ownerToken}");
	CHECK_INT(qr_template_check(tokens, err, sizeof(err)), 0);
	strcat(tokens, "{ownerToken}");
	check_template_bad(tokens);

	/* No error buffer is fine. */
	CHECK_INT(qr_template_check("{x}", NULL, 0), -EINVAL);
}

/* Count the UTF-8 characters of the n bytes at s. */
static size_t utf8_chars(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		c += ((unsigned char)s[i] & 0xc0) != 0x80;
	return c;
}

/* Read a big-endian 32-bit value. */
static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Render text with the given options; returns the result or NULL. */
static uint8_t *render(const char *text, enum qr_format format, int scale, int margin,
		       enum qr_ec_level level, size_t *len)
{
	struct qr_opts o;
	qr_opts_default(&o);
	o.format = format;
	o.scale = scale;
	o.margin = margin;
	o.level = level;
	uint8_t *data = NULL;
	int r = qr_image_render(text, &o, &data, len);
	CHECK_INT(r, 0);
	return r == 0 ? data : NULL;
}

/* Every image format, checked structurally. */
static void test_images(void)
{
	char label[QR_TEXT_MAX];
	struct qr_fields f = {
	    "70B3D57ED0000001", "0123D345666E2DBD", "00000000", TOKEN32, NULL, NULL};
	CHECK_INT(qr_tr005(&f, label, sizeof(label)), 0);

	/* A 32-digit token label is version 4 (33 modules) at level M: alphanumeric mode. */
	int modules = qr_image_modules(label, QR_EC_M);
	CHECK_INT(modules, 33);
	CHECK(qr_image_modules(label, QR_EC_H) > modules);
	CHECK(qr_image_modules(label, QR_EC_L) <= modules);

	size_t len;
	for (int scale = 1; scale <= 5; scale += 2) {
		for (int margin = 0; margin <= 4; margin += 4) {
			int side = (modules + 2 * margin) * scale;
			uint8_t *png = render(label, QR_FORMAT_PNG, scale, margin, QR_EC_M, &len);
			CHECK(png && len > 33 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
			if (png && len > 33) {
				CHECK(memcmp(png + 12, "IHDR", 4) == 0);
				CHECK_INT(be32(png + 16), side);
				CHECK_INT(be32(png + 20), side);
				CHECK_INT(png[24], 1); /* bit depth */
				CHECK_INT(png[25], 0); /* grayscale */
				CHECK(memcmp(png + len - 8, "IEND", 4) == 0);
			}
			free(png);

			char *svg =
			    (char *)render(label, QR_FORMAT_SVG, scale, margin, QR_EC_M, &len);
			char want[128];
			snprintf(want, sizeof(want),
				 "width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\"", side, side,
				 side, side);
			CHECK(svg && strstr(svg, want));
			CHECK(svg && strncmp(svg, "<?xml", 5) == 0);
			CHECK(svg && len > 7 && strcmp(svg + len - 7, "</svg>\n") == 0);
			CHECK(svg && strstr(svg, "<path") &&
			      !strstr(strstr(svg, "<path") + 1, "<path"));
			free(svg);
		}
	}

	/* Text: ceil(side / 2) lines of side characters. */
	for (int margin = 0; margin <= 5; margin++) {
		char *txt = (char *)render(label, QR_FORMAT_TEXT, 4, margin, QR_EC_M, &len);
		if (!txt)
			continue;
		int side = modules + 2 * margin, lines = 0, widths_ok = 1;
		for (char *p = txt; *p;) {
			char *nl = strchr(p, '\n');
			if (!nl)
				break;
			widths_ok &= utf8_chars(p, (size_t)(nl - p)) == (size_t)side;
			lines++;
			p = nl + 1;
		}
		CHECK_INT(lines, (side + 1) / 2);
		CHECK(widths_ok);
		CHECK(len > 0 && txt[len - 1] == '\n');
		if (margin == 4) {
			/* Line 2 holds module rows 0 and 1: the top of the finder pattern. */
			char *l2 = strchr(strchr(txt, '\n') + 1, '\n') + 1;
			CHECK(strncmp(l2, "    \u2588\u2580\u2580\u2580\u2580\u2580\u2588", 25) ==
			      0);
			/* The first line is quiet zone only. */
			CHECK(strspn(txt, " ") == (size_t)side);
		}
		free(txt);
	}

	/* ZPL: the printer's own QR code, level and magnification from the options. */
	char *zpl = (char *)render(label, QR_FORMAT_ZPL, 4, 4, QR_EC_M, &len);
	char want[QR_TEXT_MAX + 64];
	snprintf(want, sizeof(want), "^BQN,2,4^FDMA,%s^FS", label);
	CHECK(zpl && strncmp(zpl, "^XA", 3) == 0 && strstr(zpl, want));
	CHECK(zpl && strstr(zpl, "^FO16,16^BQN"));
	CHECK(zpl && len > 4 && strcmp(zpl + len - 4, "^XZ\n") == 0);
	CHECK(zpl && !strstr(zpl, "^FH"));
	free(zpl);
	zpl = (char *)render(label, QR_FORMAT_ZPL, 15, 0, QR_EC_H, &len);
	snprintf(want, sizeof(want), "^FO0,0^BQN,2,10^FDHA,%s^FS", label);
	CHECK(zpl && strstr(zpl, want));
	free(zpl);
	zpl = (char *)render("A^B~C_D", QR_FORMAT_ZPL, 2, 1, QR_EC_Q, &len);
	CHECK(zpl && strstr(zpl, "^BQN,2,2^FH_^FDQA,A_5EB_7EC_5FD^FS"));
	free(zpl);

	struct qr_opts o;
	qr_opts_default(&o);
	o.format = QR_FORMAT_ZPL;
	o.caption = "0123D345666E2DBD";
	uint8_t *data = NULL;
	CHECK_INT(qr_image_render(label, &o, &data, &len), 0);
	CHECK(data && strstr((char *)data, "^A0N,20,20^FD0123D345666E2DBD^FS\n^XZ\n"));
	free(data);

	/* Must fail, leaving the outputs alone. */
	uint8_t sentinel = 0;
	data = &sentinel;
	len = 777;
	qr_opts_default(&o);
	CHECK_INT(o.format, QR_FORMAT_PNG);
	CHECK_INT(o.scale, 4);
	CHECK_INT(o.margin, 4);
	CHECK_INT(o.level, QR_EC_M);
	struct qr_opts bad[] = {o, o, o, o, o, o, o};
	bad[0].format = QR_FORMAT_NONE;
	bad[1].format = (enum qr_format)99;
	bad[2].scale = 0;
	bad[3].scale = QR_SCALE_MAX + 1;
	bad[4].margin = -1;
	bad[5].margin = QR_MARGIN_MAX + 1;
	bad[6].level = (enum qr_ec_level)7;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_INT(qr_image_render(label, &bad[i], &data, &len), -EINVAL);
	CHECK_INT(qr_image_render("", &o, &data, &len), -EINVAL);
	CHECK_INT(qr_image_render(NULL, &o, &data, &len), -EINVAL);
	CHECK_INT(qr_image_render(label, NULL, &data, &len), -EINVAL);
	static char huge[4000];
	memset(huge, 'x', sizeof(huge) - 1);
	CHECK_INT(qr_image_render(huge, &o, &data, &len), -EMSGSIZE);
	CHECK(data == &sentinel && len == 777);

	/* Names. */
	enum qr_format fmt = QR_FORMAT_PNG;
	CHECK_INT(qr_format_from_string("svg", &fmt), 0);
	CHECK_INT(fmt, QR_FORMAT_SVG);
	CHECK_INT(qr_format_from_string("none", &fmt), 0);
	CHECK_INT(fmt, QR_FORMAT_NONE);
	CHECK_INT(qr_format_from_string("text", &fmt), 0);
	CHECK_INT(fmt, QR_FORMAT_TEXT);
	CHECK_INT(qr_format_from_string("PNG", &fmt), -EINVAL);
	CHECK_INT(qr_format_from_string("", &fmt), -EINVAL);
	CHECK_INT(qr_format_from_string(NULL, &fmt), -EINVAL);
	CHECK_INT(fmt, QR_FORMAT_TEXT);
	CHECK_STR(qr_format_ext(QR_FORMAT_TEXT), "txt");
	CHECK_STR(qr_format_ext(QR_FORMAT_ZPL), "zpl");
	CHECK(qr_format_ext(QR_FORMAT_NONE) == NULL);
	CHECK(qr_format_ext((enum qr_format)42) == NULL);
	CHECK_STR(qr_format_name(QR_FORMAT_PNG), "png");
	enum qr_ec_level lv = QR_EC_L;
	CHECK_INT(qr_ec_level_from_string("q", &lv), 0);
	CHECK_INT(lv, QR_EC_Q);
	CHECK_INT(qr_ec_level_from_string("H", &lv), 0);
	CHECK_INT(lv, QR_EC_H);
	CHECK_INT(qr_ec_level_from_string("X", &lv), -EINVAL);
	CHECK_INT(qr_ec_level_from_string("MM", &lv), -EINVAL);
	CHECK_STR(qr_ec_level_name(QR_EC_M), "M");
}

/* "render FORMAT LEVEL SCALE MARGIN TEXT FILE": write one image for the decode test. */
static int render_to_file(char **argv)
{
	struct qr_opts o;
	qr_opts_default(&o);
	if (qr_format_from_string(argv[0], &o.format) < 0 ||
	    qr_ec_level_from_string(argv[1], &o.level) < 0) {
		fprintf(stderr, "bad format or level\n");
		return 2;
	}
	o.scale = atoi(argv[2]);
	o.margin = atoi(argv[3]);
	uint8_t *data;
	size_t len;
	int r = qr_image_render(argv[4], &o, &data, &len);
	if (r < 0) {
		fprintf(stderr, "render: %s\n", strerror(-r));
		return 1;
	}
	FILE *f = fopen(argv[5], "wb");
	int ok = f && fwrite(data, 1, len, f) == len;
	if (f && fclose(f) != 0)
		ok = 0;
	free(data);
	if (!ok) {
		perror(argv[5]);
		return 1;
	}
	printf("%d\n", qr_image_modules(argv[4], o.level));
	return 0;
}

/* A stored matrix draws exactly the image the text would; malformed ones are refused. */
static void test_matrix(void)
{
	static const char *const texts[] = {
	    "LW:D0:1122334455667788:AABBCCDDEEFF0011:AABB1122:OAABBCCDDEEFF:SYYWWNNNNNN:PFOOBAR:"
	    "CAF2C",
	    "LW:D0:0000000000000000:0123D345666E2DBD:00000000:O6D5C2092339DB0954585343D41E25ACD:"
	    "SSN1:CADF4",
	    "X",
	};
	static const enum qr_format formats[] = {QR_FORMAT_PNG, QR_FORMAT_SVG, QR_FORMAT_ZPL,
						 QR_FORMAT_TEXT};
	uint8_t m[QR_MATRIX_MAX];
	size_t mlen;
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		for (int level = QR_EC_L; level <= QR_EC_H; level++) {
			CHECK_INT(qr_matrix_encode(texts[t], (enum qr_ec_level)level, m, sizeof(m),
						   &mlen),
				  0);
			CHECK_INT(m[0], qr_image_modules(texts[t], (enum qr_ec_level)level));
			for (size_t f = 0; f < sizeof(formats) / sizeof(formats[0]); f++) {
				struct qr_opts o;
				qr_opts_default(&o);
				o.format = formats[f];
				o.level = (enum qr_ec_level)level;
				o.scale = 3;
				o.margin = 2;
				uint8_t *a = NULL, *b = NULL;
				size_t alen = 0, blen = 0;
				CHECK_INT(qr_image_render(texts[t], &o, &a, &alen), 0);
				CHECK_INT(qr_matrix_render(m, mlen, texts[t], &o, &b, &blen), 0);
				CHECK(alen == blen && a && b && memcmp(a, b, alen) == 0);
				free(a);
				free(b);
			}
		}
	}
	CHECK_INT(qr_matrix_encode("X", QR_EC_M, m, 10, &mlen), -ENOBUFS);
	CHECK_INT(qr_matrix_encode("", QR_EC_M, m, sizeof(m), &mlen), -EINVAL);

	struct qr_opts o;
	qr_opts_default(&o);
	uint8_t *img;
	size_t ilen;
	CHECK_INT(qr_matrix_encode("X", QR_EC_M, m, sizeof(m), &mlen), 0);
	CHECK_INT(qr_matrix_render(m, mlen - 1, "X", &o, &img, &ilen), -EINVAL);
	CHECK_INT(qr_matrix_render(m, mlen + 1, "X", &o, &img, &ilen), -EINVAL);
	CHECK_INT(qr_matrix_render(m, 0, "X", &o, &img, &ilen), -EINVAL);
	uint8_t bad[QR_MATRIX_MAX] = {0};
	for (unsigned w = 0; w < 256; w++) {
		bool valid = w >= 21 && w <= 177 && (w - 17) % 4 == 0;
		bad[0] = (uint8_t)w;
		int r = qr_matrix_render(bad, 1 + (w * w + 7) / 8, "X", &o, &img, &ilen);
		if (valid) {
			CHECK_INT(r, 0);
			if (r == 0)
				free(img);
		} else {
			CHECK_INT(r, -EINVAL);
		}
	}
	o.scale = 0;
	CHECK_INT(qr_matrix_render(m, mlen, "X", &o, &img, &ilen), -EINVAL);
}

int main(int argc, char **argv)
{
	if (argc == 8 && strcmp(argv[1], "render") == 0)
		return render_to_file(argv + 2);
	test_tr005();
	test_round_trip();
	test_parse();
	test_template();
	test_images();
	test_matrix();
	return tap_done();
}
