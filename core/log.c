/* log: one-line messages to stderr with sd-daemon priority prefixes. */
#include "log.h"

#include <stdio.h>
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

void log_activation(const char *dev_eui, const char *method, const char *outcome,
		    const char *source, unsigned uid, int pid, double latency_ms)
{
	const char *m = strrchr(method, '.');
	m = m ? m + 1 : method;
	bool ok = strcmp(outcome, "ok") == 0;
	if (stderr_is_journal()) {
		sd_journal_send("MESSAGE=%s %s: %s%s%s (uid %u, %.1f ms)", m, dev_eui, outcome,
				source ? ", " : "", source ? source : "", uid, latency_ms,
				"PRIORITY=%d", ok ? 6 : 5, "TPAD_DEVEUI=%s", dev_eui,
				"TPAD_METHOD=%s", method, "TPAD_OUTCOME=%s", outcome,
				"TPAD_SOURCE=%s", source ? source : "", "TPAD_UID=%u", uid,
				"TPAD_PID=%d", pid, "TPAD_LATENCY_MS=%.1f", latency_ms, NULL);
		return;
	}
	if (ok)
		log_info("%s DEVEUI=%s OUTCOME=%s SOURCE=%s UID=%u PID=%d LATENCY_MS=%.1f", m,
			 dev_eui, outcome, source ? source : "", uid, pid, latency_ms);
	else
		log_notice("%s DEVEUI=%s OUTCOME=%s SOURCE=%s UID=%u PID=%d LATENCY_MS=%.1f", m,
			   dev_eui, outcome, source ? source : "", uid, pid, latency_ms);
}
