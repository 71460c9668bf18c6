/* tunnel_tls: TLS (mbedTLS, server certificate) for the tunnel's connections (core/httpd). */
#include "tunnel_tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "ascrypto.h"
#include "cred.h"
#include "log.h"

struct tunnel_tls {
	mbedtls_ssl_config conf;
	mbedtls_x509_crt chain;
	mbedtls_pk_context key;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	unsigned long failures;
};

/* One connection's TLS session; the underlying socket bufferevent carries the records. */
struct tls_sess {
	struct tunnel_tls *t;
	mbedtls_ssl_context ssl;
	struct bufferevent *under;
	struct bufferevent *bev; /* the filter the HTTP server uses */
	struct event *kick;	 /* runs the output filter once writing is enabled */
	bool handshaken;
};

/*
 * libevent's filter runs its output filter when data is added only if writing is already
 * enabled: a reply added before that would wait for the next read without a kick.
 */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tls_sess *s = arg;
	if (evbuffer_get_length(bufferevent_get_output(s->bev)))
		bufferevent_flush(s->bev, EV_WRITE, BEV_NORMAL);
}

static void output_added(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct tls_sess *s = arg;
	if (info->n_added)
		event_active(s->kick, EV_TIMEOUT, 1);
}

/* Records out: straight onto the socket's output buffer. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct tls_sess *s = ctx;
	if (evbuffer_add(bufferevent_get_output(s->under), buf, len) < 0)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	return (int)len;
}

/* Records in: what the socket has read. */
static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct tls_sess *s = ctx;
	struct evbuffer *in = bufferevent_get_input(s->under);
	if (evbuffer_get_length(in) == 0)
		return MBEDTLS_ERR_SSL_WANT_READ;
	int n = evbuffer_remove(in, buf, len);
	return n > 0 ? n : MBEDTLS_ERR_SSL_WANT_READ;
}

/* Ciphertext from the socket to plaintext for the HTTP server. */
static enum bufferevent_filter_result input_filter(struct evbuffer *src, struct evbuffer *dst,
						   ev_ssize_t lim, enum bufferevent_flush_mode mode,
						   void *ctx)
{
	struct tls_sess *s = ctx;
	if (!s->handshaken) {
		int r = mbedtls_ssl_handshake(&s->ssl);
		if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE)
			return BEV_NEED_MORE;
		if (r != 0) {
			char why[128];
			mbedtls_strerror(r, why, sizeof(why));
			s->t->failures++;
			log_warnx("tunnel: TLS handshake failed: %s", why);
			/* A filter's BEV_ERROR alone leaves the connection open until its timeout.
			 */
			bufferevent_trigger_event(s->bev, BEV_EVENT_READING | BEV_EVENT_ERROR,
						  BEV_TRIG_DEFER_CALLBACKS);
			return BEV_ERROR;
		}
		s->handshaken = true;
	}
	unsigned char buf[16384];
	bool got = false;
	for (;;) {
		int n = mbedtls_ssl_read(&s->ssl, buf, sizeof(buf));
		if (n > 0) {
			if (evbuffer_add(dst, buf, (size_t)n) < 0) {
				/* Out of memory: a request with a hole in it must not be read. */
				cred_wipe(buf, sizeof(buf));
				bufferevent_trigger_event(s->bev,
							  BEV_EVENT_READING | BEV_EVENT_ERROR,
							  BEV_TRIG_DEFER_CALLBACKS);
				return BEV_ERROR;
			}
			got = true;
			continue;
		}
		if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE)
			break;
		/* close_notify, EOF inside a record, a bad record: the connection ends. */
		cred_wipe(buf, sizeof(buf));
		if (!got)
			bufferevent_trigger_event(s->bev, BEV_EVENT_READING | BEV_EVENT_EOF,
						  BEV_TRIG_DEFER_CALLBACKS);
		return got ? BEV_OK : BEV_ERROR;
	}
	cred_wipe(buf, sizeof(buf));
	return got ? BEV_OK : BEV_NEED_MORE;
}

/* Plaintext from the HTTP server to records on the socket. */
static enum bufferevent_filter_result output_filter(struct evbuffer *src, struct evbuffer *dst,
						    ev_ssize_t lim,
						    enum bufferevent_flush_mode mode, void *ctx)
{
	struct tls_sess *s = ctx;
	if (!s->handshaken)
		return BEV_NEED_MORE;
	while (evbuffer_get_length(src) > 0) {
		size_t n = evbuffer_get_length(src);
		if (n > 16384)
			n = 16384;
		const unsigned char *p = evbuffer_pullup(src, (ev_ssize_t)n);
		int w = mbedtls_ssl_write(&s->ssl, p, n);
		if (w == MBEDTLS_ERR_SSL_WANT_WRITE || w == MBEDTLS_ERR_SSL_WANT_READ)
			break;
		if (w < 0)
			return BEV_ERROR;
		evbuffer_drain(src, (size_t)w);
	}
	/*
	 * Hand the records to the kernel now: the HTTP server takes "the filter consumed the
	 * reply" for "sent", and on a Connection: close it closes the socket at once. (A socket
	 * bufferevent keeps the start of its output frozen; it unfreezes it to write, as here.)
	 */
	struct evbuffer *out = bufferevent_get_output(s->under);
	evutil_socket_t fd = bufferevent_getfd(s->under);
	evbuffer_unfreeze(out, 1);
	while (fd >= 0 && evbuffer_get_length(out) > 0 && evbuffer_write(out, fd) > 0)
		;
	evbuffer_freeze(out, 1);
	return BEV_OK;
}

static void sess_free(void *ctx)
{
	struct tls_sess *s = ctx;
	if (s->kick)
		event_free(s->kick);
	mbedtls_ssl_free(&s->ssl);
	free(s);
}

struct bufferevent *tunnel_tls_bufferevent(struct event_base *base, struct tunnel_tls *t)
{
	struct tls_sess *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->t = t;
	mbedtls_ssl_init(&s->ssl);
	s->under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	s->kick = event_new(base, -1, 0, kick_cb, s);
	if (!s->under || !s->kick || mbedtls_ssl_setup(&s->ssl, &t->conf) != 0) {
		if (s->under)
			bufferevent_free(s->under);
		sess_free(s);
		return NULL;
	}
	mbedtls_ssl_set_bio(&s->ssl, s, bio_send, bio_recv, NULL);
	struct bufferevent *bev = bufferevent_filter_new(s->under, input_filter, output_filter,
							 BEV_OPT_CLOSE_ON_FREE, sess_free, s);
	if (!bev) {
		bufferevent_free(s->under);
		sess_free(s);
		return NULL;
	}
	s->bev = bev;
	/* Without it, what the server writes would wait for the peer's next record. */
	if (!evbuffer_add_cb(bufferevent_get_output(bev), output_added, s)) {
		bufferevent_free(bev); /* frees under and s too */
		return NULL;
	}
	return bev;
}

/* Why the file at path cannot be read (strerror's text), or NULL when it can. */
static const char *file_unreadable(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	const char *why = NULL;
	if (fd < 0 || fstat(fd, &st) < 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	if (fd >= 0)
		close(fd);
	return why;
}

struct tunnel_tls *tunnel_tls_new(const char *cert_file, const char *key_file, char *err,
				  size_t errlen)
{
	struct tunnel_tls *t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	mbedtls_ssl_config_init(&t->conf);
	mbedtls_x509_crt_init(&t->chain);
	mbedtls_pk_init(&t->key);
	mbedtls_entropy_init(&t->entropy);
	mbedtls_ctr_drbg_init(&t->drbg);
	static char pem[8192];
	int r;
	static const char personal[] = "tpas-tunnel-tls";
	if (mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
				  (const unsigned char *)personal, sizeof(personal) - 1) != 0) {
		snprintf(err, errlen, "tunnel TLS: cannot seed the random generator");
		goto fail;
	}
	const char *unreadable = file_unreadable(cert_file);
	if (unreadable || (r = mbedtls_x509_crt_parse_file(&t->chain, cert_file)) != 0) {
		char why[128];
		if (!unreadable)
			mbedtls_strerror(r, why, sizeof(why));
		snprintf(err, errlen, "tunnel.tls-cert-file %s: %s", cert_file,
			 unreadable ? unreadable : why);
		goto fail;
	}
	/* Named by its directive when it came from the file (its file:line is then said). */
	char src_path[PATH_MAX];
	const char *src = cred_source("tunnel-tls-key", key_file, src_path, sizeof(src_path));
	const char *directive = src && src == key_file ? "tunnel.tls-key-file: " : "";
	r = cred_load_text("tunnel-tls-key", key_file, pem, sizeof(pem));
	if (r < 0) {
		char why[PATH_MAX + 200];
		snprintf(err, errlen, "%scannot load the tunnel's TLS key: %s", directive,
			 cred_explain(r, "tunnel-tls-key", key_file, why, sizeof(why)));
		goto fail;
	}
	r = ascrypto_private_key_parse(&t->key, pem);
	cred_wipe(pem, sizeof(pem));
	if (r == -ENOKEY) {
		char advice[3 * PATH_MAX + 400];
		ascrypto_passphrase_advice(advice, sizeof(advice), "the tunnel's TLS key",
					   src ? src : "FILE", "tunnel.tls-key-file",
					   "tunnel-tls-key");
		snprintf(err, errlen, "%s%s", directive, advice);
		goto fail;
	}
	if (r < 0) {
		snprintf(err, errlen, "%sthe tunnel's TLS key is not a PEM private key", directive);
		goto fail;
	}
	if (mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_SERVER,
					MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0 ||
	    mbedtls_ssl_conf_own_cert(&t->conf, &t->chain, &t->key) != 0) {
		snprintf(err, errlen, "tunnel TLS: the key does not match the certificate");
		goto fail;
	}
	mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
				     MBEDTLS_SSL_MINOR_VERSION_3);
	mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
	return t;
fail:
	tunnel_tls_free(t);
	return NULL;
}

struct tunnel_tls *tunnel_tls_free(struct tunnel_tls *t)
{
	if (!t)
		return NULL;
	mbedtls_ssl_config_free(&t->conf);
	mbedtls_x509_crt_free(&t->chain);
	mbedtls_pk_free(&t->key);
	mbedtls_ctr_drbg_free(&t->drbg);
	mbedtls_entropy_free(&t->entropy);
	free(t);
	return NULL;
}

unsigned long tunnel_tls_failures(const struct tunnel_tls *t)
{
	return t ? t->failures : 0;
}
