/* frame: NUL-terminated message framing, on libevent buffers and on blocking descriptors. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct frame_reader;

/*
 * Take the next complete message out of in. Returns 1 and a malloc'd, NUL-terminated copy
 * in *ret (its length, without the NUL, in *ret_len) and removes it and its NUL from in;
 * 0 when no NUL has arrived yet; -EMSGSIZE when the message is longer than max bytes, or
 * when more than max bytes are buffered without a NUL (in is then left as it was and the
 * connection should be closed); -ENOMEM. A lone NUL is returned as an empty message
 * (*ret_len == 0), which call_decode() rejects as an invalid call.
 */
int frame_pop(struct evbuffer *in, size_t max, char **ret, size_t *ret_len);

/* Append msg (len bytes, which must hold no NUL: -EINVAL) and its NUL to out; -ENOMEM. */
int frame_push(struct evbuffer *out, const char *msg, size_t len);

/* A buffered reader of framed messages on a blocking descriptor; messages up to max bytes. */
struct frame_reader *frame_reader_new(size_t max);

/* Free r and the bytes it buffered; accepts NULL and returns NULL. */
struct frame_reader *frame_reader_free(struct frame_reader *r);

/*
 * Read the next message from fd. Returns 1 with a malloc'd, NUL-terminated message in
 * *ret and its length in *ret_len; 0 on end of file between messages; -EPROTO on end of
 * file in the middle of a message; -EMSGSIZE when a message is longer than the reader's
 * max; another negative errno from read(2) (EINTR is retried). Bytes read past the message
 * stay buffered in r for the next call.
 */
int frame_read_fd(int fd, struct frame_reader *r, char **ret, size_t *ret_len);

/* True if a whole message is buffered in r (the next frame_read_fd() will not block). */
bool frame_reader_has_message(const struct frame_reader *r);

/*
 * Write msg (len bytes, no NUL in it: -EINVAL) and its NUL to fd, all of it, retrying
 * partial writes and EINTR. On a socket, a closed peer gives -EPIPE rather than SIGPIPE.
 */
int frame_write_fd(int fd, const char *msg, size_t len);
