/* store_copy: copy a SQLite store into a PostgreSQL one (tpad --copy-store), resumable. */
#include "store_copy.h"
#include "store_backend.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>
#include <sqlite3.h>

#include "cred.h"
#include "lockfile.h"
#include "seal.h"
#include "store.h"
#include "store_url.h"

/*
 * Rows are copied as they are stored: the sealed AppKeys stay sealed (both stores use the
 * same store key, which is checked on both sides first). Each chunk of rows is one
 * PostgreSQL transaction; rows already there are skipped, so a copy that was interrupted
 * is resumed by running it again. A device the database holds with another record (from
 * another line) is a conflict: reported, never overwritten. Audit entries get new ids in
 * the shared database; how far they were copied is kept in its meta table, in the same
 * transaction as each chunk, so none is copied twice. At the end the counts are compared.
 */

#define CHUNK 500

/* Text of column i, or NULL for SQL NULL. */
static const char *col(sqlite3_stmt *st, int i)
{
	return sqlite3_column_type(st, i) == SQLITE_NULL ? NULL
							 : (const char *)sqlite3_column_text(st, i);
}

struct copy {
	sqlite3 *db;
	PGconn *pg;
	const char *instance;
	char progress_key[512];
	struct store_copy_counts n;
	char *err;
	size_t errlen;
	char (*conflicts)[17]; /* DevEUIs held by the database with another record */
	size_t n_conflicts;
};

/* A statement without parameters (BEGIN, COMMIT) on the database. */
static int pg_do(struct copy *c, const char *sql)
{
	return store_url_exec(c->pg, sql, 0, NULL, NULL, NULL, NULL, c->err, c->errlen);
}

/* One more row in the open chunk: commit the chunk once it holds CHUNK rows. */
static int chunk_row(struct copy *c, int *in_chunk)
{
	if (++*in_chunk < CHUNK)
		return 0;
	*in_chunk = 0;
	return pg_do(c, "COMMIT");
}

static bool is_conflict(const struct copy *c, const char *eui)
{
	for (size_t i = 0; i < c->n_conflicts; i++)
		if (strcmp(c->conflicts[i], eui) == 0)
			return true;
	return false;
}

/*
 * One device into the database unless it holds the DevEUI already: (1 if inserted, whether
 * the row there is this very record).
 */
static const char insert_device[] =
    "WITH d AS (INSERT INTO devices (dev_eui, join_eui, profile_id, serial, tkm_info,"
    " app_key_sealed, app_key_generated, state, owner_token, ref, last_error, origin, uid, pid,"
    " created_at, updated_at, attempts, maybe_at, instance) VALUES ($1, $2, $3, $4, $5, $6,"
    " $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
    " ON CONFLICT (dev_eui) DO NOTHING RETURNING 1)"
    " SELECT (SELECT count(*) FROM d), EXISTS (SELECT 1 FROM devices WHERE dev_eui = $1"
    " AND app_key_sealed IS NOT DISTINCT FROM $6 AND join_eui = $2"
    " AND tkm_info IS NOT DISTINCT FROM $5 AND state = $8"
    " AND owner_token IS NOT DISTINCT FROM $9)";

/*
 * Copy the devices; a device already there with the same record, state and token counts
 * as copied before. One the database holds otherwise (another record, or this one in
 * another state: FOREIGN on the line that met our import's 409, say) is a conflict:
 * reported, its rows not copied, the database's row untouched.
 */
static int copy_devices(struct copy *c)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(c->db,
			       "SELECT dev_eui, join_eui, profile_id, serial, tkm_info, "
			       "app_key_sealed, app_key_generated, state, owner_token, ref, "
			       "last_error, origin, uid, pid, created_at, updated_at, attempts, "
			       "maybe_at, instance FROM devices ORDER BY dev_eui",
			       -1, &st, NULL) != SQLITE_OK) {
		store_set_err(c->err, c->errlen, "cannot read the devices: %s", sqlite3_errmsg(c->db));
		return -EIO;
	}
	int e = 0, in_chunk = 0, rc;
	while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (in_chunk == 0)
			e = pg_do(c, "BEGIN");
		const char *v[19];
		int lens[19] = {0}, fmts[19] = {0};
		for (int i = 0; i < 19; i++)
			v[i] = col(st, i);
		v[6] = sqlite3_column_int(st, 6) ? "true" : "false";
		if (!v[18])
			v[18] = c->instance;
		if (v[5]) {
			v[5] = sqlite3_column_blob(st, 5);
			lens[5] = sqlite3_column_bytes(st, 5);
			fmts[5] = 1;
		}
		PGresult *res = NULL;
		e = e ? e
		      : store_url_exec(c->pg, insert_device, 19, v, lens, fmts, &res, c->err,
				       c->errlen);
		if (e)
			break;
		if (strcmp(PQgetvalue(res, 0, 0), "1") == 0) {
			c->n.devices++;
		} else if (strcmp(PQgetvalue(res, 0, 1), "t") == 0) {
			c->n.devices_there++;
		} else {
			char(*nc)[17] = realloc(c->conflicts, (c->n_conflicts + 1) * sizeof(*nc));
			if (!nc) {
				PQclear(res);
				e = -ENOMEM;
				break;
			}
			c->conflicts = nc;
			snprintf(c->conflicts[c->n_conflicts++], 17, "%s", v[0]);
			c->n.conflicts++;
		}
		PQclear(res);
		e = chunk_row(c, &in_chunk);
	}
	sqlite3_finalize(st);
	if (e == 0 && in_chunk)
		e = pg_do(c, "COMMIT");
	return e;
}

/* Copy the rows of a simple table whose primary key makes a second copy a no-op. */
static int copy_table(struct copy *c, const char *select, const char *insert, int ncols,
		      const bool *blob, uint64_t *count, int instance_col)
{
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(c->db, select, -1, &st, NULL) != SQLITE_OK) {
		store_set_err(c->err, c->errlen, "cannot read the store: %s", sqlite3_errmsg(c->db));
		return -EIO;
	}
	int e = 0, in_chunk = 0, rc;
	while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *eui = col(st, 0);
		if (eui && is_conflict(c, eui))
			continue;
		if (in_chunk == 0)
			e = pg_do(c, "BEGIN");
		const char *v[8];
		int lens[8] = {0}, fmts[8] = {0};
		for (int i = 0; i < ncols; i++) {
			v[i] = col(st, i);
			if (blob[i] && v[i]) {
				v[i] = sqlite3_column_blob(st, i);
				lens[i] = sqlite3_column_bytes(st, i);
				fmts[i] = 1;
			}
		}
		if (instance_col >= 0 && !v[instance_col])
			v[instance_col] = c->instance;
		PGresult *res = NULL;
		e = e ? e
		      : store_url_exec(c->pg, insert, ncols, v, lens, fmts, &res, c->err,
				       c->errlen);
		if (e)
			break;
		*count += strtoull(PQcmdTuples(res), NULL, 10);
		PQclear(res);
		e = chunk_row(c, &in_chunk);
	}
	sqlite3_finalize(st);
	if (e == 0 && in_chunk)
		e = pg_do(c, "COMMIT");
	return e;
}

/* Commit a chunk of audit entries with how far they go (the id of the last one). */
static int audit_chunk_commit(struct copy *c, long long last)
{
	char ls[32];
	snprintf(ls, sizeof(ls), "%lld", last);
	const char *p[] = {c->progress_key, ls};
	int e = store_url_exec(c->pg,
			       "INSERT INTO meta (key, value) VALUES ($1, convert_to($2, 'UTF8')) "
			       "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
			       2, p, NULL, NULL, NULL, c->err, c->errlen);
	return e ? e : pg_do(c, "COMMIT");
}

/* Copy the audit entries after the last one copied before, noting progress per chunk. */
static int copy_audit(struct copy *c)
{
	const char *pk[] = {c->progress_key};
	PGresult *res;
	int e = store_url_exec(
	    c->pg, "SELECT convert_from(value, 'UTF8')::bigint FROM meta WHERE key = $1", 1, pk,
	    NULL, NULL, &res, c->err, c->errlen);
	if (e)
		return e;
	long long last = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
	PQclear(res);
	sqlite3_stmt *st;
	if (sqlite3_prepare_v2(c->db,
			       "SELECT id, dev_eui, method, uid, pid, at, outcome, instance FROM audit "
			       "WHERE id > ?1 ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK) {
		store_set_err(c->err, c->errlen, "cannot read the audit trail: %s", sqlite3_errmsg(c->db));
		return -EIO;
	}
	sqlite3_bind_int64(st, 1, last);
	int in_chunk = 0, rc;
	while (e == 0 && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		if (in_chunk == 0)
			e = pg_do(c, "BEGIN");
		const char *v[7];
		for (int i = 0; i < 7; i++)
			v[i] = col(st, i + 1);
		if (!v[6])
			v[6] = c->instance;
		e = e ? e
		      : store_url_exec(
			    c->pg,
			    "INSERT INTO audit (dev_eui, method, uid, pid, at, outcome, instance) "
			    "VALUES ($1, $2, $3, $4, $5, $6, $7)",
			    7, v, NULL, NULL, NULL, c->err, c->errlen);
		last = sqlite3_column_int64(st, 0);
		c->n.audit++;
		if (e == 0 && ++in_chunk == CHUNK) {
			e = audit_chunk_commit(c, last);
			in_chunk = 0;
		}
	}
	sqlite3_finalize(st);
	if (e == 0 && in_chunk)
		e = audit_chunk_commit(c, last);
	return e;
}

static long long sqlite_count(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *st;
	long long n = -1;
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return n;
}

/*
 * Every device, attempt and label of the SQLite store is in the database (conflicts
 * aside): a device with its state and token, an attempt with its digest, not merely rows
 * of the same keys another line wrote.
 */
static int verify(struct copy *c)
{
	sqlite3_stmt *st;
	const char *tables[] = {"devices", "attempts", "labels"};
	for (int t = 0; t < 3; t++) {
		char sql[128];
		static const char *const cols[] = {", state, owner_token", ", n, digest", ""};
		snprintf(sql, sizeof(sql), "SELECT DISTINCT dev_eui%s FROM %s", cols[t], tables[t]);
		if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
			return -EIO;
		uint64_t want = 0, missing = 0;
		while (sqlite3_step(st) == SQLITE_ROW) {
			const char *eui = col(st, 0);
			if (!eui || is_conflict(c, eui))
				continue;
			want++;
			static const char *const where[] = {
			    " AND state = $2 AND owner_token IS NOT DISTINCT FROM $3",
			    " AND n = $2 AND digest IS NOT DISTINCT FROM $3", ""};
			char q[200];
			snprintf(q, sizeof(q), "SELECT 1 FROM %s WHERE dev_eui = $1%s", tables[t],
				 where[t]);
			const char *v[] = {eui, col(st, 1), col(st, 2)};
			PGresult *res;
			if (store_url_exec(c->pg, q, t == 2 ? 1 : 3, v, NULL, NULL, &res, c->err,
					   c->errlen) < 0) {
				sqlite3_finalize(st);
				return -EIO;
			}
			missing += PQntuples(res) == 0;
			PQclear(res);
		}
		sqlite3_finalize(st);
		if (missing) {
			store_set_err(c->err, c->errlen, "verification failed: %llu of %llu %s missing",
				(unsigned long long)missing, (unsigned long long)want, tables[t]);
			return -EIO;
		}
		if (t == 0)
			c->n.verified_devices = want;
		else if (t == 1)
			c->n.verified_attempts = want;
		else
			c->n.verified_labels = want;
	}
	return 0;
}

int store_copy_to_pg(const struct store_copy_options *o, struct store_copy_counts *ret,
		     char *err, size_t errlen)
{
	struct copy c = {.instance = o->instance, .err = err, .errlen = errlen};
	int e = 0;
	/* No store there: say why, and leave no lock file behind. */
	if (access(o->sqlite_path, R_OK) != 0) {
		int en = errno;
		store_set_err(err, errlen, "cannot open %s: %s", o->sqlite_path, strerror(en));
		*ret = c.n;
		return -en;
	}
	/* One tpad per SQLite store: the copy takes the same lock. */
	int lock_fd;
	int r = lockfile_take(o->sqlite_path, "tpad", "SQLite store", &lock_fd, err, errlen);
	if (r < 0)
		return r;
	if (sqlite3_open_v2(o->sqlite_path, &c.db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
		store_set_err(err, errlen, "cannot open %s: %s", o->sqlite_path,
			      c.db ? sqlite3_errmsg(c.db) : "out of memory");
		e = -EIO;
		goto out;
	}
	if (sqlite_count(c.db, "PRAGMA user_version") != 3) {
		store_set_err(err, errlen,
			"%s is not a store of schema version 3: start this tpad on it once to "
			"upgrade it, then copy",
			o->sqlite_path);
		e = -ENOTSUP;
		goto out;
	}
	/* The SQLite store's key must be this key: the sealed AppKeys are copied as they are. */
	{
		sqlite3_stmt *st;
		struct seal *seal = NULL;
		int ok = 0;
		if (seal_new(o->key, o->key_len, &seal) == 0 &&
		    sqlite3_prepare_v2(c.db, "SELECT value FROM meta WHERE key = 'key_check'", -1, &st,
				       NULL) == SQLITE_OK) {
			if (sqlite3_step(st) == SQLITE_ROW) {
				static const char aad[] = "tpad store key check v1";
				uint8_t plain[16];
				static const uint8_t zero[16];
				int len = sqlite3_column_bytes(st, 0);
				ok = seal_decrypt(seal, (const uint8_t *)aad, sizeof(aad) - 1,
						  sqlite3_column_blob(st, 0), (size_t)len, plain,
						  sizeof(plain)) == 0 &&
				     memcmp(plain, zero, sizeof(zero)) == 0;
			}
			sqlite3_finalize(st);
		}
		seal_free(seal);
		if (!ok) {
			store_set_err(err, errlen,
				"the store key does not match the key %s was created with",
				o->sqlite_path);
			e = -EBADMSG;
			goto out;
		}
	}
	/* Create or upgrade the database's schema and check its key, as tpad does. */
	{
		struct event_base *base = event_base_new();
		struct store *s = NULL;
		struct store_options so = {.backend = STORE_POSTGRESQL,
					   .url = o->url,
					   .password = o->password,
					   .instance = o->instance,
					   .key = o->key,
					   .key_len = o->key_len,
					   .connections = 2};
		e = base ? store_open(base, &so, &s, err, errlen) : -ENOMEM;
		store_close(s);
		if (base)
			event_base_free(base);
		if (e)
			goto out;
	}
	{
		const char *keys[] = {"dbname", "password", "application_name", NULL};
		const char *vals[] = {o->url, o->password, "tpad --copy-store", NULL};
		if (!o->password) {
			keys[1] = "application_name";
			vals[1] = "tpad --copy-store";
			keys[2] = NULL;
		}
		c.pg = PQconnectdbParams(keys, vals, 1);
		if (PQstatus(c.pg) != CONNECTION_OK) {
			char why[256];
			store_url_pq_line(PQerrorMessage(c.pg), "unknown database error", why,
					  sizeof(why));
			store_set_err(err, errlen, "cannot connect to the database: %s", why);
			e = -EIO;
			goto out;
		}
	}
	snprintf(c.progress_key, sizeof(c.progress_key), "copied-audit:%s:%s", o->instance,
		 o->sqlite_path);
	e = copy_devices(&c);
	static const bool att_blob[6] = {0};
	static const bool lab_blob[6] = {false, false, false, true, false, true};
	e = e ? e
	      : copy_table(&c,
			   "SELECT dev_eui, n, at, instance, digest, outcome FROM attempts "
			   "ORDER BY dev_eui, n",
			   "INSERT INTO attempts (dev_eui, n, at, instance, digest, outcome) VALUES "
			   "($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
			   6, att_blob, &c.n.attempts, 3);
	e = e ? e
	      : copy_table(&c,
			   "SELECT dev_eui, text, ec, matrix, image_opts, image FROM labels "
			   "ORDER BY dev_eui",
			   "INSERT INTO labels (dev_eui, text, ec, matrix, image_opts, image) VALUES "
			   "($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
			   6, lab_blob, &c.n.labels, -1);
	e = e ? e : copy_audit(&c);
	e = e ? e : verify(&c);
	if (e == 0) {
		/* Every audit entry up to the last one of the SQLite store was copied. */
		const char *pk[] = {c.progress_key};
		PGresult *res;
		e = store_url_exec(
		    c.pg, "SELECT convert_from(value, 'UTF8')::bigint FROM meta WHERE key = $1", 1,
		    pk, NULL, NULL, &res, err, errlen);
		if (e == 0) {
			long long done = PQntuples(res) ? strtoll(PQgetvalue(res, 0, 0), NULL, 10) : 0;
			PQclear(res);
			long long max = sqlite_count(c.db, "SELECT coalesce(max(id), 0) FROM audit");
			long long audit = sqlite_count(c.db, "SELECT count(*) FROM audit");
			if (done != max) {
				store_set_err(err, errlen,
					"verification failed: audit entries copied up to %lld of %lld",
					done, max);
				e = -EIO;
			} else {
				c.n.verified_audit = audit < 0 ? 0 : (uint64_t)audit;
			}
		}
	}
out:
	if (c.pg && e)
		PQclear(PQexec(c.pg, "ROLLBACK"));
	PQfinish(c.pg);
	sqlite3_close(c.db);
	free(c.conflicts);
	close(lock_fd);
	*ret = c.n;
	return e;
}
