/* SPDX-License-Identifier: MIT */
/*
 * contract.h - what shmbusd and the tools may use of the library beyond
 * include/shmbus.h.  They link the static library, so its internal
 * symbols resolve for them; this header is the part of it they rely on,
 * and the only header of lib/ they include.
 *
 * - The rules they must apply exactly as the library does: names,
 *   sizes, the SHMBUS_F_* flags of a channel's attributes, the clock.
 * - The daemon's entry points into channels: opening a channel's
 *   descriptors to hand them out, the bus file, and the repairs of what a
 *   dead process left (repair.h), which read the slots and words of
 *   include/shmbus/layout.h with the atomics of atomic.h, as the library
 *   does (channel.h gives the mapped view).
 */
#ifndef SHMBUS_CONTRACT_H
#define SHMBUS_CONTRACT_H

#include <stdint.h>

#include "shmbus.h"
#include "busfile.h"
#include "channel.h"
#include "repair.h"

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

#endif /* SHMBUS_CONTRACT_H */
