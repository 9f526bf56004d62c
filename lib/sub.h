/* SPDX-License-Identifier: MIT */
/*
 * sub.h - a subscriber's private state, shared by subscribe.c (reading),
 * subscriber.c (opening and closing) and wait.c (waiting).  Not part of
 * the API.
 */
#ifndef SHMBUS_SUB_H
#define SHMBUS_SUB_H

#include <stdbool.h>
#include <stdint.h>

#include "channel.h"

struct shmbus_sub {
	struct shmbus_channel *ch;
	struct shmbus_sub_slot *slot;
	/* Copies of the channel's validated geometry, for peek_fast(). */
	const uint8_t *data;
	uint64_t mask;
	uint64_t cap;
	uint32_t cap_log2;
	uint32_t max_msg;
	bool overwrite;
	bool use_mbox;		/* a single-producer channel: it has one */
	bool in_mbox;		/* caught up: waiting on the mailbox */
	uint32_t mb_quiet;	/* empty looks at it: see MBOX_RING_LOOK */
	uint32_t mb_max;	/* the longest message it carries for us:
				 * min(SHMBUS_MBOX_INLINE, max_msg) */
	uint64_t ring_end;	/* out of it: read the ring up to here */
	const struct shmbus_mbox *mbox;
	uint64_t pos;		/* next position to read (authoritative) */
	uint64_t published;	/* the value last stored in slot->pos */
	uint64_t next_seq;	/* expected sequence number */
	uint64_t delivered;
	uint64_t lost;
	uint64_t pending_lost;	/* lost just before the next message */
	bool have_seq;		/* next_seq is known */
	bool resynced;		/* lapped since the last message */
	bool fresh;		/* pos came from head: see trusted() */
	uint32_t empty;		/* zero words seen: see quiet_empty() */
	enum shmbus_wait wait;
	uint32_t spin_ns;
	uint8_t *buf;		/* overwrite policy: a message's copy */
	uint64_t mbuf[SHMBUS_MBOX_INLINE / 8];	/* a mailbox message's copy */
};

#endif /* SHMBUS_SUB_H */
