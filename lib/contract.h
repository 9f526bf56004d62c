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

#include "shmbus.h"
#include "busfile.h"

/* A channel's or a bus's name: 1..max of [A-Za-z0-9._-], not starting
 * with '.' (so never a path, a hidden file, "." or ".."). */
int sb_name_ok(const char *name, size_t max);

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

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t sb_now_ns(void);

/* Opens the control file and the data file (read-write and read-only) of
 * channel `name` in `dir`, for shmbusd to hand out.  0 or -errno. */
int sb_channel_open_fds(const char *dir, const char *name, int *ctl_fd,
			int *data_rw, int *data_ro);

/* No such process, or a zombie (pid.c). */
bool sb_pid_gone(uint32_t pid);

/* Whether process `pid` is gone, as the caller judges it (shmbusd caches
 * sb_pid_gone()'s verdicts for one scan). */
typedef bool (*sb_gone_fn)(void *ctx, uint32_t pid);

/* What sb_reap() did, one event per action, for the caller's log. */
enum sb_reap_event {
	SB_REAP_SUB,		/* released subscriber slot `slot` of `pid` */
	SB_REAP_SP,		/* padded the unfinished claim of the dead
				 * single producer `pid` */
	SB_REAP_HANDOFF,	/* handed over and padded the claim at `pos`
				 * of a dead multi producer */
	SB_REAP_PROD,		/* released producer slot `slot` of `pid`
				 * (`padded`: and padded its claim) */
	SB_REAP_PROD_LATER,	/* producer slot `slot` of `pid`: the claim
				 * before it has not handed over yet */
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

#endif /* SHMBUS_CONTRACT_H */
