/* SPDX-License-Identifier: MIT */
/*
 * atomic.h - the few named memory operations shmbus uses on shared memory.
 *
 * Every field of a channel is a plain fixed-width integer in the layout
 * (include/shmbus/layout.h); these helpers apply C11 atomics to it.  Each
 * call site that uses an ordering stronger than relaxed says in a comment
 * which operation it pairs with, by label (R1..., A1... in docs/design.md).
 */
#ifndef SHMBUS_ATOMIC_H
#define SHMBUS_ATOMIC_H

#include <stdatomic.h>
#include <stdint.h>

#define SB_A64(p) ((_Atomic uint64_t *)(p))
#define SB_A32(p) ((_Atomic uint32_t *)(p))

static inline uint64_t load_relaxed64(const uint64_t *p)
{
	return atomic_load_explicit(SB_A64(p), memory_order_relaxed);
}

static inline uint64_t load_acquire64(const uint64_t *p)
{
	return atomic_load_explicit(SB_A64(p), memory_order_acquire);
}

static inline uint64_t load_seqcst64(const uint64_t *p)
{
	return atomic_load_explicit(SB_A64(p), memory_order_seq_cst);
}

static inline void store_relaxed64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit(SB_A64(p), v, memory_order_relaxed);
}

static inline void store_release64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit(SB_A64(p), v, memory_order_release);
}

/*
 * Compare-and-swap.  The name says its strength and its order on success;
 * on failure (the value is reloaded into *expected) the order is acquire
 * for the 64-bit ones and relaxed for the 32-bit one.  Weak: may fail
 * spuriously, for a CAS in a loop that recomputes from *expected anyway.
 */
static inline int cas_weak_seqcst64(uint64_t *p, uint64_t *expected,
				    uint64_t v)
{
	return atomic_compare_exchange_weak_explicit(SB_A64(p), expected, v,
						     memory_order_seq_cst,
						     memory_order_acquire);
}

/* Relaxed both ways: for a monotone maximum that orders nothing. */
static inline int cas_weak_relaxed64(uint64_t *p, uint64_t *expected,
				     uint64_t v)
{
	return atomic_compare_exchange_weak_explicit(SB_A64(p), expected, v,
						     memory_order_relaxed,
						     memory_order_relaxed);
}

/* Strong: a slot takeover must not fail spuriously and retry on a value
 * it has not re-validated. */
static inline int cas_strong_seqcst64(uint64_t *p, uint64_t *expected,
				      uint64_t v)
{
	return atomic_compare_exchange_strong_explicit(SB_A64(p), expected, v,
						       memory_order_seq_cst,
						       memory_order_acquire);
}

static inline void store_seqcst64(uint64_t *p, uint64_t v)
{
	atomic_store_explicit(SB_A64(p), v, memory_order_seq_cst);
}

static inline uint64_t add_relaxed64(uint64_t *p, uint64_t v)
{
	return atomic_fetch_add_explicit(SB_A64(p), v, memory_order_relaxed);
}

static inline uint32_t load_relaxed32(const uint32_t *p)
{
	return atomic_load_explicit(SB_A32(p), memory_order_relaxed);
}

static inline uint32_t load_acquire32(const uint32_t *p)
{
	return atomic_load_explicit(SB_A32(p), memory_order_acquire);
}

static inline uint32_t load_seqcst32(const uint32_t *p)
{
	return atomic_load_explicit(SB_A32(p), memory_order_seq_cst);
}

static inline void store_relaxed32(uint32_t *p, uint32_t v)
{
	atomic_store_explicit(SB_A32(p), v, memory_order_relaxed);
}

static inline void store_release32(uint32_t *p, uint32_t v)
{
	atomic_store_explicit(SB_A32(p), v, memory_order_release);
}

static inline void store_seqcst32(uint32_t *p, uint32_t v)
{
	atomic_store_explicit(SB_A32(p), v, memory_order_seq_cst);
}

static inline int cas_strong_seqcst32(uint32_t *p, uint32_t *expected,
				      uint32_t v)
{
	return atomic_compare_exchange_strong_explicit(SB_A32(p), expected, v,
						       memory_order_seq_cst,
						       memory_order_relaxed);
}

/* Exchange: exactly one of several callers gets a non-zero old value. */
static inline uint32_t xchg_relaxed32(uint32_t *p, uint32_t v)
{
	return atomic_exchange_explicit(SB_A32(p), v, memory_order_relaxed);
}

static inline uint32_t add_seqcst32(uint32_t *p, uint32_t v)
{
	return atomic_fetch_add_explicit(SB_A32(p), v, memory_order_seq_cst);
}

static inline uint32_t sub_seqcst32(uint32_t *p, uint32_t v)
{
	return atomic_fetch_sub_explicit(SB_A32(p), v, memory_order_seq_cst);
}

/* Setting and clearing bits of a word that several processes update. */
static inline uint64_t or_relaxed64(uint64_t *p, uint64_t v)
{
	return atomic_fetch_or_explicit(SB_A64(p), v, memory_order_relaxed);
}

static inline uint64_t and_relaxed64(uint64_t *p, uint64_t v)
{
	return atomic_fetch_and_explicit(SB_A64(p), v, memory_order_relaxed);
}

static inline uint32_t or_relaxed32(uint32_t *p, uint32_t v)
{
	return atomic_fetch_or_explicit(SB_A32(p), v, memory_order_relaxed);
}

static inline uint32_t and_relaxed32(uint32_t *p, uint32_t v)
{
	return atomic_fetch_and_explicit(SB_A32(p), v, memory_order_relaxed);
}

static inline void fence_acquire(void)
{
	atomic_thread_fence(memory_order_acquire);
}

static inline void fence_release(void)
{
	atomic_thread_fence(memory_order_release);
}

static inline void fence_seqcst(void)
{
	atomic_thread_fence(memory_order_seq_cst);
}

/* Orders nothing between CPUs: keeps the compiler from moving memory
 * accesses across it (for a fence whose CPU half another thread's
 * membarrier() supplies). */
static inline void fence_compiler(void)
{
	atomic_signal_fence(memory_order_seq_cst);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield" ::: "memory");
#else
	__asm__ __volatile__("" ::: "memory");
#endif
}

#endif /* SHMBUS_ATOMIC_H */
