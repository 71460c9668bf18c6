/*
 * failalloc: for tests only (built without sanitizers, never installed), an LD_PRELOAD
 * library that makes one chosen allocation of a daemon fail, so that a test can see what
 * the daemon answers when memory runs out at that point.
 *
 * Once a thread reads "FAILALLOC:<n>;" from a descriptor (read, readv, recv, or the
 * plaintext of mbedtls_ssl_read: a TLS peer's answer), the n-th allocation that thread
 * makes from then on (malloc, calloc, realloc; n from 1) returns NULL with errno ENOMEM,
 * and one line "failalloc: allocation <n> failed" goes to stderr;
 * unless the thread waits for events first (epoll_wait: the event loop went back to
 * waiting), which ends the count. So a test that puts the text where the daemon reads it
 * (a parameter of a call, the body of a peer's answer) fails one allocation of the work
 * that read caused, and the same n fails the same allocation each time the same code runs;
 * no failure line for n: the work took fewer allocations. The other threads, and the other
 * allocations, are left alone. The text must come whole in one buffer of one read.
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* glibc's own allocator, under the names it exports for this. */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t m, size_t n);
extern void *__libc_realloc(void *p, size_t n);

static const char marker[] = "FAILALLOC:";

/* Allocations left until the one that fails (0: none armed); of the reading thread. */
static __thread long countdown __attribute__((tls_model("initial-exec")));
static __thread long armed_n __attribute__((tls_model("initial-exec")));

/* Arm the countdown if buf holds the marker. */
static void scan(const void *buf, ssize_t len)
{
	if (len <= 0)
		return;
	const char *p = memmem(buf, (size_t)len, marker, sizeof(marker) - 1);
	if (!p)
		return;
	const char *end = (const char *)buf + len;
	long n = 0;
	for (p += sizeof(marker) - 1; p < end && *p >= '0' && *p <= '9'; p++)
		n = n * 10 + (*p - '0');
	if (p < end && *p == ';' && n > 0)
		countdown = armed_n = n;
}

/* Whether this allocation is the one to fail (and say so on stderr). */
static int failing(void)
{
	if (countdown <= 0 || --countdown > 0)
		return 0;
	char line[64] = "failalloc: allocation ";
	size_t o = strlen(line);
	char digits[24];
	int k = 0;
	for (long n = armed_n; n > 0 && k < (int)sizeof(digits); n /= 10)
		digits[k++] = (char)('0' + n % 10);
	while (k > 0)
		line[o++] = digits[--k];
	memcpy(line + o, " failed\n", 8);
	ssize_t w = write(2, line, o + 8);
	(void)w;
	errno = ENOMEM;
	return 1;
}

void *malloc(size_t n)
{
	return failing() ? NULL : __libc_malloc(n);
}

void *calloc(size_t m, size_t n)
{
	return failing() ? NULL : __libc_calloc(m, n);
}

void *realloc(void *p, size_t n)
{
	/* realloc(p, 0) frees: never failed, nothing would be reported. */
	return p && n == 0 ? __libc_realloc(p, n) : failing() ? NULL : __libc_realloc(p, n);
}

/* libc's own fn, looked up once (POSIX's way to take a function from dlsym). */
#define NEXT(real, name) ((real) ? (real) : (*(void **)&(real) = dlsym(RTLD_NEXT, name), (real)))

ssize_t read(int fd, void *buf, size_t len)
{
	static ssize_t (*real)(int, void *, size_t);
	ssize_t r = NEXT(real, "read")(fd, buf, len);
	scan(buf, r);
	return r;
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
	static ssize_t (*real)(int, void *, size_t, int);
	ssize_t r = NEXT(real, "recv")(fd, buf, len, flags);
	if (!(flags & MSG_PEEK))
		scan(buf, r);
	return r;
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
	static ssize_t (*real)(int, const struct iovec *, int);
	ssize_t r = NEXT(real, "readv")(fd, iov, iovcnt);
	ssize_t left = r;
	for (int i = 0; i < iovcnt && left > 0; i++) {
		ssize_t n = left < (ssize_t)iov[i].iov_len ? left : (ssize_t)iov[i].iov_len;
		scan(iov[i].iov_base, n);
		left -= n;
	}
	return r;
}

/* What mbedTLS decrypted: the marker in a TLS peer's answer (mbedTLS 2.28's signature). */
int mbedtls_ssl_read(void *ssl, unsigned char *buf, size_t len);
int mbedtls_ssl_read(void *ssl, unsigned char *buf, size_t len)
{
	static int (*real)(void *, unsigned char *, size_t);
	int r = NEXT(real, "mbedtls_ssl_read")(ssl, buf, len);
	scan(buf, r);
	return r;
}

/* The event loop waits again: the work the marked read caused is over. */
int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
	static int (*real)(int, struct epoll_event *, int, int);
	countdown = 0;
	return NEXT(real, "epoll_wait")(epfd, events, maxevents, timeout);
}
