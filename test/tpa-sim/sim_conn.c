/* sim_conn: listeners and HTTP connections (plain or TLS-PSK) of tpa-sim, with faults. */
#include "sim.h"
#include "sim_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <mbedtls/error.h>

#define CONN_IN_MAX (HTTP_HEAD_MAX + SIM_BODY_MAX + 4096) /* plaintext read ahead cap */
#define SLOW_CHUNK 16					  /* bytes per write in --slow */
#define SLOW_DELAY_MS 5					  /* pause between them */

static const char garbage[] = "\x01\x02garbage\xff\xfe not HTTP at all\r\n\r\n";

enum conn_state {
	CS_HANDSHAKE, /* TLS handshake in progress */
	CS_READ,      /* waiting for (the rest of) a request */
	CS_DELAY,     /* reply ready, latency timer running */
	CS_WRITE,     /* writing the reply */
};

/* One accepted connection on the API or the control listener. */
struct conn {
	struct sim *sim;
	struct conn *next, *prev;
	int fd;
	bool control;
	bool tls;
	bool resumed;
	bool eof;
	mbedtls_ssl_context ssl;
	enum conn_state state;
	struct event *io;    /* read or write readiness, re-armed as needed */
	struct event *timer; /* latency and --slow pacing */
	struct event *idle;  /* --idle-close-ms */
	struct evbuffer *in;
	struct evbuffer *out;
	unsigned nrequests;
	bool close_after; /* close once out is written */
	bool drop_after;  /* close without writing when the delay ends */
	bool slow;	  /* this reply is written a few bytes at a time */
	unsigned extra_delay_ms; /* the handler's own delay for this reply */
};

static struct conn *conn_list;

static void conn_run(struct conn *c);

/* Close c and free it; callers return right after. graceful sends a TLS close_notify. */
static void conn_close(struct conn *c, bool graceful)
{
	if (c->tls) {
		if (graceful && c->state != CS_HANDSHAKE)
			(void)mbedtls_ssl_close_notify(&c->ssl);
		mbedtls_ssl_free(&c->ssl);
	}
	if (c->io)
		event_free(c->io);
	if (c->timer)
		event_free(c->timer);
	if (c->idle)
		event_free(c->idle);
	if (c->in)
		evbuffer_free(c->in);
	if (c->out)
		evbuffer_free(c->out);
	close(c->fd);
	if (c->prev)
		c->prev->next = c->next;
	else
		conn_list = c->next;
	if (c->next)
		c->next->prev = c->prev;
	free(c);
}

void conn_close_all(void)
{
	while (conn_list)
		conn_close(conn_list, true);
}

/* Milliseconds to a struct timeval. */
static struct timeval ms_tv(unsigned ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (long)(ms % 1000) * 1000};
	return tv;
}

/* Readiness of the socket: continue the state machine. */
static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_run(arg);
}

/* Wait until the socket is readable (what = EV_READ) or writable (EV_WRITE). */
static int conn_wait(struct conn *c, short what)
{
	event_del(c->io);
	if (event_assign(c->io, c->sim->base, c->fd, what, conn_io_cb, c) < 0)
		return -EIO;
	return event_add(c->io, NULL) < 0 ? -EIO : 0;
}

/* The latency timer or a --slow pause ended. */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->state == CS_DELAY) {
		if (c->drop_after) {
			conn_close(c, false);
			return;
		}
		c->state = CS_WRITE;
	}
	conn_run(c);
}

/* The connection stayed idle for --idle-close-ms: close it, as a server would, silently. */
static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (c->sim->verbose)
		fprintf(stderr, "tpa-sim: closing idle connection\n");
	conn_close(c, false);
}

/* Read what is available into c->in; 0 (maybe with c->eof set) or a negative error. */
static int conn_fill(struct conn *c)
{
	char buf[16384];
	while (evbuffer_get_length(c->in) < CONN_IN_MAX && !c->eof) {
		ssize_t n;
		if (c->tls) {
			int r = mbedtls_ssl_read(&c->ssl, (unsigned char *)buf, sizeof(buf));
			if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
				return 0;
			if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == 0) {
				c->eof = true;
				return 0;
			}
			if (r < 0)
				return -EIO;
			n = r;
		} else {
			n = recv(c->fd, buf, sizeof(buf), 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return 0;
			if (n < 0)
				return -errno;
			if (n == 0) {
				c->eof = true;
				return 0;
			}
		}
		if (evbuffer_add(c->in, buf, (size_t)n) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* Write c->out; 1 when all is written, 0 when waiting (socket or --slow), <0 on error. */
static int conn_flush(struct conn *c)
{
	while (evbuffer_get_length(c->out) > 0) {
		size_t len = evbuffer_get_length(c->out);
		if (c->slow && len > SLOW_CHUNK)
			len = SLOW_CHUNK;
		const unsigned char *data = evbuffer_pullup(c->out, (ev_ssize_t)len);
		ssize_t n;
		if (c->tls) {
			int r = mbedtls_ssl_write(&c->ssl, data, len);
			if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ)
				return conn_wait(c, r == MBEDTLS_ERR_SSL_WANT_WRITE ? EV_WRITE
										    : EV_READ);
			if (r < 0)
				return -EIO;
			n = r;
		} else {
			n = send(c->fd, data, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return conn_wait(c, EV_WRITE);
			if (n < 0)
				return -errno;
		}
		evbuffer_drain(c->out, (size_t)n);
		if (c->slow && evbuffer_get_length(c->out) > 0) {
			struct timeval tv = ms_tv(SLOW_DELAY_MS);
			return evtimer_add(c->timer, &tv) < 0 ? -EIO : 0;
		}
	}
	return 1;
}

/* Turn a handler's reply into bytes in c->out and the flags that say what follows. */
static int conn_reply(struct conn *c, const struct http_request *req, struct sim_reply *rep)
{
	struct sim *s = c->sim;
	bool keep = req ? req->keep_alive : false;
	c->drop_after = false;
	c->close_after = !keep;
	if (rep->action == SIM_DROP) {
		c->drop_after = true;
		return 0;
	}
	if (rep->action == SIM_GARBAGE) {
		c->close_after = true;
		return evbuffer_add(c->out, garbage, sizeof(garbage) - 1) < 0 ? -ENOMEM : 0;
	}
	if (!c->control && s->faults.reset_after > 0 && c->nrequests >= s->faults.reset_after) {
		/* The close is not announced: the client learns it on its next request. */
		s->counters.errors_injected++;
		c->close_after = true;
	}
	return http_format_response(c->out, rep->status, rep->body, rep->retry_after, rep->allow,
				    keep, req ? req->minor : 1);
}

/* Parse and handle one request from c->in; 1 if a reply is ready, 0 if more input is needed. */
static int conn_handle(struct conn *c)
{
	struct sim *s = c->sim;
	size_t len = evbuffer_get_length(c->in);
	if (len == 0)
		return 0;
	const char *buf = (const char *)evbuffer_pullup(c->in, -1);
	struct http_request req = {0};
	size_t used = 0;
	int r = http_parse_request(buf, len, SIM_BODY_MAX, &req, &used);
	if (r == -EAGAIN)
		return 0;
	struct sim_reply rep = {.action = SIM_ANSWER};
	if (r < 0) {
		/* After a framing error the stream cannot be trusted: answer and close. */
		rep.status = http_error_status(r);
		rep.body =
		    strdup("{\"code\":\"BAD_REQUEST\",\"message\":\"malformed HTTP request\"}");
		r = conn_reply(c, NULL, &rep);
		reply_clear(&rep);
		c->close_after = true;
		return r < 0 ? r : 1;
	}
	evbuffer_drain(c->in, used);
	c->nrequests++;
	if (c->control) {
		control_handle(s, &req, &rep);
	} else {
		s->counters.requests++;
		api_handle(s, &req, &rep);
	}
	if (s->verbose)
		fprintf(stderr, "tpa-sim: %s%s %s -> %d%s\n", c->control ? "control " : "",
			req.method, req.target, rep.status,
			rep.action == SIM_DROP	    ? " (dropped)"
			: rep.action == SIM_GARBAGE ? " (garbage)"
						    : "");
	c->extra_delay_ms = rep.delay_ms;
	/* What the answer reports survives a kill -9 from the moment it leaves. */
	int sr = registry_sync(s);
	if (sr < 0)
		fprintf(stderr, "tpa-sim: cannot sync the registry journal: %s\n", strerror(-sr));
	r = conn_reply(c, &req, &rep);
	reply_clear(&rep);
	http_request_clear(&req);
	return r < 0 ? r : 1;
}

/*
 * The delay before this reply: --latency-ms plus a uniform draw in [0, --jitter-ms], plus
 * the import or query latency of the request.
 */
static unsigned conn_delay_ms(struct conn *c)
{
	struct sim *s = c->sim;
	if (c->control)
		return 0;
	unsigned ms = s->faults.latency_ms + c->extra_delay_ms;
	c->extra_delay_ms = 0;
	if (s->faults.jitter_ms > 0)
		ms += (unsigned)(sim_random(s) % ((uint64_t)s->faults.jitter_ms + 1));
	return ms;
}

/* Arm the idle timer when the connection waits for a new request with nothing buffered. */
static void conn_arm_idle(struct conn *c)
{
	unsigned ms = c->control ? 0 : c->sim->faults.idle_close_ms;
	if (ms == 0 || evbuffer_get_length(c->in) > 0) {
		event_del(c->idle);
		return;
	}
	struct timeval tv = ms_tv(ms);
	evtimer_add(c->idle, &tv);
}

/* Advance the connection as far as it can go without blocking. */
static void conn_run(struct conn *c)
{
	struct sim *s = c->sim;
	for (;;) {
		int r;
		switch (c->state) {
		case CS_HANDSHAKE:
			r = tls_conn_handshake(&c->ssl, &c->resumed);
			if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
				if (conn_wait(c, r == MBEDTLS_ERR_SSL_WANT_READ ? EV_READ
										: EV_WRITE) < 0)
					goto fail;
				return;
			}
			if (r != 0) {
				if (s->verbose) {
					char msg[128];
					mbedtls_strerror(r, msg, sizeof(msg));
					fprintf(stderr, "tpa-sim: TLS handshake failed: %s\n", msg);
				}
				conn_close(c, false);
				return;
			}
			s->counters.handshakes++;
			if (c->resumed)
				s->counters.resumed++;
			c->state = CS_READ;
			break;
		case CS_READ:
			event_del(c->idle);
			if (conn_fill(c) < 0)
				goto fail;
			r = conn_handle(c);
			if (r < 0)
				goto fail;
			if (r == 0) {
				if (c->eof) {
					conn_close(c, true);
					return;
				}
				/* Never wait on the socket while mbedTLS holds decrypted data. */
				if (c->tls && evbuffer_get_length(c->in) < CONN_IN_MAX &&
				    mbedtls_ssl_get_bytes_avail(&c->ssl) > 0)
					break;
				conn_arm_idle(c);
				if (conn_wait(c, EV_READ) < 0)
					goto fail;
				return;
			}
			event_del(c->io);
			c->slow = !c->control && s->faults.slow;
			unsigned ms = conn_delay_ms(c);
			if (ms > 0) {
				c->state = CS_DELAY;
				struct timeval tv = ms_tv(ms);
				if (evtimer_add(c->timer, &tv) < 0)
					goto fail;
				return;
			}
			if (c->drop_after) {
				conn_close(c, false);
				return;
			}
			c->state = CS_WRITE;
			break;
		case CS_DELAY:
			return;
		case CS_WRITE:
			r = conn_flush(c);
			if (r < 0)
				goto fail;
			if (r == 0)
				return;
			if (c->close_after) {
				conn_close(c, true);
				return;
			}
			c->state = CS_READ;
			break;
		}
	}
fail:
	conn_close(c, false);
}

/* A new connection: count it, refuse it if asked, else start TLS or HTTP. */
static void conn_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
			   int salen, void *arg)
{
	struct sim *s = arg;
	bool control = l == s->control_listener;
	if (!control) {
		s->counters.connections++;
		if (s->faults.refuse) {
			s->counters.errors_injected++;
			close(fd);
			return;
		}
	}
	/* Answers are small writes: do not let them wait for the peer's delayed ACK. */
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->sim = s;
	c->fd = fd;
	c->control = control;
	c->tls = !control && !s->plain;
	c->state = c->tls ? CS_HANDSHAKE : CS_READ;
	c->in = evbuffer_new();
	c->out = evbuffer_new();
	c->io = event_new(s->base, fd, EV_READ, conn_io_cb, c);
	c->timer = evtimer_new(s->base, conn_timer_cb, c);
	c->idle = evtimer_new(s->base, conn_idle_cb, c);
	c->next = conn_list;
	if (conn_list)
		conn_list->prev = c;
	conn_list = c;
	if (!c->in || !c->out || !c->io || !c->timer || !c->idle) {
		c->tls = false;
		conn_close(c, false);
		return;
	}
	if (c->tls && tls_conn_setup(&s->tls, &c->ssl, &c->fd) < 0) {
		c->tls = false;
		conn_close(c, false);
		return;
	}
	conn_run(c);
}

/* Too many open files and the like: log and keep listening. */
static void conn_accept_error_cb(struct evconnlistener *l, void *arg)
{
	int err = EVUTIL_SOCKET_ERROR();
	fprintf(stderr, "tpa-sim: accept: %s\n", evutil_socket_error_to_string(err));
}

int conn_listen(struct sim *s, const char *addr, bool control, int *ret_port)
{
	char host[64];
	const char *colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -EINVAL;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return -EINVAL;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	if (inet_pton(AF_INET, host, &sin.sin_addr) != 1)
		return -EINVAL;
	struct evconnlistener *l = evconnlistener_new_bind(
	    s->base, conn_accept_cb, s,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
	    (struct sockaddr *)&sin, sizeof(sin));
	if (!l)
		return errno ? -errno : -EADDRINUSE;
	evconnlistener_set_error_cb(l, conn_accept_error_cb);
	struct sockaddr_in bound;
	socklen_t blen = sizeof(bound);
	if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen) < 0) {
		int r = -errno;
		evconnlistener_free(l);
		return r;
	}
	if (control)
		s->control_listener = l;
	else
		s->api_listener = l;
	*ret_port = ntohs(bound.sin_port);
	return 0;
}
