/* SPDX-License-Identifier: MIT */
/*
 * repl_primary.c - a replicated channel on the primary: the agent that
 * ships committed records and judges the standby, and the reader of its
 * acknowledgements (repl_int.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl.h"
#include "repl_int.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"

/* What the standby must have for the channel's level, from its
 * acknowledged positions. */
static uint64_t standby_pos(const struct rchan *rc, uint64_t received,
			    uint64_t applied, uint64_t persisted)
{
	return rc->level == SHMBUS_ACK_APPLIED ? applied
		: rc->level == SHMBUS_ACK_STANDBY_PERSISTED ||
		  rc->level == SHMBUS_ACK_BOTH_PERSISTED ? persisted
		: received;
}

/* Where the channel's level stands, from the standby's acknowledgements
 * (and, for both_persisted, this host's journal). */
static uint64_t level_pos(struct rchan *rc)
{
	struct sb_repl_view v;
	uint64_t p = LOAD(&rc->persisted);

	switch (rc->level) {
	case SHMBUS_ACK_APPLIED:
		return LOAD(&rc->applied);
	case SHMBUS_ACK_STANDBY_PERSISTED:
		return p;
	case SHMBUS_ACK_BOTH_PERSISTED:
		sb_repl_read(rc->ch, &v);
		return v.local_persisted < p ? v.local_persisted : p;
	default:
		return LOAD(&rc->received);
	}
}

static bool reader_ships(void *arg, bool more);
static void judge(struct rchan *rc);
static void futex_wake_private(uint32_t *w);

/* The standby's acknowledgements on the agent's current link. */
static bool sync_waiting(void *arg)
{
	struct rchan *rc = arg;
	int64_t now = now_ns();

	/* A waiter now, or one a moment ago: between two synchronous
	 * round trips a producer waits for nothing while it publishes the
	 * next message, and the next acknowledgement comes soon. */
	if (sb_repl_sync_waiting(rc->ch, &rc->hint_reader))
		rc->reader_sync_ns = now;
	return now - rc->reader_sync_ns < SYNC_LINGER_NS;
}

static void *reader_main(void *arg)
{
	struct rchan *rc = arg;
	struct sbd_link *l = rc->plink;
	char why[512];

	sbd_thread_setup("sb-acks", true);
	/* While a sync waiter waits, its acknowledgement is looked for
	 * without sleeping (a wake-up less in its round trip). */
	repl.t->set_spin(l, SPIN_NS, sync_waiting, reader_ships, rc);

	for (;;) {
		struct rw_ack a;
		struct rw_hdr h;
		uint64_t prev;
		int rc2 = rw_recv_frame(repl.t, l, &h, &a, sizeof(a),
					(int)sync_ms() + PING_MS, why,
					sizeof(why));

		if (rc2 == 0 && (h.type != RW_ACK || h.len != sizeof(a))) {
			snprintf(why, sizeof(why), "frame type %u (%u bytes) "
				 "on an acknowledgement link", h.type, h.len);
			rc2 = -EBADMSG;
		}
		if (rc2 == 0 && h.chan != rc->id) {
			snprintf(why, sizeof(why), "an acknowledgement for "
				 "another channel (id %016" PRIx64 ")", h.chan);
			rc2 = -EBADMSG;
		}
		if (rc2 == 0 && h.epoch != LOAD(&repl.epoch)) {
			/* Only acknowledgements of the current epoch
			 * count; a live link never carries another. */
			snprintf(why, sizeof(why), "an acknowledgement of "
				 "epoch %" PRIu64 " (ours is %" PRIu64 ")",
				 h.epoch, LOAD(&repl.epoch));
			rc2 = -EBADMSG;
		}
		prev = LOAD(&rc->received);
		/* Each position only grows on a link (persisted may come
		 * late, below). */
		if (rc2 == 0 && (a.applied > a.received || a.received < prev ||
				 a.applied < LOAD(&rc->applied) ||
				 a.received > LOAD(&rc->sent_hi) ||
				 a.persisted > a.applied)) {
			snprintf(why, sizeof(why), "acknowledgement of %" PRIu64
				 "/%" PRIu64 "/%" PRIu64 " outside what was sent "
				 "(%" PRIu64 ")", a.received, a.applied,
				 a.persisted, LOAD(&rc->sent_hi));
			rc2 = -EBADMSG;
		}
		if (rc2) {
			if (!stopped(rc))
				LIMITED(&repl.rl_link, repl.link_errors, "link errors",
						"%s: link to %s lost: %s",
						rc->name, repl.t->peer(l), why);
			if (rc2 == -EBADMSG)
				sb_repl_count(rc->ch, SB_REPL_BAD, 1);
			STORE(&rc->link_dead, true);
			reader_ships(rc, false);
			rp_agent_wake(rc);
			return NULL;
		}
		/* Only grows: an older acknowledgement that was overtaken
		 * (a journal's sync reported late) never takes it back. */
		if (a.persisted < LOAD(&rc->persisted))
			a.persisted = LOAD(&rc->persisted);
		/* Progress is the channel's level moving: a standby that
		 * receives but cannot persist (its journal's disk full) is
		 * not in sync at a persisted level. */
		if (standby_pos(rc, a.received, a.applied, a.persisted) !=
		    standby_pos(rc, prev, LOAD(&rc->applied),
				LOAD(&rc->persisted)))
			STORE(&rc->progress_ns, now_ns());
		/* The shared positions first: the agent raises the
		 * watermark from rc->applied, and shmbus_pub_sync() must find
		 * them at least as far as the watermark. */
		sb_repl_acked(rc->ch, a.received, a.applied, a.persisted,
			      standby_pos(rc, a.received, a.applied,
					  a.persisted) >= LOAD(&rc->sent));
		STORE(&rc->applied, a.applied);
		STORE(&rc->received, a.received);
		STORE(&rc->persisted, a.persisted);
		STORE(&repl.acked_ns, lease_ns());
		/* A lease check before each acknowledgement: a primary that
		 * lost its lease (paused past it, say) acknowledges nothing. */
		if (rp_may_ack())
			sb_repl_watermark(rc->ch, level_pos(rc));
		/* While the agent sleeps (reader_ships()), what follows from
		 * the acknowledgement: the cursor, the standby in sync. */
		if (__atomic_load_n(&rc->reader_ships, __ATOMIC_RELAXED) &&
		    !pthread_mutex_trylock(&rc->ship_mu)) {
			judge(rc);
			pthread_mutex_unlock(&rc->ship_mu);
		}
	}
}

static void drop_link(struct rchan *rc, const char *why)
{
	struct sbd_link *l = rc->plink;

	if (!l)
		return;
	STORE(&rc->link_token, 0);
	if (why)
		LIMITED(&repl.rl_link, repl.link_errors, "link errors",
			"%s: link to %s dropped: %s", rc->name,
			repl.t->peer(l), why);
	repl.t->shutdown(l);
	if (rc->reader_on)
		pthread_join(rc->reader, NULL);
	rc->reader_on = false;
	pthread_mutex_lock(&rc->mu);
	rc->plink = NULL;
	pthread_mutex_unlock(&rc->mu);
	STORE(&rc->linked, false);
	repl.t->close(l);
	sb_repl_flags(rc->ch, 0, SHMBUS_REPL_LINK);
}

static void groups_forget(struct rchan *rc);

/* While a send waits for the standby to take a frame (a standby that
 * stopped reading, a link gone quiet, before either is judged): at level
 * local what is acknowledged is what is committed here, whatever the
 * standby does, so the watermark goes on following it; a
 * shmbus_pub_sync() at local never waits on the network.  In the sending
 * thread, which holds ship_mu. */
static void while_sending(void *arg)
{
	struct rchan *rc = arg;

	if (rc->level != SHMBUS_ACK_LOCAL)
		return;
	rc->known = sb_committed_end_marked(rc->ch, rc->known, UINT64_MAX,
					    &rc->marks);
	sb_repl_watermark(rc->ch, rc->known);
}

static void take_pending(struct rchan *rc)
{
	struct sbd_link *l;
	uint64_t start, end, had, token;

	pthread_mutex_lock(&rc->mu);
	l = rc->pending;
	start = rc->pending_start;
	end = rc->pending_end;
	token = rc->pending_token;
	rc->pending = NULL;
	pthread_mutex_unlock(&rc->mu);
	if (!l)
		return;
	drop_link(rc, NULL);
	/* After the old link's reader is joined: the acknowledgements it
	 * took count.  A standby in sync that lost acknowledged records
	 * (it ends below what it had acknowledged at the channel's level:
	 * its daemon died with records received, not applied) or whose
	 * rings were made again stays in sync (the cursor holds what it
	 * lacks, sync waiters wait for it), but only provisionally until
	 * it has caught up, so that the arbiter does not record it in sync
	 * meanwhile (judge(), leader.c).  A standby lapped on an overwrite
	 * channel lost nothing it had. */
	had = standby_pos(rc, LOAD(&rc->received), LOAD(&rc->applied),
			  LOAD(&rc->persisted));
	if (rc->in_sync && (token || end < had)) {
		LINK_EVENT(rc, SBD_WARN, "%s: the standby lost records it had "
			"acknowledged (%s%" PRIu64 ", it had %" PRIu64 "): in "
			"sync only provisionally until it has caught up",
			rc->name, token ? "its rings were made again; it ends "
			"at " : "it ends at ", end, had);
		STORE(&rc->provisional, true);
		__atomic_add_fetch(&rc->provisional_n, 1, __ATOMIC_RELEASE);
	}
	/* After provisional (release): the leader that sees the token sees
	 * this link's standby provisional, or caught up (leader.c). */
	STORE(&rc->link_token, token);
	STORE(&rc->sent, start);
	STORE(&rc->sent_hi, start);
	STORE(&rc->received, start);
	STORE(&rc->applied, start);
	/* What the standby's journal had, no further than it starts: a
	 * waiter's verdict on what was acknowledged stays as it was. */
	{
		struct sb_repl_view v;

		sb_repl_read(rc->ch, &v);
		STORE(&rc->persisted, v.persisted < start ? v.persisted
							  : start);
	}
	rc->dead_why = NULL;
	STORE(&rc->link_dead, false);
	/* A link is not progress (judge()): a standby that links again and
	 * again without getting further still falls out of sync. */
	sb_repl_acked(rc->ch, start, start, LOAD(&rc->persisted), false);
	repl.t->set_send_wait(l, while_sending, rc);
	/* The standby's copies of the groups are as old as its last link,
	 * and this host's list perhaps too (it was the other's standby):
	 * listed again, and their states sent before the first records
	 * (groups_send()). */
	rc->groups_safe = 0;
	groups_forget(rc);
	pthread_mutex_lock(&rc->mu);
	rc->plink = l;
	pthread_mutex_unlock(&rc->mu);
	if (pthread_create(&rc->reader, NULL, reader_main, rc)) {
		drop_link(rc, "no thread for its reader");
		return;
	}
	rc->reader_on = true;
	STORE(&rc->linked, true);
	rc->last_send_ns = now_ns();
	sb_repl_flags(rc->ch, SHMBUS_REPL_LINK, 0);
	LINK_EVENT(rc, SBD_NOTICE, "%s: standby %s linked; shipping from %"
		   PRIu64, rc->name, repl.t->peer(l), start);
}

static int groups_send(struct rchan *rc, uint64_t sent, uint64_t end);

/* Ships what is committed past `sent`, in frames.  Returns whether it
 * shipped anything; *fail says why the link must be dropped, if it must
 * (by the agent: drop_link()). */
static bool ship(struct rchan *rc, const char **fail)
{
	uint64_t sent = LOAD(&rc->sent);
	bool any = false;

	while (rc->plink && sent < rc->known && !stopped(rc)) {
		uint64_t end, len;
		struct iovec iov[2];
		uint32_t type;
		bool held;
		int n, err;

		/* What the standby lacks is gone from the ring (overwrite
		 * policy, or producers let go while it was out of sync): it
		 * comes back and goes on past the gap, counted. */
		if (!sb_ring_has_record(rc->ch, sent)) {
			*fail = "the standby was lapped: the ring no longer "
				"holds what it lacks";
			return any;
		}
		/* Where the frame ends: what the walk to known found, unless
		 * it left no mark within reach. */
		if (rc->known - sent <= rc->frame_max)
			end = rc->known;
		else if (!(end = sb_marks_take(&rc->marks, sent,
					       rc->frame_max)))
			end = sb_committed_end(rc->ch, sent, rc->frame_max);
		if (end > rc->known)
			end = rc->known;
		len = end - sent;
		if (end == sent) {
			/* One record longer than a frame (a message, a
			 * batch's wrap padding, a dead claim's): alone, and
			 * padding or a gap as its word alone, their bytes
			 * carrying nothing (sb_apply_check()). */
			uint64_t size = sb_ring_rec_at(rc->ch, sent, &type);

			if (!size || size > rc->known - sent)
				break;
			end = sent + size;
			len = SHMBUS_REC_WORD_ONLY(type) ? SHMBUS_REC_ALIGN
							  : size;
		}
		n = sb_ring_span(rc->ch, sent, sent + len, iov);
		if (n < 0) {
			*fail = "a span outside the ring";
			return any;
		}
		/* Zero copy while our cursor holds producers off these bytes
		 * (block policy, in sync); else the bytes are copied first and
		 * checked whole, so that the CRC is computed over bytes that
		 * were never torn by a lapping producer. */
		held = !(rc->flags & SHMBUS_F_OVERWRITE) &&
		       rc->cursor_pos <= sent;
		if (!held) {
			memcpy(rc->buf, iov[0].iov_base, iov[0].iov_len);
			if (n == 2)
				memcpy(rc->buf + iov[0].iov_len,
				       iov[1].iov_base, iov[1].iov_len);
			if (!sb_ring_holds(rc->ch, sent)) {
				*fail = "lapped by the producers while "
					"copying";
				return any;
			}
			iov[0] = (struct iovec){ rc->buf, len };
			n = 1;
		}
		/* The groups' copies first, if these records could lap
		 * them on the standby (groups_send()). */
		if (end > rc->groups_safe && groups_send(rc, sent, end)) {
			*fail = "groups not sent";
			return any;
		}
		STORE(&rc->sent_hi, end);
		err = rp_send_frame(rc->plink, RW_DATA, rc->id, sent, iov, n,
				 (int)sync_ms());
		if (err) {
			*fail = strerror(-err);
			return any;
		}
		sent = end;
		STORE(&rc->sent, sent);
		sb_repl_count(rc->ch, SB_REPL_FRAMES, 1);
		rc->last_send_ns = now_ns();
		any = true;
	}
	if (rc->plink && !any &&
	    now_ns() - rc->last_send_ns > PING_MS * INT64_C(1000000)) {
		if (rp_send_frame(rc->plink, RW_PING, rc->id, sent, NULL, 0,
			       (int)sync_ms()))
			*fail = "heartbeat not sent";
		rc->last_send_ns = now_ns();
	}
	return any;
}

/*
 * Damage in the ring, which every process that maps it can write: a head
 * that cannot be right (sb_head_damage()), or a record the walk stopped
 * at because a standby would refuse it (sb_ring_damage()).  Nothing from
 * there on is shipped, rather than shipped, refused and shipped again for ever; the
 * standby is out of sync meanwhile (judge()).  Said once per place, and
 * when it is gone.
 */
static void check_damage(struct rchan *rc)
{
	char why[256];
	/* Read after the walk: head never goes back, so it is at least
	 * where the walk ended unless the header was written over.  The
	 * agent's cursor, never past known, holds producers a lap behind. */
	bool bad = sb_head_damage(rc->ch, rc->known, true, false, why,
				  sizeof(why)) ||
		   sb_ring_damage(rc->ch, rc->known, &rc->marks, why,
				  sizeof(why));

	if (!bad) {
		if (rc->damaged_at != UINT64_MAX)
			sbd_log(SBD_NOTICE, 0, "%s: the ring is no longer "
				"damaged at %" PRIu64 "; shipping", rc->name,
				rc->damaged_at);
		rc->damaged_at = UINT64_MAX;
		return;
	}
	if (rc->damaged_at == rc->known)
		return;
	rc->damaged_at = rc->known;
	sb_repl_count(rc->ch, SB_REPL_BAD, 1);
	sbd_log(SBD_ERR, 0, "%s: the ring is damaged: %s; nothing from %"
		PRIu64 " on is shipped (the standby falls out of sync)",
		rc->name, why, rc->known);
}

/* How far the standby may lag at most: the head (an open claim counts),
 * or what the walk found committed if the head is not past it. */
static uint64_t lag_end(const struct rchan *rc)
{
	uint64_t head = sb_ring_head(rc->ch);

	return head > rc->known && head - rc->known <= rc->cap ? head
							       : rc->known;
}

/* In sync or not, the watermark, and the cursor. */
static void judge(struct rchan *rc)
{
	int64_t now = now_ns();
	bool link = rc->plink != NULL;
	uint64_t received = LOAD(&rc->received), applied = LOAD(&rc->applied);
	uint64_t sync_pos = standby_pos(rc, received, applied,
					LOAD(&rc->persisted));
	uint64_t lpos = rc->level == SHMBUS_ACK_LOCAL ? rc->known
						       : level_pos(rc);
	struct sb_repl_view v;
	bool damaged = rc->damaged_at != UINT64_MAX;
	bool caught, ok, over, degrade;
	uint64_t cur;

	/* What the walk left short counts: the standby has not caught up,
	 * and its lag over max_lag is measured to the end of what is
	 * committed. */
	if (rc->walk_short && rc->max_lag && lag_end(rc) - sync_pos >
					     rc->max_lag) {
		rc->known = sb_committed_end_marked(rc->ch, rc->known,
						    UINT64_MAX, &rc->marks);
		rc->walk_short = false;
	}
	caught = link && sync_pos >= rc->known && !damaged &&
		 !rc->walk_short;
	if (caught)
		STORE(&rc->progress_ns, now);
	/* A link that drops and comes back within sync_timeout_ms (a frame
	 * refused, a reconnection) keeps the standby in sync: only progress
	 * counts, and a lag beyond max_lag. */
	/* In sync provisionally (take_pending(), rp_agent_start()), a
	 * standby is not held to max_lag until it has caught up: what it
	 * lacks piled up while no daemon shipped, or it lost (progress
	 * within sync_timeout_ms bounds that grace). */
	over = rc->max_lag && !LOAD(&rc->provisional) &&
	       rc->known - sync_pos > rc->max_lag;
	ok = !over &&
	     now - LOAD(&rc->progress_ns) <= (int64_t)sync_ms() * 1000000 &&
	     !damaged;
	if (rc->in_sync && !ok) {
		rc->in_sync = false;
		/* First the flag, then (degrade) the watermark: R14 orders
		 * them for shmbus_pub_sync(). */
		sb_repl_flags(rc->ch, SHMBUS_REPL_OUT_OF_SYNC, 0);
		sb_repl_count(rc->ch, SB_REPL_OUT_OF_SYNC, 1);
		sbd_log(SBD_WARN, 0, "%s: standby out of sync (%s; it has %"
			PRIu64 " of %" PRIu64 "): %s", rc->name,
			damaged ? "the ring is damaged" :
			over ? "lag over max_lag" :
			!link ? "no link for sync_timeout_ms" :
			"no progress for sync_timeout_ms",
			sync_pos, rc->known,
			rc->strict ? "sync waiters are held (strict)" :
				     "acknowledging locally (degrade)");
		STORE(&rc->provisional, false);
	} else if (!rc->in_sync && caught) {
		rc->in_sync = true;
		sb_repl_flags(rc->ch, 0, SHMBUS_REPL_OUT_OF_SYNC);
		sbd_log(SBD_NOTICE, 0, "%s: standby in sync at %" PRIu64,
			rc->name, rc->known);
	} else if (caught && LOAD(&rc->provisional)) {
		STORE(&rc->provisional, false);
		sbd_log(SBD_NOTICE, 0, "%s: standby in sync at %" PRIu64
			" (caught up: no longer provisionally)", rc->name,
			rc->known);
	}
	/* With an arbiter, a channel degrades only once the arbiter records
	 * the standby out of sync (it is then never promoted). */
	degrade = !rc->in_sync && !rc->strict &&
		  (!repl.arbiter || LOAD(&repl.out_recorded));
	if (rc->level != SHMBUS_ACK_LOCAL && !rp_may_ack()) {
		/* No lease: nothing is acknowledged beyond what is
		 * committed here (rp_may_ack()). */
	} else if (degrade && rc->level == SHMBUS_ACK_BOTH_PERSISTED) {
		/* Degraded to this host: its journal's synced position. */
		sb_repl_read(rc->ch, &v);
		sb_repl_watermark(rc->ch, v.local_persisted);
	} else if (rc->level == SHMBUS_ACK_LOCAL || degrade) {
		sb_repl_watermark(rc->ch, rc->known);
	} else {
		sb_repl_watermark(rc->ch, lpos);
	}
	if (caught)
		sb_repl_caught_up(rc->ch);
	/* The cursor: while the standby is in sync, what it has not
	 * received stays in the ring (producers wait for it as for a slow
	 * subscriber); out of sync, it follows what is committed and holds
	 * nobody, unless the channel is strict, whose producers wait for the
	 * standby (and a sync waiter never sees a gap).  It never moves
	 * back. */
	cur = rc->in_sync || rc->strict ? received : rc->known;
	if (cur > rc->cursor_pos && cur <= rc->known) {
		rc->cursor_pos = cur;
		sb_sub_seek(rc->cursor, cur);
	}
}

/* How often the agent ships its channel's groups' floors. */
#define GROUPS_MS	20

/* Every group of the channel: a channel has at most one slot per group,
 * so SHMBUS_MAX_SLOTS of them; each with the state last read of it and
 * how far records may be shipped before its state must be shipped again
 * (groups_send()).  Shipped RW_GROUPS_MAX to a frame, through out[]. */
struct group_batch {
	struct sb_group_state g[SHMBUS_MAX_SLOTS];
	uint64_t safe[SHMBUS_MAX_SLOTS];
	uint32_t n;
	bool listed;			/* since the link began */
	struct sb_group_state out[RW_GROUPS_MAX];
	uint32_t nout;
};

/* The names only: groups_send() reads each state. */
static int add_group(const char *group, void *arg)
{
	struct group_batch *b = arg;

	if (b->n < SHMBUS_MAX_SLOTS) {
		snprintf(b->g[b->n].name, sizeof(b->g[b->n].name), "%s",
			 group);
		b->safe[b->n++] = 0;
	}
	return b->n == SHMBUS_MAX_SLOTS;
}

/* The list is listed again before it is used (a new link). */
static void groups_forget(struct rchan *rc)
{
	if (rc->groups)
		rc->groups->listed = false;
}

/* Whether the primary's own ring still holds pos (head has not written
 * over it). */
static bool not_lapped(const struct rchan *rc, uint64_t pos, uint64_t head)
{
	return head + SHMBUS_REC_ALIGN <= pos + rc->cap;
}

/* Lists the channel's groups afresh: 0, or -1 (the listing failed: the
 * list stays as it was). */
static int groups_list(struct rchan *rc)
{
	struct group_batch *b = rc->groups;
	uint32_t had;

	/* 117 KB: the channel's own, not on a stack or in every thread. */
	if (!b && !(b = rc->groups = calloc(1, sizeof(*b))))
		return -1;
	had = b->n;
	b->n = 0;
	if (sb_group_list(sbd.conf.shm_dir, rc->name, add_group, b) < 0) {
		b->n = had;
		return -1;
	}
	b->listed = true;
	return 0;
}

static int flush_out(struct rchan *rc, uint64_t sent)
{
	struct group_batch *b = rc->groups;
	struct iovec iov = { b->out, b->nout * sizeof(b->out[0]) };
	int rc2 = 0;

	if (b->nout)
		rc2 = rp_send_frame(rc->plink, RW_GROUPS, rc->id, sent, &iov, 1,
				    (int)sync_ms());
	b->nout = 0;
	return rc2 ? -1 : 0;
}

/*
 * Sends the states of the channel's groups whose copies on the standby
 * records up to `end` could lap (end 0: all of them), read again now, at
 * `sent`, and sets rc->groups_safe.  A standby applies frames in order, so
 * its copy of a group is at least at the group's floor, or at `sent` if
 * its ring ends there; its ring writer does not wait for the copies, so
 * records past that position + a ring would lap a copy, which could then
 * go on after a promotion only from a later index entry, past records the
 * group never acknowledged.  On a block channel the primary's producers
 * wrote such records only once the group's floor had passed them, so a
 * state read now allows them.  A group the primary's own ring lapped (an
 * overwrite channel's) cannot be helped, and does not hold shipping back.
 * 0, or -1 if a frame could not be sent.
 */
static int groups_send(struct rchan *rc, uint64_t sent, uint64_t end)
{
	struct group_batch *b;
	uint64_t safe = UINT64_MAX, head = sb_ring_head(rc->ch);
	uint32_t n = 0;

	if ((!rc->groups || !rc->groups->listed) && groups_list(rc))
		return 0;	/* shipped unchecked; tried again next frame */
	b = rc->groups;
	b->nout = 0;
	for (uint32_t i = 0; i < b->n; i++) {
		char name[sizeof(b->g[i].name)];
		struct sb_group_state st;
		int rc2 = 0;

		if (end && b->safe[i] >= end) {
			b->g[n] = b->g[i];	/* not needed now */
			b->safe[n] = b->safe[i];
		} else {
			memcpy(name, b->g[i].name, sizeof(name));
			name[sizeof(name) - 1] = 0;
			rc2 = sb_group_state_get(rc->ch, sbd.conf.shm_dir, name,
						 &st);
			if (rc2 == -ENOENT)
				continue;	/* deleted */
			if (rc2) {
				/* Unreadable now (out of descriptors...): as
				 * it was, its last state (if any: safe 0 says
				 * none yet) still a bound; read again at the
				 * next frame that needs it. */
				b->g[n] = b->g[i];
				b->safe[n] = b->safe[i];
			} else {
				b->g[n] = st;
				b->safe[n] = UINT64_MAX;
				if (!(rc->flags & SHMBUS_F_OVERWRITE) &&
				    not_lapped(rc, st.floor, head))
					b->safe[n] = (st.floor < sent ? st.floor
								      : sent) +
						     rc->cap - SHMBUS_REC_ALIGN;
				b->out[b->nout++] = st;
				if (b->nout == RW_GROUPS_MAX &&
				    flush_out(rc, sent))
					return -1;
			}
		}
		if (b->safe[n] < safe)
			safe = b->safe[n];
		n++;
	}
	b->n = n;
	if (flush_out(rc, sent))
		return -1;
	rc->groups_safe = safe;
	return 0;
}

/* The channel's consumer groups, their settings and acknowledged
 * positions, to the standby every GROUPS_MS (and before records that
 * need them, ship()): after a failover a group resumes at the floor it
 * had then (what was above is delivered again). */
static void ship_groups(struct rchan *rc)
{
	bool settled;
	int64_t t;

	if (!rc->plink || now_ns() - rc->groups_ns <
			  GROUPS_MS * INT64_C(1000000))
		return;
	rc->groups_ns = now_ns();
	/* Without groups, one look at the directory's time: it is listed
	 * again only once that has changed (a time within a second of now
	 * is not trusted: a group made in the same tick would not move it,
	 * sb_dir_time()). */
	if (sb_dir_time(sbd.conf.shm_dir, &t, &settled) < 0)
		return;
	if (t == rc->groups_dir_ns)
		return;
	if (groups_list(rc))
		return;		/* the next time */
	if (!rc->groups->n) {
		rc->groups_dir_ns = settled ? t : 0;
		rc->groups_safe = UINT64_MAX;
		return;
	}
	if (groups_send(rc, LOAD(&rc->sent), 0))
		drop_link(rc, "groups not sent");
}

/*
 * While the standby is in sync at a level it acknowledges, the walk of
 * commit words keeps at most two frames past what was shipped, so that
 * shipping reads records the walk has just brought into the cache, instead
 * of a backlog walked whole and then read again from memory (bench_repl, a
 * backlog of 192 MiB: 1.3 x the rate at 32 B and at 1 KiB).  At level
 * local, and out of sync, the watermark is what the walk found committed:
 * it walks to the end.
 */
static bool walk_bounded(const struct rchan *rc)
{
	return rc->level != SHMBUS_ACK_LOCAL && rc->in_sync && rc->plink;
}

/* Where the committed records end now (rc->known), from where the last
 * look left it (find_known(): perhaps short of it).  Returns why the link
 * must be dropped, or NULL. */
static const char *find_known(struct rchan *rc)
{
	const char *fail = NULL;
	uint64_t head = sb_ring_head(rc->ch), oldest, most = UINT64_MAX, size;

	if (head > rc->known && head - rc->known > rc->cap &&
	    (rc->flags & SHMBUS_F_OVERWRITE)) {
		/* Lapped (overwrite policy): the standby too, if it was
		 * behind the oldest record.  (Not where no record is indexed
		 * below head: check_damage().) */
		oldest = sb_ring_oldest(rc->ch);
		if (oldest != sb_ring_head(rc->ch)) {
			rc->known = oldest;
			sb_marks_reset(&rc->marks, oldest, rc->frame_max);
			if (rc->plink && LOAD(&rc->sent) < oldest)
				fail = "the standby was lapped";
		}
	}
	rc->walk_short = false;
	if (walk_bounded(rc)) {
		uint64_t sent = LOAD(&rc->sent);
		uint64_t walk = 2 * (uint64_t)rc->frame_max;
		uint64_t ahead = rc->known > sent ? rc->known - sent : 0;

		most = ahead < walk ? walk - ahead : 0;
	}
	if (most) {
		uint64_t was = rc->known;
		uint32_t type;

		rc->known = sb_committed_end_marked(rc->ch, was, most,
						    &rc->marks);
		/* A record longer than the bound: walked alone. */
		if (rc->known == was && most != UINT64_MAX &&
		    (size = sb_ring_rec_at(rc->ch, was, &type)) > most)
			rc->known = sb_committed_end_marked(rc->ch, was, size,
							    &rc->marks);
	}
	/* Stopped short of what is committed (judge(): not caught up). */
	if (most != UINT64_MAX) {
		uint32_t type;

		rc->walk_short = sb_ring_rec_at(rc->ch, rc->known, &type) != 0;
	}
	return fail;
}

/* What is committed, shipped: the agent's loop, or the reader's spin
 * (reader_ships()), with ship_mu.  Returns whether it shipped anything;
 * *fail as ship(). */
static bool step(struct rchan *rc, const char **fail)
{
	*fail = find_known(rc);
	check_damage(rc);
	return !*fail && ship(rc, fail);
}

/*
 * While a sync waiter waits and the walk is bounded, the reader ships
 * (set_spin()'s work, between its looks for the acknowledgement) and the
 * agent sleeps on rc->park: one thread of this host's on the round trip
 * instead of two that hand the CPU to each other on it (bench_repl, two
 * CPUs, the previous build taking turns: unplaced 8.6-9.0 us a round trip
 * where it took 8.1-40.8 us; placed 7.5-7.9 against 7.9-8.3 us).  The
 * reader's spin ends when the waiters are gone, or when no
 * acknowledgement came for SPIN_NS; it then wakes the agent, which takes
 * its part back.
 */
static bool reader_ships(void *arg, bool more)
{
	struct rchan *rc = arg;
	const char *fail;
	uint64_t sent;

	if (!more) {
		/* Dekker with the agent's park(): each stores its flag,
		 * then reads the other's (sequentially consistent). */
		__atomic_store_n(&rc->reader_ships, false, __ATOMIC_SEQ_CST);
		if (__atomic_load_n(&rc->agent_parked, __ATOMIC_SEQ_CST)) {
			__atomic_add_fetch(&rc->park, 1, __ATOMIC_SEQ_CST);
			futex_wake_private(&rc->park);
		}
		return false;
	}
	if (LOAD(&rc->link_dead) || pthread_mutex_trylock(&rc->ship_mu))
		return true;
	if (!walk_bounded(rc)) {
		/* A walk to the end of what is committed (a backlog, level
		 * local, out of sync) and what it finds to ship are the
		 * agent's, while this thread keeps reading
		 * acknowledgements. */
		pthread_mutex_unlock(&rc->ship_mu);
		if (__atomic_load_n(&rc->reader_ships, __ATOMIC_RELAXED))
			reader_ships(rc, false);
		return true;
	}
	if (!__atomic_load_n(&rc->reader_ships, __ATOMIC_RELAXED))
		__atomic_store_n(&rc->reader_ships, true, __ATOMIC_SEQ_CST);
	step(rc, &fail);
	pthread_mutex_unlock(&rc->ship_mu);
	if (fail) {
		/* The agent drops the link (it joins this thread). */
		rc->dead_why = fail;
		STORE(&rc->link_dead, true);
		reader_ships(rc, false);
		rp_agent_wake(rc);
		return true;
	}
	/* A look at the socket (a system call) only while an
	 * acknowledgement is due: the next record is seen sooner. */
	sent = LOAD(&rc->sent);
	return LOAD(&rc->received) < sent || LOAD(&rc->applied) < sent ||
	       ((rc->level == SHMBUS_ACK_STANDBY_PERSISTED ||
		 rc->level == SHMBUS_ACK_BOTH_PERSISTED) &&
		LOAD(&rc->persisted) < sent);
}

static void futex_wake_private(uint32_t *w)
{
	syscall(SYS_futex, w, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void rp_agent_wake(struct rchan *rc)
{
	sb_repl_kick(rc->ch);
	__atomic_add_fetch(&rc->park, 1, __ATOMIC_SEQ_CST);
	futex_wake_private(&rc->park);
}

/* The agent's sleep while the reader ships (reader_ships()), for at most
 * nap: its other work (judge(), the groups) goes on at that pace. */
static void park(struct rchan *rc, int64_t nap)
{
	uint32_t p;

	__atomic_store_n(&rc->agent_parked, true, __ATOMIC_SEQ_CST);
	p = __atomic_load_n(&rc->park, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&rc->reader_ships, __ATOMIC_SEQ_CST) &&
	    !stopped(rc))
		syscall(SYS_futex, &rc->park, FUTEX_WAIT_PRIVATE, p,
			&(struct timespec){ nap / 1000000000,
					    nap % 1000000000 }, NULL, 0);
	__atomic_store_n(&rc->agent_parked, false, __ATOMIC_SEQ_CST);
}

static void *agent_main(void *arg)
{
	struct rchan *rc = arg;
	uint32_t kick = 0;
	int64_t nap = (int64_t)sbd.conf.repl.nap_us * 1000;

	sbd_thread_setup("sb-ship", true);
	while (!stopped(rc)) {
		const char *fail;
		bool busy;

		pthread_mutex_lock(&rc->ship_mu);
		take_pending(rc);
		if (rc->plink && LOAD(&rc->link_dead))
			drop_link(rc, rc->dead_why);
		busy = step(rc, &fail);
		if (fail)
			drop_link(rc, fail);
		judge(rc);
		ship_groups(rc);
		pthread_mutex_unlock(&rc->ship_mu);
		if (busy)
			continue;
		/* While the reader ships, sleep.  While a sync waiter waits
		 * and the reader does not spin, yield rather than sleep: its
		 * acknowledgement may bring it back with the next record at
		 * once.  (Staying awake longer, 200 us after the last waiter,
		 * made the synchronous round trip 3x slower on two CPUs.) */
		if (__atomic_load_n(&rc->reader_ships, __ATOMIC_SEQ_CST))
			park(rc, nap);
		else if (sb_repl_sync_waiting(rc->ch, &rc->hint_agent))
			sched_yield();
		else
			kick = sb_repl_agent_wait(rc->ch, kick, nap);
	}
	drop_link(rc, NULL);
	return NULL;
}

int rp_agent_start(struct rchan *rc, bool resume, bool handed)
{
	uint64_t oldest = sb_ring_oldest(rc->ch);
	struct shmbus_sub_stats st;
	bool taken, in_sync;
	int err;

	rc->cursor = sb_sub_kept(rc->ch, SHMBUS_SLOT_REPL, UINT64_MAX, &taken,
				 &err);
	if (err == -EBADMSG) {
		/* Not a cursor any daemon left: a new one, the standby out
		 * of sync. */
		sbd_log(SBD_WARN, 0, "%s: the replication cursor left in the "
			"ring names an impossible position; the agent takes "
			"a new one", rc->name);
		sb_sub_kept_release(rc->ch, SHMBUS_SLOT_REPL);
		rc->cursor = sb_sub_kept(rc->ch, SHMBUS_SLOT_REPL, UINT64_MAX,
					 &taken, &err);
		taken = false;
	}
	if (!rc->cursor) {
		sbd_log(SBD_ERR, err, "%s: no cursor slot for the replication "
			"agent: the channel is not replicated", rc->name);
		return err;
	}
	shmbus_sub_stats(rc->cursor, &st);
	sb_marks_reset(&rc->marks, oldest, rc->frame_max);
	rc->known = sb_committed_end_marked(rc->ch, oldest, UINT64_MAX,
					    &rc->marks);
	/* Where the previous daemon left it, or where the new slot holds
	 * the ring: it only moves forward from there (judge()). */
	rc->cursor_pos = st.pos;
	/* A switchover's new primary: the old primary, which links to it
	 * within milliseconds, held everything this host holds when it
	 * handed over.  Out of sync from the start, a degrading channel
	 * would answer its first sync waiters SHMBUS_SYNC_DEGRADED before
	 * that standby could link; in sync provisionally, it falls out of
	 * sync as any standby does, after sync_timeout_ms without a link
	 * or progress. */
	rc->in_sync = (resume && taken) || handed;
	rc->damaged_at = UINT64_MAX;
	STORE(&rc->sent, rc->known);
	STORE(&rc->sent_hi, rc->known);
	STORE(&rc->received, 0);
	STORE(&rc->applied, 0);
	STORE(&rc->persisted, 0);
	if (rc->in_sync) {
		struct sb_repl_view v;

		/* What the standby had acknowledged, as the shared
		 * positions say:
		 * its lag (max_lag) counts from there.  No further than
		 * what is committed. */
		sb_repl_read(rc->ch, &v);
		STORE(&rc->received, v.received < rc->known ? v.received
							    : rc->known);
		STORE(&rc->applied, v.applied < rc->known ? v.applied
							  : rc->known);
		STORE(&rc->persisted, v.persisted < rc->known ? v.persisted
							      : rc->known);
	}
	/* Provisionally: not recorded in sync with an arbiter until it has
	 * caught up in this run (judge()). */
	STORE(&rc->provisional, rc->in_sync);
	if (rc->in_sync)
		__atomic_add_fetch(&rc->provisional_n, 1, __ATOMIC_RELEASE);
	STORE(&rc->progress_ns, now_ns());
	STORE(&rc->stop, false);
	if (rc->in_sync)
		sb_repl_flags(rc->ch, 0, SHMBUS_REPL_OUT_OF_SYNC |
			      SHMBUS_REPL_STANDBY | SHMBUS_REPL_LINK);
	else
		sb_repl_flags(rc->ch, SHMBUS_REPL_OUT_OF_SYNC,
			      SHMBUS_REPL_STANDBY | SHMBUS_REPL_LINK);
	/* Read before the agent runs: its judge() writes in_sync. */
	in_sync = rc->in_sync;
	if (pthread_create(&rc->agent, NULL, agent_main, rc)) {
		sb_repl_flags(rc->ch, SHMBUS_REPL_OUT_OF_SYNC, 0);
		/* A cursor the previous daemon left goes on holding. */
		if (taken)
			sb_sub_abandon(rc->cursor);
		else
			shmbus_sub_close(rc->cursor);
		rc->cursor = NULL;
		sbd_log(SBD_ERR, 0, "%s: no thread for the replication agent: "
			"the channel is not replicated", rc->name);
		return -EAGAIN;
	}
	if (in_sync && !(resume && taken))
		sbd_log(SBD_NOTICE, 0, "%s: the standby, the old primary, held "
			"everything at the switchover: in sync provisionally "
			"until it links and has caught up", rc->name);
	else if (in_sync)
		sbd_log(SBD_NOTICE, 0, "%s: the standby was in sync when the "
			"last shmbusd stopped; its cursor holds the ring from %"
			PRIu64 " while it links again", rc->name, st.pos);
	STORE(&rc->agent_on, true);
	return 0;
}

void rp_agent_stop(struct rchan *rc, bool keep)
{
	if (!rc->agent_on)
		return;
	STORE(&rc->stop, true);
	rp_agent_wake(rc);
	pthread_mutex_lock(&rc->mu);
	if (rc->plink)
		repl.t->shutdown(rc->plink);
	pthread_mutex_unlock(&rc->mu);
	pthread_join(rc->agent, NULL);
	STORE(&rc->agent_on, false);
	pthread_mutex_lock(&rc->mu);
	if (rc->pending) {
		repl.t->close(rc->pending);
		rc->pending = NULL;
	}
	pthread_mutex_unlock(&rc->mu);
	if (keep)
		sb_sub_abandon(rc->cursor);
	else
		shmbus_sub_close(rc->cursor);
	rc->cursor = NULL;
}
