/* SPDX-License-Identifier: MIT */
/*
 * test_failover.c - automatic failover with etcd as the arbiter
 * (docs/failover.md), and the failure-scenario suite: two shmbusd in two
 * network namespaces (repl_fixture.h) and a real etcd, which each host
 * reaches through a forwarder of its own (failover_fixture.h), so that a
 * test cuts one host from etcd by cutting its forwarder.
 *
 * A checker in the Jepsen style: a publisher on the primary logs every
 * message shmbus_pub_sync() acknowledged at a synchronous level; after
 * the failure every logged message must be on the surviving primary, in
 * order, exactly once, and no two hosts took writes at once.  Each
 * scenario adds a row to the summary table printed at the end.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "failover_fixture.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"
#include "shmbus/quarantine.h"
#include <stddef.h>

TestSuite(failover, .init = fo_setup, .fini = fo_fini, .timeout = 120);

/* ---------------------------------------------------- the summary table
 *
 * Each scenario adds a row (the tests run in processes of their own; the
 * file is named before they start), printed once all have run: messages
 * acknowledged at a synchronous level, how many of those the survivor
 * lacks or holds twice (each test asserts 0; "-": not checked), the
 * failover time, and how many samples of the split-brain watch found
 * both hosts taking writes at the same epoch (asserted 0). */

static char table_path[64];

ReportHook(PRE_ALL)(struct criterion_test_set *set)
{
	(void)set;
	snprintf(table_path, sizeof(table_path),
		 "/dev/shm/shmbus-test-fo-table-%d", getpid());
	unlink(table_path);
	setenv("SHMBUS_FO_TABLE", table_path, 1);
}

ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	char line[256];
	FILE *f = fopen(table_path, "r");

	(void)stats;
	if (!f)
		return;
	printf("\n%-44s %8s %5s %5s %12s %11s\n", "scenario", "acked", "lost",
	       "dup", "failover ms", "split-brain");
	while (fgets(line, sizeof(line), f))
		fputs(line, stdout);
	fclose(f);
	unlink(table_path);
}

/* checked: the test asserted that the survivor holds every acknowledged
 * message once, in order (else lost and dup are not known: "-"). */
static void row(const char *scenario, uint64_t acked, bool checked,
		int failover_ms)
{
	const char *path = getenv("SHMBUS_FO_TABLE");
	char ms[16] = "-";
	uint64_t samples, both = splitbrain_stop(&samples);
	FILE *f;

	cr_assert_eq(both, 0, "%s: both hosts took writes at the same epoch "
		     "in %lu of %lu samples", scenario, (unsigned long)both,
		     (unsigned long)samples);
	f = path ? fopen(path, "a") : NULL;
	if (!f)
		return;
	if (failover_ms >= 0)
		snprintf(ms, sizeof(ms), "%d", failover_ms);
	fprintf(f, "%-44s %8lu %5s %5s %12s %11lu\n", scenario,
		(unsigned long)acked, checked ? "0" : "-", checked ? "0" : "-",
		ms, (unsigned long)both);
	fclose(f);
}

Test(failover, the_primary_host_dies_and_the_standby_takes_over)
{
	struct sb_repl_view v;
	uint64_t e0, acked;
	pid_t pub;
	int ms;

	log_open();
	pair_setup(FO_CHANS, extra);
	watch_b();
	cr_assert(host_log_wait(&A, "holds the leader key", 5000));
	host_view(&A, "fo", &v);
	e0 = v.epoch;
	pub = th_spawn(sync_publisher, NULL);
	wait_acked(2000, 30000);
	cr_assert(wait_record("in ", 5000), "recorded in sync");
	/* The primary host dies: its daemon and its producer. */
	host_kill(&A, SIGKILL);
	kill(pub, SIGKILL);
	waitpid(pub, NULL, 0);
	acked = atomic_load(&lg->acked);
	ms = wait_for(is_primary, &B, TTL_MS + 3000);
	cr_assert_geq(ms, 0, "the standby did not take over");
	printf("failover after the primary's death: %d ms (lease %d ms)\n",
	       ms, TTL_MS);
	cr_assert_leq(ms, TTL_MS + 1200, "took %d ms", ms);
	host_view(&B, "fo", &v);
	cr_assert_gt(v.epoch, e0, "a new epoch");
	/* busstat on the new primary: its standby (A, dead) has had
	 * nothing of this term, so there is no time to count LAGT from (it
	 * counted from B's link as a standby, at the setup). */
	{
		shmbus_channel *bc = host_map(&B, "fo");
		struct shmbus_repl_info ri;

		cr_assert(bc);
		cr_assert_eq(shmbus_channel_replication(bc, &ri), 0);
		shmbus_channel_close(bc);
		cr_assert_eq(ri.lag_ns, UINT64_MAX, "LAGT %.3f s on the new "
			     "primary for a standby it never heard from",
			     ri.lag_ns / 1e9);
	}
	assert_b_has_acked(acked);
	cr_assert(host_log_wait(&B, "took the leader key", 100));
	row("primary host killed under load", acked, true, ms);
}

Test(failover, a_standby_not_recorded_in_sync_does_not_take_over)
{
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 200, false);
	/* The standby stops (paused): out of sync after sync_timeout_ms,
	 * recorded at etcd before anything degrades. */
	host_pause(&B);
	cr_assert(wait_record("out ", 5000), "recorded out of sync");
	fo_stop(pub);
	host_kill(&A, SIGKILL);
	kill(B.pid, SIGCONT);
	/* The primary's lease runs out; the standby must stay one. */
	cr_assert_eq(wait_for(is_primary, &B, TTL_MS + 2000), -1,
		     "a standby out of sync promoted itself");
	cr_assert(host_log_wait(&B, "not recorded in sync", 100));
	row("standby out of sync, then primary killed", atomic_load(&lg->acked),
	    false, -1);
}

/*
 * A process that can write the channel's data file (a producer, or root
 * through the file's path) clears the out-of-sync flag the agent set in
 * shmbusd's words there.  The sync record must follow the agent's own
 * judgement, not the word: it stays "out", and the flag is set back, so
 * that a standby that lacks what the primary acknowledged never takes
 * over on its own.
 */
Test(failover, an_out_of_sync_flag_written_over_keeps_the_record_out)
{
	struct shmbus_daemon_area *h;
	uint32_t f;
	pid_t pub;
	int i, in = 0;

	pub = fo_start(FO_CHANS, extra, 200, false);
	host_pause(&B);
	cr_assert(wait_record("out ", 5000), "recorded out of sync");
	h = th_map_daemon_area(A.dir, "fo");
	cr_assert(h);
	f = __atomic_load_n(&h->repl_flags, __ATOMIC_RELAXED);
	cr_assert(f & SHMBUS_REPL_OUT_OF_SYNC, "flags %#x", f);
	__atomic_store_n(&h->repl_flags, f & ~SHMBUS_REPL_OUT_OF_SYNC,
			 __ATOMIC_RELAXED);
	/* The leader's steps come every few ms: a second is many. */
	for (i = 0; i < 100; i++) {
		in += sync_record_is("in ");
		usleep(10000);
	}
	f = __atomic_load_n(&h->repl_flags, __ATOMIC_RELAXED);
	cr_log_info("recorded in %d of 100 looks; flags now %#x", in, f);
	kill(B.pid, SIGCONT);
	fo_stop(pub);
	th_unmap_daemon_area(h);
	cr_assert_eq(in, 0, "recorded in sync from a flag written over");
	cr_assert(f & SHMBUS_REPL_OUT_OF_SYNC, "the flag stays cleared");
}

/* The primary loses etcd and the standby at once: it fences itself
 * before the standby may take over, so that there is never a moment
 * with two primaries. */
Test(failover, a_primary_cut_from_etcd_and_standby_fences_itself_first)
{
	uint64_t t0, fenced = 0, promoted = 0;
	uint64_t acked;
	pid_t pub;

	log_open();
	pair_setup(FO_CHANS, extra);
	watch_b();
	cr_assert(host_log_wait(&A, "holds the leader key", 5000));
	pub = th_spawn(sync_publisher, NULL);
	wait_acked(500, 30000);
	/* In sync, and recorded so at etcd (else no standby may take over,
	 * which another test checks). */
	cr_assert(wait_record("in ", 5000), "recorded in sync");
	t0 = th_now_ns();
	atomic_store(&fw[0].cut, true);
	cr_assert_eq(host_sh(&A, "ip link set %s down", A.ifname), 0);
	while (th_now_ns() - t0 < (uint64_t)(TTL_MS + 3000) * 1000000 &&
	       !(fenced && promoted)) {
		if (!fenced && !is_primary(&A))
			fenced = th_now_ns();
		if (!promoted && is_primary(&B))
			promoted = th_now_ns();
		cr_assert(!(is_primary(&A) && is_primary(&B)),
			  "two primaries at once");
		usleep(2000);
	}
	cr_assert(fenced, "the cut primary never fenced itself");
	cr_assert(promoted, "the standby never took over");
	cr_assert_lt(fenced, promoted, "fenced after the standby promoted");
	printf("cut from etcd and standby: fenced after %.0f ms, the standby "
	       "primary after %.0f ms\n", (double)(fenced - t0) / 1e6,
	       (double)(promoted - t0) / 1e6);
	acked = fo_stop(pub);
	assert_b_has_acked(acked);
	host_sh(&A, "ip link set %s up", A.ifname);
	row("primary cut from etcd and standby", acked, true,
	    (int)((promoted - t0) / 1000000));
}

/* etcd goes away: a healthy pair goes on carrying synchronous traffic,
 * and nobody is promoted; when it comes back, nothing changes hands. */
Test(failover, an_etcd_outage_stops_no_traffic)
{
	uint64_t before, t0;
	pid_t pub;

	log_open();
	pair_setup(FO_CHANS, extra);
	cr_assert(host_log_wait(&A, "holds the leader key", 5000));
	pub = th_spawn(sync_publisher, NULL);
	wait_acked(200, 30000);
	etcd_kill();
	before = atomic_load(&lg->acked);
	t0 = th_now_ns();
	while (th_now_ns() - t0 < (uint64_t)TTL_MS * 2 * 1000000) {
		cr_assert(is_primary(&A), "the primary fenced itself");
		cr_assert(!is_primary(&B), "the standby promoted itself");
		usleep(10000);
	}
	cr_assert_gt(atomic_load(&lg->acked), before + 100,
		     "acknowledgements went on: %lu then %lu",
		     (unsigned long)before,
		     (unsigned long)atomic_load(&lg->acked));
	etcd_start();
	t0 = th_now_ns();
	while (th_now_ns() - t0 < (uint64_t)TTL_MS * 2 * 1000000) {
		struct sb_repl_view va, vb;

		host_view(&A, "fo", &va);
		host_view(&B, "fo", &vb);
		cr_assert(is_primary(&A) && !is_primary(&B),
			  "after etcd came back, %.0f ms: A flags %#x fence %u, "
			  "B flags %#x fence %u", (th_now_ns() - t0) / 1e6,
			  va.flags, va.fence, vb.flags, vb.fence);
		usleep(10000);
	}
	fo_stop(pub);
	cr_assert_eq(atomic_load(&lg->refused), 0);
	row("etcd killed for two terms, restarted", atomic_load(&lg->acked),
	    false, -1);
}

/* The primary's daemon is paused past its lease: the standby takes over;
 * resumed, the old primary acknowledges nothing more and fences itself. */
Test(failover, a_primary_paused_past_its_lease_fences_itself_on_resume)
{
	uint64_t acked;
	pid_t pub;
	int ms;

	pub = fo_start(FO_CHANS, extra, 300, true);
	host_pause(&A);
	acked = atomic_load(&lg->acked);
	ms = wait_for(is_primary, &B, TTL_MS + 3000);
	cr_assert_geq(ms, 0);
	usleep(100000);
	cr_assert_leq(atomic_load(&lg->acked), acked + 1,
		      "acknowledged while paused");
	kill(A.pid, SIGCONT);
	for (int i = 0; i < 200 && is_primary(&A); i++)
		usleep(10000);
	cr_assert(!is_primary(&A), "the resumed primary did not fence itself");
	fo_stop(pub);
	/* Nothing acknowledged after the pause: everything acknowledged is
	 * on the new primary. */
	cr_assert_leq(atomic_load(&lg->acked), acked + 1);
	assert_b_has_acked(atomic_load(&lg->acked));
	row("primary paused (SIGSTOP) past its lease", atomic_load(&lg->acked),
	    true, ms);
}

/* Removes h's channel files (its rings), as a reboot would. */
static void rings_vanish(const struct host *h)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -f %s/fo %s/.fo.*", h->dir, h->dir);
	cr_assert_eq(system(cmd), 0);
}

/* Both hosts go down; the standby's rings vanish (a reboot) and it comes
 * back alone: recorded in sync before, it must still not take over with
 * empty rings.  An operator can (promote --force).  With damage_record,
 * the record of its rings' identities is zeroed too: a host that cannot
 * read it takes its rings for lost, not for a new pair's. */
static void vanished_rings_do_not_take_over(bool damage_record)
{
	struct shmbus_ctl_repl_reply r;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	host_kill(&B, SIGKILL);
	host_kill(&A, SIGKILL);
	kill(pub, SIGKILL);
	waitpid(pub, NULL, 0);
	rings_vanish(&B);
	if (damage_record) {
		char path[300];
		static const char zeros[32];
		FILE *f;

		snprintf(path, sizeof(path), "%s/rings", B.state);
		f = fopen(path, "r+");
		cr_assert(f, "%s", path);
		cr_assert_eq(fwrite(zeros, 1, sizeof(zeros), f),
			     sizeof(zeros));
		fclose(f);
	}
	host_start(&B);
	cr_assert(host_log_wait(&B, damage_record ? "rings:1 is damaged" :
				"was made again since the last run", 2000));
	cr_assert_eq(wait_for(is_primary, &B, TTL_MS * 2 + 500), -1,
		     "took over with empty rings");
	cr_assert(host_log_wait(&B, "no automatic promotion", 100));
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, 0, &r), -EAGAIN,
		     "%s", r.text);
	/* A forced promotion is refused while the dead primary's lease
	 * runs in etcd (a term after its last renewal, as etcd's lessor
	 * sees it: later on a loaded host), as an operator would see. */
	for (int i = 0; i < 3 * TTL_MS / 10 && leader_key_held(); i++)
		usleep(10000);
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE,
			      &r), 0, "%s", r.text);
	/* Its channels open once its leader thread runs the key's term. */
	cr_assert_geq(wait_for(is_primary, &B, 1000), 0);
}

Test(failover, a_host_whose_rings_vanished_does_not_take_over)
{
	vanished_rings_do_not_take_over(false);
	row("both down, standby back with empty rings", atomic_load(&lg->acked),
	    false, -1);
}

Test(failover, a_host_that_cannot_read_its_rings_record_does_not_take_over)
{
	vanished_rings_do_not_take_over(true);
}

/* A host id that cannot be read: the daemon does not make a new one (the
 * arbiter's records would then name a stranger), it says so and stops.
 * An empty one (a write a crash cut short, never handed out) is made
 * again. */
Test(failover, a_damaged_host_id_stops_the_daemon)
{
	char path[300];
	FILE *f;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 100, false);
	fo_stop(pub);
	host_kill(&B, SIGKILL);
	snprintf(path, sizeof(path), "%s/host-id", B.state);
	f = fopen(path, "w");
	cr_assert(f, "%s", path);
	fputs("0x12\n", f);
	fclose(f);
	cr_assert_not(host_try_start(&B), "started with a damaged host id");
	cr_assert(host_log_wait(&B, "host-id is damaged", 100));
	cr_assert(!is_primary(&B));
	f = fopen(path, "w");
	cr_assert(f);
	fclose(f);
	cr_assert(host_try_start(&B), "an empty host id stopped the daemon");
	cr_assert(host_log_wait(&B, "a new id is made", 100));
}

/* The standby restarts with vanished rings and, cut from etcd, cannot
 * learn that its primary recorded it in sync afresh: a switchover to it
 * is refused (its leader thread would not take the key, and the pair
 * would have no primary), and the old primary goes on taking writes. */
Test(failover, a_standby_whose_rings_vanished_refuses_a_switchover)
{
	struct shmbus_ctl_repl_reply r;
	uint64_t before;
	int64_t rev0, rev = 0;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 200, false);
	before = fo_stop(pub);
	cr_assert(sync_record_is_rev("in ", &rev0));
	host_kill(&B, SIGKILL);
	rings_vanish(&B);
	atomic_store(&fw[1].cut, true);
	host_start(&B);
	cr_assert(host_log_wait(&B, "was made again since the last run",
				2000));
	cr_assert_geq(wait_for(is_standby_linked, &B, 5000), 0);
	cr_assert_neq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0,
		      "a switchover to a standby with vanished rings went "
		      "through");
	cr_assert(strstr(r.text, "made again"), "%s", r.text);
	cr_assert_geq(wait_for(is_primary, &A, 2000), 0, "A reopened");
	cr_assert(!is_primary(&B));
	/* A takes synchronous writes again once B is back in sync (the
	 * abandoned switchover dropped the link: out of sync meanwhile). */
	for (int i = 0; i < 500 && !(sync_record_is_rev("in ", &rev) &&
				     rev > rev0); i++)
		usleep(10000);
	cr_assert_gt(rev, rev0, "recorded in sync again");
	atomic_store(&lg->stop, 0);
	pub = th_spawn(sync_publisher, NULL);
	for (int i = 0; i < 1000 && atomic_load(&lg->acked) < before + 100;
	     i++)
		usleep(10000);
	cr_assert_geq(fo_stop(pub), before + 100, "A stopped acknowledging");
	cr_assert(!is_primary(&B));
	atomic_store(&fw[1].cut, false);
	row("switchover to a standby with vanished rings",
	    atomic_load(&lg->acked), false, -1);
}


/* A fails, B takes over; A comes back (its config still says primary),
 * stands by behind B and catches up; then B fails and A, recorded in sync
 * again, takes over at a newer epoch. */
Test(failover, two_failovers_in_quick_succession)
{
	struct sb_repl_view v;
	uint64_t e1, e2;
	pid_t pub;
	int ms;

	pub = fo_start(FO_CHANS, extra, 500, false);
	/* A stops publishing cleanly (nothing unacknowledged), then dies. */
	fo_stop(pub);
	host_kill(&A, SIGKILL);
	ms = wait_for(is_primary, &B, TTL_MS + 3000);
	cr_assert_geq(ms, 0, "B did not take over");
	host_view(&B, "fo", &v);
	e1 = v.epoch;
	/* A comes back: B holds the key, so A stands by and catches up. */
	host_start(&A);
	cr_assert_geq(wait_for(is_standby_linked, &A, 5000), 0,
		      "A did not stand by behind B");
	cr_assert(!is_primary(&A));
	cr_assert(host_log_wait(&B, "standby recorded in sync", 5000));
	/* B dies: A, recorded in sync, takes over. */
	host_kill(&B, SIGKILL);
	ms = wait_for(is_primary, &A, TTL_MS + 3000);
	cr_assert_geq(ms, 0, "A did not take over again");
	printf("the second failover: %d ms\n", ms);
	host_view(&A, "fo", &v);
	e2 = v.epoch;
	cr_assert_gt(e2, e1, "epochs only grow: %lu then %lu",
		     (unsigned long)e1, (unsigned long)e2);
	row("two failovers in quick succession", atomic_load(&lg->acked), false,
	    ms);
}

/* h's channel "fo"'s epoch, by its header. */
static uint64_t epoch_of(const struct host *h)
{
	struct sb_repl_view v;

	host_view(h, "fo", &v);
	return v.epoch;
}

/* Whether h stays other than primary for ms. */
static bool stays_not_primary(const struct host *h, int ms)
{
	for (int i = 0; i < ms / 10; i++) {
		if (is_primary(h))
			return false;
		usleep(10000);
	}
	return true;
}

/* A fails and B takes over; then B fails too, and A comes back first,
 * after B's lease ran out.  A, whose config says primary, does not take
 * the key back at its old epoch: the sync record names B's newer one, so
 * A stands by.  B comes back and takes over again (it was that primary),
 * and A rejoins it. */
Test(failover, a_primary_back_after_a_newer_one_stands_by)
{
	uint64_t e1;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 200, false);
	fo_stop(pub);
	host_kill(&A, SIGKILL);
	cr_assert_geq(wait_for(is_primary, &B, TTL_MS + 3000), 0,
		      "B did not take over");
	e1 = epoch_of(&B);
	host_kill(&B, SIGKILL);
	for (int i = 0; i < TTL_MS + 3000 && leader_key_held(); i += 20)
		usleep(20000);
	cr_assert(!leader_key_held(), "B's lease did not run out");
	host_start(&A);
	cr_assert(stays_not_primary(&A, TTL_MS + 500), "A took the key back "
		  "at epoch %lu, after B's %lu", (unsigned long)epoch_of(&A),
		  (unsigned long)e1);
	cr_assert(host_log_wait(&A, "names a primary since this host's "
				"epoch", 100));
	/* Standing by is right for it: warnings, not errors. */
	cr_assert(host_log_wait(&A, "shmbusd[warning]: arbiter: the sync "
				"record", 100), "see %s", A.log);
	cr_assert(host_log_wait(&A, "shmbusd[warning]: replication: another "
				"host has been primary", 100), "see %s", A.log);
	host_start(&B);
	cr_assert_geq(wait_for(is_primary, &B, 2 * TTL_MS + 3000), 0,
		      "B did not take over again");
	/* Its rings were a primary's: it takes its key back at its epoch. */
	cr_assert_geq(epoch_of(&B), e1);
	cr_assert_geq(wait_for(is_standby_linked, &A, 10000), 0,
		      "A did not rejoin B");
	cr_assert(!is_primary(&A));
	row("old primary back after a newer one died", atomic_load(&lg->acked),
	    false, -1);
}

/* The pair started with a publisher that stops once 200 messages are
 * acknowledged, then A switched over to B. */
static void switch_over_a_quiet_pair(void)
{
	struct shmbus_ctl_repl_reply r;

	fo_stop(fo_start(FO_CHANS, extra, 200, false));
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
}

static bool a_or_b_primary(const struct host *h)
{
	(void)h;
	return is_primary(&A) || is_primary(&B);
}

/* The new primary of a switchover killed at once, and started again: the
 * key was taken, and the new epoch recorded with it, before it became
 * primary, so it takes over again (it holds all): a record that still
 * named the old epoch would let neither host take over.  (If B lived
 * long enough to record A in sync, either may take over.) */
Test(failover, a_switchovers_new_primary_killed_at_once_takes_over_again)
{
	struct host *p, *s;

	switch_over_a_quiet_pair();
	host_kill(&B, SIGKILL);
	usleep(500000);
	host_start(&B);
	cr_assert_geq(wait_for(a_or_b_primary, &B, 2 * TTL_MS + 3000), 0,
		      "nobody took over after the new primary's restart");
	p = is_primary(&B) ? &B : &A;
	s = p == &B ? &A : &B;
	cr_assert(!is_primary(s), "both primary");
	cr_assert_geq(wait_for(is_standby_linked, s, 10000), 0,
		      "%c did not stand by behind %c", s->tag, p->tag);
	row("switchover's new primary killed at once", atomic_load(&lg->acked),
	    false, -1);
}

/* A dies, and B is killed the moment it is primary at its new epoch,
 * before it could say anything more to etcd; both start again.  The sync
 * record already names B's epoch (written with the key), so A stands by
 * and B takes over again, where a record of the old epoch would leave
 * both standby for good. */
Test(failover, a_new_primary_killed_as_it_promotes_takes_over_again)
{
	shmbus_channel *b;
	struct sb_repl_view v;
	uint64_t e0, t0;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 200, false);
	fo_stop(pub);
	e0 = epoch_of(&B);
	b = host_map(&B, "fo");
	cr_assert(b);
	host_kill(&A, SIGKILL);
	/* Looked at every 200 us, for as long as the other scenarios wait
	 * for a takeover and 2 s more (a loaded machine's). */
	t0 = th_now_ns();
	do {
		sb_repl_read(b, &v);
		if (v.epoch != e0)
			break;
		usleep(200);
	} while (th_now_ns() - t0 < (2 * TTL_MS + 5000) * 1000000ull);
	cr_assert_neq(v.epoch, e0, "B did not promote");
	host_kill(&B, SIGKILL);
	shmbus_channel_close(b);
	host_start(&A);
	host_start(&B);
	cr_assert_geq(wait_for(is_primary, &B, 2 * TTL_MS + 3000), 0,
		      "nobody took over");
	cr_assert(!is_primary(&A));
	cr_assert_geq(wait_for(is_standby_linked, &A, 10000), 0,
		      "A did not rejoin B");
	row("new primary killed as it promotes", atomic_load(&lg->acked), false,
	    -1);
}

/* After a failover the new primary's config still says standby: a
 * restart of its daemon keeps it primary (it takes its key back, as a
 * primary whose config says so does), not handing the role to the old
 * primary, now its standby, when the key expires. */
Test(failover, a_restarted_primary_whose_config_says_standby_stays_primary)
{
	uint64_t e1;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 200, false);
	fo_stop(pub);
	host_kill(&A, SIGKILL);
	cr_assert_geq(wait_for(is_primary, &B, TTL_MS + 3000), 0,
		      "B did not take over");
	e1 = epoch_of(&B);
	host_start(&A);
	cr_assert_geq(wait_for(is_standby_linked, &A, 10000), 0,
		      "A did not rejoin B");
	host_kill(&B, SIGKILL);
	host_start(&B);
	cr_assert_geq(wait_for(is_primary, &B, TTL_MS), 0,
		      "B did not take its key back");
	cr_assert(stays_not_primary(&A, TTL_MS + 500), "A took the role "
		  "over from B's restart");
	cr_assert_eq(epoch_of(&B), e1, "no promotion: the same epoch");
	cr_assert(host_log_wait(&B, "rings were a primary's", 100));
	row("primary restarted, its config saying standby",
	    atomic_load(&lg->acked), false, -1);
}

/* The primary's daemon restarts while its standby, in sync until then,
 * cannot link (paused): the new daemon holds the standby's records for it
 * as before, but records it in sync at the arbiter only once it has caught
 * up in this run, never on the last daemon's word: a standby whose host
 * rebooted meanwhile must not become promotable on it. */
Test(failover, a_restarted_primary_records_the_standby_in_sync_once_caught_up)
{
	char ext[600];
	pid_t pub;

	snprintf(ext, sizeof(ext), "%ssync_timeout_ms = 20000\n", extra);
	pub = fo_start(FO_CHANS, ext, 200, false);
	fo_stop(pub);
	host_pause(&B);
	host_kill(&A, SIGKILL);
	unlink(A.log);
	host_start(&A);
	cr_assert(host_log_wait(&A, "the standby was in sync when the last "
				"shmbusd stopped", 3000));
	cr_assert(host_log_wait(&A, "holds the leader key", 10000));
	cr_assert(wait_record("out ", 3000), "a standby not linked since the "
		  "restart is recorded in sync");
	kill(B.pid, SIGCONT);
	cr_assert(host_log_wait(&A, "(caught up: no longer provisionally)",
				5000));
	cr_assert(wait_record("in ", 5000), "recorded in sync once caught up");
}

/* The standby's host reboots (its daemon killed, its rings gone) and is
 * back after down_ms, the primary running on (sync_timeout_ms 2000): the
 * standby is recorded out of sync until it has caught up, then in sync
 * afresh, which makes it promotable again.  Back within sync_timeout_ms,
 * the primary sees that it lost what it had acknowledged (its hello says
 * its rings were made again); back after, it was out of sync already. */
static void standby_back_with_empty_rings(int down_ms)
{
	char ext[600];
	pid_t pub;

	snprintf(ext, sizeof(ext), "%ssync_timeout_ms = 2000\n", extra);
	pub = fo_start(FO_CHANS, ext, 500, false);
	host_kill(&B, SIGKILL);
	host_sh(NULL, "rm -rf %s/* %s/.[!.]*", B.dir, B.dir);
	usleep((useconds_t)down_ms * 1000);
	host_start(&B);
	cr_assert(host_log_wait(&B, "was made again", 3000));
	if (down_ms < 2000)
		cr_assert(host_log_wait(&A, "the standby lost records it had "
					"acknowledged (its rings were made "
					"again", 5000));
	else
		cr_assert(host_log_wait(&A, "standby out of sync", 0));
	fo_stop(pub);
	cr_assert(host_log_wait(&B, "automatic promotion allowed", 10000),
		  "caught up, and still not promotable");
}

Test(failover, a_standby_back_with_empty_rings_is_promotable_once_caught_up)
{
	standby_back_with_empty_rings(0);
}

Test(failover, a_standby_back_late_with_empty_rings_is_promotable_once_caught_up)
{
	standby_back_with_empty_rings(2500);
}

/* Both daemons stopped and started again at once: the primary takes its
 * key back before the standby could, nothing changes hands, and
 * acknowledged traffic goes on. */
Test(failover, both_daemons_restarted_at_once)
{
	struct sb_repl_view v;
	uint64_t e0, before;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	fo_stop(pub);
	host_view(&A, "fo", &v);
	e0 = v.epoch;
	kill(A.pid, SIGTERM);
	kill(B.pid, SIGTERM);
	host_kill(&A, 0);
	host_kill(&B, 0);
	{
		int64_t rev0, rev = 0;

		sync_record_is_rev("in ", &rev0);
		host_start(&A);
		host_start(&B);
		cr_assert_geq(wait_for(is_standby_linked, &B, 5000), 0);
		cr_assert_geq(wait_for(is_primary, &A, 2000), 0,
			      "A is primary again");
		/* In sync again, recorded afresh (before, a sync waiter is
		 * told DEGRADED). */
		for (int i = 0; i < 500 && !(sync_record_is_rev("in ", &rev) &&
					     rev > rev0); i++)
			usleep(10000);
		cr_assert_gt(rev, rev0, "recorded in sync again");
	}
	host_view(&A, "fo", &v);
	cr_assert_eq(v.epoch, e0, "no promotion: the same epoch");
	/* Synchronous traffic again. */
	atomic_store(&lg->stop, 0);
	before = atomic_load(&lg->acked);
	pub = th_spawn(sync_publisher, NULL);
	for (int i = 0; i < 3000 && atomic_load(&lg->acked) < 200; i++)
		usleep(1000);
	fo_stop(pub);
	cr_assert_gt(atomic_load(&lg->acked), 100, "acknowledged again "
		     "(%lu before)", (unsigned long)before);
	cr_assert(!is_primary(&B));
	row("both daemons restarted at once", atomic_load(&lg->acked), false,
	    -1);
}

/* A switchover with the arbiter: the key goes with the role, and stays
 * there (the old primary does not take it back on its own record). */
Test(failover, a_switchover_moves_the_key_and_it_stays)
{
	struct shmbus_ctl_repl_reply r;

	switch_over_a_quiet_pair();
	cr_assert_geq(wait_for(is_primary, &B, 2000), 0, "B primary");
	cr_assert(host_log_wait(&B, "holds the leader key", 2000));
	/* Two terms later: still B, A its standby. */
	for (int i = 0; i < TTL_MS * 2 / 10; i++) {
		cr_assert(is_primary(&B) && !is_primary(&A),
			  "the roles moved back");
		usleep(10000);
	}
	cr_assert_geq(wait_for(is_standby_linked, &A, 2000), 0);
	/* shmbusctl status: the leader, the epoch, the lease's time left,
	 * the standby's state and both positions. */
	{
		const char *t;
		long left = -1;

		cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		cr_assert(strstr(r.text, "primary at epoch ") &&
			  strstr(r.text, "fo: link up, at ") &&
			  strstr(r.text, "(in sync)"), "%s", r.text);
		t = strstr(r.text, "holds the leader key, may acknowledge for ");
		cr_assert(t, "%s", r.text);
		sscanf(t, "holds the leader key, may acknowledge for %ld ms",
		       &left);
		cr_assert(left > 0 && left <= TTL_MS, "%s", r.text);
		cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		cr_assert(strstr(r.text, "standby at epoch ") &&
			  strstr(r.text, "fo: link up, holds ") &&
			  strstr(r.text, ", leader "), "%s", r.text);
	}
	row("planned switchover", atomic_load(&lg->acked), false, -1);
}

static int switchover_a(void *arg)
{
	struct shmbus_ctl_repl_reply r;
	int rc = host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r);

	(void)arg;
	fprintf(stderr, "switchover: %d %s\n", rc, r.text);
	return rc == 0 ? 0 : 1;
}

/* The standby of a switchover told to stop after it took the leader key
 * (and recorded its new epoch with it) but before it became primary: it
 * refuses, and puts the sync record back as it found it, so that the old
 * primary takes the key again and goes on.  A record left naming the
 * standby's new epoch would keep the old primary out (no host may take
 * the key after a newer primary), and the pair would have no primary
 * until the standby came back.  B's requests to etcd are slowed so that
 * the test's SIGTERM lands between the key and the promotion. */
Test(failover, a_standby_stopped_mid_switchover_leaves_the_old_primary)
{
	pid_t sw;
	int i;

	fo_stop(fo_start(FO_CHANS, extra, 200, false));
	cr_assert(wait_record("in ", 3000));
	atomic_store(&fw[1].delay_ms, 60);
	sw = th_spawn(switchover_a, NULL);
	/* take_key(): "out" with the key, which A gave up: B's. */
	for (i = 0; i < 1000 && !(sync_record_is("out ") && leader_key_held());
	     i++)
		usleep(2000);
	cr_assert_lt(i, 1000, "B did not take the key");
	host_kill(&B, SIGTERM);
	cr_assert_neq(th_wait(sw), 0, "the switchover went through");
	cr_assert_geq(wait_for(is_primary, &A, 3000), 0,
		      "A did not take the key again");
	cr_assert(host_log_wait(&B, "the sync record is 'in ", 0),
		  "B did not put the sync record back");
	atomic_store(&fw[1].delay_ms, 0);
	host_start(&B);
	cr_assert_geq(wait_for(is_standby_linked, &B, 5000), 0,
		      "B did not stand by behind A");
	cr_assert(is_primary(&A) && !is_primary(&B));
	row("switchover's standby stopped after taking the key",
	    atomic_load(&lg->acked), false, -1);
}

/* ------------------------------------------------------------ rejoin */

#define CUT_CHANS \
	"[channel fo]\ncapacity = 1M\nmax_msg = 1K\nreplicate = applied\n" \
	"journal = on\njournal_segment = 1M\n" \
	"[channel fo2]\ncapacity = 64K\nmax_msg = 1K\nreplicate = applied\n"

#define TAIL 50		/* messages the cut-off primary writes alone */
#define AFTER 20	/* messages the new primary writes */

/* Publishes n fixed messages of producer id on h's channel "fo" without
 * waiting for acknowledgements. */
struct burst {
	const struct host *h;
	uint32_t id, n;
};

static int burst_publisher(void *arg)
{
	const struct burst *b = arg;
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(b->h, &bus, "fo", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t msg[64];

	if (!pub)
		return 2;
	for (uint32_t i = 0; i < b->n; i++) {
		th_msg_fill(msg, sizeof(msg), b->id, i);
		if (shmbus_publish(pub, msg, sizeof(msg)))
			return 3;
	}
	return 0;
}

/* The quarantine file A wrote for "fo": its header, its records checked
 * one by one (all of producer `id`, numbered from 0, in order); returns
 * how many. */
static uint64_t check_quarantine(uint64_t *from, uint64_t *to, uint32_t id,
				 uint64_t epoch)
{
	struct shmbus_quar_hdr q;
	char cmd[4096], path[512];
	uint64_t n = 0, p;
	uint8_t *data;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "ls %s/quarantine/fo.*.q", A.state);
	f = popen(cmd, "r");
	cr_assert(f && fgets(path, sizeof(path), f), "no quarantine file");
	pclose(f);
	path[strcspn(path, "\n")] = 0;
	f = fopen(path, "rb");
	cr_assert(f, "%s", path);
	cr_assert_eq(fread(&q, 1, sizeof(q), f), sizeof(q));
	cr_assert_eq(q.magic, SHMBUS_QUAR_MAGIC);
	cr_assert_eq(q.hdr_crc, sb_crc32c(0, &q, offsetof(struct shmbus_quar_hdr,
							 hdr_crc)));
	cr_assert_str_eq(q.channel, "fo");
	cr_assert_gt(q.new_epoch, q.epoch);
	/* The epoch A wrote the tail in, in the header and the name (not
	 * the new one, which A already had from "fo2" linking first). */
	cr_assert_eq(q.epoch, epoch, "the quarantine says epoch %lu, the "
		     "tail was written in %lu", (unsigned long)q.epoch,
		     (unsigned long)epoch);
	snprintf(cmd, sizeof(cmd), "/fo.%lu.", (unsigned long)epoch);
	cr_assert(strstr(path, cmd), "%s is not named by epoch %lu", path,
		  (unsigned long)epoch);
	cr_assert(q.to > q.from && q.to - q.from <= q.capacity);
	data = malloc(q.to - q.from);
	cr_assert_eq(fread(data, 1, q.to - q.from, f), q.to - q.from);
	fclose(f);
	cr_assert_eq(q.data_crc, sb_crc32c(0, data, q.to - q.from));
	for (p = q.from; p < q.to;) {
		const uint8_t *r = data + (p - q.from);
		uint64_t w, seq;
		uint32_t len, type, got;

		memcpy(&w, r, 8);
		len = (uint32_t)(w & SHMBUS_LEN_MASK);
		type = (uint32_t)(w >> SHMBUS_LEN_BITS) & 7;
		cr_assert_eq(w >> 32, ((p / q.capacity) + 1) & 0xffffffffu,
			     "lap tag at %lu", (unsigned long)p);
		if (type == SHMBUS_REC_PAD) {
			p += 8 + len;
			continue;
		}
		cr_assert_eq(type, SHMBUS_REC_MSG);
		cr_assert_eq(th_msg_check(r + 16, len, &got, &seq), 0);
		cr_assert_eq(got, id);
		cr_assert_eq(seq, n, "message %lu in the quarantine, %lu due",
			     (unsigned long)seq, (unsigned long)n);
		n++;
		p += 16 + ((len + 7u) & ~7u);
	}
	free(data);
	*from = q.from;
	*to = q.to;
	/* shmbusctl lists them; a flipped bit is damage (exit 4). */
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl quarantine %s | "
		 "grep -q '^%d messages$'", path, TAIL);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	snprintf(cmd, sizeof(cmd), "cp %s %s.bad && printf '\\377' | dd "
		 "of=%s.bad bs=1 seek=%u conv=notrunc 2>/dev/null; "
		 "build/tools/shmbusctl quarantine %s.bad >/dev/null 2>&1; "
		 "r=$?; rm -f %s.bad; exit $r", path, path, path,
		 SHMBUS_QUAR_HDR + 40, path, path);
	cr_assert_eq(WEXITSTATUS(system(cmd)), 4, "%s", cmd);
	return n;
}

/* A primary cut from etcd and its standby goes on taking writes until
 * its lease runs out: those records are on no other host.  The standby
 * takes over; when the old primary comes back, it moves exactly those
 * records to a quarantine file, cuts its ring, journal and consumer
 * group back to where the new primary's epoch began, and catches up: no
 * merge, no gap. */
Test(failover, a_returning_primary_cuts_its_diverged_tail)
{
	struct burst tail = { &A, 2, TAIL }, after = { &B, 3, AFTER };
	struct shmbus_group_stats gs;
	struct sb_repl_view va, vb;
	shmbus_channel *ach;
	shmbus_group *g;
	unsigned nm;
	shmbus_sub *acksub;
	uint64_t last[4], from, to, head, endA, t0;
	char cmd[512];
	pid_t pub;
	int st, ms;

	pub = fo_start(CUT_CHANS, extra, 300, false);
	fo_stop(pub);
	/* A subscriber on A that sees only acknowledged messages. */
	ach = host_map(&A, "fo");
	cr_assert(ach);
	acksub = shmbus_sub_open(ach, NULL);
	cr_assert(acksub);
	cr_assert_eq(shmbus_sub_set_visibility(acksub,
					       SHMBUS_SEE_ACKNOWLEDGED), 0);
	/* A consumer group on A, from here on. */
	g = shmbus_group_join(ach, "work", "a-worker", NULL);
	cr_assert(g, "join: %s", strerror(errno));
	/* A alone: cut from etcd and from B, it still takes writes. */
	atomic_store(&fw[0].cut, true);
	cr_assert_eq(host_sh(&A, "ip link set %s down", A.ifname), 0);
	t0 = th_now_ns();
	pub = th_spawn(burst_publisher, &tail);
	cr_assert_eq(waitpid(pub, &st, 0), pub);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "the tail was not written (status %#x)", st);
	/* The group takes the tail and acknowledges it, on A alone. */
	for (int i = 0; i < TAIL; i++) {
		struct shmbus_group_msg m;
		uint8_t buf[1024];

		cr_assert_gt(shmbus_group_read(g, buf, sizeof(buf), &m), 0);
		cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	}
	shmbus_group_leave(g);
	/* It never sees the tail: A could not record its standby out of
	 * sync (etcd is cut off too), so nothing degrades. */
	for (int i = 0; i < 200; i++) {
		uint8_t buf[256];
		ssize_t r = shmbus_read(acksub, buf, sizeof(buf), NULL);
		uint32_t id;
		uint64_t seq;

		if (r == -EAGAIN) {
			usleep(10000);
			continue;
		}
		cr_assert_geq(r, 0);
		cr_assert_eq(th_msg_check(buf, (size_t)r, &id, &seq), 0);
		cr_assert_neq(id, 2, "an acknowledged-only subscriber saw "
			      "message %lu of the tail", (unsigned long)seq);
	}
	shmbus_sub_close(acksub);
	host_view(&A, "fo", &va);
	endA = sb_ring_head(host_map(&A, "fo"));
	cr_assert_geq(wait_for(is_primary, &B, TTL_MS + 3000), 0,
		      "B did not take over");
	ms = (int)((th_now_ns() - t0) / 1000000);
	for (int i = 0; i < 300 && is_primary(&A); i++)
		usleep(10000);
	cr_assert(!is_primary(&A), "A did not fence itself");
	pub = th_spawn(burst_publisher, &after);
	cr_assert_eq(waitpid(pub, &st, 0), pub);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* A comes back, with a subscriber of its own still reading: it may
	 * be reading the tail, so the cut waits for it. */
	{
		shmbus_sub *asub = shmbus_sub_open(ach, NULL);

		cr_assert(asub);
		cr_assert_eq(host_sh(&A, "ip link set %s up", A.ifname), 0);
		atomic_store(&fw[0].cut, false);
		cr_assert(host_log_wait(&A, "cannot be cut back", 10000),
			  "A cut its ring under a subscriber");
		cr_assert_eq(sb_ring_head(ach), endA);
		shmbus_sub_close(asub);
		shmbus_channel_close(ach);
	}
	cr_assert(host_log_wait(&A, "rejoin: records", 10000),
		  "A did not cut its tail");
	{
		char said[64];

		snprintf(said, sizeof(said), "of epoch %lu are not on",
			 (unsigned long)va.epoch);
		cr_assert(host_log_wait(&A, said, 1000), "the log does not "
			  "say the tail's epoch %lu", (unsigned long)va.epoch);
	}
	head = pair_wait_caught_up("fo", 0, 10000);
	/* A's group was cut back with the ring: it acknowledged none of
	 * B's records. */
	ach = host_map(&A, "fo");
	cr_assert(ach);
	nm = 0;
	cr_assert_eq(sb_group_inspect(ach, A.dir, "work", &gs, NULL, &nm), 0);
	shmbus_channel_close(ach);
	/* Exactly the tail is in the quarantine, from where B's epoch
	 * began to where A had written. */
	cr_assert_eq(check_quarantine(&from, &to, 2, va.epoch), TAIL);
	cr_assert_eq(gs.floor, from, "A's group floor %lu, the cut at %lu",
		     (unsigned long)gs.floor, (unsigned long)from);
	cr_assert_eq(gs.claim, from);
	cr_assert_eq(to, endA, "quarantined up to %lu, A had written to %lu",
		     (unsigned long)to, (unsigned long)endA);
	host_view(&B, "fo", &vb);
	cr_assert_gt(vb.epoch, va.epoch);
	/* The same records at the same positions since the cut, and none
	 * of the tail on A any more; B's records after it, in order. */
	pair_assert_identical_range("fo", from, head);
	pair_read_all_last(&A, "fo", UINT64_MAX, last);
	cr_assert_eq(last[2], UINT64_MAX, "A still delivers the tail");
	cr_assert_eq(last[3], AFTER - 1, "A has B's records: last %lu",
		     (unsigned long)last[3]);
	cr_assert_geq(last[1] + 1, atomic_load(&lg->acked));
	/* Its journal was cut too: intact, and it holds B's records. */
	snprintf(cmd, sizeof(cmd), "build/tools/shmbusctl journal verify fo "
		 "--dir %s/jnl >/dev/null", A.dir);
	cr_assert_eq(system(cmd), 0, "%s", cmd);
	for (int i = 0; i < 300; i++) {
		host_view(&A, "fo", &va);
		if (va.local_persisted >= head)
			break;
		usleep(10000);
	}
	cr_assert_geq(va.local_persisted, head, "A's journal persisted %lu "
		      "of %lu", (unsigned long)va.local_persisted,
		      (unsigned long)head);
	/* And A is a standby that B counts in sync again. */
	cr_assert(host_log_wait(&B, "standby recorded in sync", 5000));
	row("old primary back with an unreplicated tail", atomic_load(&lg->acked),
	    true, ms);
}

/* A returning primary whose journal of "fo" another shmbusd writes (its
 * own start was refused for it: the directory's lock, .lock, is held)
 * leaves that journal where it is at the cut: it is not this daemon's
 * to move aside. */
Test(failover, a_returning_primary_leaves_a_journal_another_daemon_writes)
{
	struct burst tail = { &A, 2, TAIL };
	char path[256];
	struct stat st;
	pid_t pub;
	int st_, fd;

	pair_paths();
	cr_assert_eq(mkdir(A.dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/jnl", A.dir);
	cr_assert_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/jnl/fo", A.dir);
	cr_assert_eq(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/jnl/fo/.lock", A.dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert(fd >= 0);
	cr_assert_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
	pub = fo_start(CUT_CHANS, extra, 100, false);
	fo_stop(pub);
	cr_assert(host_log_wait(&A, "is written by another shmbusd", 1000));
	/* A alone takes a tail; B takes over; A comes back and cuts. */
	atomic_store(&fw[0].cut, true);
	cr_assert_eq(host_sh(&A, "ip link set %s down", A.ifname), 0);
	pub = th_spawn(burst_publisher, &tail);
	cr_assert_eq(waitpid(pub, &st_, 0), pub);
	cr_assert(WIFEXITED(st_) && WEXITSTATUS(st_) == 0);
	cr_assert_geq(wait_for(is_primary, &B, TTL_MS + 3000), 0,
		      "B did not take over");
	for (int i = 0; i < 300 && is_primary(&A); i++)
		usleep(10000);
	cr_assert(!is_primary(&A), "A did not fence itself");
	cr_assert_eq(host_sh(&A, "ip link set %s up", A.ifname), 0);
	atomic_store(&fw[0].cut, false);
	cr_assert(host_log_wait(&A, "holds records past the cut", 10000) ||
		  host_log_wait(&A, "moved aside to", 0),
		  "A did not come to the cut");
	cr_assert_not(host_log_wait(&A, "moved aside to", 0),
		      "A moved aside a journal another daemon writes");
	snprintf(path, sizeof(path), "%s/jnl/fo", A.dir);
	cr_assert_eq(stat(path, &st), 0, "%s: gone", path);
	close(fd);
}

/* ---------------------------------------------------------- partitions */

/* Waits until B holds A's ring (its head) and asserts that every message
 * acknowledged is there, from the first, once, in order. */
static void b_catches_up_with_acked(uint64_t acked)
{
	uint64_t last[4], n, oldest;
	shmbus_channel *bc;

	pair_wait_caught_up("fo", 0, 15000);
	n = pair_read_all_last(&B, "fo", UINT64_MAX, last);
	cr_assert_neq(last[1], UINT64_MAX, "B holds none of the messages");
	/* In order and once (pair_read_all_last()), and all of them from
	 * the first unless the ring has wrapped since. */
	bc = host_map(&B, "fo");
	cr_assert(bc);
	oldest = sb_ring_oldest(bc);
	shmbus_channel_close(bc);
	if (oldest == 0)
		cr_assert_eq(n, last[1] + 1, "B holds %lu messages, up to %lu",
			     (unsigned long)n, (unsigned long)last[1]);
	cr_assert_geq(last[1] + 1, acked, "B holds messages up to %lu, %lu "
		      "acknowledged", (unsigned long)last[1],
		      (unsigned long)acked);
}

/* Neither host may be primary beside the other, and B must never be
 * primary, for `ms`. */
static void a_alone_primary_for(int ms)
{
	uint64_t t0 = th_now_ns();

	while (th_now_ns() - t0 < (uint64_t)ms * 1000000) {
		cr_assert(is_primary(&A), "A lost its role");
		cr_assert(!is_primary(&B), "B promoted itself");
		usleep(10000);
	}
}

/* The primary loses its standby but not etcd: it records the standby out
 * of sync before it acknowledges without it, keeps the key, and B (which
 * sees the key held) never promotes.  Healed, B catches up and is
 * recorded in sync again. */
Test(failover, the_primary_partitioned_from_its_standby_keeps_the_key)
{
	uint64_t acked;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	cr_assert_eq(host_sh(&A, "ip link set %s down", A.ifname), 0);
	cr_assert(wait_record("out ", 5000), "recorded out of sync");
	a_alone_primary_for(TTL_MS * 2);
	acked = fo_stop(pub);
	cr_assert_eq(host_sh(&A, "ip link set %s up", A.ifname), 0);
	cr_assert(wait_record("in ", 10000), "in sync again");
	b_catches_up_with_acked(acked);
	row("primary partitioned from standby, not etcd", acked, true, -1);
}

/* The primary loses etcd but not its standby: its lease runs out at etcd,
 * but the standby hears it and does not take over; the primary goes on
 * acknowledging (the failsafe) and takes the key again when etcd is
 * back. */
Test(failover, the_primary_cut_from_etcd_alone_carries_on)
{
	uint64_t acked, before;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	atomic_store(&fw[0].cut, true);
	before = atomic_load(&lg->acked);
	a_alone_primary_for(TTL_MS * 2);
	cr_assert_gt(atomic_load(&lg->acked), before + 100,
		     "acknowledgements stopped: %lu then %lu",
		     (unsigned long)before,
		     (unsigned long)atomic_load(&lg->acked));
	atomic_store(&fw[0].cut, false);
	cr_assert(host_log_wait(&A, "taking the leader key again", 5000) ||
		  host_log_wait(&A, "holds the leader key", 100));
	a_alone_primary_for(TTL_MS);
	acked = fo_stop(pub);
	b_catches_up_with_acked(acked);
	row("primary partitioned from etcd, not standby", acked, true, -1);
}

/* Whether A's channel says it stands by (its role, not only its fence). */
static bool a_stands_by(void)
{
	struct sb_repl_view v;

	host_view(&A, "fo", &v);
	return v.flags & SHMBUS_REPL_STANDBY;
}

/*
 * The primary loses etcd, then its standby dies: with nobody to
 * acknowledge, its failsafe ends and it stands by.  Back in reach of
 * etcd, it does not take over by itself on its own "in" record (a record
 * etcd lost, restored from an older backup, would let two hosts be
 * primary at one epoch), says so, and `promote --force` makes it primary.
 */
Test(failover, a_primary_without_etcd_or_standby_takes_over_only_by_hand)
{
	struct shmbus_ctl_repl_reply r;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	fo_stop(pub);
	cr_assert(sync_record_is("in "), "recorded in sync");
	atomic_store(&fw[0].cut, true);
	usleep(300000);
	host_kill(&B, SIGKILL);
	/* Until A has stood by, not only closed its fence (which comes a
	 * few ms first): an etcd back in between would let it record its
	 * dead standby out of sync, and a primary that did may take over
	 * again by itself. */
	for (int i = 0; i < 3 * TTL_MS / 10 && !a_stands_by(); i++)
		usleep(10000);
	cr_assert(a_stands_by(), "no standby, no etcd: still primary");
	atomic_store(&fw[0].cut, false);
	/* Said once etcd lets its lease go and the peer has been silent for
	 * a term: about two terms here; five allowed for a loaded host
	 * (daemons under the sanitizers). */
	cr_assert(host_log_wait(&A, "it takes over only by hand", 5 * TTL_MS),
		  "not said");
	cr_assert_not(is_primary(&A));
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE,
			      &r), 0, "%s", r.text);
	cr_assert_geq(wait_for(is_primary, &A, TTL_MS), 0);
	row("standby killed while the primary lacks etcd", 300, false, -1);
}

/*
 * A switchover asked while etcd is down is refused before anything
 * closes (the new primary could not take the leader key): the primary
 * stays open and acknowledging, on the failsafe, and nothing changes
 * hands.
 */
Test(failover, a_switchover_without_etcd_changes_nothing)
{
	struct shmbus_ctl_repl_reply r;
	uint64_t before;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	etcd_kill();
	usleep(300000);
	cr_assert(is_primary(&A));
	cr_assert_neq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0,
		      "a switchover without etcd: %s", r.text);
	cr_assert(strstr(r.text, "etcd does not answer"), "%s", r.text);
	before = atomic_load(&lg->acked);
	for (int i = 0; i < TTL_MS / 10; i++) {
		cr_assert(is_primary(&A) && !is_primary(&B),
			  "the pair changed after a refused switchover");
		usleep(10000);
	}
	cr_assert_gt(atomic_load(&lg->acked), before + 50,
		     "acknowledgements stopped");
	etcd_start();
	row("switchover asked during an etcd outage", fo_stop(pub), false,
	    -1);
}

/*
 * The primary's daemon restarts while its host cannot reach etcd (the
 * standby can): it never takes the leader key, so its channels stay
 * closed, and it serves no standby; the standby, in sync and hearing no
 * primary, takes over.  The old primary, back in reach of etcd, stands
 * by.
 */
Test(failover, a_primary_restarted_out_of_etcds_reach_lets_its_standby_take_over)
{
	pid_t pub;
	int ms;

	pub = fo_start(FO_CHANS, extra, 300, false);
	fo_stop(pub);
	cr_assert(sync_record_is("in "), "recorded in sync");
	atomic_store(&fw[0].cut, true);
	host_kill(&A, SIGKILL);
	host_start(&A);
	ms = wait_for(is_primary, &B, 3 * TTL_MS);
	cr_assert_geq(ms, 0, "no primary: the standby heard a primary that "
		      "held no term");
	cr_assert(host_log_wait(&A, "holds no term of the leader key", 100) ||
		  host_log_wait(&B, "holds no term of the leader key", 100));
	atomic_store(&fw[0].cut, false);
	cr_assert_geq(wait_for(is_standby_linked, &A, 3 * TTL_MS), 0,
		      "the old primary does not stand by");
	cr_assert_not(is_primary(&A));
	row("primary restarted out of etcd's reach", 300, false, ms);
}

/* The standby loses both the primary and etcd: nothing changes hands,
 * the primary degrades after recording it, and the standby, which
 * cannot reach etcd, never promotes. */
Test(failover, a_standby_cut_from_etcd_and_primary_changes_nothing)
{
	uint64_t acked;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	atomic_store(&fw[1].cut, true);
	cr_assert_eq(host_sh(&B, "ip link set %s down", B.ifname), 0);
	cr_assert(wait_record("out ", 5000), "recorded out of sync");
	a_alone_primary_for(TTL_MS * 2);
	acked = fo_stop(pub);
	cr_assert_eq(host_sh(&B, "ip link set %s up", B.ifname), 0);
	atomic_store(&fw[1].cut, false);
	cr_assert(wait_record("in ", 10000), "in sync again");
	b_catches_up_with_acked(acked);
	row("standby partitioned from primary and etcd", acked, true, -1);
}

/* The standby is killed while the producer waits for its
 * acknowledgement: the wait ends (degraded or timed out, never a success
 * that was not earned), the primary records it out of sync and goes on;
 * the standby, restarted, catches up. */
Test(failover, the_standby_dies_during_a_synchronous_wait)
{
	uint64_t acked;
	pid_t pub;

	pub = fo_start(FO_CHANS, extra, 300, false);
	host_kill(&B, SIGKILL);
	cr_assert(wait_record("out ", 5000), "recorded out of sync");
	a_alone_primary_for(TTL_MS);
	acked = fo_stop(pub);
	host_start(&B);
	cr_assert(wait_record("in ", 10000), "in sync again");
	b_catches_up_with_acked(acked);
	a_alone_primary_for(200);
	row("standby killed during a synchronous wait", acked, true, -1);
}

/* A replication link that drops 10 % of the packets each way: TCP
 * retransmits, acknowledgements go on (slower), nobody is promoted, and
 * every acknowledged message reaches the standby. */
Test(failover, a_lossy_replication_link_loses_nothing)
{
	uint64_t acked;
	pid_t pub;

	char more[600];

	log_open();
	/* Retransmissions take 200 ms and more: the standby is not out of
	 * sync for that, nor is a sync waiter's outcome unknown. */
	lg->sync_ns = INT64_C(5000000000);
	snprintf(more, sizeof(more), "%ssync_timeout_ms = 5000\n", extra);
	pair_setup(FO_CHANS, more);
	cr_assert(host_log_wait(&A, "holds the leader key", 5000));
	pub = th_spawn(sync_publisher, NULL);
	wait_acked(100, 30000);
	cr_assert_eq(host_sh(&A, "nft add table inet sbfo && "
			     "nft add chain inet sbfo out "
			     "\"{ type filter hook output priority 0; }\" && "
			     "nft add rule inet sbfo out oifname %s "
			     "numgen random mod 100 \"<\" 10 drop && "
			     "nft add chain inet sbfo in "
			     "\"{ type filter hook input priority 0; }\" && "
			     "nft add rule inet sbfo in iifname %s "
			     "numgen random mod 100 \"<\" 10 drop",
			     A.ifname, A.ifname), 0, "nft");
	acked = atomic_load(&lg->acked);
	a_alone_primary_for(TTL_MS * 2);
	cr_assert_gt(atomic_load(&lg->acked), acked + 50,
		     "acknowledgements stopped: %lu then %lu",
		     (unsigned long)acked,
		     (unsigned long)atomic_load(&lg->acked));
	acked = fo_stop(pub);
	cr_assert_eq(host_sh(&A, "nft list table inet sbfo | grep -q drop && "
			     "nft delete table inet sbfo"), 0);
	b_catches_up_with_acked(acked);
	row("replication link dropping 10 % of packets", acked, true, -1);
}

/* The arbiter as it runs in production: a cluster of three.  One member
 * dies, its leader (the pair goes on through the election, nothing
 * changes hands), then the primary: the standby takes over through the
 * two members left. */
Test(failover, a_three_member_cluster_survives_a_member_and_fails_over)
{
	char ext[1024];
	uint64_t acked, before;
	pid_t pub;
	int ms, k;

	cluster_start();
	snprintf(ext, sizeof(ext),
		 "arbiter = etcd\netcd_endpoints = unix:%s-c0-{host}.sock,"
		 "unix:%s-c1-{host}.sock,unix:%s-c2-{host}.sock\n"
		 "lease_ttl_ms = %d\narbiter_prefix = /shmbus/c%d\n",
		 etcd_dir, etcd_dir, etcd_dir, TTL_MS, getpid());
	log_open();
	pair_setup(FO_CHANS_BIG, ext);
	watch_b();
	cr_assert(host_log_wait(&A, "holds the leader key", 5000));
	pub = th_spawn(sync_publisher, NULL);
	wait_acked(300, 30000);
	/* The cluster's leader dies: the two left elect another. */
	k = cluster_leader();
	cr_assert_geq(k, 0, "no etcd member says it leads");
	kill(member_pid[k], SIGKILL);
	waitpid(member_pid[k], NULL, 0);
	member_pid[k] = 0;
	before = atomic_load(&lg->acked);
	a_alone_primary_for(TTL_MS * 2);
	cr_assert_gt(atomic_load(&lg->acked), before + 100,
		     "acknowledgements stopped");
	/* Then the primary's host. */
	host_kill(&A, SIGKILL);
	kill(pub, SIGKILL);
	waitpid(pub, NULL, 0);
	acked = atomic_load(&lg->acked);
	ms = wait_for(is_primary, &B, TTL_MS + 3000);
	cr_assert_geq(ms, 0, "the standby did not take over");
	assert_b_has_acked(acked);
	cluster_stop();
	row("3-member etcd: its leader, then the primary die", acked, true,
	    ms);
}

/* ------------------------------------------------------------ disk full */

#define DF_CHANS \
	"[channel fo]\ncapacity = 16M\nmax_msg = 1K\n" \
	"replicate = standby_persisted\njournal = on\njournal_segment = 16M\n"

/* The standby's journal runs out of room (a 24 MiB file system, below
 * journal_min_free): it persists nothing, so the primary records it out
 * of sync before it acknowledges without it, and nobody is promoted.  The
 * file system grows: the standby's journal catches up and is recorded in
 * sync again, holding every acknowledged message. */
Test(failover, a_disk_full_on_the_standby_loses_nothing)
{
	uint64_t acked;
	pid_t pub;

	pub = fo_start(DF_CHANS, extra, 300, false);
	fo_stop(pub);
	/* B restarts on a small file system for its journal. */
	host_kill(&B, SIGTERM);
	snprintf(df_mnt, sizeof(df_mnt), "%s/jnl", B.dir);
	cr_assert_eq(mount("tmpfs", df_mnt, "tmpfs", 0, "size=24m"), 0,
		     "mount a 24 MiB tmpfs: %s", strerror(errno));
	host_start(&B);
	cr_assert(host_log_wait(&B, "below journal_min_free", 5000));
	atomic_store(&lg->stop, 0);
	pub = th_spawn(sync_publisher, NULL);
	cr_assert(wait_record("out ", 5000), "recorded out of sync");
	a_alone_primary_for(TTL_MS);
	acked = fo_stop(pub);
	/* busstat's LAGT counts at the channel's level: B applied every
	 * frame but persisted none of them for a term at least, so it has
	 * not had everything (standby_persisted) since then. */
	{
		shmbus_channel *ach = host_map(&A, "fo");
		struct shmbus_repl_info ri;

		cr_assert(ach);
		cr_assert_eq(shmbus_channel_replication(ach, &ri), 0);
		shmbus_channel_close(ach);
		cr_assert_gt(ri.lag_bytes, 0);
		cr_assert_geq(ri.lag_ns, (uint64_t)TTL_MS * 1000000,
			      "LAGT %.3f s: B has persisted nothing for %d ms",
			      ri.lag_ns / 1e9, TTL_MS);
	}
	/* Room again. */
	cr_assert_eq(mount("tmpfs", df_mnt, "tmpfs", MS_REMOUNT, "size=256m"),
		     0, "remount: %s", strerror(errno));
	cr_assert(wait_record("in ", 10000), "in sync again");
	b_catches_up_with_acked(acked);
	host_kill(&B, SIGKILL);
	umount2(df_mnt, MNT_DETACH);
	df_mnt[0] = 0;
	row("disk full on the standby's journal", acked, true, -1);
}
