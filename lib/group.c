/* SPDX-License-Identifier: MIT */
/*
 * group.c - the consumer-group API: join, leave, poll, read, ack, nack,
 * extend, stats; the wait is group_wait.c's.  The file is group_file.c's;
 * the modes' mechanics are group_shared.c's and group_lanes.c's; what
 * dead and stuck members leave is group_maint.c's; reading a group from
 * outside is group_state.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "contract.h"
#include "group.h"

#define DEFAULT_WINDOW		256u
#define DEFAULT_LANES		16u
#define DEFAULT_DELIVERIES	5u
#define DEFAULT_LEASE_NS	INT64_C(30000000000)

SHMBUS_EXPORT void shmbus_group_attr_init(struct shmbus_group_attr *a)
{
	if (!a)
		return;
	memset(a, 0, sizeof(*a));
	a->mode = SHMBUS_GROUP_SHARED;
	a->window = DEFAULT_WINDOW;
	a->lanes = DEFAULT_LANES;
	a->max_deliveries = DEFAULT_DELIVERIES;
	a->lease_ns = DEFAULT_LEASE_NS;
	a->start = SHMBUS_START_NEWEST;
}

/* The settings a new group gets from `a` (NULL: the defaults), checked
 * and with the defaults filled in.  0 or -EINVAL. */
int sb_group_settings(const struct shmbus_group_attr *a,
		      struct shmbus_group_attr *out)
{
	shmbus_group_attr_init(out);
	if (!a)
		return 0;
	if ((unsigned)a->mode > SHMBUS_GROUP_SINGLE_ACTIVE ||
	    (unsigned)a->start > SHMBUS_START_OLDEST || a->lease_ns < 0 ||
	    a->lease_ns > SB_LEASE_MAX_NS ||
	    (a->window && (a->window > SHMBUS_GROUP_MAX_WINDOW ||
			   (a->window & (a->window - 1)))) ||
	    a->lanes > SHMBUS_GROUP_LANES ||
	    /* A lease counts deliveries in 16 bits (shmbus/group.h). */
	    (a->max_deliveries > SB_DELIVERIES_MAX &&
	     a->max_deliveries != UINT32_MAX) ||
	    /* The group's file keeps the name in 64 bytes: a longer one
	     * would be cut, and name another channel. */
	    (a->dead_letter && !sb_name_ok(a->dead_letter, 63)))
		return -EINVAL;
	out->mode = a->mode;
	out->start = a->start;
	out->dead_letter = a->dead_letter;
	if (a->window)
		out->window = a->window;
	if (a->lanes)
		out->lanes = a->lanes;
	if (a->max_deliveries)
		out->max_deliveries = a->max_deliveries;
	if (a->lease_ns)
		out->lease_ns = a->lease_ns;
	if (out->mode == SHMBUS_GROUP_SINGLE_ACTIVE)
		out->lanes = 1;
	if (out->mode == SHMBUS_GROUP_SHARED)
		out->lanes = 0;
	return 0;
}

static int take_member(struct shmbus_group *m, const char *name)
{
	uint32_t self = (uint32_t)getpid();

	for (uint32_t j = 0; j < SHMBUS_GROUP_MEMBERS; j++) {
		struct shmbus_member *r = &m->members[j];
		uint64_t o = load_relaxed64(&r->owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE)
			continue;
		/* Ours alone: the maintenance frees a record (release)
		 * only once nothing names it. */
		/* A22: pairs with R22 (the record freed). */
		if (!cas_strong_seqcst64(&r->owner, &o,
					 owner_word(SHMBUS_SLOT_BUSY, self)))
			continue;
		store_relaxed64(&r->gen, load_relaxed64(&r->gen) + 1);
		store_relaxed64(&r->intent_seq, UINT64_MAX);
		store_relaxed64(&r->delivered, 0);
		store_relaxed64(&r->acked, 0);
		store_relaxed64(&r->stale, 0);
		store_relaxed64(&r->order, add_relaxed64(&m->g->member_seq, 1));
		store_relaxed64((uint64_t *)&r->joined_ns,
				(uint64_t)time(NULL) * 1000000000u);
		store_relaxed64((uint64_t *)&r->looked_ns,
				(uint64_t)sb_now_ns());
		memset(r->name, 0, sizeof(r->name));
		snprintf(r->name, sizeof(r->name), "%s", name);
		memset(r->comm, 0, sizeof(r->comm));
		prctl(PR_GET_NAME, r->comm);
		/* Release (and the Dekker pair with shmbus_group_delete():
		 * either we see its DELETED flag or it sees us). */
		/* R22: pairs with A22; and F6 with sb_group_remove(). */
		store_seqcst64(&r->owner, owner_word(SHMBUS_SLOT_ACTIVE, self));
		m->me = j;
		m->rec = r;
		m->self = self;
		return 0;
	}
	return -ENOSPC;
}

/*
 * Whether members may take messages from the channel's group here: not
 * while this host is a standby for it, hands it over or cuts it back
 * (the fence not OPEN): a standby's copy of a group only follows the
 * primary's, whose members take the same messages.  -EROFS, or -EAGAIN
 * while the ring is being cut back (a few ms).  No edge: a member that
 * claims as the fence closes takes one poll's messages more at most,
 * which the standby's copy settles once the primary's floor passes them
 * (sb_group_state_apply()).
 */
static int refused_by(uint32_t fence)
{
	uint32_t f = SHMBUS_FENCE_STATE(fence);

	if (f == SHMBUS_FENCE_OPEN)
		return 0;
	return f == SHMBUS_FENCE_CUT ? -EAGAIN : -EROFS;
}

int sb_group_refused(struct shmbus_channel *ch)
{
	return refused_by(load_relaxed32(&ch->daemon->fence));
}

/* In a fork's child, the copy of a parent's member: every call but leave
 * says -EPERM (its record, leases and lanes are the parent's). */
static void member_forked(struct sb_forkable *f)
{
	sb_container_of(f, struct shmbus_group, fork)->forked = true;
}

static shmbus_group *join(shmbus_channel *ch, const char *group,
			  const char *member, const struct shmbus_group_attr *a)
{
	struct shmbus_group_attr s;
	struct shmbus_group *m;
	int fd, rc;

	sb_bus_reason_forget();
	if (!ch || !sb_name_ok(group, 63) || !sb_name_ok(member, 31) ||
	    sb_group_settings(a, &s)) {
		errno = EINVAL;
		return NULL;
	}
	if (ch->rdonly || ch->no_sub) {
		errno = EPERM;
		return NULL;
	}
	/* Early, so that a standby gets no group file from a refused join;
	 * checked again below, on the edge that counts (F7). */
	rc = sb_group_refused(ch);
	if (rc) {
		errno = -rc;
		return NULL;
	}
	/* A channel the daemon handed over knows no directory: once its
	 * connection is gone (shmbus_disconnect()), no group of it can be
	 * made or found (a path from an empty directory would be "/"). */
	if (ch->bus)
		fd = sb_bus_group(ch->bus, ch->name, ch->data_id, group, &s);
	else if (!ch->dir[0])
		fd = -ENOTCONN;
	else
		fd = sb_group_open_file(ch, ch->dir, ch->name, group, &s);
	if (fd < 0) {
		errno = -fd;
		return NULL;
	}
	m = sb_group_map(ch, fd, false, &rc);
	close(fd);
	if (!m) {
		errno = -rc;
		return NULL;
	}
	m->direct = !ch->bus;
	snprintf(m->dir, sizeof(m->dir), "%s", ch->dir);
	if (m->mode != (uint32_t)s.mode) {
		rc = -EEXIST;
		goto fail;
	}
	if (m->nlanes)
		for (uint32_t i = 0; i < m->nlanes; i++) {
			m->lane[i].starts = calloc(m->lane_cap,
						   sizeof(uint64_t));
			if (!m->lane[i].starts) {
				rc = -ENOMEM;
				goto fail;
			}
		}
	if (ch_overwrite(ch) && !(m->buf = malloc(ch->max_msg ? ch->max_msg
							       : 1))) {
		rc = -ENOMEM;
		goto fail;
	}
	rc = take_member(m, member);
	if (rc == -ENOSPC) {	/* dead members' records, perhaps */
		sb_group_maintain_unjoined(m);
		rc = take_member(m, member);
	}
	if (rc)
		goto fail;
	/* F6: the pair of shmbus_group_join() and sb_group_remove(): one sees
	 * the other (sb_group_deleted()'s load of the flag). */
	if (sb_group_deleted(m, false)) {
		shmbus_group_leave(m);
		errno = EIDRM;
		return NULL;
	}
	/* F7: pairs with F7 in sb_ring_cut_begin() (rejoin.c checks the
	 * groups' members after it): the cut sees us, or we see its fence
	 * and leave.  No edge of its own for the load. */
	fence_seqcst();
	rc = sb_group_refused(ch);
	if (rc) {
		shmbus_group_leave(m);
		errno = -rc;
		return NULL;
	}
	/* Lanes for us at once, rather than at the next scan. */
	if (m->nlanes)
		sb_group_maintain_as(m, NULL, (uint32_t)getpid());
	sb_fork_track(&m->fork, member_forked);
	return m;
fail:
	sb_group_unmap(m);
	errno = -rc;
	return NULL;
}

/* With cancellation off (sb_cancel_off()): making the group's file holds
 * the process's create lock across open(), and a member's record taken
 * half way would stay taken. */
SHMBUS_EXPORT shmbus_group *shmbus_group_join(shmbus_channel *ch,
					      const char *group,
					      const char *member,
					      const struct shmbus_group_attr *a)
{
	int old = sb_cancel_off(), err;
	shmbus_group *m = join(ch, group, member, a);

	err = errno;
	sb_cancel_restore(old);
	errno = err;
	return m;
}

SHMBUS_EXPORT void shmbus_group_leave(shmbus_group *m)
{
	uint64_t mine;

	if (!m)
		return;
	sb_fork_untrack(&m->fork);
	mine = owner_word(SHMBUS_SLOT_ACTIVE, m->self);
	/* A record taken from us (the maintenance thought us dead: a pid
	 * reused; or a fork's copy of the handle) is another member's: its
	 * leases and lanes are not ours to give back, nor it to free.
	 * A22: pairs with R22 (the record's owner word). */
	if (m->rec && m->self == (uint32_t)getpid() &&
	    load_acquire64(&m->rec->owner) == mine) {
		if (m->mode == SHMBUS_GMODE_SHARED) {
			uint64_t fp, fs, cp, cs;

			sb_pair_read(&m->g->floor_pos, &fp, &fs);
			sb_pair_read(&m->g->claim_pos, &cp, &cs);
			for (uint64_t x = fs; x < cs && cs - fs <= m->window;
			     x++) {
				struct shmbus_lease_slot *l =
					&m->leases[x & m->wmask];
				/* A17: pairs with R17 (the lease's last
				 * change). */
				uint64_t c = load_acquire64(&l->ctl);

				/* What we were handed and delivered comes
				 * again flagged; a lease none of whose
				 * messages we delivered yet, as new. */
				bool none = m->cur.on && m->cur.seq == x &&
					    m->cur.ctl == c &&
					    m->cur.given == 0;

				if (gctl_state(c) == SHMBUS_LEASE_LEASED &&
				    gctl_member(c) == m->me)
					sb_shared_settle(m, x, c, none ?
							 SB_SETTLE_GIVE :
							 SB_SETTLE_LEFT, 0);
			}
		} else {
			sb_lanes_leave(m);
		}
		store_relaxed64(&m->rec->intent_seq, UINT64_MAX);
		sb_member_unsleep(m, m->me);
		/* R22: pairs with A22: our last stores before the record's
		 * reuse. */
		cas_strong_seqcst64(&m->rec->owner, &mine,
				    owner_word(SHMBUS_SLOT_FREE, 0));
		if (m->nlanes)	/* our lanes to the others now */
			sb_group_maintain_unjoined(m);
	}
	sb_group_unmap(m);
}

/* Direct mode's maintenance from a member's call, when the group's file
 * asks for it (maint_at), at most once a millisecond per member. */
int sb_member_maybe_maintain(struct shmbus_group *m)
{
	int64_t now = sb_now_ns();

	if (now < m->maint_next ||
	    now < (int64_t)load_relaxed64((uint64_t *)&m->g->maint_at))
		return 0;
	m->maint_next = now + 1000000;	/* own look: 1 ms at most */
	return sb_group_maintain_direct(m);
}

/* Direct mode: the publisher for poison messages, on the channel the group
 * was made with, opened only once a poison message waits for it (a file
 * that any member may write names it: its name must not make every member
 * take a producer slot, or a single producer's place, in some channel).
 * A channel that is missing comes back later; one that is not a
 * multi-producer channel never takes poison (dropped and counted). */
static void dead_letter_open(struct shmbus_group *m)
{
	struct shmbus_channel_info in;
	char name[64];

	memcpy(name, m->g->dead_letter, sizeof(name));
	name[sizeof(name) - 1] = 0;
	if (!sb_name_ok(name, 63)) {
		m->dl_drop = true;
		return;
	}
	m->dl_ch = shmbus_channel_open(m->dir, name);
	if (!m->dl_ch)
		return;
	if (shmbus_channel_info(m->dl_ch, &in) ||
	    in.producers != SHMBUS_MULTI_PRODUCER) {
		m->dl_drop = true;
	} else {
		m->dl_pub = shmbus_pub_open(m->dl_ch, NULL);
		if (m->dl_pub) {
			/* A poll never hangs on another channel's producers
			 * (a dead letter not sent now goes at a later
			 * maintenance). */
			sb_pub_bounded(m->dl_pub);
			return;
		}
	}
	shmbus_channel_close(m->dl_ch);
	m->dl_ch = NULL;
}

/* A maintenance run (through shmbusd the daemon runs them: no dead
 * letters here), again with the dead-letter publisher if the first kept
 * poison for want of it. */
int sb_group_maintain_direct(struct shmbus_group *m)
{
	uint32_t self = (uint32_t)getpid();
	int rc;

	if (sb_group_deleted(m, false))
		return -EIDRM;
	m->dl_wanted = false;
	rc = sb_group_maintain_as(m, m->dl_pub, self);
	if (!m->direct || !m->dl_wanted || m->dl_pub || m->dl_drop)
		return rc;
	dead_letter_open(m);
	return m->dl_pub || m->dl_drop ? sb_group_maintain_as(m, m->dl_pub, self)
				       : rc;
}

int sb_member_gone_check(struct shmbus_group *m)
{
	if (!m || !m->rec)
		return -EINVAL;
	if (m->forked)
		return -EPERM;	/* its record is its parent's (fork.c) */
	/* No DELETED flag: no remover removes a group under a member that
	 * joined (F6), and one that sees us clears it again.  Our record
	 * taken from us (the maintenance thought us dead: a pid reused?) */
	if (load_relaxed64(&m->rec->owner) !=
	    owner_word(SHMBUS_SLOT_ACTIVE, m->self))
		return -EIDRM;
	return 0;
}

/*
 * sb_member_gone_check(), and whether this member may take messages
 * now: not while its host does not take writes on the channel (acks,
 * nacks and extends still work).  A batch it was part way through
 * delivering when the fence closed (or closed and opened again since it
 * was taken) is given back, to come again whole (flagged): an ack of it
 * must not count for messages never delivered, and a standby's copy may
 * have passed it meanwhile.
 */
int sb_member_take_check(struct shmbus_group *m)
{
	int rc = sb_member_gone_check(m);
	uint32_t w;

	if (rc)
		return rc;
	/* No edge: see sb_group_refused(). */
	w = load_relaxed32(&m->ch->daemon->fence);
	rc = refused_by(w);
	if (m->cur.on && (rc || w != m->cur.fence)) {
		m->cur.on = false;
		/* As a nack: some of it reached the application. */
		sb_shared_settle(m, m->cur.seq, m->cur.ctl, SB_SETTLE_NACK,
				 0);
	}
	return rc;
}

/* The message of a shared lease's range at p, for the caller. */
static int shared_msg(struct shmbus_group *m, uint64_t p, uint64_t end,
		      struct sb_gmsg *out, uint64_t *next)
{
	struct shmbus_channel *ch = m->ch;

	while (p < end) {
		uint32_t type, len;
		uint64_t seq = 0, size, head;
		int rc = sb_rec_look(ch, p, UINT64_MAX, &type, &len, &seq,
				     &size);
		const uint8_t *data;

		if (rc == 2)
			return 2;
		if (rc < 0)
			return rc;
		if (rc != 1 || size > end - p) {
			/* Not the record the claim saw there: lapped, on an
			 * overwrite channel (its messages are lost); else
			 * damage. */
			if (!ch_overwrite(ch))
				return -EBADMSG;
			fence_acquire();	/* A2's check, as below */
			head = load_relaxed64(&ch->pl->head);
			return not_overwritten(ch, p, head) ? -EBADMSG : 2;
		}
		data = (const uint8_t *)rec_at(ch, p) + SHMBUS_REC_HDR;
		if (type == SHMBUS_REC_MSG && ch_overwrite(ch)) {
			memcpy(m->buf, data, len);
			/* A2's check: the copy is of this lap. */
			fence_acquire();
			head = load_relaxed64(&ch->pl->head);
			if (!not_overwritten(ch, p, head))
				return 2;
			data = m->buf;
		}
		if (type == SHMBUS_REC_MSG) {
			out->data = data;
			out->len = len;
			out->seq = seq;
			out->pos = p;
			out->end = p + size;
			out->key = sb_msg_key(data, len);
			*next = p + size;
			return 1;
		}
		p += size;
	}
	return 0;
}

/* Overwrite policy: the lease's bytes were overwritten before we could
 * deliver them: the messages are lost, counted, and the lease done. */
static void shared_lost(struct shmbus_group *m, uint64_t seq, uint64_t ctl)
{
	struct shmbus_lease_slot *l = &m->leases[seq & m->wmask];
	uint64_t start = load_relaxed64(&l->start), end = load_relaxed64(
							 &l->end);
	uint64_t msgs = load_relaxed64(&l->msgs), dl;

	dl = load_relaxed64((uint64_t *)&l->deadline);
	/* A15: pairs with R15 (a lease's seq, stored last): its fields. */
	/* R17: pairs with A17 (readers of the lease's word): the holder's reads
	 * come first. */
	if (load_acquire64(&l->seq) != seq ||
	    !cas_pair(&l->ctl, ctl, dl, gctl(SHMBUS_LEASE_DEAD,
					     SHMBUS_NO_MEMBER,
					     gctl_deliveries(ctl),
					     gctl_gen(ctl) + 1), dl))
		return;
	add_relaxed64(&m->g->lost, msgs);
	add_relaxed64(&m->g->lost_bytes, end - start);
	store_relaxed64(&m->g->loss_from, start);
	store_relaxed64(&m->g->loss_to, end);
	sb_floor_advance(m->g, m->leases, m->wmask, m->ch, m->slot);
}

/* A keyed or single-active lease is {lane, tag | lane generation, the
 * record's position}: the tag (this member's record, from 1) tells a
 * lease of another member, or none, from one taken back. */
static uint64_t lane_tag(const struct shmbus_group *m)
{
	return (uint64_t)(m->me + 1) << 32;
}

static bool lane_lease_ours(const struct shmbus_group *m,
			    const struct shmbus_lease *l)
{
	return l->w[0] < m->nlanes &&
	       (l->w[1] & ~(uint64_t)UINT32_MAX) == lane_tag(m);
}

static void to_user(const struct sb_gmsg *in, struct shmbus_group_msg *out,
		    uint64_t w0, uint64_t w1, uint64_t w2)
{
	out->data = in->data;
	out->len = in->len;
	out->deliveries = in->deliveries;
	out->seq = in->seq;
	out->pos = in->pos;
	out->key = in->key;
	out->lease.w[0] = w0;
	out->lease.w[1] = w1;
	out->lease.w[2] = w2;
}

/* Whether this member still holds lease (seq, ctl) of a shared group: its
 * word unchanged.  A lease taken back (its term passed: the member was
 * stopped, or slow) is another member's, and on a block channel its bytes
 * may be written over once that one acks. */
static bool shared_held(struct shmbus_group *m, uint64_t seq, uint64_t ctl)
{
	struct shmbus_lease_slot *l = &m->leases[seq & m->wmask];

	/* A15: pairs with R15 (a lease's seq, stored last). */
	if (load_acquire64(&l->seq) != seq)
		return false;
	/* A17: pairs with R17 (the lease's last change). */
	return load_acquire64(&l->ctl) == ctl;
}

/* A poll found nothing: what wait compares with. */
static void note_idle(struct shmbus_group *m)
{
	m->idle_head = load_relaxed64(&m->ch->pl->head);	/* compared */
	m->idle_ns = sb_now_ns();
}

/*
 * Shared mode: the lease being delivered (m->cur) first, then a new one.
 * A lease's messages are delivered in order across polls (a handler that
 * stops, or max, may leave some for the next call), and its ack counts
 * only once the last of them has been delivered (shmbus_group_ack()).
 */
static int shared_poll(struct shmbus_group *m, shmbus_group_handler fn,
		       void *arg, unsigned max)
{
	struct sb_cur *c = &m->cur;
	struct shmbus_group_msg um;
	struct sb_gmsg gm;
	unsigned n = 0;
	int rc;

	for (int leases = 0; leases < 64 && n < max; leases++) {
		uint64_t start, p;
		bool fresh = false;	/* taken in this call */

		if (!c->on) {
			if (n)
				break;	/* one lease a call */
			rc = sb_shared_take(m, max, &c->seq, &c->ctl, &start,
					    &c->end, &c->d);
			if (rc <= 0) {
				if (rc == 0)
					note_idle(m);
				sb_member_maybe_maintain(m);
				return rc;
			}
			c->on = true;
			c->next = start;
			c->given = 0;
			c->ack_wait = false;
			c->ack_due = false;
			/* No edge: compared only (sb_member_take_check()). */
			c->fence = load_relaxed32(&m->ch->daemon->fence);
			fresh = true;
		}
		while (n < max) {
			/* A lease taken back since it was taken or its last
			 * message handed over (a call ago, perhaps long):
			 * the rest is another member's to deliver, and its
			 * bytes may be written over. */
			if ((c->given || !fresh) &&
			    !shared_held(m, c->seq, c->ctl)) {
				add_relaxed64(&m->rec->stale, 1);
				c->on = false;
				break;
			}
			rc = shared_msg(m, c->next, c->end, &gm, &p);
			if (rc == 2) {
				shared_lost(m, c->seq, c->ctl);
				c->on = false;
				break;
			}
			if (rc < 0) {
				c->on = false;
				return n ? (int)n : rc;
			}
			if (rc == 0) {
				/* No message left: a lease given back that held
				 * none (padding only) is done at once. */
				c->on = false;
				if (!c->given)
					sb_shared_settle(m, c->seq, c->ctl,
							 SB_SETTLE_ACK, 0);
				break;
			}
			c->next = p;
			c->given++;
			gm.deliveries = c->d;
			to_user(&gm, &um, c->seq, c->ctl, 0);
			if (p >= c->end) {
				c->on = false;	/* the lease's last */
				/* An ack made before it counts once the
				 * call has handed it over (ack_due_settle()),
				 * not before: its bytes are the handler's
				 * until then. */
				c->ack_due = c->ack_wait;
			}
			n++;
			add_relaxed64(&m->g->delivered, 1);
			add_relaxed64(&m->rec->delivered, 1);
			if (fn(&um, arg))
				return (int)n;
		}
		if (n)
			break;
	}
	return (int)n;
}

/*
 * Shared mode: the ack of a lease made while some of its messages were
 * still to be delivered, made now that the last of them has been handed
 * over (shmbus_group_ack() said 0 for it: it must count).  Not when the
 * handler acked the last message itself (the lease is acked already).
 */
static void ack_due_settle(struct shmbus_group *m)
{
	struct sb_cur *c = &m->cur;

	if (!c->ack_due)
		return;
	c->ack_due = false;
	c->ack_wait = false;
	if (c->seq == m->acked_seq && c->ctl == m->acked_ctl)
		return;
	if (sb_shared_settle(m, c->seq, c->ctl, SB_SETTLE_ACK, 0) == 0) {
		m->acked_seq = c->seq;
		m->acked_ctl = c->ctl;
	}
}

/* shmbus_group_poll() but for the acks it owes (ack_due_settle()), which
 * shmbus_group_read() makes only once its copy is known whole. */
static int group_poll(shmbus_group *m, shmbus_group_handler fn, void *arg,
		      unsigned max)
{
	struct shmbus_group_msg um;
	struct sb_gmsg gm;
	int rc, n = 0;

	rc = sb_member_take_check(m);
	if (rc)
		return rc;
	if (!fn)
		return -EINVAL;
	if (!max)
		max = 64;
	if (m->mode == SHMBUS_GMODE_SHARED)
		return shared_poll(m, fn, arg, max);
	while ((unsigned)n < max) {
		uint32_t lane;

		rc = sb_lanes_take(m, &gm, &lane);
		if (rc < 0)
			return n ? n : rc;
		if (rc == 0) {
			if (!n) {
				note_idle(m);
				sb_member_maybe_maintain(m);
			}
			break;
		}
		to_user(&gm, &um, lane,
			lane_tag(m) | gctl_gen(m->lane[lane].ctl), gm.pos);
		n++;
		add_relaxed64(&m->g->delivered, 1);
		add_relaxed64(&m->g->redelivered, gm.deliveries > 1);
		add_relaxed64(&m->rec->delivered, 1);
		if (fn(&um, arg))
			break;
	}
	return n;
}

SHMBUS_EXPORT int shmbus_group_poll(shmbus_group *m, shmbus_group_handler fn,
				    void *arg, unsigned max)
{
	int rc = group_poll(m, fn, arg, max);

	if (m && m->mode == SHMBUS_GMODE_SHARED)
		ack_due_settle(m);
	return rc;
}

struct read_ctx {
	void *buf;
	size_t cap;
	struct shmbus_group_msg *msg;
	ssize_t rc;
};

/* After a copy from a block channel: whether the member still held the
 * message's lease once it was made, so that no byte of it was written
 * over (a held lease keeps the group's floor, and so producers, below
 * it).  An overwrite channel's copy is checked against head instead
 * (shared_msg(), the lanes' take). */
static bool copied_whole(struct shmbus_group *m,
			 const struct shmbus_group_msg *msg)
{
	if (sb_group_hook)
		sb_group_hook(SB_HOOK_COPIED);
	/* A17/A18's check: the copy's loads come before the lease's word
	 * below, as the A2 check orders an overwrite reader's copy before
	 * its load of head. */
	fence_acquire();
	/* A host that became a standby meanwhile: its replication writes
	 * records without waiting for the groups' floors. */
	if (sb_group_refused(m->ch))
		return false;
	if (m->mode == SHMBUS_GMODE_SHARED)
		return shared_held(m, msg->lease.w[0], msg->lease.w[1]);
	return sb_lanes_held(m, (uint32_t)msg->lease.w[0],
			     (uint32_t)msg->lease.w[1]);
}

static int read_one(const struct shmbus_group_msg *msg, void *arg)
{
	struct read_ctx *r = arg;

	*r->msg = *msg;
	if (msg->len > r->cap) {
		r->rc = -EMSGSIZE;
		return 1;
	}
	memcpy(r->buf, msg->data, msg->len);
	r->msg->data = r->buf;
	r->rc = msg->len;
	return 1;
}

SHMBUS_EXPORT ssize_t shmbus_group_read(shmbus_group *m, void *buf,
					size_t cap,
					struct shmbus_group_msg *msg)
{
	struct read_ctx r = { buf, cap, msg, -EAGAIN };
	bool ro;
	int rc;

	if (!msg || (!buf && cap))
		return -EINVAL;
	for (int tries = 0;; tries++) {
		r.rc = -EAGAIN;
		rc = group_poll(m, read_one, &r, 1);
		if (rc < 0)
			return rc;
		if (r.rc < 0 || ch_overwrite(m->ch) || copied_whole(m, msg))
			break;
		/* The lease was taken back while we copied, or the host
		 * stopped taking writes: the copy may hold bytes written over
		 * since.  Not delivered here: the message is another
		 * member's now, or (a shared lease still ours) given back as
		 * sb_member_take_check() gives back a batch under way, to go again at
		 * once. */
		ro = sb_group_refused(m->ch) != 0;
		add_relaxed64(&m->g->delivered, (uint64_t)-1);
		add_relaxed64(&m->rec->delivered, (uint64_t)-1);
		add_relaxed64(&m->rec->stale, !ro);
		if (m->mode == SHMBUS_GMODE_SHARED) {
			if (ro)
				sb_shared_settle(m, msg->lease.w[0],
						 msg->lease.w[1],
						 SB_SETTLE_NACK, 0);
			m->cur.on = false;
			m->cur.ack_due = false;
			m->cur.ack_wait = false;
		} else
			add_relaxed64(&m->g->redelivered,
				      (uint64_t)-(msg->deliveries > 1));
		if (tries == 7)
			return -EAGAIN;
	}
	if (r.rc == -EMSGSIZE) {
		/* Not delivered: it stays the next one, and is not counted
		 * (poll counted it as handed over). */
		add_relaxed64(&m->g->delivered, (uint64_t)-1);
		add_relaxed64(&m->rec->delivered, (uint64_t)-1);
		if (m->mode != SHMBUS_GMODE_SHARED)
			add_relaxed64(&m->g->redelivered,
				      (uint64_t)-(msg->deliveries > 1));
		if (m->mode == SHMBUS_GMODE_SHARED) {
			m->cur.on = true;
			m->cur.next = msg->pos;
			m->cur.given--;
			m->cur.ack_due = false;
		} else
			sb_lanes_settle(m, (uint32_t)msg->lease.w[0],
					(uint32_t)msg->lease.w[1],
					msg->lease.w[2], 0, SB_SETTLE_GIVE, 0);
	}
	if (m->mode == SHMBUS_GMODE_SHARED)
		ack_due_settle(m);
	return r.rc;
}

static int settle(shmbus_group *m, const struct shmbus_lease *l, int what,
		  int64_t delay_ns)
{
	int rc = sb_member_gone_check(m);

	if (rc)
		return rc == -EIDRM ? -ESTALE : rc;
	if (!l || delay_ns < 0)
		return -EINVAL;
	if (m->mode == SHMBUS_GMODE_SHARED) {
		struct sb_cur *c = &m->cur;

		if (c->on && l->w[0] == c->seq && l->w[1] == c->ctl) {
			/* Its last messages are still to be delivered: an
			 * ack waits for them, and counts once the last is
			 * handed over (ack_due_settle()); a nack gives the
			 * whole lease back, unless it was acked: then its
			 * messages must not come again. */
			if (what == SB_SETTLE_ACK) {
				/* Unless it was taken back meanwhile: the
				 * rest is another member's, and so is the
				 * ack. */
				if (!shared_held(m, c->seq, c->ctl)) {
					c->on = false;
					c->ack_wait = false;
					add_relaxed64(&m->rec->stale, 1);
					return -ESTALE;
				}
				c->ack_wait = true;
				return 0;
			}
			if (c->ack_wait)
				return -ESTALE;
			c->on = false;
		}
		/* The batch's lease acked already, by one of its messages'
		 * acks: the others' count with it. */
		if (what == SB_SETTLE_ACK && l->w[1] && l->w[0] == m->acked_seq &&
		    l->w[1] == m->acked_ctl)
			return 0;
		rc = sb_shared_settle(m, l->w[0], l->w[1], (uint32_t)what,
				      delay_ns);
		if (rc == 0 && what == SB_SETTLE_ACK) {
			m->acked_seq = l->w[0];
			m->acked_ctl = l->w[1];
		}
		return rc;
	}
	if (!lane_lease_ours(m, l))
		return -EINVAL;
	return sb_lanes_settle(m, (uint32_t)l->w[0], (uint32_t)l->w[1],
			       l->w[2], 0, what, delay_ns);
}

SHMBUS_EXPORT int shmbus_group_ack(shmbus_group *m,
				   const struct shmbus_lease *l)
{
	return settle(m, l, SB_SETTLE_ACK, 0);
}

SHMBUS_EXPORT int shmbus_group_nack(shmbus_group *m,
				    const struct shmbus_lease *l,
				    int64_t delay_ns)
{
	return settle(m, l, SB_SETTLE_NACK, delay_ns);
}

SHMBUS_EXPORT int shmbus_group_extend(shmbus_group *m,
				      const struct shmbus_lease *l,
				      int64_t ns)
{
	int rc = sb_member_gone_check(m);

	if (rc)
		return rc == -EIDRM ? -ESTALE : rc;
	if (!l || ns < 0)
		return -EINVAL;
	if (!ns)
		ns = m->lease_ns;
	if (m->mode == SHMBUS_GMODE_SHARED)
		return sb_shared_extend(m, l->w[0], l->w[1], ns);
	if (!lane_lease_ours(m, l))
		return -EINVAL;
	return sb_lanes_extend(m, (uint32_t)l->w[0], (uint32_t)l->w[1],
			       l->w[2], ns);
}

/* Fills *st from a group's file (m: a member's or an inspection's map). */
SHMBUS_EXPORT int shmbus_group_stats(shmbus_group *m,
				     struct shmbus_group_stats *st)
{
	if (!m || !st)
		return -EINVAL;
	sb_group_fill_stats(m, st);
	return 0;
}

SHMBUS_EXPORT int shmbus_group_maintain(shmbus_group *m)
{
	int rc = sb_member_gone_check(m);

	if (rc)
		return rc;
	return sb_group_maintain_direct(m);
}

SHMBUS_EXPORT int shmbus_publish_keyed(shmbus_pub *pub, uint64_t key,
				       const void *data, size_t len)
{
	struct iovec iov[2] = {
		{ .iov_base = &key, .iov_len = sizeof(key) },
		{ .iov_base = (void *)data, .iov_len = len },
	};

	if (!data && len)
		return -EINVAL;
	return shmbus_publishv(pub, iov, 2);
}
