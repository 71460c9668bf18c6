/* bench_store: durable inserts and updates per second through the store's group commit. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "store.h"

#define TMPFS_MAGIC_NUMBER 0x01021994

/* One benchmark run: keep `window` writes in flight until `total` have completed. */
struct run {
	struct store *s;
	bool update;
	unsigned total;
	unsigned window;
	unsigned submitted;
	unsigned completed;
	unsigned failed;
	int first_err;
};

static struct event_base *base;

/* Fill the record of device i for an insert or for its ISSUED update. */
static void make_record(struct store_record *r, unsigned i, bool issued)
{
	memset(r, 0, sizeof(*r));
	snprintf(r->dev_eui, sizeof(r->dev_eui), "0123%012X", i);
	snprintf(r->join_eui, sizeof(r->join_eui), "%s", "70B3D57ED0000000");
	snprintf(r->profile_id, sizeof(r->profile_id), "%s", "00000000");
	snprintf(r->origin, sizeof(r->origin), "%s", "activate");
	for (int b = 0; b < 16; b++)
		r->app_key[b] = (uint8_t)(i * 31 + (unsigned)b);
	r->has_app_key = true;
	r->app_key_generated = true;
	r->uid = 1000;
	r->pid = 1234;
	r->state = issued ? STORE_ISSUED : STORE_PENDING;
	if (issued) {
		snprintf(r->owner_token, sizeof(r->owner_token), "%032X", i);
		snprintf(r->ref, sizeof(r->ref), "ref-%u", i);
	}
}

static void on_done(int err, const char *reason, void *arg);

/* Submit the next write of the run; false if there is none left or it was refused. */
static bool submit_next(struct run *run)
{
	if (run->submitted >= run->total)
		return false;
	struct store_record r;
	make_record(&r, run->submitted, run->update);
	int e = run->update ? store_update(run->s, &r, on_done, run)
			    : store_insert(run->s, &r, on_done, run);
	if (e < 0) {
		fprintf(stderr, "submit: %s\n", strerror(-e));
		exit(1);
	}
	run->submitted++;
	return true;
}

/* A write completed: count it and keep the window full. */
static void on_done(int err, const char *reason, void *arg)
{
	struct run *run = arg;
	run->completed++;
	if (err) {
		if (!run->failed)
			run->first_err = err;
		run->failed++;
		fprintf(stderr, "write failed: %s (%s)\n", strerror(-err), reason);
	}
	submit_next(run);
	if (run->completed == run->total)
		event_base_loopbreak(base);
}

/* Seconds elapsed since t0. */
static double since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Run total inserts then total updates with window in flight, and print the rates. */
static int bench(const char *path, const uint8_t *key, unsigned total, unsigned window,
		 uint32_t delay_ms)
{
	unlink(path);
	char p[512];
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);

	struct store_options o = {.path = path,
				  .key = key,
				  .key_len = STORE_KEY_LEN,
				  .commit_delay_ms = delay_ms,
				  .max_queue = window + 1};
	struct store *s;
	char err[256];
	int e = store_open(base, &o, &s, err, sizeof(err));
	if (e < 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	double secs[2];
	struct store_stats before, after;
	uint64_t commits[2];
	for (int phase = 0; phase < 2; phase++) {
		struct run run = {.s = s, .update = phase == 1, .total = total, .window = window};
		store_stats(s, &before);
		struct timespec t0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (unsigned i = 0; i < window && submit_next(&run); i++)
			;
		event_base_dispatch(base);
		secs[phase] = since(&t0);
		store_stats(s, &after);
		commits[phase] = after.commits - before.commits;
		if (run.failed) {
			fprintf(stderr, "%u writes failed, first: %s\n", run.failed,
				strerror(-run.first_err));
			store_close(s);
			return 1;
		}
	}
	printf("window %5u  delay %3u ms | inserts %8.0f/s (%6llu commits, %6.1f per commit) | "
	       "updates %8.0f/s (%6llu commits, %6.1f per commit)\n",
	       window, delay_ms, total / secs[0], (unsigned long long)commits[0],
	       commits[0] ? (double)total / (double)commits[0] : 0.0, total / secs[1],
	       (unsigned long long)commits[1],
	       commits[1] ? (double)total / (double)commits[1] : 0.0);
	fflush(stdout);
	store_close(s);
	return 0;
}

int main(int argc, char **argv)
{
	unsigned total = argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 20000;
	if (total == 0 || total > 10000000) {
		fprintf(stderr, "usage: bench-store [WRITES]\n");
		return 2;
	}
	const char *tmp = getenv("TMPDIR");
	char dir[256];
	snprintf(dir, sizeof(dir), "%s/bench-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	char path[300];
	snprintf(path, sizeof(path), "%s/tpad.db", dir);
	struct statfs fs;
	bool tmpfs = statfs(dir, &fs) == 0 && fs.f_type == TMPFS_MAGIC_NUMBER;
	printf("store bench in %s (%s), synchronous=FULL, %u writes per phase\n", dir,
	       tmpfs ? "tmpfs: fsync is free, numbers are not disk numbers" : "disk", total);

	uint8_t key[STORE_KEY_LEN];
	for (int i = 0; i < STORE_KEY_LEN; i++)
		key[i] = (uint8_t)(0x40 + i);
	base = event_base_new();
	if (!base)
		return 1;

	/* One at a time is what a store without group commit costs: one fsync per write. */
	unsigned serial = total < 500 ? total : 500;
	int rc = bench(path, key, serial, 1, 0);
	static const unsigned windows[] = {16, 256, 4096};
	for (size_t i = 0; rc == 0 && i < sizeof(windows) / sizeof(windows[0]); i++)
		rc = bench(path, key, total, windows[i], 0);
	if (rc == 0)
		rc = bench(path, key, total, 256, 2);

	char p[512];
	unlink(path);
	snprintf(p, sizeof(p), "%s-wal", path);
	unlink(p);
	snprintf(p, sizeof(p), "%s-shm", path);
	unlink(p);
	rmdir(dir);
	event_base_free(base);
	return rc;
}
