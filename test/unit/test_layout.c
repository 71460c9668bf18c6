/*
 * Unit tests for layout: caption templates, fitting, and the ZPL, PDF, PNG and SVG labels.
 * "test-layout render FORMAT TEXT FILE [key=value...]" writes one label for the decode test.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "label.h"
#include "layout.h"
#include "print.h"
#include "qr_image.h"
#include "tap.h"

#define TEXT "LW:D0:70B3D57ED0000001:0123D345666E2DBD:00000000:O00112233AABBCCDD:C1F2E"

static const struct caption_fields fields = {"0123D345666E2DBD", "70B3D57ED0000001", "SN-42"};

/* A config with every default and the lines of text over it. */
static int load(struct config *c, const char *text, char *err, size_t errlen)
{
	config_defaults(c);
	return config_load_string(c, "test.conf", text, err, errlen);
}

static void test_captions(void)
{
	char why[256], out[CAPTION_MAX];
	CHECK_INT(caption_check("{devEUI}", why, sizeof(why)), 0);
	CHECK_INT(caption_check("SN {serial} / {joinEUI} {{x}}", why, sizeof(why)), 0);
	CHECK_INT(caption_check("{devEui}", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "{devEui}") != NULL);
	CHECK_INT(caption_check("{ownerToken}", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "unknown field {ownerToken}") != NULL);
	CHECK_INT(caption_check("open {devEUI", why, sizeof(why)), -EINVAL);
	CHECK_INT(caption_check("close }", why, sizeof(why)), -EINVAL);
	CHECK_INT(caption_check("tab\there", why, sizeof(why)), -EINVAL);
	CHECK_INT(caption_check("Gr\xc3\xb6\xc3\x9f" "e {devEUI}", why, sizeof(why)), 0);
	CHECK_INT(caption_check("bad \xff byte", why, sizeof(why)), -EINVAL);
	CHECK(strstr(why, "UTF-8") != NULL);
	CHECK_INT(caption_check("cut \xc3", why, sizeof(why)), -EINVAL);
	CHECK_INT(caption_render("\xc3\xa9{serial}", &fields, out, sizeof(out)), 0);
	CHECK_STR(out, "\xc3\xa9SN-42");
	CHECK_INT(caption_render("SN {serial} {{x}} {devEUI}", &fields, out, sizeof(out)), 0);
	CHECK_STR(out, "SN SN-42 {x} 0123D345666E2DBD");
	const struct caption_fields none = {"0123D345666E2DBD", NULL, NULL};
	CHECK_INT(caption_render("[{serial}]", &none, out, sizeof(out)), 0);
	CHECK_STR(out, "[]");
	CHECK_INT(caption_render("{devEUI}", &fields, out, 10), -ENOBUFS);
}

static void test_config(void)
{
	struct config c;
	char err[512];
	CHECK_INT(load(&c, "[label]\ncaption-3 = MAC {devEUI}\nwidth = 50.8\nheight = 25.4\n", err,
		       sizeof(err)),
		  0);
	CHECK_INT(c.label.width, 508);
	CHECK_INT(c.label.height, 254);
	CHECK_STR(c.label.captions[2], "MAC {devEUI}");
	config_free(&c);

	CHECK_INT(load(&c, "[label]\n\ncaption-2 = {serail}\n", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "test.conf:3:") && strstr(err, "label.caption-2") &&
	      strstr(err, "{serail}"));
	config_free(&c);
	CHECK_INT(load(&c, "[label]\nwidth = 3\n", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "test.conf:2:") != NULL);
	config_free(&c);

	CHECK_INT(load(&c,
		       "[printer.line1]\nurl = socket://127.0.0.1:9100\nstation-uids = 0\n"
		       "[printer.office]\nurl = ipp://127.0.0.1:631/ipp/print\ndpi = 300\n"
		       "[print]\ndefault = office\n",
		       err, sizeof(err)),
		  0);
	CHECK_INT(c.n_printers, 2);
	CHECK_STR(c.printers[0].name, "line1");
	CHECK_INT(config_printer_language(&c.printers[0]), PRINTER_LANG_ZPL);
	CHECK_INT(config_printer_language(&c.printers[1]), PRINTER_LANG_PDF);
	CHECK_INT(c.printers[1].dpi, 300);
	CHECK_INT(c.printers[0].n_station_uids, 1);
	CHECK_STR(c.print_default, "office");
	CHECK(config_printer_find(&c, "line1") == &c.printers[0]);
	CHECK(config_printer_find(&c, "nope") == NULL);
	/* --print-config output parses back to the same printers. */
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	config_print(&c, f, false);
	fclose(f);
	struct config again;
	CHECK_INT(load(&again, text, err, sizeof(err)), 0);
	CHECK_INT(again.n_printers, 2);
	CHECK_STR(again.printers[1].url, "ipp://127.0.0.1:631/ipp/print");
	config_free(&again);
	free(text);
	config_free(&c);

	CHECK_INT(load(&c, "[print]\ndefault = ghost\n", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "test.conf:2:") && strstr(err, "ghost"));
	config_free(&c);
	CHECK_INT(load(&c, "[printer.a]\nurl = lpd://x\n", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "test.conf:2:") && strstr(err, "printer.a.url"));
	config_free(&c);
	CHECK_INT(load(&c, "[printer.a]\ndpi = 300\n", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "[printer.a] has no url") != NULL);
	config_free(&c);
	CHECK_INT(load(&c, "[printer.a]\nurl = socket://x\nlanguage = pdf\n", err, sizeof(err)),
		  -EINVAL);
	config_free(&c);
	CHECK_INT(load(&c, "[printer.a b]\nurl = socket://x\n", err, sizeof(err)), -EINVAL);
	config_free(&c);
	CHECK_INT(load(&c, "[printer.a]\ncolour = red\n", err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "printer.a.colour") != NULL);
	config_free(&c);
}

static void test_fit(void)
{
	struct config c;
	char err[512];
	struct layout *l = NULL;
	CHECK_INT(load(&c, "", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), 0);
	int w, h, dpi;
	layout_size(l, &w, &h, &dpi);
	CHECK_INT(dpi, 203);
	CHECK_INT(w, 456); /* 57 x 32 mm at 203 dpi */
	CHECK_INT(h, 256);
	l = layout_free(l);
	config_free(&c);

	/* A caption that cannot fit beside the code: the error names the line. */
	CHECK_INT(load(&c, "[label]\ncaption-3 = Manufactured by the ACME company {joinEUI}\n", err,
		       sizeof(err)),
		  0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "label.caption-3") != NULL);
	config_free(&c);

	/*
	 * Characters beyond ASCII are measured as drawn, not as a W a byte: the accented twin
	 * of a caption is as wide as it (DejaVu Sans gives é the advance of e), and a caption
	 * that fits in ASCII fits accented too.
	 */
	{
		static const char *const twins[][2] = {
		    {"Qualit\xc3\xa4t gepr\xc3\xbc"
		     "ft in K\xc3\xb6ln und M\xc3\xbcnchen {joinEUI}",
		     "Qualitat gepruft in Koln und Munchen {joinEUI}"},
		    {"Fabriqu\xc3\xa9 \xc3\xa0 Besan\xc3\xa7on", "Fabrique a Besancon"},
		};
		char errs[2][512];
		for (int t = 0; t < 2; t++) {
			for (int k = 0; k < 2; k++) {
				char text[200];
				snprintf(text, sizeof(text), "[label]\ncaption-3 = %s\n",
					 twins[t][k]);
				CHECK_INT(load(&c, text, err, sizeof(err)), 0);
				errs[k][0] = '\0';
				int r = layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, errs[k],
						   sizeof(errs[k]));
				CHECK_INT(r, t == 0 ? -EINVAL : 0);
				l = layout_free(l);
				config_free(&c);
			}
			/* The same width in both messages ("... is 61.2 mm wide ..."). */
			const char *a = strstr(errs[0], "' is "), *b = strstr(errs[1], "' is ");
			CHECK(t == 1 || (a && b && strcmp(a, b) == 0));
		}
	}

	/* Too many lines of too big a font. */
	CHECK_INT(load(&c, "[label]\nfont-size = 30\ncaption-3 = a\ncaption-4 = b\n", err,
		       sizeof(err)),
		  0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "label.caption") != NULL);
	config_free(&c);

	/* A code that cannot keep its quiet zone. */
	CHECK_INT(load(&c, "[label]\nqr-size = 5\n", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "label.qr-size") && strstr(err, "quiet zone"));
	config_free(&c);
	/* Room for one dot a module only: printed, but no scanner reads it (0.25 mm least). */
	CHECK_INT(load(&c, "[label]\nqr-size = 10\n", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "label.qr-size") && strstr(err, "modules of 2 dots, 0.25 mm"));
	config_free(&c);
	CHECK_INT(load(&c, "[label]\nqr-size = 12\n", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), 0);
	layout_free(l);
	config_free(&c);
	/* A ZPL printer encodes the text itself, perhaps all in byte mode: room for that. */
	CHECK_INT(qr_image_modules("LW:D0:ACME", QR_EC_M), 21);
	CHECK(qr_image_modules_printer("ACME:70B3D5AABBCCDD04:0000000000000000:00000000:8FCC69C6"
				       "65105F16339EFD20880BD065:SN1:{x}",
				       QR_EC_M) >
	      qr_image_modules("ACME:70B3D5AABBCCDD04:0000000000000000:00000000:8FCC69C6"
			       "65105F16339EFD20880BD065:SN1:{x}",
			       QR_EC_M));

	/* A long serial that does not fit at render time: -EMSGSIZE naming the line. */
	CHECK_INT(load(&c, "", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), 0);
	const struct caption_fields longf = {
	    "0123D345666E2DBD", NULL, "SERIAL-0123456789-0123456789-0123456789-0123456789"};
	uint8_t *data = NULL;
	size_t len;
	CHECK_INT(layout_render(l, LAYOUT_ZPL, TEXT, &longf, &data, &len, err, sizeof(err)),
		  -EMSGSIZE);
	CHECK(strstr(err, "label.caption-2") != NULL);
	CHECK(data == NULL);

	/*
	 * A serial of 36 characters fits beside the code of the typical text the configuration
	 * is checked with (version 5), but its own label text needs a larger code (version 6):
	 * the fit is measured with that text.
	 */
	static const char typical[] = "LW:D0:70B3D57ED0000001:0123D345666E2DBD:00000000:"
				      "O0123456789ABCDEF0123456789ABCDEF:SSN-00000001:C1A2B";
	const char *serial = "AAAAAA..............................";
	const struct caption_fields f36 = {"0123D345666E2DBD", "70B3D57ED0000001", serial};
	char text[QR_TEXT_MAX];
	CHECK_INT(layout_fields_fit(l, typical, &f36, err, sizeof(err)), 0);
	CHECK_INT(label_text_to_issue(&c, "0123D345666E2DBD", "", serial, text, sizeof(text)), 0);
	CHECK(strstr(text, ":SAAAAAA....") != NULL);
	CHECK_INT(layout_fields_fit(l, text, &f36, err, sizeof(err)), -EMSGSIZE);
	CHECK(strstr(err, "label.caption-2") != NULL);
	layout_free(l);
	config_free(&c);
}

static void test_formats(void)
{
	struct config c;
	char err[512];
	struct layout *l = NULL;
	CHECK_INT(load(&c, "", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), 0);
	uint8_t *data;
	size_t len;

	CHECK_INT(layout_render(l, LAYOUT_ZPL, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	const char *z = (const char *)data;
	CHECK(strncmp(z, "^XA\n", 4) == 0);
	CHECK(strstr(z, "^PW456\n^LL256\n") != NULL);
	/* UPSTREAM.md 6: ^BQN,2,<mag> and the switches before the text. */
	CHECK(strstr(z, "^BQN,2,") != NULL);
	CHECK(strstr(z, "^FDMA," TEXT "^FS") != NULL);
	CHECK(strstr(z, "^FD0123D345666E2DBD^FS") != NULL);
	CHECK(strstr(z, "^FDSN-42^FS") != NULL);
	CHECK(strstr(z, "^XZ\n") != NULL);
	CHECK(strstr(z, "^PQ") == NULL);
	free(data);

	/* Copies and several labels in one ZPL document. */
	struct layout_doc *d;
	CHECK_INT(layout_doc_new(l, LAYOUT_ZPL, &d), 0);
	CHECK_INT(layout_doc_add(d, TEXT, &fields, 3, err, sizeof(err)), 0);
	CHECK_INT(layout_doc_add(d, TEXT, &fields, 1, err, sizeof(err)), 0);
	CHECK_INT(layout_doc_finish(d, &data, &len), 0);
	z = (const char *)data;
	CHECK(strstr(z, "^PQ3\n^XZ\n^XA") != NULL);
	free(data);

	/* ZPL specials in captions go through ^FH. */
	const struct caption_fields odd = {"0123D345666E2DBD", NULL, "A^B~C"};
	CHECK_INT(layout_render(l, LAYOUT_ZPL, TEXT, &odd, &data, &len, err, sizeof(err)), 0);
	CHECK(strstr((const char *)data, "^FH_^FDA_5EB_7EC^FS") != NULL);
	free(data);

	CHECK_INT(layout_render(l, LAYOUT_PDF, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	CHECK(len > 500 && memcmp(data, "%PDF-", 5) == 0);
	free(data);
	CHECK_INT(layout_render(l, LAYOUT_PNG, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	CHECK(len > 100 && memcmp(data, "\x89PNG", 4) == 0);
	free(data);
	CHECK_INT(layout_render(l, LAYOUT_SVG, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	CHECK(strstr((const char *)data, "<svg") != NULL);
	free(data);

	/* PNG and SVG hold one label. */
	CHECK_INT(layout_doc_new(l, LAYOUT_PNG, &d), 0);
	CHECK_INT(layout_doc_add(d, TEXT, &fields, 1, err, sizeof(err)), 0);
	CHECK_INT(layout_doc_add(d, TEXT, &fields, 1, err, sizeof(err)), -E2BIG);
	layout_doc_free(d);
	/* An empty text is refused. */
	CHECK_INT(layout_render(l, LAYOUT_PDF, "", &fields, &data, &len, err, sizeof(err)),
		  -EINVAL);
	layout_free(l);
	config_free(&c);
}

/* The images stations and exports get: PNG 1-bit at the label's dots, SVG captions as text. */
static void test_images(void)
{
	struct config c;
	char err[512];
	struct layout *l = NULL;
	CHECK_INT(load(&c, "[label]\ncaption-3 = A&B <\"x\">\n", err, sizeof(err)), 0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), 0);
	uint8_t *data;
	size_t len;
	CHECK_INT(layout_render(l, LAYOUT_PNG, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	/* IHDR: 456 x 256, bit depth 1, grayscale; pHYs: 203 dpi = 7992 dots per metre. */
	CHECK(len > 33 && memcmp(data + 12, "IHDR", 4) == 0);
	CHECK(memcmp(data + 16, "\0\0\x01\xc8\0\0\x01\0\x01\0", 10) == 0);
	const uint8_t ppm[] = {'p', 'H', 'Y', 's', 0, 0, 0x1f, 0x38, 0, 0, 0x1f, 0x38, 1};
	CHECK(memmem(data, len, ppm, sizeof(ppm)) != NULL);
	free(data);

	CHECK_INT(layout_render(l, LAYOUT_SVG, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	const char *svg = (const char *)data;
	CHECK(strstr(svg, "width=\"456px\" height=\"256px\" viewBox=\"0 0 456 256\"") != NULL);
	CHECK(strstr(svg, ">0123D345666E2DBD</text>") != NULL);
	CHECK(strstr(svg, ">SN-42</text>") != NULL);
	CHECK(strstr(svg, ">A&amp;B &lt;&quot;x&quot;&gt;</text>") != NULL);
	free(data);

	/* A stored code draws the same label as one encoded now. */
	uint8_t m[QR_MATRIX_MAX];
	size_t mlen;
	CHECK_INT(qr_matrix_encode(TEXT, QR_EC_M, m, sizeof(m), &mlen), 0);
	uint8_t *a, *b;
	size_t alen, blen;
	struct layout_doc *d;
	CHECK_INT(layout_render(l, LAYOUT_SVG, TEXT, &fields, &a, &alen, err, sizeof(err)), 0);
	CHECK_INT(layout_doc_new(l, LAYOUT_SVG, &d), 0);
	CHECK_INT(layout_doc_add_matrix(d, TEXT, m, mlen, &fields, 1, err, sizeof(err)), 0);
	CHECK_INT(layout_doc_finish(d, &b, &blen), 0);
	CHECK(alen == blen && memcmp(a, b, alen) == 0);
	free(a);
	free(b);
	/* A malformed one is refused. */
	CHECK_INT(layout_doc_new(l, LAYOUT_PNG, &d), 0);
	CHECK_INT(layout_doc_add_matrix(d, TEXT, m, 10, &fields, 1, err, sizeof(err)), -EINVAL);
	layout_doc_free(d);

	/* A call's level: the printer is told it (ZPL), the code is drawn at it. */
	CHECK_INT(layout_doc_new(l, LAYOUT_ZPL, &d), 0);
	layout_doc_set_level(d, QR_EC_H);
	CHECK_INT(layout_doc_add(d, TEXT, &fields, 1, err, sizeof(err)), 0);
	CHECK_INT(layout_doc_finish(d, &data, &len), 0);
	CHECK(strstr((const char *)data, "^FDHA," TEXT "^FS") != NULL);
	free(data);

	/* The fingerprint follows the caption fields and the layout. */
	const struct caption_fields other = {"0123D345666E2DBD", "70B3D57ED0000001", "SN-43"};
	uint32_t f1 = layout_fingerprint(l, &fields);
	CHECK(f1 == layout_fingerprint(l, &fields));
	CHECK(f1 != layout_fingerprint(l, &other));
	struct layout *wide;
	CHECK_INT(layout_new(&c.label, 0, 600, 0, QR_EC_M, &wide, err, sizeof(err)), 0);
	CHECK(f1 != layout_fingerprint(wide, &fields));
	layout_free(wide);
	layout_free(l);
	config_free(&c);

	/* Captions below the code, on a label of an odd width (a partial last byte). */
	CHECK_INT(load(&c, "[label]\ncaptions = below\nheight = 50\nwidth = 40.2\n", err,
		       sizeof(err)),
		  0);
	CHECK_INT(layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)), 0);
	CHECK_INT(layout_render(l, LAYOUT_PNG, TEXT, &fields, &data, &len, err, sizeof(err)), 0);
	/* 40.2 mm at 203 dpi: 321 dots wide, 400 high. */
	CHECK(len > 33 && memcmp(data + 16, "\0\0\x01\x41\0\0\x01\x90\x01\0", 10) == 0);
	free(data);
	layout_free(l);
	config_free(&c);
}

static void test_hs(void)
{
	/* ~HS answers: three <STX>...<ETX><CR><LF> strings (ZPL II guide, ~HS). */
	const char ok[] = "\x02"
			  "030,0,0,0245,000,0,0,0,000,0,0,0\x03\r\n"
			  "\x02"
			  "000,0,0,0,0,2,4,0,00000000,1,000\x03\r\n"
			  "\x02"
			  "1234,0\x03\r\n";
	struct print_hs hs;
	size_t used;
	CHECK_INT(print_hs_parse(ok, sizeof(ok) - 1, &hs, &used), 0);
	CHECK_INT(used, sizeof(ok) - 1);
	CHECK(!hs.paper_out && !hs.paused && !hs.head_open && !hs.ribbon_out && !hs.buffer_full);
	CHECK_INT(hs.formats_in_buffer, 0);
	CHECK_INT(print_hs_reason(&hs), 0);

	const char bad[] = "\x02"
			   "030,1,1,0245,003,1,0,0,000,0,0,0\x03\r\n"
			   "\x02"
			   "000,0,1,1,0,2,4,0,00000000,1,000\x03\r\n"
			   "\x02"
			   "1234,0\x03\r\n";
	CHECK_INT(print_hs_parse(bad, sizeof(bad) - 1, &hs, &used), 0);
	CHECK(hs.paper_out && hs.paused && hs.head_open && hs.ribbon_out && hs.buffer_full);
	CHECK_INT(hs.formats_in_buffer, 3);
	char why[128];
	CHECK(print_hs_describe(&hs, why, sizeof(why)) > 0);
	CHECK(strstr(why, "paper out") && strstr(why, "head open") && strstr(why, "ribbon out") &&
	      strstr(why, "paused") && strstr(why, "buffer full"));

	/* Incomplete: wait for more. Garbage: refused. */
	CHECK_INT(print_hs_parse(ok, 20, &hs, &used), -EAGAIN);
	CHECK_INT(print_hs_parse("\x02xyz\x03\r\n\x02a\x03\r\n\x02b\x03\r\n", 21, &hs, &used),
		  -EBADMSG);
	CHECK_INT(print_hs_parse("hello", 5, &hs, &used), -EAGAIN);
	/* A whole line of text and no STX: not ~HS, said at once (it waited for the timeout). */
	CHECK_INT(print_hs_parse("hello\r\n", 7, &hs, &used), -EBADMSG);
	CHECK_INT(print_hs_parse("\r\nHTTP/1.1 400 Bad Request\n", 27, &hs, &used), -EBADMSG);
	/* The echo of the query is no answer, but no garbage either. */
	char echo[sizeof(ok) + 5] = "~HS\r\n";
	memcpy(echo + 5, ok, sizeof(ok));
	CHECK_INT(print_hs_parse(echo, sizeof(echo) - 1, &hs, &used), 0);
	char noise[PRINT_HS_MAX + 10];
	memset(noise, 'x', sizeof(noise));
	CHECK_INT(print_hs_parse(noise, sizeof(noise), &hs, &used), -EBADMSG);
	/* Leading noise before the first STX (a printer's echo) is skipped. */
	char noisy[sizeof(ok) + 2] = "\r\n";
	memcpy(noisy + 2, ok, sizeof(ok));
	CHECK_INT(print_hs_parse(noisy, sizeof(noisy) - 1, &hs, &used), 0);
}

/* render FORMAT TEXT FILE [caption-1 [caption-2]]: write one label for the decode test. */
static int render(int argc, char **argv)
{
	struct config c;
	char err[512];
	config_defaults(&c);
	enum layout_format fmt;
	struct layout *l;
	if (argc < 3 || layout_format_from_string(argv[0], &fmt) < 0)
		return 2;
	if (layout_new(&c.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	uint8_t *data;
	size_t len;
	int r = layout_render(l, fmt, argv[1], &fields, &data, &len, err, sizeof(err));
	layout_free(l);
	config_free(&c);
	if (r < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	FILE *f = fopen(argv[2], "wb");
	if (!f || fwrite(data, 1, len, f) != len || fclose(f) != 0) {
		perror(argv[2]);
		return 1;
	}
	free(data);
	layout_global_cleanup();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "render") == 0)
		return render(argc - 2, argv + 2);
	test_captions();
	test_config();
	test_fit();
	test_formats();
	test_images();
	test_hs();
	layout_global_cleanup();
	return tap_done();
}
