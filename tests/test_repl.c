/* SPDX-License-Identifier: MIT */
/*
 * test_repl.c - replication between two shmbusd, each in its own network
 * namespace (repl_fixture.h): real daemons, real TCP over a veth pair,
 * real kills, links cut, loss, flipped bits.
 *
 * SHMBUS_REPL_MSGS sets the length of the long streams (default 1000000
 * messages per channel).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"

#define CHANS \
	"[channel sp]\ncapacity = 1M\nmax_msg = 4K\nreplicate = applied\n" \
	"[channel mp]\ncapacity = 1M\nmax_msg = 4K\nproducers = multi\n" \
	"replicate = received\n"

static void fini(void)
{
	pair_teardown();
}

/* A publisher on A: n self-checking messages of mixed sizes (24..max),
 * producer id `id`, then a pub_sync.  Returns 0, or the step that
 * failed. */
struct pubarg {
	const char *chan;
	uint64_t n;
	uint32_t id, max;
	bool sync_each;		/* pub_sync after every message */
};

static int publisher(void *arg)
{
	const struct pubarg *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 10000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[4096];
	uint64_t x = 0x9e3779b97f4a7c15ull * (p->id + 1);
	int rc;

	if (!pub)
		return 2;
	for (uint64_t i = 0; i < p->n; i++) {
		size_t len;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* Mostly small, some up to max. */
		len = TH_MSG_MIN + (x % 8 == 0 ? x % (p->max - TH_MSG_MIN)
					       : x % 100);
		th_msg_fill(msg, len, p->id, i);
		if (shmbus_publish(pub, msg, len))
			return 3;
		if (p->sync_each && shmbus_pub_sync(pub, 5000000000LL) != 0)
			return 4;
	}
	if ((rc = shmbus_pub_sync(pub, 10000000000LL)) != 0)
		return rc < 0 ? 10 - rc : 5;
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* Reads the whole channel on h from its oldest record: every message
 * intact and in order per producer; returns how many. */
static uint64_t read_all(const struct host *h, const char *chan,
			 uint64_t until)
{
	struct shmbus_sub_attr sa;
	shmbus_channel *ch = host_map(h, chan);
	shmbus_sub *sub;
	uint64_t next[4] = { 0 }, n = 0;
	uint8_t buf[4096];
	struct shmbus_msg info;

	cr_assert(ch);
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	/* From the oldest record the ring holds, whoever else reads. */
	sb_sub_seek(sub, sb_ring_oldest(ch));
	for (;;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);
		uint32_t id;
		uint64_t seq;

		if (r == -EAGAIN)
			break;
		cr_assert(r >= 0, "read: %zd", r);
		cr_assert_eq(th_msg_check(buf, (size_t)r, &id, &seq), 0,
			     "a damaged message at %llu",
			     (unsigned long long)info.pos);
		cr_assert(id < 4);
		cr_assert_eq(seq, next[id], "producer %u: %llu after %llu", id,
			     (unsigned long long)seq,
			     (unsigned long long)next[id]);
		next[id]++;
		n++;
		if (info.pos + 16 >= until)
			break;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	return n;
}

TestSuite(repl, .fini = fini, .timeout = 120);

Test(repl, stream_of_mixed_sizes_ends_with_identical_rings)
{
	uint64_t n = th_env_count("SHMBUS_REPL_MSGS", 1000000);
	struct pubarg sp = { "sp", n, 0, 4096, false };
	struct pubarg m1 = { "mp", n / 2, 1, 4096, false };
	struct pubarg m2 = { "mp", n / 2, 2, 4096, false };
	pid_t p1, p2, p3;

	pair_setup(CHANS, "");
	p1 = th_spawn(publisher, &sp);
	p2 = th_spawn(publisher, &m1);
	p3 = th_spawn(publisher, &m2);
	{
		int r1 = th_wait(p1);

		cr_assert_eq(r1, 0, "publisher sp: step %d", r1);
	}
	{
		int r2 = th_wait(p2), r3 = th_wait(p3);

		cr_assert(r2 == 0 && r3 == 0, "publishers mp: steps %d, %d",
			  r2, r3);
	}
	pair_wait_caught_up("sp", 0, 10000);
	pair_wait_caught_up("mp", 0, 10000);
	pair_assert_identical("sp");
	pair_assert_identical("mp");
}

/* A pub_sync at `applied` returns only when B's ring holds the message:
 * B's head is past it the moment the call returns. */
Test(repl, pub_sync_applied_means_the_standby_ring_holds_it)
{
	shmbus_bus *bus;
	shmbus_channel *ch, *b;
	shmbus_pub *pub;
	uint8_t msg[64];

	pair_setup(CHANS, "");
	ch = host_open(&A, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	b = host_map(&B, "sp");
	cr_assert(b);
	for (int i = 0; i < 2000; i++) {
		struct sb_repl_view va, vb;

		th_msg_fill(msg, sizeof(msg), 0, (uint64_t)i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
		cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
		sb_repl_read(ch, &va);
		sb_repl_read(b, &vb);
		cr_assert_geq(vb.head, (uint64_t)(i + 1) * 80,
			      "message %d acknowledged, B's head %llu", i,
			      (unsigned long long)vb.head);
		cr_assert_geq(va.applied, (uint64_t)(i + 1) * 80);
	}
	shmbus_channel_close(b);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	cr_assert_eq(read_all(&B, "sp", UINT64_MAX), 2000);
}

Test(repl, the_standby_refuses_producers_and_serves_subscribers)
{
	shmbus_bus *bus, *bus2;
	shmbus_channel *ch, *sch;
	shmbus_sub *sub;

	pair_setup(CHANS, "");
	ch = host_open(&B, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	if (ch) {
		errno = 0;
		cr_assert_null(shmbus_pub_open(ch, NULL));
		cr_assert_eq(errno, EROFS, "errno %d", errno);
		shmbus_channel_close(ch);
	} else {
		cr_assert_eq(errno, EROFS, "open to publish: errno %d", errno);
	}
	/* Direct mapping: the fence, not only the daemon, refuses. */
	ch = host_map(&B, "mp");
	cr_assert(ch);
	errno = 0;
	cr_assert_null(shmbus_pub_open(ch, NULL));
	cr_assert_eq(errno, EROFS);
	shmbus_channel_close(ch);
	sch = host_open(&B, &bus2, "sp", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(sch);
	sub = shmbus_sub_open(sch, NULL);
	cr_assert(sub);
	shmbus_sub_close(sub);
	shmbus_channel_close(sch);
	shmbus_disconnect(bus);
	shmbus_disconnect(bus2);
}

Test(repl, a_peer_without_the_key_is_refused)
{
	struct shmbus_ctl_repl_reply r;
	FILE *f;

	pair_setup(CHANS, "");
	host_kill(&B, SIGKILL);
	/* Another key for B. */
	f = fopen(pair_key, "w");
	cr_assert(f);
	fputs("another key, long enough to be one", f);
	fclose(f);
	unlink(B.log);
	host_start(&B);
	/* B finds A's proof wrong first, and leaves; A logs the refusal. */
	cr_assert(host_log_wait(&B, "does not prove the key", 3000));
	cr_assert(host_log_wait(&A, "left during the key's proof", 3000));
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert(!host_log_wait(&B, "linked to primary", 300),
		  "a standby without the key was linked");
}

Test(repl, a_peer_with_another_geometry_is_refused)
{
	pair_setup(CHANS, "");
	host_kill(&B, SIGKILL);
	host_sh(NULL, "rm -rf %s", B.dir);
	host_config(&B, "standby", A.listen,
		    "[channel sp]\ncapacity = 2M\nmax_msg = 4K\n"
		    "replicate = applied\n"
		    "[channel mp]\ncapacity = 1M\nmax_msg = 4K\n"
		    "producers = multi\nreplicate = received\n", "");
	unlink(B.log);
	host_start(&B);
	cr_assert(host_log_wait(&A, "capacity 2097152, this host has 1048576",
				3000));
	cr_assert(host_log_wait(&B, "refused by the peer: channel sp: "
				"capacity", 3000));
	/* The other channel links. */
	cr_assert(host_log_wait(&B, "mp: linked to primary", 3000));
}
