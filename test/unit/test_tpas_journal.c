/* test-tpas-journal: the journal (sealed keys, uplinks, FCntDn), tunnel_process without HTTP,
 * tpas.conf. */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "ascrypto.h"
#include "asconf.h"
#include "cred.h"
#include "downlink.h"
#include "hex.h"
#include "journal.h"
#include "tap.h"
#include "tunnel.h"
#include "uplink.h"
#include "uplink_read.h"

static const uint8_t store_key[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
				      12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
				      23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

static char dir[] = "/tmp/test-tpas-journal-XXXXXX";

static void path_in(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", dir, name);
}

/* A new journal at name in the test's directory (its path in path). */
static struct journal *journal_in(char path[256], const char *name)
{
	char err[256];
	struct journal *j = NULL;
	path_in(path, 256, name);
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	return j;
}

/* A session of customer "42", its key every byte key. */
static struct as_session session_of(const char *dev_eui, const char *dev_addr, uint8_t key,
				    int64_t received_ms, uint32_t fcnt_dn_next)
{
	struct as_session s = {.received_ms = received_ms, .fcnt_dn_next = fcnt_dn_next};
	snprintf(s.customer_id, sizeof(s.customer_id), "42");
	snprintf(s.dev_eui, sizeof(s.dev_eui), "%s", dev_eui);
	snprintf(s.dev_addr, sizeof(s.dev_addr), "%s", dev_addr);
	memset(s.key, key, sizeof(s.key));
	return s;
}

static void test_keys_and_scopes(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "keys.db");
	struct stat st;
	CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
	uint8_t a[16], b[16], c[16], got[16];
	memset(a, 0xA1, 16);
	memset(b, 0xB2, 16);
	memset(c, 0xC3, 16);
	int64_t id;
	CHECK_INT(journal_astk_find(j, "", "42", "0000000000000001", got, &id), -ENOENT);
	CHECK_INT(journal_astk_add(j, "", "", "", a, &id, NULL), 0);
	CHECK_INT(journal_astk_add(j, "", "42", "", b, &id, NULL), 0);
	CHECK_INT(journal_astk_add(j, "kek", "", "", c, &id, NULL), 0);
	CHECK_INT(journal_astk_find(j, "", "7", "0000000000000001", got, NULL), 0);
	CHECK(memcmp(got, a, 16) == 0);
	CHECK_INT(journal_astk_find(j, "", "42", "0000000000000001", got, NULL), 0);
	CHECK(memcmp(got, b, 16) == 0);
	CHECK_INT(journal_astk_find(j, "kek", "42", "0000000000000001", got, NULL), 0);
	CHECK(memcmp(got, c, 16) == 0);
	CHECK_INT(journal_astk_find(j, "other", "42", "0000000000000001", got, NULL), -ENOENT);
	/* The same key again for the same label and scope: its id, nothing added. Another
	 * key, then the first one again: each the newest in turn (a rotation back). */
	int64_t id_b = id, id2;
	bool existing;
	CHECK_INT(journal_astk_find(j, "", "42", "", got, &id_b), 0);
	CHECK_INT(journal_astk_add(j, "", "42", "", b, &id2, &existing), 0);
	CHECK(existing);
	CHECK_INT(id2, id_b);
	CHECK_INT(journal_astk_add(j, "", "43", "", b, &id2, &existing), 0); /* another scope */
	CHECK(!existing && id2 != id_b);
	CHECK_INT(journal_astk_add(j, "", "42", "", a, &id2, &existing), 0);
	CHECK(!existing);
	CHECK_INT(journal_astk_add(j, "", "42", "", b, &id2, &existing), 0);
	CHECK(!existing);
	CHECK_INT(journal_astk_find(j, "", "42", "0000000000000001", got, NULL), 0);
	CHECK(memcmp(got, b, 16) == 0);
	json_t *listed = journal_astk_list(j);
	CHECK_INT((int)json_array_size(listed), 6);
	json_decref(listed);

	/* Sessions: the newest key decrypts; FCntDn only goes up and survives a reopen. */
	struct as_session s = session_of("0000000000000001", "01020304", 0x11, 1000, 3);
	CHECK_INT(journal_session_add(j, "fp1", &s), 0);
	CHECK_INT(journal_session_add(j, "fp1", &s), -EEXIST);
	s.received_ms = 2000;
	memset(s.key, 0x22, 16);
	CHECK_INT(journal_session_add(j, "fp2", &s), 0);
	int64_t newest = s.id;
	struct as_session r;
	CHECK_INT(journal_session_newest(j, NULL, "0000000000000001", &r), 0);
	CHECK_INT(r.id, newest);
	CHECK(r.key[0] == 0x22);
	CHECK_INT(journal_session_find(j, "42", "0000000000000001", "fp1", &r), 0);
	CHECK(r.key[0] == 0x11);
	CHECK_INT(journal_session_find(j, "43", "0000000000000001", "fp1", &r), -ENOENT);
	uint32_t f1, f2;
	CHECK_INT(journal_fcnt_dn_take(j, newest, &f1), 0);
	CHECK_INT(journal_fcnt_dn_take(j, newest, &f2), 0);
	CHECK_INT(f1, 3);
	CHECK_INT(f2, 4);
	CHECK_INT(journal_fcnt_dn_take(j, 999, &f1), -ENOENT);
	j = journal_free(j);

	/* Another store key: the store is refused (nothing would unseal), and said so. */
	uint8_t other[32] = {0};
	CHECK_INT(journal_open(path, other, &j, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, "the store key does not match") != NULL);
	CHECK_INT(journal_check_key(path, other, err, sizeof(err)), -EBADMSG);
	CHECK_INT(journal_check_key(path, store_key, err, sizeof(err)), 0);
	CHECK_INT(journal_check_key("/nonexistent/x.db", other, err, sizeof(err)), 0);

	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(journal_fcnt_dn_take(j, newest, &f1), 0);
	CHECK_INT(f1, 5);
	json_t *l = journal_astk_list(j);
	CHECK_INT(json_array_size(l), 6); /* three, and three more from the imports again */
	json_decref(l);
	journal_free(j);
	CHECK_INT(journal_open("/nonexistent/dir/x.db", store_key, &j, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "/nonexistent/dir/x.db") != NULL);
}

/* Retention: old uplinks go, sequence numbers are never reused, the cursor survives. */
static void test_prune_and_cursor(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "prune.db");
	int64_t seq = 0;
	for (int i = 0; i < 5; i++) {
		const struct journal_uplink u = {.received_ms = 1000 * (i + 1),
						 .dev_eui = "0000000000000009",
						 .customer_id = "",
						 .dev_addr = "",
						 .time = "t",
						 .fport = i ? 1 : -1,
						 .fcnt_up = (uint32_t)i,
						 .payload_hex = "00"};
		CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
		CHECK_INT(seq, i + 1);
		if (i == 4)
			CHECK_INT(journal_uplink_add(j, &u, &seq), -EEXIST);
	}
	/* A consumer that has all uplinks up to seq 1 only (the webhook) keeps 2 and 3. */
	int64_t held = 0;
	CHECK_INT(journal_prune(j, 3500, 1, 0, &held), 1);
	CHECK_INT(held, 2);
	/* A step at a time, oldest first, until a step finds fewer than its limit. */
	CHECK_INT(journal_prune(j, 3500, INT64_MAX, 1, &held), 1);
	CHECK_INT(journal_first_seq(j), 3);
	CHECK_INT(journal_prune(j, 3500, INT64_MAX, 1, &held), 1);
	CHECK_INT(journal_prune(j, 3500, INT64_MAX, 1, &held), 0);
	CHECK_INT(held, 0);
	json_t *rows = journal_uplinks_after(j, 0, 10);
	CHECK_INT(json_array_size(rows), 2);
	CHECK_INT(json_integer_value(json_object_get(json_array_get(rows, 0), "seq")), 4);
	CHECK(json_object_get(json_array_get(rows, 0), "fPort") != NULL);
	json_decref(rows);
	CHECK_INT(journal_prune(j, 100000, INT64_MAX, 0, NULL), 2);
	const struct journal_uplink u = {.received_ms = 9,
					 .dev_eui = "0000000000000009",
					 .customer_id = "",
					 .dev_addr = "",
					 .time = "t",
					 .fport = -1,
					 .fcnt_up = 77,
					 .payload_hex = ""};
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(seq, 6);
	int64_t c = -1;
	CHECK_INT(journal_cursor_get(j, "webhook", &c), 0);
	CHECK_INT(c, 0);
	CHECK_INT(journal_cursor_set(j, "webhook", 5), 0);
	CHECK_INT(journal_cursor_set(j, "webhook", 6), 0);
	journal_free(j);
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(journal_cursor_get(j, "webhook", &c), 0);
	CHECK_INT(c, 6);
	struct journal_stats st;
	journal_get_stats(j, &st);
	CHECK_INT(st.last_seq, 6);
	CHECK_INT(st.uplinks, 1);
	journal_free(j);
}

/* A journal file named name in the test's directory (its path in path), made of sql, as an
 * older tpas left it. */
/* Run sql on another connection to the file at path. */
static void file_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	CHECK_INT(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
}

static void make_file(char path[256], const char *name, const char *sql)
{
	path_in(path, 256, name);
	file_exec(path, sql);
}

/* The uplink table of schema 1. */
#define V1_UPLINK_TABLE                                                                            \
	"CREATE TABLE uplink (seq INTEGER PRIMARY KEY AUTOINCREMENT,"                              \
	" received_ms INTEGER NOT NULL, session_id INTEGER NOT NULL,"                              \
	" dev_eui TEXT NOT NULL, customer_id TEXT NOT NULL,"                                       \
	" dev_addr TEXT NOT NULL, fport INTEGER, fcnt_up INTEGER NOT NULL,"                        \
	" fcnt_dn INTEGER, time TEXT NOT NULL, payload TEXT NOT NULL,"                             \
	" encrypted INTEGER NOT NULL, radio TEXT NOT NULL,"                                        \
	" UNIQUE (dev_eui, session_id, fcnt_up));"

/*
 * A request's Token makes a replay whatever unsigned fields came with it (here a new
 * session); a journal of version 1 (no Token column) gains it at open.
 */
static void test_token_replays_and_migration(void)
{
	char path[256], err[256];
	make_file(path, "v1.db",
		  V1_UPLINK_TABLE
		  "INSERT INTO uplink VALUES (NULL, 1, 0, '0000000000000009', '', '',"
		  " 1, 0, NULL, 't', '00', 0, '{}');"
		  "PRAGMA user_version = 1;");
	struct journal *j = NULL;
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	const char *tok = "d306f33c239a9c45d160e0cd6e4071e22a4f4b426f892a0651cf622e81369f3d";
	struct journal_uplink u = {.received_ms = 2,
				   .session_id = 1,
				   .dev_eui = "0000000000000009",
				   .customer_id = "",
				   .dev_addr = "",
				   .time = "t",
				   .fport = 1,
				   .fcnt_up = 1,
				   .payload_hex = "00",
				   .token = tok,
				   .time_ms = 1556554877290};
	int64_t seq = 0, again = 0;
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(seq, 2);
	u.session_id = 2; /* the same request with another AppSKey field */
	CHECK_INT(journal_uplink_add(j, &u, &again), -EEXIST);
	CHECK_INT(again, 2);
	CHECK_INT(journal_token_find(j, u.time_ms, tok, &again), 0);
	CHECK_INT(again, 2);
	CHECK_INT(journal_token_find(j, u.time_ms + 1, tok, &again), -ENOENT);
	journal_free(j);
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_stmt *st = NULL;
	CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_step(st), SQLITE_ROW);
	CHECK_INT(sqlite3_column_int(st, 0), 5);
	sqlite3_finalize(st);
	/* Half migrated (a crash between the two columns, before this was one transaction):
	 * it still opens, and the missing column is added. */
	CHECK_INT(sqlite3_exec(db,
			       "DROP INDEX uplink_token; ALTER TABLE uplink DROP COLUMN token_time;"
			       "PRAGMA user_version = 1;",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	sqlite3_close(db);
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(journal_token_find(j, u.time_ms, tok, &again), -ENOENT); /* its Time is gone */
	journal_free(j);
	/* Each migration from version 1 was preceded by a copy of the journal as it was:
	 * <path>.v1-<time>.bak, a whole database with the uplinks of then. */
	char cmd[600], copies[600] = "";
	snprintf(cmd, sizeof(cmd), "ls %s.v1-*.bak | head -1", path);
	FILE *ls = popen(cmd, "r");
	CHECK(ls && fgets(copies, sizeof(copies), ls));
	if (ls)
		pclose(ls);
	copies[strcspn(copies, "\n")] = '\0';
	CHECK_INT(sqlite3_open(copies, &db), SQLITE_OK);
	CHECK_INT(sqlite3_prepare_v2(db, "SELECT count(*) FROM uplink", -1, &st, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_step(st), SQLITE_ROW);
	CHECK(sqlite3_column_int(st, 0) >= 1);
	sqlite3_finalize(st);
	/* A journal of a newer tpas is refused, untouched, at open and by the key check. */
	CHECK_INT(sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	CHECK_INT(journal_open(copies, store_key, &j, err, sizeof(err)), -EPROTO);
	CHECK(strstr(err, "schema version 99 is newer than this tpas supports (5)") != NULL);
	CHECK_INT(journal_check_key(copies, store_key, err, sizeof(err)), -EPROTO);
}

/* The schema version of the journal at path, or -1. */
static int user_version(const char *path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int v = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/*
 * A journal of an older tpas opened with another store key is refused before anything of
 * it changes: no copy aside, no migration (a start retried by systemd copied it each
 * time the version was older).
 */
static void test_older_journal_with_another_key(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "oldkey.db");
	journal_free(j);
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db, "PRAGMA user_version = 1", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(db);
	uint8_t other[32];
	memcpy(other, store_key, sizeof(other));
	other[0] ^= 0xff;
	j = NULL;
	CHECK_INT(journal_open(path, other, &j, err, sizeof(err)), -EBADMSG);
	CHECK(j == NULL);
	CHECK(strstr(err, "the store key does not match") != NULL);
	CHECK_INT(user_version(path), 1);
	char copy[300];
	snprintf(copy, sizeof(copy), "ls %s.v1-*.bak >/dev/null 2>&1", path);
	CHECK(system(copy) != 0); /* no copy */
	/* The right key migrates it, with its copy. */
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	journal_free(j);
	CHECK_INT(user_version(path), 5);
	CHECK(system(copy) == 0);
}

/* What the writer handed back, in order. */
struct done_log {
	struct journal_entry *got[16];
	int n, calls;
	struct event_base *base;
};

static void writer_done_cb(struct journal_entry *list, void *arg)
{
	struct done_log *d = arg;
	d->calls++;
	for (struct journal_entry *e = list; e; e = (struct journal_entry *)e->job.next)
		if (d->n < 16)
			d->got[d->n++] = e;
	event_base_loopbreak(d->base);
}

/* Start j's writer thread, handing back to d on a loop of its own. */
static void writer_on(struct journal *j, struct done_log *d)
{
	char err[256];
	d->base = event_base_new();
	CHECK(d->base != NULL);
	CHECK_INT(journal_writer_start(j, d->base, writer_done_cb, d, err, sizeof(err)), 0);
}

/* Queue a list for the writer and run the loop until it is handed back. */
static void write_list(struct journal *j, struct done_log *d, struct journal_entry *list)
{
	d->n = 0;
	CHECK_INT(journal_uplink_queue(j, list), 0);
	event_base_dispatch(d->base);
}

/* Downlink counters the writer handed back, in order. */
struct take_log {
	struct journal_take *got[8];
	int n, want;
	struct event_base *base;
};

static void take_done_cb(struct journal_take *t, void *arg)
{
	struct take_log *l = arg;
	if (l->n < 8)
		l->got[l->n++] = t;
	if (l->n == l->want)
		event_base_loopbreak(l->base);
}

/*
 * Downlink counters through the writer thread: handed back in the order queued, each
 * with its own outcome (an unknown session or a used-up counter is the take's, not the
 * batch's), to their own callback, not to the uplinks'; an uplink's FCntDn raises the
 * counter in the same queue order; the writer's uplink count leaves them out.
 */
static void test_writer_takes_counters(void)
{
	char path[256];
	struct journal *j = journal_in(path, "takes.db");
	struct as_session s = session_of("0000000000000002", "01020304", 0x33, 1000, 3);
	CHECK_INT(journal_session_add(j, "fp", &s), 0);
	struct journal_take t0 = {.session_id = s.id};
	CHECK_INT(journal_fcnt_dn_queue(j, &t0), -ENOTCONN); /* no writer: the caller commits */
	struct done_log d = {0};
	writer_on(j, &d);
	struct take_log l = {.base = d.base, .want = 3};
	struct journal_take t[5];
	for (int i = 0; i < 5; i++)
		t[i] = (struct journal_take){
		    .session_id = i == 2 ? 999 : s.id, .done = take_done_cb, .arg = &l};
	for (int i = 0; i < 3; i++)
		CHECK_INT(journal_fcnt_dn_queue(j, &t[i]), 0);
	event_base_dispatch(d.base);
	CHECK_INT(l.n, 3);
	CHECK_INT(d.calls, 0); /* the uplinks' callback never sees a take */
	for (int i = 0; i < 3; i++)
		CHECK(l.got[i] == &t[i]);
	CHECK_INT(t[0].err, 0);
	CHECK_INT(t[0].fcnt_dn, 3);
	CHECK_INT(t[1].err, 0);
	CHECK_INT(t[1].fcnt_dn, 4);
	CHECK_INT(t[2].err, -ENOENT);
	/* An uplink reporting the network's FCntDn 2^32 - 1, then two takes: the last counter,
	 * then a used-up one. */
	struct journal_entry e = {0};
	e.u = (struct journal_uplink){.received_ms = 1767225600123LL,
				      .session_id = s.id,
				      .dev_eui = s.dev_eui,
				      .customer_id = s.customer_id,
				      .dev_addr = s.dev_addr,
				      .time = "2026-01-01T00:00:00.000+00:00",
				      .fport = 1,
				      .fcnt_up = 1,
				      .has_fcnt_dn = true,
				      .fcnt_dn = UINT32_MAX,
				      .payload_hex = "00",
				      .radio = "{}",
				      .update_session = true};
	l.n = 0;
	l.want = 2;
	CHECK_INT(journal_uplink_queue(j, &e), 0);
	CHECK_INT(journal_fcnt_dn_queue(j, &t[3]), 0);
	CHECK_INT(journal_fcnt_dn_queue(j, &t[4]), 0);
	while (l.n < 2 || d.n < 1)
		event_base_dispatch(d.base);
	CHECK_INT(d.n, 1);
	CHECK(d.got[0] == &e && e.job.err == 0 && !e.duplicate);
	CHECK_INT(t[3].err, 0);
	CHECK(t[3].fcnt_dn == UINT32_MAX);
	CHECK_INT(t[4].err, -ERANGE);
	struct journal_stats st;
	journal_get_counters(j, &st);
	CHECK_INT(st.batched, 1);
	free(e.text);
	journal_writer_drain(j);
	CHECK_INT(journal_fcnt_dn_queue(j, &t[0]), -ESHUTDOWN);
	/* What was committed stays: the counter is used up after a reopen too. */
	uint32_t f;
	CHECK_INT(journal_fcnt_dn_take(j, s.id, &f), -ERANGE);
	journal_free(j);
	event_base_free(d.base);
}

/*
 * The group-commit writer: a list queued at once is one transaction; a replay inside it
 * is a duplicate with the first one's seq; each new uplink's text is the object the
 * journal gives back for its row (strings that need escaping included); nothing is handed
 * back before it is committed (another connection sees it); after drain, queueing fails.
 */
static void test_writer_group_commit(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "writer.db");
	CHECK_INT(journal_uplink_queue(j, NULL), -ENOTCONN);
	struct done_log d = {0};
	writer_on(j, &d);
	static const char *const customers[] = {"100122002", "quote\" back\\slash",
						"tab\tnl\n", "utf8 \xc3\xa9t\xc3\xa9",
						"",	     "100122002"};
	struct journal_entry e[6];
	memset(e, 0, sizeof(e));
	for (int i = 0; i < 6; i++) {
		e[i].u = (struct journal_uplink){
		    .received_ms = 1767225600123LL + i,
		    .session_id = 1,
		    .dev_eui = "0024AEB3C02BE1C4",
		    .customer_id = customers[i],
		    .dev_addr = "05947ED0",
		    .time = "2026-01-01T00:00:00.000+00:00",
		    .fport = i == 2 ? -1 : 1,
		    .fcnt_up = i == 5 ? 0 : (uint32_t)i, /* the last one replays the first */
		    .has_fcnt_dn = i == 3,
		    .fcnt_dn = 9,
		    .payload_hex = i == 4 ? "" : "33322E35",
		    .encrypted = i == 2,
		    .radio = i == 1 ? NULL : "{\"LrrRSSI\":-41.5,\"SpFact\":\"7\"}",
		};
		e[i].job.next = i < 5 ? &e[i + 1].job : NULL;
	}
	CHECK_INT(journal_uplink_queue(j, &e[0]), 0);
	event_base_dispatch(d.base);
	CHECK_INT(d.calls, 1);
	CHECK_INT(d.n, 6);
	for (int i = 0; i < d.n; i++)
		CHECK(d.got[i] == &e[i]);
	for (int i = 0; i < 6; i++)
		CHECK_INT(e[i].job.err, 0);
	CHECK_INT(e[5].seq, e[0].seq);
	CHECK(e[5].duplicate && !e[0].duplicate);
	CHECK(e[5].text == NULL);
	struct journal_stats st;
	journal_get_stats(j, &st);
	CHECK_INT(st.batches, 1);
	CHECK_INT(st.batched, 6);
	CHECK_INT(st.largest_batch, 6);
	/* Committed: a third connection sees it; the texts match the rows. */
	struct journal *other = NULL;
	CHECK_INT(journal_open(path, store_key, &other, err, sizeof(err)), 0);
	json_t *rows = journal_uplinks_after(other, 0, 10);
	CHECK_INT(json_array_size(rows), 5);
	for (int i = 0; i < 5; i++) {
		CHECK_INT(e[i].seq, i + 1);
		json_error_t jerr;
		json_t *mine = e[i].text ? json_loads(e[i].text, 0, &jerr) : NULL;
		CHECK(mine != NULL);
		CHECK_INT(e[i].text ? strlen(e[i].text) : 0, e[i].text_len);
		CHECK(json_equal(mine, json_array_get(rows, (size_t)i)));
		if (mine && !json_equal(mine, json_array_get(rows, (size_t)i)))
			fprintf(stderr, "# text %s\n", e[i].text);
		json_decref(mine);
		free(e[i].text);
	}
	json_decref(rows);
	journal_free(other);
	/* A second list is a second transaction. */
	struct journal_entry more = {.u = e[1].u};
	more.u.fcnt_up = 100;
	d.n = 0;
	CHECK_INT(journal_uplink_queue(j, &more), 0);
	event_base_dispatch(d.base);
	CHECK_INT(d.n, 1);
	CHECK_INT(more.seq, 6);
	free(more.text);
	journal_get_stats(j, &st);
	CHECK_INT(st.batches, 2);
	/* Drain: what is queued is committed and handed back before it returns. */
	struct journal_entry last = {.u = e[1].u};
	last.u.fcnt_up = 101;
	d.n = 0;
	CHECK_INT(journal_uplink_queue(j, &last), 0);
	journal_writer_drain(j);
	CHECK_INT(d.n, 1);
	CHECK_INT(last.job.err, 0);
	CHECK_INT(last.seq, 7);
	free(last.text);
	struct journal_entry late = {.u = e[1].u};
	CHECK_INT(journal_uplink_queue(j, &late), -ESHUTDOWN);
	journal_free(j);
	event_base_free(d.base);
	/* In memory there is no second connection: no writer. */
	CHECK_INT(journal_open(":memory:", store_key, &j, err, sizeof(err)), 0);
	struct event_base *b = event_base_new();
	CHECK_INT(journal_writer_start(j, b, writer_done_cb, &d, err, sizeof(err)), -EINVAL);
	journal_free(j);
	event_base_free(b);
}

/* One integer from a query on the journal file at path (its own connection), or -1. */
static int64_t file_int(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int64_t v = -1;
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/* An uplink of device d (0-based) with FCntUp f, with no Token: replays are by the key. */
static struct journal_uplink device_uplink(int d, uint32_t f, int64_t received_ms)
{
	static const char *const devs[] = {"00000000000000A0", "00000000000000A1",
					   "00000000000000A2"};
	return (struct journal_uplink){.received_ms = received_ms,
				       .session_id = 1,
				       .dev_eui = devs[d],
				       .customer_id = "",
				       .dev_addr = "",
				       .time = "t",
				       .fport = 1,
				       .fcnt_up = f,
				       .payload_hex = "00"};
}

/*
 * Moves into uplink_seen that keep failing (a trigger refuses its rows, as a disk nearly
 * full takes the uplinks but not a move's thousands): the recent set is dropped at eight
 * moves' worth instead of growing; replays are still found (in the table); once a move
 * succeeds (tried each seen_move_at uplinks), uplink_seen holds every uplink and the set
 * is used again.
 */
static void test_recent_set_bounded_while_moves_fail(void)
{
	char path[256];
	struct journal *j = journal_in(path, "recent.db");
	journal_set_seen_move_at(j, 4); /* at most 32 in the set */
	file_exec(path, "CREATE TRIGGER refuse BEFORE INSERT ON uplink_seen"
			" BEGIN SELECT RAISE(ABORT, 'no room'); END");
	int64_t seq, again;
	bool dropped = false, was_dropped = false;
	size_t most = 0;
	for (uint32_t f = 0; f < 20; f++) {
		CHECK_INT(journal_begin(j), 0);
		for (int d = 0; d < 3; d++) {
			struct journal_uplink u = device_uplink(d, f, 3000);
			CHECK_INT(journal_uplink_insert(j, &u, &seq), 0);
		}
		CHECK_INT(journal_commit(j), 0);
		size_t n = journal_recent_count(j, &dropped);
		most = n > most ? n : most;
		was_dropped = was_dropped || dropped;
	}
	CHECK(most <= 32);
	CHECK(was_dropped && dropped);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 0);
	/* Replays are found all the same, below a session's highest FCntUp and at it. */
	for (uint32_t f = 0; f < 20; f += 19) {
		struct journal_uplink u = device_uplink(1, f, 3000);
		u.time = "later";
		CHECK_INT(journal_uplink_add(j, &u, &again), -EEXIST);
		CHECK_INT(again, 3 * (int64_t)f + 2);
	}
	/* Room again: the next move fills uplink_seen with everything, the set is back. */
	file_exec(path, "DROP TRIGGER refuse");
	for (uint32_t f = 20; f < 22; f++)
		for (int d = 0; d < 3; d++) {
			struct journal_uplink u = device_uplink(d, f, 3000);
			CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
		}
	size_t in_set = journal_recent_count(j, &dropped);
	CHECK(!dropped);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen") + (int64_t)in_set, 66);
	CHECK(in_set < 4);
	struct journal_uplink u = device_uplink(2, 21, 3000);
	u.time = "later";
	CHECK_INT(journal_uplink_add(j, &u, &again), -EEXIST);
	CHECK_INT(again, 66);
	u = device_uplink(2, 22, 3000);
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(journal_recent_count(j, NULL), (in_set + 1) % 4);
	journal_free(j);
}

/*
 * A replay with a new Time is the same (DevEUI, session, FCntUp), whether its uplink is
 * still in the recent set or was moved into uplink_seen (three at a time here), after a
 * reopen (what a crash left after uplink_seen is moved at open), and after a transaction
 * that failed (what it had added is no replay); a removed uplink's key goes with it.
 */
static void test_replays_across_moves(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "moves.db");
	journal_set_seen_move_at(j, 3);
	int64_t seq = 0, again = 0, want = 0;
	for (uint32_t f = 0; f < 10; f++)
		for (int d = 0; d < 3; d++) {
			struct journal_uplink u = device_uplink(d, f, 1000 + f);
			CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
			CHECK_INT(seq, ++want);
		}
	/* 30 uplinks: 30 moved (a move after every third commit). */
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 30);
	for (uint32_t f = 0; f < 10; f++)
		for (int d = 0; d < 3; d++) {
			struct journal_uplink u = device_uplink(d, f, 5000);
			u.time = "later";
			CHECK_INT(journal_uplink_add(j, &u, &again), -EEXIST);
			CHECK_INT(again, 3 * (int64_t)f + d + 1);
			CHECK_INT(journal_uplink_find(j, u.dev_eui, 1, f, &again), 0);
			CHECK_INT(again, 3 * (int64_t)f + d + 1);
		}
	/* Two in the recent set only: found there, and by another connection's find. */
	struct journal_uplink a = device_uplink(0, 10, 2000), b = device_uplink(1, 10, 2000);
	CHECK_INT(journal_uplink_add(j, &a, &seq), 0);
	CHECK_INT(journal_uplink_add(j, &b, &seq), 0);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 30);
	CHECK_INT(journal_uplink_add(j, &a, &again), -EEXIST);
	CHECK_INT(again, 31);
	/* A transaction that failed: its uplink is not there, so it is no replay after. */
	struct journal_uplink c = device_uplink(2, 10, 2000);
	CHECK_INT(journal_begin(j), 0);
	CHECK_INT(journal_uplink_insert(j, &c, &seq), 0);
	CHECK_INT(journal_uplink_insert(j, &c, &again), -EEXIST); /* in the same one: a replay */
	CHECK_INT(again, seq);
	journal_rollback(j);
	CHECK_INT(journal_uplink_add(j, &c, &seq), 0);
	CHECK_INT(seq, 33); /* the seq the rolled-back one had: it was never committed */
	j = journal_free(j);
	/* Reopened: the rows after uplink_seen are moved at open; every replay is found. */
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 33);
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 33);
	CHECK_INT(journal_uplink_add(j, &b, &again), -EEXIST);
	CHECK_INT(again, 32);
	CHECK_INT(journal_uplink_add(j, &c, &again), -EEXIST);
	CHECK_INT(again, 33);
	/* Below a session's highest FCntUp is not a replay by itself: one the LRC sent late
	 * is new, once. */
	struct journal_uplink late = device_uplink(2, 20, 2500), early = device_uplink(2, 15, 2500);
	CHECK_INT(journal_uplink_add(j, &late, &seq), 0);
	CHECK_INT(journal_uplink_add(j, &early, &seq), 0);
	CHECK_INT(journal_uplink_add(j, &early, &again), -EEXIST);
	CHECK_INT(again, seq);
	/* The writer thread keeps its own set: a replay of a moved uplink, of one in its set
	 * and of one in the same batch are each found, with the first one's seq. */
	journal_set_seen_move_at(j, 1);
	struct done_log dl = {0};
	writer_on(j, &dl);
	struct journal_entry e[4];
	memset(e, 0, sizeof(e));
	e[0].u = device_uplink(0, 11, 3000);
	e[1].u = device_uplink(0, 3, 3000);  /* moved long ago: seq 10 */
	e[2].u = device_uplink(0, 11, 3001); /* in this batch */
	e[3].u = device_uplink(1, 10, 3000); /* seq 32 */
	for (int i = 0; i < 4; i++)
		e[i].job.next = i < 3 ? &e[i + 1].job : NULL;
	write_list(j, &dl, &e[0]);
	CHECK_INT(dl.n, 4);
	CHECK(!e[0].duplicate && e[1].duplicate && e[2].duplicate && e[3].duplicate);
	CHECK_INT(e[0].seq, 36);
	CHECK_INT(e[1].seq, 10);
	CHECK_INT(e[2].seq, 36);
	CHECK_INT(e[3].seq, 32);
	for (int i = 0; i < 4; i++)
		free(e[i].text);
	struct journal_entry f = {.u = device_uplink(0, 11, 4000)};
	write_list(j, &dl, &f);
	CHECK(f.duplicate);
	CHECK_INT(f.seq, 36);
	journal_writer_drain(j);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 36);
	/* Removed uplinks take their keys: a replay of one is then new. */
	CHECK_INT(journal_prune(j, 1005, INT64_MAX, 0, NULL), 15);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 21);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen WHERE seq <= 15"), 0);
	journal_free(j);
	event_base_free(dl.base);
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	struct journal_uplink old = device_uplink(1, 2, 9000);
	CHECK_INT(journal_uplink_add(j, &old, &seq), 0);
	CHECK_INT(seq, 37);
	journal_free(j);
}

/*
 * A batch the writer thread cannot commit (a row the table refuses): nothing of it is
 * kept, so an uplink of it sent again is new, not a replay of what the batch had put in
 * the writer's recent set before its COMMIT failed.
 */
static void test_writer_failed_batch(void)
{
	char path[256];
	struct journal *j = journal_in(path, "failed.db");
	struct done_log dl = {0};
	writer_on(j, &dl);
	struct journal_entry g[2];
	memset(g, 0, sizeof(g));
	g[0].u = device_uplink(1, 30, 4000);
	g[1].u = device_uplink(1, 31, 4000);
	g[1].u.time = NULL; /* NOT NULL */
	g[0].job.next = &g[1].job;
	write_list(j, &dl, &g[0]);
	CHECK_INT(dl.n, 2);
	CHECK(g[0].job.err < 0 && g[1].job.err < 0);
	free(g[0].text);
	struct journal_entry again = {.u = device_uplink(1, 30, 4100)};
	write_list(j, &dl, &again);
	CHECK_INT(again.job.err, 0);
	CHECK(!again.duplicate);
	CHECK_INT(again.seq, 1);
	free(again.text);
	/* And that one, sent once more, is a replay. */
	struct journal_entry third = {.u = device_uplink(1, 30, 4200)};
	write_list(j, &dl, &third);
	CHECK(third.duplicate);
	CHECK_INT(third.seq, 1);
	journal_free(j);
	event_base_free(dl.base);
}

/*
 * A new session comes with its uplinks (journal_uplink.new_session): the first adds it in
 * its own transaction, any other in the same batch or later finds it (and raises its
 * FCntDn and moves its start back, as an update would); a failed batch adds none; the loop
 * connection does the same.
 */
static void test_new_session_with_its_uplinks(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "newsess.db");
	struct as_session s = session_of("00000000000000A1", "0A0B0C0D", 0x5A, 5000, 2);
	struct journal_new_session row, early;
	CHECK_INT(journal_session_seal(j, "fp-new", &s, &row), 0);
	CHECK(memmem(&row, sizeof(row), s.key, sizeof(s.key)) == NULL); /* sealed only */
	s.received_ms = 4000; /* the same field in an uplink the network received earlier */
	CHECK_INT(journal_session_seal(j, "fp-new", &s, &early), 0);
	struct done_log dl = {0};
	writer_on(j, &dl);

	/* A batch that fails adds no session. */
	struct journal_entry f[2];
	memset(f, 0, sizeof(f));
	f[0].u = device_uplink(1, 0, 5000);
	f[0].u.session_id = 0;
	f[0].u.new_session = &row;
	f[1].u = device_uplink(1, 1, 5000);
	f[1].u.time = NULL; /* NOT NULL */
	f[0].job.next = &f[1].job;
	write_list(j, &dl, &f[0]);
	CHECK(f[0].job.err < 0 && f[1].job.err < 0);
	free(f[0].text);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM session"), 0);

	/* Two uplinks of it in one batch: one row, both with its id. */
	struct journal_entry g[2];
	memset(g, 0, sizeof(g));
	for (int i = 0; i < 2; i++) {
		g[i].u = device_uplink(1, (uint32_t)i, 5000);
		g[i].u.session_id = 0;
		g[i].u.new_session = i == 0 ? &row : &early;
		g[i].u.has_fcnt_dn = i == 1;
		g[i].u.fcnt_dn = 9;
	}
	g[0].job.next = &g[1].job;
	write_list(j, &dl, &g[0]);
	CHECK(g[0].job.err == 0 && g[1].job.err == 0);
	CHECK(!g[0].duplicate && !g[1].duplicate);
	CHECK(g[0].u.session_id > 0);
	CHECK_INT(g[1].u.session_id, g[0].u.session_id);
	free(g[0].text);
	free(g[1].text);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM session"), 1);
	CHECK_INT(file_int(path, "SELECT fcnt_dn_next FROM session"), 9);
	CHECK_INT(file_int(path, "SELECT received_ms FROM session"), 4000);
	struct as_session got;
	CHECK_INT(journal_session_find(j, "42", "00000000000000A1", "fp-new", &got), 0);
	CHECK_INT(got.id, g[0].u.session_id);
	CHECK(memcmp(got.key, s.key, sizeof(s.key)) == 0);
	CHECK(strcmp(got.dev_addr, "0A0B0C0D") == 0);

	/* Later, its replay is found under the session it resolved to. */
	struct journal_entry r = {.u = device_uplink(1, 1, 6000)};
	r.u.session_id = 0;
	r.u.new_session = &row;
	write_list(j, &dl, &r);
	CHECK_INT(r.job.err, 0);
	CHECK(r.duplicate);
	CHECK_INT(r.seq, g[1].seq);
	journal_free(j);
	event_base_free(dl.base);

	/* The loop connection (no writer thread) the same way. */
	CHECK_INT(journal_open(":memory:", store_key, &j, err, sizeof(err)), 0);
	struct journal_new_session mem;
	CHECK_INT(journal_session_seal(j, "fp-mem", &s, &mem), 0);
	struct journal_uplink a = device_uplink(2, 0, 7000), b = device_uplink(2, 1, 7000);
	a.session_id = b.session_id = 0;
	a.new_session = b.new_session = &mem;
	int64_t seq;
	CHECK_INT(journal_begin(j), 0);
	CHECK_INT(journal_uplink_insert(j, &a, &seq), 0);
	CHECK_INT(journal_uplink_insert(j, &b, &seq), 0);
	CHECK_INT(journal_commit(j), 0);
	CHECK(a.session_id > 0);
	CHECK_INT(b.session_id, a.session_id);
	CHECK_INT(journal_session_find(j, "42", "00000000000000A1", "fp-mem", &got), 0);
	CHECK_INT(got.id, a.session_id);
	cred_wipe(&got, sizeof(got));
	cred_wipe(&s, sizeof(s));
	journal_free(j);
}

/*
 * A journal of schema 2 (the unique (DevEUI, session, FCntUp) index on the uplink table)
 * is copied without it; its seq counter goes on past a removed last row, and each of its
 * uplinks is still a replay.
 */
static void test_migration_from_2(void)
{
	char path[256], err[256];
	make_file(path, "v2.db",
		  V1_UPLINK_TABLE
		  "ALTER TABLE uplink ADD COLUMN token BLOB;"
		  "ALTER TABLE uplink ADD COLUMN token_time INTEGER;"
		  "CREATE INDEX uplink_received ON uplink (received_ms);"
		  "CREATE UNIQUE INDEX uplink_token ON uplink (token_time, token);"
		  "INSERT INTO uplink VALUES (NULL, 1, 1, '00000000000000A0', '', '',"
		  " 1, 7, NULL, 't', '00', 0, '{\"a\":1}', NULL, NULL);"
		  "INSERT INTO uplink VALUES (NULL, 2, 1, '00000000000000A0', '', '',"
		  " 1, 8, NULL, 't', '00', 0, '{}', NULL, NULL);"
		  "INSERT INTO uplink VALUES (NULL, 3, 1, '00000000000000A0', '', '',"
		  " 1, 9, NULL, 't', '00', 0, '{}', NULL, NULL);"
		  "DELETE FROM uplink WHERE seq = 3;"
		  "PRAGMA user_version = 2;");
	struct journal *j = NULL;
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(user_version(path), 5);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE tbl_name = 'uplink'"
				 " AND type = 'index' AND sql IS NULL"),
		  0);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
				 " name IN ('uplink_received', 'uplink_token')"),
		  1);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 2);
	struct journal_uplink u = device_uplink(0, 7, 4);
	int64_t seq = 0;
	CHECK_INT(journal_uplink_add(j, &u, &seq), -EEXIST);
	CHECK_INT(seq, 1);
	u.fcnt_up = 10;
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(seq, 4);
	json_t *rows = journal_uplinks_after(j, 0, 10);
	CHECK_INT(json_array_size(rows), 3);
	CHECK_INT(json_integer_value(
		      json_object_get(json_object_get(json_array_get(rows, 0), "radio"), "a")),
		  1);
	json_decref(rows);
	journal_free(j);
	/* The copy made before the migration is the journal as it was. */
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "ls %s.v2-*.bak >/dev/null 2>&1", path);
	CHECK(system(cmd) == 0);
}

/*
 * Retention walks seq order (the order of receipt) and stops at the first uplink that
 * stays: one received before an older one (the host's clock stepped back) waits for it.
 * The seq counter goes on past a journal emptied by it, also after a restart.
 */
static void test_prune_in_seq_order(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "prune-order.db");
	static const int64_t received[] = {1000, 5000, 2000};
	int64_t seq = 0, held = -1;
	for (int i = 0; i < 3; i++) {
		struct journal_uplink u = device_uplink(0, (uint32_t)i, received[i]);
		CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
		CHECK_INT(seq, i + 1);
	}
	CHECK_INT(journal_prune(j, 3000, INT64_MAX, 0, &held), 1);
	CHECK_INT(journal_first_seq(j), 2);
	CHECK_INT(journal_prune_rows_read(j), 2); /* what it removed and the one that stays */
	/* held counts what the webhook's cursor keeps, up to the first that stays. */
	CHECK_INT(journal_prune(j, 6000, 1, 0, &held), 0);
	CHECK_INT(held, 2);
	CHECK_INT(journal_prune(j, 6000, INT64_MAX, 0, &held), 2);
	CHECK_INT(held, 0);
	journal_free(j);
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	struct journal_stats st;
	journal_get_stats(j, &st);
	CHECK_INT(st.last_seq, 3);
	CHECK_INT(st.uplinks, 0);
	struct journal_uplink u = device_uplink(0, 3, 7000);
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(seq, 4);
	journal_free(j);
}

/*
 * Each step of a removal reads the rows it removes and at most one more, however many
 * old uplinks follow (an SQL bound over the whole table read them all: 67 ms a step at
 * 1,000,000 uplinks, on the loop).
 */
static void test_prune_steps_read_what_they_remove(void)
{
	char path[256];
	struct journal *j = journal_in(path, "prune-steps.db");
	file_exec(path, "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c"
			" WHERE i < 10000) INSERT INTO uplink (received_ms, session_id, dev_eui,"
			" customer_id, dev_addr, fcnt_up, time, payload, encrypted, radio)"
			" SELECT i, 1, '00000000000000A0', '', '', i, 't', '00', 0, '{}' FROM c");
	uint64_t read0 = journal_prune_rows_read(j);
	int steps = 0, r;
	while ((r = journal_prune(j, 9001, INT64_MAX, 100, NULL)) == 100) {
		steps++;
		CHECK(journal_prune_rows_read(j) - read0 <= (uint64_t)steps * 101);
	}
	CHECK_INT(r, 0);
	CHECK_INT(steps, 90);
	CHECK_INT(journal_first_seq(j), 9001);
	journal_free(j);
}

/*
 * A journal of schema 3 (seq AUTOINCREMENT, an index on received_ms) whose uplinks
 * retention has all removed: the index goes, the table stays (no copy), and its seq
 * counter goes on from AUTOINCREMENT's.
 */
static void test_migration_from_3(void)
{
	char path[256], err[256];
	make_file(path, "v3.db",
		  V1_UPLINK_TABLE
		  "ALTER TABLE uplink ADD COLUMN token BLOB;"
		  "ALTER TABLE uplink ADD COLUMN token_time INTEGER;"
		  "CREATE TABLE uplink_v3 (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
		  " received_ms INTEGER NOT NULL, session_id INTEGER NOT NULL,"
		  " dev_eui TEXT NOT NULL, customer_id TEXT NOT NULL, dev_addr TEXT NOT NULL,"
		  " fport INTEGER, fcnt_up INTEGER NOT NULL, fcnt_dn INTEGER, time TEXT NOT NULL,"
		  " payload TEXT NOT NULL, encrypted INTEGER NOT NULL, radio TEXT NOT NULL,"
		  " token BLOB, token_time INTEGER);"
		  "DROP TABLE uplink;"
		  "ALTER TABLE uplink_v3 RENAME TO uplink;"
		  "CREATE INDEX uplink_received ON uplink (received_ms);"
		  "CREATE UNIQUE INDEX uplink_token ON uplink (token_time, token);"
		  "INSERT INTO uplink VALUES (NULL, 1, 1, '00000000000000A0', '', '',"
		  " 1, 7, NULL, 't', '00', 0, '{}', NULL, NULL);"
		  "INSERT INTO uplink VALUES (NULL, 2, 1, '00000000000000A0', '', '',"
		  " 1, 8, NULL, 't', '00', 0, '{}', NULL, NULL);"
		  "DELETE FROM uplink;"
		  "PRAGMA user_version = 3;");
	struct journal *j = NULL;
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(user_version(path), 5);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'uplink'"
				 " AND sql LIKE '%AUTOINCREMENT%'"),
		  1);
	CHECK_INT(file_int(path, "SELECT value FROM meta WHERE key = 'uplink_seq'"), 2);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
				 " name IN ('uplink_received', 'uplink_token')"),
		  1);
	struct journal_stats st;
	journal_get_stats(j, &st);
	CHECK_INT(st.last_seq, 2);
	struct journal_uplink u = device_uplink(0, 9, 4);
	int64_t seq = 0;
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(seq, 3);
	u.fcnt_up = 10;
	CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	CHECK_INT(seq, 4);
	journal_free(j);
}

/*
 * A journal of schema 4 (uplink_seen with its index on seq, no seen_through in meta):
 * the index goes, meta says how far uplink_seen went (the index's highest seq), and the
 * uplinks after it are moved at open, so each replay is found.
 */
static void test_migration_from_4(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "v4.db");
	journal_set_seen_move_at(j, 3);
	int64_t seq = 0;
	for (uint32_t f = 0; f < 5; f++) {
		struct journal_uplink u = device_uplink(0, f, 1000 + f);
		CHECK_INT(journal_uplink_add(j, &u, &seq), 0);
	}
	journal_free(j);
	/* Three moved, two in the recent set when it stopped: as schema 4 left such a file. */
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 3);
	file_exec(path, "CREATE INDEX uplink_seen_seq ON uplink_seen (seq);"
			"DELETE FROM meta WHERE key = 'seen_through';"
			"PRAGMA user_version = 4;");
	CHECK_INT(journal_open(path, store_key, &j, err, sizeof(err)), 0);
	CHECK_INT(user_version(path), 5);
	CHECK_INT(
	    file_int(path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'uplink_seen_seq'"), 0);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 5);
	CHECK_INT(file_int(path, "SELECT value FROM meta WHERE key = 'seen_through'"), 5);
	for (uint32_t f = 0; f < 5; f++) {
		struct journal_uplink u = device_uplink(0, f, 9000);
		u.time = "later";
		CHECK_INT(journal_uplink_add(j, &u, &seq), -EEXIST);
		CHECK_INT(seq, (int64_t)f + 1);
		CHECK_INT(journal_uplink_find(j, u.dev_eui, 1, f, &seq), 0);
		CHECK_INT(seq, (int64_t)f + 1);
	}
	/* Removed uplinks take their keys, found by key now. */
	CHECK_INT(journal_prune(j, 1002, INT64_MAX, 0, NULL), 2);
	CHECK_INT(file_int(path, "SELECT COUNT(*) FROM uplink_seen"), 3);
	CHECK_INT(file_int(path, "SELECT MIN(seq) FROM uplink_seen"), 3);
	journal_free(j);
	char copy[300];
	snprintf(copy, sizeof(copy), "ls %s.v4-*.bak >/dev/null 2>&1", path);
	CHECK(system(copy) == 0);
}

/* Build a signed query for a body's fields. */
static void signed_query(const char *body, const char *time, const char *key, char *out, size_t n)
{
	struct uplink u;
	char reason[160], tok[65], q[512];
	CHECK_INT(uplink_parse(body, strlen(body), &u, reason, sizeof(reason)), 0);
	snprintf(q, sizeof(q), "LrnDevEui=%s&AS_ID=t&Time=%s", u.dev_eui, time);
	uplink_token(&u, q, key, tok);
	snprintf(out, n, "%s&Token=%s", q, tok);
	uplink_clear(&u);
}

/* Vector 2 through the tunnel: the journal holds "32.5C/90.5F", once. */
static void test_tunnel_process(void)
{
	char path[256], err[256];
	struct journal *j = journal_in(path, "tunnel.db");
	const struct tunnel_options o = {
	    .key = "BEC499C69E9C939E413B663961636C61", /* upper case: the Token uses lower */
	    .max_deviation_ms = 60000,
	    .max_body = 4096,
	};
	struct tunnel *t = NULL;
	CHECK_INT(tunnel_new(NULL, &o, j, NULL, NULL, &t, err, sizeof(err)), 0);
	const char *body = "{\"DevEUI_uplink\":{\"DevEUI\":\"0024aeb3c02be1c4\",\"FPort\":1,"
			   "\"FCntUp\":1,\"payload_hex\":\"afac18845bbe3771708042\","
			   "\"DevAddr\":\"05947ED0\",\"CustomerID\":\"100122002\","
			   "\"AppSKey\":\"439d42627c5afe3d4d536340646621a2\"}}";
	const char *time = "2020-01-01T00:00:10.000%2B00:00";
	int64_t now = 1577836800000LL + 10000;
	char q[1024];
	signed_query(body, time, "bec499c69e9c939e413b663961636c61", q, sizeof(q));
	json_t *ans = NULL;

	/* No ASTK yet. */
	CHECK_INT(tunnel_process(t, q, body, strlen(body), now, &ans), 503);
	json_decref(ans);
	uint8_t astk[16];
	CHECK_INT(hex_decode("DBFB0939C448FF1FBF84E84D6AC8CE98", astk, 16), 0);
	CHECK_INT(journal_astk_add(j, "", "", "", astk, NULL, NULL), 0);
	CHECK_INT(tunnel_process(t, q, body, strlen(body), now, &ans), 200);
	CHECK_INT(json_integer_value(json_object_get(ans, "seq")), 1);
	CHECK(json_is_false(json_object_get(ans, "duplicate")));
	json_decref(ans);
	CHECK_INT(tunnel_process(t, q, body, strlen(body), now, &ans), 200);
	CHECK(json_is_true(json_object_get(ans, "duplicate")));
	json_decref(ans);
	json_t *rows = journal_uplinks_after(j, 0, 10);
	CHECK_INT(json_array_size(rows), 1);
	/* "32.5C/90.5F" in hex. */
	CHECK_STR(json_string_value(json_object_get(json_array_get(rows, 0), "payload")),
		  "33322E35432F39302E3546");
	json_decref(rows);

	/* Stale, tampered, unsigned, malformed. */
	CHECK_INT(tunnel_process(t, q, body, strlen(body), now + 61000, &ans), 401);
	json_decref(ans);
	/* Over the limit by less than a second: never said as the limit itself. */
	CHECK_INT(tunnel_process(t, q, body, strlen(body), now + 60900, &ans), 401);
	CHECK_STR(json_string_value(json_object_get(ans, "error")),
		  "stale Time: 2020-01-01T00:00:10.000+00:00 is 60.9 s behind this host's wall "
		  "clock (2020-01-01T00:01:10.900+00:00), more than tunnel.max-time-deviation "
		  "(60 s): check the clocks (NTP) of the LRC and of this host");
	json_decref(ans);
	CHECK_INT(tunnel_process(t, q, body, strlen(body), now - 60001, &ans), 401);
	CHECK(strstr(json_string_value(json_object_get(ans, "error")),
		     " is 60.001 s ahead of this host's "));
	json_decref(ans);
	/* A day its month does not have is no Time (a bad request), not a stale one. */
	char feb30[1024];
	signed_query(body, "2020-02-30T00:00:10.000%2B00:00", "bec499c69e9c939e413b663961636c61",
		     feb30, sizeof(feb30));
	CHECK_INT(tunnel_process(t, feb30, body, strlen(body), now, &ans), 400);
	CHECK_STR(json_string_value(json_object_get(ans, "error")), "Time is not a date and time");
	json_decref(ans);
	char bad[1024];
	snprintf(bad, sizeof(bad), "%s", q);
	bad[strlen(bad) - 1] = bad[strlen(bad) - 1] == '0' ? '1' : '0';
	CHECK_INT(tunnel_process(t, bad, body, strlen(body), now, &ans), 401);
	json_decref(ans);
	CHECK_INT(tunnel_process(t, "Time=x", body, strlen(body), now, &ans), 401);
	json_decref(ans);
	CHECK_INT(tunnel_process(t, NULL, body, strlen(body), now, &ans), 401);
	json_decref(ans);
	CHECK_INT(tunnel_process(t, q, "<DevEUI_uplink>", 15, now, &ans), 400);
	json_decref(ans);
	CHECK_INT(tunnel_process(t, q, "", 0, now, &ans), 400);
	json_decref(ans);
	struct tunnel_stats st;
	tunnel_get_stats(t, &st);
	CHECK_INT(st.accepted, 1);
	CHECK_INT(st.duplicates, 1);
	CHECK_INT(st.no_astk, 1);
	CHECK_INT(st.stale_time, 3);
	CHECK_INT(st.bad_token, 3);
	CHECK_INT(st.bad_request, 3);
	tunnel_free(t);
	journal_free(j);
}

/* The downlink query: vector 6 exactly, and our form with FCntDn. */
static void test_downlink_query(void)
{
	char q[1024];
	CHECK_INT(downlink_query("000000000F1D8693", 1, "00", -1, false, "app1.sample.com",
				 "2016-01-11T14:28:00", "46ab678cd45df4a4e4b375Eacd096acc", q,
				 sizeof(q)),
		  0);
	CHECK_STR(q, "DevEUI=000000000F1D8693&FPort=1&Payload=00&AS_ID=app1.sample.com&"
		     "Time=2016-01-11T14:28:00&Token="
		     "b5a84fe9c8921e9de359e3041a37b76c4b122f6f9b83577b5596c842052f7e62");
	CHECK_INT(downlink_query("0024AEB3C02BE1C4", 2, "4E75F440", 7, true, "as 1",
				 "2026-01-01T00:00:00.000+01:00", "k", q, sizeof(q)),
		  0);
	CHECK(
	    strncmp(q,
		    "DevEUI=0024AEB3C02BE1C4&FPort=2&Payload=4E75F440&FCntDn=7&Confirmed=1&"
		    "AS_ID=as%201&Time=2026-01-01T00:00:00.000%2B01:00&Token=",
		    strlen("DevEUI=0024AEB3C02BE1C4&FPort=2&Payload=4E75F440&FCntDn=7&Confirmed=1&"
			   "AS_ID=as%201&Time=2026-01-01T00:00:00.000%2B01:00&Token=")) == 0);
	CHECK_INT(downlink_query("0024AEB3C02BE1C4", 2, "00", 7, true, "as", "t", "k", q, 40),
		  -ENOBUFS);
}

/* The shipped tpas.conf, every line uncommented, gives the built-in defaults. */
static void test_shipped_conf(const char *path)
{
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	if (!f)
		return;
	char tmp[256];
	path_in(tmp, sizeof(tmp), "tpas.conf");
	FILE *o = fopen(tmp, "w");
	char line[1024];
	int directives = 0;
	while (fgets(line, sizeof(line), f)) {
		if (line[0] == '#' && line[1] >= 'a' && line[1] <= 'z') {
			fputs(line + 1, o);
			directives++;
		} else {
			fputs(line, o);
		}
	}
	fclose(f);
	fclose(o);
	CHECK(directives >= 25);
	struct asconf a, b;
	char err[256];
	asconf_defaults(&a);
	CHECK_INT(asconf_load(&a, tmp, err, sizeof(err)), 0);
	asconf_defaults(&b);
	char *ta = NULL, *tb = NULL;
	size_t la, lb;
	FILE *ma = open_memstream(&ta, &la), *mb = open_memstream(&tb, &lb);
	asconf_print(&a, ma, false);
	asconf_print(&b, mb, false);
	fclose(ma);
	fclose(mb);
	CHECK_STR(ta, tb);
	free(ta);
	free(tb);
	asconf_free(&a);
	asconf_free(&b);
	/* Errors name file:line. */
	asconf_defaults(&a);
	CHECK(asconf_load_string(&a, "x.conf", "[tunnel]\npath = nope\n", err, sizeof(err)) < 0);
	CHECK(strstr(err, "tunnel.path") != NULL);
	asconf_free(&a);
	asconf_defaults(&a);
	CHECK(asconf_load_string(&a, "x.conf", "[lrc]\n\nurl = ftp://x\n", err, sizeof(err)) < 0);
	asconf_free(&a);
}

int main(int argc, char **argv)
{
	if (!mkdtemp(dir))
		return 2;
	test_keys_and_scopes();
	test_prune_and_cursor();
	test_token_replays_and_migration();
	test_older_journal_with_another_key();
	test_writer_group_commit();
	test_writer_takes_counters();
	test_recent_set_bounded_while_moves_fail();
	test_replays_across_moves();
	test_writer_failed_batch();
	test_new_session_with_its_uplinks();
	test_migration_from_2();
	test_migration_from_3();
	test_migration_from_4();
	test_prune_in_seq_order();
	test_prune_steps_read_what_they_remove();
	test_tunnel_process();
	test_downlink_query();
	if (argc > 1)
		test_shipped_conf(argv[1]);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return tap_done();
}
