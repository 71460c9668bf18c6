/* store: the backend-neutral store calls, passed on to SQLite or PostgreSQL. */
#include "store.h"
#include "store_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <mbedtls/sha256.h>

#include "cred.h"

/* A read of the SQLite store done at once, its callback deferred to the loop. */
struct deferred_get {
	struct deferred_get *next;
	store_get_fn *cb;
	void *arg;
	int err;
	struct store_record rec;
};

struct store {
	struct event_base *base;
	struct sqlite_store *sq; /* exactly one of sq, pg */
	struct pg_store *pg;
	struct event *defer_ev;
	struct deferred_get *d_head, *d_tail;
};

/* Run the deferred read callbacks queued so far (more may be queued by them). */
static void run_deferred(struct store *s)
{
	struct deferred_get *list = s->d_head;
	s->d_head = s->d_tail = NULL;
	while (list) {
		struct deferred_get *next = list->next;
		list->cb(list->err, list->err ? NULL : &list->rec,
			 list->err ? strerror(-list->err) : NULL, list->arg);
		cred_wipe(&list->rec, sizeof(list->rec));
		free(list);
		list = next;
	}
}

static void on_defer(evutil_socket_t fd, short what, void *arg)
{
	run_deferred(arg);
}

int store_get_async(struct store *s, const char *dev_eui, store_get_fn *cb, void *arg)
{
	if (!s || !cb)
		return -EINVAL;
	if (s->pg)
		return pg_store_get_async(s->pg, dev_eui, cb, arg);
	struct deferred_get *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->cb = cb;
	d->arg = arg;
	d->err = sqlite_store_get(s->sq, dev_eui, &d->rec);
	if (d->err == -EINVAL) {
		free(d);
		return -EINVAL;
	}
	if (s->d_tail)
		s->d_tail->next = d;
	else
		s->d_head = d;
	s->d_tail = d;
	event_active(s->defer_ev, EV_TIMEOUT, 0);
	return 0;
}

int store_open(struct event_base *base, const struct store_options *o, struct store **ret,
	       char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	s->defer_ev = event_new(base, -1, 0, on_defer, s);
	if (!s->defer_ev) {
		free(s);
		return -ENOMEM;
	}
	int r = o->backend == STORE_POSTGRESQL ? pg_store_open(base, o, &s->pg, err, errlen)
					       : sqlite_store_open(base, o, &s->sq, err, errlen);
	if (r < 0) {
		event_free(s->defer_ev);
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
	run_deferred(s);
	if (s->pg)
		pg_store_close(s->pg);
	else
		sqlite_store_close(s->sq);
	run_deferred(s);
	event_free(s->defer_ev);
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
	return s ? PASS(insert, r, cb, arg) : -EINVAL;
}

int store_update(struct store *s, const struct store_record *r, store_done_fn *cb, void *arg)
{
	return s ? PASS(update, r, cb, arg) : -EINVAL;
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
	return s ? PASS(label_put, dev_eui, l) : -EINVAL;
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

json_t *store_status_json(struct store *s)
{
	if (!s)
		return NULL;
	return s->pg ? pg_store_status_json(s->pg) : sqlite_store_status_json(s->sq);
}

int store_key_pool_put(struct store *s, const uint8_t app_key[16], const uint8_t hsm_key[16])
{
	return s ? PASS(key_pool_put, app_key, hsm_key) : -EINVAL;
}

int store_key_pool_taken(struct store *s, const uint8_t app_key[16])
{
	return s ? PASS(key_pool_taken, app_key) : -EINVAL;
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
