/* store_copy: copy a SQLite store into a PostgreSQL one (tpad --copy-store), resumable. */
#pragma once

#include <stddef.h>
#include <stdint.h>

struct store_copy_options {
	const char *sqlite_path; /* the store to copy; locked while copying (tpad stopped) */
	const char *url;	 /* libpq URI of the database to copy into */
	const char *password;	 /* NULL: libpq's own */
	const char *instance;	 /* names rows, attempts and audit entries that name none */
	const uint8_t *key;	 /* the store key of both */
	size_t key_len;
};

struct store_copy_counts {
	uint64_t devices;	    /* copied now */
	uint64_t devices_there;	    /* already there with the same record (an earlier copy) */
	uint64_t conflicts;	    /* held by the database with another record: not copied */
	uint64_t attempts, labels;  /* copied now */
	uint64_t audit;		    /* audit entries copied now */
	uint64_t verified_devices;  /* found in the database afterwards (conflicts aside) */
	uint64_t verified_attempts; /* (the three verified_ fields are in this order) */
	uint64_t verified_labels;
	uint64_t verified_audit; /* audit entries of the SQLite store, all copied */
};

/*
 * Copy every device, attempt, label and audit entry of the SQLite store into the database,
 * creating or upgrading its schema; then check that every one is there. Run again after an
 * interruption, it copies only what is missing. 0, or a negative errno with the reason in
 * err (*ret holds what was done until then).
 */
int store_copy_to_pg(const struct store_copy_options *o, struct store_copy_counts *ret,
		     char *err, size_t errlen);
