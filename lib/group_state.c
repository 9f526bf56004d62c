/* SPDX-License-Identifier: MIT */
/*
 * group_state.c - what a group's file says, for those who read it without
 * being members: the counters (shmbus_group_stats(), busstat), shmbusd's
 * maintenance of each group, and replication's export and import of a
 * group's settings and floor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"
#include "group.h"

void (*sb_group_settle_hook)(uint64_t x);

void sb_group_fill_stats(struct shmbus_group *m, struct shmbus_group_stats *st)
{
	struct shmbus_group_hdr *g = m->g;
	int64_t now = sb_now_ns(), oldest = INT64_MAX;
	uint32_t who = SHMBUS_NO_MEMBER;

	memset(st, 0, sizeof(*st));
	st->mode = (enum shmbus_group_mode)m->mode;
	st->window = m->window;
	st->lanes = m->nlanes;
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		uint64_t o = load_relaxed64(&m->members[j].owner);

		st->members += owner_state(o) == SHMBUS_SLOT_ACTIVE &&
			       !sb_pid_gone(owner_pid(o));
	}
	st->floor = load_relaxed64(&g->floor_pos);
	st->claim = load_relaxed64(&g->claim_pos);
	st->head = load_relaxed64(&m->ch->pl->head);
	if (m->mode == SHMBUS_GMODE_SHARED) {
		uint64_t fs = load_relaxed64(&g->floor_seq);
		uint64_t cs = load_relaxed64(&g->claim_seq);

		for (uint64_t x = fs; x < cs && cs - fs <= m->window; x++) {
			struct shmbus_lease_slot *l = &m->leases[x & m->wmask];
			uint64_t c = load_relaxed64(&l->ctl);	/* a statistic */
			int64_t since;

			if (gctl_state(c) != SHMBUS_LEASE_LEASED)
				continue;
			st->in_flight++;
			since = (int64_t)load_relaxed64(
					(uint64_t *)&l->deadline);
			since = sb_after(since, -m->lease_ns);
			if (since < oldest) {
				oldest = since;
				who = gctl_member(c);
			}
		}
	} else {
		st->claim = 0;
		for (uint32_t i = 0; i < m->nlanes; i++) {
			struct shmbus_lane *ln = &m->lanes[i];
			uint64_t c = load_relaxed64(&ln->ctl);	/* a statistic */
			int64_t since;

			if (load_relaxed64(&ln->next) <=
			    load_relaxed64(&ln->acked))
				continue;
			st->in_flight++;
			since = (int64_t)load_relaxed64(
					(uint64_t *)&ln->deadline);
			since = sb_after(since, -m->lease_ns);
			if (since < oldest) {
				oldest = since;
				who = gctl_member(c);
			}
		}
	}
	if (who < SHMBUS_GROUP_MEMBERS) {
		st->oldest_ns = now > oldest ? sb_elapsed(now, oldest) : 0;
		st->oldest_pid = owner_pid(load_relaxed64(
				&m->members[who].owner));
		memcpy(st->oldest_member, m->members[who].name,
		       sizeof(st->oldest_member));
		st->oldest_member[sizeof(st->oldest_member) - 1] = 0;
	}
	st->delivered = load_relaxed64(&g->delivered);
	st->redelivered = load_relaxed64(&g->redelivered);
	st->acked = load_relaxed64(&g->acked);
	st->nacked = load_relaxed64(&g->nacked);
	st->expired = load_relaxed64(&g->expired);
	st->released = load_relaxed64(&g->released);
	st->dead_lettered = load_relaxed64(&g->dead_lettered);
	st->dropped = load_relaxed64(&g->dropped);
	st->window_full = load_relaxed64(&g->full);
	st->lost = load_relaxed64(&g->lost);
	st->lost_bytes = load_relaxed64(&g->lost_bytes);
	st->loss_from = load_relaxed64(&g->loss_from);
	st->loss_to = load_relaxed64(&g->loss_to);
	st->lane_moves = load_relaxed64(&g->lane_moves);
}

int sb_group_cut(shmbus_channel *ch, const char *dir, const char *group,
		 uint64_t pos)
{
	struct shmbus_group *m;
	int rc;

	if (!ch || ch->rdonly)
		return -EINVAL;
	m = sb_group_open_map(ch, dir, group, false, &rc);
	if (!m)
		return rc;
	rc = sb_group_cut_back(m, pos);
	sb_group_unmap(m);
	return rc;
}

int sb_group_inspect(shmbus_channel *ch, const char *dir, const char *group,
		     struct shmbus_group_stats *st, struct sb_member_info *mi,
		     unsigned *n)
{
	struct shmbus_group *m;
	unsigned k = 0;
	int rc;

	if (!ch || !st || !n)
		return -EINVAL;
	m = sb_group_open_map(ch, dir, group, true, &rc);
	if (!m)
		return rc;
	sb_group_fill_stats(m, st);
	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		struct shmbus_member *r = &m->members[j];
		uint64_t o = load_relaxed64(&r->owner);

		if (owner_state(o) == SHMBUS_SLOT_FREE)
			continue;
		if (k < *n && mi) {
			struct sb_member_info *x = &mi[k];

			x->index = j;
			x->pid = owner_pid(o);
			x->alive = !sb_pid_gone(owner_pid(o));
			memcpy(x->name, r->name, sizeof(x->name));
			x->name[sizeof(x->name) - 1] = 0;
			memcpy(x->comm, r->comm, sizeof(x->comm));
			x->comm[sizeof(x->comm) - 1] = 0;
			x->delivered = load_relaxed64(&r->delivered);
			x->acked = load_relaxed64(&r->acked);
			x->stale = load_relaxed64(&r->stale);
		}
		k++;
	}
	*n = k;
	sb_group_unmap(m);
	return 0;
}

struct shmbus_group *sb_group_keep(shmbus_channel *ch, const char *dir,
				   const char *group, int *err)
{
	char path[PATH_MAX];
	struct shmbus_group *m;

	if (!ch || ch->rdonly) {
		*err = -EINVAL;
		return NULL;
	}
	*err = sb_group_path(path, sizeof(path), dir, ch->name, group);
	if (*err)
		return NULL;
	m = sb_group_open_map(ch, dir, group, false, err);
	if (m && !(m->kept = strdup(path))) {
		sb_group_unmap(m);
		*err = -ENOMEM;
		return NULL;
	}
	/* No descriptor kept: a daemon keeps one mapping per group, which
	 * its descriptor budget does not count.  Each maintenance opens the
	 * file for its pass (sb_group_maintain_kept()). */
	if (m && m->fd >= 0) {
		close(m->fd);
		m->fd = -1;
	}
	return m;
}

void sb_group_unkeep(struct shmbus_group *m)
{
	sb_group_unmap(m);
}

/*
 * The pass holds the removers' lock shared, as sb_group_maintain_unjoined()
 * does: a remover in direct mode, which sees no member in us, waits for
 * the pass (20 ms at most, then -EBUSY: lock_for_removal()) before it
 * unlinks the file and gives the channel's slot back.  Without it, a pass
 * that found the group whole could write the group's floor into the slot
 * once a new subscriber had taken it, and its producers would write over
 * what that subscriber had not read.  The file is the one mapped, or the
 * group is gone (-EIDRM, nothing written).
 */
int sb_group_maintain_kept(struct shmbus_group *m, sb_dl_for_fn dl_for,
			   void *ctx)
{
	shmbus_pub *dl = NULL;
	char name[64];
	struct stat st;
	int fd, rc;

	memcpy(name, m->g->dead_letter, sizeof(name));
	name[sizeof(name) - 1] = 0;
	m->dl_drop = false;
	if (name[0] && dl_for && sb_name_ok(name, 63))
		dl = dl_for(name, ctx, &m->dl_drop);
	else if (name[0])
		m->dl_drop = true;	/* no channel can take it */
	if (!m->kept)
		return -EINVAL;
	fd = sb_open_file(m->kept, O_RDONLY);
	if (fd < 0)
		return fd == -ENOENT ? -EIDRM : fd;
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_dev != m->dev ||
	    (uint64_t)st.st_ino != m->ino) {
		close(fd);
		return -EIDRM;	/* removed, perhaps made again since */
	}
	if (flock(fd, LOCK_SH | LOCK_NB) < 0) {
		close(fd);
		return -EIDRM;	/* a removal in flight */
	}
	m->fd = fd;
	rc = sb_group_deleted(m, true) ? -EIDRM
				       : sb_group_maintain_as(m, dl,
							      (uint32_t)getpid());
	m->fd = -1;
	close(fd);	/* drops the lock */
	return rc;
}

int sb_group_maintain_file(shmbus_channel *ch, const char *dir,
			   const char *group, sb_dl_for_fn dl_for, void *ctx)
{
	struct shmbus_group *m;
	int rc;

	m = sb_group_keep(ch, dir, group, &rc);
	if (!m)
		return rc;
	rc = sb_group_maintain_kept(m, dl_for, ctx);
	sb_group_unmap(m);
	return rc;
}

int sb_group_state_get(shmbus_channel *ch, const char *dir, const char *group,
		       struct sb_group_state *st)
{
	struct shmbus_group *m;
	uint64_t fp, fs;
	int rc;

	m = sb_group_open_map(ch, dir, group, true, &rc);
	if (!m)
		return rc;
	memset(st, 0, sizeof(*st));
	snprintf(st->name, sizeof(st->name), "%s", group);
	memcpy(st->dead_letter, m->g->dead_letter, sizeof(st->dead_letter));
	st->dead_letter[sizeof(st->dead_letter) - 1] = 0;
	st->mode = m->mode;
	st->window = m->window;
	st->lanes = m->nlanes;
	st->max_deliveries = m->max_deliveries ? m->max_deliveries
					       : UINT32_MAX;
	st->lease_ns = m->lease_ns;
	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	st->floor = fp;
	if (m->mode == SHMBUS_GMODE_SHARED) {
		/* Read after the floor: at or above it.  A mark this copy
		 * was given as a standby goes on, for the next failover. */
		uint64_t cp, cs, rb = load_relaxed64(&m->g->redeliver_below);

		sb_pair_read(&m->g->claim_pos, &cp, &cs);
		st->delivered_to = cp > rb ? cp : rb;
	}
	for (uint32_t i = 0; i < m->nlanes; i++) {
		st->lane_acked[i] = load_relaxed64(&m->lanes[i].acked);
		st->lane_next[i] = load_relaxed64(&m->lanes[i].next);
	}
	sb_group_unmap(m);
	return 0;
}

/*
 * Shared: claims of a standby's own copy that the primary's floor f has
 * passed are done there: each is passed here as DEAD (a member that
 * still holds one gets -ESTALE).  Such claims were taken while this host
 * was primary (its members died with it, or were refused claims since:
 * take_check() in group.c), or by a member that claimed as the fence
 * closed.  Claims past f stay as they are, to be delivered again if this
 * host becomes primary before f passes them.  Returns whether the floor
 * moved.
 */
static bool shared_settle_below(struct shmbus_group *m, uint64_t f)
{
	uint64_t fp, fs, cp, cs, fp2, fs2;

	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	sb_pair_read(&m->g->claim_pos, &cp, &cs);
	if (cs < fs || cs - fs > m->window)
		return false;	/* damage: the maintenance leaves it too */
	for (uint64_t x = fs; x < cs; x++) {
		struct shmbus_lease_slot *l = &m->leases[x & m->wmask];
		uint64_t c, end, dl;
		uint32_t st;

		if (sb_group_settle_hook)
			sb_group_settle_hook(x);
		/* A17: pairs with R17 (the lease's last change): read
		 * before the fields, and again after them below, so that
		 * they are this claim's (the next claim in this slot
		 * changes the word before its fields). */
		c = load_acquire64(&l->ctl);
		st = gctl_state(c);

		/* A15: pairs with R15 (a lease's seq, stored last): its
		 * fields. */
		if (load_acquire64(&l->seq) != x)
			break;	/* not recorded yet: the maintenance's */
		end = load_relaxed64(&l->end);
		dl = load_relaxed64((uint64_t *)&l->deadline);
		/* A17 again: pairs with R17 of the next claim in the slot:
		 * the fields read above came before its change. */
		fence_acquire();
		if (load_relaxed64(&l->ctl) != c || end > f)
			break;
		/* c may still be the word of claim x + window, CASed in
		 * before its fields and seq.  That claim was won only once
		 * the floor had passed x, as its winner read before its CAS
		 * (which A17 above acquired): a floor still at or below x
		 * now says that c is claim x's.  A16 / A23 in
		 * sb_pair_read(). */
		sb_pair_read(&m->g->floor_pos, &fp2, &fs2);
		if (fs2 > x)
			continue;	/* passed meanwhile */
		if (st == SHMBUS_LEASE_ACKED || st == SHMBUS_LEASE_DEAD ||
		    st == SHMBUS_LEASE_FREE)
			continue;
		/* R17: pairs with A17 (readers of the lease's word). */
		if (!cas_pair(&l->ctl, c, dl,
			      gctl(SHMBUS_LEASE_DEAD, SHMBUS_NO_MEMBER,
				   gctl_deliveries(c), gctl_gen(c) + 1), dl))
			break;
		/* g->avail, a hint, is made true by the next maintenance. */
	}
	return sb_floor_advance(m->g, m->leases, m->wmask, m->ch,
				m->slot) > 0;
}

/*
 * Whether a group here may go on from p, a position the primary shipped:
 * this ring's end, or the start of a record of p's lap in it.  Not one
 * inside a gap this ring was given (sb_apply_restart()), nor one that is
 * no record's start (a frame's bytes are checked, not their sense): the
 * group would find nothing to read there, ever.
 */
static bool resumable(struct shmbus_channel *ch, uint64_t p, uint64_t upto)
{
	uint64_t seq, size;
	uint32_t type, len;

	return p == upto || (p < upto && sb_rec_look(ch, p, UINT64_MAX, &type,
						     &len, &seq, &size) == 1);
}

/* Shared: the floor and the claim word both to f, once nothing is
 * claimed past the floor here. */
static int shared_raise(struct shmbus_group *m, uint64_t f, uint64_t upto)
{
	uint64_t fp, fs, cp, cs;

	sb_pair_read(&m->g->floor_pos, &fp, &fs);
	sb_pair_read(&m->g->claim_pos, &cp, &cs);
	if (f <= fp)
		return 0;
	if ((cs != fs || cp != fp) && shared_settle_below(m, f)) {
		sb_pair_read(&m->g->floor_pos, &fp, &fs);
		sb_pair_read(&m->g->claim_pos, &cp, &cs);
		if (f <= fp)
			return 0;
	}
	if (cs != fs || cp != fp)
		return -EBUSY;	/* claims past f: again at the next state */
	if (!resumable(m->ch, f, upto))
		return -EBUSY;	/* the next floor, perhaps */
	/* The claim word first (no claim starts below f from now on), then
	 * the floor: one claim number, recorded as passed. */
	if (!cas_pair(&m->g->claim_pos, cp, cs, f, cs + 1))	/* R16 */
		return -EBUSY;
	if (!sb_lease_record(m->g, &m->leases[cs & m->wmask], cs,
			     gctl(SHMBUS_LEASE_DEAD, SHMBUS_NO_MEMBER, 0, 0),
			     0, fp, f, 0, 0, SHMBUS_NO_MEMBER, NULL))
		return -EBUSY;
	sb_floor_advance(m->g, m->leases, m->wmask, m->ch, m->slot);
	return 0;
}

/* No edge: a word that only grows to v (statistics-like: read by
 * claims as a hint for the redelivered flag). */
static void raise_word(uint64_t *w, uint64_t v)
{
	uint64_t cur = load_relaxed64(w);

	/* No edge (see above). */
	while (cur < v && !cas_weak_relaxed64(w, &cur, v))
		;
}

/* The floor to the lowest lane, however far that is, but not past upto
 * (this ring's end): a copy whose lanes the primary's moved more than a
 * ring between two states follows them (sb_lanes_floor() takes such a
 * move for damage, and the floor's slot would hold this ring's producers
 * for good once it is primary). */
static void lanes_floor_upto(struct shmbus_group *m, uint64_t upto)
{
	sb_lanes_floor_by(m, UINT64_MAX, upto);
}

/* Lane ln, whose word and acked were read as c and a, to go on from `to`,
 * taken from its holder if it has one (its late ack gets -ESTALE); its
 * delivery cursor only up: what a holder delivered past `to` comes again
 * flagged.  Whether the lane was still as read. */
static bool lane_move(struct shmbus_lane *ln, uint64_t c, uint64_t a,
		      uint64_t to)
{
	uint64_t n = c;

	if (gctl_state(c) != SHMBUS_LANE_FREE)
		n = gctl(SHMBUS_LANE_FREE, SHMBUS_NO_MEMBER, 0, gctl_gen(c) + 1);
	/* R18: pairs with A18: the next owner starts at `to`. */
	if (!cas_pair(&ln->ctl, c, a, n, to))
		return false;
	raise_word(&ln->next, to);
	return true;
}

/* Lanes: each lane's acked raised to the primary's (at least f, at most
 * upto), then the floor.  A lane held here (by a member refused since
 * this host became a standby, or by a dead one) is taken from its
 * holder, as the maintenance takes a stuck owner's: its late ack gets
 * -ESTALE. */
static int lanes_raise(struct shmbus_group *m, uint64_t f,
		       const uint64_t acked[64], const uint64_t next[64],
		       uint64_t upto)
{
	int rc = 0;

	for (uint32_t i = 0; i < m->nlanes; i++) {
		struct shmbus_lane *ln = &m->lanes[i];
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);
		uint64_t to = acked[i] > f ? acked[i] : f;

		if (to > upto)
			to = upto;
		if (a >= to)
			continue;
		if (!resumable(m->ch, to, upto)) {
			rc = -EBUSY;
			continue;
		}
		if (!lane_move(ln, c, a, to))
			rc = -EBUSY;	/* changed meanwhile: the next state */
	}
	/* What the primary's owners delivered comes again flagged here
	 * (sync_lane() in group_lanes.c): no further than this ring holds,
	 * whose later positions may be another epoch's records. */
	for (uint32_t i = 0; next && i < m->nlanes; i++)
		raise_word(&m->lanes[i].next, next[i] < upto ? next[i] : upto);
	lanes_floor_upto(m, upto);
	return rc;
}

static const uint64_t no_lanes[64];

/* A standby's agent waits for the maintenance lock: its next records may
 * need the copy raised.  A maintenance holds it for microseconds; the
 * agent, whose acknowledgements the primary waits for, waits at most
 * APPLY_WAIT_NS, then gives this state up (the next one comes 20 ms
 * later).  It never takes the lock from a live holder before the second
 * every maintenance waits (group_maint.c): a holder replaced early (this
 * host's reaper, descheduled under load) would go on, and its
 * resolve_unrecorded() could see the raise half made, which the lock is
 * here to prevent. */
#define APPLY_WAIT_NS	INT64_C(100000000)	/* 100 ms */

static bool apply_lock(struct shmbus_group *m)
{
	int64_t t0 = sb_now_ns();

	for (unsigned n = 0; !sb_group_maint_trylock(m, SB_MAINT_STUCK_NS);
	     n++) {
		struct timespec ts = { 0, 20000 };

		if (sb_elapsed(sb_now_ns(), t0) > APPLY_WAIT_NS)
			return false;
		if (n < 64)
			sched_yield();
		else
			nanosleep(&ts, NULL);
	}
	return true;
}

int sb_group_state_apply(shmbus_channel *ch, const char *dir,
			 const char *chan, const struct sb_group_state *st,
			 uint64_t upto)
{
	struct shmbus_group_attr a;
	struct shmbus_group *m;
	char name[64], dl[64];
	uint64_t f;
	int fd, rc;

	memcpy(name, st->name, sizeof(name));
	name[sizeof(name) - 1] = 0;
	memcpy(dl, st->dead_letter, sizeof(dl));
	dl[sizeof(dl) - 1] = 0;
	if (!sb_name_ok(name, 63) || (dl[0] && !sb_name_ok(dl, 63)))
		return -EINVAL;
	memset(&a, 0, sizeof(a));
	a.mode = (enum shmbus_group_mode)st->mode;
	a.window = st->window;
	a.lanes = st->lanes;
	/* An older primary's limit past what a count holds: its most. */
	a.max_deliveries = st->max_deliveries > SB_DELIVERIES_MAX &&
				   st->max_deliveries != UINT32_MAX
			   ? SB_DELIVERIES_MAX : st->max_deliveries;
	a.lease_ns = st->lease_ns;
	a.start = SHMBUS_START_OLDEST;
	a.dead_letter = dl[0] ? dl : NULL;
	if ((unsigned)a.mode > SHMBUS_GROUP_SINGLE_ACTIVE)
		return -EINVAL;
	fd = sb_group_open_file(ch, dir, chan, name, &a);
	if (fd < 0)
		return fd;
	m = sb_group_map(ch, fd, false, &rc);
	close(fd);
	if (!m)
		return rc;
	/* Under the removers' lock held shared, as a maintenance by a
	 * handle that is no member (sb_group_maintain_kept()): a removal in
	 * direct mode waits for the update (20 ms at most) before it gives
	 * the channel's slot back, so that the raise never writes the floor
	 * into a slot a subscriber took since.  Its own descriptor, closed by
	 * sb_group_unmap(), drops the lock. */
	if (m->fd < 0 || flock(m->fd, LOCK_SH | LOCK_NB) < 0 ||
	    sb_group_deleted(m, true)) {
		sb_group_unmap(m);
		return -EIDRM;	/* a removal in flight: the next state */
	}
	/* Under the maintenance lock: shared_raise() moves the claim word,
	 * then records that claim as passed.  A maintenance between the two
	 * (this host's reaper) would take it for a claim whose winner died
	 * before recording it and record it AVAILABLE (over our DEAD word,
	 * if its seq is not stored yet): the floor would stay below f, and
	 * the records the primary ships next, which only f allows, would lap
	 * the copy until the next state. */
	if (!apply_lock(m)) {
		sb_group_unmap(m);
		return -ENOLCK;
	}
	f = st->floor < upto ? st->floor : upto;
	if (m->mode == SHMBUS_GMODE_SHARED) {
		rc = shared_raise(m, f, upto);
		/* Flagged here: what the primary delivered (its claims'
		 * frontier), no further than this ring holds. */
		if (st->mode == SHMBUS_GMODE_SHARED)
			raise_word(&m->g->redeliver_below,
				   st->delivered_to < upto ? st->delivered_to
							   : upto);
	} else if (st->mode == m->mode && st->lanes == m->nlanes) {
		rc = lanes_raise(m, f, st->lane_acked, st->lane_next, upto);
	} else {	/* lanes of other settings: only the floor holds */
		rc = lanes_raise(m, f, no_lanes, NULL, upto);
	}
	sb_group_maint_release(m);
	sb_group_unmap(m);
	return rc;
}

/* Group `group` of u->ch: its lapped lanes to u->to (sb_group_lanes_unlap). */
struct unlap {
	shmbus_channel *ch;
	const char *dir;
	uint64_t head, to;
	int moved, err;
};

/* Lane i of m to u->to if its position is one head wrote over; whether
 * it moved, and from where (*from).  Retried while its word changes under
 * us (a member of this host's still joined, a maintenance). */
static bool unlap_lane(struct shmbus_group *m, uint32_t i,
		       const struct unlap *u, uint64_t *from)
{
	struct shmbus_lane *ln = &m->lanes[i];

	for (int tries = 0; tries < 100; tries++) {
		/* A18: pairs with R18 (the lane's last change). */
		uint64_t c = load_acquire64(&ln->ctl);
		uint64_t a = load_relaxed64(&ln->acked);

		/* By position, not by what the ring holds there now: the
		 * bytes at a lapped position may be a later record's
		 * payload that reads as a record of a's lap. */
		if (a >= u->to || not_overwritten(u->ch, a, u->head))
			return false;
		if (lane_move(ln, c, a, u->to)) {
			*from = a;
			return true;
		}
	}
	return false;
}

/*
 * The removers' lock shared on m's own descriptor (the file it maps), for
 * a pass that writes the group's floor into the channel's slot once, not
 * again at the next scan: a removal under way holds it for microseconds,
 * so it is waited for as one remover waits for another (20 ms at most,
 * lock_for_removal() in group_file.c).  0; -EBUSY: still held; -EIDRM:
 * the group is deleted (its slot may be someone else's by now).
 */
static int lock_for_pass(struct shmbus_group *m)
{
	if (m->fd < 0)
		return -EBADF;	/* sb_group_map() could not keep it */
	for (int i = 0; flock(m->fd, LOCK_SH | LOCK_NB) < 0; i++) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		if (i == 20)
			return -EBUSY;
		usleep(1000);
	}
	return sb_group_deleted(m, true) ? -EIDRM : 0;
}

/*
 * Under the removers' lock held shared, as a maintenance by a handle
 * that is no member (sb_group_maintain_kept()): a removal in direct mode
 * waits for the pass before it gives the channel's slot back, so that
 * the floor is never written into a slot a subscriber took since.
 *
 * Not under the maintenance lock: this host's reaper may maintain the
 * copy meanwhile, and a member joined here before the host stood by may
 * acknowledge, leave or maintain (the fence refuses it only joins and
 * takes).  None of that needs keeping out.  A lane moves by one CAS of
 * its word {ctl, acked} from the values judged (lane_move()), which is
 * an owner's acknowledgement and give-back at once, both of which every
 * maintenance already runs beside: a change between our look and our CAS
 * fails it, and we look again; a hand-over or ack after it fails with
 * the word it expected.  The floor only rises, to the smallest acked,
 * and each acked only rises here: the one pass that lowers them, a
 * rejoin's cut, runs in the linker thread, which a promotion stops
 * first and a start has not started yet.
 * The slot takes the floor as a maximum (sb_floor_publish()).  A
 * standby's update takes the lock for a shared copy's raise, a claim
 * moved then recorded in two steps; lanes have no such step.
 */
static int unlap_group(const char *group, void *arg)
{
	struct unlap *u = arg;
	struct shmbus_group *m;
	uint64_t lowest = UINT64_MAX, from;
	int rc, moved = 0;

	m = sb_group_open_map(u->ch, u->dir, group, false, &rc);
	if (m && (rc = lock_for_pass(m))) {
		sb_group_unmap(m);
		m = NULL;
	}
	if (!m) {
		if (!u->err && rc != -EIDRM)
			u->err = rc;
		return 0;
	}
	for (uint32_t i = 0; m->mode != SHMBUS_GMODE_SHARED && i < m->nlanes;
	     i++) {
		if (unlap_lane(m, i, u, &from)) {
			moved++;
			if (from < lowest)
				lowest = from;
		} else if (!not_overwritten(u->ch,
					    load_relaxed64(&m->lanes[i].acked),
					    u->head) &&
			   load_relaxed64(&m->lanes[i].acked) < u->to &&
			   !u->err) {
			u->err = -EBUSY;	/* it kept changing */
		}
	}
	if (moved) {
		/* One loss for the group, from its lowest lane on: the bytes
		 * skipped, not once per lane. */
		add_relaxed64(&m->g->lost_bytes, u->to - lowest);
		store_relaxed64(&m->g->loss_from, lowest);
		store_relaxed64(&m->g->loss_to, u->to);
		u->moved += moved;
	}
	/* Past a lap, or lanes that moved on while the floor could not: the
	 * floor to the lowest lane, by more than a ring if need be. */
	if (m->mode != SHMBUS_GMODE_SHARED)
		lanes_floor_upto(m, u->head);
	sb_group_unmap(m);
	return 0;
}

int sb_group_lanes_unlap(shmbus_channel *ch, const char *dir,
			 const char *chan)
{
	struct unlap u = { ch, dir, sb_ring_head(ch), 0, 0, 0 };
	int n;

	/* The first record past what head overwrote (an index entry), or
	 * head: every lapped lane goes on from there. */
	sb_sub_find_oldest(ch, u.head, &u.to);
	if (u.to == 0)
		return 0;	/* nothing was overwritten */
	n = sb_group_list(dir, chan, unlap_group, &u);
	if (n < 0)
		return n;
	return u.moved ? u.moved : u.err;
}
