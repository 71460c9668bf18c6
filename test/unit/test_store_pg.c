/* Unit tests for the PostgreSQL store against a real throw-away server: claims, leases, errors. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <libpq-fe.h>

#include "store.h"
#include "store_rows_check.h"
#include "store_sync.h"
#include "tap.h"

static const char *script;
static char top[256]; /* the temporary directory */
static char dir[300];  /* the cluster's, inside it */
static char url[512];
static char password[128];
static uint8_t key[STORE_KEY_LEN];
static struct event_base *base;

/* Run pgcluster.sh cmd on dir; its first output line into out (may be NULL). */
static int cluster(const char *cmd, char *out, size_t outlen)
{
	char line[1024];
	snprintf(line, sizeof(line), "sh '%s' %s '%s'", script, cmd, dir);
	FILE *p = popen(line, "r");
	if (!p)
		return -1;
	char buf[1024] = "";
	if (!fgets(buf, sizeof(buf), p))
		buf[0] = '\0';
	int st = pclose(p);
	buf[strcspn(buf, "\n")] = '\0';
	if (out)
		snprintf(out, outlen, "%s", buf);
	return st;
}

struct done {
	int calls, err;
	char reason[256];
	struct store_record rec;
};

static void on_done(int err, const char *reason, void *arg)
{
	struct done *d = arg;
	d->calls++;
	d->err = err;
	snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
}

static void on_get(int err, const struct store_record *rec, const char *reason, void *arg)
{
	struct done *d = arg;
	d->calls++;
	d->err = err;
	snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
	if (rec)
		d->rec = *rec;
}

/* Run the loop until d has its callback (10 s at most). */
static void wait_done(struct done *d)
{
	time_t t0 = time(NULL);
	while (!d->calls && time(NULL) - t0 < 10)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(1000);
}

static struct store *open_pg(const char *instance, uint32_t lease_ms, const uint8_t *k, int *err)
{
	struct store_options o = {.backend = STORE_POSTGRESQL,
				  .url = url,
				  .password = password,
				  .instance = instance,
				  .lease_ms = lease_ms,
				  .connections = 3,
				  .key = k,
				  .key_len = STORE_KEY_LEN};
	struct store *s = NULL;
	char why[512] = "";
	*err = store_open(base, &o, &s, why, sizeof(why));
	if (*err)
		fprintf(stderr, "store_open(%s): %s\n", instance, why);
	return s;
}

static struct store_record record(const char *eui)
{
	struct store_record r;
	memset(&r, 0, sizeof(r));
	snprintf(r.dev_eui, sizeof(r.dev_eui), "%s", eui);
	snprintf(r.join_eui, sizeof(r.join_eui), "70B3D57ED0000001");
	snprintf(r.profile_id, sizeof(r.profile_id), "00000001");
	snprintf(r.origin, sizeof(r.origin), "activate");
	for (int i = 0; i < 16; i++)
		r.app_key[i] = (uint8_t)(0xA0 + i);
	r.has_app_key = true;
	r.state = STORE_PENDING;
	return r;
}

static struct store_attempt attempt(uint32_t n, const char *outcome)
{
	struct store_attempt a = {.n = n, .at = 1700000000000 + n};
	snprintf(a.digest, sizeof(a.digest), "%064d", (int)n);
	snprintf(a.outcome, sizeof(a.outcome), "%s", outcome);
	return a;
}

static int write_attempt(struct store *s, const struct store_record *r, bool insert,
			 const struct store_attempt *a, char *reason)
{
	struct done d = {0};
	int rc = store_write_attempt(s, r, insert, a, on_done, &d);
	if (rc < 0)
		return rc;
	CHECK_INT(d.calls, 0); /* never from inside the call */
	wait_done(&d);
	CHECK_INT(d.calls, 1);
	if (reason)
		snprintf(reason, 256, "%s", d.reason);
	return d.err;
}

static int get(struct store *s, const char *eui, struct store_record *ret)
{
	struct done d = {0};
	int rc = store_get_async(s, eui, on_get, &d);
	if (rc < 0)
		return rc;
	CHECK_INT(d.calls, 0);
	wait_done(&d);
	CHECK_INT(d.calls, 1);
	if (d.err == 0)
		*ret = d.rec;
	return d.err;
}

static int pool_n;
static int pool_count(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg)
{
	pool_n++;
	return 0;
}

static int attempts_n;
static int count_attempt(const struct store_attempt *a, void *arg)
{
	attempts_n++;
	return 0;
}


int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test-store-pg PGCLUSTER_SH\n");
		return 2;
	}
	script = argv[1];
	snprintf(top, sizeof(top), "/tmp/tpad-pgunit-XXXXXX");
	if (!mkdtemp(top) || chmod(top, 0755) < 0)
		return 2;
	snprintf(dir, sizeof(dir), "%s/pg", top);
	if (cluster("start", url, sizeof(url)) != 0 || !url[0]) {
		fprintf(stderr, "cannot start PostgreSQL\n");
		return 1;
	}
	char pwpath[400];
	snprintf(pwpath, sizeof(pwpath), "%s/password", dir);
	FILE *pf = fopen(pwpath, "r");
	if (!pf || !fgets(password, sizeof(password), pf))
		return 1;
	fclose(pf);
	password[strcspn(password, "\n")] = '\0';
	for (int i = 0; i < STORE_KEY_LEN; i++)
		key[i] = (uint8_t)(i * 7 + 1);
	base = event_base_new();

	int err;
	struct store *a = open_pg("line-a", 1000, key, &err);
	struct store *b = open_pg("line-b", 1000, key, &err);
	CHECK(a && b);
	if (!a || !b)
		goto out;
	CHECK_STR(store_backend_name(a), "postgresql");

	/* a claims a new device with attempt 1: PENDING, leased to a. */
	struct store_record r = record("70B3D5000000AA01"), got;
	struct store_attempt at1 = attempt(1, "sending");
	r.attempts = 1;
	r.maybe_at = at1.at;
	char reason[256];
	CHECK_INT(write_attempt(a, &r, true, &at1, reason), 0);
	/* b inserting it too: -EEXIST; b sees a's live claim. */
	CHECK_INT(write_attempt(b, &r, true, &at1, reason), -EEXIST);
	CHECK_INT(get(b, r.dev_eui, &got), 0);
	CHECK_STR(got.lease_owner, "line-a");
	CHECK(got.lease_left_ms > 0 && got.lease_left_ms <= 1000);
	CHECK(memcmp(got.app_key, r.app_key, 16) == 0 && got.has_app_key);
	CHECK_STR(got.instance, "line-a");
	/* a does not see its own claim as another's. */
	CHECK_INT(get(a, r.dev_eui, &got), 0);
	CHECK_STR(got.lease_owner, "");
	/* b recording attempt 2 while a's claim is live: refused, nothing written. */
	struct store_record rb = got;
	struct store_attempt at2 = attempt(2, "sending");
	rb.attempts = 2;
	CHECK_INT(write_attempt(b, &rb, false, &at2, reason), -EALREADY);
	CHECK(strstr(reason, "line-a") != NULL);
	attempts_n = 0;
	CHECK_INT(store_attempt_list(b, r.dev_eui, count_attempt, NULL), 0);
	CHECK_INT(attempts_n, 1);
	/* a renews by writing again (still PENDING). */
	CHECK_INT(write_attempt(a, &r, false, NULL, reason), 0);

	/* After the lease expires b takes the device over: attempt 2 recorded. */
	usleep(1200 * 1000);
	CHECK_INT(get(b, r.dev_eui, &got), 0);
	CHECK_STR(got.lease_owner, "");
	CHECK_INT(write_attempt(b, &rb, false, &at2, reason), 0);
	struct store_stats st;
	store_stats(b, &st);
	CHECK_INT(st.lease_takeovers, 1);
	/* a, still believing in attempt 1, cannot record attempt 2 (b did): -EALREADY. */
	struct store_record ra = r;
	ra.attempts = 2;
	CHECK_INT(write_attempt(a, &ra, false, &at2, reason), -EALREADY);
	/* b writes ISSUED: the claim is released; a then may write again (no claim). */
	rb.state = STORE_ISSUED;
	snprintf(rb.owner_token, sizeof(rb.owner_token), "TOKEN1");
	rb.maybe_at = 0;
	struct store_attempt landed = attempt(2, "landed");
	CHECK_INT(write_attempt(b, &rb, false, &landed, reason), 0);
	CHECK_INT(get(a, r.dev_eui, &got), 0);
	CHECK_INT(got.state, STORE_ISSUED);
	CHECK_STR(got.owner_token, "TOKEN1");
	CHECK_STR(got.lease_owner, "");
	CHECK_INT(got.attempts, 2);
	/*
	 * a's decisions made on attempt 1 arrive late: its disproof of attempt 1 and an update
	 * without an attempt (a Retire of the row as a read it) are refused, not written over
	 * b's ISSUED row.
	 */
	struct store_record stale = r;
	stale.maybe_at = 0;
	struct store_attempt disproved = attempt(1, "disproved");
	CHECK_INT(write_attempt(a, &stale, false, &disproved, reason), -EALREADY);
	stale.state = STORE_RETIRED;
	CHECK_INT(write_attempt(a, &stale, false, NULL, reason), -EALREADY);
	CHECK_INT(get(a, r.dev_eui, &got), 0);
	CHECK_INT(got.state, STORE_ISSUED);
	CHECK_STR(got.owner_token, "TOKEN1");

	/* Unknown device: -ENOENT for update and get. */
	struct store_record none = record("70B3D5000000AA99");
	CHECK_INT(write_attempt(a, &none, false, NULL, reason), -ENOENT);
	CHECK_INT(get(a, none.dev_eui, &got), -ENOENT);
	CHECK_INT(store_get(a, none.dev_eui, &got), -ENOENT);
	CHECK_INT(store_get(a, r.dev_eui, &got), 0);
	CHECK_STR(got.owner_token, "TOKEN1");

	/* The AppKey is sealed in the database, never in clear. */
	{
		const char *kw[] = {"dbname", "password", NULL};
		const char *vals[] = {url, password, NULL};
		PGconn *c = PQconnectdbParams(kw, vals, 1);
		PGresult *res = PQexec(c, "SELECT encode(app_key_sealed, 'hex') FROM devices");
		CHECK(PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1);
		if (PQntuples(res) == 1) {
			CHECK(strstr(PQgetvalue(res, 0, 0), "a0a1a2a3a4a5") == NULL);
			CHECK_INT(strlen(PQgetvalue(res, 0, 0)), 2 * (16 + 28));
		}
		PQclear(res);
		PQfinish(c);
	}

	/* Labels and audit go through, counts add up. */
	struct store_label *l = calloc(1, sizeof(*l));
	snprintf(l->text, sizeof(l->text), "LW:D0:X");
	l->ec = 1;
	l->matrix_len = 3;
	memcpy(l->matrix, "\x01\x00\x02", 3);
	CHECK_INT(store_label_put(a, r.dev_eui, l), 0);
	CHECK_INT(store_audit(a, r.dev_eui, "test", 1, 2, "ok"), 0);
	struct done barrier = {0};
	CHECK_INT(store_update(a, &got, on_done, &barrier), 0);
	wait_done(&barrier);
	memset(l, 0, sizeof(*l));
	CHECK_INT(store_label_get(b, r.dev_eui, l), 0);
	CHECK_STR(l->text, "LW:D0:X");
	CHECK_INT(l->matrix_len, 3);
	CHECK(memcmp(l->matrix, "\x01\x00\x02", 3) == 0);
	free(l);
	uint64_t counts[STORE_N_STATES];
	CHECK_INT(store_count(b, counts), 0);
	CHECK_INT(counts[STORE_ISSUED], 1);

	/* The same reads without blocking, on the reader connection. */
	{
		struct rows_done rd;
		ASK(base, rd, store_count_async(b, on_rows, &rd));
		CHECK_INT(rd.err, 0);
		CHECK_INT(rd.counts[STORE_ISSUED], 1);
		ASK(base, rd, store_list_async(b, -1, NULL, 0, on_rows, &rd));
		CHECK_INT(rd.err, 0);
		CHECK_INT(rd.n, 1);
		CHECK_STR(rd.first, r.dev_eui);
		ASK(base, rd, store_list_async(b, STORE_PENDING, NULL, 0, on_rows, &rd));
		CHECK_INT(rd.n, 0);
		ASK(base, rd, store_list_async(b, STORE_ISSUED, "70b3d5000000aa00", 5, on_rows, &rd));
		CHECK_INT(rd.n, 1);
		ASK(base, rd, store_list_async(b, STORE_ISSUED, r.dev_eui, 5, on_rows, &rd));
		CHECK_INT(rd.n, 0);
		ASK(base, rd, store_audit_list_async(b, r.dev_eui, 0, 0, on_rows, &rd));
		CHECK_INT(rd.err, 0);
		CHECK_INT(rd.n, 1);
		CHECK_STR(rd.first, r.dev_eui);
		ASK(base, rd, store_audit_list_async(b, NULL, 0, 0, on_rows, &rd));
		CHECK(rd.n >= 1);
		ASK(base, rd, store_attempt_list_async(a, r.dev_eui, on_rows, &rd));
		CHECK_INT(rd.err, 0);
		CHECK_INT(rd.n, 2);
		CHECK_STR(rd.outcome, "landed");
		CHECK_INT(store_list_async(b, STORE_N_STATES, NULL, 0, on_rows, &rd), -EINVAL);
		CHECK_INT(store_attempt_list_async(b, "70B3", on_rows, &rd), -EINVAL);
		CHECK_INT(store_audit_list_async(b, "nothex0000000000", 0, 0, on_rows, &rd),
			  -EINVAL);
		struct store_stats sb;
		store_stats(b, &sb);
		CHECK_INT(sb.connections, 3); /* two writers and the reader */
	}

	/* The AppKey pool: the pairs a tpad puts are its own, never handed out by another. */
	{
		uint8_t app[3][16], hsm[3][16];
		for (int i = 0; i < 3; i++) {
			memset(app[i], 0x10 + i, 16);
			memset(hsm[i], 0x60 + i, 16);
			CHECK_INT(store_key_pool_put(a, app[i], hsm[i]), 0);
		}
		struct done kb = {0};
		CHECK_INT(store_update(a, &got, on_done, &kb), 0);
		wait_done(&kb);
		pool_n = 0;
		CHECK_INT(store_key_pool_load(a, 2, pool_count, NULL), 0);
		CHECK_INT(pool_n, 2);
		pool_n = 0;
		CHECK_INT(store_key_pool_load(b, 10, pool_count, NULL), 0);
		CHECK_INT(pool_n, 0); /* every pair is a's, who put it: b never hands one out */
		uint8_t h[16];
		CHECK_INT(store_key_pool_find(b, app[1], h), 0);
		CHECK(memcmp(h, hsm[1], 16) == 0);
		uint8_t unknown[16] = {1};
		CHECK_INT(store_key_pool_find(b, unknown, h), -ENOENT);
		struct rows_done rd;
		ASK(base, rd, store_key_pool_find_async(b, app[2], on_rows, &rd));
		CHECK_INT(rd.err, 0);
		CHECK(memcmp(rd.hsm, hsm[2], 16) == 0);
		ASK(base, rd, store_key_pool_find_async(b, unknown, on_rows, &rd));
		CHECK_INT(rd.err, -ENOENT);
		CHECK_INT(store_key_pool_taken(a, app[0], got.dev_eui), 0);
		struct done kc = {0};
		CHECK_INT(store_update(a, &got, on_done, &kc), 0);
		wait_done(&kc);
		pool_n = 0;
		CHECK_INT(store_key_pool_load(a, 10, pool_count, NULL), 0);
		CHECK_INT(pool_n, 2); /* app[1] and app[2]: app[0] was handed out */
	}

	/* Another key is refused; so is a newer schema. */
	uint8_t other[STORE_KEY_LEN] = {9};
	struct store *c = open_pg("line-c", 1000, other, &err);
	CHECK(c == NULL);
	CHECK_INT(err, -EBADMSG);

	/* The database stops: writes fail fast with a reason, nothing queued; it comes back. */
	CHECK_INT(cluster("kill", NULL, 0), 0);
	struct store_record r2 = record("70B3D5000000AA02");
	struct store_attempt a1 = attempt(1, "sending");
	r2.attempts = 1;
	int failures = 0;
	for (int i = 0; i < 3; i++) {
		int e = write_attempt(a, &r2, true, &a1, reason);
		if (e == -EIO) {
			failures++;
			CHECK(reason[0] != '\0');
		}
	}
	CHECK(failures >= 2);
	store_stats(a, &st);
	CHECK(st.down);
	{
		/* A cloud-HSM key cannot be marked handed out now: said at once, so it is not used. */
		uint8_t k0[16];
		memset(k0, 0x77, sizeof(k0));
		CHECK_INT(store_key_pool_taken(a, k0, r2.dev_eui), -EIO);
	}
	CHECK_INT(get(a, r2.dev_eui, &got), -EIO);
	{
		/* Reads fail fast too, with the reason. */
		struct rows_done rd;
		ASK(base, rd, store_list_async(a, -1, NULL, 0, on_rows, &rd));
		CHECK_INT(rd.err, -EIO);
		ASK(base, rd, store_count_async(a, on_rows, &rd));
		CHECK_INT(rd.err, -EIO);
	}
	/* An audit entry made while it is down is kept and written when it is back. */
	CHECK_INT(store_audit(a, r2.dev_eui, "while-down", 1, 2, "kept"), 0);
	CHECK_INT(cluster("restart", NULL, 0), 0);
	time_t t0 = time(NULL);
	int e = -EIO;
	while (e != 0 && time(NULL) - t0 < 15) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		usleep(50 * 1000);
		e = write_attempt(a, &r2, true, &a1, reason);
	}
	CHECK_INT(e, 0);
	CHECK(time(NULL) - t0 < 10);
	{
		const char *kw[] = {"dbname", "password", NULL};
		const char *vals[] = {url, password, NULL};
		PGconn *pc = PQconnectdbParams(kw, vals, 1);
		PGresult *res = PQexec(pc, "SELECT count(*) FROM audit WHERE method = 'while-down'");
		CHECK(PQresultStatus(res) == PGRES_TUPLES_OK);
		CHECK_STR(PQntuples(res) ? PQgetvalue(res, 0, 0) : "", "1");
		PQclear(res);
		PQfinish(pc);
	}
	store_stats(a, &st);
	CHECK(st.reconnects >= 1);

out:
	store_close(a);
	store_close(b);
	event_base_free(base);
	cluster("stop", NULL, 0);
	char rm[600];
	snprintf(rm, sizeof(rm), "rm -rf '%s'", top);
	if (system(rm) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return tap_done();
}
