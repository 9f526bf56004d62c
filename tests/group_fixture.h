/* SPDX-License-Identifier: MIT */
/*
 * group_fixture.h - what test_group.c and test_group_races.c share
 * (group_fixture.c).
 */
#ifndef SHMBUS_GROUP_FIXTURE_H
#define SHMBUS_GROUP_FIXTURE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "shmbus.h"

/* The test's directory, made by the suite's init, removed by its fini. */
extern const char *dir;
void grp_setup(void);
void grp_teardown(void);

/* What every process of a test records, in shared anonymous memory. */
struct book {
	_Atomic uint32_t dlv[1];	/* [n]: deliveries per message id */
};

struct shared {
	uint64_t n;			/* messages */
	_Atomic uint64_t acked_total;
	_Atomic int stop;
	_Atomic int stale;		/* -ESTALE seen by a late ack */
	_Atomic uint32_t holding[16];	/* member k: id + 1 it holds */
	_Atomic uint32_t acking[16];	/* member k: id + 1 it acks now */
	_Atomic uint32_t counted[16];	/* member k: id + 1 last counted */
	_Atomic uint64_t last[64];	/* keyed: last acked counter + 1 */
	_Atomic uint32_t bad_order;
	_Atomic uint32_t who[1];	/* [n]: single-active receiver */
};

struct member_arg {
	enum shmbus_group_mode mode;
	int k;			/* member number */
	unsigned batch;
	bool keyed;		/* payload after an 8-byte key */
	int64_t lease_ns;
	uint32_t max_deliveries;
	const char *dead_letter;
	uint64_t nack_id;	/* nack this id every time (UINT64_MAX: none) */
	bool stop_after_first;	/* SIGSTOP itself holding its first lease */
};

/* The book (sh, and its arrays of n entries: deliveries, acks, and the
 * single-active receiver of each message id), in shared anonymous
 * memory. */
extern struct shared *sh;
extern _Atomic uint32_t *dlv, *acks, *who;
void book_open(uint64_t n);

/* Channel "ch" in dir: 256-byte messages, one producer. */
shmbus_channel *chan(enum shmbus_policy pol, uint64_t cap);
/* Publishes messages first..first+n-1 (payload: the id as 8 bytes, then
 * the key's counter) with keys id % nkeys (nkeys 0: no key). */
void produce_from(shmbus_channel *ch, uint64_t first, uint64_t n,
		  uint32_t nkeys);
void produce(shmbus_channel *ch, uint64_t n, uint32_t nkeys);

/* A member process (arg: a struct member_arg): polls until sh->stop and
 * nothing is left, booking and acking every message. */
int member(void *arg);
/* Joins the group "g" first (so that it starts before the messages). */
shmbus_group *anchor_lease(shmbus_channel *ch, enum shmbus_group_mode mode,
			   int64_t lease);
shmbus_group *anchor(shmbus_channel *ch, enum shmbus_group_mode mode);
/* Waits for pid at most `sec` seconds; on a stall, says where the group
 * is (g) before failing. */
int wait_or_dump(pid_t pid, int sec, shmbus_group *g);
void wait_all(pid_t *pids, int n);

#endif
