/* SPDX-License-Identifier: MIT */
/*
 * replica.c - the ring's side of replication (docs/replication.md).
 *
 *   the fence       producers refused while a host hands over or stands by
 *   the watermark   how far the standby acknowledged, published in
 *                   shmbusd's words (struct shmbus_daemon_area, in the
 *                   data file); shmbus_pub_sync() waits on
 *                   it, and so do subscribers that see only acknowledged
 *                   messages
 *
 * What the agents do with the records themselves (shipping, applying, the
 * cut) is in mirror.c.  shmbusd's agents call these through contract.h;
 * producers and subscribers reach only shmbus_pub_sync() and what
 * subscribe.c checks.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"
#include "pub.h"
#include "repair.h"
#include "sub.h"

/* ------------------------------------------------------------ the fence */

/*
 * The words of shmbusd's area that this process stored (shmbusd, their
 * one writer), by ring (data_id), whichever of its mappings of the ring it
 * stored them through (the registry's, each agent's): the fence, the
 * replication flags, level and epoch, the watermark and the positions it
 * is made of, the gap range, and the journal's state and positions.  The
 * shared words (struct shmbus_daemon_area, in the data file) are written
 * by the daemon alone, but a process that maps the data file read-write
 * (a producer) can write over them: what the daemon decides from (who may
 * publish, whether the ring is a standby's that its repairs leave alone,
 * whether the standby is in sync, which epoch the journal's segments
 * carry, what is acknowledged, what its journal has synced and what a
 * standby tells its primary so) is its own word.  Its scan sets the fence
 * and the replication words back to it (sb_fence_restore(),
 * sb_repl_restore()); the positions are stored again from it at each of
 * their updates (sb_repl_watermark(), sb_repl_acked(),
 * sb_jnl_persisted()...), so that a word written over misleads the
 * readers of shared memory until then, never the daemon.  A process that
 * never set a ring's word (a client; shmbusd at its start) reads the
 * shared one.  Never shrinks: one entry a ring ever set.
 */
#define OWN_FENCE	1u
#define OWN_FLAGS	2u
#define OWN_EPOCH	4u
#define OWN_LEVEL	8u
#define OWN_MARK	0x10u	/* the watermark */
#define OWN_ACKED	0x20u	/* received, applied, standby_persisted */
#define OWN_HOLE	0x40u
#define OWN_PERSISTED	0x80u	/* this host's journal: persisted_pos */
#define OWN_WRITTEN	0x100u	/* jnl_written */
#define OWN_JSTATE	0x200u	/* jnl_state */

struct own {
	uint64_t id;
	uint64_t epoch;
	uint64_t mark;		/* replicated_pos */
	uint64_t received, applied, sb_persisted;
	uint64_t hole_lo, hole_hi;
	uint64_t persisted, written;
	uint32_t fence;
	uint32_t jnl_state;
	uint16_t flags;		/* SHMBUS_REPL_* (all below 2^16) */
	uint16_t has;		/* OWN_*: which words were set */
	uint8_t level;		/* SHMBUS_ACK_* */
};
_Static_assert(SHMBUS_REPL_JOURNAL < 0x10000u, "the flags fit in own.flags");
static pthread_mutex_t own_mu = PTHREAD_MUTEX_INITIALIZER;
static struct own *own_tab;
static size_t own_n, own_cap;
/* Set once the first entry is made: a process that never stored a word
 * (a client replaying a journal) reads the shared ones without taking
 * own_mu. */
static uint32_t own_used;

/* The entry of ch's ring, or NULL; own_mu held.  Entries are only
 * appended, never moved or removed: a mapping keeps the index of its
 * ring's, or how many it looked at without finding it, so that a scan
 * of many channels costs a comparison each, not a search. */
static struct own *own_of(shmbus_channel *ch)
{
	if (ch->fence_slot)
		return &own_tab[ch->fence_slot - 1];
	for (size_t i = ch->fence_looked; i < own_n; i++)
		if (own_tab[i].id == ch->data_id) {
			ch->fence_slot = i + 1;
			return &own_tab[i];
		}
	ch->fence_looked = own_n;
	return NULL;
}

/* ch's ring's entry, made if it has none; own_mu held.  NULL if no
 * memory: the shared words are then all there is. */
static struct own *own_make(shmbus_channel *ch)
{
	struct own *e = own_of(ch);

	if (e)
		return e;
	if (own_n == own_cap) {
		size_t cap = own_cap ? 2 * own_cap : 16;
		void *t = realloc(own_tab, cap * sizeof(*own_tab));

		if (!t)
			return NULL;
		own_tab = t;
		own_cap = cap;
	}
	e = &own_tab[own_n++];
	memset(e, 0, sizeof(*e));
	e->id = ch->data_id;
	ch->fence_slot = own_n;
	/* No edge: the entry is read under own_mu; a thread that does not
	 * see the flag yet reads the shared word, as before the store. */
	store_relaxed32(&own_used, 1);
	return e;
}

uint32_t sb_fence_get(shmbus_channel *ch)
{
	struct own *e;
	uint32_t w;

	pthread_mutex_lock(&own_mu);
	e = own_of(ch);
	/* No edge: the value alone is the answer. */
	w = e && (e->has & OWN_FENCE) ? e->fence
				      : load_relaxed32(&ch->daemon->fence);
	pthread_mutex_unlock(&own_mu);
	return SHMBUS_FENCE_STATE(w);
}

uint32_t sb_fence_store(shmbus_channel *ch, uint32_t state, bool release)
{
	struct own *e;
	uint32_t old, base, gen, w;

	pthread_mutex_lock(&own_mu);
	old = load_relaxed32(&ch->daemon->fence);
	e = own_make(ch);
	base = e && (e->has & OWN_FENCE) ? e->fence : old;
	w = old;
	/* A word written over is replaced even if its state is the one
	 * wanted: a handle opened under it refuses its claims from now on.
	 * The generation goes past both words. */
	if (SHMBUS_FENCE_STATE(base) != state || old != base) {
		gen = (old >> 8) > (base >> 8) ? old >> 8 : base >> 8;
		w = (gen + 1) << 8 | state;
		if (release)
			/* R26: pairs with A26 in being_cut(): a subscriber
			 * that finds the fence no longer CUT finds the cut's
			 * head, seq and handoff (sb_fence_leave_cut()). */
			store_release32(&ch->daemon->fence, w);
		else
			store_relaxed32(&ch->daemon->fence, w);
	}
	if (e) {
		e->fence = w;
		e->has |= OWN_FENCE;
	}
	pthread_mutex_unlock(&own_mu);
	return old;
}

int sb_fence_restore(shmbus_channel *ch, uint32_t *found)
{
	struct own *e;
	uint32_t old, w = 0;
	int rc = 0;

	pthread_mutex_lock(&own_mu);
	e = own_of(ch);
	/* No edge: the daemon's own word is put back as it was stored. */
	old = load_relaxed32(&ch->daemon->fence);
	if (e && (e->has & OWN_FENCE) && old != e->fence) {
		w = e->fence;
		store_relaxed32(&ch->daemon->fence, w);
		*found = old;
		rc = 1;
	}
	pthread_mutex_unlock(&own_mu);
	/* Group members asleep in their wait look again (a fence that
	 * is closed again refuses them). */
	if (rc && SHMBUS_FENCE_STATE(w) != SHMBUS_FENCE_OPEN)
		sb_wake_check(ch);
	return rc;
}

int sb_fence_set(shmbus_channel *ch, uint32_t state)
{
	/* One writer: the daemon's thread that changes roles. */
	uint32_t old = sb_fence_store(ch, state, false);

	/* Group members asleep in their wait end it at once (its look
	 * sees the fence, or F3 wakes it). */
	if (SHMBUS_FENCE_STATE(old) != state && state != SHMBUS_FENCE_OPEN)
		sb_wake_check(ch);
	if (state == SHMBUS_FENCE_OPEN) {
		ch->fence_synced = false;
		return 0;
	}
	/* Closed, and a barrier ran here since it was last open: a claim
	 * could only slip past that close, and the barrier (and the
	 * quiesce after it) dealt with it; every handle opened before
	 * refuses claims since (its fence word is not the shared one), and
	 * none opens while closed.  A daemon that starts, or whose barrier
	 * the kernel refused, runs it (again). */
	if (ch->fence_synced)
		return 0;
	/* F4: pairs with fence_up() after every claim: once this returns,
	 * every thread of the system has executed a full barrier since our
	 * store, so a claim that did not see the fence is visible to our
	 * loads of head and of the announcements from here on. */
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0)
		return -errno;
	ch->fence_synced = true;
	return 0;
}

/* Whether any multi producer announces a claim. */
static bool claims_announced(struct shmbus_channel *ch)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		struct shmbus_prod_slot *s = &ch->prods[i];

		/* A7: pairs with R7 (the slot's ACTIVE store). */
		if (owner_state(load_acquire64(&s->owner)) ==
		    SHMBUS_SLOT_FREE)
			continue;
		/* A6: pairs with R6 (the announcement, and its withdrawal
		 * after the commit). */
		if (load_acquire64(&s->claim_pos) != UINT64_MAX)
			return true;
	}
	return false;
}

int sb_fence_quiesce(shmbus_channel *ch, uint64_t from, int64_t timeout_ns,
		     uint64_t *end)
{
	int64_t deadline = sb_after(sb_now_ns(), timeout_ns);

	for (;;) {
		/* A12: pairs with R12 (MP) or with the single producer's
		 * store of head, which F4 made visible. */
		uint64_t head = load_acquire64(&ch->pl->head);

		if (head % SHMBUS_REC_ALIGN)
			return -EBADMSG;
		if (!(ch_multi(ch) && claims_announced(ch)) &&
		    head - from <= ch->cap &&
		    sb_committed_until(ch, from, head) == head &&
		    /* A12 again: head has not moved during the walk. */
		    load_acquire64(&ch->pl->head) == head) {
			*end = head;
			return 0;
		}
		if (sb_now_ns() >= deadline)
			return -ETIMEDOUT;
		sched_yield();
	}
}

/*
 * A ring just closed (a primary that lost its lease stands by): waits
 * until no live producer holds a claim open on it, as sb_fence_quiesce()
 * does, except that claims of producers that died are left to
 * sb_apply_recover(), which cuts them off.  A claim of a live producer
 * stopped between its claim and its commit would otherwise be written
 * later over records the standby's agent applies there.
 */
int sb_fence_settle(shmbus_channel *ch, int64_t timeout_ns, uint32_t *pid)
{
	int64_t deadline = sb_after(sb_now_ns(), timeout_ns);

	for (;;) {
		/* A12 (see sb_fence_quiesce()). */
		uint64_t head = load_acquire64(&ch->pl->head);
		uint32_t live = 0;

		if (ch_multi(ch)) {
			for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS && !live;
			     i++) {
				struct shmbus_prod_slot *s = &ch->prods[i];
				/* A7: pairs with R7. */
				uint64_t o = load_acquire64(&s->owner);

				/* A6: pairs with R6 (the announcement). */
				if (owner_state(o) != SHMBUS_SLOT_FREE &&
				    load_acquire64(&s->claim_pos) !=
					    UINT64_MAX &&
				    sb_owner_alive(o))
					live = owner_pid(o);
			}
		} else if (sb_committed_until(ch, sb_ring_oldest(ch), head) !=
			   head) {
			/* No edge: a pid to ask the kernel about. */
			uint64_t sp = load_relaxed64(&ch->pl->sp_owner);

			if (role_pid(sp) &&
			    sb_owner_alive_as(role_pid(sp), role_tag(sp)))
				live = role_pid(sp);
		}
		if (!live)
			return 0;
		*pid = live;
		if (sb_now_ns() >= deadline)
			return -ETIMEDOUT;
		sched_yield();
	}
}

/* -------------------------------------------------------- the watermark */

/* Stores flags as the shared replication flags and as this process's
 * own; own_mu held. */
static void flags_put(shmbus_channel *ch, uint32_t flags)
{
	struct own *e = own_make(ch);

	/* No edge here: R14 in sb_repl_watermark() orders it for
	 * shmbus_pub_sync().  Stored only if it differs: the word shares
	 * the fence's line, which every claim reads, and a look at the
	 * flags (sb_repl_flags(ch, 0, 0), at each of the journal's syncs)
	 * must not take that line from the producers. */
	if (load_relaxed32(&ch->daemon->repl_flags) != flags)
		store_relaxed32(&ch->daemon->repl_flags, flags);
	if (e) {
		e->flags = (uint16_t)flags;
		e->has |= OWN_FLAGS;
	}
}

/* The replication flags as this process set them, else the shared ones;
 * own_mu held. */
static uint32_t flags_get(shmbus_channel *ch)
{
	struct own *e = own_of(ch);

	return e && (e->has & OWN_FLAGS) ? e->flags
		: load_relaxed32(&ch->daemon->repl_flags);
}

static void level_put(shmbus_channel *ch, uint32_t level)
{
	struct own *e = own_make(ch);

	/* No edge: a description, as the flags; stored only if it
	 * differs, as they are. */
	if (load_relaxed32(&ch->daemon->repl_level) != level)
		store_relaxed32(&ch->daemon->repl_level, level);
	if (e) {
		e->level = (uint8_t)level;
		e->has |= OWN_LEVEL;
	}
}

static void epoch_put(shmbus_channel *ch, uint64_t epoch)
{
	struct own *e = own_make(ch);

	/* No edge: a description (busstat); frames carry their own.
	 * Stored only if it differs, as the flags are. */
	if (load_relaxed64(&ch->daemon->epoch) != epoch)
		store_relaxed64(&ch->daemon->epoch, epoch);
	if (e) {
		e->epoch = epoch;
		e->has |= OWN_EPOCH;
	}
}

static void hole_get(shmbus_channel *ch, uint64_t *lo, uint64_t *hi);
static void hole_put(shmbus_channel *ch, uint64_t lo, uint64_t hi);

/* The gap range becomes this process's once it sets the channel's
 * acknowledgements up: the one the shared words hold then (a daemon
 * before it recorded it), unless it is no range below head; own_mu
 * held. */
static void hole_adopt(shmbus_channel *ch)
{
	struct own *e = own_of(ch);
	uint64_t lo, hi;

	if (e && (e->has & OWN_HOLE))
		return;
	hole_get(ch, &lo, &hi);
	/* No edge: head only grows; a range past it was written over. */
	if (lo >= hi || hi > load_relaxed64(&ch->pl->head))
		lo = hi = 0;
	hole_put(ch, lo, hi);
}

void sb_repl_setup(shmbus_channel *ch, uint32_t level, uint32_t flags,
		   uint64_t epoch)
{
	/* No edge: read by busstat and by shmbus_pub_sync() only as a
	 * description; the watermark (R14) orders what counts. */
	pthread_mutex_lock(&own_mu);
	level_put(ch, level);
	epoch_put(ch, epoch);
	flags_put(ch, flags);
	hole_adopt(ch);
	pthread_mutex_unlock(&own_mu);
}

void sb_repl_flags_put(shmbus_channel *ch, uint32_t level, uint32_t flags)
{
	pthread_mutex_lock(&own_mu);
	level_put(ch, level);
	flags_put(ch, flags);
	hole_adopt(ch);
	pthread_mutex_unlock(&own_mu);
}

uint32_t sb_repl_flags(shmbus_channel *ch, uint32_t set, uint32_t clear)
{
	uint32_t f;

	/* One writer (the channel's agent, or the main thread while the
	 * agent is stopped): from its own word, not from one written
	 * over. */
	pthread_mutex_lock(&own_mu);
	f = flags_get(ch);
	flags_put(ch, (f | set) & ~clear);
	pthread_mutex_unlock(&own_mu);
	return f;
}

uint32_t sb_repl_level(shmbus_channel *ch)
{
	struct own *e;
	uint32_t l;

	pthread_mutex_lock(&own_mu);
	e = own_of(ch);
	l = e && (e->has & OWN_LEVEL) ? e->level
				      : load_relaxed32(&ch->daemon->repl_level);
	pthread_mutex_unlock(&own_mu);
	return l;
}

void sb_repl_epoch(shmbus_channel *ch, uint64_t epoch)
{
	pthread_mutex_lock(&own_mu);
	epoch_put(ch, epoch);
	pthread_mutex_unlock(&own_mu);
}

unsigned sb_repl_restore(shmbus_channel *ch, uint32_t *flags_found,
			 uint32_t *level_found, uint64_t *epoch_found)
{
	struct shmbus_daemon_area *d = ch->daemon;
	unsigned done = 0;
	struct own *e;
	uint32_t f;
	uint64_t ep;

	pthread_mutex_lock(&own_mu);
	e = own_of(ch);
	/* No edge: descriptions, put back as they were stored. */
	f = load_relaxed32(&d->repl_flags);
	if (e && (e->has & OWN_FLAGS) && f != e->flags) {
		store_relaxed32(&d->repl_flags, e->flags);
		*flags_found = f;
		done |= 1;
	}
	f = load_relaxed32(&d->repl_level);
	if (e && (e->has & OWN_LEVEL) && f != e->level) {
		store_relaxed32(&d->repl_level, e->level);
		*level_found = f;
		done |= 4;
	}
	ep = load_relaxed64(&d->epoch);
	if (e && (e->has & OWN_EPOCH) && ep != e->epoch) {
		store_relaxed64(&d->epoch, e->epoch);
		*epoch_found = ep;
		done |= 2;
	}
	pthread_mutex_unlock(&own_mu);
	return done;
}

/* Stores v in the shared word *p unless it holds it already (the line
 * is read by every sync waiter).  No edge: the callers' R14 orders the
 * positions for readers. */
static void put64(uint64_t *p, uint64_t v)
{
	if (load_relaxed64(p) != v)
		store_relaxed64(p, v);
}

/* The standby's positions, stored as this process's own and in the
 * shared words; own_mu held. */
static void acked_put(shmbus_channel *ch, uint64_t received, uint64_t applied,
		      uint64_t persisted)
{
	struct shmbus_daemon_area *d = ch->daemon;
	struct own *e = own_make(ch);

	/* No edge: R14 in sb_repl_watermark() publishes them. */
	put64(&d->received_pos, received);
	put64(&d->applied_pos, applied);
	put64(&d->standby_persisted_pos, persisted);
	if (e) {
		e->received = received;
		e->applied = applied;
		e->sb_persisted = persisted;
		e->has |= OWN_ACKED;
	}
}

void sb_repl_acked(shmbus_channel *ch, uint64_t received, uint64_t applied,
		   uint64_t persisted, bool caught_up)
{
	struct timespec ts;

	pthread_mutex_lock(&own_mu);
	acked_put(ch, received, applied, persisted);
	pthread_mutex_unlock(&own_mu);
	if (caught_up) {
		clock_gettime(CLOCK_REALTIME, &ts);
		/* No edge: statistics. */
		store_relaxed64(&ch->daemon->caught_up_ns,
				(uint64_t)ts.tv_sec * 1000000000u +
					(uint64_t)ts.tv_nsec);
	}
}

void sb_repl_caught_up(shmbus_channel *ch)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	/* No edge: statistics. */
	store_relaxed64(&ch->daemon->caught_up_ns,
			(uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
}

void sb_repl_caught_up_unknown(shmbus_channel *ch)
{
	/* No edge: statistics. */
	store_relaxed64(&ch->daemon->caught_up_ns, 0);
}

void sb_repl_reset_positions(shmbus_channel *ch, uint64_t pos)
{
	struct own *e;

	/* No edge: set while no agent runs for the channel (a role change),
	 * and only ever lowered to where the ring's records agree. */
	pthread_mutex_lock(&own_mu);
	acked_put(ch, pos, pos, pos);
	store_relaxed64(&ch->daemon->replicated_pos, pos);
	e = own_make(ch);
	if (e) {
		e->mark = pos;
		e->has |= OWN_MARK;
	}
	pthread_mutex_unlock(&own_mu);
}

void sb_repl_watermark(shmbus_channel *ch, uint64_t w)
{
	struct shmbus_hdr *h = ch->hdr;
	struct shmbus_daemon_area *d = ch->daemon;
	struct own *e;
	uint64_t cur, base;

	pthread_mutex_lock(&own_mu);
	e = own_make(ch);
	/* A14: pairs with R14 (a raise by another process: the daemon
	 * before this one): the head its raiser saw comes before the head
	 * loaded below. */
	cur = load_acquire64(&d->replicated_pos);
	/* From this process's own watermark, never from the shared word,
	 * which a producer may have written over; a process that never set
	 * it (shmbusd at its start) takes the shared one up, unless it is
	 * past head (readers disbelieve that: acked(), sync_verdict()). */
	if (e && (e->has & OWN_MARK))
		base = e->mark;
	else
		base = cur <= load_relaxed64(&ch->pl->head) ? cur : 0;
	if (w < base)
		w = base;
	if (e) {
		e->mark = w;
		e->has |= OWN_MARK;
	}
	if (cur == w) {
		pthread_mutex_unlock(&own_mu);
		return;
	}
	/* R14: pairs with A14 in shmbus_pub_sync() and in the subscriber's
	 * acked(): the positions and flags stored before (sb_repl_acked(),
	 * sb_repl_flags()) are visible to whoever sees the watermark.  A
	 * word written over is stored again from ours, lower or higher; the
	 * mutex keeps the daemon's raisers in order. */
	store_seqcst64(&d->replicated_pos, w);
	pthread_mutex_unlock(&own_mu);
	/* F5: pairs with F5 in shmbus_pub_sync(): either the waiter's
	 * re-check sees the watermark, or we see its count and wake it. */
	fence_seqcst();
	if (load_relaxed32(&h->ack_waiters)) {
		/* No edge beyond F5: changing the word makes a waiter that
		 * read the old one return from FUTEX_WAIT at once. */
		add_seqcst32(&h->ack_futex, 1);
		syscall(SYS_futex, &h->ack_futex, FUTEX_WAKE, INT_MAX, NULL,
			NULL, 0);
	}
	/* F3: as after a commit (wake_if_sleepers()): a subscriber that
	 * sees only acknowledged messages sleeps on the channel's futex. */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(ch);
}

/* The gap range as this process recorded it, else the shared one; own_mu
 * held. */
static void hole_get(shmbus_channel *ch, uint64_t *lo, uint64_t *hi)
{
	struct own *e = own_of(ch);

	if (e && (e->has & OWN_HOLE)) {
		*lo = e->hole_lo;
		*hi = e->hole_hi;
		return;
	}
	/* No edge: as in sb_repl_hole(). */
	*lo = load_relaxed64(&ch->daemon->hole_lo);
	*hi = load_relaxed64(&ch->daemon->hole_hi);
}

/* own_mu held. */
static void hole_put(shmbus_channel *ch, uint64_t lo, uint64_t hi)
{
	struct own *e = own_make(ch);

	/* No edge: R14 publishes the range with the watermark that passes
	 * it; own_mu orders the daemon's writers (the replication agent,
	 * the journal's). */
	put64(&ch->daemon->hole_lo, lo);
	put64(&ch->daemon->hole_hi, hi);
	if (e) {
		e->hole_lo = lo;
		e->hole_hi = hi;
		e->has |= OWN_HOLE;
	}
}

void sb_repl_hole_cut(shmbus_channel *ch, uint64_t pos)
{
	uint64_t lo, hi;

	/* The ring is being cut, nothing is acknowledged meanwhile. */
	pthread_mutex_lock(&own_mu);
	hole_get(ch, &lo, &hi);
	if (lo >= pos)
		lo = hi = 0;
	else if (hi > pos)
		hi = pos;
	hole_put(ch, lo, hi);
	pthread_mutex_unlock(&own_mu);
}

void sb_repl_hole(shmbus_channel *ch, uint64_t lo, uint64_t hi)
{
	uint64_t olo, ohi;

	pthread_mutex_lock(&own_mu);
	hole_get(ch, &olo, &ohi);
	if (lo >= hi) {
		lo = hi = 0;
	} else if (olo < ohi) {
		lo = olo < lo ? olo : lo;
		hi = ohi > hi ? ohi : hi;
	}
	hole_put(ch, lo, hi);
	pthread_mutex_unlock(&own_mu);
}

void sb_own_jnl_put(shmbus_channel *ch, enum sb_own_jnl w, uint64_t v)
{
	struct shmbus_daemon_area *d = ch->daemon;
	struct own *e;

	/* The shared word under own_mu too: sb_ack_restore() never finds
	 * ours stored here and the shared one not yet, which it would take
	 * for a word written over. */
	pthread_mutex_lock(&own_mu);
	e = own_make(ch);
	switch (w) {
	case SB_OWN_PERSISTED:
		/* No edge of its own: R14 in sb_repl_watermark() publishes
		 * it to shmbus_pub_sync(), which reads it after A14. */
		put64(&d->persisted_pos, v);
		if (e) {
			e->persisted = v;
			e->has |= OWN_PERSISTED;
		}
		break;
	case SB_OWN_WRITTEN:
		/* R25: pairs with A25 in the replaying subscriber: the bytes
		 * the journal's pwrite() put in the files (the page cache)
		 * before this store are there for its pread() of anything
		 * below v. */
		store_release64(&d->jnl_written, v);
		if (e) {
			e->written = v;
			e->has |= OWN_WRITTEN;
		}
		break;
	case SB_OWN_JSTATE:
		/* No edge: a description.  Stored only if it differs: on the
		 * fence's line, which every claim reads (flags_put()). */
		if (load_relaxed32(&d->jnl_state) != (uint32_t)v)
			store_relaxed32(&d->jnl_state, (uint32_t)v);
		if (e) {
			e->jnl_state = (uint32_t)v;
			e->has |= OWN_JSTATE;
		}
		break;
	}
	pthread_mutex_unlock(&own_mu);
}

/* own_mu held. */
static bool own_jnl_get(shmbus_channel *ch, enum sb_own_jnl w, uint64_t *v)
{
	struct own *e = own_of(ch);

	if (!e)
		return false;
	switch (w) {
	case SB_OWN_PERSISTED:
		*v = e->persisted;
		return e->has & OWN_PERSISTED;
	case SB_OWN_WRITTEN:
		*v = e->written;
		return e->has & OWN_WRITTEN;
	case SB_OWN_JSTATE:
		*v = e->jnl_state;
		return e->has & OWN_JSTATE;
	}
	return false;
}

bool sb_own_jnl_get(shmbus_channel *ch, enum sb_own_jnl w, uint64_t *v)
{
	bool has;

	/* No edge: see own_make(). */
	if (!load_relaxed32(&own_used))
		return false;
	pthread_mutex_lock(&own_mu);
	has = own_jnl_get(ch, w, v);
	pthread_mutex_unlock(&own_mu);
	return has;
}

/* Puts back the shared word *p where it is not ours (v): 1 with what it
 * was in *found. */
static unsigned put_back(uint64_t *p, uint64_t v, uint64_t *found)
{
	/* No edge: a position put back as it was stored; its readers
	 * take it as its next store would give it. */
	uint64_t was = load_relaxed64(p);

	if (was == v)
		return 0;
	store_relaxed64(p, v);
	*found = was;
	return 1;
}

unsigned sb_ack_restore(shmbus_channel *ch, uint64_t found[SB_ACKW_N])
{
	struct shmbus_daemon_area *d = ch->daemon;
	unsigned done = 0;
	struct own *e;
	uint64_t v;

	pthread_mutex_lock(&own_mu);
	e = own_of(ch);
	if (e && (e->has & OWN_MARK)) {
		/* No edge: compared only. */
		v = load_relaxed64(&d->replicated_pos);
		if (v != e->mark) {
			/* R14: pairs with A14, as in sb_repl_watermark(). */
			store_seqcst64(&d->replicated_pos, e->mark);
			found[SB_ACKW_MARK] = v;
			done |= 1u << SB_ACKW_MARK;
		}
	}
	if (e && (e->has & OWN_ACKED)) {
		done |= put_back(&d->received_pos, e->received,
				 &found[SB_ACKW_RECEIVED]) << SB_ACKW_RECEIVED;
		done |= put_back(&d->applied_pos, e->applied,
				 &found[SB_ACKW_APPLIED]) << SB_ACKW_APPLIED;
		done |= put_back(&d->standby_persisted_pos, e->sb_persisted,
				 &found[SB_ACKW_SB_PERSISTED])
			<< SB_ACKW_SB_PERSISTED;
	}
	if (e && (e->has & OWN_HOLE)) {
		done |= put_back(&d->hole_lo, e->hole_lo,
				 &found[SB_ACKW_HOLE_LO]) << SB_ACKW_HOLE_LO;
		done |= put_back(&d->hole_hi, e->hole_hi,
				 &found[SB_ACKW_HOLE_HI]) << SB_ACKW_HOLE_HI;
	}
	if (e && (e->has & OWN_PERSISTED))
		done |= put_back(&d->persisted_pos, e->persisted,
				 &found[SB_ACKW_PERSISTED]) << SB_ACKW_PERSISTED;
	if (e && (e->has & OWN_WRITTEN)) {
		v = load_relaxed64(&d->jnl_written);
		if (v != e->written) {
			/* R25: pairs with A25 in the replaying subscriber, as
			 * in sb_jnl_written(). */
			store_release64(&d->jnl_written, e->written);
			found[SB_ACKW_WRITTEN] = v;
			done |= 1u << SB_ACKW_WRITTEN;
		}
	}
	if (e && (e->has & OWN_JSTATE)) {
		/* No edge: a description. */
		uint32_t s = load_relaxed32(&d->jnl_state);

		if (s != e->jnl_state) {
			store_relaxed32(&d->jnl_state, e->jnl_state);
			found[SB_ACKW_JSTATE] = s;
			done |= 1u << SB_ACKW_JSTATE;
		}
	}
	pthread_mutex_unlock(&own_mu);
	return done;
}

void sb_repl_read(shmbus_channel *ch, struct sb_repl_view *v)
{
	const struct shmbus_prod_line *pl = ch->pl;
	const struct shmbus_daemon_area *d = ch->daemon;

	/* No edge: statistics. */
	v->watermark = load_relaxed64(&d->replicated_pos);
	v->received = load_relaxed64(&d->received_pos);
	v->applied = load_relaxed64(&d->applied_pos);
	v->persisted = load_relaxed64(&d->standby_persisted_pos);
	v->local_persisted = load_relaxed64(&d->persisted_pos);
	v->caught_up_ns = load_relaxed64(&d->caught_up_ns);
	pthread_mutex_lock(&own_mu);
	{
		/* What this process stored, where it stored it: the shared
		 * words are only what it tells others. */
		struct own *e = own_of(ch);

		v->epoch = e && (e->has & OWN_EPOCH)
				   ? e->epoch : load_relaxed64(&d->epoch);
		v->flags = flags_get(ch);
		v->level = e && (e->has & OWN_LEVEL)
				   ? e->level : load_relaxed32(&d->repl_level);
		if (e && (e->has & OWN_MARK))
			v->watermark = e->mark;
		if (e && (e->has & OWN_ACKED)) {
			v->received = e->received;
			v->applied = e->applied;
			v->persisted = e->sb_persisted;
		}
		if (e && (e->has & OWN_PERSISTED))
			v->local_persisted = e->persisted;
		hole_get(ch, &v->hole_lo, &v->hole_hi);
	}
	pthread_mutex_unlock(&own_mu);
	v->fence = sb_fence_get(ch);
	v->head = load_relaxed64(&pl->head);
	v->seq = load_relaxed64(&pl->seq);
	v->frames = load_relaxed64(&d->repl_frames);
	v->bad = load_relaxed64(&d->repl_bad);
	v->gaps = load_relaxed64(&d->repl_gaps);
	v->gap_bytes = load_relaxed64(&d->repl_gap_bytes);
	v->out_of_sync = load_relaxed64(&d->repl_out_of_sync);
}

void sb_repl_count(shmbus_channel *ch, enum sb_repl_counter c, uint64_t n)
{
	struct shmbus_daemon_area *d = ch->daemon;
	uint64_t *p = c == SB_REPL_FRAMES ? &d->repl_frames
		    : c == SB_REPL_BAD	  ? &d->repl_bad
		    : c == SB_REPL_GAPS	  ? &d->repl_gaps
		    : c == SB_REPL_GAP_BYTES ? &d->repl_gap_bytes
					     : &d->repl_out_of_sync;

	add_relaxed64(p, n);
}

/* The agent waits for work: a kick from shmbus_pub_sync(), or its nap's
 * end.  Returns the kick word seen, to pass back next time. */
uint32_t sb_repl_agent_wait(shmbus_channel *ch, uint32_t seen,
			    int64_t nap_ns)
{
	struct shmbus_hdr *h = ch->hdr;
	struct timespec ts = { nap_ns / 1000000000, nap_ns % 1000000000 };
	uint32_t k;

	/* No edge: said once, before the first count (program order). */
	if (load_relaxed32(&h->kick_counted) != SHMBUS_KICK_COUNTED)
		store_relaxed32(&h->kick_counted, SHMBUS_KICK_COUNTED);
	/* F8: pairs with F8 in shmbus_pub_sync(): the count of sleepers,
	 * then the kick word; the waiter bumps them the other way round, so
	 * either it sees us and wakes us, or we see its kick and stay up.
	 * (A kick missed all the same would cost one nap.) */
	add_seqcst32(&h->kick_sleepers, 1);
	k = load_seqcst32(&h->kick);
	if (k == seen && nap_ns > 0)
		syscall(SYS_futex, &h->kick, FUTEX_WAIT, k, &ts, NULL, 0);
	/* No edge: only the count. */
	sub_seqcst32(&h->kick_sleepers, 1);
	/* No edge: a hint, as above. */
	return load_relaxed32(&h->kick);
}

void sb_repl_kick(shmbus_channel *ch)
{
	/* No edge: a hint, as in shmbus_pub_sync(). */
	add_seqcst32(&ch->hdr->kick, 1);
	syscall(SYS_futex, &ch->hdr->kick, FUTEX_WAKE, 1, NULL, NULL, 0);
}

bool sb_repl_sync_waiting(shmbus_channel *ch, struct sb_sync_hint *hint)
{
	struct shmbus_hdr *h = ch->hdr;
	int64_t now;
	uint32_t k;

	/* No edge: whether to spin rather than nap. */
	if (!load_relaxed32(&h->sync_waiters))
		return false;
	/* No edge: a hint, as above. */
	k = load_relaxed32(&h->kick);
	now = sb_now_ns();
	if (k != hint->kick || !hint->moved_ns) {
		hint->kick = k;
		hint->moved_ns = now;
	}
	return now - hint->moved_ns < SB_SYNC_HINT_NS;
}

/* Look this long in shmbus_pub_sync() before sleeping (yielding the
 * CPU between looks): a few round trips between two hosts on one
 * switch. */
#define SYNC_SPIN_NS	INT64_C(100000)

/* The position our committed records end at. */
static uint64_t sync_target(const struct shmbus_pub *pub)
{
	if (pub->claimed)
		return pub->c_pos;
	return pub->multi ? pub->won_end : pub->head;
}

uint64_t sb_level_pos(const struct shmbus_daemon_area *d, uint32_t level,
		      uint64_t committed)
{
	uint64_t sp = load_relaxed64(&d->standby_persisted_pos),
		 lp = load_relaxed64(&d->persisted_pos);

	/* No edge of its own: read after A14 by shmbus_pub_sync(), as
	 * statistics by busstat. */
	switch (level) {
	case SHMBUS_ACK_RECEIVED:
		return load_relaxed64(&d->received_pos);
	case SHMBUS_ACK_APPLIED:
		return load_relaxed64(&d->applied_pos);
	case SHMBUS_ACK_PERSISTED:
		return lp;
	case SHMBUS_ACK_STANDBY_PERSISTED:
		return sp;
	case SHMBUS_ACK_BOTH_PERSISTED:
		return sp < lp ? sp : lp;
	default:
		return committed;
	}
}

/* What the watermark w says about target: 0 earned at the channel's
 * level, SHMBUS_SYNC_DEGRADED if only because the standby is out of sync,
 * or 1 + ... nothing (-EAGAIN) if not reached. */
static int sync_verdict(const struct shmbus_channel *ch, uint64_t w,
			uint64_t from, uint64_t target)
{
	const struct shmbus_prod_line *pl = ch->pl;
	const struct shmbus_daemon_area *d = ch->daemon;
	uint32_t level;
	uint64_t got, lo, hi;

	if (w < target)
		return -EAGAIN;
	/* After A14: the positions the watermark was computed from, and the
	 * last gap, recorded before the standby acknowledged past it. */
	level = load_relaxed32(&d->repl_level);
	got = sb_level_pos(d, level, w);
	/* A watermark or a position past head is damage (a write into the
	 * data file by a process that can write it): nothing is earned by
	 * it.  Relaxed: head only grows, and neither passes it when true. */
	if (w > load_relaxed64(&pl->head) || got > load_relaxed64(&pl->head))
		return -EAGAIN;
	lo = load_relaxed64(&d->hole_lo);
	hi = load_relaxed64(&d->hole_hi);
	/* Records of ours in the gap never reached the standby (or the
	 * journal). */
	if (level != SHMBUS_ACK_LOCAL && lo < hi && lo < target && hi > from)
		return SHMBUS_SYNC_DEGRADED;
	return got >= target ? 0 : SHMBUS_SYNC_DEGRADED;
}

/*
 * The answer for pub's records below target, w the watermark just read
 * (A14).  It speaks for them only while the fence is the word the handle
 * was opened under, or the hand-over right after it (whose drain
 * acknowledges them).  Any later word: this host stopped being that
 * primary, and as a standby its agent raises the watermark over the
 * records it applies, which may stand where ours stood until a rejoin
 * cut them off: -EROFS, never 0.
 */
static int answer(const struct shmbus_pub *pub, uint64_t w, uint64_t target)
{
	/* No edge of its own: read after A14, so a watermark raised by a
	 * standby's agent (after the fence closed, in its process) comes
	 * with the closed fence. */
	uint32_t f = load_relaxed32(&pub->daemon->fence), o = pub->fence_word;

	if (f != o && !(SHMBUS_FENCE_STATE(f) == SHMBUS_FENCE_HANDOVER &&
			f >> 8 == (o >> 8) + 1))
		return -EROFS;
	return sync_verdict(pub->ch, w, pub->synced, target);
}

SHMBUS_EXPORT int shmbus_pub_sync(shmbus_pub *pub, int64_t timeout_ns)
{
	struct shmbus_daemon_area *d;
	struct shmbus_hdr *h;
	uint64_t target, w;
	int64_t now, start, deadline, beat;
	int rc;

	if (!pub)
		return -EINVAL;
	if (pub->forked)
		return -EPERM;
	h = pub->hdr;
	d = pub->daemon;
	target = sync_target(pub);
	/* No edge: the channel's configuration, set before it is handed
	 * out and changed only by a reload. */
	if (!(load_relaxed32(&d->repl_flags) &
	      (SHMBUS_REPL_ON | SHMBUS_REPL_JOURNAL)))
		return 0;
	/* A14: pairs with R14 in sb_repl_watermark(). */
	w = load_acquire64(&d->replicated_pos);
	if ((rc = answer(pub, w, target)) != -EAGAIN)
		goto done;
	start = beat = sb_now_ns();
	deadline = timeout_ns < 0 ? INT64_MAX : sb_after(start, timeout_ns);
	/* Tell the agent: ship now, and spin while we wait.  No edge: hints;
	 * a kick missed costs the agent's nap. */
	add_seqcst32(&h->sync_waiters, 1);
	/* F8: pairs with F8 in sb_repl_agent_wait(): the kick, then whether
	 * an agent sleeps on it (a system call less on the round trip while
	 * the agents are awake).  Every agent that waits on it: the
	 * replication agent and the journal's. */
	add_seqcst32(&h->kick, 1);
	/* No edge: a daemon that does not count sleepers (an older one)
	 * never says so, and is woken every time. */
	if (load_relaxed32(&h->kick_counted) != SHMBUS_KICK_COUNTED ||
	    load_seqcst32(&h->kick_sleepers))
		syscall(SYS_futex, &h->kick, FUTEX_WAKE, INT_MAX, NULL, NULL,
			0);
	for (;;) {
		uint32_t f;

		/* A14 (see above). */
		w = load_acquire64(&d->replicated_pos);
		if ((rc = answer(pub, w, target)) != -EAGAIN)
			break;
		now = sb_now_ns();
		if (now >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		/* Yield, not spin: the acknowledgement needs the agent's
		 * threads to run, on the CPU we would hold (bench_repl, two
		 * CPUs: 9.2 us a round trip against 30 us with cpu_relax()). */
		if (now - start < SYNC_SPIN_NS) {
			sched_yield();
			continue;
		}
		/* Still waiting, says the kick word's beat to the agent
		 * (sb_repl_sync_waiting()). */
		if (now - beat >= SB_SYNC_BEAT_NS) {
			/* No edge: a hint. */
			add_seqcst32(&h->kick, 1);
			beat = now;
		}
		/* No edge of its own: the futex word before the re-check, as
		 * a sleeping subscriber reads the channel's (sleep_wait()). */
		f = load_seqcst32(&h->ack_futex);
		/* F5's store side: the count, then the fence. */
		add_seqcst32(&h->ack_waiters, 1);
		/* F5: pairs with F5 in sb_repl_watermark(). */
		fence_seqcst();
		/* A14 (see above). */
		w = load_acquire64(&d->replicated_pos);
		if (w < target) {
			int64_t left = deadline - now;
			struct timespec ts = { left / 1000000000,
					       left % 1000000000 };

			/* Wake up now and then anyway: the fence is not a
			 * futex word. */
			if (left > 10000000)
				ts = (struct timespec){ 0, 10000000 };
			syscall(SYS_futex, &h->ack_futex, FUTEX_WAIT, f, &ts,
				NULL, 0);
		}
		/* No edge: we re-check ourselves. */
		sub_seqcst32(&h->ack_waiters, 1);
	}
	/* No edge: a hint to the agent. */
	sub_seqcst32(&h->sync_waiters, 1);
done:
	if (rc == 0)
		pub->synced = target;
	return rc;
}
