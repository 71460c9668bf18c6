/* sqlerr: an SQLite result code as a negative errno. */
#include "sqlerr.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int sql_errno(sqlite3 *db, int rc)
{
	switch (rc & 0xff) {
	case SQLITE_OK:
	case SQLITE_ROW:
	case SQLITE_DONE:
		return 0;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_IOERR:
	case SQLITE_CANTOPEN: {
		int e = db ? sqlite3_system_errno(db) : 0;
		if (e > 0)
			return -e;
		return (rc & 0xff) == SQLITE_IOERR ? -EIO : -EACCES;
	}
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_NOMEM:
		return -ENOMEM;
	case SQLITE_CONSTRAINT:
		if (rc == SQLITE_CONSTRAINT || rc == SQLITE_CONSTRAINT_PRIMARYKEY ||
		    rc == SQLITE_CONSTRAINT_UNIQUE)
			return -EEXIST;
		return -EINVAL;
	case SQLITE_CORRUPT:
	case SQLITE_NOTADB:
		return -EUCLEAN;
	case SQLITE_PERM:
	case SQLITE_AUTH:
		return -EACCES;
	case SQLITE_TOOBIG:
		return -E2BIG;
	case SQLITE_INTERRUPT:
		return -EINTR;
	default:
		return -EIO;
	}
}

const char *sql_errmsg(sqlite3 *db, char *buf, size_t len)
{
	if (!db) {
		snprintf(buf, len, "cannot open");
		return buf;
	}
	int primary = sqlite3_extended_errcode(db) & 0xff;
	int e = sqlite3_system_errno(db);
	if (e > 0 && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN))
		snprintf(buf, len, "%s (%s)", sqlite3_errmsg(db), strerror(e));
	else
		snprintf(buf, len, "%s", sqlite3_errmsg(db));
	return buf;
}
