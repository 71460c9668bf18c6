/* manifest: Microchip secure-element manifests (JWS entries) verified and mapped to import rows. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/*
 * A manifest is a JSON array of JWS objects in flattened JSON serialization, each
 * {"payload","protected","header":{"uniqueId"},"signature"} (base64url). The protected
 * header must say alg ES256; the signature (raw R||S) is checked against the signer
 * certificate's P-256 key. The payload is a SecureElement object whose uniqueId (9 bytes,
 * hex) makes the TKM_INFO: tkm_prefix (4 hex digits) + its first 16 hex digits, and whose
 * publicKeySet holds the device certificate (x5c[0]) whose subject carries the DevEUI.
 * This module is pure: it reads and writes memory only and never logs.
 */

struct manifest_options {
	const char *signer_pem;	  /* the signer certificate, PEM text */
	const char *tkm_prefix;	  /* 4 hex digits, e.g. "3121" */
	const char *dev_eui_attr; /* subject attribute of the device certificate ("CN",
				     "serialNumber", or a dotted OID); NULL: map only */
	/* serial -> DevEUI pairs (from a CSV); consulted first when given. */
	const char *const *map_serial;
	const char *const *map_dev_eui;
	size_t map_n;
};

/* One device from a manifest. */
struct manifest_row {
	size_t index;	    /* 0-based position in the manifest */
	char unique_id[19]; /* lower-case hex, as in the manifest */
	char dev_eui[17];   /* upper-case */
	char tkm_info[21];  /* upper-case */
};

/* One bad entry: index and uniqueId ("?" when unreadable) and why. */
struct manifest_error {
	size_t index;
	char unique_id[40];
	char reason[160];
};

struct manifest_result {
	struct manifest_row *rows;
	size_t n_rows;
	struct manifest_error *errors;
	size_t n_errors;
	char fatal[256]; /* a problem of the whole file or signer; "" if none */
};

/*
 * Verify and map every entry of the manifest text (len bytes). 0 when the whole file was
 * read (entries may still have errors: then no row should be sent), -EINVAL with
 * res->fatal set when the file or the signer is unusable, -ENOMEM. res is always filled
 * and must be released with manifest_result_free().
 */
int manifest_read(const char *text, size_t len, const struct manifest_options *o,
		  struct manifest_result *res);

/* Free what manifest_read() allocated in res. Accepts a zeroed struct. */
void manifest_result_free(struct manifest_result *res);

/* Decode base64url (no padding needed) into out (size max); the length, or -EINVAL. */
int manifest_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t max);
