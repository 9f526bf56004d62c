/* SPDX-License-Identifier: MIT */
/*
 * threads_impl.h - producers and subscribers as threads of one process on
 * a block-policy channel: every message checked whole, in order, exactly
 * once.  Written once, run by test_threads.c (Criterion) and by
 * tsan_threads.c under ThreadSanitizer (Criterion's runner cannot start
 * under TSan: Snaipe/Criterion#274).
 */
#ifndef SHMBUS_THREADS_IMPL_H
#define SHMBUS_THREADS_IMPL_H

#include <pthread.h>
#include <string.h>

#include "helpers.h"

#define NT 2
#define MAXLEN 120

struct ctx {
	shmbus_channel *ch;
	uint64_t n;
	uint32_t id;
	uint64_t got, next[NT];
	int bad;
};

static void *producer(void *arg)
{
	struct ctx *c = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = -1 };
	shmbus_pub *p = shmbus_pub_open(c->ch, &pa);
	uint8_t msg[MAXLEN];

	if (!p) {
		c->bad = 1;
		return NULL;
	}
	for (uint64_t s = 0; s < c->n; s++) {
		size_t len = TH_MSG_MIN + (size_t)(s % (MAXLEN - TH_MSG_MIN));
		void *buf;

		if (s % 2) {
			th_msg_fill(msg, len, c->id, s);
			if (shmbus_publish(p, msg, len))
				c->bad = 1;
		} else if (shmbus_claim(p, len, &buf) == 0) {
			th_msg_fill(buf, len, c->id, s);
			shmbus_commit(p);
		} else {
			c->bad = 1;
		}
	}
	shmbus_pub_close(p);
	return NULL;
}

static int on_msg(const struct shmbus_msg *m, void *arg)
{
	struct ctx *c = arg;
	uint64_t seq;
	uint32_t id;

	if (th_msg_check(m->data, m->len, &id, &seq) || id >= NT ||
	    seq != c->next[id]) {
		c->bad = 1;
		return 1;
	}
	c->next[id]++;
	c->got++;
	return 0;
}

struct subarg {
	struct ctx c;
	shmbus_sub *sub;
	uint64_t total;
};

static void *subscriber(void *arg)
{
	struct subarg *a = arg;

	while (a->c.got < a->total && !a->c.bad) {
		int rc = shmbus_poll(a->sub, on_msg, &a->c, 64);

		if (rc < 0)
			a->c.bad = 1;
		else if (rc == 0)
			shmbus_wait(a->sub, 1000000);
	}
	return NULL;
}

/* Runs the scenario in directory `dir`; returns the number of failures. */
static int threads_run(const char *dir, enum shmbus_producers prod, int nprod,
		       enum shmbus_wait w, uint64_t n)
{
	struct shmbus_channel_attr attr;
	shmbus_channel *ch;
	int fails = 0;
	struct shmbus_sub_attr sa = { .wait = w, .spin_ns = 2000 };
	struct subarg subs[2];
	struct ctx prods[NT];
	pthread_t ts[2 + NT];

	shmbus_channel_attr_init(&attr);
	attr.capacity = 1u << 14;
	attr.max_msg = MAXLEN;
	attr.producers = prod;
	ch = shmbus_channel_create(dir, "ch", &attr, SHMBUS_CREATE_EXCL);
	if (!ch)
		return 1;
	for (int i = 0; i < 2; i++) {
		memset(&subs[i], 0, sizeof(subs[i]));
		subs[i].sub = shmbus_sub_open(ch, &sa);
		subs[i].total = n * (uint64_t)nprod;
		pthread_create(&ts[i], NULL, subscriber, &subs[i]);
	}
	for (int i = 0; i < nprod; i++) {
		prods[i] = (struct ctx){ .ch = ch, .n = n, .id = (uint32_t)i };
		pthread_create(&ts[2 + i], NULL, producer, &prods[i]);
	}
	for (int i = 0; i < 2 + nprod; i++)
		pthread_join(ts[i], NULL);
	for (int i = 0; i < nprod; i++)
		fails += prods[i].bad != 0;
	for (int i = 0; i < 2; i++) {
		fails += subs[i].c.bad != 0;
		fails += subs[i].c.got != n * (uint64_t)nprod;
		shmbus_sub_close(subs[i].sub);
	}
	shmbus_channel_close(ch);
	shmbus_channel_unlink(dir, "ch");
	return fails;
}


#endif
