/* SPDX-License-Identifier: MIT */
/*
 * contract.h - what shmbusd and the tools may use of the library beyond
 * include/shmbus.h.  They link the static library, so its internal
 * symbols resolve for them; this header is the part of it they rely on,
 * and the only header of lib/ they include.  Channels are the API's
 * opaque shmbus_channel here: nothing outside lib/ reads their memory.
 *
 * - The rules they must apply exactly as the library does: names,
 *   sizes, max_msg, the SHMBUS_F_* flags of a channel's attributes, the
 *   clock.
 * - The daemon's entry points into channels: opening a channel's
 *   descriptors to hand them out, the bus file (busfile.h), and its scan
 *   of a channel for what dead processes left (reap.c, on repair.c).
 */
#ifndef SHMBUS_CONTRACT_H
#define SHMBUS_CONTRACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "shmbus.h"
#include "shmbus/protocol.h"
#include "busfile.h"

/* A channel's or a bus's name: 1..max of [A-Za-z0-9._-], not starting
 * with '.' (so never a path, a hidden file, "." or ".."). */
int sb_name_ok(const char *name, size_t max);
/* Opens an existing file in a directory that other processes can write
 * (the channels' and groups' directory, a journal's): never through a
 * symlink, and only a regular file, so that a FIFO or a device put there
 * cannot block or feed the opener.  The descriptor (close-on-exec), or
 * -errno: -EBADMSG for a file that is not a regular file. */
int sb_open_file(const char *path, int flags);
/* The lower-case hex digits at s, as the daemon and the library write
 * ids and positions in file names and state files: how many (1 to max,
 * max <= 16), their value in *v; 0 if none, or more than max, start at
 * s.  No sign, no "0x", no spaces. */
size_t sb_hex_digits(const char *s, size_t max, uint64_t *v);

/* SIGBUS on a shared file cut short (lib/sigbus.c): a page of zeros is
 * mapped where the access faulted, for processes that only inspect shared
 * files or stop serving what faulted (shmbusd, busstat); never for a
 * producer.  The guard, process-wide; 0 or -errno. */
int sb_sigbus_guard(void);
/* Faults the guard has covered so far, and the address of the last. */
unsigned long sb_sigbus_faults(uintptr_t *last_addr);

/*
 * A size as the config file and shmbusctl take it: decimal digits, then
 * optionally K, M or G (powers of 1024, either case), optionally followed
 * by "iB" ("64K", "64KiB", "1m").  Returns 0 with *out set, -EINVAL for
 * anything else (a sign, a space, another suffix, nothing), -ERANGE if it
 * does not fit 64 bits.
 */
int sb_parse_size(const char *s, uint64_t *out);

/* The largest message a channel of these attributes takes: max_msg, or
 * for max_msg 0 the smaller of SHMBUS_DEFAULT_MAX_MSG and what the
 * capacity allows (shmbus_max_msg()). */
uint32_t sb_attr_max_msg(const struct shmbus_channel_attr *a);

/* The SHMBUS_F_* flags of a channel with this policy and producer model,
 * as its header records them. */
uint32_t sb_channel_flags(enum shmbus_policy policy,
			  enum shmbus_producers producers);
/* shmbusd, on a channel it found cut short: marks its header
 * SHMBUS_F_DAMAGED, so that its files no longer validate. */
void sb_channel_mark_damaged(shmbus_channel *ch);
/* shmbusd's scan: writes back the words of the header's identity (lines
 * 0 and 1), which every open validates, that differ from what the handle
 * validated (and marked damaged since): a process that maps the control
 * file, as every subscriber does, could otherwise make every later open
 * of the channel fail, and a restarted shmbusd set its files aside.
 * Returns how many words it wrote (0: none differed). */
unsigned sb_ident_restore(shmbus_channel *ch);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t sb_now_ns(void);

/* The standard CRC-32C of buf, continuing from crc (0 to start). */
uint32_t sb_crc32c(uint32_t crc, const void *buf, size_t len);

/* Opens the control file and the data file (read-write and read-only) of
 * channel `name` in `dir`, for shmbusd to hand out.  0 or -errno. */
int sb_channel_open_fds(const char *dir, const char *name, int *ctl_fd,
			int *data_rw, int *data_ro);

/* The sizes of the channel's control and data files, as mapped: a file
 * found shorter was cut (ftruncate(2)) by a process holding it writable,
 * and its mapping faults (SIGBUS) past the new end. */
void sb_channel_file_sizes(shmbus_channel *ch, uint64_t *ctl, uint64_t *data);

/* The id of the channel's data file: another channel made under the same
 * name has another (what a GROUP request's data_id is compared with). */
uint64_t sb_channel_data_id(const shmbus_channel *ch);

/* Removes channel `name`'s files in `dir`, as shmbus_channel_unlink()
 * does, if the name still leads to the channel of data id `data_id`
 * (sb_channel_data_id()): -ESTALE, the control file left, if another
 * process (direct mode) deleted it and made another under the name since.
 * The data file of `data_id` goes in every case.  A control file that
 * cannot be read for want of a descriptor is removed by its name (one
 * that cannot be read otherwise is left: the open's error); the look and
 * the removal are two steps: a replacement in the microseconds between
 * them is removed. */
int sb_channel_unlink_id(const char *dir, const char *name, uint64_t data_id);

/* No such process, or a zombie (pid.c).  sb_owner_gone_as(): the same
 * for a slot's owner, its pid and start tag (layout.h; 0: none): also a
 * process of another tag given its pid. */
bool sb_pid_gone(uint32_t pid);
bool sb_owner_gone_as(uint32_t pid, uint32_t tag);

/* Whether the holder that single-producer role word `w` (sp_owner) names
 * is gone for good: sb_owner_gone_as() for another process's pid; for
 * this process's own, whether none of its handles holds the role of `ch`
 * (a word written over under one of them, whatever its tag, is not a
 * dead one's) and none of its threads repairs it, or the word has
 * another process's start tag (the pid was a dead holder's before it was
 * this process's).  Thread-safe (producer.c). */
bool sb_sp_role_gone(const struct shmbus_channel *ch, uint64_t w);
/* The same verdict, taken under the lock of the roles this process
 * holds, which the caller keeps across its CAS from `w` and then releases
 * with sb_sp_role_unlock() (whatever the verdict): no thread of this
 * process takes the role between them, writing the word the CAS
 * compares (producer.c). */
bool sb_sp_role_lock_gone(const struct shmbus_channel *ch, uint64_t w);
void sb_sp_role_unlock(void);

/* Whether the owner `pid` with start tag `tag` (0: none) is gone, as the
 * caller judges it (shmbusd caches sb_owner_gone_as()'s verdicts for one
 * scan). */
typedef bool (*sb_gone_fn)(void *ctx, uint32_t pid, uint32_t tag);

/* How many more bytes this process's memory cgroup lets it take before
 * its OOM killer runs (the least over the cgroup and its ancestors of
 * limit - usage + page cache), or UINT64_MAX if no limit is
 * known (memcg.c).  A ring whose data file is larger is refused, -ENOMEM,
 * before it is built. */
uint64_t sb_memcg_room(void);
/* The same from another /proc/self/cgroup and cgroup trees (a test's). */
uint64_t sb_memcg_room_at(const char *cgroup_file, const char *v2_root,
			  const char *v1_root);

/* What sb_reap() did, one event per action, for the caller's log. */
enum sb_reap_event {
	SB_REAP_SUB,		/* released subscriber slot `slot` of `pid` */
	SB_REAP_SP,		/* padded the unfinished claim of the dead
				 * single producer `pid` */
	SB_REAP_SP_DAMAGED,	/* the dead single producer `pid`'s ring is
				 * damaged at `pos`, with committed records
				 * after it: nothing padded */
	SB_REAP_HANDOFF,	/* handed over and padded the claim at `pos`
				 * of a dead multi producer */
	SB_REAP_HANDOFF_SKIP,	/* the hand-off word stood at `pos`, where no
				 * claim is: moved on (sb_handoff_skip()) */
	SB_REAP_PROD,		/* released producer slot `slot` of `pid`
				 * (`padded`: and padded its claim) */
	SB_REAP_PROD_LATER,	/* producer slot `slot` of `pid`: the claim
				 * before it has not handed over yet */
	SB_REAP_HWM,		/* the slots' high-water mark stood at `pos`,
				 * below slot `slot` in use (written over):
				 * raised past it */
	SB_REAP_SP_OWNER,	/* the single producer's role word named
				 * process `pos` (without the repairing
				 * bit), gone or this one not holding the
				 * role, while live process
				 * `pid` holds a producer slot (written
				 * over): given back to `pid`, nothing
				 * padded */
	SB_REAP_FENCE,		/* the fence word stood at `pos` (written
				 * over): set back to this process's, whose
				 * state is `slot` (sb_fence_restore()) */
	SB_REAP_REPL_FLAGS,	/* the replication flags stood at `pos`
				 * (written over): set back to this
				 * process's, `slot` (sb_repl_restore()) */
	SB_REAP_REPL_LEVEL,	/* the replication level stood at `pos`
				 * (written over): set back to this
				 * process's, `slot` */
	SB_REAP_EPOCH,		/* the ring's epoch stood at `pos` (written
				 * over): set back to this process's */
	SB_REAP_ACK_WORD,	/* acknowledgement or journal word `slot`
				 * (SB_ACKW_*) stood at `pos` (written
				 * over): set back to this process's
				 * (sb_ack_restore()) */
	SB_REAP_IDENT,		/* `slot` words of the header's identity
				 * lines were written over: set back
				 * (sb_ident_restore()) */
};

struct sb_reap_ev {
	enum sb_reap_event what;
	uint32_t slot;
	uint32_t pid;
	uint64_t pos;
	bool padded;
};

typedef void (*sb_reap_log_fn)(void *ctx, const struct sb_reap_ev *ev);

/*
 * One scan of channel `ch` by the process `self`: the slots of processes
 * that `gone` says are gone are repaired (lib/repair.c), each repair
 * reported to `log` (may be NULL).  *handoff_seen is the multi producer's
 * hand-off at the previous scan (0 at first): a dead claim at the
 * hand-off is helped only when the hand-off has not moved since.
 * Returns how many slots were released.  Safe against live producers and
 * subscribers; one scan of a channel at a time.
 */
unsigned sb_reap(shmbus_channel *ch, uint32_t self, sb_gone_fn gone,
		 void *gctx, uint64_t *handoff_seen, sb_reap_log_fn log,
		 void *lctx);

/* The position where the slowest subscriber waits for a record that
 * nothing live will commit, or UINT64_MAX (the watchdog's question). */
uint64_t sb_stuck_position(shmbus_channel *ch, sb_gone_fn gone, void *gctx);

/* The state around such a position, for a log line: head, hand-off, the
 * word there, the producer slots. */
void sb_stuck_describe(shmbus_channel *ch, uint64_t pos, char *buf,
		       size_t len);

/* Counts one stuck position in the header (busstat's STUCK). */
void sb_count_stuck(shmbus_channel *ch);

/* shmbusctl's replication requests (status, promote, demote, switchover):
 * 0 with the daemon's answer in *r, or -errno (shmbus_bus_strerror() has
 * the daemon's reason). */
int sb_bus_repl(shmbus_bus *b, uint32_t op, uint32_t flags,
		struct shmbus_ctl_repl_reply *r);

/* A request starts that may not reach the daemon (its arguments refused
 * here first): shmbus_bus_strerror() no longer gives this thread's last
 * reason. */
void sb_bus_reason_forget(void);
/* Deletes group `group` of channel `chan` through shmbusd (shmbusctl
 * delete-group; shmbus_group_delete() on a channel opened through it):
 * 0 or -errno, as shmbus_group_delete().  data_id: the channel the caller
 * has open (sb_channel_data_id()), -ESTALE if the name leads to another
 * now; 0 for whichever it leads to. */
int sb_bus_group_delete(shmbus_bus *b, const char *chan, uint64_t data_id,
			const char *group);
/* shmbus_bus_list(), with each entry's flags as the daemon sent them
 * (SHMBUS_F_*; SHMBUS_F_DAMAGED: the daemon holds the channel damaged),
 * for shmbusctl list. */
int sb_bus_list(shmbus_bus *b,
		int (*fn)(const struct shmbus_bus_channel *c, uint32_t flags,
			  void *arg),
		void *arg);

/* ---------------------------------------------------------------------
 * Replication (lib/replica.c: the fence and the watermark; lib/mirror.c:
 * shipping, applying, the cut; docs/replication.md).
 */

/* Positions from 2^62 bytes on (14 years of a channel at 10 GB/s) are
 * refused when they come from elsewhere (a peer's frame): below it no sum
 * of a position, a frame and a lap wraps. */
#define SB_POS_MAX	(UINT64_C(1) << 62)

/* The fence's state (daemon->fence): SHMBUS_FENCE_OPEN, _STANDBY, _HANDOVER
 * or _CUT.  A change bumps the generation; closing an open fence makes
 * every thread of the system pass a full barrier (membarrier(2),
 * milliseconds) before it returns: 0, or -errno if the kernel refused (the
 * fence is then set, but a claim in flight may slip past it: a handover
 * must not go on).  From one closed state to another, none, once one
 * ran through this mapping since the fence was last open. */
uint32_t sb_fence_get(shmbus_channel *ch);
int sb_fence_set(shmbus_channel *ch, uint32_t fence);
/* A process that sets a ring's fence (shmbusd) remembers the word it
 * stored, by ring, across all its mappings of it: sb_fence_get() answers
 * from that word, not from the shared one (in shmbusd's area of the data
 * file), which a process that maps the data file writable (a producer)
 * can write over.  sb_fence_store() stores a new word for `state` (with
 * release if asked), bumping the generation past both the shared word and
 * its own when either state differs or the shared word is not its own;
 * returns the shared word before.  sb_fence_restore() puts its own word
 * back where the shared one differs: 1 with the word
 * found (*found), else 0 (also for a ring whose fence it never set). */
uint32_t sb_fence_store(shmbus_channel *ch, uint32_t state, bool release);
int sb_fence_restore(shmbus_channel *ch, uint32_t *found);
/* The same for the replication flags, level and epoch:
 * sb_repl_flags(), sb_repl_epoch(), sb_repl_setup() and
 * sb_repl_flags_put() (a store of the level and the whole flags word)
 * remember what they stored, sb_repl_read() and sb_repl_flags() answer
 * from it, and sb_repl_restore() puts the words back where the shared
 * differ: bit 0 of its result for the flags (the word found in
 * *flags_found), bit 1 for the epoch (*epoch_found), bit 2 for the
 * level (*level_found).  sb_repl_level(): the level, as sb_repl_read()
 * gives the flags. */
void sb_repl_flags_put(shmbus_channel *ch, uint32_t level, uint32_t flags);
unsigned sb_repl_restore(shmbus_channel *ch, uint32_t *flags_found,
			 uint32_t *level_found, uint64_t *epoch_found);
uint32_t sb_repl_level(shmbus_channel *ch);

/* The acknowledgement and journal words the same way: the watermark
 * (sb_repl_watermark(), sb_repl_reset_positions()), the standby's
 * positions (sb_repl_acked()), the gap range (sb_repl_hole()), this
 * host's journal's persisted and written positions and its state
 * (sb_jnl_*()) are stored from what this process holds, and
 * sb_repl_read() and sb_jnl_read() answer from that; sb_ack_restore()
 * puts back those that differ, bit SB_ACKW_x of its result for each,
 * with the word found in found[SB_ACKW_x]. */
enum {
	SB_ACKW_MARK, SB_ACKW_RECEIVED, SB_ACKW_APPLIED, SB_ACKW_SB_PERSISTED,
	SB_ACKW_HOLE_LO, SB_ACKW_HOLE_HI, SB_ACKW_PERSISTED, SB_ACKW_WRITTEN,
	SB_ACKW_JSTATE, SB_ACKW_N
};
unsigned sb_ack_restore(shmbus_channel *ch, uint64_t found[SB_ACKW_N]);

/* With the fence closed: waits until no claim is in flight and every
 * record claimed is committed, walking from `from` (a record boundary
 * already known committed); *end is then head, which no producer will
 * move again.  -ETIMEDOUT if a producer keeps a claim open (a claim held
 * by its caller, or a stopped process) for timeout_ns. */
int sb_fence_quiesce(shmbus_channel *ch, uint64_t from, int64_t timeout_ns,
		     uint64_t *end);

/*
 * Cutting a standby's ring back to `pos`, a record boundary at or before
 * its end: the records from there on (a returning primary's diverged
 * tail) are removed, so that the new primary's records take their
 * positions (docs/failover.md).  sb_ring_cut_begin() closes the fence
 * (SHMBUS_FENCE_CUT) and checks that nobody else uses the ring: no
 * subscriber slot held by a process (a new one is refused, EAGAIN), no
 * claim in flight (the caller cuts the groups: sb_group_cut()); *end is then
 * the ring's end, and the caller may copy [pos, *end) away.  -EBUSY with
 * why when the ring is in use (the fence goes back), -EINVAL when pos is
 * not one of its record boundaries.  sb_ring_cut_end() removes the
 * records: commit words cleared from pos on, head, handoff, seq, the
 * mailbox, the cursors of groups and the journal and the replication
 * line's positions set back, and the fence returned to `fence`.
 * sb_ring_cut_abort() only returns the fence.  The journal's agent must
 * not run meanwhile.
 */
int sb_ring_cut_begin(shmbus_channel *ch, uint64_t pos, uint64_t *end,
		      char *why, size_t n);
void sb_ring_cut_end(shmbus_channel *ch, uint64_t pos, uint32_t fence);
void sb_ring_cut_abort(shmbus_channel *ch, uint32_t fence);
/* At shmbusd's start, before anything reads the ring: a cut that a crash
 * stopped half way (the fence still says CUT) is finished where the
 * ring's committed records end (*end), and the fence set to STANDBY.
 * Returns whether there was one. */
bool sb_ring_cut_finish(shmbus_channel *ch, uint64_t *end);

/* A ring just closed for a standby: waits until no live producer holds
 * a claim open on it (those of dead ones are sb_apply_recover()'s); 0,
 * or -ETIMEDOUT with the pid of one that still does. */
int sb_fence_settle(shmbus_channel *ch, int64_t timeout_ns, uint32_t *pid);

/* The replication words (struct shmbus_daemon_area).  One agent thread
 * writes each field, except the watermark, which only grows (several
 * threads may raise it). */
void sb_repl_setup(shmbus_channel *ch, uint32_t level, uint32_t flags,
		   uint64_t epoch);
/* Sets and clears SHMBUS_REPL_* flags; returns the previous ones. */
uint32_t sb_repl_flags(shmbus_channel *ch, uint32_t set, uint32_t clear);
void sb_repl_epoch(shmbus_channel *ch, uint64_t epoch);
/* The standby's positions (one writer at a time: the link's reader),
 * `persisted` its journal's; caught_up: it had everything. */
void sb_repl_acked(shmbus_channel *ch, uint64_t received, uint64_t applied,
		   uint64_t persisted, bool caught_up);
/* The standby has everything now (busstat's lag time starts here). */
void sb_repl_caught_up(shmbus_channel *ch);
/* Primary: no time known since the standby last had everything (busstat
 * shows "?"): at a promotion, until a standby has caught up with this
 * primary (the standby's link time or a former term's is not that). */
void sb_repl_caught_up_unknown(shmbus_channel *ch);
/* Positions set back to `pos` at a role change (no agent running). */
void sb_repl_reset_positions(shmbus_channel *ch, uint64_t pos);
/* Raises the watermark to w and wakes shmbus_pub_sync() callers and
 * sleeping subscribers. */
void sb_repl_watermark(shmbus_channel *ch, uint64_t w);
/* A gap the standby (or this host's journal) goes past, recorded before
 * anything after it is acknowledged: a sync waiter with records in
 * [lo, hi) is told SHMBUS_SYNC_DEGRADED, never 0.  The header has room
 * for one range, so it grows to cover every gap recorded so far (and
 * what lies between them); lo >= hi clears it.  shmbusd's threads only:
 * they are serialised here. */
void sb_repl_hole(shmbus_channel *ch, uint64_t lo, uint64_t hi);
/* The ring cut back to pos: the range no further than pos (the gaps
 * below it stay recorded). */
void sb_repl_hole_cut(shmbus_channel *ch, uint64_t pos);

struct sb_repl_view {
	uint64_t watermark, epoch, received, applied, caught_up_ns;
	uint64_t persisted;		/* the standby's journal */
	uint64_t local_persisted;	/* this host's journal */
	uint64_t hole_lo, hole_hi;	/* the gap sb_repl_hole() recorded */
	uint64_t head, seq;
	uint64_t frames, bad, gaps, gap_bytes, out_of_sync;
	uint32_t level, flags, fence;
};
void sb_repl_read(shmbus_channel *ch, struct sb_repl_view *v);

enum sb_repl_counter {
	SB_REPL_FRAMES, SB_REPL_BAD, SB_REPL_GAPS, SB_REPL_GAP_BYTES,
	SB_REPL_OUT_OF_SYNC,
};
void sb_repl_count(shmbus_channel *ch, enum sb_repl_counter c, uint64_t n);

/* The primary's agent waits for work: a shmbus_pub_sync() kick, or
 * nap_ns.  Pass back the value it returns.  Whether a sync call waits
 * now (then the agent should not nap). */
uint32_t sb_repl_agent_wait(shmbus_channel *ch, uint32_t seen,
			    int64_t nap_ns);
/* The count of waiting callers is believed only while the kick word
 * moves (a waiter kicks at least every SB_SYNC_BEAT_NS): one killed
 * inside its wait counts for ever, and keeps nobody awake after
 * SB_SYNC_HINT_NS.  One hint per thread that asks. */
struct sb_sync_hint {
	uint32_t kick;		/* the kick word as last seen */
	int64_t moved_ns;	/* when it was seen to move; 0: never */
};
#define SB_SYNC_BEAT_NS	INT64_C(5000000)
#define SB_SYNC_HINT_NS	INT64_C(50000000)
bool sb_repl_sync_waiting(shmbus_channel *ch, struct sb_sync_hint *hint);
/* Wakes the agent now (a link handed over, or a stop). */
void sb_repl_kick(shmbus_channel *ch);
/* The agent's cursor slot: a subscriber that never reads, whose position
 * holds producers back (block policy) like a slow reader's. */
void sb_sub_seek(shmbus_sub *sub, uint64_t pos);

/* Shipping.  The end of the committed records from `from` (a record
 * boundary), at most `most` bytes further; `from` itself if nothing is
 * committed there or `from` was lapped.  Only records a standby would
 * apply count (sb_apply_check()'s rules): the walk ends at one it would
 * refuse, as at a claim not committed yet. */
uint64_t sb_committed_end(shmbus_channel *ch, uint64_t from, uint64_t most);
struct sb_marks;
/* Whether the walk above stopped at pos because the ring is damaged
 * there (a record of this lap that breaks the rules; with mk, also a
 * sequence number not above the last one walked), not for a claim still
 * to be committed: true with *why saying what is wrong. */
bool sb_ring_damage(shmbus_channel *ch, uint64_t pos,
		    const struct sb_marks *mk, char *why, size_t whylen);
/* Whether the ring's head cannot be right for a reader that has every
 * record before pos: behind pos (a header written over), or more than a
 * lap ahead of it where no producer can have gone: on a block channel
 * whose producers the reader's cursor holds a lap behind pos (held), or
 * with no record indexed in the lap below it (producers that lap leave
 * the index naming boundaries there).  On a ring written by a standby's
 * agent (lap_is_gap), which restarts it past a lap indexing the new head
 * only, a lap is a gap: only the first rule holds.  True with *why
 * saying what is wrong. */
bool sb_head_damage(shmbus_channel *ch, uint64_t pos, bool held,
		    bool lap_is_gap, char *why, size_t whylen);

/*
 * Record boundaries that a walk over committed records passed, at most
 * `step` apart, kept so that the frames cut from what it walked need no
 * second walk: a backlog longer than the cache is read from memory once
 * for its commit words, not twice.  A queue: the walk appends, the
 * shipper takes from the front; marks that do not fit are not kept
 * (the shipper walks that part itself).
 */
#define SB_MARKS_MAX 256

struct sb_marks {
	uint64_t at[SB_MARKS_MAX];	/* ascending; at[lo..n) not taken */
	uint32_t lo, n;
	uint64_t step;
	uint64_t last;			/* the last boundary marked, or
					 * where the walk began */
	uint64_t seq;			/* of the last record walked */
	bool have_seq;
};

/* No marks; the next walk starts at `from`, and marks every `step`. */
void sb_marks_reset(struct sb_marks *mk, uint64_t from, uint64_t step);
/* sb_committed_end() from mk->last's walk on, marking what it passes
 * (`from` must be where the previous walk ended). */
uint64_t sb_committed_end_marked(shmbus_channel *ch, uint64_t from,
				 uint64_t most, struct sb_marks *mk);
/* The furthest mark in (from, from + most], taken with every mark below
 * it; 0 if there is none. */
uint64_t sb_marks_take(struct sb_marks *mk, uint64_t from, uint64_t most);
uint64_t sb_ring_head(shmbus_channel *ch);
/* The channel's next sequence number (prod_line.seq): every record that a
 * writer of the ring committed before the caller's last acquire load of
 * a commit word (A1) has a sequence number below it. */
uint64_t sb_ring_next_seq(shmbus_channel *ch);
/* The oldest record boundary the ring still holds. */
uint64_t sb_ring_oldest(shmbus_channel *ch);
/* Whether a committed record of this lap starts at pos (or pos is
 * head): the ring still holds pos, though the index may not name it. */
bool sb_ring_has_record(shmbus_channel *ch, uint64_t pos);
/* Pointers into the mapping for [from, to): 1 or 2 iovecs, -EINVAL. */
int sb_ring_span(shmbus_channel *ch, uint64_t from, uint64_t to,
		 struct iovec iov[2]);
/* The size of the committed record of the word alone (padding, a gap) at
 * pos, and its type in *type (0 if there is none there): one longer than
 * a reader's buffer is taken by its word. */
uint64_t sb_ring_pad_at(shmbus_channel *ch, uint64_t pos, uint32_t *type);
/* The size of the committed record at pos that a standby would apply, and
 * its type in *type (0 if there is none there).  Only the record itself
 * is checked (not its sequence number against the one before). */
uint64_t sb_ring_rec_at(shmbus_channel *ch, uint64_t pos, uint32_t *type);
/* After reading (or sending) bytes from `from` on: whether no producer
 * has claimed over them since (overwrite channels). */
bool sb_ring_holds(shmbus_channel *ch, uint64_t from);
/* Whether a committed message (or skip) of this lap starts at pos, with
 * its sequence number in *seq, read and then found not overwritten. */
bool sb_ring_seq_at(shmbus_channel *ch, uint64_t pos, uint64_t *seq);

/* shmbusd, before it maps any channel: its mappings are not faulted in
 * page by page when made; its first touch of a page (replication, the
 * journal) faults it then.  Producers' and subscribers' mappings still
 * are. */
void sb_channel_no_prefault(void);

/* A publisher of a multi-producer channel that never waits on another
 * producer: it claims only while no claim is in flight, and gives up
 * (-EAGAIN) if one stays in flight.  For publishers that must not hang
 * on a channel other processes can write (shmbusd's dead letters, a
 * direct-mode member's): a live process may fake a claim for ever. */
void sb_pub_bounded(shmbus_pub *pub);

/* Applying, on a standby.  The writer waits up to timeout_ns for the
 * standby's own subscribers (block policy) before sb_apply() returns
 * -ETIMEDOUT. */
shmbus_pub *sb_writer_open(shmbus_channel *ch, int64_t timeout_ns);
void sb_writer_close(shmbus_pub *w);
/* The ring was cut back under it: its room is computed afresh. */
void sb_writer_reset(shmbus_pub *w);
/* What sb_apply_check() learnt of a frame's records, for sb_apply(): its
 * one walk over them. */
struct sb_frame {
	uint64_t nmsgs;		/* messages (not skipped, not padding) */
	uint64_t nbytes;	/* their and skipped records' payload bytes */
	uint64_t first_seq;	/* of the first record that is not padding,
				 * UINT64_MAX if none */
	uint64_t last_seq;	/* of the last record that is not padding */
	uint64_t last_pos;	/* its position, UINT64_MAX if none */
	uint64_t last_word;	/* its commit word */
	uint64_t extent;	/* the ring's bytes the frame stands for:
				 * len, or a lone record's size where it is
				 * its word alone */
};

/* Whether buf holds whole, valid records for [pos, pos + len): 0 (and
 * *f), or -EBADMSG and a reason in why.  A frame of 8 bytes may also be
 * the word alone of one record of padding or a gap longer than that (its
 * bytes after the word carry nothing): f->extent says how long.  Also
 * the journal's check of what it reads from the ring. */
int sb_apply_check(shmbus_channel *ch, uint64_t pos, const uint8_t *buf,
		   size_t len, struct sb_frame *f, char *why, size_t whylen);
/* Writes records checked by sb_apply_check() (f) at [pos, pos +
 * f->extent), pos being head (-ESTALE). */
int sb_apply(shmbus_pub *w, uint64_t pos, const uint8_t *buf, size_t len,
	     const struct sb_frame *f);
/* At start: the end of the committed records (head is moved back over
 * an apply cut short), or UINT64_MAX if head is corrupt or a committed
 * word below it is damaged (head is then left as it is). */
uint64_t sb_apply_recover(shmbus_channel *ch);
/* A standby's head found below `to`, the end its own agent applied: a
 * single producer's claim taken back over the agent's head (design.md
 * §4) moved it there, and wrote nothing.  If the records from head to
 * `to` are whole, head returns to `to`.  The head after; by the agent's
 * thread, or with it stopped. */
uint64_t sb_apply_reclaim(shmbus_channel *ch, uint64_t to);
/* The standby cannot be caught up from head: it goes on from pos (> head).
 * Readers at head are sent there, and count what they lost: GAP records
 * within a lap, else a lap. */
int sb_apply_restart(shmbus_pub *w, uint64_t pos);


/* ---------------------------------------------------------------------
 * The journal (lib/journal*.c, docs/journal.md), for shmbusd's journal
 * agent, shmbusctl and busstat.  Segment files: journal.h.
 */

/* A subscriber at pos (see sb_sub_open_at() in subscriber.c): 0, or
 * -ERANGE if pos is not a position the ring can still be held at.
 * next_seq is the sequence number due at pos (UINT64_MAX: not known);
 * with `gap`, the positions just before pos lacked messages, and the
 * first message's `lost` counts from next_seq, as after a GAP record. */
shmbus_sub *sb_sub_open_at(shmbus_channel *ch,
			   const struct shmbus_sub_attr *attr, uint64_t pos,
			   uint64_t next_seq, bool gap, int *err);

/* Frees the handle; the slot stays held at its cursor (see
 * subscriber.c). */
void sb_sub_abandon(shmbus_sub *sub);

/* A kept cursor slot (kind SHMBUS_SLOT_JOURNAL or SHMBUS_SLOT_REPL),
 * which no process owns and shmbusd's restarts leave in place: the one
 * the channel has, where it is (*taken), or a new one at pos if the ring
 * can be held there, else at the oldest position it can (see
 * subscriber.c).  Its position is shmbus_sub_stats()'s.  Release it when
 * its agent is turned off for good. */
shmbus_sub *sb_sub_kept(shmbus_channel *ch, uint32_t kind, uint64_t pos,
			bool *taken, int *err);
void sb_sub_kept_release(shmbus_channel *ch, uint32_t kind);

/* The ring's identity (the random id naming its data file): a ring made
 * again has another. */
uint64_t sb_ring_id(shmbus_channel *ch);

/* A ring just made (head and seq 0) continues at pos with sequence
 * number seq, as after a reboot that left the journal: positions never
 * go back.  -EEXIST if the ring was used. */
int sb_ring_continue(shmbus_channel *ch, uint64_t pos, uint64_t seq);

/* The journal's words in shmbusd's area (one writer: the channel's
 * journal agent).  The positions and the state are stored from what this
 * process holds, and sb_jnl_read() answers from that (see
 * sb_ack_restore()). */
void sb_jnl_setup(shmbus_channel *ch, const char *dir, uint32_t seg_log2,
		  bool acks);
/* No journal writes the channel; `acks`: it is configured to acknowledge
 * persisted, so nothing is acknowledged. */
void sb_jnl_off(shmbus_channel *ch, bool acks);
/* Every record below pos is in the files (R25). */
void sb_jnl_written(shmbus_channel *ch, uint64_t pos);
/* Every record below pos is fdatasync'd; `ack`: it counts for the
 * persisted level (not while the disk is full). */
void sb_jnl_persisted(shmbus_channel *ch, uint64_t pos, bool ack);
/* The ring cut back to pos (no agent running): the positions no further
 * than pos. */
void sb_jnl_cut(shmbus_channel *ch, uint64_t pos);
uint32_t sb_jnl_state(shmbus_channel *ch, uint32_t set, uint32_t clear);
void sb_jnl_oldest(shmbus_channel *ch, uint64_t pos, uint64_t bytes,
		   uint32_t keep);
void sb_jnl_count(shmbus_channel *ch, uint64_t syncs, uint64_t gaps,
		  uint64_t gap_bytes);

struct sb_jnl_view {
	uint64_t written, persisted, oldest, bytes, syncs, gaps, gap_bytes;
	uint64_t head;
	uint32_t state, seg_log2, keep;
	char dir[192];
};
void sb_jnl_read(shmbus_channel *ch, struct sb_jnl_view *v);

/* ---------------------------------------------------------------------
 * Consumer groups (lib/group*.c), for shmbusd and busstat.
 */

/* One member of a group, as busstat shows it. */
struct sb_member_info {
	uint32_t index;
	uint32_t pid;
	bool alive;
	char name[32];
	char comm[16];
	uint64_t delivered, acked, stale;
};

/* Calls fn for each group of channel `name` in directory `dir` (its
 * ".NAME@GROUP.group" files), with the group's name.  Returns the number
 * of groups, or -errno.  A non-zero return from fn stops the walk. */
int sb_group_list(const char *dir, const char *name,
		  int (*fn)(const char *group, void *arg), void *arg);
/* A directory's change time (ns), read before a listing of it, and whether
 * the listing may be kept while that time stays *t: not when it is within
 * a second of now, where a change in the same tick of the directory's
 * clock would leave the time as it is.  0 or -errno. */
int sb_dir_time(const char *dir, int64_t *t, bool *settled);
/* The same for every channel's groups at once, in one reading of dir:
 * fn(chan, group, arg) for each (a directory that holds many channels is
 * read once, not once for each). */
int sb_group_list_all(const char *dir,
		      int (*fn)(const char *chan, const char *group, void *arg),
		      void *arg);

/*
 * Reads group `group` of channel ch (opened read-only is enough) from
 * directory dir: its counters in *st, and up to *n members in mi (*n set
 * to how many there are).  0, or -errno (-EBADMSG: a corrupt file).
 */
int sb_group_inspect(shmbus_channel *ch, const char *dir, const char *group,
		     struct shmbus_group_stats *st, struct sb_member_info *mi,
		     unsigned *n);

/*
 * A ring cut back to pos (docs/failover.md, "Rejoin"): group `group`
 * forgets what it took or acknowledged at or past pos, and starts again
 * from pos, or from its floor if lower (what its dead members held comes
 * again, not flagged as a redelivery).  For a channel whose fence says
 * CUT, so that nobody joins meanwhile, nor takes a subscriber slot
 * (F7).  The cut holds no removers' flock: a removal in direct mode may
 * give the group's slot back under it, but nobody takes that slot before
 * the fence leaves CUT, after the last group's cut (rp_rejoin_cut()), so
 * the floor it writes there reaches no subscriber.  0; -EBUSY
 * while a live member is joined (or a lane is held); -EBADMSG for a
 * corrupt group file; -errno.
 */
int sb_group_cut(shmbus_channel *ch, const char *dir, const char *group,
		 uint64_t pos);

/* shmbusd: a group's file, opened (created from `a` if absent and `a` is
 * not NULL) for channel ch of directory dir: a descriptor or -errno. */
int sb_group_open_file(shmbus_channel *ch, const char *dir,
		       const char *chan, const char *group,
		       const struct shmbus_group_attr *a);

/* shmbusd: the checked settings of a new group (defaults filled in). */
int sb_group_settings(const struct shmbus_group_attr *a,
		      struct shmbus_group_attr *out);

/* A group as replication ships it: its settings and its floor. */
struct sb_group_state {
	char name[64];
	char dead_letter[64];
	uint32_t mode, window, lanes, max_deliveries;
	int64_t lease_ns;
	uint64_t floor;
	uint64_t lane_acked[64];	/* keyed, single-active: each lane's
					 * acknowledged position (its first
					 * `lanes` only); shared: 0 */
	uint64_t delivered_to;		/* shared: claims start here or
					 * above from now on (what was
					 * delivered lies below); lanes: 0 */
	uint64_t lane_next[64];		/* keyed, single-active: each lane's
					 * delivery cursor; shared: 0 */
};

/* shmbusd's replication agent: group `group` of channel ch (in dir) as
 * it ships it.  0 or -errno. */
int sb_group_state_get(shmbus_channel *ch, const char *dir, const char *group,
		       struct sb_group_state *st);

/*
 * shmbusd on a standby: makes group st->name of channel ch (in dir) if it
 * does not exist, with st's settings, and raises its floor to
 * min(st->floor, upto) (upto: what the standby's ring holds), and each
 * lane's acknowledged position to min(st->lane_acked[i], upto), each
 * only if a record of the ring starts there (or it is upto).  Claims
 * held here that the floor passes are passed as DEAD, lanes held here
 * are taken back; claims held here past it stay (returns -EBUSY until it
 * passes them).  What the primary delivered, below min(st->delivered_to,
 * upto) (shared) or each min(st->lane_next[i], upto) (lanes), is flagged
 * redelivered when delivered here.  0 or -errno (-EAGAIN: a group to
 * make while the ring is being cut back; -ENOLCK: a maintenance of the
 * group held its lock for the 100 ms this waited: not applied, the next
 * state is; -EIDRM: a removal of the group under way here, which waits
 * for an update under way as it waits for a maintenance).
 */
int sb_group_state_apply(shmbus_channel *ch, const char *dir,
			 const char *chan, const struct sb_group_state *st,
			 uint64_t upto);

/*
 * shmbusd, promoting a standby (its ring's writer stopped, its fence not
 * yet open): the lanes of channel ch's keyed and single-active groups
 * (in dir) whose position the standby's writer overwrote go on from the
 * oldest record the ring holds.  That writer does not wait for its
 * groups' copies, which follow the primary's every 20 ms: a copy more
 * than a ring behind is lapped, and would find its lane's next record
 * overwritten for good.  What it skips, up to the ring's first index
 * entry past the overwritten bytes, the primary's group had acknowledged,
 * except for records of that last stretch; its bytes are counted in the
 * group's lost_bytes and last loss.  Shared groups skip a lap on their
 * own.  Each group's pass holds the removers' flock shared (waiting 20 ms
 * at most for a removal under way), so that a removal in direct mode
 * waits for it before it gives the channel's slot back; a deleted group
 * is left alone.  Returns the lanes moved, or -errno (-EBUSY: a group's
 * lock stayed held).
 */
int sb_group_lanes_unlap(shmbus_channel *ch, const char *dir,
			 const char *chan);

/* shmbusd: one maintenance run over group `group` of channel ch (see
 * shmbus_group_maintain()), publishing poison records with the
 * publisher dl_for() gives for the dead-letter channel the group's file
 * names (NULL: not now, or, with *drop set, never: poison is dropped and
 * counted).  Returns the changes made, or -errno. */
/* What shmbusd saw of a group's file: its inode and its size. */
struct sb_file_seen {
	uint64_t ino, size;
};
/* shmbusd, at each scan: a group's file cut short by a member (its fd is
 * writable) is given back the size it had when first seen, so that the
 * other members read zeros there (damage: -EBADMSG) instead of dying of
 * SIGBUS.  1 if it was short and is mended, 0 if not, -errno. */
int sb_group_file_mend(const char *dir, const char *chan, const char *group,
		       struct sb_file_seen *seen);
/* A group's maintenance by shmbusd (no member of it), on its file: dl_for
 * gives the publisher of the dead-letter channel its file names (NULL:
 * none now; *drop: never, poison is dropped and counted).  0 or more, or
 * -errno (-EIDRM: the group is being deleted). */
typedef shmbus_pub *(*sb_dl_for_fn)(const char *name, void *ctx, bool *drop);
int sb_group_maintain_file(shmbus_channel *ch, const char *dir,
			   const char *group, sb_dl_for_fn dl_for, void *ctx);
/* The same on a group's file kept mapped across scans: sb_group_keep()
 * maps it (NULL with *err), sb_group_maintain_kept() maintains it, and
 * sb_group_unkeep() lets it go (before its channel is closed).  A file
 * removed or made again since it was mapped is the caller's to notice
 * (the directory's change time); a deleted group's mapping, or one whose
 * file is no longer there, is maintained as -EIDRM, without a write.  A
 * kept mapping holds no descriptor: each maintenance opens the file for
 * its pass and holds the removers' flock shared through it, so that a
 * removal in direct mode waits for the pass (or gives up: -EBUSY). */
struct shmbus_group *sb_group_keep(shmbus_channel *ch, const char *dir,
				   const char *group, int *err);
int sb_group_maintain_kept(struct shmbus_group *m, sb_dl_for_fn dl_for,
			   void *ctx);
void sb_group_unkeep(struct shmbus_group *m);

#endif /* SHMBUS_CONTRACT_H */
