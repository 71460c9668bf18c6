/* fuzz-config: the tpad.conf parser on arbitrary text; what it accepts prints and re-parses. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* Abort on a broken promise, so the fuzzer reports it. */
static void require(int ok)
{
	if (!ok)
		abort();
}

/* config_print output as a malloc'd string. */
static char *print(const struct config *c)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	require(f != NULL);
	config_print(c, f, false);
	require(fclose(f) == 0);
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	require(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';

	struct config c;
	char err[512];
	config_defaults(&c);
	err[0] = '\0';
	int r = config_load_string(&c, "fuzz.conf", text, err, sizeof(err));
	/* An error always says where. */
	require(r == 0 || strncmp(err, "fuzz.conf:", 10) == 0);
	if (r == 0) {
		/* What was accepted prints as a config that gives the same values. */
		char *once = print(&c);
		struct config again;
		config_defaults(&again);
		require(config_load_string(&again, "printed", once, err, sizeof(err)) == 0);
		char *twice = print(&again);
		require(strcmp(once, twice) == 0);
		free(once);
		free(twice);
		config_free(&again);
	}
	config_free(&c);
	free(text);
	return 0;
}
