/* message: varlink calls and replies as JSON, and the method table that validates them. */
#include "message.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hex.h"
#include "utf8.h"

#define IFACE_SERVICE "org.varlink.service"
#define IFACE_STATION "io.tpad.Station"
#define IFACE_ADMIN "io.tpad.Admin"
#define IFACE_AS "io.tpad.AS"
#define IFACE_AS_ADMIN "io.tpad.ASAdmin"

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* The error names each interface uses for bad parameters and for a missing more. */
static const struct {
	const char *interface;
	const char *invalid_parameter;
	const char *expected_more;
} iface_errors[] = {
    {IFACE_SERVICE, PROTO_ERR_INVALID_PARAMETER, PROTO_ERR_EXPECTED_MORE},
    {IFACE_STATION, IFACE_STATION ".InvalidParameter", PROTO_ERR_EXPECTED_MORE},
    {IFACE_ADMIN, IFACE_ADMIN ".InvalidParameter", PROTO_ERR_EXPECTED_MORE},
    {IFACE_AS, IFACE_AS ".InvalidParameter", IFACE_AS ".ExpectedMore"},
    {IFACE_AS_ADMIN, IFACE_AS_ADMIN ".InvalidParameter", PROTO_ERR_EXPECTED_MORE},
};

static const struct param_spec qr_options_params[] = {
    {"format", PARAM_STRING, false, 0, 0}, /* checked by value in check_qr_options() */
    {"scale", PARAM_INT, false, 1, 20},
    {"margin", PARAM_INT, false, 0, 16},
    {"ecLevel", PARAM_STRING, false, 0, 0},
    {"label", PARAM_BOOL, false, 0, 0},
};

static const struct param_spec print_options_params[] = {
    {"printer", PARAM_STRING, false, 1, 63},
    {"copies", PARAM_INT, false, 1, PROTO_MAX_COPIES},
};

static const struct param_spec import_row_params[] = {
    {"line", PARAM_INT, true, 1, 0x7fffffff},	  {"devEUI", PARAM_EUI, true, 0, 0},
    {"joinEUI", PARAM_EUI, false, 0, 0},	  {"tkmInfo", PARAM_TKM_INFO, false, 0, 0},
    {"appKey", PARAM_APP_KEY, false, 0, 0},	  {"serial", PARAM_SERIAL, false, 0, 0},
    {"profileId", PARAM_PROFILE_ID, false, 0, 0},
};

static const struct param_spec get_interface_description_params[] = {
    {"interface", PARAM_STRING, true, 1, 255},
};

static const struct param_spec activate_params[] = {
    {"devEUI", PARAM_EUI, true, 0, 0},
    {"joinEUI", PARAM_EUI, false, 0, 0},
    {"profileId", PARAM_PROFILE_ID, false, 0, 0},
    {"serial", PARAM_SERIAL, false, 0, 0},
    {"tkmInfo", PARAM_TKM_INFO, false, 0, 0},
    {"appKey", PARAM_APP_KEY, false, 0, 0},
    {"generateAppKey", PARAM_BOOL, false, 0, 0},
    {"qr", PARAM_QR_OPTIONS, false, 0, 0},
    {"print", PARAM_PRINT_OPTIONS, false, 0, 0},
};

static const struct param_spec lookup_params[] = {
    {"devEUI", PARAM_EUI, true, 0, 0},
    {"qr", PARAM_QR_OPTIONS, false, 0, 0},
    {"print", PARAM_PRINT_OPTIONS, false, 0, 0},
};

static const struct param_spec print_params[] = {
    {"devEUI", PARAM_EUI, false, 0, 0},	     {"state", PARAM_STATE, false, 0, 0},
    {"printer", PARAM_STRING, false, 1, 63}, {"copies", PARAM_INT, false, 1, PROTO_MAX_COPIES},
    {"after", PARAM_EUI, false, 0, 0},	     {"limit", PARAM_INT, false, 1, PROTO_MAX_PRINT_LABELS},
};

static const struct param_spec import_params[] = {
    {"rows", PARAM_IMPORT_ROWS, true, 0, 0},
    {"generateAppKeys", PARAM_BOOL, false, 0, 0},
    {"concurrency", PARAM_INT, false, 1, PROTO_MAX_IMPORT_CONCURRENCY},
    {"final", PARAM_BOOL, false, 0, 0},
};

static const struct param_spec export_params[] = {
    {"format", PARAM_EXPORT_FORMAT, true, 0, 0},
    {"state", PARAM_STATE, false, 0, 0},
    {"qr", PARAM_QR_OPTIONS, false, 0, 0},
};

static const struct param_spec list_devices_params[] = {
    {"state", PARAM_STATE, false, 0, 0},
    {"after", PARAM_STRING, false, 1, 64},
    {"limit", PARAM_INT, false, 1, 1000},
};

static const struct param_spec get_device_params[] = {
    {"devEUI", PARAM_EUI, true, 0, 0},
};

static const struct param_spec backup_params[] = {
    {"path", PARAM_STRING, true, 1, 4095},
};

static const struct param_spec metrics_params[] = {
    {"format", PARAM_STRING, false, 1, 16}, /* checked by value in the handler */
};

static const struct param_spec retire_params[] = {
    {"devEUI", PARAM_EUI, true, 0, 0},
    {"reason", PARAM_TEXT, true, 1, 200},
};

static const struct param_spec uplinks_params[] = {
    {"after", PARAM_INT, false, 0, 9007199254740991LL},
    {"follow", PARAM_BOOL, false, 0, 0},
};

static const struct param_spec send_downlink_params[] = {
    {"devEUI", PARAM_EUI, true, 0, 0},
    {"fPort", PARAM_INT, true, 1, 223},
    {"payload", PARAM_HEX, true, 0, 484},
    {"confirmed", PARAM_BOOL, false, 0, 0},
};

static const struct param_spec import_astk_params[] = {
    {"encryptedASKey", PARAM_HEX, true, 128, 1024},
    {"label", PARAM_PLAIN, false, 0, 64},
    {"customerID", PARAM_PLAIN, false, 0, 64},
    {"devEUI", PARAM_EUI, false, 0, 0},
};

#define METHOD(iface, member, sockets, streams, params)                                            \
	{                                                                                          \
		iface "." member, iface, member, sockets, streams, params, N(params)               \
	}
#define METHOD0(iface, member, sockets)                                                            \
	{                                                                                          \
		iface "." member, iface, member, sockets, false, NULL, 0                           \
	}

static const struct method_spec methods[] = {
    METHOD0(IFACE_SERVICE, "GetInfo", PROTO_SOCKET_ANY),
    METHOD(IFACE_SERVICE, "GetInterfaceDescription", PROTO_SOCKET_ANY, false,
	   get_interface_description_params),
    METHOD(IFACE_STATION, "Activate", PROTO_SOCKET_STATION, false, activate_params),
    METHOD(IFACE_STATION, "Lookup", PROTO_SOCKET_STATION, false, lookup_params),
    METHOD0(IFACE_ADMIN, "Status", PROTO_SOCKET_ADMIN),
    METHOD(IFACE_ADMIN, "Import", PROTO_SOCKET_ADMIN, true, import_params),
    METHOD(IFACE_ADMIN, "Export", PROTO_SOCKET_ADMIN, true, export_params),
    METHOD(IFACE_ADMIN, "ListDevices", PROTO_SOCKET_ADMIN, false, list_devices_params),
    METHOD(IFACE_ADMIN, "GetDevice", PROTO_SOCKET_ADMIN, false, get_device_params),
    METHOD(IFACE_ADMIN, "Adopt", PROTO_SOCKET_ADMIN, false, get_device_params),
    METHOD(IFACE_ADMIN, "Retire", PROTO_SOCKET_ADMIN, false, retire_params),
    METHOD(IFACE_ADMIN, "Metrics", PROTO_SOCKET_ADMIN, false, metrics_params),
    METHOD(IFACE_ADMIN, "Backup", PROTO_SOCKET_ADMIN, false, backup_params),
    METHOD(IFACE_ADMIN, "Print", PROTO_SOCKET_ADMIN, false, print_params),
    METHOD(IFACE_AS, "Uplinks", PROTO_SOCKET_AS_APPS | PROTO_SOCKET_AS_ADMIN, true,
	   uplinks_params),
    METHOD(IFACE_AS, "SendDownlink", PROTO_SOCKET_AS_APPS | PROTO_SOCKET_AS_ADMIN, false,
	   send_downlink_params),
    METHOD0(IFACE_AS, "Status", PROTO_SOCKET_AS_APPS | PROTO_SOCKET_AS_ADMIN),
    METHOD(IFACE_AS_ADMIN, "ImportASTK", PROTO_SOCKET_AS_ADMIN, false, import_astk_params),
    METHOD0(IFACE_AS_ADMIN, "ListASTKs", PROTO_SOCKET_AS_ADMIN),
};

bool proto_plain_text(const char *s)
{
	for (; *s; s++)
		if (*s < 0x20 || *s > 0x7e || *s == '"' || *s == '\\')
			return false;
	return true;
}

/* True if none of the len bytes at s is a control character (C0, DEL) or a NUL. */
static bool text_printable(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

/* Set a fault's error, parameter and reason (a printf format); returns -EINVAL. */
static int fault_set(struct proto_fault *f, const char *error, const char *parameter,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fault_set(struct proto_fault *f, const char *error, const char *parameter,
		     const char *fmt, ...)
{
	va_list ap;

	f->error = error;
	snprintf(f->parameter, sizeof(f->parameter), "%s", parameter);
	va_start(ap, fmt);
	vsnprintf(f->reason, sizeof(f->reason), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/*
 * A hexadecimal parameter's fault: reason, then what is in the way when s holds something
 * else than digits (a 0x, spaces, dashes or colons as copied from a label or a console),
 * so that the caller knows what to fix, not only the rule.
 */
static int hex_fault(struct proto_fault *f, const char *error, const char *parameter, const char *s,
		     const char *reason)
{
	fault_set(f, error, parameter, "%s", reason);
	size_t bad = s ? strspn(s, "0123456789abcdefABCDEF") : 0;
	unsigned char c = s ? (unsigned char)s[bad] : 0;
	size_t n = strlen(f->reason);
	if (c >= 0x20 && c < 0x7f)
		snprintf(f->reason + n, sizeof(f->reason) - n,
			 "; character %zu is '%c': give the digits alone, without 0x, spaces, "
			 "dashes or colons",
			 bad + 1, c);
	else if (c)
		snprintf(f->reason + n, sizeof(f->reason) - n,
			 "; character %zu is not a hexadecimal digit", bad + 1);
	return -EINVAL;
}

/*
 * After a retry with JSON_DECODE_INT_AS_REAL: every real that holds a whole number a
 * double represents exactly (|x| <= 2^53) is an integer again, so that only the numbers
 * too large for one stay reals and fail their parameter's check by name.
 */
/* The integer a real holds exactly (|x| <= 2^53), or NULL. */
static json_t *whole_number(const json_t *v)
{
	if (!json_is_real(v))
		return NULL;
	double d = json_real_value(v);
	if (!(d >= -9007199254740992.0 && d <= 9007199254740992.0) || d != (double)(json_int_t)d)
		return NULL;
	return json_integer((json_int_t)d);
}

static void integers_back(json_t *v)
{
	const char *key;
	json_t *child, *n;
	size_t i;
	if (json_is_object(v)) {
		json_object_foreach(v, key, child)
		{
			if ((n = whole_number(child)))
				json_object_set_new(v, key, n);
			else
				integers_back(child);
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child)
		{
			if ((n = whole_number(child)))
				json_array_set_new(v, i, n);
			else
				integers_back(child);
		}
	}
}

int call_decode(const char *buf, size_t len, struct call *ret, struct proto_fault *fault)
{
	const char *inval = PROTO_ERR_INVALID_PARAMETER;
	json_error_t jerr;

	fault->oneway = false;
	if (len == 0)
		return fault_set(fault, inval, "", "empty message");
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root && json_error_code(&jerr) == json_error_numeric_overflow) {
		/* Valid JSON with an integer beyond 64 bits: a parameter out of range, named. */
		root = json_loadb(buf, len, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
				  &jerr);
		if (root)
			integers_back(root);
	}
	if (!root)
		return fault_set(fault, inval, "", "not valid JSON: %s", jerr.text);

	int r = -EINVAL;
	if (!json_is_object(root)) {
		fault_set(fault, inval, "", "must be a JSON object");
		goto out;
	}
	/* A call that says oneway gets no reply, not even an error: its client reads none. */
	fault->oneway = json_is_true(json_object_get(root, "oneway"));
	json_t *method = json_object_get(root, "method");
	if (!method) {
		fault_set(fault, inval, "method", "is required");
		goto out;
	}
	if (!json_is_string(method)) {
		fault_set(fault, inval, "method", "must be a string");
		goto out;
	}
	json_t *params = json_object_get(root, "parameters");
	if (params && !json_is_null(params) && !json_is_object(params)) {
		fault_set(fault, inval, "parameters", "must be an object");
		goto out;
	}
	json_t *more = json_object_get(root, "more");
	if (more && !json_is_null(more) && !json_is_boolean(more)) {
		fault_set(fault, inval, "more", "must be true or false");
		goto out;
	}
	json_t *oneway = json_object_get(root, "oneway");
	if (oneway && !json_is_null(oneway) && !json_is_boolean(oneway)) {
		fault_set(fault, inval, "oneway", "must be true or false");
		goto out;
	}
	json_t *upgrade = json_object_get(root, "upgrade");
	if (upgrade && !json_is_null(upgrade) && !json_is_boolean(upgrade)) {
		fault_set(fault, inval, "upgrade", "must be true or false");
		goto out;
	}
	if (json_is_true(upgrade)) {
		/* No method of tpad or tpas hands the connection over to another protocol. */
		fault_set(fault, inval, "upgrade",
			  "no method of this service upgrades the connection");
		goto out;
	}

	char *name = strdup(json_string_value(method));
	json_t *p = json_is_object(params) ? json_incref(params) : json_object();
	if (!name || !p) {
		free(name);
		json_decref(p);
		r = -ENOMEM;
		goto out;
	}
	*ret = (struct call){
	    .method = name,
	    .parameters = p,
	    .more = json_is_true(more) && !json_is_true(oneway), /* oneway wins */
	    .oneway = json_is_true(oneway),
	};
	r = 0;
out:
	json_decref(root);
	return r;
}

void call_clear(struct call *c)
{
	free(c->method);
	json_decref(c->parameters);
	*c = (struct call){0};
}

/* Serialize obj compactly; NULL on ENOMEM. */
static char *dump(json_t *obj, size_t *ret_len)
{
	char *s = obj ? json_dumps(obj, PROTO_JSON_FLAGS) : NULL;
	if (s)
		*ret_len = strlen(s);
	return s;
}

/* Build {key: value (stolen), "parameters": parameters or {}}; key may be NULL. */
static json_t *envelope(const char *key, json_t *value, json_t *parameters)
{
	json_t *obj = json_object();
	if (!obj) {
		json_decref(value);
		return NULL;
	}
	if (key && json_object_set_new(obj, key, value) < 0)
		goto fail;
	if (json_object_set_new(obj, "parameters",
				parameters ? json_incref(parameters) : json_object()) < 0)
		goto fail;
	return obj;
fail:
	json_decref(obj);
	return NULL;
}

char *call_encode(const char *method, json_t *parameters, bool more, bool oneway, size_t *ret_len)
{
	json_t *obj = envelope("method", json_string(method), parameters);
	if (obj && ((more && json_object_set_new(obj, "more", json_true()) < 0) ||
		    (oneway && json_object_set_new(obj, "oneway", json_true()) < 0))) {
		json_decref(obj);
		return NULL;
	}
	char *s = dump(obj, ret_len);
	json_decref(obj);
	return s;
}

char *reply_encode(json_t *parameters, bool continues, size_t *ret_len)
{
	json_t *obj = envelope(NULL, NULL, parameters);
	if (obj && continues && json_object_set_new(obj, "continues", json_true()) < 0) {
		json_decref(obj);
		return NULL;
	}
	char *s = dump(obj, ret_len);
	json_decref(obj);
	return s;
}

char *error_encode(const char *error, json_t *parameters, size_t *ret_len)
{
	json_t *obj = envelope("error", json_string(error), parameters);
	char *s = dump(obj, ret_len);
	json_decref(obj);
	return s;
}

/* True if name ends with "." suffix. */
static bool error_is(const char *name, const char *suffix)
{
	size_t n = strlen(name), m = strlen(suffix);
	return n > m && name[n - m - 1] == '.' && strcmp(name + n - m, suffix) == 0;
}

json_t *proto_fault_parameters(const struct proto_fault *fault)
{
	json_t *p = json_object();
	if (!p)
		return NULL;
	const char *key = NULL;
	if (error_is(fault->error, "InvalidParameter"))
		key = "parameter";
	else if (error_is(fault->error, "InterfaceNotFound"))
		key = "interface";
	else if (error_is(fault->error, "MethodNotFound") ||
		 error_is(fault->error, "MethodNotImplemented"))
		key = "method";
	/* org.varlink.service errors carry only their declared fields: no reason. */
	bool service = strncmp(fault->error, IFACE_SERVICE ".", sizeof(IFACE_SERVICE)) == 0;
	if ((key && json_object_set_new(p, key, json_string(fault->parameter)) < 0) ||
	    (fault->reason[0] && !service &&
	     json_object_set_new(p, "reason", json_string(fault->reason)) < 0)) {
		json_decref(p);
		return NULL;
	}
	return p;
}

char *fault_encode(const struct proto_fault *fault, size_t *ret_len)
{
	json_t *p = proto_fault_parameters(fault);
	if (!p)
		return NULL;
	char *s = error_encode(fault->error, p, ret_len);
	json_decref(p);
	return s;
}

int reply_decode(const char *buf, size_t len, struct reply *ret)
{
	if (len == 0)
		return -EINVAL;
	json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
	if (!root)
		return -EINVAL;

	int r = -EINVAL;
	if (!json_is_object(root))
		goto out;
	json_t *error = json_object_get(root, "error");
	json_t *params = json_object_get(root, "parameters");
	json_t *continues = json_object_get(root, "continues");
	if ((error && !json_is_null(error) && !json_is_string(error)) ||
	    (params && !json_is_null(params) && !json_is_object(params)) ||
	    (continues && !json_is_null(continues) && !json_is_boolean(continues)))
		goto out;

	char *name = json_is_string(error) ? strdup(json_string_value(error)) : NULL;
	json_t *p = json_is_object(params) ? json_incref(params) : json_object();
	if ((json_is_string(error) && !name) || !p) {
		free(name);
		json_decref(p);
		r = -ENOMEM;
		goto out;
	}
	*ret = (struct reply){
	    .error = name,
	    .parameters = p,
	    .continues = json_is_true(continues),
	};
	r = 0;
out:
	json_decref(root);
	return r;
}

void reply_clear(struct reply *r)
{
	free(r->error);
	json_decref(r->parameters);
	*r = (struct reply){0};
}

const struct method_spec *proto_methods(size_t *ret_n)
{
	*ret_n = N(methods);
	return methods;
}

const struct method_spec *proto_method_find(const char *method)
{
	if (!method)
		return NULL;
	for (size_t i = 0; i < N(methods); i++)
		if (strcmp(methods[i].name, method) == 0)
			return &methods[i];
	return NULL;
}

int proto_method_lookup(const char *method, unsigned socket, const struct method_spec **ret,
			struct proto_fault *fault)
{
	const struct method_spec *m = proto_method_find(method);
	if (m && (m->sockets & socket)) {
		*ret = m;
		return 0;
	}

	/* The interface is what precedes the last dot; "Foo" alone names no interface. */
	const char *dot = strrchr(method, '.');
	if (dot) {
		size_t n = (size_t)(dot - method);
		char iface[256];
		snprintf(iface, sizeof(iface), "%.*s", (int)(n < sizeof(iface) ? n : sizeof(iface)),
			 method);
		if (!(iface_sockets(iface) & socket)) {
			fault_set(fault, PROTO_ERR_INTERFACE_NOT_FOUND, iface, "%s", "");
			return -ENOENT;
		}
	}
	fault_set(fault, PROTO_ERR_METHOD_NOT_FOUND, method, "%s", "");
	return -ENOENT;
}

/* The error name for bad parameters of interface. */
static const char *invalid_parameter_error(const char *interface)
{
	for (size_t i = 0; i < N(iface_errors); i++)
		if (strcmp(iface_errors[i].interface, interface) == 0)
			return iface_errors[i].invalid_parameter;
	return PROTO_ERR_INVALID_PARAMETER;
}

/* The error name for a streaming method called without more. */
static const char *expected_more_error(const char *interface)
{
	for (size_t i = 0; i < N(iface_errors); i++)
		if (strcmp(iface_errors[i].interface, interface) == 0)
			return iface_errors[i].expected_more;
	return PROTO_ERR_EXPECTED_MORE;
}

/* Format a nested parameter name into dst, truncated to fit. */
static void param_name(char *dst, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void param_name(char *dst, size_t n, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, n, fmt, ap);
	va_end(ap);
}

/* True if s is a valid serial number. */
static bool serial_valid(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > PROTO_SERIAL_MAX)
		return false;
	/* The TR005 label's alphanumeric set (less the space), so a label never fails later. */
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      strchr("$%*+-./", c)))
			return false;
	}
	return true;
}

/* True if s equals one of the NULL-terminated words; either case if nocase. */
static bool one_of(const char *s, const char *const *words, bool nocase)
{
	for (; *words; words++)
		if (nocase ? strcasecmp(s, *words) == 0 : strcmp(s, *words) == 0)
			return true;
	return false;
}

static const char *const qr_formats[] = {"png", "svg", "zpl", "pdf", "text", "none", NULL};
static const char *const ec_levels[] = {"L", "M", "Q", "H", NULL};
static const char *const export_formats[] = {"png", "svg", "zpl", "pdf", "csv", NULL};
static const char *const states[] = {"PENDING", "ISSUED", "FAILED", "FOREIGN", "RETIRED", NULL};

/* Context of one validation: the error name and the fault to fill. */
struct vctx {
	const char *error;
	struct proto_fault *fault;
};

static int check_object(struct vctx *v, const struct param_spec *params, size_t n, json_t *obj,
			const char *prefix);

/* Check one present, non-null value of spec's type; name is its full parameter name. */
static int check_value(struct vctx *v, const struct param_spec *spec, json_t *val, const char *name)
{
	static const size_t hex_len[] = {
	    [PARAM_EUI] = HEX_EUI,
	    [PARAM_TKM_INFO] = HEX_TKM_INFO,
	    [PARAM_APP_KEY] = HEX_APP_KEY,
	    [PARAM_PROFILE_ID] = HEX_PROFILE,
	};
	const char *s = json_string_value(val);

	switch (spec->type) {
	case PARAM_STRING: {
		if (!s)
			return fault_set(v->fault, v->error, name, "must be a string");
		/* Bytes: what the handler's buffers and paths hold (names and paths). */
		long long n = (long long)json_string_length(val);
		if (spec->max > 0 && (n < spec->min || n > spec->max))
			return fault_set(v->fault, v->error, name,
					 "must be %lld to %lld bytes long (UTF-8)", spec->min,
					 spec->max);
		return 0;
	}
	case PARAM_TEXT: {
		/* Characters (jansson's strings are valid UTF-8), none of them a control. */
		size_t len = s ? json_string_length(val) : 0;
		long long n = s ? (long long)utf8_chars(s, len) : -1;
		if (!s || n < spec->min || n > spec->max || !text_printable(s, len))
			return fault_set(v->fault, v->error, name,
					 "must be %lld to %lld printable characters", spec->min,
					 spec->max);
		return 0;
	}
	case PARAM_PLAIN: {
		long long n = s ? (long long)json_string_length(val) : -1;
		if (!s || n != (long long)strlen(s) || n < spec->min || n > spec->max ||
		    !proto_plain_text(s))
			return fault_set(v->fault, v->error, name,
					 "must be %lld to %lld printable ASCII characters, without "
					 "quotes or backslashes",
					 spec->min, spec->max);
		return 0;
	}
	case PARAM_BOOL:
		if (!json_is_boolean(val))
			return fault_set(v->fault, v->error, name, "must be true or false");
		return 0;
	case PARAM_INT: {
		/* A real here is a fraction, or an integer too large for 64 bits (call_decode). */
		bool huge = json_is_real(val) && fabs(json_real_value(val)) >= 9007199254740992.0;
		if (!json_is_integer(val) && !huge)
			return fault_set(v->fault, v->error, name, "must be an integer");
		long long i = huge ? spec->max + 1 : json_integer_value(val);
		if (i < spec->min || i > spec->max)
			return fault_set(v->fault, v->error, name, "must be between %lld and %lld",
					 spec->min, spec->max);
		return 0;
	}
	case PARAM_EUI:
	case PARAM_TKM_INFO:
	case PARAM_APP_KEY:
	case PARAM_PROFILE_ID:
		if (!s || json_string_length(val) != hex_len[spec->type] ||
		    !hex_valid(s, hex_len[spec->type])) {
			char why[40];
			snprintf(why, sizeof(why), "must be %zu hexadecimal digits",
				 hex_len[spec->type]);
			return hex_fault(v->fault, v->error, name, s, why);
		}
		return 0;
	case PARAM_SERIAL:
		if (!s || json_string_length(val) != strlen(s) || !serial_valid(s))
			return fault_set(v->fault, v->error, name,
					 "must be 1 to %d of 0-9 A-Z a-z $ %% * + - . /",
					 PROTO_SERIAL_MAX);
		return 0;
	case PARAM_STATE:
		if (!s || !one_of(s, states, true))
			return fault_set(v->fault, v->error, name,
					 "must be PENDING, ISSUED, FAILED, FOREIGN or RETIRED");
		return 0;
	case PARAM_EXPORT_FORMAT:
		if (!s || !one_of(s, export_formats, false))
			return fault_set(v->fault, v->error, name,
					 "must be \"png\", \"svg\", \"zpl\", \"pdf\" or \"csv\"");
		return 0;
	case PARAM_QR_OPTIONS: {
		if (!json_is_object(val))
			return fault_set(v->fault, v->error, name, "must be an object");
		int r = check_object(v, qr_options_params, N(qr_options_params), val, name);
		if (r < 0)
			return r;
		char sub[sizeof(v->fault->parameter)];
		json_t *f = json_object_get(val, "format");
		if (json_is_string(f) && !one_of(json_string_value(f), qr_formats, false)) {
			param_name(sub, sizeof(sub), "%s.format", name);
			return fault_set(v->fault, v->error, sub,
					 "must be \"png\", \"svg\", \"zpl\", \"pdf\", \"text\" or "
					 "\"none\"");
		}
		json_t *ec = json_object_get(val, "ecLevel");
		if (json_is_string(ec) && !one_of(json_string_value(ec), ec_levels, true)) {
			param_name(sub, sizeof(sub), "%s.ecLevel", name);
			return fault_set(v->fault, v->error, sub,
					 "must be \"L\", \"M\", \"Q\" or \"H\"");
		}
		return 0;
	}
	case PARAM_PRINT_OPTIONS:
		if (!json_is_object(val))
			return fault_set(v->fault, v->error, name, "must be an object");
		return check_object(v, print_options_params, N(print_options_params), val, name);
	case PARAM_HEX: {
		size_t n = s ? json_string_length(val) : 0;
		if (!s || n != strlen(s) || n % 2 || (long long)n < spec->min ||
		    (long long)n > spec->max || (n && !hex_valid_any(s))) {
			char why[80];
			snprintf(why, sizeof(why),
				 "must be an even number (%lld to %lld) of hexadecimal digits",
				 spec->min, spec->max);
			return hex_fault(v->fault, v->error, name, s, why);
		}
		return 0;
	}
	case PARAM_IMPORT_ROWS: {
		if (!json_is_array(val))
			return fault_set(v->fault, v->error, name, "must be an array");
		if (json_array_size(val) > PROTO_MAX_IMPORT_ROWS)
			return fault_set(v->fault, v->error, name, "must hold at most %d rows",
					 PROTO_MAX_IMPORT_ROWS);
		size_t i;
		json_t *row;
		json_array_foreach(val, i, row)
		{
			char sub[sizeof(v->fault->parameter)];
			param_name(sub, sizeof(sub), "%s[%zu]", name, i);
			if (!json_is_object(row))
				return fault_set(v->fault, v->error, sub, "must be an object");
			int r = check_object(v, import_row_params, N(import_row_params), row, sub);
			if (r < 0)
				return r;
		}
		return 0;
	}
	}
	return fault_set(v->fault, v->error, name, "has an unknown type");
}

/* Check every parameter of a spec list in obj; prefix names the enclosing object or "". */
static int check_object(struct vctx *v, const struct param_spec *params, size_t n, json_t *obj,
			const char *prefix)
{
	for (size_t i = 0; i < n; i++) {
		char name[sizeof(v->fault->parameter)];
		if (prefix[0])
			param_name(name, sizeof(name), "%s.%s", prefix, params[i].name);
		else
			param_name(name, sizeof(name), "%s", params[i].name);

		json_t *val = json_object_get(obj, params[i].name);
		if (!val || json_is_null(val)) {
			if (params[i].required)
				return fault_set(v->fault, v->error, name, "is required");
			continue;
		}
		int r = check_value(v, &params[i], val, name);
		if (r < 0)
			return r;
	}
	return 0;
}

int proto_validate(const struct method_spec *m, json_t *params, struct proto_fault *fault)
{
	struct vctx v = {invalid_parameter_error(m->interface), fault};
	if (!json_is_object(params))
		return fault_set(fault, v.error, "parameters", "must be an object");
	return check_object(&v, m->params, m->n_params, params, "");
}

int proto_check(const struct call *c, unsigned socket, const struct method_spec **ret,
		struct proto_fault *fault)
{
	const struct method_spec *m;
	int r = proto_method_lookup(c->method, socket, &m, fault);
	if (r < 0)
		return r;
	/* oneway: the work is done and every reply dropped, so a stream is fine. */
	if (m->streams && !c->more && !c->oneway)
		return fault_set(fault, expected_more_error(m->interface), "", "%s", "");
	r = proto_validate(m, c->parameters, fault);
	if (r < 0)
		return r;
	*ret = m;
	return 0;
}

int proto_check_on(const struct call *c, unsigned socket, unsigned daemon,
		   const struct method_spec **ret, struct proto_fault *fault)
{
	int r = proto_check(c, socket, ret, fault);
	if (r == -ENOENT && strcmp(fault->error, PROTO_ERR_INTERFACE_NOT_FOUND) == 0 &&
	    (iface_sockets(fault->parameter) & daemon))
		fault_set(fault, PROTO_ERR_METHOD_NOT_FOUND, c->method, "%s", "");
	return r;
}

void proto_param_hex(json_t *obj, const char *key, char *out, size_t n)
{
	const char *s = json_string_value(json_object_get(obj, key));
	if (s && strlen(s) == n && hex_valid(s, n))
		hex_upper(out, s, n);
	else
		out[0] = '\0';
}
