/* wipe: freed memory is zeroed, so a key that passed through a buffer does not stay. */
#include "wipe.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <jansson.h>

static atomic_ulong failures;

static void count_failure(void)
{
	atomic_fetch_add_explicit(&failures, 1, memory_order_relaxed);
}

void *wipe_malloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		count_failure();
	return p;
}

char *wipe_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = wipe_malloc(n);
	return p ? memcpy(p, s, n) : NULL;
}

unsigned long wipe_alloc_failures(void)
{
	return atomic_load_explicit(&failures, memory_order_relaxed);
}

char *wipe_json_dumps(const json_t *v, size_t flags)
{
	unsigned long before = wipe_alloc_failures();
	char *s = json_dumps(v, flags);
	if (s && wipe_alloc_failures() != before) {
		wipe_free(s);
		return NULL;
	}
	return s;
}

json_t *wipe_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err)
{
	unsigned long before = wipe_alloc_failures();
	json_t *v = json_loadb(buf, len, flags, err);
	if (wipe_alloc_failures() != before) {
		json_decref(v);
		return NULL;
	}
	return v;
}

void wipe_install(void)
{
	json_set_alloc_funcs(wipe_malloc, wipe_free);
	event_set_mem_functions(wipe_malloc, wipe_realloc, wipe_free);
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
		return wipe_malloc(n);
	if (n == 0) {
		wipe_free(p);
		return NULL;
	}
	size_t have = malloc_usable_size(p);
	if (n <= have) {
		explicit_bzero((char *)p + n, have - n);
		return p;
	}
	void *q = wipe_malloc(n);
	if (!q)
		return NULL;
	memcpy(q, p, have);
	wipe_free(p);
	return q;
}
