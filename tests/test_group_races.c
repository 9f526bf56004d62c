/* SPDX-License-Identifier: MIT */
/*
 * test_group_races.c - consumer groups at the interleavings reviews
 * found: batches given back or ending in aborted records, poison batches,
 * dead claims on the dead-letter channel, winners and maintenances killed
 * or stopped between the steps of a claim's recording, a look for leases
 * given back overtaken by the next claim, stopped active members, and a
 * hostile member's writes to the group's file.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/contract.h"
#include "../lib/group.h"
#include "../lib/repair.h"
#include "../lib/sub.h"

#include "group_fixture.h"

TestSuite(group_races, .init = grp_setup, .fini = grp_teardown,
	  .timeout = 120);

/* ------------------------------------------------- the review's cases */

static shmbus_group *join_as(shmbus_channel *ch, const char *name,
			     enum shmbus_group_mode mode, int64_t lease)
{
	struct shmbus_group_attr ga;
	shmbus_group *g;

	shmbus_group_attr_init(&ga);
	ga.mode = mode;
	ga.window = 8;
	if (lease)
		ga.lease_ns = lease;
	g = shmbus_group_join(ch, "g", name, &ga);
	cr_assert(g, "join %s: %s", name, strerror(errno));
	return g;
}

static int keep_lease(const struct shmbus_group_msg *m, void *arg)
{
	*(struct shmbus_lease *)arg = m->lease;
	return 0;
}

static uint64_t id_of(const void *buf, size_t off)
{
	uint64_t id;

	memcpy(&id, (const uint8_t *)buf + off, 8);
	return id;
}

/* A batch of 8 given back, then read one message at a time by another
 * member that acks each: all 8 come, and the floor reaches head only
 * after the last. */
Test(group_races, a_batch_given_back_is_delivered_whole_to_a_reader)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *a = join_as(ch, "a", SHMBUS_GROUP_SHARED, 0);
	shmbus_group *b = join_as(ch, "b", SHMBUS_GROUP_SHARED, 0);
	struct shmbus_group_stats st;
	struct shmbus_group_msg m;
	struct shmbus_lease l;
	uint8_t buf[64];
	uint64_t want = 0;

	book_open(8);
	produce(ch, 8, 0);
	cr_assert_eq(shmbus_group_poll(a, keep_lease, &l, 8), 8);
	cr_assert_eq(shmbus_group_nack(a, &l, 0), 0);
	while (shmbus_group_read(b, buf, sizeof(buf), &m) > 0) {
		cr_assert_eq(id_of(buf, 0), want++);
		cr_assert_eq(m.deliveries, 2);
		shmbus_group_stats(b, &st);
		cr_assert(st.floor < st.head || want == 8,
			  "the floor passed message %lu before its ack",
			  (unsigned long)want);
		cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
	}
	cr_assert_eq(want, 8, "all 8 messages, one by one");
	shmbus_group_stats(b, &st);
	cr_assert_eq(st.floor, st.head);
	shmbus_group_leave(a);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

static int keep_first(const struct shmbus_group_msg *m, void *arg)
{
	*(struct shmbus_group_msg *)arg = *m;
	return 1;
}

/* Member b in a process of its own: reads and acks until it has had
 * both messages (2 s at most); exits with how many it had. */
static int read_both(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *b = ch ? shmbus_group_join(ch, "g", "b", NULL) : NULL;
	struct shmbus_group_msg m;
	uint8_t buf[64];
	int got = 0;

	(void)arg;
	if (!b)
		return 100;
	for (int i = 0; i < 4000 && got < 2; i++) {
		if (shmbus_group_read(b, buf, sizeof(buf), &m) > 0 &&
		    shmbus_group_ack(b, &m.lease) == 0)
			got++;
		else
			usleep(500);
	}
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
	return got;
}

/* A member handed the first message of a batch of two, whose lease's term
 * passes before it acks (it was slow) and another member takes the batch:
 * its ack is -ESTALE (it said 0, as if the ack would count once the rest
 * of the batch was handed over: it never was, nor counted). */
Test(group_races, an_ack_in_a_batch_whose_lease_was_taken_back_is_stale)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *a = join_as(ch, "a", SHMBUS_GROUP_SHARED, 20000000);
	struct shmbus_group_msg m;
	pid_t p;

	book_open(2);
	produce(ch, 2, 0);
	cr_assert_eq(shmbus_group_poll(a, keep_first, &m, 2), 1);
	cr_assert_eq(id_of(m.data, 0), 0);
	usleep(60000);		/* three terms: a was slow */
	p = th_spawn(read_both, NULL);
	cr_assert_eq(th_wait(p), 2, "b had the batch a's term let go");
	cr_assert_eq(shmbus_group_ack(a, &m.lease), -ESTALE,
		     "a's ack of a batch b had and acknowledged");
	shmbus_group_leave(a);
	shmbus_channel_close(ch);
}

/* A message nacked more than 65535 times (no limit of deliveries) is
 * still flagged redelivered: the 16-bit count of a lease or lane wrapped
 * to 0, and the 65537th delivery said 1, a first.  And a limit the count
 * cannot reach is refused, not a message that is never dead-lettered. */
static void count_never_wraps(enum shmbus_group_mode mode)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	shmbus_group *g;
	uint32_t first_again = 0;

	shmbus_group_attr_init(&ga);
	ga.mode = mode;
	ga.window = 8;
	ga.max_deliveries = 65536;
	cr_assert_null(shmbus_group_join(ch, "g", "a", &ga));
	cr_assert_eq(errno, EINVAL, "a limit past the count's 65535");
	ga.max_deliveries = UINT32_MAX;	/* no limit */
	g = shmbus_group_join(ch, "g", "a", &ga);
	cr_assert(g, "join: %s", strerror(errno));
	book_open(1);
	produce(ch, 1, mode == SHMBUS_GROUP_KEYED);
	for (uint32_t i = 1; i <= 65540; i++) {
		cr_assert_eq(shmbus_group_poll(g, keep_first, &m, 1), 1,
			     "delivery %u", i);
		if (i > 1 && m.deliveries <= 1 && !first_again)
			first_again = i;
		if (i < 65540)
			cr_assert_eq(shmbus_group_nack(g, &m.lease, 0), 0);
	}
	cr_log_info("the last delivery's count: %u", m.deliveries);
	cr_assert_eq(first_again, 0, "delivery %u said it was the first",
		     first_again);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

Test(group_races, a_shared_delivery_count_never_wraps)
{
	count_never_wraps(SHMBUS_GROUP_SHARED);
}

Test(group_races, a_keyed_delivery_count_never_wraps)
{
	count_never_wraps(SHMBUS_GROUP_KEYED);
}

/* A limit of deliveries past the count's 65535 in a group's file (an
 * older version made it from a limit of 100000) is the count's most: the
 * message is dropped after 65535 deliveries (it came for ever, never
 * dead-lettered).  And such a limit shipped by an older primary makes the
 * standby's copy (it was refused: EINVAL, and the group never copied). */
Test(group_races, a_limit_past_the_count_from_an_older_version_is_its_most)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_stats gs;
	struct shmbus_group_msg m;
	struct sb_group_state st;
	shmbus_group *x, *g;
	uint32_t n = 0;

	x = join_as(ch, "x", SHMBUS_GROUP_SHARED, 0);
	store_relaxed32(&x->g->max_deliveries, 100000);	/* as made */
	g = join_as(ch, "a", SHMBUS_GROUP_SHARED, 0);
	shmbus_group_leave(x);
	book_open(1);
	produce(ch, 1, 0);
	while (n < 70000 && shmbus_group_poll(g, keep_first, &m, 1) == 1) {
		n++;
		cr_assert_eq(shmbus_group_nack(g, &m.lease, 0), 0);
	}
	cr_log_info("delivered %u times", n);
	cr_assert_geq(shmbus_group_maintain(g), 0);
	cr_assert_eq(shmbus_group_stats(g, &gs), 0);
	cr_log_info("dropped %lu", (unsigned long)gs.dropped);
	cr_assert_eq(n, 65535);
	cr_assert_eq(gs.dropped, 1);
	cr_assert_eq(gs.floor, gs.head);
	shmbus_group_leave(g);

	memset(&st, 0, sizeof(st));
	snprintf(st.name, sizeof(st.name), "copy");
	st.mode = SHMBUS_GMODE_SHARED;
	st.window = 8;
	st.max_deliveries = 100000;
	st.lease_ns = 1000000000;
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0,
		     "the copy of a group with a limit of 100000");
	cr_assert_eq(sb_group_state_get(ch, dir, "copy", &st), 0);
	cr_assert_eq(st.max_deliveries, 65535);
	shmbus_channel_close(ch);
}

struct ack_ctx {
	shmbus_group *g;
	unsigned n;
};

static int ack_each(const struct shmbus_group_msg *m, void *arg)
{
	struct ack_ctx *a = arg;

	cr_assert_eq(m->deliveries, 1);
	cr_assert_eq(shmbus_group_ack(a->g, &m->lease), 0);
	a->n++;
	return 0;
}

/* A batch whose range ends in records that hold no message (an aborted
 * claim, a wrap's padding): the ack after its last message counts, as
 * when it ends with that message. */
Test(group_races, a_batch_that_ends_in_an_aborted_record_is_acknowledged)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "a", SHMBUS_GROUP_SHARED, 0);
	struct ack_ctx a = { g, 0 };
	struct shmbus_group_stats st;
	shmbus_pub *p;
	void *buf;

	book_open(3);
	produce(ch, 3, 0);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	cr_assert_eq(shmbus_claim(p, 32, &buf), 0);
	cr_assert_eq(shmbus_abort(p), 0);
	shmbus_pub_close(p);
	cr_assert_eq(shmbus_group_poll(g, ack_each, &a, 8), 3);
	cr_assert_eq(shmbus_group_poll(g, ack_each, &a, 8), 0);
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.floor, st.head, "the batch's ack did not count: "
		     "floor %lu, head %lu", (unsigned long)st.floor,
		     (unsigned long)st.head);
	cr_assert_eq(st.in_flight, 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

static int count_ids(const struct shmbus_msg *m, void *arg)
{
	unsigned *seen = arg;
	uint64_t id;

	memcpy(&id, m->data, 8);
	if (id < 4)
		seen[id]++;
	else
		cr_assert_eq(id, 1000, "filler or poison: %lu",
			     (unsigned long)id);
	return 0;
}

/* A poison batch whose dead-letter channel has room for part of it only:
 * nothing is copied then, and all of it once there is room, each message
 * once (copies made part way were made again). */
Test(group_races, a_poison_batch_goes_to_the_dead_letter_channel_whole_and_once)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16), *dl;
	struct shmbus_group_attr ga;
	struct shmbus_group_stats st;
	struct shmbus_lease l;
	unsigned seen[4] = { 0 };
	uint64_t filler = 1000;
	shmbus_group *g;
	shmbus_pub *fp;
	shmbus_sub *sub;
	int taken = 0;

	dl = th_create_mp(dir, "dl", SHMBUS_MIN_CAPACITY);
	sub = shmbus_sub_open(dl, NULL);
	fp = shmbus_pub_open(dl, NULL);
	cr_assert(sub && fp);
	while (shmbus_publish(fp, &filler, 8) == 0)
		;
	/* Room for two of the batch's four records. */
	cr_assert_eq(shmbus_poll(sub, count_ids, seen, 2), 2);
	shmbus_group_attr_init(&ga);
	ga.max_deliveries = 1;
	ga.dead_letter = "dl";
	g = shmbus_group_join(ch, "g", "w", &ga);
	cr_assert(g);
	book_open(4);
	produce(ch, 4, 0);
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &l, 4), 4);
	cr_assert_eq(shmbus_group_nack(g, &l, 0), 0);
	/* The next take finds it delivered max_deliveries times. */
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &l, 4), 0);
	for (int i = 0; i < 5; i++) {
		shmbus_group_maintain(g);
		usleep(2000);
	}
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.dead_lettered, 0, "copied part way");
	while (shmbus_poll(sub, count_ids, seen, 64) > 0)
		;
	for (int i = 0; i < 100 && !st.dead_lettered; i++) {
		shmbus_group_maintain(g);
		shmbus_group_stats(g, &st);
		usleep(2000);
	}
	cr_assert_eq(st.dead_lettered, 4, "dead_lettered %lu dropped %lu nacked %lu floor %lu head %lu", (unsigned long)st.dead_lettered, (unsigned long)st.dropped, (unsigned long)st.nacked, (unsigned long)st.floor, (unsigned long)st.head);
	while ((taken = shmbus_poll(sub, count_ids, seen, 64)) > 0)
		;
	for (int i = 0; i < 4; i++)
		cr_assert_eq(seen[i], 1, "poison message %d copied %u times", i,
			     seen[i]);
	cr_assert_eq(st.floor, st.head);
	shmbus_pub_close(fp);
	shmbus_sub_close(sub);
	shmbus_group_leave(g);
	shmbus_channel_close(dl);
	shmbus_channel_close(ch);
}

/* Direct mode: the dead-letter channel's hand-off stuck at a claim whose
 * producer died between its claim and its hand-off.  The member's dead
 * letter never waits on a claim, but heals a dead one as any producer
 * does: the poison message goes out and the group moves on. */
Test(group_races, a_dead_claim_on_the_dead_letter_channel_is_healed)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16), *dl;
	struct shmbus_group_attr ga;
	struct shmbus_group_stats st;
	struct shmbus_group_msg m;
	struct shmbus_prod_slot *s;
	shmbus_group *g;
	shmbus_pub *p;
	uint64_t x = 7, at, buf[8];

	dl = th_create_mp(dir, "dl", 1 << 16);
	s = &dl->prods[SHMBUS_MAX_PRODUCERS - 1];
	at = __atomic_load_n(&dl->pl->head, __ATOMIC_ACQUIRE);
	__atomic_store_n(&s->claim_end, at + 24, __ATOMIC_RELAXED);
	__atomic_store_n(&s->claim_pos, at, __ATOMIC_RELEASE);
	__atomic_store_n(&s->owner, (uint64_t)99999999 << 32 |
			 SHMBUS_SLOT_ACTIVE, __ATOMIC_RELEASE);
	__atomic_store_n(&dl->pl->head, at + 24, __ATOMIC_RELEASE);
	shmbus_group_attr_init(&ga);
	ga.max_deliveries = 2;
	ga.dead_letter = "dl";
	g = shmbus_group_join(ch, "g", "w", &ga);
	cr_assert(g, "join: %s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	cr_assert_eq(shmbus_publish(p, &x, 8), 0);
	shmbus_pub_close(p);
	for (int i = 0; i < 300; i++) {
		if (shmbus_group_read(g, buf, sizeof(buf), &m) >= 0)
			cr_assert_eq(shmbus_group_nack(g, &m.lease, 0), 0);
		shmbus_group_stats(g, &st);
		if (st.dead_lettered)
			break;
		usleep(10000);
	}
	cr_assert_eq(st.dead_lettered, 1, "the poison message never left");
	for (int i = 0; i < 100 && st.floor != st.head; i++) {
		shmbus_group_maintain(g);
		shmbus_group_stats(g, &st);
		usleep(10000);
	}
	cr_assert_eq(st.floor, st.head);
	shmbus_group_leave(g);
	shmbus_channel_close(dl);
	shmbus_channel_close(ch);
}

static volatile sig_atomic_t hooked_once;

static void stop_self(int where)
{
	if (where != SB_HOOK_CLAIMED)
		return;
	hooked_once = 1;
	raise(SIGSTOP);
}

/* Joins, then polls until its first claim, where `hook` stops or kills
 * it (after the claim, before its lease). */
static int win_then(void (*hook)(int))
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_lease l;
	shmbus_group *g;

	g = ch ? shmbus_group_join(ch, "g", "stopper", NULL) : NULL;
	if (!g)
		return 2;
	sb_group_hook = hook;
	/* Until the message is there (the parent publishes after the
	 * spawn): the first claim stops (or kills) us. */
	for (int i = 0; i < 5000 && !hooked_once &&
			shmbus_group_poll(g, keep_lease, &l, 1) == 0; i++)
		usleep(1000);
	return 0;
}

static int win_then_stop(void *arg)
{
	(void)arg;
	return win_then(stop_self);
}

static void killed_at_claim(int where)
{
	if (where == SB_HOOK_CLAIMED)
		raise(SIGKILL);
}

static int win_then_die(void *arg)
{
	(void)arg;
	return win_then(killed_at_claim);
}

/* A member stopped (or killed) between winning a claim and recording its
 * lease, at the group's very first claim: the others get the message once
 * the winner is dead, or once a term has passed. */
static void unrecorded_claim(int (*winner)(void *), int64_t lease)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *b = join_as(ch, "b", SHMBUS_GROUP_SHARED, lease);
	struct shmbus_group_msg m;
	uint8_t buf[64];
	uint64_t got = 0;
	pid_t p;
	int st;

	book_open(100);
	p = th_spawn(winner, NULL);
	produce(ch, 1, 0);
	cr_assert_eq(waitpid(p, &st, WUNTRACED), p);
	cr_assert(WIFSTOPPED(st) || WIFSIGNALED(st));
	produce_from(ch, 1, 99, 0);
	for (int i = 0; i < 4000 && got < 100; i++) {
		if (shmbus_group_read(b, buf, sizeof(buf), &m) > 0) {
			cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
			got++;
		} else {
			usleep(500);
		}
	}
	cr_assert_eq(got, 100, "the unrecorded claim's message came too");
	if (WIFSTOPPED(st)) {
		kill(p, SIGCONT);
		cr_assert_eq(th_wait(p), 0, "the winner, resumed, lets go");
	}
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

Test(group_races, the_first_claims_winner_killed_before_its_lease)
{
	unrecorded_claim(win_then_die, 0);
}

Test(group_races, a_claims_winner_stopped_for_a_term_before_its_lease)
{
	unrecorded_claim(win_then_stop, 50000000);
}

/* A member stopped between winning the group's very first claim and
 * recording its lease keeps it for a term: the maintenance took a new
 * group's claim 0 for one that had waited since the clock's start, and
 * gave it to another member at once.  old_file: the group's file holds
 * no stall mark (0, claim 0, at time 0), as a file an older version made
 * does. */
static void first_claim_stopped(bool old_file)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *b = join_as(ch, "b", SHMBUS_GROUP_SHARED, 5000000000);
	struct shmbus_group_msg m;
	uint8_t buf[64];
	uint64_t got = 0, first = 0;
	pid_t p;
	int st;

	if (old_file) {
		store_relaxed64(&b->g->stall_seq, 0);
		store_relaxed64((uint64_t *)&b->g->stall_since, 0);
	}
	book_open(10);
	p = th_spawn(win_then_stop, NULL);
	produce(ch, 1, 0);
	cr_assert_eq(waitpid(p, &st, WUNTRACED), p);
	cr_assert(WIFSTOPPED(st), "the winner stopped at its claim");
	produce_from(ch, 1, 9, 0);
	/* 100 ms of polls, each maintenance among them. */
	for (int i = 0; i < 200; i++) {
		if (shmbus_group_read(b, buf, sizeof(buf), &m) > 0) {
			first += id_of(buf, 0) == 0;
			cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
			got++;
		}
		usleep(500);
	}
	kill(p, SIGCONT);
	cr_expect_eq(th_wait(p), 0, "the winner, resumed, records its lease");
	cr_log_info("b: %lu messages, message 0 %lu times",
		    (unsigned long)got, (unsigned long)first);
	cr_assert_eq(first, 0, "the stopped winner's claim was taken early");
	cr_assert_eq(got, 7, "claims 1-7 of the window of 8");
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

Test(group_races, the_first_claims_stopped_winner_keeps_it_for_a_term)
{
	first_claim_stopped(false);
}

Test(group_races, an_old_files_first_claim_is_kept_for_its_stopped_winner)
{
	first_claim_stopped(true);
}

/* Two members stopped between winning a claim and recording its lease,
 * the second's claim right after the first's: both claims go to the
 * others, each once it has waited a term (the maintenance timed one stall
 * at a time, and two of them reset each other's clock at every run: the
 * floor stayed at the first for good). */
Test(group_races, two_claims_winners_stopped_before_their_leases)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *b = join_as(ch, "b", SHMBUS_GROUP_SHARED, 50000000);
	struct shmbus_group_msg m;
	uint8_t buf[64];
	uint64_t got = 0, seen = 0;
	pid_t p[2];
	int st;

	book_open(100);
	/* Claim 0 is b's: the winners stop at claims 1 and 2. */
	produce_from(ch, 0, 1, 0);
	cr_assert_gt(shmbus_group_read(b, buf, sizeof(buf), &m), 0);
	cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
	got = 1;
	for (int k = 0; k < 2; k++) {
		p[k] = th_spawn(win_then_stop, NULL);
		produce_from(ch, (uint64_t)k + 1, 1, 0);
		cr_assert_eq(waitpid(p[k], &st, WUNTRACED), p[k]);
		cr_assert(WIFSTOPPED(st), "winner %d stopped at its claim", k);
	}
	produce_from(ch, 3, 97, 0);
	for (int i = 0; i < 4000 && got < 100; i++) {
		if (shmbus_group_read(b, buf, sizeof(buf), &m) > 0) {
			cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
			seen |= id_of(buf, 0) == 1 || id_of(buf, 0) == 2
					? UINT64_C(1) << (id_of(buf, 0) - 1)
					: 0;
			got++;
		} else {
			usleep(500);
		}
	}
	cr_log_info("%lu of 100 messages, the stopped winners' claims: %lu",
		    (unsigned long)got, (unsigned long)seen);
	for (int k = 0; k < 2; k++) {
		kill(p[k], SIGCONT);
		cr_expect_eq(th_wait(p[k]), 0, "winner %d, resumed, lets go", k);
	}
	cr_assert_eq(seen, 3, "both stopped winners' claims came to b");
	cr_assert_eq(got, 100);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

/* ------------------------------- recordings that died or were overtaken */

/* What the processes of the two tests below tell each other. */
static struct rendezvous {
	_Atomic int taking;	/* T looked at the floor and the claim word */
	_Atomic int recording;	/* M's recording made its CAS */
	_Atomic int took;	/* T's read is over: 1 + what it returned */
	_Atomic uint64_t took_id;
} *rv;

static void rendezvous_open(void)
{
	rv = mmap(NULL, sizeof(*rv), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(rv != MAP_FAILED);
	memset(rv, 0, sizeof(*rv));
}

/* Until *w is set, for 5 s at most. */
static void await(_Atomic int *w)
{
	for (int i = 0; i < 5000 && !atomic_load(w); i++)
		usleep(1000);
}

/* Joins group "g" with a window of `window` leases and a long term. */
static shmbus_group *join_window(shmbus_channel *ch, const char *name,
				 uint32_t window)
{
	struct shmbus_group_attr ga;

	shmbus_group_attr_init(&ga);
	ga.window = window;
	ga.lease_ns = 5000000000;
	return shmbus_group_join(ch, "g", name, &ga);
}

static shmbus_group *join_window_1(shmbus_channel *ch, const char *name)
{
	return join_window(ch, name, 1);
}

static void killed_recording(int where)
{
	if (where == SB_HOOK_RECORDING)
		raise(SIGKILL);
}

static void paused_recording(int where)
{
	if (where != SB_HOOK_RECORDING)
		return;
	atomic_store(&rv->recording, 1);
	await(&rv->took);
}

static void paused_taking(int where)
{
	static int once;

	if (where != SB_HOOK_TAKING || once++)
		return;
	atomic_store(&rv->taking, 1);
	await(&rv->recording);
}

/* A member whose maintenance records a dead winner's claim: killed (or
 * held, with `arg`) between the recording's CAS and its seq. */
static int maintain_hooked(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *g;

	sb_group_hook = arg ? paused_recording : killed_recording;
	g = ch ? join_window_1(ch, "m") : NULL;
	if (!g)
		return 2;
	for (int i = 0; i < 1000 && !atomic_load(&rv->recording); i++) {
		shmbus_group_maintain(g);
		usleep(1000);
	}
	return 0;
}

/* A member whose look for a lease given back is held between its read
 * of the floor and its look at the slots; what it gets, it acks. */
static int take_held(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_msg m;
	uint8_t buf[64];
	shmbus_group *g;
	ssize_t n;

	(void)arg;
	sb_group_hook = paused_taking;
	g = ch ? join_window_1(ch, "t") : NULL;
	if (!g)
		return 2;
	n = shmbus_group_read(g, buf, sizeof(buf), &m);
	if (n > 0) {
		atomic_store(&rv->took_id, id_of(buf, 0));
		shmbus_group_ack(g, &m.lease);
	}
	atomic_store(&rv->took, 1 + (n > 0));
	return 0;
}

/* A member (of a group of window `arg`) that wins the next claim and
 * dies before recording it. */
static int win_then_die_window(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_lease l;
	shmbus_group *g;

	sb_group_hook = killed_at_claim;
	g = ch ? join_window(ch, "w", (uint32_t)(uintptr_t)arg) : NULL;
	for (int i = 0; g && i < 5000; i++)
		if (shmbus_group_poll(g, keep_lease, &l, 1) == 0)
			usleep(1000);
	return 3;	/* never claimed */
}

/* Reads what b is given for up to 2 s: the ids, acked. */
static unsigned read_all(shmbus_group *b, uint64_t *ids, unsigned cap)
{
	struct shmbus_group_msg m;
	uint8_t buf[64];
	unsigned n = 0;

	for (int i = 0; i < 2000 && n < cap; i++) {
		if (shmbus_group_read(b, buf, sizeof(buf), &m) > 0) {
			ids[n++] = id_of(buf, 0);
			cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
		} else {
			shmbus_group_maintain(b);
			usleep(1000);
		}
	}
	return n;
}

/*
 * The maintenance records a dead winner's claim AVAILABLE, and is killed
 * between that recording's CAS and its seq.  The next maintenance takes
 * the recording over: the claim's message is delivered, and the group
 * (window 1) goes on.
 */
Test(group_races, a_maintenance_killed_while_recording_is_taken_over)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *b;
	uint64_t ids[8];
	unsigned n;
	int st;
	pid_t p;

	rendezvous_open();
	b = join_window_1(ch, "b");
	cr_assert(b);
	p = th_spawn(win_then_die_window, (void *)1);
	produce(ch, 1, 0);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st), "the winner claimed message 0 and died");
	p = th_spawn(maintain_hooked, NULL);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st), "the maintenance died recording claim 0");
	produce_from(ch, 1, 3, 0);
	n = read_all(b, ids, 4);
	cr_assert_eq(n, 4, "%u of 4 messages delivered: the group stalled "
		     "at the recording that died", n);
	for (unsigned i = 0; i < 4; i++)
		cr_assert_eq(ids[i], i);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

/* A member (of a group of window 8) that wins the next claim and dies
 * between its CAS of the lease slot and the store of the claim's seq. */
static int win_then_die_recording(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_lease l;
	shmbus_group *g;

	(void)arg;
	sb_group_hook = killed_recording;
	g = ch ? join_window(ch, "w2", 8) : NULL;
	for (int i = 0; g && i < 5000; i++)
		if (shmbus_group_poll(g, keep_lease, &l, 1) == 0)
			usleep(1000);
	return 3;	/* never claimed */
}

static void stopped_resolving(int where)
{
	static int once;

	if (where == SB_HOOK_RESOLVING && !once++)
		raise(SIGSTOP);
}

/* A member whose maintenance stops as it is about to record the first
 * unrecorded claim, then, resumed, carries on. */
static int maintain_stopped(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *g = ch ? join_window(ch, "m", 8) : NULL;

	(void)arg;
	if (!g)
		return 2;
	sb_group_hook = stopped_resolving;
	shmbus_group_maintain(g);
	sb_group_hook = NULL;
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	return 0;
}

/*
 * Claim 0's winner dies after its claim, claim 1's within the recording
 * of its lease (a LEASED word beside no seq, which only its record's
 * verdict lets a maintenance replace).  A maintenance stops about to
 * record claim 0, its lock is taken meanwhile, and it resumes: it
 * records nothing more, and must not free the dead winners' records
 * either (it freed claim 1's winner's: no later maintenance could judge
 * it dead, nor replace its word, and the group stalled there for good).
 */
Test(group_races, a_replaced_maintenance_frees_no_unresolved_winner)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *b = join_window(ch, "b", 8);
	uint64_t ids[2];
	unsigned n;
	int st;
	pid_t p;

	cr_assert(b);
	p = th_spawn(win_then_die_window, (void *)8);
	produce(ch, 1, 0);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st), "the winner of claim 0 died");
	p = th_spawn(win_then_die_recording, NULL);
	produce_from(ch, 1, 1, 0);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st), "the winner of claim 1 died recording");
	p = th_spawn(maintain_stopped, NULL);
	cr_assert_eq(waitpid(p, &st, WUNTRACED), p);
	cr_assert(WIFSTOPPED(st), "the maintenance stopped resolving");
	/* Its lock taken over (as after a second), then given back. */
	cr_assert(sb_group_maint_trylock(b, 0));
	kill(p, SIGCONT);
	cr_assert_eq(th_wait(p), 0);
	sb_group_maint_release(b);
	n = read_all(b, ids, 2);
	cr_log_info("%u of 2 messages", n);
	cr_assert_eq(n, 2, "%u of 2 messages delivered: the group stalled at "
		     "a claim whose winner's record was freed", n);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

static void killed_floored(int where)
{
	if (where == SB_HOOK_FLOORED)
		raise(SIGKILL);
}

/* A keyed member (1 lane) that, once told, takes every message and acks
 * the last (all of them), killed as its ack has moved the group's floor,
 * before the channel's slot follows. */
static int keyed_killed_floored(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	struct shmbus_lease l;
	shmbus_group *g;
	int n = 0, k;

	(void)arg;
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	g = ch ? shmbus_group_join(ch, "g", "k", &ga) : NULL;
	if (!g)
		return 2;
	atomic_store(&rv->taking, 1);
	await(&rv->recording);
	sb_group_hook = killed_floored;
	while ((k = shmbus_group_poll(g, keep_lease, &l, 64)) > 0)
		n += k;
	if (n)
		shmbus_group_ack(g, &l);
	return 3;	/* not killed */
}

/* Publishes until the ring is full; how many. */
static unsigned fill(shmbus_pub *pub)
{
	uint64_t m[2] = { 0, 0 };
	unsigned n = 0;

	while (shmbus_publish_keyed(pub, 0, m, sizeof(m)) >= 0)
		n++;
	return n;
}

/* A keyed member (2 lanes, terms of 100 ms) that joins and polls for
 * 400 ms, acking what it gets; exits with how often it got message 0. */
static int keyed_joiner(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	shmbus_group *g;
	int zero = 0;

	(void)arg;
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 2;
	ga.lease_ns = 100000000;
	g = ch ? shmbus_group_join(ch, "g", "j", &ga) : NULL;
	if (!g)
		return 100;
	atomic_store(&rv->taking, 1);
	for (int i = 0; i < 400; i++) {
		if (shmbus_group_poll(g, keep_first, &m, 1) == 1) {
			zero += id_of(m.data, 0) == 0;
			shmbus_group_ack(g, &m.lease);
		}
		usleep(1000);
	}
	shmbus_group_leave(g);
	return zero;
}

/*
 * A keyed owner holds a record of a lane that moves to a member that
 * joins (REVOKING: it lets go once it has acknowledged), and polls on,
 * for more than a term, before it acks: the lane's term runs from its
 * last poll, and the ack counts (the polls kept only the lanes it was
 * not losing: the lane's term passed, the joiner had the record while
 * its owner still worked on it, and the owner's ack was -ESTALE).
 */
Test(group_races, a_revoked_lanes_term_runs_from_its_owners_polls)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m, h;
	shmbus_group *a;
	int rc;
	pid_t p;

	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 2;
	ga.lease_ns = 100000000;
	a = shmbus_group_join(ch, "g", "a", &ga);
	cr_assert(a, "join: %s", strerror(errno));
	book_open(2);
	produce(ch, 2, 2);	/* keys 0 and 1: lanes 0 and 1 */
	cr_assert_eq(shmbus_group_poll(a, keep_first, &h, 1), 1);
	cr_assert_eq(id_of(h.data, 0), 0, "lane 0's record first");
	rendezvous_open();
	p = th_spawn(keyed_joiner, NULL);
	await(&rv->taking);
	/* Three terms of polls (lane 1's record acked), lane 0's held. */
	for (int i = 0; i < 300; i++) {
		if (shmbus_group_poll(a, keep_first, &m, 1) == 1)
			shmbus_group_ack(a, &m.lease);
		usleep(1000);
	}
	rc = shmbus_group_ack(a, &h.lease);
	cr_log_info("the held record's ack: %d", rc);
	cr_assert_eq(th_wait(p), 0, "the joiner had the record its owner "
		     "was still working on");
	cr_assert_eq(rc, 0);
	shmbus_group_leave(a);
	shmbus_channel_close(ch);
}

static void stop_extending(int where)
{
	if (where == SB_HOOK_EXTENDING)
		raise(SIGSTOP);
}

/* A keyed member (one lane, terms of 300 ms) that takes message 0 and
 * extends its lease by 1 ms, stopped inside the extend once it has found
 * the lane its own; exits with 0 if the extend said 0, 1 if -ESTALE. */
static int stale_extender(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	shmbus_group *g;
	int rc = 0;

	(void)arg;
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	ga.lease_ns = 300000000;
	g = ch ? shmbus_group_join(ch, "g", "a", &ga) : NULL;
	if (!g)
		return 100;
	for (int i = 0; i < 1000 && rc != 1; i++) {
		rc = shmbus_group_poll(g, keep_first, &m, 1);
		if (rc != 1)
			usleep(1000);
	}
	if (rc != 1)
		return 101;
	sb_group_hook = stop_extending;
	rc = shmbus_group_extend(g, &m.lease, 1000000);
	sb_group_hook = NULL;
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	return rc == 0 ? 0 : rc == -ESTALE ? 1 : 2;
}

/*
 * A keyed owner stopped inside its extend, after its look at the lane and
 * before its write of the deadline, for more than a term: the lane goes
 * to another member, which takes the record.  The extend, resumed, says
 * -ESTALE and leaves the new owner's term alone (it wrote its own short
 * deadline over it: the new owner lost the lane a millisecond later, its
 * ack -ESTALE, the record handed out again).
 */
Test(group_races, a_stale_keyed_extend_leaves_the_next_owners_term)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	shmbus_group *b;
	int st, rc = 0, got;
	pid_t p;

	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	ga.lease_ns = 300000000;
	b = shmbus_group_join(ch, "g", "b", &ga);
	cr_assert(b, "join: %s", strerror(errno));
	shmbus_group_leave(b);	/* the group starts before the message */
	book_open(1);
	produce(ch, 1, 1);
	p = th_spawn(stale_extender, NULL);
	cr_assert_eq(waitpid(p, &st, WUNTRACED), p);
	cr_assert(WIFSTOPPED(st), "the extender stopped in its extend");
	b = shmbus_group_join(ch, "g", "b", &ga);
	cr_assert(b, "join: %s", strerror(errno));
	/* The extender's term passes: the lane and its record come here. */
	for (int i = 0; i < 2000 && rc != 1; i++) {
		rc = shmbus_group_poll(b, keep_first, &m, 1);
		if (rc != 1)
			usleep(1000);
	}
	cr_assert_eq(rc, 1, "the lane came to the other member");
	cr_assert_eq(id_of(m.data, 8), 0);
	kill(p, SIGCONT);
	got = th_wait(p);
	cr_log_info("the stale extend: %s",
		    got == 0 ? "0" : got == 1 ? "-ESTALE" : "?");
	/* Well within the new owner's term; past the stale extend's. */
	usleep(20000);
	cr_assert_geq(shmbus_group_maintain(b), 0);
	rc = shmbus_group_ack(b, &m.lease);
	cr_assert_eq(rc, 0, "the new owner's ack: %s", strerror(-rc));
	cr_assert_eq(got, 1, "the stale extend said %d", got);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

/* A shared member that, once told, takes a batch, says so, and, told
 * again, acks it: killed as its ack has moved the group's floor (over
 * its batch and the later ones acked before), before the channel's slot
 * follows. */
static int shared_killed_floored(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *g = ch ? join_window(ch, "k", 8) : NULL;
	struct shmbus_lease l;

	(void)arg;
	if (!g)
		return 2;
	atomic_store(&rv->taking, 1);
	await(&rv->recording);
	if (shmbus_group_poll(g, keep_lease, &l, 64) <= 0)
		return 4;
	atomic_store(&rv->took, 1);
	for (int i = 0; i < 5000 && !atomic_load(&rv->took_id); i++)
		usleep(1000);
	sb_group_hook = killed_floored;
	shmbus_group_ack(g, &l);
	return 3;	/* not killed */
}

/* The same in a shared group: the first batch of a full ring is acked
 * last, and its member killed between the floor's move (to head) and the
 * slot's. */
Test(group_races, a_shared_slot_left_below_the_floor_is_raised)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 4096);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_group *b = join_window(ch, "b", 8);
	struct shmbus_group_msg m;
	uint64_t msg[2] = { 0, 0 };
	unsigned n = 0, got = 0;
	int st, rc = -EAGAIN;
	pid_t p;

	cr_assert(pub && b);
	rendezvous_open();
	p = th_spawn(shared_killed_floored, NULL);
	await(&rv->taking);
	while (shmbus_publish(pub, msg, sizeof(msg)) >= 0)
		n++;
	atomic_store(&rv->recording, 1);
	await(&rv->took);
	/* The rest, acked by b: the floor stays at the child's batch. */
	for (int i = 0; i < 64; i++)
		while (shmbus_group_poll(b, keep_first, &m, 64) > 0) {
			cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
			got++;
		}
	atomic_store(&rv->took_id, 1);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st), "the member was killed at its floor");
	for (int i = 0; i < 1000 && rc == -EAGAIN; i++) {
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == -EAGAIN) {
			shmbus_group_maintain(b);
			usleep(1000);
		}
	}
	cr_log_info("%u messages filled the ring, b had %u batches; publish "
		    "after: %d", n, got, rc);
	cr_assert_geq(rc, 0, "the producer still waits on the group's slot");
	shmbus_group_leave(b);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
}

/*
 * A ring full of a keyed group's messages; its member acks them all and
 * is killed between the floor's move and the slot's: the group has
 * nothing left to take, so no ack moves the floor again, and the
 * producer waited on the slot for good.  The next maintenance raises the
 * slot to the floor.
 */
Test(group_races, a_slot_left_below_the_floor_is_raised)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 4096);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct shmbus_group_attr ga;
	uint64_t m[2] = { 0, 0 };
	shmbus_group *g;
	unsigned n;
	int st, rc = -EAGAIN;
	pid_t p;

	cr_assert(pub);
	rendezvous_open();
	p = th_spawn(keyed_killed_floored, NULL);
	await(&rv->taking);
	n = fill(pub);
	atomic_store(&rv->recording, 1);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st), "the member was killed at its floor");
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	g = shmbus_group_join(ch, "g", "b", &ga);
	cr_assert(g, "join: %s", strerror(errno));
	for (int i = 0; i < 1000 && rc == -EAGAIN; i++) {
		rc = shmbus_publish_keyed(pub, 0, m, sizeof(m));
		if (rc == -EAGAIN) {
			shmbus_group_maintain(g);
			usleep(1000);
		}
	}
	cr_log_info("%u messages filled the ring; publish after: %d", n, rc);
	cr_assert_geq(rc, 0, "the producer still waits on the group's slot");
	shmbus_group_leave(g);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
}

/* A keyed member (1 lane, 3 deliveries at most) that takes a message and
 * is killed holding it (arg 1), or killed as soon as it has joined, the
 * lane given to it and nothing taken (arg 0). */
static int keyed_killed(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	struct shmbus_lease l;
	shmbus_group *g;

	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	ga.max_deliveries = 3;
	g = ch ? shmbus_group_join(ch, "g", "k", &ga) : NULL;
	if (!g)
		return 2;
	atomic_store(&rv->taking, 1);
	for (int i = 0; arg && i < 2000; i++) {
		if (shmbus_group_poll(g, keep_lease, &l, 1) == 1)
			break;
		usleep(1000);
	}
	raise(SIGKILL);
	return 3;
}

/*
 * A keyed lane's record is delivered once, its taker killed; then its lane
 * goes to three members in turn, each killed before it takes anything.
 * The record was delivered once only: it comes again, its second
 * delivery (each death counted a delivery that was the first taker's,
 * and the third made it poison, dropped unseen).
 */
Test(group_races, a_lane_given_to_members_that_take_nothing_counts_nothing)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_attr ga;
	struct shmbus_group_stats st;
	struct shmbus_group_msg m;
	shmbus_group *g;
	int rc = 0;
	pid_t p;

	book_open(1);
	rendezvous_open();
	p = th_spawn(keyed_killed, (void *)1);
	await(&rv->taking);
	produce(ch, 1, 1);
	cr_assert_eq(th_wait(p), 128 + SIGKILL);
	for (int k = 0; k < 3; k++)
		cr_assert_eq(th_wait(th_spawn(keyed_killed, NULL)),
			     128 + SIGKILL);
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	ga.max_deliveries = 3;
	g = shmbus_group_join(ch, "g", "b", &ga);
	cr_assert(g, "join: %s", strerror(errno));
	for (int i = 0; i < 1000 && rc == 0; i++) {
		rc = shmbus_group_poll(g, keep_first, &m, 1);
		if (rc == 0)
			usleep(1000);
	}
	shmbus_group_stats(g, &st);
	cr_log_info("poll: %d, deliveries %u, dropped %lu", rc,
		    rc == 1 ? m.deliveries : 0, (unsigned long)st.dropped);
	cr_assert_eq(rc, 1, "the record came again (dropped: %lu)",
		     (unsigned long)st.dropped);
	cr_assert_eq(m.deliveries, 2);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/*
 * Window 1: claims 0 and 1 share a slot.  Claim 0 (message A) is given
 * back; T looks for leases given back and is held after reading the floor
 * (0).  Meanwhile A is taken again and acked, claim 1 (message B) is won
 * by a member that dies, and the maintenance that records claim 1
 * AVAILABLE is held between its CAS and its seq, so the slot shows claim
 * 1's word beside claim 0's seq.  T must not take that word for claim 0:
 * it would deliver A a third time and ack claim 1 with it, losing B.
 */
Test(group_races, a_lease_given_back_is_never_taken_for_the_claim_after_it)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_msg m;
	uint8_t buf[64];
	shmbus_group *b;
	pid_t t, w, mt;
	uint64_t ids[4];
	unsigned n;
	int st;

	rendezvous_open();
	b = join_window_1(ch, "b");
	cr_assert(b);
	produce(ch, 1, 0);				/* A */
	cr_assert_gt(shmbus_group_read(b, buf, sizeof(buf), &m), 0);
	cr_assert_eq(shmbus_group_nack(b, &m.lease, 0), 0);
	t = th_spawn(take_held, NULL);
	await(&rv->taking);
	cr_assert(atomic_load(&rv->taking), "T never looked");
	cr_assert_gt(shmbus_group_read(b, buf, sizeof(buf), &m), 0);
	cr_assert_eq(id_of(buf, 0), 0);
	cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
	w = th_spawn(win_then_die_window, (void *)1);
	produce_from(ch, 1, 1, 0);			/* B */
	cr_assert_eq(waitpid(w, &st, 0), w);
	cr_assert(WIFSIGNALED(st), "the winner claimed B and died");
	mt = th_spawn(maintain_hooked, (void *)1);
	cr_assert_eq(th_wait(t), 0);
	cr_assert_eq(th_wait(mt), 0);
	cr_assert_eq(atomic_load(&rv->took), 1, "T was given message %lu "
		     "(claim 1's word taken for claim 0)",
		     (unsigned long)atomic_load(&rv->took_id));
	n = read_all(b, ids, 1);
	cr_assert_eq(n, 1, "B was never delivered");
	cr_assert_eq(ids[0], 1);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

static void stop_resolving(int where)
{
	if (where == SB_HOOK_RESOLVING)
		raise(SIGSTOP);
}

/* A member whose maintenance stops itself as it is about to record a
 * dead winner's claim, and stays (stopped, then alive) until killed. */
static int maintain_then_stop(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *g;

	(void)arg;
	g = ch ? join_window(ch, "t", 2) : NULL;
	if (!g)
		return 2;
	sb_group_hook = stop_resolving;
	shmbus_group_maintain(g);
	sb_group_hook = NULL;
	for (;;)
		pause();
}

static int keep_msg(const struct shmbus_group_msg *m, void *arg)
{
	*(struct shmbus_group_msg *)arg = *m;
	return 0;
}

/* Polls one message into *m and checks it is message `id`. */
static void take_id(shmbus_group *g, struct shmbus_group_msg *m, uint64_t id)
{
	int n = 0;

	for (int i = 0; i < 1000 && n == 0; i++) {
		shmbus_group_maintain(g);
		if ((n = shmbus_group_poll(g, keep_msg, m, 1)) == 0)
			usleep(1000);
	}
	cr_assert_eq(n, 1, "message %lu never came", (unsigned long)id);
	cr_assert_eq(id_of(m->data, 0), id);
}

/*
 * A maintenance decides to record a claim whose winner died, and stops
 * before it does (its lock is taken over after a second).  Meanwhile the
 * claim is recorded by another, acked, and the claim a window later is
 * taken and acked in the same slot.  When it resumes it must not record
 * the old claim over the new one: every message comes once, and the
 * floor reaches head.
 */
Test(group_races, a_maintenance_that_resumes_late_records_nothing_stale,
     .timeout = 60)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *p = join_window(ch, "p", 2);
	struct shmbus_group_stats st;
	struct shmbus_group_msg m, m1;
	pid_t w, t;
	int s;

	cr_assert(p);
	rendezvous_open();
	w = th_spawn(win_then_die_window, (void *)2);
	produce(ch, 1, 0);				/* claim 0, won, lost */
	cr_assert_eq(waitpid(w, &s, 0), w);
	cr_assert(WIFSIGNALED(s));
	t = th_spawn(maintain_then_stop, NULL);
	cr_assert_eq(waitpid(t, &s, WUNTRACED), t);
	cr_assert(WIFSTOPPED(s), "the maintenance stopped before recording");
	usleep(1200000);		/* its lock is a stopped holder's now */
	take_id(p, &m, 0);
	cr_assert_eq(shmbus_group_ack(p, &m.lease), 0);
	produce_from(ch, 1, 1, 0);
	take_id(p, &m1, 1);				/* claim 1, held */
	produce_from(ch, 2, 1, 0);
	take_id(p, &m, 2);				/* claim 2: slot 0 */
	cr_assert_eq(shmbus_group_ack(p, &m.lease), 0);
	kill(t, SIGCONT);
	usleep(200000);
	cr_assert_eq(shmbus_group_ack(p, &m1.lease), 0);
	produce_from(ch, 3, 3, 0);
	for (uint64_t id = 3; id < 6; id++) {
		take_id(p, &m, id);
		cr_assert_eq(m.deliveries, 1);
		cr_assert_eq(shmbus_group_ack(p, &m.lease), 0);
	}
	shmbus_group_maintain(p);
	shmbus_group_stats(p, &st);
	cr_assert_eq(st.floor, st.head, "floor %lu, head %lu",
		     (unsigned long)st.floor, (unsigned long)st.head);
	kill(t, SIGKILL);
	waitpid(t, NULL, 0);
	shmbus_group_leave(p);
	shmbus_channel_close(ch);
}

static int active_then_stop(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	uint8_t buf[64];
	shmbus_group *g;

	(void)arg;
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_SINGLE_ACTIVE;
	g = ch ? shmbus_group_join(ch, "g", "active", &ga) : NULL;
	if (!g)
		return 2;
	while (shmbus_group_read(g, buf, sizeof(buf), &m) <= 0)
		usleep(100);
	shmbus_group_ack(g, &m.lease);
	raise(SIGSTOP);
	return 0;
}

/* single_active: the active member stopped while holding nothing; the
 * standby takes over after a term. */
Test(group_races, a_stopped_active_member_is_replaced_after_a_term)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *anchor = join_as(ch, "anchor", SHMBUS_GROUP_SINGLE_ACTIVE,
				       50000000);
	struct shmbus_group_msg m;
	shmbus_group *b;
	uint8_t buf[64];
	uint64_t got = 0;
	pid_t p;
	int st;

	book_open(10);
	shmbus_group_leave(anchor);
	p = th_spawn(active_then_stop, NULL);
	usleep(50000);
	b = join_as(ch, "standby", SHMBUS_GROUP_SINGLE_ACTIVE, 0);
	produce(ch, 1, 0);
	cr_assert_eq(waitpid(p, &st, WUNTRACED), p);
	cr_assert(WIFSTOPPED(st));
	produce_from(ch, 1, 9, 0);
	for (int i = 0; i < 4000 && got < 9; i++) {
		if (shmbus_group_read(b, buf, sizeof(buf), &m) > 0) {
			cr_assert_eq(id_of(buf, 0), got + 1);
			cr_assert_eq(shmbus_group_ack(b, &m.lease), 0);
			got++;
		} else {
			usleep(500);
		}
	}
	cr_assert_eq(got, 9, "the standby took over");
	kill(p, SIGKILL);
	th_wait(p);
	shmbus_group_leave(b);
	shmbus_channel_close(ch);
}

/* keyed: a nack names a record held; one already acknowledged is no
 * longer held (-ESTALE, as a shared lease acked). */
Test(group_races, keyed_refuses_to_nack_what_was_acknowledged)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "k", SHMBUS_GROUP_KEYED, 0);
	struct shmbus_lease l[3];
	int n = 0;

	book_open(3);
	produce(ch, 3, 1);	/* one key: all in one lane */
	for (int i = 0; i < 100 && n < 3; i++)
		n += shmbus_group_poll(g, keep_lease, &l[n], 1);
	cr_assert_eq(n, 3);
	cr_assert_eq(shmbus_group_ack(g, &l[1]), 0);	/* covers l[0] */
	/* l[2] is still held: l[0] is not. */
	cr_assert_eq(shmbus_group_nack(g, &l[0], 0), -ESTALE);
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &l[0], 1), 0,
		     "nothing delivered again");
	cr_assert_eq(shmbus_group_ack(g, &l[2]), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/* keyed: a nack gives back the records delivered after it too; their
 * leases are no longer held (-ESTALE from ack, nack and extend alike)
 * until they are delivered again. */
Test(group_races, keyed_leases_a_nack_gave_back_are_stale)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "k", SHMBUS_GROUP_KEYED, 0);
	struct shmbus_lease l[2], again;
	int n = 0;

	book_open(2);
	produce(ch, 2, 1);	/* one key: both in one lane */
	for (int i = 0; i < 100 && n < 2; i++)
		n += shmbus_group_poll(g, keep_lease, &l[n], 1);
	cr_assert_eq(n, 2);
	cr_assert_eq(shmbus_group_nack(g, &l[0], 0), 0);
	cr_assert_eq(shmbus_group_extend(g, &l[1], 0), -ESTALE);
	cr_assert_eq(shmbus_group_nack(g, &l[1], 0), -ESTALE);
	cr_assert_eq(shmbus_group_ack(g, &l[1]), -ESTALE);
	n = 0;
	for (int i = 0; i < 100 && n < 2; i++)
		n += shmbus_group_poll(g, keep_lease, &again, 1);
	cr_assert_eq(n, 2, "both delivered again");
	cr_assert_eq(shmbus_group_ack(g, &again), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/* keyed: an ack past everything delivered names nothing, and forgets
 * nothing the member holds. */
Test(group_races, keyed_an_ack_past_what_was_delivered_changes_nothing)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "k", SHMBUS_GROUP_KEYED, 0);
	struct shmbus_lease l[3], bad;
	int n = 0;

	book_open(3);
	produce(ch, 3, 1);	/* one key: all in one lane */
	for (int i = 0; i < 100 && n < 3; i++)
		n += shmbus_group_poll(g, keep_lease, &l[n], 1);
	cr_assert_eq(n, 3);
	bad = l[2];
	bad.w[2] += 1 << 20;
	cr_assert_eq(shmbus_group_ack(g, &bad), -EINVAL);
	cr_assert_eq(shmbus_group_nack(g, &l[0], 0), 0, "the three are still "
		     "held");
	for (int i = 0, k = 0; i < 100 && k < 3; i++)
		k += shmbus_group_poll(g, keep_lease, &l[k], 1);
	cr_assert_eq(shmbus_group_ack(g, &l[2]), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

struct flipper {
	struct shmbus_group_hdr *h;
	_Atomic int stop;
};

static void *flip(void *arg)
{
	struct flipper *f = arg;

	while (!atomic_load(&f->stop)) {
		__atomic_store_n(&f->h->window, 65536u, __ATOMIC_RELAXED);
		__atomic_store_n(&f->h->window, 1u, __ATOMIC_RELAXED);
	}
	return NULL;
}

/* A hostile member rewrites the group's window while others map and
 * maintain it: errors, never a crash or a read out of bounds. */
Test(group_races, a_window_rewritten_under_a_reader_is_never_trusted_twice)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_channel *other = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	struct flipper f = { 0 };
	shmbus_group *g;
	char path[512];
	pthread_t t;
	int fd;

	shmbus_group_attr_init(&ga);
	ga.window = 1;		/* the smallest file */
	g = shmbus_group_join(ch, "g", "g0", &ga);
	cr_assert(g && other);
	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	f.h = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(f.h != MAP_FAILED);
	f.h->claim_seq = 65536;
	pthread_create(&t, NULL, flip, &f);
	/* As shmbusd maintains it: a fresh map of the file each time. */
	for (uint64_t end = th_now_ns() + 1000000000; th_now_ns() < end;)
		sb_group_maintain_file(other, dir, "g", NULL, NULL);
	atomic_store(&f.stop, 1);
	pthread_join(t, NULL);
	f.h->window = 1;
	f.h->claim_seq = 0;
	munmap(f.h, 4096);
	close(fd);
	shmbus_group_leave(g);
	shmbus_channel_close(other);
	shmbus_channel_close(ch);
}

/* Time from the application is added saturating: a delay or a term near
 * the 64-bit limit means "for ever", never an overflow. */
Test(group_races, huge_delays_and_terms_saturate)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "g0", SHMBUS_GROUP_SHARED, 0);
	struct shmbus_group_attr ga;
	struct shmbus_lease l;

	book_open(2);
	produce(ch, 2, 0);
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &l, 1), 1);
	cr_assert_eq(shmbus_group_extend(g, &l, INT64_MAX), 0);
	cr_assert_eq(shmbus_group_nack(g, &l, INT64_MAX), 0);
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &l, 1), 1);
	cr_assert_eq(shmbus_group_ack(g, &l), 0);
	/* the nacked one waits "for ever": nothing more now */
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &l, 1), 0);
	cr_assert_eq(shmbus_group_wait(g, INT64_MAX / 2 + 1) == 0 ||
		     shmbus_group_wait(g, 0) == -ETIMEDOUT, 1);
	shmbus_group_attr_init(&ga);
	ga.lease_ns = INT64_MAX;	/* more than a day */
	cr_assert_null(shmbus_group_join(ch, "other", "x", &ga));
	cr_assert_eq(errno, EINVAL);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/* Deleting a group: refused while a member lives, then its hold on the
 * producers goes with it. */
Test(group_races, a_deleted_group_no_longer_holds_the_producer)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 12);
	shmbus_group *g = join_as(ch, "m", SHMBUS_GROUP_SHARED, 0);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	uint64_t v = 0;
	char path[512];
	int rc;

	cr_assert(p);
	/* Nobody acks: the group's floor holds the ring until it is full. */
	while ((rc = shmbus_publish(p, &v, sizeof(v))) == 0)
		v++;
	cr_assert_eq(rc, -EAGAIN, "held back by the group");
	cr_assert_eq(shmbus_group_delete(ch, "g"), -EBUSY);
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	cr_assert_neq(access(path, F_OK), 0, "the file is gone");
	cr_assert_eq(shmbus_publish(p, &v, sizeof(v)), 0,
		     "the producer is free again");
	cr_assert_eq(shmbus_group_delete(ch, "g"), -ENOENT);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

static void die(void)
{
	raise(SIGKILL);
}

static int create_then_die(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");

	(void)arg;
	sb_group_create_hook = die;
	return ch && shmbus_group_join(ch, "fresh", "m", NULL) ? 0 : 3;
}

/* A process killed while creating a group, holding the channel's slot
 * before the group's file is in place: the slot is released (here by the
 * producer it holds back, as in direct mode), not lost for good. */
Test(group_races, a_creator_killed_before_its_group_file_leaves_no_slot)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 12);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	uint64_t v = 0;
	char path[512];
	int rc = 0, i;

	cr_assert(p);
	cr_assert_eq(th_wait(th_spawn(create_then_die, NULL)), 128 + SIGKILL);
	snprintf(path, sizeof(path), "%s/.ch@fresh.group", dir);
	cr_assert_neq(access(path, F_OK), 0, "no group file");
	/* More than a ring's worth: only a released slot lets them all in. */
	for (i = 0; i < 5000 && v < 1000; i++) {
		rc = shmbus_publish(p, &v, sizeof(v));
		if (rc == 0)
			v++;
		else
			usleep(1000);
	}
	cr_assert_eq(v, 1000, "the producer was held back for good (%d)", rc);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
}

/* A thread cancelled while it makes a group's file (here at a
 * cancellation point the creation's hook adds, as open() is one): the
 * cancel waits for the join to return, so the process's lock on making
 * files is not left held and another thread can make a group. */
static pthread_t victim;
static shmbus_group *_Atomic victim_joined;

static void cancel_me(void)
{
	if (pthread_equal(pthread_self(), victim)) {
		pthread_cancel(victim);
		pthread_testcancel();
	}
}

static void *join_cancelled(void *arg)
{
	atomic_store(&victim_joined,
		     shmbus_group_join(arg, "cancelled", "m", NULL));
	pthread_testcancel();
	return NULL;
}

Test(group_races, a_thread_cancelled_making_a_group_leaves_no_lock,
     .timeout = 20)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 12);
	shmbus_group *g;
	void *ret;

	sb_group_create_hook = cancel_me;
	cr_assert_eq(pthread_create(&victim, NULL, join_cancelled, ch), 0);
	cr_assert_eq(pthread_join(victim, &ret), 0);
	sb_group_create_hook = NULL;
	cr_assert_eq(ret, PTHREAD_CANCELED);
	cr_assert(atomic_load(&victim_joined),
		  "the cancel acted after the join returned, which it did");
	/* Hangs (the suite's timeout) if the lock was left held. */
	g = shmbus_group_join(ch, "another", "m", NULL);
	cr_assert(g, "%s", strerror(errno));
	shmbus_group_leave(g);
	shmbus_group_leave(atomic_load(&victim_joined));
	shmbus_channel_close(ch);
}

/* The same death just after the file is in place keeps the group whole:
 * the repair finds the file and leaves the slot to the group. */
static int link_then_die(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;

	(void)arg;
	shmbus_group_attr_init(&ga);
	if (!ch)
		return 3;
	/* Made whole first, then the slot made to name us again, as if we
	 * had died between the link and sb_slot_group_made(). */
	if (!shmbus_group_join(ch, "whole", "m", &ga))
		return 4;
	die();
	return 0;
}

Test(group_races, a_group_whose_file_is_in_place_keeps_its_slot)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 12);
	struct shmbus_group_stats st;
	shmbus_group *g;
	pid_t pid;
	struct shmbus_sub_slot *slots;
	uint32_t slot = SHMBUS_MAX_SLOTS;

	pid = th_spawn(link_then_die, NULL);
	cr_assert_eq(th_wait(pid), 128 + SIGKILL);
	slots = ch->subs;
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++)
		if ((uint32_t)slots[i].owner == SHMBUS_SLOT_GROUP)
			slot = i;
	cr_assert_lt(slot, SHMBUS_MAX_SLOTS);
	/* Name the dead creator again: what a death before the settle
	 * leaves. */
	slots[slot].owner = (uint64_t)pid << 32 | SHMBUS_SLOT_GROUP;
	cr_assert_eq(sb_repair_sub(ch, slot, slots[slot].owner,
				   (uint32_t)getpid()), 0);
	cr_assert_eq(slots[slot].owner, SHMBUS_SLOT_GROUP,
		     "the group keeps its slot, without the pid");
	g = shmbus_group_join(ch, "whole", "n", NULL);
	cr_assert(g, "the group is whole: %s", strerror(errno));
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.members, 1);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/* ------------------------------------- a hostile member's file writes */

/* The group's file, mapped as any member may map it. */
static struct shmbus_group_hdr *map_file(size_t *len)
{
	char path[512];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	fd = open(path, O_RDWR);
	cr_assert(fd >= 0 && fstat(fd, &st) == 0, "%s", path);
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, 0);
	close(fd);
	cr_assert(p != MAP_FAILED);
	*len = (size_t)st.st_size;
	return p;
}

static shmbus_channel *other_channel(const char *name,
				     enum shmbus_producers prod)
{
	struct shmbus_channel_attr ca;
	shmbus_channel *c;

	shmbus_channel_attr_init(&ca);
	ca.capacity = 1 << 16;
	ca.producers = prod;
	c = shmbus_channel_create(dir, name, &ca, 0);
	cr_assert(c, "create %s", name);
	return c;
}

/* A name written into the file's dead-letter field: an honest member
 * opens no publisher there until a poison message needs one, and then
 * only on a multi-producer channel; a single producer's channel is never
 * taken (its poison is dropped and counted). */
Test(group_races, the_files_dead_letter_name_takes_no_producers_place)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_channel *other = other_channel("other", SHMBUS_SINGLE_PRODUCER);
	struct shmbus_group_stats st;
	struct shmbus_group_attr ga;
	struct shmbus_lease lease;
	struct shmbus_group_hdr *h;
	shmbus_group *g;
	shmbus_pub *p;
	size_t len;

	shmbus_group_attr_init(&ga);
	ga.window = 8;
	ga.max_deliveries = 1;
	g = shmbus_group_join(ch, "g", "honest", &ga);
	cr_assert(g);
	h = map_file(&len);
	strcpy(h->dead_letter, "other");
	produce(ch, 4, 0);
	/* Maintenance with nothing poisoned: the channel is not touched. */
	cr_assert_eq(shmbus_group_maintain(g), 0);
	p = shmbus_pub_open(other, NULL);
	cr_assert(p, "the other channel's producer locked out: %s",
		  strerror(errno));
	/* A poison message, while that channel's producer is there: the
	 * member does not take its place; the message is dropped. */
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &lease, 1), 1);
	cr_assert_eq(shmbus_group_nack(g, &lease, 0), 0);
	for (int i = 0; i < 100 && (shmbus_group_stats(g, &st), !st.dropped);
	     i++) {
		/* Delivered again (its delivery count decides), or found
		 * poisoned and handed to the maintenance. */
		if (shmbus_group_poll(g, keep_lease, &lease, 1) == 1)
			shmbus_group_nack(g, &lease, 0);
		cr_assert_geq(shmbus_group_maintain(g), 0);
		usleep(2000);
	}
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.dead_lettered, 0);
	cr_assert_eq(st.dropped, 1, "dropped %llu",
		     (unsigned long long)st.dropped);
	shmbus_pub_close(p);
	p = shmbus_pub_open(other, NULL);
	cr_assert(p, "the member holds the other channel's producer role");
	shmbus_pub_close(p);
	munmap(h, len);
	shmbus_group_leave(g);
	shmbus_channel_close(other);
	shmbus_channel_close(ch);
}

static shmbus_pub *the_dl;

static int count_any(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	++*(int *)arg;
	return 0;
}

static shmbus_pub *dl_given(const char *name, void *ctx, bool *drop)
{
	(void)name;
	(void)ctx;
	(void)drop;
	return the_dl;
}

/* A poison lease whose range runs past head (the file is any member's to
 * write): dropped and counted once, never copied to the dead-letter
 * channel over and over. */
Test(group_races, a_poison_lease_past_head_is_dropped_once)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_channel *dlch = other_channel("dl", SHMBUS_MULTI_PRODUCER);
	shmbus_sub *dsub = shmbus_sub_open(dlch, NULL);
	struct shmbus_group_stats st;
	struct shmbus_lease_slot *l;
	struct shmbus_lease lease;
	struct shmbus_group_hdr *h;
	shmbus_group *g;
	int got = 0;
	size_t len;
	uint64_t c;

	cr_assert(dsub);
	the_dl = shmbus_pub_open(dlch, NULL);
	cr_assert(the_dl);
	g = join_as(ch, "honest", SHMBUS_GROUP_SHARED, 0);
	h = map_file(&len);
	strcpy(h->dead_letter, "dl");
	produce(ch, 20, 0);
	cr_assert_eq(shmbus_group_poll(g, keep_lease, &lease, 1), 1);
	l = (void *)((uint8_t *)h + SHMBUS_GROUP_LEASES_OFF);
	c = l[0].ctl;
	l[0].end = l[0].start + (1u << 20);
	__atomic_store_n(&l[0].ctl, gctl(SHMBUS_LEASE_POISON, SHMBUS_NO_MEMBER,
					 5, gctl_gen(c) + 1), __ATOMIC_RELEASE);
	for (int scan = 0; scan < 3; scan++) {
		cr_assert_geq(sb_group_maintain_file(ch, dir, "g", dl_given,
						     NULL), 0);
		shmbus_poll(dsub, count_any, &got, 1000);
	}
	cr_assert_eq(got, 0, "%d copies in the dead-letter channel", got);
	cr_assert_eq(gctl_state(l[0].ctl), SHMBUS_LEASE_DEAD);
	shmbus_group_stats(g, &st);
	cr_assert_eq(st.dropped, 1);
	munmap(h, len);
	shmbus_group_leave(g);
	shmbus_pub_close(the_dl);
	shmbus_sub_close(dsub);
	shmbus_channel_close(dlch);
	shmbus_channel_close(ch);
}

/* A lane's deadline written as the most negative time: the statistics
 * saturate (UBSan, under `make sanitize`, fails a subtraction that
 * wraps). */
Test(group_races, a_hostile_lane_deadline_saturates_the_statistics)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_stats st;
	struct shmbus_group_hdr *h;
	struct shmbus_lane *ln;
	shmbus_group *g;
	size_t len;

	g = join_as(ch, "honest", SHMBUS_GROUP_KEYED, 0);
	h = map_file(&len);
	ln = (void *)((uint8_t *)h + SHMBUS_GROUP_LANES_OFF);
	ln[0].next = ln[0].acked + 16;
	ln[0].deadline = INT64_MIN;
	cr_assert_eq(shmbus_group_stats(g, &st), 0);
	cr_assert_eq(st.in_flight, 1);
	munmap(h, len);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/* A FIFO where a group's file would be: refused at once, never waited
 * on (opening a FIFO to read waits for a writer). */
Test(group_races, a_fifo_named_as_a_group_file_is_refused_at_once)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct sb_group_state gs;
	char path[512];

	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	cr_assert_eq(mkfifo(path, 0666), 0);
	alarm(5);
	cr_assert_null(shmbus_group_join(ch, "g", "m", NULL));
	cr_assert_eq(errno, EBADMSG, "join: %s", strerror(errno));
	cr_assert_eq(sb_group_state_get(ch, dir, "g", &gs), -EBADMSG);
	alarm(0);
	unlink(path);
	shmbus_channel_close(ch);
}

/* ------------------------------------- a maintenance replaced meanwhile */

/* What the processes of the two tests below say to each other. */
static struct maint_sh {
	_Atomic int step, inside, overlap, ack;
} *ms;

static void maint_sh_open(void)
{
	ms = mmap(NULL, sizeof(*ms), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(ms != MAP_FAILED);
	memset(ms, 0, sizeof(*ms));
}

static void step_wait(int s)
{
	while (atomic_load(&ms->step) < s)
		usleep(100);
}

static void stop_judged(int where)
{
	if (where == SB_HOOK_JUDGED) {
		sb_group_hook = NULL;
		raise(SIGSTOP);
	}
}

/* Inside the lock (past its verdicts) until the test's step 3. */
static void stay_judged(int where)
{
	if (where != SB_HOOK_JUDGED)
		return;
	if (atomic_fetch_add(&ms->inside, 1) > 0)
		atomic_fetch_add(&ms->overlap, 1);
	atomic_store(&ms->step, 2);
	step_wait(3);
	atomic_fetch_sub(&ms->inside, 1);
}

static void count_judged(int where)
{
	if (where != SB_HOOK_JUDGED)
		return;
	if (atomic_fetch_add(&ms->inside, 1) > 0)
		atomic_fetch_add(&ms->overlap, 1);
	atomic_fetch_sub(&ms->inside, 1);
}

static int maintain_with(void *hook)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *g = ch ? join_window(ch, "m", 8) : NULL;

	if (!g)
		return 2;
	sb_group_hook = (void (*)(int))hook;
	shmbus_group_maintain(g);
	sb_group_hook = NULL;
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	return 0;
}

/*
 * A maintenance stopped inside its lock for more than a second is
 * replaced (by design); when it resumes and finishes, it gives back only
 * a lock that is still its own: a third maintenance must not get in while
 * the replacement is still inside.
 */
Test(group_races, a_replaced_maintenance_leaves_its_replacement_the_lock)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	pid_t a, b, c;
	int st;

	maint_sh_open();
	shmbus_group_leave(join_window(ch, "maker", 8));
	a = th_spawn(maintain_with, (void *)stop_judged);
	cr_assert_eq(waitpid(a, &st, WUNTRACED), a);
	cr_assert(WIFSTOPPED(st), "A did not stop in its maintenance");
	usleep(1100000);	/* A holds the lock, stopped: replaceable */
	b = th_spawn(maintain_with, (void *)stay_judged);
	step_wait(2);		/* B inside */
	kill(a, SIGCONT);
	cr_assert_eq(th_wait(a), 0);
	c = th_spawn(maintain_with, (void *)count_judged);
	cr_assert_eq(th_wait(c), 0);
	atomic_store(&ms->step, 3);
	cr_assert_eq(th_wait(b), 0);
	cr_assert_eq(atomic_load(&ms->overlap), 0, "two maintenances inside "
		     "at once");
	shmbus_channel_close(ch);
}

/*
 * A maintenance judges a dead member's record and stops; its replacement
 * gives the dead member's lease back and frees its record; a new member
 * takes that record and a lease.  The old maintenance resumes: its
 * verdict was on another member, and the new member's lease stays its
 * own (its ack succeeds well within its term).
 */
static int lease_then_wait(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_group *g = ch ? join_window(ch, arg, 8) : NULL;
	struct shmbus_lease l;

	if (!g || shmbus_group_poll(g, keep_lease, &l, 1) != 1)
		return 2;
	atomic_fetch_add(&ms->step, 1);
	step_wait(10);
	atomic_store(&ms->ack, shmbus_group_ack(g, &l));
	atomic_store(&ms->step, 11);
	pause();
	return 0;
}

Test(group_races, a_replaced_maintenance_takes_no_lease_of_a_new_member)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	pid_t m1, p, m2, n;
	int st;

	maint_sh_open();
	shmbus_group_leave(join_window(ch, "maker", 8));
	produce(ch, 8, 0);
	/* M1 holds a record first; then P, which leases one and dies. */
	m1 = fork();
	if (m1 == 0) {
		shmbus_channel *c = shmbus_channel_open(dir, "ch");
		shmbus_group *g = c ? join_window(c, "M1", 8) : NULL;

		if (!g)
			_exit(2);
		atomic_store(&ms->step, 1);
		step_wait(3);
		sb_group_hook = stop_judged;
		shmbus_group_maintain(g);
		_exit(0);
	}
	step_wait(1);
	p = th_spawn(lease_then_wait, "P");
	step_wait(2);
	kill(p, SIGKILL);
	waitpid(p, &st, 0);
	atomic_store(&ms->step, 3);
	cr_assert_eq(waitpid(m1, &st, WUNTRACED), m1);
	cr_assert(WIFSTOPPED(st), "M1 did not stop in its maintenance");
	usleep(1100000);	/* M1 holds the lock, stopped: replaceable */
	m2 = th_spawn(maintain_with, NULL);
	cr_assert_eq(th_wait(m2), 0);
	n = th_spawn(lease_then_wait, "N");
	step_wait(4);
	kill(m1, SIGCONT);
	cr_assert_eq(th_wait(m1), 0);
	atomic_store(&ms->step, 10);
	step_wait(11);
	cr_assert_eq(atomic_load(&ms->ack), 0, "the new member's ack: %s",
		     strerror(-atomic_load(&ms->ack)));
	kill(n, SIGKILL);
	waitpid(n, &st, 0);
	shmbus_channel_close(ch);
}

/*
 * Two removers at once: R1 sets the group's deleted flag, sees a live
 * member and stops before it clears the flag; the member leaves; R2
 * comes.  R1 clears the flag and gives up (-EBUSY), and a new member
 * joins.  Whatever R2 does, a member that joined successfully keeps its
 * group: its file stays, and a remove while it is joined is -EBUSY.
 */
static void stop_removing(int where)
{
	if (where == SB_HOOK_REMOVE_SEEN) {
		sb_group_hook = NULL;
		raise(SIGSTOP);
	}
}

static int remove_stopping(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	int rc;

	(void)arg;
	if (!ch)
		return 9;
	sb_group_hook = stop_removing;
	rc = shmbus_group_delete(ch, "g");
	shmbus_channel_close(ch);
	return rc == 0 ? 0 : rc == -EBUSY ? 1 : rc == -ENOENT ? 2 : 8;
}

Test(group_races, a_remover_never_removes_a_group_under_a_new_member)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *j1 = join_window(ch, "j1", 8), *j2;
	char path[PATH_MAX];
	bool r2_stopped = false, r2_done = false;
	struct stat sb;
	pid_t r1, r2;
	int st, r2_rc = -1;

	cr_assert_eq(sb_group_path(path, sizeof(path), dir, "ch", "g"), 0);
	r1 = th_spawn(remove_stopping, NULL);
	cr_assert_eq(waitpid(r1, &st, WUNTRACED), r1);
	cr_assert(WIFSTOPPED(st), "R1 did not stop at the members' look");
	shmbus_group_leave(j1);
	r2 = th_spawn(remove_stopping, NULL);
	/* R2 stops at its own look, or waits for R1's turn to end (and may
	 * give up waiting: -EBUSY). */
	for (int i = 0; i < 50 && !r2_stopped && !r2_done; i++) {
		if (waitpid(r2, &st, WUNTRACED | WNOHANG) == r2) {
			r2_stopped = WIFSTOPPED(st);
			r2_done = !r2_stopped;
			if (r2_done)
				r2_rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
		usleep(1000);
	}
	kill(r1, SIGCONT);
	cr_assert_eq(th_wait(r1), 1, "R1 saw a live member: -EBUSY");
	struct shmbus_group_attr ga;

	shmbus_group_attr_init(&ga);
	ga.window = 8;
	j2 = shmbus_group_join(ch, "g", "j2", &ga);
	cr_assert(j2 || errno == EIDRM, "join: %s", strerror(errno));
	if (!r2_done) {
		while (!r2_stopped && !r2_done) {
			cr_assert_eq(waitpid(r2, &st, WUNTRACED), r2);
			r2_stopped = WIFSTOPPED(st);
			r2_done = !r2_stopped;
			if (r2_done)
				r2_rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
		}
		if (r2_stopped) {
			kill(r2, SIGCONT);
			r2_rc = th_wait(r2);
		}
	}
	if (j2) {
		cr_assert_eq(stat(path, &sb), 0, "the group's file was removed "
			     "under a joined member (R2 returned %d)", r2_rc);
		cr_assert_eq(r2_rc, 1, "R2: %d", r2_rc);
		cr_assert_eq(shmbus_group_delete(ch, "g"), -EBUSY);
		shmbus_group_leave(j2);
	} else {
		cr_assert(r2_rc == 0 || r2_rc == 1, "R2: %d", r2_rc);
	}
	shmbus_channel_close(ch);
}

/* --------------------------------- the group's cursor slot written over */

struct took {
	size_t off;		/* of the id in the payload (keyed: 8) */
	uint64_t next;		/* the id expected next */
	bool bad;
	struct shmbus_lease l[64];
	int n;
};

static int take_in_order(const struct shmbus_group_msg *m, void *arg)
{
	struct took *t = arg;
	uint64_t id;

	memcpy(&id, (const uint8_t *)m->data + t->off, 8);
	t->bad |= id != t->next++;
	t->l[t->n++] = m->lease;
	return 0;
}

/*
 * A write into the control file puts a group's cursor slot (its floor,
 * which holds the producers of a block channel) past head.  Producers
 * must not take that for "nothing held": they hold as at a full ring
 * until the group's maintenance puts its floor back, and the members
 * get every message, in order, none lost.
 */
static void slot_past_head(enum shmbus_group_mode mode)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "m", mode, 0);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	struct shmbus_group_stats st;
	struct took t = { .off = mode == SHMBUS_GROUP_KEYED ? 8 : 0 };
	uint64_t n = 0, m[2] = { 0, 0 };
	int rc;

	cr_assert(p);
	store_relaxed64(&ch->subs[g->slot].pos, UINT64_MAX);
	for (;;) {
		m[0] = n;
		rc = mode == SHMBUS_GROUP_KEYED
			     ? shmbus_publish_keyed(p, 1, m, sizeof(m))
			     : shmbus_publish(p, m, sizeof(m));
		if (rc == -EAGAIN)
			break;
		cr_assert_geq(rc, 0, "publish: %d", rc);
		cr_assert_lt(++n, 100000, "the producer laps the group");
	}
	cr_assert_leq(load_relaxed64(&ch->pl->head), ch->cap,
		      "the producer passed a ring it did not hold");
	for (int i = 0; i < 100000 && t.next < n; i++) {
		t.n = 0;
		rc = shmbus_group_poll(g, take_in_order, &t, 64);
		cr_assert_geq(rc, 0, "poll: %d", rc);
		for (int k = 0; k < t.n; k++)
			cr_assert_eq(shmbus_group_ack(g, &t.l[k]), 0);
		shmbus_group_maintain(g);
	}
	cr_assert_eq(t.next, n, "%lu of %lu delivered", (unsigned long)t.next,
		     (unsigned long)n);
	cr_assert_not(t.bad, "out of order");
	cr_assert_eq(shmbus_group_stats(g, &st), 0);
	cr_assert_eq(st.lost, 0);
	cr_assert_leq(load_relaxed64(&ch->subs[g->slot].pos),
		      load_relaxed64(&ch->pl->head), "the slot is back");
	m[0] = n;
	cr_assert_geq(mode == SHMBUS_GROUP_KEYED
			      ? shmbus_publish_keyed(p, 1, m, sizeof(m))
			      : shmbus_publish(p, m, sizeof(m)), 0,
		      "the producer goes on");
	shmbus_pub_close(p);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

Test(group_races, a_shared_groups_slot_past_head_holds_producers)
{
	slot_past_head(SHMBUS_GROUP_SHARED);
}

Test(group_races, a_keyed_groups_slot_past_head_holds_producers)
{
	slot_past_head(SHMBUS_GROUP_KEYED);
}

/* ------------------------------------- deleted groups and removers' flags */

/*
 * A handle on a group mapped before the group was deleted (a joiner that
 * then finds it deleted and leaves, say) maintains it: it writes nothing
 * into the channel's slot the group had, which a subscriber took since.
 */
Test(group_races, a_deleted_groups_old_handle_writes_no_slot)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = join_as(ch, "m", SHMBUS_GROUP_KEYED, 0);
	struct shmbus_sub_attr sa;
	struct took t = { .off = 8 };
	struct shmbus_group *stale;
	shmbus_sub *hold, *s;
	uint32_t slot = g->slot;
	uint64_t at;
	int rc;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	hold = shmbus_sub_open(ch, &sa);	/* holds position 0 */
	cr_assert(hold);
	produce(ch, 20, 1);
	for (int i = 0; i < 1000 && t.next < 20; i++) {
		t.n = 0;
		cr_assert_geq(shmbus_group_poll(g, take_in_order, &t, 64), 0);
		for (int k = 0; k < t.n; k++)
			cr_assert_eq(shmbus_group_ack(g, &t.l[k]), 0);
	}
	cr_assert_eq(t.next, 20);
	cr_assert_not(t.bad);
	shmbus_group_maintain(g);
	cr_assert_gt(load_relaxed64(&g->g->floor_pos), 0);
	stale = sb_group_open_map(ch, dir, "g", false, &rc);
	cr_assert(stale, "%s", strerror(-rc));
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	s = shmbus_sub_open(ch, &sa);	/* the group's slot, at 0 */
	cr_assert(s);
	cr_assert_eq(s->slot, &ch->subs[slot], "the subscriber took another "
		     "slot");
	at = load_relaxed64(&ch->subs[slot].pos);
	sb_group_maintain_unjoined(stale);
	cr_assert_lt(sb_group_maintain_direct(stale), 0);
	cr_assert_eq(load_relaxed64(&ch->subs[slot].pos), at,
		     "a deleted group's handle moved a subscriber's cursor");
	sb_group_unmap(stale);
	shmbus_sub_close(s);
	shmbus_sub_close(hold);
	shmbus_channel_close(ch);
}

/* In the maintenance, once it has judged the members: a process of its
 * own deletes the group (direct mode), then a subscriber opens at the
 * oldest held position. */
static shmbus_channel *pass_ch;
static shmbus_sub *pass_sub;
static int pass_delete = -1;

static int delete_g(void *arg)
{
	int rc = shmbus_group_delete(arg, "g");

	return rc == 0 ? 0 : rc == -EBUSY ? 1 : 2;
}

static void remove_in_the_pass(int where)
{
	struct shmbus_sub_attr sa;

	if (where != SB_HOOK_JUDGED || pass_sub)
		return;
	sb_group_hook = NULL;
	pass_delete = th_wait(th_spawn(delete_g, pass_ch));
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	pass_sub = shmbus_sub_open(pass_ch, &sa);
}

/*
 * shmbusd's maintenance of a group (a kept mapping, no member) under way
 * while a process in direct mode deletes the group, and a subscriber
 * takes the channel's slot the group gave back: the pass moves the
 * group's floor (it drops a poison record) and must not write it into
 * the new subscriber's slot (it did: the removal did not wait for the
 * pass, and the subscriber's slot said it had read a record it had not,
 * so the producers could write over it).  The removal waits for the pass,
 * or gives up (-EBUSY).
 */
Test(group_races, a_removal_waits_for_the_daemons_maintenance)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_attr ga;
	struct shmbus_sub_attr sa;
	struct shmbus_group_msg m;
	struct shmbus_group *kept;
	shmbus_sub *hold;
	shmbus_group *a;
	int rc;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	hold = shmbus_sub_open(ch, &sa);	/* holds position 0 */
	cr_assert(hold);
	shmbus_group_attr_init(&ga);
	ga.mode = SHMBUS_GROUP_KEYED;
	ga.lanes = 1;
	ga.max_deliveries = 1;
	a = shmbus_group_join(ch, "g", "a", &ga);
	cr_assert(a, "join: %s", strerror(errno));
	book_open(2);
	produce(ch, 2, 1);
	kept = sb_group_keep(ch, dir, "g", &rc);
	cr_assert(kept, "%s", strerror(-rc));
	cr_assert_eq(shmbus_group_poll(a, keep_first, &m, 1), 1);
	/* Record 0 nacked once: poison, for the next maintenance to drop
	 * (not the member's: we hold the maintenance's lock meanwhile). */
	cr_assert(sb_group_maint_trylock(kept, SB_MAINT_STUCK_NS));
	cr_assert_eq(shmbus_group_nack(a, &m.lease, 0), 0);
	cr_assert_eq(shmbus_group_poll(a, keep_first, &m, 1), 0);
	shmbus_group_leave(a);
	sb_group_maint_release(kept);
	cr_assert_eq(gctl_state(load_relaxed64(&kept->lanes[0].ctl)),
		     SHMBUS_LANE_POISON);
	cr_assert_eq(load_relaxed64(&kept->g->floor_pos), 0);
	pass_ch = ch;
	sb_group_hook = remove_in_the_pass;
	rc = sb_group_maintain_kept(kept, NULL, NULL);
	sb_group_hook = NULL;
	cr_log_info("the pass: %d; the removal in it: %s", rc,
		    pass_delete == 0 ? "0" : pass_delete == 1 ? "-EBUSY" : "?");
	cr_assert(pass_sub, "open: %s", strerror(errno));
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t o = load_relaxed64(&ch->subs[i].owner);

		if (owner_state(o) == SHMBUS_SLOT_ACTIVE)
			cr_assert_eq(load_relaxed64(&ch->subs[i].pos), 0,
				     "subscriber slot %u moved past what "
				     "its subscriber read", i);
	}
	cr_assert_eq(pass_delete, 1, "the removal did not wait");
	sb_group_unkeep(kept);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	shmbus_sub_close(pass_sub);
	pass_sub = NULL;
	shmbus_sub_close(hold);
	shmbus_channel_close(ch);
}

/*
 * A remover killed between setting the group's deleted flag and its
 * unlink leaves the flag (and its file) behind.  Members go on (no
 * -EIDRM, no -ESTALE), a new member joins, and the flag is cleared.
 */
Test(group_races, a_dead_removers_flag_stops_nobody)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *a = join_as(ch, "a", SHMBUS_GROUP_SHARED, 0), *b;
	struct took t = { 0 };

	produce(ch, 4, 0);
	store_relaxed32(&a->g->flags, load_relaxed32(&a->g->flags) |
					      SB_GROUP_F_DELETED); /* as left */
	cr_assert_eq(shmbus_group_poll(a, take_in_order, &t, 2), 2);
	cr_assert_eq(shmbus_group_ack(a, &t.l[0]), 0);
	b = join_as(ch, "b", SHMBUS_GROUP_SHARED, 0);
	cr_assert_eq(load_relaxed32(&a->g->flags) & SB_GROUP_F_DELETED, 0,
		     "the flag stays");
	cr_assert_eq(shmbus_group_ack(a, &t.l[1]), 0);
	cr_assert_eq(shmbus_group_delete(ch, "g"), -EBUSY);
	shmbus_group_leave(b);
	shmbus_group_leave(a);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	shmbus_channel_close(ch);
}

/* A thread cancelled while it deletes a group (direct mode), after it set
 * the DELETED flag and took the file's lock (here at the hook before the
 * unlink; sb_pid_gone()'s open() and read() of /proc are cancellation
 * points there): the cancel waits for the delete to return, so the lock is
 * not kept for the process's life, and the group can be made again. */
static pthread_t del_victim;

static void cancel_remover(int where)
{
	if (where == SB_HOOK_REMOVE_SEEN &&
	    pthread_equal(pthread_self(), del_victim)) {
		pthread_cancel(del_victim);
		pthread_testcancel();
	}
}

static void *delete_cancelled(void *arg)
{
	shmbus_group_delete(arg, "gone");
	pthread_testcancel();
	return NULL;
}

Test(group_races, a_thread_cancelled_deleting_a_group_leaves_no_lock,
     .timeout = 20)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 12);
	shmbus_group *g = shmbus_group_join(ch, "gone", "m", NULL);
	void *ret;
	int rc;

	cr_assert(g, "%s", strerror(errno));
	shmbus_group_leave(g);
	sb_group_hook = cancel_remover;
	cr_assert_eq(pthread_create(&del_victim, NULL, delete_cancelled, ch),
		     0);
	cr_assert_eq(pthread_join(del_victim, &ret), 0);
	sb_group_hook = NULL;
	cr_assert_eq(ret, PTHREAD_CANCELED);
	rc = shmbus_group_delete(ch, "gone");
	g = shmbus_group_join(ch, "gone", "m", NULL);
	cr_assert(rc == 0 || rc == -ENOENT,
		  "a second delete: %s", strerror(-rc));
	cr_assert(g, "join after the cancelled delete: %s", strerror(errno));
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}
