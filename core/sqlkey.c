/* sqlkey: a SQLite store's key check value, so that a store opened with another key is refused. */
#include "sqlkey.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "seal.h"
#include "sqlerr.h"

#define KEY_CHECK_LEN 16

int sql_key_check(sqlite3 *db, struct seal *seal, const char *aad, bool *ret_written)
{
	static const uint8_t zero[KEY_CHECK_LEN];
	if (ret_written)
		*ret_written = false;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'key_check'", -1, &st,
				    NULL);
	if (rc != SQLITE_OK)
		return sql_errno(db, rc);
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		uint8_t plain[KEY_CHECK_LEN];
		const void *blob = sqlite3_column_blob(st, 0);
		int len = sqlite3_column_bytes(st, 0);
		int e = blob && (size_t)len == sizeof(plain) + SEAL_OVERHEAD
			    ? seal_decrypt(seal, (const uint8_t *)aad, strlen(aad), blob,
					   (size_t)len, plain, sizeof(plain))
			    : -EBADMSG;
		sqlite3_finalize(st);
		return e == 0 && memcmp(plain, zero, sizeof(plain)) == 0 ? 0 : -EBADMSG;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE)
		return sql_errno(db, rc);
	if (!ret_written)
		return -ENOENT;

	uint8_t blob[KEY_CHECK_LEN + SEAL_OVERHEAD];
	int e = seal_encrypt(seal, (const uint8_t *)aad, strlen(aad), zero, sizeof(zero), blob,
			     sizeof(blob));
	if (e < 0)
		return e;
	rc = sqlite3_prepare_v2(db, "INSERT INTO meta (key, value) VALUES ('key_check', ?1)", -1,
				&st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_bind_blob(st, 1, blob, sizeof(blob), SQLITE_STATIC);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(st);
		sqlite3_finalize(st);
	}
	if (rc != SQLITE_DONE && rc != SQLITE_OK)
		return sql_errno(db, rc);
	*ret_written = true;
	return 0;
}
