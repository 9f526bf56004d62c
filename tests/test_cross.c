/* SPDX-License-Identifier: MIT */
/*
 * test_cross.c - where replication, consumer groups and the journal meet:
 * what a standby holds, and what a new primary goes on from.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "repl_fixture.h"
#include "shmbus/layout.h"
#include "../lib/channel.h"

static void fini(void)
{
	pair_teardown();
}

TestSuite(cross, .fini = fini, .timeout = 120);

/* A record written at ch's head by hand, as a process that maps the data
 * file writable can (no claim, no fence): a message of `len` bytes of
 * `fill`, with the channel's next sequence number; head and seq moved on
 * past it.  Its size in the ring. */
static uint64_t forge_at_head(shmbus_channel *ch, uint8_t fill, uint32_t len)
{
	struct shmbus_prod_line *h = ch->pl;
	uint64_t head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
	uint64_t seq = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
	uint64_t size = rec_size(len);
	struct shmbus_rec *r = rec_at(ch, head);

	memset((uint8_t *)r + sizeof(*r), fill, len);
	r->seq = seq;
	__atomic_store_n(&rec_at(ch, head + size)->commit, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&h->head, head + size, __ATOMIC_RELEASE);
	__atomic_store_n(&h->seq, seq + 1, __ATOMIC_RELEASE);
	__atomic_store_n(&h->handoff, head + size, __ATOMIC_RELEASE);
	__atomic_store_n(&r->commit,
			 commit_word(ch, head, SHMBUS_REC_MSG, len),
			 __ATOMIC_RELEASE);
	return size;
}

/*
 * A process that may publish on the channel asks to open it on the
 * standby: the daemon refuses (EROFS), so that the data file never
 * reaches it writable.  One that holds the files otherwise (the daemon's
 * user, root) writes a message there by hand.  The standby's ring then
 * holds a message the primary never had; a promotion must not take it
 * for one the primary shipped.
 */
Test(cross, a_record_written_on_a_standby_is_not_promoted)
{
	struct shmbus_ctl_repl_reply r;
	shmbus_bus *pbus, *bbus;
	shmbus_channel *pch, *bch;
	shmbus_pub *pub;
	uint64_t ahead, forged;
	uint8_t msg[64];
	int rc;

	pair_setup(CHANS, "sync_timeout_ms = 5000\n");
	pch = host_open(&A, &pbus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(pch, "%s", strerror(errno));
	pub = shmbus_pub_open(pch, NULL);
	cr_assert(pub);
	memset(msg, 'A', sizeof(msg));
	for (int i = 0; i < 20; i++)
		cr_assert_eq(shmbus_publish(pub, msg, sizeof(msg)), 0);
	cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
	ahead = pair_wait_caught_up("sp", 0, 5000);
	shmbus_pub_close(pub);
	shmbus_channel_close(pch);
	shmbus_disconnect(pbus);
	/* The primary's host is gone. */
	host_kill(&A, SIGKILL);
	/* On the standby: an open to publish is refused at the door; the
	 * files, mapped directly, refuse a publisher in the library, but
	 * their data file is writable. */
	cr_assert_null(host_open(&B, &bbus, "sp", SHMBUS_ROLE_PUBLISH));
	cr_assert_eq(errno, EROFS, "open: %s", strerror(errno));
	shmbus_disconnect(bbus);
	bbus = NULL;
	bch = host_map(&B, "sp");
	cr_assert(bch, "%s", strerror(errno));
	errno = 0;
	cr_assert_null(shmbus_pub_open(bch, NULL));
	cr_assert_eq(errno, EROFS);
	cr_assert_eq(sb_ring_head(bch), ahead);
	forged = forge_at_head(bch, 'X', sizeof(msg));
	rc = host_ctl(&B, SHMBUS_REPL_OP_PROMOTE, 0, &r);
	/* Refused, or promoted at what the standby applied: never past it. */
	if (rc == 0 && sb_ring_head(bch) != ahead) {
		/* Shipped back too: the old primary, back as a standby,
		 * takes it at the position where its own ring had nothing. */
		shmbus_channel *amap;
		const uint8_t *d;
		size_t len;

		host_config(&A, "standby", B.listen, CHANS,
			    "sync_timeout_ms = 5000\n");
		host_start(&A);
		amap = host_map(&A, "sp");
		cr_assert(amap);
		for (int i = 0; i < 500 && sb_ring_head(amap) < ahead + forged;
		     i++)
			usleep(10000);
		d = host_data(&A, "sp", &len);
		cr_log_warn("the old primary, now standby, ends at %llu; "
			    "its byte at %llu is '%c'",
			    (unsigned long long)sb_ring_head(amap),
			    (unsigned long long)ahead + 16,
			    d ? d[(ahead + 16) & (len - 1)] : '?');
		shmbus_channel_close(amap);
	}
	if (rc == 0)
		cr_assert_eq(sb_ring_head(bch), ahead,
			     "the new primary's ring ends at %llu, past the "
			     "%llu it applied: the %llu bytes written there "
			     "by hand are taken for the primary's records",
			     (unsigned long long)sb_ring_head(bch),
			     (unsigned long long)ahead,
			     (unsigned long long)forged);
	shmbus_channel_close(bch);
	shmbus_disconnect(bbus);
}

/* ------------------------------------------------ keyed groups, switched */

#define NKEYS 8
#define KMAX 4000

struct klog {
	uint64_t last[NKEYS];		/* per key: the last counter seen */
	bool any[NKEYS];
	uint32_t seen[KMAX];		/* deliveries of each message */
	char bad[512];
	unsigned again, back;
};

static struct klog kl;

struct kmsg {
	uint64_t num, ctr;
};

static uint64_t kctr[NKEYS];

static void kpublish(const struct host *h, uint64_t from, uint64_t to)
{
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(h, &bus, "jobs", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub;

	cr_assert(ch, "%s", strerror(errno));
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub, "%s", strerror(errno));
	for (uint64_t i = from; i < to; i++) {
		struct kmsg m = { i, kctr[i % NKEYS]++ };
		int rc;

		while ((rc = shmbus_publish_keyed(pub, i % NKEYS, &m,
						  sizeof(m))) == -EAGAIN)
			usleep(1000);
		cr_assert_eq(rc, 0, "publish %llu: %d", (unsigned long long)i,
			     rc);
	}
	{
		int rc = shmbus_pub_sync(pub, 5000000000LL);

		/* 1 (degraded) right after a switchover: see
		 * a_sync_waiter_right_after_a_switchover_is_not_degraded. */
		cr_assert_geq(rc, 0, "pub_sync on %c after %llu: %d", h->tag,
			      (unsigned long long)to, rc);
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* One delivery: the key's counter goes on by one, or starts again at
 * or below where it was (seen again), never skips. */
static void klog_one(const struct shmbus_group_msg *m, const void *buf)
{
	struct kmsg k;
	uint64_t key;

	memcpy(&key, buf, 8);
	memcpy(&k, (const uint8_t *)buf + 8, sizeof(k));
	if (key >= NKEYS || k.num >= KMAX || k.num % NKEYS != key) {
		snprintf(kl.bad, sizeof(kl.bad), "a torn message at %llu",
			 (unsigned long long)m->pos);
		return;
	}
	if (kl.seen[k.num]++)
		kl.again++;
	if (kl.any[key] && k.ctr > kl.last[key] + 1 && !kl.bad[0])
		snprintf(kl.bad, sizeof(kl.bad), "key %llu: %llu delivered "
			 "after %llu (%llu skipped), at %llu",
			 (unsigned long long)key, (unsigned long long)k.ctr,
			 (unsigned long long)kl.last[key],
			 (unsigned long long)(k.ctr - kl.last[key] - 1),
			 (unsigned long long)m->pos);
	if (kl.any[key] && k.ctr <= kl.last[key])
		kl.back++;
	kl.any[key] = true;
	kl.last[key] = k.ctr;
}

/* Reads up to n messages (until the group has none for 300 ms); acks
 * each unless keep: returns how many were read, its last lease in *last. */
static int kread(shmbus_group *g, int n, bool ack, struct shmbus_lease *last)
{
	int got = 0, idle = 0;

	while (got < n && idle < 300) {
		struct shmbus_group_msg m;
		uint8_t buf[256];
		ssize_t k = shmbus_group_read(g, buf, sizeof(buf), &m);

		if (k == -EAGAIN || k == -EROFS) {
			idle++;
			usleep(1000);
			continue;
		}
		cr_assert_eq(k, 8 + (ssize_t)sizeof(struct kmsg), "read: %zd",
			     k);
		idle = 0;
		klog_one(&m, buf);
		got++;
		if (ack) {
			int rc = shmbus_group_ack(g, &m.lease);

			cr_assert(rc == 0 || rc == -ESTALE, "ack: %d", rc);
		}
		if (last)
			*last = m.lease;
	}
	return got;
}

static void switchover(const struct host *from)
{
	struct shmbus_ctl_repl_reply r;

	cr_assert_eq(host_ctl(from, SHMBUS_REPL_OP_SWITCHOVER, 0, &r), 0,
		     "switchover from %c: %s", from->tag, r.text);
}

static void keyed_across_switchovers(const char *mode)
{
	char chans[256];
	shmbus_bus *abus, *bbus;
	shmbus_channel *ach, *bch;
	shmbus_group *ma, *mb;
	struct shmbus_group_attr ga;
	struct shmbus_lease held;
	uint64_t n = 0;

	snprintf(chans, sizeof(chans), "[channel jobs]\ncapacity = 64K\n"
		 "max_msg = 256\nreplicate = applied\n"
		 "consumer_groups = k mode=%s%s\n", mode,
		 strcmp(mode, "keyed") ? "" : " lanes=4");
	pair_setup(chans, "sync_timeout_ms = 5000\n");
	ach = host_open(&A, &abus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(ach);
	shmbus_group_attr_init(&ga);
	ga.mode = strcmp(mode, "keyed") ? SHMBUS_GROUP_SINGLE_ACTIVE
					: SHMBUS_GROUP_KEYED;
	ga.lanes = strcmp(mode, "keyed") ? 1 : 4;
	ma = shmbus_group_join(ach, "k", "ma", &ga);
	cr_assert(ma, "join: %s", strerror(errno));
	kpublish(&A, n, n + 400);
	n += 400;
	cr_assert_eq(kread(ma, 300, true, NULL), 300);
	usleep(100000);		/* a state or more reaches B */
	/* Five in flight, then twenty acked just before the switchover. */
	cr_assert_eq(kread(ma, 5, false, &held), 5);
	cr_assert_eq(kread(ma, 20, true, NULL), 20);
	switchover(&A);
	cr_assert_eq(shmbus_group_read(ma, (uint8_t[256]){ 0 }, 256,
				       &(struct shmbus_group_msg){ 0 }),
		     -EROFS);
	bch = host_open(&B, &bbus, "jobs", SHMBUS_ROLE_SUBSCRIBE);
	cr_assert(bch);
	mb = shmbus_group_join(bch, "k", "mb", &ga);
	cr_assert(mb, "join on B: %s", strerror(errno));
	kpublish(&B, n, n + 400);
	n += 400;
	kread(mb, 100000, true, NULL);
	usleep(100000);
	switchover(&B);
	kpublish(&A, n, n + 400);
	n += 400;
	kread(ma, 100000, true, NULL);
	cr_assert_eq(kl.bad[0], 0, "%s", kl.bad);
	for (uint64_t i = 0; i < n; i++)
		cr_assert(kl.seen[i], "message %llu never delivered (again %u,"
			  " back %u)", (unsigned long long)i, kl.again,
			  kl.back);
	cr_log_info("%s: %llu messages, %u delivered again, %u rewinds",
		    mode, (unsigned long long)n, kl.again, kl.back);
	shmbus_group_leave(mb);
	shmbus_channel_close(bch);
	shmbus_disconnect(bbus);
	shmbus_group_leave(ma);
	shmbus_channel_close(ach);
	shmbus_disconnect(abus);
}

Test(cross, a_keyed_group_keeps_each_keys_order_across_switchovers)
{
	keyed_across_switchovers("keyed");
}

Test(cross, a_single_active_group_keeps_order_across_switchovers)
{
	keyed_across_switchovers("single_active");
}

/* ------------------------------------- a journaled channel, switched over */

#define JCHAN "[channel jr]\ncapacity = 64K\nmax_msg = 1K\n" \
	"replicate = standby_persisted\njournal = on\njournal_segment = 64K\n"

struct jmsg {
	uint64_t num;
	uint8_t fill[88];
};

/* Publishes [from, to) on h's jr, a pub_sync every `every`: each must
 * say 0 (or, if deg_ok, 1). */
static void jpublish(const struct host *h, uint64_t from, uint64_t to,
		     uint64_t every, bool deg_ok)
{
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(h, &bus, "jr", SHMBUS_ROLE_PUBLISH);
	shmbus_pub *pub;

	cr_assert(ch, "%s", strerror(errno));
	pub = shmbus_pub_open(ch, NULL);
	cr_assert(pub, "%s", strerror(errno));
	for (uint64_t i = from; i < to; i++) {
		struct jmsg m = { .num = i };
		int rc;

		memset(m.fill, (int)(i & 0xff), sizeof(m.fill));
		while ((rc = shmbus_publish(pub, &m, sizeof(m))) == -EAGAIN)
			usleep(1000);
		cr_assert_eq(rc, 0, "publish %llu on %c: %d",
			     (unsigned long long)i, h->tag, rc);
		if ((i + 1) % every == 0 || i + 1 == to) {
			rc = shmbus_pub_sync(pub, 5000000000LL);
			cr_assert(rc == 0 || (deg_ok && rc == 1),
				  "pub_sync at %llu on %c: %d",
				  (unsigned long long)i, h->tag, rc);
		}
	}
	shmbus_pub_close(pub);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

/* Replays h's jr from position 0: messages 0..n-1, in order, sequence
 * numbers 0..n-1, none lost. */
static void jreplay_all(const struct host *h, uint64_t n)
{
	shmbus_bus *bus;
	shmbus_channel *ch = host_open(h, &bus, "jr", SHMBUS_ROLE_SUBSCRIBE);
	shmbus_replay *r;
	uint64_t want = 0, pos = 0;

	cr_assert(ch, "%s", strerror(errno));
	r = shmbus_replay_open(ch, SHMBUS_REPLAY_POSITION, 0, NULL);
	cr_assert(r, "replay on %c: %s", h->tag, strerror(errno));
	for (int idle = 0; want < n && idle < 200;) {
		struct shmbus_msg m;
		struct jmsg j;
		ssize_t k = shmbus_replay_read(r, &j, sizeof(j), &m);

		if (k == -EAGAIN) {
			idle++;
			usleep(5000);
			continue;
		}
		cr_assert_eq(k, (ssize_t)sizeof(j), "replay on %c at %llu "
			     "(message %llu): %zd", h->tag,
			     (unsigned long long)pos, (unsigned long long)want,
			     k);
		cr_assert_eq(j.num, want, "replay on %c: message %llu at %llu,"
			     " expected %llu", h->tag,
			     (unsigned long long)j.num,
			     (unsigned long long)m.pos,
			     (unsigned long long)want);
		cr_assert_eq(m.seq, want, "replay on %c: seq %llu for message"
			     " %llu", h->tag, (unsigned long long)m.seq,
			     (unsigned long long)want);
		cr_assert_eq(m.lost, 0);
		pos = m.pos;
		want++;
	}
	cr_assert_eq(want, n, "replay on %c: %llu of %llu", h->tag,
		     (unsigned long long)want, (unsigned long long)n);
	shmbus_replay_close(r);
	shmbus_channel_close(ch);
	shmbus_disconnect(bus);
}

Test(cross, a_journaled_channel_replays_whole_across_a_switchover)
{
	uint64_t n = 0;

	pair_setup(JCHAN, "sync_timeout_ms = 5000\n");
	jpublish(&A, n, n + 1500, 50, false);
	n += 1500;
	/* The standby's daemon dies and comes back: nothing acknowledged
	 * is lost, and pub_sync goes on saying 0. */
	host_kill(&B, SIGKILL);
	host_start(&B);
	jpublish(&A, n, n + 1500, 50, false);
	n += 1500;
	pair_wait_caught_up("jr", 0, 10000);
	switchover(&A);
	jpublish(&B, n, n + 1500, 50, true);
	n += 1500;
	pair_wait_caught_up("jr", 0, 10000);
	jreplay_all(&B, n);
	jreplay_all(&A, n);
}

/*
 * A switchover hands the role to a standby that holds everything, and the
 * old primary links to it at once as its standby.  A producer that opens
 * on the new primary and waits at `applied` right away must get the
 * standby's acknowledgement, not SHMBUS_SYNC_DEGRADED: the standby has
 * been neither without a link nor without progress for sync_timeout_ms
 * (docs/replication.md, "In sync, out of sync").
 */
Test(cross, a_sync_waiter_right_after_a_switchover_is_not_degraded)
{
	struct host *from = &A, *to = &B;
	shmbus_bus *bus;
	shmbus_channel *ch;
	shmbus_pub *pub;
	uint64_t x = 1;
	int rc;

	pair_setup(CHANS, "sync_timeout_ms = 5000\n");
	/* The window is the few ms before the old primary links: six
	 * switchovers, each looked at at once. */
	for (int round = 0; round < 6; round++) {
		ch = host_open(from, &bus, "sp", SHMBUS_ROLE_PUBLISH);
		cr_assert(ch, "%s", strerror(errno));
		pub = shmbus_pub_open(ch, NULL);
		cr_assert(pub, "%s", strerror(errno));
		cr_assert_eq(shmbus_publish(pub, &x, sizeof(x)), 0);
		cr_assert_eq(shmbus_pub_sync(pub, 5000000000LL), 0);
		shmbus_pub_close(pub);
		shmbus_channel_close(ch);
		shmbus_disconnect(bus);
		pair_wait_caught_up("sp", 0, 5000);
		switchover(from);
		ch = host_open(to, &bus, "sp", SHMBUS_ROLE_PUBLISH);
		cr_assert(ch, "%s", strerror(errno));
		pub = shmbus_pub_open(ch, NULL);
		cr_assert(pub, "%s", strerror(errno));
		cr_assert_eq(shmbus_publish(pub, &x, sizeof(x)), 0);
		rc = shmbus_pub_sync(pub, 5000000000LL);
		cr_assert_eq(rc, 0, "switchover %d: pub_sync on the new "
			     "primary: %d (%s)", round + 1, rc,
			     rc == SHMBUS_SYNC_DEGRADED ? "degraded: its "
			     "standby, the old primary, taken for out of sync "
			     "before it could link" : "?");
		shmbus_pub_close(pub);
		shmbus_channel_close(ch);
		shmbus_disconnect(bus);
		from = to;
		to = to == &A ? &B : &A;
	}
}

/* What the claim-taken-back tests share: 20 messages on A, synced; a
 * switchover; 5 on B, the new primary, synced at applied and applied on
 * A, its standby; then a handle of A's time as primary, preempted before
 * the ring changed hands, stores head = its stale p + its record (a plain
 * store), finds the fence changed, and CASes head back to p (design.md
 * §4), made here with those two stores.  *pub is open on B's channel
 * *ch (bus *bus), *ach maps A's; returns the end A applied. */
struct took_back {
	shmbus_bus *bus;
	shmbus_channel *ch, *ach;
	shmbus_pub *pub;
	uint8_t msg[64];
};

static uint64_t claim_taken_back_on_the_old_primary(struct took_back *t)
{
	uint64_t p, q, cur, applied;

	pair_setup(CHANS, "sync_timeout_ms = 2000\n");
	memset(t->msg, 'A', sizeof(t->msg));
	t->ch = host_open(&A, &t->bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(t->ch, "%s", strerror(errno));
	t->pub = shmbus_pub_open(t->ch, NULL);
	cr_assert(t->pub);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(shmbus_publish(t->pub, t->msg, sizeof(t->msg)), 0);
	cr_assert_eq(shmbus_pub_sync(t->pub, 5000000000LL), 0);
	shmbus_pub_close(t->pub);
	shmbus_channel_close(t->ch);
	shmbus_disconnect(t->bus);
	p = pair_wait_caught_up("sp", 0, 5000);
	switchover(&A);
	t->ch = host_open(&B, &t->bus, "sp", SHMBUS_ROLE_PUBLISH);
	cr_assert(t->ch, "%s", strerror(errno));
	t->pub = shmbus_pub_open(t->ch, NULL);
	cr_assert(t->pub, "%s", strerror(errno));
	for (int i = 0; i < 5; i++)
		cr_assert_eq(shmbus_publish(t->pub, t->msg, sizeof(t->msg)), 0);
	cr_assert_eq(shmbus_pub_sync(t->pub, 5000000000LL), 0);
	applied = sb_ring_head(t->ch);
	t->ach = host_map(&A, "sp");
	cr_assert(t->ach, "%s", strerror(errno));
	for (int i = 0; i < 200 && sb_ring_head(t->ach) != applied; i++)
		usleep(10000);
	cr_assert_eq(sb_ring_head(t->ach), applied);
	q = p + rec_size(sizeof(t->msg));
	__atomic_store_n(&t->ach->pl->head, q, __ATOMIC_RELAXED);
	cur = q;
	__atomic_compare_exchange_n(&t->ach->pl->head, &cur, p, false,
				    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	return applied;
}

static void took_back_done(struct took_back *t)
{
	if (t->pub)
		shmbus_pub_close(t->pub);
	shmbus_channel_close(t->ch);
	shmbus_disconnect(t->bus);
	shmbus_channel_close(t->ach);
}

/*
 * A single producer's claim taken back after the fence closed: the
 * standby links again and the primary ships the rest: it heals, and is
 * not taken for a ring written by hand (that stopped its replication for
 * good, and refused every promotion).
 */
Test(cross, a_producers_claim_taken_back_on_a_standby_heals)
{
	struct took_back t;

	claim_taken_back_on_the_old_primary(&t);
	/* More from the new primary, waited for at applied. */
	for (int i = 0; i < 5; i++)
		cr_assert_eq(shmbus_publish(t.pub, t.msg, sizeof(t.msg)), 0);
	cr_assert_eq(shmbus_pub_sync(t.pub, 8000000000LL), 0, "the old "
		     "primary, its standby, no longer links");
	for (int i = 0; i < 300 && sb_ring_head(t.ach) != sb_ring_head(t.ch);
	     i++)
		usleep(10000);
	cr_assert_eq(sb_ring_head(t.ach), sb_ring_head(t.ch),
		     "the standby ends at %llu, the primary at %llu",
		     (unsigned long long)sb_ring_head(t.ach),
		     (unsigned long long)sb_ring_head(t.ch));
	took_back_done(&t);
}

/*
 * The same claim taken back, then the primary's host dies before it
 * ships anything more, and the old primary is promoted: the records its
 * linker applied above the producer's stale start were acknowledged (at
 * `applied`), and the new primary's ring holds them (a promotion made at
 * the head the take-back left dropped them, and a subscriber caught up
 * there waited for ever inside a record of the new primary's).
 */
Test(cross, a_claim_taken_back_then_a_promotion_keeps_what_was_applied)
{
	struct shmbus_ctl_repl_reply r;
	struct took_back t;
	uint64_t applied = claim_taken_back_on_the_old_primary(&t);
	int rc;

	shmbus_pub_close(t.pub);
	t.pub = NULL;
	host_kill(&B, SIGKILL);
	rc = host_ctl(&A, SHMBUS_REPL_OP_PROMOTE, SHMBUS_REPL_FORCE, &r);
	cr_assert_eq(rc, 0, "promote: %s", r.text);
	cr_assert_eq(sb_ring_head(t.ach), applied, "the new primary's ring "
		     "ends at %llu, below the %llu it applied and "
		     "acknowledged", (unsigned long long)sb_ring_head(t.ach),
		     (unsigned long long)applied);
	took_back_done(&t);
}
