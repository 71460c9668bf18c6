/*
 * Unit tests for print: raw 9100 jobs against a printer thread on loopback that answers
 * ~HS as told (ready, paper out, garbage, closing, silent, stalled with a full buffer),
 * queue limits, stopping with jobs queued (raw and IPP), labels that do not fit, a PDF
 * job over the page limit, a printer name that does not resolve in time, and the default
 * printer of a station.
 */
#include <errno.h>
#include <event2/dns.h>
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
#include "print_backend.h"
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

/* STALL: ready, then reads nothing until release is set (its receive buffer is small). */
enum mode { READY, PAPER, GARBAGE, CLOSE, SILENT, STALL };

/* The printer: one thread, one connection at a time. */
struct printer {
	int fd;
	int port;
	enum mode mode;
	char job[65536];
	size_t job_len;
	int jobs;
	volatile bool release;
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
		const char *answer = p->mode == READY || p->mode == STALL ? HS_READY
				     : p->mode == PAPER ? HS_PAPER
							: "\x02hello\x03\r\n\x02x\x03\r\n\x02y\x03\r\n";
		if (send(c, answer, strlen(answer), MSG_NOSIGNAL) < 0) {
			close(c);
			continue;
		}
		while (p->mode == STALL && !p->release)
			usleep(10000);
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

static void printer_start(struct printer *p, int rcvbuf)
{
	memset(p, 0, sizeof(*p));
	p->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (rcvbuf)
		setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
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

/* A print of one printer of text (a config), for the tests below. */
static struct print *print_of(struct event_base *base, struct config *c, const char *text)
{
	char err[256];
	config_defaults(c);
	CHECK_INT(config_load_string(c, "t.conf", text, err, sizeof(err)), 0);
	struct print *p = print_new(base, c, err, sizeof(err));
	CHECK(p != NULL);
	return p;
}

/*
 * A raw job is the printer's once its TCP acknowledged the last byte, not once the bytes
 * are in our kernel: a printer that stops reading with 40 KB of labels to go fails the
 * job when the timeout comes, saying how much it did not take.
 */
static void test_taken(void)
{
	struct event_base *base = event_base_new();
	struct printer pr;
	printer_start(&pr, 4096);
	pr.mode = STALL;
	char text[256], err[256];
	snprintf(text, sizeof(text),
		 "[printer.a]\nurl = socket://127.0.0.1:%d\ntimeout = 500ms\nstatus-interval = 0\n",
		 pr.port);
	struct config c;
	struct print *p = print_of(base, &c, text);
	enum { N = 250 };
	struct print_label *l = calloc(N, sizeof(*l));
	char dev[17];
	for (int i = 0; i < N; i++) {
		snprintf(dev, sizeof(dev), "0123D34566%06X", i);
		label_of(&l[i], dev, "SN-1");
	}
	struct seen s = {.base = base};
	CHECK(print_submit(p, "a", l, N, 1, on_done, &s, err, sizeof(err)) > 0);
	run_until(base, &s, 1);
	CHECK_INT(s.calls, 1);
	CHECK(!s.ok[0] && strstr(s.reason[0], "bytes not taken") != NULL);
	pr.release = true;
	print_free(p);
	config_free(&c);
	free(l);
	shutdown(pr.fd, SHUT_RDWR);
	close(pr.fd);
	pthread_join(pr.thread, NULL);
	event_base_free(base);
}

/*
 * A printer name whose look-up outlives the job (timeout), or tpad stopping during it:
 * the look-up is cancelled and its late answer must not touch the freed job (ASan).
 */
static void test_dns_cancelled(bool at_stop)
{
	struct event_base *base = event_base_new();
	int u = socket(AF_INET, SOCK_DGRAM, 0); /* a name server that never answers */
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	bind(u, (struct sockaddr *)&a, sizeof(a));
	getsockname(u, (struct sockaddr *)&a, &alen);
	char ns[64], err[256];
	snprintf(ns, sizeof(ns), "127.0.0.1:%d", ntohs(a.sin_port));
	struct config c;
	struct print *p = print_of(base, &c,
				   "[printer.a]\nurl = socket://zebra-line1.example:9100\n"
				   "timeout = 200ms\nstatus-interval = 0\n");
	evdns_base_clear_nameservers_and_suspend(p->dns);
	evdns_base_search_clear(p->dns);
	evdns_base_nameserver_ip_add(p->dns, ns);
	evdns_base_resume(p->dns);
	struct print_label l;
	label_of(&l, "0123D345666E2DBD", "");
	struct seen s = {0};
	CHECK(print_submit(p, "a", &l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	struct timeval tv = {.tv_usec = at_stop ? 50000 : 400000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	if (at_stop)
		p = print_free(p);
	event_base_loop(base, EVLOOP_NONBLOCK); /* as tpad's main() does after stopping */
	CHECK_INT(s.calls, 1);
	CHECK(!s.ok[0] && strstr(s.reason[0], at_stop ? "stopping" : "resolving") != NULL);
	print_free(p);
	config_free(&c);
	close(u);
	event_base_free(base);
}

/* A listener that accepts and never answers: an IPP printer that hangs. */
static void *hang_thread(void *arg)
{
	int fd = *(int *)arg, c;
	char buf[4096];
	while ((c = accept(fd, NULL, NULL)) >= 0) {
		while (recv(c, buf, sizeof(buf), 0) > 0)
			;
		close(c);
	}
	return NULL;
}

/*
 * PDF (IPP) jobs: more pages than PRINT_MAX_PDF_PAGES are refused at once; stopping with a
 * job on a hung printer and two queued answers the queued ones "tpad is stopping" (no job
 * is started once stopping began).
 */
static void test_pdf(void)
{
	struct event_base *base = event_base_new();
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	bind(fd, (struct sockaddr *)&a, sizeof(a));
	listen(fd, 8);
	getsockname(fd, (struct sockaddr *)&a, &alen);
	pthread_t th;
	pthread_create(&th, NULL, hang_thread, &fd);
	char text[256], err[256];
	snprintf(text, sizeof(text),
		 "[printer.p]\nurl = ipp://127.0.0.1:%d/ipp/print\ntimeout = 1s\n"
		 "status-interval = 0\n",
		 ntohs(a.sin_port));
	struct config c;
	struct print *p = print_of(base, &c, text);
	enum { N = 101 };
	struct print_label *l = calloc(N, sizeof(*l));
	for (int i = 0; i < N; i++)
		label_of(&l[i], "0123D345666E2DBD", "");
	struct seen s = {.base = base};
	CHECK_INT(print_submit(p, "p", l, N, 100, on_done, &s, err, sizeof(err)), -E2BIG);
	CHECK(strstr(err, "10000 pages") != NULL);
	CHECK(print_submit(p, "p", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	CHECK(print_submit(p, "p", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	CHECK(print_submit(p, "p", l, 1, 1, on_done, &s, err, sizeof(err)) > 0);
	struct timeval tv = {.tv_usec = 100000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	s.base = NULL;
	print_free(p);
	CHECK_INT(s.calls, 3);
	CHECK_STR(s.reason[1], "tpad is stopping");
	CHECK_STR(s.reason[2], "tpad is stopping");
	config_free(&c);
	free(l);
	shutdown(fd, SHUT_RDWR);
	close(fd);
	pthread_join(th, NULL);
	event_base_free(base);
}

int main(void)
{
	struct printer pr;
	printer_start(&pr, 0);
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
	CHECK(strstr(s.reason[4], "(printer.a.timeout)") != NULL); /* what to raise */
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
	config_free(&c);

	event_base_free(base);
	/* Each on a base of its own: a loop exit left pending by run_until() ends a run early. */
	test_taken();
	test_dns_cancelled(false);
	test_dns_cancelled(true);
	test_pdf();
	layout_global_cleanup();
	return tap_done();
}
