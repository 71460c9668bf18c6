/* ctl_as: tpactl's "as" commands for tpas: keygen, import-astk, astks, uplinks, send, status. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>

#include "ctl.h"
#include "frame.h"
#include "message.h"
#include "tpad-build.h"

#define EXIT_OK 0
#define EXIT_REPLY 1
#define EXIT_USAGE 2
#define EXIT_CONNECT 3

#define AS_DEFAULT_SOCKET TPAS_RUNDIR "/admin.sock"

static void as_usage(FILE *f)
{
	fprintf(
	    f,
	    "Usage: tpactl [--socket PATH] [--json] as COMMAND [OPTIONS]\n"
	    "\n"
	    "Commands for tpas (socket $TPAS_SOCKET, default " AS_DEFAULT_SOCKET "):\n"
	    "  keygen --out FILE           make an RSA-2048 key pair: the private key goes to\n"
	    "                              FILE (mode 0600), the public key PEM for Key Manager\n"
	    "                              to stdout (no tpas needed)\n"
	    "  import-astk HEX [--label L] [--customer-id ID] [--dev-eui EUI]\n"
	    "                              store Key Manager's encryptedASKey\n"
	    "  astks                       the stored ASTKs (never the keys)\n"
	    "  uplinks [--after SEQ] [--follow]\n"
	    "                              the journaled uplinks, one per line\n"
	    "  send --dev-eui EUI --port N --payload HEX [--confirmed]\n"
	    "                              send a downlink through the LRC\n"
	    "  status                      health of tpas (exit 4 LRC down, 5 its breaker open,\n"
	    "                              6 the journal failing)\n");
}

__attribute__((format(printf, 1, 2))) static int as_usage_error(const char *fmt, ...)
{
	va_list ap;
	fputs("tpactl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'tpactl as --help'.\n", stderr);
	return EXIT_USAGE;
}

/* Write an RSA-2048 private key to path (created 0600, never over an existing file). */
static int as_keygen(const char *out, bool json_out)
{
	mbedtls_pk_context pk;
	mbedtls_entropy_context ent;
	mbedtls_ctr_drbg_context drbg;
	static unsigned char priv[8192], pub[4096];
	int status = EXIT_REPLY, fd = -1;
	mbedtls_pk_init(&pk);
	mbedtls_entropy_init(&ent);
	mbedtls_ctr_drbg_init(&drbg);
	static const char personal[] = "tpactl-as-keygen";
	if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent,
				  (const unsigned char *)personal, sizeof(personal) - 1) != 0 ||
	    mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA)) != 0 ||
	    mbedtls_rsa_gen_key(mbedtls_pk_rsa(pk), mbedtls_ctr_drbg_random, &drbg, 2048, 65537) !=
		0 ||
	    mbedtls_pk_write_key_pem(&pk, priv, sizeof(priv)) != 0 ||
	    mbedtls_pk_write_pubkey_pem(&pk, pub, sizeof(pub)) != 0) {
		fprintf(stderr, "tpactl: cannot generate the RSA key\n");
		goto out;
	}
	fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 && errno == EEXIST) {
		/* An empty placeholder (tmpfiles.d makes one for the credential) may be filled. */
		struct stat st;
		if (lstat(out, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0)
			fd = open(out, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
		else if (lstat(out, &st) == 0 && S_ISDIR(st.st_mode))
			errno = EISDIR;
		else
			errno = EEXIST;
	}
	if (fd < 0) {
		if (errno == EISDIR) {
			int dl = (int)strlen(out);
			while (dl > 1 && out[dl - 1] == '/')
				dl--;
			fprintf(stderr,
				"tpactl: %s: Is a directory: --out names the private key's file, "
				"such as %.*s/as-rsa-key.pem\n",
				out, dl, out);
		} else if (errno == EEXIST)
			fprintf(
			    stderr,
			    "tpactl: %s: File exists: a key is never overwritten, since the "
			    "ASTKs imported for its public key need it\nFor a new pair, move it "
			    "away first (then give Key Manager the new public key).\n",
			    out);
		else
			fprintf(stderr, "tpactl: %s: %s\n", out, strerror(errno));
		goto out;
	}
	size_t len = strlen((char *)priv), off = 0;
	while (off < len) {
		ssize_t n = write(fd, priv + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "tpactl: %s: %s\n", out, strerror(errno));
			unlink(out);
			goto out;
		}
		off += (size_t)n;
	}
	if (fchmod(fd, 0600) < 0 || fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		fprintf(stderr, "tpactl: %s: %s\n", out, strerror(errno));
		unlink(out);
		goto out;
	}
	fd = -1;
	if (json_out) {
		json_t *o = json_pack("{s:s, s:s, s:i}", "privateKeyFile", out, "publicKey",
				      (const char *)pub, "bits", 2048);
		ctl_print_json(o);
		json_decref(o);
	} else {
		fputs((const char *)pub, stdout);
		fprintf(stderr,
			"Private key written to %s (mode 0600). Give the public key above to Key "
			"Manager,\nthen: tpactl as import-astk <encryptedASKey>\n",
			out);
	}
	status = EXIT_OK;
out:
	if (fd >= 0)
		close(fd);
	mbedtls_platform_zeroize(priv, sizeof(priv));
	mbedtls_pk_free(&pk);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&ent);
	return status;
}

/* Print one uplink as a line: seq, time, device, port, counter, payload (and text). */
static void print_uplink(json_t *u)
{
	const char *payload = json_string_value(json_object_get(u, "payload"));
	json_t *fport = json_object_get(u, "fPort");
	printf("%lld %s %s port %s%lld fcnt %lld payload %s",
	       (long long)json_integer_value(json_object_get(u, "seq")),
	       json_string_value(json_object_get(u, "receivedAt")),
	       json_string_value(json_object_get(u, "devEUI")), fport ? "" : "-",
	       fport ? (long long)json_integer_value(fport) : 0LL,
	       (long long)json_integer_value(json_object_get(u, "fCntUp")),
	       payload && *payload ? payload : "-");
	if (json_is_true(json_object_get(u, "encrypted")))
		printf(" (encrypted)");
	else if (payload && *payload) {
		/* Show printable payloads as text too, in quotes: a quote or a backslash in it
		 * escaped, so that the text between the quotes reads back as the payload. */
		size_t n = strlen(payload) / 2, o = 0;
		char text[2 * 256 + 1];
		bool printable = n < 256;
		for (size_t i = 0; printable && i < n; i++) {
			unsigned v = 0;
			printable =
			    sscanf(payload + 2 * i, "%2x", &v) == 1 && v >= 0x20 && v < 0x7f;
			if (v == '"' || v == '\\')
				text[o++] = '\\';
			text[o++] = (char)v;
		}
		if (printable) {
			text[o] = '\0';
			printf(" \"%s\"", text);
		}
	}
	putchar('\n');
}

static int as_uplinks(struct ctl *c, long long after, bool follow, bool json_out)
{
	json_t *p = json_pack("{s:I, s:b}", "after", (json_int_t)after, "follow", follow);
	/* Connected: a link that fails now, or a malformed reply, is a failed call (1). */
	int r = ctl_send(c, "io.tpad.AS.Uplinks", p, true);
	if (r < 0)
		return EXIT_REPLY;
	for (;;) {
		json_t *reply;
		if (ctl_recv(c, &reply) < 0)
			return EXIT_REPLY;
		if (json_object_get(reply, "error")) {
			if (json_out)
				ctl_print_json(reply);
			ctl_print_error(reply);
			json_decref(reply);
			return EXIT_REPLY;
		}
		json_t *params = json_object_get(reply, "parameters");
		json_t *gone = json_object_get(params, "prunedThrough");
		if (json_is_integer(gone))
			fprintf(stderr,
				"tpactl: uplinks after %lld up to %lld were removed by tpas "
				"(store.retention-days) before they were read\n",
				(long long)after, (long long)json_integer_value(gone));
		json_t *u = json_object_get(params, "uplink");
		if (json_is_integer(json_object_get(u, "seq")))
			after = json_integer_value(json_object_get(u, "seq"));
		if (u) {
			if (json_out)
				ctl_print_json(u);
			else
				print_uplink(u);
		}
		/* A follower's reader (a pipe) sees each uplink as it comes, not a block later. */
		if (follow && !frame_reader_has_message(c->reader))
			fflush(stdout);
		bool more = json_is_true(json_object_get(reply, "continues"));
		json_decref(reply);
		if (!more && follow) {
			/* A followed stream ends only when tpas stops: a script should know. */
			fprintf(stderr,
				"tpactl: tpas ended the stream (it is stopping); follow again "
				"with --after %lld\n",
				after);
			return EXIT_CONNECT;
		}
		if (!more)
			return EXIT_OK;
	}
}

/*
 * Status's exit status, as tpactl status's (tpactl(1)): the journal failing (6), else the
 * LRC link's breaker open (5), else the LRC down (4); 0 when healthy or when no LRC is
 * configured.
 */
static int as_health(json_t *status)
{
	if (json_is_true(json_object_get(json_object_get(status, "journal"), "failing")))
		return CTL_EXIT_STORE_FAILING;
	json_t *l = json_object_get(status, "lrc");
	const char *breaker = json_string_value(json_object_get(l, "breaker"));
	const char *state = json_string_value(json_object_get(l, "state"));
	if (breaker && strcmp(breaker, "open") == 0)
		return CTL_EXIT_BREAKER_OPEN;
	if (state && strcmp(state, "down") == 0)
		return CTL_EXIT_CLOUD_DOWN;
	return CTL_EXIT_OK;
}

static int as_call(struct ctl *c, const char *method, json_t *params, bool json_out,
		   void (*print)(json_t *))
{
	json_t *res;
	int r = ctl_call(c, method, params, json_out, &res);
	if (r < 0)
		return EXIT_REPLY; /* the link failed mid-call */
	if (r > 0)
		return r; /* an error reply (1), or the wrong socket (2) */
	if (json_out || !print)
		ctl_print_json(res);
	else
		print(res);
	int status = strcmp(method, "io.tpad.AS.Status") == 0 ? as_health(res) : EXIT_OK;
	json_decref(res);
	return status;
}

static void print_import(json_t *r)
{
	long long id = (long long)json_integer_value(json_object_get(r, "id"));
	if (json_is_true(json_object_get(r, "existing")))
		printf("ASTK already stored as id %lld (the same key, label and scope): nothing "
		       "added\n",
		       id);
	else
		printf("ASTK stored as id %lld\n", id);
}

static void print_send(json_t *r)
{
	printf("sent with FCntDn %lld: LRC answered %lld %s\n",
	       (long long)json_integer_value(json_object_get(r, "fCntDn")),
	       (long long)json_integer_value(json_object_get(r, "status")),
	       json_string_value(json_object_get(r, "answer")));
}

static void print_astks(json_t *r)
{
	size_t i;
	json_t *a;
	json_array_foreach(json_object_get(r, "astks"), i, a)
	{
		printf("%lld label=%s customer=%s device=%s created %s\n",
		       (long long)json_integer_value(json_object_get(a, "id")),
		       json_string_value(json_object_get(a, "label")),
		       json_string_value(json_object_get(a, "customerID")),
		       json_string_value(json_object_get(a, "devEUI")),
		       json_string_value(json_object_get(a, "createdAt")));
	}
}

static void print_status(json_t *r)
{
	json_t *t = json_object_get(r, "tunnel"), *j = json_object_get(r, "journal");
	json_t *l = json_object_get(r, "lrc");
	printf("tpas %s, up %llds\n", json_string_value(json_object_get(r, "version")),
	       (long long)json_integer_value(json_object_get(r, "uptime")));
	printf("tunnel: %lld requests, %lld accepted, %lld duplicates; %lld connections open, "
	       "limit hit %lld times\n",
	       (long long)json_integer_value(json_object_get(t, "requests")),
	       (long long)json_integer_value(json_object_get(t, "accepted")),
	       (long long)json_integer_value(json_object_get(t, "duplicates")),
	       (long long)json_integer_value(json_object_get(t, "connections")),
	       (long long)json_integer_value(json_object_get(t, "connectionLimitHit")));
	/* Every refusal the tunnel counts, in the order of tpas(8). */
	static const struct {
		const char *key, *label;
	} refusals[] = {{"badRequest", "bad request"},	     {"badToken", "bad token"},
			{"staleTime", "stale time"},	     {"wrongKey", "wrong key"},
			{"unknownDevice", "unknown device"}, {"notFound", "not found"},
			{"badMethod", "bad method"},	     {"tooBig", "too big"},
			{"timedOut", "timed out"},	     {"noASTK", "no ASTK"},
			{"noSession", "no session"},	     {"storeFailed", "store failed"},
			{"tlsFailed", "TLS failed"}};
	printf("refused:");
	for (size_t i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++)
		printf("%s %lld %s", i ? "," : "",
		       (long long)json_integer_value(json_object_get(t, refusals[i].key)),
		       refusals[i].label);
	printf("\n");
	printf("journal: last seq %lld, %lld uplinks kept, %lld sessions, %lld ASTKs\n",
	       (long long)json_integer_value(json_object_get(j, "lastSeq")),
	       (long long)json_integer_value(json_object_get(j, "uplinks")),
	       (long long)json_integer_value(json_object_get(j, "sessions")),
	       (long long)json_integer_value(json_object_get(j, "astks")));
	const char *err = json_string_value(json_object_get(j, "lastError"));
	const char *since = json_string_value(json_object_get(j, "failingSince"));
	if (json_is_true(json_object_get(j, "failing")))
		printf("journal: FAILING since %s (until a write commits again): %s\n",
		       since ? since : "?", err ? err : "?");
	else if (err)
		printf("journal: earlier error (healed since): %s\n", err);
	const char *url = json_string_value(json_object_get(l, "url"));
	if (url)
		printf("lrc: %s %s, breaker %s, %lld queued\n", url,
		       json_string_value(json_object_get(l, "state")),
		       json_string_value(json_object_get(l, "breaker")),
		       (long long)json_integer_value(json_object_get(l, "queue")));
	else
		printf("lrc: not configured\n");
	/* What TpasLrcDown and TpasLrcBreakerOpen send the admin here for. */
	ctl_print_sessions(json_object_get(l, "sessions"));
	json_t *d = json_object_get(r, "downlinks");
	if (json_is_object(d)) /* a tpas older than the field has none to show */
		printf(
		    "downlinks: %lld sent, %lld refused by the LRC, %lld failed, %lld not sent\n",
		    (long long)json_integer_value(json_object_get(d, "sent")),
		    (long long)json_integer_value(json_object_get(d, "lrcRefused")),
		    (long long)json_integer_value(json_object_get(d, "failed")),
		    (long long)json_integer_value(json_object_get(d, "refused")));
	json_t *w = json_object_get(r, "webhook");
	if (json_is_object(w))
		printf("webhook: %s%s, delivered through seq %lld, %lld failures%s%s\n",
		       json_string_value(json_object_get(w, "url")),
		       json_is_true(json_object_get(w, "token")) ? " (with a token)" : "",
		       (long long)json_integer_value(json_object_get(w, "cursor")),
		       (long long)json_integer_value(json_object_get(w, "failures")),
		       *json_string_value(json_object_get(w, "lastError")) ? ", last: " : "",
		       json_string_value(json_object_get(w, "lastError")));
	printf("subscribers: %lld\n",
	       (long long)json_integer_value(json_object_get(r, "subscribers")));
}

/*
 * A long option tpactl as does not have: one line, and the closest option when there is
 * one (getopt's own message and the whole usage said neither).
 */
static int as_unknown_option(const struct option *opts, const char *bad)
{
	const char *best = bad[0] == '-' && bad[1] == '-' ? ctl_closest_option(opts, bad) : NULL;
	if (!best)
		return as_usage_error("unknown option '%s'", bad);
	fprintf(stderr, "tpactl: unknown option '%s'\nDid you mean '--%s'? (tpactl as --help)\n",
		bad, best);
	return EXIT_USAGE;
}

/* The option or argument of tpactl as that gives parameter name. */
static const char *as_option_of(const char *name)
{
	static const struct {
		const char *param, *option;
	} names[] = {{"encryptedASKey", "encryptedASKey"},
		     {"label", "--label"},
		     {"customerID", "--customer-id"},
		     {"devEUI", "--dev-eui"},
		     {"fPort", "--port"},
		     {"payload", "--payload"}};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i].param, name) == 0)
			return names[i].option;
	return name;
}

/*
 * Check params locally by the protocol's own table (proto_validate(), as tpas does), so
 * that a value tpas would refuse is a usage error before anything is sent (tpactl(1)).
 * A hexadecimal value's reason already says what is in the way (a 0x, a space or a colon,
 * as copied); when nothing is, its length is.
 */
static int as_check_params(const char *method, json_t *params)
{
	const struct method_spec *m = proto_method_find(method);
	struct proto_fault fault;
	if (!m || proto_validate(m, params, &fault) == 0)
		return 0;
	const char *opt = as_option_of(fault.parameter);
	const char *v = json_string_value(json_object_get(params, fault.parameter));
	char detail[32] = "";
	const char *rest = strstr(fault.reason, "; ");
	int rule = rest ? (int)(rest - fault.reason) : (int)strlen(fault.reason);
	if (!rest && v && strstr(fault.reason, "hexadecimal"))
		snprintf(detail, sizeof(detail), "; it has %zu", strlen(v));
	/* encryptedASKey is 512 digits: not echoed whole. */
	if (v && strlen(v) <= 32)
		fprintf(stderr, "tpactl: %s %.*s, not '%s'%s%s\n", opt, rule, fault.reason, v,
			rest ? rest : "", detail);
	else
		fprintf(stderr, "tpactl: %s %.*s%s%s\n", opt, rule, fault.reason, rest ? rest : "",
			detail);
	fputs("Try 'tpactl as --help'.\n", stderr);
	return -EINVAL;
}

enum as_opt {
	AO_SOCKET = 300,
	AO_JSON,
	AO_OUT,
	AO_LABEL,
	AO_CUSTOMER,
	AO_DEV_EUI,
	AO_AFTER,
	AO_FOLLOW,
	AO_PORT,
	AO_PAYLOAD,
	AO_CONFIRMED,
};

int ctl_as_main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, AO_SOCKET},
	    {"json", no_argument, NULL, AO_JSON},
	    {"help", no_argument, NULL, 'h'},
	    {"out", required_argument, NULL, AO_OUT},
	    {"label", required_argument, NULL, AO_LABEL},
	    {"customer-id", required_argument, NULL, AO_CUSTOMER},
	    {"dev-eui", required_argument, NULL, AO_DEV_EUI},
	    {"after", required_argument, NULL, AO_AFTER},
	    {"follow", no_argument, NULL, AO_FOLLOW},
	    {"port", required_argument, NULL, AO_PORT},
	    {"payload", required_argument, NULL, AO_PAYLOAD},
	    {"confirmed", no_argument, NULL, AO_CONFIRMED},
	    {0},
	};
	/* --socket, else $TPAS_SOCKET (as tpad's commands take $TPAD_ADMIN_SOCKET). */
	const char *sock = getenv("TPAS_SOCKET"), *out = NULL, *label = NULL, *customer = NULL,
		   *dev = NULL, *payload = NULL;
	if (!sock || !*sock)
		sock = AS_DEFAULT_SOCKET;
	bool json_out = false, follow = false, confirmed = false, help = false;
	long long after = 0, port = -1;
	unsigned used = 0;
	int o;
	optind = 1;
	int bad = ctl_unabbreviated(argc, argv, opts); /* as tpactl's other commands */
	if (bad)
		return as_unknown_option(opts, argv[bad]);
	opterr = 0; /* one line and a hint, as tpactl's other commands */
	while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		if (o >= AO_OUT)
			used |= 1u << (o - AO_OUT);
		switch (o) {
		case 'h': /* the command's own usage, once it is known */
			help = true;
			break;
		case AO_SOCKET:
			sock = optarg;
			break;
		case AO_JSON:
			json_out = true;
			break;
		case AO_OUT:
			out = optarg;
			break;
		case AO_LABEL:
			label = optarg;
			break;
		case AO_CUSTOMER:
			customer = optarg;
			break;
		case AO_DEV_EUI:
			dev = optarg;
			break;
		case AO_FOLLOW:
			follow = true;
			break;
		case AO_CONFIRMED:
			confirmed = true;
			break;
		case AO_PAYLOAD:
			payload = optarg;
			break;
		case AO_AFTER:
		case AO_PORT: {
			long long v;
			if (ctl_whole_number(optarg, LLONG_MAX, &v) < 0)
				return as_usage_error("--%s needs a whole number, not '%s'",
						      o == AO_AFTER ? "after" : "port", optarg);
			if (o == AO_AFTER)
				after = v;
			else
				port = v;
			break;
		}
		case ':':
			return as_usage_error("%s needs a value", argv[optind - 1]);
		default:
			return as_unknown_option(opts, argv[optind - 1]);
		}
	}
	/* argv[optind] is "as". */
	if (optind >= argc || strcmp(argv[optind], "as") != 0)
		return as_usage_error("no command given");
	optind++;
	if (optind >= argc && help) {
		as_usage(stdout);
		return EXIT_OK;
	}
	if (optind >= argc)
		return as_usage_error("as: no command given");
	const char *cmd = argv[optind++];
	int nargs = argc - optind;
	static const struct {
		const char *name;
		unsigned opts;
		int args;
		const char *synopsis; /* after "tpactl as NAME" */
		const char *help;     /* what it does, then its options */
	} table[] = {
	    {"keygen", 1u << (AO_OUT - AO_OUT), 0, "--out FILE",
	     "Make the RSA-2048 key pair whose public half Key Manager encrypts ASTKs with: the\n"
	     "private key goes to FILE (mode 0600; tpas's credential as-rsa-key), the public key\n"
	     "PEM to stdout. No tpas needed.\n\n"
	     "  --out FILE          where the private key goes (required; never overwritten)\n"},
	    {"import-astk",
	     1u << (AO_LABEL - AO_OUT) | 1u << (AO_CUSTOMER - AO_OUT) | 1u << (AO_DEV_EUI - AO_OUT),
	     1, "HEX [--label L] [--customer-id ID] [--dev-eui EUI]",
	     "Store Key Manager's encryptedASKey (HEX): tpas decrypts it with its RSA key and\n"
	     "keeps the ASTK sealed. Several may be live, each for a scope.\n\n"
	     "  --label L           the KEKLabel of the key envelopes it unwraps\n"
	     "  --customer-id ID    only for this CustomerID's uplinks\n"
	     "  --dev-eui EUI       only for this device's uplinks\n"},
	    {"astks", 0, 0, "",
	     "List the stored ASTKs: id, label, scope, when stored (never the keys).\n"},
	    {"uplinks", 1u << (AO_AFTER - AO_OUT) | 1u << (AO_FOLLOW - AO_OUT), 0,
	     "[--after SEQ] [--follow]",
	     "Print the journaled uplinks, one per line (--json: one JSON object per line).\n\n"
	     "  --after SEQ         only those with a sequence number above SEQ\n"
	     "  --follow            then each new one as it is journaled, until Ctrl-C\n"},
	    {"send",
	     1u << (AO_DEV_EUI - AO_OUT) | 1u << (AO_PORT - AO_OUT) | 1u << (AO_PAYLOAD - AO_OUT) |
		 1u << (AO_CONFIRMED - AO_OUT),
	     0, "--dev-eui EUI --port N --payload HEX [--confirmed]",
	     "Send a downlink through the LRC: the payload encrypted with the device's newest\n"
	     "AppSKey under the next FCntDn (committed first, never used twice).\n\n"
	     "  --dev-eui EUI       the device, 16 hex digits (required)\n"
	     "  --port N            its FPort, 1 to 223 (required)\n"
	     "  --payload HEX       at most 242 bytes in hex (required)\n"
	     "  --confirmed         ask the device to acknowledge it\n"},
	    {"status", 0, 0, "",
	     "Health of tpas: the tunnel, the journal, the LRC link, the webhook (exit 4 LRC\n"
	     "down, 5 its breaker open, 6 the journal failing).\n"},
	};
	int k = -1;
	for (int i = 0; i < (int)(sizeof(table) / sizeof(table[0])); i++)
		if (strcmp(table[i].name, cmd) == 0)
			k = i;
	if (k < 0) {
		const char *best = NULL;
		size_t bd = 3;
		for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
			size_t d = ctl_command_distance(cmd, table[i].name);
			if (d < bd) {
				bd = d;
				best = table[i].name;
			}
		}
		if (!best)
			return as_usage_error("as: unknown command '%s'", cmd);
		fprintf(stderr,
			"tpactl: as: unknown command '%s'\nDid you mean 'tpactl as %s'? "
			"(tpactl as --help lists them)\n",
			cmd, best);
		return EXIT_USAGE;
	}
	if (help) {
		printf("Usage: tpactl as %s%s%s\n\n%s\nCommon options: --socket PATH (default "
		       "$TPAS_SOCKET or " AS_DEFAULT_SOCKET "), --json.\n",
		       cmd, *table[k].synopsis ? " " : "", table[k].synopsis, table[k].help);
		return EXIT_OK;
	}
	if (used & ~table[k].opts) {
		for (const struct option *p = opts; p->name; p++)
			if (p->val >= AO_OUT && (used & ~table[k].opts & (1u << (p->val - AO_OUT))))
				return as_usage_error("as %s does not take --%s", cmd, p->name);
	}
	if (nargs != table[k].args)
		return as_usage_error("as %s takes %d argument%s", cmd, table[k].args,
				      table[k].args == 1 ? "" : "s");

	if (strcmp(cmd, "keygen") == 0) {
		if (!out)
			return as_usage_error("as keygen needs --out FILE");
		return as_keygen(out, json_out);
	}
	json_t *params = NULL;
	const char *method = NULL;
	void (*print)(json_t *) = NULL;
	if (strcmp(cmd, "import-astk") == 0) {
		params = json_pack("{s:s}", "encryptedASKey", argv[optind]);
		if (label)
			json_object_set_new(params, "label", json_string(label));
		if (customer)
			json_object_set_new(params, "customerID", json_string(customer));
		if (dev)
			json_object_set_new(params, "devEUI", json_string(dev));
		method = "io.tpad.ASAdmin.ImportASTK";
		print = print_import;
	} else if (strcmp(cmd, "astks") == 0) {
		method = "io.tpad.ASAdmin.ListASTKs";
		print = print_astks;
	} else if (strcmp(cmd, "send") == 0) {
		if (!dev || port < 0 || !payload)
			return as_usage_error(
			    "as send needs --dev-eui EUI, --port N and --payload HEX "
			    "(may be \"\")");
		params = json_pack("{s:s, s:I, s:s, s:b}", "devEUI", dev, "fPort", (json_int_t)port,
				   "payload", payload, "confirmed", confirmed);
		method = "io.tpad.AS.SendDownlink";
		print = print_send;
	} else if (strcmp(cmd, "status") == 0) {
		method = "io.tpad.AS.Status";
		print = print_status;
	}
	if (params && as_check_params(method, params) < 0) {
		json_decref(params);
		return EXIT_USAGE;
	}
	struct stat st;
	if (stat(sock, &st) < 0 && errno == ENOENT) {
		/* ctl_connect() would blame tpad; say which daemon we want. */
		fprintf(stderr,
			"tpactl: cannot connect to %s: the socket does not exist: is tpas running? "
			"(systemctl status tpas; or give --socket PATH or set TPAS_SOCKET)\n",
			sock);
		json_decref(params);
		return EXIT_CONNECT;
	}
	struct ctl c;
	if (ctl_connect_to(&c, sock, CTL_ADMIN, "tpas") < 0) {
		json_decref(params);
		return EXIT_CONNECT;
	}
	int r = strcmp(cmd, "uplinks") == 0 ? as_uplinks(&c, after, follow, json_out)
					    : as_call(&c, method, params, json_out, print);
	ctl_close(&c);
	return r;
}
