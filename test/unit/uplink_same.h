/*
 * uplink_same: whether uplink_parse() (uplink_fast first) and uplink_parse_library()
 * (jansson, libxml2) read a body the same way: the same result and reason, the same
 * fields, the same radio text byte for byte. Shared by test-tpas-crypto and fuzz-tunnel.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "uplink.h"
#include "uplink_read.h"

static inline bool uplink_fields_same(const struct uplink *a, const struct uplink *b)
{
	return strcmp(a->dev_eui, b->dev_eui) == 0 && strcmp(a->dev_eui_raw, b->dev_eui_raw) == 0 &&
	       strcmp(a->customer_id, b->customer_id) == 0 &&
	       strcmp(a->dev_addr, b->dev_addr) == 0 && a->dev_addr_n == b->dev_addr_n &&
	       strcmp(a->fport_s, b->fport_s) == 0 && a->fport == b->fport &&
	       strcmp(a->fcnt_up_s, b->fcnt_up_s) == 0 && a->fcnt_up == b->fcnt_up &&
	       a->has_fcnt_dn == b->has_fcnt_dn && a->fcnt_dn == b->fcnt_dn &&
	       strcmp(a->payload_hex, b->payload_hex) == 0 && strcmp(a->time, b->time) == 0 &&
	       a->key_kind == b->key_kind && strcmp(a->key_hex, b->key_hex) == 0 &&
	       strcmp(a->kek_label, b->kek_label) == 0;
}

/* 1: the same, 0: not, -1: out of memory. *fast tells whether uplink_fast read it. */
static inline int uplink_same(const char *body, size_t len, bool *fast)
{
	struct uplink a, b;
	char ra[200] = "", rb[200] = "";
	int r1 = uplink_parse(body, len, &a, ra, sizeof(ra));
	int r2 = uplink_parse_library(body, len, &b, rb, sizeof(rb));
	*fast = r1 == 0 && a.radio_text != NULL;
	int same = r1 == r2 && strcmp(ra, rb) == 0;
	if (same && r1 == 0) {
		char *ta = uplink_radio_take(&a), *tb = uplink_radio_take(&b);
		if (!ta || !tb)
			same = -1;
		else
			same = uplink_fields_same(&a, &b) && strcmp(ta, tb) == 0;
		free(ta);
		free(tb);
	}
	if (r1 == 0)
		uplink_clear(&a);
	if (r2 == 0)
		uplink_clear(&b);
	return r1 == -ENOMEM || r2 == -ENOMEM ? -1 : same;
}
