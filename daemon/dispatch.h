/* dispatch: routes each call to its handler after the protocol checks; built-in methods. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct config;
struct req;
struct tpad;

/* Bring up the modules the handlers use (store, upstream, activation), in order. */
int dispatch_init(struct tpad *t);

/* Tear them down in reverse order. Accepts a partly initialised t. */
void dispatch_finish(struct tpad *t);

/* The server's dispatch callback; arg is the struct tpad. */
void dispatch_call(struct req *r, void *arg);

/* The store key as --check-config read it: len 0 when it was not (wipe it: cred_wipe). */
struct check_key {
	uint8_t key[STORE_KEY_LEN];
	size_t len;
};

/*
 * Checks of the configuration that need a module (template, socket paths, label layout),
 * and that its credentials can be read. path: the configuration file, which err names
 * (with the line of a directive at fault). keep (may be NULL): the store key read, for
 * dispatch_check_start().
 */
int dispatch_check_config(const struct config *cfg, const char *path, struct check_key *keep,
			  char *err, size_t errlen);

/*
 * --check-config, after dispatch_check_config(): what start sets up before serving that
 * can be checked without it (the SQLite store, with key if it holds the store key, else
 * read here; the upstream client; no connection is made), logged as at start. A credential
 * this process cannot see is named in a notice, not an error.
 */
int dispatch_check_start(const struct config *cfg, const struct check_key *key);

/* One line of health for systemd's STATUS=. */
void dispatch_status_line(const struct tpad *t, char *buf, size_t len);

/*
 * tpad --copy-store URL: copy the SQLite store of cfg (store.path, its key) into the
 * PostgreSQL database at url, printing what was copied and verified. 0 or a negative errno.
 */
int dispatch_copy_store(const struct config *cfg, const char *url);

/*
 * tpad --restore-store FILE: put the SQLite store of cfg back from the copy at file, tpad
 * stopped (store_restore.h), saying where the store it replaced is kept. 0 or a negative
 * errno.
 */
int dispatch_restore_store(const struct config *cfg, const char *file);
