/* SPDX-License-Identifier: MIT */
/*
 * test_group_standby.c - one channel and its consumer group as a standby
 * host holds them (docs/groups.md, "Replication"): members refused once
 * the host stops taking writes, the copy that follows the primary's floor
 * past claims of its own, and the cut back of a returning primary's
 * groups (docs/failover.md, "Rejoin").  The daemon's part (applying a
 * GROUPS frame, the rejoin) calls the same functions as here.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "shmbus/layout.h"
#include "../lib/contract.h"
#include "../lib/group.h"
#include "../lib/sub.h"

#define N 100u

static const char *dir;
static shmbus_channel *ch;
static uint64_t pos_of[N];	/* message i's record */

static void setup(void)
{
	dir = th_mkdir();
	ch = th_create(dir, 65536, 256, SHMBUS_BLOCK, SHMBUS_SINGLE_PRODUCER);
}

static void teardown(void)
{
	shmbus_channel_close(ch);
	th_rmdir(dir);
}

TestSuite(group_standby, .init = setup, .fini = teardown, .timeout = 30);

/* Messages 0..N-1, 8 bytes each (the id), keyed by id % nkeys if nkeys.
 * The group is made first: it starts at the channel's head. */
static void produce(uint32_t nkeys)
{
	shmbus_pub *p = shmbus_pub_open(ch, NULL);
	uint64_t at = th_head(ch);

	cr_assert(p);
	for (uint64_t i = 0; i < N; i++) {
		pos_of[i] = at;
		cr_assert_eq(nkeys ? shmbus_publish_keyed(p, i % nkeys, &i, 8)
				   : shmbus_publish(p, &i, 8), 0);
		at = th_head(ch);
	}
	shmbus_pub_close(p);
}

static shmbus_group *join(const char *name, enum shmbus_group_mode mode)
{
	struct shmbus_group_attr a;
	shmbus_group *g;

	shmbus_group_attr_init(&a);
	a.mode = mode;
	a.window = 64;
	a.lanes = 4;
	g = shmbus_group_join(ch, "work", name, &a);
	cr_assert(g, "join: %s", strerror(errno));
	return g;
}

/* A shared lease of up to max messages, not acknowledged; *first gets
 * its first message's id. */
struct took {
	struct shmbus_lease lease;
	uint64_t first, n;
};

static int took_one(const struct shmbus_group_msg *m, void *arg)
{
	struct took *t = arg;

	if (t->n++ == 0)
		memcpy(&t->first, m->data, 8);
	t->lease = m->lease;
	return 0;
}

static int took_three(const struct shmbus_group_msg *m, void *arg)
{
	took_one(m, arg);
	return ((struct took *)arg)->n == 3;
}

static struct took take(shmbus_group *g, unsigned max)
{
	struct took t = { .n = 0 };

	cr_assert_eq(shmbus_group_poll(g, took_one, &t, max), (int)max);
	return t;
}

/* Reads and acknowledges every message the group has for g; returns how
 * many, each id counted in seen[], the first in *first; each message's
 * deliveries in dl[] (NULL: each must be 1). */
static unsigned drain_dl(shmbus_group *g, unsigned seen[N], uint64_t *first,
			 uint32_t dl[N])
{
	struct shmbus_group_msg m;
	uint64_t buf[2], id;
	unsigned n = 0;
	ssize_t r;

	*first = UINT64_MAX;
	while ((r = shmbus_group_read(g, buf, sizeof(buf), &m)) >= 8) {
		id = buf[r / 8 - 1];	/* keyed: after the key */
		cr_assert_lt(id, N);
		if (*first == UINT64_MAX)
			*first = id;
		seen[id]++;
		if (dl)
			dl[id] = m.deliveries;
		else
			cr_assert_eq(m.deliveries, 1, "message %lu delivered "
				     "%u times", (unsigned long)id,
				     m.deliveries);
		cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
		n++;
	}
	cr_assert_eq(r, -EAGAIN, "read: %zd", r);
	return n;
}

static unsigned drain(shmbus_group *g, unsigned seen[N], uint64_t *first)
{
	return drain_dl(g, seen, first, NULL);
}

static void floor_claim(uint64_t *floor, uint64_t *claim)
{
	struct shmbus_group_stats st;
	unsigned n = 0;

	cr_assert_eq(sb_group_inspect(ch, dir, "work", &st, NULL, &n), 0);
	*floor = st.floor;
	*claim = st.claim;
}

/* The host promoted: a new member of the shared group takes message id
 * first. */
static void promoted_resumes_at(uint64_t id)
{
	struct shmbus_group_msg m;
	shmbus_group *g;
	uint64_t got;

	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", SHMBUS_GROUP_SHARED);
	cr_assert_eq(shmbus_group_read(g, &got, sizeof(got), &m), 8);
	cr_assert_eq(got, id, "the group resumed at message %lu, not %lu",
		     (unsigned long)got, (unsigned long)id);
	shmbus_group_leave(g);
}

/* A group of mode made, the messages produced and the member gone, then
 * the host a standby: *st is the group's state to apply as the
 * primary's. */
static void standby_with(enum shmbus_group_mode mode, uint32_t nkeys,
			 struct sb_group_state *st)
{
	shmbus_group_leave(join("w1", mode));
	produce(nkeys);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_get(ch, dir, "work", st), 0);
}

Test(group_standby, a_member_takes_nothing_once_its_host_is_a_standby)
{
	struct shmbus_group_msg m;
	shmbus_group *g, *g2;
	uint64_t id;

	g = join("w1", SHMBUS_GROUP_SHARED);
	produce(0);
	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), 8);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	/* Its waits end at once, its takes are refused; what it holds it may
	 * still acknowledge. */
	cr_assert_eq(shmbus_group_wait(g, 5000000000), -EROFS);
	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), -EROFS);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	errno = 0;
	cr_assert_null(shmbus_group_join(ch, "work", "w2", NULL));
	cr_assert_eq(errno, EROFS);
	/* A batch part way through is given back whole, as a nack. */
	{
		struct took t = { .n = 0 };
		struct shmbus_group_stats gs;

		cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
		cr_assert_eq(shmbus_group_poll(g, took_three, &t, 10), 3);
		cr_assert_eq(t.first, 1);
		cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
		cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m),
			     -EROFS);
		cr_assert_eq(shmbus_group_stats(g, &gs), 0);
		cr_assert_eq(gs.nacked, 1);
		cr_assert_eq(gs.in_flight, 0);
	}
	/* Being cut back: refused for now, EAGAIN. */
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_CUT), 0);
	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), -EAGAIN);
	errno = 0;
	cr_assert_null(shmbus_group_join(ch, "work", "w2", NULL));
	cr_assert_eq(errno, EAGAIN);
	/* Primary again: the member takes again, the batch given back
	 * first; another joins. */
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), 8);
	cr_assert_eq(id, 1);
	cr_assert_eq(m.deliveries, 2);
	g2 = join("w2", SHMBUS_GROUP_SHARED);
	cr_assert_eq(shmbus_group_read(g2, &id, sizeof(id), &m), 8);
	cr_assert_eq(id, 11);
	shmbus_group_leave(g2);
	shmbus_group_leave(g);
}

static int fence_later(void *arg)
{
	shmbus_channel *c = shmbus_channel_open(dir, "ch");

	(void)arg;
	usleep(50000);
	return c && sb_fence_set(c, SHMBUS_FENCE_STANDBY) == 0 ? 0 : 1;
}

Test(group_standby, a_members_wait_ends_when_its_host_becomes_a_standby)
{
	struct shmbus_group_msg m;
	shmbus_group *g = join("w1", SHMBUS_GROUP_SHARED);
	uint64_t id, t0;
	pid_t pid;

	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &m), -EAGAIN);
	pid = th_spawn(fence_later, NULL);
	t0 = th_now_ns();
	cr_assert_eq(shmbus_group_wait(g, 5000000000), -EROFS);
	cr_assert_lt(th_now_ns() - t0, 2000000000ull);
	cr_assert_eq(th_wait(pid), 0);
	shmbus_group_leave(g);
}

/* The race of a claim with the copy's passing of claims: between the
 * CAS by which a member records claim x + window in x's slot and its
 * store of that claim's seq, the slot's word is the new claim's and its
 * seq and end still claim x's.  The hook plays that member. */
static shmbus_group *racer;
static struct took held[4];
static uint64_t s0;
static bool fired;

static void claim_in_the_slot(uint64_t x)
{
	struct shmbus_group *m = racer;
	struct shmbus_lease_slot *l;
	uint64_t cp, cs, c, dl;

	if (fired || x != s0)
		return;
	fired = true;
	/* Claim s0 acknowledged: the floor passes it... */
	cr_assert_eq(shmbus_group_ack(racer, &held[0].lease), 0);
	/* ... and claim s0 + 4 (40-49) is won, its slot's word CASed. */
	sb_pair_read(&m->g->claim_pos, &cp, &cs);
	cr_assert_eq(cs, s0 + 4);
	cr_assert(cas_pair(&m->g->claim_pos, cp, cs, pos_of[50], cs + 1));
	l = &m->leases[cs & m->wmask];
	c = load_acquire64(&l->ctl);
	dl = load_relaxed64((uint64_t *)&l->deadline);
	cr_assert(cas_pair(&l->ctl, c, dl,
			   gctl(SHMBUS_LEASE_LEASED, m->me, 1, gctl_gen(c) + 1),
			   (uint64_t)INT64_MAX));
}

Test(group_standby, a_claim_recorded_meanwhile_in_a_passed_claims_slot_is_kept)
{
	struct shmbus_group_attr a;
	struct sb_group_state st;
	struct shmbus_lease_slot *l;
	uint64_t fl, cl;

	shmbus_group_attr_init(&a);
	a.window = 4;
	racer = shmbus_group_join(ch, "work", "w1", &a);
	cr_assert(racer);
	produce(0);
	s0 = racer->g->floor_seq;
	for (int i = 0; i < 4; i++)	/* 0-9 .. 30-39: the window is full */
		held[i] = take(racer, 10);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	st.floor = pos_of[15];
	sb_group_settle_hook = claim_in_the_slot;
	(void)sb_group_state_apply(ch, dir, "ch", &st, th_head(ch));
	sb_group_settle_hook = NULL;
	cr_assert(fired);
	/* The member goes on recording claim s0 + 4. */
	l = &racer->leases[(s0 + 4) & racer->wmask];
	store_relaxed64(&l->start, pos_of[40]);
	store_relaxed64(&l->end, pos_of[50]);
	store_relaxed64(&l->first_seq, 40);
	store_relaxed64(&l->msgs, 10);
	store_release64(&l->seq, s0 + 4);
	cr_assert_eq(gctl_state(load_relaxed64(&l->ctl)), SHMBUS_LEASE_LEASED,
		     "claim 40-49, past the primary's floor, was passed");
	/* Its claims before it acknowledged: the floor stops at 40. */
	for (int i = 1; i < 4; i++)
		cr_assert_eq(shmbus_group_ack(racer, &held[i].lease), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[40]);
	shmbus_group_leave(racer);
	promoted_resumes_at(40);
}

/* The standby's reaper maintains the copy while its agent applies the
 * primary's state: the raise moves the claim word, then records that
 * claim as passed.  A maintenance between the two took it for a claim
 * whose winner died before recording it and recorded it AVAILABLE: the
 * floor stayed below the primary's, and the records shipped next, which
 * only that floor allows, lapped the copy.  The hook plays the reaper,
 * at the point between the recording's CAS and its seq. */
static struct shmbus_group *reaper_map;
static bool in_reaper, reaper_ran;

static void maintain_mid_raise(int where)
{
	if (where != SB_HOOK_RECORDING || in_reaper || reaper_ran)
		return;
	in_reaper = reaper_ran = true;
	(void)sb_group_maintain_kept(reaper_map, NULL, NULL);
	in_reaper = false;
}

Test(group_standby, a_maintenance_never_sees_a_raise_half_made)
{
	struct sb_group_state st;
	uint64_t fl, cl;
	int rc;

	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	reaper_map = sb_group_keep(ch, dir, "work", &rc);
	cr_assert(reaper_map, "%s", strerror(-rc));
	st.floor = pos_of[60];
	sb_group_hook = maintain_mid_raise;
	rc = sb_group_state_apply(ch, dir, "ch", &st, th_head(ch));
	sb_group_hook = NULL;
	cr_assert_eq(rc, 0, "%s", strerror(-rc));
	cr_assert(reaper_ran);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[60], "the copy's floor at %lu, not message "
		     "60's %lu", (unsigned long)fl, (unsigned long)pos_of[60]);
	cr_assert_eq(cl, pos_of[60]);
	/* And the maintenance after it changes nothing. */
	(void)sb_group_maintain_kept(reaper_map, NULL, NULL);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[60]);
	sb_group_unkeep(reaper_map);
	promoted_resumes_at(60);
}

/* A maintenance of the copy under way: an update waits for it (100 ms at
 * most, the primary waiting for this host's acknowledgements), then gives
 * this state up rather than take the lock from a live holder: one
 * replaced early (this host's reaper, descheduled) would go on, and
 * could see the raise half made. */
Test(group_standby, an_update_waits_for_a_maintenance_under_way)
{
	struct sb_group_state st;
	struct shmbus_group *m;
	uint64_t fl, cl, fl0, t0;
	int rc;

	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	m = sb_group_keep(ch, dir, "work", &rc);
	cr_assert(m, "%s", strerror(-rc));
	floor_claim(&fl0, &cl);
	cr_assert(sb_group_maint_trylock(m, SB_MAINT_STUCK_NS));
	st.floor = pos_of[30];
	t0 = th_now_ns();
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)),
		     -ENOLCK);
	cr_assert_geq(th_now_ns() - t0, 90000000u, "it did not wait");
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, fl0, "changed under a maintenance");
	sb_group_maint_release(m);
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[30]);
	sb_group_unkeep(m);
}

/* The lock's word written over to name a live process (pid 1) at a time
 * far ahead: the holder is taken for damage and replaced, rather than
 * holding the copy (and every maintenance of the group) for good. */
Test(group_standby, a_lock_held_from_the_future_is_damage)
{
	struct sb_group_state st;
	struct shmbus_group *m;
	uint64_t fl, cl;
	int rc;

	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	m = sb_group_keep(ch, dir, "work", &rc);
	cr_assert(m, "%s", strerror(-rc));
	store_relaxed64((uint64_t *)&m->g->maint_since,
			(uint64_t)(sb_now_ns() + INT64_C(3600000000000)));
	store_relaxed64(&m->g->maint, 1);
	st.floor = pos_of[30];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[30]);
	sb_group_unkeep(m);
}

/* As a state raises the copy's floor, before the channel's slot follows:
 * a process of its own deletes the group (direct mode), then a
 * subscriber opens at the oldest held position. */
static shmbus_sub *apply_sub;
static int apply_delete = -1;

static int delete_work(void *arg)
{
	int rc = shmbus_group_delete(arg, "work");

	return rc == 0 ? 0 : rc == -EBUSY ? 1 : 2;
}

static void remove_in_the_apply(int where)
{
	struct shmbus_sub_attr sa;

	if (where != SB_HOOK_FLOORED || apply_sub)
		return;
	sb_group_hook = NULL;
	apply_delete = th_wait(th_spawn(delete_work, ch));
	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	apply_sub = shmbus_sub_open(ch, &sa);
}

/* A state from the primary applied to the copy while a process in direct
 * mode deletes the group (delete it on both hosts, docs/groups.md): the
 * raise must not write the copy's floor into the slot the group gave
 * back, which a subscriber took (it did: the removal did not wait for
 * the update, and the subscriber's slot said it had read what it had
 * not).  The removal waits for the update, or gives up (-EBUSY). */
Test(group_standby, a_removal_waits_for_a_state_applied_to_the_copy)
{
	struct shmbus_sub_attr sa;
	struct sb_group_state st;
	shmbus_sub *hold;
	int rc;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	hold = shmbus_sub_open(ch, &sa);	/* holds position 0 */
	cr_assert(hold);
	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	st.floor = pos_of[30];
	sb_group_hook = remove_in_the_apply;
	rc = sb_group_state_apply(ch, dir, "ch", &st, th_head(ch));
	sb_group_hook = NULL;
	cr_log_info("the update: %d; the removal in it: %s", rc,
		    apply_delete == 0 ? "0" : apply_delete == 1 ? "-EBUSY"
								: "?");
	cr_assert(apply_sub, "open: %s", strerror(errno));
	for (uint32_t i = 0; i < SHMBUS_MAX_SLOTS; i++) {
		uint64_t o = load_relaxed64(&ch->subs[i].owner);

		if (owner_state(o) == SHMBUS_SLOT_ACTIVE)
			cr_assert_eq(load_relaxed64(&ch->subs[i].pos), 0,
				     "subscriber slot %u moved past what "
				     "its subscriber read", i);
	}
	cr_assert_eq(apply_delete, 1, "the removal did not wait");
	cr_assert_eq(shmbus_group_delete(ch, "work"), 0);
	shmbus_sub_close(apply_sub);
	apply_sub = NULL;
	shmbus_sub_close(hold);
}

/* Claims of the standby's own (taken while it was primary) below the
 * primary's floor are passed; one the floor is inside of stays, and
 * so does the floor, below it. */
Test(group_standby, a_standbys_copy_follows_the_primarys_floor_past_its_own_claims)
{
	struct sb_group_state st;
	struct took t[5];
	uint64_t fl, cl;
	shmbus_group *g;

	g = join("w1", SHMBUS_GROUP_SHARED);
	produce(0);
	for (int i = 0; i < 5; i++) {	/* 0-9, 10-19, ... 40-49 */
		t[i] = take(g, 10);
		cr_assert_eq(t[i].first, (uint64_t)i * 10);
	}
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	st.floor = pos_of[25];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)),
		     -EBUSY);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[20], "floor %lu, message 20 at %lu",
		     (unsigned long)fl, (unsigned long)pos_of[20]);
	cr_assert_eq(cl, pos_of[50]);
	/* The passed leases are no longer the member's. */
	cr_assert_eq(shmbus_group_ack(g, &t[0].lease), -ESTALE);
	cr_assert_eq(shmbus_group_ack(g, &t[3].lease), 0);
	/* The floor past everything claimed here: the copy is the
	 * primary's again. */
	st.floor = pos_of[70];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[70]);
	cr_assert_eq(cl, pos_of[70]);
	cr_assert_eq(shmbus_group_ack(g, &t[2].lease), -ESTALE);
	shmbus_group_leave(g);
	promoted_resumes_at(70);
}

/* Lanes held here are taken back as the primary's floor passes them. */
Test(group_standby, a_standbys_keyed_copy_follows_the_primarys_floor_past_its_lanes)
{
	struct sb_group_state st;
	struct shmbus_group_msg m;
	uint64_t buf[2], fl, cl;
	shmbus_group *g;

	g = join("w1", SHMBUS_GROUP_KEYED);
	produce(4);
	for (int i = 0; i < 10; i++)
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), 16);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	st.floor = pos_of[60];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[60]);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), -ESTALE);
	shmbus_group_leave(g);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", SHMBUS_GROUP_KEYED);
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), 16);
	cr_assert_eq(buf[1], 60);
	shmbus_group_leave(g);
}

/* A keyed group's lanes each go on from where the primary's did, not
 * from the group's floor (the slowest lane's). */
Test(group_standby, a_standbys_keyed_copy_takes_each_lanes_position)
{
	struct sb_group_state st;
	unsigned seen[N] = { 0 };
	uint32_t slow = sb_lane_of(1, 4);
	uint64_t fl, cl, first;
	shmbus_group *g;

	standby_with(SHMBUS_GROUP_KEYED, 4, &st);
	for (uint32_t i = 0; i < 4; i++) {
		cr_assert_eq(st.lane_acked[i], pos_of[0]);
		st.lane_acked[i] = pos_of[60];
	}
	st.lane_acked[slow] = pos_of[21];	/* key 1's */
	st.floor = pos_of[21];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[21]);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", SHMBUS_GROUP_KEYED);
	drain(g, seen, &first);
	for (unsigned i = 0; i < N; i++) {
		bool due = i >= 60 || (i >= 21 && sb_lane_of(i % 4, 4) == slow);

		cr_assert_eq(seen[i], due, "message %u (key %u) seen %u times",
			     i, i % 4, seen[i]);
	}
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	for (uint32_t i = 0; i < 4; i++)
		cr_assert_eq(st.lane_acked[i], th_head(ch));
	shmbus_group_leave(g);
}

/* The host promoted: a new member of mode takes messages 20..N-1, those
 * below `flagged` as second deliveries, the others as first ones.
 * Returns the member. */
static shmbus_group *promoted_flags_below(enum shmbus_group_mode mode,
					  unsigned flagged)
{
	unsigned seen[N] = { 0 };
	uint32_t dl[N] = { 0 };
	uint64_t first;
	shmbus_group *g;

	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", mode);
	cr_assert_eq(drain_dl(g, seen, &first, dl), N - 20);
	for (unsigned i = 20; i < N; i++)
		cr_assert_eq(dl[i], i < flagged ? 2u : 1u, "message %u: %u "
			     "deliveries", i, dl[i]);
	return g;
}

/* What the primary's members had taken above its floor comes again
 * flagged after a failover: as far as its claims had reached, no further
 * than this ring holds; what is published after the promotion is new. */
Test(group_standby, what_the_primary_delivered_comes_again_flagged)
{
	struct sb_group_state st;
	uint64_t id = N, got;
	struct shmbus_group_msg m;
	shmbus_group *g;
	shmbus_pub *p;

	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	cr_assert_eq(st.delivered_to, pos_of[0], "nothing was claimed");
	st.floor = pos_of[20];
	st.delivered_to = pos_of[50];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	/* A later state with a lower mark (it never goes back), and one
	 * beyond what this ring holds (taken only as far as it holds). */
	st.delivered_to = pos_of[30];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, pos_of[40]), 0);
	g = promoted_flags_below(SHMBUS_GROUP_SHARED, 50);
	/* The new primary ships the mark on, for a failover back. */
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	cr_assert_eq(st.delivered_to, th_head(ch));
	p = shmbus_pub_open(ch, NULL);
	cr_assert(p);
	cr_assert_eq(shmbus_publish(p, &id, 8), 0);
	shmbus_pub_close(p);
	cr_assert_eq(shmbus_group_read(g, &got, sizeof(got), &m), 8);
	cr_assert_eq(got, N);
	cr_assert_eq(m.deliveries, 1);
	shmbus_group_leave(g);
}

/* A lane's records below the primary's delivery cursor for it come
 * again flagged. */
Test(group_standby, what_the_primarys_lanes_delivered_comes_again_flagged)
{
	struct sb_group_state st;

	standby_with(SHMBUS_GROUP_KEYED, 4, &st);
	for (uint32_t i = 0; i < 4; i++) {
		st.lane_acked[i] = pos_of[20];
		st.lane_next[i] = pos_of[40];
	}
	st.floor = pos_of[20];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	shmbus_group_leave(promoted_flags_below(SHMBUS_GROUP_KEYED, 40));
}

/* A cut takes the mark back with the ring: records from the cut on will
 * be the new primary's, delivered nowhere yet. */
Test(group_standby, a_cut_takes_the_redelivery_mark_back)
{
	struct sb_group_state st;

	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	st.floor = pos_of[20];
	st.delivered_to = pos_of[50];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	cr_assert_eq(sb_group_cut(ch, dir, "work", pos_of[30]), 0);
	shmbus_group_leave(promoted_flags_below(SHMBUS_GROUP_SHARED, 30));
}

/* A floor or a lane's position that is no record's start in this ring
 * (inside a gap it was given, or nonsense) is not taken: the group would
 * have nothing to read from, ever. */
Test(group_standby, a_position_no_record_starts_at_is_not_taken)
{
	struct sb_group_state st;
	uint64_t fl, cl;

	standby_with(SHMBUS_GROUP_SHARED, 0, &st);
	st.floor = pos_of[20] + 8;
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)),
		     -EBUSY);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[0]);
	cr_assert_eq(cl, pos_of[0]);
	st.floor = pos_of[20];
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[20]);
	promoted_resumes_at(20);
}

Test(group_standby, a_lane_position_no_record_starts_at_is_not_taken)
{
	struct sb_group_state st;
	unsigned seen[N] = { 0 };
	uint64_t fl, cl, first;
	shmbus_group *g;

	standby_with(SHMBUS_GROUP_KEYED, 4, &st);
	for (uint32_t i = 0; i < 4; i++)
		st.lane_acked[i] = pos_of[60] + 8;
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)),
		     -EBUSY);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[0]);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", SHMBUS_GROUP_KEYED);
	cr_assert_eq(drain(g, seen, &first), N);
	shmbus_group_leave(g);
}

static int hold_and_die(void *arg)
{
	shmbus_group *g = join("doomed", SHMBUS_GROUP_SHARED);
	struct took t = take(g, 10);

	(void)arg;
	return t.first == 60 ? 0 : 1;	/* dies holding 60-69 */
}

Test(group_standby, a_cut_takes_a_shared_group_back_below_what_it_acknowledged)
{
	unsigned seen[N] = { 0 };
	uint64_t fl, cl, first;
	shmbus_group *g;

	g = join("w1", SHMBUS_GROUP_SHARED);
	produce(0);
	for (int i = 0; i < 6; i++) {
		struct took t = take(g, 10);

		cr_assert_eq(shmbus_group_ack(g, &t.lease), 0);
	}
	/* Refused while a live member is joined. */
	cr_assert_eq(sb_group_cut(ch, dir, "work", pos_of[40]), -EBUSY);
	shmbus_group_leave(g);
	cr_assert_eq(th_wait(th_spawn(hold_and_die, NULL)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[60]);
	cr_assert_eq(cl, pos_of[70]);
	/* The ring is cut at message 40: the group forgets 40-69, the dead
	 * member's lease with them. */
	cr_assert_eq(sb_group_cut(ch, dir, "work", pos_of[40]), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[40]);
	cr_assert_eq(cl, pos_of[40]);
	/* A floor below the cut stays where it is; claims past it go. */
	g = join("w2", SHMBUS_GROUP_SHARED);
	{
		struct took t = take(g, 10);

		cr_assert_eq(shmbus_group_ack(g, &t.lease), 0);
	}
	(void)take(g, 10);		/* 50-59, held */
	shmbus_group_leave(g);
	cr_assert_eq(sb_group_cut(ch, dir, "work", pos_of[55]), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[50]);
	cr_assert_eq(cl, pos_of[50]);
	/* Nothing taken at or past a cut further on: nothing changes. */
	cr_assert_eq(sb_group_cut(ch, dir, "work", pos_of[90]), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[50]);
	g = join("w3", SHMBUS_GROUP_SHARED);
	cr_assert_eq(drain(g, seen, &first), N - 50);
	cr_assert_eq(first, 50);
	for (unsigned i = 50; i < N; i++)
		cr_assert_eq(seen[i], 1, "message %u seen %u times", i,
			     seen[i]);
	shmbus_group_leave(g);
}

Test(group_standby, a_cut_takes_a_keyed_groups_lanes_back)
{
	unsigned seen[N] = { 0 };
	uint64_t fl, cl, first;
	shmbus_group *g;

	g = join("w1", SHMBUS_GROUP_KEYED);
	produce(4);
	cr_assert_eq(drain(g, seen, &first), N);
	shmbus_group_leave(g);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, th_head(ch));
	cr_assert_eq(sb_group_cut(ch, dir, "work", pos_of[40]), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, pos_of[40]);
	memset(seen, 0, sizeof(seen));
	g = join("w2", SHMBUS_GROUP_KEYED);
	cr_assert_eq(drain(g, seen, &first), N - 40);
	for (unsigned i = 40; i < N; i++)
		cr_assert_eq(seen[i], 1, "message %u seen %u times", i,
			     seen[i]);
	shmbus_group_leave(g);
}

static int first_only(const struct shmbus_group_msg *m, void *arg)
{
	*(struct shmbus_group_msg *)arg = *m;
	return 1;	/* stop: the lease's other messages wait in cur */
}

/* A batch part way through when the fence closes is given back: an ack
 * of what was delivered of it does not count for the rest, which comes
 * again (a handover that fails opens the fence again). */
Test(group_standby, a_batch_refused_part_way_comes_again_whole)
{
	struct shmbus_group_msg m;
	unsigned seen[N] = { 0 };
	uint64_t id, first;
	shmbus_group *g;

	g = join("w1", SHMBUS_GROUP_SHARED);
	produce(0);
	/* One lease of messages 0-9; message 0 delivered. */
	cr_assert_eq(shmbus_group_poll(g, first_only, &m, 10), 1);
	memcpy(&id, m.data, 8);
	cr_assert_eq(id, 0);
	/* The host starts handing over; the member's next poll is refused,
	 * then it acknowledges message 0. */
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_HANDOVER), 0);
	cr_assert_eq(shmbus_group_poll(g, first_only, &m, 10), -EROFS);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), -ESTALE);
	/* The handover fails: the fence opens again. */
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	first = UINT64_MAX;
	for (;;) {
		struct shmbus_group_msg r;
		ssize_t n = shmbus_group_read(g, &id, sizeof(id), &r);

		if (n != 8)
			break;
		if (first == UINT64_MAX)
			first = id;
		seen[id]++;
		cr_assert_eq(shmbus_group_ack(g, &r.lease), 0);
	}
	for (unsigned i = 1; i < N; i++)
		cr_assert_geq(seen[i], 1, "message %u seen %u times (first "
			      "after the ack: %lu)", i, seen[i],
			      (unsigned long)first);
	shmbus_group_leave(g);
}

/* A lane taken from its holder by the copy keeps what the holder had
 * delivered past the primary's position: on this host, it comes again
 * flagged. */
Test(group_standby, a_lane_taken_on_the_copy_comes_again_flagged)
{
	struct sb_group_state st;
	struct shmbus_group_msg m, m2;
	uint64_t buf[2];
	uint32_t lane;
	shmbus_group *g;

	g = join("w1", SHMBUS_GROUP_KEYED);
	produce(4);
	/* Messages 0 and 4 (key 0): delivered here, not acknowledged. */
	lane = sb_lane_of(0, 4);
	do
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), 16);
	while (buf[1] != 0);
	do
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m2), 16);
	while (buf[1] != 4);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	/* The primary acknowledged message 0 of that lane only. */
	st.lane_acked[lane] = pos_of[4];
	(void)sb_group_state_apply(ch, dir, "ch", &st, th_head(ch));
	cr_assert_eq(shmbus_group_ack(g, &m2.lease), -ESTALE);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	shmbus_group_maintain(g);
	for (int i = 0; i < 200; i++) {
		cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m), 16);
		if (m.lease.w[0] == lane)
			break;
	}
	cr_assert_eq(buf[1], 4);
	cr_assert_gt(m.deliveries, 1, "message 4, delivered here before, "
		     "comes again as a first delivery");
	shmbus_group_leave(g);
}

/* A copy whose lanes are not the primary's (the standby's shmbusd makes
 * the groups of its own config) takes the primary's floor only: lane i
 * there is not lane i here. */
Test(group_standby, a_copy_with_other_lanes_takes_only_the_floor)
{
	struct sb_group_state st;
	unsigned seen[N] = { 0 };
	struct shmbus_group_attr a;
	uint64_t first;
	shmbus_group *g;

	shmbus_group_attr_init(&a);
	a.mode = SHMBUS_GROUP_KEYED;
	a.lanes = 2;			/* 2 lanes here */
	g = shmbus_group_join(ch, "work", "w1", &a);
	cr_assert(g);
	produce(8);
	shmbus_group_leave(g);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	/* The primary's group: 4 lanes; its lane 0 acknowledged through
	 * message 59, the others through 9. */
	st.lanes = 4;
	for (int l = 0; l < 4; l++)
		st.lane_acked[l] = pos_of[10];
	st.lane_acked[0] = pos_of[60];
	st.floor = pos_of[10];
	(void)sb_group_state_apply(ch, dir, "ch", &st, th_head(ch));
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = shmbus_group_join(ch, "work", "w2", &a);
	cr_assert(g);
	drain(g, seen, &first);
	for (unsigned i = 10; i < N; i++) {
		bool due = i >= 60 || sb_lane_of(i % 8, 4) != 0;

		if (due)
			cr_assert_geq(seen[i], 1, "message %u (key %u), not "
				      "acknowledged on the primary, skipped",
				      i, i % 8);
	}
	shmbus_group_leave(g);
}

/* The same when the fence closed and opened again between two polls:
 * the copy may have passed the batch meanwhile. */
Test(group_standby, a_batch_the_fence_closed_on_between_polls_comes_again)
{
	struct shmbus_group_msg m, r;
	shmbus_group *g;
	uint64_t id;

	g = join("w1", SHMBUS_GROUP_SHARED);
	produce(0);
	cr_assert_eq(shmbus_group_poll(g, first_only, &m, 10), 1);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_HANDOVER), 0);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	cr_assert_eq(shmbus_group_read(g, &id, sizeof(id), &r), 8);
	cr_assert_eq(id, 0);
	cr_assert_eq(r.deliveries, 2);
	cr_assert_eq(shmbus_group_ack(g, &m.lease), -ESTALE);
	shmbus_group_leave(g);
}

/* The records of pri's ring [from, to), applied to ch's at the same
 * positions by the standby's writer, in frames that stop at the ring's
 * end (as the primary's agent cuts them). */
static void ship(shmbus_channel *pri, shmbus_pub *wr, uint64_t from,
		 uint64_t to)
{
	static uint8_t buf[65536];

	while (from < to) {
		uint64_t end = (from | (pri->cap - 1)) + 1;
		size_t n = (size_t)((end < to ? end : to) - from);
		struct sb_frame f;
		char why[200];

		memcpy(buf, pri->data + (from & pri->mask), n);
		cr_assert_eq(sb_apply_check(ch, from, buf, n, &f, why,
					    sizeof(why)), 0, "%s", why);
		cr_assert_eq(sb_apply(wr, from, buf, n, &f), 0);
		from += n;
	}
}

/* A "primary" ring of ch's geometry in a directory of its own (pdir,
 * removed by the caller).  th_mkdir() returns the same buffer each time:
 * ch's directory is kept in a buffer of its own first (teardown() removes
 * it). */
static shmbus_channel *primary_ring(char pdir[64])
{
	static char sdir[64];

	snprintf(sdir, sizeof(sdir), "%s", dir);
	snprintf(pdir, 64, "%s", th_mkdir());
	dir = sdir;
	return th_create(pdir, 65536, 256, SHMBUS_BLOCK,
			 SHMBUS_SINGLE_PRODUCER);
}

/* ch stands by, and its writer applies what pri's producer writes until
 * pri's head reaches `to`: messages keyed i % 4 carrying their number i,
 * or, with msg, msg's len bytes unkeyed.  Returns the number of
 * messages. */
static uint64_t lapped_standby(shmbus_channel *pri, uint64_t to,
			       const void *msg, size_t len)
{
	shmbus_pub *p = shmbus_pub_open(pri, NULL), *wr;
	uint64_t i = 0;

	cr_assert(p);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_STANDBY), 0);
	wr = sb_writer_open(ch, 100000000);
	cr_assert(wr);
	while (th_head(pri) < to) {
		uint64_t from = th_head(pri);

		for (int k = 0; k < 64; k++, i++)
			cr_assert_eq(msg ? shmbus_publish(p, msg, len)
					 : shmbus_publish_keyed(p, i % 4, &i, 8),
				     0);
		ship(pri, wr, from, th_head(pri));
	}
	sb_writer_close(wr);
	shmbus_pub_close(p);
	return i;
}

/*
 * A keyed group's copy on a standby, lapped by the standby's writer (the
 * copy follows the primary's group every 20 ms, and the writer does not
 * wait for it): at the promotion its lapped lanes go on from the oldest
 * record the ring holds, and the bytes they skip are counted.  Before,
 * every member's poll failed with -EBADMSG for good.
 */
Test(group_standby, a_lapped_lane_copy_goes_on_from_the_oldest_record)
{
	char pdir[64];
	shmbus_channel *pri = primary_ring(pdir);
	struct shmbus_group_stats st;
	struct shmbus_group_msg m;
	static uint8_t seen[16384];
	uint64_t i, buf[2], first = UINT64_MAX, got = 0, fl, cl;
	unsigned nm = 0;
	shmbus_group *g;
	ssize_t r;
	int rc;

	shmbus_group_leave(join("w1", SHMBUS_GROUP_KEYED));
	i = lapped_standby(pri, 4 * 65536, NULL, 0);
	cr_assert_lt(i, sizeof(seen));
	cr_assert_eq(th_head(ch), th_head(pri));
	rc = sb_group_lanes_unlap(ch, dir, "ch");
	cr_assert_eq(rc, 4, "unlap: %d", rc);
	cr_assert_eq(sb_group_lanes_unlap(ch, dir, "ch"), 0, "moved twice");
	floor_claim(&fl, &cl);
	cr_assert_gt(fl, th_head(ch) - 65536, "floor %lu",
		     (unsigned long)fl);
	cr_assert_eq(sb_group_inspect(ch, dir, "work", &st, NULL, &nm), 0);
	cr_assert_eq(st.loss_from, 0);
	cr_assert_eq(st.loss_to, fl);
	cr_assert_eq(st.lost_bytes, fl, "counted once, not once a lane");
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", SHMBUS_GROUP_KEYED);
	while ((r = shmbus_group_read(g, buf, sizeof(buf), &m)) == 16) {
		cr_assert_lt(buf[1], i);
		cr_assert_eq(seen[buf[1]]++, 0, "message %lu twice",
			     (unsigned long)buf[1]);
		if (buf[1] < first)
			first = buf[1];
		got++;
		cr_assert_eq(shmbus_group_ack(g, &m.lease), 0);
	}
	cr_assert_eq(r, -EAGAIN, "read: %zd", r);
	/* Everything from the first record past the lap on, once. */
	cr_assert_eq(got, i - first, "%lu of messages %lu..%lu",
		     (unsigned long)got, (unsigned long)first,
		     (unsigned long)i - 1);
	cr_assert_gt(got, 65536 / 32 / 2);
	shmbus_group_leave(g);
	shmbus_channel_close(pri);
	th_rmdir(pdir);
}

/*
 * The same, with lanes at positions inside later records of the laps
 * that overwrote them, whose payload words read as records of the lanes'
 * lap ((1 << 32) | 8: lap 0's tag, a message of 8 bytes).  A lane is
 * lapped by its position, whatever the bytes there now say: all four go
 * on from the oldest record, and the first message read is a real one.
 */
Test(group_standby, a_lapped_lane_is_judged_by_its_position)
{
	const uint64_t fake = (UINT64_C(1) << 32) | 8;
	uint64_t w[3] = { fake, fake, fake }, buf[4];
	struct shmbus_group_msg m;
	struct shmbus_group *gm;
	char pdir[64];
	shmbus_channel *pri = primary_ring(pdir);
	shmbus_group *g;
	int rc;

	shmbus_group_leave(join("w1", SHMBUS_GROUP_KEYED));
	gm = sb_group_open_map(ch, dir, "work", false, &rc);
	cr_assert(gm, "%d", rc);
	for (uint32_t i = 0; i < gm->nlanes; i++) {
		store_relaxed64(&gm->lanes[i].acked, 2016 + 48 * i);
		store_relaxed64(&gm->lanes[i].next, 2016 + 48 * i);
	}
	sb_group_unmap(gm);
	lapped_standby(pri, 4 * 65536, w, sizeof(w));
	rc = sb_group_lanes_unlap(ch, dir, "ch");
	cr_assert_eq(rc, 4, "unlap moved %d of 4 lanes", rc);
	cr_assert_eq(sb_fence_set(ch, SHMBUS_FENCE_OPEN), 0);
	g = join("w2", SHMBUS_GROUP_KEYED);
	cr_assert_eq(shmbus_group_read(g, buf, sizeof(buf), &m),
		     (ssize_t)sizeof(w));
	cr_assert_eq(buf[0], fake);
	shmbus_group_leave(g);
	shmbus_channel_close(pri);
	th_rmdir(pdir);
}

/*
 * A keyed copy whose lanes the primary's moved more than a ring between
 * two states: its floor (and so its cursor slot, which holds this ring's
 * producers once it is primary) follows them.  Before, a move of more
 * than a ring was taken for damage and the floor stayed, and after a
 * promotion every publish got -EAGAIN for good.
 */
Test(group_standby, a_copys_floor_follows_lanes_that_moved_more_than_a_ring)
{
	struct sb_group_state st;
	char pdir[64];
	shmbus_channel *pri = primary_ring(pdir);
	uint64_t fl, cl;

	shmbus_group_leave(join("w1", SHMBUS_GROUP_KEYED));
	lapped_standby(pri, 3 * 65536, NULL, 0);
	/* The primary's group acknowledged everything. */
	cr_assert_eq(sb_group_state_get(ch, dir, "work", &st), 0);
	st.floor = th_head(ch);
	for (uint32_t k = 0; k < st.lanes; k++)
		st.lane_acked[k] = st.lane_next[k] = th_head(ch);
	cr_assert_eq(sb_group_state_apply(ch, dir, "ch", &st, th_head(ch)), 0);
	floor_claim(&fl, &cl);
	cr_assert_eq(fl, th_head(ch), "the copy's floor stayed at %lu",
		     (unsigned long)fl);
	cr_assert_eq(load_relaxed64(&ch->subs[0].pos), th_head(ch),
		     "its slot holds producers at %lu",
		     (unsigned long)load_relaxed64(&ch->subs[0].pos));
	shmbus_channel_close(pri);
	th_rmdir(pdir);
}

/*
 * The promotion's unlap of a keyed copy whose lanes are at the ring's
 * end and whose floor is not (it could not follow them), while a process
 * in direct mode deletes the group (remove_in_the_apply(), as the unlap
 * raises the floor, before the channel's slot follows): the floor must
 * not be written into the slot the group gave back, which a subscriber
 * took (it was: the removal did not wait for the unlap, and the
 * subscriber's slot said it had read what it had not).  The removal
 * waits for the unlap, or gives up (-EBUSY).
 */
Test(group_standby, a_removal_waits_for_the_unlap_at_a_promotion)
{
	char pdir[64];
	shmbus_channel *pri = primary_ring(pdir);
	struct shmbus_sub_attr sa;
	struct shmbus_group *gm;
	shmbus_sub *hold;
	uint64_t head;
	int rc;

	shmbus_sub_attr_init(&sa);
	sa.start = SHMBUS_START_OLDEST;
	shmbus_group_leave(join("w1", SHMBUS_GROUP_KEYED));
	lapped_standby(pri, 3 * 65536, NULL, 0);
	hold = shmbus_sub_open(ch, &sa);	/* holds the ring's end */
	cr_assert(hold);
	lapped_standby(pri, 3 * 65536 + 16384, NULL, 0);
	head = th_head(ch);
	cr_assert_lt(hold->pos, head);
	gm = sb_group_open_map(ch, dir, "work", false, &rc);
	cr_assert(gm, "%s", strerror(-rc));
	for (uint32_t i = 0; i < gm->nlanes; i++) {
		store_relaxed64(&gm->lanes[i].acked, head);
		store_relaxed64(&gm->lanes[i].next, head);
	}
	cr_assert_lt(load_relaxed64(&gm->g->floor_pos), head);
	sb_group_unmap(gm);
	sb_group_hook = remove_in_the_apply;
	rc = sb_group_lanes_unlap(ch, dir, "ch");
	sb_group_hook = NULL;
	cr_log_info("the unlap: %d; the removal in it: %s", rc,
		    apply_delete == 0 ? "0" : apply_delete == 1 ? "-EBUSY"
								: "?");
	cr_assert(apply_sub, "open: %s", strerror(errno));
	cr_assert_lt(apply_sub->pos, head);
	cr_assert_eq(load_relaxed64(&apply_sub->slot->pos), apply_sub->pos,
		     "subscriber slot %ld moved from %lu to %lu, past what "
		     "its subscriber read", (long)(apply_sub->slot - ch->subs),
		     (unsigned long)apply_sub->pos,
		     (unsigned long)load_relaxed64(&apply_sub->slot->pos));
	cr_assert_eq(apply_delete, 1, "the removal did not wait");
	cr_assert_eq(shmbus_group_delete(ch, "work"), 0);
	shmbus_sub_close(apply_sub);
	apply_sub = NULL;
	apply_delete = -1;
	shmbus_sub_close(hold);
	shmbus_channel_close(pri);
	th_rmdir(pdir);
}
