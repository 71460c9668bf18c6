/* frame: NUL-terminated message framing, on libevent buffers and on blocking descriptors. */
#include "frame.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>

#define FRAME_READ_CHUNK 65536

struct frame_reader {
	char *buf;
	size_t start;	/* where the unread bytes begin */
	size_t len;	/* end of the bytes buffered */
	size_t cap;	/* size of buf */
	size_t scanned; /* bytes from start known to hold no NUL */
	size_t max;
};

int frame_pop(struct evbuffer *in, size_t max, char **ret, size_t *ret_len)
{
	size_t avail = evbuffer_get_length(in);
	if (avail == 0)
		return 0;

	/* Search no further than max + 1 bytes: a NUL beyond that ends an oversized message. */
	size_t span = max < avail ? max + 1 : avail;
	struct evbuffer_ptr end;
	if (evbuffer_ptr_set(in, &end, span, EVBUFFER_PTR_SET) < 0)
		return -EINVAL;
	struct evbuffer_ptr nul = evbuffer_search_range(in, "\0", 1, NULL, &end);
	if (nul.pos < 0)
		return avail > max ? -EMSGSIZE : 0;

	size_t len = (size_t)nul.pos;
	if (len > max)
		return -EMSGSIZE;
	char *msg = malloc(len + 1);
	if (!msg)
		return -ENOMEM;
	if (len > 0 && evbuffer_remove(in, msg, len) != (int)len) {
		free(msg);
		return -EIO;
	}
	evbuffer_drain(in, 1);
	msg[len] = '\0';
	*ret = msg;
	*ret_len = len;
	return 1;
}

int frame_push(struct evbuffer *out, const char *msg, size_t len)
{
	if (len > 0 && memchr(msg, '\0', len))
		return -EINVAL;
	/* Reserve first so that the message and its NUL go in together or not at all. */
	if (evbuffer_expand(out, len + 1) < 0)
		return -ENOMEM;
	if (evbuffer_add(out, msg, len) < 0 || evbuffer_add(out, "", 1) < 0)
		return -ENOMEM;
	return 0;
}

struct frame_reader *frame_reader_new(size_t max)
{
	struct frame_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->max = max;
	return r;
}

struct frame_reader *frame_reader_free(struct frame_reader *r)
{
	if (r) {
		free(r->buf);
		free(r);
	}
	return NULL;
}

/* Hand out the first len bytes of r's buffer as a message and keep what follows its NUL. */
static int reader_take(struct frame_reader *r, size_t len, char **ret, size_t *ret_len)
{
	char *msg = malloc(len + 1);
	if (!msg)
		return -ENOMEM;
	memcpy(msg, r->buf + r->start, len);
	msg[len] = '\0';
	/* Consume without moving what follows: one read can hold many messages. */
	r->start += len + 1;
	if (r->start == r->len)
		r->start = r->len = 0;
	r->scanned = 0;
	*ret = msg;
	*ret_len = len;
	return 1;
}

/* Make room for at least FRAME_READ_CHUNK more bytes after the buffered ones. */
static int reader_grow(struct frame_reader *r)
{
	if (r->cap - r->len >= FRAME_READ_CHUNK)
		return 0;
	if (r->start) {
		memmove(r->buf, r->buf + r->start, r->len - r->start);
		r->len -= r->start;
		r->start = 0;
		if (r->cap - r->len >= FRAME_READ_CHUNK)
			return 0;
	}
	size_t cap = r->cap ? r->cap : FRAME_READ_CHUNK;
	while (cap - r->len < FRAME_READ_CHUNK) {
		if (cap > SIZE_MAX / 2)
			return -ENOMEM;
		cap *= 2;
	}
	char *nb = realloc(r->buf, cap);
	if (!nb)
		return -ENOMEM;
	r->buf = nb;
	r->cap = cap;
	return 0;
}

int frame_read_fd(int fd, struct frame_reader *r, char **ret, size_t *ret_len)
{
	for (;;) {
		size_t have = r->len - r->start;
		char *nul = have > r->scanned
				? memchr(r->buf + r->start + r->scanned, '\0', have - r->scanned)
				: NULL;
		if (nul) {
			size_t len = (size_t)(nul - (r->buf + r->start));
			if (len > r->max)
				return -EMSGSIZE;
			return reader_take(r, len, ret, ret_len);
		}
		r->scanned = have;
		if (have > r->max)
			return -EMSGSIZE;

		int err = reader_grow(r);
		if (err < 0)
			return err;
		ssize_t n = read(fd, r->buf + r->len, r->cap - r->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return r->len == r->start ? 0 : -EPROTO;
		r->len += (size_t)n;
	}
}

/*
 * Write the message and its NUL to fd in one call where it can (sendmsg() with
 * MSG_NOSIGNAL, writev() if fd is no socket), so that a peer never sees a message without
 * its end for lack of a second write; partial writes go on where they stopped.
 */
int frame_write_fd(int fd, const char *msg, size_t len)
{
	if (len > 0 && memchr(msg, '\0', len))
		return -EINVAL;
	struct iovec iov[2] = {{(void *)msg, len}, {(void *)"", 1}};
	struct iovec *v = iov;
	int nv = 2;
	bool sock = true;
	while (nv > 0) {
		struct msghdr mh = {.msg_iov = v, .msg_iovlen = (size_t)nv};
		ssize_t w = sock ? sendmsg(fd, &mh, MSG_NOSIGNAL) : writev(fd, v, nv);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (sock && errno == ENOTSOCK) {
				sock = false;
				continue;
			}
			return -errno;
		}
		while (nv > 0 && (size_t)w >= v->iov_len) {
			w -= (ssize_t)v->iov_len;
			v++;
			nv--;
		}
		if (nv > 0) {
			v->iov_base = (char *)v->iov_base + w;
			v->iov_len -= (size_t)w;
		}
	}
	return 0;
}

bool frame_reader_has_message(const struct frame_reader *r)
{
	return r && r->len > r->start && memchr(r->buf + r->start, '\0', r->len - r->start);
}
