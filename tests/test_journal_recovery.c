/* SPDX-License-Identifier: MIT */
/*
 * test_journal_recovery.c - a journal that is damaged, refused or cut
 * short: power losses (a segment truncated, garbage appended, bits
 * flipped) recovered to exactly the last valid record, a zeroed record
 * word with records after it, a torn time index, a segment of another
 * channel or format, names that are not segments, damage in the ring,
 * a reboot after a journal that ends in a gap, and the offline verify
 * and dump.  A full filesystem and a device that
 * fails the journal's writes: test_journal_device.c.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
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

TestSuite(journal_recovery, .init = jnl_setup, .fini = jnl_fini,
	  .timeout = 120);

Test(journal_recovery, a_segment_of_another_channel_or_format_is_refused)
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

/*
 * A power loss, simulated on the newest segment after a clean stop (the
 * ring removed too, as a reboot removes it): the file truncated at a
 * random offset, garbage written after the last record, or one bit
 * flipped.  Recovery must end exactly before the first record the damage
 * touched, and the new ring continue there.
 */
Test(journal_recovery, a_power_loss_recovers_to_exactly_the_last_valid_record)
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
Test(journal_recovery, a_zeroed_record_word_with_records_after_it_is_damage)
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

/* A crash tore the newest time index's last entry: after the restart the
 * index is cut there, so that the entries appended after it are found
 * (else a lookup stops at the torn one and falls back to the first). */
Test(journal_recovery, a_torn_time_index_is_cut_and_appended_to)
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

/* A batch that wraps the ring leaves padding longer than the agent's
 * 1 MiB buffer: the journal writes it as its word and goes on (it once
 * stalled there, holding the producers for good). */
Test(journal_recovery, padding_longer_than_the_agents_buffer)
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
Test(journal_recovery, a_journal_that_cannot_start_holds_no_producer)
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

/* A host crash lost a segment's unsynced tail but not its time index's:
 * after the reboot the index is cut at the recovered end, so that a
 * replay by a time after the reboot misses nothing journaled since. */
Test(journal_recovery, an_index_past_the_recovered_end_is_cut)
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

/* Only names made as the daemon makes them (16 lower-case hex digits) are
 * segments: "0x...", a sign or spaces would name another base. */
Test(journal_recovery, only_canonical_names_are_segments)
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

Test(journal_recovery, damage_in_the_ring_is_said_not_waited_on_in_silence)
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

/* shmbusctl journal dump --from a position no record starts at is
 * refused as such (exit 1), not reported as damage (exit 4); from a
 * record's position it dumps from there. */
Test(journal_recovery, dump_from_a_position_inside_a_record_is_refused)
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

/* Runs shmbusctl journal dump on cdir with `args`; returns its exit
 * status, its standard error in err. */
static int dump_with(const char *args, char *err, size_t cap)
{
	const char *bin = getenv("SHMBUSCTL");
	char cmd[768];
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "%s journal dump %s %s 2>&1 >/dev/null",
		 bin && *bin ? bin : "build/tools/shmbusctl", cdir, args);
	p = popen(cmd, "r");
	cr_assert(p);
	err[fread(err, 1, cap - 1, p)] = 0;
	st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Every --from that no record starts at is refused with exit status 1
 * and the true reason: off the 8-byte grid, inside a whole record, past
 * the journal's end.  A --since or --from that is no time or position,
 * and both at once, are usage errors that say what is wrong. */
Test(journal_recovery, dump_says_why_no_record_starts_at_from)
{
	static const struct {
		const char *args;
		int status;
		const char *reason;
	} usage[] = {
		{ "--since 2263-01-01T00:00:00", 2, "from 1970 to 2262" },
		{ "--since -5", 2, "--since '-5'" },
		{ "--since yesterday", 2, "seconds since the epoch" },
		{ "--from 0 --since 0", 2, "--from and --since" },
		{ "--from x8", 2, "--from 'x8': not a position" },
	};
	static struct recs rs;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	char err[1024], args[128], want[160];

	ch = journaled("", 10, &bus, &p);
	read_all(&rs);
	cr_assert_geq(rs.n, 2);
	cr_assert_eq(dump_with("--from 25", err, sizeof(err)), 1, "%s", err);
	cr_assert(strstr(err, "no record starts at 25: records start at "
			 "multiples of 8"), "%s", err);

	snprintf(args, sizeof(args), "--from %llu",
		 (unsigned long long)rs.pos[1] + 8);
	cr_assert_eq(dump_with(args, err, sizeof(err)), 1, "%s", err);
	snprintf(want, sizeof(want), "no record starts at %llu: it is inside "
		 "the record at %llu (%llu bytes)",
		 (unsigned long long)rs.pos[1] + 8,
		 (unsigned long long)rs.pos[1],
		 (unsigned long long)rs.size[1]);
	cr_assert(strstr(err, want), "no '%s' in: %s", want, err);
	cr_assert_null(strstr(err, "the file ends"), "%s", err);

	/* Past the end, in the newest segment and beyond every segment. */
	snprintf(args, sizeof(args), "--from %llu",
		 (unsigned long long)rs.end + 64);
	cr_assert_eq(dump_with(args, err, sizeof(err)), 1, "%s", err);
	snprintf(want, sizeof(want), "no record starts at %llu: past the "
		 "journal's end at %llu", (unsigned long long)rs.end + 64,
		 (unsigned long long)rs.end);
	cr_assert(strstr(err, want), "no '%s' in: %s", want, err);
	cr_assert_eq(dump_with("--from 99999992", err, sizeof(err)), 1, "%s",
		     err);
	snprintf(want, sizeof(want), "no record starts at 99999992: past the "
		 "journal's end at %llu", (unsigned long long)rs.end);
	cr_assert(strstr(err, want), "no '%s' in: %s", want, err);
	/* The end itself: nothing to dump, no error. */
	snprintf(args, sizeof(args), "--from %llu", (unsigned long long)rs.end);
	cr_assert_eq(dump_with(args, err, sizeof(err)), 0, "%s", err);

	for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++) {
		cr_expect_eq(dump_with(usage[i].args, err, sizeof(err)),
			     usage[i].status, "%s: %s", usage[i].args, err);
		cr_expect(strstr(err, usage[i].reason), "%s: no '%s' in: %s",
			  usage[i].args, usage[i].reason, err);
		cr_expect_null(strstr(err, "usage:"), "%s: %s", usage[i].args,
			       err);
	}
	close_pub(bus, ch, p);
}

/* Publishes messages from *i on until the ring's head is a multiple of
 * 64 KiB, the last one sized to end exactly there. */
static void fill_to_64k(shmbus_channel *ch, shmbus_pub *p, uint64_t *i)
{
	uint8_t buf[2048];

	for (;;) {
		uint64_t room = 0x10000 - (th_head(ch) & 0xffff);
		int rc;

		if (room == 0x10000)
			return;
		if (room < 16 + TH_MSG_MIN || room > 16 + 2048) {
			publish_range(p, (*i)++, 1);
			continue;
		}
		th_msg_fill(buf, room - 16, 1, *i);
		while ((rc = shmbus_publish(p, buf, room - 16)) == -EAGAIN)
			sched_yield();
		cr_assert_eq(rc, 0);
		(*i)++;
	}
}

/* The last sequence number in the journal's segments from base on. */
static uint64_t last_seq_from(uint64_t base)
{
	struct sb_jreader r;
	struct sb_jrec rec;
	uint64_t seq = UINT64_MAX;

	cr_assert_eq(sb_jreader_init(&r, cdir, NULL), 0);
	cr_assert_eq(sb_jreader_seek(&r, base), 0, "%s", r.why);
	while (sb_jreader_next(&r, UINT64_MAX, &rec) == 1)
		if (rec.type == SHMBUS_REC_MSG)
			seq = rec.seq;
	sb_jreader_close(&r);
	return seq;
}

/* Whether the journal's one segment is the one at base. */
static bool only_segment_at(uint64_t base)
{
	uint64_t *b;
	size_t k;
	bool yes;

	if (sb_jlist(cdir, &b, &k))
		return false;
	yes = k == 1 && b[0] == base;
	free(b);
	return yes;
}

/* Rewrites segment base's header as a release that did not record the
 * sequence number before a segment wrote it: those bytes zero. */
static void as_an_older_release(uint64_t base)
{
	struct shmbus_jseg_hdr h;
	char path[512];
	int fd;

	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, base), 0);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	cr_assert(h.hflags & SHMBUS_JSEG_F_PREV_SEQ, "recorded");
	h.hflags = 0;
	h.prev_seq = 0;
	h.crc = sb_crc32c(0, &h, offsetof(struct shmbus_jseg_hdr, crc));
	cr_assert_eq(pwrite(fd, &h, sizeof(h), 0), (ssize_t)sizeof(h));
	close(fd);
}

/*
 * A reboot after retention left only the newest segment, and that one
 * empty (the journal rolled at the last message, retention took the
 * segment before): the new ring continues with the next sequence number,
 * which the newest segment's header records, not at 0.  A header of an
 * older release does not record it: then the journal says that the new
 * ring's numbers start at 0 and may repeat.
 */
Test(journal_recovery, a_reboot_after_retention_continues_the_sequence)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t i = 1000, end, newest;
	char cmd[400];

	for (int older = 0; older < 2; older++) {
		conf_with("journal_segment = 64K\njournal_retain_bytes = 64K\n",
			  NULL);
		start_daemon();
		ch = open_pub(&bus, &p);
		i = 1000;
		publish_range(p, 0, i);
		fill_to_64k(ch, p, &i);
		wait_written(ch, 10);
		end = th_head(ch);
		/* One segment alone is also seen before the roll: the
		 * one being written.  Waits for the one at the end. */
		for (int t = 0; t < 1000 && !only_segment_at(end); t++)
			usleep(10000);
		cr_assert(only_segment_at(end), "retention kept the newest "
			  "alone (%d segments)", count_segments());
		close_pub(bus, ch, p);
		stop_daemon();
		newest = end;
		cr_assert_eq(last_seq_from(newest), UINT64_MAX,
			     "the newest segment holds no message");
		if (older)
			as_an_older_release(newest);
		remove_ring();
		start_daemon();
		ch = open_pub(&bus, &p);
		cr_assert_eq(th_head(ch), end, "continues at the end");
		publish_range(p, i, 1);
		wait_written(ch, 10);
		if (!older) {
			cr_assert_eq(last_seq_from(newest), i, "sequence %lu "
				     "after %lu messages",
				     (unsigned long)last_seq_from(newest),
				     (unsigned long)i);
			cr_assert_not(log_has("may repeat"));
		} else {
			cr_assert_eq(last_seq_from(newest), 0);
			cr_assert(log_has("do not record the sequence "
					  "number before them: the new ring's "
					  "sequence numbers start at 0 and may "
					  "repeat"));
		}
		close_pub(bus, ch, p);
		stop_daemon();
		remove_ring();
		snprintf(cmd, sizeof(cmd), "rm -r %s", cdir);
		cr_assert_eq(system(cmd), 0, "%s", cmd);
	}
}

/*
 * One flipped bit in the segment before the newest, which was synced
 * when the journal rolled past it: a crash cannot have torn it, so it is
 * damage of the media.  Recovery says so and keeps everything: the
 * newest segment's acknowledged records stay, the new ring continues at
 * the journal's end with the next sequence number (no position or
 * number is used twice), a replay across the damage gets EBADMSG, and
 * `journal verify` reports it.
 */
Test(journal_recovery, damage_before_the_newest_segment_is_kept_and_said)
{
	static struct recs orig;
	uint64_t *b, flip = 0, first = UINT64_MAX, n = 0;
	char path[512], cmd[768], line[256];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_msg m;
	uint8_t buf[2048], c;
	ssize_t len;
	size_t k;
	int fd, segs;

	persisted_then_stopped(3000);
	read_all(&orig);
	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_geq(k, 3);
	segs = (int)k;
	/* A message's payload in segment k-2; the messages of the newest. */
	for (size_t i = 0; i < orig.n; i++) {
		if (orig.type[i] != SHMBUS_REC_MSG)
			continue;
		if (!flip && orig.pos[i] >= b[k - 2] + 1000)
			flip = orig.pos[i] + 20;
		if (orig.pos[i] >= b[k - 1]) {
			if (first == UINT64_MAX)
				first = orig.seq[i];
			n++;
		}
	}
	cr_assert(flip && n > 10);
	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, b[k - 2]), 0);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert_eq(pread(fd, &c, 1, SHMBUS_JSEG_HDR + (flip - b[k - 2])), 1);
	c ^= 0x10;
	cr_assert_eq(pwrite(fd, &c, 1, SHMBUS_JSEG_HDR + (flip - b[k - 2])),
		     1);
	close(fd);
	remove_ring();
	start_daemon();
	cr_assert_eq(count_segments(), segs, "no segment removed");
	ch = open_pub(&bus, &p);
	cr_assert_eq(th_head(ch), orig.end, "the ring continues at %lu, not "
		     "at the journal's end %lu", (unsigned long)th_head(ch),
		     (unsigned long)orig.end);
	snprintf(line, sizeof(line), "segment %016llx is damaged",
		 (unsigned long long)b[k - 2]);
	cr_assert(log_has(line), "not said: %s", line);
	cr_assert_not(log_has("cleared from there on"));
	/* The newest segment's messages, intact; then new ones after them,
	 * numbered on. */
	replay_check(ch, b[k - 1], first, n);
	publish_range(p, 3000, 1);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	cr_assert_eq(last_seq_from(b[k - 1]), 3000);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, b[k - 2], NULL);
	cr_assert(r, "%s", strerror(errno));
	while ((len = shmbus_replay_read(r, buf, sizeof(buf), &m)) >= 0)
		cr_assert_lt(m.pos, flip, "read past the damage");
	cr_assert_eq(len, -EBADMSG, "%zd", len);
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl journal verify %s "
		 ">/dev/null", cdir);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 4, "verify reports it");
	free(b);
}

/*
 * A segment that `journal verify` may not read: exit 1 (unreadable, not
 * damaged), and the error names the segment, not only the errno.  Run as
 * uid 65534, for which the file's mode is enforced.
 */
Test(journal_recovery, verify_names_a_segment_it_cannot_read)
{
	char path[512], cmd[1024], out[400], err[512];
	uint64_t *b;
	size_t k;
	FILE *f;

	persisted_then_stopped(3000);
	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_geq(k, 2);
	cr_assert_eq(chmod(d.dir, 0755) | chmod(jdir, 0755) | chmod(cdir, 0755),
		     0);
	for (size_t i = 0; i < k; i++) {
		cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, b[i]), 0);
		cr_assert_eq(chmod(path, i == 1 ? 0 : 0644), 0);
	}
	snprintf(out, sizeof(out), "%s/verify.err", d.dir);
	snprintf(cmd, sizeof(cmd), "setpriv --reuid=65534 --regid=65534 "
		 "--clear-groups build/tools/shmbusctl journal verify %s "
		 ">/dev/null 2>%s", cdir, out);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 1, "unreadable, not damaged");
	f = fopen(out, "r");
	cr_assert(f);
	cr_assert(fgets(err, sizeof(err), f));
	fclose(f);
	snprintf(path, sizeof(path), "segment %016llx: Permission denied",
		 (unsigned long long)b[1]);
	cr_assert(strstr(err, path), "%s", err);
	free(b);
}

/*
 * The newest segment's time index unusable (a directory in its place): it
 * is a cache, so it is moved aside, said with its name, and a new one
 * begun; the journal starts and goes on.  A segment that is a symbolic
 * link is refused, the log naming the segment and the reason, without a
 * second line blaming an unrelated errno.  `journal verify` calls a link
 * or a directory at a segment's name damage, and says why.
 */
Test(journal_recovery, an_unusable_index_is_moved_aside_and_refusals_say_why)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	struct sb_jnl_view v;
	struct stat st;
	uint64_t *b;
	size_t k;
	char path[512], target[512], line[768];

	ch = journaled("journal_segment = 64K\n", 1000, &bus, &p);
	close_pub(bus, ch, p);
	stop_daemon();
	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_geq(k, 2);
	cr_assert_eq(sb_jtix_path(path, sizeof(path), cdir, b[k - 1]), 0);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(mkdir(path, 0755), 0);
	start_daemon();
	ch = open_pub(&bus, &p);
	sb_jnl_read(ch, &v);
	cr_assert(v.state & SHMBUS_JNL_ON, "the journal started");
	snprintf(line, sizeof(line), "time index %s unusable (Is a "
		 "directory): moved aside to", path);
	cr_assert(log_has(line), "not said: %s", line);
	cr_assert_eq(stat(path, &st), 0);
	cr_assert(S_ISREG(st.st_mode), "a new index begun");
	publish_range(p, 1000, 500);
	wait_written(ch, 10);
	replay_check(ch, 0, 0, 1500);
	close_pub(bus, ch, p);
	stop_daemon();

	/* The oldest segment a symbolic link to a copy of itself. */
	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, b[0]), 0);
	snprintf(target, sizeof(target), "%s/elsewhere", d.dir);
	cr_assert_eq(rename(path, target), 0);
	cr_assert_eq(symlink(target, path), 0);
	start_daemon();
	snprintf(line, sizeof(line), "segment %016llx: a symbolic link, not "
		 "followed: refused", (unsigned long long)b[0]);
	cr_assert(log_has(line), "not said: %s", line);
	cr_assert(log_has("journal not started; the channel goes on without "
			  "it"));
	cr_assert_not(log_has("Invalid cross-device link"));
	/* `journal verify` says it is no segment: damaged (4), as one that
	 * is a directory is, not unreadable (1). */
	snprintf(line, sizeof(line), "build/tools/shmbusctl journal verify %s "
		 ">/dev/null 2>&1", cdir);
	cr_assert_eq(WEXITSTATUS(system(line)), 4, "a link is damage");
	/* A directory in its place: no segment either, said so. */
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(mkdir(path, 0755), 0);
	snprintf(line, sizeof(line), "build/tools/shmbusctl journal verify %s "
		 "2>%s/verify.err >/dev/null", cdir, d.dir);
	cr_assert_eq(WEXITSTATUS(system(line)), 4, "a directory is damage");
	snprintf(line, sizeof(line), "grep -q 'segment %016llx: not a regular "
		 "file' %s/verify.err", (unsigned long long)b[0], d.dir);
	cr_assert_eq(system(line), 0, "the directory not named as no segment");
	cr_assert_eq(rmdir(path), 0);
	free(b);
}

/*
 * A segment removed from the middle of the journal by hand: not a gap
 * the journal left (it marks those: the segment after one says it
 * follows it), but damage.  The daemon says so at start and goes on; a
 * replay across it gets EBADMSG after the last record before it, never
 * the records after it as if nothing were lost; `journal verify` reports
 * it.  (A gap the journal left stays quiet: test_journal's
 * a_lapped_journal_records_its_gap.)
 */
Test(journal_recovery, a_segment_removed_from_the_middle_is_damage)
{
	uint64_t *b, last = 0;
	char path[512], cmd[768];
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct shmbus_msg m;
	uint8_t buf[2048];
	ssize_t len;
	size_t k;

	persisted_then_stopped(3000);
	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_geq(k, 4);
	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, b[1]), 0);
	cr_assert_eq(unlink(path), 0);
	cr_assert_eq(sb_jtix_path(path, sizeof(path), cdir, b[1]), 0);
	unlink(path);
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl journal verify %s "
		 "2>&1 | grep -q 'are missing'", cdir);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 0, "verify does not say it");
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl journal verify %s "
		 ">/dev/null 2>&1", cdir);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 4, "verify reports it");
	start_daemon();
	cr_assert(log_has("are missing, and the journal left no gap there"));
	ch = open_pub(&bus, &p);
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, b[0], NULL);
	cr_assert(r, "%s", strerror(errno));
	while ((len = shmbus_replay_read(r, buf, sizeof(buf), &m)) >= 0) {
		cr_assert_lt(m.pos, b[1], "read across the hole");
		cr_assert_eq(m.lost, 0);
		last = m.pos;
	}
	cr_assert_eq(len, -EBADMSG, "%zd", len);
	cr_assert_gt(last, b[0]);
	shmbus_replay_close(r);
	/* The journal goes on. */
	publish_range(p, 3000, 1);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	close_pub(bus, ch, p);
	free(b);
}

/*
 * A change of capacity the daemon refuses (the ring keeps its geometry)
 * leaves the journal as it was: its default segment size follows the
 * ring's capacity, not the config's.  Before, the config's 128M made the
 * default segment 128M where the journal's were 64M: at the next start
 * its segments were refused, the channel went on without its journal,
 * and every persisted acknowledgement timed out.
 */
Test(journal_recovery, a_refused_capacity_change_keeps_the_journal)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	conf_raw("capacity = 64M\nmax_msg = 1K\nacknowledge = persisted\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, 100);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	close_pub(bus, ch, p);
	stop_daemon();
	conf_raw("capacity = 128M\nmax_msg = 1K\nacknowledge = persisted\n");
	start_daemon();
	cr_assert(log_has("geometry differs from the config: kept"));
	ch = open_pub(&bus, &p);
	publish_range(p, 100, 10);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0,
		     "nothing acknowledged as persisted after the restart");
	close_pub(bus, ch, p);
	cr_assert_not(log_has("belongs to channel"));
}

/* The ring's data file says how far the journal was synced, and the start
 * writes the newest segment again from there: any process that maps the
 * data file writable can write that word, and a value past the segment
 * (2^63 made the file offset negative: the journal did not start) is not
 * believed: the whole segment is written again, and the journal goes on;
 * the next sync sets the word back (past head, shmbus_pub_sync() believed
 * it never). */
Test(journal_recovery, a_hostile_persisted_position_does_not_stop_the_journal)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	persisted_then_stopped(100);
	ch = shmbus_channel_open(d.dir, "j");
	cr_assert(ch, "%s", strerror(errno));
	ch->daemon->persisted_pos = UINT64_C(1) << 63;
	shmbus_channel_close(ch);
	start_daemon();
	cr_assert(!log_has("journal not started"), "the journal stopped");
	ch = open_pub(&bus, &p);
	publish_range(p, 100, 10);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	close_pub(bus, ch, p);
	ch = open_pub(&bus, &p);
	cr_assert_eq(replay_check(ch, 0, 0, 110), 110);
	close_pub(bus, ch, p);
}

/* A record whose sequence number no producer has handed out yet (at or
 * past the channel's next, prod_line.seq), written by a process that maps
 * the ring: damage, said and waited on, never written to the journal as a
 * record (it would stop the journal for good at the next record: "the
 * ring went back"); once the number is right again, the journal goes on
 * with every record. */
Test(journal_recovery, a_sequence_number_from_the_future_is_damage)
{
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	struct sb_jnl_view v;
	struct recs *rs = malloc(sizeof(*rs));
	uint64_t pos, real;
	void *buf;

	cr_assert(rs);
	ch = journaled("journal_fsync = none\n", 10, &bus, &p);
	pos = th_head(ch);
	cr_assert_eq(shmbus_claim(p, 64, &buf), 0);
	memset(buf, 10, 64);
	real = rec_at(ch, pos)->seq;
	rec_at(ch, pos)->seq = real + (UINT64_C(1) << 40);
	cr_assert_eq(shmbus_commit(p), 0);
	publish_range(p, 11, 10);
	for (int i = 0; i < 3000 && !log_has("journal: the ring is damaged at");
	     i++)
		usleep(1000);
	cr_assert(log_has("journal: the ring is damaged at"));
	cr_assert_not(log_has("the journal stops here"));
	sb_jnl_read(ch, &v);
	cr_assert_eq(v.written, pos, "written to %lu, the damage at %lu",
		     (unsigned long)v.written, (unsigned long)pos);
	cr_assert(v.state & SHMBUS_JNL_ERROR, "state %#x", v.state);
	/* Set right again: the journal goes on, and holds every record. */
	rec_at(ch, pos)->seq = real;
	wait_written(ch, 10);
	read_all(rs);
	cr_assert_eq(rs->n, 21);
	for (size_t i = 0; i < rs->n; i++)
		cr_assert_eq(rs->seq[i], i);
	close_pub(bus, ch, p);
	free(rs);
}

/*
 * A reboot after a journal that ends in a gap: the ring lapped the journal
 * (shmbusd stopped), the journal recorded the range it lost, and a power
 * loss then took what it wrote after the gap (simulated: the records
 * after it cleared, or only those of the newest segment).  The sequence
 * numbers the gap took were handed out, to live subscribers among others:
 * the new ring never hands them out again, and a replay across the gap
 * counts the loss.  `cross`: the gap spans segments (the newest segment
 * follows it and holds nothing); else it ends inside the newest segment
 * (GAP records at its end).  `again`: bytes of a second gap where the
 * first ends (the agent lapped again at once), whose numbers the journal
 * never knew: the new ring starts past as many as they could hold.
 */
static void trailing_gap(bool cross, uint64_t again)
{
	static struct recs orig;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	shmbus_replay *r;
	struct sb_jreader jr;
	struct sb_jrec rec;
	uint64_t *b, to = UINT64_MAX, first_after = UINT64_MAX, base;
	uint64_t before = 30, during = cross ? 2000 : 60, seen = 0, last;
	uint8_t buf[2048];
	char path[512];
	size_t k;
	int fd;

	conf_raw("capacity = 16K\nmax_msg = 1K\npolicy = overwrite\n"
		 "journal_segment = 64K\n");
	start_daemon();
	ch = open_pub(&bus, &p);
	publish_range(p, 0, before);
	wait_written(ch, 10);
	pause_daemon();
	publish_range(p, before, during);
	kill(d.pid, SIGCONT);
	wait_written(ch, 10);
	close_pub(bus, ch, p);
	stop_daemon();
	/* Where the gap ends: the first record after the last GAP record,
	 * and the first message there. */
	read_all(&orig);
	for (size_t i = 0; i < orig.n; i++)
		if (orig.type[i] == SHMBUS_JREC_GAP)
			to = UINT64_MAX;
		else if (to == UINT64_MAX && i && orig.pos[i] != orig.pos[i - 1] +
			 orig.size[i - 1])
			to = orig.pos[i];	/* after segments never made */
		else if (to == UINT64_MAX && i && orig.type[i - 1] ==
			 SHMBUS_JREC_GAP)
			to = orig.pos[i];
	cr_assert_neq(to, UINT64_MAX, "a gap with records after it");
	for (size_t i = 0; i < orig.n; i++)
		if (orig.pos[i] >= to && orig.type[i] == SHMBUS_REC_MSG) {
			first_after = orig.seq[i];
			break;
		}
	cr_assert_gt(first_after, before, "the gap took messages");
	base = to & ~(uint64_t)0xffff;
	for (size_t i = 0; i < orig.n; i++)
		if (orig.type[i] == SHMBUS_JREC_GAP) {
			cr_assert_eq(cross, orig.pos[i] < base, "the gap's "
				     "shape: [%lu, %lu)",
				     (unsigned long)orig.pos[i],
				     (unsigned long)to);
			break;
		}
	/* The power loss: nothing after the gap reached the disk. */
	remove_after(base);
	cr_assert_eq(sb_jseg_path(path, sizeof(path), cdir, base), 0);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	{
		static uint8_t zero[64 << 10];

		cr_assert_eq(pwrite(fd, zero, 0x10000 - (to - base),
				    (off_t)(SHMBUS_JSEG_HDR + (to - base))),
			     (ssize_t)(0x10000 - (to - base)));
	}
	if (again) {
		uint8_t w[8];
		uint64_t word = (uint64_t)SHMBUS_JREC_GAP << SHMBUS_LEN_BITS |
				(again - 8);

		cr_assert_leq((to & 0x3fff) + again, 0x4000);
		memcpy(w, &word, 8);
		sb_jrec_seal(w, to);
		cr_assert_eq(pwrite(fd, w, 8, (off_t)(SHMBUS_JSEG_HDR +
						      (to - base))), 8);
	}
	close(fd);
	cr_assert_eq(sb_jtix_path(path, sizeof(path), cdir, base), 0);
	unlink(path);
	remove_ring();
	start_daemon();
	ch = open_pub(&bus, &p);
	cr_assert_eq(th_head(ch), to + again, "the new ring continues at the "
		     "gap's end");
	cr_assert_geq(sb_ring_next_seq(ch), first_after + again / 16,
		      "sequence %lu again: the gaps took up to %lu",
		      (unsigned long)sb_ring_next_seq(ch),
		      (unsigned long)(first_after + again / 16 - 1));
	publish_range(p, 5000, 3);
	wait_written(ch, 10);
	/* The journal: every sequence number grows across the gap. */
	cr_assert_eq(sb_jreader_init(&jr, cdir, NULL), 0);
	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_eq(sb_jreader_seek(&jr, b[0]), 0);
	free(b);
	while (sb_jreader_next(&jr, UINT64_MAX, &rec) == 1)
		;
	cr_assert_eq(jr.pos, th_head(ch), "%s", jr.why);
	sb_jreader_close(&jr);
	/* A replay from 0: the first 30, the loss counted, then the 3. */
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "%s", strerror(errno));
	last = UINT64_MAX;
	for (int idle = 0; seen < before + 3 && idle < 2000;) {
		struct shmbus_msg m;
		ssize_t n = shmbus_replay_read(r, buf, sizeof(buf), &m);

		if (n == -EAGAIN) {
			idle++;
			usleep(1000);
			continue;
		}
		cr_assert_geq(n, 0, "read: %zd", n);
		/* Exactly across segments (the header after the gap says
		 * how many it took); within one, as many as it could hold. */
		if (seen == before && cross && !again)
			cr_assert_eq(m.lost, first_after - before, "the gap's "
				     "%lu messages counted lost: %lu",
				     (unsigned long)(first_after - before),
				     (unsigned long)m.lost);
		else if (seen == before)
			cr_assert_geq(m.lost, first_after - before +
					      again / 16, "the gaps' %lu "
				      "messages counted lost: %lu",
				      (unsigned long)(first_after - before +
						      again / 16),
				      (unsigned long)m.lost);
		else
			cr_assert_eq(m.lost, 0);
		cr_assert(last == UINT64_MAX || m.seq > last);
		last = m.seq;
		seen++;
	}
	cr_assert_eq(seen, before + 3);
	shmbus_replay_close(r);
	close_pub(bus, ch, p);
}

Test(journal_recovery, a_reboot_after_a_gap_across_segments_keeps_its_numbers)
{
	trailing_gap(true, 0);
}

Test(journal_recovery, a_reboot_after_two_gaps_keeps_their_numbers)
{
	trailing_gap(true, 1024);
}

Test(journal_recovery, a_reboot_after_a_gap_in_a_segment_keeps_its_numbers)
{
	trailing_gap(false, 0);
}

/* The newest segment held exclusively while its tail is cleared from
 * `cut` on, as a rejoin's cut does (daemon/journal_start.c). */
struct cutter {
	char path[512];
	uint64_t base, cut, end;
	int fd;
	bool ok;
};

static void *cut_under_lock(void *arg)
{
	struct cutter *c = arg;
	size_t n = (size_t)(c->end - c->cut);
	uint8_t *zero = calloc(1, n);

	/* Long enough for the reader to have reached the segment and to
	 * wait for its lock. */
	usleep(500000);
	c->ok = zero && pwrite(c->fd, zero, n, (off_t)(SHMBUS_JSEG_HDR +
						       (c->cut - c->base))) ==
			(ssize_t)n;
	free(zero);
	c->ok = flock(c->fd, LOCK_UN) == 0 && c->ok;
	return NULL;
}

/*
 * A reader that crosses into a segment while a cut clears it (it waits
 * for the segment's lock) reads with the end it knew before the cut: the
 * cleared words below that end are an end, for it to look at the
 * journal's end again, not damage; damage stays damage at its next read.
 */
Test(journal_recovery, a_reader_that_waited_for_a_cut_finds_an_end_not_damage)
{
	static struct recs all;
	struct sb_jreader r;
	struct sb_jrec rec;
	struct cutter c = { .fd = -1 };
	pthread_t t;
	uint64_t *b;
	size_t k;
	int rc;

	persisted_then_stopped(3000);
	read_all(&all);
	cr_assert_eq(sb_jlist(cdir, &b, &k), 0);
	cr_assert_geq(k, 2);
	c.base = b[k - 1];
	c.end = all.end;
	for (size_t i = 0; i < all.n && !c.cut; i++)
		if (all.pos[i] >= c.base + (c.end - c.base) / 2)
			c.cut = all.pos[i];
	cr_assert(c.cut > c.base && c.cut < c.end);
	cr_assert_eq(sb_jseg_path(c.path, sizeof(c.path), cdir, c.base), 0);
	c.fd = open(c.path, O_RDWR);
	cr_assert(c.fd >= 0);
	cr_assert_eq(flock(c.fd, LOCK_EX), 0);
	cr_assert_eq(pthread_create(&t, NULL, cut_under_lock, &c), 0);
	/* From the segment before it, with the end known before the cut. */
	cr_assert_eq(sb_jreader_init(&r, cdir, NULL), 0);
	cr_assert_eq(sb_jreader_seek(&r, b[k - 2]), 0);
	while ((rc = sb_jreader_next(&r, c.end, &rec)) == 1)
		;
	pthread_join(t, NULL);
	cr_assert(c.ok, "the cut's writes");
	cr_assert_eq(rc, 0, "%d: %s", rc, r.why);
	cr_assert_eq(r.pos, c.cut, "stopped at %lu, the cut at %lu",
		     (unsigned long)r.pos, (unsigned long)c.cut);
	cr_assert_eq(r.stop, SB_JSTOP_UNWRITTEN);
	/* Asked again with the same end: the words below it are zero. */
	cr_assert_eq(sb_jreader_next(&r, c.end, &rec), -EBADMSG);
	sb_jreader_close(&r);
	close(c.fd);
	free(b);
}
