/* sqlbackup: consistent copies of a SQLite database (see sqlbackup.h). */
#include "sqlbackup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "sqlerr.h"

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t errlen, int e,
						      const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return e;
}

/* fsync the file or directory at path. */
static int sync_path(const char *path, bool dir)
{
	int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int r = fsync(fd) < 0 ? -errno : 0;
	close(fd);
	return r;
}

int sql_backup_sync_dir(const char *path)
{
	char dir[4096];
	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	return sync_path(dirname(dir), true);
}

/* Run PRAGMA integrity_check on db: 0 when it answers "ok". */
static int integrity_ok(sqlite3 *db, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
	if (rc != SQLITE_OK)
		return fail(err, errlen, sql_errno(db, rc), "integrity check: %s",
			    sqlite3_errmsg(db));
	rc = sqlite3_step(st);
	const char *v = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
	int e = 0;
	if (!v)
		e = fail(err, errlen, sql_errno(db, rc), "integrity check: %s", sqlite3_errmsg(db));
	else if (strcmp(v, "ok") != 0)
		e = fail(err, errlen, -EBADMSG, "the copy fails its integrity check: %s", v);
	sqlite3_finalize(st);
	return e;
}

int sql_backup_dest_ok(const char *dest, char *err, size_t errlen)
{
	struct stat sb;
	if (lstat(dest, &sb) < 0)
		return errno == ENOENT ? 0 : fail(err, errlen, -errno, "%s", strerror(errno));
	if (S_ISLNK(sb.st_mode) && stat(dest, &sb) < 0)
		return 0; /* a dangling link: rename replaces the link itself */
	if (!S_ISREG(sb.st_mode))
		return fail(err, errlen, -EISDIR, "exists and is not a regular file");
	if (sb.st_size == 0)
		return 0;
	static const char magic[16] = "SQLite format 3";
	char head[16] = {0};
	int fd = open(dest, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	ssize_t n = fd >= 0 ? read(fd, head, sizeof(head)) : -1;
	if (fd >= 0)
		close(fd);
	if (n != (ssize_t)sizeof(head) || memcmp(head, magic, sizeof(magic)) != 0)
		return fail(
		    err, errlen, -EEXIST,
		    "exists and is not a SQLite database (a backup replaces only an earlier "
		    "copy): move it away or choose another path");
	return 0;
}

/* Whether name is base followed by ".tmp-" and the six letters or digits of mkstemp. */
static bool is_leftover_of(const char *name, const char *base)
{
	size_t bl = strlen(base);
	if (strncmp(name, base, bl) != 0 || strncmp(name + bl, ".tmp-", 5) != 0)
		return false;
	const char *x = name + bl + 5;
	size_t n = 0;
	for (; x[n]; n++)
		if (!((x[n] >= 'a' && x[n] <= 'z') || (x[n] >= 'A' && x[n] <= 'Z') ||
		      (x[n] >= '0' && x[n] <= '9')))
			return false;
	return n == 6;
}

/*
 * Remove what interrupted copies to dest left beside it (their writer was killed between
 * creating DEST.tmp-XXXXXX and renaming it): each holds every sealed key of the store.
 * A copy being written is never touched: its writer holds a lock on it (flock) from
 * creation to rename, and a file is removed only when that lock can be taken. Returns
 * how many were removed.
 */
static int remove_leftovers(const char *dest)
{
	char dir[4096], base[4096];
	if (snprintf(dir, sizeof(dir), "%s", dest) >= (int)sizeof(dir) ||
	    snprintf(base, sizeof(base), "%s", dest) >= (int)sizeof(base))
		return 0;
	const char *d = dirname(dir), *b = basename(base);
	DIR *dp = opendir(d);
	if (!dp)
		return 0;
	int removed = 0;
	struct dirent *e;
	while ((e = readdir(dp))) {
		if (!is_leftover_of(e->d_name, b))
			continue;
		int fd = openat(dirfd(dp), e->d_name,
				O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
		struct stat sb;
		if (fd < 0)
			continue;
		if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) &&
		    flock(fd, LOCK_EX | LOCK_NB) == 0 && unlinkat(dirfd(dp), e->d_name, 0) == 0) {
			char journal[300];
			if (snprintf(journal, sizeof(journal), "%s-journal", e->d_name) <
			    (int)sizeof(journal))
				unlinkat(dirfd(dp), journal, 0);
			removed++;
		}
		close(fd);
	}
	closedir(dp);
	return removed;
}

/*
 * Create the temporary copy's file next to dest (template in tmp), mode 0600, and lock it
 * for as long as *ret_fd stays open, so that remove_leftovers() never takes it for an
 * interrupted copy's. 0 or a negative errno.
 */
static int create_locked(char *tmp, int *ret_fd)
{
	size_t len = strlen(tmp);
	for (int tries = 0; tries < 8; tries++) {
		memcpy(tmp + len - 6, "XXXXXX", 6);
		int fd = mkostemp(tmp, O_CLOEXEC); /* mode 0600 */
		if (fd < 0)
			return -errno;
		struct stat mine, now;
		if (fchmod(fd, 0600) < 0 || flock(fd, LOCK_EX) < 0) {
			int e = -errno;
			close(fd);
			unlink(tmp);
			return e;
		}
		/* Another backup's sweep may have removed it before the lock was ours. */
		if (fstat(fd, &mine) == 0 && stat(tmp, &now) == 0 && mine.st_ino == now.st_ino &&
		    mine.st_dev == now.st_dev) {
			*ret_fd = fd;
			return 0;
		}
		close(fd);
	}
	return -EAGAIN;
}

int sql_backup_db(sqlite3 *src, const char *dest, struct sql_backup_info *info, char *err,
		  size_t errlen)
{
	uint64_t t0 = clock_now_us();
	char tmp[4096];
	if (!dest || !*dest)
		return fail(err, errlen, -EINVAL, "no destination");
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-XXXXXX", dest) >= (int)sizeof(tmp))
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", dest);
	struct stat sb;
	char why[200];
	int bad = sql_backup_dest_ok(dest, why, sizeof(why));
	if (bad < 0)
		return fail(err, errlen, bad, "%s %s", dest, why);
	int leftovers = remove_leftovers(dest);
	int lock_fd = -1; /* held until the copy is renamed or removed */
	int e = create_locked(tmp, &lock_fd);
	if (e < 0)
		return fail(err, errlen, e, "cannot create %s: %s", tmp, strerror(-e));

	sqlite3 *db = NULL;
	int rc = sqlite3_open_v2(tmp, &db, SQLITE_OPEN_READWRITE, NULL);
	if (rc != SQLITE_OK) {
		e = fail(err, errlen, sql_errno(db, rc), "cannot open %s: %s", tmp,
			 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		goto out;
	}
	sqlite3_backup *b = sqlite3_backup_init(db, "main", src, "main");
	if (!b) {
		rc = sqlite3_errcode(db);
		e = fail(err, errlen, sql_errno(db, rc), "cannot start the backup: %s",
			 sqlite3_errmsg(db));
		goto out;
	}
	/* All pages in one step: one read transaction, one consistent snapshot. */
	rc = sqlite3_backup_step(b, -1);
	uint64_t pages = (uint64_t)sqlite3_backup_pagecount(b);
	int rc2 = sqlite3_backup_finish(b);
	if (rc != SQLITE_DONE || rc2 != SQLITE_OK) {
		int c = rc != SQLITE_DONE ? rc : rc2;
		e = fail(err, errlen, sql_errno(db, c), "the backup failed: %s", sqlite3_errstr(c));
		goto out;
	}
	/* A copy of a WAL database is one self-contained file in rollback-journal mode. */
	char *msg = NULL;
	rc = sqlite3_exec(db, "PRAGMA journal_mode=DELETE", NULL, NULL, &msg);
	if (rc != SQLITE_OK) {
		e = fail(err, errlen, sql_errno(db, rc), "cannot set the copy's journal mode: %s",
			 msg ? msg : sqlite3_errstr(rc));
		sqlite3_free(msg);
		goto out;
	}
	e = integrity_ok(db, err, errlen);
	if (e < 0)
		goto out;
	rc = sqlite3_close(db);
	db = NULL;
	if (rc != SQLITE_OK) {
		e = fail(err, errlen, sql_errno(NULL, rc), "cannot close the copy: %s",
			 sqlite3_errstr(rc));
		goto out;
	}
	if ((e = sync_path(tmp, false)) < 0) {
		fail(err, errlen, e, "cannot sync %s: %s", tmp, strerror(-e));
		goto out;
	}
	if (stat(tmp, &sb) < 0 || rename(tmp, dest) < 0) {
		e = fail(err, errlen, -errno, "cannot rename the copy to %s: %s", dest,
			 strerror(errno));
		goto out;
	}
	close(lock_fd);
	e = sql_backup_sync_dir(dest);
	if (e < 0) {
		fail(err, errlen, e, "cannot sync the directory of %s: %s", dest, strerror(-e));
		return e;
	}
	if (info) {
		info->bytes = (uint64_t)sb.st_size;
		info->pages = pages;
		info->ms = (clock_now_us() - t0) / 1000u;
		info->leftovers = (unsigned)leftovers;
	}
	return 0;
out:
	if (db)
		sqlite3_close(db);
	unlink(tmp);
	char journal[4200];
	snprintf(journal, sizeof(journal), "%s-journal", tmp);
	unlink(journal);
	close(lock_fd);
	return e;
}

int sql_backup_path(const char *db_path, const char *dest, struct sql_backup_info *info, char *err,
		    size_t errlen)
{
	sqlite3 *src = NULL;
	int rc = sqlite3_open_v2(db_path, &src, SQLITE_OPEN_READONLY, NULL);
	if (rc != SQLITE_OK) {
		int e = fail(err, errlen, sql_errno(src, rc), "cannot open %s: %s", db_path,
			     src ? sqlite3_errmsg(src) : sqlite3_errstr(rc));
		sqlite3_close(src);
		return e;
	}
	/* The writer holds its lock for the length of one group commit at most. */
	sqlite3_busy_timeout(src, 5000);
	int e = sql_backup_db(src, dest, info, err, errlen);
	sqlite3_close(src);
	return e;
}

int sql_backup_pre_migration(sqlite3 *db, const char *db_path, int from, char *ret_path,
			     size_t pathlen, char *err, size_t errlen)
{
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	if (snprintf(ret_path, pathlen, "%s.v%d-%s.bak", db_path, from, stamp) >= (int)pathlen)
		return fail(err, errlen, -ENAMETOOLONG, "%s: path too long", db_path);
	return sql_backup_db(db, ret_path, NULL, err, errlen);
}
