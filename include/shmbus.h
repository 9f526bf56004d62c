/* SPDX-License-Identifier: MIT */
/*
 * shmbus.h - publish and receive messages through lock-free rings in
 * shared memory.  This header is the manual: every function says what it
 * does, who owns what, what it returns and whether it is thread-safe.
 *
 * Conventions
 *   - Functions return 0 (or a count) on success and a negative errno value
 *     on failure; shmbus_strerror() describes any of them.
 *   - Constructors return NULL and set errno.
 *   - Handles are opaque.  A channel handle may be shared by threads; a
 *     publisher or subscriber handle belongs to one thread at a time.
 *   - A close (shmbus_*_close(), shmbus_group_leave(), shmbus_disconnect())
 *     frees its handle, as free() does: the handle may not be used, or
 *     closed, again.  A channel handle is closed after every publisher,
 *     subscriber and group member made from it.
 *   - Nothing on the publish or poll path allocates, locks or makes a
 *     system call, except the futex wake that a producer makes when (and
 *     only when) a subscriber has said it sleeps.
 *   - Thread cancellation: the calls that hold a lock of the library
 *     across a blocking step (those that talk to shmbusd: shmbus_connect*(),
 *     shmbus_bus_*(), shmbus_disconnect(); shmbus_group_join() and
 *     shmbus_group_delete()) run with cancellation disabled, so a cancel
 *     never leaves a lock held or a half-made handle: it acts at the
 *     thread's next cancellation point after the call returns.
 *
 * Errors used throughout
 *   -EINVAL          a bad argument (null handle, bad attribute...)
 *   -EMSGSIZE        a message larger than the channel's max_msg, or than
 *                    the buffer it is read into; creating, a max_msg
 *                    larger than the capacity allows (shmbus_max_msg())
 *   -EAGAIN          nothing to read, or (block policy) no room right now
 *   -ETIMEDOUT       a wait ran out of time
 *   -EBADMSG         corrupt channel: a length, position or field read from
 *                    shared memory is out of bounds
 *   -EPROTO          the file is not a shmbus channel (bad magic)
 *   -EPROTONOSUPPORT the channel was made by an incompatible layout version
 *   -EEXIST          the channel exists and SHMBUS_CREATE_EXCL was given
 *   -EBUSY           a single-producer channel already has a live producer
 *   -ENOSPC          no free subscriber or producer slot, or /dev/shm full
 *   -ENOTCONN        no connection to shmbusd: it went away, or the bus
 *                    handle is NULL (shmbus_connect() failed)
 */
#ifndef SHMBUS_H
#define SHMBUS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version: the one place it is defined (the build takes
 * the shared library's and pkg-config's version from here).  A minor
 * version adds functions (symbol version SHMBUS_0.<minor>); the soname
 * changes only with the major one. */
#define SHMBUS_VERSION_MAJOR 0
#define SHMBUS_VERSION_MINOR 6
#define SHMBUS_VERSION_PATCH 0

/* Limits of a channel's layout (include/shmbus/layout.h, which defines
 * the same values): subscriber and producer slots, and the longest
 * message a single producer's mailbox carries. */
#define SHMBUS_MAX_SUBSCRIBERS	64u
#define SHMBUS_MAX_PRODUCERS	16u
#define SHMBUS_MBOX_INLINE	40u

typedef struct shmbus_channel shmbus_channel;
typedef struct shmbus_pub shmbus_pub;
typedef struct shmbus_sub shmbus_sub;
typedef struct shmbus_bus shmbus_bus;

/* ---------------------------------------------------------------- errors */

/* A static string for a shmbus return value (negative errno) or an errno.
 * Thread-safe. */
const char *shmbus_strerror(int err);

/*
 * The version of the library actually loaded, "MAJOR.MINOR.PATCH" (a
 * static string), which may be newer than the SHMBUS_VERSION_* macros a
 * program was compiled with.  Since version 0.2 (symbol version
 * SHMBUS_0.2).  Thread-safe.
 */
const char *shmbus_version(void);

/* --------------------------------------------------------------- channels */

enum shmbus_policy {
	/* A producer never overwrites what an active subscriber has not read;
	 * it gets -EAGAIN or waits. */
	SHMBUS_BLOCK = 0,
	/* A producer never waits for a subscriber (a multi producer may
	 * wait, or get -EAGAIN, behind another producer's unfinished
	 * claim); a lapped subscriber skips to the oldest valid record and
	 * is told how many messages it lost. */
	SHMBUS_OVERWRITE = 1,
};

enum shmbus_producers {
	SHMBUS_SINGLE_PRODUCER = 0,	/* one producer handle at a time */
	SHMBUS_MULTI_PRODUCER = 1,	/* any number, any processes */
};

struct shmbus_channel_attr {
	uint64_t capacity;	/* data bytes: power of two, 4 KiB..16 GiB */
	uint32_t max_msg;	/* largest payload: at most
				 * shmbus_max_msg(capacity); 0 means
				 * min(SHMBUS_DEFAULT_MAX_MSG, that) */
	enum shmbus_policy policy;
	enum shmbus_producers producers;
	int numa_node;		/* bind data pages to this node; -1: don't */
	mode_t mode;		/* file mode, e.g. 0600; 0 means 0600 */
};

/* The max_msg that an attribute's 0 stands for, when the capacity allows
 * it (min(this, shmbus_max_msg(capacity)) otherwise). */
#define SHMBUS_DEFAULT_MAX_MSG	65536u

/* Fills *attr with defaults: 1 MiB, max_msg 0 (the default for the
 * capacity, so that a smaller capacity set afterwards needs no other
 * change), block, single producer, no NUMA binding, mode 0600. */
void shmbus_channel_attr_init(struct shmbus_channel_attr *attr);

/*
 * The largest max_msg a channel of `capacity` bytes may have:
 * capacity/2 - 32 (a message, its 16-byte record header and the padding
 * of a wrap must fit half the ring), at most SHMBUS_MAX_MSG_LIMIT
 * (<shmbus/layout.h>: 2^29 - 8); 0 if
 * the capacity is not valid (a power of two, 4 KiB..16 GiB).  The one
 * rule: shmbus_channel_create(), shmbusd and shmbusctl all apply it.
 * Since version 0.2 (symbol version SHMBUS_0.2).  Thread-safe.
 */
uint32_t shmbus_max_msg(uint64_t capacity);

/*
 * Checks *attr as shmbus_channel_create() will, and says what is wrong
 * and what is allowed in `why` (`len` bytes, NUL-terminated; may be
 * NULL), e.g. "max_msg 1048576 is too large for capacity 65536 (64 KiB):
 * at most 32736 (capacity/2 - 32)"; an empty string when all is well.
 * Returns 0, -EMSGSIZE (max_msg too large for the capacity) or -EINVAL
 * (capacity, policy, producers, NUMA node, or a mode that is not 0 or
 * permission bits of at most 0777 with the owner's read and write).
 * Since version 0.2 (symbol version SHMBUS_0.2).  Thread-safe.
 */
int shmbus_channel_attr_check(const struct shmbus_channel_attr *attr,
			      char *why, size_t len);

/* Flags for shmbus_channel_create(). */
#define SHMBUS_CREATE_EXCL	0x1u	/* fail with -EEXIST if it exists */
#define SHMBUS_CREATE_REPLACE	0x2u	/* atomically replace whatever file
					 * is there (stale, corrupt, other
					 * geometry); mappers of the old one
					 * keep their old memory */

/*
 * Creates the channel `name` in directory `dir` (NULL: "/dev/shm") and
 * maps it.  A channel is two files: the control file `name` (header and
 * cursor slots) and the data file `.name.<id>.data` (the messages), so
 * that a subscriber can be given the messages read-only (see
 * shmbus_bus_open()).  Both are fully initialised, their pages allocated
 * (so /dev/shm running full is -ENOSPC here, never a SIGBUS later) and
 * pre-faulted before the control file is linked under its name: a crash
 * during creation never leaves a half-initialised channel behind (only
 * its files under temporary names, `.name.<pid>.<n>.tmp` and the data
 * file, which shmbusd removes when it starts on the directory).
 *
 * Bad attributes (a NULL attr included: shmbus_channel_attr_init() gives
 * the defaults) are -EINVAL or -EMSGSIZE (shmbus_channel_attr_check()
 * says which limit).  Without flags, an existing valid channel with the
 * same geometry is opened instead; one with another geometry is -EEXIST
 * (or, with SHMBUS_CREATE_EXCL, any existing one), and an invalid
 * file is reported with its error (-EPROTO, -EPROTONOSUPPORT, -EBADMSG):
 * pass SHMBUS_CREATE_REPLACE to replace it deliberately.
 *
 * `name` is one path component: [A-Za-z0-9._-], 1..200 bytes, not
 * starting with '.'.  Returns NULL and sets errno (positive) on failure.
 * Thread-safe.
 */
shmbus_channel *shmbus_channel_create(const char *dir, const char *name,
				      const struct shmbus_channel_attr *attr,
				      unsigned flags);

/*
 * Opens and maps an existing channel, validating every header field,
 * and faults the ring's pages into the mapping so that no page fault
 * lands on the data path.  Errors (in errno): ENOENT, EACCES, EPROTO,
 * EPROTONOSUPPORT, EBADMSG, EINVAL (a name the rule refuses),
 * ENAMETOOLONG (dir and name too long for a path), EISDIR (a directory
 * at the name).  Thread-safe.
 */
shmbus_channel *shmbus_channel_open(const char *dir, const char *name);

/*
 * Opens and maps a channel read-only, for inspection (busstat): only
 * shmbus_channel_info(), shmbus_channel_subscriber() and
 * shmbus_channel_producer() may be used on it; opening a publisher or a
 * subscriber fails with EPERM.  Needs only read permission on the files.
 * Unlike the other opens, it faults none of the ring's pages in: a look
 * costs microseconds whatever the ring's size.
 * Errors as shmbus_channel_open().  Thread-safe.
 */
shmbus_channel *shmbus_channel_open_ro(const char *dir, const char *name);

/* Unmaps the channel.  Every publisher, subscriber and group member
 * opened on it must be closed (left) first.  The file stays. */
void shmbus_channel_close(shmbus_channel *ch);

/* Removes the channel's files.  Mappers keep their memory. */
int shmbus_channel_unlink(const char *dir, const char *name);

struct shmbus_channel_info {
	uint64_t capacity;
	uint32_t max_msg;
	enum shmbus_policy policy;
	enum shmbus_producers producers;
	int numa_node;
	uint64_t create_ns;	/* CLOCK_REALTIME, ns */
	uint64_t head;		/* next position to claim */
	uint64_t published;	/* sequence numbers handed out: messages
				 * published, and claims aborted or left by a
				 * dead producer (each a SKIP record; aborts
				 * counts the former) */
	uint64_t bytes;		/* payload bytes published */
	uint64_t backpressure;	/* claims refused or delayed */
	uint64_t wakeups;	/* futex wakes made by producers */
	uint64_t aborts;	/* claims aborted */
	uint64_t repairs;	/* claims of dead producers repaired */
	uint64_t reaped;	/* slots of dead processes released */
	uint32_t subscribers;	/* active subscriber slots */
	uint32_t producers_active;
	int huge_pages;		/* 1 if the mapping is backed by huge pages */
	uint64_t stuck;		/* times shmbusd found subscribers waiting on
				 * a position that no live producer covers */
};

/* A snapshot of the channel's header and counters (values validated).
 * Thread-safe. */
int shmbus_channel_info(shmbus_channel *ch, struct shmbus_channel_info *info);

/* What shmbusd says of a replicated channel's replication, in the
 * channel's data file (docs/replication.md), as busstat shows it. */
struct shmbus_repl_info {
	int replicated;		/* 0: the rest is 0 */
	int standby;		/* this host is the channel's standby */
	int linked;		/* the link to the peer is up */
	int out_of_sync;	/* primary: the standby lags beyond the bound,
				 * or is gone */
	int strict;		/* out of sync: sync waiters are held */
	int fenced;		/* producers are refused here (-EROFS) */
	uint32_t level;		/* 0 local, 1 received, 2 applied,
				 * 4 standby_persisted, 5 both_persisted */
	uint64_t epoch;
	uint64_t head;
	uint64_t acknowledged;	/* the watermark */
	uint64_t received;	/* primary: the standby's positions */
	uint64_t applied;
	uint64_t lag_bytes;	/* primary: head - the level's position */
	uint64_t lag_messages;	/* the same in messages; UINT64_MAX if the
				 * ring no longer holds that position */
	uint64_t lag_ns;	/* primary: since the standby last had
				 * everything; 0 when it has; UINT64_MAX
				 * if it never had (unknown) */
	uint64_t frames;	/* shipped (primary) or applied (standby) */
	uint64_t bad_frames;	/* frames refused */
	uint64_t gaps;		/* standby restarts past a gap */
	uint64_t gap_bytes;
	uint64_t out_of_sync_events;
};

/* Fills *out for channel ch.  0 or -EINVAL.  Since version 0.3 (symbol
 * version SHMBUS_0.3).  Thread-safe. */
int shmbus_channel_replication(shmbus_channel *ch,
			       struct shmbus_repl_info *out);

/* ------------------------------------------------------------- publishing */

struct shmbus_pub_attr {
	/* Block policy, channel full: 0 returns -EAGAIN at once, a positive
	 * value waits up to that many ns then returns -ETIMEDOUT, a negative
	 * one (-1) waits for ever.  A wait spins, yields, and past a
	 * millisecond or so naps (up to 1 ms at a time): room made then is
	 * taken a nap later.  Only the wait for room is bounded: a multi
	 * producer's claim, once made, waits for the claims before it to be
	 * handed over (a few instructions after each), so a peer stopped
	 * between its claim and its hand-off holds it, whatever the
	 * timeout, until that peer runs again or dies (then repaired at
	 * once). */
	int64_t timeout_ns;
};

/*
 * Opens a publisher on `ch` (NULL attr: timeout 0).  A single-producer
 * channel admits one live publisher: a second gets -EBUSY (a publisher
 * left by a dead process is taken over; not one whose role word names a
 * gone process while a live one holds a producer slot: the word was
 * written over, and that live one is the publisher).  Returns NULL,
 * errno set.
 * The handle is for one thread at a time.
 *
 * Processes that die: a publisher held back (block policy: a full ring;
 * multi producer: a peer's unfinished claim) looks, at most every 10 ms
 * while held back, for slots whose process is gone (no such process, or a
 * zombie) and releases them itself: a dead subscriber's cursor, and a dead
 * multi producer's claim, which it turns into padding that subscribers
 * step over.  A multi producer waiting behind a dead producer's claim that
 * was never handed over does the same at once, and so does a subscriber
 * (with a writable mapping) that has waited 10 ms at a dead producer's
 * claim with later claims behind it.  shmbusd does all of this
 * within milliseconds of a death; this is what lets a channel without the
 * daemon (direct mode) recover.  A stopped or slow process is alive and is
 * never touched.  A slot, and a single producer's role, names its
 * owner's pid and start time: one whose pid was given to another process
 * since is released (or taken over) as a dead one's.  A process in a time
 * namespace that offsets boottime names its slots and role, and judges
 * others', by the pid alone: if a dead owner's pid is reused before its
 * slot is released, the slot looks alive until the new process exits.
 * All processes of a channel must share a pid namespace.
 */
shmbus_pub *shmbus_pub_open(shmbus_channel *ch,
			    const struct shmbus_pub_attr *attr);

/* Closes the publisher.  An outstanding claim is aborted.  A child's copy
 * of its parent's publisher after fork() is freed alone: the parent's
 * slot and claim stay.  Its calls that publish or claim, commit or abort
 * the parent's claim, or wait in shmbus_pub_sync() return -EPERM (after
 * their argument checks): the parent's slot and position are the
 * parent's alone (docs/shmbus.3, on fork). */
void shmbus_pub_close(shmbus_pub *pub);

/*
 * Zero-copy publishing.  shmbus_claim() reserves room for a message of
 * `len` bytes (0..max_msg) and stores a pointer to it in *buf; the caller
 * writes the payload and then calls shmbus_commit() (subscribers see it)
 * or shmbus_abort() (subscribers skip it).  One claim may be outstanding
 * per publisher.  Returns 0, -EMSGSIZE, -EAGAIN / -ETIMEDOUT (block policy,
 * full), -EBUSY (a claim is already outstanding), -EROFS (a replicated
 * channel on a standby, or handing over: see shmbus_pub_sync()) or
 * -EBADMSG.  shmbus_commit() and shmbus_abort() return 0, or -EINVAL
 * without a claim outstanding.
 */
int shmbus_claim(shmbus_pub *pub, size_t len, void **buf);
int shmbus_commit(shmbus_pub *pub);
int shmbus_abort(shmbus_pub *pub);

/*
 * Copies `len` bytes and publishes them as one message; returns as
 * shmbus_claim() does.  The quickest way to send a small message: up to
 * SHMBUS_MBOX_INLINE bytes, a single producer's publish is one short
 * function, with nothing of the claim/commit pair's bookkeeping.
 */
int shmbus_publish(shmbus_pub *pub, const void *data, size_t len);

/* Publishes the concatenation of `iov` (iovcnt entries, 0 or more; no
 * IOV_MAX limit) as one message (header+payload).  Returns as
 * shmbus_publish() does: -EINVAL for a NULL pub, iovcnt < 0, a NULL iov
 * with iovcnt > 0 or an entry with a NULL base and a length; -EMSGSIZE
 * when the lengths add up past max_msg (a sum that would wrap size_t
 * included). */
int shmbus_publishv(shmbus_pub *pub, const struct iovec *iov, int iovcnt);

/*
 * Publishes `n` messages, msgs[i] being one message each, with one claim:
 * all of them or none (-EAGAIN/-ETIMEDOUT), in order.  Each must fit
 * max_msg, and the batch's records together (each a 16-byte header and
 * its payload rounded up to 8 bytes) at most capacity / 2 - 8 bytes
 * (-EMSGSIZE otherwise).
 * Subscribers see the batch whole or not at all: none of its messages can
 * be read before all of them can.  Returns n, or -EBUSY while a claim is
 * outstanding (as shmbus_claim(), shmbus_publish() and shmbus_publishv()
 * do), -EINVAL, -EMSGSIZE, -EAGAIN, -ETIMEDOUT or -EBADMSG.
 */
int shmbus_publish_batch(shmbus_pub *pub, const struct iovec *msgs, size_t n);

/*
 * Replicated channels (docs/replication.md).  On a host that is a
 * channel's standby, or a primary handing over to its standby, the channel
 * takes no claims: shmbus_pub_open() fails with errno EROFS, and the
 * claim and publish calls above return -EROFS, which a full ring never
 * does.  A single-producer handle that was refused stays refused (its
 * view of the ring may be stale once another host writes it): close it
 * and open a new one when this host is primary again.  Subscribing works
 * on both hosts.
 */

/* shmbus_pub_sync()'s success when the standby is out of sync and the
 * channel degrades: committed here only. */
#define SHMBUS_SYNC_DEGRADED	1

/*
 * Waits until every message this handle has committed is acknowledged at
 * the channel's level (local, received or applied by the standby), for at
 * most timeout_ns (negative: no limit).  Returns
 *   0                      acknowledged at the level (at once on a channel
 *                          that is not replicated, or whose level is local)
 *   SHMBUS_SYNC_DEGRADED   the standby is out of sync and the channel's
 *                          policy is to degrade, or some of the messages
 *                          fell in a gap the standby went past:
 *                          committed here only
 *   -ETIMEDOUT             not acknowledged in time: the outcome is
 *                          unknown (the messages may yet reach the
 *                          standby, or be lost with this host)
 *   -EROFS                 this host stopped being the primary the handle
 *                          was opened on (a standby since, even if primary
 *                          again) before the answer: unknown too
 *   -EINVAL
 * Only acknowledgements of the current epoch count.  The call looks
 * for up to 100 us (yielding the CPU between looks), then sleeps on a
 * futex; it costs the publishing calls nothing when it is not called.
 * Since version 0.3 (symbol version SHMBUS_0.3).  Same thread rule as the
 * handle.
 */
int shmbus_pub_sync(shmbus_pub *pub, int64_t timeout_ns);

/* ------------------------------------------------------------- subscribing */

enum shmbus_start {
	SHMBUS_START_NEWEST = 0,	/* only messages published from now on */
	SHMBUS_START_OLDEST = 1,	/* the oldest record still retained */
};

enum shmbus_wait {
	SHMBUS_WAIT_SPIN = 0,	/* busy spin: lowest latency, burns a core */
	SHMBUS_WAIT_YIELD = 1,	/* spin, then sched_yield() */
	SHMBUS_WAIT_SLEEP = 2,	/* spin, then sleep on the channel's futex */
};

struct shmbus_sub_attr {
	enum shmbus_start start;
	enum shmbus_wait wait;
	uint32_t spin_ns;	/* spin before yielding/sleeping; 0: 20 us */
};

/* Fills *attr with the defaults that a NULL attr means: start at the
 * newest message, spin wait, 20 us of spinning.  Since version 0.2
 * (symbol version SHMBUS_0.2).  Thread-safe. */
void shmbus_sub_attr_init(struct shmbus_sub_attr *attr);

/*
 * Opens a subscriber with its own cursor: it sees every message published
 * after its start point (broadcast).  On a block-policy channel producers
 * will not overwrite what it has not read, so a subscriber that stops
 * reading eventually stops the producers: close it when done.
 * SHMBUS_START_OLDEST on a block channel starts at the slowest active
 * subscriber's position (what the channel guarantees to hold); on an
 * overwrite channel at the oldest record, and if that is a claim not
 * committed yet, the open waits for its commit up to 50 ms (a claim this
 * thread holds, or one held open longer, costs those 50 ms, and leaves
 * no count of what a lap before the first read loses).
 * With SHMBUS_WAIT_SLEEP the open takes milliseconds (one kernel grace
 * period, membarrier(2)): from then on the channel's producers make the
 * wake check after each commit, which they skip on channels where no
 * subscriber may sleep.  Where the kernel refuses that call (nohz_full),
 * such a subscriber sleeps in naps of at most 1 ms instead.
 * Returns NULL, errno ENOSPC when all slots are taken, EAGAIN for the
 * few milliseconds in which shmbusd cuts a returning primary's ring back
 * (docs/failover.md).  One thread at a time.
 */
shmbus_sub *shmbus_sub_open(shmbus_channel *ch,
			    const struct shmbus_sub_attr *attr);

/* Releases the subscriber's slot.  A child's copy of its parent's
 * subscriber after fork() is freed alone: the parent's slot stays.
 * Its poll, read, wait and visibility calls return -EPERM (after their
 * argument checks; its statistics answer): the cursor is the parent's
 * alone. */
void shmbus_sub_close(shmbus_sub *sub);

enum shmbus_visibility {
	SHMBUS_SEE_COMMITTED = 0,	/* every committed message (default) */
	SHMBUS_SEE_ACKNOWLEDGED = 1,	/* only messages acknowledged at the
					 * channel's replication level: none
					 * that a failover to the standby
					 * could take back */
};

/*
 * Sets what the subscriber sees.  With SHMBUS_SEE_ACKNOWLEDGED it reads
 * up to the channel's replication watermark and wakes when it advances
 * (it reads the ring, never the mailbox: a little slower).  While the
 * standby is out of sync, a degrading channel's watermark follows what is
 * committed.  Returns 0, -EINVAL, or -EOPNOTSUPP on a channel that is not
 * replicated.  Since version 0.3 (symbol version SHMBUS_0.3).  Same
 * thread rule as the handle.
 */
int shmbus_sub_set_visibility(shmbus_sub *sub, enum shmbus_visibility v);

struct shmbus_msg {
	const void *data;	/* in the ring (block policy) or in the
				 * subscriber's buffer (overwrite policy, and
				 * a small message taken from the mailbox);
				 * valid only during the handler call */
	uint32_t len;
	uint64_t seq;		/* channel-wide message number */
	uint64_t pos;		/* byte position of the record */
	uint64_t lost;		/* messages lost just before this one:
				 * overwritten before this subscriber read
				 * them, or never received by a standby's
				 * ring (docs/replication.md).  Counted
				 * from sequence numbers: a claim aborted,
				 * or left by a producer that died in it,
				 * holds one, and counts here if it was
				 * overwritten unread (read, it counts
				 * nothing): never fewer than the messages
				 * lost, more only by such claims, and in
				 * a first loss, by claims in flight as the
				 * subscriber opened (before its start) */
};

/* A poll handler.  Return 0 to go on, non-zero to stop the batch after
 * this message (it counts as delivered). */
typedef int (*shmbus_handler)(const struct shmbus_msg *msg, void *arg);

/*
 * Calls `fn` on up to `max` messages (0: no limit within one lap, counted
 * from the first message delivered) in order, then publishes the new
 * cursor once.  With the block policy the
 * handler sees the message in place (zero copy; do not keep the pointer).
 * With the overwrite policy each message is first copied and validated,
 * so a handler never sees a torn message.  On a single-producer channel a
 * subscriber that has caught up takes a message of up to
 * SHMBUS_MBOX_INLINE bytes from the channel's mailbox line, as a
 * validated copy (docs/design.md §5): the round trip is then one cache
 * line each way.  Every call that takes a message publishes the cursor
 * past it before it returns (the handler of a mailbox message reads the
 * copy, so its cursor is published before the handler runs): a producer
 * that waits for room never waits on a subscriber that stopped calling.
 * The subscriber's counters in its slot (busstat's view) may lag by one
 * call.  Returns the number of messages handled (0 if none), or -EBADMSG
 * if the channel is corrupt.  Never blocks.  Overwrite policy: a
 * subscriber lapped while it reads goes on at the oldest message the ring
 * still holds, or at head when producers overwrite faster than it gets
 * there; then "none" can come although the ring is full, until a message
 * is committed where it now stands (msg->lost counts what it skipped).
 */
int shmbus_poll(shmbus_sub *sub, shmbus_handler fn, void *arg, unsigned max);

/*
 * Copies the next message into buf (cap bytes) and returns its length;
 * -EAGAIN if there is none, -EMSGSIZE if cap is too small (the message is
 * left unread and buf untouched), -EBADMSG on corruption.  Only the
 * message's len bytes of buf are written, and only when it is returned.
 * *info may be NULL; info->data then points at buf.  The cursor is
 * published before the call returns, as shmbus_poll() does.
 */
ssize_t shmbus_read(shmbus_sub *sub, void *buf, size_t cap,
		    struct shmbus_msg *info);

/*
 * Waits until a message is available, using the subscriber's wait
 * strategy.  timeout_ns < 0 waits for ever.  Returns 0 when a record is
 * ready at the subscriber's position: a message, or one that the next
 * read steps over (an aborted claim, the ring's padding at its end), which
 * then returns -EAGAIN: wait again.  Else -ETIMEDOUT, or -EINTR if a
 * signal was caught while it slept (SHMBUS_WAIT_SLEEP, past its spin),
 * whatever the timeout and whether or not the handler was installed with
 * SA_RESTART.  A signal caught while it spins or yields, or between its
 * last look and its sleep, does not end it: a flag set by a handler
 * stops a loop of waits for sure only if they have a finite timeout.
 */
int shmbus_wait(shmbus_sub *sub, int64_t timeout_ns);

struct shmbus_sub_stats {
	uint64_t pos;		/* next position to read */
	uint64_t delivered;	/* messages delivered */
	uint64_t lost;		/* messages lost (shmbus_msg.lost) */
	uint64_t lag_bytes;	/* head - pos */
};

int shmbus_sub_stats(shmbus_sub *sub, struct shmbus_sub_stats *st);

/* ----------------------------------------------------------------- replay */

/*
 * A subscriber that starts in the past: at a position, or at a time, read
 * from the channel's journal (docs/journal.md) for as long as the ring no
 * longer holds it, then from the ring at the same position, without a gap
 * or a duplicate, while producers go on publishing.  While it reads the
 * journal it holds no producer back; from the switch on it is an ordinary
 * subscriber (block policy: producers wait for it).
 */
typedef struct shmbus_replay shmbus_replay;

enum shmbus_replay_from {
	SHMBUS_REPLAY_POSITION = 0,	/* at: a record's position (pos of a
					 * struct shmbus_msg) */
	SHMBUS_REPLAY_TIME = 1,		/* at: CLOCK_REALTIME ns; from the
					 * first journaled message at or after
					 * it, give or take 64 KiB of records
					 * journaled just before */
};

/*
 * Opens a replay of channel `ch` from `at`.  attr (may be NULL) is the
 * subscriber's, used once it reads the ring (its start is ignored).
 * Returns NULL with errno: ERANGE (the position is older than the
 * journal holds: retention removed it, or the channel has no journal,
 * or it is past the newest record), EINVAL (not a record's position),
 * EXDEV or EBADMSG (the journal's files belong to another channel, or
 * are damaged), EACCES (its files are not readable by this process),
 * ENOSPC (no free subscriber slot) or EPERM (a channel opened read-only
 * or to publish), as shmbus_sub_open() says them, for a position only the
 * ring holds (a replay reads the ring through a subscriber), ENOTCONN
 * (a channel opened through shmbusd, which hands out the journal's
 * files: the daemon was away for longer than the connection's bound,
 * SHMBUS_CONNECT_TIMEOUT_MS, 2 s by default).  Since version 0.5 (symbol version SHMBUS_0.5).  One thread
 * at a time.
 */
shmbus_replay *shmbus_replay_open(shmbus_channel *ch,
				  enum shmbus_replay_from from, uint64_t at,
				  const struct shmbus_sub_attr *attr);
void shmbus_replay_close(shmbus_replay *r);

/* As shmbus_poll() and shmbus_read(), from wherever the replay is: the
 * journal's records are checked (checksum, position, sequence) before
 * they are delivered; a damaged one is -EBADMSG, never delivered.  A
 * message's `lost` counts messages the journal never had (it was lapped
 * on an overwrite channel, or stopped) just before it; not the sequence
 * numbers of a claim whose producer died before committing it (no
 * message had them), as shmbus_poll() does not count them either while
 * the ring still holds their records (overwritten unread, it does: see
 * shmbus_msg.lost).  In
 * the ring, a replay lapped there (an overwrite channel) goes back to the
 * journal where the ring left off while the journal holds that; only a
 * lap beyond what the journal holds is counted, as shmbus_poll() counts
 * it.  Through shmbusd, the next segment's file is asked of the daemon:
 * at a segment's end a replay waits for a daemon that is away (a
 * restart), and returns -ENOTCONN if it stays away longer than the
 * connection's bound; the replay is unchanged, and goes on from there
 * when called again once the daemon is back. */
int shmbus_replay_poll(shmbus_replay *r, shmbus_handler fn, void *arg,
		       unsigned max);
ssize_t shmbus_replay_read(shmbus_replay *r, void *buf, size_t cap,
			   struct shmbus_msg *info);
/* Waits for a message as shmbus_wait() does (in the journal: naps). */
int shmbus_replay_wait(shmbus_replay *r, int64_t timeout_ns);

struct shmbus_replay_stats {
	uint64_t pos;		/* next position to read */
	uint64_t from_journal;	/* messages delivered from the journal */
	uint64_t delivered;	/* in all */
	uint64_t lost;		/* messages it never had */
	int in_ring;		/* 1 once it reads the ring */
};

int shmbus_replay_stats(shmbus_replay *r, struct shmbus_replay_stats *st);

/* ------------------------------------------------------------- inspection */

/* A snapshot of one subscriber slot. */
struct shmbus_sub_info {
	pid_t pid;
	char comm[16];		/* process name, NUL-terminated */
	int alive;		/* 1 unless the process is gone: none, or a
				 * zombie (as repairs judge it) */
	enum shmbus_wait wait;
	int sleeping;		/* 1 while blocked on the futex */
	uint64_t pos;		/* its published cursor */
	uint64_t lag_bytes;	/* head - pos */
	uint64_t lag_msgs;	/* messages published - messages it consumed */
	uint64_t delivered;
	uint64_t lost;
};

/* A snapshot of one producer slot. */
struct shmbus_prod_info {
	pid_t pid;
	char comm[16];
	int alive;
	uint64_t published;	/* messages it committed */
	int claiming;		/* 1 while a multi-producer claim is open */
	uint64_t claim_pos;	/* its start, when claiming */
};

/*
 * Fills *out for subscriber slot `slot` (below SHMBUS_MAX_SUBSCRIBERS)
 * or producer slot `slot` (below SHMBUS_MAX_PRODUCERS).  Returns 0,
 * -ENOENT if the slot is not in use, -EINVAL past the last slot.  Values
 * are read from shared memory without locks: each field is consistent on
 * its own, the set is a snapshot.  Thread-safe.
 */
int shmbus_channel_subscriber(shmbus_channel *ch, unsigned slot,
			      struct shmbus_sub_info *out);
int shmbus_channel_producer(shmbus_channel *ch, unsigned slot,
			    struct shmbus_prod_info *out);

/* ------------------------------------------------- through the daemon */

/*
 * The daemon, shmbusd, owns the channels of a bus: it creates them,
 * decides who may open them (by the caller's uid and groups), hands out
 * their file descriptors and repairs what crashed processes leave behind.
 * It is never on the data path: a channel opened through it gives the
 * same handles and the same publish and poll paths as direct mode.
 */

/*
 * Connects to the daemon of bus `bus`.  A bus name is looked up in
 * $SHMBUS_RUN_DIR (default /run/shmbus): the bus file <bus>.bus that
 * shmbusd writes beside its socket at start names the socket; without
 * one (or with one that does not validate), the socket is <bus>.sock
 * there.  A `bus` that contains a '/' is the socket's path itself.  The
 * connection is how the daemon learns
 * that this process died.  A background thread watches it: if the daemon
 * restarts, the thread reconnects and re-registers every channel opened
 * through this handle, without disturbing publishing or polling.
 *
 * A daemon that is not there yet (no socket, or nobody listening on it:
 * not started, or restarting) is waited for: the connection is tried
 * again, after pauses growing from 1 ms to 10 ms, for at most 2 s, or the
 * number of milliseconds in the environment variable
 * SHMBUS_CONNECT_TIMEOUT_MS (0: try once; at most 3600000; a malformed
 * value is ignored).  A daemon that comes up within that time is connected
 * to within 10 ms of listening, and so is one that accepts the connection
 * and dies before answering (the old daemon of a restart).  A daemon that
 * refuses this client says so, and is not waited for.  The
 * same bound is how long a request on the handle (shmbus_bus_open()...)
 * waits for a lost daemon to return.
 *
 * After fork() the child cannot use its parent's handle (the library
 * closes the child's copy of the socket, and of one another thread was
 * still connecting or reconnecting): connect again in the child.
 * Returns NULL with errno set: ECONNREFUSED or ENOENT (no daemon answered
 * within the bound: ECONNREFUSED, a socket file nobody listens on; ENOENT,
 * no socket file), EUSERS at once (the daemon refused this client: its
 * connection limits, see shmbusd(8)), EMFILE or ENOMEM at once (the
 * daemon is out of descriptors or memory), EACCES (the socket's mode),
 * ETIMEDOUT (a daemon that
 * accepted but did not answer within 5 s), EPROTO (not a shmbusd),
 * EINVAL (`bus` without a '/' that is not a bus name: 1 to 63 of
 * [A-Za-z0-9._-], not starting with '.'), ENAMETOOLONG, ENOMEM, EAGAIN
 * (the handle's watcher thread could not be started: RLIMIT_NPROC, or
 * memory for its stack).
 * Thread-safe; the handle may be shared by threads.
 */
shmbus_bus *shmbus_connect(const char *bus);

/*
 * Where the channel files of bus `bus` are, for a program that maps them
 * itself (busstat; direct mode on a bus's directory): the shm_dir that
 * shmbusd wrote in its bus file, $SHMBUS_RUN_DIR/<bus>.bus (default
 * /run/shmbus), when it started; without a bus file, the default shm_dir
 * of a bus of that name, /dev/shm/shmbus-<bus>.  Writes the path to dir
 * (`len` bytes, NUL-terminated).  Returns 1 (from the bus file), 0 (the
 * default), -EINVAL (`bus` is not a bus name: 1 to 63 of [A-Za-z0-9._-],
 * not starting with '.'), -EBADMSG (a bus file that does not validate),
 * -EACCES, -ENAMETOOLONG.  The bus file is read as untrusted input.
 * Since version 0.2 (symbol version SHMBUS_0.2).  Thread-safe.
 */
int shmbus_bus_dir(const char *bus, char *dir, size_t len);

/*
 * shmbus_connect() with an explicit wait for an absent daemon, in
 * nanoseconds, instead of SHMBUS_CONNECT_TIMEOUT_MS or 2 s: 0 tries once
 * and fails at once; a negative value means the default.  It applies to
 * the connection and, for the handle's life, to every request's wait for
 * a lost daemon to return.  Since version 0.2 (symbol version
 * SHMBUS_0.2).  Errors and thread safety as shmbus_connect().
 */
shmbus_bus *shmbus_connect_timeout(const char *bus, int64_t timeout_ns);

/* Closes the connection and frees the handle.  Channels opened through
 * it stay usable (the data path needs no daemon), but the daemon no
 * longer knows this process uses them: a crash is then repaired by its
 * periodic scan, not at once, and no group of theirs can be joined or
 * deleted (ENOTCONN).  Close them with shmbus_channel_close() as usual.
 * No other call on the handle may be running or start once this one has
 * begun (the handle is freed): stop the threads that use it first.  In a
 * child after fork() it frees the child's copy alone. */
void shmbus_disconnect(shmbus_bus *bus);

enum shmbus_role {
	SHMBUS_ROLE_PUBLISH = 1,	/* shmbus_pub_open() only */
	SHMBUS_ROLE_SUBSCRIBE = 2,	/* shmbus_sub_open() only; the
					 * messages are mapped read-only */
};

/*
 * Opens channel `name` of the bus for one role.  The daemon checks the
 * caller's credentials against the channel's publish or subscribe rules.
 * The handle serves that role only: shmbus_sub_open() on a channel opened
 * to publish (or shmbus_pub_open() on one opened to subscribe) fails with
 * EPERM; a process that does both opens the channel twice.  Close it with
 * shmbus_channel_close().
 *
 * The daemon may restart while the request is on its way, even several
 * times: the request is sent again to each new daemon, up to 4 times in
 * all, and each time the handle waits for the new daemon for at most its
 * bound (shmbus_connect(): 2 s, or SHMBUS_CONNECT_TIMEOUT_MS).  This holds
 * for every request on the handle (shmbus_bus_create(), _delete(),
 * _list(), _describe() too).
 *
 * Returns NULL, errno: EACCES (not allowed), ENOENT (no such channel),
 * ENOTCONN (a NULL bus, so that shmbus_bus_open(shmbus_connect(...), ...)
 * reports a failed connection as one; the daemon is gone and no new one
 * answered within the bound, or it went away 4 times during this
 * request; or a child's copy of its parent's handle after fork()),
 * ETIMEDOUT (a daemon that
 * does not answer for 5 s), EMFILE (this process has no free descriptor
 * for the channel's files: they were passed and dropped), EPROTO (a reply
 * that is not the protocol's), EBADMSG (a damaged channel), EROFS (to
 * publish on a channel this host holds as a standby's replica).  Every
 * shmbus_bus_*() call
 * takes a NULL bus as ENOTCONN.  shmbus_bus_strerror() gives the daemon's
 * reason for a refusal.  Thread-safe.
 */
shmbus_channel *shmbus_bus_open(shmbus_bus *bus, const char *name,
				enum shmbus_role role);

/* Administration (the caller must be one of the bus's admins): create a
 * channel, delete one (its file is removed; mappers keep their memory).
 * Return 0 or -errno (-EACCES, -EEXIST, -ENOENT, -EINVAL, -EMSGSIZE,
 * -EBUSY: a name the config journals, made only at the daemon's start
 * with its journal...); shmbus_bus_strerror() says why.  A request in flight when the daemon
 * dies is sent again to the next one: a create or delete the lost daemon
 * had done may then answer -EEXIST or -ENOENT. */
int shmbus_bus_create(shmbus_bus *bus, const char *name,
		      const struct shmbus_channel_attr *attr);
int shmbus_bus_delete(shmbus_bus *bus, const char *name);

/*
 * Why the last request this thread made on `bus` failed with `err`, as
 * the daemon said it ("capacity 5000 is not a power of two from 4 KiB to
 * 16 GiB", "uid 1000 is not in [bus] admins"...), or shmbus_strerror(err)
 * when the daemon gave no reason (an older daemon, a failure on this
 * side, another error than that request's): a request this side refuses
 * (its arguments, no connection) leaves no earlier request's reason.  The string stays valid
 * until this thread's next request on any bus.  Since version 0.2
 * (symbol version SHMBUS_0.2).  Thread-safe.
 */
const char *shmbus_bus_strerror(shmbus_bus *bus, int err);

/* What the daemon says of a channel. */
struct shmbus_bus_channel {
	char name[256];
	uint64_t capacity;
	uint32_t max_msg;
	enum shmbus_policy policy;
	enum shmbus_producers producers;
	int numa_node;
	unsigned mode;
	uint32_t subscribers;	/* active subscriber slots */
	uint32_t producers_active;
	uint64_t published;
	uint64_t head;
	uint64_t bytes;
	uint64_t backpressure;
	uint64_t repairs;	/* dead producers' claims repaired */
	uint64_t reaped;	/* dead processes' slots released */
	uint32_t clients;	/* connected clients that opened it */
	int configured;		/* 1: from the config file */
	char publish[256];	/* who may publish, as configured */
	char subscribe[256];	/* who may subscribe */
};

/* Calls fn for every channel of the bus (name, geometry, counts; the
 * describe-only fields are zero), damaged ones included (their figures
 * as last read; shmbus_bus_describe() tells them).  Returns the number of
 * channels or -errno.  A non-zero return from fn stops the walk. */
int shmbus_bus_list(shmbus_bus *bus,
		    int (*fn)(const struct shmbus_bus_channel *c, void *arg),
		    void *arg);

/* Everything the daemon knows of one channel.  0 or -errno: -ENOENT no
 * such channel; -EBADMSG the daemon found a file of it cut short and
 * serves it no more (delete it and create it again; its files no longer
 * validate); -ENOTCONN, -EPROTO as any request. */
int shmbus_bus_describe(shmbus_bus *bus, const char *name,
			struct shmbus_bus_channel *out);


/* --------------------------------------------------------- consumer groups */

/*
 * A consumer group shares a channel's messages among its members: each
 * message goes to one member, not to all (docs/groups.md).  The group has
 * one position in the channel, its floor: every message below it is
 * acknowledged.  On a block-policy channel the floor holds producers back
 * like a slow subscriber's cursor; on an overwrite channel a group that
 * falls a lap behind counts the messages it lost and never delivers
 * overwritten bytes.  Delivery is at least once: a message is delivered
 * again (to any member, flagged redelivered) when its member dies, when
 * its lease's term passes, or when it is nacked.  A group lives as long
 * as its file (shmbus_group_delete()); its state survives its members,
 * shmbusd's restarts, and the channel's other users.
 *
 * Since version 0.4 (symbol version SHMBUS_0.4).
 */
typedef struct shmbus_group shmbus_group;

enum shmbus_group_mode {
	SHMBUS_GROUP_SHARED = 0,	/* each message to one member, in no
					 * order across members */
	SHMBUS_GROUP_KEYED = 1,		/* by key: a key's messages go to one
					 * member at a time, in order */
	SHMBUS_GROUP_SINGLE_ACTIVE = 2,	/* one member receives everything in
					 * order; the others stand by */
	/* Keyed and single-active groups need a block-policy channel: made
	 * on an overwrite one, the join fails with EINVAL. */
};

struct shmbus_group_attr {
	enum shmbus_group_mode mode;
	uint32_t window;	/* shared: leases in flight at once, a power of
				 * two up to 65536; 0: 256 */
	uint32_t lanes;		/* keyed: 1..64 lanes the keys hash to; 0: 16 */
	uint32_t max_deliveries;	/* deliveries before a message is
				 * dead-lettered, at most 65535; 0: 5;
				 * UINT32_MAX: no limit */
	int64_t lease_ns;	/* a lease's term, at most a day; 0: 30 s */
	enum shmbus_start start;	/* where a new group starts */
	const char *dead_letter;	/* channel that receives poison
				 * messages (multi-producer; its name at
				 * most 63 characters), or NULL: they are
				 * dropped and counted */
};

/* The defaults a NULL attr means (shared, window 256, 5 deliveries, 30 s
 * leases, newest, no dead-letter channel).  Thread-safe. */
void shmbus_group_attr_init(struct shmbus_group_attr *attr);

/*
 * Joins group `group` (1..63 of [A-Za-z0-9._-], not starting with '.')
 * of the channel as member `member` (a name for busstat: 1..31 of
 * [A-Za-z0-9._-], not starting with '.').  A channel opened through shmbusd
 * (shmbus_bus_open(), subscribe role) asks the daemon, which applies the
 * channel's subscribe rule and creates the group from its config or, for
 * root, its own user and [bus] admins, from `attr` (without a dead-letter
 * channel: the config names those); a channel opened directly
 * (shmbus_channel_open() or _create()) creates the group's file itself if
 * it does not exist.  An existing group keeps its settings: `attr` (NULL:
 * the defaults) then only needs the same mode, or -EEXIST.
 * Returns NULL, errno: EINVAL, EEXIST (another mode), ENOSPC (64 members,
 * or no free subscriber slot for a new group), EPERM (a channel opened
 * read-only or to publish; through shmbusd, a group the caller may not
 * make, or a dead-letter channel the config does not name), EACCES,
 * EBADMSG (a corrupt group file), EROFS (a replicated channel on a
 * standby, or on a primary handing over: join on the primary), EAGAIN
 * (its ring is being cut back after a failover: for a few ms; or a group
 * not made yet whose file another creator with this process's pid, in
 * another pid namespace, is making),
 * ENAMETOOLONG (the channel's name and the group's together longer than
 * SHMBUS_GROUP_NAMES_MAX, 235 bytes: they name the group's file), EIDRM
 * (the group is being deleted), EMFILE (no free descriptor), ESTALE
 * (through shmbusd: the channel was deleted and made again under its
 * name since `ch` was opened; nothing was made: open it again.  A
 * shmbusd older than control protocol 3 cannot tell: it makes the group
 * on the new channel, and the join then fails with EBADMSG).
 * One thread at a time per member handle; members in one process are
 * independent.  A handle belongs to the process that joined: a child
 * after fork() joins for itself.
 */
shmbus_group *shmbus_group_join(shmbus_channel *ch, const char *group,
				const char *member,
				const struct shmbus_group_attr *attr);

/* Leaves the group: what the member holds and has not acknowledged is
 * delivered again to the others at once (not counted as a delivery
 * failure).  A member that dies instead is noticed by shmbusd (or, in
 * direct mode, by the other members) and treated the same way.  A
 * child's copy of its parent's member after fork() is freed alone: the
 * parent stays a member (its calls that take, settle, wait or maintain
 * return -EPERM).
 * Leave every member before its channel is closed. */
void shmbus_group_leave(shmbus_group *m);

/* Removes a group (its file and its hold on the channel).  On a channel
 * opened through shmbusd the daemon does it, for root, its own user and
 * [bus] admins only (-EACCES otherwise); a group its config names is made
 * again at its next reload or start.  Returns 0; -EBUSY while a live
 * member is joined (a member that joins meanwhile gets EIDRM) or while
 * another removal, or a maintenance of the group by a process that is not
 * its member (shmbusd's), holds the group for over 20 ms; -ENOENT when
 * there is no such group (or another removal took it meanwhile); -EINVAL
 * for a NULL argument, a name the rules refuse or a read-only handle;
 * -EBADMSG for a damaged group file; -ESTALE through shmbusd when the
 * channel was deleted and made again under its name since `ch` was opened
 * (the new channel's group is left alone; a shmbusd older than control
 * protocol 3 cannot tell, and deletes it); and the errors of open(2). */
int shmbus_group_delete(shmbus_channel *ch, const char *group);

/* A lease: what a member acks.  Opaque; copy it freely. */
struct shmbus_lease {
	uint64_t w[3];
};

struct shmbus_group_msg {
	const void *data;	/* in the ring (block policy: valid until the
				 * lease is acked, nacked or lost) or in the
				 * member's buffer (overwrite policy: valid
				 * until the next poll) */
	uint32_t len;
	uint32_t deliveries;	/* 1 the first time */
	uint64_t seq;		/* channel-wide message number */
	uint64_t pos;		/* byte position of the record */
	uint64_t key;		/* keyed: the message's key */
	struct shmbus_lease lease;
};

typedef int (*shmbus_group_handler)(const struct shmbus_group_msg *msg,
				    void *arg);

/*
 * Takes up to `max` messages (0: 64) for this member and calls fn on each
 * in order.  In shared mode they are one claim, one lease: a batch, whose
 * messages are all delivered, across calls if fn stops or max is reached
 * (a batch given back comes again whole, whatever max); its ack counts
 * once the last of them has been delivered, and a poison message in a
 * batch takes the batch to the dead-letter channel with it (take 1 for
 * per-message leases).  In keyed and single-active mode each message has
 * its own lease, and an ack covers the lane's earlier messages too.
 * A batch whose lease was taken back meanwhile (its term passed while the
 * member was away: stopped, descheduled, slow) is delivered no further:
 * its rest is another member's, and its bytes may be written over.  fn
 * reads a message in place: one that runs past its lease's term may see
 * those bytes change (use shmbus_group_extend(), or the copy below).
 * Returns the number of messages handled, 0 if none is available now (or
 * the window of leases in flight is full:
 * shmbus_group_stats().window_full), -EIDRM if the group was deleted,
 * -EROFS while this host does not take writes on the channel (a standby,
 * or a primary handing over: the member stays joined and takes again if
 * the host becomes primary; a batch it was part way through comes again
 * whole; docs/groups.md), -EAGAIN while the ring is being cut back after
 * a failover, -EBADMSG if the group's or the channel's memory is corrupt.
 * Never blocks.
 */
int shmbus_group_poll(shmbus_group *m, shmbus_group_handler fn, void *arg,
		      unsigned max);

/* Copies the next message into buf: its length, -EAGAIN, -EMSGSIZE (cap
 * too small: the message stays the next one, undelivered), or poll's
 * errors.  A copy is returned only if the member still held its lease
 * once it was made, so it is whole; one whose lease was taken back
 * during the copy is not delivered (the next message is read instead),
 * nor one made as the host stopped taking writes (-EROFS).
 * *msg (not NULL) gets its lease; msg->data points at buf. */
ssize_t shmbus_group_read(shmbus_group *m, void *buf, size_t cap,
			  struct shmbus_group_msg *msg);

/*
 * Acknowledges: the message (shared: the lease's whole claim, once its
 * last message has been delivered; before that the ack waits for it and
 * returns 0, so that an ack made after the poll returned covers every
 * message of the batch, processed or not; keyed: the lane up to and
 * including it, and the lane's term runs again from now) is done and
 * will not be delivered again.
 * -ESTALE: the lease was taken back (its term passed, the member was
 * thought dead, or the lane moved) and the message may be, or may have
 * been, processed by another member.  -EINVAL: not a lease of this
 * member.  No lock and no system call.
 */
int shmbus_group_ack(shmbus_group *m, const struct shmbus_lease *l);

/* Gives a message back to be delivered again, not before delay_ns from
 * now (shared: to any member; keyed: the lane restarts there, to its
 * owner).  It counts as a delivery: after max_deliveries the message is
 * dead-lettered.  0; -ESTALE: the lease was taken back, or acknowledged
 * already; -EINVAL: not a lease of this member, or delay_ns < 0. */
int shmbus_group_nack(shmbus_group *m, const struct shmbus_lease *l,
		      int64_t delay_ns);

/* Extends the lease's term to ns from now (0: the group's term).
 * 0; -ESTALE: the lease was taken back, or acknowledged already;
 * -EINVAL: not a lease of this member, or ns < 0. */
int shmbus_group_extend(shmbus_group *m, const struct shmbus_lease *l,
			int64_t ns);

/*
 * Waits until the group may have a message for this member: the channel
 * moved since the last poll that found nothing, or the record that poll
 * stopped at (claimed, not yet committed) is committed; in shared mode,
 * a claim could be won (a record committed where the group's claims go
 * on, and room in the window); or, looked at every 10 ms, leases wait to
 * be delivered again (shared), or lanes may have changed hands or ended
 * a nack's delay (keyed, single-active).  A wait before the member's
 * first poll returns at once.  A return of 0 may still find nothing.
 * timeout_ns < 0 waits for ever.
 *
 * How it waits is the member's (shmbus_group_set_wait()); by default it
 * spins for 20 us, then sleeps on the channel's futex, which a producer's
 * commit wakes as it wakes sleeping subscribers (paying a fence after each
 * commit for it while a member that has slept is joined; docs/groups.md).
 * A sleep lasts at most 10 ms, and 1 ms while a shared group's window is
 * full (an ack wakes nobody).
 * 0, -ETIMEDOUT, -EIDRM, -EROFS and -EAGAIN as for poll (also as soon
 * as the channel stops taking writes during the wait), or -EINTR if a
 * signal was caught while it slept, as shmbus_wait() (whatever the
 * timeout, SA_RESTART or not; not while it spins or yields, nor
 * between two of its sleeps: a flag set by a handler stops a loop of
 * waits for sure only if they have a finite timeout). */
int shmbus_group_wait(shmbus_group *m, int64_t timeout_ns);

/*
 * How this member's shmbus_group_wait() waits: SHMBUS_WAIT_SPIN spins
 * until its end (lowest latency, a core busy); SHMBUS_WAIT_YIELD spins
 * spin_ns, then calls sched_yield() between looks; SHMBUS_WAIT_SLEEP
 * (the default) spins spin_ns, then sleeps.  spin_ns 0: 20 us.  For the
 * handle's thread, as its other calls.  0, or -EINVAL (m NULL, or `how`
 * unknown).
 */
int shmbus_group_set_wait(shmbus_group *m, enum shmbus_wait how,
			  uint32_t spin_ns);

struct shmbus_group_stats {
	enum shmbus_group_mode mode;
	uint32_t members;	/* joined and alive */
	uint32_t window;
	uint32_t lanes;
	uint32_t in_flight;	/* leases held (shared), lanes owned (keyed) */
	uint64_t floor;		/* everything below is acknowledged */
	uint64_t claim;		/* shared: next position to claim */
	uint64_t head;		/* the channel's */
	uint64_t delivered, redelivered, acked, nacked, expired, released;
	uint64_t dead_lettered, dropped, window_full, lost, lost_bytes;
	uint64_t loss_from, loss_to;	/* the last loss */
	uint64_t lane_moves;
	int64_t oldest_ns;	/* age of the oldest lease held, 0: none */
	uint32_t oldest_pid;	/* its member's pid */
	char oldest_member[32];
};

/* The group's counters, as its file says them.  0 or -errno. */
int shmbus_group_stats(shmbus_group *m, struct shmbus_group_stats *st);

/* Runs what shmbusd otherwise does for the group: takes back the leases
 * of dead members and expired leases, moves lanes, dead-letters poison
 * messages.  Members call it themselves from poll at most every few
 * milliseconds; an application needs it only without shmbusd and while
 * no member polls.  Returns the number of changes made, or -errno:
 * -EBADMSG if the group's file is damaged (its claim and floor words
 * cannot both be true; nothing of a dead member is freed then). */
int shmbus_group_maintain(shmbus_group *m);

/* Publishes with a key, for keyed groups: the key goes in the message's
 * first 8 bytes (host order), followed by data; a keyed group hashes it
 * to a lane.  A subscriber sees the 8 bytes as part of the message.
 * Returns shmbus_publish()'s values. */
int shmbus_publish_keyed(shmbus_pub *pub, uint64_t key, const void *data,
			 size_t len);

#ifdef __cplusplus
}
#endif

#endif /* SHMBUS_H */
