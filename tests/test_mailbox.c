/* SPDX-License-Identifier: MIT */
/*
 * test_mailbox.c - the single-producer mailbox (docs/design.md §5): what a
 * producer posts, when a subscriber takes a message from it and when from
 * the ring, and that a post that never came or a damaged mailbox delays a
 * message at most, never loses or tears one.
 *
 * The test maps the data file itself.  To tell which copy a subscriber
 * delivered, it changes the other one after the publish: the ring's copy to
 * show that the mailbox was read, the mailbox's to show that the ring was.
 * Which subscribers wait there, and so want posts, it reads in the
 * header's mbox_want word.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"

#define CAP 4096u
#define MAXMSG 1024u
#define RING_LOOK 1024	/* MBOX_RING_LOOK in lib/subscribe.c */
#define MBOX_AFTER 64	/* empty looks with no message after which a
			 * subscriber waits on the mailbox (a window of
			 * MBOX_WINDOW in lib/subscribe.c) */
#define MBOX_LEAVE 4	/* catch-ups of 2 messages in a row before it
			 * leaves */
#define MBOX_WINDOW 64	/* and its window of empty looks */

static const char *dir;
static shmbus_channel *ch;
static shmbus_pub *pub;
static shmbus_sub *sub;
static uint8_t *data;
static struct shmbus_mbox *mb;
static struct shmbus_hdr *hdr;
static size_t hdr_len;

struct got {
	uint8_t buf[MAXMSG];
	uint32_t len;
	uint64_t seq;
	int n;
};

static void setup(enum shmbus_policy pol, enum shmbus_producers prod)
{
	size_t dlen;

	dir = th_mkdir();
	ch = th_create(dir, CAP, MAXMSG, pol, prod);
	pub = shmbus_pub_open(ch, NULL);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(pub && sub);
	data = th_map_data(dir, &dlen);
	cr_assert(data);
	cr_assert_geq(dlen, CAP + SHMBUS_MBOX_OFFSET + sizeof(*mb));
	mb = (struct shmbus_mbox *)(data + CAP + SHMBUS_MBOX_OFFSET);
	hdr = (struct shmbus_hdr *)th_map_channel(dir, &hdr_len);
	cr_assert(hdr);
}

static void setup_block(void)
{
	setup(SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

static void setup_overwrite(void)
{
	setup(SHMBUS_OVERWRITE, SHMBUS_SINGLE_PRODUCER);
}

static void setup_multi(void)
{
	setup(SHMBUS_BLOCK, SHMBUS_MULTI_PRODUCER);
}

static void teardown(void)
{
	munmap(hdr, hdr_len);
	shmbus_sub_close(sub);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

static uint32_t w_type(uint64_t w)
{
	return (uint32_t)(w >> SHMBUS_LEN_BITS) & 7u;
}

static uint32_t w_len(uint64_t w)
{
	return (uint32_t)w & SHMBUS_LEN_MASK;
}

static uint64_t rec_bytes(size_t len)
{
	return SHMBUS_REC_HDR + ((len + 7) & ~(size_t)7);
}

/* The payload of the record at position pos, in the ring. */
static uint8_t *ring_payload(uint64_t pos)
{
	return data + (pos & (CAP - 1)) + SHMBUS_REC_HDR;
}

static int grab(const struct shmbus_msg *m, void *arg)
{
	struct got *g = arg;

	cr_assert_leq(m->len, MAXMSG);
	memcpy(g->buf, m->data, m->len);
	g->len = m->len;
	g->seq = m->seq;
	g->n++;
	return 0;
}

/* One message by one poll; a fresh struct got each time. */
static struct got poll_one(void)
{
	struct got g = { 0 };

	cr_assert_eq(shmbus_poll(sub, grab, &g, 1), 1);
	return g;
}

/* Empty polls: the subscriber is caught up, and waits on the mailbox;
 * then as many more as make its looks at the ring as rare as they get
 * (once in RING_LOOK). */
static void catch_up(void)
{
	struct got g = { 0 };

	for (int i = 0; i < MBOX_AFTER + RING_LOOK + 1; i++)
		cr_assert_eq(shmbus_poll(sub, grab, &g, 0), 0);
	cr_assert_neq(hdr->mbox_want, 0, "not waiting on the mailbox");
}

/* Catches up, publishes msg, spoils the ring's copy of it: the message
 * delivered must be the mailbox's. */
static void expect_from_mailbox(const char *msg, uint64_t seq)
{
	size_t len = strlen(msg);
	uint64_t pos;
	struct got g;

	catch_up();
	pos = th_head(ch);
	cr_assert_eq(shmbus_publish(pub, msg, len), 0);
	memset(ring_payload(pos), '#', len);
	g = poll_one();
	cr_assert_eq(g.len, len);
	cr_assert_eq(memcmp(g.buf, msg, len), 0, "not the mailbox's copy");
	cr_assert_eq(g.seq, seq);
}

/* Polls until a message comes; returns how many polls it took. */
static int polls_until_one(struct got *g, int max)
{
	for (int i = 1; i <= max; i++) {
		int rc = shmbus_poll(sub, grab, g, 1);

		cr_assert_geq(rc, 0);
		if (rc == 1)
			return i;
	}
	cr_assert_fail("no message in %d polls", max);
	return -1;
}

Test(mailbox, every_record_is_posted, .init = setup_block, .fini = teardown)
{
	static const char msg[] = "0123456789abcdef0123456789abcdef";
	struct iovec batch[3] = { { "a", 1 }, { "bb", 2 }, { "ccc", 3 } };
	uint8_t big[100] = { 0 };
	uint64_t pos;
	void *buf;

	catch_up();
	pos = th_head(ch);
	/* A small message: the whole record. */
	cr_assert_eq(shmbus_publish(pub, msg, 32), 0);
	cr_assert_eq(mb->mark, pos + 1);
	cr_assert_eq(w_type(mb->word), SHMBUS_REC_MSG);
	cr_assert_eq(w_len(mb->word), 32);
	cr_assert_eq(mb->word, *(uint64_t *)(data + (pos & (CAP - 1))),
		     "the mailbox repeats the ring's commit word");
	cr_assert_eq(mb->seq, 0);
	cr_assert_eq(memcmp(mb->payload, msg, 32), 0);

	/* A large one: only where it is. */
	pos = th_head(ch);
	cr_assert_eq(shmbus_publish(pub, big, sizeof(big)), 0);
	cr_assert_eq(mb->mark, pos + 1);
	cr_assert_eq(w_len(mb->word), sizeof(big));
	cr_assert_eq(mb->seq, 1);

	/* An aborted claim. */
	pos = th_head(ch);
	cr_assert_eq(shmbus_claim(pub, 8, &buf), 0);
	cr_assert_eq(shmbus_abort(pub), 0);
	cr_assert_eq(mb->mark, pos + 1);
	cr_assert_eq(w_type(mb->word), SHMBUS_REC_SKIP);
	cr_assert_eq(mb->seq, 2);

	/* A batch: its last record. */
	pos = th_head(ch);
	cr_assert_eq(shmbus_publish_batch(pub, batch, 3), 3);
	cr_assert_eq(mb->mark, pos + rec_bytes(1) + rec_bytes(2) + 1);
	cr_assert_eq(w_len(mb->word), 3);
	cr_assert_eq(mb->seq, 5);
	cr_assert_eq(memcmp(mb->payload, "ccc", 3), 0);
}

Test(mailbox, multi_producer_channels_have_none, .init = setup_multi,
     .fini = teardown)
{
	static const uint8_t zero[sizeof(*mb)];

	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_publish(pub, "hello", 5), 0);
	cr_assert_eq(memcmp(mb, zero, sizeof(zero)), 0,
		     "two producers cannot share one mailbox line");
	for (int i = 0; i < 10; i++)
		cr_assert_eq(poll_one().seq, (uint64_t)i);
}

/*
 * The producer posts only while a subscriber waits on the mailbox: a
 * subscriber that has not caught up, or has gone, costs it no post.
 */
Test(mailbox, posts_only_while_a_subscriber_waits_there, .init = setup_block,
     .fini = teardown)
{
	uint64_t pos, mark;

	cr_assert_eq(hdr->mbox_want, 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(shmbus_publish(pub, "unposted", 8), 0);
	cr_assert_eq(mb->mark, 0, "posted with nobody waiting");
	for (int i = 0; i < 3; i++)
		cr_assert_eq(poll_one().seq, (uint64_t)i);
	/* MBOX_AFTER empty looks with no message, and it waits there. */
	for (int i = 1; i < MBOX_AFTER; i++) {
		cr_assert_eq(shmbus_poll(sub, grab, &(struct got){ 0 }, 0), 0);
		cr_assert_eq(hdr->mbox_want, 0, "waits after %d looks", i);
	}
	cr_assert_eq(shmbus_poll(sub, grab, &(struct got){ 0 }, 0), 0);
	cr_assert_eq(hdr->mbox_want, 1, "our slot is the first");
	pos = th_head(ch);
	cr_assert_eq(shmbus_publish(pub, "posted", 6), 0);
	cr_assert_eq(mb->mark, pos + 1);
	cr_assert_eq(poll_one().seq, 3);
	/* Closed: no more posts. */
	shmbus_sub_close(sub);
	sub = NULL;
	cr_assert_eq(hdr->mbox_want, 0);
	mark = mb->mark;
	cr_assert_eq(shmbus_publish(pub, "unposted", 8), 0);
	cr_assert_eq(mb->mark, mark);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
}

/*
 * A subscriber that catches up MBOX_LEAVE times in a row on two messages
 * or more, without an empty look between, is being outrun by a stream:
 * it reads the ring instead, and the producer stops posting.  Once it
 * waits again, posts resume.
 */
Test(mailbox, a_stream_sends_the_subscriber_back_to_the_ring,
     .init = setup_block, .fini = teardown)
{
	uint64_t seq = 0, mark;
	int rounds = 0;

	catch_up();
	while (hdr->mbox_want) {
		cr_assert_leq(++rounds, MBOX_LEAVE + 1, "still asks for posts");
		cr_assert_eq(shmbus_publish(pub, "one", 3), 0);
		cr_assert_eq(shmbus_publish(pub, "two", 3), 0);
		cr_assert_eq(poll_one().seq, seq++);
		cr_assert_eq(poll_one().seq, seq++);
	}
	cr_assert_geq(rounds, MBOX_LEAVE, "left after %d", rounds);
	mark = mb->mark;
	cr_assert_eq(shmbus_publish(pub, "ring", 4), 0);
	cr_assert_eq(mb->mark, mark, "posted to a subscriber on the ring");
	cr_assert_eq(poll_one().seq, seq++);
	catch_up();
	expect_from_mailbox("again", seq);
}

/*
 * Where a subscriber waits on the mailbox it stays, whatever the pace of
 * a ping-pong, even one that waits a single look a message; on the ring,
 * one that waits four looks a message or more (over a window of
 * MBOX_WINDOW empty looks) comes to the mailbox.
 */
static bool pingpong(int empties_per_msg, int msgs, uint64_t *seq)
{
	for (int n = 0; n < msgs; n++) {
		cr_assert_eq(shmbus_publish(pub, "msg", 3), 0);
		cr_assert_eq(poll_one().seq, (*seq)++);
		for (int e = 0; e < empties_per_msg; e++)
			cr_assert_eq(shmbus_poll(sub, grab, &(struct got){ 0 },
						 1), 0);
	}
	return hdr->mbox_want != 0;
}

Test(mailbox, how_long_a_subscriber_waits_decides_where_it_looks,
     .init = setup_block, .fini = teardown)
{
	uint64_t seq = 0;

	catch_up();
	cr_assert(pingpong(3, 4 * MBOX_WINDOW, &seq), "a ping-pong left");
	cr_assert(pingpong(1, 4 * MBOX_WINDOW, &seq), "a fast ping-pong left");
	/* Outrun: back to the ring. */
	for (int i = 0; i <= MBOX_LEAVE; i++) {
		cr_assert_eq(shmbus_publish(pub, "one", 3), 0);
		cr_assert_eq(shmbus_publish(pub, "two", 3), 0);
		cr_assert_eq(poll_one().seq, seq++);
		cr_assert_eq(poll_one().seq, seq++);
	}
	cr_assert_eq(hdr->mbox_want, 0);
	/* A stream the subscriber keeps up with stays on the ring... */
	cr_assert(!pingpong(0, 4 * MBOX_WINDOW, &seq), "went to the mailbox "
		  "with no empty look");
	/* ...and a ping-pong of five looks a message (four or more) comes
	 * to the mailbox within two windows. */
	cr_assert(pingpong(5, 2 * MBOX_WINDOW / 5 + 1, &seq),
		  "a ping-pong stays on the ring");
}

/* A subscriber killed while it waited on the mailbox and could sleep:
 * whoever takes its slot clears both of its bits, and the producer stops
 * posting and making the wake check for it. */
static int mailbox_sleeper(void *arg)
{
	struct shmbus_sub_attr sa = { .wait = SHMBUS_WAIT_SLEEP,
				      .spin_ns = 1000 };
	shmbus_channel *c = shmbus_channel_open(dir, "ch");
	shmbus_sub *s = c ? shmbus_sub_open(c, &sa) : NULL;

	(void)arg;
	if (!s)
		return 2;
	for (;;)
		shmbus_wait(s, -1);
}

Test(mailbox, a_killed_subscriber_leaves_no_bits, .init = setup_block,
     .fini = teardown)
{
	pid_t s = th_spawn(mailbox_sleeper, NULL);
	shmbus_sub *again;
	int i;

	for (i = 0; i < 5000 && (hdr->mbox_want != 2 || hdr->sleep_ok != 2);
	     i++)
		usleep(1000);
	cr_assert_eq(hdr->mbox_want, 2, "the sleeper (slot 1) waits there");
	cr_assert_eq(hdr->sleep_ok, 2, "and said it may sleep");
	kill(s, SIGKILL);
	th_wait(s);
	again = shmbus_sub_open(ch, NULL);	/* takes the dead one's slot */
	cr_assert(again);
	cr_assert_eq(hdr->mbox_want, 0);
	cr_assert_eq(hdr->sleep_ok, 0);
	shmbus_sub_close(again);
}

static void caught_up_reads_mailbox_behind_reads_ring(void)
{
	struct got g;

	/* Caught up: the mailbox's copy is delivered. */
	expect_from_mailbox("mailbox!", 0);

	/* Behind by two: both come from the ring, the second one too,
	 * although the mailbox holds it. */
	cr_assert_eq(shmbus_publish(pub, "one", 3), 0);
	cr_assert_eq(shmbus_publish(pub, "two", 3), 0);
	memcpy(mb->payload, "bad", 3);
	g = poll_one();
	cr_assert_eq(memcmp(g.buf, "one", 3), 0);
	g = poll_one();
	cr_assert_eq(memcmp(g.buf, "two", 3), 0);
	cr_assert_eq(g.seq, 2);

	/* Caught up again: the mailbox once more. */
	expect_from_mailbox("three", 3);
}

Test(mailbox, caught_up_reads_mailbox_behind_reads_ring, .init = setup_block,
     .fini = teardown)
{
	caught_up_reads_mailbox_behind_reads_ring();
}

Test(mailbox, overwrite_policy_too, .init = setup_overwrite,
     .fini = teardown)
{
	caught_up_reads_mailbox_behind_reads_ring();
}

Test(mailbox, read_and_wait_use_it, .init = setup_block, .fini = teardown)
{
	struct shmbus_msg info;
	uint8_t got[64];
	uint64_t pos;

	for (int i = 0; i < MBOX_AFTER + RING_LOOK + 1; i++)
		cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
	pos = th_head(ch);
	cr_assert_eq(shmbus_publish(pub, "by read", 7), 0);
	memcpy(ring_payload(pos), "garbage", 7);
	cr_assert_eq(shmbus_wait(sub, 0), 0);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 7);
	cr_assert_eq(memcmp(got, "by read", 7), 0);
	cr_assert_eq(info.data, got);
	cr_assert_eq(shmbus_wait(sub, 0), -ETIMEDOUT);
}

Test(mailbox, large_messages_come_from_the_ring, .init = setup_block,
     .fini = teardown)
{
	uint8_t big[SHMBUS_MBOX_INLINE + 1];
	struct got g;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (uint8_t)i;
	catch_up();
	cr_assert_eq(shmbus_publish(pub, big, sizeof(big)), 0);
	memset(mb->payload, 0xee, sizeof(mb->payload));
	g = poll_one();
	cr_assert_eq(g.len, sizeof(big));
	cr_assert_eq(memcmp(g.buf, big, sizeof(big)), 0);
	/* The largest inline size still comes from the mailbox. */
	catch_up();
	uint64_t pos = th_head(ch);
	cr_assert_eq(shmbus_publish(pub, big, SHMBUS_MBOX_INLINE), 0);
	memset(ring_payload(pos), 0xee, SHMBUS_MBOX_INLINE);
	g = poll_one();
	cr_assert_eq(memcmp(g.buf, big, SHMBUS_MBOX_INLINE), 0);
}

Test(mailbox, aborts_and_batches_reach_a_waiting_subscriber_at_once,
     .init = setup_block, .fini = teardown)
{
	struct iovec batch[4] = {
		{ "a", 1 }, { "bb", 2 }, { "ccc", 3 }, { "dddd", 4 },
	};
	struct shmbus_sub_stats st;
	struct got g = { 0 };
	void *buf;

	catch_up();
	cr_assert_eq(shmbus_claim(pub, 8, &buf), 0);
	cr_assert_eq(shmbus_abort(pub), 0);
	cr_assert_eq(shmbus_poll(sub, grab, &g, 0), 0);
	cr_assert_eq(shmbus_sub_stats(sub, &st), 0);
	cr_assert_eq(st.pos, th_head(ch), "the skipped record is stepped over by "
		     "the first poll");
	cr_assert_eq(shmbus_publish_batch(pub, batch, 4), 4);
	cr_assert_eq(shmbus_poll(sub, grab, &g, 0), 4,
		     "the whole batch is found by the first poll");
	cr_assert_eq(memcmp(g.buf, "dddd", 4), 0);
	cr_assert_eq(g.seq, 4);
}

/* The first subscriber slot of the channel mapped at h: ours. */
static const struct shmbus_sub_slot *our_slot(const struct shmbus_hdr *h)
{
	const struct shmbus_sub_slot *slot = (const struct shmbus_sub_slot *)(
		(const uint8_t *)h + h->slots_offset);

	cr_assert_eq((uint32_t)(slot->owner >> 32), (uint32_t)getpid(),
		     "the first subscriber slot is not ours");
	return slot;
}

/* One message taken by `how`: 0 poll max 1, 1 poll max 0, 2 read. */
static void take_one(int how, struct got *g)
{
	ssize_t n;

	if (how < 2) {
		cr_assert_eq(shmbus_poll(sub, grab, g, how ? 0 : 1), 1);
		return;
	}
	n = shmbus_read(sub, g->buf, sizeof(g->buf), NULL);
	cr_assert_eq(n, 8);
	memcpy(&g->seq, g->buf, sizeof(g->seq));	/* the payload is seq */
	g->len = (uint32_t)n;
	g->n = 1;
}

/*
 * A take publishes the cursor at once, in every way (poll's front, the
 * general loop, read's front): a producer waiting for room never waits on
 * a subscriber that stopped calling.  A front leaves only the counters
 * for the next empty call (poll, read, or shmbus_wait()), which the slot
 * shows; that is how the test knows the fronts answered.  Three laps
 * each.
 */
Test(mailbox, a_take_publishes_the_cursor_at_once,
     .init = setup_block, .fini = teardown)
{
	uint64_t laps = 3 * CAP / rec_bytes(8), seq = 0;
	uint64_t fronts[3] = { 0 };	/* takes whose counters wait */
	const struct shmbus_sub_slot *slot;
	const struct shmbus_hdr *h;
	struct shmbus_sub_stats st;
	uint8_t rb[MAXMSG];
	size_t clen;
	char msg[8];

	h = (const struct shmbus_hdr *)th_map_channel(dir, &clen);
	cr_assert(h);
	slot = our_slot(h);
	catch_up();
	for (int how = 0; how < 3; how++) {
		for (uint64_t i = 0; i < laps; i++, seq++) {
			struct got g = { 0 };

			memcpy(msg, &seq, sizeof(msg));
			cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0,
				     "producer held back at message %" PRIu64,
				     seq);
			take_one(how, &g);
			cr_assert_eq(g.n, 1);
			cr_assert_eq(g.seq, seq);
			cr_assert_eq(memcmp(g.buf, msg, sizeof(msg)), 0);
			cr_assert_eq(shmbus_sub_stats(sub, &st), 0);
			cr_assert_eq(slot->pos, st.pos,
				     "message %" PRIu64 " (way %d): the slot "
				     "holds %" PRIu64, seq, how, slot->pos);
			if (slot->delivered != st.delivered)
				fronts[how]++;
			/* Empty calls, as a subscriber that waits makes:
			 * with fewer than two per message it would take
			 * itself for one outrun by a stream, and leave the
			 * mailbox (and its fronts). */
			for (int e = 0; e < 3; e++) {
				if ((i + e) % 2)
					cr_assert_eq(shmbus_read(sub, rb,
								 sizeof(rb),
								 NULL),
						     -EAGAIN);
				else
					cr_assert_eq(shmbus_poll(sub, grab, &g,
								 1), 0);
				cr_assert_eq(slot->delivered, st.delivered,
					     "counters not published by the "
					     "empty call after message %"
					     PRIu64, seq);
			}
		}
	}
	cr_assert_gt(fronts[0], laps * 9 / 10, "poll's front answered %"
		     PRIu64 " of %" PRIu64, fronts[0], laps);
	cr_assert_gt(fronts[2], laps * 9 / 10, "read's front answered %"
		     PRIu64 " of %" PRIu64, fronts[2], laps);
	/* And by shmbus_wait(), before it waits. */
	cr_assert_eq(shmbus_publish(pub, "waiting!", 8), 0);
	cr_assert_eq(shmbus_read(sub, rb, sizeof(rb), NULL), 8);
	cr_assert_eq(shmbus_sub_stats(sub, &st), 0);
	cr_assert_eq(slot->pos, st.pos);
	cr_assert_neq(slot->delivered, st.delivered);
	cr_assert_eq(shmbus_wait(sub, 0), -ETIMEDOUT);
	cr_assert_eq(slot->delivered, st.delivered,
		     "not published by shmbus_wait()");
	cr_assert_eq(shmbus_poll(sub, grab, &(struct got){ 0 }, 0), 0);
	munmap((void *)h, clen);
}

/*
 * A stream of fronts that never finds the mailbox empty (publish, read,
 * publish, read...) still publishes its counters: the slot's lag behind
 * the handle's count stays under 1/32 of the ring's worth of messages,
 * and the count moves.  Eight laps, through read's front and poll's.
 */
Test(mailbox, a_stream_of_fronts_publishes_its_counters,
     .init = setup_block, .fini = teardown)
{
	uint64_t per = (CAP >> 5) / rec_bytes(8) + 1, moved = 0, last = 0;
	uint64_t laps = 8 * CAP / rec_bytes(8);
	const struct shmbus_sub_slot *slot;
	const struct shmbus_hdr *h;
	struct shmbus_sub_stats st;
	uint8_t rb[MAXMSG];
	size_t clen;

	h = (const struct shmbus_hdr *)th_map_channel(dir, &clen);
	cr_assert(h);
	slot = our_slot(h);
	catch_up();
	for (uint64_t i = 0; i < laps; i++) {
		cr_assert_eq(shmbus_publish(pub, &i, sizeof(i)), 0);
		if (i % 2)
			cr_assert_eq(shmbus_read(sub, rb, sizeof(rb), NULL), 8);
		else
			cr_assert_eq(shmbus_poll(sub, grab,
						 &(struct got){ 0 }, 1), 1);
		cr_assert_eq(shmbus_sub_stats(sub, &st), 0);
		cr_assert_eq(slot->pos, st.pos);
		cr_assert_leq(st.delivered - slot->delivered, per,
			      "message %" PRIu64 ": the slot counts %" PRIu64
			      " of %" PRIu64, i, slot->delivered,
			      st.delivered);
		if (slot->delivered != last)
			moved++;
		last = slot->delivered;
	}
	cr_assert_geq(moved, laps / per / 2, "the slot's count moved %"
		      PRIu64 " times in %" PRIu64 " messages", moved, laps);
	munmap((void *)h, clen);
}

/*
 * A block-policy producer that filled the ring, and a subscriber that
 * takes one message from the mailbox and then stops calling for good: the
 * producer gets that message's room.
 */
Test(mailbox, a_subscriber_that_stops_calling_holds_no_room,
     .init = setup_block, .fini = teardown)
{
	struct shmbus_sub_stats st;
	char msg[8] = "payload";
	uint8_t rb[MAXMSG];
	uint64_t head, need;

	catch_up();
	for (int round = 0; round < 8; round++) {
		/* Drained (from a position that moves on a little each
		 * round, so that the ring fills up at another place), then
		 * one message taken from the mailbox, and no call after
		 * it. */
		while (shmbus_read(sub, rb, sizeof(rb), NULL) == 8)
			;
		for (int i = 0; i < 5 * round; i++) {
			cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
			cr_assert_eq(shmbus_read(sub, rb, sizeof(rb), NULL), 8);
		}
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
		cr_assert_eq(shmbus_read(sub, rb, sizeof(rb), NULL), 8);
		cr_assert_eq(shmbus_sub_stats(sub, &st), 0);
		while (shmbus_publish(pub, msg, sizeof(msg)) == 0)
			;
		head = th_head(ch);
		/* Full against where the subscriber really is: the next
		 * claim (with its wrap padding, and the word after it)
		 * would pass its position by a lap. */
		need = (head & (CAP - 1)) + rec_bytes(8) > CAP ?
			       CAP - (head & (CAP - 1)) + rec_bytes(8) :
			       rec_bytes(8);
		cr_assert_gt(head + need + 8, st.pos + CAP,
			     "round %d: the producer stopped at %" PRIu64
			     " with the subscriber at %" PRIu64, round, head,
			     st.pos);
	}
}

/*
 * shmbus_publish() and shmbus_read() answer a small message in front
 * functions; everything they do not answer goes the general way, with the
 * same results as before they had fronts.  Each refusal, each size at the
 * mailbox's edge, a buffer too small for the front, an unaligned one, and
 * a channel whose largest message is smaller than the mailbox's.
 */
Test(mailbox, the_fronts_of_publish_and_read, .init = setup_block,
     .fini = teardown)
{
	char m40[40], m41[41], got[64];
	struct shmbus_msg info;
	uint64_t pos;
	void *buf;

	memset(m40, 'a', sizeof(m40));
	memset(m41, 'b', sizeof(m41));
	catch_up();
	/* publish: refusals, then nothing was published */
	cr_assert_eq(shmbus_publish(pub, NULL, 3), -EINVAL);
	cr_assert_eq(shmbus_claim(pub, 5, &buf), 0);
	cr_assert_eq(shmbus_publish(pub, "x", 1), -EBUSY);
	cr_assert_eq(shmbus_abort(pub), 0);
	cr_assert_eq(shmbus_publish(pub, m41, MAXMSG + 1), -EMSGSIZE);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
	cr_assert_eq(shmbus_read(sub, NULL, sizeof(got), NULL), -EINVAL);
	/* 40 bytes come from the mailbox, into an unaligned buffer */
	pos = th_head(ch);
	cr_assert_eq(shmbus_publish(pub, m40, sizeof(m40)), 0);
	memset(ring_payload(pos), '#', sizeof(m40));
	cr_assert_eq(shmbus_read(sub, got + 1, sizeof(got) - 1, &info), 40);
	cr_assert_eq(memcmp(got + 1, m40, 40), 0, "not the mailbox's copy");
	cr_assert_eq(info.data, (const void *)(got + 1));
	cr_assert_eq(info.len, 40);
	cr_assert_eq(info.seq, 1);	/* the aborted claim was seq 0 */
	cr_assert_eq(info.pos, pos);
	/* 41 bytes: from the ring */
	cr_assert_eq(shmbus_publish(pub, m41, sizeof(m41)), 0);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 41);
	cr_assert_eq(memcmp(got, m41, 41), 0);
	cr_assert_eq(info.seq, 2);
	/* a buffer too small: left unread, nothing written */
	cr_assert_eq(shmbus_publish(pub, "12345678", 8), 0);
	memset(got, 0, sizeof(got));
	cr_assert_eq(shmbus_read(sub, got, 4, NULL), -EMSGSIZE);
	cr_assert_eq(memcmp(got, "\0\0\0\0\0\0\0\0", 8), 0,
		     "a refused read wrote into the buffer");
	cr_assert_eq(shmbus_read(sub, got, 8, &info), 8);
	cr_assert_eq(memcmp(got, "12345678", 8), 0);
	cr_assert_eq(info.seq, 3);
	cr_assert_eq(memcmp(got + 8, "\0\0\0\0", 4), 0,
		     "wrote past the caller's 8 bytes");
	/* a large buffer: the front writes the message's bytes only */
	cr_assert_eq(shmbus_publish(pub, "abc", 3), 0);
	memset(got, '~', sizeof(got));
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), &info), 3);
	cr_assert_eq(memcmp(got, "abc", 3), 0);
	cr_assert_eq(info.data, got);
	for (size_t i = 3; i < sizeof(got); i++)
		cr_assert_eq(got[i], '~', "wrote byte %zu of a 3-byte message",
			     i);
	cr_assert_eq(shmbus_read(sub, got, sizeof(got), NULL), -EAGAIN);
}

Test(mailbox, a_channel_of_messages_smaller_than_the_mailbox)
{
	const char *d = th_mkdir();
	shmbus_channel *c = th_create(d, CAP, 16, SHMBUS_BLOCK,
				      SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = c ? shmbus_pub_open(c, NULL) : NULL;
	shmbus_sub *s = c ? shmbus_sub_open(c, NULL) : NULL;
	char got[64];

	cr_assert(p && s);
	cr_assert_eq(shmbus_read(s, got, sizeof(got), NULL), -EAGAIN);
	cr_assert_eq(shmbus_publish(p, "seventeen bytes!!", 17), -EMSGSIZE);
	cr_assert_eq(shmbus_publish(p, "sixteen bytes!!!", 16), 0);
	cr_assert_eq(shmbus_read(s, got, sizeof(got), NULL), 16);
	cr_assert_eq(memcmp(got, "sixteen bytes!!!", 16), 0);
	cr_assert_eq(shmbus_read(s, got, sizeof(got), NULL), -EAGAIN);
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	shmbus_channel_close(c);
	th_rmdir(d);
}

/* A producer that died between its commit and its post: the message is in
 * the ring, the mailbox does not say so. */
Test(mailbox, a_post_that_never_came_only_delays, .init = setup_block,
     .fini = teardown)
{
	uint64_t old_mark;
	struct got g = { 0 };
	int n;

	catch_up();
	cr_assert_eq(shmbus_publish(pub, "first", 5), 0);
	mb->mark = 0;		/* died in the middle of the post */
	n = polls_until_one(&g, 4 * RING_LOOK);
	cr_assert_eq(memcmp(g.buf, "first", 5), 0);
	cr_assert_gt(n, 1, "found by the periodic look at the ring");
	cr_assert_leq(n, RING_LOOK);

	catch_up();
	old_mark = mb->mark;
	cr_assert_eq(shmbus_publish(pub, "second", 6), 0);
	mb->mark = old_mark;	/* died just before the post */
	g.n = 0;
	n = polls_until_one(&g, 4 * RING_LOOK);
	cr_assert_eq(memcmp(g.buf, "second", 6), 0);
	cr_assert_eq(g.seq, 1);
	cr_assert_leq(n, RING_LOOK);

	/* The wait loop looks at the ring too. */
	catch_up();
	cr_assert_eq(shmbus_publish(pub, "third", 5), 0);
	mb->mark = 0;
	cr_assert_eq(shmbus_wait(sub, 1000000000), 0);
	g = poll_one();
	cr_assert_eq(memcmp(g.buf, "third", 5), 0);
}

/*
 * Forged mailboxes at the subscriber's own position: a length past the
 * inline size or max_msg, a padding or unknown type, another lap's tag, a
 * record that would run past the ring's end.  None of them is delivered
 * (the ring has nothing there yet), and the next real message is.
 */
Test(mailbox, a_damaged_mailbox_delivers_nothing_false,
     .init = setup_block, .fini = teardown)
{
	struct got g = { 0 };
	uint64_t pos, tag;
	uint64_t bad_words[6];
	uint64_t bad_marks[] = { UINT64_MAX, 3, 0 };

	cr_assert_eq(shmbus_publish(pub, "warm", 4), 0);
	poll_one();
	catch_up();
	pos = th_head(ch);
	tag = (uint64_t)((pos / CAP) + 1) << 32;
	bad_words[0] = tag | (SHMBUS_MBOX_INLINE + 8);
	bad_words[1] = tag | SHMBUS_LEN_MASK;
	bad_words[2] = tag | (uint64_t)SHMBUS_REC_PAD << SHMBUS_LEN_BITS | 8;
	bad_words[3] = tag | (uint64_t)7 << SHMBUS_LEN_BITS | 8;
	bad_words[4] = (tag + (UINT64_C(1) << 32)) | 8;
	bad_words[5] = 0;
	for (size_t i = 0; i < sizeof(bad_words) / sizeof(bad_words[0]); i++) {
		mb->mark = pos + 1;
		mb->word = bad_words[i];
		for (int k = 0; k < 2 * RING_LOOK; k++)
			cr_assert_eq(shmbus_poll(sub, grab, &g, 0), 0,
				     "forged word %zu delivered", i);
	}
	for (size_t i = 0; i < sizeof(bad_marks) / sizeof(bad_marks[0]); i++) {
		mb->mark = bad_marks[i];
		for (int k = 0; k < 2 * RING_LOOK; k++)
			cr_assert_eq(shmbus_poll(sub, grab, &g, 0), 0);
	}
	cr_assert_eq(shmbus_publish(pub, "real", 4), 0);
	cr_assert_eq(polls_until_one(&g, 4 * RING_LOOK), 1);
	cr_assert_eq(memcmp(g.buf, "real", 4), 0);
}

/*
 * A mark written ahead of the subscriber's position, with nothing in the
 * ring there: a wait must not take it for posts past ours and answer at
 * once (its caller's read finds nothing, and a loop of waits and reads
 * spins for ever); it waits its time, and the next real message ends it.
 */
Test(mailbox, a_mark_written_ahead_does_not_make_waits_spin,
     .init = setup_block, .fini = teardown)
{
	uint64_t marks[] = { 64, 8, UINT64_MAX / 2 };
	uint8_t buf[64];
	struct got g = { 0 };

	cr_assert_eq(shmbus_publish(pub, "warm", 4), 0);
	poll_one();
	catch_up();
	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		uint64_t t0;
		int zero = 0;

		mb->mark = th_head(ch) + 1 + marks[i];
		t0 = th_now_ns();
		for (int k = 0; k < 20; k++) {
			int rc = shmbus_wait(sub, 5000000);

			cr_assert(rc == 0 || rc == -ETIMEDOUT, "wait: %d", rc);
			zero += rc == 0;
			cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL),
				     -EAGAIN);
		}
		cr_log_info("mark +%" PRIu64 ": 20 waits of 5 ms in %" PRIu64
			    " us, %d answered", marks[i],
			    (th_now_ns() - t0) / 1000, zero);
		cr_assert_eq(zero, 0, "a wait answered at once, nothing there");
		cr_assert_geq(th_now_ns() - t0, 20 * UINT64_C(5000000));
	}
	cr_assert_eq(shmbus_publish(pub, "real", 4), 0);
	cr_assert_eq(shmbus_wait(sub, 1000000000), 0);
	cr_assert_eq(polls_until_one(&g, 4 * RING_LOOK), 1);
	cr_assert_eq(memcmp(g.buf, "real", 4), 0);
}

Test(mailbox, near_the_end_of_the_ring, .init = setup_block, .fini = teardown)
{
	static const uint8_t filler[256];
	struct got g = { 0 };
	uint64_t pos;

	/* Walk head to 24 bytes before the end of the ring. */
	while ((th_head(ch) & (CAP - 1)) != CAP - 24) {
		uint64_t left = CAP - 24 - (th_head(ch) & (CAP - 1));
		size_t len = left > 400 ? sizeof(filler)
					: (size_t)(left - SHMBUS_REC_HDR);

		cr_assert_geq(left, SHMBUS_REC_HDR);
		cr_assert_eq(shmbus_publish(pub, filler, len), 0);
		while (shmbus_poll(sub, grab, &g, 0) > 0)
			;
	}
	/* A forged word whose record would run past the end is not taken
	 * from the mailbox. */
	catch_up();
	pos = th_head(ch);
	mb->word = (uint64_t)((pos / CAP) + 1) << 32 | 16;	/* 32 bytes */
	mb->mark = pos + 1;
	for (int k = 0; k < 2 * RING_LOOK; k++)
		cr_assert_eq(shmbus_poll(sub, grab, &g, 0), 0);
	/* A message that does not fit wraps: the mailbox is ahead of us (it
	 * names the record, not the padding), and the ring has both. */
	cr_assert_eq(shmbus_publish(pub, "wrapped message!", 16), 0);
	cr_assert_eq(th_head(ch) & (CAP - 1), 32);
	g.n = 0;
	cr_assert_eq(polls_until_one(&g, 1), 1);
	cr_assert_eq(memcmp(g.buf, "wrapped message!", 16), 0);
	/* Caught up after the wrap: the mailbox again. */
	expect_from_mailbox("tail-msg", g.seq + 1);
}
