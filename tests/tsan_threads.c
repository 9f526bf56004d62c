/* SPDX-License-Identifier: MIT */
/*
 * tsan_threads.c - runs the threaded scenario of threads_impl.h without
 * Criterion's runner, which cannot start under ThreadSanitizer
 * (Snaipe/Criterion#274).  `make tsan` builds and runs it; TSan aborts the
 * run on the first race report (halt_on_error=1).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "threads_impl.h"

int main(void)
{
	char dir[] = "/dev/shm/shmbus-tsan-XXXXXX";
	uint64_t n = th_env_count("SHMBUS_STRESS_N", 100000);
	int fails;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	fails = threads_run(dir, SHMBUS_SINGLE_PRODUCER, 1, SHMBUS_WAIT_SLEEP, n);
	fails += threads_run(dir, SHMBUS_MULTI_PRODUCER, 2, SHMBUS_WAIT_YIELD, n);
	rmdir(dir);
	printf("tsan_threads: %d passed, %d failed\n", 2 - (fails ? 1 : 0),
	       fails ? 1 : 0);
	return fails ? 1 : 0;
}
