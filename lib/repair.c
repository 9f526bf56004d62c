/* SPDX-License-Identifier: MIT */
/*
 * repair.c - crash repair: releasing dead slots, and turning the claims of
 * dead producers into padding so that subscribers move past them.
 *
 * A claim [c, q) that its producer will never commit is repaired by
 * committing PAD records over the part of it that is not committed yet.
 * Three things make that safe against the live processes around it:
 *
 *   - the dead slot keeps its claim_pos until the repair is done, so no
 *     producer claims a lap past c (refresh_limit()): the bytes of [c, q)
 *     cannot be reused under the repairer;
 *   - the repair waits until the claim before it has been handed over
 *     (handoff >= c): until then that claimer may still zero the word at
 *     c, which would erase our padding;
 *   - the word at q, which the dead producer should have zeroed, is only
 *     ever zeroed with a CAS from a value that is not a commit of this lap,
 *     so a successor's commit there is never lost.
 *
 * The pieces of padding are committed last to first: every committed
 * record is followed by a committed or zeroed word (docs/design.md §3).
 */
#define _GNU_SOURCE
#include <errno.h>

#include "repair.h"

/* Largest span of one PAD record (its length field is 29 bits). */
#define PAD_SPAN_MAX (UINT64_C(1) << SHMBUS_LEN_BITS)

/* Commits padding over [from, to), split at lap ends and at the length
 * limit, last piece first.  [from, to) is at most one lap. */
static void pad_range(struct shmbus_channel *ch, uint64_t from, uint64_t to)
{
	uint64_t cuts[40], p = from;	/* 16 GiB / 512 MiB + 1 */
	unsigned n = 0;

	while (p < to && n < 40) {
		uint64_t lap_left = ch->cap - (p & ch->mask);
		uint64_t len = to - p < lap_left ? to - p : lap_left;

		if (len > PAD_SPAN_MAX)
			len = PAD_SPAN_MAX;
		cuts[n++] = p;
		p += len;
	}
	while (n--) {
		uint64_t end = p;

		p = cuts[n];
		/* R1: pairs with A1 in the subscriber's peek(). */
		sb_commit_rec(ch, p, SHMBUS_REC_PAD,
			      (uint32_t)(end - p - SHMBUS_REC_ALIGN));
	}
}

/* Walks committed records from `p` (a record boundary) towards `to`;
 * returns the first position not covered by a committed record. */
static uint64_t committed_until(struct shmbus_channel *ch, uint64_t p,
				uint64_t to)
{
	while (p < to) {
		/* A1: pairs with R1 (commit_rec()). */
		uint64_t w = load_acquire64(&rec_at(ch, p)->commit);
		uint64_t size;

		if (word_tag(w) != lap_tag(ch, p))
			return p;
		size = word_type(w) == SHMBUS_REC_PAD ?
			       SHMBUS_REC_ALIGN + word_len(w) :
			       rec_size(word_len(w));
		if ((p & ch->mask) + size > ch->cap || size > to - p)
			return p;
		p += size;
	}
	return to;
}

/* Zeroes the word at pos unless it is a commit of pos's own lap. */
static void zero_stale(struct shmbus_channel *ch, uint64_t pos)
{
	uint64_t *word = &rec_at(ch, pos)->commit;
	/* A1: pairs with R1 in the successor's commit; only the value is
	 * compared, nothing behind it is read. */
	uint64_t w = load_acquire64(word);

	/* A CAS, not a store: a live successor may commit here at any
	 * moment, and its commit must win. */
	while (w != 0 && word_tag(w) != lap_tag(ch, pos))
		if (cas_strong64(word, &w, 0))
			break;
}

bool sb_sp_repair(struct shmbus_channel *ch)
{
	/* Acquire: ordered after the sp_owner CAS that gave us the role. */
	uint64_t head = load_acquire64(&ch->hdr->head), start, end;

	if (head % SHMBUS_REC_ALIGN)
		return false;	/* corrupt: shmbus_pub_open() reports it */
	sb_sub_find_oldest(ch, head, &start);
	end = committed_until(ch, start, head);
	if (end >= head)
		return false;
	/* The dead producer may have died before invalidating the word
	 * after its claim or indexing it: redo both (idempotent).  We hold
	 * the role, so nobody else writes at head. */
	store_relaxed64(&rec_at(ch, head)->commit, 0);
	sb_seg_index(ch, end, head);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&ch->hdr->handoff, head);
	pad_range(ch, end, head);
	add_relaxed64(&ch->hdr->repairs, 1);
	return true;
}

int sb_repair_sp(struct shmbus_channel *ch, uint32_t dead, uint32_t self)
{
	uint32_t cur = dead, mark = (self & ~SHMBUS_SP_REPAIRING) |
				    SHMBUS_SP_REPAIRING;
	bool fixed;

	if (dead == 0 || !cas_seqcst32(&ch->hdr->sp_owner, &cur, mark))
		return 0;
	fixed = sb_sp_repair(ch);
	/* The role is free again; the next owner's seq_cst CAS in
	 * take_sp_role() reads this one, and our repair with it. */
	cur = mark;
	cas_seqcst32(&ch->hdr->sp_owner, &cur, 0);
	return fixed;
}

/*
 * A claim announced as tentative (the producer died before marking it
 * won, or lost the CAS): decides whose the position c is.  Returns 1 if
 * the dead slot s won it, 0 if someone else did, -EAGAIN if undecided.
 */
static int tentative_owner(struct shmbus_channel *ch,
			   const struct shmbus_prod_slot *s, uint64_t c,
			   uint64_t q)
{
	uint64_t w;

	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *t = &ch->prods[i];
		uint64_t o, e;

		if (t == s)
			continue;
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		o = load_acquire64(&t->owner);
		/* A6: pairs with R6; a claim released after its commit
		 * (claim_pos = MAX) makes that commit visible to the check
		 * of the word at c below. */
		if (owner_state(o) != SHMBUS_SLOT_ACTIVE ||
		    load_acquire64(&t->claim_pos) != c)
			continue;
		e = load_acquire64(&t->claim_end);
		if (!(e & SHMBUS_CLAIM_TENTATIVE))
			return 0;	/* t won c */
		if (sb_pid_alive(owner_pid(o)) ||
		    (e & ~SHMBUS_CLAIM_TENTATIVE) != q)
			return -EAGAIN;	/* about to mark it, or ambiguous */
	}
	/* Nobody shows c as won.  A producer that won c commits its first
	 * record at c only after marking the claim, so a commit at c means
	 * another producer won it and finished. */
	w = load_acquire64(&rec_at(ch, c)->commit);	/* A1 */
	return word_tag(w) == lap_tag(ch, c) ? 0 : 1;
}

/* Repairs the claim of dead producer slot s.  Returns 0 when the slot may
 * be released, -EAGAIN to try again later. */
static int repair_claim(struct shmbus_channel *ch, struct shmbus_prod_slot *s)
{
	struct shmbus_hdr *h = ch->hdr;
	uint64_t c, e, q, head, hv, r, exp;
	int rc;

	/* The dead process's own stores: nobody changes them now. */
	c = load_acquire64(&s->claim_pos);
	e = load_acquire64(&s->claim_end);
	if (c == UINT64_MAX)
		return 0;
	q = e & ~SHMBUS_CLAIM_TENTATIVE;
	/* Acquire: pairs with the release part of the head CAS that claimed
	 * from c, so the winner's announcement (R6) is visible below. */
	head = load_acquire64(&h->head);
	if (head <= c)
		return 0;		/* announced, never claimed */
	if (c % SHMBUS_REC_ALIGN || q % SHMBUS_REC_ALIGN || q <= c ||
	    q - c > ch->cap || head - c > ch->cap)
		return 0;		/* not a claim of this ring */
	if (e & SHMBUS_CLAIM_TENTATIVE) {
		rc = tentative_owner(ch, s, c, q);
		if (rc <= 0)
			return rc;
	}
	/* A3: pairs with R3 in the claimer before us: its zeroing of the
	 * word at c is done once handoff reaches c. */
	hv = load_acquire64(&h->handoff);
	if (hv < c)
		return -EAGAIN;
	zero_stale(ch, q);
	if (hv == c) {
		/* The dead producer never handed over: do it for it. */
		sb_seg_index(ch, c, q);
		exp = c;
		/* R3: pairs with A3 in the next claimer's await_handoff().
		 * It may have taken the hand-off itself meanwhile. */
		cas_seqcst64(&h->handoff, &exp, q);
	}
	r = committed_until(ch, c, q);
	if (r < q) {
		pad_range(ch, r, q);
		add_relaxed64(&h->repairs, 1);
	}
	return 0;
}

int sb_repair_prod(struct shmbus_channel *ch, uint32_t i, uint32_t dead)
{
	struct shmbus_prod_slot *s;
	uint64_t o;
	int rc;

	if (i >= SHMBUS_MAX_PRODUCERS || dead == 0)
		return 0;
	s = &ch->prods[i];
	/* A7: pairs with R7 (the slot's ACTIVE store). */
	o = load_acquire64(&s->owner);
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE || owner_pid(o) != dead)
		return 0;
	if (ch_multi(ch)) {
		rc = repair_claim(ch, s);
		if (rc)
			return rc;
	}
	/* R6: the claim no longer holds producers back. */
	store_release64(&s->claim_pos, UINT64_MAX);
	/* Release: our repair precedes the slot's reuse.  A producer may
	 * have taken the slot over meanwhile (it has no claim now). */
	if (!cas_strong64(&s->owner, &o, owner_word(SHMBUS_SLOT_FREE, 0)))
		return 0;
	add_relaxed64(&ch->hdr->reaped, 1);
	return 1;
}

int sb_repair_sub(struct shmbus_channel *ch, uint32_t i, uint32_t dead)
{
	struct shmbus_sub_slot *s;
	uint64_t o;

	if (i >= SHMBUS_MAX_SLOTS || dead == 0)
		return 0;
	s = &ch->subs[i];
	o = load_acquire64(&s->owner);	/* A7 */
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE || owner_pid(o) != dead)
		return 0;
	/* The state and the dead pid in one compare: a slot a live process
	 * took over meanwhile is left alone. */
	if (!cas_strong64(&s->owner, &o,
			  owner_word(SHMBUS_SLOT_BUSY, dead)))
		return 0;
	/* A dead owner that was asleep still counts as a sleeper. */
	if (load_relaxed32(&s->sleeping)) {
		store_relaxed32(&s->sleeping, 0);
		sub_seqcst32(&ch->hdr->sleepers, 1);
	}
	/* Release: producers that see the slot free need nothing from it. */
	store_release64(&s->owner, owner_word(SHMBUS_SLOT_FREE, 0));
	add_relaxed64(&ch->hdr->reaped, 1);
	return 1;
}
