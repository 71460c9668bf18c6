/* ctl: tpactl's connection to tpad, calls, error printing and the status command. */
#include "ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "frame.h"
#include "message.h"
#include "tpad-build.h"

/* Largest reply tpactl accepts (labels of an export come one per reply). */
#define CTL_MAX_REPLY (64u << 20)

/*
 * What path is when it exists but is no socket ("a directory", "a regular file"...), or
 * NULL. connect() to such a path fails as if a stale socket were there (ECONNREFUSED),
 * but the cure is another path, not starting the daemon.
 */
static const char *not_a_socket(const char *path)
{
	struct stat st;
	if (!path || stat(path, &st) < 0 || S_ISSOCK(st.st_mode))
		return NULL;
	return S_ISDIR(st.st_mode)   ? "a directory"
	       : S_ISREG(st.st_mode) ? "a regular file"
				     : "not a socket";
}

void ctl_connect_hint(int e, enum ctl_socket sock, const char *path, const char *daemon)
{
	bool tpas = strcmp(daemon, "tpas") == 0;
	const char *env = tpas		      ? "TPAS_SOCKET"
			  : sock == CTL_ADMIN ? "TPAD_ADMIN_SOCKET"
					      : "TPAD_STATION_SOCKET";
	const char *kind = e == ECONNREFUSED ? not_a_socket(path) : NULL;
	if (kind)
		fprintf(stderr,
			"%s is %s, not %s's socket: give the path of its %s socket (%s.socket "
			"in %s.conf) with --socket or %s.\n",
			path, kind, daemon, sock == CTL_ADMIN ? "admin" : "station",
			sock == CTL_ADMIN ? "admin" : "station", daemon, env);
	else if (e == ENOENT)
		fprintf(stderr,
			"The socket does not exist: is %s running? (systemctl status "
			"%s; or give --socket PATH or set %s)\n",
			daemon, daemon, env);
	else if (e == EACCES || e == EPERM)
		fprintf(stderr, "Permission denied: %s\n",
			tpas ? "tpactl as needs root, or the tpas-admin group (tpas-apps "
			       "on the apps socket)."
			: sock == CTL_ADMIN ? "admin commands need root or the tpad-admin group."
					    : "stations need to be in the tpad-station group.");
	else if (e == ECONNREFUSED)
		fprintf(stderr, "Nothing listens there: %s is not running (systemctl start %s).\n",
			daemon, daemon);
}

int ctl_connect(struct ctl *c, const char *path, enum ctl_socket sock)
{
	return ctl_connect_to(c, path, sock, "tpad");
}

int ctl_connect_to(struct ctl *c, const char *path, enum ctl_socket sock, const char *daemon)
{
	if (!path)
		path =
		    sock == CTL_STATION ? TPAD_RUNDIR "/station.sock" : TPAD_RUNDIR "/admin.sock";
	c->path = path;
	c->sock = sock;
	c->daemon = daemon;
	c->reader = NULL;
	c->timeout_ms = 0;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "tpactl: socket path too long: %s\n", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fprintf(stderr, "tpactl: socket: %s\n", strerror(errno));
		return -errno;
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(c->fd);
		c->fd = -1;
		fprintf(stderr, "tpactl: cannot connect to %s: %s\n", path, strerror(e));
		ctl_connect_hint(e, sock, path, daemon);
		return -e;
	}
	c->reader = frame_reader_new(CTL_MAX_REPLY);
	if (!c->reader) {
		close(c->fd);
		fprintf(stderr, "tpactl: out of memory\n");
		return -ENOMEM;
	}
	return 0;
}

void ctl_close(struct ctl *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->reader = frame_reader_free(c->reader);
}

int ctl_send(struct ctl *c, const char *method, json_t *params, bool more)
{
	size_t len;
	char *msg = call_encode(method, params, more, false, &len);
	json_decref(params);
	if (!msg) {
		fprintf(stderr, "tpactl: out of memory\n");
		return -ENOMEM;
	}
	int r = frame_write_fd(c->fd, msg, len);
	free(msg);
	/*
	 * The daemon closed first: one that refuses a connection at a limit writes its Busy
	 * before closing, and that reply is in the socket. ctl_recv() reads it, or says the
	 * daemon closed the connection when nothing came.
	 */
	if (r == -EPIPE || r == -ECONNRESET)
		return 0;
	if (r < 0)
		fprintf(stderr, "tpactl: cannot send to %s: %s\n", c->path, strerror(-r));
	return r;
}

/* The daemon c talks to, by name. */
static const char *ctl_daemon(const struct ctl *c)
{
	return c->daemon ? c->daemon : "tpad";
}

/*
 * Make each read of c's replies give up after ms: for the quick health calls a check
 * script runs, where a tpad that took the connection but never answers (stopped, hung)
 * must not hold the script for ever.
 */
static void ctl_reply_timeout(struct ctl *c, int ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	if (setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0)
		c->timeout_ms = ms;
}

int ctl_recv(struct ctl *c, json_t **ret_reply)
{
	char *msg;
	size_t len;
	int r = frame_read_fd(c->fd, c->reader, &msg, &len);
	if ((r == -EAGAIN || r == -EWOULDBLOCK) && c->timeout_ms > 0) {
		fprintf(stderr,
			"tpactl: %s did not answer within %d s on %s: it is stopped or hung (see "
			"its log: journalctl -u %s)\n",
			ctl_daemon(c), c->timeout_ms / 1000, c->path, ctl_daemon(c));
		return -ETIMEDOUT;
	}
	if (r == 0) {
		fprintf(stderr,
			"tpactl: %s closed the connection (see its log: journalctl -u %s)\n",
			ctl_daemon(c), ctl_daemon(c));
		return -ECONNRESET;
	}
	if (r < 0) {
		fprintf(stderr, "tpactl: cannot read from %s: %s\n", c->path, strerror(-r));
		return r;
	}
	json_error_t jerr;
	json_t *reply = json_loadb(msg, len, 0, &jerr);
	free(msg);
	if (!json_is_object(reply)) {
		json_decref(reply);
		fprintf(stderr, "tpactl: %s sent a malformed reply\n", ctl_daemon(c));
		return -EPROTO;
	}
	*ret_reply = reply;
	return 0;
}

void ctl_print_json(json_t *v)
{
	char *s = json_dumps(v, PROTO_JSON_FLAGS | JSON_ENCODE_ANY);
	if (s) {
		puts(s);
		free(s);
	}
}

/*
 * What to do about an error whose parameters carry no reason: a line after it, so that a
 * bare "UnknownDevice: devEUI=..." is not all an operator gets.
 */
static const struct {
	const char *error, *hint;
} error_hints[] = {
    {"io.tpad.AS.UnknownDevice",
     "tpas holds no AppSKey for this device yet: it takes it from an uplink carrying the "
     "AppSKey field (the first after a join). Check that the LRC's AS route points at tpas "
     "and that its ASTK is imported (tpactl as astks)."},
    {"io.tpad.AS.CounterExhausted",
     "The session's downlink counter is used up: the device must rejoin before another "
     "downlink."},
    {"io.tpad.AS.NoLrc", "Set url in the [lrc] section of tpas.conf, then restart tpas."},
    {"io.tpad.Station.Busy",
     "tpad is at a limit (limits.max-clients*, a full queue, or memory): its log says "
     "which. Try again shortly."},
    {"io.tpad.Admin.Busy",
     "tpad is at a limit (limits.max-clients*, a full queue, or memory): its log says "
     "which. Try again shortly."},
    {"io.tpad.AS.Busy",
     "Nothing was sent and no FCntDn spent: the link to the LRC is down or full. Try again "
     "later (tpactl as status shows the link)."},
};

void ctl_print_error(json_t *reply)
{
	const char *error = json_string_value(json_object_get(reply, "error"));
	json_t *p = json_object_get(reply, "parameters");
	const char *name = error ? strrchr(error, '.') : NULL;
	name = name ? name + 1 : (error ? error : "error");
	fprintf(stderr, "tpactl: %s", name);
	const char *key;
	json_t *v;
	bool first = true;
	json_object_foreach(p, key, v)
	{
		char *s = json_is_string(v) ? strdup(json_string_value(v))
					    : json_dumps(v, PROTO_JSON_FLAGS | JSON_ENCODE_ANY);
		fprintf(stderr, "%s%s=%s", first ? ": " : ", ", key, s ? s : "?");
		free(s);
		first = false;
	}
	fputc('\n', stderr);
	ctl_print_error_hint(error);
}

void ctl_print_error_hint(const char *error)
{
	for (size_t i = 0; error && i < sizeof(error_hints) / sizeof(error_hints[0]); i++)
		if (strcmp(error, error_hints[i].error) == 0)
			fprintf(stderr, "%s\n", error_hints[i].hint);
}

/*
 * Whether the daemon c talks to offers interface iface on this socket, by
 * org.varlink.service.GetInfo; its version into ver (empty when it gives none).
 */
static bool ctl_offers(struct ctl *c, const char *iface, char *ver, size_t verlen)
{
	ver[0] = '\0';
	json_t *reply = NULL;
	if (ctl_send(c, "org.varlink.service.GetInfo", NULL, false) < 0 || ctl_recv(c, &reply) < 0)
		return false;
	json_t *p = json_object_get(reply, "parameters");
	const char *v = json_string_value(json_object_get(p, "version"));
	snprintf(ver, verlen, "%s", v ? v : "");
	bool offers = false;
	size_t i;
	json_t *name;
	json_array_foreach(json_object_get(p, "interfaces"), i, name)
	{
		const char *s = json_string_value(name);
		offers = offers || (s && strcmp(s, iface) == 0);
	}
	json_decref(reply);
	return offers;
}

/*
 * tpas's admin method (io.tpad.ASAdmin) on a socket that does not serve it: its apps
 * socket, which serves io.tpad.AS only, or not tpas at all. Says which socket to use.
 */
static int ctl_wrong_tpas_socket(struct ctl *c, const char *method)
{
	char ver[64];
	bool apps = ctl_offers(c, "io.tpad.AS", ver, sizeof(ver));
	fprintf(stderr,
		"tpactl: %s is a method of tpas's admin socket, but %s is %s\n"
		"Use the admin socket: --socket " TPAS_RUNDIR "/admin.sock (admin.socket in "
		"tpas.conf).\n",
		method, c->path, apps ? "its apps socket" : "not a socket of tpas");
	return CTL_EXIT_USAGE;
}

int ctl_wrong_socket(struct ctl *c, const char *method, json_t *reply)
{
	const char *err = json_string_value(json_object_get(reply, "error"));
	if (err && strcmp(err, PROTO_ERR_METHOD_NOT_FOUND) == 0 &&
	    strncmp(method, "io.tpad.ASAdmin.", 16) == 0)
		return ctl_wrong_tpas_socket(c, method);
	bool admin = strncmp(method, "io.tpad.Admin.", 14) == 0;
	bool station = strncmp(method, "io.tpad.Station.", 16) == 0;
	if (!err || strcmp(err, PROTO_ERR_METHOD_NOT_FOUND) != 0 || !(admin || station))
		return 0;
	/* The socket offers the interface, not this method: a tpad older than tpactl. */
	char ver[64];
	if (ctl_offers(c, admin ? "io.tpad.Admin" : "io.tpad.Station", ver, sizeof(ver))) {
		fprintf(stderr,
			"tpactl: %s at %s (version %s) does not know %s: it is older than this "
			"tpactl\nUpgrade %s, or use the tpactl installed with it.\n",
			ctl_daemon(c), c->path, ver[0] ? ver : "not given", method, ctl_daemon(c));
		return 1;
	}
	/* The method exists, on the other socket: say which one to use. */
	fprintf(stderr,
		"tpactl: %s is %s method, but %s is tpad's %s socket\n"
		"Use the %s socket: --socket %s or set %s.\n",
		method, admin ? "an admin" : "a station", c->path, admin ? "station" : "admin",
		admin ? "admin" : "station",
		admin ? TPAD_RUNDIR "/admin.sock" : TPAD_RUNDIR "/station.sock",
		admin ? "TPAD_ADMIN_SOCKET" : "TPAD_STATION_SOCKET");
	return CTL_EXIT_USAGE;
}

int ctl_call(struct ctl *c, const char *method, json_t *params, bool json_out, json_t **ret_params)
{
	/*
	 * Checked by the protocol's own table first (proto_validate(), as the daemon does):
	 * a value it would refuse is a usage error, and one over limits.max-message is never
	 * sent (the daemon would close the connection without an answer).
	 */
	const struct method_spec *m = proto_method_find(method);
	struct proto_fault fault;
	if (m && params && proto_validate(m, params, &fault) < 0) {
		fprintf(stderr, "tpactl: %s: %s %s\n", method, fault.parameter, fault.reason);
		json_decref(params);
		return CTL_EXIT_USAGE;
	}
	int r = ctl_send(c, method, params, false);
	if (r < 0)
		return r;
	json_t *reply;
	r = ctl_recv(c, &reply);
	if (r < 0)
		return r;
	if (json_object_get(reply, "error")) {
		int wrong = ctl_wrong_socket(c, method, reply);
		if (wrong) {
			json_decref(reply);
			return wrong;
		}
		if (json_out)
			ctl_print_json(reply);
		ctl_print_error(reply);
		json_decref(reply);
		return 1;
	}
	json_t *p = json_object_get(reply, "parameters");
	*ret_params = p ? json_incref(p) : json_object();
	json_decref(reply);
	return 0;
}

/* Uptime as "1d 2h 3m 4s", leaving out leading zero units. */
static void print_uptime(long long s)
{
	if (s >= 86400)
		printf("%lldd ", s / 86400);
	if (s >= 3600)
		printf("%lldh ", s / 3600 % 24);
	if (s >= 60)
		printf("%lldm ", s / 60 % 60);
	printf("%llds", s % 60);
}

/* Shortcut: an integer member of o. */
static long long geti(json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

/* Shortcut: a string member of o, or dflt. */
static const char *gets_or(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : dflt;
}

bool ctl_color(void)
{
	const char *no = getenv("NO_COLOR");
	const char *term = getenv("TERM");
	return isatty(STDOUT_FILENO) && !(no && *no) && !(term && strcmp(term, "dumb") == 0);
}

/* A health word, coloured on a terminal: green when good, yellow when degraded, red. */
static const char *paint(const char *word, char *buf, size_t len)
{
	if (!ctl_color())
		return word;
	const char *code = "31"; /* red */
	if (strcmp(word, "ok") == 0 || strcmp(word, "closed") == 0 || strcmp(word, "ready") == 0 ||
	    strcmp(word, "busy") == 0)
		code = "32";
	else if (strcmp(word, "degraded") == 0 || strcmp(word, "half-open") == 0 ||
		 strcmp(word, "connecting") == 0 || strcmp(word, "handshaking") == 0)
		code = "33";
	snprintf(buf, len, "\033[%sm%s\033[0m", code, word);
	return buf;
}

void ctl_print_sessions(json_t *sessions)
{
	char b[64];
	size_t i;
	json_t *s;
	json_array_foreach(sessions, i, s)
	{
		const char *st = gets_or(s, "state", "?");
		printf("  session %zu: %s%*s %6lld requests, %lld reconnects", i,
		       paint(st, b, sizeof(b)), (int)(11 - (strlen(st) < 11 ? strlen(st) : 11)), "",
		       geti(s, "requests"), geti(s, "reconnects"));
		const char *suite = gets_or(s, "ciphersuite", NULL);
		const char *err = gets_or(s, "lastError", NULL);
		if (suite)
			printf(", %s", suite);
		if (err)
			printf(", last error: %s", err);
		putchar('\n');
	}
}

/* The upstream part of status, if tpad reports one. */
static void print_upstream(json_t *u)
{
	if (!json_is_object(u))
		return;
	char b1[64], b2[64];
	printf("upstream:    %s  %s, breaker %s, queue %lld%s%s\n", gets_or(u, "url", "?"),
	       paint(gets_or(u, "state", "?"), b1, sizeof(b1)),
	       paint(gets_or(u, "breaker", "?"), b2, sizeof(b2)), geti(u, "queue"),
	       gets_or(u, "tls", NULL) ? ", TLS " : "", gets_or(u, "tls", ""));
	json_t *cert = json_object_get(u, "certificate");
	if (json_is_object(cert))
		printf("  CERTIFICATE REFUSED (%s): %s\n", gets_or(cert, "error", "?"),
		       gets_or(cert, "reason", "?"));
	json_t *oa = json_object_get(u, "oauth2");
	if (json_is_object(oa))
		printf("  oauth2:    client %s, customer %s\n", gets_or(oa, "clientId", "?"),
		       gets_or(oa, "customerId", "(no token yet)"));
	if (json_is_object(oa) && gets_or(oa, "refused", NULL))
		printf("  OAUTH2 CLIENT REFUSED: %s\n", gets_or(oa, "refused", "?"));
	if (json_is_object(oa) && gets_or(oa, "failing", NULL))
		printf("  OAUTH2 TOKEN ENDPOINT FAILING: %s\n", gets_or(oa, "failing", "?"));
	json_t *wait = json_object_get(u, "retryAfter");
	if (json_is_integer(wait))
		printf("  THE CLOUD ASKED TO WAIT: %lld s more (Retry-After); calls are answered "
		       "UpstreamUnavailable meanwhile\n",
		       (long long)json_integer_value(wait));
	ctl_print_sessions(json_object_get(u, "sessions"));
	json_t *lat = json_object_get(u, "latency");
	if (json_is_object(lat))
		printf("  latency:   p50 %.1f ms, p99 %.1f ms\n",
		       json_number_value(json_object_get(lat, "p50")),
		       json_number_value(json_object_get(lat, "p99")));
}

/* The store's rows by state; as last counted (and when) if they could not be counted now. */
static void print_store_rows(json_t *s)
{
	json_t *rows = json_object_get(s, "rows");
	const char *why = gets_or(s, "rowsError", NULL);
	if (!json_is_object(rows)) {
		printf("rows not counted yet%s%s\n", why ? ": " : "", why ? why : "");
		return;
	}
	printf("%lld issued, %lld pending, %lld failed", geti(rows, "ISSUED"),
	       geti(rows, "PENDING"), geti(rows, "FAILED"));
	json_t *at = json_object_get(s, "rowsCountedAt");
	if (why && json_is_integer(at)) {
		time_t t = (time_t)json_integer_value(at);
		char when[32];
		struct tm tm;
		if (localtime_r(&t, &tm) && strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm))
			printf(" (as counted at %s)", when);
	}
	putchar('\n');
	if (why)
		printf("  rows:      not counted now: %s\n", why);
}

/* The store part of status, if tpad reports one. */
static void print_store(json_t *s)
{
	if (!json_is_object(s))
		return;
	char b[64];
	printf("store:       %s  ", gets_or(s, "path", "?"));
	print_store_rows(s);
	bool down = json_is_false(json_object_get(s, "up"));
	bool failing = json_is_true(json_object_get(s, "failing"));
	if (down)
		printf("  %s: the database cannot be reached: %s\n", paint("DOWN", b, sizeof(b)),
		       gets_or(s, "downReason", "?"));
	if (failing)
		printf("  %s: transactions are failing now (until one commits again)\n",
		       paint("failing", b, sizeof(b)));
	const char *err = gets_or(s, "lastError", NULL);
	if (err && (down || failing))
		printf("  %s: %s\n", paint("last error", b, sizeof(b)), err);
	else if (err)
		printf("  earlier error (healed since): %s\n", err);
}

/* Whether the store is unhealthy: transactions failing, or the database unreachable. */
static bool store_unhealthy(json_t *store)
{
	if (!json_is_object(store))
		return false;
	if (json_is_false(json_object_get(store, "up")))
		return true;
	json_t *failing = json_object_get(store, "failing");
	return json_is_boolean(failing) ? json_is_true(failing)
					: json_is_string(json_object_get(store, "lastError"));
}

/* Whether a printer of the configuration said it cannot print, or cannot be reached (one
 * not asked yet, just after start, is not counted). */
static bool printer_not_ready(json_t *printers)
{
	size_t i;
	json_t *pr;
	json_array_foreach(printers, i, pr)
	{
		if (json_is_false(json_object_get(pr, "ready")) &&
		    strcmp(gets_or(pr, "state", "unknown"), "unknown") != 0)
			return true;
	}
	return false;
}

/* The exit status status reports: the worst of store, breaker and cloud, then printers
 * (a line without labels still activates). */
static int health_status(json_t *p)
{
	json_t *up = json_object_get(p, "upstream");
	if (store_unhealthy(json_object_get(p, "store")))
		return CTL_EXIT_STORE_FAILING;
	if (json_is_object(up) && strcmp(gets_or(up, "breaker", ""), "open") == 0)
		return CTL_EXIT_BREAKER_OPEN;
	if (json_is_object(up) && strcmp(gets_or(up, "state", ""), "down") == 0)
		return CTL_EXIT_CLOUD_DOWN;
	if (printer_not_ready(json_object_get(p, "printers")))
		return CTL_EXIT_PRINTER;
	return CTL_EXIT_OK;
}

int ctl_status(struct ctl *c, struct ctl_args *a)
{
	json_t *p;
	ctl_reply_timeout(c, CTL_STATUS_TIMEOUT_MS);
	int r = ctl_call(c, "io.tpad.Admin.Status", NULL, a->json, &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	int health = health_status(p);
	if (a->json) {
		ctl_print_json(p);
		json_decref(p);
		return health;
	}
	printf("tpad %s, up ", gets_or(p, "version", "?"));
	print_uptime(geti(p, "uptime"));
	putchar('\n');
	json_t *conns = json_object_get(p, "connections");
	printf("clients:     %lld station, %lld admin\n", geti(conns, "station"),
	       geti(conns, "admin"));
	printf("calls:       %lld (%lld in flight)\n", geti(p, "calls"), geti(p, "callsInFlight"));
	json_t *hit = json_object_get(p, "limitsHit");
	const char *key;
	json_t *v;
	bool any = false;
	printf("limits hit:  ");
	json_object_foreach(hit, key, v)
	{
		if (json_integer_value(v)) {
			printf("%s%s %lld", any ? ", " : "", key, (long long)json_integer_value(v));
			any = true;
		}
	}
	printf("%s\n", any ? "" : "none");
	print_upstream(json_object_get(p, "upstream"));
	print_store(json_object_get(p, "store"));
	const char *profile = gets_or(p, "profile", NULL);
	if (profile)
		printf("profile:     %s\n", profile);
	json_t *k = json_object_get(p, "appKeys");
	if (json_is_object(k) && strcmp(gets_or(k, "source", ""), "cloud-hsm") == 0) {
		printf("app keys:    cloud-hsm pool %lld ready (low-water %lld), %lld handed out, "
		       "%lld found empty%s%s\n",
		       geti(k, "available"), geti(k, "lowWater"), geti(k, "handedOut"),
		       geti(k, "empty"), gets_or(k, "lastError", NULL) ? "; last error: " : "",
		       gets_or(k, "lastError", ""));
	}
	ctl_print_printers(json_object_get(p, "printers"));
	json_decref(p);
	return health;
}

int ctl_metrics(struct ctl *c, struct ctl_args *a)
{
	json_t *p;
	json_t *params = a->format ? json_pack("{s:s}", "format", a->format) : NULL;
	ctl_reply_timeout(c, CTL_STATUS_TIMEOUT_MS);
	int r = ctl_call(c, "io.tpad.Admin.Metrics", params, a->json, &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	if (a->json)
		ctl_print_json(p);
	else
		fputs(gets_or(p, "text", ""), stdout);
	json_decref(p);
	return 0;
}

int ctl_write_file(const char *path, const void *data, size_t len, bool atomic)
{
	char tmp[4096];
	const char *target = path;
	if (atomic) {
		if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >=
		    (int)sizeof(tmp))
			return -ENAMETOOLONG;
		target = tmp;
	}
	int fd = open(target, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	const char *p = data;
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			close(fd);
			unlink(target);
			return r;
		}
		p += n;
		len -= (size_t)n;
	}
	if (close(fd) < 0 || (atomic && rename(tmp, path) < 0)) {
		int r = -errno;
		unlink(target);
		return r;
	}
	return 0;
}

json_t *ctl_qr_options(const struct ctl_args *a, const char *format)
{
	if (!format && !a->scale && !a->margin_set && !a->ec_level && !a->label && !a->code)
		return NULL;
	json_t *q = json_object();
	if (format)
		json_object_set_new(q, "format", json_string(format));
	if (a->scale)
		json_object_set_new(q, "scale", json_integer(a->scale));
	if (a->margin_set)
		json_object_set_new(q, "margin", json_integer(a->margin));
	if (a->ec_level)
		json_object_set_new(q, "ecLevel", json_string(a->ec_level));
	if (a->label || a->code)
		json_object_set_new(q, "label", json_boolean(a->label));
	return q;
}

int ctl_backup(struct ctl *c, struct ctl_args *a)
{
	/* tpad resolves the path: make it absolute here, against tpactl's directory. */
	const char *file = a->argv[0];
	char path[PATH_MAX];
	if (file[0] == '/') {
		snprintf(path, sizeof(path), "%s", file);
	} else {
		char cwd[PATH_MAX];
		if (!getcwd(cwd, sizeof(cwd)) ||
		    snprintf(path, sizeof(path), "%s/%s", cwd, file) >= (int)sizeof(path)) {
			fprintf(stderr, "tpactl: cannot resolve %s: %s\n", file, strerror(errno));
			return 1;
		}
	}
	json_t *p;
	int r = ctl_call(c, "io.tpad.Admin.Backup", json_pack("{s:s}", "path", path), a->json, &p);
	if (r != 0)
		return r < 0 ? 1 : r;
	if (a->json)
		ctl_print_json(p);
	else
		printf("%s: %lld bytes, %lld pages, integrity ok, %lld ms\n",
		       gets_or(p, "path", path), geti(p, "bytes"), geti(p, "pages"),
		       geti(p, "milliseconds"));
	json_decref(p);
	return 0;
}
