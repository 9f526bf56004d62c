/* SPDX-License-Identifier: MIT */
/*
 * replica.c - the ring's side of replication (docs/replication.md).
 *
 *   the fence       producers refused while a host hands over or stands by
 *   the watermark   how far the standby acknowledged, published in the
 *                   header's replication line; shmbus_pub_sync() waits on
 *                   it, and so do subscribers that see only acknowledged
 *                   messages
 *   shipping        the primary's agent finds committed records and hands
 *                   the transport pointers into the mapping
 *   applying        the standby's agent writes the same records at the
 *                   same positions, exactly as a producer would
 *
 * shmbusd's agents call these through contract.h; producers and
 * subscribers reach only shmbus_pub_sync() and what subscribe.c checks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"
#include "pub.h"
#include "repair.h"
#include "sub.h"

/* ------------------------------------------------------------ the fence */

uint32_t sb_fence_get(shmbus_channel *ch)
{
	/* No edge: the value alone is the answer. */
	return SHMBUS_FENCE_STATE(load_relaxed32(&ch->hdr->fence));
}

int sb_fence_set(shmbus_channel *ch, uint32_t state)
{
	/* One writer: the daemon's thread that changes roles. */
	uint32_t old = load_relaxed32(&ch->hdr->fence);

	if (SHMBUS_FENCE_STATE(old) != state)
		store_relaxed32(&ch->hdr->fence,
				((old >> 8) + 1) << 8 | state);
	if (state == SHMBUS_FENCE_OPEN) {
		ch->fence_synced = false;
		return 0;
	}
	/* Closed, and a barrier ran here since it was last open: a claim
	 * could only slip past that close, and the barrier (and the
	 * quiesce after it) dealt with it; every handle opened before
	 * refuses claims since (its fence word is not the header's), and
	 * none opens while closed.  A daemon that starts, or whose barrier
	 * the kernel refused, runs it (again). */
	if (ch->fence_synced)
		return 0;
	/* F4: pairs with fence_up() after every claim: once this returns,
	 * every thread of the system has executed a full barrier since our
	 * store, so a claim that did not see the fence is visible to our
	 * loads of head and of the announcements from here on. */
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0)
		return -errno;
	ch->fence_synced = true;
	return 0;
}

/* The fence leaves CUT for `state` (STANDBY): the cut is over. */
static void sb_fence_leave_cut(shmbus_channel *ch, uint32_t state)
{
	uint32_t old = load_relaxed32(&ch->hdr->fence);

	/* R26: pairs with A26 in being_cut(): a subscriber that finds the
	 * fence no longer CUT finds the cut's head, seq and handoff. */
	store_release32(&ch->hdr->fence, ((old >> 8) + 1) << 8 | state);
}

/* Whether any multi producer announces a claim. */
static bool claims_announced(struct shmbus_channel *ch)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];

		/* A7: pairs with R7 (the slot's ACTIVE store). */
		if (owner_state(load_acquire64(&s->owner)) ==
		    SHMBUS_SLOT_FREE)
			continue;
		/* A6: pairs with R6 (the announcement, and its withdrawal
		 * after the commit). */
		if (load_acquire64(&s->claim_pos) != UINT64_MAX)
			return true;
	}
	return false;
}

int sb_fence_quiesce(shmbus_channel *ch, uint64_t from, int64_t timeout_ns,
		     uint64_t *end)
{
	int64_t deadline = sb_now_ns() + timeout_ns;

	for (;;) {
		/* A12: pairs with R12 (MP) or with the single producer's
		 * store of head, which F4 made visible. */
		uint64_t head = load_acquire64(&ch->hdr->head);

		if (head % SHMBUS_REC_ALIGN)
			return -EBADMSG;
		if (!(ch_multi(ch) && claims_announced(ch)) &&
		    sb_committed_end(ch, from, UINT64_MAX) == head &&
		    /* A12 again: head has not moved during the walk. */
		    load_acquire64(&ch->hdr->head) == head) {
			*end = head;
			return 0;
		}
		if (sb_now_ns() >= deadline)
			return -ETIMEDOUT;
		sched_yield();
	}
}

/*
 * A ring just closed (a primary that lost its lease stands by): waits
 * until no live producer holds a claim open on it, as sb_fence_quiesce()
 * does, except that claims of producers that died are left to
 * sb_apply_recover(), which cuts them off.  A claim of a live producer
 * stopped between its claim and its commit would otherwise be written
 * later over records the standby's agent applies there.
 */
int sb_fence_settle(shmbus_channel *ch, int64_t timeout_ns, uint32_t *pid)
{
	int64_t deadline = sb_now_ns() + timeout_ns;

	for (;;) {
		/* A12 (see sb_fence_quiesce()). */
		uint64_t head = load_acquire64(&ch->hdr->head);
		uint32_t live = 0;

		if (ch_multi(ch)) {
			for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS && !live;
			     i++) {
				struct shmbus_prod_slot *s = &ch->prods[i];
				/* A7: pairs with R7. */
				uint64_t o = load_acquire64(&s->owner);

				/* A6: pairs with R6 (the announcement). */
				if (owner_state(o) != SHMBUS_SLOT_FREE &&
				    load_acquire64(&s->claim_pos) !=
					    UINT64_MAX &&
				    sb_pid_alive(owner_pid(o)))
					live = owner_pid(o);
			}
		} else if (sb_committed_end(ch, sb_ring_oldest(ch),
					    UINT64_MAX) != head) {
			/* No edge: a pid to ask the kernel about. */
			uint32_t sp = load_relaxed32(&ch->hdr->sp_owner) &
				      ~SHMBUS_SP_REPAIRING;

			if (sp && sb_pid_alive(sp))
				live = sp;
		}
		if (!live)
			return 0;
		*pid = live;
		if (sb_now_ns() >= deadline)
			return -ETIMEDOUT;
		sched_yield();
	}
}

/* -------------------------------------------------------- the watermark */

void sb_repl_setup(shmbus_channel *ch, uint32_t level, uint32_t flags,
		   uint64_t epoch)
{
	struct shmbus_hdr *h = ch->hdr;

	/* No edge: read by busstat and by shmbus_pub_sync() only as a
	 * description; the watermark (R14) orders what counts. */
	store_relaxed32(&h->repl_level, level);
	store_relaxed64(&h->epoch, epoch);
	store_relaxed32(&h->repl_flags, flags);
}

uint32_t sb_repl_flags(shmbus_channel *ch, uint32_t set, uint32_t clear)
{
	struct shmbus_hdr *h = ch->hdr;
	uint32_t f = load_relaxed32(&h->repl_flags);

	/* One writer (the channel's agent, or the main thread while the
	 * agent is stopped): no read-modify-write race.  No edge here:
	 * R14 in sb_repl_watermark() orders it for shmbus_pub_sync(). */
	store_relaxed32(&h->repl_flags, (f | set) & ~clear);
	return f;
}

void sb_repl_epoch(shmbus_channel *ch, uint64_t epoch)
{
	/* No edge: a description (busstat); frames carry their own. */
	store_relaxed64(&ch->hdr->epoch, epoch);
}

void sb_repl_acked(shmbus_channel *ch, uint64_t received, uint64_t applied,
		   uint64_t persisted, bool caught_up)
{
	struct shmbus_hdr *h = ch->hdr;
	struct timespec ts;

	/* No edge: R14 in sb_repl_watermark() publishes them. */
	store_relaxed64(&h->received_pos, received);
	store_relaxed64(&h->applied_pos, applied);
	store_relaxed64(&h->standby_persisted_pos, persisted);
	if (caught_up) {
		clock_gettime(CLOCK_REALTIME, &ts);
		store_relaxed64(&h->caught_up_ns,
				(uint64_t)ts.tv_sec * 1000000000u +
					(uint64_t)ts.tv_nsec);
	}
}

void sb_repl_caught_up(shmbus_channel *ch)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	/* No edge: statistics. */
	store_relaxed64(&ch->hdr->caught_up_ns,
			(uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

void sb_repl_reset_positions(shmbus_channel *ch, uint64_t pos)
{
	struct shmbus_hdr *h = ch->hdr;

	/* No edge: set while no agent runs for the channel (a role change),
	 * and only ever lowered to where the ring's records agree. */
	store_relaxed64(&h->received_pos, pos);
	store_relaxed64(&h->applied_pos, pos);
	store_relaxed64(&h->standby_persisted_pos, pos);
	store_relaxed64(&h->replicated_pos, pos);
}

void sb_repl_watermark(shmbus_channel *ch, uint64_t w)
{
	struct shmbus_hdr *h = ch->hdr;
	uint64_t cur = load_relaxed64(&h->replicated_pos);

	for (;;) {
		if (cur >= w)
			return;
		/* R14: pairs with A14 in shmbus_pub_sync() and in the
		 * subscriber's acked(): the positions and flags stored
		 * before (sb_repl_acked(), sb_repl_flags()) are visible to
		 * whoever sees the watermark. */
		if (cas_weak_seqcst64(&h->replicated_pos, &cur, w))
			break;
	}
	/* F5: pairs with F5 in shmbus_pub_sync(): either the waiter's
	 * re-check sees the watermark, or we see its count and wake it. */
	fence_seqcst();
	if (load_relaxed32(&h->ack_waiters)) {
		/* No edge beyond F5: changing the word makes a waiter that
		 * read the old one return from FUTEX_WAIT at once. */
		add_seqcst32(&h->ack_futex, 1);
		syscall(SYS_futex, &h->ack_futex, FUTEX_WAKE, INT_MAX, NULL,
			NULL, 0);
	}
	/* F3: as after a commit (wake_if_sleepers()): a subscriber that
	 * sees only acknowledged messages sleeps on the channel's futex. */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(ch);
}

void sb_repl_hole(shmbus_channel *ch, uint64_t lo, uint64_t hi)
{
	/* No edge: R14 publishes it with the watermark that passes it. */
	store_relaxed64(&ch->hdr->hole_lo, lo);
	store_relaxed64(&ch->hdr->hole_hi, hi);
}

void sb_repl_read(shmbus_channel *ch, struct sb_repl_view *v)
{
	const struct shmbus_hdr *h = ch->hdr;

	/* No edge: statistics. */
	v->watermark = load_relaxed64(&h->replicated_pos);
	v->epoch = load_relaxed64(&h->epoch);
	v->received = load_relaxed64(&h->received_pos);
	v->applied = load_relaxed64(&h->applied_pos);
	v->persisted = load_relaxed64(&h->standby_persisted_pos);
	v->local_persisted = load_relaxed64(&h->persisted_pos);
	v->hole_lo = load_relaxed64(&h->hole_lo);
	v->hole_hi = load_relaxed64(&h->hole_hi);
	v->caught_up_ns = load_relaxed64(&h->caught_up_ns);
	v->level = load_relaxed32(&h->repl_level);
	v->flags = load_relaxed32(&h->repl_flags);
	v->fence = SHMBUS_FENCE_STATE(load_relaxed32(&h->fence));
	v->head = load_relaxed64(&h->head);
	v->seq = load_relaxed64(&h->seq);
	v->frames = load_relaxed64(&h->repl_frames);
	v->bad = load_relaxed64(&h->repl_bad);
	v->gaps = load_relaxed64(&h->repl_gaps);
	v->gap_bytes = load_relaxed64(&h->repl_gap_bytes);
	v->out_of_sync = load_relaxed64(&h->repl_out_of_sync);
}

void sb_repl_count(shmbus_channel *ch, enum sb_repl_counter c, uint64_t n)
{
	struct shmbus_hdr *h = ch->hdr;
	uint64_t *p = c == SB_REPL_FRAMES ? &h->repl_frames
		    : c == SB_REPL_BAD	  ? &h->repl_bad
		    : c == SB_REPL_GAPS	  ? &h->repl_gaps
		    : c == SB_REPL_GAP_BYTES ? &h->repl_gap_bytes
					     : &h->repl_out_of_sync;

	add_relaxed64(p, n);
}

/* The agent waits for work: a kick from shmbus_pub_sync(), or its nap's
 * end.  Returns the kick word seen, to pass back next time. */
uint32_t sb_repl_agent_wait(shmbus_channel *ch, uint32_t seen,
			    int64_t nap_ns)
{
	struct shmbus_hdr *h = ch->hdr;
	struct timespec ts = { nap_ns / 1000000000, nap_ns % 1000000000 };
	/* No edge: a missed kick costs at most one nap. */
	uint32_t k = load_relaxed32(&h->kick);

	if (k == seen && nap_ns > 0)
		syscall(SYS_futex, &h->kick, FUTEX_WAIT, k, &ts, NULL, 0);
	return load_relaxed32(&h->kick);
}

void sb_repl_kick(shmbus_channel *ch)
{
	/* No edge: a hint, as in shmbus_pub_sync(). */
	add_seqcst32(&ch->hdr->kick, 1);
	syscall(SYS_futex, &ch->hdr->kick, FUTEX_WAKE, 1, NULL, NULL, 0);
}

bool sb_repl_sync_waiting(shmbus_channel *ch)
{
	/* No edge: whether to spin rather than nap. */
	return load_relaxed32(&ch->hdr->sync_waiters) != 0;
}

/* Look this long in shmbus_pub_sync() before sleeping (yielding the
 * CPU between looks): a few round trips between two hosts on one
 * switch. */
#define SYNC_SPIN_NS	INT64_C(100000)

/* The position our committed records end at. */
static uint64_t sync_target(const struct shmbus_pub *pub)
{
	if (pub->claimed)
		return pub->c_pos;
	return pub->multi ? pub->won_end : pub->head;
}

uint64_t sb_level_pos(const struct shmbus_hdr *h, uint32_t level,
		      uint64_t committed)
{
	uint64_t sp = load_relaxed64(&h->standby_persisted_pos),
		 lp = load_relaxed64(&h->persisted_pos);

	/* No edge of its own: read after A14 by shmbus_pub_sync(), as
	 * statistics by busstat. */
	switch (level) {
	case SHMBUS_ACK_RECEIVED:
		return load_relaxed64(&h->received_pos);
	case SHMBUS_ACK_APPLIED:
		return load_relaxed64(&h->applied_pos);
	case SHMBUS_ACK_PERSISTED:
		return lp;
	case SHMBUS_ACK_STANDBY_PERSISTED:
		return sp;
	case SHMBUS_ACK_BOTH_PERSISTED:
		return sp < lp ? sp : lp;
	default:
		return committed;
	}
}

/* What the watermark w says about target: 0 earned at the channel's
 * level, SHMBUS_SYNC_DEGRADED if only because the standby is out of sync,
 * or 1 + ... nothing (-EAGAIN) if not reached. */
static int sync_verdict(const struct shmbus_hdr *h, uint64_t w,
			uint64_t from, uint64_t target)
{
	uint32_t level;
	uint64_t got, lo, hi;

	if (w < target)
		return -EAGAIN;
	/* After A14: the positions the watermark was computed from, and the
	 * last gap, recorded before the standby acknowledged past it. */
	level = load_relaxed32(&h->repl_level);
	got = sb_level_pos(h, level, w);
	lo = load_relaxed64(&h->hole_lo);
	hi = load_relaxed64(&h->hole_hi);
	/* Records of ours in the gap never reached the standby (or the
	 * journal). */
	if (level != SHMBUS_ACK_LOCAL && lo < hi && lo < target && hi > from)
		return SHMBUS_SYNC_DEGRADED;
	return got >= target ? 0 : SHMBUS_SYNC_DEGRADED;
}

SHMBUS_EXPORT int shmbus_pub_sync(shmbus_pub *pub, int64_t timeout_ns)
{
	struct shmbus_hdr *h;
	uint64_t target, w;
	int64_t now, start, deadline;
	int rc;

	if (!pub)
		return -EINVAL;
	h = pub->hdr;
	target = sync_target(pub);
	/* No edge: the channel's configuration, set before it is handed
	 * out and changed only by a reload. */
	if (!(load_relaxed32(&h->repl_flags) &
	      (SHMBUS_REPL_ON | SHMBUS_REPL_JOURNAL)))
		return 0;
	/* A14: pairs with R14 in sb_repl_watermark(). */
	w = load_acquire64(&h->replicated_pos);
	if ((rc = sync_verdict(h, w, pub->synced, target)) != -EAGAIN)
		goto done;
	start = sb_now_ns();
	deadline = timeout_ns < 0 ? INT64_MAX : start + timeout_ns;
	/* Tell the agent: ship now, and spin while we wait.  No edge: hints;
	 * a kick missed costs the agent's nap. */
	add_seqcst32(&h->sync_waiters, 1);
	/* No edge (see above).  Every agent that waits on it: the
	 * replication agent and the journal's. */
	add_seqcst32(&h->kick, 1);
	syscall(SYS_futex, &h->kick, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
	for (;;) {
		uint32_t f;

		/* A14 (see above). */
		w = load_acquire64(&h->replicated_pos);
		if ((rc = sync_verdict(h, w, pub->synced, target)) != -EAGAIN)
			break;
		/* No edge: a standby's agent no longer advances this
		 * host's watermark for its own producers. */
		f = SHMBUS_FENCE_STATE(load_relaxed32(&h->fence));
		if (f == SHMBUS_FENCE_STANDBY || f == SHMBUS_FENCE_CUT) {
			rc = -EROFS;
			break;
		}
		now = sb_now_ns();
		if (now >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		/* Yield, not spin: the acknowledgement needs the agent's
		 * threads to run, on the CPU we would hold (bench_repl, two
		 * CPUs: 9.2 us a round trip against 30 us with cpu_relax()). */
		if (now - start < SYNC_SPIN_NS) {
			sched_yield();
			continue;
		}
		/* No edge of its own: the futex word before the re-check, as
		 * a sleeping subscriber reads the channel's (sleep_wait()). */
		f = load_seqcst32(&h->ack_futex);
		/* F5's store side: the count, then the fence. */
		add_seqcst32(&h->ack_waiters, 1);
		/* F5: pairs with F5 in sb_repl_watermark(). */
		fence_seqcst();
		/* A14 (see above). */
		w = load_acquire64(&h->replicated_pos);
		if (w < target) {
			int64_t left = deadline - now;
			struct timespec ts = { left / 1000000000,
					       left % 1000000000 };

			/* Wake up now and then anyway: the fence is not a
			 * futex word. */
			if (left > 10000000)
				ts = (struct timespec){ 0, 10000000 };
			syscall(SYS_futex, &h->ack_futex, FUTEX_WAIT, f, &ts,
				NULL, 0);
		}
		/* No edge: we re-check ourselves. */
		sub_seqcst32(&h->ack_waiters, 1);
	}
	/* No edge: a hint to the agent. */
	sub_seqcst32(&h->sync_waiters, 1);
done:
	if (rc == 0)
		pub->synced = target;
	return rc;
}

/* ---------------------------------------------------------- shipping */

uint64_t sb_committed_end(shmbus_channel *ch, uint64_t from, uint64_t most)
{
	return sb_committed_end_marked(ch, from, most, NULL);
}

uint64_t sb_committed_end_marked(shmbus_channel *ch, uint64_t from,
				 uint64_t most, struct sb_marks *mk)
{
	/* A12: head bounds the walk; no record past it is ours to read. */
	uint64_t head = load_acquire64(&ch->hdr->head), to;

	if (from > head || head - from > ch->cap)
		return from;
	to = head - from > most ? from + most : head;
	return sb_committed_walk(ch, from, to, mk);
}

void sb_marks_reset(struct sb_marks *mk, uint64_t from, uint64_t step)
{
	mk->lo = mk->n = 0;
	mk->step = step;
	mk->last = from;
}

uint64_t sb_marks_take(struct sb_marks *mk, uint64_t from, uint64_t most)
{
	uint64_t m = 0;

	while (mk->lo < mk->n && mk->at[mk->lo] <= from)
		mk->lo++;
	while (mk->lo < mk->n && mk->at[mk->lo] - from <= most)
		m = mk->at[mk->lo++];
	return m;
}

uint64_t sb_ring_head(shmbus_channel *ch)
{
	/* No edge: compared only; positions read from it are walked by
	 * their commit words (A1). */
	return load_relaxed64(&ch->hdr->head);
}

uint64_t sb_ring_oldest(shmbus_channel *ch)
{
	uint64_t head = sb_ring_head(ch), pos;

	sb_sub_find_oldest(ch, head, &pos);
	return pos;
}

int sb_ring_span(shmbus_channel *ch, uint64_t from, uint64_t to,
		 struct iovec iov[2])
{
	uint64_t i = from & ch->mask, n = to - from;

	if (to < from || n > ch->cap)
		return -EINVAL;
	iov[0].iov_base = ch->data + i;
	iov[0].iov_len = n < ch->cap - i ? n : ch->cap - i;
	iov[1].iov_base = ch->data;
	iov[1].iov_len = n - iov[0].iov_len;
	return iov[1].iov_len ? 2 : 1;
}

bool sb_ring_has_record(shmbus_channel *ch, uint64_t pos)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->hdr->head), w;

	if (pos % SHMBUS_REC_ALIGN || pos > head)
		return false;
	if (pos == head)
		return true;
	if (!not_overwritten(ch, pos, head))
		return false;
	/* A1: pairs with R1 (commit_store()). */
	w = load_acquire64(&rec_at(ch, pos)->commit);
	return word_tag(w) == lap_tag(ch, pos) && sb_ring_holds(ch, pos);
}

uint64_t sb_ring_pad_at(shmbus_channel *ch, uint64_t pos)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->hdr->head), w, size;

	if (pos % SHMBUS_REC_ALIGN || pos >= head ||
	    !not_overwritten(ch, pos, head))
		return 0;
	/* A1: pairs with R1 (commit_store()). */
	w = load_acquire64(&rec_at(ch, pos)->commit);
	if (word_tag(w) != lap_tag(ch, pos) || word_type(w) != SHMBUS_REC_PAD ||
	    word_len(w) % SHMBUS_REC_ALIGN)
		return 0;
	size = SHMBUS_REC_ALIGN + word_len(w);
	if ((pos & ch->mask) + size > ch->cap || size > head - pos ||
	    !sb_ring_holds(ch, pos))
		return 0;
	return size;
}

bool sb_ring_holds(shmbus_channel *ch, uint64_t from)
{
	uint64_t head;

	/* A2: pairs with R2: if a producer's claim overwrote any byte we
	 * read (or the kernel copied for us) before this, head shows it. */
	fence_acquire();
	head = load_relaxed64(&ch->hdr->head);
	return not_overwritten(ch, from, head);
}

/* ----------------------------------------------------------- applying */

/* The standby's writer: a producer handle that only its agent uses,
 * which waits for the standby's own subscribers like a producer does
 * and ignores the fence (the fence refuses everyone else). */
struct shmbus_pub *sb_writer_open(shmbus_channel *ch, int64_t timeout_ns)
{
	struct shmbus_pub *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	sb_pub_init(w, ch);
	w->multi = false;	/* no producer slots to respect */
	w->agent = true;
	w->limit = ch_overwrite(ch) ? UINT64_MAX : 0;
	w->timeout_ns = timeout_ns;
	return w;
}

void sb_writer_reset(struct shmbus_pub *w)
{
	w->limit = ch_overwrite(w->ch) ? UINT64_MAX : 0;
}

void sb_writer_close(struct shmbus_pub *w)
{
	free(w);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

int sb_apply_check(shmbus_channel *ch, uint64_t pos, const uint8_t *buf,
		   size_t len, struct sb_frame *f, char *why, size_t whylen)
{
	uint64_t o = 0, last_seq = 0, n = 0, nbytes = 0;
	uint64_t last_pos = UINT64_MAX, last_word = 0;
	bool have_seq = false;

	if (pos % SHMBUS_REC_ALIGN || len % SHMBUS_REC_ALIGN ||
	    len > max_need(ch)) {
		snprintf(why, whylen, "position %llu or length %zu not "
			 "aligned, or the length exceeds half the ring",
			 (unsigned long long)pos, len);
		return -EBADMSG;
	}
	while (o < len) {
		uint64_t p = pos + o, w = get64(buf + o), size, seq;
		uint32_t type = word_type(w), l = word_len(w);

		if (word_tag(w) != lap_tag(ch, p)) {
			snprintf(why, whylen, "record at %llu: lap tag %u, "
				 "expected %u", (unsigned long long)p,
				 word_tag(w), lap_tag(ch, p));
			return -EBADMSG;
		}
		if (type == SHMBUS_REC_PAD) {
			size = SHMBUS_REC_ALIGN + (uint64_t)l;
			if (l % SHMBUS_REC_ALIGN) {
				snprintf(why, whylen, "padding at %llu: length "
					 "%u", (unsigned long long)p, l);
				return -EBADMSG;
			}
		} else if (type == SHMBUS_REC_MSG || type == SHMBUS_REC_SKIP) {
			if (l > ch->max_msg) {
				snprintf(why, whylen, "record at %llu: length "
					 "%u over max_msg %u",
					 (unsigned long long)p, l, ch->max_msg);
				return -EBADMSG;
			}
			size = rec_size(l);
			if (size > len - o) {
				snprintf(why, whylen, "record at %llu runs "
					 "past the frame",
					 (unsigned long long)p);
				return -EBADMSG;
			}
			seq = get64(buf + o + 8);
			if (have_seq && seq <= last_seq) {
				snprintf(why, whylen, "record at %llu: "
					 "sequence %llu after %llu",
					 (unsigned long long)p,
					 (unsigned long long)seq,
					 (unsigned long long)last_seq);
				return -EBADMSG;
			}
			have_seq = true;
			last_seq = seq;
			last_pos = p;
			last_word = w;
			nbytes += l;
			n += type == SHMBUS_REC_MSG;
		} else {
			snprintf(why, whylen, "record at %llu: type %u",
				 (unsigned long long)p, type);
			return -EBADMSG;
		}
		if ((p & ch->mask) + size > ch->cap || size > len - o) {
			snprintf(why, whylen, "record at %llu crosses the "
				 "ring's end or the frame's",
				 (unsigned long long)p);
			return -EBADMSG;
		}
		o += size;
	}
	*f = (struct sb_frame){ .nmsgs = n, .nbytes = nbytes,
				.last_seq = last_seq, .last_pos = last_pos,
				.last_word = last_word };
	return 0;
}

/*
 * Writes records checked by sb_apply_check() at [pos, pos + len), pos
 * being the ring's head: the claim as a single producer makes it (head,
 * R2, the word after, the hand-off, the index), then each record's bytes
 * and its commit word last (R1), in order, then the post and the wake.
 */
int sb_apply(struct shmbus_pub *wr, uint64_t pos, const uint8_t *buf,
	     size_t len, const struct sb_frame *f)
{
	struct shmbus_channel *ch = wr->ch;
	struct shmbus_hdr *h = ch->hdr;
	uint64_t q = pos + len;
	int64_t deadline = 0;
	unsigned spins = 0;
	int rc;

	/* No edge: we are head's only writer on a standby. */
	if (load_relaxed64(&h->head) != pos)
		return -ESTALE;
	if (!len)
		return 0;
	while (!ch_overwrite(ch) &&
	       (rc = sb_make_room(wr, pos, q, &deadline, &spins)))
		if (rc < 0)
			return rc;
	store_relaxed64(&h->head, q);
	/* R2: pairs with A2 (the overwrite reader's check): the claim is
	 * visible before any byte of it changes. */
	fence_release();
	store_relaxed64(&rec_at(ch, q)->commit, 0);
	if (f->last_pos != UINT64_MAX)
		store_relaxed64(&h->seq, f->last_seq + 1);
	store_relaxed64(&h->bytes, load_relaxed64(&h->bytes) + f->nbytes);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&h->handoff, q);
	if ((pos ^ q) >> ch->seg_log2)
		sb_seg_index(ch, pos, q);
	/* Every byte of the frame but the first record's commit word, in one
	 * copy (two where the frame wraps), then that word, last: a reader
	 * reaches the frame only through its first record (the index points
	 * past the frame, and its first word was zeroed by the claim before
	 * it), so it finds all of it or nothing, as a batch (design.md §3,
	 * sb_write_batch()).  One copy instead of one a record, and no walk
	 * but the check's: 32-byte records applied at several times the
	 * rate. */
	{
		uint64_t i = (pos & ch->mask) + 8, first = ch->cap - i;

		if (first >= len - 8) {
			memcpy(ch->data + i, buf + 8, len - 8);
		} else {
			memcpy(ch->data + i, buf + 8, first);
			memcpy(ch->data, buf + 8 + first, len - 8 - first);
		}
	}
	commit_store(rec_at(ch, pos), get64(buf));
	add_relaxed64(&h->repl_frames, 1);
	/* As sp_committed(): the post's hint after the commits. */
	fence_compiler();
	/* No edge: a hint (see sp_committed()). */
	if (!ch_multi(ch) && f->last_pos != UINT64_MAX &&
	    load_relaxed64(&h->mbox_want))
		mbox_post(ch->mbox, rec_at(ch, f->last_pos), f->last_pos,
			  f->last_word, f->last_seq);
	/* F3: pairs with F3 in sleep_wait(), as wake_if_sleepers(). */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(ch);
	return 0;
}

/* The resync index after the ring was set back to end: an entry that
 * names a position past end names a record that is gone.  Its segment
 * start b (the one below it of its slot, within half a ring: the
 * readers' rule) is at or below end: end is a record boundary whose word
 * is zeroed, and the entry says so; past end: nothing, until a claim
 * crosses b again. */
static void seg_index_cut(struct shmbus_channel *ch, uint64_t end)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2;

	for (uint32_t k = 0; k < SHMBUS_NSEG; k++) {
		/* No edge: nobody reads the index while the ring is cut
		 * back (its fence), or before an agent starts. */
		uint64_t e = load_relaxed64(&ch->segs[k].pos), b;

		if (e <= end)
			continue;
		b = e & ~(seg - 1);
		while (((b >> ch->seg_log2) & (SHMBUS_NSEG - 1)) != k && b)
			b -= seg;
		store_relaxed64(&ch->segs[k].pos, b <= end ? end : 0);
	}
}

/* The mailbox names nothing past end any more (0: mark_behind()). */
static void mbox_cut(struct shmbus_channel *ch, uint64_t end)
{
	/* No edge, as seg_index_cut(). */
	if (ch->mbox && load_relaxed64(&ch->mbox->mark) > end)
		store_relaxed64(&ch->mbox->mark, 0);
}

uint64_t sb_apply_recover(shmbus_channel *ch)
{
	struct shmbus_hdr *h = ch->hdr;
	/* No edge: no agent runs yet; we are head's only writer. */
	uint64_t head = load_relaxed64(&h->head), oldest, end;

	if (head % SHMBUS_REC_ALIGN)
		return UINT64_MAX;
	sb_sub_find_oldest(ch, head, &oldest);
	end = sb_committed_until(ch, oldest, head);
	if (end == head)
		return head;
	/* An apply (or a cut) stopped short: nothing past end was
	 * committed, so nobody read it.  Head returns to end, and the index
	 * and the mailbox name nothing past it. */
	seg_index_cut(ch, end);
	mbox_cut(ch, end);
	store_relaxed64(&h->head, end);
	store_relaxed64(&rec_at(ch, end)->commit, 0);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&h->handoff, end);
	return end;
}

/* The longest padding record's length field. */
#define PAD_MAX	((uint64_t)SHMBUS_LEN_MASK & ~(uint64_t)(SHMBUS_REC_ALIGN - 1))

int sb_apply_restart(struct shmbus_pub *wr, uint64_t pos)
{
	struct shmbus_channel *ch = wr->ch;
	struct shmbus_hdr *h = ch->hdr;
	/* No edge: we are head's only writer. */
	uint64_t end = load_relaxed64(&h->head), p;

	int64_t deadline = 0;
	unsigned spins = 0;
	int rc;

	if (pos < end || pos % SHMBUS_REC_ALIGN)
		return -EINVAL;
	if (pos == end)
		return 0;
	/* Less than a lap ahead: the standby's own subscribers keep what
	 * they have not read, as for any claim. */
	while (!ch_overwrite(ch) && pos + SHMBUS_REC_ALIGN <= end + ch->cap &&
	       (rc = sb_make_room(wr, end, pos, &deadline, &spins)))
		if (rc < 0)
			return rc;
	store_relaxed64(&h->head, pos);
	/* R2: pairs with A2: readers that copied bytes here see head. */
	fence_release();
	store_relaxed64(&rec_at(ch, pos)->commit, 0);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&h->handoff, pos);
	sb_seg_index(ch, pos - end > ch->cap ? pos - ch->cap : end, pos);
	if (pos + SHMBUS_REC_ALIGN <= end + ch->cap) {
		/* Less than a lap: readers at end would wait there for
		 * ever; padding from end to pos sends them on, the first
		 * piece committed last (see sb_apply()).  The gap is the
		 * agent's to count and log. */
		uint64_t cuts[64], n = 0;

		for (p = end; p < pos && n < 64;) {
			uint64_t k = pos - p, room = ch->cap - (p & ch->mask);

			if (k > room)
				k = room;
			if (k - SHMBUS_REC_ALIGN > PAD_MAX)
				k = PAD_MAX + SHMBUS_REC_ALIGN;
			cuts[n++] = p;
			p += k;
		}
		for (uint64_t i = n; i-- > 0;) {
			uint64_t e = i + 1 < n ? cuts[i + 1] : pos;

			sb_commit_rec(ch, cuts[i], SHMBUS_REC_PAD,
				      (uint32_t)(e - cuts[i] - SHMBUS_REC_ALIGN));
		}
	}
	/* Else readers find themselves lapped, and count the loss. */
	/* F3: as after a commit. */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(ch);
	return 0;
}

/* ------------------------------------------------------------ the cut */

/* Why a subscriber slot keeps the ring from being cut at pos, or NULL. */
static const char *slot_in_the_way(struct shmbus_sub_slot *s, uint64_t pos,
				   uint32_t *pid)
{
	/* A7: pairs with R7 (the slot's owner store). */
	uint64_t o = load_acquire64(&s->owner);

	*pid = owner_pid(o);
	switch (owner_state(o)) {
	case SHMBUS_SLOT_FREE:
	case SHMBUS_SLOT_JOURNAL:	/* the caller stopped the agent */
		return NULL;
	case SHMBUS_SLOT_GROUP:
		/* A5: pairs with R5 (the group's floor). */
		return load_acquire64(&s->pos) > pos ?
			       "a consumer group acknowledged records past "
			       "the cut" : NULL;
	default:
		return sb_pid_alive(*pid) ? "a subscriber reads the channel"
					  : "a dead subscriber's slot is not "
					    "released yet";
	}
}

int sb_ring_cut_begin(shmbus_channel *ch, uint64_t pos, uint64_t *end,
		      char *why, size_t n)
{
	uint32_t prev = sb_fence_get(ch);
	uint64_t oldest, at;

	if (prev == SHMBUS_FENCE_OPEN) {
		snprintf(why, n, "the channel takes writes here");
		return -EBUSY;
	}
	if (sb_fence_set(ch, SHMBUS_FENCE_CUT)) {
		snprintf(why, n, "membarrier(2) refused: a claim may be in "
			 "flight");
		sb_fence_leave_cut(ch, prev);
		return -EBUSY;
	}
	/* F7: pairs with F7 in shmbus_sub_open(), sb_slot_take_group() and
	 * shmbus_group_join(): a subscriber or member whose slot we do not
	 * see below sees the fence and gives its slot back. */
	fence_seqcst();
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint32_t pid;
		const char *w = slot_in_the_way(&ch->subs[i], pos, &pid);

		if (w) {
			snprintf(why, n, "%s (slot %u, pid %u)", w, i, pid);
			sb_fence_leave_cut(ch, prev);
			return -EBUSY;
		}
	}
	sb_cut_release_dead(ch, (uint32_t)getpid());
	oldest = sb_ring_oldest(ch);
	if (sb_fence_quiesce(ch, oldest, INT64_C(100000000), &at)) {
		snprintf(why, n, "a producer holds a claim open");
		sb_fence_leave_cut(ch, prev);
		return -EBUSY;
	}
	/* pos must be a record boundary: reached by walking the records
	 * from the oldest (below the oldest, everything held goes). */
	if (pos % SHMBUS_REC_ALIGN || pos > at ||
	    (pos > oldest && sb_committed_until(ch, oldest, pos) != pos)) {
		snprintf(why, n, "%llu is not a record boundary of this ring "
			 "(it holds %llu..%llu)", (unsigned long long)pos,
			 (unsigned long long)oldest, (unsigned long long)at);
		sb_fence_leave_cut(ch, prev);
		return -EINVAL;
	}
	*end = at;
	return 0;
}

void sb_ring_cut_abort(shmbus_channel *ch, uint32_t fence)
{
	sb_fence_leave_cut(ch, fence);
}

/* What names positions past pos besides the records, set back to it:
 * the cursors of groups and the journal, the replication line, the
 * journal's positions, a recorded gap. */
static void cut_clamp(struct shmbus_channel *ch, uint64_t pos)
{
	struct shmbus_hdr *h = ch->hdr;

	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		/* No edge: the slot's owner state is read to choose. */
		uint32_t st = owner_state(load_relaxed64(&s->owner));

		if ((st == SHMBUS_SLOT_JOURNAL || st == SHMBUS_SLOT_GROUP) &&
		    load_relaxed64(&s->pos) > pos)
			/* R5: pairs with A5 (the next agent's, producers'
			 * scans). */
			store_release64(&s->pos, pos);
	}
	if (load_relaxed64(&h->replicated_pos) > pos)
		sb_repl_reset_positions(ch, pos);
	if (load_relaxed64(&h->persisted_pos) > pos)
		store_relaxed64(&h->persisted_pos, pos);
	if (load_relaxed64(&h->jnl_written) > pos)
		sb_jnl_written(ch, pos);
	/* A gap recorded in the tail is gone with it. */
	if (load_relaxed64(&h->hole_hi) > pos)
		sb_repl_hole(ch, 0, 0);
}

/* The size of the record committed at p in this lap (0: none, or one
 * that would cross the ring's end), and its seq in *seq if it has one. */
static uint64_t committed_rec(struct shmbus_channel *ch, uint64_t p,
			      uint64_t *seq)
{
	/* No edge: the ring is being cut, or not read yet (the callers). */
	uint64_t w = load_relaxed64(&rec_at(ch, p)->commit), size;

	if (word_tag(w) != lap_tag(ch, p))
		return 0;
	if (word_type(w) == SHMBUS_REC_PAD) {
		size = SHMBUS_REC_ALIGN + word_len(w);
	} else {
		size = rec_size(word_len(w));
		*seq = load_relaxed64(&rec_at(ch, p)->seq);
	}
	return (p & ch->mask) + size > ch->cap ? 0 : size;
}

void sb_ring_cut_end(shmbus_channel *ch, uint64_t pos, uint32_t fence)
{
	struct shmbus_hdr *h = ch->hdr;
	/* No edge in what follows unless labelled: the fence says CUT, and
	 * sb_ring_cut_begin() found nobody else reading or writing. */
	uint64_t head = load_relaxed64(&h->head), oldest = sb_ring_oldest(ch);
	uint64_t p = pos > oldest ? pos : oldest, seq = UINT64_MAX;

	/* What names records past pos goes first, the records after: a cut
	 * stopped half way leaves a ring that ends at pos once
	 * sb_apply_recover() has run, and nothing pointing past it. */
	seg_index_cut(ch, pos);
	mbox_cut(ch, pos);
	while (p < head) {
		uint64_t s = UINT64_MAX, size = committed_rec(ch, p, &s);

		if (!size)
			break;
		if (seq == UINT64_MAX)
			seq = s;
		store_relaxed64(&rec_at(ch, p)->commit, 0);
		p += size;
	}
	/* The next message takes the first removed one's number. */
	if (seq != UINT64_MAX)
		store_relaxed64(&h->seq, seq);
	store_relaxed64(&rec_at(ch, pos)->commit, 0);
	store_relaxed64(&h->head, pos);
	/* R3: pairs with A3' in the subscriber's trusted(): the word at pos
	 * is zeroed. */
	store_release64(&h->handoff, pos);
	cut_clamp(ch, pos);
	sb_fence_leave_cut(ch, fence);
}

bool sb_ring_cut_finish(shmbus_channel *ch, uint64_t *end)
{
	struct shmbus_hdr *h = ch->hdr;
	uint64_t e, p, seq = UINT64_MAX;

	if (sb_fence_get(ch) != SHMBUS_FENCE_CUT)
		return false;
	/* No edge: no agent runs yet, nobody else reads (the fence says
	 * CUT).  The ring ends where its committed records do (the cut
	 * cleared the commit words from pos on, first to last); the index
	 * and the mailbox then name nothing past it. */
	e = sb_apply_recover(ch);
	if (e == UINT64_MAX)
		return false;	/* a corrupt head: the agent refuses it */
	for (p = sb_ring_oldest(ch); p < e;) {
		uint64_t size = committed_rec(ch, p, &seq);

		if (!size)
			break;
		p += size;
	}
	if (seq != UINT64_MAX)
		store_relaxed64(&h->seq, seq + 1);
	cut_clamp(ch, e);
	sb_fence_leave_cut(ch, SHMBUS_FENCE_STANDBY);
	*end = e;
	return true;
}
