/* uplink: the LRC-AS tunnel's DevEUI_uplink (JSON or XML body, query string) parsed and checked. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define UPLINK_MAX_CUSTOMER 64 /* characters of CustomerID */
#define UPLINK_MAX_LABEL 64    /* characters of a KEKLabel */
#define UPLINK_MAX_TIME 40     /* characters of a Time value */
#define UPLINK_MAX_QUERY 2048  /* bytes of the query string */
#define UPLINK_MAX_RADIO_DEPTH 32  /* objects and arrays nested in one radio field's value */
#define UPLINK_MAX_NUMBER_TEXTS 16 /* JSON numbers too large to hold, carried as text */

/* How the uplink's AppSKey field came. */
enum uplink_key {
	UPLINK_KEY_NONE,     /* no AppSKey field: the device's stored key decrypts */
	UPLINK_KEY_BLOCK,    /* 32 hex digits: one AES block under the ASTK */
	UPLINK_KEY_ENVELOPE, /* {KEKLabel, AESKey}: RFC 3394 under the labelled ASTK */
};

/* One DevEUI_uplink, fields validated; strings are the values as received. */
struct uplink {
	char dev_eui[17];			   /* upper-cased */
	char dev_eui_raw[17];			   /* as received, for the Token */
	char customer_id[UPLINK_MAX_CUSTOMER + 1]; /* "" when absent */
	char dev_addr[9];			   /* upper-cased; "" when absent */
	uint32_t dev_addr_n;			   /* dev_addr as a number, when present */
	char fport_s[4]; /* decimal as in the Token; "" absent */
	int fport;	 /* -1 when absent */
	char fcnt_up_s[11];
	uint32_t fcnt_up;
	bool has_fcnt_dn;
	uint32_t fcnt_dn;
	char payload_hex[2 * 255 + 1];	/* as received ("" when none) */
	char time[UPLINK_MAX_TIME + 1]; /* the body's Time, "" when absent */
	enum uplink_key key_kind;
	char key_hex[49]; /* AppSKey field, 32 or 48 hex digits */
	char kek_label[UPLINK_MAX_LABEL + 1];
	json_t *radio;	  /* every field not read above (LrrRSSI, Lrrs, CustomerData...), owned */
	char *radio_text; /* or, read by uplink_fast, the same as compact JSON text, owned */
};

/* The tunnel's query string. */
struct uplink_query {
	char signed_part[UPLINK_MAX_QUERY + 1]; /* as received, up to but without "&Token=" */
	char token[65];
	char time[UPLINK_MAX_TIME + 1]; /* Time, decoded ("" when absent) */
	char as_id[65];			/* AS_ID, decoded ("" when absent) */
};

/*
 * The radio fields as compact JSON text, the caller's to free (NULL: out of memory, also
 * when an allocation failed while it was written: jansson can leave a key out): the
 * text uplink_fast wrote, handed over (u no longer holds it), or written from u->radio.
 * A real is written with 15 significant digits at most (PROTO_JSON_FLAGS, as every
 * message), so one the LRC sent as decimal text comes out as it came ("868.1", not
 * "868.10000000000002").
 */
char *uplink_radio_take(struct uplink *u);

/* Release what u holds. */
void uplink_clear(struct uplink *u);

/* Parse the raw query string (without '?'): -EINVAL and a reason when Token is missing. */
int uplink_query_parse(const char *query, struct uplink_query *ret, char *reason, size_t reasonlen);

/*
 * The uplink Token: SHA-256 hex of CustomerID, DevEUI, FPort, FCntUp, payload_hex, the
 * signed part of the query and the tunnel key (lower-case hex), in that order.
 */
void uplink_token(const struct uplink *u, const char *signed_query, const char *key_hex,
		  char out[65]);

/*
 * Parse a tunnel Time "YYYY-MM-DDThh:mm:ss[.fff][Z|±hh:mm]" (a space stands for '+', as
 * a form decoder leaves it) into milliseconds since the epoch; without a zone it is UTC.
 * -EINVAL for anything else, a day its month does not have (2026-02-30) included; second
 * 60 (a leap second) is taken.
 */
int uplink_time_parse(const char *s, int64_t *ret_ms);

/* Format ms since the epoch as "YYYY-MM-DDThh:mm:ss.fff+00:00" into out (size >= 30). */
void uplink_time_format(int64_t ms, char *out, size_t outlen);
