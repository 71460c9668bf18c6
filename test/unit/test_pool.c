/* The upstream pool and TPA profile against tpa-sim on loopback. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/event.h>
#include <jansson.h>
#include <netinet/in.h>

#include "config.h"
#include "hex.h"
#include "tap.h"
#include "tpa.h"

#define PSK_GOOD "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define PSK_BAD "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define IDENTITY "tpad-test"

static const char *sim_path;
static char tmpdir[64];
static struct event_base *base;

struct sim {
	pid_t pid;
	int port;
	int ctl;
};

struct answer {
	int calls;
	struct tpa_result res;
};

/* Milliseconds on the monotonic clock. */
static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Run the loop until cond holds or ms pass. */
#define RUN_UNTIL(cond, ms)                                                                        \
	do {                                                                                       \
		uint64_t end_ = now_ms() + (ms);                                                   \
		while (!(cond) && now_ms() < end_)                                                 \
			event_base_loop(base, EVLOOP_ONCE);                                        \
	} while (0)

/* Keeps EVLOOP_ONCE from blocking for long. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Record a TPA answer. */
static void on_done(const struct tpa_result *r, void *arg)
{
	struct answer *a = arg;

	a->calls++;
	a->res = *r;
}

/* Write text to tmpdir/name with mode 0600 and return the path (static buffer per call). */
static char *write_file(const char *name, const char *text)
{
	char *path = malloc(256);

	snprintf(path, 256, "%s/%s", tmpdir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
		perror(path);
		exit(1);
	}
	close(fd);
	return path;
}

/* Read an integer from a port file written by tpa-sim, waiting up to 5 s. */
static int read_port(const char *path, pid_t pid)
{
	uint64_t end = now_ms() + 5000;

	while (now_ms() < end) {
		FILE *f = fopen(path, "r");
		int port = 0;
		if (f) {
			if (fscanf(f, "%d", &port) != 1)
				port = 0;
			fclose(f);
			if (port > 0)
				return port;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return -1;
		usleep(10000);
	}
	return -1;
}

/* Start tpa-sim on 127.0.0.1:port (0: any) with TLS unless plain, plus extra args. */
static int sim_start(struct sim *s, int port, bool plain, const char *const *extra)
{
	char listen[32], api_file[128], ctl_file[128], psk_file[128];
	const char *argv[64];
	int n = 0;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(api_file, sizeof(api_file), "%s/api.port", tmpdir);
	snprintf(ctl_file, sizeof(ctl_file), "%s/ctl.port", tmpdir);
	snprintf(psk_file, sizeof(psk_file), "%s/sim.psk", tmpdir);
	unlink(api_file);
	unlink(ctl_file);
	argv[n++] = sim_path;
	argv[n++] = "--listen";
	argv[n++] = listen;
	argv[n++] = "--port-file";
	argv[n++] = api_file;
	argv[n++] = "--control";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = "--control-port-file";
	argv[n++] = ctl_file;
	if (plain) {
		argv[n++] = "--plain";
	} else {
		argv[n++] = "--psk-identity";
		argv[n++] = IDENTITY;
		argv[n++] = "--psk-file";
		argv[n++] = psk_file;
	}
	for (; extra && *extra && n < 62; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;

	s->pid = fork();
	if (s->pid < 0)
		return -errno;
	if (s->pid == 0) {
		int null = open("/dev/null", O_WRONLY);
		dup2(null, 1);
		if (!getenv("TEST_VERBOSE"))
			dup2(null, 2);
		execv(sim_path, (char *const *)argv);
		_exit(127);
	}
	s->port = read_port(api_file, s->pid);
	s->ctl = read_port(ctl_file, s->pid);
	return s->port > 0 && s->ctl > 0 ? 0 : -EIO;
}

/* Stop tpa-sim and reap it. */
static void sim_stop(struct sim *s)
{
	if (s->pid <= 0)
		return;
	kill(s->pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
			s->pid = 0;
			return;
		}
		usleep(10000);
	}
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	s->pid = 0;
}

/* One blocking HTTP exchange with the control port; returns the parsed JSON body. */
static json_t *sim_control(struct sim *s, const char *method, const char *path, const char *body)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->ctl)};
	char req[1024], resp[65536];
	size_t len = 0;

	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	struct timeval tv = {.tv_sec = 5};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int n = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
			 method, path, body ? strlen(body) : 0, body ? body : "");
	if (write(fd, req, (size_t)n) != n) {
		close(fd);
		return NULL;
	}
	for (;;) {
		ssize_t r = read(fd, resp + len, sizeof(resp) - 1 - len);
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	resp[len] = '\0';
	char *b = strstr(resp, "\r\n\r\n");
	return b ? json_loads(b + 4, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
}

/* A counter of tpa-sim's, or -1. */
static long long sim_counter(struct sim *s, const char *name)
{
	json_t *o = sim_control(s, "GET", "/counters", NULL);
	long long v = json_is_integer(json_object_get(o, name))
			  ? (long long)json_integer_value(json_object_get(o, name))
			  : -1;
	json_decref(o);
	return v;
}

/* Change tpa-sim's faults at run time. */
static void sim_faults(struct sim *s, const char *json)
{
	json_t *o = sim_control(s, "POST", "/faults", json);
	CHECK(o != NULL);
	json_decref(o);
}

/* Replace a config string. */
static void set_str(char **slot, const char *v)
{
	free(*slot);
	*slot = v ? strdup(v) : NULL;
}

/* Defaults tuned for quick tests against a server on port. */
static void test_config(struct config *c, const char *scheme, int port, unsigned sessions)
{
	char url[64];

	config_defaults(c);
	snprintf(url, sizeof(url), "%s://127.0.0.1:%d", scheme, port);
	set_str(&c->upstream_url, url);
	set_str(&c->upstream_psk_identity, IDENTITY);
	char *psk = write_file("client.psk", PSK_GOOD "\n");
	set_str(&c->upstream_psk_file, psk);
	free(psk);
	c->upstream_sessions = sessions;
	c->upstream_connect_timeout_ms = 1000;
	c->upstream_handshake_timeout_ms = 1000;
	c->upstream_request_timeout_ms = 3000;
	c->upstream_backoff_min_ms = 20;
	c->upstream_backoff_max_ms = 200;
	c->upstream_breaker_threshold = 1000;
	c->upstream_breaker_cooldown_ms = 300;
}

/* A record with a Secure Element and a DevEUI derived from n. */
static struct tpa_record record(unsigned n)
{
	struct tpa_record r;

	memset(&r, 0, sizeof(r));
	snprintf(r.dev_eui, sizeof(r.dev_eui), "0123D34566%06X", n);
	snprintf(r.join_eui, sizeof(r.join_eui), "70B3D57ED0000000");
	snprintf(r.tkm_info, sizeof(r.tkm_info), "3111%s", r.dev_eui);
	return r;
}

/* Import one record and wait for the answer. */
static struct tpa_result import_wait(struct tpa *t, unsigned n)
{
	struct answer a = {0};
	struct tpa_record r = record(n);

	int e = tpa_import(t, &r, on_done, &a);
	CHECK_INT(e, 0);
	CHECK_INT(a.calls, 0); /* never called from inside tpa_import() */
	if (e == 0)
		RUN_UNTIL(a.calls > 0, 8000);
	CHECK_INT(a.calls, e == 0 ? 1 : 0);
	return a.res;
}

/* Query one record and wait for the answer. */
static struct tpa_result query_wait(struct tpa *t, unsigned n)
{
	struct answer a = {0};
	struct tpa_record r = record(n);

	CHECK_INT(tpa_query(t, r.dev_eui, on_done, &a), 0);
	CHECK_INT(a.calls, 0);
	RUN_UNTIL(a.calls > 0, 8000);
	CHECK_INT(a.calls, 1);
	return a.res;
}

/* How many of n answers arrived. */
static int count_calls(const struct answer *a, int n)
{
	int done = 0;

	for (int i = 0; i < n; i++)
		done += a[i].calls;
	return done;
}

/* Sessions up, from the counters. */
static unsigned up(struct tpa *t)
{
	struct tpa_counters c;

	tpa_get_counters(t, &c);
	return c.pool.up;
}

/* A string member of a session in the status, or NULL. */
static const char *session_field(json_t *st, size_t i, const char *name)
{
	return json_string_value(
	    json_object_get(json_array_get(json_object_get(st, "sessions"), i), name));
}

/*
 * tpa_new() with c against the simulator s, then wait up to ms for n sessions to be up.
 * NULL on failure, said, with s stopped and c freed.
 */
static struct tpa *tpa_up(struct sim *s, struct config *c, unsigned n, unsigned ms)
{
	char err[256] = "";
	struct tpa *t = tpa_new(base, c, err, sizeof(err));
	CHECK(t != NULL);
	if (!t) {
		fprintf(stderr, "tpa_new: %s\n", err);
		sim_stop(s);
		config_free(c);
		return NULL;
	}
	RUN_UNTIL(up(t) == n, ms);
	return t;
}

/* Warm-up, keep-alive, answers, faults, idle close with resumption, server restart. */
static void test_tls(void)
{
	struct sim s;
	struct config c;

	CHECK_INT(sim_start(&s, 0, false, NULL), 0);
	test_config(&c, "https", s.port, 3);
	struct tpa *t = tpa_up(&s, &c, 3, 5000);
	if (!t)
		return;
	CHECK_INT(up(t), 3);
	CHECK_INT(sim_counter(&s, "handshakes"), 3);

	json_t *st = tpa_status_json(t);
	CHECK_STR(json_string_value(json_object_get(st, "state")), "ok");
	CHECK_STR(json_string_value(json_object_get(st, "breaker")), "closed");
	CHECK_INT(json_array_size(json_object_get(st, "sessions")), 3);
	CHECK_STR(session_field(st, 0, "state"), "ready");
	CHECK_STR(session_field(st, 0, "ciphersuite"),
		  "TLS-ECDHE-PSK-WITH-CHACHA20-POLY1305-SHA256");
	CHECK(json_is_null(
	    json_object_get(json_array_get(json_object_get(st, "sessions"), 0), "lastError")));
	json_decref(st);
	char line[256];
	tpa_status_line(t, line, sizeof(line));
	CHECK_STR(line, "upstream ok 3/3 ready");

	/* Import, then the read-only query finds the same token; unknown devices are not found. */
	struct tpa_result r = import_wait(t, 1);
	CHECK_INT(r.outcome, TPA_OK);
	CHECK(r.http_status == 200 || r.http_status == 201);
	CHECK(hex_valid_any(r.owner_token));
	char token[129];
	strcpy(token, r.owner_token);
	r = query_wait(t, 1);
	CHECK_INT(r.outcome, TPA_OK);
	CHECK_STR(r.owner_token, token);
	r = query_wait(t, 999);
	CHECK_INT(r.outcome, TPA_NOT_FOUND);
	r = import_wait(t, 1);
	CHECK_INT(r.outcome, TPA_CONFLICT);
	CHECK_INT(r.http_status, 409);

	/* Many concurrent imports over the warm sessions: no new connection. */
	struct answer many[20];
	memset(many, 0, sizeof(many));
	for (unsigned i = 0; i < 20; i++) {
		struct tpa_record rec = record(100 + i);
		CHECK_INT(tpa_import(t, &rec, on_done, &many[i]), 0);
	}
	RUN_UNTIL(count_calls(many, 20) == 20, 8000);
	for (unsigned i = 0; i < 20; i++)
		CHECK_INT(many[i].res.outcome, TPA_OK);
	CHECK_INT(sim_counter(&s, "connections"), 3);
	CHECK_INT(sim_counter(&s, "imports"), 21);

	/* Faults: rate limit with Retry-After, 5xx, answers lost after or before the import. */
	sim_faults(&s, "{\"rate_429\":1,\"retry_after\":1}");
	r = import_wait(t, 2);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.http_status, 429);
	CHECK_INT(r.retry_after, 1);
	/* Kept to: until then a call is answered without being sent. */
	sim_faults(&s, "{\"rate_429\":0}");
	long long requests = sim_counter(&s, "requests");
	r = import_wait(t, 2);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.http_status, 0);
	CHECK_INT(r.retry_after, 1);
	CHECK(strstr(r.reason, "asked to wait (HTTP 429") != NULL);
	CHECK_INT(sim_counter(&s, "requests"), requests);
	uint64_t held_until = now_ms() + 1100;
	RUN_UNTIL(now_ms() >= held_until, 1200);
	sim_faults(&s, "{\"rate_5xx\":1}");
	r = import_wait(t, 2);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK_INT(r.http_status, 503);
	sim_faults(&s, "{\"rate_5xx\":0,\"drop_before_answer\":1}");
	long long imports = sim_counter(&s, "imports");
	r = import_wait(t, 3);
	CHECK_INT(r.outcome, TPA_UNKNOWN);
	CHECK(r.reason[0] != '\0');
	sim_faults(&s, "{\"drop_before_answer\":0}");
	CHECK_INT(sim_counter(&s, "imports"), imports + 1); /* sent once, never again */
	r = query_wait(t, 3);
	CHECK_INT(r.outcome, TPA_OK); /* settled: the cloud has it */
	sim_faults(&s, "{\"drop_before_import\":1}");
	r = import_wait(t, 4);
	CHECK_INT(r.outcome, TPA_UNKNOWN);
	sim_faults(&s, "{\"drop_before_import\":0,\"malformed\":1}");
	r = import_wait(t, 5);
	CHECK_INT(r.outcome, TPA_UNKNOWN);
	sim_faults(&s, "{\"malformed\":0}");
	r = query_wait(t, 4);
	CHECK_INT(r.outcome, TPA_NOT_FOUND); /* settled: the cloud never had it */

	/* The server closes idle sessions: they come back, resuming the TLS session. */
	RUN_UNTIL(up(t) == 3, 3000);
	long long resumed = sim_counter(&s, "resumed");
	sim_faults(&s, "{\"idle_close_ms\":150}");
	/* tpa-sim arms its idle timer when a connection finishes an answer: use all three. */
	struct answer busy[3];
	memset(busy, 0, sizeof(busy));
	for (unsigned i = 0; i < 3; i++) {
		struct tpa_record rec = record(150 + i);
		CHECK_INT(tpa_import(t, &rec, on_done, &busy[i]), 0);
	}
	RUN_UNTIL(count_calls(busy, 3) == 3, 4000);
	RUN_UNTIL(sim_counter(&s, "resumed") >= resumed + 3, 4000);
	CHECK(sim_counter(&s, "resumed") >= resumed + 3);
	sim_faults(&s, "{\"idle_close_ms\":0}");
	struct tpa_counters tc;
	tpa_get_counters(t, &tc);
	CHECK(tc.pool.resumed >= 3);
	RUN_UNTIL(up(t) == 3, 3000);
	r = import_wait(t, 6);
	CHECK_INT(r.outcome, TPA_OK);

	/* Server restart: sessions notice, report it, and come back on their own. */
	int port = s.port;
	sim_stop(&s);
	RUN_UNTIL(up(t) == 0, 3000);
	CHECK_INT(up(t), 0);
	r = import_wait(t, 7);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	st = tpa_status_json(t);
	CHECK_STR(json_string_value(json_object_get(st, "state")), "down");
	CHECK(session_field(st, 0, "lastError") != NULL);
	json_decref(st);
	CHECK_INT(sim_start(&s, port, false, NULL), 0);
	RUN_UNTIL(up(t) == 3, 5000);
	CHECK_INT(up(t), 3);
	r = import_wait(t, 7);
	CHECK_INT(r.outcome, TPA_OK);
	st = tpa_status_json(t);
	json_t *reconnects =
	    json_object_get(json_array_get(json_object_get(st, "sessions"), 0), "reconnects");
	CHECK(json_integer_value(reconnects) >= 1);
	json_decref(st);

	tpa_free(t);
	sim_stop(&s);
	config_free(&c);
}

/* A wrong PSK or identity: sessions stay down with a clear reason; the process lives. */
static void test_wrong_psk(void)
{
	struct sim s;
	struct config c;
	char err[256] = "";

	CHECK_INT(sim_start(&s, 0, false, NULL), 0);
	for (int pass = 0; pass < 2; pass++) {
		test_config(&c, "https", s.port, 2);
		if (pass == 0) {
			char *bad = write_file("bad.psk", PSK_BAD);
			set_str(&c.upstream_psk_file, bad);
			free(bad);
		} else {
			set_str(&c.upstream_psk_identity, "someone-else");
		}
		c.upstream_request_timeout_ms = 500;
		struct tpa *t = tpa_new(base, &c, err, sizeof(err));
		CHECK(t != NULL);
		if (!t)
			break;
		uint64_t until = now_ms() + 600;
		RUN_UNTIL(now_ms() >= until, 1000);
		CHECK_INT(up(t), 0);
		json_t *st = tpa_status_json(t);
		const char *le = session_field(st, 0, "lastError");
		/* A refused identity may reach us as the alert or as a reset. */
		CHECK(le && strstr(le, pass == 0 ? "wrong PSK" : "PSK identity"));
		if (le && getenv("TEST_VERBOSE"))
			fprintf(stderr, "lastError: %s\n", le);
		json_decref(st);
		struct tpa_result r = import_wait(t, 50);
		CHECK_INT(r.outcome, TPA_UNAVAILABLE);
		CHECK(r.reason[0] != '\0');
		tpa_free(t);
		config_free(&c);
	}
	CHECK_INT(sim_counter(&s, "imports"), 0);
	sim_stop(&s);
}

/* A free port, closed again: connecting to it is refused. */
static int refused_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t al = sizeof(a);
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &al);
	close(fd);
	return ntohs(a.sin_port);
}

/* Nobody listening: the pool starts anyway, the breaker opens and fails fast. */
static void test_breaker(void)
{
	struct config c;
	char err[256] = "";
	test_config(&c, "https", refused_port(), 2);
	c.upstream_breaker_threshold = 3;
	c.upstream_breaker_cooldown_ms = 2000;
	struct tpa *t = tpa_new(base, &c, err, sizeof(err));
	CHECK(t != NULL);
	if (!t)
		return;
	struct tpa_counters tc;
	RUN_UNTIL((tpa_get_counters(t, &tc), tc.pool.breaker == POOL_BREAKER_OPEN), 3000);
	CHECK_INT(tc.pool.breaker, POOL_BREAKER_OPEN);
	uint64_t t0 = now_ms();
	struct tpa_result r = import_wait(t, 60);
	CHECK(now_ms() - t0 < 200);
	CHECK_INT(r.outcome, TPA_UNAVAILABLE);
	CHECK(strstr(r.reason, "breaker") != NULL);
	CHECK(strstr(r.reason, "refused") != NULL);
	char line[256];
	tpa_status_line(t, line, sizeof(line));
	CHECK(strncmp(line, "upstream down 0/2 ready, breaker open: ", 39) == 0);
	json_t *st = tpa_status_json(t);
	CHECK_STR(json_string_value(json_object_get(st, "breaker")), "open");
	json_decref(st);
	tpa_free(t);
	config_free(&c);

	/* Configuration errors are reported by tpa_new(). */
	test_config(&c, "https", 443, 1);
	set_str(&c.upstream_ciphersuites, "TLS-PSK-WITH-AES-128-GCM-SHA256,TLS-NO-SUCH-SUITE");
	CHECK(tpa_new(base, &c, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "TLS-NO-SUCH-SUITE") != NULL);
	set_str(&c.upstream_ciphersuites, "TLS-ECDHE-RSA-WITH-AES-128-GCM-SHA256");
	CHECK(tpa_new(base, &c, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "not a PSK") != NULL);
	set_str(&c.upstream_ciphersuites, "TLS-PSK-WITH-AES-128-GCM-SHA256");
	set_str(&c.upstream_url, "ftp://127.0.0.1");
	CHECK(tpa_new(base, &c, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "upstream.url") != NULL);
	set_str(&c.upstream_url, "https://127.0.0.1");
	set_str(&c.upstream_psk_file, "/nonexistent/psk");
	CHECK(tpa_new(base, &c, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "PSK") != NULL);
	config_free(&c);
}

struct one_result {
	int calls, err;
	bool sent;
	uint64_t at;
};

static void one_done(const struct pool_result *r, void *arg)
{
	struct one_result *o = arg;
	o->calls++;
	o->err = r->err;
	o->sent = r->sent;
	o->at = now_ms();
}

/*
 * fail_unreachable (the webhook's): with nobody listening, a request fails as soon as a
 * connection is refused, unsent, instead of at its time-out; each submit connects anew,
 * whatever the backoff. Without it the request waits.
 */
static void test_fail_unreachable(void)
{
	char url[64], err[256] = "";
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", refused_port());
	static const char req[] = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n";
	for (int fast = 1; fast >= 0; fast--) {
		struct pool_options o = {.url = url,
					 .name = "webhook",
					 .sessions = 1,
					 .queue = 4,
					 .connect_timeout_ms = 1000,
					 .request_timeout_ms = 1500,
					 .backoff_min_ms = 10000, /* a reconnect would be late */
					 .backoff_max_ms = 10000,
					 .breaker_threshold = 1000000,
					 .breaker_cooldown_ms = 1000,
					 .max_response = 4096,
					 .fail_unreachable = fast};
		struct pool *p = pool_new(base, &o, err, sizeof(err));
		CHECK(p != NULL);
		if (!p)
			return;
		for (int k = 0; k < 2; k++) { /* the second one while the session backs off */
			struct one_result r = {0};
			uint64_t t0 = now_ms();
			CHECK_INT(pool_submit(p, req, sizeof(req) - 1, one_done, &r), 0);
			RUN_UNTIL(r.calls > 0, 600);
			if (fast) {
				CHECK_INT(r.calls, 1);
				CHECK_INT(r.err, -ECONNREFUSED);
				CHECK(!r.sent);
				CHECK(r.at - t0 < 500);
			} else {
				CHECK_INT(r.calls, 0); /* still waiting for its time-out */
				RUN_UNTIL(r.calls > 0, 3000);
				CHECK_INT(r.calls, 1);
				CHECK(r.at - t0 >= 1400);
			}
		}
		pool_free(p);
	}
}

/*
 * Failures of requests that reached the server, each on a connection it then closed:
 * 5xx answers (a load balancer with no backend), or no answer at all (a server that drops
 * each connection once it has the request: an https:// server behind an http:// URL). The
 * breaker they open stays open for its cool-down although every reconnect succeeds (it
 * was closed by the next handshake, and every request went on reaching the server).
 */
static void test_breaker_by_answers(void)
{
	static const struct {
		const char *faults;
		int status; /* of each failed request: 503, or 0 for none */
	} kinds[] = {{"{\"rate_5xx\":1,\"reset_after\":1}", 503},
		     {"{\"drop_before_import\":1}", 0}};
	for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
		struct sim s;
		struct config c;
		CHECK_INT(sim_start(&s, 0, false, NULL), 0);
		test_config(&c, "https", s.port, 1);
		c.upstream_breaker_threshold = 3;
		c.upstream_breaker_cooldown_ms = 3000;
		struct tpa *t = tpa_up(&s, &c, 1, 5000);
		if (!t)
			return;
		sim_faults(&s, kinds[k].faults);
		unsigned failed_fast = 0, reached = 0;
		long long hs = sim_counter(&s, "handshakes");
		for (unsigned i = 0; i < 10; i++) {
			struct tpa_result r = import_wait(t, 200 + 20 * (unsigned)k + i);
			if (strstr(r.reason, "breaker")) {
				CHECK_INT(r.outcome, TPA_UNAVAILABLE);
				failed_fast++;
				continue;
			}
			CHECK_INT(r.http_status, kinds[k].status);
			reached++;
			/* The server closed that connection: the next request goes on a new one. */
			RUN_UNTIL(sim_counter(&s, "handshakes") > hs && up(t) == 1, 3000);
			hs = sim_counter(&s, "handshakes");
		}
		CHECK_INT(reached, 3); /* then the breaker: nothing reaches the server */
		CHECK_INT(failed_fast, 7);
		struct tpa_counters tc;
		tpa_get_counters(t, &tc);
		CHECK_INT(tc.pool.breaker, POOL_BREAKER_OPEN);
		CHECK_INT(up(t), 1);
		tpa_free(t);
		sim_stop(&s);
		config_free(&c);
	}
}

/* A bounded queue: overflow is refused at once; latency shows in the status. */
static void test_queue(void)
{
	struct sim s;
	struct config c;
	const char *extra[] = {"--latency-ms", "200", NULL};

	CHECK_INT(sim_start(&s, 0, true, extra), 0);
	test_config(&c, "http", s.port, 1);
	c.upstream_queue = 2;
	struct tpa *t = tpa_up(&s, &c, 1, 3000);
	if (!t)
		return;
	struct answer a[4];
	memset(a, 0, sizeof(a));
	int rc[4];
	for (unsigned i = 0; i < 4; i++) {
		struct tpa_record rec = record(200 + i);
		rc[i] = tpa_import(t, &rec, on_done, &a[i]);
	}
	CHECK_INT(rc[0], 0);
	CHECK_INT(rc[1], 0);
	CHECK_INT(rc[2], 0);
	CHECK_INT(rc[3], -EBUSY);
	CHECK_INT(tpa_pending(t), 3);
	RUN_UNTIL(a[0].calls + a[1].calls + a[2].calls == 3, 5000);
	for (unsigned i = 0; i < 3; i++)
		CHECK_INT(a[i].res.outcome, TPA_OK);
	CHECK_INT(a[3].calls, 0);
	CHECK_INT(tpa_pending(t), 0);
	json_t *st = tpa_status_json(t);
	json_t *lat = json_object_get(st, "latency");
	CHECK(json_integer_value(json_object_get(lat, "p50")) >= 200);
	CHECK(json_integer_value(json_object_get(lat, "p99")) >= 600);
	json_decref(st);
	struct tpa_counters tc;
	tpa_get_counters(t, &tc);
	CHECK_INT(tc.imports, 3);
	CHECK_INT(tc.outcomes[TPA_OK], 3);
	CHECK_INT(tc.latency_count, 3);
	CHECK_INT(tc.bucket_count[TPA_LATENCY_BUCKETS - 1], 3);
	CHECK_INT(tc.bucket_count[0], 0);
	CHECK_INT(tc.pool.queue_full, 1);

	/* Bad input is refused before queuing. */
	struct tpa_record bad = record(1);
	bad.app_key[0] = 'A';
	CHECK_INT(tpa_import(t, &bad, on_done, &a[0]), -EINVAL);
	CHECK_INT(tpa_query(t, "XYZ", on_done, &a[0]), -EINVAL);
	tpa_free(t);
	sim_stop(&s);
	config_free(&c);
}

/* OAuth2: a token is fetched once, reused, refreshed before expiry; a bad secret is refused. */
static void test_oauth2(void)
{
	struct sim s;
	struct config c;
	char err[256] = "";
	char *secret = write_file("oauth.secret", "s3cr3t&=x\n");
	char *bad = write_file("oauth.bad", "wrong\n");
	const char *extra[] = {"--oauth2", "--client-id", "tpad", "--client-secret-file",
			       secret,	   "--token-ttl", "2",	  NULL};

	CHECK_INT(sim_start(&s, 0, true, extra), 0);
	test_config(&c, "http", s.port, 2);
	c.upstream_auth = UPSTREAM_AUTH_PSK_OAUTH2;
	set_str(&c.oauth2_client_id, "tpad");
	set_str(&c.oauth2_token_url, "/oauth/token");
	set_str(&c.oauth2_secret_file, secret);
	struct tpa *t = tpa_new(base, &c, err, sizeof(err));
	CHECK(t != NULL);
	if (t) {
		struct tpa_counters tc;
		struct tpa_result r = import_wait(t, 300);
		CHECK_INT(r.outcome, TPA_OK);
		r = import_wait(t, 301);
		CHECK_INT(r.outcome, TPA_OK);
		tpa_get_counters(t, &tc);
		CHECK_INT(tc.token_requests, 1);
		uint64_t until = now_ms() + 1200;
		RUN_UNTIL(now_ms() >= until, 2000);
		r = query_wait(t, 300);
		CHECK_INT(r.outcome, TPA_OK);
		tpa_get_counters(t, &tc);
		CHECK_INT(tc.token_requests, 2);
		/* A token the cloud stopped honouring: one 401, a new token, the call again. */
		json_decref(sim_control(&s, "POST", "/revoke-tokens", "{}"));
		long long imports = sim_counter(&s, "imports");
		r = import_wait(t, 310);
		CHECK_INT(r.outcome, TPA_OK);
		tpa_get_counters(t, &tc);
		CHECK_INT(tc.token_requests, 3);
		CHECK_INT(sim_counter(&s, "imports"), imports + 1);
		/*
		 * Many calls in flight with the revoked token: the first 401 drops it, one new
		 * token serves them all; the later 401s, for the old token, keep the new one.
		 */
		json_decref(sim_control(&s, "POST", "/revoke-tokens", "{}"));
		struct answer many[8];
		memset(many, 0, sizeof(many));
		for (unsigned i = 0; i < 8; i++) {
			struct tpa_record rec = record(320 + i);
			CHECK_INT(tpa_import(t, &rec, on_done, &many[i]), 0);
		}
		RUN_UNTIL(count_calls(many, 8) == 8, 8000);
		for (unsigned i = 0; i < 8; i++)
			CHECK_INT(many[i].res.outcome, TPA_OK);
		tpa_get_counters(t, &tc);
		CHECK_INT(tc.token_requests, 4);
		tpa_free(t);
	}

	set_str(&c.oauth2_secret_file, bad);
	t = tpa_new(base, &c, err, sizeof(err));
	CHECK(t != NULL);
	if (t) {
		struct tpa_result r = import_wait(t, 302);
		CHECK_INT(r.outcome, TPA_REJECTED);
		CHECK_INT(r.http_status, 0); /* the token endpoint's 401: the API never answered */
		CHECK(strstr(r.reason, "OAuth2") != NULL);
		tpa_free(t);
	}
	CHECK_INT(sim_counter(&s, "imports"), 11);

	set_str(&c.oauth2_token_url, "https://elsewhere.example/token");
	CHECK(tpa_new(base, &c, err, sizeof(err)) == NULL);
	CHECK(strstr(err, "oauth2.token-url") != NULL);
	sim_stop(&s);
	config_free(&c);
	free(secret);
	free(bad);
}

/* A host name goes through evdns (localhost from /etc/hosts). */
static void test_dns(void)
{
	struct sim s;
	struct config c;
	char err[256] = "", url[64];

	CHECK_INT(sim_start(&s, 0, true, NULL), 0);
	test_config(&c, "http", s.port, 2);
	snprintf(url, sizeof(url), "http://localhost:%d", s.port);
	set_str(&c.upstream_url, url);
	struct tpa *t = tpa_new(base, &c, err, sizeof(err));
	CHECK(t != NULL);
	if (t) {
		struct tpa_result r = import_wait(t, 400);
		CHECK_INT(r.outcome, TPA_OK);
		tpa_free(t);
	}
	sim_stop(&s);
	config_free(&c);
}

/* Remove the temporary directory's files. */
static void cleanup(void)
{
	const char *names[] = {"api.port", "ctl.port",	   "sim.psk",  "client.psk",
			       "bad.psk",  "oauth.secret", "oauth.bad"};
	char p[256];

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
		unlink(p);
	}
	rmdir(tmpdir);
}

/* pool_watch_look: one outage is one opening, paced "still" lines, one closing. */
static void test_watch(void)
{
	const uint64_t s1 = 1000000u;
	struct pool_watch w = {0};
	struct pool_stats st = {.breaker = POOL_BREAKER_CLOSED};
	uint64_t open_s, reopens;
	CHECK(pool_watch_look(&w, &st, 1 * s1, &open_s, &reopens) == 0);
	st.breaker = POOL_BREAKER_OPEN;
	st.breaker_opens = 1;
	CHECK(pool_watch_look(&w, &st, 2 * s1, &open_s, &reopens) == POOL_WATCH_OPENED);
	/* Half-open and open again every few seconds: nothing more for a minute. */
	for (uint64_t t = 3; t < 62; t++) {
		st.breaker = t % 5 ? POOL_BREAKER_OPEN : POOL_BREAKER_HALF_OPEN;
		st.breaker_opens += t % 5 == 1;
		CHECK(pool_watch_look(&w, &st, t * s1, &open_s, &reopens) == 0);
	}
	st.breaker = POOL_BREAKER_OPEN;
	CHECK(pool_watch_look(&w, &st, 62 * s1, &open_s, &reopens) == POOL_WATCH_STILL);
	CHECK(open_s == 60 && reopens == st.breaker_opens - 1 && reopens > 0);
	/* Then after twice as long, up to every 10 minutes. */
	CHECK(pool_watch_look(&w, &st, 181 * s1, &open_s, &reopens) == 0);
	CHECK(pool_watch_look(&w, &st, 182 * s1, &open_s, &reopens) == POOL_WATCH_STILL);
	uint64_t t = 182;
	for (int i = 0; i < 6; i++) {
		uint64_t next = t + 1;
		while (pool_watch_look(&w, &st, next * s1, &open_s, &reopens) == 0)
			next++;
		CHECK(next - t <= 600);
		t = next;
	}
	CHECK(t - 182 > 1000); /* it doubled */
	st.breaker = POOL_BREAKER_CLOSED;
	CHECK(pool_watch_look(&w, &st, (t + 5) * s1, &open_s, &reopens) == POOL_WATCH_CLOSED);
	CHECK(open_s == t + 3);
	CHECK(pool_watch_look(&w, &st, (t + 6) * s1, &open_s, &reopens) == 0);
	/* Opened and closed between two looks: both are told. */
	st.breaker_opens++;
	CHECK(pool_watch_look(&w, &st, (t + 7) * s1, &open_s, &reopens) ==
	      (POOL_WATCH_OPENED | POOL_WATCH_CLOSED));
	/* A breaker that opened before the first look (at start) is told. */
	struct pool_watch w2 = {0};
	st.breaker = POOL_BREAKER_OPEN;
	CHECK(pool_watch_look(&w2, &st, 1 * s1, &open_s, &reopens) == POOL_WATCH_OPENED);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: test-pool TPA-SIM\n");
		return 2;
	}
	sim_path = argv[1];
	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	unsetenv("CREDENTIALS_DIRECTORY");
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test-pool.XXXXXX");
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 1;
	}
	free(write_file("sim.psk", PSK_GOOD "\n"));
	base = event_base_new();
	struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	struct timeval tv = {.tv_usec = 10000};
	event_add(tick, &tv);

	test_watch();
	test_tls();
	test_wrong_psk();
	test_breaker();
	test_fail_unreachable();
	test_breaker_by_answers();
	test_queue();
	test_oauth2();
	test_dns();

	event_free(tick);
	event_base_free(base);
	cleanup();
	return tap_done();
}
