/* store_restore: tpad --restore-store, a SQLite store put back from a copy, tpad stopped. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/*
 * Put the SQLite store at path back from copy (a tpactl backup, or the .bak an upgrade
 * made), while no tpad holds path's lock. The copy is checked first with key (it must open
 * with it, and be of no newer schema) and must be whole (no copy-wal beside it); it is
 * copied as tpactl backup copies (sql_backup_path: one snapshot, integrity-checked). The
 * store it replaces is kept, whole: path.before-restore-TIME and its -wal and -shm; its
 * WAL is never replayed onto the copy (what a plain cp over path leaves to happen). The
 * new file and the lock file take the old store's owner (none: its directory's). Returns
 * 0 with the kept name in kept (empty when there was no store), or a negative errno with
 * one line in err; nothing is changed then.
 */
int store_restore(const char *path, const char *copy, const uint8_t *key, size_t key_len,
		  char *kept, size_t keptlen, char *err, size_t errlen);
