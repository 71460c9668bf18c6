/* iface: the interface description files compiled in, and which socket serves each. */
#include "iface.h"

#include <stddef.h>
#include <string.h>

struct iface_text {
	const char *name;
	const char *text;
};

#include "iface-data.h"

#define N_IFACES (sizeof(iface_texts) / sizeof(iface_texts[0]))

static const struct {
	const char *name;
	unsigned sockets;
} iface_socket_table[] = {
    {"org.varlink.service", PROTO_SOCKET_ANY},
    {"io.tpad.Station", PROTO_SOCKET_STATION},
    {"io.tpad.Admin", PROTO_SOCKET_ADMIN},
    {"io.tpad.AS", PROTO_SOCKET_AS_APPS | PROTO_SOCKET_AS_ADMIN},
    {"io.tpad.ASAdmin", PROTO_SOCKET_AS_ADMIN},
};

const char *iface_description(const char *interface)
{
	if (!interface)
		return NULL;
	for (size_t i = 0; i < N_IFACES; i++)
		if (strcmp(iface_texts[i].name, interface) == 0)
			return iface_texts[i].text;
	return NULL;
}

const char *const *iface_names(void)
{
	return iface_name_list;
}

unsigned iface_sockets(const char *interface)
{
	if (!iface_description(interface))
		return 0;
	for (size_t i = 0; i < sizeof(iface_socket_table) / sizeof(iface_socket_table[0]); i++)
		if (strcmp(iface_socket_table[i].name, interface) == 0)
			return iface_socket_table[i].sockets;
	return 0;
}
