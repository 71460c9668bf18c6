/* server_conf: the limits.* directives of a daemon's local sockets, for its config table. */
#pragma once

#include <stddef.h>

#include "conf.h"
#include "server.h"

#define SERVER_LIMIT_OFF(BASE, f) ((BASE) + offsetof(struct server_limits, f))

/*
 * The nine limits.* directives (tpad.conf(5), tpas(8)) of a struct server_limits at
 * offset BASE in the program's config struct. The defaults of the client counts (in config
 * syntax) are each program's own.
 */
#define SERVER_LIMITS_DIRECTIVES(BASE, CLIENTS, PER_UID, PER_PROCESS)                              \
	{.name = "limits.max-message",                                                             \
	 .type = CONF_SIZE,                                                                        \
	 .offset = SERVER_LIMIT_OFF(BASE, max_message),                                            \
	 .def = "64K",                                                                             \
	 .min = 1024,                                                                              \
	 .max = 16u << 20},                                                                        \
	    {.name = "limits.idle-timeout",                                                        \
	     .type = CONF_DURATION,                                                                \
	     .offset = SERVER_LIMIT_OFF(BASE, idle_timeout_ms),                                    \
	     .def = "300s",                                                                        \
	     .min = 100,                                                                           \
	     .max = 86400000},                                                                     \
	    {.name = "limits.message-timeout",                                                     \
	     .type = CONF_DURATION,                                                                \
	     .offset = SERVER_LIMIT_OFF(BASE, message_timeout_ms),                                 \
	     .def = "10s",                                                                         \
	     .min = 100,                                                                           \
	     .max = 3600000},                                                                      \
	    {.name = "limits.max-clients",                                                         \
	     .type = CONF_UINT,                                                                    \
	     .offset = SERVER_LIMIT_OFF(BASE, max_clients),                                        \
	     .def = CLIENTS,                                                                       \
	     .min = 1,                                                                             \
	     .max = 65536},                                                                        \
	    {.name = "limits.max-clients-per-uid",                                                 \
	     .type = CONF_UINT,                                                                    \
	     .offset = SERVER_LIMIT_OFF(BASE, max_clients_per_uid),                                \
	     .def = PER_UID,                                                                       \
	     .min = 1,                                                                             \
	     .max = 65536},                                                                        \
	    {.name = "limits.max-clients-per-process",                                             \
	     .type = CONF_UINT,                                                                    \
	     .offset = SERVER_LIMIT_OFF(BASE, max_clients_per_process),                            \
	     .def = PER_PROCESS,                                                                   \
	     .min = 1,                                                                             \
	     .max = 65536},                                                                        \
	    {.name = "limits.max-pending-calls",                                                   \
	     .type = CONF_UINT,                                                                    \
	     .offset = SERVER_LIMIT_OFF(BASE, max_pending_calls),                                  \
	     .def = "64",                                                                          \
	     .min = 1,                                                                             \
	     .max = 4096},                                                                         \
	    {.name = "limits.max-output",                                                          \
	     .type = CONF_SIZE,                                                                    \
	     .offset = SERVER_LIMIT_OFF(BASE, max_output),                                         \
	     .def = "1M",                                                                          \
	     .min = 4096,                                                                          \
	     .max = 64u << 20},                                                                    \
	{                                                                                          \
		.name = "limits.max-output-total", .type = CONF_SIZE,                              \
		.offset = SERVER_LIMIT_OFF(BASE, max_output_total), .def = "64M", .min = 65536,    \
		.max = (uint64_t)4096 << 20                                                        \
	}
