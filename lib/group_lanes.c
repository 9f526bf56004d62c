/* SPDX-License-Identifier: MIT */
/*
 * group_lanes.c - keyed and single-active groups: the ring's records fall
 * into lanes (a keyed message by the hash of its key; single-active has
 * one lane), and each lane has one owner at a time, which delivers the
 * lane's records in ring order.  docs/groups.md §3.
 *
 * A lane's word {ctl, acked} changes with one 16-byte CAS: its owner
 * moves acked forward as it acknowledges, and the maintenance moves the
 * lane between members (group_maint.c), bumping its generation, so that
 * an owner that lost the lane can no longer move acked: its ack fails
 * with -ESTALE and the next owner starts at acked.  The owner's delivery
 * cursor is private; a lane's records in flight are those between acked
 * and it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "group.h"

uint64_t sb_msg_key(const uint8_t *data, uint32_t len)
{
	uint64_t k = 0;

	if (len >= sizeof(k))
		memcpy(&k, data, sizeof(k));
	return k;
}

uint32_t sb_lane_of(uint64_t key, uint32_t nlanes)
{
	/* Fibonacci hashing: nearby keys spread over the lanes. */
	return (uint32_t)(((key * UINT64_C(0x9e3779b97f4a7c15)) >> 32) %
			  (nlanes ? nlanes : 1));
}

static void forget(struct sb_lane_view *v)
{
	v->ctl = 0;
	v->n = 0;
	v->head = 0;
}

void sb_lanes_forget(struct shmbus_group *m)
{
	for (uint32_t i = 0; i < m->nlanes; i++)
		forget(&m->lane[i]);
}

/*
 * Whether we own lane i, refreshing our view: a lane newly ours starts
 * at its acked position, and what an earlier owner delivered beyond it
 * is flagged redelivered.
 */
static bool sync_lane(struct shmbus_group *m, uint32_t i)
{
	struct shmbus_lane *ln = &m->lanes[i];
	struct sb_lane_view *v = &m->lane[i];
	/* A18: pairs with R18 (the lane's last change). */
	uint64_t c = load_acquire64(&ln->ctl);
	uint32_t st = gctl_state(c);

	if (gctl_member(c) != m->me ||
	    (st != SHMBUS_LANE_OWNED && st != SHMBUS_LANE_REVOKING)) {
		forget(v);
		return false;
	}
	if (v->ctl && gctl_gen(v->ctl) == gctl_gen(c)) {
		v->ctl = c;	/* REVOKING, or deliveries changed */
		return true;
	}
	forget(v);
	v->ctl = c;
	v->cursor = load_relaxed64(&ln->acked);
	v->redeliver_below = load_relaxed64(&ln->next);
	v->not_before = 0;
	return true;
}

bool sb_lanes_held(struct shmbus_group *m, uint32_t i, uint32_t gen)
{
	uint64_t c;
	uint32_t st;

	if (i >= m->nlanes)
		return false;
	/* A18: pairs with R18 (the lane's last change). */
	c = load_acquire64(&m->lanes[i].ctl);
	st = gctl_state(c);
	return gctl_member(c) == m->me && gctl_gen(c) == gen &&
	       (st == SHMBUS_LANE_OWNED || st == SHMBUS_LANE_REVOKING);
}

/* Moves the lane's acked to `to` (forward only), with `c` as the new
 * word.  False if the lane is no longer ours (as we knew it). */
static bool lane_store(struct shmbus_group *m, uint32_t i, uint64_t nc,
		       uint64_t to)
{
	struct shmbus_lane *ln = &m->lanes[i];
	struct sb_lane_view *v = &m->lane[i];

	for (;;) {
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);

		if (gctl_member(c) != m->me || gctl_gen(c) != gctl_gen(v->ctl) ||
		    (gctl_state(c) != SHMBUS_LANE_OWNED &&
		     gctl_state(c) != SHMBUS_LANE_REVOKING))
			return false;
		/* Keep a REVOKING the maintenance set meanwhile. */
		nc = (nc & ~UINT64_C(0xff)) | gctl_state(c);
		if (to < a)
			to = a;
		/* R18: pairs with A18 (readers of the lane's word): the owner's
		 * reads come first. */
		if (cas_pair(&ln->ctl, c, a, nc, to)) {
			v->ctl = nc;
			return true;
		}
	}
}

/* Everything below the smallest lane's acked is done: the group's floor. */
void sb_lanes_floor(struct shmbus_group *m)
{
	sb_lanes_floor_by(m, m->ch->cap, UINT64_MAX);
}

void sb_lanes_floor_by(struct shmbus_group *m, uint64_t most, uint64_t limit)
{
	struct shmbus_group_hdr *g = m->g;
	uint64_t min = UINT64_MAX, cur;

	for (uint32_t i = 0; i < m->nlanes; i++) {
		uint64_t a;

		a = load_relaxed64(&m->lanes[i].acked);
		/* A18: pairs with R18 (the CAS that stored the acked just
		 * read: it wrote ctl and acked at once, so the lane's word
		 * loaded after acked is that CAS's or a later one's).  The
		 * owner's reads below acked happen before our floor. */
		(void)load_acquire64(&m->lanes[i].ctl);
		if (a < min)
			min = a;
	}
	cur = load_relaxed64(&g->floor_pos);
	if (min == UINT64_MAX || min <= cur)
		return;
	if (min - cur > most || min > limit)
		return;		/* corrupt: the floor stays */
	/* R23: pairs with A23: the walk's reads of what it passed
	 * come first. */
	while (cur < min && !cas_weak_seqcst64(&g->floor_pos, &cur, min))
		;
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_FLOORED);
	sb_floor_publish(m->ch, m->slot, min);
}

/* Lets lane i go (FREE, or POISON for the maintenance), if it is still
 * ours as we knew it; retried while the maintenance changes its word
 * (to REVOKING, say) under us. */
static void give_up(struct shmbus_group *m, uint32_t i, uint32_t state)
{
	struct shmbus_lane *ln = &m->lanes[i];
	struct sb_lane_view *v = &m->lane[i];

	for (;;) {
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);

		if (gctl_member(c) != m->me || gctl_gen(c) != gctl_gen(v->ctl))
			break;
		/* R18: pairs with A18 (readers of the lane's word): the
		 * owner's reads come first. */
		if (cas_pair(&ln->ctl, c, a, gctl(state, SHMBUS_NO_MEMBER,
						  gctl_deliveries(c),
						  gctl_gen(c) + 1), a))
			break;
	}
	forget(v);
}

/* A monotone maximum of a lane's field that only its owners write: a
 * former owner resuming late never lowers it. */
static void raise_to(uint64_t *f, uint64_t v)
{
	uint64_t cur = load_relaxed64(f);

	/* No edge: a bound (the deadline) or a statistic (next). */
	while (cur < v && !cas_weak_relaxed64(f, &cur, v))
		;
}

/* Our lane i's term runs from now: we polled it or acknowledged from it
 * (a member that does neither for a term loses its lanes).  Written only
 * once less than half a term is left, so that a stream of polls and acks
 * does not write the lane's line each time. */
static void keep_lane(struct shmbus_group *m, uint32_t i, int64_t now)
{
	struct shmbus_lane *ln = &m->lanes[i];

	if (sb_elapsed((int64_t)load_relaxed64((uint64_t *)&ln->deadline),
		       now) < m->lease_ns / 2)
		raise_to((uint64_t *)&ln->deadline,
			 (uint64_t)sb_after(now, m->lease_ns));
}

/*
 * Takes the next record for us from the lanes we own, round robin over
 * them, each in ring order.  Returns 1 with *out and *lane set, 0 if
 * there is none, -EBADMSG.
 */
int sb_lanes_take(struct shmbus_group *m, struct sb_gmsg *out,
		  uint32_t *lane)
{
	struct shmbus_channel *ch = m->ch;
	uint64_t fresh = load_relaxed64(&m->g->fresh_pos);
	uint64_t stop = UINT64_MAX;
	int64_t now = sb_now_ns();

	/* We look: the maintenance gives lanes to members that do. */
	if (sb_elapsed(now, (int64_t)load_relaxed64(
				    (uint64_t *)&m->rec->looked_ns)) >
	    m->lease_ns / 4)
		store_relaxed64((uint64_t *)&m->rec->looked_ns, (uint64_t)now);
	for (uint32_t k = 0; k < m->nlanes; k++) {
		uint32_t i = (m->lane_rr + k) % m->nlanes;
		struct shmbus_lane *ln = &m->lanes[i];
		struct sb_lane_view *v = &m->lane[i];
		uint64_t p, first;
		bool moved = false;

		if (!sync_lane(m, i))
			continue;
		/* Our poll: the lane's term runs from now, moving or not
		 * (what we hold of it is ours until we ack it). */
		keep_lane(m, i, now);
		if (gctl_state(v->ctl) == SHMBUS_LANE_REVOKING) {
			/* Moving: nothing new; let go once what we hold is
			 * acknowledged. */
			if (v->n == 0)
				give_up(m, i, SHMBUS_LANE_FREE);
			continue;
		}
		if (now < v->not_before || v->n >= m->lane_cap)
			continue;
		p = first = v->cursor;
		while (p - first < ch->cap / 2) {
			uint64_t seq = 0, size, key;
			uint32_t type, len;
			const uint8_t *data;
			int rc = sb_rec_look(ch, p, fresh, &type, &len, &seq,
					     &size);

			if (rc < 0)
				return rc;
			/* A lane group is on a block channel: lapped, its
			 * cursor slot was written over (damage). */
			if (rc == 2)
				return -EBADMSG;
			if (rc != 1)	/* nothing yet */
				break;
			data = (const uint8_t *)rec_at(ch, p) + SHMBUS_REC_HDR;
			key = type == SHMBUS_REC_MSG ? sb_msg_key(data, len) : 0;
			if (type != SHMBUS_REC_MSG ||
			    sb_lane_of(key, m->nlanes) != i) {
				p += size;
				moved = true;
				continue;
			}
			/* Still ours?  (We may have been stopped while the
			 * lane moved: the next owner has it then.) */
			if (!sync_lane(m, i) ||
			    gctl_state(v->ctl) != SHMBUS_LANE_OWNED)
				goto next_lane;
			/* Ours.  At the lane's oldest unacknowledged record,
			 * the count of its deliveries decides. */
			if (v->n == 0 && m->max_deliveries &&
			    gctl_deliveries(v->ctl) >= m->max_deliveries) {
				if (moved && !lane_store(m, i, v->ctl, p))
					forget(v);
				else
					give_up(m, i, SHMBUS_LANE_POISON);
				goto next_lane;
			}
			v->starts[(v->head + v->n) % m->lane_cap] = p;
			v->n++;
			v->cursor = p + size;
			out->data = data;
			out->len = len;
			out->seq = seq;
			out->pos = p;
			out->end = p + size;
			out->key = key;
			/* The lane's count is its oldest record's; others an
			 * earlier owner had delivered count twice. */
			if (p >= v->redeliver_below)
				out->deliveries = 1;
			else if (v->n == 1 && gctl_deliveries(v->ctl) >= 1)
				out->deliveries = gctl_deliveries(v->ctl) + 1;
			else
				out->deliveries = 2;
			raise_to(&ln->next, v->cursor);
			add_relaxed64(&ln->delivered, 1);
			raise_to((uint64_t *)&ln->deadline,
				 (uint64_t)sb_after(now, m->lease_ns));
			*lane = i;
			m->lane_rr = i + 1;
			return 1;
		}
		/* Where the walk stopped (a record not committed yet, the
		 * end, or half a ring walked): a wait looks there. */
		if (p < stop)
			stop = p;
		/* Nothing of ours in what we passed: while nothing is in
		 * flight, the lane is done up to here (so the floor moves
		 * past the other lanes' records). */
		if (moved) {
			v->cursor = p;
			if (v->n == 0 && !lane_store(m, i, v->ctl, p))
				forget(v);
			else if (v->n == 0)
				sb_lanes_floor(m);
		}
next_lane:;
	}
	m->lanes_stop = stop;
	return 0;
}

/* Whether the record at pos of lane i, which we do not hold, was ours:
 * acknowledged already (below what we hold), or given back with an
 * earlier one a nack gave back (at or past the cursor, below what we had
 * delivered).  -ESTALE then; else it never was ours (-EINVAL). */
static int not_held(const struct sb_lane_view *v, uint64_t pos)
{
	if (pos >= v->cursor)
		return pos < v->redeliver_below ? -ESTALE : -EINVAL;
	return v->n == 0 || pos < v->starts[v->head] ? -ESTALE : -EINVAL;
}

/* Ack (cumulative through the record at pos), nack (the lane restarts at
 * pos after delay_ns), or give back (leave). */
int sb_lanes_settle(struct shmbus_group *m, uint32_t i, uint32_t gen,
		    uint64_t pos, uint64_t end, int what, int64_t delay_ns)
{
	struct sb_lane_view *v;
	uint64_t to, nc;
	uint32_t d;

	if (i >= m->nlanes)
		return -EINVAL;
	v = &m->lane[i];
	(void)end;
	if (!v->ctl || gctl_gen(v->ctl) != gen || !sync_lane(m, i) ||
	    gctl_gen(v->ctl) != gen) {
		add_relaxed64(&m->rec->stale, 1);
		return -ESTALE;
	}
	d = gctl_deliveries(v->ctl);
	if (what == SB_SETTLE_ACK) {
		/* Every record delivered starts below the cursor: an ack at
		 * or past it names none, and changes nothing. */
		uint32_t was = v->n;

		if (pos >= v->cursor)
			return not_held(v, pos);
		while (v->n && v->starts[v->head] <= pos) {
			v->head = (v->head + 1) % m->lane_cap;
			v->n--;
		}
		if (v->n == was)
			return 0;	/* acked already (cumulatively) */
		to = v->n ? v->starts[v->head] : v->cursor;
		nc = gctl(gctl_state(v->ctl), m->me, 0, gen);
		if (!lane_store(m, i, nc, to)) {
			forget(v);
			add_relaxed64(&m->rec->stale, 1);
			return -ESTALE;
		}
		keep_lane(m, i, sb_now_ns());
		add_relaxed64(&m->g->acked, 1);
		add_relaxed64(&m->rec->acked, 1);
		sb_lanes_floor(m);
		return 0;
	}
	/* Nack: drop what we hold from pos on and deliver it again. */
	{
		uint32_t keep = 0;
		bool oldest;

		while (keep < v->n &&
		       v->starts[(v->head + keep) % m->lane_cap] < pos)
			keep++;
		/* Only a record we hold: one acked is no longer ours (as a
		 * shared lease acked), one never delivered never was. */
		if (keep == v->n ||
		    v->starts[(v->head + keep) % m->lane_cap] != pos)
			return not_held(v, pos);
		oldest = keep == 0;
		v->n = keep;
		/* Delivered from pos on: each comes again flagged.  Given
		 * back (a read too small for it), the record at pos was
		 * never delivered, and nothing after it was taken. */
		if (what != SB_SETTLE_GIVE && v->redeliver_below < v->cursor)
			v->redeliver_below = v->cursor;
		if (what == SB_SETTLE_GIVE) {
			/* The lane's delivery mark goes back to pos too, if
			 * it is still the one our take raised it to (a
			 * former owner's raise since is left, and flags it
			 * for nothing worse than a second delivery). */
			uint64_t was = v->cursor;

			/* No edge: a statistic (see raise_to()). */
			while (!cas_weak_relaxed64(&m->lanes[i].next, &was,
						   pos) && was == v->cursor)
				;
			/* Lowered under a new owner (we were stopped after
			 * sync_lane(), it raised the mark to the same
			 * value): back up, so that it stays flagged. */
			/* A18: pairs with R18 (the lane's last change). */
			if (gctl_gen(load_acquire64(&m->lanes[i].ctl)) != gen)
				raise_to(&m->lanes[i].next, v->cursor);
		}
		v->cursor = pos;
		v->not_before = sb_after(sb_now_ns(), delay_ns);
		nc = gctl(gctl_state(v->ctl), m->me,
			  oldest && what == SB_SETTLE_NACK ? gdeliveries_add(d, 1)
							   : d, gen);
		if (!lane_store(m, i, nc, load_relaxed64(&m->lanes[i].acked))) {
			forget(v);
			add_relaxed64(&m->rec->stale, 1);
			return -ESTALE;
		}
		add_relaxed64(&m->g->nacked, what == SB_SETTLE_NACK);
		return 0;
	}
}

/* Leaving: every lane we own goes back to FREE for the others. */
void sb_lanes_leave(struct shmbus_group *m)
{
	for (uint32_t i = 0; i < m->nlanes; i++)
		if (sync_lane(m, i))
			give_up(m, i, SHMBUS_LANE_FREE);
}

/* Whether we hold the record at pos of lane i (delivered, not acked). */
static bool lane_holds(const struct shmbus_group *m, uint32_t i, uint64_t pos)
{
	const struct sb_lane_view *v = &m->lane[i];

	for (uint32_t k = 0; k < v->n; k++)
		if (v->starts[(v->head + k) % m->lane_cap] == pos)
			return true;
	return false;
}

/* Extends the term of lane i while we own it as generation gen and hold
 * the record at pos (acked: -ESTALE, as a shared lease acked).  The
 * deadline changes only from the value read before the lane was found
 * ours: an owner given the lane since (after our term passed) has its
 * deadline stored before the word that makes it the owner, so an extend
 * that resumes late never writes over it. */
int sb_lanes_extend(struct shmbus_group *m, uint32_t i, uint32_t gen,
		    uint64_t pos, int64_t ns)
{
	uint64_t *dl, d, to;

	if (i >= m->nlanes)
		return -ESTALE;
	dl = (uint64_t *)&m->lanes[i].deadline;
	/* A29: pairs with R29 (a new owner's deadline, lane_move()): a
	 * deadline read here that is not ours comes with the lane's word
	 * that says so, loaded below. */
	d = load_acquire64(dl);
	for (;;) {
		if (!sync_lane(m, i) || gctl_gen(m->lane[i].ctl) != gen ||
		    !lane_holds(m, i, pos))
			return -ESTALE;
		if (sb_group_hook)
			sb_group_hook(SB_HOOK_EXTENDING);
		to = (uint64_t)sb_after(sb_now_ns(), ns);
		/* A29 on failure (the value reloaded into d, then the
		 * lane's word again): pairs with R29.  Every deadline
		 * written after the lane left us is later than ours, which
		 * had passed: the CAS never succeeds on another owner's. */
		if (cas_strong_seqcst64(dl, &d, to))
			break;
	}
	/* The lane may have left us since the look: said, though the
	 * deadline written is ours (its next owner's is stored after). */
	return sync_lane(m, i) && gctl_gen(m->lane[i].ctl) == gen ? 0
								    : -ESTALE;
}

/* Lanes we own, for stats. */
uint32_t sb_lanes_owned(struct shmbus_group *m)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < m->nlanes; i++)
		n += m->lane[i].ctl != 0;
	return n;
}
