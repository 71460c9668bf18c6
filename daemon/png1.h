/* png1: one writer of 1-bit grayscale PNGs (libpng), for the bare code and the whole label. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Fill row y (0 at the top) of (width + 7) / 8 bytes, leftmost pixel most significant, 1 white. */
typedef void png1_row_fn(uint32_t y, uint8_t *row, void *arg);

/* Take the next bytes of the file; 0 or a negative errno, which ends the writing. */
typedef int png1_sink_fn(const void *data, size_t len, void *arg);

struct png1 {
	uint32_t width, height; /* pixels */
	unsigned dpi;		/* written as pHYs when not 0 */
	bool compact;		/* deflate level 6 (about level 9's size at a third of the time), else 1 */
};

/* Write the image; 0, -ENOMEM, or the sink's error. */
int png1_write(const struct png1 *p, png1_row_fn *row, png1_sink_fn *sink, void *arg);
