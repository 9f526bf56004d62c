/* SPDX-License-Identifier: MIT */
/*
 * journal_ring.c - the ring's side of the journal (docs/journal.md): the
 * journal's words in shmbusd's area, which its journal agent writes and
 * replaying subscribers, shmbus_pub_sync() and busstat read; and a ring
 * that continues where its journal ends.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "channel.h"
#include "contract.h"
#include "pub.h"

/* The journal's state as this process stored it, else the shared word. */
static uint32_t state_get(shmbus_channel *ch)
{
	uint64_t s;

	/* No edge: a description. */
	return sb_own_jnl_get(ch, SB_OWN_JSTATE, &s)
		       ? (uint32_t)s : load_relaxed32(&ch->daemon->jnl_state);
}

/* Stores the journal's state, as this process's own and in the shared
 * word (only if that differs: it is on the fence's line, which every
 * claim reads; see flags_put() in replica.c). */
static void state_put(shmbus_channel *ch, uint32_t s)
{
	sb_own_jnl_put(ch, SB_OWN_JSTATE, s);
}

void sb_jnl_setup(shmbus_channel *ch, const char *dir, uint32_t seg_log2,
		  bool acks)
{
	struct shmbus_daemon_area *d = ch->daemon;

	/* No edge: descriptions, set before the agent writes anything and
	 * read by replaying subscribers only after A25 on jnl_written. */
	memset(d->jnl_dir, 0, sizeof(d->jnl_dir));
	snprintf(d->jnl_dir, sizeof(d->jnl_dir), "%s", dir);
	store_relaxed32(&d->jnl_seg_log2, seg_log2);
	state_put(ch, SHMBUS_JNL_ON);
	if (acks) {
		/* The journal acknowledges: a channel that is not also
		 * replicated (the config refuses both). */
		sb_repl_flags_put(ch, SHMBUS_ACK_PERSISTED,
				  SHMBUS_REPL_JOURNAL);
	}
}

void sb_jnl_off(shmbus_channel *ch, bool acks)
{
	state_put(ch, 0);
	if (acks) {
		/* Configured to acknowledge, and not written: nothing is
		 * acknowledged (callers time out), never 0 unearned. */
		sb_repl_flags_put(ch, SHMBUS_ACK_PERSISTED,
				  SHMBUS_REPL_JOURNAL);
	} else if (sb_repl_flags(ch, 0, 0) & SHMBUS_REPL_JOURNAL) {
		sb_repl_flags(ch, 0, SHMBUS_REPL_JOURNAL);
	}
}

void sb_jnl_written(shmbus_channel *ch, uint64_t pos)
{
	/* R25 (in sb_own_jnl_put()): pairs with A25 in the replaying
	 * subscriber. */
	sb_own_jnl_put(ch, SB_OWN_WRITTEN, pos);
}

void sb_jnl_persisted(shmbus_channel *ch, uint64_t pos, bool ack)
{
	/* The journal's synced position is the agent's (its one writer),
	 * stored again over whatever the shared word holds: a producer may
	 * have written it forward. */
	sb_own_jnl_put(ch, SB_OWN_PERSISTED, pos);
	/* The flags as the agent set them (sb_repl_flags()), not a word
	 * written over. */
	if (ack && (sb_repl_flags(ch, 0, 0) & SHMBUS_REPL_JOURNAL))
		sb_repl_watermark(ch, pos);
}

void sb_jnl_cut(shmbus_channel *ch, uint64_t pos)
{
	struct sb_jnl_view v;

	/* The positions as this process stored them (the shared ones if it
	 * never did): a shared word written past pos is not taken for a
	 * position to set back to pos, which may be past ours. */
	sb_jnl_read(ch, &v);
	if (v.persisted > pos)
		sb_own_jnl_put(ch, SB_OWN_PERSISTED, pos);
	if (v.written > pos)
		sb_jnl_written(ch, pos);
}

uint32_t sb_jnl_state(shmbus_channel *ch, uint32_t set, uint32_t clear)
{
	/* One writer (the agent): from the state it stored, not from a
	 * word written over. */
	uint32_t s = state_get(ch);

	state_put(ch, (s | set) & ~clear);
	return s;
}

void sb_jnl_oldest(shmbus_channel *ch, uint64_t pos, uint64_t bytes,
		   uint32_t keep)
{
	struct shmbus_daemon_area *d = ch->daemon;

	/* No edge: descriptions (busstat; a replaying subscriber learns
	 * what retention removed from the files themselves).  Stored only
	 * if they change: this runs ten times a second, and jnl_keep is on
	 * the fence's line, which every claim reads. */
	if (load_relaxed64(&d->jnl_oldest) != pos)
		store_relaxed64(&d->jnl_oldest, pos);
	if (load_relaxed64(&d->jnl_bytes) != bytes)
		store_relaxed64(&d->jnl_bytes, bytes);
	if (load_relaxed32(&d->jnl_keep) != keep)
		store_relaxed32(&d->jnl_keep, keep);
}

void sb_jnl_count(shmbus_channel *ch, uint64_t syncs, uint64_t gaps,
		  uint64_t gap_bytes)
{
	struct shmbus_daemon_area *d = ch->daemon;

	/* One writer; no edge: statistics. */
	store_relaxed64(&d->jnl_syncs, load_relaxed64(&d->jnl_syncs) + syncs);
	store_relaxed64(&d->jnl_gaps, load_relaxed64(&d->jnl_gaps) + gaps);
	store_relaxed64(&d->jnl_gap_bytes,
			load_relaxed64(&d->jnl_gap_bytes) + gap_bytes);
}

void sb_jnl_read(shmbus_channel *ch, struct sb_jnl_view *v)
{
	const struct shmbus_prod_line *pl = ch->pl;
	const struct shmbus_daemon_area *d = ch->daemon;
	uint64_t x;

	/* A25 (see sb_jnl_written()), for whoever reads the files next. */
	v->written = load_acquire64(&d->jnl_written);
	/* No edge: statistics. */
	v->persisted = load_relaxed64(&d->persisted_pos);
	/* What this process stored (the daemon: its journal agent's own
	 * positions), not the shared words, which a producer can write. */
	if (sb_own_jnl_get(ch, SB_OWN_WRITTEN, &x))
		v->written = x;
	if (sb_own_jnl_get(ch, SB_OWN_PERSISTED, &x))
		v->persisted = x;
	v->oldest = load_relaxed64(&d->jnl_oldest);
	v->bytes = load_relaxed64(&d->jnl_bytes);
	v->syncs = load_relaxed64(&d->jnl_syncs);
	v->gaps = load_relaxed64(&d->jnl_gaps);
	v->gap_bytes = load_relaxed64(&d->jnl_gap_bytes);
	v->head = load_relaxed64(&pl->head);
	v->state = state_get(ch);
	v->seg_log2 = load_relaxed32(&d->jnl_seg_log2);
	v->keep = load_relaxed32(&d->jnl_keep);
	/* Untrusted: always NUL-terminated here. */
	memcpy(v->dir, (const char *)d->jnl_dir, sizeof(v->dir) - 1);
	v->dir[sizeof(v->dir) - 1] = 0;
}

uint64_t sb_ring_id(shmbus_channel *ch)
{
	return ch->data_id;	/* validated when the channel was mapped */
}

int sb_ring_continue(shmbus_channel *ch, uint64_t pos, uint64_t seq)
{
	struct shmbus_prod_line *pl = ch->pl;
	struct shmbus_pub *w;
	int rc;

	/* No edge: the ring is new, and nobody has been handed it yet.  A
	 * continuation cut short (the seq stored, not head) is done again. */
	if (load_relaxed64(&pl->head) ||
	    (load_relaxed64(&pl->seq) && load_relaxed64(&pl->seq) != seq))
		return -EEXIST;
	if (pos == 0 && seq == 0)
		return 0;
	/* The seq first: a ring whose head moved on has its seq. */
	store_relaxed64(&pl->seq, seq);
	w = sb_writer_open(ch, 0);
	if (!w)
		return -ENOMEM;
	rc = sb_apply_restart(w, pos);
	sb_writer_close(w);
	return rc;
}
