/* wipe: freed memory is zeroed, so a key that passed through a buffer does not stay. */
#pragma once

#include <stddef.h>

/*
 * Make jansson and libevent zero every block they free (wipe_free), and grow or shrink
 * blocks without leaving the old bytes behind (wipe_realloc). Call once at the start of
 * main, before either library allocates. SQLite and mbedTLS are not hooked: SQLite only
 * sees sealed keys, and mbedTLS zeroes its record buffers and key contexts itself.
 */
void wipe_install(void);

/* Zero the whole block p (as malloc_usable_size gives it), then free it. Accepts NULL. */
void wipe_free(void *p);

/*
 * realloc that leaves no copy: a block that shrinks has its tail zeroed and stays where it
 * is; one that grows is copied to a new block and the old one wiped and freed. NULL (p
 * untouched) when out of memory; n == 0 frees p and returns NULL.
 */
void *wipe_realloc(void *p, size_t n);
