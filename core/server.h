/* server: client connections on the station and admin sockets, and the calls they carry. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;
struct server;
struct req;

enum sock_kind {
	SOCK_STATION,
	SOCK_ADMIN,
};
#define SOCK_KINDS 2

/* Who is on the other end of a connection (from SO_PEERCRED at accept). */
struct peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
	enum sock_kind kind;
	uint64_t conn_id;
};

/* Limits a client ran into, counted since start (shown in Status and metrics). */
struct server_limits_hit {
	uint64_t max_clients;
	uint64_t max_clients_per_uid;
	uint64_t max_clients_per_process;
	uint64_t message_timeout;
	uint64_t max_output;
	uint64_t max_output_total;
	uint64_t max_message;
	uint64_t idle_timeout;
	uint64_t max_pending_calls;
	uint64_t slow_reader;
};

struct server_stats {
	uint32_t connections[SOCK_KINDS];
	uint64_t accepted[SOCK_KINDS];
	uint64_t calls;
	uint32_t calls_in_flight;
	size_t output_owed; /* reply bytes queued or held for all clients */
	struct server_limits_hit hit;
};

/*
 * Called once for every well-framed message. The handler owns r until it calls one of
 * req_reply()/req_error() without continues; it may do so later from another callback.
 */
typedef void server_dispatch_fn(struct req *r, void *arg);

/* Called when a stopping server has finished every call and closed every client. */
typedef void server_drained_fn(void *arg);

/* What a client may use; see the limits.* directives of tpad.conf(5). */
struct server_limits {
	size_t max_message;
	uint32_t idle_timeout_ms;    /* no call in flight and no message for this long: close */
	uint32_t message_timeout_ms; /* a message begun must end within this */
	uint32_t max_clients;
	uint32_t max_clients_per_uid;
	uint32_t max_clients_per_process;
	uint32_t max_pending_calls; /* calls queued on one connection */
	size_t max_output;	    /* reply bytes owed to one client before it is not read */
	size_t max_output_total;    /* reply bytes owed to all clients before none is read */
};

/* Serve clients within *lim (copied). */
struct server *server_new(struct event_base *base, const struct server_limits *lim,
			  server_dispatch_fn *dispatch, void *arg);

/* Who serves: its name in the log, its sockets' names and the Busy error each answers. */
struct server_identity {
	const char *stopping;		    /* why clients are closed at stop: "tpad is stopping" */
	const char *kind_names[SOCK_KINDS]; /* "station", "admin" */
	const char *busy[SOCK_KINDS];	    /* "io.tpad.Station.Busy", "io.tpad.Admin.Busy" */
};

/* Serve as id (kept, not copied) instead of tpad, the default. */
void server_set_identity(struct server *s, const struct server_identity *id);

/* Apply new limits to the connections from now on (e.g. after a reload). */
void server_set_limits(struct server *s, const struct server_limits *lim);

/* Close every connection and free the server. Accepts NULL. */
void server_free(struct server *s);

/* Take a connected socket (from a listener). Takes ownership of fd in every case. */
void server_accept(struct server *s, int fd, enum sock_kind kind);

/*
 * Stop reading new calls; once the calls in flight have answered and their replies are
 * written (or timeout_ms has passed), close every client and call drained.
 */
void server_stop(struct server *s, uint32_t timeout_ms, server_drained_fn *drained, void *arg);

void server_get_stats(const struct server *s, struct server_stats *ret);

/* The call's method name, its parameters (never NULL), and whether it asked for more. */
const char *req_method(const struct req *r);
json_t *req_params(const struct req *r);
bool req_more(const struct req *r);
bool req_oneway(const struct req *r);
const struct peer *req_peer(const struct req *r);

/* True once the client is gone: the handler still finishes, its replies are dropped. */
bool req_gone(const struct req *r);

/*
 * Answer the call. params is stolen (may be NULL for an empty object). With continues
 * (only for calls with more) the call stays open for further replies; otherwise r is
 * finished and must not be used again. Replies reach the client in call order.
 */
void req_reply(struct req *r, json_t *params, bool continues);
void req_error(struct req *r, const char *error, json_t *params);

/*
 * As req_reply(), with the parameters given as the text of one JSON object (len bytes,
 * not checked: the caller encodes it, e.g. once for many streams).
 */
void req_reply_text(struct req *r, const char *params, size_t len, bool continues);

/* Bytes queued to the client and not yet written (for streaming handlers to pace). */
size_t req_output_pending(const struct req *r);

/*
 * Call fn(arg) once, from the loop, when the client has read everything queued on its
 * connection: a streaming handler that paused at req_output_pending() goes on at the pace
 * the client reads. Never called once the call has finished or the client is gone (a
 * handler that paused looks at req_gone() on its own timer). A later call replaces it.
 */
typedef void req_written_fn(void *arg);
void req_when_written(struct req *r, req_written_fn *fn, void *arg);

/*
 * org.varlink.service.GetInfo and GetInterfaceDescription for a socket that serves the
 * interfaces whose proto socket bits (iface_sockets) include sock: the program's name, the
 * version and those interfaces; the description of one of them, or InterfaceNotFound.
 */
void req_reply_info(struct req *r, const char *product, unsigned sock);
void req_reply_interface_description(struct req *r, unsigned sock);
