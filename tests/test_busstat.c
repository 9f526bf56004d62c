/* SPDX-License-Identifier: MIT */
/*
 * test_busstat.c - the busstat binary against channels with known counts:
 * the figures it reports are exactly those, a corrupt channel beside
 * healthy ones is flagged with its own exit code, other programs' files
 * are skipped, a missing bus or channel is reported, and a bus name finds
 * its directory; consumer groups (members alive and dead, leases in
 * flight, floor, lag) in every output, and a corrupt group file flagged.
 * $BUSSTAT names the binary (set by make test).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

static const char *dir;

static void setup(void)
{
	dir = th_mkdir();
}

static void teardown(void)
{
	th_rmdir(dir);
}

/* Runs busstat with `args`; returns its exit code, output in out. */
static int busstat(char *out, size_t len, const char *fmt, ...)
{
	const char *bin = getenv("BUSSTAT") ? getenv("BUSSTAT")
					    : "build/tools/busstat";
	char args[512], cmd[1024];
	va_list ap;
	size_t n;
	FILE *p;
	int st;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	/* A busstat that hangs is killed, and fails the test. */
	snprintf(cmd, sizeof(cmd), "timeout -s KILL 30 %s %s 2>&1", bin, args);
	p = popen(cmd, "r");
	cr_assert(p, "popen: %s", strerror(errno));
	n = fread(out, 1, len - 1, p);
	out[n] = 0;
	st = pclose(p);
	cr_assert(WIFEXITED(st), "busstat died: %s", cmd);
	cr_assert(WEXITSTATUS(st) < 124, "busstat hung or was killed (%d): %s",
		  WEXITSTATUS(st), cmd);
	return WEXITSTATUS(st);
}

/* The number after "key": in a JSON text, starting at `from`. */
static long long json_num(const char *js, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	cr_assert(p, "no %s in %s", key, js);
	return strtoll(p + strlen(pat), NULL, 10);
}

Test(busstat, reports_exact_counts_and_lag, .init = setup, .fini = teardown)
{
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	shmbus_sub *s = shmbus_sub_open(ch, NULL);
	static char out[65536];
	char buf[16];

	for (int i = 0; i < 100; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789", 10), 0);
	for (int i = 0; i < 30; i++)
		cr_assert_eq(shmbus_read(s, buf, sizeof(buf), NULL), 10);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0, "%s", out);
	cr_assert_eq(json_num(out, "messages_published"), 100);
	cr_assert_eq(json_num(out, "bytes_published"), 1000);
	cr_assert_eq(json_num(out, "subscribers"), 1);
	cr_assert_eq(json_num(out, "publishers"), 1);
	cr_assert_eq(json_num(out, "max_lag_messages"), 70);
	cr_assert_eq(json_num(out, "max_lag_bytes"), 70 * 32);
	cr_assert_eq(json_num(out, "messages_lost"), 0);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	cr_assert_eq(json_num(out, "delivered"), 30);
	cr_assert_eq(json_num(out, "lag_messages"), 70);
	cr_assert_eq(json_num(out, "pid"), getpid());
	cr_assert(strstr(out, "\"alive\":true"));

	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 0);
	cr_assert(strstr(out, "alive"), "%s", out);
	/* With an interval and a count: that many samples. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch 0.05 3", dir), 0);
	{
		int n = 0;

		for (const char *q = out; (q = strstr(q, "channel ch:")); q++)
			n++;
		cr_assert_eq(n, 3, "%d samples: %s", n, out);
	}
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0);
	cr_assert(strstr(out, "CHANNEL") && strstr(out, "block"), "%s", out);

	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

/* A subscriber that has read nothing yet lags by what lies between its
 * start and head: nothing at the newest message, all of it at the
 * oldest. */
Test(busstat, a_new_subscribers_lag_counts_from_its_start, .init = setup,
     .fini = teardown)
{
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	struct shmbus_sub_attr sa;
	struct shmbus_sub_info in;
	shmbus_sub *holder = shmbus_sub_open(ch, NULL), *newest, *oldest;
	uint64_t lags[3];
	unsigned n = 0;

	/* The holder keeps the 100 in the ring for the oldest start. */
	for (int i = 0; i < 100; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789", 10), 0);
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_NEWEST;
	newest = shmbus_sub_open(ch, &sa);
	sa.start = SHMBUS_START_OLDEST;
	oldest = shmbus_sub_open(ch, &sa);
	cr_assert(newest && oldest);
	for (unsigned i = 0; i < SHMBUS_MAX_SUBSCRIBERS && n < 3; i++)
		if (shmbus_channel_subscriber(ch, i, &in) == 0)
			lags[n++] = in.lag_msgs;
	cr_assert_eq(n, 3);
	cr_assert_eq(lags[0], 100);
	cr_assert_eq(lags[1], 0, "at the newest message: lag %lu",
		     (unsigned long)lags[1]);
	cr_assert_eq(lags[2], 100, "at the oldest: lag %lu",
		     (unsigned long)lags[2]);
	shmbus_sub_close(oldest);
	shmbus_sub_close(newest);
	shmbus_sub_close(holder);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

static int subscribe_and_exit(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");

	return ch && shmbus_sub_open(ch, NULL) ? 0 : 2;
}

/* A subscriber's process that exited and is not yet reaped (a zombie) is
 * not alive: its slot will be released, as busstat should say. */
Test(busstat, a_zombies_slot_is_not_alive, .init = setup, .fini = teardown)
{
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_sub_info in;
	pid_t pid = th_spawn(subscribe_and_exit, (void *)dir);
	siginfo_t si;
	bool seen = false;

	/* Exited, not reaped. */
	cr_assert_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	for (unsigned i = 0; i < SHMBUS_MAX_SUBSCRIBERS; i++)
		if (shmbus_channel_subscriber(ch, i, &in) == 0 &&
		    in.pid == pid) {
			cr_assert_eq(in.alive, 0, "a zombie shown alive");
			seen = true;
		}
	cr_assert(seen);
	/* Nor counted among the subscribers, though its slot is taken. */
	{
		char out[8192];

		busstat(out, sizeof(out), "-d %s --json", dir);
		cr_assert_eq(json_num(out, "subscribers"), 0, "%s", out);
	}
	cr_assert_eq(th_wait(pid), 0);
	shmbus_channel_close(ch);
}

Test(busstat, corrupt_channel_is_flagged, .init = setup, .fini = teardown)
{
	static char out[65536];
	struct shmbus_channel_attr a;
	shmbus_channel *good, *bad;
	uint8_t *raw;
	size_t len;
	char path[128];
	FILE *f;

	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	a.max_msg = 256;
	good = shmbus_channel_create(dir, "good", &a, 0);
	bad = th_create(dir, 8192, 256, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	cr_assert(good && bad);
	raw = th_map_channel(dir, &len);	/* "ch" */
	cr_assert(raw);
	memset(raw + 8, 0xee, 64);		/* version, sizes... */
	snprintf(path, sizeof(path), "%s/junk", dir);
	f = fopen(path, "w");
	fputs("not a channel\n", f);
	fclose(f);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 3, "%s", out);
	cr_assert(strstr(out, "good") && strstr(out, "block"), "%s", out);
	cr_assert(strstr(out, "incompatible") || strstr(out, "corrupt"), "%s", out);
	cr_assert(!strstr(out, "junk"), "a foreign file shown:\n%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 3);
	cr_assert(strstr(out, "\"name\":\"good\",\"status\":\"ok\""), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 3);
	/* -c --json: an object that says so, as in the channels' array. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 3);
	cr_assert(strstr(out, "{\"time\":") &&
		  strstr(out, ",\"name\":\"ch\",\"status\":\"incompatible\"}\n"),
		  "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c good --json", dir),
		     0);
	cr_assert(strstr(out, ",\"name\":\"good\",\"status\":\"ok\","),
		  "%s", out);
	munmap(raw, len);
	shmbus_channel_close(good);
	shmbus_channel_close(bad);
}

Test(busstat, missing_bus_and_channel, .init = setup, .fini = teardown)
{
	static char out[4096];

	/* 1: a failure; 2: usage (as shmbusctl and shmbusd). */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s/nope", dir), 1, "%s", out);
	cr_assert(strstr(out, "No such file"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c nope", dir), 1);
	/* A name no channel can have: no such channel, not a damaged one. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ../../etc/passwd",
			     dir), 1);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ''", dir), 1);
	/* Watch mode takes an interval, no count. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -w 0.5 3", dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s bogus", dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s 1 2 3", dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "--frobnicate"), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0);
	cr_assert_eq(busstat(out, sizeof(out), "--version"), 0);
	cr_assert(strstr(out, "busstat (shmbus) 0."), "%s", out);
}

/*
 * A checker for the Prometheus text exposition format (version 0.0.4):
 *   # HELP <metric_name> <text>
 *   # TYPE <metric_name> counter|gauge|histogram|summary|untyped
 *   <metric_name>[{<label_name>="<escaped value>",...}] <value> [<timestamp>]
 * metric_name [a-zA-Z_:][a-zA-Z0-9_:]*, label_name [a-zA-Z_][a-zA-Z0-9_]*,
 * label values escape \\ \" \n; a family's TYPE comes before its samples,
 * at most once, and a family's samples are not interleaved with another's.
 * Returns 0 or the number of the first bad line.
 */
#include <regex.h>

#define NAME "[a-zA-Z_:][a-zA-Z0-9_:]*"
#define LABEL "[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\\n]|\\\\[\\\\\"n])*\""
#define VALUE "[-+]?(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?|NaN|Inf)"

static int prom_check(const char *text)
{
	regex_t help, type, sample;
	char typed[64][128], last[128] = "", line[1024];
	int ntyped = 0, lineno = 0, bad = 0;
	const char *p = text;

	cr_assert_eq(regcomp(&help, "^# HELP (" NAME ") .*$", REG_EXTENDED), 0);
	cr_assert_eq(regcomp(&type, "^# TYPE (" NAME ") (counter|gauge|histogram|"
				    "summary|untyped)$", REG_EXTENDED), 0);
	cr_assert_eq(regcomp(&sample, "^(" NAME ")(\\{(" LABEL "(," LABEL ")*,?)?\\})? "
				      VALUE "( -?[0-9]+)?$", REG_EXTENDED), 0);
	while (*p && !bad) {
		size_t n = strcspn(p, "\n");
		regmatch_t m[2];
		char name[128];

		cr_assert_lt(n, sizeof(line));
		memcpy(line, p, n);
		line[n] = 0;
		p += n + (p[n] == '\n');
		lineno++;
		if (!*line)
			continue;
		if (!regexec(&type, line, 2, m, 0)) {
			snprintf(name, sizeof(name), "%.*s",
				 (int)(m[1].rm_eo - m[1].rm_so), line + m[1].rm_so);
			for (int i = 0; i < ntyped; i++)
				if (!strcmp(typed[i], name))
					bad = lineno;	/* TYPE twice */
			if (ntyped < 64)
				strcpy(typed[ntyped++], name);
			continue;
		}
		if (!regexec(&help, line, 2, m, 0) || !strncmp(line, "# ", 2)) {
			if (!strncmp(line, "# TYPE", 6))
				bad = lineno;	/* a malformed TYPE line */
			continue;
		}
		if (regexec(&sample, line, 2, m, 0)) {
			bad = lineno;
			continue;
		}
		snprintf(name, sizeof(name), "%.*s",
			 (int)(m[1].rm_eo - m[1].rm_so), line + m[1].rm_so);
		/* Its family must be typed, and be the family being listed. */
		if (ntyped == 0 || strcmp(typed[ntyped - 1], name))
			bad = lineno;
		if (*last && strcmp(last, name) && strcmp(typed[ntyped - 1], name))
			bad = lineno;
		strcpy(last, name);
	}
	regfree(&help);
	regfree(&type);
	regfree(&sample);
	return bad;
}

Test(busstat, prometheus_checker_rejects_bad_lines)
{
	static const char *bad[] = {
		"x_total{channel=\"a\"} 1\n",			/* untyped */
		"# TYPE x gauge\nx{channel=\"a} 1\n",		/* open quote */
		"# TYPE x gauge\nx{1channel=\"a\"} 1\n",	/* label name */
		"# TYPE x gauge\nx 1 2 3\n",			/* junk */
		"# TYPE x gauge\nx{channel=\"a\"} one\n",	/* value */
		"# TYPE x gauge\n# TYPE x gauge\nx 1\n",	/* TYPE twice */
		"# TYPE x gauge\n# TYPE y gauge\nx 1\n",	/* interleaved */
		"# TYPE x wibble\nx 1\n",			/* type word */
		"# TYPE 9x gauge\n9x 1\n",			/* metric name */
	};

	cr_assert_eq(prom_check("# HELP x a gauge\n# TYPE x gauge\n"
				"x{channel=\"a\\\"b\"} 1.5e3\nx 2\n"), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert_neq(prom_check(bad[i]), 0, "accepted: %s", bad[i]);
}

Test(busstat, prometheus_output_parses, .init = setup, .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 8192, 256, SHMBUS_OVERWRITE,
				       SHMBUS_MULTI_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	char path[128];
	FILE *f;
	int line;

	for (int i = 0; i < 7; i++)
		cr_assert_eq(shmbus_publish(p, "abc", 3), 0);
	snprintf(path, sizeof(path), "%s/junk", dir);
	f = fopen(path, "w");
	fputs("not a channel\n", f);
	fclose(f);
	/* A file that is not a channel is no fault: nothing would page. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir), 0);
	line = prom_check(out);
	cr_assert_eq(line, 0, "line %d does not parse:\n%s", line, out);
	cr_assert(strstr(out, "shmbus_messages_published_total{channel=\"ch\"} 7\n"));
	cr_assert(!strstr(out, "junk"), "%s", out);
	cr_assert(strstr(out, "shmbus_channel_up{channel=\"ch\"} 1\n"));
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

/* With an interval, each sample is one whole exposition, one after the
 * other (busstat.1: a textfile collector's file takes one sample). */
Test(busstat, prometheus_samples_are_whole_expositions, .init = setup,
     .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 8192, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	const char *first = "# HELP shmbus_messages_published_total ";
	char *second;

	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus 0.05 2",
			     dir), 0, "%s", out);
	cr_assert(!strncmp(out, first, strlen(first)), "%s", out);
	second = strstr(out + 1, first);
	cr_assert(second, "one sample: %s", out);
	cr_assert_null(strstr(second + 1, first), "three samples: %s", out);
	cr_assert_eq(prom_check(second), 0, "%s", second);
	*second = 0;
	cr_assert_eq(prom_check(out), 0, "%s", out);
	shmbus_channel_close(ch);
}

/* A publisher at a steady 2000 msg/s, paced against the clock. */
static int steady_publisher(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t t0 = th_now_ns();

	if (!p)
		return 2;
	for (uint64_t i = 0; i < 2000 * 3; i++) {
		while (th_now_ns() < t0 + i * 500000)	/* 2000 per second */
			usleep(100);
		if (shmbus_publish(p, "tick", 4))
			return 3;
	}
	return 0;
}

/* The second sample of "busstat 1 2" is a rate over one second: within
 * 10% of what the publisher offers (a loose check, not a timing test). */
Test(busstat, interval_rate_matches_steady_publisher, .init = setup,
     .fini = teardown, .timeout = 60)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 1u << 20, 64, SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	pid_t pid = th_spawn(steady_publisher, (void *)dir);
	const char *second;
	double rate;

	usleep(500000);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json 1 2", dir), 0);
	second = strchr(out, '\n');
	cr_assert(second && second[1], "two samples: %s", out);
	rate = strtod(strstr(second, "\"messages_per_second\":") + 22, NULL);
	cr_expect(rate > 1800 && rate < 2200, "rate %.0f, offered 2000", rate);
	cr_assert_eq(th_wait(pid), 0);
	shmbus_channel_close(ch);
}

/* Runs a shell command, returns its exit code. */
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* An interval of more than 2^32 microseconds is waited whole (it wrapped
 * to a fraction of a second): the second sample is not there after 1 s. */
Test(busstat, a_long_interval_is_waited_whole, .init = setup, .fini = teardown)
{
	const char *bin = getenv("BUSSTAT") ? getenv("BUSSTAT")
					    : "build/tools/busstat";
	shmbus_channel *ch = th_create(dir, 1u << 16, 64, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);

	cr_assert_eq(sh("(timeout -s KILL 1 %s -d %s 4295 2 >/dev/null) "
			"2>/dev/null", bin, dir), 128 + SIGKILL, "busstat "
		     "took both samples 4295 s apart within a second");
	cr_assert_eq(sh("(timeout -s KILL 1 %s -d %s -c ch 4294.967296 2 "
			">/dev/null) 2>/dev/null", bin, dir), 128 + SIGKILL);
	shmbus_channel_close(ch);
}

/* The socket file a private tmux server (-L name) leaves behind. */
static void rm_tmux_socket(const char *name)
{
	sh("rm -f \"${TMUX_TMPDIR:-/tmp}/tmux-$(id -u)/%s\"", name);
}

/* busstat -w under tmux: the screen shows the header and the channels, the
 * lagging one first; q quits.  tmux runs as a private server (-L), never
 * the user's own. */
Test(busstat, watch_view_under_tmux, .init = setup, .fini = teardown,
     .timeout = 60)
{
	const char *bin = getenv("BUSSTAT") ? getenv("BUSSTAT")
					    : "build/tools/busstat";
	shmbus_channel *slow = th_create(dir, 1u << 16, 64, SHMBUS_BLOCK,
					 SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(slow, NULL);
	shmbus_sub *s = shmbus_sub_open(slow, NULL);
	struct shmbus_channel_attr a;
	shmbus_channel *idle;
	char sess[64], pane[8192] = "", cmd[256];
	int gone = 0;
	FILE *f;

	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	a.max_msg = 64;
	idle = shmbus_channel_create(dir, "aaa-idle", &a, 0);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(shmbus_publish(p, "lagging", 7), 0);
	snprintf(sess, sizeof(sess), "busstat-test-%d", (int)getpid());
	cr_assert_eq(sh("tmux -L %s new-session -d -s %s -x 120 -y 30 '%s -d %s -w 0.2'",
			sess, sess, bin, dir), 0, "tmux (is it installed?)");
	for (int i = 0; i < 50 && !strstr(pane, "ch "); i++) {
		usleep(100000);
		snprintf(cmd, sizeof(cmd), "tmux -L %s capture-pane -p -t %s", sess,
			 sess);
		f = popen(cmd, "r");
		cr_assert(f);
		pane[fread(pane, 1, sizeof(pane) - 1, f)] = 0;
		pclose(f);
	}
	cr_expect(strstr(pane, "CHANNEL") && strstr(pane, "LAGMSG"),
		  "no header:\n%s", pane);
	cr_expect(strstr(pane, "ch ") && strstr(pane, "aaa-idle"), "rows:\n%s", pane);
	/* Sorted by lag: the lagging channel comes before the idle one. */
	cr_expect(strstr(pane, "ch ") < strstr(pane, "aaa-idle"), "order:\n%s", pane);
	cr_assert_eq(sh("tmux -L %s send-keys -t %s q", sess, sess), 0);
	for (int i = 0; i < 50 && !gone; i++) {
		usleep(100000);
		gone = sh("tmux -L %s has-session -t %s 2>/dev/null", sess,
			  sess) != 0;
	}
	if (!gone)
		sh("tmux -L %s kill-server", sess);
	rm_tmux_socket(sess);
	cr_expect(gone, "q did not quit busstat -w");
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(slow);
	shmbus_channel_close(idle);
}

/* An unprivileged operator: reads what it may, is told what it may not. */
Test(busstat, unprivileged_operator, .init = setup, .fini = teardown)
{
	const char *bin = getenv("BUSSTAT") ? getenv("BUSSTAT")
					    : "build/tools/busstat";
	struct shmbus_channel_attr a;
	shmbus_channel *pub, *secret;
	char out[4096], path[256];
	FILE *f;
	size_t n;
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root to run busstat as another user");
	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	a.max_msg = 64;
	a.mode = 0644;
	pub = shmbus_channel_create(dir, "public", &a, 0);
	a.mode = 0600;
	secret = shmbus_channel_create(dir, "secret", &a, 0);
	cr_assert(pub && secret);
	cr_assert_eq(chmod(dir, 0755), 0);
	/* Run a copy from our directory: the build tree may not be
	 * reachable by that user. */
	cr_assert_eq(sh("cp %s %s/.busstat", bin, dir), 0);
	snprintf(path, sizeof(path), "%s/.out", dir);
	rc = sh("setpriv --reuid=65534 --regid=65534 --clear-groups "
		"%s/.busstat -d %s > %s 2>&1", dir, dir, path);
	f = fopen(path, "r");
	cr_assert(f);
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = 0;
	fclose(f);
	cr_expect_eq(rc, 3, "exit %d:\n%s", rc, out);
	cr_expect(strstr(out, "public") && strstr(out, "block"), "%s", out);
	cr_expect(strstr(out, "secret") && strstr(out, "no-permission"), "%s", out);
	shmbus_channel_close(pub);
	shmbus_channel_close(secret);
}

/* Writes `text` to dir/name with mode `mode`. */
static void put_file(const char *d, const char *name, const char *text,
		     mode_t mode)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", d, name);
	f = fopen(path, "w");
	cr_assert(f, "%s: %s", path, strerror(errno));
	fputs(text, f);
	fclose(f);
	cr_assert_eq(chmod(path, mode), 0);
}

/* /dev/shm holds other programs' files: PulseAudio's, POSIX semaphores,
 * anything.  busstat skips them (no fault, no metric), and still reports
 * a damaged channel, even one damaged where the magic is. */
Test(busstat, foreign_files_are_skipped_damaged_channels_reported,
     .init = setup, .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ok = th_create(dir, 8192, 64, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_channel_attr a;
	shmbus_channel *dead;
	char path[256];
	FILE *f;

	put_file(dir, "pulse-shm-1234567", "PulseAudio memblock\n", 0600);
	put_file(dir, "sem.mysem", "\x01\x00\x00\x00", 0600);
	put_file(dir, "unreadable", "someone else's\n", 0000);
	/* A channel whose control file lost its first bytes: not a foreign
	 * file, since its data file is beside it. */
	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	dead = shmbus_channel_create(dir, "zapped", &a, 0);
	cr_assert(dead);
	snprintf(path, sizeof(path), "%s/zapped", dir);
	f = fopen(path, "r+");
	cr_assert(f);
	fwrite("\0\0\0\0\0\0\0\0", 1, 8, f);
	fclose(f);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 3, "%s", out);
	cr_assert(strstr(out, "ch ") && strstr(out, "zapped"), "%s", out);
	cr_assert(!strstr(out, "pulse") && !strstr(out, "sem.") &&
		  !strstr(out, "unreadable"), "foreign files shown:\n%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir), 3);
	cr_assert(strstr(out, "shmbus_channel_up{channel=\"zapped\"} 0\n"), "%s",
		  out);
	cr_assert(!strstr(out, "pulse") && !strstr(out, "sem."), "%s", out);
	/* Without the damaged channel, the exit code says all is well. */
	shmbus_channel_close(dead);
	cr_assert_eq(shmbus_channel_unlink(dir, "zapped"), 0);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0, "%s", out);
	cr_assert(!strstr(out, "pulse"), "%s", out);
	shmbus_channel_close(ok);
}

/* Sizes in powers of 1024 (a 64 KiB channel is 64Ki, not 66K); REPAIRS
 * counts repaired claims and REAPED the released slots, apart. */
Test(busstat, sizes_binary_and_repairs_apart_from_reaped, .init = setup,
     .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	char want[128];
	size_t len;
	uint8_t *raw = th_map_channel(dir, &len);
	struct shmbus_hdr *h = (struct shmbus_hdr *)raw;

	cr_assert(raw);
	h->reaped = 5;
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s", out);
	cr_assert(strstr(out, " 64Ki ") && !strstr(out, "66K"), "%s", out);
	cr_assert(strstr(out, "REPAIRS  REAPED"), "%s", out);
	/* ... STALLS REPAIRS REAPED STUCK: 0, 0, 5, 0 */
	snprintf(want, sizeof(want), "%7s %7s %7s %5s\n", "0", "0", "5", "0");
	cr_assert(strstr(out, want), "want '%s' in:\n%s", want, out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0);
	cr_assert_eq(json_num(out, "repairs"), 0);
	cr_assert_eq(json_num(out, "slots_reaped"), 5);
	cr_assert_eq(json_num(out, "capacity"), 65536);
	munmap(raw, len);
	shmbus_channel_close(ch);
}

/* One output at a time; -c --json says when and where. */
Test(busstat, output_options, .init = setup, .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 8192, 64, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	char want[256];

	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json --prometheus",
			     dir), 2, "%s", out);
	cr_assert(strstr(out, "exclude one another"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -w --json", dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --prometheus",
			     dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	cr_assert(json_num(out, "time") > 1600000000, "%s", out);
	snprintf(want, sizeof(want), "\"dir\":\"%s\"", dir);
	cr_assert(strstr(out, want), "%s", out);
	shmbus_channel_close(ch);
}

/* Without an interval, MSG/S is the rate over a short first sample, not
 * the average since the channel was created (which, for a channel idle
 * for a second before 2000 msg/s began, is a third of it). */
Test(busstat, first_sample_rate_without_interval, .init = setup,
     .fini = teardown, .timeout = 60)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 1u << 20, 64, SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	pid_t pid;
	double rate;

	usleep(1000000);
	pid = th_spawn(steady_publisher, (void *)dir);
	usleep(500000);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0);
	rate = strtod(strstr(out, "\"messages_per_second\":") + 22, NULL);
	cr_expect(rate > 1500 && rate < 2500, "rate %.0f, offered 2000:\n%s",
		  rate, out);
	cr_assert(strstr(out, "\"rate_interval\":0.2"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0);
	cr_assert(strstr(out, "rates over the last 0.2"), "%s", out);
	kill(pid, SIGTERM);
	th_wait(pid);
	shmbus_channel_close(ch);
}

/* busstat BUS: the directory from shmbusd's bus file in $SHMBUS_RUN_DIR,
 * else /dev/shm/shmbus-BUS; a bus file that does not validate is not
 * believed. */
Test(busstat, bus_name_resolution, .init = setup, .fini = teardown)
{
	static char out[65536];
	char text[512], sub[128];
	shmbus_channel *ch;

	snprintf(sub, sizeof(sub), "%s/chans", dir);
	cr_assert_eq(mkdir(sub, 0755), 0);
	ch = th_create(sub, 8192, 64, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	snprintf(text, sizeof(text), "# a comment\nversion=1\nbus=ux-bus\n"
		 "socket=%s/ux-bus.sock\nshm_dir=%s\npid=1\nlater=ignored\n",
		 dir, sub);
	put_file(dir, "ux-bus.bus", text, 0644);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s/nope ux-bus", dir), 2);
	cr_assert_eq(busstat(out, sizeof(out), "-b ux-bus --json"), 1, "%s",
		     out);	/* not in the default run directory */
	setenv("SHMBUS_RUN_DIR", dir, 1);
	cr_assert_eq(busstat(out, sizeof(out), "ux-bus --json"), 0, "%s", out);
	cr_assert(strstr(out, "\"name\":\"ch\""), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-b ux-bus -c ch"), 0, "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "ux-bus 0.1 2"), 0, "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "../etc"), 2, "%s", out);
	/* Writable by anyone: not believed. */
	put_file(dir, "ux-bus.bus", text, 0666);
	cr_assert_eq(busstat(out, sizeof(out), "ux-bus"), 1, "%s", out);
	cr_assert(strstr(out, "not a valid bus file"), "%s", out);
	/* Written by another user into a directory not theirs: not
	 * believed either (as root, which may give the file away). */
	if (geteuid() == 0) {
		char path[256];

		snprintf(path, sizeof(path), "%s/ux-bus.bus", dir);
		put_file(dir, "ux-bus.bus", text, 0644);
		cr_assert_eq(chown(path, 65534, 65534), 0);
		cr_assert_eq(busstat(out, sizeof(out), "ux-bus"), 1, "%s",
			     out);
		cr_assert(strstr(out, "not a valid bus file"), "%s", out);
		cr_assert_eq(chown(path, 0, 0), 0);
	}
	/* Another bus's file, a relative path, a line without '=' */
	snprintf(text, sizeof(text), "version=1\nbus=other\nsocket=/s\n"
		 "shm_dir=%s\n", sub);
	put_file(dir, "ux-bus.bus", text, 0644);
	cr_assert_eq(busstat(out, sizeof(out), "ux-bus"), 1, "%s", out);
	put_file(dir, "ux-bus.bus", "version=1\nbus=ux-bus\nsocket=/s\n"
		 "shm_dir=relative\n", 0644);
	cr_assert_eq(busstat(out, sizeof(out), "ux-bus"), 1, "%s", out);
	put_file(dir, "ux-bus.bus", "version=1\nbus=ux-bus\nsocket\n", 0644);
	cr_assert_eq(busstat(out, sizeof(out), "ux-bus"), 1, "%s", out);
	/* No bus file: the default directory of the bus, here missing. */
	cr_assert_eq(busstat(out, sizeof(out), "ux-no-such-bus-%d",
			     (int)getpid()), 1, "%s", out);
	cr_assert(strstr(out, "/dev/shm/shmbus-ux-no-such-bus"), "%s", out);
	unsetenv("SHMBUS_RUN_DIR");
	shmbus_channel_close(ch);
}

/* -w without a terminal says so; with one, a resize redraws at once. */
Test(busstat, watch_without_term_and_on_resize, .init = setup,
     .fini = teardown, .timeout = 60)
{
	const char *bin = getenv("BUSSTAT") ? getenv("BUSSTAT")
					    : "build/tools/busstat";
	static char out[65536];
	char sock[64], pane[8192] = "", cmd[512];
	shmbus_channel *ch[12];
	FILE *f;

	snprintf(cmd, sizeof(cmd), "env -u TERM %s -d %s -w 2>&1", bin, dir);
	f = popen(cmd, "r");
	cr_assert(f);
	out[fread(out, 1, sizeof(out) - 1, f)] = 0;
	cr_assert_eq(WEXITSTATUS(pclose(f)), 1, "%s", out);
	cr_assert(strstr(out, "TERM is not set"), "%s", out);
	for (int i = 0; i < 12; i++) {
		struct shmbus_channel_attr a;
		char name[16];

		shmbus_channel_attr_init(&a);
		a.capacity = 4096;
		snprintf(name, sizeof(name), "chan%02d", i);
		ch[i] = shmbus_channel_create(dir, name, &a, 0);
		cr_assert(ch[i]);
	}
	/* A private tmux server; a long interval, so that only a resize can
	 * make it draw again. */
	snprintf(sock, sizeof(sock), "busstat-ux-%d", (int)getpid());
	cr_assert_eq(sh("tmux -L %s new-session -d -s w -x 100 -y 8 "
			"'%s -d %s -w 60'", sock, bin, dir), 0,
		     "tmux (is it installed?)");
	for (int i = 0; i < 50 && !strstr(pane, "more"); i++) {
		usleep(100000);
		snprintf(cmd, sizeof(cmd), "tmux -L %s capture-pane -p -t w",
			 sock);
		f = popen(cmd, "r");
		cr_assert(f);
		pane[fread(pane, 1, sizeof(pane) - 1, f)] = 0;
		pclose(f);
	}
	cr_expect(strstr(pane, "more") && !strstr(pane, "chan11"),
		  "8 lines show a few channels and how many more:\n%s", pane);
	cr_assert_eq(sh("tmux -L %s resize-window -t w -x 100 -y 30", sock), 0);
	for (int i = 0; i < 30 && !strstr(pane, "chan11"); i++) {
		usleep(100000);
		snprintf(cmd, sizeof(cmd), "tmux -L %s capture-pane -p -t w",
			 sock);
		f = popen(cmd, "r");
		cr_assert(f);
		pane[fread(pane, 1, sizeof(pane) - 1, f)] = 0;
		pclose(f);
	}
	cr_expect(strstr(pane, "chan00") && strstr(pane, "chan11") &&
		  !strstr(pane, "more"), "not redrawn at 30 lines:\n%s", pane);
	sh("tmux -L %s kill-server", sock);
	rm_tmux_socket(sock);
	for (int i = 0; i < 12; i++)
		shmbus_channel_close(ch[i]);
}

/* However many other files the directory holds, every channel is listed
 * (a fixed table once stopped at 1024 names, foreign ones included). */
Test(busstat, many_foreign_files_do_not_hide_a_channel, .init = setup,
     .fini = teardown, .timeout = 60)
{
	static char out[65536];
	shmbus_channel *ch;
	char name[32];

	/* The channel first: tmpfs lists the newest names first. */
	ch = th_create(dir, 8192, 64, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	for (int i = 0; i < 1100; i++) {
		snprintf(name, sizeof(name), "foreign-%04d", i);
		put_file(dir, name, "not a channel\n", 0600);
	}
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s", out);
	cr_expect(strstr(out, "\nch "), "the channel is not listed:\n%s", out);
	cr_expect(!strstr(out, "foreign-"), "a foreign file listed:\n%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0);
	cr_expect(strstr(out, "\"name\":\"ch\""), "%s", out);
	shmbus_channel_close(ch);
}

/* No byte of `out` a terminal would act on: control characters but
 * newline, DEL, or any byte above 0x7f (the test's names hold only
 * invalid UTF-8 and C1 controls there). */
static void no_raw_control(const char *out, const char *what)
{
	for (const unsigned char *p = (const void *)out; *p; p++)
		cr_expect(*p == '\n' || (*p >= 0x20 && *p < 0x7f),
			  "%s: raw byte 0x%02x at %zu:\n%s", what, *p,
			  (size_t)(p - (const unsigned char *)out), out);
}

/* Whether python3 (if there is one) takes `out` as JSON; true without it. */
static bool json_parses(const char *out)
{
	char path[256], cmd[512];
	FILE *f;

	if (system("command -v python3 >/dev/null 2>&1") != 0)
		return true;
	snprintf(path, sizeof(path), "%s/.out.json", dir);
	f = fopen(path, "w");
	cr_assert(f);
	fputs(out, f);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "python3 -m json.tool %s >/dev/null 2>&1",
		 path);
	return system(cmd) == 0;
}

/* A channel file whose name holds escape sequences (the library refuses
 * such names: the file is a copy of a channel's control file, as a hostile
 * user could make) and a subscriber slot whose process name does (any
 * subscriber writes its slot): no output passes them raw, and the JSON
 * stays valid. */
Test(busstat, names_and_process_names_are_escaped, .init = setup,
     .fini = teardown)
{
	static const char evil[] = "ev\x1b]0;owned\x07\x7f\xff\xc2\x9b";
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 8192, 64, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_sub *s = shmbus_sub_open(ch, NULL);
	char src[256], dst[256], cmd[600], me[32] = "";
	FILE *f = fopen("/proc/self/comm", "r");
	uint8_t *map;
	size_t len, mlen;
	bool found = false;

	cr_assert(s && f && fgets(me, sizeof(me), f));
	fclose(f);
	me[strcspn(me, "\n")] = 0;
	mlen = strlen(me);
	/* The slot's comm: our name as the library wrote it, replaced. */
	map = th_map_channel(dir, &len);
	cr_assert(map);
	for (size_t i = 0; i + 16 <= len && !found; i++)
		if (!memcmp(map + i, me, mlen) && map[i + mlen] == 0) {
			memcpy(map + i, "\x1b[2J\x9b" "1m\xff\x07", 10);
			found = true;
		}
	cr_assert(found, "no slot names %s", me);
	munmap(map, len);
	snprintf(src, sizeof(src), "%s/ch", dir);
	snprintf(dst, sizeof(dst), "%s/%s", dir, evil);
	snprintf(cmd, sizeof(cmd), "cp '%s' '%s'", src, dst);
	cr_assert_eq(system(cmd), 0);

	busstat(out, sizeof(out), "-d %s", dir);
	cr_expect(strstr(out, "\\x1b"), "%s", out);
	no_raw_control(out, "table");
	busstat(out, sizeof(out), "-d %s --json", dir);
	no_raw_control(out, "json");
	cr_expect(json_parses(out), "invalid JSON:\n%s", out);
	busstat(out, sizeof(out), "-d %s --prometheus", dir);
	no_raw_control(out, "prometheus");
	cr_expect_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 0, "%s",
		     out);
	no_raw_control(out, "detail");
	cr_expect(strstr(out, "\\x1b[2J"), "%s", out);
	cr_expect_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	no_raw_control(out, "detail json");
	cr_expect(json_parses(out), "invalid JSON:\n%s", out);
	unlink(dst);
	shmbus_sub_close(s);
	shmbus_channel_close(ch);
}

/* ------------------------------------------------------- consumer groups */

/*
 * A small JSON reader: enough to check that busstat's output is one
 * well-formed JSON value (RFC 8259: strings, escapes, numbers, literals,
 * nesting) and to walk it by key and index.  The walkers take a pointer
 * to a value and return one, NULL when it is not there.
 */
static const char *js_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	return p;
}

static const char *js_digits(const char *p)
{
	if (!isdigit((unsigned char)*p))
		return NULL;
	while (isdigit((unsigned char)*p))
		p++;
	return p;
}

/* Past the value at p (white space before it skipped), or NULL. */
static const char *js_skip(const char *p, int depth)
{
	p = js_ws(p);
	if (depth > 32)
		return NULL;
	switch (*p) {
	case '"':
		for (p++; *p != '"'; p++) {
			if ((unsigned char)*p < 0x20)
				return NULL;	/* a raw control, the end */
			if (*p != '\\')
				continue;
			p++;
			if (*p == 'u') {
				for (int i = 1; i <= 4; i++)
					if (!isxdigit((unsigned char)p[i]))
						return NULL;
				p += 4;
			} else if (!*p || !strchr("\"\\/bfnrt", *p)) {
				return NULL;
			}
		}
		return p + 1;
	case '{':
	case '[': {
		bool obj = *p == '{';
		char close = obj ? '}' : ']';

		p = js_ws(p + 1);
		if (*p == close)
			return p + 1;
		for (;;) {
			if (obj) {
				if (*js_ws(p) != '"' ||
				    !(p = js_skip(p, depth + 1)))
					return NULL;
				p = js_ws(p);
				if (*p++ != ':')
					return NULL;
			}
			if (!(p = js_skip(p, depth + 1)))
				return NULL;
			p = js_ws(p);
			if (*p == close)
				return p + 1;
			if (*p++ != ',')
				return NULL;
		}
	}
	case 't':
		return strncmp(p, "true", 4) ? NULL : p + 4;
	case 'f':
		return strncmp(p, "false", 5) ? NULL : p + 5;
	case 'n':
		return strncmp(p, "null", 4) ? NULL : p + 4;
	default:
		if (*p == '-')
			p++;
		if (*p == '0')
			p++;
		else if (!(p = js_digits(p)))
			return NULL;
		if (*p == '.' && !(p = js_digits(p + 1)))
			return NULL;
		if (*p == 'e' || *p == 'E') {
			p++;
			if (*p == '+' || *p == '-')
				p++;
			if (!(p = js_digits(p)))
				return NULL;
		}
		return p;
	}
}

/* Whether `text` is exactly one JSON value (and a newline). */
static bool js_valid(const char *text)
{
	const char *p = js_skip(text, 0);

	return p && !*js_ws(p);
}

Test(busstat, json_reader_rejects_bad_text)
{
	static const char *bad[] = {
		"{\"a\":1", "{\"a\" 1}", "{\"a\":1,}", "[1,]", "{a:1}",
		"\"open", "\"ctl\x01\"", "\"\\x\"", "01", "1.", "-", "tru",
		"{\"a\":1}{", "[1 2]", "{\"a\":.5}", "\"\\u12g4\"",
	};

	cr_assert(js_valid("{\"a\":[1,-2.5e3,true,false,null,\"\\u00e9\\n\"],"
			   "\"b\":{},\"c\":[]}\n"));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_assert(!js_valid(bad[i]), "accepted: %s", bad[i]);
}

/* The value of `key` in the object at obj. */
static const char *js_get(const char *obj, const char *key)
{
	size_t n = strlen(key);
	const char *p;

	if (!obj || *(obj = js_ws(obj)) != '{')
		return NULL;
	p = js_ws(obj + 1);
	while (*p == '"') {
		const char *k = p + 1, *v;

		if (!(p = js_skip(p, 0)))
			return NULL;
		v = js_ws(p);
		if (*v != ':')
			return NULL;
		v = js_ws(v + 1);
		if ((size_t)(p - k - 1) == n && !strncmp(k, key, n))
			return v;
		if (!(p = js_skip(v, 0)))
			return NULL;
		p = js_ws(p);
		if (*p != ',')
			return NULL;
		p = js_ws(p + 1);
	}
	return NULL;
}

/* Element i of the array at arr. */
static const char *js_at(const char *arr, int i)
{
	const char *p;

	if (!arr || *(arr = js_ws(arr)) != '[')
		return NULL;
	p = js_ws(arr + 1);
	if (*p == ']')
		return NULL;
	for (int k = 0;; k++) {
		if (k == i)
			return p;
		if (!(p = js_skip(p, 0)))
			return NULL;
		p = js_ws(p);
		if (*p != ',')
			return NULL;
		p = js_ws(p + 1);
	}
}

static int js_len(const char *arr)
{
	int n = 0;

	cr_assert(arr && *js_ws(arr) == '[', "not an array: %.40s",
		  arr ? arr : "(none)");
	while (js_at(arr, n))
		n++;
	return n;
}

/* Whether the value at v is the string s (no escapes in s). */
static bool js_str_is(const char *v, const char *s)
{
	size_t n = strlen(s);

	return v && *v == '"' && !strncmp(v + 1, s, n) && v[n + 1] == '"';
}

/* Whether the value at v is the literal `lit` (true, false, null). */
static bool js_lit(const char *v, const char *lit)
{
	size_t n = strlen(lit);

	return v && !strncmp(v, lit, n) && !isalnum((unsigned char)v[n]);
}

/* The element of the array at arr whose "name" is `name`. */
static const char *js_named(const char *arr, const char *name)
{
	const char *e;

	for (int i = 0; (e = js_at(arr, i)); i++)
		if (js_str_is(js_get(e, "name"), name))
			return e;
	return NULL;
}

/* The unsigned integer `key` of the object at obj (failing if it is
 * missing or not one). */
static unsigned long long js_u64(const char *obj, const char *key)
{
	const char *v = js_get(obj, key);

	cr_assert(v && isdigit((unsigned char)*v), "\"%s\" is not a number "
		  "in %.300s", key, obj ? obj : "(null)");
	return strtoull(v, NULL, 10);
}

/* Group `group` of channel `chan` in busstat's --json output. */
static const char *js_group(const char *out, const char *chan,
			    const char *group)
{
	const char *c = js_named(js_get(out, "channels"), chan);

	cr_assert(c, "no channel %s in:\n%s", chan, out);
	cr_assert(js_str_is(js_get(c, "status"), "ok"), "%s", out);
	return js_named(js_get(c, "groups"), group);
}

/* The table's line for group `name` and the member lines below it, copied
 * into buf; false if there is none.  Group names differ from the
 * channels' in these tests, so a line that starts with one is its row. */
static bool table_group(const char *out, const char *name, char *buf,
			size_t len)
{
	size_t n = strlen(name);
	const char *p = out, *end;

	while (strncmp(p, name, n) || p[n] != ' ') {
		p = strchr(p, '\n');
		if (!p)
			return false;
		p++;
	}
	end = strchr(p, '\n');
	cr_assert(end);
	while (!strncmp(end + 1, "  member ", 9))
		end = strchr(end + 1, '\n');
	cr_assert(end && (size_t)(end - p) + 2 < len);
	memcpy(buf, p, (size_t)(end - p) + 1);
	buf[end - p + 1] = 0;
	return true;
}

/* A group's row in the table, field by field. */
struct trow {
	char name[64], chan[64], mode[32], memb[32], lag[32];
	unsigned infl;
	unsigned long long floor;
};

static void table_row(const char *out, const char *name, struct trow *r,
		      char *buf, size_t len)
{
	cr_assert(table_group(out, name, buf, len), "no row for group %s:\n%s",
		  name, out);
	cr_assert_eq(sscanf(buf, "%63s %63s %31s %31s %u %llu %31s", r->name,
			    r->chan, r->mode, r->memb, &r->infl, &r->floor,
			    r->lag), 7, "row: %s", buf);
}

/* The member line of `member` (pid) in a group's rows ends with `tail`. */
static void member_line(const char *rows, const char *member, int pid,
			const char *tail)
{
	char want[128];
	const char *p, *eol;

	snprintf(want, sizeof(want), "  member %s: pid %d (", member, pid);
	p = strstr(rows, want);
	cr_assert(p, "no line '%s' in:\n%s", want, rows);
	eol = strchr(p, '\n');
	cr_assert(eol && (size_t)(eol - p) >= strlen(tail) &&
		  !strncmp(eol - strlen(tail), tail, strlen(tail)),
		  "member %s: want '...%s' in:\n%s", member, tail, rows);
}

/* The number of times `s` occurs in `text`. */
static int count_of(const char *text, const char *s)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, s)); p++)
		n++;
	return n;
}

/* The sample `metric{channel="chan",group="group"} v` is in `out`. */
static void prom_has(const char *out, const char *metric, const char *chan,
		     const char *group, unsigned long long v)
{
	char want[256];

	snprintf(want, sizeof(want), "\n%s{channel=\"%s\",group=\"%s\"} "
		 "%llu\n", metric, chan, group, v);
	cr_assert(strstr(out, want), "want '%s' in:\n%s", want + 1, out);
}

/* One message for member g, retrying a moment if none is ready yet. */
static ssize_t take_one(shmbus_group *g, struct shmbus_group_msg *m)
{
	static char buf[256];
	ssize_t n = -EAGAIN;

	for (int i = 0; i < 2000 && n == -EAGAIN; i++) {
		n = shmbus_group_read(g, buf, sizeof(buf), m);
		if (n == -EAGAIN)
			usleep(1000);
	}
	return n;
}

/* A member that takes one message of "workers" and is killed holding
 * it (kill -9: it never leaves). */
static int doomed_member(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");
	shmbus_group *g = ch ? shmbus_group_join(ch, "workers", "doomed",
						  NULL) : NULL;
	struct shmbus_group_msg m;

	if (!g)
		return 2;
	if (take_one(g, &m) <= 0)
		return 3;
	raise(SIGKILL);
	return 4;
}

/* Channel "ch" with shared group "workers": w1 and w2 (this process) hold
 * leases unacknowledged, "doomed" died holding one; channel "orders" with
 * keyed group "audit" whose one member holds some lanes' messages.  The
 * table, -c, --json and --prometheus give what shmbus_group_stats() says,
 * and the members as they are. */
Test(busstat, groups_in_every_output, .init = setup, .fini = teardown,
     .timeout = 60)
{
	static char out[262144], rows[8192];
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_group_stats ws, as;
	struct shmbus_group_attr ga;
	struct shmbus_channel_attr a;
	struct shmbus_group_msg m[6];
	shmbus_channel *orders;
	shmbus_group *w1, *w2, *k1;
	shmbus_pub *p, *op;
	const char *g, *e, *mem;
	char want[256], lag[32];
	struct trow r;
	int me = (int)getpid(), got, line;
	pid_t doomed;

	/* The keyed group, on its own channel: 6 messages of 3 keys taken
	 * and acknowledged (an ack covers its lane's earlier messages), then
	 * keys 1, 2, 1, 2 taken and only the first acknowledged: lanes hold
	 * messages, and the floor is past the first six. */
	shmbus_channel_attr_init(&a);
	a.capacity = 1u << 16;
	a.max_msg = 256;
	a.policy = SHMBUS_BLOCK;
	orders = shmbus_channel_create(dir, "orders", &a, 0);
	cr_assert(orders);
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 4;
	k1 = shmbus_group_join(orders, "audit", "k1", &ga);
	cr_assert(k1, "join audit: %s", strerror(errno));
	op = shmbus_pub_open(orders, NULL);
	cr_assert(op);
	for (uint64_t i = 0; i < 6; i++)
		cr_assert_eq(shmbus_publish_keyed(op, i % 3, "order", 5), 0);
	for (got = 0; got < 6; got++)
		cr_assert_eq(take_one(k1, &m[got]), 13);
	for (uint64_t key = 0; key < 3; key++) {
		int last = -1;

		for (int i = 0; i < 6; i++)
			if (m[i].key == key &&
			    (last < 0 || m[i].seq > m[last].seq))
				last = i;
		cr_assert_geq(last, 0, "key %d's messages delivered", (int)key);
		cr_assert_eq(shmbus_group_ack(k1, &m[last].lease), 0);
	}
	for (uint64_t i = 0; i < 4; i++)
		cr_assert_eq(shmbus_publish_keyed(op, 1 + i % 2, "order", 5),
			     0);
	for (got = 0; got < 4; got++)
		cr_assert_eq(take_one(k1, &m[got]), 13);
	{
		int first = -1;

		for (int i = 0; i < 4; i++)
			if (m[i].key == 1 &&
			    (first < 0 || m[i].seq < m[first].seq))
				first = i;
		cr_assert_geq(first, 0);
		cr_assert_eq(shmbus_group_ack(k1, &m[first].lease), 0);
	}

	/* The shared group: w1 takes 3 and acks the first 2, w2 takes 2
	 * and acks its second, doomed takes 1 and dies. */
	w1 = shmbus_group_join(ch, "workers", "w1", NULL);
	w2 = shmbus_group_join(ch, "workers", "w2", NULL);
	cr_assert(w1 && w2);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789", 10), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(take_one(w1, &m[i]), 10);
	cr_assert_eq(shmbus_group_ack(w1, &m[0].lease), 0);
	cr_assert_eq(shmbus_group_ack(w1, &m[1].lease), 0);
	for (int i = 3; i < 5; i++)
		cr_assert_eq(take_one(w2, &m[i]), 10);
	cr_assert_eq(shmbus_group_ack(w2, &m[4].lease), 0);
	doomed = th_spawn(doomed_member, (void *)dir);
	cr_assert_eq(th_wait(doomed), 128 + SIGKILL);

	/* From here on, nothing polls "workers": its maintenance would take
	 * the dead member's lease back. */
	cr_assert_eq(shmbus_group_stats(w1, &ws), 0);
	cr_assert_eq(shmbus_group_stats(k1, &as), 0);
	cr_assert_eq(ws.mode, SHMBUS_GROUP_SHARED);
	cr_assert_eq(ws.members, 2, "w1 and w2 alive");
	cr_assert_eq(ws.in_flight, 3, "w1's third, w2's first, doomed's");
	cr_assert_eq(ws.delivered, 6);
	cr_assert_eq(ws.acked, 3);
	cr_assert_eq(ws.released, 0, "the dead member's lease still held");
	cr_assert_eq(ws.floor, m[2].pos, "the floor at w1's unacked lease");
	cr_assert_eq(ws.head, th_head(ch));
	cr_assert(ws.head > ws.floor && ws.head - ws.floor < 1024,
		  "a lag the table shows exactly: %llu",
		  (unsigned long long)(ws.head - ws.floor));
	cr_assert_eq(as.mode, SHMBUS_GROUP_KEYED);
	cr_assert_eq(as.members, 1);
	/* Keys 1's and 2's lanes hold messages (one lane, if they hash to
	 * the same). */
	cr_assert_geq(as.in_flight, 1);
	cr_assert_eq(as.delivered, 10);
	cr_assert_eq(as.acked, 4);
	cr_assert_gt(as.floor, 0, "the floor moved with the acks");
	cr_assert(as.head >= as.floor && as.head - as.floor < 1024);

	/* The table: one row per group, its members below. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s", out);
	cr_assert(strstr(out, "\nGROUP ") && strstr(out, " MODE "), "%s", out);
	table_row(out, "workers", &r, rows, sizeof(rows));
	cr_assert_str_eq(r.chan, "ch");
	cr_assert_str_eq(r.mode, "shared");
	cr_assert_str_eq(r.memb, "2/3", "2 of 3 members alive:\n%s", rows);
	cr_assert_eq(r.infl, ws.in_flight, "%s", rows);
	cr_assert_eq(r.floor, ws.floor, "%s", rows);
	snprintf(lag, sizeof(lag), "%llu",
		 (unsigned long long)(ws.head - ws.floor));
	cr_assert_str_eq(r.lag, lag, "%s", rows);
	snprintf(want, sizeof(want), " %s/%u\n", ws.oldest_member,
		 ws.oldest_pid);
	cr_assert(strstr(rows, want), "owner '%s' in:\n%s", want, rows);
	member_line(rows, "w1", me, "), alive, delivered 3, acked 2, stale 0");
	member_line(rows, "w2", me, "), alive, delivered 2, acked 1, stale 0");
	member_line(rows, "doomed", doomed,
		    "), dead, delivered 1, acked 0, stale 0");
	cr_assert_eq(count_of(rows, "  member "), 3, "%s", rows);
	table_row(out, "audit", &r, rows, sizeof(rows));
	cr_assert_str_eq(r.chan, "orders");
	cr_assert_str_eq(r.mode, "keyed");
	cr_assert_str_eq(r.memb, "1/1");
	cr_assert_eq(r.infl, as.in_flight, "%s", rows);
	cr_assert_eq(r.floor, as.floor, "%s", rows);
	snprintf(lag, sizeof(lag), "%llu",
		 (unsigned long long)(as.head - as.floor));
	cr_assert_str_eq(r.lag, lag, "%s", rows);
	member_line(rows, "k1", me, "), alive, delivered 10, acked 4, stale 0");

	/* -c: that channel's groups only. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 0, "%s",
		     out);
	table_row(out, "workers", &r, rows, sizeof(rows));
	cr_assert_eq(r.infl, ws.in_flight);
	cr_assert_eq(r.floor, ws.floor);
	cr_assert_str_eq(r.memb, "2/3");
	member_line(rows, "doomed", doomed,
		    "), dead, delivered 1, acked 0, stale 0");
	cr_assert(!table_group(out, "audit", rows, sizeof(rows)),
		  "another channel's group under -c ch:\n%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c orders", dir), 0);
	table_row(out, "audit", &r, rows, sizeof(rows));
	cr_assert_eq(r.infl, as.in_flight);
	cr_assert(!table_group(out, "workers", rows, sizeof(rows)), "%s", out);

	/* --json: a "groups" array per channel. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0, "%s",
		     out);
	cr_assert(js_valid(out), "invalid JSON:\n%s", out);
	cr_expect(json_parses(out), "python rejects:\n%s", out);
	g = js_group(out, "ch", "workers");
	cr_assert(g, "no group workers in:\n%s", out);
	cr_assert_eq(js_len(js_get(js_named(js_get(out, "channels"), "ch"),
				   "groups")), 1, "%s", out);
	cr_assert(js_str_is(js_get(g, "status"), "ok"));
	cr_assert(js_str_is(js_get(g, "mode"), "shared"));
	cr_assert_eq(js_u64(g, "window"), ws.window);
	cr_assert_eq(js_u64(g, "members_alive"), ws.members);
	cr_assert_eq(js_u64(g, "in_flight"), ws.in_flight);
	cr_assert_eq(js_u64(g, "floor"), ws.floor);
	cr_assert_eq(js_u64(g, "lag_bytes"), ws.head - ws.floor);
	cr_assert_eq(js_u64(g, "claim"), ws.claim);
	cr_assert_eq(js_u64(g, "delivered"), ws.delivered);
	cr_assert_eq(js_u64(g, "acked"), ws.acked);
	cr_assert_eq(js_u64(g, "redelivered"), ws.redelivered);
	cr_assert_eq(js_u64(g, "released"), ws.released);
	cr_assert_eq(js_u64(g, "expired"), ws.expired);
	cr_assert_eq(js_u64(g, "window_full"), ws.window_full);
	cr_assert(js_str_is(js_get(g, "oldest_lease_member"),
			    ws.oldest_member), "%s", g);
	cr_assert_eq(js_u64(g, "oldest_lease_pid"), ws.oldest_pid);
	mem = js_get(g, "members");
	cr_assert_eq(js_len(mem), 3, "%s", g);
	e = js_named(mem, "doomed");
	cr_assert(e && js_lit(js_get(e, "alive"), "false"), "%s", g);
	cr_assert_eq(js_u64(e, "pid"), (unsigned long long)doomed);
	cr_assert_eq(js_u64(e, "delivered"), 1);
	cr_assert_eq(js_u64(e, "acked"), 0);
	e = js_named(mem, "w1");
	cr_assert(e && js_lit(js_get(e, "alive"), "true"), "%s", g);
	cr_assert_eq(js_u64(e, "pid"), (unsigned long long)me);
	cr_assert_eq(js_u64(e, "delivered"), 3);
	cr_assert_eq(js_u64(e, "acked"), 2);
	e = js_named(mem, "w2");
	cr_assert(e && js_lit(js_get(e, "alive"), "true"), "%s", g);
	cr_assert_eq(js_u64(e, "delivered"), 2);
	cr_assert_eq(js_u64(e, "acked"), 1);
	g = js_group(out, "orders", "audit");
	cr_assert(g, "no group audit in:\n%s", out);
	cr_assert(js_str_is(js_get(g, "mode"), "keyed"));
	cr_assert_eq(js_u64(g, "lanes"), 4);
	cr_assert_eq(js_u64(g, "members_alive"), 1);
	cr_assert_eq(js_u64(g, "in_flight"), as.in_flight);
	cr_assert_eq(js_u64(g, "floor"), as.floor);
	cr_assert_eq(js_u64(g, "lag_bytes"), as.head - as.floor);
	cr_assert_eq(js_u64(g, "delivered"), as.delivered);
	cr_assert_eq(js_u64(g, "acked"), as.acked);
	cr_assert(js_lit(js_get(g, "claim"), "null"), "%s", g);
	cr_assert_eq(js_len(js_get(g, "members")), 1);

	/* -c --json: the channel's groups, the same figures. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	cr_assert(js_valid(out), "invalid JSON:\n%s", out);
	cr_assert_eq(js_len(js_get(out, "groups")), 1, "%s", out);
	g = js_named(js_get(out, "groups"), "workers");
	cr_assert(g, "%s", out);
	cr_assert_eq(js_u64(g, "in_flight"), ws.in_flight);
	cr_assert_eq(js_u64(g, "floor"), ws.floor);
	cr_assert_eq(js_u64(g, "members_alive"), 2);
	cr_assert_eq(js_len(js_get(g, "members")), 3);

	/* --prometheus: the shmbus_group_* families, per channel and group. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir), 0);
	line = prom_check(out);
	cr_assert_eq(line, 0, "line %d does not parse:\n%s", line, out);
	prom_has(out, "shmbus_group_up", "ch", "workers", 1);
	prom_has(out, "shmbus_group_up", "orders", "audit", 1);
	prom_has(out, "shmbus_group_in_flight", "ch", "workers", ws.in_flight);
	prom_has(out, "shmbus_group_in_flight", "orders", "audit",
		 as.in_flight);
	prom_has(out, "shmbus_group_members", "ch", "workers", ws.members);
	prom_has(out, "shmbus_group_members", "orders", "audit", as.members);
	prom_has(out, "shmbus_group_acknowledged_position", "ch", "workers",
		 ws.floor);
	prom_has(out, "shmbus_group_acknowledged_position", "orders", "audit",
		 as.floor);
	prom_has(out, "shmbus_group_lag_bytes", "ch", "workers",
		 ws.head - ws.floor);
	prom_has(out, "shmbus_group_lag_bytes", "orders", "audit",
		 as.head - as.floor);
	prom_has(out, "shmbus_group_delivered_total", "ch", "workers",
		 ws.delivered);
	prom_has(out, "shmbus_group_acked_total", "ch", "workers", ws.acked);
	prom_has(out, "shmbus_group_oldest_lease_pid", "ch", "workers",
		 ws.oldest_pid);
	cr_assert(strstr(out, "\nshmbus_group_info{channel=\"ch\",group="
			      "\"workers\",mode=\"shared\"} 1\n"), "%s", out);
	cr_assert(strstr(out, "\nshmbus_group_info{channel=\"orders\",group="
			      "\"audit\",mode=\"keyed\"} 1\n"), "%s", out);

	/* Nothing busstat did changed the groups (it maps them read-only). */
	{
		struct shmbus_group_stats again;

		cr_assert_eq(shmbus_group_stats(w1, &again), 0);
		cr_assert_eq(again.in_flight, ws.in_flight);
		cr_assert_eq(again.floor, ws.floor);
		cr_assert_eq(again.released, 0);
	}
	shmbus_group_leave(w1);
	shmbus_group_leave(w2);
	shmbus_group_leave(k1);
	shmbus_pub_close(p);
	shmbus_pub_close(op);
	shmbus_channel_close(ch);
	shmbus_channel_close(orders);
}

/* Overwrites `len` bytes at `off` of channel chan's group `group`. */
static void damage_group(const char *chan, const char *group, off_t off,
			 const void *bytes, size_t len)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/.%s@%s.group", dir, chan, group);
	fd = open(path, O_WRONLY);
	cr_assert_geq(fd, 0, "%s: %s", path, strerror(errno));
	cr_assert_eq(pwrite(fd, bytes, len, off), (ssize_t)len);
	close(fd);
}

/* A group whose magic was overwritten (corrupt) and one whose layout
 * version was (incompatible): each is shown with its reason in every
 * output, busstat exits 3, and the other groups and channels are shown
 * as they are.  Without the damaged ones, it exits 0 again. */
Test(busstat, corrupt_group_is_flagged_in_every_output, .init = setup,
     .fini = teardown, .timeout = 60)
{
	static char out[262144], rows[8192];
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	static const char *bad_word[] = { "bad", "corrupt (the group's file "
		"does not validate)", "oldver", "incompatible (the group's "
		"file has another layout version)" };
	struct shmbus_group_stats gs;
	struct shmbus_group_attr ga;
	struct shmbus_channel_attr a;
	struct shmbus_group_msg m;
	shmbus_channel *other;
	shmbus_group *good, *fine, *x;
	const char *g, *c;
	uint32_t version = 99;
	uint64_t zero = 0;
	char want[256];
	struct trow r;
	shmbus_pub *p;
	int line;

	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	a.max_msg = 256;
	other = shmbus_channel_create(dir, "other", &a, 0);
	cr_assert(other);
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	fine = shmbus_group_join(other, "fine", "f1", &ga);
	good = shmbus_group_join(ch, "good", "g1", NULL);
	cr_assert(fine && good);
	x = shmbus_group_join(ch, "bad", "b1", NULL);
	cr_assert(x);
	shmbus_group_leave(x);
	x = shmbus_group_join(ch, "oldver", "o1", NULL);
	cr_assert(x);
	shmbus_group_leave(x);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	for (int i = 0; i < 4; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789", 10), 0);
	cr_assert_eq(take_one(good, &m), 10);		/* held */
	cr_assert_eq(shmbus_group_stats(good, &gs), 0);
	cr_assert_eq(gs.in_flight, 1);
	damage_group("ch", "bad", 0, &zero, sizeof(zero));	 /* magic */
	damage_group("ch", "oldver", 8, &version, sizeof(version));

	/* The table: the channels, the good groups, the damaged ones named
	 * with their reason. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 3, "%s", out);
	cr_assert(strstr(out, "\nch ") && strstr(out, "\nother "),
		  "the channels are shown:\n%s", out);
	table_row(out, "good", &r, rows, sizeof(rows));
	cr_assert_str_eq(r.mode, "shared");
	cr_assert_eq(r.infl, gs.in_flight);
	cr_assert_eq(r.floor, gs.floor);
	member_line(rows, "g1", (int)getpid(),
		    "), alive, delivered 1, acked 0, stale 0");
	table_row(out, "fine", &r, rows, sizeof(rows));
	cr_assert_str_eq(r.chan, "other");
	cr_assert_str_eq(r.mode, "keyed");
	for (int k = 0; k < 2; k++) {
		cr_assert(table_group(out, bad_word[2 * k], rows, sizeof(rows)),
			  "%s not shown:\n%s", bad_word[2 * k], out);
		snprintf(want, sizeof(want), "%-16s %-16s %s\n",
			 bad_word[2 * k], "ch", bad_word[2 * k + 1]);
		cr_assert_str_eq(rows, want);
	}

	/* -c: the channel's damaged and good groups; another channel with
	 * good groups only is no fault. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 3, "%s",
		     out);
	cr_assert(table_group(out, "good", rows, sizeof(rows)), "%s", out);
	cr_assert(strstr(out, bad_word[1]) && strstr(out, bad_word[3]), "%s",
		  out);
	cr_assert(!table_group(out, "fine", rows, sizeof(rows)), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c other", dir), 0, "%s",
		     out);
	cr_assert(table_group(out, "fine", rows, sizeof(rows)), "%s", out);
	cr_assert(!strstr(out, "corrupt") && !strstr(out, "incompatible"),
		  "%s", out);

	/* --json: "status" and "error" for the damaged, figures for the
	 * others; still one valid JSON text. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 3, "%s",
		     out);
	cr_assert(js_valid(out), "invalid JSON:\n%s", out);
	cr_expect(json_parses(out), "python rejects:\n%s", out);
	c = js_named(js_get(out, "channels"), "ch");
	cr_assert_eq(js_len(js_get(c, "groups")), 3, "%s", out);
	g = js_group(out, "ch", "bad");
	cr_assert(g && js_str_is(js_get(g, "status"), "corrupt"), "%s", out);
	cr_assert(js_str_is(js_get(g, "error"), "the group's file does not "
			    "validate"), "%s", g);
	cr_assert(!js_get(g, "in_flight") && !js_get(g, "members"), "%s", g);
	g = js_group(out, "ch", "oldver");
	cr_assert(g && js_str_is(js_get(g, "status"), "incompatible"), "%s",
		  out);
	cr_assert(js_get(g, "error"), "%s", g);
	g = js_group(out, "ch", "good");
	cr_assert(g && js_str_is(js_get(g, "status"), "ok"), "%s", out);
	cr_assert_eq(js_u64(g, "in_flight"), gs.in_flight);
	cr_assert_eq(js_u64(g, "floor"), gs.floor);
	g = js_group(out, "other", "fine");
	cr_assert(g && js_str_is(js_get(g, "status"), "ok"), "%s", out);
	cr_assert(js_str_is(js_get(g, "mode"), "keyed"), "%s", g);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 3,
		     "%s", out);
	cr_assert(js_valid(out), "invalid JSON:\n%s", out);
	g = js_named(js_get(out, "groups"), "bad");
	cr_assert(g && js_str_is(js_get(g, "status"), "corrupt"), "%s", out);
	g = js_named(js_get(out, "groups"), "good");
	cr_assert(g && js_u64(g, "in_flight") == gs.in_flight, "%s", out);

	/* --prometheus: shmbus_group_up 0 and no other sample for the
	 * damaged; the rest as usual. */
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir), 3,
		     "%s", out);
	line = prom_check(out);
	cr_assert_eq(line, 0, "line %d does not parse:\n%s", line, out);
	cr_assert(strstr(out, "\nshmbus_group_up{channel=\"ch\",group=\"bad\"} "
			      "0\n"), "%s", out);
	cr_assert(strstr(out, "\nshmbus_group_up{channel=\"ch\",group="
			      "\"oldver\"} 0\n"), "%s", out);
	cr_assert(strstr(out, "\nshmbus_group_up{channel=\"ch\",group="
			      "\"good\"} 1\n"), "%s", out);
	cr_assert(strstr(out, "\nshmbus_group_up{channel=\"other\",group="
			      "\"fine\"} 1\n"), "%s", out);
	cr_assert_eq(count_of(out, "group=\"bad\""), 1, "%s", out);
	cr_assert_eq(count_of(out, "group=\"oldver\""), 1, "%s", out);
	snprintf(want, sizeof(want), "\nshmbus_group_in_flight{channel=\"ch\","
		 "group=\"good\"} %u\n", gs.in_flight);
	cr_assert(strstr(out, want), "%s", out);
	cr_assert(strstr(out, "\nshmbus_channel_up{channel=\"ch\"} 1\n") &&
		  strstr(out, "\nshmbus_channel_up{channel=\"other\"} 1\n"),
		  "%s", out);

	/* The damaged groups gone, all is well again. */
	for (int k = 0; k < 2; k++) {
		char path[256];

		snprintf(path, sizeof(path), "%s/.ch@%s.group", dir,
			 bad_word[2 * k]);
		cr_assert_eq(unlink(path), 0);
	}
	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir), 0);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	shmbus_group_leave(good);
	shmbus_group_leave(fine);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_channel_close(other);
}

/* A journaled channel (the journal's words as shmbusd's agent
 * writes them): every output shows where the journal is, its lag behind
 * the ring, its size, why its oldest segment is kept, its gaps, and a
 * full disk. */
Test(busstat, journal_in_every_output, .init = setup, .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_channel *plain;
	struct shmbus_channel_attr a;
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	uint64_t head;
	const char *j;

	cr_assert(p);
	shmbus_channel_attr_init(&a);
	a.capacity = 1u << 16;
	plain = shmbus_channel_create(dir, "plain", &a, 0);
	cr_assert(plain);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789abcdef", 16), 0);
	head = th_head(ch);
	sb_jnl_setup(ch, "/var/lib/shmbus/t/journal/ch", 26, false);
	sb_jnl_written(ch, head);
	sb_jnl_persisted(ch, head - 32 * 10, false);
	sb_jnl_oldest(ch, 64, 3u << 20, SHMBUS_JKEEP_READER);
	sb_jnl_count(ch, 7, 2, 4096);
	sb_jnl_state(ch, SHMBUS_JNL_DISK_FULL, 0);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s",
		     out);
	j = strstr(out, "JOURNAL");
	cr_assert(j, "%s", out);
	cr_assert(strstr(j, "reader") && strstr(j, "disk_full") &&
		  strstr(j, "320"), "%s", j);
	cr_assert_null(strstr(j, "plain"), "only journaled channels: %s", j);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 0);
	cr_assert(strstr(out, "journal: in /var/lib/shmbus/t/journal/ch, "
			      "written"), "%s", out);
	cr_assert(strstr(out, "(320 bytes behind)") &&
		  strstr(out, "oldest kept by reader") &&
		  strstr(out, "7 syncs, 2 gaps (4096 bytes), DISK FULL"),
		  "%s", out);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0);
	j = strstr(out, "\"journal\":{");
	cr_assert(j, "%s", out);
	cr_assert_eq(json_num(j, "written"), (long long)head);
	cr_assert_eq(json_num(j, "persisted"), (long long)head - 320);
	cr_assert_eq(json_num(j, "lag_bytes"), 320);
	cr_assert_eq(json_num(j, "bytes"), 3 << 20);
	cr_assert_eq(json_num(j, "oldest"), 64);
	cr_assert_eq(json_num(j, "gaps"), 2);
	cr_assert(strstr(j, "\"kept_by\":\"reader\"") &&
		  strstr(j, "\"state\":\"disk_full\""), "%s", j);
	cr_assert(strstr(out, "\"journal\":null"), "the plain channel: %s",
		  out);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir),
		     0);
	cr_assert(strstr(out, "shmbus_journal_lag_bytes{channel=\"ch\"} 320\n"),
		  "%s", out);
	cr_assert(strstr(out, "shmbus_journal_disk_full{channel=\"ch\"} 1\n"),
		  "%s", out);
	cr_assert(strstr(out, "shmbus_journal_gaps_total{channel=\"ch\"} 2\n"),
		  "%s", out);
	cr_assert_null(strstr(out, "shmbus_journal_bytes{channel=\"plain\"}"));
	shmbus_pub_close(p);
	shmbus_channel_close(plain);
	shmbus_channel_close(ch);
}

/* A primary whose standby never had everything (caught_up_ns 0): its lag
 * time is unknown, not 0, in every output; once the standby has caught
 * up, the time since then. */
Test(busstat, a_lag_time_never_caught_up_is_unknown, .init = setup,
     .fini = teardown)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	struct shmbus_repl_info rp;
	const char *t;

	cr_assert(p);
	sb_repl_setup(ch, SHMBUS_ACK_APPLIED, SHMBUS_REPL_ON, 1);
	for (int i = 0; i < 6; i++)
		cr_assert_eq(shmbus_publish(p, "0123456789abcdef", 16), 0);
	cr_assert_eq(shmbus_channel_replication(ch, &rp), 0);
	cr_assert_eq(rp.lag_messages, 6);
	cr_assert_eq(rp.lag_ns, UINT64_MAX);

	cr_assert_eq(busstat(out, sizeof(out), "-d %s", dir), 0, "%s", out);
	t = strstr(out, "REPLICATED");
	cr_assert(t, "%s", out);
	cr_assert(strstr(t, "192       6       ?"), "LAGB, LAGMSG, LAGT: %s",
		  t);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0);
	cr_assert(strstr(out, "\"lag_messages\":6,\"lag_seconds\":null,"),
		  "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch --json", dir), 0);
	cr_assert(strstr(out, "\"lag_seconds\":null,"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s -c ch", dir), 0);
	cr_assert(strstr(out, "6 messages, ? s"), "%s", out);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --prometheus", dir), 0);
	cr_assert_eq(prom_check(out), 0, "%s", out);
	cr_assert(strstr(out, "shmbus_repl_lag_seconds{channel=\"ch\"} NaN\n"),
		  "%s", out);

	sb_repl_caught_up(ch);
	usleep(20000);
	cr_assert_eq(shmbus_channel_replication(ch, &rp), 0);
	cr_assert(rp.lag_ns >= 20000000 && rp.lag_ns < 60000000000ull,
		  "%llu", (unsigned long long)rp.lag_ns);
	cr_assert_eq(busstat(out, sizeof(out), "-d %s --json", dir), 0);
	cr_assert(strstr(out, "\"lag_seconds\":0.") ||
		  strstr(out, "\"lag_seconds\":1."), "%s", out);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

/* A FIFO under a group's name and one in place of a channel's data file
 * (any process that may create files in the directory can put them
 * there): busstat reports and goes on, never waiting in open(). */
Test(busstat, fifos_in_the_directory_do_not_block_it, .init = setup,
     .fini = teardown, .timeout = 90)
{
	static char out[65536];
	shmbus_channel *ch = th_create(dir, 8192, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_channel *c2;
	struct shmbus_channel_attr a;
	char path[512];
	struct dirent *e;
	DIR *d;

	shmbus_channel_attr_init(&a);
	a.capacity = 8192;
	c2 = shmbus_channel_create(dir, "c2", &a, 0);
	cr_assert(c2);
	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	cr_assert_eq(mkfifo(path, 0666), 0);
	/* c2's data file becomes a FIFO. */
	d = opendir(dir);
	cr_assert(d);
	while ((e = readdir(d)))
		if (!strncmp(e->d_name, ".c2.", 4) &&
		    strstr(e->d_name, ".data")) {
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			cr_assert_eq(unlink(path), 0);
			cr_assert_eq(mkfifo(path, 0666), 0);
		}
	closedir(d);
	busstat(out, sizeof(out), "-d %s", dir);
	cr_assert(strstr(out, "ch"), "%s", out);
	busstat(out, sizeof(out), "-d %s --json", dir);
	busstat(out, sizeof(out), "-d %s -c ch", dir);
	shmbus_channel_close(c2);
	shmbus_channel_close(ch);
}

/* A process that holds a channel's control file writable (every
 * subscriber does) cuts it short and gives it back its size, again and
 * again, while busstat reads it: busstat never dies of SIGBUS. */
static int cutter(void *arg)
{
	const char *path = arg;
	int fd = open(path, O_RDWR);
	struct stat st;

	if (fd < 0 || fstat(fd, &st))
		return 1;
	for (;;) {
		if (ftruncate(fd, 0) || ftruncate(fd, st.st_size))
			return 2;
	}
}

Test(busstat, a_file_cut_short_while_it_reads_does_not_kill_it,
     .init = setup, .fini = teardown, .timeout = 60)
{
	static char out[65536], path[256];
	shmbus_channel *ch = th_create(dir, 8192, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	pid_t p;

	snprintf(path, sizeof(path), "%s/ch", dir);
	p = th_spawn(cutter, path);
	/* busstat() fails the test if busstat was killed by a signal. */
	for (int i = 0; i < 40; i++)
		busstat(out, sizeof(out), "-d %s --json", dir);
	kill(p, SIGKILL);
	th_wait(p);
	shmbus_channel_close(ch);
}

/* busstat with tests/cut_after_map.so preloaded (its variables set by
 * the caller). */
static int busstat_preloaded(char *out, size_t len, const char *args)
{
	char exe[4096], shim[4096 + 32], asan[1024];
	const char *old = getenv("ASAN_OPTIONS");
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	int rc;

	cr_assert_gt(n, 0);
	exe[n] = 0;
	*strrchr(exe, '/') = 0;
	snprintf(shim, sizeof(shim), "%s/cut_after_map.so", exe);
	cr_assert_eq(access(shim, R_OK), 0, "%s: %s", shim, strerror(errno));
	/* An ASan busstat takes a preloaded library that is not ASan's. */
	snprintf(asan, sizeof(asan), "%s%sverify_asan_link_order=0",
		 old ? old : "", old && *old ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);
	setenv("LD_PRELOAD", shim, 1);
	rc = busstat(out, len, "%s", args);
	unsetenv("LD_PRELOAD");
	if (old)
		setenv("ASAN_OPTIONS", old, 1);
	else
		unsetenv("ASAN_OPTIONS");
	return rc;
}

/*
 * busstat with `path` cut to `size` bytes just after busstat's `nth`
 * mapping of it, between the open's check of its size and the reads of
 * what it maps (docs/shmbusd.md, "A file cut short": "a channel cut short
 * under it shows as damaged").
 */
static int busstat_cut(char *out, size_t len, const char *path, long size,
		       int nth, const char *args)
{
	char num[32];
	int rc;

	snprintf(num, sizeof(num), "%d", nth);
	setenv("CUT_NTH", num, 1);
	snprintf(num, sizeof(num), "%ld", size);
	setenv("CUT_SIZE", num, 1);
	setenv("CUT_PATH", path, 1);
	rc = busstat_preloaded(out, len, args);
	unsetenv("CUT_PATH");
	return rc;
}

Test(busstat, a_file_cut_short_under_it_shows_as_damaged, .init = setup,
     .fini = teardown, .timeout = 60)
{
	static char out[65536], args[512], path[256];
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	shmbus_sub *s = shmbus_sub_open(ch, NULL);
	shmbus_group *g;
	struct stat st;
	int rc;

	cr_assert(p && s);
	cr_assert_eq(shmbus_publish(p, "x", 1), 0);
	snprintf(path, sizeof(path), "%s/ch", dir);
	cr_assert_eq(stat(path, &st), 0);

	/* The table's second sample (the first measures rates), then -c's
	 * only one: the slots past the first page read as zeros. */
	snprintf(args, sizeof(args), "-d %s --json", dir);
	rc = busstat_cut(out, sizeof(out), path, 4096, 2, args);
	cr_assert_eq(truncate(path, st.st_size), 0);
	cr_assert(!strstr(out, "\"status\":\"ok\""), "a channel cut short "
		  "under busstat shown as healthy: %s", out);
	cr_assert_eq(rc, 3, "exit %d: %s", rc, out);

	snprintf(args, sizeof(args), "-d %s -c ch --json", dir);
	rc = busstat_cut(out, sizeof(out), path, 4096, 1, args);
	cr_assert_eq(truncate(path, st.st_size), 0);
	cr_assert(!strstr(out, "\"status\":\"ok\""), "a channel cut short "
		  "under busstat -c shown as healthy: %s", out);
	cr_assert_eq(rc, 3, "exit %d: %s", rc, out);

	snprintf(args, sizeof(args), "-d %s -c ch", dir);
	rc = busstat_cut(out, sizeof(out), path, 4096, 1, args);
	cr_assert_eq(truncate(path, st.st_size), 0);
	cr_assert_eq(rc, 3, "exit %d: %s", rc, out);

	/* A consumer group's file, the same. */
	g = shmbus_group_join(ch, "g", "m", NULL);
	cr_assert(g, "%s", strerror(errno));
	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	cr_assert_eq(stat(path, &st), 0);
	snprintf(args, sizeof(args), "-d %s -c ch --json", dir);
	rc = busstat_cut(out, sizeof(out), path, 4096, 1, args);
	cr_assert_eq(truncate(path, st.st_size), 0);
	cr_assert(strstr(out, "\"groups\":[{\"name\":\"g\",\"status\":\"corrupt\""),
		  "a group cut short under busstat -c shown as healthy: %s",
		  out);
	cr_assert_eq(rc, 3, "exit %d: %s", rc, out);

	shmbus_group_leave(g);
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

/*
 * A channel deleted after busstat listed the directory and before it
 * sampled the channel (its control file gone: the name leads nowhere) is
 * no longer there, as a group deleted since it was listed: not a corrupt
 * channel, which makes shmbus_channel_up 0 and exit 3 (an alert for a
 * deletion).  A channel whose data file is missing while its control file
 * stays is corrupt, as before.
 */
Test(busstat, a_channel_deleted_while_it_lists_is_not_corrupt, .init = setup,
     .fini = teardown)
{
	static char out[65536], args[512], path[256];
	shmbus_channel *ch = th_create(dir, 8192, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_channel *gone = th_create_mp(dir, "gone", 8192);
	int rc;

	cr_assert(ch && gone);
	snprintf(path, sizeof(path), "%s/gone", dir);
	setenv("UNLINK_PATH", path, 1);
	setenv("UNLINK_NTH", "1", 1);	/* the listing's */
	snprintf(args, sizeof(args), "-d %s --prometheus", dir);
	rc = busstat_preloaded(out, sizeof(out), args);
	unsetenv("UNLINK_PATH");
	cr_assert_eq(access(path, F_OK), -1, "the shim removed nothing");
	cr_assert(strstr(out, "shmbus_channel_up{channel=\"ch\"} 1"), "%s",
		  out);
	cr_assert(!strstr(out, "shmbus_channel_up{channel=\"gone\"} 0"),
		  "a channel deleted while busstat listed is shown as "
		  "broken: %s", out);
	cr_assert_eq(rc, 0, "exit %d: %s", rc, out);
	shmbus_channel_close(gone);
	shmbus_channel_close(ch);
}
