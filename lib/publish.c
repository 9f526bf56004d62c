/* SPDX-License-Identifier: MIT */
/*
 * publish.c - claiming space in the ring and committing records.
 *
 * Single producer: the producer owns `head`; a claim is a relaxed store.
 * Multi producer: a claim is a CAS on `head` (the check against the block
 * limit and the wrap padding must be decided on the same value the claim
 * starts from, which fetch-add cannot do); then a short hand-off in claim
 * order invalidates the next header word and hands out sequence numbers.
 * The payload is written and committed by each producer independently.
 *
 * Labels (R = release side, A = acquire side) are listed in docs/design.md.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <unistd.h>

#include "channel.h"
#include "copy.h"
#include "pub.h"
#include "repair.h"



/*
 * Index entries for every segment start b with p < b <= q: the first record
 * boundary at or after b is q, the end of this claim.
 */
static __attribute__((noinline, cold)) void
seg_index(struct shmbus_channel *ch, uint64_t p, uint64_t q)
{
	uint64_t seg = UINT64_C(1) << ch->seg_log2;

	for (uint64_t b = (p | (seg - 1)) + 1; b <= q; b += seg)
		/* R4: pairs with A4 in sb_sub_find_oldest() and
		 * sp_walk_start(). */
		store_release64(&ch->segs[(b >> ch->seg_log2) &
					  (SHMBUS_NSEG - 1)].pos, q);
}

/*
 * Recomputes how far this producer may claim: one lap past the oldest
 * position something still needs.  `p` is the head it claims from.
 *
 * Multi producer, both policies: the oldest claim still being written by
 * another producer.  Without this bound a producer preempted between its
 * claim and its writes could be lapped, and would then write into the
 * next lap's records, which no reader check can see.
 * Block policy: also the slowest active subscriber's cursor.
 */
static void refresh_limit(struct shmbus_pub *pub, uint64_t p)
{
	struct shmbus_channel *ch = pub->ch;
	uint64_t min = p;
	uint32_t hwm;

	if (ch_multi(ch)) {
		for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
			struct shmbus_prod_slot *s = &ch->prods[i];
			uint64_t c;

			/* A7: pairs with R7 (the slot's ACTIVE store). */
			if (owner_state(load_acquire64(&s->owner)) !=
			    SHMBUS_SLOT_ACTIVE)
				continue;
			/* A6: pairs with R6 (the claim_pos stores in
			 * claim_slow() and release_claim()). */
			c = load_acquire64(&s->claim_pos);
			if (c < min)
				min = c;
		}
	}
	if (ch_overwrite(ch)) {
		pub->limit = min + ch->cap;
		return;
	}
	/* F1: pairs with F1 in shmbus_sub_open().  Either this scan sees the
	 * new subscriber's slot, or the subscriber's load of head sees at
	 * least p and it starts at or after p, which the limit covers. */
	fence_seqcst();
	/* After F1: a subscriber raises the mark before its ACTIVE store, so
	 * the same argument covers the mark. */
	hwm = load_relaxed32(&ch->hdr->nsub_hwm);
	if (hwm > SHMBUS_MAX_SLOTS)
		hwm = SHMBUS_MAX_SLOTS;
	for (uint32_t i = 0; i < hwm; i++) {
		struct shmbus_sub_slot *s = &ch->subs[i];
		uint64_t c;

		/* A7: pairs with R7 in shmbus_sub_open(): the slot's initial
		 * cursor, stored before it went ACTIVE, is visible. */
		if (owner_state(load_acquire64(&s->owner)) !=
		    SHMBUS_SLOT_ACTIVE)
			continue;
		/* A5: pairs with R5 in publish_cursor(): the subscriber has
		 * finished reading everything below c. */
		c = load_acquire64(&s->pos);
		if (c < min)	/* a cursor past head is corrupt: ignored */
			min = c;
	}
	pub->limit = min + ch->cap;
}

/* How often a held-back producer looks for gone processes behind it. */
#define REAP_EVERY_NS	INT64_C(10000000)	/* 10 ms */

/*
 * Releases the slots of gone processes (sb_pid_gone()) that hold this
 * producer back: subscribers' cursors (block policy) and other producers'
 * claims that had handed over (multi producer; one that had not is
 * handed over by whoever waits behind it, in await_handoff()).  shmbusd
 * does the same within milliseconds; this is what lets a channel without
 * the daemon (direct mode) recover.  The repairs are shmbusd's own
 * (repair.c): each compares the slot's state and pid in one CAS, so a
 * slot that a live process took meanwhile is left alone.  At most once
 * every REAP_EVERY_NS per handle, and only while held back: a scan asks
 * the kernel about every pid.
 */
static __attribute__((cold)) int reap_gone(struct shmbus_pub *pub)
{
	struct shmbus_channel *ch = pub->ch;
	uint32_t me = (uint32_t)getpid(), hwm;
	int64_t now = sb_now_ns();
	int n = 0;

	if (now < pub->reap_ns)
		return 0;
	pub->reap_ns = now + REAP_EVERY_NS;
	if (!ch_overwrite(ch)) {
		hwm = load_relaxed32(&ch->hdr->nsub_hwm);
		if (hwm > SHMBUS_MAX_SLOTS)
			hwm = SHMBUS_MAX_SLOTS;
		for (uint32_t i = 0; i < hwm; i++) {
			/* A7: pairs with R7; sb_repair_sub() compares the
			 * word again in its CAS. */
			uint64_t o = load_acquire64(&ch->subs[i].owner);

			if (owner_state(o) != SHMBUS_SLOT_FREE &&
			    sb_pid_gone(owner_pid(o)))
				n += sb_repair_sub(ch, i, owner_pid(o), me);
		}
	}
	if (!pub->multi)
		return n;
	for (uint32_t i = 0; i < SHMBUS_MAX_PRODUCERS; i++) {
		/* A7: pairs with R7; sb_repair_prod() compares it again. */
		uint64_t o = load_acquire64(&ch->prods[i].owner);

		if (owner_state(o) != SHMBUS_SLOT_FREE &&
		    owner_pid(o) != me && sb_pid_gone(owner_pid(o)) &&
		    sb_repair_prod(ch, i, owner_pid(o), me) == 1)
			n++;
	}
	return n;
}

static int backpressure(struct shmbus_pub *pub, int64_t *deadline,
			unsigned *spins)
{
	int64_t now;

	if (*spins == 0)
		add_relaxed64(&pub->ch->hdr->backpressure, 1);
	if (pub->timeout_ns == 0)
		return -EAGAIN;
	if (++*spins < 256) {
		cpu_relax();
		return 0;
	}
	if (pub->timeout_ns > 0) {
		now = sb_now_ns();
		if (*deadline == 0)
			*deadline = now + pub->timeout_ns;
		else if (now >= *deadline)
			return -ETIMEDOUT;
	}
	sched_yield();
	return 0;
}

static void release_claim(struct shmbus_pub *pub);

/* How long the hand-off may name a claim that no slot announces before
 * the word is taken for corrupt.  In a sound ring that lasts only while
 * the claim's producer hands over between our two loads. */
#define HANDOFF_CORRUPT_NS	INT64_C(20000000)	/* 20 ms */

/*
 * Waits until the hand-off reaches p, the start of our claim (MP only).
 * It normally takes a few instructions: the claimer before us hands over
 * right after its CAS.  While we wait, a claim at the hand-off whose
 * producer is gone is handed over and padded on its behalf
 * (sb_handoff_help()), whichever claim before ours it is; a live
 * producer's claim is waited for, however long it is stopped.  Returns
 * false if the hand-off word is corrupt (past p, or naming a claim that
 * no slot announces): the claim then goes on without handing over.
 */
static bool await_handoff(struct shmbus_channel *ch, uint64_t p)
{
	uint64_t hv, odd = UINT64_MAX;
	int64_t since = 0;
	unsigned spins = 0;

	/* A3: pairs with R3 in the previous claimer's claim_done() (or in
	 * sb_handoff_help()): the zeroing of the word at p, and the
	 * sequence numbers, are visible once we see p here. */
	while ((hv = load_acquire64(&ch->hdr->handoff)) != p) {
		if (hv > p)
			return false;
		if (++spins < 1024) {
			cpu_relax();
			continue;
		}
		if (spins % 64 == 0) {
			int rc = sb_handoff_help(ch, hv, (uint32_t)getpid(),
						 sb_pid_gone);

			if (rc != SB_HELP_NOBODY) {
				odd = UINT64_MAX;
			} else if (hv != odd) {
				odd = hv;
				since = sb_now_ns();
			} else if (sb_now_ns() - since > HANDOFF_CORRUPT_NS) {
				return false;
			}
		}
		sched_yield();
	}
	return true;
}

/*
 * SP: what claim_fast() may hand out from head on.  Its claims end before
 * the next segment start, so that none has an index entry to write and
 * none wraps (the ring's end is a segment start too), and inside the
 * limit.  All of it lies in head's lap: the commit word's tag for it is
 * computed here, once.  Set after every claim that claim_fast() did not
 * make; a multi-producer handle keeps room 0 and never takes the fast
 * path.
 */
static void set_room(struct shmbus_pub *pub)
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
 * The general claim: multi producer, wrap padding, or a limit to refresh
 * (and wait on).  On success [*pp, *pp + *padp + need) is ours.
 */
static int claim_slow(struct shmbus_pub *pub, uint64_t need, uint64_t *pp,
		      uint64_t *padp)
{
	struct shmbus_channel *ch = pub->ch;
	struct shmbus_hdr *h = ch->hdr;
	bool multi = ch_multi(ch), block = !ch_overwrite(ch);
	uint64_t p, q, pad;
	int64_t deadline = 0;
	unsigned spins = 0;
	int rc;

	for (;;) {
		/* A12 (MP): pairs with R12, the release part of other
		 * producers' head CAS, so that their claim_pos stores made
		 * before it are seen by refresh_limit(). */
		p = multi ? load_acquire64(&h->head) : pub->head;
		if (p % SHMBUS_REC_ALIGN) {	/* corrupt head */
			release_claim(pub);
			return -EBADMSG;
		}
		pad = (p & ch->mask) + need > ch->cap ?
			      ch->cap - (p & ch->mask) : 0;
		q = p + pad + need;
		if (multi) {
			/* R6: pairs with A6 in refresh_limit(): announced
			 * before the CAS that makes the claim real, never
			 * later than the claim's start.  Tentative until the
			 * CAS is won (for shmbusd's repair). */
			store_relaxed64(&pub->slot->claim_end,
					q | SHMBUS_CLAIM_TENTATIVE);
			store_release64(&pub->slot->claim_pos, p);
		}
		if ((block || multi) && q + SHMBUS_REC_ALIGN > pub->limit) {
			refresh_limit(pub, p);
			if (q + SHMBUS_REC_ALIGN > pub->limit &&
			    reap_gone(pub))
				refresh_limit(pub, p);
			if (q + SHMBUS_REC_ALIGN > pub->limit) {
				/* Overwrite: only a peer producer's unfinished
				 * write holds us back; that is back-pressure
				 * too, under the publisher's timeout. */
				rc = backpressure(pub, &deadline, &spins);
				if (rc) {
					release_claim(pub);
					return rc;
				}
				continue;
			}
		}
		if (!multi) {
			pub->head = q;
			store_relaxed64(&h->head, q);
			set_room(pub);
			break;
		}
		/* The claim.  R12: its release part pairs with A12, the
		 * acquire loads of head in other producers (above),
		 * sb_handoff_help() and repair_claim(): our announcement
		 * (R6) is visible to whoever sees the claim. */
		if (cas_weak_seqcst64(&h->head, &p, q)) {
			/* Won: ordered after the CAS by R2 below; read by
			 * shmbusd only once this process is dead. */
			store_relaxed64(&pub->slot->claim_end, q);
			break;
		}
	}
	*pp = p;
	*padp = pad;
	return 0;
}

/* Whether a segment of the index starts in (p, q]. */
static inline bool crosses_seg(const struct shmbus_pub *pub, uint64_t p,
			       uint64_t q)
{
	return (p ^ q) >> pub->seg_log2;
}

/* The record at ring position pos, from the handle's copies. */
static inline struct shmbus_rec *pub_rec(const struct shmbus_pub *pub,
					 uint64_t pos)
{
	return (struct shmbus_rec *)(pub->data + (pos & pub->mask));
}

/*
 * The common case, on the producer's private copy of head: single
 * producer, room (see set_room()).  No shared word is read.
 */
static inline bool claim_fast(struct shmbus_pub *pub, uint64_t need,
			      uint64_t *pp)
{
	uint64_t p = pub->head, q = p + need;

	if (__builtin_expect(need > pub->room, 0))
		return false;
	pub->room -= need;
	pub->head = q;
	/* Relaxed: R2 below orders it before the record's bytes. */
	store_relaxed64(&pub->hdr->head, q);
	*pp = p;
	return true;
}

/*
 * What every claim of [p, q) does once it is ours (wrap padding of `pad`
 * bytes at p, then `nmsgs` records): hand-off, the next header word, the
 * index, the counters.  Returns the first record's sequence number.
 * `multi` is pub->multi, passed so that a caller who knows it (the fast
 * path: single producer) gets the other branch compiled out; `index` is
 * false only for a caller that has made sure no segment starts in (p, q],
 * which keeps the index's call, and the registers it needs saved, out of
 * that caller's frame.
 */
static inline __attribute__((always_inline)) uint64_t
claim_done(struct shmbus_pub *pub, uint64_t p, uint64_t pad, uint64_t q,
	   uint64_t nmsgs, uint64_t nbytes, bool multi, bool index)
{
	struct shmbus_channel *ch = pub->ch;
	struct shmbus_hdr *h = pub->hdr;
	uint64_t seq;

	/* R2: pairs with A2 (the fence in the subscriber's overwrite check):
	 * the claim is visible before any byte of [p, q) changes, so a reader
	 * that copied bytes we overwrite sees head past its record. */
	fence_release();

	if (multi) {
		/* The claims before ours have handed over; a corrupt hand-off
		 * word leaves the word at q and the hand-off alone, since
		 * the next claimer may already own them. */
		bool mine = await_handoff(ch, p);

		if (mine)
			store_relaxed64(&pub_rec(pub, q)->commit, 0);
		if (index && crosses_seg(pub, p, q))
			seg_index(ch, p, q);
		seq = load_relaxed64(&h->seq);
		store_relaxed64(&h->seq, seq + nmsgs);
		store_relaxed64(&h->bytes, load_relaxed64(&h->bytes) + nbytes);
		/* R3: pairs with A3 in the next claimer's await_handoff(),
		 * A3 in sb_handoff_help() and sb_repair_prod(), and A3' in
		 * the subscriber's trusted(). */
		if (mine)
			store_release64(&h->handoff, q);
	} else {
		/* The header word at q becomes the next claim's commit
		 * word; zero it now, before our commits (R1, release)
		 * publish anything, so that a reader who reaches q after our
		 * records never mistakes stale bytes of an earlier lap for a
		 * committed record. */
		store_relaxed64(&pub_rec(pub, q)->commit, 0);
		if (index && crosses_seg(pub, p, q))
			seg_index(ch, p, q);
		seq = pub->seq;
		pub->seq += nmsgs;
		pub->bytes += nbytes;
		store_relaxed64(&h->seq, pub->seq);
		store_relaxed64(&h->bytes, pub->bytes);
		/* R3: pairs with A3' in the subscriber's trusted(). */
		store_release64(&h->handoff, q);
	}
	if (pad) {
		/* The padding's successor is our first record, still holding
		 * stale bytes: zero it before the padding is committed. */
		store_relaxed64(&rec_at(ch, p + pad)->commit, 0);
		/* R1: pairs with A1 in the subscriber's peek(). */
		store_release64(&rec_at(ch, p)->commit,
				commit_word(ch, p, SHMBUS_REC_PAD,
					    (uint32_t)(pad - SHMBUS_REC_ALIGN)));
	}
	return seq;
}

static __attribute__((noinline)) int
reserve_slow(struct shmbus_pub *pub, uint64_t need, uint64_t nmsgs,
	     uint64_t nbytes, uint64_t *recp, uint64_t *seqp)
{
	uint64_t p, pad;
	int rc = claim_slow(pub, need, &p, &pad);

	if (rc)
		return rc;
	*seqp = claim_done(pub, p, pad, p + pad + need, nmsgs, nbytes,
			   pub->multi, true);
	*recp = p + pad;
	return 0;
}

/*
 * Reserves `need` bytes for `nmsgs` records holding `nbytes` payload bytes.
 * On success *recp is where the first record goes and *seqp its sequence
 * number; wrap padding, if any, is already committed.  The common case is
 * inlined into its callers; everything else is out of line.
 */
static inline __attribute__((always_inline)) int
reserve(struct shmbus_pub *pub, uint64_t need, uint64_t nmsgs,
	uint64_t nbytes, uint64_t *recp, uint64_t *seqp)
{
	uint64_t p;

	if (!claim_fast(pub, need, &p))
		return reserve_slow(pub, need, nmsgs, nbytes, recp, seqp);
	*seqp = claim_done(pub, p, 0, p + need, nmsgs, nbytes, false, false);
	*recp = p;
	return 0;
}

/* MP: the claim is committed (or abandoned): peers may lap it now. */
static void release_claim(struct shmbus_pub *pub)
{
	if (pub->multi)
		/* R6: pairs with A6 in refresh_limit(); the claim is
		 * committed (or abandoned) before peers may lap it. */
		store_release64(&pub->slot->claim_pos, UINT64_MAX);
}

/*
 * Wakes sleeping subscribers if any said they sleep.  Called after every
 * commit.  The check is one side of a store-load pair (F3): our commit
 * then the sleepers count, against a sleeper's increment then its look at
 * the ring, and it needs a full fence between the two, which waits until
 * the commit's lines have left a reader's cache.  Only channels where a
 * subscriber may sleep pay for it (hdr.sleep_ok, sb_sleep_announce()):
 * once per commit it cost a streaming producer more than half its rate
 * (bench_throughput, 32 B claim/commit: 10.6 against 20.5 M msg/s
 * without; alone 68.6 against 119.4 M).
 */
static inline void wake_if_sleepers(struct shmbus_pub *pub)
{
	/* No edge: a subscriber's bit is made visible to us before it first
	 * sleeps, by its membarrier() (sb_sleep_announce()). */
	if (__builtin_expect(load_relaxed64(&pub->hdr->sleep_ok) == 0, 1))
		return;
	/* F3: pairs with F3 in sleep_wait(): either the sleeper's re-check
	 * sees our commit, or we see its sleepers count. */
	fence_seqcst();
	if (load_relaxed32(&pub->hdr->sleepers))
		sb_prod_wake(pub->ch);
}

/* Per-producer count for busstat, on the producer's own slot line. */
static void count_published(struct shmbus_pub *pub, uint64_t n)
{
	pub->published += n;
	if (pub->slot)
		store_relaxed64(&pub->slot->published, pub->published);
}

static void write_rec_hdr(struct shmbus_channel *ch, uint64_t pos,
			  uint64_t seq)
{
	struct shmbus_rec *r = rec_at(ch, pos);

	store_relaxed64(&r->seq, seq);
}

/* Stores commit word w at pos. */
static inline void commit_store(struct shmbus_rec *r, uint64_t w)
{
	/* R1: pairs with A1 in the subscriber's peek(): the sequence number
	 * and payload written before this store are visible to a reader that
	 * sees this commit word. */
	store_release64(&r->commit, w);
}

static inline void commit_word_at(struct shmbus_channel *ch, uint64_t pos,
				  uint64_t w)
{
	commit_store(rec_at(ch, pos), w);
}

/* The commit word of a message of `len` bytes claimed by claim_fast():
 * it lies in the room's lap, whose tag set_room() computed. */
static inline uint64_t fast_word(const struct shmbus_pub *pub, size_t len)
{
	return pub->tag_word | (uint64_t)SHMBUS_REC_MSG << SHMBUS_LEN_BITS |
	       len;
}

static uint64_t commit_rec(struct shmbus_channel *ch, uint64_t pos,
			   uint32_t type, uint32_t len)
{
	uint64_t w = commit_word(ch, pos, type, len);

	commit_word_at(ch, pos, w);
	return w;
}

/* The mailbox's payload, `words` 8-byte words (at most 5), stored
 * unrolled: the loop it replaces cost about 25 instructions a message on
 * the path every small message's latency takes.  Relaxed atomics: a
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
 * Single producer: posts the record just committed at `pos` (commit word
 * `w`, sequence number `seq`) to the mailbox, with its payload if it is a
 * small message.  We are the mailbox's only writer.  The payload is copied
 * from the ring, where we have just written it, whole words at a time
 * (the record is padded to 8 bytes, so they lie within it).
 */
static inline __attribute__((always_inline)) void
mbox_post(struct shmbus_pub *pub, uint64_t pos, uint64_t w, uint64_t seq,
	  const uint64_t *small, uint32_t small_len)
{
	struct shmbus_mbox *mb = pub->mbox;
	uint32_t len = word_len(w);

	store_relaxed64(&mb->mark, 0);
	/* R9: pairs with A9 in the subscriber's mbox_peek(): a reader whose
	 * copy saw any store below sees mark 0, or a later mark, when it looks
	 * at mark again after its copy. */
	fence_release();
	store_relaxed64(&mb->word, w);
	store_relaxed64(&mb->seq, seq);
	if (small) {
		mbox_put(mb, small, (uint32_t)(align8(small_len) / 8));
	} else if (word_type(w) == SHMBUS_REC_MSG &&
		   len <= SHMBUS_MBOX_INLINE) {
		const uint64_t *src = (const uint64_t *)(
			pub->data + (pos & pub->mask) + SHMBUS_REC_HDR);

		mbox_put(mb, src, (uint32_t)(align8(len) / 8));
	}
	/* R8: pairs with A8 in mbox_peek() and sb_sub_ready(): the record's
	 * commit in the ring (R1, before this) and the fields above are
	 * visible to a reader that sees this mark. */
	store_release64(&mb->mark, pos + 1);
}

/* Whether a subscriber waits on the mailbox (single producer): then every
 * commit is posted there.  No edge: a hint.  A post we skip because the
 * subscriber's bit is not visible yet leaves the record in the ring, where
 * the subscriber's looks find it (MBOX_RING_LOOK in subscribe.c). */
static inline bool mbox_wanted(const struct shmbus_pub *pub)
{
	return load_relaxed64(&pub->hdr->mbox_want) != 0;
}

/*
 * What every commit ends with: the claim released, the count, the mailbox
 * post of the last record committed (single producer, while a subscriber
 * waits there: mbox_wanted()) and the wake-up.
 * `small`: a single producer's message that the mailbox carries, given
 * by shmbus_publish()'s front as its payload's words in the ring and its
 * length, which it has at hand: the other cases compile out.
 * The post comes before the wake check's fence: the fence then waits for
 * the mailbox line, which costs a streaming producer a little, but a
 * subscriber waiting on the mailbox sees the message one fence sooner.
 */
static inline __attribute__((always_inline)) void
commit_done(struct shmbus_pub *pub, uint64_t n, uint64_t pos, uint64_t w,
	    uint64_t seq, const uint64_t *small, uint32_t small_len)
{
	if (small) {
		if (mbox_wanted(pub))
			mbox_post(pub, pos, w, seq, small, small_len);
	} else if (!pub->multi && mbox_wanted(pub)) {
		mbox_post(pub, pos, w, seq, NULL, 0);
	}
	if (!small)
		release_claim(pub);
	if (n)		/* an abort publishes nothing */
		count_published(pub, n);
	wake_if_sleepers(pub);
}

void sb_commit_rec(struct shmbus_channel *ch, uint64_t pos, uint32_t type,
		   uint32_t len)
{
	commit_rec(ch, pos, type, len);
}

void sb_seg_index(struct shmbus_channel *ch, uint64_t p, uint64_t q)
{
	seg_index(ch, p, q);
}

/* A claim of one record of `len` bytes at pos, reserved: its header,
 * the handle's note of it (with the commit word `w` its commit will
 * store), and the caller's pointer to its payload. */
static inline void claim_held(struct shmbus_pub *pub, uint64_t pos,
			      uint64_t seq, size_t len, uint64_t w, void **buf)
{
	struct shmbus_rec *r = pub_rec(pub, pos);

	store_relaxed64(&r->seq, seq);
	pub->claimed = true;
	pub->c_pos = pos;
	pub->c_seq = seq;
	pub->c_len = (uint32_t)len;
	pub->c_word = w;
	*buf = r + 1;
}

/* shmbus_claim(), whole: every check, and every way to reserve. */
static __attribute__((noinline)) int claim_any(struct shmbus_pub *pub,
					       size_t len, void **buf)
{
	uint64_t pos, seq;
	int rc;

	if (!pub || !buf)
		return -EINVAL;
	if (pub->claimed)
		return -EBUSY;
	if (len > pub->max_msg)
		return -EMSGSIZE;
	rc = reserve(pub, rec_size(len), 1, len, &pos, &seq);
	if (rc)
		return rc;
	claim_held(pub, pos, seq, len,
		   commit_word(pub->ch, pos, SHMBUS_REC_MSG, (uint32_t)len), buf);
	return 0;
}

/*
 * The claim every message of a streaming single producer makes: valid
 * arguments, and room (claim_fast(), set_room()).
 * It is answered in a small frame, and anything else goes to claim_any()
 * (which tries claim_fast() again, and fails it again), whose checks and
 * slow paths would otherwise make every claim pay for their registers.
 */
SHMBUS_EXPORT int shmbus_claim(shmbus_pub *pub, size_t len, void **buf)
{
	uint64_t p, need = rec_size(len);

	if (!pub || !buf || pub->claimed || len > pub->max_msg ||
	    !claim_fast(pub, need, &p))
		return claim_any(pub, len, buf);
	claim_held(pub, p, claim_done(pub, p, 0, p + need, 1, len, false, false),
		   len, fast_word(pub, len), buf);
	return 0;
}

SHMBUS_EXPORT int shmbus_commit(shmbus_pub *pub)
{
	struct shmbus_rec *r;
	uint64_t w;

	if (!pub || !pub->claimed)
		return -EINVAL;
	r = pub_rec(pub, pub->c_pos);
	w = pub->c_word;
	commit_store(r, w);
	pub->claimed = false;
	/* A single producer's small message: the post takes its payload
	 * from where the claim handed it out. */
	if (!pub->multi && pub->c_len <= SHMBUS_MBOX_INLINE)
		commit_done(pub, 1, pub->c_pos, w, pub->c_seq,
			    (const uint64_t *)(r + 1), pub->c_len);
	else
		commit_done(pub, 1, pub->c_pos, w, pub->c_seq, NULL, 0);
	return 0;
}

SHMBUS_EXPORT int shmbus_abort(shmbus_pub *pub)
{
	uint64_t w;

	if (!pub || !pub->claimed)
		return -EINVAL;
	/* A SKIP record keeps its length and sequence number: readers step
	 * over it without counting a loss.  It is posted, so that a
	 * subscriber waiting on the mailbox steps over it at once. */
	w = commit_rec(pub->ch, pub->c_pos, SHMBUS_REC_SKIP, pub->c_len);
	add_relaxed64(&pub->ch->hdr->aborts, 1);
	pub->claimed = false;
	commit_done(pub, 0, pub->c_pos, w, pub->c_seq, NULL, 0);
	return 0;
}

/* shmbus_publish(), whole: a claim, the copy and the commit. */
static __attribute__((noinline)) int
publish_any(struct shmbus_pub *pub, const void *data, size_t len)
{
	void *buf;
	int rc;

	if (len && !data)
		return -EINVAL;
	rc = shmbus_claim(pub, len, &buf);
	if (rc)
		return rc;
	sb_copy(buf, data, len);
	return shmbus_commit(pub);
}

/*
 * The publication every small message of a streaming single producer
 * makes: a message that the mailbox carries (SHMBUS_MBOX_INLINE bytes at
 * most), no claim outstanding, and room (only a single producer's
 * claim_fast() succeeds).  Claim, copy, commit and post in one frame,
 * with the same stores in the same order as shmbus_claim() +
 * shmbus_commit(), less the handle's note of the claim, which nothing
 * between them needs.  Every instruction here is on the way of a small
 * message's latency, and each costs about 0.2 ns of a round trip
 * (docs/performance.md, "Instructions on the way").
 */
SHMBUS_EXPORT int shmbus_publish(shmbus_pub *pub, const void *data,
				 size_t len)
{
	uint64_t p, need = rec_size(len), seq, w;
	struct shmbus_rec *r;

	if (!pub || !data || len > pub->small_max || pub->claimed ||
	    !claim_fast(pub, need, &p))
		return publish_any(pub, data, len);
	if (len > SHMBUS_MBOX_INLINE)	/* small_max is at most that */
		__builtin_unreachable();
	seq = claim_done(pub, p, 0, p + need, 1, len, false, false);
	r = pub_rec(pub, p);
	store_relaxed64(&r->seq, seq);
	sb_copy(r + 1, data, len);
	w = fast_word(pub, len);
	commit_store(r, w);
	commit_done(pub, 1, p, w, seq, (const uint64_t *)(r + 1),
		    (uint32_t)len);
	return 0;
}

static int iov_total(const struct iovec *iov, size_t n, size_t *total)
{
	size_t t = 0;

	for (size_t i = 0; i < n; i++) {
		if (iov[i].iov_len && !iov[i].iov_base)
			return -EINVAL;
		if (iov[i].iov_len > SHMBUS_MAX_MSG_LIMIT - t)
			return -EMSGSIZE;
		t += iov[i].iov_len;
	}
	*total = t;
	return 0;
}

SHMBUS_EXPORT int shmbus_publishv(shmbus_pub *pub, const struct iovec *iov,
				  int iovcnt)
{
	size_t total;
	uint8_t *buf;
	int rc;

	if (!pub || iovcnt < 0 || (iovcnt && !iov))
		return -EINVAL;
	rc = iov_total(iov, (size_t)iovcnt, &total);
	if (rc)
		return rc;
	rc = shmbus_claim(pub, total, (void **)&buf);
	if (rc)
		return rc;
	for (int i = 0; i < iovcnt; i++) {
		sb_copy(buf, iov[i].iov_base, iov[i].iov_len);
		buf += iov[i].iov_len;
	}
	return shmbus_commit(pub);
}

SHMBUS_EXPORT int shmbus_publish_batch(shmbus_pub *pub,
				       const struct iovec *msgs, size_t n)
{
	struct shmbus_channel *ch;
	uint64_t need = 0, nbytes = 0, pos, seq, first, last = 0, most, tag;
	int rc;

	if (!pub || (n && !msgs) || n > INT32_MAX)
		return -EINVAL;
	if (pub->claimed)
		return -EBUSY;
	ch = pub->ch;
	most = max_need(ch);
	for (size_t i = 0; i < n; i++) {
		if (msgs[i].iov_len > ch->max_msg)
			return -EMSGSIZE;
		if (msgs[i].iov_len && !msgs[i].iov_base)
			return -EINVAL;
		need += rec_size(msgs[i].iov_len);
		nbytes += msgs[i].iov_len;
		if (need > most)
			return -EMSGSIZE;
	}
	if (n == 0)
		return 0;
	rc = reserve(pub, need, n, nbytes, &pos, &seq);
	if (rc)
		return rc;
	first = pos;
	/* The records of one claim lie in one lap (wrap padding, if any,
	 * comes before them): one lap tag for all. */
	tag = commit_word(ch, first, SHMBUS_REC_MSG, 0);
	for (size_t i = 0; i < n; i++) {
		uint32_t len = (uint32_t)msgs[i].iov_len;
		uint64_t next = pos + rec_size(len);

		write_rec_hdr(ch, pos, seq + i);
		sb_copy(ch->data + (pos & ch->mask) + SHMBUS_REC_HDR,
			msgs[i].iov_base, len);
		/* The word after each record is the next record's commit,
		 * stored in the next round, and after the last record the
		 * word zeroed in claim_done(): all before the first record's
		 * commit makes any of them reachable, which is when the
		 * invariant of docs/design.md §3 has to hold; zeroing the
		 * inner words first as well would protect nothing. */
		if (i > 0)
			commit_word_at(ch, pos, tag | len);
		last = pos;
		pos = next;
	}
	/*
	 * The first record is committed last.  Readers reach the batch only
	 * through it (the index points past a claim, never into it), so they
	 * see the batch whole or not at all, and a subscriber that has caught
	 * up cannot follow the producer record by record through lines it is
	 * still writing, which makes both sides crawl.
	 * A producer that dies before this store leaves a claim that is
	 * padded over whole (repair.c).  R1: the release orders the other
	 * records' stores and commits before it, for a reader that sees it
	 * with A1.
	 */
	commit_word_at(ch, first, tag | (uint32_t)msgs[0].iov_len);
	/* Only the last record is posted: a subscriber that waited on the
	 * mailbox finds it ahead and reads the batch from the ring. */
	commit_done(pub, n, last, tag | (uint32_t)msgs[n - 1].iov_len,
		    seq + n - 1, NULL, 0);
	return (int)n;
}
