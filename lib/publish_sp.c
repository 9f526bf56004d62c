/* SPDX-License-Identifier: MIT */
/*
 * publish_sp.c - a single producer's claim, commit and batch.
 *
 * The producer owns head: a claim is a relaxed store of the new head, and
 * nothing is handed over.  Its claims are committed in order (one claim
 * at a time: the API refuses a second).  The common claim reads no shared
 * word at all: it takes from `room`, what is left before the next segment
 * start and inside the limit, computed by the last slow claim
 * (sp_set_room()).
 *
 *   claim:   head = q (relaxed);  fence(release)                   R2
 *            word at q = 0;  seq, bytes;  handoff = q               R3
 *            slow claims only: index entries; wrap padding          R4, R1
 *   write:   header (seq), payload
 *   commit:  commit word (release)                                 R1
 *            a subscriber waits on the mailbox: post                R9, R8
 *            a subscriber may sleep: fence, sleepers, wake          F3
 *
 * Labels are listed in docs/design.md.  The steps of a message are
 * always_inline: each out-of-line step cost 20-40 instructions a message
 * in calls, frames and reloads (make bench-insn: 312 against 220 for a
 * publish and a read).
 */
#define _GNU_SOURCE
#include <errno.h>

#include "channel.h"
#include "copy.h"
#include "pub.h"

/*
 * What sp_claim_fast() may hand out from head on.  Its claims end before
 * the next segment start, so that none has an index entry to write and
 * none wraps (the ring's end is a segment start too), and inside the
 * limit.  All of it lies in head's lap: the commit word's tag for it is
 * computed here, once.  Set after every claim that sp_claim_fast() did
 * not make.
 */
static void sp_set_room(struct shmbus_pub *pub)
{
	uint64_t h = pub->head;
	uint64_t seg_end = (h | ((UINT64_C(1) << pub->seg_log2) - 1)) + 1;
	uint64_t room = seg_end - h - SHMBUS_REC_ALIGN;

	if (pub->limit < h + SHMBUS_REC_ALIGN)
		room = 0;
	else if (pub->limit - h - SHMBUS_REC_ALIGN < room)
		room = pub->limit - h - SHMBUS_REC_ALIGN;
	pub->room = room;
	pub->tag_word = (uint64_t)lap_tag_log2(h, pub->cap_log2) << 32;
}

/*
 * A claim of [p, q) that found the channel fenced (fence_up()) is taken
 * back: head returns to p, unless someone else has moved it meanwhile
 * (on a standby, the replication agent), and the handle refuses every
 * claim from now on (pub->fenced): its private head and room may be
 * stale once another writer owns the ring.
 */
static __attribute__((noinline, cold)) void
sp_unclaim(struct shmbus_pub *pub, uint64_t p, uint64_t q)
{
	uint64_t cur = q;

	pub->head = p;
	pub->room = 0;
	pub->fenced = true;
	/* No edge: nothing of the claim was written, and nothing is
	 * published by taking it back. */
	cas_strong_seqcst64(&pub_pline(pub)->head, &cur, p);
}

/* The common claim of `need` bytes, from the producer's private head and
 * room: no shared word is read but the fence, and no index entry or
 * padding is due. */
static inline bool sp_claim_fast(struct shmbus_pub *pub,
				 struct shmbus_prod_line *pl, uint64_t need,
				 uint64_t *pp)
{
	const struct shmbus_daemon_area *d = pub->daemon;
	uint64_t p = pub->head, q = p + need;

	/* No edge: an early look at the fence, so that a handle idle since
	 * the ring changed hands never stores head there; F4 below is the
	 * check that counts. */
	if (__builtin_expect(need > pub->room ||
			     load_relaxed32(&d->fence) != pub->fence_word, 0))
		return false;
	pub->room -= need;
	pub->head = q;
	/* Relaxed: R2 in sp_claimed() orders it before the record's
	 * bytes. */
	store_relaxed64(&pl->head, q);
	if (__builtin_expect(fence_up(pub, d), 0)) {
		sp_unclaim(pub, p, q);
		return false;	/* sp_reserve_slow() says -EROFS */
	}
	*pp = p;
	return true;
}

/*
 * What every claim of [p, q) does once head has moved, for `nmsgs`
 * records holding `nbytes` payload bytes: the header word at q, the
 * counters, the hand-off.  Returns the first record's sequence number.
 * A claim made by sp_reserve_slow() also has index entries and padding to
 * write, which it writes after this.
 */
static inline __attribute__((always_inline)) uint64_t
sp_claimed(struct shmbus_pub *pub, struct shmbus_prod_line *pl,
	   struct shmbus_rec *next, uint64_t q, uint64_t nmsgs, uint64_t nbytes)
{
	uint64_t seq = pub->seq;

	/* R2: pairs with A2 (the fence in the subscriber's overwrite check):
	 * the claim is visible before any byte of the claim changes, so a
	 * reader that copied bytes we overwrite sees head past its record.
	 * R28: pairs with A28 (shmbus_sub_open()'s load of seq): head is
	 * visible before the seq stored below. */
	fence_release();
	/* The header word at q (`next`) becomes the next claim's commit
	 * word; zero it now, before our commits (R1) publish anything, so
	 * that a reader who reaches q after our records never mistakes stale
	 * bytes of an earlier lap for a committed record. */
	store_relaxed64(&next->commit, 0);
	pub->seq = seq + nmsgs;
	pub->bytes += nbytes;
	store_relaxed64(&pl->seq, pub->seq);
	store_relaxed64(&pl->bytes, pub->bytes);
	/* R3: pairs with A3' in the subscriber's trusted(). */
	store_release64(&pl->handoff, q);
	return seq;
}

/*
 * Any other claim: wrap padding, an index entry, or a limit to refresh
 * (and wait on).  On success the first record goes at *posp, with
 * sequence number *seqp, and its commit word's tag bits are *tagp.
 */
static __attribute__((noinline)) int
sp_reserve_slow(struct shmbus_pub *pub, uint64_t need, uint64_t nmsgs,
		uint64_t nbytes, uint64_t *posp, uint64_t *seqp,
		uint64_t *tagp)
{
	struct shmbus_channel *ch = pub->ch;
	bool block = !ch_overwrite(ch);
	uint64_t p = pub->head, q, pad;
	int64_t deadline = 0;
	unsigned spins = 0;
	int rc;

	if (pub->fenced)
		return pub->forked ? -EPERM : -EROFS;
	/* No edge: an early refusal that spares head a store; F4 below is
	 * the check that counts. */
	if (load_relaxed32(&pub->daemon->fence) != pub->fence_word) {
		pub->fenced = true;
		return -EROFS;
	}
	pad = (p & ch->mask) + need > ch->cap ? ch->cap - (p & ch->mask) : 0;
	q = p + pad + need;
	while (block && (rc = sb_make_room(pub, p, q, &deadline, &spins)))
		if (rc < 0)
			return rc;
	pub->head = q;
	store_relaxed64(&pub_pline(pub)->head, q);
	if (fence_up(pub, pub->daemon)) {
		sp_unclaim(pub, p, q);
		return -EROFS;
	}
	sp_set_room(pub);
	*seqp = sp_claimed(pub, pub_pline(pub), pub_rec(pub, q), q, nmsgs,
			   nbytes);
	/* After the zeroing of the word at q (R4's reader lands there). */
	if (crosses_seg(pub, p, q))
		sb_seg_index(ch, p, q);
	if (pad) {
		/* The padding's successor is our first record, still holding
		 * stale bytes: zero it before the padding is committed. */
		store_relaxed64(&pub_rec(pub, p + pad)->commit, 0);
		commit_store(pub_rec(pub, p),
			     commit_word(ch, p, SHMBUS_REC_PAD,
					 (uint32_t)(pad - SHMBUS_REC_ALIGN)));
	}
	*posp = p + pad;
	*tagp = (uint64_t)lap_tag(ch, p + pad) << 32;
	return 0;
}

/* Claims `need` bytes for `nmsgs` records, as sp_reserve_slow() does. */
static inline __attribute__((always_inline)) int
sp_reserve(struct shmbus_pub *pub, uint64_t need, uint64_t nmsgs,
	   uint64_t nbytes, uint64_t *posp, uint64_t *seqp, uint64_t *tagp)
{
	struct shmbus_prod_line *pl = pub_pline(pub);

	if (__builtin_expect(!sp_claim_fast(pub, pl, need, posp), 0))
		return sp_reserve_slow(pub, need, nmsgs, nbytes, posp, seqp,
				       tagp);
	*seqp = sp_claimed(pub, pl, pub_rec(pub, *posp + need), *posp + need,
			   nmsgs, nbytes);
	*tagp = pub->tag_word;
	return 0;
}

/* A record's commit word: its lap's tag bits, its type, its length. */
static inline uint64_t rec_word(uint64_t tag, uint32_t type, size_t len)
{
	return tag | (uint64_t)type << SHMBUS_LEN_BITS | len;
}

/*
 * What follows the commit of record r at pos (word w): the post (while a
 * subscriber waits on the mailbox; for a batch, r is its last record,
 * which sends a subscriber to the ring for the rest), the count (n
 * messages: 0 for an abort) and the wake check.
 */
static inline __attribute__((always_inline)) void
sp_committed(struct shmbus_pub *pub, struct shmbus_hdr *h,
	     const struct shmbus_rec *r, uint64_t pos, uint64_t w,
	     uint64_t seq, uint64_t n)
{
	/* No CPU edge: only the compiler must keep the load of the post's
	 * hint after the commit. */
	fence_compiler();
	/* No edge: a hint.  A post we skip because a subscriber's bit is not
	 * visible yet leaves the record in the ring, where the subscriber's
	 * looks find it (MBOX_RING_LOOK in subscribe.c). */
	if (load_relaxed64(&h->mbox_want))
		mbox_post(pub->mbox, r, pos, w, seq);
	if (n)
		count_published(pub, n);
	wake_if_sleepers(pub, h);
}

/* Commits one record, and what follows. */
static inline __attribute__((always_inline)) void
sp_commit(struct shmbus_pub *pub, struct shmbus_hdr *h, struct shmbus_rec *r,
	  uint64_t pos, uint64_t w, uint64_t seq, uint64_t n)
{
	commit_store(r, w);
	sp_committed(pub, h, r, pos, w, seq, n);
}

/* shmbus_claim() of any record. */
static __attribute__((noinline)) int
sp_claim_any(struct shmbus_pub *pub, size_t len, void **buf)
{
	uint64_t pos, seq, tag;
	int rc = sp_reserve(pub, rec_size(len), 1, len, &pos, &seq, &tag);

	if (rc)
		return rc;
	claim_note(pub, pub_rec(pub, pos), pos, seq, len,
		   rec_word(tag, SHMBUS_REC_MSG, len), buf);
	return 0;
}

/* The same, with room: as sb_sp_publish()'s front, a frame that calls
 * nothing (make bench-insn, claim, commit and poll: 2xx instructions
 * with it, 255 without). */
int sb_sp_claim(struct shmbus_pub *pub, size_t len, void **buf)
{
	struct shmbus_prod_line *pl = pub_pline(pub);
	uint64_t pos, need = rec_size(len);
	struct shmbus_rec *r;

	if (!sp_claim_fast(pub, pl, need, &pos))
		return sp_claim_any(pub, len, buf);
	r = pub_rec(pub, pos);
	claim_note(pub, r, pos,
		   sp_claimed(pub, pl,
			      (struct shmbus_rec *)((uint8_t *)r + need),
			      pos + need, 1, len),
		   len, rec_word(pub->tag_word, SHMBUS_REC_MSG, len), buf);
	return 0;
}

int sb_sp_commit(struct shmbus_pub *pub)
{
	pub->claimed = false;
	sp_commit(pub, pub->hdr, pub_rec(pub, pub->c_pos), pub->c_pos,
		  pub->c_word, pub->c_seq, 1);
	return 0;
}

/* A SKIP record keeps its length and sequence number: readers step over
 * it without counting a loss.  It is posted like a message, so that a
 * subscriber waiting on the mailbox steps over it at once.  The claim's
 * word has its tag: only the type changes. */
int sb_sp_abort(struct shmbus_pub *pub)
{
	uint64_t w = pub->c_word | (uint64_t)SHMBUS_REC_SKIP << SHMBUS_LEN_BITS;

	pub->claimed = false;
	add_relaxed64(&pub->hdr->aborts, 1);
	sp_commit(pub, pub->hdr, pub_rec(pub, pub->c_pos), pub->c_pos, w,
		  pub->c_seq, 0);
	return 0;
}

/* shmbus_publish() of any message: a claim, the copy and the commit,
 * without the handle's note of the claim, which nothing between them
 * needs. */
static __attribute__((noinline)) int
sp_publish_any(struct shmbus_pub *pub, const void *data, size_t len)
{
	struct shmbus_rec *r;
	uint64_t pos, seq, tag;
	int rc;

	if (len > pub->max_msg)
		return -EMSGSIZE;
	rc = sp_reserve(pub, rec_size(len), 1, len, &pos, &seq, &tag);
	if (rc)
		return rc;
	r = pub_rec(pub, pos);
	rec_write_hdr(r, seq);
	sb_copy(r + 1, data, len);
	sp_commit(pub, pub->hdr, r, pos, rec_word(tag, SHMBUS_REC_MSG, len),
		  seq, 1);
	return 0;
}

/*
 * The same for a message the mailbox carries (small_max: at most
 * SHMBUS_MBOX_INLINE bytes, and max_msg), when the room allows it: the
 * message whose latency a round trip measures.  Its copy is a few fixed
 * moves (sb_copy_small()) and its claim sp_claim_fast(), so nothing is
 * called and almost no register is saved: make bench-insn counts 220
 * instructions for a publish and a read with this front, 239 without.
 * Its length is checked here and in sp_publish_any(), not by the API.
 */
int sb_sp_publish(struct shmbus_pub *pub, const void *data, size_t len)
{
	struct shmbus_hdr *h = pub->hdr;
	struct shmbus_prod_line *pl = pub_pline(pub);
	uint64_t pos, seq, need = rec_size(len);
	struct shmbus_rec *r;

	if (len > pub->small_max || !sp_claim_fast(pub, pl, need, &pos))
		return sp_publish_any(pub, data, len);
	/* Inside the room the claim's end lies in the ring after the record,
	 * and the room's tag bits are the claim's. */
	r = pub_rec(pub, pos);
	seq = sp_claimed(pub, pl, (struct shmbus_rec *)((uint8_t *)r + need),
			 pos + need, 1, len);
	rec_write_hdr(r, seq);
	sb_copy_small(r + 1, data, len);
	sp_commit(pub, h, r, pos, rec_word(pub->tag_word, SHMBUS_REC_MSG, len),
		  seq, 1);
	return 0;
}

int sb_sp_batch(struct shmbus_pub *pub, const struct iovec *msgs, size_t n,
		uint64_t need, uint64_t nbytes)
{
	uint64_t pos, seq, last, tag;
	uint32_t len = (uint32_t)msgs[n - 1].iov_len;
	int rc = sp_reserve(pub, need, n, nbytes, &pos, &seq, &tag);

	if (rc)
		return rc;
	/* The records of one claim lie in one lap (wrap padding, if any,
	 * comes before them): one tag for all. */
	last = sb_write_batch(pub, pos, seq, msgs, n, tag);
	sp_committed(pub, pub->hdr, pub_rec(pub, last), last,
		     rec_word(tag, SHMBUS_REC_MSG, len), seq + n - 1, n);
	return (int)n;
}
