/* Unit tests for message framing on evbuffers and on blocking descriptors. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "frame.h"
#include "tap.h"

/* Pop one message and compare it with want (NULL: expect rc without a message). */
static void expect_pop(struct evbuffer *in, size_t max, int rc, const char *want)
{
	char *msg = (char *)"untouched";
	size_t len = 12345;
	int r = frame_pop(in, max, &msg, &len);
	CHECK_INT(r, rc);
	if (rc == 1 && r == 1) {
		CHECK_STR(msg, want);
		CHECK_INT(len, strlen(want));
		free(msg);
	} else if (r == 1) {
		free(msg);
	} else {
		CHECK_STR(msg, "untouched");
		CHECK_INT(len, 12345);
	}
}

/* Feed a chunk of bytes, which may hold NULs, into an evbuffer. */
static void feed(struct evbuffer *in, const char *bytes, size_t n)
{
	CHECK_INT(evbuffer_add(in, bytes, n), 0);
}

static void test_pop(void)
{
	struct evbuffer *in = evbuffer_new();

	expect_pop(in, 64, 0, NULL);

	/* Byte by byte: nothing until the NUL. */
	const char one[] = "{\"method\":\"a.b.C\"}";
	for (size_t i = 0; i < sizeof(one) - 1; i++) {
		feed(in, one + i, 1);
		expect_pop(in, 64, 0, NULL);
	}
	feed(in, "", 1);
	expect_pop(in, 64, 1, one);
	CHECK_INT(evbuffer_get_length(in), 0);

	/* Several messages and a partial one in one chunk. */
	feed(in, "first\0second\0\0thi", 17);
	expect_pop(in, 64, 1, "first");
	expect_pop(in, 64, 1, "second");
	expect_pop(in, 64, 1, ""); /* a lone NUL is an empty message */
	expect_pop(in, 64, 0, NULL);
	CHECK_INT(evbuffer_get_length(in), 3);
	feed(in, "rd\0", 3);
	expect_pop(in, 64, 1, "third");
	CHECK_INT(evbuffer_get_length(in), 0);

	/* Exactly max bytes is fine; one more is too much, with or without its NUL. */
	feed(in, "12345678\0", 9);
	expect_pop(in, 8, 1, "12345678");
	feed(in, "12345678", 8);
	expect_pop(in, 8, 0, NULL);
	feed(in, "9", 1);
	expect_pop(in, 8, -EMSGSIZE, NULL);
	CHECK_INT(evbuffer_get_length(in), 9); /* left as it was */
	evbuffer_drain(in, 9);
	feed(in, "123456789\0ok\0", 13);
	expect_pop(in, 8, -EMSGSIZE, NULL);
	evbuffer_drain(in, evbuffer_get_length(in));

	/* A message spread over many chains of the buffer. */
	for (int i = 0; i < 100; i++) {
		struct evbuffer *piece = evbuffer_new();
		evbuffer_add(piece, "abcdefghij", 10);
		evbuffer_add_buffer(in, piece);
		evbuffer_free(piece);
	}
	feed(in, "", 1);
	char *msg = NULL;
	size_t len = 0;
	CHECK_INT(frame_pop(in, 1000, &msg, &len), 1);
	CHECK_INT(len, 1000);
	CHECK(msg && msg[999] == 'j' && msg[1000] == '\0');
	free(msg);

	evbuffer_free(in);
}

static void test_push(void)
{
	struct evbuffer *out = evbuffer_new();
	CHECK_INT(frame_push(out, "{}", 2), 0);
	CHECK_INT(frame_push(out, "", 0), 0);
	CHECK_INT(evbuffer_get_length(out), 4);
	char got[4];
	evbuffer_copyout(out, got, 4);
	CHECK(memcmp(got, "{}\0\0", 4) == 0);
	CHECK_INT(frame_push(out, "a\0b", 3), -EINVAL);
	CHECK_INT(evbuffer_get_length(out), 4);

	/* What frame_push writes, frame_pop reads back. */
	char *msg = NULL;
	size_t len = 0;
	CHECK_INT(frame_pop(out, 16, &msg, &len), 1);
	CHECK_STR(msg, "{}");
	free(msg);
	CHECK_INT(frame_pop(out, 16, &msg, &len), 1);
	CHECK_INT(len, 0);
	free(msg);
	evbuffer_free(out);
}

/* Read one message from fd and compare it with want. */
static void expect_read(int fd, struct frame_reader *r, int rc, const char *want)
{
	char *msg = NULL;
	size_t len = 0;
	int got = frame_read_fd(fd, r, &msg, &len);
	CHECK_INT(got, rc);
	if (got == 1 && want) {
		CHECK_STR(msg, want);
		CHECK_INT(len, strlen(want));
	}
	if (got != 1)
		CHECK(msg == NULL);
	free(msg);
}

static void test_fd(void)
{
	int sv[2];
	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	struct frame_reader *r = frame_reader_new(16);
	CHECK(r != NULL);

	/* Two messages in one write, then one split over writes. */
	CHECK_INT(write(sv[1], "one\0two\0thr", 11), 11);
	expect_read(sv[0], r, 1, "one");
	expect_read(sv[0], r, 1, "two");
	CHECK_INT(write(sv[1], "ee\0", 3), 3);
	expect_read(sv[0], r, 1, "three");

	CHECK_INT(frame_write_fd(sv[1], "{\"x\":1}", 7), 0);
	expect_read(sv[0], r, 1, "{\"x\":1}");
	CHECK_INT(frame_write_fd(sv[1], "a\0b", 3), -EINVAL);

	/* Too long for the reader. */
	CHECK_INT(frame_write_fd(sv[1], "0123456789abcdefX", 17), 0);
	expect_read(sv[0], r, -EMSGSIZE, NULL);
	r = frame_reader_free(r);
	CHECK(r == NULL);
	CHECK(frame_reader_free(NULL) == NULL);

	/* End of file in the middle of a message, then a clean one. */
	r = frame_reader_new(64);
	CHECK_INT(write(sv[1], "last\0half", 9), 9);
	close(sv[1]);
	expect_read(sv[0], r, 1, "last");
	expect_read(sv[0], r, -EPROTO, NULL);
	close(sv[0]);
	frame_reader_free(r);

	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	r = frame_reader_new(64);
	close(sv[1]);
	expect_read(sv[0], r, 0, NULL);
	close(sv[0]);
	frame_reader_free(r);

	/* A closed peer gives -EPIPE, not SIGPIPE. */
	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[0]);
	CHECK_INT(frame_write_fd(sv[1], "hello", 5), -EPIPE);
	close(sv[1]);

	/* Not a socket: a pipe works too. */
	int p[2];
	CHECK_INT(pipe(p), 0);
	r = frame_reader_new(64);
	CHECK_INT(frame_write_fd(p[1], "piped", 5), 0);
	expect_read(p[0], r, 1, "piped");
	close(p[0]);
	close(p[1]);
	frame_reader_free(r);
}

/* A message much larger than the socket buffer, written by a child: partial writes. */
static void test_fd_large(void)
{
	enum { BIG = 1 << 20 };
	int sv[2];
	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	char *big = malloc(BIG + 1);
	for (size_t i = 0; i < BIG; i++)
		big[i] = (char)('a' + i % 26);
	big[BIG] = '\0';

	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		int rc = frame_write_fd(sv[1], big, BIG);
		rc = rc == 0 ? frame_write_fd(sv[1], "after", 5) : rc;
		_exit(rc == 0 ? 0 : 1);
	}
	CHECK(pid > 0);
	close(sv[1]);
	struct frame_reader *r = frame_reader_new(BIG);
	char *msg = NULL;
	size_t len = 0;
	CHECK_INT(frame_read_fd(sv[0], r, &msg, &len), 1);
	CHECK_INT(len, BIG);
	CHECK(msg && memcmp(msg, big, BIG) == 0);
	free(msg);
	expect_read(sv[0], r, 1, "after");
	expect_read(sv[0], r, 0, NULL);
	int status = -1;
	CHECK_INT(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	frame_reader_free(r);
	close(sv[0]);
	free(big);
}

int main(void)
{
	signal(SIGALRM, SIG_DFL);
	alarm(30);
	test_pop();
	test_push();
	test_fd();
	test_fd_large();
	return tap_done();
}
