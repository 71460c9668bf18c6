/* sqlsetup: SQLite's process-wide settings. */
#include "sqlsetup.h"

#include <errno.h>

#include <sqlite3.h>

#include "log.h"

int sql_process_setup(void)
{
	/* SQLITE_MISUSE once SQLite is initialized (a connection was opened). */
	if (sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0) == SQLITE_OK)
		return 0;
	log_warnx("SQLite was in use before its settings were made: its memory statistics "
		  "stay on (slower, not wrong)");
	return -EBUSY;
}
