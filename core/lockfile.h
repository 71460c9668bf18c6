/* lockfile: one process per store, by an exclusive flock() on a file next to it. */
#pragma once

#include <stddef.h>

/*
 * Lock path + ".lock" (made 0600 if missing) without waiting and write this process's pid
 * into it; *ret_fd then holds the lock until closed (also by exit). -EBUSY when another
 * process holds it: err says "<path> is in use by another <program> (pid N): one
 * <program> per <what> (stop it, or give this one its own store.path)"; other negative
 * errnos with one line in err. *ret_fd is -1 on failure.
 */
int lockfile_take(const char *path, const char *program, const char *what, int *ret_fd, char *err,
		  size_t errlen);
