/* daemon: the command line and the stop signals every daemon handles alike. */
#include "daemon.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cred.h"
#include "log.h"

int daemon_cmdline_parse(int argc, char **argv, const char *name, const char *version,
			 const char *default_config, bool store_tools, void (*usage)(FILE *f),
			 struct daemon_cmdline *ret)
{
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, 'n'},
	    {"print-config", no_argument, NULL, 'p'},
	    {"copy-store", required_argument, NULL, 'C'},
	    {"restore-store", required_argument, NULL, 'R'},
	    {"verbose", no_argument, NULL, 'v'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {0},
	};
	*ret = (struct daemon_cmdline){.config = default_config};
	int c;
	while ((c = getopt_long(argc, argv, "c:npvVh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			ret->config = optarg;
			ret->explicit_config = true;
			break;
		case 'n':
			ret->check = true;
			break;
		case 'p':
			ret->print = true;
			break;
		case 'C':
		case 'R':
			if (!store_tools) {
				fprintf(stderr, "%s: unrecognized option '--%s-store'\n", name,
					c == 'C' ? "copy" : "restore");
				usage(stderr);
				return 2;
			}
			*(c == 'C' ? &ret->copy_store : &ret->restore_store) = optarg;
			break;
		case 'v':
			log_set_verbose(true);
			break;
		case 'V':
			printf("%s %s\n", name, version);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		/* "tpad /etc/tpad/tpad.conf": the file was meant, behind --config. */
		const char *arg = argv[optind];
		size_t n = strlen(arg);
		struct stat st;
		bool file = (n > 5 && strcmp(arg + n - 5, ".conf") == 0) ||
			    (stat(arg, &st) == 0 && S_ISREG(st.st_mode));
		fprintf(stderr, "%s: unexpected argument '%s'%s%s%s\n", name, arg,
			file ? " (did you mean --config " : "", file ? arg : "", file ? "?)" : "");
		usage(stderr);
		return 2;
	}
	return -1;
}

#define N_SIGNALS 3
static const int signals[N_SIGNALS] = {SIGTERM, SIGINT, SIGHUP};

/*
 * The signals are read from a signalfd on the loop, with them blocked in every thread
 * (the workers block every signal from their start: core/thread), rather than by a
 * handler: a handler runs on the stack of whatever thread the signal interrupts, and the
 * kernel's signal frame below it holds that code's registers, key bytes among them, which
 * stay on the stack once the handler has returned.
 */
struct daemon_signals {
	int fd;
	struct event *ev;
	event_callback_fn stop, reload;
	void *arg;
};

static void signals_mask(sigset_t *set)
{
	sigemptyset(set);
	for (int i = 0; i < N_SIGNALS; i++)
		sigaddset(set, signals[i]);
}

static void signal_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon_signals *s = arg;
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		event_callback_fn fn = si.ssi_signo == SIGHUP ? s->reload : s->stop;
		if (fn)
			fn((evutil_socket_t)si.ssi_signo, EV_SIGNAL, s->arg);
	}
}

struct daemon_signals *daemon_signals_new(struct event_base *base, event_callback_fn stop,
					  event_callback_fn reload, void *arg)
{
	struct daemon_signals *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	*s = (struct daemon_signals){.fd = -1, .stop = stop, .reload = reload, .arg = arg};
	sigset_t set;
	signals_mask(&set);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	s->fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->fd < 0 || !(s->ev = event_new(base, s->fd, EV_READ | EV_PERSIST, signal_cb, s)) ||
	    event_add(s->ev, NULL) < 0) {
		daemon_signals_free(s);
		return NULL;
	}
	return s;
}

void daemon_signals_free(struct daemon_signals *s)
{
	if (!s)
		return;
	if (s->ev)
		event_free(s->ev);
	if (s->fd >= 0)
		close(s->fd);
	free(s);
}

static char *print_to_string(void (*print)(const void *cfg, FILE *f), const void *cfg)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	if (!f)
		return NULL;
	print(cfg, f);
	if (fclose(f) != 0) {
		free(buf);
		return NULL;
	}
	return buf;
}

/*
 * Walk the "key = value" lines of a printed configuration: *section is the section of the
 * line at *p ("" before any), the line itself is returned with its length, NULL at the end.
 */
static const char *next_line(const char **p, char section[64], size_t *ret_len)
{
	while (**p) {
		const char *l = *p;
		size_t n = strcspn(l, "\n");
		*p = l + n + (l[n] ? 1 : 0);
		if (*l == '[') {
			snprintf(section, 64, "%.*s", (int)(n > 2 ? n - 2 : 0), l + 1);
			continue;
		}
		if (n == 0 || *l == '#')
			continue;
		*ret_len = n;
		return l;
	}
	return NULL;
}

/* The line of section's key in text (its length in *ret_len), or NULL. */
static const char *find_key(const char *text, const char *section, const char *key, size_t key_len,
			    size_t *ret_len)
{
	char sec[64] = "";
	const char *l;
	while ((l = next_line(&text, sec, ret_len)))
		if (strcmp(sec, section) == 0 && strcspn(l, " ") == key_len &&
		    memcmp(l, key, key_len) == 0)
			return l;
	return NULL;
}

/* Whether text has the section (a printer's [printer.NAME] comes and goes). */
static bool has_section(const char *text, const char *section)
{
	char head[70];
	int n = snprintf(head, sizeof(head), "[%s]\n", section);
	for (const char *p = text; n > 0 && (p = strstr(p, head)); p++)
		if (p == text || p[-1] == '\n')
			return true;
	return false;
}

/* Say each section added or removed, and each key changed, outside the live section. */
static unsigned report_sections(const char *from, const char *to, const char *live,
				const char *what)
{
	unsigned n = 0;
	char sec[64] = "", said[64] = "";
	size_t len;
	const char *p = from;
	while (next_line(&p, sec, &len))
		if (strcmp(sec, said) != 0 && strcmp(sec, live) != 0 && !has_section(to, sec)) {
			log_warnx("SIGHUP: [%s] %s; it takes effect at the next start", sec, what);
			snprintf(said, sizeof(said), "%s", sec);
			n++;
		}
	return n;
}

static unsigned log_restart_needed(const char *old, const char *new, const char *live)
{
	unsigned n =
	    report_sections(new, old, live, "added") + report_sections(old, new, live, "removed");
	char sec[64] = "";
	size_t len, old_len;
	const char *l, *p = new;
	while ((l = next_line(&p, sec, &len))) {
		if (strcmp(sec, live) == 0 || !has_section(old, sec))
			continue;
		size_t key_len = strcspn(l, " ");
		const char *o = find_key(old, sec, l, key_len, &old_len);
		if (!o || old_len != len || memcmp(o, l, len) != 0) {
			log_warnx("SIGHUP: %s.%.*s changed; it takes effect at the next start", sec,
				  (int)key_len, l);
			n++;
		}
	}
	return n;
}

void daemon_reload_report(const char *path, void (*print)(const void *cfg, FILE *f),
			  const void *running, const void *fresh)
{
	char *old = print_to_string(print, running), *new = print_to_string(print, fresh);
	unsigned pending = old && new ? log_restart_needed(old, new, "limits") : 0;
	free(old);
	free(new);
	log_notice("SIGHUP: %s reloaded: limits applied%s", path,
		   pending ? "; other changes wait for a restart" : "");
}

void daemon_file_note(struct daemon_file *f, const char *directive, const char *credential,
		      const char *path)
{
	char buf[PATH_MAX];
	const char *src = credential ? cred_source(credential, path, buf, sizeof(buf)) : path;

	memset(f, 0, sizeof(*f));
	if (!src || !*src || snprintf(f->path, sizeof(f->path), "%s", src) >= (int)sizeof(f->path))
		return;
	f->directive = directive;
	f->seen = stat(f->path, &f->st) == 0;
}

/* Whether the file at f->path differs from what was noted. */
static bool file_changed(const struct daemon_file *f)
{
	struct stat st;
	if (stat(f->path, &st) < 0)
		return f->seen;
	return !f->seen || st.st_dev != f->st.st_dev || st.st_ino != f->st.st_ino ||
	       st.st_size != f->st.st_size || st.st_mtim.tv_sec != f->st.st_mtim.tv_sec ||
	       st.st_mtim.tv_nsec != f->st.st_mtim.tv_nsec;
}

void daemon_files_report(const struct daemon_file *f, size_t n, const char *prog)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].directive && file_changed(&f[i]))
			log_warnx("SIGHUP: %s (%s) changed since %s started; it is read at start "
				  "only: restart %s to use it",
				  f[i].directive, f[i].path, prog, prog);
}

bool daemon_cred_visible(const char *name, const char *file, const char *directive)
{
	if (cred_visible(file))
		return true;
	log_notice("credential %s not checked: neither %s nor $CREDENTIALS_DIRECTORY is set "
		   "here (under systemd, LoadCredential= gives it at start)",
		   name, directive);
	return false;
}

void daemon_no_core_dumps(void)
{
	/*
	 * Not dumpable: a core_pattern pipe (systemd-coredump, apport) gets no core whatever
	 * the limit, and no other process of this user may ptrace it or read its
	 * /proc/PID/mem and environ.
	 */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		log_warnx("cannot mark this process not dumpable (%s): a process of its user "
			  "could read the keys in its memory",
			  strerror(errno));
	struct rlimit rl = {0, 0};
	if (setrlimit(RLIMIT_CORE, &rl) == 0)
		return;
	int e = errno;
	if (getrlimit(RLIMIT_CORE, &rl) == 0 && rl.rlim_cur == 0)
		return; /* off already (LimitCORE=0), and the filter refused the call */
	log_warnx("cannot turn core files off (%s): a core file would hold the keys in memory; "
		  "set LimitCORE=0 (ulimit -c 0)",
		  strerror(e));
}

void daemon_check_fd_limit(unsigned long long need, const char *what)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    need > rl.rlim_cur)
		log_warnx("%s may need %llu descriptors, over the open-file limit %llu: raise it "
			  "(LimitNOFILE=) or lower them, or accepting will fail before the limits "
			  "are reached",
			  what, need, (unsigned long long)rl.rlim_cur);
}

bool daemon_private_tmp(const char *path, const char *mountinfo)
{
	static const char *const tmps[] = {"/tmp", "/var/tmp"};
	const char *under = NULL;
	for (size_t i = 0; i < 2 && !under; i++) {
		size_t n = strlen(tmps[i]);
		if (strncmp(path, tmps[i], n) == 0 && path[n] == '/')
			under = tmps[i];
	}
	FILE *f = under ? fopen(mountinfo, "re") : NULL;
	if (!f)
		return false;
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": the last mount on the point counts. */
	bool private = false;
	char line[4096], root[2048], point[2048];
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %2047s %2047s", root, point) == 2 &&
		    strcmp(point, under) == 0)
			private = strstr(root, "/systemd-private-") != NULL;
	fclose(f);
	return private;
}
