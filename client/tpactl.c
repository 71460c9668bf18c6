/* tpactl: the command-line client of tpad for test stations and line admins. */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctl.h"
#include "tpad-build.h"

/* Exit statuses, relied on by station scripts. */
#define EXIT_OK 0
#define EXIT_REPLY 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

static void usage(FILE *f)
{
	fprintf(f, "Usage: tpactl [--socket PATH] [--json] COMMAND [OPTIONS]\n"
		   "\n"
		   "Station commands (default socket " TPAD_RUNDIR "/station.sock):\n"
		   "  activate --dev-eui EUI [--join-eui EUI] (--tkm-info HEX | --app-key HEX |\n"
		   "           --generate-app-key) [--serial S] [--profile-id ID]\n"
		   "           [--format png|svg|zpl|text|none] [-o FILE]\n"
		   "  lookup --dev-eui EUI [--format ...] [-o FILE]\n"
		   "\n"
		   "Admin commands (default socket " TPAD_RUNDIR "/admin.sock):\n"
		   "  status                      health of tpad, the cloud link and the store\n"
		   "  import FILE.csv [--generate-appkeys] [--concurrency N] [--failures FILE]\n"
		   "  export --format png|svg|zpl|csv --out DIR [--state STATE] [--scale N]\n"
		   "         [--margin N] [--ec-level L|M|Q|H]\n"
		   "  devices [--state STATE] [--limit N]\n"
		   "  device EUI\n"
		   "  metrics [--format openmetrics|prometheus]   the metrics text\n"
		   "\n"
		   "Options (before or after the command):\n"
		   "  --socket PATH   socket to use instead of the default\n"
		   "  --json          print the raw JSON replies (one per line)\n"
		   "  -h, --help      show this help;  --version  show the version\n"
		   "\n"
		   "Exit status: 0 ok, 1 error reply, 2 usage, 3 cannot connect.\n");
}

/* Print a usage error and return the usage exit status. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("tpactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'tpactl --help'.\n", stderr);
	return EXIT_USAGE;
}

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
};

/* Which options each command takes (bit set by enum opt_id - OPT_DEV_EUI). */
#define BIT(o) (1u << ((o)-OPT_DEV_EUI))
#define QR_BITS (BIT(OPT_FORMAT) | BIT(OPT_SCALE) | BIT(OPT_MARGIN) | BIT(OPT_EC_LEVEL))

struct command {
	const char *name;
	int (*run)(struct ctl *c, struct ctl_args *a);
	enum ctl_socket sock;
	unsigned opts;
	bool has_output; /* takes -o */
	int min_args, max_args;
};

static const struct command commands[] = {
    {"status", ctl_status, CTL_ADMIN, 0, false, 0, 0},
    {"metrics", ctl_metrics, CTL_ADMIN, BIT(OPT_FORMAT), false, 0, 0},
    {"activate", ctl_activate, CTL_STATION,
     BIT(OPT_DEV_EUI) | BIT(OPT_JOIN_EUI) | BIT(OPT_TKM_INFO) | BIT(OPT_APP_KEY) |
	 BIT(OPT_GENERATE_APP_KEY) | BIT(OPT_SERIAL) | BIT(OPT_PROFILE_ID) | QR_BITS,
     true, 0, 0},
    {"lookup", ctl_lookup, CTL_STATION, BIT(OPT_DEV_EUI) | QR_BITS, true, 0, 0},
    {"import", ctl_import, CTL_ADMIN,
     BIT(OPT_GENERATE_APPKEYS) | BIT(OPT_CONCURRENCY) | BIT(OPT_FAILURES), false, 1, 1},
    {"export", ctl_export, CTL_ADMIN, BIT(OPT_OUT) | BIT(OPT_STATE) | QR_BITS, false, 0, 0},
    {"devices", ctl_devices, CTL_ADMIN, BIT(OPT_STATE) | BIT(OPT_LIMIT), false, 0, 0},
    {"device", ctl_device, CTL_ADMIN, 0, false, 1, 1},
};

/* The long name of option id o. */
static const char *opt_name(const struct option *opts, int o)
{
	for (; opts->name; opts++)
		if (opts->val == o)
			return opts->name;
	return "?";
}

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
	    {"generate-appkeys", no_argument, NULL, OPT_GENERATE_APPKEYS},
	    {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
	    {"failures", required_argument, NULL, OPT_FAILURES},
	    {"out", required_argument, NULL, OPT_OUT},
	    {"state", required_argument, NULL, OPT_STATE},
	    {"limit", required_argument, NULL, OPT_LIMIT},
	    {"output", required_argument, NULL, 'o'},
	    {0},
	};
	struct ctl_args a = {0};
	unsigned used = 0;
	bool used_o = false;
	const char *socket_path = NULL;
	int o;

	while ((o = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
		if (o >= OPT_DEV_EUI)
			used |= BIT(o);
		switch (o) {
		case 'h':
			usage(stdout);
			return EXIT_OK;
		case OPT_VERSION:
			printf("tpactl %s\n", TPAD_VERSION);
			return EXIT_OK;
		case OPT_SOCKET:
			socket_path = optarg;
			break;
		case OPT_JSON:
			a.json = true;
			break;
		case 'o':
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
			a.app_key = optarg;
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
		case OPT_LIMIT: {
			char *end;
			errno = 0;
			long v = strtol(optarg, &end, 10);
			if (!*optarg || *end || errno || v < 0 || v > 1000000)
				return usage_error("--%s needs a whole number, not '%s'",
						   opt_name(opts, o), optarg);
			if (o == OPT_SCALE)
				a.scale = (int)v;
			else if (o == OPT_MARGIN)
				a.margin = (int)v;
			else if (o == OPT_CONCURRENCY)
				a.concurrency = (int)v;
			else
				a.limit = (int)v;
			if (o == OPT_MARGIN)
				a.margin_set = true;
			break;
		}
		case OPT_EC_LEVEL:
			a.ec_level = optarg;
			break;
		case OPT_GENERATE_APPKEYS:
			a.generate_appkeys = true;
			break;
		case OPT_FAILURES:
			a.failures = optarg;
			break;
		case OPT_OUT:
			a.out_dir = optarg;
			break;
		case OPT_STATE:
			a.state = optarg;
			break;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc)
		return usage_error("no command given");
	const char *name = argv[optind++];
	const struct command *cmd = NULL;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			cmd = &commands[i];
	if (!cmd)
		return usage_error("unknown command '%s'", name);
	if (used & ~cmd->opts) {
		for (const struct option *p = opts; p->name; p++)
			if (p->val >= OPT_DEV_EUI && (used & ~cmd->opts & BIT(p->val)))
				return usage_error("%s does not take --%s", name, p->name);
	}
	if (used_o && !cmd->has_output)
		return usage_error("%s does not take -o", name);
	a.argc = argc - optind;
	a.argv = argv + optind;
	if (a.argc < cmd->min_args || a.argc > cmd->max_args)
		return usage_error("%s takes %d argument%s", name, cmd->max_args,
				   cmd->max_args == 1 ? "" : "s");

	struct ctl c;
	int r = ctl_connect(&c, socket_path, cmd->sock);
	if (r < 0)
		return EXIT_CONNECT;
	r = cmd->run(&c, &a);
	ctl_close(&c);
	return r;
}
