/* sim: shared state of tpa-sim, the simulated ThingPark Activation server. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/x509_crt.h>

#include <jansson.h>

struct event_base;
struct event;
struct evconnlistener;
struct http_request;

#define SIM_BODY_MAX (64 * 1024) /* request body cap (413 above) */
#define SIM_PSK_MAX 32		 /* MBEDTLS_PSK_MAX_LEN */
#define SIM_IDENTITY_MAX 128
#define SIM_SECRET_MAX 256
#define SIM_TOKEN_HEX 32 /* ownerToken and access_token length in hex digits */

/* What the server does when a known DevEUI is imported again. */
enum sim_duplicate {
	SIM_DUP_409,  /* 409 ALREADY_IMPORTED */
	SIM_DUP_SAME, /* 200 with the stored ownerToken */
	SIM_DUP_NEW,  /* 200 with a freshly drawn ownerToken, stored */
};

/* Injected faults; every field can be changed at run time through the control port. */
struct sim_faults {
	unsigned latency_ms;
	unsigned import_latency_ms; /* an import lands (and is answered) this long after it came */
	unsigned query_latency_ms;  /* extra delay of a query's answer */
	unsigned jitter_ms;
	double rate_5xx;
	double rate_429;
	unsigned retry_after;
	unsigned reset_after;
	double drop_before_answer;
	double drop_before_import;
	unsigned idle_close_ms;
	bool slow;
	double malformed;
	bool refuse;
	enum sim_duplicate duplicate;
	/* OAuth2: the token endpoint answers this status (200: without a token) */
	unsigned token_status;
	bool api_unauthorized; /* the API answers 401 whatever the token */
	bool echo_app_key;     /* the API's device objects show the appKey (as some clouds do) */
	bool reject_echo;      /* imports refused 400 with a message quoting the appKey */
	char note[64];	       /* "": none; else a member "note" of the API's device objects */
	char reject_message[1024]; /* "": none; else imports refused 400 with this message */
};

/* Counters served on GET /counters (devices is the registry size, not a counter). */
struct sim_counters {
	uint64_t imports;
	uint64_t duplicate_imports;
	uint64_t queries;
	uint64_t connections;
	uint64_t handshakes;
	uint64_t resumed;
	uint64_t requests;
	uint64_t errors_injected;
	uint64_t token_requests;
};

/* One imported device. */
struct sim_device {
	uint64_t ref;
	char dev_eui[17];
	char join_eui[17];
	char tkm_info[21]; /* empty when the device has an AppKey */
	char app_key[33];  /* empty when the device has a TKM_INFO */
	char hsm_group[65];
	char owner_token[SIM_TOKEN_HEX + 1];
	int64_t lands_at; /* unix ms from which queries see it (0: at once) */
	bool foreign;	  /* seeded through the control port: imported elsewhere */
};

/* One OAuth2 access token handed out by POST /oauth/token. */
struct sim_token {
	char token[SIM_TOKEN_HEX + 1];
	uint64_t expires_ms; /* monotonic */
};

#define SIM_TOKENS_MAX 64

/* TLS server side: one configuration shared by every connection, plus the session cache. */
struct sim_tls {
	mbedtls_ssl_config conf;
	mbedtls_ssl_cache_context cache;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	char identity[SIM_IDENTITY_MAX + 1];
	size_t identity_len;
	uint8_t psk[SIM_PSK_MAX];
	size_t psk_len;
	bool ready;
	/* certificate mode */
	mbedtls_x509_crt cert;
	mbedtls_x509_crt client_ca;
	mbedtls_pk_context key;
	bool cert_mode;
};

/* The whole simulator. */
struct sim {
	struct event_base *base;
	struct evconnlistener *api_listener;
	struct evconnlistener *control_listener;
	struct event *save_ev;
	bool plain;
	bool verbose;
	struct sim_tls tls;

	struct sim_faults faults;
	struct sim_counters counters;
	uint64_t rng;

	struct sim_device *devices;
	size_t ndevices;
	size_t cap_devices;
	size_t *index; /* open addressing by DevEUI: device number + 1, 0 when free */
	size_t index_cap;
	uint64_t next_ref;
	const char *registry_path;
	int journal_fd;		/* <registry>.journal: each change, synced before its answer */
	unsigned journal_lines; /* since the last full save */
	bool journal_unsynced;

	bool oauth2;
	char client_id[SIM_SECRET_MAX];
	char client_secret[SIM_SECRET_MAX];
	unsigned token_ttl;
	struct sim_token tokens[SIM_TOKENS_MAX];

	/* DX Maker mode (sim_dx.c) */
	bool dx;
	char customer_id[64];
	bool query_unfiltered; /* a query lists every device, paged, ignoring deviceEUI */
	uint64_t deletes;
	uint64_t delete_requests;
	unsigned drop_delete_before; /* next N deletes: close before deleting, no answer */
	unsigned drop_delete_after;  /* next N deletes: delete, then close without answering */
	uint64_t key_gens;
	uint64_t hsm_key_imports; /* imports that carried an hsmEncryptedAppKey */
	unsigned keygen_delay_ms;  /* extra delay of an appKeyGens answer */
	mbedtls_ctr_drbg_context *dx_drbg; /* for RSA encryption of VendorKeys */
};

/* What the connection does with a reply. */
enum sim_action {
	SIM_ANSWER,  /* write the HTTP response */
	SIM_DROP,    /* close the connection without answering */
	SIM_GARBAGE, /* write bytes that are not HTTP, then close */
};

/* A reply built by the API or control handlers. */
struct sim_reply {
	int status;
	char *body;	      /* JSON text (malloc), or NULL for an empty body */
	unsigned retry_after; /* Retry-After seconds, 0 for none */
	const char *allow;    /* Allow header for 405, or NULL */
	unsigned delay_ms;    /* extra delay before this answer (import or query latency) */
	enum sim_action action;
};

/* sim_api.c: a seeded PRNG shared by fault draws and tokens; a monotonic clock. */
uint64_t sim_random(struct sim *s);
bool sim_chance(struct sim *s, double p);
void sim_random_hex(struct sim *s, char *out, size_t ndigits);
uint64_t sim_now_ms(void);
int64_t sim_wall_ms(void);

/* sim_api.c: the TPA API, OAuth2 and the control port. */
void api_handle(struct sim *s, const struct http_request *req, struct sim_reply *ret);
void control_handle(struct sim *s, const struct http_request *req, struct sim_reply *ret);
void reply_clear(struct sim_reply *r);
int sim_parse_duplicate(const char *v, enum sim_duplicate *ret);
int registry_load(struct sim *s);
int registry_save(struct sim *s);
/*
 * A change of the registry: one device added or changed (d), removed (eui), or all of
 * them (both NULL). It is appended to the journal; registry_sync() makes it durable
 * before the answer that reports it leaves. The whole registry is rewritten now and then.
 */
void registry_changed(struct sim *s, const struct sim_device *d, const char *removed_eui);
int registry_sync(struct sim *s);
void sim_devices_free(struct sim *s);

/* sim_api.c: helpers shared with the DX Maker part. */
void reply_json(struct sim_reply *rep, int status, json_t *v);
void reply_error(struct sim_reply *rep, int status, const char *code, const char *message);
struct sim_device *device_find(struct sim *s, const char *dev_eui);
json_t *device_json(const struct sim_device *d, bool full);
void device_remove(struct sim *s, size_t i);
void api_token(struct sim *s, const struct http_request *req, struct sim_reply *rep);
bool api_authorized(struct sim *s, const struct http_request *req);

/*
 * sim_dx.c: the DX Maker API paths (token form, hsmGroupId required, paging, DELETE by
 * ref, appKeyGens). True if the request was answered here.
 */
bool dx_route(struct sim *s, const struct http_request *req, const char *path,
	      struct sim_reply *rep);
/* Control port: POST /dx {"query_unfiltered":bool}, GET /dx. True if answered here. */
bool dx_control(struct sim *s, const struct http_request *req, const char *path,
		struct sim_reply *rep);
void dx_free(struct sim *s);

/* sim_tls.c: the mbedTLS PSK server. */
int tls_init(struct sim_tls *t, const char *identity, const uint8_t *psk, size_t psk_len);
/* Certificate mode: chain and key (PEM files); client_ca (or NULL) requires mTLS. */
int tls_init_cert(struct sim_tls *t, const char *cert, const char *key, const char *client_ca,
		  char *err, size_t errlen);
void tls_free(struct sim_tls *t);
int tls_conn_setup(struct sim_tls *t, mbedtls_ssl_context *ssl, int *fd);
int tls_conn_handshake(mbedtls_ssl_context *ssl, bool *ret_resumed);

/* sim_conn.c: listeners and connections. */
int conn_listen(struct sim *s, const char *addr, bool control, int *ret_port);
void conn_close_all(void);
