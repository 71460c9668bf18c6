/* manifest: Microchip secure-element manifests (JWS entries) verified and mapped to import rows. */
#include "manifest.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/oid.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509_crt.h>

#include "hex.h"

#define B64_MAX 16384 /* decoded bytes of one payload or certificate */

/* Decode base64url (RFC 7515: no padding) into out. */
int manifest_b64url_decode(const char *in, size_t inlen, unsigned char *out, size_t max)
{
	if (inlen % 4 == 1 || inlen > 4 * (B64_MAX / 3) + 4)
		return -EINVAL;
	char *tmp = malloc(inlen + 4);
	if (!tmp)
		return -ENOMEM;
	size_t n = 0;
	for (size_t i = 0; i < inlen; i++) {
		char c = in[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (c == '+' || c == '/' || c == '=')
			break; /* not base64url */
		tmp[n++] = c;
	}
	int r = -EINVAL;
	if (n == inlen) {
		while (n % 4)
			tmp[n++] = '=';
		size_t olen = 0;
		if (mbedtls_base64_decode(out, max, &olen, (const unsigned char *)tmp, n) == 0)
			r = (int)olen;
	}
	free(tmp);
	return r;
}

/* Append one error; false when out of memory. */
static bool add_error(struct manifest_result *res, size_t index, const char *uid,
		      const char *reason)
{
	struct manifest_error *e = realloc(res->errors, (res->n_errors + 1) * sizeof(*e));
	if (!e)
		return false;
	res->errors = e;
	e = &e[res->n_errors++];
	e->index = index;
	snprintf(e->unique_id, sizeof(e->unique_id), "%s", uid && *uid ? uid : "?");
	snprintf(e->reason, sizeof(e->reason), "%s", reason);
	return true;
}

/* Check the ES256 signature of protected "." payload against the signer's key. */
static int verify_es256(const mbedtls_x509_crt *signer, const char *prot, const char *payload,
			const char *sig_b64)
{
	unsigned char sig[64 + 1], hash[32];
	int n = manifest_b64url_decode(sig_b64, strlen(sig_b64), sig, sizeof(sig));
	if (n != 64)
		return -EINVAL;
	mbedtls_sha256_context sha;
	mbedtls_sha256_init(&sha);
	int m = mbedtls_sha256_starts_ret(&sha, 0);
	if (!m)
		m = mbedtls_sha256_update_ret(&sha, (const unsigned char *)prot, strlen(prot));
	if (!m)
		m = mbedtls_sha256_update_ret(&sha, (const unsigned char *)".", 1);
	if (!m)
		m = mbedtls_sha256_update_ret(&sha, (const unsigned char *)payload,
					      strlen(payload));
	if (!m)
		m = mbedtls_sha256_finish_ret(&sha, hash);
	mbedtls_sha256_free(&sha);
	if (m)
		return -EIO;
	mbedtls_mpi r, s;
	mbedtls_mpi_init(&r);
	mbedtls_mpi_init(&s);
	mbedtls_ecp_keypair *ec = mbedtls_pk_ec(signer->pk);
	int ok = mbedtls_mpi_read_binary(&r, sig, 32) == 0 &&
		 mbedtls_mpi_read_binary(&s, sig + 32, 32) == 0 &&
		 mbedtls_ecdsa_verify(&ec->grp, hash, sizeof(hash), &ec->Q, &r, &s) == 0;
	mbedtls_mpi_free(&r);
	mbedtls_mpi_free(&s);
	return ok ? 0 : -EBADMSG;
}

/* True if the attribute's OID is named attr (short name, any case, or dotted OID). */
static bool attr_matches(const mbedtls_x509_name *n, const char *attr)
{
	const char *shortname = NULL;
	char dotted[64];
	if (mbedtls_oid_get_attr_short_name(&n->oid, &shortname) == 0 && shortname &&
	    strcasecmp(shortname, attr) == 0)
		return true;
	return mbedtls_oid_get_numeric_string(dotted, sizeof(dotted), &n->oid) > 0 &&
	       strcmp(dotted, attr) == 0;
}

/* The DevEUI in a subject value: the whole value, or its one run of 16 hex digits. */
static bool eui_in(const unsigned char *v, size_t len, char out[17])
{
	size_t found = 0, at = 0;
	for (size_t i = 0; i < len;) {
		size_t j = i;
		while (j < len && isxdigit(v[j]))
			j++;
		if (j - i == 16) {
			found++;
			at = i;
		}
		i = j > i ? j : i + 1;
	}
	if (found != 1)
		return false;
	char tmp[17];
	memcpy(tmp, v + at, 16);
	tmp[16] = '\0';
	hex_upper(out, tmp, 16);
	return true;
}

/* Read the DevEUI from the device certificate's subject attribute; reason on failure. */
static bool dev_eui_from_cert(json_t *payload, const char *attr, char out[17], char *why,
			      size_t whylen)
{
	json_t *keys = json_object_get(json_object_get(payload, "publicKeySet"), "keys");
	const char *b64 = NULL;
	size_t i;
	json_t *k;
	json_array_foreach(keys, i, k)
	{
		b64 = json_string_value(json_array_get(json_object_get(k, "x5c"), 0));
		if (b64)
			break;
	}
	if (!b64) {
		snprintf(why, whylen, "no device certificate (publicKeySet keys x5c)");
		return false;
	}
	unsigned char *der = malloc(B64_MAX);
	size_t dlen = 0;
	if (!der || mbedtls_base64_decode(der, B64_MAX, &dlen, (const unsigned char *)b64,
					  strlen(b64)) != 0) {
		free(der);
		snprintf(why, whylen, "the device certificate is not base64");
		return false;
	}
	mbedtls_x509_crt crt;
	mbedtls_x509_crt_init(&crt);
	bool ok = false;
	if (mbedtls_x509_crt_parse_der(&crt, der, dlen) != 0) {
		snprintf(why, whylen, "the device certificate does not parse");
	} else {
		const mbedtls_x509_name *n;
		for (n = &crt.subject; n; n = n->next)
			if (n->oid.p && attr_matches(n, attr))
				break;
		if (!n)
			snprintf(why, whylen, "the device certificate's subject has no %s", attr);
		else if (!eui_in(n->val.p, n->val.len, out))
			snprintf(why, whylen,
				 "the subject's %s holds no DevEUI (16 hexadecimal digits)", attr);
		else
			ok = true;
	}
	mbedtls_x509_crt_free(&crt);
	free(der);
	return ok;
}

/* Verify and map one entry; false (and an error added) when it is bad. */
static int read_entry(json_t *e, size_t index, const mbedtls_x509_crt *signer,
		      const struct manifest_options *o, struct manifest_result *res)
{
	char uid_hint[40] = "";
	const char *hu =
	    json_string_value(json_object_get(json_object_get(e, "header"), "uniqueId"));
	if (hu)
		snprintf(uid_hint, sizeof(uid_hint), "%s", hu);
	const char *prot = json_string_value(json_object_get(e, "protected"));
	const char *pay = json_string_value(json_object_get(e, "payload"));
	const char *sig = json_string_value(json_object_get(e, "signature"));
	if (!json_is_object(e) || !prot || !pay || !sig)
		return add_error(res, index, uid_hint,
				 "missing field (payload, protected and signature are required)")
			   ? 0
			   : -ENOMEM;

	unsigned char *buf = malloc(B64_MAX + 1);
	if (!buf)
		return -ENOMEM;
	char why[160] = "";
	json_t *ph = NULL, *payload = NULL;
	int n = manifest_b64url_decode(prot, strlen(prot), buf, B64_MAX);
	if (n < 0) {
		snprintf(why, sizeof(why), "bad base64url in protected");
		goto bad;
	}
	ph = json_loadb((const char *)buf, (size_t)n, 0, NULL);
	const char *alg = json_string_value(json_object_get(ph, "alg"));
	if (!alg || strcmp(alg, "ES256") != 0) {
		snprintf(why, sizeof(why), "protected header alg is not ES256");
		goto bad;
	}
	n = manifest_b64url_decode(pay, strlen(pay), buf, B64_MAX);
	if (n < 0) {
		snprintf(why, sizeof(why), "bad base64url in payload");
		goto bad;
	}
	payload = json_loadb((const char *)buf, (size_t)n, 0, NULL);
	if (!json_is_object(payload)) {
		snprintf(why, sizeof(why), "the payload is not a JSON object");
		goto bad;
	}
	const char *uid = json_string_value(json_object_get(payload, "uniqueId"));
	if (uid)
		snprintf(uid_hint, sizeof(uid_hint), "%s", uid);
	int v = verify_es256(signer, prot, pay, sig);
	if (v == -EINVAL) {
		snprintf(why, sizeof(why), "bad base64url or length in signature");
		goto bad;
	}
	if (v < 0) {
		snprintf(why, sizeof(why), "bad signature (not signed by the manifest signer)");
		goto bad;
	}
	if (!uid || strlen(uid) != 18 || !hex_valid(uid, 18)) {
		snprintf(why, sizeof(why), "missing or malformed uniqueId (18 hex digits)");
		goto bad;
	}
	if (hu && strcasecmp(hu, uid) != 0) {
		snprintf(why, sizeof(why), "header uniqueId differs from the signed payload's");
		goto bad;
	}
	struct manifest_row row = {.index = index};
	snprintf(row.unique_id, sizeof(row.unique_id), "%s", uid);
	char tkm[21];
	snprintf(tkm, sizeof(tkm), "%.4s%.16s", o->tkm_prefix, uid);
	hex_upper(row.tkm_info, tkm, 20);
	bool mapped = false;
	for (size_t i = 0; i < o->map_n; i++)
		if (strcasecmp(o->map_serial[i], uid) == 0) {
			hex_upper(row.dev_eui, o->map_dev_eui[i], 16);
			mapped = true;
			break;
		}
	if (!mapped) {
		if (!o->dev_eui_attr) {
			snprintf(why, sizeof(why),
				 "no DevEUI: not in the --dev-eui-map file and "
				 "import.manifest-dev-eui is not set");
			goto bad;
		}
		if (!dev_eui_from_cert(payload, o->dev_eui_attr, row.dev_eui, why, sizeof(why)))
			goto bad;
	}
	struct manifest_row *rows = realloc(res->rows, (res->n_rows + 1) * sizeof(*rows));
	if (!rows) {
		n = -ENOMEM;
		goto out;
	}
	res->rows = rows;
	rows[res->n_rows++] = row;
	n = 0;
	goto out;
bad:
	n = add_error(res, index, uid_hint, why) ? 0 : -ENOMEM;
out:
	json_decref(ph);
	json_decref(payload);
	free(buf);
	return n;
}

int manifest_read(const char *text, size_t len, const struct manifest_options *o,
		  struct manifest_result *res)
{
	memset(res, 0, sizeof(*res));
	if (!o->tkm_prefix || strlen(o->tkm_prefix) != 4 || !hex_valid(o->tkm_prefix, 4)) {
		snprintf(res->fatal, sizeof(res->fatal),
			 "the TKM_INFO prefix must be 4 hex digits");
		return -EINVAL;
	}
	mbedtls_x509_crt signer;
	mbedtls_x509_crt_init(&signer);
	if (!o->signer_pem ||
	    mbedtls_x509_crt_parse(&signer, (const unsigned char *)o->signer_pem,
				   strlen(o->signer_pem) + 1) != 0 ||
	    !mbedtls_pk_can_do(&signer.pk, MBEDTLS_PK_ECKEY) ||
	    mbedtls_pk_ec(signer.pk)->grp.id != MBEDTLS_ECP_DP_SECP256R1) {
		mbedtls_x509_crt_free(&signer);
		snprintf(res->fatal, sizeof(res->fatal),
			 "the signer is not a PEM certificate with a P-256 key");
		return -EINVAL;
	}
	json_error_t jerr;
	json_t *doc = json_loadb(text, len, 0, &jerr);
	int r = 0;
	if (!json_is_array(doc)) {
		snprintf(res->fatal, sizeof(res->fatal),
			 json_is_object(doc) || !doc ? "not a manifest: %s"
						     : "not a manifest: %s (want a JSON array)",
			 doc ? "a JSON object, not an array of entries" : jerr.text);
		r = -EINVAL;
	}
	size_t i;
	json_t *e;
	json_array_foreach(doc, i, e)
	{
		if ((r = read_entry(e, i, &signer, o, res)) < 0)
			break;
	}
	/* The same device twice is a bad entry too. */
	for (size_t a = 0; r == 0 && a < res->n_rows; a++)
		for (size_t b = a + 1; b < res->n_rows; b++)
			if (strcmp(res->rows[a].dev_eui, res->rows[b].dev_eui) == 0 ||
			    strcasecmp(res->rows[a].unique_id, res->rows[b].unique_id) == 0) {
				char why[160];
				snprintf(why, sizeof(why), "same device as entry %zu",
					 res->rows[a].index);
				if (!add_error(res, res->rows[b].index, res->rows[b].unique_id,
					       why))
					r = -ENOMEM;
				break;
			}
	json_decref(doc);
	mbedtls_x509_crt_free(&signer);
	return r;
}

void manifest_result_free(struct manifest_result *res)
{
	if (!res)
		return;
	free(res->rows);
	free(res->errors);
	res->rows = NULL;
	res->errors = NULL;
	res->n_rows = res->n_errors = 0;
}
