/* tunnel-blast: replays prepared HTTP requests over keep-alive connections and counts answers. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/*
 * Usage: tunnel-blast PORT FILE CONNECTIONS
 * FILE holds requests, each a 4-byte big-endian length and the bytes of one whole HTTP/1.1
 * request. CONNECTIONS threads each keep one connection to 127.0.0.1:PORT and send the
 * next request once the previous one is answered. Prints one JSON line:
 * {"requests", "ok" (status 200), "other", "errors", "seconds"}.
 */

struct req {
	const char *data;
	size_t len;
};

static struct req *reqs;
static size_t n_reqs;
static atomic_size_t next_req;
static atomic_ulong ok, other, errors;
static uint16_t port;

static int dial(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int one = 1;
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Read one response; its status, or -1 when the connection failed. */
static int read_response(int fd, char *buf, size_t cap)
{
	size_t have = 0;
	char *end = NULL;
	while (!end) {
		if (have + 1 >= cap)
			return -1;
		ssize_t n = read(fd, buf + have, cap - 1 - have);
		if (n <= 0)
			return -1;
		have += (size_t)n;
		buf[have] = '\0';
		end = strstr(buf, "\r\n\r\n");
	}
	int status = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	const char *cl = strcasestr(buf, "\r\nContent-Length:");
	size_t body = cl ? strtoul(cl + 17, NULL, 10) : 0;
	size_t got = have - (size_t)(end + 4 - buf);
	while (got < body) {
		ssize_t n = read(fd, buf, cap - 1);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return status;
}

static void *worker(void *arg)
{
	char buf[65536];
	int fd = dial();
	for (;;) {
		size_t i = atomic_fetch_add(&next_req, 1);
		if (i >= n_reqs)
			break;
		int tries = 0;
		for (;;) {
			if (fd < 0)
				fd = dial();
			size_t off = 0;
			while (fd >= 0 && off < reqs[i].len) {
				ssize_t n = write(fd, reqs[i].data + off, reqs[i].len - off);
				if (n <= 0)
					break;
				off += (size_t)n;
			}
			int st = fd >= 0 && off == reqs[i].len ? read_response(fd, buf, sizeof(buf))
							       : -1;
			if (st == 200) {
				atomic_fetch_add(&ok, 1);
				break;
			}
			if (st > 0) {
				atomic_fetch_add(&other, 1);
				break;
			}
			if (fd >= 0)
				close(fd);
			fd = -1;
			if (++tries > 5) {
				atomic_fetch_add(&errors, 1);
				break;
			}
		}
	}
	if (fd >= 0)
		close(fd);
	return NULL;
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
	pthread_t *th = calloc((size_t)conns, sizeof(*th));
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (int i = 0; i < conns; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	for (int i = 0; i < conns; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	double secs = (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9;
	printf("{\"requests\": %zu, \"ok\": %lu, \"other\": %lu, \"errors\": %lu, \"seconds\": "
	       "%.4f}\n",
	       n_reqs, atomic_load(&ok), atomic_load(&other), atomic_load(&errors), secs);
	free(th);
	free(reqs);
	free(all);
	return 0;
}
