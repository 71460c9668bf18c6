/* store_rows_check: the answer of an asynchronous store read, kept for a test's checks. */
#pragma once

#include <stdbool.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "store.h"
#include "tap.h"

struct rows_done {
	int calls, err;
	bool inside; /* answered inside the call that asked */
	size_t n;
	char first[17], last[17]; /* DevEUIs of the first and last record or audit entry */
	uint64_t counts[STORE_N_STATES];
	uint8_t hsm[16];
	char outcome[16]; /* of the last attempt */
};

static bool rows_asking;

static void on_rows(int err, const char *reason, const struct store_rows *rows, void *arg)
{
	struct rows_done *d = arg;
	d->calls++;
	d->err = err;
	d->inside = rows_asking;
	if (err)
		return;
	d->n = rows->n;
	memcpy(d->counts, rows->counts, sizeof(d->counts));
	memcpy(d->hsm, rows->hsm_key, 16);
	if (rows->records && rows->n) {
		memcpy(d->first, rows->records[0].dev_eui, 17);
		memcpy(d->last, rows->records[rows->n - 1].dev_eui, 17);
	}
	if (rows->audit && rows->n) {
		memcpy(d->first, rows->audit[0].dev_eui, 17);
		memcpy(d->last, rows->audit[rows->n - 1].dev_eui, 17);
	}
	if (rows->attempts && rows->n)
		snprintf(d->outcome, sizeof(d->outcome), "%s", rows->attempts[rows->n - 1].outcome);
}

/* Ask with call (on loop b), check it is answered later, never inside it; wait for it. */
#define ASK(b, d, call)                                                                            \
	do {                                                                                       \
		memset(&(d), 0, sizeof(d));                                                        \
		rows_asking = true;                                                                \
		CHECK_INT((call), 0);                                                              \
		rows_asking = false;                                                               \
		time_t t0_ = time(NULL);                                                           \
		while (!(d).calls && time(NULL) - t0_ < 10) {                                      \
			event_base_loop((b), EVLOOP_ONCE | EVLOOP_NONBLOCK);                       \
			if (!(d).calls)                                                            \
				usleep(1000);                                                      \
		}                                                                                  \
		CHECK_INT((d).calls, 1);                                                           \
		CHECK(!(d).inside);                                                                \
	} while (0)
