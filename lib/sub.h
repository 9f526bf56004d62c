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

/*
 * Where a subscriber looks for its next message (subscribe.c, "Modes").
 * A multi-producer channel has no mailbox: its subscribers stay in RING.
 */
enum sb_sub_mode {
	SB_SUB_RING,	/* reads the ring; asks for no posts */
	SB_SUB_MBOX,	/* caught up: waits on the mailbox, with its bit in
			 * hdr.mbox_want set so that commits are posted */
	SB_SUB_CATCHUP,	/* the mailbox named records past ours: reads the
			 * ring up to ring_end, then waits on it again */
};

/* A poll that reads a long run of records publishes its cursor each time
 * it has read 1/32 of the ring (2^-5), not only when it returns: a
 * block-policy producer waiting for room gets it while the subscriber
 * reads, instead of stalling until the whole poll is over and then
 * restarting with the subscriber right behind it.  A stream of fronts
 * publishes its counters as often. */
#define CURSOR_EVERY_SHIFT 5

struct shmbus_sub {
	/* The channel, and copies of its validated geometry. */
	struct shmbus_channel *ch;
	struct shmbus_sub_slot *slot;
	const uint8_t *data;
	const struct shmbus_mbox *mbox;
	uint64_t mask;
	uint64_t cap;
	uint32_t cap_log2;
	uint32_t max_msg;
	uint32_t mb_max;	/* the longest message the mailbox carries
				 * for us: min(SHMBUS_MBOX_INLINE, max_msg) */
	bool overwrite;
	bool careful;		/* overwrite or ack_only: peek_ring() leaves
				 * every record to peek() */
	bool ack_only;		/* SHMBUS_SEE_ACKNOWLEDGED */
	uint64_t ack_lim;	/* ack_only: the watermark last seen */
	bool has_mbox;		/* a single-producer channel */

	/* Where it reads: the mode, and its position. */
	enum sb_sub_mode mode;
	uint32_t quiet;		/* empty looks in this mode */
	uint32_t run;		/* MBOX: empty looks since a message was
				 * last delivered... */
	uint64_t run_from;	/* ...when delivered was this */
	uint32_t ahead;		/* MBOX: catch-ups in a row during which
				 * the producer posted again */
	uint64_t win_from;	/* RING: messages when the window of empty
				 * looks began */
	uint64_t want_bit;	/* our bit in hdr.mbox_want */
	uint64_t ring_end;	/* CATCHUP: the newest post's position */
	uint64_t pos;		/* next position to read (authoritative) */
	bool fresh;		/* pos came from head: see trusted() */
	uint32_t empty;		/* zero words seen: see quiet_empty() */

	/* Sequence numbers and counts. */
	uint64_t next_seq;	/* expected sequence number */
	bool have_seq;		/* next_seq is known */
	bool resynced;		/* lapped, or past a GAP record, since
				 * the last message */
	uint64_t pending_lost;	/* lost just before the next message */
	uint64_t delivered;
	uint64_t lost;
	uint64_t published;	/* pos when the counters were last stored
				 * in the slot (publish_cursor()); a
				 * front's take stores slot->pos alone */
	uint64_t cursor_every;	/* cap >> CURSOR_EVERY_SHIFT, kept: the
				 * fronts' check is 2 instructions fewer
				 * (make bench-insn) */

	/* How it waits (wait.c). */
	enum shmbus_wait wait;
	uint32_t spin_ns;
	bool nap;		/* SLEEP without sb_sleep_announce(): sleeps
				 * in short naps */

	/* Direct mode, multi producer: an open claim it has stopped at
	 * (subscribe.c, open_claim_seen()). */
	uint64_t stall_pos;
	uint32_t stall_looks;
	int64_t stall_ns;

	/* Copies handed to the caller. */
	uint8_t *buf;		/* overwrite policy: a message's copy */
	uint64_t mbuf[SHMBUS_MBOX_INLINE / 8];	/* a mailbox message's copy */
	/* The process that opened it (0: shmbusd's kept cursor, closed
	 * whoever closes it): a fork's copy closes as a copy. */
	uint32_t opener;
	/* A fork's copy (fork.c): refuses every use with -EPERM. */
	bool forked;
	struct sb_forkable fork;
};

#endif /* SHMBUS_SUB_H */
