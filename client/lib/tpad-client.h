/* tpad-client.h: libtpad-client, the C client library of tpad for test stations. */
#ifndef TPAD_CLIENT_H
#define TPAD_CLIENT_H

/*
 * Blocking calls to tpad's station socket (Activate, Lookup) and admin socket (Status),
 * with plain C structs out and errors as codes with the varlink error name and a message;
 * any method as JSON text, streams (calls with more, such as tpas's io.tpad.AS.Uplinks)
 * included.
 *
 * Threads: every function may be called from any thread; a connection (tpad_client) is
 * used by one thread at a time. Open one connection per thread: there is no shared or
 * global state, and errors are returned in the caller's struct tpad_error. A call on a
 * connection another thread is in a call on is refused at once (TPAD_E_ARGUMENT, "another
 * thread is in a call on this connection"), so that neither takes the other's reply;
 * tpad_client_close() must not race a call.
 * Signals: a closed peer never raises SIGPIPE in the calling process.
 * ABI: the structs below are part of the soname's ABI (libtpad-client.so.1). A program
 * built against libtpad-client.so.0 (qr_text of 512 bytes) must be built again.
 */

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define TPAD_CLIENT_API __attribute__((visibility("default")))
#else
#define TPAD_CLIENT_API
#endif

#define TPAD_CLIENT_VERSION "0.2.0"
#define TPAD_DEFAULT_STATION_SOCKET "/run/tpad/station.sock"
#define TPAD_DEFAULT_ADMIN_SOCKET "/run/tpad/admin.sock"
#define TPAD_DEFAULT_APPS_SOCKET "/run/tpas/apps.sock" /* tpas's, for applications */

/* tpad_client_set_timeout()'s "wait for ever", for a follower of a stream. */
#define TPAD_TIMEOUT_NONE (-1)

/* Result codes: 0 is success, every error is negative. */
enum tpad_code {
	TPAD_OK = 0,
	/* Errors of this library, before or around a call. */
	TPAD_E_ARGUMENT = -1, /* a bad argument (NULL, a malformed DevEUI...): nothing sent */
	TPAD_E_CONNECT = -2,  /* cannot connect: no socket, permission denied, not running */
	TPAD_E_IO = -3,	      /* the connection failed or closed mid-call */
	TPAD_E_TIMEOUT = -4,  /* no answer within the timeout: the connection is closed */
	TPAD_E_PROTOCOL = -5, /* tpad's answer could not be understood */
	TPAD_E_NOMEM = -6,    /* out of memory */
	/* Error replies of tpad, by name (name and message say more). */
	TPAD_E_INVALID_PARAMETER = -20, /* *.InvalidParameter */
	TPAD_E_NOT_FOUND = -21,		/* io.tpad.*.NotFound: the store has no such device */
	TPAD_E_CONFLICT = -22,		/* io.tpad.Station.Conflict: another record, same DevEUI */
	TPAD_E_UPSTREAM_REJECTED = -23, /* io.tpad.Station.UpstreamRejected */
	TPAD_E_UPSTREAM_UNAVAILABLE = -24, /* the cloud cannot be reached now; nothing was sent */
	TPAD_E_OUTCOME_UNKNOWN = -25,	/* sent, answer lost; retry later (never imported twice) */
	TPAD_E_BUSY = -26,		/* a limit of tpad; retry later */
	TPAD_E_STORE_FAILED = -27,	/* the store could not record the device */
	TPAD_E_PERMISSION_DENIED = -28, /* this user may not call station methods */
	TPAD_E_METHOD_NOT_FOUND = -29,	/* e.g. Status on the station socket */
	TPAD_E_OTHER_REPLY = -30,	/* any other error reply, by err->name: PrintFailed (the
					   device is committed), Retired... */
	TPAD_E_PRINT_FAILED = -31,	/* io.tpad.Station.PrintFailed from tpad_activate_print() or
					   tpad_lookup_print(): the device is committed and given */
};

/* What went wrong. */
struct tpad_error {
	int code;	       /* enum tpad_code */
	char name[128];	       /* varlink error name ("io.tpad.Station.NotFound"), or for library
				  errors "tpad.client.Connect", ".IO", ".Timeout", ".Protocol"... */
	char message[512];     /* one sentence, e.g. "devEUI=0123456789ABCDEF" or "cannot connect
				  to /run/tpad/station.sock: No such file or directory"; a
				  device in it is only its DevEUI (no token or AppKey to log) */
	char parameters[1024]; /* the error reply's parameters as JSON ("{}" if none); when
				  they do not fit, without the label (qr), else "{}":
				  tpad_call_reply() gives them whole. PrintFailed's carry the
				  device's ownerToken and AppKey: tpad_error_clear() */
	int sys_errno;	       /* errno for TPAD_E_CONNECT and TPAD_E_IO, else 0 */
	int retry_after;       /* seconds to wait, for TPAD_E_UPSTREAM_UNAVAILABLE and
				  TPAD_E_OUTCOME_UNKNOWN when tpad says, else 0 */
};

/* A device record as Activate and Lookup hand it out. Strings are NUL-terminated. */
struct tpad_device {
	char dev_eui[17];
	char join_eui[17];
	char profile_id[9];
	char serial[65]; /* "" if none */
	char owner_token[129];
	char app_key[33];	/* "" for devices with a Secure Element */
	char qr_text[1024];	/* the text encoded in the QR code (qr.template may make it long) */
	char state[8];		/* "ISSUED", "PENDING", "FAILED" */
	char source[8];		/* "live" or "stored" */
	char qr_format[8];	/* the label's format, "" if none was asked for */
	unsigned char *qr_data; /* the label file's bytes (malloc'd), NULL if none */
	size_t qr_len;
};

/*
 * The label a call asks for: format NULL (or "none") for none. PNG, SVG, ZPL and PDF are
 * the whole label of tpad's [label] layout (the code and its captions, as printed) unless
 * tpad has label.images = code; for the bare code from a tpad that draws whole labels,
 * call tpad_call_json() with "qr": {"label": false}. scale and margin size the bare code.
 */
struct tpad_label {
	const char *format;   /* "png", "svg", "zpl", "pdf", "text" or NULL */
	int scale;	      /* 1-20; 0: tpad's default */
	int margin;	      /* 0-16; -1: tpad's default */
	const char *ec_level; /* "L", "M", "Q", "H" or NULL */
};

/* An activation: dev_eui and exactly one of tkm_info, app_key, generate_app_key (or none
 * for a device imported before manufacturing). NULL fields are left out. */
struct tpad_activation {
	const char *dev_eui;
	const char *tkm_info;
	const char *app_key;
	int generate_app_key;
	const char *join_eui;
	const char *profile_id;
	const char *serial;
	struct tpad_label label;
};

/* A print of the label on a line printer (PrintOptions), once the record is committed. */
struct tpad_print {
	const char *printer; /* [printer.<name>] of tpad.conf; NULL: the station's default */
	int copies;	     /* 1-100; 0: 1 */
};

/* What became of a print (PrintStatus), or why it did not come out (PrintFailed). */
struct tpad_print_status {
	char printer[64];      /* the printer's name */
	long long job;	       /* tpad's job number; 0 if the job was never queued */
	char state[16];	       /* "printed"; "" when the print failed */
	double send_ms;	       /* store commit to the last byte sent, or to an IPP printer's
				  answer to Print-Job; 0 when the print failed */
	long long printer_job; /* an IPP printer's own job-id; 0 if none */
	char reason[256];      /* why the print failed, e.g. "paper out"; "" when printed */
};

/* Health, from the admin socket. */
struct tpad_status {
	char version[32];
	long long uptime;	  /* seconds */
	char upstream_state[16];  /* "ok", "degraded", "down"; "" if not set up */
	char breaker[16];	  /* "closed", "open", "half-open" */
	unsigned sessions;	  /* sessions to the cloud */
	unsigned sessions_up;	  /* of which ready or busy */
	unsigned long long queue; /* requests waiting for a session */
	long long latency_p50_ms, latency_p99_ms;
	unsigned long long issued, pending, failed; /* store rows by state */
	char store_error[256]; /* the last failed store transaction's reason, "" if none */
	int store_failing;     /* 1 from a failed transaction until the next commit */
	int health;	       /* as tpactl status exits: 0 ok, 4 cloud down, 5 breaker
				  open, 6 store failing */
};

typedef struct tpad_client tpad_client;

/* The library's version, e.g. "0.2.0" (TPAD_CLIENT_VERSION of the header it was built with). */
TPAD_CLIENT_API const char *tpad_client_version(void);

/* A short name of a code ("TPAD_E_NOT_FOUND"). */
TPAD_CLIENT_API const char *tpad_code_name(int code);

/*
 * Connect to tpad's socket at path; NULL: $TPAD_STATION_SOCKET, else
 * TPAD_DEFAULT_STATION_SOCKET (use TPAD_DEFAULT_ADMIN_SOCKET or $TPAD_ADMIN_SOCKET for
 * tpad_status()). timeout_ms bounds each call (0: 60 s). Returns 0 with *ret, or a
 * negative code with err filled (err may be NULL).
 */
TPAD_CLIENT_API int tpad_client_open(const char *path, int timeout_ms, tpad_client **ret,
				     struct tpad_error *err);

/* Close and free; accepts NULL. */
TPAD_CLIENT_API void tpad_client_close(tpad_client *c);

/* Activate a device (io.tpad.Station.Activate). 0 with *ret filled, or a negative code. */
TPAD_CLIENT_API int tpad_activate(tpad_client *c, const struct tpad_activation *a,
				  struct tpad_device *ret, struct tpad_error *err);

/* A stored device (io.tpad.Station.Lookup); label may be NULL. */
TPAD_CLIENT_API int tpad_lookup(tpad_client *c, const char *dev_eui, const struct tpad_label *label,
				struct tpad_device *ret, struct tpad_error *err);

/*
 * tpad_activate() and tpad_lookup(), the label printed on a line printer once the record is
 * committed (print NULL: the station's default printer, one copy). 0: printed, *status
 * says where and how fast. TPAD_E_PRINT_FAILED: the label did not come out (paper out,
 * the printer unreachable...) but the record is committed: *ret holds the device with its
 * ownerToken (and label, if asked for), *status the printer and the reason; nothing is
 * imported again, print it again with tpad_lookup_print(). err then also carries the
 * device in its parameters: tpad_error_clear() it once handled. An unknown printer is
 * TPAD_E_INVALID_PARAMETER and nothing starts. Other codes as tpad_activate().
 */
TPAD_CLIENT_API int tpad_activate_print(tpad_client *c, const struct tpad_activation *a,
					const struct tpad_print *print, struct tpad_device *ret,
					struct tpad_print_status *status, struct tpad_error *err);
TPAD_CLIENT_API int tpad_lookup_print(tpad_client *c, const char *dev_eui,
				      const struct tpad_label *label,
				      const struct tpad_print *print, struct tpad_device *ret,
				      struct tpad_print_status *status, struct tpad_error *err);

/* Health (io.tpad.Admin.Status), on a connection to the admin socket. */
TPAD_CLIENT_API int tpad_status(tpad_client *c, struct tpad_status *ret, struct tpad_error *err);

/* Free the label of d and wipe its AppKey and ownerToken; d can be reused. Accepts NULL. */
TPAD_CLIENT_API void tpad_device_clear(struct tpad_device *d);

/*
 * Wipe err (all of it, as zeros): once an error whose parameters carry a device (PrintFailed:
 * its ownerToken and AppKey) is handled. err can be reused. Accepts NULL.
 */
TPAD_CLIENT_API void tpad_error_clear(struct tpad_error *err);

/*
 * Any call, as JSON text: parameters is a JSON object or NULL. 0 with the reply's
 * parameters as a malloc'd JSON string in *ret_json (free() it), or a negative code with
 * err filled (an error reply's parameters in err->parameters). One reply only (no more).
 */
TPAD_CLIENT_API int tpad_call_json(tpad_client *c, const char *method, const char *parameters,
				   char **ret_json, struct tpad_error *err);

/*
 * Any call, with the whole reply as JSON text: {"parameters": {...}} or {"error": NAME,
 * "parameters": {...}}, however large (an error such as io.tpad.Station.PrintFailed
 * carries the committed device and its label). 0 with the malloc'd reply in *ret_reply
 * (free() it), an error reply included; a negative code only when no reply could be had
 * (err says why). parameters is a JSON object or NULL. One reply only (no more).
 */
TPAD_CLIENT_API int tpad_call_reply(tpad_client *c, const char *method, const char *parameters,
				    char **ret_reply, struct tpad_error *err);

/*
 * How long each later wait for an answer on c may last: timeout_ms as for
 * tpad_client_open() (0: 60 s), or TPAD_TIMEOUT_NONE to wait for ever: a followed stream
 * that stays quiet for hours is normal. 0, or TPAD_E_ARGUMENT.
 */
TPAD_CLIENT_API int tpad_client_set_timeout(tpad_client *c, int timeout_ms);

/*
 * A call with more, for a method that streams its replies (tpas's io.tpad.AS.Uplinks):
 * send it, then read the replies one at a time with tpad_more_next() until one says no
 * more follow. parameters is a JSON object or NULL. 0 once sent, or a negative code with
 * err filled (nothing read yet). While the stream is open the connection takes no other
 * call (TPAD_E_ARGUMENT): open another connection for them. varlink cannot cancel a call:
 * to leave a stream before its end (a followed one ends only when the server stops),
 * tpad_client_close() the connection.
 */
TPAD_CLIENT_API int tpad_call_more(tpad_client *c, const char *method, const char *parameters,
				   struct tpad_error *err);

/*
 * The next reply of the stream begun by tpad_call_more(): 0 with its parameters as a
 * malloc'd JSON string in *ret_json (free() it; "{}" for a last reply that only ends the
 * stream) and *ret_continues 1 if more replies follow, 0 if this was the last; or a
 * negative code with err filled: an error reply (it ends the stream), or the connection
 * failed, timed out or closed (TPAD_E_IO, TPAD_E_TIMEOUT: it is closed). Each read waits
 * at most the connection's timeout (tpad_client_set_timeout()). Once the stream has
 * ended, the connection takes calls again. TPAD_E_ARGUMENT when no stream is open.
 */
TPAD_CLIENT_API int tpad_more_next(tpad_client *c, char **ret_json, int *ret_continues,
				   struct tpad_error *err);

#ifdef __cplusplus
}
#endif
#endif
