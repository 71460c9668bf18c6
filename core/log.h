/* log: one-line messages to stderr with sd-daemon priority prefixes. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

/* Show debug messages (tpad --verbose). */
void log_set_verbose(bool verbose);

/* Messages without errno. */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Messages that end with ": <strerror(-err)>"; err is a negative errno. */
void log_warn_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_err_errno(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* For our own impossible states: log and abort. */
_Noreturn void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * One structured line per activation or lookup: to the journal with fields TPAD_DEVEUI,
 * TPAD_METHOD, TPAD_OUTCOME, TPAD_SOURCE, TPAD_UID, TPAD_PID, TPAD_LATENCY_MS when stderr
 * is connected to it (JOURNAL_STREAM), else as key=value text on stderr.
 */
void log_activation(const char *dev_eui, const char *method, const char *outcome,
		    const char *source, unsigned uid, int pid, double latency_ms);
