/*
 * caption: the label caption template (label.caption-N): free text naming the fields
 * {devEUI}, {joinEUI} and {serial}. Checked when the config is read, rendered per label.
 */
#pragma once

#include <stddef.h>

#define CAPTION_MAX 256 /* bytes of one rendered caption line, NUL included */

/* The fields a caption template may name: {devEUI}, {joinEUI}, {serial}. NULL = "". */
struct caption_fields {
	const char *dev_eui;
	const char *join_eui;
	const char *serial;
};

/*
 * Check a caption template: free text with {devEUI}, {joinEUI} and {serial}, "{{" and
 * "}}" for literal braces, printable characters only, at most CAPTION_MAX / 2
 * bytes. -EINVAL with a sentence naming the offending field in why.
 */
int caption_check(const char *tmpl, char *why, size_t whylen);

/* Render a checked template with f into out; -EINVAL (bad template) or -ENOBUFS. */
int caption_render(const char *tmpl, const struct caption_fields *f, char *out,
			  size_t outlen);
