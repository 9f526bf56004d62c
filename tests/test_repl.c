/* SPDX-License-Identifier: MIT */
/*
 * test_repl.c - replication between two shmbusd, each in its own network
 * namespace (repl_fixture.h): real daemons, real TCP over a veth pair,
 * real kills, links cut, loss, flipped bits.
 *
 * SHMBUS_REPL_MSGS sets the length of the long streams (default 1000000
 * messages per channel).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"
#include "../lib/journal.h"

/* A daemon's thread a test holds still (th_thread_hold()): let go
 * before the daemons are stopped, after a failed test too. */
static pid_t held = -1;

static void fini(void)
{
	th_thread_resume(held);
	pair_teardown();
}

TestSuite(repl, .fini = fini, .timeout = 120);

Test(repl, stream_of_mixed_sizes_ends_with_identical_rings)
{
	uint64_t n = th_env_count("SHMBUS_REPL_MSGS", 1000000);
	struct pubarg sp = { "sp", n, 0, 4096, false, false };
	struct pubarg m1 = { "mp", n / 2, 1, 4096, false, false };
	struct pubarg m2 = { "mp", n / 2, 2, 4096, false, false };
	pid_t p1, p2, p3;

	pair_setup(CHANS, "");
	p1 = th_spawn(pair_publisher, &sp);
	p2 = th_spawn(pair_publisher, &m1);
	p3 = th_spawn(pair_publisher, &m2);
	{
		int r1 = th_wait(p1);

		cr_assert_eq(r1, 0, "publisher sp: step %d", r1);
	}
	{
		int r2 = th_wait(p2), r3 = th_wait(p3);

		cr_assert(r2 == 0 && r3 == 0, "publishers mp: steps %d, %d",
			  r2, r3);
	}
	pair_wait_caught_up("sp", 0, 10000);
	pair_wait_caught_up("mp", 0, 10000);
	pair_assert_identical("sp");
	pair_assert_identical("mp");
}

Test(repl, a_peer_without_the_key_is_refused)
{
	struct shmbus_ctl_repl_reply r;
	FILE *f;

	pair_setup(CHANS, "");
	host_kill(&B, SIGKILL);
	/* Another key for B. */
	f = fopen(pair_key, "w");
	cr_assert(f);
	fputs("another key, long enough to be one", f);
	fclose(f);
	unlink(B.log);
	host_start(&B);
	/* B finds A's proof wrong first, and leaves; A logs the refusal. */
	cr_assert(host_log_wait(&B, "does not prove the key", 3000));
	cr_assert(host_log_wait(&A, "left during the key's proof", 3000));
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert(!host_log_wait(&B, "linked to primary", 300),
		  "a standby without the key was linked");
}

Test(repl, a_peer_with_another_geometry_is_refused)
{
	pair_setup(CHANS, "");
	host_kill(&B, SIGKILL);
	host_sh(NULL, "rm -rf %s", B.dir);
	host_config(&B, "standby", A.listen,
		    "[channel sp]\ncapacity = 2M\nmax_msg = 4K\n"
		    "replicate = applied\n"
		    "[channel mp]\ncapacity = 1M\nmax_msg = 4K\n"
		    "producers = multi\nreplicate = received\n", "");
	unlink(B.log);
	host_start(&B);
	cr_assert(host_log_wait(&A, "capacity 2097152, this host has 1048576",
				3000));
	cr_assert(host_log_wait(&B, "refused by the peer: channel sp: "
				"capacity", 3000));
	/* The other channel links. */
	cr_assert(host_log_wait(&B, "mp: linked to primary", 3000));
}

/* h's daemon killed (-9) `before` us into a stream that p1 (on sp) and
 * p2 (on mp) publish, and started again `down` us later; the publishers
 * succeed, and the standby ends whole. */
static void killed_while_publishing(struct host *h, pid_t p1, pid_t p2,
				    useconds_t before, useconds_t down)
{
	usleep(before);
	host_kill(h, SIGKILL);
	usleep(down);
	host_start(h);
	pair_assert_published("sp", th_wait(p1));
	pair_assert_published("mp", th_wait(p2));
	pair_assert_whole("sp", 10000);
	pair_assert_whole("mp", 10000);
}

/* kill -9 of the standby's daemon in the middle of a stream: restarted,
 * it goes on from the end of what it applied (an apply cut short is
 * rolled back), and ends identical, without a gap. */
Test(repl, standby_killed_mid_stream_catches_up)
{
	struct pubarg sp = { "sp", 300000, 0, 512, false, true };
	struct pubarg m1 = { "mp", 150000, 1, 512, false, true };
	pid_t p1, p2;

	pair_setup(CHANS, "sync_timeout_ms = 5000\n");
	p1 = th_spawn(pair_publisher, &sp);
	p2 = th_spawn(pair_publisher, &m1);
	killed_while_publishing(&B, p1, p2, 100000, 300000);
	cr_assert(pair_read_all(&B, "sp", UINT64_MAX) > 0);
}

/* kill -9 of the primary's daemon in the middle of a stream: its agent's
 * cursor goes on holding what the standby lacks in the ring while no
 * daemon runs (producers wait for it as for a slow subscriber), and the
 * restarted daemon, taking the standby to be in sync still, ships it: the
 * standby ends identical, without a gap. */
static void primary_killed(const char *extra)
{
	/* 4 MB/s each: the 1 MiB rings fill while no daemon runs. */
	struct paced sp = { "sp", 0, 500, 1500 }, mp = { "mp", 1, 500, 1500 };
	pid_t p1, p2;

	pair_setup(CHANS, extra);
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	cr_assert(host_log_wait(&A, "mp: standby in sync", 3000));
	p1 = th_spawn(pair_paced_publisher, &sp);
	p2 = th_spawn(pair_paced_publisher, &mp);
	killed_while_publishing(&A, p1, p2, 300000, 700000);
	cr_assert(!host_log_wait(&A, "gap", 0), "the primary logged a gap");
	cr_assert(host_log_wait(&A, "sp: the standby was in sync when the "
				"last shmbusd stopped", 0));
}

Test(repl, primary_killed_mid_stream_leaves_no_gap)
{
	primary_killed("sync_timeout_ms = 5000\n");
}

/* ... also where max_lag is less than what piled up meanwhile: the
 * standby is held to it once it has caught up. */
Test(repl, primary_killed_under_max_lag_leaves_no_gap)
{
	primary_killed("sync_timeout_ms = 5000\nmax_lag = 512K\n");
	cr_assert(!host_log_wait(&A, "lag over max_lag", 0));
}

/* kill -9 of the primary's daemon again and again under producers that
 * wait for every message (pub_sync at each), on both producer models and
 * a strict channel: every wait is answered 0 (the standby holds what it
 * acknowledged), and the standby ends whole. */
Test(repl, a_primary_killed_again_and_again_loses_nothing)
{
	struct pubarg sp = { "sp", 60000, 0, 512, true, false };
	struct pubarg m1 = { "mp", 30000, 1, 512, true, false };
	struct pubarg m2 = { "mp", 200000, 2, 4096, false, false };
	struct pubarg st = { "st", 30000, 0, 512, true, false };
	struct pubarg *pa[] = { &sp, &m1, &m2, &st };
	pid_t p[4];

	pair_setup(STRICT_CHANS, "sync_timeout_ms = 5000\n");
	cr_assert(host_log_wait(&A, "st: standby in sync", 3000));
	for (int i = 0; i < 4; i++)
		p[i] = th_spawn(pair_publisher, pa[i]);
	for (int i = 0; i < 5; i++) {
		usleep(150000 + (unsigned)(i * 97) % 300 * 1000);
		host_kill(&A, SIGKILL);
		usleep(100000 + (unsigned)(i * 61) % 500 * 1000);
		host_start(&A);
	}
	for (int i = 0; i < 4; i++)
		pair_assert_published(pa[i]->chan, th_wait(p[i]));
	pair_assert_whole("sp", 20000);
	pair_assert_whole("mp", 20000);
	pair_assert_whole("st", 20000);
	cr_assert(!host_log_wait(&A, "gap", 0), "the primary logged a gap");
}

/* Until A says chan's standby is in sync. */
static void wait_in_sync(const char *chan)
{
	for (int t = 0;; t += 10) {
		struct sb_repl_view v;

		host_view(&A, chan, &v);
		if (!(v.flags & SHMBUS_REPL_OUT_OF_SYNC))
			break;
		cr_assert_lt(t, 5000, "%s: not in sync", chan);
		usleep(10000);
	}
}

/* A pair set up with `extra`, sp's standby in sync after several rings'
 * worth of messages (positions far above a max_lag of half a ring; the
 * publisher may outrun the standby by more meanwhile). */
static void in_sync_after_a_stream(const char *extra)
{
	struct pubarg sp = { "sp", 40000, 0, 128, false, true };

	pair_setup(CHANS, extra);
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &sp)));
	pair_wait_caught_up("sp", 0, 5000);
	wait_in_sync("sp");
}

/* A primary restarted with max_lag set: a standby that had everything
 * stays in sync, and is said to have caught up once linked. */
Test(repl, a_restarted_primary_keeps_its_standby_in_sync_under_max_lag)
{
	in_sync_after_a_stream("sync_timeout_ms = 5000\nmax_lag = 524288\n");
	host_kill(&A, SIGKILL);
	unlink(A.log);
	host_start(&A);
	cr_assert(host_log_wait(&A, "sp: the standby was in sync when the "
				"last shmbusd stopped", 3000));
	cr_assert(host_log_wait(&A, "(caught up: no longer provisionally)",
				3000));
	cr_assert(!host_log_wait(&A, "sp: standby out of sync", 500),
		  "in sync at the restart, then out of sync at once");
}

/* A standby taken to be in sync when the primary's daemon restarts, but
 * whose ring was made again meanwhile (its host rebooted): its first link
 * shows it lacks what it had acknowledged, and it is in sync only
 * provisionally (not recorded so at an arbiter) until it has caught up. */
Test(repl, a_standby_that_lost_its_ring_is_in_sync_only_provisionally)
{
	in_sync_after_a_stream("sync_timeout_ms = 5000\n");
	host_kill(&A, SIGKILL);
	host_kill(&B, SIGKILL);
	host_sh(NULL, "rm -rf %s/* %s/.[!.]*", B.dir, B.dir);
	host_start(&B);
	unlink(A.log);
	host_start(&A);
	cr_assert(host_log_wait(&A, "sp: the standby was in sync when the "
				"last shmbusd stopped", 3000));
	cr_assert(host_log_wait(&A, "sp: the standby lost records it had "
				"acknowledged", 3000));
	cr_assert(host_log_wait(&A, "sp: standby in sync at", 3000));
	cr_assert(!host_log_wait(&A, "sp: standby out of sync", 0));
}

/* How many kept replication cursors chan has on h. */
static unsigned repl_cursors(const struct host *h, const char *chan)
{
	shmbus_channel *ch = host_map(h, chan);
	unsigned n = 0;

	cr_assert(ch, "%c: %s", h->tag, chan);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++)
		n += owner_state(__atomic_load_n(&ch->subs[i].owner,
						 __ATOMIC_ACQUIRE)) ==
		     SHMBUS_SLOT_REPL;
	shmbus_channel_close(ch);
	return n;
}

/* A pair whose standby was in sync, both daemons stopped (A cleanly):
 * the agent's cursors outlive A's daemon.  Then A starts again as a
 * primary that serves `chans`. */
static void a_again_with(const char *chans)
{
	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	host_kill(&B, SIGKILL);
	host_kill(&A, SIGTERM);
	cr_assert_eq(repl_cursors(&A, "sp"), 1);
	cr_assert_eq(repl_cursors(&A, "mp"), 1);
	host_config(&A, "primary", B.listen, chans, "");
	host_start(&A);
}

/* The agent's cursor holds nobody where no agent will move it: a channel
 * no longer replicated, a host that stands by. */
Test(repl, a_kept_cursor_is_released_where_no_agent_runs)
{
	struct pubarg sp = { "sp", 40000, 0, 128, false, false };

	/* sp no longer replicated: its producers lap the old cursor's
	 * position (40000 messages are several rings). */
	a_again_with("[channel sp]\ncapacity = 1M\nmax_msg = 4K\n"
		     "[channel mp]\ncapacity = 1M\nmax_msg = 4K\n"
		     "producers = multi\nreplicate = received\n");
	cr_assert_eq(repl_cursors(&A, "sp"), 0);
	cr_assert_eq(repl_cursors(&A, "mp"), 1);
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &sp)));
	/* A standby has none. */
	host_kill(&A, SIGTERM);
	host_config(&A, "standby", B.listen, CHANS, "");
	host_start(&A);
	cr_assert(host_log_wait(&A, "replication: standby", 3000));
	cr_assert_eq(repl_cursors(&A, "mp"), 0);
	cr_assert_eq(repl_cursors(&A, "sp"), 0);
}

/* A replicated channel dropped from the config is adopted as one made at
 * run time: neither replicated nor journaled, its producers are held by
 * nothing that replication left (its kept cursor, a fence). */
Test(repl, a_channel_dropped_from_the_config_lets_go_of_its_cursor)
{
	struct pubarg sp = { "sp", 40000, 0, 128, false, false };

	a_again_with("[channel mp]\ncapacity = 1M\nmax_msg = 4K\n"
		     "producers = multi\nreplicate = received\n");
	cr_assert(host_log_wait(&A, "sp: adopted", 3000));
	cr_assert_eq(repl_cursors(&A, "sp"), 0);
	cr_assert(host_log_wait(&A, "sp: no longer replicated", 0));
	/* Several rings, with nobody to wait for. */
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &sp)));
}

/* What shared memory says of the agent's cursor is checked: one that
 * names an impossible position is replaced by a new one, a second slot
 * that claims to be a replication cursor is freed, and replication goes
 * on without a gap. */
Test(repl, a_corrupt_kept_cursor_is_replaced)
{
	struct pubarg sp = { "sp", 40000, 0, 128, false, false };
	shmbus_channel *ch;
	uint32_t at = SHMBUS_MAX_SLOTS;

	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	host_kill(&A, SIGTERM);
	ch = host_map(&A, "sp");
	cr_assert(ch);
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++)
		if (owner_state(ch->subs[i].owner) == SHMBUS_SLOT_REPL)
			at = i;
	cr_assert_lt(at, SHMBUS_MAX_SLOTS - 1);
	/* Past head, and a second one with a pid. */
	ch->subs[at].pos = ch->pl->head + 8;
	ch->subs[SHMBUS_MAX_SLOTS - 1].pos = 0;
	ch->subs[SHMBUS_MAX_SLOTS - 1].owner =
		(uint64_t)12345 << 32 | SHMBUS_SLOT_REPL;
	shmbus_channel_close(ch);
	host_start(&A);
	cr_assert(host_log_wait(&A, "sp: the replication cursor left in the "
				"ring names an impossible position", 3000));
	cr_assert_eq(repl_cursors(&A, "sp"), 1);
	/* mp's was left alone: taken over. */
	cr_assert(host_log_wait(&A, "mp: the standby was in sync when the "
				"last shmbusd stopped", 0));
	/* The new cursor starts out of sync: in sync again, it holds. */
	wait_in_sync("sp");
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &sp)));
	pair_assert_whole("sp", 10000);
}

/* The link goes down for two seconds; the standby falls out of sync (the
 * primary says so), and once the link is back it catches up from where
 * it was, the ring still holding that. */
Test(repl, link_down_for_seconds_then_up)
{
	struct paced p = { "sp", 0, 10, 3500 };
	struct sb_repl_view v;
	pid_t pid;

	if (!pair_netns_possible())
		cr_skip("needs root: network namespaces");
	pair_setup(CHANS, "");
	pid = th_spawn(pair_paced_publisher, &p);
	usleep(500000);
	cr_assert_eq(host_sh(NULL, "ip -n %s link set %s down", A.ns,
			     A.ifname), 0);
	cr_assert(host_log_wait(&A, "sp: standby out of sync", 3000));
	host_view(&A, "sp", &v);
	cr_assert(v.flags & SHMBUS_REPL_OUT_OF_SYNC);
	usleep(1500000);
	cr_assert_eq(host_sh(NULL, "ip -n %s link set %s up", A.ns,
			     A.ifname), 0);
	cr_assert_eq(th_wait(pid), 0);
	pair_assert_whole("sp", 15000);
	cr_assert(host_log_wait(&A, "sp: standby in sync", 5000));
}

/* 10 % of the packets from A to B are dropped: TCP resends, and the
 * rings end identical. */
Test(repl, loss_on_the_link)
{
	struct pubarg sp = { "sp", 100000, 0, 512, false, false };
	struct pubarg m1 = { "mp", 100000, 1, 512, false, false };
	pid_t p1, p2;

	if (!pair_netns_possible())
		cr_skip("needs root: network namespaces");
	pair_setup(CHANS, "sync_timeout_ms = 5000\n");
	cr_assert_eq(host_sh(&B, "nft add table inet sbloss && "
			     "nft add chain inet sbloss in "
			     "\"{ type filter hook input priority 0; }\" && "
			     "nft add rule inet sbloss in ip saddr %s "
			     "numgen random mod 100 \"<\" 10 drop", A.ip), 0,
		     "nft");
	p1 = th_spawn(pair_publisher, &sp);
	p2 = th_spawn(pair_publisher, &m1);
	pair_assert_published("sp", th_wait(p1));
	pair_assert_published("mp", th_wait(p2));
	pair_wait_caught_up("sp", 0, 20000);
	pair_wait_caught_up("mp", 0, 20000);
	cr_assert_eq(host_sh(&B, "nft list table inet sbloss | grep -q drop && "
			     "nft delete table inet sbloss"), 0);
	pair_assert_identical("sp");
	pair_assert_identical("mp");
	pair_assert_no_gap("sp");
}

/* A proxy between the standby and the primary that flips one bit in a
 * chunk of the primary's stream now and then (FLIPS of them), then
 * passes everything intact. */
#define FLIPS 40

struct proxy {
	int port;		/* listens on 127.0.0.1 in B's namespace */
	char target[64];	/* A's listen address */
};

static int flips_left = FLIPS;

struct pipe2 {
	int from, to;
	bool flip;
};

static void *pump(void *arg)
{
	struct pipe2 *p = arg;
	uint8_t buf[65536];
	uint64_t x = (uint64_t)p->from * 0x9e3779b97f4a7c15ull + 1;

	for (;;) {
		ssize_t n = read(p->from, buf, sizeof(buf));

		if (n <= 0)
			break;
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		if (p->flip && n > 0 && x % 8 == 0 &&
		    __atomic_sub_fetch(&flips_left, 1, __ATOMIC_RELAXED) >= 0)
			buf[(x >> 8) % (uint64_t)n] ^= (uint8_t)(1u << (x >> 40) % 8);
		if (write(p->to, buf, (size_t)n) != n)
			break;
	}
	shutdown(p->to, SHUT_RDWR);
	shutdown(p->from, SHUT_RDWR);
	return NULL;
}

static int proxy_main(void *arg)
{
	const struct proxy *px = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET,
				  .sin_port = htons((uint16_t)px->port),
				  .sin_addr.s_addr = htonl(0x7f000001) };
	struct sockaddr_in ta = { .sin_family = AF_INET };
	char host[64];
	int one = 1, lfd = socket(AF_INET, SOCK_STREAM, 0), tport;

	signal(SIGPIPE, SIG_IGN);
	if (sscanf(px->target, "%63[^:]:%d", host, &tport) != 2 ||
	    inet_pton(AF_INET, host, &ta.sin_addr) != 1)
		return 2;
	ta.sin_port = htons((uint16_t)tport);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 8))
		return 3;
	for (;;) {
		int c = accept(lfd, NULL, NULL), s;
		pthread_t t1, t2;
		struct pipe2 *up, *down;

		if (c < 0)
			return 4;
		s = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&ta, sizeof(ta))) {
			close(c);
			close(s);
			continue;
		}
		up = malloc(sizeof(*up));
		down = malloc(sizeof(*down));
		*up = (struct pipe2){ c, s, false };
		*down = (struct pipe2){ s, c, true };
		pthread_create(&t1, NULL, pump, up);
		pthread_create(&t2, NULL, pump, down);
		pthread_detach(t1);
		pthread_detach(t2);
	}
}

Test(repl, flipped_bits_are_caught_and_never_applied)
{
	struct pubarg sp = { "sp", 200000, 0, 4096, false, true };
	struct pubarg m1 = { "mp", 100000, 1, 4096, false, true };
	struct proxy px = { .port = 7600 };
	char peer[64];
	struct sb_repl_view vs, vm;
	pid_t proxy, p1, p2;

	pair_setup(CHANS, "sync_timeout_ms = 1000\n");
	/* B again, through the proxy, before anything is published. */
	host_kill(&B, SIGKILL);
	snprintf(px.target, sizeof(px.target), "%s", A.listen);
	if (!pair_netns)
		px.port = 21000 + getpid() % 20000;
	proxy = host_spawn(&B, proxy_main, &px);
	snprintf(peer, sizeof(peer), "127.0.0.1:%d", px.port);
	host_config(&B, "standby", peer, CHANS, "sync_timeout_ms = 1000\n");
	usleep(100000);
	host_start(&B);
	cr_assert(host_log_wait(&B, "sp: linked to primary 127.0.0.1", 5000));
	p1 = th_spawn(pair_publisher, &sp);
	p2 = th_spawn(pair_publisher, &m1);
	pair_assert_published("sp", th_wait(p1));
	pair_assert_published("mp", th_wait(p2));
	pair_wait_caught_up("sp", 0, 30000);
	pair_wait_caught_up("mp", 0, 30000);
	kill(proxy, SIGKILL);
	th_wait(proxy);
	host_view(&B, "sp", &vs);
	host_view(&B, "mp", &vm);
	cr_assert_gt(vs.bad + vm.bad, 0, "no frame was refused: did the "
		     "proxy flip anything?");
	cr_assert(host_log_wait(&B, "CRC mismatch", 100));
	/* Nothing damaged was applied. */
	pair_assert_identical("sp");
	pair_assert_identical("mp");
	pair_read_all(&B, "sp", UINT64_MAX);
	pair_read_all(&B, "mp", UINT64_MAX);
}

/* The standby is away while the primary writes three rings' worth: when
 * it comes back, the primary no longer holds its end; it goes on from
 * the oldest record the primary holds, and the gap is counted and logged
 * on both hosts. */
Test(repl, a_lapped_standby_counts_the_gap)
{
	struct pubarg sp = { "sp", 40000, 0, 128, false, true };
	struct sb_repl_view va, vb;
	uint64_t head;
	pid_t p1;

	pair_setup(CHANS, "");
	/* In sync first (B says it is linked before A's agent has taken the
	 * link): only a standby in sync falls out of it. */
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	host_kill(&B, SIGKILL);
	cr_assert(host_log_wait(&A, "sp: standby out of sync", 3000));
	p1 = th_spawn(pair_publisher, &sp);
	pair_assert_published("sp", th_wait(p1));
	host_view(&A, "sp", &va);
	cr_assert_gt(va.head, 3u << 20);
	host_start(&B);
	head = pair_wait_caught_up("sp", 0, 10000);
	host_view(&B, "sp", &vb);
	cr_assert_eq(vb.gaps, 1);
	cr_assert_gt(vb.gap_bytes, 0);
	host_view(&A, "sp", &va);
	cr_assert_eq(va.gaps, 1);
	cr_assert(host_log_wait(&A, "sp: gap:", 100));
	cr_assert(host_log_wait(&B, "sp: gap:", 100));
	pair_assert_identical_range("sp", head - (1u << 19), head);
}

/* Hostile peers without the key, from the standby's host: garbage, a
 * frame header that announces more than any frame, a handshake that
 * stops halfway, one that trickles a byte at a time.  The primary refuses
 * each (and says so), reads nothing of theirs past the key's proof, and
 * goes on replicating. */
static int hostile(void *arg)
{
	const char *addr = arg;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	char host[64];
	int port;
	uint8_t junk[1024];

	if (sscanf(addr, "%63[^:]:%d", host, &port) != 2 ||
	    inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return 2;
	sa.sin_port = htons((uint16_t)port);
	signal(SIGPIPE, SIG_IGN);
	for (int kind = 0; kind < 4; kind++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		struct {
			uint32_t magic;
			uint16_t version, type;
			uint32_t len, crc;
			uint64_t epoch, chan, pos;
		} h = { 0x31525342, 1, 1, 0, 0, 0, 0, 0 };

		if (connect(s, (struct sockaddr *)&sa, sizeof(sa)))
			return 3;
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (uint8_t)(i * 37 + kind);
		switch (kind) {
		case 0:	/* garbage */
			(void)!write(s, junk, sizeof(junk));
			break;
		case 1:	/* a header announcing 1 GiB */
			h.len = 1u << 30;
			(void)!write(s, &h, sizeof(h));
			(void)!write(s, junk, sizeof(junk));
			break;
		case 2:	/* half a handshake frame, then silence */
			h.len = 32;
			(void)!write(s, &h, sizeof(h));
			(void)!write(s, junk, 16);
			break;
		case 3:	/* a byte at a time */
			for (int i = 0; i < 30; i++) {
				if (write(s, junk + i, 1) != 1)
					break;
				usleep(100000);
			}
			break;
		}
		/* The primary closes it (within its handshake deadline). */
		{
			struct pollfd p = { .fd = s, .events = POLLIN };
			char c;

			if (poll(&p, 1, 5000) != 1)
				return 10 + kind;
			while (read(s, &c, 1) > 0)
				;
		}
		close(s);
	}
	return 0;
}

/* How many lines of h's log hold `what`. */
static int log_count(const struct host *h, const char *what)
{
	char line[1024];
	FILE *f = fopen(h->log, "r");
	int n = 0;

	cr_assert(f, "%s", h->log);
	while (fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	fclose(f);
	return n;
}

/* A producer that writes a record no standby would apply (a type that
 * does not exist, with its lap's tag) over its own claim, and dies. */
static int plant_damage(void *arg)
{
	shmbus_bus *bus = NULL;
	shmbus_channel *ch = host_open(&A, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	shmbus_channel *m = host_map(&A, "sp");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t p;
	void *buf;

	if (!pub || !m)
		return 1;
	p = __atomic_load_n(&m->pl->head, __ATOMIC_ACQUIRE);
	if (shmbus_claim(pub, 64, &buf))
		return 2;
	*(uint64_t *)arg = p;
	__atomic_store_n(&rec_at(m, p)->commit, commit_word(m, p, 5, 64),
			 __ATOMIC_RELEASE);
	_exit(0);	/* the claim is left as it is */
}

/* Messages published behind the damage: none is acknowledged, not even
 * as degraded (no subscriber can read past the damage). */
static int publish_behind(void *arg)
{
	shmbus_bus *bus = NULL;
	shmbus_channel *ch = host_open(&A, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint8_t msg[100] = { 7 };

	(void)arg;
	if (!pub)
		return 1;
	for (int i = 0; i < 2000; i++)
		if (shmbus_publish(pub, msg, sizeof(msg)))
			return 2;
	return shmbus_pub_sync(pub, 300 * 1000000LL) == -ETIMEDOUT ? 0 : 3;
}

/* The primary ships no record its standby would refuse: it says where
 * the ring is damaged and holds the standby out of sync, instead of
 * shipping the record, having it refused and linking again for ever. */
Test(repl, a_damaged_record_is_not_shipped_and_refused_for_ever)
{
	struct pubarg before = { "sp", 2000, 0, 256, false, false };
	uint64_t *at = mmap(NULL, 8, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct sb_repl_view va, vb;
	int links;

	cr_assert(at != MAP_FAILED);
	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &before)));
	cr_assert_eq(th_wait(th_spawn(plant_damage, at)), 0);
	cr_assert_eq(th_wait(th_spawn(publish_behind, NULL)), 0,
		     "a message behind the damage was acknowledged");
	cr_assert(host_log_wait(&A, "sp: the ring is damaged: record at", 3000));
	cr_assert(host_log_wait(&A, "type 5", 100));
	cr_assert(host_log_wait(&A, "sp: standby out of sync (the ring is "
				"damaged", 3000));
	links = log_count(&B, "sp: linked to primary");
	usleep(1500 * 1000);
	cr_assert_eq(log_count(&B, "sp: linked to primary"), links,
		     "the standby linked again and again");
	cr_assert_eq(log_count(&B, "refused"), 0);
	/* Everything before the damage is on the standby, nothing from it
	 * on. */
	host_view(&B, "sp", &vb);
	cr_assert_eq(vb.head, *at, "the standby ends at %" PRIu64 ", the "
		     "damage is at %" PRIu64, vb.head, *at);
	pair_assert_identical_range("sp", *at - (1u << 16), *at);
	host_view(&A, "sp", &va);
	cr_assert(va.flags & SHMBUS_REPL_OUT_OF_SYNC);
	cr_assert_geq(va.bad, 1);
	munmap(at, 8);
}

/* A head written more than a lap ahead, on a block channel (the agent's
 * cursor holds its producers a lap behind what it has walked) or with no
 * record indexed in the lap below it (producers that lap an overwrite
 * channel index their records as they go): a damaged header, not a lap.
 * The primary says so and waits; once the header is right again,
 * replication goes on with no gap. */
static void head_a_lap_ahead(const char *chans, const char *chan)
{
	struct pubarg before = { chan, 2000, 0, 256, false, false };
	struct pubarg after = { chan, 2000, 1, 256, false, false };
	char what[64];
	shmbus_channel *m;
	uint64_t head;

	pair_setup(chans, "");
	snprintf(what, sizeof(what), "%s: standby in sync", chan);
	cr_assert(host_log_wait(&A, what, 3000));
	pair_assert_published(chan,
			      th_wait(th_spawn(pair_publisher, &before)));
	m = host_map(&A, chan);
	cr_assert(m);
	head = __atomic_load_n(&m->pl->head, __ATOMIC_ACQUIRE);
	__atomic_store_n(&m->pl->head, head + 8 * m->cap, __ATOMIC_RELEASE);
	snprintf(what, sizeof(what), "%s: the ring is damaged: head", chan);
	cr_assert(host_log_wait(&A, what, 3000));
	__atomic_store_n(&m->pl->head, head, __ATOMIC_RELEASE);
	snprintf(what, sizeof(what), "%s: the ring is no longer damaged", chan);
	cr_assert(host_log_wait(&A, what, 3000));
	pair_assert_published(chan, th_wait(th_spawn(pair_publisher, &after)));
	pair_wait_caught_up(chan, head + 1, 10000);
	pair_assert_no_gap(chan);
	cr_assert_not(host_log_wait(&A, "lapped", 10));
	pair_assert_identical(chan);
	shmbus_channel_close(m);
}

Test(repl, a_head_a_lap_ahead_on_a_block_channel_is_no_lap)
{
	head_a_lap_ahead(CHANS, "sp");
}

Test(repl, a_head_a_lap_ahead_with_nothing_indexed_is_no_lap)
{
	head_a_lap_ahead("[channel ow]\ncapacity = 1M\nmax_msg = 4K\n"
			 "policy = overwrite\nreplicate = applied\n", "ow");
}

Test(repl, hostile_peers_are_refused_and_replication_goes_on)
{
	struct pubarg sp = { "sp", 20000, 0, 256, false, false };
	pid_t pid;

	pair_setup(CHANS, "");
	pid = host_spawn(&B, hostile, A.listen);
	cr_assert_eq(th_wait(pid), 0, "the primary did not close a hostile "
		     "connection");
	cr_assert(host_log_wait(&A, "refused: bad magic", 100));
	pid = th_spawn(pair_publisher, &sp);
	cr_assert_eq(th_wait(pid), 0);
	pair_wait_caught_up("sp", 0, 10000);
	pair_assert_identical("sp");
}

/* busstat on both hosts: the table, -c, --json and --prometheus say what
 * each host is for each replicated channel. */
static void busstat_has(const struct host *h, const char *args,
			const char *const *want)
{
	const char *bin = getenv("BUSSTAT");
	char cmd[512], out[1 << 16];
	size_t n;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "%s -d %s %s", bin && *bin ? bin :
		 "build/tools/busstat", h->dir, args);
	p = popen(cmd, "r");
	cr_assert(p);
	n = fread(out, 1, sizeof(out) - 1, p);
	out[n] = 0;
	cr_assert_eq(pclose(p), 0, "%s failed: %s", cmd, out);
	for (; *want; want++)
		cr_assert(strstr(out, *want), "%s: no '%s' in:\n%s", cmd, *want,
			  out);
}

Test(repl, busstat_shows_both_sides)
{
	struct pubarg sp = { "sp", 5000, 0, 256, false, false };
	static const char *const a_table[] = { "REPLICATED", "primary",
		"applied" "           up   in", NULL };
	static const char *const b_table[] = { "standby",
		"received" "          up", NULL };
	static const char *const a_json[] = {
		"\"replication\":{\"role\":\"primary\",\"epoch\":1,"
		"\"level\":\"applied\",\"linked\":true,\"in_sync\":true",
		"\"lag_bytes\":0", "\"gaps\":0", NULL };
	static const char *const b_json[] = {
		"\"replication\":{\"role\":\"standby\"", "\"in_sync\":null",
		"\"fenced\":true", NULL };
	static const char *const a_prom[] = {
		"shmbus_repl_epoch{channel=\"sp\"} 1",
		"shmbus_repl_in_sync{channel=\"sp\"} 1",
		"shmbus_repl_frames_total{channel=\"sp\"}", NULL };
	static const char *const a_detail[] = {
		"replication: primary at epoch 1, level applied, link up, "
		"standby in sync", NULL };
	pid_t pid;

	pair_setup(CHANS, "");
	pid = th_spawn(pair_publisher, &sp);
	cr_assert_eq(th_wait(pid), 0);
	pair_wait_caught_up("sp", 0, 5000);
	cr_assert(host_log_wait(&A, "mp: standby in sync", 3000));
	busstat_has(&A, "", a_table);
	busstat_has(&B, "", b_table);
	busstat_has(&A, "--json", a_json);
	busstat_has(&B, "--json", b_json);
	busstat_has(&A, "--prometheus", a_prom);
	busstat_has(&A, "-c sp", a_detail);
}

/* Reads segment files of the journal of channel `chan` on h: the bytes
 * after the header page of the segment at `base`. */
static uint8_t *seg_data(const struct host *h, const char *chan,
			 uint64_t base, size_t len)
{
	char dir[256], path[512];
	uint8_t *buf = malloc(len);
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/jnl/%s", h->dir, chan);
	cr_assert_eq(sb_jseg_path(path, sizeof(path), dir, base), 0);
	f = fopen(path, "rb");
	cr_assert(f, "%s", path);
	cr_assert_eq(fseek(f, SHMBUS_JSEG_HDR, SEEK_SET), 0);
	cr_assert_eq(fread(buf, 1, len, f), len);
	fclose(f);
	return buf;
}

/* A journaled replicated channel: the standby journals what it applies,
 * the same sealed bytes at the same positions as the primary's journal. */
Test(repl, the_standby_journals_what_it_applies)
{
	struct pubarg sp = { "js", 60000, 0, 512, false, false };
	struct sb_jnl_view va, vb;
	shmbus_channel *a, *b;
	uint64_t head;

	pair_setup("[channel js]\ncapacity = 64K\nmax_msg = 1K\n"
		   "replicate = applied\njournal = on\n"
		   "journal_segment = 256K\n", "");
	cr_assert_eq(th_wait(th_spawn(pair_publisher, &sp)), 0);
	head = pair_wait_caught_up("js", 0, 10000);
	a = host_map(&A, "js");
	b = host_map(&B, "js");
	cr_assert(a && b);
	for (int i = 0; i < 1000; i++) {
		sb_jnl_read(a, &va);
		sb_jnl_read(b, &vb);
		if (va.persisted == head && vb.persisted == head)
			break;
		usleep(10000);
	}
	cr_assert_eq(vb.persisted, head, "the standby's journal: %lu of %lu",
		     (unsigned long)vb.persisted, (unsigned long)head);
	cr_assert_eq(va.persisted, head);
	for (uint64_t base = 0; base < head; base += 256 << 10) {
		size_t len = head - base < (256u << 10) ? head - base
							: 256u << 10;
		uint8_t *x = seg_data(&A, "js", base, len);
		uint8_t *y = seg_data(&B, "js", base, len);

		cr_assert_eq(memcmp(x, y, len), 0, "segment %lu differs",
			     (unsigned long)base);
		free(x);
		free(y);
	}
	shmbus_channel_close(a);
	shmbus_channel_close(b);
}

/* B killed while A publishes `away` on js, started again, then A
 * publishes `back`: the head both reach. */
static uint64_t standby_away(struct pubarg *away, struct pubarg *back)
{
	host_kill(&B, SIGKILL);
	cr_assert(host_log_wait(&A, "js: standby out of sync", 3000));
	pair_assert_published("js", th_wait(th_spawn(pair_publisher, away)));
	host_start(&B);
	pair_wait_caught_up("js", 0, 10000);
	pair_assert_published("js", th_wait(th_spawn(pair_publisher, back)));
	return pair_wait_caught_up("js", 0, 10000);
}

/* B's js, once its journal has persisted everything up to head. */
static shmbus_channel *standby_journaled(uint64_t head,
					 struct sb_jnl_view *vb)
{
	shmbus_channel *b = host_map(&B, "js");

	cr_assert(b);
	for (int i = 0; i < 1000; i++) {
		sb_jnl_read(b, vb);
		if (vb->persisted == head)
			break;
		usleep(10000);
	}
	cr_assert_eq(vb->persisted, head, "the standby's journal: %lu of %lu",
		     (unsigned long)vb->persisted, (unsigned long)head);
	return b;
}

/* A journaled block channel's standby lapped while it was away: its ring
 * restarts more than a lap ahead, its agent moving head with no cursor
 * of the journal's holding it.  The standby's journal records the gap
 * (no damage), and journals and applies what follows. */
Test(repl, a_lapped_standbys_journal_records_the_gap_and_goes_on)
{
	struct pubarg away = { "js", 40000, 0, 128, false, true };
	struct pubarg back = { "js", 2000, 1, 128, false, true };
	struct sb_jnl_view vb;
	shmbus_channel *b;
	uint64_t head;

	pair_setup("[channel js]\ncapacity = 64K\nmax_msg = 1K\n"
		   "replicate = applied\njournal = on\n"
		   "journal_segment = 256K\n", "");
	cr_assert(host_log_wait(&A, "js: standby in sync", 3000));
	head = standby_away(&away, &back);
	b = standby_journaled(head, &vb);
	cr_assert_eq(vb.gaps, 1);
	cr_assert_not(host_log_wait(&B, "the ring is damaged", 10));
	shmbus_channel_close(b);
}

/* A subscriber of B's js from its head, kept up through B's restart,
 * until it has message `until`: every message from seq 0 on is delivered
 * in order or counted lost, and some are lost.  Writes a byte to `ready`
 * once it is open.  Exits 0, or with the check that failed. */
struct standby_reader {
	uint64_t until;
	int ready;
};

static int standby_reader(void *arg)
{
	const struct standby_reader *sr = arg;
	uint64_t got = 0, lost = 0, last = UINT64_MAX;
	shmbus_channel *b = host_map(&B, "js");
	shmbus_sub *sub = b ? shmbus_sub_open(b, NULL) : NULL;
	uint8_t buf[2048];

	if (!sub || write(sr->ready, "", 1) != 1)
		return 2;
	for (uint64_t t0 = th_now_ns(); last != sr->until;) {
		struct shmbus_msg m;
		ssize_t len = shmbus_read(sub, buf, sizeof(buf), &m);

		if (len == -EAGAIN) {
			if (th_now_ns() - t0 > UINT64_C(30000000000))
				return 3;
			usleep(100);
			continue;
		}
		if (len < 0 || (last == UINT64_MAX ? m.seq != 0
						   : m.seq <= last)) {
			fprintf(stderr, "standby_reader: read %zd, seq %lu "
				"after %lu\n", len, (unsigned long)m.seq,
				(unsigned long)last);
			return 4;
		}
		if (m.lost != (last == UINT64_MAX ? 0 : m.seq - last - 1)) {
			fprintf(stderr, "standby_reader: lost %lu before seq "
				"%lu after %lu\n", (unsigned long)m.lost,
				(unsigned long)m.seq, (unsigned long)last);
			return 5;
		}
		lost += m.lost;
		last = m.seq;
		got++;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(b);
	return got + lost == sr->until + 1 && lost > 0 ? 0 : 6;
}

/* A journaled standby away while the primary wrote less than two laps:
 * the standby goes on from the primary's oldest record, less than a lap
 * past its own end, and writes GAP records over the positions between in
 * its ring.  A subscriber of the standby that reads across them is told
 * what was lost, and so is a replay of the standby's journal, which
 * copies them (padding alone is what a dead producer's claim leaves,
 * whose sequence numbers no message had). */
Test(repl, a_standbys_gap_of_less_than_a_lap_is_counted_lost)
{
	struct pubarg first = { "js", 100, 0, 100, false, true };
	/* Records of about 96 bytes: 1000 of them are one and a half
	 * laps of the 64 KiB ring. */
	struct pubarg away = { "js", 1000, 1, 100, false, true };
	struct pubarg back = { "js", 100, 2, 100, false, true };
	uint64_t head, got = 0, lost = 0, last = UINT64_MAX;
	struct standby_reader sr = { .until = 1199 };
	struct sb_jnl_view vb;
	shmbus_replay *r;
	pid_t reader;
	int fds[2], rc;
	char c;
	shmbus_channel *b;
	uint8_t buf[2048];

	pair_setup("[channel js]\ncapacity = 64K\nmax_msg = 1K\n"
		   "replicate = applied\njournal = on\n"
		   "journal_segment = 256K\n", "");
	cr_assert_eq(pipe(fds), 0);
	sr.ready = fds[1];
	reader = th_spawn(standby_reader, &sr);
	cr_assert_eq(read(fds[0], &c, 1), 1, "the standby's subscriber did "
		     "not open");
	close(fds[0]);
	close(fds[1]);
	pair_assert_published("js", th_wait(th_spawn(pair_publisher, &first)));
	pair_wait_caught_up("js", 0, 10000);
	head = standby_away(&away, &back);
	cr_assert(host_log_wait(&B, "js: gap: the primary no longer holds",
				10));
	rc = th_wait(reader);
	cr_assert_eq(rc, 0, "the standby's subscriber: exit %d", rc);
	b = standby_journaled(head, &vb);
	r = shmbus_replay_open(b, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "replay: %s", strerror(errno));
	for (;;) {
		struct shmbus_msg m;
		ssize_t len = shmbus_replay_read(r, buf, sizeof(buf), &m);

		if (len == -EAGAIN)
			break;
		cr_assert_geq(len, 0, "read: %zd", len);
		cr_assert(last == UINT64_MAX || m.seq > last);
		cr_assert_eq(m.lost, last == UINT64_MAX ? 0 : m.seq - last - 1,
			     "lost %lu before seq %lu after %lu",
			     (unsigned long)m.lost, (unsigned long)m.seq,
			     (unsigned long)last);
		lost += m.lost;
		last = m.seq;
		got++;
	}
	shmbus_replay_close(r);
	cr_assert_eq(last, 1199);
	cr_assert_gt(lost, 0);
	cr_assert_eq(got + lost, 1200, "%lu delivered, %lu lost",
		     (unsigned long)got, (unsigned long)lost);
	shmbus_channel_close(b);
}

/* The record at pos in h's journal of chan (padding before it skipped):
 * checked, its seq returned; *next gets the position after it. */
static uint64_t journal_rec(const struct host *h, const char *chan,
			    uint64_t pos, uint64_t *next)
{
	struct sb_jgeom g;
	struct sb_jrec r;
	char why[128];

	cr_assert_eq(sb_jgeom_make(&g, chan, 64 << 10, 64 << 10, 1024,
				   sb_channel_flags(SHMBUS_BLOCK,
						    SHMBUS_SINGLE_PRODUCER),
				   why, sizeof(why)), 0);
	for (int k = 0; k < 2; k++) {
		uint64_t base = pos & ~(uint64_t)0xffff, seq = UINT64_MAX;
		size_t len = 16 + 1024;
		uint8_t *b;

		if ((64u << 10) - (pos - base) < len)
			len = (64u << 10) - (pos - base);
		b = seg_data(h, chan, base, (pos - base) + len);
		cr_assert_eq(sb_jrec_check(&g, pos, b + (pos - base), len,
					   &seq, &r, why, sizeof(why)), 1,
			     "host %c, position %lu: %s", h->tag,
			     (unsigned long)pos, why);
		free(b);
		if (r.type == SHMBUS_REC_MSG) {
			*next = pos + r.size;
			return r.seq;
		}
		pos += r.size;
	}
	cr_assert_fail("no message at %lu", (unsigned long)pos);
	return 0;
}

/* Records longer than a frame (256 KiB): a message of 300 KiB, and the
 * padding of a batch's wrap, 474 KiB.  Each is shipped on its own and
 * applied (the padding as its word alone), and the standby's subscriber
 * reads the batch whole. */
/* A standby that lags by more than max_lag bytes is out of sync at once,
 * long before sync_timeout_ms, however far the primary has walked the
 * ring; in sync again once it has caught up. */
Test(repl, a_lag_over_max_lag_is_out_of_sync)
{
	static uint8_t msg[1024];
	struct sb_repl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;

	pair_setup("[channel ml]\ncapacity = 16M\nmax_msg = 1K\n"
		   "replicate = received\n",
		   "max_lag = 262144\nsync_timeout_ms = 30000\n");
	cr_assert(host_log_wait(&A, "ml: standby in sync", 5000));
	ch = host_open(&A, &bus, "ml", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	host_pause(&B);
	/* 12 MiB: more than the sockets' buffers hold. */
	for (uint64_t i = 0; i < 12 * 1024; i++) {
		th_msg_fill(msg, sizeof(msg), 0, i);
		cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
	}
	cr_assert(host_log_wait(&A, "lag over max_lag", 5000));
	host_view(&A, "ml", &v);
	cr_assert(v.flags & SHMBUS_REPL_OUT_OF_SYNC);
	kill(B.pid, SIGCONT);
	pair_wait_caught_up("ml", 0, 10000);
	pair_assert_identical("ml");
	for (int i = 0; i < 500; i++) {
		host_view(&A, "ml", &v);
		if (!(v.flags & SHMBUS_REPL_OUT_OF_SYNC))
			break;
		usleep(10000);
	}
	cr_assert(!(v.flags & SHMBUS_REPL_OUT_OF_SYNC));
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A claim held open (zero copy, not committed yet) is not lag: with a
 * max_lag smaller than the claim, the standby that holds everything
 * committed stays in sync. */
Test(repl, an_open_claim_is_not_lag)
{
	static uint8_t msg[64];
	struct sb_repl_view v;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	void *buf;

	pair_setup("[channel oc]\ncapacity = 1M\nmax_msg = 64K\n"
		   "replicate = received\n",
		   "max_lag = 16384\nsync_timeout_ms = 30000\n");
	cr_assert(host_log_wait(&A, "oc: standby in sync", 5000));
	ch = host_open(&A, &bus, "oc", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	for (uint64_t i = 0; i < 100; i++) {
		th_msg_fill(msg, sizeof(msg), 0, i);
		cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(shmbus_pub_sync(p, 5000000000LL), 0);
	cr_assert_eq(shmbus_claim(p, 60 << 10, &buf), 0);
	usleep(1500000);
	host_view(&A, "oc", &v);
	cr_assert_not(v.flags & SHMBUS_REPL_OUT_OF_SYNC);
	cr_assert_not(host_log_wait(&A, "lag over max_lag", 0));
	th_msg_fill(buf, 60 << 10, 0, 100);
	cr_assert_eq(shmbus_commit(p), 0);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* While the standby is in sync, the primary walks at most two frames
 * (here 512 KiB) past what it shipped; a message longer than that is
 * walked, and shipped, alone, behind smaller ones and before others. */
Test(repl, a_message_longer_than_the_walk_ahead_is_shipped)
{
	static uint8_t msg[700 << 10], got[700 << 10];
	const size_t lens[] = { 100, 700 << 10, 64 << 10, 700 << 10, 32 };
	shmbus_channel *ch, *b;
	shmbus_bus *bus;
	shmbus_sub *sub;
	shmbus_pub *p;

	pair_setup("[channel bw]\ncapacity = 4M\nmax_msg = 1M\n"
		   "replicate = received\n", "");
	cr_assert(host_log_wait(&A, "bw: standby in sync", 5000));
	ch = host_open(&A, &bus, "bw", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, &(struct shmbus_pub_attr){
					.timeout_ns = 5000000000 });
	cr_assert(p);
	for (uint64_t i = 0; i < 5; i++) {
		int rc;

		th_msg_fill(msg, lens[i], 0, i);
		cr_assert_eq(shmbus_publish(p, msg, lens[i]), 0);
		rc = shmbus_pub_sync(p, 5000000000);
		cr_assert_eq(rc, 0, "message %llu (%zu bytes): %d",
			     (unsigned long long)i, lens[i], rc);
	}
	pair_wait_caught_up("bw", 0, 5000);
	pair_assert_identical("bw");
	b = host_map(&B, "bw");
	cr_assert(b);
	sub = ring_reader(b);
	cr_assert(sub);
	for (uint64_t i = 0; i < 5; i++) {
		uint64_t s;
		uint32_t id;
		ssize_t n = shmbus_read(sub, got, sizeof(got), NULL);

		cr_assert_eq(n, (ssize_t)lens[i], "message %llu: %zd",
			     (unsigned long long)i, n);
		cr_assert_eq(th_msg_check(got, (size_t)n, &id, &s), 0);
		cr_assert_eq(s, i);
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(b);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(repl, records_longer_than_a_frame_are_shipped)
{
	static uint8_t big[300 << 10], mid[60 << 10];
	struct iovec v[8];
	shmbus_channel *ch, *b;
	shmbus_bus *bus;
	shmbus_sub *sub;
	shmbus_pub *p;
	uint64_t seq = 0;
	int rc;

	pair_setup("[channel bg]\ncapacity = 1M\nmax_msg = 400K\n"
		   "replicate = applied\n", "");
	cr_assert(host_log_wait(&A, "bg: standby in sync", 5000));
	ch = host_open(&A, &bus, "bg", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, &(struct shmbus_pub_attr){
					.timeout_ns = 5000000000 });
	cr_assert(p);
	th_msg_fill(big, sizeof(big), 0, seq++);
	cr_assert_eq(shmbus_publish(p, big, sizeof(big)), 0);
	rc = shmbus_pub_sync(p, 5000000000);
	cr_assert_eq(rc, 0, "a 300 KiB message: %d", rc);
	th_msg_fill(big, 250 << 10, 0, seq++);
	cr_assert_eq(shmbus_publish(p, big, 250 << 10), 0);
	/* 550 KiB in: 8 x 60 KiB do not fit the 474 KiB left in the lap. */
	for (int i = 0; i < 8; i++) {
		uint8_t *m = malloc(sizeof(mid));

		cr_assert(m);
		th_msg_fill(m, sizeof(mid), 0, seq++);
		v[i] = (struct iovec){ m, sizeof(mid) };
	}
	rc = shmbus_publish_batch(p, v, 8);
	cr_assert_eq(rc, 8, "the batch: %d", rc);
	cr_assert_eq(th_head(ch) & ((1u << 20) - 1), 8 * (16 + sizeof(mid)),
		     "the batch did not wrap");
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0, "past the padding");
	for (int i = 0; i < 8; i++)
		free(v[i].iov_base);
	pair_wait_caught_up("bg", 0, 5000);
	b = host_map(&B, "bg");
	cr_assert(b);
	/* What the ring still holds: the batch, which overwrote the rest. */
	sub = ring_reader(b);
	cr_assert(sub);
	for (uint64_t i = seq - 8; i < seq; i++) {
		static uint8_t got[400 << 10];
		struct shmbus_msg m;
		uint64_t s;
		uint32_t id;
		ssize_t n = shmbus_read(sub, got, sizeof(got), &m);

		cr_assert_gt(n, 0, "message %lu: %zd", (unsigned long)i, n);
		cr_assert_eq(th_msg_check(got, (size_t)n, &id, &s), 0);
		cr_assert_eq(s, i);
	}
	cr_assert_eq(shmbus_read(sub, mid, sizeof(mid), NULL), -EAGAIN);
	shmbus_sub_close(sub);
	shmbus_channel_close(b);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* both_persisted: shmbus_pub_sync() returns 0 only once the record is
 * in both hosts' journals; with the standby gone it degrades to this
 * host's journal and says so. */
Test(repl, both_persisted_waits_for_both_journals)
{
	struct sb_jnl_view va, vb;
	shmbus_channel *ch, *bmap;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint8_t msg[100];
	uint64_t next;

	pair_setup("[channel bp]\ncapacity = 64K\nmax_msg = 1K\n"
		   "replicate = both_persisted\njournal = on\n"
		   "journal_segment = 64K\n", "");
	ch = host_open(&A, &bus, "bp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	bmap = host_map(&B, "bp");
	cr_assert(bmap);
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	for (uint64_t i = 0; i < 300; i++) {
		uint64_t pos = th_head(ch);

		th_msg_fill(msg, sizeof(msg), 1, i);
		cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
		cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0, "message %lu",
			     (unsigned long)i);
		/* When it returns, not later: in both journals' files. */
		cr_assert_eq(journal_rec(&A, "bp", pos, &next), i);
		cr_assert_eq(journal_rec(&B, "bp", pos, &next), i);
		sb_jnl_read(ch, &va);
		sb_jnl_read(bmap, &vb);
		cr_assert_geq(va.persisted, next, "synced here");
		cr_assert_geq(vb.persisted, next, "synced on the standby");
	}
	shmbus_channel_close(bmap);
	host_kill(&B, SIGKILL);
	{
		uint64_t pos = th_head(ch);

		th_msg_fill(msg, sizeof(msg), 1, 300);
		cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
		cr_assert_eq(shmbus_pub_sync(p, 10000000000),
			     SHMBUS_SYNC_DEGRADED);
		cr_assert_eq(journal_rec(&A, "bp", pos, &next), 300,
			     "degraded to this host's journal, which has it");
	}
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A 100-byte message of seq i from p, the position its record ends at. */
static uint64_t publish_100(shmbus_channel *ch, shmbus_pub *p, uint64_t i)
{
	uint8_t msg[100];
	uint64_t end = th_head(ch) + SHMBUS_REC_HDR + 104; /* align8(100) */

	th_msg_fill(msg, sizeof(msg), 1, i);
	cr_assert_eq(shmbus_publish(p, msg, sizeof(msg)), 0);
	cr_assert_eq(th_head(ch), end, "head %lu, expected %lu",
		     (unsigned long)th_head(ch), (unsigned long)end);
	return end;
}

/* Waits (at most 3 s) until *w holds `want`. */
static bool word_becomes(const uint64_t *w, uint64_t want)
{
	for (int i = 0; i < 300; i++) {
		if (__atomic_load_n(w, __ATOMIC_RELAXED) == want)
			return true;
		usleep(10000);
	}
	return false;
}

/* standby_persisted: the standby's persisted position written forward in
 * its ring's data file, while its journal is held still, is not what the
 * standby acknowledges: the primary's sync waiter gets no 0 for a record
 * the standby's journal does not have, and the word is set back to the
 * journal's.  So are the primary's watermark and its copy of the
 * standby's position, written forward there; once the journal goes on,
 * the record is acknowledged. */
Test(repl, a_persisted_position_written_forward_is_not_acknowledged)
{
	struct shmbus_daemon_area *da, *db;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t end, mark;
	pid_t tid;
	int rc;

	pair_setup("[channel sj]\ncapacity = 64K\nmax_msg = 1K\n"
		   "replicate = standby_persisted\njournal = on\n"
		   "journal_segment = 64K\n", "sync_timeout_ms = 20000\n");
	cr_assert(host_log_wait(&A, "sj: standby in sync", 3000));
	ch = host_open(&A, &bus, "sj", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	mark = publish_100(ch, p, 0);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	da = th_map_daemon_area(A.dir, "sj");
	db = th_map_daemon_area(B.dir, "sj");
	cr_assert(da && db);
	cr_assert(word_becomes(&db->persisted_pos, mark));
	cr_assert(word_becomes(&da->replicated_pos, mark));
	usleep(100000);	/* B's journal idle, in its wait */

	held = tid = th_thread_hold(B.pid, "sb-journal");
	cr_assert_gt(tid, 0, "B's journal thread not held");
	end = mark + SHMBUS_REC_HDR + 104;
	__atomic_store_n(&db->persisted_pos, end, __ATOMIC_RELAXED);
	cr_assert_eq(publish_100(ch, p, 1), end);
	rc = shmbus_pub_sync(p, 2000000000);
	cr_assert(rc == -ETIMEDOUT || rc == SHMBUS_SYNC_DEGRADED,
		  "acknowledged at standby_persisted (%d) while the standby's "
		  "journal has %lu of %lu", rc, (unsigned long)mark,
		  (unsigned long)end);
	cr_assert(word_becomes(&db->persisted_pos, mark),
		  "B's persisted position stays %lu, its journal's is %lu",
		  (unsigned long)__atomic_load_n(&db->persisted_pos,
						 __ATOMIC_RELAXED),
		  (unsigned long)mark);
	cr_assert_eq(__atomic_load_n(&da->replicated_pos, __ATOMIC_RELAXED),
		     mark);

	/* On the primary: the watermark and the standby's position. */
	__atomic_store_n(&da->standby_persisted_pos, end, __ATOMIC_RELAXED);
	__atomic_store_n(&da->replicated_pos, end, __ATOMIC_RELEASE);
	cr_assert(word_becomes(&da->replicated_pos, mark),
		  "A's watermark stays %lu, acknowledged is %lu",
		  (unsigned long)__atomic_load_n(&da->replicated_pos,
						 __ATOMIC_RELAXED),
		  (unsigned long)mark);
	cr_assert(word_becomes(&da->standby_persisted_pos, mark),
		  "A's copy of the standby's persisted position stays %lu",
		  (unsigned long)__atomic_load_n(&da->standby_persisted_pos,
						 __ATOMIC_RELAXED));
	rc = shmbus_pub_sync(p, 500000000);
	cr_assert(rc == -ETIMEDOUT || rc == SHMBUS_SYNC_DEGRADED, "%d", rc);

	th_thread_resume(tid);
	held = -1;
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), 0);
	cr_assert(word_becomes(&db->persisted_pos, end));
	cr_assert(word_becomes(&da->replicated_pos, end));
	th_unmap_daemon_area(da);
	th_unmap_daemon_area(db);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* both_persisted degraded to this host's journal (the standby gone): the
 * journal's persisted position written forward in the data file, while
 * the journal is held still, raises no watermark; the sync waiter is
 * told nothing for a record the journal does not have. */
Test(repl, a_degraded_watermark_is_not_raised_from_a_forged_journal_position)
{
	struct shmbus_daemon_area *da;
	shmbus_channel *ch;
	shmbus_bus *bus;
	shmbus_pub *p;
	uint64_t end, mark;
	pid_t tid;
	int rc;

	pair_setup("[channel bp]\ncapacity = 64K\nmax_msg = 1K\n"
		   "replicate = both_persisted\njournal = on\n"
		   "journal_segment = 64K\n", "");
	ch = host_open(&A, &bus, "bp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch, "%s", strerror(errno));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	host_kill(&B, SIGKILL);
	cr_assert(host_log_wait(&A, "bp: standby out of sync", 5000));
	mark = publish_100(ch, p, 0);
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), SHMBUS_SYNC_DEGRADED);
	da = th_map_daemon_area(A.dir, "bp");
	cr_assert(da);
	cr_assert(word_becomes(&da->persisted_pos, mark));
	usleep(100000);	/* the journal idle, in its wait */

	held = tid = th_thread_hold(A.pid, "sb-journal");
	cr_assert_gt(tid, 0, "A's journal thread not held");
	end = mark + SHMBUS_REC_HDR + 104;
	__atomic_store_n(&da->persisted_pos, end, __ATOMIC_RELAXED);
	cr_assert_eq(publish_100(ch, p, 1), end);
	rc = shmbus_pub_sync(p, 2000000000);
	cr_assert_eq(rc, -ETIMEDOUT, "the sync waiter got %d for a record "
		     "the journal does not have (watermark %lu, journal %lu)",
		     rc, (unsigned long)__atomic_load_n(&da->replicated_pos,
							 __ATOMIC_RELAXED),
		     (unsigned long)mark);
	cr_assert(word_becomes(&da->persisted_pos, mark),
		  "the persisted position stays %lu, the journal's is %lu",
		  (unsigned long)__atomic_load_n(&da->persisted_pos,
						 __ATOMIC_RELAXED),
		  (unsigned long)mark);
	th_thread_resume(tid);
	held = -1;
	cr_assert_eq(shmbus_pub_sync(p, 5000000000), SHMBUS_SYNC_DEGRADED);
	cr_assert(word_becomes(&da->persisted_pos, end));
	th_unmap_daemon_area(da);
	shmbus_pub_close(p);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* A record committed with a sequence number no producer handed out (past
 * the channel's next) by a process that maps the ring: the primary says
 * the ring is damaged there and ships nothing from it; once the number
 * is right again, the standby gets every record, no gap, the same bytes
 * (shipped, it would stand on the standby where the primary's ring holds
 * the true number, and every record after it would "go back"). */
static int plant_future_seq(void *arg)
{
	shmbus_bus *bus = NULL;
	shmbus_channel *ch = host_open(&A, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	shmbus_channel *m = host_map(&A, "sp");
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, NULL) : NULL;
	uint64_t *at = arg, p;
	uint8_t msg[100] = { 9 };
	void *buf;

	if (!pub || !m)
		return 1;
	p = __atomic_load_n(&m->pl->head, __ATOMIC_ACQUIRE);
	if (shmbus_claim(pub, 64, &buf))
		return 2;
	memset(buf, 1, 64);
	at[0] = p;
	at[1] = rec_at(m, p)->seq;
	rec_at(m, p)->seq = at[1] + (UINT64_C(1) << 40);
	if (shmbus_commit(pub))
		return 3;
	for (int i = 0; i < 100; i++)
		if (shmbus_publish(pub, msg, sizeof(msg)))
			return 4;
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

Test(repl, a_sequence_number_from_the_future_is_not_shipped)
{
	struct pubarg before = { "sp", 2000, 0, 256, false, false };
	uint64_t *at = mmap(NULL, 16, PROT_READ | PROT_WRITE,
			    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct sb_repl_view vb;
	shmbus_channel *m;

	cr_assert(at != MAP_FAILED);
	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	pair_assert_published("sp", th_wait(th_spawn(pair_publisher, &before)));
	cr_assert_eq(th_wait(th_spawn(plant_future_seq, at)), 0);
	cr_assert(host_log_wait(&A, "sp: the ring is damaged: record at", 3000));
	cr_assert(host_log_wait(&A, "the channel's next is", 100));
	host_view(&B, "sp", &vb);
	cr_assert_eq(vb.head, at[0], "the standby ends at %" PRIu64 ", the "
		     "damage is at %" PRIu64, vb.head, at[0]);
	m = host_map(&A, "sp");
	cr_assert(m);
	rec_at(m, at[0])->seq = at[1];
	cr_assert(host_log_wait(&A, "sp: the ring is no longer damaged", 3000));
	pair_assert_whole("sp", 10000);
	shmbus_channel_close(m);
	munmap(at, 16);
}
