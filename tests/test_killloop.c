/* SPDX-License-Identifier: MIT */
/*
 * test_killloop.c - processes killed with kill -9 and what comes after
 * them: a new process given the pid of a dead one, with no shmbusd
 * (direct mode: processes repair each other).
 *
 * A slot or a role names its owner by pid.  A process that is given the
 * pid of a dead owner (pid_max wraps; 32768 by default) and then uses the
 * same channel must not take the dead owner's leftovers for its own:
 * judged by the pid alone they look alive to it for as long as it lives,
 * and it waits on itself.  The new process is made with the dead one's
 * pid through /proc/sys/kernel/ns_last_pid where this test may write it
 * (root); elsewhere it writes its pid over the dead one's in the slot,
 * which leaves the channel as the reuse does.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/contract.h"
#include "../lib/pub.h"
#include "../lib/repair.h"

/* What the parent and its children share. */
struct kl_shared {
	char dir[64];
	pid_t dead;		/* the pid the successor must take over */
	int reused;		/* 1: the successor has that pid itself */
	int ready;
	int go;
	pid_t late;		/* a grandchild's pid, -1: not had */
	uint64_t word;		/* an owner word for a child to judge */
	int verdict;		/* its verdict: 1 gone, 0 alive */
};

static struct kl_shared *sh;

static void sh_map(void)
{
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(sh != MAP_FAILED);
	snprintf(sh->dir, sizeof(sh->dir), "%s", th_mkdir());
}

static void sh_unmap(void)
{
	th_rmdir(sh->dir);
	munmap(sh, sizeof(*sh));
}

/* The successor: with the dead process's pid if the kernel gives it,
 * else an ordinary child that writes its pid where the dead one's is. */
static pid_t spawn_successor(int (*fn)(void *))
{
	pid_t p = th_spawn_as(sh->dead, fn, NULL);

	sh->reused = p > 0;
	if (p < 0)
		p = th_spawn(fn, NULL);
	cr_log_info("successor %d: %s", (int)p,
		    sh->reused ? "the dead process's pid" : "its pid written "
		    "over the dead process's");
	return p;
}

/* The control file's header, mapped by a child that plays pid reuse. */
static struct shmbus_hdr *map_hdr(void)
{
	size_t len;
	uint8_t *m = th_map_channel(sh->dir, &len);

	return m ? (struct shmbus_hdr *)m : NULL;
}

/* The producer slots (in the data file), mapped by a child that plays pid
 * reuse. */
static struct shmbus_prod_slot *map_prods(void)
{
	struct shmbus_hdr *h = map_hdr();
	size_t len;
	uint8_t *d = th_map_data(sh->dir, &len);

	return h && d ? (struct shmbus_prod_slot *)(d + h->capacity +
						    SHMBUS_PRODS_OFFSET)
		      : NULL;
}

/* The producers' line (in the data file), mapped the same way. */
static struct shmbus_prod_line *map_pline(void)
{
	struct shmbus_prod_slot *prods = map_prods();

	return prods ? (struct shmbus_prod_line *)((uint8_t *)prods -
						   SHMBUS_PRODS_OFFSET +
						   SHMBUS_PLINE_OFFSET)
		     : NULL;
}

/* Where the kernel gave the successor another pid, it writes its pid
 * over the dead process's wherever a word names it (the role, producer
 * and subscriber slots), leaving the channel as a reuse does. */
static int take_dead_pid(void)
{
	struct shmbus_hdr *h = map_hdr();
	struct shmbus_prod_line *pl;
	struct shmbus_prod_slot *prods;
	struct shmbus_sub_slot *subs;
	uint32_t dead = (uint32_t)sh->dead, me = (uint32_t)getpid();
	uint64_t sp;
	int n = 0;

	if (!h)
		return -1;
	if (sh->reused)
		return 1;
	prods = map_prods();
	pl = map_pline();
	if (!prods || !pl)
		return -1;
	subs = (struct shmbus_sub_slot *)((uint8_t *)h + h->slots_offset);
	/* The role word keeps the dead holder's tag, as a reuse leaves it. */
	sp = __atomic_load_n(&pl->sp_owner, __ATOMIC_ACQUIRE);
	if ((uint32_t)sp == dead)
		n += __atomic_compare_exchange_n(&pl->sp_owner, &sp,
			(sp & ~(uint64_t)UINT32_MAX) | me, false,
			__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	for (unsigned i = 0; i < SHMBUS_MAX_PRODUCERS + SHMBUS_MAX_SLOTS; i++) {
		uint64_t *w = i < SHMBUS_MAX_PRODUCERS ?
			&prods[i].owner : &subs[i - SHMBUS_MAX_PRODUCERS].owner;
		uint64_t o = __atomic_load_n(w, __ATOMIC_ACQUIRE);

		if (o >> 32 == dead)
			n += __atomic_compare_exchange_n(w, &o,
				(uint64_t)me << 32 | (uint32_t)o, false,
				__ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	}
	return n;
}

static void say_ready(void)
{
	__atomic_store_n(&sh->ready, 1, __ATOMIC_RELEASE);
}

static void await_ready(void)
{
	for (int i = 0; !__atomic_load_n(&sh->ready, __ATOMIC_ACQUIRE); i++) {
		cr_assert_lt(i, 5000, "the child did not get ready");
		usleep(1000);
	}
	sh->ready = 0;
}

/* Publishes messages 0..2 as producer 1, claims message 3, says so and
 * waits to be killed inside the claim. */
static int die_in_claim(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[64];
	void *buf;

	(void)arg;
	if (!pub)
		return 2;
	for (uint64_t s = 0; s < 3; s++) {
		th_msg_fill(msg, sizeof(msg), 1, s);
		if (shmbus_publish(pub, msg, sizeof(msg)))
			return 3;
	}
	if (shmbus_claim(pub, sizeof(msg), &buf))
		return 4;
	th_msg_fill(buf, sizeof(msg), 1, 3);
	say_ready();
	for (;;)
		pause();
}

/* Reads `n` messages within 2 s each, checking each whole; stores their
 * producer ids and sequence numbers. */
static void read_n(shmbus_sub *sub, int n, uint32_t *ids, uint64_t *seqs)
{
	uint8_t buf[1024];

	for (int i = 0; i < n; i++) {
		uint64_t t0 = th_now_ns();
		ssize_t len;

		while ((len = shmbus_read(sub, buf, sizeof(buf), NULL)) ==
		       -EAGAIN) {
			cr_assert_lt(th_now_ns() - t0, 2000000000ull,
				     "message %d of %d did not come", i + 1, n);
			shmbus_wait(sub, 10000000);
		}
		cr_assert_geq(len, 0, "read: %s", shmbus_strerror((int)len));
		cr_assert_eq(th_msg_check(buf, (size_t)len, &ids[i], &seqs[i]),
			     0, "a torn message");
	}
}

/* ------------------------------------------------ the single producer */

/* The successor of a single producer that died inside its claim: opens
 * a publisher (the role's word names its own pid) and publishes message
 * 0 as producer 2. */
static int sp_successor(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	struct shmbus_hdr *h = map_hdr();
	shmbus_pub *pub;
	uint8_t msg[64];

	(void)arg;
	if (!ch || !h)
		return 2;
	if (take_dead_pid() < 1)
		return 3;
	if ((uint32_t)__atomic_load_n(&ch->pl->sp_owner, __ATOMIC_ACQUIRE) !=
	    (uint32_t)getpid())
		return 4;	/* the state this test is about */
	pub = shmbus_pub_open(ch, &pa);
	if (!pub) {
		fprintf(stderr, "sp_successor: %s\n", strerror(errno));
		return 5;
	}
	th_msg_fill(msg, sizeof(msg), 2, 0);
	if (shmbus_publish(pub, msg, sizeof(msg)))
		return 6;
	/* Still a single producer: a second handle of ours is refused. */
	if (shmbus_pub_open(ch, &pa) || errno != EBUSY)
		return 7;
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	return 0;
}

/*
 * A single producer killed inside its claim; a process given its pid
 * opens a publisher on the channel.  The role's word names that pid, but
 * no handle of the new process holds the role: it takes it over and pads
 * the dead claim, and the subscriber reads on (it was refused with EBUSY
 * for as long as it lived, and the dead claim held every reader).
 */
Test(killloop, a_single_producers_pid_reused_by_its_successor, .timeout = 30)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint32_t ids[4];
	uint64_t seqs[4];
	pid_t p;
	int rc;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	sh->dead = th_spawn(die_in_claim, NULL);
	await_ready();
	kill(sh->dead, SIGKILL);
	cr_assert_eq(th_wait(sh->dead), 128 + SIGKILL);
	p = spawn_successor(sp_successor);
	rc = th_wait(p);
	cr_assert_eq(rc, 0, "the successor failed (exit %d)", rc);
	read_n(sub, 4, ids, seqs);
	for (int i = 0; i < 3; i++)
		cr_assert(ids[i] == 1 && seqs[i] == (uint64_t)i);
	cr_assert(ids[3] == 2 && seqs[3] == 0, "after the dead claim: "
		  "producer %u seq %llu", ids[3], (unsigned long long)seqs[3]);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* ------------------------------------------ multi producer, subscriber */

#define LAPS_MSGS	2000	/* 64-byte messages: two laps of 64 KiB */

/* The successor of a dead multi producer or subscriber: takes its pid
 * (or writes its pid over the dead one's), then publishes LAPS_MSGS
 * messages as producer 2, each within 3 s. */
static int mp_successor(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 3000000000 };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_pub *pub;
	uint8_t msg[64];

	(void)arg;
	if (!ch || take_dead_pid() < 1)
		return 2;
	pub = shmbus_pub_open(ch, &pa);
	if (!pub)
		return 3;
	for (uint64_t s = 0; s < LAPS_MSGS; s++) {
		int rc;

		th_msg_fill(msg, sizeof(msg), 2, s);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc) {
			fprintf(stderr, "successor: message %llu: %s\n",
				(unsigned long long)s, shmbus_strerror(rc));
			return 4;
		}
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	return 0;
}

/* Reads the dead producer's `from_dead` messages (producer 1) and the
 * LAPS_MSGS of the publishing child (producer 2), each whole and in
 * order, while that child runs; returns its exit. */
static int read_behind(shmbus_sub *sub, pid_t successor, int from_dead)
{
	uint32_t id;
	uint64_t seq, next[3] = { 0, 0, 0 }, t0 = th_now_ns();
	uint8_t buf[1024];
	int rc = -1;

	while (next[2] < LAPS_MSGS) {
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), NULL);
		int st;

		if (len == -EAGAIN) {
			if (rc < 0 && waitpid(successor, &st, WNOHANG) ==
				      successor)
				rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
			if (rc > 0 || th_now_ns() - t0 > 10000000000ull)
				break;
			shmbus_wait(sub, 1000000);
			continue;
		}
		cr_assert_geq(len, 0, "read: %s", shmbus_strerror((int)len));
		cr_assert_eq(th_msg_check(buf, (size_t)len, &id, &seq), 0,
			     "a torn message");
		cr_assert(id == 1 || id == 2, "producer %u", id);
		cr_assert_eq(seq, next[id], "producer %u: seq %llu, not %llu",
			     id, (unsigned long long)seq,
			     (unsigned long long)next[id]);
		next[id]++;
	}
	/* A successor that waits on for ever is stopped: it leaves no
	 * process behind the test. */
	for (int i = 0; rc < 0; i++) {
		int st;

		if (waitpid(successor, &st, WNOHANG) == successor)
			rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128;
		else if (i == 5000) {
			kill(successor, SIGKILL);
			rc = th_wait(successor);
		} else
			usleep(1000);
	}
	cr_assert_eq(rc, 0, "the publisher failed (exit %d) after %llu of "
		     "its messages arrived", rc, (unsigned long long)next[2]);
	cr_assert_eq(next[1], (uint64_t)from_dead);
	cr_assert_eq(next[2], LAPS_MSGS);
	return rc;
}

/* Subscribes at the oldest message, says so, and never reads. */
static int idle_subscriber(void *arg)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;

	(void)arg;
	if (!sub)
		return 2;
	say_ready();
	for (;;)
		pause();
}

/* A process that runs `dies` on a multi producer's channel, killed once
 * it says it is ready, and a successor given its pid (or writing its own
 * over it) that publishes two laps, which a subscriber reads behind it
 * whole (read_behind()'s `first`). */
static void mp_successor_of(int (*dies)(void *), uint64_t first)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch;
	shmbus_sub *sub;
	pid_t p;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_MULTI_PRODUCER);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	sh->dead = th_spawn(dies, NULL);
	await_ready();
	kill(sh->dead, SIGKILL);
	cr_assert_eq(th_wait(sh->dead), 128 + SIGKILL);
	p = spawn_successor(mp_successor);
	read_behind(sub, p, first);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* A process that never opens the channel: sleeps until killed. */
static int unrelated(void *arg)
{
	(void)arg;
	while (pause() < 0)	/* it always is */
		;
	return 0;
}

/*
 * A process that never opens the channel, given the dead process's pid
 * (sh->dead) where the kernel gives it; elsewhere an unrelated child whose
 * pid is written over the dead one's in *word, at bit `shift` (32: an
 * owner word; 0: the role word), the rest of the word (its start tag)
 * kept, which the reuse leaves.
 */
static pid_t unrelated_with_dead_pid(uint64_t *word, unsigned shift)
{
	uint64_t o = __atomic_load_n(word, __ATOMIC_ACQUIRE);
	uint64_t mask = (uint64_t)UINT32_MAX << shift;
	pid_t p;

	/* A start tag counts clock ticks (10 ms): a pid is not reused
	 * within one but by this test. */
	usleep(30000);
	p = th_spawn_as(sh->dead, unrelated, NULL);
	sh->reused = p > 0;
	if (p < 0) {
		p = th_spawn(unrelated, NULL);
		__atomic_store_n(word, (o & ~mask) |
				 (uint64_t)(uint32_t)p << shift,
				 __ATOMIC_RELEASE);
	}
	cr_log_info("unrelated process %d: %s", (int)p,
		    sh->reused ? "the dead process's pid" : "its pid written "
		    "over the dead one's");
	return p;
}

/*
 * A subscriber of a block channel killed, and its pid given to a process
 * that has nothing to do with the channel and lives on.  The dead slot's
 * word carries its owner's start tag, which the new process's start does
 * not match: a producer held back by the dead cursor releases it and
 * publishes two laps.  (By the pid alone the cursor was alive for as long
 * as the new process lived: the producer timed out at once.)  Where the
 * kernel does not give the pid, an unrelated child's pid is written over
 * the dead one's with the dead one's tag kept, which the reuse leaves.
 */
Test(killloop, a_subscribers_pid_reused_by_an_unrelated_process,
     .timeout = 60)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 2000000000 };
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint8_t msg[1000];
	uint32_t slot = SHMBUS_MAX_SLOTS;
	uint64_t o = 0;
	pid_t p;
	int rc = 0;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	sh->dead = th_spawn(idle_subscriber, NULL);
	await_ready();
	kill(sh->dead, SIGKILL);
	cr_assert_eq(th_wait(sh->dead), 128 + SIGKILL);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t w = __atomic_load_n(&ch->subs[i].owner,
					     __ATOMIC_ACQUIRE);

		if (owner_pid(w) == (uint32_t)sh->dead) {
			slot = i;
			o = w;
		}
	}
	cr_assert_lt(slot, SHMBUS_MAX_SLOTS);
	cr_assert_neq(owner_tag(o), 0, "the slot's word has no start tag");
	p = unrelated_with_dead_pid(&ch->subs[slot].owner, 32);
	pub = shmbus_pub_open(ch, &pa);
	cr_assert(pub);
	memset(msg, 7, sizeof(msg));
	for (int i = 0; i < 2 * 64 && rc == 0; i++)
		rc = shmbus_publish(pub, msg, sizeof(msg));
	cr_assert_eq(rc, 0, "held back by a dead cursor whose pid lives on "
		     "(%d)", rc);
	cr_assert_eq(owner_state(__atomic_load_n(&ch->subs[slot].owner,
						 __ATOMIC_ACQUIRE)),
		     SHMBUS_SLOT_FREE);
	kill(p, SIGKILL);
	th_wait(p);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* Takes the single producer's role, publishes one message, says so and
 * waits to be killed. */
static int sp_holder(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t v = 1;

	(void)arg;
	if (!pub || shmbus_publish(pub, &v, sizeof(v)))
		return 2;
	say_ready();
	while (pause() < 0)
		;
	return 0;
}

/*
 * A single producer killed holding the role, and its pid given to a
 * process that has nothing to do with the channel and lives on.  The
 * role word carries its holder's start tag: a new producer finds the
 * holder gone, takes the role over and publishes after the dead one's
 * message.  (By the pid alone the role was held by the new process for
 * as long as it lived: every open -EBUSY.)
 */
Test(killloop, a_single_producers_pid_reused_by_an_unrelated_process,
     .timeout = 30)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint64_t w, v = 2, got[2] = { 0 };
	pid_t p;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	sh->dead = th_spawn(sp_holder, NULL);
	await_ready();
	kill(sh->dead, SIGKILL);
	cr_assert_eq(th_wait(sh->dead), 128 + SIGKILL);
	w = __atomic_load_n(&ch->pl->sp_owner, __ATOMIC_ACQUIRE);
	cr_assert_eq(role_pid(w), (uint32_t)sh->dead);
	cr_assert_neq(role_tag(w), 0, "the role word has no start tag");
	p = unrelated_with_dead_pid(&ch->pl->sp_owner, 0);
	errno = 0;
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub, "the role of a producer whose pid lives on in another "
		  "process was not taken over (errno %d)", errno);
	cr_assert_eq(shmbus_publish(pub, &v, sizeof(v)), 0);
	cr_assert_eq(shmbus_read(sub, &got[0], sizeof(got[0]), NULL), 8);
	cr_assert_eq(shmbus_read(sub, &got[1], sizeof(got[1]), NULL), 8);
	cr_assert(got[0] == 1 && got[1] == 2);
	kill(p, SIGKILL);
	th_wait(p);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* A grandchild that subscribes, says who it is and waits to be killed. */
static int late_subscriber(void)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;

	alarm(10);
	if (!sub)
		return 2;
	__atomic_store_n(&sh->late, getpid(), __ATOMIC_RELAXED);
	say_ready();
	for (;;)
		pause();
}

/* The child of a process that read its start tag and died: once told,
 * forks a grandchild with its dead parent's pid (sh->dead), which
 * subscribes; waits for it.  Says -1 where that pid was not had. */
static int fork_as_parent(void)
{
	long last = th_last_pid();
	pid_t p = -1;

	alarm(10);
	while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
		usleep(1000);
	/* A start tag counts clock ticks (10 ms). */
	usleep(30000);
	for (int i = 0; last > 0 && i < 10 && p != sh->dead; i++) {
		if (!th_set_last_pid((long)sh->dead - 1))
			break;
		p = fork();
		if (p == 0)
			_exit(getpid() == sh->dead ? late_subscriber() : 99);
		th_set_last_pid(last > p ? last : p);
		if (p > 0 && p != sh->dead)
			waitpid(p, NULL, 0);
	}
	if (p != sh->dead) {
		__atomic_store_n(&sh->late, -1, __ATOMIC_RELAXED);
		say_ready();
		return 0;
	}
	waitpid(p, NULL, 0);
	return 0;
}

/* Subscribes and closes (its thread reads its start tag), then forks a
 * child that outlives it. */
static int read_tag_then_fork(void *arg)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;
	pid_t c;

	(void)arg;
	if (!sub)
		return 2;
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	c = fork();
	if (c == 0)
		_exit(fork_as_parent());
	return c > 0 ? 0 : 3;
}

/*
 * A process that used the library forks a child and dies; the child
 * forks a grandchild that the kernel gives the dead process's pid, and
 * the grandchild subscribes.  Its slot's word must carry its own start
 * tag, not the one its grandparent read under the same pid (the forking
 * thread's copy, inherited twice): with that one, every judge finds
 * another start under the pid and releases a live subscriber's slot.
 */
Test(killloop, a_grandchild_given_its_grandparents_pid_tags_its_own_start,
     .timeout = 30)
{
	shmbus_channel *ch;
	uint64_t o = 0;
	pid_t p;

	/* The child is orphaned: ours to reap. */
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	p = th_spawn(read_tag_then_fork, NULL);
	cr_assert_eq(th_wait(p), 0);
	sh->dead = p;
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	await_ready();
	if (__atomic_load_n(&sh->late, __ATOMIC_RELAXED) != p) {
		while (wait(NULL) > 0 || errno == EINTR)
			;
		shmbus_channel_close(ch);
		sh_unmap();
		cr_skip_test("needs ns_last_pid to give a grandchild a pid");
	}
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t w = __atomic_load_n(&ch->subs[i].owner,
					     __ATOMIC_ACQUIRE);

		if (owner_state(w) == SHMBUS_SLOT_ACTIVE &&
		    owner_pid(w) == (uint32_t)p)
			o = w;
	}
	cr_log_info("grandchild %d subscribes with tag %u", (int)p,
		    owner_tag(o));
	cr_assert_neq(o, 0, "the grandchild's slot is not found");
	cr_assert_not(sb_owner_gone(o), "a live subscriber's slot is judged "
		      "gone: its tag is not its own start's");
	cr_assert(sb_owner_alive(o));
	kill(p, SIGKILL);
	while (wait(NULL) > 0 || errno == EINTR)
		;
	shmbus_channel_close(ch);
	sh_unmap();
}

/* In a time namespace of its parent's making: subscribes, judges the
 * word in sh->word, says who it is and waits to be killed. */
static int shifted_subscriber(void)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_sub *sub = ch ? shmbus_sub_open(ch, &sa) : NULL;

	alarm(10);
	if (!sub)
		return 2;
	sh->verdict = sb_owner_gone(sh->word);
	__atomic_store_n(&sh->late, getpid(), __ATOMIC_RELAXED);
	say_ready();
	for (;;)
		pause();
}

/* Makes a time namespace whose boottime runs a day ahead and forks a
 * subscriber into it; says -1 where it cannot. */
static int shift_then_fork(void *arg)
{
	static const char off[] = "boottime 86400 0";
	int fd, ok;
	pid_t c;

	(void)arg;
	fd = unshare(CLONE_NEWTIME) == 0 ?
		open("/proc/self/timens_offsets", O_WRONLY) : -1;
	ok = fd >= 0 && write(fd, off, strlen(off)) == (ssize_t)strlen(off);
	if (fd >= 0)
		close(fd);
	c = ok ? fork() : -1;
	if (c == 0)
		_exit(shifted_subscriber());
	if (c < 0) {
		__atomic_store_n(&sh->late, -1, __ATOMIC_RELAXED);
		say_ready();
		return 0;
	}
	waitpid(c, NULL, 0);
	return 0;
}

/*
 * A subscriber in a time namespace whose boottime is offset: it reads
 * every start time shifted by the offset, its own too, and we read its
 * start unshifted.  Its slot is alive to us, and ours to it.
 */
Test(killloop, a_subscriber_in_another_time_namespace_is_alive,
     .timeout = 30)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch;
	shmbus_sub *mine;
	uint64_t o = 0;
	pid_t p, late;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	mine = shmbus_sub_open(ch, &sa);
	cr_assert(mine);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t w = __atomic_load_n(&ch->subs[i].owner,
					     __ATOMIC_ACQUIRE);

		if (owner_pid(w) == (uint32_t)getpid())
			sh->word = w;
	}
	p = th_spawn(shift_then_fork, NULL);
	await_ready();
	late = __atomic_load_n(&sh->late, __ATOMIC_RELAXED);
	if (late < 0) {
		th_wait(p);
		shmbus_sub_close(mine);
		shmbus_channel_close(ch);
		sh_unmap();
		cr_skip_test("needs a time namespace (root, Linux 5.6)");
	}
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t w = __atomic_load_n(&ch->subs[i].owner,
					     __ATOMIC_ACQUIRE);

		if (owner_state(w) == SHMBUS_SLOT_ACTIVE &&
		    owner_pid(w) == (uint32_t)late)
			o = w;
	}
	cr_log_info("subscriber %d in the time namespace: tag %u; ours %u, "
		    "gone to it: %d", (int)late, owner_tag(o),
		    owner_tag(sh->word), sh->verdict);
	cr_assert_neq(o, 0, "its slot is not found");
	cr_assert_not(sb_owner_gone(o), "its live slot is judged gone");
	cr_assert(sb_owner_alive(o));
	cr_assert_eq(sh->verdict, 0, "it judged our live slot gone");
	kill(late, SIGKILL);
	cr_assert_eq(th_wait(p), 0);
	shmbus_sub_close(mine);
	shmbus_channel_close(ch);
	sh_unmap();
}

/*
 * A multi producer killed inside a claim it had handed over; a process
 * given its pid publishes two laps.  The dead slot names that process's
 * pid, but it holds no such slot: once the dead claim holds it back, it
 * pads the claim and frees the slot.  (It waited on itself, a live
 * producer by pid, until its timeout: every claim for ever.)
 */
Test(killloop, a_multi_producers_pid_reused_by_its_successor, .timeout = 60)
{
	mp_successor_of(die_in_claim, 3);
}

/*
 * A subscriber of a block channel killed; a process given its pid
 * publishes two laps.  The dead cursor names that process's pid: once it
 * holds it back, the producer releases it.  (It waited on itself, a live
 * subscriber by pid, until its timeout.)
 */
Test(killloop, a_subscribers_pid_reused_by_a_producer, .timeout = 60)
{
	mp_successor_of(idle_subscriber, 0);
}

/* Publishes messages 0..2 as producer 1, then makes a claim of 64 bytes
 * at head and dies before its hand-off (as a producer preempted right
 * after its CAS on head leaves it): its slot announces the claim, head is
 * past it, the hand-off still at it. */
static int die_before_hand_off(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	struct shmbus_hdr *h = map_hdr();
	struct shmbus_prod_slot *prods, *mine = NULL;
	uint8_t msg[64];
	uint64_t start;

	(void)arg;
	if (!pub || !h)
		return 2;
	for (uint64_t s = 0; s < 3; s++) {
		th_msg_fill(msg, sizeof(msg), 1, s);
		if (shmbus_publish(pub, msg, sizeof(msg)))
			return 3;
	}
	prods = ch->prods;
	for (unsigned i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		if (__atomic_load_n(&prods[i].owner, __ATOMIC_ACQUIRE) >> 32 ==
		    (uint64_t)getpid())
			mine = &prods[i];
	if (!mine)
		return 4;
	start = __atomic_load_n(&ch->pl->head, __ATOMIC_ACQUIRE);
	__atomic_store_n(&mine->claim_end, start + 64, __ATOMIC_RELEASE);
	__atomic_store_n(&mine->claim_pos, start, __ATOMIC_RELEASE);
	__atomic_store_n(&ch->pl->head, start + 64, __ATOMIC_SEQ_CST);
	say_ready();
	for (;;)
		pause();
}

/*
 * A multi producer that died between its claim and its hand-off; a
 * process given its pid publishes.  Its claim waits behind the dead one,
 * whose slot names its own pid: it hands over for the dead claim and pads
 * it, as for any dead producer's.  (It waited at the hand-off for itself,
 * and with it every producer of the channel, for ever.)
 */
Test(killloop, a_dead_claim_at_the_hand_off_whose_pid_its_successor_has,
     .timeout = 60)
{
	mp_successor_of(die_before_hand_off, 3);
}

/* ------------------------------------------ a pid reused by a reader */

/* Takes the dead producer's pid (or writes its own over it), subscribes
 * and reads everything for as long as it lives, as a subscriber that
 * never waits at the dead claim does. */
static int sub_successor(void *arg)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_NEWEST };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_sub *sub;
	uint8_t buf[1024];

	(void)arg;
	if (!ch || take_dead_pid() < 1)
		return 2;
	sub = shmbus_sub_open(ch, &sa);
	if (!sub)
		return 3;
	say_ready();
	for (;;)
		if (shmbus_read(sub, buf, sizeof(buf), NULL) == -EAGAIN)
			shmbus_wait(sub, 1000000);
}

/* Publishes LAPS_MSGS messages as producer 2, each within 3 s. */
static int publisher2(void *arg)
{
	struct shmbus_pub_attr pa = { .timeout_ns = 3000000000 };
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[64];

	(void)arg;
	if (!pub)
		return 2;
	for (uint64_t s = 0; s < LAPS_MSGS; s++) {
		int rc;

		th_msg_fill(msg, sizeof(msg), 2, s);
		if ((rc = shmbus_publish(pub, msg, sizeof(msg)))) {
			fprintf(stderr, "publisher: message %llu: %s\n",
				(unsigned long long)s, shmbus_strerror(rc));
			return 4;
		}
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	return 0;
}

/*
 * A multi producer killed inside its claim, and its pid given to a process
 * that only subscribes.  Every other process takes the dead slot for the
 * subscriber's, alive: the producers a lap behind the dead claim, and the
 * subscribers waiting at it, would wait for as long as it lives.  The
 * subscriber, which alone can tell, releases the claim as it opens.
 */
Test(killloop, a_dead_producers_pid_reused_by_a_subscriber, .timeout = 60)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch;
	shmbus_sub *sub;
	pid_t s2, p;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_MULTI_PRODUCER);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	sh->dead = th_spawn(die_in_claim, NULL);
	await_ready();
	kill(sh->dead, SIGKILL);
	cr_assert_eq(th_wait(sh->dead), 128 + SIGKILL);
	s2 = spawn_successor(sub_successor);
	await_ready();
	p = th_spawn(publisher2, NULL);
	read_behind(sub, p, 3);
	kill(s2, SIGKILL);
	cr_assert_eq(th_wait(s2), 128 + SIGKILL);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* Takes the dead subscriber's pid (or writes its own over it), says so,
 * waits for the word, then tries to open a publisher of the single
 * producer channel whose role another process holds: refused with EBUSY
 * (unless that one is done by then).  Then it lives on, its pid the dead
 * subscriber's. */
static int refused_successor(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_pub *pub;

	(void)arg;
	if (!ch || take_dead_pid() < 1)
		return 2;
	say_ready();
	while (!__atomic_load_n(&sh->go, __ATOMIC_ACQUIRE))
		usleep(1000);
	pub = shmbus_pub_open(ch, NULL);
	if (!pub && errno != EBUSY)
		return 3;
	/* Refused, as long as the producer holds the role; it may have
	 * published everything and given the role back meanwhile. */
	shmbus_pub_close(pub);
	say_ready();
	for (;;)
		pause();
}

/*
 * A block subscriber killed, and its pid given to a process that tries to
 * publish on the single-producer channel, whose role another producer
 * holds: its open is refused (EBUSY).  The producer, held back a lap
 * after the dead cursor, takes it for the live process's; only the
 * refused process can tell, and releases it as it tries.
 */
Test(killloop, a_subscribers_pid_reused_by_a_refused_producer, .timeout = 60)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	shmbus_channel *ch;
	shmbus_sub *sub;
	pid_t s2, p;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	sh->dead = th_spawn(idle_subscriber, NULL);
	await_ready();
	kill(sh->dead, SIGKILL);
	cr_assert_eq(th_wait(sh->dead), 128 + SIGKILL);
	s2 = spawn_successor(refused_successor);
	await_ready();
	/* The producer takes the role and runs into the dead cursor. */
	p = th_spawn(publisher2, NULL);
	for (int i = 0; th_head(ch) < 60 * 1024 && i < 2000; i++)
		usleep(1000);
	__atomic_store_n(&sh->go, 1, __ATOMIC_RELEASE);
	read_behind(sub, p, 0);
	await_ready();
	kill(s2, SIGKILL);
	cr_assert_eq(th_wait(s2), 128 + SIGKILL);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* ------------------------- a sibling thread between verdict and repair */

/*
 * A repairer's verdict and its CAS are two steps: a thread of ours may
 * judge a slot or role that names our pid a dead process's (none of our
 * handles holds it), and before its CAS another thread of ours opens a
 * handle that takes it, writing the same pid.  The repair must then leave
 * it alone: the word it would change names a live handle now, and a CAS
 * from "our pid" to "our pid" cannot tell.  Each test below plays the
 * three steps in that order in one thread, on a channel where a dead
 * process with our pid left the slot or the role.
 */

/* A dead subscriber with our pid, slot 0. */
Test(killloop, a_subscriber_opened_after_the_verdict_keeps_its_slot,
     .timeout = 30)
{
	struct shmbus_sub_attr sa = { .start = SHMBUS_START_OLDEST };
	uint32_t me = (uint32_t)getpid();
	shmbus_channel *ch;
	shmbus_sub *sub;
	shmbus_pub *pub;
	uint8_t msg[64], buf[1024];
	int rc;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_MULTI_PRODUCER);
	__atomic_store_n(&ch->subs[0].owner,
			 owner_word(SHMBUS_SLOT_ACTIVE, me), __ATOMIC_RELEASE);
	/* The verdict (a producer held back, reap_gone()). */
	cr_assert(sb_slot_gone(ch, SB_HELD_SUB, 0,
			       owner_word(SHMBUS_SLOT_ACTIVE, me)));
	/* A sibling thread subscribes: the dead slot is the first free. */
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	cr_assert_eq(__atomic_load_n(&ch->subs[0].owner, __ATOMIC_ACQUIRE),
		     own_word(SHMBUS_SLOT_ACTIVE));
	/* The repair, of the word judged. */
	rc = sb_repair_sub(ch, 0, owner_word(SHMBUS_SLOT_ACTIVE, me), me);
	cr_log_info("repair of the live subscriber's slot: %d, owner %#llx",
		    rc, (unsigned long long)ch->subs[0].owner);
	cr_assert_eq(rc, 0, "a live subscriber's slot was released");
	cr_assert_eq(__atomic_load_n(&ch->subs[0].owner, __ATOMIC_ACQUIRE),
		     own_word(SHMBUS_SLOT_ACTIVE));
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	th_msg_fill(msg, sizeof(msg), 1, 0);
	cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_read(sub, buf, sizeof(buf), NULL), 64);
	shmbus_pub_close(pub);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* A dead multi producer with our pid, slot 0, between two claims. */
Test(killloop, a_producer_opened_after_the_verdict_keeps_its_slot,
     .timeout = 30)
{
	uint32_t me = (uint32_t)getpid();
	shmbus_channel *ch;
	shmbus_pub *pub;
	int rc;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_MULTI_PRODUCER);
	__atomic_store_n(&ch->prods[0].claim_pos, UINT64_MAX,
			 __ATOMIC_RELEASE);
	__atomic_store_n(&ch->prods[0].owner,
			 owner_word(SHMBUS_SLOT_ACTIVE, me), __ATOMIC_RELEASE);
	/* The verdict (sb_release_gone_producers(), the daemon's scan). */
	cr_assert(sb_slot_gone(ch, SB_HELD_PROD, 0,
			       owner_word(SHMBUS_SLOT_ACTIVE, me)));
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	cr_assert_eq(((struct shmbus_pub *)pub)->slot, &ch->prods[0]);
	rc = sb_repair_prod(ch, 0, owner_word(SHMBUS_SLOT_ACTIVE, me), me);
	cr_log_info("repair of the live producer's slot: %d, owner %#llx",
		    rc, (unsigned long long)ch->prods[0].owner);
	cr_assert_eq(rc, 0, "a live producer's slot was adopted and released");
	cr_assert_eq(owner_state(__atomic_load_n(&ch->prods[0].owner,
						 __ATOMIC_ACQUIRE)),
		     SHMBUS_SLOT_ACTIVE);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* Opens a single producer's publisher on the channel: 0 if it may, 1 if
 * refused with EBUSY. */
static int sp_open(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(sh->dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;

	(void)arg;
	return pub ? 0 : errno == EBUSY ? 1 : 2;
}

/* A dead single producer with our pid left the role (shmbusd's scan,
 * had shmbusd that pid, or a thread of ours). */
Test(killloop, a_single_producer_opened_after_the_verdict_keeps_its_role,
     .timeout = 30)
{
	uint32_t me = (uint32_t)getpid();
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint64_t bad = 0;
	int rc;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	__atomic_store_n(&ch->pl->sp_owner, me, __ATOMIC_RELEASE);
	/* The verdict (sb_reap()). */
	cr_assert(sb_sp_role_gone(ch, me));
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	rc = sb_repair_sp(ch, me, me, &bad);
	cr_log_info("repair of the live role: %d, sp_owner %#llx", rc,
		    (unsigned long long)ch->pl->sp_owner);
	cr_assert_eq(__atomic_load_n(&ch->pl->sp_owner, __ATOMIC_ACQUIRE),
		     role_word(me, 0),
		     "a live single producer's role was taken from it");
	/* Another process is refused the role while we hold it. */
	cr_assert_eq(th_wait(th_spawn(sp_open, NULL)), 1);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	sh_unmap();
}

static void *close_pub(void *arg)
{
	shmbus_pub_close(arg);
	return NULL;
}

/*
 * A single producer opened in one thread and closed in another while no
 * file may be opened (the start tag could not be read then).  The close
 * frees the role it took, whatever tag the closing thread would make:
 * another process may take it.
 */
Test(killloop, a_single_producer_closed_in_a_thread_that_read_no_tag,
     .timeout = 30)
{
	struct rlimit rl, none = { 0, 0 };
	shmbus_channel *ch;
	shmbus_pub *pub;
	pthread_t t;
	uint64_t w;

	sh_map();
	ch = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
		       SHMBUS_SINGLE_PRODUCER);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	w = __atomic_load_n(&ch->pl->sp_owner, __ATOMIC_ACQUIRE);
	cr_log_info("role word %#llx", (unsigned long long)w);
	cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
	none.rlim_max = rl.rlim_max;
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &none), 0);
	cr_assert_eq(pthread_create(&t, NULL, close_pub, pub), 0);
	pthread_join(t, NULL);
	cr_assert_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
	w = __atomic_load_n(&ch->pl->sp_owner, __ATOMIC_ACQUIRE);
	cr_assert_eq(w, 0, "the closed producer's role stayed taken (%#llx)",
		     (unsigned long long)w);
	cr_assert_eq(th_wait(th_spawn(sp_open, NULL)), 0);
	shmbus_channel_close(ch);
	sh_unmap();
}

/* The three above at once, in threads: openers take and give back
 * handles on a multi-producer and a single-producer channel while
 * repairers repair every slot and the role as a dead process's with our
 * pid, as if their verdicts had come before each open. */
struct race {
	shmbus_channel *mp, *sp;
	int stop;
	int lost_role;		/* an opener's role not ours while held */
};

static void *race_opener(void *arg)
{
	struct race *r = arg;
	uint32_t me = (uint32_t)getpid();

	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		shmbus_sub *s = shmbus_sub_open(r->mp, NULL);
		shmbus_pub *p = shmbus_pub_open(r->mp, NULL);
		shmbus_pub *q = shmbus_pub_open(r->sp, NULL);

		if (q && __atomic_load_n(&r->sp->pl->sp_owner,
					 __ATOMIC_ACQUIRE) != role_word(me, 0))
			__atomic_store_n(&r->lost_role, 1, __ATOMIC_RELAXED);
		shmbus_sub_close(s);
		shmbus_pub_close(p);
		shmbus_pub_close(q);
	}
	return NULL;
}

static void *race_repairer(void *arg)
{
	struct race *r = arg;
	uint32_t me = (uint32_t)getpid();
	uint64_t bad, sp;

	while (!__atomic_load_n(&r->stop, __ATOMIC_RELAXED)) {
		/* A word naming our pid, judged without the list. */
		for (uint32_t i = 0; i < 4; i++) {
			uint64_t o = __atomic_load_n(&r->mp->subs[i].owner,
						     __ATOMIC_ACQUIRE);

			if (owner_pid(o) == me)
				sb_repair_sub(r->mp, i, o, me);
			o = __atomic_load_n(&r->mp->prods[i].owner,
					    __ATOMIC_ACQUIRE);
			if (owner_pid(o) == me)
				sb_repair_prod(r->mp, i, o, me);
		}
		sp = __atomic_load_n(&r->sp->pl->sp_owner,
				     __ATOMIC_ACQUIRE);
		if (role_pid(sp) == me)
			sb_repair_sp(r->sp, sp, me, &bad);
	}
	return NULL;
}

Test(killloop, threads_opening_handles_while_others_repair_our_pid,
     .timeout = 30)
{
	struct shmbus_channel_attr sa = {
		.capacity = 64 * 1024, .max_msg = 1024, .numa_node = -1,
		.producers = SHMBUS_SINGLE_PRODUCER,
	};
	struct race r = { 0 };
	pthread_t t[4];
	uint64_t reaped;

	sh_map();
	r.mp = th_create(sh->dir, 64 * 1024, 1024, SHMBUS_BLOCK,
			 SHMBUS_MULTI_PRODUCER);
	r.sp = shmbus_channel_create(sh->dir, "sp", &sa, 0);
	cr_assert(r.sp);
	for (int k = 0; k < 4; k++)
		pthread_create(&t[k], NULL, k < 2 ? race_opener : race_repairer,
			       &r);
	usleep(500000);
	__atomic_store_n(&r.stop, 1, __ATOMIC_RELAXED);
	for (int k = 0; k < 4; k++)
		pthread_join(t[k], NULL);
	reaped = __atomic_load_n(&r.mp->hdr->reaped, __ATOMIC_ACQUIRE);
	cr_log_info("live slots released: %llu; a role taken: %d",
		    (unsigned long long)reaped, r.lost_role);
	cr_assert_eq(reaped, 0, "live handles' slots were released");
	cr_assert_eq(r.lost_role, 0, "a live single producer lost its role");
	shmbus_channel_close(r.sp);
	shmbus_channel_close(r.mp);
	sh_unmap();
}
