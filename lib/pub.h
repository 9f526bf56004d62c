/* SPDX-License-Identifier: MIT */
/*
 * pub.h - a publisher's private state, shared by publish.c (claiming and
 * committing) and producer.c (opening and closing).  Not part of the API.
 */
#ifndef SHMBUS_PUB_H
#define SHMBUS_PUB_H

#include <stdbool.h>
#include <stdint.h>

#include "channel.h"

struct shmbus_pub {
	struct shmbus_channel *ch;
	struct shmbus_prod_slot *slot;
	/* Copies of the channel's validated geometry, for the fast path. */
	struct shmbus_hdr *hdr;
	struct shmbus_mbox *mbox;	/* SP: posted after every commit */
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
	uint64_t room;		/* SP: what claim_fast() may hand out */
	uint64_t limit;		/* block: claims must end 8 bytes below */
	uint64_t seq;		/* SP: next sequence number */
	int64_t timeout_ns;
	uint64_t bytes;		/* SP: payload bytes published */
	int64_t reap_ns;	/* held back: next look for gone processes */
	uint64_t published;	/* messages this handle committed */
	uint32_t small_max;	/* min(SHMBUS_MBOX_INLINE, max_msg) */
	/* the outstanding claim */
	bool claimed;
	uint32_t c_len;
	uint64_t c_pos;
	uint64_t c_seq;
	uint64_t c_word;	/* the commit word shmbus_commit() stores */
};

#endif /* SHMBUS_PUB_H */
