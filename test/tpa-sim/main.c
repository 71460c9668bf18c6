/* tpa-sim: a simulated ThingPark Activation server (TLS-PSK or plain HTTP) with fault injection. */
#include "sim.h"

#include "../../core/cred.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>
#include <mbedtls/platform_util.h>

#include "hex.h"

static const char usage_text[] =
    "usage: tpa-sim --listen 127.0.0.1:PORT [--port-file F] [--plain]\n"
    "               [--psk-identity ID --psk-file F | --cert PEM --key PEM [--client-ca PEM]]\n"
    "               [--control 127.0.0.1:PORT]\n"
    "               [--control-port-file F] [--registry FILE]\n"
    "               [--oauth2 --client-id X --client-secret-file F [--token-ttl S]]\n"
    "               [--latency-ms N] [--jitter-ms N] [--import-latency-ms N]\n"
    "               [--query-latency-ms N] [--rate-5xx P] [--rate-429 P]\n"
    "               [--retry-after S] [--reset-after N] [--drop-before-answer P]\n"
    "               [--drop-before-import P] [--idle-close-ms T] [--slow] [--malformed P]\n"
    "               [--refuse] [--duplicate 409|same|new] [--seed N] [--verbose]\n"
    "               [--dx-maker [--customer-id ID]]\n"
    "PORT 0 picks a free port. P is a probability between 0 and 1.\n"
    "Without --plain, TLS 1.1/1.2 with the PSK (hex in the file) and identity, or with the\n"
    "server certificate chain and key (--client-ca: a client certificate is required).\n";

/* Print the usage to stderr and exit with status 2. */
static void usage(const char *why)
{
	if (why)
		fprintf(stderr, "tpa-sim: %s\n", why);
	fputs(usage_text, stderr);
	exit(2);
}

/* Parse an unsigned integer option or exit with the usage. */
static unsigned opt_uint(const char *name, const char *v)
{
	char *end;
	errno = 0;
	unsigned long n = strtoul(v, &end, 10);
	if (errno || *end || end == v || v[0] == '-' || n > 86400000UL) {
		fprintf(stderr, "tpa-sim: --%s wants a non-negative integer\n", name);
		usage(NULL);
	}
	return (unsigned)n;
}

/* Parse a probability option or exit with the usage. */
static double opt_prob(const char *name, const char *v)
{
	char *end;
	errno = 0;
	double p = strtod(v, &end);
	if (errno || *end || end == v || !(p >= 0.0 && p <= 1.0)) {
		fprintf(stderr, "tpa-sim: --%s wants a probability between 0 and 1\n", name);
		usage(NULL);
	}
	return p;
}

/* Write "PORT\n" to path through a temporary file and a rename. */
static int write_port_file(const char *path, int port)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	FILE *f = fopen(tmp, "we");
	if (!f)
		return -errno;
	int r = fprintf(f, "%d\n", port) < 0 ? -EIO : 0;
	if (fclose(f) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) < 0)
		r = -errno;
	if (r < 0)
		unlink(tmp);
	return r;
}

/* SIGTERM or SIGINT: leave the loop; main saves the registry and exits. */
static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	event_base_loopbreak(arg);
}

/* A deferred registry save after changes. */
static void save_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sim *s = arg;
	int r = registry_save(s);
	if (r < 0)
		fprintf(stderr, "tpa-sim: cannot save registry %s: %s\n", s->registry_path,
			strerror(-r));
}

/* Open a listener, announce it on stdout and in its port file, or exit. */
static void listen_or_die(struct sim *s, const char *addr, bool control, const char *port_file)
{
	int port;
	int r = conn_listen(s, addr, control, &port);
	if (r == -EINVAL)
		usage("listen address must be IPv4-ADDRESS:PORT");
	if (r < 0) {
		fprintf(stderr, "tpa-sim: cannot listen on %s: %s\n", addr, strerror(-r));
		exit(1);
	}
	printf("%slistening on %.*s:%d\n", control ? "control " : "",
	       (int)(strrchr(addr, ':') - addr), addr, port);
	fflush(stdout);
	if (port_file && (r = write_port_file(port_file, port)) < 0) {
		fprintf(stderr, "tpa-sim: cannot write %s: %s\n", port_file, strerror(-r));
		exit(1);
	}
}

enum {
	OPT_LISTEN = 256,
	OPT_PORT_FILE,
	OPT_PLAIN,
	OPT_PSK_IDENTITY,
	OPT_PSK_FILE,
	OPT_CONTROL,
	OPT_CONTROL_PORT_FILE,
	OPT_REGISTRY,
	OPT_OAUTH2,
	OPT_CLIENT_ID,
	OPT_CLIENT_SECRET_FILE,
	OPT_TOKEN_TTL,
	OPT_LATENCY,
	OPT_JITTER,
	OPT_IMPORT_LATENCY,
	OPT_QUERY_LATENCY,
	OPT_RATE_5XX,
	OPT_RATE_429,
	OPT_RETRY_AFTER,
	OPT_RESET_AFTER,
	OPT_DROP_ANSWER,
	OPT_DROP_IMPORT,
	OPT_IDLE_CLOSE,
	OPT_SLOW,
	OPT_MALFORMED,
	OPT_REFUSE,
	OPT_DUPLICATE,
	OPT_SEED,
	OPT_VERBOSE,
	OPT_HELP,
	OPT_CERT,
	OPT_KEY,
	OPT_CLIENT_CA,
	OPT_DX_MAKER,
	OPT_CUSTOMER_ID,
};

static const struct option options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"port-file", required_argument, NULL, OPT_PORT_FILE},
    {"plain", no_argument, NULL, OPT_PLAIN},
    {"psk-identity", required_argument, NULL, OPT_PSK_IDENTITY},
    {"psk-file", required_argument, NULL, OPT_PSK_FILE},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"client-ca", required_argument, NULL, OPT_CLIENT_CA},
    {"dx-maker", no_argument, NULL, OPT_DX_MAKER},
    {"customer-id", required_argument, NULL, OPT_CUSTOMER_ID},
    {"control", required_argument, NULL, OPT_CONTROL},
    {"control-port-file", required_argument, NULL, OPT_CONTROL_PORT_FILE},
    {"registry", required_argument, NULL, OPT_REGISTRY},
    {"oauth2", no_argument, NULL, OPT_OAUTH2},
    {"client-id", required_argument, NULL, OPT_CLIENT_ID},
    {"client-secret-file", required_argument, NULL, OPT_CLIENT_SECRET_FILE},
    {"token-ttl", required_argument, NULL, OPT_TOKEN_TTL},
    {"latency-ms", required_argument, NULL, OPT_LATENCY},
    {"jitter-ms", required_argument, NULL, OPT_JITTER},
    {"import-latency-ms", required_argument, NULL, OPT_IMPORT_LATENCY},
    {"query-latency-ms", required_argument, NULL, OPT_QUERY_LATENCY},
    {"rate-5xx", required_argument, NULL, OPT_RATE_5XX},
    {"rate-429", required_argument, NULL, OPT_RATE_429},
    {"retry-after", required_argument, NULL, OPT_RETRY_AFTER},
    {"reset-after", required_argument, NULL, OPT_RESET_AFTER},
    {"drop-before-answer", required_argument, NULL, OPT_DROP_ANSWER},
    {"drop-before-import", required_argument, NULL, OPT_DROP_IMPORT},
    {"idle-close-ms", required_argument, NULL, OPT_IDLE_CLOSE},
    {"slow", no_argument, NULL, OPT_SLOW},
    {"malformed", required_argument, NULL, OPT_MALFORMED},
    {"refuse", no_argument, NULL, OPT_REFUSE},
    {"duplicate", required_argument, NULL, OPT_DUPLICATE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Command-line values that are not simulator state. */
struct args {
	const char *listen;
	const char *port_file;
	const char *control;
	const char *control_port_file;
	const char *psk_identity;
	const char *psk_file;
	const char *cert;
	const char *key;
	const char *client_ca;
	const char *client_secret_file;
	bool have_seed;
	uint64_t seed;
};

/* Parse argv into s and a; exits with status 2 on any mistake. */
static void parse_args(int argc, char **argv, struct sim *s, struct args *a)
{
	struct sim_faults *f = &s->faults;
	int c;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case OPT_LISTEN:
			a->listen = optarg;
			break;
		case OPT_PORT_FILE:
			a->port_file = optarg;
			break;
		case OPT_PLAIN:
			s->plain = true;
			break;
		case OPT_PSK_IDENTITY:
			a->psk_identity = optarg;
			break;
		case OPT_PSK_FILE:
			a->psk_file = optarg;
			break;
		case OPT_CERT:
			a->cert = optarg;
			break;
		case OPT_KEY:
			a->key = optarg;
			break;
		case OPT_CLIENT_CA:
			a->client_ca = optarg;
			break;
		case OPT_DX_MAKER:
			s->dx = true;
			break;
		case OPT_CUSTOMER_ID:
			if (strlen(optarg) >= sizeof(s->customer_id) || !*optarg)
				usage("--customer-id is empty or too long");
			strcpy(s->customer_id, optarg);
			break;
		case OPT_CONTROL:
			a->control = optarg;
			break;
		case OPT_CONTROL_PORT_FILE:
			a->control_port_file = optarg;
			break;
		case OPT_REGISTRY:
			s->registry_path = optarg;
			break;
		case OPT_OAUTH2:
			s->oauth2 = true;
			break;
		case OPT_CLIENT_ID:
			if (strlen(optarg) >= sizeof(s->client_id) || !*optarg)
				usage("--client-id is empty or too long");
			strcpy(s->client_id, optarg);
			break;
		case OPT_CLIENT_SECRET_FILE:
			a->client_secret_file = optarg;
			break;
		case OPT_TOKEN_TTL:
			s->token_ttl = opt_uint("token-ttl", optarg);
			break;
		case OPT_LATENCY:
			f->latency_ms = opt_uint("latency-ms", optarg);
			break;
		case OPT_JITTER:
			f->jitter_ms = opt_uint("jitter-ms", optarg);
			break;
		case OPT_IMPORT_LATENCY:
			f->import_latency_ms = opt_uint("import-latency-ms", optarg);
			break;
		case OPT_QUERY_LATENCY:
			f->query_latency_ms = opt_uint("query-latency-ms", optarg);
			break;
		case OPT_RATE_5XX:
			f->rate_5xx = opt_prob("rate-5xx", optarg);
			break;
		case OPT_RATE_429:
			f->rate_429 = opt_prob("rate-429", optarg);
			break;
		case OPT_RETRY_AFTER:
			f->retry_after = opt_uint("retry-after", optarg);
			break;
		case OPT_RESET_AFTER:
			f->reset_after = opt_uint("reset-after", optarg);
			break;
		case OPT_DROP_ANSWER:
			f->drop_before_answer = opt_prob("drop-before-answer", optarg);
			break;
		case OPT_DROP_IMPORT:
			f->drop_before_import = opt_prob("drop-before-import", optarg);
			break;
		case OPT_IDLE_CLOSE:
			f->idle_close_ms = opt_uint("idle-close-ms", optarg);
			break;
		case OPT_SLOW:
			f->slow = true;
			break;
		case OPT_MALFORMED:
			f->malformed = opt_prob("malformed", optarg);
			break;
		case OPT_REFUSE:
			f->refuse = true;
			break;
		case OPT_DUPLICATE:
			if (sim_parse_duplicate(optarg, &f->duplicate) < 0)
				usage("--duplicate wants 409, same or new");
			break;
		case OPT_SEED: {
			char *end;
			errno = 0;
			a->seed = strtoull(optarg, &end, 0);
			if (errno || *end || end == optarg)
				usage("--seed wants an integer");
			a->have_seed = true;
			break;
		}
		case OPT_VERBOSE:
			s->verbose = true;
			break;
		case OPT_HELP:
			fputs(usage_text, stdout);
			exit(0);
		default:
			fprintf(stderr, "tpa-sim: unknown option or missing value: %s\n",
				optind > 0 && optind <= argc ? argv[optind - 1] : "?");
			usage(NULL);
		}
	}
	if (optind != argc)
		usage("unexpected argument");
	if (!a->listen)
		usage("--listen is required");
	bool cert = a->cert || a->key || a->client_ca;
	if (cert && (!a->cert || !a->key))
		usage("certificate TLS needs --cert and --key");
	if (cert && (a->psk_identity || a->psk_file))
		usage("choose PSK or certificate TLS, not both");
	if (!s->plain && !cert && (!a->psk_identity || !a->psk_file))
		usage("TLS needs --psk-identity and --psk-file, or --cert and --key (or use --plain)");
	if (s->plain && (a->psk_identity || a->psk_file || cert))
		usage("--plain takes no PSK or certificate");
	if (s->oauth2 && (!s->client_id[0] || !a->client_secret_file))
		usage("--oauth2 needs --client-id and --client-secret-file");
	if (!s->oauth2 && (s->client_id[0] || a->client_secret_file))
		usage("--client-id and --client-secret-file need --oauth2");
	if (a->control_port_file && !a->control)
		usage("--control-port-file needs --control");
}

/* Load the PSK and the OAuth2 client secret from their files, or exit with status 1. */
static void load_secrets(struct sim *s, const struct args *a)
{
	char buf[SIM_SECRET_MAX];
	int r;
	if (a->cert) {
		char err[256];
		if (tls_init_cert(&s->tls, a->cert, a->key, a->client_ca, err, sizeof(err)) < 0) {
			fprintf(stderr, "tpa-sim: %s\n", err);
			exit(1);
		}
	} else if (!s->plain) {
		uint8_t psk[SIM_PSK_MAX];
		size_t n;
		r = cred_read_file(a->psk_file, false, buf, sizeof(buf));
		if (r < 0 && r != -E2BIG) {
			fprintf(stderr, "tpa-sim: cannot read PSK file %s: %s\n", a->psk_file,
				strerror(-r));
			exit(1);
		}
		n = r < 0 ? 0 : strlen(buf) / 2;
		if (r < 0 || n == 0 || n > SIM_PSK_MAX || strlen(buf) % 2 ||
		    hex_decode(buf, psk, n) < 0) {
			mbedtls_platform_zeroize(buf, sizeof(buf));
			fprintf(stderr,
				"tpa-sim: PSK file %s must hold 2 to 64 hexadecimal digits\n",
				a->psk_file);
			exit(1);
		}
		mbedtls_platform_zeroize(buf, sizeof(buf));
		r = tls_init(&s->tls, a->psk_identity, psk, n);
		mbedtls_platform_zeroize(psk, sizeof(psk));
		if (r == -EINVAL)
			usage("--psk-identity must have 1 to 128 characters");
		if (r < 0) {
			fprintf(stderr, "tpa-sim: cannot set up TLS\n");
			exit(1);
		}
	}
	if (s->oauth2) {
		r = cred_read_file(a->client_secret_file, false, s->client_secret,
				   sizeof(s->client_secret));
		if (r < 0 || !s->client_secret[0]) {
			fprintf(stderr, "tpa-sim: cannot read client secret file %s: %s\n",
				a->client_secret_file, r < 0 ? strerror(-r) : "empty");
			exit(1);
		}
	}
}

int main(int argc, char **argv)
{
	static struct sim sim;
	struct sim *s = &sim;
	struct args a = {0};

	s->faults.retry_after = 1;
	s->faults.duplicate = SIM_DUP_409;
	s->token_ttl = 3600;
	s->next_ref = 1;
	strcpy(s->customer_id, "100000001");
	parse_args(argc, argv, s, &a);
	if (!a.have_seed && getrandom(&a.seed, sizeof(a.seed), 0) != sizeof(a.seed))
		a.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	s->rng = a.seed;

	signal(SIGPIPE, SIG_IGN);
	load_secrets(s, &a);
	int r = registry_load(s);
	if (r < 0) {
		fprintf(stderr, "tpa-sim: cannot load registry %s: %s\n", s->registry_path,
			r == -EINVAL ? "not a tpa-sim registry" : strerror(-r));
		exit(1);
	}

	s->base = event_base_new();
	if (!s->base) {
		fprintf(stderr, "tpa-sim: cannot create the event loop\n");
		exit(1);
	}
	struct event *sigterm = evsignal_new(s->base, SIGTERM, signal_cb, s->base);
	struct event *sigint = evsignal_new(s->base, SIGINT, signal_cb, s->base);
	s->save_ev = event_new(s->base, -1, 0, save_cb, s);
	if (!sigterm || !sigint || !s->save_ev || evsignal_add(sigterm, NULL) < 0 ||
	    evsignal_add(sigint, NULL) < 0) {
		fprintf(stderr, "tpa-sim: cannot set up signal handling\n");
		exit(1);
	}

	listen_or_die(s, a.listen, false, a.port_file);
	if (a.control)
		listen_or_die(s, a.control, true, a.control_port_file);

	event_base_dispatch(s->base);

	conn_close_all();
	evconnlistener_free(s->api_listener);
	if (s->control_listener)
		evconnlistener_free(s->control_listener);
	r = registry_save(s);
	if (r < 0)
		fprintf(stderr, "tpa-sim: cannot save registry %s: %s\n", s->registry_path,
			strerror(-r));
	if (s->journal_fd >= 0)
		close(s->journal_fd);
	event_free(s->save_ev);
	event_free(sigterm);
	event_free(sigint);
	event_base_free(s->base);
	sim_devices_free(s);
	tls_free(&s->tls);
	dx_free(s);
	mbedtls_platform_zeroize(s->client_secret, sizeof(s->client_secret));
	return r < 0 ? 1 : 0;
}
