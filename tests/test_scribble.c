/* SPDX-License-Identifier: MIT */
/*
 * test_scribble.c - a publisher that writes over the shared memory it was
 * handed, and what shmbusd's own agents (the crash repair, the journal,
 * group upkeep) then do with it: a torn header with committed records
 * after it is left and said, never padded over; and random words written
 * over every file of a bus under traffic leave shmbusd running and the
 * channel nobody wrote over working.  SHMBUS_SCRIBBLE_SEED picks the
 * words (the seed is logged), SHMBUS_SCRIBBLE_MS how long (3000), and
 * SHMBUS_SCRIBBLE_SKIP_HDR spares the channels' identity lines.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"

struct where {
	uint64_t bad, head, word;
	bool fake;	/* the torn record's payload starts as a record */
};

/* Publishes 100 messages on blk, then writes over the commit word of the
 * third last (a torn header: last lap's tag), and dies holding the
 * producer role. */
static int tear_then_die(void *arg)
{
	struct where *w = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t m[40];

	if (!p)
		return 1;
	for (uint64_t i = 0; i < 100; i++) {
		memset(m, (int)i, sizeof(m));
		if (i == 97)
			w->bad = th_head(ch);
		if (shmbus_publish(p, m, sizeof(m)))
			return 2;
	}
	w->head = th_head(ch);
	w->word = commit_word(ch, w->bad, SHMBUS_REC_MSG, sizeof(m)) -
		  (UINT64_C(1) << 32);
	__atomic_store_n(&rec_at(ch, w->bad)->commit, w->word,
			 __ATOMIC_RELEASE);
	kill(getpid(), SIGKILL);
	return 3;
}

/* The messages after a torn header were committed: the repair of the
 * dead producer must not pad over them (every subscriber would step over
 * them without a word, a silent gap); it says where the damage is and
 * leaves it, and subscribers stop there. */
Test(scribble, a_torn_header_is_not_padded_over_with_the_records_after_it,
     .init = setup, .fini = teardown)
{
	struct where *w = mmap(NULL, sizeof(*w), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_msg mi;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint8_t buf[128];
	uint64_t got = 0;
	ssize_t rc = 0;

	cr_assert(w != MAP_FAILED);
	ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	cr_assert(sub);
	cr_assert_eq(th_wait(th_spawn(tear_then_die, w)), 128 + SIGKILL);
	for (int i = 0; i < 300 && !log_has("blk: the ring is damaged at");
	     i++)
		usleep(1000);
	cr_assert(log_has("blk: the ring is damaged at"));
	cr_assert_not(log_has("padded the unfinished claim"));
	cr_assert_eq(__atomic_load_n(&rec_at(ch, w->bad)->commit,
				     __ATOMIC_ACQUIRE), w->word,
		     "the torn header was written over");
	for (int i = 0; i < 200; i++) {
		rc = shmbus_read(sub, buf, sizeof(buf), &mi);
		if (rc == -EAGAIN) {
			usleep(1000);
			continue;
		}
		if (rc < 0)
			break;
		cr_assert_eq(mi.seq, got, "message %lu where %lu was due",
			     (unsigned long)mi.seq, (unsigned long)got);
		got++;
	}
	cr_assert_eq(got, 97, "read %lu messages of the 97 before the damage",
		     (unsigned long)got);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	munmap(w, sizeof(*w));
}

/* The same, but the producer dies as producers die: inside a claim it
 * has not committed (after 100 messages, a claim of message 100).  The
 * records after the torn header end at the dead claim's zero word, not at
 * head: still committed records, which padding would hide (98 and 99). */
static int tear_then_die_in_claim(void *arg)
{
	struct where *w = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t m[40];
	void *buf;

	if (!p)
		return 1;
	for (uint64_t i = 0; i < 100; i++) {
		memset(m, (int)i, sizeof(m));
		if (i == 97)
			w->bad = th_head(ch);
		if (i == 97 && w->fake) {
			/* A record of 8 bytes numbered 0 where the payload
			 * starts; after it, this payload's bytes. */
			uint64_t look = commit_word(ch, w->bad + 16,
						    SHMBUS_REC_MSG, 8), zero = 0;

			memcpy(m, &look, 8);
			memcpy(m + 8, &zero, 8);
		}
		if (shmbus_publish(p, m, sizeof(m)))
			return 2;
	}
	w->word = commit_word(ch, w->bad, SHMBUS_REC_MSG, sizeof(m)) -
		  (UINT64_C(1) << 32);
	__atomic_store_n(&rec_at(ch, w->bad)->commit, w->word,
			 __ATOMIC_RELEASE);
	if (shmbus_claim(p, sizeof(m), &buf))
		return 4;
	w->head = th_head(ch);
	kill(getpid(), SIGKILL);
	return 3;
}

static void torn_before_a_dead_claim(bool fake)
{
	struct where *w = mmap(NULL, sizeof(*w), PROT_READ | PROT_WRITE,
			       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	shmbus_bus *bus;
	shmbus_channel *ch;

	cr_assert(w != MAP_FAILED);
	w->fake = fake;
	ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	cr_assert_eq(th_wait(th_spawn(tear_then_die_in_claim, w)),
		     128 + SIGKILL);
	for (int i = 0; i < 300 && !log_has("blk: the ring is damaged at") &&
	     !log_has("padded the unfinished claim"); i++)
		usleep(1000);
	cr_assert_not(log_has("padded the unfinished claim"),
		      "the repair padded [%lu, %lu): messages 97..99 hidden",
		      (unsigned long)w->bad, (unsigned long)w->head);
	cr_assert(log_has("blk: the ring is damaged at"));
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	munmap(w, sizeof(*w));
}

Test(scribble, a_torn_header_before_a_dead_claim_is_not_padded_over,
     .init = setup, .fini = teardown)
{
	torn_before_a_dead_claim(false);
}

/* The same, the torn record's payload starting with bytes that read as a
 * record of this lap (numbered 0, before the damage's numbers): a walk
 * from there is not taken for the records after the damage. */
Test(scribble, a_payload_that_reads_as_a_record_is_not_the_records_after,
     .init = setup, .fini = teardown)
{
	torn_before_a_dead_claim(true);
}

/* ---------------------------------------------------------------- chaos */

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

static char chaos_jdir[200];

static void chaos_setup(void)
{
	char body[1024];

	snprintf(chaos_jdir, sizeof(chaos_jdir), "%s", th_mkdir());
	snprintf(body, sizeof(body),
		 "journal_dir = %s\n"
		 "[defaults]\npublish = *\nsubscribe = *\n"
		 "[channel j]\ncapacity = 64K\nmax_msg = 2K\njournal = on\n"
		 "[channel jm]\ncapacity = 64K\nmax_msg = 2K\nproducers = multi\n"
		 "journal = on\n"
		 "[channel jo]\ncapacity = 16K\nmax_msg = 1K\npolicy = overwrite\n"
		 "producers = multi\njournal = on\n"
		 "[channel g]\ncapacity = 64K\nmax_msg = 1K\nproducers = multi\n"
		 "[channel ok]\ncapacity = 64K\nmax_msg = 1K\n", chaos_jdir);
	d.pid = 0;
	setup_with(body);
}

static void chaos_fini(void)
{
	teardown();
	th_rmdir(chaos_jdir);
}

static volatile int chaos_stop;
static void on_term(int s) { (void)s; chaos_stop = 1; }

/* Closes what open_role() gave (either may be NULL), and pauses before
 * the next open. */
static void close_role(shmbus_channel *ch, shmbus_bus *bus)
{
	if (ch)
		shmbus_channel_close(ch);
	if (bus)
		shmbus_disconnect(bus);
	usleep(1000);
}

/* Publishes on chan until SIGTERM, errors ignored (reopening on one). */
static int noisy_pub(void *arg)
{
	const char *chan = arg;
	uint8_t m[300];

	signal(SIGTERM, on_term);
	while (!chaos_stop) {
		shmbus_bus *bus = NULL;
		shmbus_channel *ch = open_role(&bus, chan, SHMBUS_ROLE_PUBLISH);
		shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;

		for (uint32_t i = 0; p && !chaos_stop && i < 100000; i++) {
			int rc = shmbus_publish(p, m, 8 + i % 280);

			if (rc == -EAGAIN || rc == -ENOBUFS)
				usleep(100);
			else if (rc)
				break;
			if (i % 64 == 0)
				usleep(200);
		}
		if (p)
			shmbus_pub_close(p);
		close_role(ch, bus);
	}
	return 0;
}

static int noisy_sub(void *arg)
{
	const char *chan = arg;
	uint8_t buf[4096];

	signal(SIGTERM, on_term);
	while (!chaos_stop) {
		shmbus_bus *bus = NULL;
		shmbus_channel *ch = open_role(&bus, chan,
					       SHMBUS_ROLE_SUBSCRIBE);
		shmbus_sub *s = ch ? shmbus_sub_open(ch, NULL) : NULL;

		while (s && !chaos_stop) {
			ssize_t rc = shmbus_read(s, buf, sizeof(buf), NULL);

			if (rc == -EAGAIN)
				usleep(100);
			else if (rc < 0 && rc != -ENOBUFS)
				break;
		}
		if (s)
			shmbus_sub_close(s);
		close_role(ch, bus);
	}
	return 0;
}

static int noisy_member(void *arg)
{
	const char *chan = arg;
	uint8_t buf[4096];
	char me[32];

	snprintf(me, sizeof(me), "m%d", (int)getpid());
	signal(SIGTERM, on_term);
	while (!chaos_stop) {
		shmbus_bus *bus = NULL;
		shmbus_channel *ch = open_role(&bus, chan,
					       SHMBUS_ROLE_SUBSCRIBE);
		shmbus_group *m = ch ? shmbus_group_join(ch, "grp", me, NULL)
				     : NULL;

		while (m && !chaos_stop) {
			struct shmbus_group_msg gm;
			ssize_t rc = shmbus_group_read(m, buf, sizeof(buf), &gm);

			if (rc == -EAGAIN)
				usleep(100);
			else if (rc < 0)
				break;
			else
				shmbus_group_ack(m, &gm.lease);
		}
		if (m)
			shmbus_group_leave(m);
		close_role(ch, bus);
	}
	return 0;
}

static uint8_t *map_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDWR);
	struct stat st;
	void *p;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) || st.st_size == 0) {
		close(fd);
		return NULL;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return NULL;
	*len = (size_t)st.st_size;
	return p;
}

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* A value a hostile writer would pick for an 8-byte word. */
static uint64_t evil(uint64_t *s, uint64_t old)
{
	switch (rnd(s) % 10) {
	case 0: return 0;
	case 1: return UINT64_MAX;
	case 2: return old + (rnd(s) % 64);
	case 3: return old - (rnd(s) % 64);
	case 4: return old ^ ((uint64_t)1 << (rnd(s) % 64));
	case 5: return old + (UINT64_C(1) << 32);	/* next lap's tag */
	case 6: return old | (UINT64_C(7) << 29);	/* type 7 */
	case 7: return (old & ~(uint64_t)SHMBUS_LEN_MASK) | SHMBUS_LEN_MASK;
	case 8: return old << 1;
	default: return rnd(s);
	}
}

/* Scribbles over every file of the bus directory (but the daemon's own:
 * the socket, the log, the config) for `ms` milliseconds, `skip_hdr`
 * sparing the header's identity line. */
static void scribble(const char *dirp, int ms, uint64_t seed, bool skip_hdr)
{
	uint64_t s = seed | 1, end = th_now_ns() + (uint64_t)ms * 1000000;

	while (th_now_ns() < end) {
		DIR *dp = opendir(dirp);
		struct dirent *e;

		while (dp && (e = readdir(dp))) {
			char path[512];
			uint8_t *m;
			size_t len;

			if (e->d_type != DT_REG || strstr(e->d_name, ".conf") ||
			    strstr(e->d_name, ".log") ||
			    strstr(e->d_name, "bus.") || !strcmp(e->d_name, "ok") ||
			    strstr(e->d_name, ".ok."))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dirp, e->d_name);
			m = map_file(path, &len);
			if (!m)
				continue;
			for (int k = 0; k < 4; k++) {
				size_t off = (rnd(&s) % (len / 8)) * 8;
				uint64_t *w = (uint64_t *)(m + off);

				if (skip_hdr && off < 128 &&
				    e->d_name[0] != '.')
					continue;
				__atomic_store_n(w, evil(&s, *w),
						 __ATOMIC_RELAXED);
			}
			munmap(m, len);
		}
		if (dp)
			closedir(dp);
		usleep(2000);
	}
}

static void chaos(uint64_t seed, bool skip_hdr, int ms)
{
	static const char *const chans[] = { "j", "jm", "jo", "g" };
	pid_t pids[32];
	int n = 0;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *p;
	shmbus_sub *sub;
	uint8_t buf[64];

	for (int i = 0; i < 4; i++) {
		pids[n++] = th_spawn(noisy_pub, (void *)chans[i]);
		pids[n++] = th_spawn(noisy_sub, (void *)chans[i]);
	}
	pids[n++] = th_spawn(noisy_pub, "jm");
	pids[n++] = th_spawn(noisy_member, "g");
	pids[n++] = th_spawn(noisy_member, "g");
	usleep(300 * 1000);
	scribble(d.dir, ms, seed, skip_hdr);
	usleep(500 * 1000);
	for (int i = 0; i < n; i++)
		kill(pids[i], SIGTERM);
	for (int i = 0; i < n; i++) {
		for (int t = 0; t < 300; t++) {
			if (waitpid(pids[i], NULL, WNOHANG) == pids[i]) {
				pids[i] = 0;
				break;
			}
			usleep(10000);
		}
		if (pids[i]) {
			cr_log_info("client %d of %d hangs; killed", i, n);
			kill(pids[i], SIGKILL);
			waitpid(pids[i], NULL, 0);
		}
	}
	cr_assert_eq(waitpid(d.pid, NULL, WNOHANG), 0, "shmbusd died (%s)",
		     d.log);
	/* The channel nobody scribbled on works. */
	ch = open_role(&bus, "ok", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "ok: %s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	{
		shmbus_bus *b2;
		shmbus_channel *c2 = open_role(&b2, "ok",
					       SHMBUS_ROLE_SUBSCRIBE);
		cr_assert(c2);
		sub = shmbus_sub_open(c2, NULL);
		cr_assert(sub);
		cr_assert_eq(shmbus_publish(p, "hello", 5), 0);
		cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 5);
		shmbus_sub_close(sub);
		shmbus_channel_close(c2);
		shmbus_disconnect(b2);
	}
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(scribble, rings_and_groups_scribbled_under_traffic, .init = chaos_setup,
     .fini = chaos_fini, .timeout = 120)
{
	const char *e = getenv("SHMBUS_SCRIBBLE_SEED");
	uint64_t seed = e ? strtoull(e, NULL, 0) : (uint64_t)time(NULL);
	const char *msv = getenv("SHMBUS_SCRIBBLE_MS");

	cr_log_info("seed %llu", (unsigned long long)seed);
	chaos(seed, getenv("SHMBUS_SCRIBBLE_SKIP_HDR") != NULL,
	      msv ? atoi(msv) : 3000);
}

/* ------------------------------------------------- the producer's role */

/* A pid no process has: past the kernel's largest pid_max. */
#define NO_PID 4194305u

/* Publishes 400 messages on the channel named `arg` (their number as
 * payload), each claim held open 1 ms (after its hand-off, on a multi
 * producer's). */
static int slow_claims(void *arg)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, arg, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;

	if (!p)
		return 1;
	for (uint64_t i = 0; i < 400; i++) {
		void *b;

		if (shmbus_claim(p, sizeof(i), &b))
			return 2;
		memcpy(b, &i, sizeof(i));
		usleep(1000);
		if (shmbus_commit(p))
			return 3;
	}
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/*
 * A process that can write the data file (a producer, or root through the
 * file's path; a subscriber maps it read-only) writes a gone process's pid
 * (or the producer's own with another start tag) into the single
 * producer's role word (prod_line.sp_owner), as its holder or as its
 * repairer, while the producer holds claims open: the repair must not
 * take the role and pad over the live producer's claim (its commit then
 * lands behind every subscriber: a message lost without a word).  The
 * daemon sees the live producer's slot, gives the role back to it and
 * says so; every message arrives, in order.
 */
Test(scribble, a_producer_role_written_over_pads_no_live_claim,
     .init = setup, .fini = teardown)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_msg mi;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint64_t v, got = 0;
	pid_t pub;
	uint64_t other = 0, w;
	int forged = 0;
	struct shmbus_prod_line *pl = th_map_pline(d.dir, "blk");

	cr_assert(pl);
	ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	cr_assert(sub);
	/* The subscriber itself cannot make the producers' line writable. */
	cr_assert_neq(mprotect((void *)((uintptr_t)ch->pl & ~(uintptr_t)4095),
			       4096, PROT_READ | PROT_WRITE), 0);
	cr_assert_eq(errno, EACCES);
	pub = th_spawn(slow_claims, "blk");
	for (int idle = 0; got < 400 && idle < 3000;) {
		ssize_t rc = shmbus_read(sub, &v, sizeof(v), &mi);

		if (rc == -EAGAIN) {
			/* The producer's pid with another start's tag,
			 * once it holds the role: a word written over
			 * before would refuse it the role. */
			w = __atomic_load_n(&pl->sp_owner,
					    __ATOMIC_RELAXED);
			if (!other && role_pid(w) == (uint32_t)pub)
				other = (uint64_t)(role_tag(w) + 1) << 32 |
					(uint32_t)pub;
			if (got < 300 && other && idle % 2 == 0) {
				/* As the holder, or as a repairer; a gone
				 * process, shmbusd itself (whose scan then
				 * finds a word naming its own pid), or the
				 * producer as another process. */
				uint64_t who = forged % 6 < 2 ? NO_PID :
					       forged % 6 < 4 ?
					       (uint32_t)d.pid : other;

				__atomic_store_n(&pl->sp_owner,
						 forged % 2 ? who :
						 who | SHMBUS_SP_REPAIRING,
						 __ATOMIC_RELAXED);
				forged++;
			}
			idle++;
			usleep(500);
			continue;
		}
		cr_assert_eq(rc, sizeof(v), "read: %zd", rc);
		cr_assert_eq(v, got, "message %lu where %lu was due (lost %lu)",
			     (unsigned long)v, (unsigned long)got,
			     (unsigned long)mi.lost);
		got++;
		idle = 0;
	}
	cr_log_info("400 messages, the role written over %d times", forged);
	cr_assert_eq(got, 400);
	cr_assert_eq(th_wait(pub), 0);
	cr_assert_not(log_has("padded the unfinished claim"));
	cr_assert(log_has("the producer role named gone process"));
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

static const char *role_dir;
static int role_ready[2] = { -1, -1 }, role_done[2] = { -1, -1 };
static pid_t holder_pid;

static void role_fini(void)
{
	if (holder_pid > 0) {
		kill(holder_pid, SIGKILL);
		th_wait(holder_pid);
	}
	for (int i = 0; i < 2; i++) {
		if (role_ready[i] >= 0)
			close(role_ready[i]);
		if (role_done[i] >= 0)
			close(role_done[i]);
	}
	if (role_dir)
		th_rmdir(role_dir);
}

/* Opens a publisher on role_dir's channel "ch" (the role and a producer
 * slot), says so, and holds it until told. */
static int role_holder(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(role_dir, "ch");
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	char c = p ? 'y' : 'n';

	(void)arg;
	if (write(role_ready[1], &c, 1) != 1 || !p)
		return 1;
	if (read(role_done[0], &c, 1) < 0)
		return 2;
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	return 0;
}

/*
 * Direct mode, no daemon: the role word written over with a gone
 * process's pid (or the holder's own with another start tag) while a
 * live producer holds the role.  A second producer must not take the
 * role over (and pad over the live one's claim, then write beside it):
 * -EBUSY, as for a live holder.
 */
Test(scribble, a_producer_role_written_over_is_not_taken_over,
     .fini = role_fini)
{
	shmbus_channel *ch;
	shmbus_pub *p;
	uint64_t other;
	char c = 0;

	role_dir = th_mkdir();
	ch = th_create(role_dir, 4096, 256, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	cr_assert(pipe(role_ready) == 0 && pipe(role_done) == 0);
	holder_pid = th_spawn(role_holder, NULL);
	cr_assert_eq(read(role_ready[0], &c, 1), 1);
	cr_assert_eq(c, 'y');
	/* The holder's pid, another start's tag: that of a process given
	 * its pid, for whoever can read its start. */
	other = (uint64_t)(role_tag(ch->pl->sp_owner) + 1) << 32 |
		(uint32_t)holder_pid;
	for (int k = 0; k < 6; k++) {
		/* As the holder, then as a repairer; a gone process, then
		 * the opener itself (which takes a word naming its own pid
		 * for one a dead process with its pid left, unless a live
		 * producer holds a slot), then the holder's pid with
		 * another tag. */
		uint32_t who = k < 2 ? NO_PID : (uint32_t)getpid();

		__atomic_store_n(&ch->pl->sp_owner,
				 k >= 4 ? (k % 2 ? other | SHMBUS_SP_REPAIRING
						 : other)
				 : k % 2 ? who | SHMBUS_SP_REPAIRING : who,
				 __ATOMIC_RELAXED);
		errno = 0;
		p = shmbus_pub_open(ch, NULL);
		cr_assert_null(p, "a second producer took the live one's "
			       "role (%d)", k);
		cr_assert_eq(errno, EBUSY, "errno %d", errno);
	}
	cr_assert_eq(write(role_done[1], "x", 1), 1);
	cr_assert_eq(th_wait(holder_pid), 0);
	holder_pid = 0;
	shmbus_channel_close(ch);
}

/*
 * Multi producer: a process that can write the data file (a producer, or
 * root through the file's path; a subscriber maps it read-only) copies a
 * live producer's announced claim (claim_pos, claim_end) into a free
 * producer slot that it marks ACTIVE for a gone process.  The repair of
 * that slot must not pad the claim, which is the live producer's: every
 * message arrives, in order.
 */
Test(scribble, a_copied_claim_of_a_live_producer_is_not_padded,
     .init = setup, .fini = teardown)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_msg mi;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint64_t v, got = 0;
	pid_t pub;
	int forged = 0;

	struct shmbus_prod_slot *prods = th_map_prods(d.dir, "mp");

	cr_assert(prods);
	ch = open_role(&bus, "mp", SHMBUS_ROLE_SUBSCRIBE);
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	cr_assert(sub);
	/* The subscriber itself cannot make the producer slots writable. */
	cr_assert_neq(mprotect((void *)((uintptr_t)ch->prods &
					~(uintptr_t)4095), 4096,
			       PROT_READ | PROT_WRITE), 0);
	cr_assert_eq(errno, EACCES);
	pub = th_spawn(slow_claims, "mp");
	for (int idle = 0; got < 400 && idle < 3000;) {
		ssize_t rc = shmbus_read(sub, &v, sizeof(v), &mi);

		if (rc == -EAGAIN) {
			struct shmbus_prod_slot *live = NULL, *fake = NULL;

			for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
				struct shmbus_prod_slot *s = &prods[i];
				uint64_t o = __atomic_load_n(&s->owner,
							     __ATOMIC_ACQUIRE);

				if (owner_pid(o) == (uint32_t)pub)
					live = s;
				else if (!fake && owner_state(o) ==
							  SHMBUS_SLOT_FREE)
					fake = s;
			}
			if (got < 300 && live && fake &&
			    __atomic_load_n(&live->claim_pos,
					    __ATOMIC_ACQUIRE) != UINT64_MAX) {
				fake->claim_end = live->claim_end &
						  ~SHMBUS_CLAIM_TENTATIVE;
				fake->claim_pos = live->claim_pos;
				__atomic_store_n(&fake->owner,
						 owner_word(SHMBUS_SLOT_ACTIVE,
							    NO_PID),
						 __ATOMIC_RELEASE);
				forged++;
			}
			idle++;
			usleep(200);
			continue;
		}
		cr_assert_eq(rc, sizeof(v), "read: %zd", rc);
		cr_assert_eq(v, got, "message %lu where %lu was due (lost %lu)",
			     (unsigned long)v, (unsigned long)got,
			     (unsigned long)mi.lost);
		got++;
		idle = 0;
	}
	cr_log_info("400 messages, a claim copied %d times", forged);
	cr_assert_eq(got, 400);
	cr_assert_eq(th_wait(pub), 0);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

struct dies_in_claim {
	uint64_t c;		/* where its claim starts */
	int go;			/* 1: claimed; 2: die now */
};

/* Claims a record on mp (the hand-off passes it), says where, and dies
 * inside it when told. */
static int claim_then_die(void *arg)
{
	struct dies_in_claim *dc = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "mp", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	void *b;

	if (!p)
		return 1;
	dc->c = th_head(ch);
	if (shmbus_claim(p, 8, &b))
		return 2;
	__atomic_store_n(&dc->go, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&dc->go, __ATOMIC_ACQUIRE) != 2)
		usleep(1000);
	kill(getpid(), SIGKILL);
	return 3;
}

/* Publishes one message on mp. */
static int publish_one(void *arg)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "mp", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t v = 7;

	(void)arg;
	if (!p || shmbus_publish(p, &v, sizeof(v)))
		return 1;
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/*
 * Multi producer, no write over anything: a producer dies inside a claim
 * it won at c while a live one still announces c tentatively (it loaded
 * head before that claim, and has not yet lost its CAS and looked again:
 * the state of a producer preempted there).  That announcement is no
 * owner of the claim: the dead one's claim is padded, and subscribers
 * go past it to the next message.
 */
Test(scribble, a_live_tentative_announcement_leaves_a_dead_claim_padded,
     .init = setup, .fini = teardown)
{
	struct dies_in_claim *dc = mmap(NULL, sizeof(*dc),
				       PROT_READ | PROT_WRITE,
				       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_prod_slot *live = NULL;
	struct shmbus_msg mi;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint64_t v = 0;
	ssize_t rc = -EAGAIN;
	pid_t dead;

	struct shmbus_prod_slot *prods = th_map_prods(d.dir, "mp");

	cr_assert(dc != MAP_FAILED && prods);
	ch = open_role(&bus, "mp", SHMBUS_ROLE_SUBSCRIBE);
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	cr_assert(sub);
	dead = th_spawn(claim_then_die, dc);
	for (int i = 0; i < 2000 && !__atomic_load_n(&dc->go, __ATOMIC_ACQUIRE);
	     i++)
		usleep(1000);
	cr_assert_eq(dc->go, 1);
	/* This live process's slot, as a producer's between its
	 * announcement at c and its CAS (lost to the claim above); written
	 * through the file's path (a subscriber's mapping is read-only). */
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS && !live; i++)
		if (owner_state(__atomic_load_n(&prods[i].owner,
						__ATOMIC_ACQUIRE)) ==
		    SHMBUS_SLOT_FREE)
			live = &prods[i];
	cr_assert(live);
	live->claim_end = (dc->c + 64) | SHMBUS_CLAIM_TENTATIVE;
	live->claim_pos = dc->c;
	__atomic_store_n(&live->owner,
			 owner_word(SHMBUS_SLOT_ACTIVE, (uint32_t)getpid()),
			 __ATOMIC_RELEASE);
	__atomic_store_n(&dc->go, 2, __ATOMIC_RELEASE);
	cr_assert_eq(th_wait(dead), 128 + SIGKILL);
	/* The reaper's repair of the dead one's slot, then this one looks
	 * again (its announcement gone). */
	for (int i = 0; i < 2000; i++) {
		bool freed = true;

		for (uint32_t j = 0; j < SHMBUS_MAX_PRODUCERS; j++)
			if (owner_pid(__atomic_load_n(&ch->prods[j].owner,
						      __ATOMIC_ACQUIRE)) ==
			    (uint32_t)dead)
				freed = false;
		if (freed)
			break;
		usleep(1000);
	}
	__atomic_store_n(&live->claim_pos, UINT64_MAX, __ATOMIC_RELEASE);
	__atomic_store_n(&live->owner, owner_word(SHMBUS_SLOT_FREE, 0),
			 __ATOMIC_RELEASE);
	cr_assert_eq(th_wait(th_spawn(publish_one, NULL)), 0);
	for (int i = 0; i < 1000 && rc == -EAGAIN; i++) {
		rc = shmbus_read(sub, &v, sizeof(v), &mi);
		if (rc == -EAGAIN)
			usleep(1000);
	}
	cr_log_info("claim at %lu; read %zd, message %lu",
		    (unsigned long)dc->c, rc, (unsigned long)v);
	cr_assert_eq(rc, (ssize_t)sizeof(v),
		     "subscribers stay at the dead claim at %lu (read %zd)",
		     (unsigned long)dc->c, rc);
	cr_assert_eq(v, 7);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	munmap(dc, sizeof(*dc));
}

/*
 * A process that holds a single producer's role through one handle, the
 * role word written over with a gone process's pid, or with its own
 * (marked as being repaired, or with another process's start tag, plain
 * or marked): a second open in the same process is refused, and the
 * first handle's open claim is not padded.
 */
Test(scribble, a_role_written_over_under_our_own_producer_is_not_taken)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	uint64_t v, other;

	cr_assert(p && sub);
	/* Another start than ours, with our pid. */
	other = (uint64_t)(role_tag(ch->pl->sp_owner) + 1) << 32 |
		(uint32_t)getpid();
	for (int k = 0; k < 4; k++) {
		void *b;
		uint64_t i = (uint64_t)k;

		cr_assert_eq(shmbus_claim(p, sizeof(i), &b), 0);
		memcpy(b, &i, sizeof(i));
		__atomic_store_n(&ch->pl->sp_owner,
				 k == 0 ? NO_PID :
				 k == 1 ? (uint32_t)getpid() |
					  SHMBUS_SP_REPAIRING :
				 k == 2 ? other : other | SHMBUS_SP_REPAIRING,
				 __ATOMIC_RELAXED);
		errno = 0;
		cr_assert_null(shmbus_pub_open(ch, NULL), "a second handle "
			       "took its own process's role (%d)", k);
		cr_assert_eq(errno, EBUSY, "errno %d", errno);
		cr_assert_eq(shmbus_commit(p), 0);
		cr_assert_eq(shmbus_read(sub, &v, sizeof(v), NULL),
			     (ssize_t)sizeof(v), "message %d padded over", k);
		cr_assert_eq(v, i);
		__atomic_store_n(&ch->pl->sp_owner,
				 role_word((uint32_t)getpid(), 0),
				 __ATOMIC_RELAXED);
	}
	shmbus_pub_close(p);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
