/* tunnel-null: an HTTP server that does nothing but answer 200: the machine's ceiling. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/*
 * Usage: tunnel-null PORT
 * Listens on 127.0.0.1:PORT and answers every HTTP/1.1 request (headers and a
 * Content-Length body) with `200 {"seq":N}`, without looking at it: no Token, no crypto,
 * no journal. One thread, epoll, keep-alive, TCP_NODELAY, one read and one write per
 * request as tpas's tunnel does. bench_tpas.py drives it with tunnel-blast, like tpas and
 * the reference, to show how many requests per second this machine carries at all with
 * this load generator: no server doing real work can be faster. Prints "listening" on
 * stdout once it accepts; runs until killed.
 */

#define BUF 65536

struct conn {
	int fd;
	size_t have;
	char buf[BUF];
};

static unsigned long seq;

/* Answer every whole request in c->buf; -1 when the bytes are not HTTP we can frame. */
static int serve(struct conn *c)
{
	for (;;) {
		c->buf[c->have] = '\0';
		char *end = strstr(c->buf, "\r\n\r\n");
		if (!end)
			return c->have + 1 >= BUF ? -1 : 0;
		const char *cl = strcasestr(c->buf, "\r\nContent-Length:");
		size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
		size_t whole = (size_t)(end + 4 - c->buf) + body;
		if (whole >= BUF)
			return -1;
		if (c->have < whole)
			return 0;
		char out[128], num[24];
		int nl = snprintf(num, sizeof(num), "{\"seq\":%lu}", ++seq);
		int n = snprintf(out, sizeof(out),
				 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				 "Content-Length: %d\r\n\r\n%s",
				 nl, num);
		if (write(c->fd, out, (size_t)n) != n)
			return -1;
		memmove(c->buf, c->buf + whole, c->have - whole);
		c->have -= whole;
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: tunnel-null PORT\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(ls, 1024) < 0) {
		perror("tunnel-null");
		return 1;
	}
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev) < 0)
		return 1;
	printf("listening\n");
	fflush(stdout);
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0 && errno != EINTR)
			return 1;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (!c) {
				int fd;
				while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					struct conn *nc = calloc(1, sizeof(*nc));
					if (!nc) {
						close(fd);
						continue;
					}
					nc->fd = fd;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					struct epoll_event cev = {.events = EPOLLIN, .data.ptr = nc};
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
				}
				continue;
			}
			ssize_t r = read(c->fd, c->buf + c->have, BUF - 1 - c->have);
			if (r < 0 && errno == EAGAIN)
				continue;
			if (r > 0) {
				c->have += (size_t)r;
				if (serve(c) == 0)
					continue;
			}
			close(c->fd);
			free(c);
		}
	}
}
