/* SPDX-License-Identifier: MIT */
/*
 * shmbus/group.h - the byte layout of a consumer group's file.
 *
 * A group lives in its own file next to its channel's, named
 * ".CHANNEL@GROUP.group", mapped read-write by its members (and shmbusd).
 * It holds where the group is in the channel and which member holds
 * what; the messages stay in the channel's ring.  The group also owns one
 * of the channel's subscriber slots (owner state SHMBUS_SLOT_GROUP), whose
 * cursor is the group's floor: that is how a block-policy channel holds
 * its producers back for the group.  docs/groups.md describes the
 * protocol; every value read here is untrusted input.
 *
 *   +--------------------------------------+
 *   | struct shmbus_group_hdr  (1 KiB)      |  identity, claim word,
 *   |                                       |  floor word, counters
 *   | struct shmbus_member [64]  (128 B)    |
 *   | struct shmbus_lane   [64]  (64 B)     |  keyed, single_active
 *   | struct shmbus_lease_slot [window] (64 B)  |  shared
 *   +--------------------------------------+
 */
#ifndef SHMBUS_GROUP_LAYOUT_H
#define SHMBUS_GROUP_LAYOUT_H

#include <stdint.h>

#include "static_assert.h"

#define SHMBUS_GROUP_MAGIC	UINT64_C(0x3150524742534253) /* "SBSBGRP1" */
#define SHMBUS_GROUP_VERSION	1u
#define SHMBUS_GROUP_FILE_FMT	".%s@%s.group"
/* The channel's name and the group's together, at most (the file's name,
 * and ".PID.tmp" after it while it is made, within NAME_MAX = 255). */
#define SHMBUS_GROUP_NAMES_MAX	235u

#define SHMBUS_GROUP_MEMBERS	64u
#define SHMBUS_GROUP_LANES	64u
#define SHMBUS_GROUP_MAX_WINDOW	65536u

/* hdr.mode */
#define SHMBUS_GMODE_SHARED	0u
#define SHMBUS_GMODE_KEYED	1u
#define SHMBUS_GMODE_SINGLE	2u

/*
 * A lease slot's or a lane's control word, compared and swapped together
 * with its deadline (16 bytes):
 *   [ gen : 32 | deliveries : 16 | member : 8 | state : 8 ]
 * gen changes on every change of hands, so a member's late ack (or a
 * repair's stale view) never matches again.
 */
#define SHMBUS_LEASE_FREE	0u	/* never filled */
#define SHMBUS_LEASE_LEASED	1u	/* held by `member` until deadline */
#define SHMBUS_LEASE_ACKED	2u	/* done: the floor may pass it */
#define SHMBUS_LEASE_AVAILABLE	3u	/* to deliver again (not before
					 * not_before) */
#define SHMBUS_LEASE_DEAD	4u	/* dead-lettered, or its bytes were
					 * overwritten: the floor may pass */
#define SHMBUS_LEASE_POISON	5u	/* delivered max_deliveries times:
					 * waits for its copy to the
					 * dead-letter channel */

#define SHMBUS_LANE_FREE	0u	/* nobody's: to assign */
#define SHMBUS_LANE_OWNED	1u	/* `member` delivers its records */
#define SHMBUS_LANE_REVOKING	2u	/* to move: its owner delivers no new
					 * record and lets go once it has
					 * acknowledged what it holds */
#define SHMBUS_LANE_POISON	3u	/* its oldest record is to be
					 * dead-lettered */

#define SHMBUS_NO_MEMBER	0xffu

struct shmbus_member {
	uint64_t owner;		/* SHMBUS_SLOT_* | pid << 32 */
	uint64_t gen;		/* bumped on every join */
	uint64_t intent_seq;	/* shared: the claim it is trying to win
				 * (UINT64_MAX: none) */
	uint64_t intent_pos;	/* ... and where that claim starts */
	uint64_t delivered;	/* messages delivered to it */
	uint64_t acked;		/* acks that succeeded */
	uint64_t stale;		/* acks refused: the lease was taken back */
	uint64_t order;		/* join order (single_active's queue) */
	int64_t joined_ns;	/* CLOCK_REALTIME */
	char name[32];
	char comm[16];
	int64_t looked_ns;	/* CLOCK_MONOTONIC: its last poll (lanes are
				 * given only to members that look) */
};

struct shmbus_lease_slot {
	uint64_t ctl;		/* with deadline: one 16-byte CAS */
	int64_t deadline;	/* CLOCK_MONOTONIC ns */
	uint64_t seq;		/* the claim it holds; stored last */
	uint64_t start;		/* its range of ring positions */
	uint64_t end;
	uint64_t first_seq;	/* the first message's sequence number */
	uint64_t msgs;		/* messages in the range */
	int64_t not_before;	/* AVAILABLE: not delivered again before */
};

struct shmbus_lane {
	uint64_t ctl;		/* with acked: one 16-byte CAS; deliveries
				 * counts those of the record at acked */
	uint64_t acked;		/* every record of the lane below it is
				 * acknowledged: the next owner starts here;
				 * only grows */
	int64_t deadline;	/* CLOCK_MONOTONIC ns: while it holds records
				 * unacknowledged, the owner acks or extends
				 * before it, or loses the lane */
	uint64_t next;		/* its owners' delivery cursor, highest */
	uint64_t moves;		/* changes of hands */
	uint64_t delivered;	/* records delivered from the lane */
	uint64_t given;		/* delivered, when the lane was last given
				 * to an owner: one that dies (or stops)
				 * without taking a record since failed no
				 * delivery */
	uint64_t reserved[1];
};

struct shmbus_group_hdr {
	/* line 0: identity, written once at creation, then read-only */
	uint64_t magic;		/* stored last at creation, with release */
	uint32_t version;
	uint32_t hdr_size;
	uint64_t file_size;
	uint64_t data_id;	/* the channel's (hdr.data_id) */
	uint32_t mode;		/* SHMBUS_GMODE_* */
	uint32_t window;	/* lease slots: a power of two */
	uint32_t lanes;		/* keyed: 1..64; shared: 0; single: 1 */
	uint32_t max_deliveries;	/* 0: no limit */
	int64_t lease_ns;	/* a lease's (or lane's) term */
	uint32_t slot;		/* the channel's subscriber slot it owns */
	uint32_t flags;		/* deleted (group.c) */

	/* lines 1-2: names */
	char name[64];
	char dead_letter[64];	/* channel for poison records ("": none) */

	/* line 3: the claim word (shared): next position, next claim */
	uint64_t claim_pos;	/* 16-byte aligned pair */
	uint64_t claim_seq;
	uint8_t pad3[48];

	/* line 4: the floor word: every record below floor_pos is done;
	 * floor_seq is the oldest claim not yet passed */
	uint64_t floor_pos;	/* 16-byte aligned pair */
	uint64_t floor_seq;
	uint8_t pad4[48];

	/* line 5: maintenance */
	uint64_t avail;		/* lease slots AVAILABLE (a hint) */
	uint64_t maint;		/* who maintains: pid | handle token << 32,
				 * or 0 */
	int64_t maint_at;	/* CLOCK_MONOTONIC: next maintenance due */
	uint64_t member_seq;	/* join counter (member.order) */
	uint64_t fresh_pos;	/* a start taken from the channel's head: a
				 * record there is read only once the
				 * producers' hand-off has passed it */
	int64_t create_ns;	/* CLOCK_REALTIME at creation */
	uint64_t start_seq;	/* the sequence number of the first message
				 * at or after the group's start, if known
				 * (UINT64_MAX): what a loss counts from */
	int64_t maint_since;	/* CLOCK_MONOTONIC: when maint was taken */

	/* line 6-7: counters */
	uint64_t delivered;	/* deliveries, redeliveries included */
	uint64_t redelivered;
	uint64_t acked;
	uint64_t nacked;
	uint64_t expired;	/* leases whose deadline passed */
	uint64_t released;	/* leases of dead members given back */
	uint64_t dead_lettered;	/* records sent to the dead-letter channel */
	uint64_t dropped;	/* poison records with no dead-letter channel */
	uint64_t full;		/* claims refused: the window was full */
	uint64_t lost;		/* messages overwritten before the group
				 * had them acknowledged */
	uint64_t lost_bytes;
	uint64_t loss_from;	/* the last loss: [loss_from, loss_to) */
	uint64_t loss_to;
	uint64_t lane_moves;
	uint64_t stall_seq;	/* the maintenance's: a won claim not yet */
	int64_t stall_since;	/* recorded, and since when it saw it */

	/* line 8: a shared group's copy on a replication standby: claims
	 * starting below it may have been delivered on the primary it
	 * followed, and are flagged redelivered here (0: none) */
	uint64_t redeliver_below;
	uint64_t sleepers;	/* bit j: member j counts in the channel's
				 * hdr.sleepers (asleep in
				 * shmbus_group_wait()); whoever clears the
				 * bit, the member or the maintenance that
				 * frees its record, takes it off the count */
	uint64_t may_sleep;	/* bit j: member j has slept; the group's
				 * slot's bit in hdr.sleep_ok is cleared
				 * with the last of these bits */
	uint8_t pad8[40];

	uint8_t reserved[1024 - 9 * 64];
};

#define SHMBUS_GROUP_ASSERT(f, o) \
	SHMBUS_STATIC_ASSERT(__builtin_offsetof(struct shmbus_group_hdr, f) \
			     == (o), "group hdr." #f " moved")

SHMBUS_GROUP_ASSERT(name, 64);
SHMBUS_GROUP_ASSERT(claim_pos, 192);
SHMBUS_GROUP_ASSERT(floor_pos, 256);
SHMBUS_GROUP_ASSERT(avail, 320);
SHMBUS_GROUP_ASSERT(delivered, 384);
SHMBUS_GROUP_ASSERT(redeliver_below, 512);
SHMBUS_GROUP_ASSERT(sleepers, 520);
SHMBUS_GROUP_ASSERT(may_sleep, 528);
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_group_hdr) == 1024, "group hdr");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_member) == 128, "member size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_lease_slot) == 64, "lease size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_lane) == 64, "lane size");

#define SHMBUS_GROUP_MEMBERS_OFF	1024u
#define SHMBUS_GROUP_LANES_OFF		(SHMBUS_GROUP_MEMBERS_OFF + \
					 SHMBUS_GROUP_MEMBERS * 128u)
#define SHMBUS_GROUP_LEASES_OFF		(SHMBUS_GROUP_LANES_OFF + \
					 SHMBUS_GROUP_LANES * 64u)

#endif /* SHMBUS_GROUP_LAYOUT_H */
