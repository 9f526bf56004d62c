/* SPDX-License-Identifier: MIT */
/*
 * journal_int.h - what the journal's agent (journal.c: appending, syncing,
 * retention, the preparer of segments) and its start (journal_start.c:
 * recovery, start, the cut, stop) share: a journaled channel's state and
 * the agent's file helpers.  Nothing outside these two files includes it.
 */
#ifndef SHMBUSD_JOURNAL_INT_H
#define SHMBUSD_JOURNAL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmbusd.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"
#include "../lib/journal.h"

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

#define CHUNK		(1u << 20)	/* bytes copied and written at once */
#define NAP_NS		INT64_C(1000000)	/* an idle agent looks again */
#define CHECK_NS	INT64_C(100000000)	/* free space, retention */
#define RETRY_NS	INT64_C(100000000)	/* after a failed write */
#define PAD_MAX	((uint64_t)SHMBUS_LEN_MASK & ~(uint64_t)(SHMBUS_REC_ALIGN - 1))

struct jchan {
	char name[SHMBUS_CTL_NAME];
	struct sbd_jnl_conf conf;	/* copies: a reload replaces sbd.conf */
	uint64_t min_free;
	shmbus_channel *ch;		/* the agent's own mapping */
	struct sb_jgeom g;
	char dir[PATH_MAX];
	int dfd;			/* the directory, to sync it */
	int lock_fd;			/* dir/.lock, flock()ed: one writer */
	mode_t fmode;
	int64_t gid;			/* the channel's group (-1: the
					 * daemon's) */
	uint64_t unlink_failed;		/* retention: the base of the last
					 * segment it could not remove */
	shmbus_sub *cursor;
	uint64_t held;			/* the cursor's position */
	uint64_t pos;			/* written through */
	uint64_t synced;		/* fdatasync'd through */
	uint64_t seq;			/* the last seq written (UINT64_MAX) */
	uint64_t synced_seq;		/* the last seq synced (UINT64_MAX) */
	bool after_gap;			/* the next segment made follows a
					 * gap (its header says so) */
	bool gap_seq_known;		/* ... and gap_seq is the last
					 * sequence number the gap took */
	uint64_t gap_seq;
	bool seq_known;			/* seq is the last the journal
					 * holds (else unknown: a journal
					 * begun past messages it lacks) */
	int fd;				/* the current segment */
	uint64_t base;
	uint64_t io_base;		/* the segment the agent's last write,
					 * sync or making was for (its
					 * failures name it) */
	uint32_t seg_version;		/* its format (GAP records from 2) */
	int tix_fd;
	uint64_t tix_pos;		/* the last entry's (UINT64_MAX) */
	int64_t tix_ns;
	uint8_t *buf;
	size_t buf_cap;
	int64_t sync_ns;		/* last fdatasync (monotonic) */
	int64_t check_ns;		/* last free-space and retention check */
	uint32_t kick;
	bool full, failing;
	bool dead;			/* stopped for good: the ring went back */
	bool said;			/* why it did not start is logged */
	struct sbd_ratelimit rl;
	unsigned long errors;
	struct sbd_ratelimit rl_gap;	/* gaps, said at most once a second */
	unsigned long gaps;
	pthread_t th;
	bool th_on;
	bool stop;			/* atomic */

	/* The preparer: makes the spare for base `want` (UINT64_MAX:
	 * nothing to do); `ready` is the base of the spare on disk. */
	pthread_t prep;
	bool prep_on;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint64_t want, ready;
	int prep_err;
};

/* pwrite() all of buf at off: 0 or -errno. */
int jnl_write_all(int fd, const void *buf, size_t len, off_t off);
/* The daemon's user owns fd's file, the channel's group reads it. */
void jnl_own(struct jchan *j, int fd);
int jnl_mkdir_p(const char *path, mode_t mode);
/* The preparer's thread, and a request for the segment at base. */
void *jnl_prep_main(void *arg);
void jnl_prep_ask(struct jchan *j, uint64_t base);
/* The current segment: closed; opened at base (written to end); made at
 * base with its first record at start.  0 or -errno. */
void jnl_close_seg(struct jchan *j);
int jnl_open_seg(struct jchan *j, uint64_t base, uint64_t end);
int jnl_new_seg(struct jchan *j, uint64_t base, uint64_t start);
/* Deletes the segments the retention rule lets go. */
void jnl_retain(struct jchan *j);
/* The agent's thread. */
void *jnl_agent_main(void *arg);

#endif /* SHMBUSD_JOURNAL_INT_H */
