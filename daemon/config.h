/* config: the tpad.conf directive table, parsed into typed, range-checked values. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "server.h"
#include "tpad-build.h"

/* The configured sysconfdir (meson): where the units and tpad(8) as installed look too. */
#define CONFIG_DEFAULT_PATH TPAD_SYSCONFDIR "/tpad/tpad.conf"
#define CONFIG_MAX_LIST 32	       /* = CONF_MAX_IDS */
#define CONFIG_MAX_PRINTERS 16	       /* [printer.<name>] sections */
#define CONFIG_MAX_CAPTIONS 4	       /* label.caption-1 .. label.caption-4 */
#define CONFIG_PRINTER_NAME_MAX 64 /* bytes of a printer's name, NUL included */

struct conf_origins;

/* Whether API calls carry an OAuth2 bearer token, and what the channel is. */
enum upstream_auth {
	UPSTREAM_AUTH_PSK,	  /* the PSK channel alone */
	UPSTREAM_AUTH_PSK_OAUTH2, /* PSK channel plus an OAuth2 bearer token */
	UPSTREAM_AUTH_OAUTH2,	  /* certificate TLS plus an OAuth2 bearer token */
	UPSTREAM_AUTH_NONE,	  /* certificate TLS (maybe mTLS), no token */
};

/* How the TLS channel is authenticated. */
enum upstream_tls {
	UPSTREAM_TLS_PSK,
	UPSTREAM_TLS_CERT,
};

/* api.profile: a named set of presets for every api.*, oauth2.* and TLS directive. */
enum api_profile {
	API_PROFILE_TPA_PSK,  /* the seed's TLS-PSK endpoint, activation.thingpark.com */
	API_PROFILE_DX_MAKER, /* the public DX Maker API, dx-api.thingpark.com */
};

/* How the ownerToken's text in the cloud's answer is turned into label text. */
enum owner_token_form {
	OWNER_TOKEN_HEX,    /* hexadecimal, printed upper-case */
	OWNER_TOKEN_BASE64, /* base64, printed as upper-case hex of its bytes */
	OWNER_TOKEN_AS_IS,  /* printable text, kept exactly */
};

/* Where generateAppKey takes an AppKey from. */
enum app_key_source {
	APP_KEY_LOCAL,	   /* tpad's own random generator */
	APP_KEY_CLOUD_HSM, /* the cloud's HSM (appKeyGens), through a sealed pool */
};

enum config_tls_min {
	CONFIG_TLS_1_1,
	CONFIG_TLS_1_2,
};

enum qr_ec_level {
	QR_EC_L,
	QR_EC_M,
	QR_EC_Q,
	QR_EC_H,
};

/* What a printer is sent: raw ZPL, or a PDF document; auto: by the url's scheme. */
enum printer_language {
	PRINTER_LANG_AUTO,
	PRINTER_LANG_ZPL,
	PRINTER_LANG_PDF,
};

/* Where captions go: right of the QR code, or under it. */
enum label_captions {
	LABEL_CAPTIONS_RIGHT,
	LABEL_CAPTIONS_BELOW,
};

/* What a PNG or SVG image is when a call's qr.label does not say (label.images). */
enum label_images {
	LABEL_IMAGES_WHOLE, /* the whole label of the layout, captions included */
	LABEL_IMAGES_CODE,  /* the bare QR code, qr.scale and qr.margin */
};

/*
 * One label layout (label.*). Lengths are in tenths of a millimetre; 0 for qr_size means
 * "as large as the label allows". Captions are templates over {devEUI}, {joinEUI} and
 * {serial}; NULL or "" lines are left out.
 */
struct config_label {
	uint32_t width;	 /* 0.1 mm */
	uint32_t height; /* 0.1 mm */
	uint32_t dpi;
	uint32_t qr_size; /* 0.1 mm, quiet zone included; 0 = auto */
	uint32_t qr_x;	  /* 0.1 mm, left edge of the quiet zone */
	uint32_t qr_y;	  /* 0.1 mm, top edge of the quiet zone */
	char *captions[CONFIG_MAX_CAPTIONS];
	uint32_t font_size; /* points */
	enum label_captions caption_position;
	enum label_images images;
};

/*
 * One [printer.<name>] section. url is socket://host[:port] (raw ZPL, port 9100 by
 * default), ipp://host[:port]/path or ipps://... (IPP Everywhere through libcups).
 * dpi, width and height of 0 take the label.* values.
 */
struct config_printer {
	char *name;
	char *url;
	enum printer_language language; /* see config_printer_language() */
	uint32_t dpi;
	uint32_t width;	 /* 0.1 mm */
	uint32_t height; /* 0.1 mm */
	uint32_t timeout_ms;
	uint32_t status_interval_ms; /* 0: only asked before each job */
	uint32_t queue;		     /* jobs waiting at most */
	uid_t station_uids[CONFIG_MAX_LIST];
	size_t n_station_uids;
	gid_t station_gids[CONFIG_MAX_LIST];
	size_t n_station_gids;
};

/*
 * Every directive of tpad.conf. Durations are in milliseconds, sizes in bytes.
 * Strings are owned by the struct and freed by config_free(). Secrets are never here:
 * only the paths of the files that hold them.
 */
struct config {
	/* [station] */
	char *station_socket;
	mode_t station_mode;
	char *station_group; /* NULL: the daemon's group */
	gid_t station_allowed_gids[CONFIG_MAX_LIST];
	size_t n_station_allowed_gids;
	uid_t station_allowed_uids[CONFIG_MAX_LIST];
	size_t n_station_allowed_uids;

	/* [admin] */
	char *admin_socket;
	mode_t admin_mode;
	char *admin_group; /* NULL: the daemon's group */

	struct server_limits limits; /* [limits] */

	/* [upstream] */
	char *upstream_url; /* https://host[:port] or http:// (tests) */
	uint32_t upstream_sessions;
	uint32_t upstream_queue;
	char *upstream_psk_identity;
	char *upstream_psk_file;     /* NULL: credential tpa-psk only */
	int upstream_tls_min;	     /* enum config_tls_min */
	char *upstream_ciphersuites; /* comma separated mbedTLS names */
	uint32_t upstream_connect_timeout_ms;
	uint32_t upstream_handshake_timeout_ms;
	uint32_t upstream_request_timeout_ms;
	uint32_t upstream_settle_after_ms; /* 0: twice upstream_request_timeout_ms */
	uint32_t upstream_backoff_min_ms;
	uint32_t upstream_backoff_max_ms;
	uint32_t upstream_breaker_threshold; /* consecutive failures that open it */
	uint32_t upstream_breaker_cooldown_ms;
	size_t upstream_max_response;
	int upstream_auth; /* enum upstream_auth */
	int upstream_tls;  /* enum upstream_tls */
	char *upstream_ca_file;		/* PEM bundle of trusted CAs (certificate TLS) */
	char *upstream_pin_sha256;	/* NULL or SPKI SHA-256 pins, comma separated */
	char *upstream_client_cert;	/* NULL or PEM client certificate (mTLS) */
	char *upstream_client_key_file; /* NULL: credential tpa-client-key only */

	/* [oauth2] */
	char *oauth2_token_url;
	char *oauth2_client_id;
	char *oauth2_secret_file; /* NULL: credential oauth-secret only */

	/* [api] */
	char *api_base_path;
	char *api_import_path;
	char *api_query_path;
	char *api_query_param;
	char *api_query_page_param; /* NULL: no paging */
	uint32_t api_query_page_size;
	char *api_field_dev_eui;
	char *api_field_join_eui;
	char *api_field_tkm_info;
	char *api_field_app_key;
	char *api_field_owner_token;
	char *api_field_ref;
	char *api_field_hsm_group;
	char *api_hsm_group; /* NULL: not sent */
	int api_profile;     /* enum api_profile */
	int api_owner_token_form; /* enum owner_token_form */
	char *api_appkeygen_path;
	char *api_field_public_key;
	char *api_field_vendor_key;
	char *api_field_hsm_app_key;

	/* [store] */
	char *store_path;
	char *store_key_file;		/* NULL: credential store-key only */
	char *store_instance;		/* NULL: the host name */
	uint32_t store_commit_delay_ms; /* group commit window */
	char *store_backend;		/* "sqlite" | "postgresql" */
	char *store_url;		/* libpq connection URI (postgresql) */
	char *store_password_file;	/* NULL: credential store-password, else libpq's own */
	uint32_t store_connections;	/* postgresql: connections (one writer, the rest read) */
	uint32_t store_lease_ms;	/* postgresql: a device's claim; 0: 2 x request timeout */

	/* [device] */
	char *device_join_eui; /* 16 upper-case hex digits */
	int device_app_key_source; /* enum app_key_source */
	uint32_t device_app_key_pool; /* low-water mark of the cloud-HSM key pool */
	char *device_rsa_key_file;    /* NULL: credential tpa-rsa-key only */

	/* [qr] */
	char *qr_profile_id; /* 8 upper-case hex digits */
	char *qr_template;   /* NULL: TR005 */
	char *qr_format;     /* png|svg|zpl|text|none */
	uint32_t qr_scale;
	uint32_t qr_margin;
	int qr_ec_level; /* enum qr_ec_level */

	/* [import] */
	uint32_t import_concurrency;
	char *import_manifest_signer;	/* NULL or PEM certificate of the manifest signer */
	char *import_tkm_prefix;	/* 4 hex digits before the serial in TKM_INFO */
	char *import_manifest_dev_eui; /* NULL or the certificate subject attribute */

	/* [metrics] */
	char *metrics_listen; /* HOST:PORT of the HTTP /metrics endpoint; NULL: off */
	/* [label] */
	struct config_label label;

	/* [print] */
	char *print_default; /* NULL: no printer unless a station's own or a call names one */

	/* [printer.<name>] */
	struct config_printer printers[CONFIG_MAX_PRINTERS];
	size_t n_printers;

	struct conf_origins *origins; /* where each value came from (core/conf) */
};

/* The printer section called name, or NULL. */
const struct config_printer *config_printer_find(const struct config *c, const char *name);

/* A printer's language: as configured, or ZPL for socket:// and PDF for ipp(s)://. */
enum printer_language config_printer_language(const struct config_printer *p);

/* Where a directive's value came from ("default", "file:line"); name as in the file. */
const char *config_origin(const struct config *c, const char *name);

/* Fill *c with every directive's default. */
void config_defaults(struct config *c);

/*
 * Parse the file at path over the values already in *c. On error returns a negative
 * errno and writes one line naming file:line to err (size errlen); *c then holds a mix
 * of values and must still be passed to config_free().
 */
int config_load(struct config *c, const char *path, char *err, size_t errlen);

/* Same as config_load() but from a string; name is used in error messages. */
int config_load_string(struct config *c, const char *name, const char *text, char *err,
		       size_t errlen);

/* The name of an api.profile value ("dx-maker", "tpa-psk"). */
const char *config_profile_name(int profile);

/* Write every directive with its effective value, in tpad.conf syntax; with origins each
 * line says where its value came from (default or file:line). */
void config_print(const struct config *c, FILE *f, bool origins);

/* Free the strings held by *c. Accepts a zeroed struct. */
void config_free(struct config *c);
