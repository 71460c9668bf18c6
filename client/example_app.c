/* example_app: a minimal application of tpas in C with libtpad-client; copy it to start yours.
 *
 *   example-app [--socket PATH] [--state FILE] [--interval SECONDS] [--retry-max SECONDS]
 *
 * The C twin of client/python/example_app.py, whose docstring says the rest: same options,
 * same output, same seq file (either example resumes from the other's). It follows
 * io.tpad.AS.Uplinks, prints each uplink decoded, and answers the devices that ask for
 * their configuration (FPort 2) with io.tpad.AS.SendDownlink: the reporting interval in
 * seconds (uint16, big-endian). FPort 1 carries a reading: temperature (int16, big-endian,
 * 0.1 degC) and humidity (uint8, %).
 *
 * The last seq processed is kept in FILE (default example_app.seq), replaced atomically
 * after each uplink's processing (its downlink included), and the stream resumes after it:
 * the application misses nothing and sees nothing twice across its restarts and tpas's,
 * save the uplink it was processing when it was killed, which comes again. Uplinks that
 * store.retention-days removed before they were read are named and skipped. When tpas
 * goes away the application connects again after 0.2 s, then twice as long each time up
 * to --retry-max (default 10 s). Exit status: 0 on SIGTERM or SIGINT, 1 when tpas refuses
 * the saved seq (a store put back from a backup) or the seq cannot be saved, 2 usage.
 *
 * Build against the installed library:
 *   cc example_app.c $(pkg-config --cflags --libs tpad-client jansson) -o example-app
 */
#define _POSIX_C_SOURCE 200809L /* O_CLOEXEC, O_DIRECTORY, dprintf: with -std=c11 too */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <tpad-client.h>

#define FPORT_READING 1
#define FPORT_CONFIG 2
#define DOWNLINK_TIMEOUT_MS 30000 /* tpas answers within about twice lrc.request-timeout */

static const char *socket_path = TPAD_DEFAULT_APPS_SOCKET, *state = "example_app.seq";
static int interval = 600;
static double retry_max = 10.0;

/* The last seq processed, kept in path: 0 (from the oldest uplink kept) without one. */
static int load_seq(const char *path, long long *seq)
{
	*seq = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return errno == ENOENT ? 0 : -errno;
	char text[32], *end;
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	errno = 0;
	*seq = strtoll(text, &end, 10);
	while (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t')
		end++;
	return end == text || *end || errno || *seq < 0 ? -EINVAL : 0;
}

/* Replace path's seq atomically and durably: a crash leaves the old one or the new one. */
static int save_seq(const char *path, long long seq)
{
	char tmp[4096], dir[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	snprintf(dir, sizeof(dir), "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		slash[1] = '\0'; /* "/var/lib/app/" */
	else
		snprintf(dir, sizeof(dir), ".");
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || dprintf(fd, "%lld\n", seq) < 0 || fsync(fd) < 0) {
		int e = errno;
		if (fd >= 0)
			close(fd);
		return -e;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0)
		return -errno;
	/* The rename is durable once the directory is. */
	int d = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r = d < 0 || fsync(d) < 0 ? -errno : 0;
	if (d >= 0)
		close(d);
	return r;
}

static void save_or_exit(long long seq)
{
	int r = save_seq(state, seq);
	if (r < 0) {
		fprintf(stderr, "example-app: cannot save seq %lld in %s: %s\n", seq, state,
			strerror(-r));
		exit(1);
	}
}

/* What an uplink says, in words. */
static void describe(json_t *up, char *out, size_t n)
{
	const char *hex = json_string_value(json_object_get(up, "payload"));
	json_t *fport = json_object_get(up, "fPort");
	size_t len = hex ? strlen(hex) / 2 : 0;
	unsigned b[3] = {0};
	for (size_t i = 0; i < len && i < 3; i++)
		sscanf(hex + 2 * i, "%2x", &b[i]);
	if (json_is_true(json_object_get(up, "encrypted")))
		snprintf(out, n, "MAC commands, encrypted (%zu bytes)", len);
	else if (json_integer_value(fport) == FPORT_READING && json_is_integer(fport) && len == 3)
		snprintf(out, n, "temperature %.1f C, humidity %u %%",
			 (short)(b[0] << 8 | b[1]) / 10.0, b[2]);
	else if (json_integer_value(fport) == FPORT_CONFIG && json_is_integer(fport))
		snprintf(out, n, "asks for its configuration");
	else
		snprintf(out, n, "payload %s", hex && *hex ? hex : "(empty)");
}

/* True for the failures of the link to tpas (not running, gone, silent, garbled). */
static bool link_failed(int code)
{
	return code == TPAD_E_CONNECT || code == TPAD_E_IO || code == TPAD_E_TIMEOUT ||
	       code == TPAD_E_PROTOCOL;
}

/* Why the link to tpas failed during method, in words. */
static void link_why(const struct tpad_error *e, const char *method, char *out, size_t n)
{
	if (e->code == TPAD_E_CONNECT)
		snprintf(out, n, "cannot connect to %s: %s", socket_path,
			 e->sys_errno == ENOENT ? "the socket does not exist: is tpas running?"
			 : e->sys_errno == ECONNREFUSED
			     ? "nothing listens there: tpas is not running (stale socket)"
			 : e->sys_errno == EACCES ? "permission denied: is this user in tpas-apps?"
						  : strerror(e->sys_errno));
	else if (e->code == TPAD_E_IO)
		snprintf(out, n, "tpas closed the connection during %s (%s)", method,
			 strerror(e->sys_errno));
	else
		snprintf(out, n, "%s during %s", e->message, method);
}

/* An error reply as "Name: key=value, ...", the way example_app.py prints it. */
static const char *reply_text(const struct tpad_error *e, char *out, size_t n)
{
	const char *dot = strrchr(e->name, '.');
	snprintf(out, n, "%s%s%s", dot ? dot + 1 : e->name, e->message[0] ? ": " : "", e->message);
	return out;
}

/*
 * Answer with the reporting interval, on a connection of its own (the stream's is taken
 * by Uplinks). An error reply is printed and the stream goes on; with tpas unreachable
 * the uplink is not done: a negative code with err, and it comes again once the stream
 * is back.
 */
static int send_interval(const char *dev_eui, struct tpad_error *err)
{
	char params[128], head[96], text[768];
	snprintf(params, sizeof(params), "{\"devEUI\":\"%s\",\"fPort\":%d,\"payload\":\"%04x\"}",
		 dev_eui, FPORT_CONFIG, interval);
	snprintf(head, sizeof(head), "downlink %s fPort %d interval %d s", dev_eui, FPORT_CONFIG,
		 interval);
	for (int attempt = 0; attempt < 3; attempt++) {
		tpad_client *c;
		char *json = NULL;
		int r = tpad_client_open(socket_path, DOWNLINK_TIMEOUT_MS, &c, err);
		if (r == 0)
			r = tpad_call_json(c, "io.tpad.AS.SendDownlink", params, &json, err);
		tpad_client_close(c);
		if (link_failed(r))
			return r;
		if (r == TPAD_E_BUSY) { /* nothing was spent: the LRC is slow or down for now */
			sleep(1 + attempt);
			continue;
		}
		if (r < 0) { /* LrcFailed (FCntDn spent), UnknownDevice, NoLrc, ... */
			fprintf(stderr, "%s: %s\n", head, reply_text(err, text, sizeof(text)));
			return 0;
		}
		json_t *d = json_loads(json, 0, NULL);
		printf("%s: FCntDn %lld, LRC %lld \"%s\"\n", head,
		       (long long)json_integer_value(json_object_get(d, "fCntDn")),
		       (long long)json_integer_value(json_object_get(d, "status")),
		       json_string_value(json_object_get(d, "answer")));
		json_decref(d);
		free(json);
		return 0;
	}
	fprintf(stderr, "%s: tpas is busy, not sent\n", head);
	return 0;
}

/* Print an uplink and answer it when it asks; a negative code when tpas went away. */
static int process(json_t *up, struct tpad_error *err)
{
	char what[512], fport[8] = "-";
	json_t *fp = json_object_get(up, "fPort");
	const char *dev_eui = json_string_value(json_object_get(up, "devEUI"));
	if (!dev_eui)
		dev_eui = "?";
	if (json_is_integer(fp))
		snprintf(fport, sizeof(fport), "%lld", (long long)json_integer_value(fp));
	describe(up, what, sizeof(what));
	printf("uplink %lld %s fCntUp %lld fPort %s: %s\n",
	       (long long)json_integer_value(json_object_get(up, "seq")), dev_eui,
	       (long long)json_integer_value(json_object_get(up, "fCntUp")), fport, what);
	if (json_integer_value(fp) == FPORT_CONFIG &&
	    !json_is_true(json_object_get(up, "encrypted")))
		return send_interval(dev_eui, err);
	return 0;
}

/*
 * Read the stream from *seq on, saving each seq once processed; 0 when tpas ends it, a
 * negative code with err (and *method, the call that failed) otherwise.
 */
static int follow(tpad_client *apps, long long *seq, const char **method, struct tpad_error *err)
{
	char params[96];
	snprintf(params, sizeof(params), "{\"after\":%lld,\"follow\":true}", *seq);
	fprintf(stderr, "example-app: following uplinks after seq %lld\n", *seq);
	*method = "io.tpad.AS.Uplinks";
	/* A quiet stream is normal: wait for the next uplink as long as it takes. */
	tpad_client_set_timeout(apps, TPAD_TIMEOUT_NONE);
	int r = tpad_call_more(apps, *method, params, err);
	for (int more = 1; r == 0 && more;) {
		char *json;
		if ((r = tpad_more_next(apps, &json, &more, err)) < 0)
			break;
		json_t *reply = json_loads(json, 0, NULL), *up = json_object_get(reply, "uplink");
		free(json);
		json_int_t gone = json_integer_value(json_object_get(reply, "prunedThrough"));
		if (gone > *seq) {
			fprintf(stderr,
				"example-app: missed uplinks %lld to %lld: tpas removed them "
				"(store.retention-days) before they were read\n",
				*seq + 1, (long long)gone);
			save_or_exit(*seq = gone);
		}
		if (up && (r = process(up, err)) < 0)
			*method = "io.tpad.AS.SendDownlink";
		else if (up)
			save_or_exit(*seq = json_integer_value(json_object_get(up, "seq")));
		json_decref(reply);
	}
	return r;
}

/* Follow the uplinks for ever, connecting again whenever tpas goes away. */
static int run(long long seq)
{
	double delay = 0.2;
	for (;;) {
		struct tpad_error err;
		const char *method = "io.tpad.AS.Uplinks";
		tpad_client *apps;
		char why[1024], text[768];
		int r = tpad_client_open(socket_path, 0, &apps, &err);
		if (r == 0) {
			delay = 0.2;
			r = follow(apps, &seq, &method, &err);
			tpad_client_close(apps);
		}
		if (r == 0)
			snprintf(why, sizeof(why), "tpas ended the stream (it is stopping)");
		else if (link_failed(r))
			link_why(&err, method, why, sizeof(why));
		else if (r == TPAD_E_BUSY || r == TPAD_E_STORE_FAILED) /* too many clients, ... */
			snprintf(why, sizeof(why), "tpas: %s",
				 reply_text(&err, text, sizeof(text)));
		else if (r == TPAD_E_INVALID_PARAMETER) {
			/* The saved seq is past tpas's newest (its store was put back from a
			 * backup): resuming would skip what it journals next. A person decides:
			 * delete FILE to read all it keeps again, or write its lastSeq there. */
			json_t *p = json_loads(err.parameters, 0, NULL);
			const char *reason = json_string_value(json_object_get(p, "reason"));
			fprintf(stderr,
				"example-app: tpas refuses to resume after seq %lld: %s; see %s\n",
				seq, reason ? reason : err.message, state);
			json_decref(p);
			return 1;
		} else {
			fprintf(stderr, "example-app: %s: %s\n", method,
				reply_text(&err, text, sizeof(text)));
			return 1;
		}
		fprintf(stderr, "example-app: %s; again in %.1f s\n", why, delay);
		struct timespec ts = {(time_t)delay, (long)((delay - (time_t)delay) * 1e9)};
		nanosleep(&ts, NULL);
		delay = delay * 2 < retry_max ? delay * 2 : retry_max;
	}
}

/* SIGTERM, SIGINT: the seq on disk is always whole, so stopping anywhere is clean. */
static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

/* The usage line on f; with why, an error on stderr first. */
static int usage(FILE *f, const char *why)
{
	if (why)
		fprintf(stderr, "example-app: %s\n", why);
	fprintf(f, "usage: example-app [--socket PATH] [--state FILE] [--interval SECONDS]\n"
		   "                   [--retry-max SECONDS]\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},	{"state", required_argument, NULL, 'f'},
	    {"interval", required_argument, NULL, 'i'}, {"retry-max", required_argument, NULL, 'r'},
	    {"help", no_argument, NULL, 'h'},		{NULL, 0, NULL, 0}};
	char *end;
	for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
		long v = o == 'i' ? strtol(optarg, &end, 10) : 0;
		if (o == 'h') { /* as example_app.py's --help */
			usage(stdout, NULL);
			return 0;
		} else if (o == 's')
			socket_path = optarg;
		else if (o == 'f')
			state = optarg;
		else if (o == 'i' && (v < 1 || v > 65535 || *end))
			return usage(stderr, "--interval must be 1 to 65535");
		else if (o == 'i')
			interval = (int)v;
		else if (o == 'r' && ((retry_max = strtod(optarg, &end)) < 0.2 || *end))
			return usage(stderr, "--retry-max must be at least 0.2");
		else if (o == '?')
			return usage(stderr, NULL);
	}
	if (optind < argc)
		return usage(stderr, NULL);
	long long seq;
	int r = load_seq(state, &seq);
	if (r < 0) {
		fprintf(stderr, "example-app: cannot read the seq in %s: %s\n", state,
			strerror(-r));
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGTERM, stop);
	signal(SIGINT, stop);
	return run(seq);
}
