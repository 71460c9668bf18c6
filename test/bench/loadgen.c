/* loadgen: drives io.tpad.Station.Activate over pipelined station connections and prints JSON. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <jansson.h>

#include "frame.h"
#include "message.h"

#define MAX_REPLY (4u << 20)
#define MAX_ERROR_NAMES 32
#define METHOD "io.tpad.Station.Activate"

struct loadgen;

/* One station connection with its calls in flight, oldest first. */
struct conn {
	struct loadgen *g;
	struct bufferevent *bev;
	uint64_t *sent_ns; /* ring of send times, depth entries */
	unsigned head;
	unsigned inflight;
	bool dead;
};

/* An error reply name and how often it came back. */
struct error_count {
	char *name;
	unsigned long count;
};

/* The options and the running totals of one load run. */
struct loadgen {
	const char *socket_path;
	unsigned connections;
	unsigned depth;
	unsigned long count;
	uint64_t start;
	bool qr_png;
	bool generate_app_key;
	unsigned timeout_s;

	struct event_base *base;
	struct conn *conns;
	unsigned long sent;
	unsigned long done;
	unsigned long ok;
	unsigned long live;
	unsigned long stored;
	double *lat_ms; /* latencies of successful calls */
	struct error_count errors[MAX_ERROR_NAMES];
	size_t n_errors;
	uint64_t t_begin_ns;
	uint64_t t_end_ns;
	bool timed_out;
};

/* The monotonic clock in nanoseconds. */
static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Count one failed call under name (names past the table's size share "other"). */
static void count_error(struct loadgen *g, const char *name)
{
	for (size_t i = 0; i < g->n_errors; i++)
		if (strcmp(g->errors[i].name, name) == 0) {
			g->errors[i].count++;
			return;
		}
	if (g->n_errors == MAX_ERROR_NAMES - 1 && strcmp(name, "other") != 0) {
		count_error(g, "other");
		return;
	}
	char *copy = strdup(name);
	if (!copy) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	g->errors[g->n_errors].name = copy;
	g->errors[g->n_errors].count = 1;
	g->n_errors++;
}

/* Build the Activate call for device number n as framed JSON; NULL on ENOMEM. */
static char *make_call(const struct loadgen *g, uint64_t n, size_t *ret_len)
{
	char dev_eui[17], tkm[21];
	snprintf(dev_eui, sizeof(dev_eui), "%016" PRIX64, n);
	json_t *p = json_pack("{s:s}", "devEUI", dev_eui);
	if (!p)
		return NULL;
	int r;
	if (g->generate_app_key) {
		r = json_object_set_new(p, "generateAppKey", json_true());
	} else {
		snprintf(tkm, sizeof(tkm), "3111%s", dev_eui);
		r = json_object_set_new(p, "tkmInfo", json_string(tkm));
	}
	if (r == 0)
		r = json_object_set_new(p, "qr",
					json_pack("{s:s}", "format", g->qr_png ? "png" : "none"));
	char *msg = r == 0 ? call_encode(METHOD, p, false, false, ret_len) : NULL;
	json_decref(p);
	return msg;
}

/* Send calls on c until it holds depth in flight or every call was sent. */
static int conn_fill(struct loadgen *g, struct conn *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	while (!c->dead && c->inflight < g->depth && g->sent < g->count) {
		size_t len;
		char *msg = make_call(g, g->start + g->sent, &len);
		if (!msg)
			return -ENOMEM;
		int r = frame_push(out, msg, len);
		free(msg);
		if (r < 0)
			return r;
		c->sent_ns[(c->head + c->inflight) % g->depth] = now_ns();
		c->inflight++;
		g->sent++;
	}
	return 0;
}

/* Stop the loop once every call has an outcome or no connection is left. */
static void check_finished(struct loadgen *g)
{
	bool any_alive = false;
	for (unsigned i = 0; i < g->connections; i++)
		if (!g->conns[i].dead)
			any_alive = true;
	if (g->done >= g->count || !any_alive) {
		g->t_end_ns = now_ns();
		event_base_loopbreak(g->base);
	}
}

/* Classify one reply: a device with an ownerToken (and a PNG when asked) or an error name. */
static void take_reply(struct loadgen *g, const char *msg, size_t len, double ms)
{
	struct reply rep = {0};
	if (reply_decode(msg, len, &rep) < 0) {
		count_error(g, "loadgen.BadReply");
		return;
	}
	if (rep.error) {
		count_error(g, rep.error);
		reply_clear(&rep);
		return;
	}
	json_t *dev = json_object_get(rep.parameters, "device");
	const char *token = json_string_value(json_object_get(dev, "ownerToken"));
	const char *source = json_string_value(json_object_get(dev, "source"));
	json_t *qr = json_object_get(rep.parameters, "qr");
	const char *data = json_string_value(json_object_get(qr, "data"));
	if (!token || !*token || !source) {
		count_error(g, "loadgen.NoToken");
	} else if (g->qr_png && (!data || !*data)) {
		count_error(g, "loadgen.NoImage");
	} else {
		g->lat_ms[g->ok++] = ms;
		if (strcmp(source, "live") == 0)
			g->live++;
		else
			g->stored++;
	}
	reply_clear(&rep);
}

/* Handle replies on a connection: match each to its send time, in call order. */
static void read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct loadgen *g = c->g;
	struct evbuffer *in = bufferevent_get_input(bev);
	for (;;) {
		char *msg;
		size_t len;
		int r = frame_pop(in, MAX_REPLY, &msg, &len);
		if (r == 0)
			break;
		if (r < 0 || c->inflight == 0) {
			if (r == 1)
				free(msg);
			count_error(g, "loadgen.ProtocolError");
			c->dead = true;
			g->done += c->inflight;
			c->inflight = 0;
			bufferevent_disable(bev, EV_READ | EV_WRITE);
			check_finished(g);
			return;
		}
		double ms = (double)(now_ns() - c->sent_ns[c->head]) / 1e6;
		c->head = (c->head + 1) % g->depth;
		c->inflight--;
		g->done++;
		take_reply(g, msg, len, ms);
		free(msg);
	}
	if (conn_fill(g, c) < 0) {
		fprintf(stderr, "loadgen: out of memory\n");
		exit(1);
	}
	check_finished(g);
}

/* A connection closed or failed: its calls in flight have no outcome. */
static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct conn *c = arg;
	struct loadgen *g = c->g;
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
		return;
	for (unsigned i = 0; i < c->inflight; i++)
		count_error(g, "loadgen.ConnectionClosed");
	g->done += c->inflight;
	c->inflight = 0;
	c->dead = true;
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	check_finished(g);
}

/* The whole run took too long: stop with what was measured. */
static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loadgen *g = arg;
	g->timed_out = true;
	g->t_end_ns = now_ns();
	event_base_loopbreak(g->base);
}

/* Connect to the station socket; returns a non-blocking descriptor or a negative errno. */
static int connect_station(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    evutil_make_socket_nonblocking(fd) < 0) {
		int e = -errno;
		close(fd);
		return e;
	}
	return fd;
}

/* Compare two doubles for qsort. */
static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The p-th percentile (nearest rank) of n sorted values; 0 when there are none. */
static double percentile(const double *v, unsigned long n, double p)
{
	if (n == 0)
		return 0;
	unsigned long rank = (unsigned long)(p / 100.0 * (double)n + 0.999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return v[rank - 1];
}

/* Print the run's results as one JSON object on stdout. */
static int print_result(struct loadgen *g)
{
	double secs = (double)(g->t_end_ns - g->t_begin_ns) / 1e9;
	qsort(g->lat_ms, g->ok, sizeof(double), cmp_double);
	double sum = 0;
	for (unsigned long i = 0; i < g->ok; i++)
		sum += g->lat_ms[i];
	json_t *errors = json_object();
	for (size_t i = 0; errors && i < g->n_errors; i++)
		json_object_set_new(errors, g->errors[i].name,
				    json_integer((json_int_t)g->errors[i].count));
	json_t *o = json_pack(
	    "{s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:I, s:I, "
	    "s:s, s:b, s:b}",
	    "total", (json_int_t)g->done, "ok", (json_int_t)g->ok, "live", (json_int_t)g->live,
	    "stored", (json_int_t)g->stored, "unanswered", (json_int_t)(g->count - g->done),
	    "seconds", secs, "rate", secs > 0 ? (double)g->ok / secs : 0.0, "mean_ms",
	    g->ok ? sum / (double)g->ok : 0.0, "p50_ms", percentile(g->lat_ms, g->ok, 50), "p90_ms",
	    percentile(g->lat_ms, g->ok, 90), "p99_ms", percentile(g->lat_ms, g->ok, 99), "max_ms",
	    g->ok ? g->lat_ms[g->ok - 1] : 0.0, "min_ms", g->ok ? g->lat_ms[0] : 0.0, "errors",
	    errors ? errors : json_object(), "connections", (json_int_t)g->connections, "depth",
	    (json_int_t)g->depth, "qr", g->qr_png ? "png" : "none", "generateAppKey",
	    g->generate_app_key, "timedOut", g->timed_out);
	if (!o)
		return -ENOMEM;
	int r = json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(6)) == 0 ? 0 : -EIO;
	putchar('\n');
	json_decref(o);
	return r;
}

/* Print the usage to f. */
static void usage(FILE *f)
{
	fprintf(f, "usage: loadgen --socket PATH [--connections C] [--depth P] [--count N]\n"
		   "               [--start N] [--qr png|none] [--generate-app-key] [--timeout S]\n"
		   "Sends N io.tpad.Station.Activate calls for DevEUIs START..START+N-1 (START\n"
		   "decimal or 0x hex; TKM_INFO is 3111 and the DevEUI) over C connections with\n"
		   "up to P calls in flight on each, and prints one JSON object: total, ok,\n"
		   "seconds, rate (ok/s), p50/p90/p99/max latency in ms, errors by name.\n");
}

/* Parse an unsigned number in [min, max]; false when it is not one. */
static bool parse_num(const char *s, unsigned long long min, unsigned long long max,
		      unsigned long long *ret)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || *s == '-' || v < min || v > max)
		return false;
	*ret = v;
	return true;
}

/* Parse the command line into g; exits 2 on a bad option. */
static void parse_args(struct loadgen *g, int argc, char **argv)
{
	static const struct option opts[] = {
	    {"socket", required_argument, NULL, 's'},
	    {"connections", required_argument, NULL, 'c'},
	    {"depth", required_argument, NULL, 'd'},
	    {"count", required_argument, NULL, 'n'},
	    {"start", required_argument, NULL, 'S'},
	    {"qr", required_argument, NULL, 'q'},
	    {"generate-app-key", no_argument, NULL, 'g'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	int o;
	unsigned long long v;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool ok = true;
		switch (o) {
		case 's':
			g->socket_path = optarg;
			break;
		case 'c':
			ok = parse_num(optarg, 1, 4096, &v);
			g->connections = (unsigned)v;
			break;
		case 'd':
			ok = parse_num(optarg, 1, 65536, &v);
			g->depth = (unsigned)v;
			break;
		case 'n':
			ok = parse_num(optarg, 1, 100000000, &v);
			g->count = (unsigned long)v;
			break;
		case 'S':
			ok = parse_num(optarg, 0, UINT64_MAX - 100000000, &v);
			g->start = v;
			break;
		case 'q':
			ok = strcmp(optarg, "png") == 0 || strcmp(optarg, "none") == 0;
			g->qr_png = strcmp(optarg, "png") == 0;
			break;
		case 'g':
			g->generate_app_key = true;
			break;
		case 't':
			ok = parse_num(optarg, 1, 86400, &v);
			g->timeout_s = (unsigned)v;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			exit(2);
		}
		if (!ok) {
			const char *name = "?";
			for (const struct option *p = opts; p->name; p++)
				if (p->val == o)
					name = p->name;
			fprintf(stderr, "loadgen: bad value for --%s: %s\n", name, optarg);
			exit(2);
		}
	}
	if (optind != argc || !g->socket_path) {
		usage(stderr);
		exit(2);
	}
}

/* Free everything a run holds; accepts a partly set up run. */
static void loadgen_clear(struct loadgen *g)
{
	for (unsigned i = 0; g->conns && i < g->connections; i++) {
		if (g->conns[i].bev)
			bufferevent_free(g->conns[i].bev);
		free(g->conns[i].sent_ns);
	}
	for (size_t i = 0; i < g->n_errors; i++)
		free(g->errors[i].name);
	free(g->conns);
	free(g->lat_ms);
	if (g->base)
		event_base_free(g->base);
}

/* Open the connections, run the load until done or timed out; exit status. */
static int run(struct loadgen *g)
{
	g->base = event_base_new();
	g->conns = calloc(g->connections, sizeof(*g->conns));
	g->lat_ms = calloc(g->count, sizeof(double));
	if (!g->base || !g->conns || !g->lat_ms)
		goto oom;
	for (unsigned i = 0; i < g->connections; i++) {
		struct conn *c = &g->conns[i];
		c->g = g;
		c->sent_ns = calloc(g->depth, sizeof(uint64_t));
		if (!c->sent_ns)
			goto oom;
		int fd = connect_station(g->socket_path);
		if (fd < 0) {
			fprintf(stderr, "loadgen: cannot connect to %s: %s\n", g->socket_path,
				strerror(-fd));
			return 3;
		}
		c->bev = bufferevent_socket_new(g->base, fd, BEV_OPT_CLOSE_ON_FREE);
		if (!c->bev) {
			close(fd);
			goto oom;
		}
		bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	}
	struct event *timer = evtimer_new(g->base, timeout_cb, g);
	struct timeval tv = {.tv_sec = g->timeout_s};
	if (!timer || evtimer_add(timer, &tv) < 0) {
		if (timer)
			event_free(timer);
		goto oom;
	}
	g->t_begin_ns = now_ns();
	int r = 0;
	for (unsigned i = 0; r == 0 && i < g->connections; i++)
		r = conn_fill(g, &g->conns[i]);
	if (r == 0)
		event_base_dispatch(g->base);
	event_free(timer);
	if (r < 0)
		goto oom;
	if (!g->t_end_ns)
		g->t_end_ns = now_ns();
	if (print_result(g) < 0)
		goto oom;
	return g->ok == g->count ? 0 : 1;
oom:
	fprintf(stderr, "loadgen: out of memory\n");
	return 1;
}

int main(int argc, char **argv)
{
	struct loadgen g = {
	    .connections = 1,
	    .depth = 1,
	    .count = 1000,
	    .start = 0x70B3D50000000000ull,
	    .timeout_s = 600,
	};
	parse_args(&g, argc, argv);
	if (g.connections > g.count)
		g.connections = (unsigned)g.count;
	int status = run(&g);
	loadgen_clear(&g);
	return status;
}
