/* tls: mbedTLS TLS 1.2 (or 1.1) client sessions (PSK or certificate) on non-blocking sockets. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct tls_ctx;

#define TLS_DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"
#define TLS_PIN_MAX 8

/* How the client authenticates the server (and itself). */
enum tls_mode {
	TLS_MODE_PSK,  /* pre-shared key: both sides prove the key */
	TLS_MODE_CERT, /* the server's X.509 chain against a CA bundle, host name checked */
};

/* Why a handshake failed, when it was the server's certificate (or our own). */
enum tls_cert_error {
	TLS_CERT_OK,
	TLS_CERT_EXPIRED,      /* expired or not yet valid */
	TLS_CERT_WRONG_HOST,   /* the certificate is not for the host name we asked for */
	TLS_CERT_UNKNOWN_CA,   /* the chain does not end at a CA we trust */
	TLS_CERT_PIN_MISMATCH, /* no key of the chain matches upstream.pin-sha256 */
	TLS_CERT_REFUSED,      /* the server refused our client certificate (or its absence) */
	TLS_CERT_OTHER,	       /* key usage, weak hash or key, revoked, malformed */
};

/* What a client configuration is built from; the strings are borrowed for the call. */
struct tls_options {
	enum tls_mode mode;
	/* PSK mode */
	const char *psk_identity;
	const char *psk_credential; /* credential name of the PSK (hex), e.g. "tpa-psk" */
	const char *psk_file;	    /* NULL: the credential only */
	int tls_min;		    /* 1 = TLS 1.1, 2 = TLS 1.2 */
	const char *ciphersuites;   /* comma separated mbedTLS names; NULL: the mode's default */
	/* certificate mode */
	const char *ca_file;	 /* PEM bundle; NULL: TLS_DEFAULT_CA_FILE */
	const char *pin_sha256;	 /* NULL or SPKI SHA-256 pins (base64 or hex), comma separated */
	const char *client_cert; /* NULL or a PEM certificate (chain) presented to the server */
	const char *client_key_credential; /* credential of its private key, e.g. "tpa-client-key" */
	const char *client_key_file;	   /* NULL: the credential only */
};
struct tls_conn;

/*
 * Parse a comma separated list of SPKI SHA-256 pins (each 44 base64 characters, with or
 * without a "sha256/" prefix, or 64 hex digits) into out (at most max). The number of pins,
 * or -EINVAL. Pure; used by the config check as well.
 */
int tls_pins_parse(const char *list, uint8_t (*out)[32], size_t max);

/*
 * The shared client configuration. PSK mode: identity and key (loaded from the tpa-psk
 * credential and wiped from our buffers once mbedTLS holds it). Certificate mode: the CA
 * bundle, pins, and the optional client certificate and key (from its credential, wiped
 * likewise; a key file readable by others is refused). Ciphersuites, curves, versions,
 * random generator. On failure returns a negative errno and one line in err.
 */
int tls_ctx_new(const struct tls_options *o, struct tls_ctx **ret, char *err, size_t errlen);

/* Free the shared configuration (mbedTLS wipes the key). Accepts NULL; returns NULL. */
struct tls_ctx *tls_ctx_free(struct tls_ctx *ctx);

/*
 * One client session. PSK mode: hostname is sent as SNI unless it is an IP literal.
 * Certificate mode: hostname is required, always checked against the server certificate
 * and sent as SNI (mbedTLS 2.28 sends it even for an IP literal, which is then matched
 * against the certificate's names as text).
 */
int tls_conn_new(struct tls_ctx *ctx, const char *hostname, struct tls_conn **ret);

/* Free a session (the socket is not closed). Accepts NULL; returns NULL. */
struct tls_conn *tls_conn_free(struct tls_conn *c);

/* Start a new connection on the connected non-blocking fd, offering the last session. */
int tls_conn_start(struct tls_conn *c, int fd);

/*
 * Advance the handshake. 0 when done; -EAGAIN with *ret_want set to EV_READ or EV_WRITE
 * when it must wait; another negative errno on failure (text in tls_conn_error()).
 */
int tls_conn_handshake(struct tls_conn *c, short *ret_want);

/*
 * Read application data: bytes read (> 0), 0 when the peer closed, -EAGAIN with
 * *ret_want set when it must wait, or another negative errno.
 */
ssize_t tls_conn_read(struct tls_conn *c, void *buf, size_t len, short *ret_want);

/* Write application data: bytes taken (> 0), -EAGAIN with *ret_want, or a negative errno. */
ssize_t tls_conn_write(struct tls_conn *c, const void *buf, size_t len, short *ret_want);

/* True if decrypted or buffered bytes wait inside mbedTLS (read again before polling). */
bool tls_conn_pending(struct tls_conn *c);

/* Send close_notify if possible, without waiting. */
void tls_conn_close_notify(struct tls_conn *c);

/* The negotiated ciphersuite's name, or NULL before a handshake. */
const char *tls_conn_ciphersuite(struct tls_conn *c);

/* True if the last handshake resumed the previous session. */
bool tls_conn_resumed(const struct tls_conn *c);

/* Raw bytes written to the socket since tls_conn_start(). */
uint64_t tls_conn_bytes_sent(const struct tls_conn *c);

/* A readable reason for the last failure ("" if none). */
const char *tls_conn_error(const struct tls_conn *c);

/*
 * TLS_CERT_OK unless the last handshake failed because of a certificate; such a failure
 * is returned by tls_conn_handshake() as -EKEYREJECTED and will not heal by retrying.
 */
enum tls_cert_error tls_conn_cert_error(const struct tls_conn *c);

/* Short name of a certificate error ("expired", "wrong-host", "unknown-ca", ...). */
const char *tls_cert_error_name(enum tls_cert_error e);

/* The configuration's mode. */
enum tls_mode tls_ctx_mode(const struct tls_ctx *ctx);

/* Forget the saved session so the next start does a full handshake. */
void tls_conn_forget_session(struct tls_conn *c);
