/* log: one-line messages to stderr with sd-daemon priority prefixes. */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
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
