/* SPDX-License-Identifier: MIT */
/*
 * test_ship.c - one process: where the primary's agent cuts frames.  Its
 * walk over committed records (sb_committed_end_marked()) marks record
 * boundaries at most a step apart, so that shipping needs no second walk;
 * every mark must be a record boundary of what is committed, the frames
 * between marks within the step, and the queue must survive a ring that
 * wraps, a walk that stops at an uncommitted claim and goes on later, and
 * more marks than it holds.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/contract.h"

#define CAP (1u << 20)
#define MAXMSG 2048u

static const char *dir;
static shmbus_channel *ch;
static shmbus_pub *pub;
static shmbus_sub *sub;

/* Every record boundary published, in order: the truth the marks are
 * checked against. */
static uint64_t *bounds;
static size_t nbounds;

static void setup(void)
{
	struct shmbus_sub_attr sa;

	dir = th_mkdir();
	ch = th_create(dir, CAP, MAXMSG, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	/* A subscriber that follows the producer, so that the ring wraps
	 * without a lap. */
	shmbus_sub_attr_init(&sa);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	bounds = calloc(1u << 21, sizeof(*bounds));
	cr_assert(bounds);
	nbounds = 0;
}

static void teardown(void)
{
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
	free(bounds);
}

TestSuite(ship, .init = setup, .fini = teardown, .timeout = 60);

/* n messages of pseudo-random lengths (0 to MAXMSG), each boundary
 * recorded (a wrap's padding makes the next record's start differ from
 * head before the publish: its position is asked of the message). */
static void publish_mixed(unsigned n, unsigned *rnd)
{
	for (unsigned i = 0; i < n; i++) {
		static uint8_t msg[MAXMSG];
		struct shmbus_msg m;
		uint8_t got[MAXMSG];
		size_t len;

		*rnd = *rnd * 1103515245u + 12345u;
		len = (*rnd >> 8) % (MAXMSG + 1);
		/* Mostly small, now and then large. */
		if ((*rnd >> 4) % 4)
			len %= 64;
		cr_assert_eq(shmbus_publish(pub, msg, len), 0);
		cr_assert_eq(shmbus_read(sub, got, sizeof(got), &m),
			     (ssize_t)len);
		/* Its start, and its end, where padding to the ring's end
		 * may start. */
		bounds[nbounds++] = m.pos;
		bounds[nbounds++] = m.pos + SHMBUS_REC_HDR +
				    (len + SHMBUS_REC_ALIGN - 1) /
					    SHMBUS_REC_ALIGN * SHMBUS_REC_ALIGN;
	}
}

/* Whether p is a record boundary published (or the end of the last). */
static bool is_bound(uint64_t p)
{
	size_t lo = 0, hi = nbounds;

	if (p == th_head(ch))
		return true;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (bounds[mid] < p)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < nbounds && bounds[lo] == p;
}

/* Takes every frame from `from` to `to` as the agent does, and checks
 * each end. Returns how many came from marks. */
static unsigned take_all(struct sb_marks *mk, uint64_t from, uint64_t to,
			 uint64_t step)
{
	unsigned marked = 0;

	while (from < to) {
		uint64_t end = to - from <= step ? to
						 : sb_marks_take(mk, from, step);

		if (end && end != to)
			marked++;
		if (!end)
			end = sb_committed_end(ch, from, step);
		cr_assert_gt(end, from, "no frame at %" PRIu64, from);
		cr_assert_leq(end - from, step, "a frame of %" PRIu64
			      " bytes at %" PRIu64, end - from, from);
		cr_assert(is_bound(end), "frame end %" PRIu64 " is no record "
			  "boundary", end);
		from = end;
	}
	return marked;
}

/* Three laps of mixed records walked in pieces, as an agent walks while
 * producers go on: every mark a boundary, the frames within the step,
 * nearly every frame's end a mark. */
Test(ship, marks_are_boundaries_within_the_step)
{
	uint64_t step = 16384, known, sent;
	struct sb_marks mk;
	unsigned rnd = 7, marked = 0, frames = 0;

	sb_marks_reset(&mk, th_head(ch), step);
	known = sent = th_head(ch);
	for (int round = 0; round < 60; round++) {
		uint64_t k;

		publish_mixed(400 + (unsigned)round * 37 % 500, &rnd);
		k = sb_committed_end_marked(ch, known, UINT64_MAX, &mk);
		cr_assert_eq(k, th_head(ch), "the walk stopped at %" PRIu64
			     " of %" PRIu64, k, th_head(ch));
		for (uint32_t i = mk.lo; i < mk.n; i++) {
			cr_assert(is_bound(mk.at[i]), "mark %" PRIu64 " is no "
				  "record boundary", mk.at[i]);
			cr_assert(i == mk.lo || (mk.at[i] > mk.at[i - 1] &&
				  mk.at[i] - mk.at[i - 1] <= step),
				  "marks %" PRIu64 " and %" PRIu64, i ?
				  mk.at[i - 1] : 0, mk.at[i]);
		}
		known = k;
		/* Ship only part of it now and then, as a slow link does. */
		if (round % 3 == 2) {
			uint64_t before = sent;

			marked += take_all(&mk, sent, known, step);
			frames += (unsigned)((known - before) / step);
			sent = known;
		}
	}
	cr_assert_gt(known, 3 * (uint64_t)CAP, "only %" PRIu64 " bytes",
		     known);
	cr_assert_geq(marked, frames / 2, "%u frames of about %u came from "
		      "marks", marked, frames);
}

/* A claim that is not committed stops the walk; the next walk goes on
 * from there, and its marks still hold. */
static int pos_of(const struct shmbus_msg *m, void *arg)
{
	*(uint64_t *)arg = m->pos;
	return 0;
}

Test(ship, a_walk_stops_at_an_open_claim_and_resumes)
{
	uint64_t step = 4096, known, k, before, claimed = 0;
	struct sb_marks mk;
	unsigned rnd = 3;
	void *buf;

	sb_marks_reset(&mk, th_head(ch), step);
	known = th_head(ch);
	publish_mixed(300, &rnd);
	before = th_head(ch);
	cr_assert_eq(shmbus_claim(pub, 100, &buf), 0);
	k = sb_committed_end_marked(ch, known, UINT64_MAX, &mk);
	cr_assert_geq(k, before);
	cr_assert_lt(k, th_head(ch), "the walk passed an open claim");
	cr_assert_eq(shmbus_commit(pub), 0);
	cr_assert_eq(shmbus_poll(sub, pos_of, &claimed, 1), 1);
	cr_assert_eq(claimed, k, "the walk stopped at %" PRIu64 ", the claim "
		     "was at %" PRIu64, k, claimed);
	bounds[nbounds++] = k;
	bounds[nbounds++] = k + SHMBUS_REC_HDR + 104;
	publish_mixed(300, &rnd);
	k = sb_committed_end_marked(ch, k, UINT64_MAX, &mk);
	cr_assert_eq(k, th_head(ch));
	take_all(&mk, known, k, step);
}

/* More marks than the queue holds: the walk keeps what fits, the rest is
 * walked again by the shipper, and every frame is still right. */
Test(ship, more_marks_than_the_queue_holds)
{
	uint64_t step = 256, from = th_head(ch), k;
	struct sb_marks mk;
	unsigned rnd = 11;

	sb_marks_reset(&mk, from, step);
	publish_mixed(3000, &rnd);
	k = sb_committed_end_marked(ch, from, UINT64_MAX, &mk);
	cr_assert_eq(k, th_head(ch));
	cr_assert_eq(mk.n, SB_MARKS_MAX, "%u marks", mk.n);
	take_all(&mk, from, k, step > MAXMSG + 16 ? step : MAXMSG + 16);
	/* Taken up to the end: the queue is empty, and the next walk fills
	 * it again from the front. */
	cr_assert_eq(sb_marks_take(&mk, k, step), 0);
	publish_mixed(100, &rnd);
	cr_assert_eq(sb_committed_end_marked(ch, k, UINT64_MAX, &mk),
		     th_head(ch));
	cr_assert_gt(mk.n - mk.lo, 0);
	take_all(&mk, k, th_head(ch), MAXMSG + 16);
}

/*
 * A record that a standby would refuse, written over an open claim by a
 * process that maps the ring: the walk stops there as at the claim, and
 * sb_ring_damage() tells it from a claim still to be committed, saying
 * what is wrong.  Each case plants one damage at the claim's position;
 * with repeat_seq, the record repeats the sequence number of the one
 * before it.
 */
static void plant_and_walk(uint32_t type, uint32_t len, bool repeat_seq,
			   const char *what)
{
	uint64_t from = th_head(ch), p, k, size, ws;
	struct sb_marks mk;
	unsigned rnd = 5;
	char why[256];
	void *buf;

	sb_marks_reset(&mk, from, 4096);
	publish_mixed(50, &rnd);
	p = th_head(ch);
	cr_assert_eq(shmbus_claim(pub, 64, &buf), 0);
	/* The claim alone is no damage. */
	cr_assert_eq(sb_committed_end_marked(ch, from, UINT64_MAX, &mk), p);
	cr_assert_not(sb_ring_damage(ch, p, &mk, why, sizeof(why)),
		      "an open claim taken for damage: %s", why);
	if (repeat_seq)
		__atomic_store_n(&rec_at(ch, p)->seq,
				 rec_at(ch, bounds[nbounds - 2])->seq,
				 __ATOMIC_RELAXED);
	__atomic_store_n(&rec_at(ch, p)->commit, commit_word(ch, p, type, len),
			 __ATOMIC_RELEASE);
	k = sb_committed_end_marked(ch, p, UINT64_MAX, &mk);
	cr_assert_eq(k, p, "the walk went past damage at %" PRIu64 " to %"
		     PRIu64, p, k);
	/* Without marks, as the journal walks: the same stop, except for a
	 * sequence number, which only the marks carry across walks. */
	if (!repeat_seq)
		cr_assert_eq(sb_committed_end(ch, from, UINT64_MAX), p);
	cr_assert(sb_ring_damage(ch, p, &mk, why, sizeof(why)),
		  "damage (%s) not found", what);
	cr_assert(strstr(why, what), "why: '%s', expected '%s'", why, what);
	/* The position before it is a good record: no damage there. */
	ws = rec_at(ch, bounds[nbounds - 2])->commit;
	size = rec_size(word_len(ws));
	cr_assert_eq(bounds[nbounds - 2] + size, p);
	cr_assert_not(sb_ring_damage(ch, bounds[nbounds - 2], NULL, why,
				     sizeof(why)));
	/* The claim made good (the sequence number it was handed, the
	 * channel's last): the walk goes on. */
	__atomic_store_n(&rec_at(ch, p)->seq,
			 __atomic_load_n(&ch->pl->seq, __ATOMIC_RELAXED) - 1,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&rec_at(ch, p)->commit,
			 commit_word(ch, p, SHMBUS_REC_MSG, 64),
			 __ATOMIC_RELEASE);
	cr_assert_eq(sb_committed_end_marked(ch, p, UINT64_MAX, &mk),
		     th_head(ch));
}

Test(ship, a_record_of_no_known_type_is_damage)
{
	plant_and_walk(5, 64, false, "type 5");
}

Test(ship, a_record_longer_than_max_msg_is_damage)
{
	plant_and_walk(SHMBUS_REC_MSG, MAXMSG + 8, false, "over max_msg");
}

Test(ship, padding_of_an_unaligned_length_is_damage)
{
	plant_and_walk(SHMBUS_REC_PAD, 36, false, "padding of length 36");
}

Test(ship, a_gap_of_an_unaligned_length_is_damage)
{
	plant_and_walk(SHMBUS_REC_GAP, 36, false, "a gap of length 36");
}

Test(ship, a_record_past_head_is_damage)
{
	plant_and_walk(SHMBUS_REC_MSG, 1024, false, "past head");
}

Test(ship, a_sequence_number_repeated_is_damage)
{
	plant_and_walk(SHMBUS_REC_MSG, 64, true, "sequence");
}

/* A record that would cross the ring's end: planted where the next claim
 * of the lap would start near the end. */
Test(ship, a_record_across_the_rings_end_is_damage)
{
	uint64_t from = th_head(ch), p, left;
	struct sb_marks mk;
	unsigned rnd = 9;
	char why[256];
	void *buf;

	sb_marks_reset(&mk, from, 4096);
	/* Up to less than max_msg before the ring's end. */
	while (CAP - (th_head(ch) & (CAP - 1)) > 2 * (MAXMSG + 16))
		publish_mixed(1, &rnd);
	while (CAP - (th_head(ch) & (CAP - 1)) > MAXMSG) {
		uint8_t m[64], got[64];

		memset(m, 1, sizeof(m));
		cr_assert_eq(shmbus_publish(pub, m, sizeof(m)), 0);
		cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), 64);
	}
	p = th_head(ch);
	left = CAP - (p & (CAP - 1));
	cr_assert_eq(shmbus_claim(pub, 64, &buf), 0);
	cr_assert_eq(sb_committed_end_marked(ch, from, UINT64_MAX, &mk), p);
	/* A length that fits max_msg and runs past the ring's end. */
	__atomic_store_n(&rec_at(ch, p)->commit,
			 commit_word(ch, p, SHMBUS_REC_MSG, (uint32_t)left),
			 __ATOMIC_RELEASE);
	cr_assert_eq(sb_committed_end_marked(ch, p, UINT64_MAX, &mk), p);
	cr_assert(sb_ring_damage(ch, p, &mk, why, sizeof(why)));
	cr_assert(strstr(why, "ring's end"), "why: '%s'", why);
}

/* The verdict of shmbus_pub_sync() on a primary (docs/replication.md):
 * every gap recorded so far holds back a sync of records in it, not only
 * the last one; and a handle opened after the gaps is not held back by
 * them. */
Test(ship, every_gap_holds_back_its_records_and_no_later_handle)
{
	shmbus_channel *mc = th_create_mp(dir, "mp", CAP);
	shmbus_pub *a, *b, *c;
	uint8_t msg[64] = { 0 };
	uint64_t at, mid;

	a = shmbus_pub_open(mc, NULL);
	b = shmbus_pub_open(mc, NULL);
	cr_assert(a && b);
	sb_repl_setup(mc, SHMBUS_ACK_APPLIED, SHMBUS_REPL_ON, 1);
	at = th_head(mc);
	cr_assert_eq(shmbus_publish(a, msg, sizeof(msg)), 0);
	/* The standby went past a's record, then past a range of b's. */
	sb_repl_hole(mc, at, th_head(mc));
	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_publish(b, msg, sizeof(msg)), 0);
	mid = th_head(mc);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_publish(b, msg, sizeof(msg)), 0);
	sb_repl_hole(mc, mid, th_head(mc));
	sb_repl_acked(mc, th_head(mc), th_head(mc), 0, true);
	sb_repl_watermark(mc, th_head(mc));
	cr_assert_eq(shmbus_pub_sync(a, 1000000000), SHMBUS_SYNC_DEGRADED,
		     "a record in the first gap was acknowledged");
	c = shmbus_pub_open(mc, NULL);
	cr_assert(c);
	cr_assert_eq(shmbus_publish(c, msg, sizeof(msg)), 0);
	sb_repl_acked(mc, th_head(mc), th_head(mc), 0, true);
	sb_repl_watermark(mc, th_head(mc));
	cr_assert_eq(shmbus_pub_sync(c, 1000000000), 0,
		     "a handle opened after the gaps");
	/* A cut back to mid keeps what lies below it; one to the first
	 * gap's start clears it. */
	sb_repl_hole_cut(mc, mid);
	cr_assert_eq(mc->daemon->hole_lo, at);
	cr_assert_eq(mc->daemon->hole_hi, mid);
	sb_repl_hole_cut(mc, at);
	cr_assert_eq(mc->daemon->hole_lo, 0);
	cr_assert_eq(mc->daemon->hole_hi, 0);
	shmbus_pub_close(a);
	shmbus_pub_close(b);
	shmbus_pub_close(c);
	shmbus_channel_close(mc);
}

/* A handle's records may have been cut from this host's ring since it
 * became a standby (a returning primary's diverged tail), while its agent
 * raises the watermark over the new primary's records at those
 * positions: once the fence has moved past the hand-over, the answer is
 * -EROFS, never 0, whatever the watermark says. */
Test(ship, a_handle_of_a_host_that_stood_by_since_is_never_told_0)
{
	uint8_t msg[64] = { 0 };
	uint64_t first;

	sb_repl_setup(ch, SHMBUS_ACK_APPLIED, SHMBUS_REPL_ON, 1);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	first = th_head(ch);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_HANDOVER), 0);
	sb_repl_acked(ch, first, first, 0, true);
	sb_repl_watermark(ch, first);
	cr_assert_eq(shmbus_pub_sync(pub, 0), 0, "drained in the hand-over");
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	shmbus_pub_close(pub);	/* refused since the hand-over */
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(pub, 0), -ETIMEDOUT);
	/* Stood by, its tail cut, and the new primary's records applied
	 * where this one stood. */
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_CUT), 0);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	sb_repl_watermark(ch, th_head(ch) + 4096);
	cr_assert_eq(shmbus_pub_sync(pub, 0), -EROFS);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	cr_assert_eq(shmbus_pub_sync(pub, 0), -EROFS, "primary again, but "
		     "not the one the handle was opened under");
}

/* A producer of its own (a fork's copy of the parent's refuses: -EPERM)
 * publishes and waits for its message to be replicated, 10 s. */
static int sync_for_10s(void *arg)
{
	shmbus_channel *c = shmbus_channel_open(dir, "ch");
	shmbus_pub *p = c ? shmbus_pub_open(c, NULL) : NULL;
	uint8_t msg[64] = { 0 };

	(void)arg;
	if (!p || shmbus_publish(p, msg, sizeof(msg)))
		return 2;
	return shmbus_pub_sync(p, INT64_C(10000000000)) == -ETIMEDOUT ? 0 : 1;
}

/*
 * The agent spins while a shmbus_pub_sync() caller waits, and naps
 * otherwise.  A caller killed inside its wait leaves its count raised for
 * good; it must not keep the agent spinning: the count is believed only
 * while the waiters' beat moves the kick word.
 */
Test(ship, a_sync_waiter_killed_in_its_wait_keeps_no_agent_awake)
{
	struct sb_sync_hint hint = { 0 };
	uint8_t msg[64] = { 0 };
	uint64_t t0;
	pid_t p;

	sb_repl_setup(ch, SHMBUS_ACK_APPLIED, SHMBUS_REPL_ON, 1);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	/* The single producer's role, for the child's own. */
	shmbus_pub_close(pub);
	pub = NULL;
	p = th_spawn(sync_for_10s, NULL);
	for (int i = 0; i < 1000 && !sb_repl_sync_waiting(ch, &hint); i++)
		usleep(1000);
	/* A live waiter: believed well past SB_SYNC_HINT_NS. */
	t0 = th_now_ns();
	while (th_now_ns() - t0 < 4 * (uint64_t)SB_SYNC_HINT_NS) {
		cr_assert(sb_repl_sync_waiting(ch, &hint), "a live waiter "
			  "not seen after %.0f ms",
			  (double)(th_now_ns() - t0) / 1e6);
		usleep(5000);
	}
	kill(p, SIGKILL);
	cr_assert_eq(waitpid(p, NULL, 0), p);
	cr_assert_neq(ch->hdr->sync_waiters, 0, "the dead waiter's count "
		      "stays: nothing to test");
	/* Asked as the agent asks, over and over. */
	t0 = th_now_ns();
	while (sb_repl_sync_waiting(ch, &hint) &&
	       th_now_ns() - t0 < 3 * (uint64_t)SB_SYNC_HINT_NS)
		usleep(1000);
	cr_assert_not(sb_repl_sync_waiting(ch, &hint), "a waiter killed "
		      "%d ms ago still keeps the agent spinning",
		      (int)(3 * SB_SYNC_HINT_NS / 1000000));
}

/* An agent asleep on the kick word, in the way of one that does not count
 * kick_sleepers (an older shmbusd), in another thread. */
static void *old_agent_sleeps(void *arg)
{
	struct shmbus_hdr *h = arg;
	struct timespec ts = { 5, 0 };
	uint32_t k = __atomic_load_n(&h->kick, __ATOMIC_SEQ_CST);
	uint64_t t0 = th_now_ns();

	syscall(SYS_futex, &h->kick, FUTEX_WAIT, k, &ts, NULL, 0);
	return (void *)(uintptr_t)((th_now_ns() - t0) / 1000000);
}

/* The same, by sb_repl_agent_wait(), which counts. */
static void *new_agent_sleeps(void *arg)
{
	shmbus_channel *c = arg;
	uint32_t k = __atomic_load_n(&c->hdr->kick, __ATOMIC_SEQ_CST);
	uint64_t t0 = th_now_ns();

	sb_repl_agent_wait(c, k, 5000000000LL);
	return (void *)(uintptr_t)((th_now_ns() - t0) / 1000000);
}

/* shmbus_pub_sync() wakes an agent asleep on the kick word unless the
 * agents say they count their sleep (kick_counted): one that does not
 * is woken every time; one that does, when it sleeps there. */
Test(ship, pub_sync_wakes_an_agent_that_does_not_count_its_sleep)
{
	uint8_t msg[64] = { 0 };
	pthread_t t;
	void *ms;

	sb_repl_setup(ch, SHMBUS_ACK_APPLIED, SHMBUS_REPL_ON, 1);
	cr_assert_neq(ch->hdr->kick_counted, SHMBUS_KICK_COUNTED);
	cr_assert_eq(pthread_create(&t, NULL, old_agent_sleeps, ch->hdr), 0);
	usleep(100000);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(pub, 20000000), -ETIMEDOUT);
	cr_assert_eq(pthread_join(t, &ms), 0);
	cr_assert_lt((uintptr_t)ms, 2000, "the agent slept %lu ms through "
		     "the kick", (unsigned long)(uintptr_t)ms);
	/* An agent that counts: its wait says so, and a pub_sync wakes it
	 * while it sleeps there. */
	cr_assert_eq(pthread_create(&t, NULL, new_agent_sleeps, ch), 0);
	usleep(100000);
	cr_assert_eq(ch->hdr->kick_counted, SHMBUS_KICK_COUNTED);
	cr_assert_eq(ch->hdr->kick_sleepers, 1);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(pub, 20000000), -ETIMEDOUT);
	cr_assert_eq(pthread_join(t, &ms), 0);
	cr_assert_lt((uintptr_t)ms, 2000, "the agent slept %lu ms through "
		     "the kick", (unsigned long)(uintptr_t)ms);
	cr_assert_eq(ch->hdr->kick_sleepers, 0);
}
