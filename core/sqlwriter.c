/* sqlwriter: a SQLite connection on its own thread that commits queued jobs in groups. */
#include "sqlwriter.h"
#include "sqlerr.h"
#include "thread.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#define DEFAULT_MAX_BATCH 1024
#define DEFAULT_BUSY_MS 5000
#define DEFAULT_CHECKPOINT_FRAMES 1000 /* SQLite's own automatic checkpoint threshold */

enum { TX_BEGIN, TX_COMMIT, TX_ROLLBACK, TX_COUNT };

static const char *const tx_sql[TX_COUNT] = {"BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"};

struct sqlwriter {
	sqlite3 *db;
	sqlite3_stmt *tx[TX_COUNT]; /* prepared once: each batch's transaction, not parsed again */
	struct sqlwriter_options o;
	pthread_t thread;
	bool started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	/* Under lock. */
	struct sqlwriter_job *queue, **queue_tail;
	struct sqlwriter_job *done, **done_tail;
	bool stop;
	bool checkpoint_asked;	 /* sqlwriter_checkpoint(): once nothing is queued */
	bool checkpoint_running; /* that one, until it is done */
	unsigned yields;	 /* sqlwriter_yield() calls not yet ended: no transaction starts */
	struct sqlwriter_stats stats;
	int wal_frames; /* the WAL's size after the last commit (writer thread only) */
	/* Loop side. */
	int efd;
	struct event *ev;
	bool drained;
};

static int wexec(struct sqlwriter *w, const char *sql)
{
	return sql_errno(w->db, sqlite3_exec(w->db, sql, NULL, NULL, NULL));
}

/* Run one of the prepared transaction statements. */
static int tx(struct sqlwriter *w, int which)
{
	sqlite3_stmt *s = w->tx[which];
	int rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_DONE ? 0 : sql_errno(w->db, rc);
}

/* One transaction for the batch; every job's err is set. Returns the batch's error. */
static int run_batch(struct sqlwriter *w, struct sqlwriter_job *batch)
{
	int r = tx(w, TX_BEGIN);
	for (struct sqlwriter_job *j = batch; r == 0 && j; j = j->next) {
		j->err = 0;
		r = w->o.apply(w->db, j, w->o.arg);
	}
	if (r == 0) {
		r = tx(w, TX_COMMIT);
		if (r < 0 && !sqlite3_get_autocommit(w->db))
			tx(w, TX_ROLLBACK);
	} else if (!sqlite3_get_autocommit(w->db)) {
		tx(w, TX_ROLLBACK);
	}
	if (r < 0)
		for (struct sqlwriter_job *j = batch; j; j = j->next)
			j->err = r;
	return r;
}

/* After each commit on the writer's connection: the WAL's size in frames. */
static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
	struct sqlwriter *w = arg;
	w->wal_frames = frames;
	return SQLITE_OK;
}

static void *writer_main(void *arg)
{
	struct sqlwriter *w = arg;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while ((!w->queue && !w->stop && !w->checkpoint_asked) || (w->yields && !w->stop))
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->queue && w->checkpoint_asked) {
			/* Asked by another connection's owner, whose own commits never run one. */
			w->checkpoint_asked = false;
			w->checkpoint_running = true;
			pthread_mutex_unlock(&w->lock);
			sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
						  NULL);
			w->wal_frames = 0;
			pthread_mutex_lock(&w->lock);
			w->checkpoint_running = false;
			w->stats.checkpoints++;
			continue;
		}
		if (!w->queue)
			break;
		/* Take up to max_batch jobs: whatever queued while the last commit ran. */
		struct sqlwriter_job *batch = w->queue, *last = batch;
		size_t n = 1;
		while (last->next && n < w->o.max_batch) {
			last = last->next;
			n++;
		}
		w->queue = last->next;
		if (!w->queue)
			w->queue_tail = &w->queue;
		last->next = NULL;
		pthread_mutex_unlock(&w->lock);

		int r = run_batch(w, batch);

		pthread_mutex_lock(&w->lock);
		*w->done_tail = batch;
		w->done_tail = &last->next;
		w->stats.jobs += n;
		if (r == 0)
			w->stats.commits++;
		else
			w->stats.failures++;
		if (n > w->stats.max_batch)
			w->stats.max_batch = n;
		/* One asked for is run here too, or a queue never empty would put it off. */
		bool asked = w->checkpoint_asked;
		w->checkpoint_asked = false;
		w->checkpoint_running = asked;
		pthread_mutex_unlock(&w->lock);
		uint64_t one = 1;
		ssize_t wr = write(w->efd, &one, sizeof(one));
		(void)wr; /* the counter only fails when it would overflow: then it is set anyway */
		if (w->o.settled) { /* (it may write: not while the owner's connection does) */
			pthread_mutex_lock(&w->lock);
			while (w->yields && !w->stop)
				pthread_cond_wait(&w->cond, &w->lock);
			pthread_mutex_unlock(&w->lock);
			w->o.settled(w->db, r, w->o.arg);
		}
		/* The batch is answered: now copy the WAL back into the database if it is long. */
		bool checkpoint = asked || w->wal_frames >= w->o.checkpoint_frames;
		if (checkpoint) {
			sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL,
						  NULL);
			w->wal_frames = 0;
		}
		pthread_mutex_lock(&w->lock);
		w->checkpoint_running = false;
		if (checkpoint)
			w->stats.checkpoints++;
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Hand what was committed to done(), on the loop thread. */
static void deliver(struct sqlwriter *w)
{
	pthread_mutex_lock(&w->lock);
	struct sqlwriter_job *list = w->done;
	w->done = NULL;
	w->done_tail = &w->done;
	pthread_mutex_unlock(&w->lock);
	if (list)
		w->o.done(list, w->o.arg);
}

static void efd_cb(evutil_socket_t fd, short what, void *arg)
{
	uint64_t v;
	ssize_t n = read(fd, &v, sizeof(v));
	(void)n; /* EAGAIN: another wake-up already read it; the list is what counts */
	deliver(arg);
}

int sqlwriter_new(struct event_base *base, const struct sqlwriter_options *o,
		  struct sqlwriter **ret, char *err, size_t errlen)
{
	if (!base || !o || !o->path || !o->apply || !o->done) {
		snprintf(err, errlen, "sqlwriter: missing option");
		return -EINVAL;
	}
	struct sqlwriter *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	w->o = *o;
	if (!w->o.max_batch)
		w->o.max_batch = DEFAULT_MAX_BATCH;
	if (w->o.checkpoint_frames <= 0)
		w->o.checkpoint_frames = DEFAULT_CHECKPOINT_FRAMES;
	w->queue_tail = &w->queue;
	w->done_tail = &w->done;
	w->efd = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	int r;
	int rc =
	    sqlite3_open_v2(o->path, &w->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		r = sql_errno(w->db, rc);
		snprintf(err, errlen, "%s: %s", o->path,
			 w->db ? sqlite3_errmsg(w->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(w->db, o->busy_timeout_ms ? o->busy_timeout_ms : DEFAULT_BUSY_MS);
	/* synchronous is per connection: FULL here too, so each COMMIT is fsynced. */
	if ((r = wexec(w, "PRAGMA journal_mode = WAL")) < 0 ||
	    (r = wexec(w, "PRAGMA synchronous = FULL")) < 0 ||
	    (r = wexec(w, "PRAGMA wal_autocheckpoint = 0")) < 0 ||
	    (r = wexec(w, "PRAGMA journal_size_limit = " SQLWRITER_WAL_LIMIT)) < 0) {
		snprintf(err, errlen, "%s: cannot set up the writer: %s", o->path,
			 sqlite3_errmsg(w->db));
		goto fail;
	}
	for (int i = 0; i < TX_COUNT; i++) {
		rc = sqlite3_prepare_v3(w->db, tx_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &w->tx[i],
					NULL);
		if (rc != SQLITE_OK) {
			r = sql_errno(w->db, rc);
			snprintf(err, errlen, "%s: cannot prepare %s: %s", o->path, tx_sql[i],
				 sqlite3_errmsg(w->db));
			goto fail;
		}
	}
	/* After wal_autocheckpoint = 0, which would replace it. */
	sqlite3_wal_hook(w->db, wal_hook, w);
	if (o->init && (r = o->init(w->db, o->arg)) < 0) {
		snprintf(err, errlen, "%s: cannot prepare the writer: %s", o->path,
			 sqlite3_errmsg(w->db));
		goto fail;
	}
	w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (w->efd < 0) {
		r = -errno;
		snprintf(err, errlen, "eventfd: %s", strerror(-r));
		goto fail;
	}
	w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, efd_cb, w);
	if (!w->ev || event_add(w->ev, NULL) < 0) {
		r = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	rc = thread_start(&w->thread, writer_main, w, "sqlwriter");
	if (rc != 0) {
		r = -rc;
		snprintf(err, errlen, "cannot start the writer thread: %s", strerror(rc));
		goto fail;
	}
	w->started = true;
	*ret = w;
	return 0;
fail:
	sqlwriter_free(w);
	return r < 0 ? r : -EIO;
}

int sqlwriter_submit(struct sqlwriter *w, struct sqlwriter_job *jobs)
{
	if (!jobs)
		return 0;
	struct sqlwriter_job *last = jobs;
	while (last->next)
		last = last->next;
	pthread_mutex_lock(&w->lock);
	if (w->stop || !w->started) {
		pthread_mutex_unlock(&w->lock);
		return -ESHUTDOWN;
	}
	bool was_empty = !w->queue;
	*w->queue_tail = jobs;
	w->queue_tail = &last->next;
	if (was_empty)
		pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void sqlwriter_checkpoint(struct sqlwriter *w)
{
	pthread_mutex_lock(&w->lock);
	w->checkpoint_asked = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

void sqlwriter_yield(struct sqlwriter *w)
{
	pthread_mutex_lock(&w->lock);
	w->yields++;
	pthread_mutex_unlock(&w->lock);
}

void sqlwriter_yield_end(struct sqlwriter *w)
{
	pthread_mutex_lock(&w->lock);
	if (w->yields > 0 && --w->yields == 0)
		pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

bool sqlwriter_checkpointing(struct sqlwriter *w)
{
	pthread_mutex_lock(&w->lock);
	bool busy = (w->checkpoint_asked || w->checkpoint_running) && !w->stop;
	pthread_mutex_unlock(&w->lock);
	return busy;
}

void sqlwriter_drain(struct sqlwriter *w)
{
	if (!w || w->drained)
		return;
	w->drained = true;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (w->started) {
		pthread_join(w->thread, NULL);
		w->started = false;
	}
	deliver(w);
}

struct sqlwriter *sqlwriter_free(struct sqlwriter *w)
{
	if (!w)
		return NULL;
	sqlwriter_drain(w);
	if (w->ev)
		event_free(w->ev);
	if (w->efd >= 0)
		close(w->efd);
	if (w->db) {
		if (w->o.fini)
			w->o.fini(w->db, w->o.arg);
		for (int i = 0; i < TX_COUNT; i++)
			sqlite3_finalize(w->tx[i]);
		sqlite3_close(w->db);
	}
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
	free(w);
	return NULL;
}

void sqlwriter_get_stats(struct sqlwriter *w, struct sqlwriter_stats *ret)
{
	pthread_mutex_lock(&w->lock);
	*ret = w->stats;
	pthread_mutex_unlock(&w->lock);
}
