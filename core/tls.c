/* tls: mbedTLS TLS 1.2 (or 1.1) client sessions (PSK or certificate) on non-blocking sockets. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ciphersuites.h>
#include <mbedtls/x509_crt.h>

#include "cred.h"
#include "utf8.h"

#define DEFAULT_SUITES                                                                             \
	"TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256,TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256,"       \
	"TLS-PSK-WITH-AES-128-GCM-SHA256,TLS-PSK-WITH-AES-256-GCM-SHA384"
/* Forward-secret AEAD suites for ECDSA (first: P-256 is what the benchmark measures) and RSA. */
#define DEFAULT_CERT_SUITES                                                                        \
	"TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256,TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-SHA256,"   \
	"TLS-ECDHE-ECDSA-WITH-AES-256-GCM-SHA384,TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256,"           \
	"TLS-ECDHE-RSA-WITH-CHACHA20-POLY1305-SHA256,TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"
#define MAX_SUITES 64
#define CLIENT_KEY_MAX 16384

struct tls_ctx {
	enum tls_mode mode;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ssl_config conf;
	int suites[MAX_SUITES + 1];
	/* certificate mode */
	mbedtls_x509_crt ca;
	mbedtls_x509_crt own_cert;
	mbedtls_pk_context own_key;
	bool have_own;
	uint8_t pins[TLS_PIN_MAX][32];
	size_t n_pins;
	char ca_file[256];
};

struct tls_conn {
	struct tls_ctx *ctx;
	mbedtls_ssl_context ssl;
	mbedtls_ssl_session saved;
	bool have_saved;
	bool resumed;
	int fd;
	uint64_t bytes_sent;
	int sys_errno;
	bool pin_matched;  /* a key of the chain matched a pin (this handshake) */
	bool pin_failed;   /* the verify callback refused the chain for want of a pin */
	/* An IP address to check the server's certificate against (cert mode): mbedTLS 2.28
	 * matches a host only against DNS names and the CN, so tpad matches addresses. */
	char ip_host[INET6_ADDRSTRLEN];
	unsigned char ip[16];
	size_t ip_len; /* 4 or 16; 0: a host name, mbedTLS checks it */
	enum tls_cert_error cert_error;
	char error[256];
};

/* ECDHE curves, fastest first: mbedTLS's own default starts with the slow secp521r1. */
static const mbedtls_ecp_group_id curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_NONE,
};

/* Certificate mode also accepts server keys on P-384, common on public CAs' chains. */
static const mbedtls_ecp_group_id cert_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

/* The next item of a list separated by commas or white space, or NULL at its end. */
static const char *list_item(const char **pos, size_t *len)
{
	const char *s = *pos + strspn(*pos, ", \t");
	*len = strcspn(s, ", \t");
	*pos = s + *len;
	return *s ? s : NULL;
}

/* Resolve the comma-separated ciphersuite names into ctx->suites. */
static int parse_suites(struct tls_ctx *ctx, const char *list, char *err, size_t errlen)
{
	size_t n = 0;
	bool psk = ctx->mode == TLS_MODE_PSK;
	const char *s = list && *list ? list : psk ? DEFAULT_SUITES : DEFAULT_CERT_SUITES;

	size_t l;
	for (const char *item; (item = list_item(&s, &l));) {
		char name[96];
		if (l >= sizeof(name)) {
			snprintf(err, errlen, "upstream.ciphersuites: name too long");
			return -EINVAL;
		}
		memcpy(name, item, l);
		name[l] = '\0';
		int id = mbedtls_ssl_get_ciphersuite_id(name);
		const mbedtls_ssl_ciphersuite_t *info =
		    id ? mbedtls_ssl_ciphersuite_from_id(id) : NULL;
		if (!info) {
			snprintf(err, errlen, "upstream.ciphersuites: unknown ciphersuite %s",
				 name);
			return -EINVAL;
		}
		if (psk && !mbedtls_ssl_ciphersuite_uses_psk(info)) {
			snprintf(err, errlen, "upstream.ciphersuites: %s is not a PSK ciphersuite",
				 name);
			return -EINVAL;
		}
		if (!psk && (mbedtls_ssl_ciphersuite_uses_psk(info) ||
			     info->key_exchange == MBEDTLS_KEY_EXCHANGE_RSA)) {
			snprintf(err, errlen,
				 "upstream.ciphersuites: %s is not an ECDHE certificate ciphersuite "
				 "(upstream.tls = cert)",
				 name);
			return -EINVAL;
		}
		if (n >= MAX_SUITES) {
			snprintf(err, errlen, "upstream.ciphersuites: more than %d names",
				 MAX_SUITES);
			return -EINVAL;
		}
		ctx->suites[n++] = id;
	}
	if (n == 0) {
		snprintf(err, errlen, "upstream.ciphersuites: empty list");
		return -EINVAL;
	}
	ctx->suites[n] = 0;
	return 0;
}

/* Decode one pin: 44 base64 characters (optionally "sha256/..."), or 64 hex digits. */
static int pin_decode(const char *s, size_t len, uint8_t out[32])
{
	if (len > 7 && strncmp(s, "sha256/", 7) == 0) {
		s += 7;
		len -= 7;
	}
	if (len == 64) {
		for (size_t i = 0; i < 32; i++) {
			unsigned v = 0;
			for (size_t k = 0; k < 2; k++) {
				char c = s[2 * i + k];
				unsigned d = c >= '0' && c <= '9'   ? (unsigned)(c - '0')
					     : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
					     : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10)
								    : 16u;
				if (d > 15)
					return -EINVAL;
				v = v << 4 | d;
			}
			out[i] = (uint8_t)v;
		}
		return 0;
	}
	size_t n = 0;
	uint8_t tmp[48];
	if (len != 44 ||
	    mbedtls_base64_decode(tmp, sizeof(tmp), &n, (const unsigned char *)s, len) != 0 ||
	    n != 32)
		return -EINVAL;
	memcpy(out, tmp, 32);
	return 0;
}

/* Parse the comma separated pin list. */
int tls_pins_parse(const char *list, uint8_t (*out)[32], size_t max)
{
	size_t n = 0;

	if (!list)
		return 0;
	size_t l;
	for (const char *s = list, *item; (item = list_item(&s, &l));) {
		if (n >= max || pin_decode(item, l, out[n]) < 0)
			return -EINVAL;
		n++;
	}
	return (int)n;
}

/* Load the PSK and identity into the configuration, wiping our copy. */
static int ctx_setup_psk(struct tls_ctx *ctx, const struct tls_options *o, char *err,
			 size_t errlen)
{
	uint8_t psk[MBEDTLS_PSK_MAX_LEN];
	size_t psk_len = 0;
	int r;

	if (!o->psk_identity || !*o->psk_identity) {
		snprintf(err, errlen, "the PSK identity (upstream.psk-identity) is not set");
		return -EINVAL;
	}
	r = cred_load_hex(o->psk_credential, o->psk_file, psk, sizeof(psk), &psk_len);
	if (r < 0) {
		char why[256];
		snprintf(err, errlen, "cannot load the PSK: %s",
			 r == -E2BIG ? "longer than 32 bytes"
				     : cred_explain(r, o->psk_credential, o->psk_file, why,
						    sizeof(why)));
		goto out;
	}
	if (psk_len == 0) {
		snprintf(err, errlen, "the PSK is empty");
		r = -EINVAL;
		goto out;
	}
	if (mbedtls_ssl_conf_psk(&ctx->conf, psk, psk_len, (const unsigned char *)o->psk_identity,
				 strlen(o->psk_identity)) != 0) {
		snprintf(err, errlen, "cannot use the PSK or its identity");
		r = -EINVAL;
	}
out:
	cred_wipe(psk, sizeof(psk));
	return r;
}

/* Load the client certificate and its key (from the credential) for mTLS. */
static int ctx_setup_client_cert(struct tls_ctx *ctx, const struct tls_options *o, char *err,
				 size_t errlen)
{
	const char *cred = o->client_key_credential ? o->client_key_credential : "tpa-client-key";
	char *key = malloc(CLIENT_KEY_MAX);
	char buf[128];
	int r, m;

	if (!key) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if ((m = mbedtls_x509_crt_parse_file(&ctx->own_cert, o->client_cert)) != 0) {
		mbedtls_strerror(m, buf, sizeof(buf));
		snprintf(err, errlen, "upstream.client-cert: cannot read %s: %s", o->client_cert,
			 buf);
		r = -EINVAL;
		goto out;
	}
	r = cred_load_text(cred, o->client_key_file, key, CLIENT_KEY_MAX);
	if (r < 0) {
		char why[256];
		snprintf(err, errlen, "cannot load the client key: %s",
			 cred_explain(r, cred, o->client_key_file, why, sizeof(why)));
		goto out;
	}
	m = mbedtls_pk_parse_key(&ctx->own_key, (const unsigned char *)key, strlen(key) + 1, NULL,
				 0);
	if (m != 0) {
		mbedtls_strerror(m, buf, sizeof(buf));
		snprintf(err, errlen, "the client key (credential %s) is not a usable key: %s",
			 cred, buf);
		r = -EINVAL;
		goto out;
	}
	if (mbedtls_pk_check_pair(&ctx->own_cert.pk, &ctx->own_key) != 0) {
		snprintf(err, errlen,
			 "the client key (credential %s) does not belong to upstream.client-cert",
			 cred);
		r = -EINVAL;
		goto out;
	}
	if (mbedtls_ssl_conf_own_cert(&ctx->conf, &ctx->own_cert, &ctx->own_key) != 0) {
		snprintf(err, errlen, "cannot use the client certificate");
		r = -EINVAL;
		goto out;
	}
	ctx->have_own = true;
	r = 0;
out:
	cred_wipe(key, CLIENT_KEY_MAX);
	free(key);
	return r;
}

/* Load the trusted CAs, pins and client certificate; always verify the server. */
static int ctx_setup_cert(struct tls_ctx *ctx, const struct tls_options *o, char *err,
			  size_t errlen)
{
	const char *ca = o->ca_file && *o->ca_file ? o->ca_file : TLS_DEFAULT_CA_FILE;
	char buf[128];

	snprintf(ctx->ca_file, sizeof(ctx->ca_file), "%s", ca);
	int m = mbedtls_x509_crt_parse_file(&ctx->ca, ca);
	if (m < 0 || ctx->ca.version == 0) {
		if (m < 0)
			mbedtls_strerror(m, buf, sizeof(buf));
		else
			snprintf(buf, sizeof(buf), "no certificate in it");
		snprintf(err, errlen, "upstream.ca-file: cannot read %s: %s", ca, buf);
		return -EINVAL;
	}
	/* m > 0: some entries of a system bundle did not parse; the others are used. */
	int n = tls_pins_parse(o->pin_sha256, ctx->pins, TLS_PIN_MAX);
	if (n < 0) {
		snprintf(err, errlen,
			 "upstream.pin-sha256: want up to %d SHA-256 pins of the server's public "
			 "key, each 44 base64 characters or 64 hex digits",
			 TLS_PIN_MAX);
		return -EINVAL;
	}
	ctx->n_pins = (size_t)n;
	mbedtls_ssl_conf_authmode(&ctx->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&ctx->conf, &ctx->ca, NULL);
	if (o->client_cert && *o->client_cert)
		return ctx_setup_client_cert(ctx, o, err, errlen);
	return 0;
}

/* Build the shared mbedTLS client configuration from the options. */
int tls_ctx_new(const struct tls_options *o, struct tls_ctx **ret, char *err, size_t errlen)
{
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	int r;

	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ctx->mode = o->mode;
	mbedtls_entropy_init(&ctx->entropy);
	mbedtls_ctr_drbg_init(&ctx->drbg);
	mbedtls_ssl_config_init(&ctx->conf);
	mbedtls_x509_crt_init(&ctx->ca);
	mbedtls_x509_crt_init(&ctx->own_cert);
	mbedtls_pk_init(&ctx->own_key);

	if (o->mode == TLS_MODE_PSK && (!o->psk_identity || !*o->psk_identity)) {
		snprintf(err, errlen, "the PSK identity (upstream.psk-identity) is not set");
		r = -EINVAL;
		goto fail;
	}
	if ((r = parse_suites(ctx, o->ciphersuites, err, errlen)) < 0)
		goto fail;
	static const unsigned char pers[] = "tpad upstream";
	if (mbedtls_ctr_drbg_seed(&ctx->drbg, mbedtls_entropy_func, &ctx->entropy, pers,
				  sizeof(pers) - 1) != 0) {
		snprintf(err, errlen, "cannot seed the random generator");
		r = -EIO;
		goto fail;
	}
	if (mbedtls_ssl_config_defaults(&ctx->conf, MBEDTLS_SSL_IS_CLIENT,
					MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0) {
		snprintf(err, errlen, "cannot set TLS defaults");
		r = -EIO;
		goto fail;
	}
	mbedtls_ssl_conf_rng(&ctx->conf, mbedtls_ctr_drbg_random, &ctx->drbg);
	mbedtls_ssl_conf_authmode(&ctx->conf, MBEDTLS_SSL_VERIFY_NONE);
	mbedtls_ssl_conf_min_version(&ctx->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     o->tls_min == 1 ? MBEDTLS_SSL_MINOR_VERSION_2
						     : MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_max_version(&ctx->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(&ctx->conf, ctx->suites);
	mbedtls_ssl_conf_curves(&ctx->conf, o->mode == TLS_MODE_PSK ? curves : cert_curves);
	mbedtls_ssl_conf_renegotiation(&ctx->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);

	r = o->mode == TLS_MODE_PSK ? ctx_setup_psk(ctx, o, err, errlen)
				    : ctx_setup_cert(ctx, o, err, errlen);
	if (r < 0)
		goto fail;
	*ret = ctx;
	return 0;
fail:
	tls_ctx_free(ctx);
	return r;
}

/* Free the shared configuration; mbedTLS zeroes the PSK and private key it holds. */
struct tls_ctx *tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return NULL;
	mbedtls_ssl_config_free(&ctx->conf);
	mbedtls_x509_crt_free(&ctx->ca);
	mbedtls_x509_crt_free(&ctx->own_cert);
	mbedtls_pk_free(&ctx->own_key);
	mbedtls_ctr_drbg_free(&ctx->drbg);
	mbedtls_entropy_free(&ctx->entropy);
	free(ctx);
	return NULL;
}

/* The configuration's mode. */
enum tls_mode tls_ctx_mode(const struct tls_ctx *ctx)
{
	return ctx->mode;
}

/* mbedTLS send callback on the raw non-blocking socket. */
static int bio_send(void *arg, const unsigned char *buf, size_t len)
{
	struct tls_conn *c = arg;

	for (;;) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0) {
			c->bytes_sent += (uint64_t)n;
			return (int)n;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_WRITE;
		c->sys_errno = errno;
		return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
							     : MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

/* mbedTLS receive callback on the raw non-blocking socket. */
static int bio_recv(void *arg, unsigned char *buf, size_t len)
{
	struct tls_conn *c = arg;

	for (;;) {
		ssize_t n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_READ;
		c->sys_errno = errno;
		return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
					   : MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

/* True if s is an IPv4 or IPv6 literal, which must not be sent as SNI. */
static bool is_ip_literal(const char *s)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

/*
 * Whether the server's certificate is for the address c connects to: an iPAddress entry
 * of its subjectAltName with the same bytes, or (as mbedTLS matches a name) a dNSName
 * spelling the address, or without subjectAltName a CN spelling it.
 */
static bool ip_matches(const struct tls_conn *c, const mbedtls_x509_crt *crt)
{
	size_t n = strlen(c->ip_host);
	bool any_san = false;
	for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s && s->buf.p; s = s->next) {
		any_san = true;
		unsigned char tag = (unsigned char)s->buf.tag;
		if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && s->buf.len == c->ip_len &&
		    memcmp(s->buf.p, c->ip, c->ip_len) == 0)
			return true;
		if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2) && s->buf.len == n &&
		    strncasecmp((const char *)s->buf.p, c->ip_host, n) == 0)
			return true;
	}
	if (any_san)
		return false;
	for (const mbedtls_x509_name *a = &crt->subject; a; a = a->next)
		if (a->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &a->oid) == 0 &&
		    a->val.len == n && strncasecmp((const char *)a->val.p, c->ip_host, n) == 0)
			return true;
	return false;
}

/*
 * Called for each certificate of the chain, the root first and the server's own last
 * (depth 0): accept the chain only if some key in it matches a configured pin, and the
 * server's own certificate only if it is for the address connected to (when it is one).
 */
static int verify_cb(void *arg, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct tls_conn *c = arg;
	uint8_t h[32];

	if (c->ctx->n_pins && mbedtls_sha256_ret(crt->pk_raw.p, crt->pk_raw.len, h, 0) == 0)
		for (size_t i = 0; i < c->ctx->n_pins; i++)
			if (memcmp(h, c->ctx->pins[i], sizeof(h)) == 0)
				c->pin_matched = true;
	if (depth == 0 && c->ctx->n_pins && !c->pin_matched) {
		c->pin_failed = true;
		*flags |= MBEDTLS_X509_BADCERT_OTHER;
	}
	if (depth == 0 && c->ip_len && !ip_matches(c, crt))
		*flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
	return 0;
}

/* Create a session bound to the shared configuration. */
int tls_conn_new(struct tls_ctx *ctx, const char *hostname, struct tls_conn **ret)
{
	struct tls_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return -ENOMEM;
	c->ctx = ctx;
	c->fd = -1;
	mbedtls_ssl_init(&c->ssl);
	mbedtls_ssl_session_init(&c->saved);
	if (mbedtls_ssl_setup(&c->ssl, &ctx->conf) != 0) {
		tls_conn_free(c);
		return -ENOMEM;
	}
	bool cert = ctx->mode == TLS_MODE_CERT;
	if (cert && (!hostname || !*hostname)) {
		tls_conn_free(c);
		return -EINVAL;
	}
	if (cert && is_ip_literal(hostname)) {
		/* No name for mbedTLS to check (nor SNI to send): verify_cb checks the address. */
		snprintf(c->ip_host, sizeof(c->ip_host), "%s", hostname);
		c->ip_len = inet_pton(AF_INET, hostname, c->ip) == 1 ? 4 : 16;
		if (c->ip_len == 16 && inet_pton(AF_INET6, hostname, c->ip) != 1) {
			tls_conn_free(c);
			return -EINVAL;
		}
	} else if (hostname && *hostname && !is_ip_literal(hostname) &&
		   mbedtls_ssl_set_hostname(&c->ssl, hostname) != 0) {
		tls_conn_free(c);
		return -EINVAL;
	}
	if (cert && (ctx->n_pins || c->ip_len))
		mbedtls_ssl_set_verify(&c->ssl, verify_cb, c);
	mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
	*ret = c;
	return 0;
}

/* Free a session and its saved resumption state. */
struct tls_conn *tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return NULL;
	mbedtls_ssl_free(&c->ssl);
	mbedtls_ssl_session_free(&c->saved);
	free(c);
	return NULL;
}

/* Reset the session for a new socket and offer the saved session for resumption. */
int tls_conn_start(struct tls_conn *c, int fd)
{
	if (mbedtls_ssl_session_reset(&c->ssl) != 0)
		return -ENOMEM;
	c->fd = fd;
	c->bytes_sent = 0;
	c->sys_errno = 0;
	c->resumed = false;
	c->pin_matched = c->pin_failed = false;
	c->cert_error = TLS_CERT_OK;
	c->error[0] = '\0';
	if (c->have_saved && mbedtls_ssl_set_session(&c->ssl, &c->saved) != 0)
		tls_conn_forget_session(c);
	return 0;
}

/* Drop the saved session. */
void tls_conn_forget_session(struct tls_conn *c)
{
	mbedtls_ssl_session_free(&c->saved);
	mbedtls_ssl_session_init(&c->saved);
	c->have_saved = false;
}

/* Name a TLS alert the way RFC 5246 and RFC 4279 do. */
static const char *alert_name(int a)
{
	switch (a) {
	case MBEDTLS_SSL_ALERT_MSG_CLOSE_NOTIFY:
		return "close_notify";
	case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC:
		return "bad_record_mac (wrong PSK?)";
	case MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE:
		return "handshake_failure (no common ciphersuite?)";
	case MBEDTLS_SSL_ALERT_MSG_ILLEGAL_PARAMETER:
		return "illegal_parameter";
	case MBEDTLS_SSL_ALERT_MSG_DECODE_ERROR:
		return "decode_error";
	case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR:
		return "decrypt_error (wrong PSK?)";
	case MBEDTLS_SSL_ALERT_MSG_PROTOCOL_VERSION:
		return "protocol_version (TLS version refused)";
	case MBEDTLS_SSL_ALERT_MSG_INSUFFICIENT_SECURITY:
		return "insufficient_security";
	case MBEDTLS_SSL_ALERT_MSG_INTERNAL_ERROR:
		return "internal_error";
	case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_PSK_IDENTITY:
		return "unknown_psk_identity (wrong PSK identity)";
	default:
		return NULL;
	}
}

/* Name the certificate problems in flags, most telling first, as one reason. */
static int fail_verify(struct tls_conn *c, const char *what)
{
	uint32_t f = mbedtls_ssl_get_verify_result(&c->ssl);
	const char *host = c->ip_len ? c->ip_host : c->ssl.hostname ? c->ssl.hostname : "?";
	char subj[96] = "";
	const mbedtls_x509_crt *peer = mbedtls_ssl_get_peer_cert(&c->ssl);

	if (peer && mbedtls_x509_dn_gets(subj, sizeof(subj), &peer->subject) < 0)
		subj[0] = '\0';
	if (f & MBEDTLS_X509_BADCERT_NOT_TRUSTED) {
		c->cert_error = TLS_CERT_UNKNOWN_CA;
		snprintf(
		    c->error, sizeof(c->error),
		    "%s: server certificate from an unknown CA (not signed by a CA in %.*s)%s%s",
		    what, (int)utf8_prefix(c->ctx->ca_file, 100), c->ctx->ca_file,
		    subj[0] ? ", subject " : "", subj);
	} else if (f & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)) {
		c->cert_error = TLS_CERT_EXPIRED;
		snprintf(c->error, sizeof(c->error), "%s: server certificate %s%s%s", what,
			 f & MBEDTLS_X509_BADCERT_EXPIRED ? "expired" : "not yet valid",
			 subj[0] ? ", subject " : "", subj);
	} else if (f & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
		c->cert_error = TLS_CERT_WRONG_HOST;
		snprintf(c->error, sizeof(c->error),
			 "%s: wrong host: the server certificate is not for %s%s%s", what, host,
			 subj[0] ? " (subject " : "", subj[0] ? subj : "");
		if (subj[0])
			snprintf(c->error + strlen(c->error), sizeof(c->error) - strlen(c->error),
				 ")");
	} else if (c->pin_failed) {
		c->cert_error = TLS_CERT_PIN_MISMATCH;
		snprintf(c->error, sizeof(c->error),
			 "%s: pin mismatch: no key in the server's chain matches "
			 "upstream.pin-sha256%s%s",
			 what, subj[0] ? ", subject " : "", subj);
	} else {
		char info[160];
		c->cert_error = TLS_CERT_OTHER;
		if (mbedtls_x509_crt_verify_info(info, sizeof(info), "", f) < 0)
			snprintf(info, sizeof(info), "flags 0x%x", (unsigned)f);
		char *nl;
		while ((nl = strchr(info, '\n')))
			*nl = nl[1] ? ';' : '\0';
		snprintf(c->error, sizeof(c->error), "%s: server certificate refused: %s", what,
			 info);
	}
	/* mbedTLS writes a subject's bytes 0x7f-0xa0 as '?', halving UTF-8 characters. */
	utf8_scrub(c->error);
	return -EKEYREJECTED;
}

/* Record a readable reason for an mbedTLS error and map it to a negative errno. */
static int fail(struct tls_conn *c, const char *what, int m)
{
	if (m == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)
		return fail_verify(c, what);
	if (m == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE && c->ctx->mode == TLS_MODE_CERT) {
		int a = c->ssl.in_msg ? c->ssl.in_msg[1] : -1;
		if (a == MBEDTLS_SSL_ALERT_MSG_BAD_CERT || a == MBEDTLS_SSL_ALERT_MSG_UNSUPPORTED_CERT ||
		    a == MBEDTLS_SSL_ALERT_MSG_CERT_REVOKED || a == MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED ||
		    a == MBEDTLS_SSL_ALERT_MSG_CERT_UNKNOWN || a == MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA ||
		    a == MBEDTLS_SSL_ALERT_MSG_ACCESS_DENIED || a == MBEDTLS_SSL_ALERT_MSG_NO_CERT ||
		    (a == MBEDTLS_SSL_ALERT_MSG_HANDSHAKE_FAILURE && c->ssl.client_auth)) {
			c->cert_error = TLS_CERT_REFUSED;
			snprintf(c->error, sizeof(c->error),
				 "%s: the server refused our client certificate (alert %d)%s", what,
				 a,
				 c->ctx->have_own ? ""
						  : ": it requires one, set upstream.client-cert and "
						    "the tpa-client-key credential");
			return -EKEYREJECTED;
		}
	}
	if (m == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
		int a = c->ssl.in_msg ? c->ssl.in_msg[1] : -1;
		const char *n = alert_name(a);
		if (n)
			snprintf(c->error, sizeof(c->error), "%s: server sent alert %s", what, n);
		else
			snprintf(c->error, sizeof(c->error), "%s: server sent alert %d", what, a);
		return a == MBEDTLS_SSL_ALERT_MSG_UNKNOWN_PSK_IDENTITY ||
			       a == MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR ||
			       a == MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC
			   ? -EACCES
			   : -EPROTO;
	}
	bool closed = m == MBEDTLS_ERR_SSL_CONN_EOF || m == MBEDTLS_ERR_NET_CONN_RESET;
	bool in_hs = c->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER;
	if (closed && in_hs && c->ctx->mode == TLS_MODE_CERT && c->ssl.client_auth) {
		/* It asked for our certificate, then hung up: it did not accept what it got. */
		c->cert_error = TLS_CERT_REFUSED;
		snprintf(c->error, sizeof(c->error),
			 "%s: the server asked for a client certificate and closed the "
			 "connection: %s",
			 what,
			 c->ctx->have_own ? "it refused ours (upstream.client-cert)"
					  : "it requires one, set upstream.client-cert and the "
					    "tpa-client-key credential");
		return -EKEYREJECTED;
	}
	if (closed) {
		/*
		 * Closed before any answer to our hello: nothing TLS spoke to us, as when a
		 * proxy or load balancer accepts the connection with no server behind it. Only
		 * a close after the server's hello points at what was negotiated.
		 */
		const char *hint = "";
		if (c->ssl.state <= MBEDTLS_SSL_SERVER_HELLO)
			hint = " before answering the TLS hello (is the cloud reachable? a proxy or "
			       "firewall may accept connections with nothing behind it)";
		else if (in_hs && c->ctx->mode == TLS_MODE_PSK)
			hint = " during the handshake (PSK identity, TLS version or ciphersuite "
			       "refused?)";
		else if (in_hs)
			hint = " during the handshake (TLS version or ciphersuite refused?)";
		snprintf(c->error, sizeof(c->error), "%s: connection %s by the server%s", what,
			 m == MBEDTLS_ERR_SSL_CONN_EOF ? "closed" : "reset", hint);
		return -ECONNRESET;
	}
	if (m == MBEDTLS_ERR_NET_SEND_FAILED || m == MBEDTLS_ERR_NET_RECV_FAILED) {
		snprintf(c->error, sizeof(c->error), "%s: %s", what,
			 strerror(c->sys_errno ? c->sys_errno : EIO));
		return c->sys_errno ? -c->sys_errno : -EIO;
	}
	if (m == MBEDTLS_ERR_SSL_BAD_HS_FINISHED || m == MBEDTLS_ERR_SSL_INVALID_MAC) {
		snprintf(c->error, sizeof(c->error), "%s: integrity check failed (wrong PSK?)",
			 what);
		return -EACCES;
	}
	char buf[128];
	mbedtls_strerror(m, buf, sizeof(buf));
	snprintf(c->error, sizeof(c->error), "%s: %s", what, buf);
	return m == MBEDTLS_ERR_SSL_ALLOC_FAILED ? -ENOMEM : -EPROTO;
}

/* Turn mbedTLS's want-read/want-write into an event direction. */
static bool want(int m, short *ret_want)
{
	if (m == MBEDTLS_ERR_SSL_WANT_READ) {
		*ret_want = EV_READ;
		return true;
	}
	if (m == MBEDTLS_ERR_SSL_WANT_WRITE) {
		*ret_want = EV_WRITE;
		return true;
	}
	return false;
}

/* Step the handshake as far as the socket allows; save the session when done. */
int tls_conn_handshake(struct tls_conn *c, short *ret_want)
{
	int m = mbedtls_ssl_handshake(&c->ssl);

	if (m == 0) {
		/* Same master secret as the offered session means the server resumed it. */
		const mbedtls_ssl_session *s = c->ssl.session;
		c->resumed = c->have_saved && s &&
			     memcmp(s->master, c->saved.master, sizeof(s->master)) == 0;
		mbedtls_ssl_session_free(&c->saved);
		mbedtls_ssl_session_init(&c->saved);
		c->have_saved = mbedtls_ssl_get_session(&c->ssl, &c->saved) == 0;
		return 0;
	}
	if (want(m, ret_want))
		return -EAGAIN;
	tls_conn_forget_session(c);
	return fail(c, "TLS handshake failed", m);
}

/* Read decrypted bytes; a close_notify or EOF reads as 0. */
ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len, short *ret_want)
{
	int m = mbedtls_ssl_read(&c->ssl, buf, len);

	if (m > 0)
		return m;
	if (m == 0 || m == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || m == MBEDTLS_ERR_SSL_CONN_EOF)
		return 0;
	if (want(m, ret_want))
		return -EAGAIN;
	return fail(c, "TLS read failed", m);
}

/* Encrypt and send bytes; the caller repeats the same call after -EAGAIN. */
ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len, short *ret_want)
{
	int m = mbedtls_ssl_write(&c->ssl, buf, len);

	if (m > 0)
		return m;
	if (want(m, ret_want))
		return -EAGAIN;
	if (m == 0) {
		snprintf(c->error, sizeof(c->error), "TLS write failed: nothing written");
		return -EIO;
	}
	return fail(c, "TLS write failed", m);
}

/* True if mbedTLS holds bytes that a read would return without touching the socket. */
bool tls_conn_pending(struct tls_conn *c)
{
	return mbedtls_ssl_get_bytes_avail(&c->ssl) > 0 || mbedtls_ssl_check_pending(&c->ssl);
}

/* Best-effort close_notify. */
void tls_conn_close_notify(struct tls_conn *c)
{
	if (c->fd >= 0)
		(void)mbedtls_ssl_close_notify(&c->ssl);
}

/* The negotiated suite, or NULL. */
const char *tls_conn_ciphersuite(struct tls_conn *c)
{
	if (c->ssl.state != MBEDTLS_SSL_HANDSHAKE_OVER)
		return NULL;
	return mbedtls_ssl_get_ciphersuite(&c->ssl);
}

/* Whether the last handshake was a resumption. */
bool tls_conn_resumed(const struct tls_conn *c)
{
	return c->resumed;
}

/* Bytes written to the socket since the last start. */
uint64_t tls_conn_bytes_sent(const struct tls_conn *c)
{
	return c->bytes_sent;
}

/* The last failure's reason. */
const char *tls_conn_error(const struct tls_conn *c)
{
	return c->error;
}

/* The certificate verdict of the last handshake. */
enum tls_cert_error tls_conn_cert_error(const struct tls_conn *c)
{
	return c->cert_error;
}

/* Names for logs, Status and metrics labels. */
const char *tls_cert_error_name(enum tls_cert_error e)
{
	switch (e) {
	case TLS_CERT_OK:
		return "ok";
	case TLS_CERT_EXPIRED:
		return "expired";
	case TLS_CERT_WRONG_HOST:
		return "wrong-host";
	case TLS_CERT_UNKNOWN_CA:
		return "unknown-ca";
	case TLS_CERT_PIN_MISMATCH:
		return "pin-mismatch";
	case TLS_CERT_REFUSED:
		return "client-cert-refused";
	default:
		return "bad-certificate";
	}
}
