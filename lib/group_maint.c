/* SPDX-License-Identifier: MIT */
/*
 * group_maint.c - what a group's members cannot do for themselves: take
 * back what dead members held and leases whose term passed, resolve a
 * claim a member won and died before recording, move lanes between
 * members, and send poison records to the dead-letter channel.
 *
 * shmbusd runs it for every group at each scan; members run it from
 * their polls at most every MAINT_EVERY_NS (that is all there is in
 * direct mode).  One process at a time (hdr.maint holds its pid; a dead
 * holder's hold is taken over): this is the one lock of a group, and it
 * is never on a member's claim or ack path.  Every change it makes to a
 * lease or a lane is a CAS on the same word the members CAS, so a
 * member's concurrent ack either lands first or fails with -ESTALE.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "group.h"

#define MAINT_EVERY_NS	INT64_C(5000000)	/* 5 ms */

static bool member_gone(const struct shmbus_member *r, uint64_t *o)
{
	/* A22: pairs with R22 (the record's owner word). */
	*o = load_acquire64(&r->owner);
	return owner_state(*o) != SHMBUS_SLOT_FREE &&
	       sb_pid_gone(owner_pid(*o));
}

/* Whether member record j is still the word a maintenance judged at its
 * start (owner[j]): its verdicts are acted on only while it is.  A holder
 * stopped for MAINT_STUCK_NS is replaced, and its replacement may free the
 * record of a dead member and a new member take it, lease and lanes
 * included, before the old holder resumes. */
static bool same_record(const struct shmbus_group *m, uint32_t j,
			const uint64_t owner[SHMBUS_GROUP_MEMBERS])
{
	/* A22: pairs with R22 (the record's owner word). */
	return load_acquire64(&m->members[j].owner) == owner[j];
}

/* Gives the maintenance lock back, if it is still ours (`me`): a holder
 * replaced while it was stopped must not free its replacement's. */
static void maint_unlock(struct shmbus_group_hdr *g, uint64_t me)
{
	/* R21: pairs with A21: our changes before the next holder's. */
	cas_strong_seqcst64(&g->maint, &me, 0);
}

/* A lease too large for one claim of the dead-letter channel: message by
 * message (an attempt that fails part way copies the first ones again at
 * the next). */
static int dead_letter_each(struct shmbus_group *m, shmbus_pub *dl,
			    uint64_t start, uint64_t end)
{
	for (uint64_t p = start; p < end;) {
		uint32_t type, len;
		uint64_t seq, size;
		int rc = sb_rec_look(m->ch, p, UINT64_MAX, &type, &len, &seq,
				     &size);

		if (rc != 1)
			return rc < 0 ? rc : -EAGAIN;
		if (type == SHMBUS_REC_MSG &&
		    (rc = shmbus_publish(dl, (const uint8_t *)rec_at(m->ch, p) +
					 SHMBUS_REC_HDR, len)) < 0)
			return rc;
		p += size;
	}
	return 0;
}

/* At most this many messages of a lease go to the dead-letter channel
 * with one claim; a lease of more goes message by message. */
#define DL_BATCH	256u

/* Copies the messages in [start, end) (of lane `lane`, or all if
 * UINT32_MAX) to the dead-letter channel.  A lease's messages go with one
 * claim (shmbus_publish_batch()), all or none, so that an attempt that
 * fails part way (the channel full, a claim in flight) and is made again
 * at a later maintenance copies none twice.  0, or -errno: try later. */
static int dead_letter(struct shmbus_group *m, shmbus_pub *dl,
		       uint64_t start, uint64_t end, uint32_t lane,
		       uint64_t *stop)
{
	struct shmbus_channel *ch = m->ch;
	struct iovec iov[DL_BATCH];
	uint64_t p = start, n = 0;

	while (p < end) {
		uint32_t type, len;
		uint64_t seq, size;
		const uint8_t *data;
		int rc = sb_rec_look(ch, p, UINT64_MAX, &type, &len, &seq,
				     &size);

		if (rc != 1)
			return rc < 0 ? rc : -EAGAIN;
		data = (const uint8_t *)rec_at(ch, p) + SHMBUS_REC_HDR;
		if (type == SHMBUS_REC_MSG &&
		    (lane == UINT32_MAX ||
		     sb_lane_of(sb_msg_key(data, len), m->nlanes) == lane)) {
			if (lane != UINT32_MAX) {
				if (dl && (rc = shmbus_publish(dl, data,
							       len)) < 0)
					return rc;
				add_relaxed64(dl ? &m->g->dead_lettered
						 : &m->g->dropped, 1);
				*stop = p + size;
				return 0;
			}
			if (n < DL_BATCH)
				iov[n] = (struct iovec){ (void *)data, len };
			n++;
		}
		p += size;
	}
	if (dl && n) {
		int rc = -EMSGSIZE;

		if (n <= DL_BATCH)
			rc = shmbus_publish_batch(dl, iov, (size_t)n);
		if (rc == -EMSGSIZE)	/* more than one claim takes */
			rc = dead_letter_each(m, dl, start, end);
		if (rc < 0)
			return rc;
	}
	add_relaxed64(dl ? &m->g->dead_lettered : &m->g->dropped, n);
	*stop = end;
	return 0;
}

/* Lane i changes hands (or goes back to FREE), its generation bumped. */
static bool lane_move(struct shmbus_group *m, uint32_t i, uint64_t c,
		      uint32_t state, uint32_t member, uint32_t d, uint64_t to)
{
	struct shmbus_lane *ln = &m->lanes[i];
	uint64_t a = load_relaxed64(&ln->acked);

	if (to < a)
		to = a;
	if (state == SHMBUS_LANE_OWNED) {	/* FREE: nobody else writes
						 * them */
		store_relaxed64(&ln->given, load_relaxed64(&ln->delivered));
		/* R29: pairs with A29 (a former owner's extend): the lane's
		 * FREE word, which we acquired (A18), comes with it. */
		store_release64((uint64_t *)&ln->deadline,
				(uint64_t)sb_after(sb_now_ns(), m->lease_ns));
	}
	/* R18: pairs with A18 (readers of the lane's word): the owner's reads
	 * come first. */
	if (!cas_pair(&ln->ctl, c, a, gctl(state, member, d, gctl_gen(c) + 1),
		      to))
		return false;
	if (state == SHMBUS_LANE_OWNED || gctl_state(c) != SHMBUS_LANE_FREE) {
		add_relaxed64(&ln->moves, 1);
		add_relaxed64(&m->g->lane_moves, 1);
	}
	return true;
}

/* Lanes of dead members and stuck owners back to FREE; poison lanes. */
static int lanes_reclaim(struct shmbus_group *m, shmbus_pub *dl,
			 const bool dead[SHMBUS_GROUP_MEMBERS],
			 const bool live[SHMBUS_GROUP_MEMBERS],
			 const uint64_t owner[SHMBUS_GROUP_MEMBERS], int64_t now)
{
	int n = 0;

	for (uint32_t i = 0; i < m->nlanes; i++) {
		struct shmbus_lane *ln = &m->lanes[i];
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);
		uint32_t st = gctl_state(c), who = gctl_member(c);
		/* Records delivered and not acknowledged, and the owner
		 * took some: its death (or term) counts a delivery of the
		 * oldest.  No edge: counts (delivered is the owner's, before
		 * it hands a record over). */
		bool held = load_relaxed64(&ln->next) > a &&
			    load_relaxed64(&ln->delivered) !=
				    load_relaxed64(&ln->given);
		uint64_t stop;

		if (st == SHMBUS_LANE_POISON) {
			if (m->g->dead_letter[0] && !dl && !m->dl_drop) {
				m->dl_wanted = true;
				continue;	/* for whoever can publish */
			}
			if (dead_letter(m, dl, a, a + m->ch->cap / 2, i,
					&stop) == 0 &&
			    lane_move(m, i, c, SHMBUS_LANE_FREE,
				      SHMBUS_NO_MEMBER, 0, stop))
				n++;
			continue;
		}
		if (st != SHMBUS_LANE_OWNED && st != SHMBUS_LANE_REVOKING)
			continue;
		if (who < SHMBUS_GROUP_MEMBERS && !same_record(m, who, owner))
			continue;	/* judged another member: the next */
		if (who >= SHMBUS_GROUP_MEMBERS || dead[who] || !live[who]) {
			/* Its owner died, or left without letting go (its
			 * record is free or another member's now). */
			if (lane_move(m, i, c, SHMBUS_LANE_FREE,
				      SHMBUS_NO_MEMBER,
				      gdeliveries_add(gctl_deliveries(c),
						      held), a)) {
				add_relaxed64(&m->g->released, 1);
				n++;
			}
		} else if ((int64_t)load_relaxed64(
				   (uint64_t *)&ln->deadline) < now) {
			/* Its owner neither polled nor acknowledged for a
			 * term (stuck or stopped). */
			if (lane_move(m, i, c, SHMBUS_LANE_FREE,
				      SHMBUS_NO_MEMBER,
				      gdeliveries_add(gctl_deliveries(c),
						      held), a)) {
				add_relaxed64(&m->g->expired, 1);
				n++;
			}
		}
	}
	return n;
}

/*
 * Who owns which lane.  single_active: the live member first in join
 * order owns the lane; nobody else ever does while it lives.  keyed:
 * at most ceil(lanes / members) each; the extra lanes of a member are
 * revoked (it lets go once it has acknowledged what it holds), and free
 * lanes go to the members with the fewest.  Only what must move moves.
 */
static int lanes_assign(struct shmbus_group *m,
			const bool live[SHMBUS_GROUP_MEMBERS])
{
	uint32_t count[SHMBUS_GROUP_MEMBERS] = { 0 }, nlive = 0, most;
	int n = 0;

	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++)
		nlive += live[j];
	if (!nlive)
		return 0;
	most = (m->nlanes + nlive - 1) / nlive;
	for (uint32_t i = 0; i < m->nlanes; i++) {
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&m->lanes[i].ctl);
		uint32_t who = gctl_member(c), st = gctl_state(c);

		if ((st == SHMBUS_LANE_OWNED || st == SHMBUS_LANE_REVOKING) &&
		    who < SHMBUS_GROUP_MEMBERS)
			count[who]++;
	}
	for (uint32_t i = 0; i < m->nlanes; i++) {
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&m->lanes[i].ctl);
		uint32_t who = gctl_member(c), best = SHMBUS_NO_MEMBER;

		if (gctl_state(c) == SHMBUS_LANE_OWNED &&
		    who < SHMBUS_GROUP_MEMBERS && count[who] > most &&
		    m->mode == SHMBUS_GMODE_KEYED) {
			uint64_t a = load_relaxed64(&m->lanes[i].acked);

			/* R18: pairs with A18 (readers of the lane's word): the
			 * owner's reads come first. */
			if (cas_pair(&m->lanes[i].ctl, c, a,
				     (c & ~UINT64_C(0xff)) |
					     SHMBUS_LANE_REVOKING, a)) {
				count[who]--;
				n++;
			}
			continue;
		}
		if (gctl_state(c) != SHMBUS_LANE_FREE)
			continue;
		for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
			if (!live[j])
				continue;
			if (best == SHMBUS_NO_MEMBER ||
			    (m->mode == SHMBUS_GMODE_SINGLE
				     ? load_relaxed64(&m->members[j].order) <
					       load_relaxed64(
						       &m->members[best].order)
				     : count[j] < count[best]))
				best = j;
		}
		if (best != SHMBUS_NO_MEMBER && count[best] < most &&
		    lane_move(m, i, c, SHMBUS_LANE_OWNED, best,
			      gctl_deliveries(c), 0)) {
			count[best]++;
			n++;
		}
	}
	return n;
}

/* The start of claim s, from whoever knows it: the floor, the claim
 * word, a recorded lease, or any intent naming s (every claimer of s read
 * the same start from the claim word). */
static bool claim_start(struct shmbus_group *m, uint64_t s, uint64_t *pos)
{
	struct shmbus_group_hdr *g = m->g;
	struct shmbus_lease_slot *l = &m->leases[s & m->wmask];
	uint64_t p, q;

	sb_pair_read(&g->floor_pos, &p, &q);
	if (q == s) {
		*pos = p;
		return true;
	}
	sb_pair_read(&g->claim_pos, &p, &q);
	if (q == s) {
		*pos = p;
		return true;
	}
	/* A15: pairs with R15 (a lease's seq, stored last): its start. */
	if (load_acquire64(&l->seq) == s) {
		*pos = load_relaxed64(&l->start);
		return true;
	}
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++)
		if (sb_intent_read(&m->members[j], &q, &p) && q == s) {
			*pos = p;
			return true;
		}
	return false;
}

/* Whether a live member says it is about to record claim s (its winner,
 * or a loser about to retry). */
static bool intent_live(struct shmbus_group *m, uint64_t s,
			const bool live[SHMBUS_GROUP_MEMBERS])
{
	uint64_t q, p;

	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++)
		if (live[j] && sb_intent_read(&m->members[j], &q, &p) &&
		    q == s)
			return true;
	return false;
}

/*
 * Claims won but never recorded: their winner died (or is stopped)
 * between its claim CAS and recording the lease.  Each is recorded
 * AVAILABLE for someone else once no live member says it is about to
 * record it, or once it has waited a lease's term (a stopped winner).
 * sb_lease_record() makes this and the winner's own recording exclusive:
 * a winner that comes back finds the slot taken and lets the claim go.
 * A recording of the maintenance's own that died half way is taken over
 * the same way: its word names its recorder (SB_RECORDER()).  A claim's
 * end is the next claim's start.  Returns the claims recorded.
 */
static int resolve_unrecorded(struct shmbus_group *m, int64_t now,
			      const bool live[SHMBUS_GROUP_MEMBERS],
			      bool dead[SHMBUS_GROUP_MEMBERS],
			      const uint64_t owner[SHMBUS_GROUP_MEMBERS],
			      uint32_t self)
{
	struct shmbus_group_hdr *g = m->g;
	uint64_t fp, fs, cp, cs, start, end;
	bool timed = false;
	int n = 0;

	sb_pair_read(&g->floor_pos, &fp, &fs);
	sb_pair_read(&g->claim_pos, &cp, &cs);
	if (cs < fs || cs - fs > m->window)
		return 0;
	for (uint64_t s = fs; s < cs; s++) {
		struct shmbus_lease_slot *l = &m->leases[s & m->wmask];
		uint64_t c;
		int64_t since;
		uint32_t w = SHMBUS_NO_MEMBER;

		/* A15: pairs with R15: recorded. */
		if (load_acquire64(&l->seq) == s)
			continue;
		/* A17: pairs with R17.  A winner that died between its CAS
		 * of the slot and its store of seq left its LEASED word: ours
		 * to replace, and its record is kept until we have. */
		c = load_acquire64(&l->ctl);
		if (gctl_state(c) == SHMBUS_LEASE_LEASED) {
			w = gctl_member(c);
			if (w >= SHMBUS_GROUP_MEMBERS || !dead[w] ||
			    !same_record(m, w, owner))
				continue;	/* a live winner, recording */
			dead[w] = false;	/* freed once resolved */
		}
		if (intent_live(m, s, live)) {
			/* One stall is timed at a time, the oldest: a second
			 * one timed too would set the clock back for the
			 * first at every run, and neither ever resolved.
			 * The next is timed once the first is recorded. */
			if (timed)
				continue;
			timed = true;
			since = (int64_t)load_relaxed64(
				(uint64_t *)&g->stall_since);
			/* Timed from now if another claim was, or none: a
			 * file an older version made holds 0 for both (claim
			 * 0, timed since the clock's start), and a time
			 * more than a term ahead of now is damage (it would
			 * hold the claim for as long). */
			if (load_relaxed64(&g->stall_seq) != s || since <= 0 ||
			    since > sb_after(now, m->lease_ns)) {
				/* The time first: a holder killed between the
				 * two stores leaves the old claim timed anew
				 * (a term later), never the new claim beside
				 * the old one's time (given away at once). */
				store_relaxed64((uint64_t *)&g->stall_since,
						(uint64_t)now);
				store_relaxed64(&g->stall_seq, s);
				continue;
			}
			if (sb_elapsed(now, since) < m->lease_ns)
				continue;
		}
		if (!claim_start(m, s, &start) ||
		    !claim_start(m, s + 1, &end) || end < start ||
		    end > load_relaxed64(&m->ch->pl->head))
			continue;
		if (sb_group_hook)
			sb_group_hook(SB_HOOK_RESOLVING);
		/* Still ours?  A holder replaced while it was stopped (a
		 * second) stops here rather than record a claim another
		 * holder may be making (a standby's raise).  No edge: a
		 * look; the recording's own CAS decides the rest. */
		if (load_relaxed64(&g->maint) !=
		    ((uint64_t)m->token << 32 | self)) {
			/* Nor free a dead member's record: one whose LEASED
			 * word waits in a slot not looked at yet is what
			 * lets a maintenance replace that word. */
			memset(dead, 0, SHMBUS_GROUP_MEMBERS * sizeof(*dead));
			break;
		}
		/* Never delivered here; but below the mark a standby's
		 * copy was given, perhaps on the primary it followed
		 * (group_shared.c): it comes as a second delivery. */
		if (sb_lease_record(g, l, s, gctl(SHMBUS_LEASE_AVAILABLE,
					       SHMBUS_NO_MEMBER,
					       start < load_relaxed64(
						   &g->redeliver_below), 0),
				    SB_RECORDER(self), start, end, 0, 0, w,
				    NULL)) {
			add_relaxed64(&g->avail, 1);
			add_relaxed64(&g->released, 1);
			n++;
		}
	}
	return n;
}

/* Shared mode: leases of dead members and expired ones given back,
 * poison ones dead-lettered, the AVAILABLE count made true. */
static int leases_reclaim(struct shmbus_group *m, shmbus_pub *dl,
			  const bool dead[SHMBUS_GROUP_MEMBERS],
			  const uint64_t owner[SHMBUS_GROUP_MEMBERS],
			  int64_t now)
{
	struct shmbus_group_hdr *g = m->g;
	uint64_t fp, fs, fp1, fs1, cp, cs, avail = 0;
	int n = 0;

	/* The floor, the claim word, the floor again: a claim behind the
	 * first floor, or more than a window past the second, is no race
	 * (the floor only grows, and a claim is taken only within a window
	 * of it; a cut moves the claim word one number on before the
	 * floor): damage, and nothing of the dead is freed. */
	sb_pair_read(&g->floor_pos, &fp1, &fs1);
	sb_pair_read(&g->claim_pos, &cp, &cs);
	sb_pair_read(&g->floor_pos, &fp, &fs);
	if (cs < fs1 || (cs >= fs && cs - fs > m->window + 1))
		return -1;
	if (cs < fs)
		return 0;	/* claims and floor moved on meanwhile */
	for (uint64_t x = fs; x < cs; x++) {
		struct shmbus_lease_slot *l = &m->leases[x & m->wmask];
		uint64_t c, dl_ns, stop, ls = 0, le = 0, fp2, fs2;
		uint32_t st, who;
		bool bad = false;

		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		if (load_acquire64(&l->seq) != x)
			continue;
		/* A17: pairs with R17 (the lease's last change). */
		c = load_acquire64(&l->ctl);
		dl_ns = load_relaxed64((uint64_t *)&l->deadline);
		/* A word of claim x + window being recorded, beside x's seq,
		 * exists only once the floor passed x (take_available() in
		 * group_shared.c): not x's to change. */
		sb_pair_read(&g->floor_pos, &fp2, &fs2);
		if (fs2 > x)
			continue;
		st = gctl_state(c);
		who = gctl_member(c);
		if (st == SHMBUS_LEASE_AVAILABLE)
			avail++;
		if (st == SHMBUS_LEASE_POISON && g->dead_letter[0] && !dl &&
		    !m->dl_drop)
			m->dl_wanted = true;
		if (st == SHMBUS_LEASE_POISON) {
			ls = load_relaxed64(&l->start);
			le = load_relaxed64(&l->end);
			/* A range a lease cannot have (the file is any
			 * member's to write): the poison is dropped, counted,
			 * never copied over and over from past head. */
			bad = !(fp <= ls && ls <= le && le <= cp &&
				/* No edge: compared only. */
				le <= load_relaxed64(&m->ch->pl->head));
		}
		/* R17: pairs with A17 (readers of the lease's word): the
		 * holder's reads come first. */
		if (st == SHMBUS_LEASE_POISON &&
		    (bad || !g->dead_letter[0] || dl || m->dl_drop) &&
		    (bad || dead_letter(m, dl, ls, le, UINT32_MAX, &stop) == 0) &&
		    cas_pair(&l->ctl, c, dl_ns,
			     gctl(SHMBUS_LEASE_DEAD, SHMBUS_NO_MEMBER,
				  gctl_deliveries(c), gctl_gen(c) + 1), dl_ns)) {
			if (bad)
				add_relaxed64(&g->dropped, 1);
			n++;
			continue;
		}
		if (st != SHMBUS_LEASE_LEASED)
			continue;
		if (who < SHMBUS_GROUP_MEMBERS && dead[who] &&
		    same_record(m, who, owner)) {
			/* Not the member's fault as far as we know: the
			 * delivery still counts, as it may have crashed on
			 * this very message. */
			/* R17: pairs with A17 (readers of the lease's word):
			 * the holder's reads come first. */
			if (cas_pair(&l->ctl, c, dl_ns,
				     gctl(SHMBUS_LEASE_AVAILABLE,
					  SHMBUS_NO_MEMBER, gctl_deliveries(c),
					  gctl_gen(c) + 1), dl_ns)) {
				add_relaxed64(&g->released, 1);
				avail++;
				n++;
			}
		/* R17: pairs with A17 (readers of the lease's word): the
		 * holder's reads come first. */
		} else if ((int64_t)dl_ns < now &&
			   cas_pair(&l->ctl, c, dl_ns,
				    gctl(SHMBUS_LEASE_AVAILABLE,
					 SHMBUS_NO_MEMBER, gctl_deliveries(c),
					 gctl_gen(c) + 1), dl_ns)) {
			add_relaxed64(&g->expired, 1);
			avail++;
			n++;
		}
	}
	/* The hint made true (members' changes meanwhile only make it
	 * a little off until the next run). */
	store_relaxed64(&g->avail, avail);
	return n;
}

#define MAINT_STUCK_NS	SB_MAINT_STUCK_NS

/*
 * The group's maintenance lock: pid | the handle's token << 32, so that
 * two handles of one process exclude each other too.  A holder that is
 * gone, or that has held it for a second (stopped), is replaced: every
 * change the maintenance makes is a CAS on a word members also CAS, a
 * verdict on a member is acted on only while its record is the one judged
 * (same_record()), and the lock is given back only by its holder
 * (maint_unlock()), so a replaced holder that resumes does no harm but a
 * repeated dead letter (and, stopped again for a second between a check
 * of a record and its CAS, the loss of a new member's lease or lane, taken
 * back early: delivered again, flagged).
 */
static bool maint_lock(struct shmbus_group *m, uint64_t me, int64_t stuck_ns)
{
	struct shmbus_group_hdr *g = m->g;
	/* A21: pairs with R21 (the last holder's release). */
	uint64_t cur = load_acquire64(&g->maint);
	/* Read after the holder: its own time of taking the lock, stored
	 * before its CAS (below), which our acquire of its word saw (or a
	 * later racer's, a little after our clock's reading).  A time more
	 * than a term ahead of now is damage: a holder that way would never
	 * be replaced, and the group never maintained again. */
	int64_t held = sb_elapsed(sb_now_ns(), (int64_t)load_relaxed64(
						       (uint64_t *)&g->maint_since));

	if (cur && !sb_pid_gone((uint32_t)cur) && held < stuck_ns &&
	    held > -MAINT_STUCK_NS)
		return false;
	/* When we take it, stored before the CAS that takes it, so that
	 * whoever sees us hold it never reads the time of the holder
	 * before (and judges us stuck by it).  A racer whose CAS fails
	 * after its store only makes the holder look younger: a stuck
	 * holder is replaced by the racer whose CAS succeeds. */
	store_relaxed64((uint64_t *)&g->maint_since, (uint64_t)sb_now_ns());
	/* A21: pairs with R21 (the last holder's release); its release
	 * side carries the time above to the next racer's acquire. */
	return cas_strong_seqcst64(&g->maint, &cur, me);
}

bool sb_group_maint_trylock(struct shmbus_group *m, int64_t stuck_ns)
{
	return maint_lock(m, (uint64_t)m->token << 32 | (uint32_t)getpid(),
			  stuck_ns);
}

void sb_group_maint_release(struct shmbus_group *m)
{
	maint_unlock(m->g, (uint64_t)m->token << 32 | (uint32_t)getpid());
}

/*
 * The channel's slot written past head (a write into the control file;
 * producers hold at it, sb_refresh_limit()): set back to the group's
 * floor.  Only while the slot is still this group's: the maintenance
 * found the group not deleted, and the slot is a group's.
 */
static void floor_heal(struct shmbus_group *m)
{
	struct shmbus_channel *ch = m->ch;
	struct shmbus_sub_slot *s = &ch->subs[m->slot];
	/* A5: pairs with R5 (the floor's publish, sb_floor_publish()): the
	 * head its publisher saw comes before the head we load next. */
	uint64_t cur = load_acquire64(&s->pos);
	uint64_t head = load_relaxed64(&ch->pl->head);
	/* A23: pairs with R23 (the floor's move): what the members did
	 * below it is done, before the publish below. */
	uint64_t f = load_acquire64(&m->g->floor_pos);

	if (cur == f || f > head ||
	    /* No edge: a look at whose slot it is. */
	    owner_state(load_relaxed64(&s->owner)) != SHMBUS_SLOT_GROUP)
		return;
	if (cur > head) {
		/* R5: pairs with A5 in sb_refresh_limit(). */
		cas_strong_seqcst64(&s->pos, &cur, f);
		return;
	}
	/* Below the floor: its mover died (or stopped) between the floor's
	 * move and the slot's; with nothing left to take, no later move
	 * would raise it, and the producers would wait on it for good. */
	if (cur < f)
		sb_floor_publish(ch, m->slot, f);
}

/* A maintenance by a handle that is not (or no longer) a member: a
 * remover does not see it, so it holds the removers' lock shared for the
 * whole pass (a removal waits for it), and does nothing once the group
 * is deleted: its slot may be someone else's by then. */
void sb_group_maintain_unjoined(struct shmbus_group *m)
{
	if (m->fd < 0 || flock(m->fd, LOCK_SH | LOCK_NB) < 0)
		return;		/* a removal in flight */
	if (!sb_group_deleted(m, true))
		sb_group_maintain_as(m, NULL, (uint32_t)getpid());
	flock(m->fd, LOCK_UN);
}

int sb_group_maintain_as(struct shmbus_group *m, shmbus_pub *dl,
			 uint32_t self)
{
	uint64_t me = (uint64_t)m->token << 32 | self;
	struct shmbus_group_hdr *g = m->g;
	bool dead[SHMBUS_GROUP_MEMBERS] = { false };
	bool live[SHMBUS_GROUP_MEMBERS] = { false };
	bool looks[SHMBUS_GROUP_MEMBERS] = { false };
	uint64_t owner[SHMBUS_GROUP_MEMBERS];
	int64_t now = sb_now_ns();
	bool damaged = false;
	int n = 0;

	/* A deleted group's slot may be someone else's by now: nothing is
	 * written (sb_group_deleted() tells, and heals a dead remover's
	 * flag, before; no edge: a look). */
	if (load_relaxed32(&g->flags) & SB_GROUP_F_DELETED)
		return -EIDRM;
	if (!maint_lock(m, me, MAINT_STUCK_NS))
		return 0;
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		dead[j] = member_gone(&m->members[j], &owner[j]);
		live[j] = !dead[j] && owner_state(owner[j]) ==
					      SHMBUS_SLOT_ACTIVE;
		/* Lanes go to members that look (a stopped one does not). */
		looks[j] = live[j] &&
			   sb_elapsed(now, (int64_t)load_relaxed64(
					 (uint64_t *)&m->members[j].looked_ns)) <
				   m->lease_ns;
	}
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_JUDGED);
	if (m->mode == SHMBUS_GMODE_SHARED) {
		int r = leases_reclaim(m, dl, dead, owner, now);

		if (r < 0) {	/* keep the dead records: their leases stay */
			memset(dead, 0, sizeof(dead));
			damaged = true;
		} else {
			n += r;
		}
		n += resolve_unrecorded(m, now, live, dead, owner, self);
		n += (int)sb_floor_advance(g, m->leases, m->wmask, m->ch,
					   m->slot);
	} else {
		n += lanes_reclaim(m, dl, dead, live, owner, now);
		n += lanes_assign(m, looks);
		sb_lanes_floor(m);
	}
	floor_heal(m);
	/* The dead members' records, once nothing of theirs is left, and
	 * each one's count in the channel's sleepers if it died asleep. */
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		if (!dead[j] || !same_record(m, j, owner))
			continue;
		sb_member_unsleep(m, j);
		/* R22: pairs with A22: the record freed, after its
		 * leases. */
		if (cas_strong_seqcst64(&m->members[j].owner, &owner[j],
					owner_word(SHMBUS_SLOT_FREE, 0)))
			n++;
	}
	store_relaxed64((uint64_t *)&g->maint_at,
			(uint64_t)(now + MAINT_EVERY_NS));
	maint_unlock(g, me);
	return damaged ? -EBADMSG : n;
}

/* Shared: every claim dropped, the floor and the claim word at f =
 * min(floor, pos), under a new claim number.  Leases in flight below f
 * come again, as new. */
static int shared_cut(struct shmbus_group *m, uint64_t pos)
{
	struct shmbus_group_hdr *g = m->g;
	uint64_t fp, fs, cp, cs, f;

	sb_pair_read(&g->floor_pos, &fp, &fs);
	sb_pair_read(&g->claim_pos, &cp, &cs);
	if (cp <= pos)
		return 0;
	if (cs < fs || cs - fs > m->window || fp > cp)
		return -EBADMSG;
	f = fp < pos ? fp : pos;
	/* Every slot to a final state, so that the claims numbered from
	 * cs + 1 can record their leases (sb_lease_record()). */
	for (uint64_t x = fs; x < cs; x++) {
		struct shmbus_lease_slot *l = &m->leases[x & m->wmask];

		for (;;) {
			/* A17: pairs with R17 (the lease's last change). */
			uint64_t c = load_acquire64(&l->ctl);
			uint64_t dl = load_relaxed64((uint64_t *)&l->deadline);
			uint32_t st = gctl_state(c);

			if (st == SHMBUS_LEASE_DEAD || st == SHMBUS_LEASE_ACKED ||
			    st == SHMBUS_LEASE_FREE)
				break;
			/* R17: pairs with A17: the slot is passed. */
			if (cas_pair(&l->ctl, c, dl,
				     gctl(SHMBUS_LEASE_DEAD, SHMBUS_NO_MEMBER,
					  gctl_deliveries(c), gctl_gen(c) + 1),
				     dl))
				break;
		}
	}
	/* The claim word first: no claim is taken above f from here. */
	if (!cas_pair(&g->claim_pos, cp, cs, f, cs + 1))	/* R16 */
		return -EBUSY;	/* a member claimed: it was alive */
	/* The floor walks nothing: floor_seq is the claim number. */
	for (;;) {
		sb_pair_read(&g->floor_pos, &fp, &fs);
		/* R23: pairs with A23 (the floor word's readers). */
		if (cas_pair(&g->floor_pos, fp, fs, f, cs + 1))
			break;
	}
	store_relaxed64(&g->avail, 0);
	store_relaxed64(&g->start_seq, UINT64_MAX);
	store_relaxed64(&g->fresh_pos, f == pos ? f : UINT64_MAX);
	return 0;
}

/* Lanes: each lane's acked and next, and the floor, down to pos. */
static int lanes_cut(struct shmbus_group *m, uint64_t pos)
{
	struct shmbus_group_hdr *g = m->g;
	uint64_t cur;

	for (uint32_t i = 0; i < m->nlanes; i++) {
		struct shmbus_lane *ln = &m->lanes[i];
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);

		if (a <= pos && load_relaxed64(&ln->next) <= pos)
			continue;
		/* Held: by a live member (the maintenance above freed dead
		 * ones' lanes).  A poison lane is cut free: its record
		 * comes again, or is gone with the tail. */
		if (gctl_state(c) == SHMBUS_LANE_OWNED ||
		    gctl_state(c) == SHMBUS_LANE_REVOKING)
			return -EBUSY;
		/* R18: pairs with A18: the next owner starts at pos. */
		if (!cas_pair(&ln->ctl, c, a, gctl(SHMBUS_LANE_FREE,
						   SHMBUS_NO_MEMBER, 0,
						   gctl_gen(c) + 1),
			      a < pos ? a : pos))
			return -EBUSY;
		/* What was delivered below the cut comes again flagged, as
		 * in shared mode: next stays, at most pos. */
		if (load_relaxed64(&ln->next) > pos)
			store_relaxed64(&ln->next, pos);
	}
	cur = load_relaxed64(&g->floor_pos);
	/* R23: pairs with A23 (the floor's readers). */
	while (cur > pos && !cas_weak_seqcst64(&g->floor_pos, &cur, pos))
		;
	store_relaxed64(&g->start_seq, UINT64_MAX);
	store_relaxed64(&g->fresh_pos, UINT64_MAX);
	return 0;
}

int sb_group_cut_back(struct shmbus_group *m, uint64_t pos)
{
	uint32_t self = (uint32_t)getpid();
	uint64_t me = (uint64_t)m->token << 32 | self;
	int rc;

	/* What dead members held, freed first (their lanes above all). */
	sb_group_maintain_as(m, NULL, self);
	if (!maint_lock(m, me, MAINT_STUCK_NS))
		return -EBUSY;
	rc = 0;
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS && !rc; j++) {
		uint64_t o;

		if (!member_gone(&m->members[j], &o) &&
		    owner_state(o) == SHMBUS_SLOT_ACTIVE)
			rc = -EBUSY;	/* a live member */
	}
	if (!rc)
		rc = m->mode == SHMBUS_GMODE_SHARED ? shared_cut(m, pos)
						    : lanes_cut(m, pos);
	/* The records from pos on will be another epoch's, delivered
	 * nowhere yet.  No edge: a hint for the redelivered flag. */
	if (!rc && load_relaxed64(&m->g->redeliver_below) > pos)
		store_relaxed64(&m->g->redeliver_below, pos);
	maint_unlock(m->g, me);
	return rc;
}
