/*
 * Fuzz target for caption templates (label.caption-N): check and render agree, a render
 * fits its buffer exactly, and a template that checks draws a ZPL label whose caption
 * field is escaped (no stray '^' or '~' from a caption).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "layout.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool registered;
	if (!registered) {
		/* The font caches cairo keeps for the process go at exit, for leak checkers. */
		atexit(layout_global_cleanup);
		registered = true;
	}
	char *tmpl = malloc(size + 1);
	if (!tmpl)
		return 0;
	memcpy(tmpl, data, size);
	tmpl[size] = '\0';
	static const struct caption_fields f = {"0123D345666E2DBD", "70B3D57ED0000001",
					       "SN-^~_0123456789"};
	char why[256], out[CAPTION_MAX];
	int checked = caption_check(tmpl, why, sizeof(why));
	int r = caption_render(tmpl, &f, out, sizeof(out));
	if (checked != 0 && checked != -EINVAL)
		abort();
	if ((checked == 0) != (r == 0 || r == -ENOBUFS))
		abort();
	if (r == 0) {
		size_t len = strlen(out);
		char *tight = malloc(len + 1);
		if (!tight || caption_render(tmpl, &f, tight, len + 1) != 0 ||
		    strcmp(tight, out) != 0 || caption_render(tmpl, &f, tight, len) == 0)
			abort();
		free(tight);
	}
	if (checked == 0) {
		struct config_label cl = {.width = 5000, .height = 300, .dpi = 203, .font_size = 4};
		cl.captions[0] = tmpl;
		/* Draw through a layout with this caption when it fits; never crash either way. */
		struct layout *own = NULL;
		char err[256];
		if (layout_new(&cl, 0, 0, 0, QR_EC_M, &own, err, sizeof(err)) == 0) {
			uint8_t *zpl;
			size_t zlen;
			if (layout_render(own, LAYOUT_ZPL, "LW:D0:1:2:3:C4", &f, &zpl, &zlen, err,
					  sizeof(err)) == 0) {
				/* The caption's field carries '^' and '~' only as ^FH escapes. */
				const char *p = strstr((char *)zpl, "^A0N");
				const char *fd = p ? strstr(p, "^FD") : NULL;
				const char *fs = fd ? strstr(fd + 3, "^FS") : NULL;
				for (const char *q = fd ? fd + 3 : NULL; q && q < fs; q++)
					if (*q == '^' || *q == '~')
						abort();
				free(zpl);
			}
			layout_free(own);
		}
	}
	free(tmpl);
	return 0;
}
