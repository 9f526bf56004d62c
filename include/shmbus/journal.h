/* SPDX-License-Identifier: MIT */
/*
 * shmbus/journal.h - the on-disk format of a channel's journal
 * (docs/journal.md).
 *
 * A journal is a directory of segment files, one per SEG bytes of
 * positions, named by the first position they cover:
 *
 *   JOURNAL_DIR/CHANNEL/%016llx.seg   (base, a multiple of seg_size)
 *
 * A segment is a header page, then the ring's bytes at the same
 * positions: position p lives at file offset
 *
 *   SHMBUS_JSEG_HDR + (p - base)
 *
 * so finding a position is arithmetic.  Records are the ring's records
 * (commit word, seq, payload) with one change: the commit word's lap tag
 * (the high 32 bits, which the position implies) holds a CRC-32C instead:
 *
 *   word = crc << 32 | type << 29 | length
 *   crc  = CRC-32C(position as 8 bytes little-endian, the word's low 32
 *                  bits, then for MSG and SKIP the seq and the payload)
 *
 * The position in the CRC means a record can only be valid where it was
 * written: bytes left over from an earlier use of a file never pass.
 * Space not yet written is zero, which is never a valid record (a zero
 * word would need crc == 0, and a seq after the previous one).  PAD
 * records keep their ring shape (8 bytes of word, the rest unwritten);
 * a range the journal never had (it was lapped on an overwrite channel,
 * or started late) is a segment's `start` past its base, or GAP records
 * written over it, as the ring's own GAP records are copied: the shape
 * of PAD records, so that a reader tells the messages the journal lost
 * from sequence numbers that no message took (a claim whose producer
 * died, padded).  Format 1, still read, wrote PAD records there.
 *
 * All integers are little-endian (the hosts shmbus runs on).
 */
#ifndef SHMBUS_JOURNAL_H
#define SHMBUS_JOURNAL_H

#include <stdint.h>

#include "static_assert.h"

#define SHMBUS_JSEG_MAGIC	UINT64_C(0x314c4e4a53554253) /* "SBUSJNL1" */
#define SHMBUS_JSEG_VERSION	2u	/* written; 1 is read too */
#define SHMBUS_JREC_GAP		3u	/* as SHMBUS_REC_GAP (layout.h) */
#define SHMBUS_JSEG_HDR		4096u	/* the header page */
#define SHMBUS_JSEG_MIN		(UINT64_C(64) << 10)
#define SHMBUS_JSEG_MAX		(UINT64_C(1) << 30)

struct shmbus_jseg_hdr {
	uint64_t magic;		/* SHMBUS_JSEG_MAGIC */
	uint32_t version;	/* SHMBUS_JSEG_VERSION */
	uint32_t hdr_size;	/* SHMBUS_JSEG_HDR */
	uint64_t base;		/* the first position it covers: a multiple
				 * of seg_size */
	uint64_t seg_size;	/* positions it covers: a power of two, at
				 * least the ring's capacity */
	uint64_t start;		/* the first position it holds, in
				 * [base, base + seg_size): base, unless the
				 * journal began (or resumed past a gap) here */
	uint64_t capacity;	/* the ring's (records never cross a
				 * multiple of it) */
	uint32_t max_msg;	/* the ring's */
	uint32_t flags;		/* the ring's SHMBUS_F_* */
	uint64_t epoch;		/* the replication epoch at its start (0:
				 * not replicated) */
	int64_t create_ns;	/* CLOCK_REALTIME when it was made */
	char channel[64];	/* the channel's name, NUL-terminated */
	uint64_t prev_seq;	/* with SHMBUS_JSEG_F_PREV_SEQ: the last
				 * sequence number the journal held before
				 * this segment, or with F_AFTER_GAP the
				 * last the gap took, when known
				 * (UINT64_MAX: none) */
	uint32_t hflags;	/* SHMBUS_JSEG_F_* */
	uint8_t reserved[136];	/* zero */
	uint32_t crc;		/* CRC-32C of the bytes above */
};

/*
 * hflags.  Headers written before prev_seq was recorded have zeros here
 * (the bytes were reserved), so a reader that finds the flag clear does
 * not know the sequence number before the segment.  The format version
 * stays 2: releases that do not know the field still read these headers
 * (their checksum covers the reserved bytes as it covers these).
 * The sequence number before a segment is what a ring made again after
 * a reboot continues from when no message is left in the newest
 * segments (docs/journal.md, Recovery).
 */
#define SHMBUS_JSEG_F_PREV_SEQ	1u	/* prev_seq is recorded */
/* The journal marks the gaps it leaves between segments: a segment made
 * right after one (the ring no longer held what the journal lacked) says
 * so with F_AFTER_GAP, so that segments missing before one that carries
 * F_MARKS_GAPS and not F_AFTER_GAP were removed by someone else (damage,
 * docs/journal.md).  Headers of releases before these flags mark
 * nothing, and nothing is judged by them. */
#define SHMBUS_JSEG_F_MARKS_GAPS	2u
#define SHMBUS_JSEG_F_AFTER_GAP	4u
#define SHMBUS_JSEG_F_ALL	(SHMBUS_JSEG_F_PREV_SEQ | \
				 SHMBUS_JSEG_F_MARKS_GAPS | \
				 SHMBUS_JSEG_F_AFTER_GAP)
/* prev_seq: a sequence number below this, or UINT64_MAX (none). */
#define SHMBUS_JSEG_SEQ_LIMIT	(UINT64_C(1) << 62)

SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_jseg_hdr) == 288, "jseg hdr size");
SHMBUS_STATIC_ASSERT(__builtin_offsetof(struct shmbus_jseg_hdr,
					prev_seq) == 136,
		     "prev_seq where the reserved bytes began");

/*
 * The time index, beside each segment (%016llx.tix): entries of
 * { realtime_ns, position, crc } appended as the journal writes, at most
 * one per SHMBUS_JTIX_EVERY bytes of positions.  The time is when the
 * journal wrote the record (records carry none), as a running maximum,
 * so entries are monotone in both fields.  An entry whose crc does not
 * match is ignored, with every one after it: the index is a cache, and
 * lookups fall back to the last good entry before.
 */
#define SHMBUS_JTIX_EVERY	(UINT64_C(64) << 10)

struct shmbus_jtix {
	int64_t ns;
	uint64_t pos;
	uint32_t crc;		/* CRC-32C of ns and pos */
	uint32_t pad;
};

#endif
