/* Unit tests of store_backup: online copies of a WAL database, 0600, checked, atomic. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sqlbackup.h"
#include "tap.h"

static char dir[] = "/tmp/tpad-backup-XXXXXX";

static long long count(const char *path)
{
	sqlite3 *db;
	long long n = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
		sqlite3_stmt *st;
		if (sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW)
			n = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return n;
}

static const char *pragma(const char *path, const char *sql, char *buf, size_t len)
{
	sqlite3 *db;
	buf[0] = '\0';
	if (sqlite3_open(path, &db) == SQLITE_OK) {
		sqlite3_stmt *st;
		if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
		    sqlite3_step(st) == SQLITE_ROW)
			snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
	return buf;
}

int main(void)
{
	CHECK(mkdtemp(dir) != NULL);
	char db_path[256], dest[256], buf[64], err[512];
	snprintf(db_path, sizeof(db_path), "%s/store.db", dir);
	snprintf(dest, sizeof(dest), "%s/copy.db", dir);

	sqlite3 *db;
	CHECK_INT(sqlite3_open(db_path, &db), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db,
			       "PRAGMA journal_mode=WAL; CREATE TABLE t(x INTEGER, y BLOB);"
			       "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c "
			       "WHERE i < 5000) INSERT INTO t SELECT i, randomblob(100) FROM c;",
			       NULL, NULL, NULL),
		  SQLITE_OK);

	/* A copy while the writer's connection stays open, with its WAL not checkpointed. */
	struct sql_backup_info info = {0};
	umask(022);
	CHECK_INT(sql_backup_path(db_path, dest, &info, err, sizeof(err)), 0);
	CHECK_INT(count(dest), 5000);
	struct stat sb;
	CHECK(stat(dest, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	CHECK_INT((long long)info.bytes, (long long)sb.st_size);
	CHECK(info.pages > 10);
	CHECK_STR(pragma(dest, "PRAGMA journal_mode", buf, sizeof(buf)), "delete");
	CHECK_STR(pragma(dest, "PRAGMA integrity_check", buf, sizeof(buf)), "ok");

	/* A second copy replaces the first atomically; nothing is left beside it. */
	CHECK_INT(sqlite3_exec(db, "DELETE FROM t WHERE x > 100", NULL, NULL, NULL), SQLITE_OK);
	CHECK_INT(sql_backup_path(db_path, dest, &info, err, sizeof(err)), 0);
	CHECK_INT(count(dest), 100);

	/*
	 * What a killed copy to dest left (DEST.tmp-XXXXXX, its journal) goes before the next
	 * copy; a copy being written (its file locked) stays, and so does every other name.
	 */
	char left[300], leftj[320], live[300], other[300], short5[300];
	snprintf(left, sizeof(left), "%s.tmp-AbC123", dest);
	snprintf(leftj, sizeof(leftj), "%s-journal", left);
	snprintf(live, sizeof(live), "%s.tmp-Zz9999", dest);
	snprintf(other, sizeof(other), "%s/other.db.tmp-AbC123", dir);
	snprintf(short5, sizeof(short5), "%s.tmp-AbC12", dest);
	const char *made[] = {left, leftj, live, other, short5};
	for (size_t i = 0; i < sizeof(made) / sizeof(made[0]); i++) {
		FILE *m = fopen(made[i], "w");
		CHECK(m != NULL);
		if (m)
			fclose(m);
	}
	int live_fd = open(live, O_RDONLY);
	CHECK(live_fd >= 0 && flock(live_fd, LOCK_EX) == 0);
	CHECK_INT(sql_backup_path(db_path, dest, &info, err, sizeof(err)), 0);
	CHECK_INT((int)info.leftovers, 1);
	CHECK(access(left, F_OK) < 0 && access(leftj, F_OK) < 0);
	CHECK(access(live, F_OK) == 0 && access(other, F_OK) == 0 && access(short5, F_OK) == 0);
	CHECK_INT(count(dest), 100);
	CHECK_INT(sql_backup_path(db_path, dest, &info, err, sizeof(err)), 0);
	CHECK_INT((int)info.leftovers, 0);
	close(live_fd);
	for (size_t i = 2; i < sizeof(made) / sizeof(made[0]); i++)
		unlink(made[i]);

	/* Before a migration: from the migrating connection, before its transaction. */
	char pre[512];
	CHECK_INT(sql_backup_pre_migration(db, db_path, 2, pre, sizeof(pre), err, sizeof(err)),
		  0);
	CHECK(strstr(pre, "/store.db.v2-") && strstr(pre, "Z.bak"));
	CHECK_INT(count(pre), 100);
	CHECK_INT(sqlite3_exec(db, "BEGIN IMMEDIATE; ALTER TABLE t ADD COLUMN z; COMMIT", NULL,
			       NULL, NULL),
		  SQLITE_OK);
	/* Inside a write transaction of the same connection SQLite refuses: -EBUSY, said. */
	CHECK_INT(sqlite3_exec(db, "BEGIN IMMEDIATE; DELETE FROM t", NULL, NULL, NULL), SQLITE_OK);
	CHECK_INT(sql_backup_db(db, dest, NULL, err, sizeof(err)), -EBUSY);
	CHECK_INT(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
	CHECK_INT(count(dest), 100);

	/* Failures: a missing directory, a directory as the target, a source that is no
	 * database; each says why and leaves nothing behind. */
	char bad[300];
	snprintf(bad, sizeof(bad), "%s/none/copy.db", dir);
	err[0] = '\0';
	CHECK_INT(sql_backup_path(db_path, bad, NULL, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "cannot create") != NULL);
	CHECK_INT(sql_backup_path(db_path, dir, NULL, err, sizeof(err)), -EISDIR);
	char junk[300];
	snprintf(junk, sizeof(junk), "%s/junk.db", dir);
	FILE *f = fopen(junk, "w");
	fputs("this is not a database, not at all, and long enough to be read as a header "
	      "by sqlite which checks the first 100 bytes of a file for its magic string",
	      f);
	fclose(f);
	snprintf(bad, sizeof(bad), "%s/fromjunk.db", dir);
	CHECK(sql_backup_path(junk, bad, NULL, err, sizeof(err)) < 0);
	CHECK(access(bad, F_OK) < 0);

	sqlite3_close(db);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "ls %s | grep -c tmp- > /dev/null || true; rm -rf %s", dir, dir);
	/* No temporary file survived any of the above. */
	char lscmd[300];
	snprintf(lscmd, sizeof(lscmd), "ls -a %s | grep -q 'tmp-'", dir);
	CHECK(system(lscmd) != 0);
	CHECK(system(cmd) == 0);
	return tap_done();
}
