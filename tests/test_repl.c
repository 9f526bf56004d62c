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

#define CHANS \
	"[channel sp]\ncapacity = 1M\nmax_msg = 4K\nreplicate = applied\n" \
	"[channel mp]\ncapacity = 1M\nmax_msg = 4K\nproducers = multi\n" \
	"replicate = received\n"

static void fini(void)
{
	pair_teardown();
}

/* A publisher on A: n self-checking messages of mixed sizes (24..max),
 * producer id `id`, then a pub_sync.  Returns 0, or the step that
 * failed. */
struct pubarg {
	const char *chan;
	uint64_t n;
	uint32_t id, max;
	bool sync_each;		/* pub_sync after every message */
	bool degraded_ok;	/* the last pub_sync may find the standby out
				 * of sync */
};

static int publisher(void *arg)
{
	const struct pubarg *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 10000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[4096];
	uint64_t x = 0x9e3779b97f4a7c15ull * (p->id + 1);
	int rc;

	if (!pub)
		return 2;
	for (uint64_t i = 0; i < p->n; i++) {
		size_t len;

		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		/* Mostly small, some up to max. */
		len = TH_MSG_MIN + (x % 8 == 0 ? x % (p->max - TH_MSG_MIN)
					       : x % 100);
		th_msg_fill(msg, len, p->id, i);
		if (shmbus_publish(pub, msg, len))
			return 3;
		if (p->sync_each && shmbus_pub_sync(pub, 5000000000LL) != 0)
			return 4;
	}
	rc = shmbus_pub_sync(pub, 10000000000LL);
	if (rc == SHMBUS_SYNC_DEGRADED && p->degraded_ok)
		rc = 0;
	if (rc)
		return rc < 0 ? 10 - rc : 5;
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* Reads the whole channel on h from its oldest record: every message
 * intact and in order per producer; returns how many. */
static uint64_t read_all_last(const struct host *h, const char *chan,
			      uint64_t until, uint64_t last[4]);

static uint64_t read_all(const struct host *h, const char *chan,
			 uint64_t until)
{
	uint64_t last[4];

	return read_all_last(h, chan, until, last);
}

/* read_all(), and the last sequence number seen of each producer
 * (UINT64_MAX: none). */
static uint64_t read_all_last(const struct host *h, const char *chan,
			      uint64_t until, uint64_t last[4])
{
	struct shmbus_sub_attr sa;
	shmbus_channel *ch = host_map(h, chan);
	shmbus_sub *sub;
	uint64_t next[4] = { 0 }, n = 0;
	bool have[4] = { false };
	uint8_t buf[4096];
	struct shmbus_msg info;

	cr_assert(ch);
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	sub = shmbus_sub_open(ch, &sa);
	cr_assert(sub);
	/* From the oldest record the ring holds, whoever else reads. */
	sb_sub_seek(sub, sb_ring_oldest(ch));
	for (;;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);
		uint32_t id;
		uint64_t seq;

		if (r == -EAGAIN)
			break;
		cr_assert(r >= 0, "read: %zd", r);
		cr_assert_eq(th_msg_check(buf, (size_t)r, &id, &seq), 0,
			     "a damaged message at %llu",
			     (unsigned long long)info.pos);
		cr_assert(id < 4);
		/* The ring may no longer hold a producer's first message. */
		if (!have[id])
			next[id] = seq;
		have[id] = true;
		cr_assert_eq(seq, next[id], "producer %u: %llu after %llu", id,
			     (unsigned long long)seq,
			     (unsigned long long)next[id]);
		next[id]++;
		n++;
		if (info.pos + 16 >= until)
			break;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	for (int i = 0; i < 4; i++)
		last[i] = have[i] ? next[i] - 1 : UINT64_MAX;
	return n;
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
	p1 = th_spawn(publisher, &sp);
	p2 = th_spawn(publisher, &m1);
	p3 = th_spawn(publisher, &m2);
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

/* A pub_sync at `applied` returns only when B's ring holds the message:
 * B's head is past it the moment the call returns. */
Test(repl, pub_sync_applied_means_the_standby_ring_holds_it)
{
	shmbus_bus *bus;
	shmbus_channel *ch, *b;
	shmbus_pub *pub;
	uint8_t msg[64];

	pair_setup(CHANS, "");
	ch = host_open(&A, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	b = host_map(&B, "sp");
	cr_assert(b);
	for (int i = 0; i < 2000; i++) {
		struct sb_repl_view va, vb;

		th_msg_fill(msg, sizeof(msg), 0, (uint64_t)i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
		cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
		sb_repl_read(ch, &va);
		sb_repl_read(b, &vb);
		cr_assert_geq(vb.head, (uint64_t)(i + 1) * 80,
			      "message %d acknowledged, B's head %llu", i,
			      (unsigned long long)vb.head);
		cr_assert_geq(va.applied, (uint64_t)(i + 1) * 80);
	}
	shmbus_channel_close(b);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	cr_assert_eq(read_all(&B, "sp", UINT64_MAX), 2000);
	{
		struct shmbus_ctl_repl_reply r;

		cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		cr_assert(strstr(r.text, "primary at epoch 1") &&
			  strstr(r.text, "sp: link up, standby in sync, lag 0"),
			  "%s", r.text);
		cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
		cr_assert(strstr(r.text, "standby at epoch 1") &&
			  strstr(r.text, "sp: link up, holds 160000"),
			  "%s", r.text);
	}
}

Test(repl, the_standby_refuses_producers_and_serves_subscribers)
{
	shmbus_bus *bus, *bus2;
	shmbus_channel *ch, *sch;
	shmbus_sub *sub;

	pair_setup(CHANS, "");
	ch = host_open(&B, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	if (ch) {
		errno = 0;
		cr_assert_null(shmbus_pub_open(ch, NULL));
		cr_assert_eq(errno, EROFS, "errno %d", errno);
		shmbus_channel_close(ch);
	} else {
		cr_assert_eq(errno, EROFS, "open to publish: errno %d", errno);
	}
	/* Direct mapping: the fence, not only the daemon, refuses. */
	ch = host_map(&B, "mp");
	cr_assert(ch);
	errno = 0;
	cr_assert_null(shmbus_pub_open(ch, NULL));
	cr_assert_eq(errno, EROFS);
	shmbus_channel_close(ch);
	sch = host_open(&B, &bus2, "sp", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(sch);
	sub = shmbus_sub_open(sch, NULL);
	cr_assert(sub);
	shmbus_sub_close(sub);
	shmbus_channel_close(sch);
	shmbus_disconnect(bus);
	shmbus_disconnect(bus2);
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

/* A publisher paced to `rate` messages per 10 ms, for `ms` milliseconds,
 * fixed 64-byte messages; counts in *done (shared memory not needed: the
 * test reads the rings). */
struct paced {
	const char *chan;
	uint32_t id;
	int rate, ms;
};

static int paced_publisher(void *arg)
{
	const struct paced *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 10000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[64];
	uint64_t seq = 0;

	if (!pub)
		return 2;
	for (int t = 0; t < p->ms; t += 10) {
		for (int i = 0; i < p->rate; i++) {
			th_msg_fill(msg, sizeof(msg), p->id, seq++);
			if (shmbus_publish(pub, msg, sizeof(msg)))
				return 3;
		}
		usleep(10000);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

static void assert_no_gap(const char *chan)
{
	struct sb_repl_view v;

	host_view(&B, chan, &v);
	cr_assert_eq(v.gaps, 0, "%s: %llu gaps", chan,
		     (unsigned long long)v.gaps);
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
	p1 = th_spawn(publisher, &sp);
	p2 = th_spawn(publisher, &m1);
	usleep(100000);
	host_kill(&B, SIGKILL);
	usleep(300000);
	host_start(&B);
	cr_assert_eq(th_wait(p1), 0);
	cr_assert_eq(th_wait(p2), 0);
	pair_wait_caught_up("sp", 0, 10000);
	pair_wait_caught_up("mp", 0, 10000);
	pair_assert_identical("sp");
	pair_assert_identical("mp");
	assert_no_gap("sp");
	assert_no_gap("mp");
	cr_assert(read_all(&B, "sp", UINT64_MAX) > 0);
}

/* The link goes down for two seconds; the standby falls out of sync (the
 * primary says so), and once the link is back it catches up from where
 * it was, the ring still holding that. */
Test(repl, link_down_for_seconds_then_up)
{
	struct paced p = { "sp", 0, 10, 3500 };
	struct sb_repl_view v;
	pid_t pid;

	if (!pair_netns)
		cr_skip("needs root: network namespaces");
	pair_setup(CHANS, "");
	pid = th_spawn(paced_publisher, &p);
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
	pair_wait_caught_up("sp", 0, 15000);
	pair_assert_identical("sp");
	assert_no_gap("sp");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 5000));
}

/* 10 % of the packets from A to B are dropped: TCP resends, and the
 * rings end identical. */
Test(repl, loss_on_the_link)
{
	struct pubarg sp = { "sp", 100000, 0, 512, false, false };
	struct pubarg m1 = { "mp", 100000, 1, 512, false, false };
	pid_t p1, p2;

	if (!pair_netns)
		cr_skip("needs root: network namespaces");
	pair_setup(CHANS, "sync_timeout_ms = 5000\n");
	cr_assert_eq(host_sh(&B, "nft add table inet sbloss && "
			     "nft add chain inet sbloss in "
			     "\"{ type filter hook input priority 0; }\" && "
			     "nft add rule inet sbloss in ip saddr %s "
			     "numgen random mod 100 \"<\" 10 drop", A.ip), 0,
		     "nft");
	p1 = th_spawn(publisher, &sp);
	p2 = th_spawn(publisher, &m1);
	cr_assert_eq(th_wait(p1), 0);
	cr_assert_eq(th_wait(p2), 0);
	pair_wait_caught_up("sp", 0, 20000);
	pair_wait_caught_up("mp", 0, 20000);
	cr_assert_eq(host_sh(&B, "nft list table inet sbloss | grep -q drop && "
			     "nft delete table inet sbloss"), 0);
	pair_assert_identical("sp");
	pair_assert_identical("mp");
	assert_no_gap("sp");
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
	p1 = th_spawn(publisher, &sp);
	p2 = th_spawn(publisher, &m1);
	cr_assert_eq(th_wait(p1), 0);
	cr_assert_eq(th_wait(p2), 0);
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
	read_all(&B, "sp", UINT64_MAX);
	read_all(&B, "mp", UINT64_MAX);
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
	host_kill(&B, SIGKILL);
	cr_assert(host_log_wait(&A, "sp: standby out of sync", 3000));
	p1 = th_spawn(publisher, &sp);
	cr_assert_eq(th_wait(p1), 0);
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

/* SIGSTOP, and wait until the kernel says the process is stopped. */
static void stop_host(const struct host *h)
{
	char path[64], st[512];

	kill(h->pid, SIGSTOP);
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)h->pid);
	for (int i = 0; i < 1000; i++) {
		FILE *f = fopen(path, "r");
		char *p = NULL;

		if (f && fgets(st, sizeof(st), f))
			p = strrchr(st, ')');
		if (f)
			fclose(f);
		if (p && p[1] == ' ' && p[2] == 'T')
			return;
		usleep(1000);
	}
	cr_assert_fail("%c did not stop", h->tag);
}

/* What the producers of a switchover saw, in memory shared with them. */
struct tally {
	uint64_t acked[4];	/* messages pub_sync acknowledged */
	int told[4];		/* 1: publish said -EROFS; 2: pub_sync did */
	int bad[4];		/* another answer */
};

static struct tally *tally;

struct syncpub {
	const char *chan;
	uint32_t id;
};

static int sync_publisher(void *arg)
{
	const struct syncpub *p = arg;
	struct shmbus_pub_attr pa = { .timeout_ns = 5000000000LL };
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(&A, &bus, p->chan, SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
	uint8_t msg[48];

	if (!pub)
		return 2;
	for (uint64_t i = 0;; i++) {
		int rc;

		th_msg_fill(msg, sizeof(msg), p->id, i);
		rc = shmbus_publish(pub, msg, sizeof(msg));
		if (rc == -EROFS) {
			tally->told[p->id] = 1;
			break;
		}
		if (rc) {
			tally->bad[p->id] = 100 - rc;
			break;
		}
		rc = shmbus_pub_sync(pub, 5000000000LL);
		if (rc == -EROFS) {
			tally->told[p->id] = 2;
			break;
		}
		if (rc) {
			tally->bad[p->id] = 200 - rc;
			break;
		}
		__atomic_store_n(&tally->acked[p->id], i + 1,
				 __ATOMIC_RELAXED);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	return 0;
}

/* Under load, with producers waiting on pub_sync: A hands over to B.
 * Every producer is told (-EROFS), every message acknowledged to it is
 * on B, B is primary at the next epoch, and A follows it as standby. */
Test(repl, switchover_under_load_loses_nothing)
{
	struct syncpub s0 = { "sp", 0 }, s1 = { "mp", 1 }, s2 = { "mp", 2 };
	struct shmbus_ctl_repl_reply r;
	struct sb_repl_view va, vb;
	uint64_t last[4];
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *pub;
	pid_t p0, p1, p2;
	uint8_t msg[48];

	tally = mmap(NULL, sizeof(*tally), PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(tally != MAP_FAILED);
	/* Sanitizers slow the daemons: B must not fall out of sync. */
	pair_setup(CHANS, "sync_timeout_ms = 5000\n");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	cr_assert(host_log_wait(&A, "mp: standby in sync", 3000));
	p0 = th_spawn(sync_publisher, &s0);
	p1 = th_spawn(sync_publisher, &s1);
	p2 = th_spawn(sync_publisher, &s2);
	/* Until every producer has had acknowledgements (sanitized daemons
	 * are slow to serve the first ones). */
	for (int t = 0; t < 1000; t++) {
		if (__atomic_load_n(&tally->acked[0], __ATOMIC_RELAXED) > 50 &&
		    __atomic_load_n(&tally->acked[1], __ATOMIC_RELAXED) > 50 &&
		    __atomic_load_n(&tally->acked[2], __ATOMIC_RELAXED) > 50)
			break;
		usleep(10000);
	}
	usleep(100000);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0,
		     "switchover: %s", r.text);
	cr_log_info("switchover: %s in %.2f ms", r.text,
		    (double)r.duration_ns / 1e6);
	printf("switchover under load: %.2f ms\n", (double)r.duration_ns / 1e6);
	cr_assert_eq(th_wait(p0), 0);
	cr_assert_eq(th_wait(p1), 0);
	cr_assert_eq(th_wait(p2), 0);
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(tally->bad[i], 0, "producer %d: %d", i,
			     tally->bad[i]);
		cr_assert(tally->told[i], "producer %d was not told", i);
		cr_assert_gt(tally->acked[i], 0);
	}
	/* Everything acknowledged is on B. */
	read_all_last(&B, "sp", UINT64_MAX, last);
	cr_assert(last[0] != UINT64_MAX && last[0] + 1 >= tally->acked[0],
		  "sp: B's last is %llu, %llu were acknowledged",
		  (unsigned long long)last[0],
		  (unsigned long long)tally->acked[0]);
	read_all_last(&B, "mp", UINT64_MAX, last);
	for (int i = 1; i < 3; i++)
		cr_assert(last[i] != UINT64_MAX &&
			  last[i] + 1 >= tally->acked[i],
			  "mp: producer %d: B's last is %llu, %llu were "
			  "acknowledged", i, (unsigned long long)last[i],
			  (unsigned long long)tally->acked[i]);
	pair_assert_identical("sp");
	pair_assert_identical("mp");
	host_view(&A, "sp", &va);
	host_view(&B, "sp", &vb);
	cr_assert_eq(vb.epoch, 2);
	cr_assert(va.fence == SHMBUS_FENCE_STANDBY);
	cr_assert(vb.fence == SHMBUS_FENCE_OPEN);
	/* B is primary: it takes producers, and A follows it. */
	cr_assert(host_log_wait(&B, "sp: standby in sync", 5000));
	ch = host_open(&B, &bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub, "B does not take a producer: %d", errno);
	for (int i = 0; i < 1000; i++) {
		th_msg_fill(msg, sizeof(msg), 3, (uint64_t)i);
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	}
	cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
	pair_wait_caught_up("sp", 0, 5000);
	pair_assert_identical("sp");
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_STATUS, 0, &r), 0);
	cr_assert(strstr(r.text, "standby at epoch 2"), "%s", r.text);
	ch = host_map(&A, "sp");
	cr_assert(ch);
	errno = 0;
	cr_assert_null(shmbus_pub_open(ch, NULL));
	cr_assert_eq(errno, EROFS);
	shmbus_channel_close(ch);
	munmap(tally, sizeof(*tally));
}

#define STRICT_CHANS CHANS \
	"[channel st]\ncapacity = 1M\nmax_msg = 4K\nreplicate = applied\n" \
	"out_of_sync = strict\n"

/* A subscriber that sees only acknowledged messages never sees one the
 * standby lacks: with B's daemon stopped (SIGSTOP), it reads nothing past
 * what B held when it stopped, while the producer goes on; once B runs
 * again, it sees everything. */
Test(repl, acknowledged_only_subscriber_never_outruns_the_standby)
{
	struct paced p = { "st", 0, 50, 1500 };
	struct sb_repl_view vb, va;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_sub *sub;
	struct shmbus_msg info;
	uint8_t buf[4096];
	uint64_t seen = 0, frozen;
	pid_t pid;

	pair_setup(STRICT_CHANS, "");
	cr_assert(host_log_wait(&A, "st: standby in sync", 3000));
	ch = host_open(&A, &bus, "st", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ch);
	sub = shmbus_sub_open(ch, NULL);
	cr_assert(sub);
	cr_assert_eq(shmbus_sub_set_visibility(sub, SHMBUS_SEE_ACKNOWLEDGED),
		     0);
	pid = th_spawn(paced_publisher, &p);
	usleep(300000);
	stop_host(&B);
	host_view(&B, "st", &vb);
	frozen = vb.head;
	for (uint64_t end = th_now_ns() + 400000000; th_now_ns() < end;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);

		if (r == -EAGAIN) {
			usleep(1000);
			continue;
		}
		cr_assert(r > 0);
		cr_assert_leq(info.pos + 16 + (uint64_t)(r + 7) / 8 * 8, frozen,
			      "a message at %llu seen, the standby holds up "
			      "to %llu", (unsigned long long)info.pos,
			      (unsigned long long)frozen);
		seen++;
	}
	host_view(&A, "st", &va);
	cr_assert_gt(va.head, frozen + 4096, "the producer did not go on");
	kill(B.pid, SIGCONT);
	cr_assert_eq(th_wait(pid), 0);
	for (uint64_t end = th_now_ns() + 10000000000ull; th_now_ns() < end;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);

		if (r == -EAGAIN) {
			host_view(&A, "st", &va);
			if (sub && info.pos + 80 >= va.head && seen >= 7500)
				break;
			usleep(1000);
			continue;
		}
		cr_assert(r > 0);
		seen++;
	}
	host_view(&A, "st", &va);
	host_view(&B, "st", &vb);
	cr_assert_eq(seen, 7500, "seen %llu of 7500 (A: head %llu, watermark "
		     "%llu, flags %x; B: head %llu)", (unsigned long long)seen,
		     (unsigned long long)va.head,
		     (unsigned long long)va.watermark, va.flags,
		     (unsigned long long)vb.head);
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* pub_sync never returns a success the standby did not earn: with B
 * stopped, a degrading channel answers SHMBUS_SYNC_DEGRADED (once A has
 * declared B out of sync), a strict one times out; with B back, both
 * answer 0. */
Test(repl, pub_sync_says_degraded_or_times_out_without_the_standby)
{
	shmbus_bus *b1, *b2;
	shmbus_channel *c1, *c2;
	shmbus_pub *deg, *str;
	uint8_t msg[64] = { 0 };
	int rc;

	pair_setup(STRICT_CHANS, "");
	cr_assert(host_log_wait(&A, "st: standby in sync", 3000));
	c1 = host_open(&A, &b1, "sp", SHMBUS_ROLE_PUBLISH);
	c2 = host_open(&A, &b2, "st", SHMBUS_ROLE_PUBLISH);
	cr_assert(c1 && c2);
	deg = shmbus_pub_open(c1, NULL);
	str = shmbus_pub_open(c2, NULL);
	cr_assert(deg && str);
	cr_assert_eq(shmbus_publish(deg, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(deg, 2000000000LL), 0);
	stop_host(&B);
	cr_assert_eq(shmbus_publish(deg, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_publish(str, msg, sizeof(msg)), 0);
	rc = shmbus_pub_sync(deg, 3000000000LL);
	cr_assert_eq(rc, SHMBUS_SYNC_DEGRADED, "degrade: %d", rc);
	rc = shmbus_pub_sync(str, 1000000000LL);
	cr_assert_eq(rc, -ETIMEDOUT, "strict: %d", rc);
	kill(B.pid, SIGCONT);
	cr_assert(host_log_wait(&A, "st: standby in sync at", 5000));
	rc = shmbus_pub_sync(str, 5000000000LL);
	cr_assert_eq(rc, 0, "strict, B back: %d", rc);
	cr_assert_eq(shmbus_publish(deg, msg, sizeof(msg)), 0);
	for (int i = 0; i < 100 && (rc = shmbus_pub_sync(deg, 5000000000LL));
	     i++)
		usleep(20000);	/* until A says B is in sync again */
	cr_assert_eq(rc, 0, "degrade, B back: %d", rc);
	shmbus_pub_close(deg);
	shmbus_pub_close(str);
	shmbus_channel_close(c1);
	shmbus_channel_close(c2);
	shmbus_disconnect(b1);
	shmbus_disconnect(b2);
}

/* A single producer's handle that lives through a switchover to the
 * other host and back never writes again: its view of the ring is stale.
 * It is refused on the standby (without touching its ring) and after the
 * host is primary again; a new handle publishes once it is closed. */
Test(repl, a_producer_handle_that_outlives_a_handover_stays_refused)
{
	struct shmbus_ctl_repl_reply r;
	struct sb_repl_view v0, v1;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *old, *fresh;
	uint8_t msg[64] = { 1 };

	pair_setup(CHANS, "");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	ch = host_map(&A, "sp");
	cr_assert(ch);
	old = shmbus_pub_open(ch, NULL);
	cr_assert(old);
	cr_assert_eq(shmbus_publish(old, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(old, 2000000000LL), 0);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
	/* B publishes; A applies. */
	{
		shmbus_channel *bch = host_open(&B, &bus, "sp",
						SHMBUS_ROLE_PUBLISH);
		shmbus_pub *bp = bch ? shmbus_pub_open(bch, NULL) : NULL;

		cr_assert(bp);
		for (int i = 0; i < 100; i++)
			cr_assert_eq(shmbus_publish(bp, msg, sizeof(msg)), 0);
		shmbus_pub_close(bp);
		shmbus_channel_close(bch);
		shmbus_disconnect(bus);
	}
	pair_wait_caught_up("sp", 0, 5000);
	sb_repl_read(ch, &v0);
	cr_assert_eq(shmbus_publish(old, msg, sizeof(msg)), -EROFS);
	sb_repl_read(ch, &v1);
	cr_assert_eq(v0.head, v1.head, "the refused handle moved head");
	/* And back: A primary again. */
	cr_assert_eq(host_ctl(&B, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0, "%s",
		     r.text);
	cr_assert_eq(shmbus_publish(old, msg, sizeof(msg)), -EROFS);
	errno = 0;
	cr_assert_null(shmbus_pub_open(ch, NULL), "a second single producer");
	cr_assert_eq(errno, EBUSY);
	shmbus_pub_close(old);
	fresh = shmbus_pub_open(ch, NULL);
	cr_assert(fresh, "errno %d", errno);
	cr_assert_eq(shmbus_publish(fresh, msg, sizeof(msg)), 0);
	/* Until A finds B in sync again (DEGRADED meanwhile). */
	for (int i = 0; i < 100 && shmbus_pub_sync(fresh, 5000000000LL); i++)
		usleep(20000);
	cr_assert_eq(shmbus_pub_sync(fresh, 5000000000LL), 0);
	shmbus_pub_close(fresh);
	shmbus_channel_close(ch);
	pair_wait_caught_up("sp", 0, 5000);
	pair_assert_identical("sp");
}

/* demote --force does not wait for the standby: what it lacks is never
 * reported acknowledged to a sync waiter here. */
Test(repl, a_forced_demotion_never_acknowledges_what_the_standby_lacks)
{
	struct shmbus_ctl_repl_reply r;
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint8_t msg[64] = { 2 };
	int rc;

	pair_setup(CHANS, "sync_timeout_ms = 10000\n");
	cr_assert(host_log_wait(&A, "sp: standby in sync", 3000));
	ch = host_map(&A, "sp");
	cr_assert(ch);
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub);
	stop_host(&B);
	for (int i = 0; i < 50; i++)
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(host_ctl(&A, SHMBUS_REPL_OP_DEMOTE, SHMBUS_REPL_FORCE,
			      &r), 0, "%s", r.text);
	rc = shmbus_pub_sync(pub, 300000000LL);
	cr_assert(rc == -EROFS, "pub_sync after a forced demotion: %d", rc);
	cr_assert(host_log_wait(&A, "demoted with --force: the standby lacks",
				100));
	kill(B.pid, SIGCONT);
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
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

Test(repl, hostile_peers_are_refused_and_replication_goes_on)
{
	struct pubarg sp = { "sp", 20000, 0, 256, false, false };
	pid_t pid;

	pair_setup(CHANS, "");
	pid = host_spawn(&B, hostile, A.listen);
	cr_assert_eq(th_wait(pid), 0, "the primary did not close a hostile "
		     "connection");
	cr_assert(host_log_wait(&A, "refused: bad magic", 100));
	pid = th_spawn(publisher, &sp);
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
		"applied  up   in", NULL };
	static const char *const b_table[] = { "standby", "received up", NULL };
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
	pid = th_spawn(publisher, &sp);
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
