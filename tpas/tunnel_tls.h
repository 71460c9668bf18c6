/* tunnel_tls: TLS (mbedTLS, server certificate) for the tunnel's connections (core/httpd). */
#pragma once

#include <stddef.h>

struct bufferevent;
struct event_base;
struct tunnel_tls;

/*
 * Load the certificate chain (PEM file) and its private key (credential tunnel-tls-key,
 * else key_file). TLS 1.2 or later, the mbedTLS default suites. NULL with one line in err.
 */
struct tunnel_tls *tunnel_tls_new(const char *cert_file, const char *key_file, char *err,
				  size_t errlen);

/* Free (the key is wiped by mbedTLS). Accepts NULL; returns NULL. */
struct tunnel_tls *tunnel_tls_free(struct tunnel_tls *t);

/*
 * A filtering bufferevent for a new connection: a TLS server session over a socket
 * bufferevent that has no fd yet (bufferevent_setfd() on the filter gives it one).
 */
struct bufferevent *tunnel_tls_bufferevent(struct event_base *base, struct tunnel_tls *t);

/* Handshakes that failed, since start. */
unsigned long tunnel_tls_failures(const struct tunnel_tls *t);
