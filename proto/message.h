/* message: varlink calls and replies as JSON, and the method table that validates them. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "iface.h"

#define PROTO_MAX_IMPORT_ROWS 1000 /* rows in one io.tpad.Admin.Import call */
#define PROTO_SERIAL_MAX 64	   /* characters of a serial number */
#define PROTO_MAX_COPIES 100	   /* copies of one label in one print */
#define PROTO_MAX_PRINT_LABELS 10000 /* labels in one Admin.Print call */
#define PROTO_MAX_IMPORT_CONCURRENCY 1024 /* Import's concurrency, import.concurrency */

/*
 * How messages are written: compact, a real with 15 significant digits (all a double
 * holds of a decimal), so a number sent as 868.1 reads back and is written again as
 * 868.1, not 868.10000000000002, however many times it passes.
 */
#define PROTO_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

#define PROTO_ERR_INTERFACE_NOT_FOUND "org.varlink.service.InterfaceNotFound"
#define PROTO_ERR_METHOD_NOT_FOUND "org.varlink.service.MethodNotFound"
#define PROTO_ERR_METHOD_NOT_IMPLEMENTED "org.varlink.service.MethodNotImplemented"
#define PROTO_ERR_INVALID_PARAMETER "org.varlink.service.InvalidParameter"
#define PROTO_ERR_PERMISSION_DENIED "org.varlink.service.PermissionDenied"
#define PROTO_ERR_EXPECTED_MORE "org.varlink.service.ExpectedMore"

/*
 * Why a message was refused. error is the full error name (a static string). parameter
 * is the offending parameter for *.InvalidParameter ("" when the message is not a JSON
 * object; nested ones as "qr.scale" or "rows[2].devEUI", rows counted from 0), the
 * interface for InterfaceNotFound, the method for MethodNotFound; reason is a human
 * sentence ("must be 16 hexadecimal digits"). Both are truncated to fit.
 */
struct proto_fault {
	const char *error;
	char parameter[256];
	char reason[160];
	bool oneway; /* the faulty call asked for no reply */
};

/* A decoded call. parameters is never NULL ({} when absent); more and oneway never both. */
struct call {
	char *method;
	json_t *parameters;
	bool more;
	bool oneway;
};

/* A decoded reply, for clients. error is NULL on success; parameters is never NULL. */
struct reply {
	char *error;
	json_t *parameters;
	bool continues;
};

/* The value kinds of the method table. Hex kinds accept either case. */
enum param_type {
	PARAM_STRING,	     /* any string; min..max bytes */
	PARAM_BOOL,	     /* true or false */
	PARAM_INT,	     /* an integer in min..max */
	PARAM_EUI,	     /* 16 hexadecimal digits */
	PARAM_TKM_INFO,	     /* 20 hexadecimal digits */
	PARAM_APP_KEY,	     /* 32 hexadecimal digits */
	PARAM_PROFILE_ID,    /* 8 hexadecimal digits */
	PARAM_SERIAL,	     /* 1..64 of 0x21-0x7e except : , " and \ */
	PARAM_STATE,	     /* PENDING, ISSUED, FAILED, FOREIGN or RETIRED, either case */
	PARAM_QR_OPTIONS,    /* object: format, scale, margin, ecLevel */
	PARAM_EXPORT_FORMAT, /* png, svg, zpl or csv */
	PARAM_IMPORT_ROWS,   /* array of at most PROTO_MAX_IMPORT_ROWS ImportRow objects */
	PARAM_PRINT_OPTIONS, /* object: printer (1..63 characters), copies (1..100) */
	PARAM_HEX,	     /* an even number of hexadecimal digits, min..max of them */
	PARAM_PLAIN,	     /* proto_plain_text(), min..max characters */
	PARAM_TEXT,	     /* human text: min..max characters of UTF-8, no control ones */
};

/*
 * True if s is printable ASCII without quotes or backslashes: what a tunnel uplink's
 * CustomerID and KEKLabel may hold, so what ImportASTK takes as their scopes.
 */
bool proto_plain_text(const char *s);

/* One parameter of a method. JSON null counts as absent. */
struct param_spec {
	const char *name;
	enum param_type type;
	bool required;
	long long min,
	    max; /* PARAM_INT: value range; PARAM_STRING: bytes; PARAM_TEXT: characters */
};

/* One method of the method table. */
struct method_spec {
	const char *name;      /* full name, "io.tpad.Station.Activate" */
	const char *interface; /* "io.tpad.Station" */
	const char *member;    /* "Activate" */
	unsigned sockets;      /* enum proto_socket mask it is reachable on */
	bool streams;	       /* replies with "continues"; must be called with more */
	const struct param_spec *params;
	size_t n_params;
};

/*
 * Parse one message as a call. More and oneway both true: oneway wins (more is false).
 * Not JSON, not an object, method missing or not a string, parameters not an object,
 * more/oneway/upgrade not booleans, or upgrade true (no tpad method upgrades): -EINVAL with
 * fault set to
 * org.varlink.service.InvalidParameter naming "" (the message), "method", "parameters",
 * "more", "oneway" or "upgrade". -ENOMEM. *ret is untouched on failure.
 */
int call_decode(const char *buf, size_t len, struct call *ret, struct proto_fault *fault);

/* Free what c holds and zero it; accepts a zeroed struct. */
void call_clear(struct call *c);

/* Encode a call (parameters may be NULL: {}) as malloc'd JSON; NULL on ENOMEM. */
char *call_encode(const char *method, json_t *parameters, bool more, bool oneway, size_t *ret_len);

/* Encode a reply (parameters may be NULL: {}), with "continues" if set; NULL on ENOMEM. */
char *reply_encode(json_t *parameters, bool continues, size_t *ret_len);

/* Encode an error reply (parameters may be NULL: {}); NULL on ENOMEM. */
char *error_encode(const char *error, json_t *parameters, size_t *ret_len);

/* Encode the error reply for a fault, its parameters from proto_fault_parameters(). */
char *fault_encode(const struct proto_fault *fault, size_t *ret_len);

/*
 * The error parameters of a fault, as the interfaces declare them: {parameter, reason}
 * for io.tpad.*.InvalidParameter, {parameter} only for org.varlink.service.InvalidParameter,
 * {interface} for InterfaceNotFound, {method} for MethodNotFound and MethodNotImplemented,
 * {} for ExpectedMore. NULL on ENOMEM.
 */
json_t *proto_fault_parameters(const struct proto_fault *fault);

/*
 * Copy the hex string parameter key of a validated object upper-cased into out (size
 * n + 1), or "" when it is absent or not n digits long.
 */
void proto_param_hex(json_t *obj, const char *key, char *out, size_t n);

/* Parse one message as a reply; -EINVAL if it is not a valid reply, -ENOMEM. */
int reply_decode(const char *buf, size_t len, struct reply *ret);

/* Free what r holds and zero it; accepts a zeroed struct. */
void reply_clear(struct reply *r);

/* The method table: every method of every interface; its size in *ret_n. */
const struct method_spec *proto_methods(size_t *ret_n);

/* The method with this full name, or NULL (see proto_method_lookup() for which error). */
const struct method_spec *proto_method_find(const char *method);

/*
 * Find a method reachable on socket (an enum proto_socket). -ENOENT with fault set to
 * InterfaceNotFound when its interface is unknown or not served on socket, MethodNotFound
 * otherwise.
 */
int proto_method_lookup(const char *method, unsigned socket, const struct method_spec **ret,
			struct proto_fault *fault);

/*
 * Check params (an object) against m's parameter list: -EINVAL with fault set to
 * <interface>.InvalidParameter naming the first bad parameter. Extra parameters are ignored.
 */
int proto_validate(const struct method_spec *m, json_t *params, struct proto_fault *fault);

/*
 * Check a decoded call for socket in the fixed order method, more, parameters: -ENOENT
 * (see proto_method_lookup()), -EINVAL with org.varlink.service.ExpectedMore for a streaming
 * method called without more, or as proto_validate(). On success *ret is the method.
 */
int proto_check(const struct call *c, unsigned socket, const struct method_spec **ret,
		struct proto_fault *fault);

/*
 * proto_check() for a daemon serving the sockets in daemon (an enum proto_socket mask): a
 * method of an interface that another of the daemon's sockets serves is MethodNotFound, as
 * far as a client of this socket knows; an interface none of them serves stays
 * InterfaceNotFound.
 */
int proto_check_on(const struct call *c, unsigned socket, unsigned daemon,
		   const struct method_spec **ret, struct proto_fault *fault);
