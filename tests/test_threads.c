/* SPDX-License-Identifier: MIT */
/* test_threads.c - the threaded scenario of threads_impl.h under Criterion;
 * `make tsan` runs the same scenario under ThreadSanitizer. */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "threads_impl.h"

static uint64_t count(void)
{
	return th_env_count("SHMBUS_STRESS_N", 10000000) / 50;
}

Test(threads, single_producer_two_subscribers, .timeout = 600)
{
	const char *dir = th_mkdir();

	cr_expect_eq(threads_run(dir, SHMBUS_SINGLE_PRODUCER, 1,
				 SHMBUS_WAIT_SLEEP, count()), 0);
	th_rmdir(dir);
}

Test(threads, two_producers_two_subscribers, .timeout = 600)
{
	const char *dir = th_mkdir();

	cr_expect_eq(threads_run(dir, SHMBUS_MULTI_PRODUCER, 2,
				 SHMBUS_WAIT_YIELD, count()), 0);
	th_rmdir(dir);
}
