/*
 * Fuzz target: arbitrary byte streams into a real tpad connection over a socketpair — the
 * server's connection state machine, framing, flags (oneway, more, upgrade), pipelined
 * calls, dispatch and every method's handler, with a real store and an upstream that
 * refuses connections. The parser fuzzers never reached this code.
 *
 * Input: byte 0 picks the socket (even: station, odd: admin), byte 1 how the rest is cut
 * into writes (low 6 bits) and whether the client reads its replies (high bit clear); the
 * rest is what the client sends, then it half-closes and reads (or not). Once it has
 * closed and the server has freed the connection, nothing may stay owed to it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "clock.h"
#include "config.h"
#include "dispatch.h"
#define FUZZ_NAME "fuzz-server"
#include "fuzz_client.h"
#include "layout.h"
#include "log.h"
#include "message.h"
#include "server.h"
#include "tpad.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static struct tpad t;
static struct config cfg;
static bool ready;

/* A tpad with a store in a fresh directory and an upstream nobody listens on. */
static void setup(void)
{
	char dir[] = "/tmp/fuzz-server-XXXXXX";
	require(mkdtemp(dir) != NULL, "mkdtemp");
	char conf[1024], key[256];
	snprintf(key, sizeof(key), "%s/store.key", dir);
	FILE *f = fopen(key, "w");
	require(f != NULL, "store key");
	fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
	fclose(f);
	chmod(key, 0600);
	snprintf(conf, sizeof(conf),
		 "[station]\nsocket = %s/station.sock\n[admin]\nsocket = %s/admin.sock\n"
		 "[upstream]\nurl = http://127.0.0.1:1\nsessions = 1\nconnect-timeout = 50ms\n"
		 "request-timeout = 100ms\nbackoff-min = 10ms\nbackoff-max = 50ms\n"
		 "[store]\npath = %s/tpad.db\nkey-file = %s\n[limits]\nmax-message = 8K\n"
		 "max-pending-calls = 16\nmax-output = 64K\nmax-output-total = 256K\n"
		 "[import]\nconcurrency = 4\n",
		 dir, dir, dir, key);
	char err[512];
	signal(SIGPIPE, SIG_IGN); /* as tpad: a client gone is a write error, not a signal */
	config_defaults(&cfg);
	require(config_load_string(&cfg, "fuzz.conf", conf, err, sizeof(err)) == 0, err);
	log_set_verbose(false);
	fuzz_quiet_log();
	t.cfg = &cfg;
	t.started_us = clock_now_us();
	t.base = event_base_new();
	require(t.base != NULL, "event base");
	t.srv = server_new(t.base, &cfg.limits, dispatch_call, &t);
	require(t.srv != NULL, "server");
	require(dispatch_init(&t) == 0, "dispatch_init");
	/* As tpad's main() does: cairo's and fontconfig's caches freed at exit. */
	atexit(layout_global_cleanup);
	/*
	 * Draw one label now, so that fontconfig's and cairo's one-time caches are made
	 * before libFuzzer starts counting allocations per input.
	 */
	struct layout *l = NULL;
	if (layout_new(&cfg.label, 0, 0, 0, QR_EC_M, &l, err, sizeof(err)) == 0) {
		uint8_t *png = NULL;
		size_t len = 0;
		const struct caption_fields fields = {.dev_eui = "0123456789ABCDEF",
						     .join_eui = "0000000000000000",
						     .serial = "SN-1"};
		if (layout_render(l, LAYOUT_PNG, "LW:D0:0000000000000000:0123456789ABCDEF", &fields,
				  &png, &len, err, sizeof(err)) == 0)
			free(png);
		layout_free(l);
	}
	ready = true;
}

/* libFuzzer: set up before the first input, outside its per-input leak accounting. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setup();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!ready)
		setup();
	if (size < 2)
		return 0;
	enum sock_kind kind = data[0] & 1 ? SOCK_ADMIN : SOCK_STATION;
	size_t chunk = (size_t)(data[1] % 64) + 1;
	bool reads = !(data[1] & 0x80);
	data += 2;
	size -= 2;

	int sv[2];
	require(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");
	fcntl(sv[1], F_SETFL, O_NONBLOCK);
	server_accept(t.srv, sv[0], kind);

	/* Count what could be calls: a oneway call must get no reply. */
	size_t calls = fuzz_varlink_calls(data, size);
	static struct fuzz_varlink v;
	v.len = 0;
	size_t replies =
	    fuzz_converse(t.base, sv[1], data, size, chunk, reads, fuzz_read_varlink, &v, 300);
	/* Every reply answers one call (a partial last message is not one). */
	require(replies <= calls + 1, "more calls ended than were sent");
	close(sv[1]);
	/* Let the server see the close, free the connection and finish the calls in flight. */
	struct server_stats st;
	uint64_t until = clock_now_ms() + 2000;
	do {
		event_base_loop(t.base, EVLOOP_NONBLOCK);
		server_get_stats(t.srv, &st);
		if (st.output_owed == 0 && st.connections[SOCK_STATION] + st.connections[SOCK_ADMIN] == 0)
			break;
		poll(NULL, 0, 1);
	} while (clock_now_ms() < until);
	require(st.output_owed == 0, "output still owed to a client that is gone");
	require(st.connections[SOCK_STATION] + st.connections[SOCK_ADMIN] == 0,
		"a connection left open after its client closed");
	return 0;
}
