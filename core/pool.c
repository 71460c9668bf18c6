/* pool: warm, kept-alive HTTP sessions (TLS-PSK or plain) to one upstream host. */
#include "pool.h"
#include "clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "cred.h"
#include "http.h"
#include "text.h"
#include "tls.h"

/* A session closed by the server this soon after it became ready counts as a failure. */
#define QUICK_CLOSE_MS 1000
#define READ_CHUNK 16384
#define WHY_MAX 512 /* room for any reason text we compose */
#define FAIR_SLOTS 256 /* owners the fair queue remembers (a power of two) */

/* An owner of queued requests and the tag of its latest one. */
struct fair_slot {
	uint64_t owner;
	uint64_t last;
};

enum sess_state {
	S_BACKOFF, /* waiting to (re)connect */
	S_RESOLVING,
	S_CONNECTING,
	S_HANDSHAKING,
	S_READY,
	S_BUSY,
};

enum req_state {
	R_QUEUED,
	R_ACTIVE,
	R_DONE,
};

struct session;

struct pool_req {
	struct pool *pool;
	TAILQ_ENTRY(pool_req) link;
	enum req_state state;
	char *buf;
	size_t len;
	pool_done_fn *cb;
	void *arg;
	struct event *ev; /* request timeout, then deferred completion */
	struct session *sess;
	unsigned attempts;
	uint64_t owner; /* who asked (pool_submit_for): the queue is fair between owners */
	uint64_t tag;	/* its place in the fair queue: lower goes first */
	bool probe;	/* the half-open breaker's trial request */
	/* The outcome, kept until the deferred callback runs. */
	int err;
	bool sent;
	uint64_t first_byte_ms; /* clock_now_ms(), 0 until a byte of it left */
	char reason[256]; /* as tpa_result's: room for the breaker's reason and a session's hint */
	bool have_res;
	struct http_response res;
};

TAILQ_HEAD(req_list, pool_req);

struct session {
	struct pool *pool;
	unsigned idx;
	enum sess_state state;
	int fd;
	struct event *ev_io;
	short io_events;
	struct event *timer;
	struct evdns_getaddrinfo_request *dns;
	struct tls_conn *tls;
	struct pool_req *req;
	size_t wr_off;
	bool sent;
	uint64_t sent_base; /* TLS bytes written before this request */
	struct http_parser parser;
	unsigned fails;
	bool ever_ready;
	uint64_t ready_at_ms;
	uint64_t served; /* requests on this connection */
	uint64_t requests;
	uint64_t reconnects;
	char last_error[256];
};

struct pool {
	struct event_base *base;
	struct pool_options o;
	struct http_url url;
	char url_text[HTTP_MAX_HOST + 32];
	char host_header[HTTP_MAX_HOST + 16];
	struct sockaddr_storage addr; /* numeric host */
	socklen_t addr_len;
	bool numeric;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct session *sessions;
	unsigned n_sessions;
	struct req_list queue; /* by tag, then arrival */
	size_t queued;
	uint64_t vtime;		      /* the tag of the request dispatched last */
	struct fair_slot fair[FAIR_SLOTS]; /* the last tag of recent owners */
	struct req_list done;
	enum pool_breaker breaker;
	bool open_by_answers; /* opened by 5xx answers: a new session proves nothing then */
	unsigned consecutive_failures;
	uint64_t open_until_ms;
	bool probe_active;
	struct event *breaker_timer;
	uint64_t rng;
	char last_error[256];
	struct pool_stats stats;
	/* A certificate failure holds every session back until one handshake succeeds. */
	enum tls_cert_error cert_error;
	char cert_reason[200];
	uint64_t cert_retry_ms; /* no handshake before this time */
	int cert_probe;		/* index of the session trying again, -1 none */
};

static void session_open(struct session *s);

/*
 * Fair queueing between owners (start-time fair queueing): a request is tagged one past
 * the later of the last dispatched tag and its owner's last tag, and the queue is served
 * in tag order. An owner with many requests queued gets every other turn at most when
 * one other owner waits, so one station that pipelines calls cannot hold the others
 * behind its backlog. Owners are remembered in a small direct-mapped table: one that
 * shares a slot with another is merely treated as a newcomer.
 */
static uint64_t fair_tag(struct pool *p, uint64_t owner)
{
	struct fair_slot *f = &p->fair[(owner * 0x9E3779B97F4A7C15ull) >> 56 & (FAIR_SLOTS - 1)];
	uint64_t start = f->owner == owner && f->last > p->vtime ? f->last : p->vtime;
	f->owner = owner;
	f->last = start + 1;
	return f->last;
}

/* Queue r in tag order (after every request of the same tag or lower). */
static void fair_insert(struct pool *p, struct pool_req *r)
{
	struct pool_req *q = TAILQ_LAST(&p->queue, req_list);
	while (q && q->tag > r->tag)
		q = TAILQ_PREV(q, req_list, link);
	if (q)
		TAILQ_INSERT_AFTER(&p->queue, q, r, link);
	else
		TAILQ_INSERT_HEAD(&p->queue, r, link);
}
static void session_fail(struct session *s, int err, const char *reason, bool counts);
static void pool_dispatch(struct pool *p);
static void io_cb(evutil_socket_t fd, short what, void *arg);

/* A timeval for ms milliseconds. */
static struct timeval ms_tv(uint64_t ms)
{
	struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
			     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
	return tv;
}

/* xorshift64*: jitter only, not security. */
static uint64_t rng_next(struct pool *p)
{
	p->rng ^= p->rng >> 12;
	p->rng ^= p->rng << 25;
	p->rng ^= p->rng >> 27;
	return p->rng * 2685821657736338717ULL;
}

/* Full-jitter exponential backoff: uniform in [min, min(max, min * 2^fails)]. */
static uint64_t backoff_ms(struct pool *p, unsigned fails)
{
	uint64_t lo = p->o.backoff_min_ms, hi = p->o.backoff_max_ms;
	uint64_t cap = lo;

	for (unsigned i = 1; i < fails && cap < hi; i++)
		cap *= 2;
	if (cap > hi)
		cap = hi;
	if (cap <= lo)
		return lo;
	return lo + rng_next(p) % (cap - lo + 1);
}

/* ---- requests ---- */

/* Settle a request: detach it and run its callback from the loop, never from here. */
static void req_finish(struct pool_req *r, int err, bool sent, const char *reason)
{
	struct pool *p = r->pool;

	if (r->state == R_QUEUED) {
		TAILQ_REMOVE(&p->queue, r, link);
		p->queued--;
	}
	if (r->probe)
		p->probe_active = false;
	r->state = R_DONE;
	r->sess = NULL;
	r->err = err;
	r->sent = sent;
	/* Cut to the field: a reason is one line for a log and an answer. */
	text_copy(r->reason, sizeof(r->reason), reason ? reason : "");
	if (err && sent)
		p->stats.unknown++;
	TAILQ_INSERT_TAIL(&p->done, r, link);
	event_del(r->ev);
	event_active(r->ev, EV_TIMEOUT, 0);
}

/* Free a request and anything it holds. */
static void req_free(struct pool_req *r)
{
	if (!r)
		return;
	if (r->ev)
		event_free(r->ev);
	if (r->res.body) {
		cred_wipe(r->res.body, r->res.body_len);
		free(r->res.body);
	}
	if (r->buf) {
		cred_wipe(r->buf, r->len);
		free(r->buf);
	}
	free(r);
}

/* What the pool links to, as its failures' reasons name it. */
static const char *pool_name(const struct pool *p)
{
	return p->o.name ? p->o.name : "upstream";
}

/* The request's event: its timeout fired, or its outcome is ready to deliver. */
static void req_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool_req *r = arg;
	struct pool *p = r->pool;
	char why[WHY_MAX];

	switch (r->state) {
	case R_QUEUED:
		snprintf(why, sizeof(why), "no %s session ready within %u ms%s%s", pool_name(p),
			 p->o.request_timeout_ms, p->last_error[0] ? ": " : "", p->last_error);
		req_finish(r, -ETIMEDOUT, false, why);
		return;
	case R_ACTIVE:
		snprintf(why, sizeof(why), "no complete response within %u ms",
			 p->o.request_timeout_ms);
		session_fail(r->sess, -ETIMEDOUT, why, true);
		return;
	case R_DONE:
		break;
	}
	TAILQ_REMOVE(&p->done, r, link);
	struct pool_result res = {
	    .err = r->err,
	    .sent = r->sent,
	    .sent_at_ms = r->sent ? r->first_byte_ms : 0,
	    .reason = r->reason,
	    .res = r->have_res ? &r->res : NULL,
	};
	r->cb(&res, r->arg);
	req_free(r);
}

/* Arm a request's timeout. */
static void req_arm(struct pool_req *r)
{
	struct timeval tv = ms_tv(r->pool->o.request_timeout_ms);
	event_add(r->ev, &tv);
}

/* ---- circuit breaker ---- */

/* Fail every queued request, unsent: the breaker is open, or the server is unreachable. */
static void fail_queue(struct pool *p, int err, const char *reason)
{
	struct pool_req *r;

	while ((r = TAILQ_FIRST(&p->queue)))
		req_finish(r, err, false, reason);
}

/* Whether any session is connected (ready, or carrying a request). */
static bool any_session_up(const struct pool *p)
{
	for (unsigned i = 0; i < p->n_sessions; i++)
		if (p->sessions[i].state >= S_READY)
			return true;
	return false;
}

/* Open the breaker for the cool-down period. */
static void breaker_open(struct pool *p)
{
	char why[WHY_MAX];

	p->breaker = POOL_BREAKER_OPEN;
	p->open_until_ms = clock_now_ms() + p->o.breaker_cooldown_ms;
	p->stats.breaker_opens++;
	struct timeval tv = ms_tv(p->o.breaker_cooldown_ms);
	event_add(p->breaker_timer, &tv);
	if (p->cert_error != TLS_CERT_OK)
		snprintf(why, sizeof(why), "%s circuit breaker open: %s", pool_name(p),
			 p->cert_reason);
	else
		snprintf(why, sizeof(why), "%s circuit breaker open after %u failures%s%s",
			 pool_name(p), p->consecutive_failures, p->last_error[0] ? ": " : "",
			 p->last_error);
	fail_queue(p, -EHOSTUNREACH, why);
}

/* Count one failure towards the breaker: a 5xx answer, or a session that failed. */
static void breaker_failure(struct pool *p, bool answer)
{
	p->consecutive_failures++;
	if (p->breaker == POOL_BREAKER_HALF_OPEN ||
	    (p->breaker == POOL_BREAKER_CLOSED &&
	     p->consecutive_failures >= p->o.breaker_threshold)) {
		p->open_by_answers = answer;
		breaker_open(p);
	}
}

/* A success closes the breaker. */
static void breaker_success(struct pool *p)
{
	p->consecutive_failures = 0;
	if (p->breaker != POOL_BREAKER_CLOSED) {
		p->breaker = POOL_BREAKER_CLOSED;
		event_del(p->breaker_timer);
	}
}

/* The cool-down ended: let one trial through. */
static void breaker_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct pool *p = arg;

	if (p->cert_error != TLS_CERT_OK && p->breaker == POOL_BREAKER_OPEN) {
		/* A bad certificate does not heal with time: stay open until a handshake
		 * succeeds (session_ready closes the breaker). */
		p->open_until_ms = clock_now_ms() + p->o.breaker_cooldown_ms;
		struct timeval tv = ms_tv(p->o.breaker_cooldown_ms);
		event_add(p->breaker_timer, &tv);
		return;
	}
	if (p->breaker == POOL_BREAKER_OPEN)
		p->breaker = POOL_BREAKER_HALF_OPEN;
	pool_dispatch(p);
}

/* ---- sessions ---- */

/* Point the session's I/O event at its fd for the given directions (0: none). */
static void session_watch(struct session *s, short events)
{
	if (s->io_events == events && (events == 0 || event_pending(s->ev_io, events, NULL)))
		return;
	event_del(s->ev_io);
	s->io_events = events;
	if (!events || s->fd < 0)
		return;
	event_assign(s->ev_io, s->pool->base, s->fd, events | EV_PERSIST, io_cb, s);
	event_add(s->ev_io, NULL);
}

/* Close the connection (if any) and forget per-connection state. */
static void session_close(struct session *s)
{
	if (s->dns) {
		evdns_getaddrinfo_cancel(s->dns);
		s->dns = NULL;
	}
	if (s->ev_io)
		event_del(s->ev_io);
	s->io_events = 0;
	if (s->timer)
		event_del(s->timer);
	if (s->fd >= 0) {
		/* Not while a request of which nothing went out is still on it: close_notify
		 * first flushes what mbedTLS holds, which would send that request after all
		 * while it is put back in the queue as unsent. */
		if (s->tls && s->state >= S_READY && !(s->req && !s->sent))
			tls_conn_close_notify(s->tls);
		close(s->fd);
		s->fd = -1;
	}
	http_parser_reset(&s->parser);
	s->served = 0;
}

/* Wait, then reconnect; a quick retry when the connection was healthy. */
static void session_schedule(struct session *s, uint64_t delay)
{
	s->state = S_BACKOFF;
	struct timeval tv = ms_tv(delay);
	event_add(s->timer, &tv);
}

/* Record a session error as the session's and the pool's last error. */
static void session_error(struct session *s, const char *reason)
{
	snprintf(s->last_error, sizeof(s->last_error), "%s", reason);
	snprintf(s->pool->last_error, sizeof(s->pool->last_error), "%s", reason);
}

/*
 * The connection failed or timed out: settle or re-queue its request, close, count it
 * for the breaker if asked, and schedule a reconnect with backoff. A request the server
 * received and never answered (a reset, a close, a time-out) counts as a bad answer: the
 * server is reachable and fails its requests, so a new connection proves nothing.
 */
static void session_fail(struct session *s, int err, const char *reason, bool counts)
{
	struct pool *p = s->pool;
	struct pool_req *r = s->req;
	bool was_connecting = s->state < S_READY;
	bool unanswered = r && s->sent;

	session_error(s, reason);
	s->req = NULL;
	session_close(s);
	if (was_connecting) {
		s->fails++;
		p->stats.connect_failures++;
	}
	if (p->cert_error != TLS_CERT_OK) {
		uint64_t now = clock_now_ms(), wait = backoff_ms(p, s->fails ? s->fails : 1);
		if (p->cert_retry_ms > now + wait)
			wait = p->cert_retry_ms - now;
		session_schedule(s, wait);
	} else {
		session_schedule(s, s->fails ? backoff_ms(p, s->fails) : 0);
	}
	if (r) {
		if (r->probe)
			p->probe_active = false;
		r->probe = false;
		if (!s->sent && r->attempts <= p->n_sessions) {
			/* Nothing reached the server: another session may carry it. */
			r->state = R_QUEUED;
			r->sess = NULL;
			TAILQ_INSERT_HEAD(&p->queue, r, link);
			p->queued++;
			p->stats.retried++;
			req_arm(r);
		} else {
			req_finish(r, err, s->sent, reason);
		}
	}
	if (counts)
		breaker_failure(p, unanswered);
	/* fail_unreachable: a client that retries on its own hears at once, not at its
	 * request's time-out, that the server cannot be reached now. */
	if (was_connecting && counts && p->o.fail_unreachable && !any_session_up(p))
		fail_queue(p, err, reason);
	pool_dispatch(p);
}

/* The connection is usable: watch it for a server close and hand it work. */
static void session_ready(struct session *s)
{
	struct pool *p = s->pool;

	event_del(s->timer);
	s->state = S_READY;
	s->ready_at_ms = clock_now_ms();
	if (s->ever_ready)
		s->reconnects++;
	s->ever_ready = true;
	s->last_error[0] = '\0';
	session_watch(s, EV_READ);
	if (p->cert_error != TLS_CERT_OK) {
		/* The certificate is good again: let the held sessions connect now. */
		p->cert_error = TLS_CERT_OK;
		p->cert_reason[0] = '\0';
		p->cert_probe = -1;
		if (p->o.cert_cb)
			p->o.cert_cb(p->o.cert_arg, TLS_CERT_OK, "");
		for (unsigned i = 0; i < p->n_sessions; i++) {
			struct session *o = &p->sessions[i];
			if (o != s && o->state == S_BACKOFF) {
				event_del(o->timer);
				session_schedule(o, 0);
			}
		}
	}
	/*
	 * A completed handshake proves the cloud can be reached again: no need to wait out a
	 * cool-down that failed connections opened while healthy sessions stand idle. One
	 * that 5xx answers opened (a load balancer with no backend closes its connections
	 * with each 503) waits for a trial request to succeed.
	 */
	if (p->breaker != POOL_BREAKER_CLOSED && !p->open_by_answers)
		breaker_success(p);
	pool_dispatch(p);
}

/*
 * The server's certificate (or ours) was refused. Retrying soon cannot help and would
 * hammer the server: open the breaker at once with the reason, and hold every session
 * back so that one handshake per upstream.backoff-max tries again.
 */
static void session_cert_fail(struct session *s)
{
	struct pool *p = s->pool;
	const char *reason = tls_conn_error(s->tls);

	enum tls_cert_error e = tls_conn_cert_error(s->tls);
	bool news = e != p->cert_error; /* one log line per kind, not per retry */

	p->stats.cert_failures++;
	p->cert_error = e;
	snprintf(p->cert_reason, sizeof(p->cert_reason), "%s", reason);
	if (news && p->o.cert_cb)
		p->o.cert_cb(p->o.cert_arg, e, p->cert_reason);
	p->cert_retry_ms = clock_now_ms() + p->o.backoff_max_ms;
	p->cert_probe = -1;
	session_fail(s, -EKEYREJECTED, reason, false);
	p->open_by_answers = false; /* a good handshake is what ends this one */
	if (p->breaker != POOL_BREAKER_OPEN)
		breaker_open(p);
}

/* Drive the TLS handshake one step. */
static void session_handshake(struct session *s)
{
	short w = EV_READ;
	int r = tls_conn_handshake(s->tls, &w);

	if (r == -EAGAIN) {
		session_watch(s, w);
		return;
	}
	if (r == -EKEYREJECTED) {
		session_cert_fail(s);
		return;
	}
	if (r < 0) {
		session_fail(s, r, tls_conn_error(s->tls), true);
		return;
	}
	s->pool->stats.handshakes++;
	if (tls_conn_resumed(s->tls))
		s->pool->stats.resumed++;
	session_ready(s);
}

/* TCP is up: start TLS or declare a plain session ready. */
static void session_connected(struct session *s)
{
	struct pool *p = s->pool;

	p->stats.connects++;
	if (!s->tls) {
		session_ready(s);
		return;
	}
	if (tls_conn_start(s->tls, s->fd) < 0) {
		session_fail(s, -ENOMEM, "cannot start TLS", false);
		return;
	}
	s->state = S_HANDSHAKING;
	event_del(s->timer);
	struct timeval tv = ms_tv(p->o.handshake_timeout_ms);
	event_add(s->timer, &tv);
	session_handshake(s);
}

/* Start a non-blocking connect to addr. */
static void session_connect(struct session *s, const struct sockaddr *addr, socklen_t len)
{
	struct pool *p = s->pool;
	char why[WHY_MAX];
	int one = 1;

	s->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd < 0) {
		snprintf(why, sizeof(why), "socket: %s", strerror(errno));
		session_fail(s, -errno, why, false);
		return;
	}
	(void)setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	s->state = S_CONNECTING;
	struct timeval tv = ms_tv(p->o.connect_timeout_ms);
	event_add(s->timer, &tv);
	if (connect(s->fd, addr, len) == 0) {
		session_connected(s);
		return;
	}
	if (errno != EINPROGRESS) {
		int e = errno;
		snprintf(why, sizeof(why), "connect to %s:%u: %s", p->url.host, p->url.port,
			 strerror(e));
		session_fail(s, -e, why, true);
		return;
	}
	session_watch(s, EV_WRITE);
}

/* evdns answered (possibly synchronously, from inside evdns_getaddrinfo()). */
static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	if (result == EVUTIL_EAI_CANCEL)
		return;
	struct session *s = arg;
	char why[WHY_MAX];

	s->dns = NULL;
	if (result != 0 || !res) {
		snprintf(why, sizeof(why), "cannot resolve %s: %s", s->pool->url.host,
			 evutil_gai_strerror(result));
		if (res)
			evutil_freeaddrinfo(res);
		session_fail(s, -EHOSTUNREACH, why, true);
		return;
	}
	/* Rotate through the addresses across reconnects. */
	unsigned n = 0;
	for (struct evutil_addrinfo *a = res; a; a = a->ai_next)
		n++;
	struct evutil_addrinfo *a = res;
	for (unsigned i = (unsigned)((s->reconnects + s->fails) % n); i > 0; i--)
		a = a->ai_next;
	session_connect(s, a->ai_addr, (socklen_t)a->ai_addrlen);
	evutil_freeaddrinfo(res);
}

/* Open a connection: resolve the host if needed, then connect. */
static void session_open(struct session *s)
{
	struct pool *p = s->pool;

	if (p->numeric) {
		session_connect(s, (const struct sockaddr *)&p->addr, p->addr_len);
		return;
	}
	struct evutil_addrinfo hints;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	char port[8];
	snprintf(port, sizeof(port), "%u", p->url.port);
	s->state = S_RESOLVING;
	struct timeval tv = ms_tv(p->o.connect_timeout_ms);
	event_add(s->timer, &tv);
	struct evdns_getaddrinfo_request *q =
	    evdns_getaddrinfo(p->dns, p->url.host, port, &hints, dns_cb, s);
	if (q && s->state == S_RESOLVING)
		s->dns = q;
}

/* The session's timer: backoff over, or connect/handshake timed out. */
static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	char why[WHY_MAX];

	switch (s->state) {
	case S_BACKOFF:
		if (s->pool->cert_error != TLS_CERT_OK) {
			struct pool *p = s->pool;
			uint64_t now = clock_now_ms();
			if (now < p->cert_retry_ms ||
			    (p->cert_probe >= 0 && (unsigned)p->cert_probe != s->idx)) {
				/* One session at a time tries a refused certificate again. */
				uint64_t wait = now < p->cert_retry_ms ? p->cert_retry_ms - now
								       : p->o.backoff_max_ms;
				session_schedule(s, wait);
				return;
			}
			p->cert_probe = (int)s->idx;
		}
		session_open(s);
		return;
	case S_RESOLVING:
	case S_CONNECTING:
		snprintf(why, sizeof(why), "%s %s:%u timed out after %u ms",
			 s->state == S_RESOLVING ? "resolving" : "connecting to", s->pool->url.host,
			 s->pool->url.port, s->pool->o.connect_timeout_ms);
		session_fail(s, -ETIMEDOUT, why, true);
		return;
	case S_HANDSHAKING:
		snprintf(why, sizeof(why), "TLS handshake timed out after %u ms",
			 s->pool->o.handshake_timeout_ms);
		session_fail(s, -ETIMEDOUT, why, true);
		return;
	default:
		return;
	}
}

/* Read from the connection (TLS or plain). */
static ssize_t session_read(struct session *s, void *buf, size_t len, short *want)
{
	if (s->tls)
		return tls_conn_read(s->tls, buf, len, want);
	for (;;) {
		ssize_t n = recv(s->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		*want = EV_READ;
		return errno == EAGAIN || errno == EWOULDBLOCK ? -EAGAIN : -errno;
	}
}

/* A byte of the session's request left: when, the first time (pool_result.sent_at_ms). */
static void session_mark_sent(struct session *s)
{
	s->sent = true;
	if (s->req && !s->req->first_byte_ms)
		s->req->first_byte_ms = clock_now_ms();
}

/* Write to the connection (TLS or plain); tracks whether any byte left. */
static ssize_t session_write(struct session *s, const void *buf, size_t len, short *want)
{
	ssize_t n;

	if (s->tls) {
		n = tls_conn_write(s->tls, buf, len, want);
		if (tls_conn_bytes_sent(s->tls) > s->sent_base)
			session_mark_sent(s);
		return n;
	}
	for (;;) {
		n = send(s->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			session_mark_sent(s);
			return n;
		}
		if (n < 0 && errno == EINTR)
			continue;
		*want = EV_WRITE;
		return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) ? -EAGAIN
									  : (n < 0 ? -errno : -EIO);
	}
}

/* Text for an I/O error. */
static const char *io_error(struct session *s, ssize_t n)
{
	if (s->tls && tls_conn_error(s->tls)[0])
		return tls_conn_error(s->tls);
	return strerror((int)-n);
}

/* The response is complete: hand it over and make the session idle (or close it). */
static void session_complete(struct session *s, bool extra)
{
	struct pool *p = s->pool;
	struct pool_req *r = s->req;
	bool close_after = extra || s->parser.res.close || (s->tls && tls_conn_pending(s->tls));

	s->req = NULL;
	r->res = s->parser.res;
	r->res.body = http_parser_steal_body(&s->parser, &r->res.body_len);
	r->have_res = true;
	http_parser_reset(&s->parser);
	s->requests++;
	s->served++;
	s->fails = 0;
	p->stats.requests++;
	if (r->res.status >= 500)
		breaker_failure(p, true);
	else
		breaker_success(p);
	req_finish(r, 0, true, NULL);
	if (close_after) {
		session_close(s);
		session_schedule(s, 0);
	} else {
		s->state = S_READY;
		session_watch(s, EV_READ);
	}
	pool_dispatch(p);
}

/* The server closed a connection we were not using: reopen it. */
static void session_idle_closed(struct session *s, const char *reason)
{
	struct pool *p = s->pool;
	bool quick = s->served == 0 && clock_now_ms() - s->ready_at_ms < QUICK_CLOSE_MS;

	session_close(s);
	if (quick) {
		session_error(s, reason);
		s->fails++;
		session_schedule(s, backoff_ms(p, s->fails));
	} else {
		/* A connection that lived a while: the server's idle timeout, not a failure. */
		s->fails = 0;
		session_schedule(s, 0);
	}
}

/* Idle session became readable: the server closed it (or sent junk). */
static void session_idle_read(struct session *s)
{
	char buf[256];
	short w = EV_READ;
	ssize_t n = session_read(s, buf, sizeof(buf), &w);

	if (n == -EAGAIN) {
		session_watch(s, w);
		return;
	}
	session_idle_closed(
	    s, n == 0 ? "server closed the connection right after connecting"
		      : (n > 0 ? "server sent data on an idle connection" : io_error(s, n)));
}

/* Push the request bytes out. */
static void session_send(struct session *s)
{
	struct pool_req *r = s->req;
	char why[WHY_MAX];

	while (s->wr_off < r->len) {
		short w = EV_WRITE;
		ssize_t n = session_write(s, r->buf + s->wr_off, r->len - s->wr_off, &w);
		if (n == -EAGAIN) {
			session_watch(s, w);
			return;
		}
		if (n < 0) {
			snprintf(why, sizeof(why), "sending the request failed: %s",
				 io_error(s, n));
			session_fail(s, (int)n, why, true);
			return;
		}
		s->wr_off += (size_t)n;
	}
	session_watch(s, EV_READ);
}

/* Read the response through buf until it is complete or the socket has nothing more. */
static void session_receive_into(struct session *s, char *buf, size_t size)
{
	char why[WHY_MAX];

	for (;;) {
		short w = EV_READ;
		ssize_t n = session_read(s, buf, size, &w);
		if (n == -EAGAIN) {
			session_watch(s, w);
			return;
		}
		if (n < 0) {
			snprintf(why, sizeof(why), "reading the response failed: %s",
				 io_error(s, n));
			session_fail(s, (int)n, why, true);
			return;
		}
		if (n == 0) {
			int e = http_parser_eof(&s->parser);
			if (e == 1) {
				session_complete(s, false);
				return;
			}
			snprintf(why, sizeof(why), "connection closed %s",
				 http_parser_started(&s->parser) ? "in the middle of the response"
								 : "before any response");
			session_fail(s, e, why, true);
			return;
		}
		size_t used = 0;
		int e = http_parser_feed(&s->parser, buf, (size_t)n, &used);
		if (e == 1) {
			session_complete(s, used < (size_t)n);
			return;
		}
		if (e < 0) {
			snprintf(why, sizeof(why), "bad response: %s", http_strerror(e));
			session_fail(s, e, why, true);
			return;
		}
	}
}

/* A response may carry a secret (an OAuth2 token, a device's appKey): its bytes are
 * wiped from the stack once read, as from the body (req_free). */
static void session_receive(struct session *s)
{
	char buf[READ_CHUNK];
	session_receive_into(s, buf, sizeof(buf));
	cred_wipe(buf, sizeof(buf));
}

/* I/O readiness on a session's socket. */
static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;
	char why[WHY_MAX];

	switch (s->state) {
	case S_CONNECTING: {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr) {
			snprintf(why, sizeof(why), "connect to %s:%u: %s", s->pool->url.host,
				 s->pool->url.port, strerror(soerr));
			session_fail(s, -soerr, why, true);
			return;
		}
		session_connected(s);
		return;
	}
	case S_HANDSHAKING:
		session_handshake(s);
		return;
	case S_READY:
		session_idle_read(s);
		return;
	case S_BUSY:
		if (s->wr_off < s->req->len)
			session_send(s);
		else
			session_receive(s);
		return;
	default:
		session_watch(s, 0);
		return;
	}
}

/* True if an idle connection still looks open (no EOF, no stray bytes waiting). */
static bool session_alive(struct session *s)
{
	char c;
	ssize_t n = recv(s->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return !(s->tls && tls_conn_pending(s->tls));
	return false;
}

/* Give queued requests to ready sessions, in order, as the breaker allows. */
static void pool_dispatch(struct pool *p)
{
	struct pool_req *r;

	while ((r = TAILQ_FIRST(&p->queue))) {
		if (p->breaker == POOL_BREAKER_OPEN) {
			if (clock_now_ms() < p->open_until_ms || p->cert_error != TLS_CERT_OK)
				return;
			p->breaker = POOL_BREAKER_HALF_OPEN;
		}
		if (p->breaker == POOL_BREAKER_HALF_OPEN && p->probe_active)
			return;
		struct session *s = NULL;
		for (unsigned i = 0; i < p->n_sessions && !s; i++) {
			struct session *c = &p->sessions[i];
			if (c->state != S_READY)
				continue;
			if (!session_alive(c)) {
				session_idle_closed(c, "server closed the idle connection");
				continue;
			}
			s = c;
		}
		if (!s)
			return;
		TAILQ_REMOVE(&p->queue, r, link);
		p->queued--;
		if (r->tag > p->vtime)
			p->vtime = r->tag;
		r->state = R_ACTIVE;
		r->sess = s;
		r->attempts++;
		if (p->breaker == POOL_BREAKER_HALF_OPEN) {
			r->probe = true;
			p->probe_active = true;
		}
		s->req = r;
		s->state = S_BUSY;
		s->wr_off = 0;
		s->sent = false;
		s->sent_base = s->tls ? tls_conn_bytes_sent(s->tls) : 0;
		http_parser_reset(&s->parser);
		event_del(r->ev);
		req_arm(r);
		session_watch(s, EV_WRITE);
	}
}

/* ---- public ---- */

/* Set up the pool and start opening its sessions. */
struct pool *pool_new(struct event_base *base, const struct pool_options *o, char *err, size_t errlen)
{
	struct pool *p = calloc(1, sizeof(*p));

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->base = base;
	p->o = *o;
	TAILQ_INIT(&p->queue);
	TAILQ_INIT(&p->done);
	p->rng = ((uint64_t)getpid() << 32) ^ clock_now_ms() ^ (uint64_t)(uintptr_t)p;
	if (!p->rng)
		p->rng = 1;
	if (http_url_parse(o->url, &p->url) < 0 ||
	    (p->url.path[0] && strcmp(p->url.path, "/") != 0)) {
		snprintf(err, errlen,
			 "url: want https://host[:port] or http://host[:port], got %s",
			 o->url ? o->url : "nothing");
		goto fail;
	}
	bool v6 = strchr(p->url.host, ':') != NULL;
	snprintf(p->url_text, sizeof(p->url_text), "%s://%s%s%s:%u", p->url.tls ? "https" : "http",
		 v6 ? "[" : "", p->url.host, v6 ? "]" : "", p->url.port);
	if (p->url.default_port)
		snprintf(p->host_header, sizeof(p->host_header), "%s%s%s", v6 ? "[" : "",
			 p->url.host, v6 ? "]" : "");
	else
		snprintf(p->host_header, sizeof(p->host_header), "%s%s%s:%u", v6 ? "[" : "",
			 p->url.host, v6 ? "]" : "", p->url.port);

	struct sockaddr_in *sin = (struct sockaddr_in *)&p->addr;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&p->addr;
	if (inet_pton(AF_INET, p->url.host, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		sin->sin_port = htons(p->url.port);
		p->addr_len = sizeof(*sin);
		p->numeric = true;
	} else if (inet_pton(AF_INET6, p->url.host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(p->url.port);
		p->addr_len = sizeof(*sin6);
		p->numeric = true;
	} else {
		p->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
						  EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (!p->dns) {
			snprintf(err, errlen, "cannot set up the DNS resolver");
			goto fail;
		}
	}
	if (p->url.tls && tls_ctx_new(&o->tls, &p->tls, err, errlen) < 0)
		goto fail;
	p->cert_probe = -1;
	p->breaker_timer = evtimer_new(base, breaker_timer_cb, p);
	p->n_sessions = o->sessions ? o->sessions : 1;
	p->sessions = calloc(p->n_sessions, sizeof(*p->sessions));
	if (!p->breaker_timer || !p->sessions) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < p->n_sessions; i++) {
		struct session *s = &p->sessions[i];
		s->pool = p;
		s->idx = i;
		s->fd = -1;
		s->state = S_BACKOFF;
		http_parser_init(&s->parser, o->max_response);
		if (o->cut_response)
			http_parser_cut_body(&s->parser);
		s->ev_io = event_new(base, -1, 0, io_cb, s);
		s->timer = evtimer_new(base, timer_cb, s);
		if (!s->ev_io || !s->timer ||
		    (p->tls && tls_conn_new(p->tls, p->url.host, &s->tls) < 0)) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
	}
	/* Open from the loop, not from here: the caller may not be running it yet. */
	for (unsigned i = 0; i < p->n_sessions; i++)
		session_schedule(&p->sessions[i], 0);
	return p;
fail:
	pool_free(p);
	return NULL;
}

/* Close everything; no callbacks are called. */
struct pool *pool_free(struct pool *p)
{
	struct pool_req *r;

	if (!p)
		return NULL;
	for (unsigned i = 0; p->sessions && i < p->n_sessions; i++) {
		struct session *s = &p->sessions[i];
		session_close(s);
		req_free(s->req);
		if (s->ev_io)
			event_free(s->ev_io);
		if (s->timer)
			event_free(s->timer);
		tls_conn_free(s->tls);
		http_parser_reset(&s->parser);
	}
	free(p->sessions);
	while ((r = TAILQ_FIRST(&p->queue))) {
		TAILQ_REMOVE(&p->queue, r, link);
		req_free(r);
	}
	while ((r = TAILQ_FIRST(&p->done))) {
		TAILQ_REMOVE(&p->done, r, link);
		req_free(r);
	}
	if (p->breaker_timer)
		event_free(p->breaker_timer);
	if (p->dns)
		evdns_base_free(p->dns, 0);
	tls_ctx_free(p->tls);
	free(p);
	return NULL;
}

void pool_fail_all(struct pool *p, int err, const char *reason)
{
	for (unsigned i = 0; i < p->n_sessions; i++) {
		struct session *s = &p->sessions[i];
		struct pool_req *r = s->req;
		if (!r)
			continue;
		s->req = NULL;
		session_close(s);
		session_schedule(s, 0);
		req_finish(r, err, s->sent, reason);
	}
	struct pool_req *r;
	while ((r = TAILQ_FIRST(&p->queue)))
		req_finish(r, err, false, reason);
}

/* Queue a request, or settle it at once (from the loop) while the breaker is open. */
bool pool_has_room(const struct pool *p)
{
	return p->queued < p->o.queue;
}

size_t pool_room(const struct pool *p)
{
	size_t room = p->queued < p->o.queue ? p->o.queue - p->queued : 0;
	if (p->queued == 0) /* a ready session takes one at once, leaving the queue's room */
		for (unsigned i = 0; i < p->n_sessions; i++)
			room += p->sessions[i].state == S_READY;
	return room;
}

/* The breaker open: what pool_submit_for() settles at once, unsent. */
bool pool_fails_fast(const struct pool *p)
{
	return p->breaker == POOL_BREAKER_OPEN &&
	       (p->cert_error != TLS_CERT_OK || clock_now_ms() < p->open_until_ms);
}

int pool_submit(struct pool *p, const char *buf, size_t len, pool_done_fn *cb, void *arg)
{
	return pool_submit_for(p, 0, buf, len, cb, arg);
}

int pool_submit_for(struct pool *p, uint64_t owner, const char *buf, size_t len,
		    pool_done_fn *cb, void *arg)
{
	if (!pool_has_room(p)) {
		p->stats.queue_full++;
		return -EBUSY;
	}
	struct pool_req *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->pool = p;
	r->cb = cb;
	r->arg = arg;
	r->buf = malloc(len ? len : 1);
	r->ev = event_new(p->base, -1, 0, req_event_cb, r);
	if (!r->buf || !r->ev) {
		req_free(r);
		return -ENOMEM;
	}
	memcpy(r->buf, buf, len);
	r->len = len;
	r->state = R_QUEUED;
	r->owner = owner;
	r->tag = fair_tag(p, owner);
	fair_insert(p, r);
	p->queued++;
	if (p->breaker == POOL_BREAKER_OPEN && p->cert_error != TLS_CERT_OK) {
		char why[WHY_MAX];
		snprintf(why, sizeof(why), "%s circuit breaker open: %s", pool_name(p),
			 p->cert_reason);
		req_finish(r, -EHOSTUNREACH, false, why);
		return 0;
	}
	if (p->breaker == POOL_BREAKER_OPEN && clock_now_ms() < p->open_until_ms) {
		char why[WHY_MAX];
		snprintf(why, sizeof(why), "%s circuit breaker open (retry in %llu s)%s%s",
			 pool_name(p),
			 (unsigned long long)((p->open_until_ms - clock_now_ms() + 999) / 1000),
			 p->last_error[0] ? ": " : "", p->last_error);
		req_finish(r, -EHOSTUNREACH, false, why);
		return 0;
	}
	req_arm(r);
	if (p->o.fail_unreachable && !any_session_up(p)) {
		/* Its client paced this try: connect now rather than after the backoff. */
		for (unsigned i = 0; i < p->n_sessions; i++)
			if (p->sessions[i].state == S_BACKOFF)
				session_schedule(&p->sessions[i], 0);
	}
	pool_dispatch(p);
	return 0;
}

/* The Host header value. */
const char *pool_host(const struct pool *p)
{
	return p->host_header;
}

/* The URL in canonical form. */
const char *pool_url(const struct pool *p)
{
	return p->url_text;
}

/* Count sessions that can carry a request now or are carrying one. */
static unsigned sessions_up(const struct pool *p)
{
	unsigned up = 0;

	for (unsigned i = 0; i < p->n_sessions; i++)
		if (p->sessions[i].state == S_READY || p->sessions[i].state == S_BUSY)
			up++;
	return up;
}

#define WATCH_FIRST_NOTE_US (60 * 1000000ull)
#define WATCH_MAX_NOTE_US (600 * 1000000ull)

unsigned pool_watch_look(struct pool_watch *w, const struct pool_stats *s, uint64_t now_us,
			 uint64_t *open_s, uint64_t *reopens)
{
	unsigned say = 0;
	/* Opened since the last look (or since start), or open now. */
	bool opened = s->breaker_opens > w->opens || s->breaker == POOL_BREAKER_OPEN;
	if (opened && !w->open) {
		say |= POOL_WATCH_OPENED;
		w->open = true;
		w->since_us = now_us;
		w->opens_at_open = s->breaker_opens;
		w->every_us = WATCH_FIRST_NOTE_US;
		w->note_us = now_us + w->every_us;
	} else if (w->open && s->breaker != POOL_BREAKER_CLOSED && now_us >= w->note_us) {
		say |= POOL_WATCH_STILL;
		w->every_us =
		    w->every_us * 2 > WATCH_MAX_NOTE_US ? WATCH_MAX_NOTE_US : w->every_us * 2;
		w->note_us = now_us + w->every_us;
	}
	*open_s = w->open ? (now_us - w->since_us) / 1000000u : 0;
	*reopens = w->open ? s->breaker_opens - w->opens_at_open : 0;
	/* Closed now, even if it opened and closed again since the last look. */
	if (w->open && s->breaker == POOL_BREAKER_CLOSED) {
		say |= POOL_WATCH_CLOSED;
		w->open = false;
	}
	w->opens = s->breaker_opens;
	return say;
}

/* Snapshot of the counters. */
void pool_get_stats(const struct pool *p, struct pool_stats *ret)
{
	*ret = p->stats;
	ret->sessions = p->n_sessions;
	ret->up = sessions_up(p);
	ret->queued = p->queued;
	ret->breaker = p->breaker;
}

/* Overall health from the breaker and the sessions. */
const char *pool_state(const struct pool *p)
{
	unsigned up = sessions_up(p);

	if (p->breaker == POOL_BREAKER_OPEN || up == 0)
		return "down";
	if (p->breaker == POOL_BREAKER_HALF_OPEN || up < p->n_sessions)
		return "degraded";
	return "ok";
}

/* The breaker's name as shown in Status. */
const char *pool_breaker_name(enum pool_breaker b)
{
	switch (b) {
	case POOL_BREAKER_OPEN:
		return "open";
	case POOL_BREAKER_HALF_OPEN:
		return "half-open";
	default:
		return "closed";
	}
}

/* The pool's most recent error. */
const char *pool_last_error(const struct pool *p)
{
	return p->last_error;
}

/* A session state's name as shown in Status. */
static const char *sess_state_name(enum sess_state st)
{
	switch (st) {
	case S_RESOLVING:
	case S_CONNECTING:
		return "connecting";
	case S_HANDSHAKING:
		return "handshaking";
	case S_READY:
		return "ready";
	case S_BUSY:
		return "busy";
	default:
		return "backoff";
	}
}

/* Status object for the admin socket. */
json_t *pool_status_json(const struct pool *p)
{
	json_t *sessions = json_array();

	for (unsigned i = 0; sessions && i < p->n_sessions; i++) {
		const struct session *s = &p->sessions[i];
		const char *suite = NULL;
		if (s->tls && (s->state == S_READY || s->state == S_BUSY))
			suite = tls_conn_ciphersuite(s->tls);
		json_array_append_new(
		    sessions,
		    json_pack("{s:s, s:I, s:I, s:o, s:o}", "state", sess_state_name(s->state),
			      "requests", (json_int_t)s->requests, "reconnects",
			      (json_int_t)s->reconnects, "lastError",
			      s->last_error[0] ? json_string(s->last_error) : json_null(),
			      "ciphersuite", suite ? json_string(suite) : json_null()));
	}
	json_t *cert = json_null();
	if (p->cert_error != TLS_CERT_OK)
		cert = json_pack("{s:s, s:s}", "error", tls_cert_error_name(p->cert_error), "reason",
				 p->cert_reason);
	const char *mode = !p->tls ? "none" : tls_ctx_mode(p->tls) == TLS_MODE_CERT ? "cert" : "psk";
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:o, s:o}", "url", p->url_text, "tls", mode,
			 "state", pool_state(p), "breaker", pool_breaker_name(p->breaker),
			 "queue", (json_int_t)p->queued, "certificate", cert ? cert : json_null(),
			 "sessions", sessions ? sessions : json_array());
}

/* The standing certificate failure, TLS_CERT_OK if none. */
enum tls_cert_error pool_cert_error(const struct pool *p)
{
	return p->cert_error;
}
