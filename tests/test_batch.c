/* SPDX-License-Identifier: MIT */
/*
 * test_batch.c - batches between real processes: a reader never finds part
 * of a batch readable and the rest not yet (single and multi producer),
 * and a producer killed with SIGKILL in the middle of a batch leaves
 * nothing of it to read, while everything it published before is read
 * whole and the stream goes on after the repair.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "helpers.h"

/*
 * Batches are seen whole: a reader that keeps up with a producer of
 * batches never finds part of one readable and the rest not yet.  Every
 * message carries its batch's length as its id; the reader, spinning on
 * shmbus_read(), checks that whenever it finds nothing to read it is at a
 * batch boundary.
 */
struct batches {
	const char *dir;
	uint64_t n;		/* messages */
};

static uint32_t batch_len(uint64_t b)
{
	return 1 + (uint32_t)((b * 7) % 16);
}

static int batch_producer(void *arg)
{
	struct batches *bt = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_channel *ch = shmbus_channel_open(bt->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	static uint8_t msg[16][64];
	struct iovec iov[16];

	if (!pub)
		return 2;
	for (uint64_t s = 0, b = 0; s < bt->n; b++) {
		uint32_t k = batch_len(b);

		for (uint32_t i = 0; i < k; i++) {
			iov[i].iov_base = msg[i];
			iov[i].iov_len = TH_MSG_MIN + (s + i) % 40;
			th_msg_fill(msg[i], iov[i].iov_len, k, s + i);
		}
		if (shmbus_publish_batch(pub, iov, k) != (int)k)
			return 3;
		s += k;
	}
	return 0;
}

static void batches_seen_whole(enum shmbus_producers prod)
{
	struct batches bt = { .dir = th_mkdir(),
			      .n = th_env_count("SHMBUS_STRESS_N", 10000000) / 50 };
	shmbus_channel *ch = th_create(bt.dir, 1u << 16, 256, SHMBUS_BLOCK, prod);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	uint64_t got = 0, empty = 0, partial = 0;
	uint32_t left = 0;
	uint8_t buf[256];
	pid_t pid;

	uint64_t s = 0;

	/* Whole batches only, up to n or just past it: the producer's n. */
	for (uint64_t b = 0; s < bt.n; b++)
		s += batch_len(b);
	bt.n = s;
	pid = th_spawn(batch_producer, &bt);
	while (got < bt.n) {
		struct shmbus_msg m;
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), &m);
		uint64_t seq;
		uint32_t id;

		if (len == -EAGAIN) {
			empty++;
			partial += left != 0;
			continue;
		}
		cr_assert_geq(len, 0, "read: %s", shmbus_strerror((int)len));
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0,
			     "torn message");
		cr_assert_eq(seq, got, "order");
		if (left == 0)
			left = id;	/* the first of a batch of `id` */
		left--;
		got++;
	}
	cr_assert_eq(th_wait(pid), 0);
	cr_assert_gt(empty, 0, "the reader never caught up: nothing tested");
	cr_assert_eq(partial, 0, "%llu times of %llu the reader found a batch "
		     "partly readable", (unsigned long long)partial,
		     (unsigned long long)empty);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(bt.dir);
}

Test(batch, seen_whole_single_producer, .timeout = 300)
{
	batches_seen_whole(SHMBUS_SINGLE_PRODUCER);
}

Test(batch, seen_whole_multi_producer, .timeout = 300)
{
	batches_seen_whole(SHMBUS_MULTI_PRODUCER);
}

/*
 * A producer killed (SIGKILL) in the middle of a batch: what it published
 * is read whole, the batch it was writing is not read at all (the next
 * producer pads over it), and the stream goes on.  Message i of a batch of
 * k starts and ends with the word k << 16 | i.  The producer publishes the
 * same batch over and over, so it spends its time inside
 * shmbus_publish_batch(), copying, and the reader (which copies nothing)
 * keeps up with it.
 */
#define KILL_BATCH 256u
#define KILL_LEN 1024u

static int killed_producer(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_channel *ch = shmbus_channel_open(arg, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	static uint64_t msg[KILL_BATCH][KILL_LEN / 8];
	struct iovec iov[KILL_BATCH];

	if (!pub)
		return 2;
	for (uint32_t i = 0; i < KILL_BATCH; i++) {
		msg[i][0] = msg[i][KILL_LEN / 8 - 1] = KILL_BATCH << 16 | i;
		iov[i].iov_base = msg[i];
		iov[i].iov_len = KILL_LEN;
	}
	for (;;)
		if (shmbus_publish_batch(pub, iov, KILL_BATCH) !=
		    (int)KILL_BATCH)
			return 3;
}

struct whole {
	uint32_t left;		/* messages still due in this batch */
	uint64_t got;
	int bad;
};

static int whole_msg(const struct shmbus_msg *m, void *arg)
{
	struct whole *w = arg;
	const uint64_t *p = m->data;
	uint64_t id;

	if (m->len < 16 || m->len % 8) {
		w->bad = 1;
		return 1;
	}
	id = p[0];
	if (p[m->len / 8 - 1] != id || (id >> 16) == 0 ||
	    (w->left == 0 ? (id & 0xffff) != 0
			  : (id & 0xffff) != (id >> 16) - w->left)) {
		w->bad = 1;	/* torn, or a batch cut short or entered late */
		return 1;
	}
	if (w->left == 0)
		w->left = (uint32_t)(id >> 16);
	w->left--;
	w->got++;
	return 0;
}

/* Reads until `want` messages or until nothing comes for a while. */
static void read_whole(shmbus_sub *sub, struct whole *w, uint64_t want)
{
	for (int idle = 0; w->got < want && idle < 100000 && !w->bad;) {
		int rc = shmbus_poll(sub, whole_msg, w, 0);

		cr_assert_geq(rc, 0, "poll: %s", shmbus_strerror(rc));
		idle = rc ? 0 : idle + 1;
	}
	cr_assert_eq(w->bad, 0, "a torn message, or a batch seen in part "
		     "(%u messages short)", w->left);
}

Test(batch, producer_killed_mid_batch, .timeout = 300)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 20, KILL_LEN, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_sub *sub = shmbus_sub_open(ch, NULL);
	struct shmbus_channel_info in = { 0 };
	struct whole w = { 0 };
	uint64_t one[2] = { 1u << 16, 1u << 16 };
	shmbus_pub *pub;

	/* Until two kills have landed inside a batch (each new producer
	 * repairs its dead predecessor's claim when it takes the role).  Run
	 * alone, that takes two or three rounds; next to other spinning
	 * tests the producer often waits for room when it is killed. */
	uint64_t give_up = th_now_ns() + 60000000000ull;

	while (in.repairs < 2 && th_now_ns() < give_up) {
		pid_t pid = th_spawn(killed_producer, (void *)dir);

		read_whole(sub, &w, w.got + 4 * KILL_BATCH);
		kill(pid, SIGKILL);
		cr_assert_eq(th_wait(pid), 128 + SIGKILL);
		read_whole(sub, &w, UINT64_MAX);
		cr_assert_eq(w.left, 0, "a batch cut short at the kill");
		pub = shmbus_pub_open(ch, NULL);	/* repairs */
		cr_assert_not_null(pub);
		shmbus_pub_close(pub);
		shmbus_channel_info(ch, &in);
	}
	cr_assert_geq(in.repairs, 2, "no kill landed inside a batch");
	/* After the padding, the stream goes on. */
	pub = shmbus_pub_open(ch, NULL);
	cr_assert_eq(shmbus_publish(pub, one, sizeof(one)), 0);
	w.got = 0;
	read_whole(sub, &w, 1);
	cr_assert_eq(w.got, 1);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
