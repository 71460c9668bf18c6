/* tpactl: the command-line client of tpad for test stations and line admins. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "ctl.h"
#include "hex.h"
#include "message.h"
#include "utf8.h"
#include "tpad-build.h"
#include "words.h"

enum opt_id {
	OPT_SOCKET = 256,
	OPT_JSON,
	OPT_VERSION,
	OPT_DEV_EUI,
	OPT_JOIN_EUI,
	OPT_TKM_INFO,
	OPT_APP_KEY,
	OPT_GENERATE_APP_KEY,
	OPT_SERIAL,
	OPT_PROFILE_ID,
	OPT_FORMAT,
	OPT_GENERATE_APPKEYS,
	OPT_CONCURRENCY,
	OPT_FAILURES,
	OPT_OUT,
	OPT_STATE,
	OPT_LIMIT,
	OPT_SCALE,
	OPT_MARGIN,
	OPT_EC_LEVEL,
	OPT_INVERT,
	OPT_IGNORE_UNKNOWN,
	OPT_INTERVAL,
	OPT_MANIFEST,
	OPT_SIGNER,
	OPT_DEV_EUI_MAP,
	OPT_REASON,
	OPT_BITS,
	OPT_PRINT,
	OPT_PRINTER,
	OPT_COPIES,
	OPT_LABEL,
	OPT_CODE,
	OPT_TO,
	OPT_CONFIG,
	OPT_TPAD,
	OPT_AFTER,
};

/* Which options each command takes (bit set by enum opt_id - OPT_DEV_EUI). */
#define BIT(o) (UINT64_C(1) << ((o)-OPT_DEV_EUI))
#define QR_BITS                                                                                    \
	(BIT(OPT_FORMAT) | BIT(OPT_SCALE) | BIT(OPT_MARGIN) | BIT(OPT_EC_LEVEL) | BIT(OPT_LABEL) |      \
	 BIT(OPT_CODE))
#define PRINT_BITS (BIT(OPT_PRINT) | BIT(OPT_PRINTER) | BIT(OPT_COPIES))

static const char *const label_formats[] = {"png", "svg", "zpl", "pdf", "text", "none", NULL};
static const char *const export_formats[] = {"png", "svg", "zpl", "pdf", "csv", NULL};
static const char *const metrics_formats[] = {"openmetrics", "prometheus", NULL};
static const char *const states[] = {"PENDING", "ISSUED", "FAILED", "FOREIGN", "RETIRED", NULL};
static const char *const ec_levels[] = {"L", "M", "Q", "H", NULL};

#define PRINT_HELP                                                                                 \
	"  --print            print the label too, on this station's printer or print.default\n" \
	"  --printer NAME     print it on the printer NAME (implies --print)\n"                   \
	"  --copies N         copies of the label, 1 to 100 (implies --print)\n"

#define QR_HELP                                                                                    \
	"  --format FORMAT    label format: png, svg, zpl, pdf, text or none (default: from\n"     \
	"                     -o's extension, else none); text is drawn on the terminal\n"         \
	"  -o, --output FILE  write the label to FILE\n"                                           \
	"  --code             the bare QR code instead of the whole label (PNG, SVG)\n"            \
	"  --label            the whole label, captions included (the default unless\n"            \
	"                     label.images = code)\n"                                              \
	"  --scale N          pixels per module of the bare code, 1 to 20\n"                       \
	"  --margin N         quiet zone of the bare code in modules, 0 to 16\n"                   \
	"  --ec-level L|M|Q|H error correction level (default: qr.ec-level)\n"                     \
	"  --invert           draw a text label for a dark terminal (light modules as blocks);\n"  \
	"                     the default draws dark modules as blocks, for light backgrounds\n"

struct command {
	const char *name;
	int (*run)(struct ctl *c, struct ctl_args *a);
	enum ctl_socket sock;
	uint64_t opts;
	bool has_output; /* takes -o */
	int min_args, max_args;
	const char *synopsis; /* after "tpactl NAME" */
	const char *summary;  /* one line for the command list */
	const char *help;     /* the command's options */
};

static const struct command commands[] = {
    {"activate", ctl_activate, CTL_STATION,
     BIT(OPT_DEV_EUI) | BIT(OPT_JOIN_EUI) | BIT(OPT_TKM_INFO) | BIT(OPT_APP_KEY) |
	 BIT(OPT_GENERATE_APP_KEY) | BIT(OPT_SERIAL) | BIT(OPT_PROFILE_ID) | QR_BITS | PRINT_BITS |
	 BIT(OPT_INVERT),
     true, 0, 0,
     "--dev-eui EUI [--tkm-info HEX | --app-key HEX | --generate-app-key]\n"
     "                [--join-eui EUI] [--serial S] [--profile-id ID] [LABEL OPTIONS]",
     "get a device's ownerToken (and AppKey) from the cloud, or from the store",
     "  --dev-eui EUI       the device's DevEUI, 16 hex digits (required)\n"
     "  --tkm-info HEX      the Secure Element's TKM_INFO, 20 hex digits\n"
     "  --app-key HEX       the device's AppKey, 32 hex digits (devices without SE)\n"
     "  --generate-app-key  let tpad generate the AppKey (devices without SE)\n"
     "  --join-eui EUI      JoinEUI (default: device.join-eui)\n"
     "  --serial S          serial number printed in the label\n"
     "  --profile-id ID     ProfileID, 8 hex digits (default: qr.profile-id)\n" QR_HELP PRINT_HELP},
    {"lookup", ctl_lookup, CTL_STATION, BIT(OPT_DEV_EUI) | QR_BITS | PRINT_BITS | BIT(OPT_INVERT),
     true, 0, 0, "--dev-eui EUI [LABEL OPTIONS]",
     "show a stored device and its label (offline mode)",
     "  --dev-eui EUI       the device's DevEUI, 16 hex digits (required)\n" QR_HELP PRINT_HELP},
    {"status", ctl_status, CTL_ADMIN, 0, false, 0, 0, "",
     "health of tpad, the cloud link, the store and printers (exit 4-7 when unhealthy)",
     "  Exit status 0 when healthy, 4 when no session to the cloud is ready, 5 when the\n"
     "  circuit breaker is open, 6 when the store is failing (a transaction rolled back\n"
     "  and none committed since) or its database cannot be reached now, 7 when a label\n"
     "  printer is not ready (stopped, paper out, unreachable).\n"},
    {"import", ctl_import, CTL_ADMIN,
     BIT(OPT_GENERATE_APPKEYS) | BIT(OPT_CONCURRENCY) | BIT(OPT_FAILURES) |
	 BIT(OPT_IGNORE_UNKNOWN) | BIT(OPT_MANIFEST) | BIT(OPT_SIGNER) | BIT(OPT_DEV_EUI_MAP),
     false, 0, 1,
     "FILE.csv [--generate-appkeys] [--concurrency N] [--failures FILE]\n"
     "                [--ignore-unknown-columns]\n"
     "       tpactl import --manifest FILE.json [--signer CERT.pem] [--dev-eui-map CSV]\n"
     "                [--concurrency N] [--failures FILE]",
     "import device records into the store and get their ownerTokens",
     "  FILE.csv                   columns devEUI, joinEUI, tkmInfo, appKey, serial,\n"
     "                             profileId (header line required; ',' or ';' separated)\n"
     "  --generate-appkeys         generate AppKeys for rows with neither key\n"
     "  --concurrency N            requests in flight to the cloud, 1 to 1024\n"
     "  --failures FILE            where to write the failed rows (default FILE.failures.csv)\n"
     "  --ignore-unknown-columns   skip columns tpad does not know instead of refusing\n"
     "  --manifest FILE.json       a signed manifest of devices instead of a CSV file\n"
     "  --signer CERT.pem          the manifest signer's certificate\n"
     "  --dev-eui-map CSV          DevEUIs for the manifest's devices\n"},
    {"retire", ctl_retire, CTL_ADMIN, BIT(OPT_REASON), false, 1, 1, "EUI --reason TEXT",
     "delete a scrapped device in the cloud",
     "  EUI                 the DevEUI of an ISSUED device\n"
     "  --reason TEXT       why (kept in the audit trail)\n"},
    {"keygen-rsa", ctl_keygen_rsa, CTL_NONE, BIT(OPT_BITS), false, 1, 1, "FILE [--bits N]",
     "new RSA key pair for cloud-HSM AppKeys (local, no tpad needed)",
     "  FILE                where the private key goes\n"
     "  --bits N            key size: 2048, 3072 (default) or 4096\n"},
    {"export", ctl_export, CTL_ADMIN, BIT(OPT_OUT) | BIT(OPT_STATE) | QR_BITS, false, 0, 0,
     "--format png|svg|zpl|pdf|csv --out DIR [--state STATE] [--code | --label]\n"
     "                [--scale N] [--margin N] [--ec-level L|M|Q|H]",
     "write the labels of stored devices into a directory",
     "  --format FORMAT     png, svg, zpl, pdf or csv (required)\n"
     "  --out DIR           the directory (created if needed; index.csv inside)\n"
     "  --state STATE       only PENDING, ISSUED, FAILED, FOREIGN or RETIRED devices\n"
     "  --code              the bare QR code instead of the whole label (PNG, SVG)\n"
     "  --label             the whole label (the default unless label.images = code)\n"
     "  --scale N, --margin N, --ec-level L|M|Q|H   as for activate\n"},
    {"devices", ctl_devices, CTL_ADMIN, BIT(OPT_STATE) | BIT(OPT_LIMIT), false, 0, 0,
     "[--state STATE] [--limit N]", "list stored devices",
     "  --state STATE       only PENDING, ISSUED, FAILED, FOREIGN or RETIRED devices\n"
     "  --limit N           at most N devices (0, the default: all)\n"},
    {"device", ctl_device, CTL_ADMIN, 0, false, 1, 1, "EUI",
     "show one stored device and its audit trail", "  EUI                 the DevEUI\n"},
    {"adopt", ctl_adopt, CTL_ADMIN, 0, false, 1, 1, "EUI",
     "take a FOREIGN device's token from the cloud",
     "  EUI                 the DevEUI of a device the store holds as FOREIGN (imported\n"
     "                      by someone else, or by an attempt tpad cannot vouch for)\n"},
    {"print", ctl_print, CTL_ADMIN,
     BIT(OPT_STATE) | BIT(OPT_PRINTER) | BIT(OPT_COPIES) | BIT(OPT_AFTER) | BIT(OPT_LIMIT), false,
     0, 1, "EUI | --state STATE [--after EUI] [--limit N] [--printer NAME] [--copies N]",
     "print (reprint) labels, a batch as one job",
     "  EUI                 the device to print\n"
     "  --state STATE       every device in this state instead (e.g. ISSUED)\n"
     "  --after EUI         a batch's devices after this DevEUI only (DevEUI order)\n"
     "  --limit N           at most N labels of the batch, 1 to 10000; a batch of\n"
     "                      more than 10000 needs it: print it in parts, each with\n"
     "                      --after the last DevEUI the previous part printed\n"
     "  --printer NAME      the printer (default print.default)\n"
     "  --copies N          copies of each label, 1 to 100\n"},
    {"backup", ctl_backup, CTL_ADMIN, 0, false, 1, 1, "FILE",
     "copy the store into FILE while tpad serves (SQLite online backup)",
     "  FILE                where the copy goes; tpad writes it (mode 0600, owned by\n"
     "                      tpad's user), so its directory must be writable by tpad,\n"
     "                      e.g. /var/lib/tpad/backups (install -d -o tpad -m 0700\n"
     "                      /var/lib/tpad/backups); not /tmp, private to tpad's\n"
     "                      unit. The copy is checked with PRAGMA integrity_check\n"
     "                      before it replaces FILE.\n"},
    {"store", ctl_store, CTL_NONE, BIT(OPT_TO) | BIT(OPT_CONFIG) | BIT(OPT_TPAD), false, 1, 2,
     "copy --to URL | restore FILE [--config FILE] [--tpad PATH]",
     "with tpad stopped: move a SQLite store into PostgreSQL, or put it back from a copy",
     "  copy                copy every device, attempt, label and audit entry of the\n"
     "                      SQLite store (store.path) into the database (runs tpad\n"
     "                      --copy-store); a re-run resumes; a conflict exits 1\n"
     "  restore FILE        put the SQLite store back from FILE, a tpactl backup copy\n"
     "                      (runs tpad --restore-store): checked with the store key,\n"
     "                      the store it replaces kept as store.path.before-restore-TIME\n"
     "  --to URL            the PostgreSQL database: a URI (e.g. postgresql://tpad@db/\n"
     "                      tpad?sslmode=verify-full) or libpq keyword=value pairs; the\n"
     "                      password as for tpad (store-password)\n"
     "  --config FILE       tpad's configuration (default: tpad's, " TPAD_SYSCONFDIR
     "/tpad/tpad.conf)\n"
     "  --tpad PATH         the tpad program (default " TPAD_SBINDIR "/tpad)\n"},
    {"top", ctl_top, CTL_ADMIN, BIT(OPT_INTERVAL), false, 0, 0, "[--interval SECONDS]",
     "a live view for the line's screen, redrawn in place (q quits)",
     "  --interval SECONDS  time between refreshes, 0.1 to 60 (default 1)\n"
     "  Shows activations per second, upstream latency p50/p99, errors by name (with\n"
     "  what changed since the last refresh), the cloud sessions and breaker, the\n"
     "  queue, the store and printers. Needs a terminal; q or Ctrl-C quits.\n"},
    {"metrics", ctl_metrics, CTL_ADMIN, BIT(OPT_FORMAT), false, 0, 0,
     "[--format openmetrics|prometheus]", "print the metrics text",
     "  --format FORMAT     openmetrics (default) or prometheus (node_exporter's\n"
     "                      textfile collector)\n"},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *command_find(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "Usage: tpactl [--socket PATH] [--json] COMMAND [OPTIONS]\n"
		   "       tpactl help [COMMAND]\n"
		   "\n"
		   "Station commands (socket $TPAD_STATION_SOCKET, default " TPAD_RUNDIR
		   "/station.sock):\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (commands[i].sock == CTL_STATION)
			fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nAdmin commands (socket $TPAD_ADMIN_SOCKET, default " TPAD_RUNDIR
		   "/admin.sock):\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (commands[i].sock == CTL_ADMIN)
			fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nLocal commands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (commands[i].sock == CTL_NONE)
			fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\ntpas commands (socket " TPAS_RUNDIR "/admin.sock; tpactl as --help):\n"
		   "  as         keygen, import-astk, astks, uplinks, send, status\n");
	fprintf(f, "\n"
		   "Options (before or after the command):\n"
		   "  --socket PATH   socket to use instead of the default\n"
		   "  --json          print the raw JSON replies (one per line)\n"
		   "  -h, --help      show this help, or a command's with COMMAND --help\n"
		   "  --version       show the version\n"
		   "\n"
		   "Run 'tpactl help COMMAND' for a command's options.\n"
		   "\n"
		   "Exit status: 0 ok, 1 error reply, 2 usage, 3 cannot connect,\n"
		   "  4 cloud (as status: LRC) down, 5 its breaker open (status, as status),\n"
		   "  6 store failing or unreachable (status; as status: the journal failing),\n"
		   "  7 a label printer not ready (status),\n"
		   "  130 interrupted by Ctrl-C.\n");
}

static void command_usage(const struct command *cmd, FILE *f)
{
	fprintf(f, "Usage: tpactl %s%s%s\n\n%s.\n\n", cmd->name, *cmd->synopsis ? " " : "",
		cmd->synopsis, cmd->summary);
	fputs(cmd->help, f);
	if (cmd->sock == CTL_NONE)
		return;
	fprintf(f,
		"\nCommon options: --socket PATH (default $%s or " TPAD_RUNDIR "/%s.sock), "
		"--json.\n",
		cmd->sock == CTL_STATION ? "TPAD_STATION_SOCKET" : "TPAD_ADMIN_SOCKET",
		cmd->sock == CTL_STATION ? "station" : "admin");
}

/* Print a usage error with one hint line and return the usage exit status. */
__attribute__((format(printf, 2, 3))) static int usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	fputs("tpactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "\nTry 'tpactl help %s'.\n", cmd);
	else
		fputs("\nTry 'tpactl help'.\n", stderr);
	return CTL_EXIT_USAGE;
}

/*
 * A DevEUI given the other way than cmd takes it: lookup and activate take --dev-eui EUI,
 * device, adopt, retire and print the EUI alone. The hint line says how to give it.
 */
static int dev_eui_misplaced(const char *cmd, const char *why, bool as_option, const char *eui)
{
	if (as_option)
		fprintf(stderr, "tpactl: %s\nGive the DevEUI as --dev-eui %s (tpactl help %s).\n",
			why, eui, cmd);
	else
		fprintf(stderr,
			"tpactl: %s\nGive the DevEUI alone, without --dev-eui: tpactl %s %s "
			"(tpactl help %s).\n",
			why, cmd, eui, cmd);
	return CTL_EXIT_USAGE;
}

/* The command closest to name, if close enough to be a typo or an abbreviation. */
static const char *suggest_command(const char *name)
{
	const char *best = NULL;
	size_t bd = 3;
	for (size_t i = 0; i < N_COMMANDS; i++) {
		size_t d = ctl_command_distance(name, commands[i].name);
		if (d < bd) {
			bd = d;
			best = commands[i].name;
		}
	}
	if (!best && words_distance(name, "help") < 2)
		best = "help";
	return best;
}

int ctl_whole_number(const char *text, long long max, long long *ret)
{
	if (!isdigit((unsigned char)text[0]))
		return -EINVAL;
	char *end;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (*end || errno || v > max)
		return -EINVAL;
	*ret = v;
	return 0;
}

size_t ctl_command_distance(const char *name, const char *command)
{
	size_t n = strlen(name);
	return n >= 2 && strncmp(command, name, n) == 0 ? 1 : words_distance(name, command);
}

int ctl_unabbreviated(int argc, char **argv, const struct option *opts)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strncmp(argv[i], "--", 2) != 0)
			continue;
		size_t n = strcspn(argv[i] + 2, "=");
		const struct option *match = NULL;
		for (const struct option *op = opts; op->name && !match; op++)
			if (strlen(op->name) == n && strncmp(op->name, argv[i] + 2, n) == 0)
				match = op;
		if (!match)
			return i;
		if (match->has_arg == required_argument && !argv[i][2 + n])
			i++; /* its value, whatever it looks like */
	}
	return 0;
}

const char *ctl_closest_option(const struct option *opts, const char *bad)
{
	char name[64];
	snprintf(name, sizeof(name), "%s", bad[0] == '-' && bad[1] == '-' ? bad + 2 : bad);
	char *eq = strchr(name, '=');
	if (eq)
		*eq = '\0';
	const char *best = NULL;
	size_t bd = 3;
	for (const struct option *p = opts; p->name; p++) {
		size_t d = ctl_command_distance(name, p->name); /* --fol: --follow */
		if (d < bd) {
			bd = d;
			best = p->name;
		}
	}
	return best;
}

/* An unknown long option: named, with the closest one when there is one. */
static int unknown_option(const struct option *opts, const char *bad, const char *hint_cmd)
{
	const char *best = ctl_closest_option(opts, bad);
	if (!best)
		return usage_error(hint_cmd, "unknown option '%s'", bad);
	fprintf(stderr, "tpactl: unknown option '%s'\n", bad);
	fprintf(stderr, "Did you mean '--%s'? (tpactl help%s%s)\n", best, hint_cmd ? " " : "",
		hint_cmd ? hint_cmd : "");
	return CTL_EXIT_USAGE;
}

static int unknown_command(const char *name)
{
	const char *s = suggest_command(name);
	fprintf(stderr, "tpactl: unknown command '%s'\n", name);
	if (s)
		fprintf(stderr, "Did you mean 'tpactl %s'? (tpactl help lists the commands)\n", s);
	else
		fputs("Try 'tpactl help' for the list of commands.\n", stderr);
	return CTL_EXIT_USAGE;
}

/* The long name of option id o. */
static const char *opt_name(const struct option *opts, int o)
{
	for (; opts->name; opts++)
		if (opts->val == o)
			return opts->name;
	return "?";
}

/* Check value against a NULL-terminated list (case-insensitive); usage error if not in it. */
static bool one_of(const char *v, const char *const *list)
{
	for (; *list; list++)
		if (strcasecmp(v, *list) == 0)
			return true;
	return false;
}

static void join(char *buf, size_t len, const char *const *list)
{
	buf[0] = '\0';
	for (size_t i = 0; list[i]; i++)
		snprintf(buf + strlen(buf), len - strlen(buf), "%s%s",
			 i == 0 ? "" : (list[i + 1] ? ", " : " or "), list[i]);
}

/* Local checks of option values, so that a typo is a usage error before any call. */
static int check_values(const struct command *cmd, const struct ctl_args *a)
{
	char list[128];
	static const struct {
		const char *opt;
		size_t digits;
	} hexes[] = {{"dev-eui", HEX_EUI},
		     {"join-eui", HEX_EUI},
		     {"tkm-info", HEX_TKM_INFO},
		     {"app-key", HEX_APP_KEY},
		     {"profile-id", HEX_PROFILE}};
	/* The commands whose argument is a DevEUI: checked here, as --dev-eui is. */
	static const char *const eui_commands[] = {"device", "adopt", "retire", "print"};
	for (size_t i = 0; i < sizeof(eui_commands) / sizeof(eui_commands[0]); i++)
		if (strcmp(cmd->name, eui_commands[i]) == 0 && a->argc > 0 &&
		    !hex_valid(a->argv[0], HEX_EUI))
			return usage_error(cmd->name, "EUI must be 16 hexadecimal digits, not '%s'",
					   a->argv[0]);
	const char *vals[] = {a->dev_eui, a->join_eui, a->tkm_info, a->app_key, a->profile_id};
	for (size_t i = 0; i < 5; i++) {
		if (!vals[i] || hex_valid(vals[i], hexes[i].digits))
			continue;
		if (vals[i] == a->app_key) /* a secret: never echoed, even a mistyped one */
			return usage_error(cmd->name,
					   "--app-key must be %zu hexadecimal digits; it has %zu "
					   "characters (a key is not shown)",
					   hexes[i].digits, strlen(vals[i]));
		return usage_error(cmd->name, "--%s must be %zu hexadecimal digits, not '%s'",
				   hexes[i].opt, hexes[i].digits, vals[i]);
	}
	/* What goes to the daemon is JSON text: bytes that are not UTF-8 cannot be sent. */
	const struct {
		const char *opt, *v;
	} sent[] = {{"--serial", a->serial},
		    {"--reason", a->reason},
		    {"--printer", a->printer},
		    {"--after", a->after},
		    {"the path", strcmp(cmd->name, "backup") == 0 && a->argc ? a->argv[0] : NULL}};
	for (size_t i = 0; i < sizeof(sent) / sizeof(sent[0]); i++)
		if (sent[i].v && !utf8_valid(sent[i].v))
			return usage_error(cmd->name,
					   "%s is not UTF-8 text, which is all a call to tpad can "
					   "carry",
					   sent[i].opt);
	if (a->serial) { /* Activate and Lookup send it: checked by the protocol's rule */
		json_t *p =
		    json_pack("{s:s, s:s}", "devEUI", "0000000000000000", "serial", a->serial);
		struct proto_fault fault;
		const struct method_spec *m = proto_method_find("io.tpad.Station.Activate");
		int bad = p && m && proto_validate(m, p, &fault) < 0 &&
			  strcmp(fault.parameter, "serial") == 0;
		json_decref(p);
		if (bad)
			return usage_error(cmd->name, "--serial %s", fault.reason);
	}
	if (strcmp(cmd->name, "print") == 0 && !a->argc == !a->state)
		return usage_error(cmd->name, "print takes a DevEUI or --state STATE (a batch), %s",
				   a->argc ? "not both" : "one of them");
	bool station = cmd->sock == CTL_STATION;
	if (station && !a->dev_eui)
		return usage_error(cmd->name, "%s needs --dev-eui", cmd->name);
	if (station && !!a->tkm_info + !!a->app_key + !!a->generate_app_key > 1)
		return usage_error(cmd->name, "give at most one of --tkm-info, --app-key and "
					      "--generate-app-key");
	if (a->state && !one_of(a->state, states)) {
		join(list, sizeof(list), states);
		return usage_error(cmd->name, "--state must be %s, not '%s'", list, a->state);
	}
	if (a->ec_level && !one_of(a->ec_level, ec_levels)) {
		join(list, sizeof(list), ec_levels);
		return usage_error(cmd->name, "--ec-level must be %s, not '%s'", list, a->ec_level);
	}
	if (a->label && a->code)
		return usage_error(cmd->name, "give only one of --label and --code");
	if (a->margin_set && a->margin > 16)
		return usage_error(cmd->name, "--margin must be 0 to 16");
	if (a->format) {
		const char *const *ok = strcmp(cmd->name, "export") == 0    ? export_formats
					: strcmp(cmd->name, "metrics") == 0 ? metrics_formats
									    : label_formats;
		if (!one_of(a->format, ok)) {
			join(list, sizeof(list), ok);
			return usage_error(cmd->name, "--format must be %s, not '%s'", list,
					   a->format);
		}
	}
	return 0;
}

/* --app-key's copy (its argument is overwritten); reachable until exit. */
static char *app_key;

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, OPT_SOCKET},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, OPT_VERSION},
	    {"dev-eui", required_argument, NULL, OPT_DEV_EUI},
	    {"join-eui", required_argument, NULL, OPT_JOIN_EUI},
	    {"tkm-info", required_argument, NULL, OPT_TKM_INFO},
	    {"app-key", required_argument, NULL, OPT_APP_KEY},
	    {"generate-app-key", no_argument, NULL, OPT_GENERATE_APP_KEY},
	    {"serial", required_argument, NULL, OPT_SERIAL},
	    {"profile-id", required_argument, NULL, OPT_PROFILE_ID},
	    {"format", required_argument, NULL, OPT_FORMAT},
	    {"scale", required_argument, NULL, OPT_SCALE},
	    {"margin", required_argument, NULL, OPT_MARGIN},
	    {"ec-level", required_argument, NULL, OPT_EC_LEVEL},
	    {"invert", no_argument, NULL, OPT_INVERT},
	    {"generate-appkeys", no_argument, NULL, OPT_GENERATE_APPKEYS},
	    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
	    {"failures", required_argument, NULL, OPT_FAILURES},
	    {"ignore-unknown-columns", no_argument, NULL, OPT_IGNORE_UNKNOWN},
	    {"out", required_argument, NULL, OPT_OUT},
	    {"state", required_argument, NULL, OPT_STATE},
	    {"limit", required_argument, NULL, OPT_LIMIT},
	    {"after", required_argument, NULL, OPT_AFTER},
	    {"interval", required_argument, NULL, OPT_INTERVAL},
	    {"print", no_argument, NULL, OPT_PRINT},
	    {"printer", required_argument, NULL, OPT_PRINTER},
	    {"copies", required_argument, NULL, OPT_COPIES},
	    {"label", no_argument, NULL, OPT_LABEL},
	    {"code", no_argument, NULL, OPT_CODE},
	    {"output", required_argument, NULL, 'o'},
	    {"manifest", required_argument, NULL, OPT_MANIFEST},
	    {"signer", required_argument, NULL, OPT_SIGNER},
	    {"dev-eui-map", required_argument, NULL, OPT_DEV_EUI_MAP},
	    {"reason", required_argument, NULL, OPT_REASON},
	    {"bits", required_argument, NULL, OPT_BITS},
	    {"to", required_argument, NULL, OPT_TO},
	    {"config", required_argument, NULL, OPT_CONFIG},
	    {"tpad", required_argument, NULL, OPT_TPAD},
	    {0},
	};
	/* The first word that is not an option picks tpas's commands ("as"). */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--socket") == 0) {
			i++;
			continue;
		}
		if (argv[i][0] == '-')
			continue;
		if (strcmp(argv[i], "as") == 0)
			return ctl_as_main(argc, argv);
		break;
	}
	struct ctl_args a = {0};
	uint64_t used = 0;
	bool used_o = false, help = false;
	const char *socket_path = NULL;
	int o;

	/* The command, if any, for hints in option errors: the first word that names one. */
	const char *hint_cmd = NULL;
	for (int i = 1; i < argc && !hint_cmd; i++)
		if (command_find(argv[i]))
			hint_cmd = argv[i];

	int unknown = ctl_unabbreviated(argc, argv, opts);
	if (unknown)
		return unknown_option(opts, argv[unknown], hint_cmd);
	opterr = 0;
	while ((o = getopt_long(argc, argv, ":ho:", opts, NULL)) != -1) {
		if (o >= OPT_DEV_EUI && o < OPT_DEV_EUI + 64) {
			/* Which one counts would be a guess (the DevEUI that gets a token...). */
			if ((used & BIT(o)) && optarg)
				return usage_error(hint_cmd, "--%s given twice: give it once",
						   opt_name(opts, o));
			used |= BIT(o);
		}
		switch (o) {
		case 'h':
			help = true;
			break;
		case OPT_VERSION:
			printf("tpactl %s\n", TPAD_VERSION);
			return CTL_EXIT_OK;
		case OPT_SOCKET:
			if (!*optarg)
				return usage_error(hint_cmd, "--socket needs a path, not \"\"");
			if (socket_path)
				return usage_error(hint_cmd, "--socket given twice: give it once");
			socket_path = optarg;
			break;
		case OPT_JSON:
			a.json = true;
			break;
		case 'o':
			if (used_o)
				return usage_error(hint_cmd, "-o given twice: give it once");
			a.output = optarg;
			used_o = true;
			break;
		case OPT_DEV_EUI:
			a.dev_eui = optarg;
			break;
		case OPT_JOIN_EUI:
			a.join_eui = optarg;
			break;
		case OPT_TKM_INFO:
			a.tkm_info = optarg;
			break;
		case OPT_APP_KEY:
			/* A secret: kept in a copy, and hidden from ps and /proc/PID/cmdline. */
			free(app_key);
			app_key = strdup(optarg);
			if (!app_key) {
				fprintf(stderr, "tpactl: out of memory\n");
				return CTL_EXIT_REPLY;
			}
			memset(optarg, '*', strlen(optarg));
			a.app_key = app_key;
			break;
		case OPT_GENERATE_APP_KEY:
			a.generate_app_key = true;
			break;
		case OPT_SERIAL:
			a.serial = optarg;
			break;
		case OPT_PROFILE_ID:
			a.profile_id = optarg;
			break;
		case OPT_FORMAT:
			a.format = optarg;
			break;
		case OPT_SCALE:
		case OPT_MARGIN:
		case OPT_CONCURRENCY:
		case OPT_COPIES:
		case OPT_LIMIT: {
			long long v;
			if (ctl_whole_number(optarg, 1000000, &v) < 0)
				return usage_error(hint_cmd, "--%s needs a whole number, not '%s'",
						   opt_name(opts, o), optarg);
			if (o == OPT_SCALE && (v < 1 || v > 20))
				return usage_error(hint_cmd, "--scale must be 1 to 20, not '%s'",
						   optarg);
			else if (o == OPT_SCALE)
				a.scale = (int)v;
			else if (o == OPT_MARGIN)
				a.margin = (int)v;
			else if (o == OPT_CONCURRENCY && v < 1)
				/* tpad checks the most (import.concurrency's range) */
				return usage_error(hint_cmd, "--concurrency must be at least 1");
			else if (o == OPT_CONCURRENCY)
				a.concurrency = (int)v;
			else if (o == OPT_COPIES && (v < 1 || v > 100))
				return usage_error(hint_cmd, "--copies must be between 1 and 100, not "
							     "'%s'",
						   optarg);
			else if (o == OPT_COPIES)
				a.copies = (int)v;
			else
				a.limit = (int)v;
			if (o == OPT_MARGIN)
				a.margin_set = true;
			break;
		}
		case OPT_EC_LEVEL:
			a.ec_level = optarg;
			break;
		case OPT_INVERT:
			a.invert = true;
			break;
		case OPT_GENERATE_APPKEYS:
			a.generate_appkeys = true;
			break;
		case OPT_FAILURES:
			a.failures = optarg;
			break;
		case OPT_INTERVAL: {
			char *end;
			errno = 0;
			double v = strtod(optarg, &end);
			if (!*optarg || *end || errno || v < 0.1 || v > 60)
				return usage_error(hint_cmd,
						   "--interval needs seconds from 0.1 to 60, "
						   "not '%s'",
						   optarg);
			a.interval_ms = (int)(v * 1000 + 0.5);
			break;
		}
		case OPT_IGNORE_UNKNOWN:
			a.ignore_unknown_columns = true;
			break;
		case OPT_OUT: {
			/* "labels/" names files labels/index.csv, not labels//index.csv */
			size_t n = strlen(optarg);
			while (n > 1 && optarg[n - 1] == '/')
				optarg[--n] = '\0';
			a.out_dir = optarg;
			break;
		}
		case OPT_STATE:
			a.state = optarg;
			break;
		case OPT_MANIFEST:
			a.manifest = optarg;
			break;
		case OPT_SIGNER:
			a.signer = optarg;
			break;
		case OPT_DEV_EUI_MAP:
			a.dev_eui_map = optarg;
			break;
		case OPT_REASON:
			a.reason = optarg;
			break;
		case OPT_AFTER:
			a.after = optarg;
			break;
		case OPT_BITS:
			a.bits = atoi(optarg);
			break;
		case OPT_PRINT:
			a.print = true;
			break;
		case OPT_LABEL:
			a.label = true;
			break;
		case OPT_CODE:
			a.code = true;
			break;
		case OPT_PRINTER:
			a.printer = optarg;
			break;
		case OPT_TO:
			a.to = optarg;
			break;
		case OPT_CONFIG:
			a.config = optarg;
			break;
		case OPT_TPAD:
			a.tpad = optarg;
			break;
		case ':':
			return usage_error(hint_cmd, "%s needs a value", argv[optind - 1]);
		default: {
			const char *bad = argv[optind - 1];
			if (optopt && optopt < 256 && bad[0] == '-' && bad[1] != '-')
				return usage_error(hint_cmd, "unknown option '-%c'", optopt);
			return unknown_option(opts, bad, hint_cmd);
		}
		}
	}
	if (optind >= argc) {
		if (help) {
			usage(stdout);
			return CTL_EXIT_OK;
		}
		return usage_error(NULL, "no command given");
	}
	const char *name = argv[optind++];
	if (strcmp(name, "help") == 0) {
		if (optind >= argc) {
			usage(stdout);
			return CTL_EXIT_OK;
		}
		if (strcmp(argv[optind], "as") == 0) { /* tpas's commands have their own help */
			char *as_help[] = {argv[0], "as", "--help", NULL, NULL};
			if (optind + 1 < argc) { /* help as COMMAND */
				as_help[2] = argv[optind + 1];
				as_help[3] = "--help";
			}
			return ctl_as_main(as_help[3] ? 4 : 3, as_help);
		}
		const struct command *hc = command_find(argv[optind]);
		if (!hc)
			return unknown_command(argv[optind]);
		command_usage(hc, stdout);
		return CTL_EXIT_OK;
	}
	const struct command *cmd = command_find(name);
	if (!cmd)
		return unknown_command(name);
	if (help) {
		command_usage(cmd, stdout);
		return CTL_EXIT_OK;
	}
	if ((used & ~cmd->opts & BIT(OPT_DEV_EUI)) && cmd->max_args == 1 && optind >= argc) {
		char why[64];
		snprintf(why, sizeof(why), "%s does not take --dev-eui", name);
		return dev_eui_misplaced(name, why, false, a.dev_eui);
	}
	if (used & ~cmd->opts) {
		for (const struct option *p = opts; p->name; p++)
			if (p->val >= OPT_DEV_EUI && (used & ~cmd->opts & BIT(p->val)))
				return usage_error(name, "%s does not take --%s", name, p->name);
	}
	if (used_o && !cmd->has_output)
		return usage_error(name, "%s does not take -o", name);
	a.argc = argc - optind;
	a.argv = argv + optind;
	if (a.argc < cmd->min_args || a.argc > cmd->max_args) {
		if (cmd->max_args == 0 && (cmd->opts & BIT(OPT_DEV_EUI)) && !a.dev_eui &&
		    a.argc == 1) {
			char why[128];
			snprintf(why, sizeof(why), "%s takes no arguments, not '%.40s'", name,
				 a.argv[0]);
			return dev_eui_misplaced(name, why, true, a.argv[0]);
		}
		if (cmd->max_args == 0)
			return usage_error(name, "%s takes no arguments, not '%s'", name,
					   a.argv[0]);
		return usage_error(name, "%s takes %d argument%s", name, cmd->max_args,
				   cmd->max_args == 1 ? "" : "s");
	}
	int r = check_values(cmd, &a);
	if (r)
		return r;
	if (cmd->sock == CTL_NONE)
		return cmd->run(NULL, &a);

	if (!socket_path)
		socket_path =
		    getenv(cmd->sock == CTL_STATION ? "TPAD_STATION_SOCKET" : "TPAD_ADMIN_SOCKET");
	if (socket_path && !*socket_path)
		socket_path = NULL;
	struct ctl c = {.fd = -1, .sock = cmd->sock};
	a.command = name;
	if (cmd->sock == CTL_STATION) {
		/* Station commands connect through libtpad-client themselves. */
		c.path = socket_path ? socket_path : TPAD_RUNDIR "/station.sock";
		return cmd->run(&c, &a);
	}
	r = ctl_connect(&c, socket_path, cmd->sock);
	if (r < 0)
		return CTL_EXIT_CONNECT;
	r = cmd->run(&c, &a);
	ctl_close(&c);
	return r;
}
