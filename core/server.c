/* server: client connections on the station and admin sockets, and the calls they carry. */
#include "server.h"

#include <errno.h>
#include <poll.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "frame.h"
#include "iface.h"
#include "log.h"
#include "message.h"
#include "tpad-build.h"
#include "wipe.h"

/*
 * Past this many unwritten reply bytes a client that does not read is dropped. Below it,
 * limits.max-output and limits.max-output-total stop reading new calls instead.
 */
#define SERVER_MAX_OUTPUT (64u << 20)
/* How often a client that shut its side, with calls still open, is checked for a hang-up. */
#define SERVER_HANGUP_CHECK_MS 250u

/* Who serves, unless server_set_identity() says otherwise: tpad. */
static const struct server_identity tpad_identity = {
    .stopping = "tpad is stopping",
    .kind_names = {"station", "admin"},
    .busy = {"io.tpad.Station.Busy", "io.tpad.Admin.Busy"},
};

struct req {
	TAILQ_ENTRY(req) entry;
	struct conn *conn;
	struct call call;
	struct evbuffer *held; /* replies waiting for earlier calls to finish */
	req_written_fn *written; /* req_when_written(): once the output has been written */
	void *written_arg;
	bool done;
};

TAILQ_HEAD(req_list, req);

struct conn {
	LIST_ENTRY(conn) entry;
	struct server *srv;
	struct bufferevent *bev;
	struct event *idle_timer;
	struct event *msg_timer; /* a message has begun and must end in time */
	struct event *kick;	 /* read calls already buffered once reading resumes */
	struct peer peer;
	struct req_list reqs; /* in call order */
	unsigned n_reqs;
	size_t owed;	/* reply bytes queued or held for this client */
	bool msg_begun; /* msg_timer is armed */
	bool reading;
	bool read_eof; /* the client shut its side: answer its calls, then close */
	bool hung_up;  /* it closed its socket: run its calls, drop their replies, then close */
	bool wrote;    /* some of its output reached the socket since the idle timer started */
	bool closed;
	bool freeing;
};

LIST_HEAD(conn_list, conn);

struct server {
	struct event_base *base;
	const struct server_identity *id;
	struct server_limits lim;
	server_dispatch_fn *dispatch;
	void *dispatch_arg;
	struct conn_list conns;
	struct server_stats stats;
	uint64_t next_conn_id;
	bool stopping;
	struct event *stop_timer;
	struct event *drain_check;
	struct event *resume; /* re-evaluate reading once output drained */
	bool over_total;      /* output_owed is above limits.max-output-total */
	server_drained_fn *drained;
	void *drained_arg;
	unsigned long alloc_failures; /* wipe_alloc_failures() when last looked at */
};

static void conn_close(struct conn *c, const char *reason, bool quiet);
static void conn_mark_hung_up(struct conn *c);
static void server_check_drained(struct server *s);
static void conn_update_reading(struct conn *c);

/* Free a closed connection once no call refers to it; runs from the loop, never inline. */
static void conn_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	event_free(c->idle_timer);
	event_free(c->msg_timer);
	event_free(c->kick);
	free(c);
}

/*
 * Every change in the length of a client's output or held replies: keep the totals that
 * the output limits read, and resume reading once enough has drained.
 */
static void owed_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct conn *c = arg;
	struct server *s = c->srv;
	size_t added = info->n_added, deleted = info->n_deleted;
	c->owed = c->owed + added - deleted;
	s->stats.output_owed = s->stats.output_owed + added - deleted;
	if (!deleted)
		return;
	if (c->bev && buf == bufferevent_get_output(c->bev))
		c->wrote = true; /* the client is reading */
	bool resume = false;
	if (s->over_total && s->stats.output_owed <= s->lim.max_output_total / 2) {
		s->over_total = false;
		resume = true;
	}
	if (!c->reading && !c->closed && c->owed <= s->lim.max_output / 2)
		resume = true;
	if (resume && s->resume)
		event_active(s->resume, EV_TIMEOUT, 0);
}

/* Count buf's bytes as owed to c from now on. */
static int conn_watch_owed(struct conn *c, struct evbuffer *buf)
{
	return evbuffer_add_cb(buf, owed_cb, c) ? 0 : -ENOMEM;
}

/* Schedule the final free of c if it is closed and idle. */
static void conn_maybe_free(struct conn *c)
{
	if (!c->closed || c->n_reqs || c->freeing)
		return;
	c->freeing = true;
	if (event_base_once(c->srv->base, -1, EV_TIMEOUT, conn_free_cb, c, NULL) < 0) {
		/* Without a deferred event the connection leaks; that beats a use after free. */
		log_warnx("cannot schedule the release of connection %llu",
			  (unsigned long long)c->peer.conn_id);
	}
}

/*
 * (Re)start the idle timer of c. A client that shut its side, or that is not read now
 * (limits.max-pending-calls, output owed), would be seen going away entirely only by a
 * write: while it waits for calls that may not answer for long (a following stream), the
 * timer looks for the hang-up more often. A half-closed client whose calls are answered is
 * closed when their replies are written (conn_finish_eof), however slowly it reads them;
 * only then does limits.idle-timeout apply.
 */
static void conn_touch(struct conn *c)
{
	uint32_t ms = c->n_reqs && (c->read_eof || !c->reading) ? SERVER_HANGUP_CHECK_MS
								: c->srv->lim.idle_timeout_ms;
	c->wrote = false;
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	evtimer_add(c->idle_timer, &tv);
}

/* Whether a client that shut its side has since closed the socket altogether. */
static bool conn_hung_up(struct conn *c)
{
	struct pollfd p = {.fd = bufferevent_getfd(c->bev), .events = 0};
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR));
}

/* Write bytes to the client, or drop them if it is gone. */
static void conn_write(struct conn *c, struct evbuffer *buf)
{
	if (c->closed || c->hung_up) {
		evbuffer_drain(buf, evbuffer_get_length(buf));
		return;
	}
	struct evbuffer *out = bufferevent_get_output(c->bev);
	evbuffer_add_buffer(out, buf);
	if (evbuffer_get_length(out) > SERVER_MAX_OUTPUT) {
		c->srv->stats.hit.slow_reader++;
		conn_close(c, "client does not read its replies", false);
	}
}

/*
 * Read new calls only while this client has few enough calls in flight and replies owed,
 * and all clients together owe less than limits.max-output-total.
 */
static void conn_update_reading(struct conn *c)
{
	struct server *s = c->srv;
	if (c->closed)
		return;
	if (s->stats.output_owed > s->lim.max_output_total && !s->over_total) {
		s->over_total = true;
		s->stats.hit.max_output_total++;
	}
	bool out_full = c->owed > s->lim.max_output;
	/* A stopping server still reads, to answer Busy what it will not carry out. */
	bool read =
	    c->n_reqs < s->lim.max_pending_calls && !out_full && !(s->over_total && c->owed > 0);
	if (read == c->reading)
		return;
	c->reading = read;
	if (!read) {
		if (out_full)
			s->stats.hit.max_output++;
		bufferevent_disable(c->bev, EV_READ);
		if (c->n_reqs)
			conn_touch(c); /* look for a hang-up while it is not read */
		return;
	}
	if (!c->read_eof)
		bufferevent_enable(c->bev, EV_READ);
	/* Calls that arrived while reading was off wait in the input buffer: read them now. */
	if (evbuffer_get_length(bufferevent_get_input(c->bev)))
		event_active(c->kick, EV_TIMEOUT, 0);
}

/*
 * A client that shut its side is closed once nothing is left for it: no call in flight,
 * no complete call waiting in the input, every reply written.
 */
static void conn_finish_eof(struct conn *c)
{
	if (!c->read_eof || c->closed || c->n_reqs)
		return;
	if (!c->hung_up && evbuffer_get_length(bufferevent_get_output(c->bev)))
		return; /* conn_write_cb comes back once it is written */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	if (c->reading && evbuffer_search(in, "", 1, NULL).pos >= 0)
		return; /* the kick reads it */
	conn_close(c, "client closed the connection", true);
}

/* Finish the head calls that are done, writing the held replies of the next in order. */
static void conn_flush_reqs(struct conn *c)
{
	struct req *r;
	while ((r = TAILQ_FIRST(&c->reqs))) {
		if (r->held)
			conn_write(c, r->held);
		if (!r->done)
			break;
		TAILQ_REMOVE(&c->reqs, r, entry);
		c->n_reqs--;
		c->srv->stats.calls_in_flight--;
		if (r->held) /* a oneway call or an empty reply never needed one */
			evbuffer_free(r->held);
		call_clear(&r->call);
		free(r);
		if (!c->closed && !c->n_reqs)
			conn_touch(c);
	}
	conn_update_reading(c);
	conn_finish_eof(c);
	conn_maybe_free(c);
	if (c->srv->stopping)
		server_check_drained(c->srv);
}

/*
 * True if an allocation of jansson's (or libevent's, see wipe.h) failed since the server
 * last looked. A reply built meanwhile may lack a key jansson could not add (or be empty:
 * a json_pack that failed), a call decoded meanwhile a character its parser could not
 * keep: neither is sent or served, the connection closes. Under memory pressure this may
 * also catch a failure of other work; that costs a connection, never a wrong answer.
 */
static bool alloc_failed(struct server *s)
{
	unsigned long n = wipe_alloc_failures();
	bool failed = n != s->alloc_failures;
	s->alloc_failures = n;
	return failed;
}

/* msg, or NULL (msg wiped and freed) if it was built or encoded while an allocation failed. */
static char *reply_whole(struct server *s, char *msg)
{
	if (alloc_failed(s) && msg) {
		wipe_free(msg);
		return NULL;
	}
	return msg;
}

/* Queue one encoded message as r's reply. */
static void req_send(struct req *r, char *msg, size_t len, bool final)
{
	struct conn *c = r->conn;
	if (!msg) {
		/* Out of memory: the client cannot get a well-formed answer any more. */
		conn_close(c, "out of memory building a reply", false);
	} else if (!c->closed) {
		if (!r->held && (r->held = evbuffer_new()) && conn_watch_owed(c, r->held) < 0) {
			evbuffer_free(r->held);
			r->held = NULL;
		}
		if (!r->held || frame_push(r->held, msg, len) < 0)
			conn_close(c, "out of memory queueing a reply", false);
	}
	wipe_free(msg); /* a reply may carry an AppKey */
	if (final)
		r->done = true;
	if (r == TAILQ_FIRST(&c->reqs) || final)
		conn_flush_reqs(c);
}

const char *req_method(const struct req *r)
{
	return r->call.method;
}

json_t *req_params(const struct req *r)
{
	return r->call.parameters;
}

bool req_more(const struct req *r)
{
	return r->call.more;
}

bool req_oneway(const struct req *r)
{
	return r->call.oneway;
}

const struct peer *req_peer(const struct req *r)
{
	return &r->conn->peer;
}

bool req_gone(const struct req *r)
{
	return r->conn->closed || r->conn->hung_up;
}

size_t req_output_pending(const struct req *r)
{
	if (r->conn->closed || r->conn->hung_up)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(r->conn->bev)) +
	       (r->held ? evbuffer_get_length(r->held) : 0);
}

void req_when_written(struct req *r, req_written_fn *fn, void *arg)
{
	r->written = fn;
	r->written_arg = arg;
}

void req_reply(struct req *r, json_t *params, bool continues)
{
	size_t len = 0;
	bool oneway = r->call.oneway;
	char *msg = oneway ? NULL : reply_encode(params, continues && r->call.more, &len);
	json_decref(params);
	msg = reply_whole(r->conn->srv, msg);
	if (oneway) {
		if (!continues) {
			r->done = true;
			conn_flush_reqs(r->conn);
		}
		return;
	}
	req_send(r, msg, len, !(continues && r->call.more));
}

void req_reply_text(struct req *r, const char *params, size_t len, bool continues)
{
	bool more = continues && r->call.more;
	if (r->call.oneway) {
		req_reply(r, NULL, continues);
		return;
	}
	static const char head[] = "{\"parameters\":", tail[] = ",\"continues\":true}";
	size_t n = sizeof(head) - 1 + len + (more ? sizeof(tail) - 1 : 1);
	char *msg = malloc(n + 1);
	if (msg) {
		memcpy(msg, head, sizeof(head) - 1);
		memcpy(msg + sizeof(head) - 1, params, len);
		if (more)
			memcpy(msg + sizeof(head) - 1 + len, tail, sizeof(tail));
		else
			memcpy(msg + sizeof(head) - 1 + len, "}", 2);
	}
	req_send(r, msg, n, !more);
}

void req_error(struct req *r, const char *error, json_t *params)
{
	size_t len = 0;
	bool oneway = r->call.oneway;
	char *msg = oneway ? NULL : error_encode(error, params, &len);
	json_decref(params);
	msg = reply_whole(r->conn->srv, msg);
	if (oneway) {
		r->done = true;
		conn_flush_reqs(r->conn);
		return;
	}
	req_send(r, msg, len, true);
}

/* Answer a message that could not even be decoded, in call order, without dispatch. */
static void conn_reject(struct conn *c, const struct proto_fault *f)
{
	struct req *r = calloc(1, sizeof(*r));
	if (!r) {
		conn_close(c, "out of memory", false);
		return;
	}
	r->conn = c;
	r->call.oneway = f->oneway;
	TAILQ_INSERT_TAIL(&c->reqs, r, entry);
	c->n_reqs++;
	c->srv->stats.calls_in_flight++;
	req_error(r, f->error, proto_fault_parameters(f));
}

/*
 * Bound the time one message may take: armed by its first byte, disarmed by its end, so
 * a client that trickles bytes cannot hold its connection (bytes alone are no activity).
 */
static void conn_watch_message(struct conn *c)
{
	if (c->closed)
		return;
	bool partial = evbuffer_get_length(bufferevent_get_input(c->bev)) > 0;
	if (partial && !c->msg_begun) {
		struct timeval tv = {
		    .tv_sec = c->srv->lim.message_timeout_ms / 1000,
		    .tv_usec = (c->srv->lim.message_timeout_ms % 1000) * 1000,
		};
		evtimer_add(c->msg_timer, &tv);
		c->msg_begun = true;
	} else if (!partial && c->msg_begun) {
		evtimer_del(c->msg_timer);
		c->msg_begun = false;
	}
}

/* Read as many complete messages as are buffered and dispatch each. */
static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct server *s = c->srv;
	struct evbuffer *in = bufferevent_get_input(bev);
	bool completed = false;

	while (!c->closed && c->reading && c->n_reqs < s->lim.max_pending_calls) {
		char *msg = NULL;
		size_t len = 0;
		int r = frame_pop(in, s->lim.max_message, &msg, &len);
		if (r == 0)
			break;
		if (r == -EMSGSIZE) {
			s->stats.hit.max_message++;
			conn_close(c, "message larger than limits.max-message", false);
			return;
		}
		if (r < 0) {
			conn_close(c, "out of memory reading a message", false);
			return;
		}
		/* A complete message restarts the clocks; a later partial one arms its own. */
		completed = true;
		evtimer_del(c->msg_timer);
		c->msg_begun = false;
		struct req *q = calloc(1, sizeof(*q));
		if (!q) {
			wipe_free(msg);
			conn_close(c, "out of memory", false);
			return;
		}
		struct proto_fault fault;
		alloc_failed(s);
		int d = call_decode(msg, len, &q->call, &fault);
		wipe_free(msg); /* a call may carry an AppKey */
		if (alloc_failed(s)) {
			if (d == 0)
				call_clear(&q->call);
			d = -ENOMEM;
		}
		if (d == -ENOMEM) {
			/* No fault was set: there is nothing to answer the call with. */
			free(q);
			conn_close(c, "out of memory reading a message", false);
			return;
		}
		if (d < 0) {
			free(q);
			log_debug("%s client %llu: bad message: %s",
				  c->srv->id->kind_names[c->peer.kind],
				  (unsigned long long)c->peer.conn_id, fault.reason);
			conn_reject(c, &fault);
			continue;
		}
		q->conn = c;
		TAILQ_INSERT_TAIL(&c->reqs, q, entry);
		c->n_reqs++;
		s->stats.calls++;
		s->stats.calls_in_flight++;
		if (s->stopping) {
			/*
			 * Sent before the client saw the stop: closing with it unread would reset
			 * the connection, and the client could not tell it was never carried out.
			 */
			const char *m = q->call.method;
			log_info("%s client %llu (uid %u pid %d): %s answered %s: %s",
				 s->id->kind_names[c->peer.kind],
				 (unsigned long long)c->peer.conn_id, (unsigned)c->peer.uid,
				 (int)c->peer.pid, proto_method_find(m) ? m : "a call",
				 s->id->busy[c->peer.kind], s->id->stopping);
			req_error(q, s->id->busy[c->peer.kind], json_object());
			continue;
		}
		s->dispatch(q, s->dispatch_arg);
	}
	if (c->closed)
		return;
	if (completed)
		conn_touch(c);
	if (c->n_reqs >= s->lim.max_pending_calls)
		s->stats.hit.max_pending_calls++;
	conn_update_reading(c);
	conn_watch_message(c);
}

/* Reading resumed with calls already in the input buffer. */
static void conn_kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if (!c->closed && c->reading)
		conn_read_cb(c->bev, c);
}

/* A message was begun and not finished within limits.message-timeout. */
static void conn_msg_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	c->msg_begun = false;
	if (!c->reading) {
		/* Complete calls wait for reading to resume; that is tpad's doing, not a trickle.
		 */
		return;
	}
	c->srv->stats.hit.message_timeout++;
	conn_close(c, "message not completed within limits.message-timeout", false);
}

/*
 * Once output has drained: a call paused for its client to read (req_when_written) goes
 * on, and a stopping server may be done. The connection outlives a close made meanwhile
 * (conn_maybe_free frees from the loop).
 */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct server *s = c->srv;
	conn_finish_eof(c);
	struct req *r;
	TAILQ_FOREACH(r, &c->reqs, entry)
	{
		if (c->closed || r->done || !r->written)
			continue;
		req_written_fn *fn = r->written;
		r->written = NULL;
		fn(r->written_arg); /* may finish r, or close c: neither is read after */
		break;
	}
	if (s->stopping)
		server_check_drained(s);
}

/* End of file or a socket error from the client. */
static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
		/*
		 * The client may only have shut its side (a pipe into socat, say) and still
		 * wait for the answers of its calls: they are sent, then the connection closes.
		 * One that closed the socket altogether (a stream's client that quit) is gone.
		 */
		c->read_eof = true;
		bufferevent_disable(bev, EV_READ);
		if (conn_hung_up(c))
			conn_mark_hung_up(c);
		conn_finish_eof(c);
		if (!c->closed)
			conn_touch(c);
		return;
	}
	if (what & BEV_EVENT_EOF)
		conn_close(c, "client closed the connection", true);
	else if (what & BEV_EVENT_ERROR)
		conn_close(c, strerror(EVUTIL_SOCKET_ERROR()), false);
}

/* Close on idle, but never while calls are in flight unless the client is gone. */
static void conn_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;
	if ((c->read_eof || !c->reading) && !c->hung_up && conn_hung_up(c)) {
		conn_mark_hung_up(c);
		conn_finish_eof(c);
		if (!c->closed)
			conn_touch(c);
		return;
	}
	if (c->n_reqs) {
		conn_touch(c);
		return;
	}
	/* Replies still being written to a client that reads them, however slowly: not idle. */
	if (c->wrote && evbuffer_get_length(bufferevent_get_output(c->bev))) {
		conn_touch(c);
		return;
	}
	c->srv->stats.hit.idle_timeout++;
	conn_close(c, "idle timeout", false);
}

/*
 * Replies nobody will read: what is queued and what is held for calls in flight no longer
 * counts against the output limits.
 */
static void conn_drop_output(struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	if (evbuffer_remove_cb(out, owed_cb, c) == 0) { /* not dropped already */
		/* libevent freezes the start of a socket bufferevent's output, so
		 * evbuffer_drain() removes nothing there: account for the unsent bytes. */
		struct evbuffer_cb_info gone = {.n_deleted = evbuffer_get_length(out)};
		if (gone.n_deleted)
			owed_cb(out, &gone, c);
	}
	struct req *r;
	TAILQ_FOREACH(r, &c->reqs, entry)
	if (r->held)
		evbuffer_drain(r->held, evbuffer_get_length(r->held));
}

/*
 * The client closed its socket altogether. The calls it sent still run — a oneway call is
 * sent and left —, the complete ones buffered or still unread included, but their replies
 * go nowhere and streams see req_gone() and end; the connection closes once none is left
 * (conn_finish_eof()).
 */
static void conn_mark_hung_up(struct conn *c)
{
	if (c->hung_up || c->closed)
		return;
	c->hung_up = true;
	conn_drop_output(c);
	bufferevent_disable(c->bev, EV_WRITE);
}

/* The one way a connection ends: log why, release the socket, free later. */
static void conn_close(struct conn *c, const char *reason, bool quiet)
{
	if (c->closed)
		return;
	c->closed = true;
	if (quiet)
		log_debug("%s client %llu (uid %u pid %d): %s",
			  c->srv->id->kind_names[c->peer.kind], (unsigned long long)c->peer.conn_id,
			  (unsigned)c->peer.uid, (int)c->peer.pid, reason);
	else
		log_info("%s client %llu (uid %u pid %d) closed: %s",
			 c->srv->id->kind_names[c->peer.kind], (unsigned long long)c->peer.conn_id,
			 (unsigned)c->peer.uid, (int)c->peer.pid, reason);
	conn_drop_output(c);
	bufferevent_free(c->bev);
	c->bev = NULL;
	c->reading = false;
	evtimer_del(c->idle_timer);
	evtimer_del(c->msg_timer);
	event_del(c->kick);
	LIST_REMOVE(c, entry);
	c->srv->stats.connections[c->peer.kind]--;
	conn_maybe_free(c);
	if (c->srv->stopping)
		server_check_drained(c->srv);
}

/* Best effort: tell a refused client why before closing its socket. */
static void refuse(int fd, const char *error)
{
	char msg[160];
	int n = snprintf(msg, sizeof(msg), "{\"error\":\"%s\",\"parameters\":{}}", error);
	if (n > 0 && (size_t)n < sizeof(msg))
		(void)!send(fd, msg, (size_t)n + 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

/* Number of open connections of one uid, and of one process. */
static void conns_of(const struct server *s, const struct ucred *cred, unsigned *ret_uid,
		     unsigned *ret_pid)
{
	unsigned nu = 0, np = 0;
	const struct conn *c;
	LIST_FOREACH(c, &s->conns, entry)
	{
		if (c->peer.uid == cred->uid)
			nu++;
		if (c->peer.pid == cred->pid && c->peer.uid == cred->uid)
			np++;
	}
	*ret_uid = nu;
	*ret_pid = np;
}

/*
 * Slots of limits.max-clients only the admin socket may take, so that the clients of the
 * other (several users together, which limits.max-clients-per-uid cannot stop) never lock
 * the admin out: an eighth, 1 to 16; none below 4.
 */
static uint32_t admin_reserve(uint32_t max_clients)
{
	if (max_clients < 4)
		return 0;
	uint32_t r = max_clients / 8;
	return r < 1 ? 1 : r > 16 ? 16 : r;
}

void server_accept(struct server *s, int fd, enum sock_kind kind)
{
	struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
	socklen_t clen = sizeof(cred);
	const char *busy = s->id->busy[kind];

	if (s->stopping) {
		close(fd);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) < 0) {
		log_warn_errno(-errno, "cannot read peer credentials of a %s client",
			       s->id->kind_names[kind]);
		close(fd);
		return;
	}
	uint32_t total = s->stats.connections[0] + s->stats.connections[1];
	if (total >= s->lim.max_clients) {
		s->stats.hit.max_clients++;
		log_warnx("refused %s client (uid %u pid %d): limits.max-clients (%u) reached",
			  s->id->kind_names[kind], (unsigned)cred.uid, (int)cred.pid,
			  s->lim.max_clients);
		refuse(fd, busy);
		return;
	}
	uint32_t reserve = admin_reserve(s->lim.max_clients);
	if (kind == SOCK_STATION &&
	    s->stats.connections[SOCK_STATION] + reserve >= s->lim.max_clients) {
		s->stats.hit.max_clients++;
		log_warnx(
		    "refused %s client (uid %u pid %d): limits.max-clients (%u) reached but the "
		    "%u kept for the admin socket",
		    s->id->kind_names[kind], (unsigned)cred.uid, (int)cred.pid, s->lim.max_clients,
		    reserve);
		refuse(fd, busy);
		return;
	}
	unsigned of_uid, of_pid;
	conns_of(s, &cred, &of_uid, &of_pid);
	if (of_pid >= s->lim.max_clients_per_process) {
		s->stats.hit.max_clients_per_process++;
		log_warnx("refused %s client (uid %u pid %d): limits.max-clients-per-process (%u) "
			  "reached",
			  s->id->kind_names[kind], (unsigned)cred.uid, (int)cred.pid,
			  s->lim.max_clients_per_process);
		refuse(fd, busy);
		return;
	}
	if (of_uid >= s->lim.max_clients_per_uid) {
		s->stats.hit.max_clients_per_uid++;
		log_warnx("refused %s client (uid %u pid %d): limits.max-clients-per-uid (%u) "
			  "reached",
			  s->id->kind_names[kind], (unsigned)cred.uid, (int)cred.pid,
			  s->lim.max_clients_per_uid);
		refuse(fd, busy);
		return;
	}

	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	TAILQ_INIT(&c->reqs);
	c->peer = (struct peer){.uid = cred.uid,
				.gid = cred.gid,
				.pid = cred.pid,
				.kind = kind,
				.conn_id = ++s->next_conn_id};
	evutil_make_socket_nonblocking(fd);
	c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
	c->idle_timer = evtimer_new(s->base, conn_idle_cb, c);
	c->msg_timer = evtimer_new(s->base, conn_msg_timeout_cb, c);
	c->kick = event_new(s->base, -1, 0, conn_kick_cb, c);
	if (!c->bev || !c->idle_timer || !c->msg_timer || !c->kick ||
	    conn_watch_owed(c, bufferevent_get_output(c->bev)) < 0) {
		if (c->bev)
			bufferevent_free(c->bev);
		else
			close(fd);
		if (c->idle_timer)
			event_free(c->idle_timer);
		if (c->msg_timer)
			event_free(c->msg_timer);
		if (c->kick)
			event_free(c->kick);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	c->reading = true;
	LIST_INSERT_HEAD(&s->conns, c, entry);
	s->stats.connections[kind]++;
	s->stats.accepted[kind]++;
	conn_touch(c);
	log_debug("%s client %llu connected (uid %u gid %u pid %d)", s->id->kind_names[kind],
		  (unsigned long long)c->peer.conn_id, (unsigned)cred.uid, (unsigned)cred.gid,
		  (int)cred.pid);
}

/* Output drained somewhere: let every client that may read again do so. */
static void server_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct conn *c;
	LIST_FOREACH(c, &s->conns, entry)
	conn_update_reading(c);
}

struct server *server_new(struct event_base *base, const struct server_limits *lim,
			  server_dispatch_fn *dispatch, void *arg)
{
	struct server *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base = base;
	s->id = &tpad_identity;
	s->lim = *lim;
	s->dispatch = dispatch;
	s->dispatch_arg = arg;
	LIST_INIT(&s->conns);
	s->resume = event_new(base, -1, 0, server_resume_cb, s);
	if (!s->resume) {
		free(s);
		return NULL;
	}
	return s;
}

void server_set_limits(struct server *s, const struct server_limits *lim)
{
	s->lim = *lim;
	event_active(s->resume, EV_TIMEOUT, 0);
}

/* True when no call is in flight and no reply is waiting to be written. */
static bool server_idle(const struct server *s)
{
	const struct conn *c;
	LIST_FOREACH(c, &s->conns, entry)
	{
		if (c->n_reqs)
			return false;
		if (evbuffer_get_length(bufferevent_get_output(c->bev)))
			return false;
	}
	return s->stats.calls_in_flight == 0;
}

/* Close every client and tell the owner the server has drained. */
static void server_finish_stop(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct conn *c;
	while ((c = LIST_FIRST(&s->conns)))
		conn_close(c, c->srv->id->stopping, true);
	if (s->stop_timer)
		evtimer_del(s->stop_timer);
	server_drained_fn *fn = s->drained;
	s->drained = NULL;
	if (fn)
		fn(s->drained_arg);
}

/* Called whenever a stopping server may have become idle. */
static void server_check_drained(struct server *s)
{
	if (s->drained && server_idle(s) && s->drain_check)
		event_active(s->drain_check, EV_TIMEOUT, 0);
}

void server_stop(struct server *s, uint32_t timeout_ms, server_drained_fn *drained, void *arg)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->drained = drained;
	s->drained_arg = arg;
	struct conn *c;
	LIST_FOREACH(c, &s->conns, entry)
	conn_update_reading(c);
	s->drain_check = event_new(s->base, -1, 0, server_finish_stop, s);
	s->stop_timer = evtimer_new(s->base, server_finish_stop, s);
	if (!s->drain_check || !s->stop_timer) {
		server_finish_stop(-1, 0, s);
		return;
	}
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	evtimer_add(s->stop_timer, &tv);
	server_check_drained(s);
}

void server_set_identity(struct server *s, const struct server_identity *id)
{
	s->id = id;
}

void server_free(struct server *s)
{
	if (!s)
		return;
	struct conn *c;
	while ((c = LIST_FIRST(&s->conns)))
		conn_close(c, c->srv->id->stopping, true);
	if (s->stop_timer)
		event_free(s->stop_timer);
	if (s->drain_check)
		event_free(s->drain_check);
	event_free(s->resume);
	free(s);
}

void server_get_stats(const struct server *s, struct server_stats *ret)
{
	*ret = s->stats;
}

void req_reply_info(struct req *r, const char *product, unsigned sock)
{
	json_t *ifaces = json_array();
	for (const char *const *n = iface_names(); *n; n++)
		if (iface_sockets(*n) & sock)
			json_array_append_new(ifaces, json_string(*n));
	req_reply(r,
		  json_pack("{s:s, s:s, s:s, s:s, s:o}", "vendor", "tpad project", "product",
			    product, "version", TPAD_VERSION, "url",
			    "https://github.com/tpad-project/tpad", "interfaces", ifaces),
		  false);
}

void req_reply_interface_description(struct req *r, unsigned sock)
{
	const char *name = json_string_value(json_object_get(req_params(r), "interface"));
	const char *text = name ? iface_description(name) : NULL;
	if (!text || !(iface_sockets(name) & sock)) {
		req_error(r, PROTO_ERR_INTERFACE_NOT_FOUND,
			  json_pack("{s:s}", "interface", name ? name : ""));
		return;
	}
	req_reply(r, json_pack("{s:s}", "description", text), false);
}
