/* SPDX-License-Identifier: MIT */
/*
 * group.h - a consumer group member's private state, shared by group.c
 * (the group's file: creating, mapping, joining), group_shared.c (shared
 * mode: claims, leases, the floor), group_lanes.c (keyed and
 * single-active modes) and group_maint.c (what dead or stuck members
 * leave).  Not part of the API.  docs/groups.md is the protocol.
 */
#ifndef SHMBUS_GROUP_H
#define SHMBUS_GROUP_H

#include <stdbool.h>
#include <stdint.h>

#include "channel.h"
#include "contract.h"
#include "shmbus/group.h"

/* A lease's or lane's control word (shmbus/group.h). */
static inline uint64_t gctl(uint32_t state, uint32_t member,
			    uint32_t deliveries, uint32_t gen)
{
	return (uint64_t)gen << 32 | (uint64_t)(deliveries & 0xffff) << 16 |
	       (uint64_t)(member & 0xff) << 8 | (state & 0xff);
}

static inline uint32_t gctl_state(uint64_t c) { return (uint32_t)c & 0xff; }
static inline uint32_t gctl_member(uint64_t c)
{
	return (uint32_t)(c >> 8) & 0xff;
}
static inline uint32_t gctl_deliveries(uint64_t c)
{
	return (uint32_t)(c >> 16) & 0xffff;
}
static inline uint32_t gctl_gen(uint64_t c) { return (uint32_t)(c >> 32); }

/* The most deliveries a word counts; a count stays there (a limit of
 * deliveries is at most this, or none). */
#define SB_DELIVERIES_MAX	0xffffu

static inline uint32_t gdeliveries_add(uint32_t d, uint32_t n)
{
	return d + n < SB_DELIVERIES_MAX ? d + n : SB_DELIVERIES_MAX;
}

/*
 * The 16-byte compare-and-swap (cmpxchg16b) on a pair of words at a
 * 16-byte aligned address: {lo, hi} = {ctl, deadline} of a lease or lane,
 * {pos, seq} of the claim or the floor word.  Sequentially consistent, so
 * a full barrier both ways.  The pair is read with two 64-bit atomic
 * loads: a torn read only makes the CAS fail.
 */
static inline bool cas_pair(uint64_t *p, uint64_t lo, uint64_t hi,
			    uint64_t nlo, uint64_t nhi)
{
	unsigned __int128 o = (unsigned __int128)hi << 64 | lo;
	unsigned __int128 n = (unsigned __int128)nhi << 64 | nlo;

	return __sync_bool_compare_and_swap((unsigned __int128 *)p, o, n);
}

/* The longest lease term a group may have (a day). */
#define SB_LEASE_MAX_NS	(INT64_C(86400) * 1000000000)

/* What a member keeps of a lane it owns (keyed, single-active). */
struct sb_lane_view {
	uint64_t ctl;		/* the lane's word as we last set or saw it */
	uint64_t cursor;	/* next position to look at */
	uint64_t redeliver_below;	/* records below were delivered by an
				 * earlier owner: flagged redelivered */
	int64_t not_before;	/* nacked: wait until then */
	uint32_t head, n;	/* FIFO of the starts of the records in
				 * flight, oldest first */
	uint64_t *starts;	/* [lane_cap] */
};

struct shmbus_group {
	struct shmbus_channel *ch;	/* not owned */
	struct shmbus_group_hdr *g;
	struct shmbus_member *members;
	struct shmbus_lane *lanes;
	struct shmbus_lease_slot *leases;
	size_t map_len;

	/* Validated copies of the group's identity. */
	uint32_t mode;
	uint32_t window;
	uint32_t wmask;
	uint32_t nlanes;
	uint32_t max_deliveries;	/* 0: no limit */
	int64_t lease_ns;
	uint32_t slot;

	/* This member. */
	uint32_t me;		/* index in members[] */
	uint32_t self;		/* our pid, as at join (getpid() is a system
				 * call: none on the claim and ack paths) */
	uint32_t token;		/* this handle's, in the maintenance lock */
	struct shmbus_member *rec;
	bool direct;		/* the channel was opened without shmbusd */
	bool deleted;
	int64_t maint_next;	/* own rate limit for sb_group_maintain() */
	uint64_t idle_head;	/* the channel's head when a poll last found
				 * nothing (shmbus_group_wait()) */
	int64_t idle_ns;	/* and when */
	uint64_t lanes_stop;	/* keyed, single-active: where that poll's
				 * walk stopped at a record not committed
				 * yet (UINT64_MAX: none) */
	uint32_t wait;		/* shmbus_group_set_wait() */
	uint32_t spin_ns;
	bool nap;		/* the kernel refused sb_sleep_announce()'s
				 * barrier: it sleeps in naps only */
	bool forked;		/* a fork's copy (fork.c): its calls that
				 * take, settle or wait say -EPERM */
	struct sb_forkable fork;
	uint8_t *buf;		/* overwrite policy: a message's copy */

	/* Shared: the lease whose messages we are delivering. */
	struct sb_cur {
		bool on;	/* some of its messages are still to deliver */
		uint64_t seq, ctl, next, end;
		uint32_t d;	/* its deliveries */
		uint32_t given;	/* messages delivered from it */
		uint32_t fence;	/* the channel's fence when taken */
		bool ack_wait;	/* acked before its last message was
				 * delivered: the ack is made once it is */
		bool ack_due;	/* that moment came in this call: made
				 * when the call hands the message over */
	} cur;
	/* Shared: the lease we last acked, so that the acks of a batch's
	 * other messages that follow say 0, not -ESTALE. */
	uint64_t acked_seq, acked_ctl;

	/* Keyed and single-active: the lanes we own. */
	struct sb_lane_view lane[SHMBUS_GROUP_LANES];
	uint32_t lane_rr;	/* where the next poll starts */
	uint32_t lane_cap;	/* records in flight per lane */

	/* Direct mode: the dead-letter channel, opened when a poison message
	 * first needs it. */
	shmbus_channel *dl_ch;
	shmbus_pub *dl_pub;
	bool dl_wanted;		/* a maintenance kept poison for want of
				 * a publisher */
	bool dl_drop;		/* no dead-letter channel will take poison:
				 * it is dropped and counted */
	char dir[256];
	char chan[256];
	int fd;			/* the group's file, for the removers'
				 * flock (sb_group_deleted()), or -1 */
	uint64_t dev, ino;	/* the file mapped */
	char *kept;		/* sb_group_keep(): its path, opened for
				 * each maintenance (no descriptor kept) */
};

/* A message as the mode's take found it, for poll and read. */
struct sb_gmsg {
	const uint8_t *data;	/* in the ring */
	uint32_t len;
	uint32_t deliveries;
	uint64_t seq, pos, end, key;
};

/* Reads the record at p: 1 with *type, *len, *seq and *size set, 0 if
 * nothing is committed there yet, 2 if it was overwritten (lapped), or
 * -EBADMSG. */
int sb_rec_look(struct shmbus_channel *ch, uint64_t p, uint64_t fresh,
		uint32_t *type, uint32_t *len, uint64_t *seq, uint64_t *size);

/* The lane a message's key hashes to. */
uint32_t sb_lane_of(uint64_t key, uint32_t nlanes);
uint64_t sb_msg_key(const uint8_t *data, uint32_t len);

/* shared mode (group_shared.c) */
void sb_pair_read(uint64_t *w, uint64_t *pos, uint64_t *seq);
bool sb_intent_read(struct shmbus_member *r, uint64_t *s, uint64_t *pos);
bool sb_lease_record(struct shmbus_group_hdr *g, struct shmbus_lease_slot *l,
		     uint64_t s, uint64_t nctl, int64_t deadline,
		     uint64_t start, uint64_t end, uint64_t first_seq,
		     uint64_t msgs, uint32_t dead, uint64_t *ctlp);
/* The deadline the maintenance records an AVAILABLE lease with: its
 * recorder's pid, so that a recording it died in can be taken over
 * (sb_lease_record()).  An AVAILABLE lease has no deadline of its own. */
#define SB_RECORDER(pid)	(-(int64_t)(pid))
int sb_shared_take(struct shmbus_group *m, unsigned max, uint64_t *seq,
		   uint64_t *ctl, uint64_t *start, uint64_t *end,
		   uint32_t *deliveries);
int sb_shared_settle(struct shmbus_group *m, uint64_t seq, uint64_t ctl,
		     uint32_t to, int64_t delay_ns);
int sb_shared_extend(struct shmbus_group *m, uint64_t seq, uint64_t ctl,
		     int64_t ns);
unsigned sb_floor_advance(struct shmbus_group_hdr *g,
			  struct shmbus_lease_slot *leases, uint32_t wmask,
			  struct shmbus_channel *ch, uint32_t slot);
void sb_floor_publish(struct shmbus_channel *ch, uint32_t slot, uint64_t f);

/* keyed and single-active (group_lanes.c) */
int sb_lanes_take(struct shmbus_group *m, struct sb_gmsg *out,
		  uint32_t *lane);
int sb_lanes_settle(struct shmbus_group *m, uint32_t lane, uint32_t gen,
		    uint64_t pos, uint64_t end, int what, int64_t delay_ns);
void sb_lanes_forget(struct shmbus_group *m);
/* The floor raised to the lowest lane's acknowledged position; by at most
 * `most` bytes (sb_lanes_floor(): a ring's length, more is damage), and
 * not past `limit`. */
void sb_lanes_floor(struct shmbus_group *m);
void sb_lanes_floor_by(struct shmbus_group *m, uint64_t most, uint64_t limit);
void sb_lanes_leave(struct shmbus_group *m);
int sb_lanes_extend(struct shmbus_group *m, uint32_t i, uint32_t gen,
		    uint64_t pos, int64_t ns);
uint32_t sb_lanes_owned(struct shmbus_group *m);
/* Whether lane i is still ours in generation gen (nothing refreshed). */
bool sb_lanes_held(struct shmbus_group *m, uint32_t i, uint32_t gen);
/* Member j no longer sleeps on the channel's futex, nor may (it leaves,
 * or died, or the group goes): its count in hdr.sleepers, if it died
 * asleep, is taken off; the group's slot stops asking producers for
 * wake checks with the last member that may sleep. */
void sb_member_unsleep(struct shmbus_group *m, uint32_t j);

/* maintenance (group_maint.c) */
int sb_group_maintain_as(struct shmbus_group *m, shmbus_pub *dl,
			 uint32_t self);
/* sb_group_cut() on a mapped group. */
int sb_group_cut_back(struct shmbus_group *m, uint64_t pos);
/* The group's maintenance lock, held by a change that no maintenance may
 * see half made (a standby's import of the primary's state); false while
 * a live holder has held it for less than stuck_ns.  A maintenance takes
 * microseconds; a holder of SB_MAINT_STUCK_NS is a stopped process's,
 * which every maintenance replaces. */
#define SB_MAINT_STUCK_NS	INT64_C(1000000000)
bool sb_group_maint_trylock(struct shmbus_group *m, int64_t stuck_ns);
void sb_group_maint_release(struct shmbus_group *m);

#define SB_LANE_CAP_MAX		1024u	/* records in flight per lane */
#define SB_GROUP_SPIN_NS	20000u	/* a member's wait spins this long
					 * before it sleeps (or yields) */
#define SB_GROUP_LOOK_NS	INT64_C(10000000)	/* 10 ms: a wait's
					 * looks at what no producer wakes
					 * it for, and its longest sleep */
#define SB_GROUP_NAP_NS		INT64_C(1000000)	/* 1 ms: its sleeps
					 * while an ack (or, the kernel
					 * refusing, a commit) wakes nobody */
#define SB_GROUP_F_DELETED	0x1u	/* hdr.flags */

/* the file (group_file.c) */
struct shmbus_group *sb_group_open_map(struct shmbus_channel *ch,
				       const char *dir, const char *group,
				       bool rdonly, int *err);

/* the file and the API (group.c, group_file.c, group_state.c) */
int sb_group_path(char *buf, size_t len, const char *dir, const char *chan,
		  const char *group);
struct shmbus_group *sb_group_map(struct shmbus_channel *ch, int fd,
				  bool rdonly, int *err);
void sb_group_unmap(struct shmbus_group *m);
int sb_group_remove(struct shmbus_group *m, const char *path);
bool sb_group_deleted(struct shmbus_group *m, bool held);
void sb_group_maintain_unjoined(struct shmbus_group *m);
int sb_group_maintain_direct(struct shmbus_group *m);
/* group.c, for a member's calls in group_wait.c: */
int sb_group_refused(struct shmbus_channel *ch);
int sb_member_gone_check(struct shmbus_group *m);
int sb_member_take_check(struct shmbus_group *m);
int sb_member_maybe_maintain(struct shmbus_group *m);
void sb_group_fill_stats(struct shmbus_group *m,
			 struct shmbus_group_stats *st);

/* A test hook, so that a test can stop or kill a process exactly at
 * these points of a shared group: */
enum {
	SB_HOOK_CLAIMED,	/* between a claim's CAS and its recording */
	SB_HOOK_RECORDING,	/* between a recording's CAS and its seq */
	SB_HOOK_TAKING,		/* a lease given back: after the looks at the
				 * floor and the claim word, before the slots */
	SB_HOOK_LAPPED,		/* overwrite policy: a lap recorded, before
				 * the next claim */
	SB_HOOK_RESOLVING,	/* a maintenance about to record a claim
				 * whose winner is gone */
	SB_HOOK_JUDGED,		/* a maintenance has judged the members'
				 * records, before it acts on that (any
				 * mode) */
	SB_HOOK_REMOVE_SEEN,	/* a remover has looked at the members,
				 * before it acts on what it saw */
	SB_HOOK_COPIED,		/* a group read has copied a message from a
				 * block channel, before it checks that it
				 * still holds the lease (any mode) */
	SB_HOOK_FLOORED,	/* the group's floor moved, before the
				 * channel's slot is raised to it (any
				 * mode) */
	SB_HOOK_EXTENDING,	/* a keyed extend found the lane its own,
				 * before it writes the lane's deadline */
};
extern void (*sb_group_hook)(int where);
/* Another: called when a new group's creator holds the channel's slot
 * and its file is not yet in place. */
extern void (*sb_group_create_hook)(void);
/* And one called as a standby's copy looks at claim x to pass it
 * (group_state.c), so that a test can move the group under it. */
extern void (*sb_group_settle_hook)(uint64_t x);

/* Settle kinds. */
#define SB_SETTLE_ACK	0
#define SB_SETTLE_NACK	1
#define SB_SETTLE_GIVE	2	/* back to the others, never delivered:
				 * not counted, not flagged */
#define SB_SETTLE_LEFT	3	/* leave: back to the others, delivered:
				 * flagged when it comes again, not
				 * counted against max_deliveries */
/* The member of an AVAILABLE lease word given back by a member that left
 * (SB_SETTLE_LEFT): its next delivery is flagged, not counted. */
#define SB_LEFT_MEMBER	0xfeu

#endif /* SHMBUS_GROUP_H */
