/* SPDX-License-Identifier: MIT */
/*
 * leader.c - who is primary, decided by etcd (docs/failover.md): one
 * thread per shmbusd with [replication] arbiter = etcd, and a watchdog.
 *
 * The leader key and the sync record in etcd, and the transactions that
 * take and give up the key: leader_key.c.
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
 * the key in a transaction that also checks the sync record has not
 * changed since it read it and records "out" at the epoch it promotes at
 * (one past its own and the record's: ldr_take_key()), so that the record
 * names that epoch before the host is primary at it.  A primary takes the key only while
 * the record names no primary since its epoch (ldr_may_retake()).
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
#include "leader_int.h"
#include "shmbus/layout.h"

#define WATCH_MS	5	/* the watchdog looks this often */

struct arbiter arb = { .mu = PTHREAD_MUTEX_INITIALIZER,
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
	pthread_cond_init(&arb.kick_cv, &ca);
	pthread_condattr_destroy(&ca);
}

/* The leader thread's next step, now rather than at its next look: a
 * manual promotion took the key, and the channels open once a step sees
 * the term run (a switchover waited up to a whole STEP_MS for it). */
void ldr_kick(void)
{
	pthread_once(&kick_once, kick_init);
	pthread_mutex_lock(&arb.kick_mu);
	arb.kicked = true;
	pthread_cond_signal(&arb.kick_cv);
	pthread_mutex_unlock(&arb.kick_mu);
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
	pthread_mutex_lock(&arb.kick_mu);
	while (!arb.kicked && !LOAD(&arb.stop))
		if (pthread_cond_timedwait(&arb.kick_cv, &arb.kick_mu, &ts))
			break;
	arb.kicked = false;
	pthread_mutex_unlock(&arb.kick_mu);
}

void ldr_set_until(int64_t t)
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
	while (cur && LOAD(&arb.held) &&
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

/* The failsafe (see above): only while the term still runs, and only up
 * to half a term past the standby's last acknowledgement. */
static void failsafe(int64_t now)
{
	int64_t acked = LOAD(&repl.acked_ns), until = LOAD(&repl.lease_until);

	if (!until || now >= until || !LOAD(&arb.held))
		return;	/* it does not hold the key, or its term is over */
	if (acked && now - acked < arb.ttl_ns / 2 &&
	    acked + arb.ttl_ns / 2 > until)
		__atomic_compare_exchange_n(&repl.lease_until, &until,
					    acked + arb.ttl_ns / 2, false,
					    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void etcd_trouble(int rc)
{
	if (!LOAD(&arb.etcd_down))
		sbd_log(SBD_WARN, 0, "arbiter: etcd does not answer (%s): "
			"going on only while the standby answers",
			strerror(-rc));
	STORE(&arb.etcd_down, true);
}

/* How a refusal of the key is logged: an error for a host that served
 * as primary in this run, a warning for one that starts (or comes back)
 * to find another host primary, which is right to stand by. */
static int lost_level(void)
{
	return arb.served ? SBD_ERR : SBD_WARN;
}

static void lost(const char *why)
{
	STORE(&arb.held, false);
	STORE(&arb.lease, 0);
	ldr_set_until(0);
	arb.opened = false;
	rp_lease_lost(why, lost_level());
}

/* The sync record this primary writes: "in" names the token that every
 * channel's link carries, if any (struct rw_hello). */
static void sync_value(bool all_in, uint64_t token, char *val, size_t n)
{
	if (all_in && token)
		snprintf(val, n, "in %" PRIu64 " %s %" PRIx64,
			 LOAD(&repl.epoch), arb.id, token);
	else
		snprintf(val, n, "%s %" PRIu64 " %s", all_in ? "in" : "out",
			 LOAD(&repl.epoch), arb.id);
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
	if (etcd_put_under(arb.e, arb.sync_key, val, arb.leader_key,
			   LOAD(&arb.lease), &won) == 0 && won) {
		arb.sync_state = all_in;
		arb.recorded_token = all_in ? token : 0;
		if (!all_in)
			STORE(&repl.out_recorded, true);
		sbd_log(SBD_INFO, 0, "arbiter: standby recorded %s sync",
			all_in ? "in" : "out of");
	} else {
		/* A write that failed may still have been made: what the
		 * record says is not known, and is written at the next
		 * step whatever it is. */
		arb.sync_state = -1;
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

	if (arb.sync_state < 0)
		return;		/* not known: written at this step anyway */
	sync_value(arb.sync_state == 1, arb.recorded_token, val, sizeof(val));
	if (sync->found && !strcmp(sync->value, val))
		return;
	/* Not this host's "out" at its epoch: no channel degrades on it
	 * until it is written again. */
	r = ldr_read_sync(sync);
	if (!r.ok || r.in || !r.mine || r.forced ||
	    r.epoch != LOAD(&repl.epoch))
		STORE(&repl.out_recorded, false);
	if (sync->found && !ldr_read_sync(sync).ok)
		sbd_log(SBD_WARN, 0, "arbiter: unreadable sync record '%s': "
			"written again ('%s')", sync->value, val);
	else
		sbd_log(SBD_WARN, 0, "arbiter: the sync record is '%s', not "
			"what this primary recorded: written again ('%s')",
			sync->found ? sync->value : "(none)", val);
	arb.sync_state = -1;
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

	if (!LOAD(&arb.held) && LOAD(&repl.rings_lost)) {
		lost("its rings were made again since its last run: it does "
		     "not take the leader key");
		return;
	}
	if (!LOAD(&arb.held)) {
		rc = etcd_get(arb.e, arb.sync_key, &sync);
		if (rc == 0 && !ldr_may_retake(&sync, LOAD(&repl.epoch), why,
					   sizeof(why))) {
			sbd_log(lost_level(), 0, "arbiter: %s", why);
			lost("another host has been primary since this host's "
			     "epoch");
			return;
		}
		if (rc == 0)
			rc = ldr_campaign(&kv, &sync);
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
			sbd_log(lost_level(), 0, "arbiter: the leader key is "
				"held by %s: this host must not be primary",
				kv.value);
			lost("another host holds the leader key");
			return;
		}
		STORE(&arb.etcd_down, false);
		arb.sync_state = -1;
		arb.opened = false;	/* a new term: opened below */
		STORE(&repl.out_recorded, false);
		sbd_log(SBD_NOTICE, 0, "arbiter: this host holds the leader "
			"key (%s, revision %" PRId64 ")", arb.leader_key,
			kv.create_rev);
	}
	if (now - arb.renewed_ns >= arb.term_ns / 3) {
		sent = lease_ns();
		rc = etcd_lease_keepalive(arb.e, LOAD(&arb.lease), &left);
		if (rc == 0 && left > 0) {
			/* The term counts from when we asked, at most the
			 * one granted, less a quarter for drift and delays
			 * (compared in seconds, before any product that
			 * could leave int64_t). */
			if (left > arb.term_ns / 1000000000)
				left = arb.term_ns / 1000000000;
			arb.renewed_ns = sent;
			renewed(sent + left * 1000000000 - arb.term_ns / 4);
			STORE(&arb.etcd_down, false);
			/* The key must still be ours: nobody else may have
			 * taken it (by hand, say).  (A read that fails is
			 * tried again at the next renewal.) */
			if (etcd_get(arb.e, arb.leader_key, &kv) == 0 &&
			    (!kv.found || !ldr_is_me(kv.value) ||
			     kv.lease != LOAD(&arb.lease))) {
				lost("the leader key is no longer this host's");
				return;
			}
			/* And the sync record must say what it recorded
			 * (one read a third of a term). */
			if (etcd_get(arb.e, arb.sync_key, &sync) == 0)
				check_sync(&sync);
		} else if (rc == 0) {
			/* Gone (etcd kept it past an outage, say): take the
			 * key again at the next step; until then the last
			 * term (or the failsafe) bounds what we acknowledge,
			 * and if another host holds it, we stand by. */
			sbd_log(SBD_WARN, 0, "arbiter: the lease is gone; "
				"taking the leader key again");
			STORE(&arb.held, false);
			STORE(&arb.lease, 0);
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
	if (!arb.opened) {
		rp_open_fences();	/* the term runs: claims may begin */
		arb.opened = true;
		arb.served = true;
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
		/* A standby's flags (this host stood by meanwhile: the
		 * watchdog, while this step waited in rp_open_fences())
		 * never say out of sync: they say nothing of a standby. */
		if (v.flags & (SHMBUS_REPL_OUT_OF_SYNC | SHMBUS_REPL_STANDBY))
			all_in = false;
	}
	if (gen != arb.provisional_seen)
		all_in = false;
	/* Demoted since the step began: the record is no longer ours to
	 * write (standby_step() gives the key up).  No edge of its own: the
	 * STANDBY bit above, set in the same word that the linker clears
	 * OUT_OF_SYNC in, is what keeps "in" from a standby's flags; this
	 * spares the write. */
	if (LOAD(&repl.role) != SBD_ROLE_PRIMARY)
		return;
	/* An "in" that names a token stays when a link merely drops: the
	 * standby's next link carries it again, and is provisional. */
	if (arb.sync_state != (int)all_in ||
	    (all_in && token && token != arb.recorded_token))
		record_sync(all_in, token);
	if (arb.sync_state == 0)
		arb.provisional_seen = gen;
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

	arb.opened = false;
	if (LOAD(&arb.held)) {
		if (LOAD(&arb.claiming))
			return;	/* a manual promotion under way */
		/* Demoted while holding it: not ours to keep. */
		etcd_lease_revoke(arb.e, LOAD(&arb.lease));
		STORE(&arb.held, false);
		STORE(&arb.lease, 0);
		ldr_set_until(0);
	}
	/* No promotion on a record that a claim which did not go through
	 * may have left (it would name this host's new epoch). */
	if (arb.stray && ldr_put_back(arb.e))
		return;
	if (LOAD(&repl.rings_lost)) {
		/* Its rings were made again (a reboot): only a primary that
		 * records it in sync after it caught up makes it a standby
		 * that may take over.  Its links carry this run's token
		 * (struct rw_hello), and a primary names the token in its
		 * "in" only once every channel's link carries it and has
		 * caught up (primary_step()): no "in" written before, or
		 * for another run, names it. */
		if (etcd_get(arb.e, arb.sync_key, &sync))
			return;
		if (repl.lost_token &&
		    ldr_read_sync(&sync).token == repl.lost_token &&
		    ldr_may_take_over(&sync, LOAD(&repl.epoch), why,
				  sizeof(why))) {
			rp_rings_record();
			STORE(&repl.rings_lost, false);
			sbd_log(SBD_NOTICE, 0, "arbiter: caught up and recorded "
				"in sync again: automatic promotion allowed");
		}
		if (LOAD(&repl.rings_lost)) {
			say_once(&arb.said_lost, SBD_WARN, "arbiter: its rings "
				 "were made again since its last run: no "
				 "automatic promotion until a primary records "
				 "it in sync (shmbusctl promote --force)");
			return;
		}
	}
	if (etcd_get(arb.e, arb.leader_key, &kv))
		return;
	pthread_mutex_lock(&arb.mu);
	arb.last = kv;
	pthread_mutex_unlock(&arb.mu);
	if (kv.found)
		return;
	if (lease_ns() - LOAD(&repl.peer_seen_ns) < arb.ttl_ns)
		return;		/* a primary is heard: the failsafe */
	if (rp_unapplied()) {
		say_once(&arb.said_unapplied, SBD_ERR, "arbiter: records "
			 "acknowledged as received are not applied here: no "
			 "automatic promotion until this host's subscribers "
			 "let go of the ring and they are (promote --force "
			 "loses them)");
		return;
	}
	if (etcd_get(arb.e, arb.sync_key, &sync))
		return;
	e = LOAD(&repl.epoch);
	if (!ldr_may_take_over(&sync, e, why, sizeof(why))) {
		say_once(&arb.said_out, SBD_WARN, "arbiter: the leader key is "
			 "gone, and this standby is not recorded in sync at "
			 "epoch %" PRIu64 " (%s): no automatic promotion "
			 "(shmbusctl promote --force)", e, why);
		return;
	}
	t0 = lease_ns();
	ep = ldr_next_epoch(&sync, e);
	if (ldr_grant(arb.e, &id, &term))
		return;
	/* The key, only if the sync record is still the one we read. */
	rc = ldr_take_key(arb.e, &sync, id, ep, false, &won, &kv);
	if (rc) {
		ldr_claim_unknown(arb.e, id, t0, term, why, sizeof(why));
		sbd_log(SBD_WARN, 0, "arbiter: taking the leader key failed "
			"(%s): %s", strerror(-rc), why);
		return;
	}
	if (!won) {
		etcd_lease_revoke(arb.e, id);
		return;
	}
	/* Heard a primary meanwhile (the link came back): give it up. */
	if (lease_ns() - LOAD(&repl.peer_seen_ns) < arb.ttl_ns) {
		ldr_unclaim(arb.e, id);
		return;
	}
	STORE(&arb.lease, id);
	STORE(&arb.held, true);
	arb.term_ns = term;
	arb.renewed_ns = t0;
	ldr_set_until(t0 + term * 3 / 4);
	if (rp_auto_promote(ep - 1, why, sizeof(why))) {
		sbd_log(SBD_ERR, 0, "arbiter: automatic promotion failed: %s",
			why);
		ldr_unclaim(arb.e, id);
		STORE(&arb.held, false);
		STORE(&arb.lease, 0);
		ldr_set_until(0);
		return;
	}
	arb.said_out = false;
	arb.sync_state = 0;	/* ldr_take_key() recorded "out" */
	STORE(&repl.out_recorded, true);
	rp_open_fences();	/* its term runs from before the grant */
	arb.opened = true;
	sbd_log(SBD_NOTICE, 0, "arbiter: the primary's lease expired; this "
		"host took the leader key and is primary at epoch %" PRIu64
		" (%s)", ep, why);
}

static void *leader_main(void *arg)
{
	(void)arg;
	sbd_thread_setup("sb-leader", false);
	while (!LOAD(&arb.stop)) {
		int64_t t0 = now_ns();

		pthread_mutex_lock(&arb.step_mu);
		STORE(&arb.step_ns, lease_ns());
		if (LOAD(&repl.role) == SBD_ROLE_PRIMARY)
			primary_step();
		else
			standby_step();
		STORE(&arb.step_ns, 0);
		pthread_mutex_unlock(&arb.step_mu);
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
	while (!LOAD(&arb.stop)) {
		struct timespec ts = { 0, WATCH_MS * 1000000L };
		int64_t until;

		/* The failsafe here too: the leader thread may be waiting
		 * on an etcd that does not answer yet (a member that hangs,
		 * a cluster electing a leader).  Without an answer, etcd has
		 * not said the key is lost; the standby, which hears us,
		 * does not promote itself meanwhile. */
		int64_t step = LOAD(&arb.step_ns);

		if ((LOAD(&arb.etcd_down) ||
		     (step && lease_ns() - step > arb.ttl_ns / 8)) &&
		    LOAD(&repl.role) == SBD_ROLE_PRIMARY)
			failsafe(lease_ns());
		until = LOAD(&repl.lease_until);
		if (LOAD(&repl.role) == SBD_ROLE_PRIMARY && until &&
		    lease_ns() >= until)
			rp_lease_lost("its term ran out before the lease was "
				      "renewed", SBD_ERR);
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
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (fd >= 0 && !f) {
		/* There, but not read: never a new id over it. */
		close(fd);
		sbd_log(SBD_ERR, ENOMEM, "arbiter: %s", path);
		errno = ENOMEM;
		return -ENOMEM;
	}
	if (!f && fd < 0 && errno != ENOENT) {
		sbd_log(SBD_ERR, errno, "arbiter: %s%s", path, errno == ELOOP ?
			" is a symbolic link, not followed" : "");
		return -errno;
	}
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
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f) {
		int err = errno;

		if (fd >= 0)
			close(fd);
		return -err;
	}
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

	if (host_id(arb.id, sizeof(arb.id))) {
		sbd_log(SBD_ERR, errno, "arbiter: %s/host-id", c->state_dir);
		return -1;
	}
	arb.e = etcd_open(c->etcd_endpoints, (int)(c->lease_ttl_ms / 4), why,
			sizeof(why));
	if (!arb.e) {
		sbd_log(SBD_ERR, 0, "arbiter: %s", why);
		return -1;
	}
	snprintf(arb.leader_key, sizeof(arb.leader_key), "%s/leader",
		 c->arbiter_prefix);
	snprintf(arb.sync_key, sizeof(arb.sync_key), "%s/sync",
		 c->arbiter_prefix);
	snprintf(arb.me, sizeof(arb.me), "%s %.127s", arb.id, c->listen);
	arb.ttl_ns = (int64_t)(c->lease_ttl_ms / 1000 ? c->lease_ttl_ms / 1000
						    : 1) * 1000000000;
	arb.term_ns = arb.ttl_ns;
	arb.sync_state = -1;
	return 0;
}

int sbd_leader_start(void)
{
	const struct sbd_repl_conf *c = &sbd.conf.repl;

	/* A standby that just started has heard nobody yet: it waits a
	 * whole term as if it had just heard a primary, so that a primary
	 * restarting beside it takes its key back first. */
	STORE(&repl.peer_seen_ns, lease_ns());
	STORE(&arb.stop, false);
	if (pthread_create(&arb.th, NULL, leader_main, NULL)) {
		etcd_close(arb.e);
		arb.e = NULL;
		return -1;
	}
	if (pthread_create(&arb.watch, NULL, watch_main, NULL)) {
		STORE(&arb.stop, true);
		pthread_join(arb.th, NULL);
		etcd_close(arb.e);
		arb.e = NULL;
		return -1;
	}
	arb.on = true;
	sbd_log(SBD_NOTICE, 0, "arbiter: etcd at %s, key %s, lease %" PRId64
		" s, host id %s", c->etcd_endpoints, arb.leader_key,
		arb.ttl_ns / 1000000000, arb.id);
	return 0;
}

void sbd_leader_stop(void)
{
	if (!arb.on)
		return;
	STORE(&arb.stop, true);
	ldr_kick();
	pthread_join(arb.th, NULL);
	pthread_join(arb.watch, NULL);
	/* A clean stop gives the key up at once (the standby need not wait
	 * for the lease to run out), its channels closed first: nothing is
	 * written here after. */
	if (LOAD(&arb.held)) {
		rp_close_fences();
		etcd_lease_revoke(arb.e, LOAD(&arb.lease));
	}
	pthread_mutex_lock(&arb.step_mu);
	if (arb.stray && ldr_put_back(arb.e))
		sbd_log(SBD_WARN, 0, "arbiter: the sync record may still say "
			"'%s', of a promotion that did not happen: then no "
			"other host takes the leader key until this one is "
			"back", arb.claim_value);
	pthread_mutex_unlock(&arb.step_mu);
	etcd_close(arb.e);
	arb.e = NULL;
	arb.on = false;
}

void sbd_leader_kick(void)
{
	ldr_kick();
}

size_t sbd_leader_status(char *out, size_t n)
{
	int64_t left = LOAD(&repl.lease_until) - lease_ns();
	struct etcd_kv kv;
	int k;

	pthread_mutex_lock(&arb.mu);
	kv = arb.last;
	pthread_mutex_unlock(&arb.mu);
	if (LOAD(&arb.held) && LOAD(&arb.etcd_down))
		k = snprintf(out, n, "\n  arbiter etcd: unreachable; this host "
			     "(%s) held the leader key at its last renewal (it "
			     "may have expired since), may acknowledge for %"
			     PRId64 " ms (the failsafe)", arb.id,
			     left > 0 ? left / 1000000 : 0);
	else if (LOAD(&arb.held))
		k = snprintf(out, n, "\n  arbiter etcd: this host (%s) holds the "
			     "leader key, may acknowledge for %" PRId64 " ms",
			     arb.id, left > 0 ? left / 1000000 : 0);
	else
		k = snprintf(out, n, "\n  arbiter etcd: this host %s, leader "
			     "%.120s", arb.id,
			     kv.found ? kv.value : "(none seen)");
	return k < 0 ? 0 : (size_t)k;
}
