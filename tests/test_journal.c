/* SPDX-License-Identifier: MIT */
/*
 * test_journal.c - the journal under a real shmbusd, with real files:
 * messages of mixed sizes journaled and replayed byte for byte across
 * segments, a late joiner that moves from the journal into the live ring
 * while a producer runs, kill -9 of the daemon mid-append, power losses
 * (a segment truncated, garbage appended, bits flipped) recovered to
 * exactly the last valid record, a reboot (the ring removed, the journal
 * kept), replay by time, retention held off by a reader, a full
 * filesystem, a segment of another channel refused, and pub_sync at the
 * persisted level returning only once the bytes are in the file.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

static char jdir[256];		/* journal_dir */
static char cdir[320];		/* the channel "j"'s journal */

static void conf_with(const char *chan_keys, const char *bus_keys)
{
	char body[2048];

	if (!jdir[0])
		snprintf(jdir, sizeof(jdir), "%s/jnl", d.dir);
	snprintf(cdir, sizeof(cdir), "%s/j", jdir);
	snprintf(body, sizeof(body),
		 "journal_dir = %s\n%s"
		 "[defaults]\npublish = *\nsubscribe = *\n"
		 "[channel j]\ncapacity = 64K\nmax_msg = 2048\n"
		 "journal = on\n%s",
		 jdir, bus_keys ? bus_keys : "", chan_keys);
	write_conf(body);
}

static void setup_dir(void)
{
	char dir[64];

	/* The fixture's directory, without a daemon yet. */
	snprintf(dir, sizeof(dir), "%s", th_mkdir());
	memset(&d, 0, sizeof(d));
	snprintf(d.dir, sizeof(d.dir), "%s", dir);
	snprintf(d.conf, sizeof(d.conf), "%s/shmbusd.conf", d.dir);
	snprintf(d.sock, sizeof(d.sock), "%s/sock", d.dir);
	snprintf(d.log, sizeof(d.log), "%s/shmbusd.log", d.dir);
	jdir[0] = 0;
}

static char mnt[128];		/* a small filesystem a test mounted */

static void fini(void)
{
	if (d.pid > 0) {
		kill(d.pid, SIGTERM);
		th_wait(d.pid);
		d.pid = 0;
	}
	if (mnt[0])
		umount2(mnt, MNT_DETACH);
	mnt[0] = 0;
	teardown();
}

TestSuite(journal, .init = setup_dir, .fini = fini, .timeout = 120);

/* Message i: th_msg of a length that varies with i. */
static size_t len_of(uint64_t i)
{
	return TH_MSG_MIN + (i * 7919) % 600;
}

static void publish_range(shmbus_pub *p, uint64_t first, uint64_t n)
{
	uint8_t buf[2048];

	for (uint64_t i = first; i < first + n; i++) {
		int rc;

		th_msg_fill(buf, len_of(i), 1, i);
		while ((rc = shmbus_publish(p, buf, len_of(i))) == -EAGAIN)
			sched_yield();
		cr_assert_eq(rc, 0, "publish %lu: %d", (unsigned long)i, rc);
	}
}

static shmbus_channel *open_pub(shmbus_bus **bus, shmbus_pub **p)
{
	shmbus_channel *ch = open_role(bus, "j", SHMBUS_ROLE_PUBLISH);

	cr_assert(ch, "open: %s", strerror(errno));
	*p = shmbus_pub_open(ch, NULL);
	cr_assert(*p);
	return ch;
}

static void close_pub(shmbus_bus *bus, shmbus_channel *ch, shmbus_pub *p)
{
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* Waits until the journal has written everything committed. */
static void wait_written(shmbus_channel *ch, int sec)
{
	struct sb_jnl_view v;

	for (int i = 0; i < sec * 1000; i++) {
		sb_jnl_read(ch, &v);
		if ((v.state & SHMBUS_JNL_ON) && v.written == th_head(ch))
			return;
		usleep(1000);
	}
	sb_jnl_read(ch, &v);
	cr_assert_fail("journal at %lu, head %lu, state %#x",
		       (unsigned long)v.written, (unsigned long)th_head(ch),
		       v.state);
}

/* Replays from `from` and checks messages first..first+n-1 in order, each
 * intact; returns how many came from the journal. */
static uint64_t replay_check(shmbus_channel *ch, uint64_t from,
			     uint64_t first, uint64_t n)
{
	shmbus_replay *r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION,
					      from, NULL);
	struct shmbus_replay_stats st;
	uint8_t buf[2048];
	uint64_t i = first;
	int64_t idle = 0;

	cr_assert(r, "replay_open: %s", strerror(errno));
	while (i < first + n) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, buf, sizeof(buf), &m);
		uint64_t seq;
		uint32_t id;

		if (len == -EAGAIN) {
			cr_assert_lt(++idle, 5000, "stalled at message %lu",
				     (unsigned long)i);
			usleep(1000);
			continue;
		}
		idle = 0;
		cr_assert_geq(len, 0, "read: %zd at message %lu", len,
			      (unsigned long)i);
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0,
			     "message %lu damaged", (unsigned long)i);
		cr_assert_eq(seq, i, "message %lu where %lu was due",
			     (unsigned long)seq, (unsigned long)i);
		cr_assert_eq((size_t)len, len_of(i));
		cr_assert_eq(m.lost, 0);
		i++;
	}
	shmbus_replay_stats(r, &st);
	shmbus_replay_close(r);
	return st.from_journal;
}

static int count_segments(void)
{
	uint64_t *b;
	size_t k;

	if (sb_jlist(cdir, &b, &k))
		return 0;
	free(b);
	return (int)k;
}

Test(journal, messages_are_journaled_and_replayed_byte_for_byte)
{
	uint64_t n = th_env_count("SHMBUS_JOURNAL_N", 1000000), fromj;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	conf_with("journal_segment = 256K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, n);
	wait_written(ch, 10);
	cr_assert_gt(count_segments(), 100, "many segments");
	/* The ring holds the last 64 KiB: nearly all from the journal. */
	fromj = replay_check(ch, 0, 0, n);
	cr_assert_gt(fromj, n * 9 / 10, "from the journal: %lu",
		     (unsigned long)fromj);
	close_pub(bus, ch, p);
}

/* A producer in its own process, publishing messages first..first+n-1. */
static uint64_t child_first, child_n;

static int producer(void *arg)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	(void)arg;
	ch = open_pub(&bus, &p);
	publish_range(p, child_first, child_n);
	close_pub(bus, ch, p);
	return 0;
}

Test(journal, a_late_joiner_moves_from_the_journal_into_the_live_ring)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	pid_t prod;
	uint64_t fromj;

	conf_with("journal_segment = 128K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 20000);
	close_pub(bus, ch, p);
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	child_first = 20000;
	child_n = 200000;
	prod = th_spawn(producer, NULL);
	/* While it publishes: everything from position 0, once, in order. */
	fromj = replay_check(ch, 0, 0, 220000);
	cr_assert_eq(th_wait(prod), 0);
	cr_assert_geq(fromj, 20000);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(journal, pub_sync_at_persisted_returns_with_the_bytes_in_the_file)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	struct sb_jgeom g;
	char why[128];

	conf_with("acknowledge = persisted\njournal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	cr_assert_eq(sb_jgeom_make(&g, "j", 64 << 10, 64 << 10, 2048,
				   sb_channel_flags(SHMBUS_BLOCK,
						    SHMBUS_SINGLE_PRODUCER),
				   why, sizeof(why)), 0);
	for (uint64_t i = 0; i < 300; i++) {
		uint8_t rec[2048 + 16];
		uint64_t pos = th_head(ch), seq = UINT64_MAX;
		struct sb_jrec r;
		char path[512];
		int fd;

		publish_range(p, i, 1);
		cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
		/* Now, not a moment later: the record is in its segment,
		 * sealed, and the header says it is synced. */
		sb_jnl_read(ch, &v);
		/* The message, or padding to the ring's end before it. */
		for (int k = 0; k < 2; k++) {
			cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir,
						  pos & ~(uint64_t)0xffff), 0);
			fd = open(path, O_RDONLY);
			cr_assert_geq(fd, 0, "%s", path);
			cr_assert_gt(pread(fd, rec, sizeof(rec),
					   SHMBUS_JSEG_HDR + (pos & 0xffff)), 8);
			close(fd);
			cr_assert_eq(sb_jrec_check(&g, pos, rec, sizeof(rec),
						   &seq, &r, why, sizeof(why)),
				     1, "%s", why);
			if (r.type != SHMBUS_REC_PAD)
				break;
			pos += r.size;
		}
		cr_assert_eq(r.type, SHMBUS_REC_MSG);
		cr_assert_geq(v.persisted, pos + r.size);
		cr_assert_eq(r.seq, i);
		cr_assert_eq(r.len, len_of(i));
	}
	close_pub(bus, ch, p);
}

/* kill -9 of the daemon while a producer publishes: after the restart,
 * the journal holds every message once, in order. */
Test(journal, kill_9_of_the_daemon_mid_append_loses_and_repeats_nothing)
{
	uint64_t n = 150000;
	shmbus_channel *ch;
	shmbus_bus *bus;
	pid_t prod;
	int st;

	conf_with("journal_segment = 64K\njournal_fsync = interval\n", NULL);
	start_daemon();
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	child_first = 0;
	child_n = n;
	prod = th_spawn(producer, NULL);
	for (int k = 0; k < 3; k++) {
		usleep(30000 + k * 20000);
		kill(d.pid, SIGKILL);
		waitpid(d.pid, &st, 0);
		d.pid = 0;
		usleep(20000);
		start_daemon();
	}
	cr_assert_eq(th_wait(prod), 0);
	wait_written(ch, 10);
	replay_check(ch, 0, 0, n);
	cr_assert(!log_has("gap ["), "no gap: the journal's cursor held");
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* SIGSTOP of the daemon, and waits until the kernel says it is stopped
 * (the signal is delivered asynchronously: until then it still runs). */
static void pause_daemon(void)
{
	char path[64], st[512], *p;

	kill(d.pid, SIGSTOP);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)d.pid);
	for (int i = 0; i < 2000; i++) {
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(st, 1, sizeof(st) - 1, f) : 0;

		if (f)
			fclose(f);
		st[n] = 0;
		p = strrchr(st, ')');
		if (p && p[1] == ' ' && p[2] == 'T')
			return;
		usleep(1000);
	}
	cr_assert_fail("shmbusd did not stop");
}

/* Removes the channel's files from the shm dir, as a reboot would. */
static void remove_ring(void)
{
	DIR *dd = opendir(d.dir);
	struct dirent *e;

	cr_assert(dd);
	while ((e = readdir(dd))) {
		char path[512];

		if (strncmp(e->d_name, "j", 1) && strncmp(e->d_name, ".j", 2))
			continue;
		snprintf(path, sizeof(path), "%s/%s", d.dir, e->d_name);
		unlink(path);
	}
	closedir(dd);
}

static void stop_daemon(void)
{
	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
}

Test(journal, after_a_reboot_the_ring_continues_where_the_journal_ends)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t end;

	conf_with("journal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 30000);
	wait_written(ch, 10);
	end = th_head(ch);
	close_pub(bus, ch, p);
	stop_daemon();
	remove_ring();
	start_daemon();
	cr_assert(log_has("continues at"), "the log says so");
	ch = open_pub(&bus, &p);
	cr_assert_eq(th_head(ch), end, "positions never go back");
	publish_range(p, 30000, 5000);
	wait_written(ch, 10);
	/* One history: the old messages from the journal, then the new. */
	replay_check(ch, 0, 0, 35000);
	close_pub(bus, ch, p);
}

Test(journal, replay_by_time_starts_near_that_time)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct timespec ts;
	uint8_t buf[2048];
	uint64_t first = UINT64_MAX, count = 0;
	int64_t t;

	conf_with("journal_segment = 128K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 3000);
	wait_written(ch, 10);
	usleep(50000);
	clock_gettime(CLOCK_REALTIME, &ts);
	t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	usleep(50000);
	publish_range(p, 3000, 3000);
	wait_written(ch, 10);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_TIME, (uint64_t)t, NULL);
	cr_assert(r, "%s", strerror(errno));
	for (;;) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, buf, sizeof(buf), &m);
		uint64_t seq;
		uint32_t id;

		if (len == -EAGAIN)
			break;
		cr_assert_geq(len, 0);
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0);
		if (first == UINT64_MAX)
			first = seq;
		count++;
	}
	shmbus_replay_close(r);
	/* Everything after t, and of before it at most one index step
	 * (64 KiB of ~330-byte records). */
	cr_assert_leq(first, 3000, "starts at %lu", (unsigned long)first);
	cr_assert_geq(first, 3000 - 64 * 1024 / 24, "starts at %lu",
		      (unsigned long)first);
	cr_assert_eq(first + count, 6000);
	close_pub(bus, ch, p);
}

/* A journal turned on while the channel had records starts in the middle
 * of its first segment: a replay by a time before it starts there. */
Test(journal, replay_by_time_before_a_journal_that_began_late_starts_at_it)
{
	char body[1024];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_msg m;
	uint8_t buf[2048];
	uint64_t seq;
	uint32_t id;
	ssize_t len;

	conf_with("", NULL);
	snprintf(body, sizeof(body), "journal_dir = %s\n[defaults]\n"
		 "publish = *\nsubscribe = *\n[channel j]\ncapacity = 64K\n"
		 "max_msg = 2048\n", jdir);
	write_conf(body);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 300);
	close_pub(bus, ch, p);
	stop_daemon();
	conf_with("journal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 300, 3000);
	wait_written(ch, 10);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_TIME, 1, NULL);
	cr_assert(r, "replay from a time before the journal: %s",
		  strerror(errno));
	len = shmbus_replay_read(r, buf, sizeof(buf), &m);
	cr_assert_geq(len, 0, "%s", strerror((int)-len));
	cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0);
	cr_assert_leq(seq, 300, "the first message journaled, or the ring's "
		      "oldest: %lu", (unsigned long)seq);
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
}

Test(journal, retention_keeps_what_a_reader_holds_and_then_removes_it)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	uint8_t buf[2048];
	char first[512];

	conf_with("journal_segment = 64K\njournal_retain_bytes = 512K\n",
		  NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 500);
	wait_written(ch, 10);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r);
	cr_assert_geq(shmbus_replay_read(r, buf, sizeof(buf), NULL), 0);
	publish_range(p, 500, 20000);
	wait_written(ch, 10);
	usleep(300000);
	cr_assert_eq(sb_jseg_path(first, sizeof(first), cdir, 0), 0);
	cr_assert_eq(access(first, F_OK), 0, "held by the reader");
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.keep, SHMBUS_JKEEP_READER);
	shmbus_replay_close(r);
	for (int i = 0; i < 300 && access(first, F_OK) == 0; i++)
		usleep(10000);
	cr_assert_neq(access(first, F_OK), 0, "removed once released");
	/* Then all it keeps is within journal_retain_bytes: 7 segments
	 * (68 KiB each with its header page) and the one being written. */
	for (int i = 0; i < 300 && count_segments() > 8; i++)
		usleep(10000);
	cr_assert_leq(count_segments(), 8);
	/* What retention removed is a clear error. */
	cr_assert_null(shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0,
					  NULL));
	cr_assert_eq(errno, ERANGE);
	close_pub(bus, ch, p);
}

Test(journal, a_segment_of_another_channel_or_format_is_refused)
{
	struct shmbus_jseg_hdr h;
	struct sb_jgeom g;
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	char path[512], why[128];
	int fd;

	conf_with("journal_segment = 64K\n", NULL);
	cr_assert_eq(mkdir(jdir, 0755), 0);
	cr_assert_eq(mkdir(cdir, 0755), 0);
	cr_assert_eq(sb_jgeom_make(&g, "other", 64 << 10, 64 << 10, 2048,
				   sb_channel_flags(SHMBUS_BLOCK,
						    SHMBUS_SINGLE_PRODUCER),
				   why, sizeof(why)), 0);
	sb_jseg_hdr_make(&h, &g, 0, 0, 0);
	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, 0), 0);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert_eq(ftruncate(fd, SHMBUS_JSEG_HDR + (64 << 10)), 0);
	close(fd);
	start_daemon();
	cr_assert(log_has("belongs to channel 'other'"));
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.state & SHMBUS_JNL_ON, 0, "not written");
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	stop_daemon();

	/* This channel's, in a format version this build does not read. */
	cr_assert_eq(sb_jgeom_make(&g, "j", 64 << 10, 64 << 10, 2048,
				   sb_channel_flags(SHMBUS_BLOCK,
						    SHMBUS_SINGLE_PRODUCER),
				   why, sizeof(why)), 0);
	sb_jseg_hdr_make(&h, &g, 0, 0, 0);
	h.version = SHMBUS_JSEG_VERSION + 1;
	h.crc = sb_crc32c(0, &h, offsetof(struct shmbus_jseg_hdr, crc));
	fd = open(path, O_WRONLY);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	start_daemon();
	cr_assert(log_has("this build reads versions 1 to 2"));
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.state & SHMBUS_JNL_ON, 0, "not written");
	/* The segment is still there, untouched: nothing is deleted. */
	cr_assert_eq(access(path, F_OK), 0);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* Every record of the journal in cdir, in order. */
struct recs {
	uint64_t pos[8192], size[8192], seq[8192];
	uint32_t type[8192];
	size_t n;
	uint64_t end;
};

static void read_all(struct recs *rs)
{
	struct sb_jreader r;
	struct sb_jrec rec;
	uint64_t *b;
	size_t k;
	int rc;

	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_eq(sb_jreader_init(&r, cdir, NULL), 0);
	cr_assert_eq(sb_jreader_seek(&r, b[0]), 0);
	free(b);
	rs->n = 0;
	while ((rc = sb_jreader_next(&r, UINT64_MAX, &rec)) == 1) {
		cr_assert_lt(rs->n, 8192);
		rs->pos[rs->n] = rec.pos;
		rs->size[rs->n] = rec.size;
		rs->seq[rs->n] = rec.seq;
		rs->type[rs->n] = rec.type;
		rs->n++;
	}
	cr_assert_eq(rc, 0, "%s", r.why);
	rs->end = r.pos;
	sb_jreader_close(&r);
}

static void put_file(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static uint8_t *get_file(const char *path, size_t *len)
{
	struct stat st;
	uint8_t *buf;
	int fd = open(path, O_RDONLY);

	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	cr_assert_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* Removes every segment and index after base (and spares). */
static void remove_after(uint64_t base)
{
	DIR *dd = opendir(cdir);
	struct dirent *e;

	cr_assert(dd);
	while ((e = readdir(dd))) {
		unsigned long long b;
		char path[600];

		if (e->d_name[0] == '.' && strstr(e->d_name, ".tmp"))
			;
		else if (sscanf(e->d_name, "%16llx", &b) != 1 || b <= base)
			continue;
		snprintf(path, sizeof(path), "%s/%s", cdir, e->d_name);
		unlink(path);
	}
	closedir(dd);
}

/*
 * A power loss, simulated on the newest segment after a clean stop (the
 * ring removed too, as a reboot removes it): the file truncated at a
 * random offset, garbage written after the last record, or one bit
 * flipped.  Recovery must end exactly before the first record the damage
 * touched, and the new ring continue there.
 */
Test(journal, a_power_loss_recovers_to_exactly_the_last_valid_record)
{
	static struct recs orig, got;
	uint64_t last, end;
	uint8_t *seg, *tix;
	size_t seg_len, tix_len;
	char segp[512], tixp[512];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	conf_with("journal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 3000);
	wait_written(ch, 10);
	close_pub(bus, ch, p);
	stop_daemon();
	read_all(&orig);
	end = orig.end;
	last = (end - 1) & ~(uint64_t)0xffff;
	cr_assert_gt(end - last, 20000, "a well filled newest segment");
	sb_jseg_path(segp, sizeof(segp), cdir, last);
	sb_jtix_path(tixp, sizeof(tixp), cdir, last);
	seg = get_file(segp, &seg_len);
	tix = get_file(tixp, &tix_len);
	srand(11);
	for (int trial = 0; trial < 12; trial++) {
		uint64_t off, at, want = end, msgs = 0;
		int kind = trial % 3, fd;

		remove_after(last);
		put_file(segp, seg, seg_len);
		put_file(tixp, tix, tix_len);
		fd = open(segp, O_RDWR);
		cr_assert(fd >= 0);
		/* A byte position inside what the segment holds. */
		at = last + (uint64_t)rand() % (end - last);
		off = SHMBUS_JSEG_HDR + (at - last);
		if (kind == 0) {
			cr_assert_eq(ftruncate(fd, (off_t)off), 0);
		} else if (kind == 1) {
			uint8_t junk[512];

			for (size_t i = 0; i < sizeof(junk); i++)
				junk[i] = (uint8_t)rand();
			at = end;
			cr_assert_eq(pwrite(fd, junk, sizeof(junk),
					    SHMBUS_JSEG_HDR + (end - last)),
				     (ssize_t)sizeof(junk));
		} else {
			uint8_t c;

			cr_assert_eq(pread(fd, &c, 1, (off_t)off), 1);
			c ^= (uint8_t)(1u << (rand() % 8));
			cr_assert_eq(pwrite(fd, &c, 1, (off_t)off), 1);
		}
		close(fd);
		/* The first record the damage touches, and all after it, go:
		 * for a cut, any record that does not end before it; for a
		 * flip, the one whose checked bytes hold it (a record's
		 * alignment padding is not checked). */
		for (size_t i = 0; i < orig.n; i++) {
			uint64_t pos = orig.pos[i];
			uint64_t need = orig.type[i] == SHMBUS_REC_PAD ? 8
					: orig.size[i];
			uint64_t checked = orig.type[i] == SHMBUS_REC_PAD ? 8 :
				16 + (uint64_t)len_of(orig.seq[i]);

			if (kind == 0 && pos + need > at) {
				want = pos;
				break;
			}
			if (kind == 2 && at >= pos && at < pos + checked) {
				want = pos;
				break;
			}
			msgs += orig.type[i] == SHMBUS_REC_MSG;
		}
		remove_ring();
		start_daemon();
		ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
		cr_assert(ch);
		read_all(&got);
		cr_assert_eq(got.end, want, "trial %d (%s at %lu): ends at "
			     "%lu, not %lu", trial, kind == 0 ? "cut" :
			     kind == 1 ? "garbage" : "flip", (unsigned long)at,
			     (unsigned long)got.end, (unsigned long)want);
		cr_assert_eq(th_head(ch), want, "the ring continues there");
		shmbus_channel_close(ch);
		shmbus_disconnect(bus);
		/* New records over the cleared tail: nothing of the old one
		 * is ever read as theirs. */
		ch = open_pub(&bus, &p);
		publish_range(p, msgs, 40);
		wait_written(ch, 10);
		read_all(&got);
		cr_assert_eq(got.end, th_head(ch));
		replay_check(ch, 0, 0, msgs + 40);
		close_pub(bus, ch, p);
		stop_daemon();
	}
	free(seg);
	free(tix);
}

/* A record word zeroed in the middle of the newest segment stops the
 * walk as if the journal ended there, but written records follow: that
 * is damage, which `journal verify` reports and recovery logs, never an
 * end in silence. */
Test(journal, a_zeroed_record_word_with_records_after_it_is_damage)
{
	static struct recs orig, got;
	uint64_t last, mid = 0, zero = 0;
	char segp[512], cmd[768], line[512];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	int fd;

	conf_with("journal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 3000);
	wait_written(ch, 10);
	close_pub(bus, ch, p);
	stop_daemon();
	read_all(&orig);
	last = (orig.end - 1) & ~(uint64_t)0xffff;
	for (size_t i = 0; i < orig.n && !mid; i++)
		if (orig.pos[i] > last + (orig.end - last) / 2 &&
		    orig.type[i] == SHMBUS_REC_MSG)
			mid = orig.pos[i];
	cr_assert(mid);
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl journal verify %s "
		 ">/dev/null", cdir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	sb_jseg_path(segp, sizeof(segp), cdir, last);
	fd = open(segp, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, &zero, 8, (off_t)(SHMBUS_JSEG_HDR +
						  (mid - last))), 8);
	close(fd);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 4, "verify says the journal "
		     "is intact");
	remove_ring();
	start_daemon();
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	read_all(&got);
	cr_assert_eq(got.end, mid);
	snprintf(line, sizeof(line), "recovered through %llu; cleared from "
		 "there on: a zero record word at %llu, but bytes are written",
		 (unsigned long long)mid, (unsigned long long)mid);
	cr_assert(log_has(line), "not said: %s", line);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	stop_daemon();
}

Test(journal, a_full_disk_stops_persisted_acks_until_space_returns)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	char filler[256];
	int fd;

	snprintf(mnt, sizeof(mnt), "%s/fs", d.dir);
	cr_assert_eq(mkdir(mnt, 0755), 0);
	cr_assert_eq(mount("tmpfs", mnt, "tmpfs", 0, "size=4m"), 0,
		     "mount a 4 MiB tmpfs (the suite runs as root): %s",
		     strerror(errno));
	snprintf(jdir, sizeof(jdir), "%s", mnt);
	conf_with("acknowledge = persisted\njournal_segment = 64K\n",
		  "journal_min_free = 1M\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 10);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	/* Leave less than 1 MiB free. */
	snprintf(filler, sizeof(filler), "%s/filler", mnt);
	fd = open(filler, O_WRONLY | O_CREAT, 0600);
	cr_assert(fd >= 0);
	for (int i = 0; i < 3400; i++) {
		uint8_t k[1024] = { 1 };

		if (write(fd, k, sizeof(k)) != (ssize_t)sizeof(k))
			break;
	}
	close(fd);
	for (int i = 0; i < 200; i++) {
		sb_jnl_read(ch, &v);
		if (v.state & SHMBUS_JNL_DISK_FULL)
			break;
		usleep(10000);
	}
	cr_assert(v.state & SHMBUS_JNL_DISK_FULL, "reported");
	cr_assert(log_has("below journal_min_free"));
	publish_range(p, 10, 10);
	cr_assert_eq(shmbus_pub_sync(p, 300000000), -ETIMEDOUT,
		     "never acknowledged as persisted while full");
	unlink(filler);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0, "resumes by itself");
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.state & SHMBUS_JNL_DISK_FULL, 0);
	close_pub(bus, ch, p);
	replay_check(ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE), 0, 0,
		     20);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A crash tore the newest time index's last entry: after the restart the
 * index is cut there, so that the entries appended after it are found
 * (else a lookup stops at the torn one and falls back to the first). */
Test(journal, a_torn_time_index_is_cut_and_appended_to)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_msg m;
	struct timespec ts;
	uint8_t buf[2048];
	char tix[512];
	ssize_t len;
	int64_t t;
	int fd;

	conf_with("journal_segment = 1M\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 100);	/* < 64 KiB: one entry, at 0 */
	wait_written(ch, 10);
	cr_assert_lt(th_head(ch), 65536);
	close_pub(bus, ch, p);
	stop_daemon();
	cr_assert_eq(sb_jtix_path(tix, sizeof(tix), cdir, 0), 0);
	fd = open(tix, O_WRONLY | O_APPEND);
	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, "torn", 4), 4);
	close(fd);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 100, 400);	/* past 64 KiB: an entry */
	wait_written(ch, 10);
	usleep(20000);
	clock_gettime(CLOCK_REALTIME, &ts);
	t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	usleep(20000);
	publish_range(p, 500, 400);
	wait_written(ch, 10);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_TIME, (uint64_t)t, NULL);
	cr_assert(r, "%s", strerror(errno));
	len = shmbus_replay_read(r, buf, sizeof(buf), &m);
	cr_assert_geq(len, 0);
	cr_assert_geq(m.pos, 65536, "from the entry written after the "
		      "restart, not from %lu", (unsigned long)m.pos);
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
}

/* Replays the whole journal from 0, checking every message whole and in
 * order: how many it delivered, the sum of their `lost`, and the last
 * sequence number.  `exact`: each `lost` must be the sequence numbers
 * skipped just before its message (no dead producer's claim in the way). */
static void replay_from_0(shmbus_channel *ch, bool exact, uint64_t *got,
			  uint64_t *lost, uint64_t *last)
{
	shmbus_replay *r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0,
					      NULL);
	uint8_t buf[2048];

	cr_assert(r, "%s", strerror(errno));
	*got = *lost = 0;
	*last = UINT64_MAX;
	for (;;) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, buf, sizeof(buf), &m);
		uint64_t seq, next = *last + 1;	/* 0 at first */
		uint32_t id;

		if (len == -EAGAIN)
			break;
		cr_assert_geq(len, 0, "read: %zd", len);
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0);
		cr_assert(*last == UINT64_MAX || seq > *last, "in order");
		if (exact)
			cr_assert_eq(m.lost, seq - next, "lost %lu before %lu",
				     (unsigned long)m.lost,
				     (unsigned long)seq);
		*lost += m.lost;
		*last = seq;
		(*got)++;
	}
	shmbus_replay_close(r);
}

/* An overwrite channel of 16 KiB with a journal (`keys` added to its
 * section): `before` messages journaled, `during` more while shmbusd is
 * stopped (a lap or more: a gap), then `after` more, each waited for. */
static shmbus_channel *lapped_journal(const char *keys, uint64_t before,
				      uint64_t during, uint64_t after,
				      shmbus_bus **bus, shmbus_pub **p)
{
	shmbus_channel *ch;
	char all[1024];

	snprintf(jdir, sizeof(jdir), "%s/jnl", d.dir);
	snprintf(cdir, sizeof(cdir), "%s/j", jdir);
	snprintf(all, sizeof(all),
		 "journal_dir = %s\n[defaults]\npublish = *\n"
		 "subscribe = *\n[channel j]\ncapacity = 16K\n"
		 "max_msg = 1K\npolicy = overwrite\njournal = on\n%s",
		 jdir, keys);
	write_conf(all);
	start_daemon();
	ch = open_pub(bus, p);
	publish_range(*p, 0, before);
	if (before)
		wait_written(ch, 10);
	pause_daemon();
	publish_range(*p, before, during);
	kill(d.pid, SIGCONT);
	wait_written(ch, 10);
	publish_range(*p, before + during, after);
	wait_written(ch, 10);
	return ch;
}

/* A replay from 0 tells every one of n messages: delivered or lost, the
 * loss said (lost > 0). */
static void replay_tells_all(shmbus_channel *ch, bool exact, uint64_t n)
{
	uint64_t got, lost, last;

	replay_from_0(ch, exact, &got, &lost, &last);
	cr_assert_eq(last, n - 1, "up to the last");
	cr_assert_gt(lost, 0);
	cr_assert_eq(got + lost, n, "%lu delivered, %lu lost",
		     (unsigned long)got, (unsigned long)lost);
}

/* An overwrite channel laps a journal that cannot keep up (shmbusd
 * stopped): the journal records the range it lost, counts it, and goes
 * on at the ring's oldest record; a replay sees every message it kept,
 * in order, and is told how many it lost, exactly where. */
Test(journal, a_lapped_journal_records_its_gap)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	uint8_t buf[2048];
	uint64_t next = 0, got = 0, lost = 0;

	/* Less than a lap, several laps while shmbusd is stopped, then less
	 * than a lap again. */
	ch = lapped_journal("journal_segment = 64K\n", 30, 2000, 30, &bus, &p);
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.gaps, 1, "one gap: %lu", (unsigned long)v.gaps);
	cr_assert_gt(v.gap_bytes, 16384);
	cr_assert(log_has("journal: gap ["));
	replay_from_0(ch, true, &got, &lost, &next);
	next++;
	cr_assert_eq(next, 2060, "up to the last");
	cr_assert_eq(got + lost, 2060);
	cr_assert_gt(lost, 0);
	cr_assert_geq(got, 60, "the first 30 and the last 30 at least");
	/* A replay opened where the gap begins (after the last message
	 * before it) is told the same loss at its first message. */
	{
		uint64_t at = UINT64_MAX, seen = 0;
		struct shmbus_msg m, prev = { 0 };

		r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
		cr_assert(r, "%s", strerror(errno));
		while (shmbus_replay_read(r, buf, sizeof(buf), &m) >= 0) {
			if (m.lost) {
				at = prev.pos + SHMBUS_REC_HDR +
				     ((prev.len + 7u) & ~7u);
				seen = m.lost;
				break;
			}
			prev = m;
		}
		shmbus_replay_close(r);
		cr_assert_neq(at, UINT64_MAX);
		r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, at, NULL);
		cr_assert(r, "open at %lu: %s", (unsigned long)at,
			  strerror(errno));
		cr_assert_geq(shmbus_replay_read(r, buf, sizeof(buf), &m), 0);
		cr_assert_eq(m.lost, seen, "opened at the gap (%lu): lost %lu, "
			     "from 0: %lu", (unsigned long)at,
			     (unsigned long)m.lost, (unsigned long)seen);
		shmbus_replay_close(r);
	}
	/* The same, each message first asked for with a buffer too small
	 * for it: refused, it stays the next one, its `lost` with it. */
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "%s", strerror(errno));
	next = 0;
	for (uint64_t n = 0, l = 0;; n++) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, buf, 1, &m);
		uint64_t seq;
		uint32_t id;

		if (len == -EAGAIN) {
			cr_assert_eq(n, got);
			cr_assert_eq(l, lost);
			break;
		}
		cr_assert_eq(len, -EMSGSIZE);
		len = shmbus_replay_read(r, buf, sizeof(buf), &m);
		cr_assert_geq(len, 0, "read: %zd", len);
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0);
		cr_assert_eq(m.lost, seq - next, "lost %lu before %lu, after a "
			     "refusal", (unsigned long)m.lost,
			     (unsigned long)seq);
		l += m.lost;
		next = seq + 1;
	}
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
}

/* The channel "j" with `keys` (its capacity among them). */
static void conf_raw(const char *keys)
{
	char all[2048];

	snprintf(jdir, sizeof(jdir), "%s/jnl", d.dir);
	snprintf(cdir, sizeof(cdir), "%s/j", jdir);
	snprintf(all, sizeof(all),
		 "journal_dir = %s\n[defaults]\npublish = *\n"
		 "subscribe = *\n[channel j]\njournal = on\n%s", jdir, keys);
	write_conf(all);
}

/* A batch that wraps the ring leaves padding longer than the agent's
 * 1 MiB buffer: the journal writes it as its word and goes on (it once
 * stalled there, holding the producers for good). */
Test(journal, padding_longer_than_the_agents_buffer)
{
	static uint8_t bufs[1000][1984];
	struct iovec iov[1000];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t i = 0;

	conf_raw("capacity = 4M\nmax_msg = 2048\njournal_segment = 4M\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	while (th_head(ch) < (4u << 20) - (1536u << 10))
		publish_range(p, i++, 1);	/* up to 1.5 MiB from the end */
	for (int k = 0; k < 1000; k++) {
		th_msg_fill(bufs[k], sizeof(bufs[k]), 1, i + (uint64_t)k);
		iov[k] = (struct iovec){ bufs[k], sizeof(bufs[k]) };
	}
	{
		int rc;

		/* Room for it once the journal has what is there. */
		while ((rc = shmbus_publish_batch(p, iov, 1000)) == -EAGAIN)
			usleep(100);
		cr_assert_eq(rc, 1000, "batch: %d", rc);
	}
	wait_written(ch, 10);
	publish_range(p, i + 1000, 3000);	/* another lap and more */
	wait_written(ch, 10);
	close_pub(bus, ch, p);
}

/* A journal that cannot start (its segment size changed): the channel
 * goes on without it, its producers not held by the old cursor, and a
 * channel that acknowledges persisted acknowledges nothing. */
Test(journal, a_journal_that_cannot_start_holds_no_producer)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	conf_raw("capacity = 64K\nmax_msg = 2048\njournal_segment = 64K\n"
		 "acknowledge = persisted\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 100);
	cr_assert_eq(shmbus_pub_sync(p, 2000000000), 0);
	close_pub(bus, ch, p);
	stop_daemon();
	conf_raw("capacity = 64K\nmax_msg = 2048\njournal_segment = 128K\n"
		 "acknowledge = persisted\n");
	start_daemon();
	cr_assert(log_has("journal not started"));
	ch = open_pub(&bus, &p);
	publish_range(p, 100, 1);
	cr_assert_eq(shmbus_pub_sync(p, 300000000), -ETIMEDOUT,
		     "never acknowledged as persisted");
	/* Several laps of the ring: nobody holds the producer. */
	publish_range(p, 101, 2000);
	close_pub(bus, ch, p);
}

/* A read with too small a buffer just past a segment's end leaves the
 * message for the next read, however often it happens. */
Test(journal, a_read_too_small_leaves_the_message_across_segments)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	uint8_t buf[4096];

	conf_with("journal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 3000);
	wait_written(ch, 10);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r);
	for (uint64_t next = 0; next < 3000; next++) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, NULL, 0, &m);
		uint64_t seq;
		uint32_t id;

		cr_assert_eq(len, -EMSGSIZE, "at %lu: %zd",
			     (unsigned long)next, len);
		len = shmbus_replay_read(r, buf, sizeof(buf), &m);
		cr_assert_geq(len, 0, "at %lu: %zd", (unsigned long)next, len);
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0);
		cr_assert_eq(seq, next);
	}
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
}

/* Two gaps on an overwrite channel that acknowledges persisted: a message
 * lost in the first is never acknowledged, whatever the second did. */
Test(journal, a_message_in_an_earlier_gap_is_never_acknowledged)
{
	shmbus_channel *ch, *ch2;
	shmbus_bus *bus, *bus2;
	shmbus_pub *a, *b;

	conf_raw("capacity = 16K\nmax_msg = 1K\npolicy = overwrite\n"
		 "producers = multi\njournal_segment = 64K\n"
		 "acknowledge = persisted\n");
	start_daemon();
	ch = open_pub(&bus, &a);
	ch2 = open_pub(&bus2, &b);
	publish_range(a, 0, 1);
	cr_assert_eq(shmbus_pub_sync(a, 2000000000), 0);
	pause_daemon();
	publish_range(a, 1, 1);			/* lost in the first gap */
	publish_range(b, 100000, 2000);
	kill(d.pid, SIGCONT);
	cr_assert_eq(shmbus_pub_sync(b, 2000000000), SHMBUS_SYNC_DEGRADED);
	pause_daemon();
	publish_range(b, 102000, 2000);		/* the second */
	kill(d.pid, SIGCONT);
	cr_assert_eq(shmbus_pub_sync(b, 2000000000), SHMBUS_SYNC_DEGRADED);
	cr_assert_eq(shmbus_pub_sync(a, 2000000000), SHMBUS_SYNC_DEGRADED,
		     "a message the journal never had");
	close_pub(bus2, ch2, b);
	close_pub(bus, ch, a);
}

/* A host crash lost a segment's unsynced tail but not its time index's:
 * after the reboot the index is cut at the recovered end, so that a
 * replay by a time after the reboot misses nothing journaled since. */
Test(journal, an_index_past_the_recovered_end_is_cut)
{
	static uint8_t zero[1 << 20];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_msg m;
	struct timespec ts;
	uint8_t buf[4096];
	char segp[600];
	uint64_t head, seq;
	uint32_t id;
	ssize_t len;
	int64_t t;
	int fd;

	conf_raw("capacity = 64K\nmax_msg = 2048\njournal_segment = 1M\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	for (uint64_t i = 0; i < 3000; i++) {
		uint8_t b[100];

		th_msg_fill(b, sizeof(b), 1, i);
		while (shmbus_publish(p, b, sizeof(b)) == -EAGAIN)
			sched_yield();
	}
	wait_written(ch, 10);
	close_pub(bus, ch, p);
	stop_daemon();
	/* The crash: everything past 100000 lost from the segment. */
	cr_assert_eq(sb_jseg_path(segp, sizeof(segp), cdir, 0), 0);
	fd = open(segp, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert_eq(pwrite(fd, zero, sizeof(zero) - 100000,
			    SHMBUS_JSEG_HDR + 100000),
		     (ssize_t)(sizeof(zero) - 100000));
	close(fd);
	remove_ring();
	start_daemon();
	ch = open_pub(&bus, &p);
	head = th_head(ch);
	cr_assert_leq(head, 100000);
	usleep(20000);
	clock_gettime(CLOCK_REALTIME, &ts);
	t = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	usleep(20000);
	for (uint64_t i = head / 120; i < head / 120 + 3000; i++) {
		uint8_t b[100];

		th_msg_fill(b, sizeof(b), 1, 1000000 + i);
		while (shmbus_publish(p, b, sizeof(b)) == -EAGAIN)
			sched_yield();
	}
	wait_written(ch, 10);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_TIME, (uint64_t)t, NULL);
	cr_assert(r, "%s", strerror(errno));
	len = shmbus_replay_read(r, buf, sizeof(buf), &m);
	cr_assert_geq(len, 0);
	cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0);
	cr_assert_leq(m.pos, head, "started at %lu, past the first record "
		      "journaled after t (%lu)", (unsigned long)m.pos,
		      (unsigned long)head);
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
}

/* As uid 65534 (nobody): replays the whole journal through shmbusd. */
static int nobody_replays(void *arg)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_replay *r;
	uint8_t buf[4096];
	uint64_t n = *(uint64_t *)arg, next = 0;
	char seg[600];

	if (setgid(65534) || setuid(65534))
		return 10;
	cr_assert_eq(sb_jseg_path(seg, sizeof(seg), cdir, 0), 0);
	if (open(seg, O_RDONLY) >= 0 || errno != EACCES)
		return 11;	/* the files are not ours to open */
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	if (!ch)
		return 12;
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	if (!r)
		return 13;
	while (next < n) {
		ssize_t len = shmbus_replay_read(r, buf, sizeof(buf), NULL);
		uint64_t seq;
		uint32_t id;

		if (len < 0 || th_msg_check(buf, (size_t)len, &id, &seq) ||
		    seq != next)
			return 14;
		next++;
	}
	shmbus_replay_close(r);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* The journal's files are the daemon's, mode 0600: a subscriber that the
 * channel's subscribe rule admits replays them through shmbusd, which
 * hands it each file read-only. */
Test(journal, a_subscriber_replays_files_it_cannot_open_itself)
{
	uint64_t n = 5000;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	conf_with("journal_segment = 64K\n", NULL);
	chmod(d.dir, 0755);	/* nobody reaches the socket */
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, n);
	wait_written(ch, 10);
	cr_assert_eq(th_wait(th_spawn(nobody_replays, &n)), 0);
	close_pub(bus, ch, p);
}

/* A multi producer's claim not committed yet, with the ring full behind
 * it up to the journal's cursor: the index then names a boundary past the
 * claim, but the ring still holds it.  The journal waits for the commit
 * and records no gap. */
Test(journal, a_slow_claim_on_a_full_ring_is_waited_for_not_a_gap)
{
	shmbus_channel *ch, *ch2;
	shmbus_bus *bus, *bus2;
	shmbus_pub *a, *b;
	uint8_t m[100] = { 1 };
	void *p;
	int n = 0, rc;

	conf_with("producers = multi\njournal_fsync = none\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &a);
	ch2 = open_pub(&bus2, &b);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(shmbus_publish(b, m, sizeof(m)), 0);
	wait_written(ch, 10);
	cr_assert_eq(shmbus_claim(a, sizeof(m), &p), 0);
	while ((rc = shmbus_publish(b, m, sizeof(m))) == 0)
		n++;
	cr_assert_eq(rc, -EAGAIN, "publish: %d", rc);
	cr_assert_gt(n, 100);
	usleep(200000);
	cr_assert(!log_has("journal: gap"), "a gap recorded over a claim");
	memset(p, 2, sizeof(m));
	cr_assert_eq(shmbus_commit(a), 0);
	wait_written(ch, 10);
	cr_assert(!log_has("journal: gap"));
	close_pub(bus, ch, a);
	close_pub(bus2, ch2, b);
}

/* Only names made as the daemon makes them (16 lower-case hex digits) are
 * segments: "0x...", a sign or spaces would name another base. */
Test(journal, only_canonical_names_are_segments)
{
	const char *dir = th_mkdir();
	const char *names[] = { "0000000000010000.seg", "-000000000000001.seg",
				"0x00000000000000.seg", " 000000000000001.seg",
				"00000000000000A0.seg", "0000000000020000.tix" };
	char path[256];
	uint64_t *b;
	size_t k;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		int fd;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		fd = open(path, O_WRONLY | O_CREAT, 0600);
		cr_assert(fd >= 0);
		close(fd);
	}
	cr_assert_eq(sb_jlist(dir, &b, &k), 0);
	cr_assert_eq(k, 1, "%zu segments", k);
	cr_assert_eq(b[0], 0x10000);
	free(b);
	th_rmdir(dir);
}

/* A daemon on the config with `keys`, and n messages published through
 * it and journaled. */
static shmbus_channel *journaled(const char *keys, uint64_t n,
				 shmbus_bus **bus, shmbus_pub **p)
{
	shmbus_channel *ch;

	conf_with(keys, NULL);
	start_daemon();
	ch = open_pub(bus, p);
	publish_range(*p, 0, n);
	wait_written(ch, 10);
	return ch;
}

/* Damage in the ring under the journal (a record across the ring's end,
 * which a live process that maps the ring wrote over its claim): the
 * journal says so and counts it as an error, holding everything before
 * it, rather than waiting there for ever without a word.  Once that
 * process is killed, shmbusd repairs its claim and the journal goes on. */
static int plant_across_the_end(void *arg)
{
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_channel *ch = open_pub(&bus, &p);
	uint8_t m[100] = { 3 };
	uint64_t pos, left;
	void *buf;

	while ((left = 65536 - (th_head(ch) & 65535)) > 2048 || left < 256)
		if (shmbus_publish(p, m, sizeof(m)))
			return 1;
	pos = th_head(ch);
	if (shmbus_claim(p, 64, &buf))
		return 2;
	*(uint64_t *)arg = pos;
	__atomic_store_n(&rec_at(ch, pos)->commit,
			 commit_word(ch, pos, SHMBUS_REC_MSG, (uint32_t)left),
			 __ATOMIC_RELEASE);
	for (;;)
		pause();
}

Test(journal, damage_in_the_ring_is_said_not_waited_on_in_silence)
{
	uint64_t *at = mmap(NULL, 8, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	pid_t pid;

	cr_assert(at != MAP_FAILED);
	*at = UINT64_MAX;
	ch = journaled("journal_fsync = none\n", 10, &bus, &p);
	close_pub(bus, ch, p);
	pid = th_spawn(plant_across_the_end, at);
	for (int i = 0; i < 3000 && *at == UINT64_MAX; i++)
		usleep(1000);
	cr_assert_neq(*at, UINT64_MAX);
	for (int i = 0; i < 3000 && !log_has("journal: the ring is damaged at");
	     i++)
		usleep(1000);
	cr_assert(log_has("journal: the ring is damaged at"));
	cr_assert(log_has("cross the ring's end"));
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	sb_jnl_read(ch, &v);
	cr_assert(v.state & SHMBUS_JNL_ERROR, "state %#x", v.state);
	cr_assert_eq(v.written, *at, "written to %lu, the damage at %lu",
		     (unsigned long)v.written, (unsigned long)*at);
	cr_assert_eq(v.gaps, 0);
	kill(pid, SIGKILL);
	th_wait(pid);
	wait_written(ch, 10);
	sb_jnl_read(ch, &v);
	cr_assert_not(v.state & SHMBUS_JNL_ERROR, "state %#x", v.state);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	munmap(at, 8);
}

/* A head written more than a lap ahead of the journal: a damaged header,
 * not records the journal missed, on a block channel (the journal's
 * cursor holds its producers a lap behind the journal) and where no
 * record is indexed in the lap below that head (producers that lap an
 * overwrite channel's journal index their records as they go).  It is
 * said, no gap is recorded, and the journal goes on once the header is
 * right again. */
static void head_a_lap_ahead(const char *keys)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t head;

	ch = journaled(keys, 100, &bus, &p);
	head = th_head(ch);
	__atomic_store_n(&ch->hdr->head, head + 8 * 65536, __ATOMIC_RELEASE);
	for (int i = 0; i < 3000 && !log_has("more than a lap ahead"); i++)
		usleep(1000);
	__atomic_store_n(&ch->hdr->head, head, __ATOMIC_RELEASE);
	cr_assert(log_has("journal: the ring is damaged at"));
	cr_assert(!log_has("journal: gap"), "a gap recorded");
	publish_range(p, 100, 100);
	wait_written(ch, 10);
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.gaps, 0);
	replay_check(ch, 0, 0, 200);
	close_pub(bus, ch, p);
}

Test(journal, a_head_a_lap_ahead_on_a_block_channel_is_no_gap)
{
	head_a_lap_ahead("journal_fsync = none\n");
}

Test(journal, a_head_a_lap_ahead_with_nothing_indexed_is_no_gap)
{
	head_a_lap_ahead("journal_fsync = none\npolicy = overwrite\n");
}

/* A channel's owner gets no write access to its journal: the directory
 * and the files are the daemon's, the channel's group reads them. */
Test(journal, the_files_are_the_daemons_whoever_owns_the_channel)
{
	char seg[600];
	struct stat st;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	ch = journaled("owner = nobody\ngroup = nogroup\nmode = 0660\n", 10,
		       &bus, &p);
	cr_assert_eq(sb_jseg_path(seg, sizeof(seg), cdir, 0), 0);
	cr_assert_eq(stat(cdir, &st), 0);
	cr_assert_eq(st.st_uid, geteuid(), "the directory's owner: %u",
		     st.st_uid);
	cr_assert_eq(st.st_mode & 0777, 0750, "mode %o", st.st_mode & 0777);
	cr_assert_eq(stat(seg, &st), 0);
	cr_assert_eq(st.st_uid, geteuid(), "the segment's owner: %u",
		     st.st_uid);
	cr_assert_eq(st.st_mode & 0777, 0640, "mode %o", st.st_mode & 0777);
	close_pub(bus, ch, p);
}

/* A producer that claims room for a message and stops there (after its
 * claim's hand-off: the claim has taken a sequence number), until
 * killed; it says "claimed" on *at by the claim's position. */
static int claim_and_stop(void *arg)
{
	uint64_t *at = arg;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_channel *ch = open_pub(&bus, &p);
	void *buf;

	if (shmbus_claim(p, 100, &buf))
		return 2;
	__atomic_store_n(at, th_head(ch), __ATOMIC_RELEASE);
	for (;;)
		pause();
}

/*
 * A multi producer killed inside its claim: shmbusd pads the claim, whose
 * sequence number no message ever had.  A subscriber of the ring counts
 * nothing lost there, and neither does a replay of the journal (which
 * once counted one lost message for each such claim).
 */
Test(journal, a_producer_killed_in_its_claim_costs_a_replay_nothing)
{
	uint64_t *at = mmap(NULL, 8, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	uint64_t got, lost, last;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	pid_t pid;

	cr_assert(at != MAP_FAILED);
	*at = 0;
	ch = journaled("producers = multi\n", 10, &bus, &p);
	for (int k = 0; k < 3; k++) {
		*at = 0;
		pid = th_spawn(claim_and_stop, at);
		for (int i = 0; i < 3000 && !__atomic_load_n(at,
							      __ATOMIC_ACQUIRE);
		     i++)
			usleep(1000);
		cr_assert_neq(*at, 0);
		kill(pid, SIGKILL);
		th_wait(pid);
		publish_range(p, 10 + 10 * (uint64_t)k, 10);
	}
	wait_written(ch, 10);
	cr_assert(log_has("its unfinished claim padded") ||
		  log_has("handed over and padded"));
	replay_from_0(ch, false, &got, &lost, &last);
	cr_assert_eq(got, 40);
	cr_assert_eq(lost, 0, "a replay counted %lu lost", (unsigned long)lost);
	close_pub(bus, ch, p);
	munmap(at, 8);
}

/* A gap inside one segment (the journal lapped by less than the rest of
 * its segment) is told exactly: the GAP records the journal wrote there
 * say that messages were lost, as a missing segment does. */
Test(journal, a_gap_inside_a_segment_is_counted_lost)
{
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	/* About 2 laps of 16 KiB while shmbusd is stopped. */
	ch = lapped_journal("journal_segment = 1M\n", 20, 100, 20, &bus, &p);
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.gaps, 1);
	cr_assert_lt(v.written, 1 << 20, "all in the first segment");
	replay_tells_all(ch, true, 140);
	close_pub(bus, ch, p);
}

/*
 * shmbusd killed while the journal has written records it has not synced
 * (its cursor, on a channel acknowledging persisted, still behind them)
 * and a producer holds a claim open right where the journal ends.  The
 * new daemon's journal goes on from there: the claim is a record to come,
 * not damage (it once refused to start, "its end is not a record of the
 * ring", and acknowledged nothing as persisted until the next restart).
 * Then the producer is killed: its claim is padded, and a message
 * published after it is acknowledged as persisted.
 */
Test(journal, a_restart_with_a_claim_open_at_the_journals_end_goes_on)
{
	uint64_t *at = mmap(NULL, 8, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint8_t m[100];
	pid_t pid;
	int st;

	cr_assert(at != MAP_FAILED);
	*at = 0;
	ch = journaled("journal_fsync = interval\njournal_fsync_ms = 3000\n"
		       "journal_fsync_bytes = 1G\nacknowledge = persisted\n",
		       10, &bus, &p);
	close_pub(bus, ch, p);
	pid = th_spawn(claim_and_stop, at);
	for (int i = 0; i < 3000 && !__atomic_load_n(at, __ATOMIC_ACQUIRE);
	     i++)
		usleep(1000);
	cr_assert_neq(*at, 0);
	ch = open_role(&bus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	sb_jnl_read(ch, &v);
	cr_assert_lt(v.persisted, v.written, "records written, not synced");
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	kill(d.pid, SIGKILL);
	waitpid(d.pid, &st, 0);
	d.pid = 0;
	start_daemon();
	for (int i = 0; i < 2000 && !log_has("journal: ") ; i++)
		usleep(1000);
	usleep(200000);
	cr_assert(!log_has("is not a record of the ring"),
		  "the journal refused to start");
	cr_assert(!log_has("journal not started"));
	kill(pid, SIGKILL);
	th_wait(pid);
	ch = open_pub(&bus, &p);
	th_msg_fill(m, sizeof(m), 1, 10);
	cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	cr_assert_eq(shmbus_pub_sync(p, 20000000000), 0,
		     "acknowledged as persisted");
	sb_jnl_read(ch, &v);
	cr_assert(v.state & SHMBUS_JNL_ON, "state %#x", v.state);
	cr_assert_eq(v.gaps, 0);
	close_pub(bus, ch, p);
	munmap(at, 8);
}

/* The journal's very first record a gap (an overwrite channel lapped
 * before shmbusd journaled anything): a replay from 0 is told, at its
 * first message, every message before it that the journal never had. */
Test(journal, a_gap_at_the_journals_start_is_counted_lost)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	ch = lapped_journal("", 0, 300, 0, &bus, &p);
	cr_assert(log_has("journal: gap [0, "));
	replay_tells_all(ch, true, 300);
	close_pub(bus, ch, p);
}

/* shmbusctl journal dump --from a position no record starts at is
 * refused as such (exit 1), not reported as damage (exit 4); from a
 * record's position it dumps from there. */
Test(journal, dump_from_a_position_inside_a_record_is_refused)
{
	const char *bin = getenv("SHMBUSCTL");
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	char cmd[512], out[96];
	int st;

	if (!bin || !*bin)
		bin = "build/tools/shmbusctl";
	ch = journaled("", 10, &bus, &p);
	snprintf(out, sizeof(out), "%s/dump.err", d.dir);
	snprintf(cmd, sizeof(cmd), "%s journal dump %s --from 8 >/dev/null "
		 "2>%s", bin, cdir, out);
	st = system(cmd);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 1, "%s: status %d",
		  cmd, st);
	{
		char text[512] = { 0 };
		FILE *f = fopen(out, "r");

		cr_assert(f);
		cr_assert(fread(text, 1, sizeof(text) - 1, f) > 0);
		fclose(f);
		cr_assert(strstr(text, "no record starts at 8"), "%s", text);
	}
	/* The second record starts where the first (message 0) ends. */
	snprintf(cmd, sizeof(cmd), "%s journal dump %s --from %u >/dev/null",
		 bin, cdir, SHMBUS_REC_HDR + (((unsigned)len_of(0) + 7u) & ~7u));
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	close_pub(bus, ch, p);
}

/*
 * A replay that has read the whole journal, up to a gap of less than a
 * lap (GAP records, as a standby's agent writes them: here the standby's
 * writer in this process), moves to the ring there; the next message,
 * applied after, tells it what was lost, as it tells a replay that reads
 * it from the journal.
 */
Test(journal, a_replay_that_moves_to_the_ring_at_a_gap_counts_it)
{
	struct shmbus_replay_stats st;
	shmbus_replay *rp, *whole;
	struct shmbus_msg m;
	struct sb_frame f;
	struct sb_jnl_view v;
	shmbus_channel *ch, *sch;
	shmbus_bus *bus, *sbus;
	shmbus_pub *p, *wr;
	uint8_t buf[2048], frame[5 * 56];
	uint64_t gap_end, last = 0;
	char why[128];
	ssize_t n;

	conf_raw("capacity = 64K\nmax_msg = 1K\njournal_segment = 128K\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 50);
	shmbus_pub_close(p);
	wait_written(ch, 10);
	/* Messages 50 to 79 never received. */
	wr = sb_writer_open(ch, 100000000);
	cr_assert(wr);
	gap_end = th_head(ch) + 30 * 56;
	cr_assert_eq(sb_apply_restart(wr, gap_end), 0);
	wait_written(ch, 10);
	sb_jnl_read(ch, &v);
	sch = open_role(&sbus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(sch, "open: %s", strerror(errno));
	rp = shmbus_replay_open(sch, SHMBUS_REPLAY_POSITION, v.oldest, NULL);
	cr_assert(rp, "replay: %s", strerror(errno));
	while ((n = shmbus_replay_read(rp, buf, sizeof(buf), &m)) >= 0)
		last = m.seq;
	cr_assert_eq(n, -EAGAIN);
	cr_assert_eq(last, 49);
	cr_assert_eq(shmbus_replay_stats(rp, &st), 0);
	cr_assert(st.in_ring, "the replay did not move to the ring");
	/* Messages 80 to 84, after the gap. */
	for (uint64_t i = 0; i < 5; i++) {
		uint64_t pos = gap_end + i * 56, seq = 80 + i;
		uint64_t w = commit_word(ch, pos, SHMBUS_REC_MSG, 40);

		memcpy(frame + i * 56, &w, 8);
		memcpy(frame + i * 56 + 8, &seq, 8);
		th_msg_fill(frame + i * 56 + 16, 40, 1, seq);
	}
	cr_assert_eq(sb_apply_check(ch, gap_end, frame, sizeof(frame), &f, why,
				    sizeof(why)), 0, "%s", why);
	cr_assert_eq(sb_apply(wr, gap_end, frame, sizeof(frame), &f), 0);
	sb_writer_close(wr);
	cr_assert_eq(shmbus_replay_read(rp, buf, sizeof(buf), &m), 40);
	cr_assert_eq(m.seq, 80);
	cr_assert_eq(m.lost, 30, "lost %lu", (unsigned long)m.lost);
	/* The same, read from the journal. */
	wait_written(ch, 10);
	whole = shmbus_replay_open(sch, SHMBUS_REPLAY_POSITION, v.oldest,
				   NULL);
	cr_assert(whole);
	do
		n = shmbus_replay_read(whole, buf, sizeof(buf), &m);
	while (n >= 0 && m.seq < 80);
	cr_assert_eq(m.seq, 80);
	cr_assert_eq(m.lost, 30);
	shmbus_replay_close(whole);
	shmbus_replay_close(rp);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}
