/* SPDX-License-Identifier: MIT */
/*
 * shmbus/quarantine.h - the file in which a returning primary keeps the
 * records it cut off its ring (docs/failover.md).
 *
 * When a host that was primary comes back behind a newer primary, the
 * records it wrote past the point where the new primary's epoch began
 * were never acknowledged at a synchronous level (else the new primary
 * would hold them) and are not on the new primary.  The host cuts them
 * off its ring and journal, and first writes them, unchanged, to
 *
 *   STATE_DIR/quarantine/CHANNEL.EPOCH.FROM-TO.q   (decimal numbers)
 *
 * a header page, then the ring's bytes of positions [from, to): records
 * exactly as the ring held them (commit word with its lap tag, seq,
 * payload), so that position p is at file offset
 * SHMBUS_QUAR_HDR + (p - from).  `shmbusctl quarantine FILE` lists them.
 * All integers are little-endian.
 */
#ifndef SHMBUS_QUARANTINE_H
#define SHMBUS_QUARANTINE_H

#include <stdint.h>

#include "static_assert.h"

#define SHMBUS_QUAR_MAGIC	UINT64_C(0x3152415551535553) /* "SUSQUAR1" */
#define SHMBUS_QUAR_VERSION	1u
#define SHMBUS_QUAR_HDR		4096u

struct shmbus_quar_hdr {
	uint64_t magic;		/* SHMBUS_QUAR_MAGIC */
	uint32_t version;	/* SHMBUS_QUAR_VERSION */
	uint32_t hdr_size;	/* SHMBUS_QUAR_HDR */
	uint64_t from, to;	/* the ring positions kept */
	uint64_t cut;		/* where the ring was cut (<= from: below
				 * from, the ring no longer held them) */
	uint64_t epoch;		/* the epoch this host wrote them in */
	uint64_t new_epoch;	/* the epoch of the primary that has the
				 * positions from `cut` on */
	uint64_t capacity;	/* the ring's: the lap tags' meaning */
	uint32_t max_msg;
	uint32_t flags;		/* SHMBUS_F_* */
	int64_t time_ns;	/* CLOCK_REALTIME of the cut */
	uint32_t data_crc;	/* CRC-32C of the bytes after the header */
	uint32_t reserved;
	char channel[256];
	uint8_t pad[3744];
	uint32_t hdr_crc;	/* CRC-32C of the header before it */
	uint32_t pad2;
};

SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_quar_hdr) == SHMBUS_QUAR_HDR,
		     "the quarantine header is one page");

#endif
