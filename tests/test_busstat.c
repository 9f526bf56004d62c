/* SPDX-License-Identifier: MIT */
/*
 * test_busstat.c - the busstat binary against channels with known counts:
 * the figures it reports are exactly those, a corrupt channel beside
 * healthy ones is flagged with its own exit code, other programs' files
 * are skipped, a missing bus or channel is reported, and a bus name finds
 * its directory.  $BUSSTAT names the binary (set by make test).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
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
	snprintf(cmd, sizeof(cmd), "%s %s 2>&1", bin, args);
	p = popen(cmd, "r");
	cr_assert(p, "popen: %s", strerror(errno));
	n = fread(out, 1, len - 1, p);
	out[n] = 0;
	st = pclose(p);
	cr_assert(WIFEXITED(st), "busstat died: %s", cmd);
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
