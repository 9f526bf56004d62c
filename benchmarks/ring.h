/* SPDX-License-Identifier: MIT */
/*
 * ring.h - a baseline: the least a ring of records with in-band commit
 * words can do between two processes.
 *
 * One producer, one consumer.  A record is a 16-byte header (the commit
 * word, a sequence number) and the payload, 8-byte aligned, as in shmbus.
 * As in shmbus, the word after a record is zeroed before the record
 * commits, so that stale bytes of an earlier lap are never taken for a
 * commit.  Nothing else: no wrap padding (a record that would not fit
 * before the end of the ring moves to the next lap behind a skip word),
 * no slots, no counters, no validation of anything read.  The commit word
 * is the record's sequence number plus one, which the consumer expects
 * exactly.
 *
 * What it measures is the cost of the record protocol itself on these two
 * cores: the lines a record moves through, the zeroed successor, the
 * frontier line that the consumer reads while the producer writes it.
 * shmbus's distance from it is everything else shmbus does.
 *
 * `fenced` adds the one thing every shmbus commit also does: the full
 * fence and the load of a sleepers word that make futex wake-ups safe
 * (F3 in docs/design.md).  `backoff` is how many pause instructions the
 * consumer waits after finding the ring empty before it looks again.
 *
 * br_send_post() and br_recv_mbox() add shmbus's mailbox (docs/design.md
 * §5), minimal too: after committing a record of up to 40 bytes, the
 * producer posts it to one line of its own, as a seqlock (mark 0, the
 * fields, then the mark); a consumer that waits takes it from there and
 * never reads the ring.  The record is still written and committed, and
 * the wake check's fence follows the post, as in shmbus.
 */
#ifndef SHMBUS_BENCH_RING_H
#define SHMBUS_BENCH_RING_H

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <x86intrin.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define BR_CAP (1u << 20)
#define BR_SKIP UINT64_MAX

#define BR_MBOX_WORDS 5	/* payload words a post carries: 40 bytes */

struct br_mbox {
	_Alignas(64) _Atomic uint64_t mark;	/* 0 while written; else pos + 1 */
	_Atomic uint64_t seq;			/* the record's, plus one */
	_Atomic uint64_t len;
	_Atomic uint64_t payload[BR_MBOX_WORDS];
};

struct br_ring {
	_Alignas(64) uint8_t data[BR_CAP];
	_Alignas(64) _Atomic uint64_t cursor;	/* the consumer's position */
	_Alignas(64) _Atomic uint32_t sleepers;	/* always 0 here */
	struct br_mbox mbox;
};

struct br_end {
	struct br_ring *r;
	uint64_t pos;		/* next record */
	uint64_t seq;		/* its sequence number */
	uint64_t limit;		/* producer: one lap past the consumer */
	int fenced;		/* producer: the wake check's fence */
	int backoff;		/* consumer: pauses after an empty look */
};

/* In each process, as shmbus does when it maps a channel: a forked child
 * does not inherit the page tables of a shared mapping, and first-touch
 * faults would otherwise land in the measurement. */
static inline void br_init(struct br_end *e, struct br_ring *r, int fenced,
			   int backoff)
{
	if (madvise(r, sizeof(*r), MADV_POPULATE_WRITE))
		for (size_t i = 0; i < sizeof(*r); i += 4096)
			(void)*(volatile uint8_t *)((uint8_t *)r + i);
	memset(e, 0, sizeof(*e));
	e->r = r;
	e->fenced = fenced;
	e->backoff = backoff;
}

static inline _Atomic uint64_t *br_word(struct br_ring *r, uint64_t pos)
{
	return (_Atomic uint64_t *)(r->data + (pos & (BR_CAP - 1)));
}

/* Writes and commits one record; returns its position. */
static inline uint64_t br_write(struct br_end *e, const void *msg, size_t len)
{
	struct br_ring *r = e->r;
	uint64_t need = 16 + ((len + 7) & ~(uint64_t)7), p = e->pos, q;

	if ((p & (BR_CAP - 1)) + need + 8 > BR_CAP) {
		/* The next lap's first word, then the skip word (release:
		 * pairs with the consumer's acquire load of it). */
		atomic_store_explicit(br_word(r, (p | (BR_CAP - 1)) + 1), 0,
				      memory_order_relaxed);
		atomic_store_explicit(br_word(r, p), BR_SKIP,
				      memory_order_release);
		p = (p | (BR_CAP - 1)) + 1;
	}
	q = p + need;
	/* Block: never more than a lap ahead of the consumer.  Acquire:
	 * pairs with the consumer's release store of its cursor. */
	while (q + 8 > e->limit) {
		e->limit = atomic_load_explicit(&r->cursor,
						memory_order_acquire) + BR_CAP;
		if (q + 8 > e->limit)
			_mm_pause();
	}
	atomic_store_explicit(br_word(r, q), 0, memory_order_relaxed);
	atomic_store_explicit(br_word(r, p + 8), e->seq, memory_order_relaxed);
	memcpy(r->data + (p & (BR_CAP - 1)) + 16, msg, len);
	/* Release: pairs with the consumer's acquire load of the word. */
	atomic_store_explicit(br_word(r, p), ++e->seq, memory_order_release);
	e->pos = q;
	return p;
}

static inline void br_wake_check(struct br_end *e)
{
	if (e->fenced) {
		/* As shmbus's wake check: a full fence, then one load. */
		atomic_thread_fence(memory_order_seq_cst);
		if (atomic_load_explicit(&e->r->sleepers, memory_order_relaxed))
			__builtin_trap();
	}
}

static inline void br_send(struct br_end *e, const void *msg, size_t len)
{
	br_write(e, msg, len);
	br_wake_check(e);
}

/* br_send() with the record posted to the mailbox between its commit and
 * the wake check, as shmbus does.  len <= 40. */
static inline void br_send_post(struct br_end *e, const void *msg,
				size_t len)
{
	struct br_mbox *mb = &e->r->mbox;
	uint64_t w[BR_MBOX_WORDS] = { 0 }, p = br_write(e, msg, len);

	memcpy(w, msg, len);
	atomic_store_explicit(&mb->mark, 0, memory_order_relaxed);
	/* Release: pairs with the consumer's acquire fence before its second
	 * look at mark: a copy that saw any store below sees mark changed. */
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&mb->seq, e->seq, memory_order_relaxed);
	atomic_store_explicit(&mb->len, len, memory_order_relaxed);
	for (int i = 0; i < BR_MBOX_WORDS; i++)
		atomic_store_explicit(&mb->payload[i], w[i],
				      memory_order_relaxed);
	/* Release: pairs with the consumer's acquire load of mark. */
	atomic_store_explicit(&mb->mark, p + 1, memory_order_release);
	br_wake_check(e);
}

/* Waits for the next record; copies its `len` payload bytes to dst unless
 * dst is NULL; publishes the cursor. */
static inline void br_recv(struct br_end *e, void *dst, size_t len)
{
	struct br_ring *r = e->r;
	uint64_t p = e->pos, w;

	for (;;) {
		/* Acquire: pairs with the producer's release of the word. */
		w = atomic_load_explicit(br_word(r, p), memory_order_acquire);
		if (w == e->seq + 1)
			break;
		if (w == BR_SKIP) {
			p = (p | (BR_CAP - 1)) + 1;
			continue;
		}
		for (int i = 0; i <= e->backoff; i++)
			_mm_pause();
	}
	(void)atomic_load_explicit(br_word(r, p + 8), memory_order_relaxed);
	if (dst)
		memcpy(dst, r->data + (p & (BR_CAP - 1)) + 16, len);
	e->seq++;
	e->pos = p + 16 + ((len + 7) & ~(uint64_t)7);
	/* Release: our reads of the record precede the producer's reuse. */
	atomic_store_explicit(&r->cursor, e->pos, memory_order_release);
}

/* Waits for the next record on the mailbox alone; copies its payload to
 * dst unless dst is NULL; publishes the cursor.  len <= 40. */
static inline void br_recv_mbox(struct br_end *e, void *dst, size_t len)
{
	struct br_mbox *mb = &e->r->mbox;
	uint64_t w[BR_MBOX_WORDS], m;

	for (;;) {
		/* Acquire: pairs with the producer's release of mark. */
		m = atomic_load_explicit(&mb->mark, memory_order_acquire);
		if (m != 0 && atomic_load_explicit(&mb->seq,
						   memory_order_relaxed) ==
				      e->seq + 1) {
			uint64_t l = atomic_load_explicit(&mb->len,
							  memory_order_relaxed);

			for (int i = 0; i < BR_MBOX_WORDS; i++)
				w[i] = atomic_load_explicit(
					&mb->payload[i], memory_order_relaxed);
			/* Acquire: pairs with the producer's release fence
			 * after its mark = 0. */
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&mb->mark,
						 memory_order_relaxed) == m &&
			    l == len)
				break;
		}
		for (int i = 0; i <= e->backoff; i++)
			_mm_pause();
	}
	if (dst)
		memcpy(dst, w, len);
	e->seq++;
	e->pos = m - 1 + 16 + ((len + 7) & ~(uint64_t)7);
	/* Release: our reads precede the producer's reuse of the record. */
	atomic_store_explicit(&e->r->cursor, e->pos, memory_order_release);
}

#endif
