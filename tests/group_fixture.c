/* SPDX-License-Identifier: MIT */
/*
 * group_fixture.c - what the consumer-group suites share: a channel in a
 * directory of the test's own, a book of deliveries and acks in shared
 * anonymous memory, numbered messages (keyed or not), members as real
 * processes, and waits that say where a stalled group stands.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../lib/contract.h"
#include "../lib/group.h"
#include "../lib/repair.h"

#include "group_fixture.h"

const char *dir;

void grp_setup(void)
{
	dir = th_mkdir();
}

void grp_teardown(void)
{
	th_rmdir(dir);
}




struct shared *sh;
_Atomic uint32_t *dlv, *acks, *who;

void book_open(uint64_t n)
{
	size_t len = sizeof(*sh) + 3 * n * sizeof(uint32_t);

	sh = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		  -1, 0);
	cr_assert(sh != MAP_FAILED);
	sh->n = n;
	dlv = (void *)(sh + 1);
	acks = dlv + n;
	who = acks + n;
}

shmbus_channel *chan(enum shmbus_policy pol, uint64_t cap)
{
	return th_create(dir, cap, 256, pol, SHMBUS_SINGLE_PRODUCER);
}

/* Publishes messages 0..n-1 (payload: the id as 8 bytes, then the key's
 * counter) with keys id % nkeys (nkeys 0: no key). */
void produce_from(shmbus_channel *ch, uint64_t first, uint64_t n,
		  uint32_t nkeys)
{
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	uint64_t counter[64] = { 0 };

	cr_assert(p);
	for (uint64_t i = first; i < first + n; i++) {
		uint64_t m[2] = { i, 0 };
		int rc;

		if (nkeys) {
			uint64_t k = i % nkeys;

			m[1] = ++counter[k];
			while ((rc = shmbus_publish_keyed(p, k, m,
							  sizeof(m))) == -EAGAIN)
				sched_yield();
		} else {
			while ((rc = shmbus_publish(p, m, sizeof(m))) == -EAGAIN)
				sched_yield();
		}
		cr_assert_geq(rc, 0, "publish: %d", rc);
	}
	shmbus_pub_close(p);
}

void produce(shmbus_channel *ch, uint64_t n, uint32_t nkeys)
{
	produce_from(ch, 0, n, nkeys);
}


static int on_msg(const struct shmbus_group_msg *m, void *arg)
{
	struct member_arg *a = arg;
	const uint8_t *p = m->data;
	uint64_t id, ctr = 0;

	if (a->keyed) {
		p += 8;
	}
	memcpy(&id, p, 8);
	if (id >= sh->n)
		return 1;
	/* holding before the count, counted after it: a kill between the
	 * two reads as "maybe delivered", never as "surely not held". */
	atomic_store(&sh->holding[a->k], (uint32_t)id + 1);
	atomic_fetch_add(&dlv[id], 1);
	atomic_store(&sh->counted[a->k], (uint32_t)id + 1);
	if (a->mode != SHMBUS_GROUP_SHARED) {
		uint64_t key = m->key, last;

		memcpy(&ctr, p + 8, 8);
		last = atomic_load(&sh->last[key % 64]);
		/* Never ahead of what was acked (a gap), never more than one
		 * behind (the one a killed member may have acked). */
		if (ctr > last + 1 || ctr + 1 < last)
			atomic_fetch_add(&sh->bad_order, 1);
		atomic_store(&who[id], (uint32_t)a->k + 1);
	}
	return 0;
}

/* A member: polls until sh->stop and nothing is left, acks all. */
int member(void *arg)
{
	struct member_arg *a = arg;
	shmbus_channel *ch = shmbus_channel_open(dir, "ch");
	struct shmbus_group_attr ga;
	shmbus_group *g;
	char name[16];

	shmbus_group_attr_init(&ga);
	ga.mode = a->mode;
	ga.start = SHMBUS_START_OLDEST;
	if (a->lease_ns)
		ga.lease_ns = a->lease_ns;
	if (a->max_deliveries)
		ga.max_deliveries = a->max_deliveries;
	ga.dead_letter = a->dead_letter;
	snprintf(name, sizeof(name), "w%d", a->k);
	g = ch ? shmbus_group_join(ch, "g", name, &ga) : NULL;
	if (!g)
		return 10;
	for (int idle = 0; idle < 2000;) {
		struct shmbus_group_msg m;
		uint8_t buf[64];
		ssize_t n = shmbus_group_read(g, buf, sizeof(buf), &m);
		uint64_t id;

		if (n == -EAGAIN) {
			if (atomic_load(&sh->stop))
				idle++;
			usleep(atomic_load(&sh->stop) ? 500 : 20);
			continue;
		}
		if (n < 0)
			return 11;
		idle = 0;
		on_msg(&m, a);
		memcpy(&id, buf + (a->keyed ? 8 : 0), 8);
		if (a->stop_after_first) {
			a->stop_after_first = false;
			raise(SIGSTOP);	/* the parent sends SIGCONT */
			if (shmbus_group_ack(g, &m.lease) == -ESTALE)
				atomic_store(&sh->stale, 1);
			continue;
		}
		if (id == a->nack_id) {
			shmbus_group_nack(g, &m.lease, 0);
			continue;
		}
		atomic_store(&sh->acking[a->k], (uint32_t)id + 1);
		if (a->mode != SHMBUS_GROUP_SHARED) {
			uint64_t ctr;

			memcpy(&ctr, buf + 16, 8);
			atomic_store(&sh->last[m.key % 64], ctr);
		}
		if (shmbus_group_ack(g, &m.lease) == 0) {
			atomic_fetch_add(&acks[id], 1);
			atomic_fetch_add(&sh->acked_total, 1);
		}
		/* holding first: a kill between the two reads as "maybe
		 * acked", never as "surely not". */
		atomic_store(&sh->holding[a->k], 0);
		atomic_store(&sh->acking[a->k], 0);
	}
	shmbus_group_leave(g);
	shmbus_channel_close(ch);
	return 0;
}

/* Joins the group first (so that it starts before the messages). */
shmbus_group *anchor_lease(shmbus_channel *ch, enum shmbus_group_mode mode,
			   int64_t lease)
{
	struct shmbus_group_attr ga;
	shmbus_group *g;

	shmbus_group_attr_init(&ga);
	ga.mode = mode;
	if (lease)
		ga.lease_ns = lease;
	g = shmbus_group_join(ch, "g", "anchor", &ga);
	cr_assert(g, "join: %s", strerror(errno));
	return g;
}

shmbus_group *anchor(shmbus_channel *ch, enum shmbus_group_mode mode)
{
	return anchor_lease(ch, mode, 0);
}

/* Waits for pid at most `sec` seconds; on a stall, says where the group
 * is (g) before failing, rather than the test timing out mute. */
int wait_or_dump(pid_t pid, int sec, shmbus_group *g)
{
	struct shmbus_group_stats st;
	int status;

	for (int i = 0; i < sec * 100; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status)
						 : 128 + WTERMSIG(status);
		usleep(10000);
	}
	shmbus_group_stats(g, &st);
	kill(pid, SIGKILL);
	cr_assert_fail("stalled: floor %lu claim %lu head %lu in flight %u "
		       "(oldest: %s, pid %u, %ld ms), window full %lu, "
		       "released %lu, expired %lu",
		       (unsigned long)st.floor, (unsigned long)st.claim,
		       (unsigned long)st.head, st.in_flight, st.oldest_member,
		       st.oldest_pid, (long)(st.oldest_ns / 1000000),
		       (unsigned long)st.window_full,
		       (unsigned long)st.released, (unsigned long)st.expired);
	return -1;
}

void wait_all(pid_t *pids, int n)
{
	for (int i = 0; i < n; i++)
		if (pids[i] > 0)
			cr_assert_eq(th_wait(pids[i]), 0, "member %d failed", i);
}
