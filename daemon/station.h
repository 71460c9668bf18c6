/* station: the io.tpad.Station methods, Activate and Lookup. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct config;
struct peer;
struct req;
struct tpad;

struct act_request;

void station_activate(struct tpad *t, struct req *r);

/*
 * Whether the label of the device q asks for has room for its serial (every caption line,
 * at label.*): 0, or -EMSGSIZE with why. Checked before anything is issued, so that a
 * label never fails after the token (Activate, Import).
 */
int station_serial_fits(const struct tpad *t, const struct act_request *q, char *why,
			size_t whylen);

/* The same on the label of the printer called printer, when the call prints there. */
int station_serial_fits_printer(const struct tpad *t, const struct act_request *q,
				const char *printer, char *why, size_t whylen);
void station_lookup(struct tpad *t, struct req *r);

/* The second fence: station.allowed-uids / allowed-groups against the peer's credentials. */
bool station_allowed(const struct config *cfg, const struct peer *peer);
