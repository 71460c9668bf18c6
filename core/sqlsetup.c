/* sqlsetup: SQLite's process-wide settings. */
#include "sqlsetup.h"

#include <errno.h>

#include <sqlite3.h>

int sql_process_setup(void)
{
	/* SQLITE_MISUSE once SQLite is initialized (a connection was opened). */
	return sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK ? 0 : -EBUSY;
}
