/*
 * Unit tests of core/httpd's connections, plain (they read their sockets themselves) and,
 * for answers out of memory, filtered as TLS makes them: the input a client may have
 * waiting is bounded (max_body + headers + 64 KiB), and reading goes on once the requests
 * are taken, also after an answer that ends the connection; a connection whose input
 * cannot grow, or whose answer cannot be queued (out of memory), is closed, the others
 * served. Client and server run in this process over loopback; the loop is turned by hand.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "http.h"
#include "httpd.h"
#include "tap.h"

#define MAX_BODY 1024
/* What the server holds unread at most: max_body + the header section + 64 KiB. */
#define HIGH (MAX_BODY + HTTP_MAX_HEADERS + (64 << 10))

/* While armed, libevent's allocations fail (event_set_mem_functions), and are counted. */
static bool fail_armed;
static unsigned long fail_count;

static void *mm_malloc(size_t n)
{
	if (fail_armed) {
		fail_count++;
		return NULL;
	}
	return malloc(n);
}

static void *mm_realloc(void *p, size_t n)
{
	if (fail_armed) {
		fail_count++;
		return NULL;
	}
	return realloc(p, n);
}

struct held {
	struct httpd_req *req[16384];
	size_t n;
};

/* Keep every request unanswered: the test answers them. */
static void hold(struct httpd_req *r, void *arg)
{
	struct held *h = arg;
	if (h->n < sizeof(h->req) / sizeof(h->req[0]))
		h->req[h->n++] = r;
	else
		httpd_reply(r, 500, NULL, NULL, 0);
}

struct rig {
	struct event_base *base;
	struct held *h;
	struct httpd *s;
};

/* A server whose connections are plain (bev NULL) or made by bev. */
static bool rig_open_bev(struct rig *r, httpd_bev_fn *bev)
{
	struct httpd_options o = {.name = "test",
				  .host = "127.0.0.1",
				  .max_body = MAX_BODY,
				  .timeout_ms = 30000,
				  .bev = bev};
	char err[256] = "";
	r->base = event_base_new();
	r->h = calloc(1, sizeof(*r->h));
	r->s = r->base && r->h ? httpd_new(r->base, &o, hold, r->h, err, sizeof(err)) : NULL;
	CHECK(r->s != NULL);
	if (r->s)
		return true;
	fprintf(stderr, "httpd_new: %s\n", err);
	if (r->base)
		event_base_free(r->base);
	free(r->h);
	return false;
}

static bool rig_open(struct rig *r)
{
	return rig_open_bev(r, NULL);
}

/* A filter over a socket bufferevent, as a TLS server makes, passing the bytes through. */
static struct bufferevent *pass_bev(struct event_base *base, void *arg)
{
	struct bufferevent *under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!under)
		return NULL;
	struct bufferevent *bev =
	    bufferevent_filter_new(under, NULL, NULL, BEV_OPT_CLOSE_ON_FREE, NULL, NULL);
	if (!bev)
		bufferevent_free(under);
	return bev;
}

/* The client closed: turn the loop until the server has closed too (1 s at most). */
static void rig_close(struct rig *r)
{
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		event_base_loop(r->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while (httpd_connections(r->s) &&
		 (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
	CHECK_INT(httpd_connections(r->s), 0);
	httpd_free(r->s);
	event_base_free(r->base);
	free(r->h);
}

static int dial(uint16_t port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("connect");
		exit(1);
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

/*
 * Run what is ready now, a pass at a time (a descriptor that stays ready cannot hold a
 * pass), over and over: loopback delivers at once, no timer is awaited.
 */
static void settle(struct event_base *base)
{
	for (int i = 0; i < 100; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Send what the socket takes of data[*off..len) without waiting; true if any went. */
static bool push(int fd, const char *data, size_t len, size_t *off)
{
	bool any = false;
	while (*off < len) {
		ssize_t n = send(fd, data + *off, len - *off, MSG_NOSIGNAL);
		if (n <= 0)
			break;
		*off += (size_t)n;
		any = true;
	}
	return any;
}

/* Count the answers' status lines read so far (a line may straddle two reads). */
static size_t drain_answers(int fd, char *carry, size_t *carried, bool *eof)
{
	static const char mark[] = "HTTP/1.1 200 OK\r\n";
	size_t found = 0;
	char buf[65536 + sizeof(mark)];
	for (;;) {
		memcpy(buf, carry, *carried);
		ssize_t n = recv(fd, buf + *carried, 65536, 0);
		if (n == 0)
			*eof = true;
		if (n <= 0)
			return found;
		size_t len = *carried + (size_t)n;
		for (const char *p = buf;
		     (p = memmem(p, len - (size_t)(p - buf), mark, sizeof(mark) - 1)); p++)
			found++;
		*carried = len < sizeof(mark) - 1 ? len : sizeof(mark) - 2;
		memcpy(carry, buf + len - *carried, *carried);
	}
}

/*
 * 9,000 requests pipelined (315 KB, almost four times what the server holds), each
 * answered only after it is dispatched: reading pauses at the bound and goes on as the
 * requests are taken; every one is dispatched once and answered, in one connection.
 */
static void test_a_long_pipeline_is_read_in_bounded_steps(void)
{
	struct rig r;
	if (!rig_open(&r))
		return;
	static const char one[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
	size_t n = 9000, len = n * (sizeof(one) - 1), off = 0, answered = 0, answers = 0;
	char *all = malloc(len);
	for (size_t i = 0; i < n; i++)
		memcpy(all + i * (sizeof(one) - 1), one, sizeof(one) - 1);
	int fd = dial(httpd_port(r.s));
	char carry[32];
	size_t carried = 0;
	bool eof = false;
	for (int idle = 0; answers < n && idle < 1000;) {
		bool moved = push(fd, all, len, &off);
		settle(r.base);
		CHECK(r.h->n - answered <= 1); /* one request at a time */
		if (r.h->n > answered) {
			httpd_reply(r.h->req[answered++], 200, NULL, "ok", 2);
			moved = true;
		}
		size_t got = drain_answers(fd, carry, &carried, &eof);
		answers += got;
		idle = moved || got ? 0 : idle + 1;
	}
	CHECK_INT(off, len);
	CHECK_INT(r.h->n, n);
	CHECK_INT(answers, n);
	CHECK(!eof);
	CHECK_INT(httpd_connections(r.s), 1);
	close(fd);
	rig_close(&r);
	free(all);
}

/*
 * A request that ends the connection, followed by more than the server holds: the answer
 * comes once the server has paused reading; it then shuts its side and reads the rest
 * away (closing with unread input would reset the answer). It notices the client's close
 * at once, not LINGER_MS (2 s) later.
 */
static void test_a_closing_answer_reads_away_a_full_input(void)
{
	struct rig r;
	if (!rig_open(&r))
		return;
	static const char req[] = "GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
	size_t len = sizeof(req) - 1 + 200 * HIGH, off = 0; /* 16 MB */
	char *all = malloc(len);
	memcpy(all, req, sizeof(req) - 1);
	memset(all + sizeof(req) - 1, 'x', len - (sizeof(req) - 1));
	int fd = dial(httpd_port(r.s));
	/* Send until neither side moves: the server holds HIGH bytes and reads no more. */
	for (int idle = 0; idle < 50;) {
		bool moved = push(fd, all, len, &off);
		settle(r.base);
		idle = moved ? 0 : idle + 1;
	}
	CHECK_INT(r.h->n, 1);
	CHECK(off >= sizeof(req) - 1 + HIGH); /* the server's input reached its bound */
	CHECK(off < len); /* and it stopped reading there (the kernel holds about 4 MB) */
	httpd_reply(r.h->req[0], 200, NULL, "ok", 2);
	char carry[32];
	size_t carried = 0, answers = 0;
	bool eof = false;
	for (int i = 0; i < 1000 && !eof; i++) {
		settle(r.base);
		answers += drain_answers(fd, carry, &carried, &eof);
		push(fd, all, len, &off); /* the rest goes too: the server drops it */
	}
	CHECK_INT(answers, 1);
	CHECK(eof);
	CHECK_INT(httpd_connections(r.s), 1); /* lingering: reading what comes */
	close(fd);
	rig_close(&r); /* it reads away what the kernel held, then sees the close */
	free(all);
}

/* Whether the peer closed fd (an end of file or a reset), reading what is left. */
static bool peer_closed(int fd)
{
	char buf[4096];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			return true;
		if (n < 0)
			return false;
	}
}

/* A request on fd is dispatched, its answer arrives, and the connection stays open. */
static void served(struct rig *r, int fd)
{
	static const char one[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
	size_t off = 0, before = r->h->n, carried = 0;
	char carry[32];
	bool eof = false;
	push(fd, one, sizeof(one) - 1, &off);
	settle(r->base);
	CHECK_INT(r->h->n, before + 1);
	if (r->h->n == before + 1)
		httpd_reply(r->h->req[before], 200, NULL, "ok", 2);
	settle(r->base);
	CHECK_INT(drain_answers(fd, carry, &carried, &eof), 1);
	CHECK(!eof);
}

/*
 * A connection whose input cannot take a request (libevent's allocation fails) is closed,
 * as a read error; nothing of it is dispatched, and another connection is served as before.
 */
static void test_no_memory_for_input_closes_that_connection_only(void)
{
	struct rig r;
	if (!rig_open(&r))
		return;
	static const char one[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
	size_t off = 0, carried = 0;
	char carry[32];
	bool eof = false;
	int a = dial(httpd_port(r.s)), b = dial(httpd_port(r.s));
	push(a, one, sizeof(one) - 1, &off);
	settle(r.base);
	CHECK_INT(r.h->n, 1);
	CHECK_INT(httpd_connections(r.s), 2);
	if (r.h->n == 1)
		httpd_reply(r.h->req[0], 200, NULL, "ok", 2);
	settle(r.base);
	CHECK_INT(drain_answers(a, carry, &carried, &eof), 1);

	/* The answered request left the input empty: the next one needs new space. */
	fail_count = 0;
	fail_armed = true;
	off = 0;
	push(a, one, sizeof(one) - 1, &off);
	settle(r.base);
	fail_armed = false;
	CHECK(fail_count > 0);
	CHECK_INT(r.h->n, 1); /* nothing more dispatched */
	CHECK_INT(httpd_connections(r.s), 1);
	CHECK(peer_closed(a));
	close(a);

	served(&r, b);
	close(b);
	rig_close(&r);
}

/*
 * An answer that cannot be queued whole (libevent's allocation fails) closes that
 * connection: the client sees the close before the answer's end (it cannot take a cut
 * answer for a whole one), and the other connection is served. Plain: an 8 MiB answer to
 * a client that does not read yet, so that the socket takes only part of it at once;
 * filtered (as TLS): every answer is queued.
 */
static void no_memory_for_an_answer(httpd_bev_fn *bev, size_t len)
{
	struct rig r;
	if (!rig_open_bev(&r, bev))
		return;
	static const char one[] = "GET /x HTTP/1.1\r\nHost: t\r\n\r\n";
	char *body = malloc(len);
	memset(body, 'x', len);
	int a = dial(httpd_port(r.s)), b = dial(httpd_port(r.s));
	size_t off = 0;
	push(a, one, sizeof(one) - 1, &off);
	settle(r.base);
	CHECK_INT(r.h->n, 1);
	CHECK_INT(httpd_connections(r.s), 2);
	fail_count = 0;
	fail_armed = true;
	if (r.h->n == 1)
		httpd_reply(r.h->req[0], 200, NULL, body, len);
	fail_armed = false;
	CHECK(fail_count > 0);
	settle(r.base);
	CHECK_INT(httpd_connections(r.s), 1);
	size_t got = 0;
	char buf[65536];
	for (;;) {
		ssize_t n = recv(a, buf, sizeof(buf), 0);
		if (n <= 0) {
			CHECK(n == 0 || errno == ECONNRESET);
			break;
		}
		got += (size_t)n;
	}
	CHECK(got < len); /* closed before the answer's end */
	close(a);

	served(&r, b);
	close(b);
	rig_close(&r);
	free(body);
}

static void test_no_memory_for_an_answer_closes_that_connection_only(void)
{
	no_memory_for_an_answer(NULL, 8 << 20);
	no_memory_for_an_answer(pass_bev, 2);
}

int main(void)
{
	/* Before any other libevent call: every allocation of it goes through these. */
	event_set_mem_functions(mm_malloc, mm_realloc, free);
	test_a_long_pipeline_is_read_in_bounded_steps();
	test_a_closing_answer_reads_away_a_full_input();
	test_no_memory_for_input_closes_that_connection_only();
	test_no_memory_for_an_answer_closes_that_connection_only();
	return tap_done();
}
