/* Unit tests for the device store: persistence, group commit, sealing, failures, listing. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "hex.h"
#include "store.h"
#include "store_rows_check.h"
#include "store_sync.h"
#include "tap.h"

static char dir[256];
static char dbpath[300];
static uint8_t key[STORE_KEY_LEN];
static struct event_base *base;

/* Completion counters shared by the callbacks of one test step. */
struct tally {
	int calls;
	int ok;
	int eexist;
	int enoent;
	int other;
	int last_err;
	char last_reason[256];
	int submitting; /* set while inside a submitting call */
	int sync_calls; /* callbacks run from inside a submitting call */
};

/* Count one completion into the tally. */
static void on_done(int err, const char *reason, void *arg)
{
	struct tally *t = arg;
	t->calls++;
	if (t->submitting)
		t->sync_calls++;
	t->last_err = err;
	snprintf(t->last_reason, sizeof(t->last_reason), "%s", reason ? reason : "(null)");
	if (err == 0)
		t->ok++;
	else if (err == -EEXIST)
		t->eexist++;
	else if (err == -ENOENT)
		t->enoent++;
	else
		t->other++;
}

/* Run the loop until t->calls reaches want or 30 s pass. */
static void wait_for(struct tally *t, int want)
{
	struct timespec t0, now;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (t->calls < want) {
		event_base_loop(base, EVLOOP_ONCE);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - t0.tv_sec > 30) {
			fprintf(stderr, "timed out waiting for %d completions (have %d)\n", want,
				t->calls);
			break;
		}
	}
}

/* Open the test store with the given key and commit delay; CHECKs success. */
static struct store *open_store(const uint8_t *k, uint32_t delay_ms)
{
	struct store_options o = {
	    .path = dbpath, .key = k, .key_len = STORE_KEY_LEN, .commit_delay_ms = delay_ms};
	struct store *s = NULL;
	char err[256] = "";
	int r = store_open(base, &o, &s, err, sizeof(err));
	CHECK_INT(r, 0);
	if (r < 0)
		fprintf(stderr, "store_open: %s\n", err);
	return s;
}

/* A device record numbered i, with an AppKey derived from i when with_key. */
static void make_record(struct store_record *r, unsigned i, bool with_key)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->dev_eui, sizeof(r->dev_eui), "70b3d57ed0%06x", i & 0xffffffu);
	snprintf(r->join_eui, sizeof(r->join_eui), "%s", "70B3D57ED0000000");
	snprintf(r->profile_id, sizeof(r->profile_id), "%s", "00000000");
	snprintf(r->serial, sizeof(r->serial), "SN-%u", i);
	snprintf(r->origin, sizeof(r->origin), "%s", "activate");
	r->state = STORE_PENDING;
	r->uid = 1000;
	r->pid = (int32_t)(4000 + i);
	if (with_key) {
		for (int b = 0; b < 16; b++)
			r->app_key[b] = (uint8_t)(0xA0 + b + i * 7);
		r->has_app_key = true;
		r->app_key_generated = true;
	} else {
		snprintf(r->tkm_info, sizeof(r->tkm_info), "3111%06x0000000000", i & 0xffffffu);
	}
}

/* Remove the store files between tests. */
static void remove_store(void)
{
	char p[320];
	unlink(dbpath);
	snprintf(p, sizeof(p), "%s-wal", dbpath);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", dbpath);
	unlink(p);
}

/* Read a whole file into a malloc'd buffer; NULL with *n = 0 if missing. */
static uint8_t *slurp(const char *path, size_t *n)
{
	*n = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	uint8_t *buf = malloc(cap);
	size_t got;
	while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
		len += got;
		if (len == cap) {
			cap *= 2;
			uint8_t *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				buf = NULL;
			}
			buf = nb;
		}
	}
	fclose(f);
	*n = len;
	return buf;
}

/* True if the store's .db or -wal file holds needle. */
static bool store_files_contain(const void *needle, size_t nlen)
{
	const char *suffix[] = {"", "-wal"};
	bool found = false;
	for (size_t i = 0; i < 2; i++) {
		char p[320];
		snprintf(p, sizeof(p), "%s%s", dbpath, suffix[i]);
		size_t n;
		uint8_t *buf = slurp(p, &n);
		if (buf && memmem(buf, n, needle, nlen))
			found = true;
		free(buf);
	}
	return found;
}

/* Run one SQL statement on the file directly (to play an older or foreign writer). */
static int raw_exec(const char *sql)
{
	sqlite3 *db;
	int rc = sqlite3_open(dbpath, &db);
	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
	sqlite3_close(db);
	return rc;
}

/* Open, insert, reopen: the row, its AppKey and the file mode survive. */
static void test_persistence(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	struct stat st;
	CHECK_INT(stat(dbpath, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0600);

	struct store_record r, got;
	make_record(&r, 1, true);
	struct tally t = {0};
	t.submitting = 1;
	CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	t.submitting = 0;
	CHECK_INT(t.calls, 0);
	wait_for(&t, 1);
	CHECK_INT(t.ok, 1);
	CHECK_INT(t.sync_calls, 0);

	char walpath[320];
	snprintf(walpath, sizeof(walpath), "%s-wal", dbpath);
	CHECK_INT(stat(walpath, &st), 0);
	CHECK_INT(st.st_mode & 0777, 0600);

	/* Reads see the commit right away and decrypt the AppKey; lookups ignore case. */
	CHECK_INT(store_get(s, "70B3D57ED0000001", &got), 0);
	CHECK_STR(got.dev_eui, "70B3D57ED0000001");
	CHECK(got.has_app_key && got.app_key_generated);
	CHECK(memcmp(got.app_key, r.app_key, 16) == 0);
	CHECK_INT(store_get(s, "70b3d57ed0000002", &got), -ENOENT);
	CHECK_INT(store_get(s, "70b3d57ed000000", &got), -EINVAL);
	CHECK_INT(store_get(s, "70b3d57ed000000x", &got), -EINVAL);
	store_close(s);

	s = open_store(key, 0);
	if (!s)
		return;
	memset(&got, 0, sizeof(got));
	CHECK_INT(store_get(s, "70b3d57ed0000001", &got), 0);
	CHECK_STR(got.join_eui, "70B3D57ED0000000");
	CHECK_STR(got.profile_id, "00000000");
	CHECK_STR(got.serial, "SN-1");
	CHECK_STR(got.tkm_info, "");
	CHECK_STR(got.origin, "activate");
	CHECK_STR(got.owner_token, "");
	CHECK_INT(got.state, STORE_PENDING);
	CHECK_INT(got.uid, 1000);
	CHECK_INT(got.pid, 4001);
	CHECK(got.created_at > 1600000000000LL);
	CHECK_INT(got.updated_at, got.created_at);
	CHECK(got.has_app_key);
	CHECK(memcmp(got.app_key, r.app_key, 16) == 0);
	store_close(s);
}

/* Insert of a known DevEUI gets -EEXIST; update replaces; update of an unknown one -ENOENT. */
static void test_insert_update(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	struct store_record r, dup, got;
	make_record(&r, 2, false);
	struct tally t = {0};
	CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(t.ok, 1);

	make_record(&dup, 2, true);
	snprintf(dup.dev_eui, sizeof(dup.dev_eui), "%s", "70B3D57ED0000002");
	memset(&t, 0, sizeof(t));
	CHECK_INT(store_insert(s, &dup, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(t.eexist, 1);
	CHECK_INT(t.last_err, -EEXIST);
	CHECK(strstr(t.last_reason, "already") != NULL);

	/* The original row is untouched by the refused insert. */
	CHECK_INT(store_get(s, r.dev_eui, &got), 0);
	CHECK(!got.has_app_key);
	CHECK_STR(got.tkm_info, "31110000020000000000");

	r.state = STORE_ISSUED;
	snprintf(r.owner_token, sizeof(r.owner_token), "%s", "AABBCCDDEEFF00112233445566778899");
	snprintf(r.ref, sizeof(r.ref), "%s", "ref-42");
	memset(&t, 0, sizeof(t));
	CHECK_INT(store_update(s, &r, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(t.ok, 1);
	CHECK_INT(store_get(s, r.dev_eui, &got), 0);
	CHECK_INT(got.state, STORE_ISSUED);
	CHECK_STR(got.owner_token, "AABBCCDDEEFF00112233445566778899");
	CHECK_STR(got.ref, "ref-42");
	CHECK(got.updated_at >= got.created_at);

	struct store_record ghost;
	make_record(&ghost, 3, false);
	memset(&t, 0, sizeof(t));
	CHECK_INT(store_update(s, &ghost, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(t.enoent, 1);
	CHECK_INT(store_get(s, ghost.dev_eui, &got), -ENOENT);

	/* Invalid records are refused at once, with no callback. */
	struct store_record bad;
	memset(&t, 0, sizeof(t));
	make_record(&bad, 4, false);
	snprintf(bad.dev_eui, sizeof(bad.dev_eui), "%s", "70B3D57ED000000G");
	CHECK_INT(store_insert(s, &bad, on_done, &t), -EINVAL);
	make_record(&bad, 4, false);
	snprintf(bad.origin, sizeof(bad.origin), "%s", "elsewhere");
	CHECK_INT(store_insert(s, &bad, on_done, &t), -EINVAL);
	make_record(&bad, 4, false);
	bad.state = (enum store_state)7;
	CHECK_INT(store_insert(s, &bad, on_done, &t), -EINVAL);
	make_record(&bad, 4, false);
	snprintf(bad.tkm_info, sizeof(bad.tkm_info), "%s", "1234");
	CHECK_INT(store_insert(s, &bad, on_done, &t), -EINVAL);
	make_record(&bad, 4, false);
	memset(bad.serial, 'x', sizeof(bad.serial));
	CHECK_INT(store_insert(s, &bad, on_done, &t), -EINVAL);
	make_record(&bad, 4, false);
	CHECK_INT(store_insert(s, &bad, NULL, NULL), -EINVAL);
	CHECK_INT(t.calls, 0);

	struct store_stats ss;
	store_stats(s, &ss);
	CHECK_INT(ss.ops_rejected, 2);
	CHECK_INT(ss.batch_failures, 0);
	store_close(s);
}

/* The AppKey never reaches the files in clear, in bytes or hex of either case. */
static void test_no_clear_key(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	struct tally t = {0};
	struct store_record r[20];
	for (unsigned i = 0; i < 20; i++) {
		make_record(&r[i], 100 + i, true);
		CHECK_INT(store_insert(s, &r[i], on_done, &t), 0);
	}
	wait_for(&t, 20);
	CHECK_INT(t.ok, 20);

	/* The scan must be able to find things: the serial numbers are in clear. */
	CHECK(store_files_contain("SN-100", 6));
	for (unsigned i = 0; i < 20; i++) {
		char hex[33], lower[33];
		hex_encode(r[i].app_key, 16, hex);
		for (int c = 0; c < 33; c++)
			lower[c] = (char)((hex[c] >= 'A' && hex[c] <= 'F') ? hex[c] + 32 : hex[c]);
		CHECK(!store_files_contain(r[i].app_key, 16));
		CHECK(!store_files_contain(hex, 32));
		CHECK(!store_files_contain(lower, 32));
	}
	/* Nor does the store key. */
	CHECK(!store_files_contain(key, sizeof(key)));
	store_close(s);
	for (unsigned i = 0; i < 20; i++)
		CHECK(!store_files_contain(r[i].app_key, 16));
}

/* A wrong key is refused at open; a sealed AppKey moved to another row does not open. */
static void test_wrong_key(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	struct store_record a, b, got;
	make_record(&a, 7, true);
	make_record(&b, 8, true);
	struct tally t = {0};
	CHECK_INT(store_insert(s, &a, on_done, &t), 0);
	CHECK_INT(store_insert(s, &b, on_done, &t), 0);
	wait_for(&t, 2);
	CHECK_INT(t.ok, 2);
	store_close(s);

	uint8_t other[STORE_KEY_LEN];
	memcpy(other, key, sizeof(other));
	other[31] ^= 0x55;
	struct store_options o = {.path = dbpath, .key = other, .key_len = STORE_KEY_LEN};
	char err[256] = "";
	s = NULL;
	CHECK_INT(store_open(base, &o, &s, err, sizeof(err)), -EBADMSG);
	CHECK(s == NULL);
	CHECK(strstr(err, "key") != NULL);
	o.key_len = 16;
	CHECK_INT(store_open(base, &o, &s, err, sizeof(err)), -EINVAL);

	/* Graft a's sealed key onto b: associated data binds it to a's DevEUI. */
	CHECK_INT(raw_exec("UPDATE devices SET app_key_sealed = (SELECT app_key_sealed FROM "
			   "devices WHERE dev_eui = '70B3D57ED0000007') WHERE dev_eui = "
			   "'70B3D57ED0000008'"),
		  SQLITE_OK);
	s = open_store(key, 0);
	if (!s)
		return;
	CHECK_INT(store_get(s, a.dev_eui, &got), 0);
	CHECK_INT(store_get(s, b.dev_eui, &got), -EBADMSG);
	store_close(s);
}

/* Schema versions: a new file gets v1, reopening keeps it, a newer version is refused. */
static void test_schema_version(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	store_close(s);
	sqlite3 *db;
	CHECK_INT(sqlite3_open(dbpath, &db), SQLITE_OK);
	sqlite3_stmt *st;
	CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_step(st), SQLITE_ROW);
	CHECK_INT(sqlite3_column_int(st, 0), 3);
	sqlite3_finalize(st);
	CHECK_INT(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_step(st), SQLITE_ROW);
	CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(db);

	s = open_store(key, 0);
	store_close(s);

	CHECK_INT(raw_exec("PRAGMA user_version = 4"), SQLITE_OK);
	char err[256] = "";
	struct store_options o = {.path = dbpath, .key = key, .key_len = STORE_KEY_LEN};
	s = NULL;
	CHECK_INT(store_open(base, &o, &s, err, sizeof(err)), -ENOTSUP);
	CHECK(strstr(err, "newer") != NULL);
	CHECK(s == NULL);
	CHECK_INT(raw_exec("PRAGMA user_version = 3"), SQLITE_OK);
	s = open_store(key, 0);

	/* One tpad per store: a second open of the same file is refused, naming the owner. */
	struct store *second = NULL;
	err[0] = '\0';
	CHECK_INT(store_open(base, &o, &second, err, sizeof(err)), -EBUSY);
	CHECK(second == NULL);
	CHECK(strstr(err, "in use by another tpad") != NULL);
	char pid[32];
	snprintf(pid, sizeof(pid), "pid %ld", (long)getpid());
	CHECK(strstr(err, pid) != NULL);
	store_close(s);
	/* Closed: the lock is free again. */
	s = open_store(key, 0);
	store_close(s);

	/* A version 1 store (no labels table) is migrated in place, its rows kept. */
	s = open_store(key, 0);
	struct store_record r;
	make_record(&r, 7, true);
	struct tally t1 = {0};
	CHECK_INT(store_insert(s, &r, on_done, &t1), 0);
	wait_for(&t1, 1);
	CHECK_INT(t1.ok, 1);
	store_close(s);
	/* Back to the v1 shape: no labels (v2), no attempts, instance or FOREIGN (v3). */
	CHECK_INT(raw_exec("DROP TABLE labels; DROP TABLE attempts;"
			   "ALTER TABLE audit DROP COLUMN instance;"
			   "ALTER TABLE devices DROP COLUMN attempts;"
			   "ALTER TABLE devices DROP COLUMN maybe_at;"
			   "ALTER TABLE devices DROP COLUMN instance;"
			   "UPDATE devices SET state = 'PENDING';"
			   "PRAGMA user_version = 1"),
		  SQLITE_OK);
	s = open_store(key, 0);
	if (s) {
		struct store_record got;
		CHECK_INT(store_get(s, r.dev_eui, &got), 0);
		CHECK(got.has_app_key && memcmp(got.app_key, r.app_key, 16) == 0);
		/* An old PENDING row may have had its import sent: one attempt, unsettled. */
		CHECK_INT(got.state, STORE_PENDING);
		CHECK_INT(got.attempts, 1);
		CHECK(got.maybe_at > 0);
		store_close(s);
	}

	/* A file that is not a database is refused, not overwritten. */
	remove_store();
	int fd = open(dbpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0);
	char junk[4096];
	memset(junk, 'J', sizeof(junk));
	CHECK_INT(write(fd, junk, sizeof(junk)), (long long)sizeof(junk));
	close(fd);
	s = NULL;
	CHECK(store_open(base, &o, &s, err, sizeof(err)) < 0);
	CHECK(s == NULL);
	size_t n;
	uint8_t *buf = slurp(dbpath, &n);
	CHECK_INT(n, sizeof(junk));
	CHECK(buf && buf[0] == 'J');
	free(buf);
}

/* QR labels: stored, read back, replaced, and refused when malformed. */
static void test_labels(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	static struct store_label l, got;
	memset(&l, 0, sizeof(l));
	CHECK_INT(store_label_get(s, "00000000000000A8", &got), -ENOENT);
	snprintf(l.text, sizeof(l.text), "LW:D0:ONE");
	l.ec = 1;
	l.matrix[0] = 21;
	l.matrix_len = 5;
	CHECK_INT(store_label_put(s, "00000000000000a8", &l), 0);
	snprintf(l.text, sizeof(l.text), "LW:D0:TWO");
	l.ec = 2;
	l.matrix[1] = 9;
	snprintf(l.image_opts, sizeof(l.image_opts), "png/4/4/M");
	memcpy(l.image, "\x89PNG", 4);
	l.image_len = 4;
	CHECK_INT(store_label_put(s, "00000000000000A8", &l), 0);
	/* Written with the next commit: an insert's callback tells when that is. */
	struct store_record r;
	make_record(&r, 8, false);
	struct tally t = {0};
	CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(store_label_get(s, "00000000000000a8", &got), 0);
	CHECK_STR(got.text, "LW:D0:TWO");
	CHECK_INT(got.ec, 2);
	CHECK_INT(got.matrix_len, 5);
	CHECK_INT(got.matrix[1], 9);
	CHECK_STR(got.image_opts, "png/4/4/M");
	CHECK_INT(got.image_len, 4);
	CHECK(memcmp(got.image, "\x89PNG", 4) == 0);

	struct store_label bad = l;
	bad.text[0] = '\0';
	CHECK_INT(store_label_put(s, "00000000000000A8", &bad), -EINVAL);
	CHECK_INT(store_label_put(s, "XYZ", &l), -EINVAL);
	bad = l;
	bad.matrix_len = 0;
	CHECK_INT(store_label_put(s, "00000000000000A8", &bad), -EINVAL);
	bad = l;
	bad.image_len = sizeof(bad.image) + 1;
	CHECK_INT(store_label_put(s, "00000000000000A8", &bad), -EINVAL);
	/* What the loop knows without reading: only the labels read with their rows on the
	 * reader thread (a get, a list with labels), each taken by its first use. */
	CHECK_INT(store_label_cached(s, "00000000000000a8", &got), -ENOENT);
	CHECK_INT(store_label_put(s, r.dev_eui, &l), 0); /* a PENDING device the store holds */
	struct store_record issued;
	make_record(&issued, 9, false);
	issued.state = STORE_ISSUED;
	snprintf(issued.owner_token, sizeof(issued.owner_token), "0123456789ABCDEF");
	struct tally t2 = {0};
	CHECK_INT(store_insert(s, &issued, on_done, &t2), 0);
	wait_for(&t2, 1);
	CHECK_INT(store_label_put(s, issued.dev_eui, &l), 0); /* and an issued one */
	store_close(s);
	s = open_store(key, 0);
	if (!s)
		return;
	CHECK_INT(store_label_cached(s, issued.dev_eui, &got), -ENOENT);
	struct rows_done rd;
	ASK(base, rd, store_list_async(s, -1, NULL, 0, on_rows, &rd));
	CHECK_INT(rd.err, 0);
	CHECK_INT(store_label_cached(s, issued.dev_eui, &got), -ENOENT); /* not asked for */
	ASK(base, rd, store_list_labels_async(s, -1, NULL, 0, on_rows, &rd));
	CHECK_INT(rd.err, 0);
	CHECK_INT(store_label_cached(s, issued.dev_eui, &got), 0);
	CHECK_STR(got.text, "LW:D0:TWO");
	CHECK_INT(store_label_cached(s, issued.dev_eui, &got), -ENOENT); /* taken */
	/* A device not issued gets no label made: its stored one is not read. */
	CHECK_INT(store_label_cached(s, r.dev_eui, &got), -ENOENT);
	CHECK_INT(store_label_cached(s, "00000000000000A8", &got), -ENOENT); /* no row */
	store_close(s);
}

/* 1,000 writes queued together share a handful of commits, and all complete. */
static void test_group_commit(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	enum { N = 1000 };
	struct tally t = {0};
	struct store_record r;
	for (unsigned i = 0; i < N; i++) {
		make_record(&r, 1000 + i, i % 2 == 0);
		t.submitting = 1;
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
		t.submitting = 0;
		CHECK_INT(store_audit(s, r.dev_eui, "Activate", 1000, (int32_t)i, "ok"), 0);
	}
	wait_for(&t, N);
	CHECK_INT(t.ok, N);
	CHECK_INT(t.sync_calls, 0);
	struct store_stats ss;
	store_stats(s, &ss);
	CHECK_INT(ss.ops, 2 * N);
	CHECK(ss.commits >= 1);
	CHECK(ss.commits < (2 * N) / 4);
	CHECK(ss.max_batch > 1);
	fprintf(stderr, "group commit: %llu writes in %llu commits (largest %llu)\n",
		(unsigned long long)ss.ops, (unsigned long long)ss.commits,
		(unsigned long long)ss.max_batch);
	uint64_t counts[STORE_N_STATES];
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_PENDING], N);
	CHECK_INT(counts[STORE_ISSUED], 0);

	json_t *j = store_status_json(s, counts);
	CHECK(j != NULL);
	CHECK_INT(json_integer_value(json_object_get(j, "ops")), 2 * N);
	CHECK_INT(json_integer_value(json_object_get(json_object_get(j, "rows"), "PENDING")), N);
	CHECK(json_real_value(json_object_get(j, "meanOpsPerCommit")) > 4.0);
	CHECK(json_is_null(json_object_get(j, "lastError")));
	CHECK_STR(json_string_value(json_object_get(j, "path")), dbpath);
	json_decref(j);
	store_close(s);
}

/* Counts audit entries handed to it. */
static int count_audit(const struct store_audit_entry *e, void *arg)
{
	int *n = arg;
	(*n)++;
	return 0;
}

/* Audit rows are kept per device, oldest first, with who and how. */
static void test_audit(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	struct tally t = {0};
	struct store_record r;
	make_record(&r, 9, false);
	CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	CHECK_INT(store_audit(s, r.dev_eui, "io.tpad.Station.Activate", 1001, 77, "issued"), 0);
	CHECK_INT(store_audit(s, "70b3d57ed0000009", "io.tpad.Station.Lookup", 1002, 78, "ok"), 0);
	CHECK_INT(store_audit(s, "70B3D57ED000000A", "io.tpad.Station.Lookup", 1003, 79, "ok"), 0);
	CHECK_INT(store_audit(s, "70B3D57ED00000", "x", 0, 0, "ok"), -EINVAL);
	CHECK_INT(store_audit(s, r.dev_eui, "", 0, 0, "ok"), -EINVAL);
	/* A last write with a callback: once it is done, the audit rows before it are too. */
	CHECK_INT(store_update(s, &r, on_done, &t), 0);
	wait_for(&t, 2);
	CHECK_INT(t.ok, 2);

	int n = 0;
	CHECK_INT(store_audit_list(s, NULL, 0, 0, count_audit, &n), 0);
	CHECK_INT(n, 3);
	n = 0;
	CHECK_INT(store_audit_list(s, "70b3d57ed0000009", 0, 0, count_audit, &n), 0);
	CHECK_INT(n, 2);
	n = 0;
	CHECK_INT(store_audit_list(s, r.dev_eui, 0, 1, count_audit, &n), 0);
	CHECK_INT(n, 1);
	n = 0;
	CHECK_INT(store_audit_list(s, "70B3D57ED000000B", 0, 0, count_audit, &n), 0);
	CHECK_INT(n, 0);
	store_close(s);
}

/* A listing collected into an array. */
struct listing {
	int n;
	char euis[64][17];
	int states[64];
};

/* Collect one listed record. */
static int collect(const struct store_record *r, void *arg)
{
	struct listing *l = arg;
	if (l->n < 64) {
		memcpy(l->euis[l->n], r->dev_eui, 17);
		l->states[l->n] = r->state;
	}
	l->n++;
	return 0;
}

/* Stop a listing after the first record with a marker value. */
static int stop_at_first(const struct store_record *r, void *arg)
{
	return 42;
}


/* Listing is ordered by DevEUI, filters by state and pages with after + limit. */
static void test_list(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	struct tally t = {0};
	for (unsigned i = 0; i < 25; i++) {
		struct store_record r;
		/* Inserted out of order on purpose. */
		make_record(&r, (i * 7) % 25, i % 3 == 0);
		r.state = i % 5 == 0 ? STORE_ISSUED : i % 5 == 1 ? STORE_FAILED : STORE_PENDING;
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	}
	wait_for(&t, 25);
	CHECK_INT(t.ok, 25);

	struct listing all = {0};
	char after[17] = "";
	for (int page = 0; page < 10; page++) {
		struct listing l = {0};
		CHECK_INT(store_list(s, -1, after, 10, collect, &l), 0);
		for (int i = 0; i < l.n && all.n < 64; i++)
			memcpy(all.euis[all.n++], l.euis[i], 17);
		if (l.n < 10)
			break;
		memcpy(after, l.euis[l.n - 1], 17);
	}
	CHECK_INT(all.n, 25);
	for (int i = 0; i < all.n; i++) {
		char want[17];
		snprintf(want, sizeof(want), "70B3D57ED0%06X", (unsigned)i & 0xffffffu);
		CHECK_STR(all.euis[i], want);
	}

	uint64_t counts[STORE_N_STATES];
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_ISSUED], 5);
	CHECK_INT(counts[STORE_FAILED], 5);
	CHECK_INT(counts[STORE_PENDING], 15);
	struct listing pending = {0};
	CHECK_INT(store_list(s, STORE_PENDING, NULL, 0, collect, &pending), 0);
	CHECK_INT(pending.n, 15);
	for (int i = 0; i < pending.n && i < 64; i++)
		CHECK_INT(pending.states[i], STORE_PENDING);
	for (int i = 1; i < pending.n && i < 64; i++)
		CHECK(strcmp(pending.euis[i - 1], pending.euis[i]) < 0);
	struct listing tail = {0};
	CHECK_INT(store_list(s, STORE_PENDING, pending.euis[9], 0, collect, &tail), 0);
	CHECK_INT(tail.n, 5);

	CHECK_INT(store_list(s, -1, NULL, 0, stop_at_first, NULL), 42);
	CHECK_INT(store_list(s, STORE_N_STATES, NULL, 0, collect, &tail), -EINVAL);
	CHECK_INT(store_list(s, -2, NULL, 0, collect, &tail), -EINVAL);

	/* The same without blocking: answered from the loop, never inside the call. */
	struct rows_done rd;
	ASK(base, rd, store_list_async(s, STORE_PENDING, NULL, 0, on_rows, &rd));
	CHECK_INT(rd.err, 0);
	CHECK_INT(rd.n, 15);
	CHECK_STR(rd.first, pending.euis[0]);
	CHECK_STR(rd.last, pending.euis[14]);
	ASK(base, rd, store_list_async(s, -1, all.euis[9], 10, on_rows, &rd));
	CHECK_INT(rd.n, 10);
	CHECK_STR(rd.first, all.euis[10]);
	ASK(base, rd, store_count_async(s, on_rows, &rd));
	CHECK_INT(rd.counts[STORE_PENDING], 15);
	CHECK_INT(rd.counts[STORE_ISSUED], 5);
	CHECK_INT(store_audit(s, all.euis[0], "test", 1, 2, "ok"), 0);
	struct store_record one;
	make_record(&one, 0, false);
	CHECK_INT(store_update(s, &one, on_done, &t), 0);
	wait_for(&t, 26);
	ASK(base, rd, store_audit_list_async(s, all.euis[0], 0, 0, on_rows, &rd));
	CHECK_INT(rd.err, 0);
	CHECK_INT(rd.n, 1);
	ASK(base, rd, store_attempt_list_async(s, all.euis[0], on_rows, &rd));
	CHECK_INT(rd.err, 0);
	uint8_t unknown[16] = {7};
	ASK(base, rd, store_key_pool_find_async(s, unknown, on_rows, &rd));
	CHECK_INT(rd.err, -ENOENT);
	CHECK_INT(store_list_async(s, -2, NULL, 0, on_rows, &rd), -EINVAL);
	CHECK_INT(store_attempt_list_async(s, "70B3", on_rows, &rd), -EINVAL);
	CHECK_INT(store_count_async(s, NULL, &rd), -EINVAL);
	store_close(s);
}

/* A full database fails the whole batch, writes nothing of it, and recovers. */
static void test_disk_full(void)
{
	remove_store();
	/* A commit window so that the whole burst lands in one transaction. */
	struct store *s = open_store(key, 300);
	if (!s)
		return;
	struct tally t = {0};
	struct store_record r;
	make_record(&r, 0, true);
	CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(t.ok, 1);

	store_test_set_max_pages(s, 1);
	enum { N = 300 };
	memset(&t, 0, sizeof(t));
	for (unsigned i = 1; i <= N; i++) {
		make_record(&r, i, true);
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	}
	wait_for(&t, N);
	CHECK_INT(t.calls, N);
	CHECK_INT(t.other, N);
	CHECK_INT(t.last_err, -ENOSPC);
	CHECK(strstr(t.last_reason, "full") != NULL);
	fprintf(stderr, "disk full reason: %s\n", t.last_reason);

	struct store_record got;
	int present = 0;
	for (unsigned i = 1; i <= N; i++) {
		make_record(&r, i, true);
		if (store_get(s, r.dev_eui, &got) == 0)
			present++;
	}
	CHECK_INT(present, 0);
	uint64_t counts[STORE_N_STATES];
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_PENDING], 1);

	struct store_stats ss;
	store_stats(s, &ss);
	CHECK(ss.batch_failures >= 1);
	CHECK_INT(ss.ops_failed, N);
	CHECK_INT(ss.last_error, -ENOSPC);
	json_t *j = store_status_json(s, counts);
	CHECK(json_is_string(json_object_get(j, "lastError")));
	json_decref(j);

	/* The disk "recovers": the same writes now go through. */
	store_test_set_max_pages(s, 0);
	memset(&t, 0, sizeof(t));
	for (unsigned i = 1; i <= N; i++) {
		make_record(&r, i, true);
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	}
	wait_for(&t, N);
	CHECK_INT(t.ok, N);
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_PENDING], N + 1);
	make_record(&r, N, true);
	CHECK_INT(store_get(s, r.dev_eui, &got), 0);
	CHECK(memcmp(got.app_key, r.app_key, 16) == 0);
	store_close(s);
}

static struct store *closing_store;
static int resubmit_result = 1;

/* During close, a callback that submits again is told the store is shutting down. */
static void on_done_during_close(int err, const char *reason, void *arg)
{
	on_done(err, reason, arg);
	if (resubmit_result == 1) {
		struct store_record r;
		make_record(&r, 999, false);
		resubmit_result = store_insert(closing_store, &r, on_done, arg);
	}
}

/* Close commits what is queued and runs every callback before returning. */
static void test_close_drains(void)
{
	remove_store();
	struct store *s = open_store(key, 50);
	if (!s)
		return;
	closing_store = s;
	struct tally t = {0};
	enum { N = 50 };
	for (unsigned i = 0; i < N; i++) {
		struct store_record r;
		make_record(&r, 300 + i, false);
		CHECK_INT(store_insert(s, &r, on_done_during_close, &t), 0);
	}
	store_close(s);
	CHECK_INT(t.calls, N);
	CHECK_INT(t.ok, N);
	CHECK_INT(resubmit_result, -ESHUTDOWN);

	s = open_store(key, 0);
	if (!s)
		return;
	uint64_t counts[STORE_N_STATES];
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_PENDING], N);
	store_close(s);
	store_close(NULL);
}

/* Fill the file system holding path with a filler file until it is full. */
static int fill_disk(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		return -errno;
	char block[4096];
	memset(block, 0xEE, sizeof(block));
	for (;;) {
		ssize_t n = write(fd, block, sizeof(block));
		if (n < 0) {
			int e = errno;
			close(fd);
			return e == ENOSPC ? 0 : -e;
		}
		if (n == 0)
			break;
	}
	close(fd);
	return 0;
}

/* In a child with its own mount namespace: a really full tmpfs under the store. */
static void real_disk_full_child(const char *mnt)
{
	if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tpad-test", mnt, "tmpfs", 0, "size=4m,mode=0700") < 0)
		_exit(77);
	/* The parent's loop is not shared across fork(): use a fresh one. */
	event_base_free(base);
	base = event_base_new();
	if (!base)
		_exit(1);
	snprintf(dbpath, sizeof(dbpath), "%s/tpad.db", mnt);
	struct store *s = open_store(key, 300);
	if (!s)
		_exit(1);
	struct tally t = {0};
	struct store_record r;
	make_record(&r, 0, true);
	CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	wait_for(&t, 1);
	CHECK_INT(t.ok, 1);

	char filler[320];
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	CHECK_INT(fill_disk(filler), 0);
	enum { N = 400 };
	memset(&t, 0, sizeof(t));
	for (unsigned i = 1; i <= N; i++) {
		make_record(&r, i, true);
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	}
	wait_for(&t, N);
	CHECK_INT(t.calls, N);
	CHECK_INT(t.ok, 0);
	CHECK_INT(t.last_err, -ENOSPC);
	fprintf(stderr, "full tmpfs reason: %s\n", t.last_reason);
	uint64_t counts[STORE_N_STATES];
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_PENDING], 1);

	/* Space comes back: the writer is still there and the same writes succeed. */
	CHECK_INT(unlink(filler), 0);
	memset(&t, 0, sizeof(t));
	for (unsigned i = 1; i <= N; i++) {
		make_record(&r, i, true);
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
	}
	wait_for(&t, N);
	CHECK_INT(t.ok, N);
	CHECK_INT(store_count(s, counts), 0);
	CHECK_INT(counts[STORE_PENDING], N + 1);
	store_close(s);

	s = open_store(key, 0);
	if (s) {
		CHECK_INT(store_count(s, counts), 0);
		CHECK_INT(counts[STORE_PENDING], N + 1);
		store_close(s);
	}
	event_base_free(base);
	_exit(tap_failed ? 1 : 0);
}

/* A real ENOSPC from the file system (root only, in a private mount namespace). */
static void test_real_disk_full(void)
{
	if (geteuid() != 0) {
		printf("# skipped real disk full: needs root for a tmpfs mount\n");
		return;
	}
	char mnt[270];
	snprintf(mnt, sizeof(mnt), "%s/full", dir);
	CHECK_INT(mkdir(mnt, 0700), 0);
	fflush(NULL);
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0)
		real_disk_full_child(mnt);
	int status = 0;
	CHECK_INT(waitpid(pid, &status, 0), pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		printf("# skipped real disk full: cannot mount a tmpfs here\n");
	else
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	rmdir(mnt);
}

/* A full write queue refuses more at once (-EAGAIN) without calling back. */
static void test_queue_limit(void)
{
	remove_store();
	struct store_options o = {.path = dbpath,
				  .key = key,
				  .key_len = STORE_KEY_LEN,
				  .commit_delay_ms = 300,
				  .max_queue = 4};
	struct store *s = NULL;
	char err[256] = "";
	CHECK_INT(store_open(base, &o, &s, err, sizeof(err)), 0);
	if (!s)
		return;
	struct tally t = {0};
	int accepted = 0, refused = 0;
	for (unsigned i = 0; i < 10; i++) {
		struct store_record r;
		make_record(&r, 500 + i, false);
		int e = store_insert(s, &r, on_done, &t);
		if (e == 0)
			accepted++;
		else if (e == -EAGAIN)
			refused++;
	}
	CHECK_INT(accepted, 4);
	CHECK_INT(refused, 6);
	wait_for(&t, accepted);
	CHECK_INT(t.ok, 4);
	CHECK_INT(t.calls, 4);
	store_close(s);
}

/* State names round-trip and unknown ones are refused. */
static void test_state_names(void)
{
	enum store_state st;
	CHECK_STR(store_state_name(STORE_ISSUED), "ISSUED");
	CHECK(store_state_name((enum store_state)9) == NULL);
	CHECK_INT(store_state_parse("FAILED", &st), 0);
	CHECK_INT(st, STORE_FAILED);
	CHECK_INT(store_state_parse("failed", &st), -EINVAL);
	CHECK_INT(store_state_parse(NULL, &st), -EINVAL);
}

/* The size of the store's WAL file, -1 when there is none. */
static long long wal_size(void)
{
	char wal[320];
	struct stat st;
	snprintf(wal, sizeof(wal), "%s-wal", dbpath);
	return stat(wal, &st) == 0 ? (long long)st.st_size : -1;
}

/*
 * A WAL that grew while a reader held an old snapshot (a long Export, a backup, a
 * sqlite3 shell) goes back to at most 8 MiB once the reader is gone and the WAL has been
 * copied back: journal_size_limit, as tpas's journal has.
 */
static void test_wal_shrinks_after_a_burst(void)
{
	remove_store();
	struct store *s = open_store(key, 0);
	if (!s)
		return;
	sqlite3 *reader = NULL;
	CHECK_INT(sqlite3_open_v2(dbpath, &reader, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	CHECK_INT(
	    sqlite3_exec(reader, "BEGIN; SELECT COUNT(*) FROM sqlite_master", NULL, NULL, NULL),
	    SQLITE_OK);
	static struct store_label l;
	memset(&l, 0, sizeof(l));
	snprintf(l.text, sizeof(l.text), "LW:D0:BURST");
	l.ec = 1;
	l.matrix_len = 5;
	snprintf(l.image_opts, sizeof(l.image_opts), "png/4/4/M");
	l.image_len = sizeof(l.image);
	unsigned n = 0;
	while (wal_size() < 12LL << 20 && n < 4000) {
		struct store_record r;
		make_record(&r, 20000 + n++, false);
		for (size_t i = 0; i < l.image_len; i++)
			l.image[i] = (uint8_t)(i * 131 + n); /* another image each time */
		struct tally t = {0};
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
		CHECK_INT(store_label_put(s, r.dev_eui, &l), 0);
		wait_for(&t, 1);
	}
	CHECK(wal_size() >= 12LL << 20);
	sqlite3_exec(reader, "COMMIT", NULL, NULL, NULL);
	sqlite3_close(reader);
	/* Enough commits for a checkpoint to copy it all back, then one to restart the WAL. */
	for (unsigned i = 0; i < 1100 && wal_size() > 8LL << 20; i++) {
		struct store_record r;
		make_record(&r, 30000 + i, false);
		struct tally t = {0};
		CHECK_INT(store_insert(s, &r, on_done, &t), 0);
		wait_for(&t, 1);
	}
	long long after = wal_size();
	CHECK(after >= 0 && after <= 8LL << 20);
	if (after > 8LL << 20)
		fprintf(stderr, "# the WAL is still %lld bytes\n", after);
	store_close(s);
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(dir, sizeof(dir), "%s/test-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(dbpath, sizeof(dbpath), "%s/tpad.db", dir);
	for (int i = 0; i < STORE_KEY_LEN; i++)
		key[i] = (uint8_t)(0x30 + i);
	base = event_base_new();
	if (!base)
		return 1;

	test_state_names();
	test_persistence();
	test_insert_update();
	test_no_clear_key();
	test_wrong_key();
	test_schema_version();
	test_labels();
	test_group_commit();
	test_audit();
	test_list();
	test_disk_full();
	test_close_drains();
	test_queue_limit();
	test_real_disk_full();
	test_wal_shrinks_after_a_burst();

	remove_store();
	rmdir(dir);
	event_base_free(base);
	return tap_done();
}
