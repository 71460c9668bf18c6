/* ctl_top: tpactl top, a live view of tpad for the line's screen, redrawn in place. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"

static volatile sig_atomic_t top_interrupted, top_resized;

static void on_sigint(int sig)
{
	top_interrupted = 1;
}

static void on_sigwinch(int sig)
{
	top_resized = 1;
}

static double mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long long geti(json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

static const char *gets_or(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : dflt;
}

/* What the previous frame saw, for rates. */
struct prev {
	bool have;
	double at;
	long long total;
	json_t *outcomes; /* owned copy */
};

/* One screen line: text, cleared to the end of the line, within width columns. */
struct screen {
	char *buf;
	size_t len;
	FILE *f;
	int width, height, lines;
	bool color;
};

__attribute__((format(printf, 2, 3))) static void line(struct screen *s, const char *fmt, ...)
{
	if (s->lines >= s->height - 1)
		return;
	char text[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	fputs(text, s->f);
	fputs("\033[K\r\n", s->f);
	s->lines++;
}

/* A health word, coloured when the terminal may show colour. */
static const char *paint(const struct screen *s, const char *word, char *buf, size_t len)
{
	if (!s->color)
		return word;
	const char *code = "31";
	if (!strcmp(word, "ok") || !strcmp(word, "closed") || !strcmp(word, "ready") ||
	    !strcmp(word, "busy") || !strcmp(word, "idle") || !strcmp(word, "processing"))
		code = "32";
	else if (!strcmp(word, "degraded") || !strcmp(word, "half-open") ||
		 !strcmp(word, "connecting") || !strcmp(word, "handshaking"))
		code = "33";
	snprintf(buf, len, "\033[%sm%s\033[0m", code, word);
	return buf;
}

static void draw(struct screen *s, const char *path, json_t *st, const char *err, struct prev *pv,
		 double interval)
{
	char b1[64], b2[64], tbuf[16];
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	strftime(tbuf, sizeof(tbuf), "%H:%M:%S", &tm);
	fputs("\033[H", s->f);
	s->lines = 0;
	if (!st) {
		line(s, "tpad  %s   %s", path, tbuf);
		line(s, "%s", "");
		line(s, "%s", s->color ? "\033[31mnot reachable\033[0m" : "not reachable");
		line(s, "  %s", err ? err : "");
		line(s, "  retrying every %.1f s", interval);
		goto done;
	}
	long long up = geti(st, "uptime");
	line(s, "tpad %s  up %lldd %02lld:%02lld:%02lld   %s   %s", gets_or(st, "version", "?"),
	     up / 86400, up / 3600 % 24, up / 60 % 60, up % 60, path, tbuf);
	line(s, "%s", "");

	/* Activations: rate from the change of every outcome since the last frame. */
	json_t *act = json_object_get(st, "activations");
	json_t *outcomes = json_object_get(act, "outcomes");
	long long total = 0;
	const char *key;
	json_t *v;
	json_object_foreach(outcomes, key, v) total += (long long)json_integer_value(v);
	double t = mono_s();
	double rate = pv->have && t > pv->at ? (double)(total - pv->total) / (t - pv->at) : 0.0;
	json_t *lat = json_object_get(json_object_get(st, "upstream"), "latency");
	line(s, "Activations  %8.1f /s   total %lld   in flight %lld   live %lld   stored %lld",
	     rate, total, geti(act, "inFlight"), geti(act, "live"), geti(act, "stored"));
	line(s, "Latency      upstream p50 %lld ms   p99 %lld ms", geti(lat, "p50"),
	     geti(lat, "p99"));
	/* Errors by name, with what changed since the last frame. */
	char errs[512] = "";
	size_t n = 0;
	json_object_foreach(outcomes, key, v)
	{
		if (!strcmp(key, "ok"))
			continue;
		long long c = (long long)json_integer_value(v);
		long long d = c - (long long)json_integer_value(json_object_get(pv->outcomes, key));
		if (!c)
			continue;
		char delta[32] = "";
		if (pv->have && d > 0)
			snprintf(delta, sizeof(delta), " (+%lld)", d);
		n += (size_t)snprintf(errs + n, sizeof(errs) - n, "%s %lld%s   ", key, c, delta);
		if (n >= sizeof(errs))
			break;
	}
	line(s, "Errors       %s", errs[0] ? errs : "none");
	line(s, "%s", "");

	json_t *u = json_object_get(st, "upstream");
	if (json_is_object(u)) {
		json_t *sess = json_object_get(u, "sessions");
		size_t i, ready = 0;
		json_t *x;
		json_array_foreach(sess, i, x)
		{
			const char *state = gets_or(x, "state", "");
			ready += !strcmp(state, "ready") || !strcmp(state, "busy");
		}
		line(s, "Cloud        %s   breaker %s   queue %lld   sessions %zu/%zu up",
		     paint(s, gets_or(u, "state", "?"), b1, sizeof(b1)),
		     paint(s, gets_or(u, "breaker", "?"), b2, sizeof(b2)), geti(u, "queue"), ready,
		     json_array_size(sess));
		json_array_foreach(sess, i, x)
		{
			const char *state = gets_or(x, "state", "?");
			const char *le = gets_or(x, "lastError", NULL);
			line(s, "  session %-2zu %s%*s %8lld requests %4lld reconnects%s%s", i,
			     paint(s, state, b1, sizeof(b1)), (int)(11 - strlen(state) % 12), "",
			     geti(x, "requests"), geti(x, "reconnects"), le ? "   " : "",
			     le ? le : "");
		}
	} else {
		line(s, "Cloud        not set up");
	}
	line(s, "%s", "");
	json_t *store = json_object_get(st, "store");
	if (json_is_object(store)) {
		json_t *rows = json_object_get(store, "rows");
		const char *le = gets_or(store, "lastError", NULL);
		line(s,
		     "Store        %lld issued   %lld pending   %lld failed   queue %lld   "
		     "commits %lld   failed commits %lld",
		     geti(rows, "ISSUED"), geti(rows, "PENDING"), geti(rows, "FAILED"),
		     geti(store, "queued"), geti(store, "commits"), geti(store, "failedCommits"));
		if (le)
			line(s, "  %s %s", paint(s, "last error:", b1, sizeof(b1)), le);
	}
	/* Printers, when this tpad reports them. */
	json_t *printers = json_object_get(st, "printers");
	if (json_is_array(printers) && json_array_size(printers)) {
		size_t i;
		json_t *p;
		json_array_foreach(printers, i, p)
		    line(s, "%s %s  %s  queue %lld  printed %lld  failed %lld",
			 i ? "            " : "Printers    ", gets_or(p, "name", "?"),
			 paint(s, gets_or(p, "state", "?"), b1, sizeof(b1)), geti(p, "queued"),
			 geti(json_object_get(p, "jobs"), "printed"),
			 geti(json_object_get(p, "jobs"), "failed"));
	} else {
		line(s, "Printers     none configured");
	}
	json_t *conns = json_object_get(st, "connections");
	line(s, "Clients      %lld station   %lld admin   calls %lld   in flight %lld",
	     geti(conns, "station"), geti(conns, "admin"), geti(st, "calls"),
	     geti(st, "callsInFlight"));
	pv->have = true;
	pv->at = t;
	pv->total = total;
	json_decref(pv->outcomes);
	pv->outcomes = json_deep_copy(outcomes);
done:
	line(s, "%s", "");
	line(s, "q quit   refresh every %.1f s", interval);
	fputs("\033[J", s->f);
}

/* One Status call on a fresh or kept connection; NULL with a reason on failure. */
static json_t *fetch(struct ctl *c, bool *connected, const char *path, char *why, size_t len)
{
	if (!*connected) {
		int r = ctl_connect(c, path, CTL_ADMIN);
		if (r < 0) {
			/* Why, as the screen keeps it: not running, no permission, a wrong path. */
			snprintf(why, len, "cannot connect to %s: %s%s", c->path, strerror(-r),
				 r == -ENOENT || r == -ECONNREFUSED ? " (is tpad running?)"
				 : r == -EACCES ? " (root or the tpad-admin group)"
						: "");
			return NULL;
		}
		*connected = true;
	}
	json_t *reply = NULL;
	if (ctl_send(c, "io.tpad.Admin.Status", NULL, false) < 0 || ctl_recv(c, &reply) < 0) {
		ctl_close(c);
		*connected = false;
		snprintf(why, len, "the connection to tpad was lost");
		return NULL;
	}
	if (json_object_get(reply, "error")) {
		snprintf(why, len, "tpad answered %s", gets_or(reply, "error", "an error"));
		json_decref(reply);
		return NULL;
	}
	json_t *p = json_incref(json_object_get(reply, "parameters"));
	json_decref(reply);
	return p;
}

int ctl_top(struct ctl *c, struct ctl_args *a)
{
	if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
		fprintf(stderr, "tpactl: top needs a terminal\n"
				"For scripts use 'tpactl status --json' or 'tpactl metrics'.\n");
		return CTL_EXIT_USAGE;
	}
	double interval = a->interval_ms ? a->interval_ms / 1000.0 : 1.0;
	const char *path = c->path;
	struct termios saved, raw;
	if (tcgetattr(STDIN_FILENO, &saved) < 0) {
		fprintf(stderr, "tpactl: cannot read the terminal's settings: %s\n",
			strerror(errno));
		return 1;
	}
	raw = saved;
	raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
	raw.c_cc[VMIN] = 0;
	raw.c_cc[VTIME] = 0;
	tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	/* Messages of the connection code would scribble over the screen: silence them. */
	int saved_err = dup(STDERR_FILENO);
	int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull >= 0) {
		dup2(devnull, STDERR_FILENO);
		close(devnull);
	}
	struct sigaction sa = {.sa_handler = on_sigint}, old_int, old_term, old_winch;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	sa.sa_handler = on_sigwinch;
	sigaction(SIGWINCH, &sa, &old_winch);

	struct screen s = {.color = ctl_color()};
	s.f = open_memstream(&s.buf, &s.len);
	fputs("\033[?1049h\033[?25l\033[?7l\033[H\033[2J",
	      stdout); /* own screen, no cursor, no wrap */
	fflush(stdout);
	bool connected = true, quit = false;
	struct prev pv = {0};
	char why[256] = "";
	while (!quit && !top_interrupted && s.f) {
		struct winsize ws;
		s.width = 80;
		s.height = 24;
		if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row && ws.ws_col) {
			s.width = ws.ws_col;
			s.height = ws.ws_row;
		}
		if (top_resized) {
			top_resized = 0;
			fputs("\033[2J", stdout);
		}
		json_t *st = fetch(c, &connected, path, why, sizeof(why));
		rewind(s.f);
		draw(&s, c->path ? c->path : path, st, why, &pv, interval);
		json_decref(st);
		fflush(s.f);
		fwrite(s.buf, 1, (size_t)ftell(s.f), stdout);
		fflush(stdout);
		/* Wait for the next frame, a key or a signal. */
		double until = mono_s() + interval;
		for (;;) {
			double left = until - mono_s();
			if (left <= 0 || top_interrupted || top_resized)
				break;
			struct pollfd pfd = {.fd = STDIN_FILENO, .events = POLLIN};
			int r = poll(&pfd, 1, (int)(left * 1000) + 1);
			if (r > 0) {
				char k[16];
				ssize_t m = read(STDIN_FILENO, k, sizeof(k));
				for (ssize_t i = 0; i < m; i++)
					if (k[i] == 'q' || k[i] == 'Q')
						quit = true;
				if (quit)
					break;
			}
		}
	}
	fputs("\033[?7h\033[?25h\033[?1049l", stdout);
	fflush(stdout);
	if (s.f)
		fclose(s.f);
	free(s.buf);
	json_decref(pv.outcomes);
	tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	if (saved_err >= 0) {
		dup2(saved_err, STDERR_FILENO);
		close(saved_err);
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGWINCH, &old_winch, NULL);
	if (!connected)
		c->fd = -1;
	return top_interrupted ? CTL_EXIT_INTERRUPTED : CTL_EXIT_OK;
}
