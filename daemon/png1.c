/* png1: 1-bit grayscale PNGs through libpng, into a caller's sink. */
#include "png1.h"

#include <errno.h>
#include <stdlib.h>

#include <png.h>

struct png1_io {
	png1_sink_fn *sink;
	void *arg;
	int err;
};

/* libpng's error handler: back to the setjmp, no message (library code does not log). */
static void on_error(png_structp png, png_const_charp msg)
{
	(void)msg;
	png_longjmp(png, 1);
}

/* libpng's warning handler: ignored. */
static void on_warning(png_structp png, png_const_charp msg)
{
	(void)png;
	(void)msg;
}

static void on_write(png_structp png, png_bytep data, png_size_t len)
{
	struct png1_io *io = png_get_io_ptr(png);
	int r = io->sink(data, len, io->arg);
	if (r < 0) {
		io->err = r;
		png_error(png, "sink");
	}
}

/* Nothing to flush: the sink keeps the bytes in memory. */
static void on_flush(png_structp png)
{
	(void)png;
}

int png1_write(const struct png1 *p, png1_row_fn *row_fn, png1_sink_fn *sink, void *arg)
{
	const size_t rowbytes = ((size_t)p->width + 7) / 8;
	struct png1_io io = {.sink = sink, .arg = arg};
	uint8_t *row = malloc(rowbytes ? rowbytes : 1);
	png_structp png =
	    row ? png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, on_error, on_warning) : NULL;
	png_infop info = png ? png_create_info_struct(png) : NULL;
	int r = -ENOMEM;
	if (!info)
		goto out;
	if (setjmp(png_jmpbuf(png))) {
		r = io.err ? io.err : -ENOMEM;
		goto out;
	}
	png_set_write_fn(png, &io, on_write, on_flush);
	png_set_IHDR(png, info, p->width, p->height, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
		     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
	if (p->dpi) {
		png_uint_32 ppm = (png_uint_32)((p->dpi * 10000.0) / 254.0 + 0.5);
		png_set_pHYs(png, info, ppm, ppm, PNG_RESOLUTION_METER);
	}
	/*
	 * Images are made on the activation path, so favour speed: 1-bit rows gain nothing from
	 * filters; an image is a few kilobytes of rows, so a small window and hash need no mmap.
	 */
	png_set_filter(png, PNG_FILTER_TYPE_BASE, PNG_FILTER_NONE);
	png_set_compression_level(png, p->compact ? 6 : 1);
	png_set_compression_window_bits(png, 14);
	png_set_compression_mem_level(png, 6);
	png_write_info(png, info);
	for (uint32_t y = 0; y < p->height; y++) {
		row_fn(y, row, arg);
		png_write_row(png, row);
	}
	png_write_end(png, NULL);
	r = 0;
out:
	png_destroy_write_struct(&png, &info);
	free(row);
	return r;
}
