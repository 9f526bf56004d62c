/* SPDX-License-Identifier: MIT */
/*
 * test_stress.c - producer and subscriber processes over real shared
 * memory.  One stress routine, instantiated per ring mode: every message
 * carries (producer id, sequence, checksum); every subscriber checks that
 * it sees each producer's messages whole and in order, and, on a block
 * channel, every message exactly once.  On an overwrite channel the gaps
 * it sees must add up exactly to the loss count the library reports.
 *
 * SHMBUS_STRESS_N sets the messages per producer (default 4 million: on
 * two CPUs four spinning processes share them, and a run's time swings
 * between 5 and 30 s a test with the scheduler's choices; the sanitizer
 * runs use fewer, a soak more).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"

#define MAXP 4
#define MAX_LEN 200

struct stress {
	const char *dir;
	enum shmbus_policy policy;
	enum shmbus_producers producers;
	int nprod, nsub;
	uint64_t n;		/* messages per producer */
	uint64_t cap;
	uint32_t id;		/* of this child */
	enum shmbus_wait wait;
	size_t max_len;		/* 0: MAX_LEN */
};

static size_t len_for(const struct stress *st, uint64_t seq, uint32_t id)
{
	size_t max = st->max_len ? st->max_len : MAX_LEN;

	return TH_MSG_MIN + (size_t)((seq * 7 + id * 13) % (max - TH_MSG_MIN));
}

static int producer(void *arg)
{
	struct stress *st = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	uint8_t msg[MAX_LEN];
	shmbus_channel *ch = shmbus_channel_open(st->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;

	if (!pub) {
		fprintf(stderr, "producer %u: open: %s\n", st->id,
			shmbus_strerror(errno));
		return 2;
	}
	for (uint64_t s = 0; s < st->n; s++) {
		size_t len = len_for(st, s, st->id);
		int rc;

		/* Alternate the three ways of publishing. */
		if (s % 3 == 0) {
			void *buf;

			rc = shmbus_claim(pub, len, &buf);
			if (!rc) {
				th_msg_fill(buf, len, st->id, s);
				rc = shmbus_commit(pub);
			}
		} else {
			th_msg_fill(msg, len, st->id, s);
			if (s % 3 == 1) {
				rc = shmbus_publish(pub, msg, len);
			} else {
				struct iovec iov[2] = { { msg, 10 },
							{ msg + 10, len - 10 } };

				rc = shmbus_publishv(pub, iov, 2);
			}
		}
		if (rc) {
			fprintf(stderr, "producer %u: publish %lu: %s\n", st->id,
				(unsigned long)s, shmbus_strerror(rc));
			return 3;
		}
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	return 0;
}

struct check {
	const struct stress *st;
	uint64_t next[MAXP];	/* expected next sequence per producer */
	uint64_t got;
	uint64_t gaps;
	int bad;
};

static int on_msg(const struct shmbus_msg *m, void *arg)
{
	struct check *c = arg;
	uint64_t seq;
	uint32_t id;

	if (th_msg_check(m->data, m->len, &id, &seq) || id >= MAXP) {
		const uint8_t *b = m->data;
		uint32_t l4 = 0;

		if (m->len >= 8)
			memcpy(&l4, b + 4, 4);
		fprintf(stderr, "torn or foreign message at pos %lu (off %lu) "
			"len %u (inner len %u) seq %lu\n",
			(unsigned long)m->pos,
			(unsigned long)(m->pos & (c->st->cap - 1)), m->len, l4,
			(unsigned long)m->seq);
		c->bad = 1;
		return 1;
	}
	if (seq < c->next[id] ||
	    (c->st->policy == SHMBUS_BLOCK && seq != c->next[id])) {
		fprintf(stderr, "producer %u: seq %lu, expected %lu\n", id,
			(unsigned long)seq, (unsigned long)c->next[id]);
		c->bad = 1;
		return 1;
	}
	c->gaps += seq - c->next[id];
	c->next[id] = seq + 1;
	c->got++;
	return 0;
}

static int subscriber(void *arg)
{
	const struct stress *st = arg;
	struct shmbus_sub_attr sa = { .wait = st->wait };
	struct check c = { .st = st };
	uint64_t total = st->n * (uint64_t)st->nprod;
	uint64_t deadline = th_now_ns() + UINT64_C(600) * 1000000000u;
	struct shmbus_sub_stats ss;
	shmbus_channel *ch = shmbus_channel_open(st->dir, "ch");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;

	if (!sub)
		return 2;
	for (;;) {
		struct shmbus_channel_info in;
		int rc = shmbus_poll(sub, on_msg, &c, 256);

		if (rc < 0 || c.bad) {
			if (rc < 0)
				fprintf(stderr, "subscriber: %s\n",
					shmbus_strerror(rc));
			return 3;
		}
		if (rc > 0)
			continue;
		shmbus_channel_info(ch, &in);
		shmbus_sub_stats(sub, &ss);
		if (in.published == total && ss.lag_bytes == 0)
			break;
		if (th_now_ns() > deadline)
			return 4;
		shmbus_wait(sub, 1000000);
	}
	/* Messages lost at the tail of a producer's stream are gaps too. */
	for (int i = 0; i < st->nprod; i++)
		c.gaps += st->n - c.next[i];
	shmbus_sub_stats(sub, &ss);
	if (c.got + c.gaps != total || ss.lost != c.gaps ||
	    ss.delivered != c.got) {
		fprintf(stderr, "got %lu gaps %lu lost %lu total %lu\n",
			(unsigned long)c.got, (unsigned long)c.gaps,
			(unsigned long)ss.lost, (unsigned long)total);
		return 5;
	}
	if (st->policy == SHMBUS_BLOCK && c.got != total)
		return 6;
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	return 0;
}

/* Waits for whichever of the children pids[0..n) ends first (0: already
 * reaped), marks it reaped and returns its index; *rc is its exit status,
 * or 128 + the signal that killed it. */
static int wait_any(pid_t *pids, int n, int *rc)
{
	for (;;) {
		int st;
		pid_t pid = waitpid(-1, &st, 0);

		cr_assert(pid > 0 || errno == EINTR, "waitpid: %s",
			  strerror(errno));
		for (int i = 0; pid > 0 && i < n; i++) {
			if (pids[i] != pid)
				continue;
			pids[i] = 0;
			*rc = WIFSIGNALED(st) ? 128 + WTERMSIG(st)
					      : WEXITSTATUS(st);
			return i;
		}
	}
}

static void run_stress(struct stress st)
{
	struct shmbus_channel_info in;
	struct stress kids[2 * MAXP];
	pid_t pids[2 * MAXP];
	shmbus_channel *ch;
	int k = 0;

	st.dir = th_mkdir();
	ch = th_create(st.dir, st.cap, MAX_LEN, st.policy, st.producers);
	for (int i = 0; i < st.nsub; i++, k++) {
		kids[k] = st;
		kids[k].id = (uint32_t)i;
		pids[k] = th_spawn(subscriber, &kids[k]);
	}
	do {	/* subscribers start at the newest message: let them join */
		usleep(1000);
		shmbus_channel_info(ch, &in);
	} while (in.subscribers < (uint32_t)st.nsub);
	for (int i = 0; i < st.nprod; i++, k++) {
		kids[k] = st;
		kids[k].id = (uint32_t)i;
		pids[k] = th_spawn(producer, &kids[k]);
	}
	/* In the order they end: once one has failed, the others are
	 * killed, since a producer would wait for ever on a block channel
	 * whose subscriber gave up. */
	for (int left = k, failed = 0; left > 0; left--) {
		int rc, i = wait_any(pids, k, &rc);

		cr_expect_eq(rc, 0, "%s %d failed with %d",
			     i < st.nsub ? "subscriber" : "producer", i, rc);
		if (rc && !failed) {
			failed = 1;
			for (int j = 0; j < k; j++)
				if (pids[j] > 0)
					kill(pids[j], SIGKILL);
		}
	}
	shmbus_channel_info(ch, &in);
	cr_expect_eq(in.published, st.n * (uint64_t)st.nprod);
	shmbus_channel_close(ch);
	th_rmdir(st.dir);
}

static uint64_t count(void)
{
	return th_env_count("SHMBUS_STRESS_N", 4000000);
}

Test(stress, multi_producer_block_2p_2s, .timeout = 900)
{
	run_stress((struct stress){ .policy = SHMBUS_BLOCK,
				    .producers = SHMBUS_MULTI_PRODUCER,
				    .nprod = 2, .nsub = 2, .n = count(),
				    .cap = 1u << 20, .wait = SHMBUS_WAIT_YIELD });
}

Test(stress, single_producer_block_1p_2s, .timeout = 900)
{
	run_stress((struct stress){ .policy = SHMBUS_BLOCK,
				    .producers = SHMBUS_SINGLE_PRODUCER,
				    .nprod = 1, .nsub = 2, .n = count() / 4,
				    .cap = 1u << 16, .wait = SHMBUS_WAIT_SLEEP });
}

Test(stress, multi_producer_overwrite_2p_2s, .timeout = 900)
{
	run_stress((struct stress){ .policy = SHMBUS_OVERWRITE,
				    .producers = SHMBUS_MULTI_PRODUCER,
				    .nprod = 2, .nsub = 2, .n = count() / 4,
				    .cap = 1u << 14, .wait = SHMBUS_WAIT_YIELD });
}

Test(stress, single_producer_overwrite_small_ring, .timeout = 900)
{
	run_stress((struct stress){ .policy = SHMBUS_OVERWRITE,
				    .producers = SHMBUS_SINGLE_PRODUCER,
				    .nprod = 1, .nsub = 2, .n = count() / 4,
				    .cap = 4096, .wait = SHMBUS_WAIT_SPIN });
}

/* Messages small enough for the mailbox (docs/design.md §5), to spinning
 * subscribers that keep up: most of them are taken from the mailbox while
 * the producer is rewriting it. */
Test(stress, single_producer_block_mailbox, .timeout = 900)
{
	run_stress((struct stress){ .policy = SHMBUS_BLOCK,
				    .producers = SHMBUS_SINGLE_PRODUCER,
				    .nprod = 1, .nsub = 2, .n = count() / 8,
				    .cap = 1u << 16, .wait = SHMBUS_WAIT_SPIN,
				    .max_len = SHMBUS_MBOX_INLINE + 1 });
}

Test(stress, single_producer_overwrite_mailbox, .timeout = 900)
{
	run_stress((struct stress){ .policy = SHMBUS_OVERWRITE,
				    .producers = SHMBUS_SINGLE_PRODUCER,
				    .nprod = 1, .nsub = 2, .n = count() / 8,
				    .cap = 4096, .wait = SHMBUS_WAIT_SPIN,
				    .max_len = SHMBUS_MBOX_INLINE + 1 });
}
