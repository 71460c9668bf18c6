/* metrics_text: writing Prometheus text and OpenMetrics, shared by the daemons' /metrics. */
#include "metrics_text.h"
#include "server.h"

#include <dirent.h>
#include <errno.h>
#include <event2/event.h>
#include <mbedtls/version.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

int metrics_begin(struct metrics_out *o, enum metrics_format fmt)
{
	*o = (struct metrics_out){.fmt = fmt};
	o->f = open_memstream(&o->buf, &o->len);
	return o->f ? 0 : -ENOMEM;
}

char *metrics_end(struct metrics_out *o)
{
	if (o->fmt == METRICS_OPENMETRICS)
		fputs("# EOF\n", o->f);
	if (fclose(o->f) != 0) {
		free(o->buf);
		return NULL;
	}
	return o->buf;
}

void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help)
{
	const char *suffix = "";
	if (strcmp(type, "counter") == 0 && o->fmt == METRICS_PROMETHEUS)
		suffix = "_total";
	fprintf(o->f, "# HELP %s%s %s\n# TYPE %s%s %s\n", name, suffix, help, name, suffix, type);
}

void metrics_sample(struct metrics_out *o, const char *name, const char *labels,
		    unsigned long long v)
{
	if (labels && *labels)
		fprintf(o->f, "%s{%s} %llu\n", name, labels, v);
	else
		fprintf(o->f, "%s %llu\n", name, v);
}

void metrics_counter(struct metrics_out *o, const char *name, const char *help,
		     unsigned long long v)
{
	metrics_family(o, name, "counter", help);
	fprintf(o->f, "%s_total %llu\n", name, v);
}

void metrics_gauge(struct metrics_out *o, const char *name, const char *help, unsigned long long v)
{
	metrics_family(o, name, "gauge", help);
	metrics_sample(o, name, NULL, v);
}

/* Server side: connections, calls and the limits clients ran into. */
void metrics_server(struct metrics_out *f, const char *program, const struct server_stats *s,
		    const char *const sockets[])
{
	char name[64], labels[64];
	snprintf(name, sizeof(name), "%s_connections", program);
	metrics_family(f, name, "gauge", "Client connections open now, by socket.");
	for (int i = 0; i < SOCK_KINDS; i++) {
		snprintf(labels, sizeof(labels), "socket=\"%s\"", sockets[i]);
		metrics_sample(f, name, labels, s->connections[i]);
	}
	snprintf(name, sizeof(name), "%s_connections_accepted", program);
	metrics_family(f, name, "counter", "Client connections accepted, by socket.");
	snprintf(name, sizeof(name), "%s_connections_accepted_total", program);
	for (int i = 0; i < SOCK_KINDS; i++) {
		snprintf(labels, sizeof(labels), "socket=\"%s\"", sockets[i]);
		metrics_sample(f, name, labels, s->accepted[i]);
	}
	snprintf(name, sizeof(name), "%s_calls", program);
	metrics_family(f, name, "counter", "Calls received on both sockets.");
	snprintf(name, sizeof(name), "%s_calls_total", program);
	metrics_sample(f, name, NULL, s->calls);
	snprintf(name, sizeof(name), "%s_calls_in_flight", program);
	metrics_family(f, name, "gauge", "Calls not answered yet.");
	metrics_sample(f, name, NULL, s->calls_in_flight);
	snprintf(name, sizeof(name), "%s_limits_hit", program);
	metrics_family(f, name, "counter", "Times a client ran into a limit.");
	snprintf(name, sizeof(name), "%s_limits_hit_total", program);
	metrics_sample(f, name, "limit=\"max_clients\"", s->hit.max_clients);
	metrics_sample(f, name, "limit=\"max_clients_per_uid\"", s->hit.max_clients_per_uid);
	metrics_sample(f, name, "limit=\"max_clients_per_process\"",
		       s->hit.max_clients_per_process);
	metrics_sample(f, name, "limit=\"message_timeout\"", s->hit.message_timeout);
	metrics_sample(f, name, "limit=\"max_output\"", s->hit.max_output);
	metrics_sample(f, name, "limit=\"max_output_total\"", s->hit.max_output_total);
	metrics_sample(f, name, "limit=\"max_message\"", s->hit.max_message);
	metrics_sample(f, name, "limit=\"idle_timeout\"", s->hit.idle_timeout);
	metrics_sample(f, name, "limit=\"max_pending_calls\"", s->hit.max_pending_calls);
	metrics_sample(f, name, "limit=\"slow_reader\"", s->hit.slow_reader);
}

void metrics_build_info(struct metrics_out *f, const char *program, const char *version)
{
	char help[128];
	snprintf(help, sizeof(help), "Versions of %s and the libraries it runs with.", program);
	if (f->fmt == METRICS_OPENMETRICS) {
		fprintf(f->f, "# HELP %s_build %s\n# TYPE %s_build info\n", program, help, program);
	} else {
		char name[64];
		snprintf(name, sizeof(name), "%s_build_info", program);
		snprintf(help, sizeof(help),
			 "Always 1; versions of %s and the libraries it runs with as labels.",
			 program);
		metrics_family(f, name, "gauge", help);
	}
	char mbed[32] = "";
	mbedtls_version_get_string(mbed);
	fprintf(f->f,
		"%s_build_info{version=\"%s\",libevent=\"%s\",sqlite=\"%s\",mbedtls=\"%s\"} 1\n",
		program, version, event_get_version(), sqlite3_libversion(), mbed);
}

/* Seconds since the epoch at which the system booted, from /proc/stat; 0 if unknown. */
static unsigned long long boot_time(void)
{
	FILE *f = fopen("/proc/stat", "re");
	if (!f)
		return 0;
	char line[256];
	unsigned long long bt = 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "btime %llu", &bt) == 1)
			break;
	fclose(f);
	return bt;
}

/* Start time (clock ticks after boot) from /proc/self/stat; -errno on failure. */
static int start_ticks(unsigned long long *ret)
{
	FILE *f = fopen("/proc/self/stat", "re");
	if (!f)
		return -errno;
	char buf[1024];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields count from the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -EINVAL;
	p++;
	/* Field 3 (state) follows; starttime is field 22, 19 fields later. */
	for (int field = 3; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EINVAL;
	}
	return sscanf(p, " %llu", ret) == 1 ? 0 : -EINVAL;
}

/* Open file descriptors: the entries of /proc/self/fd. */
static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	long n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory stream's own descriptor */
}

/* The standard process_* families of the Prometheus client libraries. */
void metrics_process(struct metrics_out *f)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
			     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
		metrics_family(f, "process_cpu_seconds", "counter",
			       "Total user and system CPU time spent in seconds.");
		fprintf(f->f, "process_cpu_seconds_total %.2f\n", cpu);
	}
	long page = sysconf(_SC_PAGESIZE);
	FILE *sm = fopen("/proc/self/statm", "re");
	unsigned long long vsz, rss;
	if (sm && fscanf(sm, "%llu %llu", &vsz, &rss) == 2 && page > 0) {
		metrics_family(f, "process_virtual_memory_bytes", "gauge",
			       "Virtual memory size in bytes.");
		metrics_sample(f, "process_virtual_memory_bytes", NULL,
			       vsz * (unsigned long long)page);
		metrics_family(f, "process_resident_memory_bytes", "gauge",
			       "Resident memory size in bytes.");
		metrics_sample(f, "process_resident_memory_bytes", NULL,
			       rss * (unsigned long long)page);
	}
	if (sm)
		fclose(sm);
	long fds = open_fds();
	if (fds >= 0) {
		metrics_family(f, "process_open_fds", "gauge", "Number of open file descriptors.");
		metrics_sample(f, "process_open_fds", NULL, (unsigned long long)fds);
	}
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		metrics_family(f, "process_max_fds", "gauge",
			       "Maximum number of open file descriptors.");
		metrics_sample(f, "process_max_fds", NULL,
			       rl.rlim_cur == RLIM_INFINITY ? (unsigned long long)INT32_MAX
							    : (unsigned long long)rl.rlim_cur);
	}
	unsigned long long ticks, bt = boot_time();
	long hz = sysconf(_SC_CLK_TCK);
	if (bt && hz > 0 && start_ticks(&ticks) == 0) {
		metrics_family(f, "process_start_time_seconds", "gauge",
			       "Start time of the process since unix epoch in seconds.");
		fprintf(f->f, "process_start_time_seconds %.2f\n",
			(double)bt + (double)ticks / (double)hz);
	}
}

int metrics_format_parse(const char *name, enum metrics_format *ret)
{
	if (strcmp(name, "openmetrics") == 0)
		*ret = METRICS_OPENMETRICS;
	else if (strcmp(name, "prometheus") == 0)
		*ret = METRICS_PROMETHEUS;
	else
		return -EINVAL;
	return 0;
}

const char *metrics_content_type(enum metrics_format fmt)
{
	return fmt == METRICS_OPENMETRICS
		   ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
		   : "text/plain; version=0.0.4; charset=utf-8";
}
