/* delay-proxy: a TCP proxy that delays each direction by a fixed time, to simulate a WAN. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#define READ_CHUNK 65536
#define QUEUE_MAX (4 * 1024 * 1024) /* stop reading a side with this much in flight */

/* Bytes read at one moment, or the end of the stream when len is 0 and eof is set. */
struct chunk {
	struct chunk *next;
	uint64_t due_ms;
	bool eof;
	size_t len;
	char data[];
};

struct proxy;

/* One direction of a proxied connection: read from from_fd, write to to_fd later. */
struct dir {
	struct proxy *p;
	int from_fd, to_fd;
	struct event *rd, *wr, *timer;
	struct chunk *head, *tail;
	struct evbuffer *out; /* due bytes not yet written */
	size_t queued;	      /* bytes in chunks and out */
	bool reading;
	bool shut_pending; /* the end of stream is due: shut down to_fd once out is empty */
	bool done;	   /* to_fd was shut down */
};

/* A client connection and its connection to the target. */
struct proxy {
	int cfd, sfd;
	bool connected;
	struct event *connect_ev;
	struct dir up, down;
};

static struct event_base *base;
static unsigned delay_ms;
static struct sockaddr_in target;

/* The monotonic clock in milliseconds. */
static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Free one direction's events and queue. */
static void dir_free(struct dir *d)
{
	if (d->rd)
		event_free(d->rd);
	if (d->wr)
		event_free(d->wr);
	if (d->timer)
		event_free(d->timer);
	while (d->head) {
		struct chunk *c = d->head;
		d->head = c->next;
		free(c);
	}
	if (d->out)
		evbuffer_free(d->out);
}

/* Tear the whole proxied connection down. */
static void proxy_free(struct proxy *p)
{
	dir_free(&p->up);
	dir_free(&p->down);
	if (p->connect_ev)
		event_free(p->connect_ev);
	close(p->cfd);
	close(p->sfd);
	free(p);
}

/* Both directions ended cleanly: close. Returns true if p was freed. */
static bool proxy_maybe_done(struct proxy *p)
{
	if (p->up.done && p->down.done) {
		proxy_free(p);
		return true;
	}
	return false;
}

/* Start or stop reading the source side according to the amount in flight. */
static void dir_update_reading(struct dir *d)
{
	bool want = !d->shut_pending && d->from_fd >= 0 && d->queued < QUEUE_MAX;
	if (d->head && d->tail->eof)
		want = false;
	if (want && !d->reading)
		event_add(d->rd, NULL);
	else if (!want && d->reading)
		event_del(d->rd);
	d->reading = want;
}

/* Write the due bytes; returns false if p was freed. */
static bool dir_flush(struct dir *d)
{
	struct proxy *p = d->p;
	if (!p->connected)
		return true;
	while (evbuffer_get_length(d->out) > 0) {
		int n = evbuffer_write(d->out, d->to_fd);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			event_add(d->wr, NULL);
			return true;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			proxy_free(p);
			return false;
		}
		d->queued -= (size_t)n;
	}
	event_del(d->wr);
	if (d->shut_pending && !d->done) {
		shutdown(d->to_fd, SHUT_WR);
		d->done = true;
		if (proxy_maybe_done(p))
			return false;
	}
	dir_update_reading(d);
	return true;
}

/* Move the chunks whose time has come into the output and arm the timer for the next. */
static void dir_release(struct dir *d)
{
	uint64_t now = now_ms();
	while (d->head && d->head->due_ms <= now) {
		struct chunk *c = d->head;
		d->head = c->next;
		if (!d->head)
			d->tail = NULL;
		if (c->eof)
			d->shut_pending = true;
		else
			evbuffer_add(d->out, c->data, c->len);
		free(c);
	}
	if (d->head) {
		uint64_t ms = d->head->due_ms - now;
		struct timeval tv = {.tv_sec = (time_t)(ms / 1000),
				     .tv_usec = (suseconds_t)(ms % 1000) * 1000};
		evtimer_add(d->timer, &tv);
	}
	dir_flush(d);
}

/* Queue a chunk (or the end of stream) for delivery after the delay. */
static int dir_enqueue(struct dir *d, const char *data, size_t len, bool eof)
{
	struct chunk *c = malloc(sizeof(*c) + len);
	if (!c)
		return -ENOMEM;
	c->next = NULL;
	c->due_ms = now_ms() + delay_ms;
	c->eof = eof;
	c->len = len;
	memcpy(c->data, data, len);
	bool was_empty = !d->head;
	if (d->tail)
		d->tail->next = c;
	else
		d->head = c;
	d->tail = c;
	d->queued += len;
	if (was_empty) {
		struct timeval tv = {.tv_sec = delay_ms / 1000,
				     .tv_usec = (suseconds_t)(delay_ms % 1000) * 1000};
		evtimer_add(d->timer, &tv);
	}
	dir_update_reading(d);
	return 0;
}

/* Readable source: queue what arrived; EOF is queued too, an error ends everything. */
static void dir_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dir *d = arg;
	char buf[READ_CHUNK];
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n < 0) {
		proxy_free(d->p);
		return;
	}
	if (dir_enqueue(d, buf, (size_t)n, n == 0) < 0)
		proxy_free(d->p);
}

/* Writable destination: continue flushing. */
static void dir_write_cb(evutil_socket_t fd, short what, void *arg)
{
	dir_flush(arg);
}

/* The delay of the oldest chunk ran out. */
static void dir_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	dir_release(arg);
}

/* Set up one direction's events. */
static int dir_init(struct proxy *p, struct dir *d, int from_fd, int to_fd)
{
	d->p = p;
	d->from_fd = from_fd;
	d->to_fd = to_fd;
	d->rd = event_new(base, from_fd, EV_READ | EV_PERSIST, dir_read_cb, d);
	d->wr = event_new(base, to_fd, EV_WRITE, dir_write_cb, d);
	d->timer = evtimer_new(base, dir_timer_cb, d);
	d->out = evbuffer_new();
	return d->rd && d->wr && d->timer && d->out ? 0 : -ENOMEM;
}

/* The non-blocking connect to the target finished. */
static void proxy_connect_cb(evutil_socket_t fd, short what, void *arg)
{
	struct proxy *p = arg;
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
		fprintf(stderr, "delay-proxy: connect: %s\n", strerror(err ? err : errno));
		proxy_free(p);
		return;
	}
	p->connected = true;
	dir_update_reading(&p->down);
	if (dir_flush(&p->up))
		dir_flush(&p->down);
}

/* A client connected: connect to the target and start both directions. */
static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
		      void *arg)
{
	struct proxy *p = calloc(1, sizeof(*p));
	int sfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (!p || sfd < 0) {
		free(p);
		if (sfd >= 0)
			close(sfd);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	p->cfd = fd;
	p->sfd = sfd;
	p->connect_ev = event_new(base, sfd, EV_WRITE, proxy_connect_cb, p);
	if (!p->connect_ev || dir_init(p, &p->up, fd, sfd) < 0 ||
	    dir_init(p, &p->down, sfd, fd) < 0) {
		proxy_free(p);
		return;
	}
	if (connect(sfd, (struct sockaddr *)&target, sizeof(target)) < 0 && errno != EINPROGRESS) {
		fprintf(stderr, "delay-proxy: connect: %s\n", strerror(errno));
		proxy_free(p);
		return;
	}
	event_add(p->connect_ev, NULL);
	dir_update_reading(&p->up);
}

/* Parse IPv4-ADDRESS:PORT into sin; -EINVAL if malformed. */
static int parse_addr(const char *s, struct sockaddr_in *sin)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -EINVAL;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || end == colon + 1 || port < 0 || port > 65535)
		return -EINVAL;
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -EINVAL;
}

/* Print the usage and exit with status 2. */
static void usage(void)
{
	fputs("usage: delay-proxy --listen 127.0.0.1:PORT [--port-file F] --to 127.0.0.1:PORT "
	      "--delay-ms N\n",
	      stderr);
	exit(2);
}

/* SIGTERM or SIGINT: stop. */
static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"listen", required_argument, NULL, 'l'},
	    {"port-file", required_argument, NULL, 'p'},
	    {"to", required_argument, NULL, 't'},
	    {"delay-ms", required_argument, NULL, 'd'},
	    {NULL, 0, NULL, 0},
	};
	const char *listen_addr = NULL, *port_file = NULL, *to = NULL;
	bool have_delay = false;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 'l':
			listen_addr = optarg;
			break;
		case 'p':
			port_file = optarg;
			break;
		case 't':
			to = optarg;
			break;
		case 'd':
			errno = 0;
			unsigned long v = strtoul(optarg, &end, 10);
			if (errno || *end || end == optarg || optarg[0] == '-' || v > 600000)
				usage();
			delay_ms = (unsigned)v;
			have_delay = true;
			break;
		default:
			usage();
		}
	}
	struct sockaddr_in lsin;
	if (optind != argc || !listen_addr || !to || !have_delay ||
	    parse_addr(listen_addr, &lsin) < 0 || parse_addr(to, &target) < 0)
		usage();

	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
	struct event *sigterm = evsignal_new(base, SIGTERM, signal_cb, NULL);
	struct event *sigint = evsignal_new(base, SIGINT, signal_cb, NULL);
	struct evconnlistener *l = evconnlistener_new_bind(
	    base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC, 128,
	    (struct sockaddr *)&lsin, sizeof(lsin));
	if (!base || !sigterm || !sigint || !l || evsignal_add(sigterm, NULL) < 0 ||
	    evsignal_add(sigint, NULL) < 0) {
		fprintf(stderr, "delay-proxy: cannot listen on %s: %s\n", listen_addr,
			strerror(errno));
		return 1;
	}
	struct sockaddr_in bound;
	socklen_t blen = sizeof(bound);
	if (getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &blen) < 0) {
		perror("delay-proxy: getsockname");
		return 1;
	}
	int port = ntohs(bound.sin_port);
	printf("listening on 127.0.0.1:%d\n", port);
	fflush(stdout);
	if (port_file) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", port_file, (long)getpid());
		FILE *f = fopen(tmp, "we");
		if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 ||
		    rename(tmp, port_file) < 0) {
			fprintf(stderr, "delay-proxy: cannot write %s: %s\n", port_file,
				strerror(errno));
			return 1;
		}
	}
	event_base_dispatch(base);
	evconnlistener_free(l);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(base);
	return 0;
}
