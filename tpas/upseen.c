/* upseen: an open-addressing hash set of (DevEUI, session, FCntUp) -> seq. */
#include "upseen.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DEV_EUI_MAX 16
#define INITIAL_SLOTS 1024 /* a power of two */

struct slot {
	int64_t session_id;
	int64_t seq; /* 0: the slot is free (a journal's seq starts at 1) */
	uint32_t fcnt_up;
	char dev_eui[DEV_EUI_MAX + 1];
};

struct upseen {
	struct slot *slots;
	size_t mask; /* slots - 1 */
	size_t count;
};

/* A 64-bit finalizer (MurmurHash3's fmix64): every input bit moves every output bit. */
static uint64_t mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

/*
 * The key's parts a word at a time (the DevEUI's 16 characters as two words): byte-wise
 * FNV-1a over them was a third of each probe, and a record takes several probes.
 */
static size_t hash(const char *dev_eui, int64_t session_id, uint32_t fcnt_up)
{
	uint64_t w[2] = {0, 0};
	memcpy(w, dev_eui, strnlen(dev_eui, DEV_EUI_MAX));
	/* session * an odd constant (a bijection) + FCntUp: distinct for any real pair. */
	uint64_t sf = (uint64_t)session_id * 0x9e3779b97f4a7c15ULL + fcnt_up;
	return (size_t)mix(w[0] ^ mix(w[1] ^ mix(sf)));
}

static bool same(const struct slot *s, const char *dev_eui, int64_t session_id, uint32_t fcnt_up)
{
	return s->fcnt_up == fcnt_up && s->session_id == session_id &&
	       strcmp(s->dev_eui, dev_eui) == 0;
}

/* The slot holding the key, or the free one where it would go. */
static struct slot *probe(const struct upseen *s, const char *dev_eui, int64_t session_id,
			  uint32_t fcnt_up)
{
	for (size_t i = hash(dev_eui, session_id, fcnt_up) & s->mask;; i = (i + 1) & s->mask) {
		struct slot *x = &s->slots[i];
		if (x->seq == 0 || same(x, dev_eui, session_id, fcnt_up))
			return x;
	}
}

struct upseen *upseen_new(void)
{
	struct upseen *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->slots = calloc(INITIAL_SLOTS, sizeof(*s->slots));
	if (!s->slots) {
		free(s);
		return NULL;
	}
	s->mask = INITIAL_SLOTS - 1;
	return s;
}

void upseen_free(struct upseen *s)
{
	if (!s)
		return;
	free(s->slots);
	free(s);
}

/* Twice the slots, every key placed again. */
static int grow(struct upseen *s)
{
	size_t n = (s->mask + 1) * 2;
	struct slot *old = s->slots, *slots = calloc(n, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	size_t old_n = s->mask + 1;
	s->slots = slots;
	s->mask = n - 1;
	for (size_t i = 0; i < old_n; i++)
		if (old[i].seq != 0)
			*probe(s, old[i].dev_eui, old[i].session_id, old[i].fcnt_up) = old[i];
	free(old);
	return 0;
}

int upseen_add(struct upseen *s, const char *dev_eui, int64_t session_id, uint32_t fcnt_up,
	       int64_t seq)
{
	if (strlen(dev_eui) > DEV_EUI_MAX || seq <= 0)
		return -EINVAL;
	/* At most half full: probes stay short. */
	if ((s->count + 1) * 2 > s->mask + 1) {
		int r = grow(s);
		if (r < 0)
			return r;
	}
	struct slot *x = probe(s, dev_eui, session_id, fcnt_up);
	if (x->seq == 0) {
		s->count++;
		x->session_id = session_id;
		x->fcnt_up = fcnt_up;
		strcpy(x->dev_eui, dev_eui);
	}
	x->seq = seq;
	return 0;
}

bool upseen_find(const struct upseen *s, const char *dev_eui, int64_t session_id, uint32_t fcnt_up,
		 int64_t *ret_seq)
{
	if (strlen(dev_eui) > DEV_EUI_MAX)
		return false;
	const struct slot *x = probe(s, dev_eui, session_id, fcnt_up);
	if (x->seq == 0)
		return false;
	*ret_seq = x->seq;
	return true;
}

size_t upseen_count(const struct upseen *s)
{
	return s->count;
}

void upseen_clear(struct upseen *s)
{
	if (s->count == 0)
		return;
	memset(s->slots, 0, (s->mask + 1) * sizeof(*s->slots));
	s->count = 0;
}
