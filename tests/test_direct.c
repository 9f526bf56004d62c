/* SPDX-License-Identifier: MIT */
/*
 * test_direct.c - channels without shmbusd (direct mode) recover from
 * processes killed with kill -9: a producer held back by what a gone
 * process left (a subscriber's cursor, a multi producer's unfinished
 * claim) releases it itself; a stopped process is never touched.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sched.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/channel.h"
#include "../lib/pub.h"

struct sub_child {
	const char *dir;
	int ready[2];
};

/* Subscribes, says so, and never reads. */
static int idle_sub(void *arg)
{
	struct sub_child *c = arg;
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch = shmbus_channel_open(c->dir, "ch");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;

	if (!sub || write(c->ready[1], "x", 1) != 1)
		return 2;
	for (;;)
		pause();
}

/* Fills the ring until the publisher is refused (timeout 0). */
static uint64_t fill(shmbus_pub *pub, uint64_t seq)
{
	uint8_t msg[100];

	for (;; seq++) {
		int rc;

		th_msg_fill(msg, sizeof(msg), 0, seq);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == -EAGAIN)
			return seq;
		cr_assert_eq(rc, 0, "publish: %s", shmbus_strerror(rc));
	}
}

static pid_t spawn_idle_sub(struct sub_child *c, shmbus_channel *ch)
{
	struct shmbus_channel_info in;
	char x;
	pid_t pid;

	cr_assert(pipe(c->ready) == 0);
	pid = th_spawn(idle_sub, c);
	cr_assert_eq(read(c->ready[0], &x, 1), 1, "subscriber failed");
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	cr_assert_eq(in.subscribers, 1);
	return pid;
}

Test(direct, a_dead_subscriber_is_released_by_the_producer, .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 14, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct shmbus_channel_info in;
	struct sub_child c = { .dir = dir };
	uint64_t seq, t0;
	uint8_t msg[100];
	pid_t pid;
	int rc;

	cr_assert(pub);
	pid = spawn_idle_sub(&c, ch);
	seq = fill(pub, 0);
	/* Killed and not reaped: a zombie is gone too. */
	kill(pid, SIGKILL);
	t0 = th_now_ns();
	th_msg_fill(msg, sizeof(msg), 0, seq);
	while ((rc = shmbus_publish(pub, msg, sizeof(msg))) == -EAGAIN) {
		cr_assert(th_now_ns() - t0 < 1000000000ull,
			  "the dead subscriber still holds the producer");
		usleep(100);
	}
	cr_assert_eq(rc, 0);
	cr_log_info("released %llu us after the kill",
		    (unsigned long long)((th_now_ns() - t0) / 1000));
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	cr_assert_eq(in.subscribers, 0);
	cr_assert_eq(in.reaped, 1);
	/* Nothing holds it back any more: laps of messages. */
	for (uint64_t i = 1; i < 2000; i++) {
		th_msg_fill(msg, sizeof(msg), 0, seq + i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(th_wait(pid), 128 + SIGKILL);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(direct, a_stopped_subscriber_is_never_released, .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 14, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_pub_attr pa = { .timeout_ns = 300000000 };
	shmbus_pub *pub = shmbus_pub_open(ch, &pa);
	struct shmbus_channel_info in;
	struct sub_child c = { .dir = dir };
	uint8_t msg[100];
	pid_t pid;
	int rc;

	cr_assert(pub);
	pid = spawn_idle_sub(&c, ch);
	kill(pid, SIGSTOP);
	for (uint64_t seq = 0;; seq++) {
		th_msg_fill(msg, sizeof(msg), 0, seq);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc)
			break;
	}
	cr_assert_eq(rc, -ETIMEDOUT);
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	cr_assert_eq(in.subscribers, 1);
	cr_assert_eq(in.reaped, 0);
	kill(pid, SIGKILL);
	cr_assert_eq(th_wait(pid), 128 + SIGKILL);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

struct claim_child {
	const char *dir;
	int ready[2];
};

/* A multi producer that publishes one message, claims a second and dies
 * with it open (the parent kills it). */
static int dying_claim(void *arg)
{
	struct claim_child *c = arg;
	shmbus_channel *ch = shmbus_channel_open(c->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t msg[100];
	void *buf;

	if (!pub)
		return 2;
	th_msg_fill(msg, sizeof(msg), 1, 0);
	if (shmbus_publish(pub, msg, sizeof(msg)) ||
	    shmbus_claim(pub, 100, &buf))
		return 3;
	memset(buf, 0xee, 100);
	if (write(c->ready[1], "x", 1) != 1)
		return 4;
	for (;;)
		pause();
}

/* A multi producer (dying_claim()) killed with its second claim open. */
static void kill_in_claim(const char *dir)
{
	struct claim_child c = { .dir = dir };
	char x;
	pid_t pid;

	cr_assert(pipe(c.ready) == 0);
	pid = th_spawn(dying_claim, &c);
	cr_assert_eq(read(c.ready[0], &x, 1), 1, "producer failed");
	kill(pid, SIGKILL);
	cr_assert_eq(th_wait(pid), 128 + SIGKILL);
	close(c.ready[0]);
	close(c.ready[1]);
}

/*
 * A multi producer killed inside its claim, with no daemon: subscribers
 * wait at the claim until the other producers are held back by it (a lap
 * later), and then they pad it and go on.
 */
Test(direct, a_dead_multi_producer_claim_is_padded_by_producers,
     .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 14, 256, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct shmbus_channel_info in;
	uint64_t sent = 0, got = 0, t0 = th_now_ns();
	const uint64_t want = 3000;	/* about 20 laps */
	uint8_t msg[100], buf[512];
	uint32_t id;
	uint64_t seq;

	cr_assert(sub && pub);
	kill_in_claim(dir);
	/* Its first message, then ours: the claim between is padding. */
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 100);
	cr_assert_eq(th_msg_check(buf, 100, &id, &seq), 0);
	cr_assert_eq(id, 1);
	while (got < want) {
		ssize_t len;

		cr_assert(th_now_ns() - t0 < 5000000000ull,
			  "stalled: %llu sent, %llu read",
			  (unsigned long long)sent, (unsigned long long)got);
		if (sent < want) {
			int rc;

			th_msg_fill(msg, sizeof(msg), 0, sent);
			rc = shmbus_publish(pub, msg, sizeof(msg));
			if (rc == 0)
				sent++;
			else
				cr_assert_eq(rc, -EAGAIN);
		}
		len = shmbus_read(sub, buf, sizeof(buf), NULL);
		if (len == -EAGAIN)
			continue;
		cr_assert_eq(len, 100);
		cr_assert_eq(th_msg_check(buf, 100, &id, &seq), 0);
		cr_assert_eq(id, 0);
		cr_assert_eq(seq, got, "got %llu, expected %llu",
			     (unsigned long long)seq, (unsigned long long)got);
		got++;
	}
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	cr_assert_eq(in.repairs, 1);
	cr_assert_eq(in.producers_active, 1);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * The same on a quiet channel: one message after the dead claim, and no
 * producer runs out of room.  The subscriber waiting at the claim
 * releases it itself, as shmbusd would: the message after it comes within
 * milliseconds, not when the ring is next full.  However it waits: a poll
 * loop, or shmbus_wait() spinning, yielding or asleep.
 */
static void dead_claim_on_a_quiet_channel(int how)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 14, 256, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST,
				      .wait = how < 0 ? SHMBUS_WAIT_SPIN
						      : (enum shmbus_wait)how };
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	uint8_t msg[100], buf[512];
	uint64_t t0, seq;
	ssize_t len;
	uint32_t id;

	cr_assert(sub && pub);
	kill_in_claim(dir);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 100);
	th_msg_fill(msg, sizeof(msg), 0, 7);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	t0 = th_now_ns();
	if (how >= 0)
		cr_assert_eq(shmbus_wait(sub, 2000000000), 0, "waiting (%d) "
			     "at the dead claim: %.0f ms", how,
			     (double)(th_now_ns() - t0) / 1e6);
	while ((len = shmbus_read(sub, buf, sizeof(buf), NULL)) == -EAGAIN &&
	       th_now_ns() - t0 < 2000000000ull)
		;
	cr_assert_eq(len, 100, "the message after the dead claim: %zd after "
		     "%.0f ms", len, (double)(th_now_ns() - t0) / 1e6);
	cr_assert_eq(th_msg_check(buf, 100, &id, &seq), 0);
	cr_assert_eq(seq, 7);
	cr_assert_lt(th_now_ns() - t0, 500000000ull);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(direct, a_dead_claim_on_a_quiet_channel_is_released_by_a_subscriber,
     .timeout = 30)
{
	dead_claim_on_a_quiet_channel(-1);	/* polling */
	dead_claim_on_a_quiet_channel(SHMBUS_WAIT_SPIN);
	dead_claim_on_a_quiet_channel(SHMBUS_WAIT_YIELD);
	dead_claim_on_a_quiet_channel(SHMBUS_WAIT_SLEEP);
}

struct sp_child {
	const char *dir;
	int ready[2];
};

/* Takes the single-producer role, claims, and waits to be killed. */
static int sp_dying_claim(void *arg)
{
	struct sp_child *c = arg;
	shmbus_channel *ch = shmbus_channel_open(c->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	void *buf;

	if (!pub || shmbus_claim(pub, 16, &buf))
		return 2;
	memset(buf, 0xee, 16);
	if (write(c->ready[1], "x", 1) != 1)
		return 3;
	for (;;)
		pause();
}

/*
 * A single producer killed inside a claim on a large ring full of small
 * records: its successor's repair starts from the last index entry below
 * head, not from the oldest record of the lap.  Prints the takeover
 * time; asserts only what the subscriber reads.
 */
/*
 * A multi producer that dies right after the CAS on head that makes its
 * claim, before its hand-off: no producer claims after it, because the
 * next claim wraps the ring's end and the dead claim's announcement
 * holds it back (sb_make_room()), so no producer ever waits at the
 * hand-off, where dead claims were handed over.  The producer held back
 * hands it over itself, within its reap interval, on either policy.  The
 * child makes the claim's stores as mp_claim() does, then exits.
 */
static int claim_and_die(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t msg[1000] = { 0 };
	uint64_t p, q;

	if (!pub || shmbus_publish(pub, msg, sizeof(msg)))
		return 2;
	p = load_acquire64(&ch->pl->head);
	q = p + rec_size(2000);
	store_relaxed64(&pub->slot->claim_end, q | SHMBUS_CLAIM_TENTATIVE);
	store_release64(&pub->slot->claim_pos, p);
	if (!cas_strong_seqcst64(&ch->pl->head, &p, q))
		return 3;
	store_relaxed64(&pub->slot->claim_end, q);
	_exit(0);	/* dead, its claim not handed over */
}

static void dead_claim_before_its_hand_off(enum shmbus_policy pol)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 2016, pol,
				       SHMBUS_MULTI_PRODUCER);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	uint8_t msg[1100], buf[2048];
	uint64_t t0, seq;
	ssize_t len = -EAGAIN;
	uint32_t id;
	int rc;

	cr_assert(sub && pub);
	cr_assert_eq(th_wait(th_spawn(claim_and_die, (void *)dir)), 0);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 1000);
	th_msg_fill(msg, sizeof(msg), 0, 7);
	t0 = th_now_ns();
	/* 3032 + 1064 of padding + 1120 > the dead claim's 1016 + 4096.  On
	 * a block channel the subscriber holds it back too, until it passes
	 * the padding. */
	while ((rc = shmbus_publish(pub, msg, sizeof(msg))) == -EAGAIN &&
	       th_now_ns() - t0 < 3000000000ull)
		len = shmbus_read(sub, buf, sizeof(buf), NULL);
	cr_assert_eq(rc, 0, "held back by a dead claim for %.0f ms",
		     (double)(th_now_ns() - t0) / 1e6);
	cr_assert_lt(th_now_ns() - t0, 500000000ull);
	cr_assert_eq(len, -EAGAIN, "read %zd", len);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), sizeof(msg));
	cr_assert_eq(th_msg_check(buf, sizeof(msg), &id, &seq), 0);
	cr_assert_eq(seq, 7);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(direct, a_dead_claim_before_its_hand_off_is_released_block,
     .timeout = 30)
{
	dead_claim_before_its_hand_off(SHMBUS_BLOCK);
}

Test(direct, a_dead_claim_before_its_hand_off_is_released_overwrite,
     .timeout = 30)
{
	dead_claim_before_its_hand_off(SHMBUS_OVERWRITE);
}

Test(direct, single_producer_takeover_on_a_large_ring, .timeout = 60)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, UINT64_C(64) << 20, 256,
				       SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_NEWEST };
	struct shmbus_channel_info in;
	struct sp_child c = { .dir = dir };
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub;
	uint8_t msg[TH_MSG_MIN], buf[64];
	uint64_t t0, t1;
	uint32_t id;
	uint64_t seq;
	char x;
	pid_t pid;

	cr_assert(pub);
	/* A lap and a half of 32-byte records. */
	for (uint64_t i = 0; i < 3u << 20; i++)
		cr_assert_eq(shmbus_publish(pub, &i, sizeof(i)), 0);
	shmbus_pub_close(pub);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	cr_assert(pipe(c.ready) == 0);
	pid = th_spawn(sp_dying_claim, &c);
	cr_assert_eq(read(c.ready[0], &x, 1), 1, "producer failed");
	kill(pid, SIGKILL);
	cr_assert_eq(th_wait(pid), 128 + SIGKILL);

	t0 = th_now_ns();
	pub = shmbus_pub_open(ch, NULL);
	t1 = th_now_ns();
	cr_assert(pub, "takeover: %s", strerror(errno));
	cr_log_info("takeover with repair on a 64 MiB ring of 32-byte "
		    "records: %llu us", (unsigned long long)((t1 - t0) / 1000));
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	cr_assert_eq(in.repairs, 1);
	/* The dead claim is padding; the next message is the successor's. */
	th_msg_fill(msg, TH_MSG_MIN, 7, 0);
	cr_assert_eq(shmbus_publish(pub, msg, TH_MSG_MIN), 0);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), TH_MSG_MIN);
	cr_assert_eq(th_msg_check(buf, TH_MSG_MIN, &id, &seq), 0);
	cr_assert_eq(id, 7);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

struct hidden {
	pid_t live, dead;
};

/* In a mount namespace of its own whose /proc hides other users'
 * processes (hidepid=2), as uid 65534: the test process (root's, alive)
 * must not look gone, a dead one must. */
static int judge_hidden(void *arg)
{
	struct hidden *h = arg;

	if (unshare(CLONE_NEWNS) ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
	    mount("proc", "/proc", "proc", 0, "hidepid=2"))
		return 10;
	if (setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534))
		return 11;
	if (access("/proc/1/stat", R_OK) == 0)
		return 12;	/* /proc hides nothing: no test */
	if (sb_pid_gone((uint32_t)h->live))
		return 1;
	if (!sb_pid_gone((uint32_t)h->dead))
		return 2;
	return 0;
}

static int pause_for_ever(void *arg)
{
	(void)arg;
	pause();
	return 0;
}

static int exit_now(void *arg)
{
	(void)arg;
	return 0;
}

/*
 * A live process that /proc hides from the caller is alive: otherwise a
 * producer of another user, held back, would release a live subscriber's
 * cursor and overwrite what it has not read.
 */
Test(direct, a_process_hidden_by_proc_is_alive, .timeout = 30)
{
	struct hidden h = { .live = getpid() };
	int rc;

	if (geteuid() != 0)
		cr_skip_test("needs root for a mount namespace");
	h.dead = th_spawn(exit_now, NULL);
	cr_assert_eq(th_wait(h.dead), 0);
	rc = th_wait(th_spawn(judge_hidden, &h));
	if (rc == 10)
		cr_skip_test("no mount namespace with hidepid here");
	cr_assert_eq(rc, 0, "%s", rc == 1 ? "a live process judged gone" :
		     rc == 2 ? "a dead process judged alive" : "setup failed");
}

/*
 * A process killed while it set its slot up leaves the slot BUSY under
 * its pid; a sleeping subscriber's open spends milliseconds there (its
 * membarrier()).  shmbusd frees such slots (test_repair), but without it
 * nobody did: every subscriber of a supervisor's kill loop killed in its
 * open lost a slot for good, and after 64 the channel took no subscriber
 * at all (ENOSPC), the sleeper count and wake-check bits it left kept
 * with them.  The next opener takes them over, as a dead owner's ACTIVE
 * slot; a BUSY slot of a live process stays its own.
 */
Test(direct, busy_slots_of_dead_openers_are_taken_over, .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 14, 256, SHMBUS_OVERWRITE,
				       SHMBUS_MULTI_PRODUCER);
	shmbus_sub *subs[SHMBUS_MAX_SLOTS];
	shmbus_pub *pubs[SHMBUS_MAX_PRODUCERS];
	uint64_t busy, live;
	pid_t dead = th_spawn(exit_now, NULL);
	/* Another process, alive (a slot that names this test's own pid
	 * and no slot it holds would be a dead process's: pid.c). */
	pid_t opener = th_spawn(pause_for_ever, NULL);

	cr_assert_eq(th_wait(dead), 0);
	busy = owner_word(SHMBUS_SLOT_BUSY, (uint32_t)dead);
	live = owner_word(SHMBUS_SLOT_BUSY, (uint32_t)opener);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++)
		store_release64(&ch->subs[i].owner, i ? busy : live);
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		store_release64(&ch->prods[i].owner, busy);
	/* One died between its sleeper count and its release (a repairer),
	 * or announced that it sleeps before it died opening. */
	store_relaxed32(&ch->subs[5].sleeping, 1);
	add_seqcst32(&ch->hdr->sleepers, 1);
	or_relaxed64(&ch->hdr->sleep_ok, UINT64_C(1) << 5);

	for (uint32_t i = 1; i < SHMBUS_MAX_SLOTS; i++) {
		subs[i] = shmbus_sub_open(ch, NULL);
		cr_assert(subs[i], "subscriber %u: %s", i, strerror(errno));
	}
	cr_assert_null(shmbus_sub_open(ch, NULL), "a live opener's slot taken");
	cr_assert_eq(errno, ENOSPC);
	cr_assert_eq(load_relaxed64(&ch->subs[0].owner), live);
	cr_assert_eq(load_seqcst32(&ch->hdr->sleepers), 0,
		     "the dead one's sleeper count kept");
	cr_assert_eq(load_relaxed64(&ch->hdr->sleep_ok), 0,
		     "producers still make wake checks for it");
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		pubs[i] = shmbus_pub_open(ch, NULL);
		cr_assert(pubs[i], "publisher %u: %s", i, strerror(errno));
	}
	cr_assert_eq(shmbus_publish(pubs[0], "sensor", 6), 0);
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		shmbus_pub_close(pubs[i]);
	for (uint32_t i = 1; i < SHMBUS_MAX_SLOTS; i++)
		shmbus_sub_close(subs[i]);
	store_release64(&ch->subs[0].owner, owner_word(SHMBUS_SLOT_FREE, 0));
	kill(opener, SIGKILL);
	cr_assert_eq(th_wait(opener), 128 + SIGKILL);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * The repair of a single producer that died inside a claim, with a header
 * written over before it, takes one walk over the records after the
 * damage, whatever max_msg is (repair.c, committed_after()).  A walk from
 * every position within max_msg of the damage, each to the dead claim,
 * was quadratic: 2.9 s for a 64 MiB ring of 8-byte messages at the
 * largest max_msg, spent in the successor's shmbus_pub_open() or in
 * shmbusd's reaper thread, which repairs every channel.  The bound below
 * is a guard against that shape (a linear walk takes about 2 ms), not a
 * measurement.
 */
static void torn_then_dead_claim(uint32_t max_msg, uint64_t *us)
{
	const char *dir = th_mkdir();
	uint64_t cap = UINT64_C(64) << 20;
	shmbus_channel *ch = th_create(dir, cap, max_msg, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	uint64_t seg = UINT64_C(1) << ch->seg_log2, e0, t0, w;
	struct sp_child c = { .dir = dir };
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	char x;
	pid_t pid;

	cr_assert(pub);
	/* Into the 4th segment, up to 128 bytes before its end. */
	while (load_relaxed64(&ch->pl->head) < 3 * seg + seg - 128) {
		uint64_t i = 0;

		cr_assert_eq(shmbus_publish(pub, &i, sizeof(i)), 0);
	}
	shmbus_pub_close(pub);
	e0 = load_relaxed64(&ch->segs[3].pos);
	cr_assert(e0 >= 3 * seg && e0 < 3 * seg + 64, "entry %llu",
		  (unsigned long long)e0);
	cr_assert(pipe(c.ready) == 0);
	pid = th_spawn(sp_dying_claim, &c);
	cr_assert_eq(read(c.ready[0], &x, 1), 1, "producer failed");
	kill(pid, SIGKILL);
	cr_assert_eq(th_wait(pid), 128 + SIGKILL);
	/* The header at the segment's first record, written over (last
	 * lap's tag). */
	w = load_relaxed64(&rec_at(ch, e0)->commit) - (UINT64_C(1) << 32);
	store_release64(&rec_at(ch, e0)->commit, w);
	t0 = th_now_ns();
	pub = shmbus_pub_open(ch, NULL);
	*us = (th_now_ns() - t0) / 1000;
	cr_assert(pub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(direct, a_torn_header_before_a_dead_claim_is_repaired_in_one_walk,
     .timeout = 600)
{
	uint64_t small, large;

	torn_then_dead_claim(256, &small);
	torn_then_dead_claim(shmbus_max_msg(UINT64_C(64) << 20), &large);
	cr_log_info("takeover: max_msg 256: %llu us; max_msg 32 MiB: %llu us",
		    (unsigned long long)small, (unsigned long long)large);
	cr_assert_lt(large, 500000, "the takeover took %llu ms",
		     (unsigned long long)(large / 1000));
}
