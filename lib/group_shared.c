/* SPDX-License-Identifier: MIT */
/*
 * group_shared.c - a shared group: members claim ranges of the ring
 * without a lock, each claim held by a lease, and the floor passes a
 * claim once it is done.  docs/groups.md §2 is the protocol; the edges
 * R15-R24 and F6 are labelled on both sides (docs/design.md lists
 * them).
 *
 * The claim word {claim_pos, claim_seq} names the next range to claim and
 * its claim number; one 16-byte CAS takes [claim_pos, end) as claim
 * claim_seq, whose lease lives in slot claim_seq % window.  Claims are
 * numbered in ring order, so the window is a ring of leases in claim
 * order and the floor walks it from the oldest: the floor word
 * {floor_pos, floor_seq} moves over a claim once its lease is ACKED or
 * DEAD.  A claim number is free to take while it is less than a window
 * ahead of floor_seq; otherwise the window is full.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "group.h"

void (*sb_group_hook)(int where);
void (*sb_group_create_hook)(void);

int sb_rec_look(struct shmbus_channel *ch, uint64_t p, uint64_t fresh,
		uint32_t *type, uint32_t *len, uint64_t *seq, uint64_t *size)
{
	struct shmbus_rec *r;
	uint64_t w, head, idx = p & ch->mask;

	if (p % SHMBUS_REC_ALIGN)
		return -EBADMSG;
	/* A3': pairs with R3 (the producers' hand-off): a start taken from
	 * head is read only once the word there has been zeroed. */
	if (p == fresh && load_acquire64(&ch->pl->handoff) < p)
		return 0;
	r = rec_at(ch, p);
	/* A1: pairs with R1 (the commit store): the record's seq and
	 * payload are visible. */
	w = load_acquire64(&r->commit);
	if (word_tag(w) != lap_tag(ch, p)) {
		head = load_relaxed64(&ch->pl->head);	/* compared only */
		if (head < p)
			return -EBADMSG;
		if (head > p && !not_overwritten(ch, p, head))
			return 2;
		return 0;
	}
	*type = word_type(w);
	*len = word_len(w);
	*size = rec_bytes(*type, *len);
	if (idx + *size > ch->cap || !rec_shape_ok(*type, *len, ch->max_msg))
		return ch_overwrite(ch) ? 2 : -EBADMSG;
	*seq = type_word_only(*type) ? 0 : load_relaxed64(&r->seq);
	return 1;
}

void sb_floor_publish(struct shmbus_channel *ch, uint32_t slot, uint64_t f)
{
	uint64_t *pos = &ch->subs[slot].pos;
	uint64_t cur = load_relaxed64(pos);

	/* R5 (a group's cursor is its floor): pairs with A5 in
	 * sb_refresh_limit(): every member has finished with the records
	 * below f (their acks, R17, were acquired by the floor's walk).
	 * A monotone maximum: walkers may publish out of order. */
	while (cur < f && !cas_weak_seqcst64(pos, &cur, f))
		;
}

/*
 * Moves the floor over the done claims at its front.  Anyone may: a
 * member after an ack, the maintenance.  Returns the claims passed.
 */
unsigned sb_floor_advance(struct shmbus_group_hdr *g,
			  struct shmbus_lease_slot *leases, uint32_t wmask,
			  struct shmbus_channel *ch, uint32_t slot)
{
	unsigned n = 0;
	uint64_t fpos = 0;

	for (int steps = 0; steps < 4096; steps++) {
		uint64_t fp, fs, cp, cs, c, end;
		struct shmbus_lease_slot *l;

		sb_pair_read(&g->floor_pos, &fp, &fs);
		sb_pair_read(&g->claim_pos, &cp, &cs);
		l = &leases[fs & wmask];
		if (fs >= cs)
			break;
		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		if (load_acquire64(&l->seq) != fs)
			break;
		/* A17: pairs with R17 (the lease's last change): the
		 * holder's reads of the records are done. */
		c = load_acquire64(&l->ctl);
		if (gctl_state(c) != SHMBUS_LEASE_ACKED &&
		    gctl_state(c) != SHMBUS_LEASE_DEAD)
			break;
		/* Claims are contiguous: one that does not start where the
		 * floor is was recorded wrong (damage); the floor stays, for
		 * all to see, rather than skip messages. */
		if (load_relaxed64(&l->start) != fp)
			break;
		end = load_relaxed64(&l->end);
		/* Relaxed: head only grows; a bound, not an edge. */
		if (end < fp || end > load_relaxed64(&ch->pl->head))
			break;		/* corrupt: the floor stays */
		/* R23: pairs with A23: the walk's reads of what it passed come
		 * first. */
		if (cas_pair(&g->floor_pos, fp, fs, end, fs + 1)) {
			n++;
			fpos = end;
		}
	}
	if (n && sb_group_hook)
		sb_group_hook(SB_HOOK_FLOORED);
	if (n)
		sb_floor_publish(ch, slot, fpos);
	return n;
}

/* The message sequence number expected after claim s - 1 (for counting
 * what a lapped group lost), or UINT64_MAX if unknown. */
static uint64_t expected_after(struct shmbus_group *m, uint64_t s)
{
	if (s == load_relaxed64(&m->g->floor_seq) &&
	    load_relaxed64(&m->g->floor_pos) == load_relaxed64(
						       &m->g->fresh_pos))
		return load_relaxed64(&m->g->start_seq);
	for (uint64_t back = 1; back <= 8 && back <= s; back++) {
		struct shmbus_lease_slot *l = &m->leases[(s - back) & m->wmask];
		int spins = 0;

		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		while (load_acquire64(&l->seq) != s - back) {
			if (++spins > 10000)
				return UINT64_MAX;
			cpu_relax();
		}
		/* A claim of messages, or a lap that knew where its loss
		 * began (lapped()): where the next sequence number starts. */
		if (load_relaxed64(&l->msgs) || load_relaxed64(&l->first_seq))
			return load_relaxed64(&l->first_seq) +
			       load_relaxed64(&l->msgs);
	}
	return UINT64_MAX;
}

/*
 * The claim word {pos, seq}, read whole: seq before and after pos (every
 * change of the word bumps seq, so an unchanged seq means pos is its).
 * The floor word the same way.
 */
void sb_pair_read(uint64_t *w, uint64_t *pos, uint64_t *seq)
{
	for (;;) {
		/* A16 / A23: pairs with R16 (the claim CAS) or R23 (the
		 * floor's move): the claims below are won (their winners'
		 * intents visible), or the leases below were passed. */
		uint64_t s1 = load_acquire64(&w[1]);
		uint64_t p = load_acquire64(&w[0]);
		/* A16 / A23 again: the seq after pos. */
		uint64_t s2 = load_acquire64(&w[1]);

		if (s1 == s2) {
			*pos = p;
			*seq = s1;
			return;
		}
	}
}

/*
 * A member's intent {seq, pos}, written before its claim CAS so that the
 * maintenance can tell where a claim starts: seq goes to UINT64_MAX
 * while pos changes (a seqlock), so a reader never pairs one claim's seq
 * with another's pos.
 */
static void intent_set(struct shmbus_member *r, uint64_t s, uint64_t pos)
{
	store_relaxed64(&r->intent_seq, UINT64_MAX);
	/* R24: pairs with A24 in sb_intent_read(): the UINT64_MAX above
	 * before the new pos. */
	fence_release();
	store_relaxed64(&r->intent_pos, pos);
	/* R24: pairs with A24: pos before the seq that names it. */
	store_release64(&r->intent_seq, s);
}

static void intent_clear(struct shmbus_member *r)
{
	/* R24: pairs with A24 in sb_intent_read(). */
	store_release64(&r->intent_seq, UINT64_MAX);
}

bool sb_intent_read(struct shmbus_member *r, uint64_t *s, uint64_t *pos)
{
	/* A24: pairs with R24 (the intent's seq, stored after its pos). */
	uint64_t s1 = load_acquire64(&r->intent_seq), s2;

	*pos = load_relaxed64(&r->intent_pos);
	/* A24: pairs with R24's fence: a pos stored after s1 was replaced
	 * shows as a changed seq below. */
	fence_acquire();
	s2 = load_relaxed64(&r->intent_seq);
	*s = s1;
	return s1 == s2 && s1 != UINT64_MAX;
}

/*
 * Records the lease of claim s in its slot.  The slot's word still holds
 * the previous claim's final state (FREE, ACKED or DEAD: the floor passed
 * it); whoever changes it first by CAS records claim s, we (its winner)
 * or the maintenance (for a winner it judged dead or stuck,
 * group_maint.c), so the two never both write the slot.  Returns false
 * if the maintenance was first: the claim is no longer ours.  On true,
 * *ctlp is the word stored (its generation is the holder's).
 *
 * A recording is a CAS, then stores, then seq: one that died in between
 * leaves a word for claim s beside the previous claim's seq.  Such a word
 * is taken over here: a LEASED one of the winner `dead` (its death
 * judged by the caller), and an AVAILABLE one whose deadline names its
 * recorder, the maintenance (SB_RECORDER()), once that process is gone.
 * A live recorder, running or stopped, finishes its own: it stores after
 * its CAS without looking, so the slot must not move on under it.
 */
bool sb_lease_record(struct shmbus_group_hdr *g, struct shmbus_lease_slot *l,
		     uint64_t s, uint64_t nctl, int64_t deadline,
		     uint64_t start, uint64_t end, uint64_t first_seq,
		     uint64_t msgs, uint32_t dead, uint64_t *ctlp)
{
	for (;;) {
		/* A17: pairs with R17 (the previous claim's last change). */
		uint64_t c = load_acquire64(&l->ctl);
		uint64_t dl = load_relaxed64((uint64_t *)&l->deadline);
		uint32_t st = gctl_state(c);
		uint64_t fp, fs;

		/* A recorder that stopped before this (a winner replaced
		 * after a term, a maintenance whose lock was taken over)
		 * may come back after the floor passed s: the slot is then
		 * a later claim's, whatever its word says.  Read after the
		 * word, as take_available() does: a word of claim s + window
		 * comes only after the floor passed s. */
		sb_pair_read(&g->floor_pos, &fp, &fs);
		if (fs > s)
			return false;

		/* The previous claim's final state; or a recording of claim
		 * s that died after its CAS here and before storing seq. */
		if (load_acquire64(&l->seq) == s ||	/* A15 */
		    (st != SHMBUS_LEASE_FREE && st != SHMBUS_LEASE_ACKED &&
		     st != SHMBUS_LEASE_DEAD &&
		     !(st == SHMBUS_LEASE_LEASED && gctl_member(c) == dead) &&
		     !(st == SHMBUS_LEASE_AVAILABLE && (int64_t)dl < 0 &&
		       (int64_t)dl >= -(int64_t)UINT32_MAX &&
		       sb_pid_gone((uint32_t)-(int64_t)dl))))
			return false;
		nctl = (nctl & ~(UINT64_C(0xffffffff) << 32)) |
		       (uint64_t)(gctl_gen(c) + 1) << 32;
		/* R17: pairs with A17: ours alone from here. */
		if (cas_pair(&l->ctl, c, dl, nctl, (uint64_t)deadline))
			break;
	}
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_RECORDING);
	store_relaxed64(&l->start, start);
	store_relaxed64(&l->end, end);
	store_relaxed64(&l->first_seq, first_seq);
	store_relaxed64(&l->msgs, msgs);
	store_relaxed64((uint64_t *)&l->not_before, 0);
	/* R15: pairs with A15: the lease's fields before its seq. */
	store_release64(&l->seq, s);
	if (ctlp)
		*ctlp = nctl;
	return true;
}

/* Claim s at pos was lapped (overwrite policy): the group skips to the
 * oldest record the ring still holds and counts what it lost. */
static int lapped(struct shmbus_group *m, uint64_t pos, uint64_t s)
{
	struct shmbus_channel *ch = m->ch;
	struct shmbus_group_hdr *g = m->g;
	/* A12: pairs with R12 (the claim CAS on head). */
	uint64_t head = load_acquire64(&ch->pl->head), np, want, got;
	struct shmbus_lease_slot *l = &m->leases[s & m->wmask];
	uint32_t type, len;
	uint64_t rseq = 0, size;
	bool known;

	sb_sub_find_oldest(ch, head, &np);
	if (np <= pos)
		np = head;
	if (np == head)
		store_relaxed64(&g->fresh_pos, np);
	intent_set(m->rec, s, pos);
	/* R16: pairs with A16; it also orders our intent before it. */
	if (!cas_pair(&g->claim_pos, pos, s, np, s + 1)) {
		intent_clear(m->rec);
		return 0;
	}
	want = expected_after(m, s);
	got = sb_rec_look(ch, np, np, &type, &len, &rseq, &size) == 1 &&
	      !type_word_only(type) ? rseq : UINT64_MAX;
	/* The lap's record says what it skipped, want..got-1, so that the
	 * next lap counts from got, not from before this one (the counts
	 * add up to the whole loss, even if the record at np was
	 * overwritten meanwhile: the next lap starts from its seq). */
	known = want != UINT64_MAX && got != UINT64_MAX && got >= want;
	if (sb_lease_record(g, l, s, gctl(SHMBUS_LEASE_DEAD, SHMBUS_NO_MEMBER, 1,
				       0), 0, pos, np, known ? want : 0,
			    known ? got - want : 0, SHMBUS_NO_MEMBER, NULL)) {
		if (known)
			add_relaxed64(&g->lost, got - want);
		add_relaxed64(&g->lost_bytes, np - pos);
		store_relaxed64(&g->loss_from, pos);
		store_relaxed64(&g->loss_to, np);
	}
	intent_clear(m->rec);
	sb_floor_advance(g, m->leases, m->wmask, ch, m->slot);
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_LAPPED);
	return 0;
}

/* A lease given back (AVAILABLE), taken again: redelivery first. */
static int take_available(struct shmbus_group *m, int64_t now, uint64_t *seq,
			  uint64_t *ctl, uint64_t *start, uint64_t *end,
			  uint32_t *deliveries)
{
	struct shmbus_group_hdr *g = m->g;
	uint64_t fp, fs, cp, cs;

	sb_pair_read(&g->floor_pos, &fp, &fs);
	sb_pair_read(&g->claim_pos, &cp, &cs);
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_TAKING);
	if (cs < fs || cs - fs > m->window)
		return 0;
	for (uint64_t x = fs; x < cs; x++) {
		struct shmbus_lease_slot *l = &m->leases[x & m->wmask];
		uint64_t c, dl, n, fp2, fs2;
		uint32_t d;

		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		if (load_acquire64(&l->seq) != x)
			continue;
		/* A17: pairs with R17 (the lease's last change). */
		c = load_acquire64(&l->ctl);
		if (gctl_state(c) != SHMBUS_LEASE_AVAILABLE ||
		    (int64_t)load_relaxed64((uint64_t *)&l->not_before) > now)
			continue;
		/* The word may be claim x + window's, recorded AVAILABLE
		 * after our look at seq and before that record's own seq
		 * (sb_lease_record()): taken for x, it would hand out x's
		 * range again and ack the other claim with it.  Claim x +
		 * window exists only once the floor passed x, and its word
		 * came after that (A17 above, on the chain of R16 and the
		 * floor's CAS): a floor still at or below x says the word is
		 * x's. */
		sb_pair_read(&g->floor_pos, &fp2, &fs2);
		if (fs2 > x)
			continue;
		dl = load_relaxed64((uint64_t *)&l->deadline);
		d = gctl_deliveries(c);
		if (m->max_deliveries && d >= m->max_deliveries) {
			/* Poison: the maintenance dead-letters it. */
			/* R17: pairs with A17 (readers of the lease's word):
			 * the holder's reads come first. */
			if (cas_pair(&l->ctl, c, dl, gctl(SHMBUS_LEASE_POISON,
							  SHMBUS_NO_MEMBER, d,
							  gctl_gen(c) + 1), dl))
				add_relaxed64(&g->avail, (uint64_t)-1);
			continue;
		}
		n = gctl(SHMBUS_LEASE_LEASED, m->me, gdeliveries_add(d, 1),
			 gctl_gen(c) + 1);
		/* R17: pairs with A17 (readers of the lease's word): the
		 * holder's reads come first. */
		if (!cas_pair(&l->ctl, c, dl, n, (uint64_t)sb_after(now, m->lease_ns)))
			continue;
		/* Given back by a member that left having delivered it: not
		 * counted against max_deliveries, but flagged. */
		d = gctl_member(c) == SB_LEFT_MEMBER && d + 1 < 2
			    ? 2 : gdeliveries_add(d, 1);
		add_relaxed64(&g->avail, (uint64_t)-1);
		add_relaxed64(&g->redelivered, d > 1);
		/* Held by us now, so the slot cannot move on: it holds claim
		 * x, whose fields its seq published (A15 above). */
		*seq = x;
		*ctl = n;
		*start = load_relaxed64(&l->start);
		*end = load_relaxed64(&l->end);
		*deliveries = d;
		return 1;
	}
	/* None to take now: look again after the maintenance's next
	 * recount, not on every poll. */
	return 0;
}

/*
 * Takes a range for this member: a lease given back first, else a new
 * claim of up to `max` messages.  Returns 1 with the lease, 0 if there is
 * nothing to take (or the window is full), -EBADMSG.
 */
int sb_shared_take(struct shmbus_group *m, unsigned max, uint64_t *seq,
		   uint64_t *ctl, uint64_t *start, uint64_t *end,
		   uint32_t *deliveries)
{
	struct shmbus_channel *ch = m->ch;
	struct shmbus_group_hdr *g = m->g;
	int64_t now = 0;
	int behind = 0;

	if (load_relaxed64(&g->avail)) {	/* a hint */
		now = sb_now_ns();
		if (take_available(m, now, seq, ctl, start, end, deliveries))
			return 1;
	}
	for (int tries = 0; tries < 256; tries++) {
		struct shmbus_lease_slot *l;
		uint64_t pos, s, fs, fp;
		uint64_t fresh = load_relaxed64(&g->fresh_pos);
		uint64_t p, first = 0, size, rseq = 0, head, c, last = 0;
		uint32_t type, len, d;
		unsigned n = 0;
		int rc;

		/* The claim word first: the floor read after it can only
		 * have grown, so a claim more than a window past it is
		 * damage, and one behind it a race (every time: damage). */
		sb_pair_read(&g->claim_pos, &pos, &s);
		sb_pair_read(&g->floor_pos, &fp, &fs);
		if (fs > s) {
			behind++;
			continue;	/* the floor moved past our claim read */
		}
		/* (A cut, or a resume past a gap, moves the claim word one
		 * number on before the floor: window + 1 for a moment.) */
		if (s - fs > m->window + 1)
			return -EBADMSG;
		if (s - fs >= m->window) {
			add_relaxed64(&g->full, 1);
			return 0;
		}
		for (p = pos; n < max && p - pos < ch->cap / 2; p += size) {
			rc = sb_rec_look(ch, p, fresh, &type, &len, &rseq,
					 &size);
			if (rc < 0)
				return rc;
			if (rc == 2) {
				if (p == pos)
					goto lap;
				break;
			}
			if (rc == 0)
				break;
			if (type == SHMBUS_REC_MSG) {
				if (n++ == 0)
					first = rseq;
				last = p + size;
			}
		}
		if (p == pos)
			return 0;
		/* A claim of messages ends with its last one: padding or an
		 * aborted record after it goes to the next claim (settled at
		 * once, holding none).  The member's ack after the last
		 * message it was handed then counts: one that came while
		 * such records were still ahead was taken as early. */
		if (n)
			p = last;
		if (ch_overwrite(ch)) {
			/* A2's check: nothing we read was of a later lap. */
			fence_acquire();
			head = load_relaxed64(&ch->pl->head);
			if (!not_overwritten(ch, pos, head))
				goto lap;
		}
		/* The intent first, so that if we die (or stop) after winning,
		 * the maintenance knows where this claim starts. */
		intent_set(m->rec, s, pos);
		/* R16: pairs with A16; it also orders our intent before it. */
		if (!cas_pair(&g->claim_pos, pos, s, p, s + 1)) {
			intent_clear(m->rec);
			continue;
		}
		if (sb_group_hook)
			sb_group_hook(SB_HOOK_CLAIMED);
		if (!now)
			now = sb_now_ns();
		l = &m->leases[s & m->wmask];
		/* Below the mark a replication standby's copy was given, the
		 * primary it followed may have delivered it: flagged. */
		d = pos < load_relaxed64(&g->redeliver_below) ? 2 : 1;
		c = gctl(SHMBUS_LEASE_LEASED, m->me, d, 0);
		if (!sb_lease_record(g, l, s, c, sb_after(now, m->lease_ns), pos, p, first,
				     n, SHMBUS_NO_MEMBER, &c)) {
			/* The maintenance recorded it for someone else. */
			intent_clear(m->rec);
			continue;
		}
		intent_clear(m->rec);
		if (n == 0) {
			/* Padding or aborted records only: done at once. */
			sb_shared_settle(m, s, c, SB_SETTLE_ACK, 0);
			continue;
		}
		*seq = s;
		*ctl = c;
		*start = pos;
		*end = p;
		*deliveries = d;
		add_relaxed64(&g->redelivered, d > 1);
		return 1;
lap:
		lapped(m, pos, s);
	}
	return behind == 256 ? -EBADMSG : 0;
}

/* Ack, nack or give back the lease of claim `seq` held as `ctl`. */
int sb_shared_settle(struct shmbus_group *m, uint64_t seq, uint64_t ctl,
		     uint32_t to, int64_t delay_ns)
{
	struct shmbus_group_hdr *g = m->g;
	struct shmbus_lease_slot *l = &m->leases[seq & m->wmask];
	uint32_t d = gctl_deliveries(ctl), gen = gctl_gen(ctl);
	uint64_t n;

	if (gctl_member(ctl) != m->me || gctl_state(ctl) !=
	    SHMBUS_LEASE_LEASED)
		return -EINVAL;
	if (to == SB_SETTLE_ACK)
		n = gctl(SHMBUS_LEASE_ACKED, m->me, d, gen);
	else	/* given back or left: not counted; left: flagged */
		n = gctl(SHMBUS_LEASE_AVAILABLE, to == SB_SETTLE_LEFT ?
			 SB_LEFT_MEMBER : SHMBUS_NO_MEMBER,
			 to != SB_SETTLE_NACK && d ? d - 1 : d, gen + 1);
	for (;;) {
		uint64_t c, dl;

		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		if (load_acquire64(&l->seq) != seq)
			goto stale;
		/* A17: pairs with R17 (the lease's last change). */
		c = load_acquire64(&l->ctl);
		dl = load_relaxed64((uint64_t *)&l->deadline);
		if (c != ctl)
			goto stale;
		if (to == SB_SETTLE_NACK)	/* ours until the CAS */
			store_relaxed64((uint64_t *)&l->not_before,
					(uint64_t)sb_after(sb_now_ns(), delay_ns));
		/* R17: pairs with A17 (readers of the lease's word): the
		 * holder's reads come first. */
		if (cas_pair(&l->ctl, c, dl, n, dl))
			break;
	}
	if (to == SB_SETTLE_ACK) {
		add_relaxed64(&g->acked, 1);
		add_relaxed64(&m->rec->acked, 1);
		sb_floor_advance(g, m->leases, m->wmask, m->ch, m->slot);
	} else {
		if (to == SB_SETTLE_NACK)
			add_relaxed64(&g->nacked, 1);
		add_relaxed64(&g->avail, 1);
	}
	return 0;
stale:
	add_relaxed64(&m->rec->stale, 1);
	return -ESTALE;
}

int sb_shared_extend(struct shmbus_group *m, uint64_t seq, uint64_t ctl,
		     int64_t ns)
{
	struct shmbus_lease_slot *l = &m->leases[seq & m->wmask];

	if (gctl_member(ctl) != m->me || gctl_state(ctl) !=
	    SHMBUS_LEASE_LEASED)
		return -EINVAL;
	for (;;) {
		uint64_t c, dl;

		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		if (load_acquire64(&l->seq) != seq)
			return -ESTALE;
		/* A17: pairs with R17 (the lease's last change). */
		c = load_acquire64(&l->ctl);
		dl = load_relaxed64((uint64_t *)&l->deadline);
		if (c != ctl)
			return -ESTALE;
		/* R17: pairs with A17 (readers of the lease's word): the
		 * holder's reads come first. */
		if (cas_pair(&l->ctl, c, dl, c,
			     (uint64_t)sb_after(sb_now_ns(), ns)))
			return 0;
	}
}
