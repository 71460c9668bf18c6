/* store: the backend-neutral store calls, passed on to SQLite or PostgreSQL. */
#include "store.h"
#include "store_backend.h"
#include "store_sync.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <mbedtls/sha256.h>

#include "cred.h"
#include "hex.h"

void store_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

const char *store_state_name(enum store_state st)
{
	switch (st) {
	case STORE_PENDING:
		return "PENDING";
	case STORE_ISSUED:
		return "ISSUED";
	case STORE_FAILED:
		return "FAILED";
	case STORE_FOREIGN:
		return "FOREIGN";
	case STORE_RETIRED:
		return "RETIRED";
	}
	return NULL;
}

int store_state_parse(const char *name, enum store_state *ret)
{
	static const enum store_state all[] = {STORE_PENDING, STORE_ISSUED, STORE_FAILED,
					       STORE_FOREIGN, STORE_RETIRED};
	if (!name || !ret)
		return -EINVAL;
	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
		if (strcmp(name, store_state_name(all[i])) == 0) {
			*ret = all[i];
			return 0;
		}
	}
	return -EINVAL;
}

bool store_fits(const char *s, size_t size)
{
	return strnlen(s, size) < size;
}

/* True if s is exactly n hex digits, or empty when optional. */
static bool hex_field_ok(const char *s, size_t size, size_t n, bool optional)
{
	if (!store_fits(s, size))
		return false;
	if (optional && !*s)
		return true;
	return hex_valid(s, n);
}

int store_record_check(const struct store_record *r)
{
	if (!hex_field_ok(r->dev_eui, sizeof(r->dev_eui), HEX_EUI, false) ||
	    !hex_field_ok(r->join_eui, sizeof(r->join_eui), HEX_EUI, false) ||
	    !hex_field_ok(r->profile_id, sizeof(r->profile_id), HEX_PROFILE, false) ||
	    !hex_field_ok(r->tkm_info, sizeof(r->tkm_info), HEX_TKM_INFO, true) ||
	    !store_fits(r->serial, sizeof(r->serial)) ||
	    !store_fits(r->owner_token, sizeof(r->owner_token)) ||
	    !store_fits(r->ref, sizeof(r->ref)) || !store_fits(r->last_error, sizeof(r->last_error)) ||
	    !store_fits(r->origin, sizeof(r->origin)) || !store_state_name(r->state) ||
	    (strcmp(r->origin, "activate") != 0 && strcmp(r->origin, "import") != 0))
		return -EINVAL;
	return 0;
}

int store_attempt_check(const struct store_attempt *a)
{
	if (a->n == 0 || !store_fits(a->digest, sizeof(a->digest)) ||
	    !store_fits(a->outcome, sizeof(a->outcome)) || !a->outcome[0])
		return -EINVAL;
	return 0;
}

/* What an asynchronous read of the SQLite store asks for. */
enum read_kind { READ_GET, READ_LIST, READ_COUNT, READ_AUDIT, READ_ATTEMPTS, READ_KEY };

/* A DevEUI's label on its way from the reader thread to the loop's label cache. */
struct label_slot {
	char dev_eui[HEX_EUI + 1];
	struct store_label *l;
};

/* An asynchronous read of the SQLite store: run on its reader thread, answered on the loop. */
struct deferred {
	store_get_fn *get_cb; /* store_get_async */
	store_rows_fn *rows_cb;
	void *arg;
	enum read_kind kind;
	char dev_eui[HEX_EUI + 1]; /* "" for the audit of every device */
	char after[HEX_EUI + 1];
	bool with_labels; /* READ_LIST: their labels too (Export) */
	int state;
	size_t limit;
	int64_t after_id;
	uint8_t app_key[16];
	int err;
	struct store_record rec;
	struct store_rows rows;
	size_t cap; /* entries allocated in the rows' array */
	/* The labels of the rows read (READ_GET, READ_LIST), for the loop's label cache. */
	struct store *store;
	struct label_slot *labels;
	size_t n_labels;
};

/*
 * SQLite: the labels read with their rows on the reader thread, by DevEUI, for the loop
 * to make labels without reading the file (a miss draws the label). Each is taken by its
 * first use; at most LABEL_KEPT are kept, the oldest dropped first (a row read for
 * something else than a label is not kept for ever).
 */
#define LABEL_KEPT 1024
#define LABEL_BUCKETS 2048

struct label_entry {
	char dev_eui[HEX_EUI + 1];
	struct store_label *l; /* NULL: the entry is free */
	int next;	       /* the next entry of its bucket, -1: none */
};

struct label_cache {
	struct label_entry e[LABEL_KEPT];
	int bucket[LABEL_BUCKETS];
	unsigned oldest; /* the next entry to reuse */
};

struct store {
	struct event_base *base;
	struct sqlite_store *sq; /* exactly one of sq, pg */
	struct pg_store *pg;
	struct label_cache *labels; /* SQLite only */
	/* store_failing(): the counters at the last look, and what they said. */
	uint64_t seen_failures, seen_commits;
	bool failing;
};

static unsigned label_bucket(const char *dev_eui)
{
	uint32_t h = 2166136261u;
	for (int i = 0; i < HEX_EUI && dev_eui[i]; i++)
		h = (h ^ (uint8_t)dev_eui[i]) * 16777619u;
	return h % LABEL_BUCKETS;
}

/* Drop entry i from its bucket and free its label. */
static void label_drop(struct label_cache *c, int i)
{
	struct label_entry *e = &c->e[i];
	if (!e->l)
		return;
	for (int *p = &c->bucket[label_bucket(e->dev_eui)]; *p >= 0; p = &c->e[*p].next)
		if (*p == i) {
			*p = e->next;
			break;
		}
	cred_wipe(e->l, sizeof(*e->l));
	free(e->l);
	e->l = NULL;
}

/* Keep l (owned) as dev_eui's label (upper-case), in place of the oldest entry. */
static void label_keep(struct store *s, const char *dev_eui, struct store_label *l)
{
	struct label_cache *c = s->labels;
	if (!c) {
		free(l);
		return;
	}
	int i = (int)c->oldest;
	c->oldest = (c->oldest + 1) % LABEL_KEPT;
	label_drop(c, i);
	struct label_entry *e = &c->e[i];
	hex_upper(e->dev_eui, dev_eui, HEX_EUI);
	e->l = l;
	unsigned b = label_bucket(e->dev_eui);
	e->next = c->bucket[b];
	c->bucket[b] = i;
}

static struct label_cache *label_cache_new(void)
{
	struct label_cache *c = calloc(1, sizeof(*c));
	if (c)
		for (int i = 0; i < LABEL_BUCKETS; i++)
			c->bucket[i] = -1;
	return c;
}

static void label_cache_free(struct label_cache *c)
{
	for (int i = 0; c && i < LABEL_KEPT; i++)
		label_drop(c, i);
	free(c);
}

int store_label_cached(struct store *s, const char *dev_eui, struct store_label *ret)
{
	if (!s || !ret || !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct label_cache *c = s->labels;
	if (!c)
		return -ENOENT; /* PostgreSQL: drawing costs less than a round trip */
	char key[HEX_EUI + 1];
	hex_upper(key, dev_eui, HEX_EUI);
	for (int i = c->bucket[label_bucket(key)]; i >= 0; i = c->e[i].next)
		if (strcmp(c->e[i].dev_eui, key) == 0) {
			/* Taken: it was read for this use; wanted again, it is read again. */
			*ret = *c->e[i].l;
			label_drop(c, i);
			return 0;
		}
	return -ENOENT;
}

void store_rows_clear(struct store_rows *rows)
{
	if (!rows)
		return;
	if (rows->records) {
		cred_wipe(rows->records, rows->n * sizeof(*rows->records));
		free(rows->records);
	}
	free(rows->audit);
	free(rows->attempts);
	cred_wipe(rows, sizeof(*rows));
}

/* Make room for one more entry of size each in *array (cap entries now). */
static int grow(void **array, size_t n, size_t *cap, size_t each)
{
	if (n < *cap)
		return 0;
	size_t c = *cap ? 2 * *cap : 16;
	void *p = calloc(c, each);
	if (!p)
		return -ENOMEM;
	if (*array) {
		memcpy(p, *array, n * each);
		cred_wipe(*array, n * each);
		free(*array);
	}
	*array = p;
	*cap = c;
	return 0;
}

int store_rows_add_record(struct store_rows *rows, size_t *cap, const struct store_record *r)
{
	if (grow((void **)&rows->records, rows->n, cap, sizeof(*r)) < 0)
		return -ENOMEM;
	rows->records[rows->n++] = *r;
	return 0;
}

int store_rows_add_audit(struct store_rows *rows, size_t *cap, const struct store_audit_entry *e)
{
	if (grow((void **)&rows->audit, rows->n, cap, sizeof(*e)) < 0)
		return -ENOMEM;
	rows->audit[rows->n++] = *e;
	return 0;
}

int store_rows_add_attempt(struct store_rows *rows, size_t *cap, const struct store_attempt *a)
{
	if (grow((void **)&rows->attempts, rows->n, cap, sizeof(*a)) < 0)
		return -ENOMEM;
	rows->attempts[rows->n++] = *a;
	return 0;
}

static int collect_record(const struct store_record *r, void *arg)
{
	struct deferred *d = arg;
	return store_rows_add_record(&d->rows, &d->cap, r);
}

static int collect_audit(const struct store_audit_entry *e, void *arg)
{
	struct deferred *d = arg;
	return store_rows_add_audit(&d->rows, &d->cap, e);
}

static int collect_attempt(const struct store_attempt *a, void *arg)
{
	struct deferred *d = arg;
	return store_rows_add_attempt(&d->rows, &d->cap, a);
}

/* On the reader thread: the stored labels of the issued rows among the n read. */
static void read_labels(struct sqlite_reader *rd, struct deferred *d,
			const struct store_record *recs, size_t n)
{
	if (!n || !(d->labels = calloc(n, sizeof(*d->labels))))
		return;
	for (size_t i = 0; i < n; i++) {
		/* Labels are made of issued devices only: the rest is not worth a read. */
		if (recs[i].state != STORE_ISSUED || !recs[i].owner_token[0])
			continue;
		struct store_label *l = malloc(sizeof(*l));
		if (l && sqlite_reader_label_get(rd, recs[i].dev_eui, l) == 0) {
			memcpy(d->labels[d->n_labels].dev_eui, recs[i].dev_eui, HEX_EUI + 1);
			d->labels[d->n_labels++].l = l;
		} else {
			free(l);
		}
	}
}

/* On the reader thread: the read itself. */
static void read_run(struct sqlite_reader *rd, void *arg)
{
	struct deferred *d = arg;
	if (!rd) {
		d->err = -ESHUTDOWN; /* the store closed first */
		return;
	}
	switch (d->kind) {
	case READ_GET:
		d->err = sqlite_reader_get(rd, d->dev_eui, &d->rec);
		if (d->err == 0)
			read_labels(rd, d, &d->rec, 1);
		break;
	case READ_LIST:
		d->err = sqlite_reader_list(rd, d->state, d->after, d->limit, collect_record, d);
		if (d->err == 0 && d->with_labels)
			read_labels(rd, d, d->rows.records, d->rows.n);
		break;
	case READ_COUNT:
		d->err = sqlite_reader_count(rd, d->rows.counts);
		break;
	case READ_AUDIT:
		d->err = sqlite_reader_audit_list(rd, d->dev_eui[0] ? d->dev_eui : NULL,
						  d->after_id, d->limit, collect_audit, d);
		break;
	case READ_ATTEMPTS:
		d->err = sqlite_reader_attempt_list(rd, d->dev_eui, collect_attempt, d);
		break;
	case READ_KEY:
		d->err = sqlite_reader_key_pool_find(rd, d->app_key, d->rows.hsm_key);
		break;
	}
	if (d->err < 0)
		store_rows_clear(&d->rows);
}

/* On the loop: the answer, then forget the read. */
static void read_done(void *arg)
{
	struct deferred *d = arg;
	for (size_t i = 0; i < d->n_labels; i++)
		label_keep(d->store, d->labels[i].dev_eui, d->labels[i].l);
	free(d->labels);
	const char *why = d->err ? strerror(-d->err) : NULL;
	if (d->get_cb)
		d->get_cb(d->err, d->err ? NULL : &d->rec, why, d->arg);
	else
		d->rows_cb(d->err, why, d->err ? NULL : &d->rows, d->arg);
	cred_wipe(&d->rec, sizeof(d->rec));
	store_rows_clear(&d->rows);
	cred_wipe(d->app_key, sizeof(d->app_key));
	free(d);
}

/*
 * Start a read of kind on SQLite's reader thread (params set by fill). Bad arguments are
 * refused here, as the sqlite_reader_* calls would, so that no callback follows them.
 */
static int read_start(struct store *s, struct deferred *d)
{
	d->store = s;
	int r = sqlite_store_read_async(s->sq, read_run, read_done, d);
	if (r < 0) {
		cred_wipe(d->app_key, sizeof(d->app_key));
		free(d);
	}
	return r;
}

static struct deferred *read_new(enum read_kind kind, store_get_fn *get_cb,
				 store_rows_fn *rows_cb, void *arg)
{
	struct deferred *d = calloc(1, sizeof(*d));
	if (d) {
		d->kind = kind;
		d->get_cb = get_cb;
		d->rows_cb = rows_cb;
		d->arg = arg;
	}
	return d;
}

int store_get_async(struct store *s, const char *dev_eui, store_get_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	if (s->pg)
		return pg_store_get_async(s->pg, dev_eui, cb, arg);
	if (!hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct deferred *d = read_new(READ_GET, cb, NULL, arg);
	if (!d)
		return -ENOMEM;
	memcpy(d->dev_eui, dev_eui, HEX_EUI);
	return read_start(s, d);
}

static int list_async(struct store *s, int state, const char *after, size_t limit,
		      bool with_labels, store_rows_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	if (s->pg)
		return pg_store_list_async(s->pg, state, after, limit, cb, arg);
	if (state < -1 || state >= STORE_N_STATES || (after && strlen(after) > HEX_EUI))
		return -EINVAL;
	struct deferred *d = read_new(READ_LIST, NULL, cb, arg);
	if (!d)
		return -ENOMEM;
	d->with_labels = with_labels;
	d->state = state;
	snprintf(d->after, sizeof(d->after), "%s", after ? after : "");
	d->limit = limit;
	return read_start(s, d);
}

int store_list_async(struct store *s, int state, const char *after, size_t limit,
		     store_rows_fn *cb, void *arg)
{
	return list_async(s, state, after, limit, false, cb, arg);
}

int store_list_labels_async(struct store *s, int state, const char *after, size_t limit,
			    store_rows_fn *cb, void *arg)
{
	return list_async(s, state, after, limit, true, cb, arg);
}

int store_count_async(struct store *s, store_rows_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	if (s->pg)
		return pg_store_count_async(s->pg, cb, arg);
	struct deferred *d = read_new(READ_COUNT, NULL, cb, arg);
	return d ? read_start(s, d) : -ENOMEM;
}

int store_audit_list_async(struct store *s, const char *dev_eui, int64_t after_id, size_t limit,
			   store_rows_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	if (s->pg)
		return pg_store_audit_list_async(s->pg, dev_eui, after_id, limit, cb, arg);
	if (dev_eui && !hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct deferred *d = read_new(READ_AUDIT, NULL, cb, arg);
	if (!d)
		return -ENOMEM;
	if (dev_eui)
		memcpy(d->dev_eui, dev_eui, HEX_EUI);
	d->after_id = after_id;
	d->limit = limit;
	return read_start(s, d);
}

int store_attempt_list_async(struct store *s, const char *dev_eui, store_rows_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	if (s->pg)
		return pg_store_attempt_list_async(s->pg, dev_eui, cb, arg);
	if (!hex_valid(dev_eui, HEX_EUI))
		return -EINVAL;
	struct deferred *d = read_new(READ_ATTEMPTS, NULL, cb, arg);
	if (!d)
		return -ENOMEM;
	memcpy(d->dev_eui, dev_eui, HEX_EUI);
	return read_start(s, d);
}

int store_key_pool_find_async(struct store *s, const uint8_t app_key[16], store_rows_fn *cb,
			      void *arg)
{
	if (!s || !cb || !app_key)
		return -EINVAL;
	if (s->pg)
		return pg_store_key_pool_find_async(s->pg, app_key, cb, arg);
	struct deferred *d = read_new(READ_KEY, NULL, cb, arg);
	if (!d)
		return -ENOMEM;
	memcpy(d->app_key, app_key, 16);
	return read_start(s, d);
}

int store_check(const struct store_options *o, char *err, size_t errlen)
{
	return o->backend == STORE_POSTGRESQL ? 0 : sqlite_store_check(o, err, errlen);
}

int store_open(struct event_base *base, const struct store_options *o, struct store **ret,
	       char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	if (o->backend != STORE_POSTGRESQL && !(s->labels = label_cache_new())) {
		free(s);
		return -ENOMEM;
	}
	int r = o->backend == STORE_POSTGRESQL ? pg_store_open(base, o, &s->pg, err, errlen)
					       : sqlite_store_open(base, o, &s->sq, err, errlen);
	if (r < 0) {
		label_cache_free(s->labels);
		free(s);
		return r;
	}
	*ret = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	/* Reads in flight are answered (and the writes they start committed) in there. */
	if (s->pg)
		pg_store_close(s->pg);
	else
		sqlite_store_close(s->sq);
	label_cache_free(s->labels);
	free(s);
}

#define PASS(call, ...)                                                                            \
	(s->pg ? pg_store_##call(s->pg, __VA_ARGS__) : sqlite_store_##call(s->sq, __VA_ARGS__))

int store_get(struct store *s, const char *dev_eui, struct store_record *ret)
{
	return s ? PASS(get, dev_eui, ret) : -EINVAL;
}

int store_insert(struct store *s, const struct store_record *r, store_done_fn *cb, void *arg)
{
	return s ? PASS(write_attempt, r, true, NULL, cb, arg) : -EINVAL;
}

int store_update(struct store *s, const struct store_record *r, store_done_fn *cb, void *arg)
{
	return s ? PASS(write_attempt, r, false, NULL, cb, arg) : -EINVAL;
}

int store_write_attempt(struct store *s, const struct store_record *r, bool insert,
			const struct store_attempt *a, store_done_fn *cb, void *arg)
{
	return s ? PASS(write_attempt, r, insert, a, cb, arg) : -EINVAL;
}

int store_attempt_list(struct store *s, const char *dev_eui,
		       int (*fn)(const struct store_attempt *a, void *arg), void *arg)
{
	return s ? PASS(attempt_list, dev_eui, fn, arg) : -EINVAL;
}

int store_claim_renew(struct store *s, const char *dev_eui)
{
	if (!s)
		return -EINVAL;
	return s->pg ? pg_store_claim_renew(s->pg, dev_eui) : 0;
}

int store_audit(struct store *s, const char *dev_eui, const char *method, uint32_t uid, int32_t pid,
		const char *outcome)
{
	return s ? PASS(audit, dev_eui, method, uid, pid, outcome) : -EINVAL;
}

int store_list(struct store *s, int state, const char *after, size_t limit,
	       int (*fn)(const struct store_record *r, void *arg), void *arg)
{
	return s ? PASS(list, state, after, limit, fn, arg) : -EINVAL;
}

int store_count(struct store *s, uint64_t counts[STORE_N_STATES])
{
	return s ? PASS(count, counts) : -EINVAL;
}

int store_audit_list(struct store *s, const char *dev_eui, int64_t after_id, size_t limit,
		     int (*fn)(const struct store_audit_entry *e, void *arg), void *arg)
{
	return s ? PASS(audit_list, dev_eui, after_id, limit, fn, arg) : -EINVAL;
}

int store_label_put(struct store *s, const char *dev_eui, const struct store_label *l)
{
	if (!s)
		return -EINVAL;
	return PASS(label_put, dev_eui, l);
}

int store_label_get(struct store *s, const char *dev_eui, struct store_label *ret)
{
	return s ? PASS(label_get, dev_eui, ret) : -EINVAL;
}

void store_stats(struct store *s, struct store_stats *ret)
{
	if (s)
		PASS(stats, ret);
}

bool store_failing(struct store *s)
{
	if (!s)
		return false;
	struct store_stats ss;
	store_stats(s, &ss);
	if (ss.batch_failures > s->seen_failures)
		s->failing = true;
	else if (ss.commits > s->seen_commits)
		s->failing = false;
	s->seen_failures = ss.batch_failures;
	s->seen_commits = ss.commits;
	return s->failing;
}

json_t *store_status_json(struct store *s, const uint64_t counts[STORE_N_STATES])
{
	if (!s)
		return NULL;
	json_t *o = s->pg ? pg_store_status_json(s->pg) : sqlite_store_status_json(s->sq);
	json_t *rows = NULL;
	if (o && counts) {
		rows = json_object();
		for (int i = 0; rows && i < STORE_N_STATES; i++)
			json_object_set_new(rows, store_state_name((enum store_state)i),
					    json_integer((json_int_t)counts[i]));
	}
	if (o)
		json_object_set_new(o, "rows", rows ? rows : json_null());
	return o;
}

int store_key_pool_put(struct store *s, const uint8_t app_key[16], const uint8_t hsm_key[16])
{
	return s ? PASS(key_pool_put, app_key, hsm_key) : -EINVAL;
}

int store_key_pool_taken(struct store *s, const uint8_t app_key[16], const char *dev_eui)
{
	return s ? PASS(key_pool_taken, app_key, dev_eui) : -EINVAL;
}

int store_key_pool_load(struct store *s, size_t max,
			int (*fn)(const uint8_t app_key[16], const uint8_t hsm_key[16], void *arg),
			void *arg)
{
	return s ? PASS(key_pool_load, max, fn, arg) : -EINVAL;
}

int store_key_pool_find(struct store *s, const uint8_t app_key[16], uint8_t ret_hsm[16])
{
	return s ? PASS(key_pool_find, app_key, ret_hsm) : -EINVAL;
}

const char *store_backend_name(struct store *s)
{
	return s && s->pg ? "postgresql" : "sqlite";
}

void store_test_set_max_pages(struct store *s, uint32_t pages)
{
	if (s && s->sq)
		sqlite_store_test_set_max_pages(s->sq, pages);
}

void store_key_digest(const uint8_t app_key[16], uint8_t out[32])
{
	static const char label[] = "tpad app-key-pool v1";
	mbedtls_sha256_context c;
	mbedtls_sha256_init(&c);
	(void)mbedtls_sha256_starts_ret(&c, 0);
	(void)mbedtls_sha256_update_ret(&c, (const unsigned char *)label, sizeof(label) - 1);
	(void)mbedtls_sha256_update_ret(&c, app_key, 16);
	(void)mbedtls_sha256_finish_ret(&c, out);
	mbedtls_sha256_free(&c);
}
