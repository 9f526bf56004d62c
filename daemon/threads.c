/* SPDX-License-Identifier: MIT */
/*
 * threads.c - what shmbusd's threads say about themselves: a name (ps -L,
 * top -H, perf), and for the threads that move records between the two
 * hosts, the CPUs [replication] cpus gives them.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "shmbusd.h"

void sbd_thread_setup(const char *name, bool hot)
{
	const uint64_t *cpus = sbd.conf.repl.cpus;
	cpu_set_t set;
	bool any = false;
	int err;

	/* At most 15 characters: the kernel's limit. */
	pthread_setname_np(pthread_self(), name);
	if (!hot)
		return;
	CPU_ZERO(&set);
	for (int c = 0; c < SBD_CPUS_MAX && c < CPU_SETSIZE; c++)
		if (cpus[c / 64] >> (c % 64) & 1) {
			CPU_SET(c, &set);
			any = true;
		}
	if (any && (err = pthread_setaffinity_np(pthread_self(), sizeof(set),
						 &set)))
		sbd_log(SBD_WARN, err, "thread %s: not placed on [replication] "
			"cpus", name);
}
