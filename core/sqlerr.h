/* sqlerr: an SQLite result code as a negative errno, one mapping for every SQLite user. */
#pragma once

#include <stddef.h>

#include <sqlite3.h>

/*
 * 0 for OK, ROW and DONE; -ENOSPC (full), the system's errno or -EIO / -EACCES (I/O, cannot
 * open), -EROFS, -EBUSY (busy, locked), -ENOMEM, -EEXIST (a constraint: plain, primary key
 * or unique; -EINVAL for the other kinds), -EUCLEAN (corrupt, not a database), -EACCES
 * (permission, authorisation), -E2BIG, -EINTR, else -EIO. db may be NULL (no system errno).
 * Extended codes are understood.
 */
int sql_errno(sqlite3 *db, int rc);

/*
 * sqlite3_errmsg(db) in buf, followed by the system's own error when SQLite's last one on
 * db was an I/O or open failure that has one: "disk I/O error (No space left on device)"
 * where SQLite alone says "disk I/O error". db may be NULL ("cannot open"). Returns buf.
 */
const char *sql_errmsg(sqlite3 *db, char *buf, size_t len);
