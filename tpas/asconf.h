/* asconf: tpas.conf, its directive table on core/conf, and its defaults. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "server.h"
#include "tpad-build.h"

/* As tpad's: under the configured sysconfdir, where the units and tpas(8) as installed look. */
#define ASCONF_DEFAULT_PATH TPAD_SYSCONFDIR "/tpas/tpas.conf"

struct conf_origins;

/* Every directive of tpas(8)'s configuration as typed values; secrets never live here. */
struct asconf {
	/* [tunnel] */
	char *tunnel_listen;
	char *tunnel_path;
	char *tunnel_key_file;
	char *as_id;
	uint32_t max_time_deviation_ms;
	size_t tunnel_max_body;
	uint32_t tunnel_timeout_ms;
	uint32_t tunnel_max_conns;
	char *tunnel_tls_cert_file;
	char *tunnel_tls_key_file;
	/* [apps] */
	char *apps_socket;
	unsigned apps_mode;
	char *apps_group;
	/* [admin] */
	char *admin_socket;
	unsigned admin_mode;
	char *admin_group;
	/* [store] */
	char *store_path;
	char *store_key_file;
	uint32_t retention_days;
	/* [astk] */
	char *rsa_key_file;
	/* [lrc] */
	char *lrc_url;
	char *lrc_ca_file;
	uint32_t lrc_sessions;
	uint32_t lrc_timeout_ms;
	/* [webhook] */
	char *webhook_url;
	char *webhook_ca_file;
	char *webhook_token_file; /* the credential webhook-token: sent as a Bearer token */
	uint32_t webhook_timeout_ms;
	uint32_t webhook_retry_max_ms;
	uint32_t webhook_batch;
	struct server_limits limits; /* [limits] */
	/* [metrics] */
	char *metrics_listen;

	struct conf_origins *origins;
};

/* Fill in the built-in defaults (zeroing c first). */
void asconf_defaults(struct asconf *c);

/* Parse a file (or text named name) over the defaults: 0, or a negative errno with
 * "FILE:LINE: reason" in err. */
int asconf_load(struct asconf *c, const char *path, char *err, size_t errlen);
int asconf_load_string(struct asconf *c, const char *name, const char *text, char *err,
		       size_t errlen);

/* Where the value of directive name came from: "default" or "FILE:LINE". */
const char *asconf_origin(const struct asconf *c, const char *name);

/* Print every directive's effective value, as a config file (with where it came from). */
void asconf_print(const struct asconf *c, FILE *f, bool origins);

/* Release the strings. Accepts a zeroed struct. */
void asconf_free(struct asconf *c);
