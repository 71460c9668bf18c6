/* sesscache: the unsealed sessions, by AppSKey field and device (see sesscache.h). */
#include "sesscache.h"

#include <stdlib.h>
#include <string.h>

#include "cred.h"
#include "fnv.h"

struct entry {
	uint64_t used; /* the cache's clock at the last get or put; 0: empty */
	uint64_t hash;
	char field[SESSCACHE_FIELD_MAX];
	struct as_session s;
};

struct sesscache {
	struct entry *e; /* sets * SESSCACHE_WAYS, each set's ways side by side */
	size_t sets;	 /* a power of two */
	uint64_t clock;
	struct sesscache_stats stats;
};

/* FNV-1a over the field and the device: which set, and a quick first comparison. */
static uint64_t key_hash(const char *field, const char *customer_id, const char *dev_eui)
{
	uint64_t h = FNV64_START;
	const char *parts[] = {field, customer_id, dev_eui};
	for (size_t i = 0; i < 3; i++) /* with its NUL: "ab"+"c" is not "a"+"bc" */
		h = fnv64(h, parts[i], strlen(parts[i]) + 1);
	return h;
}

static struct entry *set_of(struct sesscache *c, uint64_t hash)
{
	return &c->e[((hash ^ (hash >> 29)) & (c->sets - 1)) * SESSCACHE_WAYS];
}

static struct entry *lookup(struct sesscache *c, uint64_t hash, const char *field,
			    const char *customer_id, const char *dev_eui)
{
	struct entry *set = set_of(c, hash);
	for (size_t w = 0; w < SESSCACHE_WAYS; w++) {
		struct entry *e = &set[w];
		if (e->used && e->hash == hash && strcmp(e->field, field) == 0 &&
		    strcmp(e->s.dev_eui, dev_eui) == 0 &&
		    strcmp(e->s.customer_id, customer_id) == 0)
			return e;
	}
	return NULL;
}

struct sesscache *sesscache_new(size_t capacity)
{
	struct sesscache *c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->sets = 1;
	while (c->sets * SESSCACHE_WAYS < capacity)
		c->sets *= 2;
	c->e = calloc(c->sets * SESSCACHE_WAYS, sizeof(*c->e));
	if (!c->e) {
		free(c);
		return NULL;
	}
	c->stats.capacity = c->sets * SESSCACHE_WAYS;
	return c;
}

void sesscache_free(struct sesscache *c)
{
	if (!c)
		return;
	cred_wipe(c->e, c->sets * SESSCACHE_WAYS * sizeof(*c->e));
	free(c->e);
	free(c);
}

bool sesscache_get(struct sesscache *c, const char *field, const char *customer_id,
		   const char *dev_eui, struct as_session *ret)
{
	struct entry *e =
	    lookup(c, key_hash(field, customer_id, dev_eui), field, customer_id, dev_eui);
	if (!e) {
		c->stats.misses++;
		return false;
	}
	e->used = ++c->clock;
	c->stats.hits++;
	*ret = e->s;
	return true;
}

void sesscache_put(struct sesscache *c, const char *field, const struct as_session *s)
{
	size_t n = strlen(field);
	if (n >= SESSCACHE_FIELD_MAX)
		return; /* not a field tpas takes; never cached */
	uint64_t hash = key_hash(field, s->customer_id, s->dev_eui);
	struct entry *e = lookup(c, hash, field, s->customer_id, s->dev_eui);
	if (!e) {
		/* An empty way, else the least recently used. */
		struct entry *set = set_of(c, hash);
		e = &set[0];
		for (size_t w = 0; w < SESSCACHE_WAYS && e->used; w++)
			if (!set[w].used || set[w].used < e->used)
				e = &set[w];
		if (e->used)
			c->stats.replaced++;
		else
			c->stats.entries++;
	}
	cred_wipe(e, sizeof(*e));
	e->used = ++c->clock;
	e->hash = hash;
	memcpy(e->field, field, n + 1);
	e->s = *s;
}

struct as_session *sesscache_session(struct sesscache *c, const char *field,
				     const char *customer_id, const char *dev_eui, int64_t id)
{
	struct entry *e =
	    lookup(c, key_hash(field, customer_id, dev_eui), field, customer_id, dev_eui);
	return e && e->s.id == id ? &e->s : NULL;
}

void sesscache_get_stats(const struct sesscache *c, struct sesscache_stats *ret)
{
	*ret = c->stats;
}
