/* sqlbackup: consistent copies of a SQLite database (a store, a journal), online or before a
 * migration. */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct sqlite3 sqlite3;

/* What a backup wrote. */
struct sql_backup_info {
	uint64_t bytes; /* size of the copy */
	uint64_t pages; /* database pages copied */
	uint64_t ms;	/* time taken */
	unsigned leftovers; /* interrupted copies to dest removed first (see sql_backup_db) */
};

/*
 * Copy the database open on src into dest with the SQLite online backup API, in one
 * step (one read transaction: a consistent snapshot, while other connections keep
 * writing in WAL mode). The copy is written to a temporary file created mode 0600 next
 * to dest, switched to rollback-journal mode (a single self-contained file), checked
 * with PRAGMA integrity_check, fsynced and renamed over dest; the directory is fsynced.
 * On failure nothing is left at dest or beside it (an earlier copy at dest stays). The
 * temporary file is locked (flock) from its creation to its rename; one that a killed
 * copy to the same dest left (DEST.tmp-XXXXXX, unlocked) is removed before the next copy.
 * src must not be in a write transaction of its own (SQLite refuses: -EBUSY). Blocking:
 * call it off the event loop. 0 with *info filled (info may be NULL), or a negative errno and a
 * reason.
 */
int sql_backup_db(sqlite3 *src, const char *dest, struct sql_backup_info *info, char *err,
		  size_t errlen);

/*
 * Whether a copy may go to dest: 0 when nothing is there, or an empty file, or a SQLite
 * database (an earlier copy, replaced); -EEXIST with a reason for anything else (a key,
 * a lock or a configuration file must never be replaced by a copy), -EISDIR for what is
 * not a regular file. sql_backup_db checks it too, just before it writes.
 */
int sql_backup_dest_ok(const char *dest, char *err, size_t errlen);

/* fsync the directory that holds path, so that a rename into it lasts. */
int sql_backup_sync_dir(const char *path);

/* The same from the database file at db_path, opened read-only for the copy. */
int sql_backup_path(const char *db_path, const char *dest, struct sql_backup_info *info, char *err,
		    size_t errlen);

/*
 * The copy taken before migrating a database's schema from version from: next to
 * db_path as "<db_path>.v<from>-<YYYYmmddTHHMMSSZ>.bak"; its path goes to ret_path (size
 * pathlen). Call it on the connection that is about to migrate, before it begins the
 * migration's transaction (the daemon is the only writer while it opens its database).
 */
int sql_backup_pre_migration(sqlite3 *db, const char *db_path, int from, char *ret_path,
			     size_t pathlen, char *err, size_t errlen);
