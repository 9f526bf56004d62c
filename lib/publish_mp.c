/* SPDX-License-Identifier: MIT */
/*
 * publish_mp.c - a multi producer's claim, commit and batch.
 *
 * A claim is a CAS on head: the check against the limit and the wrap
 * padding must be decided on the same value the claim starts from, which
 * fetch-add cannot do.  Then a short hand-off in claim order invalidates
 * the header word after the claim and hands out sequence numbers.  The
 * payload is written and committed by each producer independently, so
 * records are committed out of order, and there is no mailbox.
 *
 *   claim:   claim_pos = p, claim_end = q | TENTATIVE               R6
 *            limit checked;  CAS head p -> q                        R12
 *            fence(release)                                         R2
 *            wait for handoff == p                                  A3
 *            word at q = 0;  index;  seq, bytes;  handoff = q       R3
 *   write:   header (seq), payload
 *   commit:  commit word (release)                                  R1
 *            claim_pos = none                                       R6
 *            a subscriber may sleep: fence, sleepers, wake          F3
 *
 * Labels are listed in docs/design.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <unistd.h>

#include "channel.h"
#include "copy.h"
#include "pub.h"
#include "repair.h"

/* The claim is committed (or abandoned): peers may lap it now. */
static void mp_release_claim(struct shmbus_pub *pub)
{
	/* R6: pairs with A6 in sb_refresh_limit(); the claim is committed
	 * (or abandoned) before peers may lap it. */
	store_release64(&pub->slot->claim_pos, UINT64_MAX);
}

/* How long the hand-off may name a claim that no slot announces, the
 * word making no progress, before it is taken for written over.  In a
 * sound ring that lasts only while the claim's producer hands over
 * between our two loads. */
#define HANDOFF_CORRUPT_NS	INT64_C(20000000)	/* 20 ms */

/*
 * One look of help at a hand-off word hv that does not reach the claim
 * in turn: a dead producer's claim at it is handed over and padded on its
 * behalf (sb_handoff_help()); a word that names no claim and makes no
 * progress for HANDOFF_CORRUPT_NS is moved on (sb_handoff_skip()).
 * Neither waits on a live producer.  *high and *since (-1 to start) keep
 * the progress clock between looks: it restarts on a live claim at the
 * word, or the word higher than ever seen.
 */
static void handoff_nudge(struct shmbus_channel *ch, uint64_t hv,
			  uint64_t *high, int64_t *since)
{
	int rc = sb_handoff_help(ch, hv, (uint32_t)getpid(),
				 sb_owner_gone_as);
	int64_t now = sb_now_ns();

	if (rc != SB_HELP_NOBODY || *since < 0 || hv > *high) {
		*high = hv > *high ? hv : *high;
		*since = now;
	} else if (now - *since > HANDOFF_CORRUPT_NS) {
		sb_handoff_skip(ch, hv);
		*since = now;
	}
}

/*
 * Waits until the hand-off reaches p, the start of our claim.  It
 * normally takes a few instructions: the claimer before us hands over
 * right after its CAS.  While we wait, a claim at the hand-off whose
 * producer is gone is handed over and padded on its behalf
 * (sb_handoff_help()), whichever claim before ours it is; a live
 * producer's claim is waited for, however long it is stopped.  A word
 * that names no claim and makes no progress for HANDOFF_CORRUPT_NS (a
 * word written over, even one flipped between values) is moved on to the
 * claim whose turn it is (sb_handoff_skip()), so that it heals for every
 * later claim.  Returns false if the word is past p, which no sound ring
 * shows: the claim then goes on without handing over, leaving the word
 * at q and the hand-off alone (a claim after ours may own them).
 */
static bool await_handoff(struct shmbus_channel *ch, uint64_t p,
			  bool bounded)
{
	uint64_t hv, high = 0;
	int64_t since = -1;
	unsigned spins = 0;

	/* A3: pairs with R3 in the previous claimer's mp_claimed() (or in
	 * sb_handoff_help() or sb_handoff_skip()): the zeroing of the word
	 * at p, and the sequence numbers, are visible once we see p here. */
	while ((hv = load_acquire64(&ch->pl->handoff)) != p) {
		/* A bounded publisher claimed only with the hand-off at p
		 * (mp_claim_space()): a word moved off it since was written
		 * over, and is not waited for.  Nor is a word more than a
		 * lap behind p: no claim starts a lap past one in flight
		 * (sb_refresh_limit()), so it names no claim of this ring. */
		if (hv > p || p - hv > ch->cap || bounded)
			return false;
		if (++spins < 1024) {
			cpu_relax();
			continue;
		}
		if (spins % 64 == 0)
			handoff_nudge(ch, hv, &high, &since);
		sched_yield();
	}
	return true;
}

/* How many times a bounded publisher looks for the hand-off at head
 * before it gives up: a claim in flight hands over within a few
 * instructions of its CAS; one that does not is stopped, dead (for the
 * repair), or not a claim at all. */
#define BOUNDED_LOOKS	4096u

/*
 * A bounded publisher (shmbusd's dead letters, a direct-mode member's)
 * claims only while the hand-off is at head, p: no claim is in flight,
 * so its own will not wait on another producer's, which a process that
 * can write the header may fake for ever (a live pid announcing a claim
 * at the word).  1: it is at p; 0: look again (from head); -EAGAIN
 * after BOUNDED_LOOKS looks in all.
 */
static int handoff_at(struct shmbus_pub *pub, uint64_t p, unsigned *looks)
{
	/* A3: pairs with R3 (the previous claimer's hand-off to p): its
	 * zeroing of the word at p and the sequence numbers, which our
	 * claim then takes without await_handoff() waiting. */
	uint64_t hv = load_acquire64(&pub_pline(pub)->handoff);

	if (hv == p)
		return 1;
	if (++*looks >= BOUNDED_LOOKS)
		return -EAGAIN;
	if (*looks % 64 == 0) {
		/* A dead producer's claim, or a word written over, is
		 * healed as a waiting producer heals it (the clock kept in
		 * the handle, across calls): on a channel whose producers
		 * are all bounded (a direct-mode dead-letter channel)
		 * nobody else would. */
		handoff_nudge(pub->ch, hv, &pub->hv_high, &pub->hv_since);
		sched_yield();
	} else {
		cpu_relax();
	}
	return 0;
}

/* Claims `need` bytes: on success [*pp, *pp + *padp + need) is ours. */
static int mp_claim_space(struct shmbus_pub *pub, uint64_t need,
			  uint64_t *pp, uint64_t *padp)
{
	struct shmbus_channel *ch = pub->ch;
	struct shmbus_prod_line *pl = pub_pline(pub);
	uint64_t p, q, pad;
	int64_t deadline = 0;
	unsigned spins = 0, busy = 0;
	int rc;

	/* A fork's copy: the slot it would announce in is the parent's. */
	if (__builtin_expect(pub->forked, 0))
		return -EPERM;
	for (;;) {
		/* A12: pairs with R12, the release part of other producers'
		 * head CAS, so that their claim_pos stores made before it
		 * are seen by sb_refresh_limit(). */
		p = load_acquire64(&pl->head);
		if (p % SHMBUS_REC_ALIGN) {	/* corrupt head */
			mp_release_claim(pub);
			return -EBADMSG;
		}
		pad = (p & ch->mask) + need > ch->cap ?
			      ch->cap - (p & ch->mask) : 0;
		q = p + pad + need;
		/* R6: pairs with A6 in sb_refresh_limit(): announced before
		 * the CAS that makes the claim real, never later than the
		 * claim's start.  Tentative until the CAS is won (for
		 * shmbusd's repair). */
		store_relaxed64(&pub->slot->claim_end,
				q | SHMBUS_CLAIM_TENTATIVE);
		store_release64(&pub->slot->claim_pos, p);
		if (fence_up(pub, pub->daemon)) {
			mp_release_claim(pub);
			return -EROFS;
		}
		rc = sb_make_room(pub, p, q, &deadline, &spins);
		if (rc < 0) {
			mp_release_claim(pub);
			return rc;
		}
		if (rc)
			continue;
		if (pub->bounded && (rc = handoff_at(pub, p, &busy)) <= 0) {
			if (rc == 0)
				continue;
			mp_release_claim(pub);
			return rc;
		}
		/* The claim.  R12: its release part pairs with A12, the
		 * acquire loads of head in other producers (above),
		 * sb_handoff_help() and repair_claim(): our announcement
		 * (R6) is visible to whoever sees the claim. */
		if (cas_weak_seqcst64(&pl->head, &p, q)) {
			/* Won: ordered after the CAS by R2 below; read by
			 * shmbusd only once this process is dead. */
			store_relaxed64(&pub->slot->claim_end, q);
			pub->won_end = q;
			break;
		}
	}
	*pp = p;
	*padp = pad;
	return 0;
}

/*
 * What every claim of [p, q) does once it is ours: the hand-off, in
 * claim order, with the header word after the claim, the index and the
 * counters; then the wrap padding of `pad` bytes at p.  Returns the first
 * record's sequence number.
 */
static uint64_t mp_claimed(struct shmbus_pub *pub, uint64_t p, uint64_t pad,
			   uint64_t q, uint64_t nmsgs, uint64_t nbytes)
{
	struct shmbus_channel *ch = pub->ch;
	struct shmbus_prod_line *pl = pub_pline(pub);
	uint64_t seq;
	bool mine;

	/* R2: pairs with A2 (the fence in the subscriber's overwrite check):
	 * the claim is visible before any byte of [p, q) changes.  R28:
	 * pairs with A28 (shmbus_sub_open()'s load of seq): head is visible
	 * before our store of seq at the hand-off. */
	fence_release();
	/* The claims before ours have handed over (or the word is past p:
	 * await_handoff()). */
	mine = await_handoff(ch, p, pub->bounded);
	if (mine)
		store_relaxed64(&pub_rec(pub, q)->commit, 0);
	if (crosses_seg(pub, p, q))
		sb_seg_index(ch, p, q);
	seq = load_relaxed64(&pl->seq);
	store_relaxed64(&pl->seq, seq + nmsgs);
	store_relaxed64(&pl->bytes, load_relaxed64(&pl->bytes) + nbytes);
	/* R3: pairs with A3 in the next claimer's await_handoff(), A3 in
	 * sb_handoff_help() and sb_repair_prod(), and A3' in the
	 * subscriber's trusted(). */
	if (mine)
		store_release64(&pl->handoff, q);
	if (pad) {
		/* The padding's successor is our first record, still holding
		 * stale bytes: zero it before the padding is committed. */
		store_relaxed64(&pub_rec(pub, p + pad)->commit, 0);
		commit_store(pub_rec(pub, p),
			     commit_word(ch, p, SHMBUS_REC_PAD,
					 (uint32_t)(pad - SHMBUS_REC_ALIGN)));
	}
	return seq;
}

static int mp_reserve(struct shmbus_pub *pub, uint64_t need, uint64_t nmsgs,
		      uint64_t nbytes, uint64_t *posp, uint64_t *seqp)
{
	uint64_t p, pad;
	int rc = mp_claim_space(pub, need, &p, &pad);

	if (rc)
		return rc;
	*seqp = mp_claimed(pub, p, pad, p + pad + need, nmsgs, nbytes);
	*posp = p + pad;
	return 0;
}

/* What a commit does after its commit store: the claim released, the
 * count (n messages: 0 for an abort), the wake check. */
static void mp_committed(struct shmbus_pub *pub, uint64_t n)
{
	mp_release_claim(pub);
	if (n)
		count_published(pub, n);
	wake_if_sleepers(pub, pub->hdr);
}

int sb_mp_claim(struct shmbus_pub *pub, size_t len, void **buf)
{
	uint64_t pos, seq;
	int rc = mp_reserve(pub, rec_size(len), 1, len, &pos, &seq);

	if (rc)
		return rc;
	claim_note(pub, pub_rec(pub, pos), pos, seq, len,
		   commit_word(pub->ch, pos, SHMBUS_REC_MSG, (uint32_t)len),
		   buf);
	return 0;
}

int sb_mp_commit(struct shmbus_pub *pub)
{
	pub->claimed = false;
	commit_store(pub_rec(pub, pub->c_pos), pub->c_word);
	mp_committed(pub, 1);
	return 0;
}

/* A SKIP record keeps its length and sequence number: readers step over
 * it without counting a loss. */
int sb_mp_abort(struct shmbus_pub *pub)
{
	pub->claimed = false;
	add_relaxed64(&pub->hdr->aborts, 1);
	commit_store(pub_rec(pub, pub->c_pos),
		     commit_word(pub->ch, pub->c_pos, SHMBUS_REC_SKIP,
				 pub->c_len));
	mp_committed(pub, 0);
	return 0;
}

int sb_mp_publish(struct shmbus_pub *pub, const void *data, size_t len)
{
	struct shmbus_rec *r;
	uint64_t pos, seq;
	int rc;

	if (len > pub->max_msg)
		return -EMSGSIZE;
	rc = mp_reserve(pub, rec_size(len), 1, len, &pos, &seq);
	if (rc)
		return rc;
	r = pub_rec(pub, pos);
	rec_write_hdr(r, seq);
	sb_copy(r + 1, data, len);
	commit_store(r, commit_word(pub->ch, pos, SHMBUS_REC_MSG,
				    (uint32_t)len));
	mp_committed(pub, 1);
	return 0;
}

int sb_mp_batch(struct shmbus_pub *pub, const struct iovec *msgs, size_t n,
		uint64_t need, uint64_t nbytes)
{
	uint64_t pos, seq;
	int rc = mp_reserve(pub, need, n, nbytes, &pos, &seq);

	if (rc)
		return rc;
	/* The records of one claim lie in one lap: one tag for all. */
	sb_write_batch(pub, pos, seq, msgs, n,
		       commit_word(pub->ch, pos, SHMBUS_REC_MSG, 0));
	mp_committed(pub, n);
	return (int)n;
}
