/* store_sqlite: the SQLite backend of the device store, with a group-commit writer thread. */
#include "store.h"
#include "thread.h"
#include "store_backend.h"
#include "clock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <mbedtls/sha256.h>
#include <sqlite3.h>

#include "cred.h"
#include "sqlerr.h"
#include "sqlwriter.h"
#include "hex.h"
#include "lockfile.h"
#include "log.h"
#include "seal.h"
#include "sqlkey.h"
#include "sqlbackup.h"
#include "text.h"

#define STORE_SCHEMA_VERSION 3
#define STORE_MAX_BATCH 1024 /* writes in one transaction at most */
#define STORE_DEFAULT_MAX_QUEUE 16384
#define STORE_WRITE_BUSY_MS 5000
#define STORE_READ_BUSY_MS 1000
#define STORE_SEALED_LEN (16 + SEAL_OVERHEAD)

/* What the key check value seals: 16 zero bytes bound to this text. */
static const char key_check_aad[] = "tpad store key check v1";

/*
 * Ordered schema migrations: entry i moves a store from user_version i to i + 1.
 * The audit table has no foreign key to devices on purpose: the audit trail outlives
 * and is independent of the rows it talks about.
 */
static const char *const store_migrations[STORE_SCHEMA_VERSION] = {
    "CREATE TABLE devices ("
    " dev_eui TEXT PRIMARY KEY NOT NULL CHECK (length(dev_eui) = 16),"
    " join_eui TEXT NOT NULL CHECK (length(join_eui) = 16),"
    " profile_id TEXT NOT NULL CHECK (length(profile_id) = 8),"
    " serial TEXT,"
    " tkm_info TEXT,"
    " app_key_sealed BLOB,"
    " app_key_generated INTEGER NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL CHECK (state IN ('PENDING', 'ISSUED', 'FAILED')),"
    " owner_token TEXT,"
    " ref TEXT,"
    " last_error TEXT,"
    " origin TEXT NOT NULL CHECK (origin IN ('activate', 'import')),"
    " uid INTEGER,"
    " pid INTEGER,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL"
    ") WITHOUT ROWID;"
    "CREATE INDEX devices_state ON devices (state, dev_eui);"
    "CREATE TABLE audit ("
    " id INTEGER PRIMARY KEY,"
    " dev_eui TEXT NOT NULL,"
    " method TEXT NOT NULL,"
    " uid INTEGER,"
    " pid INTEGER,"
    " at INTEGER NOT NULL,"
    " outcome TEXT NOT NULL"
    ");"
    "CREATE INDEX audit_dev_eui ON audit (dev_eui, id);"
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);",
    /* v2: each issued device's encoded QR code, so labels are drawn without encoding. */
    "CREATE TABLE labels ("
    " dev_eui TEXT PRIMARY KEY NOT NULL CHECK (length(dev_eui) = 16),"
    " text TEXT NOT NULL,"
    " ec INTEGER NOT NULL,"
    " matrix BLOB NOT NULL,"
    " image_opts TEXT,"
    " image BLOB"
    ") WITHOUT ROWID;",
    /*
     * v3: the exactly-once rules. States FOREIGN and RETIRED; per device the attempts
     * recorded and the time of the last one that may have reached the cloud; every import
     * attempt in its own table; the instance that wrote a row or an audit entry. A
     * PENDING row of an older tpad may have had its import sent: it gets one attempt
     * whose outcome is unknown, at the row's last update.
     */
    "CREATE TABLE devices_v3 ("
    " dev_eui TEXT PRIMARY KEY NOT NULL CHECK (length(dev_eui) = 16),"
    " join_eui TEXT NOT NULL CHECK (length(join_eui) = 16),"
    " profile_id TEXT NOT NULL CHECK (length(profile_id) = 8),"
    " serial TEXT,"
    " tkm_info TEXT,"
    " app_key_sealed BLOB,"
    " app_key_generated INTEGER NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL"
    "  CHECK (state IN ('PENDING', 'ISSUED', 'FAILED', 'FOREIGN', 'RETIRED')),"
    " owner_token TEXT,"
    " ref TEXT,"
    " last_error TEXT,"
    " origin TEXT NOT NULL CHECK (origin IN ('activate', 'import')),"
    " uid INTEGER,"
    " pid INTEGER,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " maybe_at INTEGER NOT NULL DEFAULT 0,"
    " instance TEXT"
    ") WITHOUT ROWID;"
    "INSERT INTO devices_v3 SELECT dev_eui, join_eui, profile_id, serial, tkm_info,"
    " app_key_sealed, app_key_generated, state, owner_token, ref, last_error, origin, uid,"
    " pid, created_at, updated_at, state = 'PENDING',"
    " CASE WHEN state = 'PENDING' THEN updated_at ELSE 0 END, NULL FROM devices;"
    "DROP TABLE devices;"
    "ALTER TABLE devices_v3 RENAME TO devices;"
    "CREATE INDEX devices_state ON devices (state, dev_eui);"
    "CREATE TABLE attempts ("
    " dev_eui TEXT NOT NULL CHECK (length(dev_eui) = 16),"
    " n INTEGER NOT NULL CHECK (n > 0),"
    " at INTEGER NOT NULL,"
    " instance TEXT,"
    " digest TEXT NOT NULL,"
    " outcome TEXT NOT NULL,"
    " PRIMARY KEY (dev_eui, n)"
    ") WITHOUT ROWID;"
    "INSERT INTO attempts SELECT dev_eui, 1, updated_at, NULL, '', 'sending' FROM devices"
    " WHERE state = 'PENDING';"
    "ALTER TABLE audit ADD COLUMN instance TEXT;",
};

#define DEVICE_COLUMNS                                                                             \
	"dev_eui, join_eui, profile_id, serial, tkm_info, app_key_sealed, app_key_generated, "     \
	"state, owner_token, ref, last_error, origin, uid, pid, created_at, updated_at, "          \
	"attempts, maybe_at, instance"

static const char sql_insert[] = "INSERT INTO devices (" DEVICE_COLUMNS ") VALUES "
				 "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, "
				 "?15, ?16, ?17, ?18, ?19)";
static const char sql_update[] = "UPDATE devices SET join_eui = ?2, profile_id = ?3, "
				 "serial = ?4, tkm_info = ?5, app_key_sealed = ?6, "
				 "app_key_generated = ?7, state = ?8, owner_token = ?9, ref = ?10, "
				 "last_error = ?11, origin = ?12, uid = ?13, pid = ?14, "
				 "updated_at = ?16, attempts = ?17, maybe_at = ?18, instance = ?19 "
				 "WHERE dev_eui = ?1";
static const char sql_audit[] = "INSERT INTO audit (dev_eui, method, uid, pid, at, outcome, "
				"instance) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/* An attempt's row; a later outcome of it keeps the instance that made it. */
static const char sql_attempt[] =
    "INSERT INTO attempts (dev_eui, n, at, instance, digest, outcome) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (dev_eui, n) DO UPDATE "
    "SET at = excluded.at, digest = excluded.digest, "
    "outcome = excluded.outcome";
static const char sql_get[] = "SELECT " DEVICE_COLUMNS " FROM devices WHERE dev_eui = ?1";
static const char sql_label_put[] = "INSERT OR REPLACE INTO labels "
				    "(dev_eui, text, ec, matrix, image_opts, image) "
				    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
static const char sql_label_get[] = "SELECT text, ec, matrix, image_opts, image FROM labels "
				    "WHERE dev_eui = ?1";

/*
 * The cloud-HSM AppKey pool: one row per key pair, sealed (AppKey || hsmEncryptedAppKey),
 * found by a digest of the AppKey. Additive and ignored by tpads that do not know it, so
 * it is created on open rather than by a schema version.
 */
#define KEY_POOL_SEALED_LEN (32 + SEAL_OVERHEAD)
static const char sql_key_pool_table[] =
    "CREATE TABLE IF NOT EXISTS app_key_pool ("
    " digest BLOB PRIMARY KEY NOT NULL CHECK (length(digest) = 32),"
    " sealed BLOB NOT NULL,"
    " handed INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL"
    ") WITHOUT ROWID";
static const char sql_key_put[] = "INSERT OR IGNORE INTO app_key_pool (digest, sealed, handed, "
				  "created_at) VALUES (?1, ?2, 0, ?3)";
static const char sql_key_taken[] = "UPDATE app_key_pool SET handed = 1 WHERE digest = ?1";
static const char sql_key_load[] = "SELECT digest, sealed FROM app_key_pool WHERE handed = 0 "
				   "ORDER BY created_at LIMIT ?1";
static const char sql_key_find[] = "SELECT sealed FROM app_key_pool WHERE digest = ?1";

enum op_kind {
	OP_INSERT,
	OP_UPDATE,
	OP_AUDIT,
	OP_LABEL,
	OP_KEY_PUT,
	OP_KEY_TAKEN,
};

/* One queued write; rows carry the AppKey sealed, never in clear. */
struct op {
	struct op *next;
	enum op_kind kind;
	store_done_fn *cb;
	void *arg;
	int err;
	char reason[256];

	char dev_eui[17];
	char join_eui[17];
	char profile_id[9];
	char serial[65];
	char tkm_info[21];
	uint8_t sealed[STORE_SEALED_LEN];
	bool has_sealed;
	bool generated;
	enum store_state state;
	char owner_token[129];
	char ref[129];
	char last_error[256];
	char origin[16];
	uint32_t uid;
	int32_t pid;
	int64_t created_at;
	int64_t updated_at;
	uint32_t attempts;
	int64_t maybe_at;
	char instance[65];

	struct store_attempt att; /* written with the row when has_att */
	bool has_att;

	char method[64];
	char outcome[STORE_AUDIT_OUTCOME_MAX];

	struct store_label *label; /* OP_LABEL: owned */

	uint8_t kdigest[32];			/* OP_KEY_PUT, OP_KEY_TAKEN */
	uint8_t ksealed[KEY_POOL_SEALED_LEN]; /* OP_KEY_PUT */
};

/* Free one write and what it owns. */
static void op_free(struct op *op)
{
	if (!op)
		return;
	free(op->label);
	free(op);
}

/* A read-only connection, its statements and a seal of its own: one per thread. */
struct sqlite_reader {
	sqlite3 *db;
	sqlite3_stmt *get_stmt;
	sqlite3_stmt *lget_stmt;
	sqlite3_stmt *kload_stmt, *kfind_stmt;
	struct seal *seal; /* the loop's is the store's own (s->seal) */
};

struct sqlite_store {
	char *path;
	bool copy; /* a copy to restore (--restore-store), not the store itself */
	char instance[65];
	int lock_fd; /* flock()ed while open: one tpad per store */
	struct event_base *base;
	struct event *done_ev;
	int efd;
	struct seal *seal; /* loop thread only */
	uint32_t commit_delay_ms;
	size_t max_queue;

	struct sqlite_reader rd;  /* the loop thread's: the label cache, start-up, tests */
	struct sqlite_reader trd; /* the reader thread's: every asynchronous read */

	pthread_t reader;
	bool reader_started;
	pthread_cond_t rcond;
	/* Under lock (the writer's): reads to run, reads done (the writer's eventfd tells the
	 * loop), the reader's stop. */
	struct sqlite_read *r_head, *r_tail;
	size_t r_len; /* reads queued or being read */
	struct sqlite_read *rd_head, *rd_tail;
	bool r_closing;

	sqlite3 *wdb; /* writer thread once started */
	sqlite3_stmt *ins_stmt, *upd_stmt, *aud_stmt, *lab_stmt, *att_stmt, *kput_stmt, *ktak_stmt;
	uint32_t default_max_pages;

	pthread_t writer;
	bool writer_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;

	/* Under lock. */
	struct op *q_head, *q_tail;
	size_t q_len;
	struct op *d_head, *d_tail;
	bool closing;
	uint32_t test_max_pages;
	bool test_pages_changed;
	struct store_stats stats;
};

/* Build a row write from a record: validate, upper-case, seal the AppKey. */
static int op_from_record(struct sqlite_store *s, const struct store_record *r, enum op_kind kind,
			  struct op **ret)
{
	if (store_record_check(r) < 0)
		return -EINVAL;

	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = kind;
	hex_upper(op->dev_eui, r->dev_eui, HEX_EUI);
	hex_upper(op->join_eui, r->join_eui, HEX_EUI);
	hex_upper(op->profile_id, r->profile_id, HEX_PROFILE);
	hex_upper(op->tkm_info, r->tkm_info, strlen(r->tkm_info));
	text_copy(op->serial, sizeof(op->serial), r->serial);
	text_copy(op->owner_token, sizeof(op->owner_token), r->owner_token);
	text_copy(op->ref, sizeof(op->ref), r->ref);
	text_copy(op->last_error, sizeof(op->last_error), r->last_error);
	text_copy(op->origin, sizeof(op->origin), r->origin);
	op->state = r->state;
	op->generated = r->has_app_key && r->app_key_generated;
	op->uid = r->uid;
	op->pid = r->pid;
	op->attempts = r->attempts;
	op->maybe_at = r->maybe_at;
	text_copy(op->instance, sizeof(op->instance), s->instance);
	int64_t now = clock_wall_ms();
	op->created_at = r->created_at > 0 ? r->created_at : now;
	op->updated_at =
	    kind == OP_INSERT && r->created_at > 0 && r->updated_at > 0 ? r->updated_at : now;
	if (r->has_app_key) {
		int e = seal_encrypt(s->seal, (const uint8_t *)op->dev_eui, HEX_EUI, r->app_key,
				     sizeof(r->app_key), op->sealed, sizeof(op->sealed));
		if (e < 0) {
			op_free(op);
			return e;
		}
		op->has_sealed = true;
	}
	*ret = op;
	return 0;
}

/* Queue op for the writer, or free it and say why not. */
static int store_submit(struct sqlite_store *s, struct op *op)
{
	pthread_mutex_lock(&s->lock);
	if (s->closing) {
		pthread_mutex_unlock(&s->lock);
		op_free(op);
		return -ESHUTDOWN;
	}
	if (s->q_len >= s->max_queue) {
		pthread_mutex_unlock(&s->lock);
		op_free(op);
		return -EAGAIN;
	}
	if (s->q_tail)
		s->q_tail->next = op;
	else
		s->q_head = op;
	s->q_tail = op;
	s->q_len++;
	pthread_cond_signal(&s->cond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Queue a record write of kind (insert or update), with an attempt if a, and its callback. */
static int store_write(struct sqlite_store *s, const struct store_record *r, enum op_kind kind,
		       const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	if (!s || !r || !cb)
		return -EINVAL;
	if (a && store_attempt_check(a) < 0)
		return -EINVAL;
	struct op *op;
	int e = op_from_record(s, r, kind, &op);
	if (e < 0)
		return e;
	if (a) {
		op->att = *a;
		text_copy(op->att.instance, sizeof(op->att.instance), s->instance);
		op->has_att = true;
	}
	op->cb = cb;
	op->arg = arg;
	return store_submit(s, op);
}

int sqlite_store_write_attempt(struct sqlite_store *s, const struct store_record *r, bool insert,
			const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	return store_write(s, r, insert ? OP_INSERT : OP_UPDATE, a, cb, arg);
}

int sqlite_store_audit(struct sqlite_store *s, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		const char *outcome)
{
	if (!s || !hex_valid(dev_eui, HEX_EUI) || !method || !*method || !outcome)
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	if (!store_fits(method, sizeof(op->method)) || !store_fits(outcome, sizeof(op->outcome))) {
		op_free(op);
		return -EINVAL;
	}
	op->kind = OP_AUDIT;
	hex_upper(op->dev_eui, dev_eui, HEX_EUI);
	text_copy(op->method, sizeof(op->method), method);
	text_copy(op->outcome, sizeof(op->outcome), outcome);
	op->uid = uid;
	op->pid = pid;
	op->created_at = clock_wall_ms();
	text_copy(op->instance, sizeof(op->instance), s->instance);
	return store_submit(s, op);
}

int sqlite_store_label_put(struct sqlite_store *s, const char *dev_eui, const struct store_label *l)
{
	if (!s || !hex_valid(dev_eui, HEX_EUI) || !l || !l->text[0] ||
	    !memchr(l->text, '\0', sizeof(l->text)) || !l->matrix_len ||
	    l->matrix_len > sizeof(l->matrix) || l->image_len > sizeof(l->image) ||
	    !memchr(l->image_opts, '\0', sizeof(l->image_opts)))
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_LABEL;
	hex_upper(op->dev_eui, dev_eui, HEX_EUI);
	op->label = malloc(sizeof(*l));
	if (!op->label) {
		op_free(op);
		return -ENOMEM;
	}
	*op->label = *l;
	return store_submit(s, op);
}

int sqlite_reader_label_get(struct sqlite_reader *rd, const char *dev_eui, struct store_label *ret)
{
	if (!rd || !ret || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	char eui[17];
	hex_upper(eui, dev_eui, HEX_EUI);
	sqlite3_stmt *st = rd->lget_stmt;
	int rc = sqlite3_bind_text(st, 1, eui, -1, SQLITE_TRANSIENT);
	int r = -ENOENT;
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		const char *t = (const char *)sqlite3_column_text(st, 0);
		const void *m = sqlite3_column_blob(st, 2);
		const char *io = (const char *)sqlite3_column_text(st, 3);
		const void *img = sqlite3_column_blob(st, 4);
		size_t tl = t ? strlen(t) : 0, ml = (size_t)sqlite3_column_bytes(st, 2);
		size_t iol = io ? strlen(io) : 0,
		       il = img ? (size_t)sqlite3_column_bytes(st, 4) : 0;
		if (!t || !m || tl >= sizeof(ret->text) || ml > sizeof(ret->matrix) ||
		    iol >= sizeof(ret->image_opts) || il > sizeof(ret->image)) {
			r = -EBADMSG;
		} else {
			memcpy(ret->text, t, tl + 1);
			ret->ec = sqlite3_column_int(st, 1);
			memcpy(ret->matrix, m, ml);
			ret->matrix_len = ml;
			memcpy(ret->image_opts, io ? io : "", iol + 1);
			if (il)
				memcpy(ret->image, img, il);
			ret->image_len = il;
			r = 0;
		}
	} else if (rc != SQLITE_DONE) {
		r = sql_errno(rd->db, rc);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int sqlite_store_key_pool_put(struct sqlite_store *s, const uint8_t app_key[16], const uint8_t hsm_key[16])
{
	if (!s || !app_key || !hsm_key)
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	uint8_t pair[32];
	memcpy(pair, app_key, 16);
	memcpy(pair + 16, hsm_key, 16);
	op->kind = OP_KEY_PUT;
	store_key_digest(app_key, op->kdigest);
	op->created_at = clock_wall_ms();
	/* The digest is the AAD: a sealed pair cannot be moved to another row. */
	int e = seal_encrypt(s->seal, op->kdigest, sizeof(op->kdigest), pair, sizeof(pair),
			     op->ksealed, sizeof(op->ksealed));
	cred_wipe(pair, sizeof(pair));
	if (e < 0) {
		op_free(op);
		return e;
	}
	return store_submit(s, op);
}

int sqlite_store_key_pool_taken(struct sqlite_store *s, const uint8_t app_key[16],
				const char *dev_eui)
{
	(void)dev_eui; /* one writer: every write is in queue order */
	if (!s || !app_key)
		return -EINVAL;
	struct op *op = calloc(1, sizeof(*op));
	if (!op)
		return -ENOMEM;
	op->kind = OP_KEY_TAKEN;
	store_key_digest(app_key, op->kdigest);
	return store_submit(s, op);
}

/* Open one sealed pair of the row with digest d into app_key and hsm_key. */
static int key_unseal(struct sqlite_reader *rd, const void *d, int dlen, const void *blob,
		      int blen, uint8_t app_key[16], uint8_t hsm_key[16])
{
	uint8_t pair[32];
	if (!d || dlen != 32 || !blob || blen != KEY_POOL_SEALED_LEN)
		return -EBADMSG;
	int e = seal_decrypt(rd->seal, d, 32, blob, (size_t)blen, pair, sizeof(pair));
	if (e >= 0) {
		memcpy(app_key, pair, 16);
		memcpy(hsm_key, pair + 16, 16);
		e = 0;
	}
	cred_wipe(pair, sizeof(pair));
	return e < 0 ? -EBADMSG : 0;
}

static int reader_key_pool_load(struct sqlite_reader *rd, size_t max,
			int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg),
			void *arg)
{
	if (!rd || !fn)
		return -EINVAL;
	sqlite3_stmt *st = rd->kload_stmt;
	int rc = sqlite3_bind_int64(st, 1, (sqlite3_int64)max);
	int r = 0;
	while (rc == SQLITE_OK || rc == SQLITE_ROW) {
		rc = sqlite3_step(st);
		if (rc != SQLITE_ROW)
			break;
		uint8_t app[16], hsm[16];
		if (key_unseal(rd, sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0),
			       sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1), app,
			       hsm) < 0)
			continue; /* not ours to hand out: skip it */
		r = fn(app, hsm, arg);
		cred_wipe(app, sizeof(app));
		cred_wipe(hsm, sizeof(hsm));
		if (r)
			break;
	}
	if (!r && rc != SQLITE_DONE && rc != SQLITE_ROW)
		r = sql_errno(rd->db, rc);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

int sqlite_reader_key_pool_find(struct sqlite_reader *rd, const uint8_t app_key[16], uint8_t ret_hsm[16])
{
	if (!rd || !app_key || !ret_hsm)
		return -EINVAL;
	uint8_t d[32], app[16];
	store_key_digest(app_key, d);
	sqlite3_stmt *st = rd->kfind_stmt;
	int rc = sqlite3_bind_blob(st, 1, d, sizeof(d), SQLITE_TRANSIENT);
	int r = -ENOENT;
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		r = key_unseal(rd, d, sizeof(d), sqlite3_column_blob(st, 0),
			       sqlite3_column_bytes(st, 0), app, ret_hsm);
	else if (rc != SQLITE_DONE)
		r = sql_errno(rd->db, rc);
	if (r == 0 && memcmp(app, app_key, 16) != 0)
		r = -EBADMSG;
	cred_wipe(app, sizeof(app));
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return r;
}

/* Bind text, or NULL for an empty optional string. */
static int bind_text_or_null(sqlite3_stmt *st, int i, const char *v)
{
	if (!*v)
		return sqlite3_bind_null(st, i);
	return sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

/* Bind the 16 columns of a row write, in DEVICE_COLUMNS order. */
static int bind_row(sqlite3_stmt *st, const struct op *op)
{
	int rc = sqlite3_bind_text(st, 1, op->dev_eui, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, op->join_eui, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 3, op->profile_id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 4, op->serial);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 5, op->tkm_info);
	if (rc == SQLITE_OK)
		rc = op->has_sealed
			 ? sqlite3_bind_blob(st, 6, op->sealed, sizeof(op->sealed), SQLITE_STATIC)
			 : sqlite3_bind_null(st, 6);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 7, op->generated);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 8, store_state_name(op->state), -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 9, op->owner_token);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 10, op->ref);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 11, op->last_error);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 12, op->origin, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 13, op->uid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 14, op->pid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 15, op->created_at);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 16, op->updated_at);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 17, op->attempts);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 18, op->maybe_at);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 19, op->instance);
	return rc;
}

/* Bind the columns of an attempt row. */
static int bind_attempt(sqlite3_stmt *st, const struct op *op)
{
	int rc = sqlite3_bind_text(st, 1, op->dev_eui, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, op->att.n);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, op->att.at);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 4, op->att.instance);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 5, op->att.digest, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 6, op->att.outcome, -1, SQLITE_STATIC);
	return rc;
}

/* Bind the columns of an audit row. */
static int bind_audit(sqlite3_stmt *st, const struct op *op)
{
	int rc = sqlite3_bind_text(st, 1, op->dev_eui, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, op->method, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, op->uid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, op->pid);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 5, op->created_at);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 6, op->outcome, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = bind_text_or_null(st, 7, op->instance);
	return rc;
}

/* Bind the 4 columns of a label write. */
static int bind_label(sqlite3_stmt *st, const struct op *op)
{
	const struct store_label *l = op->label;
	int rc = sqlite3_bind_text(st, 1, op->dev_eui, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, l->text, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int(st, 3, l->ec);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 4, l->matrix, (int)l->matrix_len, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = l->image_len ? sqlite3_bind_text(st, 5, l->image_opts, -1, SQLITE_STATIC)
				  : sqlite3_bind_null(st, 5);
	if (rc == SQLITE_OK)
		rc = l->image_len
			 ? sqlite3_bind_blob(st, 6, l->image, (int)l->image_len, SQLITE_STATIC)
			 : sqlite3_bind_null(st, 6);
	return rc;
}

/* Write a key-pool row, or mark one handed out. */
static int writer_apply_key(struct sqlite_store *s, struct op *op)
{
	sqlite3_stmt *st = op->kind == OP_KEY_PUT ? s->kput_stmt : s->ktak_stmt;
	int rc = sqlite3_bind_blob(st, 1, op->kdigest, sizeof(op->kdigest), SQLITE_STATIC);
	if (rc == SQLITE_OK && op->kind == OP_KEY_PUT)
		rc = sqlite3_bind_blob(st, 2, op->ksealed, sizeof(op->ksealed), SQLITE_STATIC);
	if (rc == SQLITE_OK && op->kind == OP_KEY_PUT)
		rc = sqlite3_bind_int64(st, 3, op->created_at);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	op->err = 0;
	return rc;
}

/*
 * Run one write inside the open transaction. Returns SQLITE_DONE when it applied or was
 * refused on its own (op->err set, the transaction goes on), else the SQLite error that
 * dooms the whole transaction.
 */
static int writer_apply(struct sqlite_store *s, struct op *op)
{
	if (op->kind == OP_KEY_PUT || op->kind == OP_KEY_TAKEN)
		return writer_apply_key(s, op);
	sqlite3_stmt *st = op->kind == OP_INSERT   ? s->ins_stmt
			   : op->kind == OP_UPDATE ? s->upd_stmt
			   : op->kind == OP_AUDIT  ? s->aud_stmt
						   : s->lab_stmt;
	int rc = op->kind == OP_AUDIT	? bind_audit(st, op)
		 : op->kind == OP_LABEL ? bind_label(st, op)
					: bind_row(st, op);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	op->err = 0;
	if (rc == SQLITE_DONE) {
		if (op->kind == OP_UPDATE && sqlite3_changes(s->wdb) == 0) {
			op->err = -ENOENT;
			text_copy(op->reason, sizeof(op->reason), "no such device in the store");
			return SQLITE_DONE;
		}
		if (!op->has_att)
			return SQLITE_DONE;
		/* The attempt goes with its row, in the same transaction. */
		rc = bind_attempt(s->att_stmt, op);
		if (rc == SQLITE_OK)
			rc = sqlite3_step(s->att_stmt);
		sqlite3_reset(s->att_stmt);
		sqlite3_clear_bindings(s->att_stmt);
		if (rc == SQLITE_DONE)
			return SQLITE_DONE;
		/* A row without its attempt must not commit: fail the transaction. */
		return (rc & 0xff) == SQLITE_CONSTRAINT ? SQLITE_ERROR : rc;
	}
	if ((rc & 0xff) == SQLITE_CONSTRAINT) {
		op->err = sql_errno(s->wdb, rc);
		if (op->err == -EEXIST)
			text_copy(op->reason, sizeof(op->reason), "device already in the store");
		else
			snprintf(op->reason, sizeof(op->reason), "record refused: %s",
				 sqlite3_errmsg(s->wdb));
		return SQLITE_DONE;
	}
	return rc;
}

/* Execute SQL without results on the writer connection. */
static int writer_exec(struct sqlite_store *s, const char *sql)
{
	return sqlite3_exec(s->wdb, sql, NULL, NULL, NULL);
}

/*
 * Run n queued writes in one transaction. On a transaction failure everything is rolled
 * back and every write gets the error. Returns 0 or that error; *ret_rejected counts
 * writes refused on their own in a committed transaction.
 */
static int writer_batch(struct sqlite_store *s, struct op *batch, size_t n, char *reason, size_t reasonsz,
			size_t *ret_rejected)
{
	size_t rejected = 0;
	const char *stage = "cannot begin a transaction";
	int rc = writer_exec(s, "BEGIN IMMEDIATE");
	if (rc == SQLITE_OK) {
		stage = "cannot write";
		size_t i = 0;
		for (struct op *op = batch; op && i < n; op = op->next, i++) {
			rc = writer_apply(s, op);
			if (rc != SQLITE_DONE)
				break;
			if (op->err)
				rejected++;
			rc = SQLITE_OK;
		}
	}
	if (rc == SQLITE_OK) {
		stage = "cannot commit";
		rc = writer_exec(s, "COMMIT");
	}
	if (rc == SQLITE_OK) {
		*ret_rejected = rejected;
		return 0;
	}
	int err = sql_errno(s->wdb, rc);
	if (err == 0 || err == -EEXIST)
		err = -EIO;
	snprintf(reason, reasonsz, "%s: %s", stage, sqlite3_errmsg(s->wdb));
	if (!sqlite3_get_autocommit(s->wdb))
		writer_exec(s, "ROLLBACK");
	size_t i = 0;
	for (struct op *op = batch; op && i < n; op = op->next, i++) {
		op->err = err;
		text_copy(op->reason, sizeof(op->reason), reason);
	}
	*ret_rejected = 0;
	return err;
}

/* Tell the loop thread that completions are waiting. */
static void writer_notify(struct sqlite_store *s)
{
	uint64_t one = 1;
	while (write(s->efd, &one, sizeof(one)) < 0 && errno == EINTR)
		;
}

/* The writer thread: take what is queued, commit it as one transaction, hand it back. */
static void *store_writer(void *arg)
{
	struct sqlite_store *s = arg;
	char reason[256];

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->q_head && !s->closing)
			pthread_cond_wait(&s->cond, &s->lock);
		if (!s->q_head)
			break;
		if (s->commit_delay_ms && !s->closing) {
			struct timespec dl;
			clock_gettime(CLOCK_MONOTONIC, &dl);
			dl.tv_sec += s->commit_delay_ms / 1000;
			dl.tv_nsec += (long)(s->commit_delay_ms % 1000) * 1000000L;
			if (dl.tv_nsec >= 1000000000L) {
				dl.tv_sec++;
				dl.tv_nsec -= 1000000000L;
			}
			while (!s->closing && s->q_len < STORE_MAX_BATCH)
				if (pthread_cond_timedwait(&s->cond, &s->lock, &dl) == ETIMEDOUT)
					break;
		}
		struct op *batch = s->q_head, *last = batch;
		size_t n = 1;
		while (n < STORE_MAX_BATCH && last->next) {
			last = last->next;
			n++;
		}
		s->q_head = last->next;
		if (!s->q_head)
			s->q_tail = NULL;
		last->next = NULL;
		s->q_len -= n;
		bool pages_changed = s->test_pages_changed;
		uint32_t pages = s->test_max_pages;
		s->test_pages_changed = false;
		pthread_mutex_unlock(&s->lock);

		if (pages_changed) {
			char sql[64];
			snprintf(sql, sizeof(sql), "PRAGMA max_page_count = %u",
				 pages ? pages : s->default_max_pages);
			writer_exec(s, sql);
		}
		size_t rejected = 0;
		int err = writer_batch(s, batch, n, reason, sizeof(reason), &rejected);

		pthread_mutex_lock(&s->lock);
		if (err == 0) {
			s->stats.commits++;
			s->stats.ops += n - rejected;
			s->stats.ops_rejected += rejected;
			if (n > s->stats.max_batch)
				s->stats.max_batch = n;
		} else {
			s->stats.batch_failures++;
			s->stats.ops_failed += n;
			s->stats.last_error = err;
			text_copy(s->stats.last_reason, sizeof(s->stats.last_reason), reason);
		}
		if (s->d_tail)
			s->d_tail->next = batch;
		else
			s->d_head = batch;
		s->d_tail = last;
		pthread_mutex_unlock(&s->lock);
		writer_notify(s);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Run the callbacks of every completed write, on the loop thread. */
static void store_dispatch(struct sqlite_store *s)
{
	pthread_mutex_lock(&s->lock);
	struct op *list = s->d_head;
	s->d_head = s->d_tail = NULL;
	pthread_mutex_unlock(&s->lock);
	while (list) {
		struct op *op = list;
		list = op->next;
		if (op->cb)
			op->cb(op->err, op->err ? op->reason : "", op->arg);
		op_free(op);
	}
}

static void reads_dispatch(struct sqlite_store *s);

/* libevent callback: the writer or the reader signalled completions. */
static void store_on_done(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;
	while (read(fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	store_dispatch(arg);
	reads_dispatch(arg);
}

/* Free a list of ops. */
static void ops_free(struct op *list)
{
	while (list) {
		struct op *next = list->next;
		op_free(list);
		list = next;
	}
}

/* Close a reader's statements and connection. */
static void reader_close(struct sqlite_reader *rd)
{
	sqlite3_finalize(rd->get_stmt);
	sqlite3_finalize(rd->lget_stmt);
	sqlite3_finalize(rd->kload_stmt);
	sqlite3_finalize(rd->kfind_stmt);
	sqlite3_close(rd->db);
}

void sqlite_store_close(struct sqlite_store *s)
{
	if (!s)
		return;
	/* The reads first: they finish, and their callbacks may still queue writes. */
	pthread_mutex_lock(&s->lock);
	s->r_closing = true;
	pthread_cond_broadcast(&s->rcond);
	pthread_mutex_unlock(&s->lock);
	if (s->reader_started)
		pthread_join(s->reader, NULL);
	reads_dispatch(s);
	pthread_mutex_lock(&s->lock);
	s->closing = true;
	pthread_cond_broadcast(&s->cond);
	pthread_mutex_unlock(&s->lock);
	if (s->writer_started)
		pthread_join(s->writer, NULL);
	store_dispatch(s);
	ops_free(s->q_head);
	if (s->done_ev)
		event_free(s->done_ev);
	if (s->efd >= 0)
		close(s->efd);
	reader_close(&s->rd);
	reader_close(&s->trd);
	seal_free(s->trd.seal);
	sqlite3_finalize(s->ins_stmt);
	sqlite3_finalize(s->upd_stmt);
	sqlite3_finalize(s->aud_stmt);
	sqlite3_finalize(s->lab_stmt);
	sqlite3_finalize(s->att_stmt);
	sqlite3_finalize(s->kput_stmt);
	sqlite3_finalize(s->ktak_stmt);
	sqlite3_close(s->wdb);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	seal_free(s->seal);
	pthread_cond_destroy(&s->cond);
	pthread_cond_destroy(&s->rcond);
	pthread_mutex_destroy(&s->lock);
	free(s->path);
	free(s);
}

/* Say why an SQLite call failed at open, and return its errno. */
static int open_fail(struct sqlite_store *s, sqlite3 *db, int rc, const char *what, char *err,
		     size_t errlen)
{
	int e = sql_errno(db, rc);
	if (e == 0)
		e = -EIO;
	char msg[256];
	store_set_err(err, errlen, "%s: %s: %s", s->path, what,
		      db ? sql_errmsg(db, msg, sizeof(msg)) : "?");
	return e;
}

/* Read one integer from a PRAGMA or query. */
static int query_int(sqlite3 *db, const char *sql, int64_t *ret)
{
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		*ret = sqlite3_column_int64(st, 0);
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}

/* Check the key against the key check value, or record one for a new store. */
static int store_key_check(struct sqlite_store *s, char *err, size_t errlen)
{
	bool written;
	int e = sql_key_check(s->wdb, s->seal, key_check_aad, &written);
	if (e == -EBADMSG)
		store_set_err(err, errlen,
			      "%s: the store key does not match the key this store was created with",
			      s->path);
	else if (e < 0)
		store_set_err(err, errlen, "%s: cannot check the store key: %s", s->path,
			      strerror(-e));
	return e;
}

/* The store's refusal of a newer schema; -ENOTSUP. */
static int store_newer(struct sqlite_store *s, int64_t version, char *err, size_t errlen)
{
	if (s->copy) { /* --restore-store: nothing of the running store is wrong */
		store_set_err(err, errlen,
			      "%s: schema version %lld is newer than this tpad supports (%d): a "
			      "newer tpad made this copy; restore it with that tpad, or restore a "
			      "copy of schema %d or older",
			      s->path, (long long)version, STORE_SCHEMA_VERSION,
			      STORE_SCHEMA_VERSION);
		return -ENOTSUP;
	}
	/* A rollback meets this: say the two ways out (tpad(8), FILES). */
	store_set_err(err, errlen,
		      "%s: schema version %lld is newer than this tpad supports (%d); "
		      "refusing to open it: start the newer tpad again, or restore the copy "
		      "made when it upgraded the store (%s.v%d-TIME.bak)",
		      s->path, (long long)version, STORE_SCHEMA_VERSION, s->path,
		      STORE_SCHEMA_VERSION);
	return -ENOTSUP;
}

/*
 * Before anything of the file changes (its journal mode, a copy, the schema): a store of a
 * newer tpad is refused, and one of an older tpad whose key check the store key fails (a
 * start that cannot succeed copied the whole store aside each time, every RestartSec=
 * under systemd). What else the migration finds wrong is refused inside its transaction.
 */
static int store_precheck(struct sqlite_store *s, char *err, size_t errlen)
{
	int64_t version = 0;
	int rc = query_int(s->wdb, "PRAGMA user_version", &version);
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot read the schema version", err, errlen);
	if (version < 0 || version > STORE_SCHEMA_VERSION)
		return store_newer(s, version, err, errlen);
	if (version == 0 || version == STORE_SCHEMA_VERSION)
		return 0;
	if (sql_key_check(s->wdb, s->seal, key_check_aad, NULL) == -EBADMSG) {
		store_set_err(err, errlen,
			      "%s: the store key does not match the key this store was created "
			      "with; nothing was changed (schema %lld, not migrated)",
			      s->path, (long long)version);
		return -EBADMSG;
	}
	return 0;
}

int sqlite_store_check(const struct store_options *o, char *err, size_t errlen)
{
	if (access(o->path, F_OK) < 0)
		return 0; /* made at the first start */
	struct sqlite_store s = {.path = (char *)o->path, .copy = o->existing};
	int e = seal_new(o->key, o->key_len, &s.seal);
	if (e < 0) {
		store_set_err(err, errlen, "%s: cannot set up AppKey sealing: %s", o->path,
			      strerror(-e));
		return e;
	}
	int rc = sqlite3_open_v2(o->path, &s.wdb, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		e = open_fail(&s, s.wdb, rc, "cannot open for reading", err, errlen);
	} else {
		sqlite3_busy_timeout(s.wdb, STORE_READ_BUSY_MS);
		e = store_precheck(&s, err, errlen);
		int64_t version = 0;
		if (e == 0 && o->existing &&
		    (query_int(s.wdb, "PRAGMA user_version", &version) != SQLITE_OK ||
		     version == 0)) {
			store_set_err(err, errlen,
				      "%s is not a tpad store (an empty database, or another "
				      "program's): give a copy made by tpactl backup",
				      o->path);
			e = -EBADMSG;
		}
		/* What the start checks inside its migration, for a store of this version. */
		if (e == 0 && sql_key_check(s.wdb, s.seal, key_check_aad, NULL) == -EBADMSG) {
			store_set_err(err, errlen,
				      "%s: the store key does not match the key this store was "
				      "created with",
				      o->path);
			e = -EBADMSG;
		}
	}
	sqlite3_close(s.wdb);
	seal_free(s.seal);
	return e;
}

/* Bring the schema to STORE_SCHEMA_VERSION and check the key, in one transaction. */
static int store_migrate(struct sqlite_store *s, char *err, size_t errlen)
{
	/*
	 * A store written by an older tpad is copied aside before its schema changes: the
	 * copy must be taken outside the migration's transaction (SQLite refuses a backup
	 * from a connection inside a write transaction); tpad is the only writer here.
	 */
	int64_t before = 0;
	int rc = query_int(s->wdb, "PRAGMA user_version", &before);
	if (rc == SQLITE_OK && before > 0 && before < STORE_SCHEMA_VERSION) {
		char copy[4096], why[256];
		int b = sql_backup_pre_migration(s->wdb, s->path, (int)before, copy, sizeof(copy),
						   why, sizeof(why));
		if (b < 0) {
			store_set_err(err, errlen,
				"%s: cannot copy the store before migrating it from schema %lld: "
				"%s; nothing was changed",
				s->path, (long long)before, why);
			return b;
		}
		log_notice("%s: copied to %s before migrating schema %lld to %d", s->path, copy,
			   (long long)before, STORE_SCHEMA_VERSION);
	}
	rc = writer_exec(s, "BEGIN IMMEDIATE");
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot begin a transaction", err, errlen);
	int64_t version = 0;
	rc = query_int(s->wdb, "PRAGMA user_version", &version);
	int e = 0;
	if (rc != SQLITE_OK) {
		e = open_fail(s, s->wdb, rc, "cannot read the schema version", err, errlen);
		goto rollback;
	}
	if (version < 0 || version > STORE_SCHEMA_VERSION) {
		e = store_newer(s, version, err, errlen);
		goto rollback;
	}
	for (int64_t v = version; v < STORE_SCHEMA_VERSION; v++) {
		rc = writer_exec(s, store_migrations[v]);
		if (rc != SQLITE_OK) {
			e = open_fail(s, s->wdb, rc, "cannot migrate the schema", err, errlen);
			goto rollback;
		}
	}
	if (version != STORE_SCHEMA_VERSION) {
		char sql[64];
		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
		rc = writer_exec(s, sql);
		if (rc != SQLITE_OK) {
			e = open_fail(s, s->wdb, rc, "cannot set the schema version", err, errlen);
			goto rollback;
		}
	}
	rc = writer_exec(s, sql_key_pool_table);
	if (rc != SQLITE_OK) {
		e = open_fail(s, s->wdb, rc, "cannot create the AppKey pool table", err, errlen);
		goto rollback;
	}
	e = store_key_check(s, err, errlen);
	if (e < 0)
		goto rollback;
	rc = writer_exec(s, "COMMIT");
	if (rc != SQLITE_OK) {
		e = open_fail(s, s->wdb, rc, "cannot commit the schema", err, errlen);
		goto rollback;
	}
	return 0;
rollback:
	if (!sqlite3_get_autocommit(s->wdb))
		writer_exec(s, "ROLLBACK");
	return e;
}

/*
 * Take the store's lock file (path + ".lock") for as long as the store is open: two tpads
 * writing one SQLite store would each think they own its PENDING rows. The file holds the
 * owner's pid, so the refusal can name it.
 */
static int store_lock(struct sqlite_store *s, char *err, size_t errlen)
{
	char why[4200];
	int e = lockfile_take(s->path, "tpad", "SQLite store", &s->lock_fd, why, sizeof(why));
	if (e < 0)
		store_set_err(err, errlen, "%s", why);
	return e;
}

/* Create the file with mode 0600 if missing; tighten the mode of an existing one. */
static int store_create_file(const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0) {
		int e = -errno;
		store_set_err(err, errlen, "%s: cannot open: %s", path, strerror(-e));
		return e;
	}
	struct stat st;
	int e = 0;
	if (fstat(fd, &st) < 0) {
		e = -errno;
		store_set_err(err, errlen, "%s: cannot stat: %s", path, strerror(-e));
	} else if (!S_ISREG(st.st_mode)) {
		e = -EINVAL;
		store_set_err(err, errlen, "%s: not a regular file", path);
	} else if ((st.st_mode & 077) && fchmod(fd, st.st_mode & 0700) < 0) {
		e = -errno;
		store_set_err(err, errlen, "%s: cannot restrict its mode: %s", path, strerror(-e));
	}
	close(fd);
	return e;
}

/* A statement to prepare and where it goes. */
struct prepared {
	const char *sql;
	sqlite3_stmt **stmt;
};

/* Prepare each statement of list on db (persistent): SQLITE_OK or the first error. */
static int prepare_all(sqlite3 *db, const struct prepared *list, size_t n)
{
	int rc = SQLITE_OK;
	for (size_t i = 0; rc == SQLITE_OK && i < n; i++)
		rc = sqlite3_prepare_v3(db, list[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
					list[i].stmt, NULL);
	return rc;
}

/* Open and configure the writer connection: WAL, full sync, schema, key check. */
static int store_open_writer(struct sqlite_store *s, char *err, size_t errlen)
{
	int rc =
	    sqlite3_open_v2(s->path, &s->wdb, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot open", err, errlen);
	sqlite3_extended_result_codes(s->wdb, 1);
	sqlite3_busy_timeout(s->wdb, STORE_WRITE_BUSY_MS);
	int e = store_precheck(s, err, errlen);
	if (e < 0)
		return e;

	sqlite3_stmt *st;
	rc = sqlite3_prepare_v2(s->wdb, "PRAGMA journal_mode = WAL", -1, &st, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(st);
		const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
		bool wal = mode && strcmp((const char *)mode, "wal") == 0;
		sqlite3_finalize(st);
		if (rc == SQLITE_ROW && !wal) {
			store_set_err(err, errlen, "%s: cannot switch to WAL journaling", s->path);
			return -EIO;
		}
		if (rc == SQLITE_ROW)
			rc = SQLITE_OK;
	}
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot set WAL journaling", err, errlen);
	/* journal_size_limit: a WAL grown behind a long reader is cut back once emptied. */
	rc = writer_exec(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
			    " PRAGMA journal_size_limit = " SQLWRITER_WAL_LIMIT);
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot set pragmas", err, errlen);

	e = store_migrate(s, err, errlen);
	if (e < 0)
		return e;

	int64_t pages = 0;
	rc = query_int(s->wdb, "PRAGMA max_page_count", &pages);
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot read max_page_count", err, errlen);
	s->default_max_pages = pages > 0 && pages <= UINT32_MAX ? (uint32_t)pages : 1073741823u;

	const struct prepared w[] = {
	    {sql_insert, &s->ins_stmt},	    {sql_update, &s->upd_stmt},
	    {sql_audit, &s->aud_stmt},	    {sql_label_put, &s->lab_stmt},
	    {sql_attempt, &s->att_stmt},    {sql_key_put, &s->kput_stmt},
	    {sql_key_taken, &s->ktak_stmt},
	};
	rc = prepare_all(s->wdb, w, sizeof(w) / sizeof(w[0]));
	if (rc != SQLITE_OK)
		return open_fail(s, s->wdb, rc, "cannot prepare statements", err, errlen);
	return 0;
}

/* Open a read-only connection and its statements into rd. */
static int open_reader(struct sqlite_store *s, struct sqlite_reader *rd, char *err,
		       size_t errlen)
{
	int rc =
	    sqlite3_open_v2(s->path, &rd->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK)
		return open_fail(s, rd->db, rc, "cannot open for reading", err, errlen);
	sqlite3_extended_result_codes(rd->db, 1);
	sqlite3_busy_timeout(rd->db, STORE_READ_BUSY_MS);
	const struct prepared r[] = {
	    {sql_get, &rd->get_stmt},
	    {sql_label_get, &rd->lget_stmt},
	    {sql_key_load, &rd->kload_stmt},
	    {sql_key_find, &rd->kfind_stmt},
	};
	rc = prepare_all(rd->db, r, sizeof(r) / sizeof(r[0]));
	if (rc != SQLITE_OK)
		return open_fail(s, rd->db, rc, "cannot prepare statements", err, errlen);
	return 0;
}

/* One read for the reader thread: fn there, then done on the loop. */
struct sqlite_read {
	struct sqlite_read *next;
	sqlite_read_fn *fn;
	sqlite_read_done_fn *done;
	void *arg;
};

/* The reader thread: run what is queued, in order, on its own connection; hand it back. */
static void *store_reader(void *arg)
{
	struct sqlite_store *s = arg;
	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->r_head && !s->r_closing)
			pthread_cond_wait(&s->rcond, &s->lock);
		struct sqlite_read *list = s->r_head;
		if (!list)
			break;
		s->r_head = s->r_tail = NULL;
		pthread_mutex_unlock(&s->lock);
		/* Each answer goes back as soon as it is read: one slow read holds no other. */
		for (struct sqlite_read *r = list, *next; r; r = next) {
			next = r->next;
			r->next = NULL;
			pthread_mutex_lock(&s->lock);
			bool closing = s->r_closing;
			pthread_mutex_unlock(&s->lock);
			/* Once closing, what is still queued is answered unread (fn with NULL). */
			r->fn(closing ? NULL : &s->trd, r->arg);
			pthread_mutex_lock(&s->lock);
			s->r_len--;
			if (s->rd_tail)
				s->rd_tail->next = r;
			else
				s->rd_head = r;
			s->rd_tail = r;
			pthread_mutex_unlock(&s->lock);
			writer_notify(s);
		}
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* Complete the reads the reader thread has done, on the loop thread. */
static void reads_dispatch(struct sqlite_store *s)
{
	pthread_mutex_lock(&s->lock);
	struct sqlite_read *list = s->rd_head;
	s->rd_head = s->rd_tail = NULL;
	pthread_mutex_unlock(&s->lock);
	while (list) {
		struct sqlite_read *next = list->next;
		list->done(list->arg);
		free(list);
		list = next;
	}
}

int sqlite_store_read_async(struct sqlite_store *s, sqlite_read_fn *fn, sqlite_read_done_fn *done,
			    void *arg)
{
	if (!s || !fn || !done)
		return -EINVAL;
	struct sqlite_read *r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->fn = fn;
	r->done = done;
	r->arg = arg;
	pthread_mutex_lock(&s->lock);
	if (!s->reader_started || s->r_closing) {
		pthread_mutex_unlock(&s->lock);
		free(r);
		return -ESHUTDOWN;
	}
	if (s->r_len >= s->max_queue) {
		/* A store that cannot be read: refuse more rather than queue without end. */
		pthread_mutex_unlock(&s->lock);
		free(r);
		return -EAGAIN;
	}
	s->r_len++;
	if (s->r_tail)
		s->r_tail->next = r;
	else
		s->r_head = r;
	s->r_tail = r;
	pthread_cond_signal(&s->rcond);
	pthread_mutex_unlock(&s->lock);
	return 0;
}

/* Start a thread with every signal blocked, so they go to the loop thread. */
static int start_thread(struct sqlite_store *s, pthread_t *t, void *(*fn)(void *),
			const char *what, char *err, size_t errlen)
{
	char name[16]; /* store-writer, store-reader */
	snprintf(name, sizeof(name), "store-%s", what);
	int r = thread_start(t, fn, s, name);
	if (r != 0) {
		store_set_err(err, errlen, "%s: cannot start the %s thread: %s", s->path, what,
			      strerror(r));
		return -r;
	}
	return 0;
}

int sqlite_store_open(struct event_base *base, const struct store_options *o, struct sqlite_store **ret,
	       char *err, size_t errlen)
{
	if (!base || !o || !o->path || !*o->path || !ret) {
		store_set_err(err, errlen, "store: invalid arguments");
		return -EINVAL;
	}
	if (!o->key || o->key_len != STORE_KEY_LEN) {
		store_set_err(err, errlen, "store: the store key must be %d bytes (%d hex digits)",
			STORE_KEY_LEN, 2 * STORE_KEY_LEN);
		return -EINVAL;
	}
	struct sqlite_store *s = calloc(1, sizeof(*s));
	if (!s) {
		store_set_err(err, errlen, "store: out of memory");
		return -ENOMEM;
	}
	s->efd = -1;
	s->lock_fd = -1;
	s->base = base;
	s->commit_delay_ms = o->commit_delay_ms;
	s->max_queue = o->max_queue ? o->max_queue : STORE_DEFAULT_MAX_QUEUE;
	pthread_mutex_init(&s->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cond, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&s->rcond, NULL);

	int e;
	s->path = strdup(o->path);
	if (!s->path) {
		e = -ENOMEM;
		store_set_err(err, errlen, "store: out of memory");
		goto fail;
	}
	e = seal_new(o->key, o->key_len, &s->seal);
	if (e < 0) {
		store_set_err(err, errlen, "%s: cannot set up AppKey sealing: %s", s->path, strerror(-e));
		goto fail;
	}
	if (o->instance)
		text_copy(s->instance, sizeof(s->instance), o->instance);
	e = store_lock(s, err, errlen);
	if (e < 0)
		goto fail;
	e = store_create_file(s->path, err, errlen);
	if (e < 0)
		goto fail;
	e = store_open_writer(s, err, errlen);
	if (e < 0)
		goto fail;
	s->rd.seal = s->seal;
	e = open_reader(s, &s->rd, err, errlen);
	if (e == 0)
		e = seal_new(o->key, o->key_len, &s->trd.seal);
	if (e == 0)
		e = open_reader(s, &s->trd, err, errlen);
	if (e < 0)
		goto fail;

	s->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->efd < 0) {
		e = -errno;
		store_set_err(err, errlen, "store: eventfd: %s", strerror(-e));
		goto fail;
	}
	s->done_ev = event_new(base, s->efd, EV_READ | EV_PERSIST, store_on_done, s);
	if (!s->done_ev || event_add(s->done_ev, NULL) < 0) {
		e = -ENOMEM;
		store_set_err(err, errlen, "store: cannot watch the writer's completions");
		goto fail;
	}
	e = start_thread(s, &s->writer, store_writer, "writer", err, errlen);
	if (e < 0)
		goto fail;
	s->writer_started = true;
	e = start_thread(s, &s->reader, store_reader, "reader", err, errlen);
	if (e < 0)
		goto fail;
	s->reader_started = true;
	*ret = s;
	return 0;
fail:
	sqlite_store_close(s);
	return e;
}

/* Copy a text column into dst (size size); NULL gives "". -EUCLEAN if it does not fit. */
static int col_text(sqlite3_stmt *st, int i, char *dst, size_t size)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL) {
		dst[0] = '\0';
		return 0;
	}
	const unsigned char *t = sqlite3_column_text(st, i);
	int n = sqlite3_column_bytes(st, i);
	if (!t)
		return -ENOMEM;
	if (n < 0 || (size_t)n >= size || memchr(t, '\0', (size_t)n))
		return -EUCLEAN;
	memcpy(dst, t, (size_t)n);
	dst[n] = '\0';
	return 0;
}

/* Fill *r from a row of DEVICE_COLUMNS, checking it and opening the sealed AppKey. */
static int row_to_record(struct sqlite_reader *rd, sqlite3_stmt *st, struct store_record *r)
{
	char state[16];
	memset(r, 0, sizeof(*r));
	int e = col_text(st, 0, r->dev_eui, sizeof(r->dev_eui));
	if (!e)
		e = col_text(st, 1, r->join_eui, sizeof(r->join_eui));
	if (!e)
		e = col_text(st, 2, r->profile_id, sizeof(r->profile_id));
	if (!e)
		e = col_text(st, 3, r->serial, sizeof(r->serial));
	if (!e)
		e = col_text(st, 4, r->tkm_info, sizeof(r->tkm_info));
	if (!e)
		e = col_text(st, 7, state, sizeof(state));
	if (!e)
		e = col_text(st, 8, r->owner_token, sizeof(r->owner_token));
	if (!e)
		e = col_text(st, 9, r->ref, sizeof(r->ref));
	if (!e)
		e = col_text(st, 10, r->last_error, sizeof(r->last_error));
	if (!e)
		e = col_text(st, 11, r->origin, sizeof(r->origin));
	if (!e && (!hex_valid(r->dev_eui, HEX_EUI) || store_state_parse(state, &r->state) < 0))
		e = -EUCLEAN;
	if (e)
		return e;
	r->app_key_generated = sqlite3_column_int(st, 6) != 0;
	r->uid = (uint32_t)sqlite3_column_int64(st, 12);
	r->pid = (int32_t)sqlite3_column_int64(st, 13);
	r->created_at = sqlite3_column_int64(st, 14);
	r->updated_at = sqlite3_column_int64(st, 15);
	r->attempts = (uint32_t)sqlite3_column_int64(st, 16);
	r->maybe_at = sqlite3_column_int64(st, 17);
	e = col_text(st, 18, r->instance, sizeof(r->instance));
	if (e)
		return e;
	if (sqlite3_column_type(st, 5) != SQLITE_NULL) {
		const void *blob = sqlite3_column_blob(st, 5);
		int len = sqlite3_column_bytes(st, 5);
		if (!blob || len != STORE_SEALED_LEN)
			return -EUCLEAN;
		e = seal_decrypt(rd->seal, (const uint8_t *)r->dev_eui, HEX_EUI, blob, (size_t)len,
				 r->app_key, sizeof(r->app_key));
		if (e < 0)
			return e;
		r->has_app_key = true;
	} else {
		r->app_key_generated = false;
	}
	return 0;
}

int sqlite_reader_get(struct sqlite_reader *rd, const char *dev_eui, struct store_record *ret)
{
	if (!rd || !ret || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	char key[HEX_EUI + 1];
	hex_upper(key, dev_eui, HEX_EUI);
	sqlite3_stmt *st = rd->get_stmt;
	int rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	int e;
	if (rc == SQLITE_ROW) {
		struct store_record *r = malloc(sizeof(*r));
		if (!r) {
			e = -ENOMEM;
		} else {
			e = row_to_record(rd, st, r);
			if (e == 0)
				*ret = *r;
			cred_wipe(r, sizeof(*r));
			free(r);
		}
	} else if (rc == SQLITE_DONE) {
		e = -ENOENT;
	} else {
		e = sql_errno(rd->db, rc);
		if (e == 0)
			e = -EIO;
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return e;
}

int sqlite_reader_list(struct sqlite_reader *rd, int state, const char *after, size_t limit,
	       int (*fn)(const struct store_record *r, void *arg), void *arg)
{
	if (!rd || !fn || state < -1 || state >= STORE_N_STATES)
		return -EINVAL;
	if (after && *after && !store_fits(after, HEX_EUI + 1))
		return -EINVAL;
	char from[HEX_EUI + 1] = "";
	if (after)
		hex_upper(from, after, strlen(after));
	const char *sql =
	    state < 0 ? "SELECT " DEVICE_COLUMNS
			" FROM devices WHERE dev_eui > ?2 ORDER BY dev_eui LIMIT ?3"
		      : "SELECT " DEVICE_COLUMNS
			" FROM devices WHERE state = ?1 AND dev_eui > ?2 ORDER BY dev_eui LIMIT ?3";
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(rd->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rd->db, rc) ? sql_errno(rd->db, rc) : -EIO;
	if (state >= 0)
		rc = sqlite3_bind_text(st, 1, store_state_name((enum store_state)state), -1,
				       SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, from, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, limit ? (sqlite3_int64)limit : -1);
	int e = 0;
	struct store_record *r = malloc(sizeof(*r));
	if (!r)
		e = -ENOMEM;
	while (e == 0 && rc == SQLITE_OK) {
		int step = sqlite3_step(st);
		if (step == SQLITE_DONE)
			break;
		if (step != SQLITE_ROW) {
			rc = step;
			break;
		}
		e = row_to_record(rd, st, r);
		if (e == 0)
			e = fn(r, arg);
	}
	if (e == 0 && rc != SQLITE_OK) {
		e = sql_errno(rd->db, rc);
		if (e == 0)
			e = -EIO;
	}
	if (r) {
		cred_wipe(r, sizeof(*r));
		free(r);
	}
	sqlite3_finalize(st);
	return e;
}

int sqlite_reader_attempt_list(struct sqlite_reader *rd, const char *dev_eui,
		       int (*fn)(const struct store_attempt *a, void *arg), void *arg)
{
	if (!rd || !fn || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	char eui[HEX_EUI + 1];
	hex_upper(eui, dev_eui, HEX_EUI);
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(rd->db,
				    "SELECT n, at, instance, digest, outcome FROM attempts "
				    "WHERE dev_eui = ?1 ORDER BY n",
				    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rd->db, rc) ? sql_errno(rd->db, rc) : -EIO;
	rc = sqlite3_bind_text(st, 1, eui, -1, SQLITE_STATIC);
	int e = 0;
	while (e == 0 && rc == SQLITE_OK) {
		int step = sqlite3_step(st);
		if (step == SQLITE_DONE)
			break;
		if (step != SQLITE_ROW) {
			rc = step;
			break;
		}
		struct store_attempt a = {.n = (uint32_t)sqlite3_column_int64(st, 0),
					  .at = sqlite3_column_int64(st, 1)};
		e = col_text(st, 2, a.instance, sizeof(a.instance));
		if (!e)
			e = col_text(st, 3, a.digest, sizeof(a.digest));
		if (!e)
			e = col_text(st, 4, a.outcome, sizeof(a.outcome));
		if (!e)
			e = fn(&a, arg);
	}
	if (e == 0 && rc != SQLITE_OK)
		e = sql_errno(rd->db, rc) ? sql_errno(rd->db, rc) : -EIO;
	sqlite3_finalize(st);
	return e;
}

int sqlite_reader_count(struct sqlite_reader *rd, uint64_t counts[STORE_N_STATES])
{
	if (!rd || !counts)
		return -EINVAL;
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(rd->db, "SELECT state, count(*) FROM devices GROUP BY state",
				    -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rd->db, rc) ? sql_errno(rd->db, rc) : -EIO;
	uint64_t c[STORE_N_STATES] = {0};
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		enum store_state stt;
		const unsigned char *name = sqlite3_column_text(st, 0);
		if (name && store_state_parse((const char *)name, &stt) == 0)
			c[stt] = (uint64_t)sqlite3_column_int64(st, 1);
	}
	int e = rc == SQLITE_DONE ? 0 : sql_errno(rd->db, rc);
	if (rc != SQLITE_DONE && e == 0)
		e = -EIO;
	sqlite3_finalize(st);
	if (e == 0)
		memcpy(counts, c, sizeof(c));
	return e;
}

int sqlite_reader_audit_list(struct sqlite_reader *rd, const char *dev_eui, int64_t after_id, size_t limit,
		     int (*fn)(const struct store_audit_entry *e, void *arg), void *arg)
{
	if (!rd || !fn || (dev_eui && !hex_valid(dev_eui, HEX_EUI)))
		return -EINVAL;
	char key[HEX_EUI + 1] = "";
	if (dev_eui)
		hex_upper(key, dev_eui, HEX_EUI);
	const char *sql = dev_eui ? "SELECT id, dev_eui, method, uid, pid, at, outcome FROM audit "
				    "WHERE dev_eui = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
				  : "SELECT id, dev_eui, method, uid, pid, at, outcome FROM audit "
				    "WHERE id > ?2 ORDER BY id LIMIT ?3";
	sqlite3_stmt *st;
	int rc = sqlite3_prepare_v2(rd->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return sql_errno(rd->db, rc) ? sql_errno(rd->db, rc) : -EIO;
	if (dev_eui)
		rc = sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 2, after_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 3, limit ? (sqlite3_int64)limit : -1);
	int e = 0;
	while (e == 0 && rc == SQLITE_OK) {
		int step = sqlite3_step(st);
		if (step == SQLITE_DONE)
			break;
		if (step != SQLITE_ROW) {
			rc = step;
			break;
		}
		struct store_audit_entry a;
		memset(&a, 0, sizeof(a));
		a.id = sqlite3_column_int64(st, 0);
		e = col_text(st, 1, a.dev_eui, sizeof(a.dev_eui));
		if (!e)
			e = col_text(st, 2, a.method, sizeof(a.method));
		if (!e)
			e = col_text(st, 6, a.outcome, sizeof(a.outcome));
		a.uid = (uint32_t)sqlite3_column_int64(st, 3);
		a.pid = (int32_t)sqlite3_column_int64(st, 4);
		a.at = sqlite3_column_int64(st, 5);
		if (!e)
			e = fn(&a, arg);
	}
	if (e == 0 && rc != SQLITE_OK) {
		e = sql_errno(rd->db, rc);
		if (e == 0)
			e = -EIO;
	}
	sqlite3_finalize(st);
	return e;
}

void sqlite_store_stats(struct sqlite_store *s, struct store_stats *ret)
{
	if (!s || !ret)
		return;
	pthread_mutex_lock(&s->lock);
	*ret = s->stats;
	ret->queued = s->q_len;
	pthread_mutex_unlock(&s->lock);
}

json_t *sqlite_store_status_json(struct sqlite_store *s)
{
	if (!s)
		return NULL;
	struct store_stats st;
	sqlite_store_stats(s, &st);
	double mean = st.commits ? (double)st.ops / (double)st.commits : 0.0;
	return json_pack("{s:s, s:I, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:o}", "path", s->path,
			 "commits", (json_int_t)st.commits, "ops", (json_int_t)st.ops,
			 "meanOpsPerCommit", mean, "maxBatch", (json_int_t)st.max_batch, "queued",
			 (json_int_t)st.queued, "rejectedOps", (json_int_t)st.ops_rejected,
			 "failedCommits", (json_int_t)st.batch_failures, "failedOps",
			 (json_int_t)st.ops_failed, "lastError",
			 st.last_error ? json_string(st.last_reason) : json_null());
}

void sqlite_store_test_set_max_pages(struct sqlite_store *s, uint32_t pages)
{
	if (!s)
		return;
	pthread_mutex_lock(&s->lock);
	s->test_max_pages = pages;
	s->test_pages_changed = true;
	pthread_mutex_unlock(&s->lock);
}

/* The loop thread's reads (store_sync.h): on the loop's own connection. */
int sqlite_store_get(struct sqlite_store *s, const char *dev_eui, struct store_record *ret)
{
	return s ? sqlite_reader_get(&s->rd, dev_eui, ret) : -EINVAL;
}

int sqlite_store_list(struct sqlite_store *s, int state, const char *after, size_t limit,
		      int (*fn)(const struct store_record *r, void *arg), void *arg)
{
	return s ? sqlite_reader_list(&s->rd, state, after, limit, fn, arg) : -EINVAL;
}

int sqlite_store_attempt_list(struct sqlite_store *s, const char *dev_eui,
			      int (*fn)(const struct store_attempt *a, void *arg), void *arg)
{
	return s ? sqlite_reader_attempt_list(&s->rd, dev_eui, fn, arg) : -EINVAL;
}

int sqlite_store_count(struct sqlite_store *s, uint64_t counts[STORE_N_STATES])
{
	return s ? sqlite_reader_count(&s->rd, counts) : -EINVAL;
}

int sqlite_store_audit_list(struct sqlite_store *s, const char *dev_eui, int64_t after_id,
			    size_t limit, int (*fn)(const struct store_audit_entry *e, void *arg),
			    void *arg)
{
	return s ? sqlite_reader_audit_list(&s->rd, dev_eui, after_id, limit, fn, arg) : -EINVAL;
}

int sqlite_store_key_pool_find(struct sqlite_store *s, const uint8_t app_key[16],
			       uint8_t ret_hsm[16])
{
	return s ? sqlite_reader_key_pool_find(&s->rd, app_key, ret_hsm) : -EINVAL;
}

int sqlite_store_key_pool_load(struct sqlite_store *s, size_t max,
			       int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16],
					 void *arg),
			       void *arg)
{
	return s ? reader_key_pool_load(&s->rd, max, fn, arg) : -EINVAL;
}

/* A label read on the loop's connection (store_sync.h: tools and tests). */
int sqlite_store_label_get(struct sqlite_store *s, const char *dev_eui, struct store_label *ret)
{
	if (!s)
		return -EINVAL;
	return sqlite_reader_label_get(&s->rd, dev_eui, ret);
}
