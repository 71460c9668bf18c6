/* notify: systemd readiness, status and watchdog, all no-ops without systemd. */
#pragma once

struct event_base;

/* Start the watchdog timer at half WATCHDOG_USEC if the service manager asked for one. */
int notify_init(struct event_base *base);

void notify_ready(const char *status);
void notify_status(const char *status);

/* A long step before readiness (a migration): the start time-out moves usec further. */
void notify_extend(unsigned long long usec, const char *status);
void notify_stopping(void);

/* Stop the watchdog timer. */
void notify_finish(void);
