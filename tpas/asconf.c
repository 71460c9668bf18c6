/* asconf: tpas.conf, its directive table on core/conf, and its defaults. */
#include "asconf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "http.h"
#include "metrics_http.h"
#include "server_conf.h"

#define OFF(f) offsetof(struct asconf, f)

static const struct conf_directive directives[] = {
    {.name = "tunnel.listen",
     .type = CONF_STR,
     .offset = OFF(tunnel_listen),
     .def = "127.0.0.1:8090",
     .validate = conf_validate_listen},
    {.name = "tunnel.path", .type = CONF_STR, .offset = OFF(tunnel_path), .def = "/"},
    {.name = "tunnel.key-file", .type = CONF_STR_OPT, .offset = OFF(tunnel_key_file), .def = ""},
    {.name = "tunnel.as-id", .type = CONF_STR, .offset = OFF(as_id), .def = "tpas"},
    {.name = "tunnel.max-time-deviation",
     .type = CONF_DURATION,
     .offset = OFF(max_time_deviation_ms),
     .def = "300s",
     .min = 0,
     .max = 86400000},
    {.name = "tunnel.max-body",
     .type = CONF_SIZE,
     .offset = OFF(tunnel_max_body),
     .def = "16K",
     .min = 1024,
     .max = 1u << 20},
    {.name = "tunnel.timeout",
     .type = CONF_DURATION,
     .offset = OFF(tunnel_timeout_ms),
     .def = "30s",
     .min = 1000,
     .max = 3600000},
    {.name = "tunnel.max-connections",
     .type = CONF_UINT,
     .offset = OFF(tunnel_max_conns),
     .def = "512",
     .min = 1,
     .max = 65536},
    {.name = "tunnel.tls-cert-file",
     .type = CONF_STR_OPT,
     .offset = OFF(tunnel_tls_cert_file),
     .def = ""},
    {.name = "tunnel.tls-key-file",
     .type = CONF_STR_OPT,
     .offset = OFF(tunnel_tls_key_file),
     .def = ""},

    {.name = "apps.socket",
     .type = CONF_STR,
     .offset = OFF(apps_socket),
     .def = "/run/tpas/apps.sock",
     .validate = conf_validate_socket_path},
    {.name = "apps.mode", .type = CONF_MODE, .offset = OFF(apps_mode), .def = "0660", .max = 0777},
    {.name = "apps.group",
     .type = CONF_STR_OPT,
     .offset = OFF(apps_group),
     .def = "",
     .validate = conf_validate_group},

    {.name = "admin.socket",
     .type = CONF_STR,
     .offset = OFF(admin_socket),
     .def = "/run/tpas/admin.sock",
     .validate = conf_validate_socket_path},
    {.name = "admin.mode",
     .type = CONF_MODE,
     .offset = OFF(admin_mode),
     .def = "0600",
     .max = 0777},
    {.name = "admin.group",
     .type = CONF_STR_OPT,
     .offset = OFF(admin_group),
     .def = "",
     .validate = conf_validate_group},

    {.name = "store.path",
     .type = CONF_STR,
     .offset = OFF(store_path),
     .def = "/var/lib/tpas/tpas.db"},
    {.name = "store.key-file", .type = CONF_STR_OPT, .offset = OFF(store_key_file), .def = ""},
    {.name = "store.retention-days",
     .type = CONF_UINT,
     .offset = OFF(retention_days),
     .def = "30",
     .min = 0,
     .max = 36500},

    {.name = "astk.rsa-key-file", .type = CONF_STR_OPT, .offset = OFF(rsa_key_file), .def = ""},

    {.name = "lrc.url",
     .type = CONF_STR_OPT,
     .offset = OFF(lrc_url),
     .def = "",
     .validate = conf_validate_origin_url},
    {.name = "lrc.ca-file", .type = CONF_STR_OPT, .offset = OFF(lrc_ca_file), .def = ""},
    {.name = "lrc.sessions",
     .type = CONF_UINT,
     .offset = OFF(lrc_sessions),
     .def = "2",
     .min = 1,
     .max = 64},
    {.name = "lrc.request-timeout",
     .type = CONF_DURATION,
     .offset = OFF(lrc_timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 600000},

    {.name = "webhook.url",
     .type = CONF_STR_OPT,
     .offset = OFF(webhook_url),
     .def = "",
     .validate = conf_validate_url},
    {.name = "webhook.ca-file", .type = CONF_STR_OPT, .offset = OFF(webhook_ca_file), .def = ""},
    {.name = "webhook.token-file",
     .type = CONF_STR_OPT,
     .offset = OFF(webhook_token_file),
     .def = ""},
    {.name = "webhook.request-timeout",
     .type = CONF_DURATION,
     .offset = OFF(webhook_timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 600000},
    {.name = "webhook.retry-max",
     .type = CONF_DURATION,
     .offset = OFF(webhook_retry_max_ms),
     .def = "30s",
     .min = 200,
     .max = 3600000},
    {.name = "webhook.batch",
     .type = CONF_UINT,
     .offset = OFF(webhook_batch),
     .def = "100",
     .min = 1,
     .max = 1000},

    SERVER_LIMITS_DIRECTIVES(OFF(limits), "256", "192", "64"),

    {.name = "metrics.listen",
     .type = CONF_STR_OPT,
     .offset = OFF(metrics_listen),
     .def = "",
     .validate = conf_validate_listen},
};

/* Rules across directives. */
static int asconf_check(const void *cfg, char *why, size_t whylen)
{
	const struct asconf *c = cfg;
	if (c->tunnel_path[0] != '/') {
		snprintf(why, whylen, "tunnel.path must start with '/'");
		return -EINVAL;
	}
	if (strchr(c->tunnel_path, '?') || strchr(c->tunnel_path, ' ')) {
		snprintf(why, whylen, "tunnel.path must be a plain path");
		return -EINVAL;
	}
	if (strcmp(c->apps_socket, c->admin_socket) == 0) {
		snprintf(why, whylen, "apps.socket and admin.socket are the same path");
		return -EINVAL;
	}
	if (strlen(c->as_id) > 64) {
		snprintf(why, whylen, "tunnel.as-id is longer than 64 characters");
		return -EINVAL;
	}
	/* Alone, the key would go unused and the listener speak plain HTTP. */
	if (c->tunnel_tls_key_file && !c->tunnel_tls_cert_file) {
		snprintf(why, whylen,
			 "tunnel.tls-key-file is set but tunnel.tls-cert-file is not: TLS on the "
			 "listener needs both (neither for plain HTTP behind a TLS reverse proxy)");
		return -EINVAL;
	}
	return 0;
}

static const struct conf_schema schema = {
    .directives = directives,
    .n_directives = sizeof(directives) / sizeof(directives[0]),
    .origins_offset = OFF(origins),
    .check = asconf_check,
};

void asconf_defaults(struct asconf *c)
{
	memset(c, 0, sizeof(*c));
	conf_defaults(&schema, c);
}

int asconf_load(struct asconf *c, const char *path, char *err, size_t errlen)
{
	return conf_load(&schema, c, path, err, errlen);
}

int asconf_load_string(struct asconf *c, const char *name, const char *text, char *err,
		       size_t errlen)
{
	return conf_load_string(&schema, c, name, text, err, errlen);
}

const char *asconf_origin(const struct asconf *c, const char *name)
{
	return conf_origin(&schema, c, name);
}

void asconf_print(const struct asconf *c, FILE *f, bool origins)
{
	conf_print(&schema, c, f, origins);
}

void asconf_free(struct asconf *c)
{
	if (c)
		conf_free(&schema, c);
}
