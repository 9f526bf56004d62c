/* SPDX-License-Identifier: MIT */
/*
 * busstat - the operator's view of every channel of a bus.
 *
 * It maps each channel read-only (shmbus_channel_open_ro) and needs
 * nothing else: it works when the daemon is down and for any user allowed
 * to read the files.  A channel it cannot read or validate is shown as
 * such, never skipped silently and never a crash.
 *
 *   busstat [-d DIR] [--json | --prometheus] [INTERVAL [COUNT]]
 *
 * --prometheus writes the text exposition format (for node_exporter's
 * textfile collector): one HELP and TYPE line per metric family, then one
 * sample per channel, labelled channel="NAME".
 *   busstat [-d DIR] -c CHANNEL [--json]
 *   busstat [-d DIR] -w [INTERVAL]      full screen, sorted by lag, q quits
 *
 * Exit codes: 0 all channels healthy; 1 usage; 2 no such bus or channel;
 * 3 a channel could not be read (permission) or is corrupt/incompatible.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <curses.h>

#include "shmbus.h"

#define EXIT_USAGE 1
#define EXIT_NOBUS 2
#define EXIT_BADCH 3
#define MAX_CHANNELS 1024
#define NSUB 64u
#define NPROD 16u

enum format { TABLE, JSON, PROM, WATCH };

/* One channel, one sample. */
struct row {
	char name[256];
	int err;		/* 0, or why it could not be shown */
	struct shmbus_channel_info in;
	uint32_t subs, pubs;
	uint64_t lag_msgs, lag_bytes;	/* slowest subscriber */
	uint64_t lost;			/* sum over subscribers */
	uint64_t fill;			/* bytes not yet read by the slowest */
	double msg_rate, byte_rate;	/* per second */
};

static const char *err_word(int err)
{
	switch (-err) {
	case EACCES:
	case EPERM:
		return "no-permission";
	case EPROTONOSUPPORT:
		return "incompatible";
	case EPROTO:
		return "not-a-channel";
	default:
		return "corrupt";
	}
}

/* K, M, G with one decimal below 10. */
static const char *human(char *buf, size_t len, double v)
{
	static const char units[] = " KMGTP";
	int u = 0;

	while (v >= 1000 && u < 5) {
		v /= 1000;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%.0f", v);
	else
		snprintf(buf, len, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
	return buf;
}

static void sample(const char *dir, struct row *r)
{
	shmbus_channel *ch = shmbus_channel_open_ro(dir, r->name);

	if (!ch) {
		r->err = -errno;
		return;
	}
	shmbus_channel_info(ch, &r->in);
	r->fill = 0;
	for (unsigned i = 0; i < NSUB; i++) {
		struct shmbus_sub_info si;

		if (shmbus_channel_subscriber(ch, i, &si))
			continue;
		r->subs++;
		r->lost += si.lost;
		if (si.lag_msgs > r->lag_msgs)
			r->lag_msgs = si.lag_msgs;
		if (si.lag_bytes > r->lag_bytes)
			r->lag_bytes = si.lag_bytes;
	}
	for (unsigned i = 0; i < NPROD; i++) {
		struct shmbus_prod_info pi;

		r->pubs += shmbus_channel_producer(ch, i, &pi) == 0;
	}
	r->fill = r->lag_bytes > r->in.capacity ? r->in.capacity : r->lag_bytes;
	shmbus_channel_close(ch);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct row *)a)->name,
		      ((const struct row *)b)->name);
}

/* Lists the channels of `dir`; -errno if the bus itself is missing. */
static int list(const char *dir, struct row *rows, int max)
{
	struct dirent *e;
	DIR *d = opendir(dir);
	int n = 0;

	if (!d)
		return -errno;
	while ((e = readdir(d)) && n < max) {
		if (e->d_name[0] == '.' || strlen(e->d_name) >= sizeof(rows->name))
			continue;
		if (e->d_type != DT_REG && e->d_type != DT_UNKNOWN)
			continue;
		memset(&rows[n], 0, sizeof(rows[n]));
		strcpy(rows[n].name, e->d_name);
		n++;
	}
	closedir(d);
	qsort(rows, (size_t)n, sizeof(*rows), by_name);
	return n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void rates(struct row *cur, int n, const struct row *prev, int pn,
		  double dt)
{
	for (int i = 0; i < n; i++) {
		const struct row *p = NULL;
		double age;

		for (int j = 0; j < pn && !p; j++)
			if (!strcmp(prev[j].name, cur[i].name) && !prev[j].err)
				p = &prev[j];
		if (cur[i].err)
			continue;
		if (p && dt > 0 && cur[i].in.published >= p->in.published) {
			cur[i].msg_rate = (cur[i].in.published - p->in.published) / dt;
			cur[i].byte_rate = (cur[i].in.bytes - p->in.bytes) / dt;
		} else if (!prev) {
			/* First sample: the average since creation. */
			age = now_s() - cur[i].in.create_ns / 1e9;
			if (age > 0) {
				cur[i].msg_rate = cur[i].in.published / age;
				cur[i].byte_rate = cur[i].in.bytes / age;
			}
		}
	}
}

static void print_table(const struct row *r, int n, int header)
{
	char a[16], b[16], c[16], d[16], e[16], f[16], g[16], h[16], k[16];

	if (header)
		printf("%-20s %-9s %6s %5s %3s %3s %7s %7s %7s %7s %7s %7s %7s %5s\n",
		       "CHANNEL", "POLICY", "CAP", "FILL", "PUB", "SUB",
		       "MSG/S", "MB/S", "LAGMSG", "LAGB", "LOST", "STALLS",
		       "REPAIRS", "STUCK");
	for (int i = 0; i < n; i++, r++) {
		if (r->err) {
			printf("%-20s %-9s %s\n", r->name, "-",
			       err_word(r->err));
			continue;
		}
		printf("%-20s %-9s %6s %4.0f%% %3u %3u %7s %7s %7s %7s %7s %7s %7s %5s\n",
		       r->name,
		       r->in.policy == SHMBUS_OVERWRITE ? "overwrite" : "block",
		       human(a, sizeof(a), (double)r->in.capacity),
		       100.0 * (double)r->fill / (double)r->in.capacity,
		       r->pubs, r->subs, human(b, sizeof(b), r->msg_rate),
		       human(c, sizeof(c), r->byte_rate / 1e6),
		       human(d, sizeof(d), (double)r->lag_msgs),
		       human(e, sizeof(e), (double)r->lag_bytes),
		       human(f, sizeof(f), (double)r->lost),
		       human(g, sizeof(g), (double)r->in.backpressure),
		       human(h, sizeof(h), (double)r->in.repairs),
		       human(k, sizeof(k), (double)r->in.stuck));
	}
}

/* Channel names are [A-Za-z0-9._-] (the library refuses others), but the
 * directory may hold anything: escape what JSON needs. */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void print_json(const char *dir, const struct row *r, int n)
{
	printf("{\"time\":%.3f,\"dir\":", now_s());
	json_str(dir);
	printf(",\"channels\":[");
	for (int i = 0; i < n; i++, r++) {
		printf(i ? ",{" : "{");
		printf("\"name\":");
		json_str(r->name);
		if (r->err) {
			printf(",\"status\":\"%s\"}", err_word(r->err));
			continue;
		}
		printf(",\"status\":\"ok\",\"policy\":\"%s\",\"producers_mode\":\"%s\","
		       "\"capacity\":%llu,\"max_msg\":%u,\"fill_bytes\":%llu,"
		       "\"publishers\":%u,\"subscribers\":%u,\"head\":%llu,"
		       "\"messages_published\":%llu,\"bytes_published\":%llu,"
		       "\"messages_per_second\":%.1f,\"bytes_per_second\":%.1f,"
		       "\"max_lag_messages\":%llu,\"max_lag_bytes\":%llu,"
		       "\"messages_lost\":%llu,\"backpressure_events\":%llu,"
		       "\"wakeups\":%llu,\"aborts\":%llu,\"repairs\":%llu,"
		       "\"slots_reaped\":%llu,\"stuck\":%llu}",
		       r->in.policy == SHMBUS_OVERWRITE ? "overwrite" : "block",
		       r->in.producers == SHMBUS_MULTI_PRODUCER ? "multi" : "single",
		       (unsigned long long)r->in.capacity, r->in.max_msg,
		       (unsigned long long)r->fill, r->pubs, r->subs,
		       (unsigned long long)r->in.head,
		       (unsigned long long)r->in.published,
		       (unsigned long long)r->in.bytes, r->msg_rate, r->byte_rate,
		       (unsigned long long)r->lag_msgs,
		       (unsigned long long)r->lag_bytes,
		       (unsigned long long)r->lost,
		       (unsigned long long)r->in.backpressure,
		       (unsigned long long)r->in.wakeups,
		       (unsigned long long)r->in.aborts,
		       (unsigned long long)r->in.repairs,
		       (unsigned long long)r->in.reaped,
		       (unsigned long long)r->in.stuck);
	}
	printf("]}\n");
}

/* Label values escape backslash, double quote and newline. */
static void prom_label(const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			printf("\\%c", *s);
		else if (*s == '\n')
			printf("\\n");
		else
			putchar(*s);
	}
}

struct prom_metric {
	const char *name, *type, *help;
	size_t off;		/* of a uint64_t, or (size_t)-1 for special */
	int special;
};

#define IN(f) offsetof(struct row, in) + offsetof(struct shmbus_channel_info, f)
#define RW(f) offsetof(struct row, f)

static const struct prom_metric prom_metrics[] = {
	{ "shmbus_messages_published_total", "counter",
	  "Messages published on the channel.", IN(published), 0 },
	{ "shmbus_bytes_published_total", "counter",
	  "Payload bytes published on the channel.", IN(bytes), 0 },
	{ "shmbus_messages_lost_total", "counter",
	  "Messages lost by lapped subscribers (overwrite policy), summed.",
	  RW(lost), 0 },
	{ "shmbus_backpressure_events_total", "counter",
	  "Claims refused or delayed because a reader was behind.",
	  IN(backpressure), 0 },
	{ "shmbus_wakeups_total", "counter",
	  "Futex wake calls made by producers.", IN(wakeups), 0 },
	{ "shmbus_aborts_total", "counter", "Claims aborted by producers.",
	  IN(aborts), 0 },
	{ "shmbus_repairs_total", "counter",
	  "Claims of dead producers repaired.", IN(repairs), 0 },
	{ "shmbus_slots_reaped_total", "counter",
	  "Slots of dead processes released by shmbusd.", IN(reaped), 0 },
	{ "shmbus_stuck_total", "counter",
	  "Times shmbusd found subscribers waiting on a position that no live "
	  "producer covers.", IN(stuck), 0 },
	{ "shmbus_capacity_bytes", "gauge", "Data capacity of the channel.",
	  IN(capacity), 0 },
	{ "shmbus_fill_bytes", "gauge",
	  "Bytes the slowest subscriber has not read yet.", RW(fill), 0 },
	{ "shmbus_max_lag_messages", "gauge",
	  "Messages the slowest subscriber has not read yet.", RW(lag_msgs), 0 },
	{ "shmbus_max_lag_bytes", "gauge",
	  "Bytes between head and the slowest subscriber.", RW(lag_bytes), 0 },
	{ "shmbus_subscribers", "gauge", "Active subscribers.", 0, 1 },
	{ "shmbus_publishers", "gauge", "Active publishers.", 0, 2 },
	{ "shmbus_channel_up", "gauge",
	  "1 if the channel could be read and validated, else 0.", 0, 3 },
};

static void print_prom(const struct row *rows, int n)
{
	for (size_t m = 0; m < sizeof(prom_metrics) / sizeof(prom_metrics[0]);
	     m++) {
		const struct prom_metric *pm = &prom_metrics[m];

		printf("# HELP %s %s\n# TYPE %s %s\n", pm->name, pm->help,
		       pm->name, pm->type);
		for (int i = 0; i < n; i++) {
			const struct row *r = &rows[i];
			unsigned long long v;

			if (r->err && pm->special != 3)
				continue;
			switch (pm->special) {
			case 1: v = r->subs; break;
			case 2: v = r->pubs; break;
			case 3: v = !r->err; break;
			default:
				memcpy(&v, (const char *)r + pm->off, sizeof(v));
			}
			printf("%s{channel=\"", pm->name);
			prom_label(r->name);
			printf("\"} %llu\n", v);
		}
	}
}

static const char *wait_word(enum shmbus_wait w)
{
	return w == SHMBUS_WAIT_SLEEP ? "sleep" : w == SHMBUS_WAIT_YIELD ? "yield"
									: "spin";
}

static int by_lag(const void *a, const void *b)
{
	const struct row *x = a, *y = b;

	if (x->err != y->err)		/* broken channels first */
		return x->err ? -1 : 1;
	if (x->lag_bytes != y->lag_bytes)
		return x->lag_bytes > y->lag_bytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

/*
 * busstat -w: a full-screen view refreshed every interval, sorted by lag,
 * the worst channel (and any broken one) highlighted; q quits.
 */
static int watch(const char *dir, double interval)
{
	static struct row rows[2][MAX_CHANNELS];
	int n_prev = 0, k = 0, status = 0;
	double t_prev = 0;

	if (!initscr())
		return EXIT_USAGE;
	cbreak();
	noecho();
	curs_set(0);
	timeout((int)(interval * 1000));
	for (;; k++) {
		struct row *cur = rows[k % 2], *prev = rows[(k + 1) % 2];
		int n = list(dir, cur, MAX_CHANNELS), ch;
		double t = now_s();
		char a[16], b[16], c[16], d[16];

		if (n < 0) {
			endwin();
			fprintf(stderr, "busstat: %s: %s\n", dir, strerror(-n));
			return EXIT_NOBUS;
		}
		for (int i = 0; i < n; i++)
			sample(dir, &cur[i]);
		rates(cur, n, k ? prev : NULL, k ? n_prev : 0, t - t_prev);
		qsort(cur, (size_t)n, sizeof(*cur), by_lag);
		erase();
		mvprintw(0, 0, "busstat %s  %d channels  (sorted by lag; q quits)",
			 dir, n);
		attron(A_REVERSE);
		mvprintw(2, 0, "%-20s %-9s %6s %3s %3s %8s %8s %8s %8s", "CHANNEL",
			 "POLICY", "CAP", "PUB", "SUB", "MSG/S", "LAGMSG", "LAGB",
			 "LOST");
		attroff(A_REVERSE);
		status = 0;
		for (int i = 0; i < n && i + 3 < LINES; i++) {
			const struct row *r = &cur[i];
			int hot = r->err || (i == 0 && r->lag_bytes > 0);

			if (hot)
				attron(A_BOLD | A_STANDOUT);
			if (r->err) {
				status = EXIT_BADCH;
				mvprintw(3 + i, 0, "%-20s %s", r->name,
					 err_word(r->err));
			} else {
				mvprintw(3 + i, 0,
					 "%-20s %-9s %6s %3u %3u %8s %8s %8s %8llu",
					 r->name,
					 r->in.policy == SHMBUS_OVERWRITE ? "overwrite"
									  : "block",
					 human(a, sizeof(a), (double)r->in.capacity),
					 r->pubs, r->subs,
					 human(b, sizeof(b), r->msg_rate),
					 human(c, sizeof(c), (double)r->lag_msgs),
					 human(d, sizeof(d), (double)r->lag_bytes),
					 (unsigned long long)r->lost);
			}
			if (hot)
				attroff(A_BOLD | A_STANDOUT);
		}
		refresh();
		/* rates() matches by name, so the sort does not matter. */
		n_prev = n;
		t_prev = t;
		ch = getch();
		if (ch == 'q' || ch == 'Q')
			break;
	}
	endwin();
	return status;
}

/* busstat -c CHANNEL: every subscriber and producer. */
static int detail(const char *dir, const char *name, enum format fmt)
{
	shmbus_channel *ch = shmbus_channel_open_ro(dir, name);
	struct shmbus_channel_info in;
	int first = 1;

	if (!ch) {
		int err = errno;

		fprintf(stderr, "busstat: %s/%s: %s\n", dir, name,
			shmbus_strerror(err));
		return err == ENOENT ? EXIT_NOBUS : EXIT_BADCH;
	}
	shmbus_channel_info(ch, &in);
	if (fmt == JSON) {
		printf("{\"name\":");
		json_str(name);
		printf(",\"head\":%llu,\"messages_published\":%llu,\"subscribers\":[",
		       (unsigned long long)in.head,
		       (unsigned long long)in.published);
	} else {
		printf("channel %s: head %llu, %llu messages published\n", name,
		       (unsigned long long)in.head,
		       (unsigned long long)in.published);
		printf("%-5s %-8s %-16s %-6s %12s %10s %10s %10s %10s %-5s\n",
		       "SLOT", "PID", "NAME", "STATE", "POSITION", "LAGMSG",
		       "LAGB", "DELIVERED", "LOST", "WAIT");
	}
	for (unsigned i = 0; i < NSUB; i++) {
		struct shmbus_sub_info si;

		if (shmbus_channel_subscriber(ch, i, &si))
			continue;
		if (fmt == JSON) {
			printf("%s{\"slot\":%u,\"pid\":%d,\"process\":", first ? "" : ",",
			       i, (int)si.pid);
			json_str(si.comm);
			printf(",\"alive\":%s,\"position\":%llu,\"lag_messages\":%llu,"
			       "\"lag_bytes\":%llu,\"delivered\":%llu,\"lost\":%llu,"
			       "\"wait\":\"%s\",\"sleeping\":%s}",
			       si.alive ? "true" : "false",
			       (unsigned long long)si.pos,
			       (unsigned long long)si.lag_msgs,
			       (unsigned long long)si.lag_bytes,
			       (unsigned long long)si.delivered,
			       (unsigned long long)si.lost, wait_word(si.wait),
			       si.sleeping ? "true" : "false");
		} else {
			printf("%-5u %-8d %-16s %-6s %12llu %10llu %10llu %10llu %10llu %-5s\n",
			       i, (int)si.pid, si.comm, si.alive ? "alive" : "dead",
			       (unsigned long long)si.pos,
			       (unsigned long long)si.lag_msgs,
			       (unsigned long long)si.lag_bytes,
			       (unsigned long long)si.delivered,
			       (unsigned long long)si.lost, wait_word(si.wait));
		}
		first = 0;
	}
	first = 1;
	if (fmt == JSON)
		printf("],\"producers\":[");
	else
		printf("%-5s %-8s %-16s %-6s %12s\n", "PSLOT", "PID", "NAME",
		       "STATE", "PUBLISHED");
	for (unsigned i = 0; i < NPROD; i++) {
		struct shmbus_prod_info pi;

		if (shmbus_channel_producer(ch, i, &pi))
			continue;
		if (fmt == JSON) {
			printf("%s{\"slot\":%u,\"pid\":%d,\"process\":", first ? "" : ",",
			       i, (int)pi.pid);
			json_str(pi.comm);
			printf(",\"alive\":%s,\"published\":%llu}",
			       pi.alive ? "true" : "false",
			       (unsigned long long)pi.published);
		} else {
			printf("%-5u %-8d %-16s %-6s %12llu\n", i, (int)pi.pid,
			       pi.comm, pi.alive ? "alive" : "dead",
			       (unsigned long long)pi.published);
		}
		first = 0;
	}
	if (fmt == JSON)
		printf("]}\n");
	shmbus_channel_close(ch);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: busstat [-d DIR] [--json|--prometheus] [INTERVAL [COUNT]]\n"
		   "       busstat [-d DIR] -w [INTERVAL]\n"
		   "       busstat [-d DIR] -c CHANNEL [--json]\n"
		   "DIR defaults to $SHMBUS_DIR, then /dev/shm.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "channel", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "prometheus", no_argument, NULL, 'p' },
		{ "watch", no_argument, NULL, 'w' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static struct row rows[2][MAX_CHANNELS];
	const char *dir = getenv("SHMBUS_DIR"), *chan = NULL;
	enum format fmt = TABLE;
	double interval = 0, t_prev = 0;
	long count = 1;
	int opt, n_prev = 0, status = 0;

	if (!dir || !*dir)
		dir = "/dev/shm";
	while ((opt = getopt_long(argc, argv, "d:c:jpwh", opts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'c': chan = optarg; break;
		case 'j': fmt = JSON; break;
		case 'p': fmt = PROM; break;
		case 'w': fmt = WATCH; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind < argc) {
		char *end;

		interval = strtod(argv[optind++], &end);
		if (*end || interval <= 0) {
			usage(stderr);
			return EXIT_USAGE;
		}
		count = -1;
	}
	if (optind < argc) {
		char *end;

		count = strtol(argv[optind++], &end, 10);
		if (*end || count <= 0 || optind < argc) {
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (chan)
		return detail(dir, chan, fmt);
	if (fmt == WATCH)
		return watch(dir, interval > 0 ? interval : 1.0);

	for (long k = 0; count < 0 || k < count; k++) {
		struct row *cur = rows[k % 2], *prev = rows[(k + 1) % 2];
		int n = list(dir, cur, MAX_CHANNELS);
		double t = now_s();

		if (n < 0) {
			fprintf(stderr, "busstat: %s: %s\n", dir, strerror(-n));
			return EXIT_NOBUS;
		}
		for (int i = 0; i < n; i++)
			sample(dir, &cur[i]);
		rates(cur, n, k ? prev : NULL, k ? n_prev : 0, t - t_prev);
		status = 0;
		for (int i = 0; i < n; i++)
			if (cur[i].err)
				status = EXIT_BADCH;
		if (fmt == JSON)
			print_json(dir, cur, n);
		else if (fmt == PROM)
			print_prom(cur, n);
		else
			print_table(cur, n, k % 20 == 0);
		fflush(stdout);
		n_prev = n;
		t_prev = t;
		if (count < 0 || k + 1 < count)
			usleep((useconds_t)(interval * 1e6));
	}
	return status;
}
