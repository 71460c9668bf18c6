/* clock: monotonic and wall-clock time in the units the daemons use. */
#pragma once

#include <stdint.h>

/* Microseconds on the monotonic clock. */
uint64_t clock_now_us(void);

/* Milliseconds on the monotonic clock. */
uint64_t clock_now_ms(void);

/* Milliseconds since the Unix epoch (wall clock). */
int64_t clock_wall_ms(void);

/* Days from 1970-01-01 to a proleptic Gregorian date (month and day from 1). */
int64_t clock_days_from_civil(int64_t y, int m, int d);

/* The proleptic Gregorian date of a day count from 1970-01-01. */
void clock_civil_from_days(int64_t days, int64_t *y, int *m, int *d);
