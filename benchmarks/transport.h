/* SPDX-License-Identifier: MIT */
/*
 * transport.h - what bench_latency measures a round trip through: set up
 * before the fork, opened in each process, one echo (the child) and one
 * round trip (the parent), closed.  The transports through the kernel
 * are in kernel_paths.c; the shared-memory ones in bench_latency.c.
 */
#ifndef SHMBUS_BENCH_TRANSPORT_H
#define SHMBUS_BENCH_TRANSPORT_H

#include <stddef.h>

#define MAX_SIZE 4096	/* the largest message measured */

struct transport {
	const char *name;
	int (*setup)(void);		/* before fork */
	int (*child_open)(void);	/* in the echoing process */
	int (*parent_open)(void);
	void (*echo)(size_t size);	/* child: one echo */
	void (*ping)(size_t size);	/* parent: one round trip */
	void (*close_all)(void);
};

/* For the steps a transport does not need. */
static inline int tr_nop(void)
{
	return 0;
}

static inline void tr_nop_close(void)
{
}

/* Through the kernel: two pipes, a SOCK_SEQPACKET socketpair, two POSIX
 * message queues, a ZeroMQ PAIR socket over ipc://. */
extern const struct transport T_PIPE, T_UNIX, T_MQ, T_ZMQ;

#endif /* SHMBUS_BENCH_TRANSPORT_H */
