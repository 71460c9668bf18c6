/* httpd: the daemons' HTTP/1.1 server (see httpd.h). */
#include "httpd.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "clock.h"
#include "conf.h"
#include "http.h"
#include "log.h"
#include "text.h"

/* Bytes a client may have waiting unread behind the request being answered. */
#define INPUT_SLACK (64u << 10)
/*
 * After an answer that ends the connection, what the client still sends is read and
 * dropped this long (or until it closes): closing with unread input would reset the
 * connection, and the reset can destroy the answer before the client reads it.
 */
#define LINGER_MS 2000
/* How often a closing TLS connection looks whether its last records have left. */
#define TLS_FLUSH_CHECK_MS 50
/* The most a plain connection reads at once. */
#define READ_CHUNK (16u << 10)

struct hconn;

struct httpd {
	struct event_base *base;
	struct evconnlistener *listener;
	struct event *resume; /* accepting again after accept() failed (out of descriptors) */
	httpd_bev_fn *bev;     /* NULL: plain HTTP */
	void *bev_arg;
	bool tls;	       /* bev given: the connections are filtered */
	httpd_refused_fn *refused;
	char name[32], timeout_name[64], cap_name[64];
	httpd_handler *handler;
	httpd_invite_fn *invite;
	void *arg;
	size_t max_body;
	uint32_t timeout_ms;
	uint16_t port;
	unsigned max_conns; /* 0: no cap */
	unsigned n_conns;
	bool capped;	       /* not accepting: max_conns are open */
	uint64_t capped_at_us; /* when max_conns were last reached (monotonic), 0: never */
	struct log_run starved; /* accept() failing (out of descriptors) */
	struct httpd_stats stats;
	LIST_HEAD(, hconn) conns;
};

struct httpd_req {
	struct hconn *c; /* NULL once the connection is gone: the answer goes nowhere */
	char method[16];
	char *target; /* path, then NUL where '?' was, then the query */
	const char *query;
	char *body;
	size_t body_len;
	bool close; /* HTTP/1.0 or Connection: close: close after the answer */
	bool head;  /* HEAD: the answer's headers only */
	char accept[sizeof(((struct http_response *)0)->accept)];
	int minor;  /* HTTP/1.<minor> */
	bool unread;	   /* answered before its body was invited (httpd_invite_fn) */
	long long declared; /* its Content-Length then */
};

struct hconn {
	struct httpd *h;
	struct bufferevent *bev;
	evutil_socket_t fd;
	struct http_parser p;
	struct httpd_req *req; /* being handled: input waits until it is answered */
	struct event *timer;
	bool started;	/* the timer runs for a request, not for an idle connection */
	bool continued; /* "100 Continue" sent for this request */
	bool read_eof;	/* the client shut its side: answer what it sent, then close */
	bool closing;	/* close once the output is written */
	bool draining;	/* the next request is read once the last answer is written */
	bool lingering; /* answered and shut: reading only to drop it (LINGER_MS) */
	uint64_t linger_until_ms;
	struct evbuffer_cb_entry *under_cb; /* TLS: on the socket bufferevent's output */
	/*
	 * Plain: the socket is read here, not by the bufferevent, which writes only: libevent
	 * asks the kernel how much is waiting (FIONREAD) before every read, a system call per
	 * request. Reading pauses while the input holds high bytes, like a watermark.
	 */
	struct event *rd;
	struct evbuffer *in; /* the bufferevent's input with TLS, else the connection's own */
	bool rd_full;	     /* paused: the input reached high */
	size_t high;
	char peer[64];
	LIST_ENTRY(hconn) entry;
};

static void conn_close(struct hconn *c);
static void conn_finish(struct hconn *c);
static void timer_arm(struct hconn *c);
static void conn_parse(struct hconn *c);
static bool tls_unsent(struct hconn *c);
static void read_cb(struct bufferevent *bev, void *arg);
static void event_cb(struct bufferevent *bev, short what, void *arg);

/* Read the socket, or stop; a plain connection also pauses while its input is full. */
static void conn_reading(struct hconn *c, bool on)
{
	if (!c->rd) {
		if (on)
			bufferevent_enable(c->bev, EV_READ);
		else
			bufferevent_disable(c->bev, EV_READ);
		return;
	}
	if (on && !c->rd_full)
		event_add(c->rd, NULL);
	else
		event_del(c->rd);
}

/* Parse what is in the input on the next turn of the loop, not inside this call. */
static void conn_read_later(struct hconn *c)
{
	if (c->rd)
		event_active(c->rd, EV_TIMEOUT, 0); /* EV_TIMEOUT alone: parse, do not read */
	else
		bufferevent_trigger(c->bev, EV_READ, BEV_OPT_DEFER_CALLBACKS);
}

/*
 * A plain connection's socket is readable (EV_READ), or its input is to be parsed
 * (conn_read_later: no read, as a bufferevent's trigger makes none).
 */
static void plain_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hconn *c = arg;
	struct evbuffer *in = c->in;
	size_t have = evbuffer_get_length(in);
	if ((what & EV_READ) && !c->read_eof && have < c->high) {
		/*
		 * Read onto the stack and add what came: reserving READ_CHUNK in the buffer
		 * made a 16 KiB block for every request, zeroed whole when it was freed.
		 */
		char buf[READ_CHUNK];
		size_t want = c->high - have < READ_CHUNK ? c->high - have : READ_CHUNK;
		ssize_t n = read(fd, buf, want);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			event_cb(c->bev, BEV_EVENT_READING | (n ? BEV_EVENT_ERROR : BEV_EVENT_EOF),
				 c);
			return;
		}
		if (n > 0) {
			int added = evbuffer_add(in, buf, (size_t)n);
			explicit_bzero(buf, (size_t)n); /* a request may carry a key */
			if (added < 0) {
				event_cb(c->bev, BEV_EVENT_READING | BEV_EVENT_ERROR, c);
				return;
			}
			if (have + (size_t)n >= c->high) {
				c->rd_full = true; /* until the parser takes some (input_cb) */
				event_del(c->rd);
			}
		}
	}
	read_cb(c->bev, c);
}

/* Bytes left a plain connection's input: reading goes on once it is below high again. */
static void input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hconn *c = arg;
	if (c->rd_full && info->n_deleted && evbuffer_get_length(buf) < c->high) {
		c->rd_full = false;
		if (!c->read_eof)
			event_add(c->rd, NULL);
	}
}

static const char *reason_of(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 417:
		return "Expectation Failed";
	case 408:
		return "Request Timeout";
	case 413:
		return "Payload Too Large";
	case 414:
		return "URI Too Long";
	case 431:
		return "Request Header Fields Too Large";
	case 503:
		return "Service Unavailable";
	default:
		return "Error";
	}
}

/*
 * Queue bytes for the client: written at once when the socket takes them all (plain HTTP).
 * false when what is left cannot be queued (out of memory): the caller closes c.
 */
static bool conn_send(struct hconn *c, const char *head, size_t hl, const char *body, size_t bl)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t sent = 0;
	if (!c->h->tls && evbuffer_get_length(out) == 0) {
		struct iovec iov[2] = {{(void *)head, hl}, {(void *)body, bl}};
		ssize_t n = writev(c->fd, iov, bl ? 2 : 1);
		if (n > 0)
			sent = (size_t)n;
	}
	if (sent < hl && evbuffer_add(out, head + sent, hl - sent) < 0)
		return false;
	size_t from = sent > hl ? sent - hl : 0;
	return bl <= from || evbuffer_add(out, body + from, bl - from) == 0;
}

/* Append the n bytes at s to the text at *p if they fit before end. */
static bool put(char **p, const char *end, const char *s, size_t n)
{
	if ((size_t)(end - *p) < n)
		return false;
	memcpy(*p, s, n);
	*p += n;
	return true;
}

#define PUT(p, end, lit) put(p, end, lit, sizeof(lit) - 1)

/*
 * Write an answer; close after it when the client asked so or the connection must end.
 * An HTTP/1.0 client that keeps the connection is told so; HEAD gets the headers only.
 */
static bool conn_answer(struct hconn *c, int status, const char *type, const char *extra,
			const char *body, size_t len, bool close, bool keep_alive_10, bool head_only)
{
	/* Written piece by piece, not by snprintf: this is every answer's path. */
	char head[512], *p = head, *end = head + sizeof(head);
	char st[TEXT_U64_MAX], cl[TEXT_U64_MAX];
	const char *reason = reason_of(status);
	const char *conn = close	   ? "Connection: close\r\n"
			   : keep_alive_10 ? "Connection: keep-alive\r\n"
					   : "";
	size_t stn = text_u64(st, (uint64_t)(status > 0 ? status : 0)), cln = text_u64(cl, len);
	bool fits = PUT(&p, end, "HTTP/1.1 ") && put(&p, end, st, stn) && PUT(&p, end, " ") &&
		    put(&p, end, reason, strlen(reason)) && PUT(&p, end, "\r\nContent-Type: ") &&
		    put(&p, end, type, strlen(type)) && PUT(&p, end, "\r\nContent-Length: ") &&
		    put(&p, end, cl, cln) && PUT(&p, end, "\r\n") &&
		    put(&p, end, conn, strlen(conn)) &&
		    (!extra || put(&p, end, extra, strlen(extra))) && PUT(&p, end, "\r\n");
	/* Too long a header section, or no memory to queue the answer: it cannot go whole. */
	if (!fits ||
	    !conn_send(c, head, (size_t)(p - head), head_only ? NULL : body, head_only ? 0 : len)) {
		log_warnx("%s: %s to %s; connection closed", c->h->name,
			  fits ? "out of memory for an answer" : "an answer's headers too long",
			  c->peer);
		conn_close(c);
		return false; /* c is gone */
	}
	if (close)
		c->closing = true;
	return true;
}

/* An answer the server gives by itself, with a reason; the connection then ends. */
static void conn_refuse(struct hconn *c, uint64_t *counter, int status, const char *why)
{
	(*counter)++;
	if (c->h->refused)
		c->h->refused(status, reason_of(status), why, c->peer, c->h->arg);
	else
		log_warnx("%s: %d %s from %s: %s", c->h->name, status, reason_of(status), c->peer,
			  why);
	char body[160];
	int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}\n", why);
	if (!conn_answer(c, status, "application/json", NULL, body, (size_t)n, true, false, false))
		return;
	c->started = false;
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_finish(c);
	else
		timer_arm(c); /* a client that does not read it is closed after the timeout */
}

static void timer_arm(struct hconn *c)
{
	struct timeval tv = {.tv_sec = c->h->timeout_ms / 1000,
			     .tv_usec = (c->h->timeout_ms % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct hconn *c = arg;
	if (c->lingering) {
		if (tls_unsent(c) && clock_now_ms() < c->linger_until_ms) {
			struct timeval tv = {.tv_usec = TLS_FLUSH_CHECK_MS * 1000};
			evtimer_add(c->timer, &tv);
			return;
		}
		conn_close(c);
		return;
	}
	if (c->req)
		return; /* answered later; the timer starts again then */
	if (c->closing || c->draining) {
		log_info("%s: %s does not read its answers: closed", c->h->name, c->peer);
		conn_close(c);
		return;
	}
	char byte;
	if (!c->started && recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 1) {
		timer_arm(c); /* a request arrived as the time ran out: it is read first */
		return;
	}
	if (!c->started) {
		log_debug("%s: %s idle, closed", c->h->name, c->peer);
		conn_close(c);
		return;
	}
	char why[128];
	snprintf(why, sizeof(why), "request not complete within %s (%u s)", c->h->timeout_name,
		 (unsigned)(c->h->timeout_ms / 1000));
	conn_refuse(c, &c->h->stats.timed_out, 408, why);
}

/* A complete request: hand it over; nothing more is read until it is answered. */
/*
 * The absolute form a proxy may send (RFC 9112 §3.2.2): the path is what follows the
 * authority, moved to the front in place ("http://" leaves room for a leading '/').
 */
static void target_normalize(char *target)
{
	if (strncasecmp(target, "http://", 7) == 0 || strncasecmp(target, "https://", 8) == 0) {
		char *auth = strstr(target, "//") + 2;
		char *rest = auth + strcspn(auth, "/?");
		size_t slash = *rest != '/';
		memmove(target + slash, rest, strlen(rest) + 1);
		target[0] = '/';
	}
}

/* Hand the request parsed to the handler; unread: before its body (then close after). */
static void conn_dispatch(struct hconn *c, bool unread)
{
	struct http_response *m = &c->p.res;
	struct httpd_req *r = calloc(1, sizeof(*r));
	if (!r) {
		conn_close(c);
		return;
	}
	r->c = c;
	memcpy(r->method, m->method, sizeof(r->method));
	r->head = strcmp(r->method, "HEAD") == 0;
	memcpy(r->accept, m->accept, strlen(m->accept) + 1); /* mostly "": a byte */
	r->minor = m->minor;
	r->target = m->target;
	m->target = NULL;
	target_normalize(r->target);
	char *q = strchr(r->target, '?');
	if (q) {
		*q = '\0';
		r->query = q + 1;
	}
	if (unread) {
		r->unread = true;
		r->declared = m->content_length;
		r->close = true; /* what follows is a body never read */
	} else {
		r->body = http_parser_steal_body(&c->p, &r->body_len);
		r->close = m->close;
	}
	http_parser_reset(&c->p);
	c->req = r;
	c->started = false;
	c->continued = false;
	evtimer_del(c->timer);
	c->h->handler(r, c->h->arg);
}

/*
 * What is wrong with a request's Host fields, NULL if nothing: an HTTP/1.1 request must
 * have one, and no request two (RFC 9112 §3.2), or the server must answer 400.
 */
static const char *host_problem(const struct http_response *m)
{
	if (m->hosts > 1)
		return "more than one Host header field";
	if (m->hosts == 0 && m->minor >= 1)
		return "HTTP/1.1 request without a Host header field";
	return NULL;
}

/* Parse what the client sent, as long as no request is being answered. */
static void conn_parse(struct hconn *c)
{
	struct evbuffer *in = c->in;
	while (!c->req && !c->closing && !c->draining && evbuffer_get_length(in)) {
		struct evbuffer_iovec v;
		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
			break;
		size_t used = 0;
		int r = http_parser_feed(&c->p, v.iov_base, v.iov_len, &used);
		evbuffer_drain(in, used);
		if (!c->started && http_parser_started(&c->p)) {
			c->started = true; /* a request begins: it has the timeout to finish */
			timer_arm(c);
		}
		const char *bad_host =
		    r >= 0 && http_parser_headers_done(&c->p) ? host_problem(&c->p.res) : NULL;
		if (bad_host) {
			conn_refuse(c, &c->h->stats.malformed, 400, bad_host);
			return;
		}
		if (r >= 0 && c->p.res.expect_unknown && http_parser_headers_done(&c->p)) {
			conn_refuse(c, &c->h->stats.malformed, 417, "unknown Expect");
			return;
		}
		if (r == 1) {
			conn_dispatch(c, false);
			return; /* c may be gone */
		}
		if (r < 0) {
			bool head = !http_parser_headers_done(&c->p);
			if (r == HTTP_ETOOBIG && http_parser_in_start_line(&c->p))
				conn_refuse(c, &c->h->stats.too_big, 414, "request line too long");
			else if (r == HTTP_ETOOBIG)
				conn_refuse(c, &c->h->stats.too_big, head ? 431 : 413,
					    head ? "header section too large" : "body too large");
			else if (r == -ENOMEM) /* not the request's fault: a 400 would lose it */
				conn_refuse(c, &c->h->stats.no_memory, 503, "out of memory");
			else {
				char why[96];
				snprintf(why, sizeof(why), "malformed %s",
					 http_parser_failed_part(&c->p));
				conn_refuse(c, &c->h->stats.malformed, 400,
					    r == HTTP_EMALFORMED ? why : http_strerror(r));
			}
			return;
		}
		if (http_parser_awaits_body(&c->p) && c->p.res.expect_continue && !c->continued) {
			struct http_response *m = &c->p.res;
			c->continued = true;
			if (m->minor == 0)
				continue; /* an HTTP/1.0 client's Expect is ignored (RFC 9110 10.1.1) */
			target_normalize(m->target);
			if (c->h->invite &&
			    !c->h->invite(m->method, m->target, m->content_length, c->h->arg)) {
				conn_dispatch(c, true);
				return; /* c may be gone */
			}
			static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
			if (!conn_send(c, cont, sizeof(cont) - 1, NULL, 0)) {
				log_warnx("%s: out of memory for a 100 Continue to %s; connection "
					  "closed",
					  c->h->name, c->peer);
				conn_close(c);
				return;
			}
		}
	}
	if (c->req || c->closing || c->draining)
		return;
	if (c->read_eof) {
		/* Nothing more will come: what is unfinished stays so. */
		if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
			conn_finish(c);
		else
			c->closing = true;
	}
}

/*
 * The last answer is written: end the connection. A plain one is shut for writing and
 * read (dropping what comes) until the client closes or LINGER_MS pass.
 */
/* TLS records of the last answer still waiting for the socket. */
static bool tls_unsent(struct hconn *c)
{
	struct bufferevent *under = c->h->tls ? bufferevent_get_underlying(c->bev) : NULL;
	return under && evbuffer_get_length(bufferevent_get_output(under)) > 0;
}

static void conn_finish(struct hconn *c)
{
	if (c->h->tls) {
		/* The filter has handed its records on: wait (LINGER_MS at most) until the
		 * socket took them, or freeing the connection would drop them. */
		if (!tls_unsent(c)) {
			conn_close(c);
			return;
		}
		c->lingering = true;
		c->linger_until_ms = clock_now_ms() + LINGER_MS;
		struct timeval tv = {.tv_usec = TLS_FLUSH_CHECK_MS * 1000};
		evtimer_add(c->timer, &tv);
		return;
	}
	if (c->read_eof || shutdown(c->fd, SHUT_WR) < 0) {
		conn_close(c);
		return;
	}
	c->lingering = true;
	struct evbuffer *in = c->in;
	evbuffer_drain(in, evbuffer_get_length(in));
	conn_reading(c, true);
	struct timeval tv = {.tv_sec = LINGER_MS / 1000, .tv_usec = (LINGER_MS % 1000) * 1000};
	evtimer_add(c->timer, &tv);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct hconn *c = arg;
	if (c->lingering) {
		struct evbuffer *in = c->in;
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	conn_parse(c);
}

/* The output is written: a closing connection ends now; another reads its next request. */
static void write_cb(struct bufferevent *bev, void *arg)
{
	struct hconn *c = arg;
	if (c->closing && !c->lingering) {
		conn_finish(c);
		return;
	}
	if (c->draining && !tls_unsent(c)) {
		c->draining = false;
		timer_arm(c);
		conn_parse(c);
	}
}

/* TLS: the socket took records: a connection waiting for its answer to leave goes on. */
static void under_output_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct hconn *c = arg;
	if (c->draining && info->n_deleted && evbuffer_get_length(buf) == 0)
		bufferevent_trigger(c->bev, EV_WRITE, BEV_OPT_DEFER_CALLBACKS);
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct hconn *c = arg;
	if (c->lingering) {
		conn_close(c);
		return;
	}
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && !c->read_eof) {
		/* The client may only have shut its side after its request: answer, then close. */
		c->read_eof = true;
		conn_reading(c, false);
		if (!c->req)
			conn_parse(c);
		return;
	}
	conn_close(c);
}

static void conn_close(struct hconn *c)
{
	if (c->req)
		c->req->c = NULL; /* its answer goes nowhere */
	if (c->under_cb)
		evbuffer_remove_cb_entry(bufferevent_get_output(bufferevent_get_underlying(c->bev)),
					 c->under_cb);
	LIST_REMOVE(c, entry);
	event_free(c->timer);
	if (c->rd) {
		event_free(c->rd);
		evbuffer_free(c->in);
	}
	bufferevent_free(c->bev); /* closes the socket */
	http_parser_reset(&c->p);
	struct httpd *h = c->h;
	free(c);
	h->n_conns--;
	if (h->capped && h->n_conns < h->max_conns) {
		h->capped = false;
		if (!evtimer_pending(h->resume, NULL)) /* else resume_cb enables it */
			evconnlistener_enable(h->listener);
	}
}

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	struct httpd *h = arg;
	unsigned long tries;
	double secs;
	if (log_run_ended(&h->starved, &tries, &secs))
		log_notice("%s: accepting connections again (accept() failed %lu times in %.0f s)",
			   h->name, tries, secs);
	struct hconn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->h = h;
	c->fd = fd;
	if (h->bev) {
		c->bev = h->bev(h->base, h->bev_arg);
		if (c->bev && bufferevent_setfd(c->bev, fd) < 0) {
			bufferevent_free(c->bev);
			c->bev = NULL;
		}
	} else {
		c->bev = bufferevent_socket_new(h->base, fd, BEV_OPT_CLOSE_ON_FREE);
		c->rd = event_new(h->base, fd, EV_READ | EV_PERSIST, plain_read_cb, c);
		c->in = evbuffer_new();
	}
	c->timer = evtimer_new(h->base, timer_cb, c);
	if (!c->bev || !c->timer || (!h->tls && (!c->rd || !c->in))) {
		if (c->bev)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->timer)
			event_free(c->timer);
		if (c->rd)
			event_free(c->rd);
		if (c->in)
			evbuffer_free(c->in);
		free(c);
		return;
	}
	if (h->tls)
		c->in = bufferevent_get_input(c->bev);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	char host[NI_MAXHOST] = "?", serv[NI_MAXSERV] = "?";
	getnameinfo(sa, (socklen_t)salen, host, sizeof(host), serv, sizeof(serv),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(c->peer, sizeof(c->peer), "%s port %s", host, serv);
	http_parser_init_request(&c->p, h->max_body);
	LIST_INSERT_HEAD(&h->conns, c, entry);
	if (++h->n_conns == h->max_conns) {
		/* More wait in the listen backlog until one of these closes. */
		h->capped = true;
		evconnlistener_disable(h->listener);
		/*
		 * Pinned at the cap, every close lets one more in and the cap is reached again:
		 * reaches less than a second apart are one episode, counted and logged once.
		 */
		uint64_t now = clock_now_us();
		if (!h->capped_at_us || now - h->capped_at_us >= 1000000) {
			h->stats.capped++;
			log_warnx("%s: %u connections open (%s); new ones wait until one closes",
				  h->name, h->n_conns, h->cap_name);
		}
		h->capped_at_us = now;
	}
	bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
	c->high = h->max_body + HTTP_MAX_HEADERS + INPUT_SLACK;
	struct bufferevent *under = h->tls ? bufferevent_get_underlying(c->bev) : NULL;
	if (under) {
		bufferevent_setwatermark(c->bev, EV_READ, 0, c->high);
		/* The records under the filter: bounded too, and watched to resume a client. */
		bufferevent_setwatermark(under, EV_READ, 0, c->high);
		c->under_cb = evbuffer_add_cb(bufferevent_get_output(under), under_output_cb, c);
		if (!c->under_cb) { /* without it a client paused for its answer is never resumed */
			conn_close(c);
			return;
		}
	} else if (!evbuffer_add_cb(c->in, input_cb, c)) {
		conn_close(c);
		return;
	}
	bufferevent_enable(c->bev, EV_WRITE);
	conn_reading(c, true);
	timer_arm(c);
}

/* accept() failed (out of descriptors, say): pause a second instead of spinning on it. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct httpd *h = arg;
	if (log_run_failed(&h->starved))
		log_warnx("%s: cannot accept a connection: %s; trying again every second, logged "
			  "again once one is accepted",
			  h->name, strerror(EVUTIL_SOCKET_ERROR()));
	evconnlistener_disable(l);
	struct timeval tv = {.tv_sec = 1};
	evtimer_add(h->resume, &tv);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpd *h = arg;
	if (!h->capped)
		evconnlistener_enable(h->listener);
}

struct httpd *httpd_new(struct event_base *base, const struct httpd_options *o,
			httpd_handler *handler, void *arg, char *err, size_t errlen)
{
	struct httpd *h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->base = base;
	h->bev = o->bev;
	h->bev_arg = o->bev_arg;
	h->tls = o->bev != NULL;
	h->refused = o->refused;
	snprintf(h->name, sizeof(h->name), "%s", o->name ? o->name : "http");
	snprintf(h->timeout_name, sizeof(h->timeout_name), "%s",
		 o->timeout_name ? o->timeout_name : "the timeout");
	snprintf(h->cap_name, sizeof(h->cap_name), "%s",
		 o->cap_name ? o->cap_name : "the most allowed");
	h->handler = handler;
	h->invite = o->invite;
	h->arg = arg;
	h->max_body = o->max_body;
	h->timeout_ms = o->timeout_ms ? o->timeout_ms : 30000;
	h->max_conns = o->max_conns;
	LIST_INIT(&h->conns);
	char port[8];
	snprintf(port, sizeof(port), "%u", o->port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
			*ai = NULL;
	int g = getaddrinfo(o->host && *o->host ? o->host : NULL, port, &hints, &ai);
	if (g != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", o->host, gai_strerror(g));
		free(h);
		return NULL;
	}
	h->listener = evconnlistener_new_bind(
	    base, accept_cb, h, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    1024, ai->ai_addr, (int)ai->ai_addrlen);
	freeaddrinfo(ai);
	if (!h->listener) {
		bool v6 = o->host && strchr(o->host, ':');
		snprintf(err, errlen, "cannot listen on %s%s%s:%u: %s", v6 ? "[" : "",
			 o->host ? o->host : "", v6 ? "]" : "", o->port,
			 strerror(errno ? errno : EADDRINUSE));
		free(h);
		return NULL;
	}
	h->resume = evtimer_new(base, resume_cb, h);
	if (!h->resume) {
		snprintf(err, errlen, "out of memory");
		evconnlistener_free(h->listener);
		free(h);
		return NULL;
	}
	evconnlistener_set_error_cb(h->listener, accept_error_cb);
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	if (getsockname(evconnlistener_get_fd(h->listener), (struct sockaddr *)&ss, &sl) == 0)
		h->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	return h;
}

void httpd_free(struct httpd *h)
{
	if (!h)
		return;
	h->capped = false; /* closing the connections below must not accept again */
	if (h->listener)
		evconnlistener_free(h->listener);
	if (h->resume)
		event_free(h->resume);
	while (!LIST_EMPTY(&h->conns))
		conn_close(LIST_FIRST(&h->conns));
	free(h);
}

unsigned httpd_connections(const struct httpd *h)
{
	return h->n_conns;
}

uint16_t httpd_port(const struct httpd *h)
{
	return h->port;
}

void httpd_get_stats(const struct httpd *h, struct httpd_stats *ret)
{
	*ret = h->stats;
}

const char *httpd_req_method(const struct httpd_req *r)
{
	return r->method;
}

const char *httpd_req_path(const struct httpd_req *r)
{
	return r->target;
}

const char *httpd_req_query(const struct httpd_req *r)
{
	return r->query;
}

const char *httpd_req_body(const struct httpd_req *r, size_t *ret_len)
{
	*ret_len = r->body_len;
	return r->body ? r->body : "";
}

const char *httpd_req_accept(const struct httpd_req *r)
{
	return r->accept;
}

bool httpd_req_unread(const struct httpd_req *r, long long *declared)
{
	*declared = r->declared;
	return r->unread;
}

void httpd_reply(struct httpd_req *r, int status, const char *extra_headers, const char *body,
		 size_t len)
{
	httpd_reply_as(r, status, "application/json", extra_headers, body, len);
}

void httpd_reply_as(struct httpd_req *r, int status, const char *content_type,
		    const char *extra_headers, const char *body, size_t len)
{
	struct hconn *c = r->c;
	bool close = r->close, head = r->head, keep_10 = r->minor == 0 && !r->close;
	free(r->target);
	free(r->body);
	free(r);
	if (!c)
		return;
	c->req = NULL;
	if (!conn_answer(c, status, content_type, extra_headers, body, len, close, keep_10, head))
		return;
	/* The timer now limits how long the client takes to read this answer, then to send
	 * its next request. */
	timer_arm(c);
	bool written = evbuffer_get_length(bufferevent_get_output(c->bev)) == 0 && !tls_unsent(c);
	if (c->closing) {
		if (written)
			conn_finish(c);
		return;
	}
	if (!written) {
		c->draining = true; /* the next request waits for write_cb: no answers pile up */
		return;
	}
	/*
	 * A request that came in meanwhile is read on the next turn, not inside this call; a
	 * client that shut its side is closed there once nothing complete is left.
	 */
	if (evbuffer_get_length(c->in) || c->read_eof)
		conn_read_later(c);
}

int httpd_listen_check(const char *listen, char *why, size_t whylen)
{
	char host[256];
	uint16_t port;
	if (conf_parse_listen(listen, host, sizeof(host), &port, why, whylen) < 0)
		return -EINVAL;
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
	int g = getaddrinfo(host, NULL, &hints, &ai);
	if (g != 0) {
		snprintf(why, whylen, "cannot resolve '%s': %s", host, gai_strerror(g));
		return -EINVAL;
	}
	freeaddrinfo(ai);
	return 0;
}
