/* notify: systemd readiness, status and watchdog, all no-ops without systemd. */
#include "notify.h"

#include <event2/event.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "log.h"

static struct event *watchdog_timer;

/* Pet the watchdog from the event loop, so a stuck loop is noticed. */
static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

int notify_init(struct event_base *base)
{
	uint64_t usec = 0;
	int r = sd_watchdog_enabled(0, &usec);
	if (r <= 0 || usec == 0)
		return 0;
	watchdog_timer = event_new(base, -1, EV_PERSIST, watchdog_cb, NULL);
	if (!watchdog_timer)
		return -1;
	uint64_t half = usec / 2;
	struct timeval tv = {.tv_sec = (time_t)(half / 1000000),
			     .tv_usec = (suseconds_t)(half % 1000000)};
	event_add(watchdog_timer, &tv);
	log_debug("watchdog every %llu ms", (unsigned long long)(half / 1000));
	return 0;
}

void notify_ready(const char *status)
{
	sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_status(const char *status)
{
	sd_notifyf(0, "STATUS=%s", status);
}

void notify_extend(unsigned long long usec, const char *status)
{
	sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu\nSTATUS=%s", usec, status);
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void notify_finish(void)
{
	if (watchdog_timer)
		event_free(watchdog_timer);
	watchdog_timer = NULL;
}
