/* SPDX-License-Identifier: MIT */
/*
 * pub.h - a publisher's private state, and what the two publishing models
 * share.  Not part of the API.
 *
 *   publish.c     the API: arguments checked once, then the model's call
 *   publish_sp.c  single producer: claim, commit, batch
 *   publish_mp.c  multi producer: claim (with the hand-off), commit, batch
 *   producer.c    opening and closing
 *
 * A record is written the same way by both: its header (rec_write_hdr()),
 * its payload, then its commit word (commit_store(), R1).  Labels
 * (R = release side, A = acquire side) are listed in docs/design.md.
 */
#ifndef SHMBUS_PUB_H
#define SHMBUS_PUB_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "channel.h"

struct shmbus_pub {
	struct shmbus_channel *ch;
	struct shmbus_prod_slot *slot;
	/* Copies of the channel's validated geometry, for the fast path. */
	struct shmbus_hdr *hdr;		/* the wake line (control file) */
	struct shmbus_mbox *mbox;	/* SP: posted while a subscriber waits */
	struct shmbus_daemon_area *daemon;	/* its fence; pub_pline() */
	uint8_t *data;
	uint64_t mask;
	uint64_t cap;
	uint32_t max_msg;
	uint32_t seg_log2;
	uint32_t cap_log2;
	bool multi;
	/* SP state.  The fields updated together on every message (head and
	 * room, seq and bytes) are not neighbours: gcc's straight-line
	 * vectorizer pairs neighbours' updates into SSE moves, shuffles and
	 * adds, 13-15 more instructions a message (make bench-insn). */
	uint64_t head;		/* SP: the next position we claim */
	uint64_t tag_word;	/* SP: the commit word's tag bits there */
	uint64_t room;		/* SP: what sp_claim_fast() may hand out */
	uint64_t limit;		/* claims must end 8 bytes below */
	uint64_t seq;		/* SP: next sequence number */
	int64_t timeout_ns;
	uint64_t bytes;		/* SP: payload bytes published */
	int64_t reap_ns;	/* held back: next look for gone processes */
	uint64_t published;	/* messages this handle committed */
	uint32_t small_max;	/* min(SHMBUS_MBOX_INLINE, max_msg) */
	bool fenced;		/* SP: the channel refused a claim; the
				 * handle's private head may be stale from
				 * now on, so it refuses every claim */
	uint32_t fence_word;	/* the fence when the handle was opened:
				 * any other value refuses claims */
	uint64_t won_end;	/* MP: the end of our last claim */
	uint64_t synced;	/* shmbus_pub_sync() answered 0 up to here */
	bool agent;		/* a standby's replication agent
				 * (sb_writer_open()): not fenced */
	bool bounded;		/* MP: never waits on another producer's
				 * hand-off (sb_pub_bounded()) */
	uint64_t hv_high;	/* bounded: handoff_nudge()'s progress clock */
	int64_t hv_since;
	/* the outstanding claim */
	bool claimed;
	uint32_t c_len;
	uint64_t c_pos;
	uint64_t c_seq;
	uint64_t c_word;	/* the commit word shmbus_commit() stores */
	/* The process that opened it: a fork's copy closes as a copy. */
	uint32_t opener;
	/* A fork's copy (fork.c): refuses every use with -EPERM. */
	bool forked;
	struct sb_forkable fork;
	/* SP: listed among the roles this process holds (producer.c), and
	 * the role word it took the role with, which its close gives back. */
	bool role_listed;
	uint64_t role_word;
	struct shmbus_pub *role_next;
};

/* Fills a handle's copies of the channel's validated geometry
 * (producer.c). */
void sb_pub_init(struct shmbus_pub *pub, struct shmbus_channel *ch);

/* The record at ring position pos, from the handle's copies. */
static inline struct shmbus_rec *pub_rec(const struct shmbus_pub *pub,
					 uint64_t pos)
{
	return (struct shmbus_rec *)(pub->data + (pos & pub->mask));
}

/* The producers' line (head, handoff, seq, bytes), a fixed distance from
 * shmbusd's area in the data file's last page: derived from the pointer
 * that every claim loads for the fence rather than loaded from a field of
 * its own (make bench-insn: 220 and 238 instructions so, 224 and 242 with
 * a field loaded again after the claim's stores). */
static inline struct shmbus_prod_line *pub_pline(const struct shmbus_pub *pub)
{
	return (struct shmbus_prod_line *)((uint8_t *)pub->daemon +
					   (SHMBUS_PLINE_OFFSET -
					    SHMBUS_DAEMON_OFFSET));
}

/* A record's header: its sequence number.  Ordered before the record's
 * commit by R1. */
static inline void rec_write_hdr(struct shmbus_rec *r, uint64_t seq)
{
	store_relaxed64(&r->seq, seq);
}

/* Commits a record: stores its commit word.  The one store that makes a
 * record of a producer visible (wrap padding and repairs use it too,
 * through sb_commit_rec()). */
static inline void commit_store(struct shmbus_rec *r, uint64_t w)
{
	/* R1: pairs with A1 in the subscriber's peek() and peek_ring()
	 * (and shmbusd's committed_until()): the header and payload
	 * written before this store are visible to a reader that sees
	 * the commit word. */
	store_release64(&r->commit, w);
}

/* Notes an outstanding claim of one record of `len` bytes at pos, whose
 * commit will store `w`, and hands out its payload. */
static inline void claim_note(struct shmbus_pub *pub, struct shmbus_rec *r,
			      uint64_t pos, uint64_t seq, size_t len,
			      uint64_t w, void **buf)
{
	rec_write_hdr(r, seq);
	pub->claimed = true;
	pub->c_pos = pos;
	pub->c_seq = seq;
	pub->c_len = (uint32_t)len;
	pub->c_word = w;
	*buf = r + 1;
}

/* Per-producer count for busstat, on the producer's own slot line. */
static inline void count_published(struct shmbus_pub *pub, uint64_t n)
{
	pub->published += n;
	if (pub->slot)
		store_relaxed64(&pub->slot->published, pub->published);
}

/*
 * Wakes sleeping subscribers if any said they sleep.  Called after every
 * commit, with the handle's hdr (loaded before the commit's atomics, so
 * that the compiler need not load it again after them).  The check is one
 * side of a store-load pair (F3): our commit
 * then the sleepers count, against a sleeper's increment then its look at
 * the ring, and it needs a full fence between the two, which waits until
 * the commit's lines have left a reader's cache.  Only channels where a
 * subscriber may sleep pay for it (hdr.sleep_ok, sb_sleep_announce()):
 * once per commit it cost a streaming producer more than half its rate
 * (bench_throughput, 32 B claim/commit: 10.6 against 20.5 M msg/s
 * without; alone 68.6 against 119.4 M).
 */
static inline void wake_if_sleepers(struct shmbus_pub *pub,
				    struct shmbus_hdr *h)
{
	/* No CPU edge: only the compiler must keep this load after the
	 * commit; sb_sleep_announce()'s membarrier() supplies the rest. */
	fence_compiler();
	/* No edge: a subscriber's bit is made visible to us before it first
	 * sleeps, by its membarrier() (sb_sleep_announce()). */
	if (__builtin_expect(load_relaxed64(&h->sleep_ok) == 0, 1))
		return;
	/* F3: pairs with F3 in sleep_wait(): either the sleeper's re-check
	 * sees our commit, or we see its sleepers count. */
	fence_seqcst();
	if (load_relaxed32(&h->sleepers))
		sb_prod_wake(pub->ch);
}

/*
 * The fence (daemon->fence, F4).  A claim is made visible first (SP: head;
 * MP: the slot's announcement), then the fence is loaded; shmbusd stores
 * the fence, then calls membarrier(), then reads head and the
 * announcements (sb_fence_quiesce()).  Either the claim sees the fence
 * and withdraws, or shmbusd sees the claim and waits for its commit: no
 * claim slips past a handover unseen.  The producer's side costs a
 * load of a line that only shmbusd writes, and only when the ring changes
 * hands: it stays in the producer's cache.
 */
static inline bool fence_up(const struct shmbus_pub *pub,
			    const struct shmbus_daemon_area *d)
{
	/* F4: the CPU side is supplied by shmbusd's membarrier() in
	 * sb_fence_set(); only the compiler must keep this load after the
	 * claim's store. */
	fence_compiler();
	/* No edge of its own: see F4 above. */
	return load_relaxed32(&d->fence) != pub->fence_word;
}

/* The mailbox's payload: `words` 8-byte words, at most 5, written out (a
 * loop of them cost about 25 instructions a message).  Relaxed atomics: a
 * subscriber may be copying the same words; the seqlock decides whether
 * its copy is used. */
_Static_assert(SHMBUS_MBOX_INLINE == 40, "mbox_put stores at most 5 words");

static inline void mbox_put(struct shmbus_mbox *mb, const uint64_t *src,
			    uint32_t words)
{
	switch (words) {
	case 5:
		store_relaxed64(&mb->payload[4], src[4]);
		/* fall through */
	case 4:
		store_relaxed64(&mb->payload[3], src[3]);
		/* fall through */
	case 3:
		store_relaxed64(&mb->payload[2], src[2]);
		/* fall through */
	case 2:
		store_relaxed64(&mb->payload[1], src[1]);
		/* fall through */
	case 1:
		store_relaxed64(&mb->payload[0], src[0]);
		/* fall through */
	default:
		break;
	}
}

/*
 * Posts the record r just committed at pos (commit word w, sequence
 * number seq) to the mailbox, with its payload if it is a message of at
 * most SHMBUS_MBOX_INLINE bytes, copied from the ring, where we have just
 * written it, in whole words (the record is padded to 8 bytes).  We are
 * the mailbox's only writer (the producer, or on a standby the
 * replication agent, lib/mirror.c).
 */
static inline __attribute__((always_inline)) void
mbox_post(struct shmbus_mbox *mb, const struct shmbus_rec *r, uint64_t pos,
	  uint64_t w, uint64_t seq)
{
	store_relaxed64(&mb->mark, 0);
	/* R9: pairs with A9 in the subscriber's mbox_peek(): a reader whose
	 * copy saw any store below sees mark 0, or a later mark, when it looks
	 * at mark again after its copy. */
	fence_release();
	store_relaxed64(&mb->word, w);
	store_relaxed64(&mb->seq, seq);
	/* The low half of the word is the type (MSG is 0) and the length. */
	if ((uint32_t)w <= SHMBUS_MBOX_INLINE)
		mbox_put(mb, (const uint64_t *)(r + 1),
			 (uint32_t)(align8((uint32_t)w) / 8));
	/* R8: pairs with A8 in mbox_peek() and sb_sub_ready(): the record's
	 * commit in the ring (R1, before this) and the fields above are
	 * visible to a reader that sees this mark. */
	store_release64(&mb->mark, pos + 1);
}

/* Whether a segment of the index starts in (p, q]. */
static inline bool crosses_seg(const struct shmbus_pub *pub, uint64_t p,
			       uint64_t q)
{
	return (p ^ q) >> pub->seg_log2;
}

/* What both models share off the fast path (publish.c). */
void sb_refresh_limit(struct shmbus_pub *pub, uint64_t p);
/* Whether a claim from p to q fits under the limit: 0 if it does (after
 * refreshing the limit and releasing gone processes, if need be), 1 if
 * it does not yet and the caller should try again (having waited a
 * little), -EAGAIN or -ETIMEDOUT under the publisher's timeout.
 * *deadline and *spins start at 0 for each claim. */
int sb_make_room(struct shmbus_pub *pub, uint64_t p, uint64_t q,
		 int64_t *deadline, unsigned *spins);
uint64_t sb_write_batch(struct shmbus_pub *pub, uint64_t pos, uint64_t seq,
			const struct iovec *msgs, size_t n, uint64_t tag);

/*
 * The models.  Arguments are checked by the API (publish.c): no claim
 * outstanding, every length within max_msg (the publish calls check
 * that themselves: see sb_sp_publish()), a batch's total within
 * max_need() and its count at least 1.  A batch is given its total record
 * bytes and payload bytes.
 */
int sb_sp_claim(struct shmbus_pub *pub, size_t len, void **buf);
int sb_sp_commit(struct shmbus_pub *pub);
int sb_sp_abort(struct shmbus_pub *pub);
int sb_sp_publish(struct shmbus_pub *pub, const void *data, size_t len);
int sb_sp_batch(struct shmbus_pub *pub, const struct iovec *msgs, size_t n,
		uint64_t need, uint64_t nbytes);
int sb_mp_claim(struct shmbus_pub *pub, size_t len, void **buf);
int sb_mp_commit(struct shmbus_pub *pub);
int sb_mp_abort(struct shmbus_pub *pub);
int sb_mp_publish(struct shmbus_pub *pub, const void *data, size_t len);
int sb_mp_batch(struct shmbus_pub *pub, const struct iovec *msgs, size_t n,
		uint64_t need, uint64_t nbytes);

#endif /* SHMBUS_PUB_H */
