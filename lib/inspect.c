/* SPDX-License-Identifier: MIT */
/*
 * inspect.c - what a channel's header, slots and shmbusd's area say, for
 * busstat, the daemon and shmbusctl: a snapshot of the counters, and of one
 * subscriber or producer slot.  Works on a read-only mapping too.  Every
 * value comes from shared memory without a lock and is read, not trusted:
 * each is checked before it indexes anything.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <time.h>

#include "channel.h"

SHMBUS_EXPORT int shmbus_channel_info(shmbus_channel *ch,
				      struct shmbus_channel_info *info)
{
	const struct shmbus_hdr *h;
	uint32_t nsub = 0, nprod = 0;

	if (!ch || !info)
		return -EINVAL;
	h = ch->hdr;
	memset(info, 0, sizeof(*info));
	info->capacity = ch->cap;
	info->max_msg = ch->max_msg;
	info->policy = ch_overwrite(ch) ? SHMBUS_OVERWRITE : SHMBUS_BLOCK;
	info->producers = ch_multi(ch) ? SHMBUS_MULTI_PRODUCER
				       : SHMBUS_SINGLE_PRODUCER;
	info->numa_node = h->numa_node;
	info->create_ns = h->create_ns;
	/* statistics: no edge */
	info->head = load_relaxed64(&ch->pl->head);
	info->published = load_relaxed64(&ch->pl->seq);
	info->bytes = load_relaxed64(&ch->pl->bytes);
	info->backpressure = load_relaxed64(&h->backpressure);
	info->wakeups = load_relaxed64(&h->wakeups);
	info->aborts = load_relaxed64(&h->aborts);
	info->repairs = load_relaxed64(&h->repairs);
	info->reaped = load_relaxed64(&h->reaped);
	info->stuck = load_relaxed64(&h->stuck);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++)
		nsub += owner_state(load_relaxed64(&ch->subs[i].owner)) ==
			SHMBUS_SLOT_ACTIVE;
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++)
		nprod += owner_state(load_relaxed64(&ch->prods[i].owner)) ==
			 SHMBUS_SLOT_ACTIVE;
	info->subscribers = nsub;
	info->producers_active = nprod;
	info->huge_pages = ch->huge;
	return 0;
}

/* The owner of a slot, as shared memory says: pid, name (always
 * NUL-terminated here) and whether that process exists. */
static void slot_owner(uint64_t owner, const char comm[16],
		       pid_t *opid, char ocomm[16], int *alive)
{
	uint32_t p = owner_pid(owner);

	*opid = (pid_t)(p > INT32_MAX ? 0 : p);
	memcpy(ocomm, comm, 16);
	ocomm[15] = 0;
	*alive = !sb_owner_gone(owner);	/* as the repairs judge it */
}

SHMBUS_EXPORT int shmbus_channel_subscriber(shmbus_channel *ch, unsigned slot,
					    struct shmbus_sub_info *out)
{
	const struct shmbus_sub_slot *s;
	uint64_t head, seq, next, o;
	uint32_t w;

	if (!ch || !out || slot >= SHMBUS_MAX_SLOTS)
		return -EINVAL;
	s = &ch->subs[slot];
	/* A7: pairs with R7 (the slot's ACTIVE store). */
	o = load_acquire64(&s->owner);
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	slot_owner(o, s->comm, &out->pid, out->comm, &out->alive);
	w = load_relaxed32(&s->wait);
	out->wait = w <= SHMBUS_WAIT_SLEEP ? (enum shmbus_wait)w
					   : SHMBUS_WAIT_SPIN;
	out->sleeping = load_relaxed32(&s->sleeping) != 0;
	out->pos = load_relaxed64(&s->pos);
	out->delivered = load_relaxed64(&s->delivered);
	out->lost = load_relaxed64(&s->lost);
	head = load_relaxed64(&ch->pl->head);
	seq = load_relaxed64(&ch->pl->seq);
	next = load_relaxed64(&s->next_seq);
	/* Untrusted values: a cursor past head or a count from the future
	 * shows as no lag rather than as a huge one. */
	out->lag_bytes = head > out->pos ? head - out->pos : 0;
	out->lag_msgs = seq > next ? seq - next : 0;
	return 0;
}

SHMBUS_EXPORT int shmbus_channel_producer(shmbus_channel *ch, unsigned slot,
					  struct shmbus_prod_info *out)
{
	const struct shmbus_prod_slot *s;
	uint64_t c, o;

	if (!ch || !out || slot >= SHMBUS_MAX_PRODUCERS)
		return -EINVAL;
	s = &ch->prods[slot];
	/* A7: pairs with R7 (the slot's ACTIVE store). */
	o = load_acquire64(&s->owner);
	if (owner_state(o) != SHMBUS_SLOT_ACTIVE)
		return -ENOENT;
	memset(out, 0, sizeof(*out));
	slot_owner(o, s->comm, &out->pid, out->comm, &out->alive);
	out->published = load_relaxed64(&s->published);
	c = load_relaxed64(&s->claim_pos);
	out->claiming = ch_multi(ch) && c != UINT64_MAX;
	out->claim_pos = out->claiming ? c : 0;
	return 0;
}

/* The messages from position p to head: head's sequence number less the
 * one of the first message at or after p, if the ring still holds p. */
static uint64_t lag_messages(struct shmbus_channel *ch, uint64_t p,
			     uint64_t head, uint64_t seq)
{
	for (int steps = 0; steps < 4 && p < head; steps++) {
		uint64_t w, s, h2;

		/* p comes from shared memory: never dereferenced unaligned. */
		if (p % SHMBUS_REC_ALIGN)
			return UINT64_MAX;
		/* A1: pairs with R1; the record is read, not trusted: its
		 * seq counts only if head shows it was not overwritten. */
		w = load_acquire64(&rec_at(ch, p)->commit);
		if (word_tag(w) != lap_tag(ch, p))
			return UINT64_MAX;
		if (type_word_only(word_type(w))) {
			p += SHMBUS_REC_ALIGN + word_len(w);
			continue;
		}
		s = load_relaxed64(&rec_at(ch, p)->seq);
		/* A2: pairs with R2: a claim over what we read shows in
		 * head. */
		fence_acquire();
		h2 = load_relaxed64(&ch->pl->head);
		if (!not_overwritten(ch, p, h2) || s > seq)
			return UINT64_MAX;
		return seq - s;
	}
	return 0;
}

SHMBUS_EXPORT int shmbus_channel_replication(shmbus_channel *ch,
					     struct shmbus_repl_info *out)
{
	const struct shmbus_prod_line *pl;
	const struct shmbus_daemon_area *d;
	uint32_t f;
	uint64_t pos, seq;
	struct timespec ts;

	if (!ch || !out)
		return -EINVAL;
	pl = ch->pl;
	d = ch->daemon;
	memset(out, 0, sizeof(*out));
	/* No edge: statistics, each value read once and checked. */
	f = load_relaxed32(&d->repl_flags);
	out->fenced = SHMBUS_FENCE_STATE(load_relaxed32(&d->fence)) !=
		      SHMBUS_FENCE_OPEN;
	if (!(f & SHMBUS_REPL_ON))
		return 0;
	out->replicated = 1;
	out->standby = !!(f & SHMBUS_REPL_STANDBY);
	out->linked = !!(f & SHMBUS_REPL_LINK);
	out->out_of_sync = !!(f & SHMBUS_REPL_OUT_OF_SYNC);
	out->strict = !!(f & SHMBUS_REPL_STRICT);
	out->level = load_relaxed32(&d->repl_level);
	if (out->level > SHMBUS_ACK_BOTH_PERSISTED ||
	    out->level == SHMBUS_ACK_PERSISTED)
		out->level = SHMBUS_ACK_APPLIED;	/* damaged: say something */
	out->epoch = load_relaxed64(&d->epoch);
	out->head = load_relaxed64(&pl->head);
	seq = load_relaxed64(&pl->seq);
	out->acknowledged = load_relaxed64(&d->replicated_pos);
	out->received = load_relaxed64(&d->received_pos);
	out->applied = load_relaxed64(&d->applied_pos);
	out->frames = load_relaxed64(&d->repl_frames);
	out->bad_frames = load_relaxed64(&d->repl_bad);
	out->gaps = load_relaxed64(&d->repl_gaps);
	out->gap_bytes = load_relaxed64(&d->repl_gap_bytes);
	out->out_of_sync_events = load_relaxed64(&d->repl_out_of_sync);
	if (out->standby)
		return 0;
	pos = out->level == SHMBUS_ACK_LOCAL ? out->received
					     : sb_level_pos(d, out->level, 0);
	if (pos < out->head) {
		uint64_t since = load_relaxed64(&d->caught_up_ns), now;

		out->lag_bytes = out->head - pos;
		out->lag_messages = lag_messages(ch, pos, out->head, seq);
		clock_gettime(CLOCK_REALTIME, &ts);
		now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
		/* Never caught up: no time to count from (not "no lag"). */
		out->lag_ns = !since ? UINT64_MAX : now > since ? now - since
								: 0;
	}
	return 0;
}
