/* print: the label printers of [printer.<name>], their job queues and their state. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "qr.h"

struct event_base;
struct config;

/*
 * A Zebra printer's answer to ~HS (host status), three <STX>...<ETX><CR><LF> strings:
 * 1: aaa,b,c,dddd,eee,f,g,h,iii,j,k,l: b paper out, c paused, eee formats in the receive
 *    buffer, f buffer full, k under temperature, l over temperature;
 * 2: mmm,n,o,p,q,r,s,t,uuuuuuuu,v,www: o head up (open), p ribbon out, uuuuuuuu labels
 *    remaining in the batch;
 * 3: xxxx,y: password and static RAM.
 */
struct print_hs {
	bool paper_out, paused, buffer_full, under_temp, over_temp;
	bool head_open, ribbon_out;
	unsigned formats_in_buffer;
	unsigned long labels_remaining;
};

#define PRINT_HS_MAX 512 /* bytes an answer may take, noise before it included */
/*
 * Pages of one PDF (IPP) job at most, labels times copies: each page is drawn in memory
 * on the printer's worker (about 3.5 KB and 1 ms a page); ZPL jobs send copies as ^PQ.
 */
#define PRINT_MAX_PDF_PAGES 10000

/*
 * Parse a ~HS answer at the start of buf (blank lines, the echo of "~HS" and a part line
 * before the first STX are skipped). 0 with *ret and the bytes used in *ret_used; -EAGAIN
 * when more bytes are needed; -EBADMSG when it is not a ~HS answer: a whole line of other
 * text before the first STX, a malformed string, or longer than PRINT_HS_MAX.
 */
int print_hs_parse(const char *buf, size_t len, struct print_hs *ret, size_t *ret_used);

/* Nonzero if the printer cannot print now (paper out, head open, ribbon out, paused...). */
int print_hs_reason(const struct print_hs *hs);

/*
 * Write the problems as "paper out, head open" (or "ready") into out; returns how many
 * problems there are.
 */
int print_hs_describe(const struct print_hs *hs, char *out, size_t outlen);

/* One label to print. */
struct print_label {
	char text[QR_TEXT_MAX]; /* the QR code's text */
	char dev_eui[17];
	char join_eui[17];
	char serial[65];
};

/* How a job ended. printer and reason live until the callback returns. */
struct print_result {
	const char *printer;
	uint64_t job;	      /* tpad's job number, unique across restarts too */
	int32_t printer_job;  /* the IPP printer's job-id; 0 for raw printers */
	bool ok;	      /* sent and taken by the printer */
	const char *reason;   /* why not, when !ok ("paper out", "connection refused"...) */
	double sent_ms;	      /* from print_submit() to the job's last byte sent */
};

typedef void print_done_fn(const struct print_result *res, void *arg);

struct print;

/*
 * Set up every printer of cfg: a layout per printer (label.* with the printer's dpi and
 * size), an IPP worker thread per ipp(s):// printer, status timers. NULL with a sentence
 * in err on failure.
 */
struct print *print_new(struct event_base *base, const struct config *cfg, char *err,
			size_t errlen);

/* Fail the jobs still queued ("tpad is stopping"), stop the workers, free. Accepts NULL. */
struct print *print_free(struct print *p);

/* True if a printer is called name. */
bool print_has(const struct print *p, const char *name);

/*
 * Why name is no printer, for an InvalidParameter: the printers tpad.conf has, and the one
 * meant when name is a typo of it ("no printer named 'lin1' (did you mean 'line1'? tpad.conf
 * has line1, office)").
 */
void print_unknown(const struct print *p, const char *name, char *why, size_t len);

struct layout;

/* The label layout of the printer called name (its size and resolution), or NULL. */
const struct layout *print_layout(const struct print *p, const char *name);

/*
 * The printer of a station: the first printer whose station-uids or station-groups lists
 * uid or gid, else print.default; NULL when there is none.
 */
const char *print_default_for(const struct print *p, uid_t uid, gid_t gid);

/*
 * Queue a job of n labels (each copies times) to printer. ZPL printers get one ZPL
 * document of every label; IPP printers a PDF, one page per label copy, drawn on the
 * printer's worker thread. cb runs on the event loop when the job ended (never from
 * inside print_submit()). Returns the job number (> 0), or -ENOENT (no such printer),
 * -EBUSY (its queue is full), -EMSGSIZE (a label does not fit: the sentence in err),
 * -E2BIG (a PDF job of more than PRINT_MAX_PDF_PAGES pages), -ENOMEM. A raw ZPL job
 * counts as sent once the printer's TCP has acknowledged its last byte.
 */
int64_t print_submit(struct print *p, const char *printer, const struct print_label *labels,
		     size_t n, unsigned copies, print_done_fn *cb, void *arg, char *err,
		     size_t errlen);

/*
 * The audit outcome of a job: "printed on P job N" or "print failed on P job N: reason",
 * the whole reason when n is STORE_AUDIT_OUTCOME_MAX (P cut to 32 bytes).
 */
void print_outcome(char *buf, size_t n, const char *printer, uint64_t job, const char *reason);

/* Status of every printer: [{name, url, language, state, ready, reasons, queued, ...}]. */
json_t *print_status_json(struct print *p);

/* "2 printers: line1 ready, office paper out" for STATUS=. */
void print_status_line(struct print *p, char *buf, size_t len);

/* The printer gauges and counters in Prometheus text. */
void print_metrics(struct print *p, FILE *f);
