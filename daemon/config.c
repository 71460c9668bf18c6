/* config: the tpad.conf directive table, parsed into typed, range-checked values. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "conf.h"
#include "hex.h"

#define OFF(f) offsetof(struct config, f)
#define DEFAULT_SUITES                                                                             \
	"TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256,TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256,"       \
	"TLS-PSK-WITH-AES-128-GCM-SHA256,TLS-PSK-WITH-AES-256-GCM-SHA384"

/* Names of the CONF_ENUM values, in the order of their C enums. */
static const char *const auth_names[] = {"psk", "psk+oauth2", NULL};
static const char *const tls_min_names[] = {"1.1", "1.2", NULL};
static const char *const ec_names[] = {"L", "M", "Q", "H", NULL};
static const char *const qr_formats[] = {"png", "svg", "zpl", "text", "none", NULL};

static const struct conf_directive directives[] = {
    {.name = "station.socket",
     .type = CONF_STR,
     .offset = OFF(station_socket),
     .def = "/run/tpad/station.sock",
     .min = 0,
     .max = 0},
    {.name = "station.mode",
     .type = CONF_MODE,
     .offset = OFF(station_mode),
     .def = "0660",
     .min = 0,
     .max = 0777},
    {.name = "station.group",
     .type = CONF_STR_OPT,
     .offset = OFF(station_group),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "station.allowed-groups",
     .type = CONF_GIDS,
     .offset = OFF(station_allowed_gids),
     .def = "",
     .aux = OFF(n_station_allowed_gids)},
    {.name = "station.allowed-uids",
     .type = CONF_UIDS,
     .offset = OFF(station_allowed_uids),
     .def = "",
     .aux = OFF(n_station_allowed_uids)},

    {.name = "admin.socket",
     .type = CONF_STR,
     .offset = OFF(admin_socket),
     .def = "/run/tpad/admin.sock",
     .min = 0,
     .max = 0},
    {.name = "admin.mode",
     .type = CONF_MODE,
     .offset = OFF(admin_mode),
     .def = "0600",
     .min = 0,
     .max = 0777},
    {.name = "admin.group",
     .type = CONF_STR_OPT,
     .offset = OFF(admin_group),
     .def = "",
     .min = 0,
     .max = 0},

    {.name = "limits.max-message",
     .type = CONF_SIZE,
     .offset = OFF(max_message),
     .def = "64K",
     .min = 1024,
     .max = 16u << 20},
    {.name = "limits.idle-timeout",
     .type = CONF_DURATION,
     .offset = OFF(idle_timeout_ms),
     .def = "300s",
     .min = 100,
     .max = 86400000},
    {.name = "limits.max-clients",
     .type = CONF_UINT,
     .offset = OFF(max_clients),
     .def = "1024",
     .min = 1,
     .max = 65536},
    {.name = "limits.message-timeout",
     .type = CONF_DURATION,
     .offset = OFF(message_timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 3600000},
    {.name = "limits.max-clients-per-uid",
     .type = CONF_UINT,
     .offset = OFF(max_clients_per_uid),
     .def = "768",
     .min = 1,
     .max = 65536},
    {.name = "limits.max-clients-per-process",
     .type = CONF_UINT,
     .offset = OFF(max_clients_per_process),
     .def = "128",
     .min = 1,
     .max = 65536},
    {.name = "limits.max-pending-calls",
     .type = CONF_UINT,
     .offset = OFF(max_pending_calls),
     .def = "64",
     .min = 1,
     .max = 4096},
    {.name = "limits.max-output",
     .type = CONF_SIZE,
     .offset = OFF(max_output),
     .def = "1M",
     .min = 4096,
     .max = 64u << 20},
    {.name = "limits.max-output-total",
     .type = CONF_SIZE,
     .offset = OFF(max_output_total),
     .def = "64M",
     .min = 65536,
     .max = (uint64_t)4096 << 20},

    {.name = "upstream.url",
     .type = CONF_URL,
     .offset = OFF(upstream_url),
     .def = "https://activation.thingpark.com",
     .min = 0,
     .max = 0},
    {.name = "upstream.sessions",
     .type = CONF_UINT,
     .offset = OFF(upstream_sessions),
     .def = "4",
     .min = 1,
     .max = 256},
    {.name = "upstream.queue",
     .type = CONF_UINT,
     .offset = OFF(upstream_queue),
     .def = "4096",
     .min = 1,
     .max = 1000000},
    {.name = "upstream.psk-identity",
     .type = CONF_STR_OPT,
     .offset = OFF(upstream_psk_identity),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "upstream.psk-file",
     .type = CONF_STR_OPT,
     .offset = OFF(upstream_psk_file),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "upstream.tls-min",
     .type = CONF_ENUM,
     .offset = OFF(upstream_tls_min),
     .def = "1.2",
     .names = tls_min_names},
    {.name = "upstream.ciphersuites",
     .type = CONF_STR,
     .offset = OFF(upstream_ciphersuites),
     .def = DEFAULT_SUITES,
     .min = 0,
     .max = 0},
    {.name = "upstream.connect-timeout",
     .type = CONF_DURATION,
     .offset = OFF(upstream_connect_timeout_ms),
     .def = "5s",
     .min = 10,
     .max = 600000},
    {.name = "upstream.handshake-timeout",
     .type = CONF_DURATION,
     .offset = OFF(upstream_handshake_timeout_ms),
     .def = "10s",
     .min = 10,
     .max = 600000},
    {.name = "upstream.request-timeout",
     .type = CONF_DURATION,
     .offset = OFF(upstream_request_timeout_ms),
     .def = "30s",
     .min = 10,
     .max = 600000},
    {.name = "upstream.settle-after",
     .type = CONF_DURATION,
     .offset = OFF(upstream_settle_after_ms),
     .def = "0",
     .min = 0,
     .max = 86400000},
    {.name = "upstream.backoff-min",
     .type = CONF_DURATION,
     .offset = OFF(upstream_backoff_min_ms),
     .def = "100ms",
     .min = 1,
     .max = 3600000},
    {.name = "upstream.backoff-max",
     .type = CONF_DURATION,
     .offset = OFF(upstream_backoff_max_ms),
     .def = "30s",
     .min = 1,
     .max = 3600000},
    {.name = "upstream.breaker-threshold",
     .type = CONF_UINT,
     .offset = OFF(upstream_breaker_threshold),
     .def = "10",
     .min = 1,
     .max = 100000},
    {.name = "upstream.breaker-cooldown",
     .type = CONF_DURATION,
     .offset = OFF(upstream_breaker_cooldown_ms),
     .def = "5s",
     .min = 1,
     .max = 3600000},
    {.name = "upstream.max-response",
     .type = CONF_SIZE,
     .offset = OFF(upstream_max_response),
     .def = "1M",
     .min = 1024,
     .max = 64u << 20},
    {.name = "upstream.auth",
     .type = CONF_ENUM,
     .offset = OFF(upstream_auth),
     .def = "psk",
     .names = auth_names},

    {.name = "oauth2.token-url",
     .type = CONF_STR_OPT,
     .offset = OFF(oauth2_token_url),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "oauth2.client-id",
     .type = CONF_STR_OPT,
     .offset = OFF(oauth2_client_id),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "oauth2.secret-file",
     .type = CONF_STR_OPT,
     .offset = OFF(oauth2_secret_file),
     .def = "",
     .min = 0,
     .max = 0},

    {.name = "api.base-path",
     .type = CONF_STR,
     .offset = OFF(api_base_path),
     .def = "/maker/latest/api",
     .min = 0,
     .max = 0},
    {.name = "api.import-path",
     .type = CONF_STR,
     .offset = OFF(api_import_path),
     .def = "/factoryDevices",
     .min = 0,
     .max = 0},
    {.name = "api.query-path",
     .type = CONF_STR,
     .offset = OFF(api_query_path),
     .def = "/factoryDevices",
     .min = 0,
     .max = 0},
    {.name = "api.query-param",
     .type = CONF_STR,
     .offset = OFF(api_query_param),
     .def = "deviceEUI",
     .min = 0,
     .max = 0},
    {.name = "api.field-dev-eui",
     .type = CONF_STR,
     .offset = OFF(api_field_dev_eui),
     .def = "deviceEUI",
     .min = 0,
     .max = 0},
    {.name = "api.field-join-eui",
     .type = CONF_STR,
     .offset = OFF(api_field_join_eui),
     .def = "joinEUI",
     .min = 0,
     .max = 0},
    {.name = "api.field-tkm-info",
     .type = CONF_STR,
     .offset = OFF(api_field_tkm_info),
     .def = "tkmInfo",
     .min = 0,
     .max = 0},
    {.name = "api.field-app-key",
     .type = CONF_STR,
     .offset = OFF(api_field_app_key),
     .def = "appKey",
     .min = 0,
     .max = 0},
    {.name = "api.field-owner-token",
     .type = CONF_STR,
     .offset = OFF(api_field_owner_token),
     .def = "ownerToken",
     .min = 0,
     .max = 0},
    {.name = "api.field-ref",
     .type = CONF_STR,
     .offset = OFF(api_field_ref),
     .def = "ref",
     .min = 0,
     .max = 0},
    {.name = "api.field-hsm-group",
     .type = CONF_STR,
     .offset = OFF(api_field_hsm_group),
     .def = "hsmGroupId",
     .min = 0,
     .max = 0},
    {.name = "api.hsm-group",
     .type = CONF_STR_OPT,
     .offset = OFF(api_hsm_group),
     .def = "",
     .min = 0,
     .max = 0},

    {.name = "store.path",
     .type = CONF_STR,
     .offset = OFF(store_path),
     .def = "/var/lib/tpad/tpad.db",
     .min = 0,
     .max = 0},
    {.name = "store.key-file",
     .type = CONF_STR_OPT,
     .offset = OFF(store_key_file),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "store.instance", .type = CONF_STR_OPT, .offset = OFF(store_instance), .def = ""},
    {.name = "store.commit-delay",
     .type = CONF_DURATION,
     .offset = OFF(store_commit_delay_ms),
     .def = "0ms",
     .min = 0,
     .max = 1000},

    {.name = "device.join-eui",
     .type = CONF_HEX,
     .offset = OFF(device_join_eui),
     .def = "0000000000000000",
     .min = HEX_EUI,
     .max = 0},

    {.name = "qr.profile-id",
     .type = CONF_HEX,
     .offset = OFF(qr_profile_id),
     .def = "00000000",
     .min = HEX_PROFILE,
     .max = 0},
    {.name = "qr.template",
     .type = CONF_STR_OPT,
     .offset = OFF(qr_template),
     .def = "",
     .min = 0,
     .max = 0},
    {.name = "qr.format",
     .type = CONF_ENUM_STR,
     .offset = OFF(qr_format),
     .def = "png",
     .names = qr_formats},
    {.name = "qr.scale",
     .type = CONF_UINT,
     .offset = OFF(qr_scale),
     .def = "4",
     .min = 1,
     .max = 20},
    {.name = "qr.margin",
     .type = CONF_UINT,
     .offset = OFF(qr_margin),
     .def = "4",
     .min = 0,
     .max = 16},
    {.name = "qr.ec-level",
     .type = CONF_ENUM,
     .offset = OFF(qr_ec_level),
     .def = "M",
     .names = ec_names},

    {.name = "import.concurrency",
     .type = CONF_UINT,
     .offset = OFF(import_concurrency),
     .def = "16",
     .min = 1,
     .max = 1024},

    {.name = "metrics.listen",
     .type = CONF_STR_OPT,
     .offset = OFF(metrics_listen),
     .def = "",
     .min = 0,
     .max = 0},
};

/* Cross-directive rules, checked once the whole file is read. */
static int config_check(const void *cfg, char *why, size_t whylen)
{
	const struct config *c = cfg;
	if (c->upstream_backoff_min_ms > c->upstream_backoff_max_ms) {
		snprintf(why, whylen, "upstream.backoff-min is larger than upstream.backoff-max");
		return -EINVAL;
	}
	if (c->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2 &&
	    (!c->oauth2_token_url || !c->oauth2_client_id)) {
		snprintf(why, whylen,
			 "upstream.auth = psk+oauth2 needs oauth2.token-url and oauth2.client-id");
		return -EINVAL;
	}
	if (c->upstream_settle_after_ms &&
	    c->upstream_settle_after_ms < 2 * (uint64_t)c->upstream_request_timeout_ms) {
		snprintf(why, whylen,
			 "upstream.settle-after must be at least twice upstream.request-timeout "
			 "(or 0 for exactly that): an import slower than that could land after "
			 "tpad trusted a query's \"not found\"");
		return -EINVAL;
	}
	if (c->store_instance && strlen(c->store_instance) > 64) {
		snprintf(why, whylen, "store.instance must be at most 64 characters");
		return -EINVAL;
	}
	if (strcmp(c->station_socket, c->admin_socket) == 0) {
		snprintf(why, whylen, "station.socket and admin.socket are the same path");
		return -EINVAL;
	}
	return 0;
}

static const struct conf_schema schema = {
    .directives = directives,
    .n_directives = sizeof(directives) / sizeof(directives[0]),
    .origins_offset = OFF(origins),
    .check = config_check,
};

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	conf_defaults(&schema, c);
}

int config_load_string(struct config *c, const char *name, const char *text, char *err,
		       size_t errlen)
{
	return conf_load_string(&schema, c, name, text, err, errlen);
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	return conf_load(&schema, c, path, err, errlen);
}

void config_print(const struct config *c, FILE *f, bool origins)
{
	conf_print(&schema, c, f, origins);
}

void config_free(struct config *c)
{
	if (c)
		conf_free(&schema, c);
}
