/* sqlkey: a SQLite store's key check value, so that a store opened with another key is refused. */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>

struct seal;

/*
 * Check the seal's key against the key check value of the database (a block of zeros
 * sealed with aad, kept in table meta (key TEXT PRIMARY KEY, value BLOB) under
 * 'key_check'), or, when there is none and ret_written is not NULL, write one
 * (*ret_written true). 0; -ENOENT when there is none (ret_written NULL); -EBADMSG when the
 * value was sealed with another key; a negative errno from SQLite (sql_errno()). The
 * caller holds the transaction it wants the write in.
 */
int sql_key_check(sqlite3 *db, struct seal *seal, const char *aad, bool *ret_written);
