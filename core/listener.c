/* listener: the daemons' listening Unix sockets, from systemd or bound by hand. */
#include "listener.h"

#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <grp.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "log.h"

struct listener {
	struct event_base *base;
	struct server *srv;
	enum sock_kind kind;
	int fd;
	char *path; /* set when we bound it ourselves */
	struct event *ev_accept;
	struct event *ev_resume;
	char name[16]; /* "station", "apps"...: the socket in log lines */
	struct log_run starved; /* accept() failing for want of descriptors or memory */
};

/* The fds passed by systemd, with their names, fetched once. */
static int act_n = -1;
static char **act_names;
static bool *act_taken;

/* Free a NULL-terminated string array. */
static void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

/* Read LISTEN_FDS/LISTEN_FDNAMES once (unsetting them, so children do not inherit). */
static void activation_load(void)
{
	if (act_n >= 0)
		return;
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	act_n = 0;
	if (n > 0)
		act_taken = calloc((size_t)n, sizeof(bool));
	if (n <= 0 || !act_taken) {
		strv_free(names);
		return;
	}
	act_n = n;
	act_names = names;
}

/* The passed fd named name, or -1. */
static int activation_take(const char *name)
{
	activation_load();
	for (int i = 0; i < act_n; i++) {
		if (!act_taken[i] && act_names && act_names[i] && strcmp(act_names[i], name) == 0) {
			act_taken[i] = true;
			return SD_LISTEN_FDS_START + i;
		}
	}
	return -1;
}

void listener_close_unused(void)
{
	activation_load();
	for (int i = 0; i < act_n; i++) {
		if (!act_taken[i]) {
			log_warnx("closing socket passed by systemd with unknown name '%s'",
				  act_names && act_names[i] ? act_names[i] : "");
			close(SD_LISTEN_FDS_START + i);
			act_taken[i] = true;
		}
	}
}

/* Re-enable accepting after a pause for EMFILE. */
static void listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	event_add(l->ev_accept, NULL);
}

/* accept() worked (or found nobody waiting, which needs no descriptor): a run of failures ends. */
static void listener_fed(struct listener *l)
{
	unsigned long tries;
	double secs;
	if (log_run_ended(&l->starved, &tries, &secs))
		log_notice("%s socket: accepting clients again (accept() failed %lu times in "
			   "%.0f s)",
			   l->name, tries, secs);
}

/* Accept every pending client; pause for a second when out of file descriptors. */
static void listener_accept_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	for (int i = 0; i < 64; i++) {
		int cfd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd >= 0) {
			listener_fed(l);
			server_accept(l->srv, cfd, l->kind);
			continue;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED) {
			listener_fed(l);
			return;
		}
		if (errno == EINTR)
			return;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			if (log_run_failed(&l->starved))
				log_warn_errno(-errno,
					       "%s socket: cannot accept clients, pausing; trying "
					       "again every second, logged again once it works",
					       l->name);
			event_del(l->ev_accept);
			struct timeval tv = {.tv_sec = 1};
			evtimer_add(l->ev_resume, &tv);
			return;
		}
		log_warn_errno(-errno, "accept failed");
		return;
	}
}

int listener_check_path(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long (at most %zu bytes)", path,
			 sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	/* bind() would say "Address already in use", as if another instance were there. */
	struct stat st;
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen,
			 "%s exists and is not a socket: move it away, or give the socket another "
			 "path",
			 path);
		return -EEXIST;
	}
	return 0;
}

/* Bind a fresh Unix socket at path, safely replacing a stale one. */
static int bind_path(const char *path, unsigned mode, const char *group, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int bad = listener_check_path(path, err, errlen);
	if (bad < 0)
		return bad;
	strcpy(sa.sun_path, path);

	gid_t gid = (gid_t)-1;
	if (group) {
		/* A name, or a decimal gid (the configuration takes both; chown takes any). */
		char *end;
		unsigned long id = strtoul(group, &end, 10);
		struct group *g = getgrnam(group);
		bool number = !g && isdigit((unsigned char)*group) && !*end && id < (gid_t)-1;
		if (!g && !number) {
			snprintf(err, errlen, "%s: unknown group '%s'", path, group);
			return -EINVAL;
		}
		gid = g ? g->gr_gid : (gid_t)id;
	}

	/* Create the parent directory when started by hand before systemd made it. */
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s", path);
	char *d = dirname(dir);
	if (mkdir(d, 0755) < 0 && errno != EEXIST) {
		int r = -errno;
		snprintf(err, errlen, "%s: cannot create directory: %s", d, strerror(-r));
		return r;
	}

	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		int r = -errno;
		snprintf(err, errlen, "socket: %s", strerror(-r));
		return r;
	}
	/* A live instance answers; a stale socket refuses and may be removed. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			snprintf(err, errlen, "%s: another instance is already listening there", path);
			return -EADDRINUSE;
		}
		int e = errno;
		close(probe);
		if (e == ECONNREFUSED) {
			struct stat st;
			if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
				unlink(path);
		}
	}
	mode_t old = umask(0077);
	int r = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	int e = errno;
	umask(old);
	if (r < 0) {
		close(fd);
		snprintf(err, errlen, "%s: cannot bind: %s", path, strerror(e));
		return -e;
	}
	if ((gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) || chmod(path, mode) < 0) {
		e = errno;
		unlink(path);
		close(fd);
		snprintf(err, errlen, "%s: cannot set owner or mode: %s", path, strerror(e));
		return -e;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		e = errno;
		unlink(path);
		close(fd);
		snprintf(err, errlen, "%s: cannot listen: %s", path, strerror(e));
		return -e;
	}
	return fd;
}

int listener_open(struct event_base *base, struct server *srv, enum sock_kind kind,
		  const char *path, unsigned mode, const char *group, struct listener **ret,
		  char *err, size_t errlen)
{
	return listener_open_named(base, srv, kind, kind == SOCK_STATION ? "station" : "admin",
				   path, mode, group, ret, err, errlen);
}

int listener_open_named(struct event_base *base, struct server *srv, enum sock_kind kind,
			const char *name, const char *path, unsigned mode, const char *group,
			struct listener **ret, char *err, size_t errlen)
{
	struct listener *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	l->base = base;
	l->srv = srv;
	l->kind = kind;
	snprintf(l->name, sizeof(l->name), "%s", name);
	l->fd = activation_take(name);
	if (l->fd >= 0) {
		if (sd_is_socket_unix(l->fd, SOCK_STREAM, 1, NULL, 0) <= 0) {
			snprintf(err, errlen,
				 "socket '%s' from systemd is not a listening Unix "
				 "stream socket",
				 name);
			free(l);
			return -EINVAL;
		}
		evutil_make_socket_nonblocking(l->fd);
		evutil_make_socket_closeonexec(l->fd);
		log_info("%s socket from systemd", name);
	} else {
		char why[400];
		int fd = bind_path(path, mode, group, why, sizeof(why));
		if (fd < 0) {
			/* Name the directive: "station.socket: ..." (tpas: apps.socket). */
			snprintf(err, errlen, "%s.socket: %s", name, why);
			free(l);
			return fd;
		}
		l->fd = fd;
		l->path = strdup(path);
		if (!l->path) {
			unlink(path);
			close(fd);
			free(l);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		log_info("%s socket listening on %s", name, path);
	}
	l->ev_accept = event_new(base, l->fd, EV_READ | EV_PERSIST, listener_accept_cb, l);
	l->ev_resume = evtimer_new(base, listener_resume_cb, l);
	if (!l->ev_accept || !l->ev_resume || event_add(l->ev_accept, NULL) < 0) {
		snprintf(err, errlen, "out of memory");
		listener_free(l);
		return -ENOMEM;
	}
	*ret = l;
	return 0;
}

bool listener_activated(const struct listener *l)
{
	return l->path == NULL;
}

void listener_free(struct listener *l)
{
	if (!l)
		return;
	if (l->ev_accept)
		event_free(l->ev_accept);
	if (l->ev_resume)
		event_free(l->ev_resume);
	if (l->path) {
		unlink(l->path);
		free(l->path);
	}
	close(l->fd);
	free(l);
}
