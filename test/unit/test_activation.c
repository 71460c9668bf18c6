/* Unit tests for the activation rules, with a scripted fake store and cloud. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "activation.h"
#include "tap.h"

#define MAX_ROWS 64
#define MAX_EVENTS 256

/* --- a fake store: rows in memory, commits delivered by pump() --- */

struct fake {
	/* The next read of this row finds it FAILED (another request settled it meanwhile). */
	struct store_record *fail_on_read;
	struct store_record rows[MAX_ROWS];
	size_t n_rows;
	int fail_next_insert; /* errno to fail the next insert's commit with */
	int fail_next_update;
	unsigned inserts, updates, audits, imports, queries;
	int64_t now;	   /* wall clock seen by activation, ms after EPOCH_MS */
	int64_t wall_step; /* how far the wall clock stepped: the monotonic one did not */
	unsigned unrecorded_imports; /* imports sent with fewer attempts committed */
	int64_t query_delay;	     /* ms the clock moves while a query is answered */
	/* attempts recorded, in order of their commits */
	struct store_attempt attempts[MAX_EVENTS];
	size_t n_attempts;
	/* scripted cloud answers, consumed in order */
	struct tpa_result import_script[16];
	size_t n_import_script, next_import;
	struct tpa_result query_script[16];
	size_t n_query_script, next_query;
	/* the cloud's own registry, for queries that are not scripted */
	char cloud_eui[MAX_ROWS][17];
	char cloud_token[MAX_ROWS][33];
	size_t n_cloud;
	/* pending async events */
	struct event {
		int kind; /* 0 store, 1 tpa */
		store_done_fn *scb;
		tpa_done_fn *tcb;
		void *arg;
		int err;
		struct tpa_result res;
		struct store_record rec;
		bool is_insert;
		bool is_query;
		bool has_att;
		struct store_attempt att;
	} ev[MAX_EVENTS];
	size_t n_ev;
};

static struct store_record *fake_row(struct fake *f, const char *eui)
{
	for (size_t i = 0; i < f->n_rows; i++)
		if (strcmp(f->rows[i].dev_eui, eui) == 0)
			return &f->rows[i];
	return NULL;
}

/* The row the test expects to be there: a missing one fails the test here, not by a crash. */
static struct store_record *row_of(struct fake *f, const char *eui)
{
	struct store_record *r = fake_row(f, eui);
	if (!r) {
		printf("not ok - no row for %s\n", eui);
		abort();
	}
	return r;
}

static int f_get_async(void *ctx, const char *eui, store_get_fn *cb, void *arg)
{
	struct fake *f = ctx;
	struct store_record *r = fake_row(ctx, eui);
	if (r && r == f->fail_on_read) {
		r->state = STORE_FAILED;
		r->maybe_at = 0;
		f->fail_on_read = NULL;
	}
	if (!r)
		cb(-ENOENT, NULL, "not found", arg);
	else
		cb(0, r, NULL, arg);
	return 0;
}

static int f_write(struct fake *f, const struct store_record *r, store_done_fn *cb, void *arg,
		   bool insert)
{
	struct event *e = &f->ev[f->n_ev++];
	memset(e, 0, sizeof(*e));
	e->kind = 0;
	e->scb = cb;
	e->arg = arg;
	e->rec = *r;
	e->is_insert = insert;
	int *fail = insert ? &f->fail_next_insert : &f->fail_next_update;
	e->err = *fail;
	*fail = 0;
	return 0;
}

static int f_insert(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg)
{
	struct fake *f = ctx;
	f->inserts++;
	return f_write(f, r, cb, arg, true);
}

static int f_update(void *ctx, const struct store_record *r, store_done_fn *cb, void *arg)
{
	struct fake *f = ctx;
	f->updates++;
	return f_write(f, r, cb, arg, false);
}

static int f_write_attempt(void *ctx, const struct store_record *r, bool insert,
			   const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	struct fake *f = ctx;
	if (insert)
		f->inserts++;
	else
		f->updates++;
	int rr = f_write(f, r, cb, arg, insert);
	f->ev[f->n_ev - 1].has_att = a != NULL;
	if (a)
		f->ev[f->n_ev - 1].att = *a;
	return rr;
}

/* The fake wall clock: a fixed epoch plus what a test advanced it by. */
#define EPOCH_MS 1700000000000LL
static int64_t f_now(void *ctx)
{
	return EPOCH_MS + ((struct fake *)ctx)->now;
}

/* The fake monotonic clock: the wall clock's time, less its steps. */
static int64_t f_mono(void *ctx)
{
	struct fake *f = ctx;
	return f->now - f->wall_step;
}

static int f_audit(void *ctx, const char *eui, const char *method, uint32_t uid, int32_t pid,
		   const char *outcome)
{
	((struct fake *)ctx)->audits++;
	return 0;
}

static void cloud_add(struct fake *f, const char *eui, const char *token)
{
	char e[17], t[33];
	snprintf(e, sizeof(e), "%s", eui);
	snprintf(t, sizeof(t), "%s", token);
	memcpy(f->cloud_eui[f->n_cloud], e, sizeof(e));
	memcpy(f->cloud_token[f->n_cloud], t, sizeof(t));
	f->n_cloud++;
}

static int f_import(void *ctx, const struct tpa_record *rec, tpa_done_fn *cb, void *arg)
{
	struct fake *f = ctx;
	f->imports++;
	/* Rule: every attempt is committed before its first byte is sent. */
	if (f->n_attempts < f->imports)
		f->unrecorded_imports++;
	struct event *e = &f->ev[f->n_ev++];
	memset(e, 0, sizeof(*e));
	e->kind = 1;
	e->tcb = cb;
	e->arg = arg;
	if (f->next_import < f->n_import_script) {
		e->res = f->import_script[f->next_import++];
		/* An answer lost after the import landed: the cloud has the device. */
		if (e->res.outcome == TPA_UNKNOWN && e->res.http_status == 1)
			cloud_add(f, rec->dev_eui, "C0FFEE");
	} else {
		e->res.outcome = TPA_OK;
		e->res.http_status = 201;
		snprintf(e->res.owner_token, sizeof(e->res.owner_token), "TOKEN%s", rec->dev_eui);
		snprintf(e->res.ref, sizeof(e->res.ref), "ref-%u", f->imports);
		cloud_add(f, rec->dev_eui, e->res.owner_token);
	}
	return 0;
}

static int f_query(void *ctx, const char *eui, tpa_done_fn *cb, void *arg)
{
	struct fake *f = ctx;
	f->queries++;
	struct event *e = &f->ev[f->n_ev++];
	memset(e, 0, sizeof(*e));
	e->kind = 1;
	e->is_query = true;
	e->tcb = cb;
	e->arg = arg;
	if (f->next_query < f->n_query_script) {
		e->res = f->query_script[f->next_query++];
		return 0;
	}
	e->res.outcome = TPA_NOT_FOUND;
	e->res.http_status = 200;
	for (size_t i = 0; i < f->n_cloud; i++) {
		if (strcmp(f->cloud_eui[i], eui) == 0) {
			e->res.outcome = TPA_OK;
			snprintf(e->res.owner_token, sizeof(e->res.owner_token), "%s",
				 f->cloud_token[i]);
			snprintf(e->res.ref, sizeof(e->res.ref), "ref-q");
		}
	}
	return 0;
}

static int f_list_pending(void *ctx, const char *after, size_t limit, store_rows_fn *cb,
			  void *arg)
{
	struct fake *f = ctx;
	struct store_record *pending = calloc(f->n_rows + 1, sizeof(*pending));
	if (!pending)
		return -ENOMEM;
	struct store_rows rows = {.records = pending};
	/* These tests hold fewer rows than a page: after is "" or past them all. */
	for (size_t i = 0; i < f->n_rows && rows.n < limit; i++)
		if (f->rows[i].state == STORE_PENDING && strcmp(f->rows[i].dev_eui, after) > 0)
			pending[rows.n++] = f->rows[i];
	cb(0, NULL, &rows, arg);
	free(pending);
	return 0;
}

static int f_new_app_key(void *ctx, const char *dev_eui, uint8_t key[16])
{
	for (size_t i = 0; i < 16; i++)
		key[i] = (uint8_t)(0xA0 + i);
	return 0;
}

/* Deliver pending events one at a time, oldest first, until none is left. */
static void pump(struct fake *f)
{
	while (f->n_ev) {
		struct event e = f->ev[0];
		memmove(&f->ev[0], &f->ev[1], (f->n_ev - 1) * sizeof(f->ev[0]));
		f->n_ev--;
		if (e.kind == 1) {
			if (e.is_query)
				f->now += f->query_delay;
			e.tcb(&e.res, e.arg);
			continue;
		}
		int err = e.err;
		if (!err) {
			struct store_record *row = fake_row(f, e.rec.dev_eui);
			if (e.is_insert && row)
				err = -EEXIST;
			else if (!e.is_insert && !row)
				err = -ENOENT;
			else if (e.is_insert)
				f->rows[f->n_rows++] = e.rec;
			else
				*row = e.rec;
			if (!err && e.has_att)
				f->attempts[f->n_attempts++] = e.att;
		}
		e.scb(err, err ? "fake store failure" : NULL, e.arg);
	}
}

static const struct activation_ops ops = {
    .get_async = f_get_async,
    .insert = f_insert,
    .update = f_update,
    .write_attempt = f_write_attempt,
    .now_ms = f_now,
    .mono_ms = f_mono,
    .audit = f_audit,
    .import = f_import,
    .query = f_query,
    .list_pending = f_list_pending,
    .new_app_key = f_new_app_key,
};

/* --- results --- */

struct got {
	int calls;
	struct act_result res;
};

static void done(const struct act_result *res, void *arg)
{
	struct got *g = arg;
	g->calls++;
	g->res = *res;
}

static struct act_request se_req(const char *eui, const char *tkm)
{
	struct act_request q = {.method = "io.tpad.Station.Activate", .origin = "activate"};
	snprintf(q.dev_eui, sizeof(q.dev_eui), "%s", eui);
	snprintf(q.tkm_info, sizeof(q.tkm_info), "%s", tkm);
	return q;
}

static struct got run(struct activation *a, struct fake *f, const struct act_request *q)
{
	struct got g = {0};
	CHECK_INT(activation_run(a, q, done, &g), 0);
	pump(f);
	CHECK_INT(g.calls, 1);
	return g;
}

static struct tpa_result tres(enum tpa_outcome o, int status)
{
	struct tpa_result t = {.outcome = o, .http_status = status, .retry_after = -1};
	return t;
}

#define EUI1 "0123D345666E2DBD"
#define TKM1 "31110123D345666E2DBD"
#define TKM2 "31110123D345666E0000"

/* A row already in the fake store (TKM1, the default JoinEUI), as an earlier run left it. */
static struct store_record *stored_row(struct fake *f, const char *eui, enum store_state state,
				       uint32_t attempts, int64_t maybe_at)
{
	struct store_record *r = &f->rows[f->n_rows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->dev_eui, sizeof(r->dev_eui), "%s", eui);
	snprintf(r->join_eui, sizeof(r->join_eui), "0000000000000000");
	snprintf(r->tkm_info, sizeof(r->tkm_info), "%s", TKM1);
	r->state = state;
	r->attempts = attempts;
	r->maybe_at = maybe_at;
	return r;
}

static void test_live_then_stored(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000001", "AABB1122");
	struct act_request q = se_req(EUI1, TKM1);
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK(g.res.live);
	CHECK_STR(g.res.rec.owner_token, "TOKEN" EUI1);
	CHECK_STR(g.res.rec.join_eui, "0000000000000001");
	CHECK_STR(g.res.rec.profile_id, "AABB1122");
	CHECK_INT(f.imports, 1);
	CHECK_INT(row_of(&f, EUI1)->state, STORE_ISSUED);
	CHECK_INT(f.audits, 1);

	/* Same record again: from the store, no cloud call. */
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK(!g.res.live);
	CHECK(g.res.skipped);
	CHECK_INT(f.imports, 1);
	CHECK_INT(f.audits, 2);

	/* No key material (offline mode): from the store. */
	struct act_request lk = se_req(EUI1, "");
	g = run(a, &f, &lk);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.tkm_info, TKM1);

	/* Another TKM_INFO, another JoinEUI: conflict, nothing sent. */
	struct act_request c = se_req(EUI1, TKM2);
	g = run(a, &f, &c);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK(strstr(g.res.reason, "tkmInfo") != NULL);
	c = se_req(EUI1, TKM1);
	snprintf(c.join_eui, sizeof(c.join_eui), "1111111111111111");
	g = run(a, &f, &c);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	c = se_req(EUI1, "");
	c.generate_app_key = true;
	g = run(a, &f, &c);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK_INT(f.imports, 1);

	/* Unknown device without key material. */
	struct act_request nf = se_req("0000000000000099", "");
	g = run(a, &f, &nf);
	CHECK_INT(g.res.outcome, ACT_NOT_FOUND);
	CHECK_INT(f.inserts, 1);
	activation_free(a);
}

static void test_app_keys(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	struct act_request q = se_req("00000000000000A1", "");
	q.generate_app_key = true;
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK(g.res.rec.has_app_key && g.res.rec.app_key_generated);
	CHECK_INT(g.res.rec.app_key[0], 0xA0);
	/* generateAppKey again is the same request: stored answer, same key. */
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK(!g.res.live);
	CHECK_INT(g.res.rec.app_key[15], 0xAF);

	struct act_request k = se_req("00000000000000A2", "");
	k.has_app_key = true;
	memset(k.app_key, 0x11, 16);
	g = run(a, &f, &k);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK(!g.res.rec.app_key_generated);
	memset(k.app_key, 0x22, 16);
	g = run(a, &f, &k);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK(strstr(g.res.reason, "appKey") != NULL);
	CHECK_INT(f.imports, 2);
	activation_free(a);
}

/* A device whose import answer is lost (OutcomeUnknown), then the wall clock set back a day
 * (a technician sets the date, or NTP corrects a clock that ran ahead). */
static struct act_request lost_then_clock_back(struct activation *a, struct fake *f,
					       const char *eui)
{
	f->import_script[f->n_import_script++] = tres(TPA_UNKNOWN, 0);
	struct act_request q = se_req(eui, TKM1);
	struct got g = run(a, f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	f->now -= 86400000;
	f->wall_step -= 86400000;
	return q;
}

/*
 * An import whose answer is lost, sent sent_after_ms after the call (it waited for a
 * session); then the wall clock steps by step_ms and both clocks move early_ms: the
 * "not found" is not trusted yet, retry_left seconds remain, nothing is imported again;
 * once they passed, one import. (settle-after: 60 s.)
 */
static void lost_import_settles(struct activation *a, struct fake *f, const char *eui,
				uint64_t sent_after_ms, int64_t step_ms, int64_t early_ms,
				int retry_left)
{
	f->import_script[f->n_import_script] = tres(TPA_UNKNOWN, 0);
	f->import_script[f->n_import_script].sent_after_ms = sent_after_ms;
	f->n_import_script++;
	struct act_request q = se_req(eui, TKM1);
	struct got g = run(a, f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, (int)((sent_after_ms + 60000) / 1000));
	unsigned before = f->imports;
	f->now += step_ms + early_ms;
	f->wall_step += step_ms;
	g = run(a, f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, retry_left);
	CHECK_INT(f->imports, before);
	f->now += (int64_t)retry_left * 1000;
	g = run(a, f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_INT(f->imports, before + 1);
}

static void test_unknown_outcomes(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");

	/* Lost answer, the cloud has it: adopt its token, no second import. */
	f.import_script[f.n_import_script] = tres(TPA_UNKNOWN, 1);
	f.n_import_script++;
	struct act_request q = se_req("00000000000000B1", TKM1);
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.owner_token, "C0FFEE");
	CHECK_INT(f.imports, 1);
	CHECK_INT(f.queries, 1);

	/*
	 * Lost, and the query finds nothing yet: that proves nothing until settle-after has
	 * passed since the attempt (the import may still be processed). No second import, no
	 * FAILED: OutcomeUnknown with the seconds to wait.
	 */
	f.import_script[f.n_import_script] = tres(TPA_UNKNOWN, 0);
	f.n_import_script++;
	q = se_req("00000000000000B2", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, 60);
	CHECK_INT(f.imports, 2);
	CHECK_INT(row_of(&f, "00000000000000B2")->state, STORE_PENDING);
	/* Asked again within settle-after: still unknown, still no import. */
	f.now += 30000;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, 30);
	CHECK_INT(f.imports, 2);
	/* After settle-after the "not found" is trusted: the attempt is disproved, import once. */
	f.now += 30000;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK(g.res.live);
	CHECK_INT(f.imports, 3);
	CHECK_INT(row_of(&f, "00000000000000B2")->attempts, 2);

	/*
	 * The import waited 5 s for an upstream session before its first byte left: the
	 * window counts from then, not from the record (a "not found" 60 s after the record
	 * was trusted, the import landed 2 s later: a second import, 409, FOREIGN).
	 */
	lost_import_settles(a, &f, "00000000000000B7", 5000, 0, 60000, 5);

	/* The wall clock steps 10 minutes forward right after a lost import (NTP after a
	 * reboot): the window still lasts settle-after on the clock that does not step. */
	lost_import_settles(a, &f, "00000000000000B8", 0, 600000, 0, 60);

	/* The wall clock steps a day back right after a lost import (a technician sets the
	 * date, or NTP corrects a clock that ran ahead): the window still lasts
	 * settle-after, not a day more, and Lookup's hint says so too. */
	lost_import_settles(a, &f, "00000000000000B9", 0, -86400000, 0, 60);
	q = lost_then_clock_back(a, &f, "00000000000000BA");
	struct store_record lookup = *fake_row(&f, q.dev_eui);
	activation_free(a); /* a restarted tpad: only the row's wall-clock time is left */
	a = activation_new(&ops, &f, "0000000000000000", "00000000");
	CHECK_INT(activation_retry_after(a, &lookup), 60);

	/* One failed query is simply asked again (it is read-only). */
	f.import_script[f.n_import_script] = tres(TPA_UNKNOWN, 1);
	f.n_import_script++;
	f.query_script[f.n_query_script] = tres(TPA_UNAVAILABLE, 0);
	f.n_query_script++;
	f.next_query = f.n_query_script - 1;
	q = se_req("00000000000000B6", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.owner_token, "C0FFEE");

	/* The queries keep failing: OutcomeUnknown, the row stays PENDING. */
	f.import_script[f.n_import_script] = tres(TPA_UNKNOWN, 0);
	f.n_import_script++;
	f.next_query = f.n_query_script = 0;
	for (int i = 0; i < 3; i++)
		f.query_script[f.n_query_script++] = tres(TPA_UNAVAILABLE, 0);
	q = se_req("00000000000000B3", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(row_of(&f, "00000000000000B3")->state, STORE_PENDING);
	unsigned imports = f.imports;

	/* Asked again after settle-after: query first (the cloud has nothing), one import. */
	f.now += 60000;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_INT(f.imports, imports + 1);

	/*
	 * 409 to our first import: no attempt of ours can explain it. The device is FOREIGN
	 * (imported elsewhere): Conflict, and the cloud's token is not handed out.
	 */
	cloud_add(&f, "00000000000000B4", "EXISTING");
	f.import_script[f.n_import_script] = tres(TPA_CONFLICT, 409);
	f.n_import_script++;
	q = se_req("00000000000000B4", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK(g.res.foreign);
	CHECK(strstr(g.res.reason, "adopt") != NULL);
	CHECK_INT(row_of(&f, "00000000000000B4")->state, STORE_FOREIGN);
	CHECK_STR(row_of(&f, "00000000000000B4")->owner_token, "");
	/* Asked again: still Conflict, nothing sent. */
	imports = f.imports;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK_INT(f.imports, imports);
	/* An admin adopts it: the cloud's token becomes ours, audited. */
	struct act_request ad = {.adopt = true, .method = "io.tpad.Admin.Adopt"};
	snprintf(ad.dev_eui, sizeof(ad.dev_eui), "00000000000000B4");
	unsigned audits = f.audits;
	g = run(a, &f, &ad);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.owner_token, "EXISTING");
	CHECK_INT(f.audits, audits + 1);
	CHECK_INT(row_of(&f, "00000000000000B4")->state, STORE_ISSUED);
	/* Adopt applies to FOREIGN devices only. */
	g = run(a, &f, &ad);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);

	/* A 500 may follow a done import: settled by the query as well (after settle-after). */
	f.import_script[f.n_import_script] = tres(TPA_UNAVAILABLE, 500);
	f.n_import_script++;
	q = se_req("00000000000000B5", TKM1);
	imports = f.imports;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	f.now += 60000;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_INT(f.imports, imports + 2);
	CHECK_INT(f.unrecorded_imports, 0);
	activation_free(a);
}

/*
 * The defects of the settle race: an attempt that timed out and a query too early must
 * never lead to a second import or to FAILED while the first may still land.
 */
static void test_settle_rules(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	activation_set_settle(a, 10000, 1000, 8000);

	/* Attempt 1 times out; the cloud lands it later than our early query. */
	f.import_script[f.n_import_script++] = tres(TPA_UNKNOWN, 0);
	struct act_request q = se_req("0000000000000A01", TKM1);
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, 10);
	CHECK_INT(row_of(&f, q.dev_eui)->state, STORE_PENDING);
	CHECK_INT(f.attempts[f.n_attempts - 1].n, 1);
	CHECK_STR(f.attempts[f.n_attempts - 1].outcome, "sending");
	/* The retry hint of a PENDING row (what Lookup says). */
	CHECK_INT(activation_retry_after(a, fake_row(&f, q.dev_eui)), 10);
	/* It lands now; the background settler is not due yet and asks nothing. */
	cloud_add(&f, q.dev_eui, "LATE");
	unsigned queries = f.queries;
	CHECK_INT(activation_settle_due(a, 4, NULL, NULL), 0);
	pump(&f);
	CHECK_INT(f.queries, queries);
	/* Once due, it adopts the token of our own attempt: one import in all. */
	f.now += 10000;
	CHECK_INT(activation_settle_due(a, 4, NULL, NULL), 0);
	pump(&f);
	CHECK_INT(row_of(&f, q.dev_eui)->state, STORE_ISSUED);
	CHECK_STR(row_of(&f, q.dev_eui)->owner_token, "LATE");
	CHECK_INT(f.imports, 1);
	CHECK_STR(f.attempts[f.n_attempts - 1].outcome, "landed");

	/*
	 * The background settler's wait is kept on the clock that does not step: a wall
	 * clock set back a day right after a lost import neither holds the row for a day nor
	 * makes Lookup's hint a day long.
	 */
	q = lost_then_clock_back(a, &f, "0000000000000A0B");
	CHECK_INT(activation_retry_after(a, fake_row(&f, q.dev_eui)), 10);
	cloud_add(&f, q.dev_eui, "STEPPED");
	queries = f.queries;
	f.now += 10000;
	CHECK_INT(activation_settle_due(a, 4, NULL, NULL), 0);
	pump(&f);
	CHECK_INT(f.queries, queries + 1);
	CHECK_INT(row_of(&f, q.dev_eui)->state, STORE_ISSUED);
	CHECK_STR(row_of(&f, q.dev_eui)->owner_token, "STEPPED");
	CHECK_INT(f.imports, 2);

	/*
	 * Attempt 1 times out and never lands; after settle-after attempt 2 cannot even be
	 * sent (queue full). Every attempt is now disproved or never sent: FAILED is right.
	 */
	f.import_script[f.n_import_script++] = tres(TPA_UNKNOWN, 0);
	q = se_req("0000000000000A02", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	f.now += 10000;
	f.import_script[f.n_import_script++] = tres(TPA_UNAVAILABLE, 0);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNAVAILABLE);
	CHECK_INT(row_of(&f, q.dev_eui)->state, STORE_FAILED);
	CHECK_INT(row_of(&f, q.dev_eui)->maybe_at, 0);
	CHECK_INT(f.attempts[f.n_attempts - 3].n, 1);
	CHECK_STR(f.attempts[f.n_attempts - 3].outcome, "disproved");
	CHECK_INT(f.attempts[f.n_attempts - 1].n, 2);
	CHECK_STR(f.attempts[f.n_attempts - 1].outcome, "not-sent");

	/* The same, but attempt 1 does land late: the row is ISSUED, never FAILED. */
	f.import_script[f.n_import_script++] = tres(TPA_UNKNOWN, 0);
	q = se_req("0000000000000A03", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	cloud_add(&f, q.dev_eui, "LATE3");
	f.now += 10000;
	unsigned imports = f.imports;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.owner_token, "LATE3");
	CHECK_INT(f.imports, imports);

	/*
	 * A query sent just before settle-after and answered just after it saw the cloud at a
	 * time the import could still land: its "not found" is not trusted either.
	 */
	f.import_script[f.n_import_script++] = tres(TPA_UNKNOWN, 0);
	q = se_req("0000000000000A09", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	f.now += 9900;
	f.query_delay = 500;
	imports = f.imports;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, 1);
	CHECK_INT(f.imports, imports);
	f.query_delay = 0;

	/* Every attempt records the same digest for the same record, another for another. */
	char d1[65], d2[65];
	struct store_record r1 = {0}, r2;
	snprintf(r1.dev_eui, sizeof(r1.dev_eui), "0000000000000A04");
	snprintf(r1.join_eui, sizeof(r1.join_eui), "0000000000000000");
	r1.has_app_key = true;
	memset(r1.app_key, 1, 16);
	r2 = r1;
	activation_digest(&r1, d1);
	activation_digest(&r2, d2);
	CHECK_STR(d1, d2);
	r2.app_key[0] = 2;
	activation_digest(&r2, d2);
	CHECK(strcmp(d1, d2) != 0);

	/* A query hit with no attempt of ours behind it (a PENDING row never sent): FOREIGN. */
	struct store_record *r = stored_row(&f, "0000000000000A05", STORE_PENDING, 0, 0);
	cloud_add(&f, "0000000000000A05", "THEIRS");
	q = se_req("0000000000000A05", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK(g.res.foreign);

	/*
	 * Our attempt may have landed, but the query shows the cloud holds the device with
	 * another record (another tkmInfo): someone else's import, never adopted.
	 */
	f.import_script[f.n_import_script++] = tres(TPA_UNKNOWN, 0);
	q = se_req("0000000000000A07", TKM1);
	struct tpa_result other = tres(TPA_OK, 200);
	snprintf(other.owner_token, sizeof(other.owner_token), "THEIRS7");
	snprintf(other.tkm_info, sizeof(other.tkm_info), "%s", TKM2);
	f.next_query = f.n_query_script = 0;
	f.query_script[f.n_query_script++] = other;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);
	CHECK(g.res.foreign);
	CHECK_INT(row_of(&f, q.dev_eui)->state, STORE_FOREIGN);
	/* The same answer with our own record is ours: adopted. */
	f.import_script[f.n_import_script++] = tres(TPA_UNKNOWN, 0);
	q = se_req("0000000000000A08", TKM1);
	snprintf(other.tkm_info, sizeof(other.tkm_info), "%s", TKM1);
	snprintf(other.join_eui, sizeof(other.join_eui), "0000000000000000");
	f.next_query = f.n_query_script = 0;
	f.query_script[f.n_query_script++] = other;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.owner_token, "THEIRS7");

	/* A retired device is never handed out. */
	r = stored_row(&f, "0000000000000A06", STORE_RETIRED, 0, 0);
	snprintf(r->owner_token, sizeof(r->owner_token), "GONE");
	q = se_req("0000000000000A06", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_RETIRED);
	q.tkm_info[0] = '\0';
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_RETIRED);
	CHECK_INT(f.unrecorded_imports, 0);
	activation_free(a);
}

static void test_refusals(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	struct tpa_result rej = tres(TPA_REJECTED, 400);
	snprintf(rej.code, sizeof(rej.code), "BAD_REQUEST");
	snprintf(rej.message, sizeof(rej.message), "bad tkmInfo");
	f.import_script[f.n_import_script++] = rej;
	struct act_request q = se_req("00000000000000C1", TKM1);
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_REJECTED);
	CHECK_INT(g.res.http_status, 400);
	CHECK_STR(g.res.code, "BAD_REQUEST");
	CHECK_INT(row_of(&f, "00000000000000C1")->state, STORE_FAILED);
	/* A FAILED row is imported again on the next request, without a query. */
	unsigned queries = f.queries;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_INT(f.queries, queries);

	/* Refused, then corrected by the station: the new record replaces the refused one. */
	rej = tres(TPA_REJECTED, 400);
	f.import_script[f.n_import_script++] = rej;
	q = se_req("00000000000000C3", TKM2);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_REJECTED);
	q = se_req("00000000000000C3", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.tkm_info, TKM1);
	CHECK_STR(row_of(&f, "00000000000000C3")->tkm_info, TKM1);
	/* Once ISSUED, another record is a conflict again. */
	q = se_req("00000000000000C3", TKM2);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_CONFLICT);

	struct tpa_result busy = tres(TPA_UNAVAILABLE, 429);
	busy.retry_after = 7;
	f.import_script[f.n_import_script++] = busy;
	q = se_req("00000000000000C2", TKM1);
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNAVAILABLE);
	CHECK_INT(g.res.retry_after, 7);
	CHECK_INT(row_of(&f, "00000000000000C2")->state, STORE_FAILED);
	activation_free(a);
}

static void test_store_failures(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	f.fail_next_insert = -ENOSPC;
	struct act_request q = se_req("00000000000000D1", TKM1);
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_STORE_FAILED);
	CHECK_INT(f.imports, 0);
	CHECK(fake_row(&f, "00000000000000D1") == NULL);

	/* The token arrives but ISSUED cannot be committed: the row stays PENDING... */
	f.fail_next_update = -EIO;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_STORE_FAILED);
	CHECK_INT(f.imports, 1);
	CHECK_INT(row_of(&f, "00000000000000D1")->state, STORE_PENDING);
	/* ...and the next request adopts the cloud's token by query, never importing twice. */
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_STR(g.res.rec.owner_token, "TOKEN00000000000000D1");
	CHECK_INT(f.imports, 1);
	activation_free(a);
}

static void test_concurrent_same_device(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	struct act_request q = se_req("00000000000000E1", TKM1);
	struct got g[5] = {0};
	for (int i = 0; i < 5; i++)
		CHECK_INT(activation_run(a, &q, done, &g[i]), 0);
	struct act_request other = se_req("00000000000000E2", TKM1);
	struct got go = {0};
	CHECK_INT(activation_run(a, &other, done, &go), 0);
	pump(&f);
	int live = 0;
	for (int i = 0; i < 5; i++) {
		CHECK_INT(g[i].calls, 1);
		CHECK_INT(g[i].res.outcome, ACT_OK);
		CHECK_STR(g[i].res.rec.owner_token, "TOKEN00000000000000E1");
		live += g[i].res.live;
	}
	CHECK_INT(live, 1);
	CHECK_INT(go.res.outcome, ACT_OK);
	CHECK_INT(f.imports, 2);
	struct activation_stats st;
	activation_get_stats(a, &st);
	CHECK_INT(st.in_flight, 0);
	CHECK_INT(st.outcomes[ACT_OK], 6);
	activation_free(a);
}

static unsigned reconciled = 99;
static void on_reconciled(unsigned still, void *arg)
{
	reconciled = still;
}

static void test_reconcile(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	const char *euis[] = {"00000000000000F1", "00000000000000F2", "00000000000000F3"};
	/* An attempt was recorded long ago, by an earlier run. */
	for (int i = 0; i < 3; i++)
		stored_row(&f, euis[i], STORE_PENDING, 1, EPOCH_MS - 600000);
	cloud_add(&f, euis[0], "ADOPTED");
	/* Queries in order: F1 from the registry, F2 not found, F3 fails. */
	f.query_script[0] = tres(TPA_OK, 200);
	snprintf(f.query_script[0].owner_token, sizeof(f.query_script[0].owner_token), "ADOPTED");
	f.query_script[1] = tres(TPA_NOT_FOUND, 200);
	f.query_script[2] = tres(TPA_UNAVAILABLE, 0);
	f.query_script[3] = tres(TPA_UNAVAILABLE, 0);
	f.query_script[4] = tres(TPA_UNAVAILABLE, 0);
	f.n_query_script = 5;
	CHECK_INT(activation_reconcile(a, 1, on_reconciled, NULL), 0);
	pump(&f);
	/* F2's "not found" is not trusted yet: its attempt was sent by another process (this
	 * one restarted), and for all this one knows the wall clock stepped since: it waits
	 * upstream.settle-after from its own start. */
	CHECK_INT(reconciled, 2);
	CHECK_INT(row_of(&f, euis[0])->state, STORE_ISSUED);
	CHECK_STR(row_of(&f, euis[0])->owner_token, "ADOPTED");
	CHECK_INT(row_of(&f, euis[1])->state, STORE_PENDING);
	CHECK_INT(f.imports, 0);
	f.now += 60000;
	f.query_script[f.n_query_script++] = tres(TPA_NOT_FOUND, 200);
	for (int i = 0; i < 3; i++) /* F3's queries keep failing */
		f.query_script[f.n_query_script++] = tres(TPA_UNAVAILABLE, 0);
	CHECK_INT(activation_reconcile(a, 1, on_reconciled, NULL), 0);
	pump(&f);
	CHECK_INT(reconciled, 1);
	CHECK_INT(row_of(&f, euis[1])->state, STORE_ISSUED);
	CHECK_INT(row_of(&f, euis[2])->state, STORE_PENDING);
	CHECK_INT(f.imports, 1);
	activation_free(a);
}

/*
 * On a store shared with other lines, an attempt of another line whose claim ran out may
 * have been sent after this process started: its window counts from the first look.
 */
static void test_shared_store_counts_from_the_first_look(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	activation_set_shared_store(a, true);
	f.now += 3600000; /* this process has run an hour */
	/* An attempt of another line, by its clock long ago. */
	stored_row(&f, "00000000000000F9", STORE_PENDING, 1, EPOCH_MS + f.now - 600000);
	struct act_request q = se_req("00000000000000F9", TKM1);
	struct got g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_UNKNOWN);
	CHECK_INT(g.res.retry_after, 60);
	CHECK_INT(f.imports, 0);
	f.now += 60000;
	g = run(a, &f, &q);
	CHECK_INT(g.res.outcome, ACT_OK);
	CHECK_INT(f.imports, 1);
	activation_free(a);
}

/* A row the settler listed as PENDING is FAILED by the time it is read: nothing is sent. */
static void test_settler_leaves_failed_rows(void)
{
	struct fake f = {0};
	struct activation *a = activation_new(&ops, &f, "0000000000000000", "00000000");
	struct store_record *r =
	    stored_row(&f, "00000000000000F9", STORE_PENDING, 1, EPOCH_MS - 600000);
	reconciled = 99;
	f.fail_on_read = r; /* settled by another request between the list and the read */
	CHECK_INT(activation_reconcile(a, 1, on_reconciled, NULL), 0);
	pump(&f);
	CHECK_INT(reconciled, 0); /* done, nothing left PENDING */
	CHECK_INT(row_of(&f, "00000000000000F9")->state, STORE_FAILED);
	CHECK_INT(f.imports, 0);
	CHECK_INT(f.queries, 0);
	activation_free(a);
}

int main(void)
{
	test_live_then_stored();
	test_app_keys();
	test_unknown_outcomes();
	test_settle_rules();
	test_refusals();
	test_store_failures();
	test_concurrent_same_device();
	test_reconcile();
	test_shared_store_counts_from_the_first_look();
	test_settler_leaves_failed_rows();
	return tap_done();
}
