/* SPDX-License-Identifier: MIT */
/*
 * test_policy.c - the two delivery policies, deterministically.
 * Block: a slow subscriber process holds a fast producer back; nothing is
 * lost.  Overwrite: a subscriber lapped several times is told exactly how
 * many messages it lost and only ever sees whole messages, in order.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <pthread.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "helpers.h"

#define N_SLOW 20000u

struct slow {
	const char *dir;
	uint64_t next;
	int bad;
};

static int slow_msg(const struct shmbus_msg *m, void *arg)
{
	struct slow *s = arg;
	uint64_t seq;
	uint32_t id;

	if (th_msg_check(m->data, m->len, &id, &seq) || seq != s->next) {
		s->bad = 1;
		return 1;
	}
	s->next++;
	if (s->next % 1000 == 0)
		usleep(2000);	/* slow: the producer fills the ring */
	return 0;
}

static int slow_subscriber(void *arg)
{
	struct slow *s = arg;
	shmbus_channel *ch = shmbus_channel_open(s->dir, "ch");
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP };
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;

	if (!sub)
		return 2;
	while (s->next < N_SLOW && !s->bad) {
		int rc = shmbus_poll(sub, slow_msg, s, 64);

		if (rc < 0)
			return 3;
		if (rc == 0 && shmbus_wait(sub, 5 * 1000000000LL))
			return 4;
	}
	return s->bad ? 5 : 0;
}

Test(policy, block_slow_subscriber_holds_producer_back, .timeout = 120)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 14, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	struct shmbus_channel_info in;
	struct slow s = { .dir = dir };
	uint8_t msg[100];
	shmbus_pub *pub;
	pid_t pid;

	pid = th_spawn(slow_subscriber, &s);
	do {
		usleep(1000);
		shmbus_channel_info(ch, &in);
	} while (in.subscribers < 1);
	pub = shmbus_pub_open(ch, &pa);
	for (uint64_t i = 0; i < N_SLOW; i++) {
		th_msg_fill(msg, sizeof(msg), 0, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(th_wait(pid), 0, "the subscriber lost or garbled a message");
	shmbus_channel_info(ch, &in);
	cr_assert_gt(in.backpressure, 0, "the producer was never held back");
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * One long poll: a block-policy producer blocked on the full ring must get
 * room while the subscriber reads, not only when its poll returns.  The
 * handler stops halfway through the ring and waits for the producer to
 * publish again.  It also pauses on each of the first 64 messages and
 * looks again at the message it is reading in place: room is given for
 * what handlers have returned from, never for the message in hand.
 */
#define LONG_CAP (1u << 16)
#define LONG_N 2000u

struct long_poll {
	shmbus_channel *ch;
	uint64_t full;		/* published when the producer blocked */
	uint64_t next;
	int moved;		/* the producer went on during the poll */
	int bad;
};

static int long_producer(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[200];

	if (!pub)
		return 2;
	/* Lengths vary, so that new records do not line up with old ones:
	 * room given too early would let one overlap a message in hand. */
	for (uint64_t i = 0; i < LONG_N; i++) {
		size_t len = TH_MSG_MIN + (i * 53) % (sizeof(msg) - TH_MSG_MIN);

		th_msg_fill(msg, len, 0, i);
		if (shmbus_publish(pub, msg, len))
			return 3;
	}
	return 0;
}

static uint64_t published(shmbus_channel *ch)
{
	struct shmbus_channel_info in;

	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	return in.published;
}

static int long_msg(const struct shmbus_msg *m, void *arg)
{
	struct long_poll *lp = arg;
	uint64_t seq;
	uint32_t id;

	if (th_msg_check(m->data, m->len, &id, &seq) || seq != lp->next++) {
		lp->bad = 1;
		return 1;
	}
	if (seq == lp->full / 2) {
		uint64_t give_up = th_now_ns() + 3000000000ull;

		while (!lp->moved && th_now_ns() < give_up) {
			lp->moved = published(lp->ch) > lp->full;
			usleep(1000);
		}
	}
	if (seq < 64 || seq == lp->full / 2) {
		/* Give the producer time to write all the room it got, then
		 * look again at the message we are reading in place. */
		usleep(2000);
		if (th_msg_check(m->data, m->len, &id, &seq) || seq != m->seq)
			lp->bad = 1;
	}
	return 0;
}

Test(policy, block_producer_gets_room_during_a_long_poll, .timeout = 60)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, LONG_CAP, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	struct long_poll lp = { .ch = ch };
	struct shmbus_channel_info in;
	pid_t pid = th_spawn(long_producer, (void *)dir);
	int rc;

	/* Wait until the producer is blocked on the full ring. */
	do {
		usleep(1000);
		cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	} while (in.backpressure == 0);
	lp.full = in.published;
	cr_assert_gt(lp.full, 100);
	cr_assert_lt(lp.full, LONG_N);
	rc = shmbus_poll(sub, long_msg, &lp, 0);
	cr_assert_gt(rc, 0);
	cr_assert_eq(lp.bad, 0, "a message torn or out of order");
	cr_assert(lp.moved, "the producer got no room until the poll returned");
	while (lp.next < LONG_N && !lp.bad) {
		rc = shmbus_poll(sub, long_msg, &lp, 0);
		cr_assert_geq(rc, 0);
		if (rc == 0)
			cr_assert_eq(shmbus_wait(sub, 5000000000ll), 0);
	}
	cr_assert_eq(lp.bad, 0);
	cr_assert_eq(th_wait(pid), 0);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/* The producer process of the next test: fills the ring, then publishes
 * once more with a 400 ms timeout; the CPU it used in that wait, in
 * percent of the wait, is its exit status (100 if it did not time out). */
static int held_back(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");
	struct shmbus_pub_attr pa = { .timeout_ns = 400000000 };
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	struct rusage r0, r1;
	uint8_t buf[64] = { 0 };
	uint64_t t0, cpu, wall;
	int rc;

	if (!pub)
		return 101;
	while (shmbus_publish(pub, buf, sizeof(buf)) == 0)
		;	/* the last one waits 400 ms too */
	getrusage(RUSAGE_SELF, &r0);
	t0 = th_now_ns();
	rc = shmbus_publish(pub, buf, sizeof(buf));
	wall = th_now_ns() - t0;
	getrusage(RUSAGE_SELF, &r1);
	if (rc != -ETIMEDOUT)
		return 100;
	cpu = (uint64_t)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec +
			 r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000000u +
	      (uint64_t)((r1.ru_utime.tv_usec - r0.ru_utime.tv_usec +
			  r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) * 1000);
	return (int)(cpu * 100 / wall);
}

/* A producer held back by a subscriber that does not read (a slow
 * consumer, one that sleeps) naps once the wait lasts: it does not keep
 * a CPU busy until room is made. */
Test(policy, a_producer_held_back_for_long_leaves_the_cpu, .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 64, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	int pct;

	cr_assert(sub);
	pct = th_wait(th_spawn(held_back, (void *)dir));
	cr_assert_lt(pct, 25, "the held-back producer used %d %% of a CPU "
		     "in its wait", pct);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

static int collect(const struct shmbus_msg *m, void *arg)
{
	uint64_t *st = arg;	/* [0] delivered, [1] lost, [2] last seq */
	uint64_t seq;
	uint32_t id;

	cr_assert_eq(th_msg_check(m->data, m->len, &id, &seq), 0, "torn message");
	cr_assert_eq(seq, m->seq);
	if (st[0])
		cr_assert_eq(seq, st[2] + 1 + m->lost, "order or loss count");
	st[0]++;
	st[1] += m->lost;
	st[2] = seq;
	return 0;
}

Test(policy, overwrite_lapped_subscriber_exact_loss)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	struct shmbus_sub_stats ss;
	uint64_t st[3] = { 0 }, total = 0;
	uint8_t msg[256];

	for (int round = 0; round < 50; round++) {
		/* 1..3 laps of messages of varied sizes, never blocking. */
		int n = 40 + round * 7;

		for (int i = 0; i < n; i++, total++) {
			size_t len = TH_MSG_MIN + (size_t)((total * 37) % 200);

			th_msg_fill(msg, len, 0, total);
			cr_assert_eq(shmbus_publish(pub, msg, len), 0);
		}
		cr_assert_geq(shmbus_poll(sub, collect, st, 3), 0);
	}
	while (shmbus_poll(sub, collect, st, 0) > 0)
		;
	shmbus_sub_stats(sub, &ss);
	cr_assert_eq(st[2], total - 1, "the newest message arrives");
	cr_assert_eq(st[0] + st[1], total, "delivered + lost = published");
	cr_assert_eq(ss.lost, st[1]);
	cr_assert_gt(ss.lost, 0);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * shmbus_poll() with max 0 handles up to one lap of messages: counted from
 * the first message it delivers, not from where a lapped reader's cursor
 * was (its jump to the oldest record held is no reading).  One call then
 * drains what the ring holds, up to the newest, on either producer model;
 * it once delivered the first message after a lap alone.
 */
static void one_poll_after_a_lap(enum shmbus_producers prod)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE, prod);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	struct shmbus_sub_stats ss;
	uint64_t st[3] = { 0 };
	uint8_t msg[100];
	int n;

	for (uint64_t i = 0; i < 1000; i++) {
		th_msg_fill(msg, sizeof(msg), 0, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	n = shmbus_poll(sub, collect, st, 0);
	cr_assert_gt(n, 1, "one poll delivered %d message(s) after a lap", n);
	cr_assert_eq(st[2], 999, "one poll reaches the newest");
	cr_assert_eq(st[0] + st[1], 1000);
	cr_assert_eq(shmbus_sub_stats(sub, &ss), 0);
	cr_assert_eq(ss.lag_bytes, 0);
	cr_assert_eq(shmbus_poll(sub, collect, st, 0), 0);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(policy, one_poll_after_a_lap_reaches_the_newest_sp)
{
	one_poll_after_a_lap(SHMBUS_SINGLE_PRODUCER);
}

Test(policy, one_poll_after_a_lap_reaches_the_newest_mp)
{
	one_poll_after_a_lap(SHMBUS_MULTI_PRODUCER);
}

/*
 * A reader lapped exactly one lap finds at its own position the zeroed
 * word that follows the newest record, the same as a reader that is caught
 * up.  It must still notice it was lapped (within a few polls, without any
 * new publish) and deliver what is left, counting the loss.  With
 * `wait_first`, it waits before each poll: the wait's look at head must
 * carry over to the poll (it once did not, and such a reader found the
 * zero word, waited, found it again... for ever).
 */
static void lapped_onto_the_zeroed_word(bool wait_first)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	uint64_t st[3] = { 0 };
	uint8_t msg[48];
	int got = 0;

	/* 64 records of 64 bytes: head ends exactly one lap ahead. */
	for (uint64_t i = 0; i < 64; i++) {
		th_msg_fill(msg, sizeof(msg), 0, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	for (int i = 0; i < 200 && !got; i++) {
		if (wait_first)
			shmbus_wait(sub, 0);
		got = shmbus_poll(sub, collect, st, 0);
	}
	cr_assert_gt(got, 0, "the lapped reader never saw the surviving messages");
	cr_assert_eq(st[2], 63, "up to the newest");
	cr_assert_eq(st[0] + st[1], 64, "delivered + lost = published");
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(policy, lapped_onto_the_zeroed_word)
{
	lapped_onto_the_zeroed_word(false);
}

Test(policy, lapped_onto_the_zeroed_word_between_waits)
{
	lapped_onto_the_zeroed_word(true);
}

/* Publishes messages n to `to` - 1 (100 bytes each: a 4 KiB ring laps
 * many times) through pub, then reads everything `sub` can: it reaches
 * the newest, and what it delivered and counted lost make every message
 * from its start (0).  Closes all three handles and the directory. */
static void lap_and_count(const char *dir, shmbus_channel *ch,
			  shmbus_pub *pub, shmbus_sub *sub, uint64_t n,
			  uint64_t to)
{
	uint64_t st[3] = { 0 };
	uint8_t msg[100];

	for (; n < to; n++) {
		th_msg_fill(msg, sizeof(msg), 0, n);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	while (shmbus_poll(sub, collect, st, 0) > 0)
		;
	cr_assert_eq(st[2], to - 1, "up to the newest");
	cr_assert_eq(st[0] + st[1], to, "delivered %lu + lost %lu, of %lu",
		     (unsigned long)st[0], (unsigned long)st[1],
		     (unsigned long)to);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/* A subscriber of ch at the oldest message. */
static shmbus_sub *oldest_sub(shmbus_channel *ch)
{
	struct shmbus_sub_attr sa;
	shmbus_sub *sub;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	return sub;
}

/*
 * An overwrite subscriber that starts at the oldest message and is lapped
 * before its first read is told what it lost from its start: delivered +
 * lost = published, on either producer model.
 */
static void oldest_lapped_before_the_first_read(enum shmbus_producers prod)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE, prod);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	uint8_t msg[100];
	uint64_t n = 0;

	for (; n < 5; n++) {
		th_msg_fill(msg, sizeof(msg), 0, n);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	lap_and_count(dir, ch, pub, oldest_sub(ch), n, 205);
}

Test(policy, oldest_lapped_before_the_first_read_sp)
{
	oldest_lapped_before_the_first_read(SHMBUS_SINGLE_PRODUCER);
}

Test(policy, oldest_lapped_before_the_first_read_mp)
{
	oldest_lapped_before_the_first_read(SHMBUS_MULTI_PRODUCER);
}

/*
 * The same for a subscriber that starts at the oldest message of a channel
 * that holds none yet (it is opened before its producers start, as a
 * sensor's reader usually is): lapped before its first read, it is told
 * what it lost from its start, not nothing.
 */
static void oldest_on_an_empty_ring_lapped_first(enum shmbus_producers prod)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE, prod);
	shmbus_sub *sub = oldest_sub(ch);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);

	cr_assert(pub);
	lap_and_count(dir, ch, pub, sub, 0, 200);
}

Test(policy, oldest_on_an_empty_ring_lapped_before_the_first_read_sp)
{
	oldest_on_an_empty_ring_lapped_first(SHMBUS_SINGLE_PRODUCER);
}

Test(policy, oldest_on_an_empty_ring_lapped_before_the_first_read_mp)
{
	oldest_on_an_empty_ring_lapped_first(SHMBUS_MULTI_PRODUCER);
}

static void *commit_later(void *arg)
{
	usleep(10000);
	cr_assert_eq(shmbus_commit(arg), 0);
	return NULL;
}

/* The same, with the first message's claim in flight while the
 * subscriber opens (its seq taken, not yet committed): the open waits for
 * the commit, which gives the baseline (it had none, and a lap before the
 * first read counted no loss). */
static void oldest_with_a_claim_in_flight_lapped_first(
	enum shmbus_producers prod)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE, prod);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub;
	pthread_t t;
	void *buf;

	cr_assert(pub);
	cr_assert_eq(shmbus_claim(pub, 100, &buf), 0);
	th_msg_fill(buf, 100, 0, 0);
	cr_assert_eq(pthread_create(&t, NULL, commit_later, pub), 0);
	sub = oldest_sub(ch);
	pthread_join(t, NULL);
	lap_and_count(dir, ch, pub, sub, 1, 200);
}

Test(policy, oldest_with_a_claim_in_flight_lapped_before_the_first_read_sp)
{
	oldest_with_a_claim_in_flight_lapped_first(SHMBUS_SINGLE_PRODUCER);
}

Test(policy, oldest_with_a_claim_in_flight_lapped_before_the_first_read_mp)
{
	oldest_with_a_claim_in_flight_lapped_first(SHMBUS_MULTI_PRODUCER);
}

/*
 * A subscriber lapped over messages and aborted claims alike: msg->lost
 * counts sequence numbers, and an aborted claim holds one (shmbus.h), so
 * each message's count covers at least the messages lost just before it
 * (none lost in silence) and at most the sequence numbers passed over
 * since the message before it (no loss made up).
 */
static int count_ab(const struct shmbus_msg *m, void *arg)
{
	uint64_t *st = arg;	/* [0] delivered, [1] last counter, [2] last
				 * seq */
	uint64_t n;
	uint32_t id;

	cr_assert_eq(th_msg_check(m->data, m->len, &id, &n), 0, "torn message");
	if (st[0]) {
		cr_assert_gt(n, st[1], "order");
		cr_assert_geq(m->lost, n - st[1] - 1, "messages %lu to %lu "
			      "lost, and only %lu counted", (unsigned long)st[1]
			      + 1, (unsigned long)n - 1,
			      (unsigned long)m->lost);
		cr_assert_leq(m->lost, m->seq - st[2] - 1, "%lu counted lost "
			      "between seq %lu and %lu", (unsigned long)m->lost,
			      (unsigned long)st[2], (unsigned long)m->seq);
	} else {
		cr_assert_geq(m->lost, n, "the first %lu messages lost, and "
			      "only %lu counted", (unsigned long)n,
			      (unsigned long)m->lost);
		cr_assert_leq(m->lost, m->seq);
	}
	st[0]++;
	st[1] = n;
	st[2] = m->seq;
	return 0;
}

static void aborted_claims_lapped(enum shmbus_producers prod)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE, prod);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	uint64_t st[3] = { 0 }, n = 0;
	uint8_t msg[48];
	void *buf;

	cr_assert(sub && pub);
	for (int i = 0; i < 500; i++) {
		if (i % 2) {
			cr_assert_eq(shmbus_claim(pub, sizeof(msg), &buf), 0);
			cr_assert_eq(shmbus_abort(pub), 0);
		} else {
			th_msg_fill(msg, sizeof(msg), 0, n++);
			cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
		}
	}
	while (shmbus_poll(sub, count_ab, st, 0) > 0)
		;
	cr_assert_eq(st[1], n - 1, "up to the newest");
	cr_assert_lt(st[0], n, "lapped");
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

Test(policy, aborted_claims_lapped_count_between_the_messages_and_the_seqs_sp)
{
	aborted_claims_lapped(SHMBUS_SINGLE_PRODUCER);
}

Test(policy, aborted_claims_lapped_count_between_the_messages_and_the_seqs_mp)
{
	aborted_claims_lapped(SHMBUS_MULTI_PRODUCER);
}

/*
 * A message refused for the buffer's size (-EMSGSIZE: left unread), then
 * lapped: it counts among the lost.
 */
Test(policy, a_message_refused_for_size_then_lapped_is_counted_lost)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 4096, 256, SHMBUS_OVERWRITE,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	struct shmbus_msg info;
	uint64_t n = 0, got = 0, lost = 0;
	uint8_t msg[100], buf[256];
	ssize_t len;

	cr_assert(pub && sub);
	for (; n < 2; n++) {
		th_msg_fill(msg, sizeof(msg), 0, n);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), sizeof(msg));
	got++;
	cr_assert_eq(shmbus_read(sub, buf, 10, NULL), -EMSGSIZE);
	for (; n < 202; n++) {
		th_msg_fill(msg, sizeof(msg), 0, n);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	while ((len = shmbus_read(sub, buf, sizeof(buf), &info)) > 0) {
		got++;
		lost += info.lost;
	}
	cr_assert_eq(len, -EAGAIN);
	cr_assert_eq(got + lost, n, "delivered %lu + lost %lu, of %lu",
		     (unsigned long)got, (unsigned long)lost, (unsigned long)n);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * A run of aborted claims longer than a look's step bound hides no
 * message behind it: the first poll and the first read after it find the
 * message.
 */
static int count_one(const struct shmbus_msg *m, void *arg)
{
	(void)m;
	++*(int *)arg;
	return 0;
}

Test(policy, a_long_run_of_aborts_hides_no_message)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 18, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	shmbus_sub *a = shmbus_sub_open(ch, NULL), *b = shmbus_sub_open(ch,
									NULL);
	uint8_t msg[100], buf[256];
	void *p;
	int got = 0;

	cr_assert(pub && a && b);
	for (int i = 0; i < 9000; i++) {
		cr_assert_eq(shmbus_claim(pub, 8, &p), 0);
		cr_assert_eq(shmbus_abort(pub), 0);
	}
	th_msg_fill(msg, sizeof(msg), 0, 9000);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_poll(a, count_one, &got, 0), 1);
	cr_assert_eq(shmbus_read(b, buf, sizeof(buf), NULL), sizeof(msg));
	shmbus_sub_close(a);
	shmbus_sub_close(b);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
