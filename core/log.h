/* log: one-line messages to stderr with sd-daemon priority prefixes. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

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

/*
 * A run of one failure that is tried again (accept() without descriptors, say): logged
 * once when it starts and once when it ends, not at every try. Zero-initialised.
 */
struct log_run {
	uint64_t first_us, last_us; /* monotonic; first_us 0: no run */
	unsigned long tries;
};

/* One more failure: true if it starts a run (the caller logs it then). */
bool log_run_failed(struct log_run *r);

/* It worked: true if that ends a run (the caller logs it then, with the run's tries and
 * *ret_seconds); the run is reset. */
bool log_run_ended(struct log_run *r, unsigned long *ret_tries, double *ret_seconds);

/* For our own impossible states: log and abort. */
_Noreturn void log_fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * MESSAGE_IDs of the events worth finding in the journal (journalctl MESSAGE_ID=...);
 * tpad(8) lists them. Never change one: users' queries rely on them.
 */
#define LOG_ID_ACTIVATION "fee32992b20043d487cbbeafc96131b8"
#define LOG_ID_LOOKUP "41c4fd4d301b420f95dccb4b29692764"
#define LOG_ID_IMPORT_START "10512b90b8254b91aa22cc9be6cdcc39"
#define LOG_ID_IMPORT_END "63d5937f76df4faa92e3ccbe4d382137"
#define LOG_ID_BREAKER_OPEN "b076fce0fd0e423a9e9241400ce9dbaf"
#define LOG_ID_BREAKER_CLOSE "97143cdd918b4fe7b54e876b5b4fddaa"
#define LOG_ID_STORE_FAILED "738b3bd974ee465fbc78b9b9964033ef"
#define LOG_ID_STORE_DOWN "b6245f1fcd724fe6b5ea332b8b377f67"
#define LOG_ID_STORE_UP "67a1d5d26b05436b929c5b0570ab0be7"
#define LOG_ID_SETTLED "007bdc7ee724450ab2324c87a3a61f66"
#define LOG_ID_BACKUP "e77303e6a8974f61ba72c6c6b56835a3"
#define LOG_ID_PRINT "7117065445e145ffa4146e30c19de78c"

/*
 * One event: message (printf-style text of the line) at priority (LOG_INFO...), with
 * MESSAGE_ID message_id and structured fields given as "KEY", "value" pairs ended by
 * NULL (KEY in upper case, e.g. "DEVEUI", "OUTCOME", "STATION_UID"). To the journal
 * with every field when stderr is the journal stream (JOURNAL_STREAM); otherwise one
 * plain text line "message KEY=value ..." on stderr with the sd-daemon prefix.
 */
void log_event(int priority, const char *message_id, const char *message, ...)
    __attribute__((sentinel));

/*
 * One structured line per activation or lookup, as log_event() with MESSAGE_ID
 * LOG_ID_ACTIVATION or LOG_ID_LOOKUP and fields DEVEUI, METHOD, OUTCOME, SOURCE,
 * STATION_UID, STATION_PID, LATENCY_MS (and the older TPAD_DEVEUI, TPAD_METHOD,
 * TPAD_OUTCOME, TPAD_SOURCE, TPAD_UID, TPAD_PID, TPAD_LATENCY_MS in the journal).
 */
void log_activation(const char *dev_eui, const char *method, const char *outcome,
		    const char *source, unsigned uid, int pid, double latency_ms);
