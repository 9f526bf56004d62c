/* SPDX-License-Identifier: MIT */
/*
 * mirror.c - the records of a replicated ring as shmbusd's agents move them
 * (docs/replication.md); the fence and the watermark are in replica.c.
 *
 *   shipping        the primary's agent finds committed records and hands
 *                   the transport pointers into the mapping
 *   applying        the standby's agent writes the same records at the
 *                   same positions, exactly as a producer would
 *   the cut         a standby's ring cut back to a record boundary: the
 *                   tail that diverged (a returning primary's) goes, so
 *                   that the new primary's records take its positions
 *
 * Only shmbusd calls these, through contract.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel.h"
#include "contract.h"
#include "pub.h"
#include "repair.h"
#include "sub.h"

/* ---------------------------------------------------------- shipping */

/*
 * The agents' walk (shipping, the journal) takes as committed only what a
 * standby's sb_apply_check() would take: a record of this lap, of a known
 * type, a length within max_msg (padding: aligned), inside the ring, and
 * a sequence number above the one before it; and one that a producer of
 * the ring has handed out: below the channel's next (prod_line.seq), which
 * every writer of the ring stores before its commit (R1), so that a load
 * of it after A1 sees a value past the record's.  A number from the
 * future, shipped or journaled, would make every true record after it
 * "go back" for ever.  A record that breaks a rule
 * ends the walk there, as an uncommitted claim does, so that it is never
 * shipped and refused for ever; sb_ring_damage() tells the two apart.
 */
enum rec_look { REC_NONE, REC_OK, REC_PAST, REC_BAD };

/* Inlined: in the walk, why is NULL and the explanations fold away.  A
 * walk over 1 M committed records of 32 B (64 MiB ring, one process,
 * best of 30, three runs taking turns): 8.6-8.7 ns a record inlined,
 * 9.1-9.3 ns not, 8.3-8.5 ns for a walk that checks the lap tag alone. */
static inline __attribute__((always_inline)) enum rec_look
look_rec(shmbus_channel *ch, uint64_t p, uint64_t to, uint64_t *seq,
	 bool *have_seq, uint64_t *bound, uint64_t *size, uint32_t *typep,
	 char *why, size_t whylen)
{
	/* A1: pairs with R1 (commit_store()): the seq below is the
	 * record's. */
	uint64_t w = load_acquire64(&rec_at(ch, p)->commit), s;
	uint32_t type = word_type(w), l = word_len(w);

	if (typep)
		*typep = type;
	if (word_tag(w) != lap_tag(ch, p))
		return REC_NONE;
	if (type_word_only(type)) {
		*size = SHMBUS_REC_ALIGN + (uint64_t)l;
		if (l % SHMBUS_REC_ALIGN) {
			if (why)
				snprintf(why, whylen, "%s of length %u",
					 type == SHMBUS_REC_GAP ? "a gap"
								: "padding", l);
			return REC_BAD;
		}
	} else if (type == SHMBUS_REC_MSG || type == SHMBUS_REC_SKIP) {
		*size = rec_size(l);
		if (l > ch->max_msg) {
			if (why)
				snprintf(why, whylen, "length %u over max_msg "
					 "%u", l, ch->max_msg);
			return REC_BAD;
		}
	} else {
		if (why)
			snprintf(why, whylen, "type %u", type);
		return REC_BAD;
	}
	if ((p & ch->mask) + *size > ch->cap) {
		if (why)
			snprintf(why, whylen, "%llu bytes from %llu cross the "
				 "ring's end", (unsigned long long)*size,
				 (unsigned long long)p);
		return REC_BAD;
	}
	if (*size > to - p)
		return REC_PAST;
	if (type_word_only(type))
		return REC_OK;
	s = load_relaxed64(&rec_at(ch, p)->seq);
	if (s == UINT64_MAX || (*have_seq && s <= *seq)) {
		if (why)
			snprintf(why, whylen, "sequence %llu after %llu",
				 (unsigned long long)s,
				 (unsigned long long)*seq);
		return REC_BAD;
	}
	/* *bound is the channel's next sequence number as last loaded:
	 * loaded again only for a record past it (one committed since). */
	if (s >= *bound) {
		/* No edge: ordered after A1 above, which saw the commit that
		 * its writer made after storing prod_line.seq past s.  On an
		 * overwrite ring a lapping producer may have changed s since
		 * A1: a false REC_BAD then only ends the walk, and the
		 * callers check sb_ring_holds() (A2) before they call it
		 * damage. */
		*bound = load_relaxed64(&ch->pl->seq);
		if (s >= *bound) {
			if (why)
				snprintf(why, whylen, "sequence %llu, and the "
					 "channel's next is %llu",
					 (unsigned long long)s,
					 (unsigned long long)*bound);
			return REC_BAD;
		}
	}
	*seq = s;
	*have_seq = true;
	return REC_OK;
}

/* Marks boundary p, the start of a record of `size` bytes, if the record
 * would end more than a step past the last mark: a frame from that mark
 * to p stays within the step. */
static void mark(struct sb_marks *mk, uint64_t p, uint64_t size)
{
	if (p + size - mk->last <= mk->step || p <= mk->last)
		return;
	mk->last = p;
	if (mk->n == SB_MARKS_MAX && mk->lo) {
		memmove(mk->at, mk->at + mk->lo,
			(mk->n - mk->lo) * sizeof(mk->at[0]));
		mk->n -= mk->lo;
		mk->lo = 0;
	}
	if (mk->n < SB_MARKS_MAX)
		mk->at[mk->n++] = p;
}

uint64_t sb_committed_end(shmbus_channel *ch, uint64_t from, uint64_t most)
{
	return sb_committed_end_marked(ch, from, most, NULL);
}

uint64_t sb_committed_end_marked(shmbus_channel *ch, uint64_t from,
				 uint64_t most, struct sb_marks *mk)
{
	/* A12: head bounds the walk; no record past it is ours to read. */
	uint64_t head = load_acquire64(&ch->pl->head), to, p, size, seq = 0;
	uint64_t bound = 0;
	bool have_seq = false;

	if (from > head || head - from > ch->cap || from % SHMBUS_REC_ALIGN)
		return from;
	to = head - from > most ? from + most : head;
	/* The last sequence number is carried from one walk to the next on
	 * a block channel only: on an overwrite channel a producer that
	 * laps may rewrite a record between its word and its seq, leaving
	 * a later lap's (greater) number to compare the next record with;
	 * within one walk that only stops the walk, which the next resumes
	 * afresh. */
	if (mk && !ch_overwrite(ch)) {
		seq = mk->seq;
		have_seq = mk->have_seq;
	}
	for (p = from; p < to; p += size) {
		if (look_rec(ch, p, to, &seq, &have_seq, &bound, &size, NULL,
			     NULL, 0) != REC_OK)
			break;
		if (mk)
			mark(mk, p, size);
	}
	if (mk) {
		mk->seq = seq;
		mk->have_seq = have_seq;
	}
	return p;
}

void sb_marks_reset(struct sb_marks *mk, uint64_t from, uint64_t step)
{
	mk->lo = mk->n = 0;
	mk->step = step;
	mk->last = from;
	mk->have_seq = false;
	mk->seq = 0;
}

bool sb_ring_damage(shmbus_channel *ch, uint64_t pos,
		    const struct sb_marks *mk, char *why, size_t whylen)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->pl->head), size, seq = 0;
	uint64_t bound = 0;
	/* The walk's last sequence number, as it carries it. */
	bool have_seq = mk && mk->have_seq && !ch_overwrite(ch);
	char what[160];
	enum rec_look r;

	if (have_seq)
		seq = mk->seq;
	if (pos % SHMBUS_REC_ALIGN || pos >= head || head - pos > ch->cap)
		return false;
	r = look_rec(ch, pos, head, &seq, &have_seq, &bound, &size, NULL,
		     what, sizeof(what));
	if (r == REC_PAST)
		snprintf(what, sizeof(what), "%llu bytes from %llu run past "
			 "head %llu", (unsigned long long)size,
			 (unsigned long long)pos, (unsigned long long)head);
	/* Overwrite: what was read may be a lapping producer's bytes. */
	if (r == REC_NONE || r == REC_OK || !sb_ring_holds(ch, pos))
		return false;
	snprintf(why, whylen, "record at %llu: %s", (unsigned long long)pos,
		 what);
	return true;
}

bool sb_head_damage(shmbus_channel *ch, uint64_t pos, bool held,
		    bool lap_is_gap, char *why, size_t whylen)
{
	uint64_t head = sb_ring_head(ch);

	if (head < pos) {
		snprintf(why, whylen, "head %llu is behind %llu",
			 (unsigned long long)head, (unsigned long long)pos);
		return true;
	}
	if (not_overwritten(ch, pos, head) || lap_is_gap)
		return false;
	if (held && !ch_overwrite(ch)) {
		snprintf(why, whylen, "head %llu is more than a lap ahead of "
			 "%llu on a block channel", (unsigned long long)head,
			 (unsigned long long)pos);
		return true;
	}
	if (sb_ring_oldest(ch) != head)
		return false;
	snprintf(why, whylen, "head %llu is more than a lap ahead of %llu "
		 "with no record indexed below it", (unsigned long long)head,
		 (unsigned long long)pos);
	return true;
}

uint64_t sb_marks_take(struct sb_marks *mk, uint64_t from, uint64_t most)
{
	uint64_t m = 0;

	while (mk->lo < mk->n && mk->at[mk->lo] <= from)
		mk->lo++;
	while (mk->lo < mk->n && mk->at[mk->lo] - from <= most)
		m = mk->at[mk->lo++];
	return m;
}

uint64_t sb_ring_head(shmbus_channel *ch)
{
	/* No edge: compared only; positions read from it are walked by
	 * their commit words (A1). */
	return load_relaxed64(&ch->pl->head);
}

uint64_t sb_ring_next_seq(shmbus_channel *ch)
{
	/* No edge: ordered after the caller's A1 (look_rec()). */
	return load_relaxed64(&ch->pl->seq);
}

uint64_t sb_ring_oldest(shmbus_channel *ch)
{
	uint64_t head = sb_ring_head(ch), pos;

	sb_sub_find_oldest(ch, head, &pos);
	return pos;
}

int sb_ring_span(shmbus_channel *ch, uint64_t from, uint64_t to,
		 struct iovec iov[2])
{
	uint64_t i = from & ch->mask, n = to - from;

	if (to < from || n > ch->cap)
		return -EINVAL;
	iov[0].iov_base = ch->data + i;
	iov[0].iov_len = n < ch->cap - i ? n : ch->cap - i;
	iov[1].iov_base = ch->data;
	iov[1].iov_len = n - iov[0].iov_len;
	return iov[1].iov_len ? 2 : 1;
}

bool sb_ring_has_record(shmbus_channel *ch, uint64_t pos)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->pl->head), w;

	if (pos % SHMBUS_REC_ALIGN || pos > head)
		return false;
	if (pos == head)
		return true;
	if (!not_overwritten(ch, pos, head))
		return false;
	/* A1: pairs with R1 (commit_store()). */
	w = load_acquire64(&rec_at(ch, pos)->commit);
	return word_tag(w) == lap_tag(ch, pos) && sb_ring_holds(ch, pos);
}

uint64_t sb_ring_pad_at(shmbus_channel *ch, uint64_t pos, uint32_t *type)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->pl->head), w, size;

	if (pos % SHMBUS_REC_ALIGN || pos >= head ||
	    !not_overwritten(ch, pos, head))
		return 0;
	/* A1: pairs with R1 (commit_store()). */
	w = load_acquire64(&rec_at(ch, pos)->commit);
	if (word_tag(w) != lap_tag(ch, pos) || !type_word_only(word_type(w)) ||
	    word_len(w) % SHMBUS_REC_ALIGN)
		return 0;
	*type = word_type(w);
	size = SHMBUS_REC_ALIGN + word_len(w);
	if ((pos & ch->mask) + size > ch->cap || size > head - pos ||
	    !sb_ring_holds(ch, pos))
		return 0;
	return size;
}

uint64_t sb_ring_rec_at(shmbus_channel *ch, uint64_t pos, uint32_t *type)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->pl->head), size, seq = 0;
	uint64_t bound = 0;
	bool have_seq = false;

	if (pos % SHMBUS_REC_ALIGN || pos >= head || head - pos > ch->cap ||
	    look_rec(ch, pos, head, &seq, &have_seq, &bound, &size, type, NULL,
		     0) != REC_OK)
		return 0;
	return size;
}

bool sb_ring_seq_at(shmbus_channel *ch, uint64_t pos, uint64_t *seq)
{
	/* A12: head bounds what may be read. */
	uint64_t head = load_acquire64(&ch->pl->head), size, s = 0;
	uint64_t bound = 0;
	bool have = false;
	uint32_t type;

	if (pos % SHMBUS_REC_ALIGN || pos >= head || head - pos > ch->cap ||
	    look_rec(ch, pos, head, &s, &have, &bound, &size, &type, NULL, 0) !=
	    REC_OK || !have || !sb_ring_holds(ch, pos))
		return false;
	*seq = s;
	return true;
}

bool sb_ring_holds(shmbus_channel *ch, uint64_t from)
{
	uint64_t head;

	/* A2: pairs with R2: if a producer's claim overwrote any byte we
	 * read (or the kernel copied for us) before this, head shows it. */
	fence_acquire();
	head = load_relaxed64(&ch->pl->head);
	return not_overwritten(ch, from, head);
}

/* ----------------------------------------------------------- applying */

/* The standby's writer: a producer handle that only its agent uses,
 * which waits for the standby's own subscribers like a producer does
 * and ignores the fence (the fence refuses everyone else). */
struct shmbus_pub *sb_writer_open(shmbus_channel *ch, int64_t timeout_ns)
{
	struct shmbus_pub *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	sb_pub_init(w, ch);
	w->multi = false;	/* no producer slots to respect */
	w->agent = true;
	w->limit = ch_overwrite(ch) ? UINT64_MAX : 0;
	w->timeout_ns = timeout_ns;
	return w;
}

void sb_writer_reset(struct shmbus_pub *w)
{
	w->limit = ch_overwrite(w->ch) ? UINT64_MAX : 0;
}

void sb_writer_close(struct shmbus_pub *w)
{
	free(w);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return v;
}

int sb_apply_check(shmbus_channel *ch, uint64_t pos, const uint8_t *buf,
		   size_t len, struct sb_frame *f, char *why, size_t whylen)
{
	uint64_t o = 0, last_seq = 0, n = 0, nbytes = 0;
	uint64_t last_pos = UINT64_MAX, last_word = 0, first_seq = UINT64_MAX;
	bool have_seq = false;

	if (pos % SHMBUS_REC_ALIGN || len % SHMBUS_REC_ALIGN ||
	    len > max_need(ch) || pos >= SB_POS_MAX) {
		snprintf(why, whylen, "position %llu or length %zu not "
			 "aligned, the length over half the ring, or the "
			 "position out of range",
			 (unsigned long long)pos, len);
		return -EBADMSG;
	}
	while (o < len) {
		uint64_t p = pos + o, w = get64(buf + o), size, seq;
		uint32_t type = word_type(w), l = word_len(w);

		if (word_tag(w) != lap_tag(ch, p)) {
			snprintf(why, whylen, "record at %llu: lap tag %u, "
				 "expected %u", (unsigned long long)p,
				 word_tag(w), lap_tag(ch, p));
			return -EBADMSG;
		}
		if (type_word_only(type)) {
			size = SHMBUS_REC_ALIGN + (uint64_t)l;
			if (l % SHMBUS_REC_ALIGN) {
				snprintf(why, whylen, "%s at %llu: length %u",
					 type == SHMBUS_REC_GAP ? "a gap"
								: "padding",
					 (unsigned long long)p, l);
				return -EBADMSG;
			}
		} else if (type == SHMBUS_REC_MSG || type == SHMBUS_REC_SKIP) {
			if (l > ch->max_msg) {
				snprintf(why, whylen, "record at %llu: length "
					 "%u over max_msg %u",
					 (unsigned long long)p, l, ch->max_msg);
				return -EBADMSG;
			}
			size = rec_size(l);
			if (size > len - o) {
				snprintf(why, whylen, "record at %llu runs "
					 "past the frame",
					 (unsigned long long)p);
				return -EBADMSG;
			}
			seq = get64(buf + o + 8);
			if (seq == UINT64_MAX ||
			    (have_seq && seq <= last_seq)) {
				snprintf(why, whylen, "record at %llu: "
					 "sequence %llu after %llu",
					 (unsigned long long)p,
					 (unsigned long long)seq,
					 (unsigned long long)last_seq);
				return -EBADMSG;
			}
			if (!have_seq)
				first_seq = seq;
			have_seq = true;
			last_seq = seq;
			last_pos = p;
			last_word = w;
			nbytes += l;
			n += type == SHMBUS_REC_MSG;
		} else {
			snprintf(why, whylen, "record at %llu: type %u",
				 (unsigned long long)p, type);
			return -EBADMSG;
		}
		/* A record alone in its frame as its word stands for no
		 * more than a claim may take: a lap less the word after. */
		if ((p & ch->mask) + size > ch->cap ||
		    (size > len - o &&
		     !(len == SHMBUS_REC_ALIGN && type_word_only(type) &&
		       size + SHMBUS_REC_ALIGN <= ch->cap))) {
			snprintf(why, whylen, "record at %llu crosses the "
				 "ring's end or the frame's",
				 (unsigned long long)p);
			return -EBADMSG;
		}
		o += size;
	}
	*f = (struct sb_frame){ .nmsgs = n, .nbytes = nbytes,
				.first_seq = first_seq, .last_seq = last_seq,
				.last_pos = last_pos, .last_word = last_word,
				.extent = o };
	return 0;
}

/*
 * Writes records checked by sb_apply_check() at [pos, pos + len), pos
 * being the ring's head: the claim as a single producer makes it (head,
 * R2, the word after, the hand-off, the index), then each record's bytes
 * and its commit word last (R1), in order, then the post and the wake.
 */
int sb_apply(struct shmbus_pub *wr, uint64_t pos, const uint8_t *buf,
	     size_t len, const struct sb_frame *f)
{
	struct shmbus_channel *ch = wr->ch;
	struct shmbus_hdr *h = ch->hdr;
	struct shmbus_daemon_area *d = ch->daemon;
	uint64_t q = pos + f->extent;
	int64_t deadline = 0;
	unsigned spins = 0;
	int rc;

	/* No edge: we are head's only writer on a standby. */
	if (load_relaxed64(&ch->pl->head) != pos)
		return -ESTALE;
	if (!len)
		return 0;
	while (!ch_overwrite(ch) &&
	       (rc = sb_make_room(wr, pos, q, &deadline, &spins)))
		if (rc < 0)
			return rc;
	store_relaxed64(&ch->pl->head, q);
	/* R2: pairs with A2 (the overwrite reader's check): the claim is
	 * visible before any byte of it changes.  R28: pairs with A28
	 * (shmbus_sub_open()'s load of seq): head before seq, below. */
	fence_release();
	store_relaxed64(&rec_at(ch, q)->commit, 0);
	if (f->last_pos != UINT64_MAX)
		store_relaxed64(&ch->pl->seq, f->last_seq + 1);
	store_relaxed64(&ch->pl->bytes,
			load_relaxed64(&ch->pl->bytes) + f->nbytes);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&ch->pl->handoff, q);
	if ((pos ^ q) >> ch->seg_log2)
		sb_seg_index(ch, pos, q);
	/* Every byte of the frame but the first record's commit word, in one
	 * copy (two where the frame wraps), then that word, last: a reader
	 * reaches the frame only through its first record (the index points
	 * past the frame, and its first word was zeroed by the claim before
	 * it), so it finds all of it or nothing, as a batch (design.md §3,
	 * sb_write_batch()).  One copy instead of one a record, and no walk
	 * but the check's: 32-byte records applied at several times the
	 * rate. */
	{
		uint64_t i = (pos & ch->mask) + 8, first = ch->cap - i;

		if (first >= len - 8) {
			memcpy(ch->data + i, buf + 8, len - 8);
		} else {
			memcpy(ch->data + i, buf + 8, first);
			memcpy(ch->data, buf + 8 + first, len - 8 - first);
		}
	}
	commit_store(rec_at(ch, pos), get64(buf));
	add_relaxed64(&d->repl_frames, 1);
	/* As sp_committed(): the post's hint after the commits. */
	fence_compiler();
	/* No edge: a hint (see sp_committed()). */
	if (!ch_multi(ch) && f->last_pos != UINT64_MAX &&
	    load_relaxed64(&h->mbox_want))
		mbox_post(ch->mbox, rec_at(ch, f->last_pos), f->last_pos,
			  f->last_word, f->last_seq);
	/* F3: pairs with F3 in sleep_wait(), as wake_if_sleepers(). */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(ch);
	return 0;
}

/* The resync index after the ring was set back to end: an entry that
 * names a position past end names a record that is gone.  Its segment
 * start b (the one below it of its slot, within half a ring: the
 * readers' rule) is at or below end: end is a record boundary whose word
 * is zeroed, and the entry says so; past end: nothing, until a claim
 * crosses b again. */
static void seg_index_cut(struct shmbus_channel *ch, uint64_t end)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2;

	for (uint32_t k = 0; k < SHMBUS_NSEG; k++) {
		/* No edge: nobody reads the index while the ring is cut
		 * back (its fence), or before an agent starts. */
		uint64_t e = load_relaxed64(&ch->segs[k].pos), b;

		if (e <= end)
			continue;
		b = e & ~(seg - 1);
		while (((b >> ch->seg_log2) & (SHMBUS_NSEG - 1)) != k && b)
			b -= seg;
		store_relaxed64(&ch->segs[k].pos, b <= end ? end : 0);
	}
}

/* The mailbox names nothing past end any more (0: mark_behind()). */
static void mbox_cut(struct shmbus_channel *ch, uint64_t end)
{
	/* No edge, as seg_index_cut(). */
	if (ch->mbox && load_relaxed64(&ch->mbox->mark) > end)
		store_relaxed64(&ch->mbox->mark, 0);
}

uint64_t sb_apply_recover(shmbus_channel *ch)
{
	struct shmbus_prod_line *pl = ch->pl;
	struct sb_repl_view v;
	/* No edge: no agent runs yet; we are head's only writer. */
	uint64_t head = load_relaxed64(&pl->head), oldest, end, applied;

	if (head % SHMBUS_REC_ALIGN)
		return UINT64_MAX;
	sb_sub_find_oldest(ch, head, &oldest);
	/* An apply longer than half the ring (a gap, a record applied as
	 * its word alone) leaves no index entry below its claim to start
	 * from: the end of what was last applied whole is one, where the
	 * ring still holds it (less than a lap below head, so that no claim
	 * has written over it). */
	/* As this process stored it, else from shared memory (at the
	 * daemon's start), where a producer may have written it: used only
	 * as a record boundary below head within the lap checked here. */
	sb_repl_read(ch, &v);
	applied = v.applied;
	if (applied < oldest && applied % SHMBUS_REC_ALIGN == 0 &&
	    head - applied <= ch->cap - SHMBUS_REC_ALIGN)
		oldest = applied;
	end = sb_committed_until(ch, oldest, head);
	if (end == head)
		return head;
	/* The walk stopped at a word of this lap that it cannot pass: not
	 * an apply cut short (whose first word is committed last), but
	 * damage; cutting back to it would drop the records after it, which
	 * were acknowledged. */
	/* No edge, as head above: compared only. */
	if (word_tag(load_relaxed64(&rec_at(ch, end)->commit)) ==
	    lap_tag(ch, end))
		return UINT64_MAX;
	/* An apply (or a cut) stopped short: nothing past end was
	 * committed, so nobody read it.  Head returns to end, and the index
	 * and the mailbox name nothing past it. */
	seg_index_cut(ch, end);
	mbox_cut(ch, end);
	store_relaxed64(&pl->head, end);
	store_relaxed64(&rec_at(ch, end)->commit, 0);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&pl->handoff, end);
	return end;
}

uint64_t sb_apply_reclaim(shmbus_channel *ch, uint64_t to)
{
	struct shmbus_prod_line *pl = ch->pl;
	/* No edge: the agent is head's writer; a producer's claim taken
	 * back stores nothing else. */
	uint64_t head = load_relaxed64(&pl->head);

	if (head >= to || head % SHMBUS_REC_ALIGN || to % SHMBUS_REC_ALIGN ||
	    to - head > ch->cap - SHMBUS_REC_ALIGN ||
	    sb_committed_until(ch, head, to) != to)
		return head;
	store_relaxed64(&pl->head, to);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&pl->handoff, to);
	return to;
}

/* The longest padding record's length field. */
#define PAD_MAX	((uint64_t)SHMBUS_LEN_MASK & ~(uint64_t)(SHMBUS_REC_ALIGN - 1))

int sb_apply_restart(struct shmbus_pub *wr, uint64_t pos)
{
	struct shmbus_channel *ch = wr->ch;
	struct shmbus_hdr *h = ch->hdr;
	/* No edge: we are head's only writer. */
	uint64_t end = load_relaxed64(&ch->pl->head), p;

	int64_t deadline = 0;
	unsigned spins = 0;
	int rc;

	if (pos < end || pos % SHMBUS_REC_ALIGN || pos >= SB_POS_MAX)
		return -EINVAL;
	if (pos == end)
		return 0;
	/* Less than a lap ahead: the standby's own subscribers keep what
	 * they have not read, as for any claim. */
	while (!ch_overwrite(ch) && pos + SHMBUS_REC_ALIGN <= end + ch->cap &&
	       (rc = sb_make_room(wr, end, pos, &deadline, &spins)))
		if (rc < 0)
			return rc;
	store_relaxed64(&ch->pl->head, pos);
	/* R2: pairs with A2: readers that copied bytes here see head. */
	fence_release();
	store_relaxed64(&rec_at(ch, pos)->commit, 0);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&ch->pl->handoff, pos);
	sb_seg_index(ch, pos - end > ch->cap ? pos - ch->cap : end, pos);
	if (pos + SHMBUS_REC_ALIGN <= end + ch->cap) {
		/* Less than a lap: readers at end would wait there for
		 * ever; GAP records from end to pos send them on and tell
		 * them (and the journal) that what the sequence numbers
		 * skip there is lost.  The first piece is committed last
		 * (see sb_apply()).  The agent counts and logs the gap. */
		uint64_t cuts[64], n = 0;

		for (p = end; p < pos && n < 64;) {
			uint64_t k = pos - p, room = ch->cap - (p & ch->mask);

			if (k > room)
				k = room;
			if (k - SHMBUS_REC_ALIGN > PAD_MAX)
				k = PAD_MAX + SHMBUS_REC_ALIGN;
			cuts[n++] = p;
			p += k;
		}
		for (uint64_t i = n; i-- > 0;) {
			uint64_t e = i + 1 < n ? cuts[i + 1] : pos;

			sb_commit_rec(ch, cuts[i], SHMBUS_REC_GAP,
				      (uint32_t)(e - cuts[i] - SHMBUS_REC_ALIGN));
		}
	}
	/* Else readers find themselves lapped, and count the loss. */
	/* F3: as after a commit. */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(ch);
	return 0;
}

/* ------------------------------------------------------------ the cut */

/* The fence leaves CUT for `state` (STANDBY): the cut is over. */
static void sb_fence_leave_cut(shmbus_channel *ch, uint32_t state)
{
	/* With release (R26, in sb_fence_store()). */
	sb_fence_store(ch, state, true);
}

/* Why a subscriber slot keeps the ring from being cut, or NULL. */
static const char *slot_in_the_way(struct shmbus_sub_slot *s, uint32_t *pid)
{
	/* A7: pairs with R7 (the slot's owner store). */
	uint64_t o = load_acquire64(&s->owner);

	*pid = owner_pid(o);
	switch (owner_state(o)) {
	case SHMBUS_SLOT_FREE:
	case SHMBUS_SLOT_JOURNAL:	/* the caller stopped the agents */
	case SHMBUS_SLOT_REPL:
		return NULL;
	case SHMBUS_SLOT_GROUP:		/* cut with the ring (cut_clamp(),
					 * and the caller: sb_group_cut()) */
		return NULL;
	default:
		return sb_owner_alive(o) ? "a subscriber reads the channel"
					  : "a dead subscriber's slot is not "
					    "released yet";
	}
}

int sb_ring_cut_begin(shmbus_channel *ch, uint64_t pos, uint64_t *end,
		      char *why, size_t n)
{
	uint32_t prev = sb_fence_get(ch);
	uint64_t oldest, at;

	if (prev == SHMBUS_FENCE_OPEN) {
		snprintf(why, n, "the channel takes writes here");
		return -EBUSY;
	}
	if (sb_fence_set(ch, SHMBUS_FENCE_CUT)) {
		snprintf(why, n, "membarrier(2) refused: a claim may be in "
			 "flight");
		sb_fence_leave_cut(ch, prev);
		return -EBUSY;
	}
	/* F7: pairs with F7 in shmbus_sub_open(), sb_slot_take_group() and
	 * shmbus_group_join(): a subscriber or member whose slot we do not
	 * see below sees the fence and gives its slot back. */
	fence_seqcst();
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint32_t pid;
		const char *w = slot_in_the_way(&ch->subs[i], &pid);

		if (w) {
			snprintf(why, n, "%s (slot %u, pid %u)", w, i, pid);
			sb_fence_leave_cut(ch, prev);
			return -EBUSY;
		}
	}
	sb_cut_release_dead(ch, (uint32_t)getpid());
	oldest = sb_ring_oldest(ch);
	if (sb_fence_quiesce(ch, oldest, INT64_C(100000000), &at)) {
		snprintf(why, n, "a producer holds a claim open, or a "
			 "record below head is damaged");
		sb_fence_leave_cut(ch, prev);
		return -EBUSY;
	}
	/* pos must be a record boundary: reached by walking the records
	 * from the oldest (below the oldest, everything held goes). */
	if (pos % SHMBUS_REC_ALIGN || pos > at ||
	    (pos > oldest && sb_committed_until(ch, oldest, pos) != pos)) {
		snprintf(why, n, "%llu is not a record boundary of this ring "
			 "(it holds %llu..%llu)", (unsigned long long)pos,
			 (unsigned long long)oldest, (unsigned long long)at);
		sb_fence_leave_cut(ch, prev);
		return -EINVAL;
	}
	*end = at;
	return 0;
}

void sb_ring_cut_abort(shmbus_channel *ch, uint32_t fence)
{
	sb_fence_leave_cut(ch, fence);
}

/* What names positions past pos besides the records, set back to it:
 * the cursors of groups, the journal and the replication agent, the
 * replication positions, the journal's positions, a recorded gap. */
static void cut_clamp(struct shmbus_channel *ch, uint64_t pos)
{
	struct sb_repl_view v;

	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		/* No edge: the slot's owner state is read to choose. */
		uint32_t st = owner_state(load_relaxed64(&s->owner));

		if ((sb_slot_kept(st) || st == SHMBUS_SLOT_GROUP) &&
		    load_relaxed64(&s->pos) > pos)
			/* R5: pairs with A5 (the next agent's, producers'
			 * scans). */
			store_release64(&s->pos, pos);
	}
	/* The watermark as this process stored it (the shared word if it
	 * never did): a word written past pos is no reason to set it to
	 * pos, past ours. */
	sb_repl_read(ch, &v);
	if (v.watermark > pos)
		sb_repl_reset_positions(ch, pos);
	sb_jnl_cut(ch, pos);
	/* A gap recorded in the tail is gone with it; those below stay. */
	sb_repl_hole_cut(ch, pos);
}

/* The size of the record committed at p in this lap (0: none, or one
 * that would cross the ring's end), and its seq in *seq if it has one. */
static uint64_t committed_rec(struct shmbus_channel *ch, uint64_t p,
			      uint64_t *seq)
{
	/* No edge: the ring is being cut, or not read yet (the callers). */
	uint64_t w = load_relaxed64(&rec_at(ch, p)->commit), size;
	uint32_t type = word_type(w), len = word_len(w);

	if (word_tag(w) != lap_tag(ch, p) ||
	    !rec_shape_ok(type, len, ch->max_msg))
		return 0;
	size = rec_bytes(type, len);
	if (!type_word_only(type))
		*seq = load_relaxed64(&rec_at(ch, p)->seq);
	return (p & ch->mask) + size > ch->cap ? 0 : size;
}

void sb_ring_cut_end(shmbus_channel *ch, uint64_t pos, uint32_t fence)
{
	struct shmbus_prod_line *pl = ch->pl;
	/* No edge in what follows unless labelled: the fence says CUT, and
	 * sb_ring_cut_begin() found nobody else reading or writing. */
	uint64_t head = load_relaxed64(&pl->head), oldest = sb_ring_oldest(ch);
	uint64_t p = pos > oldest ? pos : oldest, seq = UINT64_MAX;

	/* What names records past pos goes first, the records after: a cut
	 * stopped half way leaves a ring that ends at pos once
	 * sb_apply_recover() has run, and nothing pointing past it. */
	seg_index_cut(ch, pos);
	mbox_cut(ch, pos);
	while (p < head) {
		uint64_t s = UINT64_MAX, size = committed_rec(ch, p, &s);

		if (!size)
			break;
		if (seq == UINT64_MAX)
			seq = s;
		store_relaxed64(&rec_at(ch, p)->commit, 0);
		p += size;
	}
	/* The next message takes the first removed one's number. */
	if (seq != UINT64_MAX)
		store_relaxed64(&pl->seq, seq);
	store_relaxed64(&rec_at(ch, pos)->commit, 0);
	store_relaxed64(&pl->head, pos);
	/* R3: pairs with A3' in the subscriber's trusted(): the word at pos
	 * is zeroed. */
	store_release64(&pl->handoff, pos);
	cut_clamp(ch, pos);
	sb_fence_leave_cut(ch, fence);
}

bool sb_ring_cut_finish(shmbus_channel *ch, uint64_t *end)
{
	struct shmbus_prod_line *pl = ch->pl;
	uint64_t e, p, seq = UINT64_MAX;

	if (sb_fence_get(ch) != SHMBUS_FENCE_CUT)
		return false;
	/* No edge: no agent runs yet, nobody else reads (the fence says
	 * CUT).  The ring ends where its committed records do (the cut
	 * cleared the commit words from pos on, first to last); the index
	 * and the mailbox then name nothing past it. */
	e = sb_apply_recover(ch);
	if (e == UINT64_MAX)
		return false;	/* a corrupt head: the agent refuses it */
	for (p = sb_ring_oldest(ch); p < e;) {
		uint64_t size = committed_rec(ch, p, &seq);

		if (!size)
			break;
		p += size;
	}
	if (seq != UINT64_MAX)
		store_relaxed64(&pl->seq, seq + 1);
	cut_clamp(ch, e);
	sb_fence_leave_cut(ch, SHMBUS_FENCE_STANDBY);
	*end = e;
	return true;
}
