/*
 * Fuzz target for qr: the input is a template and a candidate TR005 text separated by the
 * first NUL. Checks that check and render agree, that renders fit, and that a parsed text
 * is rebuilt exactly by qr_tr005().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Run the template half: check, render into a full and a tight buffer. */
static void fuzz_template(const char *tmpl)
{
	static const struct qr_fields f = {
	    "70B3D57ED0000001",
	    "0123d345666e2dbd",
	    "00000000",
	    "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0"
	    "123456789ABCDEF0123456789ABCDEF0123456789ABCDEF",
	    "sn-0123456789abcdefghijklmnopqrstuvwxyz-0123456789abcdefghijklmn",
	    "P"};
	char err[128], out[QR_TEXT_MAX];
	int checked = qr_template_check(tmpl, err, sizeof(err));
	int r = qr_template_render(tmpl, &f, out, sizeof(out));
	/* A valid template always renders into QR_TEXT_MAX; an invalid one never renders. */
	if ((checked == 0) != (r == 0))
		abort();
	if (r == 0) {
		size_t len = strlen(out);
		if (len >= sizeof(out))
			abort();
		char *tight = malloc(len + 1);
		if (!tight || qr_template_render(tmpl, &f, tight, len + 1) != 0 ||
		    strcmp(tight, out) != 0 || qr_template_render(tmpl, &f, tight, len) == 0)
			abort();
		free(tight);
	}
}

/* Run the TR005 half: a text that parses is exactly what qr_tr005() makes of its fields. */
static void fuzz_tr005(const char *text)
{
	struct qr_parsed p;
	if (qr_tr005_parse(text, &p) != 0)
		return;
	struct qr_fields f = {p.join_eui,    p.dev_eui, p.profile_id,
			      p.owner_token, p.serial,	p.proprietary};
	char again[QR_TEXT_MAX];
	if (qr_tr005(&f, again, sizeof(again)) != 0 || strcmp(again, text) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 2);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	buf[size + 1] = '\0';
	size_t first = strlen(buf);
	fuzz_template(buf);
	fuzz_tr005(first < size ? buf + first + 1 : buf);
	free(buf);
	return 0;
}
