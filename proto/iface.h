/* iface: the interface description files compiled in, and which socket serves each. */
#pragma once

/* The sockets a method or interface is reachable on (a bit mask). */
enum proto_socket {
	PROTO_SOCKET_STATION = 1 << 0,	/* tpad */
	PROTO_SOCKET_ADMIN = 1 << 1,	/* tpad */
	PROTO_SOCKET_AS_APPS = 1 << 2,	/* tpas: applications */
	PROTO_SOCKET_AS_ADMIN = 1 << 3, /* tpas: its admin */
	PROTO_SOCKET_ANY = PROTO_SOCKET_STATION | PROTO_SOCKET_ADMIN | PROTO_SOCKET_AS_APPS |
			   PROTO_SOCKET_AS_ADMIN,
};

/* The varlink IDL text of interface (e.g. "io.tpad.Station"), or NULL if unknown. */
const char *iface_description(const char *interface);

/*
 * Every interface name, NULL-terminated: org.varlink.service, io.tpad.Station, io.tpad.Admin,
 * io.tpad.AS, io.tpad.ASAdmin.
 */
const char *const *iface_names(void);

/* The enum proto_socket mask serving interface; 0 if unknown. */
unsigned iface_sockets(const char *interface);
