/* print: the label printers of [printer.<name>], their job queues and their state. */
#include "print.h"

#include <errno.h>
#include <stdio.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "layout.h"
#include "log.h"
#include "print_backend.h"
#include "words.h"
#include "utf8.h"

/*
 * True if the line buf[start..end) (its LF at end) is text that is no ~HS answer: not
 * blank and not the echo of our "~HS" query.
 */
static bool hs_line_is_text(const char *buf, size_t start, size_t end)
{
	while (end > start && (buf[end - 1] == '\r' || buf[end - 1] == ' '))
		end--;
	while (start < end && buf[start] == ' ')
		start++;
	return end > start && !(end - start == 3 && memcmp(buf + start, "~HS", 3) == 0);
}

/* ~HS: the indexes of the fields that matter in strings 1 and 2. */
int print_hs_parse(const char *buf, size_t len, struct print_hs *ret, size_t *ret_used)
{
	size_t i = 0, line = 0;
	while (i < len && buf[i] != '\x02') {
		if (i >= PRINT_HS_MAX)
			return -EBADMSG;
		/* A whole line of text before any STX: this printer does not speak ~HS. */
		if (buf[i] == '\n' && hs_line_is_text(buf, line, i))
			return -EBADMSG;
		if (buf[i] == '\n')
			line = i + 1;
		i++;
	}
	if (i == len)
		return len > PRINT_HS_MAX ? -EBADMSG : -EAGAIN;
	unsigned long f[3][16];
	size_t nf[3] = {0};
	for (int s = 0; s < 3; s++) {
		if (i >= len)
			return -EAGAIN;
		if (buf[i] != '\x02')
			return -EBADMSG;
		i++;
		bool digit = false;
		unsigned long v = 0;
		for (;;) {
			if (i >= len)
				return i > PRINT_HS_MAX ? -EBADMSG : -EAGAIN;
			char c = buf[i++];
			if (c >= '0' && c <= '9') {
				if (v > 100000000UL)
					return -EBADMSG;
				v = v * 10 + (unsigned long)(c - '0');
				digit = true;
			} else if (c == ',' || c == '\x03') {
				if (!digit || nf[s] == 16)
					return -EBADMSG;
				f[s][nf[s]++] = v;
				v = 0;
				digit = false;
				if (c == '\x03')
					break;
			} else {
				return -EBADMSG;
			}
		}
		/* <CR><LF> after each string; some firmware sends only one of them. */
		while (i < len && (buf[i] == '\r' || buf[i] == '\n'))
			i++;
	}
	if (nf[0] < 12 || nf[1] < 11 || nf[2] < 2)
		return -EBADMSG;
	*ret = (struct print_hs){
	    .paper_out = f[0][1] != 0,
	    .paused = f[0][2] != 0,
	    .formats_in_buffer = (unsigned)f[0][4],
	    .buffer_full = f[0][5] != 0,
	    .under_temp = f[0][10] != 0,
	    .over_temp = f[0][11] != 0,
	    .head_open = f[1][2] != 0,
	    .ribbon_out = f[1][3] != 0,
	    .labels_remaining = f[1][8],
	};
	*ret_used = i;
	return 0;
}

int print_hs_reason(const struct print_hs *hs)
{
	return hs->paper_out || hs->paused || hs->buffer_full || hs->head_open || hs->ribbon_out ||
	       hs->under_temp || hs->over_temp;
}

int print_hs_describe(const struct print_hs *hs, char *out, size_t outlen)
{
	const struct {
		bool set;
		const char *name;
	} probs[] = {
	    {hs->paper_out, "paper out"},   {hs->head_open, "head open"},
	    {hs->ribbon_out, "ribbon out"}, {hs->paused, "paused"},
	    {hs->buffer_full, "buffer full"}, {hs->under_temp, "head too cold"},
	    {hs->over_temp, "head too hot"},
	};
	int n = 0;
	size_t o = 0;
	out[0] = '\0';
	for (size_t i = 0; i < sizeof(probs) / sizeof(probs[0]); i++) {
		if (!probs[i].set)
			continue;
		int w = snprintf(out + o, outlen - o, "%s%s", n ? ", " : "", probs[i].name);
		if (w > 0 && (size_t)w < outlen - o)
			o += (size_t)w;
		n++;
	}
	if (!n)
		snprintf(out, outlen, "ready");
	return n;
}

/* The printer called name. */
static struct print_printer *printer_find(const struct print *p, const char *name)
{
	for (size_t i = 0; p && name && i < p->n; i++)
		if (strcmp(p->printers[i].cfg->name, name) == 0)
			return &p->printers[i];
	return NULL;
}

bool print_has(const struct print *p, const char *name)
{
	return printer_find(p, name) != NULL;
}

void print_unknown(const struct print *p, const char *name, char *why, size_t len)
{
	/* A typo: one letter off in a short name, two in a longer one ("nope" is not "gone"). */
	size_t n = p ? p->cfg->n_printers : 0, best = strlen(name) >= 6 ? 3 : 2;
	const char *meant = NULL;
	for (size_t i = 0; i < n; i++) {
		size_t d = words_distance(name, p->cfg->printers[i].name);
		if (d < best) {
			best = d;
			meant = p->cfg->printers[i].name;
		}
	}
	int off = snprintf(why, len, "no printer named '%.*s' (", (int)utf8_prefix(name, 40), name);
	if (meant)
		off += snprintf(why + off, len > (size_t)off ? len - off : 0, "did you mean '%s'? ",
				meant);
	if (!n)
		snprintf(why + off, len > (size_t)off ? len - off : 0,
			 "tpad.conf has no [printer.NAME] section)");
	for (size_t i = 0; i < n && (size_t)off < len; i++)
		off += snprintf(why + off, len - off, "%s%s%s", i ? ", " : "tpad.conf has ",
				p->cfg->printers[i].name, i + 1 == n ? ")" : "");
}

const struct layout *print_layout(const struct print *p, const char *name)
{
	const struct print_printer *pr = printer_find(p, name);
	return pr ? pr->layout : NULL;
}

const char *print_default_for(const struct print *p, uid_t uid, gid_t gid)
{
	if (!p)
		return NULL;
	for (size_t i = 0; i < p->n; i++) {
		const struct config_printer *c = p->printers[i].cfg;
		for (size_t k = 0; k < c->n_station_uids; k++)
			if (c->station_uids[k] == uid)
				return c->name;
		for (size_t k = 0; k < c->n_station_gids; k++)
			if (c->station_gids[k] == gid)
				return c->name;
	}
	return p->cfg->print_default;
}

/* Give j at least its whole printer.timeout from now. */
static void job_deadline_from_now(struct print_job *j)
{
	uint64_t d = clock_now_us() + (uint64_t)j->pr->cfg->timeout_ms * 1000u;
	if (d > j->deadline_us)
		j->deadline_us = d;
}

/* A new job (or status question) of pr, its printer.timeout counted from now. */
static struct print_job *job_new(struct print_printer *pr)
{
	struct print_job *j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->pr = pr;
	j->submitted_us = clock_now_us();
	j->deadline_us = j->submitted_us + (uint64_t)pr->cfg->timeout_ms * 1000u;
	return j;
}

uint64_t print_job_left_us(const struct print_job *j)
{
	uint64_t now = clock_now_us();
	return now < j->deadline_us ? j->deadline_us - now : 0;
}

void print_job_unreachable(struct print_job *j)
{
	j->have_state = true;
	j->ready = false;
	snprintf(j->state, sizeof(j->state), "unreachable");
	snprintf(j->reasons, sizeof(j->reasons), "%s", j->reason);
}

/* Free a job. */
static void job_free(struct print_job *j)
{
	if (!j)
		return;
	free(j->labels);
	free(j->data);
	free(j);
}

/* Start the next queued job of pr if it is idle. */
static void job_finish(struct print_job *j);

static void printer_kick(struct print_printer *pr)
{
	while (!pr->p->stopping && !pr->active && pr->head) {
		struct print_job *j = pr->head;
		pr->head = j->next;
		if (!pr->head)
			pr->tail = NULL;
		pr->queued--;
		j->next = NULL;
		pr->active = j;
		/*
		 * On a printer that answered its last job, a job starts with a whole
		 * printer.timeout (the one before may have been long, or followed to its end).
		 * On one that did not (unreachable), the time counts from the call: what
		 * waited it out in the queue fails unsent, so stations behind a hung printer
		 * get their answer within about one timeout.
		 */
		if (strcmp(pr->state, "unreachable") != 0)
			job_deadline_from_now(j);
		int r = print_job_left_us(j) ? pr->raw ? print_raw_start(j) : print_ipp_start(j)
					     : -ETIMEDOUT;
		if (r == -ETIMEDOUT)
			snprintf(j->reason, sizeof(j->reason),
				 "timed out in the queue behind earlier jobs: the printer is "
				 "unreachable (%.*s)",
				 (int)utf8_prefix(pr->reasons[0] ? pr->reasons : "no answer", 80),
				 pr->reasons[0] ? pr->reasons : "no answer");
		else if (r < 0)
			snprintf(j->reason, sizeof(j->reason), "cannot start the job: %s",
				 strerror(-r));
		if (r < 0) {
			j->ok = false;
			job_finish(j); /* and on with the loop: no recursion per failed job */
		}
	}
}

/* Count a finished job and tell its caller, once. */
static void job_report(struct print_job *j)
{
	struct print_printer *pr = j->pr;
	if (j->probe || j->reported)
		return;
	j->reported = true;
	struct print_result res = {
	    .printer = pr->cfg->name,
	    .job = j->id,
	    .printer_job = j->printer_job,
	    .ok = j->ok,
	    .reason = j->ok ? NULL : j->reason,
	    .sent_ms = j->sent_us ? (double)(j->sent_us - j->submitted_us) / 1000.0 : 0,
	};
	char job[24], labels[24], ms[32];
	snprintf(job, sizeof(job), "%llu", (unsigned long long)j->id);
	snprintf(labels, sizeof(labels), "%u", (unsigned)(j->n_labels * j->copies));
	snprintf(ms, sizeof(ms), "%.1f", res.sent_ms);
	char msg[512];
	if (j->ok) {
		pr->jobs_ok++;
		pr->labels_sent += j->n_labels * j->copies;
		pr->sent_ms_sum += res.sent_ms;
		snprintf(msg, sizeof(msg), "print job %s to %s: %s label%s sent", job,
			 pr->cfg->name, labels, strcmp(labels, "1") == 0 ? "" : "s");
		log_event(LOG_INFO, LOG_ID_PRINT, msg, "PRINTER", pr->cfg->name, "JOB", job,
			  "LABELS", labels, "OUTCOME", "printed", "SEND_MS", ms, NULL);
	} else {
		pr->jobs_failed++;
		snprintf(msg, sizeof(msg), "print job %s to %s failed: %s", job, pr->cfg->name,
			 j->reason);
		log_event(LOG_NOTICE, LOG_ID_PRINT, msg, "PRINTER", pr->cfg->name, "JOB", job,
			  "LABELS", labels, "OUTCOME", "failed", "REASON", j->reason, NULL);
	}
	if (j->cb)
		j->cb(&res, j->arg);
}

void print_job_sent(struct print_job *j)
{
	j->ok = true;
	job_report(j);
}

/* Record j's outcome, call back, free it. */
static void job_finish(struct print_job *j)
{
	struct print_printer *pr = j->pr;
	if (pr->active == j)
		pr->active = NULL;
	if (j->have_state) {
		pr->ready = j->ready;
		snprintf(pr->state, sizeof(pr->state), "%s", j->state);
		snprintf(pr->reasons, sizeof(pr->reasons), "%s", j->reasons);
		pr->checked_us = clock_now_us();
	}
	job_report(j);
	job_free(j);
}

void print_job_done(struct print_job *j)
{
	struct print_printer *pr = j->pr;
	job_finish(j);
	printer_kick(pr);
}

/* Read finished IPP jobs from the workers. */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct print_job *j;
	for (;;) {
		ssize_t n = read(fd, &j, sizeof(j));
		if (n != (ssize_t)sizeof(j))
			break;
		print_job_done(j);
	}
}

/* Add a job at the tail of pr's queue. */
static void printer_queue(struct print_printer *pr, struct print_job *j)
{
	if (pr->tail)
		pr->tail->next = j;
	else
		pr->head = j;
	pr->tail = j;
	pr->queued++;
}

/* Ask an idle printer how it is, now and then, so Status shows it before a job fails. */
static void status_cb(evutil_socket_t fd, short what, void *arg)
{
	struct print_printer *pr = arg;
	if (pr->active || pr->head)
		return;
	struct print_job *j = job_new(pr);
	if (!j)
		return;
	j->probe = true;
	printer_queue(pr, j);
	printer_kick(pr);
}

/* Start the next job on a fresh loop turn. */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	printer_kick(arg);
}

/* Split a printer URL into host, port and resource. */
static int printer_parse_url(struct print_printer *pr, const char *url)
{
	const char *rest;
	if (strncmp(url, "socket://", 9) == 0) {
		pr->raw = true;
		pr->port = 9100;
		rest = url + 9;
	} else if (strncmp(url, "ipps://", 7) == 0) {
		pr->tls = true;
		pr->port = 631;
		rest = url + 7;
	} else if (strncmp(url, "ipp://", 6) == 0) {
		pr->port = 631;
		rest = url + 6;
	} else {
		return -EINVAL;
	}
	size_t hl = strcspn(rest, "/?");
	const char *path = rest + hl;
	char hostport[300];
	if (hl >= sizeof(hostport))
		return -EINVAL;
	memcpy(hostport, rest, hl);
	hostport[hl] = '\0';
	if (strchr(hostport, '@') || (hostport[0] == '[' && !strchr(hostport, ']')))
		return -EINVAL;
	char *colon = strrchr(hostport, ':');
	if (colon && (hostport[0] != '[' || colon > strchr(hostport, ']'))) {
		*colon = '\0';
		pr->port = atoi(colon + 1);
	}
	char *h = hostport;
	if (*h == '[') {
		h++;
		char *end = strchr(h, ']');
		if (end)
			*end = '\0';
	}
	if (!*h || pr->port <= 0 || pr->port > 65535)
		return -EINVAL;
	if (strlen(h) >= sizeof(pr->host))
		return -EINVAL;
	memcpy(pr->host, h, strlen(h) + 1);
	snprintf(pr->resource, sizeof(pr->resource), "%s", *path ? path : "/ipp/print");
	return 0;
}

struct print *print_new(struct event_base *base, const struct config *cfg, char *err,
			size_t errlen)
{
	struct print *p = calloc(1, sizeof(*p));
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->base = base;
	p->cfg = cfg;
	/*
	 * Job numbers go on from the wall clock's milliseconds, not from 1: the audit rows
	 * of jobs before a restart keep numbers no later job takes (short of 1000 jobs a
	 * second since the start, or the clock set back).
	 */
	int64_t now = clock_wall_ms();
	p->next_job = now > 0 ? (uint64_t)now : 1;
	p->done_pipe[0] = p->done_pipe[1] = -1;
	p->printers = calloc(cfg->n_printers ? cfg->n_printers : 1, sizeof(*p->printers));
	if (!p->printers || pipe2(p->done_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
		snprintf(err, errlen, "out of memory");
		return print_free(p);
	}
	p->done_ev = event_new(base, p->done_pipe[0], EV_READ | EV_PERSIST, done_cb, p);
	if (!p->done_ev || event_add(p->done_ev, NULL) < 0) {
		snprintf(err, errlen, "out of memory");
		return print_free(p);
	}
	for (size_t i = 0; i < cfg->n_printers; i++) {
		struct print_printer *pr = &p->printers[i];
		const struct config_printer *c = &cfg->printers[i];
		pr->p = p;
		pr->cfg = c;
		p->n++;
		snprintf(pr->state, sizeof(pr->state), "unknown");
		char why[256];
		if (printer_parse_url(pr, c->url) < 0) {
			snprintf(err, errlen, "[printer.%s]: bad url %s", c->name, c->url);
			return print_free(p);
		}
		int r = layout_new(&cfg->label, c->dpi, c->width, c->height, cfg->qr_ec_level,
				   &pr->layout, why, sizeof(why));
		if (r < 0) {
			snprintf(err, errlen, "[printer.%s]: %s", c->name, why);
			return print_free(p);
		}
		if (pr->raw && !p->dns) {
			p->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
							  EVDNS_BASE_DISABLE_WHEN_INACTIVE);
			if (!p->dns)
				p->dns = evdns_base_new(base, 0); /* numeric hosts still work */
			if (!p->dns) {
				snprintf(err, errlen, "cannot set up the DNS resolver");
				return print_free(p);
			}
		}
		pr->kick = event_new(base, -1, 0, kick_cb, pr);
		if (!pr->kick) {
			snprintf(err, errlen, "out of memory");
			return print_free(p);
		}
		if (!pr->raw && print_ipp_init(pr, err, errlen) < 0)
			return print_free(p);
		if (c->status_interval_ms) {
			pr->status_timer = event_new(base, -1, EV_PERSIST, status_cb, pr);
			struct timeval tv = {.tv_sec = c->status_interval_ms / 1000,
					     .tv_usec = (c->status_interval_ms % 1000) * 1000};
			if (!pr->status_timer || event_add(pr->status_timer, &tv) < 0) {
				snprintf(err, errlen, "out of memory");
				return print_free(p);
			}
			/* A first look right away. */
			event_active(pr->status_timer, EV_TIMEOUT, 0);
		}
	}
	return p;
}

struct print *print_free(struct print *p)
{
	if (!p)
		return NULL;
	/* No job starts from here on: what is queued is answered "tpad is stopping". */
	p->stopping = true;
	for (size_t i = 0; i < p->n; i++) {
		struct print_printer *pr = &p->printers[i];
		if (pr->status_timer)
			event_free(pr->status_timer);
		if (pr->kick)
			event_free(pr->kick);
		pr->status_timer = pr->kick = NULL;
		if (pr->raw)
			print_raw_cancel(pr);
		else
			print_ipp_finish(pr);
	}
	/* Workers are joined: what they finished is in the pipe; then fail what is left. */
	if (p->done_pipe[0] >= 0)
		done_cb(p->done_pipe[0], EV_READ, p);
	for (size_t i = 0; i < p->n; i++) {
		struct print_printer *pr = &p->printers[i];
		struct print_job *list[2] = {pr->active, pr->head};
		pr->active = NULL;
		pr->head = pr->tail = NULL;
		for (int k = 0; k < 2; k++)
			for (struct print_job *j = list[k], *next; j; j = next) {
				next = k ? j->next : NULL;
				if (!j->probe && !j->reported && j->cb) {
					struct print_result res = {.printer = pr->cfg->name,
								   .job = j->id,
								   .reason = "tpad is stopping"};
					j->cb(&res, j->arg);
				}
				job_free(j);
			}
		layout_free(pr->layout);
	}
	if (p->done_ev)
		event_free(p->done_ev);
	for (int i = 0; i < 2; i++)
		if (p->done_pipe[i] >= 0)
			close(p->done_pipe[i]);
	if (p->dns)
		evdns_base_free(p->dns, 0);
	free(p->printers);
	free(p);
	return NULL;
}

int64_t print_submit(struct print *p, const char *printer, const struct print_label *labels,
		     size_t n, unsigned copies, print_done_fn *cb, void *arg, char *err,
		     size_t errlen)
{
	struct print_printer *pr = printer_find(p, printer);
	if (!pr) {
		snprintf(err, errlen, "no printer named '%s'", printer ? printer : "");
		return -ENOENT;
	}
	if (!n || copies < 1) {
		snprintf(err, errlen, "nothing to print");
		return -EINVAL;
	}
	if (pr->queued >= pr->cfg->queue) {
		snprintf(err, errlen, "the queue of printer %s is full (%u jobs)", pr->cfg->name,
			 pr->cfg->queue);
		return -EBUSY;
	}
	struct print_job *j = job_new(pr);
	if (!j) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	j->n_labels = n;
	j->copies = copies;
	j->cb = cb;
	j->arg = arg;
	int r = 0;
	if (config_printer_language(pr->cfg) == PRINTER_LANG_ZPL) {
		/* ZPL is cheap to make: made here, so a label that does not fit fails now. */
		struct layout_doc *d;
		r = layout_doc_new(pr->layout, LAYOUT_ZPL, &d);
		for (size_t i = 0; i < n && r == 0; i++) {
			const struct print_label *l = &labels[i];
			struct caption_fields f = {l->dev_eui, l->join_eui,
						  l->serial[0] ? l->serial : NULL};
			r = layout_doc_add(d, l->text, &f, copies, err, errlen);
		}
		if (r == 0)
			r = layout_doc_finish(d, &j->data, &j->len);
		else
			layout_doc_free(d);
		if (r < 0 && r != -EMSGSIZE && r != -EINVAL)
			snprintf(err, errlen, "cannot make the job: %s", strerror(-r));
		if (r == -EINVAL)
			r = -EMSGSIZE;
	} else if ((uint64_t)n * copies > PRINT_MAX_PDF_PAGES) {
		snprintf(err, errlen,
			 "a PDF job holds at most %u pages (labels x copies), this one %llu: print "
			 "the batch in parts",
			 PRINT_MAX_PDF_PAGES, (unsigned long long)n * copies);
		r = -E2BIG;
	} else {
		/* PDF is drawn on the worker; the fit is checked here all the same. */
		j->labels = malloc(n * sizeof(*labels));
		if (!j->labels) {
			snprintf(err, errlen, "out of memory");
			r = -ENOMEM;
		} else {
			memcpy(j->labels, labels, n * sizeof(*labels));
		}
		struct layout_doc *d;
		if (r == 0 && (r = layout_doc_new(pr->layout, LAYOUT_ZPL, &d)) == 0) {
			for (size_t i = 0; i < n && r == 0; i++) {
				const struct print_label *l = &labels[i];
				struct caption_fields f = {l->dev_eui, l->join_eui,
							  l->serial[0] ? l->serial : NULL};
				r = layout_doc_add(d, l->text, &f, 1, err, errlen);
			}
			layout_doc_free(d);
			if (r == -EINVAL)
				r = -EMSGSIZE;
		}
	}
	if (r < 0) {
		job_free(j);
		return r;
	}
	j->id = p->next_job++;
	printer_queue(pr, j);
	/* Never call back from inside print_submit(): start on the next loop turn if idle. */
	if (!pr->active)
		event_active(pr->kick, EV_TIMEOUT, 0);
	return (int64_t)j->id;
}

/* The name of a printer's language. */
static const char *language_name(const struct print_printer *pr)
{
	return config_printer_language(pr->cfg) == PRINTER_LANG_ZPL ? "zpl" : "pdf";
}

json_t *print_status_json(struct print *p)
{
	json_t *a = json_array();
	uint64_t now = clock_now_us();
	for (size_t i = 0; p && a && i < p->n; i++) {
		struct print_printer *pr = &p->printers[i];
		json_t *o = json_pack(
		    "{s:s, s:s, s:s, s:s, s:b, s:s, s:i, s:b, s:{s:I, s:I}, s:I}", "name",
		    pr->cfg->name, "url", pr->cfg->url, "language", language_name(pr), "state",
		    pr->state, "ready", pr->ready, "reasons", pr->reasons, "queued",
		    (int)pr->queued, "printing", pr->active && !pr->active->probe, "jobs",
		    "printed", (json_int_t)pr->jobs_ok, "failed", (json_int_t)pr->jobs_failed,
		    "labels", (json_int_t)pr->labels_sent);
		if (o && pr->checked_us)
			json_object_set_new(o, "checkedSecondsAgo",
					    json_integer((json_int_t)((now - pr->checked_us) /
								      1000000u)));
		if (o && pr->jobs_ok)
			json_object_set_new(o, "sendMsAverage",
					    json_real(pr->sent_ms_sum / (double)pr->jobs_ok));
		if (o)
			json_array_append_new(a, o);
	}
	return a;
}

void print_status_line(struct print *p, char *buf, size_t len)
{
	size_t o = 0;
	buf[0] = '\0';
	if (!p || !p->n)
		return;
	int w = snprintf(buf, len, "printers:");
	o = w > 0 && (size_t)w < len ? (size_t)w : len - 1;
	for (size_t i = 0; i < p->n && o + 1 < len; i++) {
		struct print_printer *pr = &p->printers[i];
		w = snprintf(buf + o, len - o, "%s %s %s", i ? "," : "", pr->cfg->name,
			     pr->ready ? "ready" : pr->reasons[0] ? pr->reasons : pr->state);
		if (w < 0 || (size_t)w >= len - o)
			break;
		o += (size_t)w;
	}
}

void print_metrics(struct print *p, FILE *f)
{
	if (!p || !p->n)
		return;
	fprintf(f, "# HELP tpad_printer_ready 1 if the printer said it can print, else 0; none "
		   "for a printer not asked yet.\n"
		   "# TYPE tpad_printer_ready gauge\n");
	for (size_t i = 0; i < p->n; i++)
		/* Not asked yet (status-interval = 0 and no job since start): no sample, rather
		 * than a 0 the TpadPrinterNotReady alert would take for a printer that is down. */
		if (strcmp(p->printers[i].state, "unknown") != 0)
			fprintf(f, "tpad_printer_ready{printer=\"%s\"} %d\n",
				p->printers[i].cfg->name, p->printers[i].ready ? 1 : 0);
	fprintf(f, "# HELP tpad_print_jobs_total Print jobs finished, by printer and outcome.\n"
		   "# TYPE tpad_print_jobs_total counter\n");
	for (size_t i = 0; i < p->n; i++) {
		fprintf(f, "tpad_print_jobs_total{printer=\"%s\",outcome=\"printed\"} %llu\n",
			p->printers[i].cfg->name, (unsigned long long)p->printers[i].jobs_ok);
		fprintf(f, "tpad_print_jobs_total{printer=\"%s\",outcome=\"failed\"} %llu\n",
			p->printers[i].cfg->name, (unsigned long long)p->printers[i].jobs_failed);
	}
	fprintf(f, "# HELP tpad_print_labels_total Labels sent to printers.\n"
		   "# TYPE tpad_print_labels_total counter\n");
	for (size_t i = 0; i < p->n; i++)
		fprintf(f, "tpad_print_labels_total{printer=\"%s\"} %llu\n",
			p->printers[i].cfg->name, (unsigned long long)p->printers[i].labels_sent);
	fprintf(f, "# HELP tpad_print_queue_depth Print jobs waiting, by printer.\n"
		   "# TYPE tpad_print_queue_depth gauge\n");
	for (size_t i = 0; i < p->n; i++)
		fprintf(f, "tpad_print_queue_depth{printer=\"%s\"} %zu\n", p->printers[i].cfg->name,
			p->printers[i].queued);
}

void print_outcome(char *buf, size_t n, const char *printer, uint64_t job, const char *reason)
{
	/* The audit trail's text: cut between characters (PostgreSQL takes UTF-8 only). */
	int p = (int)utf8_prefix(printer, 32);
	int off = reason ? snprintf(buf, n, "print failed on %.*s job %llu: ", p, printer,
				    (unsigned long long)job)
			 : snprintf(buf, n, "printed on %.*s job %llu", p, printer,
				    (unsigned long long)job);
	if (reason && off > 0 && (size_t)off < n)
		utf8_copy(buf + off, n - (size_t)off, reason);
}
