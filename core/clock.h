/* clock: monotonic and wall-clock time in the units the daemons use. */
#pragma once

#include <stdint.h>

/* Microseconds on the monotonic clock. */
uint64_t clock_now_us(void);

/* Milliseconds on the monotonic clock. */
uint64_t clock_now_ms(void);

/* Milliseconds since the Unix epoch (wall clock). */
int64_t clock_wall_ms(void);
