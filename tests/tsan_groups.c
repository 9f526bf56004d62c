/* SPDX-License-Identifier: MIT */
/*
 * tsan_groups.c - consumer groups with their members as threads of one
 * process, so that ThreadSanitizer sees every claim, ack, floor move and
 * maintenance run against each other: a shared group (batched claims,
 * nacks, a maintenance thread) and a keyed group (lanes moving as members
 * join and leave), half of the members sleeping in shmbus_group_wait()
 * when nothing is there.  Every message must be acknowledged exactly once in
 * the shared group, and at least once, in order per key, in the keyed
 * one.  Without Criterion (it cannot start under TSan); `make tsan` runs
 * it with halt_on_error=1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmbus.h"
#include "../lib/channel.h"

static const char *dir;
static uint64_t n;
static _Atomic uint32_t *acks;
static _Atomic uint64_t last[8];	/* keyed: last counter acked per key */
static _Atomic int done, bad;
static enum shmbus_group_mode mode;

struct worker {
	pthread_t t;
	int k;
	shmbus_channel *ch;
};

static int on_msg(const struct shmbus_group_msg *m, void *arg)
{
	uint64_t v[3];

	(void)arg;
	memcpy(v, m->data, m->len < sizeof(v) ? m->len : sizeof(v));
	return 0;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct shmbus_group_attr ga;
	char name[16];
	shmbus_group *g;
	unsigned taken = 0;

	shmbus_group_attr_init(&ga);
	ga.mode = mode;
	snprintf(name, sizeof(name), "t%d", w->k);
	g = shmbus_group_join(w->ch, "g", name, &ga);
	if (!g) {
		atomic_store(&bad, 1);
		return NULL;
	}
	for (int idle = 0; idle < 3000;) {
		struct shmbus_group_msg m;
		uint64_t buf[3], id, ctr;
		ssize_t r = shmbus_group_read(g, buf, sizeof(buf), &m);

		if (r == -EAGAIN) {
			/* Odd workers sleep in the group's wait (on the
			 * channel's futex, counted in its sleepers), the
			 * others yield. */
			if (w->k % 2) {
				idle += 100 * atomic_load(&done);
				shmbus_group_wait(g, 2000000);
			} else {
				idle += atomic_load(&done);
				sched_yield();
			}
			continue;
		}
		if (r < 0) {
			atomic_store(&bad, 2);
			break;
		}
		idle = 0;
		id = mode == SHMBUS_GROUP_SHARED ? buf[0] : buf[1];
		/* A nack now and then: redelivered to any of us. */
		if (mode == SHMBUS_GROUP_SHARED && id % 97 == 0 &&
		    m.deliveries == 1) {
			shmbus_group_nack(g, &m.lease, 0);
			continue;
		}
		if (mode == SHMBUS_GROUP_KEYED) {
			ctr = buf[2];
			if (ctr > atomic_load(&last[m.key % 8]) + 1)
				atomic_store(&bad, 3);	/* a key skipped */
			atomic_store(&last[m.key % 8], ctr);
		}
		if (shmbus_group_ack(g, &m.lease) == 0)
			atomic_fetch_add(&acks[id], 1);
		/* Keyed: the second worker leaves and rejoins, lanes move. */
		if (mode == SHMBUS_GROUP_KEYED && w->k == 1 &&
		    ++taken % 5000 == 0) {
			shmbus_group_leave(g);
			g = shmbus_group_join(w->ch, "g", name, &ga);
			if (!g) {
				atomic_store(&bad, 4);
				return NULL;
			}
		}
	}
	shmbus_group_poll(g, on_msg, NULL, 1);
	shmbus_group_leave(g);
	return NULL;
}

static void *maintain(void *arg)
{
	shmbus_channel *ch = arg;
	struct shmbus_group_attr ga;
	shmbus_group *g;

	shmbus_group_attr_init(&ga);
	ga.mode = mode;
	g = shmbus_group_join(ch, "g", "maint", &ga);
	while (g && !atomic_load(&done)) {
		shmbus_group_maintain(g);
		usleep(1000);
	}
	shmbus_group_leave(g);
	return NULL;
}

static int run(enum shmbus_group_mode md, int nworkers)
{
	struct shmbus_channel_attr ca;
	struct shmbus_group_attr ga;
	struct worker w[4];
	shmbus_channel *ch;
	shmbus_group *anchor;
	shmbus_pub *p;
	pthread_t mt;
	uint64_t ctr[8] = { 0 };
	int fails = 0;

	mode = md;
	atomic_store(&done, 0);
	atomic_store(&bad, 0);
	for (int k = 0; k < 8; k++)
		atomic_store(&last[k], 0);
	acks = calloc(n, sizeof(*acks));
	shmbus_channel_attr_init(&ca);
	ca.capacity = 1 << 16;
	ch = shmbus_channel_create(dir, "g", &ca, SHMBUS_CREATE_REPLACE);
	if (!ch || !acks)
		return 1;
	shmbus_group_attr_init(&ga);
	ga.mode = md;
	ga.window = 32;
	anchor = shmbus_group_join(ch, "g", "anchor", &ga);
	if (!anchor)
		return 1;
	for (int k = 0; k < nworkers; k++) {
		w[k].k = k;
		w[k].ch = ch;
		pthread_create(&w[k].t, NULL, work, &w[k]);
	}
	/* A member that never polls would hold lanes for a term: the
	 * maintenance thread runs with the shared group only (keyed
	 * members maintain from their polls). */
	if (md == SHMBUS_GROUP_SHARED)
		pthread_create(&mt, NULL, maintain, ch);
	shmbus_group_leave(anchor);
	p = shmbus_pub_open(ch, NULL);
	for (uint64_t i = 0; p && i < n; i++) {
		uint64_t key = i % 8, m[2] = { i, ++ctr[key] };

		while ((md == SHMBUS_GROUP_SHARED
				? shmbus_publish(p, m, sizeof(m))
				: shmbus_publish_keyed(p, key, m, sizeof(m))) ==
		       -EAGAIN)
			sched_yield();
	}
	atomic_store(&done, 1);
	for (int k = 0; k < nworkers; k++)
		pthread_join(w[k].t, NULL);
	if (md == SHMBUS_GROUP_SHARED)
		pthread_join(mt, NULL);
	for (uint64_t i = 0; i < n; i++)
		if (md == SHMBUS_GROUP_SHARED ? acks[i] != 1 : acks[i] < 1) {
			fprintf(stderr, "message %lu acked %u times\n",
				(unsigned long)i, acks[i]);
			fails = 1;
			break;
		}
	if (atomic_load(&bad)) {
		fprintf(stderr, "worker error %d\n", atomic_load(&bad));
		fails = 1;
	}
	/* Every member that slept took itself off the count. */
	if (load_relaxed32(&ch->hdr->sleepers)) {
		fprintf(stderr, "sleepers left: %u\n",
			load_relaxed32(&ch->hdr->sleepers));
		fails = 1;
	}
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_channel_unlink(dir, "g");
	free((void *)acks);
	return fails;
}

int main(void)
{
	char d[] = "/dev/shm/shmbus-tsan-groups-XXXXXX";
	const char *env = getenv("SHMBUS_STRESS_N");
	int fails;

	n = env ? strtoull(env, NULL, 10) / 2 : 50000;
	if (!mkdtemp(d)) {
		perror("mkdtemp");
		return 1;
	}
	dir = d;
	fails = run(SHMBUS_GROUP_SHARED, 3);
	fails += run(SHMBUS_GROUP_KEYED, 2);
	rmdir(d);
	printf("tsan_groups: %d passed, %d failed\n", 2 - fails, fails);
	return fails ? 1 : 0;
}
