/* SPDX-License-Identifier: MIT */
/*
 * wait.c - how a subscriber waits for the next message, and the producer's
 * side of waking it.
 *
 * Spin, spin-then-yield, or spin-then-sleep on the futex word in the
 * channel header.  A sleeper first says it sleeps (hdr.sleepers), then
 * reads the futex word, then checks for a message once more, then sleeps
 * only if the word has not changed.  A producer, after its commit, looks
 * at hdr.sleepers and makes the wake system call only when it is non-zero
 * (F3 in docs/design.md); it does so, and pays for the fence the pair
 * needs, only on channels where a subscriber may sleep (hdr.sleep_ok).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "sub.h"

int64_t sb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * A subscriber that may sleep says so before it first waits (F3's third
 * party): it sets its bit in hdr.sleep_ok, which producers read after
 * every commit, and then makes every thread of the system execute a full
 * barrier (membarrier(MEMBARRIER_CMD_GLOBAL), a grace period: milliseconds,
 * once per open).  A producer that read the word before its barrier and
 * found no bit, and so made no wake check, had its commit visible by the
 * barrier: before this returns, so before the subscriber first looks.
 * One that reads it after sees the bit, and fences and checks (F3).
 * Returns false where the kernel refuses the command (nohz_full, or a
 * filter): the caller then sleeps only in short naps.
 */
bool sb_sleep_announce(struct shmbus_channel *ch, uint32_t slot)
{
	/* No edge: the membarrier() below orders it for every producer. */
	or_relaxed64(&ch->hdr->sleep_ok, UINT64_C(1) << slot);
	return syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) == 0;
}

/* How long a sleeper whose sb_sleep_announce() failed sleeps before it
 * looks again: a producer may have committed without seeing its bit. */
#define UNANNOUNCED_NAP_NS	INT64_C(1000000)	/* 1 ms */

/* A sleep lasts at most this long, whatever the wait's timeout, and is
 * followed by a look at the ring.  The words by which a producer knows to
 * wake a sleeper (hdr.sleep_ok, hdr.sleepers) are in the control file,
 * which every subscriber writes: one written to 0 makes the producers
 * skip the wake-up, which would leave us asleep beside a message for the
 * rest of the wait.  Written over, they cost a sleeper this much latency
 * at most (test_hostile_sub).  A wait for ever is thus timed sleeps too:
 * the kernel restarts an untimed FUTEX_WAIT after a handler installed
 * with SA_RESTART (signal(2)'s default) and never a timed one, so that a
 * signal caught during a sleep ends it (-EINTR) whatever the timeout. */
#define SLEEP_SLICE_NS	INT64_C(1000000000)	/* 1 s */

int sb_prod_wake(struct shmbus_channel *ch)
{
	struct shmbus_hdr *h = ch->hdr;

	/* Changing the word makes a sleeper that read the old value and has
	 * not yet entered the kernel return at once (FUTEX_WAIT compares). */
	/* seq_cst: after our commit and F3; a sleeper's seq_cst load of the
	 * word in sleep_wait() that sees it also sees the commit. */
	add_seqcst32(&h->futex, 1);
	add_relaxed64(&h->wakeups, 1);
	return (int)syscall(SYS_futex, &h->futex, FUTEX_WAKE, INT_MAX, NULL,
			    NULL, 0);
}

int sb_futex_sleep(uint32_t *word, uint32_t val, int64_t timeout_ns)
{
	struct timespec ts, *tp = NULL;

	if (timeout_ns >= 0) {
		ts.tv_sec = timeout_ns / 1000000000;
		ts.tv_nsec = timeout_ns % 1000000000;
		tp = &ts;
	}
	if (syscall(SYS_futex, word, FUTEX_WAIT, val, tp, NULL, 0) < 0)
		return -errno;
	return 0;
}

/* Sleeps on the channel futex until a producer wakes us or time runs out.
 * Returns 0 when a message may be there. */
static int sleep_wait(struct shmbus_sub *sub, struct shmbus_channel *ch,
		      struct shmbus_sub_slot *slot, int64_t deadline)
{
	struct shmbus_hdr *h = ch->hdr;
	int rc = 0;

	for (;;) {
		int64_t left = -1;
		uint32_t f;

		if (deadline >= 0) {
			left = deadline - sb_now_ns();
			if (left <= 0)
				return -ETIMEDOUT;
		}
		/* seq_cst: the store of the F3 pair, then the futex word
		 * (pairs with the producer's increment in sb_prod_wake()). */
		add_seqcst32(&h->sleepers, 1);
		store_relaxed32(&slot->sleeping, 1);
		f = load_seqcst32(&h->futex);
		/* F3: pairs with F3 in wake_if_sleepers() (pub.h): either this check
		 * sees the producer's commit, or the producer sees our
		 * sleepers increment and changes the futex word (producers
		 * make the check while our sleep_ok bit is set:
		 * sb_sleep_announce()). */
		fence_seqcst();
		if (sub->nap && (left < 0 || left > UNANNOUNCED_NAP_NS))
			left = UNANNOUNCED_NAP_NS;
		/* Forced: never sleep on a zero word without looking at
		 * head (see quiet_empty()). */
		if (!sb_sub_ready(sub, true)) {
			/* At an open claim with records behind it (the
			 * forced look counted its time: open_claim_seen()):
			 * look again in REAP_EVERY_NS, in case its producer
			 * died. */
			if (sub->stall_ns && sub->stall_pos == sub->pos &&
			    (left < 0 || left > REAP_EVERY_NS))
				left = REAP_EVERY_NS;
			if (left < 0 || left > SLEEP_SLICE_NS)
				left = SLEEP_SLICE_NS;
			rc = sb_futex_sleep(&h->futex, f, left);
		}
		store_relaxed32(&slot->sleeping, 0);
		/* No edge: we re-check for a message ourselves below. */
		sub_seqcst32(&h->sleepers, 1);
		if (sb_sub_ready(sub, false))
			return 0;
		if (rc == -EINTR)
			return -EINTR;
	}
}

SHMBUS_EXPORT int shmbus_wait(shmbus_sub *sub, int64_t timeout_ns)
{
	struct shmbus_channel *ch;
	struct shmbus_sub_slot *slot;
	enum shmbus_wait how;
	uint32_t spin_ns;
	int64_t start, deadline, spin_end;
	unsigned i = 0;

	if (!sub)
		return -EINVAL;
	if (sub->forked)
		return -EPERM;
	sb_sub_publish(sub);
	if (sb_sub_ready(sub, false))
		return 0;
	ch = sub->ch;
	slot = sub->slot;
	how = sub->wait;
	spin_ns = sub->spin_ns;
	start = sb_now_ns();
	deadline = timeout_ns < 0 ? -1 : sb_after(start, timeout_ns);
	spin_end = how == SHMBUS_WAIT_SPIN ? INT64_MAX : start + spin_ns;

	for (;;) {
		if (sb_sub_ready(sub, false))
			return 0;
		if (++i % 64)
			cpu_relax();
		else {
			int64_t now = sb_now_ns();

			if (deadline >= 0 && now >= deadline)
				return -ETIMEDOUT;
			if (now >= spin_end)
				break;
		}
	}
	if (how == SHMBUS_WAIT_SLEEP)
		return sleep_wait(sub, ch, slot, deadline);
	for (;;) {
		sched_yield();
		if (sb_sub_ready(sub, false))
			return 0;
		if (deadline >= 0 && sb_now_ns() >= deadline)
			return -ETIMEDOUT;
	}
}
