/* SPDX-License-Identifier: MIT */
/*
 * group_wait.c - a member's wait (shmbus_group_wait()): spin, yield, or
 * sleep on the channel's futex as a sleeping subscriber does (wait.c),
 * woken by a producer's commit, with timed looks at what no producer
 * wakes a member for (leases given back, lanes, a full window).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>

#include "contract.h"
#include "group.h"

/* Shared: whether the window is full (nothing can be claimed until an
 * ack, which wakes nobody). */
static bool window_full(struct shmbus_group *m)
{
	uint64_t pos, s, fp, fs;

	sb_pair_read(&m->g->claim_pos, &pos, &s);
	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	return fs <= s && s - fs >= m->window;
}

/* Shared: whether a claim could be won now, as sb_shared_take() would
 * judge it: the window has room and the ring holds a committed record at
 * the claim word, or lapped it (damage there is the poll's to report).
 * Head moves at a producer's claim, before its commit, so a poll that
 * found the record there not committed yet noted a head its commit does
 * not change; and acks that free a full window change neither. */
static bool shared_ready(struct shmbus_group *m)
{
	uint64_t pos, s, fp, fs, seq, size;
	uint32_t type, len;

	sb_pair_read(&m->g->claim_pos, &pos, &s);
	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	/* A floor past the claim read: moved meanwhile (the next look
	 * reads both again), or damage, which must not make a wait spin. */
	if (fs > s || s - fs >= m->window)
		return false;
	/* Damage (< 0) is the poll's to report, not a reason to end every
	 * wait at once: a loop of poll and wait would spin on it. */
	return sb_rec_look(m->ch, pos, load_relaxed64(&m->g->fresh_pos),
			   &type, &len, &seq, &size) > 0;
}

/* Keyed and single-active: whether the record the last empty poll's walk
 * stopped at (committed after the poll saw its claim) is there now. */
static bool lanes_ready(struct shmbus_group *m)
{
	uint64_t seq, size;
	uint32_t type, len;

	if (m->lanes_stop == UINT64_MAX)
		return false;
	/* Damage is the poll's to report, as in shared_ready(). */
	return sb_rec_look(m->ch, m->lanes_stop,
			   load_relaxed64(&m->g->fresh_pos), &type, &len, &seq,
			   &size) > 0;
}

/* Whether a poll may find something the producers made: the channel
 * moved since the last empty poll, the record that poll waited for is
 * committed, or the host stopped taking writes.  A producer's commit
 * wakes a member asleep on what this looks at (member_sleep()). */
static bool ready_now(struct shmbus_group *m)
{
	/* No edge: compared only; a closed fence is sb_member_take_check()'s to
	 * report. */
	if (load_relaxed64(&m->ch->pl->head) != m->idle_head ||
	    sb_group_refused(m->ch))
		return true;
	return m->mode == SHMBUS_GMODE_SHARED ? shared_ready(m)
					      : lanes_ready(m);
}

/* ready_now(), or what no producer wakes a member for, looked at every
 * 10 ms: leases given back (one may wait for its nack's delay); in keyed
 * and single-active mode, lanes (given to it, or a nack's delay over). */
static bool maybe_ready(struct shmbus_group *m, int64_t now)
{
	if (ready_now(m))
		return true;
	return sb_elapsed(now, m->idle_ns) >= SB_GROUP_LOOK_NS &&
	       (load_relaxed64(&m->g->avail) || m->mode != SHMBUS_GMODE_SHARED);
}

/*
 * Sleeps on the channel's futex until a producer's commit wakes us, or
 * for at most a slice: what no producer wakes us for (maybe_ready()'s
 * timed looks, an ack that frees a full window, the maintenance) is
 * looked at after it.  The protocol of a sleeping subscriber (wait.c):
 * we count in hdr.sleepers, then read the futex word, then look; a
 * producer commits, then reads hdr.sleepers (F3).  Our bit in the
 * group's sleepers word lets the maintenance take a member that died
 * asleep off the count (else every commit would make a wake call).
 */
static int member_sleep(struct shmbus_group *m, int64_t now, int64_t end)
{
	struct shmbus_hdr *h = m->ch->hdr;
	uint64_t bit = UINT64_C(1) << m->me;
	int64_t slice = SB_GROUP_LOOK_NS, look;
	uint32_t f;
	int rc = 0;

	/* Producers make F3's check while the group's slot's bit is set:
	 * from a member's first sleep until the last member that may sleep
	 * is gone (sb_member_unsleep()), which a member that sleeps again
	 * then announces anew.  No edge: compared only. */
	if (!(load_relaxed64(&m->g->may_sleep) & bit) ||
	    !(load_relaxed64(&h->sleep_ok) & UINT64_C(1) << m->slot)) {
		or_relaxed64(&m->g->may_sleep, bit);
		m->nap = !sb_sleep_announce(m->ch, m->slot);
	}
	if (m->nap || (m->mode == SHMBUS_GMODE_SHARED && window_full(m)))
		slice = SB_GROUP_NAP_NS;
	/* Not past the next timed look (maybe_ready()), nor the end. */
	look = sb_after(m->idle_ns, SB_GROUP_LOOK_NS) - now;
	if (look > 0 && look < slice)
		slice = look;
	if (end - now < slice)
		slice = end - now;
	/* F3: pairs with F3 in wake_if_sleepers() (pub.h): the store of our
	 * side, before the futex word and our look. */
	add_seqcst32(&h->sleepers, 1);
	if (or_relaxed64(&m->g->sleepers, bit) & bit)
		/* F3's count: the bit was set already, left by a member of
		 * this record before us whose count was never taken off (a
		 * maintenance of an older release freed it): that count
		 * stands for us, ours is one too many. */
		sub_seqcst32(&h->sleepers, 1);
	/* F3: pairs with sb_prod_wake()'s increment of the word. */
	f = load_seqcst32(&h->futex);
	/* F3: pairs with F3 in wake_if_sleepers(): either our look sees the
	 * commit, or the producer sees our count and changes the word. */
	fence_seqcst();
	if (!ready_now(m))
		rc = sb_futex_sleep(&h->futex, f, slice);
	/* F3's count, undone by whoever clears our bit (we, or the
	 * maintenance that frees the record of a member that died here). */
	if (and_relaxed64(&m->g->sleepers, ~bit) & bit)
		sub_seqcst32(&h->sleepers, 1);
	/* The sleep is timed: the kernel does not restart it after a
	 * handler, SA_RESTART or not (as shmbus_wait()'s). */
	return rc == -EINTR ? -EINTR : 0;
}

SHMBUS_EXPORT int shmbus_group_set_wait(shmbus_group *m, enum shmbus_wait how,
					uint32_t spin_ns)
{
	if (!m || (how != SHMBUS_WAIT_SPIN && how != SHMBUS_WAIT_YIELD &&
		   how != SHMBUS_WAIT_SLEEP))
		return -EINVAL;
	m->wait = how;
	m->spin_ns = spin_ns ? spin_ns : SB_GROUP_SPIN_NS;
	return 0;
}

SHMBUS_EXPORT int shmbus_group_wait(shmbus_group *m, int64_t timeout_ns)
{
	int64_t now = sb_now_ns();
	int64_t end = timeout_ns < 0 ? INT64_MAX : sb_after(now, timeout_ns);
	int64_t spin_end;
	int rc = sb_member_take_check(m);

	if (rc)
		return rc;
	spin_end = m->wait == SHMBUS_WAIT_SPIN ? INT64_MAX
					       : sb_after(now, m->spin_ns);
	for (unsigned i = 0;; i++, now = sb_now_ns()) {
		if (maybe_ready(m, now))
			return sb_member_take_check(m);
		/* Rate-limited to one a millisecond. */
		if (i % 64 == 0 || now >= spin_end)
			sb_member_maybe_maintain(m);
		if (now >= end)
			return -ETIMEDOUT;
		if (now < spin_end) {
			cpu_relax();
		} else if (m->wait == SHMBUS_WAIT_YIELD) {
			sched_yield();
		} else {
			/* Counted asleep only while the record is ours (a
			 * maintenance may have judged us dead: pid reuse). */
			rc = sb_member_gone_check(m);
			if (rc)
				return rc;
			if (member_sleep(m, now, end) == -EINTR)
				return maybe_ready(m, sb_now_ns())
					       ? sb_member_take_check(m)
					       : -EINTR;
		}
	}
}
