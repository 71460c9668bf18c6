/*
 * fuzz_client: the client of the whole-daemon fuzz targets (fuzz-server, fuzz-tpas). It
 * writes the input in chunks into a connection of the daemon running in the same process,
 * turns the daemon's event loop between writes, reads what comes back (or not), then
 * shuts its side and reads until the daemon closes or time is up. Each target defines
 * FUZZ_NAME before including it.
 */
#pragma once

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "message.h"

static FILE *fuzz_report; /* the real stderr once fuzz_quiet_log() has run */

/* Stop on a broken invariant: libFuzzer reports the input. */
static inline void require(int cond, const char *what)
{
	if (!cond) {
		int e = errno;
		fprintf(fuzz_report ? fuzz_report : stderr, "%s: %s (errno: %s)\n", FUZZ_NAME, what,
			strerror(e));
		abort();
	}
}

/*
 * The daemon logs every call through the stdio stream stderr: send that to /dev/null.
 * Sanitizers write to file descriptor 2 and libFuzzer to the stream it saved at start, so
 * both still show, and so does require().
 */
static inline void fuzz_quiet_log(void)
{
	fuzz_report = stderr;
	FILE *null = fopen("/dev/null", "w");
	if (null)
		stderr = null;
}

/* Quiet this long after the last byte sent or received: the conversation is over. */
#define FUZZ_QUIET_MS 40

/* Reads what arrived on fd, sets *eof at its end; returns a count the caller keeps. */
typedef size_t fuzz_read_fn(int fd, void *arg, bool *eof);

/* Varlink replies: a sequence of NUL-terminated messages, each one a well-formed reply. */
struct fuzz_varlink {
	char acc[1 << 20];
	size_t len;
};

/*
 * A fuzz_read_fn for varlink (arg: struct fuzz_varlink): the number of replies read that
 * end a call (a stream's replies with "continues" do not).
 */
static inline size_t fuzz_read_varlink(int fd, void *arg, bool *eof)
{
	struct fuzz_varlink *v = arg;
	size_t replies = 0;
	for (;;) {
		ssize_t n = read(fd, v->acc + v->len, sizeof(v->acc) - v->len);
		if (n == 0)
			*eof = true;
		if (n <= 0)
			break;
		v->len += (size_t)n;
		char *nul;
		while ((nul = memchr(v->acc, '\0', v->len))) {
			size_t mlen = (size_t)(nul - v->acc);
			struct reply rep = {0};
			require(reply_decode(v->acc, mlen, &rep) == 0, "a reply that does not decode");
			if (!rep.continues)
				replies++;
			reply_clear(&rep);
			memmove(v->acc, nul + 1, v->len - mlen - 1);
			v->len -= mlen + 1;
		}
		require(v->len < sizeof(v->acc), "a reply larger than the buffer");
	}
	return replies;
}

/* Calls in a varlink input: what could be one (a NUL ends each). */
static inline size_t fuzz_varlink_calls(const uint8_t *data, size_t size)
{
	size_t calls = 0;
	for (size_t i = 0; i < size; i++)
		calls += data[i] == '\0';
	return calls;
}

/*
 * Send data over fd (non-blocking) chunk bytes at a time, turning base's loop, reading with
 * rd when reads is set, half-close once all is sent, for at most ms milliseconds or until
 * the daemon closes, or until nothing came back for FUZZ_QUIET_MS after all was sent (a
 * stream that follows never ends by itself). Returns the sum of rd's counts. The caller
 * closes fd.
 */
static inline size_t fuzz_converse(struct event_base *base, int fd, const uint8_t *data,
				   size_t size, size_t chunk, bool reads, fuzz_read_fn *rd,
				   void *arg, uint64_t ms)
{
	size_t sent = 0, count = 0;
	bool eof = false, closed_write = false;
	uint64_t end = clock_now_ms() + ms, active = clock_now_ms();
	while (!eof && clock_now_ms() < end) {
		if (closed_write && clock_now_ms() - active > FUZZ_QUIET_MS)
			break;
		if (sent < size) {
			size_t n = size - sent < chunk ? size - sent : chunk;
			ssize_t w = send(fd, data + sent, n, MSG_NOSIGNAL);
			if (w > 0) {
				sent += (size_t)w;
				active = clock_now_ms();
			}
			else if (w < 0 && errno != EAGAIN)
				sent = size; /* the daemon closed: stop writing */
		} else if (!closed_write) {
			shutdown(fd, SHUT_WR);
			closed_write = true;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (reads) {
			size_t n = rd(fd, arg, &eof);
			if (n)
				active = clock_now_ms();
			count += n;
		}
		if (sent >= size && !eof) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			poll(&p, 1, 1);
		}
	}
	return count;
}
