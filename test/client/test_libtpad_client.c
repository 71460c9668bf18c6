/* test_libtpad_client: libtpad-client against the real tpad, and its streams against the real
 * tpas (driven by test_c_client.py). */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <tpad-client.h>

#define TKM "31110123D345666E2DBD"
#define THREADS 8
#define PER_THREAD 25

static int failed, checks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		pthread_mutex_lock(&lock);                                                         \
		checks++;                                                                          \
		if (!(cond)) {                                                                     \
			failed++;                                                                  \
			fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, #cond);                 \
			fprintf(stderr, __VA_ARGS__);                                              \
			fputc('\n', stderr);                                                       \
		}                                                                                  \
		pthread_mutex_unlock(&lock);                                                       \
	} while (0)

static const char *station, *admin;
static char tokens[THREADS][PER_THREAD][129];

/* One thread, one connection: activate its devices, then look each up. */
static void *worker(void *arg)
{
	int k = (int)(long)arg;
	tpad_client *c;
	struct tpad_error err;
	int r = tpad_client_open(station, 10000, &c, &err);
	CHECK(r == TPAD_OK, "open: %s", err.message);
	if (r)
		return NULL;
	for (int i = 0; i < PER_THREAD; i++) {
		char eui[17];
		snprintf(eui, sizeof(eui), "00C1%02X%010X", k, i);
		struct tpad_activation a = {
		    .dev_eui = eui, .tkm_info = TKM, .label = {.margin = -1}};
		struct tpad_device d;
		r = tpad_activate(c, &a, &d, &err);
		CHECK(r == TPAD_OK, "activate %s: %s %s", eui, err.name, err.message);
		if (r)
			continue;
		CHECK(!strcmp(d.dev_eui, eui) && !strcmp(d.state, "ISSUED") &&
			  !strcmp(d.source, "live") && strlen(d.owner_token) > 0 && !d.qr_data &&
			  !d.app_key[0],
		      "device %s %s %s", d.dev_eui, d.state, d.source);
		snprintf(tokens[k][i], sizeof(tokens[k][i]), "%s", d.owner_token);
		tpad_device_clear(&d);
	}
	for (int i = 0; i < PER_THREAD; i++) {
		char eui[17];
		snprintf(eui, sizeof(eui), "00c1%02x%010x", k, i); /* either case */
		struct tpad_device d;
		r = tpad_lookup(c, eui, NULL, &d, &err);
		CHECK(r == TPAD_OK && !strcmp(d.source, "stored") &&
			  !strcmp(d.owner_token, tokens[k][i]),
		      "lookup %s: %d %s", eui, r, err.message);
		tpad_device_clear(&d);
	}
	tpad_client_close(c);
	return NULL;
}

static void errors(void)
{
	struct tpad_error err;
	tpad_client *c;
	struct tpad_device d;
	CHECK(tpad_client_open(station, 10000, &c, &err) == TPAD_OK, "%s", err.message);

	/* Not in the store. */
	int r = tpad_lookup(c, "FFFFFFFFFFFFFFFF", NULL, &d, &err);
	CHECK(r == TPAD_E_NOT_FOUND && err.code == r, "%d", r);
	CHECK(!strcmp(err.name, "io.tpad.Station.NotFound"), "%s", err.name);
	CHECK(!strcmp(err.message, "devEUI=FFFFFFFFFFFFFFFF"), "%s", err.message);
	CHECK(!strcmp(err.parameters, "{\"devEUI\":\"FFFFFFFFFFFFFFFF\"}"), "%s", err.parameters);

	/* Another record for a known DevEUI. */
	struct tpad_activation a = {.dev_eui = "00C1000000000000",
				    .tkm_info = "31110123D345666E0000"};
	r = tpad_activate(c, &a, &d, &err);
	CHECK(r == TPAD_E_CONFLICT && !strcmp(err.name, "io.tpad.Station.Conflict"), "%d %s", r,
	      err.name);

	/* Refused by the library: nothing is sent. */
	a = (struct tpad_activation){.dev_eui = "XYZ", .tkm_info = TKM};
	r = tpad_activate(c, &a, &d, &err);
	CHECK(r == TPAD_E_ARGUMENT && strstr(err.message, "dev_eui"), "%d %s", r, err.message);
	a = (struct tpad_activation){
	    .dev_eui = "00C2000000000001", .tkm_info = TKM, .generate_app_key = 1};
	CHECK(tpad_activate(c, &a, &d, &err) == TPAD_E_ARGUMENT, "%s", err.message);
	CHECK(tpad_activate(NULL, &a, &d, &err) == TPAD_E_ARGUMENT, "NULL client");

	/* Refused by tpad: the parameter is named. */
	a = (struct tpad_activation){
	    .dev_eui = "00C2000000000002", .tkm_info = TKM, .serial = "has space"};
	r = tpad_activate(c, &a, &d, &err);
	CHECK(r == TPAD_E_INVALID_PARAMETER && strstr(err.parameters, "\"parameter\":\"serial\""),
	      "%d %s", r, err.parameters);

	/* A generated AppKey and a PNG label. */
	a = (struct tpad_activation){.dev_eui = "00C2000000000003",
				     .generate_app_key = 1,
				     .serial = "SN-3",
				     .label = {.format = "png", .scale = 3, .margin = 2}};
	r = tpad_activate(c, &a, &d, &err);
	CHECK(r == TPAD_OK && strlen(d.app_key) == 32 && !strcmp(d.serial, "SN-3") &&
		  !strcmp(d.qr_format, "png") && d.qr_len > 8 &&
		  !memcmp(d.qr_data, "\x89PNG\r\n\x1a\n", 8),
	      "%d %s", r, err.message);
	tpad_device_clear(&d);
	CHECK(d.qr_data == NULL && d.app_key[0] == '\0', "cleared");

	/* An admin method on the station socket. */
	struct tpad_status st;
	r = tpad_status(c, &st, &err);
	CHECK(r == TPAD_E_METHOD_NOT_FOUND &&
		  !strcmp(err.name, "org.varlink.service.MethodNotFound"),
	      "%d %s", r, err.name);

	/* Any method as JSON. */
	char *json = NULL;
	r = tpad_call_json(c, "org.varlink.service.GetInfo", NULL, &json, &err);
	CHECK(r == TPAD_OK && json && strstr(json, "\"product\":\"tpad\""), "%d", r);
	free(json);
	r = tpad_call_json(c, "io.tpad.Station.Lookup", "[1]", &json, &err);
	CHECK(r == TPAD_E_ARGUMENT, "%d", r);
	/* The whole reply, an error reply included, however large. */
	r = tpad_call_reply(c, "io.tpad.Station.Lookup", "{\"devEUI\":\"FFFFFFFFFFFFFFFE\"}",
			    &json, &err);
	CHECK(r == TPAD_OK && json && strstr(json, "\"error\":\"io.tpad.Station.NotFound\""),
	      "%d %s", r, json ? json : "");
	free(json);
	r = tpad_call_reply(c, "org.varlink.service.GetInfo", NULL, &json, &err);
	CHECK(r == TPAD_OK && json && strstr(json, "\"parameters\":{") && !strstr(json, "\"error\""),
	      "%d", r);
	free(json);
	tpad_client_close(c);

	/* Status on the admin socket. */
	CHECK(tpad_client_open(admin, 10000, &c, &err) == TPAD_OK, "%s", err.message);
	r = tpad_status(c, &st, &err);
	CHECK(r == TPAD_OK && st.health == 0 && !strcmp(st.upstream_state, "ok") &&
		  !strcmp(st.breaker, "closed") && st.sessions == 2 && st.sessions_up == 2 &&
		  st.issued == THREADS * PER_THREAD + 1 && st.pending == 0 && st.version[0],
	      "%d %s health %d state %s issued %llu", r, err.message, st.health, st.upstream_state,
	      st.issued);
	tpad_client_close(c);

	/* No tpad there. */
	r = tpad_client_open("/nonexistent/tpad.sock", 1000, &c, &err);
	CHECK(r == TPAD_E_CONNECT && err.sys_errno == ENOENT && c == NULL, "%d", r);
	CHECK(!strcmp(tpad_code_name(TPAD_E_BUSY), "TPAD_E_BUSY"), "code name");
	CHECK(!strcmp(tpad_client_version(), TPAD_CLIENT_VERSION), "version");
}

/*
 * Two threads on one connection, against its contract: each call either gets its own device
 * or is refused at once (TPAD_E_ARGUMENT, saying so); never the other thread's reply, never
 * a wait for a reply the other thread read.
 */
static tpad_client *shared;
static int shared_refused;

static void *shared_worker(void *arg)
{
	const char *eui = arg;
	for (int i = 0; i < 300; i++) {
		struct tpad_device d;
		struct tpad_error err;
		int r = tpad_lookup(shared, eui, NULL, &d, &err);
		CHECK(r == TPAD_OK ||
			  (r == TPAD_E_ARGUMENT && strstr(err.message, "another thread")),
		      "shared %s: %s %s", eui, tpad_code_name(r), err.message);
		CHECK(r < 0 || !strcmp(d.dev_eui, eui), "asked %s, got %s", eui, d.dev_eui);
		if (r < 0 && r != TPAD_E_ARGUMENT)
			return NULL;
		pthread_mutex_lock(&lock);
		shared_refused += r == TPAD_E_ARGUMENT;
		pthread_mutex_unlock(&lock);
		tpad_device_clear(&d);
	}
	return NULL;
}

static void shared_connection(void)
{
	struct tpad_error err;
	CHECK(tpad_client_open(station, 2000, &shared, &err) == TPAD_OK, "%s", err.message);
	pthread_t t[2];
	pthread_create(&t[0], NULL, shared_worker, "00C1000000000001");
	pthread_create(&t[1], NULL, shared_worker, "00C1010000000001");
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	printf("shared connection: %d calls refused\n", shared_refused);
	tpad_client_close(shared);
}

/*
 * A label that did not print (test_c_client.py's printer is out of paper): PrintFailed, whose
 * parameters carry the committed device and its PNG label. err->parameters is JSON that
 * parses (the label left out to fit), and err->message, which a station logs, names the
 * device without its AppKey or ownerToken.
 */
/* A new connection, on which an Activate with params (one that prints) gave PrintFailed. */
static tpad_client *print_failing(const char *params, struct tpad_error *err)
{
	tpad_client *c = NULL;
	char *json = NULL;
	CHECK(tpad_client_open(station, 10000, &c, err) == TPAD_OK, "%s", err->message);
	int r = tpad_call_json(c, "io.tpad.Station.Activate", params, &json, err);
	CHECK(r == TPAD_E_OTHER_REPLY && !strcmp(err->name, "io.tpad.Station.PrintFailed") && !json,
	      "%s %s", tpad_code_name(r), err->name);
	return c;
}

static void print_failed(void)
{
	struct tpad_error err;
	char *json = NULL;
	tpad_client *c = print_failing("{\"devEUI\":\"00C3000000000001\",\"generateAppKey\":true,"
				       "\"qr\":{\"format\":\"png\"},\"print\":{}}",
				       &err);
	json_t *p = json_loads(err.parameters, 0, NULL);
	json_t *dev = json_object_get(p, "device");
	const char *key = json_string_value(json_object_get(dev, "appKey"));
	const char *token = json_string_value(json_object_get(dev, "ownerToken"));
	CHECK(key && strlen(key) == 32 && token, "parameters: %s", err.parameters);
	const char *reason = json_string_value(json_object_get(p, "reason"));
	CHECK(reason && !strcmp(reason, "paper out"), "parameters: %s", err.parameters);
	CHECK(strstr(err.message, "device=00C3000000000001") &&
		  strstr(err.message, "reason=paper out"),
	      "message: %s", err.message);
	CHECK(key && token && !strstr(err.message, key) && !strstr(err.message, token),
	      "secrets in the message: %s", err.message);
	json_decref(p);
	/* The whole reply, label included, from tpad_call_reply(). */
	int r = tpad_call_reply(c, "io.tpad.Station.Lookup",
				"{\"devEUI\":\"00C3000000000001\",\"qr\":{\"format\":\"png\"},"
				"\"print\":{}}",
				&json, &err);
	CHECK(r == TPAD_OK && json && strstr(json, "PrintFailed") && strstr(json, "\"qr\":{"), "%d",
	      r);
	free(json);
	tpad_error_clear(&err);

	/* The typed calls: the committed device given whole, the printer's reason beside it. */
	struct tpad_device d;
	struct tpad_print_status ps;
	struct tpad_activation a = {
	    .dev_eui = "00C3000000000002", .generate_app_key = 1, .label = {.format = "png"}};
	r = tpad_activate_print(c, &a, NULL, &d, &ps, &err);
	CHECK(r == TPAD_E_PRINT_FAILED && err.code == TPAD_E_PRINT_FAILED &&
		  !strcmp(err.name, "io.tpad.Station.PrintFailed"),
	      "%s %s", tpad_code_name(r), err.name);
	CHECK(!strcmp(d.dev_eui, "00C3000000000002") && strlen(d.app_key) == 32 &&
		  strlen(d.owner_token) > 0 && !strcmp(d.state, "ISSUED"),
	      "device %s %s", d.dev_eui, d.state);
	CHECK(!strcmp(d.qr_format, "png") && d.qr_len > 8 && !memcmp(d.qr_data, "\x89PNG", 4),
	      "label %s %zu", d.qr_format, d.qr_len);
	CHECK(!strcmp(ps.printer, "line1") && !strcmp(ps.reason, "paper out") && !ps.state[0] &&
		  ps.send_ms == 0,
	      "status %s %s %s", ps.printer, ps.reason, ps.state);
	char issued[sizeof(d.owner_token)];
	memcpy(issued, d.owner_token, sizeof(issued));
	tpad_device_clear(&d);
	tpad_error_clear(&err);
	/* Printed again (two copies): the same failure and the same record, not imported again. */
	r = tpad_lookup_print(c, "00C3000000000002", NULL, &(struct tpad_print){.copies = 2}, &d,
			      &ps, &err);
	CHECK(r == TPAD_E_PRINT_FAILED && !strcmp(d.owner_token, issued) && !d.qr_data &&
		  !strcmp(ps.reason, "paper out"),
	      "%s %s", tpad_code_name(r), ps.reason);
	tpad_device_clear(&d);
	tpad_error_clear(&err);
	/* A printer tpad does not have: the call is refused before anything starts. */
	r = tpad_lookup_print(c, "00C3000000000002", NULL,
			      &(struct tpad_print){.printer = "nosuch"}, &d, &ps, &err);
	CHECK(r == TPAD_E_INVALID_PARAMETER && !d.owner_token[0] && !ps.printer[0], "%s %s",
	      tpad_code_name(r), err.message);
	r = tpad_activate_print(c, &a, NULL, &d, NULL, &err);
	CHECK(r == TPAD_E_ARGUMENT, "no status: %s", tpad_code_name(r));
	tpad_client_close(c);
}

/*
 * Labels that print (test_c_client.py's printer is ready): an Activate, then a Lookup with
 * two copies on the printer named; the test then counts the jobs at the printer.
 */
static void printed(void)
{
	struct tpad_error err;
	struct tpad_device d;
	struct tpad_print_status ps;
	tpad_client *c = NULL;
	CHECK(tpad_client_open(station, 10000, &c, &err) == TPAD_OK, "%s", err.message);
	struct tpad_activation a = {.dev_eui = "00C5000000000001", .generate_app_key = 1};
	int r = tpad_activate_print(c, &a, NULL, &d, &ps, &err);
	CHECK(r == TPAD_OK && strlen(d.owner_token) > 0 && !d.qr_data, "%s %s", tpad_code_name(r),
	      err.message);
	CHECK(!strcmp(ps.printer, "line1") && !strcmp(ps.state, "printed") && ps.job > 0 &&
		  ps.send_ms >= 0 && !ps.reason[0],
	      "status %s %s %lld %.1f %s", ps.printer, ps.state, ps.job, ps.send_ms, ps.reason);
	long long first = ps.job;
	tpad_device_clear(&d);
	r = tpad_lookup_print(c, "00C5000000000001",
			      &(struct tpad_label){.format = "zpl", .margin = -1},
			      &(struct tpad_print){.printer = "line1", .copies = 2}, &d, &ps, &err);
	CHECK(r == TPAD_OK && !strcmp(d.qr_format, "zpl") && d.qr_data, "%s %s", tpad_code_name(r),
	      err.message);
	CHECK(!strcmp(ps.state, "printed") && ps.job > first, "status %s %lld", ps.state, ps.job);
	tpad_device_clear(&d);
	tpad_client_close(c);
}

/*
 * The secrets the library handled, once the caller cleared what it was given: a PrintFailed
 * whose parameters carry the device's AppKey (tpad_error_clear()), a Lookup's device
 * (tpad_device_clear()), the connection closed. test_c_client.py then looks for the AppKey
 * in this process's memory while it waits on standard input.
 */
static void wiped(void)
{
	static const struct tpad_error zero;
	struct tpad_error err;
	struct tpad_device d;
	tpad_client *c = print_failing(
	    "{\"devEUI\":\"00C4000000000001\",\"generateAppKey\":true,\"print\":{}}", &err);
	CHECK(strstr(err.parameters, "\"appKey\":\""), "no AppKey in %s", err.parameters);
	tpad_error_clear(&err);
	CHECK(!memcmp(&err, &zero, sizeof(err)), "tpad_error_clear() left bytes");
	int r = tpad_lookup(c, "00C4000000000001", NULL, &d, &err);
	CHECK(r == TPAD_OK && strlen(d.app_key) == 32, "lookup: %s", err.message);
	tpad_device_clear(&d);
	tpad_client_close(c);
}

/* A server that accepts and never answers: the call times out and says so. */
static void timeout(const char *silent)
{
	struct tpad_error err;
	tpad_client *c;
	struct tpad_device d;
	CHECK(tpad_client_open(silent, 300, &c, &err) == TPAD_OK, "%s", err.message);
	int r = tpad_lookup(c, "0123456789ABCDEF", NULL, &d, &err);
	CHECK(r == TPAD_E_TIMEOUT && !strcmp(err.name, "tpad.client.Timeout"), "%d %s", r,
	      err.name);
	/* Says how long it waited, and that the call may yet be done: ask again. */
	CHECK(strstr(err.message, "within 300 ms") && strstr(err.message, "call again"), "%s",
	      err.message);
	r = tpad_lookup(c, "0123456789ABCDEF", NULL, &d, &err);
	CHECK(r == TPAD_E_IO, "a timed-out connection is closed: %d", r);
	tpad_client_close(c);
}

/* Accept one connection, read its call, close it: a daemon stopped mid-call. */
static void *take_and_close(void *arg)
{
	int fd = accept(*(int *)arg, NULL, NULL);
	char b[512];
	if (fd >= 0) {
		(void)!read(fd, b, sizeof(b));
		close(fd);
	}
	return NULL;
}

/* The daemon closes the connection after taking the call: whether it was done is unknown. */
static void closed_mid_call(void)
{
	char dir[] = "/tmp/tpad-closer-XXXXXX";
	CHECK(mkdtemp(dir) != NULL, "mkdtemp: %s", strerror(errno));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s.sock", dir);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(l, 1) == 0,
	      "listen: %s", strerror(errno));
	pthread_t t;
	pthread_create(&t, NULL, take_and_close, &l);
	struct tpad_error err;
	tpad_client *c;
	struct tpad_device d;
	CHECK(tpad_client_open(sa.sun_path, 5000, &c, &err) == TPAD_OK, "%s", err.message);
	int r = tpad_lookup(c, "0123456789ABCDEF", NULL, &d, &err);
	CHECK(r == TPAD_E_IO, "%d %s", r, err.name);
	CHECK(strstr(err.message, "closed the connection") && strstr(err.message, "call again"),
	      "%s", err.message);
	tpad_client_close(c);
	pthread_join(t, NULL);
	close(l);
	unlink(sa.sun_path);
	rmdir(dir);
}

/* Member key of the JSON object text json as an integer, -1 if none. */
static long long json_int(const char *json, const char *path0, const char *key)
{
	json_t *o = json_loads(json ? json : "null", 0, NULL);
	json_t *v = json_object_get(path0 ? json_object_get(o, path0) : o, key);
	long long r = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
	json_decref(o);
	return r;
}

/* The subscribers tpas counts now (Status on its apps socket). */
static long long subscribers(const char *apps)
{
	tpad_client *c;
	struct tpad_error err;
	char *json = NULL;
	if (tpad_client_open(apps, 5000, &c, &err) == 0)
		tpad_call_json(c, "io.tpad.AS.Status", NULL, &json, &err);
	tpad_client_close(c);
	long long n = json_int(json, NULL, "subscribers");
	free(json);
	return n;
}

/*
 * Streams, against tpas whose journal holds seqs 1 to 3: read to the end, an error reply,
 * a quiet stream timing out, then waiting for ever for seq 4 (test_c_client.py sends it
 * a second after "waiting" is printed, past the connection's own 300 ms), and a stream
 * left by closing its connection.
 */
static void streams(const char *apps)
{
	struct tpad_error err;
	tpad_client *c;
	char *json = NULL;
	int more = -1, r;
	CHECK(tpad_client_open(apps, 300, &c, &err) == TPAD_OK, "%s", err.message);
	r = tpad_more_next(c, &json, &more, &err);
	CHECK(r == TPAD_E_ARGUMENT && strstr(err.message, "no stream"), "no stream: %d", r);

	/* To its end: one uplink a reply, a last one that says no more. */
	r = tpad_call_more(c, "io.tpad.AS.Uplinks", "{\"after\":0,\"follow\":false}", &err);
	CHECK(r == TPAD_OK, "call_more: %d %s", r, err.message);
	r = tpad_call_json(c, "io.tpad.AS.Status", NULL, &json, &err);
	CHECK(r == TPAD_E_ARGUMENT && strstr(err.message, "a stream is open"),
	      "a call mid-stream: %d %s", r, err.message);
	long long seqs[8];
	int n = 0;
	for (more = 1; more && n < 8;) {
		r = tpad_more_next(c, &json, &more, &err);
		CHECK(r == TPAD_OK && json, "next: %d %s", r, err.message);
		if (r < 0)
			break;
		long long seq = json_int(json, "uplink", "seq");
		if (seq >= 0)
			seqs[n++] = seq;
		free(json);
	}
	CHECK(n == 3 && seqs[0] == 1 && seqs[1] == 2 && seqs[2] == 3 && !more, "%d uplinks", n);
	/* The stream over, the connection takes calls again. */
	r = tpad_call_json(c, "io.tpad.AS.Status", NULL, &json, &err);
	CHECK(r == TPAD_OK && json_int(json, "journal", "lastSeq") == 3, "Status: %d", r);
	free(json);

	/* An error reply ends the stream. */
	r = tpad_call_more(c, "io.tpad.AS.Uplinks", "{\"after\":99}", &err);
	CHECK(r == TPAD_OK, "call_more: %d", r);
	r = tpad_more_next(c, &json, &more, &err);
	CHECK(r == TPAD_E_INVALID_PARAMETER && !json && !more &&
		  !strcmp(err.name, "io.tpad.AS.InvalidParameter") &&
		  strstr(err.parameters, "\"parameter\":\"after\""),
	      "after 99: %d %s %s", r, err.name, err.parameters);
	r = tpad_call_json(c, "io.tpad.AS.Status", NULL, &json, &err);
	CHECK(r == TPAD_OK, "after an error reply: %d", r);
	free(json);

	/* A quiet stream and the connection's timeout: closed, and said so. */
	r = tpad_call_more(c, "io.tpad.AS.Uplinks", "{\"after\":3}", &err);
	CHECK(r == TPAD_OK, "call_more: %d", r);
	r = tpad_more_next(c, &json, &more, &err);
	CHECK(r == TPAD_E_TIMEOUT && !strcmp(err.name, "tpad.client.Timeout"), "quiet: %d", r);
	r = tpad_call_json(c, "io.tpad.AS.Status", NULL, &json, &err);
	CHECK(r == TPAD_E_IO, "a timed-out stream's connection is closed: %d", r);
	tpad_client_close(c);

	/* A follower waits for ever: seq 4 comes after a second, past the 300 ms. */
	CHECK(tpad_client_set_timeout(NULL, 0) == TPAD_E_ARGUMENT, "NULL client");
	CHECK(tpad_client_open(apps, 300, &c, &err) == TPAD_OK, "%s", err.message);
	CHECK(tpad_client_set_timeout(c, -2) == TPAD_E_ARGUMENT, "timeout -2");
	CHECK(tpad_client_set_timeout(c, TPAD_TIMEOUT_NONE) == TPAD_OK, "for ever");
	r = tpad_call_more(c, "io.tpad.AS.Uplinks", "{\"after\":3,\"follow\":true}", &err);
	CHECK(r == TPAD_OK, "follow: %d", r);
	printf("waiting\n");
	fflush(stdout);
	r = tpad_more_next(c, &json, &more, &err);
	CHECK(r == TPAD_OK && more && json_int(json, "uplink", "seq") == 4, "seq 4: %d %s", r,
	      err.message);
	free(json);

	/* Closing the connection ends the stream at tpas too. */
	CHECK(subscribers(apps) == 1, "one subscriber");
	tpad_client_close(c);
	long long subs = -1;
	for (int i = 0; i < 100 && (subs = subscribers(apps)) != 0; i++)
		nanosleep(&(struct timespec){0, 50000000}, NULL);
	CHECK(subs == 0, "the stream ended at tpas: %lld subscribers", subs);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--stream")) {
		streams(argv[2]);
		printf("%d checks, %d failed\n", checks, failed);
		return failed ? 1 : 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--print-failed")) {
		station = argv[2];
		print_failed();
		printf("%d checks, %d failed\n", checks, failed);
		return failed ? 1 : 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--printed")) {
		station = argv[2];
		printed();
		printf("%d checks, %d failed\n", checks, failed);
		return failed ? 1 : 0;
	}
	if (argc == 3 && !strcmp(argv[1], "--wiped")) {
		station = argv[2];
		wiped();
		printf("%d checks, %d failed\n", checks, failed);
		fflush(stdout);
		getchar(); /* while the test reads this process's memory */
		return failed ? 1 : 0;
	}
	if (argc != 4) {
		fprintf(stderr, "usage: test-libtpad-client STATION ADMIN SILENT\n"
				"       test-libtpad-client --stream APPS\n"
				"       test-libtpad-client --print-failed STATION\n"
				"       test-libtpad-client --printed STATION\n"
				"       test-libtpad-client --wiped STATION\n");
		return 2;
	}
	station = argv[1];
	admin = argv[2];
	pthread_t t[THREADS];
	for (long k = 0; k < THREADS; k++)
		pthread_create(&t[k], NULL, worker, (void *)k);
	for (int k = 0; k < THREADS; k++)
		pthread_join(t[k], NULL);
	errors();
	shared_connection();
	timeout(argv[3]);
	closed_mid_call();
	printf("%d checks, %d failed\n", checks, failed);
	return failed ? 1 : 0;
}
