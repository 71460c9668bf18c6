/* ctl: tpactl's connection to tpad and its commands. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

struct frame_reader;

/* Exit statuses, relied on by station scripts (tpactl(1)). */
#define CTL_EXIT_OK 0
#define CTL_EXIT_REPLY 1	 /* tpad answered with an error, or the link failed mid-call */
#define CTL_EXIT_USAGE 2	 /* bad command line, or a command sent to the wrong socket */
#define CTL_EXIT_CONNECT 3	 /* cannot connect */
#define CTL_EXIT_CLOUD_DOWN 4	 /* status: no session to the cloud is ready */
#define CTL_EXIT_BREAKER_OPEN 5	 /* status: the circuit breaker is open */
#define CTL_EXIT_STORE_FAILING 6 /* status: a store transaction failed */
#define CTL_EXIT_PRINTER 7	 /* status: a label printer is stopped or unreachable */
#define CTL_EXIT_INTERRUPTED 130 /* Ctrl-C, as a shell reports SIGINT */

/* How long tpactl waits for one reply (an activation may wait on the cloud). */
#define CTL_CALL_TIMEOUT_MS 600000
/* How long status and metrics wait (tpad answers Status within a second, store down or not). */
#define CTL_STATUS_TIMEOUT_MS 10000

enum ctl_socket {
	CTL_STATION,
	CTL_ADMIN,
	CTL_NONE, /* a local command that does not talk to tpad */
};

struct ctl {
	int fd;
	const char *path;
	enum ctl_socket sock;
	const char *daemon; /* who answers, for messages: "tpad" (ctl_connect's) or "tpas" */
	struct frame_reader *reader;
	int timeout_ms; /* each reply's wait when set (status, metrics); 0: none */
};

/* Parsed command line, shared by all commands. */
struct ctl_args {
	bool json;
	const char *output;
	const char *dev_eui, *join_eui, *tkm_info, *app_key, *serial, *profile_id;
	bool generate_app_key;
	const char *format, *ec_level;
	int scale, margin;
	bool margin_set;
	bool generate_appkeys;
	int concurrency;
	const char *failures;
	const char *out_dir;
	const char *state;
	int limit;
	bool invert;		     /* text labels for dark terminals */
	bool ignore_unknown_columns; /* import */
	int interval_ms;	     /* top: time between frames, 0 for the default */
	const char *command;	     /* the command's name, for messages */
	const char *manifest, *signer, *dev_eui_map; /* import --manifest */
	const char *reason;			     /* retire */
	const char *after;			     /* print --after */
	int bits;				     /* keygen-rsa */
	bool label;			/* --label: the whole label layout (tpad's default) */
	bool code;			/* --code: the bare QR code, not the whole label */
	bool print;			/* --print: print on the station's default printer */
	const char *printer;		/* --printer */
	int copies;			/* --copies; 0: not given */
	const char *to, *config, *tpad; /* store copy */
	int argc;
	char **argv;
};

/* Connect to path (NULL: the default of sock); on failure prints what to do, returns < 0. */
int ctl_connect(struct ctl *c, const char *path, enum ctl_socket sock);
/* The same to a socket of daemon ("tpad" or "tpas"), whom the messages name. */
int ctl_connect_to(struct ctl *c, const char *path, enum ctl_socket sock, const char *daemon);

/* Print the hint line for a connection to daemon's path that failed with errno e. */
void ctl_connect_hint(int e, enum ctl_socket sock, const char *path, const char *daemon);
void ctl_close(struct ctl *c);
/* One line per upstream session of a Status (tpad's cloud, tpas's LRC), last error and all. */
void ctl_print_sessions(json_t *sessions);

/*
 * Send one call; params is stolen. Returns 0 and sets *ret_reply on a reply (error or
 * not; the caller owns it), or a negative errno after printing why the link failed.
 */
int ctl_send(struct ctl *c, const char *method, json_t *params, bool more);
int ctl_recv(struct ctl *c, json_t **ret_reply);

/* Call and wait for the one reply: 0 with *ret_params (owned), 1 after printing an error
 * reply, 2 (CTL_EXIT_USAGE) after saying that the method lives on the other socket, or a
 * negative errno after printing a link failure. */
int ctl_call(struct ctl *c, const char *method, json_t *params, bool json_out, json_t **ret_params);

/*
 * If reply is MethodNotFound for an io.tpad method, say why and return the exit status:
 * CTL_EXIT_USAGE when the client chose the other socket (naming the one to use), 1 when
 * the socket offers the method's interface but its tpad is older than tpactl (asked by
 * GetInfo on c). 0 for any other reply.
 */
int ctl_wrong_socket(struct ctl *c, const char *method, json_t *reply);

/* Print an error reply as a human sentence on stderr, and its hint. */
void ctl_print_error(json_t *reply);
/* The line of advice tpactl has for error (a varlink error name), if any, on stderr. */
void ctl_print_error_hint(const char *error);

/*
 * Write len bytes to path, created mode 0644. atomic: through a temporary file renamed
 * into place, so readers never see a part. 0 or a negative errno.
 */
int ctl_write_file(const char *path, const void *data, size_t len, bool atomic);

/*
 * The qr options object of a call from --scale/--margin/--ec-level, with format if not
 * NULL; NULL when there is nothing to say.
 */
json_t *ctl_qr_options(const struct ctl_args *a, const char *format);

/* True if stdout is a terminal and NO_COLOR is unset or empty (https://no-color.org). */
bool ctl_color(void);
/* Read a whole file into a new NUL-terminated buffer (NUL not counted); -errno. */
int ctl_read_file(const char *path, char **ret, size_t *ret_len);

/* Print one JSON value on one line to stdout. */
void ctl_print_json(json_t *v);

/*
 * Read, verify and map the manifest of a->manifest (signer, TKM prefix and DevEUI
 * attribute from the options or else from tpad's Status) into a new array of *ret_n rows
 * of row_size bytes filled by ctl_import_row_set(). 0, or the exit status after printing
 * every bad entry by index and uniqueId (nothing is to be sent then).
 */
int ctl_manifest_rows(struct ctl *c, struct ctl_args *a, void **ret_rows, size_t *ret_n,
		      size_t row_size);
void ctl_import_row_set(void *rows, size_t i, unsigned line, const char *dev_eui,
			const char *tkm_info);

/* Commands; each returns the exit status. */
int ctl_status(struct ctl *c, struct ctl_args *a);
int ctl_metrics(struct ctl *c, struct ctl_args *a);
int ctl_activate(struct ctl *c, struct ctl_args *a);
int ctl_lookup(struct ctl *c, struct ctl_args *a);
int ctl_import(struct ctl *c, struct ctl_args *a);
int ctl_export(struct ctl *c, struct ctl_args *a);
int ctl_devices(struct ctl *c, struct ctl_args *a);
int ctl_device(struct ctl *c, struct ctl_args *a);
int ctl_backup(struct ctl *c, struct ctl_args *a);
int ctl_top(struct ctl *c, struct ctl_args *a);
int ctl_retire(struct ctl *c, struct ctl_args *a);
int ctl_keygen_rsa(struct ctl *c, struct ctl_args *a);
int ctl_store(struct ctl *c, struct ctl_args *a);
int ctl_adopt(struct ctl *c, struct ctl_args *a);
int ctl_print(struct ctl *c, struct ctl_args *a);

/* The print object of a station call from --print, --printer and --copies, or NULL. */
json_t *ctl_print_options(const struct ctl_args *a);

/* The printers of a Status reply, one line each. */
void ctl_print_printers(json_t *printers);

/* "tpactl ... as COMMAND ...": the tpas commands, parsing the whole command line. */
int ctl_as_main(int argc, char **argv);

/*
 * text as a whole number from 0 to max, digits only (no sign, no space: strtoll would
 * take " 1" and "+1"): 0, or -EINVAL.
 */
int ctl_whole_number(const char *text, long long max, long long *ret);

/* How far name is from command for "did you mean": an abbreviation of it counts as 1. */
size_t ctl_command_distance(const char *name, const char *command);

/* The long option of opts closest to bad ("--folow"), if close enough to be a typo. */
struct option;
const char *ctl_closest_option(const struct option *opts, const char *bad);

/*
 * The index in argv of the first long option that is not one of opts as written, or 0.
 * Long options are never abbreviated: getopt would read --generate-appkey (a typo of
 * activate's --generate-app-key) as import's --generate-appkeys and blame the wrong one.
 */
int ctl_unabbreviated(int argc, char **argv, const struct option *opts);
