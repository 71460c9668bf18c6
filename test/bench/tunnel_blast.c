/* tunnel-blast: replays prepared HTTP requests over keep-alive connections and counts answers. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: tunnel-blast PORT FILE CONNECTIONS
 * FILE holds requests, each a 4-byte big-endian length and the bytes of one whole HTTP/1.1
 * request. CONNECTIONS keep-alive connections to 127.0.0.1:PORT, each sending its next
 * request once the previous one is answered (one request in flight per connection, no
 * pipelining), all driven by one thread with epoll so that the load generator costs little
 * CPU next to the server it measures. A connection that fails is reopened and the request
 * sent again (5 times at most). Prints one JSON line:
 * {"requests", "ok" (status 200), "other", "errors", "seconds", "start"}: start is
 * CLOCK_MONOTONIC in seconds when the first connection was opened, after the requests were
 * loaded (Python's time.monotonic() reads the same clock).
 */

#define RBUF 65536
#define MAX_TRIES 5

struct req {
	const char *data;
	size_t len;
};

struct conn {
	int fd;
	size_t req; /* index being sent or awaited; SIZE_MAX when idle */
	size_t off; /* bytes of it written */
	int tries;
	size_t have; /* bytes of the answer read */
	char buf[RBUF];
};

static struct req *reqs;
static size_t n_reqs, next_req, done_reqs;
static unsigned long ok, other, errors;
static uint16_t port;
static int ep;

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

static void watch(struct conn *c, int op, uint32_t events)
{
	struct epoll_event ev = {.events = events, .data.ptr = c};
	epoll_ctl(ep, op, c->fd, &ev);
}

/* Write what is left of the current request; 0 when all is out, 1 when waiting, -1. */
static int push(struct conn *c)
{
	const struct req *r = &reqs[c->req];
	while (c->off < r->len) {
		ssize_t n = write(c->fd, r->data + c->off, r->len - c->off);
		if (n < 0 && errno == EAGAIN)
			return 1;
		if (n <= 0)
			return -1;
		c->off += (size_t)n;
	}
	return 0;
}

static void start(struct conn *c);

/* The request failed on this connection: reopen and send it again, or give up on it. */
static void retry(struct conn *c)
{
	if (c->fd >= 0)
		close(c->fd); /* also leaves the epoll set */
	c->fd = -1;
	if (++c->tries > MAX_TRIES) {
		errors++;
		done_reqs++;
		c->req = SIZE_MAX;
		start(c);
		return;
	}
	c->fd = dial();
	if (c->fd < 0) {
		/* The server is not there: this connection stops, its request counts as an error.
		 */
		errors++;
		done_reqs++;
		c->req = SIZE_MAX;
		return;
	}
	watch(c, EPOLL_CTL_ADD, EPOLLIN);
	c->off = 0;
	c->have = 0;
	int r = push(c);
	if (r < 0)
		retry(c);
	else if (r > 0)
		watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
}

/* Send the connection's next request, if any is left. */
static void start(struct conn *c)
{
	if (next_req >= n_reqs) {
		c->req = SIZE_MAX;
		return;
	}
	c->req = next_req++;
	c->off = 0;
	c->have = 0;
	c->tries = 0;
	if (c->fd < 0) {
		c->tries = -1; /* the first dial is not a retry */
		retry(c);
		return;
	}
	int r = push(c);
	if (r < 0)
		retry(c);
	else if (r > 0)
		watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
}

/* A whole answer in buf: its status, 0 when more must be read, -1 when it is garbage. */
static int parse(struct conn *c)
{
	c->buf[c->have] = '\0';
	char *end = strstr(c->buf, "\r\n\r\n");
	if (!end)
		return c->have + 1 >= RBUF ? -1 : 0;
	int status = 0;
	if (sscanf(c->buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
	size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
	size_t head = (size_t)(end + 4 - c->buf);
	if (head + body >= RBUF)
		return -1;
	return c->have >= head + body ? status : 0;
}

static void readable(struct conn *c)
{
	for (;;) {
		ssize_t n = read(c->fd, c->buf + c->have, RBUF - 1 - c->have);
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			retry(c);
			return;
		}
		c->have += (size_t)n;
		int st = parse(c);
		if (st < 0) {
			retry(c);
			return;
		}
		if (st > 0) {
			if (st == 200)
				ok++;
			else
				other++;
			done_reqs++;
			start(c);
			return;
		}
	}
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: tunnel-blast PORT FILE CONNECTIONS\n");
		return 2;
	}
	port = (uint16_t)atoi(argv[1]);
	int conns = atoi(argv[3]);
	FILE *f = fopen(argv[2], "rb");
	if (!f || conns < 1 || conns > 1024) {
		perror(argv[2]);
		return 2;
	}
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	rewind(f);
	char *all = malloc((size_t)size);
	if (!all || fread(all, 1, (size_t)size, f) != (size_t)size)
		return 2;
	fclose(f);
	size_t cap = 1024;
	reqs = malloc(cap * sizeof(*reqs));
	for (long off = 0; off + 4 <= size;) {
		uint32_t len = (uint32_t)(unsigned char)all[off] << 24 |
			       (uint32_t)(unsigned char)all[off + 1] << 16 |
			       (uint32_t)(unsigned char)all[off + 2] << 8 |
			       (unsigned char)all[off + 3];
		off += 4;
		if (off + len > size)
			return 2;
		if (n_reqs == cap)
			reqs = realloc(reqs, (cap *= 2) * sizeof(*reqs));
		reqs[n_reqs++] = (struct req){all + off, len};
		off += len;
	}
	ep = epoll_create1(EPOLL_CLOEXEC);
	struct conn *cs = calloc((size_t)conns, sizeof(*cs));
	if (ep < 0 || !cs)
		return 2;
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < conns; i++) {
		cs[i].fd = -1;
		start(&cs[i]);
	}
	struct epoll_event evs[256];
	while (done_reqs < n_reqs) {
		int busy = 0;
		for (int i = 0; i < conns; i++)
			busy += cs[i].req != SIZE_MAX;
		if (!busy) { /* every connection failed: what was not sent is an error */
			errors += n_reqs - next_req;
			break;
		}
		int n = epoll_wait(ep, evs, 256, 1000);
		if (n < 0 && errno != EINTR)
			return 2;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->req == SIZE_MAX || c->fd < 0)
				continue;
			if (evs[i].events & EPOLLOUT && c->off < reqs[c->req].len) {
				int r = push(c);
				if (r < 0) {
					retry(c);
					continue;
				}
				if (r == 0)
					watch(c, EPOLL_CTL_MOD, EPOLLIN);
			}
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				readable(c);
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &b);
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("{\"requests\": %zu, \"ok\": %lu, \"other\": %lu, \"errors\": %lu, \"seconds\": "
	       "%.4f, \"start\": %.6f}\n",
	       n_reqs, ok, other, errors, secs, (double)a.tv_sec + (double)a.tv_nsec / 1e9);
	for (int i = 0; i < conns; i++)
		if (cs[i].fd >= 0)
			close(cs[i].fd);
	close(ep);
	free(cs);
	free(reqs);
	free(all);
	return 0;
}
