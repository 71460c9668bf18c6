/* cred: secrets from systemd credentials or key files, checked, decoded and wiped. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Load the secret named name (e.g. "tpa-psk") from $CREDENTIALS_DIRECTORY/name, or when
 * that is unset or lacks it, from fallback_path (may be NULL). A file readable by others
 * (mode & 007) is refused with -EPERM; one its group can read (0640, root:tpad) is not.
 * Surrounding white space is stripped.
 * cred_load_hex decodes hex into out (at most max bytes, *ret_len set);
 * cred_load_text copies the text into out (size max, NUL-terminated).
 * -ENOENT when no source has it, -ENODATA if it is empty, -EINVAL if it is not a regular
 * file, -EBADMSG if cred_load_hex finds no hexadecimal digits (or an odd number of them),
 * -E2BIG if too long.
 * The file's bytes are wiped from every temporary buffer before returning.
 */
int cred_load_hex(const char *name, const char *fallback_path, uint8_t *out, size_t max,
		  size_t *ret_len);
int cred_load_text(const char *name, const char *fallback_path, char *out, size_t max);

/*
 * False when this process has no way to a credential: neither fallback_path nor
 * $CREDENTIALS_DIRECTORY is set (a check run by hand, where systemd's LoadCredential=
 * gives it at start).
 */
bool cred_visible(const char *fallback_path);

/*
 * The file credential name is read from: the credentials directory's if it has one, else
 * fallback_path (written to path, len bytes, when it is the former); NULL if neither.
 */
const char *cred_source(const char *name, const char *fallback_path, char *path, size_t len);

/*
 * Read a whole small secret file into buf (size bufsz), NUL-terminated, surrounding white
 * space stripped. private_only refuses a file readable by others (-EPERM). -E2BIG if it
 * does not fit (buf wiped), -EINVAL if it is not a regular file, or open/read's errno.
 */
int cred_read_file(const char *path, bool private_only, char *buf, size_t bufsz);

/*
 * Write one line to buf that says why loading credential name (or fallback_path) failed
 * with err and how to fix it, naming the file that was tried: e.g. "/etc/tpad/psk is
 * readable by other users: run chmod o-rwx /etc/tpad/psk". A missing fallback_path that is
 * no path (neither absolute nor a name with a dot, as tpa.psk) is not named: it is most
 * likely the secret itself, written in the file directive. Returns buf.
 */
const char *cred_explain(int err, const char *name, const char *fallback_path, char *buf,
			 size_t len);

/* Overwrite n bytes at p with zeros in a way the compiler cannot drop. */
void cred_wipe(void *p, size_t n);
