/* SPDX-License-Identifier: MIT */
/*
 * leader.c - who is primary, decided by etcd (docs/failover.md): one
 * thread per shmbusd with [replication] arbiter = etcd.
 *
 * Keys under arbiter_prefix:
 *   leader  this host's listen address, under the primary's lease: only
 *           its holder may be primary
 *   sync    "in EPOCH" while every replicated channel's standby is in
 *           sync, "out EPOCH" once one is not; the primary writes "out"
 *           before a degrading channel acknowledges without its standby
 *
 * A primary renews its lease every third of its term and may acknowledge
 * until its last renewal's send time + the term - a quarter of it
 * (CLOCK_MONOTONIC: repl.lease_until, checked before each
 * acknowledgement); past that it fences its channels and stands by.
 * While etcd does not answer and the standby does (its acknowledgements,
 * within half a term), the primary goes on (the failsafe): the standby
 * never promotes itself while it hears a primary.
 *
 * A standby promotes itself when the leader key is gone (the primary's
 * lease expired), the sync record says "in" at its own epoch, and no
 * frame from a primary came for a whole term; it takes the key with a
 * lease of its own first, and its epoch is the key's create revision (or
 * the next epoch, if that is not larger).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl_int.h"
#include "etcd.h"
#include "shmbus/layout.h"

#define STEP_MS		50	/* the thread looks this often */

static struct {
	struct etcd *e;
	char leader_key[300], sync_key[300], me[128];
	int64_t ttl_ns;
	int64_t lease;			/* atomic: held lease, 0: none */
	bool held;			/* atomic: we hold the leader key */
	int64_t renewed_ns;		/* last renewal sent (primary) */
	int sync_state;			/* -1 unknown, 0 out, 1 in: recorded */
	bool said_out;			/* standby: logged "not in sync" */
	bool said_lost;			/* logged "rings vanished" */
	int64_t sync_rev0;		/* the sync record's revision when a
					 * standby with lost rings first looked
					 * (-1: not yet) */
	bool etcd_down;
	pthread_t th;
	bool on, stop;			/* atomic */
	struct etcd_kv last;		/* the leader key, last read */
	pthread_mutex_t mu;		/* last (status from another thread) */
} L = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void set_until(int64_t t)
{
	STORE(&repl.lease_until, t);
}

/* The failsafe: while etcd does not answer and the standby does (it
 * never promotes itself while it hears a primary), a primary that held
 * the key may go on acknowledging, until half a term after the
 * standby's last acknowledgement. */
static void failsafe(int64_t now)
{
	int64_t acked = LOAD(&repl.acked_ns);

	if (!LOAD(&repl.lease_until))
		return;		/* it never held the key */
	if (acked && now - acked < L.ttl_ns / 2 &&
	    acked + L.ttl_ns / 2 > LOAD(&repl.lease_until))
		set_until(acked + L.ttl_ns / 2);
}

static void etcd_trouble(int rc)
{
	if (!L.etcd_down)
		sbd_log(SBD_WARN, 0, "arbiter: etcd does not answer (%s): "
			"going on only while the standby answers",
			strerror(-rc));
	L.etcd_down = true;
}

/* Takes the leader key (or ours, left under a lease of our previous
 * run): 1 won, 0 held by another host (kv says who), -errno. */
static int campaign(struct etcd_kv *kv)
{
	int64_t id;
	bool won;
	int rc = etcd_lease_grant(L.e, (int)(L.ttl_ns / 1000000000), &id);

	if (rc == 0)
		rc = etcd_create(L.e, L.leader_key, L.me, id, &won, kv);
	if (rc == 0 && !won && !strcmp(kv->value, L.me) && kv->lease != id &&
	    (rc = etcd_put_if(L.e, L.leader_key, L.me, id, kv->mod_rev,
			      &won)) == 0 && won)
		rc = etcd_get(L.e, L.leader_key, kv);
	if (rc || !won) {
		if (rc != -EHOSTUNREACH)
			etcd_lease_revoke(L.e, id);
		return rc ? rc : 0;
	}
	STORE(&L.lease, id);
	STORE(&L.held, true);
	return 1;
}

/* The primary's side of one step. */
static void primary_step(void)
{
	int64_t now = now_ns(), left;
	bool won, all_in = true;
	struct etcd_kv kv;
	int rc;

	if (!LOAD(&L.held) && LOAD(&repl.rings_lost)) {
		rp_lease_lost("its rings were made again since its last run: "
			      "it does not take the leader key");
		return;
	}
	if (!LOAD(&L.held)) {
		rc = campaign(&kv);
		if (rc < 0) {
			etcd_trouble(rc);
			failsafe(now);
			if (LOAD(&repl.lease_until) && now >= LOAD(&repl.lease_until))
				rp_lease_lost("the leader key could not be "
					      "taken in time");
			return;
		}
		if (rc == 0) {
			sbd_log(SBD_ERR, 0, "arbiter: the leader key is held by "
				"%s: this host must not be primary", kv.value);
			rp_lease_lost("another host holds the leader key");
			return;
		}
		L.etcd_down = false;
		L.renewed_ns = now;
		set_until(now + L.ttl_ns * 3 / 4);
		sbd_log(SBD_NOTICE, 0, "arbiter: this host holds the leader "
			"key (%s, revision %" PRId64 ")", L.leader_key,
			kv.create_rev);
		L.sync_state = -1;
	}
	if (now - L.renewed_ns >= L.ttl_ns / 3) {
		rc = etcd_lease_keepalive(L.e, LOAD(&L.lease), &left);
		if (rc == 0 && left > 0) {
			L.renewed_ns = now;
			/* The term counts from when we asked, less a quarter
			 * for the clocks' drift and our own delays. */
			set_until(now + left * 1000000000 - L.ttl_ns / 4);
			L.etcd_down = false;
		} else if (rc == 0) {
			/* Gone (etcd lost it, or kept it past an outage):
			 * take the key again at the next step; until then
			 * the last term bounds what we acknowledge. */
			sbd_log(SBD_WARN, 0, "arbiter: the lease is gone; "
				"taking the leader key again");
			STORE(&L.held, false);
			STORE(&L.lease, 0);
			return;
		} else {
			etcd_trouble(rc);
			failsafe(now);
		}
	}
	if (now_ns() >= LOAD(&repl.lease_until)) {
		STORE(&L.held, false);
		rp_lease_lost("the lease could not be renewed in time");
		return;
	}
	/* The sync record: "out" before anything degrades. */
	for (size_t i = 0; i < repl.n; i++) {
		struct sb_repl_view v;

		sb_repl_read(repl.ch[i].ch, &v);
		if (v.flags & SHMBUS_REPL_OUT_OF_SYNC)
			all_in = false;
	}
	if (L.sync_state != (int)all_in) {
		char val[64];

		snprintf(val, sizeof(val), "%s %" PRIu64, all_in ? "in" : "out",
			 LOAD(&repl.epoch));
		rc = etcd_put_if(L.e, L.sync_key, val, 0, 0, &won);
		if (rc == 0 && won) {
			L.sync_state = all_in;
			STORE(&repl.out_recorded, !all_in);
			sbd_log(SBD_INFO, 0, "arbiter: standby recorded %s sync",
				all_in ? "in" : "out of");
		} else {
			sbd_log(SBD_DEBUG, rc, "arbiter: recording '%s'", val);
		}
	}
}

/* The standby's side of one step. */
static void standby_step(void)
{
	int64_t now = now_ns(), seen = LOAD(&repl.peer_seen_ns), id;
	struct etcd_kv kv, sync;
	uint64_t e, epoch;
	char why[256];
	bool won;

	if (LOAD(&L.held))
		return;	/* a promotion under way (sbd_leader_claim()) */
	if (LOAD(&repl.rings_lost)) {
		/* Its rings were made again (a reboot): only a primary that
		 * records it in sync afresh, after it caught up, makes it a
		 * standby that may take over. */
		if (etcd_get(L.e, L.sync_key, &sync))
			return;
		if (L.sync_rev0 < 0) {
			L.sync_rev0 = sync.found ? sync.mod_rev : 0;
		} else if (sync.found && sync.mod_rev > L.sync_rev0 &&
			   !strncmp(sync.value, "in ", 3)) {
			rp_rings_record();
			STORE(&repl.rings_lost, false);
			sbd_log(SBD_NOTICE, 0, "arbiter: caught up and recorded "
				"in sync again: automatic promotion allowed");
		}
		if (LOAD(&repl.rings_lost)) {
			if (!L.said_lost)
				sbd_log(SBD_WARN, 0, "arbiter: its rings were made "
					"again since its last run: no automatic "
					"promotion until a primary records it in "
					"sync (shmbusctl promote --force)");
			L.said_lost = true;
			return;
		}
	}
	if (etcd_get(L.e, L.leader_key, &kv))
		return;
	pthread_mutex_lock(&L.mu);
	L.last = kv;
	pthread_mutex_unlock(&L.mu);
	if (kv.found)
		return;
	if (now - seen < L.ttl_ns)
		return;		/* a primary is heard: the failsafe */
	if (etcd_get(L.e, L.sync_key, &sync))
		return;
	e = LOAD(&repl.epoch);
	if (!sync.found || sscanf(sync.value, "in %" SCNu64, &epoch) != 1 ||
	    epoch != e) {
		if (!L.said_out)
			sbd_log(SBD_WARN, 0, "arbiter: the leader key is gone, "
				"and this standby is not recorded in sync at "
				"epoch %" PRIu64 " ('%s'): no automatic "
				"promotion (shmbusctl promote --force)", e,
				sync.found ? sync.value : "none");
		L.said_out = true;
		return;
	}
	if (etcd_lease_grant(L.e, (int)(L.ttl_ns / 1000000000), &id))
		return;
	if (etcd_create(L.e, L.leader_key, L.me, id, &won, &kv) || !won) {
		etcd_lease_revoke(L.e, id);
		return;
	}
	STORE(&L.lease, id);
	STORE(&L.held, true);
	L.renewed_ns = now_ns();
	set_until(L.renewed_ns + L.ttl_ns * 3 / 4);
	/* The epoch: the key's revision, if above ours. */
	if (rp_auto_promote((uint64_t)kv.create_rev > e ?
				    (uint64_t)kv.create_rev - 1 : e,
			    why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "arbiter: automatic promotion failed: %s",
			why);
		etcd_lease_revoke(L.e, id);
		STORE(&L.held, false);
		STORE(&L.lease, 0);
		return;
	}
	L.said_out = false;
	L.sync_state = -1;
	sbd_log(SBD_NOTICE, 0, "arbiter: the primary's lease expired; this "
		"host took the leader key and is primary (%s)", why);
}

static void *leader_main(void *arg)
{
	(void)arg;
	while (!LOAD(&L.stop)) {
		struct timespec ts = { 0, STEP_MS * 1000000L };

		int64_t t0 = now_ns();

		if (LOAD(&repl.role) == SBD_ROLE_PRIMARY)
			primary_step();
		else
			standby_step();
		if (now_ns() - t0 > 100000000)
			sbd_log(SBD_DEBUG, 0, "arbiter: a step took %" PRId64
				" ms", (now_ns() - t0) / 1000000);
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int sbd_leader_start(void)
{
	const struct sbd_repl_conf *c = &sbd.conf.repl;
	char why[256];

	L.e = etcd_open(c->etcd_endpoints, (int)(c->lease_ttl_ms / 4), why,
			sizeof(why));
	if (!L.e) {
		sbd_log(SBD_ERR, 0, "arbiter: %s", why);
		return -1;
	}
	snprintf(L.leader_key, sizeof(L.leader_key), "%s/leader",
		 c->arbiter_prefix);
	snprintf(L.sync_key, sizeof(L.sync_key), "%s/sync", c->arbiter_prefix);
	snprintf(L.me, sizeof(L.me), "%s", c->listen);
	L.ttl_ns = (int64_t)(c->lease_ttl_ms / 1000 ? c->lease_ttl_ms / 1000
						    : 1) * 1000000000;
	L.sync_state = -1;
	L.sync_rev0 = -1;
	/* A standby that just started has heard nobody yet: it waits a
	 * whole term as if it had just heard a primary, so that a primary
	 * restarting beside it takes its key back first. */
	STORE(&repl.peer_seen_ns, now_ns());
	STORE(&L.stop, false);
	if (pthread_create(&L.th, NULL, leader_main, NULL)) {
		etcd_close(L.e);
		L.e = NULL;
		return -1;
	}
	L.on = true;
	sbd_log(SBD_NOTICE, 0, "arbiter: etcd at %s, key %s, lease %" PRId64
		" s", c->etcd_endpoints, L.leader_key, L.ttl_ns / 1000000000);
	return 0;
}

void sbd_leader_stop(void)
{
	if (!L.on)
		return;
	STORE(&L.stop, true);
	pthread_join(L.th, NULL);
	/* A clean stop gives the key up at once: the standby need not wait
	 * for the lease to run out. */
	if (LOAD(&L.held))
		etcd_lease_revoke(L.e, LOAD(&L.lease));
	etcd_close(L.e);
	L.e = NULL;
	L.on = false;
}

void sbd_leader_release(void)
{
	char why[256];
	struct etcd *e = etcd_open(sbd.conf.repl.etcd_endpoints,
				   (int)(sbd.conf.repl.lease_ttl_ms / 4), why,
				   sizeof(why));
	int64_t id = LOAD(&L.lease);

	STORE(&L.held, false);
	STORE(&L.lease, 0);
	set_until(0);
	if (e && id)
		etcd_lease_revoke(e, id);
	etcd_close(e);
}

int sbd_leader_claim(bool force, uint64_t *floor, char *why, size_t n)
{
	struct etcd *e = etcd_open(sbd.conf.repl.etcd_endpoints,
				   (int)(sbd.conf.repl.lease_ttl_ms / 4), why, n);
	struct etcd_kv kv, sync;
	uint64_t ep = LOAD(&repl.epoch), se;
	int64_t id;
	bool won;
	int rc;

	if (!e)
		return -EINVAL;
	if (LOAD(&repl.rings_lost) && !force) {
		snprintf(why, n, "this host's rings were made again since its "
			 "last run and it has not been caught up: promote "
			 "--force takes the risk");
		etcd_close(e);
		return -EAGAIN;
	}
	rc = etcd_get(e, L.sync_key, &sync);
	if (!rc && !force && (!sync.found ||
			      sscanf(sync.value, "in %" SCNu64, &se) != 1 ||
			      se != ep)) {
		snprintf(why, n, "this standby is not recorded in sync at "
			 "epoch %" PRIu64 " ('%s'): promote --force takes "
			 "the risk", ep, sync.found ? sync.value : "none");
		etcd_close(e);
		return -EAGAIN;
	}
	if (!rc)
		rc = etcd_lease_grant(e, (int)(L.ttl_ns / 1000000000), &id);
	if (!rc && (rc = etcd_create(e, L.leader_key, L.me, id, &won, &kv)) ==
			   0 && !won) {
		snprintf(why, n, "the leader key is held by %s, whose lease "
			 "runs: that host is primary", kv.value);
		etcd_lease_revoke(e, id);
		rc = -EBUSY;
	} else if (rc) {
		snprintf(why, n, "etcd: %s", strerror(-rc));
	} else {
		STORE(&L.lease, id);
		STORE(&L.held, true);
		/* The leader thread renews it at its next step (its
		 * renewal time is its own, 0 until then). */
		set_until(now_ns() + L.ttl_ns * 3 / 4);
		*floor = (uint64_t)kv.create_rev > ep ?
				 (uint64_t)kv.create_rev - 1 : ep;
		if (force)
			sbd_log(SBD_WARN, 0, "arbiter: promoted with --force; "
				"the standby was recorded '%s'%s",
				sync.found ? sync.value : "nothing",
				LOAD(&repl.rings_lost) ? ", and its rings were "
				"made again since its last run" : "");
		if (LOAD(&repl.rings_lost)) {
			rp_rings_record();	/* they are the pair's now */
			STORE(&repl.rings_lost, false);
		}
	}
	etcd_close(e);
	return rc;
}

size_t sbd_leader_status(char *out, size_t n)
{
	int64_t left = LOAD(&repl.lease_until) - now_ns();
	struct etcd_kv kv;
	int k;

	pthread_mutex_lock(&L.mu);
	kv = L.last;
	pthread_mutex_unlock(&L.mu);
	if (LOAD(&L.held))
		k = snprintf(out, n, "\n  arbiter etcd: this host holds the "
			     "leader key, may acknowledge for %" PRId64 " ms",
			     left > 0 ? left / 1000000 : 0);
	else
		k = snprintf(out, n, "\n  arbiter etcd: leader %s",
			     kv.found ? kv.value : "(none seen)");
	return k < 0 ? 0 : (size_t)k;
}
