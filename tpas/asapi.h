/* asapi: io.tpad.AS and io.tpad.ASAdmin on tpas's sockets: uplink streams, downlinks, ASTKs. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct asapi;
struct req;
struct tpas;
struct tunnel_uplink;

/* Set up the handlers over t's modules; NULL on ENOMEM. */
struct asapi *asapi_new(struct tpas *t);

/* Close every stream (each gets its last reply) and free. Accepts NULL; returns NULL. */
struct asapi *asapi_free(struct asapi *a);

/* The server's dispatch callback; arg is the struct tpas. */
void asapi_call(struct req *r, void *arg);

/*
 * Keep the texts of newly committed uplinks (taken from ups: text set to NULL), the
 * newest ASAPI_RECENT of them, so that streams that follow closely send them as they are
 * instead of reading them back from the journal. Every committed uplink must pass here,
 * in seq order: a stream uses them only from the oldest kept on.
 */
void asapi_remember(struct asapi *a, struct tunnel_uplink *ups, size_t n);

/* An uplink was committed: wake the streams that are caught up. */
void asapi_notify(struct asapi *a, int64_t seq);

/* End every stream (stopping): their calls finish so the server can drain. */
void asapi_stop(struct asapi *a);

/* Streams open now. */
unsigned asapi_subscribers(const struct asapi *a);
