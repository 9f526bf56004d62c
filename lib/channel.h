/* SPDX-License-Identifier: MIT */
/*
 * channel.h - the library's private view of a mapped channel.
 *
 * The immutable geometry (capacity, max_msg, flags...) is read from the
 * shared header once, validated, and kept here in private memory: the hot
 * paths never re-read it from shared memory, so a process that scribbles
 * over the header later cannot make another read out of bounds.
 */
#ifndef SHMBUS_CHANNEL_H
#define SHMBUS_CHANNEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include "shmbus.h"
#include "shmbus/layout.h"
#include "atomic.h"

#define SHMBUS_EXPORT __attribute__((visibility("default")))

_Static_assert(SHMBUS_MAX_SLOTS == SHMBUS_MAX_SUBSCRIBERS,
	       "the manual's slot limit is the layout's");

/* The 8-byte words of the header's identity lines (0 and 1). */
#define SB_IDENT_WORDS	(2 * SHMBUS_CACHELINE / 8)

struct shmbus_channel {
	struct shmbus_hdr *hdr;		/* control region, read-write */
	struct shmbus_prod_slot *prods;	/* in the data file's last page */
	struct shmbus_prod_line *pl;	/* there too: head, handoff, seq... */
	struct shmbus_sub_slot *subs;
	struct shmbus_seg *segs;
	struct shmbus_mbox *mbox;	/* in the data file's last page */
	struct shmbus_daemon_area *daemon;	/* there too: shmbusd's words */
	uint8_t *data;			/* data region (the data file) */
	size_t map_len;			/* of the control file's mapping */
	size_t data_len;		/* of the data file's mapping */
	uint64_t data_id;
	uint64_t cap;			/* validated copies of the geometry */
	uint64_t mask;
	uint32_t cap_log2;
	uint32_t seg_log2;
	uint32_t max_msg;
	uint32_t flags;
	uint32_t nslots;
	int huge;
	bool rdonly;			/* inspection only */
	bool no_pub;			/* opened through shmbusd to subscribe */
	bool no_sub;			/* opened through shmbusd to publish */
	struct shmbus_bus *bus;		/* the connection it was opened on */
	char dir[256];			/* direct mode: the channel's directory
					 * ("" through shmbusd) */
	char name[256];			/* its name */
	/* Its groups' files as this process maps them (group.c): one
	 * mapping per file, however many members join here, so that every
	 * member in the process works on the same addresses. */
	pthread_mutex_t gmap_lock;	/* made by sb_gmap_init() */
	uint32_t gmap_pid;		/* the process it was made in */
	struct sb_gmap *gmaps;
	void *bus_ref;			/* its entry there (client.c) */
	bool fence_synced;		/* shmbusd: a membarrier(2) ran through
					 * this mapping since the fence was
					 * last open (sb_fence_set()) */
	size_t fence_slot;		/* 1 + the index of its ring's fence
					 * this process set, or 0 ... */
	size_t fence_looked;		/* ... and the entries looked at
					 * without finding it (replica.c) */
	/* The header's identity (lines 0 and 1) as this handle validated
	 * it; shmbusd writes it back where a process wrote over it
	 * (sb_ident_restore()). */
	uint64_t ident[SB_IDENT_WORDS];
};

/* How map_fd() maps a channel file. */
enum sb_map_mode {
	SB_MAP_RW,		/* direct mode: everything read-write */
	SB_MAP_RO,		/* inspection: everything read-only */
	SB_MAP_PUB,		/* through shmbusd, to publish */
	SB_MAP_SUB,		/* through shmbusd, to subscribe: the data
				 * file is mapped read-only */
};

/*
 * A thread cancelled inside a step that holds a lock of the library (a
 * reply awaited from shmbusd, a group's file being made) would leave it
 * held for good, and every other thread's call waiting on it.  Such calls
 * run with cancellation disabled: a cancel asked meanwhile acts at the
 * thread's next cancellation point after the call returns.
 */
static inline int sb_cancel_off(void)
{
	int old = PTHREAD_CANCEL_ENABLE;

	pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
	return old;
}

static inline void sb_cancel_restore(int old)
{
	pthread_setcancelstate(old, NULL);
}

static inline bool ch_overwrite(const struct shmbus_channel *ch)
{
	return ch->flags & SHMBUS_F_OVERWRITE;
}

static inline bool ch_multi(const struct shmbus_channel *ch)
{
	return ch->flags & SHMBUS_F_MULTI_PRODUCER;
}

/* The longest message the mailbox carries on this channel. */
static inline uint32_t ch_mbox_max(const struct shmbus_channel *ch)
{
	return ch->max_msg < SHMBUS_MBOX_INLINE ? ch->max_msg
						: SHMBUS_MBOX_INLINE;
}

static inline uint64_t align8(uint64_t n)
{
	return (n + (SHMBUS_REC_ALIGN - 1)) & ~(uint64_t)(SHMBUS_REC_ALIGN - 1);
}

/* Bytes a message record of `len` payload bytes occupies in the ring. */
static inline uint64_t rec_size(uint64_t len)
{
	return SHMBUS_REC_HDR + align8(len);
}

/* Whether a record of this type is its commit word alone (PAD, GAP): it
 * occupies SHMBUS_REC_ALIGN + its length, a multiple of 8, and has no
 * seq. */
static inline bool type_word_only(uint32_t type)
{
	return SHMBUS_REC_WORD_ONLY(type);
}

/* Bytes a record of this type and length occupies in the ring. */
static inline uint64_t rec_bytes(uint32_t type, uint32_t len)
{
	return type_word_only(type) ? SHMBUS_REC_ALIGN + (uint64_t)len
				    : rec_size(len);
}

/* Whether a committed word's type and length can be a record's of a
 * channel whose messages are at most max_msg bytes. */
static inline bool rec_shape_ok(uint32_t type, uint32_t len, uint32_t max_msg)
{
	return type_word_only(type) ? len % SHMBUS_REC_ALIGN == 0
		: (type == SHMBUS_REC_MSG || type == SHMBUS_REC_SKIP) &&
		  len <= max_msg;
}

/* The lap tag of position pos in a ring of 2^cap_log2 bytes: never 0, so
 * a zeroed word is never valid. */
static inline uint32_t lap_tag_log2(uint64_t pos, uint32_t cap_log2)
{
	uint32_t t = (uint32_t)(pos >> cap_log2) + 1u;

	return t ? t : 1u;
}

static inline uint32_t lap_tag(const struct shmbus_channel *ch, uint64_t pos)
{
	return lap_tag_log2(pos, ch->cap_log2);
}

static inline uint64_t commit_word(const struct shmbus_channel *ch,
				   uint64_t pos, uint32_t type, uint32_t len)
{
	return (uint64_t)lap_tag(ch, pos) << 32 |
	       (uint64_t)type << SHMBUS_LEN_BITS | len;
}

static inline uint32_t word_tag(uint64_t w)
{
	return (uint32_t)(w >> 32);
}

static inline uint32_t word_type(uint64_t w)
{
	return (uint32_t)(w >> SHMBUS_LEN_BITS) & 7u;
}

static inline uint32_t word_len(uint64_t w)
{
	return (uint32_t)w & SHMBUS_LEN_MASK;
}

/* The record (or commit word) at ring position `pos`. */
static inline struct shmbus_rec *rec_at(const struct shmbus_channel *ch,
					uint64_t pos)
{
	return (struct shmbus_rec *)(ch->data + (pos & ch->mask));
}

/*
 * Whether a reader's copy of the bytes at [pos, pos + len) can still be
 * trusted, given the producers' claim position `head` loaded after the
 * copy: nothing at or past pos + cap has been claimed, and the header word
 * a producer invalidates at the end of its claim (8 bytes past head) does
 * not reach pos + cap either.
 */
static inline bool not_overwritten(const struct shmbus_channel *ch,
				   uint64_t pos, uint64_t head)
{
	return head + SHMBUS_REC_ALIGN <= pos + ch->cap;
}

/*
 * Largest `need` (records bytes) one claim may ask for.  A claim takes
 * need + wrap padding (< need) + the next header word it invalidates (8),
 * which then always fits in one lap: a caught-up block-policy producer can
 * always make progress.
 */
static inline uint64_t max_need(const struct shmbus_channel *ch)
{
	return ch->cap / 2 - SHMBUS_REC_ALIGN;
}

/* An owner word with no tag: FREE, GROUP and the kept states (no pid), a
 * consumer group's member record, a test's forged word. */
static inline uint64_t owner_word(uint32_t state, uint32_t pid)
{
	return (uint64_t)pid << 32 | state;
}

static inline uint32_t owner_state(uint64_t o)
{
	return (uint32_t)o & SHMBUS_OWNER_STATE_MASK;
}

static inline uint32_t owner_pid(uint64_t o)
{
	return (uint32_t)(o >> 32);
}

static inline uint32_t owner_tag(uint64_t o)
{
	return (uint32_t)o >> 8;
}

/* This process's start tag (pid.c; 0 if /proc could not tell). */
uint32_t sb_self_tag(void);

/* The owner word this process writes into a producer or subscriber
 * slot: its pid and its start tag. */
static inline uint64_t own_word(uint32_t state)
{
	return (uint64_t)(uint32_t)getpid() << 32 |
	       (uint64_t)sb_self_tag() << 8 | state;
}

/* The word a repair writes for `pid`, the repairer (its own, if it is
 * this process). */
static inline uint64_t repairer_word(uint32_t state, uint32_t pid)
{
	return pid == (uint32_t)getpid() ? own_word(state)
					 : owner_word(state, pid);
}

/* The single producer's role word (prod_line.sp_owner): its holder's pid,
 * without the repairing bit, and start tag. */
static inline uint32_t role_pid(uint64_t w)
{
	return (uint32_t)w & ~SHMBUS_SP_REPAIRING;
}

static inline uint32_t role_tag(uint64_t w)
{
	return (uint32_t)(w >> 32);
}

/* The role word this process writes: `pid` (ours: with our tag) and
 * `flags` (SHMBUS_SP_REPAIRING or 0). */
static inline uint64_t role_word(uint32_t pid, uint32_t flags)
{
	uint64_t tag = pid == (uint32_t)getpid() ? sb_self_tag() : 0;

	return tag << 32 | (pid & ~SHMBUS_SP_REPAIRING) | flags;
}

/* Whether a slot's owner, named by its word, is gone for good: no such
 * process, a zombie, or a process of another start tag given its pid
 * (pid.c).  sb_owner_alive(): the process exists (a stopped one does)
 * and is not of another tag. */
bool sb_owner_gone(uint64_t o);
/* Whether owner word o names this process: our pid, with our start tag
 * or none (a word with our pid and another tag is a dead process's whose
 * pid we were given).  Whether one of our handles holds the slot is
 * another question (sb_held_here()). */
bool sb_word_is_ours(uint64_t o);
bool sb_owner_alive(uint64_t o);
bool sb_owner_gone_as(uint32_t pid, uint32_t tag);
bool sb_owner_alive_as(uint32_t pid, uint32_t tag);

/* A cursor slot no process owns, that shmbusd keeps across its
 * restarts: the journal's or the replication agent's. */
static inline bool sb_slot_kept(uint32_t state)
{
	return state == SHMBUS_SLOT_JOURNAL || state == SHMBUS_SLOT_REPL;
}

/* Whether a subscriber slot's cursor holds producers back (block
 * policy): a subscriber's, a consumer group's floor, or a kept one. */
static inline bool sb_slot_gates(uint64_t o)
{
	return owner_state(o) == SHMBUS_SLOT_ACTIVE ||
	       owner_state(o) == SHMBUS_SLOT_GROUP ||
	       sb_slot_kept(owner_state(o));
}

/* Raises hdr.nsub_hwm, the count of subscriber slots ever used, to at
 * least n (subscriber.c): before a slot is taken, and by shmbusd's scan
 * where it finds the mark written below a slot in use.  This library's
 * producers scan every slot all the same (sb_refresh_limit()). */
void sb_hwm_raise(struct shmbus_hdr *h, uint32_t n);

/* Stops asking for posts (closing, or a repair of a dead owner's slot i):
 * clears the slot's bit in hdr.mbox_want.  No edge: a hint (publish_sp.c's
 * sp_committed()). */
static inline void sb_mbox_unwant(struct shmbus_channel *ch, uint32_t i)
{
	and_relaxed64(&ch->hdr->mbox_want, ~(UINT64_C(1) << i));
}

/* Slot i no longer sleeps (closing, or a repair): clears its bit in
 * hdr.sleep_ok.  No edge: producers then only skip a wake check that
 * nobody needs. */
static inline void sb_sleep_unannounce(struct shmbus_channel *ch, uint32_t i)
{
	and_relaxed64(&ch->hdr->sleep_ok, ~(UINT64_C(1) << i));
}

/* Internal entry points shared between the library's files. */
int sb_prod_wake(struct shmbus_channel *ch);

/* A handle a fork's child must not use (fork.c): listed from its open to
 * its close; `forked` runs in the child of a fork, on the child's copy. */
struct sb_forkable {
	struct sb_forkable *prev, *next;
	void (*forked)(struct sb_forkable *);
};
void sb_fork_track(struct sb_forkable *f,
		   void (*forked)(struct sb_forkable *));
/* Unlists f, if it was listed (a handle never listed is zeroed). */
void sb_fork_untrack(struct sb_forkable *f);
#define sb_container_of(p, type, member) \
	((type *)(void *)((char *)(p) - __builtin_offsetof(type, member)))
/* FUTEX_WAIT on word while it holds val, at most timeout_ns (< 0: no
 * limit).  0, or -errno (-EAGAIN: the word had changed already). */
int sb_futex_sleep(uint32_t *word, uint32_t val, int64_t timeout_ns);
/* A producer's wake-up after a commit, made for one that died before it
 * (a repair, a take-over): wakes sleepers if any (repair.c). */
void sb_wake_check(struct shmbus_channel *ch);
/* A subscriber in slot `slot` says it may sleep (wait.c); false if it
 * must sleep only in short naps. */
bool sb_sleep_announce(struct shmbus_channel *ch, uint32_t slot);
int sb_sub_find_oldest(struct shmbus_channel *ch, uint64_t head,
		       uint64_t *pos);
int64_t sb_now_ns(void);
bool sb_pid_alive(uint32_t pid);
/* The producer and subscriber slots this process holds (pid.c): listed
 * before the CAS that writes our pid into one, unlisted after the store
 * that takes it out.  A slot that names our pid and is not listed is a
 * dead process's whose pid we were given.  sb_slot_gone() and
 * sb_slot_alive() judge a slot's owner as sb_owner_gone() and
 * sb_owner_alive() do, and a word that names us (sb_word_is_ours()) by
 * the list. */
enum { SB_HELD_PROD = 1, SB_HELD_SUB = 2 };
void sb_held_add(const struct shmbus_channel *ch, unsigned kind, uint32_t i);
void sb_held_drop(const struct shmbus_channel *ch, unsigned kind, uint32_t i);
bool sb_held_here(const struct shmbus_channel *ch, unsigned kind,
		  uint32_t i);
/* Around a CAS that writes our pid into slot i over its word `o`: lists
 * the slot before it (sb_held_add()) and unlists it if the CAS failed.
 * When `o` names our pid too, what a dead process with our pid left, a
 * thread of ours may have taken the slot since it was judged, writing
 * the very word the CAS compares: the slot is judged again, and the CAS
 * made, under the list's lock, which sb_held_end() releases.  Returns 0
 * (make no CAS, call no sb_held_end()) if a thread of ours holds it. */
int sb_held_begin(const struct shmbus_channel *ch, unsigned kind, uint32_t i,
		  uint64_t o);
void sb_held_end(const struct shmbus_channel *ch, unsigned kind, uint32_t i,
		 int token, bool took);
bool sb_slot_gone(const struct shmbus_channel *ch, unsigned kind, uint32_t i,
		  uint64_t o);
bool sb_slot_alive(const struct shmbus_channel *ch, unsigned kind,
		   uint32_t i, uint64_t o);
/* Whether this process is repairing a single producer's claim now
 * (sb_repair_sp() runs in one of its threads): a role word marked as
 * being repaired by this process's pid is then its own (repair.c). */
bool sb_sp_repairing_here(void);
/* How often a process held back by what a gone one left (a producer out
 * of room, a subscriber at an open claim) looks for gone processes. */
#define REAP_EVERY_NS	INT64_C(10000000)	/* 10 ms */
/* Multi producer: the claims and slots of producers that are gone
 * (sb_slot_gone()) released, as shmbusd's repairs do; `me` is the
 * repairer's pid.  The slots released. */
int sb_release_gone_producers(struct shmbus_channel *ch, uint32_t me);

/*
 * Time arithmetic on values shared memory holds (deadlines, when a
 * member last looked...) or an application passes (a timeout of
 * INT64_MAX): saturating, so that a hostile or absurd value gives an
 * absurd answer, never an overflow.
 */
static inline int64_t sb_after(int64_t t, int64_t ns)
{
	int64_t r;

	return __builtin_add_overflow(t, ns, &r) ? (ns < 0 ? INT64_MIN
							   : INT64_MAX)
						 : r;
}

static inline int64_t sb_elapsed(int64_t now, int64_t then)
{
	int64_t r;

	return __builtin_sub_overflow(now, then, &r) ? (then < 0 ? INT64_MAX
								 : INT64_MIN)
						     : r;
}

/* sb_name_ok(), sb_now_ns() and the other rules the daemon and the tools
 * share with the library: contract.h. */
int sb_name_ok(const char *name, size_t max);
/* No such process, or a zombie (pid.c). */
bool sb_pid_gone(uint32_t pid);
bool sb_sub_ready(struct shmbus_sub *sub, bool force);
void sb_sub_publish(struct shmbus_sub *sub);
/* Maps a channel from its two descriptors (control, data). */
struct shmbus_channel *sb_channel_map_fds(int ctl_fd, int data_fd,
					  enum sb_map_mode mode, int *err);
/* Opens the control file and the data file (read-write and read-only) of
 * a channel, for shmbusd to hand out.  0 or -errno. */
int sb_channel_open_fds(const char *dir, const char *name, int *ctl_fd,
			int *data_rw, int *data_ro);
void sb_bus_forget(struct shmbus_bus *bus, void *ref);
void sb_seg_index(struct shmbus_channel *ch, uint64_t p, uint64_t q);
void sb_commit_rec(struct shmbus_channel *ch, uint64_t pos, uint32_t type,
		   uint32_t len);
int sb_slot_take_group(struct shmbus_channel *ch, enum shmbus_start start,
		       const char *name, uint32_t *index, uint64_t *pos,
		       bool *fresh, uint64_t *seq);
void sb_slot_release_group(struct shmbus_channel *ch, uint32_t index);
void sb_slot_group_made(struct shmbus_channel *ch, uint32_t index);
/* Whether a group file of ch (direct mode: its directory) owns slot i;
 * also true when it cannot be told (no directory). */
bool sb_group_claims_slot(struct shmbus_channel *ch, uint32_t index);
/* Joins group `group` of channel `chan` through shmbusd: the group file's
 * fd, or -errno (-ESTALE: the name leads to a channel other than the one
 * of data id `data_id` now). */
int sb_bus_group(struct shmbus_bus *bus, const char *chan, uint64_t data_id,
		 const char *group, const struct shmbus_group_attr *a);
/* A channel's journal through shmbusd (SHMBUS_CTL_JOURNAL): LIST fills
 * bases[cap] (*count); SEG and TIX return a read-only fd.  -errno. */
int sb_bus_journal(struct shmbus_bus *bus, const char *chan, uint32_t what,
		   uint64_t base, uint64_t *bases, size_t cap, size_t *count);
/* The position acknowledged at `level` (SHMBUS_ACK_*) as the positions
 * in shmbusd's area say; `committed` for the local level. */
uint64_t sb_level_pos(const struct shmbus_daemon_area *d, uint32_t level,
		      uint64_t committed);

/* The journal's words of shmbusd's area as this process stored them
 * (replica.c keeps them with the replication words it stored): what
 * journal_ring.c answers the daemon from, never the shared words, which
 * a producer can write over.  sb_own_jnl_put() stores v as this
 * process's and in the shared word (jnl_written with R25);
 * sb_own_jnl_get(): false if this process never stored that word of
 * the ring. */
enum sb_own_jnl { SB_OWN_PERSISTED, SB_OWN_WRITTEN, SB_OWN_JSTATE };
void sb_own_jnl_put(struct shmbus_channel *ch, enum sb_own_jnl w,
		    uint64_t v);
bool sb_own_jnl_get(struct shmbus_channel *ch, enum sb_own_jnl w,
		    uint64_t *v);

/* Makes ch's lock of its group mappings (group_file.c), fork-safe. */
void sb_gmap_init(struct shmbus_channel *ch);

#endif /* SHMBUS_CHANNEL_H */
