/* SPDX-License-Identifier: MIT */
/*
 * pingpong.h - the local 32-byte round trip on two channels of a running
 * shmbusd, between two processes: what bench_repl and bench_journal
 * compare between channels with and without what they measure, beside a
 * second pair of plain channels for the noise between two pairs of rings
 * alike (their pages fall where they fall: two identical pairs differ by
 * up to 30 % here).
 */
#ifndef SHMBUS_BENCH_PINGPONG_H
#define SHMBUS_BENCH_PINGPONG_H

#include "hist.h"

/*
 * Process P on CPU 0 publishes 32 bytes on `ping` and spins on
 * shmbus_read() of `pong`; Q on CPU 1 echoes them.  n round trips after
 * n / 10 unrecorded, each recorded in h (shared memory, bh_shared()), in
 * ns.  Returns 0, or the failing side's exit code.
 */
int bp_pingpong(const char *sock, const char *ping, const char *pong, long n,
		struct hist *h);

#endif
