/* config: the tpad.conf directive table, parsed into typed, range-checked values. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "caption.h"
#include "conf.h"
#include "hex.h"
#include "message.h"
#include "server_conf.h"
#include "store_url.h"
#include "tls.h"

#define OFF(f) offsetof(struct config, f)
/* Names of the CONF_ENUM values, in the order of their C enums. */
static const char *const auth_names[] = {"psk", "psk+oauth2", "oauth2", "none", NULL};
static const char *const tls_names[] = {"psk", "cert", NULL};
static const char *const profile_names[] = {"tpa-psk", "dx-maker", NULL};
static const char *const tokform_names[] = {"hex", "base64", "as-is", NULL};
static const char *const keysrc_names[] = {"local", "cloud-hsm", NULL};
static const char *const tls_min_names[] = {"1.1", "1.2", NULL};
static const char *const ec_names[] = {"L", "M", "Q", "H", NULL};
static const char *const store_backends[] = {"sqlite", "postgresql", NULL};
static const char *const qr_formats[] = {"png", "svg", "zpl", "text", "pdf", "none", NULL};
static const char *const caption_positions[] = {"right", "below", NULL};
static const char *const label_images[] = {"whole", "code", NULL};
static const char *const printer_languages[] = {"auto", "zpl", "pdf", NULL};

/* label.caption-N: a template over {devEUI}, {joinEUI}, {serial}; empty is no line. */
static int caption_validate(const char *v, char *why, size_t whylen)
{
	return *v ? caption_check(v, why, whylen) : 0;
}

/* Printer resolutions label.dpi and a printer's dpi take, in dots per inch. */
#define LABEL_DPI_MIN 100
#define LABEL_DPI_MAX 1200

/* printer.NAME.dpi: 0 takes label.dpi; any other value is a resolution label.dpi takes. */
static int printer_dpi_validate(const char *v, char *why, size_t whylen)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (*v && !*end && !errno && n && (n < LABEL_DPI_MIN || n > LABEL_DPI_MAX)) {
		snprintf(why, whylen, "must be 0 (label.dpi) or between %d and %d", LABEL_DPI_MIN,
			 LABEL_DPI_MAX);
		return -ERANGE;
	}
	return 0;
}

/* printer.NAME.url: socket://host[:port], ipp://host[:port][/path] or ipps://. */
static int printer_url_validate(const char *v, char *why, size_t whylen)
{
	const char *host = NULL;
	if (!*v)
		return 0;
	if (strncmp(v, "socket://", 9) == 0)
		host = v + 9;
	else if (strncmp(v, "ipp://", 6) == 0)
		host = v + 6;
	else if (strncmp(v, "ipps://", 7) == 0)
		host = v + 7;
	if (!host) {
		snprintf(why, whylen, "must start with socket://, ipp:// or ipps://");
		return -EINVAL;
	}
	if (!*host || *host == '/' || *host == ':') {
		snprintf(why, whylen, "has no host");
		return -EINVAL;
	}
	for (const char *p = v; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f) {
			snprintf(why, whylen, "must not contain blanks or control characters");
			return -EINVAL;
		}
	size_t hl = strcspn(host, "/?");
	if (hl >= 256) {
		snprintf(why, whylen, "has a host name that is too long");
		return -EINVAL;
	}
	if (memchr(host, '@', hl)) {
		snprintf(why, whylen, "must not hold a user name (user@host): printers take none");
		return -EINVAL;
	}
	const char *rb = host[0] == '[' ? memchr(host, ']', hl) : NULL;
	if (host[0] == '[' && (!rb || rb == host + 1)) {
		snprintf(why, whylen, "has an IPv6 address in [ ] that is empty or not closed");
		return -EINVAL;
	}
	if (rb && rb + 1 != host + hl && rb[1] != ':') {
		snprintf(why, whylen, "has text after the IPv6 address's ]");
		return -EINVAL;
	}
	const char *colon = memrchr(host, ':', hl);
	if (rb && colon < rb)
		colon = NULL;
	if (colon) {
		char *end;
		errno = 0;
		unsigned long port = strtoul(colon + 1, &end, 10);
		if (errno || port == 0 || port > 65535 || end != host + hl) {
			snprintf(why, whylen, "has a bad port");
			return -EINVAL;
		}
	}
	return 0;
}

#define POFF(f) offsetof(struct config_printer, f)

/* The keys of a [printer.<name>] section. */
static const struct conf_directive printer_directives[] = {
    {.name = "url",
     .type = CONF_STR_OPT,
     .offset = POFF(url),
     .def = "",
     .validate = printer_url_validate},
    {.name = "language",
     .type = CONF_ENUM,
     .offset = POFF(language),
     .def = "auto",
     .names = printer_languages},
    {.name = "dpi",
     .type = CONF_UINT,
     .offset = POFF(dpi),
     .def = "0",
     .min = 0,
     .max = LABEL_DPI_MAX,
     .validate = printer_dpi_validate},
    {.name = "width",
     .type = CONF_TENTHS,
     .offset = POFF(width),
     .def = "0",
     .min = 0,
     .max = 5000},
    {.name = "height",
     .type = CONF_TENTHS,
     .offset = POFF(height),
     .def = "0",
     .min = 0,
     .max = 5000},
    {.name = "timeout",
     .type = CONF_DURATION,
     .offset = POFF(timeout_ms),
     .def = "10s",
     .min = 100,
     .max = 600000},
    {.name = "status-interval",
     .type = CONF_DURATION,
     .offset = POFF(status_interval_ms),
     .def = "30s",
     .min = 0,
     .max = 86400000},
    {.name = "queue",
     .type = CONF_UINT,
     .offset = POFF(queue),
     .def = "64",
     .min = 1,
     .max = 100000},
    {.name = "station-uids",
     .type = CONF_UIDS,
     .offset = POFF(station_uids),
     .def = "",
     .aux = POFF(n_station_uids)},
    {.name = "station-groups",
     .type = CONF_GIDS,
     .offset = POFF(station_gids),
     .def = "",
     .aux = POFF(n_station_gids)},
};

static const struct conf_section_type sections[] = {
    {.prefix = "printer",
     .directives = printer_directives,
     .n_directives = sizeof(printer_directives) / sizeof(printer_directives[0]),
     .array_offset = OFF(printers),
     .count_offset = OFF(n_printers),
     .elem_size = sizeof(struct config_printer),
     .max = CONFIG_MAX_PRINTERS,
     .name_offset = POFF(name)},
};

static const struct conf_directive directives[] = {
    {.name = "station.socket",
     .type = CONF_STR,
     .offset = OFF(station_socket),
     .def = "/run/tpad/station.sock",
     .min = 0,
     .max = 0,
     .validate = conf_validate_socket_path},
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
     .max = 0,
     .validate = conf_validate_group},
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
     .max = 0,
     .validate = conf_validate_socket_path},
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
     .max = 0,
     .validate = conf_validate_group},

    SERVER_LIMITS_DIRECTIVES(OFF(limits), "1024", "768", "128"),

    {.name = "upstream.url",
     .type = CONF_URL,
     .offset = OFF(upstream_url),
     .def = "https://activation.thingpark.com",
     .min = 0,
     .max = 0,
     .validate = conf_validate_origin_url},
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
     .type = CONF_STR_OPT,
     .offset = OFF(upstream_ciphersuites),
     .def = "",
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
    {.name = "upstream.tls",
     .type = CONF_ENUM,
     .offset = OFF(upstream_tls),
     .def = "psk",
     .names = tls_names},
    {.name = "upstream.ca-file",
     .type = CONF_STR,
     .offset = OFF(upstream_ca_file),
     .def = TLS_DEFAULT_CA_FILE},
    {.name = "upstream.pin-sha256",
     .type = CONF_STR_OPT,
     .offset = OFF(upstream_pin_sha256),
     .def = ""},
    {.name = "upstream.client-cert",
     .type = CONF_STR_OPT,
     .offset = OFF(upstream_client_cert),
     .def = ""},
    {.name = "upstream.client-key-file",
     .type = CONF_STR_OPT,
     .offset = OFF(upstream_client_key_file),
     .def = ""},

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
    {.name = "api.query-page-param",
     .type = CONF_STR_OPT,
     .offset = OFF(api_query_page_param),
     .def = "pageIndex"},
    {.name = "api.query-page-size",
     .type = CONF_UINT,
     .offset = OFF(api_query_page_size),
     .def = "100",
     .min = 1,
     .max = 100000},
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
    {.name = "api.profile",
     .type = CONF_ENUM,
     .offset = OFF(api_profile),
     .def = "tpa-psk",
     .names = profile_names},
    {.name = "api.owner-token-form",
     .type = CONF_ENUM,
     .offset = OFF(api_owner_token_form),
     .def = "hex",
     .names = tokform_names},
    {.name = "api.appkeygen-path",
     .type = CONF_STR,
     .offset = OFF(api_appkeygen_path),
     .def = "/appKeyGens"},
    {.name = "api.field-public-key",
     .type = CONF_STR,
     .offset = OFF(api_field_public_key),
     .def = "publicKey"},
    {.name = "api.field-vendor-key",
     .type = CONF_STR,
     .offset = OFF(api_field_vendor_key),
     .def = "vendorKey"},
    {.name = "api.field-hsm-app-key",
     .type = CONF_STR,
     .offset = OFF(api_field_hsm_app_key),
     .def = "hsmEncryptedAppKey"},

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
    {.name = "store.backend",
     .type = CONF_ENUM_STR,
     .offset = OFF(store_backend),
     .def = "sqlite",
     .names = store_backends},
    {.name = "store.url",
     .type = CONF_STR_OPT,
     .offset = OFF(store_url),
     .def = "",
     .shown = store_url_public},
    {.name = "store.password-file",
     .type = CONF_STR_OPT,
     .offset = OFF(store_password_file),
     .def = ""},
    {.name = "store.connections",
     .type = CONF_UINT,
     .offset = OFF(store_connections),
     .def = "2",
     .min = 1,
     .max = 64},
    {.name = "store.lease",
     .type = CONF_DURATION,
     .offset = OFF(store_lease_ms),
     .def = "0s",
     .min = 0,
     .max = 3600000},
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
    {.name = "device.app-key-source",
     .type = CONF_ENUM,
     .offset = OFF(device_app_key_source),
     .def = "local",
     .names = keysrc_names},
    {.name = "device.app-key-pool",
     .type = CONF_UINT,
     .offset = OFF(device_app_key_pool),
     .def = "100",
     .min = 1,
     .max = 100000},
    {.name = "device.rsa-key-file",
     .type = CONF_STR_OPT,
     .offset = OFF(device_rsa_key_file),
     .def = ""},

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
     .max = PROTO_MAX_IMPORT_CONCURRENCY},
    {.name = "import.manifest-signer",
     .type = CONF_STR_OPT,
     .offset = OFF(import_manifest_signer),
     .def = ""},
    {.name = "import.tkm-prefix",
     .type = CONF_HEX,
     .offset = OFF(import_tkm_prefix),
     .def = "3121",
     .min = 4},
    {.name = "import.manifest-dev-eui",
     .type = CONF_STR_OPT,
     .offset = OFF(import_manifest_dev_eui),
     .def = ""},

    {.name = "metrics.listen",
     .type = CONF_STR_OPT,
     .offset = OFF(metrics_listen),
     .def = "",
     .min = 0,
     .max = 0,
     .validate = conf_validate_listen},
    {.name = "label.width",
     .type = CONF_TENTHS,
     .offset = OFF(label.width),
     .def = "57",
     .min = 50,
     .max = 5000},
    {.name = "label.height",
     .type = CONF_TENTHS,
     .offset = OFF(label.height),
     .def = "32",
     .min = 50,
     .max = 5000},
    {.name = "label.dpi",
     .type = CONF_UINT,
     .offset = OFF(label.dpi),
     .def = "203",
     .min = LABEL_DPI_MIN,
     .max = LABEL_DPI_MAX},
    {.name = "label.qr-size",
     .type = CONF_TENTHS,
     .offset = OFF(label.qr_size),
     .def = "0",
     .min = 0,
     .max = 5000},
    {.name = "label.qr-x",
     .type = CONF_TENTHS,
     .offset = OFF(label.qr_x),
     .def = "0",
     .min = 0,
     .max = 5000},
    {.name = "label.qr-y",
     .type = CONF_TENTHS,
     .offset = OFF(label.qr_y),
     .def = "0",
     .min = 0,
     .max = 5000},
    {.name = "label.caption-1",
     .type = CONF_STR_OPT,
     .offset = OFF(label.captions[0]),
     .def = "{devEUI}",
     .validate = caption_validate},
    {.name = "label.caption-2",
     .type = CONF_STR_OPT,
     .offset = OFF(label.captions[1]),
     .def = "{serial}",
     .validate = caption_validate},
    {.name = "label.caption-3",
     .type = CONF_STR_OPT,
     .offset = OFF(label.captions[2]),
     .def = "",
     .validate = caption_validate},
    {.name = "label.caption-4",
     .type = CONF_STR_OPT,
     .offset = OFF(label.captions[3]),
     .def = "",
     .validate = caption_validate},
    {.name = "label.font-size",
     .type = CONF_UINT,
     .offset = OFF(label.font_size),
     .def = "6",
     .min = 4,
     .max = 72},
    {.name = "label.captions",
     .type = CONF_ENUM,
     .offset = OFF(label.caption_position),
     .def = "right",
     .names = caption_positions},
    {.name = "label.images",
     .type = CONF_ENUM,
     .offset = OFF(label.images),
     .def = "whole",
     .names = label_images},

    {.name = "print.default", .type = CONF_STR_OPT, .offset = OFF(print_default), .def = ""},
};

static int printers_check(const struct config *c, char *why, size_t whylen);

/* Cross-directive rules, checked once the whole file is read and the profile applied. */
/* True if the host of "host[:port][/...]" is a loopback address or localhost. */
static bool url_host_loopback(const char *h)
{
	size_t n = h[0] == '[' ? strcspn(h, "]") + 1 : strcspn(h, ":/");
	if (n == 9 && strncasecmp(h, "localhost", 9) == 0)
		return true;
	if (n == 5 && strncmp(h, "[::1]", 5) == 0)
		return true;
	return n >= 7 && strncmp(h, "127.", 4) == 0 && strspn(h, "0123456789.") == n;
}

static int config_check(const void *cfg, char *why, size_t whylen)
{
	const struct config *c = cfg;
	if (c->upstream_backoff_min_ms > c->upstream_backoff_max_ms) {
		snprintf(why, whylen, "upstream.backoff-min is larger than upstream.backoff-max");
		return -EINVAL;
	}
	bool oauth =
	    c->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2 || c->upstream_auth == UPSTREAM_AUTH_OAUTH2;
	if (oauth && (!c->oauth2_token_url || !c->oauth2_client_id)) {
		snprintf(why, whylen, "upstream.auth = %s needs oauth2.token-url and oauth2.client-id",
			 auth_names[c->upstream_auth]);
		return -EINVAL;
	}
	if (strncmp(c->upstream_url, "http://", 7) == 0 &&
	    !url_host_loopback(c->upstream_url + 7)) {
		snprintf(why, whylen,
			 "upstream.url: http:// would send every device record%s in clear: use "
			 "https://, or http:// to a loopback address only (a local test server "
			 "or TLS proxy)",
			 oauth ? " and the OAuth2 secret" : "");
		return -EINVAL;
	}
	bool psk_auth =
	    c->upstream_auth == UPSTREAM_AUTH_PSK || c->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2;
	if (strncmp(c->upstream_url, "https://", 8) == 0 &&
	    psk_auth != (c->upstream_tls == UPSTREAM_TLS_PSK)) {
		snprintf(why, whylen,
			 "upstream.auth = %s does not fit upstream.tls = %s (with psk: psk or "
			 "psk+oauth2; with cert: oauth2 or none)",
			 auth_names[c->upstream_auth], tls_names[c->upstream_tls]);
		return -EINVAL;
	}
	if (c->upstream_tls == UPSTREAM_TLS_PSK && (c->upstream_pin_sha256 || c->upstream_client_cert)) {
		snprintf(why, whylen,
			 "upstream.pin-sha256 and upstream.client-cert need upstream.tls = cert");
		return -EINVAL;
	}
	if (c->upstream_pin_sha256) {
		uint8_t pins[TLS_PIN_MAX][32];
		if (tls_pins_parse(c->upstream_pin_sha256, pins, TLS_PIN_MAX) <= 0) {
			snprintf(why, whylen,
				 "upstream.pin-sha256: want up to %d SHA-256 pins of the server's "
				 "public key (base64, or 64 hex digits), comma separated",
				 TLS_PIN_MAX);
			return -EINVAL;
		}
	}
	if (c->api_profile == API_PROFILE_DX_MAKER) {
		if (!c->api_hsm_group) {
			snprintf(why, whylen,
				 "api.profile = dx-maker needs api.hsm-group (the HSM group "
				 "Actility assigned, sent with every import)");
			return -EINVAL;
		}
		if (oauth && c->oauth2_client_id && !strchr(c->oauth2_client_id, '/')) {
			snprintf(why, whylen,
				 "api.profile = dx-maker: oauth2.client-id must be "
				 "<platform>/<login>, e.g. js-labs-api/maker1");
			return -EINVAL;
		}
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
		snprintf(why, whylen, "store.instance must be at most 64 bytes (UTF-8)");
		return -EINVAL;
	}
	if (strcmp(c->store_backend, "postgresql") == 0 && !c->store_url) {
		snprintf(why, whylen, "store.backend = postgresql needs store.url (a libpq URI)");
		return -EINVAL;
	}
	if (strcmp(c->store_backend, "postgresql") == 0 &&
	    store_url_check(c->store_url, why, whylen) < 0)
		return -EINVAL;
	if (strcmp(c->store_backend, "postgresql") == 0 && c->store_lease_ms &&
	    c->store_lease_ms < 2 * (uint64_t)c->upstream_request_timeout_ms) {
		snprintf(why, whylen,
			 "store.lease must be at least twice upstream.request-timeout (or 0 for "
			 "exactly that): another tpad could take over a device whose import is "
			 "still running");
		return -EINVAL;
	}
	if (strcmp(c->station_socket, c->admin_socket) == 0) {
		snprintf(why, whylen, "station.socket and admin.socket are the same path");
		return -EINVAL;
	}
	return printers_check(c, why, whylen);
}

/* The presets of one profile: every api.*, oauth2.* and TLS directive it decides. */
struct preset {
	const char *name, *value;
};

static const struct preset preset_tpa_psk[] = {
    {"upstream.url", "https://activation.thingpark.com"},
    {"upstream.tls", "psk"},
    {"upstream.auth", "psk"},
    {"upstream.ciphersuites", ""},
    {"oauth2.token-url", ""},
    {"api.base-path", "/maker/latest/api"},
    {"api.import-path", "/factoryDevices"},
    {"api.query-path", "/factoryDevices"},
    {"api.query-param", "deviceEUI"},
    {"api.query-page-param", "pageIndex"},
    {"api.query-page-size", "100"},
    {"api.field-dev-eui", "deviceEUI"},
    {"api.field-join-eui", "joinEUI"},
    {"api.field-tkm-info", "tkmInfo"},
    {"api.field-app-key", "appKey"},
    {"api.field-owner-token", "ownerToken"},
    {"api.field-ref", "ref"},
    {"api.field-hsm-group", "hsmGroupId"},
    {"api.owner-token-form", "hex"},
    {"api.appkeygen-path", "/appKeyGens"},
    {NULL, NULL},
};

static const struct preset preset_dx_maker[] = {
    {"upstream.url", "https://dx-api.thingpark.com"},
    {"upstream.tls", "cert"},
    {"upstream.auth", "oauth2"},
    {"upstream.ca-file", TLS_DEFAULT_CA_FILE},
    {"upstream.ciphersuites", ""},
    {"oauth2.token-url", "/admin/latest/api/oauth/token"},
    {"api.base-path", "/maker/latest/api"},
    {"api.import-path", "/factoryDevices"},
    {"api.query-path", "/factoryDevices"},
    {"api.query-param", "deviceEUI"},
    {"api.query-page-param", "pageIndex"},
    {"api.query-page-size", "100"},
    {"api.field-dev-eui", "deviceEUI"},
    {"api.field-join-eui", "joinEUI"},
    {"api.field-tkm-info", "tkmInfo"},
    {"api.field-app-key", "appKey"},
    {"api.field-owner-token", "ownerToken"},
    {"api.field-ref", "ref"},
    {"api.field-hsm-group", "hsmGroupId"},
    {"api.owner-token-form", "hex"},
    {"api.appkeygen-path", "/appKeyGens"},
    {"api.field-public-key", "publicKey"},
    {"api.field-vendor-key", "vendorKey"},
    {"api.field-hsm-app-key", "hsmEncryptedAppKey"},
    {NULL, NULL},
};

static const struct conf_schema schema = {
    .directives = directives,
    .n_directives = sizeof(directives) / sizeof(directives[0]),
    .sections = sections,
    .n_sections = sizeof(sections) / sizeof(sections[0]),
    .origins_offset = OFF(origins),
    .check = NULL, /* run by config_finish() once the profile's presets are in */
};

const char *config_profile_name(int profile)
{
	return profile >= 0 && profile <= API_PROFILE_DX_MAKER ? profile_names[profile] : "?";
}

/*
 * Fill every directive the profile decides and the file left at its default (a file's
 * value always wins), then check the rules that span directives. name is the file's.
 */
static int config_finish(struct config *c, const char *name, char *err, size_t errlen)
{
	const struct preset *p =
	    c->api_profile == API_PROFILE_DX_MAKER ? preset_dx_maker : preset_tpa_psk;
	char origin[64], why[256];

	snprintf(origin, sizeof(origin), "profile %s", profile_names[c->api_profile]);
	for (; p->name; p++) {
		int r = conf_set(&schema, c, p->name, p->value, origin, true, why, sizeof(why));
		if (r == -ENOMEM)
			return r;
		if (r < 0) {
			/* A preset that does not parse is our own bug. */
			snprintf(err, errlen, "%s: profile %s: %s: %s", name, origin, p->name, why);
			return -EINVAL;
		}
	}
	if (config_check(c, why, sizeof(why)) < 0)
		return conf_check_error(&schema, c, name, why, err, errlen);
	return 0;
}

/* Whether one of the n ids at a is among the m at b (then it is in *ret). */
static bool id_shared(const unsigned *a, size_t n, const unsigned *b, size_t m, unsigned *ret)
{
	for (size_t x = 0; x < n; x++)
		for (size_t y = 0; y < m; y++)
			if (a[x] == b[y]) {
				*ret = a[x];
				return true;
			}
	return false;
}

/*
 * A station (uid) or group listed for two printers: the first printer would take its
 * labels and the second's line never be used, without a word. Say which two.
 */
static int printers_check_stations(const struct config *c, char *why, size_t whylen)
{
	_Static_assert(sizeof(uid_t) == sizeof(unsigned) && sizeof(gid_t) == sizeof(unsigned),
		       "uid_t and gid_t are unsigned int");
	for (size_t i = 0; i < c->n_printers; i++) {
		const struct config_printer *p = &c->printers[i];
		for (size_t k = 0; k < i; k++) {
			const struct config_printer *q = &c->printers[k];
			const char *what = NULL, *list = NULL;
			unsigned id;
			if (id_shared(p->station_uids, p->n_station_uids, q->station_uids,
				      q->n_station_uids, &id)) {
				what = "uid";
				list = "station-uids";
			} else if (id_shared(p->station_gids, p->n_station_gids, q->station_gids,
					     q->n_station_gids, &id)) {
				what = "gid";
				list = "station-groups";
			}
			if (what) {
				snprintf(why, whylen,
					 "printer.%s.%s: %s %u is in printer.%s.%s too; a station "
					 "has one default printer",
					 p->name, list, what, id, q->name, list);
				return -EINVAL;
			}
		}
	}
	return 0;
}

/* The printers' rules: a url each, ZPL only to raw and PDF only to IPP printers, print.default
 * names one, a station is no two printers' own. */
static int printers_check(const struct config *c, char *why, size_t whylen)
{
	char name[128];
	for (size_t i = 0; i < c->n_printers; i++) {
		const struct config_printer *p = &c->printers[i];
		if (!p->url) {
			snprintf(why, whylen, "[printer.%s] has no url", p->name);
			return -EINVAL;
		}
		/* Raw printers are sent ZPL, IPP printers PDF: nothing else. */
		bool raw = strncmp(p->url, "socket://", 9) == 0;
		enum printer_language takes = raw ? PRINTER_LANG_ZPL : PRINTER_LANG_PDF;
		if (p->language != PRINTER_LANG_AUTO && p->language != takes) {
			snprintf(name, sizeof(name), "printer.%s.language", p->name);
			snprintf(why, whylen, "%s = %s needs %s url; %s printers take %s", name,
				 raw ? "pdf" : "zpl", raw ? "an ipp:// or ipps://" : "a socket://",
				 raw ? "socket://" : "ipp:// and ipps://", raw ? "zpl" : "pdf");
			return -EINVAL;
		}
	}
	if (c->print_default && !config_printer_find(c, c->print_default)) {
		snprintf(why, whylen, "print.default: no [printer.%s] section", c->print_default);
		return -EINVAL;
	}
	return printers_check_stations(c, why, whylen);
}

const struct config_printer *config_printer_find(const struct config *c, const char *name)
{
	for (size_t i = 0; name && i < c->n_printers; i++)
		if (strcmp(c->printers[i].name, name) == 0)
			return &c->printers[i];
	return NULL;
}

enum printer_language config_printer_language(const struct config_printer *p)
{
	if (p->language != PRINTER_LANG_AUTO)
		return p->language;
	return p->url && strncmp(p->url, "socket://", 9) == 0 ? PRINTER_LANG_ZPL
							      : PRINTER_LANG_PDF;
}

const char *config_origin(const struct config *c, const char *name)
{
	return conf_origin(&schema, c, name);
}

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	conf_defaults(&schema, c);
}

int config_load_string(struct config *c, const char *name, const char *text, char *err,
		       size_t errlen)
{
	int r = conf_load_string(&schema, c, name, text, err, errlen);
	return r < 0 ? r : config_finish(c, name, err, errlen);
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	int r = conf_load(&schema, c, path, err, errlen);
	return r < 0 ? r : config_finish(c, path, err, errlen);
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
