/* sqlsetup: the settings hold once made, and cannot be made once SQLite is in use. */
#include <errno.h>

#include <sqlite3.h>

#include "sqlsetup.h"
#include "tap.h"

int main(void)
{
	CHECK_INT(sql_process_setup(), 0);
	/* Memory statistics off: an open connection's allocations are not counted. */
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open(":memory:", &db), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (randomblob(9000))",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	CHECK_INT(sqlite3_memory_used(), 0);
	/* Too late once SQLite is initialized. */
	CHECK_INT(sql_process_setup(), -EBUSY);
	sqlite3_close(db);
	return tap_done();
}
