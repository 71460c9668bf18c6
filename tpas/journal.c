/* journal: tpas's durable store (SQLite): sealed ASTKs and AppSKeys, the uplink journal, FCntDn. */
#include "journal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "clock.h"
#include "cred.h"
#include "hex.h"
#include "log.h"
#include "notify.h"
#include "seal.h"
#include "sqlbackup.h"
#include "sqlerr.h"
#include "sqlkey.h"
#include "sqlwriter.h"
#include "uplink.h"
#include "upseen.h"
#include "wipe.h"

#define SCHEMA_VERSION 1

/*
 * The uplink table. Up to schema 2 it had UNIQUE (dev_eui, session_id, fcnt_up): each
 * uplink then went onto a leaf page of its own device's, so a commit wrote about one page
 * per uplink. That key is now uplink_seen's, filled in bulk.
 * Up to schema 3 seq was AUTOINCREMENT and received_ms had an index: the counter's row in
 * sqlite_sequence and that index's pages were 4 of the 16 pages a commit of some 50 uplinks
 * wrote (the WAL's frames, by page). seq is now SEQ_LAST plus one, and retention walks seq
 * order. (A journal migrated from schema 3 keeps its AUTOINCREMENT: see seq_to_meta().)
 */
#define UPLINK_COLUMNS                                                                             \
	" seq INTEGER PRIMARY KEY, received_ms INTEGER NOT NULL,"                                  \
	" session_id INTEGER NOT NULL, dev_eui TEXT NOT NULL, customer_id TEXT NOT NULL,"          \
	" dev_addr TEXT NOT NULL, fport INTEGER, fcnt_up INTEGER NOT NULL, fcnt_dn INTEGER,"       \
	" time TEXT NOT NULL, payload TEXT NOT NULL, encrypted INTEGER NOT NULL,"                  \
	" radio TEXT NOT NULL, token BLOB, token_time INTEGER"
/*
 * The last seq given: the newest uplink's or, once retention has removed every uplink,
 * meta's uplink_seq (the last one removed, or AUTOINCREMENT's counter of a journal of
 * schema 3). A seq is never given twice.
 */
#define SEQ_LAST                                                                                   \
	"MAX(IFNULL((SELECT MAX(seq) FROM uplink), 0),"                                            \
	" IFNULL((SELECT value FROM meta WHERE key = 'uplink_seq'), 0))"
#define UPLINK_COLUMN_NAMES                                                                        \
	"seq, received_ms, session_id, dev_eui, customer_id, dev_addr, fport, fcnt_up, fcnt_dn,"   \
	" time, payload, encrypted, radio, token, token_time"

/*
 * The last seq whose key uplink_seen holds (if its row is still there): written by each
 * move, in its transaction (0: none moved yet).
 */
#define SEEN_THROUGH "IFNULL((SELECT value FROM meta WHERE key = 'seen_through'), 0)"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS astk ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, label TEXT NOT NULL, customer_id TEXT NOT NULL,"
    " dev_eui TEXT NOT NULL, sealed BLOB NOT NULL, created_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS session ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT, customer_id TEXT NOT NULL, dev_eui TEXT NOT NULL,"
    " fp TEXT NOT NULL, sealed BLOB NOT NULL, dev_addr TEXT NOT NULL,"
    " fcnt_dn_next INTEGER NOT NULL DEFAULT 0, received_ms INTEGER NOT NULL,"
    " UNIQUE (customer_id, dev_eui, fp));"
    "CREATE INDEX IF NOT EXISTS session_dev ON session (dev_eui, id);"
    "CREATE TABLE IF NOT EXISTS uplink (" UPLINK_COLUMNS ");"
    /* (DevEUI, session, FCntUp) of the uplinks up to meta's seen_through: filled some
     * thousand rows at a time, in key order (see struct journal's seen). Up to schema 4 it
     * had an index on seq (uplink_seen_seq), a quarter of a move's work: SEEN_THROUGH. */
    "CREATE TABLE IF NOT EXISTS uplink_seen (dev_eui TEXT NOT NULL, session_id INTEGER NOT NULL,"
    " fcnt_up INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (dev_eui, session_id, fcnt_up))"
    " WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);";

/* What the key check value (core/sqlkey) is sealed with. */
static const char key_check_aad[] = "tpas store key check v1";

enum stmt_id {
	ST_ASTK_ADD,
	ST_ASTK_EXACT,
	ST_ASTK_LABEL,
	ST_ASTK_SCOPE,
	ST_SESSION_FIND,
	ST_SESSION_ADD,
	ST_SESSION_PUT,
	ST_SESSION_ID,
	ST_SESSION_NEWEST,
	ST_SESSION_NEWEST_ANY,
	ST_SESSION_AT,
	ST_SESSION_OF_DEVICE,
	ST_UPLINK_FIND,
	ST_UPLINK_ADD,
	ST_UPLINK_SESSION,
	ST_UPLINKS_AFTER,
	ST_RECEIVED_AFTER,
	ST_FCNT_GET,
	ST_FCNT_SET,
	ST_TOKEN_FIND,
	ST_SEEN_FIND,
	ST_SEEN_MOVE,
	ST_SEEN_LAST,
	ST_SEEN_MARK,
	ST_RECENT,
	ST_SEEN_HIGH,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_ASTK_ADD] = "INSERT INTO astk (label, customer_id, dev_eui, sealed, created_ms)"
		    " VALUES (?, ?, ?, ?, ?)",
    /* The newest of exactly this label and scope (an import of the same key again). */
    [ST_ASTK_EXACT] =
	"SELECT id, label, customer_id, dev_eui, sealed FROM astk"
	" WHERE label = ? AND customer_id = ? AND dev_eui = ? ORDER BY id DESC LIMIT 1",
    [ST_ASTK_LABEL] = "SELECT id, label, customer_id, dev_eui, sealed FROM astk"
		      " WHERE label = ? ORDER BY id DESC LIMIT 1",
    /* Device scope first, then customer scope, then unscoped; newest first in each. */
    [ST_ASTK_SCOPE] = "SELECT id, label, customer_id, dev_eui, sealed FROM astk"
		      " WHERE label = '' AND (dev_eui = ?1 OR dev_eui = '')"
		      " AND (customer_id = ?2 OR customer_id = '')"
		      " ORDER BY (dev_eui <> '') DESC, (customer_id <> '') DESC, id DESC LIMIT 1",
    [ST_SESSION_FIND] =
	"SELECT id, customer_id, dev_eui, dev_addr, sealed, fcnt_dn_next,"
	" received_ms FROM session WHERE customer_id = ? AND dev_eui = ? AND fp = ?",
    [ST_SESSION_ADD] = "INSERT INTO session (customer_id, dev_eui, fp, sealed, dev_addr,"
		       " fcnt_dn_next, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
    [ST_SESSION_PUT] = "INSERT INTO session (customer_id, dev_eui, fp, sealed, dev_addr,"
		       " fcnt_dn_next, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?)"
		       " ON CONFLICT (customer_id, dev_eui, fp) DO NOTHING",
    [ST_SESSION_ID] = "SELECT id FROM session WHERE customer_id = ? AND dev_eui = ? AND fp = ?",
    [ST_SESSION_NEWEST] = "SELECT id, customer_id, dev_eui, dev_addr, sealed, fcnt_dn_next,"
			  " received_ms FROM session WHERE customer_id = ? AND dev_eui = ?"
			  " ORDER BY received_ms DESC, id DESC LIMIT 1",
    [ST_SESSION_NEWEST_ANY] = "SELECT id, customer_id, dev_eui, dev_addr, sealed, fcnt_dn_next,"
			      " received_ms FROM session WHERE dev_eui = ?"
			      " ORDER BY received_ms DESC, id DESC LIMIT 1",
    /* The newest session begun by then; with none (clocks), the newest. */
    [ST_SESSION_AT] = "SELECT id, customer_id, dev_eui, dev_addr, sealed, fcnt_dn_next,"
		      " received_ms FROM session WHERE customer_id = ?1 AND dev_eui = ?2"
		      " ORDER BY (received_ms <= ?3) DESC, received_ms DESC, id DESC LIMIT 1",
    [ST_SESSION_OF_DEVICE] = "SELECT id, customer_id, dev_eui, dev_addr, sealed, fcnt_dn_next,"
			     " received_ms FROM session WHERE customer_id = ? AND dev_eui = ?"
			     " ORDER BY id DESC",
    /* Exact on any connection: uplink_seen, then the rows not moved there yet. */
    [ST_UPLINK_FIND] =
	"SELECT seq FROM uplink_seen WHERE dev_eui = ?1 AND session_id = ?2 AND fcnt_up = ?3"
	" UNION ALL SELECT seq FROM uplink WHERE seq > " SEEN_THROUGH
	" AND dev_eui = ?1 AND session_id = ?2 AND fcnt_up = ?3 LIMIT 1",
    [ST_UPLINK_ADD] =
	"INSERT INTO uplink (seq, received_ms, session_id, dev_eui, customer_id, dev_addr,"
	" fport, fcnt_up, fcnt_dn, time, payload, encrypted, radio, token, token_time)"
	" VALUES (" SEQ_LAST " + 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    [ST_UPLINK_SESSION] =
	"UPDATE session SET dev_addr = CASE WHEN ?2 <> '' THEN ?2 ELSE dev_addr END,"
	" fcnt_dn_next = MAX(fcnt_dn_next, ?3),"
	" received_ms = CASE WHEN ?4 > 0 THEN MIN(received_ms, ?4) ELSE received_ms END"
	" WHERE id = ?1",
    [ST_UPLINKS_AFTER] = "SELECT seq, received_ms, dev_eui, customer_id, dev_addr, fport, fcnt_up,"
			 " fcnt_dn, time, payload, encrypted, radio FROM uplink WHERE seq > ?"
			 " ORDER BY seq LIMIT ?",
    [ST_RECEIVED_AFTER] = "SELECT received_ms FROM uplink WHERE seq > ? ORDER BY seq LIMIT 1",
    [ST_FCNT_GET] = "SELECT fcnt_dn_next FROM session WHERE id = ?",
    [ST_FCNT_SET] = "UPDATE session SET fcnt_dn_next = ? WHERE id = ?",
    [ST_TOKEN_FIND] = "SELECT seq FROM uplink WHERE token_time = ?1 AND token = ?2",
    [ST_SEEN_FIND] =
	"SELECT seq FROM uplink_seen WHERE dev_eui = ? AND session_id = ? AND fcnt_up = ?",
    /* In key order: each leaf page of the index is written once per move. */
    [ST_SEEN_MOVE] = "INSERT OR IGNORE INTO uplink_seen (dev_eui, session_id, fcnt_up, seq)"
		     " SELECT dev_eui, session_id, fcnt_up, seq FROM uplink WHERE seq > ?"
		     " ORDER BY dev_eui, session_id, fcnt_up",
    [ST_SEEN_LAST] = "SELECT IFNULL(MAX(seq), 0) FROM uplink",
    [ST_SEEN_MARK] = "INSERT INTO meta (key, value) VALUES ('seen_through', ?1)"
		     " ON CONFLICT (key) DO UPDATE SET value = ?1",
    [ST_RECENT] = "SELECT dev_eui, session_id, fcnt_up, seq FROM uplink WHERE seq > ?",
    /* One step down the key: the highest FCntUp of (DevEUI, session), plus one; 0: none. */
    [ST_SEEN_HIGH] = "SELECT IFNULL(MAX(fcnt_up) + 1, 0) FROM uplink_seen WHERE dev_eui = ?"
		     " AND session_id = ?",
};

/* The writer connection's statements. */
enum wstmt_id {
	WS_ADD,
	WS_SESSION,
	WS_SEEN_FIND,
	WS_TOKEN_FIND,
	WS_SEEN_MOVE,
	WS_SEEN_LAST,
	WS_SEEN_MARK,
	WS_RECENT,
	WS_FIND,
	WS_SEEN_HIGH,
	WS_SESSION_PUT,
	WS_SESSION_ID,
	WS_FCNT_GET,
	WS_FCNT_SET,
	WS_COUNT
};

/* Which statement of a connection each WS_* is. */
static const enum stmt_id ws_stmt[WS_COUNT] = {
    [WS_ADD] = ST_UPLINK_ADD,	       [WS_SESSION] = ST_UPLINK_SESSION,
    [WS_SEEN_FIND] = ST_SEEN_FIND,     [WS_TOKEN_FIND] = ST_TOKEN_FIND,
    [WS_SEEN_MOVE] = ST_SEEN_MOVE,     [WS_SEEN_LAST] = ST_SEEN_LAST,
    [WS_SEEN_MARK] = ST_SEEN_MARK,     [WS_RECENT] = ST_RECENT,
    [WS_FIND] = ST_UPLINK_FIND,	       [WS_SEEN_HIGH] = ST_SEEN_HIGH,
    [WS_SESSION_PUT] = ST_SESSION_PUT, [WS_SESSION_ID] = ST_SESSION_ID,
    [WS_FCNT_GET] = ST_FCNT_GET,       [WS_FCNT_SET] = ST_FCNT_SET,
};

/* Uplinks moved into uplink_seen once this many are in the recent set. */
#define SEEN_MOVE_AT 8192
/*
 * While moves fail (a disk nearly full takes the uplinks but not a move's thousands of
 * rows), the recent set grows: at this many moves' worth it is dropped, and replays are
 * looked up in the table until a move succeeds (tried again each seen_move_at uplinks).
 */
#define RECENT_MAX_MOVES 8
/* Sessions whose highest FCntUp is kept past a move (at most about 5 MiB); else read again. */
#define HIGH_MAX 32768
/* How long the loop's connection waits for a lock before it gives up (SQLITE_BUSY). */
#define LOOP_BUSY_MS 5000
/* WAL frames after a commit of the loop's connection at which the writer checkpoints. */
#define LOOP_CHECKPOINT_FRAMES 1000

struct journal {
	sqlite3 *db;
	uint64_t busy_since_us; /* loop_busy(): when this wait for a lock began */
	struct seal *seal;
	sqlite3_stmt *st[ST_COUNT];
	uint64_t commits;
	/* Writes on this connection that failed for the store (the writer counts its own), and
	 * whether the last write on either failed: since when, and why. */
	uint64_t failures;
	int64_t failing_since_ms;
	char last_error[160];
	char *path;
	/* The group-commit writer thread and its connection's statements. */
	struct sqlwriter *writer;
	sqlite3_stmt *wst[WS_COUNT];
	journal_done_fn *done;
	void *done_arg;
	uint64_t takes; /* downlink counters the writer handed back (taken or not): not uplinks */
	/*
	 * A replay with a new Time is the same (DevEUI, session, FCntUp): found in uplink_seen,
	 * which holds the uplinks up to seen_through, or in recent, which holds every one
	 * committed after it. Both belong to the connection that writes uplinks: the writer
	 * thread's once it runs, else this one's. recent follows what is committed: after a
	 * transaction that failed it is read again from the table (recent_ok false until then:
	 * each uplink is then looked up in the table, slower but exact).
	 */
	struct upseen *recent;
	int64_t seen_through;
	bool recent_ok;
	size_t seen_move_at;
	/*
	 * The set dropped for its size (RECENT_MAX_MOVES): not read again after each
	 * transaction, a move tried once inserted has grown by seen_move_at since tried_at.
	 */
	bool recent_dropped;
	uint64_t inserted, tried_at;
	uint64_t prune_read; /* rows old_uplinks() stepped over (journal_prune_rows_read()) */
	/*
	 * Per (DevEUI, session), one more than the highest FCntUp journaled, or more (kept as
	 * the key (DevEUI, session, 0)): an uplink at or above it, as the LRC sends a device's
	 * new ones, is no replay without a look anywhere. Read from uplink_seen when missing,
	 * raised by every insert (a rolled-back or removed one leaves it higher, which only
	 * costs a look); emptied only by a move (once it holds more than HIGH_MAX sessions),
	 * when uplink_seen holds everything.
	 * high_ok false (it could not take a session): not used until the next move.
	 */
	struct upseen *high;
	bool high_ok;
};

/* The associated data that binds a sealed key to its row's identity. */
static void aad_astk(char *buf, size_t n, const char *label, const char *customer,
		     const char *dev_eui)
{
	snprintf(buf, n, "tpas-astk\n%s\n%s\n%s", label, customer, dev_eui);
}

static void aad_session(char *buf, size_t n, const char *customer, const char *dev_eui)
{
	snprintf(buf, n, "tpas-appskey\n%s\n%s", customer, dev_eui);
}

/* Reset and clear a statement for its next use. */
static sqlite3_stmt *stmt(struct journal *j, enum stmt_id id)
{
	sqlite3_stmt *s = j->st[id];
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

/* Run a statement that returns no rows to completion. */
static int step_done(sqlite3_stmt *s)
{
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : sql_errno(sqlite3_db_handle(s), rc);
}

static int exec(struct journal *j, const char *sql)
{
	return sql_errno(j->db, sqlite3_exec(j->db, sql, NULL, NULL, NULL));
}

/*
 * Record how a write ended, for Status: a commit (r 0) ends a failing spell; a failure of
 * the store starts one (or goes on with it) and names itself in last_error. A refusal
 * (a duplicate, no such row, a counter used up) is neither. Returns r.
 */
static int note_write(struct journal *j, int r, const char *what, bool count)
{
	if (r == 0) {
		j->failing_since_ms = 0;
	} else if (r != -EEXIST && r != -ENOENT && r != -ERANGE) {
		if (count)
			j->failures++;
		if (!j->failing_since_ms)
			j->failing_since_ms = clock_wall_ms();
		snprintf(j->last_error, sizeof(j->last_error), "cannot commit %s: %s", what,
			 strerror(-r));
	}
	return r;
}

/*
 * The loop's connection waits for a lock this way, not with SQLite's busy time-out, whose
 * sleeps of 1, 2, 5, 10 ms and more are long next to what it waits for: the writer's
 * current transaction (under a millisecond; sqlwriter_yield() keeps it from starting
 * another). Polled every 100 us, then every millisecond; given up after 5 s as before.
 */
static int loop_busy(void *arg, int count)
{
	struct journal *j = arg;
	uint64_t now = clock_now_us();
	if (count == 0)
		j->busy_since_us = now;
	if (now - j->busy_since_us >= LOOP_BUSY_MS * 1000)
		return 0;
	usleep(count < 50 ? 100 : 1000);
	return 1;
}

/*
 * Around each write of the loop's connection once the writer thread runs: the writer
 * starts no transaction meanwhile, so the loop waits (busy) for the one it may be in, not
 * for a stream of them.
 */
static void loop_write_begin(struct journal *j)
{
	if (j->writer)
		sqlwriter_yield(j->writer);
}

static void loop_write_end(struct journal *j)
{
	if (j->writer)
		sqlwriter_yield_end(j->writer);
}

/*
 * Version 2: each uplink keeps its request's Token (unique: a replay is the same signed
 * request). A version 1 journal gains the column; its older uplinks have none.
 */
static bool has_column(struct journal *j, const char *name)
{
	sqlite3_stmt *s = NULL;
	bool has = false;
	if (sqlite3_prepare_v2(j->db, "SELECT 1 FROM pragma_table_info('uplink') WHERE name = ?",
			       -1, &s, NULL) == SQLITE_OK) {
		sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
		has = sqlite3_step(s) == SQLITE_ROW;
	}
	sqlite3_finalize(s);
	return has;
}

static const char wrong_key[] =
    "%s: the store key does not match the key this store was created with (store.key-file)";

/* The schema this tpas writes (PRAGMA user_version). */
#define JOURNAL_SCHEMA 5
#define SCHEMA_TEXT_(n) #n
#define SCHEMA_TEXT(n) SCHEMA_TEXT_(n)

/*
 * Before the schema is touched: a journal of a newer tpas is refused (what this one
 * would write there, it could not know to be right: an FCntDn used again, say); one of
 * an older tpas is copied aside first (<path>.v<N>-<time>.bak, when copy_older), as tpad
 * does its store, unless its key check refuses the store key (then nothing changes).
 */
static int version_check(struct journal *j, const char *path, bool copy_older, char *err,
			 size_t errlen)
{
	sqlite3_stmt *s = NULL;
	int64_t v = 0;
	int rc = sqlite3_prepare_v2(j->db, "PRAGMA user_version", -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
		v = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	if (rc != SQLITE_ROW) {
		char msg[256];
		snprintf(err, errlen, "%s: cannot read the schema version: %s", path,
			 sql_errmsg(j->db, msg, sizeof(msg)));
		return sql_errno(NULL, rc);
	}
	if (v > JOURNAL_SCHEMA) {
		snprintf(err, errlen,
			 "%s: schema version %lld is newer than this tpas supports (%d); refusing "
			 "to open it: start the newer tpas again (a copy of an older schema holds "
			 "old FCntDn counters: see tpas(8), store.path)",
			 path, (long long)v, JOURNAL_SCHEMA);
		return -EPROTO;
	}
	if (!copy_older || v == 0 || v == JOURNAL_SCHEMA || strcmp(path, ":memory:") == 0)
		return 0;
	/* A key the journal's key check refuses: refused before the copy and the migration. */
	if (sql_key_check(j->db, j->seal, key_check_aad, NULL) == -EBADMSG) {
		snprintf(err, errlen, wrong_key, path);
		return -EBADMSG;
	}
	char copy[4096], why[256];
	int r = sql_backup_pre_migration(j->db, path, (int)v, copy, sizeof(copy), why, sizeof(why));
	if (r < 0) {
		snprintf(err, errlen,
			 "%s: cannot copy the journal before migrating it from schema %lld: %s; "
			 "nothing was changed",
			 path, (long long)v, why);
		return r;
	}
	log_notice("%s: copied to %s before migrating schema %lld to %d", path, copy, (long long)v,
		   JOURNAL_SCHEMA);
	return 0;
}

static int query_int_of(struct journal *j, const char *sql, int64_t *ret);

/* Whether the uplink table still has schema 2's unique (DevEUI, session, FCntUp) index. */
static bool has_device_key(struct journal *j)
{
	int64_t n = 0;
	query_int_of(j,
		     "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
		     " tbl_name = 'uplink' AND sql IS NULL",
		     &n);
	return n > 0;
}

/* meta's uplink_seq (SEQ_LAST), raised to last. */
static int seq_floor_raise(sqlite3 *db, int64_t last)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO meta (key, value) VALUES ('uplink_seq', ?1)"
			       " ON CONFLICT (key) DO UPDATE SET value = MAX(value, ?1)",
			       -1, &s, NULL) != SQLITE_OK)
		return sql_errno(db, sqlite3_errcode(db));
	sqlite3_bind_int64(s, 1, last);
	int r = step_done(s);
	sqlite3_finalize(s);
	return r;
}

/*
 * Version 3: the uplink table without schema 2's unique (DevEUI, session, FCntUp) index,
 * copied row by row (SQLite cannot drop a table's constraint); uplink_seen is filled from
 * it at open.
 */
static int rebuild_uplink(struct journal *j)
{
	return exec(j, "CREATE TABLE uplink_v3 (" UPLINK_COLUMNS ");"
		       "INSERT INTO uplink_v3 (" UPLINK_COLUMN_NAMES ") SELECT " UPLINK_COLUMN_NAMES
		       " FROM uplink ORDER BY seq;"
		       "DROP TABLE uplink;"
		       "ALTER TABLE uplink_v3 RENAME TO uplink;");
}

/*
 * Version 4: seq goes on from SEQ_LAST, no longer from AUTOINCREMENT's counter, which is
 * carried into meta first (it is past the last row when retention removed the newest).
 * A table of schema 3 keeps its AUTOINCREMENT (SQLite cannot drop it but by a copy of
 * every row, hours for a large journal): its commits still write the counter's row.
 * The received_ms index goes: retention walks seq order.
 */
static int seq_to_meta(struct journal *j)
{
	int64_t last = 0;
	if (query_int_of(j, "SELECT seq FROM sqlite_sequence WHERE name = 'uplink'", &last) < 0)
		return 0; /* no sqlite_sequence: no AUTOINCREMENT row was ever added */
	int r = last > 0 ? seq_floor_raise(j->db, last) : 0;
	return r < 0 ? r : exec(j, "DROP INDEX IF EXISTS uplink_received");
}

/*
 * Version 5: uplink_seen without its index on seq; how far it holds the keys is meta's
 * seen_through, read here from that index before it goes.
 */
static int seen_through_to_meta(struct journal *j)
{
	int64_t n = 0;
	int r = query_int_of(j, "SELECT COUNT(*) FROM meta WHERE key = 'seen_through'", &n);
	if (r == 0 && n == 0)
		r = exec(j, "INSERT INTO meta (key, value)"
			    " SELECT 'seen_through', IFNULL(MAX(seq), 0) FROM uplink_seen");
	return r < 0 ? r : exec(j, "DROP INDEX IF EXISTS uplink_seen_seq");
}

/*
 * While a step at open runs long (a migration copies every uplink, about 15 s a million):
 * tell systemd every 10 s that the start goes on, so its start time-out does not end it.
 */
static int long_step(void *arg)
{
	uint64_t *next = arg, now = clock_now_ms();
	if (now >= *next) {
		notify_extend(30000000, "bringing the journal up to date");
		*next = now + 10000;
	}
	return 0;
}

static int migrate(struct journal *j)
{
	/* One transaction: a journal is never left half migrated. */
	int r = exec(j, "BEGIN IMMEDIATE");
	if (r == 0 && !has_column(j, "token"))
		r = exec(j, "ALTER TABLE uplink ADD COLUMN token BLOB");
	if (r == 0 && !has_column(j, "token_time"))
		r = exec(j, "ALTER TABLE uplink ADD COLUMN token_time INTEGER");
	if (r == 0)
		r = seq_to_meta(j);
	if (r == 0 && has_device_key(j))
		r = rebuild_uplink(j);
	if (r == 0)
		r = seen_through_to_meta(j);
	if (r == 0)
		r = exec(
		    j,
		    "CREATE UNIQUE INDEX IF NOT EXISTS uplink_token ON uplink (token_time, token)");
	if (r == 0)
		r = exec(j, "PRAGMA user_version = " SCHEMA_TEXT(JOURNAL_SCHEMA));
	if (r == 0)
		return exec(j, "COMMIT");
	exec(j, "ROLLBACK");
	return r;
}

static const char *col_text(sqlite3_stmt *s, int i);
static int seen_open(struct journal *j);
static void recent_drop(struct journal *j, const char *why);
static size_t recent_max(const struct journal *j);
static int counter_take(sqlite3_stmt *get, sqlite3_stmt *set, int64_t session_id, uint32_t *ret);
static void loop_statements(struct journal *j, sqlite3_stmt *st[WS_COUNT]);
static void seen_settle(struct journal *j, sqlite3 *db, sqlite3_stmt *const st[WS_COUNT], int err);
static int col_key(struct journal *j, sqlite3_stmt *s, int i, const char *aad,
		   uint8_t key[AS_KEY_LEN]);
static int session_row(struct journal *j, sqlite3_stmt *s, struct as_session *ret);

/*
 * Whether the key opens the store's first ASTK, else its first session (a store from
 * before the key check value): 0 (also when it holds neither), -EBADMSG.
 */
static int key_opens_a_row(struct journal *j)
{
	int r = 0;
	uint8_t key[AS_KEY_LEN];
	struct as_session t;
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(j->db,
			       "SELECT label, customer_id, dev_eui, sealed FROM astk ORDER BY id"
			       " LIMIT 1",
			       -1, &s, NULL) == SQLITE_OK &&
	    sqlite3_step(s) == SQLITE_ROW) {
		char aad[256];
		aad_astk(aad, sizeof(aad), col_text(s, 0), col_text(s, 1), col_text(s, 2));
		r = col_key(j, s, 3, aad, key);
		cred_wipe(key, sizeof(key));
	} else {
		sqlite3_finalize(s);
		s = NULL;
		if (sqlite3_prepare_v2(j->db,
				       "SELECT id, customer_id, dev_eui, dev_addr, sealed, fcnt_dn_next,"
				       " received_ms FROM session ORDER BY id LIMIT 1",
				       -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_step(s) == SQLITE_ROW) {
			r = session_row(j, s, &t);
			cred_wipe(&t, sizeof(t));
		}
	}
	sqlite3_finalize(s);
	return r < 0 ? -EBADMSG : 0;
}

/*
 * The store key must be the one the store was created with: nothing sealed with another
 * may go in beside what it holds. A store from before the key check value has one written
 * once a sealed ASTK or session of it opens with the key (or when it holds none).
 */
static int key_check(struct journal *j, const char *path, char *err, size_t errlen)
{
	int r = exec(j, "BEGIN IMMEDIATE");
	if (r < 0) {
		snprintf(err, errlen, "%s: cannot check the store key: %s", path, strerror(-r));
		return r;
	}
	bool written;
	r = sql_key_check(j->db, j->seal, key_check_aad, &written);
	if (r == 0 && written)
		r = key_opens_a_row(j);
	if (r == 0)
		r = exec(j, "COMMIT");
	if (r < 0) {
		exec(j, "ROLLBACK");
		if (r == -EBADMSG)
			snprintf(err, errlen, wrong_key, path);
		else
			snprintf(err, errlen, "%s: cannot check the store key: %s", path,
				 strerror(-r));
	}
	return r;
}

int journal_check_key(const char *path, const uint8_t *store_key, char *err, size_t errlen)
{
	struct journal j = {0};
	int r = seal_new(store_key, SEAL_KEY_LEN, &j.seal);
	if (r < 0) {
		snprintf(err, errlen, "cannot set up the store key: %s", strerror(-r));
		return r;
	}
	if (access(path, F_OK) < 0) {
		seal_free(j.seal);
		return 0; /* made at the first start */
	}
	int rc = sqlite3_open_v2(path, &j.db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK) {
		sqlite3_busy_timeout(j.db, 5000);
		if ((r = version_check(&j, path, false, err, errlen)) < 0) {
			sqlite3_close(j.db);
			seal_free(j.seal);
			return r;
		}
		r = sql_key_check(j.db, j.seal, key_check_aad, NULL);
		if (r == -ENOENT || r == -EIO || r == -EINVAL)
			r = key_opens_a_row(&j); /* none yet, or no meta table: an older store */
	} else {
		r = sql_errno(NULL, rc);
	}
	if (r == -EBADMSG)
		snprintf(err, errlen, wrong_key, path);
	else if (r < 0)
		snprintf(err, errlen, "%s: cannot read the store: %s", path, strerror(-r));
	sqlite3_close(j.db);
	seal_free(j.seal);
	return r;
}

int journal_open(const char *path, const uint8_t *store_key, struct journal **ret, char *err,
		 size_t errlen)
{
	struct journal *j = calloc(1, sizeof(*j));
	if (!j) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int r = seal_new(store_key, SEAL_KEY_LEN, &j->seal);
	if (r < 0) {
		snprintf(err, errlen, "cannot set up the store key: %s", strerror(-r));
		goto fail;
	}
	/* Create the file 0600 ourselves; SQLite would follow the umask. */
	bool memory = strcmp(path, ":memory:") == 0;
	int fd = memory ? -1 : open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (!memory && fd < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-r));
		goto fail;
	}
	/* One an older install or a copy by hand left readable: its -wal and -shm would be
	 * made with its mode. It holds uplinks and sealed keys. */
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && (st.st_mode & 077) &&
	    fchmod(fd, st.st_mode & 0700) < 0) {
		r = -errno;
		snprintf(err, errlen, "%s: cannot restrict its mode: %s", path, strerror(-r));
		close(fd);
		goto fail;
	}
	if (fd >= 0)
		close(fd);
	int rc = sqlite3_open_v2(path, &j->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = sql_errno(NULL, rc);
		snprintf(err, errlen, "%s: %s", path,
			 j->db ? sqlite3_errmsg(j->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_handler(j->db, loop_busy, j);
	if ((r = version_check(j, path, true, err, errlen)) < 0)
		goto fail;
	uint64_t next_extend = clock_now_ms() + 10000;
	sqlite3_progress_handler(j->db, 1000000, long_step, &next_extend);
	if ((r = exec(j, "PRAGMA journal_mode = WAL")) < 0 ||
	    (r = exec(j, "PRAGMA synchronous = FULL")) < 0 ||
	    (r = exec(j, "PRAGMA journal_size_limit = " SQLWRITER_WAL_LIMIT)) < 0 ||
	    (r = exec(j, schema)) < 0 || (r = migrate(j)) < 0) {
		char msg[256];
		snprintf(err, errlen, "%s: cannot set up the database: %s", path,
			 sql_errmsg(j->db, msg, sizeof(msg)));
		goto fail;
	}
	for (int i = 0; i < ST_COUNT; i++) {
		rc = sqlite3_prepare_v3(j->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
					&j->st[i], NULL);
		if (rc != SQLITE_OK) {
			r = sql_errno(NULL, rc);
			snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(j->db));
			goto fail;
		}
	}
	if ((r = key_check(j, path, err, errlen)) < 0)
		goto fail;
	j->path = strdup(path);
	j->recent = upseen_new();
	j->high = upseen_new();
	if (!j->path || !j->recent || !j->high) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((r = seen_open(j)) < 0) {
		char msg[256];
		snprintf(err, errlen, "%s: cannot read the journal: %s", path,
			 sql_errmsg(j->db, msg, sizeof(msg)));
		goto fail;
	}
	sqlite3_progress_handler(j->db, 0, NULL, NULL);
	*ret = j;
	return 0;
fail:
	if (j->db) /* its argument lives on this stack */
		sqlite3_progress_handler(j->db, 0, NULL, NULL);
	journal_free(j);
	return r < 0 ? r : -EIO;
}

struct journal *journal_free(struct journal *j)
{
	if (!j)
		return NULL;
	j->writer = sqlwriter_free(j->writer);
	free(j->path);
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(j->st[i]);
	if (j->db)
		sqlite3_close(j->db);
	seal_free(j->seal);
	upseen_free(j->recent);
	upseen_free(j->high);
	free(j);
	return NULL;
}

/* Column i as text, "" for NULL. */
static const char *col_text(sqlite3_stmt *s, int i)
{
	const unsigned char *t = sqlite3_column_text(s, i);
	return t ? (const char *)t : "";
}

/* Unseal a 16-byte key from column i. */
static int col_key(struct journal *j, sqlite3_stmt *s, int i, const char *aad,
		   uint8_t ret[AS_KEY_LEN])
{
	const void *blob = sqlite3_column_blob(s, i);
	int n = sqlite3_column_bytes(s, i);
	if (!blob || n != AS_KEY_LEN + SEAL_OVERHEAD)
		return -EBADMSG;
	return seal_decrypt(j->seal, (const uint8_t *)aad, strlen(aad), blob, (size_t)n, ret,
			    AS_KEY_LEN);
}

int journal_astk_add(struct journal *j, const char *label, const char *customer_id,
		     const char *dev_eui, const uint8_t astk[AS_KEY_LEN], int64_t *ret_id,
		     bool *ret_existing)
{
	char aad[256];
	if (ret_existing)
		*ret_existing = false;
	/* Already the newest of its label and scope: nothing to add (its id is the answer). */
	sqlite3_stmt *x = stmt(j, ST_ASTK_EXACT);
	sqlite3_bind_text(x, 1, label, -1, SQLITE_STATIC);
	sqlite3_bind_text(x, 2, customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(x, 3, dev_eui, -1, SQLITE_STATIC);
	if (sqlite3_step(x) == SQLITE_ROW) {
		uint8_t have[AS_KEY_LEN];
		aad_astk(aad, sizeof(aad), col_text(x, 1), col_text(x, 2), col_text(x, 3));
		bool same = col_key(j, x, 4, aad, have) == 0 && ascrypto_key_equal(have, astk);
		int64_t id = sqlite3_column_int64(x, 0);
		cred_wipe(have, sizeof(have));
		if (same) {
			sqlite3_reset(x);
			if (ret_id)
				*ret_id = id;
			if (ret_existing)
				*ret_existing = true;
			return 0;
		}
	}
	sqlite3_reset(x);
	uint8_t sealed[AS_KEY_LEN + SEAL_OVERHEAD];
	aad_astk(aad, sizeof(aad), label, customer_id, dev_eui);
	int r = seal_encrypt(j->seal, (const uint8_t *)aad, strlen(aad), astk, AS_KEY_LEN, sealed,
			     sizeof(sealed));
	if (r < 0)
		return r;
	sqlite3_stmt *s = stmt(j, ST_ASTK_ADD);
	sqlite3_bind_text(s, 1, label, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 4, sealed, sizeof(sealed), SQLITE_STATIC);
	sqlite3_bind_int64(s, 5, clock_wall_ms());
	loop_write_begin(j);
	r = note_write(j, step_done(s), "the ASTK", true);
	loop_write_end(j);
	if (r == 0) {
		j->commits++;
		if (ret_id)
			*ret_id = sqlite3_last_insert_rowid(j->db);
	}
	return r;
}

int journal_astk_find(struct journal *j, const char *label, const char *customer_id,
		      const char *dev_eui, uint8_t ret[AS_KEY_LEN], int64_t *ret_id)
{
	sqlite3_stmt *s;
	if (label && label[0]) {
		s = stmt(j, ST_ASTK_LABEL);
		sqlite3_bind_text(s, 1, label, -1, SQLITE_STATIC);
	} else {
		s = stmt(j, ST_ASTK_SCOPE);
		sqlite3_bind_text(s, 1, dev_eui, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, customer_id, -1, SQLITE_STATIC);
	}
	int rc = sqlite3_step(s);
	if (rc != SQLITE_ROW) {
		sqlite3_reset(s);
		return rc == SQLITE_DONE ? -ENOENT : sql_errno(NULL, rc);
	}
	char aad[256];
	aad_astk(aad, sizeof(aad), col_text(s, 1), col_text(s, 2), col_text(s, 3));
	int r = col_key(j, s, 4, aad, ret);
	if (r == 0 && ret_id)
		*ret_id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return r;
}

json_t *journal_astk_list(struct journal *j)
{
	sqlite3_stmt *s = NULL;
	json_t *a = json_array();
	if (!a || sqlite3_prepare_v2(j->db,
				     "SELECT id, label, customer_id, dev_eui, created_ms FROM astk"
				     " ORDER BY id",
				     -1, &s, NULL) != SQLITE_OK) {
		json_decref(a);
		return NULL;
	}
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char when[40];
		uplink_time_format(sqlite3_column_int64(s, 4), when, sizeof(when));
		if (json_array_append_new(a, json_pack("{s:I, s:s, s:s, s:s, s:s}", "id",
						       (json_int_t)sqlite3_column_int64(s, 0),
						       "label", col_text(s, 1), "customerID",
						       col_text(s, 2), "devEUI", col_text(s, 3),
						       "createdAt", when)) < 0)
			break;
	}
	sqlite3_finalize(s);
	if (rc != SQLITE_DONE) { /* a list cut short is not the list */
		json_decref(a);
		return NULL;
	}
	return a;
}

/* Fill a session from a row of ST_SESSION_*. */
static int session_row(struct journal *j, sqlite3_stmt *s, struct as_session *ret)
{
	struct as_session t = {0};
	t.id = sqlite3_column_int64(s, 0);
	snprintf(t.customer_id, sizeof(t.customer_id), "%s", col_text(s, 1));
	snprintf(t.dev_eui, sizeof(t.dev_eui), "%s", col_text(s, 2));
	snprintf(t.dev_addr, sizeof(t.dev_addr), "%s", col_text(s, 3));
	t.fcnt_dn_next = (uint32_t)sqlite3_column_int64(s, 5);
	t.received_ms = sqlite3_column_int64(s, 6);
	char aad[256];
	aad_session(aad, sizeof(aad), t.customer_id, t.dev_eui);
	int r = col_key(j, s, 4, aad, t.key);
	if (r == 0)
		*ret = t;
	cred_wipe(&t, sizeof(t));
	return r;
}

/* The first row of s (bound) as a session. */
static int session_first(struct journal *j, sqlite3_stmt *s, struct as_session *ret)
{
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_ROW    ? session_row(j, s, ret)
		: rc == SQLITE_DONE ? -ENOENT
				    : sql_errno(NULL, rc);
	sqlite3_reset(s);
	return r;
}

int journal_session_find(struct journal *j, const char *customer_id, const char *dev_eui,
			 const char *fp, struct as_session *ret)
{
	sqlite3_stmt *s = stmt(j, ST_SESSION_FIND);
	sqlite3_bind_text(s, 1, customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, fp, -1, SQLITE_STATIC);
	return session_first(j, s, ret);
}

int journal_session_with_key(struct journal *j, const char *customer_id, const char *dev_eui,
			     const uint8_t key[AS_KEY_LEN], struct as_session *ret)
{
	sqlite3_stmt *s = stmt(j, ST_SESSION_OF_DEVICE);
	sqlite3_bind_text(s, 1, customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, dev_eui, -1, SQLITE_STATIC);
	int r = -ENOENT, rc = SQLITE_DONE;
	while (r == -ENOENT && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		struct as_session t;
		if (session_row(j, s, &t) == 0) {
			if (ascrypto_key_equal(t.key, key)) {
				*ret = t;
				r = 0;
			}
			cred_wipe(&t, sizeof(t));
		}
	}
	if (r == -ENOENT && rc != SQLITE_DONE)
		r = sql_errno(NULL, rc);
	sqlite3_reset(s);
	return r;
}

int journal_session_seal(struct journal *j, const char *fp, const struct as_session *s,
			 struct journal_new_session *ret)
{
	char aad[256];
	*ret = (struct journal_new_session){.fcnt_dn_next = s->fcnt_dn_next,
					    .received_ms = s->received_ms};
	if (strlen(fp) >= sizeof(ret->fp))
		return -EINVAL;
	memcpy(ret->fp, fp, strlen(fp) + 1);
	memcpy(ret->customer_id, s->customer_id, sizeof(ret->customer_id));
	memcpy(ret->dev_eui, s->dev_eui, sizeof(ret->dev_eui));
	memcpy(ret->dev_addr, s->dev_addr, sizeof(ret->dev_addr));
	aad_session(aad, sizeof(aad), s->customer_id, s->dev_eui);
	return seal_encrypt(j->seal, (const uint8_t *)aad, strlen(aad), s->key, AS_KEY_LEN,
			    ret->sealed, sizeof(ret->sealed));
}

/* Bind a session row's seven columns to an INSERT into session. */
static void bind_session(sqlite3_stmt *s, const struct journal_new_session *n)
{
	sqlite3_bind_text(s, 1, n->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, n->dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, n->fp, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 4, n->sealed, sizeof(n->sealed), SQLITE_STATIC);
	sqlite3_bind_text(s, 5, n->dev_addr, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 6, n->fcnt_dn_next);
	sqlite3_bind_int64(s, 7, n->received_ms);
}

int journal_session_add(struct journal *j, const char *fp, struct as_session *t)
{
	struct journal_new_session n;
	int r = journal_session_seal(j, fp, t, &n);
	if (r < 0)
		return r;
	sqlite3_stmt *s = stmt(j, ST_SESSION_ADD);
	bind_session(s, &n);
	loop_write_begin(j);
	r = note_write(j, step_done(s), "the session key", true);
	loop_write_end(j);
	if (r == 0) {
		j->commits++;
		t->id = sqlite3_last_insert_rowid(j->db);
	}
	return r;
}

/*
 * Inside an uplink's transaction: add its new session, or find the one an earlier uplink
 * added with the same field; *ret_added says which.
 */
static int session_put(sqlite3 *db, sqlite3_stmt *const st[WS_COUNT],
		       const struct journal_new_session *n, int64_t *ret_id, bool *ret_added)
{
	sqlite3_stmt *s = st[WS_SESSION_PUT];
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	bind_session(s, n);
	int r = step_done(s);
	if (r < 0)
		return r;
	*ret_added = sqlite3_changes(db) > 0;
	if (*ret_added) {
		*ret_id = sqlite3_last_insert_rowid(db);
		return 0;
	}
	s = st[WS_SESSION_ID];
	sqlite3_reset(s);
	sqlite3_bind_text(s, 1, n->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, n->dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, n->fp, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*ret_id = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -EIO : sql_errno(db, rc);
}

int journal_session_at(struct journal *j, const char *customer_id, const char *dev_eui,
		       int64_t at_ms, struct as_session *ret)
{
	sqlite3_stmt *s = stmt(j, ST_SESSION_AT);
	sqlite3_bind_text(s, 1, customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, at_ms);
	return session_first(j, s, ret);
}

int journal_session_newest(struct journal *j, const char *customer_id, const char *dev_eui,
			   struct as_session *ret)
{
	sqlite3_stmt *s;
	if (customer_id) {
		s = stmt(j, ST_SESSION_NEWEST);
		sqlite3_bind_text(s, 1, customer_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, dev_eui, -1, SQLITE_STATIC);
	} else {
		s = stmt(j, ST_SESSION_NEWEST_ANY);
		sqlite3_bind_text(s, 1, dev_eui, -1, SQLITE_STATIC);
	}
	return session_first(j, s, ret);
}

int journal_begin(struct journal *j)
{
	loop_write_begin(j);
	int r = exec(j, "BEGIN IMMEDIATE");
	if (r < 0)
		loop_write_end(j);
	return r < 0 ? note_write(j, r, "uplinks", true) : 0;
}

/* After a transaction of this connection: while it writes the uplinks, the recent set. */
static void loop_settle(struct journal *j, int err)
{
	if (j->writer || !j->recent)
		return;
	sqlite3_stmt *st[WS_COUNT];
	loop_statements(j, st);
	seen_settle(j, j->db, st, err);
}

int journal_commit(struct journal *j)
{
	int r = note_write(j, exec(j, "COMMIT"), "uplinks", true);
	if (r < 0) {
		exec(j, "ROLLBACK");
		loop_write_end(j);
		loop_settle(j, r);
		return r;
	}
	loop_write_end(j);
	j->commits++;
	loop_settle(j, 0);
	return 0;
}

void journal_rollback(struct journal *j)
{
	exec(j, "ROLLBACK");
	loop_write_end(j);
	loop_settle(j, -ECANCELED);
}

/* Insert one uplink with the given connection's statements (add, session update). */
static int uplink_insert(sqlite3 *db, sqlite3_stmt *add, sqlite3_stmt *sess,
			 const struct journal_uplink *u, int64_t *ret_seq)
{
	sqlite3_stmt *s = add;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	sqlite3_bind_int64(s, 1, u->received_ms);
	sqlite3_bind_int64(s, 2, u->session_id);
	sqlite3_bind_text(s, 3, u->dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, u->customer_id, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 5, u->dev_addr, -1, SQLITE_STATIC);
	if (u->fport >= 0)
		sqlite3_bind_int(s, 6, u->fport);
	sqlite3_bind_int64(s, 7, u->fcnt_up);
	if (u->has_fcnt_dn)
		sqlite3_bind_int64(s, 8, u->fcnt_dn);
	sqlite3_bind_text(s, 9, u->time, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 10, u->payload_hex, -1, SQLITE_STATIC);
	sqlite3_bind_int(s, 11, u->encrypted);
	sqlite3_bind_text(s, 12, u->radio ? u->radio : "{}", -1, SQLITE_STATIC);
	uint8_t tok[32];
	if (u->token && hex_decode(u->token, tok, sizeof(tok)) == 0) {
		sqlite3_bind_blob(s, 13, tok, sizeof(tok), SQLITE_TRANSIENT);
		sqlite3_bind_int64(s, 14, u->time_ms);
	}
	int r = step_done(s);
	if (r < 0)
		return r; /* -EEXIST: this (device, session, FCntUp) is already in */
	int64_t seq = sqlite3_last_insert_rowid(db);
	if (u->session_id > 0 && u->update_session) {
		s = sess;
		sqlite3_reset(s);
		sqlite3_clear_bindings(s);
		sqlite3_bind_int64(s, 1, u->session_id);
		sqlite3_bind_text(s, 2, u->dev_addr, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 3, u->has_fcnt_dn ? u->fcnt_dn : 0);
		sqlite3_bind_int64(s, 4, u->began_ms);
		r = step_done(s);
		if (r < 0)
			return r;
	}
	*ret_seq = seq;
	return 0;
}

/* The seq of (device, session, FCntUp) with the given connection's statement. */
static int uplink_find(sqlite3_stmt *s, const char *dev_eui, int64_t session_id, uint32_t fcnt_up,
		       int64_t *ret_seq)
{
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	sqlite3_bind_text(s, 1, dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, session_id);
	sqlite3_bind_int64(s, 3, fcnt_up);
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : sql_errno(NULL, rc);
	if (r == 0)
		*ret_seq = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return r;
}

int journal_uplink_find(struct journal *j, const char *dev_eui, int64_t session_id,
			uint32_t fcnt_up, int64_t *ret_seq)
{
	return uplink_find(j->st[ST_UPLINK_FIND], dev_eui, session_id, fcnt_up, ret_seq);
}

/*
 * The seq a request (its signed Time in ms, its Token) was journaled under, with the given
 * connection's statement: 0, -ENOENT. A replay has the very Time of the original (the
 * Token signs it), so the index is on (Time, Token): new rows go near its end.
 */
static int token_find(sqlite3_stmt *s, int64_t time_ms, const char *token, int64_t *ret_seq)
{
	uint8_t tok[32];
	if (!token || hex_decode(token, tok, sizeof(tok)) < 0)
		return -ENOENT;
	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	sqlite3_bind_int64(s, 1, time_ms);
	sqlite3_bind_blob(s, 2, tok, sizeof(tok), SQLITE_TRANSIENT);
	int rc = sqlite3_step(s);
	int r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : sql_errno(NULL, rc);
	if (r == 0)
		*ret_seq = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return r;
}

int journal_token_find(struct journal *j, int64_t time_ms, const char *token, int64_t *ret_seq)
{
	return token_find(j->st[ST_TOKEN_FIND], time_ms, token, ret_seq);
}

/* After an insert (or a row read into the recent set): its session's highest FCntUp follows. */
static void high_raise(struct journal *j, const char *dev_eui, int64_t session_id, uint32_t fcnt_up)
{
	int64_t top = 0;
	if (!j->high_ok || (upseen_find(j->high, dev_eui, session_id, 0, &top) && top > fcnt_up))
		return;
	if (upseen_add(j->high, dev_eui, session_id, 0, (int64_t)fcnt_up + 1) < 0)
		j->high_ok = false;
}

/* The most uplinks the recent set holds. */
static size_t recent_max(const struct journal *j)
{
	return j->seen_move_at * RECENT_MAX_MOVES;
}

/* Stop keeping the recent set (why: for the log): replays are looked up in the table. */
static void recent_drop(struct journal *j, const char *why)
{
	upseen_clear(j->recent);
	j->recent_ok = false;
	j->tried_at = j->inserted;
	if (!j->recent_dropped)
		log_warnx("journal: %s (%zu): replays are looked up in the table, slower, until "
			  "uplink_seen can be filled",
			  why, recent_max(j));
	j->recent_dropped = true;
}

/*
 * Read the recent set again from the rows after seen_through: what is committed and
 * nothing else (after a transaction that failed). 0, or -errno with recent_ok false.
 */
static int seen_reload(struct journal *j, sqlite3_stmt *const st[WS_COUNT])
{
	upseen_clear(j->recent);
	sqlite3_stmt *s = st[WS_RECENT];
	sqlite3_reset(s);
	sqlite3_bind_int64(s, 1, j->seen_through);
	int rc, r = 0;
	while (r == 0 && (rc = sqlite3_step(s)) == SQLITE_ROW) {
		if (upseen_count(j->recent) >= recent_max(j)) {
			r = -EFBIG; /* more than moves have failed to take: the table answers */
			break;
		}
		const char *dev_eui = col_text(s, 0);
		int64_t session_id = sqlite3_column_int64(s, 1);
		uint32_t fcnt_up = (uint32_t)sqlite3_column_int64(s, 2);
		r = upseen_add(j->recent, dev_eui, session_id, fcnt_up, sqlite3_column_int64(s, 3));
		high_raise(j, dev_eui, session_id, fcnt_up); /* (rows of an earlier tpas) */
	}
	if (r == 0 && rc != SQLITE_DONE)
		r = sql_errno(NULL, rc);
	sqlite3_reset(s);
	j->recent_ok = r == 0;
	if (r < 0)
		upseen_clear(j->recent);
	if (r == -EFBIG)
		recent_drop(j, "more uplinks since uplink_seen was last filled than it keeps");
	return r;
}

/*
 * Move the rows after seen_through into uplink_seen (one transaction, in key order) and
 * empty the recent set: 0, or -errno with both as they were.
 */
static int seen_move(struct journal *j, sqlite3 *db, sqlite3_stmt *const st[WS_COUNT])
{
	int r = sql_errno(db, sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL));
	if (r < 0)
		return r;
	sqlite3_stmt *s = st[WS_SEEN_MOVE];
	sqlite3_reset(s);
	sqlite3_bind_int64(s, 1, j->seen_through);
	r = step_done(s);
	int64_t last = 0;
	if (r == 0) {
		s = st[WS_SEEN_LAST];
		sqlite3_reset(s);
		int rc = sqlite3_step(s);
		if (rc == SQLITE_ROW)
			last = sqlite3_column_int64(s, 0);
		else
			r = sql_errno(NULL, rc);
		sqlite3_reset(s);
	}
	if (r == 0 && last > j->seen_through) {
		s = st[WS_SEEN_MARK];
		sqlite3_reset(s);
		sqlite3_bind_int64(s, 1, last);
		r = step_done(s);
	}
	if (r == 0)
		r = sql_errno(db, sqlite3_exec(db, "COMMIT", NULL, NULL, NULL));
	if (r < 0) {
		if (!sqlite3_get_autocommit(db))
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
		return r;
	}
	if (last > j->seen_through)
		j->seen_through = last;
	upseen_clear(j->recent);
	j->recent_ok = true;
	if (j->recent_dropped)
		log_notice("journal: uplink_seen filled again: replays are found in memory again");
	j->recent_dropped = false;
	if (!j->high_ok || upseen_count(j->high) > HIGH_MAX) {
		upseen_clear(j->high);
		j->high_ok = true;
	}
	return 0;
}

/*
 * After a transaction of the connection that writes uplinks ended (err 0: committed):
 * the recent set follows what is committed, and goes into uplink_seen once it is large.
 */
static void seen_settle(struct journal *j, sqlite3 *db, sqlite3_stmt *const st[WS_COUNT], int err)
{
	if (j->recent_dropped) {
		if (j->inserted - j->tried_at >= j->seen_move_at && seen_move(j, db, st) < 0)
			j->tried_at = j->inserted;
		return;
	}
	if ((err < 0 || !j->recent_ok) && seen_reload(j, st) < 0)
		return; /* each uplink is looked up in the table until a reload succeeds */
	if (upseen_count(j->recent) < j->seen_move_at)
		return;
	/* On failure kept as it is, tried again after the next, up to its most. */
	if (seen_move(j, db, st) < 0 && upseen_count(j->recent) >= recent_max(j))
		recent_drop(j, "uplink_seen could not be filled for too long");
}

/* One more than the highest FCntUp of (DevEUI, session) in uplink_seen (0: none). */
static int seen_high(sqlite3_stmt *s, const char *dev_eui, int64_t session_id, int64_t *ret)
{
	sqlite3_reset(s);
	sqlite3_bind_text(s, 1, dev_eui, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, session_id);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*ret = sqlite3_column_int64(s, 0);
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : sql_errno(NULL, rc);
}

/*
 * The seq of the uplink journaled with u's (DevEUI, session, FCntUp): 0, -ENOENT, -errno.
 * With use_recent (the caller writes uplinks), the recent set then uplink_seen; else, or
 * while the set is not known to be right, the table itself (slower, exact).
 */
static int device_find(struct journal *j, sqlite3_stmt *const st[WS_COUNT], bool use_recent,
		       const struct journal_uplink *u, int64_t *ret_seq)
{
	if (!use_recent)
		return uplink_find(st[WS_FIND], u->dev_eui, u->session_id, u->fcnt_up, ret_seq);
	int64_t top = 0;
	if (j->high_ok && !upseen_find(j->high, u->dev_eui, u->session_id, 0, &top)) {
		int r = seen_high(st[WS_SEEN_HIGH], u->dev_eui, u->session_id, &top);
		if (r < 0)
			return r;
		if (top > 0 && upseen_add(j->high, u->dev_eui, u->session_id, 0, top) < 0)
			j->high_ok = false;
	}
	if (j->high_ok && (int64_t)u->fcnt_up >= top)
		return -ENOENT;
	if (!j->recent_ok) /* the set is not known to be right: the table itself */
		return uplink_find(st[WS_FIND], u->dev_eui, u->session_id, u->fcnt_up, ret_seq);
	if (upseen_find(j->recent, u->dev_eui, u->session_id, u->fcnt_up, ret_seq))
		return 0;
	return uplink_find(st[WS_SEEN_FIND], u->dev_eui, u->session_id, u->fcnt_up, ret_seq);
}

/*
 * Journal one uplink with a connection's statements (st, by WS_*): 0 and its seq; or, for
 * a replay, -EEXIST and the seq it was journaled under. A replay is the same Token (a
 * unique column of the uplink: the same signed request, whatever unsigned fields came with
 * it; its row names the replay), or the same (device, session, FCntUp) (the LRC sending it
 * again with a new Time). Either way it is found before the session's DevAddr and FCntDn
 * are touched.
 */
static int uplink_store(struct journal *j, sqlite3 *db, sqlite3_stmt *const st[WS_COUNT],
			bool use_recent, struct journal_uplink *u, int64_t *ret_seq)
{
	int64_t seq = 0;
	int r;
	if (u->session_id == 0 && u->new_session) {
		bool added;
		r = session_put(db, st, u->new_session, &u->session_id, &added);
		if (r < 0)
			return r;
		if (!added) { /* another uplink's: this one's DevAddr, FCntDn and Time count too */
			u->update_session = true;
			u->began_ms = u->new_session->received_ms;
		}
	}
	r = device_find(j, st, use_recent, u, &seq);
	if (r == 0) {
		int64_t first;
		if (token_find(st[WS_TOKEN_FIND], u->time_ms, u->token, &first) == 0)
			seq = first;
		*ret_seq = seq;
		return -EEXIST;
	}
	if (r != -ENOENT)
		return r;
	r = uplink_insert(db, st[WS_ADD], st[WS_SESSION], u, &seq);
	if (r == -EEXIST) { /* the Token's unique index */
		int e = token_find(st[WS_TOKEN_FIND], u->time_ms, u->token, &seq);
		if (e < 0)
			return e == -ENOENT ? -EIO : e;
	} else if (r < 0) {
		return r;
	} else if (use_recent) {
		j->inserted++;
		if (j->recent_ok &&
		    upseen_add(j->recent, u->dev_eui, u->session_id, u->fcnt_up, seq) < 0) {
			/* out of memory (or a DevEUI no tunnel accepts): the table answers */
			j->recent_ok = false;
			upseen_clear(j->recent);
		}
		high_raise(j, u->dev_eui, u->session_id, u->fcnt_up);
	}
	*ret_seq = seq;
	return r;
}

/* The loop connection's statements by WS_*. */
static void loop_statements(struct journal *j, sqlite3_stmt *st[WS_COUNT])
{
	for (int i = 0; i < WS_COUNT; i++)
		st[i] = j->st[ws_stmt[i]];
}

/*
 * At open: uplink_seen takes every uplink journaled after it was last filled (all of a
 * journal migrated from schema 2; the last few thousand after a crash), so the recent set
 * starts empty. When that cannot be written (a full disk), the set is read from the table.
 */
static int seen_open(struct journal *j)
{
	j->seen_move_at = SEEN_MOVE_AT;
	j->high_ok = false; /* the move makes it usable (empty, uplink_seen holding all) */
	int r = query_int_of(j, "SELECT " SEEN_THROUGH, &j->seen_through);
	if (r < 0)
		return r;
	sqlite3_stmt *st[WS_COUNT];
	loop_statements(j, st);
	if (seen_move(j, j->db, st) == 0)
		return 0;
	seen_reload(j, st);
	return 0;
}

void journal_set_seen_move_at(struct journal *j, size_t n)
{
	j->seen_move_at = n > 0 ? n : SEEN_MOVE_AT;
}

size_t journal_recent_count(const struct journal *j, bool *ret_dropped)
{
	if (ret_dropped)
		*ret_dropped = j->recent_dropped;
	return upseen_count(j->recent);
}

int journal_uplink_insert(struct journal *j, struct journal_uplink *u, int64_t *ret_seq)
{
	sqlite3_stmt *st[WS_COUNT];
	loop_statements(j, st);
	int r = uplink_store(j, j->db, st, !j->writer, u, ret_seq);
	return r < 0 ? note_write(j, r, "uplinks", true) : r;
}

/* Writer thread: prepare its statements on its own connection. */
static int writer_init(sqlite3 *db, void *arg)
{
	struct journal *j = arg;
	for (int i = 0; i < WS_COUNT; i++) {
		int rc = sqlite3_prepare_v3(db, stmt_sql[ws_stmt[i]], -1, SQLITE_PREPARE_PERSISTENT,
					    &j->wst[i], NULL);
		if (rc != SQLITE_OK)
			return sql_errno(NULL, rc);
	}
	return 0;
}

static int writer_fini(sqlite3 *db, void *arg)
{
	struct journal *j = arg;
	for (int i = 0; i < WS_COUNT; i++) {
		sqlite3_finalize(j->wst[i]);
		j->wst[i] = NULL;
	}
	return 0;
}

/* Writer thread, inside the batch's transaction: one uplink; a replay is found, not failed. */
static int writer_apply(sqlite3 *db, struct sqlwriter_job *job, void *arg)
{
	struct journal *j = arg;
	if (job->tag == JOURNAL_JOB_TAKE) { /* its own refusal is its own, not the batch's */
		struct journal_take *t = (struct journal_take *)job;
		t->err = counter_take(j->wst[WS_FCNT_GET], j->wst[WS_FCNT_SET], t->session_id,
				      &t->fcnt_dn);
		return t->err == -ENOENT || t->err == -ERANGE ? 0 : t->err;
	}
	struct journal_entry *e = (struct journal_entry *)job;
	e->duplicate = false;
	free(e->text);
	e->text = NULL;
	int r = uplink_store(j, db, j->wst, true, &e->u, &e->seq);
	if (r == 0) /* encoded here, off the loop thread, for the streams */
		e->text = journal_uplink_json(&e->u, e->seq, &e->text_len);
	if (r == -EEXIST) {
		e->duplicate = true;
		r = 0;
	}
	return r;
}

/* Writer thread, after each batch was handed back. */
static void writer_settled(sqlite3 *db, int err, void *arg)
{
	struct journal *j = arg;
	seen_settle(j, db, j->wst, err);
}

/* Loop thread: the committed entries go back to their owner. */
static void writer_done(struct sqlwriter_job *jobs, void *arg)
{
	struct journal *j = arg;
	/* The uplinks to their owner in one list, each downlink counter to its own. */
	struct sqlwriter_job *uplinks = NULL, **tail = &uplinks, *takes = NULL, **ttail = &takes;
	for (struct sqlwriter_job *job = jobs, *next; job; job = next) {
		next = job->next;
		job->next = NULL;
		bool take = job->tag == JOURNAL_JOB_TAKE;
		/* In queue order, so the last batch decides; the writer counts its failures. */
		note_write(j, job->err, take ? "the downlink counter" : "uplinks", false);
		if (take) {
			*ttail = job;
			ttail = &job->next;
		} else {
			*tail = job;
			tail = &job->next;
		}
	}
	if (uplinks)
		j->done((struct journal_entry *)uplinks, j->done_arg);
	for (struct sqlwriter_job *job = takes, *next; job; job = next) {
		next = job->next;
		struct journal_take *t = (struct journal_take *)job;
		if (job->err)
			t->err = job->err;
		j->takes++; /* the writer counts every job it handed back, failed or not */
		t->done(t, t->arg);
	}
}

/*
 * After each commit of the loop's connection once the writer runs (in place of SQLite's
 * automatic checkpoint, which would copy the WAL back on the loop: a prune's steps took
 * 40 ms more each time): the writer thread checkpoints once the WAL is long.
 */
static int loop_wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct journal *j = arg;
	if (frames >= LOOP_CHECKPOINT_FRAMES && j->writer)
		sqlwriter_checkpoint(j->writer);
	return SQLITE_OK;
}

int journal_writer_start(struct journal *j, struct event_base *base, journal_done_fn *done,
			 void *arg, char *err, size_t errlen)
{
	if (strcmp(j->path, ":memory:") == 0 || j->writer) {
		snprintf(err, errlen, "the journal writer needs a database file, once");
		return -EINVAL;
	}
	j->done = done;
	j->done_arg = arg;
	const struct sqlwriter_options o = {
	    .path = j->path,
	    .init = writer_init,
	    .fini = writer_fini,
	    .apply = writer_apply,
	    .settled = writer_settled,
	    .done = writer_done,
	    .arg = j,
	};
	int r = sqlwriter_new(base, &o, &j->writer, err, errlen);
	if (r == 0) /* this connection's commits never checkpoint: the writer does, off the loop */
		sqlite3_wal_hook(j->db, loop_wal_hook, j);
	return r;
}

int journal_uplink_queue(struct journal *j, struct journal_entry *list)
{
	if (!j->writer)
		return -ENOTCONN;
	return sqlwriter_submit(j->writer, &list->job);
}

void journal_writer_drain(struct journal *j)
{
	if (j && j->writer)
		sqlwriter_drain(j->writer);
}

int journal_uplink_add(struct journal *j, const struct journal_uplink *u, int64_t *ret_seq)
{
	int r = journal_begin(j);
	if (r < 0)
		return r;
	int64_t seq;
	struct journal_uplink v = *u;
	r = journal_uplink_insert(j, &v, &seq);
	if (r < 0) {
		journal_rollback(j);
		if (r == -EEXIST)
			*ret_seq = seq;
		return r;
	}
	r = journal_commit(j);
	if (r == 0)
		*ret_seq = seq;
	return r;
}

/* Append the bytes of s (no escaping) to the buffer at *p, which has room. */
static char *put_raw(char *p, const char *s)
{
	size_t n = strlen(s);
	memcpy(p, s, n);
	return p + n;
}

/* Append n in decimal to the buffer at p, which has room. */
static char *put_int(char *p, int64_t n)
{
	char digits[24];
	int i = 0;
	uint64_t v = n < 0 ? 0 - (uint64_t)n : (uint64_t)n;
	do {
		digits[i++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	if (n < 0)
		*p++ = '-';
	while (i)
		*p++ = digits[--i];
	return p;
}

/* Append s as a JSON string (quoted, escaped) to the buffer at *p, which has room. */
static char *put_string(char *p, const char *s)
{
	static const char hexd[] = "0123456789abcdef";
	*p++ = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			memcpy(p, "\\u00", 4);
			p[4] = hexd[c >> 4];
			p[5] = hexd[c & 15];
			p += 6;
		} else {
			*p++ = (char)c;
		}
	}
	*p++ = '"';
	return p;
}

char *journal_uplink_json(const struct journal_uplink *u, int64_t seq, size_t *ret_len)
{
	const char *radio = u->radio ? u->radio : "{}";
	/* Every string at most 6 bytes per byte when escaped, plus names and numbers. */
	size_t cap = 6 * (strlen(u->dev_eui) + strlen(u->customer_id) + strlen(u->dev_addr) +
			  strlen(u->time) + strlen(u->payload_hex)) +
		     strlen(radio) + 512;
	char *buf = malloc(cap), *p = buf;
	if (!buf)
		return NULL;
	char when[40];
	uplink_time_format(u->received_ms, when, sizeof(when));
	p = put_raw(p, "{\"seq\":");
	p = put_int(p, seq);
	p = put_raw(p, ",\"receivedAt\":");
	p = put_string(p, when);
	p = put_raw(p, ",\"devEUI\":");
	p = put_string(p, u->dev_eui);
	p = put_raw(p, ",\"customerID\":");
	p = put_string(p, u->customer_id);
	p = put_raw(p, ",\"devAddr\":");
	p = put_string(p, u->dev_addr);
	p = put_raw(p, ",\"fCntUp\":");
	p = put_int(p, u->fcnt_up);
	p = put_raw(p, ",\"time\":");
	p = put_string(p, u->time);
	p = put_raw(p, ",\"payload\":");
	p = put_string(p, u->payload_hex);
	p = put_raw(p, u->encrypted ? ",\"encrypted\":true,\"radio\":"
				    : ",\"encrypted\":false,\"radio\":");
	p = put_raw(p, radio);
	if (u->fport >= 0) {
		p = put_raw(p, ",\"fPort\":");
		p = put_int(p, u->fport);
	}
	if (u->has_fcnt_dn) {
		p = put_raw(p, ",\"fCntDn\":");
		p = put_int(p, u->fcnt_dn);
	}
	*p++ = '}';
	*p = '\0';
	*ret_len = (size_t)(p - buf);
	return buf;
}

json_t *journal_uplinks_after(struct journal *j, int64_t after, size_t limit)
{
	/* A field or a row jansson could not add would go unnoticed: see the end. */
	unsigned long failures = wipe_alloc_failures();
	json_t *a = json_array();
	if (!a)
		return NULL;
	sqlite3_stmt *s = stmt(j, ST_UPLINKS_AFTER);
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)limit);
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		char when[40];
		uplink_time_format(sqlite3_column_int64(s, 1), when, sizeof(when));
		json_t *radio = json_loads(col_text(s, 11), 0, NULL);
		json_t *o = json_pack(
		    "{s:I, s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:b, s:o}", "seq",
		    (json_int_t)sqlite3_column_int64(s, 0), "receivedAt", when, "devEUI",
		    col_text(s, 2), "customerID", col_text(s, 3), "devAddr", col_text(s, 4),
		    "fCntUp", (json_int_t)sqlite3_column_int64(s, 6), "time", col_text(s, 8),
		    "payload", col_text(s, 9), "encrypted", sqlite3_column_int(s, 10) != 0, "radio",
		    radio ? radio : json_object());
		if (!o) {
			json_decref(a);
			a = NULL;
			break;
		}
		if (sqlite3_column_type(s, 5) != SQLITE_NULL)
			json_object_set_new(o, "fPort", json_integer(sqlite3_column_int(s, 5)));
		if (sqlite3_column_type(s, 7) != SQLITE_NULL)
			json_object_set_new(o, "fCntDn",
					    json_integer((json_int_t)sqlite3_column_int64(s, 7)));
		json_array_append_new(a, o);
	}
	sqlite3_reset(s);
	if (a && (rc != SQLITE_DONE || wipe_alloc_failures() != failures)) {
		json_decref(a);
		return NULL;
	}
	return a;
}

int64_t journal_received_after(struct journal *j, int64_t after)
{
	sqlite3_stmt *s = stmt(j, ST_RECEIVED_AFTER);
	sqlite3_bind_int64(s, 1, after);
	int64_t ms = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	sqlite3_reset(s);
	return ms;
}

/*
 * Raise a session's next FCntDn by one inside the connection's open transaction (get and
 * set are its ST_FCNT_GET and ST_FCNT_SET): the counter it was in *ret; -ENOENT no such
 * session, -ERANGE its counter is used up (the device must rejoin), else the store's error.
 */
static int counter_take(sqlite3_stmt *get, sqlite3_stmt *set, int64_t session_id, uint32_t *ret)
{
	sqlite3_reset(get);
	sqlite3_bind_int64(get, 1, session_id);
	int rc = sqlite3_step(get);
	int64_t next = rc == SQLITE_ROW ? sqlite3_column_int64(get, 0) : -1;
	sqlite3_reset(get);
	if (next < 0)
		return rc == SQLITE_DONE ? -ENOENT : sql_errno(NULL, rc);
	if (next > UINT32_MAX)
		return -ERANGE;
	sqlite3_reset(set);
	sqlite3_bind_int64(set, 1, next + 1);
	sqlite3_bind_int64(set, 2, session_id);
	int r = step_done(set);
	if (r == 0)
		*ret = (uint32_t)next;
	return r;
}

static int fcnt_dn_take(struct journal *j, int64_t session_id, uint32_t *ret)
{
	static const char what[] = "the downlink counter";
	int r = exec(j, "BEGIN IMMEDIATE");
	if (r < 0)
		return note_write(j, r, what, true);
	uint32_t fcnt = 0;
	r = counter_take(j->st[ST_FCNT_GET], j->st[ST_FCNT_SET], session_id, &fcnt);
	if (r == -ENOENT || r == -ERANGE) {
		exec(j, "ROLLBACK");
		return r;
	}
	if (r == 0)
		r = exec(j, "COMMIT");
	if (note_write(j, r, what, true) < 0) {
		exec(j, "ROLLBACK");
		return r;
	}
	j->commits++;
	*ret = fcnt;
	return 0;
}

int journal_fcnt_dn_take(struct journal *j, int64_t session_id, uint32_t *ret)
{
	loop_write_begin(j);
	int r = fcnt_dn_take(j, session_id, ret);
	loop_write_end(j);
	return r;
}

int journal_fcnt_dn_queue(struct journal *j, struct journal_take *t)
{
	if (!j->writer)
		return -ENOTCONN;
	t->job.tag = JOURNAL_JOB_TAKE;
	t->job.next = NULL;
	return sqlwriter_submit(j->writer, &t->job);
}

static int prune(struct journal *j, int64_t before_ms, int64_t keep_after, int limit,
		 int64_t *ret_held);

int journal_prune(struct journal *j, int64_t before_ms, int64_t keep_after, int limit,
		  int64_t *ret_held)
{
	loop_write_begin(j);
	int r = prune(j, before_ms, keep_after, limit, ret_held);
	loop_write_end(j);
	return r;
}

/*
 * Walk the uplinks in seq order (journal order is the order of receipt, so no index on
 * the time is needed) after `after` and up to upto, at most limit of them (< 0: all), up
 * to the first received at or after before_ms: how many were old in *ret_n, the last of
 * them in *ret_last (unchanged if none); 0 or -errno. An uplink received before an older
 * one (the host's clock stepped back) waits for it. A step reads only what it removes,
 * and one more.
 */
static int old_uplinks(struct journal *j, int64_t after, int64_t before_ms, int64_t upto,
		       int64_t limit, int64_t *ret_n, int64_t *ret_last)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(j->db,
			       "SELECT seq, received_ms FROM uplink WHERE seq > ? AND seq <= ?"
			       " ORDER BY seq LIMIT ?",
			       -1, &s, NULL) != SQLITE_OK)
		return sql_errno(j->db, sqlite3_errcode(j->db));
	sqlite3_bind_int64(s, 1, after);
	sqlite3_bind_int64(s, 2, upto);
	sqlite3_bind_int64(s, 3, limit);
	int rc;
	*ret_n = 0;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		j->prune_read++;
		if (sqlite3_column_int64(s, 1) >= before_ms)
			break;
		*ret_last = sqlite3_column_int64(s, 0);
		(*ret_n)++;
	}
	sqlite3_finalize(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_errno(j->db, rc);
}

static int prune(struct journal *j, int64_t before_ms, int64_t keep_after, int limit,
		 int64_t *ret_held)
{
	/*
	 * Their (DevEUI, session, FCntUp) go with them, in the same transaction (the same
	 * rows: uplink_seen holds a row's key only while the row is there), found by that key.
	 */
	static const char *const sql[] = {
	    "DELETE FROM uplink_seen WHERE (dev_eui, session_id, fcnt_up) IN"
	    " (SELECT dev_eui, session_id, fcnt_up FROM uplink WHERE seq <= ?1) AND seq <= ?1",
	    "DELETE FROM uplink WHERE seq <= ?",
	};
	int64_t old = 0, through = 0, any = 0;
	int removed = 0;
	int r = exec(j, "BEGIN IMMEDIATE");
	if (r == 0)
		r = old_uplinks(j, 0, before_ms, keep_after, limit > 0 ? limit : -1, &old,
				&through);
	for (int i = 0; i < 2 && r == 0 && old > 0; i++) {
		sqlite3_stmt *s = NULL;
		if (sqlite3_prepare_v2(j->db, sql[i], -1, &s, NULL) != SQLITE_OK) {
			r = sql_errno(j->db, sqlite3_errcode(j->db));
			break;
		}
		sqlite3_bind_int64(s, 1, through);
		int e = step_done(s);
		sqlite3_finalize(s);
		if (e < 0)
			r = e;
		else
			removed = sqlite3_changes(j->db);
	}
	/* The table emptied, so through was its newest: the counter goes on from meta. */
	if (r == 0 && old > 0 &&
	    (r = query_int_of(j, "SELECT EXISTS (SELECT 1 FROM uplink)", &any)) == 0 && !any)
		r = seq_floor_raise(j->db, through);
	if (r == 0)
		r = exec(j, "COMMIT");
	if (r < 0) {
		if (!sqlite3_get_autocommit(j->db))
			exec(j, "ROLLBACK");
		return note_write(j, r, "the removal of old uplinks", true);
	}
	if (removed > 0) /* a DELETE that found nothing wrote nothing */
		note_write(j, 0, NULL, true);
	if (ret_held) {
		/* What the webhook's cursor keeps: the old uplinks after it. */
		int64_t ignored;
		*ret_held = 0;
		if (keep_after != INT64_MAX && (limit <= 0 || removed < limit) &&
		    old_uplinks(j, keep_after, before_ms, INT64_MAX, -1, ret_held, &ignored) < 0)
			*ret_held = 0; /* only logged */
	}
	return removed;
}

uint64_t journal_prune_rows_read(const struct journal *j)
{
	return j->prune_read;
}

bool journal_checkpointing(struct journal *j)
{
	return j->writer && sqlwriter_checkpointing(j->writer);
}

void journal_checkpoint(struct journal *j)
{
	if (j->writer)
		sqlwriter_checkpoint(j->writer); /* off the loop */
	else
		sqlite3_wal_checkpoint_v2(j->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}

/* The first column of sql's first row (0 if none) in *ret; 0, or -errno. */
static int query_int_of(struct journal *j, const char *sql, int64_t *ret)
{
	sqlite3_stmt *s = NULL;
	*ret = 0;
	int rc = sqlite3_prepare_v2(j->db, sql, -1, &s, NULL);
	if (rc == SQLITE_OK && (rc = sqlite3_step(s)) == SQLITE_ROW)
		*ret = sqlite3_column_int64(s, 0);
	sqlite3_finalize(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_errno(NULL, rc);
}

/* The same, 0 when it cannot be read: for counters shown, never for decisions. */
static int64_t query_int(struct journal *j, const char *sql)
{
	int64_t v;
	query_int_of(j, sql, &v);
	return v;
}

void journal_get_counters(struct journal *j, struct journal_stats *ret)
{
	memset(ret, 0, sizeof(*ret));
	ret->last_seq = query_int(j, "SELECT " SEQ_LAST);
	ret->commits = j->commits;
	ret->failed_commits = j->failures;
	ret->failing_since_ms = j->failing_since_ms;
	snprintf(ret->last_error, sizeof(ret->last_error), "%s", j->last_error);
	if (j->writer) {
		struct sqlwriter_stats ws;
		sqlwriter_get_stats(j->writer, &ws);
		ret->commits += ws.commits;
		ret->batches = ws.commits;
		ret->batched = ws.jobs - j->takes;
		ret->largest_batch = ws.max_batch;
		ret->failed_commits += ws.failures;
	}
}

void journal_get_stats(struct journal *j, struct journal_stats *ret)
{
	journal_get_counters(j, ret);
	ret->uplinks = query_int(j, "SELECT COUNT(*) FROM uplink");
	ret->sessions = query_int(j, "SELECT COUNT(*) FROM session");
	ret->astks = query_int(j, "SELECT COUNT(*) FROM astk");
}

int64_t journal_first_seq(struct journal *j)
{
	int64_t v;
	int r = query_int_of(j, "SELECT IFNULL(MIN(seq), 0) FROM uplink", &v);
	return r < 0 ? r : v;
}

int journal_cursor_get(struct journal *j, const char *name, int64_t *ret)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(j->db, "SELECT seq FROM cursor WHERE name = ?", -1, &s, NULL) !=
	    SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	*ret = rc == SQLITE_ROW ? sqlite3_column_int64(s, 0) : 0;
	sqlite3_finalize(s);
	return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_errno(NULL, rc);
}

int journal_cursor_set(struct journal *j, const char *name, int64_t seq)
{
	sqlite3_stmt *s = NULL;
	if (sqlite3_prepare_v2(j->db,
			       "INSERT INTO cursor (name, seq) VALUES (?, ?)"
			       " ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
			       -1, &s, NULL) != SQLITE_OK)
		return -EIO;
	sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, seq);
	loop_write_begin(j);
	int r = note_write(j, step_done(s), "the webhook's cursor", true);
	loop_write_end(j);
	sqlite3_finalize(s);
	if (r == 0)
		j->commits++;
	return r;
}
