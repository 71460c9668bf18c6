/* sqlerr: an SQLite result code as a negative errno, one mapping for every SQLite user. */
#pragma once

#include <sqlite3.h>

/*
 * 0 for OK, ROW and DONE; -ENOSPC (full), the system's errno or -EIO / -EACCES (I/O, cannot
 * open), -EROFS, -EBUSY (busy, locked), -ENOMEM, -EEXIST (a constraint: plain, primary key
 * or unique; -EINVAL for the other kinds), -EUCLEAN (corrupt, not a database), -EACCES
 * (permission, authorisation), -E2BIG, -EINTR, else -EIO. db may be NULL (no system errno).
 * Extended codes are understood.
 */
int sql_errno(sqlite3 *db, int rc);
