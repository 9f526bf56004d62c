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
#include "../lib/channel.h"
#include "../lib/repair.h"

/*
 * Threads that open and close handles while others repair every slot and
 * the single producer's role as a dead process's with our pid (as
 * tests/test_killloop.c does): the list of what this process holds, and
 * the verdicts and CASes made under its locks (lib/pid.c, producer.c).
 */
struct own {
	shmbus_channel *mp, *sp;
	int stop;
};

static void *own_opener(void *arg)
{
	struct own *o = arg;

	while (!__atomic_load_n(&o->stop, __ATOMIC_RELAXED)) {
		shmbus_sub *s = shmbus_sub_open(o->mp, NULL);
		shmbus_pub *p = shmbus_pub_open(o->mp, NULL);
		shmbus_pub *q = shmbus_pub_open(o->sp, NULL);

		shmbus_sub_close(s);
		shmbus_pub_close(p);
		shmbus_pub_close(q);
	}
	return NULL;
}

static void *own_repairer(void *arg)
{
	struct own *o = arg;
	uint32_t me = (uint32_t)getpid();
	uint64_t bad, sp;

	while (!__atomic_load_n(&o->stop, __ATOMIC_RELAXED)) {
		/* A word naming our pid, judged without the list. */
		for (uint32_t i = 0; i < 4; i++) {
			uint64_t w = __atomic_load_n(&o->mp->subs[i].owner,
						     __ATOMIC_ACQUIRE);

			if (owner_pid(w) == me)
				sb_repair_sub(o->mp, i, w, me);
			w = __atomic_load_n(&o->mp->prods[i].owner,
					    __ATOMIC_ACQUIRE);
			if (owner_pid(w) == me)
				sb_repair_prod(o->mp, i, w, me);
		}
		sp = __atomic_load_n(&o->sp->pl->sp_owner,
				     __ATOMIC_ACQUIRE);
		if (role_pid(sp) == me)
			sb_repair_sp(o->sp, sp, me, &bad);
	}
	return NULL;
}

/* 1 if a live handle's slot was released, or the run could not start. */
static int own_pid_repairs(const char *dir)
{
	struct shmbus_channel_attr a = {
		.capacity = 64 * 1024, .max_msg = 1024, .numa_node = -1,
		.producers = SHMBUS_MULTI_PRODUCER,
	};
	struct shmbus_channel_attr b = a;
	struct own o = { 0 };
	pthread_t t[4];
	uint64_t reaped;

	b.producers = SHMBUS_SINGLE_PRODUCER;
	o.mp = shmbus_channel_create(dir, "own_mp", &a, 0);
	o.sp = shmbus_channel_create(dir, "own_sp", &b, 0);
	if (!o.mp || !o.sp)
		return 1;
	for (int k = 0; k < 4; k++)
		pthread_create(&t[k], NULL, k < 2 ? own_opener : own_repairer,
			       &o);
	usleep(300000);
	__atomic_store_n(&o.stop, 1, __ATOMIC_RELAXED);
	for (int k = 0; k < 4; k++)
		pthread_join(t[k], NULL);
	reaped = __atomic_load_n(&o.mp->hdr->reaped, __ATOMIC_ACQUIRE);
	shmbus_channel_close(o.mp);
	shmbus_channel_close(o.sp);
	shmbus_channel_unlink(dir, "own_mp");
	shmbus_channel_unlink(dir, "own_sp");
	if (reaped)
		fprintf(stderr, "own_pid_repairs: %llu live slots released\n",
			(unsigned long long)reaped);
	return reaped != 0;
}

int main(void)
{
	char dir[] = "/dev/shm/shmbus-tsan-XXXXXX";
	uint64_t n = th_env_count("SHMBUS_STRESS_N", 100000);
	int fails;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	fails = threads_run(dir, SHMBUS_SINGLE_PRODUCER, 1, SHMBUS_WAIT_SLEEP,
			    n) != 0;
	fails += threads_run(dir, SHMBUS_MULTI_PRODUCER, 2, SHMBUS_WAIT_YIELD,
			     n) != 0;
	fails += own_pid_repairs(dir);
	rmdir(dir);
	printf("tsan_threads: %d passed, %d failed\n", 3 - fails, fails);
	return fails ? 1 : 0;
}
