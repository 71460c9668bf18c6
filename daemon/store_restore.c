/* store_restore: tpad --restore-store, a SQLite store put back from a copy, tpad stopped. */
#include "store_restore.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lockfile.h"
#include "sqlbackup.h"
#include "store.h"
#include "text.h"

/* The SQLite files that go with a store besides itself. */
static const char *const companions[] = {"-wal", "-shm"};

/*
 * Whom the restored files belong to: the store's owner, else its directory's (tpad's
 * user, under the unit's StateDirectory=), so that a restore run as root leaves tpad
 * files it can open. false when neither can be read.
 */
static bool store_owner(const char *path, struct stat *ret)
{
	if (stat(path, ret) == 0)
		return true;
	char d[PATH_MAX];
	return text_copy(d, sizeof(d), path) < sizeof(d) && stat(dirname(d), ret) == 0;
}

/* The copy must open with the key, be of a schema this tpad knows, and be whole. */
static int copy_check(const char *copy, const uint8_t *key, size_t key_len, char *err,
		      size_t errlen)
{
	struct stat st;
	if (stat(copy, &st) < 0) {
		int e = errno;
		snprintf(err, errlen, "%s: %s", copy, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", copy);
		return -EINVAL;
	}
	char wal[PATH_MAX];
	snprintf(wal, sizeof(wal), "%s-wal", copy);
	if (stat(wal, &st) == 0 && st.st_size > 0) {
		snprintf(err, errlen,
			 "%s has a write-ahead log beside it (%s): the copy is not whole without "
			 "it; take a copy with tpactl backup, or fold the log in first (sqlite3 %s "
			 "'PRAGMA wal_checkpoint(TRUNCATE)')",
			 copy, wal, copy);
		return -EINVAL;
	}
	const struct store_options o = {.backend = STORE_SQLITE,
					.path = copy,
					.key = key,
					.key_len = key_len,
					.existing = true};
	char why[400];
	int r = store_check(&o, why, sizeof(why));
	if (r < 0)
		snprintf(err, errlen, "%s cannot be restored: %s", copy, why);
	return r;
}

int store_restore(const char *path, const char *copy, const uint8_t *key, size_t key_len,
		  char *kept, size_t keptlen, char *err, size_t errlen)
{
	kept[0] = '\0';
	int lock = -1;
	int r = lockfile_take(path, "tpad", "SQLite store", &lock, err, errlen);
	if (r < 0)
		return r;
	struct stat old, from_st, owner;
	bool have_old = stat(path, &old) == 0, have_owner = store_owner(path, &owner);
	/* The lock file too, when this run made it: tpad must open it at its next start. */
	if (have_owner && geteuid() == 0 && fchown(lock, owner.st_uid, owner.st_gid) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot give %s.lock to the store's owner: %s", path,
			 strerror(-r));
		goto out;
	}
	if (have_old && stat(copy, &from_st) == 0 && from_st.st_dev == old.st_dev &&
	    from_st.st_ino == old.st_ino) {
		snprintf(err, errlen, "%s is the store itself (store.path): give a copy", copy);
		r = -EINVAL;
		goto out;
	}
	r = copy_check(copy, key, key_len, err, errlen);
	if (r < 0)
		goto out;
	char tmp[PATH_MAX], bak[PATH_MAX], from[PATH_MAX], to[PATH_MAX];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	char stamp[32];
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(tmp, sizeof(tmp), "%s.restore-tmp", path);
	snprintf(bak, sizeof(bak), "%s.before-restore-%s", path, stamp);
	unlink(tmp); /* left by a restore that stopped half-way: never the store itself */
	/* As tpactl backup copies: one snapshot, integrity-checked, synced, mode 0600. */
	char why[600];
	r = sql_backup_path(copy, tmp, NULL, why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen, "%s cannot be restored: %s", copy, why);
		goto out;
	}
	/* The store's owner (tpad's user), when root restores it for tpad. */
	if (have_owner && geteuid() == 0 && chown(tmp, owner.st_uid, owner.st_gid) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot give %s to the store's owner: %s", tmp, strerror(-r));
		unlink(tmp);
		goto out;
	}
	/*
	 * The old store stays whole under bak: the main file linked there first (path is
	 * never missing), then its log and shared memory moved beside it. Only then does the
	 * copy take path's place, in one rename: no WAL of the old store is left for SQLite to
	 * replay onto it.
	 */
	if (have_old && link(path, bak) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot keep the current store as %s: %s", bak, strerror(-r));
		unlink(tmp);
		goto out;
	}
	for (size_t i = 0; have_old && i < sizeof(companions) / sizeof(companions[0]); i++) {
		snprintf(from, sizeof(from), "%s%s", path, companions[i]);
		snprintf(to, sizeof(to), "%s%s", bak, companions[i]);
		if (rename(from, to) < 0 && errno != ENOENT) {
			r = -errno;
			snprintf(err, errlen,
				 "cannot move %s to %s: %s (the store is unchanged; %s "
				 "is a second name of it)",
				 from, to, strerror(-r), bak);
			unlink(tmp);
			goto out;
		}
	}
	if (rename(tmp, path) < 0) {
		r = -errno;
		snprintf(err, errlen, "cannot put %s in place: %s (the store before is %s)", tmp,
			 strerror(-r), bak);
		goto out;
	}
	r = sql_backup_sync_dir(path);
	if (r < 0)
		snprintf(err, errlen, "cannot sync the directory of %s: %s", path, strerror(-r));
	if (have_old)
		snprintf(kept, keptlen, "%s", bak);
out:
	if (lock >= 0)
		close(lock);
	return r;
}
