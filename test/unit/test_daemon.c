/* Unit tests for core/daemon: a service's private /tmp as mountinfo shows it. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "daemon.h"
#include "tap.h"

/* A mountinfo file with the given /tmp line (and the root's). */
static const char *mountinfo(const char *tmp_line)
{
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/test-daemon-mountinfo-XXXXXX");
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	FILE *f = fdopen(fd, "w");
	fprintf(f, "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n%s", tmp_line);
	fclose(f);
	return path;
}

int main(void)
{
	/* systemd's PrivateTmp=yes: /tmp is a bind mount of a systemd-private-* directory. */
	const char *priv = mountinfo(
	    "612 22 254:1 /tmp/systemd-private-6b2c8e-tpad.service-Zk9qQx/tmp /tmp rw,nosuid "
	    "master:1 - ext4 /dev/vda1 rw\n");
	CHECK(daemon_private_tmp("/tmp/backup.db", priv));
	CHECK(!daemon_private_tmp("/var/tmp/backup.db", priv));
	CHECK(!daemon_private_tmp("/var/lib/tpad/backups/backup.db", priv));
	CHECK(!daemon_private_tmp("/tmpx/backup.db", priv));
	unlink(priv);
	/* A /tmp of its own file system (tmpfs), not systemd's: shared, fine. */
	const char *shared =
	    mountinfo("30 22 0:27 / /tmp rw,nosuid,nodev shared:12 - tmpfs tmpfs rw\n");
	CHECK(!daemon_private_tmp("/tmp/backup.db", shared));
	unlink(shared);
	CHECK(!daemon_private_tmp("/tmp/backup.db", "/nonexistent/mountinfo"));
	return tap_done();
}
