/* config: the tpad.conf directive table, parsed into typed, range-checked values. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"

enum dtype {
	T_STR,	    /* string, required non-empty */
	T_STR_OPT,  /* string, empty means unset (NULL) */
	T_MODE,	    /* octal file mode */
	T_UINT,	    /* unsigned integer in [min, max] */
	T_SIZE,	    /* bytes with optional K/M suffix, in [min, max] */
	T_DURATION, /* milliseconds; suffix ms, s, m, h (bare number = seconds), in [min, max] */
	T_HEX,	    /* exactly min hex digits, stored upper-case */
	T_URL,	    /* http:// or https:// URL */
	T_GIDS,	    /* list of group names or numbers */
	T_UIDS,	    /* list of user names or numbers */
	T_AUTH,	    /* psk | psk+oauth2 */
	T_TLSMIN,   /* 1.1 | 1.2 */
	T_ECLEVEL,  /* L | M | Q | H */
	T_QRFORMAT, /* png | svg | zpl | text | none */
};

struct directive {
	const char *name; /* section.key */
	enum dtype type;
	size_t offset;
	const char *def; /* default, in config syntax; "" = unset */
	uint64_t min, max;
};

#define OFF(f) offsetof(struct config, f)
#define DEFAULT_SUITES                                                                             \
	"TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256,TLS-ECDHE-PSK-WITH-AES-128-CBC-SHA256,"       \
	"TLS-PSK-WITH-AES-128-GCM-SHA256,TLS-PSK-WITH-AES-256-GCM-SHA384"

static const struct directive directives[] = {
    {"station.socket", T_STR, OFF(station_socket), "/run/tpad/station.sock", 0, 0},
    {"station.mode", T_MODE, OFF(station_mode), "0660", 0, 0777},
    {"station.group", T_STR_OPT, OFF(station_group), "", 0, 0},
    {"station.allowed-groups", T_GIDS, OFF(station_allowed_gids), "", 0, 0},
    {"station.allowed-uids", T_UIDS, OFF(station_allowed_uids), "", 0, 0},

    {"admin.socket", T_STR, OFF(admin_socket), "/run/tpad/admin.sock", 0, 0},
    {"admin.mode", T_MODE, OFF(admin_mode), "0600", 0, 0777},
    {"admin.group", T_STR_OPT, OFF(admin_group), "", 0, 0},

    {"limits.max-message", T_SIZE, OFF(max_message), "64K", 1024, 16u << 20},
    {"limits.idle-timeout", T_DURATION, OFF(idle_timeout_ms), "300s", 100, 86400000},
    {"limits.max-clients", T_UINT, OFF(max_clients), "1024", 1, 65536},
    {"limits.max-clients-per-uid", T_UINT, OFF(max_clients_per_uid), "1024", 1, 65536},
    {"limits.max-pending-calls", T_UINT, OFF(max_pending_calls), "64", 1, 4096},

    {"upstream.url", T_URL, OFF(upstream_url), "https://activation.thingpark.com", 0, 0},
    {"upstream.sessions", T_UINT, OFF(upstream_sessions), "4", 1, 256},
    {"upstream.queue", T_UINT, OFF(upstream_queue), "4096", 1, 1000000},
    {"upstream.psk-identity", T_STR_OPT, OFF(upstream_psk_identity), "", 0, 0},
    {"upstream.psk-file", T_STR_OPT, OFF(upstream_psk_file), "", 0, 0},
    {"upstream.tls-min", T_TLSMIN, OFF(upstream_tls_min), "1.2", 0, 0},
    {"upstream.ciphersuites", T_STR, OFF(upstream_ciphersuites), DEFAULT_SUITES, 0, 0},
    {"upstream.connect-timeout", T_DURATION, OFF(upstream_connect_timeout_ms), "5s", 10, 600000},
    {"upstream.handshake-timeout", T_DURATION, OFF(upstream_handshake_timeout_ms), "10s", 10,
     600000},
    {"upstream.request-timeout", T_DURATION, OFF(upstream_request_timeout_ms), "30s", 10, 600000},
    {"upstream.backoff-min", T_DURATION, OFF(upstream_backoff_min_ms), "100ms", 1, 3600000},
    {"upstream.backoff-max", T_DURATION, OFF(upstream_backoff_max_ms), "30s", 1, 3600000},
    {"upstream.breaker-threshold", T_UINT, OFF(upstream_breaker_threshold), "10", 1, 100000},
    {"upstream.breaker-cooldown", T_DURATION, OFF(upstream_breaker_cooldown_ms), "5s", 1, 3600000},
    {"upstream.max-response", T_SIZE, OFF(upstream_max_response), "1M", 1024, 64u << 20},
    {"upstream.auth", T_AUTH, OFF(upstream_auth), "psk", 0, 0},

    {"oauth2.token-url", T_STR_OPT, OFF(oauth2_token_url), "", 0, 0},
    {"oauth2.client-id", T_STR_OPT, OFF(oauth2_client_id), "", 0, 0},
    {"oauth2.secret-file", T_STR_OPT, OFF(oauth2_secret_file), "", 0, 0},

    {"api.base-path", T_STR, OFF(api_base_path), "/maker/latest/api", 0, 0},
    {"api.import-path", T_STR, OFF(api_import_path), "/factoryDevices", 0, 0},
    {"api.query-path", T_STR, OFF(api_query_path), "/factoryDevices", 0, 0},
    {"api.query-param", T_STR, OFF(api_query_param), "deviceEUI", 0, 0},
    {"api.field-dev-eui", T_STR, OFF(api_field_dev_eui), "deviceEUI", 0, 0},
    {"api.field-join-eui", T_STR, OFF(api_field_join_eui), "joinEUI", 0, 0},
    {"api.field-tkm-info", T_STR, OFF(api_field_tkm_info), "tkmInfo", 0, 0},
    {"api.field-app-key", T_STR, OFF(api_field_app_key), "appKey", 0, 0},
    {"api.field-owner-token", T_STR, OFF(api_field_owner_token), "ownerToken", 0, 0},
    {"api.field-ref", T_STR, OFF(api_field_ref), "ref", 0, 0},
    {"api.field-hsm-group", T_STR, OFF(api_field_hsm_group), "hsmGroupId", 0, 0},
    {"api.hsm-group", T_STR_OPT, OFF(api_hsm_group), "", 0, 0},

    {"store.path", T_STR, OFF(store_path), "/var/lib/tpad/tpad.db", 0, 0},
    {"store.key-file", T_STR_OPT, OFF(store_key_file), "", 0, 0},
    {"store.commit-delay", T_DURATION, OFF(store_commit_delay_ms), "0ms", 0, 1000},

    {"device.join-eui", T_HEX, OFF(device_join_eui), "0000000000000000", HEX_EUI, 0},

    {"qr.profile-id", T_HEX, OFF(qr_profile_id), "00000000", HEX_PROFILE, 0},
    {"qr.template", T_STR_OPT, OFF(qr_template), "", 0, 0},
    {"qr.format", T_QRFORMAT, OFF(qr_format), "png", 0, 0},
    {"qr.scale", T_UINT, OFF(qr_scale), "4", 1, 20},
    {"qr.margin", T_UINT, OFF(qr_margin), "4", 0, 16},
    {"qr.ec-level", T_ECLEVEL, OFF(qr_ec_level), "M", 0, 0},

    {"import.concurrency", T_UINT, OFF(import_concurrency), "16", 1, 1024},

    {"metrics.listen", T_STR_OPT, OFF(metrics_listen), "", 0, 0},
};

#define N_DIRECTIVES (sizeof(directives) / sizeof(directives[0]))

static const char *const ec_names[] = {"L", "M", "Q", "H"};
static const char *const qr_formats[] = {"png", "svg", "zpl", "text", "none"};

/* Parse an unsigned decimal number with an optional unit suffix into *ret_num, *ret_unit. */
static int parse_number(const char *s, uint64_t *ret_num, const char **ret_unit)
{
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno)
		return -ERANGE;
	*ret_num = v;
	*ret_unit = end;
	return 0;
}

/* Multiply with overflow check. */
static int mul_checked(uint64_t a, uint64_t b, uint64_t *ret)
{
	if (a && b > UINT64_MAX / a)
		return -ERANGE;
	*ret = a * b;
	return 0;
}

/* Resolve a comma or space separated list of ids (numbers or names) into out. */
static int parse_id_list(const char *s, bool groups, uint32_t *out, size_t *ret_n, char *why,
			 size_t whylen)
{
	size_t n = 0;
	char *copy = strdup(s);
	if (!copy)
		return -ENOMEM;
	char *save = NULL;
	int r = 0;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		if (n == CONFIG_MAX_LIST) {
			snprintf(why, whylen, "more than %d entries", CONFIG_MAX_LIST);
			r = -E2BIG;
			break;
		}
		uint64_t v;
		const char *unit;
		if (parse_number(tok, &v, &unit) == 0 && *unit == '\0' && v < UINT32_MAX) {
			out[n++] = (uint32_t)v;
			continue;
		}
		if (groups) {
			struct group *g = getgrnam(tok);
			if (g) {
				out[n++] = g->gr_gid;
				continue;
			}
		} else {
			struct passwd *p = getpwnam(tok);
			if (p) {
				out[n++] = p->pw_uid;
				continue;
			}
		}
		snprintf(why, whylen, "unknown %s '%s'", groups ? "group" : "user", tok);
		r = -EINVAL;
		break;
	}
	free(copy);
	if (r == 0)
		*ret_n = n;
	return r;
}

/* Replace the string at *slot; an empty value stores NULL. */
static int set_string(char **slot, const char *v, bool allow_empty)
{
	if (!*v && !allow_empty)
		return -EINVAL;
	char *copy = *v ? strdup(v) : NULL;
	if (*v && !copy)
		return -ENOMEM;
	free(*slot);
	*slot = copy;
	return 0;
}

/* Pick value v from a fixed list of names; its index goes to *ret. */
static int parse_enum(const char *v, const char *const *names, size_t n, bool nocase, int *ret)
{
	for (size_t i = 0; i < n; i++) {
		if (nocase ? strcasecmp(v, names[i]) == 0 : strcmp(v, names[i]) == 0) {
			*ret = (int)i;
			return 0;
		}
	}
	return -EINVAL;
}

/* Parse value v for directive d into c; on failure write the reason to why. */
static int directive_set(struct config *c, const struct directive *d, const char *v, char *why,
			 size_t whylen)
{
	char *base = (char *)c;
	void *slot = base + d->offset;
	uint64_t num = 0;
	const char *unit = "";
	int r, idx;

	switch (d->type) {
	case T_STR:
	case T_STR_OPT:
		r = set_string(slot, v, d->type == T_STR_OPT);
		if (r == -EINVAL)
			snprintf(why, whylen, "must not be empty");
		return r;
	case T_URL:
		if (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) {
			snprintf(why, whylen, "must start with https:// (or http:// for tests)");
			return -EINVAL;
		}
		if (!v[strcspn(v, "/") + 2]) {
			snprintf(why, whylen, "has no host");
			return -EINVAL;
		}
		return set_string(slot, v, false);
	case T_MODE: {
		char *end;
		errno = 0;
		unsigned long m = strtoul(v, &end, 8);
		if (!*v || *end || errno || m > d->max) {
			snprintf(why, whylen, "must be an octal file mode such as 0660");
			return -EINVAL;
		}
		*(mode_t *)slot = (mode_t)m;
		return 0;
	}
	case T_UINT:
		if (parse_number(v, &num, &unit) < 0 || *unit) {
			snprintf(why, whylen, "must be a whole number");
			return -EINVAL;
		}
		break;
	case T_SIZE:
		if (parse_number(v, &num, &unit) < 0) {
			snprintf(why, whylen, "must be a size such as 65536, 64K or 1M");
			return -EINVAL;
		}
		if (strcmp(unit, "K") == 0 || strcmp(unit, "k") == 0)
			r = mul_checked(num, 1024, &num);
		else if (strcmp(unit, "M") == 0)
			r = mul_checked(num, 1024 * 1024, &num);
		else
			r = *unit ? -EINVAL : 0;
		if (r < 0) {
			snprintf(why, whylen, "must be a size such as 65536, 64K or 1M");
			return -EINVAL;
		}
		break;
	case T_DURATION:
		if (parse_number(v, &num, &unit) < 0) {
			snprintf(why, whylen, "must be a duration such as 500ms, 5s, 2m or 1h");
			return -EINVAL;
		}
		if (strcmp(unit, "ms") == 0)
			r = 0;
		else if (strcmp(unit, "s") == 0 || !*unit)
			r = mul_checked(num, 1000, &num);
		else if (strcmp(unit, "m") == 0)
			r = mul_checked(num, 60000, &num);
		else if (strcmp(unit, "h") == 0)
			r = mul_checked(num, 3600000, &num);
		else
			r = -EINVAL;
		if (r < 0) {
			snprintf(why, whylen, "must be a duration such as 500ms, 5s, 2m or 1h");
			return -EINVAL;
		}
		break;
	case T_HEX: {
		if (!hex_valid(v, d->min)) {
			snprintf(why, whylen, "must be %u hexadecimal digits", (unsigned)d->min);
			return -EINVAL;
		}
		char up[64];
		hex_upper(up, v, d->min);
		return set_string(slot, up, false);
	}
	case T_GIDS:
		return parse_id_list(v, true, (uint32_t *)slot, &c->n_station_allowed_gids, why,
				     whylen);
	case T_UIDS:
		return parse_id_list(v, false, (uint32_t *)slot, &c->n_station_allowed_uids, why,
				     whylen);
	case T_AUTH:
		if (strcmp(v, "psk") == 0)
			*(enum upstream_auth *)slot = UPSTREAM_AUTH_PSK;
		else if (strcmp(v, "psk+oauth2") == 0)
			*(enum upstream_auth *)slot = UPSTREAM_AUTH_PSK_OAUTH2;
		else {
			snprintf(why, whylen, "must be psk or psk+oauth2");
			return -EINVAL;
		}
		return 0;
	case T_TLSMIN:
		if (strcmp(v, "1.1") == 0)
			*(int *)slot = 1;
		else if (strcmp(v, "1.2") == 0)
			*(int *)slot = 2;
		else {
			snprintf(why, whylen, "must be 1.1 or 1.2");
			return -EINVAL;
		}
		return 0;
	case T_ECLEVEL:
		if (parse_enum(v, ec_names, 4, true, &idx) < 0) {
			snprintf(why, whylen, "must be L, M, Q or H");
			return -EINVAL;
		}
		*(enum qr_ec_level *)slot = (enum qr_ec_level)idx;
		return 0;
	case T_QRFORMAT:
		if (parse_enum(v, qr_formats, 5, false, &idx) < 0) {
			snprintf(why, whylen, "must be png, svg, zpl, text or none");
			return -EINVAL;
		}
		return set_string(slot, v, false);
	}

	if (num < d->min || num > d->max) {
		snprintf(why, whylen, "must be between %llu and %llu", (unsigned long long)d->min,
			 (unsigned long long)d->max);
		return -ERANGE;
	}
	if (d->type == T_SIZE)
		*(size_t *)slot = (size_t)num;
	else
		*(uint32_t *)slot = (uint32_t)num;
	return 0;
}

void config_defaults(struct config *c)
{
	char why[128];
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < N_DIRECTIVES; i++)
		if (directive_set(c, &directives[i], directives[i].def, why, sizeof(why)) < 0)
			abort(); /* a default that does not parse is our own bug */
}

/* Find a directive by its full name. */
static const struct directive *directive_find(const char *name)
{
	for (size_t i = 0; i < N_DIRECTIVES; i++)
		if (strcmp(directives[i].name, name) == 0)
			return &directives[i];
	return NULL;
}

/* Strip leading and trailing blanks in place. */
static char *strip(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	size_t n = strlen(s);
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = '\0';
	return s;
}

/* Write one "name:line: message" error. */
__attribute__((format(printf, 5, 6))) static int
config_error(char *err, size_t errlen, const char *name, unsigned line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s:%u: %s", name, line, msg);
	return -EINVAL;
}

/* Cross-directive rules, checked once the whole file is read. */
static int config_check(const struct config *c, const char *name, char *err, size_t errlen)
{
	if (c->upstream_backoff_min_ms > c->upstream_backoff_max_ms)
		return config_error(err, errlen, name, 0,
				    "upstream.backoff-min is larger than upstream.backoff-max");
	if (c->upstream_auth == UPSTREAM_AUTH_PSK_OAUTH2 &&
	    (!c->oauth2_token_url || !c->oauth2_client_id))
		return config_error(err, errlen, name, 0,
				    "upstream.auth = psk+oauth2 needs oauth2.token-url and "
				    "oauth2.client-id");
	if (strcmp(c->station_socket, c->admin_socket) == 0)
		return config_error(err, errlen, name, 0,
				    "station.socket and admin.socket are the same path");
	return 0;
}

int config_load_string(struct config *c, const char *name, const char *text, char *err,
		       size_t errlen)
{
	char section[64] = "";
	unsigned lineno = 0;
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		lineno++;
		if (len >= 4096)
			return config_error(err, errlen, name, lineno, "line too long");
		char buf[4096];
		memcpy(buf, p, len);
		buf[len] = '\0';
		p += len + (eol ? 1 : 0);

		if (memchr(buf, '\0', len))
			return config_error(err, errlen, name, lineno, "NUL byte in line");
		char *line = strip(buf);
		if (!*line || *line == '#' || *line == ';')
			continue;
		if (*line == '[') {
			char *end = strchr(line, ']');
			if (!end || *strip(end + 1))
				return config_error(err, errlen, name, lineno,
						    "malformed section header");
			*end = '\0';
			char *sec = strip(line + 1);
			if (!*sec || strlen(sec) >= sizeof(section))
				return config_error(err, errlen, name, lineno,
						    "malformed section header");
			snprintf(section, sizeof(section), "%s", sec);
			continue;
		}
		char *eq = strchr(line, '=');
		if (!eq)
			return config_error(err, errlen, name, lineno,
					    "expected 'key = value' or '[section]'");
		*eq = '\0';
		char *key = strip(line), *value = strip(eq + 1);
		if (!*section)
			return config_error(err, errlen, name, lineno,
					    "key '%s' outside of a [section]", key);
		char full[160];
		if (snprintf(full, sizeof(full), "%s.%s", section, key) >= (int)sizeof(full))
			return config_error(err, errlen, name, lineno, "key too long");
		const struct directive *d = directive_find(full);
		if (!d)
			return config_error(err, errlen, name, lineno, "unknown directive '%s'",
					    full);
		char why[160];
		int r = directive_set(c, d, value, why, sizeof(why));
		if (r == -ENOMEM)
			return r;
		if (r < 0)
			return config_error(err, errlen, name, lineno, "%s: '%s' %s", full, value,
					    why);
	}
	return config_check(c, name, err, errlen);
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		int r = -errno;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	size_t cap = 8192, len = 0;
	char *text = malloc(cap);
	int r = 0;
	while (text) {
		size_t n = fread(text + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0)
			break;
		if (len + 1 == cap) {
			if (cap >= (1u << 20)) {
				snprintf(err, errlen, "%s: file too large", path);
				r = -EFBIG;
				break;
			}
			char *nt = realloc(text, cap * 2);
			if (!nt) {
				free(text);
				text = NULL;
				break;
			}
			text = nt;
			cap *= 2;
		}
	}
	if (!r && ferror(f)) {
		r = -EIO;
		snprintf(err, errlen, "%s: read error", path);
	}
	fclose(f);
	if (!text) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -ENOMEM;
	}
	if (r == 0) {
		text[len] = '\0';
		r = config_load_string(c, path, text, err, errlen);
	}
	free(text);
	return r;
}

/* Print a duration in the largest exact unit. */
static void print_duration(FILE *f, uint32_t ms)
{
	if (ms && ms % 3600000 == 0)
		fprintf(f, "%uh", ms / 3600000);
	else if (ms && ms % 60000 == 0)
		fprintf(f, "%um", ms / 60000);
	else if (ms && ms % 1000 == 0)
		fprintf(f, "%us", ms / 1000);
	else
		fprintf(f, "%ums", ms);
}

/* Print a list of ids separated by commas. */
static void print_ids(FILE *f, const uint32_t *ids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fprintf(f, "%s%u", i ? "," : "", ids[i]);
}

void config_print(const struct config *c, FILE *f)
{
	const char *base = (const char *)c;
	char section[64] = "";
	for (size_t i = 0; i < N_DIRECTIVES; i++) {
		const struct directive *d = &directives[i];
		const char *dot = strchr(d->name, '.');
		size_t slen = (size_t)(dot - d->name);
		if (strncmp(section, d->name, slen) != 0 || section[slen] != '\0') {
			snprintf(section, sizeof(section), "%.*s", (int)slen, d->name);
			fprintf(f, "%s[%s]\n", i ? "\n" : "", section);
		}
		fprintf(f, "%s = ", dot + 1);
		const void *slot = base + d->offset;
		switch (d->type) {
		case T_STR:
		case T_STR_OPT:
		case T_URL:
		case T_HEX:
		case T_QRFORMAT: {
			const char *s = *(char *const *)slot;
			fputs(s ? s : "", f);
			break;
		}
		case T_MODE:
			fprintf(f, "%04o", (unsigned)*(const mode_t *)slot);
			break;
		case T_UINT:
			fprintf(f, "%u", *(const uint32_t *)slot);
			break;
		case T_SIZE:
			fprintf(f, "%zu", *(const size_t *)slot);
			break;
		case T_DURATION:
			print_duration(f, *(const uint32_t *)slot);
			break;
		case T_GIDS:
			print_ids(f, (const uint32_t *)slot, c->n_station_allowed_gids);
			break;
		case T_UIDS:
			print_ids(f, (const uint32_t *)slot, c->n_station_allowed_uids);
			break;
		case T_AUTH:
			fputs(*(const enum upstream_auth *)slot == UPSTREAM_AUTH_PSK ? "psk"
										     : "psk+oauth2",
			      f);
			break;
		case T_TLSMIN:
			fputs(*(const int *)slot == 1 ? "1.1" : "1.2", f);
			break;
		case T_ECLEVEL:
			fputs(ec_names[*(const enum qr_ec_level *)slot], f);
			break;
		}
		fputc('\n', f);
	}
}

void config_free(struct config *c)
{
	if (!c)
		return;
	char *base = (char *)c;
	for (size_t i = 0; i < N_DIRECTIVES; i++) {
		enum dtype t = directives[i].type;
		if (t == T_STR || t == T_STR_OPT || t == T_URL || t == T_HEX || t == T_QRFORMAT) {
			char **slot = (char **)(base + directives[i].offset);
			free(*slot);
			*slot = NULL;
		}
	}
}
