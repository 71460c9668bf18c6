/* dispatch: routes each call to its handler after the protocol checks; built-in methods. */
#include "dispatch.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "iface.h"
#include "log.h"
#include "message.h"
#include "server.h"
#include "tpad-build.h"
#include "tpad.h"

typedef void handler_fn(struct tpad *t, struct req *r);

struct handler {
	const char *method;
	handler_fn *fn;
};

/* org.varlink.service.GetInfo: who we are and the interfaces of this socket. */
static void h_get_info(struct tpad *t, struct req *r)
{
	unsigned sock =
	    req_peer(r)->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	json_t *ifaces = json_array();
	for (const char *const *n = iface_names(); *n; n++)
		if (iface_sockets(*n) & sock)
			json_array_append_new(ifaces, json_string(*n));
	req_reply(r,
		  json_pack("{s:s, s:s, s:s, s:s, s:o}", "vendor", "tpad project", "product",
			    "tpad", "version", TPAD_VERSION, "url",
			    "https://github.com/tpad-project/tpad", "interfaces", ifaces),
		  false);
}

/* org.varlink.service.GetInterfaceDescription: the IDL text of one interface. */
static void h_get_interface_description(struct tpad *t, struct req *r)
{
	const char *name = json_string_value(json_object_get(req_params(r), "interface"));
	unsigned sock =
	    req_peer(r)->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	const char *text = name ? iface_description(name) : NULL;
	if (!text || !(iface_sockets(name) & sock)) {
		req_error(r, PROTO_ERR_INTERFACE_NOT_FOUND,
			  json_pack("{s:s}", "interface", name ? name : ""));
		return;
	}
	req_reply(r, json_pack("{s:s}", "description", text), false);
}

/* io.tpad.Admin.Status: version, uptime, connections, limits hit, and the modules. */
static void h_status(struct tpad *t, struct req *r)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	uint64_t up = (tpad_now_us() - t->started_us) / 1000000u;
	json_t *o = json_pack(
	    "{s:s, s:I, s:{s:i, s:i}, s:{s:I, s:I}, s:I, s:i, s:{s:I, s:I, s:I, s:I, s:I, "
	    "s:I}}",
	    "version", TPAD_VERSION, "uptime", (json_int_t)up, "connections", "station",
	    (int)st.connections[SOCK_STATION], "admin", (int)st.connections[SOCK_ADMIN], "accepted",
	    "station", (json_int_t)st.accepted[SOCK_STATION], "admin",
	    (json_int_t)st.accepted[SOCK_ADMIN], "calls", (json_int_t)st.calls, "callsInFlight",
	    (int)st.calls_in_flight, "limitsHit", "maxClients", (json_int_t)st.hit.max_clients,
	    "maxClientsPerUid", (json_int_t)st.hit.max_clients_per_uid, "maxMessage",
	    (json_int_t)st.hit.max_message, "idleTimeout", (json_int_t)st.hit.idle_timeout,
	    "maxPendingCalls", (json_int_t)st.hit.max_pending_calls, "slowReader",
	    (json_int_t)st.hit.slow_reader);
	if (!o) {
		req_error(r, "io.tpad.Admin.Busy", NULL);
		return;
	}
	req_reply(r, o, false);
}

static const struct handler handlers[] = {
    {"org.varlink.service.GetInfo", h_get_info},
    {"org.varlink.service.GetInterfaceDescription", h_get_interface_description},
    {"io.tpad.Admin.Status", h_status},
};

/* The handler of a method, or NULL if it is declared but not built yet. */
static handler_fn *handler_find(const char *method)
{
	for (size_t i = 0; i < sizeof(handlers) / sizeof(handlers[0]); i++)
		if (strcmp(handlers[i].method, method) == 0)
			return handlers[i].fn;
	return NULL;
}

/* Send the error of a fault. */
static void req_fault(struct req *r, const struct proto_fault *f)
{
	req_error(r, f->error, proto_fault_parameters(f));
}

void dispatch_call(struct req *r, void *arg)
{
	struct tpad *t = arg;
	const struct peer *p = req_peer(r);
	unsigned sock = p->kind == SOCK_STATION ? PROTO_SOCKET_STATION : PROTO_SOCKET_ADMIN;
	struct call c = {
	    .method = (char *)req_method(r), .parameters = req_params(r), .more = req_more(r)};
	const struct method_spec *m;
	struct proto_fault f;

	int rc = proto_check(&c, sock, &m, &f);
	if (rc == -ENOENT && strcmp(f.error, PROTO_ERR_INTERFACE_NOT_FOUND) == 0 &&
	    iface_sockets(f.parameter)) {
		/* An interface of the other socket: as far as this client knows, no such method. */
		f.error = PROTO_ERR_METHOD_NOT_FOUND;
		snprintf(f.parameter, sizeof(f.parameter), "%s", req_method(r));
		f.reason[0] = '\0';
	}
	if (rc < 0) {
		log_debug("%s: %s %s %s", req_method(r), f.error, f.parameter, f.reason);
		req_fault(r, &f);
		return;
	}
	handler_fn *fn = handler_find(m->name);
	if (!fn) {
		req_error(r, PROTO_ERR_METHOD_NOT_IMPLEMENTED,
			  json_pack("{s:s}", "method", m->name));
		return;
	}
	fn(t, r);
}

int dispatch_init(struct tpad *t)
{
	return 0;
}

void dispatch_finish(struct tpad *t)
{
}

int dispatch_check_config(const struct config *cfg, char *err, size_t errlen)
{
	return 0;
}

void dispatch_status_line(const struct tpad *t, char *buf, size_t len)
{
	struct server_stats st;
	server_get_stats(t->srv, &st);
	snprintf(buf, len, "%u station, %u admin clients; %llu calls", st.connections[SOCK_STATION],
		 st.connections[SOCK_ADMIN], (unsigned long long)st.calls);
}
