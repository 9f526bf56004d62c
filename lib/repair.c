/* SPDX-License-Identifier: MIT */
/*
 * repair.c - crash repair: releasing dead slots, and turning the claims of
 * dead producers into padding so that subscribers move past them.
 *
 * Multi producer.  Claims are handed over in ring order (the hand-off,
 * docs/design.md §4): prod_line.handoff == x means that every claim
 * before x has handed over and the claim that starts at x has not.  A
 * claim whose producer died is repaired in one of two ways:
 *
 *   - it had not handed over: once the hand-off reaches it, whoever waits
 *     behind it (a producer, or shmbusd) adopts its slot, does the
 *     hand-off for it and pads the whole claim (sb_handoff_help());
 *   - it had handed over and died writing: shmbusd adopts its slot and
 *     pads what it did not commit (sb_repair_prod()).
 *
 * Three things make that safe against the live processes around it:
 *
 *   - the hand-off never passes a live producer's claim, however long it
 *     is stopped: so a claim the hand-off has passed has had the word at
 *     its start zeroed by the claim before it, and nobody zeroes it again;
 *   - a dead slot is adopted (owner CAS from the dead pid to the
 *     repairer's) before anything is written: one repairer per claim, and
 *     a repairer that dies in turn leaves a slot naming a dead pid, which
 *     the next one adopts and repairs again (every step is idempotent);
 *   - the adopted slot keeps its claim_pos until the repair is done, so no
 *     producer claims a lap past it: a repairer however slow never writes
 *     into the next lap.
 *
 * The pieces of padding are committed last to first: every committed
 * record is followed by a committed or zeroed word (docs/design.md §3).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "contract.h"
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
	/* A subscriber asleep at the dead claim, which the commits behind
	 * it woke in vain, wakes and steps over it now. */
	sb_wake_check(ch);
}

void sb_wake_check(struct shmbus_channel *ch)
{
	/* F3, as in wake_if_sleepers() after a commit: pairs with F3 in
	 * shmbus_wait(). */
	fence_seqcst();
	if (load_relaxed32(&ch->hdr->sleepers))
		sb_prod_wake(ch);
}

uint64_t sb_committed_until(struct shmbus_channel *ch, uint64_t p,
			    uint64_t to)
{
	while (p < to) {
		/* A1: pairs with R1 (commit_store()). */
		uint64_t w = load_acquire64(&rec_at(ch, p)->commit);
		uint32_t type = word_type(w), len = word_len(w);
		uint64_t size = rec_bytes(type, len);

		/* Padding or a gap of a length no record has ends the walk
		 * as a claim not committed does: past it, every position
		 * would be misaligned.  A record of an impossible type or
		 * length is walked over by its length, as damage that
		 * subscribers stop at (-EBADMSG) and a repair leaves. */
		if (word_tag(w) != lap_tag(ch, p) ||
		    (type_word_only(type) && len % SHMBUS_REC_ALIGN) ||
		    (p & ch->mask) + size > ch->cap || size > to - p)
			return p;
		p += size;
	}
	return to;
}

/*
 * Single producer: where the walk over committed records starts.  The
 * index entry of the last segment start below head that names a record
 * boundary before head: a claim's end, so everything before it is
 * committed (a single producer commits its claims in order), and the
 * dead producer's last claim, which ends at head, lies after it.  The
 * walk covers at most that segment and the claim (about 100 us for the
 * 1 MiB segments of a 64 MiB ring of 32-byte records).  Without such an
 * entry, the oldest record boundary, and the walk covers up to a lap.
 */
static uint64_t sp_walk_start(struct shmbus_channel *ch, uint64_t head)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2, oldest, b, e;

	sb_sub_find_oldest(ch, head, &oldest);
	b = head & ~(seg - 1);
	for (uint32_t k = 0; k < SHMBUS_NSEG && b > oldest; k++, b -= seg) {
		/* A4: pairs with R4 in sb_seg_index().  Checked as
		 * sb_sub_find_oldest() checks it, and before head. */
		e = load_acquire64(
			&ch->segs[(b >> ch->seg_log2) & (SHMBUS_NSEG - 1)].pos);
		if (e >= b && e < head && e - b <= ch->cap / 2 &&
		    e % SHMBUS_REC_ALIGN == 0)
			return e;
	}
	return oldest;
}

/* A walk from x towards head by the rules a standby applies records by
 * (this lap's tag, a known shape, inside the ring) whose messages number
 * on by one, as a single producer's do, below the channel's next number:
 * where it stops; how many records it passed; the first and the last
 * message number it saw (UINT64_MAX: none). */
struct swalk {
	uint64_t stop, nrec, first, last;
};

static struct swalk strict_walk(struct shmbus_channel *ch, uint64_t x,
				uint64_t head)
{
	/* No edge: the ring's producer is dead; A1 below orders the rest. */
	uint64_t next = load_relaxed64(&ch->pl->seq);
	struct swalk r = { x, 0, UINT64_MAX, UINT64_MAX };

	while (r.stop < head) {
		/* A1: pairs with R1 (commit_store()). */
		uint64_t w = load_acquire64(&rec_at(ch, r.stop)->commit), s;
		uint32_t type = word_type(w), len = word_len(w);
		uint64_t size = rec_bytes(type, len);

		if (word_tag(w) != lap_tag(ch, r.stop) ||
		    !rec_shape_ok(type, len, ch->max_msg) ||
		    (r.stop & ch->mask) + size > ch->cap ||
		    size > head - r.stop)
			break;
		if (!type_word_only(type)) {
			/* No edge: ordered after A1 above. */
			s = load_relaxed64(&rec_at(ch, r.stop)->seq);
			if (s >= next || (r.last != UINT64_MAX &&
					  s != r.last + 1))
				break;
			if (r.first == UINT64_MAX)
				r.first = s;
			r.last = s;
		}
		r.nrec++;
		r.stop += size;
	}
	return r;
}

/* At most this many walks from positions after the damage that pass a
 * record look for the records after it: bytes of a payload that read as
 * a record cost one walk each, never a walk from every position. */
#define AFTER_TRIES 8

/* One candidate (committed_after()): -1 if the walk from x passes no
 * record; else whether it is the records after the damage. */
static int after_from(struct shmbus_channel *ch, uint64_t x, uint64_t head,
		      uint64_t before, uint64_t next)
{
	struct swalk r = strict_walk(ch, x, head);

	if (r.nrec == 0)
		return -1;
	if (r.first == UINT64_MAX ||
	    (before != UINT64_MAX && r.first <= before))
		return 0;	/* no message, or a payload's bytes */
	/* No edge: A1 in strict_walk() read the words before it. */
	return r.stop == head ? r.last + 1 == next
			      : load_relaxed64(&rec_at(ch, r.stop)->commit) == 0;
}

/* Whether committed records follow the damaged header at `end`: a walk
 * that passes messages numbered after those before the damage (`before`,
 * the last number there; UINT64_MAX: unknown), from a position within
 * the longest record after it or from the next lap's start, and ends at
 * head with the channel's newest message, or at a word that is zero (the
 * dead producer's claim, not committed). */
static bool committed_after(struct shmbus_channel *ch, uint64_t end,
			    uint64_t head, uint64_t before)
{
	uint64_t most = rec_size(ch->max_msg), lap = (end | ch->mask) + 1;
	/* No edge: the producer is dead. */
	uint64_t next = load_relaxed64(&ch->pl->seq);
	int tries = 0, r;

	for (uint64_t x = end + SHMBUS_REC_ALIGN;
	     x < head && x - end <= most && tries < AFTER_TRIES;
	     x += SHMBUS_REC_ALIGN) {
		r = after_from(ch, x, head, before, next);
		if (r == 1)
			return true;
		tries += r == 0;
	}
	return lap < head && lap - end > most &&
	       after_from(ch, lap, head, before, next) == 1;
}

int sb_sp_repair(struct shmbus_channel *ch, uint64_t *damaged)
{
	/* A11: ordered after the sp_owner CAS that gave us the role. */
	uint64_t head = load_acquire64(&ch->pl->head), start, end;

	if (head % SHMBUS_REC_ALIGN)
		return 0;	/* corrupt: shmbus_pub_open() reports it */
	start = sp_walk_start(ch, head);
	end = sb_committed_until(ch, start, head);
	if (end >= head) {
		/* Nothing to pad: but the dead producer may have died
		 * between its last commit and its wake-up call. */
		sb_wake_check(ch);
		return 0;
	}
	/* A dead producer's claim starts at a word it found zero (zeroed
	 * by the claim before it, or by the wrap's padding) and had not
	 * committed.  Anything else where the walk stopped (a torn or
	 * scribbled header, a record running past head) is damage: inside
	 * the dead claim, padded with it; but followed by committed records
	 * (up to head, or to the dead claim), it is not the dead claim's,
	 * and padding would hide them from every subscriber without a word.
	 * Nothing is padded (subscribers stop at the damage anyway), for
	 * them to stop at and the daemon to report.  No edge: A1 above. */
	if (load_relaxed64(&rec_at(ch, end)->commit) != 0 &&
	    committed_after(ch, end, head,
			    strict_walk(ch, start, end).last)) {
		if (damaged)
			*damaged = end;
		return -EBADMSG;
	}
	/* The dead producer may have died before invalidating the word
	 * after its claim or indexing it: redo both (idempotent).  We hold
	 * the role, so nobody else writes at head. */
	store_relaxed64(&rec_at(ch, head)->commit, 0);
	sb_seg_index(ch, end, head);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&ch->pl->handoff, head);
	pad_range(ch, end, head);
	add_relaxed64(&ch->hdr->repairs, 1);
	return 1;
}

uint64_t sb_sp_live_holder(struct shmbus_channel *ch, uint64_t dead,
			   uint32_t me, sb_gone_fn gone, void *gctx)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		uint64_t o = load_acquire64(&ch->prods[i].owner);
		uint32_t pid = owner_pid(o), tag = owner_tag(o);
		/* The dead holder's own slot, which looks alive to a judge
		 * by the pid alone. */
		bool deads = pid == role_pid(dead) &&
			     (!role_tag(dead) || tag == role_tag(dead));

		if (owner_state(o) == SHMBUS_SLOT_ACTIVE && pid && !deads &&
		    pid != me && !gone(gctx, pid, tag))
			return (uint64_t)tag << 32 | pid;
	}
	return 0;
}

uint32_t sb_sp_give_back(struct shmbus_channel *ch, uint64_t w,
			 uint32_t self, sb_gone_fn gone, void *gctx,
			 bool *given)
{
	bool own = role_pid(w) == (uint32_t)getpid();
	uint64_t live, cur = w;

	*given = false;
	/* A word naming our own pid: judged again, and given back, under
	 * the lock our threads take the role under (producer.c), so that a
	 * role one of them has just taken is not given away. */
	if (own && !sb_sp_role_lock_gone(ch, w)) {
		sb_sp_role_unlock();
		return 0;
	}
	live = sb_sp_live_holder(ch, w, self, gone, gctx);
	/* No edge: the word alone is restored (unless it moved meanwhile);
	 * the producer's own stores are its own to order. */
	if (live)
		*given = cas_strong_seqcst64(&ch->pl->sp_owner, &cur, live);
	if (own)
		sb_sp_role_unlock();
	return role_pid(live);
}

/* Repairs of single producers' claims running in this process.  Raised
 * before the CAS that marks a role as being repaired by our pid, lowered
 * after the one that frees it: a thread of ours that reads the mark (by a
 * seq_cst RMW of sp_owner, ordered after the raise) sees the count; one
 * that sees it lowered meanwhile judges the mark gone, and its CAS from
 * the mark fails, the role being free by then. */
static uint64_t sp_repairs_here;

bool sb_sp_repairing_here(void)
{
	return load_relaxed64(&sp_repairs_here) != 0;
}

int sb_repair_sp(struct shmbus_channel *ch, uint64_t dead, uint32_t self,
		 uint64_t *damaged)
{
	uint64_t cur = dead, mark = role_word(self, SHMBUS_SP_REPAIRING);
	bool own = role_pid(dead) == (uint32_t)getpid(), took;
	int fixed = 0;

	if (dead == 0)
		return 0;
	/* A word naming our own pid: a thread of ours may have taken the
	 * role since the caller's verdict, writing that very word, which
	 * our CAS would not tell from the dead holder's.  Judged again, and
	 * the CAS made, under the lock our threads take the role under
	 * (producer.c); judged before our repair counts. */
	if (own && !sb_sp_role_lock_gone(ch, dead)) {
		sb_sp_role_unlock();
		return 0;
	}
	add_relaxed64(&sp_repairs_here, 1);
	/* A11: pairs with R11 in shmbus_pub_close() (a role given back is
	 * 0, never `dead`) or a previous repairer's. */
	took = cas_strong_seqcst64(&ch->pl->sp_owner, &cur, mark);
	if (own)
		sb_sp_role_unlock();
	if (took) {
		fixed = sb_sp_repair(ch, damaged);
		/* R11: pairs with A11 in take_sp_role(): the role is free
		 * again, and our repair is visible to its next owner. */
		cur = mark;
		cas_strong_seqcst64(&ch->pl->sp_owner, &cur, 0);
	}
	add_relaxed64(&sp_repairs_here, UINT64_MAX);
	return fixed;
}

/* Gives an adopted slot back: its claim holds nobody back any more, and
 * the slot may be reused. */
static void release_adopted(struct shmbus_channel *ch,
			    struct shmbus_prod_slot *s)
{
	/* R6: pairs with A6 in sb_refresh_limit() and sb_handoff_help(). */
	store_release64(&s->claim_pos, UINT64_MAX);
	/* R13: pairs with A13 in take_prod_slot(): the repair above
	 * precedes the slot's reuse. */
	store_release64(&s->owner, owner_word(SHMBUS_SLOT_FREE, 0));
	sb_held_drop(ch, SB_HELD_PROD, (uint32_t)(s - ch->prods));
	add_relaxed64(&ch->hdr->reaped, 1);
	/* The dead producer may have died between its last commit and its
	 * wake-up call. */
	sb_wake_check(ch);
}

/* Makes the slot of a dead producer ours, comparing its state and the
 * dead pid in one CAS: from then on nobody else repairs it, a producer
 * waiting behind it sees a live owner, and its claim_pos still holds
 * every producer a lap behind it. */
static bool adopt(struct shmbus_channel *ch, struct shmbus_prod_slot *s,
		  uint64_t o, uint32_t self)
{
	uint32_t i = (uint32_t)(s - ch->prods);
	bool took;
	int held;

	/* Listed before our pid is in it (pid.c): another thread of ours
	 * takes it for live.  When the dead pid was ours too, the CAS
	 * below writes the word it compares: a thread of ours that
	 * adopted or took the slot since our verdict would not fail it,
	 * so the slot is judged again, under the lock the CAS is made
	 * under. */
	if (!(held = sb_held_begin(ch, SB_HELD_PROD, i, o)))
		return false;
	/* No data edge: the dead producer's stores are read after its death
	 * (and after the acquire loads named where they are read). */
	took = cas_strong_seqcst64(&s->owner, &o,
				   repairer_word(SHMBUS_SLOT_ACTIVE, self));
	sb_held_end(ch, SB_HELD_PROD, i, held, took);
	return took;
}

/* The start of the claim producer slot i announces (one it is about to
 * make, or has made and not committed), or UINT64_MAX. */
static uint64_t announced(struct shmbus_channel *ch, uint32_t i)
{
	struct shmbus_prod_slot *t = &ch->prods[i];

	/* A7: pairs with R7 (the slot's ACTIVE store). */
	if (owner_state(load_acquire64(&t->owner)) != SHMBUS_SLOT_ACTIVE)
		return UINT64_MAX;
	/* A6: pairs with R6 (the announcement before the CAS, and the
	 * release after the commit). */
	return load_acquire64(&t->claim_pos);
}

/*
 * The end of the claim that starts at x, for a claim not handed over
 * yet: where the next claim starts, or head if there is none.  The next
 * claim's producer announced its start before its CAS on head (R6, seen
 * through the acquire load of head by the caller) and keeps it until the
 * hand-off reaches it, which it has not; no claim starts between x and
 * it.  So the end is the least announced start past x, or head.  The
 * dead producer's own claim_end is not used: it may be only tentative.
 */
static uint64_t end_of_claim(struct shmbus_channel *ch, uint64_t x,
			     uint64_t head)
{
	uint64_t end = head;

	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		uint64_t c = announced(ch, i);

		if (c > x && c < end && c % SHMBUS_REC_ALIGN == 0)
			end = c;
	}
	return end;
}

/* Whether any producer announces a claim at x (any claim: x is
 * UINT64_MAX). */
static bool claim_announced(struct shmbus_channel *ch, uint64_t x)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		uint64_t c = announced(ch, i);

		if (c != UINT64_MAX && (x == UINT64_MAX || c == x))
			return true;
	}
	return false;
}

bool sb_handoff_skip(struct shmbus_channel *ch, uint64_t hv)
{
	struct shmbus_prod_line *pl = ch->pl;
	/* A12: pairs with the release part of every CAS on head: the
	 * announcement (R6) of every claim below it is seen below. */
	uint64_t head = load_acquire64(&pl->head), to;

	/* Only where producers write (not a standby's ring, nor one being
	 * cut: their writer moves the word itself). */
	if (sb_fence_get(ch) != SHMBUS_FENCE_OPEN)
		return false;
	if (hv < head) {
		/* A claim at hv made since the caller looked (head was at
		 * hv then, say): its own, announced before its CAS on head,
		 * which we saw.  Not skipped. */
		if (claim_announced(ch, hv))
			return false;
		to = end_of_claim(ch, hv, head);
	} else if (hv > head && !claim_announced(ch, UINT64_MAX) &&
		   load_acquire64(&pl->head) == head) {	/* A12 */
		/* No claim in flight, and none made since head was read:
		 * the hand-off of a quiet ring is head.  A claim announced
		 * after the scan starts at head, and is handed to. */
		to = head;
	} else {
		return false;
	}
	/* R3: pairs with A3 in await_handoff() and A3' in trusted().  The
	 * claims skipped over handed over before the word was written over
	 * (or were made before head was read and committed: end_of_claim()
	 * saw their release of claim_pos, A6). */
	return cas_strong_seqcst64(&pl->handoff, &hv, to);
}

/* Gives an adopted slot back to its dead owner, untouched: its claim is
 * not the one at the hand-off any more, and is repair_claim()'s. */
static void give_back(struct shmbus_channel *ch, struct shmbus_prod_slot *s,
		      uint64_t dead_o)
{
	/* No data edge: we wrote nothing that the next adopter reads. */
	store_release64(&s->owner, dead_o);
	sb_held_drop(ch, SB_HELD_PROD, (uint32_t)(s - ch->prods));
}

int sb_handoff_help(struct shmbus_channel *ch, uint64_t x, uint32_t self,
		    bool (*gone)(uint32_t pid, uint32_t tag))
{
	struct shmbus_hdr *h = ch->hdr;
	struct shmbus_prod_slot *dead = NULL;
	uint64_t head, dead_o = 0, end, w, exp;
	uint64_t *word;

	/* Acquire: pairs with the release part of every CAS on head, a
	 * release sequence: the announcement (R6) of every claim that
	 * starts below this head is visible in the scan below. */
	head = load_acquire64(&ch->pl->head);
	if (x % SHMBUS_REC_ALIGN || head <= x || head - x > ch->cap)
		return SB_HELP_NOBODY;	/* nothing claimed at x: corrupt */
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		uint64_t o = load_acquire64(&s->owner);

		/* A6: pairs with R6 (the announcement before the CAS). */
		if (owner_state(o) != SHMBUS_SLOT_ACTIVE ||
		    load_acquire64(&s->claim_pos) != x)
			continue;
		/* The winner of x is among the slots that announce x, and
		 * keeps announcing it until it hands over: while one of
		 * them is alive, it may be the winner (or a loser about to
		 * announce again).  Our own word is judged by the slots we
		 * hold (pid.c): one we do not was a dead process's. */
		if (sb_word_is_ours(o) ? sb_held_here(ch, SB_HELD_PROD, i)
				       : !gone(owner_pid(o), owner_tag(o)))
			return SB_HELP_LIVE;
		dead = s;
		dead_o = o;
	}
	if (!dead)
		return SB_HELP_NOBODY;
	if (!adopt(ch, dead, dead_o, self))
		return SB_HELP_LIVE;	/* someone else adopted it */
	end = end_of_claim(ch, x, head);
	word = &rec_at(ch, end)->commit;
	/* A1: pairs with R1 in the commit of the claim at end, if there is
	 * one already; only the value is used, as the CAS's expectation. */
	w = load_acquire64(word);
	/*
	 * A3: pairs with R3 (a hand-off store, or another helper's CAS).
	 * Checked after the scan and the load of w, before any write.  If
	 * the hand-off is still at x, it was at x during the scan too: the
	 * claim at end had not handed over, announced its start, and the
	 * end is exact; nobody had committed at end, so w is stale.  If it
	 * moved, x is not the hand-off's any more: the claim may have
	 * handed over itself and died writing (repair_claim()'s case), or
	 * another helper adopted a second slot announcing x and repaired
	 * it.  Either way this slot goes back as it was.
	 */
	if (load_acquire64(&ch->pl->handoff) != x) {
		give_back(ch, dead, dead_o);
		return SB_HELP_LIVE;
	}
	/* For busstat and the daemon; the claim is ours now. */
	store_relaxed64(&dead->claim_end, end);
	/*
	 * What the dead producer's hand-off would have done, then the whole
	 * claim as padding (it wrote nothing: a producer writes only after
	 * it has handed over).  The word at end first: the padding makes
	 * [x, end) reachable (§3).  A CAS from the stale value, whatever it
	 * holds (even this lap's tag): another helper may have finished
	 * meanwhile, and the claim at end committed there, which must win.
	 * Everything else below writes what any helper of x writes, and
	 * our slot keeps it all inside this lap.
	 */
	if (w != 0)	/* no edge: only the value is compared */
		cas_strong_seqcst64(word, &w, 0);
	sb_seg_index(ch, x, end);
	pad_range(ch, x, end);
	exp = x;
	/* R3: pairs with A3 in the next claimer's await_handoff() and A3'
	 * in the subscriber's trusted(): the zeroing and the index above
	 * are visible to whoever sees the hand-off at end.  Strong: a
	 * spurious failure would leave the hand-off at a claim no slot
	 * announces once ours is released. */
	if (!cas_strong_seqcst64(&ch->pl->handoff, &exp, end)) {
		release_adopted(ch, dead);
		return SB_HELP_LIVE;	/* another helper of x moved it */
	}
	add_relaxed64(&h->repairs, 1);
	release_adopted(ch, dead);
	return SB_HELP_DONE;
}

/*
 * Repairs the claim of dead producer slot s, whose owner word is `o`, and
 * releases the slot.  Returns 1 when released, 0 if someone else took the
 * slot, -EAGAIN to try again later.
 */
/* Whether a slot other than s, of a live process, announces a claim at
 * c that it won (its claim_end no longer tentative).  A live announcer
 * releases its claim_pos only after its commit (R6 after R1), so a look
 * that misses it finds the record committed.  A tentative announcement
 * at c is no owner: a live producer that loaded head before the claim at
 * c announces c until its CAS fails and it looks again, and may be
 * preempted there for as long as the scheduler likes; only the CAS's
 * winner stores its claim_end untentative, and one store of claim_end
 * (tentative) comes before each announcement. */
static bool claim_live(struct shmbus_channel *ch,
		       const struct shmbus_prod_slot *s, uint64_t c)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *t = &ch->prods[i];
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		uint64_t o = load_acquire64(&t->owner);

		/* A6: pairs with R6 (the announcement, and its release
		 * after the commit).  claim_end relaxed: its tentative
		 * store comes before the announcement; the winner's, before
		 * its R2 and its hand-off past c, which the caller's A3
		 * has seen. */
		if (t != s && owner_state(o) == SHMBUS_SLOT_ACTIVE &&
		    load_acquire64(&t->claim_pos) == c &&
		    !(load_relaxed64(&t->claim_end) &
		      SHMBUS_CLAIM_TENTATIVE) &&
		    !sb_owner_gone(o))
			return true;
	}
	return false;
}

static int repair_claim(struct shmbus_channel *ch, struct shmbus_prod_slot *s,
			uint64_t o, uint32_t self)
{
	struct shmbus_hdr *h = ch->hdr;
	uint64_t c, e, q, head = 0, r;

	/* A6: the dead process's own stores; nobody changes them now. */
	c = load_acquire64(&s->claim_pos);
	if (c != UINT64_MAX) {
		/* A12: pairs with R12, the release part of the head CAS
		 * that claimed from c. */
		head = load_acquire64(&ch->pl->head);
		/* A3: pairs with R3: every claim before the hand-off has
		 * handed over (zeroed the word at its end). */
		if (head > c && load_acquire64(&ch->pl->handoff) <= c)
			return -EAGAIN;	/* not handed over yet: that is
					 * sb_handoff_help()'s */
	}
	if (!adopt(ch, s, o, self))
		return 0;
	if (c == UINT64_MAX || head <= c)
		goto out;		/* no claim, or announced and lost */
	/* Relaxed: stored before its hand-off, which the acquire load of
	 * handoff above has seen (or a later one, through the chain of
	 * A3/R3 pairs of the claims after it). */
	e = load_relaxed64(&s->claim_end);
	q = e & ~SHMBUS_CLAIM_TENTATIVE;
	/* A tentative claim past the hand-off was lost to another
	 * producer, or won and handed over (and padded whole) by
	 * sb_handoff_help(): nothing of it is left to repair. */
	if (e & SHMBUS_CLAIM_TENTATIVE || c % SHMBUS_REC_ALIGN ||
	    q % SHMBUS_REC_ALIGN || q <= c || q - c > ch->cap ||
	    head - c > ch->cap)
		goto out;
	/* A live producer that announces the same claim is its owner: this
	 * slot's announcement was written over (a copy of that one), and
	 * padding would cover the live producer's record before its commit,
	 * which would then land behind every subscriber. */
	if (claim_live(ch, s, c))
		goto out;
	/* It handed over and died writing: pad what it did not commit.
	 * The word at q was zeroed before its hand-off, and the slot keeps
	 * every producer from claiming a lap past c until we release it. */
	r = sb_committed_until(ch, c, q);
	if (r < q) {
		pad_range(ch, r, q);
		add_relaxed64(&h->repairs, 1);
	}
out:
	release_adopted(ch, s);
	return 1;
}

/* Whether owner word o names the owner `dead` names: its pid and tag (the
 * state may have moved since, as a repair adopts). */
static bool same_owner(uint64_t o, uint64_t dead)
{
	return owner_pid(o) == owner_pid(dead) &&
	       owner_tag(o) == owner_tag(dead);
}

int sb_repair_prod(struct shmbus_channel *ch, uint32_t i, uint64_t dead,
		   uint32_t self)
{
	struct shmbus_prod_slot *s;
	uint64_t o;
	bool took;
	int held;

	if (i >= SHMBUS_MAX_PRODUCERS || owner_pid(dead) == 0)
		return 0;
	s = &ch->prods[i];
	/* A7: pairs with R7 (the slot's ACTIVE store). */
	o = load_acquire64(&s->owner);
	if (!same_owner(o, dead))
		return 0;
	if (owner_state(o) == SHMBUS_SLOT_BUSY) {
		/* Died setting the slot up (or releasing an adopted one): it
		 * announces nothing yet, and goes back to FREE.  No edge,
		 * as in adopt(), judged again as there. */
		if (!(held = sb_held_begin(ch, SB_HELD_PROD, i, o)))
			return 0;
		took = cas_strong_seqcst64(&s->owner, &o,
					   repairer_word(SHMBUS_SLOT_BUSY, self));
		sb_held_end(ch, SB_HELD_PROD, i, held, took);
		if (!took)
			return 0;
		release_adopted(ch, s);
		return 1;
	}
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE)
		return 0;
	if (!ch_multi(ch)) {
		/* A single producer's claim is sb_repair_sp()'s. */
		if (!adopt(ch, s, o, self))
			return 0;
		release_adopted(ch, s);
		return 1;
	}
	return repair_claim(ch, s, o, self);
}

int sb_repair_sub(struct shmbus_channel *ch, uint32_t i, uint64_t dead,
		  uint32_t self)
{
	struct shmbus_sub_slot *s;
	uint64_t o;
	bool took;
	int held;

	if (i >= SHMBUS_MAX_SLOTS || owner_pid(dead) == 0)
		return 0;
	s = &ch->subs[i];
	o = load_acquire64(&s->owner);	/* A7 */
	/* ACTIVE: a subscriber that died.  BUSY: one that died setting its
	 * slot up, or a repairer that died releasing it.  GROUP with a pid:
	 * the creator of a group that died before its file was in place
	 * (if the file is there, the group is whole: the slot is its). */
	if ((owner_state(o) != SHMBUS_SLOT_ACTIVE &&
	     owner_state(o) != SHMBUS_SLOT_BUSY &&
	     owner_state(o) != SHMBUS_SLOT_GROUP) || !same_owner(o, dead))
		return 0;
	if (owner_state(o) == SHMBUS_SLOT_GROUP && sb_group_claims_slot(ch, i)) {
		uint64_t w = o;

		/* No edge: only the pid goes; the slot's fields stay the
		 * group's. */
		cas_strong_seqcst64(&s->owner, &w,
				    owner_word(SHMBUS_SLOT_GROUP, 0));
		return 0;
	}
	/* The state and the dead pid in one compare, our pid in: a slot a
	 * live process took meanwhile is left alone, and if we die here the
	 * slot names us, and the next repairer takes it from us.  No edge:
	 * nothing the dead owner wrote is read but `sleeping`, below.
	 * Listed first; a dead pid that is ours too is judged again, under
	 * the lock the CAS is made under: a thread of ours may have taken
	 * the slot since the caller's verdict, writing our pid (pid.c). */
	if (!(held = sb_held_begin(ch, SB_HELD_SUB, i, o)))
		return 0;
	took = cas_strong_seqcst64(&s->owner, &o,
				   repairer_word(SHMBUS_SLOT_BUSY, self));
	sb_held_end(ch, SB_HELD_SUB, i, held, took);
	if (!took)
		return 0;
	/* A dead owner that was asleep still counts as a sleeper (it set
	 * sleeping after its increment, sleep_wait()); the exchange lets
	 * exactly one repairer undo it. */
	/* F3's counter (the store of sleep_wait()'s side, undone). */
	if (xchg_relaxed32(&s->sleeping, 0))
		sub_seqcst32(&ch->hdr->sleepers, 1);
	/* A dead owner needs no posts and no wake checks. */
	sb_mbox_unwant(ch, i);
	sb_sleep_unannounce(ch, i);
	/* R13: pairs with A13 in take_slot(): the repair precedes the
	 * slot's reuse. */
	store_release64(&s->owner, owner_word(SHMBUS_SLOT_FREE, 0));
	sb_held_drop(ch, SB_HELD_SUB, i);
	add_relaxed64(&ch->hdr->reaped, 1);
	return 1;
}

/*
 * A ring being cut back (sb_ring_cut_begin()): the slots of producers
 * that died are given back without a repair.  Whatever they claimed lies
 * at or past the cut: a standby's ring ends where its records are
 * committed (sb_apply_recover()), and the cut is at or before that end.
 * A dead single producer's role is given back too.
 */
void sb_cut_release_dead(struct shmbus_channel *ch, uint32_t self)
{
	uint64_t w;

	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];
		/* A7: pairs with R7 (the slot's ACTIVE store). */
		uint64_t o = load_acquire64(&s->owner);
		uint32_t st = owner_state(o);

		if ((st != SHMBUS_SLOT_ACTIVE && st != SHMBUS_SLOT_BUSY) ||
		    sb_owner_alive(o) || !adopt(ch, s, o, self))
			continue;
		release_adopted(ch, s);
	}
	w = load_relaxed64(&ch->pl->sp_owner);
	/* R11: pairs with A11 in take_sp_role(): the role is free, and
	 * the cut's stores are visible to its next owner.  From the word
	 * judged: one that changed since (a new owner) is left alone. */
	if (role_pid(w) && !sb_owner_alive_as(role_pid(w), role_tag(w)))
		cas_strong_seqcst64(&ch->pl->sp_owner, &w, 0);
}

static bool gone_pid(void *ctx, uint32_t pid, uint32_t tag)
{
	(void)ctx;
	return sb_owner_gone_as(pid, tag);
}

void sb_release_own_left(struct shmbus_channel *ch, bool data_too)
{
	uint32_t me = (uint32_t)getpid();
	uint64_t w;

	/* Only where producers write (not a standby's ring, nor one being
	 * cut: what was left there is settled by the fence's holder).  No
	 * edge: a change since is seen by the repairs' own CASes. */
	if (SHMBUS_FENCE_STATE(load_relaxed32(&ch->daemon->fence)) !=
	    SHMBUS_FENCE_OPEN)
		return;
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		/* A7: pairs with R7; sb_repair_sub() compares it again. */
		uint64_t o = load_acquire64(&ch->subs[i].owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE && owner_pid(o) == me &&
		    !sb_held_here(ch, SB_HELD_SUB, i))
			sb_repair_sub(ch, i, o, me);
	}
	if (!data_too)
		return;		/* a repair of a claim writes the records */
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		/* A7: pairs with R7; sb_repair_prod() compares it again. */
		uint64_t o = load_acquire64(&ch->prods[i].owner);

		if (owner_state(o) == SHMBUS_SLOT_FREE || owner_pid(o) != me ||
		    sb_held_here(ch, SB_HELD_PROD, i))
			continue;
		/* A claim not handed over is the hand-off's to pass: ours
		 * if it is at its turn, else the producers' behind it. */
		if (sb_repair_prod(ch, i, o, me) == -EAGAIN)
			/* A3: pairs with R3 (the hand-off store of the claim
			 * before it); sb_handoff_help() orders the rest. */
			sb_handoff_help(ch, load_acquire64(&ch->pl->handoff),
					me, sb_owner_gone_as);
	}
	/* No edge: the value is judged, then compared in the CAS of
	 * sb_repair_sp() (A11 there). */
	w = load_relaxed64(&ch->pl->sp_owner);
	/* Written over with our pid under a live producer (any process
	 * that maps the data file writable can): its claim is left alone,
	 * and the word to shmbusd's scan, which gives it back.  (No producer
	 * can take the role meanwhile: the word names us, alive.) */
	if (!ch_multi(ch) && role_pid(w) == me &&
	    sb_sp_role_gone(ch, w) &&
	    !sb_sp_live_holder(ch, w, me, gone_pid, NULL))
		sb_repair_sp(ch, w, me, NULL);
}
