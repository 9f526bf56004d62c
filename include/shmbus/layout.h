/* SPDX-License-Identifier: MIT */
/*
 * shmbus/layout.h - the byte layout of a channel file in /dev/shm.
 *
 * This is an on-disk-like format shared by every process that maps a
 * channel, by busstat, by the daemon and (later) by replication.  It is
 * versioned: any change to an offset or a meaning bumps
 * SHMBUS_LAYOUT_VERSION.  Everything here is fixed-width, the offsets are
 * pinned by static assertions at the bottom, and every reader treats every
 * value read from the file as untrusted input (see docs/design.md).
 *
 * A channel is two files, so that a subscriber can be given the messages
 * read-only while it writes its own cursor:
 *
 *   control file "NAME"                 data file ".NAME.<data_id>.data"
 *   +----------------------------------+ +-------------------------------+
 *   | struct shmbus_hdr     (4 KiB)    | | data region: capacity bytes   |
 *   |   identity: magic, version, sizes| | records, 8-byte aligned:      |
 *   |   acknowledgement waiters        | |  [commit | seq | payload | pad]|
 *   |   wake line: futex, sleepers     | +-------------------------------+
 *   |   counters line                  | | segment index [SHMBUS_NSEG]   |
 *   +----------------------------------+ | struct shmbus_data_trailer    |
 *   | subscriber slots, 128 B each     | | struct shmbus_mbox (SP only)  |
 *   +----------------------------------+ | struct shmbus_daemon_area     |
 *                                        | producer slots, 64 B each     |
 *                                        | struct shmbus_prod_line: head,|
 *                                        |   handoff, seq, bytes, role   |
 *                                        | (one page)                    |
 *                                        +-------------------------------+
 *
 * Writers of the data file: producers and shmbusd.  Writers of the control
 * file: everyone.  hdr.data_id names the data file, and the data file's
 * trailer repeats it.  What shmbusd states about the channel (its fence,
 * its replication and its journal: struct shmbus_daemon_area), the
 * producers' slots (who produces, and the claims they announce) and the
 * producers' line (where the next claim starts, the hand-off, the
 * sequence numbers, the single producer's role) are in the data file,
 * which shmbusd gives a subscriber read-only.
 *
 * A record commits itself: its first word (struct shmbus_rec.commit)
 * holds the lap tag, the type and the length, and is stored last with
 * release order.  See docs/design.md for the full protocol.
 */
#ifndef SHMBUS_LAYOUT_H
#define SHMBUS_LAYOUT_H

#include <stdint.h>

#include "static_assert.h"

#define SHMBUS_MAGIC		UINT64_C(0x3153554248534d53) /* "SMSHBUS1" */
#define SHMBUS_LAYOUT_VERSION	11u

#define SHMBUS_CACHELINE	64u
#define SHMBUS_HDR_SIZE		4096u
#define SHMBUS_MAX_PRODUCERS	16u
#define SHMBUS_MAX_SLOTS	64u	/* subscriber cursor slots per channel */
#define SHMBUS_NSEG		64u	/* resync index entries per lap */

#define SHMBUS_MIN_CAPACITY	(UINT64_C(4) << 10)
#define SHMBUS_MAX_CAPACITY	(UINT64_C(16) << 30)

/* hdr.flags */
#define SHMBUS_F_OVERWRITE	0x1u	/* else: block policy */
#define SHMBUS_F_MULTI_PRODUCER	0x2u	/* else: single producer */
#define SHMBUS_F_KNOWN		0x3u
/* Set by shmbusd on a channel it found cut short (docs/shmbusd.md, "A
 * file cut short"): not a flag of the layout, so that the files no longer
 * validate (EBADMSG) for whoever opens them after, busstat included; the
 * daemon sets them aside at its next start.  In a LIST reply's entries
 * (struct shmbus_ctl_entry's flags), the same bit says the daemon holds
 * the channel damaged. */
#define SHMBUS_F_DAMAGED	0x80000000u

/*
 * Record commit word:  [ lap tag : 32 | type : 3 | length : 29 ]
 *
 * The lap tag is ((pos >> cap_log2) + 1) truncated to 32 bits, never 0, so
 * an all-zero word (fresh memory, or an invalidated header) is never a
 * committed record.  For a MSG record the length is the payload length and
 * the record occupies SHMBUS_REC_HDR + align8(length) bytes.  A PAD record
 * has only its commit word: it occupies 8 + length bytes (length is a
 * multiple of 8) and carries nothing to deliver.  A GAP record has the
 * shape of a PAD record and stands for positions whose records this ring
 * never received (a standby that went on past what its primary no longer
 * held): a reader counts the sequence numbers it lacks after a GAP as
 * lost, where after PAD (a claim whose producer died, a ring's end) it
 * counts none.  A SKIP record has the shape of a MSG record (its seq is
 * valid) and is not delivered.
 */
#define SHMBUS_REC_MSG		0u
#define SHMBUS_REC_PAD		1u
#define SHMBUS_REC_SKIP		2u	/* an aborted message: same shape as
					 * MSG, carries its seq, not
					 * delivered */
#define SHMBUS_REC_GAP		3u	/* positions never received: shaped as
					 * PAD, counted as lost */
/* A record of this type is its commit word alone (PAD, GAP). */
#define SHMBUS_REC_WORD_ONLY(type) \
	((type) == SHMBUS_REC_PAD || (type) == SHMBUS_REC_GAP)
#define SHMBUS_REC_HDR		16u	/* commit word + sequence number */
#define SHMBUS_REC_ALIGN	8u
#define SHMBUS_LEN_BITS		29u
#define SHMBUS_LEN_MASK		((UINT32_C(1) << SHMBUS_LEN_BITS) - 1)
#define SHMBUS_MAX_MSG_LIMIT	(SHMBUS_LEN_MASK - 7u)

struct shmbus_rec {
	uint64_t commit;	/* stored last, with release */
	uint64_t seq;		/* message sequence number in this channel */
	/* payload follows */
};

/*
 * Slot ownership (subscriber and producer slots) is one 64-bit word,
 *   owner = state | tag << 8 | pid << 32
 * so that taking over the slot of a dead process compares the state, the
 * dead pid and its tag in one CAS: a slot that was meanwhile taken by a
 * live process (same state, another pid or tag) is never taken from it.
 * The tag is the owner's start time (field 22 of /proc/PID/stat) modulo
 * SHMBUS_OWNER_TAG_MAX, plus one: a pid that now names a process of
 * another start names another process, and the slot's owner is gone.  0:
 * no tag (the pid alone says who owns it).
 */
#define SHMBUS_OWNER_STATE_MASK	0xffu
#define SHMBUS_OWNER_TAG_MAX	0xffffffu
#define SHMBUS_SLOT_FREE	0u
#define SHMBUS_SLOT_BUSY	1u	/* being set up by its owner */
#define SHMBUS_SLOT_ACTIVE	2u
#define SHMBUS_SLOT_GROUP	3u	/* a consumer group's (shmbus/group.h):
					 * its cursor is the group's floor; it
					 * has no pid and is never reaped */
#define SHMBUS_SLOT_JOURNAL	4u	/* the journal's cursor (docs/journal.md):
					 * no pid, never reaped, so that it
					 * holds producers while shmbusd
					 * restarts; released by shmbusd when
					 * the journal is turned off */
#define SHMBUS_SLOT_REPL	5u	/* the replication agent's cursor
					 * (docs/replication.md): as the
					 * journal's, so that the standby's
					 * records stay in the ring while
					 * shmbusd restarts; released by
					 * shmbusd when the host stands by or
					 * the channel is not replicated */

/* Low bit of prod_slot.claim_end (positions are 8-aligned): announced,
 * not yet won.  Tells shmbusd a claim that lost its CAS (someone else owns
 * that position) from one that won it. */
#define SHMBUS_CLAIM_TENTATIVE	UINT64_C(1)

/* prod_line.sp_owner, the single producer's role: pid | tag << 32, the tag
 * being the holder's start tag as in an owner word (0: none).  The high
 * bit of the low half: shmbusd is repairing the claim of a dead single
 * producer; the pid is then the daemon's.  A new producer waits for the
 * repair to finish (or takes over if the daemon died doing it). */
#define SHMBUS_SP_REPAIRING	0x80000000u

/* daemon->fence = generation << 8 | state.  Every change of state bumps the
 * generation: a producer handle keeps the word it opened under, and
 * refuses every claim once the word differs, so that a handle that lived
 * through a closed fence never writes again (its view of the ring may be
 * stale). */
#define SHMBUS_FENCE_STATE(w)	((w) & 0xffu)
#define SHMBUS_FENCE_OPEN	0u
#define SHMBUS_FENCE_STANDBY	1u	/* a standby's ring: only the
					 * replication agent writes */
#define SHMBUS_FENCE_HANDOVER	2u	/* a primary that stops accepting
					 * claims to hand over */
#define SHMBUS_FENCE_CUT	3u	/* a returning primary's ring being cut
					 * back to where its successor's
					 * epoch began (docs/failover.md):
					 * new subscribers are refused
					 * (EAGAIN) for the few ms it takes */

/* daemon->repl_level: what acknowledges a record (docs/replication.md) */
#define SHMBUS_ACK_LOCAL	0u	/* committed on this host */
#define SHMBUS_ACK_RECEIVED	1u	/* the standby's agent has it, checked */
#define SHMBUS_ACK_APPLIED	2u	/* the standby's ring holds it */

#define SHMBUS_ACK_PERSISTED	3u	/* this host's journal has fdatasync'd
					 * it (docs/journal.md) */
#define SHMBUS_ACK_STANDBY_PERSISTED 4u	/* the standby's journal has */
#define SHMBUS_ACK_BOTH_PERSISTED 5u	/* both hosts' journals have */

/* daemon->jnl_state */
#define SHMBUS_JNL_ON		0x1u	/* a journal agent writes it */
#define SHMBUS_JNL_DISK_FULL	0x2u	/* below the free-space threshold:
					 * nothing is acknowledged as
					 * persisted until space returns */
#define SHMBUS_JNL_ERROR	0x4u	/* a write or sync failed: retrying */

/* daemon->jnl_keep: what keeps the journal's oldest segment */
#define SHMBUS_JKEEP_RULE	0u	/* within the retention rule */
#define SHMBUS_JKEEP_READER	1u	/* a replaying reader holds it */
#define SHMBUS_JKEEP_GROUP	2u	/* a consumer group has not acked it */
#define SHMBUS_JKEEP_STANDBY	3u	/* the standby has not received it */

/* hdr.kick_counted */
#define SHMBUS_KICK_COUNTED	0x6b69636bu

/* daemon->repl_flags */
#define SHMBUS_REPL_ON		0x1u	/* the channel is replicated */
#define SHMBUS_REPL_STANDBY	0x2u	/* this host is its standby */
#define SHMBUS_REPL_LINK	0x4u	/* the link to the peer is up */
#define SHMBUS_REPL_OUT_OF_SYNC	0x8u	/* the standby lags beyond the
					 * channel's bound, or is gone */
#define SHMBUS_REPL_STRICT	0x10u	/* out of sync: hold sync waiters
					 * (else degrade to local) */
#define SHMBUS_REPL_JOURNAL	0x20u	/* the journal acknowledges: the
					 * level is SHMBUS_ACK_PERSISTED */

/* Wait strategies, as recorded in a subscriber slot for busstat. */
#define SHMBUS_WAIT_SPIN_CODE	0u
#define SHMBUS_WAIT_YIELD_CODE	1u
#define SHMBUS_WAIT_SLEEP_CODE	2u

/*
 * A subscriber's cursor slot: two cache lines so that a neighbour's cursor
 * stores never share a line (nor an adjacent-line prefetch pair) with ours.
 */
struct shmbus_sub_slot {
	uint64_t pos;		/* next position to read; owner stores release */
	uint64_t owner;		/* SHMBUS_SLOT_* | tag << 8 | pid << 32 */
	uint64_t delivered;	/* messages delivered to this subscriber */
	uint64_t lost;		/* messages skipped after being lapped */
	uint64_t next_seq;	/* sequence number expected next */
	uint32_t wait;		/* SHMBUS_WAIT_*_CODE */
	uint32_t sleeping;	/* 1 while blocked in futex wait */
	uint64_t gen;		/* bumped on every (re)registration */
	char comm[16];		/* process name, for busstat */
	uint8_t reserved[56];
};

struct shmbus_prod_slot {
	uint64_t owner;		/* SHMBUS_SLOT_* | tag << 8 | pid << 32 */
	uint64_t claim_pos;	/* MP: start of the claim being written, or
				 * UINT64_MAX; no producer claims a lap past
				 * it (and the daemon repairs from it) */
	uint64_t claim_end;	/* MP: its end; | SHMBUS_CLAIM_TENTATIVE until
				 * the claim's CAS on head has succeeded */
	uint64_t published;	/* messages committed by this producer */
	char comm[16];
	uint8_t reserved[16];
};

/*
 * Resync index, one entry per segment of the ring (capacity / NSEG bytes):
 * the first record boundary at or after the segment's start, stored with
 * release by the producer whose claim covers that start.  A lapped
 * subscriber jumps to such a boundary; the record there carries its own
 * sequence number, so the loss count needs nothing more.
 */
struct shmbus_seg {
	uint64_t pos;
	uint64_t reserved;
};

/* At the end of the data file, after the segment index: what ties the data
 * file to its control file. */
#define SHMBUS_DATA_MAGIC	UINT64_C(0x3144544453554253) /* "SBUSDTD1" */
#define SHMBUS_DATA_NAME_FMT	".%s.%016llx.data"

struct shmbus_data_trailer {
	uint64_t magic;		/* SHMBUS_DATA_MAGIC */
	uint64_t data_id;	/* equals hdr.data_id */
	uint64_t capacity;
	uint64_t reserved;
};

/*
 * The mailbox (single-producer channels): one cache line in the data file
 * that repeats the newest record, so that a caught-up subscriber waits on
 * a line that stays put instead of on the ring's frontier.  While any
 * subscriber says it waits there (hdr.mbox_want), the producer posts each
 * record to it after committing the record in the ring, and otherwise
 * leaves it alone, so that a subscriber keeping up with a stream on the
 * ring does not take the line from the producer once per message:
 *
 *   mark = 0;  fence(release);  word, seq, payload;  mark = pos + 1 (release)
 *
 * `word` is the record's commit word.  The payload is there only for a MSG
 * of at most SHMBUS_MBOX_INLINE bytes; for anything else the mailbox only
 * says where the newest record is, and the reader takes it from the ring.
 * A reader copies what it needs and then checks that mark has not changed
 * (the seqlock idiom).  The ring stays the record of truth: a mailbox that
 * is behind (a producer died between its commit and its post, or did
 * not yet see a subscriber's mbox_want bit) or damaged only delays a
 * reader until it next looks at the ring.
 */
#define SHMBUS_MBOX_OFFSET	2048u	/* in the data file, after capacity */
#define SHMBUS_MBOX_INLINE	40u

struct shmbus_mbox {
	uint64_t mark;		/* 0 while being written; else pos + 1 */
	uint64_t word;		/* the commit word of the record at pos */
	uint64_t seq;		/* its sequence number */
	uint64_t payload[SHMBUS_MBOX_INLINE / 8];
};

/*
 * What shmbusd states about a channel: its fence, its replication and its
 * journal, at SHMBUS_DAEMON_OFFSET in the data file's last page.  Written
 * by shmbusd alone (its agents, its fence); the data file's other writers,
 * the producers, may write the messages themselves.  shmbusd gives a
 * subscriber the data file read-only, so that no subscriber can write a
 * word on which shmbus_pub_sync(), a subscriber that sees only
 * acknowledged messages, a producer's fence check, busstat or a restarted
 * shmbusd rely (docs/design.md, "What a process that uses the channel can
 * still do to the others").  All zero: the fence open, no replication, no
 * journal.
 */
#define SHMBUS_PRODS_OFFSET	2816u	/* in the data file, after capacity:
					 * the producer slots, after the
					 * daemon's area and a guard line */
#define SHMBUS_PLINE_OFFSET	3968u	/* the producers' line, after the
					 * slots and a guard line: the first
					 * of a 128-byte pair */
#define SHMBUS_DAEMON_OFFSET	2176u	/* after the mailbox and a guard line:
					 * line 0 below starts a 128-byte
					 * pair of its own */

struct shmbus_daemon_area {
	/* line 0: changed only with a role, a level or a sync state; read
	 * by every claim (the fence), so nothing often written is here */
	uint32_t fence;		/* state not OPEN: producers are refused
				 * (-EROFS): a standby's ring, or a primary
				 * handing over (SHMBUS_FENCE_*) */
	uint32_t repl_level;	/* SHMBUS_ACK_*: the channel's level */
	uint32_t repl_flags;	/* SHMBUS_REPL_* */
	uint32_t jnl_state;	/* SHMBUS_JNL_* */
	uint64_t epoch;		/* the epoch this ring's newest records carry */
	uint32_t jnl_seg_log2;	/* the journal's segments cover 1 << this
				 * positions */
	uint32_t jnl_keep;	/* SHMBUS_JKEEP_*: why the journal's oldest
				 * segment is still there */
	uint8_t pad0[32];
	uint8_t guard1[64];

	/* line 2: the acknowledgements, moved as the standby and the journal
	 * acknowledge (docs/replication.md); read by shmbus_pub_sync(), by
	 * subscribers that see only acknowledged messages, and by busstat */
	uint64_t replicated_pos;	/* the watermark: every record below it is
				 * acknowledged at the channel's level, or,
				 * while degraded, committed (SHMBUS_REPL_*);
				 * stored with release, only grows */
	uint64_t persisted_pos;	/* the journal has fdatasync'd every record
				 * below it (docs/journal.md); only grows */
	uint64_t received_pos;	/* the standby has the bytes below it */
	uint64_t applied_pos;	/* the standby's ring holds the records below */
	uint64_t standby_persisted_pos;	/* the standby's journal has
				 * fdatasync'd the records below it */
	uint64_t caught_up_ns;	/* CLOCK_REALTIME when the standby last had
				 * everything committed (busstat's lag time) */
	uint64_t hole_lo;	/* the last gap the standby went past: it */
	uint64_t hole_hi;	/* lacks [hole_lo, hole_hi) */

	/* line 3: the journal's progress (docs/journal.md); read by
	 * replaying subscribers and busstat */
	uint64_t jnl_written;	/* every record below it is in the journal's
				 * files (written, maybe not yet synced);
				 * stored with release, only grows */
	uint64_t jnl_oldest;	/* the oldest position the journal holds */
	uint64_t jnl_bytes;	/* bytes of its segment files */
	uint64_t jnl_syncs;	/* fdatasync calls */
	uint64_t jnl_gaps;	/* ranges it never had (lapped, or down) */
	uint64_t jnl_gap_bytes;
	uint8_t pad3[16];

	/* line 4: the replication agent's counters */
	uint64_t repl_frames;	/* frames shipped (primary) or applied
				 * (standby) */
	uint64_t repl_bad;	/* frames refused (CRC, position, epoch...) */
	uint64_t repl_gaps;	/* times the standby could not be caught up
				 * from where it was: it restarted further on */
	uint64_t repl_gap_bytes;	/* the bytes such restarts skipped */
	uint64_t repl_out_of_sync;	/* times the standby fell out of sync */
	uint8_t pad4[24];

	/* lines 5-7 */
	char jnl_dir[192];	/* the channel's journal directory, absolute,
				 * NUL-terminated */
};

/*
 * The producers' line, at SHMBUS_PLINE_OFFSET in the data file's last
 * page: written by producers (and by shmbusd's repairs, its standby's
 * mirror and its journal's recovery), read by everyone.  In the data
 * file, which shmbusd gives a subscriber read-only, so that no subscriber
 * can move the next claim's start back over records others have read,
 * fake or stall the hand-off, or take the single producer's role.
 */
struct shmbus_prod_line {
	uint64_t head;		/* next position to claim */
	uint64_t handoff;	/* MP: header at this position is invalidated */
	uint64_t seq;		/* next message sequence number */
	uint64_t bytes;		/* payload bytes published */
	uint64_t sp_owner;	/* SP: who holds the producer role: pid
				 * (| SHMBUS_SP_REPAIRING) | tag << 32 */
	uint8_t pad[24];
};

struct shmbus_hdr {
	/* line 0: identity, written once at creation, then read-only */
	uint64_t magic;		/* stored last at creation, with release */
	uint32_t version;
	uint32_t hdr_size;	/* sizeof(struct shmbus_hdr) */
	uint64_t file_size;	/* of the control file */
	uint64_t capacity;	/* data region bytes, power of two */
	uint64_t data_offset;	/* in the data file: 0 */
	uint64_t slots_offset;	/* of the subscriber slots */
	uint32_t max_msg;	/* largest payload, bytes */
	uint32_t flags;		/* SHMBUS_F_* */
	uint32_t nslots;	/* subscriber slots */
	uint32_t cap_log2;

	/* line 1: identity, continued */
	uint64_t create_ns;	/* CLOCK_REALTIME at creation */
	uint32_t page_size;
	int32_t numa_node;	/* -1: not bound */
	uint32_t nseg;
	uint32_t seg_log2;	/* segment size is 1 << seg_log2 bytes */
	uint64_t data_id;	/* random, never 0: names the data file */
	uint64_t data_size;	/* its size: capacity + one page */
	uint8_t pad1[24];

	/* line 2: who waits for the acknowledgement watermark
	 * (daemon->replicated_pos): written by the waiters and by shmbusd's
	 * agents, so that it is here, where every user of the channel writes */
	uint8_t pad2[56];
	uint32_t ack_futex;	/* bumped when the watermark moves, if
				 * ack_waiters */
	uint32_t ack_waiters;	/* shmbus_pub_sync() callers asleep */

	uint8_t guard3[64];

	/* line 4: written by a subscriber that takes a slot above the
	 * others; the producers' own words are in the data file
	 * (struct shmbus_prod_line) */
	uint8_t pad4a[40];
	uint32_t nsub_hwm;	/* subscriber slots ever used */
	uint8_t pad4[20];

	uint8_t guard5[64];

	/* line 6: what waiting subscribers ask of producers, read by a
	 * producer after every commit and written only when a subscriber
	 * starts or stops waiting */
	uint32_t futex;		/* bumped by a producer that wakes sleepers */
	uint32_t sleepers;	/* subscribers blocked (or about to) */
	uint64_t mbox_want;	/* SP: bit i set while subscriber slot i waits
				 * on the mailbox: posts are made only then */
	uint64_t sleep_ok;	/* bit i set while subscriber slot i may sleep
				 * (SHMBUS_WAIT_SLEEP): commits make the wake
				 * check only then */
	uint8_t pad6[40];

	uint8_t guard7[64];

	/* line 8: cold counters */
	uint64_t backpressure;	/* claims refused or delayed by a slow reader */
	uint64_t wakeups;	/* futex wake calls made by producers */
	uint64_t repairs;	/* claims of dead producers turned into padding */
	uint64_t aborts;	/* claims aborted by their producer */
	uint64_t reaped;	/* slots of dead processes released by shmbusd */
	uint64_t stuck;		/* times shmbusd's watchdog found subscribers
				 * waiting on a position nothing will fill */
	uint8_t pad8[16];

	/* line 9: the replication agent's kick, cold */
	uint32_t kick;		/* bumped by shmbus_pub_sync() to wake the
				 * agent at once */
	uint32_t sync_waiters;	/* shmbus_pub_sync() calls in progress: the
				 * agent spins instead of napping */
	uint8_t pad9[56];

	uint8_t pad10[256];	/* lines 10-13: unused */

	/* line 14: the replication agent's sleep */
	uint8_t pad14a[8];
	uint32_t kick_sleepers;	/* agents asleep on kick: a
				 * shmbus_pub_sync() wakes them only then */
	uint32_t kick_counted;	/* SHMBUS_KICK_COUNTED once an agent that
				 * counts kick_sleepers has waited (else
				 * every shmbus_pub_sync() wakes) */
	uint8_t pad14[48];

	uint8_t reserved[SHMBUS_HDR_SIZE - 15 * 64];
};

#define SHMBUS_ASSERT_OFFSET(t, f, o) \
	SHMBUS_STATIC_ASSERT(__builtin_offsetof(t, f) == (o), \
			     #t "." #f " moved")

SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, magic, 0);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, create_ns, 64);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, ack_futex, 184);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, nsub_hwm, 296);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, futex, 384);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, mbox_want, 392);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, backpressure, 512);
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_hdr) == SHMBUS_HDR_SIZE, "hdr size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_sub_slot) == 128, "sub slot size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_prod_slot) == 64, "prod slot size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_seg) == 16, "seg size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_rec) == SHMBUS_REC_HDR, "rec size");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_mbox) == SHMBUS_CACHELINE,
		     "mbox size");
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, sleep_ok, 400);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, ack_waiters, 188);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, kick, 576);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, kick_sleepers, 904);
SHMBUS_ASSERT_OFFSET(struct shmbus_hdr, kick_counted, 908);
SHMBUS_STATIC_ASSERT(SHMBUS_MAX_SLOTS <= 64, "one bit per slot in mbox_want "
		     "and sleep_ok");
SHMBUS_STATIC_ASSERT(SHMBUS_NSEG * sizeof(struct shmbus_seg) +
		     sizeof(struct shmbus_data_trailer) <= SHMBUS_MBOX_OFFSET &&
		     SHMBUS_MBOX_OFFSET % SHMBUS_CACHELINE == 0 &&
		     SHMBUS_MBOX_OFFSET + sizeof(struct shmbus_mbox) +
		     SHMBUS_CACHELINE <= SHMBUS_DAEMON_OFFSET &&
		     SHMBUS_DAEMON_OFFSET % (2 * SHMBUS_CACHELINE) == 0 &&
		     SHMBUS_DAEMON_OFFSET + sizeof(struct shmbus_daemon_area) <=
		     4096,
		     "the index, the trailer, the mailbox and the daemon's area "
		     "fit the last page");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_daemon_area) == 8 * 64,
		     "daemon area size");
SHMBUS_STATIC_ASSERT(SHMBUS_DAEMON_OFFSET + sizeof(struct shmbus_daemon_area) +
		     SHMBUS_CACHELINE <= SHMBUS_PRODS_OFFSET &&
		     SHMBUS_PRODS_OFFSET % (2 * SHMBUS_CACHELINE) == 0 &&
		     SHMBUS_PRODS_OFFSET + SHMBUS_MAX_PRODUCERS *
		     sizeof(struct shmbus_prod_slot) <= 4096,
		     "the producer slots fit the data file's last page");
SHMBUS_STATIC_ASSERT(sizeof(struct shmbus_prod_line) == SHMBUS_CACHELINE &&
		     SHMBUS_PRODS_OFFSET + SHMBUS_MAX_PRODUCERS *
		     sizeof(struct shmbus_prod_slot) + SHMBUS_CACHELINE <=
		     SHMBUS_PLINE_OFFSET &&
		     SHMBUS_PLINE_OFFSET % (2 * SHMBUS_CACHELINE) == 0 &&
		     SHMBUS_PLINE_OFFSET + sizeof(struct shmbus_prod_line) <=
		     4096,
		     "the producers' line fits the data file's last page");
SHMBUS_ASSERT_OFFSET(struct shmbus_daemon_area, replicated_pos, 128);
SHMBUS_ASSERT_OFFSET(struct shmbus_daemon_area, jnl_written, 192);
SHMBUS_ASSERT_OFFSET(struct shmbus_daemon_area, repl_frames, 256);
SHMBUS_ASSERT_OFFSET(struct shmbus_daemon_area, jnl_dir, 320);

#endif /* SHMBUS_LAYOUT_H */
