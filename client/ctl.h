/* ctl: tpactl's connection to tpad and its commands. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

struct frame_reader;

enum ctl_socket {
	CTL_STATION,
	CTL_ADMIN,
	CTL_NONE, /* a local command that does not talk to tpad */
};

struct ctl {
	int fd;
	const char *path;
	struct frame_reader *reader;
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
	const char *manifest, *signer, *dev_eui_map; /* import --manifest */
	const char *reason;			      /* retire */
	int bits;				      /* keygen-rsa */
	bool label;	     /* --label: the whole label layout, not the bare code */
	bool print;	     /* --print: print on the station's default printer */
	const char *printer; /* --printer */
	int copies;	     /* --copies; 0: not given */
	int argc;
	char **argv;
};

/* Connect to path (NULL: the default of sock); on failure prints what to do, returns < 0. */
int ctl_connect(struct ctl *c, const char *path, enum ctl_socket sock);
void ctl_close(struct ctl *c);

/*
 * Send one call; params is stolen. Returns 0 and sets *ret_reply on a reply (error or
 * not; the caller owns it), or a negative errno after printing why the link failed.
 */
int ctl_send(struct ctl *c, const char *method, json_t *params, bool more);
int ctl_recv(struct ctl *c, json_t **ret_reply);

/* Call and wait for the one reply: 0 with *ret_params (owned), 1 after printing an error
 * reply, or a negative errno after printing a link failure. */
int ctl_call(struct ctl *c, const char *method, json_t *params, bool json_out, json_t **ret_params);

/* Print an error reply as a human sentence on stderr. */
void ctl_print_error(json_t *reply);

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
int ctl_retire(struct ctl *c, struct ctl_args *a);
int ctl_keygen_rsa(struct ctl *c, struct ctl_args *a);
int ctl_adopt(struct ctl *c, struct ctl_args *a);
int ctl_print(struct ctl *c, struct ctl_args *a);

/* The print object of a station call from --print, --printer and --copies, or NULL. */
json_t *ctl_print_options(const struct ctl_args *a);

/* The printers of a Status reply, one line each. */
void ctl_print_printers(json_t *printers);

/* "tpactl ... as COMMAND ...": the tpas commands, parsing the whole command line. */
int ctl_as_main(int argc, char **argv);
