/* log: one-line messages to stderr with sd-daemon priority prefixes. */
#include "log.h"
#include "clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <sys/uio.h>
#include <syslog.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

static bool log_verbose;
static int log_prefixes = -1; /* decided on first use: none on a terminal */

void log_set_verbose(bool verbose)
{
	log_verbose = verbose;
}

/* Write one line: prefix, message, optional ": strerror". */
__attribute__((format(printf, 3, 0))) static void log_vline(const char *prefix, int err,
							    const char *fmt, va_list ap)
{
	char buf[1024];
	if (log_prefixes < 0)
		log_prefixes = !isatty(STDERR_FILENO);
	if (!log_prefixes)
		prefix = "";
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (n < 0)
		return;
	/* Keep one message on one line, whatever the caller passed in. */
	for (char *p = buf; *p; p++)
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	if (err)
		fprintf(stderr, "%s%s: %s\n", prefix, buf, strerror(-err));
	else
		fprintf(stderr, "%s%s\n", prefix, buf);
}

#define LOG_FN(name, prefix, cond)                                                                 \
	void name(const char *fmt, ...)                                                            \
	{                                                                                          \
		if (!(cond))                                                                       \
			return;                                                                    \
		va_list ap;                                                                        \
		va_start(ap, fmt);                                                                 \
		log_vline(prefix, 0, fmt, ap);                                                     \
		va_end(ap);                                                                        \
	}

LOG_FN(log_debug, SD_DEBUG, log_verbose)
LOG_FN(log_info, SD_INFO, true)
LOG_FN(log_notice, SD_NOTICE, true)
LOG_FN(log_warnx, SD_WARNING, true)
LOG_FN(log_errx, SD_ERR, true)

void log_warn_errno(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vline(SD_WARNING, err, fmt, ap);
	va_end(ap);
}

void log_err_errno(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vline(SD_ERR, err, fmt, ap);
	va_end(ap);
}

void log_fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vline(SD_CRIT, 0, fmt, ap);
	va_end(ap);
	abort();
}

/* True when stderr is the journal stream systemd gave us (see systemd.exec JOURNAL_STREAM). */
static bool stderr_is_journal(void)
{
	static int cached = -1;
	if (cached >= 0)
		return cached;
	cached = 0;
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;
	if (e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	    (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
		cached = 1;
	return cached;
}

#define LOG_EVENT_MAX_FIELDS 16

__attribute__((format(printf, 2, 3))) static void log_line(const char *prefix, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vline(prefix, 0, fmt, ap);
	va_end(ap);
}

void log_event(int priority, const char *message_id, const char *message, ...)
{
	const char *keys[LOG_EVENT_MAX_FIELDS], *vals[LOG_EVENT_MAX_FIELDS];
	size_t n = 0;
	va_list ap;
	va_start(ap, message);
	for (const char *k; n < LOG_EVENT_MAX_FIELDS && (k = va_arg(ap, const char *));) {
		const char *v = va_arg(ap, const char *);
		keys[n] = k;
		vals[n++] = v ? v : "";
	}
	va_end(ap);
	if (priority >= LOG_DEBUG && !log_verbose)
		return;
	if (stderr_is_journal()) {
		/* MESSAGE, PRIORITY, MESSAGE_ID, then the fields; each "KEY=value". */
		char *items[LOG_EVENT_MAX_FIELDS + 3];
		struct iovec iov[LOG_EVENT_MAX_FIELDS + 3];
		size_t k = 0;
		bool ok = asprintf(&items[k++], "MESSAGE=%s", message) >= 0 &&
			  asprintf(&items[k++], "PRIORITY=%d", priority) >= 0 &&
			  asprintf(&items[k++], "MESSAGE_ID=%s", message_id) >= 0;
		for (size_t i = 0; ok && i < n; i++)
			ok = asprintf(&items[k++], "%s=%s", keys[i], vals[i]) >= 0;
		if (!ok)
			k--; /* the failed one was not allocated */
		for (size_t i = 0; i < k; i++)
			iov[i] = (struct iovec){.iov_base = items[i], .iov_len = strlen(items[i])};
		if (ok)
			sd_journal_sendv(iov, (int)k);
		for (size_t i = 0; i < k; i++)
			free(items[i]);
		if (ok)
			return;
	}
	char line[1024];
	size_t len = (size_t)snprintf(line, sizeof(line), "%s", message);
	for (size_t i = 0; i < n && len < sizeof(line); i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len, " %s=%s", keys[i], vals[i]);
	static const char *const prefixes[] = {SD_EMERG,   SD_ALERT,  SD_CRIT, SD_ERR,
					       SD_WARNING, SD_NOTICE, SD_INFO, SD_DEBUG};
	log_line(prefixes[priority & 7], "%s", line);
}

void log_activation(const char *dev_eui, const char *method, const char *outcome,
		    const char *source, unsigned uid, int pid, double latency_ms)
{
	const char *m = strrchr(method, '.');
	m = m ? m + 1 : method;
	bool ok = strcmp(outcome, "ok") == 0;
	char msg[256], suid[16], spid[16], slat[32];
	snprintf(msg, sizeof(msg), "%s %s: %s%s%s (uid %u, %.1f ms)", m, dev_eui, outcome,
		 source ? ", " : "", source ? source : "", uid, latency_ms);
	snprintf(suid, sizeof(suid), "%u", uid);
	snprintf(spid, sizeof(spid), "%d", pid);
	snprintf(slat, sizeof(slat), "%.1f", latency_ms);
	const char *id = strcmp(m, "Lookup") == 0 ? LOG_ID_LOOKUP : LOG_ID_ACTIVATION;
	if (stderr_is_journal()) {
		log_event(ok ? LOG_INFO : LOG_NOTICE, id, msg, "DEVEUI", dev_eui, "METHOD", method,
			  "OUTCOME", outcome, "SOURCE", source ? source : "", "STATION_UID", suid,
			  "STATION_PID", spid, "LATENCY_MS", slat, "TPAD_DEVEUI", dev_eui,
			  "TPAD_METHOD", method, "TPAD_OUTCOME", outcome, "TPAD_SOURCE",
			  source ? source : "", "TPAD_UID", suid, "TPAD_PID", spid,
			  "TPAD_LATENCY_MS", slat, NULL);
		return;
	}
	/* The journal's field names, so that one grep serves both (tpad(8) JOURNAL). */
	if (ok)
		log_info("%s DEVEUI=%s METHOD=%s OUTCOME=%s SOURCE=%s STATION_UID=%u "
			 "STATION_PID=%d LATENCY_MS=%.1f",
			 m, dev_eui, method, outcome, source ? source : "", uid, pid, latency_ms);
	else
		log_notice("%s DEVEUI=%s METHOD=%s OUTCOME=%s SOURCE=%s STATION_UID=%u "
			   "STATION_PID=%d LATENCY_MS=%.1f",
			   m, dev_eui, method, outcome, source ? source : "", uid, pid, latency_ms);
}

bool log_run_failed(struct log_run *r)
{
	uint64_t now = clock_now_us();
	bool starts = r->first_us == 0;
	if (starts)
		r->first_us = now;
	r->last_us = now;
	r->tries++;
	return starts;
}

bool log_run_ended(struct log_run *r, unsigned long *ret_tries, double *ret_seconds)
{
	if (!r->first_us)
		return false;
	*ret_tries = r->tries;
	*ret_seconds = (double)(r->last_us - r->first_us) / 1e6;
	*r = (struct log_run){0};
	return true;
}
