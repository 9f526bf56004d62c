/* SPDX-License-Identifier: MIT */
/*
 * publish.c - the publishing API, and what the two models share off the
 * fast path.
 *
 * Each call checks its arguments here, once, and goes on in the model's
 * file: publish_sp.c (single producer) or publish_mp.c (multi producer).
 * What both use when they wait for room (the limit, back-pressure,
 * releasing gone processes), write the index or write a batch's records
 * is here.  Labels (R = release side, A = acquire side) are listed in
 * docs/design.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "copy.h"
#include "pub.h"
#include "repair.h"

/*
 * Index entries for every segment start b with p < b <= q: the first record
 * boundary at or after b is q, the end of this claim.
 */
void sb_seg_index(struct shmbus_channel *ch, uint64_t p, uint64_t q)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2;
	uint64_t b = (p | (seg - 1)) + 1;

	/* Distances from p, so that positions near 2^64 (a head written
	 * over: damage the readers report) cannot make the walk wrap and go
	 * on for ever; and a lap of entries at most. */
	for (unsigned n = 0; n < SHMBUS_NSEG && b - p <= q - p; n++, b += seg)
		/* R4: pairs with A4 in sb_sub_find_oldest() and
		 * sp_walk_start(). */
		store_release64(&ch->segs[(b >> ch->seg_log2) &
					  (SHMBUS_NSEG - 1)].pos, q);
}

/*
 * Recomputes how far this producer may claim: one lap past the oldest
 * position something still needs.  `p` is the head it claims from.
 *
 * Multi producer, both policies: the oldest claim still being written by
 * another producer.  Without this bound a producer preempted between its
 * claim and its writes could be lapped, and would then write into the
 * next lap's records, which no reader check can see.
 * Block policy: also the slowest active subscriber's cursor.
 */
void sb_refresh_limit(struct shmbus_pub *pub, uint64_t p)
{
	struct shmbus_channel *ch = pub->ch;
	uint64_t min = p;

	if (ch_multi(ch)) {
		for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
			struct shmbus_prod_slot *s = &ch->prods[i];
			uint64_t c;

			/* A7: pairs with R7 (the slot's ACTIVE store). */
			if (owner_state(load_acquire64(&s->owner)) !=
			    SHMBUS_SLOT_ACTIVE)
				continue;
			/* A6: pairs with R6 (the claim_pos stores in
			 * claim_slow() and release_claim()). */
			c = load_acquire64(&s->claim_pos);
			if (c < min)
				min = c;
		}
	}
	if (ch_overwrite(ch)) {
		pub->limit = min + ch->cap;
		return;
	}
	/* F1: pairs with F1 in shmbus_sub_open().  Either this scan sees the
	 * new subscriber's slot, or the subscriber's load of head sees at
	 * least p and it starts at or after p, which the limit covers. */
	fence_seqcst();
	/* Every slot, not the first hdr.nsub_hwm: that count is in the
	 * control file, which every subscriber writes, and one written below
	 * a slot in use would let us write over the records that slot's
	 * subscriber is reading in place (its next look would see itself
	 * lapped, too late for the copy it holds).  Slots nobody uses are
	 * lines nobody writes: after the first scan, cache hits. */
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		uint64_t c;

		/* A7: pairs with R7 in shmbus_sub_open(): the slot's initial
		 * cursor, stored before it went ACTIVE, is visible. */
		uint64_t o = load_acquire64(&s->owner);

		/* A standby's writer does not wait for the standby's groups:
		 * their floors follow the primary's (replicated), which the
		 * primary's producers already waited for; waiting here could
		 * hold the very frame that moves them.  Nor for a replication
		 * cursor, which only a primary's agent moves (shmbusd
		 * releases it when the host stands by). */
		if (!sb_slot_gates(o) ||
		    (pub->agent && (owner_state(o) == SHMBUS_SLOT_GROUP ||
				    owner_state(o) == SHMBUS_SLOT_REPL)))
			continue;
		/* A5: pairs with R5 in publish_cursor(): the subscriber has
		 * finished reading everything below c. */
		c = load_acquire64(&s->pos);
		/* A cursor past head is damage (a write into the control
		 * file).  A subscriber's is ignored: its next read publishes
		 * a true one, and holding at it could leave a subscriber
		 * waiting at head beside a producer waiting for room.  A
		 * group's holds as a full ring until the group's next
		 * maintenance puts its floor back (sb_floor_publish()), so
		 * that its members lose nothing meanwhile.  Relaxed: head
		 * only grows, and a true cursor never passes it. */
		if (c > p && owner_state(o) == SHMBUS_SLOT_GROUP &&
		    c > load_relaxed64(&ch->pl->head))
			c = p > ch->cap ? p - ch->cap : 0;
		if (c < min)
			min = c;
	}
	pub->limit = min + ch->cap;
}


/*
 * Releases the slots of gone processes (sb_slot_gone()) that hold this
 * producer back: subscribers' cursors (block policy) and other producers'
 * claims (multi producer: one at the hand-off is handed over and padded,
 * as in await_handoff(); then those that had handed over).  shmbusd
 * does the same within milliseconds; this is what lets a channel without
 * the daemon (direct mode) recover.  The repairs are shmbusd's own
 * (repair.c): each compares the slot's state, pid and start tag in one
 * CAS, so a slot that a live process took meanwhile is left alone.  At most once
 * every REAP_EVERY_NS per handle, and only while held back: a scan asks
 * the kernel about every pid.
 */
static int reap_gone(struct shmbus_pub *pub)
{
	struct shmbus_channel *ch = pub->ch;
	uint32_t me = (uint32_t)getpid();
	int64_t now = sb_now_ns();
	int n = 0;

	if (now < pub->reap_ns)
		return 0;
	pub->reap_ns = now + REAP_EVERY_NS;
	if (!ch_overwrite(ch)) {
		/* Every slot, as sb_refresh_limit() scans them. */
		for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
			/* A7: pairs with R7; sb_repair_sub() compares the
			 * word again in its CAS. */
			uint64_t o = load_acquire64(&ch->subs[i].owner);

			if (owner_state(o) != SHMBUS_SLOT_FREE &&
			    sb_slot_gone(ch, SB_HELD_SUB, i, o))
				n += sb_repair_sub(ch, i, o, me);
		}
	}
	if (!pub->multi)
		return n;
	/*
	 * A dead producer's claim at the hand-off, made and not handed over,
	 * is sb_handoff_help()'s alone (repair_claim() leaves it).  Producers
	 * that claim after it help it in await_handoff(); but a claim that
	 * its announcement holds back here (one that wraps the ring's end,
	 * say) is never made, so we help it here, as shmbusd's scan does.  A
	 * standby's agent does not: there, the ring is the agent's alone.
	 */
	for (uint32_t k = 0; !pub->agent && k < SHMBUS_MAX_PRODUCERS; k++) {
		/* A3: pairs with R3 (the hand-off store of the claim before
		 * it); sb_handoff_help() orders the rest. */
		uint64_t x = load_acquire64(&ch->pl->handoff);

		if (sb_handoff_help(ch, x, me, sb_owner_gone_as) !=
		    SB_HELP_DONE)
			break;
		n++;
	}
	return n + sb_release_gone_producers(ch, me);
}

int sb_release_gone_producers(struct shmbus_channel *ch, uint32_t me)
{
	int n = 0;

	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		/* A7: pairs with R7; sb_repair_prod() compares it again. */
		uint64_t o = load_acquire64(&ch->prods[i].owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE &&
		    sb_slot_gone(ch, SB_HELD_PROD, i, o) &&
		    sb_repair_prod(ch, i, o, me) == 1)
			n++;
	}
	return n;
}

/*
 * A producer held back for long (a slow consumer, one that sleeps, a
 * stopped one) naps instead of yielding: after 256 spins and about a
 * thousand yields (a millisecond or more), 50 us, doubling every 16 naps
 * to 1 ms.  Yielding alone keeps a CPU busy for the whole wait (behind a
 * 10 Hz consumer, 2.97 s of CPU in 3.0 s); a nap delays the end of such a
 * wait by at most its length.
 */
#define BP_YIELDS	(256u + 1024u)

static void bp_nap(unsigned naps, int64_t left_ns)
{
	unsigned shift = naps / 16 < 5 ? naps / 16 : 5;
	int64_t ns = INT64_C(50000) << shift;	/* 50 us .. 1.6 ms */
	struct timespec ts;

	if (ns > 1000000)
		ns = 1000000;
	if (left_ns >= 0 && ns > left_ns)
		ns = left_ns;
	ts.tv_sec = 0;
	ts.tv_nsec = (long)ns;
	nanosleep(&ts, NULL);
}

static int backpressure(struct shmbus_pub *pub, int64_t *deadline,
			unsigned *spins)
{
	int64_t now;

	if (*spins == 0)
		add_relaxed64(&pub->ch->hdr->backpressure, 1);
	if (pub->timeout_ns == 0)
		return -EAGAIN;
	/* No edge: a producer held back learns of a handover now rather
	 * than after its wait; the claim's own check (F4) decides. */
	if (!pub->agent &&
	    load_relaxed32(&pub->daemon->fence) != pub->fence_word)
		return -EROFS;
	if (++*spins < 256) {
		cpu_relax();
		return 0;
	}
	now = 0;
	if (pub->timeout_ns > 0) {
		now = sb_now_ns();
		if (*deadline == 0)
			*deadline = sb_after(now, pub->timeout_ns);
		else if (now >= *deadline)
			return -ETIMEDOUT;
	}
	if (*spins < BP_YIELDS) {
		sched_yield();
		return 0;
	}
	/* A multi producer's claim is only tentative here (its CAS comes
	 * once there is room), but its announcement holds its peers a ring
	 * past it: given up for the nap, and made again by the caller's
	 * next look (mp_claim_space()).  R6: pairs with A6 in
	 * sb_refresh_limit(), as mp_release_claim(). */
	if (pub->multi && pub->slot)
		store_release64(&pub->slot->claim_pos, UINT64_MAX);
	bp_nap(*spins - BP_YIELDS, now ? *deadline - now : -1);
	return 0;
}

int sb_make_room(struct shmbus_pub *pub, uint64_t p, uint64_t q,
		 int64_t *deadline, unsigned *spins)
{
	int rc;

	if (q + SHMBUS_REC_ALIGN <= pub->limit)
		return 0;
	sb_refresh_limit(pub, p);
	if (q + SHMBUS_REC_ALIGN > pub->limit && reap_gone(pub))
		sb_refresh_limit(pub, p);
	if (q + SHMBUS_REC_ALIGN <= pub->limit)
		return 0;
	/* Overwrite, multi producer: only a peer producer's unfinished
	 * write holds us back; that is back-pressure too, under the
	 * publisher's timeout. */
	rc = backpressure(pub, deadline, spins);
	return rc ? rc : 1;
}

/*
 * Writes a batch's records from pos on (sequence numbers from seq, commit
 * words `tag` | length) and commits them, the first one last.  Readers
 * reach a batch only through its first record (the index points past a
 * claim, never into it), so they see it whole or not at all, and a
 * subscriber that has caught up cannot follow the producer record by
 * record through lines it is still writing, which makes both sides
 * crawl.  A producer that dies before the first commit leaves a claim
 * that is padded over whole (repair.c).  Returns the last record's
 * position.
 */
uint64_t sb_write_batch(struct shmbus_pub *pub, uint64_t pos, uint64_t seq,
			const struct iovec *msgs, size_t n, uint64_t tag)
{
	uint64_t first = pos, last = pos;

	for (size_t i = 0; i < n; i++) {
		struct shmbus_rec *r = pub_rec(pub, pos);
		uint32_t len = (uint32_t)msgs[i].iov_len;

		rec_write_hdr(r, seq + i);
		sb_copy(r + 1, msgs[i].iov_base, len);
		/* The word after each record is the next record's commit,
		 * stored in the next round, and after the last record the
		 * word zeroed by the claim: all before the first record's
		 * commit makes any of them reachable, which is when the
		 * invariant of docs/design.md §3 has to hold. */
		if (i > 0)
			commit_store(r, tag | len);
		last = pos;
		pos += rec_size(len);
	}
	/* R1 (commit_store()): its release orders the other records' stores
	 * and commits before it, for a reader that sees it with A1. */
	commit_store(pub_rec(pub, first), tag | (uint32_t)msgs[0].iov_len);
	return last;
}

void sb_commit_rec(struct shmbus_channel *ch, uint64_t pos, uint32_t type,
		   uint32_t len)
{
	commit_store(rec_at(ch, pos), commit_word(ch, pos, type, len));
}

/* Claims a record of `len` bytes and hands out its payload; the claim is
 * the handle's until shmbus_commit() or shmbus_abort(). */
SHMBUS_EXPORT int shmbus_claim(shmbus_pub *pub, size_t len, void **buf)
{
	if (!pub || !buf)
		return -EINVAL;
	if (pub->claimed)
		return -EBUSY;
	if (len > pub->max_msg)
		return -EMSGSIZE;
	return pub->multi ? sb_mp_claim(pub, len, buf)
			  : sb_sp_claim(pub, len, buf);
}

/* A commit or an abort without a claim: a fork's copy says -EPERM. */
static int no_claim(const struct shmbus_pub *pub)
{
	return pub && pub->forked ? -EPERM : -EINVAL;
}

SHMBUS_EXPORT int shmbus_commit(shmbus_pub *pub)
{
	if (!pub || !pub->claimed)
		return no_claim(pub);
	return pub->multi ? sb_mp_commit(pub) : sb_sp_commit(pub);
}

SHMBUS_EXPORT int shmbus_abort(shmbus_pub *pub)
{
	if (!pub || !pub->claimed)
		return no_claim(pub);
	return pub->multi ? sb_mp_abort(pub) : sb_sp_abort(pub);
}

SHMBUS_EXPORT int shmbus_publish(shmbus_pub *pub, const void *data,
				 size_t len)
{
	if (!pub || (!data && len))
		return -EINVAL;
	if (pub->claimed)
		return -EBUSY;
	/* The length is the model's to check (-EMSGSIZE): the single
	 * producer's front compares it with the mailbox's size first. */
	return pub->multi ? sb_mp_publish(pub, data, len)
			  : sb_sp_publish(pub, data, len);
}

static int iov_total(const struct iovec *iov, size_t n, size_t *total)
{
	size_t t = 0;

	for (size_t i = 0; i < n; i++) {
		if (iov[i].iov_len && !iov[i].iov_base)
			return -EINVAL;
		if (iov[i].iov_len > SHMBUS_MAX_MSG_LIMIT - t)
			return -EMSGSIZE;
		t += iov[i].iov_len;
	}
	*total = t;
	return 0;
}

SHMBUS_EXPORT int shmbus_publishv(shmbus_pub *pub, const struct iovec *iov,
				  int iovcnt)
{
	size_t total;
	uint8_t *buf;
	int rc;

	if (!pub || iovcnt < 0 || (iovcnt && !iov))
		return -EINVAL;
	rc = iov_total(iov, (size_t)iovcnt, &total);
	if (rc)
		return rc;
	rc = shmbus_claim(pub, total, (void **)&buf);
	if (rc)
		return rc;
	for (int i = 0; i < iovcnt; i++) {
		sb_copy(buf, iov[i].iov_base, iov[i].iov_len);
		buf += iov[i].iov_len;
	}
	return shmbus_commit(pub);
}

SHMBUS_EXPORT int shmbus_publish_batch(shmbus_pub *pub,
				       const struct iovec *msgs, size_t n)
{
	uint64_t need = 0, nbytes = 0, most;

	if (!pub || (n && !msgs) || n > INT32_MAX)
		return -EINVAL;
	if (pub->claimed)
		return -EBUSY;
	most = max_need(pub->ch);
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].iov_len > pub->max_msg)
			return -EMSGSIZE;
		if (msgs[i].iov_len && !msgs[i].iov_base)
			return -EINVAL;
		need += rec_size(msgs[i].iov_len);
		nbytes += msgs[i].iov_len;
		if (need > most)
			return -EMSGSIZE;
	}
	if (n == 0)
		return 0;
	return pub->multi ? sb_mp_batch(pub, msgs, n, need, nbytes)
			  : sb_sp_batch(pub, msgs, n, need, nbytes);
}
