/* store: the backend-neutral store calls, passed on to SQLite or PostgreSQL. */
#include "store.h"
#include "store_backend.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

struct store {
	struct event_base *base;
	struct sqlite_store *sq; /* exactly one of sq, pg */
	struct pg_store *pg;
};

int store_open(struct event_base *base, const struct store_options *o, struct store **ret,
	       char *err, size_t errlen)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->base = base;
	int r = o->backend == STORE_POSTGRESQL ? pg_store_open(base, o, &s->pg, err, errlen)
					       : sqlite_store_open(base, o, &s->sq, err, errlen);
	if (r < 0) {
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
	if (s->pg)
		pg_store_close(s->pg);
	else
		sqlite_store_close(s->sq);
	free(s);
}

#define PASS(call, ...) (s->pg ? pg_store_##call(s->pg, __VA_ARGS__) : sqlite_store_##call(s->sq, __VA_ARGS__))

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

const char *store_backend_name(struct store *s)
{
	return s && s->pg ? "postgresql" : "sqlite";
}

void store_test_set_max_pages(struct store *s, uint32_t pages)
{
	if (s && s->sq)
		sqlite_store_test_set_max_pages(s->sq, pages);
}
