/* sim_tls: the mbedTLS 2.28 TLS 1.1/1.2 server side of tpa-sim (PSK or certificate). */
#include "sim.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/error.h>
#include <stdio.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/ssl_internal.h>

/* The suites of UPSTREAM.md section 1 first, then the TLS 1.1 capable CBC suites. */
static const int sim_ciphersuites[] = {
    MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_PSK_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_PSK_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_PSK_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384,
    MBEDTLS_TLS_PSK_WITH_AES_128_CBC_SHA256,
    MBEDTLS_TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA,
    MBEDTLS_TLS_PSK_WITH_AES_128_CBC_SHA,
    MBEDTLS_TLS_PSK_WITH_AES_256_CBC_SHA,
    0,
};

/* x25519 first: mbedTLS's default list starts with the slow secp521r1. */
static const mbedtls_ecp_group_id sim_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_NONE,
};

/* Accept the handshake only for the configured identity, then install the key. */
static int tls_psk_cb(void *arg, mbedtls_ssl_context *ssl, const unsigned char *identity,
		      size_t identity_len)
{
	struct sim_tls *t = arg;
	if (identity_len != t->identity_len || memcmp(identity, t->identity, identity_len) != 0)
		return -1;
	return mbedtls_ssl_set_hs_psk(ssl, t->psk, t->psk_len);
}

/* Send callback on a non-blocking socket: EAGAIN becomes WANT_WRITE. */
static int tls_send(void *ctx, const unsigned char *buf, size_t len)
{
	int fd = *(int *)ctx;
	for (;;) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_WRITE;
		return errno == EPIPE || errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
							     : MBEDTLS_ERR_NET_SEND_FAILED;
	}
}

/* Receive callback on a non-blocking socket: EAGAIN becomes WANT_READ. */
static int tls_recv(void *ctx, unsigned char *buf, size_t len)
{
	int fd = *(int *)ctx;
	for (;;) {
		ssize_t n = recv(fd, buf, len, 0);
		if (n >= 0)
			return (int)n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return MBEDTLS_ERR_SSL_WANT_READ;
		return errno == ECONNRESET ? MBEDTLS_ERR_NET_CONN_RESET
					   : MBEDTLS_ERR_NET_RECV_FAILED;
	}
}

int tls_init(struct sim_tls *t, const char *identity, const uint8_t *psk, size_t psk_len)
{
	size_t il = strlen(identity);
	if (il == 0 || il > SIM_IDENTITY_MAX || psk_len == 0 || psk_len > SIM_PSK_MAX)
		return -EINVAL;
	mbedtls_ssl_config_init(&t->conf);
	mbedtls_ssl_cache_init(&t->cache);
	mbedtls_entropy_init(&t->entropy);
	mbedtls_ctr_drbg_init(&t->drbg);
	t->ready = true;
	memcpy(t->identity, identity, il + 1);
	t->identity_len = il;
	memcpy(t->psk, psk, psk_len);
	t->psk_len = psk_len;

	static const char pers[] = "tpa-sim";
	if (mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
				  (const unsigned char *)pers, sizeof(pers) - 1) != 0)
		return -EIO;
	if (mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_SERVER,
					MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0)
		return -EIO;
	mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
	mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_2);
	mbedtls_ssl_conf_max_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_ciphersuites(&t->conf, sim_ciphersuites);
	mbedtls_ssl_conf_curves(&t->conf, sim_curves);
	mbedtls_ssl_conf_renegotiation(&t->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	mbedtls_ssl_conf_psk_cb(&t->conf, tls_psk_cb, t);
	mbedtls_ssl_cache_set_timeout(&t->cache, 24 * 3600);
	mbedtls_ssl_cache_set_max_entries(&t->cache, 1024);
	mbedtls_ssl_conf_session_cache(&t->conf, &t->cache, mbedtls_ssl_cache_get,
				       mbedtls_ssl_cache_set);
	return 0;
}

/* Shared set-up of both modes: random generator, versions, curves, session cache. */
static int tls_common(struct sim_tls *t, const mbedtls_ecp_group_id *curves)
{
	static const char pers[] = "tpa-sim";
	if (mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
				  (const unsigned char *)pers, sizeof(pers) - 1) != 0)
		return -EIO;
	if (mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_SERVER,
					MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0)
		return -EIO;
	mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
	mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_2);
	mbedtls_ssl_conf_max_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_curves(&t->conf, curves);
	mbedtls_ssl_conf_renegotiation(&t->conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
	mbedtls_ssl_cache_set_timeout(&t->cache, 24 * 3600);
	mbedtls_ssl_cache_set_max_entries(&t->cache, 1024);
	mbedtls_ssl_conf_session_cache(&t->conf, &t->cache, mbedtls_ssl_cache_get,
				       mbedtls_ssl_cache_set);
	return 0;
}

/* Curves of the certificate mode: P-384 too, for server keys on it. */
static const mbedtls_ecp_group_id sim_cert_curves[] = {
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

int tls_init_cert(struct sim_tls *t, const char *cert, const char *key, const char *client_ca,
		  char *err, size_t errlen)
{
	char buf[128];
	int m;

	mbedtls_ssl_config_init(&t->conf);
	mbedtls_ssl_cache_init(&t->cache);
	mbedtls_entropy_init(&t->entropy);
	mbedtls_ctr_drbg_init(&t->drbg);
	mbedtls_x509_crt_init(&t->cert);
	mbedtls_x509_crt_init(&t->client_ca);
	mbedtls_pk_init(&t->key);
	t->ready = true;
	t->cert_mode = true;
	if ((m = mbedtls_x509_crt_parse_file(&t->cert, cert)) != 0) {
		mbedtls_strerror(m, buf, sizeof(buf));
		snprintf(err, errlen, "cannot read certificate %s: %s", cert, buf);
		return -EINVAL;
	}
	if ((m = mbedtls_pk_parse_keyfile(&t->key, key, NULL)) != 0) {
		mbedtls_strerror(m, buf, sizeof(buf));
		snprintf(err, errlen, "cannot read key %s: %s", key, buf);
		return -EINVAL;
	}
	if (client_ca && (m = mbedtls_x509_crt_parse_file(&t->client_ca, client_ca)) != 0) {
		mbedtls_strerror(m, buf, sizeof(buf));
		snprintf(err, errlen, "cannot read client CA %s: %s", client_ca, buf);
		return -EINVAL;
	}
	if (tls_common(t, sim_cert_curves) < 0) {
		snprintf(err, errlen, "cannot set up TLS");
		return -EIO;
	}
	if (mbedtls_ssl_conf_own_cert(&t->conf, &t->cert, &t->key) != 0) {
		snprintf(err, errlen, "certificate and key do not go together");
		return -EINVAL;
	}
	if (client_ca) {
		mbedtls_ssl_conf_ca_chain(&t->conf, &t->client_ca, NULL);
		mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	} else {
		mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_NONE);
	}
	return 0;
}

void tls_free(struct sim_tls *t)
{
	if (!t || !t->ready)
		return;
	if (t->cert_mode) {
		mbedtls_x509_crt_free(&t->cert);
		mbedtls_x509_crt_free(&t->client_ca);
		mbedtls_pk_free(&t->key);
	}
	mbedtls_ssl_config_free(&t->conf);
	mbedtls_ssl_cache_free(&t->cache);
	mbedtls_ctr_drbg_free(&t->drbg);
	mbedtls_entropy_free(&t->entropy);
	mbedtls_platform_zeroize(t->psk, sizeof(t->psk));
	t->ready = false;
}

int tls_conn_setup(struct sim_tls *t, mbedtls_ssl_context *ssl, int *fd)
{
	mbedtls_ssl_init(ssl);
	if (mbedtls_ssl_setup(ssl, &t->conf) != 0) {
		mbedtls_ssl_free(ssl);
		return -ENOMEM;
	}
	mbedtls_ssl_set_bio(ssl, fd, tls_send, tls_recv, NULL);
	return 0;
}

/*
 * The handshake is driven step by step so that a resumed session can be seen: mbedTLS
 * frees its handshake state (and the resume flag with it) once the handshake is over.
 */
int tls_conn_handshake(mbedtls_ssl_context *ssl, bool *ret_resumed)
{
	while (ssl->state != MBEDTLS_SSL_HANDSHAKE_OVER) {
		int r = mbedtls_ssl_handshake_step(ssl);
		if (ssl->handshake && ssl->handshake->resume)
			*ret_resumed = true;
		if (r != 0)
			return r;
	}
	return 0;
}
