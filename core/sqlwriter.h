/* sqlwriter: a SQLite connection on its own thread that commits queued jobs in groups. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

struct event_base;
struct sqlwriter;

/*
 * PRAGMA journal_size_limit of the writer's connection (and of its owner's, and of
 * tpad's SQLite store): once a checkpoint has emptied the WAL, its file is cut back to
 * this size. Without it the file keeps the size of the largest it ever grew to (a long
 * reader, a large removal) until the database is closed.
 */
#define SQLWRITER_WAL_LIMIT "8388608"

/*
 * One unit of work, embedded in the caller's own structure (container_of to get it back).
 * The writer links jobs through next; err and the caller's fields are set by apply().
 */
struct sqlwriter_job {
	struct sqlwriter_job *next;
	int err;      /* after done: 0, the job's own error, or the batch's commit error */
	unsigned tag; /* the owner's, for jobs of more than one kind; the writer never reads it */
};

/*
 * Run on the writer thread, inside the batch's transaction (BEGIN IMMEDIATE), for each
 * job in queue order. Return 0 (the job is in the batch; a job may record its own outcome,
 * e.g. a duplicate, in its fields) or a negative errno: the whole batch is then rolled back
 * and every job of it gets that error (nothing of the batch is kept).
 */
typedef int sqlwriter_apply_fn(sqlite3 *db, struct sqlwriter_job *job, void *arg);

/*
 * Run on the loop thread once batches are committed (fsync done: synchronous=FULL) or
 * failed, with their jobs in queue order (linked by next), each with its err. The callee
 * owns the jobs from then on.
 */
typedef void sqlwriter_done_fn(struct sqlwriter_job *jobs, void *arg);

/*
 * Run on the writer thread after each batch's jobs were handed back (its COMMIT or
 * ROLLBACK done, outside any transaction), with the batch's error (0: committed): for
 * what the owner keeps on the writer's side of what was committed.
 */
typedef void sqlwriter_settled_fn(sqlite3 *db, int err, void *arg);

/* Prepare (init) and finalize (fini) what apply() uses; run on the writer's connection. */
typedef int sqlwriter_conn_fn(sqlite3 *db, void *arg);

struct sqlwriter_options {
	const char *path;	 /* the database file (must exist: WAL is set up by its owner) */
	size_t max_batch;	 /* jobs per transaction at most (0: 1024) */
	int busy_timeout_ms;	 /* when another connection holds the write lock (0: 5000) */
	int checkpoint_frames;	 /* checkpoint once the WAL holds this many frames (0: 1000) */
	sqlwriter_conn_fn *init; /* after open, before the thread starts; may be NULL */
	sqlwriter_conn_fn *fini; /* before close, after the thread ended; may be NULL */
	sqlwriter_apply_fn *apply;
	sqlwriter_settled_fn *settled; /* may be NULL */
	sqlwriter_done_fn *done;
	void *arg;
};

/* Counters since start (read on the loop thread). */
struct sqlwriter_stats {
	uint64_t jobs;	      /* jobs committed or failed */
	uint64_t commits;     /* transactions committed (one fsync each) */
	uint64_t failures;    /* transactions rolled back */
	uint64_t max_batch;   /* the most jobs one transaction held */
	uint64_t checkpoints; /* WAL checkpoints run (after a batch was handed back) */
};

/*
 * Open a second connection to path (WAL, synchronous=FULL: every commit is fsynced),
 * call init, and start the thread; done() runs from base's loop. On failure a negative
 * errno and one line in err. The writer checkpoints the WAL itself (PASSIVE), after it has
 * handed a batch back rather than inside its COMMIT, so a checkpoint never delays the
 * answers of the batch that triggered it; other connections to the file should turn their
 * automatic checkpoints off (PRAGMA wal_autocheckpoint = 0, or a wal_hook of their own)
 * so that they never run one, and ask for one with sqlwriter_checkpoint().
 */
int sqlwriter_new(struct event_base *base, const struct sqlwriter_options *o,
		  struct sqlwriter **ret, char *err, size_t errlen);

/*
 * Queue a list of jobs (linked by next, ending in NULL) for the next batch. Never blocks
 * on the database. -ESHUTDOWN once sqlwriter_drain() has run (the jobs stay the caller's).
 */
int sqlwriter_submit(struct sqlwriter *w, struct sqlwriter_job *jobs);

/*
 * The owner's own connection is about to write (a transaction of its own, on its thread):
 * until sqlwriter_yield_end(), the writer starts no transaction, so that connection waits
 * for the one the writer may be in, not for a stream of them (SQLite's busy handler is no
 * queue: it may miss each short gap between two of the writer's transactions). Calls nest.
 */
void sqlwriter_yield(struct sqlwriter *w);
void sqlwriter_yield_end(struct sqlwriter *w);

/*
 * Have the writer thread checkpoint the WAL (PASSIVE) once nothing is queued: for the
 * owner of another connection to the file, whose own commits (wal_autocheckpoint = 0)
 * never run one, so that no checkpoint runs on its thread. Never blocks on the database.
 */
void sqlwriter_checkpoint(struct sqlwriter *w);

/*
 * Whether a checkpoint asked with sqlwriter_checkpoint() has yet to finish. A connection
 * that writes much in a row (a removal in steps) waits for it between its transactions:
 * a checkpoint that runs while it writes cannot finish, and the WAL would grow.
 */
bool sqlwriter_checkpointing(struct sqlwriter *w);

/*
 * Wait until everything queued is committed, stop the thread, and run done() for what is
 * still unreported, before returning. Later submits fail. Idempotent.
 */
void sqlwriter_drain(struct sqlwriter *w);

/* Drain, call fini, close. Accepts NULL; returns NULL. */
struct sqlwriter *sqlwriter_free(struct sqlwriter *w);

void sqlwriter_get_stats(struct sqlwriter *w, struct sqlwriter_stats *ret);
