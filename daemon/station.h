/* station: the io.tpad.Station methods, Activate and Lookup. */
#pragma once

#include <stdbool.h>

struct config;
struct peer;
struct req;
struct tpad;

void station_activate(struct tpad *t, struct req *r);
void station_lookup(struct tpad *t, struct req *r);

/* The second fence: station.allowed-uids / allowed-groups against the peer's credentials. */
bool station_allowed(const struct config *cfg, const struct peer *peer);
