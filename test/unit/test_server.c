/*
 * Unit tests for core/server: a streaming call paused at req_output_pending() goes on once
 * its client has read what was queued (req_when_written), on a real socket and loop.
 */
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "server.h"
#include "tap.h"

#define CHUNK 4096
#define QUEUED (512u * 1024u) /* more than a Unix socket's buffers hold */

static struct req *call;
static int written;

static void dispatch(struct req *r, void *arg)
{
	call = r;
}

static void on_written(void *arg)
{
	written++;
}

/* Reply until QUEUED bytes wait in the server for the client. */
static void fill(struct req *r)
{
	static char text[CHUNK + 16];
	int n = snprintf(text, sizeof(text), "{\"x\":\"%0*d\"}", CHUNK, 0);
	while (req_output_pending(r) < QUEUED)
		req_reply_text(r, text, (size_t)n, true);
}

/* The client reads what the socket holds; bytes read. */
static size_t drain(int fd)
{
	static char buf[65536];
	size_t total = 0;
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		total += (size_t)n;
	return total;
}

/* Run the loop, the client reading, until cond or a bound of rounds. */
#define RUN_UNTIL(base, fd, cond)                                                                  \
	for (int round_ = 0; !(cond) && round_ < 10000; round_++) {                                \
		drain(fd);                                                                         \
		event_base_loop(base, EVLOOP_NONBLOCK);                                            \
	}

int main(void)
{
	signal(SIGPIPE, SIG_IGN); /* as the daemons: a gone client is an EPIPE */
	struct event_base *base = event_base_new();
	const struct server_limits lim = {
	    .max_message = 1 << 20,
	    .idle_timeout_ms = 60000,
	    .message_timeout_ms = 60000,
	    .max_clients = 8,
	    .max_clients_per_uid = 8,
	    .max_clients_per_process = 8,
	    .max_pending_calls = 8,
	    .max_output = 64u << 20,
	    .max_output_total = 64u << 20,
	};
	struct server *s = server_new(base, &lim, dispatch, NULL);
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	server_accept(s, sv[0], SOCK_STATION);
	static const char msg[] = "{\"method\":\"io.tpad.Test.Stream\",\"more\":true}";
	CHECK(write(sv[1], msg, sizeof(msg)) == (ssize_t)sizeof(msg)); /* with its NUL */
	for (int i = 0; i < 100 && !call; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK(call != NULL);
	if (!call)
		return tap_done();

	/* Paused with more queued than the socket takes: nothing until the client reads. */
	fill(call);
	req_when_written(call, on_written, NULL);
	for (int i = 0; i < 50; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK_INT(written, 0);
	CHECK(req_output_pending(call) > 0);

	/* The client reads: the call goes on once, as soon as everything is written. */
	RUN_UNTIL(base, sv[1], written);
	CHECK_INT(written, 1);
	CHECK_INT(req_output_pending(call), 0);
	fill(call);
	RUN_UNTIL(base, sv[1], !req_output_pending(call));
	CHECK_INT(written, 1); /* once per req_when_written() */

	/* Asked again, then the call ends: a finished call is never called back. */
	fill(call);
	req_when_written(call, on_written, NULL);
	req_reply(call, NULL, false);
	RUN_UNTIL(base, sv[1], false);
	CHECK_INT(written, 1);

	/* A client gone with output queued: never called back. */
	call = NULL;
	CHECK(write(sv[1], msg, sizeof(msg)) == (ssize_t)sizeof(msg));
	for (int i = 0; i < 100 && !call; i++)
		event_base_loop(base, EVLOOP_NONBLOCK);
	CHECK(call != NULL);
	if (call) {
		fill(call);
		req_when_written(call, on_written, NULL);
		close(sv[1]);
		for (int i = 0; i < 100; i++)
			event_base_loop(base, EVLOOP_NONBLOCK);
		CHECK(req_gone(call));
		CHECK_INT(written, 1);
		req_reply(call, NULL, false);
	}
	for (int i = 0; i < 10; i++) /* the closed connection is freed from the loop */
		event_base_loop(base, EVLOOP_NONBLOCK);
	server_free(s);
	event_base_free(base);
	return tap_done();
}
