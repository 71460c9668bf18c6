/* sqlsetup: SQLite's process-wide settings, made once before any connection is opened. */
#pragma once

/*
 * Turn off SQLite's memory statistics (sqlite3_memory_used() and the soft heap limit,
 * which nothing here reads): with them on, each of SQLite's allocations takes a
 * process-wide mutex, 3.8 % of tpas's writer thread. Call it first in main(), before
 * anything opens a database. 0, or -EBUSY, logged, when SQLite is already in use (a
 * caller's mistake: the defaults then stay, slower and still right).
 */
int sql_process_setup(void);
