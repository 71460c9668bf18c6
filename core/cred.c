/* cred: secrets from systemd credentials or key files, checked, decoded and wiped. */
#include "cred.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hex.h"

#define CRED_MAX_FILE 4096

void cred_wipe(void *p, size_t n)
{
	if (n) /* explicit_bzero's pointer must not be NULL, even for nothing */
		explicit_bzero(p, n); /* a memset the compiler may not drop; as fast as memset */
}

/* The limit the last -E2BIG of this thread went over, for cred_explain() to name. */
static _Thread_local char too_long[128];

int cred_read_file(const char *path, bool private_only, char *buf, size_t bufsz)
{
	too_long[0] = '\0';
	/* O_NONBLOCK: a FIFO put in a key's place is refused below instead of waited on. */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int r = -errno;
		close(fd);
		return r;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	/* Others may not read it, nor its group replace what it holds. */
	if (private_only && (st.st_mode & (S_IRWXO | S_IWGRP))) {
		close(fd);
		return -EPERM;
	}
	size_t len = 0;
	for (;;) {
		if (len + 1 >= bufsz) {
			close(fd);
			cred_wipe(buf, bufsz);
			snprintf(too_long, sizeof(too_long), "at most %zu bytes", bufsz - 2);
			return -E2BIG;
		}
		ssize_t n = read(fd, buf + len, bufsz - 1 - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int r = -errno;
			close(fd);
			cred_wipe(buf, bufsz);
			return r;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	/* Strip surrounding white space in place (a trailing newline above all). */
	while (len && strchr(" \t\r\n", buf[len - 1]))
		buf[--len] = '\0';
	size_t lead = strspn(buf, " \t\r\n");
	memmove(buf, buf + lead, len - lead + 1);
	cred_wipe(buf + len - lead + 1, lead);
	return 0;
}

/* Find and read the secret: credentials directory first, then the fallback path. */
static int cred_read(const char *name, const char *fallback_path, char *buf, size_t bufsz,
		     char **ret_start)
{
	int r = -ENOENT;
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	if (dir && *dir) {
		char path[PATH_MAX];
		if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
			return -ENAMETOOLONG;
		r = cred_read_file(path, true, buf, bufsz);
	}
	if (r == -ENOENT && fallback_path && *fallback_path)
		r = cred_read_file(fallback_path, true, buf, bufsz);
	if (r < 0)
		return r;
	if (!buf[0])
		return -ENODATA;
	*ret_start = buf;
	return 0;
}

bool cred_visible(const char *fallback_path)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	return (dir && *dir) || (fallback_path && *fallback_path);
}

const char *cred_source(const char *name, const char *fallback_path, char *path, size_t len)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	if (dir && *dir && snprintf(path, len, "%s/%s", dir, name) < (int)len &&
	    access(path, F_OK) == 0)
		return path;
	if (fallback_path && *fallback_path)
		return fallback_path;
	return NULL;
}

/*
 * Whether a file directive's value reads as a path: one with a slash whose directory
 * exists (not / alone). A name without a slash may be a password written by mistake
 * ("hunter2.final", "My.Pass-word2024"), and base64 may hold slashes, at its start too:
 * such a value is not named back.
 */
static bool looks_like_path(const char *v)
{
	const char *slash = strrchr(v, '/');
	if (!slash)
		return false;
	char dir[PATH_MAX];
	size_t n = (size_t)(slash - v);
	while (n > 0 && v[n - 1] == '/') /* "//x": its directory is / too */
		n--;
	if (n == 0 || n >= sizeof(dir))
		return false;
	memcpy(dir, v, n);
	dir[n] = '\0';
	struct stat st;
	return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *cred_explain(int err, const char *name, const char *fallback_path, char *buf,
			 size_t len)
{
	char path[PATH_MAX];
	const char *src = cred_source(name, fallback_path, path, sizeof(path));
	bool missing = err == -ENOENT || err == -ENOTDIR || err == -ENAMETOOLONG;
	if (src && missing && !looks_like_path(src)) {
		/*
		 * No such file, and no path either: most likely the secret itself, written in
		 * the file directive. Echoing it would put it in the journal.
		 */
		snprintf(buf, len,
			 "the file directive of credential %s names no file, nor a directory that "
			 "exists (it takes the path of a file holding the secret, never the secret "
			 "itself; its value is not shown here)",
			 name);
		return buf;
	}
	if (!src) {
		snprintf(buf, len,
			 "credential %s not found: give it with LoadCredential=%s:FILE in the "
			 "service (or the matching *-file directive)",
			 name, name);
		return buf;
	}
	switch (err) {
	case -EPERM: {
		/* o-rwx rather than 600: a root-owned key the daemon's group reads stays 0640. */
		struct stat st;
		bool known = stat(src, &st) == 0;
		bool group_writes = known && (st.st_mode & S_IWGRP),
		     others = !known || (st.st_mode & S_IRWXO);
		snprintf(buf, len, "%s is %s%s%s: run chmod %s %s", src,
			 others ? "readable by other users" : "",
			 others && group_writes ? " and " : "",
			 group_writes ? "writable by its group" : "",
			 others && group_writes ? "o-rwx,g-w"
			 : group_writes		? "g-w"
						: "o-rwx",
			 src);
		break;
	}
	case -EACCES:
		snprintf(buf, len,
			 "%s cannot be read by this user: give it to the daemon's user with mode "
			 "0600 (chown), or to root and the daemon's group with mode 0640 (chgrp)",
			 src);
		break;
	case -ENOENT:
		/* Say which secret: a file directive's path alone does not. */
		snprintf(buf, len, "%s (the credential %s) does not exist", src, name);
		break;
	case -ENODATA:
		snprintf(buf, len, "%s is empty", src);
		break;
	case -EINVAL:
		snprintf(buf, len, "%s is not a regular file", src);
		break;
	case -EBADMSG:
		snprintf(buf, len,
			 "%s does not hold hexadecimal digits (an even number of them, nothing "
			 "else)",
			 src);
		break;
	case -E2BIG:
		snprintf(buf, len, "%s holds a longer secret than allowed%s%s%s", src,
			 too_long[0] ? " (" : "", too_long, too_long[0] ? ")" : "");
		break;
	default:
		snprintf(buf, len, "%s: %s", src, strerror(-err));
		break;
	}
	return buf;
}

int cred_load_hex(const char *name, const char *fallback_path, uint8_t *out, size_t max,
		  size_t *ret_len)
{
	char buf[CRED_MAX_FILE];
	char *s;
	int r = cred_read(name, fallback_path, buf, sizeof(buf), &s);
	if (r < 0)
		return r;
	size_t n = strlen(s);
	if (n % 2 || !hex_valid_any(s))
		r = -EBADMSG;
	else if (n / 2 > max) {
		snprintf(too_long, sizeof(too_long),
			 "at most %zu bytes, %zu hexadecimal digits; it has %zu", max, 2 * max, n);
		r = -E2BIG;
	} else if (hex_decode(s, out, n / 2) < 0)
		r = -EBADMSG;
	else
		*ret_len = n / 2;
	cred_wipe(buf, sizeof(buf));
	return r;
}

int cred_load_text(const char *name, const char *fallback_path, char *out, size_t max)
{
	char buf[CRED_MAX_FILE];
	char *s;
	int r = cred_read(name, fallback_path, buf, sizeof(buf), &s);
	if (r < 0)
		return r;
	size_t n = strlen(s);
	if (n + 1 > max) {
		snprintf(too_long, sizeof(too_long), "at most %zu characters; it has %zu", max - 1,
			 n);
		r = -E2BIG;
	} else
		memcpy(out, s, n + 1);
	cred_wipe(buf, sizeof(buf));
	return r;
}
