/* SPDX-License-Identifier: MIT */
/*
 * leader_int.h - the arbiter's state (docs/failover.md), shared by
 * leader.c (its thread, the primary's and the standby's steps, the
 * watchdog) and leader_key.c (the leader key and the sync record in
 * etcd: the transactions that take the key, give it up, and put the
 * record back).  Internal to shmbusd.
 */
#ifndef SHMBUSD_LEADER_INT_H
#define SHMBUSD_LEADER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "etcd.h"

#define STEP_MS		50	/* the leader thread looks this often */

struct arbiter {
	struct etcd *e;
	char leader_key[300], sync_key[300];
	char id[24];			/* this host's id (hex) */
	char me[160];			/* "ID LISTEN": the leader key's
					 * value */
	int64_t ttl_ns;			/* the lease asked for */
	int64_t term_ns;		/* the held lease's term: the shorter
					 * of ttl_ns and the TTL granted */
	bool said_ttl;			/* a grant other than asked, logged */
	int64_t lease;			/* atomic: held lease, 0: none */
	bool held;			/* atomic: we hold the leader key */
	bool claiming;			/* atomic: a manual promotion took the
					 * key and has not finished */
	bool rings_pending;		/* ... forced, on rings made again:
					 * they are the pair's once it has */
	bool opened;			/* primary: fences opened this term */
	bool served;			/* fences opened under a term in this
					 * run: losing the key is an error,
					 * not a returning primary's standing
					 * by */
	int64_t renewed_ns;		/* last renewal sent (primary) */
	int sync_state;			/* -1 unknown, 0 out, 1 in: recorded */
	uint32_t provisional_seen;	/* the channels' provisional_n summed
					 * when "out" was last recorded */
	uint64_t recorded_token;	/* the token of the "in" recorded */
	struct etcd_kv claim_before;	/* the sync record ldr_take_key()
					 * found */
	char claim_value[96];		/* what it wrote there */
	int64_t claim_rev;		/* and the revision it wrote it at */
	bool stray;			/* a claim that did not go through
					 * may have left claim_value in the
					 * record: ldr_put_back() */
	int64_t stray_lease;		/* its lease, not known to be gone:
					 * ldr_put_back() revokes it first */
	int64_t stray_lease_end;	/* lease_ns() by which it ran out
					 * (the grant's answer + its TTL) */
	int64_t grant_end;		/* the same, for the last ldr_grant() */
	bool said_out, said_lost, said_unapplied;
	bool etcd_down;			/* atomic: the last request failed */
	int64_t step_ns;		/* atomic: when the step under way
					 * began (lease_ns()), 0: none */
	pthread_t th, watch;
	bool on, stop;			/* atomic */
	pthread_mutex_t step_mu;	/* a step; a manual claim */
	struct etcd_kv last;		/* the leader key, last read */
	pthread_mutex_t mu;		/* last (status from another thread) */
	pthread_mutex_t kick_mu;	/* kicked, kick_cv */
	pthread_cond_t kick_cv;		/* on CLOCK_MONOTONIC */
	bool kicked;			/* a step is wanted now */
};

extern struct arbiter arb;

/* The sync record "STATE EPOCH HOSTID", as etcd has it. */
struct sync_rec {
	bool ok;		/* found, and it parses, with an epoch below
				 * RW_EPOCH_MAX (one past it must not wrap) */
	bool in;		/* "in", else "out" */
	bool mine;		/* HOSTID is this host */
	bool forced;		/* "out EPOCH HOSTID/force" */
	uint64_t epoch;
	uint64_t token;		/* "in": the standby's links' token, if
				 * every one carried it (0: none) */
};

/* leader.c */
void ldr_kick(void);
void ldr_set_until(int64_t t);

/* leader_key.c */
bool ldr_is_me(const char *value);
struct sync_rec ldr_read_sync(const struct etcd_kv *kv);
bool ldr_may_take_over(const struct etcd_kv *sync, uint64_t e, char *why,
		       size_t n);
bool ldr_may_retake(const struct etcd_kv *sync, uint64_t e, char *why,
		    size_t n);
uint64_t ldr_next_epoch(const struct etcd_kv *sync, uint64_t e);
int ldr_take_key(struct etcd *e, const struct etcd_kv *sync, int64_t id,
		 uint64_t epoch, bool force, bool *won, struct etcd_kv *kv);
void ldr_unclaim(struct etcd *e, int64_t id);
int ldr_grant(struct etcd *e, int64_t *id, int64_t *term_ns);
int ldr_put_back(struct etcd *e);
void ldr_claim_unknown(struct etcd *e, int64_t id, int64_t t0, int64_t term,
		       char *why, size_t n);
int ldr_campaign(struct etcd_kv *kv, const struct etcd_kv *sync);

#endif
