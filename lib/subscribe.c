/* SPDX-License-Identifier: MIT */
/*
 * subscribe.c - cursors, reading records, and recovering from being lapped.
 *
 * A subscriber keeps its position privately and publishes it to its slot
 * when a poll returns (for a message a front took from the mailbox: at
 * the next call), and every 1/32 of the ring within a long one (R5): that
 * is what block-policy producers wait on.  Opening and closing are
 * subscriber.c's.
 * It finds records by their commit words alone (A1).  On an overwrite
 * channel it copies each message out and then checks that no producer has
 * claimed over it meanwhile (A2, the seqlock idiom), so it never delivers a
 * torn message.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

#include "channel.h"
#include "copy.h"
#include "sub.h"

/* Bound on records stepped over in one peek before reporting "nothing
 * yet", once it has also gone a ring's length: keeps every call bounded
 * even on a corrupt or racing ring (every step moves forward), and a run
 * of skipped records (aborted claims) longer than the bound never hides
 * a message behind it. */
#define PEEK_MAX_STEPS 4096

/*
 * Modes (sub.h).  A caught-up subscriber of a single-producer channel
 * waits on the mailbox, a line that stays put, instead of on the ring's
 * frontier, whose lines the producer must take back before each write:
 * in a ping-pong each message then crosses as one line.  While it waits
 * there its bit in hdr.mbox_want is set, and the producer posts every
 * commit.  A subscriber that keeps up with a stream instead would pull the
 * mailbox line away from the producer at every post, and the stream would
 * crawl at one line exchange a message; so it reads the ring, and the
 * producer posts nothing:
 *
 *   RING    -- it waits (below) ----------------------------> MBOX (bit set)
 *   MBOX    -- a post past our position -------------------> CATCHUP
 *   CATCHUP -- read the ring up to that post, or empty ----> MBOX
 *   MBOX    -- a look at the ring finds a record -----------> CATCHUP
 *   MBOX    -- outrun by a stream (below) ------------------> RING (bit clear)
 *
 * A subscriber waits when, over a window of MBOX_WINDOW empty looks at
 * the ring, it took a quarter as many messages or fewer (four empty looks
 * a message or more: a ping-pong, or a stream much slower than the
 * subscriber; fewer would send a stream the subscriber keeps up with to
 * the mailbox and back, churning).
 * It is outrun by a stream when the producer posted again during
 * MBOX_LEAVE catch-ups in a row.  A ping-pong never is, and a subscriber
 * that catches up after each batch finds its producer waiting.  Both
 * decisions are made on the paths of empty looks and catch-ups, never on
 * the take of a message.
 */
#define MBOX_LEAVE 4
#define MBOX_WINDOW 64

/* A subscriber waiting on the mailbox looks at the ring as well at its
 * 1st, 2nd, 4th, ... MBOX_RING_LOOK-th empty look after it set its bit,
 * and then at every MBOX_RING_LOOK-th empty look in a row without a
 * message: what a producer committed but did not post (it had not yet
 * seen our bit, it died in between, or shmbusd repaired its claim) is
 * found that late at most.  Counted from the last message, not from the
 * bit: each look takes the line the producer writes next, and a
 * subscriber that is answered every few looks (a ping-pong) never makes
 * one.  (Counted from the bit, once in 1024 looks made the 32-byte
 * ping-pong's p99 1.9 x the floor's against 1.4 x: bench_latency -t
 * shmbus, interleaved runs.) */
#define MBOX_RING_LOOK 1024

/* A subscriber that the mailbox finds behind prefetches this many bytes of
 * the records posted, at most (see prefetch_posted()). */
#define PREFETCH_MAX 4096


/* Peek results carry what a message needs and where the next one starts. */
struct peeked {
	struct shmbus_msg msg;
	uint64_t next;
};

/*
 * Whether process `pid` exists (a stopped process does).  The value comes
 * from shared memory: 0, or one that would be a negative pid_t (which
 * kill() takes as a process group), is no process at all.
 */
bool sb_pid_alive(uint32_t pid)
{
	if (pid == 0 || pid > INT32_MAX)
		return false;
	return kill((pid_t)pid, 0) == 0 || errno != ESRCH;
}

/*
 * The oldest record boundary that `head` has not overwritten: the first
 * indexed boundary at or after head + 8 - capacity, or head itself.
 */
int sb_sub_find_oldest(struct shmbus_channel *ch, uint64_t head,
		       uint64_t *pos)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2, lo, b;

	if (head + SHMBUS_REC_ALIGN <= ch->cap) {
		*pos = 0;
		return 0;
	}
	lo = head + SHMBUS_REC_ALIGN - ch->cap;
	/* b >= lo: a head near 2^64 (damage) must not wrap b round to 0
	 * and walk 2^64 / seg entries. */
	for (b = (lo + seg - 1) & ~(seg - 1); b <= head && b >= lo; b += seg) {
		/* A4: pairs with R4 in sb_seg_index(). */
		uint64_t e = load_acquire64(
			&ch->segs[(b >> ch->seg_log2) & (SHMBUS_NSEG - 1)].pos);

		/* An entry from an older lap is below b; one from a newer
		 * lap is past head; one more than a claim past b is corrupt. */
		if (e >= b && e <= head && e - b <= ch->cap / 2 &&
		    e % SHMBUS_REC_ALIGN == 0) {
			*pos = e;
			return 0;
		}
	}
	*pos = head;
	return 0;
}

static void resync(struct shmbus_sub *sub, uint64_t head)
{
	uint64_t np;

	sb_sub_find_oldest(sub->ch, head, &np);
	if (np <= sub->pos)
		np = head;
	sub->pos = np;
	sub->fresh = np == head;
	sub->resynced = true;
}

/*
 * A position learnt from head (a new subscriber's start, a resync with no
 * index entry) may be read only once the claimer that ended there has
 * zeroed the header word at it; until then the word may still hold stale
 * bytes of an earlier lap.  Positions reached by reading a commit or an
 * index entry are trusted by construction (the zeroing precedes both).
 */
static bool trusted(struct shmbus_sub *sub)
{
	if (!sub->fresh)
		return true;
	/* A3': pairs with R3 in sp_claimed() and mp_claimed(): the zeroing of
	 * the word at every
	 * position up to handoff is visible. */
	if (load_acquire64(&sub->ch->pl->handoff) < sub->pos)
		return false;
	sub->fresh = false;
	return true;
}

/* account_seq() after a lap, or for the first message. */
static __attribute__((noinline, cold)) void
account_seq_first(struct shmbus_sub *sub, uint64_t seq)
{
	if (sub->resynced && sub->have_seq && seq > sub->next_seq) {
		sub->pending_lost += seq - sub->next_seq;
		sub->lost += seq - sub->next_seq;
	}
	sub->resynced = false;
	sub->have_seq = true;
	sub->next_seq = seq + 1;
}

/* Records a sequence number seen at the subscriber's position. */
static inline void account_seq(struct shmbus_sub *sub, uint64_t seq)
{
	if (__builtin_expect(sub->resynced || !sub->have_seq, 0))
		account_seq_first(sub, seq);
	else
		sub->next_seq = seq + 1;
}

/*
 * A zero word at our position is the invalidated successor of the last
 * record: normally nothing is committed here yet, and we can say so
 * without touching head, which keeps a waiting reader off the producers'
 * cache line.  But a lapped reader whose position matches the current
 * head modulo the capacity also finds a zero word there; so one call in
 * 64 (and every call with `force`) looks at head anyway.
 */
static bool quiet_empty(struct shmbus_sub *sub, uint64_t w, bool force)
{
	return w == 0 && !force && (++sub->empty & 63) != 0;
}

/* The message at p, of `size` bytes in the ring, described for the
 * caller. */
static inline void describe(const struct shmbus_sub *sub, struct peeked *pk,
			    const uint8_t *data, uint32_t len, uint64_t seq,
			    uint64_t p, uint64_t size)
{
	pk->msg.data = data;
	pk->msg.len = len;
	pk->msg.seq = seq;
	pk->msg.pos = p;
	pk->msg.lost = sub->pending_lost;
	pk->next = p + size;
}

/* A message at p, of `size` bytes in the ring: counted and described. */
static inline int found(struct shmbus_sub *sub, struct peeked *pk,
			const uint8_t *data, uint32_t len, uint64_t seq,
			uint64_t p, uint64_t size)
{
	account_seq(sub, seq);
	describe(sub, pk, data, len, seq, p, size);
	return 1;
}

/*
 * Finds the next message at or after sub->pos, stepping over padding,
 * skipped records and laps.  Returns 1 with *pk filled, 0 if there is none
 * yet, -EBADMSG if the ring is corrupt.  Does not consume the message.
 */
/* SHMBUS_SEE_ACKNOWLEDGED: whether the record at p is below the
 * watermark, which a record either lies wholly below or starts at or
 * after (the agent acknowledges whole records). */
static bool acked(struct shmbus_sub *sub, uint64_t p)
{
	uint64_t w;

	if (p < sub->ack_lim)
		return true;
	/* A14: pairs with R14 in sb_repl_watermark(); the record's own
	 * bytes are then read through its commit word (A1). */
	w = load_acquire64(&sub->ch->daemon->replicated_pos);
	/* A watermark past head is damage (a write into the data file by a
	 * process that can write it): not believed, until the agent sets it
	 * back (sb_repl_watermark()).  Relaxed: head only grows, and a true
	 * watermark never passes it. */
	if (w <= load_relaxed64(&sub->ch->pl->head))
		sub->ack_lim = w;
	return p < sub->ack_lim;
}

/*
 * Multi producer, a mapping we may write (direct mode): the claim at p is
 * open while later ones may be committed behind it.  One whose producer
 * died holds every subscriber here until a producer runs out of room and
 * releases it (reap_gone() in publish.c), which on a quiet channel may be
 * never; shmbusd would release it within milliseconds.  So a subscriber
 * that has stood at the same open claim for REAP_EVERY_NS releases gone
 * producers' claims itself, and again every REAP_EVERY_NS.  `timed`: the
 * caller may read the clock now (a wait about to sleep, which then sleeps
 * no longer than REAP_EVERY_NS); otherwise one look in 16 does (peek()
 * and the spinning waits make one in 64 of their empty looks here).
 */
static __attribute__((noinline, cold)) void
open_claim_seen(struct shmbus_sub *sub, uint64_t p, bool timed)
{
	int64_t now;

	if (p != sub->stall_pos) {
		sub->stall_pos = p;
		sub->stall_looks = 0;
		sub->stall_ns = 0;
		if (!timed)
			return;
	} else if (!timed && ++sub->stall_looks < 16) {
		return;
	}
	sub->stall_looks = 0;
	now = sb_now_ns();
	if (!sub->stall_ns)
		sub->stall_ns = now;
	else if (now - sub->stall_ns >= REAP_EVERY_NS) {
		sub->stall_ns = now;
		sb_release_gone_producers(sub->ch, (uint32_t)getpid());
	}
}

/* Whether a claim at p that is open with records behind it is one this
 * subscriber may release (open_claim_seen()). */
static inline bool may_release(const struct shmbus_channel *ch)
{
	return ch_multi(ch) && !ch->no_pub && !ch->rdonly;
}

static int peek(struct shmbus_sub *sub, struct peeked *pk)
{
	struct shmbus_channel *ch = sub->ch;
	const struct shmbus_prod_line *pl = ch->pl;
	uint64_t from = sub->pos;

	for (uint64_t steps = 0;
	     steps < PEEK_MAX_STEPS || sub->pos - from < ch->cap; steps++) {
		uint64_t p = sub->pos, idx = p & ch->mask, w, head, size, seq;
		struct shmbus_rec *r = rec_at(ch, p);
		const uint8_t *data;
		uint32_t len, type;
		bool bad;

		/* Positions come from shared memory (head, the index): an
		 * unaligned one is corrupt, never dereferenced. */
		if (p % SHMBUS_REC_ALIGN)
			return -EBADMSG;
		if (!trusted(sub))
			return 0;
		if (sub->ack_only && !acked(sub, p))
			return 0;
		/* A1: pairs with R1 (commit_store() and the wrap padding in
		 * the wrap padding of sp_reserve_slow() and mp_claimed()): the
		 * record's seq and payload are visible. */
		w = load_acquire64(&r->commit);
		if (quiet_empty(sub, w, false))
			return 0;
		if (word_tag(w) != lap_tag(ch, p)) {
			/* Relaxed: head is only compared here; a position
			 * taken from it is gated by trusted() (A3'). */
			head = load_relaxed64(&pl->head);
			if (head == p)
				return 0;	/* caught up */
			if (head < p)
				return -EBADMSG; /* head behind a cursor */
			if (!not_overwritten(ch, p, head)) {
				resync(sub, head);
				continue;
			}
			/* Claimed, not committed yet. */
			if (may_release(ch))
				open_claim_seen(sub, p, false);
			return 0;
		}
		type = word_type(w);
		len = word_len(w);
		size = rec_bytes(type, len);
		bad = idx + size > ch->cap ||
		      !rec_shape_ok(type, len, ch->max_msg);
		data = (const uint8_t *)r + SHMBUS_REC_HDR;
		seq = bad || type_word_only(type) ? 0
						  : load_relaxed64(&r->seq);
		if (ch_overwrite(ch)) {
			if (!bad && type == SHMBUS_REC_MSG && len)
				memcpy(sub->buf, data, len);
			/* A2: pairs with R2 in sp_claimed() and mp_claimed(): if the word or the
			 * copy saw any byte of a later claim, head shows that
			 * claim.  A lapped reader may have read a later lap's
			 * payload that looks like a record of its own lap:
			 * nothing read here is trusted until this check. */
			fence_acquire();
			head = load_relaxed64(&pl->head);
			if (!not_overwritten(ch, p, head)) {
				resync(sub, head);
				continue;
			}
			data = sub->buf;
		}
		if (bad)
			return -EBADMSG;
		if (type == SHMBUS_REC_PAD) {
			sub->pos = p + size;
			continue;
		}
		if (type == SHMBUS_REC_GAP) {
			/* The next sequence number tells what was lost, as
			 * after a lap. */
			sub->resynced = true;
			sub->pos = p + size;
			continue;
		}
		if (type == SHMBUS_REC_SKIP) {
			account_seq(sub, seq);
			sub->pos = p + size;
			continue;
		}
		return found(sub, pk, data, len, seq, p, size);
	}
	return 0;
}

/*
 * peek() for the common case: a block channel, a position reached by
 * reading (not taken from head), and at it either nothing yet or a whole
 * message of this lap.  Anything else (padding, a skipped record, a lap,
 * damage, the periodic look at head) is peek()'s.
 */
static inline __attribute__((always_inline)) int
peek_ring(struct shmbus_sub *sub, struct peeked *pk)
{
	uint64_t p = sub->pos, w, size, seq;
	const struct shmbus_rec *r;
	uint32_t len;

	if (__builtin_expect(sub->careful || sub->fresh ||
				     p % SHMBUS_REC_ALIGN, 0))
		return peek(sub, pk);
	r = (const struct shmbus_rec *)(sub->data + (p & sub->mask));
	/* A1: pairs with R1 (commit_store()). */
	w = load_acquire64(&r->commit);
	if (w == 0 && (sub->empty + 1) & 63) {
		/* quiet_empty(), except that its 64th call, which looks at
		 * head, is left to peek() */
		sub->empty++;
		return 0;
	}
	len = word_len(w);
	size = rec_size(len);
	if (__builtin_expect(word_tag(w) != lap_tag_log2(p, sub->cap_log2) ||
				     word_type(w) != SHMBUS_REC_MSG ||
				     len > sub->max_msg ||
				     (p & sub->mask) + size > sub->cap, 0))
		return peek(sub, pk);
	seq = load_relaxed64(&r->seq);
	return found(sub, pk, (const uint8_t *)r + SHMBUS_REC_HDR, len, seq, p,
		     size);
}

/* What the mailbox says about the subscriber's position. */
enum mbox_say {
	MB_NOTHING,	/* its newest record is before us: nothing new */
	MB_BUSY,	/* a post is being written (mark 0) */
	MB_TAKEN,	/* the message at our position, copied: *pk */
	MB_IN_RING,	/* the record at our position is in the ring */
	MB_AHEAD,	/* records past ours were posted: we are behind,
			 * and sub->ring_end is the newest one's position */
};

/* Whether mailbox mark m names nothing at or after position p: the
 * mailbox is being written (0) or its newest record is before p. */
static inline bool mark_behind(uint64_t m, uint64_t p)
{
	return m == 0 || m - 1 < p;
}

/*
 * Looks at the mailbox for the record at sub->pos.  A small message there
 * is copied out and checked afterwards (the seqlock idiom), so a message
 * is never torn even though the producer may overwrite the mailbox at any
 * time.  Every field is checked before use; anything doubtful is left to
 * the ring, which is the record of truth.  The copy goes to the handle's
 * sub->mbuf.  The caller accounts for the sequence number (the fronts know
 * it is the next one: front_ready()).
 */
/* All the mailbox's words, whatever the length: five, written out (a loop
 * stays a loop of about 20 instructions at -O2); the words past the
 * length are never used.  Relaxed: the producer may be writing them, and
 * the seqlock's check after the copy decides whether the copy is used. */
_Static_assert(SHMBUS_MBOX_INLINE == 40, "mbox_copy() copies five words");

static inline void mbox_copy(uint64_t dst[5], const struct shmbus_mbox *mb)
{
	dst[0] = load_relaxed64(&mb->payload[0]);
	dst[1] = load_relaxed64(&mb->payload[1]);
	dst[2] = load_relaxed64(&mb->payload[2]);
	dst[3] = load_relaxed64(&mb->payload[3]);
	dst[4] = load_relaxed64(&mb->payload[4]);
}

static inline __attribute__((always_inline)) enum mbox_say
mbox_peek(struct shmbus_sub *sub, struct peeked *pk)
{
	const struct shmbus_mbox *mb = sub->mbox;
	uint8_t *dst = (uint8_t *)sub->mbuf;
	uint64_t p = sub->pos, m, w, len, seq, size;

	/* A8: pairs with R8 in mbox_post(): the record's commit in the ring
	 * and the mailbox's fields for it are visible. */
	m = load_acquire64(&mb->mark);
	if (m != p + 1) {
		if (m == 0)
			return MB_BUSY;
		if (m - 1 < p)
			return MB_NOTHING;
		sub->ring_end = m - 1;
		return MB_AHEAD;
	}
	w = load_relaxed64(&mb->word);
	/* One comparison for the tag (this lap's), the type (SHMBUS_REC_MSG,
	 * which is 0) and the length: any other tag or type leaves a
	 * difference of at least 2^29. */
	len = w - ((uint64_t)lap_tag_log2(p, sub->cap_log2) << 32);
	size = rec_size(len);
	if (len > sub->mb_max || (p & sub->mask) + size > sub->cap)
		return MB_IN_RING;
	seq = load_relaxed64(&mb->seq);
	mbox_copy(sub->mbuf, mb);
	/* A9: pairs with R9 in mbox_post(): if the copy saw any store of a
	 * later post, mark no longer reads m.  The record at p was committed
	 * in the ring before that post, so the ring has it. */
	fence_acquire();
	if (load_relaxed64(&mb->mark) != m)
		return MB_IN_RING;
	/* The position after the record is trusted: the producer zeroed the
	 * word there before it committed the record (see trusted()). */
	sub->fresh = false;
	describe(sub, pk, dst, (uint32_t)len, seq, p, size);
	return MB_TAKEN;
}

/*
 * The mailbox says that the records from our position up to ring_end are
 * committed: ask for their lines now, all at once.  Read one by one, each
 * line would be waited for in turn, because where a record starts is known
 * only once the previous record's commit word has arrived: a chain of
 * dependent loads, each a transfer from the producer's cache.  ring_end
 * comes from shared memory, but it only bounds how many prefetches are
 * issued (PREFETCH_MAX at most); every address is masked into the ring,
 * and a prefetch never faults.
 */
static inline void prefetch_posted(const struct shmbus_sub *sub)
{
	uint64_t a = sub->pos & ~(uint64_t)(SHMBUS_CACHELINE - 1);
	/* A distance, not an end: positions near 2^64 (damage) must not
	 * make the walk wrap round and go on for ever. */
	uint64_t span = sub->ring_end + SHMBUS_CACHELINE - a;

	if (span > PREFETCH_MAX)
		span = PREFETCH_MAX;
	for (uint64_t off = 0; off < span; off += SHMBUS_CACHELINE)
		__builtin_prefetch(sub->data + ((a + off) & sub->mask));
}

/* The number the next empty look at the mailbox has in its run: the
 * looks since a message was last delivered. */
static inline uint32_t next_run(const struct shmbus_sub *sub)
{
	return sub->delivered == sub->run_from ? sub->run + 1 : 1;
}

/* Whether the next empty look at the mailbox, number q in this mode and
 * run in its run, is also a look at the ring (MBOX_RING_LOOK). */
static inline bool ring_look_due(uint32_t q, uint32_t run)
{
	return (q <= MBOX_RING_LOOK && (q & (q - 1)) == 0) ||
	       run % MBOX_RING_LOOK == 0;
}

/* Counts an empty look at the mailbox, number `run` in its run. */
static inline void count_look(struct shmbus_sub *sub, uint32_t run)
{
	sub->quiet++;
	sub->run = run;
	sub->run_from = sub->delivered;
}

/* RING -> MBOX: asks for posts, and waits on the mailbox. */
static __attribute__((noinline)) void wait_mbox(struct shmbus_sub *sub)
{
	/* No edge: a hint (publish_sp.c's sp_committed()).  What the producer
	 * commits before it sees the bit is not posted: the looks at the
	 * ring from the first empty look on (ring_look_due()) find it. */
	or_relaxed64(&sub->ch->hdr->mbox_want, sub->want_bit);
	sub->mode = SB_SUB_MBOX;
	sub->quiet = 0;
	sub->ahead = 0;
}

/* MBOX -> RING: outrun by a stream; the producer may stop posting. */
static __attribute__((noinline)) void leave_mbox(struct shmbus_sub *sub)
{
	/* No edge: a hint, as in wait_mbox(). */
	and_relaxed64(&sub->ch->hdr->mbox_want, ~sub->want_bit);
	sub->mode = SB_SUB_RING;
	sub->quiet = 0;
	sub->win_from = sub->delivered;
}

/* RING: the end of a window of MBOX_WINDOW empty looks at the ring. */
static __attribute__((noinline)) void ring_window(struct shmbus_sub *sub)
{
	if (sub->delivered - sub->win_from <= MBOX_WINDOW / 4)
		wait_mbox(sub);
	else
		sub->win_from = sub->delivered;
}

/* MBOX: the mailbox names a record past ours (ring_end): we are behind. */
static void mbox_ahead(struct shmbus_sub *sub)
{
	sub->mode = SB_SUB_CATCHUP;
	prefetch_posted(sub);
}

/*
 * CATCHUP is over (up to the newest post, or the ring is empty): back to
 * MBOX.  If the producer posted again while we caught up, it outruns us:
 * the MBOX_LEAVE-th such catch-up in a row sends us back to the ring.
 * A subscriber that catches up after each batch, or that a wrap's padding
 * sent to the ring, finds nothing newer posted.
 */
static void caught_up(struct shmbus_sub *sub)
{
	/* No edge: only compared, as hints (A8 is the next look's, in
	 * mbox_peek()).  Outrun: the newest post is past ring_end and is
	 * not the very next message (one producer and one subscriber taking
	 * turns in one thread have posted that one). */
	uint64_t m = load_relaxed64(&sub->mbox->mark);
	uint64_t seq = load_relaxed64(&sub->mbox->seq);

	sub->mode = SB_SUB_MBOX;
	if (m == 0 || m - 1 <= sub->ring_end || sub->ring_end == UINT64_MAX ||
	    seq <= sub->next_seq)
		sub->ahead = 0;
	else if (++sub->ahead >= MBOX_LEAVE)
		leave_mbox(sub);
}

/* MBOX: a look at the mailbox that found nothing for us, counted.
 * Returns whether it is also a look at the ring. */
static inline bool mbox_looked(struct shmbus_sub *sub)
{
	uint32_t run = next_run(sub);

	count_look(sub, run);
	return ring_look_due(sub->quiet, run);
}

/* The same, when nothing new was posted: we wait, so the run of
 * catch-ups ends.  A post being written (mark 0) says instead that the
 * producer is busy, and leaves the run alone. */
static inline bool mbox_empty(struct shmbus_sub *sub)
{
	sub->ahead = 0;
	return mbox_looked(sub);
}

/* MBOX: a look at the ring (or a wait's) found a record the mailbox did
 * not name: read the ring until caught up.  Our bit is set again if it
 * was lost (looked at first: the word's line is one the producer reads
 * after every commit, and only a write would take it away). */
static __attribute__((noinline)) void ring_unposted(struct shmbus_sub *sub)
{
	sub->mode = SB_SUB_CATCHUP;
	sub->ring_end = UINT64_MAX;
	/* No edge: a hint, as in wait_mbox(). */
	if (!(load_relaxed64(&sub->ch->hdr->mbox_want) & sub->want_bit))
		or_relaxed64(&sub->ch->hdr->mbox_want, sub->want_bit);
}

/* The ring had nothing at our position. */
static inline void ring_empty(struct shmbus_sub *sub)
{
	if (sub->mode == SB_SUB_CATCHUP)
		caught_up(sub);
	else if (sub->mode == SB_SUB_RING && sub->has_mbox &&
		 ++sub->quiet % MBOX_WINDOW == 0)
		ring_window(sub);
}

/*
 * The next message: from the mailbox in MBOX, from the ring otherwise
 * (see "Modes" above).  In CATCHUP the ring is read only up to the newest
 * record posted (ring_end), never past it into lines the producer may
 * still be writing, and then the mailbox is asked again.
 */
static inline __attribute__((always_inline)) int
peek_fast(struct shmbus_sub *sub, struct peeked *pk)
{
	bool look = false;
	int rc;

	if (sub->mode == SB_SUB_CATCHUP && sub->pos > sub->ring_end)
		caught_up(sub);
	if (sub->mode == SB_SUB_MBOX) {
		switch (mbox_peek(sub, pk)) {
		case MB_TAKEN:
			account_seq(sub, pk->msg.seq);
			pk->msg.lost = sub->pending_lost;
			return 1;
		case MB_NOTHING:
			if (!mbox_empty(sub))
				return 0;
			look = true;
			break;
		case MB_BUSY:
			if (!mbox_looked(sub))
				return 0;
			look = true;
			break;
		case MB_AHEAD:
			mbox_ahead(sub);
			break;
		case MB_IN_RING:
			break;
		}
	}
	rc = peek_ring(sub, pk);
	if (rc == 0)
		ring_empty(sub);
	else if (look && rc > 0)
		ring_unposted(sub);
	return rc;
}

static void consume(struct shmbus_sub *sub, const struct peeked *pk)
{
	sub->pos = pk->next;
	sub->pending_lost = 0;
	sub->delivered++;
}

/*
 * A front's take from the mailbox publishes the position at once, R5 alone
 * (see publish_cursor()): the message was read from the mailbox into the
 * handle's copy, never in place, so the record's bytes are free for the
 * producer already, and a producer that waits for room never waits on a
 * subscriber that stopped calling.  The slot's line is the subscriber's
 * own, which producers read only when they run out of room: the store
 * costs no transfer on the way of the message.  The counters follow at
 * the next call (front_ready()).
 */
static inline __attribute__((always_inline)) void
publish_pos(struct shmbus_sub *sub)
{
	/* R5: pairs with A5 in sb_refresh_limit(). */
	store_release64(&sub->slot->pos, sub->pos);
}

/* Publishes the cursor and counters to the slot, once per batch. */
static inline __attribute__((always_inline)) void
publish_cursor(struct shmbus_sub *sub)
{
	struct shmbus_sub_slot *s = sub->slot;

	if (sub->pos == sub->published)
		return;
	store_relaxed64(&s->delivered, sub->delivered);
	store_relaxed64(&s->lost, sub->lost);
	store_relaxed64(&s->next_seq, sub->next_seq);
	/* R5: pairs with A5 in sb_refresh_limit(): every read of the records
	 * below pos (the handler's included) is done before a producer may
	 * claim over them. */
	store_release64(&s->pos, sub->pos);
	sub->published = sub->pos;
}

/*
 * shmbus_poll()'s loop, from n messages already delivered since position
 * start.  Out of line, so that its frame (peek_fast() and everything it
 * inlines) is not set up by the calls that shmbus_poll() answers alone.
 */
static __attribute__((noinline)) int
poll_loop(struct shmbus_sub *sub, shmbus_handler fn, void *arg, unsigned max,
	  unsigned n, uint64_t start)
{
	struct peeked pk;
	unsigned most = max ? max : UINT_MAX;
	uint64_t lap = max ? UINT64_MAX : sub->cap;	/* max 0: one lap */
	int rc = 0;

	/* A fork's copy: the cursor is the parent's (fork.c). */
	if (__builtin_expect(sub->forked, 0))
		return -EPERM;
	while (n < most && sub->pos - start < lap) {
		rc = peek_fast(sub, &pk);
		if (rc <= 0)
			break;
		/* The lap is counted from the first message delivered: a
		 * reader lapped before the call jumped from start to the
		 * oldest record held, which is no reading. */
		if (n == 0)
			start = pk.msg.pos;
		consume(sub, &pk);
		n++;
		if (fn(&pk.msg, arg))
			break;
		/* After the handler, never before: R5 releases what it
		 * read. */
		if (sub->pos - sub->published >= sub->cursor_every)
			publish_cursor(sub);
	}
	publish_cursor(sub);
	return rc < 0 ? rc : (int)n;
}

/* A front's answer to an empty look at the mailbox: counted, unless it is
 * due to be a look at the ring as well, which is left uncounted for
 * peek_fast() to count and act on.  Returns whether it was counted. */
static inline bool quiet_look(struct shmbus_sub *sub)
{
	uint32_t run = next_run(sub);

	if (ring_look_due(sub->quiet + 1, run))
		return false;
	count_look(sub, run);
	sub->ahead = 0;
	publish_cursor(sub);	/* the counters fronts left behind */
	return true;
}

/*
 * Whether a front may answer: the subscriber waits on the mailbox (then
 * peek_fast() would ask it first), and its sequence numbers are plain (it
 * has seen one and has not been lapped since), so that a message taken is
 * accounted by took_next().  A front that takes a message publishes only
 * its position (publish_pos()); the counters, which only statistics read
 * (shmbus_channel_subscriber()), follow with the cursor at the first
 * empty look (quiet_look()), at a wait, a close, or, in a stream of
 * fronts that never finds the mailbox empty, each time 1/32 of the ring
 * was read: here.
 */
static inline bool front_ready(struct shmbus_sub *sub)
{
	if (sub->pos - sub->published >= sub->cursor_every)
		publish_cursor(sub);
	return sub->mode == SB_SUB_MBOX && sub->have_seq && !sub->resynced;
}

/* account_seq() for a front's message: nothing lost, nothing to learn. */
static inline void took_next(struct shmbus_sub *sub, const struct peeked *pk)
{
	sub->next_seq = pk->msg.seq + 1;
}

/*
 * A caught-up subscriber's poll almost always finds one of two things in
 * the mailbox: nothing new, or the one small message that is next.  Those
 * two are answered here, as peek_fast() would answer them, and everything
 * else goes to poll_loop().  Nothing is counted twice: an empty look that
 * is due to become the periodic look at the ring is left uncounted for
 * peek_fast() to count and act on, and a message taken here is consumed
 * before poll_loop() goes on from it.
 */
SHMBUS_EXPORT int shmbus_poll(shmbus_sub *sub, shmbus_handler fn, void *arg,
			      unsigned max)
{
	struct peeked pk;
	uint64_t start;

	if (!sub || !fn)
		return -EINVAL;
	start = sub->pos;
	if (!front_ready(sub))
		return poll_loop(sub, fn, arg, max, 0, start);
	switch (mbox_peek(sub, &pk)) {
	case MB_NOTHING:
		if (!quiet_look(sub))
			break;
		return 0;
	case MB_TAKEN:
		took_next(sub, &pk);
		consume(sub, &pk);
		publish_pos(sub);	/* the handler reads the copy */
		if (fn(&pk.msg, arg) || max == 1)
			return 1;
		return poll_loop(sub, fn, arg, max, 1, start);
	case MB_BUSY:
	case MB_AHEAD:
	case MB_IN_RING:
		break;
	}
	return poll_loop(sub, fn, arg, max, 0, start);
}

/* shmbus_read(), whole: any message, from the mailbox or the ring. */
static __attribute__((noinline)) ssize_t
read_any(struct shmbus_sub *sub, void *buf, size_t cap,
	 struct shmbus_msg *info)
{
	struct peeked pk;
	int rc;

	/* A fork's copy: the cursor is the parent's (fork.c). */
	if (__builtin_expect(sub->forked, 0))
		return -EPERM;
	rc = peek_fast(sub, &pk);
	if (rc <= 0) {
		publish_cursor(sub);	/* padding may have been passed */
		return rc < 0 ? rc : -EAGAIN;
	}
	if (pk.msg.len > cap) {
		/* Left unread: counted again from it by the next look, so
		 * that a lap meanwhile counts it lost. */
		sub->next_seq = pk.msg.seq;
		return -EMSGSIZE;
	}
	if (pk.msg.len)
		memcpy(buf, pk.msg.data, pk.msg.len);
	consume(sub, &pk);
	publish_cursor(sub);
	if (info) {
		*info = pk.msg;
		info->data = buf;
	}
	return (ssize_t)pk.msg.len;
}

/*
 * Like shmbus_poll()'s front: a caught-up subscriber takes the small
 * message the mailbox carries (checked, as every mailbox copy is) and
 * copies its len bytes into buf, and nothing new is answered at once.
 * Everything else goes to read_any().
 */
SHMBUS_EXPORT ssize_t shmbus_read(shmbus_sub *sub, void *buf, size_t cap,
				  struct shmbus_msg *info)
{
	struct peeked pk;

	if (!sub || (cap && !buf))
		return -EINVAL;
	if (!front_ready(sub))
		return read_any(sub, buf, cap, info);
	switch (mbox_peek(sub, &pk)) {
	case MB_NOTHING:
		if (!quiet_look(sub))
			break;
		return -EAGAIN;
	case MB_TAKEN:
		if (pk.msg.len > cap)
			return -EMSGSIZE;	/* left unread */
		sb_copy(buf, pk.msg.data, pk.msg.len);
		took_next(sub, &pk);
		consume(sub, &pk);
		publish_pos(sub);
		if (info) {
			*info = pk.msg;
			info->data = buf;
		}
		return (ssize_t)pk.msg.len;
	case MB_BUSY:
	case MB_AHEAD:
	case MB_IN_RING:
		break;
	}
	return read_any(sub, buf, cap, info);
}

/* shmbus_wait()'s first step: the cursor a front left unpublished (see
 * front_ready()) is published before the subscriber waits. */
void sb_sub_publish(struct shmbus_sub *sub)
{
	publish_cursor(sub);
}

/* Whether the ring has a message (or a lap to recover from) at our
 * position. */
static bool ring_ready(struct shmbus_sub *sub, bool force)
{
	struct shmbus_channel *ch = sub->ch;
	uint64_t p = sub->pos, head, w;

	if (!trusted(sub))
		return false;
	if (sub->ack_only && !acked(sub, p))
		return false;
	/* A1 (see peek()). */
	w = load_acquire64(&rec_at(ch, p)->commit);
	if (quiet_empty(sub, w, force))
		return false;
	if (word_tag(w) == lap_tag(ch, p))
		return true;
	head = load_relaxed64(&ch->pl->head);	/* only compared */
	if (head <= p)
		return false;
	if (not_overwritten(ch, p, head)) {
		/* Claimed, not committed yet. */
		if (may_release(ch))
			open_claim_seen(sub, p, force);
		return false;
	}
	/* Lapped.  The caller's next poll must look at head as this look
	 * did, not count the zero word at p as its own quiet look, or a
	 * reader that alternates wait and poll would never resync: make
	 * that look the 64th (see quiet_empty()). */
	sub->empty |= 63;
	return true;
}

/* Whether a message (or a lap to recover from) is waiting: a cheap check
 * for the wait loop, which never consumes anything.  It moves between
 * modes as peek_fast() does, so that a waiting subscriber comes to wait
 * on the mailbox. */
bool sb_sub_ready(struct shmbus_sub *sub, bool force)
{
	uint64_t p = sub->pos;

	if (p % SHMBUS_REC_ALIGN)
		return true;	/* let the caller's poll report it */
	if (sub->mode == SB_SUB_MBOX && !force) {
		/* A8 (see mbox_peek()).  Only our own record counts: a mark
		 * that is ahead (or damaged) is left to the ring below. */
		uint64_t m = load_acquire64(&sub->mbox->mark);

		if (m == p + 1)
			return true;
		if (!mark_behind(m, p)) {
			/* Posts past ours: the ring has our record (A8), and
			 * this is peek_fast()'s MB_AHEAD.  Unless the mark
			 * was written over (damage in the data file): then
			 * the ring has nothing at our position, and a wait
			 * that answered at once would answer at once for
			 * ever, its caller's read finding nothing each time
			 * (a spin).  The ring decides, with a look at head
			 * (forced: a zero word is not taken as quiet). */
			if (!ring_ready(sub, true))
				return false;
			sub->ring_end = m - 1;
			mbox_ahead(sub);
			return true;
		}
		if (!(m == 0 ? mbox_looked(sub) : mbox_empty(sub)))
			return false;
	}
	if (!ring_ready(sub, force)) {
		ring_empty(sub);
		return false;
	}
	/* The ring has something the mailbox did not name as ours: the
	 * caller's next poll reads the ring, until it catches up. */
	if (sub->mode != SB_SUB_RING)
		ring_unposted(sub);
	return true;
}

SHMBUS_EXPORT int shmbus_sub_set_visibility(shmbus_sub *sub,
					    enum shmbus_visibility v)
{
	if (!sub || (v != SHMBUS_SEE_COMMITTED && v != SHMBUS_SEE_ACKNOWLEDGED))
		return -EINVAL;
	if (sub->forked)
		return -EPERM;
	/* No edge: the channel's configuration (see shmbus_pub_sync()). */
	if (v == SHMBUS_SEE_ACKNOWLEDGED &&
	    !(load_relaxed32(&sub->ch->daemon->repl_flags) &
	      (SHMBUS_REPL_ON | SHMBUS_REPL_JOURNAL)))
		return -EOPNOTSUPP;
	sub->ack_only = v == SHMBUS_SEE_ACKNOWLEDGED;
	sub->careful = sub->overwrite || sub->ack_only;
	sub->ack_lim = 0;
	/* The mailbox names records whatever the watermark: such a
	 * subscriber reads the ring only. */
	if (sub->mode != SB_SUB_RING)
		leave_mbox(sub);
	sub->has_mbox = !ch_multi(sub->ch) && !sub->ack_only;
	return 0;
}
