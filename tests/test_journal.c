/* SPDX-License-Identifier: MIT */
/*
 * test_journal.c - the journal under a real shmbusd, with real files:
 * messages of mixed sizes journaled and replayed byte for byte across
 * segments, a late joiner that moves from the journal into the live ring
 * while a producer runs, kill -9 of the daemon mid-append, a reboot (the
 * ring removed, the journal kept), replay by time, retention held off by
 * a reader, pub_sync at the persisted level returning only once the bytes
 * are in the file, and the gaps a lapped journal records.  Damage and
 * recovery: test_journal_recovery.c.
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
#include <sys/prctl.h>
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
#include "journal_fixture.h"

TestSuite(journal, .init = jnl_setup, .fini = jnl_fini, .timeout = 120);

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
		 * sealed, and the data file says it is synced. */
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

/*
 * A producer holds the data file read-write: it writes shmbusd's
 * replication level and flags of a channel whose journal acknowledges over
 * (local, and no flag: every shmbus_pub_sync() would answer 0 at once,
 * unearned, for as long as they stay).  The daemon sets both back at its
 * next scan, and says so.
 */
Test(journal, a_level_and_flags_written_over_are_set_back)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	struct shmbus_daemon_area *h;
	uint32_t level, flags;
	int i;

	conf_with("acknowledge = persisted\njournal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	h = ch->daemon;
	level = __atomic_load_n(&h->repl_level, __ATOMIC_RELAXED);
	flags = __atomic_load_n(&h->repl_flags, __ATOMIC_RELAXED);
	cr_assert_eq(level, SHMBUS_ACK_PERSISTED);
	cr_assert_eq(flags, SHMBUS_REPL_JOURNAL);
	__atomic_store_n(&h->repl_level, SHMBUS_ACK_LOCAL, __ATOMIC_RELAXED);
	__atomic_store_n(&h->repl_flags, 0, __ATOMIC_RELAXED);
	for (i = 0; i < 200; i++) {
		if (__atomic_load_n(&h->repl_level, __ATOMIC_RELAXED) == level &&
		    __atomic_load_n(&h->repl_flags, __ATOMIC_RELAXED) == flags)
			break;
		usleep(10000);
	}
	cr_log_info("set back after %d ms", i * 10);
	cr_assert_eq(__atomic_load_n(&h->repl_level, __ATOMIC_RELAXED), level,
		     "the level stays written over");
	cr_assert_eq(__atomic_load_n(&h->repl_flags, __ATOMIC_RELAXED), flags,
		     "the flags stay written over");
	cr_assert(log_has("(written over): set back"));
	publish_range(p, 0, 1);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	close_pub(bus, ch, p);
}

/* Waits (at most 3 s) until *w holds `want`. */
static bool word_is(const uint64_t *w, uint64_t want)
{
	for (int i = 0; i < 300; i++) {
		if (__atomic_load_n(w, __ATOMIC_RELAXED) == want)
			return true;
		usleep(10000);
	}
	return false;
}

/* The journal's thread a test holds still (th_thread_hold()), let go
 * before the daemon is stopped, after a failed test too. */
static pid_t held_tid = -1;

static void held_fini(void)
{
	th_thread_resume(held_tid);
	held_tid = -1;
}

/*
 * A producer writes the journal's words in shmbusd's area forward (its
 * persisted and written positions, the watermark, a gap, its state)
 * while the journal's thread is held still with a record not yet in
 * it: the daemon sets every one back to its own, which the journal's
 * thread never stored, and acknowledges the record only once the
 * journal has it.
 */
Test(journal, positions_written_forward_are_set_back_to_the_journals,
     .fini = held_fini)
{
	struct shmbus_daemon_area *h;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t mark, end;
	uint32_t state;
	int rc;

	conf_with("acknowledge = persisted\njournal_segment = 64K\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	h = ch->daemon;
	publish_range(p, 0, 1);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	mark = th_head(ch);
	cr_assert(word_is(&h->persisted_pos, mark));
	cr_assert(word_is(&h->jnl_written, mark));
	state = __atomic_load_n(&h->jnl_state, __ATOMIC_RELAXED);
	cr_assert_eq(state, SHMBUS_JNL_ON);
	usleep(100000);	/* the journal idle, in its wait */

	held_tid = th_thread_hold(d.pid, "sb-journal");
	cr_assert_gt(held_tid, 0, "the journal's thread not held");
	publish_range(p, 1, 1);
	end = th_head(ch);
	__atomic_store_n(&h->persisted_pos, end, __ATOMIC_RELAXED);
	__atomic_store_n(&h->jnl_written, end, __ATOMIC_RELAXED);
	__atomic_store_n(&h->hole_lo, mark, __ATOMIC_RELAXED);
	__atomic_store_n(&h->hole_hi, end, __ATOMIC_RELAXED);
	__atomic_store_n(&h->jnl_state, SHMBUS_JNL_ON | SHMBUS_JNL_DISK_FULL,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&h->replicated_pos, end, __ATOMIC_RELEASE);
	cr_assert(word_is(&h->replicated_pos, mark), "the watermark stays %lu,"
		  " the journal has %lu", (unsigned long)__atomic_load_n(
			  &h->replicated_pos, __ATOMIC_RELAXED),
		  (unsigned long)mark);
	cr_assert(word_is(&h->persisted_pos, mark),
		  "the persisted position stays written over");
	cr_assert(word_is(&h->jnl_written, mark),
		  "the written position stays written over");
	cr_assert(word_is(&h->hole_hi, 0), "the gap stays written over");
	cr_assert_eq(__atomic_load_n(&h->hole_lo, __ATOMIC_RELAXED), 0);
	cr_assert_eq(__atomic_load_n(&h->jnl_state, __ATOMIC_RELAXED), state,
		     "the journal's state stays written over");
	cr_assert(log_has("(written over): set back to the daemon's"));
	rc = shmbus_pub_sync(p, 300000000);
	cr_assert_eq(rc, -ETIMEDOUT, "acknowledged (%d) before the journal "
		     "has it", rc);

	th_thread_resume(held_tid);
	held_tid = -1;
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	cr_assert(word_is(&h->persisted_pos, end));
	cr_assert(word_is(&h->jnl_written, end));
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
	/* The segments the gap spans were never made, and that is said in
	 * the one after it: no damage to verify, nor to the daemon. */
	{
		uint64_t *b;
		size_t k, holes = 0;
		char cmd[512];

		cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
		for (size_t i = 1; i < k; i++)
			holes += b[i] != b[i - 1] + (64u << 10);
		free(b);
		cr_assert_geq(holes, 1, "the gap spans no segment");
		snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl journal "
			 "verify %s >/dev/null", cdir);
		cr_assert_eq(WEXITSTATUS(system(cmd)), 0, "verify: damage");
		cr_assert_not(log_has("are missing"));
	}
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
	__atomic_store_n(&ch->pl->head, head + 8 * 65536, __ATOMIC_RELEASE);
	for (int i = 0; i < 3000 && !log_has("more than a lap ahead"); i++)
		usleep(1000);
	__atomic_store_n(&ch->pl->head, head, __ATOMIC_RELEASE);
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

/* ---------------------------------------------- replays at the edges */

/*
 * A replay opened in the ring of an overwrite channel and lapped there
 * before its first read: it goes back to the journal, which holds what
 * the lap took, and delivers every message from where it was opened, in
 * order, with an exact `lost` for anything the journal itself lacks.
 */
static void replay_lapped_in_the_ring(bool direct)
{
	shmbus_channel *ch, *rch;
	shmbus_bus *bus, *rbus = NULL;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_msg m;
	uint8_t buf[2048];
	uint64_t next = 0, got = 0, lost = 0;
	ssize_t n;

	conf_raw("capacity = 16K\nmax_msg = 1K\npolicy = overwrite\n"
		 "journal_segment = 64K\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 10);
	wait_written(ch, 10);
	rch = direct ? shmbus_channel_open(d.dir, "j")
		     : open_role(&rbus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(rch);
	r = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "%s", strerror(errno));
	publish_range(p, 10, 3000);	/* laps the 16K ring many times */
	wait_written(ch, 10);
	while ((n = shmbus_replay_read(r, buf, sizeof(buf), &m)) >= 0) {
		uint64_t seq;
		uint32_t id;

		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0);
		cr_assert_eq(seq, next + m.lost, "message %lu after %lu with "
			     "lost %lu", (unsigned long)seq,
			     (unsigned long)next, (unsigned long)m.lost);
		if (!got)
			cr_assert_eq(seq, 0, "the first message: %lu (lost "
				     "%lu)", (unsigned long)seq,
				     (unsigned long)m.lost);
		lost += m.lost;
		got++;
		next = seq + 1;
	}
	cr_assert_eq(n, -EAGAIN, "%zd", n);
	cr_assert_eq(next, 3010, "up to the last");
	cr_assert_lt(lost, 3000, "the journal gave nothing back");
	shmbus_replay_close(r);
	shmbus_channel_close(rch);
	if (rbus)
		shmbus_disconnect(rbus);
	close_pub(bus, ch, p);
}

Test(journal, a_replay_lapped_in_the_ring_goes_back_to_the_journal)
{
	replay_lapped_in_the_ring(true);
}

Test(journal, a_replay_through_shmbusd_lapped_in_the_ring_goes_back)
{
	replay_lapped_in_the_ring(false);
}

/* Reads r until message `last` (its seq), an error, or idle_ms of
 * nothing; checks each message against the one before (seq = next +
 * lost; the first only counted from `*next` if that is known). */
static ssize_t read_up_to(shmbus_replay *r, uint64_t last, uint64_t *next,
			  uint64_t *got, uint64_t *lost, int idle_ms)
{
	uint8_t buf[2048];

	for (int idle = 0; idle <= idle_ms;) {
		struct shmbus_msg m;
		ssize_t n = shmbus_replay_read(r, buf, sizeof(buf), &m);
		uint64_t seq;
		uint32_t id;

		if (n == -EAGAIN) {
			idle++;
			usleep(1000);
			continue;
		}
		if (n < 0)
			return n;
		idle = 0;
		cr_assert_eq(th_msg_check(buf, (size_t)n, &id, &seq), 0);
		cr_assert_eq(seq, m.seq);
		if (*next != UINT64_MAX)
			cr_assert_eq(seq, *next + m.lost, "message %lu after "
				     "%lu with lost %lu", (unsigned long)seq,
				     (unsigned long)*next,
				     (unsigned long)m.lost);
		*lost += m.lost;
		(*got)++;
		*next = seq + 1;
		if (seq == last)
			return 0;
	}
	return -EAGAIN;
}

/* An overwrite channel of 16 KiB, journaled in 64 KiB segments: `n`
 * messages journaled, then shmbusd stopped. */
static shmbus_channel *journal_stopped(uint64_t n, shmbus_bus **bus,
				       shmbus_pub **p)
{
	shmbus_channel *ch;

	conf_raw("capacity = 16K\nmax_msg = 1K\npolicy = overwrite\n"
		 "journal_segment = 64K\n");
	start_daemon();
	ch = open_pub(bus, p);
	publish_range(*p, 0, n);
	wait_written(ch, 10);
	pause_daemon();
	return ch;
}

/*
 * A replay that read the ring ahead of the journal's agent (shmbusd
 * stopped) and is lapped there: the journal never wrote where the ring
 * left it, and its agent records that range as a gap from where it was
 * (zeros between GAP words).  The loss is counted, as the ring counts
 * it; the replay never reads the journal's gap from the middle.
 */
Test(journal, a_replay_lapped_ahead_of_the_journal_counts_the_loss)
{
	shmbus_channel *ch, *rch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_replay_stats st;
	uint64_t next = UINT64_MAX, got = 0, lost = 0;

	ch = journal_stopped(30, &bus, &p);
	kill(d.pid, SIGCONT);
	rch = shmbus_channel_open(d.dir, "j");
	cr_assert(rch);
	r = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "%s", strerror(errno));
	cr_assert_eq(read_up_to(r, 29, &next, &got, &lost, 2000), 0);
	pause_daemon();
	publish_range(p, 30, 10);
	cr_assert_eq(read_up_to(r, 39, &next, &got, &lost, 2000), 0);
	shmbus_replay_stats(r, &st);
	cr_assert(st.in_ring, "in the ring, ahead of the journal");
	publish_range(p, 40, 2000);	/* laps the ring, and both */
	kill(d.pid, SIGCONT);
	wait_written(ch, 10);
	cr_assert_eq(read_up_to(r, 2039, &next, &got, &lost, 2000), 0);
	cr_assert_gt(lost, 0);
	cr_assert_eq(got + lost, 2040, "%lu delivered, %lu lost",
		     (unsigned long)got, (unsigned long)lost);
	shmbus_replay_close(r);
	shmbus_channel_close(rch);
	close_pub(bus, ch, p);
}

/*
 * A replay that read the ring ahead of the journal's agent (shmbusd
 * stopped) into the next segment, and is lapped there: the agent, lapped
 * too, records a gap from where it was that spans the segment boundary,
 * so the segment the replay was in begins past where the ring left it
 * (its header's start).  The replay goes back to the journal there and
 * reads on from that start: the messages between are lost, and counted.
 */
Test(journal, a_replay_lapped_where_a_segment_starts_past_it_counts_the_loss)
{
	shmbus_channel *ch, *rch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_replay_stats st;
	struct shmbus_jseg_hdr h;
	uint64_t next = UINT64_MAX, got = 0, lost = 0, i = 30, at;
	char path[512];
	int fd;

	ch = journal_stopped(30, &bus, &p);
	rch = shmbus_channel_open(d.dir, "j");
	cr_assert(rch);
	r = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "%s", strerror(errno));
	cr_assert_eq(read_up_to(r, 29, &next, &got, &lost, 2000), 0);
	/* Into the next segment, in the ring, a few records at a time. */
	while (th_head(ch) < (64u << 10) + 1024) {
		publish_range(p, i, 5);
		i += 5;
		cr_assert_eq(read_up_to(r, i - 1, &next, &got, &lost, 2000), 0);
	}
	shmbus_replay_stats(r, &st);
	cr_assert(st.in_ring, "in the ring, ahead of the journal");
	at = th_head(ch);
	publish_range(p, i, 100);	/* laps the ring, not the segment */
	i += 100;
	kill(d.pid, SIGCONT);
	wait_written(ch, 10);
	/* The segment the replay was in starts past it. */
	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, 64u << 10), 0);
	fd = open(path, O_RDONLY);
	cr_assert(fd >= 0, "%s", path);
	cr_assert_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
	cr_assert_gt(h.start, at, "the segment starts at %lu, not past %lu",
		     (unsigned long)h.start, (unsigned long)at);
	cr_assert_eq(read_up_to(r, i - 1, &next, &got, &lost, 2000), 0);
	cr_assert_gt(lost, 0);
	cr_assert_eq(got + lost, i, "%lu delivered, %lu lost",
		     (unsigned long)got, (unsigned long)lost);
	shmbus_replay_close(r);
	shmbus_channel_close(rch);
	close_pub(bus, ch, p);
}

/* Opened past what the journal wrote (shmbusd stopped), at a position the
 * ring then laps: the replay waiting there in the journal moves to the
 * ring's oldest record (its agent records a gap over that position, from
 * where it was); opened at a position the ring has lapped already, the
 * replay is refused (ERANGE): neither holds it, nor will. */
Test(journal, a_replay_past_the_journal_lapped_in_the_ring)
{
	shmbus_channel *ch, *rch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r, *r2;
	struct sb_jnl_view v;
	uint64_t next = UINT64_MAX, got = 0, lost = 0, at;
	ssize_t rc;

	ch = journal_stopped(30, &bus, &p);
	publish_range(p, 30, 10);
	rch = shmbus_channel_open(d.dir, "j");
	cr_assert(rch);
	sb_jnl_read(ch, &v);
	/* The live end: nothing there yet, nothing journaled either. */
	r = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, v.head, NULL);
	cr_assert(r, "%s", strerror(errno));
	cr_assert_eq(read_up_to(r, 0, &next, &got, &lost, 20), -EAGAIN);
	/* The second message past the journal's end. */
	at = v.written + 16 + ((len_of(30) + 7) & ~(size_t)7);
	publish_range(p, 40, 2000);	/* laps both */
	r2 = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, at, NULL);
	cr_assert_null(r2, "opened at %lu, which neither holds",
		       (unsigned long)at);
	cr_assert_eq(errno, ERANGE, "%s", strerror(errno));
	kill(d.pid, SIGCONT);
	wait_written(ch, 10);
	rc = read_up_to(r, 2039, &next, &got, &lost, 2000);
	cr_assert_eq(rc, 0, "%s after %lu messages (%lu lost)",
		     rc < 0 ? strerror((int)-rc) : "", (unsigned long)got,
		     (unsigned long)lost);
	cr_assert_gt(got, 0);
	shmbus_replay_close(r);
	shmbus_channel_close(rch);
	close_pub(bus, ch, p);
}

/* Retention removing the oldest segment while a replay opens at a later
 * one, which it holds all along: the open never fails with ERANGE. */
static int publish_for_ever(void *arg)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	(void)arg;
	ch = open_pub(&bus, &p);
	for (uint64_t i = 3000;; i++) {
		uint8_t buf[2048];

		th_msg_fill(buf, len_of(i), 1, i);
		if (shmbus_publish(p, buf, len_of(i)) < 0)
			return 2;
	}
	close_pub(bus, ch, p);
	return 0;
}

Test(journal, a_replay_opens_beside_retention)
{
	shmbus_channel *ch, *bch;
	shmbus_bus *bus, *rbus;
	shmbus_pub *p;
	uint64_t tries = 0, bad = 0;
	int64_t until = sb_now_ns() + 2000000000;
	pid_t prod;

	conf_raw("capacity = 16K\nmax_msg = 2K\njournal_segment = 64K\n"
		 "journal_retain_bytes = 256K\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 3000);
	wait_written(ch, 10);
	close_pub(bus, ch, p);
	/* Directly, and through shmbusd, taking turns. */
	ch = shmbus_channel_open(d.dir, "j");
	bch = open_role(&rbus, "j", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch && bch);
	prod = th_spawn(publish_for_ever, NULL);
	while (sb_now_ns() < until) {
		struct sb_jnl_view v;
		shmbus_replay *r;
		uint64_t at;

		sb_jnl_read(ch, &v);
		/* The segment before the one being written. */
		at = v.written & ~(uint64_t)0xffff;
		if (at < 0x20000)
			continue;
		at -= 0x10000;
		tries++;
		r = shmbus_replay_open(tries & 1 ? bch : ch,
				       SHMBUS_REPLAY_POSITION, at, NULL);
		if (r)
			shmbus_replay_close(r);
		else
			bad += errno == ERANGE;
	}
	kill(prod, SIGKILL);
	th_wait(prod);
	shmbus_channel_close(ch);
	shmbus_channel_close(bch);
	shmbus_disconnect(rbus);
	cr_assert_gt(tries, 100);
	cr_assert_eq(bad, 0, "ERANGE in %lu of %lu opens of a held segment",
		     (unsigned long)bad, (unsigned long)tries);
}

/* A position past what the journal wrote, inside a record of the ring:
 * EINVAL at the open, as in the journal, not a journal that reads as
 * damaged later. */
Test(journal, a_replay_inside_a_record_past_the_journal_is_refused)
{
	struct sb_jnl_view v;
	shmbus_channel *ch, *rch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;

	conf_raw("capacity = 64K\nmax_msg = 2K\njournal_segment = 64K\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 10);
	wait_written(ch, 10);
	pause_daemon();
	publish_range(p, 10, 20);
	sb_jnl_read(ch, &v);
	rch = shmbus_channel_open(d.dir, "j");
	cr_assert(rch);
	r = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, v.written + 16,
			       NULL);
	kill(d.pid, SIGCONT);
	cr_assert_null(r, "opened inside message 10's record");
	cr_assert_eq(errno, EINVAL, "%s", strerror(errno));
	/* Its start is still fine. */
	r = shmbus_replay_open(rch, SHMBUS_REPLAY_POSITION, v.written, NULL);
	cr_assert(r, "%s", strerror(errno));
	shmbus_replay_close(r);
	shmbus_channel_close(rch);
	close_pub(bus, ch, p);
}

/* The same config started twice, the second daemon given its own shm_dir
 * and socket (-d, -S: as the tests and `make demo` run it): neither the
 * socket's lock nor shm_dir's catches it, and both would write
 * journal_dir/j.  The second must leave the first's journal alone: the
 * first daemon's messages replay intact, whatever the second's producer
 * publishes meanwhile. */
Test(journal, a_second_daemon_on_the_same_journal_dir_does_not_write_it)
{
	char bdir[128], bsock[128], blog[128];
	shmbus_channel *ch, *bch;
	shmbus_bus *bus, *bbus = NULL;
	shmbus_pub *p, *bp;
	uint8_t buf[2048];
	pid_t b;

	conf_with("journal_segment = 1M\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 500);
	wait_written(ch, 10);

	snprintf(bdir, sizeof(bdir), "%s/b", d.dir);
	snprintf(bsock, sizeof(bsock), "%s/b.sock", d.dir);
	snprintf(blog, sizeof(blog), "%s/b.log", d.dir);
	b = fork();
	cr_assert(b >= 0);
	if (b == 0) {
		int fd = open(blog, O_WRONLY | O_CREAT | O_APPEND, 0644);

		/* Gone with the test, whatever ends it. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		dup2(fd, 1);
		dup2(fd, 2);
		execl(shmbusd_path(), "shmbusd", "-c", d.conf, "-d", bdir,
		      "-S", bsock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500 && !bbus; i++) {
		bbus = shmbus_connect(bsock);
		if (!bbus) {
			cr_assert_eq(waitpid(b, NULL, WNOHANG), 0,
				     "the second daemon exited (see %s)", blog);
			usleep(10000);
		}
	}
	cr_assert(bbus, "the second daemon did not come up (see %s)", blog);
	publish_range(p, 500, 500);
	wait_written(ch, 10);
	/* Its producer publishes other messages (producer id 2). */
	bch = shmbus_bus_open(bbus, "j", SHMBUS_ROLE_PUBLISH);
	cr_assert(bch, "open on the second daemon: %s", strerror(errno));
	bp = shmbus_pub_open(bch, NULL);
	cr_assert(bp);
	for (uint64_t i = 0; i < 500; i++) {
		th_msg_fill(buf, len_of(i + 7), 2, i);
		while (shmbus_publish(bp, buf, len_of(i + 7)) == -EAGAIN)
			sched_yield();
	}
	usleep(300000);		/* its journal, if it writes one, has it */

	/* Every one of the first daemon's messages, from its journal (the
	 * ring holds only the last 64 KiB of the ~300 KiB). */
	replay_check(ch, 0, 0, 1000);

	shmbus_pub_close(bp);
	{
		char text[1 << 15] = "";
		FILE *f = fopen(blog, "r");
		size_t n = f ? fread(text, 1, sizeof(text) - 1, f) : 0;

		if (f)
			fclose(f);
		text[n] = 0;
		cr_assert(strstr(text, "is written by another shmbusd"),
			  "the second daemon says why it does not journal");
	}
	shmbus_channel_close(bch);
	shmbus_disconnect(bbus);
	kill(b, SIGTERM);
	th_wait(b);
	close_pub(bus, ch, p);
}

/* A configured channel that journals and acknowledges persisted, deleted
 * with shmbusctl and made again under its name at run time: the daemon
 * cannot start a journal at run time, so a ring made then is journaled by
 * nobody.  Its shmbus_pub_sync() answered 0 at once (acknowledged, while
 * nothing reached the journal, and nothing was logged), and at the next
 * restart that ring, behind its journal, stopped the journal for good
 * ("positions would repeat").  Whatever the daemon does with such a
 * create, nothing is acknowledged as persisted that the journal lacks,
 * and after a restart the channel journals again. */
Test(journal, a_journaled_channel_deleted_and_made_again_keeps_its_journal)
{
	struct shmbus_channel_attr a;
	struct sb_jnl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	int rc;

	conf_with("acknowledge = persisted\n", NULL);
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 100);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000LL), 0);
	close_pub(bus, ch, p);

	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	cr_assert_eq(shmbus_bus_delete(bus, "j"), 0);
	shmbus_channel_attr_init(&a);
	a.capacity = 64 << 10;
	a.max_msg = 2048;
	rc = shmbus_bus_create(bus, "j", &a);
	if (rc == 0) {
		ch = shmbus_bus_open(bus, "j", SHMBUS_ROLE_PUBLISH);
		cr_assert(ch);
		p = shmbus_pub_open(ch, NULL);
		cr_assert(p);
		publish_range(p, 100, 10);
		rc = shmbus_pub_sync(p, 1000000000LL);
		sb_jnl_read(ch, &v);
		cr_assert(rc != 0 || ((v.state & SHMBUS_JNL_ON) &&
				      v.persisted >= th_head(ch)),
			  "pub_sync acknowledged as persisted what no journal "
			  "holds (journal state %#x, persisted %lu, head %lu)",
			  v.state, (unsigned long)v.persisted,
			  (unsigned long)th_head(ch));
		shmbus_pub_close(p);
		shmbus_channel_close(ch);
	}
	shmbus_disconnect(bus);

	kill(d.pid, SIGTERM);
	cr_assert_eq(th_wait(d.pid), 0);
	d.pid = 0;
	start_daemon();
	ch = open_pub(&bus, &p);
	sb_jnl_read(ch, &v);
	cr_assert(v.state & SHMBUS_JNL_ON, "no journal after the restart "
		  "(state %#x)", v.state);
	publish_range(p, 0, 10);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000LL), 0);
	close_pub(bus, ch, p);
}

/*
 * A replay reads the ring through a subscriber of its own: at a position
 * only the ring holds, it is refused as shmbus_sub_open() is, EPERM on a
 * read-only handle and ENOSPC with every subscriber slot taken, as its
 * header says; both were once ERANGE, as if the ring did not hold the
 * position.  Direct mode, no journal: no daemon needed.
 */
Test(replay_open, is_refused_as_a_subscriber_is)
{
	const char *rd = th_mkdir();
	shmbus_channel *c = th_create(rd, 4096, 256, SHMBUS_BLOCK,
				      SHMBUS_SINGLE_PRODUCER);
	shmbus_channel *ro = shmbus_channel_open_ro(rd, "ch");
	shmbus_pub *p = shmbus_pub_open(c, NULL);
	shmbus_sub *subs[SHMBUS_MAX_SUBSCRIBERS];
	shmbus_replay *r;
	char buf[8];

	cr_assert(ro && p);
	/* A block ring holds what its slowest subscriber has not read. */
	subs[0] = shmbus_sub_open(c, NULL);
	cr_assert(subs[0]);
	cr_assert_eq(shmbus_publish(p, "abc", 3), 0);
	r = shmbus_replay_open(c, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "the ring holds position 0: %s", strerror(errno));
	cr_assert_eq(shmbus_replay_read(r, buf, sizeof(buf), NULL), 3);
	shmbus_replay_close(r);
	cr_assert_null(shmbus_replay_open(ro, SHMBUS_REPLAY_POSITION, 0, NULL));
	cr_assert_eq(errno, EPERM, "read-only: %s", strerror(errno));
	for (unsigned i = 1; i < SHMBUS_MAX_SUBSCRIBERS; i++) {
		subs[i] = shmbus_sub_open(c, NULL);
		cr_assert(subs[i]);
	}
	cr_assert_null(shmbus_replay_open(c, SHMBUS_REPLAY_POSITION, 0, NULL));
	cr_assert_eq(errno, ENOSPC, "slots full: %s", strerror(errno));
	for (unsigned i = 0; i < SHMBUS_MAX_SUBSCRIBERS; i++)
		shmbus_sub_close(subs[i]);
	shmbus_pub_close(p);
	shmbus_channel_close(ro);
	shmbus_channel_close(c);
	th_rmdir(rd);
}

/* The daemon's mappings and descriptors of channel "j"'s files (its ring)
 * and of its journal. */
static unsigned holds_of_j(void)
{
	char path[64], line[1024], ring[512], data[512];
	unsigned n = 0;
	struct dirent *e;
	DIR *fds;
	FILE *f;

	snprintf(ring, sizeof(ring), "%s/j", d.dir);
	snprintf(data, sizeof(data), "%s/.j.", d.dir);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)d.pid);
	f = fopen(path, "r");
	cr_assert(f);
	while (fgets(line, sizeof(line), f)) {
		char *at = strchr(line, '/');

		n += at && (!strncmp(at, data, strlen(data)) ||
			    (!strncmp(at, ring, strlen(ring)) &&
			     (at[strlen(ring)] == '\n' ||
			      at[strlen(ring)] == ' ')));
	}
	fclose(f);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)d.pid);
	fds = opendir(path);
	cr_assert(fds);
	while ((e = readdir(fds))) {
		char fd[320], to[1024];
		ssize_t k;

		snprintf(fd, sizeof(fd), "%s/%s", path, e->d_name);
		k = readlink(fd, to, sizeof(to) - 1);
		if (k <= 0)
			continue;
		to[k] = 0;
		n += !strncmp(to, cdir, strlen(cdir)) ||
		     !strncmp(to, data, strlen(data)) ||
		     (!strncmp(to, ring, strlen(ring)) &&
		      (!to[strlen(ring)] || to[strlen(ring)] == ' '));
	}
	closedir(fds);
	return n;
}

/* A journaled channel deleted at run time: the journal's agent mapped its
 * ring and held its segment, its index and its directory open, and went
 * on watching a ring nobody could open again; a deleted ring's memory
 * (up to 16 GiB of /dev/shm) stayed taken until the daemon's restart.
 * The agent stops with the channel and lets go of all of it; the
 * journal's files stay, for the next start. */
Test(journal, a_deleted_journaled_channel_leaves_the_daemon_nothing_held)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	unsigned held;

	ch = journaled("", 100, &bus, &p);
	close_pub(bus, ch, p);
	held = holds_of_j();
	cr_assert_geq(held, 6, "the fixture's daemon holds %u of j's files",
		      held);
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	cr_assert_eq(shmbus_bus_delete(bus, "j"), 0);
	shmbus_disconnect(bus);
	/* Descriptors of a deleted channel's entry close after an RCU grace
	 * period. */
	for (int i = 0; i < 200 && (held = holds_of_j()); i++)
		usleep(10000);
	cr_assert_eq(held, 0, "the daemon still holds %u mappings or "
		     "descriptors of the deleted channel and its journal",
		     held);
	cr_assert_gt(count_segments(), 0, "the journal's files went too");
	cr_assert(log_has("journal stopped with its channel"));
}
