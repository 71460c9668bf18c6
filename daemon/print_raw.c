/* print_raw: ZPL over raw TCP (socket://host:9100), asking ~HS first, without blocking the loop. */
#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "print_backend.h"

/* How long to wait for the printer to close after our half-close; not an error if it won't. */
#define DRAIN_MS 1000
/* How often to look whether the printer has acknowledged the job's bytes, at most. */
#define TAKE_POLL_MAX_MS 10

enum raw_phase {
	RAW_RESOLVING,
	RAW_CONNECTING,
	RAW_ASKING,  /* sending ~HS */
	RAW_READING, /* reading the ~HS answer */
	RAW_SENDING, /* the job */
	RAW_TAKING,  /* waiting for the printer to acknowledge the job's last byte */
	RAW_DRAINING,
	RAW_DONE,
};

struct raw_conn {
	struct print_job *j;
	enum raw_phase phase;
	int fd;
	struct event *rd, *wr;
	struct event *timer;
	struct event *poll; /* RAW_TAKING: look at the send queue again */
	unsigned poll_ms;
	bool peer_closed;
	struct evdns_getaddrinfo_request *dns;
	char in[PRINT_HS_MAX + 64];
	size_t in_len;
	size_t off;
};

static const char hs_query[] = "~HS\r\n";

/* What each phase waits for, in a timeout message. */
static const char *const phase_names[] = {
    [RAW_RESOLVING] = "resolving the printer's name",
    [RAW_CONNECTING] = "connecting",
    [RAW_ASKING] = "asking the printer's status",
    [RAW_READING] = "waiting for the printer's status (~HS)",
    [RAW_SENDING] = "sending the job",
    [RAW_TAKING] = "for the printer to take the job",
    [RAW_DRAINING] = "closing",
    [RAW_DONE] = "done",
};

/* Free the connection's resources. */
static void conn_free(struct raw_conn *c)
{
	if (c->dns)
		evdns_getaddrinfo_cancel(c->dns);
	if (c->rd)
		event_free(c->rd);
	if (c->wr)
		event_free(c->wr);
	if (c->timer)
		event_free(c->timer);
	if (c->poll)
		event_free(c->poll);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* End the job: from the timer only, so no callback runs inside print_raw_start(). */
__attribute__((format(printf, 3, 4))) static void conn_end(struct raw_conn *c, bool ok,
							   const char *fmt, ...)
{
	struct print_job *j = c->j;
	j->ok = ok;
	if (!ok) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(j->reason, sizeof(j->reason), fmt, ap);
		va_end(ap);
	}
	if (!ok && !j->have_state)
		print_job_unreachable(j); /* not even a status answer */
	c->phase = RAW_DONE;
	if (c->rd)
		event_del(c->rd);
	if (c->wr)
		event_del(c->wr);
	if (c->poll)
		event_del(c->poll);
	event_active(c->timer, EV_TIMEOUT, 0);
}

/*
 * After our half-close: 0 once the printer has acknowledged every byte of the job and our
 * FIN (which takes one sequence number), else how many are outstanding; -1 if unknown.
 */
static int conn_unacked(const struct raw_conn *c)
{
	int n = 0;
	return ioctl(c->fd, SIOCOUTQ, &n) < 0 ? -1 : n;
}

/* The job's bytes the printer has not acknowledged (the FIN not counted). */
static long conn_untaken(const struct raw_conn *c)
{
	int n = conn_unacked(c);
	return n > 0 ? n - 1 : n;
}

/*
 * The printer's TCP has acknowledged every byte: its buffer holds the job. Tell the
 * caller, then wait a little for the printer to close (it need not).
 */
static void conn_taken(struct raw_conn *c)
{
	struct print_job *j = c->j;
	j->sent_us = clock_now_us();
	c->phase = RAW_DRAINING;
	print_job_sent(j);
	if (c->peer_closed) {
		conn_end(c, true, "%s", "");
		return;
	}
	event_del(c->wr);
	event_add(c->rd, NULL);
	struct timeval tv = {.tv_sec = DRAIN_MS / 1000, .tv_usec = (DRAIN_MS % 1000) * 1000};
	event_add(c->timer, &tv);
}

/* RAW_TAKING: taken yet? Else look again soon (1 ms, doubling up to TAKE_POLL_MAX_MS). */
static void conn_check_taken(struct raw_conn *c)
{
	int left = conn_unacked(c);
	if (left == 0) {
		conn_taken(c);
		return;
	}
	if (left < 0) {
		conn_end(c, false, "cannot tell whether the printer took the job: %s",
			 strerror(errno));
		return;
	}
	c->poll_ms = c->poll_ms ? c->poll_ms * 2 : 1;
	if (c->poll_ms > TAKE_POLL_MAX_MS)
		c->poll_ms = TAKE_POLL_MAX_MS;
	struct timeval tv = {.tv_sec = 0, .tv_usec = (suseconds_t)c->poll_ms * 1000};
	event_add(c->poll, &tv);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	struct raw_conn *c = arg;
	if (c->phase == RAW_TAKING)
		conn_check_taken(c);
}

/* Wait for fd to become readable or writable. */
static void conn_wait(struct raw_conn *c, short what);

/* Write what is left of buf from c->off; true once all of it is written. */
static int conn_write(struct raw_conn *c, const void *buf, size_t len)
{
	while (c->off < len) {
		ssize_t n = send(c->fd, (const char *)buf + c->off, len - c->off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n < 0)
			return -errno;
		c->off += (size_t)n;
	}
	return 1;
}

/* The socket is ready: move the job along. */
static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct raw_conn *c = arg;
	struct print_job *j = c->j;
	int r;
	char why[160];

	switch (c->phase) {
	case RAW_CONNECTING: {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			conn_end(c, false, "cannot connect: %s", strerror(err));
			return;
		}
		c->phase = RAW_ASKING;
		c->off = 0;
	}
		/* fall through */
	case RAW_ASKING:
		r = conn_write(c, hs_query, sizeof(hs_query) - 1);
		if (r < 0) {
			conn_end(c, false, "cannot ask the status: %s", strerror(-r));
			return;
		}
		if (r == 0) {
			conn_wait(c, EV_WRITE);
			return;
		}
		c->phase = RAW_READING;
		conn_wait(c, EV_READ);
		return;
	case RAW_READING: {
		ssize_t n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n < 0) {
			conn_end(c, false, "cannot read the status: %s", strerror(errno));
			return;
		}
		if (n == 0) {
			conn_end(c, false, "%s", "the printer closed the connection before its status");
			return;
		}
		c->in_len += (size_t)n;
		struct print_hs hs;
		size_t used;
		r = print_hs_parse(c->in, c->in_len, &hs, &used);
		if (r == -EAGAIN && c->in_len < sizeof(c->in))
			return;
		if (r < 0) {
			conn_end(c, false, "%s", "the printer's ~HS answer is not ZPL host status");
			return;
		}
		int problems = print_hs_describe(&hs, why, sizeof(why));
		j->have_state = true;
		j->ready = problems == 0;
		snprintf(j->state, sizeof(j->state), "%s", problems ? "stopped" : "idle");
		snprintf(j->reasons, sizeof(j->reasons), "%s", problems ? why : "");
		if (problems) {
			conn_end(c, false, "%s", why);
			return;
		}
		if (j->probe) {
			conn_end(c, true, "%s", "");
			return;
		}
		c->phase = RAW_SENDING;
		c->off = 0;
	}
		/* fall through */
	case RAW_SENDING:
		r = conn_write(c, j->data, j->len);
		if (r < 0) {
			conn_end(c, false, "cannot send the job: %s", strerror(-r));
			return;
		}
		if (r == 0) {
			conn_wait(c, EV_WRITE);
			return;
		}
		/*
		 * AppSocket: the job ends with our half-close. It is the printer's once its TCP
		 * has acknowledged every byte (the kernel's send queue is empty), not when the
		 * last byte is in our kernel: a big batch can sit there while the printer is
		 * out of paper. The job's deadline still runs.
		 */
		shutdown(c->fd, SHUT_WR);
		c->phase = RAW_TAKING;
		conn_wait(c, EV_READ);
		conn_check_taken(c);
		return;
	case RAW_TAKING: {
		char sink[512];
		ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n < 0) {
			int e = errno;
			/* The bytes may have reached it, their acknowledgements not us: a
			 * printer that reads the job and resets at once did print it. */
			conn_end(c, false,
				 "the printer dropped the connection with %ld bytes unacknowledged "
				 "(%s): the label may have printed",
				 conn_untaken(c), strerror(e));
			return;
		}
		if (n == 0) {
			/* Closed its side: the acknowledgements may still be on their way. */
			c->peer_closed = true;
			event_del(c->rd);
			conn_check_taken(c);
		}
		return;
	}
	case RAW_DRAINING: {
		char sink[512];
		ssize_t n = recv(c->fd, sink, sizeof(sink), 0);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0)
			conn_end(c, true, "%s", "");
		return;
	}
	case RAW_RESOLVING:
	case RAW_DONE:
		return;
	}
}

static void conn_wait(struct raw_conn *c, short what)
{
	event_del(what == EV_READ ? c->wr : c->rd);
	event_add(what == EV_READ ? c->rd : c->wr, NULL);
}

/* The deadline passed, or the job ended (conn_end): hand the outcome back. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct raw_conn *c = arg;
	struct print_job *j = c->j;
	if (c->phase == RAW_DRAINING) {
		/* The job is out; a printer that keeps the connection open is not a failure. */
		c->phase = RAW_DONE;
		j->ok = true;
	} else if (c->phase == RAW_TAKING) {
		j->ok = false;
		snprintf(j->reason, sizeof(j->reason),
			 "timed out waiting for the printer to take the job: %ld of %zu bytes not "
			 "taken (printer.%s.timeout covers the whole job)",
			 conn_untaken(c), j->len, j->pr->cfg->name);
	} else if (c->phase != RAW_DONE) {
		j->ok = false;
		snprintf(j->reason, sizeof(j->reason), "timed out %s (printer.%s.timeout)",
			 phase_names[c->phase], j->pr->cfg->name);
		if (!j->have_state)
			print_job_unreachable(j);
	}
	j->pr->raw_conn = NULL;
	conn_free(c);
	print_job_done(j);
}

/* The printer's name resolved: connect to its first address. */
static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct raw_conn *c = arg;
	/* Only conn_free() cancels, and c is gone then: the answer comes on a later turn. */
	if (result == EVUTIL_EAI_CANCEL)
		return;
	c->dns = NULL;
	if (result != 0 || !res) {
		conn_end(c, false, "cannot resolve the printer's host: %s",
			 evutil_gai_strerror(result));
		if (res)
			evutil_freeaddrinfo(res);
		return;
	}
	c->fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		evutil_freeaddrinfo(res);
		conn_end(c, false, "cannot make a socket: %s", strerror(errno));
		return;
	}
	struct event_base *base = event_get_base(c->timer);
	c->rd = event_new(base, c->fd, EV_READ | EV_PERSIST, io_cb, c);
	c->wr = event_new(base, c->fd, EV_WRITE | EV_PERSIST, io_cb, c);
	if (!c->rd || !c->wr) {
		evutil_freeaddrinfo(res);
		conn_end(c, false, "%s", "out of memory");
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int r = connect(c->fd, res->ai_addr, res->ai_addrlen);
	int err = errno;
	evutil_freeaddrinfo(res);
	if (r < 0 && err != EINPROGRESS) {
		conn_end(c, false, "cannot connect: %s", strerror(err));
		return;
	}
	c->phase = RAW_CONNECTING;
	conn_wait(c, EV_WRITE);
}

int print_raw_start(struct print_job *j)
{
	struct print_printer *pr = j->pr;
	struct raw_conn *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->j = j;
	c->fd = -1;
	c->phase = RAW_RESOLVING;
	struct event_base *base = pr->p->base;
	c->timer = evtimer_new(base, timer_cb, c);
	c->poll = evtimer_new(base, poll_cb, c);
	if (!c->timer || !c->poll) {
		conn_free(c);
		return -ENOMEM;
	}
	/* What is left of printer.timeout: it counts from the job's submission. */
	uint64_t us = print_job_left_us(j);
	struct timeval tv = {.tv_sec = (time_t)(us / 1000000u),
			     .tv_usec = (suseconds_t)(us % 1000000u)};
	event_add(c->timer, &tv);
	pr->raw_conn = c;
	char port[8];
	snprintf(port, sizeof(port), "%d", pr->port);
	struct evutil_addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct evdns_getaddrinfo_request *q =
	    evdns_getaddrinfo(pr->p->dns, pr->host, port, &hints, dns_cb, c);
	/* A numeric host answers from inside the call; then q is NULL and c still lives. */
	if (q && c->phase == RAW_RESOLVING)
		c->dns = q;
	return 0;
}

void print_raw_cancel(struct print_printer *pr)
{
	struct raw_conn *c = pr->raw_conn;
	if (!c)
		return;
	pr->raw_conn = NULL;
	conn_free(c);
}
