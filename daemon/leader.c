/* SPDX-License-Identifier: MIT */
/*
 * leader.c - who is primary, decided by etcd (docs/failover.md): one
 * thread per shmbusd with [replication] arbiter = etcd, and a watchdog.
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
 *           key (take_key()), until that primary's first step writes the
 *           record as it reads (record_sync()).
 *
 * A primary renews its lease every third of its term, checks at each
 * renewal that the key is still its own, and may acknowledge until its
 * renewal's send time + the term - a quarter of it (CLOCK_BOOTTIME, which
 * counts a suspended or frozen machine: repl.lease_until, checked before
 * each acknowledgement).  The watchdog fences a primary the moment that
 * time passes, whatever etcd answers or does not.  While etcd does not
 * answer and the standby does, the primary goes on (the failsafe): the
 * standby never promotes itself while it hears a primary.  A primary
 * opens its channels' fences only once it holds the key's term.
 *
 * A standby promotes itself when the leader key is gone, it heard no
 * primary for a whole term (its own start and its last demotion count as
 * heard), nothing acknowledged as received is unapplied here, and the
 * sync record says "in" at its epoch from another host, or "out" at its
 * epoch or a newer one from itself (it was the primary that wrote it, or
 * took the key to become it: it holds all), not forced (a forced claim
 * says nothing of what the host holds, and one that did not go through,
 * or that a restart forgot, must not let it take over alone).  It takes
 * the key in a
 * transaction that also checks the sync record has not changed since it
 * read it and records "out" at the epoch it promotes at (one past its own
 * and the record's: take_key()), so that the record names that epoch
 * before the host is primary at it.  A primary takes the key only while
 * the record names no primary since its epoch (may_retake()).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "shmbusd.h"
#include "repl_int.h"
#include "etcd.h"
#include "shmbus/layout.h"

#define STEP_MS		50	/* the thread looks this often */
#define WATCH_MS	5	/* the watchdog looks this often */

static struct {
	struct etcd *e;
	char leader_key[300], sync_key[300];
	char id[24];			/* this host's id (hex) */
	char me[160];			/* "ID LISTEN": the leader key's value */
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
	int64_t renewed_ns;		/* last renewal sent (primary) */
	int sync_state;			/* -1 unknown, 0 out, 1 in: recorded */
	uint32_t provisional_seen;	/* the channels' provisional_n summed
					 * when "out" was last recorded */
	uint64_t recorded_token;	/* the token of the "in" recorded */
	struct etcd_kv claim_before;	/* the sync record take_key() found */
	char claim_value[96];		/* what it wrote there */
	int64_t claim_rev;		/* and the revision it wrote it at */
	bool stray;			/* a claim that did not go through
					 * may have left claim_value in the
					 * record: put_back() */
	int64_t stray_lease;		/* its lease, not known to be gone:
					 * put_back() revokes it first */
	int64_t stray_lease_end;	/* lease_ns() by which it ran out
					 * (the grant's answer + its TTL) */
	int64_t grant_end;		/* the same, for the last grant() */
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
} L = { .mu = PTHREAD_MUTEX_INITIALIZER,
	.step_mu = PTHREAD_MUTEX_INITIALIZER,
	.kick_mu = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t kick_once = PTHREAD_ONCE_INIT;

/* kick_cv on CLOCK_MONOTONIC, made before its first use, whichever
 * thread that is (a switchover's handshake may come before the leader
 * thread starts). */
static void kick_init(void)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&L.kick_cv, &ca);
	pthread_condattr_destroy(&ca);
}

/* The leader thread's next step, now rather than at its next look: a
 * manual promotion took the key, and the channels open once a step sees
 * the term run (a switchover waited up to a whole STEP_MS for it). */
static void kick(void)
{
	pthread_once(&kick_once, kick_init);
	pthread_mutex_lock(&L.kick_mu);
	L.kicked = true;
	pthread_cond_signal(&L.kick_cv);
	pthread_mutex_unlock(&L.kick_mu);
}

/* Waits STEP_MS, or for a kick, or for the stop. */
static void step_wait(void)
{
	struct timespec ts;

	pthread_once(&kick_once, kick_init);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_nsec += STEP_MS * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&L.kick_mu);
	while (!L.kicked && !LOAD(&L.stop))
		if (pthread_cond_timedwait(&L.kick_cv, &L.kick_mu, &ts))
			break;
	L.kicked = false;
	pthread_mutex_unlock(&L.kick_mu);
}

static void set_until(int64_t t)
{
	STORE(&repl.lease_until, t);
}

/* A renewal's new term, unless the key was given up meanwhile
 * (sbd_leader_release() from another thread clears held, then the
 * term): the term moves only from a value it still has. */
static void renewed(int64_t t)
{
	int64_t cur = LOAD(&repl.lease_until);

	/* Again if the watchdog's failsafe moved it meanwhile. */
	while (cur && LOAD(&L.held) &&
	       !__atomic_compare_exchange_n(&repl.lease_until, &cur, t, false,
					    __ATOMIC_ACQ_REL,
					    __ATOMIC_ACQUIRE))
		;
}

/* Logs a condition the leader thread finds at every step only the first
 * time (*said), until whoever clears *said sees it end. */
static void say_once(bool *said, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say_once(bool *said, int level, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (*said)
		return;
	*said = true;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	sbd_log(level, 0, "%s", line);
}

/* A key's value names this host. */
static bool is_me(const char *value)
{
	size_t n = strlen(L.id);

	return !strncmp(value, L.id, n) &&
	       (value[n] == ' ' || value[n] == 0);
}

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

static struct sync_rec read_sync(const struct etcd_kv *kv)
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
	r.mine = !strcmp(host, L.id);
	return r;
}

/* The failsafe (see above): only while the term still runs, and only up
 * to half a term past the standby's last acknowledgement. */
static void failsafe(int64_t now)
{
	int64_t acked = LOAD(&repl.acked_ns), until = LOAD(&repl.lease_until);

	if (!until || now >= until || !LOAD(&L.held))
		return;	/* it does not hold the key, or its term is over */
	if (acked && now - acked < L.ttl_ns / 2 && acked + L.ttl_ns / 2 > until)
		__atomic_compare_exchange_n(&repl.lease_until, &until,
					    acked + L.ttl_ns / 2, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void etcd_trouble(int rc)
{
	if (!LOAD(&L.etcd_down))
		sbd_log(SBD_WARN, 0, "arbiter: etcd does not answer (%s): "
			"going on only while the standby answers",
			strerror(-rc));
	STORE(&L.etcd_down, true);
}

static void lost(const char *why)
{
	STORE(&L.held, false);
	STORE(&L.lease, 0);
	set_until(0);
	L.opened = false;
	rp_lease_lost(why);
}

/* Whether a standby may take over now, by the sync record (sync) at its
 * epoch e; why says why not. */
static bool may_take_over(const struct etcd_kv *sync, uint64_t e, char *why,
			  size_t n)
{
	struct sync_rec r = read_sync(sync);

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
static bool may_retake(const struct etcd_kv *sync, uint64_t e, char *why,
		       size_t n)
{
	struct sync_rec r = read_sync(sync);

	if (!r.ok || r.epoch < e || (r.epoch == e && r.mine))
		return true;
	snprintf(why, n, "the sync record '%.200s' names a primary since this "
		 "host's epoch %" PRIu64 ": it must not take the leader key",
		 sync->value, e);
	return false;
}

/* The epoch a host that takes the key now becomes primary at: past its
 * own and past the one the sync record names.  Every promotion records
 * its epoch in the transaction that takes the key (take_key()), so this
 * is newer than any epoch a primary has had.  An epoch this host recorded
 * so and never became primary at (its promotion failed, or it stopped
 * first) is its own to take again: no one else was primary at it, and
 * failed promotions do not move the epoch on each time. */
static uint64_t next_epoch(const struct etcd_kv *sync, uint64_t e)
{
	struct sync_rec r = read_sync(sync);

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
static int take_key(struct etcd *e, const struct etcd_kv *sync, int64_t id,
		    uint64_t epoch, bool force, bool *won, struct etcd_kv *kv)
{
	char val[96];

	int rc;

	snprintf(val, sizeof(val), "out %" PRIu64 " %s%s", epoch, L.id,
		 force ? "/force" : "");
	L.claim_before = *sync;
	snprintf(L.claim_value, sizeof(L.claim_value), "%s", val);
	rc = etcd_create_if(e, L.leader_key, L.me, id, L.sync_key,
			    sync->found ? sync->mod_rev : 0, val, won, kv);
	/* Our key under this lease: a copy of the transaction that went
	 * through before this one (campaign() too). */
	if (rc == 0 && !*won && kv->found && is_me(kv->value) &&
	    kv->lease == id)
		*won = true;
	if (rc == 0 && *won) {
		/* One transaction: the record's revision is the key's. */
		L.claim_rev = kv->create_rev;
		L.stray = false;	/* written over */
	}
	return rc;
}

/* Gives up the key take_key() took under lease id, this host not having
 * become primary after all (a promotion that failed or was called off):
 * first the sync record is put back as take_key() found it, if nobody
 * wrote it since, so that the primary this host meant to succeed (still
 * alive, and now told no) may take the key again: a record left naming
 * the new epoch would keep it out (may_retake()), and with this host gone
 * or still hearing it, the pair would have no primary.  The record goes
 * back while the key is still held, so no host reads a free key beside
 * the record of a promotion that did not happen.  By the thread that took
 * the key, before any other may take it again (the leader thread, or a
 * manual claim's thread while L.claiming keeps the leader thread off). */
static void unclaim(struct etcd *e, int64_t id)
{
	bool won = false;
	int rc = etcd_restore_if(e, L.sync_key, &L.claim_before, L.claim_rev,
				 &won);

	if (rc) {
		sbd_log(SBD_WARN, -rc, "arbiter: the sync record could not be "
			"put back after a promotion that did not happen: it "
			"may still name this host's new epoch, and then no "
			"other host takes the leader key until this one has "
			"put it back (tried again while it stands by) or "
			"taken the key");
		L.stray = true;
	} else if (!won)
		sbd_log(SBD_NOTICE, 0, "arbiter: the sync record was written "
			"since this host took the key: left as it is");
	else
		sbd_log(SBD_NOTICE, 0, "arbiter: the sync record is '%s' again "
			"(this host did not become primary)",
			L.claim_before.found ? L.claim_before.value : "(none)");
	if (etcd_lease_revoke(e, id)) {
		/* The key stays until the lease runs out: put_back()
		 * revokes it again. */
		L.stray_lease = id;
		L.stray_lease_end = L.grant_end;
		L.stray = true;
	}
}

/* A lease for the leader key: *term_ns, its term, is the shorter of the
 * TTL asked and the one granted; L.grant_end, when the lease runs out if
 * nobody renews it.  etcd grants no lease shorter than its
 * minimum (2 s for etcd 3.4 with its default election timeout), and a
 * primary renewing by the TTL asked would then still leave a failover
 * waiting for etcd's; a gateway that granted less than asked would give
 * the first term more time than the lease has.  Said once. */
static int grant(struct etcd *e, int64_t *id, int64_t *term_ns)
{
	int64_t asked = L.ttl_ns / 1000000000, got;
	int rc = etcd_lease_grant(e, (int)asked, id, &got);

	if (rc)
		return rc;
	/* Gone by then, unless revoked first (a leader change in etcd
	 * renews every lease: a revoke confirmed is what counts). */
	L.grant_end = lease_ns() + got * 1000000000;
	if (got != asked && !L.said_ttl) {
		L.said_ttl = true;
		sbd_log(SBD_WARN, 0, "arbiter: etcd granted a lease of %" PRId64
			" s for the %" PRId64 " s asked (lease_ttl_ms): terms "
			"last %" PRId64 " s, and a standby takes over once the "
			"primary's lease of %" PRId64 " s has run out", got,
			asked, got < asked ? got : asked, got);
	}
	*term_ns = (got < asked ? got : asked) * 1000000000;
	return 0;
}

/* Puts the sync record back as take_key() found it, if it says what
 * take_key() wrote and was written since (L.stray: a claim that did not
 * go through, whose transaction etcd may have applied unseen, or whose
 * record unclaim() could not put back), once the claim's lease is gone
 * (revoked, or its TTL past: L.stray_lease).  Only this host writes its
 * own id there, and a record that still says so names no host's
 * promotion since.  0 once the record is known not to be the claim's and
 * cannot become it (L.stray cleared), or -errno. */
static int put_back(struct etcd *e)
{
	struct etcd_kv sync;
	bool won = false;
	int rc;

	/* The claim's lease first: while it lives, its transaction may
	 * still land (a request held up on its way) after the record was
	 * found unchanged. */
	if (L.stray_lease && lease_ns() < L.stray_lease_end &&
	    (rc = etcd_lease_revoke(e, L.stray_lease)))
		return rc;
	L.stray_lease = 0;
	rc = etcd_get(e, L.sync_key, &sync);

	if (rc == 0 && sync.found && !strcmp(sync.value, L.claim_value) &&
	    (!L.claim_before.found ||
	     sync.mod_rev != L.claim_before.mod_rev))
		rc = etcd_restore_if(e, L.sync_key, &L.claim_before,
				     sync.mod_rev, &won);
	if (rc)
		return rc;
	if (won)
		sbd_log(SBD_NOTICE, 0, "arbiter: the sync record is '%s' again "
			"(this host did not become primary)",
			L.claim_before.found ? L.claim_before.value : "(none)");
	L.stray = false;
	return 0;
}

/* After take_key() under lease id (granted at t0 for term) failed, etcd
 * may have applied the transaction all the same: it answered after the
 * client's timeout, or the connection dropped after the request.  Reads
 * the leader key until etcd answers or the term is over.  If it holds
 * this host under id, the key was taken, and is given up as a claim that
 * did not go through (unclaim(): the record put back first).  Otherwise
 * the lease is revoked, so that the transaction, if still on its way,
 * fails (its put names a lease that no longer exists), and the record is
 * put back if it went through before that.  What etcd does not answer is
 * left to the leader thread (put_back(), before it promotes by itself).
 * why says which. */
static void claim_unknown(struct etcd *e, int64_t id, int64_t t0,
			  int64_t term, char *why, size_t n)
{
	int64_t ttl = (L.grant_end - t0) / 1000000000;
	struct etcd_kv kv;
	int rc;

	while ((rc = etcd_get(e, L.leader_key, &kv)) &&
	       lease_ns() - t0 < term)
		usleep(STEP_MS * 1000);
	if (rc == 0 && kv.found && is_me(kv.value) && kv.lease == id) {
		L.claim_rev = kv.create_rev;
		unclaim(e, id);
		snprintf(why, n, "etcd took the leader key for this host all "
			 "the same: given up again");
		return;
	}
	/* put_back() revokes the lease, and puts the record back only
	 * once it is gone: a transaction still on its way then fails. */
	L.stray_lease = id;
	L.stray_lease_end = L.grant_end;
	L.stray = true;
	if (put_back(e) == 0 && rc == 0) {
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
static int campaign(struct etcd_kv *kv, const struct etcd_kv *sync)
{
	int64_t t0 = lease_ns(), id, term;
	bool won;
	int rc = grant(L.e, &id, &term);

	if (rc == 0)
		rc = etcd_create_if(L.e, L.leader_key, L.me, id, L.sync_key,
				    sync->found ? sync->mod_rev : 0, NULL,
				    &won, kv);
	if (rc == 0 && !won && kv->found && is_me(kv->value) &&
	    kv->lease != id &&
	    (rc = etcd_put_if(L.e, L.leader_key, L.me, id, kv->mod_rev,
			      &won)) == 0 && won)
		rc = etcd_get(L.e, L.leader_key, kv);
	if (rc == 0 && !won && kv->found && is_me(kv->value) &&
	    kv->lease == id)
		won = true;	/* a retried create that had gone through */
	if (rc || !won) {
		etcd_lease_revoke(L.e, id);
		return rc ? rc : 0;
	}
	STORE(&L.lease, id);
	STORE(&L.held, true);
	L.term_ns = term;
	L.renewed_ns = t0;
	set_until(t0 + term * 3 / 4);
	return 1;
}

/* The sync record this primary writes: "in" names the token that every
 * channel's link carries, if any (struct rw_hello). */
static void sync_value(bool all_in, uint64_t token, char *val, size_t n)
{
	if (all_in && token)
		snprintf(val, n, "in %" PRIu64 " %s %" PRIx64,
			 LOAD(&repl.epoch), L.id, token);
	else
		snprintf(val, n, "%s %" PRIu64 " %s", all_in ? "in" : "out",
			 LOAD(&repl.epoch), L.id);
}

/* The sync record, written only while we hold the key. */
static void record_sync(bool all_in, uint64_t token)
{
	char val[128];
	bool won;

	sync_value(all_in, token, val, sizeof(val));
	if (all_in)
		STORE(&repl.out_recorded, false);	/* before: no degrading
							 * while "in" is written */
	if (etcd_put_under(L.e, L.sync_key, val, L.leader_key, LOAD(&L.lease),
			   &won) == 0 && won) {
		L.sync_state = all_in;
		L.recorded_token = all_in ? token : 0;
		if (!all_in)
			STORE(&repl.out_recorded, true);
		sbd_log(SBD_INFO, 0, "arbiter: standby recorded %s sync",
			all_in ? "in" : "out of");
	} else {
		/* A write that failed may still have been made: what the
		 * record says is not known, and is written at the next
		 * step whatever it is. */
		L.sync_state = -1;
	}
}

/* The sync record as etcd has it (sync), against what this primary
 * recorded: one written behind its back (by hand, a restore from a
 * backup) is written again at this step, as it should read; else a
 * standby in sync would be refused the takeover by a record that says
 * otherwise, or one out of sync allowed it. */
static void check_sync(const struct etcd_kv *sync)
{
	struct sync_rec r;
	char val[128];

	if (L.sync_state < 0)
		return;		/* not known: written at this step anyway */
	sync_value(L.sync_state == 1, L.recorded_token, val, sizeof(val));
	if (sync->found && !strcmp(sync->value, val))
		return;
	/* Not this host's "out" at its epoch: no channel degrades on it
	 * until it is written again. */
	r = read_sync(sync);
	if (!r.ok || r.in || !r.mine || r.forced ||
	    r.epoch != LOAD(&repl.epoch))
		STORE(&repl.out_recorded, false);
	if (sync->found && !read_sync(sync).ok)
		sbd_log(SBD_WARN, 0, "arbiter: unreadable sync record '%s': "
			"written again ('%s')", sync->value, val);
	else
		sbd_log(SBD_WARN, 0, "arbiter: the sync record is '%s', not "
			"what this primary recorded: written again ('%s')",
			sync->found ? sync->value : "(none)", val);
	L.sync_state = -1;
}

/* The primary's side of one step. */
static void primary_step(void)
{
	int64_t now = lease_ns(), left, sent;
	uint64_t token = 0;
	uint32_t gen = 0;
	bool all_in = true;
	struct etcd_kv kv, sync;
	char why[320];
	int rc;

	if (!LOAD(&L.held) && LOAD(&repl.rings_lost)) {
		lost("its rings were made again since its last run: it does "
		     "not take the leader key");
		return;
	}
	if (!LOAD(&L.held)) {
		rc = etcd_get(L.e, L.sync_key, &sync);
		if (rc == 0 && !may_retake(&sync, LOAD(&repl.epoch), why,
					   sizeof(why))) {
			sbd_log(SBD_ERR, 0, "arbiter: %s", why);
			lost("another host has been primary since this host's "
			     "epoch");
			return;
		}
		if (rc == 0)
			rc = campaign(&kv, &sync);
		if (rc < 0) {
			/* Never held: its fences stay closed.  Held until
			 * etcd lost the lease (an outage): the failsafe
			 * bounds it, the watchdog fences past it. */
			etcd_trouble(rc);
			failsafe(lease_ns());
			return;
		}
		if (rc == 0 && !kv.found)
			return;	/* the record changed: read it again */
		if (rc == 0) {
			sbd_log(SBD_ERR, 0, "arbiter: the leader key is held by "
				"%s: this host must not be primary", kv.value);
			lost("another host holds the leader key");
			return;
		}
		STORE(&L.etcd_down, false);
		L.sync_state = -1;
		L.opened = false;	/* a new term: opened below */
		STORE(&repl.out_recorded, false);
		sbd_log(SBD_NOTICE, 0, "arbiter: this host holds the leader "
			"key (%s, revision %" PRId64 ")", L.leader_key,
			kv.create_rev);
	}
	if (now - L.renewed_ns >= L.term_ns / 3) {
		sent = lease_ns();
		rc = etcd_lease_keepalive(L.e, LOAD(&L.lease), &left);
		if (rc == 0 && left > 0) {
			/* The term counts from when we asked, at most the
			 * one granted, less a quarter for drift and delays
			 * (compared in seconds, before any product that
			 * could leave int64_t). */
			if (left > L.term_ns / 1000000000)
				left = L.term_ns / 1000000000;
			L.renewed_ns = sent;
			renewed(sent + left * 1000000000 - L.term_ns / 4);
			STORE(&L.etcd_down, false);
			/* The key must still be ours: nobody else may have
			 * taken it (by hand, say).  (A read that fails is
			 * tried again at the next renewal.) */
			if (etcd_get(L.e, L.leader_key, &kv) == 0 &&
			    (!kv.found || !is_me(kv.value) ||
			     kv.lease != LOAD(&L.lease))) {
				lost("the leader key is no longer this host's");
				return;
			}
			/* And the sync record must say what it recorded
			 * (one read a third of a term). */
			if (etcd_get(L.e, L.sync_key, &sync) == 0)
				check_sync(&sync);
		} else if (rc == 0) {
			/* Gone (etcd kept it past an outage, say): take the
			 * key again at the next step; until then the last
			 * term (or the failsafe) bounds what we acknowledge,
			 * and if another host holds it, we stand by. */
			sbd_log(SBD_WARN, 0, "arbiter: the lease is gone; "
				"taking the leader key again");
			STORE(&L.held, false);
			STORE(&L.lease, 0);
			return;
		} else {
			etcd_trouble(rc);
			failsafe(lease_ns());
		}
	}
	if (lease_ns() >= LOAD(&repl.lease_until)) {
		lost("the lease could not be renewed in time");
		return;
	}
	if (!L.opened) {
		rp_open_fences();	/* the term runs: claims may begin */
		L.opened = true;
	}
	/* The sync record: "out" before anything degrades.  A standby in
	 * sync only provisionally (it may have lost its ring: taken to be
	 * in sync at this daemon's start, or a link showed it lost records)
	 * is recorded out until it has caught up, then in afresh, which a
	 * standby whose rings were made again waits for (standby_step()):
	 * each time it became so is recorded out, however short. */
	for (size_t i = 0; i < repl.n; i++) {
		struct sb_repl_view v;
		/* The token first: take_pending() stores it after it made
		 * the channel provisional (release; LOAD acquires). */
		uint64_t t = LOAD(&repl.ch[i].link_token);

		if (i == 0)
			token = t;
		else if (t != token)
			token = 0;
		/* provisional before the flag: judge() sets the flag, then
		 * clears provisional (release; LOAD acquires). */
		gen += LOAD(&repl.ch[i].provisional_n);
		if (LOAD(&repl.ch[i].provisional))
			all_in = false;
		sb_repl_read(repl.ch[i].ch, &v);
		if (v.flags & SHMBUS_REPL_OUT_OF_SYNC)
			all_in = false;
	}
	if (gen != L.provisional_seen)
		all_in = false;
	/* An "in" that names a token stays when a link merely drops: the
	 * standby's next link carries it again, and is provisional. */
	if (L.sync_state != (int)all_in ||
	    (all_in && token && token != L.recorded_token))
		record_sync(all_in, token);
	if (L.sync_state == 0)
		L.provisional_seen = gen;
}

/* The standby's side of one step. */
static void standby_step(void)
{
	struct etcd_kv kv, sync;
	uint64_t e, ep;
	char why[256];
	int64_t id, t0, term;
	bool won;
	int rc;

	L.opened = false;
	if (LOAD(&L.held)) {
		if (LOAD(&L.claiming))
			return;	/* a manual promotion under way */
		/* Demoted while holding it: not ours to keep. */
		etcd_lease_revoke(L.e, LOAD(&L.lease));
		STORE(&L.held, false);
		STORE(&L.lease, 0);
		set_until(0);
	}
	/* No promotion on a record that a claim which did not go through
	 * may have left (it would name this host's new epoch). */
	if (L.stray && put_back(L.e))
		return;
	if (LOAD(&repl.rings_lost)) {
		/* Its rings were made again (a reboot): only a primary that
		 * records it in sync after it caught up makes it a standby
		 * that may take over.  Its links carry this run's token
		 * (struct rw_hello), and a primary names the token in its
		 * "in" only once every channel's link carries it and has
		 * caught up (primary_step()): no "in" written before, or
		 * for another run, names it. */
		if (etcd_get(L.e, L.sync_key, &sync))
			return;
		if (repl.lost_token &&
		    read_sync(&sync).token == repl.lost_token &&
		    may_take_over(&sync, LOAD(&repl.epoch), why,
				  sizeof(why))) {
			rp_rings_record();
			STORE(&repl.rings_lost, false);
			sbd_log(SBD_NOTICE, 0, "arbiter: caught up and recorded "
				"in sync again: automatic promotion allowed");
		}
		if (LOAD(&repl.rings_lost)) {
			say_once(&L.said_lost, SBD_WARN, "arbiter: its rings "
				 "were made again since its last run: no "
				 "automatic promotion until a primary records "
				 "it in sync (shmbusctl promote --force)");
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
	if (lease_ns() - LOAD(&repl.peer_seen_ns) < L.ttl_ns)
		return;		/* a primary is heard: the failsafe */
	if (rp_unapplied()) {
		say_once(&L.said_unapplied, SBD_ERR, "arbiter: records "
			 "acknowledged as received are not applied here: no "
			 "automatic promotion until this host's subscribers "
			 "let go of the ring and they are (promote --force "
			 "loses them)");
		return;
	}
	if (etcd_get(L.e, L.sync_key, &sync))
		return;
	e = LOAD(&repl.epoch);
	if (!may_take_over(&sync, e, why, sizeof(why))) {
		say_once(&L.said_out, SBD_WARN, "arbiter: the leader key is "
			 "gone, and this standby is not recorded in sync at "
			 "epoch %" PRIu64 " (%s): no automatic promotion "
			 "(shmbusctl promote --force)", e, why);
		return;
	}
	t0 = lease_ns();
	ep = next_epoch(&sync, e);
	if (grant(L.e, &id, &term))
		return;
	/* The key, only if the sync record is still the one we read. */
	rc = take_key(L.e, &sync, id, ep, false, &won, &kv);
	if (rc) {
		claim_unknown(L.e, id, t0, term, why, sizeof(why));
		sbd_log(SBD_WARN, 0, "arbiter: taking the leader key failed "
			"(%s): %s", strerror(-rc), why);
		return;
	}
	if (!won) {
		etcd_lease_revoke(L.e, id);
		return;
	}
	/* Heard a primary meanwhile (the link came back): give it up. */
	if (lease_ns() - LOAD(&repl.peer_seen_ns) < L.ttl_ns) {
		unclaim(L.e, id);
		return;
	}
	STORE(&L.lease, id);
	STORE(&L.held, true);
	L.term_ns = term;
	L.renewed_ns = t0;
	set_until(t0 + term * 3 / 4);
	if (rp_auto_promote(ep - 1, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "arbiter: automatic promotion failed: %s",
			why);
		unclaim(L.e, id);
		STORE(&L.held, false);
		STORE(&L.lease, 0);
		set_until(0);
		return;
	}
	L.said_out = false;
	L.sync_state = 0;	/* take_key() recorded "out" */
	STORE(&repl.out_recorded, true);
	rp_open_fences();	/* its term runs from before the grant */
	L.opened = true;
	sbd_log(SBD_NOTICE, 0, "arbiter: the primary's lease expired; this "
		"host took the leader key and is primary at epoch %" PRIu64
		" (%s)", ep, why);
}

static void *leader_main(void *arg)
{
	(void)arg;
	sbd_thread_setup("sb-leader", false);
	while (!LOAD(&L.stop)) {
		int64_t t0 = now_ns();

		pthread_mutex_lock(&L.step_mu);
		STORE(&L.step_ns, lease_ns());
		if (LOAD(&repl.role) == SBD_ROLE_PRIMARY)
			primary_step();
		else
			standby_step();
		STORE(&L.step_ns, 0);
		pthread_mutex_unlock(&L.step_mu);
		if (now_ns() - t0 > 100000000)
			sbd_log(SBD_DEBUG, 0, "arbiter: a step took %" PRId64
				" ms", (now_ns() - t0) / 1000000);
		step_wait();
	}
	return NULL;
}

/* Fences a primary the moment its term is over, whatever the leader
 * thread is waiting for (an etcd that does not answer). */
static void *watch_main(void *arg)
{
	(void)arg;
	sbd_thread_setup("sb-watchdog", false);
	while (!LOAD(&L.stop)) {
		struct timespec ts = { 0, WATCH_MS * 1000000L };
		int64_t until;

		/* The failsafe here too: the leader thread may be waiting
		 * on an etcd that does not answer yet (a member that hangs,
		 * a cluster electing a leader).  Without an answer, etcd has
		 * not said the key is lost; the standby, which hears us,
		 * does not promote itself meanwhile. */
		int64_t step = LOAD(&L.step_ns);

		if ((LOAD(&L.etcd_down) ||
		     (step && lease_ns() - step > L.ttl_ns / 8)) &&
		    LOAD(&repl.role) == SBD_ROLE_PRIMARY)
			failsafe(lease_ns());
		until = LOAD(&repl.lease_until);
		if (LOAD(&repl.role) == SBD_ROLE_PRIMARY && until &&
		    lease_ns() >= until)
			rp_lease_lost("its term ran out before the lease was "
				      "renewed");
		nanosleep(&ts, NULL);
	}
	return NULL;
}

/* state_dir/host-id: this host's random id, made once: written whole to
 * a temporary file, synced, then renamed, so that a crash leaves either
 * no file or the whole id. */
static int host_id(char *out, size_t n)
{
	char path[PATH_MAX + 16], tmp[PATH_MAX + 32], buf[32] = "";
	uint64_t id;
	FILE *f;
	int fd;

	snprintf(path, sizeof(path), "%s/host-id", sbd.conf.repl.state_dir);
	f = fopen(path, "r");
	if (f) {
		size_t k = fread(buf, 1, sizeof(buf) - 1, f);
		/* Exactly as written below: 16 lower-case hex digits. */
		bool ok = k == 17 && sb_hex_digits(buf, 16, &id) == 16 &&
			  buf[16] == '\n';

		fclose(f);
		if (ok && id) {
			snprintf(out, n, "%016" PRIx64, id);
			return 0;
		}
		/* Empty, or written by an older daemon that a crash
		 * stopped before its sync: never handed out. */
		if (!memchr(buf, '\n', k) && k < 17) {
			sbd_log(SBD_WARN, 0, "arbiter: %s holds %zu bytes "
				"and no newline (a write a crash cut short): "
				"a new id is made", path, k);
		} else {
			/* A new id would make this host a stranger to the
			 * arbiter's records of it: the operator decides. */
			sbd_log(SBD_ERR, 0, "arbiter: %s is damaged (not 16 "
				"hex digits and a newline): remove it to give "
				"this host a new id (the arbiter's records then "
				"name another host: it waits a term for the "
				"leader key and is not in sync until caught up)",
				path);
			errno = EBADMSG;
			return -EBADMSG;
		}
	}
	if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id) || !id)
		return -EIO;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%016" PRIx64 "\n", id);
	if (fflush(f) || fsync(fileno(f))) {
		fclose(f);
		unlink(tmp);
		return -EIO;
	}
	fclose(f);
	if (rename(tmp, path) < 0) {
		unlink(tmp);
		return -errno;
	}
	/* The rename itself, before the id is used anywhere. */
	fd = open(sbd.conf.repl.state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0) {
		if (fd >= 0)
			close(fd);
		return -EIO;
	}
	close(fd);
	snprintf(out, n, "%016" PRIx64, id);
	return 0;
}

int sbd_leader_open(void)
{
	const struct sbd_repl_conf *c = &sbd.conf.repl;
	char why[256];

	if (host_id(L.id, sizeof(L.id))) {
		sbd_log(SBD_ERR, errno, "arbiter: %s/host-id", c->state_dir);
		return -1;
	}
	L.e = etcd_open(c->etcd_endpoints, (int)(c->lease_ttl_ms / 4), why,
			sizeof(why));
	if (!L.e) {
		sbd_log(SBD_ERR, 0, "arbiter: %s", why);
		return -1;
	}
	snprintf(L.leader_key, sizeof(L.leader_key), "%s/leader",
		 c->arbiter_prefix);
	snprintf(L.sync_key, sizeof(L.sync_key), "%s/sync", c->arbiter_prefix);
	snprintf(L.me, sizeof(L.me), "%s %.127s", L.id, c->listen);
	L.ttl_ns = (int64_t)(c->lease_ttl_ms / 1000 ? c->lease_ttl_ms / 1000
						    : 1) * 1000000000;
	L.term_ns = L.ttl_ns;
	L.sync_state = -1;
	return 0;
}

int sbd_leader_start(void)
{
	const struct sbd_repl_conf *c = &sbd.conf.repl;

	/* A standby that just started has heard nobody yet: it waits a
	 * whole term as if it had just heard a primary, so that a primary
	 * restarting beside it takes its key back first. */
	STORE(&repl.peer_seen_ns, lease_ns());
	STORE(&L.stop, false);
	if (pthread_create(&L.th, NULL, leader_main, NULL)) {
		etcd_close(L.e);
		L.e = NULL;
		return -1;
	}
	if (pthread_create(&L.watch, NULL, watch_main, NULL)) {
		STORE(&L.stop, true);
		pthread_join(L.th, NULL);
		etcd_close(L.e);
		L.e = NULL;
		return -1;
	}
	L.on = true;
	sbd_log(SBD_NOTICE, 0, "arbiter: etcd at %s, key %s, lease %" PRId64
		" s, host id %s", c->etcd_endpoints, L.leader_key,
		L.ttl_ns / 1000000000, L.id);
	return 0;
}

void sbd_leader_stop(void)
{
	if (!L.on)
		return;
	STORE(&L.stop, true);
	kick();
	pthread_join(L.th, NULL);
	pthread_join(L.watch, NULL);
	/* A clean stop gives the key up at once (the standby need not wait
	 * for the lease to run out), its channels closed first: nothing is
	 * written here after. */
	if (LOAD(&L.held)) {
		rp_close_fences();
		etcd_lease_revoke(L.e, LOAD(&L.lease));
	}
	pthread_mutex_lock(&L.step_mu);
	if (L.stray && put_back(L.e))
		sbd_log(SBD_WARN, 0, "arbiter: the sync record may still say "
			"'%s', of a promotion that did not happen: then no "
			"other host takes the leader key until this one is "
			"back", L.claim_value);
	pthread_mutex_unlock(&L.step_mu);
	etcd_close(L.e);
	L.e = NULL;
	L.on = false;
}

int sbd_leader_release(bool keep, char *why, size_t n)
{
	struct etcd *e = etcd_open(sbd.conf.repl.etcd_endpoints,
				   (int)(sbd.conf.repl.lease_ttl_ms / 4), why,
				   n);
	/* Not under step_mu: we hold role_mu (the leader thread takes
	 * step_mu, then role_mu).  A renewal under way does not set a term
	 * again after this (renewed()). */
	int64_t id = LOAD(&L.lease), until = LOAD(&repl.lease_until);
	bool held = LOAD(&L.held);
	int rc = e ? 0 : -EIO;

	STORE(&L.held, false);
	STORE(&L.lease, 0);
	set_until(0);
	if (e && id && (rc = etcd_lease_revoke(e, id)) < 0)
		snprintf(why, n, "etcd does not answer (%s): the leader key "
			 "stays this host's", strerror(-rc));
	etcd_close(e);
	if (rc && keep && held) {
		/* Still ours in etcd, for the term we had: kept. */
		STORE(&L.lease, id);
		STORE(&L.held, true);
		set_until(until);
	}
	return rc;
}

int sbd_leader_check(char *why, size_t n)
{
	struct etcd *e = etcd_open(sbd.conf.repl.etcd_endpoints,
				   (int)(sbd.conf.repl.lease_ttl_ms / 4), why,
				   n);
	struct etcd_kv kv;
	int rc;

	if (!e)
		return -EIO;
	rc = etcd_get(e, L.leader_key, &kv);
	etcd_close(e);
	if (rc < 0) {
		snprintf(why, n, "etcd does not answer (%s): the new primary "
			 "could not take the leader key; nothing changed hands",
			 strerror(-rc));
		return rc;
	}
	if (!kv.found || !is_me(kv.value) || kv.lease != LOAD(&L.lease)) {
		snprintf(why, n, "this host does not hold the leader key "
			 "(%.200s)", kv.found ? kv.value : "nobody does");
		return -EAGAIN;
	}
	return 0;
}

int sbd_leader_claim(enum sbd_claim how, uint64_t *floor, char *why,
		     size_t n)
{
	struct etcd *e = etcd_open(sbd.conf.repl.etcd_endpoints,
				   (int)(sbd.conf.repl.lease_ttl_ms / 4), why, n);
	struct etcd_kv kv, sync;
	uint64_t ep = LOAD(&repl.epoch), next = 0;
	bool force = how == SBD_CLAIM_FORCE;
	int64_t id, t0, term;
	bool won;
	int rc;

	if (!e)
		return -EINVAL;
	pthread_mutex_lock(&L.step_mu);
	/* One claim at a time: a second would write over the first's saved
	 * record, which its failure puts back. */
	if (LOAD(&L.claiming) || LOAD(&L.held)) {
		snprintf(why, n, "a promotion is under way, or this host is "
			 "primary");
		rc = -EBUSY;
		goto out;
	}
	/* Not on a record that a claim which did not go through may have
	 * left (it would say this host may take over). */
	if (L.stray && (rc = put_back(e))) {
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
	rc = etcd_get(e, L.sync_key, &sync);
	/* A switchover's peer holds all (its end is the primary's): the
	 * record, which may say "out" from before it caught up, does not
	 * decide; the transaction below still checks it is unchanged. */
	if (!rc && how == SBD_CLAIM_CHECKED) {
		char reason[200];

		if (!may_take_over(&sync, ep, reason, sizeof(reason))) {
			snprintf(why, n, "this standby is not recorded in sync "
				 "at epoch %" PRIu64 " (%s): promote --force "
				 "takes the risk", ep, reason);
			rc = -EAGAIN;
			goto out;
		}
	}
	t0 = lease_ns();
	if (!rc) {
		next = next_epoch(&sync, ep);
		rc = grant(e, &id, &term);
	}
	if (rc) {
		snprintf(why, n, "etcd: %s", strerror(-rc));
		goto out;
	}
	rc = take_key(e, &sync, id, next, force, &won, &kv);
	if (rc) {
		char what[200];

		claim_unknown(e, id, t0, term, what, sizeof(what));
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
		STORE(&L.lease, id);
		STORE(&L.held, true);
		STORE(&L.claiming, true);
		L.term_ns = term;
		L.renewed_ns = t0;
		/* take_key() recorded "out" ("out .../force" if forced:
		 * written as it reads at the first step as primary). */
		L.sync_state = force ? -1 : 0;
		STORE(&repl.out_recorded, true);
		set_until(t0 + term * 3 / 4);
		*floor = next - 1;
		sbd_log(SBD_NOTICE, 0, "arbiter: this host holds the leader "
			"key (%s, revision %" PRId64 ") to be primary at epoch %"
			PRIu64, L.leader_key, kv.create_rev, next);
		if (force)
			sbd_log(SBD_WARN, 0, "arbiter: promoted with --force; "
				"the standby was recorded '%s'%s",
				sync.found ? sync.value : "nothing",
				LOAD(&repl.rings_lost) ? ", and its rings were "
				"made again since its last run" : "");
		/* Its rings are the pair's once the promotion has gone
		 * through (sbd_leader_claimed()): a failed one leaves the
		 * host as lost as it was. */
		L.rings_pending = LOAD(&repl.rings_lost);
	}
out:
	pthread_mutex_unlock(&L.step_mu);
	etcd_close(e);
	return rc;
}

void sbd_leader_claimed(bool ok)
{
	/* Not under role_mu (the leader thread takes step_mu, then
	 * role_mu): unclaim() and the claim's fields are the step's. */
	pthread_mutex_lock(&L.step_mu);
	if (!ok && LOAD(&L.held)) {
		char why[64];
		struct etcd *e = etcd_open(sbd.conf.repl.etcd_endpoints,
					   (int)(sbd.conf.repl.lease_ttl_ms / 4),
					   why, sizeof(why));

		if (e)
			unclaim(e, LOAD(&L.lease));
		etcd_close(e);
		STORE(&L.held, false);
		STORE(&L.lease, 0);
		set_until(0);
	}
	if (ok && L.rings_pending) {
		rp_rings_record();	/* they are the pair's now */
		STORE(&repl.rings_lost, false);
	}
	L.rings_pending = false;
	STORE(&L.claiming, false);
	pthread_mutex_unlock(&L.step_mu);
	if (ok)
		kick();
}

void sbd_leader_kick(void)
{
	kick();
}

size_t sbd_leader_status(char *out, size_t n)
{
	int64_t left = LOAD(&repl.lease_until) - lease_ns();
	struct etcd_kv kv;
	int k;

	pthread_mutex_lock(&L.mu);
	kv = L.last;
	pthread_mutex_unlock(&L.mu);
	if (LOAD(&L.held) && LOAD(&L.etcd_down))
		k = snprintf(out, n, "\n  arbiter etcd: unreachable; this host "
			     "(%s) held the leader key at its last renewal (it "
			     "may have expired since), may acknowledge for %"
			     PRId64 " ms (the failsafe)", L.id,
			     left > 0 ? left / 1000000 : 0);
	else if (LOAD(&L.held))
		k = snprintf(out, n, "\n  arbiter etcd: this host (%s) holds the "
			     "leader key, may acknowledge for %" PRId64 " ms",
			     L.id, left > 0 ? left / 1000000 : 0);
	else
		k = snprintf(out, n, "\n  arbiter etcd: this host %s, leader "
			     "%.120s", L.id, kv.found ? kv.value : "(none seen)");
	return k < 0 ? 0 : (size_t)k;
}
