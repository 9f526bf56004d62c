/* SPDX-License-Identifier: MIT */
/*
 * tp.h - what the benchmarks that move many messages share:
 * bench_throughput (rates) and bench_handover (one batch at a time).
 */
#ifndef SHMBUS_BENCH_TP_H
#define SHMBUS_BENCH_TP_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shmbus.h"

#define TP_RING (4u << 20)	/* channels and plain rings alike */
#define TP_MAX_SIZE (64u << 10)	/* largest message */
#define TP_BATCH 32		/* messages per batch */

/* The bytes a shmbus record of `size` takes: a 16-byte header and the
 * payload padded to 8.  The plain baselines use records of the same size. */
static inline size_t tp_rec_bytes(size_t size)
{
	return 16 + ((size + 7) & ~(size_t)7);
}

/* A subscriber's handler: copies each message out to dst and counts it. */
struct tp_count {
	uint8_t *dst;
	uint64_t got;
};

static inline int tp_copy_out(const struct shmbus_msg *m, void *arg)
{
	struct tp_count *c = arg;

	memcpy(c->dst, m->data, m->len);
	c->got++;
	return 0;
}

/* Creates channel "tp" (TP_RING bytes, messages up to TP_MAX_SIZE) in a new
 * directory under /dev/shm, whose name goes to dir[64]. */
static inline shmbus_channel *tp_channel(char *dir,
					 enum shmbus_producers prod)
{
	struct shmbus_channel_attr a;

	snprintf(dir, 64, "/dev/shm/shmbus-bench-XXXXXX");
	if (!mkdtemp(dir))
		return NULL;
	shmbus_channel_attr_init(&a);
	a.capacity = TP_RING;
	a.max_msg = TP_MAX_SIZE;
	a.producers = prod;
	return shmbus_channel_create(dir, "tp", &a, SHMBUS_CREATE_EXCL);
}

/* Removes what tp_channel() made (the channel must be closed or closing). */
static inline void tp_unlink(const char *dir)
{
	shmbus_channel_unlink(dir, "tp");
	rmdir(dir);
}

#endif
