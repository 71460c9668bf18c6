/* print_backend: what print.c shares with its two transports, print_raw.c and print_ipp.c. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "print.h"

struct event;
struct evdns_base;
struct layout;
struct config_printer;
struct print_printer;

/* One job (or, with probe set, one status question) for one printer. */
struct print_job {
	struct print_job *next;
	struct print_printer *pr;
	uint64_t id;
	bool probe;
	struct print_label *labels; /* IPP: drawn on the worker; raw: NULL once data is made */
	size_t n_labels;
	unsigned copies;
	uint8_t *data; /* raw: the ZPL document */
	size_t len;
	print_done_fn *cb;
	void *arg;
	uint64_t submitted_us, sent_us;
	uint64_t deadline_us; /* submitted_us + printer.timeout: the whole job, queue included */
	/* The outcome, set by the transport. */
	bool reported; /* the caller was told (raw: when the last byte went out) */
	bool ok;
	char reason[160];
	int32_t printer_job;
	/* The printer's state as seen by this job, applied on the loop when it ends. */
	bool have_state;
	bool ready;
	char state[16];
	char reasons[160];
};

/* One [printer.<name>]. */
struct print_printer {
	struct print *p;
	const struct config_printer *cfg;
	struct layout *layout;
	bool raw;
	char host[256];
	int port;
	char resource[512]; /* IPP: the path */
	bool tls;
	struct print_job *head, *tail;
	size_t queued;
	struct print_job *active;
	struct event *status_timer;
	struct event *kick; /* starts the next job on a fresh loop turn */
	/* Last known state. */
	bool ready;
	char state[16];	    /* idle, processing, stopped, unreachable, unknown */
	char reasons[160];  /* "paper out, head open", "media-empty-error", "" */
	uint64_t checked_us; /* when it was last asked; 0 never */
	uint64_t jobs_ok, jobs_failed, labels_sent;
	double sent_ms_sum;
	/* Transports. */
	struct raw_conn *raw_conn;
	struct ipp_worker *ipp;
};

/* The printer module, shared with the transports for the loop and the DNS resolver. */
struct print {
	struct event_base *base;
	struct evdns_base *dns;
	struct print_printer *printers;
	size_t n;
	uint64_t next_job;
	int done_pipe[2]; /* workers write finished job pointers, the loop reads them */
	struct event *done_ev;
	const struct config *cfg;
	bool stopping; /* print_free() has begun: start no job */
};

/* Microseconds left of j's printer.timeout (0 once it passed). */
uint64_t print_job_left_us(const struct print_job *j);

/* Record in j that its printer could not be reached (or did not answer): j->reason. */
void print_job_unreachable(struct print_job *j);

/* A transport finished j (on the loop): record the outcome, call back, start the next. */
void print_job_done(struct print_job *j);

/*
 * Raw: j's last byte is out; tell the caller now, while the connection drains (the
 * printer stays busy until print_job_done()).
 */
void print_job_sent(struct print_job *j);

/* Raw 9100: run j on the loop with non-blocking sockets; 0 or a negative errno. */
int print_raw_start(struct print_job *j);

/* Raw 9100: abandon the connection of pr, if any, without calling back. */
void print_raw_cancel(struct print_printer *pr);

/* IPP: start the worker thread of pr. */
int print_ipp_init(struct print_printer *pr, char *err, size_t errlen);

/* IPP: hand j to pr's worker; it comes back through the done pipe. */
int print_ipp_start(struct print_job *j);

/* IPP: stop and join pr's worker (a job in progress finishes first). */
void print_ipp_finish(struct print_printer *pr);
