/* SPDX-License-Identifier: MIT */
/*
 * leader_key.c - the arbiter's keys in etcd (docs/failover.md), and the
 * transactions on them: the leader thread's campaign, a promotion's claim
 * (by hand, by a switchover, or the standby's own), giving the key up,
 * and putting the sync record back after a claim that did not go through.
 * The thread that decides when: leader.c.
 *
 * Keys under arbiter_prefix:
 *   leader  "HOSTID LISTEN" under the primary's lease: only its holder
 *           may be primary.  HOSTID is random, kept in state_dir/host-id.
 *   sync    "in EPOCH HOSTID" while every replicated channel's standby is
 *           in sync, "out EPOCH HOSTID" once one is not, written by the
 *           primary HOSTID, and only while it holds the leader key (a
 *           transaction that compares the key's lease); "out" is written
 *           before a degrading channel acknowledges without its standby.
 *           "out EPOCH HOSTID/force": written by promote --force with the
 *           key (ldr_take_key()), until that primary's first step writes
 *           the record as it reads (leader.c's record_sync()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl_int.h"
#include "etcd.h"
#include "leader_int.h"

/* A key's value names this host. */
bool ldr_is_me(const char *value)
{
	size_t n = strlen(arb.id);

	return !strncmp(value, arb.id, n) &&
	       (value[n] == ' ' || value[n] == 0);
}

struct sync_rec ldr_read_sync(const struct etcd_kv *kv)
{
	struct sync_rec r = { 0 };
	char state[4], host[24];
	size_t hl;
	int e3 = -1, e4 = -1;
	int n = kv->found ? sscanf(kv->value, "%3s %" SCNu64 " %23s%n %" SCNx64
				   "%n", state, &r.epoch, host, &e3, &r.token,
				   &e4) : 0;
	const char *rest = n == 4 ? kv->value + e4
			   : n == 3 ? kv->value + e3 : NULL;

	/* Nothing but blanks after the last field: "out E ID /force" or an
	 * id cut at 23 characters is unreadable, not a record of ID. */
	if (rest)
		rest += strspn(rest, " \t\n");
	if (n < 3 || *rest || r.epoch >= RW_EPOCH_MAX ||
	    (strcmp(state, "in") && strcmp(state, "out")))
		return (struct sync_rec){ 0 };
	if (n == 3)
		r.token = 0;
	r.ok = true;
	r.in = !strcmp(state, "in");
	/* An older daemon reads "ID/force" as another host's id: a record
	 * it does not take over on, and that names a primary since its
	 * epoch (docs/failover.md). */
	hl = strlen(host);
	if (hl > 6 && !strcmp(host + hl - 6, "/force")) {
		if (r.in || n == 4)
			return (struct sync_rec){ 0 };
		host[hl - 6] = 0;
		r.forced = true;
	}
	r.mine = !strcmp(host, arb.id);
	return r;
}

/* Whether a standby may take over now, by the sync record (sync) at its
 * epoch e; why says why not. */
bool ldr_may_take_over(const struct etcd_kv *sync, uint64_t e, char *why,
		       size_t n)
{
	struct sync_rec r = ldr_read_sync(sync);

	if (!r.ok) {
		if (sync->found)
			snprintf(why, n, "unreadable sync record '%.200s'",
				 sync->value);
		else
			snprintf(why, n, "no sync record");
		return false;
	}
	/* It took the key at that epoch: it was that primary, or it
	 * stopped before it became it (its epoch is still older, and it
	 * wrote nothing at that one).  Either way it holds all; unless it
	 * took the key by force, which says nothing of what it holds. */
	if (!r.in && r.mine && r.epoch >= e && !r.forced)
		return true;
	if (r.forced && r.mine) {
		snprintf(why, n, "recorded '%.80s': a forced promotion of this "
			 "host that did not go through; it takes over only by "
			 "hand (promote --force)", sync->value);
		return false;
	}
	if (r.epoch != e) {
		snprintf(why, n, "the sync record is of epoch %" PRIu64 ", ours "
			 "%" PRIu64, r.epoch, e);
		return false;
	}
	if (r.in && !r.mine)
		return true;	/* its primary recorded it in sync */
	/* Its own "in": it was that primary, and stood by (its term ran
	 * out, or by hand).  Nobody took the key since, if etcd forgot
	 * nothing; but a record etcd lost (a restore from an older backup)
	 * would let two hosts be primary at one epoch, which no link could
	 * tell apart.  So only by hand. */
	if (r.in && r.mine) {
		snprintf(why, n, "recorded '%.80s': this host was that "
			 "primary; it takes over only by hand (promote --force), "
			 "once the peer is known to be down", sync->value);
		return false;
	}
	snprintf(why, n, "recorded '%.200s'", sync->value);
	return false;
}

/* Whether a primary (by its rings) at epoch e may take the leader key
 * (again) by the sync record: not if another host has been primary since
 * (the record names a newer epoch, or its own as another host's); why
 * says why not.  A record that does not parse is no primary's. */
bool ldr_may_retake(const struct etcd_kv *sync, uint64_t e, char *why,
		    size_t n)
{
	struct sync_rec r = ldr_read_sync(sync);

	if (!r.ok || r.epoch < e || (r.epoch == e && r.mine))
		return true;
	snprintf(why, n, "the sync record '%.200s' names a primary since this "
		 "host's epoch %" PRIu64 ": it must not take the leader key",
		 sync->value, e);
	return false;
}

/* The epoch a host that takes the key now becomes primary at: past its
 * own and past the one the sync record names.  Every promotion records
 * its epoch in the transaction that takes the key (ldr_take_key()), so this
 * is newer than any epoch a primary has had.  An epoch this host recorded
 * so and never became primary at (its promotion failed, or it stopped
 * first) is its own to take again: no one else was primary at it, and
 * failed promotions do not move the epoch on each time. */
uint64_t ldr_next_epoch(const struct etcd_kv *sync, uint64_t e)
{
	struct sync_rec r = ldr_read_sync(sync);

	if (!r.ok)
		return e + 1;
	if (!r.in && r.mine && r.epoch > e)
		return r.epoch;
	return (r.epoch > e ? r.epoch : e) + 1;
}

/* Takes the leader key under lease id, if nobody holds it and the sync
 * record is still `sync`, and records "out EPOCH this-host" with it, in
 * one transaction: whoever takes the key to become primary at a new
 * epoch says so before it is primary, so that no crash between the two
 * leaves a host at an epoch the record does not know (neither host could
 * take over then).  *won, and kv the key as it is after. */
int ldr_take_key(struct etcd *e, const struct etcd_kv *sync, int64_t id,
		 uint64_t epoch, bool force, bool *won, struct etcd_kv *kv)
{
	char val[96];

	int rc;

	snprintf(val, sizeof(val), "out %" PRIu64 " %s%s", epoch, arb.id,
		 force ? "/force" : "");
	arb.claim_before = *sync;
	snprintf(arb.claim_value, sizeof(arb.claim_value), "%s", val);
	rc = etcd_create_if(e, arb.leader_key, arb.me, id, arb.sync_key,
			    sync->found ? sync->mod_rev : 0, val, won, kv);
	/* Our key under this lease: a copy of the transaction that went
	 * through before this one (ldr_campaign() too). */
	if (rc == 0 && !*won && kv->found && ldr_is_me(kv->value) &&
	    kv->lease == id)
		*won = true;
	if (rc == 0 && *won) {
		/* One transaction: the record's revision is the key's. */
		arb.claim_rev = kv->create_rev;
		arb.stray = false;	/* written over */
	}
	return rc;
}

/* Gives up the key ldr_take_key() took under lease id, this host not having
 * become primary after all (a promotion that failed or was called off):
 * first the sync record is put back as ldr_take_key() found it, if nobody
 * wrote it since, so that the primary this host meant to succeed (still
 * alive, and now told no) may take the key again: a record left naming
 * the new epoch would keep it out (ldr_may_retake()), and with this host gone
 * or still hearing it, the pair would have no primary.  The record goes
 * back while the key is still held, so no host reads a free key beside
 * the record of a promotion that did not happen.  By the thread that took
 * the key, before any other may take it again (the leader thread, or a
 * manual claim's thread while arb.claiming keeps the leader thread off). */
void ldr_unclaim(struct etcd *e, int64_t id)
{
	bool won = false;
	int rc = etcd_restore_if(e, arb.sync_key, &arb.claim_before,
				 arb.claim_rev, &won);

	if (rc) {
		sbd_log(SBD_WARN, -rc, "arbiter: the sync record could not be "
			"put back after a promotion that did not happen: it "
			"may still name this host's new epoch, and then no "
			"other host takes the leader key until this one has "
			"put it back (tried again while it stands by) or "
			"taken the key");
		arb.stray = true;
	} else if (!won)
		sbd_log(SBD_NOTICE, 0, "arbiter: the sync record was written "
			"since this host took the key: left as it is");
	else
		sbd_log(SBD_NOTICE, 0, "arbiter: the sync record is '%s' again "
			"(this host did not become primary)",
			arb.claim_before.found ? arb.claim_before.value
					       : "(none)");
	if (etcd_lease_revoke(e, id)) {
		/* The key stays until the lease runs out: ldr_put_back()
		 * revokes it again. */
		arb.stray_lease = id;
		arb.stray_lease_end = arb.grant_end;
		arb.stray = true;
	}
}

/* A lease for the leader key: *term_ns, its term, is the shorter of the
 * TTL asked and the one granted; arb.grant_end, when the lease runs out if
 * nobody renews it.  etcd grants no lease shorter than its
 * minimum (2 s for etcd 3.4 with its default election timeout), and a
 * primary renewing by the TTL asked would then still leave a failover
 * waiting for etcd's; a gateway that granted less than asked would give
 * the first term more time than the lease has.  Said once. */
int ldr_grant(struct etcd *e, int64_t *id, int64_t *term_ns)
{
	int64_t asked = arb.ttl_ns / 1000000000, got;
	int rc = etcd_lease_grant(e, (int)asked, id, &got);

	if (rc)
		return rc;
	/* Gone by then, unless revoked first (a leader change in etcd
	 * renews every lease: a revoke confirmed is what counts). */
	arb.grant_end = lease_ns() + got * 1000000000;
	if (got != asked && !arb.said_ttl) {
		arb.said_ttl = true;
		sbd_log(SBD_WARN, 0, "arbiter: etcd granted a lease of %" PRId64
			" s for the %" PRId64 " s asked (lease_ttl_ms): terms "
			"last %" PRId64 " s, and a standby takes over once the "
			"primary's lease of %" PRId64 " s has run out", got,
			asked, got < asked ? got : asked, got);
	}
	*term_ns = (got < asked ? got : asked) * 1000000000;
	return 0;
}

/* Puts the sync record back as ldr_take_key() found it, if it says what
 * ldr_take_key() wrote and was written since (arb.stray: a claim that did not
 * go through, whose transaction etcd may have applied unseen, or whose
 * record ldr_unclaim() could not put back), once the claim's lease is gone
 * (revoked, or its TTL past: arb.stray_lease).  Only this host writes its
 * own id there, and a record that still says so names no host's
 * promotion since.  0 once the record is known not to be the claim's and
 * cannot become it (arb.stray cleared), or -errno. */
int ldr_put_back(struct etcd *e)
{
	struct etcd_kv sync;
	bool won = false;
	int rc;

	/* The claim's lease first: while it lives, its transaction may
	 * still land (a request held up on its way) after the record was
	 * found unchanged. */
	if (arb.stray_lease && lease_ns() < arb.stray_lease_end &&
	    (rc = etcd_lease_revoke(e, arb.stray_lease)))
		return rc;
	arb.stray_lease = 0;
	rc = etcd_get(e, arb.sync_key, &sync);

	if (rc == 0 && sync.found && !strcmp(sync.value, arb.claim_value) &&
	    (!arb.claim_before.found ||
	     sync.mod_rev != arb.claim_before.mod_rev))
		rc = etcd_restore_if(e, arb.sync_key, &arb.claim_before,
				     sync.mod_rev, &won);
	if (rc)
		return rc;
	if (won)
		sbd_log(SBD_NOTICE, 0, "arbiter: the sync record is '%s' again "
			"(this host did not become primary)",
			arb.claim_before.found ? arb.claim_before.value
					       : "(none)");
	arb.stray = false;
	return 0;
}

/* After ldr_take_key() under lease id (granted at t0 for term) failed, etcd
 * may have applied the transaction all the same: it answered after the
 * client's timeout, or the connection dropped after the request.  Reads
 * the leader key until etcd answers or the term is over.  If it holds
 * this host under id, the key was taken, and is given up as a claim that
 * did not go through (ldr_unclaim(): the record put back first).  Otherwise
 * the lease is revoked, so that the transaction, if still on its way,
 * fails (its put names a lease that no longer exists), and the record is
 * put back if it went through before that.  What etcd does not answer is
 * left to the leader thread (ldr_put_back(), before it promotes by itself).
 * why says which. */
void ldr_claim_unknown(struct etcd *e, int64_t id, int64_t t0,
		       int64_t term, char *why, size_t n)
{
	int64_t ttl = (arb.grant_end - t0) / 1000000000;
	struct etcd_kv kv;
	int rc;

	while ((rc = etcd_get(e, arb.leader_key, &kv)) &&
	       lease_ns() - t0 < term)
		usleep(STEP_MS * 1000);
	if (rc == 0 && kv.found && ldr_is_me(kv.value) && kv.lease == id) {
		arb.claim_rev = kv.create_rev;
		ldr_unclaim(e, id);
		snprintf(why, n, "etcd took the leader key for this host all "
			 "the same: given up again");
		return;
	}
	/* ldr_put_back() revokes the lease, and puts the record back only
	 * once it is gone: a transaction still on its way then fails. */
	arb.stray_lease = id;
	arb.stray_lease_end = arb.grant_end;
	arb.stray = true;
	if (ldr_put_back(e) == 0 && rc == 0) {
		snprintf(why, n, "the leader key was not taken");
		return;
	}
	sbd_log(SBD_WARN, 0, "arbiter: etcd does not say whether this host "
		"took the leader key: its lease runs out within %" PRId64
		" s, and the sync record is put back once etcd answers",
		ttl);
	snprintf(why, n, "whether etcd took the leader key is not known: its "
		 "lease runs out within %" PRId64 " s", ttl);
}

/* Takes the leader key (or ours, left under a lease of our previous
 * run) if the sync record is still `sync`, its term counted from before
 * the grant: 1 won, 0 held by another host (kv says who) or the record
 * changed meanwhile (kv not found), -errno. */
int ldr_campaign(struct etcd_kv *kv, const struct etcd_kv *sync)
{
	int64_t t0 = lease_ns(), id, term;
	bool won;
	int rc = ldr_grant(arb.e, &id, &term);

	if (rc == 0)
		rc = etcd_create_if(arb.e, arb.leader_key, arb.me, id,
				    arb.sync_key,
				    sync->found ? sync->mod_rev : 0, NULL,
				    &won, kv);
	if (rc == 0 && !won && kv->found && ldr_is_me(kv->value) &&
	    kv->lease != id &&
	    (rc = etcd_put_if(arb.e, arb.leader_key, arb.me, id, kv->mod_rev,
			      &won)) == 0 && won)
		rc = etcd_get(arb.e, arb.leader_key, kv);
	if (rc == 0 && !won && kv->found && ldr_is_me(kv->value) &&
	    kv->lease == id)
		won = true;	/* a retried create that had gone through */
	if (rc || !won) {
		etcd_lease_revoke(arb.e, id);
		return rc ? rc : 0;
	}
	STORE(&arb.lease, id);
	STORE(&arb.held, true);
	arb.term_ns = term;
	arb.renewed_ns = t0;
	ldr_set_until(t0 + term * 3 / 4);
	return 1;
}

/* A client for one request from a control thread (the leader thread's
 * own, arb.e, is that thread's): its answers wait a quarter of the term,
 * as the thread's do.  NULL, with why. */
static struct etcd *client(char *why, size_t n)
{
	return etcd_open(sbd.conf.repl.etcd_endpoints,
			 (int)(sbd.conf.repl.lease_ttl_ms / 4), why, n);
}

int sbd_leader_release(bool keep, char *why, size_t n)
{
	struct etcd *e = client(why, n);
	/* Not under step_mu: we hold role_mu (the leader thread takes
	 * step_mu, then role_mu).  A renewal under way does not set a term
	 * again after this (renewed()). */
	int64_t id = LOAD(&arb.lease), until = LOAD(&repl.lease_until);
	bool held = LOAD(&arb.held);
	int rc = e ? 0 : -EIO;

	STORE(&arb.held, false);
	STORE(&arb.lease, 0);
	ldr_set_until(0);
	if (e && id && (rc = etcd_lease_revoke(e, id)) < 0)
		snprintf(why, n, "etcd does not answer (%s): the leader key "
			 "stays this host's", strerror(-rc));
	etcd_close(e);
	if (rc && keep && held) {
		/* Still ours in etcd, for the term we had: kept. */
		STORE(&arb.lease, id);
		STORE(&arb.held, true);
		ldr_set_until(until);
	}
	return rc;
}

int sbd_leader_check(char *why, size_t n)
{
	struct etcd *e = client(why, n);
	struct etcd_kv kv;
	int rc;

	if (!e)
		return -EIO;
	rc = etcd_get(e, arb.leader_key, &kv);
	etcd_close(e);
	if (rc < 0) {
		snprintf(why, n, "etcd does not answer (%s): the new primary "
			 "could not take the leader key; nothing changed hands",
			 strerror(-rc));
		return rc;
	}
	if (!kv.found || !ldr_is_me(kv.value) ||
	    kv.lease != LOAD(&arb.lease)) {
		snprintf(why, n, "this host does not hold the leader key "
			 "(%.200s)", kv.found ? kv.value : "nobody does");
		return -EAGAIN;
	}
	return 0;
}

int sbd_leader_claim(enum sbd_claim how, uint64_t *floor, char *why,
		     size_t n)
{
	struct etcd *e = client(why, n);
	struct etcd_kv kv, sync;
	uint64_t ep = LOAD(&repl.epoch), next = 0;
	bool force = how == SBD_CLAIM_FORCE;
	int64_t id, t0, term;
	bool won;
	int rc;

	if (!e)
		return -EINVAL;
	pthread_mutex_lock(&arb.step_mu);
	/* One claim at a time: a second would write over the first's saved
	 * record, which its failure puts back. */
	if (LOAD(&arb.claiming) || LOAD(&arb.held)) {
		snprintf(why, n, "a promotion is under way, or this host is "
			 "primary");
		rc = -EBUSY;
		goto out;
	}
	/* Not on a record that a claim which did not go through may have
	 * left (it would say this host may take over). */
	if (arb.stray && (rc = ldr_put_back(e))) {
		snprintf(why, n, "etcd: %s (the sync record may still be that "
			 "of a promotion that did not happen)", strerror(-rc));
		goto out;
	}
	if (LOAD(&repl.rings_lost) && !force) {
		snprintf(why, n, "this host's rings were made again since its "
			 "last run and it has not been caught up: promote "
			 "--force takes the risk");
		rc = -EAGAIN;
		goto out;
	}
	rc = etcd_get(e, arb.sync_key, &sync);
	/* A switchover's peer holds all (its end is the primary's): the
	 * record, which may say "out" from before it caught up, does not
	 * decide; the transaction below still checks it is unchanged. */
	if (!rc && how == SBD_CLAIM_CHECKED) {
		char reason[200];

		if (!ldr_may_take_over(&sync, ep, reason, sizeof(reason))) {
			snprintf(why, n, "this standby is not recorded in sync "
				 "at epoch %" PRIu64 " (%s): promote --force "
				 "takes the risk", ep, reason);
			rc = -EAGAIN;
			goto out;
		}
	}
	t0 = lease_ns();
	if (!rc) {
		next = ldr_next_epoch(&sync, ep);
		rc = ldr_grant(e, &id, &term);
	}
	if (rc) {
		snprintf(why, n, "etcd: %s", strerror(-rc));
		goto out;
	}
	rc = ldr_take_key(e, &sync, id, next, force, &won, &kv);
	if (rc) {
		char what[200];

		ldr_claim_unknown(e, id, t0, term, what, sizeof(what));
		snprintf(why, n, "etcd: %s (%s)", strerror(-rc), what);
	} else if (!won) {
		if (kv.found)
			snprintf(why, n, "the leader key is held by %s, whose "
				 "lease runs: that host is primary", kv.value);
		else
			snprintf(why, n, "the sync record changed meanwhile: "
				 "try again");
		etcd_lease_revoke(e, id);
		rc = kv.found ? -EBUSY : -EAGAIN;
	} else {
		STORE(&arb.lease, id);
		STORE(&arb.held, true);
		STORE(&arb.claiming, true);
		arb.term_ns = term;
		arb.renewed_ns = t0;
		/* ldr_take_key() recorded "out" ("out .../force" if forced:
		 * written as it reads at the first step as primary). */
		arb.sync_state = force ? -1 : 0;
		STORE(&repl.out_recorded, true);
		ldr_set_until(t0 + term * 3 / 4);
		*floor = next - 1;
		sbd_log(SBD_NOTICE, 0, "arbiter: this host holds the leader "
			"key (%s, revision %" PRId64 ") to be primary at epoch %"
			PRIu64, arb.leader_key, kv.create_rev, next);
		if (force)
			sbd_log(SBD_WARN, 0, "arbiter: promoted with --force; "
				"the standby was recorded '%s'%s",
				sync.found ? sync.value : "nothing",
				LOAD(&repl.rings_lost) ? ", and its rings were "
				"made again since its last run" : "");
		/* Its rings are the pair's once the promotion has gone
		 * through (sbd_leader_claimed()): a failed one leaves the
		 * host as lost as it was. */
		arb.rings_pending = LOAD(&repl.rings_lost);
	}
out:
	pthread_mutex_unlock(&arb.step_mu);
	etcd_close(e);
	return rc;
}

void sbd_leader_claimed(bool ok)
{
	/* Not under role_mu (the leader thread takes step_mu, then
	 * role_mu): ldr_unclaim() and the claim's fields are the step's. */
	pthread_mutex_lock(&arb.step_mu);
	if (!ok && LOAD(&arb.held)) {
		char why[64];
		struct etcd *e = client(why, sizeof(why));

		if (e)
			ldr_unclaim(e, LOAD(&arb.lease));
		etcd_close(e);
		STORE(&arb.held, false);
		STORE(&arb.lease, 0);
		ldr_set_until(0);
	}
	if (ok && arb.rings_pending) {
		rp_rings_record();	/* they are the pair's now */
		STORE(&repl.rings_lost, false);
	}
	arb.rings_pending = false;
	STORE(&arb.claiming, false);
	pthread_mutex_unlock(&arb.step_mu);
	if (ok)
		ldr_kick();
}

