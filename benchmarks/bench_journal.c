/* SPDX-License-Identifier: MIT */
/*
 * bench_journal - the channel journal (docs/journal.md): shmbusd's agent
 * appends a channel's records to segment files, syncs them by the
 * channel's journal_fsync policy, and a replay reads them back.  The
 * journal_dir is a fresh directory under /var/tmp (a disk filesystem,
 * never /dev/shm), the rings a fresh one under /dev/shm.  Each figure has
 * its baseline, measured in the same run on the same filesystem:
 *
 *   1. append throughput of 32-byte and 1 KiB messages, per fsync policy
 *      (batch, interval, none): one producer (CPU 0) publishes as fast as
 *      it can on a block channel (4 MiB ring) with its journal on, 64 MiB
 *      of records a run (-q: 2 MiB); the time runs from its first publish
 *      until the journal has synced (batch, interval: persisted) or
 *      written (none) all of them.  Payload MB/s, messages/s, and the
 *      journal's fdatasync() calls in the run (its counter).  Baseline:
 *      one write() per message of its record (16-byte header + payload
 *      rounded up to 8) to a new file, with fdatasync() every 1 MiB and
 *      once at the end (against batch and interval), or with none
 *      (against none).  A run is one journal_segment of records, so every
 *      journal run rolls onto one new segment and sets the agent's second
 *      thread making the next one (its zeros written and synced) while it
 *      goes on; the baseline's file grows as it is written instead.
 *      interval syncs every 1 MiB or 10 ms, so its last sync may come up
 *      to 10 ms after the last write, inside the time.
 *   2. the persisted round trip: shmbus_publish() of 32 bytes and
 *      shmbus_pub_sync() on a channel with acknowledge = persisted and
 *      journal_fsync = batch, p50/p99.  Baseline: one pwrite() of 48 bytes
 *      (the record) and fdatasync() at the next offset of a file written
 *      with zeros and synced beforehand (as the journal's segments are).
 *      The two take turns in blocks.
 *   3. replay: after 256 MiB (-q: 8 MiB) of 1 KiB messages journaled
 *      (fsync none), shmbus_replay_open() at position 0 and
 *      shmbus_replay_poll() (a handler that counts) until it has caught
 *      up: record bytes (ring positions) per second.  Baseline: read() of
 *      the segment files that hold those positions, in 1 MiB chunks.
 *      Nothing is dropped from the page cache: both read files just
 *      written, so this is the cost of reading, checking (CRC-32C per
 *      record) and delivering records, not the disk's.  They take turns.
 *   4. the local 32-byte round trip (ping-pong between two processes: A on
 *      CPU 0 publishes on ping and spins on pong, B on CPU 1 echoes) on
 *      channels with a journal (batch) against the same on channels
 *      without one, in one daemon, taking turns; the journal's target is
 *      <= 1.05x at p50.
 *
 * Before every timed run the daemon is let finish its writing (a segment
 * being made ahead) and the filesystem is synced (syncfs()), so that no
 * run pays for the writeback of the one before.  The daemon is never
 * pinned, and neither are the file I/O baselines of 1 and both sides of
 * 2 (the disk's interrupts may all go to one CPU, and a waiter kept off
 * it pays a cross-CPU wakeup per I/O that the agent does not); both
 * readers of 3 run on CPU 0.  Each part runs its own daemon with only
 * its channels; its log is checked for errors and warnings when it stops
 * (any makes the exit status 1).
 *
 *   bench_journal [-q]   -q: briefly (checks that it runs; 4 MiB segments)
 *
 * SHMBUSD names the daemon to run (default build/shmbusd);
 * BENCH_JOURNAL_KEEP_LOGS=1 keeps the daemons' log in /tmp.
 *
 * The results go to benchmarks/results/journal.csv (not with -q).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "hist.h"
#include "pingpong.h"
#include "shmbus.h"
#include "../lib/contract.h"
#include "shmbus/layout.h"

#define MIB (UINT64_C(1) << 20)
#define STUCK_NS 60000000000ull	/* the journal not there after this: a fault */

static const char *shmbusd = "build/shmbusd";
static char shm_dir[64], jnl_dir[64], conf[128], sock[108], log_path[128];
static char run_dir[96];
static pid_t dpid;
static long log_from;		/* where this daemon's lines begin */
static bool quick;
static const char *seg;		/* journal_segment */
static uint64_t seg_bytes;
static FILE *csv;
static double tps;		/* ns per tick */
static bool failed;		/* die(): the log is kept */

static void cleanup(void)
{
	char cmd[1024];

	if (dpid > 0) {
		kill(dpid, SIGTERM);
		waitpid(dpid, NULL, 0);
		dpid = 0;
	}
	snprintf(cmd, sizeof(cmd), "rm -rf %s %s %s %s %s "
		 "2>/dev/null", shm_dir[0] ? shm_dir : "", jnl_dir[0] ?
		 jnl_dir : "", conf, run_dir,
		 getenv("BENCH_JOURNAL_KEEP_LOGS") || failed ? "" : log_path);
	if (failed)
		fprintf(stderr, "bench_journal: the daemons' log is kept: %s\n",
			log_path);
	if (system(cmd))
		fprintf(stderr, "bench_journal: could not remove %s, %s\n",
			shm_dir, jnl_dir);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2),
						      noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	failed = true;
	fprintf(stderr, "bench_journal: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	exit(1);
}

/* This process on CPU `cpu`, or on any (cpu < 0): see the top. */
static void pin_main(int cpu)
{
	cpu_set_t set;

	if (cpu >= 0) {
		bh_pin(cpu);
		return;
	}
	CPU_ZERO(&set);
	for (long c = 0; c < sysconf(_SC_NPROCESSORS_ONLN); c++)
		CPU_SET(c, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		perror("sched_setaffinity");
}

/* ------------------------------------------------------------ the daemon */

static void daemon_start(const char *channels)
{
	FILE *f = fopen(conf, "w");
	struct stat st;
	pid_t pid;

	if (!f)
		die("%s: %s", conf, strerror(errno));
	fprintf(f, "[bus]\nname = bjnl\nshm_dir = %s\nsocket = %s\n"
		"log_level = notice\njournal_dir = %s\n%s", shm_dir, sock,
		jnl_dir, channels);
	fclose(f);
	log_from = stat(log_path, &st) ? 0 : (long)st.st_size;
	pid = fork();
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		/* Not the benchmark's pinning: the agents go where they
		 * can. */
		pin_main(-1);
		dup2(fd, 2);
		setenv("SHMBUS_RUN_DIR", run_dir, 1);
		execl(shmbusd, "shmbusd", "-c", conf, (char *)NULL);
		_exit(127);
	}
	dpid = pid;
	/* Its journaled channels make their first segment before it
	 * serves. */
	for (int i = 0; i < 3000; i++) {
		shmbus_bus *b = shmbus_connect_timeout(sock, 0);

		if (b) {
			shmbus_disconnect(b);
			return;
		}
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			dpid = 0;
			break;
		}
		usleep(10000);
	}
	die("the daemon (%s) does not start: see %s", shmbusd, log_path);
}

/* Stops the daemon; the number of error and warning lines it logged
 * (printed), or 1 if it did not exit with 0. */
static int daemon_stop(void)
{
	char line[1024];
	int st, bad = 0;
	FILE *f;

	kill(dpid, SIGTERM);
	waitpid(dpid, &st, 0);
	dpid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		fprintf(stderr, "bench_journal: the daemon ended with %s %d\n",
			WIFEXITED(st) ? "status" : "signal",
			WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
		bad = 1;
	}
	f = fopen(log_path, "r");
	if (f && fseek(f, log_from, SEEK_SET) == 0)
		while (fgets(line, sizeof(line), f))
			if (strstr(line, "shmbusd[error]") ||
			    strstr(line, "shmbusd[warning]")) {
				fprintf(stderr, "bench_journal: daemon log: %s",
					line);
				bad++;
			}
	if (f)
		fclose(f);
	return bad;
}

/* The daemon's bytes written so far (/proc/PID/io wchar), 0 if unknown. */
static unsigned long long daemon_wchar(void)
{
	unsigned long long w = 0;
	char path[64], line[128];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/io", (int)dpid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "wchar: %llu", &w) == 1)
			break;
	fclose(f);
	return w;
}

/* Until the daemon has written nothing for 50 ms (a segment made ahead),
 * then the journal's filesystem synced: the next run starts on a quiet
 * disk. */
static void quiesce(void)
{
	unsigned long long last = ~0ull;
	int fd;

	for (int i = 0; i < 600; i++) {
		unsigned long long w = daemon_wchar();

		if (w == last)
			break;
		last = w;
		usleep(50000);
	}
	fd = open(jnl_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || syncfs(fd))
		die("syncfs %s: %s", jnl_dir, strerror(errno));
	close(fd);
}

static shmbus_channel *chan_open(shmbus_bus **bus, const char *name,
				 enum shmbus_role role, bool journaled)
{
	shmbus_channel *ch;

	*bus = shmbus_connect(sock);
	ch = *bus ? shmbus_bus_open(*bus, name, role) : NULL;
	if (!ch)
		die("%s: %s", name, shmbus_strerror(errno));
	for (int i = 0; journaled && i < 1000; i++) {
		struct sb_jnl_view v;

		sb_jnl_read(ch, &v);
		if (v.state & SHMBUS_JNL_ON)
			return ch;
		usleep(10000);
	}
	if (journaled)
		die("%s: the journal is not on (see %s)", name, log_path);
	return ch;
}

static shmbus_pub *pub_open(shmbus_channel *ch, const char *name)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_pub *p = shmbus_pub_open(ch, &pa);

	if (!p)
		die("%s: publisher: %s", name, shmbus_strerror(errno));
	return p;
}

/* The journal did not get there: what it says, and stop. */
static void __attribute__((noreturn))
stuck(shmbus_channel *ch, const char *name, const char *what, uint64_t want)
{
	struct sb_jnl_view v;

	sb_jnl_read(ch, &v);
	die("%s: the journal's %s has not reached %llu after %.0f s: written "
	    "%llu, persisted %llu, head %llu, state %#x, syncs %llu, gaps "
	    "%llu (daemon log: %s)", name, what, (unsigned long long)want,
	    STUCK_NS / 1e9, (unsigned long long)v.written,
	    (unsigned long long)v.persisted, (unsigned long long)v.head,
	    v.state, (unsigned long long)v.syncs, (unsigned long long)v.gaps,
	    log_path);
}

/* Until the journal has written (or synced) through head; looks every
 * 100 us, sleeping between (a spinning observer would take a CPU from
 * the agent it waits for). */
static void wait_journal(shmbus_channel *ch, const char *name, bool synced,
			 uint64_t head, uint64_t t0)
{
	for (;;) {
		struct sb_jnl_view v;

		sb_jnl_read(ch, &v);
		if ((synced ? v.persisted : v.written) >= head)
			return;
		if (bh_now_ns() - t0 > STUCK_NS)
			stuck(ch, name, synced ? "persisted" : "written", head);
		usleep(100);
	}
}

static void csv_row(const char *part, const char *what, size_t bytes,
		    double value, const char *unit, double base, double ratio)
{
	if (csv)
		fprintf(csv, "%s,%s,%zu,%.1f,%s,%.1f,%.3f\n", part, what, bytes,
			value, unit, base, ratio);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of v[0..n), sorted in place. */
static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return v[n / 2];
}

static size_t rec_of(size_t len)
{
	return 16 + (len + 7) / 8 * 8;
}

/* ------------------------------------------------------ 1. throughput */

enum { P_BATCH, P_INTERVAL, P_NONE, NPOL };

static const char *const pol_name[NPOL] = { "batch", "interval", "none" };

#define TP_ROUNDS_MAX 5

/* n messages of len bytes through the journal of ch: seconds until it
 * has synced (or written) them all. */
static double tp_journal(shmbus_channel *ch, shmbus_pub *p, const char *name,
			 size_t len, uint64_t n, bool synced, double *syncs)
{
	static char msg[1024];
	uint64_t t0, t1, head, syncs0;
	struct sb_jnl_view v;

	memset(msg, 0x5a, sizeof(msg));
	quiesce();
	pin_main(0);
	sb_jnl_read(ch, &v);
	syncs0 = v.syncs;
	t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		int rc = shmbus_publish(p, msg, len);

		if (rc)
			die("%s: publish: %s", name, shmbus_strerror(rc));
	}
	sb_jnl_read(ch, &v);
	head = v.head;
	wait_journal(ch, name, synced, head, t0);
	t1 = bh_now_ns();
	sb_jnl_read(ch, &v);
	*syncs = (double)(v.syncs - syncs0);
	return (double)(t1 - t0) / 1e9;
}

/* The baseline: n write()s of a record of len bytes to a new file,
 * fdatasync() every 1 MiB and at the end if `sync`: seconds, and the
 * fdatasync() calls in *syncs.  Unpinned, as the journal's agent is. */
static double tp_write(size_t len, uint64_t n, bool sync, double *syncs)
{
	static char rec[16 + 1024];
	size_t r = rec_of(len), since = 0;
	char path[96];
	uint64_t t0, t1, k = 0;
	int fd;

	memset(rec, 0x5a, sizeof(rec));
	snprintf(path, sizeof(path), "%s/baseline.dat", jnl_dir);
	quiesce();
	pin_main(-1);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		if (write(fd, rec, r) != (ssize_t)r)
			die("write %s: %s", path, strerror(errno));
		since += r;
		if (sync && since >= MIB) {
			if (fdatasync(fd))
				die("fdatasync %s: %s", path, strerror(errno));
			since = 0;
			k++;
		}
	}
	if (sync && since) {
		if (fdatasync(fd))
			die("fdatasync %s: %s", path, strerror(errno));
		k++;
	}
	t1 = bh_now_ns();
	*syncs = (double)k;
	close(fd);
	unlink(path);
	return (double)(t1 - t0) / 1e9;
}

static int part_throughput(void)
{
	static const size_t sizes[] = { 32, 1024 };
	int rounds = quick ? 1 : TP_ROUNDS_MAX, bad;
	uint64_t run_bytes = quick ? 2 * MIB : seg_bytes;
	shmbus_bus *bus[NPOL];
	shmbus_channel *ch[NPOL];
	shmbus_pub *p[NPOL];
	char chans[1024];
	size_t o = 0;

	for (int k = 0; k < NPOL; k++)
		o += (size_t)snprintf(chans + o, sizeof(chans) - o,
				      "[channel tp_%s]\ncapacity = 4M\n"
				      "max_msg = 1K\njournal = on\n"
				      "journal_fsync = %s\njournal_segment = "
				      "%s\n", pol_name[k], pol_name[k], seg);
	daemon_start(chans);
	for (int k = 0; k < NPOL; k++) {
		char name[32];

		snprintf(name, sizeof(name), "tp_%s", pol_name[k]);
		ch[k] = chan_open(&bus[k], name, SHMBUS_ROLE_PUBLISH, true);
		p[k] = pub_open(ch[k], name);
	}
	printf("\n# 1. append throughput: one producer (CPU 0) publishes as "
	       "fast as it can on a block channel (4 MiB\n"
	       "#    ring, journal on) until the journal has synced "
	       "(batch, interval) or written (none) it all;\n"
	       "#    %llu MiB of records a run%s, the median of %d "
	       "round%s.\n"
	       "#    baseline: one write() per record (16 B + payload) to a "
	       "new file on the same filesystem,\n"
	       "#    fdatasync() every 1 MiB (sync: against batch and "
	       "interval) or never (against none).\n"
	       "#    MB/s of payload; syncs: fdatasync() calls a run "
	       "(the journal's from its counter: batch syncs\n"
	       "#    once per pass over what is committed, interval every "
	       "1 MiB or 10 ms, none at the segment's\n"
	       "#    end); ratio: journal / its baseline, the median of the "
	       "rounds' ratios\n",
	       (unsigned long long)(run_bytes / MIB),
	       run_bytes == seg_bytes ? " (a journal_segment: one roll each)"
				      : "", rounds, rounds > 1 ? "s" : "");
	printf("%5s %-9s %9s %9s %6s %11s %9s %6s %6s\n", "bytes", "policy",
	       "MB/s", "M msg/s", "syncs", "baseline", "MB/s", "syncs",
	       "ratio");
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t len = sizes[s];
		uint64_t n = run_bytes / rec_of(len);
		double j[NPOL][TP_ROUNDS_MAX], q[NPOL][TP_ROUNDS_MAX],
			sy[NPOL][TP_ROUNDS_MAX];
		double bs[TP_ROUNDS_MAX], bn[TP_ROUNDS_MAX], mbs, mbn;
		double bsy[TP_ROUNDS_MAX], bny[TP_ROUNDS_MAX];

		for (int r = 0; r < rounds; r++) {
			/* Rates in payload bytes per second. */
			double pay = (double)(n * len);

			bs[r] = pay / tp_write(len, n, true, &bsy[r]);
			for (int k = 0; k < NPOL; k++) {
				char name[32];

				snprintf(name, sizeof(name), "tp_%s",
					 pol_name[k]);
				j[k][r] = pay / tp_journal(ch[k], p[k], name,
							   len, n, k != P_NONE,
							   &sy[k][r]);
			}
			bn[r] = pay / tp_write(len, n, false, &bny[r]);
			for (int k = 0; k < NPOL; k++)
				q[k][r] = j[k][r] /
					  (k == P_NONE ? bn[r] : bs[r]);
		}
		mbs = median(bs, rounds);
		mbn = median(bn, rounds);
		for (int k = 0; k < NPOL; k++) {
			double m = median(j[k], rounds), ratio =
				median(q[k], rounds);
			double base = k == P_NONE ? mbn : mbs;

			printf("%5zu %-9s %9.1f %9.3f %6.0f %11s %9.1f %6.0f "
			       "%6.2f\n", len, pol_name[k], m / 1e6,
			       m / (double)len / 1e6, median(sy[k], rounds),
			       k == P_NONE ? "write" : "write+sync",
			       base / 1e6, median(k == P_NONE ? bny : bsy,
						  rounds), ratio);
			csv_row("append", pol_name[k], len, m, "payload_Bps",
				base, ratio);
			csv_row("append_msgs", pol_name[k], len,
				m / (double)len, "msgs_per_s",
				base / (double)len, ratio);
		}
	}
	for (int k = 0; k < NPOL; k++) {
		shmbus_pub_close(p[k]);
		shmbus_channel_close(ch[k]);
		shmbus_disconnect(bus[k]);
	}
	bad = daemon_stop();
	if (bad)
		printf("throughput: the daemon logged errors (see stderr)\n");
	return bad;
}

/* ---------------------------------------------- 2. persisted round trip */

#define RT_BLOCKS 10	/* of each kind, taking turns */
#define RT_WARM 5	/* round trips not recorded at a block's start */

static int part_persisted(void)
{
	long n = quick ? 50 : 2000, per = (n + RT_BLOCKS - 1) / RT_BLOCKS;
	struct hist *hj = malloc(sizeof(*hj)), *hb = malloc(sizeof(*hb));
	static char zero[1 << 20];
	char msg[32] = "a persisted message", path[96], chans[512];
	uint64_t off = 0, size;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *p;
	double j50, j99, b50, b99;
	int fd, bad;

	if (!hj || !hb)
		die("out of memory");
	hist_init(hj);
	hist_init(hb);
	snprintf(chans, sizeof(chans), "[channel ack]\ncapacity = 1M\n"
		 "max_msg = 1K\njournal = on\njournal_fsync = batch\n"
		 "acknowledge = persisted\njournal_segment = %s\n", seg);
	daemon_start(chans);
	ch = chan_open(&bus, "ack", SHMBUS_ROLE_PUBLISH, true);
	p = pub_open(ch, "ack");
	/* The baseline's file: zeros, synced, as a segment is made. */
	snprintf(path, sizeof(path), "%s/baseline-rt.dat", jnl_dir);
	size = ((uint64_t)RT_BLOCKS * (uint64_t)(per + RT_WARM) * 48 + MIB - 1) /
	       MIB * MIB;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		die("%s: %s", path, strerror(errno));
	pin_main(-1);
	for (uint64_t k = 0; k < size; k += sizeof(zero))
		if (pwrite(fd, zero, sizeof(zero), (off_t)k) !=
		    (ssize_t)sizeof(zero))
			die("%s: %s", path, strerror(errno));
	if (fdatasync(fd))
		die("%s: %s", path, strerror(errno));
	quiesce();
	for (int b = 0; b < RT_BLOCKS; b++) {
		for (long i = -RT_WARM; i < per; i++) {
			uint64_t t = bh_ticks();
			int rc = shmbus_publish(p, msg, sizeof(msg));

			if (!rc)
				rc = shmbus_pub_sync(p, 5000000000LL);
			if (rc) {
				struct sb_jnl_view v;

				sb_jnl_read(ch, &v);
				die("ack: publish + pub_sync: %s (block %d, "
				    "at %ld: written %llu, persisted %llu, "
				    "head %llu, state %#x)",
				    rc > 0 ? "degraded" : shmbus_strerror(rc),
				    b, i, (unsigned long long)v.written,
				    (unsigned long long)v.persisted,
				    (unsigned long long)v.head, v.state);
			}
			if (i >= 0)
				hist_record(hj, (uint64_t)((double)(bh_ticks() -
							    t) * tps));
		}
		/* The baseline: the 48-byte record at the next offset. */
		for (long i = -RT_WARM; i < per; i++) {
			static char rec[48];
			uint64_t t = bh_ticks();

			memcpy(rec, &off, sizeof(off));
			memcpy(rec + 16, msg, 32);
			if (pwrite(fd, rec, 48, (off_t)off) != 48 ||
			    fdatasync(fd))
				die("pwrite + fdatasync %s: %s", path,
				    strerror(errno));
			off += 48;
			if (i >= 0)
				hist_record(hb, (uint64_t)((double)(bh_ticks() -
							    t) * tps));
		}
	}
	close(fd);
	unlink(path);
	j50 = (double)hist_percentile(hj, 50);
	j99 = (double)hist_percentile(hj, 99);
	b50 = (double)hist_percentile(hb, 50);
	b99 = (double)hist_percentile(hb, 99);
	printf("\n# 2. persisted round trip, 32 B: shmbus_publish() + "
	       "shmbus_pub_sync() on a channel with acknowledge =\n"
	       "#    persisted, journal_fsync = batch; baseline: pwrite() "
	       "of the 48-byte record + fdatasync() on a\n"
	       "#    file written with zeros and synced beforehand.  %ld "
	       "each, taking turns in %d blocks, this\n"
	       "#    process unpinned in both (as the agent is); us\n",
	       per * RT_BLOCKS, RT_BLOCKS);
	printf("%-34s %9s %9s %9s\n", "", "p50", "p99", "max");
	printf("%-34s %9.1f %9.1f %9.1f\n", "publish + pub_sync(persisted)",
	       j50 / 1e3, j99 / 1e3, (double)hj->max / 1e3);
	printf("%-34s %9.1f %9.1f %9.1f\n", "pwrite(48 B) + fdatasync",
	       b50 / 1e3, b99 / 1e3, (double)hb->max / 1e3);
	printf("# journal / baseline: p50 %.2fx, p99 %.2fx\n", j50 / b50,
	       j99 / b99);
	csv_row("persisted_rt_p50", "journal_batch", 32, j50, "ns", b50,
		j50 / b50);
	csv_row("persisted_rt_p99", "journal_batch", 32, j99, "ns", b99,
		j99 / b99);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	free(hj);
	free(hb);
	bad = daemon_stop();
	if (bad)
		printf("persisted round trip: the daemon logged errors (see "
		       "stderr)\n");
	return bad;
}

/* ------------------------------------------------------------ 3. replay */

#define REPLAY_ROUNDS_MAX 3

struct tally {
	uint64_t msgs, bytes, lost;
};

static int count(const struct shmbus_msg *m, void *arg)
{
	struct tally *c = arg;

	c->msgs++;
	c->bytes += m->len;
	c->lost += m->lost;
	return 0;
}

/* A replay from position 0 until it holds head: seconds. */
static double replay_run(shmbus_channel *ch, uint64_t head, uint64_t n,
			 uint64_t *from_journal)
{
	struct shmbus_replay_stats st;
	struct tally c = { 0, 0, 0 };
	uint64_t t0 = bh_now_ns(), t1;
	shmbus_replay *r;

	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	if (!r)
		die("replay: shmbus_replay_open(0): %s", strerror(errno));
	for (;;) {
		int k = shmbus_replay_poll(r, count, &c, 0);

		if (k < 0)
			die("replay: shmbus_replay_poll: %s at message %llu",
			    shmbus_strerror(k), (unsigned long long)c.msgs);
		if (k > 0)
			continue;
		if (shmbus_replay_stats(r, &st))
			die("replay: shmbus_replay_stats");
		if (st.pos >= head)
			break;
		if (bh_now_ns() - t0 > STUCK_NS)
			die("replay: at %llu of %llu after %.0f s (%llu "
			    "messages, in the ring: %d)",
			    (unsigned long long)st.pos,
			    (unsigned long long)head, STUCK_NS / 1e9,
			    (unsigned long long)c.msgs, st.in_ring);
	}
	t1 = bh_now_ns();
	if (c.msgs != n || c.lost || c.bytes != n * 1024)
		die("replay: %llu messages (%llu bytes, %llu lost) where %llu "
		    "were published", (unsigned long long)c.msgs,
		    (unsigned long long)c.bytes, (unsigned long long)c.lost,
		    (unsigned long long)n);
	*from_journal = st.from_journal;
	shmbus_replay_close(r);
	return (double)(t1 - t0) / 1e9;
}

/* The baseline: the segment files' bytes for positions [0, head), read()
 * 1 MiB at a time: seconds. */
static double replay_files(const char *dir, uint64_t head)
{
	static char buf[1 << 20];
	uint64_t t0 = bh_now_ns(), got = 0;

	for (uint64_t base = 0; base < head; base += seg_bytes) {
		uint64_t want = 4096 + (head - base < seg_bytes ? head - base
								 : seg_bytes);
		char path[256];
		int fd;

		snprintf(path, sizeof(path), "%s/%016llx.seg", dir,
			 (unsigned long long)base);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			die("%s: %s", path, strerror(errno));
		while (want) {
			size_t k = want < sizeof(buf) ? (size_t)want
						      : sizeof(buf);
			ssize_t r = read(fd, buf, k);

			if (r <= 0)
				die("read %s: %s", path,
				    r ? strerror(errno) : "short file");
			want -= (uint64_t)r;
			got += (uint64_t)r;
		}
		close(fd);
	}
	(void)got;
	return (double)(bh_now_ns() - t0) / 1e9;
}

static int part_replay(void)
{
	uint64_t bytes = quick ? 8 * MIB : 256 * MIB, n = bytes / rec_of(1024);
	int rounds = quick ? 1 : REPLAY_ROUNDS_MAX, bad;
	double jr[REPLAY_ROUNDS_MAX], fr[REPLAY_ROUNDS_MAX],
		q[REPLAY_ROUNDS_MAX], mj, mf;
	static char msg[1024];
	char chans[512], dir[160];
	uint64_t head, t0, fj = 0;
	shmbus_bus *bus, *sbus;
	shmbus_channel *ch, *sch;
	struct sb_jnl_view v;
	shmbus_pub *p;

	snprintf(chans, sizeof(chans), "[channel replay]\ncapacity = 4M\n"
		 "max_msg = 1K\njournal = on\njournal_fsync = none\n"
		 "journal_segment = %s\n", seg);
	daemon_start(chans);
	ch = chan_open(&bus, "replay", SHMBUS_ROLE_PUBLISH, true);
	sch = chan_open(&sbus, "replay", SHMBUS_ROLE_SUBSCRIBE, true);
	p = pub_open(ch, "replay");
	memset(msg, 0x5a, sizeof(msg));
	t0 = bh_now_ns();
	for (uint64_t i = 0; i < n; i++) {
		int rc = shmbus_publish(p, msg, sizeof(msg));

		if (rc)
			die("replay: publish: %s", shmbus_strerror(rc));
	}
	sb_jnl_read(ch, &v);
	head = v.head;
	wait_journal(ch, "replay", false, head, t0);
	snprintf(dir, sizeof(dir), "%s/replay", jnl_dir);
	quiesce();
	pin_main(0);	/* both readers on one CPU */
	for (int r = 0; r < rounds; r++) {
		fr[r] = (double)head / replay_files(dir, head);
		jr[r] = (double)head / replay_run(sch, head, n, &fj);
		q[r] = jr[r] / fr[r];
	}
	mj = median(jr, rounds);
	mf = median(fr, rounds);
	printf("\n# 3. replay of %llu MiB of 1 KiB messages (%llu) from "
	       "position 0 until caught up (%llu from the\n"
	       "#    journal, the rest from the ring); baseline: read() of "
	       "the same segment files in 1 MiB chunks.\n"
	       "#    Page cache (nothing dropped): reading, checking and "
	       "delivering, not the disk.  Record bytes\n"
	       "#    per second, the median of %d round%s taking turns; "
	       "ratio: the median of the rounds' ratios\n",
	       (unsigned long long)(bytes / MIB), (unsigned long long)n,
	       (unsigned long long)fj, rounds, rounds > 1 ? "s" : "");
	printf("%-44s %9s %9s\n", "", "MB/s", "M msg/s");
	printf("%-44s %9.0f %9.3f\n", "shmbus_replay_poll() from position 0",
	       mj / 1e6, mj / (double)rec_of(1024) / 1e6);
	printf("%-44s %9.0f %9.3f\n", "read() of the segment files, 1 MiB",
	       mf / 1e6, mf / (double)rec_of(1024) / 1e6);
	printf("# replay / read(): %.2fx\n", median(q, rounds));
	csv_row("replay", "replay_poll", 1024, mj, "record_Bps", mf,
		median(q, rounds));
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_channel_close(sch);
	shmbus_disconnect(bus);
	shmbus_disconnect(sbus);
	bad = daemon_stop();
	if (bad)
		printf("replay: the daemon logged errors (see stderr)\n");
	return bad;
}

/* ---------------------------------------------- 4. local round trip */

#define LOCAL_ROUNDS_MAX 5

/* p50 and p99 in ns of n round trips on ping/pong (pingpong.h). */
static void local_rt(const char *ping, const char *pong, long n,
		     struct hist *h, double *p50, double *p99)
{
	int rc = bp_pingpong(sock, ping, pong, n, h);

	if (rc)
		die("local ping-pong on %s/%s failed (%d)", ping, pong, rc);
	*p50 = hist_percentile_step(h, 50, bh_clock_step_ns());
	*p99 = (double)hist_percentile(h, 99);
}

static int part_local(void)
{
	long n = quick ? 2000 : 20000;
	struct hist *h = bh_shared(sizeof(*h));
	int rounds = quick ? 3 : LOCAL_ROUNDS_MAX, bad;
	double n50[LOCAL_ROUNDS_MAX], n99[LOCAL_ROUNDS_MAX],
		j50[LOCAL_ROUNDS_MAX], j99[LOCAL_ROUNDS_MAX],
		o50[LOCAL_ROUNDS_MAX], o99, q[LOCAL_ROUNDS_MAX],
		q99[LOCAL_ROUNDS_MAX], aa[LOCAL_ROUNDS_MAX], mq, mn, mj;
	char chans[1024];

	if (!h)
		die("no shared memory");
	snprintf(chans, sizeof(chans),
		 "[channel ping]\ncapacity = 1M\nmax_msg = 1K\n"
		 "[channel pong]\ncapacity = 1M\nmax_msg = 1K\n"
		 "[channel ping2]\ncapacity = 1M\nmax_msg = 1K\n"
		 "[channel pong2]\ncapacity = 1M\nmax_msg = 1K\n"
		 "[channel ping_j]\ncapacity = 1M\nmax_msg = 1K\njournal = on\n"
		 "journal_fsync = batch\njournal_segment = %s\n"
		 "[channel pong_j]\ncapacity = 1M\nmax_msg = 1K\njournal = on\n"
		 "journal_fsync = batch\njournal_segment = %s\n", seg, seg);
	daemon_start(chans);
	quiesce();
	for (int k = 0; k < rounds; k++) {	/* taking turns */
		local_rt("ping", "pong", n, h, &n50[k], &n99[k]);
		local_rt("ping_j", "pong_j", n, h, &j50[k], &j99[k]);
		local_rt("ping2", "pong2", n, h, &o50[k], &o99);
		q[k] = j50[k] / n50[k];
		q99[k] = j99[k] / n99[k];
		aa[k] = o50[k] / n50[k];
	}
	printf("\n# 4. local 32 B round trip (A on CPU 0 publishes on ping "
	       "and spins on pong, B on CPU 1 echoes),\n"
	       "#    %ld recorded a run, channels without a journal and with "
	       "one (batch) taking turns; ns\n", n);
	printf("#    p50 other: a second pair without a journal, for the noise "
	       "between two pairs of rings alike\n");
	printf("%-6s %12s %12s %12s %12s %8s %12s %8s\n", "run", "p50 none",
	       "p50 journal", "p99 none", "p99 journal", "p50 x", "p50 other",
	       "other x");
	for (int k = 0; k < rounds; k++)
		printf("%-6d %12.0f %12.0f %12.0f %12.0f %8.3f %12.0f %8.3f\n",
		       k + 1, n50[k], j50[k], n99[k], j99[k], q[k], o50[k],
		       aa[k]);
	mq = median(q, rounds);
	mn = median(n50, rounds);
	mj = median(j50, rounds);
	printf("# journal / none, p50, the median of the runs' ratios: "
	       "%.3fx (target <= 1.05x: %s); p99: %.2fx; the other pair "
	       "without a journal / none: %.3fx\n", mq,
	       mq <= 1.05 ? "met" : "missed", median(q99, rounds),
	       median(aa, rounds));
	csv_row("local_rt_p50", "journal_batch", 32, mj, "ns", mn, mq);
	csv_row("local_rt_p99", "journal_batch", 32, median(j99, rounds), "ns",
		median(n99, rounds), median(q99, rounds));
	bad = daemon_stop();
	if (bad)
		printf("local round trip: the daemon logged errors (see "
		       "stderr)\n");
	return bad;
}

int main(int argc, char **argv)
{
	const char *e = getenv("SHMBUSD");
	int opt, bad = 0, me = getpid();

	while ((opt = getopt(argc, argv, "q")) != -1) {
		if (opt == 'q')
			quick = true;
		else {
			fprintf(stderr, "usage: bench_journal [-q]\n");
			return 2;
		}
	}
	if (e && *e)
		shmbusd = e;
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		die("needs two CPUs");
	seg = quick ? "4M" : "64M";
	seg_bytes = quick ? 4 * MIB : 64 * MIB;
	snprintf(conf, sizeof(conf), "/tmp/shmbus-bench-jnl%d.conf", me);
	snprintf(log_path, sizeof(log_path), "/tmp/shmbus-bench-jnl%d.log", me);
	snprintf(run_dir, sizeof(run_dir), "/tmp/shmbus-bench-jnl%d.run", me);
	/* The daemon writes its bus file beside its socket: both in the
	 * run directory, which goes at the end. */
	snprintf(sock, sizeof(sock), "%s/sock", run_dir);
	atexit(cleanup);
	snprintf(shm_dir, sizeof(shm_dir), "/dev/shm/shmbus-bench-jnl-XXXXXX");
	snprintf(jnl_dir, sizeof(jnl_dir), "/var/tmp/shmbus-bench-jnl-XXXXXX");
	if (!mkdtemp(shm_dir) || !mkdtemp(jnl_dir))
		die("mkdtemp: %s", strerror(errno));
	mkdir(run_dir, 0700);
	bh_calibrate();
	tps = bh_ns_per_tick();
	/* A quick run's figures are not results: no file. */
	csv = quick ? NULL : bh_result_file("journal.csv");
	if (csv)
		fprintf(csv, "part,what,bytes,value,unit,baseline,ratio\n");
	printf("# the channel journal (%s, journal_segment %s) against plain "
	       "file I/O on the same filesystem\n# (%s), baselines measured "
	       "in the same run%s\n", shmbusd, seg, jnl_dir,
	       quick ? " (quick run: -q)" : "");
	bad |= part_throughput();
	bad |= part_persisted();
	bad |= part_replay();
	bad |= part_local();
	if (csv)
		fclose(csv);
	return bad ? 1 : 0;
}
