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

void sb_jnl_setup(shmbus_channel *ch, const char *dir, uint32_t seg_log2,
		  bool acks)
{
	struct shmbus_daemon_area *d = ch->daemon;

	/* No edge: descriptions, set before the agent writes anything and
	 * read by replaying subscribers only after A25 on jnl_written. */
	memset(d->jnl_dir, 0, sizeof(d->jnl_dir));
	snprintf(d->jnl_dir, sizeof(d->jnl_dir), "%s", dir);
	store_relaxed32(&d->jnl_seg_log2, seg_log2);
	store_relaxed32(&d->jnl_state, SHMBUS_JNL_ON);
	if (acks) {
		/* The journal acknowledges: a channel that is not also
		 * replicated (the config refuses both). */
		sb_repl_flags_put(ch, SHMBUS_ACK_PERSISTED,
				  SHMBUS_REPL_JOURNAL);
	}
}

void sb_jnl_off(shmbus_channel *ch, bool acks)
{
	struct shmbus_daemon_area *d = ch->daemon;

	/* No edge: a description. */
	store_relaxed32(&d->jnl_state, 0);
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
	/* R25: pairs with A25 in the replaying subscriber: the bytes our
	 * pwrite() put in the files (the page cache) before this store are
	 * there for its pread() of anything below pos. */
	store_release64(&ch->daemon->jnl_written, pos);
}

void sb_jnl_persisted(shmbus_channel *ch, uint64_t pos, bool ack)
{
	struct shmbus_prod_line *pl = ch->pl;
	struct shmbus_daemon_area *d = ch->daemon;
	uint64_t cur = load_relaxed64(&d->persisted_pos);

	/* No edge of its own: R14 in sb_repl_watermark() publishes it to
	 * shmbus_pub_sync(), which reads it after A14.  A value past head
	 * was written over (sync_verdict() believes none): set back. */
	if (cur < pos || cur > load_relaxed64(&pl->head))
		store_relaxed64(&d->persisted_pos, pos);
	/* The flags as the agent set them (sb_repl_flags()), not a word
	 * written over. */
	if (ack && (sb_repl_flags(ch, 0, 0) & SHMBUS_REPL_JOURNAL))
		sb_repl_watermark(ch, pos);
}

uint32_t sb_jnl_state(shmbus_channel *ch, uint32_t set, uint32_t clear)
{
	struct shmbus_daemon_area *d = ch->daemon;
	uint32_t s = load_relaxed32(&d->jnl_state);

	/* One writer (the agent); no edge: a description.  On the fence's
	 * line: stored only if it changes (see flags_put() in replica.c). */
	if (((s | set) & ~clear) != s)
		store_relaxed32(&d->jnl_state, (s | set) & ~clear);
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

	/* A25 (see sb_jnl_written()), for whoever reads the files next. */
	v->written = load_acquire64(&d->jnl_written);
	/* No edge: statistics. */
	v->persisted = load_relaxed64(&d->persisted_pos);
	v->oldest = load_relaxed64(&d->jnl_oldest);
	v->bytes = load_relaxed64(&d->jnl_bytes);
	v->syncs = load_relaxed64(&d->jnl_syncs);
	v->gaps = load_relaxed64(&d->jnl_gaps);
	v->gap_bytes = load_relaxed64(&d->jnl_gap_bytes);
	v->head = load_relaxed64(&pl->head);
	v->state = load_relaxed32(&d->jnl_state);
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
