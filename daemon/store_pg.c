/* store_pg: the device store on PostgreSQL (libpq non-blocking, on the event loop). */
#include "store.h"
#include "store_backend.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/types.h>
#include <time.h>

#include <event2/event.h>
#include <libpq-fe.h>
#include <mbedtls/sha256.h>

#include "clock.h"
#include "cred.h"
#include "fnv.h"
#include "hex.h"
#include "log.h"
#include "seal.h"
#include "store_url.h"
#include "utf8.h"

/*
 * How it works. Writes go to one of the writer connections (chosen by DevEUI, so the writes
 * of one device stay in order), each driven by libevent in libpq's pipeline mode: a batch
 * of queued writes is sent as BEGIN, one statement per write, COMMIT and a sync, in one
 * round trip. Every write is a single statement that says itself whether it was done, so a
 * refused write (-EEXIST, -ENOENT, -EALREADY) does not abort the others. A lost connection
 * fails the batch in flight and every queued write at once with the reason, and the
 * connection is made again with backoff. A device's row is read on its writer connection
 * (after its writes); every other read (lists, counts, audit, attempts, pooled keys) goes to
 * one more connection, the reader, driven the same way: reads never block the loop and
 * fail at once while their connection is down. The synchronous reads (tools, tests and
 * start-up only) open a blocking connection for the call.
 *
 * The claim: a PENDING row written by this tpad holds the device's lease (lease_owner,
 * lease_until = the database's now() + store.lease); a write of any other state releases
 * it. A write is refused (-EALREADY) while another tpad's lease on the row is live, and a
 * write that records a new attempt n also only if the row still has n - 1 attempts, so
 * two tpads never both record (and send) attempt n.
 */

#define PG_SCHEMA_VERSION 3 /* the same versions as the SQLite store */
#define PG_MAX_BATCH 256
#define PG_DEFAULT_MAX_QUEUE 16384
#define PG_SEALED_LEN (16 + SEAL_OVERHEAD)
#define PG_KEY_CHECK_LEN 16
#define PG_BACKOFF_MIN_MS 100
#define PG_BACKOFF_MAX_MS 1000 /* a connection refused costs nothing: serve soon after it is back */
#define PG_MAX_WRITERS 63
#define PG_BATCH_TIMEOUT_MS 15000 /* a transaction this long without an answer: link lost */

static const char key_check_aad[] = "tpad store key check v1";

/* Schema migrations: entry i moves the database from version i to i + 1. */
static const char *const pg_migrations[PG_SCHEMA_VERSION] = {
    "CREATE TABLE devices ("
    " dev_eui TEXT PRIMARY KEY CHECK (length(dev_eui) = 16),"
    " join_eui TEXT NOT NULL CHECK (length(join_eui) = 16),"
    " profile_id TEXT NOT NULL CHECK (length(profile_id) = 8),"
    " serial TEXT, tkm_info TEXT, app_key_sealed BYTEA,"
    " app_key_generated BOOLEAN NOT NULL DEFAULT false,"
    " state TEXT NOT NULL CHECK (state IN ('PENDING', 'ISSUED', 'FAILED')),"
    " owner_token TEXT, ref TEXT, last_error TEXT,"
    " origin TEXT NOT NULL CHECK (origin IN ('activate', 'import')),"
    " uid BIGINT, pid BIGINT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
    "CREATE INDEX devices_state ON devices (state, dev_eui);"
    "CREATE TABLE audit (id BIGSERIAL PRIMARY KEY, dev_eui TEXT NOT NULL, method TEXT NOT NULL,"
    " uid BIGINT, pid BIGINT, at BIGINT NOT NULL, outcome TEXT NOT NULL);"
    "CREATE INDEX audit_dev_eui ON audit (dev_eui, id);"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BYTEA NOT NULL);",
    "CREATE TABLE labels (dev_eui TEXT PRIMARY KEY CHECK (length(dev_eui) = 16),"
    " text TEXT NOT NULL, ec INTEGER NOT NULL, matrix BYTEA NOT NULL, image_opts TEXT,"
    " image BYTEA);",
    /* v3: the exactly-once rules (as on SQLite), and on PostgreSQL the claim. */
    "ALTER TABLE devices DROP CONSTRAINT devices_state_check;"
    "ALTER TABLE devices ADD CONSTRAINT devices_state_check"
    " CHECK (state IN ('PENDING', 'ISSUED', 'FAILED', 'FOREIGN', 'RETIRED'));"
    "ALTER TABLE devices ADD COLUMN attempts BIGINT NOT NULL DEFAULT 0,"
    " ADD COLUMN maybe_at BIGINT NOT NULL DEFAULT 0, ADD COLUMN instance TEXT,"
    " ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '', ADD COLUMN lease_until TIMESTAMPTZ;"
    "UPDATE devices SET attempts = 1, maybe_at = updated_at WHERE state = 'PENDING';"
    "CREATE TABLE attempts (dev_eui TEXT NOT NULL CHECK (length(dev_eui) = 16),"
    " n BIGINT NOT NULL CHECK (n > 0), at BIGINT NOT NULL, instance TEXT,"
    " digest TEXT NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (dev_eui, n));"
    "INSERT INTO attempts SELECT dev_eui, 1, updated_at, NULL, '', 'sending' FROM devices"
    " WHERE state = 'PENDING';"
    "ALTER TABLE audit ADD COLUMN instance TEXT;",
};

#define DEVICE_COLUMNS                                                                             \
	"dev_eui, join_eui, profile_id, serial, tkm_info, app_key_sealed, app_key_generated, "     \
	"state, owner_token, ref, last_error, origin, uid, pid, created_at, updated_at, "          \
	"attempts, maybe_at, instance"

/* The lease as the reader sees it: only another tpad's live claim ($1 is this instance). */
#define LEASE_COLUMNS                                                                              \
	", CASE WHEN lease_owner <> '' AND lease_owner <> $1 AND lease_until > now() "            \
	"THEN lease_owner ELSE '' END, "                                                           \
	"CASE WHEN lease_owner <> '' AND lease_owner <> $1 AND lease_until > now() "               \
	"THEN (extract(epoch FROM lease_until - now()) * 1000)::bigint ELSE 0 END"

/*
 * Parameters of a row write: $1..$19 the row as DEVICE_COLUMNS, $20 the lease in ms,
 * $21..$25 the attempt (n = 0: none), $26 the attempts the row must have now (-1: any).
 * The answer: whether it was done, whether the row exists, who holds it, whether an
 * expired claim of another tpad was taken over.
 */
#define LEASE_SET                                                                                  \
	"lease_owner = CASE WHEN $8 = 'PENDING' THEN $19 ELSE '' END, "                            \
	"lease_until = CASE WHEN $8 = 'PENDING' THEN now() + $20::bigint * interval '1 ms' END"

/* An attempt's row; a later outcome of it (another line's settlement too) keeps the
 * instance that made it. */
#define ATTEMPT_CTE                                                                                \
	", a AS (INSERT INTO attempts (dev_eui, n, at, instance, digest, outcome) "                \
	"SELECT dev_eui, $21, $22, $19, $23, $24 FROM d WHERE $21::bigint > 0 "                    \
	"ON CONFLICT (dev_eui, n) DO UPDATE SET at = EXCLUDED.at, digest = EXCLUDED.digest, "      \
	"outcome = EXCLUDED.outcome) "

static const char sql_insert[] =
    "WITH d AS (INSERT INTO devices (" DEVICE_COLUMNS ", lease_owner, lease_until) VALUES "
    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, "
    "CASE WHEN $8 = 'PENDING' THEN $19 ELSE '' END, "
    "CASE WHEN $8 = 'PENDING' THEN now() + $20::bigint * interval '1 ms' END) "
    "ON CONFLICT (dev_eui) DO NOTHING RETURNING dev_eui, false AS takeover)" ATTEMPT_CTE
    "SELECT (SELECT count(*) FROM d), EXISTS (SELECT 1 FROM devices WHERE dev_eui = $1), "
    "(SELECT lease_owner FROM devices WHERE dev_eui = $1), false, $25::bigint, $26::bigint";

static const char sql_update[] =
    "WITH o AS (SELECT lease_owner AS old_owner, lease_until AS old_until FROM devices "
    "WHERE dev_eui = $1), "
    "d AS (UPDATE devices SET join_eui = $2, profile_id = $3, serial = $4, tkm_info = $5, "
    "app_key_sealed = $6, app_key_generated = $7, state = $8, owner_token = $9, ref = $10, "
    "last_error = $11, origin = $12, uid = $13, pid = $14, updated_at = $16, attempts = $17, "
    "maybe_at = $18, instance = $19, " LEASE_SET " FROM o WHERE dev_eui = $1 "
    "AND (lease_owner IN ('', $19) OR lease_until IS NULL OR lease_until < now()) "
    "AND ($26::bigint < 0 OR attempts = $26::bigint) "
    "RETURNING dev_eui, (o.old_owner NOT IN ('', $19)) AS takeover)" ATTEMPT_CTE
    "SELECT (SELECT count(*) FROM d), EXISTS (SELECT 1 FROM devices WHERE dev_eui = $1), "
    "(SELECT lease_owner FROM devices WHERE dev_eui = $1), "
    "coalesce((SELECT takeover FROM d), false), $15::bigint, $25::bigint";

static const char sql_get[] =
    "SELECT " DEVICE_COLUMNS LEASE_COLUMNS " FROM devices WHERE dev_eui = $2";

/*
 * The cloud-HSM AppKey pool, as on SQLite (sealed AppKey || hsmEncryptedAppKey found by a
 * digest of the AppKey), shared by every tpad: a pair is reserved by the instance that
 * loads it (reserved_by), so two tpads never hand out the same key.
 */
static const char sql_key_pool_table[] =
    "CREATE TABLE IF NOT EXISTS app_key_pool (digest BYTEA PRIMARY KEY CHECK "
    "(length(digest) = 32), sealed BYTEA NOT NULL, handed BOOLEAN NOT NULL DEFAULT false, "
    "created_at BIGINT NOT NULL, reserved_by TEXT)";
static const char sql_key_put[] =
    "INSERT INTO app_key_pool (digest, sealed, handed, created_at, reserved_by) "
    "VALUES ($1, $2, false, $3, $4) ON CONFLICT (digest) DO NOTHING";
static const char sql_key_taken[] = "UPDATE app_key_pool SET handed = true WHERE digest = $1";

/* Extend this tpad's claim ($2) on a PENDING row by $3 ms, if it still holds it. */
static const char sql_renew[] =
    "UPDATE devices SET lease_until = now() + $3::bigint * interval '1 ms' "
    "WHERE dev_eui = $1 AND state = 'PENDING' AND lease_owner = $2";

static const char sql_audit[] = "INSERT INTO audit (dev_eui, method, uid, pid, at, outcome, "
				"instance) VALUES ($1, $2, $3, $4, $5, $6, $7)";
static const char sql_label[] =
    "INSERT INTO labels (dev_eui, text, ec, matrix, image_opts, image) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dev_eui) DO UPDATE SET text = EXCLUDED.text, "
    "ec = EXCLUDED.ec, matrix = EXCLUDED.matrix, image_opts = EXCLUDED.image_opts, "
    "image = EXCLUDED.image";

/* Reads: $1 is this instance wherever rows carry the lease. */
static const char sql_list_all[] = "SELECT " DEVICE_COLUMNS LEASE_COLUMNS
				   " FROM devices WHERE dev_eui > $2 ORDER BY dev_eui "
				   "LIMIT $3::bigint";
static const char sql_list_state[] = "SELECT " DEVICE_COLUMNS LEASE_COLUMNS
				     " FROM devices WHERE state = $4 AND dev_eui > $2 "
				     "ORDER BY dev_eui LIMIT $3::bigint";
static const char sql_count[] = "SELECT state, count(*) FROM devices GROUP BY state";
static const char sql_audit_all[] = "SELECT id, dev_eui, method, uid, pid, at, outcome FROM audit "
				    "WHERE id > $1::bigint ORDER BY id LIMIT $2::bigint";
static const char sql_audit_dev[] = "SELECT id, dev_eui, method, uid, pid, at, outcome FROM audit "
				    "WHERE dev_eui = $3 AND id > $1::bigint ORDER BY id "
				    "LIMIT $2::bigint";
static const char sql_attempts[] = "SELECT n, at, instance, digest, outcome FROM attempts "
				   "WHERE dev_eui = $1 ORDER BY n";
static const char sql_key_find[] = "SELECT digest, sealed FROM app_key_pool WHERE digest = $1";

enum op_kind {
	OP_INSERT,
	OP_UPDATE,
	OP_AUDIT,
	OP_LABEL,
	OP_GET,
	OP_KEY_PUT,
	OP_KEY_TAKEN,
	OP_RENEW,
	OP_LIST_ALL, /* the reads from here on go to the reader connection */
	OP_LIST_STATE,
	OP_COUNT,
	OP_AUDIT_ALL,
	OP_AUDIT_DEV,
	OP_ATTEMPTS,
	OP_KEY_FIND,
};
#define N_STATEMENTS 15

/* The prepared statement of each kind of operation, by enum op_kind. */
static const char *const statement_names[N_STATEMENTS] = {
    "tpad_insert",    "tpad_update", "tpad_audit",     "tpad_label",     "tpad_get",
    "tpad_key_put",   "tpad_key_taken", "tpad_renew",     "tpad_list_all", "tpad_list_state", "tpad_count",
    "tpad_audit_all", "tpad_audit_dev", "tpad_attempts", "tpad_key_find"};
static const char *const statement_sql[N_STATEMENTS] = {
    sql_insert,	  sql_update,	 sql_audit,	sql_label,     sql_get,
    sql_key_put,  sql_key_taken, sql_renew,	sql_list_all,	sql_list_state, sql_count,
    sql_audit_all, sql_audit_dev, sql_attempts,	sql_key_find};

/* A read: nothing of it is a write to count. */
static bool op_is_read(enum op_kind k)
{
	return k == OP_GET || k >= OP_LIST_ALL;
}

/* One queued write: its parameters as text (bytea in binary), ready to send. */
#define OP_MAX_PARAMS 26
struct op {
	struct op *next;
	enum op_kind kind;
	store_done_fn *cb;
	void *arg;
	int err;
	char reason[256];
	char dev_eui[17];
	store_get_fn *get_cb;	 /* OP_GET */
	struct store_record *rec; /* OP_GET: the row read, if any */
	store_rows_fn *rows_cb;	 /* the other reads */
	struct store_rows rows;	 /* their answer */
	size_t cap;		 /* entries allocated in rows */
	uint8_t key[16];	 /* OP_KEY_FIND: the AppKey asked for */
	int n;
	char *values[OP_MAX_PARAMS];
	int lengths[OP_MAX_PARAMS];
	int formats[OP_MAX_PARAMS];
};

struct pg_store;

/* One writer connection and its queue. */
struct pgw {
	struct pg_store *s;
	unsigned idx;
	PGconn *conn;
	struct event *ev;     /* socket readiness */
	struct event *timer;  /* reconnect backoff */
	int fd;
	enum { W_DOWN, W_CONNECTING, W_IDLE, W_BUSY } state;
	uint32_t backoff_ms;
	bool was_up;
	struct op *q_head, *q_tail; /* waiting */
	size_t q_len;
	struct op *batch; /* in flight, in order */
	size_t batch_len;
	size_t cur;	  /* index of the statement whose results come next */
	size_t first;	  /* index of BEGIN: after the statements prepared with this batch */
	size_t n_prep;	  /* DEALLOCATE and the statements prepared with this batch, or 0 */
	bool prepared;	  /* the statements are prepared on this connection */
	bool in_failed_tx; /* the last batch failed before its COMMIT: its transaction is open */
	unsigned prep_ok; /* statements prepared by the batch in flight */
	bool batch_error;
	char batch_reason[256];
	bool commit_ok;
	int64_t batch_start_us;
	struct event *batch_timer; /* a batch without an answer this long: the link is dead */
};

struct pg_store {
	struct event_base *base;
	char *url;
	char *password;
	char instance[65];
	uint32_t lease_ms;
	struct seal *seal;
	size_t max_queue;
	unsigned n_writers;
	struct pgw w[PG_MAX_WRITERS + 1]; /* the writers, then the reader */
	struct event *fail_ev; /* completes writes refused while down, from the loop */
	struct op *f_head, *f_tail;
	PGconn *reader; /* blocking: schema at start, synchronous reads */
	/*
	 * Holds this tpad's store.instance (a session advisory lock) for as long as tpad
	 * runs: a second tpad of the same name on this database is refused at start, and one
	 * that took the name while the database was away fences this one (fenced: writes fail).
	 */
	PGconn *guard;
	bool fenced;
	char host[128], db[128]; /* where the database is, for Status */
	bool closing;
	char down_reason[512];
	struct store_stats stats;
};

static void op_free(struct op *op)
{
	if (!op)
		return;
	if (op->rec) {
		cred_wipe(op->rec, sizeof(*op->rec));
		free(op->rec);
	}
	store_rows_clear(&op->rows);
	cred_wipe(op->key, sizeof(op->key));
	for (int i = 0; i < op->n; i++) {
		if (op->values[i]) {
			cred_wipe(op->values[i], (size_t)op->lengths[i]);
			free(op->values[i]);
		}
	}
	free(op);
}

/* Set parameter i to text t (NULL: SQL NULL). */
static int op_text(struct op *op, int i, const char *t)
{
	if (t) {
		/*
		 * PostgreSQL refuses text that is not UTF-8, and the whole transaction with it
		 * (a device's row, other stations' writes): a byte that starts no character
		 * becomes U+FFFD. What tpad writes is UTF-8 already; this is the last fence.
		 */
		op->values[i] = utf8_valid(t) ? strdup(t) : utf8_clean(t, strlen(t));
		if (!op->values[i])
			return -ENOMEM;
		op->lengths[i] = (int)strlen(op->values[i]) + 1;
	}
	if (op->n < i + 1)
		op->n = i + 1;
	return 0;
}

static int op_int(struct op *op, int i, long long v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%lld", v);
	return op_text(op, i, buf);
}

/* Set parameter i to binary bytes (bytea). */
static int op_bin(struct op *op, int i, const void *p, size_t n)
{
	op->values[i] = malloc(n ? n : 1);
	if (!op->values[i])
		return -ENOMEM;
	memcpy(op->values[i], p, n);
	op->lengths[i] = (int)n;
	op->formats[i] = 1;
	if (op->n < i + 1)
		op->n = i + 1;
	return 0;
}

static const char *or_null(const char *s)
{
	return s && *s ? s : NULL;
}

/* Build a row write from a record (validated, upper-cased, AppKey sealed). */
static int op_from_record(struct pg_store *s, const struct store_record *r, bool insert,
			  const struct store_attempt *a, struct op **ret)
{
	if (store_record_check(r) < 0)
		return -EINVAL;
	if (a && store_attempt_check(a) < 0)
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = insert ? OP_INSERT : OP_UPDATE;
	char eui[17], join[17], prof[9], tkm[21];
	hex_upper(eui, r->dev_eui, HEX_EUI);
	hex_upper(join, r->join_eui, HEX_EUI);
	hex_upper(prof, r->profile_id, HEX_PROFILE);
	hex_upper(tkm, r->tkm_info, strlen(r->tkm_info));
	memcpy(op->dev_eui, eui, sizeof(eui));
	int64_t now = clock_wall_ms();
	int64_t created = r->created_at > 0 ? r->created_at : now;
	int64_t updated = insert && r->created_at > 0 && r->updated_at > 0 ? r->updated_at : now;
	int e = op_text(op, 0, eui);
	e = e ? e : op_text(op, 1, join);
	e = e ? e : op_text(op, 2, prof);
	e = e ? e : op_text(op, 3, or_null(r->serial));
	e = e ? e : op_text(op, 4, or_null(tkm));
	if (!e && r->has_app_key) {
		uint8_t sealed[PG_SEALED_LEN];
		e = seal_encrypt(s->seal, (const uint8_t *)eui, HEX_EUI, r->app_key,
				 sizeof(r->app_key), sealed, sizeof(sealed));
		if (!e)
			e = op_bin(op, 5, sealed, sizeof(sealed));
	} else if (!e) {
		e = op_text(op, 5, NULL);
	}
	e = e ? e : op_text(op, 6, r->has_app_key && r->app_key_generated ? "true" : "false");
	e = e ? e : op_text(op, 7, store_state_name(r->state));
	e = e ? e : op_text(op, 8, or_null(r->owner_token));
	e = e ? e : op_text(op, 9, or_null(r->ref));
	e = e ? e : op_text(op, 10, or_null(r->last_error));
	e = e ? e : op_text(op, 11, r->origin);
	e = e ? e : op_int(op, 12, r->uid);
	e = e ? e : op_int(op, 13, r->pid);
	e = e ? e : op_int(op, 14, created);
	e = e ? e : op_int(op, 15, updated);
	e = e ? e : op_int(op, 16, r->attempts);
	e = e ? e : op_int(op, 17, r->maybe_at);
	e = e ? e : op_text(op, 18, s->instance);
	e = e ? e : op_int(op, 19, s->lease_ms);
	e = e ? e : op_int(op, 20, a ? a->n : 0);
	e = e ? e : op_int(op, 21, a ? a->at : 0);
	e = e ? e : op_text(op, 22, a ? a->digest : "");
	e = e ? e : op_text(op, 23, a ? a->outcome : "");
	/*
	 * $25: kept for the answer; $26: the attempts the row must hold now. A new attempt
	 * needs the one before it; every other update the count it was decided on: a decision
	 * made on a row another tpad has moved on since (a late disproof, a Retire of a row
	 * imported meanwhile) is refused (-EALREADY) instead of overwriting the newer row.
	 */
	e = e ? e : op_int(op, 24, 0);
	bool new_attempt = a && strcmp(a->outcome, "sending") == 0 && !insert;
	e = e ? e : op_int(op, 25, insert ? -1 : new_attempt ? (long long)a->n - 1 : r->attempts);
	if (e) {
		op_free(op);
		return e;
	}
	*ret = op;
	return 0;
}

static void writer_kick(struct pgw *w);
static void writer_connect(struct pgw *w);
static int row_to_record(struct pg_store *s, PGresult *res, int i, struct store_record *r);
static void read_result(struct pg_store *s, struct op *op, PGresult *res);
static int key_unseal(struct pg_store *s, PGresult *res, int i, uint8_t app_key[16],
		      uint8_t hsm_key[16]);

/* Queue op on the writer of its device; while down it fails from the loop. */
static PGconn *connect_start(struct pg_store *s, bool blocking);

/* The advisory lock key of an instance name (FNV-1a 64 of a prefix and the name). */
static long long instance_lock_key(const char *instance)
{
	static const char prefix[] = "tpad store.instance ";
	uint64_t h = fnv64(FNV64_START, prefix, sizeof(prefix) - 1);
	return (long long)fnv64(h, instance, strlen(instance));
}

/*
 * Take (or check that this session still holds) this tpad's instance lock on the guard
 * connection, reconnecting it if the database was away: 0, -EADDRINUSE with why when
 * another session (another tpad of the same store.instance) holds it, -EIO otherwise.
 * Blocking, bounded by connect_timeout: at start, and when a connection comes back.
 */
static int guard_take(struct pg_store *s, char *why, size_t whylen)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		if (!s->guard)
			s->guard = connect_start(s, true);
		else if (attempt > 0 || PQstatus(s->guard) != CONNECTION_OK)
			PQreset(s->guard);
		if (!s->guard || PQstatus(s->guard) != CONNECTION_OK)
			continue;
		char key[32];
		snprintf(key, sizeof(key), "%lld", instance_lock_key(s->instance));
		const char *v[] = {key};
		/* Re-entrant within the session: asking again is how a live hold is seen. */
		PGresult *res = PQexecParams(s->guard, "SELECT pg_try_advisory_lock($1::bigint)", 1,
					     NULL, v, NULL, NULL, 0);
		bool ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
		bool held = ok && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
		PQclear(res);
		if (!ok)
			continue; /* the session died with the database: reconnect once */
		if (held)
			return 0;
		snprintf(why, whylen,
			 "another tpad on this database uses store.instance '%s' (two lines with "
			 "the same name, or the same host name): give each tpad its own "
			 "store.instance",
			 s->instance);
		return -EADDRINUSE;
	}
	store_url_pq_reason(s->guard, NULL, why, whylen);
	return -EIO;
}

/* A connection came back after the database was away: is the instance still ours? */
static void guard_check(struct pg_store *s)
{
	if (s->fenced)
		return;
	char why[400];
	int r = guard_take(s, why, sizeof(why));
	if (r == -EADDRINUSE) {
		/* Its pool and claims are under the same name: writing on could hand a key twice.
		 */
		s->fenced = true;
		s->stats.down = true;
		snprintf(s->down_reason, sizeof(s->down_reason),
			 "%s; this tpad writes nothing "
			 "more until it is restarted",
			 why);
		log_errx("store: %s", s->down_reason);
	} else if (r < 0) {
		log_warnx("store: cannot check store.instance's hold: %s (checked again when a "
			  "connection comes back)",
			  why);
	}
}

static int submit(struct pg_store *s, struct op *op)
{
	if (s->closing) {
		op_free(op);
		return -ESHUTDOWN;
	}
	uint32_t h = 2166136261u;
	for (const char *p = op->dev_eui; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	struct pgw *w = &s->w[op->kind >= OP_LIST_ALL ? s->n_writers : h % s->n_writers];
	/*
	 * While the database is down, writes that wait for an answer fail at once; audit
	 * entries (nobody waits for them) are kept and written once it is back.
	 */
	bool down = s->fenced || w->state == W_DOWN || w->state == W_CONNECTING;
	if (down && (op->kind == OP_KEY_PUT || op->kind == OP_KEY_TAKEN)) {
		/* Nobody waits for them: say so now (a key that is not recorded is not used). */
		op_free(op);
		return -EIO;
	}
	if (down && op->kind != OP_AUDIT) {
		op->err = -EIO;
		const char *why = s->down_reason[0] ? s->down_reason : "connecting";
		snprintf(op->reason, sizeof(op->reason), "the database cannot be reached: %.*s",
			 (int)utf8_prefix(why, 200), why);
		if (s->f_tail)
			s->f_tail->next = op;
		else
			s->f_head = op;
		s->f_tail = op;
		event_active(s->fail_ev, EV_TIMEOUT, 0);
		return 0;
	}
	if (w->q_len >= s->max_queue) {
		op_free(op);
		return -EAGAIN;
	}
	if (w->q_tail)
		w->q_tail->next = op;
	else
		w->q_head = op;
	w->q_tail = op;
	w->q_len++;
	s->stats.queued++;
	writer_kick(w);
	return 0;
}

/* Complete the writes refused while the database was down. */
static void on_fail_ev(evutil_socket_t fd, short what, void *arg)
{
	struct pg_store *s = arg;
	struct op *list = s->f_head;
	s->f_head = s->f_tail = NULL;
	while (list) {
		struct op *next = list->next;
		if (!op_is_read(list->kind))
			s->stats.ops_failed++;
		if (list->get_cb)
			list->get_cb(list->err, NULL, list->reason, list->arg);
		else if (list->rows_cb)
			list->rows_cb(list->err, list->reason, NULL, list->arg);
		else if (list->cb)
			list->cb(list->err, list->reason, list->arg);
		op_free(list);
		list = next;
	}
}

/* Complete a list of writes with err (or their own results when err is 0). */
/*
 * Answer a list of operations. A write that failed with the connection may have committed
 * all the same: its reason says so; a read's does not.
 */
static void complete(struct pg_store *s, struct op *list, int err, const char *reason)
{
	char wreason[360];
	if (err == -EIO && reason && strstr(reason, "connection was lost"))
		snprintf(wreason, sizeof(wreason), "%s; the write may or may not have committed",
			 reason);
	else
		snprintf(wreason, sizeof(wreason), "%s", reason ? reason : "");
	while (list) {
		struct op *next = list->next;
		int e = err ? err : list->err;
		if (list->get_cb)
			list->get_cb(e, e ? NULL : list->rec, e ? (err ? reason : list->reason) : NULL,
				     list->arg);
		else if (list->rows_cb)
			list->rows_cb(e, e ? (err ? reason : list->reason) : NULL,
				      e ? NULL : &list->rows, list->arg);
		else if (list->cb)
			list->cb(e, err ? wreason : list->reason, list->arg);
		op_free(list);
		list = next;
	}
}

/* What to check when the server refused the password: where this one came from. */
static const char *password_hint(const struct pg_store *s)
{
	if (s->password)
		return "; check the password in the credential store-password (or "
		       "store.password-file) against the role's password in the database";
	if (store_url_has_password(s->url))
		return "; check the password in store.url against the role's password in the "
		       "database";
	return "; check the password libpq found (PGPASSWORD, ~/.pgpass) against the role's "
	       "password in the database, or give one with LoadCredential=store-password:FILE";
}

/* What fixes a missing or refused password, from libpq's reason why; "" for another failure. */
static const char *auth_hint(const struct pg_store *s, const char *why)
{
	if (strstr(why, "no password supplied"))
		return "; give the password with LoadCredential=store-password:FILE in the "
		       "service, "
		       "or store.password-file";
	if (strstr(why, "password authentication failed"))
		return password_hint(s);
	return "";
}

/*
 * A reconnect whose password is refused (the role's changed since tpad started): what to
 * check, and that tpad read its own password at start, so a corrected one needs a restart.
 */
static void set_down_reason(struct pg_store *s, const char *why)
{
	const char *hint = auth_hint(s, why);
	bool at_start = s->password || store_url_has_password(s->url);
	snprintf(s->down_reason, sizeof(s->down_reason), "%s%s%s", why, hint,
		 *hint && at_start ? " (tpad reads it at start: restart tpad once it is right)"
				   : "");
}

/* The connection broke: fail what is in flight and queued, reconnect with backoff. */
static void writer_lost(struct pgw *w, const char *why)
{
	struct pg_store *s = w->s;
	set_down_reason(s, why);
	/*
	 * Once per connection that was up; a reconnect that fails is only debug: the
	 * database down, still down and back are the events dispatch logs, paced.
	 */
	if ((w->state == W_IDLE || w->state == W_BUSY) && !s->closing)
		log_info("store: connection %u to the database lost: %s", w->idx, why);
	else if (!s->closing)
		log_debug("store: connection %u to the database not made: %s", w->idx, why);
	if (w->ev) {
		event_free(w->ev);
		w->ev = NULL;
	}
	if (w->batch_timer)
		evtimer_del(w->batch_timer);
	if (w->conn) {
		PQfinish(w->conn);
		w->conn = NULL;
	}
	if (w->state == W_IDLE || w->state == W_BUSY)
		s->stats.connections--;
	w->state = W_DOWN;
	if (!s->stats.down)
		s->stats.outages++;
	s->stats.down = true;
	bool reader = w->idx == s->n_writers;
	char reason[300];
	snprintf(reason, sizeof(reason), "the database connection was lost (%s)", why);
	struct op *batch = w->batch, *queued = NULL, **qt = &queued;
	size_t nb = w->batch_len, nq = 0;
	w->batch = NULL;
	w->batch_len = 0;
	/* Queued audit entries stay for the next connection; the other writes fail. */
	struct op *keep = NULL, **kt = &keep, *klast = NULL;
	size_t nk = 0;
	for (struct op *op = w->q_head, *next; op; op = next) {
		next = op->next;
		op->next = NULL;
		if (op->kind == OP_AUDIT && !s->closing) {
			*kt = op;
			kt = &op->next;
			klast = op;
			nk++;
		} else {
			*qt = op;
			qt = &op->next;
			nq++;
		}
	}
	w->q_head = keep;
	w->q_tail = klast;
	w->q_len = nk;
	s->stats.queued -= nq;
	if (!reader) {
		s->stats.ops_failed += nb + nq;
		if (nb)
			s->stats.batch_failures++;
	}
	s->stats.last_error = -EIO;
	snprintf(s->stats.last_reason, sizeof(s->stats.last_reason), "%s", why);
	if (!s->closing) {
		struct timeval tv = {.tv_sec = w->backoff_ms / 1000,
				     .tv_usec = (w->backoff_ms % 1000) * 1000};
		evtimer_add(w->timer, &tv);
		w->backoff_ms = w->backoff_ms * 2 > PG_BACKOFF_MAX_MS ? PG_BACKOFF_MAX_MS
								     : w->backoff_ms * 2;
	}
	complete(s, batch, -EIO, reason);
	char r2[300];
	snprintf(r2, sizeof(r2), "the database cannot be reached: %s", why);
	complete(s, queued, -EIO, r2);
}

static void on_writer_event(evutil_socket_t fd, short what, void *arg);

/* Wait for the socket to be ready for flags (EV_READ, EV_WRITE). */
static void writer_wait_for(struct pgw *w, short flags)
{
	int fd = PQsocket(w->conn);
	if (w->ev) {
		event_del(w->ev);
		if (fd == w->fd)
			event_assign(w->ev, w->s->base, fd, flags, on_writer_event, w);
		else {
			event_free(w->ev);
			w->ev = NULL;
		}
	}
	w->fd = fd;
	if (!w->ev)
		w->ev = event_new(w->s->base, fd, flags, on_writer_event, w);
	if (w->ev)
		event_add(w->ev, NULL);
}

/* Wait for an answer (and for room to send when libpq has data left to send). */
static void writer_wait(struct pgw *w, bool want_write)
{
	writer_wait_for(w, (short)(EV_READ | (want_write ? EV_WRITE : 0)));
}

/* Send the queued writes as one transaction in one round trip. */
static void writer_kick(struct pgw *w)
{
	struct pg_store *s = w->s;
	if (w->state != W_IDLE || !w->q_head)
		return;
	struct op *head = w->q_head, *tail = head;
	size_t n = 1;
	while (tail->next && n < PG_MAX_BATCH) {
		tail = tail->next;
		n++;
	}
	w->q_head = tail->next;
	if (!w->q_head)
		w->q_tail = NULL;
	tail->next = NULL;
	w->q_len -= n;
	s->stats.queued -= n;
	w->batch = head;
	w->batch_len = n;
	w->cur = 0;
	w->n_prep = 0;
	w->batch_error = false;
	w->commit_ok = false;
	w->batch_reason[0] = '\0';
	w->state = W_BUSY;
	w->batch_start_us = (int64_t)clock_now_us();
	bool ok = true;
	if (!w->prepared) {
		/*
		 * Parsed and planned once per connection, in the first batch's round trip
		 * (after dropping what an earlier, failed attempt may have left).
		 */
		ok = PQsendQueryParams(w->conn, "DEALLOCATE ALL", 0, NULL, NULL, NULL, NULL, 0);
		for (int k = 0; ok && k < N_STATEMENTS; k++)
			ok = PQsendPrepare(w->conn, statement_names[k], statement_sql[k], 0, NULL);
		w->n_prep = N_STATEMENTS + 1;
		w->prep_ok = 0;
	}
	w->first = w->n_prep;
	/*
	 * A statement that failed (a missing grant, say) skipped the rest of its batch, its
	 * COMMIT too, and the Sync ends only an implicit transaction: the server still holds
	 * that one, aborted, and would refuse every later batch on this connection.
	 */
	if (ok && w->in_failed_tx) {
		ok = PQsendQueryParams(w->conn, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
		w->first++;
	}
	ok = ok && PQsendQueryParams(w->conn, "BEGIN", 0, NULL, NULL, NULL, NULL, 0);
	for (struct op *op = head; ok && op; op = op->next)
		ok = PQsendQueryPrepared(w->conn, statement_names[op->kind], op->n,
					 (const char *const *)op->values, op->lengths, op->formats,
					 0);
	ok = ok && PQsendQueryParams(w->conn, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
	ok = ok && PQpipelineSync(w->conn);
	if (!ok) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		writer_lost(w, why);
		return;
	}
	int f = PQflush(w->conn);
	if (f < 0) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		writer_lost(w, why);
		return;
	}
	struct timeval tv = {.tv_sec = PG_BATCH_TIMEOUT_MS / 1000};
	evtimer_add(w->batch_timer, &tv);
	writer_wait(w, f == 1);
}

static void on_batch_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct pgw *w = arg;
	if (w->state == W_BUSY)
		writer_lost(w, "no answer from the database in 15 s");
	else if (w->state == W_CONNECTING)
		/* libpq's connect_timeout does not apply to PQconnectPoll(): this is it. */
		writer_lost(w, "the database accepted the connection but did not complete it "
			       "within connect_timeout");
}

/* The connection's connect_timeout in seconds (3 unless the URL says), at least 2. */
static unsigned connect_timeout_s(PGconn *c)
{
	unsigned t = 3;
	PQconninfoOption *opts = PQconninfo(c);
	for (PQconninfoOption *o = opts; o && o->keyword; o++)
		if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && atoi(o->val) > 0)
			t = (unsigned)atoi(o->val);
	PQconninfoFree(opts);
	return t < 2 ? 2 : t;
}

/* The answer of one row write: done, or why not. */
static void op_result(struct pg_store *s, struct op *op, PGresult *res)
{
	if (PQntuples(res) != 1 || PQnfields(res) < 4) {
		op->err = -EIO;
		snprintf(op->reason, sizeof(op->reason), "unexpected answer from the database");
		return;
	}
	bool done = strcmp(PQgetvalue(res, 0, 0), "1") == 0;
	bool exists = strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	const char *owner = PQgetvalue(res, 0, 2);
	if (strcmp(PQgetvalue(res, 0, 3), "t") == 0)
		s->stats.lease_takeovers++;
	if (done) {
		op->err = 0;
	} else if (op->kind == OP_INSERT) {
		op->err = -EEXIST;
		snprintf(op->reason, sizeof(op->reason), "the store already holds %s",
			 op->dev_eui);
	} else if (!exists) {
		op->err = -ENOENT;
		snprintf(op->reason, sizeof(op->reason), "the store does not hold %s", op->dev_eui);
	} else {
		op->err = -EALREADY;
		s->stats.claims_refused++;
		if (owner[0] && strcmp(owner, s->instance) != 0)
			snprintf(op->reason, sizeof(op->reason),
				 "tpad %s is importing %s right now (its claim is live)", owner,
				 op->dev_eui);
		else
			snprintf(op->reason, sizeof(op->reason),
				 "another tpad recorded an attempt for %s since it was read",
				 op->dev_eui);
	}
}

/* The answer of a read: the record, -ENOENT, or why it cannot be read. */
static void get_result(struct pg_store *s, struct op *op, PGresult *res)
{
	if (PQntuples(res) == 0) {
		op->err = -ENOENT;
		snprintf(op->reason, sizeof(op->reason), "the store does not hold %s", op->dev_eui);
		return;
	}
	op->rec = malloc(sizeof(*op->rec));
	op->err = op->rec ? row_to_record(s, res, 0, op->rec) : -ENOMEM;
	if (op->err)
		snprintf(op->reason, sizeof(op->reason), "cannot read the row of %s: %s",
			 op->dev_eui, strerror(-op->err));
}

static void latency_note(struct pg_store *s, int64_t us)
{
	static const int64_t limits_ms[7] = {1, 2, 5, 10, 20, 50, 100};
	unsigned b = 0;
	while (b < 7 && us > limits_ms[b] * 1000)
		b++;
	s->stats.latency_buckets[b]++;
	s->stats.latency_sum_us += (uint64_t)us;
}

/* Read what has arrived; complete the batch at its sync. */
static void writer_read(struct pgw *w)
{
	struct pg_store *s = w->s;
	if (!PQconsumeInput(w->conn)) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		writer_lost(w, why);
		return;
	}
	while (w->state == W_BUSY && !PQisBusy(w->conn)) {
		PGresult *res = PQgetResult(w->conn);
		if (!res) {
			w->cur++;
			continue;
		}
		ExecStatusType st = PQresultStatus(res);
		if (st == PGRES_PIPELINE_SYNC) {
			PQclear(res);
			evtimer_del(w->batch_timer);
			struct op *batch = w->batch;
			size_t n = w->batch_len;
			w->batch = NULL;
			w->batch_len = 0;
			w->state = W_IDLE;
			w->backoff_ms = PG_BACKOFF_MIN_MS;
			if (w->n_prep && w->prep_ok == N_STATEMENTS)
				w->prepared = true;
			w->in_failed_tx = !w->commit_ok;
			bool reader = w->idx == s->n_writers;
			if (!w->batch_error && w->commit_ok) {
				if (!reader) {
					s->stats.commits++;
					latency_note(s, (int64_t)clock_now_us() - w->batch_start_us);
				}
				if (!reader && n > s->stats.max_batch)
					s->stats.max_batch = n;
				for (struct op *op = batch; op; op = op->next) {
					if (op_is_read(op->kind))
						continue;
					if (op->err)
						s->stats.ops_rejected++;
					else
						s->stats.ops++;
				}
				complete(s, batch, 0, NULL);
			} else if (reader) {
				log_warnx("store: %zu reads failed: %s", n, w->batch_reason);
				char reason[300];
				snprintf(reason, sizeof(reason),
					 "the database refused the read: %.*s",
					 (int)utf8_prefix(w->batch_reason, 200), w->batch_reason);
				complete(s, batch, -EIO, reason);
			} else {
				s->stats.batch_failures++;
				s->stats.ops_failed += n;
				s->stats.last_error = -EIO;
				snprintf(s->stats.last_reason, sizeof(s->stats.last_reason), "%s",
					 w->batch_reason);
				log_warnx("store: a transaction of %zu writes was rolled back: %s", n,
					  w->batch_reason);
				char reason[300];
				snprintf(reason, sizeof(reason),
					 "the database refused the transaction: %.*s",
					 (int)utf8_prefix(w->batch_reason, 200), w->batch_reason);
				complete(s, batch, -EIO, reason);
			}
			writer_kick(w);
			if (w->state == W_IDLE)
				writer_wait(w, false);
			return;
		}
		if (st == PGRES_FATAL_ERROR) {
			if (!w->batch_error)
				store_url_pq_reason(w->conn, res, w->batch_reason,
						    sizeof(w->batch_reason));
			w->batch_error = true;
		} else if (st == PGRES_PIPELINE_ABORTED) {
			w->batch_error = true;
		} else if (w->cur < w->first) {
			if (w->cur > 0 && w->cur < w->n_prep && st == PGRES_COMMAND_OK)
				w->prep_ok++;
		} else if (w->cur == w->first + w->batch_len + 1) {
			w->commit_ok = st == PGRES_COMMAND_OK;
		} else if (w->cur > w->first && w->cur <= w->first + w->batch_len &&
			   st == PGRES_TUPLES_OK) {
			struct op *op = w->batch;
			for (size_t i = w->first + 1; i < w->cur; i++)
				op = op->next;
			if (op->kind == OP_INSERT || op->kind == OP_UPDATE)
				op_result(s, op, res);
			else if (op->kind == OP_GET)
				get_result(s, op, res);
			else if (op->kind >= OP_LIST_ALL)
				read_result(s, op, res);
		}
		PQclear(res);
	}
	if (w->state == W_BUSY)
		writer_wait(w, PQflush(w->conn) == 1);
}

/* Drive the connection attempt. */
static void writer_poll_connect(struct pgw *w)
{
	struct pg_store *s = w->s;
	PostgresPollingStatusType ps = PQconnectPoll(w->conn);
	if (ps == PGRES_POLLING_FAILED) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		writer_lost(w, why);
		return;
	}
	if (ps != PGRES_POLLING_OK) {
		writer_wait_for(w, ps == PGRES_POLLING_WRITING ? EV_WRITE : EV_READ);
		return;
	}
	if (PQsetnonblocking(w->conn, 1) != 0 || !PQenterPipelineMode(w->conn)) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		writer_lost(w, why);
		return;
	}
	if (w->was_up)
		s->stats.reconnects++;
	if (w->was_up || s->stats.down)
		log_info("store: connection %u to the database is up", w->idx);
	if (w->was_up)
		guard_check(s);
	w->was_up = true;
	w->prepared = false;
	w->in_failed_tx = false;
	evtimer_del(w->batch_timer); /* the connect deadline */
	w->state = W_IDLE;
	w->backoff_ms = PG_BACKOFF_MIN_MS;
	s->stats.connections++;
	bool all_up = true;
	for (unsigned i = 0; i <= s->n_writers; i++)
		all_up = all_up && (s->w[i].state == W_IDLE || s->w[i].state == W_BUSY);
	if (all_up && !s->fenced) {
		s->stats.down = false;
		s->down_reason[0] = '\0';
	}
	writer_wait(w, false);
	writer_kick(w);
}

static void on_writer_event(evutil_socket_t fd, short what, void *arg)
{
	struct pgw *w = arg;
	if (w->state == W_CONNECTING) {
		writer_poll_connect(w);
		return;
	}
	if (w->state == W_DOWN)
		return;
	if (what & EV_WRITE) {
		if (PQflush(w->conn) < 0) {
			char why[256];
			store_url_pq_reason(w->conn, NULL, why, sizeof(why));
			writer_lost(w, why);
			return;
		}
	}
	if (w->state == W_BUSY) {
		writer_read(w);
		return;
	}
	/* Idle: a notice, or the server closing the connection. */
	if (!PQconsumeInput(w->conn) || PQstatus(w->conn) == CONNECTION_BAD) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		writer_lost(w, why);
		return;
	}
	PGresult *res;
	while (!PQisBusy(w->conn) && (res = PQgetResult(w->conn)))
		PQclear(res);
	writer_wait(w, false);
}

/* The server's notices ("relation already exists, skipping"...) only when verbose. */
static void on_notice(void *arg, const char *message)
{
	log_debug("store: database: %.*s", (int)strcspn(message, "\n"), message);
}

/* Start (again) a connection from the URI, with the password if we have one. */
static PGconn *connect_start(struct pg_store *s, bool blocking)
{
	/*
	 * Defaults first: what the URI says overrides them. A dead peer or network is
	 * noticed within seconds (TCP; a Unix socket reports it at once).
	 */
	const char *keys[] = {"connect_timeout", "application_name", "keepalives_idle",
			      "keepalives_interval", "keepalives_count", "tcp_user_timeout",
			      "dbname", "password", NULL};
	const char *vals[] = {"3", "tpad", "5", "2", "3", "10000", s->url, s->password, NULL};
	PGconn *c = blocking ? PQconnectdbParams(keys, vals, 1) : PQconnectStartParams(keys, vals, 1);
	if (c)
		PQsetNoticeProcessor(c, on_notice, NULL);
	return c;
}

static void writer_connect(struct pgw *w)
{
	struct pg_store *s = w->s;
	if (s->closing)
		return;
	w->conn = connect_start(s, false);
	if (!w->conn || PQstatus(w->conn) == CONNECTION_BAD) {
		char why[256];
		store_url_pq_reason(w->conn, NULL, why, sizeof(why));
		w->state = W_CONNECTING;
		writer_lost(w, why);
		return;
	}
	w->state = W_CONNECTING;
	w->fd = -1;
	struct timeval tv = {.tv_sec = connect_timeout_s(w->conn)};
	evtimer_add(w->batch_timer, &tv);
	writer_poll_connect(w);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
	writer_connect(arg);
}

/* ---- reads ---- */

static bool any_writer_up(struct pg_store *s)
{
	for (unsigned i = 0; i < s->n_writers; i++)
		if (s->w[i].state == W_IDLE || s->w[i].state == W_BUSY)
			return true;
	return false;
}

/*
 * Run sql with the n parameters of values (lengths and formats may be NULL: text) on a
 * blocking connection made for the call (tools, tests and start-up only); *ret is the
 * result (PQclear it) or a negative errno.
 */
static int pg_read(struct pg_store *s, const char *sql, int n, const char *const *values,
		   const int *lengths, const int *formats, PGresult **ret)
{
	if (s->stats.down && !any_writer_up(s))
		return -EIO;
	PGconn *c = s->reader ? s->reader : connect_start(s, true);
	if (!c || PQstatus(c) != CONNECTION_OK) {
		char why[256];
		store_url_pq_reason(c, NULL, why, sizeof(why));
		log_warnx("store: cannot connect for reading: %s", why);
		if (c != s->reader)
			PQfinish(c);
		return -EIO;
	}
	PGresult *res = PQexecParams(c, sql, n, NULL, values, lengths, formats, 0);
	int e = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		char why[256];
		store_url_pq_reason(c, res, why, sizeof(why));
		log_warnx("store: read failed: %s", why);
		PQclear(res);
		e = -EIO;
	} else {
		*ret = res;
	}
	if (c != s->reader)
		PQfinish(c);
	return e;
}

static int col_text(PGresult *res, int row, int col, char *dst, size_t size)
{
	if (PQgetisnull(res, row, col)) {
		dst[0] = '\0';
		return 0;
	}
	const char *t = PQgetvalue(res, row, col);
	size_t n = (size_t)PQgetlength(res, row, col);
	if (n >= size)
		return -EUCLEAN;
	memcpy(dst, t, n);
	dst[n] = '\0';
	return 0;
}

static long long col_int(PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? 0 : strtoll(PQgetvalue(res, row, col), NULL, 10);
}

/* The bytes of a bytea column into buf (size max); their number or a negative errno. */
static ssize_t col_bytes(PGresult *res, int row, int col, uint8_t *buf, size_t max)
{
	if (PQgetisnull(res, row, col))
		return -ENOENT;
	size_t n = 0;
	unsigned char *b = PQunescapeBytea((const unsigned char *)PQgetvalue(res, row, col), &n);
	if (!b)
		return -ENOMEM;
	ssize_t r = n <= max ? (ssize_t)n : -EUCLEAN;
	if (r >= 0)
		memcpy(buf, b, n);
	cred_wipe(b, n);
	PQfreemem(b);
	return r;
}

/* Fill *r from a row of DEVICE_COLUMNS LEASE_COLUMNS. */
static int row_to_record(struct pg_store *s, PGresult *res, int i, struct store_record *r)
{
	char state[16];
	memset(r, 0, sizeof(*r));
	int e = col_text(res, i, 0, r->dev_eui, sizeof(r->dev_eui));
	e = e ? e : col_text(res, i, 1, r->join_eui, sizeof(r->join_eui));
	e = e ? e : col_text(res, i, 2, r->profile_id, sizeof(r->profile_id));
	e = e ? e : col_text(res, i, 3, r->serial, sizeof(r->serial));
	e = e ? e : col_text(res, i, 4, r->tkm_info, sizeof(r->tkm_info));
	e = e ? e : col_text(res, i, 7, state, sizeof(state));
	e = e ? e : col_text(res, i, 8, r->owner_token, sizeof(r->owner_token));
	e = e ? e : col_text(res, i, 9, r->ref, sizeof(r->ref));
	e = e ? e : col_text(res, i, 10, r->last_error, sizeof(r->last_error));
	e = e ? e : col_text(res, i, 11, r->origin, sizeof(r->origin));
	e = e ? e : col_text(res, i, 18, r->instance, sizeof(r->instance));
	e = e ? e : col_text(res, i, 19, r->lease_owner, sizeof(r->lease_owner));
	if (!e && (!hex_valid(r->dev_eui, HEX_EUI) || store_state_parse(state, &r->state) < 0))
		e = -EUCLEAN;
	if (e)
		return e;
	r->app_key_generated = strcmp(PQgetvalue(res, i, 6), "t") == 0;
	r->uid = (uint32_t)col_int(res, i, 12);
	r->pid = (int32_t)col_int(res, i, 13);
	r->created_at = col_int(res, i, 14);
	r->updated_at = col_int(res, i, 15);
	r->attempts = (uint32_t)col_int(res, i, 16);
	r->maybe_at = col_int(res, i, 17);
	r->lease_left_ms = col_int(res, i, 20);
	if (!PQgetisnull(res, i, 5)) {
		uint8_t sealed[PG_SEALED_LEN + 1];
		ssize_t n = col_bytes(res, i, 5, sealed, sizeof(sealed));
		if (n != PG_SEALED_LEN)
			return n < 0 ? (int)n : -EUCLEAN;
		e = seal_decrypt(s->seal, (const uint8_t *)r->dev_eui, HEX_EUI, sealed, (size_t)n,
				 r->app_key, sizeof(r->app_key));
		cred_wipe(sealed, sizeof(sealed));
		if (e < 0)
			return e;
		r->has_app_key = true;
	} else {
		r->app_key_generated = false;
	}
	return 0;
}

/* Parse the answer of a read other than OP_GET into op->rows (or op->err, op->reason). */
static void read_result(struct pg_store *s, struct op *op, PGresult *res)
{
	int e = 0;
	int rows = PQntuples(res);
	for (int i = 0; e == 0 && i < rows; i++) {
		switch (op->kind) {
		case OP_LIST_ALL:
		case OP_LIST_STATE: {
			struct store_record r;
			e = row_to_record(s, res, i, &r);
			e = e ? e : store_rows_add_record(&op->rows, &op->cap, &r);
			cred_wipe(&r, sizeof(r));
			break;
		}
		case OP_COUNT: {
			enum store_state st;
			if (store_state_parse(PQgetvalue(res, i, 0), &st) == 0)
				op->rows.counts[st] = (uint64_t)col_int(res, i, 1);
			break;
		}
		case OP_AUDIT_ALL:
		case OP_AUDIT_DEV: {
			struct store_audit_entry a;
			memset(&a, 0, sizeof(a));
			a.id = col_int(res, i, 0);
			e = col_text(res, i, 1, a.dev_eui, sizeof(a.dev_eui));
			e = e ? e : col_text(res, i, 2, a.method, sizeof(a.method));
			e = e ? e : col_text(res, i, 6, a.outcome, sizeof(a.outcome));
			a.uid = (uint32_t)col_int(res, i, 3);
			a.pid = (int32_t)col_int(res, i, 4);
			a.at = col_int(res, i, 5);
			e = e ? e : store_rows_add_audit(&op->rows, &op->cap, &a);
			break;
		}
		case OP_ATTEMPTS: {
			struct store_attempt a = {.n = (uint32_t)col_int(res, i, 0),
						  .at = col_int(res, i, 1)};
			e = col_text(res, i, 2, a.instance, sizeof(a.instance));
			e = e ? e : col_text(res, i, 3, a.digest, sizeof(a.digest));
			e = e ? e : col_text(res, i, 4, a.outcome, sizeof(a.outcome));
			e = e ? e : store_rows_add_attempt(&op->rows, &op->cap, &a);
			break;
		}
		case OP_KEY_FIND: {
			uint8_t app[16];
			e = key_unseal(s, res, i, app, op->rows.hsm_key);
			if (e == 0 && memcmp(app, op->key, 16) != 0)
				e = -EBADMSG;
			cred_wipe(app, sizeof(app));
			break;
		}
		default:
			e = -EINVAL;
		}
	}
	if (e == 0 && op->kind == OP_KEY_FIND && rows == 0)
		e = -ENOENT;
	op->err = e;
	if (e)
		snprintf(op->reason, sizeof(op->reason), "%s",
			 e == -ENOENT ? "no such pooled key"
				      : e == -EUCLEAN ? "a row of the database cannot be read"
						      : strerror(-e));
}

/* A new read of kind; NULL when out of memory. */
static struct op *read_op(enum op_kind kind, const char *dev_eui)
{
	struct op *op = calloc(1, sizeof(*op));
	if (op) {
		op->kind = kind;
		if (dev_eui)
			hex_upper(op->dev_eui, dev_eui, HEX_EUI);
	}
	return op;
}

/* Run the read op on a blocking connection and parse its answer; 0 or a negative errno. */
static int read_sync(struct pg_store *s, struct op *op)
{
	PGresult *res;
	int e = pg_read(s, statement_sql[op->kind], op->n, (const char *const *)op->values,
			op->lengths, op->formats, &res);
	if (e)
		return e;
	if (op->kind == OP_GET)
		get_result(s, op, res);
	else
		read_result(s, op, res);
	PQclear(res);
	return op->err;
}

/* Queue the read op, answered through cb. */
static int read_async(struct pg_store *s, struct op *op, store_rows_fn *cb, void *arg)
{
	op->rows_cb = cb;
	op->arg = arg;
	return submit(s, op);
}

/* The read of dev_eui's row. */
static int op_get_build(struct pg_store *s, const char *dev_eui, struct op **ret)
{
	if (!dev_eui || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct op *op = read_op(OP_GET, dev_eui);
	int e = op ? op_text(op, 0, s->instance) : -ENOMEM;
	e = e ? e : op_text(op, 1, op->dev_eui);
	if (e) {
		op_free(op);
		return e;
	}
	*ret = op;
	return 0;
}

int pg_store_get(struct pg_store *s, const char *dev_eui, struct store_record *ret)
{
	struct op *op;
	int e = s && ret ? op_get_build(s, dev_eui, &op) : -EINVAL;
	if (e)
		return e;
	e = read_sync(s, op);
	if (e == 0)
		*ret = *op->rec;
	op_free(op);
	return e;
}

int pg_store_get_async(struct pg_store *s, const char *dev_eui, store_get_fn *cb, void *arg)
{
	struct op *op;
	int e = s && cb ? op_get_build(s, dev_eui, &op) : -EINVAL;
	if (e)
		return e;
	op->get_cb = cb;
	op->arg = arg;
	return submit(s, op);
}

/* The read of up to limit rows in state (-1: any) after DevEUI after. */
static int op_list_build(struct pg_store *s, int state, const char *after, size_t limit,
			 struct op **ret)
{
	if (state < -1 || state >= STORE_N_STATES ||
	    (after && *after && !store_fits(after, HEX_EUI + 1)))
		return -EINVAL;
	struct op *op = read_op(state < 0 ? OP_LIST_ALL : OP_LIST_STATE, NULL);
	if (!op)
		return -ENOMEM;
	char from[HEX_EUI + 1] = "";
	if (after)
		hex_upper(from, after, strlen(after));
	int e = op_text(op, 0, s->instance);
	e = e ? e : op_text(op, 1, from);
	e = e ? e : op_int(op, 2, limit ? (long long)limit : (long long)INT64_MAX);
	if (!e && state >= 0)
		e = op_text(op, 3, store_state_name((enum store_state)state));
	if (e) {
		op_free(op);
		return e;
	}
	*ret = op;
	return 0;
}

int pg_store_list(struct pg_store *s, int state, const char *after, size_t limit,
		  int (*fn)(const struct store_record *r, void *arg), void *arg)
{
	struct op *op;
	int e = s && fn ? op_list_build(s, state, after, limit, &op) : -EINVAL;
	if (e)
		return e;
	e = read_sync(s, op);
	for (size_t i = 0; e == 0 && i < op->rows.n; i++)
		e = fn(&op->rows.records[i], arg);
	op_free(op);
	return e;
}

int pg_store_list_async(struct pg_store *s, int state, const char *after, size_t limit,
			store_rows_fn *cb, void *arg)
{
	struct op *op;
	int e = s && cb ? op_list_build(s, state, after, limit, &op) : -EINVAL;
	return e ? e : read_async(s, op, cb, arg);
}

/* The read of dev_eui's attempts. */
static int op_attempts_build(const char *dev_eui, struct op **ret)
{
	if (!dev_eui || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct op *op = read_op(OP_ATTEMPTS, dev_eui);
	int e = op ? op_text(op, 0, op->dev_eui) : -ENOMEM;
	if (e) {
		op_free(op);
		return e;
	}
	*ret = op;
	return 0;
}

int pg_store_attempt_list(struct pg_store *s, const char *dev_eui,
			  int (*fn)(const struct store_attempt *a, void *arg), void *arg)
{
	struct op *op;
	int e = s && fn ? op_attempts_build(dev_eui, &op) : -EINVAL;
	if (e)
		return e;
	e = read_sync(s, op);
	for (size_t i = 0; e == 0 && i < op->rows.n; i++)
		e = fn(&op->rows.attempts[i], arg);
	op_free(op);
	return e;
}

int pg_store_attempt_list_async(struct pg_store *s, const char *dev_eui, store_rows_fn *cb,
				void *arg)
{
	struct op *op;
	int e = s && cb ? op_attempts_build(dev_eui, &op) : -EINVAL;
	return e ? e : read_async(s, op, cb, arg);
}

int pg_store_count(struct pg_store *s, uint64_t counts[STORE_N_STATES])
{
	if (!s || !counts)
		return -EINVAL;
	struct op *op = read_op(OP_COUNT, NULL);
	if (!op)
		return -ENOMEM;
	int e = read_sync(s, op);
	if (e == 0)
		memcpy(counts, op->rows.counts, sizeof(op->rows.counts));
	op_free(op);
	return e;
}

int pg_store_count_async(struct pg_store *s, store_rows_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	struct op *op = read_op(OP_COUNT, NULL);
	return op ? read_async(s, op, cb, arg) : -ENOMEM;
}

/* The read of up to limit audit entries of dev_eui (NULL: all) after after_id. */
static int op_audit_build(const char *dev_eui, int64_t after_id, size_t limit, struct op **ret)
{
	if (dev_eui && !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct op *op = read_op(dev_eui ? OP_AUDIT_DEV : OP_AUDIT_ALL, dev_eui);
	if (!op)
		return -ENOMEM;
	int e = op_int(op, 0, after_id);
	e = e ? e : op_int(op, 1, limit ? (long long)limit : (long long)INT64_MAX);
	if (!e && dev_eui)
		e = op_text(op, 2, op->dev_eui);
	if (e) {
		op_free(op);
		return e;
	}
	*ret = op;
	return 0;
}

int pg_store_audit_list(struct pg_store *s, const char *dev_eui, int64_t after_id, size_t limit,
			int (*fn)(const struct store_audit_entry *e, void *arg), void *arg)
{
	struct op *op;
	int e = s && fn ? op_audit_build(dev_eui, after_id, limit, &op) : -EINVAL;
	if (e)
		return e;
	e = read_sync(s, op);
	for (size_t i = 0; e == 0 && i < op->rows.n; i++)
		e = fn(&op->rows.audit[i], arg);
	op_free(op);
	return e;
}

int pg_store_audit_list_async(struct pg_store *s, const char *dev_eui, int64_t after_id,
			      size_t limit, store_rows_fn *cb, void *arg)
{
	struct op *op;
	int e = s && cb ? op_audit_build(dev_eui, after_id, limit, &op) : -EINVAL;
	return e ? e : read_async(s, op, cb, arg);
}

int pg_store_label_get(struct pg_store *s, const char *dev_eui, struct store_label *ret)
{
	if (!s || !ret || !dev_eui || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	char key[HEX_EUI + 1];
	hex_upper(key, dev_eui, HEX_EUI);
	const char *v[] = {key};
	PGresult *res;
	int e = pg_read(s, "SELECT text, ec, matrix, image_opts, image FROM labels WHERE dev_eui = $1",
			1, v, NULL, NULL, &res);
	if (e)
		return e;
	if (PQntuples(res) == 0) {
		PQclear(res);
		return -ENOENT;
	}
	memset(ret, 0, sizeof(*ret));
	e = col_text(res, 0, 0, ret->text, sizeof(ret->text));
	ret->ec = (int)col_int(res, 0, 1);
	if (!e) {
		ssize_t n = col_bytes(res, 0, 2, ret->matrix, sizeof(ret->matrix));
		e = n < 0 ? (int)n : 0;
		ret->matrix_len = n > 0 ? (size_t)n : 0;
	}
	e = e ? e : col_text(res, 0, 3, ret->image_opts, sizeof(ret->image_opts));
	if (!e && !PQgetisnull(res, 0, 4)) {
		ssize_t n = col_bytes(res, 0, 4, ret->image, sizeof(ret->image));
		e = n < 0 ? (int)n : 0;
		ret->image_len = n > 0 ? (size_t)n : 0;
	}
	PQclear(res);
	return e;
}

#define KEY_POOL_SEALED_LEN (32 + SEAL_OVERHEAD)

int pg_store_key_pool_put(struct pg_store *s, const uint8_t app_key[16], const uint8_t hsm_key[16])
{
	if (!s || !app_key || !hsm_key)
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_KEY_PUT;
	uint8_t d[32], pair[32], sealed[KEY_POOL_SEALED_LEN];
	store_key_digest(app_key, d);
	memcpy(pair, app_key, 16);
	memcpy(pair + 16, hsm_key, 16);
	/* The digest is the AAD: a sealed pair cannot be moved to another row. */
	int e = seal_encrypt(s->seal, d, sizeof(d), pair, sizeof(pair), sealed, sizeof(sealed));
	cred_wipe(pair, sizeof(pair));
	/* The loader of a pool made here is this tpad: it holds the pairs it puts. */
	e = e < 0 ? e : op_bin(op, 0, d, sizeof(d));
	e = e ? e : op_bin(op, 1, sealed, sizeof(sealed));
	e = e ? e : op_int(op, 2, clock_wall_ms());
	e = e ? e : op_text(op, 3, s->instance);
	if (e) {
		op_free(op);
		return e < 0 ? e : -EIO;
	}
	return submit(s, op);
}

int pg_store_key_pool_taken(struct pg_store *s, const uint8_t app_key[16], const char *dev_eui)
{
	if (!s || !app_key || !dev_eui || strlen(dev_eui) >= sizeof(((struct op *)0)->dev_eui))
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_KEY_TAKEN;
	/* On the writer of the device's row, ahead of it. */
	snprintf(op->dev_eui, sizeof(op->dev_eui), "%s", dev_eui);
	uint8_t d[32];
	store_key_digest(app_key, d);
	int e = op_bin(op, 0, d, sizeof(d));
	if (e) {
		op_free(op);
		return e;
	}
	return submit(s, op);
}

/* Open the sealed pair of row i (digest, sealed) into app_key and hsm_key. */
static int key_unseal(struct pg_store *s, PGresult *res, int i, uint8_t app_key[16],
		      uint8_t hsm_key[16])
{
	uint8_t d[33], blob[KEY_POOL_SEALED_LEN + 1], pair[32];
	ssize_t dn = col_bytes(res, i, 0, d, sizeof(d));
	ssize_t bn = col_bytes(res, i, 1, blob, sizeof(blob));
	if (dn != 32 || bn != KEY_POOL_SEALED_LEN)
		return -EBADMSG;
	int e = seal_decrypt(s->seal, d, 32, blob, (size_t)bn, pair, sizeof(pair));
	if (e >= 0) {
		memcpy(app_key, pair, 16);
		memcpy(hsm_key, pair + 16, 16);
	}
	cred_wipe(pair, sizeof(pair));
	return e < 0 ? -EBADMSG : 0;
}

int pg_store_key_pool_load(struct pg_store *s, size_t max,
			   int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg),
			   void *arg)
{
	if (!s || !fn)
		return -EINVAL;
	char lim[32];
	snprintf(lim, sizeof(lim), "%zu", max);
	const char *v[] = {s->instance, lim};
	PGresult *res;
	/* Reserve for this tpad pairs nobody handed out or reserved (or this tpad did). */
	int e = pg_read(s,
			"UPDATE app_key_pool SET reserved_by = $1 WHERE digest IN (SELECT digest "
			"FROM app_key_pool WHERE NOT handed AND (reserved_by IS NULL OR "
			"reserved_by = $1) ORDER BY created_at LIMIT $2::bigint FOR UPDATE SKIP "
			"LOCKED) RETURNING digest, sealed, created_at",
			2, v, NULL, NULL, &res);
	if (e)
		return e;
	int r = 0;
	for (int i = 0; !r && i < PQntuples(res); i++) {
		uint8_t app[16], hsm[16];
		if (key_unseal(s, res, i, app, hsm) < 0)
			continue; /* not ours to hand out: skip it */
		r = fn(app, hsm, arg);
		cred_wipe(app, sizeof(app));
		cred_wipe(hsm, sizeof(hsm));
	}
	PQclear(res);
	return r;
}

/* The read of the pooled pair of app_key. */
static int op_key_find_build(const uint8_t app_key[16], struct op **ret)
{
	if (!app_key)
		return -EINVAL;
	struct op *op = read_op(OP_KEY_FIND, NULL);
	if (!op)
		return -ENOMEM;
	uint8_t d[32];
	store_key_digest(app_key, d);
	memcpy(op->key, app_key, 16);
	int e = op_bin(op, 0, d, sizeof(d));
	if (e) {
		op_free(op);
		return e;
	}
	*ret = op;
	return 0;
}

int pg_store_key_pool_find(struct pg_store *s, const uint8_t app_key[16], uint8_t ret_hsm[16])
{
	struct op *op;
	int e = s && ret_hsm ? op_key_find_build(app_key, &op) : -EINVAL;
	if (e)
		return e;
	e = read_sync(s, op);
	if (e == 0)
		memcpy(ret_hsm, op->rows.hsm_key, 16);
	op_free(op);
	return e;
}

int pg_store_key_pool_find_async(struct pg_store *s, const uint8_t app_key[16],
				 store_rows_fn *cb, void *arg)
{
	struct op *op;
	int e = s && cb ? op_key_find_build(app_key, &op) : -EINVAL;
	return e ? e : read_async(s, op, cb, arg);
}

/* ---- writes ---- */

static int write_row(struct pg_store *s, const struct store_record *r, bool insert,
		     const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	if (!s || !r || !cb)
		return -EINVAL;
	struct op *op;
	int e = op_from_record(s, r, insert, a, &op);
	if (e)
		return e;
	op->cb = cb;
	op->arg = arg;
	return submit(s, op);
}

int pg_store_write_attempt(struct pg_store *s, const struct store_record *r, bool insert,
			   const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	return write_row(s, r, insert, a, cb, arg);
}

int pg_store_claim_renew(struct pg_store *s, const char *dev_eui)
{
	if (!s || !dev_eui || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_RENEW;
	hex_upper(op->dev_eui, dev_eui, HEX_EUI);
	int e = op_text(op, 0, op->dev_eui);
	e = e ? e : op_text(op, 1, s->instance);
	e = e ? e : op_int(op, 2, s->lease_ms);
	if (e) {
		op_free(op);
		return e;
	}
	s->stats.lease_renewals++;
	return submit(s, op);
}

int pg_store_audit(struct pg_store *s, const char *dev_eui, const char *method, uint32_t uid,
		   int32_t pid, const char *outcome)
{
	if (!s || !dev_eui || !method || !outcome || strlen(method) >= 64 ||
	    strlen(outcome) >= STORE_AUDIT_OUTCOME_MAX)
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_AUDIT;
	snprintf(op->dev_eui, sizeof(op->dev_eui), "%s", dev_eui);
	int e = op_text(op, 0, dev_eui);
	e = e ? e : op_text(op, 1, method);
	e = e ? e : op_int(op, 2, uid);
	e = e ? e : op_int(op, 3, pid);
	e = e ? e : op_int(op, 4, clock_wall_ms());
	e = e ? e : op_text(op, 5, outcome);
	e = e ? e : op_text(op, 6, s->instance);
	if (e) {
		op_free(op);
		return e;
	}
	return submit(s, op);
}

int pg_store_label_put(struct pg_store *s, const char *dev_eui, const struct store_label *l)
{
	if (!s || !l || !dev_eui || !hex_valid(dev_eui, HEX_EUI) ||
	    !store_fits(l->text, sizeof(l->text)) || l->matrix_len > sizeof(l->matrix) ||
	    l->image_len > sizeof(l->image) || !store_fits(l->image_opts, sizeof(l->image_opts)))
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_LABEL;
	hex_upper(op->dev_eui, dev_eui, HEX_EUI);
	int e = op_text(op, 0, op->dev_eui);
	e = e ? e : op_text(op, 1, l->text);
	e = e ? e : op_int(op, 2, l->ec);
	e = e ? e : op_bin(op, 3, l->matrix, l->matrix_len);
	e = e ? e : op_text(op, 4, or_null(l->image_opts));
	e = e ? e : (l->image_len ? op_bin(op, 5, l->image, l->image_len) : op_text(op, 5, NULL));
	if (e) {
		op_free(op);
		return e;
	}
	return submit(s, op);
}

/* ---- open, close, status ---- */

/* Run sql on the blocking connection c; 0 or -EIO with the reason in err. */
static int exec_sync(PGconn *c, const char *sql, int n, const char *const *v, PGresult **ret,
		     char *err, size_t errlen)
{
	return store_url_exec(c, sql, n, v, NULL, NULL, ret, err, errlen);
}

/* Why the first connection failed, with what fixes a missing or refused password. */
static void connect_failed(const struct pg_store *s, PGconn *c, char *err, size_t errlen)
{
	char why[300];
	store_url_pq_reason(c, NULL, why, sizeof(why));
	store_set_err(err, errlen, "cannot connect to the database: %s%s", why, auth_hint(s, why));
}

/* What lets a role that may not create or alter the tables go on. */
static const char *owner_hint(const char *why)
{
	if (!strstr(why, "permission denied") && !strstr(why, "must be owner"))
		return "";
	return "; this role may not create or alter the tables: start tpad once with the "
	       "role that owns the database (it creates and upgrades them), then the lines "
	       "with theirs (README.md, \"Roles and grants\")";
}

/*
 * The rights README.md's "Roles and grants" gives a line's role, checked at start: a role
 * without them would start, then fail every write (a token issued, its audit entry not).
 */
static int check_grants(PGconn *c, char *err, size_t errlen)
{
	static const char sql[] =
	    "SELECT quote_ident(current_user), (SELECT string_agg(p || ' on ' || ts, '; ' ORDER BY "
	    "k) FROM "
	    "(SELECT p, k, string_agg(t, ', ' ORDER BY n) AS ts FROM "
	    "unnest(ARRAY['devices', 'attempts', 'labels', 'audit', 'meta', 'app_key_pool']) "
	    "WITH ORDINALITY AS tb(t, n), "
	    "unnest(ARRAY['SELECT', 'INSERT', 'UPDATE']) WITH ORDINALITY AS pr(p, k) "
	    "WHERE NOT has_table_privilege(t, p) GROUP BY p, k) m), "
	    "has_sequence_privilege('audit_id_seq', 'USAGE')";
	char why[256];
	PGresult *res = NULL;
	int e = exec_sync(c, sql, 0, NULL, &res, why, sizeof(why));
	if (e) {
		store_set_err(err, errlen, "cannot read the role's rights: %s", why);
		return e;
	}
	const char *role = PQgetvalue(res, 0, 0), *tables = PQgetvalue(res, 0, 1);
	bool seq = strcmp(PQgetvalue(res, 0, 2), "t") == 0;
	if (!*tables && seq) {
		PQclear(res);
		return 0;
	}
	store_set_err(
	    err, errlen,
	    "the role %s lacks %s%s%s: as the tables' owner, GRANT SELECT, INSERT, UPDATE "
	    "ON devices, attempts, labels, audit, meta, app_key_pool TO %s; GRANT USAGE ON "
	    "SEQUENCE audit_id_seq TO %s",
	    role, tables, *tables && !seq ? "; " : "", seq ? "" : "USAGE on audit_id_seq", role,
	    role);
	PQclear(res);
	return -EACCES;
}

/*
 * Create or upgrade the schema and check the key, in one transaction under an advisory
 * lock, so that tpads starting together do it once.
 */
static int pg_prepare(struct pg_store *s, PGconn *c, char *err, size_t errlen)
{
	char why[256] = "";
	PGresult *res = NULL;
	int e = exec_sync(c, "BEGIN", 0, NULL, NULL, why, sizeof(why));
	e = e ? e : exec_sync(c, "SELECT pg_advisory_xact_lock(7474616400)", 0, NULL, NULL, why,
			      sizeof(why));
	/*
	 * Tables are created only when missing: PostgreSQL checks the CREATE privilege on the
	 * schema even for CREATE TABLE IF NOT EXISTS of a table that is there, and a line's
	 * role may have only the grants README.md lists.
	 */
	e = e ? e : exec_sync(c, "SELECT to_regclass('app_key_pool') IS NULL, "
				 "to_regclass('meta') IS NULL",
			      0, NULL, &res, why, sizeof(why));
	bool no_pool = !e && strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	bool no_meta = !e && strcmp(PQgetvalue(res, 0, 1), "t") == 0;
	PQclear(res);
	res = NULL;
	if (no_pool)
		e = e ? e : exec_sync(c, sql_key_pool_table, 0, NULL, NULL, why, sizeof(why));
	if (no_meta)
		e = e ? e : exec_sync(c, "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
					 "value BYTEA NOT NULL)",
				      0, NULL, NULL, why, sizeof(why));
	e = e ? e : exec_sync(c, "SELECT convert_from(value, 'UTF8')::int FROM meta "
				 "WHERE key = 'schema_version'",
			      0, NULL, &res, why, sizeof(why));
	if (e) {
		store_set_err(err, errlen, "cannot prepare the schema: %s%s", why, owner_hint(why));
		return e;
	}
	int version = PQntuples(res) ? atoi(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	if (version > PG_SCHEMA_VERSION) {
		store_set_err(err, errlen,
			"the database has store schema version %d, newer than this tpad's %d: "
			"upgrade tpad",
			version, PG_SCHEMA_VERSION);
		return -ENOTSUP;
	}
	for (int v = version; v < PG_SCHEMA_VERSION; v++) {
		PGresult *r = PQexec(c, pg_migrations[v]);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			store_url_pq_reason(c, r, why, sizeof(why));
			PQclear(r);
			store_set_err(err, errlen, "cannot upgrade the schema to version %d: %s%s",
				      v + 1, why, owner_hint(why));
			return -EIO;
		}
		PQclear(r);
	}
	if (version < PG_SCHEMA_VERSION) {
		char vs[16];
		snprintf(vs, sizeof(vs), "%d", PG_SCHEMA_VERSION);
		const char *p[] = {vs};
		e = exec_sync(c,
			      "INSERT INTO meta (key, value) VALUES ('schema_version', "
			      "convert_to($1, 'UTF8')) ON CONFLICT (key) DO UPDATE SET value = "
			      "EXCLUDED.value",
			      1, p, NULL, why, sizeof(why));
		if (e) {
			store_set_err(err, errlen, "cannot record the schema version: %s", why);
			return e;
		}
		if (version)
			log_notice("store: schema upgraded from version %d to %d", version,
				   PG_SCHEMA_VERSION);
	}
	/* The key check: 16 zero bytes sealed with the store key. */
	e = exec_sync(c, "SELECT value FROM meta WHERE key = 'key_check'", 0, NULL, &res, why,
		      sizeof(why));
	if (e) {
		store_set_err(err, errlen, "cannot read the key check: %s", why);
		return e;
	}
	static const uint8_t zero[PG_KEY_CHECK_LEN];
	if (PQntuples(res)) {
		uint8_t blob[PG_KEY_CHECK_LEN + SEAL_OVERHEAD + 1], plain[PG_KEY_CHECK_LEN];
		ssize_t n = col_bytes(res, 0, 0, blob, sizeof(blob));
		PQclear(res);
		int d = n == (ssize_t)(PG_KEY_CHECK_LEN + SEAL_OVERHEAD)
			    ? seal_decrypt(s->seal, (const uint8_t *)key_check_aad,
					   sizeof(key_check_aad) - 1, blob, (size_t)n, plain,
					   sizeof(plain))
			    : -EBADMSG;
		if (d < 0 || memcmp(plain, zero, sizeof(zero)) != 0) {
			store_set_err(err, errlen,
				"the store key does not match the key this store was created with");
			return -EBADMSG;
		}
	} else {
		PQclear(res);
		uint8_t blob[PG_KEY_CHECK_LEN + SEAL_OVERHEAD];
		e = seal_encrypt(s->seal, (const uint8_t *)key_check_aad, sizeof(key_check_aad) - 1,
				 zero, sizeof(zero), blob, sizeof(blob));
		if (e < 0) {
			store_set_err(err, errlen, "cannot seal the key check value");
			return e;
		}
		const char *p[] = {(const char *)blob};
		int lens[] = {(int)sizeof(blob)}, fmts[] = {1};
		PGresult *r = PQexecParams(c,
					   "INSERT INTO meta (key, value) VALUES ('key_check', $1)", 1,
					   NULL, p, lens, fmts, 0);
		if (PQresultStatus(r) != PGRES_COMMAND_OK) {
			store_url_pq_reason(c, r, why, sizeof(why));
			PQclear(r);
			store_set_err(err, errlen, "cannot write the key check: %s", why);
			return -EIO;
		}
		PQclear(r);
	}
	e = exec_sync(c, "COMMIT", 0, NULL, NULL, why, sizeof(why));
	if (e) {
		store_set_err(err, errlen, "cannot commit the schema: %s", why);
		return e;
	}
	return check_grants(c, err, errlen);
}

void pg_store_close(struct pg_store *s)
{
	if (!s)
		return;
	s->closing = true;
	/* Finish the batches in flight and what is queued, blocking: we are shutting down. */
	for (unsigned i = 0; i <= s->n_writers; i++) {
		struct pgw *w = &s->w[i];
		while (w->state == W_BUSY || (w->state == W_IDLE && w->q_head)) {
			if (w->state == W_IDLE)
				writer_kick(w);
			if (w->state != W_BUSY)
				break;
			PQsetnonblocking(w->conn, 0);
			while (PQflush(w->conn) == 1)
				;
			/* poll(), not select(): the socket may be above FD_SETSIZE. */
			struct pollfd pfd = {.fd = PQsocket(w->conn), .events = POLLIN};
			int n;
			do
				n = poll(&pfd, 1, 10000);
			while (n < 0 && errno == EINTR);
			if (n <= 0) {
				writer_lost(w, "no answer from the database at shutdown");
				break;
			}
			writer_read(w);
		}
		/* Also when down: audit entries kept for the next connection are freed here
		 * (w->s is NULL for a writer that open() did not reach). */
		if (w->s)
			writer_lost(w, "closing");
		if (w->timer)
			event_free(w->timer);
		if (w->batch_timer)
			event_free(w->batch_timer);
	}
	on_fail_ev(-1, 0, s);
	if (s->fail_ev)
		event_free(s->fail_ev);
	PQfinish(s->reader);
	PQfinish(s->guard); /* the instance's lock goes with its session */
	seal_free(s->seal);
	if (s->password) {
		cred_wipe(s->password, strlen(s->password));
		free(s->password);
	}
	free(s->url);
	free(s);
}

int pg_store_open(struct event_base *base, const struct store_options *o, struct pg_store **ret,
		  char *err, size_t errlen)
{
	if (!base || !o || !o->url || !o->key || o->key_len != STORE_KEY_LEN) {
		store_set_err(err, errlen, "invalid options");
		return -EINVAL;
	}
	struct pg_store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	s->url = strdup(o->url);
	s->password = o->password ? strdup(o->password) : NULL;
	snprintf(s->instance, sizeof(s->instance), "%s", o->instance ? o->instance : "tpad");
	s->lease_ms = o->lease_ms ? o->lease_ms : 30000;
	s->max_queue = o->max_queue ? o->max_queue : PG_DEFAULT_MAX_QUEUE;
	unsigned conns = o->connections ? o->connections : 2;
	s->n_writers = conns > 1 ? conns - 1 : 1;
	if (s->n_writers > PG_MAX_WRITERS)
		s->n_writers = PG_MAX_WRITERS;
	s->fail_ev = event_new(base, -1, 0, on_fail_ev, s);
	int e = s->url && (!o->password || s->password) && s->fail_ev ? 0 : -ENOMEM;
	e = e ? e : seal_new(o->key, o->key_len, &s->seal);
	if (e) {
		store_set_err(err, errlen, "cannot set up the store: %s", strerror(-e));
		pg_store_close(s);
		return e;
	}
	/* A password in store.url works, but whoever reads tpad.conf reads it too. */
	if (store_url_has_password(s->url))
		log_warnx(
		    "store.url holds a password%s: move it to a file of mode 0600 given as "
		    "store.password-file or LoadCredential=store-password, and take it out of "
		    "store.url",
		    s->password ? " and the credential store-password is given too (tpad "
				  "uses the credential's)"
				: "");
	/* Schema and key first, blocking: tpad does not serve before its store is ready. */
	s->reader = connect_start(s, true);
	if (!s->reader || PQstatus(s->reader) != CONNECTION_OK) {
		connect_failed(s, s->reader, err, errlen);
		pg_store_close(s);
		return -EIO;
	}
	e = pg_prepare(s, s->reader, err, errlen);
	if (e) {
		pg_store_close(s);
		return e;
	}
	char why[512];
	e = guard_take(s, why, sizeof(why));
	if (e) {
		store_set_err(err, errlen, "%s", why);
		pg_store_close(s);
		return e;
	}
	snprintf(s->host, sizeof(s->host), "%s", PQhost(s->reader) ? PQhost(s->reader) : "");
	snprintf(s->db, sizeof(s->db), "%s", PQdb(s->reader) ? PQdb(s->reader) : "");
	/* The writers, then the reader: made the same way. */
	for (unsigned i = 0; i <= s->n_writers; i++) {
		struct pgw *w = &s->w[i];
		w->s = s;
		w->idx = i;
		w->fd = -1;
		w->backoff_ms = PG_BACKOFF_MIN_MS;
		w->timer = evtimer_new(base, on_reconnect_timer, w);
		w->batch_timer = evtimer_new(base, on_batch_timeout, w);
		if (!w->timer || !w->batch_timer) {
			pg_store_close(s);
			return -ENOMEM;
		}
		/* The first connection blocks: tpad does not serve before its store is up. */
		w->conn = connect_start(s, true);
		if (!w->conn || PQstatus(w->conn) != CONNECTION_OK) {
			connect_failed(s, w->conn, err, errlen);
			pg_store_close(s);
			return -EIO;
		}
		w->state = W_CONNECTING;
		writer_poll_connect(w);
		if (w->state != W_IDLE) {
			store_set_err(err, errlen, "cannot set up the database connection: %s",
				s->down_reason);
			pg_store_close(s);
			return -EIO;
		}
	}
	/* Synchronous reads (tools, start-up) make their own connection from now on. */
	PQfinish(s->reader);
	s->reader = NULL;
	*ret = s;
	return 0;
}

void pg_store_stats(struct pg_store *s, struct store_stats *ret)
{
	if (!s || !ret)
		return;
	*ret = s->stats;
	if (s->stats.down)
		snprintf(ret->last_reason, sizeof(ret->last_reason), "%s", s->down_reason);
}

json_t *pg_store_status_json(struct pg_store *s)
{
	if (!s)
		return NULL;
	struct store_stats st = s->stats;
	json_t *lat = json_array();
	for (unsigned i = 0; i < 8; i++)
		json_array_append_new(lat, json_integer((json_int_t)st.latency_buckets[i]));
	/* The URI may carry a password: only the host part is shown. */
	const char *host = s->host;
	double mean = st.commits ? (double)st.ops / (double)st.commits : 0.0;
	json_t *o = json_object();
	if (!o)
		return NULL;
	json_object_set_new(o, "backend", json_string("postgresql"));
	/* What tpactl status shows as the store: where it is, never the password. */
	char where[512];
	snprintf(where, sizeof(where), "postgresql %s/%s as %s", host,
		 s->db, s->instance);
	json_object_set_new(o, "path", json_string(where));
	json_object_set_new(o, "host", json_string(host));
	json_object_set_new(o, "instance", json_string(s->instance));
	json_object_set_new(o, "up", json_boolean(!st.down));
	json_object_set_new(o, "downReason", st.down ? json_string(s->down_reason) : json_null());
	json_object_set_new(o, "connections", json_integer(st.connections));
	json_object_set_new(o, "writers", json_integer(s->n_writers));
	json_object_set_new(o, "commits", json_integer((json_int_t)st.commits));
	json_object_set_new(o, "ops", json_integer((json_int_t)st.ops));
	json_object_set_new(o, "meanOpsPerCommit", json_real(mean));
	json_object_set_new(o, "maxBatch", json_integer((json_int_t)st.max_batch));
	json_object_set_new(o, "queued", json_integer((json_int_t)st.queued));
	json_object_set_new(o, "rejectedOps", json_integer((json_int_t)st.ops_rejected));
	json_object_set_new(o, "failedCommits", json_integer((json_int_t)st.batch_failures));
	json_object_set_new(o, "failedOps", json_integer((json_int_t)st.ops_failed));
	json_object_set_new(o, "leaseTakeovers", json_integer((json_int_t)st.lease_takeovers));
	json_object_set_new(o, "leaseRenewals", json_integer((json_int_t)st.lease_renewals));
	json_object_set_new(o, "claimsRefused", json_integer((json_int_t)st.claims_refused));
	json_object_set_new(o, "reconnects", json_integer((json_int_t)st.reconnects));
	json_object_set_new(o, "commitLatencyBucketsMs", lat);
	json_object_set_new(o, "meanCommitMs",
			    json_real(st.commits ? (double)st.latency_sum_us / 1000.0 /
						       (double)st.commits
						 : 0.0));
	json_object_set_new(o, "lastError",
			    st.last_error ? json_string(st.last_reason) : json_null());
	return o;
}
