/* tls: mbedTLS TLS 1.2 (or 1.1) PSK client sessions on non-blocking sockets. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct tls_ctx;

/* What a client configuration is built from; the strings are borrowed for the call. */
struct tls_options {
	const char *psk_identity;
	const char *psk_credential; /* credential name of the PSK (hex), e.g. "tpa-psk" */
	const char *psk_file;	    /* NULL: the credential only */
	int tls_min;		    /* 1 = TLS 1.1, 2 = TLS 1.2 */
	const char *ciphersuites;   /* comma separated mbedTLS names */
};
struct tls_conn;

/*
 * The shared client configuration: PSK identity and key (loaded from the tpa-psk
 * credential and wiped from our buffers once mbedTLS holds it), ciphersuites, curves,
 * versions, random generator. On failure returns a negative errno and one line in err.
 */
int tls_ctx_new(const struct tls_options *o, struct tls_ctx **ret, char *err, size_t errlen);

/* Free the shared configuration (mbedTLS wipes the key). Accepts NULL; returns NULL. */
struct tls_ctx *tls_ctx_free(struct tls_ctx *ctx);

/* One client session; hostname is sent as SNI unless it is an IP literal (or NULL). */
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

/* Forget the saved session so the next start does a full handshake. */
void tls_conn_forget_session(struct tls_conn *c);
