/* tpad_client: libtpad-client, blocking calls to tpad over its Unix sockets. */
#include "tpad-client.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "hex.h"

#define DEFAULT_TIMEOUT_MS 60000
#define MAX_REPLY (64u << 20)

struct tpad_client {
	int fd;
	int timeout_ms;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *buf; /* bytes read past the last message */
	size_t len, cap;
	bool streaming; /* a call with more awaits its last reply (tpad_more_next()) */
	/* Set while a call sends or reads: a second thread on the same connection would take
	 * the other's reply (another device's token) or wait for ever on one it read. */
	atomic_flag busy;
};

static const struct {
	const char *suffix;
	int code;
} reply_codes[] = {
    {".InvalidParameter", TPAD_E_INVALID_PARAMETER},
    {".NotFound", TPAD_E_NOT_FOUND},
    {".Conflict", TPAD_E_CONFLICT},
    {".UpstreamRejected", TPAD_E_UPSTREAM_REJECTED},
    {".UpstreamUnavailable", TPAD_E_UPSTREAM_UNAVAILABLE},
    {".OutcomeUnknown", TPAD_E_OUTCOME_UNKNOWN},
    {".Busy", TPAD_E_BUSY},
    {".StoreFailed", TPAD_E_STORE_FAILED},
    {".PermissionDenied", TPAD_E_PERMISSION_DENIED},
    {".MethodNotFound", TPAD_E_METHOD_NOT_FOUND},
    {".InterfaceNotFound", TPAD_E_METHOD_NOT_FOUND},
};

const char *tpad_client_version(void)
{
	return TPAD_CLIENT_VERSION;
}

const char *tpad_code_name(int code)
{
	switch (code) {
	case TPAD_OK:
		return "TPAD_OK";
	case TPAD_E_ARGUMENT:
		return "TPAD_E_ARGUMENT";
	case TPAD_E_CONNECT:
		return "TPAD_E_CONNECT";
	case TPAD_E_IO:
		return "TPAD_E_IO";
	case TPAD_E_TIMEOUT:
		return "TPAD_E_TIMEOUT";
	case TPAD_E_PROTOCOL:
		return "TPAD_E_PROTOCOL";
	case TPAD_E_NOMEM:
		return "TPAD_E_NOMEM";
	case TPAD_E_INVALID_PARAMETER:
		return "TPAD_E_INVALID_PARAMETER";
	case TPAD_E_NOT_FOUND:
		return "TPAD_E_NOT_FOUND";
	case TPAD_E_CONFLICT:
		return "TPAD_E_CONFLICT";
	case TPAD_E_UPSTREAM_REJECTED:
		return "TPAD_E_UPSTREAM_REJECTED";
	case TPAD_E_UPSTREAM_UNAVAILABLE:
		return "TPAD_E_UPSTREAM_UNAVAILABLE";
	case TPAD_E_OUTCOME_UNKNOWN:
		return "TPAD_E_OUTCOME_UNKNOWN";
	case TPAD_E_BUSY:
		return "TPAD_E_BUSY";
	case TPAD_E_STORE_FAILED:
		return "TPAD_E_STORE_FAILED";
	case TPAD_E_PERMISSION_DENIED:
		return "TPAD_E_PERMISSION_DENIED";
	case TPAD_E_METHOD_NOT_FOUND:
		return "TPAD_E_METHOD_NOT_FOUND";
	case TPAD_E_OTHER_REPLY:
		return "TPAD_E_OTHER_REPLY";
	case TPAD_E_PRINT_FAILED:
		return "TPAD_E_PRINT_FAILED";
	default:
		return "TPAD_E_UNKNOWN";
	}
}

/*
 * Overwrite n bytes at p with zeros in a way the compiler cannot drop: replies carry
 * ownerTokens and AppKeys, and a freed block keeps its bytes until it is reused.
 */
static void wipe(void *p, size_t n)
{
	volatile unsigned char *v = p;
	while (n--)
		*v++ = 0;
}

/* free() a NUL-terminated text after wiping it; accepts NULL. */
static void free_text(char *s)
{
	if (s)
		wipe(s, strlen(s));
	free(s);
}

/* Wipe every string value in v (its keys are names, never secrets). */
static void wipe_json(json_t *v)
{
	const char *key;
	json_t *e;
	size_t i;
	if (!v || v->refcount > 1)
		return; /* a part still held elsewhere (the parameters handed on) */
	if (json_is_string(v))
		wipe((char *)json_string_value(v), json_string_length(v));
	else if (json_is_object(v))
		json_object_foreach(v, key, e) wipe_json(e);
	else if (json_is_array(v))
		json_array_foreach(v, i, e) wipe_json(e);
}

/* json_decref() that wipes the strings of a value about to be freed. */
static void drop_json(json_t *v)
{
	wipe_json(v);
	json_decref(v);
}

/*
 * v as compact JSON text (malloc'd), written in one block of its final size: json_dumps()
 * grows its buffer by realloc(), which would free copies of the text (an AppKey given to
 * Activate) unwiped.
 */
static char *dump_json(json_t *v, size_t flags)
{
	size_t n = json_dumpb(v, NULL, 0, flags);
	char *s = n ? malloc(n + 1) : NULL;
	if (!s)
		return NULL;
	if (json_dumpb(v, s, n, flags) != n) {
		wipe(s, n);
		free(s);
		return NULL;
	}
	s[n] = '\0';
	return s;
}

/* Fill err (if any) and return code. */
__attribute__((format(printf, 5, 6))) static int
fail(struct tpad_error *err, int code, const char *name, int sys, const char *fmt, ...)
{
	if (!err)
		return code;
	memset(err, 0, sizeof(*err));
	err->code = code;
	err->sys_errno = sys;
	snprintf(err->name, sizeof(err->name), "%s", name);
	snprintf(err->parameters, sizeof(err->parameters), "{}");
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return code;
}

static void clear_error(struct tpad_error *err)
{
	if (err)
		wipe(err, sizeof(*err));
}

void tpad_error_clear(struct tpad_error *err)
{
	clear_error(err);
}

int tpad_client_open(const char *path, int timeout_ms, tpad_client **ret, struct tpad_error *err)
{
	if (!ret)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0, "ret is NULL");
	*ret = NULL;
	if (!path || !*path) {
		const char *env = getenv("TPAD_STATION_SOCKET");
		path = env && *env ? env : TPAD_DEFAULT_STATION_SOCKET;
	}
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", ENAMETOOLONG,
			    "socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	tpad_client *c = calloc(1, sizeof(*c));
	if (!c)
		return fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM, "out of memory");
	snprintf(c->path, sizeof(c->path), "%s", path);
	atomic_flag_clear(&c->busy);
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		/* A file that is no socket refuses too, but starting a daemon will not help. */
		struct stat st;
		bool other = e == ECONNREFUSED && stat(path, &st) == 0 && !S_ISSOCK(st.st_mode);
		const char *hint = e == ENOENT	 ? " (is its daemon running?)"
				   : e == EACCES ? " (join the socket's group)"
				   : other	 ? " (it is no socket: give the daemon's socket)"
				   : e == ECONNREFUSED
				       ? " (nothing listens: its daemon is not running)"
				       : "";
		fail(err, TPAD_E_CONNECT, "tpad.client.Connect", e, "cannot connect to %s: %s%s",
		     path, strerror(e), hint);
		tpad_client_close(c);
		return TPAD_E_CONNECT;
	}
	*ret = c;
	clear_error(err);
	return TPAD_OK;
}

void tpad_client_close(tpad_client *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->buf)
		wipe(c->buf, c->cap);
	free(c->buf);
	free(c);
}

/* Milliseconds on the monotonic clock. */
static long long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Close the connection after a failure mid-call: its state is unknown. */
static int broken(tpad_client *c, struct tpad_error *err, int code, const char *name, int sys,
		  const char *what)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->len = 0;
	c->streaming = false;
	return fail(err, code, name, sys, "%s %s%s%s", what, c->path, sys ? ": " : "",
		    sys ? strerror(sys) : "");
}

/* The error of a call on a connection that a failure closed. */
static int closed_before(tpad_client *c, struct tpad_error *err)
{
	return fail(err, TPAD_E_IO, "tpad.client.IO", EPIPE,
		    "the connection to %s was closed by an earlier failure", c->path);
}

/* Take c for one call; false (err filled) when another thread is in a call on it. */
static bool take(tpad_client *c, struct tpad_error *err)
{
	if (!atomic_flag_test_and_set(&c->busy))
		return true;
	fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
	     "another thread is in a call on this connection to %s: open one per thread", c->path);
	return false;
}

static int give_back(tpad_client *c, int r)
{
	atomic_flag_clear(&c->busy);
	return r;
}

/* Say in err, after broken() filled it, that a call sent may have been carried out. */
static int maybe_done(struct tpad_error *err, int code)
{
	if (err) {
		size_t n = strlen(err->message);
		snprintf(err->message + n, sizeof(err->message) - n,
			 "; the call may have been carried out there: call again (an Activate "
			 "with the same record never imports twice) or look it up");
	}
	return code;
}

/*
 * A call's timeout ran out: the connection is closed, but the daemon goes on with the
 * call (an Activate waiting on the cloud may take a few upstream.request-timeout), so the
 * message says it may yet be done.
 */
static int timed_out(tpad_client *c, struct tpad_error *err)
{
	char what[64];
	snprintf(what, sizeof(what), "no answer within %d ms from", c->timeout_ms);
	return maybe_done(err, broken(c, err, TPAD_E_TIMEOUT, "tpad.client.Timeout", 0, what));
}

/* The daemon closed the connection, or reading it failed, once the call was sent. */
static int lost_mid_call(tpad_client *c, struct tpad_error *err, int sys, const char *what)
{
	return maybe_done(err, broken(c, err, TPAD_E_IO, "tpad.client.IO", sys, what));
}

/* Room for 64 KiB more in c's buffer; false out of memory. */
static bool buf_reserve(tpad_client *c)
{
	if (c->cap - c->len >= 65536)
		return true;
	size_t cap = c->cap ? c->cap * 2 : 65536;
	/* Not realloc(): it would free the old block unwiped. */
	char *b = malloc(cap);
	if (!b)
		return false;
	if (c->buf) {
		memcpy(b, c->buf, c->len);
		wipe(c->buf, c->cap);
		free(c->buf);
	}
	c->buf = b;
	c->cap = cap;
	return true;
}

/*
 * The daemon closed the connection before the call was sent: a daemon that refuses a
 * connection (a limit of limits.max-clients*) writes its Busy first, and that reply is
 * already in the socket. Read what is there without waiting; true when a whole reply is,
 * for read_msg() to give as the call's answer.
 */
static bool reply_waiting(tpad_client *c)
{
	while (!(c->len && memchr(c->buf, '\0', c->len))) {
		if (c->len >= MAX_REPLY || !buf_reserve(c))
			return false;
		ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return false;
		c->len += (size_t)got;
	}
	return true;
}

/* Send msg and its NUL. */
static int send_msg(tpad_client *c, const char *msg, struct tpad_error *err)
{
	if (c->fd < 0)
		return closed_before(c, err);
	size_t n = strlen(msg) + 1, off = 0;
	while (off < n) {
		ssize_t w = send(c->fd, msg + off, n - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EPIPE || errno == ECONNRESET) && reply_waiting(c))
			return TPAD_OK;
		if (w < 0)
			return broken(c, err, TPAD_E_IO, "tpad.client.IO", errno, "cannot send to");
		off += (size_t)w;
	}
	return TPAD_OK;
}

/* Read one NUL-ended message into a malloc'd string, waiting at most c's timeout. */
static int read_msg(tpad_client *c, char **ret, struct tpad_error *err)
{
	if (c->fd < 0)
		return closed_before(c, err);
	long long deadline = now_ms() + c->timeout_ms;
	for (;;) {
		char *nul = c->len ? memchr(c->buf, '\0', c->len) : NULL;
		if (nul) {
			size_t mlen = (size_t)(nul - c->buf);
			char *m = malloc(mlen + 1);
			if (!m)
				return fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM,
					    "out of memory");
			memcpy(m, c->buf, mlen + 1);
			memmove(c->buf, nul + 1, c->len - mlen - 1);
			c->len -= mlen + 1;
			wipe(c->buf + c->len, mlen + 1);
			*ret = m;
			return TPAD_OK;
		}
		if (c->len >= MAX_REPLY)
			return broken(c, err, TPAD_E_PROTOCOL, "tpad.client.Protocol", 0,
				      "a reply too large from");
		if (!buf_reserve(c))
			return fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM,
				    "out of memory");
		/* A follower waits for ever (TPAD_TIMEOUT_NONE): poll's -1. */
		long long left = c->timeout_ms < 0 ? -1 : deadline - now_ms();
		if (c->timeout_ms >= 0 && left <= 0)
			return timed_out(c, err);
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int r = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return broken(c, err, TPAD_E_IO, "tpad.client.IO", errno,
				      "cannot wait for");
		if (r == 0)
			continue;
		ssize_t got = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return lost_mid_call(c, err, errno, "cannot read from");
		if (got == 0)
			return lost_mid_call(c, err, ECONNRESET,
					     "the daemon closed the connection (stopped or "
					     "restarted?):");
		c->len += (size_t)got;
	}
}

/*
 * An object or array in an error's message: a device by its DevEUI, anything else as "...".
 * A message is what a station logs: PrintFailed's device carries the ownerToken and AppKey,
 * and its qr the label's base64.
 */
static const char *summary(json_t *v)
{
	const char *eui = json_string_value(json_object_get(v, "devEUI"));
	return eui ? eui : "...";
}

/*
 * params as JSON text in out (size n), whole: without its label (qr) when that does not fit,
 * else "{}" (tpad_call_reply() has them all). Cut short, it would be no JSON at all.
 */
static void error_parameters(json_t *params, char *out, size_t n)
{
	json_t *small = json_deep_copy(params);
	json_t *tries[] = {params, small};
	snprintf(out, n, "{}");
	json_object_del(small, "qr");
	for (size_t i = 0; i < 2; i++) {
		char *pj = tries[i] ? dump_json(tries[i], JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		bool fits = pj && strlen(pj) < n;
		if (fits)
			memcpy(out, pj, strlen(pj) + 1);
		free_text(pj);
		if (fits)
			break;
	}
	drop_json(small);
}

/* The error of an error reply: code by name, message from its parameters. */
static int reply_error(const char *name, json_t *params, struct tpad_error *err)
{
	int code = TPAD_E_OTHER_REPLY;
	size_t nl = strlen(name);
	for (size_t i = 0; i < sizeof(reply_codes) / sizeof(reply_codes[0]); i++) {
		size_t sl = strlen(reply_codes[i].suffix);
		if (nl > sl && strcmp(name + nl - sl, reply_codes[i].suffix) == 0)
			code = reply_codes[i].code;
	}
	if (!err)
		return code;
	memset(err, 0, sizeof(*err));
	err->code = code;
	snprintf(err->name, sizeof(err->name), "%s", name);
	error_parameters(params, err->parameters, sizeof(err->parameters));
	size_t off = 0;
	const char *key;
	json_t *v;
	json_object_foreach(params, key, v)
	{
		char *s = json_is_string(v) ? strdup(json_string_value(v))
			  : json_is_object(v) || json_is_array(v)
			      ? strdup(summary(v))
			      : dump_json(v, JSON_COMPACT | JSON_ENCODE_ANY);
		if (off < sizeof(err->message))
			off += (size_t)snprintf(err->message + off, sizeof(err->message) - off,
						"%s%s=%s", off ? ", " : "", key, s ? s : "?");
		free_text(s);
	}
	json_t *ra = json_object_get(params, "retryAfter");
	if (json_is_integer(ra))
		err->retry_after = (int)json_integer_value(ra);
	return code;
}

/* Send a call of method with params (stolen; NULL: none), with more when asked. */
static int send_call(tpad_client *c, const char *method, json_t *params, bool more,
		     struct tpad_error *err)
{
	if (c->streaming) {
		drop_json(params);
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "a stream is open on %s: read it to its end, or close the connection",
			    c->path);
	}
	json_t *msg = json_pack("{s:s, s:o}", "method", method, "parameters",
				params ? params : json_object());
	if (msg && more)
		json_object_set_new(msg, "more", json_true());
	char *text = msg ? dump_json(msg, JSON_COMPACT) : NULL;
	drop_json(msg);
	if (!text)
		return fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM, "out of memory");
	int r = send_msg(c, text, err);
	free_text(text);
	return r;
}

/*
 * Read one reply: the reply object in *ret_reply and its text in *ret_text (malloc'd; NULL
 * to drop it). A reply that is not an object, or that says more follow to a call without
 * more, breaks the connection.
 */
static int read_reply(tpad_client *c, bool more, json_t **ret_reply, char **ret_text,
		      struct tpad_error *err)
{
	char *reply_text = NULL;
	int r = read_msg(c, &reply_text, err);
	if (r < 0)
		return r;
	json_t *reply = json_loads(reply_text, 0, NULL);
	if (!json_is_object(reply) ||
	    (!more && json_is_true(json_object_get(reply, "continues")))) {
		drop_json(reply);
		free_text(reply_text);
		return broken(c, err, TPAD_E_PROTOCOL, "tpad.client.Protocol", 0,
			      "a malformed reply from");
	}
	if (ret_text)
		*ret_text = reply_text;
	else
		free_text(reply_text);
	*ret_reply = reply;
	return TPAD_OK;
}

/* Send one call (params stolen) and read its one reply, as read_reply(). */
static int call_raw(tpad_client *c, const char *method, json_t *params, json_t **ret_reply,
		    char **ret_text, struct tpad_error *err)
{
	int r = send_call(c, method, params, false, err);
	return r < 0 ? r : read_reply(c, false, ret_reply, ret_text, err);
}

/* The parameters of reply (consumed) in *ret (owned), or its error reply's code. */
static int reply_params(tpad_client *c, json_t *reply, json_t **ret, struct tpad_error *err)
{
	json_t *p = json_object_get(reply, "parameters");
	json_t *e = json_object_get(reply, "error");
	if ((p && !json_is_object(p)) || (e && !json_is_string(e))) {
		drop_json(reply);
		return broken(c, err, TPAD_E_PROTOCOL, "tpad.client.Protocol", 0,
			      "a malformed reply from");
	}
	if (e) {
		json_t *empty = json_object();
		int r = reply_error(json_string_value(e), p ? p : empty, err);
		json_decref(empty);
		drop_json(reply);
		return r;
	}
	*ret = p ? json_incref(p) : json_object();
	drop_json(reply);
	clear_error(err);
	return TPAD_OK;
}

static int call(tpad_client *c, const char *method, json_t *params, json_t **ret,
		struct tpad_error *err)
{
	json_t *reply;
	int r = call_raw(c, method, params, &reply, NULL, err);
	return r < 0 ? r : reply_params(c, reply, ret, err);
}

/* Copy string member key of o into out (size n); false if present but not a fitting string. */
static bool copy_str(json_t *o, const char *key, char *out, size_t n, bool required)
{
	json_t *v = json_object_get(o, key);
	out[0] = '\0';
	if (!v || json_is_null(v))
		return !required;
	if (!json_is_string(v) || json_string_length(v) >= n)
		return false;
	memcpy(out, json_string_value(v), json_string_length(v) + 1);
	return true;
}

/* Fill d from an Activate or Lookup reply. */
static int device_from(tpad_client *c, json_t *p, struct tpad_device *d, struct tpad_error *err)
{
	json_t *dev = json_object_get(p, "device");
	bool ok = json_is_object(dev) &&
		  copy_str(dev, "devEUI", d->dev_eui, sizeof(d->dev_eui), true) &&
		  copy_str(dev, "joinEUI", d->join_eui, sizeof(d->join_eui), true) &&
		  copy_str(dev, "profileId", d->profile_id, sizeof(d->profile_id), true) &&
		  copy_str(dev, "serial", d->serial, sizeof(d->serial), false) &&
		  copy_str(dev, "ownerToken", d->owner_token, sizeof(d->owner_token), true) &&
		  copy_str(dev, "appKey", d->app_key, sizeof(d->app_key), false) &&
		  copy_str(dev, "qrText", d->qr_text, sizeof(d->qr_text), true) &&
		  copy_str(dev, "state", d->state, sizeof(d->state), true) &&
		  copy_str(dev, "source", d->source, sizeof(d->source), true);
	json_t *qr = json_object_get(p, "qr");
	if (ok && json_is_object(qr)) {
		const char *data = json_string_value(json_object_get(qr, "data"));
		ok = copy_str(qr, "format", d->qr_format, sizeof(d->qr_format), true) && data &&
		     base64_decode(data, strlen(data), &d->qr_data, &d->qr_len) == 0;
	}
	if (!ok) {
		tpad_device_clear(d);
		return broken(c, err, TPAD_E_PROTOCOL, "tpad.client.Protocol", 0,
			      "a device record that does not fit from");
	}
	return TPAD_OK;
}

/* Call method with params (stolen) and fill d from its reply. */
static int device_call(tpad_client *c, const char *method, json_t *params, struct tpad_device *d,
		       struct tpad_error *err)
{
	if (!take(c, err)) {
		drop_json(params);
		return TPAD_E_ARGUMENT;
	}
	json_t *reply;
	int r = call(c, method, params, &reply, err);
	if (r < 0)
		return give_back(c, r);
	r = device_from(c, reply, d, err);
	drop_json(reply);
	return give_back(c, r);
}

/* The qr object of a call, or NULL for no label. */
static json_t *label_json(const struct tpad_label *l)
{
	if (!l || !l->format || strcmp(l->format, "none") == 0)
		return NULL;
	json_t *q = json_pack("{s:s}", "format", l->format);
	if (q && l->scale > 0)
		json_object_set_new(q, "scale", json_integer(l->scale));
	if (q && l->margin >= 0)
		json_object_set_new(q, "margin", json_integer(l->margin));
	if (q && l->ec_level)
		json_object_set_new(q, "ecLevel", json_string(l->ec_level));
	return q;
}

static int check_hex_arg(const char *v, size_t digits, const char *name, bool required,
			 struct tpad_error *err)
{
	if (!v && !required)
		return TPAD_OK;
	if (!v || !hex_valid(v, digits))
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "%s must be %zu hexadecimal digits", name, digits);
	return TPAD_OK;
}

/* The print object of a call (PrintOptions), or NULL when out of memory. */
static json_t *print_json(const struct tpad_print *pr)
{
	json_t *o = json_object();
	if (o && pr && pr->printer)
		json_object_set_new(o, "printer", json_string(pr->printer));
	if (o && pr && pr->copies)
		json_object_set_new(o, "copies", json_integer(pr->copies));
	return o;
}

/* Fill s from a reply's PrintStatus (print) or a PrintFailed's parameters (failed). */
static bool print_status_from(json_t *p, bool failed, struct tpad_print_status *s)
{
	json_t *ps = failed ? p : json_object_get(p, "print");
	if (!json_is_object(ps) || !copy_str(ps, "printer", s->printer, sizeof(s->printer), true))
		return false;
	s->job = json_integer_value(json_object_get(ps, "job"));
	s->printer_job = json_integer_value(json_object_get(ps, "printerJob"));
	if (failed)
		return copy_str(ps, "reason", s->reason, sizeof(s->reason), true);
	s->send_ms = json_number_value(json_object_get(ps, "sendMs"));
	return copy_str(ps, "state", s->state, sizeof(s->state), true);
}

/*
 * Call method with params (stolen, with a print asked for) and fill d and s from its reply:
 * PrintFailed too, which carries the committed device.
 */
static int print_call(tpad_client *c, const char *method, json_t *params, struct tpad_device *d,
		      struct tpad_print_status *s, struct tpad_error *err)
{
	if (!take(c, err)) {
		drop_json(params);
		return TPAD_E_ARGUMENT;
	}
	json_t *reply, *p = NULL;
	int r = call_raw(c, method, params, &reply, NULL, err);
	if (r < 0)
		return give_back(c, r);
	const char *e = json_string_value(json_object_get(reply, "error"));
	bool failed = e && strcmp(e, "io.tpad.Station.PrintFailed") == 0;
	if (failed) /* held, so that reading the error (err) does not wipe it */
		p = json_incref(json_object_get(reply, "parameters"));
	r = reply_params(c, reply, &p, err);
	if (failed && r == TPAD_E_OTHER_REPLY) {
		if (err)
			err->code = TPAD_E_PRINT_FAILED;
		r = TPAD_E_PRINT_FAILED;
	} else if (r < 0) {
		drop_json(p);
		return give_back(c, r);
	}
	int got = device_from(c, p, d, err);
	if (got == TPAD_OK && !print_status_from(p, failed, s)) {
		tpad_device_clear(d);
		got = broken(c, err, TPAD_E_PROTOCOL, "tpad.client.Protocol", 0,
			     "a print status that does not fit from");
	}
	drop_json(p);
	return give_back(c, got < 0 ? got : r);
}

/* The parameters of an Activate call, checked, or a negative code. */
static int activation_params(const struct tpad_activation *a, json_t **ret, struct tpad_error *err)
{
	int r;
	if ((r = check_hex_arg(a->dev_eui, 16, "dev_eui", true, err)) < 0 ||
	    (r = check_hex_arg(a->tkm_info, 20, "tkm_info", false, err)) < 0 ||
	    (r = check_hex_arg(a->app_key, 32, "app_key", false, err)) < 0 ||
	    (r = check_hex_arg(a->join_eui, 16, "join_eui", false, err)) < 0 ||
	    (r = check_hex_arg(a->profile_id, 8, "profile_id", false, err)) < 0)
		return r;
	if (!!a->tkm_info + !!a->app_key + !!a->generate_app_key > 1)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "give at most one of tkm_info, app_key and generate_app_key");
	json_t *p = json_pack("{s:s}", "devEUI", a->dev_eui);
	if (!p)
		return fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM, "out of memory");
	static const char *const keys[] = {"tkmInfo", "appKey", "joinEUI", "profileId", "serial"};
	const char *vals[] = {a->tkm_info, a->app_key, a->join_eui, a->profile_id, a->serial};
	for (size_t i = 0; i < 5; i++)
		if (vals[i])
			json_object_set_new(p, keys[i], json_string(vals[i]));
	if (a->generate_app_key)
		json_object_set_new(p, "generateAppKey", json_true());
	json_t *q = label_json(&a->label);
	if (q)
		json_object_set_new(p, "qr", q);
	*ret = p;
	return TPAD_OK;
}

int tpad_activate(tpad_client *c, const struct tpad_activation *a, struct tpad_device *ret,
		  struct tpad_error *err)
{
	if (!c || !a || !ret)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client, activation and result are required");
	memset(ret, 0, sizeof(*ret));
	json_t *p;
	int r = activation_params(a, &p, err);
	return r < 0 ? r : device_call(c, "io.tpad.Station.Activate", p, ret, err);
}

/* A call's parameters p (stolen) with the print asked for, or NULL when out of memory. */
static json_t *with_print(json_t *p, const struct tpad_print *print, struct tpad_error *err)
{
	json_t *o = print_json(print);
	if (!o || json_object_set_new(p, "print", o) < 0) {
		drop_json(p);
		fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM, "out of memory");
		return NULL;
	}
	return p;
}

int tpad_activate_print(tpad_client *c, const struct tpad_activation *a,
			const struct tpad_print *print, struct tpad_device *ret,
			struct tpad_print_status *status, struct tpad_error *err)
{
	if (!c || !a || !ret || !status)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client, activation, result and status are required");
	memset(ret, 0, sizeof(*ret));
	memset(status, 0, sizeof(*status));
	json_t *p;
	int r = activation_params(a, &p, err);
	if (r < 0)
		return r;
	if (!(p = with_print(p, print, err)))
		return TPAD_E_NOMEM;
	return print_call(c, "io.tpad.Station.Activate", p, ret, status, err);
}

/* The parameters of a Lookup call, checked, or a negative code. */
static int lookup_params(const char *dev_eui, const struct tpad_label *label, json_t **ret,
			 struct tpad_error *err)
{
	int r = check_hex_arg(dev_eui, 16, "dev_eui", true, err);
	if (r < 0)
		return r;
	json_t *p = json_pack("{s:s}", "devEUI", dev_eui);
	if (!p)
		return fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM, "out of memory");
	json_t *q = label_json(label);
	if (q)
		json_object_set_new(p, "qr", q);
	*ret = p;
	return TPAD_OK;
}

int tpad_lookup(tpad_client *c, const char *dev_eui, const struct tpad_label *label,
		struct tpad_device *ret, struct tpad_error *err)
{
	if (!c || !ret)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client and result are required");
	memset(ret, 0, sizeof(*ret));
	json_t *p = NULL;
	int r = lookup_params(dev_eui, label, &p, err);
	return r < 0 ? r : device_call(c, "io.tpad.Station.Lookup", p, ret, err);
}

int tpad_lookup_print(tpad_client *c, const char *dev_eui, const struct tpad_label *label,
		      const struct tpad_print *print, struct tpad_device *ret,
		      struct tpad_print_status *status, struct tpad_error *err)
{
	if (!c || !ret || !status)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client, result and status are required");
	memset(ret, 0, sizeof(*ret));
	memset(status, 0, sizeof(*status));
	json_t *p = NULL;
	int r = lookup_params(dev_eui, label, &p, err);
	if (r < 0)
		return r;
	if (!(p = with_print(p, print, err)))
		return TPAD_E_NOMEM;
	return print_call(c, "io.tpad.Station.Lookup", p, ret, status, err);
}

static unsigned long long getu(json_t *o, const char *key)
{
	json_int_t v = json_integer_value(json_object_get(o, key));
	return v > 0 ? (unsigned long long)v : 0;
}

int tpad_status(tpad_client *c, struct tpad_status *ret, struct tpad_error *err)
{
	if (!c || !ret)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client and result are required");
	memset(ret, 0, sizeof(*ret));
	json_t *p;
	if (!take(c, err))
		return TPAD_E_ARGUMENT;
	int r = give_back(c, call(c, "io.tpad.Admin.Status", NULL, &p, err));
	if (r < 0)
		return r;
	copy_str(p, "version", ret->version, sizeof(ret->version), false);
	ret->uptime = (long long)getu(p, "uptime");
	json_t *u = json_object_get(p, "upstream");
	if (json_is_object(u)) {
		copy_str(u, "state", ret->upstream_state, sizeof(ret->upstream_state), false);
		copy_str(u, "breaker", ret->breaker, sizeof(ret->breaker), false);
		ret->queue = getu(u, "queue");
		size_t i;
		json_t *s;
		json_array_foreach(json_object_get(u, "sessions"), i, s)
		{
			const char *st = json_string_value(json_object_get(s, "state"));
			ret->sessions++;
			if (st && (!strcmp(st, "ready") || !strcmp(st, "busy")))
				ret->sessions_up++;
		}
		json_t *lat = json_object_get(u, "latency");
		ret->latency_p50_ms = (long long)getu(lat, "p50");
		ret->latency_p99_ms = (long long)getu(lat, "p99");
	}
	json_t *s = json_object_get(p, "store");
	if (json_is_object(s)) {
		json_t *rows = json_object_get(s, "rows");
		ret->issued = getu(rows, "ISSUED");
		ret->pending = getu(rows, "PENDING");
		ret->failed = getu(rows, "FAILED");
		const char *le = json_string_value(json_object_get(s, "lastError"));
		snprintf(ret->store_error, sizeof(ret->store_error), "%s", le ? le : "");
		json_t *f = json_object_get(s, "failing");
		ret->store_failing =
		    json_is_boolean(f) ? json_is_true(f) : ret->store_error[0] != 0;
	}
	ret->health = ret->store_failing		     ? 6
		      : !strcmp(ret->breaker, "open")	     ? 5
		      : !strcmp(ret->upstream_state, "down") ? 4
							     : 0;
	drop_json(p);
	return TPAD_OK;
}

void tpad_device_clear(struct tpad_device *d)
{
	if (!d)
		return;
	/* The AppKey and ownerToken are secrets, and the label shows the token. */
	if (d->qr_data)
		wipe(d->qr_data, d->qr_len);
	free(d->qr_data);
	wipe(d, sizeof(*d));
}

/* Parse the JSON text of a call's parameters (NULL: none) into *ret. */
static int params_from_text(const char *parameters, json_t **ret, struct tpad_error *err)
{
	*ret = NULL;
	if (!parameters)
		return TPAD_OK;
	json_error_t je;
	json_t *p = json_loads(parameters, 0, &je);
	if (!json_is_object(p)) {
		drop_json(p);
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "parameters must be a JSON object: %s", je.text);
	}
	*ret = p;
	return TPAD_OK;
}

/*
 * A call's parameters from text, and the connection taken for the call: TPAD_OK with *ret
 * (the caller's; the connection is given back with give_back()), or a negative code with
 * err filled (nothing taken).
 */
static int take_with_params(tpad_client *c, const char *parameters, json_t **ret,
			    struct tpad_error *err)
{
	int r = params_from_text(parameters, ret, err);
	if (r < 0)
		return r;
	if (!take(c, err)) {
		drop_json(*ret);
		*ret = NULL;
		return TPAD_E_ARGUMENT;
	}
	return TPAD_OK;
}

int tpad_call_json(tpad_client *c, const char *method, const char *parameters, char **ret_json,
		   struct tpad_error *err)
{
	if (!c || !method || !ret_json)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client, method and result are required");
	*ret_json = NULL;
	json_t *p = NULL, *reply;
	int pr = take_with_params(c, parameters, &p, err);
	if (pr < 0)
		return pr;
	int r = give_back(c, call(c, method, p, &reply, err));
	if (r < 0)
		return r;
	*ret_json = dump_json(reply, JSON_COMPACT);
	drop_json(reply);
	return *ret_json ? TPAD_OK
			 : fail(err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM, "out of memory");
}

int tpad_call_reply(tpad_client *c, const char *method, const char *parameters, char **ret_reply,
		    struct tpad_error *err)
{
	if (!c || !method || !ret_reply)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client, method and result are required");
	*ret_reply = NULL;
	json_t *p = NULL, *reply;
	int pr = take_with_params(c, parameters, &p, err);
	if (pr < 0)
		return pr;
	int r = give_back(c, call_raw(c, method, p, &reply, ret_reply, err));
	if (r < 0)
		return r;
	drop_json(reply);
	clear_error(err);
	return TPAD_OK;
}

int tpad_client_set_timeout(tpad_client *c, int timeout_ms)
{
	if (!c || timeout_ms < TPAD_TIMEOUT_NONE)
		return TPAD_E_ARGUMENT;
	c->timeout_ms = timeout_ms == 0 ? DEFAULT_TIMEOUT_MS : timeout_ms;
	return TPAD_OK;
}

int tpad_call_more(tpad_client *c, const char *method, const char *parameters,
		   struct tpad_error *err)
{
	if (!c || !method)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client and method are required");
	json_t *p = NULL;
	int r = take_with_params(c, parameters, &p, err);
	if (r < 0)
		return r;
	r = send_call(c, method, p, true, err);
	if (r < 0)
		return give_back(c, r);
	c->streaming = true;
	clear_error(err);
	return give_back(c, TPAD_OK);
}

/* tpad_more_next() on a connection taken. */
static int more_next(tpad_client *c, char **ret_json, int *ret_continues, struct tpad_error *err)
{
	if (!c->streaming)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "no stream is open on %s (tpad_call_more() first)", c->path);
	json_t *reply, *p;
	int r = read_reply(c, true, &reply, NULL, err);
	if (r < 0)
		return r;
	/* An error reply is the last one too. */
	bool more =
	    json_is_true(json_object_get(reply, "continues")) && !json_object_get(reply, "error");
	c->streaming = more;
	r = reply_params(c, reply, &p, err);
	if (r < 0)
		return r;
	*ret_json = dump_json(p, JSON_COMPACT);
	drop_json(p);
	/* The reply is gone: the stream cannot go on without a gap. */
	if (!*ret_json)
		return broken(c, err, TPAD_E_NOMEM, "tpad.client.NoMemory", ENOMEM,
			      "lost a reply (out of memory) from");
	*ret_continues = more;
	return TPAD_OK;
}

int tpad_more_next(tpad_client *c, char **ret_json, int *ret_continues, struct tpad_error *err)
{
	if (!c || !ret_json || !ret_continues)
		return fail(err, TPAD_E_ARGUMENT, "tpad.client.Argument", 0,
			    "client and results are required");
	*ret_json = NULL;
	*ret_continues = 0;
	if (!take(c, err))
		return TPAD_E_ARGUMENT;
	return give_back(c, more_next(c, ret_json, ret_continues, err));
}
