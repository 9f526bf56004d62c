/* SPDX-License-Identifier: MIT */
/*
 * test_group_wait.c - a member's shmbus_group_wait() with real processes
 * over real shared memory: woken by a commit after an empty poll (also
 * at the head that poll saw), by an ack that frees a full window; asleep
 * in the kernel, on the channel's futex, and woken there by a producer;
 * taken off the channel's count of sleepers when it is killed asleep; the
 * strategies of shmbus_group_set_wait(); no spin on damage.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/contract.h"
#include "../lib/group.h"

#include "group_fixture.h"

TestSuite(group_wait, .init = grp_setup, .fini = grp_teardown,
	  .timeout = 120);

/* A producer's claim moves head before its commit: a member that polled
 * between the two, then waits, is woken by the commit alone (head, the
 * same as at the poll, tells nothing).  The producer is a process of its
 * own, holding a claim while it fills it. */
static int fill_slowly(void *arg)
{
	int *p = arg;	/* [0]: to the member, [1]: from it */
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t id = 0;
	void *buf;
	char c = 0;

	if (!pub || shmbus_claim(pub, 64, &buf) != 0)
		return 1;
	memcpy(buf, &id, sizeof(id));
	if (write(p[0], &c, 1) != 1 || read(p[1], &c, 1) != 1)
		return 2;
	usleep(20000);		/* the member waits by now */
	return shmbus_commit(pub) == 0 ? 0 : 3;
}

static int64_t commit_wakes(enum shmbus_group_mode mode)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = anchor(ch, mode);
	struct shmbus_group_msg m;
	int to_m[2], to_p[2], p[2];
	uint8_t buf[256];
	uint64_t t0;
	int64_t ms;
	pid_t pid;
	char c = 1;

	cr_assert(pipe(to_m) == 0 && pipe(to_p) == 0);
	p[0] = to_m[1];
	p[1] = to_p[0];
	pid = th_spawn(fill_slowly, p);
	cr_assert_eq(read(to_m[0], &c, 1), 1);
	/* The claim is made, not committed: nothing yet. */
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EAGAIN);
	cr_assert_eq(write(to_p[1], &c, 1), 1);
	/* A wait may end early (keyed: every 10 ms); a read tells. */
	t0 = th_now_ns();
	for (;;) {
		ms = (int64_t)(th_now_ns() - t0) / 1000000;
		cr_assert_eq(shmbus_group_wait(g, (2000 - ms) * 1000000), 0,
			     "the wait missed the commit");
		if (shmbus_group_read(g, buf, sizeof(buf), &m) > 0)
			break;
	}
	ms = (int64_t)(th_now_ns() - t0) / 1000000;
	cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	cr_assert_eq(th_wait(pid), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	for (int i = 0; i < 2; i++) {
		close(to_m[i]);
		close(to_p[i]);
	}
	return ms;
}

/* 20 ms of filling, and the wait's own looks (keyed: every 10 ms). */
Test(group_wait, a_wait_is_woken_by_a_commit_after_an_empty_poll)
{
	int64_t ms = commit_wakes(SHMBUS_GROUP_SHARED);

	cr_assert_lt(ms, 500, "woken %lld ms after", (long long)ms);
}

Test(group_wait, a_keyed_wait_is_woken_by_a_commit_after_an_empty_poll)
{
	int64_t ms = commit_wakes(SHMBUS_GROUP_KEYED);

	cr_assert_lt(ms, 500, "woken %lld ms after", (long long)ms);
}

/* A member that found the window full waits; the other member's ack
 * frees it, with the records already committed: the wait ends then,
 * not at its timeout (head does not move). */
Test(group_wait, a_wait_is_woken_when_an_ack_frees_a_full_window)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	struct shmbus_group_attr a;
	struct shmbus_group_msg m1, m2;
	shmbus_group *g1, *g2;
	uint8_t buf[256];
	uint64_t t0;

	shmbus_group_attr_init(&a);
	a.window = 1;
	g1 = shmbus_group_join(ch, "g", "m1", &a);
	g2 = shmbus_group_join(ch, "g", "m2", &a);
	cr_assert(g1 && g2);
	produce(ch, 2, 0);
	cr_assert_gt(shmbus_group_read(g1, buf, sizeof(buf), &m1), 0);
	cr_assert_eq(shmbus_group_read(g2, buf, sizeof(buf), &m2), -EAGAIN,
		     "the window of one lease is full");
	cr_assert_eq(shmbus_group_ack(g1, &m1.lease), 0);
	t0 = th_now_ns();
	cr_assert_eq(shmbus_group_wait(g2, 2000000000), 0);
	cr_assert_lt(th_now_ns() - t0, 500000000ull);
	cr_assert_gt(shmbus_group_read(g2, buf, sizeof(buf), &m2), 0);
	cr_assert_eq(shmbus_group_ack(g2, &m2.lease), 0);
	shmbus_group_leave(g1);
	shmbus_group_leave(g2);
	shmbus_channel_close(ch);
}

/* A claim position no record starts at (the group's file written over):
 * the poll says -EBADMSG, and the wait does not end at once on it, which
 * would make a loop of poll and wait spin. */
Test(group_wait, a_damaged_claim_position_does_not_make_a_wait_spin)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = anchor(ch, SHMBUS_GROUP_SHARED);
	struct shmbus_group_msg m;
	uint8_t buf[256];
	uint64_t pos, seq, t0;
	unsigned early = 0;

	produce(ch, 4, 0);
	while (shmbus_group_read(g, buf, sizeof(buf), &m) > 0)
		cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	sb_pair_read(&g->g->claim_pos, &pos, &seq);
	cr_assert(cas_pair(&g->g->claim_pos, pos, seq, pos + 8, seq));
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EBADMSG);
	t0 = th_now_ns();
	while (th_now_ns() - t0 < 100000000u)
		early += shmbus_group_wait(g, 20000000) == 0;
	cr_assert_lt(early, 10, "the wait ended %u times in 100 ms", early);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}


/* The channel's count of sleepers, and the group's word of members that
 * count in it. */
static uint32_t sleepers(shmbus_channel *ch)
{
	return load_relaxed32(&ch->hdr->sleepers);
}

static uint64_t asleep(shmbus_group *g)
{
	return load_relaxed64(&g->g->sleepers);
}

/* The same word, read from group "g"'s file without joining (a member
 * that joins may take lanes). */
static uint64_t asleep_in_file(void)
{
	char path[512];
	struct shmbus_group_hdr *h;
	uint64_t v;
	int fd;

	snprintf(path, sizeof(path), "%s/.ch@g.group", dir);
	fd = open(path, O_RDONLY);
	cr_assert_geq(fd, 0);
	h = mmap(NULL, sizeof(*h), PROT_READ, MAP_SHARED, fd, 0);
	cr_assert(h != MAP_FAILED);
	close(fd);
	v = load_relaxed64(&h->sleepers);
	munmap(h, sizeof(*h));
	return v;
}

/* Until the channel counts one sleeper and the group's word names one
 * member, seen together (a sleeper wakes for a moment every 10 ms), at
 * most 5 s. */
static bool one_asleep(shmbus_channel *ch)
{
	for (int i = 0; i < 50000; i++) {
		if (sleepers(ch) == 1 && __builtin_popcountll(
						 asleep_in_file()) == 1 &&
		    sleepers(ch) == 1)
			return true;
		usleep(100);
	}
	return false;
}

/* The keyed and single-active walk stops at a record claimed and not yet
 * committed; the commit leaves head where the poll saw it, and a wait
 * that starts after it ends at once (it looks at that record). */
static void commit_at_the_polled_head(enum shmbus_group_mode mode)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = anchor(ch, mode);
	shmbus_pub *pub = shmbus_pub_open(ch, NULL);
	struct shmbus_group_msg m;
	uint8_t buf[256];
	uint64_t id = 0;
	void *p;

	cr_assert(g && pub);
	/* Its lanes, given at the first poll's maintenance. */
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EAGAIN);
	cr_assert_eq(shmbus_claim(pub, 64, &p), 0);
	memcpy(p, &id, sizeof(id));
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EAGAIN);
	cr_assert_eq(shmbus_commit(pub), 0);
	cr_assert_eq(shmbus_group_wait(g, 1000000), 0,
		     "a wait after the commit missed it");
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), 64);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	shmbus_pub_close(pub);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

Test(group_wait, a_keyed_wait_sees_a_commit_at_the_polled_head_at_once)
{
	commit_at_the_polled_head(SHMBUS_GROUP_KEYED);
}

Test(group_wait, a_single_active_wait_sees_a_commit_at_the_polled_head_at_once)
{
	commit_at_the_polled_head(SHMBUS_GROUP_SINGLE_ACTIVE);
}

struct sleeper_book {
	_Atomic uint64_t sent_ns;	/* the parent's publish */
	_Atomic uint64_t woke_ns;	/* the member's wait returned */
	_Atomic int rc;			/* and what it returned */
};

static struct sleeper_book *book;
static enum shmbus_group_mode sleeper_mode;

/* A member (of mode sleeper_mode) that polls, finds nothing, and waits
 * (for ever); then reads what woke it.  Exits 0 when it read message 7. */
static int sleeper(void *arg)
{
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr a;
	shmbus_group *g;
	struct shmbus_group_msg m;
	uint8_t buf[256];
	uint64_t id;
	int rc;

	(void)arg;
	shmbus_group_attr_init(&a);
	a.mode = sleeper_mode;
	g = ch ? shmbus_group_join(ch, "g", "sleeper", &a) : NULL;
	if (!g)
		return 1;
	if (shmbus_group_read(g, buf, sizeof(buf), &m) != -EAGAIN)
		return 2;
	rc = shmbus_group_wait(g, -1);
	atomic_store(&book->woke_ns, th_now_ns());
	atomic_store(&book->rc, rc);
	if (rc)
		return 3;
	while (shmbus_group_read(g, buf, sizeof(buf), &m) == -EAGAIN)
		if (shmbus_group_wait(g, 1000000000) == -ETIMEDOUT)
			return 4;
	/* Keyed: the key first (produce_from()). */
	memcpy(&id, buf + (sleeper_mode == SHMBUS_GROUP_SHARED ? 0 : 8),
	       sizeof(id));
	if (id != 7 || shmbus_group_ack(g, &m.lease))
		return 5;
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	return 0;
}

/* The member sleeps in the kernel (it counts in the channel's sleepers,
 * its bit set in the group's word), and a producer's publish wakes it. */
static void woken_in_the_kernel(enum shmbus_group_mode mode)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g0 = anchor(ch, mode);
	uint64_t sent, wakeups;
	pid_t pid;

	book = mmap(NULL, sizeof(*book), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(book != MAP_FAILED);
	sleeper_mode = mode;
	/* The group stays; its lanes go to the member that looks. */
	shmbus_group_leave(g0);
	pid = th_spawn(sleeper, NULL);
	cr_assert(one_asleep(ch), "the member never slept in the kernel "
		  "(sleepers %u)", sleepers(ch));
	wakeups = load_relaxed64(&ch->hdr->wakeups);
	sent = th_now_ns();
	atomic_store(&book->sent_ns, sent);
	produce_from(ch, 7, 1, mode == SHMBUS_GROUP_SHARED ? 0 : 16);
	cr_assert_gt(load_relaxed64(&ch->hdr->wakeups), wakeups,
		     "the publish made no wake call");
	cr_assert_eq(th_wait(pid), 0);
	cr_assert_eq(atomic_load(&book->rc), 0);
	cr_assert_lt(atomic_load(&book->woke_ns) - sent, 1000000000ull,
		     "woken %llu ns after the publish",
		     (unsigned long long)(atomic_load(&book->woke_ns) - sent));
	cr_assert_eq(sleepers(ch), 0);
	cr_assert_eq(asleep_in_file(), 0);
	shmbus_channel_close(ch);
	munmap(book, sizeof(*book));
}

Test(group_wait, a_shared_member_asleep_in_the_kernel_is_woken_by_a_publish)
{
	woken_in_the_kernel(SHMBUS_GROUP_SHARED);
}

Test(group_wait, a_keyed_member_asleep_in_the_kernel_is_woken_by_a_publish)
{
	woken_in_the_kernel(SHMBUS_GROUP_KEYED);
}

/* Spawns a sleeper and kills it while it counts as asleep (it wakes for
 * a moment every 10 ms: tried again if the kill found it awake). */
static void kill_asleep(shmbus_channel *ch)
{
	for (int tries = 0;; tries++) {
		pid_t pid = th_spawn(sleeper, NULL);

		cr_assert(one_asleep(ch), "the member never slept");
		cr_assert_eq(kill(pid, SIGKILL), 0);
		cr_assert_eq(waitpid(pid, NULL, 0), pid);
		if (sleepers(ch) == 1 && asleep_in_file())
			return;
		cr_assert_lt(tries, 20, "never killed asleep");
	}
}

/* A member killed while it sleeps still counts in the channel's sleepers,
 * which makes every commit a wake call: the maintenance that frees its
 * record takes it off the count, and commits make no call again. */
Test(group_wait, a_member_killed_asleep_is_taken_off_the_sleepers)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g0 = anchor(ch, SHMBUS_GROUP_SHARED);
	struct shmbus_group_stats st = { 0 };
	uint64_t wakeups;

	book = mmap(NULL, sizeof(*book), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(book != MAP_FAILED);
	sleeper_mode = SHMBUS_GROUP_SHARED;
	kill_asleep(ch);
	for (int i = 0; i < 100; i++) {
		cr_assert_geq(shmbus_group_maintain(g0), 0);
		cr_assert_eq(shmbus_group_stats(g0, &st), 0);
		if (st.members == 1)
			break;
		usleep(10000);
	}
	cr_assert_eq(st.members, 1, "the dead member's record was not freed");
	cr_assert_eq(sleepers(ch), 0, "the dead sleeper still counts");
	cr_assert_eq(asleep(g0), 0);
	wakeups = load_relaxed64(&ch->hdr->wakeups);
	produce(ch, 10, 0);
	cr_assert_eq(load_relaxed64(&ch->hdr->wakeups), wakeups,
		     "commits made wake calls for nobody");
	shmbus_group_leave(g0);
	shmbus_channel_close(ch);
	munmap(book, sizeof(*book));
}

/* The same, with no maintenance between the death and the group's
 * deletion: the deletion takes it off. */
Test(group_wait, a_group_deleted_after_a_member_died_asleep_leaves_no_sleeper)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g0 = anchor(ch, SHMBUS_GROUP_SHARED);

	book = mmap(NULL, sizeof(*book), PROT_READ | PROT_WRITE,
		    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(book != MAP_FAILED);
	sleeper_mode = SHMBUS_GROUP_SHARED;
	shmbus_group_leave(g0);
	kill_asleep(ch);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	cr_assert_eq(sleepers(ch), 0, "the dead sleeper still counts");
	shmbus_channel_close(ch);
	munmap(book, sizeof(*book));
}

/* A record's bit left set with its count (an older release's maintenance
 * freed a member that died asleep without taking it off): the next
 * member of the record that sleeps and wakes leaves the count at 0. */
Test(group_wait, a_count_left_on_a_record_is_taken_off_by_its_next_sleeper)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = anchor(ch, SHMBUS_GROUP_SHARED);
	struct shmbus_group_msg m;
	uint8_t buf[256];

	or_relaxed64(&g->g->sleepers, UINT64_C(1) << g->me);
	add_seqcst32(&ch->hdr->sleepers, 1);
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EAGAIN);
	cr_assert_eq(shmbus_group_wait(g, 30000000), -ETIMEDOUT);
	cr_assert_eq(sleepers(ch), 0, "the count left on the record stays");
	cr_assert_eq(asleep(g), 0);
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
}

/* SPIN and YIELD never sleep (nor make producers check for sleepers);
 * SLEEP says so on the group's slot, given back with the group. */
Test(group_wait, the_wait_strategies)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = anchor(ch, SHMBUS_GROUP_SHARED);
	struct shmbus_group_msg m;
	uint64_t bit = UINT64_C(1) << g->slot;
	uint8_t buf[256];

	cr_assert_eq(shmbus_group_set_wait(NULL, SHMBUS_WAIT_SLEEP, 0),
		     -EINVAL);
	cr_assert_eq(shmbus_group_set_wait(g, (enum shmbus_wait)3, 0),
		     -EINVAL);
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EAGAIN);
	for (int how = SHMBUS_WAIT_SPIN; how <= SHMBUS_WAIT_YIELD; how++) {
		cr_assert_eq(shmbus_group_set_wait(g, how, 1000), 0);
		cr_assert_eq(shmbus_group_wait(g, 20000000), -ETIMEDOUT);
		cr_assert_eq(load_relaxed64(&ch->hdr->sleep_ok) & bit, 0,
			     "strategy %d said it sleeps", how);
	}
	cr_assert_eq(shmbus_group_set_wait(g, SHMBUS_WAIT_SLEEP, 0), 0);
	cr_assert_eq(shmbus_group_wait(g, 20000000), -ETIMEDOUT);
	cr_assert_neq(load_relaxed64(&ch->hdr->sleep_ok) & bit, 0);
	cr_assert_eq(sleepers(ch), 0);
	/* With the last member that may sleep, producers stop checking; a
	 * member that sleeps again says so again. */
	{
		shmbus_group *g2 = shmbus_group_join(ch, "g", "g2", NULL);

		cr_assert(g2);
		cr_assert_eq(shmbus_group_read(g2, buf, sizeof(buf), &m),
			     -EAGAIN);
		cr_assert_eq(shmbus_group_wait(g2, 20000000), -ETIMEDOUT);
		shmbus_group_leave(g2);
		cr_assert_neq(load_relaxed64(&ch->hdr->sleep_ok) & bit, 0,
			      "cleared while a member that sleeps is joined");
		shmbus_group_leave(g);
		cr_assert_eq(load_relaxed64(&ch->hdr->sleep_ok) & bit, 0,
			     "the group's slot still asks for wake checks");
		g = shmbus_group_join(ch, "g", "m", NULL);
		cr_assert(g);
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m),
			     -EAGAIN);
		cr_assert_eq(shmbus_group_wait(g, 20000000), -ETIMEDOUT);
		cr_assert_neq(load_relaxed64(&ch->hdr->sleep_ok) & bit, 0);
	}
	/* A publish ends every strategy's wait. */
	for (int how = SHMBUS_WAIT_SPIN; how <= SHMBUS_WAIT_SLEEP; how++) {
		cr_assert_eq(shmbus_group_set_wait(g, how, 0), 0);
		produce_from(ch, (uint64_t)how, 1, 0);
		cr_assert_eq(shmbus_group_wait(g, 5000000000), 0);
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), 16);
		cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m),
			     -EAGAIN);
	}
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	cr_assert_eq(load_relaxed64(&ch->hdr->sleep_ok) & bit, 0,
		     "the group's slot was given back still saying it sleeps");
	shmbus_channel_close(ch);
}

/*
 * A signal caught while a member sleeps ends its wait with -EINTR, as it
 * ends shmbus_wait()'s, whatever the timeout and whether or not the
 * handler was installed with SA_RESTART: a handler that sets a flag can
 * stop a member that waits for ever.  (The wait once slept on, slice after
 * slice, to its end.)  The signaller publishes after a second, so that a
 * wait that missed the signals ends instead of hanging.  It signals every
 * 20 ms until then: one that lands between two of the wait's sleeps (its
 * looks every 10 ms) is not one caught while it slept.
 */
static void on_usr1(int sig)
{
	(void)sig;
}

struct interrupter {
	shmbus_channel *ch;
	pthread_t target;
	atomic_int done;
	int rc;
};

static void *interrupt_member(void *arg)
{
	struct interrupter *x = arg;
	uint64_t m[2] = { 0, 0 };
	shmbus_pub *p;

	for (int i = 0; i < 2000 && sleepers(x->ch) == 0; i++)
		usleep(1000);
	for (int i = 0; i < 1000 && !atomic_load(&x->done); i++) {
		if (i % 20 == 19)
			pthread_kill(x->target, SIGUSR1);
		usleep(1000);
	}
	x->rc = 0;
	if (!atomic_load(&x->done)) {
		p = shmbus_pub_open(x->ch, NULL);
		x->rc = p ? shmbus_publish(p, m, sizeof(m)) : -errno;
		shmbus_pub_close(p);
	}
	return NULL;
}

static int member_signalled(shmbus_channel *ch, shmbus_group *g, int flags,
			    int64_t timeout_ns)
{
	struct sigaction act = { .sa_handler = on_usr1, .sa_flags = flags };
	struct sigaction old;
	struct interrupter x = { .ch = ch, .target = pthread_self() };
	struct shmbus_group_msg m;
	uint8_t buf[256];
	pthread_t t;
	int rc;

	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), -EAGAIN);
	sigemptyset(&act.sa_mask);
	cr_assert_eq(sigaction(SIGUSR1, &act, &old), 0);
	cr_assert_eq(pthread_create(&t, NULL, interrupt_member, &x), 0);
	/* A wait-then-poll loop: a wait may return 0 with nothing to take
	 * (its timed looks); only the signaller's late message, taken,
	 * ends it without the signal. */
	for (;;) {
		ssize_t n;

		rc = shmbus_group_wait(g, timeout_ns);
		if (rc)
			break;
		n = shmbus_group_read(g, buf, sizeof(buf), &m);
		if (n >= 0) {
			cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
			break;
		}
		cr_assert_eq(n, -EAGAIN);
	}
	atomic_store(&x.done, 1);
	pthread_join(t, NULL);
	sigaction(SIGUSR1, &old, NULL);
	cr_assert_eq(x.rc, 0);
	return rc;
}

Test(group_wait, a_signal_ends_a_sleep_with_eintr)
{
	shmbus_channel *ch = chan(SHMBUS_BLOCK, 1 << 16);
	shmbus_group *g = anchor(ch, SHMBUS_GROUP_SHARED);

	cr_assert_eq(shmbus_group_set_wait(g, SHMBUS_WAIT_SLEEP, 1000), 0);
	cr_assert_eq(member_signalled(ch, g, SA_RESTART, -1), -EINTR,
		     "a member's wait for ever outlived a signal");
	cr_assert_eq(member_signalled(ch, g, 0, 10 * 1000000000LL), -EINTR);
	shmbus_group_leave(g);
	cr_assert_eq(shmbus_group_delete(ch, "g"), 0);
	shmbus_channel_close(ch);
}
