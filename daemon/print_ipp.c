/* print_ipp: PDF labels to ipp:// and ipps:// printers through libcups, on a worker thread. */
#include <cups/cups.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clock.h"
#include "thread.h"
#include "config.h"
#include "layout.h"
#include "print_backend.h"
#include "utf8.h"

/*
 * libcups blocks, so each IPP printer has one thread that does its jobs one at a time;
 * the loop hands it a job and gets it back through the done pipe. libcups keeps its
 * last error per thread, so threads never mix them up.
 */
struct ipp_worker {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct print_job *job; /* handed over, not started */
	bool stop;
	bool started;
	char uri[1024];
	uint64_t deadline_us; /* of the request in progress (worker only) */
};

/* How often libcups comes back to ask whether to wait on: the deadline's precision. */
#define IPP_WAIT_SLICE_S 0.1

/* Reasons of printer-state-reasons that stop a label from coming out. */
static const char *const blocking_reasons[] = {
    "media-empty",  "media-needed",	  "media-jam",	   "door-open",
    "cover-open",   "marker-supply-empty", "toner-empty",	   "paused",
    "offline",	    "spool-area-full",	   "input-tray-missing", "output-area-full",
    "interlock-open",
};

/*
 * True if one printer-state-reason keeps a label from coming out now: a blocking keyword
 * with no suffix, -error or -report (ippeveprinter says media-empty-report when it has
 * no media); -warning never blocks (media-low-warning).
 */
static bool reason_blocks(const char *r)
{
	size_t n = strlen(r);
	if (n > 8 && strcmp(r + n - 8, "-warning") == 0)
		return false;
	if (n > 7 && strcmp(r + n - 7, "-report") == 0)
		n -= 7;
	else if (n > 6 && strcmp(r + n - 6, "-error") == 0)
		n -= 6;
	for (size_t i = 0; i < sizeof(blocking_reasons) / sizeof(blocking_reasons[0]); i++)
		if (strlen(blocking_reasons[i]) == n && strncmp(r, blocking_reasons[i], n) == 0)
			return true;
	return false;
}

/*
 * A request that got no IPP answer at all: libcups then reports "successful-ok" or an
 * internal error (its text strerror(0), "Success", after a timeout; the system's error,
 * "Broken pipe", when the connection was lost). Say which in j->reason, mark the printer
 * unreachable and return true; false when the printer did answer (an HTTP or IPP error).
 */
static bool no_answer(http_t *http, struct print_job *j, const char *what)
{
	ipp_status_t st = cupsLastError();
	if (st > IPP_STATUS_OK_EVENTS_COMPLETE && st != IPP_STATUS_ERROR_INTERNAL)
		return false;
	const char *m = cupsLastErrorString();
	int e = httpError(http);
	if (e == ETIMEDOUT || (!e && (!m || !*m || strcmp(m, strerror(0)) == 0)))
		snprintf(j->reason, sizeof(j->reason),
			 "the printer did not answer %s within printer.%s.timeout", what,
			 j->pr->cfg->name);
	else
		snprintf(j->reason, sizeof(j->reason),
			 "lost the connection to the printer during %s: %s", what,
			 e ? strerror(e) : m);
	print_job_unreachable(j);
	return true;
}

/* libcups waited a slice: wait on while the request's deadline has not passed. */
static int wait_on(http_t *http, void *arg)
{
	const struct ipp_worker *w = arg;
	(void)http;
	return clock_now_us() < w->deadline_us;
}

/* The next requests on http end by deadline (libcups waits in slices until then). */
static void ipp_deadline(http_t *http, struct ipp_worker *w, uint64_t deadline)
{
	w->deadline_us = deadline;
	httpSetTimeout(http, IPP_WAIT_SLICE_S, wait_on, w);
}

/*
 * Why a TCP connection to host:port fails, as connect() says it, within timeout_ms: 0 if
 * one succeeds now. libcups reports every failed connection as "Host is down".
 */
static int connect_error(const char *host, int port, int timeout_ms, const char **unresolved)
{
	char serv[8];
	snprintf(serv, sizeof(serv), "%d", port);
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	int g = getaddrinfo(host, serv, &hints, &ai);
	if (g != 0 && g != EAI_SYSTEM)
		*unresolved = gai_strerror(g); /* the name, not the route: say so, as raw does */
	if (g != 0)
		return g == EAI_SYSTEM ? errno : EHOSTUNREACH;
	int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			ai->ai_protocol);
	int e = fd < 0 ? errno : 0;
	if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
		e = errno;
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		socklen_t len = sizeof(e);
		if (e == EINPROGRESS)
			e = poll(&pfd, 1, timeout_ms) == 1 &&
				    getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0
				? e
				: ETIMEDOUT;
	}
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return e;
}

/* Milliseconds left of j's printer.timeout, at least 1. */
static int left_ms(const struct print_job *j)
{
	uint64_t ms = print_job_left_us(j) / 1000u;
	return ms ? (int)ms : 1;
}

/* Connect to the printer within what is left of the job's timeout. */
static http_t *ipp_connect(struct print_printer *pr, struct ipp_worker *w, struct print_job *j)
{
	http_encryption_t enc = pr->tls ? HTTP_ENCRYPTION_ALWAYS : HTTP_ENCRYPTION_IF_REQUESTED;
	http_t *http = httpConnect2(pr->host, pr->port, NULL, AF_UNSPEC, enc, 1, left_ms(j), NULL);
	if (!http) {
		const char *unresolved = NULL, *m = cupsLastErrorString();
		int e = connect_error(pr->host, pr->port, left_ms(j), &unresolved);
		if (unresolved)
			snprintf(j->reason, sizeof(j->reason),
				 "cannot resolve the printer's host: %s", unresolved);
		else
			snprintf(j->reason, sizeof(j->reason), "cannot connect: %s",
				 e	   ? strerror(e)
				 : m && *m ? m
					   : "the printer refused it");
		print_job_unreachable(j);
		return NULL;
	}
	ipp_deadline(http, w, j->deadline_us);
	return http;
}

/* Ask printer-state, printer-state-reasons, printer-is-accepting-jobs; record them in j. */
static int ipp_status(struct print_printer *pr, struct ipp_worker *w, http_t *http,
		      struct print_job *j)
{
	static const char *const attrs[] = {"printer-state", "printer-state-reasons",
					    "printer-is-accepting-jobs"};
	ipp_t *req = ippNewRequest(IPP_OP_GET_PRINTER_ATTRIBUTES);
	ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_URI, "printer-uri", NULL, w->uri);
	ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_NAME, "requesting-user-name", NULL, "tpad");
	ippAddStrings(req, IPP_TAG_OPERATION, IPP_TAG_KEYWORD, "requested-attributes", 3, NULL,
		      attrs);
	ipp_t *resp = cupsDoRequest(http, req, pr->resource);
	if (!resp && no_answer(http, j, "its state request"))
		return -EIO;
	if (!resp || cupsLastError() > IPP_STATUS_OK_EVENTS_COMPLETE) {
		snprintf(j->reason, sizeof(j->reason), "cannot get the printer's state: %s",
			 cupsLastErrorString());
		ippDelete(resp);
		return -EIO;
	}
	ipp_attribute_t *a = ippFindAttribute(resp, "printer-state", IPP_TAG_ENUM);
	int state = a ? ippGetInteger(a, 0) : IPP_PSTATE_IDLE;
	a = ippFindAttribute(resp, "printer-is-accepting-jobs", IPP_TAG_BOOLEAN);
	bool accepting = a ? ippGetBoolean(a, 0) : true;
	char reasons[160] = "";
	size_t o = 0;
	bool blocked = false;
	a = ippFindAttribute(resp, "printer-state-reasons", IPP_TAG_KEYWORD);
	for (int i = 0; a && i < ippGetCount(a); i++) {
		const char *r = ippGetString(a, i, NULL);
		if (!r || strcmp(r, "none") == 0)
			continue;
		blocked |= reason_blocks(r);
		int n = snprintf(reasons + o, sizeof(reasons) - o, "%s%s", o ? ", " : "", r);
		if (n > 0 && (size_t)n < sizeof(reasons) - o)
			o += (size_t)n;
	}
	ippDelete(resp);
	j->have_state = true;
	j->ready = state != IPP_PSTATE_STOPPED && accepting && !blocked;
	snprintf(j->state, sizeof(j->state), "%s",
		 state == IPP_PSTATE_STOPPED	  ? "stopped"
		 : state == IPP_PSTATE_PROCESSING ? "processing"
						  : "idle");
	snprintf(j->reasons, sizeof(j->reasons), "%s%s%s", reasons,
		 !accepting && o ? ", " : "", accepting ? "" : "not accepting jobs");
	if (!j->ready) {
		const char *why = j->reasons[0] ? j->reasons : "not ready";
		snprintf(j->reason, sizeof(j->reason), "printer %s: %.*s", j->state,
			 (int)utf8_prefix(why, 120), why);
		return -EAGAIN;
	}
	return 0;
}

/* Draw the job's labels as one PDF, a page per copy. */
static int ipp_render(struct print_printer *pr, struct print_job *j, uint8_t **ret, size_t *len)
{
	if (!j->labels) {
		/* Config validation keeps ZPL off IPP printers: this is never a PDF job. */
		snprintf(j->reason, sizeof(j->reason), "the job has no labels to draw as PDF");
		return -EINVAL;
	}
	struct layout_doc *d;
	int r = layout_doc_new(pr->layout, LAYOUT_PDF, &d);
	for (size_t i = 0; i < j->n_labels && r == 0; i++) {
		const struct print_label *l = &j->labels[i];
		struct caption_fields f = {l->dev_eui, l->join_eui, l->serial[0] ? l->serial : NULL};
		r = layout_doc_add(d, l->text, &f, j->copies, j->reason, sizeof(j->reason));
	}
	if (r < 0) {
		layout_doc_free(d);
		return r;
	}
	r = layout_doc_finish(d, ret, len);
	if (r < 0)
		snprintf(j->reason, sizeof(j->reason), "cannot draw the PDF: %s", strerror(-r));
	return r;
}

/* Send the PDF with Print-Job; the printer's job-id goes to j. */
static int ipp_print(struct print_printer *pr, struct ipp_worker *w, http_t *http,
		     struct print_job *j, const uint8_t *data, size_t len)
{
	char name[64];
	bool one = j->n_labels == 1 && j->labels;
	snprintf(name, sizeof(name), "tpad-%llu%s%s", (unsigned long long)j->id, one ? "-" : "",
		 one ? j->labels[0].dev_eui : "");
	ipp_t *req = ippNewRequest(IPP_OP_PRINT_JOB);
	ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_URI, "printer-uri", NULL, w->uri);
	ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_NAME, "requesting-user-name", NULL, "tpad");
	ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_NAME, "job-name", NULL, name);
	ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_MIMETYPE, "document-format", NULL,
		     "application/pdf");
	/*
	 * Chunked, which every IPP printer must take (RFC 8010): with a Content-Length,
	 * ippeveprinter stopped short of the PDF's last bytes.
	 */
	http_status_t st = cupsSendRequest(http, req, pr->resource, CUPS_LENGTH_VARIABLE);
	for (size_t off = 0; st == HTTP_STATUS_CONTINUE && off < len;) {
		size_t n = len - off > 65536 ? 65536 : len - off;
		st = cupsWriteRequestData(http, (const char *)data + off, n);
		off += n;
	}
	ippDelete(req);
	ipp_t *resp = st == HTTP_STATUS_CONTINUE ? cupsGetResponse(http, pr->resource) : NULL;
	j->sent_us = clock_now_us();
	if (!resp &&
	    no_answer(http, j, st == HTTP_STATUS_CONTINUE ? "the job" : "the job's transfer"))
		return -EIO;
	if (!resp || cupsLastError() > IPP_STATUS_OK_EVENTS_COMPLETE) {
		ipp_status_t e = cupsLastError();
		bool busy = e == IPP_STATUS_ERROR_BUSY;
		snprintf(j->reason, sizeof(j->reason), "the printer refused the job: %s (%s)",
			 cupsLastErrorString(), ippErrorString(e));
		ippDelete(resp);
		return busy ? -EBUSY : -EIO;
	}
	ipp_attribute_t *a = ippFindAttribute(resp, "job-id", IPP_TAG_INTEGER);
	j->printer_job = a ? ippGetInteger(a, 0) : 0;
	ippDelete(resp);
	return 0;
}

/*
 * The printer answered no question about its job before deadline (the connection lost,
 * the printer off), or answered that it has no such job (it was restarted): the label
 * may never come out, so the job fails with why, rather than count as printed.
 */
static bool job_lost(http_t *http, struct print_job *j, ipp_t *resp, uint64_t deadline)
{
	if (resp && cupsLastError() == IPP_STATUS_ERROR_NOT_FOUND) {
		snprintf(j->reason, sizeof(j->reason),
			 "the printer no longer knows its job %d (restarted?): the label may not "
			 "have come out; look before reprinting",
			 j->printer_job);
		return true;
	}
	if (resp || clock_now_us() >= deadline)
		return false;
	int e = httpError(http);
	const char *m = cupsLastErrorString();
	const char *why = e ? strerror(e) : m && *m ? m : "no answer";
	int n = snprintf(j->reason, sizeof(j->reason), "lost the printer during its job %d (%.*s)",
			 j->printer_job, (int)utf8_prefix(why, 40), why);
	print_job_unreachable(j); /* Status says why, without the advice below */
	if (n > 0 && (size_t)n < sizeof(j->reason))
		snprintf(j->reason + n, sizeof(j->reason) - (size_t)n,
			 ": the label may not have come out; look before reprinting");
	return true;
}

/*
 * Follow the printer's job until it completes, aborts or is canceled, up to deadline: an
 * aborted job (a jam, a failed print) is a failure with the printer's reason, and so is
 * one the printer lost (job_lost). A job still pending or printing at the deadline (a
 * long batch) counts as accepted, as does one the printer will not tell us about.
 */
static int ipp_watch(struct print_printer *pr, struct ipp_worker *w, http_t *http,
		     struct print_job *j, uint64_t deadline)
{
	static const char *const attrs[] = {"job-state", "job-state-reasons", "job-state-message"};
	useconds_t pause = 20000;
	while (j->printer_job > 0) {
		ipp_t *req = ippNewRequest(IPP_OP_GET_JOB_ATTRIBUTES);
		ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_URI, "printer-uri", NULL, w->uri);
		ippAddInteger(req, IPP_TAG_OPERATION, IPP_TAG_INTEGER, "job-id", j->printer_job);
		ippAddString(req, IPP_TAG_OPERATION, IPP_TAG_NAME, "requesting-user-name", NULL,
			     "tpad");
		ippAddStrings(req, IPP_TAG_OPERATION, IPP_TAG_KEYWORD, "requested-attributes", 3,
			      NULL, attrs);
		ipp_t *resp = cupsDoRequest(http, req, pr->resource);
		if (job_lost(http, j, resp, deadline)) {
			ippDelete(resp);
			return -EIO;
		}
		ipp_attribute_t *a = resp ? ippFindAttribute(resp, "job-state", IPP_TAG_ENUM) : NULL;
		int state = a ? ippGetInteger(a, 0) : 0;
		if (state == IPP_JSTATE_ABORTED || state == IPP_JSTATE_CANCELED) {
			a = ippFindAttribute(resp, "job-state-message", IPP_TAG_TEXT);
			const char *msg = a ? ippGetString(a, 0, NULL) : NULL;
			a = ippFindAttribute(resp, "job-state-reasons", IPP_TAG_KEYWORD);
			const char *why = a ? ippGetString(a, 0, NULL) : NULL;
			snprintf(j->reason, sizeof(j->reason), "the printer %s job %d: %s",
				 state == IPP_JSTATE_ABORTED ? "aborted" : "canceled", j->printer_job,
				 msg && *msg ? msg : why ? why : "no reason given");
			ippDelete(resp);
			return -EIO;
		}
		ippDelete(resp);
		if (!state || state == IPP_JSTATE_COMPLETED ||
		    clock_now_us() + pause >= deadline)
			return 0;
		usleep(pause);
		if (pause < 200000)
			pause *= 2;
	}
	return 0;
}

/* Run one job (or status question) to its end, blocking this thread only. */
static void ipp_run(struct print_printer *pr, struct ipp_worker *w, struct print_job *j)
{
	j->ok = false;
	http_t *http = ipp_connect(pr, w, j);
	if (!http)
		return;
	int r = ipp_status(pr, w, http, j);
	if (r == 0 && !j->probe) {
		uint8_t *data = NULL;
		size_t len = 0;
		r = ipp_render(pr, j, &data, &len);
		/*
		 * A printer busy with another job answers server-error-busy (RFC 8011
		 * 5.4.22): try again until the job's timeout, as a spooler would.
		 */
		while (r == 0) {
			r = ipp_print(pr, w, http, j, data, len);
			if (r != -EBUSY || clock_now_us() + 200000u >= j->deadline_us)
				break;
			usleep(200000);
			r = 0;
		}
		free(data);
		/* Followed for printer.timeout from its Print-Job, wherever it waited before. */
		if (r == 0) {
			uint64_t until = clock_now_us() + (uint64_t)pr->cfg->timeout_ms * 1000u;
			ipp_deadline(http, w, until);
			r = ipp_watch(pr, w, http, j, until);
		}
	}
	j->ok = r == 0;
	httpClose(http);
}

/* The worker: wait for a job, run it, hand it back. */
static void *ipp_thread(void *arg)
{
	struct print_printer *pr = arg;
	struct ipp_worker *w = pr->ipp;
	pthread_mutex_lock(&w->lock);
	for (;;) {
		while (!w->job && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		/* At stop, a job handed over but not started stays the printer's active job. */
		if (!w->job || w->stop)
			break;
		struct print_job *j = w->job;
		w->job = NULL;
		pthread_mutex_unlock(&w->lock);
		ipp_run(pr, w, j);
		/* A pointer is less than PIPE_BUF: the write is atomic. */
		ssize_t n;
		do
			n = write(pr->p->done_pipe[1], &j, sizeof(j));
		while (n < 0 && errno == EINTR);
		pthread_mutex_lock(&w->lock);
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int print_ipp_init(struct print_printer *pr, char *err, size_t errlen)
{
	struct ipp_worker *w = calloc(1, sizeof(*w));
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	httpAssembleURI(HTTP_URI_CODING_ALL, w->uri, sizeof(w->uri), pr->tls ? "ipps" : "ipp",
			NULL, pr->host, pr->port, pr->resource);
	pr->ipp = w;
	char name[16]; /* ipp-<printer>, cut to 15 bytes */
	snprintf(name, sizeof(name), "ipp-%s", pr->cfg->name);
	int r = thread_start(&w->thread, ipp_thread, pr, name);
	if (r) {
		snprintf(err, errlen, "[printer.%s]: cannot start its thread: %s", pr->cfg->name,
			 strerror(r));
		return -r;
	}
	w->started = true;
	return 0;
}

int print_ipp_start(struct print_job *j)
{
	struct ipp_worker *w = j->pr->ipp;
	if (!w || !w->started)
		return -ESHUTDOWN;
	pthread_mutex_lock(&w->lock);
	w->job = j;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void print_ipp_finish(struct print_printer *pr)
{
	struct ipp_worker *w = pr->ipp;
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	if (w->started)
		pthread_join(w->thread, NULL);
	/* A job handed over but not started is still the printer's active job. */
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w);
	pr->ipp = NULL;
}
