/* wipe: freed memory is zeroed, so a key that passed through a buffer does not stay. */
#pragma once

#include <stddef.h>

#include <jansson.h>

/*
 * Make jansson and libevent zero every block they free (wipe_free), grow or shrink blocks
 * without leaving the old bytes behind (wipe_realloc), and count the allocations that fail
 * (wipe_malloc). Call once at the start of main, before either library allocates. SQLite
 * and mbedTLS are not hooked: SQLite only sees sealed keys, and mbedTLS zeroes its record
 * buffers and key contexts itself. A program with another library to hook gives it these
 * functions too (tpas: libxml2).
 */
void wipe_install(void);

/*
 * How many allocations through wipe_malloc, wipe_strdup and wipe_realloc have failed in
 * this process (every thread's). Some libraries report a failure only by what they leave
 * out: jansson a key that json_object_set_new could not add or a character its parser
 * could not keep, libxml2 a node or a text. Code that must not send or keep such a partial
 * result compares this count before and after building it.
 */
unsigned long wipe_alloc_failures(void);

/*
 * json_dumps, or NULL if an allocation failed meanwhile: jansson 2.14 goes on without an
 * object key it could not write, and returns the text without it.
 */
char *wipe_json_dumps(const json_t *v, size_t flags);

/*
 * json_loadb, or NULL if an allocation failed meanwhile: jansson's parser drops a
 * character it cannot keep (an ownerToken one short) and goes on. err as json_loadb
 * leaves it.
 */
json_t *wipe_json_loadb(const char *buf, size_t len, size_t flags, json_error_t *err);

/* malloc and strdup, with each failure counted (wipe_alloc_failures). */
void *wipe_malloc(size_t n);
char *wipe_strdup(const char *s);

/* Zero the whole block p (as malloc_usable_size gives it), then free it. Accepts NULL. */
void wipe_free(void *p);

/*
 * realloc that leaves no copy: a block that shrinks has its tail zeroed and stays where it
 * is; one that grows is copied to a new block and the old one wiped and freed. NULL (p
 * untouched, the failure counted) when out of memory; n == 0 frees p and returns NULL.
 */
void *wipe_realloc(void *p, size_t n);
