/* test-sqlwriter: the group-commit writer thread (batches, rollback of a failed batch, drain). */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "sqlwriter.h"
#include "tap.h"

static char dir[] = "/tmp/test-sqlwriter-XXXXXX";

struct job {
	struct sqlwriter_job job; /* first */
	int k;
	bool fail;
	bool on_writer; /* apply ran on another thread than the test's */
};

struct ctx {
	sqlite3_stmt *insert;
	struct event_base *base;
	pthread_t main_thread;
	struct job *done[32];
	int n_done, calls, want;
	/* settled(): written on the writer thread, read once it has been joined (drain). */
	int settled[8], n_settled;
	bool settled_off_writer, settled_in_transaction;
	/* A job that asks for a checkpoint and queues the next as it is applied (writer). */
	struct sqlwriter *w;
	int ask_at;
	struct job *then;
	uint64_t checkpoints_seen; /* by the job after it, as it was applied */
};

static int init_cb(sqlite3 *db, void *arg)
{
	struct ctx *c = arg;
	return sqlite3_prepare_v2(db, "INSERT INTO t (k) VALUES (?)", -1, &c->insert, NULL) ==
		       SQLITE_OK
		   ? 0
		   : -EIO;
}

static int fini_cb(sqlite3 *db, void *arg)
{
	struct ctx *c = arg;
	sqlite3_finalize(c->insert);
	c->insert = NULL;
	return 0;
}

static int apply_cb(sqlite3 *db, struct sqlwriter_job *job, void *arg)
{
	struct ctx *c = arg;
	struct job *j = (struct job *)job;
	j->on_writer = !pthread_equal(pthread_self(), c->main_thread);
	if (j->fail)
		return -EIO;
	struct sqlwriter_stats st;
	if (c->ask_at && j->k == c->ask_at) {
		sqlwriter_checkpoint(c->w);
		sqlwriter_submit(c->w, &c->then->job); /* the queue is not empty after this batch */
	} else if (c->ask_at && j->k == c->ask_at + 1) {
		sqlwriter_get_stats(c->w, &st);
		c->checkpoints_seen = st.checkpoints;
	}
	sqlite3_reset(c->insert);
	sqlite3_bind_int(c->insert, 1, j->k);
	int rc = sqlite3_step(c->insert);
	sqlite3_reset(c->insert);
	return rc == SQLITE_DONE ? 0 : -EEXIST;
}

static void settled_cb(sqlite3 *db, int err, void *arg)
{
	struct ctx *c = arg;
	if (c->n_settled < 8)
		c->settled[c->n_settled] = err;
	c->n_settled++;
	if (pthread_equal(pthread_self(), c->main_thread))
		c->settled_off_writer = true;
	if (!sqlite3_get_autocommit(db))
		c->settled_in_transaction = true;
}

static void done_cb(struct sqlwriter_job *jobs, void *arg)
{
	struct ctx *c = arg;
	c->calls++;
	for (struct sqlwriter_job *j = jobs; j; j = j->next)
		if (c->n_done < 32)
			c->done[c->n_done++] = (struct job *)j;
	if (c->n_done >= c->want)
		event_base_loopbreak(c->base);
}

/* Rows in t, seen through a connection of its own (what is committed). */
static int rows(const char *path, const char *where)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *s = NULL;
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT COUNT(*) FROM t WHERE %s", where);
	int n = -1;
	if (sqlite3_open(path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, sql, -1, &s, NULL) == SQLITE_OK && sqlite3_step(s) == SQLITE_ROW)
		n = sqlite3_column_int(s, 0);
	sqlite3_finalize(s);
	sqlite3_close(db);
	return n;
}

/* A connection's WAL size in frames after each of its commits. */
static int frames_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	*(int *)arg = frames;
	return SQLITE_OK;
}

static struct sqlwriter *start(struct ctx *c, const char *path, size_t max_batch,
			       int checkpoint_frames)
{
	char err[256];
	const struct sqlwriter_options o = {.path = path,
					    .max_batch = max_batch,
					    .checkpoint_frames = checkpoint_frames,
					    .init = init_cb,
					    .fini = fini_cb,
					    .apply = apply_cb,
					    .settled = settled_cb,
					    .done = done_cb,
					    .arg = c};
	struct sqlwriter *w = NULL;
	CHECK_INT(sqlwriter_new(c->base, &o, &w, err, sizeof(err)), 0);
	return w;
}

/* Link n jobs k0.. into a list. */
static struct sqlwriter_job *chain(struct job *j, int n, int k0)
{
	for (int i = 0; i < n; i++) {
		memset(&j[i], 0, sizeof(j[i]));
		j[i].k = k0 + i;
		j[i].job.next = i + 1 < n ? &j[i + 1].job : NULL;
	}
	return &j[0].job;
}

/* Run the loop for ms milliseconds, whatever comes back. */
static void run_for(struct ctx *c, int ms)
{
	c->want = 1 << 30;
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_base_loopexit(c->base, &tv);
	event_base_dispatch(c->base);
}

static void run_until(struct ctx *c, int want)
{
	c->want = want;
	if (c->n_done < want)
		event_base_dispatch(c->base);
}

int main(void)
{
	if (!mkdtemp(dir))
		return 2;
	char path[256], err[256];
	snprintf(path, sizeof(path), "%s/w.db", dir);
	sqlite3 *db = NULL;
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db, "PRAGMA journal_mode = WAL; CREATE TABLE t (k INTEGER UNIQUE)",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	sqlite3_close(db);

	struct ctx c = {.base = event_base_new(), .main_thread = pthread_self()};
	struct sqlwriter *w = start(&c, path, 0, 0);

	/* One list: one transaction, handed back in order, on the loop, once committed. */
	struct job a[3];
	CHECK_INT(sqlwriter_submit(w, chain(a, 3, 1)), 0);
	run_until(&c, 3);
	CHECK_INT(c.n_done, 3);
	for (int i = 0; i < 3 && i < c.n_done; i++) {
		CHECK(c.done[i] == &a[i]);
		CHECK_INT(a[i].job.err, 0);
		CHECK(a[i].on_writer);
	}
	CHECK_INT(rows(path, "k BETWEEN 1 AND 3"), 3);
	struct sqlwriter_stats st;
	sqlwriter_get_stats(w, &st);
	CHECK_INT(st.commits, 1);
	CHECK_INT(st.jobs, 3);
	CHECK_INT(st.max_batch, 3);
	CHECK_INT(st.checkpoints, 0); /* a few frames: under the default 1000 */

	/* A job fails: its whole batch is rolled back and every job of it gets the error. */
	struct job b[3];
	chain(b, 3, 10);
	b[1].fail = true;
	c.n_done = 0;
	CHECK_INT(sqlwriter_submit(w, &b[0].job), 0);
	run_until(&c, 3);
	for (int i = 0; i < 3; i++)
		CHECK_INT(b[i].job.err, -EIO);
	CHECK_INT(rows(path, "k >= 10"), 0);
	sqlwriter_get_stats(w, &st);
	CHECK_INT(st.failures, 1);
	CHECK_INT(st.commits, 1);

	/* A constraint failure is the job's error, and again the batch's. */
	struct job d[2];
	chain(d, 2, 20);
	d[1].k = 1; /* already in */
	c.n_done = 0;
	CHECK_INT(sqlwriter_submit(w, &d[0].job), 0);
	run_until(&c, 2);
	CHECK_INT(d[0].job.err, -EEXIST);
	CHECK_INT(rows(path, "k = 20"), 0);

	/* Drain commits what is queued and reports it before returning; later submits fail. */
	struct job e[2];
	c.n_done = 0;
	CHECK_INT(sqlwriter_submit(w, chain(e, 2, 30)), 0);
	sqlwriter_drain(w);
	CHECK_INT(c.n_done, 2);
	CHECK_INT(e[1].job.err, 0);
	CHECK_INT(rows(path, "k >= 30"), 2);
	struct job late[1];
	CHECK_INT(sqlwriter_submit(w, chain(late, 1, 40)), -ESHUTDOWN);
	sqlwriter_drain(w); /* again: nothing */
	/* settled() once per batch, in order, with its outcome, on the writer thread, after
	 * its COMMIT or ROLLBACK. */
	CHECK_INT(c.n_settled, 4);
	CHECK_INT(c.settled[0], 0);
	CHECK_INT(c.settled[1], -EIO);
	CHECK_INT(c.settled[2], -EEXIST);
	CHECK_INT(c.settled[3], 0);
	CHECK(!c.settled_off_writer);
	CHECK(!c.settled_in_transaction);
	w = sqlwriter_free(w);
	CHECK(c.insert == NULL); /* fini ran */

	/*
	 * max_batch splits a long queue into several transactions; with a WAL threshold of one
	 * frame, the writer checkpoints after each of them (and the rows stay).
	 */
	w = start(&c, path, 2, 1);
	struct job f[5];
	c.n_done = 0;
	CHECK_INT(sqlwriter_submit(w, chain(f, 5, 50)), 0);
	run_until(&c, 5);
	sqlwriter_drain(w); /* the checkpoint after the last batch may still be running */
	sqlwriter_get_stats(w, &st);
	CHECK_INT(st.commits, 3);
	CHECK_INT(st.max_batch, 2);
	CHECK_INT(st.checkpoints, 3);
	CHECK_INT(rows(path, "k >= 50"), 5);
	for (int i = 0; i < 5 && i < c.n_done; i++)
		CHECK(c.done[i] == &f[i]);
	sqlwriter_free(w);

	/*
	 * Another connection's owner asks for a checkpoint: the writer runs it once nothing is
	 * queued, and says so until it is done. The WAL that connection wrote (its own commits
	 * never checkpoint) is then copied back, so its next write starts the WAL again from
	 * the top: a few frames, not the hundreds before.
	 */
	w = start(&c, path, 0, 0);
	sqlite3 *other = NULL;
	int frames = -1;
	CHECK_INT(sqlite3_open(path, &other), SQLITE_OK);
	sqlite3_wal_hook(other, frames_hook, &frames); /* (no automatic checkpoint either) */
	CHECK_INT(
	    sqlite3_exec(other,
			 "CREATE TABLE IF NOT EXISTS big (b);"
			 "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE"
			 " i < 300) INSERT INTO big SELECT randomblob(4000) FROM n",
			 NULL, NULL, NULL),
	    SQLITE_OK);
	CHECK(frames > 300);
	sqlwriter_get_stats(w, &st);
	uint64_t before = st.checkpoints;
	sqlwriter_checkpoint(w);
	for (int i = 0; i < 5000 && sqlwriter_checkpointing(w); i++)
		usleep(1000);
	CHECK(!sqlwriter_checkpointing(w));
	sqlwriter_get_stats(w, &st);
	CHECK_INT(st.checkpoints, before + 1);
	CHECK_INT(sqlite3_exec(other, "INSERT INTO big VALUES (1)", NULL, NULL, NULL), SQLITE_OK);
	CHECK(frames >= 1 && frames < 10);
	sqlite3_close(other);
	/* Asked while jobs keep coming: run after the batch that was running, not put off. */
	struct job g[2];
	chain(g, 1, 900);
	chain(&g[1], 1, 901);
	c.w = w;
	c.ask_at = 900;
	c.then = &g[1];
	c.n_done = 0;
	sqlwriter_get_stats(w, &st);
	before = st.checkpoints;
	CHECK_INT(sqlwriter_submit(w, &g[0].job), 0);
	run_until(&c, 2);
	CHECK_INT(c.checkpoints_seen, before + 1);
	c.ask_at = 0;
	sqlwriter_free(w);

	/*
	 * While the owner's connection writes (sqlwriter_yield(), nested here), the writer
	 * starts no transaction: a job queued meanwhile is committed only once the last yield
	 * ended.
	 */
	w = start(&c, path, 0, 0);
	sqlwriter_yield(w);
	sqlwriter_yield(w);
	struct job y[1];
	c.n_done = 0;
	CHECK_INT(sqlwriter_submit(w, chain(y, 1, 950)), 0);
	run_for(&c, 200);
	CHECK_INT(c.n_done, 0);
	CHECK_INT(rows(path, "k = 950"), 0);
	sqlwriter_yield_end(w);
	run_for(&c, 100);
	CHECK_INT(c.n_done, 0);
	sqlwriter_yield_end(w);
	run_until(&c, 1);
	CHECK_INT(c.n_done, 1);
	CHECK_INT(rows(path, "k = 950"), 1);
	sqlwriter_free(w);

	/* Not there, or no callbacks: a clear error, no writer. */
	const struct sqlwriter_options bad = {
	    .path = "/nonexistent/dir/w.db", .apply = apply_cb, .done = done_cb, .arg = &c};
	w = NULL;
	CHECK(sqlwriter_new(c.base, &bad, &w, err, sizeof(err)) < 0);
	CHECK(w == NULL);
	CHECK(strstr(err, "/nonexistent/dir/w.db") != NULL);
	const struct sqlwriter_options none = {.path = path};
	CHECK_INT(sqlwriter_new(c.base, &none, &w, err, sizeof(err)), -EINVAL);
	CHECK(sqlwriter_free(NULL) == NULL);

	event_base_free(c.base);
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return tap_done();
}
