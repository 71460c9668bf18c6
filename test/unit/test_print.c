/*
 * Unit tests for print: raw 9100 jobs against a printer thread on loopback that answers
 * ~HS as told (ready, paper out, garbage, closing, silent), queue limits, stopping with
 * jobs queued, labels that do not fit, and the default printer of a station.
 */
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "layout.h"
#include "print.h"
#include "tap.h"

#define HS_READY                                                                                   \
	"\x02"                                                                                     \
	"030,0,0,0256,000,0,0,0,000,0,0,0\x03\r\n\x02"                                             \
	"000,0,0,0,0,2,4,0,00000000,1,000\x03\r\n\x02"                                             \
	"1234,0\x03\r\n"
#define HS_PAPER                                                                                   \
	"\x02"                                                                                     \
	"030,1,0,0256,000,0,0,0,000,0,0,0\x03\r\n\x02"                                             \
	"000,0,0,0,0,2,4,0,00000000,1,000\x03\r\n\x02"                                             \
	"1234,0\x03\r\n"

enum mode { READY, PAPER, GARBAGE, CLOSE, SILENT };

/* The printer: one thread, one connection at a time. */
struct printer {
	int fd;
	int port;
	enum mode mode;
	char job[65536];
	size_t job_len;
	int jobs;
	pthread_t thread;
};

static void *printer_thread(void *arg)
{
	struct printer *p = arg;
	for (;;) {
		int c = accept(p->fd, NULL, NULL);
		if (c < 0)
			return NULL;
		char buf[4096];
		size_t got = 0;
		while (!memmem(buf, got, "~HS", 3) && got < sizeof(buf)) {
			ssize_t n = recv(c, buf + got, sizeof(buf) - got, 0);
			if (n <= 0)
				break;
			got += (size_t)n;
		}
		if (p->mode == CLOSE) {
			close(c);
			continue;
		}
		if (p->mode == SILENT) {
			while (recv(c, buf, sizeof(buf), 0) > 0)
				;
			close(c);
			continue;
		}
		const char *answer = p->mode == READY ? HS_READY
				     : p->mode == PAPER ? HS_PAPER
							: "\x02hello\x03\r\n\x02x\x03\r\n\x02y\x03\r\n";
		if (send(c, answer, strlen(answer), MSG_NOSIGNAL) < 0) {
			close(c);
			continue;
		}
		p->job_len = 0;
		ssize_t n;
		while ((n = recv(c, p->job + p->job_len, sizeof(p->job) - 1 - p->job_len, 0)) > 0)
			p->job_len += (size_t)n;
		p->job[p->job_len] = '\0';
		if (p->job_len)
			p->jobs++;
		close(c);
	}
}

static void printer_start(struct printer *p)
{
	memset(p, 0, sizeof(*p));
	p->fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	if (bind(p->fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(p->fd, 8) < 0 ||
	    getsockname(p->fd, (struct sockaddr *)&a, &len) < 0)
		abort();
	p->port = ntohs(a.sin_port);
	pthread_create(&p->thread, NULL, printer_thread, p);
}

/* What the callbacks saw. */
struct seen {
	int calls;
	bool ok[8];
	char reason[8][160];
	struct event_base *base;
};

static void on_done(const struct print_result *res, void *arg)
{
	struct seen *s = arg;
	if (s->calls < 8) {
		s->ok[s->calls] = res->ok;
		snprintf(s->reason[s->calls], sizeof(s->reason[0]), "%s",
			 res->reason ? res->reason : "");
	}
	s->calls++;
	if (s->base)
		event_base_loopbreak(s->base);
}

/* Run the loop until want callbacks came (or 5 s). */
static void run_until(struct event_base *base, struct seen *s, int want)
{
	for (int i = 0; i < 500 && s->calls < want; i++) {
		struct timeval tv = {.tv_usec = 10000};
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
}

static void label_of(struct print_label *l, const char *dev, const char *serial)
{
	memset(l, 0, sizeof(*l));
	snprintf(l->dev_eui, sizeof(l->dev_eui), "%s", dev);
	snprintf(l->join_eui, sizeof(l->join_eui), "70B3D57ED0000001");
	snprintf(l->serial, sizeof(l->serial), "%s", serial);
	snprintf(l->text, sizeof(l->text), "LW:D0:70B3D57ED0000001:%s:00000000:O0011:C1234", dev);
}

int main(void)
{
	struct printer pr;
	printer_start(&pr);
	int dead = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	bind(dead, (struct sockaddr *)&a, sizeof(a));
	getsockname(dead, (struct sockaddr *)&a, &alen);
	int dead_port = ntohs(a.sin_port);
	close(dead); /* nothing listens there now: connection refused */

	char text[1024], err[256];
	snprintf(text, sizeof(text),
		 "[printer.a]\nurl = socket://127.0.0.1:%d\ntimeout = 500ms\nstatus-interval = 0\n"
		 "queue = 2\nstation-uids = 4242\n"
		 "[printer.gone]\nurl = socket://127.0.0.1:%d\ntimeout = 500ms\n"
		 "status-interval = 0\n"
		 "[print]\ndefault = gone\n",
		 pr.port, dead_port);
	struct config c;
	config_defaults(&c);
	CHECK_INT(config_load_string(&c, "t.conf", text, err, sizeof(err)), 0);
	struct event_base *base = event_base_new();
	struct print *p = print_new(base, &c, err, sizeof(err));
	CHECK(p != NULL);
	if (!p)
		return tap_done();
	CHECK_STR(print_default_for(p, 4242, 1), "a");
	CHECK_STR(print_default_for(p, 1, 1), "gone");
	CHECK(print_has(p, "a") && !print_has(p, "b"));

	struct seen s = {.base = base};
	struct print_label l[2];
	label_of(&l[0], "0123D345666E2DBD", "SN-1");
	label_of(&l[1], "0123D345666E2DBE", "");

	/* Ready: one job of two labels, two copies each. */
	pr.mode = READY;
	int64_t job = print_submit(p, "a", l, 2, 2, on_done, &s, err, sizeof(err));
	CHECK(job > 0);
	CHECK_INT(s.calls, 0); /* never from inside print_submit() */
	run_until(base, &s, 1);
	CHECK_INT(s.calls, 1);
	CHECK(s.ok[0]);
	for (int i = 0; i < 100 && pr.jobs < 1; i++)
		usleep(10000);
	CHECK_INT(pr.jobs, 1);
	CHECK(strstr(pr.job, "^FD0123D345666E2DBD^FS") && strstr(pr.job, "^FDSN-1^FS") &&
	      strstr(pr.job, "^PQ2"));

	/* Paper out: the reason, and nothing sent. */
	pr.mode = PAPER;
	CHECK(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	run_until(base, &s, 2);
	CHECK(!s.ok[1]);
	CHECK_STR(s.reason[1], "paper out");
	CHECK_INT(pr.jobs, 1);
	json_t *st = print_status_json(p);
	CHECK_STR(json_string_value(json_object_get(json_array_get(st, 0), "reasons")),
		  "paper out");
	CHECK(json_is_false(json_object_get(json_array_get(st, 0), "ready")));
	json_decref(st);
	char line[160];
	print_status_line(p, line, sizeof(line));
	CHECK(strstr(line, "a paper out") != NULL);

	/* Garbage status, a printer that hangs up, one that says nothing, none at all. */
	pr.mode = GARBAGE;
	CHECK(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	run_until(base, &s, 3);
	CHECK(!s.ok[2] && strstr(s.reason[2], "~HS") != NULL);
	pr.mode = CLOSE;
	CHECK(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	run_until(base, &s, 4);
	CHECK(!s.ok[3] && strstr(s.reason[3], "closed") != NULL);
	pr.mode = SILENT;
	CHECK(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	run_until(base, &s, 5);
	CHECK(!s.ok[4] && strstr(s.reason[4], "timed out") != NULL);
	CHECK(print_submit(p, "gone", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	run_until(base, &s, 6);
	CHECK(!s.ok[5] && strstr(s.reason[5], "refused") != NULL);

	/* Bad input: no such printer, a serial too long for its caption line. */
	CHECK_INT(print_submit(p, "b", l, 1, 1, on_done, &s, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "'b'") != NULL);
	struct print_label wide;
	label_of(&wide, "0123D345666E2DBD", "SERIAL-0123456789-0123456789-0123456789");
	CHECK_INT(print_submit(p, "a", &wide, 1, 1, on_done, &s, err, sizeof(err)), -EMSGSIZE);
	CHECK(strstr(err, "label.caption-2") != NULL);

	/* A full queue refuses; stopping answers what is still queued. */
	pr.mode = SILENT;
	CHECK(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	CHECK(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	CHECK_INT(print_submit(p, "a", l, 1, 1, on_done, &s, err, sizeof(err)), -EBUSY);
	CHECK(strstr(err, "full") != NULL);
	int before = s.calls;
	s.base = NULL;
	print_free(p);
	CHECK_INT(s.calls, before + 2);
	CHECK_STR(s.reason[before], "tpad is stopping");

	shutdown(pr.fd, SHUT_RDWR);
	close(pr.fd);
	pthread_join(pr.thread, NULL);
	event_base_free(base);
	config_free(&c);
	layout_global_cleanup();
	return tap_done();
}
