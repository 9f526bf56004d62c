/* SPDX-License-Identifier: MIT */
/*
 * test_repair.c - crash repair by a real shmbusd, with real kill -9: a producer
 * that dies holding a claim (multi and single producer), a subscriber that
 * dies holding a full ring, a producer that is only stopped (never
 * repaired), and the daemon itself killed under traffic and restarted.
 * Every repair is timed from the kill against the bound (100 ms).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"

Test(repair, killed_producer_claim_is_repaired, .init = setup,
     .fini = teardown)
{
	struct child a = { .name = "mp", .n = 50, .id = 1 };
	struct child b = { .name = "mp", .n = 500, .id = 2 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_bus_channel bc;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "mp", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint64_t next[4] = { 0 }, t0, waited;
	uint8_t buf[2048];
	pid_t pa, pb;

	cr_assert(sub);
	child_pipes(&a);
	child_pipes(&b);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	/* B's messages all land behind A's open claim. */
	pb = th_spawn(publisher, &b);
	hear(b.ready[0]);
	cr_assert_eq(th_wait(pb), 0);
	/* Only A's committed messages come before its claim. */
	read_in_order(sub, 50, next);
	usleep(50000);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN,
		     "read past an open claim");

	t0 = th_now_ns();
	kill(pa, SIGKILL);
	waited = read_in_order(sub, 500, next) - t0;
	cr_assert(waited <= bound_ns(), "resumed after %llu ms",
		  (unsigned long long)(waited / 1000000));
	cr_assert_eq(next[2], 500, "B's messages, all of them");
	cr_assert_eq(th_wait(pa), 128 + SIGKILL);
	cr_assert_eq(shmbus_bus_describe(bus, "mp", &bc), 0);
	cr_assert_eq(bc.repairs, 1);
	cr_assert_geq(bc.reaped, 1);
	cr_assert(log_has("its unfinished claim padded"));
	cr_log_info("subscribers resumed %llu us after the kill",
		    (unsigned long long)(waited / 1000));
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(repair, killed_single_producer_claim_is_repaired, .init = setup,
     .fini = teardown)
{
	struct child a = { .name = "blk", .n = 50, .id = 1 };
	struct child b = { .name = "blk", .n = 100, .id = 2 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_bus_channel bc;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "blk", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint64_t next[4] = { 0 }, t0, repaired;
	pid_t pa, pb;

	cr_assert(sub);
	child_pipes(&a);
	child_pipes(&b);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	t0 = th_now_ns();
	kill(pa, SIGKILL);
	cr_assert_eq(th_wait(pa), 128 + SIGKILL);
	/* shmbusd pads the claim and frees the producer role by itself,
	 * before any new producer comes. */
	for (;;) {
		cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
		if (bc.repairs == 1 && bc.producers_active == 0)
			break;
		cr_assert(th_now_ns() - t0 < bound_ns(),
			  "single producer not repaired");
		usleep(1000);
	}
	repaired = th_now_ns() - t0;
	/* A new producer takes the role at once and goes on. */
	pb = th_spawn(publisher, &b);
	hear(b.ready[0]);
	read_in_order(sub, 150, next);
	cr_assert_eq(th_wait(pb), 0);
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.repairs, 1, "repaired twice");
	cr_assert(log_has("padded the unfinished claim of dead producer"));
	/* Logged only now: Criterion's logging wakes its own threads, and a
	 * fork() must not copy them in the middle of an allocation. */
	cr_log_info("single producer repaired %llu us after the kill",
		    (unsigned long long)(repaired / 1000));
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(repair, killed_subscriber_releases_producer, .init = setup,
     .fini = teardown)
{
	struct child c = { .name = "tiny" };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "tiny", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	struct shmbus_channel_info in;
	uint8_t buf[200] = { 0 };
	uint64_t t0, waited;
	pid_t s;
	int n = 0, rc;

	cr_assert(pub);
	child_pipes(&c);
	s = th_spawn(idle_subscriber, &c);
	hear(c.ready[0]);
	while ((rc = shmbus_publish(pub, buf, sizeof(buf))) == 0)
		n++;
	cr_assert_eq(rc, -EAGAIN, "the ring is full: back-pressure");
	cr_assert_gt(n, 10);
	usleep(50000);	/* the live subscriber is never released */
	cr_assert_eq(shmbus_publish(pub, buf, sizeof(buf)), -EAGAIN);

	t0 = th_now_ns();
	kill(s, SIGKILL);
	while (shmbus_publish(pub, buf, sizeof(buf)) == -EAGAIN)
		cr_assert(th_now_ns() - t0 < 5000000000ull, "never released");
	waited = th_now_ns() - t0;
	cr_log_info("the producer resumed %llu us after the kill",
		    (unsigned long long)(waited / 1000));
	cr_assert(waited <= bound_ns(), "resumed after %llu ms",
		  (unsigned long long)(waited / 1000000));
	cr_assert_eq(th_wait(s), 128 + SIGKILL);
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.subscribers, 0);
	cr_assert_eq(in.reaped, 1);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A process that has nothing to do with the bus: sleeps until killed. */
static int unrelated(void *arg)
{
	(void)arg;
	while (pause() < 0)	/* it always is */
		;
	return 0;
}

/*
 * A subscriber killed while shmbusd is stopped, and its pid given to a
 * process that never uses the bus and lives on: when shmbusd runs again,
 * its scan finds the slot's pid alive but of another start (the owner
 * word's tag), and releases the slot (the producer, which would look for
 * gone processes itself when held back, does not publish meanwhile).  (By
 * the pid alone the slot was alive until the new process exited: reaped
 * 0, the producer held for good.)
 */
Test(repair, a_dead_subscribers_pid_given_to_another_process_is_released,
     .init = setup, .fini = teardown)
{
	struct child c = { .name = "tiny" };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "tiny", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	struct shmbus_channel_info in;
	uint8_t buf[200] = { 0 };
	uint32_t slot = SHMBUS_MAX_SLOTS;
	uint64_t o = 0, t0;
	pid_t s, u;

	cr_assert(pub);
	child_pipes(&c);
	s = th_spawn(idle_subscriber, &c);
	hear(c.ready[0]);
	while (shmbus_publish(pub, buf, sizeof(buf)) == 0)
		;
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t w = __atomic_load_n(&ch->subs[i].owner,
					     __ATOMIC_ACQUIRE);

		if (owner_pid(w) == (uint32_t)s) {
			slot = i;
			o = w;
		}
	}
	cr_assert_lt(slot, SHMBUS_MAX_SLOTS);
	kill(d.pid, SIGSTOP);
	kill(s, SIGKILL);
	cr_assert_eq(th_wait(s), 128 + SIGKILL);
	/* A start tag counts clock ticks (10 ms): a pid is not reused
	 * within one but by this test. */
	usleep(30000);
	u = th_spawn_as(s, unrelated, NULL);
	if (u < 0) {
		/* The kernel's counter cannot be set here: the reuse is
		 * played by writing an unrelated process's pid over the
		 * dead one's, its tag kept. */
		u = th_spawn(unrelated, NULL);
		__atomic_store_n(&ch->subs[slot].owner,
				 (uint64_t)(uint32_t)u << 32 | (uint32_t)o,
				 __ATOMIC_RELEASE);
	}
	cr_log_info("unrelated process %d (the dead subscriber was %d)",
		    (int)u, (int)s);
	kill(d.pid, SIGCONT);
	t0 = th_now_ns();
	while (owner_state(__atomic_load_n(&ch->subs[slot].owner,
					   __ATOMIC_ACQUIRE)) !=
	       SHMBUS_SLOT_FREE) {
		cr_assert(th_now_ns() - t0 < 3000000000ull, "the dead "
			  "subscriber's slot, its pid alive in another "
			  "process, was never released");
		usleep(1000);
	}
	cr_log_info("released %llu us after shmbusd went on",
		    (unsigned long long)((th_now_ns() - t0) / 1000));
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.subscribers, 0);
	cr_assert_eq(in.reaped, 1);
	cr_assert_eq(shmbus_publish(pub, buf, sizeof(buf)), 0);
	kill(u, SIGKILL);
	th_wait(u);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/*
 * The subscriber slots' high-water mark (how many slots producers scan)
 * written down to 0 under a live subscriber: shmbusd's scan raises it
 * again and says so, and the producer is held by the subscriber that
 * never reads, instead of lapping it.
 */
Test(repair, a_high_water_mark_written_under_a_slot_is_raised,
     .init = setup, .fini = teardown)
{
	struct child c = { .name = "tiny" };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "tiny", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t buf[200] = { 0 };
	uint64_t t0 = th_now_ns();
	pid_t s;
	int n = 0, rc;

	cr_assert(pub);
	child_pipes(&c);
	s = th_spawn(idle_subscriber, &c);
	hear(c.ready[0]);
	cr_assert_geq(load_relaxed32(&ch->hdr->nsub_hwm), 1);
	store_relaxed32(&ch->hdr->nsub_hwm, 0);
	while (!log_has("high-water mark was 0"))
		cr_assert(th_now_ns() - t0 < 5000000000ull, "never said");
	cr_assert_geq(load_relaxed32(&ch->hdr->nsub_hwm), 1, "raised");
	while ((rc = shmbus_publish(pub, buf, sizeof(buf))) == 0)
		cr_assert_lt(++n, 1000, "the producer laps the subscriber");
	cr_assert_eq(rc, -EAGAIN, "the ring is full: back-pressure");
	kill(s, SIGKILL);
	cr_assert_eq(th_wait(s), 128 + SIGKILL);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(repair, stopped_producer_is_never_repaired, .init = setup,
     .fini = teardown)
{
	struct child a = { .name = "mp", .n = 0, .id = 7 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_channel_info in;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "mp", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint8_t buf[256];
	uint32_t id;
	uint64_t seq;
	ssize_t n;
	pid_t pa;

	cr_assert(sub);
	child_pipes(&a);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	kill(pa, SIGSTOP);
	usleep(300000);		/* many reaper intervals */
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.repairs, 0, "a stopped producer was repaired");
	cr_assert_eq(in.reaped, 0);
	cr_assert_eq(in.producers_active, 1);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);
	kill(pa, SIGCONT);
	say(a.go[1]);
	while ((n = shmbus_read(sub, buf, sizeof(buf), NULL)) == -EAGAIN)
		usleep(1000);
	cr_assert_eq(n, 40);
	cr_assert_eq(th_msg_check(buf, 40, &id, &seq), 0, "torn message");
	cr_assert_eq(id, 7);
	cr_assert_eq(th_wait(pa), 0);
	shmbus_channel_info(ch, &in);
	cr_assert_eq(in.repairs, 0);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(repair, daemon_killed_during_traffic, .init = setup, .fini = teardown,
     .timeout = 120)
{
	struct child c = { .name = "blk", .id = 3, .pace_us = 1000 };
	struct shmbus_channel_info in;
	struct shmbus_bus_channel bc;
	shmbus_channel *ro;
	struct child idle = { .name = "tiny" };
	shmbus_bus *bus;
	pid_t s, p, i;
	int tries;

	c.n = th_env_count("SHMBUS_RESTART_N", 1000000);
	child_pipes(&c);
	/* A client that will die after the restart: the new daemon must
	 * know it from its re-registration. */
	child_pipes(&idle);
	i = th_spawn(idle_subscriber, &idle);
	hear(idle.ready[0]);
	s = th_spawn(subscriber, &c);
	hear(c.ready[0]);
	p = th_spawn(publisher, &c);
	hear(c.ready[0]);
	usleep(50000);
	kill(d.pid, SIGKILL);
	cr_assert_eq(th_wait(d.pid), 128 + SIGKILL);
	ro = shmbus_channel_open_ro(d.dir, "blk");
	cr_assert(ro);
	shmbus_channel_info(ro, &in);
	cr_log_info("daemon killed after %llu of %llu messages",
		    (unsigned long long)in.published,
		    (unsigned long long)c.n);
	cr_assert_lt(in.published, c.n, "the traffic ended before the kill");
	usleep(100000);		/* traffic flows without a daemon */
	start_daemon();
	cr_assert(log_has("blk: adopted"));
	/* Both clients re-register with the new daemon on their own. */
	bus = shmbus_connect(d.sock);
	cr_assert(bus);
	for (tries = 0; tries < 200; tries++) {
		struct shmbus_bus_channel tiny;

		if (shmbus_bus_describe(bus, "blk", &bc) == 0 &&
		    bc.clients == 2 &&
		    shmbus_bus_describe(bus, "tiny", &tiny) == 0 &&
		    tiny.clients == 1)
			break;
		usleep(10000);
	}
	cr_assert_eq(bc.clients, 2, "clients did not re-attach");
	shmbus_channel_info(ro, &in);
	cr_assert_lt(in.published, c.n, "re-attached only after the traffic");
	shmbus_channel_close(ro);
	cr_assert_eq(th_wait(p), 0);
	cr_assert_eq(th_wait(s), 0, "lost, duplicated or torn messages");
	cr_assert_eq(shmbus_bus_describe(bus, "blk", &bc), 0);
	cr_assert_eq(bc.published, c.n);

	/* Crash repair works with the new daemon for a re-registered client:
	 * its connection closing is noticed at once. */
	{
		uint64_t t0 = th_now_ns();

		kill(i, SIGKILL);
		for (;;) {
			shmbus_bus_describe(bus, "tiny", &bc);
			if (bc.subscribers == 0)
				break;
			cr_assert(th_now_ns() - t0 < bound_ns(),
				  "slot not released after the restart");
			usleep(1000);
		}
		cr_assert_eq(bc.reaped, 1);
		cr_assert_eq(th_wait(i), 128 + SIGKILL);
	}
	shmbus_disconnect(bus);
}

static int exit_at_once(void *arg)
{
	(void)arg;
	return 0;
}

/*
 * A process killed while it set its slot up (or while it released one it
 * was repairing) leaves the slot BUSY under its pid: shmbusd frees it,
 * so slots are never lost for good.
 */
Test(repair, busy_slots_of_dead_processes_are_freed, .fini = teardown)
{
	struct shmbus_prod_slot *prods;
	struct shmbus_sub_slot *subs;
	struct shmbus_hdr *h;
	uint8_t *ctl, *data;
	size_t len, data_len;
	uint64_t busy;
	pid_t dead = th_spawn(exit_at_once, NULL);

	cr_assert_eq(th_wait(dead), 0);
	setup_with("[defaults]\nsubscribe = *\n[channel ch]\ncapacity = 16K\n"
		   "producers = multi\n");
	ctl = th_map_channel(d.dir, &len);
	data = th_map_data(d.dir, &data_len);
	cr_assert(ctl && data);
	h = (struct shmbus_hdr *)ctl;
	prods = (struct shmbus_prod_slot *)(data + h->capacity +
					    SHMBUS_PRODS_OFFSET);
	subs = (struct shmbus_sub_slot *)(ctl + h->slots_offset);
	busy = (uint64_t)(uint32_t)dead << 32 | SHMBUS_SLOT_BUSY;
	__atomic_store_n(&prods[3].owner, busy, __ATOMIC_RELEASE);
	__atomic_store_n(&subs[5].sleeping, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->sleepers, 1, __ATOMIC_SEQ_CST);
	__atomic_store_n(&subs[5].owner, busy, __ATOMIC_RELEASE);
	for (int i = 0; i < 100; i++) {
		if (__atomic_load_n(&prods[3].owner, __ATOMIC_ACQUIRE) ==
			    SHMBUS_SLOT_FREE &&
		    __atomic_load_n(&subs[5].owner, __ATOMIC_ACQUIRE) ==
			    SHMBUS_SLOT_FREE)
			break;
		usleep(10000);
	}
	cr_assert_eq(prods[3].owner, SHMBUS_SLOT_FREE, "producer slot kept");
	cr_assert_eq(subs[5].owner, SHMBUS_SLOT_FREE, "subscriber slot kept");
	cr_assert_eq(h->sleepers, 0, "its sleeper count kept");
	cr_assert_eq(prods[3].claim_pos, UINT64_MAX);
	munmap(ctl, len);
}

static struct takers {
	atomic_int go, got, done;
} *go_flag;

/* Two processes take over a single-producer channel whose publisher died,
 * at the same moment: one gets the role, the other -EBUSY, never both (the
 * loser of the take-over once took the role from the winner).  Direct
 * mode: the race is the library's. */
static int take_role(void *arg)
{
	const char *dir = arg;
	shmbus_channel *c = shmbus_channel_open(dir, "sp");
	shmbus_pub *p;

	while (c && !atomic_load(&go_flag->go))
		;
	p = c ? shmbus_pub_open(c, NULL) : NULL;
	atomic_fetch_add(&go_flag->got, p ? 1 : 0);
	atomic_fetch_add(&go_flag->done, 1);
	pause();	/* alive, holding what it got */
	return 0;
}

Test(repair, one_of_two_takers_gets_a_dead_producers_role)
{
	const char *dir = th_mkdir();
	struct shmbus_channel_attr a;
	int both = 0;

	go_flag = mmap(NULL, sizeof(*go_flag), PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(go_flag != MAP_FAILED);
	shmbus_channel_attr_init(&a);
	a.capacity = 4096;
	a.producers = SHMBUS_SINGLE_PRODUCER;
	for (int it = 0; it < 200; it++) {
		shmbus_channel *ch;
		pid_t dead, t[2];
		int st;

		shmbus_channel_unlink(dir, "sp");
		ch = shmbus_channel_create(dir, "sp", &a, 0);
		cr_assert(ch, "create: %s", strerror(errno));
		dead = fork();
		if (dead == 0)
			_exit(shmbus_pub_open(ch, NULL) ? 0 : 1);
		cr_assert_eq(waitpid(dead, &st, 0), dead);
		cr_assert_eq(WEXITSTATUS(st), 0);
		atomic_store(&go_flag->go, 0);
		atomic_store(&go_flag->got, 0);
		atomic_store(&go_flag->done, 0);
		for (int k = 0; k < 2; k++)
			t[k] = th_spawn(take_role, (void *)dir);
		usleep(1000);
		atomic_store(&go_flag->go, 1);
		while (atomic_load(&go_flag->done) < 2)
			usleep(100);
		cr_assert_geq(atomic_load(&go_flag->got), 1, "nobody took it");
		both += atomic_load(&go_flag->got) == 2;
		for (int k = 0; k < 2; k++) {
			kill(t[k], SIGKILL);
			waitpid(t[k], NULL, 0);
		}
		shmbus_channel_close(ch);
	}
	shmbus_channel_unlink(dir, "sp");
	th_rmdir(dir);
	cr_assert_eq(both, 0, "both takers got the role in %d of 200 rounds",
		     both);
}

/*
 * A producer killed between its commit and its wake-up call (this test
 * binary wraps syscall(): a producer told to dies on its FUTEX_WAKE) left
 * a sleeping subscriber asleep beside a message it could read.  Through
 * shmbusd the reaper's repair wakes it; in direct mode, the next producer
 * does as it takes the dead one's place.
 */
static volatile int die_at_wake;

long __real_syscall(long n, ...);
long __wrap_syscall(long n, ...);
long __wrap_syscall(long n, ...)
{
	va_list ap;
	long a[6];

	va_start(ap, n);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (die_at_wake && n == SYS_futex &&
	    (a[1] & FUTEX_CMD_MASK) == FUTEX_WAKE)
		raise(SIGKILL);
	return __real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

static struct sleeper_sh {
	atomic_int asleep_ms;	/* how long its wait took, + 1 */
} *slp;
static const char *chan_name;	/* the channel of the two below */

static int sleeper(void *arg)
{
	const char *dir = arg;
	struct shmbus_sub_attr sa;
	shmbus_bus *bus = NULL;
	shmbus_channel *c = dir ? shmbus_channel_open(dir, chan_name)
				: open_role(&bus, chan_name,
					    SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *s;
	int64_t t0;
	int rc;

	shmbus_sub_attr_init(&sa);
	sa.wait = SHMBUS_WAIT_SLEEP;
	s = c ? shmbus_sub_open(c, &sa) : NULL;
	if (!s)
		return 2;
	t0 = th_now_ns();
	rc = shmbus_wait(s, 10000000000);
	atomic_store(&slp->asleep_ms, (int)((th_now_ns() - t0) / 1000000) + 1);
	return rc;
}

static int dies_at_wake(void *arg)
{
	const char *dir = arg;
	shmbus_bus *bus = NULL;
	shmbus_channel *c = dir ? shmbus_channel_open(dir, chan_name)
				: open_role(&bus, chan_name, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *p = c ? shmbus_pub_open(c, NULL) : NULL;

	if (!p)
		return 2;
	die_at_wake = 1;
	shmbus_publish(p, "x", 1);
	return 3;	/* not reached: killed at the wake */
}

/* Starts a sleeper on channel chan_name (dir: directly there, else
 * through the daemon), waits until it sleeps (ch, mapped), then a
 * producer that dies at its wake-up call. */
static pid_t sleeper_and_dying_producer(shmbus_channel *ch, const char *dir)
{
	pid_t s, p;
	int st;

	slp = mmap(NULL, sizeof(*slp), PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(slp != MAP_FAILED);
	atomic_store(&slp->asleep_ms, 0);
	s = th_spawn(sleeper, (void *)dir);
	for (int i = 0; i < 2000 && !__atomic_load_n(&ch->hdr->sleepers,
						     __ATOMIC_SEQ_CST); i++)
		usleep(1000);
	cr_assert(__atomic_load_n(&ch->hdr->sleepers, __ATOMIC_SEQ_CST),
		  "the subscriber never slept");
	p = th_spawn(dies_at_wake, (void *)dir);
	cr_assert_eq(waitpid(p, &st, 0), p);
	cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "the producer was not killed at its wake-up call");
	return s;
}

static void woken_through_the_daemon(const char *name)
{
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, name, SHMBUS_ROLE_SUBSCRIBE);
	pid_t s;

	cr_assert(ch);
	chan_name = name;
	s = sleeper_and_dying_producer(ch, NULL);
	cr_assert_eq(th_wait(s), 0, "the sleeper's wait failed");
	/* Less than a sleep's longest (a second, wait.c): woken by the
	 * repair, not by the end of its sleep. */
	cr_assert_lt(atomic_load(&slp->asleep_ms), 900, "asleep %d ms "
		     "beside a message", atomic_load(&slp->asleep_ms) - 1);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(repair, a_sleeper_is_woken_after_its_producer_died_before_waking_it,
     .init = setup, .fini = teardown)
{
	woken_through_the_daemon("blk");
}

Test(repair, a_sleeper_is_woken_after_a_multi_producer_died_so,
     .init = setup, .fini = teardown)
{
	woken_through_the_daemon("mp");
}

Test(repair, a_sleeper_is_woken_by_the_producer_taking_a_dead_ones_place)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 16, 256, SHMBUS_BLOCK,
				       SHMBUS_SINGLE_PRODUCER);
	shmbus_channel *c;
	shmbus_pub *p;
	pid_t s;

	chan_name = "ch";
	s = sleeper_and_dying_producer(ch, dir);
	usleep(300000);
	cr_assert_eq(atomic_load(&slp->asleep_ms), 0, "woken by nobody?");
	c = shmbus_channel_open(dir, "ch");
	p = c ? shmbus_pub_open(c, NULL) : NULL;
	cr_assert(p, "take-over: %s", strerror(errno));
	cr_assert_eq(th_wait(s), 0, "the sleeper's wait failed");
	/* About 300 ms asleep: less than a sleep's longest (a second,
	 * wait.c), so woken by the take-over. */
	cr_assert_lt(atomic_load(&slp->asleep_ms), 700, "asleep %d ms "
		     "beside a message", atomic_load(&slp->asleep_ms) - 1);
	shmbus_pub_close(p);
	shmbus_channel_close(c);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * Many channels, each with a consumer group: a scan of them all stays
 * within the repair bound, so a subscriber killed on one of them is
 * released as fast as on a bus of four channels.  (Each scan once read
 * the whole shm directory for each channel and mapped every group's
 * file again: 600 channels with a group took about 200 ms a scan.)
 */
#define MANY 600

Test(repair, a_bus_of_many_channels_with_groups_repairs_in_time,
     .fini = teardown)
{
	static char conf[MANY * 64 + 256];
	struct child c = { .name = "c0" };
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint8_t buf[100] = { 0 };
	uint64_t t0, waited;
	size_t o;
	pid_t s;
	int rc;

	o = (size_t)snprintf(conf, sizeof(conf), "max_channels = 1024\n"
			     "[defaults]\nsubscribe = *\npublish = *\n");
	for (int i = 0; i < MANY; i++)
		o += (size_t)snprintf(conf + o, sizeof(conf) - o,
				      "[channel c%d]\ncapacity = 4K\n"
				      "consumer_groups = g\n", i);
	setup_with(conf);
	ch = open_role(&bus, "c0", SHMBUS_ROLE_PUBLISH);
	pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	cr_assert(pub);
	usleep(300000);		/* a few scans: the groups are known */
	child_pipes(&c);
	s = th_spawn(idle_subscriber, &c);
	hear(c.ready[0]);
	/* The group holds the ring too: its own position, one lap on. */
	while ((rc = shmbus_publish(pub, buf, sizeof(buf))) == 0)
		;
	cr_assert_eq(rc, -EAGAIN);
	t0 = th_now_ns();
	kill(s, SIGKILL);
	cr_assert_eq(th_wait(s), 128 + SIGKILL);
	while (!log_has("released subscriber slot"))
		cr_assert(th_now_ns() - t0 < 5000000000ull, "never released");
	waited = th_now_ns() - t0;
	cr_assert(waited <= bound_ns(), "released after %llu ms",
		  (unsigned long long)(waited / 1000000));
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}
