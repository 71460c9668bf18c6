/* test_store_keypool: the cloud-HSM AppKey pool table: sealed pairs, handed-out marks, lookups. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <sqlite3.h>

#include "store.h"
#include "store_sync.h"
#include "tap.h"

static struct event_base *base;
static uint8_t key[STORE_KEY_LEN];

struct loaded {
	int n;
	uint8_t app[8][16], hsm[8][16];
};

/* Collect the pairs store_key_pool_load() hands back. */
static int collect(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg)
{
	struct loaded *l = arg;
	if (l->n >= 8)
		return 1;
	memcpy(l->app[l->n], app_key, 16);
	memcpy(l->hsm[l->n], hsm_key, 16);
	l->n++;
	return 0;
}

static int committed;

/* A device write's completion: the queue before it has committed too. */
static void on_done(int err, const char *reason, void *arg)
{
	(void)reason;
	(void)arg;
	if (err == 0)
		committed++;
}

/* Queue a device row and run the loop until it (and everything queued before) committed. */
static void flush(struct store *s, const char *eui)
{
	struct store_record r = {0};
	snprintf(r.dev_eui, sizeof(r.dev_eui), "%s", eui);
	snprintf(r.join_eui, sizeof(r.join_eui), "0000000000000000");
	snprintf(r.profile_id, sizeof(r.profile_id), "00000000");
	snprintf(r.tkm_info, sizeof(r.tkm_info), "31110123D345666E2DBD");
	snprintf(r.origin, sizeof(r.origin), "activate");
	r.state = STORE_PENDING;
	int before = committed;
	CHECK_INT(store_insert(s, &r, on_done, NULL), 0);
	for (int i = 0; i < 3000 && committed == before; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
	CHECK_INT(committed, before + 1);
}

static struct store *open_at(const char *path, const uint8_t *k)
{
	struct store_options o = {.path = path, .key = k, .key_len = STORE_KEY_LEN};
	struct store *s = NULL;
	char err[256];
	int r = store_open(base, &o, &s, err, sizeof(err));
	if (r < 0)
		fprintf(stderr, "%s\n", err);
	CHECK_INT(r, 0);
	return s;
}

int main(void)
{
	char dir[] = "/tmp/test-store-keypool-XXXXXX", path[300];
	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/tpad.db", dir);
	base = event_base_new();
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);

	struct store *s = open_at(path, key);
	uint8_t app[3][16], hsm[3][16];
	for (int k = 0; k < 3; k++)
		for (int i = 0; i < 16; i++) {
			app[k][i] = (uint8_t)(0x10 * k + i);
			hsm[k][i] = (uint8_t)(0xF0 - 0x10 * k - i);
		}
	for (int k = 0; k < 3; k++)
		CHECK_INT(store_key_pool_put(s, app[k], hsm[k]), 0);
	CHECK_INT(store_key_pool_taken(s, app[1], "70B3D5000000AA01"), 0);
	flush(s, "0000000000000001");

	/* Unused pairs come back (each with its own hsm key); a handed-out one does not. */
	struct loaded l = {0};
	CHECK_INT(store_key_pool_load(s, 8, collect, &l), 0);
	CHECK_INT(l.n, 2);
	int seen = 0;
	for (int i = 0; i < l.n; i++)
		for (int k = 0; k < 3; k++)
			if (memcmp(l.app[i], app[k], 16) == 0) {
				CHECK(memcmp(l.hsm[i], hsm[k], 16) == 0);
				seen |= 1 << k;
			}
	CHECK_INT(seen, 1 | 4);
	memset(&l, 0, sizeof(l));
	CHECK_INT(store_key_pool_load(s, 1, collect, &l), 0);
	CHECK_INT(l.n, 1);

	/* Every pair is found by its AppKey, handed out or not. */
	uint8_t got[16], other[16] = {0xAA};
	CHECK_INT(store_key_pool_find(s, app[1], got), 0);
	CHECK(memcmp(got, hsm[1], 16) == 0);
	CHECK_INT(store_key_pool_find(s, other, got), -ENOENT);
	store_close(s);

	/* Nothing in clear on disk; a row moved to another digest no longer opens. */
	sqlite3 *db;
	CHECK_INT(sqlite3_open(path, &db), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL), SQLITE_OK);
	CHECK_INT(sqlite3_exec(db,
			       "UPDATE app_key_pool SET sealed = (SELECT sealed FROM app_key_pool "
			       "WHERE handed = 1) WHERE handed = 0",
			       NULL, NULL, NULL),
		  SQLITE_OK);
	sqlite3_close(db);
	FILE *f = fopen(path, "rb");
	CHECK(f != NULL);
	static uint8_t raw[1 << 20];
	size_t n = f ? fread(raw, 1, sizeof(raw), f) : 0;
	if (f)
		fclose(f);
	for (int k = 0; k < 3; k++)
		CHECK(memmem(raw, n, app[k], 16) == NULL && memmem(raw, n, hsm[k], 16) == NULL);
	s = open_at(path, key);
	memset(&l, 0, sizeof(l));
	CHECK_INT(store_key_pool_load(s, 8, collect, &l), 0);
	CHECK_INT(l.n, 0); /* both tampered rows are skipped, never handed out */
	CHECK_INT(store_key_pool_find(s, app[0], got), -EBADMSG);
	store_close(s);

	char cmd[400];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	CHECK_INT(system(cmd), 0);
	event_base_free(base);
	return tap_done();
}
