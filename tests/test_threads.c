/* SPDX-License-Identifier: MIT */
/* test_threads.c - the threaded scenario of threads_impl.h under Criterion;
 * `make tsan` runs the same scenario under ThreadSanitizer. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <elf.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <unistd.h>

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

/*
 * A thread of a process linked with libshmbus.so carries the library's
 * thread-local data in its static TLS block, zeroed when the thread
 * starts, whether it uses the library or not: it must stay small (it was
 * 64 KiB, 33 MB of memory in a program of 500 threads).  Read from the
 * shared library built beside this test ($(BUILD)/libshmbus.so.0).
 */
Test(threads, the_library_costs_a_thread_little_static_tls)
{
	char exe[PATH_MAX], path[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	uint64_t tls = 0;
	Elf64_Ehdr eh;
	FILE *f;

	cr_assert(n > 0);
	exe[n] = 0;
	snprintf(path, sizeof(path), "%s/../libshmbus.so.0", dirname(exe));
	f = fopen(path, "rb");
	cr_assert(f, "%s: not built?", path);
	cr_assert_eq(fread(&eh, sizeof(eh), 1, f), 1);
	cr_assert(!memcmp(eh.e_ident, ELFMAG, SELFMAG) &&
		  eh.e_ident[EI_CLASS] == ELFCLASS64);
	for (unsigned i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		cr_assert_eq(fseek(f, (long)(eh.e_phoff + i * eh.e_phentsize),
				   SEEK_SET), 0);
		cr_assert_eq(fread(&ph, sizeof(ph), 1, f), 1);
		if (ph.p_type == PT_TLS)
			tls += ph.p_memsz;
	}
	fclose(f);
	cr_log_info("%s: %llu bytes of TLS a thread", path,
		    (unsigned long long)tls);
	cr_assert_leq(tls, 4096, "libshmbus.so gives each thread %llu bytes "
		      "of static TLS", (unsigned long long)tls);
}
