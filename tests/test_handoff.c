/* SPDX-License-Identifier: MIT */
/*
 * test_handoff.c - the multi-producer hand-off with live, stopped and dead
 * producers around it, through a real shmbusd and real kill -9.
 *
 * The hand-off passes from claim to claim in ring order.  A claim whose
 * producer died before handing over is handed over by whoever waits
 * behind it, but only once every earlier claim has been handed over: a
 * live producer's claim is never passed, however long it is stopped.
 *
 * dead_claim_behind_a_stopped_one builds the interleaving that once
 * stopped a ring for ever, step by step: a live claim L1 stopped (SIGSTOP)
 * before its hand-off, a claim D2 after it whose producer is killed, a
 * claim L3 after that, and the daemon free to repair; then L1 continues.
 * kill_loop kills producers at random moments, many of them inside their
 * claims, and checks after every kill that the ring moves again and at
 * the end that every committed message arrived once, whole, in order.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon_fixture.h"
#include "shmbus/layout.h"
#include "../lib/repair.h"

static const char *const conf_mp =
	"[defaults]\nsubscribe = *\n"
	"[channel ch]\ncapacity = 64K\nmax_msg = 1K\npolicy = block\n"
	"producers = multi\n";

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void st(uint64_t *p, uint64_t v)
{
	__atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Waits (up to 2 s) until the channel's head passes `pos`. */
static void await_head_past(struct shmbus_prod_line *pl, uint64_t pos)
{
	for (int i = 0; i < 2000; i++) {
		if (ld(&pl->head) > pos)
			return;
		usleep(1000);
	}
	cr_assert_fail("head stayed at %llu", (unsigned long long)pos);
}

/*
 * This process as producer L0: its slot `mine` holds a won claim of 64
 * bytes at head that it has not handed over, as a producer preempted right
 * after its CAS on head leaves it.  Returns the claim's start.
 */
static uint64_t hold_claim(struct shmbus_prod_line *pl,
			   struct shmbus_prod_slot *mine)
{
	uint64_t start = ld(&pl->head);

	st(&mine->claim_end, start + 64);
	st(&mine->claim_pos, start);
	st(&pl->head, start + 64);
	return start;
}

/* L0 hands over (the word after its claim zeroed first) and commits its
 * claim as a padding record, as a producer does, then releases it. */
static void hand_over(struct shmbus_hdr *h, struct shmbus_prod_line *pl,
		      struct shmbus_prod_slot *mine,
		      uint8_t *data, uint64_t start)
{
	uint64_t mask = h->capacity - 1, tag = (start >> h->cap_log2) + 1;

	st((uint64_t *)(data + ((start + 64) & mask)), 0);
	st(&pl->handoff, start + 64);
	st((uint64_t *)(data + (start & mask)),
	   tag << 32 | (uint64_t)SHMBUS_REC_PAD << SHMBUS_LEN_BITS | 56);
	st(&mine->claim_pos, UINT64_MAX);
}

/* A producer that publishes one self-checking message of 100 bytes as
 * c->id, then exits; it says "ready" before it claims. */
static int one_message(void *arg)
{
	struct child *c = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, c->name, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t buf[100];

	if (!pub)
		return 2;
	th_msg_fill(buf, sizeof(buf), c->id, 0);
	if (write(c->ready[1], "x", 1) != 1)
		return 3;
	if (shmbus_publish(pub, buf, sizeof(buf)))
		return 4;
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* Reads one message within 2 s; returns its producer id, or -1. */
static int read_one(shmbus_sub *sub)
{
	uint8_t buf[2048];
	uint32_t id;
	uint64_t seq;

	for (int i = 0; i < 200; i++) {
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), NULL);

		if (len == -EAGAIN) {
			shmbus_wait(sub, 10000000);
			continue;
		}
		cr_assert_geq(len, 0, "read: %s", shmbus_strerror((int)len));
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0,
			     "torn message");
		return (int)id;
	}
	return -1;
}

Test(handoff, dead_claim_behind_a_stopped_one, .init = NULL,
     .fini = teardown, .timeout = 60)
{
	struct child l1 = { .name = "ch", .id = 1 }, d2 = { .name = "ch",
							    .id = 2 },
		     l3 = { .name = "ch", .id = 3 }, more = { .name = "ch",
							      .n = 3000,
							      .id = 0 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_prod_slot *prods, *mine = NULL;
	struct shmbus_hdr *h;
	struct shmbus_prod_line *pl;
	shmbus_bus *sbus, *pbus;
	shmbus_channel *sch, *pch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint64_t start, next[4] = { 0 };
	uint8_t *ctl, *data;
	size_t ctl_len, data_len;
	pid_t p1, p2, p3, pm;

	setup_with(conf_mp);
	sch = open_role(&sbus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	sub = sch ? shmbus_sub_open(sch, &sa) : NULL;
	cr_assert(sub);
	ctl = th_map_channel(d.dir, &ctl_len);
	data = th_map_data(d.dir, &data_len);
	cr_assert(ctl && data);
	h = (struct shmbus_hdr *)ctl;
	pl = th_map_pline(d.dir, "ch");
	cr_assert(pl);
	prods = (struct shmbus_prod_slot *)(data + h->capacity +
					    SHMBUS_PRODS_OFFSET);

	/*
	 * L0, this process: a producer slot of a live process holding a won
	 * claim [start, start + 64) that it has not handed over yet, as a
	 * producer preempted right after its CAS on head leaves it.
	 */
	pch = open_role(&pbus, "ch", SHMBUS_ROLE_PUBLISH);
	pub = pch ? shmbus_pub_open(pch, NULL) : NULL;
	cr_assert(pub);
	for (unsigned i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		if ((uint32_t)(ld(&prods[i].owner) >> 32) == (uint32_t)getpid())
			mine = &prods[i];
	cr_assert(mine);
	cr_assert_eq(ld(&pl->handoff), ld(&pl->head));
	start = hold_claim(pl, mine);

	/* L1 claims behind L0 and waits for its hand-off: stop it there. */
	child_pipes(&l1);
	p1 = th_spawn(one_message, &l1);
	hear(l1.ready[0]);
	await_head_past(pl, start + 64);
	kill(p1, SIGSTOP);
	/* D2 claims behind L1 and dies waiting for the hand-off. */
	child_pipes(&d2);
	p2 = th_spawn(one_message, &d2);
	hear(d2.ready[0]);
	await_head_past(pl, start + 64 + 120);
	kill(p2, SIGKILL);
	cr_assert_eq(th_wait(p2), 128 + SIGKILL);
	/* L3 claims behind the dead D2, and the daemon is free to repair
	 * D2 (it scans every 10 ms here). */
	child_pipes(&l3);
	p3 = th_spawn(one_message, &l3);
	hear(l3.ready[0]);
	await_head_past(pl, start + 64 + 2 * 120);
	usleep(200000);

	/* L0 hands over and commits a padding record, as a producer would;
	 * then L1 continues. */
	hand_over(h, pl, mine, data, start);
	kill(p1, SIGCONT);
	cr_assert_eq(th_wait(p1), 0);
	cr_assert_eq(th_wait(p3), 0);

	/* L1's message, then L3's: D2's claim is padding. */
	cr_assert_eq(read_one(sub), 1, "L1's message");
	cr_assert_eq(read_one(sub), 3, "L3's message (the ring stopped)");

	/* And the ring moves on, for several laps. */
	child_pipes(&more);
	pm = th_spawn(publisher, &more);
	hear(more.ready[0]);
	read_in_order(sub, more.n, next);
	cr_assert_eq(th_wait(pm), 0);

	munmap(ctl, ctl_len);
	munmap(data, data_len);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	shmbus_sub_close(sub);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
}

/* ------------------------------------------------------------ kill loop */

#define KL_PRODUCERS	3
#define KL_MAX_IDS	20000

/* Shared by the test, its subscriber and its producers (MAP_SHARED). */
struct kill_loop {
	uint64_t committed[KL_MAX_IDS];	/* per producer: messages whose
					 * commit returned */
	uint64_t next[KL_MAX_IDS];	/* per producer: next seq expected */
	uint64_t received;
	uint32_t bad;			/* the subscriber's first finding */
	uint64_t bad_id, bad_seq, bad_want;
};

static struct kill_loop *kl;

static uint32_t rnd(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/* Publishes for ever as producer `id`, dawdling inside its claims so
 * that kills and stops land there. */
static int kl_producer(void *arg)
{
	uint32_t id = (uint32_t)(uintptr_t)arg, r = id * 2654435761u + 1;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_pub *pub = NULL;
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "ch", SHMBUS_ROLE_PUBLISH);

	if (!ch) {
		fprintf(stderr, "producer %u: open: %s\n", id, strerror(errno));
		return 6;
	}
	/* Slots of killed producers are released by the daemon's repair. */
	for (int i = 0; !pub && i < 2000; i++)
		if (!(pub = shmbus_pub_open(ch, &pa)))
			usleep(1000);
	if (!pub) {
		fprintf(stderr, "producer %u: pub_open: %s\n", id,
			strerror(errno));
		return 2;
	}
	for (uint64_t s = 0;; s++) {
		size_t len = TH_MSG_MIN + rnd(&r) % 200;
		uint32_t dawdle = rnd(&r) % 2048;
		void *buf;

		if (shmbus_claim(pub, len, &buf))
			return 4;
		th_msg_fill(buf, len, id, s);
		for (volatile uint32_t i = 0; i < dawdle; i++)
			;
		if (dawdle % 16 == 0)
			sched_yield();
		if (shmbus_commit(pub))
			return 5;
		__atomic_store_n(&kl->committed[id], s + 1, __ATOMIC_RELEASE);
	}
}

static void kl_bad(uint32_t what, uint64_t id, uint64_t seq, uint64_t want)
{
	if (kl->bad)
		return;
	kl->bad_id = id;
	kl->bad_seq = seq;
	kl->bad_want = want;
	__atomic_store_n(&kl->bad, what, __ATOMIC_RELEASE);
}

/* Reads for ever: every message whole, and per producer the next one. */
static int kl_subscriber(void *arg)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_bus *bus;
	shmbus_channel *ch = open_role(&bus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	uint8_t buf[2048];

	if (!sub)
		return 2;
	say(((int *)arg)[1]);
	for (;;) {
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t seq;

		if (len == -EAGAIN)
			continue;
		if (len < 0) {
			kl_bad(1, 0, 0, (uint64_t)-len);
			continue;
		}
		if (th_msg_check(buf, (size_t)len, &id, &seq) ||
		    id >= KL_MAX_IDS) {
			kl_bad(2, id, seq, 0);	/* torn */
			continue;
		}
		if (seq != kl->next[id])
			kl_bad(3, id, seq, kl->next[id]); /* lost, or twice */
		kl->next[id] = seq + 1;
		__atomic_store_n(&kl->received, kl->received + 1,
				 __ATOMIC_RELEASE);
	}
}

static uint64_t kl_received(void)
{
	return __atomic_load_n(&kl->received, __ATOMIC_ACQUIRE);
}

/*
 * Producers killed at random moments, many inside their claims, some
 * while another producer is stopped inside its own.  After every kill the
 * ring must move again; at the end every message whose commit returned
 * must have arrived, once, whole and in order.
 */
static void run_kill_loop(uint64_t kills, uint64_t daemon_every)
{
	uint64_t kills_done = 0, stops = 0, worst = 0, restarts = 0;
	int64_t end = (int64_t)th_now_ns() + 90 * INT64_C(1000000000);
	pid_t prod[KL_PRODUCERS], subp;
	uint32_t next_id = 0, r = (uint32_t)getpid() | 1;
	int pipefd[2];

	if (kills > KL_MAX_IDS - KL_PRODUCERS)
		kills = KL_MAX_IDS - KL_PRODUCERS;
	kl = mmap(NULL, sizeof(*kl), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(kl != MAP_FAILED);
	setup_with(conf_mp);
	cr_assert(pipe(pipefd) == 0);
	subp = th_spawn(kl_subscriber, pipefd);
	hear(pipefd[0]);
	for (int i = 0; i < KL_PRODUCERS; i++)
		prod[i] = th_spawn(kl_producer, (void *)(uintptr_t)next_id++);

	while (kills_done < kills && (int64_t)th_now_ns() < end) {
		int v = (int)(rnd(&r) % KL_PRODUCERS);
		int other = (v + 1 + (int)(rnd(&r) % (KL_PRODUCERS - 1))) %
			    KL_PRODUCERS;
		bool stop = rnd(&r) % 4 == 0;
		uint64_t r0, t0, waited;
		int rc;

		if (stop) {
			kill(prod[other], SIGSTOP);
			stops++;
		}
		usleep(rnd(&r) % 1500);
		kill(prod[v], SIGKILL);
		rc = th_wait(prod[v]);
		cr_assert_eq(rc, 128 + SIGKILL, "producer failed on its own "
			     "(exit %d)", rc);
		if (stop)
			kill(prod[other], SIGCONT);
		kills_done++;
		if (daemon_every && kills_done % daemon_every == 0) {
			/* The daemon too, sometimes in the middle of a
			 * repair or an adopted hand-off. */
			kill(d.pid, SIGKILL);
			th_wait(d.pid);
			start_daemon();
			restarts++;
		}
		prod[v] = th_spawn(kl_producer, (void *)(uintptr_t)next_id++);
		/* The ring moves again. */
		r0 = kl_received();
		t0 = th_now_ns();
		while (kl_received() == r0) {
			cr_assert(th_now_ns() - t0 < 3000000000ull,
				  "the ring stopped after kill %llu",
				  (unsigned long long)kills_done);
			usleep(100);
		}
		waited = th_now_ns() - t0;
		if (waited > worst)
			worst = waited;
		cr_assert_eq(__atomic_load_n(&kl->bad, __ATOMIC_ACQUIRE), 0,
			     "subscriber: finding %u, producer %llu seq %llu "
			     "(expected %llu)", kl->bad,
			     (unsigned long long)kl->bad_id,
			     (unsigned long long)kl->bad_seq,
			     (unsigned long long)kl->bad_want);
	}
	for (int i = 0; i < KL_PRODUCERS; i++) {
		kill(prod[i], SIGKILL);
		cr_assert_eq(th_wait(prod[i]), 128 + SIGKILL);
	}
	/* Everything committed arrives (at most one more per producer: a
	 * kill between its commit and its count). */
	for (uint32_t id = 0; id < next_id; id++) {
		uint64_t want = __atomic_load_n(&kl->committed[id],
						__ATOMIC_ACQUIRE);
		uint64_t t0 = th_now_ns();

		while (__atomic_load_n(&kl->next[id], __ATOMIC_ACQUIRE) < want) {
			cr_assert(th_now_ns() - t0 < 5000000000ull,
				  "producer %u: %llu of %llu committed arrived",
				  id, (unsigned long long)kl->next[id],
				  (unsigned long long)want);
			usleep(1000);
		}
		cr_assert_leq(kl->next[id], want + 1, "producer %u", id);
	}
	cr_assert_eq(kl->bad, 0, "subscriber: finding %u, producer %llu seq "
		     "%llu (expected %llu)", kl->bad,
		     (unsigned long long)kl->bad_id,
		     (unsigned long long)kl->bad_seq,
		     (unsigned long long)kl->bad_want);
	kill(subp, SIGKILL);
	th_wait(subp);
	cr_log_info("kill loop: %llu kills, %llu with another producer "
		    "stopped, %llu daemon restarts, %llu messages; slowest "
		    "return to motion %llu us", (unsigned long long)kills_done,
		    (unsigned long long)stops, (unsigned long long)restarts,
		    (unsigned long long)kl_received(),
		    (unsigned long long)(worst / 1000));
	munmap(kl, sizeof(*kl));
}

Test(handoff, kill_loop, .fini = teardown, .timeout = 300)
{
	run_kill_loop(th_env_count("SHMBUS_KILLS", 2000), 0);
}

/* The same, with shmbusd killed and restarted every 20 kills. */
Test(handoff, kill_loop_with_daemon_restarts, .fini = teardown,
     .timeout = 300)
{
	run_kill_loop(th_env_count("SHMBUS_KILLS", 2000) / 4, 20);
}

/* ------------------------------------------------------------- watchdog */

static uint64_t stuck_count(shmbus_channel *ch)
{
	struct shmbus_channel_info in;

	cr_assert_eq(shmbus_channel_info(ch, &in), 0);
	return in.stuck;
}

/*
 * The daemon's watchdog: a producer stopped inside its claim is live, and
 * its subscribers' wait is not reported; a position below head that no
 * slot announces (a ring damaged by hand here) is, once, with the slots'
 * state, and counted for busstat.
 */
Test(handoff, watchdog_reports_what_nothing_covers, .fini = teardown,
     .timeout = 60)
{
	struct child a = { .name = "ch", .n = 10, .id = 1 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	uint64_t next[4] = { 0 }, head;
	struct shmbus_hdr *h;
	struct shmbus_prod_line *pl;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint8_t buf[2048], *ctl;
	size_t ctl_len;
	pid_t pa;

	setup_with(conf_mp);
	ch = open_role(&bus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	cr_assert(sub);
	ctl = th_map_channel(d.dir, &ctl_len);
	cr_assert(ctl);
	h = (struct shmbus_hdr *)ctl;
	pl = th_map_pline(d.dir, "ch");
	cr_assert(pl);

	/* A stopped producer holds its claim: waiting on it is not stuck. */
	child_pipes(&a);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	kill(pa, SIGSTOP);
	read_in_order(sub, a.n, next);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);
	usleep(400000);
	cr_assert_eq(stuck_count(ch), 0, "a live claim reported as stuck");
	cr_assert(!log_has("stuck:"));
	kill(pa, SIGKILL);
	cr_assert_eq(th_wait(pa), 128 + SIGKILL);
	for (int i = 0; i < 200 && ld(&h->repairs) == 0; i++)
		usleep(10000);
	cr_assert_eq(ld(&h->repairs), 1, "the dead claim was not padded");
	/* Past the padding: the subscriber waits at head. */
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);

	/* Head moved on with no claim behind it. */
	head = ld(&pl->head);
	st(&pl->head, head + 64);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);
	for (int i = 0; i < 100 && stuck_count(ch) == 0; i++)
		usleep(10000);
	cr_assert_eq(stuck_count(ch), 1, "%llu reports",
		     (unsigned long long)stuck_count(ch));
	cr_assert(log_has("stuck: subscribers have waited"));
	usleep(200000);
	cr_assert_eq(stuck_count(ch), 1, "reported once per position");

	munmap(ctl, ctl_len);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* ------------------------------------------------------------- sleepers */

struct killer {
	pid_t victim;
	unsigned delay_us;
};

static int kill_later(void *arg)
{
	struct killer *k = arg;

	usleep(k->delay_us);
	return kill(k->victim, SIGKILL) ? 2 : 0;
}

/*
 * A subscriber asleep on the futex at a dead producer's claim, with a
 * message committed behind it: the commit woke it in vain, and nothing
 * will be committed again.  The repair's padding wakes it.
 */
Test(handoff, a_sleeper_wakes_when_a_dead_claim_is_padded, .fini = teardown,
     .timeout = 60)
{
	struct child a = { .name = "ch", .n = 0, .id = 1 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST,
				      .wait = SHMBUS_WAIT_SLEEP };
	struct killer k = { .delay_us = 200000 };
	shmbus_bus *bus, *pbus;
	shmbus_channel *ch, *pch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint8_t msg[64], buf[256];
	uint64_t t0, waited;
	uint32_t id;
	uint64_t seq;
	pid_t pa, pk;
	int rc;

	setup_with(conf_mp);
	ch = open_role(&bus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	pch = open_role(&pbus, "ch", SHMBUS_ROLE_PUBLISH);
	pub = pch ? shmbus_pub_open(pch, NULL) : NULL;
	cr_assert(sub && pub);
	child_pipes(&a);
	pa = th_spawn(stuck_producer, &a);
	hear(a.ready[0]);
	th_msg_fill(msg, sizeof(msg), 2, 0);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);

	k.victim = pa;
	pk = th_spawn(kill_later, &k);
	t0 = th_now_ns();
	do
		rc = shmbus_wait(sub, 3000000000);
	while (rc == 0 && shmbus_read(sub, buf, sizeof(buf), NULL) == -EAGAIN &&
	       th_now_ns() - t0 < 3000000000ull);
	waited = th_now_ns() - t0;
	cr_assert_eq(rc, 0, "shmbus_wait: %s", shmbus_strerror(rc));
	cr_assert_lt(waited, 1500000000ull, "woke after %llu ms",
		     (unsigned long long)(waited / 1000000));
	cr_assert_eq(th_msg_check(buf, sizeof(msg), &id, &seq), 0);
	cr_assert_eq(id, 2);
	cr_log_info("asleep at the dead claim: woke %llu ms after the wait "
		    "began, the kill at 200 ms", (unsigned long long)(waited /
							     1000000));
	cr_assert_eq(th_wait(pk), 0);
	cr_assert_eq(th_wait(pa), 128 + SIGKILL);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* ------------------------------------------- the help, step by step */

struct direct_child {
	const char *dir;
	uint32_t id;
	bool hold;		/* claim and hold, instead of publishing */
	int ready[2];
};

/* Direct mode: a multi producer that says "ready" and then publishes one
 * 100-byte message, or (hold) claims one and holds it. */
static int direct_producer(void *arg)
{
	struct direct_child *c = arg;
	shmbus_channel *ch = shmbus_channel_open(c->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t buf[100];
	void *slot;

	if (!pub)
		return 2;
	th_msg_fill(buf, sizeof(buf), c->id, 0);
	if (c->hold) {
		if (shmbus_claim(pub, sizeof(buf), &slot))
			return 3;
		if (write(c->ready[1], "x", 1) != 1)
			return 4;
		for (;;)
			pause();
	}
	if (write(c->ready[1], "x", 1) != 1)
		return 4;
	return shmbus_publish(pub, buf, sizeof(buf)) ? 5 : 0;
}

static pid_t spawn_direct(struct direct_child *c)
{
	char x;
	pid_t pid;

	cr_assert(pipe(c->ready) == 0);
	pid = th_spawn(direct_producer, c);
	cr_assert_eq(read(c->ready[0], &x, 1), 1, "producer failed");
	return pid;
}

static struct shmbus_prod_slot *slot_of(struct shmbus_prod_slot *prods,
					pid_t pid)
{
	for (unsigned i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		if ((uint32_t)(ld(&prods[i].owner) >> 32) == (uint32_t)pid)
			return &prods[i];
	return NULL;
}

/*
 * A helper that read the hand-off at x before the claim at x handed over
 * and whose producer then died writing: the help finds the hand-off
 * moved, and leaves the slot to the repair of a handed-over claim, which
 * pads it.  (Freeing it instead left the claim unpadded for good.)
 */
Test(handoff, a_late_help_leaves_a_handed_over_claim_to_the_repair,
     .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 16, 1024, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct direct_child w = { .dir = dir, .id = 1, .hold = true };
	struct shmbus_prod_slot *prods, *ws;
	struct shmbus_hdr *h;
	struct shmbus_prod_line *pl;
	uint8_t *ctl, *data, msg[100], buf[256];
	size_t ctl_len, data_len;
	uint32_t id;
	uint64_t seq, x, o;
	pid_t pw;

	cr_assert(sub && pub);
	ctl = th_map_channel(dir, &ctl_len);
	data = th_map_data(dir, &data_len);
	cr_assert(ctl && data);
	h = (struct shmbus_hdr *)ctl;
	pl = th_map_pline(dir, "ch");
	cr_assert(pl);
	prods = (struct shmbus_prod_slot *)(data + h->capacity +
					    SHMBUS_PRODS_OFFSET);
	x = ld(&pl->head);
	pw = spawn_direct(&w);
	ws = slot_of(prods, pw);
	cr_assert(ws);
	cr_assert_gt(ld(&pl->handoff), x, "W handed over");
	kill(pw, SIGKILL);
	cr_assert_eq(th_wait(pw), 128 + SIGKILL);

	o = ld(&ws->owner);
	cr_assert_eq(sb_handoff_help(ch, x, (uint32_t)getpid(),
				     sb_owner_gone_as), SB_HELP_LIVE);
	cr_assert_eq(ld(&ws->owner), o, "the slot is the repair's");
	cr_assert_eq(sb_repair_prod(ch, (uint32_t)(ws - prods), o,
				    (uint32_t)getpid()), 1);
	th_msg_fill(msg, sizeof(msg), 2, 0);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 100,
		     "the dead claim was not padded");
	cr_assert_eq(th_msg_check(buf, 100, &id, &seq), 0);
	cr_assert_eq(id, 2);
	munmap(ctl, ctl_len);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * The word after a dead claim holds stale bytes that carry this lap's tag
 * (payload of an earlier lap can, by chance or on purpose): the help
 * zeroes it all the same, so no reader takes it for a record.
 */
Test(handoff, the_help_zeroes_a_stale_word_that_looks_committed,
     .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 16, 1024, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_sub *sub = shmbus_sub_open(ch, &sa);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct direct_child w = { .dir = dir, .id = 1 };
	struct shmbus_prod_slot *prods, *mine;
	struct shmbus_hdr *h;
	struct shmbus_prod_line *pl;
	uint8_t *ctl, *data, msg[100], buf[256];
	size_t ctl_len, data_len;
	uint64_t start, end, mask, tag, seq;
	uint32_t id;
	pid_t pw;

	cr_assert(sub && pub);
	ctl = th_map_channel(dir, &ctl_len);
	data = th_map_data(dir, &data_len);
	cr_assert(ctl && data);
	h = (struct shmbus_hdr *)ctl;
	pl = th_map_pline(dir, "ch");
	cr_assert(pl);
	prods = (struct shmbus_prod_slot *)(data + h->capacity +
					    SHMBUS_PRODS_OFFSET);
	mask = h->capacity - 1;
	mine = slot_of(prods, getpid());
	cr_assert(mine);
	/* This process holds a won claim [start, start + 64), not handed
	 * over; W claims behind it, waits, and dies. */
	start = hold_claim(pl, mine);
	pw = spawn_direct(&w);
	await_head_past(pl, start + 64);
	kill(pw, SIGKILL);
	cr_assert_eq(th_wait(pw), 128 + SIGKILL);
	end = ld(&pl->head);
	/* Stale bytes at W's end that look like a 40-byte message. */
	tag = (start >> h->cap_log2) + 1;
	st((uint64_t *)(data + ((end + 8) & mask)), 777);
	st((uint64_t *)(data + (end & mask)), tag << 32 | 40);
	hand_over(h, pl, mine, data, start);

	cr_assert_eq(sb_handoff_help(ch, start + 64, (uint32_t)getpid(),
				     sb_owner_gone_as), SB_HELP_DONE);
	cr_assert_eq(ld(&pl->handoff), end);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN,
		     "a stale word was delivered as a message");
	th_msg_fill(msg, sizeof(msg), 2, 0);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 100);
	cr_assert_eq(th_msg_check(buf, 100, &id, &seq), 0);
	cr_assert_eq(id, 2);
	munmap(ctl, ctl_len);
	munmap(data, data_len);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

/*
 * A producer that dies waiting for the hand-off with nobody behind it:
 * shmbusd hands its claim over and pads it (within two scans of the
 * hand-off reaching it), so the next producer and the subscribers go on.
 */
Test(handoff, the_daemon_hands_over_when_no_producer_waits, .fini = teardown,
     .timeout = 60)
{
	struct child d2 = { .name = "ch", .id = 2 };
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_prod_slot *prods, *mine;
	struct shmbus_hdr *h;
	struct shmbus_prod_line *pl;
	shmbus_bus *sbus, *pbus;
	shmbus_channel *sch, *pch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint8_t *ctl, *data, buf[256], msg[100];
	size_t ctl_len, data_len;
	uint64_t start, t0;
	pid_t p2;

	setup_with(conf_mp);
	sch = open_role(&sbus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	sub = sch ? shmbus_sub_open(sch, &sa) : NULL;
	pch = open_role(&pbus, "ch", SHMBUS_ROLE_PUBLISH);
	pub = pch ? shmbus_pub_open(pch, NULL) : NULL;
	cr_assert(sub && pub);
	ctl = th_map_channel(d.dir, &ctl_len);
	data = th_map_data(d.dir, &data_len);
	cr_assert(ctl && data);
	h = (struct shmbus_hdr *)ctl;
	pl = th_map_pline(d.dir, "ch");
	cr_assert(pl);
	prods = (struct shmbus_prod_slot *)(data + h->capacity +
					    SHMBUS_PRODS_OFFSET);
	mine = slot_of(prods, getpid());
	cr_assert(mine);
	start = hold_claim(pl, mine);
	child_pipes(&d2);
	p2 = th_spawn(one_message, &d2);
	hear(d2.ready[0]);
	await_head_past(pl, start + 64);
	kill(p2, SIGKILL);
	cr_assert_eq(th_wait(p2), 128 + SIGKILL);
	/* Our hand-off and padding; nobody waits behind D2. */
	hand_over(h, pl, mine, data, start);
	t0 = th_now_ns();
	while (ld(&pl->handoff) == start + 64) {
		cr_assert(th_now_ns() - t0 < 2000000000ull,
			  "nobody handed the dead claim over");
		usleep(1000);
	}
	cr_log_info("shmbusd handed over %llu ms after the hand-off reached "
		    "the dead claim", (unsigned long long)((th_now_ns() - t0) /
							  1000000));
	cr_assert_eq(ld(&h->repairs), 1);
	th_msg_fill(msg, sizeof(msg), 3, 0);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(read_one(sub), 3);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), -EAGAIN);
	cr_assert(log_has("handed over and padded the claim"));
	munmap(ctl, ctl_len);
	munmap(data, data_len);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	shmbus_sub_close(sub);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
}

/* Reads messages until none comes within 0.5 s: the count, every one whole
 * and in order (producer id `id`, sequence numbers from `first`). */
static unsigned read_all(shmbus_sub *sub, uint32_t id, uint64_t first)
{
	uint8_t buf[2048];
	unsigned n = 0;

	for (int idle = 0; idle < 50;) {
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), NULL);
		uint32_t got;
		uint64_t seq;

		if (len == -EAGAIN) {
			shmbus_wait(sub, 10000000);
			idle++;
			continue;
		}
		cr_assert_geq(len, 0, "read: %s", shmbus_strerror((int)len));
		cr_assert_eq(th_msg_check(buf, (size_t)len, &got, &seq), 0,
			     "torn message");
		cr_assert_eq(got, id);
		cr_assert_eq(seq, first + n, "message %llu after %u",
			     (unsigned long long)seq, n);
		n++;
		idle = 0;
	}
	return n;
}

/*
 * Every process that maps a channel can write its hand-off word.  Written
 * back to a position where no claim is, it once made every later claim
 * wait 20 ms before going on without handing over, for good (about 50
 * publishes a second).  The first producer to wait behind it moves it on
 * to the claim whose turn it is, and every claim after that is quick.
 */
Test(handoff, a_hand_off_word_written_back_heals_for_every_later_claim,
     .fini = teardown, .timeout = 60)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	struct shmbus_prod_line *pl;
	shmbus_bus *sbus, *pbus;
	shmbus_channel *sch, *pch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint8_t msg[100];
	uint64_t t0, ms;

	setup_with(conf_mp);
	sch = open_role(&sbus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	sub = sch ? shmbus_sub_open(sch, &sa) : NULL;
	pch = open_role(&pbus, "ch", SHMBUS_ROLE_PUBLISH);
	pub = pch ? shmbus_pub_open(pch, NULL) : NULL;
	cr_assert(sub && pub);
	pl = th_map_pline(d.dir, "ch");
	cr_assert(pl);
	for (uint64_t i = 0; i < 10; i++) {
		th_msg_fill(msg, sizeof(msg), 7, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(read_all(sub, 7, 0), 10);
	st(&pl->handoff, 8);
	t0 = th_now_ns();
	for (uint64_t i = 10; i < 210; i++) {
		th_msg_fill(msg, sizeof(msg), 7, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	ms = (th_now_ns() - t0) / 1000000;
	cr_log_info("200 publishes after the word was written back: %llu ms",
		    (unsigned long long)ms);
	/* 20 ms a claim would be 4 s; one wait, then none. */
	cr_assert_lt(ms, 1000, "200 publishes took %llu ms",
		     (unsigned long long)ms);
	cr_assert_eq(ld(&pl->handoff), ld(&pl->head));
	cr_assert_eq(read_all(sub, 7, 10), 200);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	shmbus_sub_close(sub);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
}

/*
 * The same word written over on a ring nobody publishes to: shmbusd puts
 * it back at head, behind head (where a subscriber opened at the newest
 * message waits for it to pass its position) as past it.
 */
Test(handoff, the_daemon_mends_a_hand_off_word_written_over_on_a_quiet_ring,
     .fini = teardown, .timeout = 60)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_NEWEST };
	uint64_t bad[2] = { 8, 0 }, head, t0;
	struct shmbus_prod_line *pl;
	shmbus_bus *sbus, *pbus;
	shmbus_channel *sch, *pch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint8_t msg[100];

	setup_with(conf_mp);
	pch = open_role(&pbus, "ch", SHMBUS_ROLE_PUBLISH);
	pub = pch ? shmbus_pub_open(pch, NULL) : NULL;
	cr_assert(pub);
	pl = th_map_pline(d.dir, "ch");
	cr_assert(pl);
	for (uint64_t i = 0; i < 10; i++) {
		th_msg_fill(msg, sizeof(msg), 7, i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	head = ld(&pl->head);
	bad[1] = head + 4096;
	for (int k = 0; k < 2; k++) {
		st(&pl->handoff, bad[k]);
		t0 = th_now_ns();
		while (ld(&pl->handoff) != head) {
			cr_assert(th_now_ns() - t0 < 2000000000ull,
				  "the hand-off word stayed at %llu",
				  (unsigned long long)ld(&pl->handoff));
			usleep(1000);
		}
		cr_log_info("mended from %llu in %llu ms",
			    (unsigned long long)bad[k],
			    (unsigned long long)((th_now_ns() - t0) / 1000000));
	}
	cr_assert(log_has("the hand-off word stood at 8"));
	/* A subscriber at the newest message gets the next one. */
	st(&pl->handoff, 8);
	sch = open_role(&sbus, "ch", SHMBUS_ROLE_SUBSCRIBE);
	sub = sch ? shmbus_sub_open(sch, &sa) : NULL;
	cr_assert(sub);
	usleep(200000);
	th_msg_fill(msg, sizeof(msg), 7, 10);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(read_all(sub, 7, 10), 1);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	shmbus_sub_close(sub);
	shmbus_channel_close(sch);
	shmbus_disconnect(sbus);
}

/*
 * The reaper's help looks at the hand-off word while head is still there
 * (nothing claimed: "nobody"), then a producer claims at it before the
 * skip reads head.  The skip must see that claim's announcement and leave
 * the word alone: moved on, it would pass a live claim that has not
 * handed over (which once stopped a ring in a kill loop).
 */
Test(handoff, the_skip_leaves_a_word_that_a_new_claim_announces,
     .timeout = 30)
{
	const char *dir = th_mkdir();
	shmbus_channel *ch = th_create(dir, 1u << 16, 1024, SHMBUS_BLOCK,
				       SHMBUS_MULTI_PRODUCER);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct shmbus_prod_slot *prods, *mine;
	struct shmbus_hdr *h;
	struct shmbus_prod_line *pl;
	uint8_t *ctl, *data;
	size_t ctl_len, data_len;
	uint64_t x;

	cr_assert(pub);
	ctl = th_map_channel(dir, &ctl_len);
	data = th_map_data(dir, &data_len);
	cr_assert(ctl && data);
	h = (struct shmbus_hdr *)ctl;
	pl = th_map_pline(dir, "ch");
	cr_assert(pl);
	prods = (struct shmbus_prod_slot *)(data + h->capacity +
					    SHMBUS_PRODS_OFFSET);
	mine = slot_of(prods, getpid());
	cr_assert(mine);
	x = ld(&pl->head);
	cr_assert_eq(ld(&pl->handoff), x);
	cr_assert_eq(sb_handoff_help(ch, x, (uint32_t)getpid(),
				     sb_owner_gone_as),
		     SB_HELP_NOBODY, "nothing claimed at head");
	cr_assert_eq(hold_claim(pl, mine), x);	/* the claim comes now */
	cr_assert_not(sb_handoff_skip(ch, x));
	cr_assert_eq(ld(&pl->handoff), x, "the word passed a live claim");
	hand_over(h, pl, mine, data, x);
	cr_assert_eq(ld(&pl->handoff), ld(&pl->head));
	munmap(ctl, ctl_len);
	munmap(data, data_len);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	th_rmdir(dir);
}
