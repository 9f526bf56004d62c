/* SPDX-License-Identifier: MIT */
/*
 * copy.h - copying a message's payload into the ring.
 *
 * A small message is copied with a few fixed-size loads and stores,
 * inlined, instead of a call into the C library's memcpy.  The call and its
 * size dispatch cost about 5 ns per message here, which is most of a
 * 32-byte message's copy: in a batch of 32 small messages handed over to
 * a waiting subscriber it was 130-160 ns of about 1100
 * (docs/performance.md, "hand-over").  Larger messages go to memcpy,
 * whose bulk loops are better than anything written here.
 */
#ifndef SHMBUS_COPY_H
#define SHMBUS_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Messages up to this many bytes are copied inline. */
#define SB_COPY_INLINE 64

/*
 * Copies n bytes, at most SB_COPY_INLINE, from s to d; the two do not
 * overlap.  Lengths between two fixed sizes are covered by two copies of
 * the smaller one, the second ending at the last byte (they overlap each
 * other, never anything outside [d, d + n)).  Calls nothing, so a caller
 * that knows its length is small (a front of publish or read) keeps a
 * frame without saved registers.
 */
static inline __attribute__((always_inline)) void
sb_copy_small(void *restrict dst, const void *restrict src, size_t n)
{
	uint8_t *d = dst;
	const uint8_t *s = src;

	if (n > 32) {
		__builtin_memcpy(d, s, 16);
		__builtin_memcpy(d + 16, s + 16, 16);
		__builtin_memcpy(d + n - 32, s + n - 32, 16);
		__builtin_memcpy(d + n - 16, s + n - 16, 16);
	} else if (n >= 16) {
		__builtin_memcpy(d, s, 16);
		__builtin_memcpy(d + n - 16, s + n - 16, 16);
	} else if (n >= 8) {
		__builtin_memcpy(d, s, 8);
		__builtin_memcpy(d + n - 8, s + n - 8, 8);
	} else if (n >= 4) {
		__builtin_memcpy(d, s, 4);
		__builtin_memcpy(d + n - 4, s + n - 4, 4);
	} else if (n > 0) {
		d[0] = s[0];
		d[n / 2] = s[n / 2];
		d[n - 1] = s[n - 1];
	}
}

/* Copies n bytes from s to d; the two do not overlap. */
static inline __attribute__((always_inline)) void
sb_copy(void *restrict dst, const void *restrict src, size_t n)
{
	if (n > SB_COPY_INLINE)
		memcpy(dst, src, n);
	else
		sb_copy_small(dst, src, n);
}

#endif
