/* SPDX-License-Identifier: MIT */
/*
 * soak_repl.c - a fault soak of replication: producers that wait for
 * every message (pub_sync) on applied and received channels, single and
 * multi producer, block and overwrite, follow the primary while faults
 * come in random order (switchover both ways, kill -9 of either daemon,
 * link cut, packet loss, shaping); after each step the primary's ring,
 * and the standby's once caught up, hold every acknowledged message, in
 * order, once.  `make soak-repl` (not part of make test; root, network
 * namespaces, etcd): SOAK_SECONDS per soak (default 120), SOAK_SEED
 * repeats a run's faults.  Root (network namespaces); the etcd suite
 * needs etcd.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "../daemon/etcd.h"
#include "failover_fixture.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"

#define SOAK_CHANS \
	"[channel sp]\ncapacity = 4M\nmax_msg = 4K\nreplicate = applied\n" \
	"[channel mp]\ncapacity = 4M\nmax_msg = 4K\nproducers = multi\n" \
	"replicate = received\n" \
	"[channel ow]\ncapacity = 4M\nmax_msg = 4K\npolicy = overwrite\n" \
	"replicate = applied\n" \
	"[channel om]\ncapacity = 4M\nmax_msg = 4K\npolicy = overwrite\n" \
	"producers = multi\nreplicate = received\n" \
	"[channel st]\ncapacity = 4M\nmax_msg = 4K\nreplicate = applied\n" \
	"out_of_sync = strict\n"
#define SOAK_EXTRA "sync_timeout_ms = 1000\n"

#define NPROD 7
static const char *const pchan[NPROD] = { "sp", "mp", "mp", "ow", "om",
					   "om", "st" };
static const bool papplied_single[NPROD] = { true, false, false, true,
					      false, false, true };
static const char *const chans[] = { "sp", "mp", "ow", "om", "st" };

struct soak {
	int primary;			/* 0: A, 1: B */
	int stop;
	uint64_t acked[NPROD];		/* seq+1 of the newest acknowledged */
	uint64_t published[NPROD];
	uint64_t ok[NPROD], degraded[NPROD], timedout[NPROD], erofs[NPROD];
	uint64_t other[NPROD];
	int lastother[NPROD];
	uint64_t reopen[NPROD];
	/* pub_sync said 0 on an applied channel while the other host's ring
	 * did not reach the message */
	uint64_t dishonest[NPROD];
	uint64_t dis_end[NPROD], dis_other[NPROD];
	/* a reopen on the primary found its newest below what was
	 * acknowledged */
	uint64_t lost_at_reopen[NPROD], lra_acked[NPROD], lra_found[NPROD];
	int lra_host[NPROD];
};

static struct soak *S;
static bool use_etcd;
static char xtra[768];

static struct host *hostn(int i)
{
	return i ? &B : &A;
}

static void fini(void)
{
	if (pair_netns) {
		host_sh(NULL, "ip netns exec %s nft delete table inet soak "
			"2>/dev/null", A.ns);
		host_sh(NULL, "ip netns exec %s nft delete table inet soak "
			"2>/dev/null", B.ns);
	}
	pair_teardown();
}

TestSuite(soak_repl, .fini = fini, .timeout = 3600);

static void efini(void)
{
	if (pair_netns) {
		host_sh(NULL, "ip netns exec %s nft delete table inet soak "
			"2>/dev/null", A.ns);
		host_sh(NULL, "ip netns exec %s nft delete table inet soak "
			"2>/dev/null", B.ns);
	}
	fo_fini();
}

TestSuite(soak_repl_etcd, .init = fo_setup, .fini = efini, .timeout = 3600);

/* The newest sequence number of producer `id` in h's ring of chan, or
 * UINT64_MAX. */
static uint64_t newest_of(const struct host *h, const char *chan,
			  uint32_t id)
{
	shmbus_channel *ch = shmbus_channel_open(h->dir, chan);
	shmbus_sub *sub;
	uint8_t buf[4096];
	struct shmbus_msg info;
	uint64_t best = UINT64_MAX;

	if (!ch)
		return UINT64_MAX;
	sub = ring_reader(ch);
	if (!sub) {
		shmbus_channel_close(ch);
		return UINT64_MAX;
	}
	for (;;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);
		uint32_t i;
		uint64_t s;

		if (r == -EAGAIN)
			break;
		if (r < 0)
			continue;
		if (th_msg_check(buf, (size_t)r, &i, &s) == 0 && i == id &&
		    (best == UINT64_MAX || s > best))
			best = s;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	return best;
}

static int producer(void *arg)
{
	int id = (int)(intptr_t)arg;
	const char *chan = pchan[id];
	uint8_t msg[4096];
	uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(id + 1);

	while (!__atomic_load_n(&S->stop, __ATOMIC_RELAXED)) {
		int p = __atomic_load_n(&S->primary, __ATOMIC_ACQUIRE);
		struct host *h = hostn(p), *o = hostn(!p);
		struct shmbus_pub_attr pa = { .timeout_ns = 2000000000LL };
		shmbus_bus *bus;
		shmbus_channel *ch = host_open(h, &bus, chan,
					       SHMBUS_ROLE_PUBLISH);
		shmbus_pub *pub = ch ? shmbus_pub_open(ch, &pa) : NULL;
		shmbus_channel *och = NULL;
		uint64_t next, f;

		if (!pub) {
			if (ch)
				shmbus_channel_close(ch);
			if (bus)
				shmbus_disconnect(bus);
			usleep(20000);
			continue;
		}
		S->reopen[id]++;
		f = newest_of(h, chan, (uint32_t)id);
		next = f == UINT64_MAX ? S->acked[id] : f + 1;
		if (S->acked[id] && (f == UINT64_MAX || f + 1 < S->acked[id])) {
			S->lost_at_reopen[id]++;
			S->lra_acked[id] = S->acked[id];
			S->lra_found[id] = f;
			S->lra_host[id] = h->tag;
			fprintf(stderr, "SOAK LOSS: producer %d reopened on %c: "
				"newest %llu, acknowledged %llu\n", id, h->tag,
				(unsigned long long)f,
				(unsigned long long)S->acked[id]);
			next = S->acked[id];
		}
		if (papplied_single[id])
			och = shmbus_channel_open_ro(o->dir, chan);
		while (!__atomic_load_n(&S->stop, __ATOMIC_RELAXED)) {
			size_t len;
			int rc;
			uint64_t end = 0;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			len = TH_MSG_MIN + (x % 16 == 0 ? x % 2000 : x % 100);
			th_msg_fill(msg, len, (uint32_t)id, next);
			rc = shmbus_publish(pub, msg, len);
			if (rc == -EAGAIN || rc == -ETIMEDOUT)
				continue;
			if (rc) {
				S->lastother[id] = rc;
				break;
			}
			if (och) {
				struct sb_repl_view v;

				sb_repl_read(ch, &v);
				end = v.head;
			}
			S->published[id] = next + 1;
			rc = shmbus_pub_sync(pub, 3000000000LL);
			if (rc == 0) {
				if (och) {
					struct sb_repl_view v;

					sb_repl_read(och, &v);
					if (v.head < end) {
						S->dishonest[id]++;
						S->dis_end[id] = end;
						S->dis_other[id] = v.head;
					}
				}
				S->ok[id]++;
				__atomic_store_n(&S->acked[id], next + 1,
						 __ATOMIC_RELEASE);
			} else if (rc == SHMBUS_SYNC_DEGRADED) {
				S->degraded[id]++;
			} else if (rc == -ETIMEDOUT) {
				S->timedout[id]++;
			} else if (rc == -EROFS) {
				S->erofs[id]++;
				next++;
				break;
			} else {
				S->other[id]++;
				S->lastother[id] = rc;
				next++;
				break;
			}
			next++;
			if (x % 64 == 0)
				usleep(1000);
		}
		shmbus_pub_close(pub);
		shmbus_channel_close(ch);
		if (och)
			shmbus_channel_close(och);
		shmbus_disconnect(bus);
	}
	return 0;
}

/* ------------------------------------------------------------ checks */

static int checks, check_fail;
static char failmsg[4096];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
	va_list ap;
	size_t n = strlen(failmsg);

	va_start(ap, fmt);
	if (n < sizeof(failmsg) - 2)
		vsnprintf(failmsg + n, sizeof(failmsg) - n, fmt, ap);
	va_end(ap);
	n = strlen(failmsg);
	if (n < sizeof(failmsg) - 2) {
		failmsg[n] = '\n';
		failmsg[n + 1] = 0;
	}
	check_fail++;
	fprintf(stderr, "SOAK FAIL: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
}

/* Reads h's ring of chan: every message intact; per producer in order,
 * consecutive, once; the newest of each at least acked-1. */
static uint64_t check_ring(const struct host *h, const char *chan,
			   const char *what)
{
	uint64_t acked[NPROD], next[NPROD], n = 0, restarts = 0;
	bool have[NPROD] = { false };
	shmbus_channel *ch;
	shmbus_sub *sub;
	uint8_t buf[4096];
	struct shmbus_msg info;

	for (int i = 0; i < NPROD; i++)
		acked[i] = __atomic_load_n(&S->acked[i], __ATOMIC_ACQUIRE);
	ch = shmbus_channel_open(h->dir, chan);
	if (!ch) {
		fail("%s %c %s: cannot map", what, h->tag, chan);
		return 0;
	}
	sub = ring_reader(ch);
	cr_assert(sub);
	for (;;) {
		ssize_t r = shmbus_read(sub, buf, sizeof(buf), &info);
		uint32_t id;
		uint64_t seq;

		if (r == -EAGAIN)
			break;
		if (r < 0) {
			fail("%s %c %s: read %zd", what, h->tag, chan, r);
			break;
		}
		if (info.lost && n) {
			/* lapped while reading (overwrite): start over */
			restarts++;
			memset(have, 0, sizeof(have));
		}
		if (th_msg_check(buf, (size_t)r, &id, &seq)) {
			fail("%s %c %s: torn message at %llu", what, h->tag,
			     chan, (unsigned long long)info.pos);
			continue;
		}
		if (id >= NPROD || strcmp(pchan[id], chan)) {
			fail("%s %c %s: foreign id %u", what, h->tag, chan,
			     id);
			continue;
		}
		if (have[id] && seq != next[id])
			fail("%s %c %s: producer %u: %llu after %llu (pos %llu)",
			     what, h->tag, chan, id, (unsigned long long)seq,
			     (unsigned long long)next[id] - 1,
			     (unsigned long long)info.pos);
		have[id] = true;
		next[id] = seq + 1;
		n++;
	}
	shmbus_sub_close(sub);
	shmbus_channel_close(ch);
	for (int i = 0; i < NPROD; i++) {
		if (strcmp(pchan[i], chan) || !acked[i])
			continue;
		if (!have[i] || next[i] < acked[i])
			fail("%s %c %s: producer %d acknowledged %llu, the ring "
			     "ends at %llu", what, h->tag, chan, i,
			     (unsigned long long)acked[i],
			     have[i] ? (unsigned long long)next[i] : 0ull);
	}
	checks++;
	return n;
}

static uint64_t msgs_checked;

/* Waits until the standby's head equals the primary's for chan, at most
 * ms. */
static bool caught_up(const char *chan, int ms)
{
	int p = S->primary;
	struct sb_repl_view vp, vs;

	for (int t = 0; t < ms; t += 10) {
		host_view(hostn(p), chan, &vp);
		host_view(hostn(!p), chan, &vs);
		if (vp.head == vs.head && vp.applied >= vp.head)
			return true;
		usleep(10000);
	}
	return false;
}

static int status_of(int i, char *out, size_t n)
{
	struct shmbus_ctl_repl_reply r;
	int rc = host_ctl(hostn(i), SHMBUS_REPL_OP_STATUS, 0, &r);

	snprintf(out, n, "%s", r.text);
	return rc;
}

static int nrebuild;
static void restart(struct host *h);

/* How many lines of h's log hold `what`. */
static int log_count(const struct host *h, const char *what)
{
	FILE *f = fopen(h->log, "r");
	char line[2048];
	int n = 0;

	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, what) != NULL;
	if (f)
		fclose(f);
	return n;
}

/* The standby refused for good (docs/replication.md: its ring must be
 * rebuilt): stop it, remove its rings and its epoch history, start it as
 * standby. */
static void rebuild(struct host *h)
{
	nrebuild++;
	fprintf(stderr, "rebuilding %c\n", h->tag);
	host_kill(h, SIGKILL);
	host_sh(NULL, "rm -rf %s/* %s/epochs", h->dir, h->state);
	restart(h);
}

static int rebuilt_seen[2];

static void check_all(const char *what)
{
	char st[2][2048];
	int p = S->primary;

	for (size_t c = 0; c < sizeof(chans) / sizeof(*chans); c++)
		msgs_checked += check_ring(hostn(p), chans[c], what);
	for (size_t c = 0; c < sizeof(chans) / sizeof(*chans); c++) {
		if (!caught_up(chans[c], 1000) &&
		    log_count(hostn(!p), "its ring must be rebuilt") >
		    rebuilt_seen[!p]) {
			rebuild(hostn(!p));
			rebuilt_seen[!p] = log_count(hostn(!p),
						     "its ring must be "
						     "rebuilt");
		}
		if (!caught_up(chans[c], 15000)) {
			struct sb_repl_view vp, vs;

			host_view(hostn(p), chans[c], &vp);
			host_view(hostn(!p), chans[c], &vs);
			status_of(0, st[0], sizeof(st[0]));
			status_of(1, st[1], sizeof(st[1]));
			fprintf(stderr, "%s: %s: standby not caught up in 15 s "
				"(primary head %llu applied %llu, standby "
				"head %llu)\nA: %s\nB: %s\n", what, chans[c],
				(unsigned long long)vp.head,
				(unsigned long long)vp.applied,
				(unsigned long long)vs.head, st[0], st[1]);
			fail("%s: %s: the standby did not catch up", what,
			     chans[c]);
			continue;
		}
		msgs_checked += check_ring(hostn(!p), chans[c], what);
	}
	if (status_of(p, st[0], sizeof(st[0])) ||
	    strncmp(st[0], "primary at", 10))
		fail("%s: status of the primary %c: %s", what, hostn(p)->tag,
		     st[0]);
	if (status_of(!p, st[1], sizeof(st[1])) ||
	    strncmp(st[1], "standby at", 10))
		fail("%s: status of the standby %c: %s", what,
		     hostn(!p)->tag, st[1]);
}

/* ------------------------------------------------------------ faults */

static void configs(void)
{
	int p = S->primary;

	host_config(hostn(p), "primary", hostn(!p)->listen, SOAK_CHANS,
		    xtra);
	host_config(hostn(!p), "standby", hostn(p)->listen, SOAK_CHANS,
		    xtra);
}

static int nfail, nstop, nsw, nswfail, nkillp, nkills, ncut, nloss, nshape, ncombo;

static void switchover(const char *why)
{
	struct shmbus_ctl_repl_reply r;
	int p = S->primary, rc;
	char st[2][2048];

	rc = host_ctl(hostn(p), SHMBUS_REPL_OP_SWITCHOVER, 0, &r);
	if (rc == 0) {
		nsw++;
		__atomic_store_n(&S->primary, !p, __ATOMIC_RELEASE);
		configs();
		fprintf(stderr, "[%s] switchover %c->%c: %s\n", why,
			hostn(p)->tag, hostn(!p)->tag, r.text);
		return;
	}
	nswfail++;
	status_of(0, st[0], sizeof(st[0]));
	status_of(1, st[1], sizeof(st[1]));
	fprintf(stderr, "[%s] switchover %c->%c refused (%d): %s\nA: %s\nB: %s\n",
		why, hostn(p)->tag, hostn(!p)->tag, rc, r.text, st[0], st[1]);
	if (!strncmp(st[!p], "primary at", 10)) {
		__atomic_store_n(&S->primary, !p, __ATOMIC_RELEASE);
		configs();
	}
}

static void nft_loss(const struct host *h, int pct)
{
	host_sh(NULL, "ip netns exec %s nft add table inet soak && "
		"ip netns exec %s nft \"add chain inet soak in { type filter "
		"hook input priority 0; }\" && ip netns exec %s nft \"add "
		"chain inet soak out { type filter hook output priority 0; }\" "
		"&& ip netns exec %s nft add rule inet soak in numgen random mod "
		"100 \\< %d drop && ip netns exec %s nft add rule inet soak out "
		"numgen random mod 100 \\< %d drop", h->ns, h->ns, h->ns, h->ns,
		pct, h->ns, pct);
}

static void nft_clear(const struct host *h)
{
	host_sh(NULL, "ip netns exec %s nft delete table inet soak 2>/dev/null",
		h->ns);
}

static void shape(const struct host *h, int kbit)
{
	host_sh(NULL, "ip netns exec %s tc qdisc replace dev %s root tbf rate "
		"%dkbit burst 16kb latency 300ms", h->ns, h->ifname, kbit);
}

static void unshape(const struct host *h)
{
	host_sh(NULL, "ip netns exec %s tc qdisc del dev %s root 2>/dev/null",
		h->ns, h->ifname);
}

static void link_set(const char *updown)
{
	host_sh(NULL, "ip -n %s link set %s %s", A.ns, A.ifname, updown);
}

/* With an arbiter: who is primary, once exactly one host says so (at
 * most 15 s). */
static void settle(const char *why)
{
	char st[2][2048];

	if (!use_etcd)
		return;
	for (int t = 0; t < 1500; t++) {
		bool pa = A.pid > 0 && !status_of(0, st[0], sizeof(st[0])) &&
			  !strncmp(st[0], "primary at", 10);
		bool pb = B.pid > 0 && !status_of(1, st[1], sizeof(st[1])) &&
			  !strncmp(st[1], "primary at", 10);

		if (pa != pb) {
			if ((pb ? 1 : 0) != S->primary)
				fprintf(stderr, "[%s] primary is now %c\n", why,
					pb ? 'b' : 'a');
			__atomic_store_n(&S->primary, pb ? 1 : 0,
					 __ATOMIC_RELEASE);
			return;
		}
		usleep(10000);
	}
	fail("%s: no single primary in 15 s:\nA: %s\nB: %s", why, st[0],
	     st[1]);
}

static void restart(struct host *h)
{
	if (!host_try_start(h)) {
		fail("daemon %c did not start again (see %s)", h->tag,
		     h->log);
		cr_assert_fail("%s", failmsg);
	}
}

/* kill -9 of h's shmbusd, started again 0-1.5 s later (r: 0-99). */
static void kill_and_restart(struct host *h, const char *role, int r)
{
	fprintf(stderr, "kill -9 %s %c\n", role, h->tag);
	host_kill(h, SIGKILL);
	usleep((useconds_t)(r * 15000));
	restart(h);
}

static void step(int k, unsigned *rs)
{
	int p = S->primary;
	struct host *P = hostn(p), *Sb = hostn(!p);
	int r = (int)(rand_r(rs) % 100);

	switch (k) {
	case 0:
		switchover("plain");
		break;
	case 1:
		nkillp++;
		kill_and_restart(P, "primary", r);
		break;
	case 2:
		nkills++;
		kill_and_restart(Sb, "standby", r);
		break;
	case 3:
		ncut++;
		fprintf(stderr, "link cut %d ms\n", 200 + r * 30);
		link_set("down");
		usleep((useconds_t)(200 + r * 30) * 1000);
		link_set("up");
		break;
	case 4:
		nloss++;
		fprintf(stderr, "loss %d%% on %c for 3 s\n", 5 + r / 2,
			hostn(r & 1)->tag);
		nft_loss(hostn(r & 1), 5 + r / 2);
		sleep(3);
		nft_clear(hostn(r & 1));
		break;
	case 5:
		nshape++;
		fprintf(stderr, "shape %d kbit for 3 s\n", 500 + r * 50);
		shape(&A, 500 + r * 50);
		shape(&B, 500 + r * 50);
		sleep(3);
		unshape(&A);
		unshape(&B);
		break;
	case 6:
		ncombo++;
		fprintf(stderr, "combo: loss %d%% + switchover\n", 5 + r / 3);
		nft_loss(&A, 5 + r / 3);
		usleep(500000);
		switchover("lossy");
		usleep(500000);
		nft_clear(&A);
		break;
	case 7:
		ncombo++;
		fprintf(stderr, "combo: shaping + kill -9 standby + switchover\n");
		shape(&A, 2000);
		host_kill(Sb, SIGKILL);
		usleep(300000);
		restart(Sb);
		usleep(700000);
		switchover("shaped");
		unshape(&A);
		break;
	case 8:
		ncombo++;
		fprintf(stderr, "combo: link cut 1.5 s, kill -9 primary %c "
			"inside\n", P->tag);
		link_set("down");
		usleep(500000);
		host_kill(P, SIGKILL);
		usleep(500000);
		restart(P);
		usleep(500000);
		link_set("up");
		break;
	case 9:
		nstop++;
		fprintf(stderr, "SIGSTOP primary %c for %d ms\n", P->tag,
			100 + r * 25);
		host_pause(P);
		usleep((useconds_t)(100 + r * 25) * 1000);
		kill(P->pid, SIGCONT);
		break;
	case 10:
		nstop++;
		fprintf(stderr, "SIGSTOP standby %c for %d ms\n", Sb->tag,
			100 + r * 25);
		host_pause(Sb);
		usleep((useconds_t)(100 + r * 25) * 1000);
		kill(Sb->pid, SIGCONT);
		break;
	case 11:
		ncombo++;
		fprintf(stderr, "combo: kill -9 both, restart standby %c "
			"first\n", Sb->tag);
		host_kill(P, SIGKILL);
		host_kill(Sb, SIGKILL);
		usleep((useconds_t)(r * 5000));
		restart(Sb);
		restart(P);
		break;
	case 12:
		ncombo++;
		fprintf(stderr, "combo: kill -9 standby %c, switchover at once "
			"after its restart\n", Sb->tag);
		host_kill(Sb, SIGKILL);
		restart(Sb);
		switchover("restarted standby");
		break;
	case 13:
		ncombo++;
		fprintf(stderr, "combo: kill -9 primary %c, switchover at once "
			"after its restart\n", P->tag);
		host_kill(P, SIGKILL);
		restart(P);
		switchover("restarted primary");
		break;
	case 14:
		ncombo++;
		fprintf(stderr, "combo: two switchovers back to back\n");
		switchover("back");
		settle("back");
		switchover("forth");
		break;
	case 15:
		nfail++;
		fprintf(stderr, "failover: kill -9 primary %c, standby takes "
			"over\n", P->tag);
		host_kill(P, SIGKILL);
		for (int t = 0; t < 800; t++) {
			struct sb_repl_view v;

			host_view(Sb, "sp", &v);
			if (!(v.flags & SHMBUS_REPL_STANDBY) &&
			    v.fence == SHMBUS_FENCE_OPEN)
				break;
			usleep(10000);
		}
		settle("failover");
		usleep((useconds_t)(r * 10000));
		restart(P);
		break;
	case 16:
		nfail++;
		fprintf(stderr, "SIGSTOP primary %c past its lease (%d ms)\n",
			P->tag, 2500 + r * 20);
		host_pause(P);
		usleep((useconds_t)(2500 + r * 20) * 1000);
		kill(P->pid, SIGCONT);
		break;
	case 17:
		nfail++;
		fprintf(stderr, "primary %c cut from etcd for %d ms\n", P->tag,
			1000 + r * 40);
		atomic_store(&fw[p].cut, true);
		usleep((useconds_t)(1000 + r * 40) * 1000);
		atomic_store(&fw[p].cut, false);
		break;
	default:
		break;
	}
}

static void soak(void)
{
	const char *e = getenv("SOAK_SECONDS");
	int secs = e && atoi(e) > 0 ? atoi(e) : 120;
	unsigned seed = getenv("SOAK_SEED") ? (unsigned)atoi(getenv("SOAK_SEED"))
					    : (unsigned)time(NULL);
	pid_t pid[NPROD];
	time_t t0;
	int steps = 0;
	uint64_t sum[7] = { 0 };

	cr_assert(pair_netns_possible(), "needs root for namespaces");
	S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(S != MAP_FAILED);
	memset(S, 0, sizeof(*S));
	fprintf(stderr, "seed %u\n", seed);
	snprintf(xtra, sizeof(xtra), "%s%s", SOAK_EXTRA, use_etcd ? extra : "");
	pair_setup(SOAK_CHANS, xtra);
	if (use_etcd)
		cr_assert(host_log_wait(&A, "holds the leader key", 10000));
	for (int i = 0; i < NPROD; i++)
		pid[i] = th_spawn(producer, (void *)(intptr_t)i);
	sleep(2);
	check_all("start");
	t0 = time(NULL);
	while (time(NULL) - t0 < secs) {
		char what[64];
		int k = (int)(rand_r(&seed) % (use_etcd ? 18 : 15));

		step(k, &seed);
		settle("step");
		steps++;
		usleep(300000 + rand_r(&seed) % 1000000);
		snprintf(what, sizeof(what), "step %d (kind %d)", steps, k);
		check_all(what);
		/* The arbiter gone (killed from outside, its disk full): no
		 * step after it tests failover any more. */
		if (use_etcd && (etcd_pid <= 0 ||
				 waitpid(etcd_pid, NULL, WNOHANG) == etcd_pid)) {
			etcd_pid = 0;
			fail("etcd died before %s", what);
			break;
		}
		fprintf(stderr, "%s: acked sp %llu mp %llu/%llu ow %llu om "
			"%llu/%llu st %llu; fails %d\n", what,
			(unsigned long long)S->acked[0],
			(unsigned long long)S->acked[1],
			(unsigned long long)S->acked[2],
			(unsigned long long)S->acked[3],
			(unsigned long long)S->acked[4],
			(unsigned long long)S->acked[5],
			(unsigned long long)S->acked[6], check_fail);
	}
	__atomic_store_n(&S->stop, 1, __ATOMIC_RELAXED);
	for (int i = 0; i < NPROD; i++)
		th_wait(pid[i]);
	check_all("end");
	for (int i = 0; i < NPROD; i++) {
		sum[0] += S->ok[i];
		sum[1] += S->degraded[i];
		sum[2] += S->timedout[i];
		sum[3] += S->erofs[i];
		sum[4] += S->other[i];
		sum[5] += S->dishonest[i];
		sum[6] += S->published[i];
		if (S->lost_at_reopen[i])
			fail("producer %d lost at reopen %llu times", i,
			     (unsigned long long)S->lost_at_reopen[i]);
		fprintf(stderr, "producer %d %s: published %llu ok %llu degr "
			"%llu timeout %llu erofs %llu other %llu (last %d) "
			"reopen %llu dishonest %llu (end %llu other %llu)\n", i,
			pchan[i], (unsigned long long)S->published[i],
			(unsigned long long)S->ok[i],
			(unsigned long long)S->degraded[i],
			(unsigned long long)S->timedout[i],
			(unsigned long long)S->erofs[i],
			(unsigned long long)S->other[i], S->lastother[i],
			(unsigned long long)S->reopen[i],
			(unsigned long long)S->dishonest[i],
			(unsigned long long)S->dis_end[i],
			(unsigned long long)S->dis_other[i]);
	}
	fprintf(stderr, "SOAK: %d steps: switchovers %d (refused %d), kill -9 "
		"primary %d, standby %d, cuts %d, loss %d, shaping %d, combos "
		"%d, stops %d, failovers %d, rebuilds %d; acknowledged %llu, degraded %llu, timed out %llu, erofs "
		"%llu, other %llu, dishonest %llu; ring checks %d, messages "
		"read %llu; failures %d\n", steps, nsw, nswfail, nkillp, nkills,
		ncut, nloss, nshape, ncombo, nstop, nfail, nrebuild, (unsigned long long)sum[0],
		(unsigned long long)sum[1], (unsigned long long)sum[2],
		(unsigned long long)sum[3], (unsigned long long)sum[4],
		(unsigned long long)sum[5], checks,
		(unsigned long long)msgs_checked, check_fail);
	cr_assert_eq(check_fail, 0, "%s", failmsg);
	cr_assert_eq(sum[5], 0, "pub_sync said 0 before the other ring had it");
	munmap(S, sizeof(*S));
}

Test(soak_repl, faults_in_random_order_lose_no_acknowledged_message)
{
	soak();
}

Test(soak_repl_etcd, failovers_and_faults_lose_no_acknowledged_message)
{
	use_etcd = true;
	soak();
}

/* Whether h's log has "standby recorded in sync" after its last
 * "demoted:" line. */
static bool in_recorded_after_demotion(const struct host *h)
{
	FILE *f = fopen(h->log, "r");
	char line[2048];
	bool demoted = false, in = false;

	while (f && fgets(line, sizeof(line), f)) {
		if (strstr(line, "demoted:")) {
			demoted = true;
			in = false;
		} else if (demoted && strstr(line, "standby recorded in sync")) {
			in = true;
		}
	}
	if (f)
		fclose(f);
	return in;
}

/* The primary, its standby gone (recorded out), frozen past its lease:
 * on resume it takes the key again and its watchdog makes it stand by.
 * It must not record its standby in sync meanwhile (the channels it
 * reads are a standby's then, never out of sync). */
static void demoted_round(int delay_ms, bool kill_b)
{
	struct etcd_kv kv;

	pair_setup(CHANS, extra);
	cr_assert(host_log_wait(&A, "holds the leader key", 10000));
	cr_assert(wait_record("in ", 5000));
	if (kill_b) {
		host_kill(&B, SIGKILL);
		cr_assert(wait_record("out ", 5000));
	}
	host_pause(&A);
	usleep(2600000);
	atomic_store(&fw[0].delay_ms, delay_ms);
	kill(A.pid, SIGCONT);
	cr_assert(host_log_wait(&A, "demoted:", 8000));
	usleep(1500000);
	atomic_store(&fw[0].delay_ms, 0);
	cr_assert(!in_recorded_after_demotion(&A),
		  "A recorded its standby in sync after its demotion");
	cr_assert_eq(arbiter_key("sync", &kv), 0);
	if (kill_b)
		cr_assert(kv.found && strncmp(kv.value, "in ", 3),
			  "the sync record says '%s' with the standby dead",
			  kv.value);
}

Test(soak_repl_etcd, a_primary_demoted_by_its_watchdog_never_records_in)
{
	demoted_round(300, true);
}
