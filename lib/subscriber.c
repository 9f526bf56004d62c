/* SPDX-License-Identifier: MIT */
/*
 * subscriber.c - opening and closing a subscriber: its cursor slot, where
 * it starts, and what it tells busstat.  Reading is subscribe.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"
#include "repair.h"
#include "sub.h"

/* How far back from a cursor at_record() looks for an index entry, in
 * segments (a claim, a batch, spans at most half the ring: the entries of
 * the segments it covers all name its end), and how many records it walks
 * from there at most. */
#define AT_RECORD_SEGS	(SHMBUS_NSEG / 2 + 1)
#define AT_RECORD_STEPS	65536u

/*
 * Whether position c is where a committed record of the ring starts: a
 * walk over committed records, from an index entry at or before c (in
 * the data file, which no subscriber writes), lands on it.  A cursor is
 * in the control file: any subscriber can write one 8-aligned into the
 * middle of a record, where payload bytes would read as a claim never
 * committed (a subscriber started there would wait for ever) or as a
 * record of their own.  An honest cursor may fail the walk too (more
 * than AT_RECORD_STEPS records after the entry, or in records being
 * overwritten): it is then only no start.
 */
static bool at_record(struct shmbus_channel *ch, uint64_t c)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2, b = c & ~(seg - 1), p = 0;
	uint32_t type;
	bool found = false;

	for (unsigned k = 0; k < AT_RECORD_SEGS && b >= k * seg; k++) {
		uint64_t s = b - k * seg;
		/* A4: pairs with R4 in sb_seg_index(). */
		uint64_t e = load_acquire64(
			&ch->segs[(s >> ch->seg_log2) & (SHMBUS_NSEG - 1)].pos);

		/* An entry of this lap for s, at or before c (one past c is
		 * the end of a claim that covers both, or of a later lap's). */
		if (e >= s && e <= c && e % SHMBUS_REC_ALIGN == 0) {
			p = e;
			found = true;
			break;
		}
	}
	if (!found)
		return false;
	/* Each step moves on by a committed record's size (8 at least). */
	for (unsigned n = 0; p < c && n < AT_RECORD_STEPS; n++) {
		uint64_t size = sb_ring_rec_at(ch, p, &type);

		if (!size)
			return false;
		p += size;
	}
	return p == c;
}

/* The first record boundary the index names at or after c, below head
 * (as sb_sub_find_oldest() finds one from the ring's oldest); else head. */
static uint64_t boundary_after(struct shmbus_channel *ch, uint64_t c,
			       uint64_t head)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2;

	for (uint64_t b = (c + seg - 1) & ~(seg - 1); b >= c && b <= head;
	     b += seg) {
		/* A4: pairs with R4 in sb_seg_index(). */
		uint64_t e = load_acquire64(
			&ch->segs[(b >> ch->seg_log2) & (SHMBUS_NSEG - 1)].pos);

		if (e >= b && e <= head && e - b <= ch->cap / 2 &&
		    e % SHMBUS_REC_ALIGN == 0)
			return e;
	}
	return head;
}

/* Block policy, SHMBUS_START_OLDEST: the slowest active cursor other than
 * ours, which producers are already holding back for; else head.  A
 * cursor that is no record boundary (unaligned, or inside a record:
 * at_record()) is damage, and never becomes another's start: a new
 * agent's kept cursor or a group's floor would hold it for good, and a
 * subscriber would wait there for ever.  Such a cursor still holds the
 * producers: we start at the first boundary the index names after it. */
static uint64_t oldest_held(struct shmbus_channel *ch,
			    const struct shmbus_sub_slot *me, uint64_t head)
{
	uint64_t min = head;

	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		uint64_t c;

		/* A7: pairs with R7 (the slot's ACTIVE store). */
		if (s == me || !sb_slot_gates(load_acquire64(&s->owner)))
			continue;
		c = load_acquire64(&s->pos);
		if (c < min && c + ch->cap >= head + SHMBUS_REC_ALIGN &&
		    c % SHMBUS_REC_ALIGN == 0)
			min = c;
	}
	if (min == head || at_record(ch, min))
		return min;
	return boundary_after(ch, min, head);
}

/* How long a subscriber's open waits for a claim in flight at the oldest
 * record of an overwrite ring to be committed (or repaired: shmbusd's
 * scan pads a dead producer's claim within milliseconds). */
#define OLDEST_WAIT_NS	INT64_C(50000000)

/* Overwrite policy, SHMBUS_START_OLDEST: the oldest record the ring holds,
 * with the seq of the first record from it on that has one as the
 * baseline of what the subscriber loses if it is lapped before its first
 * read (a NEWEST subscriber's is the channel's counter, `hseq`, read
 * before head).  A ring that holds no record with a seq between the start
 * and head (empty: a subscriber opened before its producers; or only
 * padding) has the NEWEST one's.  Without one (lapped meanwhile, or
 * padding beyond reach), no baseline. */
static uint64_t oldest_overwrite(struct shmbus_sub *sub, uint64_t head,
				 uint64_t hseq)
{
	struct shmbus_channel *ch = sub->ch;
	uint64_t start, p, seq, size;
	uint32_t type;

	sb_sub_find_oldest(ch, head, &start);
	p = start;
	for (int n = 0; n < 4 && p < head; n++, p += size) {
		int64_t until = 0;

		/* A record not committed yet is a claim in flight, which
		 * holds a seq already, or will (the counter read before
		 * head may be past it): its commit, or the repair of a dead
		 * producer's claim, tells.  Waited for at most OLDEST_WAIT_NS;
		 * a claim held open longer leaves no baseline. */
		while (!(size = sb_ring_pad_at(ch, p, &type))) {
			int64_t now;

			if (sb_ring_seq_at(ch, p, &seq)) {
				sub->next_seq = seq;
				sub->have_seq = true;
				return start;
			}
			now = sb_now_ns();
			if (!until)
				until = now + OLDEST_WAIT_NS;
			if (now >= until || !sb_ring_holds(ch, p))
				return start;
			if (now + OLDEST_WAIT_NS - until < 20000)
				cpu_relax();
			else
				usleep(200);
		}
	}
	if (p == head) {
		sub->next_seq = hseq;
		sub->have_seq = true;
	}
	return start;
}

void sb_hwm_raise(struct shmbus_hdr *h, uint32_t n)
{
	uint32_t cur = load_relaxed32(&h->nsub_hwm);

	/* A monotone maximum, raised before our ACTIVE store.  No producer
	 * of this library trusts it (sb_refresh_limit() scans every slot:
	 * any subscriber can write it down); kept for any reader of the
	 * layout that scans only the slots below it, after F1. */
	while (cur < n && !cas_strong_seqcst32(&h->nsub_hwm, &cur, n))
		;
}

/* Takes a free slot, or one whose owner process is gone: a subscriber
 * that died (ACTIVE), or one that died setting its slot up, or a
 * repairer that died releasing it (BUSY), as sb_repair_sub() frees them.
 * Without shmbusd nobody else frees a BUSY slot: every opener killed in
 * its membarrier() (milliseconds, SHMBUS_WAIT_SLEEP) would lose one for
 * good. */
static struct shmbus_sub_slot *take_slot(struct shmbus_channel *ch,
					 uint32_t *index)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		uint64_t o = load_relaxed64(&s->owner);
		uint32_t st = owner_state(o);
		bool took;
		int held;

		if ((st == SHMBUS_SLOT_ACTIVE || st == SHMBUS_SLOT_BUSY) &&
		    sb_slot_alive(ch, SB_HELD_SUB, i, o))
			continue;
		if (st == SHMBUS_SLOT_GROUP || sb_slot_kept(st))
			continue;
		/* Listed first; a word naming our pid is judged again under
		 * the lock the CAS is made under (pid.c). */
		if (!(held = sb_held_begin(ch, SB_HELD_SUB, i, o)))
			continue;
		/* A13: pairs with R13 (the slot freed by its previous owner
		 * or a repair).  Claims the slot for us alone: the state and
		 * the dead owner's pid in one compare. */
		took = cas_strong_seqcst64(&s->owner, &o,
					   own_word(SHMBUS_SLOT_BUSY));
		sb_held_end(ch, SB_HELD_SUB, i, held, took);
		if (!took)
			continue;
		/* A dead owner that was asleep still counts as a sleeper;
		 * undo its increment (it set sleeping after it, in
		 * sleep_wait(); a repairer that died releasing its slot left
		 * it BUSY before the undo).  The exchange: exactly once,
		 * whoever else repairs the same slot (sb_repair_sub()).  F3's
		 * counter, as in sleep_wait(). */
		if (st != SHMBUS_SLOT_FREE && xchg_relaxed32(&s->sleeping, 0))
			sub_seqcst32(&ch->hdr->sleepers, 1);
		/* Nor do we wait on the mailbox, or sleep, yet. */
		sb_mbox_unwant(ch, i);
		sb_sleep_unannounce(ch, i);
		*index = i;
		return s;
	}
	return NULL;
}

SHMBUS_EXPORT void shmbus_sub_attr_init(struct shmbus_sub_attr *attr)
{
	if (!attr)
		return;
	memset(attr, 0, sizeof(*attr));
	attr->start = SHMBUS_START_NEWEST;
	attr->wait = SHMBUS_WAIT_SPIN;
	attr->spin_ns = 20000;
}

/* A handle's copies of the channel's validated geometry, for slot i. */
static void sub_init(struct shmbus_sub *sub, struct shmbus_channel *ch,
		     struct shmbus_sub_slot *s, uint32_t i,
		     const struct shmbus_sub_attr *attr)
{
	sub->ch = ch;
	sub->slot = s;
	sub->data = ch->data;
	sub->mask = ch->mask;
	sub->cap = ch->cap;
	sub->cap_log2 = ch->cap_log2;
	sub->cursor_every = ch->cap >> CURSOR_EVERY_SHIFT;
	sub->max_msg = ch->max_msg;
	sub->mb_max = ch_mbox_max(ch);
	sub->overwrite = ch_overwrite(ch);
	sub->careful = sub->overwrite;
	sub->has_mbox = !ch_multi(ch);
	sub->mbox = ch->mbox;
	sub->mode = SB_SUB_RING;
	sub->want_bit = UINT64_C(1) << i;
	sub->wait = attr->wait;
	sub->spin_ns = attr->spin_ns ? attr->spin_ns : 20000;
}

/* After F7: whether the ring is being cut back (sb_ring_cut_begin()),
 * which did not count on us: the slot just taken must be given back
 * (give_back(), after whatever else of the slot's is undone: once free,
 * it is another opener's). */
static bool being_cut(struct shmbus_channel *ch)
{
	/* F7 orders this load after our owner store.  A26: pairs with R26
	 * in sb_fence_leave_cut(): past a cut, its head and handoff. */
	return SHMBUS_FENCE_STATE(load_acquire32(&ch->daemon->fence)) ==
	       SHMBUS_FENCE_CUT;
}

static void give_back(struct shmbus_channel *ch, struct shmbus_sub_slot *s)
{
	/* R13: pairs with A13 in take_slot(). */
	store_release64(&s->owner, owner_word(SHMBUS_SLOT_FREE, 0));
	sb_held_drop(ch, SB_HELD_SUB, (uint32_t)(s - ch->subs));
}

/*
 * The slot's next_seq until our first read publishes our own: what the
 * lag in messages (shmbus_channel_subscriber()) counts from.  At head,
 * the channel's sequence counter; at an older start, the first record's
 * seq.  A statistic: no edge, and a value the ring could not hold there
 * (padding has no seq; an overwrite may be under way) counts as none.
 */
static uint64_t lag_base(struct shmbus_channel *ch, uint64_t start,
			 uint64_t head, uint64_t seq)
{
	uint64_t first;

	if (start == head || start % SHMBUS_REC_ALIGN)
		return seq;	/* (an unaligned start is damage, said later) */
	/* No edge: a statistic (see above). */
	first = load_relaxed64(&rec_at(ch, start)->seq);
	return first <= seq && seq - first <= ch->cap / SHMBUS_REC_ALIGN ?
	       first : seq;
}

/* In a fork's child, the copy of a parent's subscriber: poll, read and
 * wait say -EPERM (the front, which answers a caught-up subscriber alone,
 * leaves it to them: resynced; and has no cursor of its own to publish),
 * so that the parent's cursor is the parent's alone. */
static void sub_forked(struct sb_forkable *f)
{
	struct shmbus_sub *sub = sb_container_of(f, struct shmbus_sub, fork);

	sub->forked = true;
	sub->resynced = true;
	sub->published = sub->pos;
}

SHMBUS_EXPORT shmbus_sub *shmbus_sub_open(shmbus_channel *ch,
					  const struct shmbus_sub_attr *attr)
{
	struct shmbus_sub_attr def = { 0 };
	struct shmbus_sub *sub;
	struct shmbus_sub_slot *s;
	uint64_t head, start, seq;
	uint32_t i;

	if (!ch || (attr && (attr->wait > SHMBUS_WAIT_SLEEP ||
			     attr->start > SHMBUS_START_OLDEST))) {
		errno = EINVAL;
		return NULL;
	}
	if (ch->rdonly || ch->no_sub) {
		errno = EPERM;	/* a subscriber writes its cursor slot */
		return NULL;
	}
	/* What a dead process with our pid left: nobody else repairs it
	 * while we live.  Its claims and role only where the records are
	 * writable (direct mode; shmbusd's subscribers map them read-only,
	 * and shmbusd repairs).  Whether this open succeeds or not. */
	sb_release_own_left(ch, !ch->no_pub);
	if (!attr)
		attr = &def;
	sub = calloc(1, sizeof(*sub));
	if (sub)
		sub->opener = (uint32_t)getpid();
	if (sub && ch_overwrite(ch))
		sub->buf = malloc(ch->max_msg ? ch->max_msg : 1);
	if (!sub || (ch_overwrite(ch) && !sub->buf)) {
		if (sub)
			free(sub);
		errno = ENOMEM;
		return NULL;
	}
	s = take_slot(ch, &i);
	if (!s) {
		free(sub->buf);
		free(sub);
		errno = ENOSPC;
		return NULL;
	}
	sub_init(sub, ch, s, i, attr);
	/* Before we first wait: producers make the wake check from now on
	 * (costs a grace period, milliseconds, here). */
	if (attr->wait == SHMBUS_WAIT_SLEEP)
		sub->nap = !sb_sleep_announce(ch, i);

	store_relaxed32(&s->wait, (uint32_t)attr->wait);
	store_relaxed32(&s->sleeping, 0);
	store_relaxed64(&s->delivered, 0);
	store_relaxed64(&s->lost, 0);
	store_relaxed64(&s->gen, load_relaxed64(&s->gen) + 1);
	memset(s->comm, 0, sizeof(s->comm));
	prctl(PR_GET_NAME, s->comm);
	/* A conservative first cursor: no later than where we will start. */
	store_relaxed64(&s->pos, load_relaxed64(&ch->pl->head));
	sb_hwm_raise(ch->hdr, i + 1);
	/* R7: pairs with A7 (slot readers); seq_cst, as the store that F1
	 * orders before our load of head. */
	store_seqcst64(&s->owner, own_word(SHMBUS_SLOT_ACTIVE));
	/* F1: pairs with F1 in sb_refresh_limit() (see there).  F7: pairs
	 * with F7 in sb_ring_cut_begin(): it sees our slot, or we see its
	 * fence below. */
	fence_seqcst();
	if (being_cut(ch)) {
		/* Before the slot is free: its next owner's bit is its own. */
		if (attr->wait == SHMBUS_WAIT_SLEEP)
			sb_sleep_unannounce(ch, i);
		give_back(ch, s);
		free(sub->buf);
		free(sub);
		errno = EAGAIN;
		return NULL;
	}
	/* The sequence counter read before head is a lower bound of the seq
	 * of the first message at head: the baseline for counting losses
	 * should we be lapped before reading anything. */
	/* A28: pairs with R28 (sp_claimed(), mp_claimed(), sb_apply()):
	 * head is read after seq, not before (on a weakly ordered CPU,
	 * relaxed loads could be, and a seq counting claims past head would
	 * make the baseline too high: a loss counted short). */
	seq = load_acquire64(&ch->pl->seq);
	head = load_relaxed64(&ch->pl->head);
	if (attr->start == SHMBUS_START_NEWEST) {
		start = head;
		sub->next_seq = seq;
		sub->have_seq = true;
	}
	else if (ch_overwrite(ch))
		start = oldest_overwrite(sub, head, seq);
	else
		start = oldest_held(ch, s, head);
	sub->pos = start;
	sub->published = start;
	sub->fresh = start == head;
	store_relaxed64(&s->next_seq, lag_base(ch, start, head, seq));
	/* R5 (see publish_cursor()). */
	store_release64(&s->pos, start);
	sb_fork_track(&sub->fork, sub_forked);
	return sub;
}

/* A slot just taken (BUSY) made ready for an owner without a process of
 * its own (a group, the journal): its fields, then a conservative first
 * cursor (head), then the mark; the owner word is stored after, R7. */
static void slot_fresh(struct shmbus_channel *ch, struct shmbus_sub_slot *s,
		       uint32_t index, const char *name)
{
	store_relaxed32(&s->wait, 0);
	store_relaxed32(&s->sleeping, 0);
	store_relaxed64(&s->delivered, 0);
	store_relaxed64(&s->lost, 0);
	store_relaxed64(&s->gen, load_relaxed64(&s->gen) + 1);
	memset(s->comm, 0, sizeof(s->comm));
	snprintf(s->comm, sizeof(s->comm), "%s", name);
	store_relaxed64(&s->pos, load_relaxed64(&ch->pl->head));
	sb_hwm_raise(ch->hdr, index + 1);
}

/*
 * Takes a subscriber slot for a consumer group (owner state
 * SHMBUS_SLOT_GROUP), exactly as a subscriber opens: its cursor is the
 * group's start, and then its floor.  The slot names its creator until
 * the group's file is in place (sb_slot_group_made()); then no pid, and
 * it is never reaped.  A creator that dies before leaves its pid for
 * the repairs (sb_repair_sub()).
 */
int sb_slot_take_group(struct shmbus_channel *ch, enum shmbus_start start,
		       const char *name, uint32_t *index, uint64_t *pos,
		       bool *fresh, uint64_t *seq)
{
	struct shmbus_sub_slot *s = take_slot(ch, index);
	uint64_t head, at;

	if (!s)
		return -ENOSPC;
	slot_fresh(ch, s, *index, name);
	/* R7, and F1 after it, as in shmbus_sub_open(). */
	store_seqcst64(&s->owner, own_word(SHMBUS_SLOT_GROUP));
	/* F1, and F7: pairs with F7 in sb_ring_cut_begin(). */
	fence_seqcst();
	if (being_cut(ch)) {
		give_back(ch, s);
		return -EAGAIN;
	}
	/* As in shmbus_sub_open(): a lower bound of the seq at head.  A28:
	 * pairs with R28 (sp_claimed(), mp_claimed(), sb_apply()). */
	*seq = load_acquire64(&ch->pl->seq);
	head = load_relaxed64(&ch->pl->head);
	if (start == SHMBUS_START_NEWEST)
		at = head;
	else if (ch_overwrite(ch))
		sb_sub_find_oldest(ch, head, &at);
	else
		at = oldest_held(ch, s, head);
	*pos = at;
	*fresh = at == head;
	if (!*fresh)
		*seq = UINT64_MAX;
	/* R5 (see publish_cursor()). */
	store_release64(&s->pos, at);
	return 0;
}

/* The group's file is in place: its slot no longer names its creator. */
void sb_slot_group_made(struct shmbus_channel *ch, uint32_t index)
{
	uint64_t o = own_word(SHMBUS_SLOT_GROUP);

	/* R7 (a new word for the slot's readers); if a repair judged us
	 * dead meanwhile it found our file (sb_group_claims_slot()). */
	cas_strong_seqcst64(&ch->subs[index].owner, &o,
			    owner_word(SHMBUS_SLOT_GROUP, 0));
	sb_held_drop(ch, SB_HELD_SUB, index);	/* it names nobody now */
}

/* Gives a group's slot back (the group is deleted, or lost a race to
 * create it). */
void sb_slot_release_group(struct shmbus_channel *ch, uint32_t index)
{
	struct shmbus_sub_slot *s;
	uint64_t o;

	if (index >= SHMBUS_MAX_SLOTS)
		return;
	s = &ch->subs[index];
	o = load_relaxed64(&s->owner);
	if (owner_state(o) != SHMBUS_SLOT_GROUP)
		return;
	/* Its members may have slept (group.c's member_sleep()). */
	sb_sleep_unannounce(ch, index);
	/* R13: pairs with A13 in take_slot(). */
	if (cas_strong_seqcst64(&s->owner, &o, owner_word(SHMBUS_SLOT_FREE, 0)) &&
	    owner_pid(o) != 0 && sb_word_is_ours(o))
		sb_held_drop(ch, SB_HELD_SUB, index);	/* a creator's */
}

SHMBUS_EXPORT void shmbus_sub_close(shmbus_sub *sub)
{
	if (!sub)
		return;
	sb_fork_untrack(&sub->fork);
	/* A fork's copy of the handle: the slot, its cursor and its bits are
	 * the parent's, which goes on reading (or, if it closed it, perhaps
	 * this process's own new subscriber's): only the copy goes.  A kept
	 * cursor (opener 0) is shmbusd's, closed by it. */
	if (!sub->forked &&
	    (!sub->opener || sub->opener == (uint32_t)getpid())) {
		sb_sub_publish(sub);
		sb_mbox_unwant(sub->ch, (uint32_t)(sub->slot - sub->ch->subs));
		sb_sleep_unannounce(sub->ch,
				    (uint32_t)(sub->slot - sub->ch->subs));
		/* R13: pairs with A13 in take_slot(): our last stores to the
		 * slot precede its reuse. */
		store_release64(&sub->slot->owner,
				owner_word(SHMBUS_SLOT_FREE, 0));
		sb_held_drop(sub->ch, SB_HELD_SUB,
			     (uint32_t)(sub->slot - sub->ch->subs));
	}
	free(sub->buf);
	free(sub);
}

SHMBUS_EXPORT int shmbus_sub_stats(shmbus_sub *sub, struct shmbus_sub_stats *st)
{
	uint64_t head;

	if (!sub || !st)
		return -EINVAL;
	head = load_relaxed64(&sub->ch->pl->head);	/* a statistic */
	st->pos = sub->pos;
	st->delivered = sub->delivered;
	st->lost = sub->lost;
	st->lag_bytes = head > sub->pos ? head - sub->pos : 0;
	return 0;
}

void sb_sub_seek(struct shmbus_sub *sub, uint64_t pos)
{
	sub->pos = pos;
	sub->published = pos;
	/* R5: pairs with A5 in sb_refresh_limit(); nothing is read through
	 * this slot, so it releases nothing but the position. */
	store_release64(&sub->slot->pos, pos);
}

/*
 * A subscriber whose cursor is at pos: a record boundary that the ring
 * still holds, at or after the oldest position producers are already
 * held back for (block policy), so that holding it from now on is sound;
 * else -ERANGE (the caller reads pos elsewhere, the journal, and tries
 * again further on).  For the journal's agent and the replaying
 * subscriber.
 */
struct shmbus_sub *sb_sub_open_at(struct shmbus_channel *ch,
				  const struct shmbus_sub_attr *attr,
				  uint64_t pos, uint64_t next_seq, bool gap,
				  int *err)
{
	struct shmbus_sub_attr a;
	struct shmbus_sub *sub;
	uint64_t head;

	if (attr)
		a = *attr;
	else
		shmbus_sub_attr_init(&a);
	a.start = SHMBUS_START_OLDEST;
	sub = shmbus_sub_open(ch, &a);
	if (!sub) {
		*err = -errno;
		return NULL;
	}
	/* sub->pos is now the oldest held position (block) or the oldest
	 * record (overwrite), published in our slot (R5).  A12: head
	 * bounds what may be read; pos == head is a position no record has
	 * reached yet (fresh: see trusted()). */
	head = load_acquire64(&ch->pl->head);
	if (pos < sub->pos || pos > head ||
	    (pos != head && !sb_ring_has_record(ch, pos))) {
		shmbus_sub_close(sub);
		*err = -ERANGE;
		return NULL;
	}
	sub->pos = pos;
	sub->published = pos;
	sub->fresh = pos == head;
	sub->have_seq = next_seq != UINT64_MAX;
	sub->next_seq = next_seq;
	sub->resynced = gap;
	/* R5 (see publish_cursor()): only forward from what was held. */
	store_release64(&sub->slot->pos, pos);
	*err = 0;
	return sub;
}

/* Frees the handle and leaves its slot as it is: at shmbusd's exit, a
 * kept cursor (the journal's, the replication agent's) keeps holding a
 * block channel's producers until the next shmbusd takes it over. */
void sb_sub_abandon(struct shmbus_sub *sub)
{
	if (!sub)
		return;
	free(sub->buf);
	free(sub);
}

/*
 * A kept cursor (owner state `kind`: SHMBUS_SLOT_JOURNAL or
 * SHMBUS_SLOT_REPL): the channel's existing one, taken over where it is
 * (one shmbusd runs at a time, and this slot outlives it), or a free slot
 * set at pos if the ring can be held there, else at the oldest position
 * that can be.  *err is 0, or -ENOSPC, -ENOMEM, -EBADMSG (a kept slot
 * whose cursor is impossible).  *taken: an existing one was taken over.
 * For shmbusd's agents only; they move the cursor with sb_sub_seek() and
 * never read through the handle.
 */
struct shmbus_sub *sb_sub_kept(struct shmbus_channel *ch, uint32_t kind,
			       uint64_t pos, bool *taken, int *err)
{
	struct shmbus_sub_attr a;
	struct shmbus_sub *sub = calloc(1, sizeof(*sub));
	struct shmbus_sub_slot *s = NULL;
	uint64_t head, start, so = 0;
	uint32_t i = 0;

	*err = -ENOMEM;
	*taken = false;
	if (!sub)
		return NULL;
	shmbus_sub_attr_init(&a);
	for (uint32_t k = SHMBUS_MAX_SLOTS; k-- > 0;) {
		/* A7: pairs with R7 (the slot's kept-state store). */
		uint64_t o = load_acquire64(&ch->subs[k].owner);

		if (owner_state(o) != kind)
			continue;
		/* One agent of a kind keeps one slot: another is not its
		 * (a write into shared memory), and would hold producers for
		 * ever.  R13: pairs with A13 in take_slot(). */
		if (s)
			cas_strong_seqcst64(&s->owner, &so,
					    owner_word(SHMBUS_SLOT_FREE, 0));
		s = &ch->subs[k];
		so = o;
		i = k;
	}
	if (s) {
		/* A5: pairs with R5 (the previous agent's seek). */
		start = load_acquire64(&s->pos);
		head = load_acquire64(&ch->pl->head);	/* A12 */
		/* On a block channel, producers never pass it by more than
		 * a ring. */
		if (start % SHMBUS_REC_ALIGN || start > head ||
		    (!ch_overwrite(ch) && head - start > ch->cap)) {
			free(sub);
			*err = -EBADMSG;
			return NULL;
		}
		sub_init(sub, ch, s, i, &a);
		sub->pos = sub->published = start;
		*taken = true;
		*err = 0;
		return sub;
	}
	s = take_slot(ch, &i);
	if (!s) {
		free(sub);
		*err = -ENOSPC;
		return NULL;
	}
	sub_init(sub, ch, s, i, &a);
	slot_fresh(ch, s, i, kind == SHMBUS_SLOT_REPL ? "replication"
						      : "journal");
	/* R7, and F1 after it, as in shmbus_sub_open(). */
	store_seqcst64(&s->owner, owner_word(kind, 0));
	sb_held_drop(ch, SB_HELD_SUB, i);	/* it names nobody now */
	fence_seqcst();
	head = load_relaxed64(&ch->pl->head);
	if (ch_overwrite(ch))
		sb_sub_find_oldest(ch, head, &start);
	else
		start = oldest_held(ch, s, head);
	/* Held from start on: pos too, if it is a record there. */
	if (pos != UINT64_MAX && pos >= start && pos <= head &&
	    pos % SHMBUS_REC_ALIGN == 0 && sb_ring_has_record(ch, pos))
		start = pos;
	sub->pos = sub->published = start;
	/* R5 (see publish_cursor()). */
	store_release64(&s->pos, start);
	*err = 0;
	return sub;
}

/* The kept cursor of this kind, if any, no longer holds anyone. */
void sb_sub_kept_release(struct shmbus_channel *ch, uint32_t kind)
{
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		uint64_t o = load_acquire64(&s->owner);	/* A7 */

		/* R13: pairs with A13 in take_slot(). */
		if (owner_state(o) == kind)
			cas_strong_seqcst64(&s->owner, &o,
					    owner_word(SHMBUS_SLOT_FREE, 0));
	}
}
