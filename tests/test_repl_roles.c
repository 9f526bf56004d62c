/* SPDX-License-Identifier: MIT */
/*
 * test_repl_roles.c - what replication acknowledges and who may write:
 * shmbus_pub_sync() at each answer, subscribers that see only
 * acknowledged messages, the fence on a standby, switchover, demotion and
 * the handles that outlive them; two shmbusd in two network namespaces
 * (repl_fixture.h).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"

static void fini(void)
{
	pair_teardown();
}

TestSuite(repl_roles, .fini = fini, .timeout = 120);

/* A pub_sync at `applied` returns only when B's ring holds the message:
 * B's head is past it the moment the call returns. */

/* A's end of the link down for ms, then up again (network namespaces). */
static void link_down_for(int ms)
{
	cr_assert_eq(host_sh(NULL, "ip -n %s link set %s down", A.ns,
			     A.ifname), 0);
	usleep((useconds_t)ms * 1000);
	cr_assert_eq(host_sh(NULL, "ip -n %s link set %s up", A.ns,
			     A.ifname), 0);
}

Test(repl_roles, pub_sync_applied_means_the_standby_ring_holds_it)
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
	cr_assert_eq(pair_read_all(&B, "sp", UINT64_MAX), 2000);
	{
		struct shmbus_ctl_repl_reply r;

		cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		cr_assert(strstr(r.text, "primary at epoch 1") &&
			  strstr(r.text, "sp: link up, at 160000, standby at "
				 "160000 (in sync), lag 0 bytes"),
			  "%s", r.text);
		cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		cr_assert(strstr(r.text, "standby at epoch 1") &&
			  strstr(r.text, "sp: link up, holds 160000"),
			  "%s", r.text);
	}
}

/* A standby's channel chan refuses producers, through h's daemon (its
 * open) or the library (shmbus_pub_open()): EROFS.  *bus stays
 * connected. */
static void standby_refuses_producers(const struct host *h,
				      shmbus_bus **bus, const char *chan)
{
	shmbus_channel *ch = host_open(h, bus, chan, SHMBUS_ROLE_PUBLISH);

	if (ch) {
		errno = 0;
		cr_assert_null(shmbus_pub_open(ch, NULL));
		cr_assert_eq(errno, EROFS, "errno %d", errno);
		shmbus_channel_close(ch);
	} else {
		cr_assert_eq(errno, EROFS, "open to publish: errno %d", errno);
	}
}

/*
 * The fence of a standby's ring is in the data file, which a subscriber
 * of the standby holds read-only: it cannot make its mapping of the
 * fence writable.  A process that can write the file through its path
 * (root, or a publisher of the host's time as primary) writes the fence
 * open (a word the primary's handles would take).  The daemon must not
 * take the word's say for who may publish there: its open to publish is
 * still refused, and the daemon closes the fence again by itself, so
 * that no producer writes into the replica.
 */
Test(repl_roles, a_fence_written_open_on_the_standby_lets_no_producer_in)
{
	shmbus_bus *sbus, *pbus;
	shmbus_channel *sch, *pch;
	struct shmbus_daemon_area *h;
	uintptr_t page;
	uint32_t f;
	int i;

	pair_setup(CHANS, "");
	sch = host_open(&B, &sbus, "sp", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(sch);
	page = (uintptr_t)sch->daemon & ~(uintptr_t)4095;
	cr_assert_neq(mprotect((void *)page, 4096, PROT_READ | PROT_WRITE), 0,
		      "a subscriber made the standby's fence writable");
	cr_assert_eq(errno, EACCES);
	h = th_map_daemon_area(B.dir, "sp");
	cr_assert(h);
	f = __atomic_load_n(&h->fence, __ATOMIC_RELAXED);
	cr_assert_eq(SHMBUS_FENCE_STATE(f), SHMBUS_FENCE_STANDBY);
	__atomic_store_n(&h->fence, ((f >> 8) + 1) << 8 | SHMBUS_FENCE_OPEN,
			 __ATOMIC_RELAXED);
	errno = 0;
	pch = host_open(&B, &pbus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert_null(pch, "the standby's daemon handed out its ring to "
		       "publish");
	cr_assert_eq(errno, EROFS, "open to publish: errno %d", errno);
	shmbus_disconnect(pbus);
	/* The daemon's scan closes the fence again. */
	for (i = 0; i < 200; i++) {
		f = __atomic_load_n(&h->fence, __ATOMIC_RELAXED);
		if (SHMBUS_FENCE_STATE(f) == SHMBUS_FENCE_STANDBY)
			break;
		usleep(10000);
	}
	cr_log_info("fence closed again after %d ms", i * 10);
	cr_assert_eq(SHMBUS_FENCE_STATE(f), SHMBUS_FENCE_STANDBY,
		     "the fence stays open");
	cr_assert(host_log_wait(&B, "fence", 0));
	th_unmap_daemon_area(h);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
}

Test(repl_roles, the_standby_refuses_producers_and_serves_subscribers)
{
	shmbus_bus *bus, *bus2;
	shmbus_channel *ch, *sch;
	shmbus_sub *sub;

	pair_setup(CHANS, "");
	standby_refuses_producers(&B, &bus, "sp");
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

/* What the producers of a switchover saw, in memory shared with them. */
struct tally {
	uint64_t acked[4];	/* messages pub_sync acknowledged */
	int told[4];		/* 1: publish said -EROFS; 2: pub_sync did */
	int bad[4];		/* another answer */
	int stop;		/* the producers stop */
};

static struct tally *tally;

struct syncpub {
	const char *chan;
	uint32_t id;
};

static int sync_publisher(void *arg)
{
	const struct syncpub *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 5000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[48];

	if (!pub)
		return 2;
	for (uint64_t i = 0; !__atomic_load_n(&tally->stop, __ATOMIC_RELAXED);
	     i++) {
		int rc;

		th_msg_fill(msg, sizeof(msg), p->id, i);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == -EROFS) {
			tally->told[p->id] = 1;
			break;
		}
		if (rc) {
			tally->bad[p->id] = 100 - rc;
			break;
		}
		rc = shmbus_pub_sync(pub, 5000000000LL);
		if (rc == -EROFS) {
			tally->told[p->id] = 2;
			break;
		}
		if (rc) {
			tally->bad[p->id] = 200 - rc;
			break;
		}
		__atomic_store_n(&tally->acked[p->id], i + 1,
				 __ATOMIC_RELAXED);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* The pair with CHANS and `extra`, both channels in sync, and the tally's
 * three sync producers (0 on "sp", 1 and 2 on "mp") started. */
static void tally_start(const char *extra, pid_t p[3])
{
	static struct syncpub s[3] = { { "sp", 0 }, { "mp", 1 }, { "mp", 2 } };

	tally = mmap(NULL, sizeof(*tally), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(tally != MAP_FAILED);
	pair_setup(CHANS, extra);
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	cr_assert(host_log_wait(&A, "mp: standby in sync", 3000));
	for (int i = 0; i < 3; i++)
		p[i] = th_spawn(sync_publisher, &s[i]);
}

/* Each of the tally's producers exits 0. */
static void tally_join(const pid_t p[3])
{
	for (int i = 0; i < 3; i++)
		cr_assert_eq(th_wait(p[i]), 0, "producer %d", i);
}

/* Everything acknowledged to the tally's producers (0 on "sp", 1 and 2 on
 * "mp") is on B. */
static void tally_on_b(void)
{
	uint64_t last[4];

	pair_read_all_last(&B, "sp", UINT64_MAX, last);
	cr_assert(last[0] != UINT64_MAX && last[0] + 1 >= tally->acked[0],
		  "sp: B's last is %llu, %llu were acknowledged",
		  (unsigned long long)last[0],
		  (unsigned long long)tally->acked[0]);
	pair_read_all_last(&B, "mp", UINT64_MAX, last);
	for (int i = 1; i < 3; i++)
		cr_assert(last[i] != UINT64_MAX &&
			  last[i] + 1 >= tally->acked[i],
			  "mp: producer %d: B's last is %llu, %llu were "
			  "acknowledged", i, (unsigned long long)last[i],
			  (unsigned long long)tally->acked[i]);
}

/* Under load, with producers waiting on pub_sync: A hands over to B.
 * Every producer is told (-EROFS), every message acknowledged to it is
 * on B, B is primary at the next epoch, and A follows it as standby. */
Test(repl_roles, switchover_under_load_loses_nothing)
{
	struct shmbus_ctl_repl_reply r;
	struct sb_repl_view va, vb;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *pub;
	pid_t p[3];
	uint8_t msg[48];

	/* Sanitizers slow the daemons: B must not fall out of sync. */
	tally_start("sync_timeout_ms = 5000\n", p);
	/* Until every producer has had acknowledgements (sanitized daemons
	 * are slow to serve the first ones). */
	for (int t = 0; t < 1000; t++) {
		if (__atomic_load_n(&tally->acked[0], __ATOMIC_RELAXED) > 50 &&
		    __atomic_load_n(&tally->acked[1], __ATOMIC_RELAXED) > 50 &&
		    __atomic_load_n(&tally->acked[2], __ATOMIC_RELAXED) > 50)
			break;
		usleep(10000);
	}
	usleep(100000);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0,
		     "switchover: %s", r.text);
	cr_log_info("switchover: %s in %.2f ms", r.text,
		    (double)r.duration_ns / 1e6);
	printf("switchover under load: %.2f ms\n", (double)r.duration_ns / 1e6);
	tally_join(p);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tally->bad[i], 0, "producer %d: %d", i,
			     tally->bad[i]);
		cr_assert(tally->told[i], "producer %d was not told", i);
		cr_assert_gt(tally->acked[i], 0);
	}
	tally_on_b();
	pair_assert_identical("sp");
	pair_assert_identical("mp");
	host_view(&A, "sp", &va);
	host_view(&B, "sp", &vb);
	cr_assert_eq(vb.epoch, 2);
	cr_assert(va.fence == SHMBUS_FENCE_STANDBY);
	cr_assert(vb.fence == SHMBUS_FENCE_OPEN);
	/* B is primary: it takes producers, and A follows it. */
	cr_assert(host_log_wait(&B, "sp: standby in sync", 5000));
	ch = host_open(&B, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub, "B does not take a producer: %d", errno);
	for (int i = 0; i < 1000; i++) {
		th_msg_fill(msg, sizeof(msg), 3, (uint64_t)i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	pair_wait_caught_up("sp", 0, 5000);
	pair_assert_identical("sp");
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert(strstr(r.text, "standby at epoch 2"), "%s", r.text);
	ch = host_map(&A, "sp");
	cr_assert(ch);
	errno = 0;
	cr_assert_null(shmbus_pub_open(ch, NULL));
	cr_assert_eq(errno, EROFS);
	shmbus_channel_close(ch);
	munmap(tally, sizeof(*tally));
}

/* Until every producer of the tally has had `more` acknowledgements past
 * `from`, at most 20 s. */
static void tally_wait(const uint64_t from[3], uint64_t more)
{
	for (int t = 0; t < 2000; t++) {
		int ok = 0;

		for (int i = 0; i < 3; i++)
			ok += __atomic_load_n(&tally->acked[i],
					      __ATOMIC_RELAXED) >= from[i] + more;
		if (ok == 3)
			return;
		usleep(10000);
	}
	cr_assert_fail("producers acknowledged %llu, %llu, %llu",
		       (unsigned long long)tally->acked[0],
		       (unsigned long long)tally->acked[1],
		       (unsigned long long)tally->acked[2]);
}

/* Producers that wait for each message's acknowledgement (on the
 * primary, the thread that reads the acknowledgements then ships their
 * records): the standby killed -9 and started again, then the link down
 * for a second.  Every answer is 0 (the standby stays in sync within
 * sync_timeout_ms), and every message acknowledged is on the standby,
 * once and in order. */
Test(repl_roles, sync_waiters_lose_nothing_when_the_standby_dies_or_the_link_drops)
{
	uint64_t at[3];
	pid_t p[3];

	tally_start("sync_timeout_ms = 8000\n", p);
	memset(at, 0, sizeof(at));
	tally_wait(at, 200);
	host_kill(&B, SIGKILL);
	usleep(200000);
	host_start(&B);
	memcpy(at, tally->acked, sizeof(at));
	tally_wait(at, 200);
	if (pair_netns_possible()) {
		link_down_for(1000);
		memcpy(at, tally->acked, sizeof(at));
		tally_wait(at, 200);
	}
	__atomic_store_n(&tally->stop, 1, __ATOMIC_RELAXED);
	tally_join(p);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tally->bad[i], 0, "producer %d: %d", i,
			     tally->bad[i]);
		cr_assert_eq(tally->told[i], 0);
	}
	pair_assert_whole("sp", 10000);
	pair_assert_whole("mp", 10000);
	tally_on_b();
	munmap(tally, sizeof(*tally));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* An idle agent sleeps on the kick word for nap_us (here 100 ms): a
 * pub_sync wakes it, and is answered long before the nap would end. */
Test(repl_roles, a_sync_waiter_wakes_an_idle_agent)
{
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint8_t msg[64];
	uint64_t took[11];

	pair_setup(CHANS, "nap_us = 100000\n");
	ch = host_open(&A, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	for (int i = 0; i < 11; i++) {
		uint64_t t;

		/* Long enough for the agent to go back to its sleep. */
		usleep(150000);
		th_msg_fill(msg, sizeof(msg), 0, (uint64_t)i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
		t = th_now_ns();
		cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
		took[i] = th_now_ns() - t;
	}
	qsort(took, 11, sizeof(took[0]), cmp_u64);
	cr_assert_lt(took[5], 25000000u, "a pub_sync took %lld us (median): "
		     "the agent slept through its kick",
		     (long long)took[5] / 1000);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* What local_publisher() saw. */
struct ltally {
	uint64_t ok, timeouts, other;
	int stop;
};

static struct ltally *lt;

/* 4 KiB messages, each waited for 300 ms, until told to stop. */
static int local_publisher(void *arg)
{
	const char *chan = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 300000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	static uint8_t msg[4096];

	if (!pub)
		return 2;
	for (uint64_t i = 0; !__atomic_load_n(&lt->stop, __ATOMIC_RELAXED);) {
		int rc;

		th_msg_fill(msg, sizeof(msg), 0, i);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == -ETIMEDOUT)
			continue;
		if (rc)
			return 3;
		i++;
		rc = shmbus_pub_sync(pub, 300000000LL);
		if (rc == 0)
			__atomic_add_fetch(&lt->ok, 1, __ATOMIC_RELAXED);
		else if (rc == -ETIMEDOUT)
			__atomic_add_fetch(&lt->timeouts, 1, __ATOMIC_RELAXED);
		else
			__atomic_add_fetch(&lt->other, 1, __ATOMIC_RELAXED);
	}
	return 0;
}

/* At level local a message is acknowledged once committed here: a
 * standby that stops reading (SIGSTOP) or a link that goes down, while
 * the standby is still in sync, fills the sockets and holds the primary's
 * sends, never a local pub_sync. */
Test(repl_roles, a_local_pub_sync_never_waits_for_the_standby)
{
	pid_t p;

	lt = mmap(NULL, sizeof(*lt), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(lt != MAP_FAILED);
	pair_setup("[channel lo]\ncapacity = 4M\nmax_msg = 4K\n"
		   "replicate = local\n", "sync_timeout_ms = 8000\n");
	p = th_spawn(local_publisher, "lo");
	usleep(500000);
	host_pause(&B);
	usleep(2000000);
	kill(B.pid, SIGCONT);
	usleep(500000);
	if (pair_netns_possible()) {
		link_down_for(2000);
		usleep(500000);
	}
	__atomic_store_n(&lt->stop, 1, __ATOMIC_RELAXED);
	cr_assert_eq(th_wait(p), 0);
	cr_assert_gt(lt->ok, 1000);
	cr_assert_eq(lt->other, 0);
	cr_assert_eq(lt->timeouts, 0, "%llu local pub_syncs timed out "
		     "(300 ms each), %llu answered",
		     (unsigned long long)lt->timeouts,
		     (unsigned long long)lt->ok);
	pair_wait_caught_up("lo", 0, 15000);
	pair_assert_identical("lo");
	munmap(lt, sizeof(*lt));
}

/* A subscriber that sees only acknowledged messages never sees one the
 * standby lacks: with B's daemon stopped (SIGSTOP), it reads nothing past
 * what B held when it stopped, while the producer goes on; once B runs
 * again, it sees everything. */
Test(repl_roles, acknowledged_only_subscriber_never_outruns_the_standby)
{
	struct paced p = { "st", 0, 50, 1500 };
	struct sb_repl_view vb, va;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	struct shmbus_msg info;
	uint8_t buf[4096];
	uint64_t seen = 0, frozen;
	pid_t pid;

	pair_setup(STRICT_CHANS, "");
	cr_assert(host_log_wait(&A, "st: standby in sync", 3000));
	ch = host_open(&A, &bus, "st", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
	cr_assert_eq(shmbus_sub_set_visibility(sub, SHMBUS_SEE_ACKNOWLEDGED),
		     0);
	pid = th_spawn(pair_paced_publisher, &p);
	usleep(300000);
	host_pause(&B);
	host_view(&B, "st", &vb);
	frozen = vb.head;
	for (uint64_t end = th_now_ns() + 400000000; th_now_ns() < end;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);

		if (r == -EAGAIN) {
			usleep(1000);
			continue;
		}
		cr_assert(r > 0);
		cr_assert_leq(info.pos + 16 + (uint64_t)(r + 7) / 8 * 8, frozen,
			      "a message at %llu seen, the standby holds up "
			      "to %llu", (unsigned long long)info.pos,
			      (unsigned long long)frozen);
		seen++;
	}
	host_view(&A, "st", &va);
	cr_assert_gt(va.head, frozen + 4096, "the producer did not go on");
	kill(B.pid, SIGCONT);
	cr_assert_eq(th_wait(pid), 0);
	for (uint64_t end = th_now_ns() + 10000000000ull; th_now_ns() < end;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);

		if (r == -EAGAIN) {
			host_view(&A, "st", &va);
			if (sub && info.pos + 80 >= va.head && seen >= 7500)
				break;
			usleep(1000);
			continue;
		}
		cr_assert(r > 0);
		seen++;
	}
	host_view(&A, "st", &va);
	host_view(&B, "st", &vb);
	cr_assert_eq(seen, 7500, "seen %llu of 7500 (A: head %llu, watermark "
		     "%llu, flags %x; B: head %llu)", (unsigned long long)seen,
		     (unsigned long long)va.head,
		     (unsigned long long)va.watermark, va.flags,
		     (unsigned long long)vb.head);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* pub_sync never returns a success the standby did not earn: with B
 * stopped, a degrading channel answers SHMBUS_SYNC_DEGRADED (once A has
 * declared B out of sync), a strict one times out; with B back, both
 * answer 0. */
Test(repl_roles, pub_sync_says_degraded_or_times_out_without_the_standby)
{
	shmbus_bus *b1, *b2;
	shmbus_channel *c1, *c2;
	shmbus_pub *deg, *str;
	uint8_t msg[64] = { 0 };
	int rc;

	pair_setup(STRICT_CHANS, "");
	cr_assert(host_log_wait(&A, "st: standby in sync", 3000));
	c1 = host_open(&A, &b1, "sp", SHMBUS_ROLE_PUBLISH);
	c2 = host_open(&A, &b2, "st", SHMBUS_ROLE_PUBLISH);
	cr_assert(c1 && c2);
	deg = shmbus_pub_open(c1, NULL);
	str = shmbus_pub_open(c2, NULL);
	cr_assert(deg && str);
	cr_assert_eq(shmbus_publish(deg, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(deg, 2000000000LL), 0);
	host_pause(&B);
	cr_assert_eq(shmbus_publish(deg, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_publish(str, msg, sizeof(msg)), 0);
	rc = shmbus_pub_sync(deg, 3000000000LL);
	cr_assert_eq(rc, SHMBUS_SYNC_DEGRADED, "degrade: %d", rc);
	rc = shmbus_pub_sync(str, 1000000000LL);
	cr_assert_eq(rc, -ETIMEDOUT, "strict: %d", rc);
	kill(B.pid, SIGCONT);
	cr_assert(host_log_wait(&A, "st: standby in sync at", 5000));
	rc = shmbus_pub_sync(str, 5000000000LL);
	cr_assert_eq(rc, 0, "strict, B back: %d", rc);
	cr_assert_eq(shmbus_publish(deg, msg, sizeof(msg)), 0);
	for (int i = 0; i < 100 && (rc = shmbus_pub_sync(deg, 5000000000LL));
	     i++)
		usleep(20000);	/* until A says B is in sync again */
	cr_assert_eq(rc, 0, "degrade, B back: %d", rc);
	shmbus_pub_close(deg);
	shmbus_pub_close(str);
	shmbus_channel_close(c1);
	shmbus_channel_close(c2);
	shmbus_disconnect(b1);
	shmbus_disconnect(b2);
}

/* A single producer's handle that lives through a switchover to the
 * other host and back never writes again: its view of the ring is stale.
 * It is refused on the standby (without touching its ring) and after the
 * host is primary again; a new handle publishes once it is closed. */
/* A switchover asked for as soon as the primary's daemon is back: it
 * waits for the standby's new link (which it must not keep out while it
 * holds the role), and succeeds the first time. */
Test(repl_roles, a_switchover_right_after_a_restart_succeeds)
{
	struct pubarg sp = { "sp", 20000, 0, 512, false, false };
	struct shmbus_ctl_repl_reply r;

	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	cr_assert(host_log_wait(&A, "mp: standby in sync", 3000));
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &sp)));
	host_kill(&A, SIGKILL);
	host_start(&A);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert(strstr(r.text, "primary"), "%s", r.text);
	pair_assert_whole("sp", 10000);
}

struct switch_call {
	struct shmbus_ctl_repl_reply r;
	int rc;
};

static void *switch_over(void *arg)
{
	struct switch_call *s = arg;

	s->rc = host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &s->r);
	return NULL;
}

/* The standby's daemon is told to stop (SIGTERM) while a switchover's
 * promote request is on its way to it (held back on A's side by an
 * nftables rule): it refuses, A stays primary, and the standby exits
 * cleanly, never primary on its way out. */
Test(repl_roles, a_standby_told_to_stop_refuses_a_promotion)
{
	struct shmbus_ctl_repl_reply r;
	struct switch_call s;
	pthread_t t;
	int st = 0;

	if (!pair_netns_possible())
		cr_skip("needs root: network namespaces");
	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	cr_assert(host_log_wait(&A, "mp: standby in sync", 3000));
	/* A's new connections to B's port complete their handshake; what
	 * they send after it waits (retransmitted once the rule goes). */
	cr_assert_eq(host_sh(&A, "nft add table inet sbhold && "
			     "nft add chain inet sbhold out \"{ type filter "
			     "hook output priority 0; }\" && "
			     "nft add rule inet sbhold out tcp dport %s "
			     "ip length \">\" 60 drop",
			     strrchr(B.listen, ':') + 1), 0, "nft");
	cr_assert_eq(pthread_create(&t, NULL, switch_over, &s), 0);
	usleep(300000);
	kill(B.pid, SIGTERM);
	usleep(250000);
	cr_assert_eq(host_sh(&A, "nft delete table inet sbhold"), 0);
	pthread_join(t, NULL);
	waitpid(B.pid, &st, 0);
	B.pid = 0;
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "B's exit: %d", st);
	cr_assert(!host_log_wait(&B, "promoted: primary", 0),
		  "B promoted itself as it stopped; A says: %s", s.r.text);
	cr_assert_neq(s.rc, 0, "A says: %s", s.r.text);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert_eq(r.role, 1, "%s", r.text);	/* primary */
}

Test(repl_roles, a_producer_handle_that_outlives_a_handover_stays_refused)
{
	struct shmbus_ctl_repl_reply r;
	struct sb_repl_view v0, v1;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *old, *fresh;
	uint8_t msg[64] = { 1 };

	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	ch = host_map(&A, "sp");
	cr_assert(ch);
	old = shmbus_pub_open(ch, NULL);
	cr_assert(old);
	cr_assert_eq(shmbus_publish(old, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(old, 2000000000LL), 0);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
	/* B publishes; A applies. */
	{
		shmbus_channel *bch = host_open(&B, &bus, "sp",
						SHMBUS_ROLE_PUBLISH);
		shmbus_pub *bp = bch ? shmbus_pub_open(bch, NULL) : NULL;

		cr_assert(bp);
		for (int i = 0; i < 100; i++)
			cr_assert_eq(shmbus_publish(bp, msg, sizeof(msg)), 0);
		shmbus_pub_close(bp);
		shmbus_channel_close(bch);
		shmbus_disconnect(bus);
	}
	pair_wait_caught_up("sp", 0, 5000);
	sb_repl_read(ch, &v0);
	cr_assert_eq(shmbus_publish(old, msg, sizeof(msg)), -EROFS);
	sb_repl_read(ch, &v1);
	cr_assert_eq(v0.head, v1.head, "the refused handle moved head");
	/* And back: A primary again, once A, now the standby, is linked for
	 * every channel (sanitized daemons take their time to re-link; a
	 * switchover gives them handover_ms). */
	for (int i = 0; i < 500; i++) {
		struct sb_repl_view vs, vm;

		host_view(&B, "sp", &vs);
		host_view(&B, "mp", &vm);
		if (vs.flags & vm.flags & SHMBUS_REPL_LINK)
			break;
		usleep(10000);
	}
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
	cr_assert_eq(shmbus_publish(old, msg, sizeof(msg)), -EROFS);
	errno = 0;
	cr_assert_null(shmbus_pub_open(ch, NULL), "a second single producer");
	cr_assert_eq(errno, EBUSY);
	shmbus_pub_close(old);
	fresh = shmbus_pub_open(ch, NULL);
	cr_assert(fresh, "errno %d", errno);
	cr_assert_eq(shmbus_publish(fresh, msg, sizeof(msg)), 0);
	/* Until A finds B in sync again (DEGRADED meanwhile). */
	for (int i = 0; i < 100 && shmbus_pub_sync(fresh, 5000000000LL); i++)
		usleep(20000);
	cr_assert_eq(shmbus_pub_sync(fresh, 5000000000LL), 0);
	shmbus_pub_close(fresh);
	shmbus_channel_close(ch);
	pair_wait_caught_up("sp", 0, 5000);
	pair_assert_identical("sp");
}

/* B's own subscriber holding its ring of channel `chan`, and more
 * published on A than B's ring holds past that subscriber's cursor: a
 * frame B acknowledges as received waits to be applied.  Then a promotion
 * of B is refused for it. */
struct held {
	shmbus_channel *ch, *bch;	/* A's mapping; B's, subscribed */
	shmbus_bus *bus;
	shmbus_pub *pub;
	shmbus_sub *bsub;
};

static void hold_standby_ring(const char *chan, struct held *hd)
{
	struct shmbus_sub_attr sa;
	char in_sync[64];
	uint8_t msg[1024] = { 3 };
	int sent = 0, rc;

	pair_setup(CHANS, "handover_ms = 500\n");
	snprintf(in_sync, sizeof(in_sync), "%s: standby in sync", chan);
	cr_assert(host_log_wait(&A, in_sync, 3000));
	hd->bch = host_open(&B, &hd->bus, chan, SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(hd->bch);
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	hd->bsub = shmbus_sub_open(hd->bch, &sa);
	cr_assert(hd->bsub);
	hd->ch = host_map(&A, chan);
	cr_assert(hd->ch);
	hd->pub = shmbus_pub_open(hd->ch, NULL);
	cr_assert(hd->pub);
	for (int i = 0; i < 3000 && sent < 1200; i++) {
		rc = shmbus_publish(hd->pub, msg, sizeof(msg));
		if (rc == 0)
			sent++;
		else
			usleep(1000);
	}
	cr_assert_geq(sent, 1100, "published %d", sent);
	usleep(300000);
}

/* B refuses a promotion for the records it holds back. */
static void promotion_refused(void)
{
	struct shmbus_ctl_repl_reply r;
	int rc = host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, 0, &r);

	cr_assert_eq(rc, -EBUSY, "promote: %d %s", rc, r.text);
	cr_assert(strstr(r.text, "are not applied"), "%s", r.text);
}

/* B's subscriber lets go. */
static void let_go(struct held *hd)
{
	shmbus_sub_close(hd->bsub);
	shmbus_channel_close(hd->bch);
	shmbus_disconnect(hd->bus);
}

/*
 * The standby's own subscriber holds its ring, so a frame it acknowledged
 * as received cannot be applied: a promotion is refused for it (it would
 * lose acknowledged records).  Once the subscriber lets go and the primary
 * ships the records again, they are applied, and the refusal is over: a
 * switchover then succeeds.
 */
Test(repl_roles, a_promotion_refused_for_unapplied_records_is_allowed_once_applied)
{
	struct shmbus_ctl_repl_reply r;
	struct held hd;

	hold_standby_ring("sp", &hd);
	promotion_refused();
	/* B's subscriber lets go; A ships the records again. */
	let_go(&hd);
	cr_assert(host_log_wait(&B, "not applied are past", 10000));
	pair_wait_caught_up("sp", 0, 10000);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert(strstr(r.text, "primary at epoch 2"), "%s", r.text);
	shmbus_pub_close(hd.pub);
	shmbus_channel_close(hd.ch);
}

/*
 * B's ring held by its own subscriber, A killed with a frame B
 * acknowledged as received and could not apply, a promotion refused for
 * it, the subscriber gone: *va is A's view (what B acknowledged), and the
 * mapping of B's channel is returned.
 */
static shmbus_channel *received_and_held(const char *chan, struct held *hd,
					 struct sb_repl_view *va)
{
	struct sb_repl_view vb;
	shmbus_channel *bmap;

	hold_standby_ring(chan, hd);
	host_kill(&A, SIGKILL);
	sb_repl_read(hd->ch, va);
	bmap = host_map(&B, chan);
	cr_assert(bmap);
	sb_repl_read(bmap, &vb);
	cr_assert_gt(va->received, vb.head, "B acknowledged as received "
		     "only what it applied: nothing to test");
	promotion_refused();
	let_go(hd);
	return bmap;
}

static void received_and_held_done(shmbus_channel *bmap, struct held *hd)
{
	shmbus_channel_close(bmap);
	shmbus_pub_close(hd->pub);
	shmbus_channel_close(hd->ch);
}

/*
 * The same frame held back by the standby's own subscriber, but the
 * primary host is lost meanwhile: the records acknowledged as received
 * are only in the standby's hands.  A promotion refused while the
 * subscriber holds the ring goes through once it lets go, applying them
 * first: nothing acknowledged as received is lost.
 */
Test(repl_roles, records_received_and_held_back_are_applied_at_a_promotion)
{
	struct shmbus_ctl_repl_reply r;
	struct sb_repl_view va, vb;
	struct held hd;
	shmbus_channel *bmap = received_and_held("mp", &hd, &va);
	int rc = host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, 0, &r);

	cr_assert_eq(rc, 0, "promote: %d %s", rc, r.text);
	sb_repl_read(bmap, &vb);
	cr_assert_geq(vb.head, va.received, "B ends at %lu, it acknowledged "
		      "%lu as received", (unsigned long)vb.head,
		      (unsigned long)va.received);
	received_and_held_done(bmap, &hd);
}

/*
 * The same, and nobody runs a promote after the refused one: the
 * standby's linker applies the kept frame itself once its subscriber
 * lets go, with no primary left to ship it again (an automatic promotion
 * waits for exactly that).
 */
Test(repl_roles, records_received_and_held_back_go_in_once_the_ring_has_room)
{
	struct sb_repl_view va, vb = { 0 };
	struct held hd;
	shmbus_channel *bmap = received_and_held("sp", &hd, &va);

	for (int i = 0; i < 500 && vb.head < va.received; i++) {
		usleep(10000);
		sb_repl_read(bmap, &vb);
	}
	cr_assert_geq(vb.head, va.received, "B ends at %lu, it acknowledged "
		      "%lu as received", (unsigned long)vb.head,
		      (unsigned long)va.received);
	cr_assert(host_log_wait(&B, "applied now that the ring has room",
				100));
	received_and_held_done(bmap, &hd);
}

/* demote --force does not wait for the standby: what it lacks is never
 * reported acknowledged to a sync waiter here. */
Test(repl_roles, a_forced_demotion_never_acknowledges_what_the_standby_lacks)
{
	struct shmbus_ctl_repl_reply r;
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint8_t msg[64] = { 2 };
	int rc;

	pair_setup(CHANS, "sync_timeout_ms = 10000\n");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	ch = host_map(&A, "sp");
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	host_pause(&B);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_DEMOTE, SHMBUS_REPL_FORCE,
			      &r), 0, "%s", r.text);
	rc = shmbus_pub_sync(pub, 300000000LL);
	cr_assert(rc == -EROFS, "pub_sync after a forced demotion: %d", rc);
	cr_assert(host_log_wait(&A, "demoted with --force: the standby lacks",
				100));
	kill(B.pid, SIGCONT);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
}

/*
 * A consumer group's acknowledged position reaches the standby, and after
 * a switchover the group resumes there: nothing acknowledged on A is
 * delivered again on B, nothing unacknowledged is missing.
 */
Test(repl_roles, a_groups_floor_reaches_the_standby_and_survives_a_switchover)
{
	struct shmbus_ctl_repl_reply r;
	struct shmbus_group_stats sa, sbs;
	struct shmbus_group_msg m;
	struct sb_member_info mi[4];
	shmbus_bus *bus, *pbus, *bbus;
	shmbus_channel *ch, *pch, *bch, *bview;
	shmbus_group *g;
	shmbus_pub *pub;
	uint64_t id, want = 60;
	unsigned n;

	pair_setup("[channel jobs]\ncapacity = 64K\nmax_msg = 256\n"
		   "replicate = applied\n"
		   "consumer_groups = work mode=shared window=64\n",
		   "sync_timeout_ms = 5000\n");
	pch = host_open(&A, &pbus, "jobs", SHMBUS_ROLE_PUBLISH);
	cr_assert(pch, "%s", strerror(errno));
	pub = shmbus_pub_open(pch, NULL);
	cr_assert(pub);
	for (id = 0; id < 100; id++)
		cr_assert_eq(shmbus_publish(pub, &id, sizeof(id)), 0);
	cr_assert_geq(shmbus_pub_sync(pub, 5000000000), 0);
	ch = host_open(&A, &bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	g = shmbus_group_join(ch, "work", "a-worker", NULL);
	cr_assert(g, "%s", strerror(errno));
	for (uint64_t i = 0; i < 61; i++) {
		cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), 8);
		cr_assert_eq(id, i);
		if (i < 60)	/* the 61st stays unacknowledged */
			cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	}
	shmbus_group_stats(g, &sa);
	/* B's copy of the group reaches A's floor. */
	bview = host_map(&B, "jobs");
	cr_assert(bview);
	for (int i = 0; i < 300; i++) {
		n = 4;
		if (sb_group_inspect(bview, B.dir, "work", &sbs, mi, &n) == 0 &&
		    sbs.floor == sa.floor)
			break;
		usleep(10000);
	}
	cr_assert_eq(sbs.floor, sa.floor, "B's floor %llu, A's %llu",
		     (unsigned long long)sbs.floor,
		     (unsigned long long)sa.floor);
	shmbus_channel_close(bview);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0,
		     "switchover: %s", r.text);
	/* On B, now primary: from the first unacknowledged message on. */
	bch = host_open(&B, &bbus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(bch, "%s", strerror(errno));
	{
		shmbus_group *gb = shmbus_group_join(bch, "work", "b-worker",
						     NULL);

		cr_assert(gb, "%s", strerror(errno));
		for (int t = 0; t < 2000 && want < 100; t++) {
			ssize_t k = shmbus_group_read(gb, &id, sizeof(id), &m);

			if (k == -EAGAIN) {
				usleep(1000);
				continue;
			}
			cr_assert_eq(k, 8);
			cr_assert_eq(id, want, "B delivered %llu, expected %llu",
				     (unsigned long long)id,
				     (unsigned long long)want);
			cr_assert_eq(shmbus_group_ack(gb, &m.lease), 0);
			want++;
		}
		cr_assert_eq(want, 100, "B delivered 60..99");
		shmbus_group_leave(gb);
	}
	/* A's member, still joined on a standby, takes nothing more (B's
	 * took the same messages), and nobody joins there. */
	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), -EROFS);
	errno = 0;
	cr_assert_null(shmbus_group_join(ch, "work", "a-late", NULL));
	cr_assert_eq(errno, EROFS);
	/* A's copy follows B's floor past the lease A's member still holds
	 * (message 60): a failover back would deliver none of 0..99 again. */
	bview = host_map(&B, "jobs");
	cr_assert(bview);
	n = 4;
	cr_assert_eq(sb_group_inspect(bview, B.dir, "work", &sbs, mi, &n), 0);
	cr_assert_eq(sbs.floor, sb_ring_head(bview));
	shmbus_channel_close(bview);
	bview = host_map(&A, "jobs");
	cr_assert(bview);
	for (int i = 0; i < 300; i++) {
		n = 4;
		if (sb_group_inspect(bview, A.dir, "work", &sa, mi, &n) == 0 &&
		    sa.floor == sbs.floor)
			break;
		usleep(10000);
	}
	cr_assert_eq(sa.floor, sbs.floor, "A's copy stopped at %llu, B's "
		     "floor is %llu", (unsigned long long)sa.floor,
		     (unsigned long long)sbs.floor);
	shmbus_channel_close(bview);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	shmbus_channel_close(bch);
	shmbus_disconnect(bbus);
}

/* The CPU list /proc gives for pid's thread named `name`; "" if it has
 * none of that name. */
static void thread_cpus(pid_t pid, const char *name, char *out, size_t n)
{
	char path[96], comm[32], line[256];
	struct dirent *e;
	DIR *d;

	out[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	while (d && (e = readdir(d))) {
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/comm",
			 (int)pid, e->d_name);
		f = fopen(path, "r");
		comm[0] = 0;
		if (!f || !fgets(comm, sizeof(comm), f)) {
			if (f)
				fclose(f);
			continue;
		}
		fclose(f);
		comm[strcspn(comm, "\n")] = 0;
		if (strcmp(comm, name))
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/status",
			 (int)pid, e->d_name);
		f = fopen(path, "r");
		while (f && fgets(line, sizeof(line), f))
			if (!strncmp(line, "Cpus_allowed_list:", 18)) {
				snprintf(out, n, "%s", line + 18 +
					 strspn(line + 18, " \t"));
				out[strcspn(out, "\n")] = 0;
			}
		if (f)
			fclose(f);
		break;
	}
	if (d)
		closedir(d);
}

/* [replication] cpus: the threads that move records (the primary's agent
 * and its reader of acknowledgements, the standby's linker) run on the
 * CPUs given, under their names; the others where the daemon may. */
Test(repl_roles, the_threads_that_move_records_run_on_the_cpus_given)
{
	static const struct { struct host *h; const char *name; } hot[] = {
		{ &A, "sb-ship" }, { &A, "sb-acks" }, { &B, "sb-apply" },
	};
	char ext[32], want[16], got[64], all[64];
	cpu_set_t set;
	int cpu = -1, n = 0;

	cr_assert_eq(sched_getaffinity(0, sizeof(set), &set), 0);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &set)) {
			cpu = c;	/* the last one */
			n++;
		}
	snprintf(ext, sizeof(ext), "cpus = %d\n", cpu);
	snprintf(want, sizeof(want), "%d", cpu);
	pair_setup(CHANS, ext);
	for (size_t i = 0; i < sizeof(hot) / sizeof(hot[0]); i++) {
		/* The reader starts as the standby links: a moment. */
		for (int k = 0; k < 200; k++) {
			thread_cpus(hot[i].h->pid, hot[i].name, got,
				    sizeof(got));
			if (got[0])
				break;
			usleep(10000);
		}
		cr_assert_str_eq(got, want, "%c's %s runs on '%s'",
				 hot[i].h->tag, hot[i].name, got);
	}
	thread_cpus(A.pid, "sb-listener", got, sizeof(got));
	thread_cpus(A.pid, "sb-reaper", all, sizeof(all));
	cr_assert(got[0] && all[0], "the listener and the reaper are named");
	cr_assert_str_eq(got, all);
	if (n > 1)
		cr_assert_str_neq(all, want, "the reaper was placed too");
}

/* n messages of 64 bytes on h's channel sp, each tagged with `who`. */
static void publish_on(const struct host *h, int n, uint8_t who)
{
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(h, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub;
	uint8_t msg[64];

	cr_assert(ch, "%c: %s", h->tag, strerror(errno));
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	for (int i = 0; i < n; i++) {
		th_msg_fill(msg, sizeof(msg), who, (uint64_t)i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/*
 * Two hosts primary at one epoch: each promoted by force while the other
 * was down, both at epoch 2, each writing its own messages after the
 * records they share.  Back together, the one that stands by must not be
 * linked: its records of epoch 2 are not the primary's, and matched by
 * the epoch alone it would keep them and take the primary's after them
 * (two rings that differ, silently).  The link is refused, saying why,
 * and the standby's ring is left as it was.
 */
Test(repl_roles, two_hosts_promoted_apart_at_one_epoch_are_not_linked)
{
	struct shmbus_ctl_repl_reply r;
	shmbus_channel *bmap;
	uint64_t bhead;

	pair_setup(CHANS, "");
	publish_on(&A, 100, 1);
	pair_wait_caught_up("sp", 100 * 80, 10000);
	host_kill(&A, SIGKILL);
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE,
			      &r), 0, "%s", r.text);
	cr_assert(strstr(r.text, "primary at epoch 2"), "%s", r.text);
	publish_on(&B, 20, 2);
	host_kill(&B, SIGKILL);
	host_config(&A, "standby", B.listen, CHANS, "");
	host_start(&A);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE,
			      &r), 0, "%s", r.text);
	cr_assert(strstr(r.text, "primary at epoch 2"), "%s", r.text);
	publish_on(&A, 50, 3);
	bmap = host_map(&B, "sp");
	cr_assert(bmap);
	bhead = sb_ring_head(bmap);
	cr_assert_eq(bhead, 120 * 80);
	host_config(&B, "standby", A.listen, CHANS, "");
	host_start(&B);
	cr_assert(host_log_wait(&A, "the standby's epoch 2 was begun by "
				"another promotion", 10000),
		  "A linked a standby that was primary at its epoch");
	cr_assert(host_log_wait(&B, "its ring must be rebuilt", 2000));
	cr_assert_eq(sb_ring_head(bmap), bhead, "B's ring was written");
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert_null(strstr(r.text, "sp: link up"), "%s", r.text);
	shmbus_channel_close(bmap);
}

/*
 * Every group of a channel reaches the standby, not only as many as one
 * GROUPS frame holds (32): 40 groups made on A while linked, each of
 * which acknowledges every message, all have B's copy at A's floor.
 * Before, the same 32 were shipped each time and the others' copies
 * stayed where they were made (or were never made), to be lapped on B.
 */
Test(repl_roles, every_group_of_a_channel_reaches_the_standby)
{
	struct shmbus_group_stats st;
	struct shmbus_group_msg m;
	shmbus_channel *ach, *sch, *bview;
	shmbus_group *g[40];
	shmbus_bus *bus, *sbus;
	shmbus_pub *pub;
	uint64_t id, head;
	char name[16];
	int left;

	pair_setup("[channel jobs]\ncapacity = 64K\nmax_msg = 256\n"
		   "replicate = applied\n", "");
	ach = host_open(&A, &bus, "jobs", SHMBUS_ROLE_PUBLISH);
	cr_assert(ach, "%s", strerror(errno));
	sch = host_open(&A, &sbus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(sch, "%s", strerror(errno));
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "g%02d", i);
		g[i] = shmbus_group_join(sch, name, "w", NULL);
		cr_assert(g[i], "join %s: %s", name, strerror(errno));
	}
	pub = shmbus_pub_open(ach, NULL);
	cr_assert(pub);
	for (id = 0; id < 100; id++)
		cr_assert_eq(shmbus_publish(pub, &id, sizeof(id)), 0);
	cr_assert_eq(shmbus_pub_sync(pub, 5000000000), 0);
	head = sb_ring_head(ach);
	for (int i = 0; i < 40; i++) {
		for (int k = 0; k < 100; k++) {
			cr_assert_eq(shmbus_group_read(g[i], &id, sizeof(id),
						       &m), 8);
			cr_assert_eq(shmbus_group_ack(g[i], &m.lease), 0);
		}
		shmbus_group_stats(g[i], &st);
		cr_assert_eq(st.floor, head);
	}
	bview = host_map(&B, "jobs");
	cr_assert(bview);
	for (int t = 0; t < 300; t++) {
		left = 0;
		for (int i = 0; i < 40; i++) {
			unsigned n = 0;

			snprintf(name, sizeof(name), "g%02d", i);
			left += sb_group_inspect(bview, B.dir, name, &st, NULL,
						 &n) != 0 || st.floor != head;
		}
		if (!left)
			break;
		usleep(10000);
	}
	cr_assert_eq(left, 0, "%d of 40 groups' copies on B are not at A's "
		     "floor", left);
	for (int i = 0; i < 40; i++)
		shmbus_group_leave(g[i]);
	shmbus_channel_close(bview);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
	shmbus_pub_close(pub);
	shmbus_channel_close(ach);
	shmbus_disconnect(bus);
}

/*
 * A group made in the same tick of the directory's clock as the agent's
 * listing that found none leaves the directory's time as it was (tmpfs
 * keeps it within a tick): emulated by setting the time back after the
 * join.  The agent does not trust a time within a second of now, lists
 * again, and the group reaches the standby; before, it never did, and a
 * failover lost what the group had not acknowledged.
 */
Test(repl_roles, a_group_made_in_the_tick_of_a_listing_reaches_the_standby)
{
	struct timespec ts[2];
	struct stat st;
	shmbus_channel *sch;
	shmbus_group *g;
	shmbus_bus *bus;
	char path[256];
	int i;

	pair_setup("[channel jobs]\ncapacity = 64K\nmax_msg = 256\n"
		   "replicate = applied\n", "");
	sch = host_open(&A, &bus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(sch, "%s", strerror(errno));
	/* A's directory changed just now; the agent lists it (no group). */
	cr_assert_eq(utimensat(AT_FDCWD, A.dir, NULL, 0), 0);
	cr_assert_eq(stat(A.dir, &st), 0);
	usleep(100000);
	g = shmbus_group_join(sch, "late", "w", NULL);
	cr_assert(g, "%s", strerror(errno));
	ts[0] = st.st_atim;
	ts[1] = st.st_mtim;
	cr_assert_eq(utimensat(AT_FDCWD, A.dir, ts, 0), 0);
	snprintf(path, sizeof(path), "%s/.jobs@late.group", B.dir);
	for (i = 0; i < 300 && access(path, F_OK); i++)
		usleep(10000);
	cr_assert_eq(access(path, F_OK), 0, "B has no copy of the group "
		     "after 3 s");
	shmbus_group_leave(g);
	shmbus_channel_close(sch);
	shmbus_disconnect(bus);
}

/* A publisher on A's "fo" for `arg` ms, as fast as the ring lets it. */
static int fo_publisher(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 200000000LL };
	int64_t until = (int64_t)th_now_ns() + (int64_t)(intptr_t)arg * 1000000;
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, "fo", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[100] = { 1 };

	if (!pub)
		return 2;
	while ((int64_t)th_now_ns() < until) {
		int rc = shmbus_publish_keyed(pub, msg[0]++ % 8, msg,
					      sizeof(msg));

		if (rc && rc != -ETIMEDOUT)
			return 3;
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* A member of A's group "work" for `arg` ms, slower than the publisher
 * (a pause after each message): the group holds the full ring. */
static enum shmbus_group_mode fo_mode;

static int fo_member(void *arg)
{
	int64_t until = (int64_t)th_now_ns() + (int64_t)(intptr_t)arg * 1000000;
	struct shmbus_group_attr ga;
	struct shmbus_group_msg m;
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, "fo", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_group *g;
	uint8_t buf[128];

	shmbus_group_attr_init(&ga);
	ga.mode = fo_mode;
	g = ch ? shmbus_group_join(ch, "work", "m", &ga) : NULL;
	if (!g)
		return 2;
	while ((int64_t)th_now_ns() < until) {
		ssize_t r = shmbus_group_read(g, buf, sizeof(buf), &m);

		if (r == -EAGAIN)
			continue;
		if (r < 0 || shmbus_group_ack(g, &m.lease))
			return 3;
		usleep(50);
	}
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/*
 * A group that holds a full ring (its member slower than the producer)
 * has its copy on the standby (all but) never lapped by the standby's
 * ring writer:
 * the agent ships the groups' states before records that could lap their
 * copies.  Before, the copy followed the primary's every 20 ms and was
 * lapped again and again, so a failover then skipped records the group
 * had not acknowledged (up to an index segment of them).
 */
static void copy_never_lapped(const char *mode)
{
	char chans[256];
	shmbus_channel *bview;
	unsigned looks = 0, lapped = 0;
	int64_t until;
	pid_t pub, mem;

	snprintf(chans, sizeof(chans), "[channel fo]\ncapacity = 64K\n"
		 "max_msg = 1K\nreplicate = received\n"
		 "consumer_groups = work mode=%s\n", mode);
	pair_setup(chans, "");
	mem = th_spawn(fo_member, (void *)(intptr_t)1500);
	pub = th_spawn(fo_publisher, (void *)(intptr_t)1200);
	bview = host_map(&B, "fo");
	cr_assert(bview);
	until = (int64_t)th_now_ns() + 1200000000;
	while ((int64_t)th_now_ns() < until) {
		struct shmbus_group_stats st;
		uint64_t head = sb_ring_head(bview);
		unsigned n = 0;

		/* The floor read after head: it only grows, so a lap seen
		 * here is one. */
		if (sb_group_inspect(bview, B.dir, "work", &st, NULL, &n) == 0) {
			looks++;
			lapped += st.floor + 65536 - SHMBUS_REC_ALIGN < head;
		}
		usleep(200);
	}
	cr_assert_eq(th_wait(pub), 0);
	cr_assert_eq(th_wait(mem), 0);
	cr_assert_gt(looks, 100);
	/* Without the agent's states ahead of the records, the copy is
	 * lapped in most looks; with the reaper's maintenance racing the
	 * update of the copy, in a few now and then. */
	cr_assert_eq(lapped, 0, "B's copy of the %s group lapped in %u of %u "
		     "looks", mode, lapped, looks);
	shmbus_channel_close(bview);
}

Test(repl_roles, a_shared_groups_copy_is_never_lapped_on_the_standby)
{
	fo_mode = SHMBUS_GROUP_SHARED;
	copy_never_lapped("shared");
}

Test(repl_roles, a_keyed_groups_copy_is_never_lapped_on_the_standby)
{
	fo_mode = SHMBUS_GROUP_KEYED;
	copy_never_lapped("keyed");
}

/* A replicated channel the config gains at a reload is made at the next
 * restart, with its replication, as a journaled one is: made at once it
 * would be replicated by nobody (its pub_sync() returning 0 at `local`
 * for a channel the config says `applied`), and on the standby it would
 * take producers, whose records the primary's would diverge from once
 * both replicate it.  shmbusctl create of that name is refused too. */
Test(repl_roles, a_replicated_channel_added_by_a_reload_waits_for_a_restart)
{
	const char *late = CHANS "[channel late]\ncapacity = 64K\n"
			   "max_msg = 1K\nreplicate = applied\n";
	shmbus_bus *bus;
	shmbus_channel *ch;
	char cmd[512];

	pair_setup(CHANS, "");
	host_config(&B, "standby", A.listen, late, "");
	cr_assert_eq(kill(B.pid, SIGHUP), 0);
	cr_assert(host_log_wait(&B, "configuration reloaded", 5000));
	cr_assert(host_log_wait(&B, "late: replicated, so made at the next "
				"restart", 100), "the reload made it");
	ch = host_open(&B, &bus, "late", SHMBUS_ROLE_PUBLISH);
	cr_assert_null(ch, "a producer on the standby's unreplicated copy");
	shmbus_disconnect(bus);
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl -b %s create late "
		 "--capacity 64K 2>&1 | grep -q 'replicated by the config'",
		 B.sock);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	/* At the restart it is made a standby's: producers refused. */
	host_kill(&B, SIGTERM);
	host_start(&B);
	cr_assert(host_log_wait(&B, "late: linked to primary", 5000) ||
		  host_log_wait(&B, "replication: standby", 100));
	standby_refuses_producers(&B, &bus, "late");
	shmbus_disconnect(bus);
}

/* A standby restarted as primary by its config: when a standby last had
 * everything of its rings is not known yet (busstat's LAGT "?"); the
 * time its linker left in the data file is of another primary's term. */
Test(repl_roles, a_standby_started_as_primary_knows_no_lag_time)
{
	struct shmbus_repl_info ri;
	shmbus_channel *ch;

	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	publish_on(&A, 20, 1);
	/* B holds them (its ring not empty: a lag to show), then A dies. */
	ch = host_map(&B, "sp");
	cr_assert(ch);
	for (int i = 0; i < 3000 && sb_ring_head(ch) < 20 * 80; i++)
		usleep(1000);
	cr_assert_geq(sb_ring_head(ch), 20 * 80, "B holds the 20 messages");
	shmbus_channel_close(ch);
	host_kill(&A, SIGKILL);
	host_kill(&B, SIGTERM);
	host_config(&B, "primary", A.listen, CHANS, "");
	host_start(&B);
	cr_assert(host_log_wait(&B, "replication: primary", 3000));
	ch = host_map(&B, "sp");
	cr_assert(ch);
	cr_assert_eq(shmbus_channel_replication(ch, &ri), 0);
	shmbus_channel_close(ch);
	cr_assert_eq(ri.lag_ns, UINT64_MAX, "LAGT %.3f s for a standby this "
		     "primary never heard from", ri.lag_ns / 1e9);
	/* shmbusctl status says so too, and names no position of it. */
	{
		struct shmbus_ctl_repl_reply r;

		cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		const char *sp = strstr(r.text, "sp: link down, at ");
		const char *end = sp ? strchr(sp, '\n') : NULL;

		cr_assert(sp && strstr(sp, ", standby not linked at this "
				       "epoch: what it holds is not known"),
			  "%s", r.text);
		cr_assert(!strstr(sp, "standby at ") ||
			  (end && strstr(sp, "standby at ") > end), "%s",
			  r.text);
	}
}
