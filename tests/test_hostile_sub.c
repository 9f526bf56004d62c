/* SPDX-License-Identifier: MIT */
/*
 * test_hostile_sub.c - what a subscriber, which is handed the control
 * file read-write, can do to the other users of the channel by writing
 * words of that file that are not its own: the count of slots ever used
 * (nsub_hwm), the words by which sleepers are woken (sleep_ok,
 * sleepers), the header's identity lines.  It may cost the others time,
 * a counted loss or a refused open; it must not make a producer write
 * over a record an honest subscriber is reading, keep an honest sleeper
 * asleep beside a message, or shut the channel to later opens for good.
 * Every party is a process of its own: the honest subscriber, the
 * hostile one, the producer; in direct mode and under shmbusd (whose
 * scan sets a lowered mark back, which a hostile writer does again at
 * once).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/sub.h"

#define MSG 1000u	/* read in place: more than the mailbox carries */

/* What the processes of a scenario share (an anonymous shared mapping). */
struct shared {
	volatile int ready;	/* the honest subscriber has its slot */
	volatile int holding;	/* ... and is inside its handler */
	volatile int done;	/* the producer has finished */
	volatile int stop;	/* the hostile writer stops */
	volatile int sleeping;	/* the sleeper is in shmbus_wait() */
	volatile int writes;	/* words written by the hostile writer */
	bool daemon;		/* open through shmbusd ("blk"), or direct */
	char dir[128];
};

static struct shared *shared_new(bool daemon)
{
	struct shared *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE,
				MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	cr_assert(s != MAP_FAILED);
	memset(s, 0, sizeof(*s));
	s->daemon = daemon;
	return s;
}

/* Opens the scenario's channel for `role`: through shmbusd (the data
 * file read-only to a subscriber), or the files themselves. */
static shmbus_channel *open_as(struct shared *s, shmbus_bus **bus,
			       enum shmbus_role role)
{
	*bus = NULL;
	if (s->daemon)
		return open_role(bus, "blk", role);
	return shmbus_channel_open(s->dir, "ch");
}

static void close_as(shmbus_channel *ch, shmbus_bus *bus)
{
	shmbus_channel_close(ch);
	if (bus)
		shmbus_disconnect(bus);
}

/* Waits up to 10 s for *flag. */
static bool await(volatile int *flag)
{
	for (int i = 0; i < 10000 && !*flag; i++)
		usleep(1000);
	return *flag;
}

/* ------------------------------------------- the slots producers scan */

struct held {
	struct shared *s;
	int intact;
};

/* The first message: said held, kept until the producer is done, then
 * checked in place. */
static int hold_first(const struct shmbus_msg *m, void *arg)
{
	struct held *h = arg;
	uint32_t id;
	uint64_t seq;

	h->s->holding = 1;
	await(&h->s->done);
	/* The first message published (its number 0), whole: a message
	 * written over it would be whole too, but another one. */
	h->intact = th_msg_check(m->data, m->len, &id, &seq) == 0 &&
		    m->len == MSG && seq == 0 && id == 1;
	return 0;
}

/* An honest block-policy subscriber reading its first message in place,
 * slowly.  Exits 0 if the message was whole once its handler was done,
 * 20 if it was written over meanwhile. */
static int slow_reader(void *arg)
{
	struct shared *s = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(s, &bus, SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, NULL) : NULL;
	struct held h = { s, -1 };
	int rc = 0;

	if (!sub)
		return 2;
	s->ready = 1;
	for (int i = 0; i < 10000 && rc == 0; i++) {
		rc = shmbus_poll(sub, hold_first, &h, 1);
		if (rc == 0)
			usleep(1000);
	}
	if (rc != 1)
		return 3;
	shmbus_sub_close(sub);
	close_as(ch, bus);
	return h.intact ? 0 : 20;
}

/* A process let in to subscribe that writes the count of slots ever
 * used down to 0, again and again, until told to stop.  It takes no slot
 * of its own: its cursor would hold the producer back too. */
static int lower_the_mark(void *arg)
{
	struct shared *s = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(s, &bus, SHMBUS_ROLE_SUBSCRIBE);

	if (!ch)
		return 2;
	while (!s->stop) {
		__atomic_store_n(&ch->hdr->nsub_hwm, 0, __ATOMIC_RELAXED);
		s->writes++;
		usleep(50);
	}
	close_as(ch, bus);
	return 0;
}

/* The producer: one message, which the honest subscriber holds; then,
 * while the mark is written down, as many as a ring and a half would
 * take, none waiting for room.  Returns how many were refused. */
static int produce_past_the_reader(struct shared *s, pid_t reader)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(s, &bus, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	struct shmbus_channel_info in;
	uint8_t m[MSG];
	int refused = 0;
	uint64_t n;

	cr_assert(p, "publisher: %s", strerror(errno));
	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	th_msg_fill(m, sizeof(m), 1, 0);
	cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	cr_assert(await(&s->holding), "the reader took nothing");
	n = in.capacity * 3 / 2 / (MSG + SHMBUS_REC_HDR);
	for (uint64_t i = 1; i <= n; i++) {
		th_msg_fill(m, sizeof(m), 1, i);
		int rc = shmbus_publish(p, m, sizeof(m));

		cr_assert(rc == 0 || rc == -EAGAIN, "publish: %d", rc);
		refused += rc == -EAGAIN;
		/* Let the hostile writer in between the claims. */
		if (i % 8 == 0)
			usleep(200);
	}
	s->done = 1;
	cr_assert_eq(th_wait(reader), 0, "the message the subscriber read in "
		     "place was written over while it read it (exit 20: torn); "
		     "%d of %llu publishes refused", refused,
		     (unsigned long long)n);
	shmbus_pub_close(p);
	close_as(ch, bus);
	return refused;
}

static void mark_written_down(struct shared *s)
{
	pid_t reader, hostile;
	int refused;

	reader = th_spawn(slow_reader, s);
	cr_assert(await(&s->ready), "the reader did not subscribe");
	hostile = th_spawn(lower_the_mark, s);
	while (s->writes < 10)
		usleep(1000);
	refused = produce_past_the_reader(s, reader);
	s->stop = 1;
	cr_assert_eq(th_wait(hostile), 0);
	cr_assert_gt(refused, 0, "the producer was never held back by the "
		     "reader");
	cr_log_info("%d publishes refused; %d writes of the mark", refused,
		    s->writes);
}

/*
 * A subscriber writes hdr.nsub_hwm (how many subscriber slots producers
 * scan for cursors) down to 0 while an honest subscriber of a block
 * channel reads a record in place: the producer must still be held back
 * by that subscriber's cursor, not write over the record it reads.
 */
Test(hostile_sub, a_lowered_slot_count_lets_no_producer_over_a_reader)
{
	struct shared *s = shared_new(false);
	shmbus_channel *ch;

	snprintf(s->dir, sizeof(s->dir), "%s", th_mkdir());
	ch = th_create(s->dir, 16384, 2048, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	mark_written_down(s);
	shmbus_channel_close(ch);
	th_rmdir(s->dir);
}

/* The same under shmbusd, whose scan raises a lowered mark again (and
 * logs it): the hostile subscriber writes it down faster than that. */
Test(hostile_sub, a_lowered_slot_count_under_shmbusd, .init = setup,
     .fini = teardown)
{
	mark_written_down(shared_new(true));
}

/* ----------------------------------------------------- the wake words */

/* An honest subscriber that sleeps (SHMBUS_WAIT_SLEEP) in a wait without
 * a timeout, then reads the message that woke it.  Exits 0 once read. */
static int sleeper(void *arg)
{
	struct shared *s = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(s, &bus, SHMBUS_ROLE_SUBSCRIBE);
	struct shmbus_sub_attr a;
	shmbus_sub *sub;
	uint8_t buf[64];
	int rc;

	shmbus_sub_attr_init(&a);
	a.wait = SHMBUS_WAIT_SLEEP;
	a.spin_ns = 1000;
	sub = ch ? shmbus_sub_open(ch, &a) : NULL;
	if (!sub)
		return 2;
	/* Announces itself (sleep_ok, its membarrier()) before the first
	 * wait, and finds nothing. */
	if (shmbus_wait(sub, 1000000) != -ETIMEDOUT)
		return 3;
	s->sleeping = 1;
	rc = shmbus_wait(sub, -1);
	if (rc)
		return 4;
	if (shmbus_read(sub, buf, sizeof(buf), NULL) != 8)
		return 5;
	shmbus_sub_close(sub);
	close_as(ch, bus);
	return 0;
}

enum wake_word { SLEEP_OK, SLEEPERS };

struct wake_attack {
	struct shared *s;
	enum wake_word word;
};

/* A subscriber that writes a wake word to 0 once the sleeper sleeps. */
static int clear_wake_word(void *arg)
{
	struct wake_attack *w = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(w->s, &bus, SHMBUS_ROLE_SUBSCRIBE);

	if (!ch)
		return 2;
	if (w->word == SLEEP_OK)
		__atomic_store_n(&ch->hdr->sleep_ok, 0, __ATOMIC_RELAXED);
	else
		__atomic_store_n(&ch->hdr->sleepers, 0, __ATOMIC_RELAXED);
	close_as(ch, bus);
	return 0;
}

/* Whether some subscriber slot says its owner is inside a futex wait. */
static bool someone_sleeps(shmbus_channel *ch)
{
	for (unsigned i = 0; i < SHMBUS_MAX_SLOTS; i++)
		if (__atomic_load_n(&ch->subs[i].sleeping, __ATOMIC_RELAXED))
			return true;
	return false;
}

/* How long a sleeper may be late when its wake words were written over
 * (a bounded cost, not a sleep for ever). */
#define LATE_MS 1000

static void wake_word_cleared(struct shared *s, enum wake_word word)
{
	struct wake_attack w = { s, word };
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(s, &bus, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t m = 42, t0;
	pid_t pid;
	int st = -1;

	cr_assert(p, "publisher: %s", strerror(errno));
	pid = th_spawn(sleeper, s);
	cr_assert(await(&s->sleeping), "the sleeper did not start");
	for (int i = 0; i < 5000 && !someone_sleeps(ch); i++)
		usleep(1000);
	cr_assert(someone_sleeps(ch), "the sleeper never slept");
	usleep(20000);	/* in the kernel by now */
	cr_assert_eq(th_wait(th_spawn(clear_wake_word, &w)), 0);
	cr_assert_eq(shmbus_publish(p, &m, sizeof(m)), 0);
	t0 = th_now_ns();
	while (th_now_ns() - t0 < (uint64_t)LATE_MS * 1000000 * 3 &&
	       waitpid(pid, &st, WNOHANG) == 0)
		usleep(1000);
	if (st == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		cr_assert_fail("a sleeper whose %s word was written to 0 slept "
			       "on past a message (%d ms and more)",
			       word == SLEEP_OK ? "sleep_ok" : "sleepers",
			       3 * LATE_MS);
	}
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sleeper: status "
		  "%#x", st);
	cr_log_info("woken %llu ms after the message",
		    (unsigned long long)((th_now_ns() - t0) / 1000000));
	shmbus_pub_close(p);
	close_as(ch, bus);
}

static void direct_wake(enum wake_word word)
{
	struct shared *s = shared_new(false);
	shmbus_channel *ch;

	snprintf(s->dir, sizeof(s->dir), "%s", th_mkdir());
	ch = th_create(s->dir, 16384, 2048, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	wake_word_cleared(s, word);
	shmbus_channel_close(ch);
	th_rmdir(s->dir);
}

/*
 * A subscriber clears hdr.sleep_ok (the bits by which producers know a
 * subscriber may sleep, and make the wake check) while an honest one
 * sleeps in shmbus_wait() without a timeout: a message published then
 * wakes it late at worst, never not at all.
 */
Test(hostile_sub, a_cleared_sleep_ok_keeps_no_sleeper_asleep)
{
	direct_wake(SLEEP_OK);
}

/* The same with hdr.sleepers (the count of subscribers asleep). */
Test(hostile_sub, a_cleared_sleeper_count_keeps_no_sleeper_asleep)
{
	direct_wake(SLEEPERS);
}

/* Both under shmbusd, the hostile and honest subscribers let in by it. */
Test(hostile_sub, wake_words_cleared_under_shmbusd, .init = setup,
     .fini = teardown)
{
	wake_word_cleared(shared_new(true), SLEEP_OK);
	wake_word_cleared(shared_new(true), SLEEPERS);
}

/* ------------------------------------------------- the identity lines */

struct ident_attack {
	unsigned word;	/* which 8-byte word of lines 0 and 1 */
};

/* A subscriber that writes one word of the header's identity (lines 0
 * and 1: magic, version, sizes, capacity, max_msg, flags, data_id...). */
static int write_identity(void *arg)
{
	const struct ident_attack *a = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	uint64_t *w;

	if (!ch)
		return 2;
	w = (uint64_t *)(void *)ch->hdr + a->word;
	__atomic_store_n(w, ~__atomic_load_n(w, __ATOMIC_RELAXED) ^ 0x5a,
			 __ATOMIC_RELAXED);
	close_as(ch, bus);
	return 0;
}

/*
 * A subscriber writes over the identity lines of the control file, which
 * every later open validates: under shmbusd, which holds what it
 * validated, the channel opens again within a scan or so, the handles
 * open meanwhile go on, and the writing is logged.  Without it, every
 * later open of the channel would be refused for good (-EPROTO,
 * -EBADMSG), and a restarted shmbusd would set the files aside and make
 * the channel afresh, empty.
 */
Test(hostile_sub, identity_written_over_is_set_back_by_shmbusd,
     .init = setup, .fini = teardown)
{
	shmbus_bus *pb, *sb;
	shmbus_channel *pc = open_role(&pb, "blk", SHMBUS_ROLE_PUBLISH);
	shmbus_channel *sc = open_role(&sb, "blk", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_pub *p = pc ? shmbus_pub_open(pc, NULL) : NULL;
	shmbus_sub *s = sc ? shmbus_sub_open(sc, NULL) : NULL;
	uint64_t m = 7, got;

	cr_assert(p && s, "open: %s", strerror(errno));
	for (unsigned k = 0; k < 16; k++) {
		struct ident_attack a = { k };
		shmbus_bus *nb = NULL;
		shmbus_channel *nc = NULL;
		int err = 0;

		cr_assert_eq(th_wait(th_spawn(write_identity, &a)), 0);
		for (int i = 0; i < 2000 && !nc; i++) {
			nc = open_role(&nb, "blk", SHMBUS_ROLE_SUBSCRIBE);
			if (!nc) {
				err = errno;
				if (nb)
					shmbus_disconnect(nb);
				usleep(1000);
			}
		}
		cr_assert(nc, "word %u of the identity written over: opens "
			  "refused for 2 s and more (%s)", k, strerror(err));
		close_as(nc, nb);
		m = k;
		cr_assert_eq(shmbus_publish(p, &m, sizeof(m)), 0);
		cr_assert_eq(shmbus_read(s, &got, sizeof(got), NULL),
			     sizeof(got), "a subscriber open before");
		cr_assert_eq(got, k);
	}
	cr_assert(log_has("of the header's identity were written over"),
		  "not logged (%s)", d.log);
	shmbus_sub_close(s);
	shmbus_pub_close(p);
	close_as(sc, sb);
	close_as(pc, pb);
}

/* ------------------------------------------- a cursor inside a record */

/* Publishes n messages of 200 bytes, zeros after their check bytes. */
static void publish_zeros(shmbus_pub *p, uint32_t n, uint64_t *seq)
{
	uint8_t m[200];

	for (uint32_t i = 0; i < n; i++) {
		memset(m, 0, sizeof(m));
		th_msg_fill(m, TH_MSG_MIN, 1, (*seq)++);
		cr_assert_eq(shmbus_publish(p, m, sizeof(m)), 0);
	}
}

struct inside {
	struct shared *s;
	uint64_t at;		/* where the hostile cursor points */
	volatile int *set;	/* said once it does */
	volatile int *quit;
};

/* A subscriber that writes its own cursor (a word it owns) into the
 * middle of a record, 8-aligned, and stays. */
static int cursor_inside(void *arg)
{
	struct inside *in = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = open_as(in->s, &bus, SHMBUS_ROLE_SUBSCRIBE);
	struct shmbus_sub_attr a;
	shmbus_sub *sub;

	shmbus_sub_attr_init(&a);
	a.start = SHMBUS_START_OLDEST;
	sub = ch ? shmbus_sub_open(ch, &a) : NULL;
	if (!sub)
		return 2;
	for (int i = 0; i < 10000 && !*in->quit; i++) {
		__atomic_store_n(&sub->slot->pos, in->at, __ATOMIC_RELEASE);
		*in->set = 1;
		usleep(1000);
	}
	shmbus_sub_close(sub);
	close_as(ch, bus);
	return 0;
}

/*
 * A subscriber's cursor written (by itself) 8-aligned into the middle of
 * a record: a subscriber that opens at the oldest record (block policy)
 * must not start there, where payload bytes would read as a claim never
 * committed (it would wait for ever, and its cursor hold the producers
 * a lap on) or as a record of their own (a message nobody published).
 */
static void cursor_inside_a_record(struct shared *s)
{
	volatile int *flags = mmap(NULL, 2 * sizeof(int),
				   PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct inside in = { s, 0, flags, flags + 1 };
	shmbus_bus *pb, *sb;
	shmbus_channel *pc = open_as(s, &pb, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = pc ? shmbus_pub_open(pc, NULL) : NULL;
	shmbus_channel *sc;
	struct shmbus_sub_attr a;
	shmbus_sub *sub;
	uint64_t seq = 0, h0;
	uint8_t buf[256];
	int got = 0;
	pid_t hostile;

	cr_assert(flags != MAP_FAILED);
	cr_assert(p, "publisher: %s", strerror(errno));
	flags[0] = flags[1] = 0;
	publish_zeros(p, 4, &seq);
	h0 = th_head(pc);
	publish_zeros(p, 4, &seq);
	/* 64 bytes into the record at h0: its payload's zeros. */
	in.at = h0 + 64;
	hostile = th_spawn(cursor_inside, &in);
	cr_assert(await(flags), "the hostile subscriber did not start");
	sc = open_as(s, &sb, SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub_attr_init(&a);
	a.start = SHMBUS_START_OLDEST;
	sub = sc ? shmbus_sub_open(sc, &a) : NULL;
	cr_assert(sub, "subscriber: %s", strerror(errno));
	publish_zeros(p, 4, &seq);
	for (int i = 0; i < 1000 && got < 4; i++) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t sq;

		if (r == -EAGAIN) {
			usleep(1000);
			continue;
		}
		cr_assert_eq(r, 200, "read: %zd (a message nobody published?)",
			     r);
		cr_assert_eq(th_msg_check(buf, TH_MSG_MIN, &id, &sq), 0,
			     "a message nobody published");
		got++;
	}
	flags[1] = 1;
	cr_assert_eq(th_wait(hostile), 0);
	cr_assert_geq(got, 4, "a subscriber started at a cursor inside a "
		      "record read %d messages of 4 in a second", got);
	shmbus_sub_close(sub);
	close_as(sc, sb);
	shmbus_pub_close(p);
	close_as(pc, pb);
}

Test(hostile_sub, a_cursor_inside_a_record_is_nobodys_start)
{
	struct shared *s = shared_new(false);
	shmbus_channel *ch;

	snprintf(s->dir, sizeof(s->dir), "%s", th_mkdir());
	ch = th_create(s->dir, 16384, 2048, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	cursor_inside_a_record(s);
	shmbus_channel_close(ch);
	th_rmdir(s->dir);
}

Test(hostile_sub, a_cursor_inside_a_record_under_shmbusd, .init = setup,
     .fini = teardown)
{
	cursor_inside_a_record(shared_new(true));
}

/*
 * The other side: an honest cursor is where a subscriber at the oldest
 * starts, wherever the reader stopped (any lap, inside a batch, across
 * segments), so that it gets every message that cursor still holds.
 */
Test(hostile_sub, an_honest_cursor_is_still_the_oldest_start)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 16384, 2048, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	shmbus_sub *slow = shmbus_sub_open(ch, NULL);
	struct shmbus_sub_attr a;
	uint8_t m[8][600], buf[2048];
	struct iovec iov[8];
	uint64_t seq = 0, want = 0;
	unsigned tried = 0;

	cr_assert(p && slow);
	shmbus_sub_attr_init(&a);
	a.start = SHMBUS_START_OLDEST;
	for (unsigned round = 0; round < 300; round++) {
		unsigned n = 1 + round % 7;
		struct shmbus_msg info;
		shmbus_sub *late;

		for (unsigned i = 0; i < n; i++) {
			size_t l = TH_MSG_MIN + (round * 37 + i * 101) % 560;

			th_msg_fill(m[i], l, 1, seq++);
			iov[i] = (struct iovec){ m[i], l };
		}
		cr_assert_eq(shmbus_publish_batch(p, iov, n), (int)n,
			     "round %u", round);
		/* The slow reader takes all but the last (round % 3) of what
		 * it has not read: its cursor is inside a batch or not. */
		while (want + round % 3 < seq) {
			uint32_t id;
			uint64_t s;
			ssize_t r = shmbus_read(slow, buf, sizeof(buf), NULL);

			cr_assert_gt(r, 0, "round %u: %zd", round, r);
			cr_assert_eq(th_msg_check(buf, (size_t)r, &id, &s), 0);
			cr_assert_eq(s, want++);
		}
		sb_sub_publish(slow);
		late = shmbus_sub_open(ch, &a);
		cr_assert(late);
		if (want < seq) {
			uint32_t id;
			uint64_t s;
			ssize_t r = shmbus_read(late, buf, sizeof(buf), &info);

			cr_assert_gt(r, 0, "round %u: %zd", round, r);
			cr_assert_eq(th_msg_check(buf, (size_t)r, &id, &s), 0);
			cr_assert_eq(s, want, "round %u: a subscriber at the "
				     "oldest starts at %llu, not at the slow "
				     "one's %llu", round,
				     (unsigned long long)s,
				     (unsigned long long)want);
			tried++;
		}
		shmbus_sub_close(late);
	}
	cr_assert_gt(tried, 100);
	shmbus_sub_close(slow);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
