/* wipe: freed memory is zeroed, so a key that passed through a buffer does not stay. */
#include "wipe.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

void wipe_install(void)
{
	json_set_alloc_funcs(malloc, wipe_free);
	event_set_mem_functions(malloc, wipe_realloc, wipe_free);
}

void wipe_free(void *p)
{
	if (!p)
		return;
	/* Under ASan malloc_usable_size is the size asked for, so this stays in bounds. */
	explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

void *wipe_realloc(void *p, size_t n)
{
	if (!p)
		return malloc(n);
	if (n == 0) {
		wipe_free(p);
		return NULL;
	}
	size_t have = malloc_usable_size(p);
	if (n <= have) {
		explicit_bzero((char *)p + n, have - n);
		return p;
	}
	void *q = malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, have);
	wipe_free(p);
	return q;
}
