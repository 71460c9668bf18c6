/*
 * Fuzz target: arbitrary byte streams into a real tpas, in process — its apps or admin
 * socket (varlink over a socketpair: the shared server's connection state machine, flags,
 * pipelined calls and tpas's handlers, streams and downlinks), or its tunnel (HTTP over
 * loopback TCP into the tunnel's own HTTP server: framing, pipelining, the tunnel's whole
 * request path and the journal's group-commit writer thread). The journal is a file in a fresh directory with
 * one ASTK; the LRC is a port nobody listens on. fuzz-tunnel fed the tunnel's parsers and
 * its check; this feeds the daemon's connections.
 *
 * Input: byte 0 picks the target (mod 4: 0 apps socket, 1 admin socket, 2 the tunnel with
 * the bytes as sent, 3 the tunnel with one POST made of the rest: the query up to the first
 * newline, re-signed with the tunnel key when the body parses, and the body after it, sent
 * twice on one connection); byte 1 how the bytes are cut into writes (low 6 bits) and
 * whether the client reads its answers (high bit clear). Then the client half-closes,
 * reads (or not) and closes.
 *
 * Invariants: every varlink reply decodes, no more calls ended than sent; every HTTP answer
 * starts with a status line; once every tunnel request is answered, the journal holds as
 * many uplinks as the tunnel answered "accepted" (none lost, none twice); after the client
 * closes, no connection, stream or owed output is left.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "asapi.h"
#include "asconf.h"
#include "clock.h"
#include "downlink.h"
#define FUZZ_NAME "fuzz-tpas"
#include "fuzz_client.h"
#include "journal.h"
#include "log.h"
#include "message.h"
#include "server.h"
#include "tpas.h"
#include "tunnel.h"
#include "uplink.h"
#include "uplink_read.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define KEY "bec499c69e9c939e413b663961636c61"

static struct tpas t;
static struct asconf cfg;
static bool ready;

/* As tpas's main(): committed uplinks reach the streams. */
static void commit_cb(struct tunnel_uplink *ups, size_t n, void *arg)
{
	asapi_remember(t.api, ups, n);
	asapi_notify(t.api, ups[n - 1].seq);
}

static void setup(void)
{
	char dir[] = "/tmp/fuzz-tpas-XXXXXX", path[256], conf[512], err[512];
	require(mkdtemp(dir) != NULL, "mkdtemp");
	snprintf(conf, sizeof(conf),
		 "[tunnel]\nlisten = 127.0.0.1:0\nmax-time-deviation = 0\nmax-body = 16K\n"
		 "[limits]\nmax-message = 8K\nmax-pending-calls = 16\nmax-output = 64K\n"
		 "max-output-total = 256K\n");
	signal(SIGPIPE, SIG_IGN);
	asconf_defaults(&cfg);
	require(asconf_load_string(&cfg, "fuzz.conf", conf, err, sizeof(err)) == 0, err);
	log_set_verbose(false);
	fuzz_quiet_log();

	static const uint8_t store_key[32] = {7};
	/* The ASTK of UPSTREAM.md's vectors: the corpus's AppSKey fields unwrap with it. */
	static const uint8_t astk[16] = {0x48, 0xe6, 0x16, 0xc7, 0xaa, 0xe1, 0x68, 0x01,
					 0x7d, 0x14, 0xd9, 0x7d, 0x50, 0xd5, 0xef, 0xef};
	snprintf(path, sizeof(path), "%s/tpas.db", dir);
	t.cfg = &cfg;
	t.started_us = clock_now_us();
	t.base = event_base_new();
	require(t.base != NULL, "event base");
	require(journal_open(path, store_key, &t.journal, err, sizeof(err)) == 0, err);
	require(journal_astk_add(t.journal, "", "", "", astk, NULL, NULL) == 0, "ASTK");
	require(journal_astk_add(t.journal, "kek", "", "", astk, NULL, NULL) == 0, "labelled ASTK");
	t.srv = server_new(t.base, &cfg.limits, asapi_call, &t);
	require(t.srv != NULL, "server");
	t.api = asapi_new(&t);
	require(t.api != NULL, "asapi");
	const struct downlink_options dopt = {.url = "http://127.0.0.1:1",
					      .key = KEY,
					      .as_id = "fuzz",
					      .sessions = 1,
					      .request_timeout_ms = 100};
	t.downlink = downlink_new(t.base, &dopt, t.journal, err, sizeof(err));
	require(t.downlink != NULL, err);
	const struct tunnel_options topt = {.listen = cfg.tunnel_listen,
					    .path = "/",
					    .key = KEY,
					    .max_deviation_ms = 0,
					    .max_body = cfg.tunnel_max_body,
					    .timeout_ms = 5000};
	require(tunnel_new(t.base, &topt, t.journal, commit_cb, &t, &t.tunnel, err, sizeof(err)) ==
		    0,
		err);
	ready = true;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setup();
	return 0;
}

/* HTTP answers: the first bytes must be a status line ("HTTP/1.0 " or "HTTP/1.1 "). */
struct http_answers {
	char first[9];
	size_t got;
};

/* A fuzz_read_fn for HTTP (arg: struct http_answers): the bytes read. */
static size_t read_http(int fd, void *arg, bool *eof)
{
	struct http_answers *h = arg;
	char buf[65536];
	size_t total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n == 0)
			*eof = true;
		if (n <= 0)
			break;
		if (h->got < 9) {
			size_t take = 9 - h->got < (size_t)n ? 9 - h->got : (size_t)n;
			memcpy(h->first + h->got, buf, take);
			if (h->got + take == 9)
				require(memcmp(h->first, "HTTP/1.", 7) == 0 &&
					    (h->first[7] == '0' || h->first[7] == '1') &&
					    h->first[8] == ' ',
					"an HTTP answer that does not start with a status line");
		}
		h->got += (size_t)n;
		total += (size_t)n;
	}
	return total;
}

/* The tunnel's requests all answered: every outcome counted. */
static bool tunnel_settled(void)
{
	struct tunnel_stats s;
	tunnel_get_stats(t.tunnel, &s);
	/* Every outcome tpas counts, from its own table: a new one cannot be left out here. */
	uint64_t answered = 0;
	for (size_t i = 0; i < TUNNEL_OUTCOMES; i++)
		answered += tunnel_outcome_count(&s, &tunnel_outcomes[i]);
	return answered == s.requests;
}

/* Mode 3: one POST of the input's query and body, signed when the body parses, twice. */
static uint8_t *make_post(const uint8_t *data, size_t size, size_t *ret_len)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t qlen = nl ? (size_t)(nl - data) : size;
	const uint8_t *body = nl ? nl + 1 : data + size;
	size_t blen = nl ? size - qlen - 1 : 0;
	char *query = strndup((const char *)data, qlen);
	if (!query)
		return NULL;
	char *target = NULL;
	struct uplink u;
	char reason[200], tok[65];
	struct uplink_query q;
	const char *part = uplink_query_parse(query, &q, reason, sizeof(reason)) == 0
			       ? q.signed_part
			       : query;
	if (uplink_parse((const char *)body, blen, &u, reason, sizeof(reason)) == 0) {
		uplink_token(&u, part, KEY, tok);
		if (asprintf(&target, "/?%s&Token=%s", part, tok) < 0)
			target = NULL;
		uplink_clear(&u);
	}
	if (!target && asprintf(&target, "/?%s", query) < 0)
		target = NULL;
	free(query);
	if (!target)
		return NULL;
	/* The target goes on the request line as is: cut it at a byte HTTP cannot carry. */
	target[strcspn(target, " \r\n")] = '\0';
	char head[256];
	int hl = snprintf(head, sizeof(head),
			  " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
			  "Content-Length: %zu\r\n\r\n",
			  blen && body[0] == '<' ? "text/xml" : "application/json", blen);
	size_t one = 5 + strlen(target) + (size_t)hl + blen;
	uint8_t *out = malloc(2 * one);
	if (out) {
		for (int i = 0; i < 2; i++) {
			uint8_t *p = out + (size_t)i * one;
			memcpy(p, "POST ", 5);
			memcpy(p + 5, target, strlen(target));
			memcpy(p + 5 + strlen(target), head, (size_t)hl);
			memcpy(p + 5 + strlen(target) + (size_t)hl, body, blen);
		}
		*ret_len = 2 * one;
	}
	free(target);
	return out;
}

static int connect_tunnel(void)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	require(fd >= 0, "socket");
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(tunnel_port(t.tunnel))};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/*
	 * Non-blocking, then waited for: on a loaded machine the loopback handshake can finish
	 * in another context, and libFuzzer's timer signal would fail a blocking connect with
	 * EINTR (tpas needs no turn of the loop for it: the kernel completes it).
	 */
	fcntl(fd, F_SETFL, O_NONBLOCK);
	int r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (r < 0 && (errno == EINPROGRESS || errno == EINTR)) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t len = sizeof(err);
		while ((r = poll(&p, 1, 5000)) < 0 && errno == EINTR)
			;
		require(r == 1, "connect to the tunnel: no answer in 5 s");
		r = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0 ? 0 : -1;
		errno = err;
	}
	require(r == 0, "connect to the tunnel");
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ready)
		setup();
	if (size < 2)
		return 0;
	unsigned mode = data[0] % 4;
	size_t chunk = (size_t)(data[1] % 64) + 1;
	bool reads = !(data[1] & 0x80);
	data += 2;
	size -= 2;
	uint8_t *made = NULL;
	if (mode == 3) {
		made = make_post(data, size, &size);
		if (!made)
			return 0;
		data = made;
	}

	int fd;
	if (mode < 2) {
		int sv[2];
		require(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
		fcntl(sv[1], F_SETFL, O_NONBLOCK);
		server_accept(t.srv, sv[0], mode == 0 ? SOCK_STATION : SOCK_ADMIN);
		fd = sv[1];
	} else {
		fd = connect_tunnel();
	}
	if (mode < 2) {
		static struct fuzz_varlink v;
		v.len = 0;
		size_t replies =
		    fuzz_converse(t.base, fd, data, size, chunk, reads, fuzz_read_varlink, &v, 300);
		require(replies <= fuzz_varlink_calls(data, size) + 1, "more calls ended than were sent");
	} else {
		struct http_answers h = {.got = 0};
		fuzz_converse(t.base, fd, data, size, chunk, reads, read_http, &h, 300);
	}
	close(fd);
	free(made);

	/* Let tpas see the close, its writer commit and its downlinks fail. */
	uint64_t until = clock_now_ms() + 3000;
	struct server_stats st;
	do {
		event_base_loop(t.base, EVLOOP_NONBLOCK);
		server_get_stats(t.srv, &st);
		if (tunnel_settled() && asapi_subscribers(t.api) == 0 &&
		    st.connections[SOCK_STATION] + st.connections[SOCK_ADMIN] == 0)
			break;
		poll(NULL, 0, 1);
	} while (clock_now_ms() < until);
	require(tunnel_settled(), "a tunnel request never answered");
	require(st.connections[SOCK_STATION] + st.connections[SOCK_ADMIN] == 0,
		"a connection left open after its client closed");
	require(st.output_owed == 0, "output still owed to a client that is gone");
	require(asapi_subscribers(t.api) == 0, "a stream left open after its client closed");
	struct tunnel_stats ts;
	struct journal_stats js;
	tunnel_get_stats(t.tunnel, &ts);
	journal_get_stats(t.journal, &js);
	require((uint64_t)js.uplinks == ts.accepted,
		"the journal does not hold exactly the accepted uplinks");
	return 0;
}
