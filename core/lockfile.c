/* lockfile: one process per store, by an exclusive flock() on a file next to it. */
#include "lockfile.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

/* The pid the holder wrote into fd ("" if none). */
static void holder_pid(int fd, char *pid, size_t len)
{
	ssize_t n = pread(fd, pid, len - 1, 0);
	pid[n > 0 ? n : 0] = '\0';
	pid[strcspn(pid, "\n")] = '\0';
}

/*
 * The lock file's name for the store at path: next to the file path resolves to (its
 * directory's, when it does not exist yet), so that a symbolic link, "./", or another
 * spelling of the same store takes the same lock. As given when nothing resolves.
 */
static int lock_name(const char *path, char *lock, size_t len)
{
	char real[PATH_MAX], *r = realpath(path, real);
	if (!r && errno == ENOENT) {
		const char *slash = strrchr(path, '/');
		char dir[PATH_MAX];
		if (!slash)
			snprintf(dir, sizeof(dir), ".");
		else if (snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path) >=
			 (int)sizeof(dir))
			return -ENAMETOOLONG;
		char rdir[PATH_MAX];
		if (realpath(dir[0] ? dir : "/", rdir) &&
		    snprintf(real, sizeof(real), "%s/%s", rdir, slash ? slash + 1 : path) <
			(int)sizeof(real))
			r = real;
	}
	return snprintf(lock, len, "%s.lock", r ? r : path) >= (int)len ? -ENAMETOOLONG : 0;
}

int lockfile_take(const char *path, const char *program, const char *what, int *ret_fd, char *err,
		  size_t errlen)
{
	char lock[4096];
	*ret_fd = -1;
	if (lock_name(path, lock, sizeof(lock)) < 0) {
		snprintf(err, errlen, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		int e = -errno;
		snprintf(err, errlen, "%s: cannot open: %s", lock, strerror(-e));
		return e;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = -errno;
		char pid[32];
		holder_pid(fd, pid, sizeof(pid));
		if (e == -EWOULDBLOCK)
			snprintf(
			    err, errlen,
			    "%s is in use by another %s%s%s%s: one %s per %s (stop it, or give "
			    "this one its own store.path)",
			    path, program, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "", program,
			    what);
		else
			snprintf(err, errlen, "%s: cannot lock: %s", lock, strerror(-e));
		close(fd);
		return e == -EWOULDBLOCK ? -EBUSY : e;
	}
	char pid[32];
	int n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		/* The lock holds without the pid; only the message would be less precise. */
	}
	*ret_fd = fd;
	return 0;
}
