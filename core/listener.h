/* listener: the daemons' listening Unix sockets, from systemd or bound by hand. */
#pragma once

#include <stdbool.h>

#include "server.h"

struct listener;
struct event_base;

/*
 * Get the listening socket for kind: the one systemd passed under the fd name
 * ("station" or "admin") if any, else bind path with mode and group (NULL: keep ours),
 * after checking that no live instance listens there and removing a stale socket.
 * Accepted clients go to server_accept(). On error returns a negative errno and writes a
 * one-line reason to err.
 */
int listener_open(struct event_base *base, struct server *srv, enum sock_kind kind,
		  const char *path, unsigned mode, const char *group, struct listener **ret,
		  char *err, size_t errlen);

/* Same, with the systemd fd name given (tpas: "apps" and "admin"). */
int listener_open_named(struct event_base *base, struct server *srv, enum sock_kind kind,
			const char *name, const char *path, unsigned mode, const char *group,
			struct listener **ret, char *err, size_t errlen);

/*
 * What --check-config can tell of a socket path before binding it: too long for a Unix
 * socket, or a file that is not a socket in its place (which bind() would report as an
 * address in use). 0, or a negative errno with a one-line reason in err.
 */
int listener_check_path(const char *path, char *err, size_t errlen);

/* True if the socket came from systemd (the configured path was not touched). */
bool listener_activated(const struct listener *l);

/* Stop accepting; removes the socket path if we bound it. Accepts NULL. */
void listener_free(struct listener *l);

/* Forget the fds systemd passed that no listener took (closes them). */
void listener_close_unused(void);
