/* test-sesscache: the unsealed sessions by AppSKey field and device. */
#include <stdio.h>
#include <string.h>

#include "sesscache.h"
#include "tap.h"

static struct as_session session(int64_t id, const char *customer_id, const char *dev_eui)
{
	struct as_session s = {.id = id, .fcnt_dn_next = (uint32_t)id};
	snprintf(s.customer_id, sizeof(s.customer_id), "%s", customer_id);
	snprintf(s.dev_eui, sizeof(s.dev_eui), "%s", dev_eui);
	memset(s.key, (int)id, sizeof(s.key));
	return s;
}

static void field_of(int i, char out[SESSCACHE_FIELD_MAX])
{
	snprintf(out, SESSCACHE_FIELD_MAX, "ecb::%032x", (unsigned)i * 2654435761u);
}

int main(void)
{
	struct sesscache_stats st;
	struct as_session got;
	char f[SESSCACHE_FIELD_MAX], dev[17];

	/* One set: the least recently used session gives way. */
	struct sesscache *one = sesscache_new(1);
	CHECK(one != NULL);
	if (!one)
		return tap_done();
	sesscache_get_stats(one, &st);
	CHECK_INT(st.capacity, SESSCACHE_WAYS);
	for (int i = 0; i < SESSCACHE_WAYS; i++) {
		field_of(i, f);
		snprintf(dev, sizeof(dev), "%016X", i);
		struct as_session s = session(i + 1, "100", dev);
		sesscache_put(one, f, &s);
	}
	field_of(0, f);
	CHECK(sesscache_get(one, f, "100", "0000000000000000",
			    &got)); /* 0 is used now: 1 is oldest */
	CHECK_INT(got.id, 1);
	CHECK_INT(got.key[0], 1);
	field_of(100, f);
	struct as_session s100 = session(101, "100", "0000000000000064");
	sesscache_put(one, f, &s100);
	field_of(1, f);
	CHECK(!sesscache_get(one, f, "100", "0000000000000001", &got));
	field_of(0, f);
	CHECK(sesscache_get(one, f, "100", "0000000000000000", &got));
	field_of(100, f);
	CHECK(sesscache_get(one, f, "100", "0000000000000064", &got));
	CHECK_INT(got.id, 101);
	sesscache_get_stats(one, &st);
	CHECK_INT(st.entries, SESSCACHE_WAYS);
	CHECK_INT(st.replaced, 1);
	CHECK_INT(st.hits, 3);
	CHECK_INT(st.misses, 1);

	/* The same field again for the same device replaces, for another device adds. */
	field_of(0, f);
	struct as_session again = session(7, "100", "0000000000000000");
	sesscache_put(one, f, &again);
	CHECK(sesscache_get(one, f, "100", "0000000000000000", &got));
	CHECK_INT(got.id, 7);
	CHECK(!sesscache_get(one, f, "100", "0000000000000009", &got));
	CHECK(!sesscache_get(one, f, "101", "0000000000000000", &got));
	CHECK(!sesscache_get(one, "kw::0", "100", "0000000000000000", &got));

	/* Updated in place only when it is still that session. */
	CHECK(sesscache_session(one, f, "100", "0000000000000000", 1) == NULL);
	struct as_session *live = sesscache_session(one, f, "100", "0000000000000000", 7);
	CHECK(live != NULL);
	if (live)
		live->fcnt_dn_next = 99;
	CHECK(sesscache_get(one, f, "100", "0000000000000000", &got));
	CHECK_INT(got.fcnt_dn_next, 99);

	/* A field longer than any the parser takes is not cached. */
	char lng[SESSCACHE_FIELD_MAX + 8];
	memset(lng, 'a', sizeof(lng) - 1);
	lng[sizeof(lng) - 1] = '\0';
	struct as_session l = session(8, "100", "0000000000000008");
	sesscache_put(one, lng, &l);
	CHECK(!sesscache_get(one, lng, "100", "0000000000000008", &got));
	sesscache_free(one);

	/*
	 * The default size: a thousand devices all stay. (A direct-mapped table of 4096 lost
	 * about one device in forty of a hundred to collisions, each uplink of which then read
	 * the store and unsealed its key again.) Past that, sets begin to fill.
	 */
	struct sesscache *c = sesscache_new(8192);
	CHECK(c != NULL);
	if (!c)
		return tap_done();
	int n = 1000;
	for (int i = 0; i < n; i++) {
		field_of(i, f);
		snprintf(dev, sizeof(dev), "%016X", i);
		struct as_session s = session(i + 1, "100", dev);
		sesscache_put(c, f, &s);
	}
	int lost = 0, wrong = 0;
	for (int i = 0; i < n; i++) {
		field_of(i, f);
		snprintf(dev, sizeof(dev), "%016X", i);
		if (!sesscache_get(c, f, "100", dev, &got))
			lost++;
		else if (got.id != i + 1)
			wrong++;
	}
	CHECK_INT(lost, 0);
	CHECK_INT(wrong, 0);
	sesscache_get_stats(c, &st);
	CHECK_INT(st.replaced, 0);
	CHECK_INT(st.entries, n);
	sesscache_free(c);
	sesscache_free(NULL);
	return tap_done();
}
